/* Checkpoints: a versioned little-endian binary file, written atomically, validated on load.
 *
 * Format versions 1 and 2 (all integers little-endian, offsets from the start of the file);
 * version 2 adds the run metadata (a JSON object) and is written only when there is some, so
 * a checkpoint without metadata stays a version 1 file that older builds read:
 *
 *   off  size  field
 *     0     8  magic "TSRCKPT\0"
 *     8     4  u32 format version (1 or 2); a newer version is refused with TSR_ERR_UNSUPPORTED
 *    12     4  u32 header size (128)
 *    16     4  u32 flags (0; unknown bits are refused)
 *    20     4  u32 tensor count
 *    24     8  u64 file size in bytes, checksum included
 *    32     8  u64 step
 *    40     8  u64 epoch
 *    48     8  u64 seed
 *    56    32  u64 rng_state[4]
 *    88     4  u32 model spec length, terminating NUL included (1..1024)
 *    92     4  u32 optimizer name length, terminating NUL included (1..64)
 *    96     8  u64 tensor table offset (8-aligned, after the strings)
 *   104     8  u64 tensor data offset (8-aligned, after the table)
 *   112     4  version 2: u32 metadata length, terminating NUL included (0: none,
 *              else 3..TSR_CKPT_META_MAX); version 1: zero
 *   116    12  reserved, zero
 *   128        model spec, NUL; optimizer name, NUL; [version 2: metadata, NUL;] zero
 *              padding to 8
 *   table      tensor count entries of 80 bytes: name[64] (NUL-terminated, zero-padded,
 *              1..63 bytes, unique), u64 element count, u64 data offset (8-aligned)
 *   data       each tensor's float32 values in table order, each starting 8-aligned,
 *              never overlapping, zero padding between
 *   size-4  4  u32 CRC-32 (zlib crc32) of every byte before it
 *
 * The CRC covers the whole file, so any single corrupted byte or burst up to 32 bits is
 * detected; the structural checks still run on every field (fuzzing skips the CRC). */
#include <errno.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>
#include <cJSON.h>
#include "lib/core/atomic_file.h"
#include "lib/io/checkpoint_internal.h"
#include "lib/io/idx.h"
#include "lib/core/internal.h"

static const unsigned char ckpt_magic[8] = {'T', 'S', 'R', 'C', 'K', 'P', 'T', '\0'};

static uint64_t align8(uint64_t x) { return (x + 7) & ~(uint64_t)7; }

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static int host_is_little_endian(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static uint32_t crc_update(uint32_t crc, const unsigned char *p, size_t n) {
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, p, k);
        p += k;
        n -= k;
    }
    return crc;
}

/* ------------------------------------------------------------------ in-memory objects */

void tsr_checkpoint_free(tsr_context *ctx, tsr_checkpoint *ck) {
    if (!ck) return;
    if (ck->tensors)
        for (size_t i = 0; i < ck->tensor_count; i++) tsr_free(ctx, ck->tensors[i].data);
    tsr_free(ctx, ck->tensors);
    tsr_free(ctx, ck->meta);
    tsr_free(ctx, ck);
}

tsr_status tsr_checkpoint_create(tsr_context *ctx, tsr_checkpoint **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_checkpoint_create: out is NULL");
    *out = tsr_calloc(ctx, 1, sizeof **out);
    if (!*out) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_checkpoint_create: no memory");
    return TSR_OK;
}

const tsr_checkpoint_tensor *tsr_checkpoint_find(const tsr_checkpoint *ck, const char *name) {
    if (!ck || !name || !ck->tensors) return NULL;
    for (size_t i = 0; i < ck->tensor_count; i++)
        if (strncmp(ck->tensors[i].name, name, sizeof ck->tensors[i].name) == 0)
            return &ck->tensors[i];
    return NULL;
}

