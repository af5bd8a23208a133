/* IDX reader: round trips of every element type (plain and gzip) against a plain-C encoder,
 * every malformed-input path, truncation at every length, allocator failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>
#include "lib/io/idx.h"
#include "lib/core/internal.h"
#include "support/test_util.h"

typedef tsr_test_dir_fixture fixture;

/* ---- reference encoder: header + big-endian elements written with shifts ---- */

typedef struct {
    unsigned char *p;
    size_t n;
} bytes;

static void put_be(unsigned char *p, uint64_t v, size_t size) {
    for (size_t i = 0; i < size; i++) p[i] = (unsigned char)(v >> (8 * (size - 1 - i)));
}

/* values[i] as raw host-order element bits (uint64 holding the low `size` bytes' value). */
static bytes encode(int type, int ndim, const uint32_t *dims, const uint64_t *bits, size_t count,
                    size_t esize) {
    bytes b;
    b.n = 4 + 4 * (size_t)ndim + count * esize;
    b.p = malloc(b.n);
    b.p[0] = 0;
    b.p[1] = 0;
    b.p[2] = (unsigned char)type;
    b.p[3] = (unsigned char)ndim;
    for (int i = 0; i < ndim; i++) put_be(b.p + 4 + 4 * i, dims[i], 4);
    for (size_t i = 0; i < count; i++) put_be(b.p + 4 + 4 * ndim + i * esize, bits[i], esize);
    return b;
}

static bytes gzip_bytes(const unsigned char *p, size_t n) {
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    bytes b;
    b.n = deflateBound(&z, n) + 64;
    b.p = malloc(b.n);
    z.next_in = (Bytef *)p;
    z.avail_in = (uInt)n;
    z.next_out = b.p;
    z.avail_out = (uInt)b.n;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    b.n = z.total_out;
    deflateEnd(&z);
    return b;
}

