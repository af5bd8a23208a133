/* safetensors reader and writer (format and validation rules: include/tessera/safetensors.h).
 *
 * The reader follows the reference implementation's checks (read_metadata + validate): the
 * header length is at most 100,000,000 and inside the file, the header is UTF-8 JSON, the
 * tensors sorted by data offsets cover the data buffer exactly from 0 to the end of the file,
 * and each tensor's element count times its dtype size is its byte length, without overflow.
 * It is stricter where the reference is silent: duplicate names or metadata keys (the
 * reference keeps the last one), numbers that are not plain integers, and strings holding
 * \u0000 (C strings cannot carry them) are refused too.
 *
 * cJSON reads numbers as doubles, so before parsing, a lexical pass over the header admits
 * only integers up to 2^53, which a double holds exactly. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cJSON.h>
#include "backends/backend.h"
#include "lib/core/atomic_file.h"
#include "lib/io/idx.h"
#include "lib/core/internal.h"
#include "lib/core/precision.h"

#define MAX_EXACT_INTEGER (UINT64_C(1) << 53)

/* ------------------------------------------------------------------ dtypes */

static const struct {
    const char *name;
    unsigned bits;
} dtype_info[TSR_ST_DTYPE_COUNT] = {
    [TSR_ST_BOOL] = {"BOOL", 8},        [TSR_ST_F4] = {"F4", 4},
    [TSR_ST_F6_E2M3] = {"F6_E2M3", 6},  [TSR_ST_F6_E3M2] = {"F6_E3M2", 6},
    [TSR_ST_U8] = {"U8", 8},            [TSR_ST_I8] = {"I8", 8},
    [TSR_ST_F8_E5M2] = {"F8_E5M2", 8},  [TSR_ST_F8_E4M3] = {"F8_E4M3", 8},
    [TSR_ST_F8_E8M0] = {"F8_E8M0", 8},  [TSR_ST_I16] = {"I16", 16},
    [TSR_ST_U16] = {"U16", 16},         [TSR_ST_F16] = {"F16", 16},
    [TSR_ST_BF16] = {"BF16", 16},       [TSR_ST_I32] = {"I32", 32},
    [TSR_ST_U32] = {"U32", 32},         [TSR_ST_F32] = {"F32", 32},
    [TSR_ST_C64] = {"C64", 64},         [TSR_ST_F64] = {"F64", 64},
    [TSR_ST_I64] = {"I64", 64},         [TSR_ST_U64] = {"U64", 64},
};

static int dtype_valid(tsr_st_dtype d) { return (unsigned)d < TSR_ST_DTYPE_COUNT; }

const char *tsr_st_dtype_name(tsr_st_dtype dtype) {
    return dtype_valid(dtype) ? dtype_info[dtype].name : "?";
}

unsigned tsr_st_dtype_bits(tsr_st_dtype dtype) {
    return dtype_valid(dtype) ? dtype_info[dtype].bits : 0;
}

tsr_status tsr_st_dtype_parse(const char *name, tsr_st_dtype *out) {
    for (int d = 0; name && d < TSR_ST_DTYPE_COUNT; d++)
        if (strcmp(name, dtype_info[d].name) == 0) {
            *out = (tsr_st_dtype)d;
            return TSR_OK;
        }
    return TSR_ERR_PARSE;
}

/* Bytes of `count` elements of `d`: 0 on success, -1 on overflow, -2 when sub-byte elements
 * do not fill a whole number of bytes. */
static int dtype_bytes(tsr_st_dtype d, uint64_t count, uint64_t *bytes) {
    unsigned bits = dtype_info[d].bits;
    if (count > UINT64_MAX / bits) return -1;
    if (count * bits % 8) return -2;
    *bytes = count * bits / 8;
    return 0;
}

/* Product of shape[0..ndim) into *count; -1 on overflow. */
static int shape_count(const uint64_t *shape, int ndim, uint64_t *count) {
    uint64_t c = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] && c > UINT64_MAX / shape[i]) return -1;
        c *= shape[i];
    }
    *count = c;
    return 0;
}

/* ------------------------------------------------------------------ numbers */

static uint64_t get_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static int host_is_little_endian(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* ------------------------------------------------------------------ header checks */

/* Index of the first byte of p[0..n) that is not well-formed UTF-8 (no overlong forms, no
 * surrogates, nothing above U+10FFFF), or n. */
static size_t utf8_invalid_at(const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
        i += len;
    }
    return n;
}

static int json_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The lexical pass: strings without control characters or \u0000, numbers that are plain
 * integers 0..2^53. Tokens are otherwise left to cJSON. */
