/* Token files (llm.c's layout), their atomic writer, and the window samplers. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "lib/core/atomic_file.h"
#include "lib/core/internal.h"
#include "lib/model/stage.h"

struct tsr_tokens {
    tsr_context *ctx;
    char *name;
    const unsigned char *data; /* the first token */
    size_t count;
    int width;                 /* 2 or 4 */
    void *map;                 /* mmap of the whole file, or NULL */
    size_t map_size;
    void *copy;                /* tsr_tokens_load_mem's copy, or NULL */
};

static uint32_t get_le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* ------------------------------------------------------------------ reading */

/* Checks the header and the length of `size` bytes at `p`; fills count and width. */
static tsr_status check_layout(tsr_context *ctx, const char *name, const unsigned char *p,
                               size_t size, size_t *count, int *width) {
    if (size < TSR_TOKENS_HEADER_BYTES)
        return tsr_error(ctx, TSR_ERR_TRUNCATED,
                         "%s: truncated: %zu bytes, shorter than the %d-byte header", name, size,
                         TSR_TOKENS_HEADER_BYTES);
    uint32_t magic = get_le32(p), version = get_le32(p + 4), n = get_le32(p + 8);
    if (magic == TSR_TOKENS_MAGIC_U16) {
        if (version != TSR_TOKENS_VERSION_U16)
            return tsr_error(ctx, TSR_ERR_CORRUPT,
                             "%s: version %d of magic %d is not supported (expected %d)", name,
                             (int32_t)version, TSR_TOKENS_MAGIC_U16, TSR_TOKENS_VERSION_U16);
        *width = 2;
    } else if (magic == TSR_TOKENS_MAGIC_U32) {
        if (version != TSR_TOKENS_VERSION_U32)
            return tsr_error(ctx, TSR_ERR_CORRUPT,
                             "%s: version %d of magic %d is not supported (expected %d)", name,
                             (int32_t)version, TSR_TOKENS_MAGIC_U32, TSR_TOKENS_VERSION_U32);
        *width = 4;
    } else {
        return tsr_error(ctx, TSR_ERR_CORRUPT,
                         "%s: bad magic %d (a token file starts with %d or %d; raw tokens "
                         "without llm.c's 1024-byte header, as nanoGPT's prepare.py writes, "
                         "are not read)",
                         name, (int32_t)magic, TSR_TOKENS_MAGIC_U16, TSR_TOKENS_MAGIC_U32);
    }
    if (n > TSR_TOKENS_MAX_COUNT)
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: negative token count %d in the header", name,
                         (int32_t)n);
    /* n < 2^31 and width <= 4: the product fits in 64 bits; compare without overflow */
    uint64_t expected = (uint64_t)TSR_TOKENS_HEADER_BYTES + (uint64_t)n * (uint64_t)*width;
    if ((uint64_t)size < expected)
        return tsr_error(ctx, TSR_ERR_TRUNCATED,
                         "%s: truncated: the header says %u tokens (%llu bytes), the file has "
                         "%zu bytes",
                         name, n, (unsigned long long)expected, size);
    if ((uint64_t)size > expected)
        return tsr_error(ctx, TSR_ERR_CORRUPT,
                         "%s: %llu trailing bytes after the %u tokens the header says", name,
                         (unsigned long long)((uint64_t)size - expected), n);
    *count = n;
    return TSR_OK;
}

static tsr_status new_tokens(tsr_context *ctx, const char *name, tsr_tokens **out) {
    tsr_tokens *t = tsr_calloc(ctx, 1, sizeof *t);
    char *copy = t ? tsr_strdup(ctx, name) : NULL;
    if (!copy) {
        tsr_free(ctx, t);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory for the token file handle", name);
    }
    t->ctx = ctx;
    t->name = copy;
    *out = t;
    return TSR_OK;
}