/* Metadata must be a JSON object of bounded size: checked at save and at load alike. */
static tsr_status check_meta(tsr_context *ctx, const char *name, const char *meta, size_t len) {
    if (len + 1 > TSR_CKPT_META_MAX)
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: metadata of %zu bytes exceeds %u", name, len + 1,
                         TSR_CKPT_META_MAX);
    cJSON *j = cJSON_ParseWithLength(meta, len);
    int ok = cJSON_IsObject(j);
    cJSON_Delete(j);
    if (!ok) return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: metadata is not a JSON object", name);
    return TSR_OK;
}

tsr_status tsr_checkpoint_set_meta(tsr_context *ctx, tsr_checkpoint *ck, const char *json) {
    if (!ck) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_checkpoint_set_meta: checkpoint is NULL");
    char *copy = NULL;
    if (json) {
        size_t len = strlen(json);
        tsr_status st = check_meta(ctx, "tsr_checkpoint_set_meta", json, len);
        if (st != TSR_OK) return st == TSR_ERR_CORRUPT ? TSR_ERR_INVALID_ARG : st;
        if (!(copy = tsr_malloc(ctx, len + 1)))
            return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_checkpoint_set_meta: %zu bytes", len + 1);
        memcpy(copy, json, len + 1);
    }
    tsr_free(ctx, ck->meta);
    ck->meta = copy;
    return TSR_OK;
}

tsr_status tsr_checkpoint_add_tensor(tsr_context *ctx, tsr_checkpoint *ck, const char *name,
                                     const float *data, size_t count) {
    if (!ck || !name)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_checkpoint_add_tensor: %s is NULL",
                         ck ? "name" : "checkpoint");
    size_t len = strlen(name);
    if (len == 0 || len >= sizeof ck->tensors[0].name)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "tsr_checkpoint_add_tensor: tensor name \"%.64s\" must be 1..%zu bytes",
                         name, sizeof ck->tensors[0].name - 1);
    if (tsr_checkpoint_find(ck, name))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "tsr_checkpoint_add_tensor: tensor \"%s\" already present", name);
    size_t bytes;
    if (tsr_mul_size(count, sizeof(float), &bytes) || count > (SIZE_MAX - 8) / 4 / 2)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "tsr_checkpoint_add_tensor: tensor \"%s\": %zu floats overflow", name,
                         count);
    tsr_checkpoint_tensor *t = tsr_calloc(ctx, ck->tensor_count + 1, sizeof *t);
    float *copy = count ? tsr_malloc(ctx, bytes) : NULL;
    if (!t || (count && !copy)) {
        tsr_free(ctx, t);
        tsr_free(ctx, copy);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY,
                         "tsr_checkpoint_add_tensor: cannot allocate tensor \"%s\" (%zu floats)",
                         name, count);
    }
    if (count) {
        if (data) memcpy(copy, data, bytes);
        else memset(copy, 0, bytes);
    }
    if (ck->tensor_count) memcpy(t, ck->tensors, ck->tensor_count * sizeof *t);
    tsr_strlcpy(t[ck->tensor_count].name, name, sizeof t[0].name);
    t[ck->tensor_count].count = count;
    t[ck->tensor_count].data = copy;
    tsr_free(ctx, ck->tensors);
    ck->tensors = t;
    ck->tensor_count++;
    return TSR_OK;
}

/* ------------------------------------------------------------------ save */

typedef struct writer {
    tsr_atomic_file *file;
    uint32_t crc;
    long long kill_after; /* fault injection (TSR_FAULT_CKPT_KILL): -1, or bytes before SIGKILL */
    unsigned long long written;
} writer;

static void w_bytes(writer *w, const void *p, size_t n) {
    if (w->file->err || !n) return;
    if (w->kill_after >= 0 && w->written + n > (unsigned long long)w->kill_after) {
        /* tests/fault: the process dies mid-write, as under kill -9 or a power cut */
        size_t part = (size_t)((unsigned long long)w->kill_after - w->written);
        if (tsr_atomic_write(w->file, p, part) == 0) fflush(w->file->fp);
        raise(SIGKILL);
    }
    w->written += n;
    w->crc = crc_update(w->crc, p, n);
    tsr_atomic_write(w->file, p, n);
}