static tsr_status lex_check(tsr_context *ctx, const char *name, const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"') {
            for (i++; i < n && p[i] != '"'; i++) {
                if (p[i] < 0x20)
                    return tsr_error(ctx, TSR_ERR_PARSE,
                                     "%s: header: control character 0x%02x inside a string at "
                                     "byte %zu",
                                     name, p[i], 8 + i);
                if (p[i] == '\\' && i + 1 < n) {
                    if (p[i + 1] == 'u' && n - i >= 6 && memcmp(p + i + 2, "0000", 4) == 0)
                        return tsr_error(ctx, TSR_ERR_CORRUPT,
                                         "%s: header: a string holds \\u0000 at byte %zu", name,
                                         8 + i);
                    i++;
                }
            }
            i++;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t start = i;
            while (i < n && (p[i] == '-' || p[i] == '+' || p[i] == '.' || p[i] == 'e' ||
                             p[i] == 'E' || (p[i] >= '0' && p[i] <= '9')))
                i++;
            uint64_t v = 0;
            int ok = !(p[start] == '0' && i - start > 1);
            for (size_t k = start; ok && k < i; k++) {
                ok = p[k] >= '0' && p[k] <= '9' && v <= (MAX_EXACT_INTEGER - (p[k] - '0')) / 10;
                v = v * 10 + (uint64_t)(p[k] - '0');
            }
            if (!ok)
                return tsr_error(ctx, TSR_ERR_CORRUPT,
                                 "%s: header: number '%.*s' at byte %zu is not an integer in "
                                 "0..2^53 (shapes and offsets are non-negative integers)",
                                 name, (int)(i - start > 32 ? 32 : i - start),
                                 (const char *)p + start, 8 + start);
        } else {
            i++;
        }
    }
    return TSR_OK;
}

/* ------------------------------------------------------------------ reading */

struct tsr_st_image {
    void *map;              /* mmap'ed file, or NULL */
    size_t map_size;
    void *buf;              /* file read into memory, or NULL */
    const tsr_st_tensor **by_name; /* tensors sorted by name, for find */
};

/* One allocation holds the result: the tsr_safetensors, the image record, the tensors, the
 * by-name index, the metadata, the shapes and the strings. */
typedef struct layout {
    size_t tensors, meta, dims, chars;
} layout;

static size_t round8(size_t x) { return (x + 7) & ~(size_t)7; }

static const char *tensor_name_of(const tsr_st_tensor *t) { return t ? t->name : ""; }

static int cmp_offset(const void *a, const void *b) {
    const tsr_st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_name_ptr(const void *a, const void *b) {
    const tsr_st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int cmp_meta(const void *a, const void *b) {
    return strcmp(((const tsr_st_meta *)a)->key, ((const tsr_st_meta *)b)->key);
}

static const cJSON *field(const cJSON *obj, const char *key, int *dups) {
    const cJSON *found = NULL;
    *dups = 0;
    for (const cJSON *c = obj->child; c; c = c->next)
        if (c->string && strcmp(c->string, key) == 0) {
            if (found) *dups = 1;
            found = c;
        }
    return found;
}

/* Checks one tensor entry's fields and sizes; fills *t except name, data and the pointers. */
static tsr_status parse_tensor(tsr_context *ctx, const char *file, const cJSON *e, uint64_t *dims,
                               tsr_st_tensor *t, size_t data_size) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: tensor \"%s\": entry is not a JSON object",
                         file, name);
    static const char *keys[3] = {"dtype", "shape", "data_offsets"};
    const cJSON *f[3];
    for (int k = 0; k < 3; k++) {
        int dups;
        f[k] = field(e, keys[k], &dups);
        if (!f[k] || dups)
            return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: tensor \"%s\": \"%s\" %s", file, name,
                             keys[k], f[k] ? "appears twice" : "is missing");
    }
    if (!cJSON_IsString(f[0]) || tsr_st_dtype_parse(f[0]->valuestring, &t->dtype) != TSR_OK)
        return tsr_error(ctx, TSR_ERR_CORRUPT,
                         "%s: tensor \"%s\": dtype %s%.32s%s is not one of BOOL, U8, I8, I16, "
                         "U16, I32, U32, I64, U64, F16, BF16, F32, F64, C64, F8_E5M2, F8_E4M3, "
                         "F8_E8M0, F6_E2M3, F6_E3M2, F4",
                         file, name, cJSON_IsString(f[0]) ? "\"" : "",
                         cJSON_IsString(f[0]) ? f[0]->valuestring : "(not a string)",
                         cJSON_IsString(f[0]) ? "\"" : "");
    if (!cJSON_IsArray(f[1]))
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: tensor \"%s\": shape is not an array", file,
                         name);
    int ndim = 0;
    for (const cJSON *d = f[1]->child; d; d = d->next) {
        if (!cJSON_IsNumber(d))
            return tsr_error(ctx, TSR_ERR_CORRUPT,
                             "%s: tensor \"%s\": shape[%d] is not a non-negative integer", file,
                             name, ndim);
        dims[ndim++] = (uint64_t)d->valuedouble; /* exact: lex_check bounds it by 2^53 */
    }
    const cJSON *b = f[2]->child, *en = b ? b->next : NULL;
    if (!cJSON_IsArray(f[2]) || !cJSON_IsNumber(b) || !cJSON_IsNumber(en) || en->next)
        return tsr_error(ctx, TSR_ERR_CORRUPT,
                         "%s: tensor \"%s\": data_offsets is not an array of two integers [begin, "
                         "end]",
                         file, name);
    uint64_t begin = (uint64_t)b->valuedouble, end = (uint64_t)en->valuedouble;
    t->ndim = ndim;
    uint64_t bytes = 0;
    int r = -1;
    if (shape_count(dims, ndim, &t->count) == 0) r = dtype_bytes(t->dtype, t->count, &bytes);
    if (r == -1)
        return tsr_error(ctx, TSR_ERR_CORRUPT,
                         "%s: tensor \"%s\": shape times the %u-bit %s size overflows 64 bits",
                         file, name, dtype_info[t->dtype].bits, dtype_info[t->dtype].name);
    if (r == -2)
        return tsr_error(ctx, TSR_ERR_CORRUPT,
                         "%s: tensor \"%s\": %llu elements of %s are not a whole number of bytes",
                         file, name, (unsigned long long)t->count, dtype_info[t->dtype].name);
    if (end < begin)
        return tsr_error(ctx, TSR_ERR_CORRUPT,
                         "%s: tensor \"%s\": data_offsets [%llu, %llu] end before they begin",
                         file, name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return tsr_error(ctx, TSR_ERR_TRUNCATED,
                         "%s: tensor \"%s\": data_offsets end %llu is past the data buffer of "
                         "%zu bytes",
                         file, name, (unsigned long long)end, data_size);
    if (end - begin != bytes)
        return tsr_error(ctx, TSR_ERR_CORRUPT,
                         "%s: tensor \"%s\": data_offsets [%llu, %llu] hold %llu bytes, but %llu "
                         "elements of %s need %llu",
                         file, name, (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)(end - begin), (unsigned long long)t->count,
                         dtype_info[t->dtype].name, (unsigned long long)bytes);
    t->offset = begin;
    t->bytes = (size_t)bytes;
    return TSR_OK;
}