static void write_file(const char *path, const unsigned char *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static uint64_t xorshift(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Host-order value of element i, from its bits. */
static void host_value(int type, uint64_t bits, void *dst) {
    switch (type) {
    case 0x08: { uint8_t v = (uint8_t)bits; memcpy(dst, &v, 1); break; }
    case 0x09: { int8_t v = (int8_t)(uint8_t)bits; memcpy(dst, &v, 1); break; }
    case 0x0B: { int16_t v = (int16_t)(uint16_t)bits; memcpy(dst, &v, 2); break; }
    case 0x0C: { int32_t v = (int32_t)(uint32_t)bits; memcpy(dst, &v, 4); break; }
    case 0x0D: { uint32_t u = (uint32_t)bits; memcpy(dst, &u, 4); break; }
    case 0x0E: memcpy(dst, &bits, 8); break;
    }
}

static void check_round_trip(fixture *f, int type, size_t esize, int ndim, const uint32_t *dims,
                             int gz) {
    size_t count = 1;
    for (int i = 0; i < ndim; i++) count *= dims[i];
    uint64_t *bits = calloc(count ? count : 1, sizeof *bits);
    uint64_t s = 0x1234567u + (uint64_t)type * 977 + (uint64_t)ndim;
    for (size_t i = 0; i < count; i++) {
        uint64_t r = xorshift(&s);
        if (type == 0x0D) {
            float v = (float)((double)(r >> 11) / 9007199254740992.0 * 200.0 - 100.0);
            if (i == 0) v = -0.0f;
            if (i == 1) v = INFINITY;
            uint32_t u;
            memcpy(&u, &v, 4);
            r = u;
        } else if (type == 0x0E) {
            double v = (double)(r >> 11) / 9007199254740992.0 * 2e6 - 1e6;
            if (i == 0) v = -1e-310; /* subnormal */
            memcpy(&r, &v, 8);
        } else if (i == 0) {
            r = (uint64_t)1 << (8 * esize - 1); /* most negative (signed) / 128.. (ubyte) */
        } else if (i == 1) {
            r = ~(uint64_t)0; /* -1 / 255 */
        }
        if (esize < 8) r &= ((uint64_t)1 << (8 * esize)) - 1;
        bits[i] = r;
    }
    bytes raw = encode(type, ndim, dims, bits, count, esize);
    bytes file = gz ? gzip_bytes(raw.p, raw.n) : raw;
    char path[128];
    snprintf(path, sizeof path, "%s/rt-%02x-%d-%d%s", f->dir, type, ndim, gz, gz ? ".gz" : "");
    write_file(path, file.p, file.n);

    tsr_idx *idx = NULL;
    assert_int_equal(tsr_idx_load(f->ctx, path, &idx), TSR_OK);
    assert_int_equal(idx->type, type);
    assert_int_equal(idx->ndim, ndim);
    assert_int_equal(idx->count, count);
    assert_int_equal(idx->elem_size, esize);
    for (int i = 0; i < ndim; i++) assert_int_equal(idx->dims[i], dims[i]);
    unsigned char expect[8];
    for (size_t i = 0; i < count; i++) {
        host_value(type, bits[i], expect);
        assert_memory_equal((unsigned char *)idx->data + i * esize, expect, esize);
    }
    if (type == 0x0B && count > 1) {
        assert_int_equal(((int16_t *)idx->data)[0], -32768);
        assert_int_equal(((int16_t *)idx->data)[1], -1);
    }
    if (type == 0x0C && count > 1) assert_int_equal(((int32_t *)idx->data)[0], INT32_MIN);
    if (type == 0x08 && count > 1) assert_int_equal(((uint8_t *)idx->data)[1], 255);
    tsr_idx_free(f->ctx, idx);
    if (gz) free(file.p);
    free(raw.p);
    free(bits);
}

static void test_round_trip_all_types(void **state) {
    fixture *f = *state;
    static const int types[] = {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E};
    static const size_t sizes[] = {1, 1, 2, 4, 4, 8};
    static const uint32_t d1[] = {17}, d3[] = {3, 4, 5}, d4[] = {2, 3, 2, 7},
                          d8[] = {2, 1, 2, 1, 3, 1, 2, 2}, d0[] = {4, 0, 3};
    for (size_t t = 0; t < 6; t++) {
        for (int gz = 0; gz <= 1; gz++) {
            check_round_trip(f, types[t], sizes[t], 1, d1, gz);
            check_round_trip(f, types[t], sizes[t], 3, d3, gz);
            check_round_trip(f, types[t], sizes[t], 4, d4, gz);
            check_round_trip(f, types[t], sizes[t], 8, d8, gz);
            check_round_trip(f, types[t], sizes[t], 3, d0, gz); /* empty is valid */
        }
    }
    assert_int_equal(tsr_idx_type_size(0x0A), 0);
    assert_string_equal(tsr_idx_type_name(0x0D), "float");
}

/* A file compressed as two concatenated gzip members loads as one, as gzip -d does. */
static void test_gzip_multi_member(void **state) {
    fixture *f = *state;
    uint32_t dims[] = {300};
    uint64_t bits[300];
    for (int i = 0; i < 300; i++) bits[i] = (uint64_t)(i * 7 % 256);
    bytes raw = encode(0x08, 1, dims, bits, 300, 1);
    bytes a = gzip_bytes(raw.p, 100), b = gzip_bytes(raw.p + 100, raw.n - 100);
    unsigned char *both = malloc(a.n + b.n);
    memcpy(both, a.p, a.n);
    memcpy(both + a.n, b.p, b.n);
    tsr_idx *idx;
    assert_int_equal(tsr_idx_load_mem(f->ctx, "two.gz", both, a.n + b.n, &idx), TSR_OK);
    assert_int_equal(idx->count, 300);
    for (int i = 0; i < 300; i++) assert_int_equal(((uint8_t *)idx->data)[i], bits[i]);
    tsr_idx_free(f->ctx, idx);
    /* a stray byte after the last member is garbage */
    both[a.n + b.n - 1] = 0; /* keep size, add one more byte below */
    unsigned char *extra = malloc(a.n + b.n + 1);
    memcpy(extra, a.p, a.n);
    memcpy(extra + a.n, b.p, b.n);
    extra[a.n + b.n] = 0x42;
    assert_int_equal(tsr_idx_load_mem(f->ctx, "extra.gz", extra, a.n + b.n + 1, &idx),
                     TSR_ERR_CORRUPT);
    assert_null(idx);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "extra.gz: "));
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "trailing garbage"));
    free(extra);
    free(both);
    free(a.p);
    free(b.p);
    free(raw.p);
}

