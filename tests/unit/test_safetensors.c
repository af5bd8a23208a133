/* safetensors: byte-exact layouts of the reference writer (its own test vectors), round trips
 * of every dtype, float16/bfloat16/float64 conversions against a plain double-precision
 * reference, every structural corruption refused with its status and detail, allocator
 * failures, atomic saves, and interop with a Python reference (tests/support/safetensors_ref.py,
 * which also uses the `safetensors` package where it is installed; TSR_TEST_PYTHON picks the
 * interpreter). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cJSON.h>
#include <dirent.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "lib/core/internal.h"
#include "support/test_util.h"

#define SCRIPT "tests/support/safetensors_ref.py"

typedef struct {
    tsr_context *ctx;
    char dir[64];
    char path[128];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (tsr_test_quiet_context(&f->ctx) != TSR_OK) return -1;
    if (tsr_test_make_dir(f->dir, sizeof f->dir, "safetensors") != 0) return -1;
    snprintf(f->path, sizeof f->path, "%s/t.safetensors", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    if (tsr_test_remove_dir(f->dir) != 0) return -1;
    tsr_context_free(f->ctx);
    free(f);
    return 0;
}

/* ---- helpers ---- */

typedef struct {
    unsigned char *p;
    size_t n;
} bytes;

static bytes read_all(const char *path) {
    bytes b = {NULL, 0};
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    b.n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    b.p = malloc(b.n + 1);
    assert_int_equal(fread(b.p, 1, b.n, fp), b.n);
    fclose(fp);
    return b;
}

/* A file image: u64 length of `header`, the header, then `data_len` data bytes (i & 0xff). */
static bytes image(const char *header, size_t header_len, size_t data_len) {
    bytes b;
    b.n = 8 + header_len + data_len;
    b.p = malloc(b.n + 1);
    for (int i = 0; i < 8; i++) b.p[i] = (unsigned char)((uint64_t)header_len >> (8 * i));
    memcpy(b.p + 8, header, header_len);
    for (size_t i = 0; i < data_len; i++) b.p[8 + header_len + i] = (unsigned char)i;
    return b;
}

static void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- the double-precision reference: decoders by formula, rounding by arithmetic ---- */

static double ref_f16(uint16_t h) {
    int e = h >> 10 & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return h & 0x8000 ? -v : v;
}

static double ref_bf16(uint16_t h) {
    int e = h >> 7 & 255, m = h & 127;
    double v = e == 0 ? ldexp(m, -133) : e == 255 ? (m ? NAN : INFINITY) : ldexp(128 + m, e - 134);
    return h & 0x8000 ? -v : v;
}

/* x rounded to `p` significant bits, exponent at least emin, nearest even (the default
 * rounding mode of nearbyint); beyond `max` after rounding: infinity. */
static double ref_round(double x, int p, int emin, double max) {
    if (isnan(x) || isinf(x) || x == 0) return x;
    int e;
    frexp(fabs(x), &e);
    int lead = e - 1 < emin ? emin : e - 1;
    double q = ldexp(1.0, lead - (p - 1));
    double r = nearbyint(fabs(x) / q) * q;
    if (r > max) r = INFINITY;
    return copysign(r, x);
}

#define F16_MAX 65504.0
#define BF16_MAX (ldexp(255.0, 120)) /* (2 - 2^-7) * 2^127 */

/* ---- known answers: the reference implementation's own test vectors ---- */

static void expect_file(const char *path, const char *header, size_t header_len,
                        const unsigned char *data, size_t data_len) {
    bytes b = read_all(path);
    assert_int_equal(b.n, 8 + header_len + data_len);
    assert_int_equal(get_le(b.p, 8), header_len);
    assert_memory_equal(b.p + 8, header, header_len);
    if (data_len) assert_memory_equal(b.p + 8 + header_len, data, data_len);
    free(b.p);
}

static void test_reference_vectors(void **state) {
    fixture *f = *state;
    float v[6] = {0, 1, 2, 3, 4, 5};
    unsigned char raw[24];
    for (int i = 0; i < 6; i++) put_le(raw + 4 * i, f32_bits(v[i]), 4);

    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    uint64_t s3[] = {1, 2, 3};
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "attn.0", TSR_ST_F32, 3, s3, v), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
    const char *h1 = "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}";
    expect_file(f->path, h1, 64, raw, 24);

    /* one byte shorter name: seven spaces keep the data 8-aligned */
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    uint64_t s4[] = {1, 1, 2, 3};
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "attn0", TSR_ST_F32, 4, s4, raw, 24), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
    const char *h2 =
        "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ";
    expect_file(f->path, h2, 72, raw, 24);

    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    expect_file(f->path, "{}      ", 8, NULL, 0);
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "framework", "pt"), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
    expect_file(f->path, "{\"__metadata__\":{\"framework\":\"pt\"}}     ", 40, NULL, 0);

    /* and they read back */
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    assert_int_equal(st->count, 0);
    assert_int_equal(st->meta_count, 1);
    assert_string_equal(tsr_safetensors_meta(st, "framework"), "pt");
    assert_null(tsr_safetensors_meta(st, "other"));
    tsr_safetensors_close(f->ctx, st);
}

/* ---- every dtype, raw ---- */