tsr_status tsr_tokens_load_mem(tsr_context *ctx, const char *name, const void *data, size_t size,
                               tsr_tokens **out) {
    if (!out || !name || (!data && size))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_tokens_load_mem: %s is NULL",
                         !out ? "out" : !name ? "name" : "data");
    *out = NULL;
    size_t count = 0;
    int width = 0;
    TSR_TRY(check_layout(ctx, name, data, size, &count, &width));
    tsr_tokens *t;
    TSR_TRY(new_tokens(ctx, name, &t));
    t->copy = tsr_malloc(ctx, size);
    if (!t->copy) {
        tsr_tokens_free(t);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory for %zu bytes of tokens", name,
                         size);
    }
    memcpy(t->copy, data, size);
    t->data = (const unsigned char *)t->copy + TSR_TOKENS_HEADER_BYTES;
    t->count = count;
    t->width = width;
    *out = t;
    return TSR_OK;
}

tsr_status tsr_tokens_load(tsr_context *ctx, const char *path, tsr_tokens **out) {
    if (!out || !path || !*path)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_tokens_load: %s",
                         !out ? "out is NULL" : "no path");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return tsr_error(ctx, e == ENOENT ? TSR_ERR_NOT_FOUND : TSR_ERR_IO, "%s: cannot open: %s",
                         path, strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return tsr_error(ctx, TSR_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return tsr_error(ctx, TSR_ERR_IO, "%s: not a regular file", path);
    }
    if ((unsigned long long)sb.st_size > SIZE_MAX) {
        close(fd);
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED, "%s: %lld bytes do not fit in memory here",
                         path, (long long)sb.st_size);
    }
    size_t size = (size_t)sb.st_size;
    void *map = NULL;
    if (size >= TSR_TOKENS_HEADER_BYTES) { /* shorter files are refused by check_layout */
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int e = errno;
            close(fd);
            return tsr_error(ctx, TSR_ERR_IO, "%s: cannot map %zu bytes: %s", path, size,
                             strerror(e));
        }
    }
    close(fd); /* the mapping stays valid */
    size_t count = 0;
    int width = 0;
    tsr_status st = check_layout(ctx, path, map, size, &count, &width);
    tsr_tokens *t = NULL;
    if (st == TSR_OK) st = new_tokens(ctx, path, &t);
    if (st != TSR_OK) {
        if (map) munmap(map, size);
        return st;
    }
    t->map = map;
    t->map_size = size;
    t->data = (const unsigned char *)map + TSR_TOKENS_HEADER_BYTES;
    t->count = count;
    t->width = width;
    *out = t;
    return TSR_OK;
}

void tsr_tokens_free(tsr_tokens *t) {
    if (!t) return;
    if (t->map) munmap(t->map, t->map_size);
    tsr_free(t->ctx, t->copy);
    tsr_free(t->ctx, t->name);
    tsr_free(t->ctx, t);
}

size_t tsr_tokens_count(const tsr_tokens *t) { return t ? t->count : 0; }
int tsr_tokens_width(const tsr_tokens *t) { return t ? t->width : 0; }
const char *tsr_tokens_name(const tsr_tokens *t) { return t ? t->name : ""; }

uint32_t tsr_tokens_at(const tsr_tokens *t, size_t i) {
    const unsigned char *p = t->data + i * (size_t)t->width;
    return t->width == 2 ? (uint32_t)p[0] | (uint32_t)p[1] << 8 : get_le32(p);
}

tsr_status tsr_tokens_check_vocab(tsr_context *ctx, const tsr_tokens *t, uint32_t vocab) {
    if (!t || !vocab)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_tokens_check_vocab: %s",
                         !t ? "tokens is NULL" : "vocabulary of 0 ids");
    if (t->width == 2 && vocab > 0xFFFF) return TSR_OK; /* every uint16 fits */
    for (size_t i = 0; i < t->count; i++) {
        uint32_t id = tsr_tokens_at(t, i);
        if (id >= vocab)
            return tsr_error(ctx, TSR_ERR_MISMATCH,
                             "%s: token %u at position %zu is outside the vocabulary of %u "
                             "(ids 0..%u)",
                             t->name, id, i, vocab, vocab - 1);
    }
    return TSR_OK;
}