static void w_zeros(writer *w, size_t n) {
    static const unsigned char zeros[8];
    while (n) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        w_bytes(w, zeros, k);
        n -= k;
    }
}

static void w_floats(writer *w, const float *x, size_t n) {
    if (host_is_little_endian()) {
        w_bytes(w, x, n * sizeof(float));
        return;
    }
    unsigned char buf[4096];
    while (n && !w->file->err) {
        size_t k = n < sizeof buf / 4 ? n : sizeof buf / 4;
        for (size_t i = 0; i < k; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            put_u32(buf + 4 * i, u);
        }
        w_bytes(w, buf, 4 * k);
        x += k;
        n -= k;
    }
}

/* Checks what the format can hold and computes the layout. */
static tsr_status check_for_save(tsr_context *ctx, const char *path, const tsr_checkpoint *ck,
                                 uint64_t *table_off, uint64_t *data_off, uint64_t *file_size) {
    size_t spec = strnlen(ck->model_spec, sizeof ck->model_spec);
    size_t opt = strnlen(ck->optimizer, sizeof ck->optimizer);
    if (spec == sizeof ck->model_spec)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "%s: model_spec is not NUL-terminated within %zu bytes", path,
                         sizeof ck->model_spec);
    if (opt == sizeof ck->optimizer)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "%s: optimizer is not NUL-terminated within %zu bytes", path,
                         sizeof ck->optimizer);
    if (ck->tensor_count && !ck->tensors)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tensor_count %zu but tensors is NULL",
                         path, ck->tensor_count);
    if (ck->tensor_count > UINT32_MAX)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tensor_count %zu exceeds the format limit",
                         path, ck->tensor_count);
    uint64_t off = TSR_CKPT_HEADER_SIZE + spec + 1 + opt + 1;
    if (ck->meta) {
        size_t meta = strlen(ck->meta);
        tsr_status st = check_meta(ctx, path, ck->meta, meta);
        if (st != TSR_OK) return st == TSR_ERR_CORRUPT ? TSR_ERR_INVALID_ARG : st;
        off += meta + 1;
    }
    *table_off = align8(off);
    *data_off = *table_off + (uint64_t)ck->tensor_count * TSR_CKPT_ENTRY_SIZE;
    off = *data_off;
    for (size_t i = 0; i < ck->tensor_count; i++) {
        const tsr_checkpoint_tensor *t = &ck->tensors[i];
        size_t len = strnlen(t->name, sizeof t->name);
        if (len == 0 || len == sizeof t->name)
            return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                             "%s: tensors[%zu].name must be 1..%zu bytes, NUL-terminated", path, i,
                             sizeof t->name - 1);
        for (size_t j = 0; j < i; j++)
            if (strcmp(ck->tensors[j].name, t->name) == 0)
                return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                                 "%s: tensors[%zu] and tensors[%zu] are both named \"%s\"", path, j,
                                 i, t->name);
        if (t->count && !t->data)
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tensor \"%s\" has %zu floats but no data",
                             path, t->name, t->count);
        if ((uint64_t)t->count > (UINT64_MAX - off - 16) / 4)
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tensor \"%s\": %zu floats overflow",
                             path, t->name, t->count);
        off = align8(off + (uint64_t)t->count * 4);
    }
    *file_size = off + 4;
    return TSR_OK;
}