static void test_every_dtype_round_trip(void **state) {
    fixture *f = *state;
    unsigned char raw[TSR_ST_DTYPE_COUNT][64];
    uint64_t shapes[TSR_ST_DTYPE_COUNT][2];
    size_t sizes[TSR_ST_DTYPE_COUNT];
    char names[TSR_ST_DTYPE_COUNT][32];
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    /* added in reverse so the writer's own ordering is what the file shows */
    for (int d = TSR_ST_DTYPE_COUNT - 1; d >= 0; d--) {
        unsigned bits = tsr_st_dtype_bits((tsr_st_dtype)d);
        assert_true(bits == 4 || bits == 6 || bits == 8 || bits == 16 || bits == 32 || bits == 64);
        tsr_st_dtype back;
        assert_int_equal(tsr_st_dtype_parse(tsr_st_dtype_name((tsr_st_dtype)d), &back), TSR_OK);
        assert_int_equal(back, d);
        shapes[d][0] = 4;
        shapes[d][1] = 2; /* 8 elements: whole bytes for 4- and 6-bit types too */
        sizes[d] = 8 * bits / 8;
        for (size_t i = 0; i < sizes[d]; i++) raw[d][i] = (unsigned char)(37 * i + 11 * d + 1);
        snprintf(names[d], sizeof names[d], "t.%s", tsr_st_dtype_name((tsr_st_dtype)d));
        assert_int_equal(
            tsr_st_writer_add(f->ctx, w, names[d], (tsr_st_dtype)d, 2, shapes[d], raw[d], sizes[d]),
            TSR_OK);
    }
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);

    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    assert_int_equal(st->count, TSR_ST_DTYPE_COUNT);
    assert_int_equal(st->header_bytes % 8, 0);
    uint64_t at = 0;
    for (size_t i = 0; i < st->count; i++) {
        const tsr_st_tensor *t = &st->tensors[i];
        int d = TSR_ST_DTYPE_COUNT - 1 - (int)i; /* widest first */
        assert_string_equal(t->name, names[d]);
        assert_int_equal(t->dtype, d);
        assert_int_equal(t->ndim, 2);
        assert_int_equal(t->shape[0], 4);
        assert_int_equal(t->shape[1], 2);
        assert_int_equal(t->count, 8);
        assert_int_equal(t->bytes, sizes[d]);
        assert_int_equal(t->offset, at);
        assert_memory_equal(t->data, raw[d], sizes[d]);
        assert_ptr_equal(tsr_safetensors_find(st, names[d]), t);
        at += sizes[d];
    }
    assert_int_equal(st->file_bytes, 8 + st->header_bytes + at);
    assert_null(tsr_safetensors_find(st, "t.F128"));
    float out[8];
    assert_int_equal(tsr_safetensors_to_f32(f->ctx, tsr_safetensors_find(st, "t.I32"), out, 8),
                     TSR_ERR_UNSUPPORTED);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "\"t.I32\" is I32"));
    assert_int_equal(tsr_safetensors_to_f32(f->ctx, tsr_safetensors_find(st, "t.F32"), out, 7),
                     TSR_ERR_SHAPE);
    tsr_safetensors_close(f->ctx, st);
}

/* ---- float conversions ---- */

/* Writes x[0..n) as F16, BF16 and F64 with add_f32 and returns the file's tensors. */
static tsr_safetensors *write_floats(fixture *f, const float *x, size_t n) {
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    uint64_t shape[] = {n};
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "h", TSR_ST_F16, 1, shape, x), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "b", TSR_ST_BF16, 1, shape, x), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "s", TSR_ST_F32, 1, shape, x), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "d", TSR_ST_F64, 1, shape, x), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    return st;
}

static void check_narrowed(const char *what, float x, double got, double want, uint16_t bits) {
    if (isnan(x)) {
        if (!isnan(got) || !!signbit(got) != !!signbit(x))
            fail_msg("%s: NaN 0x%08x became 0x%04x", what, f32_bits(x), bits);
        return;
    }
    if (!(got == want && !!signbit(got) == !!signbit(want)))
        fail_msg("%s(%a = 0x%08x) = 0x%04x = %a, nearest even is %a", what, (double)x, f32_bits(x),
                 bits, got, want);
}

static void test_f32_narrowing_nearest_even(void **state) {
    fixture *f = *state;
    /* a stride through every exponent, then the hard cases */
    size_t n = 0, cap = (1u << 20) + 4096;
    float *x = malloc(cap * sizeof *x);
    for (uint64_t u = 0; u < (UINT64_C(1) << 32); u += 0x1003) x[n++] = bits_f32((uint32_t)u);
    static const uint32_t special[] = {0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000,
                                       0xFFC00001, 0x7F800001, 0x7FFFFFFF, 0x00000001, 0x807FFFFF,
                                       0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x7F7FFFFF,
                                       0x7F7F7FFF, 0x7F7F8000, 0xFF7F8000, 0x33000000, 0x33000001,
                                       0x387FC000, 0x38800000, 0x337FFFFF};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) x[n++] = bits_f32(special[i]);
    for (uint32_t k = 0; k < 1024; k++) { /* ties: normal and subnormal float16, bfloat16 */
        x[n++] = bits_f32(0x3C000000u + (k << 13) + 0x1000u);
        x[n++] = (float)ldexp(2.0 * k + 1, -25); /* (k + 1/2) * 2^-24: float16 subnormal ties */
        x[n++] = bits_f32(0x3F800000u + (k << 16) + 0x8000u);
        x[n++] = bits_f32(0x00000000u + (k << 16) + 0x8000u); /* bfloat16 subnormal ties */
    }
    tsr_safetensors *st = write_floats(f, x, n);
    const tsr_st_tensor *h = tsr_safetensors_find(st, "h"), *b = tsr_safetensors_find(st, "b");
    const tsr_st_tensor *s = tsr_safetensors_find(st, "s"), *d = tsr_safetensors_find(st, "d");
    assert_int_equal(h->count, n);
    for (size_t i = 0; i < n; i++) {
        uint16_t hb = (uint16_t)get_le((const unsigned char *)h->data + 2 * i, 2);
        uint16_t bb = (uint16_t)get_le((const unsigned char *)b->data + 2 * i, 2);
        check_narrowed("f16", x[i], ref_f16(hb), ref_round(x[i], 11, -14, F16_MAX), hb);
        check_narrowed("bf16", x[i], ref_bf16(bb), ref_round(x[i], 8, -126, BF16_MAX), bb);
        /* F32 is bit-exact, NaN payloads included; F64 widens exactly */
        assert_int_equal(get_le((const unsigned char *)s->data + 4 * i, 4), f32_bits(x[i]));
        uint64_t db = get_le((const unsigned char *)d->data + 8 * i, 8);
        double dv;
        memcpy(&dv, &db, 8);
        if (isnan(x[i]))
            assert_true(isnan(dv) && !!signbit(dv) == !!signbit(x[i]));
        else
            assert_true(dv == (double)x[i] && !!signbit(dv) == !!signbit(x[i]));
    }
    float *back = malloc(n * sizeof *back);
    assert_int_equal(tsr_safetensors_to_f32(f->ctx, s, back, n), TSR_OK);
    assert_memory_equal(back, x, n * sizeof *x);
    tsr_safetensors_close(f->ctx, st);
    free(back);
    free(x);
}