/* ------------------------------------------------------------------ writing */

/* Writes the whole file: header, then the tokens little-endian (a failure stays in file->err). */
static void write_tokens(tsr_atomic_file *file, const uint32_t *tokens, size_t count, int width) {
    unsigned char buf[16384];
    memset(buf, 0, TSR_TOKENS_HEADER_BYTES);
    put_le32(buf, width == 2 ? TSR_TOKENS_MAGIC_U16 : TSR_TOKENS_MAGIC_U32);
    put_le32(buf + 4, width == 2 ? TSR_TOKENS_VERSION_U16 : TSR_TOKENS_VERSION_U32);
    put_le32(buf + 8, (uint32_t)count);
    size_t fill = TSR_TOKENS_HEADER_BYTES, i = 0;
    for (;;) {
        for (; i < count && fill + (size_t)width <= sizeof buf; i++)
            for (int b = 0; b < width; b++) buf[fill++] = (unsigned char)(tokens[i] >> (8 * b));
        if (tsr_atomic_write(file, buf, fill) || i == count) return;
        fill = 0;
    }
}

tsr_status tsr_tokens_save(tsr_context *ctx, const char *path, const uint32_t *tokens,
                           size_t count) {
    if (!path || !*path || (!tokens && count))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_tokens_save: %s",
                         !path || !*path ? "no path" : "tokens is NULL");
    if (count > TSR_TOKENS_MAX_COUNT)
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "%s: %zu tokens, more than a token file holds (%u: an int32 count)",
                         path, count, TSR_TOKENS_MAX_COUNT);
    int width = 2;
    for (size_t i = 0; i < count && width == 2; i++)
        if (tokens[i] > 0xFFFF) width = 4;

    tsr_atomic_file file;
    TSR_TRY(tsr_atomic_open(ctx, path, &file));
    write_tokens(&file, tokens, count, width);
    return tsr_atomic_commit(&file);
}

/* ------------------------------------------------------------------ data folders */

static int file_exists(const char *dir, const char *name) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) return 0;
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

tsr_status tsr_tokens_probe_dir(tsr_context *ctx, const char *dir, tsr_data_format *out) {
    if (!dir || !*dir || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_tokens_probe_dir: %s",
                         !out ? "out is NULL" : "no folder");
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "%s: not a folder", dir);
    int train = file_exists(dir, "train.bin"), val = file_exists(dir, "val.bin");
    int idx = file_exists(dir, "train-images-idx3-ubyte") ||
              file_exists(dir, "train-images-idx3-ubyte.gz");
    if ((train || val) && idx)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "%s: holds both token files (train.bin/val.bin) and IDX files "
                         "(train-images-idx3-ubyte): keep one kind per folder",
                         dir);
    if (train != val)
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "%s: has %s but no %s", dir,
                         train ? "train.bin" : "val.bin", train ? "val.bin" : "train.bin");
    if (train) {
        *out = TSR_DATA_FORMAT_TOKENS;
        return TSR_OK;
    }
    if (idx) {
        *out = TSR_DATA_FORMAT_IDX;
        return TSR_OK;
    }
    return tsr_error(ctx, TSR_ERR_NOT_FOUND,
                     "%s: neither token files (train.bin and val.bin) nor IDX files "
                     "(train-images-idx3-ubyte[.gz])",
                     dir);
}

/* ------------------------------------------------------------------ samplers */

struct tsr_tokens_sampler {
    tsr_context *ctx;
    const tsr_tokens *tokens;
    tsr_tokens_sampler_options o;
    uint64_t position;
    uint64_t batches; /* sequential: per pass */
    size_t windows;   /* sequential: windows of the pass; random: possible starts */
};

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t tsr_tokens_step_seed(uint64_t seed, uint64_t k) {
    return mix64(seed ^ mix64(k + 0x9E3779B97F4A7C15ull));
}