/* The tensors sorted by offset must tile [0, data_size) exactly. */
static tsr_status check_tiling(tsr_context *ctx, const char *file, const tsr_st_tensor *t,
                               size_t n, size_t data_size) {
    uint64_t at = 0;
    const tsr_st_tensor *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        if (t[i].offset < at)
            return tsr_error(ctx, TSR_ERR_CORRUPT,
                             "%s: tensor \"%s\" at data offset %llu overlaps tensor \"%s\", "
                             "which ends at %llu",
                             file, t[i].name, (unsigned long long)t[i].offset, prev->name,
                             (unsigned long long)at);
        if (t[i].offset > at)
            return tsr_error(ctx, TSR_ERR_CORRUPT,
                             "%s: tensor \"%s\" begins at data offset %llu, leaving a hole of "
                             "%llu bytes after %s%s%s (tensors must cover the data buffer "
                             "contiguously)",
                             file, t[i].name, (unsigned long long)t[i].offset,
                             (unsigned long long)(t[i].offset - at), prev ? "tensor \"" : "",
                             prev ? prev->name : "the start of the data buffer", prev ? "\"" : "");
        at = t[i].offset + t[i].bytes;
        prev = &t[i];
    }
    if (at != data_size)
        return tsr_error(ctx, TSR_ERR_CORRUPT,
                         "%s: %llu bytes after the last tensor%s%s%s: the data buffer is %zu "
                         "bytes, the tensors cover %llu",
                         file, (unsigned long long)(data_size - at), prev ? " \"" : "",
                         tensor_name_of(prev), prev ? "\"" : "", data_size,
                         (unsigned long long)at);
    return TSR_OK;
}

/* Counts what the result needs and checks the top level: metadata, names. */
static tsr_status measure(tsr_context *ctx, const char *file, const cJSON *root, layout *l,
                          const cJSON **meta_obj) {
    memset(l, 0, sizeof *l);
    *meta_obj = NULL;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (*meta_obj)
                return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: \"__metadata__\" appears twice", file);
            if (cJSON_IsNull(e)) continue;
            if (!cJSON_IsObject(e))
                return tsr_error(ctx, TSR_ERR_CORRUPT,
                                 "%s: \"__metadata__\" is not an object of strings", file);
            *meta_obj = e;
            for (const cJSON *m = e->child; m; m = m->next) {
                if (!cJSON_IsString(m))
                    return tsr_error(ctx, TSR_ERR_CORRUPT,
                                     "%s: metadata \"%s\" is not a string (metadata values are "
                                     "strings)",
                                     file, m->string);
                l->meta++;
                l->chars += strlen(m->string) + strlen(m->valuestring) + 2;
            }
            continue;
        }
        l->tensors++;
        l->chars += strlen(e->string) + 1;
        if (cJSON_IsObject(e)) {
            int dups;
            const cJSON *shape = field(e, "shape", &dups);
            if (cJSON_IsArray(shape)) l->dims += (size_t)cJSON_GetArraySize(shape);
        }
    }
    return TSR_OK;
}