/* Every float16 and bfloat16 bit pattern widens to exactly the value of its formula; NaNs
 * keep sign and payload (a float16 NaN widens quiet, as F16C does: lib/core/precision.c). */
static void test_f16_bf16_widening_exhaustive(void **state) {
    fixture *f = *state;
    unsigned char *raw = malloc(2 * 65536);
    for (uint32_t i = 0; i < 65536; i++) put_le(raw + 2 * i, i, 2);
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    uint64_t shape[] = {256, 256};
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "h", TSR_ST_F16, 2, shape, raw, 2 * 65536),
                     TSR_OK);
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "b", TSR_ST_BF16, 2, shape, raw, 2 * 65536),
                     TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    float *out = malloc(65536 * sizeof *out);
    const tsr_st_tensor *h = tsr_safetensors_find(st, "h"), *b = tsr_safetensors_find(st, "b");
    assert_int_equal(tsr_safetensors_to_f32(f->ctx, h, out, 65536), TSR_OK);
    for (uint32_t i = 0; i < 65536; i++) {
        double want = ref_f16((uint16_t)i);
        if (isnan(want))
            assert_int_equal(f32_bits(out[i]),
                             (i & 0x8000u) << 16 | 0x7FC00000u | (i & 0x3FFu) << 13);
        else if (!((double)out[i] == want && !!signbit(out[i]) == !!signbit(want)))
            fail_msg("f16 0x%04x -> %a, want %a", i, (double)out[i], want);
    }
    assert_int_equal(tsr_safetensors_to_f32(f->ctx, b, out, 65536), TSR_OK);
    for (uint32_t i = 0; i < 65536; i++) {
        double want = ref_bf16((uint16_t)i);
        assert_int_equal(f32_bits(out[i]), i << 16);
        if (!isnan(want)) assert_true((double)out[i] == want);
    }
    tsr_safetensors_close(f->ctx, st);
    free(out);
    free(raw);
}

static void test_f64_to_f32_nearest_even(void **state) {
    fixture *f = *state;
    size_t n = 0;
    double *x = malloc(70000 * sizeof *x);
    for (uint64_t k = 0; k < 60000; k++) { /* bit patterns across every exponent */
        uint64_t u = k * UINT64_C(0x0004630B5A1E1F3B);
        memcpy(&x[n++], &u, 8);
    }
    static const double special[] = {0.0,
                                     -0.0,
                                     1e-46,
                                     -1e-46,
                                     7.006492321624085e-46,
                                     1.401298464324817e-45,
                                     3.4028235677973366e38,
                                     3.4028235677973362e38,
                                     -3.5e38,
                                     1e300,
                                     5e-324,
                                     0.1};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) x[n++] = special[i];
    for (int k = 0; k < 4096; k++) /* exact ties between neighbouring floats */
        x[n++] = ldexp(2.0 * (8388608 + k) + 1, -24 + (k % 64) - 32);
    unsigned char *raw = malloc(8 * n);
    for (size_t i = 0; i < n; i++) {
        uint64_t u;
        memcpy(&u, &x[i], 8);
        put_le(raw + 8 * i, u, 8);
    }
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    uint64_t shape[] = {n};
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "d", TSR_ST_F64, 1, shape, raw, 8 * n), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    float *out = malloc(n * sizeof *out);
    assert_int_equal(tsr_safetensors_to_f32(f->ctx, &st->tensors[0], out, n), TSR_OK);
    for (size_t i = 0; i < n; i++) {
        double want = ref_round(x[i], 24, -126, FLT_MAX);
        if (isnan(x[i]))
            assert_true(isnan(out[i]));
        else if (!((double)out[i] == want && !!signbit(out[i]) == !!signbit(want)))
            fail_msg("f64 %a -> %a, nearest even is %a", x[i], (double)out[i], want);
    }
    tsr_safetensors_close(f->ctx, st);
    free(out);
    free(raw);
    free(x);
}

/* ---- shapes and metadata ---- */

static void test_scalar_empty_and_metadata(void **state) {
    fixture *f = *state;
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    float one = 42.0f;
    uint64_t empty[] = {3, 0, 5};
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "scalar", TSR_ST_F32, 0, NULL, &one), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "empty", TSR_ST_BF16, 3, empty, NULL),
                     TSR_OK);
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "empty2", TSR_ST_I32, 3, empty, NULL, 0), TSR_OK);
    const char *odd =
        "quote \" backslash \\ newline \n tab \t bell \x07 del \x7f caf\xc3\xa9 \xe2\x82\xac";
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "format", "pt"), TSR_OK);
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "odd", "first"), TSR_OK);
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "odd", odd), TSR_OK); /* replaces */
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "", ""), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);

    bytes b = read_all(f->path);
    b.p[b.n] = 0;
    /* serde_json's escapes: short forms, \u00xx for other controls, DEL and UTF-8 as is */
    assert_non_null(strstr((char *)b.p + 8,
                           "\"odd\":\"quote \\\" backslash \\\\ newline \\n tab \\t bell \\u0007 "
                           "del \x7f caf\xc3\xa9 \xe2\x82\xac\""));
    assert_non_null(
        strstr((char *)b.p + 8, "{\"__metadata__\":{\"\":\"\",\"format\":\"pt\",\"odd\""));
    free(b.p);

    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    assert_int_equal(st->count, 3);
    const tsr_st_tensor *s = tsr_safetensors_find(st, "scalar");
    assert_int_equal(s->ndim, 0);
    assert_null(s->shape);
    assert_int_equal(s->count, 1);
    assert_int_equal(s->bytes, 4);
    float v;
    assert_int_equal(tsr_safetensors_to_f32(f->ctx, s, &v, 1), TSR_OK);
    assert_true(v == 42.0f);
    const tsr_st_tensor *e = tsr_safetensors_find(st, "empty");
    assert_int_equal(e->ndim, 3);
    assert_int_equal(e->shape[1], 0);
    assert_int_equal(e->count, 0);
    assert_int_equal(e->bytes, 0);
    assert_int_equal(tsr_safetensors_to_f32(f->ctx, e, NULL, 0), TSR_OK);
    assert_int_equal(tsr_safetensors_find(st, "empty2")->bytes, 0);
    assert_int_equal(st->meta_count, 3);
    assert_string_equal(st->meta[0].key, "");
    assert_string_equal(st->meta[1].key, "format");
    assert_string_equal(tsr_safetensors_meta(st, "odd"), odd);
    tsr_safetensors_close(f->ctx, st);
}