static void write_all(writer *w, const tsr_checkpoint *ck, uint64_t table_off, uint64_t data_off,
                      uint64_t file_size) {
    size_t spec = strlen(ck->model_spec) + 1, opt = strlen(ck->optimizer) + 1;
    size_t meta = ck->meta ? strlen(ck->meta) + 1 : 0;
    unsigned char h[TSR_CKPT_HEADER_SIZE];
    memset(h, 0, sizeof h);
    memcpy(h, ckpt_magic, 8);
    put_u32(h + 8, meta ? TSR_CKPT_VERSION : 1u);
    put_u32(h + 12, TSR_CKPT_HEADER_SIZE);
    put_u32(h + 16, 0);
    put_u32(h + 20, (uint32_t)ck->tensor_count);
    put_u64(h + 24, file_size);
    put_u64(h + 32, ck->step);
    put_u64(h + 40, ck->epoch);
    put_u64(h + 48, ck->seed);
    for (int i = 0; i < 4; i++) put_u64(h + 56 + 8 * i, ck->rng_state[i]);
    put_u32(h + 88, (uint32_t)spec);
    put_u32(h + 92, (uint32_t)opt);
    put_u64(h + 96, table_off);
    put_u64(h + 104, data_off);
    put_u32(h + 112, (uint32_t)meta);
    w_bytes(w, h, sizeof h);
    w_bytes(w, ck->model_spec, spec);
    w_bytes(w, ck->optimizer, opt);
    if (meta) w_bytes(w, ck->meta, meta);
    w_zeros(w, (size_t)(table_off - (TSR_CKPT_HEADER_SIZE + spec + opt + meta)));
    uint64_t off = data_off;
    for (size_t i = 0; i < ck->tensor_count; i++) {
        unsigned char e[TSR_CKPT_ENTRY_SIZE];
        memset(e, 0, sizeof e);
        memcpy(e, ck->tensors[i].name, strlen(ck->tensors[i].name));
        put_u64(e + 64, ck->tensors[i].count);
        put_u64(e + 72, off);
        w_bytes(w, e, sizeof e);
        off = align8(off + (uint64_t)ck->tensors[i].count * 4);
    }
    for (size_t i = 0; i < ck->tensor_count; i++) {
        size_t bytes = ck->tensors[i].count * 4;
        w_floats(w, ck->tensors[i].data, ck->tensors[i].count);
        w_zeros(w, (size_t)(align8(bytes) - bytes));
    }
    unsigned char c[4];
    put_u32(c, w->crc);
    w_bytes(w, c, 4);
}

tsr_status tsr_checkpoint_save(tsr_context *ctx, const char *path, const tsr_checkpoint *ck) {
    if (!path || !*path || !ck)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_checkpoint_save: %s is %s",
                         !path || !*path ? "path" : "checkpoint", path ? "empty" : "NULL");
    uint64_t table_off = 0, data_off = 0, file_size = 0;
    TSR_TRY(check_for_save(ctx, path, ck, &table_off, &data_off, &file_size));
    tsr_atomic_file file;
    TSR_TRY(tsr_atomic_open(ctx, path, &file));
    writer w = {&file, 0, -1, 0};
    if (ctx) w.kill_after = ctx->opts.fault_ckpt_kill; /* tests: TSR_FAULT_CKPT_KILL */
    w.crc = (uint32_t)crc32(0L, Z_NULL, 0);
    write_all(&w, ck, table_off, data_off, file_size);
    return tsr_atomic_commit(&file);
}

/* ------------------------------------------------------------------ load */

/* A validation failure: records the error and returns its status. */
#define BAD(status, ...) return tsr_error(ctx, status, __VA_ARGS__)