static tsr_status build(tsr_context *ctx, const char *file, const cJSON *root,
                        const unsigned char *data, size_t data_size, tsr_safetensors **out) {
    layout l;
    const cJSON *meta_obj;
    TSR_TRY(measure(ctx, file, root, &l, &meta_obj));
    /* every size below is bounded by the header length (<= 100 MB): no overflow */
    size_t o_img = round8(sizeof(tsr_safetensors));
    size_t o_t = o_img + round8(sizeof(struct tsr_st_image));
    size_t o_idx = o_t + round8(l.tensors * sizeof(tsr_st_tensor));
    size_t o_meta = o_idx + round8(l.tensors * sizeof(tsr_st_tensor *));
    size_t o_dims = o_meta + round8(l.meta * sizeof(tsr_st_meta));
    size_t o_chars = o_dims + l.dims * sizeof(uint64_t);
    unsigned char *mem = tsr_calloc(ctx, 1, o_chars + l.chars);
    if (!mem)
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory for %zu tensors", file, l.tensors);
    tsr_safetensors *st = (tsr_safetensors *)(void *)mem;
    st->image_ = (struct tsr_st_image *)(void *)(mem + o_img);
    tsr_st_tensor *tensors = (tsr_st_tensor *)(void *)(mem + o_t);
    const tsr_st_tensor **by_name = (const tsr_st_tensor **)(void *)(mem + o_idx);
    tsr_st_meta *meta = (tsr_st_meta *)(void *)(mem + o_meta);
    uint64_t *dims = (uint64_t *)(void *)(mem + o_dims);
    char *chars = (char *)mem + o_chars;

    tsr_status s = TSR_OK;
    size_t n = 0;
    for (const cJSON *e = root->child; e && s == TSR_OK; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        tsr_st_tensor *t = &tensors[n++];
        s = parse_tensor(ctx, file, e, dims, t, data_size);
        if (s != TSR_OK) break;
        size_t len = strlen(e->string) + 1;
        memcpy(chars, e->string, len);
        t->name = chars;
        chars += len;
        t->shape = t->ndim ? dims : NULL;
        dims += t->ndim;
    }
    if (s == TSR_OK) {
        qsort(tensors, n, sizeof *tensors, cmp_offset);
        s = check_tiling(ctx, file, tensors, n, data_size);
    }
    if (s == TSR_OK) {
        for (size_t i = 0; i < n; i++) {
            tensors[i].data = data + tensors[i].offset;
            by_name[i] = &tensors[i];
        }
        qsort(by_name, n, sizeof *by_name, cmp_name_ptr);
        for (size_t i = 1; i < n && s == TSR_OK; i++)
            if (strcmp(by_name[i - 1]->name, by_name[i]->name) == 0)
                s = tsr_error(ctx, TSR_ERR_CORRUPT, "%s: tensor \"%s\" appears twice", file,
                              by_name[i]->name);
    }
    size_t m = 0;
    for (const cJSON *e = meta_obj ? meta_obj->child : NULL; e && s == TSR_OK; e = e->next) {
        size_t klen = strlen(e->string) + 1, vlen = strlen(e->valuestring) + 1;
        memcpy(chars, e->string, klen);
        memcpy(chars + klen, e->valuestring, vlen);
        meta[m].key = chars;
        meta[m++].value = chars + klen;
        chars += klen + vlen;
    }
    if (s == TSR_OK) {
        qsort(meta, m, sizeof *meta, cmp_meta);
        for (size_t i = 1; i < m && s == TSR_OK; i++)
            if (strcmp(meta[i - 1].key, meta[i].key) == 0)
                s = tsr_error(ctx, TSR_ERR_CORRUPT, "%s: metadata \"%s\" appears twice", file,
                              meta[i].key);
    }
    if (s != TSR_OK) {
        tsr_free(ctx, mem);
        return s;
    }
    st->count = n;
    st->tensors = tensors;
    st->meta_count = m;
    st->meta = meta;
    st->image_->by_name = by_name;
    *out = st;
    return TSR_OK;
}