static void test_writer_argument_errors(void **state) {
    fixture *f = *state;
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    float x[4] = {1, 2, 3, 4};
    uint64_t s4[] = {4}, big[] = {UINT64_C(1) << 40, UINT64_C(1) << 40};
    uint64_t huge[] = {UINT64_C(1) << 60};
    uint64_t f4odd[] = {3};
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "a", TSR_ST_F32, 1, s4, x), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "a", TSR_ST_F32, 1, s4, x),
                     TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "\"a\" already added"));
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "__metadata__", TSR_ST_F32, 1, s4, x),
                     TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "reserved"));
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "bad\xc3(", TSR_ST_F32, 1, s4, x),
                     TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "not valid UTF-8"));
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "i", TSR_ST_I32, 1, s4, x),
                     TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "r", TSR_ST_F32, 1, s4, x, 15), TSR_ERR_SHAPE);
    assert_non_null(
        strstr(tsr_context_last_error(f->ctx), "15 bytes given, 4 elements of F32 are 16"));
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "o", TSR_ST_F32, 2, big, x, 16), TSR_ERR_SHAPE);
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "o", TSR_ST_U8, 1, huge, x, 16), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "exceeds 2^53"));
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "f4", TSR_ST_F4, 1, f4odd, x, 1), TSR_ERR_SHAPE);
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "n", TSR_ST_F32, 1, s4, NULL, 16),
                     TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "d", (tsr_st_dtype)99, 1, s4, x, 16),
                     TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "k", "\xff"), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, "/nonexistent-tsr/dir/x.safetensors"),
                     TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "/nonexistent-tsr/dir/x.safetensors"));
    assert_int_equal(tsr_st_writer_save(f->ctx, w, ""), TSR_ERR_INVALID_ARG);
    /* the writer is unharmed by the refusals */
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    assert_int_equal(st->count, 1);
    tsr_safetensors_close(f->ctx, st);
}

/* Saving over a file replaces it whole and leaves nothing else in the folder. */
static void test_atomic_replace(void **state) {
    fixture *f = *state;
    FILE *fp = fopen(f->path, "wb");
    fputs("old contents", fp);
    fclose(fp);
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    float x = 1;
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "x", TSR_ST_F32, 0, NULL, &x), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    tsr_safetensors_close(f->ctx, st);
    DIR *d = opendir(f->dir);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            assert_string_equal(e->d_name, "t.safetensors");
            files++;
        }
    closedir(d);
    assert_int_equal(files, 1);
}

/* ---- refusals ---- */

typedef struct {
    const char *header;
    size_t data;
    tsr_status status;
    const char *detail;
} bad_case;

#define T(name, dtype, shape, b, e)                                                                \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #b "," #e "]}"