static tsr_status parse_header(tsr_context *ctx, const char *name, const unsigned char *p,
                               size_t size, unsigned flags, uint64_t *table_off,
                               uint64_t *data_off, uint32_t *count) {
    if (size == 0) BAD(TSR_ERR_TRUNCATED, "%s: truncated: empty file", name);
    size_t m = size < 8 ? size : 8;
    if (memcmp(p, ckpt_magic, m) != 0)
        BAD(TSR_ERR_CORRUPT, "%s: bad magic: not a tessera checkpoint (expected \"TSRCKPT\")", name);
    if (size < 12)
        BAD(TSR_ERR_TRUNCATED, "%s: truncated: %zu bytes, the header needs %u", name, size,
            TSR_CKPT_HEADER_SIZE);
    uint32_t version = get_u32(p + 8);
    if (version > TSR_CKPT_VERSION)
        BAD(TSR_ERR_UNSUPPORTED,
            "%s: format version %u is newer than this build reads (version %u): upgrade tessera",
            name, (unsigned)version, TSR_CKPT_VERSION);
    if (version == 0) BAD(TSR_ERR_CORRUPT, "%s: format version 0 is invalid", name);
    if (size < TSR_CKPT_HEADER_SIZE)
        BAD(TSR_ERR_TRUNCATED, "%s: truncated: %zu bytes, the header needs %u", name, size,
            TSR_CKPT_HEADER_SIZE);
    uint32_t header_size = get_u32(p + 12);
    if (header_size != TSR_CKPT_HEADER_SIZE)
        BAD(TSR_ERR_CORRUPT, "%s: header size %u, version %u has %u", name, (unsigned)header_size,
            (unsigned)version, TSR_CKPT_HEADER_SIZE);
    uint64_t file_size = get_u64(p + 24);
    if (file_size > size)
        BAD(TSR_ERR_TRUNCATED, "%s: truncated: %zu bytes, the header's file size is %llu", name,
            size, (unsigned long long)file_size);
    if (file_size < size)
        BAD(TSR_ERR_CORRUPT, "%s: %llu bytes of trailing garbage after the header's file size %llu",
            name, (unsigned long long)(size - file_size), (unsigned long long)file_size);
    if (file_size < TSR_CKPT_HEADER_SIZE + 4)
        BAD(TSR_ERR_CORRUPT, "%s: file size %llu is below the minimum %u", name,
            (unsigned long long)file_size, TSR_CKPT_HEADER_SIZE + 4);
    if (!(flags & TSR_CKPT_LOAD_NO_CRC)) {
        uint32_t stored = get_u32(p + size - 4);
        uint32_t actual = crc_update((uint32_t)crc32(0L, Z_NULL, 0), p, size - 4);
        if (stored != actual)
            BAD(TSR_ERR_CORRUPT, "%s: checksum mismatch: stored CRC-32 0x%08x, computed 0x%08x",
                name, (unsigned)stored, (unsigned)actual);
    }
    uint32_t fl = get_u32(p + 16);
    if (fl != 0) BAD(TSR_ERR_UNSUPPORTED, "%s: unknown flags 0x%08x", name, (unsigned)fl);
    for (size_t i = version >= 2 ? 116 : 112; i < TSR_CKPT_HEADER_SIZE; i++)
        if (p[i]) BAD(TSR_ERR_CORRUPT, "%s: reserved header byte %zu is not zero", name, i);
    *count = get_u32(p + 20);
    *table_off = get_u64(p + 96);
    *data_off = get_u64(p + 104);
    return TSR_OK;
}