/* Loads `p` from a file named `name` in the fixture folder; expects `status`, a detail that
 * names the file and contains `what`. */
static void expect_error(fixture *f, const char *name, const unsigned char *p, size_t n,
                         tsr_status status, const char *what) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    write_file(path, p, n);
    tsr_idx *idx = (tsr_idx *)0x1;
    tsr_context_clear_error(f->ctx);
    tsr_status st = tsr_idx_load(f->ctx, path, &idx);
    const char *err = tsr_context_last_error(f->ctx);
    if (st != status || !strstr(err, path) || !strstr(err, what))
        fail_msg("%s: got %s \"%s\", expected %s with \"%s\"", name, tsr_status_name(st), err,
                 tsr_status_name(status), what);
    assert_null(idx);
    unlink(path);
}

static void test_malformed(void **state) {
    fixture *f = *state;
    uint32_t dims[] = {10, 2, 2};
    uint64_t bits[40];
    for (int i = 0; i < 40; i++) bits[i] = (uint64_t)i;
    bytes raw = encode(0x08, 3, dims, bits, 40, 1);
    unsigned char buf[256];

    /* truncated data, plain and gzip */
    expect_error(f, "trunc-data", raw.p, raw.n - 1, TSR_ERR_TRUNCATED,
                 "truncated: 40 data bytes expected, 39 found");
    bytes g = gzip_bytes(raw.p, raw.n - 5);
    expect_error(f, "trunc-data.gz", g.p, g.n, TSR_ERR_TRUNCATED,
                 "truncated: 40 data bytes expected, 35 found");
    free(g.p);
    /* the compressed stream itself cut short */
    g = gzip_bytes(raw.p, raw.n);
    expect_error(f, "cut.gz", g.p, g.n - 6, TSR_ERR_TRUNCATED, "gzip stream ends early");
    /* corrupt gzip: the stored CRC-32 no longer matches, and a damaged deflate block */
    memcpy(buf, g.p, g.n);
    buf[g.n - 8] ^= 0xff;
    expect_error(f, "crc.gz", buf, g.n, TSR_ERR_CORRUPT, "corrupt gzip data");
    memcpy(buf, g.p, g.n);
    buf[10] = 0xff; /* first deflate block header: invalid block type 3 */
    expect_error(f, "block.gz", buf, g.n, TSR_ERR_CORRUPT, "corrupt gzip data");
    memcpy(buf, g.p, g.n);
    buf[2] = 7; /* gzip method byte: not deflate */
    expect_error(f, "method.gz", buf, g.n, TSR_ERR_CORRUPT, "corrupt gzip data");
    free(g.p);
    /* trailing garbage, plain and inside the gzip data */
    memcpy(buf, raw.p, raw.n);
    buf[raw.n] = 0;
    expect_error(f, "trailing", buf, raw.n + 1, TSR_ERR_CORRUPT,
                 "1 bytes of trailing garbage after the 40 data bytes");
    g = gzip_bytes(buf, raw.n + 1);
    expect_error(f, "trailing.gz", g.p, g.n, TSR_ERR_CORRUPT,
                 "1 bytes of trailing garbage after the 40 data bytes");
    free(g.p);
    /* bad magic: first bytes, type code, dimension count */
    memcpy(buf, raw.p, raw.n);
    buf[0] = 0x1f;
    expect_error(f, "magic", buf, raw.n, TSR_ERR_CORRUPT, "bad magic 0x1f000803");
    memcpy(buf, raw.p, raw.n);
    buf[1] = 1;
    expect_error(f, "magic1", buf, raw.n, TSR_ERR_CORRUPT, "first two bytes must be 0");
    memcpy(buf, raw.p, raw.n);
    buf[2] = 0x0A;
    expect_error(f, "type", buf, raw.n, TSR_ERR_CORRUPT, "unknown element type 0x0a");
    memcpy(buf, raw.p, raw.n);
    buf[3] = 0;
    expect_error(f, "ndim0", buf, raw.n, TSR_ERR_CORRUPT, "0 dimensions, 1..8 supported");
    memcpy(buf, raw.p, raw.n);
    buf[3] = 9;
    expect_error(f, "ndim9", buf, raw.n, TSR_ERR_CORRUPT, "9 dimensions, 1..8 supported");
    /* dimension product overflow (8 x 2^32-1 overflows 64 bits) */
    memset(buf, 0xff, 4 + 32);
    buf[0] = buf[1] = 0;
    buf[2] = 0x0E;
    buf[3] = 8;
    expect_error(f, "overflow", buf, 36, TSR_ERR_CORRUPT, "overflow the address space");
    g = gzip_bytes(buf, 36);
    expect_error(f, "overflow.gz", g.p, g.n, TSR_ERR_CORRUPT, "overflow");
    free(g.p);
    /* huge dims: on 64-bit representable, so truncated (and never allocated in full); on a
     * 32-bit size_t they overflow the address space, which is the right answer there */
    memcpy(buf, raw.p, 16);
    put_be(buf + 4, 0x7fffffffu, 4);
    g = gzip_bytes(buf, 16 + 40);
    if (sizeof(size_t) >= 8) {
        expect_error(f, "huge", buf, 16 + 40, TSR_ERR_TRUNCATED, "data bytes expected");
        expect_error(f, "huge.gz", g.p, g.n, TSR_ERR_TRUNCATED, "data bytes expected, 40 found");
    } else {
        expect_error(f, "huge", buf, 16 + 40, TSR_ERR_CORRUPT, "overflow the address space");
        expect_error(f, "huge.gz", g.p, g.n, TSR_ERR_CORRUPT, "overflow");
    }
    free(g.p);
    /* header cut: magic, dims */
    expect_error(f, "empty", raw.p, 0, TSR_ERR_TRUNCATED, "0 bytes, the magic needs 4");
    expect_error(f, "hdr", raw.p, 9, TSR_ERR_TRUNCATED, "header needs 16 bytes");
    free(raw.p);
}