static const bad_case bad_cases[] = {
    {"{" T("a", "F128", "[1]", 0, 4) "}", 4, TSR_ERR_CORRUPT,
     "tensor \"a\": dtype \"F128\" is not one of"},
    {"{" T("a", "f32", "[1]", 0, 4) "}", 4, TSR_ERR_CORRUPT, "dtype \"f32\" is not one of"},
    {"{\"a\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TSR_ERR_CORRUPT,
     "dtype (not a string)"},
    {"{" T("a", "F32", "[2,2]", 0, 12) "}", 12, TSR_ERR_CORRUPT,
     "tensor \"a\": data_offsets [0, 12] hold 12 bytes, but 4 elements of F32 need 16"},
    {"{" T("a", "F32", "[1]", 0, 4) "}", 2, TSR_ERR_TRUNCATED,
     "tensor \"a\": data_offsets end 4 is past the data buffer of 2 bytes"},
    {"{" T("a", "F32", "[1]", 4, 0) "}", 4, TSR_ERR_CORRUPT,
     "data_offsets [4, 0] end before they begin"},
    {"{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}", 12, TSR_ERR_CORRUPT,
     "tensor \"b\" at data offset 4 overlaps tensor \"a\", which ends at 8"},
    {"{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 0, 4) "}", 8, TSR_ERR_CORRUPT,
     "tensor \"b\" at data offset 0 overlaps tensor \"a\", which ends at 4"},
    {"{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 8, 12) "}", 12, TSR_ERR_CORRUPT,
     "tensor \"b\" begins at data offset 8, leaving a hole of 4 bytes after tensor \"a\""},
    {"{" T("a", "F32", "[1]", 4, 8) "}", 8, TSR_ERR_CORRUPT,
     "leaving a hole of 4 bytes after the start of the data buffer"},
    {"{" T("a", "F32", "[1]", 0, 4) "}", 8, TSR_ERR_CORRUPT,
     "4 bytes after the last tensor \"a\": the data buffer is 8 bytes, the tensors cover 4"},
    {"{}", 4, TSR_ERR_CORRUPT, "4 bytes after the last tensor: the data buffer is 4 bytes"},
    {"{" T("a", "F32", "[1]", 0, 4) "," T("a", "F32", "[1]", 4, 8) "}", 8, TSR_ERR_CORRUPT,
     "tensor \"a\" appears twice"},
    {"{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, TSR_ERR_CORRUPT,
     "metadata \"k\" appears twice"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, TSR_ERR_CORRUPT,
     "\"__metadata__\" appears twice"},
    {"{\"__metadata__\":{\"k\":1}}", 0, TSR_ERR_CORRUPT, "metadata \"k\" is not a string"},
    {"{\"__metadata__\":{\"k\":null}}", 0, TSR_ERR_CORRUPT, "metadata \"k\" is not a string"},
    {"{\"__metadata__\":\"x\"}", 0, TSR_ERR_CORRUPT,
     "\"__metadata__\" is not an object of strings"},
    {"{" T("a", "F32", "[4294967296,4294967296]", 0, 0) "}", 0, TSR_ERR_CORRUPT,
     "tensor \"a\": shape times the 32-bit F32 size overflows 64 bits"},
    {"{" T("a", "U8", "[9007199254740993]", 0, 0) "}", 0, TSR_ERR_CORRUPT,
     "number '9007199254740993' at byte 36 is not an integer in 0..2^53"},
    {"{" T("a", "U8", "[18446744073709551616]", 0, 0) "}", 0, TSR_ERR_CORRUPT,
     "number '18446744073709551616' at byte 36 is not an integer in 0..2^53"},
    {"{" T("a", "U8", "[3]", -1, 2) "}", 3, TSR_ERR_CORRUPT,
     "number '-1' at byte 55 is not an integer"},
    {"{" T("a", "U8", "[1.5]", 0, 1) "}", 1, TSR_ERR_CORRUPT, "number '1.5' at byte 36 is not"},
    {"{" T("a", "U8", "[1e2]", 0, 100) "}", 100, TSR_ERR_CORRUPT, "number '1e2' at byte 36 is not"},
    {"{" T("a", "U8", "[01]", 0, 1) "}", 1, TSR_ERR_CORRUPT, "number '01' at byte 36 is not"},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, TSR_ERR_CORRUPT,
     "tensor \"a\": \"shape\" is missing"},
    {"{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     TSR_ERR_CORRUPT, "tensor \"a\": \"dtype\" appears twice"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, TSR_ERR_CORRUPT,
     "data_offsets is not an array of two integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":4}}", 4, TSR_ERR_CORRUPT,
     "data_offsets is not an array of two integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":4,\"data_offsets\":[0,4]}}", 4, TSR_ERR_CORRUPT,
     "tensor \"a\": shape is not an array"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, TSR_ERR_CORRUPT,
     "shape[0] is not a non-negative integer"},
    {"{\"a\":3}", 0, TSR_ERR_CORRUPT, "tensor \"a\": entry is not a JSON object"},
    {"{" T("a", "F4", "[3]", 0, 1) "}", 1, TSR_ERR_CORRUPT,
     "3 elements of F4 are not a whole number of bytes"},
    {"{" T("a\\u0000b", "U8", "[1]", 0, 1) "}", 1, TSR_ERR_CORRUPT,
     "a string holds \\u0000 at byte 11"},
    {"{" T("a\tb", "U8", "[1]", 0, 1) "}", 1, TSR_ERR_PARSE,
     "control character 0x09 inside a string at byte 11"},
    {"[1]", 0, TSR_ERR_CORRUPT, "header is not a JSON object (it does not start with '{')"},
    {"        ", 0, TSR_ERR_CORRUPT, "header is not a JSON object (it is blank)"},
    {"{\"a\":", 0, TSR_ERR_PARSE, "header is not valid JSON"},
    {"{} x", 0, TSR_ERR_CORRUPT, "header: bytes after the JSON object at byte 11"},
    {"{}}", 0, TSR_ERR_CORRUPT, "header: bytes after the JSON object at byte 10"},
    {"{\"a\xc0\x80\":1}", 0, TSR_ERR_CORRUPT, "header is not valid UTF-8 at byte 11"},
    {"{\"\xed\xa0\x80\":1}", 0, TSR_ERR_CORRUPT, "header is not valid UTF-8 at byte 10"},
};

static void expect_refused(tsr_context *ctx, const unsigned char *p, size_t n, tsr_status status,
                           const char *detail) {
    tsr_safetensors *st = (tsr_safetensors *)0x1;
    tsr_status s = tsr_safetensors_open_memory(ctx, "mem.st", p, n, &st);
    const char *msg = tsr_context_last_error(ctx);
    if (s != status || !strstr(msg, detail) || strncmp(msg, "mem.st: ", 8) != 0)
        fail_msg("got %s \"%s\", want %s \"...%s...\"", tsr_status_name(s), msg,
                 tsr_status_name(status), detail);
    assert_null(st);
}

static void test_refusals(void **state) {
    fixture *f = *state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof *bad_cases; i++) {
        const bad_case *c = &bad_cases[i];
        bytes b = image(c->header, strlen(c->header), c->data);
        expect_refused(f->ctx, b.p, b.n, c->status, c->detail);
        free(b.p);
    }
    /* the length prefix itself */
    unsigned char small[5] = {0};
    expect_refused(f->ctx, small, 5, TSR_ERR_TRUNCATED,
                   "5 bytes, shorter than the 8-byte header length");
    expect_refused(f->ctx, NULL, 0, TSR_ERR_TRUNCATED, "0 bytes, shorter");
    bytes b = image("{}      ", 8, 0);
    put_le(b.p, 100000001, 8);
    expect_refused(f->ctx, b.p, b.n, TSR_ERR_CORRUPT,
                   "header length 100000001 exceeds the limit of 100000000");
    put_le(b.p, UINT64_MAX, 8);
    expect_refused(f->ctx, b.p, b.n, TSR_ERR_CORRUPT, "header length 18446744073709551615 exceeds");
    put_le(b.p, 9, 8);
    expect_refused(f->ctx, b.p, b.n, TSR_ERR_TRUNCATED,
                   "header length 9 runs past the end of the file (16 bytes)");
    free(b.p);
    /* files */
    char missing[160];
    snprintf(missing, sizeof missing, "%s/missing.safetensors", f->dir);
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, missing, &st), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), missing));
    assert_int_not_equal(tsr_safetensors_open(f->ctx, f->dir, &st), TSR_OK);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), f->dir));
    FILE *fp = fopen(f->path, "wb");
    fclose(fp);
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_ERR_TRUNCATED);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "t.safetensors: 0 bytes"));
}