tsr_status tsr_checkpoint_load_mem(tsr_context *ctx, const char *name, const void *data,
                                   size_t size, unsigned flags, tsr_checkpoint **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_checkpoint_load: out is NULL");
    *out = NULL;
    if (!name) name = "<memory>";
    if (!data && size) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: data is NULL", name);
    const unsigned char *p = data;
    uint64_t table_off = 0, data_off = 0;
    uint32_t count = 0;
    TSR_TRY(parse_header(ctx, name, p, size, flags, &table_off, &data_off, &count));
    uint64_t end = size - 4; /* the CRC follows the data */

    uint32_t spec = get_u32(p + 88), opt = get_u32(p + 92);
    tsr_checkpoint probe; /* only for the field sizes */
    if (spec < 1 || spec > sizeof probe.model_spec)
        BAD(TSR_ERR_CORRUPT, "%s: model spec length %u outside 1..%zu", name, (unsigned)spec,
            sizeof probe.model_spec);
    if (opt < 1 || opt > sizeof probe.optimizer)
        BAD(TSR_ERR_CORRUPT, "%s: optimizer name length %u outside 1..%zu", name, (unsigned)opt,
            sizeof probe.optimizer);
    uint32_t meta = get_u32(p + 112); /* zero in version 1 (checked with the reserved bytes) */
    if (meta && (meta < 3 || meta > TSR_CKPT_META_MAX))
        BAD(TSR_ERR_CORRUPT, "%s: metadata length %u outside 3..%u", name, (unsigned)meta,
            TSR_CKPT_META_MAX);
    uint64_t strings_end = (uint64_t)TSR_CKPT_HEADER_SIZE + spec + opt + meta;
    if (strings_end > end)
        BAD(TSR_ERR_CORRUPT,
            "%s: model spec, optimizer name and metadata (%u + %u + %u bytes) run past the data",
            name, (unsigned)spec, (unsigned)opt, (unsigned)meta);
    const char *spec_s = (const char *)p + TSR_CKPT_HEADER_SIZE;
    const char *opt_s = spec_s + spec;
    if (strnlen(spec_s, spec) != spec - 1)
        BAD(TSR_ERR_CORRUPT, "%s: model spec is not a NUL-terminated string of %u bytes", name,
            (unsigned)spec);
    if (strnlen(opt_s, opt) != opt - 1)
        BAD(TSR_ERR_CORRUPT, "%s: optimizer name is not a NUL-terminated string of %u bytes", name,
            (unsigned)opt);
    const char *meta_s = opt_s + opt;
    if (meta && strnlen(meta_s, meta) != meta - 1)
        BAD(TSR_ERR_CORRUPT, "%s: metadata is not a NUL-terminated string of %u bytes", name,
            (unsigned)meta);
    if (meta) TSR_TRY(check_meta(ctx, name, meta_s, meta - 1));
    if (table_off % 8 || table_off < strings_end || table_off > end)
        BAD(TSR_ERR_CORRUPT,
            "%s: tensor table offset %llu must be 8-aligned and within [%llu, %llu]", name,
            (unsigned long long)table_off, (unsigned long long)strings_end,
            (unsigned long long)end);
    if ((uint64_t)count > (end - table_off) / TSR_CKPT_ENTRY_SIZE)
        BAD(TSR_ERR_CORRUPT, "%s: tensor table of %u entries at offset %llu runs past the data",
            name, (unsigned)count, (unsigned long long)table_off);
    uint64_t table_end = table_off + (uint64_t)count * TSR_CKPT_ENTRY_SIZE;
    if (data_off % 8 || data_off < table_end || data_off > end)
        BAD(TSR_ERR_CORRUPT,
            "%s: tensor data offset %llu must be 8-aligned and within [%llu, %llu]", name,
            (unsigned long long)data_off, (unsigned long long)table_end, (unsigned long long)end);

    /* Validate the whole table before allocating anything. */
    uint64_t prev_end = data_off;
    for (uint32_t i = 0; i < count; i++) {
        const unsigned char *e = p + table_off + (uint64_t)i * TSR_CKPT_ENTRY_SIZE;
        size_t len = strnlen((const char *)e, 64);
        if (len == 0 || len == 64)
            BAD(TSR_ERR_CORRUPT, "%s: tensor %u: name is %s", name, (unsigned)i,
                len ? "not NUL-terminated within 64 bytes" : "empty");
        for (uint32_t j = 0; j < i; j++)
            if (strcmp((const char *)e, (const char *)p + table_off + (uint64_t)j * TSR_CKPT_ENTRY_SIZE) == 0)
                BAD(TSR_ERR_CORRUPT, "%s: tensors %u and %u are both named \"%s\"", name,
                    (unsigned)j, (unsigned)i, (const char *)e);
        uint64_t n = get_u64(e + 64), off = get_u64(e + 72);
        if (off % 8 || off < prev_end || off > end || n > (end - off) / 4)
            BAD(TSR_ERR_CORRUPT,
                "%s: tensor \"%s\": %llu floats at offset %llu overlap another tensor, are "
                "misaligned or run past the data (allowed: 8-aligned within [%llu, %llu])",
                name, (const char *)e, (unsigned long long)n, (unsigned long long)off,
                (unsigned long long)prev_end, (unsigned long long)end);
        if (n > SIZE_MAX / 4)
            BAD(TSR_ERR_UNSUPPORTED, "%s: tensor \"%s\" of %llu floats is too large for this host",
                name, (const char *)e, (unsigned long long)n);
        prev_end = off + n * 4;
    }

    tsr_checkpoint *ck = tsr_calloc(ctx, 1, sizeof *ck);
    if (!ck) BAD(TSR_ERR_NO_MEMORY, "%s: cannot allocate the checkpoint", name);
    memcpy(ck->model_spec, spec_s, spec);
    memcpy(ck->optimizer, opt_s, opt);
    if (meta) {
        if (!(ck->meta = tsr_malloc(ctx, meta))) {
            tsr_checkpoint_free(ctx, ck);
            BAD(TSR_ERR_NO_MEMORY, "%s: cannot allocate %u bytes of metadata", name, (unsigned)meta);
        }
        memcpy(ck->meta, meta_s, meta);
    }
    ck->step = get_u64(p + 32);
    ck->epoch = get_u64(p + 40);
    ck->seed = get_u64(p + 48);
    for (int i = 0; i < 4; i++) ck->rng_state[i] = get_u64(p + 56 + 8 * i);
    if (count) {
        ck->tensors = tsr_calloc(ctx, count, sizeof *ck->tensors);
        if (!ck->tensors) {
            tsr_checkpoint_free(ctx, ck);
            BAD(TSR_ERR_NO_MEMORY, "%s: cannot allocate the table of %u tensors", name,
                (unsigned)count);
        }
    }
    ck->tensor_count = count;
    int le = host_is_little_endian();
    for (uint32_t i = 0; i < count; i++) {
        const unsigned char *e = p + table_off + (uint64_t)i * TSR_CKPT_ENTRY_SIZE;
        tsr_checkpoint_tensor *t = &ck->tensors[i];
        memcpy(t->name, e, 64);
        t->count = (size_t)get_u64(e + 64);
        const unsigned char *src = p + get_u64(e + 72);
        if (!t->count) continue;
        t->data = tsr_malloc(ctx, t->count * 4);
        if (!t->data) {
            tsr_checkpoint_free(ctx, ck);
            BAD(TSR_ERR_NO_MEMORY, "%s: cannot allocate tensor \"%s\" (%zu floats)", name,
                (const char *)e, (size_t)get_u64(e + 64));
        }
        if (le) {
            memcpy(t->data, src, t->count * 4);
        } else {
            for (size_t k = 0; k < t->count; k++) {
                uint32_t u = get_u32(src + 4 * k);
                memcpy(&t->data[k], &u, 4);
            }
        }
    }
    *out = ck;
    return TSR_OK;
}