static void test_file_and_arg_errors(void **state) {
    fixture *f = *state;
    tsr_idx *idx = (tsr_idx *)0x1;
    char path[128];
    snprintf(path, sizeof path, "%s/no-such-file", f->dir);
    assert_int_equal(tsr_idx_load(f->ctx, path, &idx), TSR_ERR_NOT_FOUND);
    assert_null(idx);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), path));
    assert_int_equal(tsr_idx_load(f->ctx, f->dir, &idx), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "not a regular file"));
    assert_int_equal(tsr_idx_load(f->ctx, NULL, &idx), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_idx_load(f->ctx, path, NULL), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_idx_load_mem(f->ctx, "x", NULL, 5, &idx), TSR_ERR_INVALID_ARG);
    tsr_idx_free(f->ctx, NULL);
}

/* Every prefix of a valid file (plain and gzip) is reported as truncated, never loaded. */
static void test_truncation_every_length(void **state) {
    fixture *f = *state;
    uint32_t dims[] = {3, 5};
    uint64_t bits[15];
    for (int i = 0; i < 15; i++) bits[i] = (uint64_t)(1000 * i + 7);
    bytes raw = encode(0x0C, 2, dims, bits, 15, 4);
    bytes g = gzip_bytes(raw.p, raw.n);
    for (int gz = 0; gz <= 1; gz++) {
        bytes b = gz ? g : raw;
        for (size_t len = 0; len < b.n; len++) {
            unsigned char *copy = malloc(len ? len : 1); /* exact size: ASan sees overreads */
            memcpy(copy, b.p, len);
            tsr_idx *idx = (tsr_idx *)0x1;
            tsr_status st = tsr_idx_load_mem(f->ctx, "prefix", copy, len, &idx);
            if (st != TSR_ERR_TRUNCATED)
                fail_msg("gz=%d length %zu of %zu: %s (%s)", gz, len, b.n, tsr_status_name(st),
                         tsr_context_last_error(f->ctx));
            assert_null(idx);
            assert_non_null(strstr(tsr_context_last_error(f->ctx), "prefix: "));
            free(copy);
        }
        tsr_idx *idx;
        assert_int_equal(tsr_idx_load_mem(f->ctx, "whole", b.p, b.n, &idx), TSR_OK);
        assert_int_equal(((int32_t *)idx->data)[14], 14007);
        tsr_idx_free(f->ctx, idx);
    }
    free(g.p);
    free(raw.p);
}