/* What the reference accepts: tensors listed in any order, spaces around the object, null
 * metadata, fields it does not know, empty tensors sharing an offset, a header length that
 * leaves the data unaligned. */
static void test_accepted_variants(void **state) {
    fixture *f = *state;
    const char *h = " \n{\"__metadata__\":null," T(
        "c", "I16", "[2]", 5,
        9) ","
           "\"b\":{\"shape\":[0],\"data_offsets\":[5,5],\"dtype\":\"F64\",\"extra\":[1]}," T(
               "a", "U8", "[5]", 0, 5) "," T("z", "F32", "[0,7]", 9, 9) "," T("", "BOOL", "[]", 9,
                                                                              10) "}  ";
    bytes b = image(h, strlen(h), 10);
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open_memory(f->ctx, "mem", b.p, b.n, &st), TSR_OK);
    assert_int_equal(st->count, 5);
    assert_int_equal(st->meta_count, 0);
    static const char *order[] = {"a", "b", "c", "z", ""};
    for (int i = 0; i < 5; i++) assert_string_equal(st->tensors[i].name, order[i]);
    const tsr_st_tensor *c = tsr_safetensors_find(st, "c");
    assert_ptr_equal(c->data, b.p + 8 + strlen(h) + 5);
    assert_int_equal(get_le(c->data, 2), 0x0605);
    assert_int_equal(tsr_safetensors_find(st, "")->count, 1);
    tsr_safetensors_close(f->ctx, st);
    /* every shorter prefix is refused */
    for (size_t n = 0; n < b.n; n++) {
        st = (tsr_safetensors *)0x1;
        tsr_status s = tsr_safetensors_open_memory(f->ctx, "mem", b.p, n, &st);
        assert_true(s == TSR_ERR_TRUNCATED || s == TSR_ERR_CORRUPT);
        assert_null(st);
    }
    free(b.p);
}

/* ---- allocator failures: every allocation of open and save fails once, nothing leaks ---- */

static void test_allocator_failures(void **state) {
    fixture *f = *state;
    tsr_test_alloc counter;
    tsr_test_alloc_init(&counter, 0);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    o.allocator = &counter.allocator;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    float x[300];
    for (int i = 0; i < 300; i++) x[i] = (float)i / 7;
    uint64_t shape[] = {10, 30};
    long needed = 0, live0 = counter.live;
    for (long k = 0;; k++) { /* k = 0: count the allocations of a full run */
        long base = counter.calls;
        counter.fail_at = k ? base + k : 0;
        tsr_st_writer *w = NULL;
        tsr_status s = tsr_st_writer_create(ctx, &w);
        char name[16];
        for (int i = 0; i < 20 && s == TSR_OK; i++) { /* enough to grow the table */
            snprintf(name, sizeof name, "w.%02d", i);
            s = tsr_st_writer_add_f32(ctx, w, name, i % 2 ? TSR_ST_BF16 : TSR_ST_F32, 2, shape, x);
        }
        if (s == TSR_OK) s = tsr_st_writer_set_meta(ctx, w, "format", "pt");
        if (s == TSR_OK) s = tsr_st_writer_save(ctx, w, f->path);
        tsr_st_writer_free(ctx, w);
        if (k == 0) {
            assert_int_equal(s, TSR_OK);
            needed = counter.calls - base;
            continue;
        }
        assert_int_equal(s, TSR_ERR_NO_MEMORY);
        assert_int_equal(counter.live, live0);
        if (k == needed) break;
    }
    counter.fail_at = 0;
    bytes b = read_all(f->path);
    for (long k = 0;; k++) {
        long base = counter.calls;
        counter.fail_at = k ? base + k : 0;
        tsr_safetensors *st = (tsr_safetensors *)0x1;
        tsr_status s = tsr_safetensors_open_memory(ctx, "mem", b.p, b.n, &st);
        if (k == 0) {
            assert_int_equal(s, TSR_OK);
            assert_int_equal(st->count, 20);
            tsr_safetensors_close(ctx, st);
            needed = counter.calls - base;
            continue;
        }
        assert_int_equal(s, TSR_ERR_NO_MEMORY);
        assert_null(st);
        assert_int_equal(counter.live, live0);
        if (k == needed) break;
    }
    counter.fail_at = 0;
    free(b.p);
    tsr_context_free(ctx);
    assert_int_equal(counter.live, 0);
}

/* ---- interop with the Python reference ---- */

/* The interpreter to use, or NULL (then the test skips). */
static const char *python(void) {
    const char *p = getenv("TSR_TEST_PYTHON");
    if (p && *p) return p;
    return system("command -v python3 > /dev/null 2>&1") == 0 ? "python3" : NULL;
}

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

/* Runs `cmd` and checks each JSON line it prints against the file st: tensors (dtype, shape,
 * bytes, and same_header when want_same_header) and metadata. Returns the tensors seen. */