tsr_status tsr_safetensors_open_memory(tsr_context *ctx, const char *name, const void *data,
                                       size_t size, tsr_safetensors **out) {
    if (!out || !name || (!data && size))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_safetensors_open_memory: %s is NULL",
                         !out ? "out" : !name ? "name" : "data");
    *out = NULL;
    const unsigned char *p = data;
    if (size < 8)
        return tsr_error(ctx, TSR_ERR_TRUNCATED,
                         "%s: %zu bytes, shorter than the 8-byte header length", name, size);
    uint64_t n = get_le(p, 8);
    if (n > TSR_ST_MAX_HEADER)
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: header length %llu exceeds the limit of %u",
                         name, (unsigned long long)n, TSR_ST_MAX_HEADER);
    if (n > size - 8)
        return tsr_error(ctx, TSR_ERR_TRUNCATED,
                         "%s: header length %llu runs past the end of the file (%zu bytes)", name,
                         (unsigned long long)n, size);
    const unsigned char *h = p + 8;
    size_t hn = (size_t)n, bad = utf8_invalid_at(h, hn);
    if (bad != hn)
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: header is not valid UTF-8 at byte %zu", name,
                         8 + bad);
    size_t first = 0;
    while (first < hn && json_space(h[first])) first++;
    if (first == hn || h[first] != '{')
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: header is not a JSON object (it %s)", name,
                         first == hn ? "is blank" : "does not start with '{'");
    TSR_TRY(lex_check(ctx, name, h, hn));
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)h, hn, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - (const char *)h) : 0;
        return tsr_error(ctx, TSR_ERR_PARSE, "%s: header is not valid JSON (near byte %zu)", name,
                         8 + at);
    }
    size_t rest = end ? (size_t)(end - (const char *)h) : hn;
    while (rest < hn && json_space(h[rest])) rest++;
    tsr_status s;
    if (rest != hn)
        s = tsr_error(ctx, TSR_ERR_CORRUPT, "%s: header: bytes after the JSON object at byte %zu",
                      name, 8 + rest);
    else if (!cJSON_IsObject(root))
        s = tsr_error(ctx, TSR_ERR_CORRUPT, "%s: header is not a JSON object", name);
    else
        s = build(ctx, name, root, p + 8 + hn, size - 8 - hn, out);
    cJSON_Delete(root);
    if (s == TSR_OK) {
        (*out)->header_bytes = hn;
        (*out)->file_bytes = size;
    }
    return s;
}

tsr_status tsr_safetensors_open(tsr_context *ctx, const char *path, tsr_safetensors **out) {
    if (!path || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_safetensors_open: %s is NULL",
                         path ? "out" : "path");
    *out = NULL;
    /* A regular file is mapped (a GPT-2 file is hundreds of MB; only what is read is paged
     * in); anything else, or a failed mapping, is read into memory. */
    void *map = NULL, *buf = NULL;
    size_t size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return tsr_error(ctx, e == ENOENT ? TSR_ERR_NOT_FOUND : TSR_ERR_IO, "%s: cannot open: %s",
                         path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0 &&
        (uint64_t)sb.st_size <= SIZE_MAX) {
        size = (size_t)sb.st_size;
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) map = NULL;
    }
    close(fd);
    if (!map) TSR_TRY(tsr_read_file(ctx, path, &buf, &size));
    tsr_status s = tsr_safetensors_open_memory(ctx, path, map ? map : buf, size, out);
    if (s != TSR_OK) {
        if (map) munmap(map, size);
        tsr_free(ctx, buf);
        return s;
    }
    (*out)->image_->map = map;
    (*out)->image_->map_size = map ? size : 0;
    (*out)->image_->buf = buf;
    return TSR_OK;
}

void tsr_safetensors_close(tsr_context *ctx, tsr_safetensors *st) {
    if (!st) return;
    if (st->image_->map) munmap(st->image_->map, st->image_->map_size);
    tsr_free(ctx, st->image_->buf);
    tsr_free(ctx, st);
}

const tsr_st_tensor *tsr_safetensors_find(const tsr_safetensors *st, const char *name) {
    if (!st || !name) return NULL;
    size_t lo = 0, hi = st->count;
    const tsr_st_tensor **idx = st->image_->by_name;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, idx[mid]->name);
        if (c == 0) return idx[mid];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

const char *tsr_safetensors_meta(const tsr_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (size_t i = 0; i < st->meta_count; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

tsr_status tsr_safetensors_to_f32(tsr_context *ctx, const tsr_st_tensor *t, float *out,
                                  size_t count) {
    if (!t || (!out && count))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_safetensors_to_f32: %s is NULL",
                         t ? "out" : "tensor");
    if (t->count != count)
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "tsr_safetensors_to_f32: tensor \"%s\" holds %llu elements, not %zu",
                         t->name, (unsigned long long)t->count, count);
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case TSR_ST_F32:
        if (host_is_little_endian()) {
            if (count) memcpy(out, p, 4 * count);
            break;
        }
        for (size_t i = 0; i < count; i++) out[i] = tsr_bits_f32((uint32_t)get_le(p + 4 * i, 4));
        break;
    case TSR_ST_F16:
        for (size_t i = 0; i < count; i++)
            out[i] = tsr_f16_to_f32_scalar((uint16_t)get_le(p + 2 * i, 2));
        break;
    case TSR_ST_BF16:
        for (size_t i = 0; i < count; i++) out[i] = tsr_bf16_to_f32((uint16_t)get_le(p + 2 * i, 2));
        break;
    case TSR_ST_F64:
        for (size_t i = 0; i < count; i++) {
            uint64_t u = get_le(p + 8 * i, 8);
            double d;
            memcpy(&d, &u, 8);
            out[i] = (float)d;
        }
        break;
    default:
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "tsr_safetensors_to_f32: tensor \"%s\" is %s; F32, F16, BF16 and F64 "
                         "convert to float32",
                         t->name, tsr_st_dtype_name(t->dtype));
    }
    return TSR_OK;
}