tsr_status tsr_tokens_sampler_create(tsr_context *ctx, const tsr_tokens *t,
                                     const tsr_tokens_sampler_options *o,
                                     tsr_tokens_sampler **out) {
    if (!t || !o || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_tokens_sampler_create: %s is NULL",
                         !t ? "tokens" : !o ? "options" : "out");
    *out = NULL;
    if (!o->context || !o->batch)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: sampler %s is 0 (must be >= 1)", t->name,
                         !o->context ? "context" : "batch");
    if (o->nranks < 1 || o->rank < 0 || o->rank >= o->nranks)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "%s: sampler rank %d of %d ranks (rank must be in 0..nranks-1)",
                         t->name, o->rank, o->nranks);
    if (o->order != TSR_TOKENS_RANDOM && o->order != TSR_TOKENS_SEQUENTIAL)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: unknown sampler order %d", t->name,
                         (int)o->order);
    size_t rows, global;
    if (tsr_mul_size(o->batch, o->context, &rows) != 0 ||
        tsr_mul_size(o->batch, (size_t)o->nranks, &global) != 0)
        return tsr_error(ctx, TSR_ERR_SHAPE, "%s: batch %zu x context %zu x %d ranks is too large",
                         t->name, o->batch, o->context, o->nranks);
    if (t->count < o->context + 1 || o->context + 1 == 0)
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "%s: %zu tokens, fewer than one window of context %zu + 1", t->name,
                         t->count, o->context);
    tsr_tokens_sampler *s = tsr_calloc(ctx, 1, sizeof *s);
    if (!s) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory for a sampler", t->name);
    s->ctx = ctx;
    s->tokens = t;
    s->o = *o;
    if (o->order == TSR_TOKENS_RANDOM) {
        s->windows = t->count - o->context;
    } else {
        s->windows = (t->count - 1 + o->context - 1) / o->context;
        s->batches = (s->windows + global - 1) / global;
    }
    *out = s;
    return TSR_OK;
}

void tsr_tokens_sampler_free(tsr_tokens_sampler *s) {
    if (s) tsr_free(s->ctx, s);
}

uint64_t tsr_tokens_sampler_position(const tsr_tokens_sampler *s) { return s ? s->position : 0; }
uint64_t tsr_tokens_sampler_batches(const tsr_tokens_sampler *s) { return s ? s->batches : 0; }

tsr_status tsr_tokens_sampler_seek(tsr_tokens_sampler *s, uint64_t position) {
    if (!s) return tsr_error(NULL, TSR_ERR_INVALID_ARG, "tsr_tokens_sampler_seek: NULL");
    if (s->o.order == TSR_TOKENS_SEQUENTIAL && position > s->batches)
        return tsr_error(s->ctx, TSR_ERR_INVALID_ARG,
                         "%s: position %llu is past the %llu batches of a pass",
                         s->tokens->name, (unsigned long long)position,
                         (unsigned long long)s->batches);
    s->position = position;
    return TSR_OK;
}

/* Uniform in [0, n), n >= 1: rejects the low (2^64 mod n) values, so no modulo bias. */
static uint64_t uniform_below(tsr_rng *r, uint64_t n) {
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = tsr_rng_next(r);
        if (x >= threshold) return x % n;
    }
}

/* Row of `len` <= context targets from window start `start`; the rest padding. */
static void copy_row(const tsr_tokens *t, size_t start, size_t len, size_t context,
                     int32_t *inputs, int32_t *targets) {
    for (size_t i = 0; i < len; i++) {
        inputs[i] = (int32_t)tsr_tokens_at(t, start + i);
        targets[i] = (int32_t)tsr_tokens_at(t, start + i + 1);
    }
    for (size_t i = len; i < context; i++) {
        inputs[i] = 0;
        targets[i] = -1;
    }
}

