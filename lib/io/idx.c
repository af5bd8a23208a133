/* IDX reader (the MNIST file format), plain or gzip-compressed.
 *
 * Layout: magic {0, 0, type, ndim}, ndim big-endian uint32 dimensions, then
 * prod(dims) * size(type) big-endian elements and nothing after them. gzip input is
 * recognised by its magic (1f 8b) and inflated in memory with zlib; concatenated gzip
 * members are accepted, as gzip(1) does. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>
#include "lib/io/idx.h"
#include "lib/core/internal.h"

size_t tsr_idx_type_size(int type) {
    switch (type) {
    case 0x08: return 1;
    case 0x09: return 1;
    case 0x0B: return 2;
    case 0x0C: return 4;
    case 0x0D: return 4;
    case 0x0E: return 8;
    }
    return 0;
}

const char *tsr_idx_type_name(int type) {
    switch (type) {
    case 0x08: return "ubyte";
    case 0x09: return "byte";
    case 0x0B: return "short";
    case 0x0C: return "int";
    case 0x0D: return "float";
    case 0x0E: return "double";
    }
    return "unknown";
}

tsr_status tsr_read_file(tsr_context *ctx, const char *path, void **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        int e = errno;
        return tsr_error(ctx, e == ENOENT ? TSR_ERR_NOT_FOUND : TSR_ERR_IO, "%s: cannot open: %s",
                         path, strerror(e));
    }
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return tsr_error(ctx, TSR_ERR_IO, "%s: not a regular file", path);
    }
    if ((uintmax_t)sb.st_size > (uintmax_t)(SIZE_MAX / 2)) {
        fclose(fp);
        return tsr_error(ctx, TSR_ERR_IO, "%s: file too large (%jd bytes)", path,
                         (intmax_t)sb.st_size);
    }
    size_t n = (size_t)sb.st_size;
    unsigned char *buf = tsr_malloc(ctx, n);
    if (!buf) {
        fclose(fp);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes to read it", path,
                         n);
    }
    size_t got = n ? fread(buf, 1, n, fp) : 0;
    int err = ferror(fp);
    fclose(fp);
    if (got != n || err) {
        tsr_free(ctx, buf);
        return tsr_error(ctx, TSR_ERR_IO, "%s: read %zu of %zu bytes (file changed or I/O error)",
                         path, got, n);
    }
    *data = buf;
    *size = n;
    return TSR_OK;
}

/* --- byte source: raw memory or an inflating gzip stream over it --- */

typedef struct src {
    tsr_context *ctx;
    const char *name;
    const unsigned char *in;
    size_t in_len, in_pos; /* in_pos: raw read position, or compressed bytes consumed */
    int gz;
    int ended;             /* gz: last member finished and nothing follows */
    z_stream z;
} src;

static voidpf z_alloc(voidpf opaque, uInt items, uInt size) {
    size_t total;
    if (tsr_mul_size(items, size, &total)) return Z_NULL;
    return tsr_malloc(opaque, total);
}
static void z_free(voidpf opaque, voidpf p) { tsr_free(opaque, p); }