/* ------------------------------------------------------------------ writing */

typedef struct entry {
    char *name;
    tsr_st_dtype dtype;
    int ndim;
    uint64_t *shape;
    uint64_t count;
    size_t bytes;
    const void *raw;     /* little-endian bytes, or NULL */
    const float *f32;    /* float32 values converted to dtype while saving, or NULL */
} entry;

struct tsr_st_writer {
    entry *e;
    size_t n, cap;
    tsr_st_meta *meta;   /* owned strings */
    size_t meta_n, meta_cap;
};

tsr_status tsr_st_writer_create(tsr_context *ctx, tsr_st_writer **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_st_writer_create: out is NULL");
    *out = tsr_calloc(ctx, 1, sizeof **out);
    if (!*out) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_st_writer_create: no memory");
    return TSR_OK;
}

void tsr_st_writer_free(tsr_context *ctx, tsr_st_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) {
        tsr_free(ctx, w->e[i].name);
        tsr_free(ctx, w->e[i].shape);
    }
    for (size_t i = 0; i < w->meta_n; i++) {
        tsr_free(ctx, (char *)w->meta[i].key);
        tsr_free(ctx, (char *)w->meta[i].value);
    }
    tsr_free(ctx, w->e);
    tsr_free(ctx, w->meta);
    tsr_free(ctx, w);
}

/* Makes room for one more element in *arr (n used of *cap, each `size` bytes). */
static int grow(tsr_context *ctx, void **arr, size_t n, size_t *cap, size_t size) {
    if (n < *cap) return 0;
    size_t ncap = *cap ? 2 * *cap : 16;
    void *p = tsr_calloc(ctx, ncap, size);
    if (!p) return -1;
    if (n) memcpy(p, *arr, n * size);
    tsr_free(ctx, *arr);
    *arr = p;
    *cap = ncap;
    return 0;
}

static int valid_utf8(const char *s) {
    size_t n = strlen(s);
    return utf8_invalid_at((const unsigned char *)s, n) == n;
}

static tsr_status add_entry(tsr_context *ctx, tsr_st_writer *w, const char *name,
                            tsr_st_dtype dtype, int ndim, const uint64_t *shape, const void *raw,
                            const float *f32, size_t raw_bytes) {
    const char *fn = f32 ? "tsr_st_writer_add_f32" : "tsr_st_writer_add";
    if (!w || !name || (ndim > 0 && !shape))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: %s is NULL", fn,
                         !w ? "writer" : !name ? "name" : "shape");
    if (!valid_utf8(name) || strcmp(name, "__metadata__") == 0)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tensor name \"%.64s\" is %s", fn, name,
                         strcmp(name, "__metadata__") == 0 ? "reserved" : "not valid UTF-8");
    if (!dtype_valid(dtype))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tensor \"%s\": dtype %d is out of range",
                         fn, name, (int)dtype);
    if (f32 && dtype != TSR_ST_F32 && dtype != TSR_ST_F64 && dtype != TSR_ST_F16 &&
        dtype != TSR_ST_BF16)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "%s: tensor \"%s\": float32 values are stored as F32, F64, F16 or BF16, "
                         "not %s",
                         fn, name, dtype_info[dtype].name);
    if (ndim < 0 || ndim > 1024)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tensor \"%s\": ndim %d is not in 0..1024",
                         fn, name, ndim);
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->e[i].name, name) == 0)
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tensor \"%s\" already added", fn, name);
    uint64_t count = 0, bytes = 0;
    for (int i = 0; i < ndim; i++)
        if (shape[i] > MAX_EXACT_INTEGER)
            return tsr_error(ctx, TSR_ERR_SHAPE, "%s: tensor \"%s\": shape[%d] = %llu exceeds 2^53",
                             fn, name, i, (unsigned long long)shape[i]);
    int r = shape_count(shape, ndim, &count);
    if (r == 0) r = dtype_bytes(dtype, count, &bytes);
    if (r == 0 && (bytes > SIZE_MAX || bytes > MAX_EXACT_INTEGER)) r = -1;
    if (r != 0)
        return tsr_error(ctx, TSR_ERR_SHAPE, "%s: tensor \"%s\": %s", fn, name,
                         r == -1 ? "the shape's byte size overflows"
                                 : "sub-byte elements do not fill a whole number of bytes");
    if (!f32 && raw_bytes != bytes)
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "%s: tensor \"%s\": %zu bytes given, %llu elements of %s are %llu bytes",
                         fn, name, raw_bytes, (unsigned long long)count, dtype_info[dtype].name,
                         (unsigned long long)bytes);
    if (bytes && !raw && !f32)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tensor \"%s\": data is NULL", fn, name);
    if (f32 && count > SIZE_MAX / sizeof(float))
        return tsr_error(ctx, TSR_ERR_SHAPE, "%s: tensor \"%s\": too many floats", fn, name);
    char *copy = tsr_strdup(ctx, name);
    uint64_t *dims = ndim ? tsr_calloc(ctx, (size_t)ndim, sizeof *dims) : NULL;
    if (!copy || (ndim && !dims) || grow(ctx, (void **)&w->e, w->n, &w->cap, sizeof *w->e)) {
        tsr_free(ctx, copy);
        tsr_free(ctx, dims);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory for tensor \"%s\"", fn, name);
    }
    if (ndim) memcpy(dims, shape, (size_t)ndim * sizeof *dims);
    entry *e = &w->e[w->n++];
    e->name = copy;
    e->dtype = dtype;
    e->ndim = ndim;
    e->shape = dims;
    e->count = count;
    e->bytes = (size_t)bytes;
    e->raw = f32 ? NULL : raw;
    e->f32 = f32;
    return TSR_OK;
}