tsr_status tsr_tokens_sampler_next(tsr_tokens_sampler *s, int32_t *inputs, int32_t *targets,
                                   size_t *targets_used) {
    if (!s || !inputs || !targets)
        return tsr_error(s ? s->ctx : NULL, TSR_ERR_INVALID_ARG,
                         "tsr_tokens_sampler_next: %s is NULL",
                         !s ? "sampler" : !inputs ? "inputs" : "targets");
    const size_t T = s->o.context, B = s->o.batch, rank = (size_t)s->o.rank;
    size_t used = 0;
    if (s->o.order == TSR_TOKENS_RANDOM) {
        tsr_rng r;
        tsr_rng_seed(&r, tsr_tokens_step_seed(s->o.seed, s->position));
        for (size_t k = 0; k < rank * B; k++) uniform_below(&r, s->windows); /* other ranks' */
        for (size_t b = 0; b < B; b++)
            copy_row(s->tokens, (size_t)uniform_below(&r, s->windows), T, T, inputs + b * T,
                     targets + b * T);
        used = B * T;
    } else {
        if (s->position >= s->batches)
            return tsr_error(s->ctx, TSR_ERR_STATE,
                             "%s: the validation pass is over (%llu batches); seek to 0 for "
                             "another",
                             s->tokens->name, (unsigned long long)s->batches);
        const size_t last = s->tokens->count - 1; /* targets run to token count-1 */
        for (size_t b = 0; b < B; b++) {
            /* < windows <= count: no overflow once the batch index is below the count */
            uint64_t w = (s->position * (uint64_t)s->o.nranks + rank) * B + b;
            size_t start = 0, len = 0;
            if (w < s->windows) {
                start = (size_t)w * T;
                len = last - start < T ? last - start : T;
            }
            copy_row(s->tokens, start, len, T, inputs + b * T, targets + b * T);
            used += len;
        }
    }
    s->position++;
    if (targets_used) *targets_used = used;
    return TSR_OK;
}

/* ---- a validation set of sequential windows ---- */

tsr_status tsr_dataset_from_tokens(tsr_context *ctx, const tsr_tokens *t, size_t context,
                                   size_t max_windows, tsr_dataset **out) {
    if (!t || !out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_dataset_from_tokens: NULL argument");
    *out = NULL;
    tsr_tokens_sampler_options o = {context, 1, 0, 0, 1, TSR_TOKENS_SEQUENTIAL};
    tsr_tokens_sampler *s;
    TSR_TRY(tsr_tokens_sampler_create(ctx, t, &o, &s));
    size_t windows = (size_t)tsr_tokens_sampler_batches(s);
    if (max_windows && windows > max_windows) windows = max_windows;
    tsr_dataset *d = tsr_calloc(ctx, 1, sizeof *d);
    size_t n = 0;
    tsr_status st = TSR_OK;
    if (!d || tsr_mul_size(windows, context, &n) || !(d->tokens = tsr_malloc(ctx, n * sizeof *d->tokens)) ||
        !(d->labels = tsr_malloc(ctx, n * sizeof *d->labels)))
        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: %zu windows of %zu tokens", tsr_tokens_name(t), windows,
                       context);
    for (size_t w = 0; st == TSR_OK && w < windows; w++)
        st = tsr_tokens_sampler_next(s, d->tokens + w * context, d->labels + w * context, NULL);
    tsr_tokens_sampler_free(s);
    if (st != TSR_OK) {
        tsr_dataset_free(ctx, d);
        return st;
    }
    int32_t top = 0;
    for (size_t i = 0; i < n; i++) top = d->labels[i] > top ? d->labels[i] : top;
    d->count = windows;
    d->channels = d->features = d->positions = context;
    d->height = d->width = 1;
    d->classes = (size_t)top + 1;
    *out = d;
    return TSR_OK;
}