static size_t check_dump(const char *cmd, const tsr_safetensors *st, int want_same_header) {
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *line = NULL;
    size_t cap = 0, tensors = 0, metas = 0;
    while (getline(&line, &cap, p) > 0) {
        cJSON *j = cJSON_Parse(line);
        if (!j) fail_msg("%s printed: %s", cmd, line);
        const cJSON *meta = cJSON_GetObjectItemCaseSensitive(j, "meta");
        if (meta) {
            const char *v = tsr_safetensors_meta(st, meta->valuestring);
            if (!v) fail_msg("metadata %s missing", meta->valuestring);
            assert_string_equal(v, cJSON_GetObjectItemCaseSensitive(j, "value")->valuestring);
            metas++;
            cJSON_Delete(j);
            continue;
        }
        const char *name = cJSON_GetObjectItemCaseSensitive(j, "name")->valuestring;
        const tsr_st_tensor *t = tsr_safetensors_find(st, name);
        if (!t) fail_msg("tensor \"%s\" missing", name);
        assert_string_equal(tsr_st_dtype_name(t->dtype),
                            cJSON_GetObjectItemCaseSensitive(j, "dtype")->valuestring);
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(j, "shape");
        assert_int_equal(cJSON_GetArraySize(shape), t->ndim);
        for (int d = 0; d < t->ndim; d++)
            assert_true(cJSON_GetArrayItem(shape, d)->valuedouble == (double)t->shape[d]);
        const char *hex = cJSON_GetObjectItemCaseSensitive(j, "hex")->valuestring;
        assert_int_equal(strlen(hex), 2 * t->bytes);
        for (size_t i = 0; i < t->bytes; i++) {
            int byte = hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]);
            if (byte != ((const unsigned char *)t->data)[i])
                fail_msg("tensor \"%s\" byte %zu: Python reads 0x%02x, tessera 0x%02x", name, i,
                         byte, ((const unsigned char *)t->data)[i]);
        }
        if (want_same_header)
            assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "same_header")));
        tensors++;
        cJSON_Delete(j);
    }
    free(line);
    assert_int_equal(pclose(p), 0);
    assert_int_equal(tensors, st->count);
    assert_int_equal(metas, st->meta_count);
    return tensors;
}

static void test_python_reads_tessera(void **state) {
    fixture *f = *state;
    const char *py = python();
    if (!py) TSR_TEST_SKIP("missing python3 for the interop check");
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    float x[12] = {0.0f,
                   -0.0f,
                   1.0f / 3,
                   -65520.0f,
                   1e-8f,
                   3.0e38f,
                   INFINITY,
                   -INFINITY,
                   bits_f32(0x7FA00001),
                   bits_f32(0xFFC12345),
                   1e-40f,
                   2.5f};
    uint64_t s12[] = {12}, s34[] = {3, 4}, s0[] = {0}, s2[] = {2};
    int64_t ids[2] = {-1, INT64_C(1) << 62};
    unsigned char ids_le[16], flags[2] = {1, 0};
    put_le(ids_le, (uint64_t)ids[0], 8);
    put_le(ids_le + 8, (uint64_t)ids[1], 8);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "wte.weight", TSR_ST_F32, 2, s34, x), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "half", TSR_ST_F16, 1, s12, x), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "brain", TSR_ST_BF16, 1, s12, x), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "double", TSR_ST_F64, 1, s12, x), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "scalar", TSR_ST_F32, 0, NULL, x + 2),
                     TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "empty", TSR_ST_F32, 1, s0, NULL), TSR_OK);
    assert_int_equal(tsr_st_writer_add(f->ctx, w, "ids", TSR_ST_I64, 1, s2, ids_le, 16), TSR_OK);
    assert_int_equal(
        tsr_st_writer_add(f->ctx, w, "m\xc3\xa4sk \"\\\n", TSR_ST_BOOL, 1, s2, flags, 2), TSR_OK);
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "format", "pt"), TSR_OK);
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "note", "tab\there \xe2\x82\xac \x01"),
                     TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);

    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    /* what tessera wrote is what the reference encoder gives */
    const tsr_st_tensor *h = tsr_safetensors_find(st, "half"),
                        *b = tsr_safetensors_find(st, "brain");
    for (int i = 0; i < 12; i++) {
        uint16_t hb = (uint16_t)get_le((const unsigned char *)h->data + 2 * i, 2);
        uint16_t bb = (uint16_t)get_le((const unsigned char *)b->data + 2 * i, 2);
        check_narrowed("f16", x[i], ref_f16(hb), ref_round(x[i], 11, -14, F16_MAX), hb);
        check_narrowed("bf16", x[i], ref_bf16(bb), ref_round(x[i], 8, -126, BF16_MAX), bb);
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s %s dump %s", py, SCRIPT, f->path);
    assert_int_equal(check_dump(cmd, st, 1), 8);
    tsr_safetensors_close(f->ctx, st);
}