tsr_status tsr_st_writer_add(tsr_context *ctx, tsr_st_writer *w, const char *name,
                             tsr_st_dtype dtype, int ndim, const uint64_t *shape,
                             const void *data, size_t bytes) {
    return add_entry(ctx, w, name, dtype, ndim, shape, data, NULL, bytes);
}

tsr_status tsr_st_writer_add_f32(tsr_context *ctx, tsr_st_writer *w, const char *name,
                                 tsr_st_dtype dtype, int ndim, const uint64_t *shape,
                                 const float *x) {
    static const float none[1];
    return add_entry(ctx, w, name, dtype, ndim, shape, NULL, x ? x : none, 0);
}

tsr_status tsr_st_writer_set_meta(tsr_context *ctx, tsr_st_writer *w, const char *key,
                                  const char *value) {
    if (!w || !key || !value)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_st_writer_set_meta: %s is NULL",
                         !w ? "writer" : !key ? "key" : "value");
    if (!valid_utf8(key) || !valid_utf8(value))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "tsr_st_writer_set_meta: metadata \"%.64s\": %s is not valid UTF-8", key,
                         valid_utf8(key) ? "the value" : "the key");
    char *v = tsr_strdup(ctx, value);
    if (!v) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_st_writer_set_meta: no memory");
    for (size_t i = 0; i < w->meta_n; i++)
        if (strcmp(w->meta[i].key, key) == 0) {
            tsr_free(ctx, (char *)w->meta[i].value);
            w->meta[i].value = v;
            return TSR_OK;
        }
    char *k = tsr_strdup(ctx, key);
    if (!k || grow(ctx, (void **)&w->meta, w->meta_n, &w->meta_cap, sizeof *w->meta)) {
        tsr_free(ctx, k);
        tsr_free(ctx, v);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_st_writer_set_meta: no memory");
    }
    w->meta[w->meta_n].key = k;
    w->meta[w->meta_n++].value = v;
    return TSR_OK;
}

/* The header text, grown as needed; `failed` once an allocation failed. */
typedef struct text {
    tsr_context *ctx;
    char *p;
    size_t n, cap;
    int failed;
} text;

static void put(text *t, const char *s, size_t n) {
    if (t->failed) return;
    if (t->n + n > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->n + n) cap *= 2;
        char *p = tsr_malloc(t->ctx, cap);
        if (!p) {
            t->failed = 1;
            return;
        }
        if (t->n) memcpy(p, t->p, t->n);
        tsr_free(t->ctx, t->p);
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->n, s, n);
    t->n += n;
}

static void put_str(text *t, const char *s) { put(t, s, strlen(s)); }

static void put_u64(text *t, uint64_t v) {
    char b[24];
    int n = snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    put(t, b, (size_t)n);
}

/* A JSON string escaped as serde_json does (the reference writer), so equal input gives equal
 * bytes: \" \\ \b \f \n \r \t, other control characters as \u00xx, everything else as is. */
static void put_json_string(text *t, const char *s) {
    put(t, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        const char *esc = NULL;
        char u[7];
        switch (*c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (*c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", *c);
                esc = u;
            }
        }
        if (esc) put_str(t, esc);
        else put(t, (const char *)c, 1);
    }
    put(t, "\"", 1);
}