tsr_status tsr_checkpoint_load(tsr_context *ctx, const char *path, tsr_checkpoint **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_checkpoint_load: out is NULL");
    *out = NULL;
    if (!path) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_checkpoint_load: path is NULL");
    void *data;
    size_t size;
    TSR_TRY(tsr_read_file(ctx, path, &data, &size));
    tsr_status st = tsr_checkpoint_load_mem(ctx, path, data, size, 0, out);
    tsr_free(ctx, data);
    return st;
}

tsr_status tsr_checkpoint_check_fit(tsr_context *ctx, const char *path, const tsr_checkpoint *ck,
                                    const char *spec, const char *optimizer, const char *who,
                                    const char *const *names, size_t nt, size_t count) {
    if (strcmp(ck->model_spec, spec))
        return tsr_error(ctx, TSR_ERR_MISMATCH, "%s: checkpoint is for model '%s', not '%s'", path,
                         ck->model_spec, spec);
    if (strcmp(ck->optimizer, optimizer))
        return tsr_error(ctx, TSR_ERR_MISMATCH, "%s: checkpoint optimizer is '%s', %s uses '%s'", path,
                         ck->optimizer, who, optimizer);
    for (size_t i = 0; i < nt; i++) {
        const tsr_checkpoint_tensor *tt = tsr_checkpoint_find(ck, names[i]);
        if (!tt)
            return tsr_error(ctx, TSR_ERR_MISMATCH, "%s: checkpoint has no tensor '%s'", path, names[i]);
        if (tt->count != count)
            return tsr_error(ctx, TSR_ERR_MISMATCH, "%s: tensor '%s' has %zu floats, the model needs %zu",
                             path, names[i], tt->count, count);
    }
    return TSR_OK;
}