/* Reads up to n bytes; *got < n only when the data ends. */
static tsr_status src_read(src *s, unsigned char *dst, size_t n, size_t *got) {
    *got = 0;
    if (!s->gz) {
        size_t left = s->in_len - s->in_pos;
        size_t k = n < left ? n : left;
        if (k) memcpy(dst, s->in + s->in_pos, k);
        s->in_pos += k;
        *got = k;
        return TSR_OK;
    }
    while (*got < n && !s->ended) {
        size_t in_left = s->in_len - s->in_pos;
        size_t out_left = n - *got;
        s->z.next_in = (Bytef *)(s->in + s->in_pos);
        s->z.avail_in = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
        s->z.next_out = dst + *got;
        s->z.avail_out = out_left > UINT_MAX ? UINT_MAX : (uInt)out_left;
        uInt avail_in0 = s->z.avail_in, avail_out0 = s->z.avail_out;
        int rc = inflate(&s->z, Z_NO_FLUSH);
        s->in_pos += avail_in0 - s->z.avail_in;
        *got += avail_out0 - s->z.avail_out;
        if (rc == Z_STREAM_END) {
            size_t rest = s->in_len - s->in_pos;
            if (rest == 0) {
                s->ended = 1;
            } else if (rest >= 2 && s->in[s->in_pos] == 0x1f && s->in[s->in_pos + 1] == 0x8b) {
                inflateReset(&s->z); /* another gzip member follows */
            } else {
                return tsr_error(s->ctx, TSR_ERR_CORRUPT,
                                 "%s: %zu bytes of trailing garbage after the gzip stream",
                                 s->name, rest);
            }
        } else if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_STREAM_ERROR) {
            return tsr_error(s->ctx, TSR_ERR_CORRUPT,
                             "%s: corrupt gzip data at compressed byte %zu: %s", s->name,
                             s->in_pos, s->z.msg ? s->z.msg : "invalid stream");
        } else if (rc == Z_MEM_ERROR) {
            return tsr_error(s->ctx, TSR_ERR_NO_MEMORY, "%s: out of memory inflating gzip data",
                             s->name);
        } else if (avail_in0 == s->z.avail_in && avail_out0 == s->z.avail_out) {
            /* No progress with output room left: the compressed input ran out. */
            return tsr_error(s->ctx, TSR_ERR_TRUNCATED,
                             "%s: truncated: gzip stream ends early after %zu compressed bytes",
                             s->name, s->in_len);
        }
    }
    return TSR_OK;
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Big-endian elements to host order, in place. */
static void to_host_order(unsigned char *p, size_t count, size_t esize) {
    if (esize == 1 || !host_is_little_endian()) return;
    for (size_t i = 0; i < count; i++, p += esize)
        for (size_t a = 0, b = esize - 1; a < b; a++, b--) {
            unsigned char t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

static tsr_status parse(src *s, tsr_idx *idx) {
    unsigned char hdr[4 + 4 * 8];
    size_t got;
    TSR_TRY(src_read(s, hdr, 4, &got));
    if (got < 4)
        return tsr_error(s->ctx, TSR_ERR_TRUNCATED, "%s: truncated: %zu bytes, the magic needs 4",
                         s->name, got);
    uint32_t magic = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (hdr[0] != 0 || hdr[1] != 0)
        return tsr_error(s->ctx, TSR_ERR_CORRUPT,
                         "%s: bad magic 0x%08x: not an IDX file (first two bytes must be 0)",
                         s->name, (unsigned)magic);
    idx->type = hdr[2];
    idx->elem_size = tsr_idx_type_size(idx->type);
    if (!idx->elem_size)
        return tsr_error(s->ctx, TSR_ERR_CORRUPT,
                         "%s: bad magic 0x%08x: unknown element type 0x%02x (known: 08 ubyte, "
                         "09 byte, 0B short, 0C int, 0D float, 0E double)",
                         s->name, (unsigned)magic, (unsigned)hdr[2]);
    idx->ndim = hdr[3];
    if (idx->ndim < 1 || idx->ndim > 8)
        return tsr_error(s->ctx, TSR_ERR_CORRUPT,
                         "%s: bad magic 0x%08x: %d dimensions, 1..8 supported", s->name,
                         (unsigned)magic, idx->ndim);
    size_t dim_bytes = 4 * (size_t)idx->ndim;
    TSR_TRY(src_read(s, hdr + 4, dim_bytes, &got));
    if (got < dim_bytes)
        return tsr_error(s->ctx, TSR_ERR_TRUNCATED,
                         "%s: truncated: header needs %zu bytes for %d dimensions, %zu found",
                         s->name, 4 + dim_bytes, idx->ndim, 4 + got);
    size_t count = 1, bytes;
    int overflow = 0;
    for (int i = 0; i < idx->ndim; i++) {
        const unsigned char *d = hdr + 4 + 4 * i;
        idx->dims[i] = (uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
        if (tsr_mul_size(count, idx->dims[i], &count)) overflow = 1;
    }
    if (overflow || tsr_mul_size(count, idx->elem_size, &bytes)) {
        char dims[8 * 12] = "";
        size_t len = 0;
        for (int i = 0; i < idx->ndim; i++)
            len += (size_t)snprintf(dims + len, sizeof dims - len, "%s%u", i ? "x" : "",
                                    (unsigned)idx->dims[i]);
        return tsr_error(s->ctx, TSR_ERR_CORRUPT,
                         "%s: dimensions %s of %s elements overflow the address space", s->name,
                         dims, tsr_idx_type_name(idx->type));
    }
    idx->count = count;
    size_t header = 4 + dim_bytes;

    /* Raw input: the length is known, so check it before allocating anything. */
    if (!s->gz) {
        size_t left = s->in_len - s->in_pos;
        if (left < bytes)
            return tsr_error(s->ctx, TSR_ERR_TRUNCATED,
                             "%s: truncated: %zu data bytes expected, %zu found", s->name, bytes,
                             left);
        if (left > bytes)
            return tsr_error(s->ctx, TSR_ERR_CORRUPT,
                             "%s: %zu bytes of trailing garbage after the %zu data bytes "
                             "(header %zu bytes)",
                             s->name, left - bytes, bytes, header);
    }
    /* gzip: never allocate more than the compressed input could possibly inflate to
     * (deflate tops out near 1032:1); grow as real data arrives. */
    size_t cap = bytes;
    if (s->gz) {
        size_t bound;
        if (tsr_mul_size(s->in_len, 1032, &bound) == 0 && bound < SIZE_MAX - 65536) {
            bound += 65536;
            if (cap > bound) cap = bound;
        }
    }
    unsigned char *buf = tsr_malloc(s->ctx, cap);
    if (!buf)
        return tsr_error(s->ctx, TSR_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes of data",
                         s->name, cap);
    size_t have = 0;
    for (;;) {
        tsr_status st = src_read(s, buf + have, cap - have, &got);
        have += got;
        if (st != TSR_OK) {
            tsr_free(s->ctx, buf);
            return st;
        }
        if (have < cap) {
            tsr_free(s->ctx, buf);
            return tsr_error(s->ctx, TSR_ERR_TRUNCATED,
                             "%s: truncated: %zu data bytes expected, %zu found", s->name, bytes,
                             have);
        }
        if (cap == bytes) break;
        size_t ncap = cap > bytes / 2 ? bytes : cap * 2;
        unsigned char *nbuf = tsr_malloc(s->ctx, ncap);
        if (!nbuf) {
            tsr_free(s->ctx, buf);
            return tsr_error(s->ctx, TSR_ERR_NO_MEMORY, "%s: cannot allocate %zu bytes of data",
                             s->name, ncap);
        }
        memcpy(nbuf, buf, have);
        tsr_free(s->ctx, buf);
        buf = nbuf;
        cap = ncap;
    }
    if (s->gz) {
        /* Drive the stream to its end: checks the gzip CRC and finds trailing data. */
        unsigned char extra[256];
        size_t more = 0;
        tsr_status st;
        do {
            st = src_read(s, extra, sizeof extra, &got);
            more += got;
        } while (st == TSR_OK && got == sizeof extra);
        if (st == TSR_OK && more)
            st = tsr_error(s->ctx, TSR_ERR_CORRUPT,
                           "%s: %zu bytes of trailing garbage after the %zu data bytes "
                           "(header %zu bytes)",
                           s->name, more, bytes, header);
        if (st != TSR_OK) {
            tsr_free(s->ctx, buf);
            return st;
        }
    }
    to_host_order(buf, count, idx->elem_size);
    idx->data = buf;
    return TSR_OK;
}

tsr_status tsr_idx_load_mem(tsr_context *ctx, const char *name, const void *data, size_t size,
                            tsr_idx **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_idx_load: out is NULL");
    *out = NULL;
    if (!name) name = "<memory>";
    if (!data && size) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: data is NULL", name);
    tsr_idx *idx = tsr_calloc(ctx, 1, sizeof *idx);
    if (!idx) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: cannot allocate the IDX header", name);
    src s;
    memset(&s, 0, sizeof s);
    s.ctx = ctx;
    s.name = name;
    s.in = data;
    s.in_len = size;
    s.gz = size >= 2 && s.in[0] == 0x1f && s.in[1] == 0x8b;
    if (s.gz) {
        s.z.zalloc = z_alloc;
        s.z.zfree = z_free;
        s.z.opaque = ctx;
        int rc = inflateInit2(&s.z, 16 + MAX_WBITS); /* 16: gzip wrapper only */
        if (rc != Z_OK) {
            tsr_free(ctx, idx);
            return tsr_error(ctx, rc == Z_MEM_ERROR ? TSR_ERR_NO_MEMORY : TSR_ERR_INTERNAL,
                             "%s: cannot start gzip decoding (zlib %d)", name, rc);
        }
    }
    tsr_status st = parse(&s, idx);
    if (s.gz) inflateEnd(&s.z);
    if (st != TSR_OK) {
        tsr_free(ctx, idx);
        return st;
    }
    *out = idx;
    return TSR_OK;
}

tsr_status tsr_idx_load(tsr_context *ctx, const char *path, tsr_idx **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_idx_load: out is NULL");
    *out = NULL;
    if (!path) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_idx_load: path is NULL");
    void *data;
    size_t size;
    TSR_TRY(tsr_read_file(ctx, path, &data, &size));
    tsr_status st = tsr_idx_load_mem(ctx, path, data, size, out);
    tsr_free(ctx, data);
    return st;
}

void tsr_idx_free(tsr_context *ctx, tsr_idx *idx) {
    if (!idx) return;
    tsr_free(ctx, idx->data);
    tsr_free(ctx, idx);
}