/* Reference order: dtype descending (widest first), then name bytewise. */
static int cmp_entry(const void *a, const void *b) {
    const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;
    if (x->dtype != y->dtype) return x->dtype > y->dtype ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int cmp_meta_ptr(const void *a, const void *b) {
    return cmp_meta(*(const tsr_st_meta *const *)a, *(const tsr_st_meta *const *)b);
}

static void header_text(text *t, const tsr_st_writer *w, const entry **order,
                        const tsr_st_meta **meta) {
    put(t, "{", 1);
    if (w->meta_n) {
        put_str(t, "\"__metadata__\":{");
        for (size_t i = 0; i < w->meta_n; i++) {
            if (i) put(t, ",", 1);
            put_json_string(t, meta[i]->key);
            put(t, ":", 1);
            put_json_string(t, meta[i]->value);
        }
        put(t, "}", 1);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const entry *e = order[i];
        if (i || w->meta_n) put(t, ",", 1);
        put_json_string(t, e->name);
        put_str(t, ":{\"dtype\":\"");
        put_str(t, dtype_info[e->dtype].name);
        put_str(t, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) put(t, ",", 1);
            put_u64(t, e->shape[d]);
        }
        put_str(t, "],\"data_offsets\":[");
        put_u64(t, off);
        put(t, ",", 1);
        off += e->bytes;
        put_u64(t, off);
        put_str(t, "]}");
    }
    put(t, "}", 1);
    while (!t->failed && t->n % 8) put(t, " ", 1);
}

/* Writes one tensor's data; returns 0 or errno. */
static int write_entry(FILE *fp, const entry *e) {
    if (e->dtype == TSR_ST_F32 && e->f32 && host_is_little_endian()) /* already the file's bytes */
        return e->bytes && fwrite(e->f32, 1, e->bytes, fp) != e->bytes ? (errno ? errno : EIO) : 0;
    if (e->raw)
        return e->bytes && fwrite(e->raw, 1, e->bytes, fp) != e->bytes ? (errno ? errno : EIO) : 0;
    unsigned char buf[8192];
    unsigned size = dtype_info[e->dtype].bits / 8;
    size_t per = sizeof buf / size;
    for (size_t i = 0; i < e->count;) {
        size_t k = e->count - i < per ? (size_t)(e->count - i) : per;
        for (size_t j = 0; j < k; j++) {
            float f = e->f32[i + j];
            uint64_t v;
            if (e->dtype == TSR_ST_F32) {
                uint32_t u;
                memcpy(&u, &f, 4);
                v = u;
            } else if (e->dtype == TSR_ST_F64) {
                double d = f;
                memcpy(&v, &d, 8);
            } else if (e->dtype == TSR_ST_F16) {
                v = tsr_f32_to_f16_scalar(f);
            } else {
                v = tsr_f32_to_bf16(f);
            }
            put_le(buf + j * size, v, (int)size);
        }
        if (fwrite(buf, size, k, fp) != k) return errno ? errno : EIO;
        i += k;
    }
    return 0;
}

tsr_status tsr_st_writer_save(tsr_context *ctx, const tsr_st_writer *w, const char *path) {
    if (!w || !path || !*path)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_st_writer_save: %s is %s",
                         !w ? "writer" : "path", !w || !path ? "NULL" : "empty");
    const entry **order = tsr_calloc(ctx, w->n + 1, sizeof *order);
    const tsr_st_meta **meta = tsr_calloc(ctx, w->meta_n + 1, sizeof *meta);
    text t = {ctx, NULL, 0, 0, 0};
    tsr_status s = TSR_OK;
    if (order && meta) {
        for (size_t i = 0; i < w->n; i++) order[i] = &w->e[i];
        for (size_t i = 0; i < w->meta_n; i++) meta[i] = &w->meta[i];
        qsort(order, w->n, sizeof *order, cmp_entry);
        qsort(meta, w->meta_n, sizeof *meta, cmp_meta_ptr);
        header_text(&t, w, order, meta);
    }
    if (!order || !meta || t.failed)
        s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory for the header", path);
    else if (t.n > TSR_ST_MAX_HEADER)
        s = tsr_error(ctx, TSR_ERR_INVALID_ARG,
                      "%s: the header would be %zu bytes, over the readers' limit of %u", path, t.n,
                      TSR_ST_MAX_HEADER);
    tsr_atomic_file af;
    if (s == TSR_OK) s = tsr_atomic_open(ctx, path, &af);
    if (s == TSR_OK) {
        unsigned char len[8];
        put_le(len, t.n, 8);
        errno = 0;
        int err = fwrite(len, 1, 8, af.fp) == 8 && fwrite(t.p, 1, t.n, af.fp) == t.n
                      ? 0
                      : (errno ? errno : EIO);
        for (size_t i = 0; i < w->n && !err; i++) err = write_entry(af.fp, order[i]);
        if (err && !af.err) af.err = err; /* commit reports the write step and removes the temp */
        s = tsr_atomic_commit(&af);
    }
    tsr_free(ctx, t.p);
    tsr_free(ctx, order);
    tsr_free(ctx, meta);
    return s;
}