/* Every single-byte change of a small gzip file is either rejected or, when it only touches
 * gzip header fields zlib does not check (mtime, OS), gives the same data. */
static void test_gzip_byte_flips(void **state) {
    fixture *f = *state;
    uint32_t dims[] = {8};
    uint64_t bits[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    bytes raw = encode(0x0B, 1, dims, bits, 8, 2);
    bytes g = gzip_bytes(raw.p, raw.n);
    for (size_t i = 0; i < g.n; i++) {
        unsigned char *copy = malloc(g.n);
        memcpy(copy, g.p, g.n);
        copy[i] ^= 0x55;
        tsr_idx *idx = NULL;
        tsr_status st = tsr_idx_load_mem(f->ctx, "flip.gz", copy, g.n, &idx);
        if (st == TSR_OK) {
            assert_true(i >= 4 && i < 10); /* MTIME, XFL, OS */
            assert_int_equal(((int16_t *)idx->data)[7], 8);
            tsr_idx_free(f->ctx, idx);
        } else {
            assert_true(st == TSR_ERR_CORRUPT || st == TSR_ERR_TRUNCATED);
            assert_non_null(strstr(tsr_context_last_error(f->ctx), "flip.gz: "));
        }
        free(copy);
    }
    free(g.p);
    free(raw.p);
}

static void check_alloc_failures(const unsigned char *p, size_t n) {
    tsr_test_alloc counter;
    tsr_test_alloc_init(&counter, 0);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    o.allocator = &counter.allocator;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    long base = counter.calls;
    tsr_idx *idx;
    assert_int_equal(tsr_idx_load_mem(ctx, "mem", p, n, &idx), TSR_OK);
    long needed = counter.calls - base;
    assert_true(needed >= 2);
    tsr_idx_free(ctx, idx);
    for (long k = 1; k <= needed; k++) {
        counter.fail_at = base + k;
        counter.calls = base;
        idx = (tsr_idx *)0x1;
        assert_int_equal(tsr_idx_load_mem(ctx, "mem", p, n, &idx), TSR_ERR_NO_MEMORY);
        assert_null(idx);
    }
    counter.fail_at = 0;
    tsr_context_free(ctx);
    assert_int_equal(counter.live, 0);
}

static void test_allocator_failures(void **state) {
    (void)state;
    size_t count = 1u << 20;
    uint32_t dims[] = {(uint32_t)count};
    uint64_t *bits = calloc(count, sizeof *bits);
    for (size_t i = 0; i < count; i++) bits[i] = i % 251;
    bytes raw = encode(0x08, 1, dims, bits, count, 1);
    bytes g = gzip_bytes(raw.p, raw.n);
    check_alloc_failures(raw.p, raw.n);
    check_alloc_failures(g.p, g.n);
    free(g.p);
    free(raw.p);
    free(bits);
}

/* The fuzzing seed corpus holds valid files only (run from the repository root). */
static void test_fuzz_seeds(void **state) {
    fixture *f = *state;
    const char *dir = "tests/fuzz/corpus/idx";
    DIR *d = opendir(dir);
    if (!d) TSR_TEST_SKIP("missing %s (run from the repository root)", dir);
    struct dirent *e;
    int loaded = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        tsr_idx *idx = NULL;
        tsr_status st = tsr_idx_load(f->ctx, path, &idx);
        if (st != TSR_OK) fail_msg("%s: %s", path, tsr_context_last_error(f->ctx));
        assert_true(idx->count >= 1);
        tsr_idx_free(f->ctx, idx);
        loaded++;
    }
    closedir(d);
    assert_true(loaded >= 8);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_all_types),
        cmocka_unit_test(test_gzip_multi_member),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_file_and_arg_errors),
        cmocka_unit_test(test_truncation_every_length),
        cmocka_unit_test(test_gzip_byte_flips),
        cmocka_unit_test(test_allocator_failures),
        cmocka_unit_test(test_fuzz_seeds),
    };
    return cmocka_run_group_tests(tests, tsr_test_dir_setup, tsr_test_dir_teardown);
}