static void test_tessera_reads_python(void **state) {
    fixture *f = *state;
    const char *py = python();
    if (!py) TSR_TEST_SKIP("missing python3 for the interop check");
    char cmd[512], pkg[160];
    snprintf(cmd, sizeof cmd, "%s %s write %s", py, SCRIPT, f->path);
    FILE *p = popen(cmd, "r"); /* the dump goes nowhere: first let the file be written */
    assert_non_null(p);
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {
    }
    assert_int_equal(pclose(p), 0);
    tsr_safetensors *st;
    tsr_status s = tsr_safetensors_open(f->ctx, f->path, &st);
    if (s != TSR_OK) fail_msg("%s", tsr_context_last_error(f->ctx));
    snprintf(cmd, sizeof cmd, "%s %s dump %s", py, SCRIPT, f->path);
    assert_int_equal(check_dump(cmd, st, 0), 12);
    /* the float tensors widen as the reference decoders say */
    static const char *floats[] = {"wte.weight", "h.0.attn.c_attn.weight", "h.0.ln_1.bias",
                                   "double"};
    for (int k = 0; k < 4; k++) {
        const tsr_st_tensor *t = tsr_safetensors_find(st, floats[k]);
        float out[16];
        assert_true(t->count <= 16);
        assert_int_equal(tsr_safetensors_to_f32(f->ctx, t, out, t->count), TSR_OK);
        const unsigned char *d = t->data;
        for (size_t i = 0; i < t->count; i++) {
            double want;
            if (t->dtype == TSR_ST_F32)
                want = bits_f32((uint32_t)get_le(d + 4 * i, 4));
            else if (t->dtype == TSR_ST_F16)
                want = ref_f16((uint16_t)get_le(d + 2 * i, 2));
            else if (t->dtype == TSR_ST_BF16)
                want = ref_bf16((uint16_t)get_le(d + 2 * i, 2));
            else {
                uint64_t u = get_le(d + 8 * i, 8);
                memcpy(&want, &u, 8);
                want = ref_round(want, 24, -126, FLT_MAX);
            }
            if (isnan(want))
                assert_true(isnan(out[i]));
            else
                assert_true((double)out[i] == want && !!signbit(out[i]) == !!signbit(want));
        }
    }
    assert_string_equal(tsr_safetensors_meta(st, "note"), "line\nbreak \"quoted\" \xc3\xa9");
    tsr_safetensors_close(f->ctx, st);
    /* written by the safetensors package itself, where it is installed */
    snprintf(pkg, sizeof pkg, "%s.pkg", f->path);
    if (access(pkg, R_OK) == 0) {
        assert_int_equal(tsr_safetensors_open(f->ctx, pkg, &st), TSR_OK);
        snprintf(cmd, sizeof cmd, "%s %s dump %s", py, SCRIPT, pkg);
        assert_int_equal(check_dump(cmd, st, 1), 12);
        tsr_safetensors_close(f->ctx, st);
    } else {
        print_message("the safetensors package is not installed: checked against the plain "
                      "Python reference only\n");
    }
}

/* tsr-safetensors, found beside this test binary (build/bin next to build/tests) and run under
 * the same TSR_TEST_WRAPPER (qemu-user, valgrind): --json lists what the library reads; a
 * refused file exits 1 with the reason. Skips where the tool is absent. */
static void test_tool(void **state) {
    fixture *f = *state;
    char self[512], tool[600], cmd[2048];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) TSR_TEST_SKIP("/proc/self/exe unreadable: cannot find tsr-safetensors");
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) TSR_TEST_SKIP("cannot find tsr-safetensors beside %s", self);
    *slash = 0;
    snprintf(tool, sizeof tool, "%s/../bin/tsr-safetensors", self);
    if (access(tool, X_OK) != 0) TSR_TEST_SKIP("tsr-safetensors not built (%s)", tool);
    const char *wrapper = getenv("TSR_TEST_WRAPPER");
    if (!wrapper) wrapper = "";
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    float x[6] = {1, 2, 3, 4, 5, 6};
    uint64_t s23[] = {2, 3};
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "b\"q", TSR_ST_BF16, 2, s23, x), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "a", TSR_ST_F32, 0, NULL, x), TSR_OK);
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "format", "pt"), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
    snprintf(cmd, sizeof cmd, "%s %s --json %s", wrapper, tool, f->path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char out[65536];
    size_t len = fread(out, 1, sizeof out - 1, p);
    out[len] = 0;
    assert_int_equal(pclose(p), 0);
    cJSON *j = cJSON_Parse(out);
    assert_non_null(j);
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    assert_true(cJSON_GetObjectItem(j, "file_bytes")->valuedouble == (double)st->file_bytes);
    const cJSON *meta = cJSON_GetObjectItem(j, "metadata");
    assert_string_equal(cJSON_GetObjectItem(meta, "format")->valuestring, "pt");
    const cJSON *list = cJSON_GetObjectItem(j, "tensors");
    assert_int_equal(cJSON_GetArraySize(list), st->count);
    for (size_t i = 0; i < st->count; i++) {
        const cJSON *t = cJSON_GetArrayItem(list, (int)i);
        assert_string_equal(cJSON_GetObjectItem(t, "name")->valuestring, st->tensors[i].name);
        assert_string_equal(cJSON_GetObjectItem(t, "dtype")->valuestring,
                            tsr_st_dtype_name(st->tensors[i].dtype));
        assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(t, "shape")), st->tensors[i].ndim);
        assert_true(cJSON_GetObjectItem(t, "bytes")->valuedouble == (double)st->tensors[i].bytes);
        assert_true(cJSON_GetObjectItem(t, "offset")->valuedouble == (double)st->tensors[i].offset);
    }
    tsr_safetensors_close(f->ctx, st);
    cJSON_Delete(j);
    /* a file cut short: exit status 1, the reason on stderr */
    assert_int_equal(truncate(f->path, 20), 0);
    snprintf(cmd, sizeof cmd, "%s %s %s 2>&1", wrapper, tool, f->path);
    p = popen(cmd, "r");
    len = fread(out, 1, sizeof out - 1, p);
    out[len] = 0;
    int rc = pclose(p);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 1);
    assert_non_null(strstr(out, "runs past the end of the file (20 bytes) (TSR_ERR_TRUNCATED)"));
}

/* The fuzzing seed corpus holds valid files only (run from the repository root). */
static void test_fuzz_seeds(void **state) {
    fixture *f = *state;
    const char *dir = "tests/fuzz/corpus/safetensors";
    DIR *d = opendir(dir);
    if (!d) TSR_TEST_SKIP("missing the fuzz corpus %s (run from the repository root)", dir);
    struct dirent *e;
    int loaded = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        tsr_safetensors *st;
        if (tsr_safetensors_open(f->ctx, path, &st) != TSR_OK)
            fail_msg("%s: %s", path, tsr_context_last_error(f->ctx));
        tsr_safetensors_close(f->ctx, st);
        loaded++;
    }
    closedir(d);
    assert_true(loaded >= 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reference_vectors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_dtype_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_f32_narrowing_nearest_even, setup, teardown),
        cmocka_unit_test_setup_teardown(test_f16_bf16_widening_exhaustive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_f64_to_f32_nearest_even, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scalar_empty_and_metadata, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_argument_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_atomic_replace, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_accepted_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocator_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_python_reads_tessera, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tessera_reads_python, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tool, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fuzz_seeds, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
