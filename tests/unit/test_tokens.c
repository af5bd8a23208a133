/* Token files and window samplers: round trips against a plain-C encoder, every header
 * corruption and truncation, out-of-vocabulary ids, the samplers' windows against a
 * brute-force reference, determinism, resumption, shard disjointness, the validation pass
 * covering every token once, the data folder probe, allocator failures. */
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
#include <sys/stat.h>
#include <unistd.h>
#include "lib/core/internal.h"
#include "lib/model/stage.h"
#include "support/test_util.h"

typedef tsr_test_dir_fixture fixture;

/* ---- reference encoder: 256 little-endian int32 then the tokens, written with shifts ---- */

typedef struct {
    unsigned char *p;
    size_t n;
} bytes;

static void put_le(unsigned char *p, uint64_t v, size_t size) {
    for (size_t i = 0; i < size; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static bytes encode(uint32_t magic, uint32_t version, uint32_t header_count, const uint32_t *tok,
                    size_t count, size_t width) {
    bytes b;
    b.n = 1024 + count * width;
    b.p = calloc(1, b.n);
    put_le(b.p, magic, 4);
    put_le(b.p + 4, version, 4);
    put_le(b.p + 8, header_count, 4);
    for (size_t i = 0; i < count; i++) put_le(b.p + 1024 + i * width, tok[i], width);
    return b;
}

static void write_file(const char *path, const unsigned char *p, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static bytes read_file(const char *path) {
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

/* Token i of the test files: distinct for i < 65521 (7919 is invertible mod the prime 65521),
 * so a window's position can be recovered from its first token. */
static uint32_t distinct_token(size_t i) { return (uint32_t)((i * 7919u) % 65521u); }

static uint32_t *distinct_tokens(size_t count) {
    uint32_t *t = malloc(count * sizeof *t);
    for (size_t i = 0; i < count; i++) t[i] = distinct_token(i);
    return t;
}

static tsr_tokens *load_tokens(fixture *f, const uint32_t *tok, size_t count, const char *name) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", f->dir, name);
    assert_int_equal(tsr_tokens_save(f->ctx, path, tok, count), TSR_OK);
    tsr_tokens *t = NULL;
    assert_int_equal(tsr_tokens_load(f->ctx, path, &t), TSR_OK);
    return t;
}

/* ---- files ---- */

static void check_round_trip(fixture *f, const uint32_t *tok, size_t count, int width) {
    char path[128];
    snprintf(path, sizeof path, "%s/rt.bin", f->dir);
    assert_int_equal(tsr_tokens_save(f->ctx, path, tok, count), TSR_OK);
    bytes want = width == 2 ? encode(20240520, 1, (uint32_t)count, tok, count, 2)
                            : encode(20240801, 7, (uint32_t)count, tok, count, 4);
    bytes got = read_file(path);
    assert_int_equal(got.n, want.n);
    assert_memory_equal(got.p, want.p, want.n);
    tsr_tokens *t = NULL, *m = NULL;
    assert_int_equal(tsr_tokens_load(f->ctx, path, &t), TSR_OK);
    assert_int_equal(tsr_tokens_load_mem(f->ctx, "mem", want.p, want.n, &m), TSR_OK);
    assert_int_equal(tsr_tokens_count(t), count);
    assert_int_equal(tsr_tokens_width(t), width);
    assert_string_equal(tsr_tokens_name(t), path);
    assert_int_equal(tsr_tokens_count(m), count);
    for (size_t i = 0; i < count; i++) {
        assert_int_equal(tsr_tokens_at(t, i), tok[i]);
        assert_int_equal(tsr_tokens_at(m, i), tok[i]);
    }
    tsr_tokens_free(t);
    tsr_tokens_free(m);
    free(got.p);
    free(want.p);
    /* no temp file is left beside it */
    DIR *d = opendir(f->dir);
    struct dirent *e;
    while ((e = readdir(d))) assert_null(strstr(e->d_name, ".tmp"));
    closedir(d);
}

static void test_round_trip(void **state) {
    fixture *f = *state;
    size_t count = 70000;
    uint32_t *tok = malloc(count * sizeof *tok);
    for (size_t i = 0; i < count; i++) tok[i] = (uint32_t)(i * 2654435761u) & 0xFFFF;
    tok[5] = 0;
    tok[6] = 65535;
    check_round_trip(f, tok, count, 2); /* more than one write buffer */
    tok[69999] = 65536;                 /* one id past uint16: the uint32 layout */
    tok[3] = 0xFFFFFFFFu;
    check_round_trip(f, tok, count, 4);
    check_round_trip(f, tok, 0, 2); /* an empty file is valid */
    check_round_trip(f, tok, 1, 2);
    free(tok);
    /* NULL handles are accepted */
    tsr_tokens_free(NULL);
    tsr_tokens_sampler_free(NULL);
}

/* Loads bytes through a file and from memory; both must fail with `want` and name the file. */
static void expect_refused(fixture *f, const bytes *b, tsr_status want, const char *detail) {
    char path[128];
    snprintf(path, sizeof path, "%s/bad.bin", f->dir);
    write_file(path, b->p, b->n);
    tsr_tokens *t = (tsr_tokens *)0x1;
    assert_int_equal(tsr_tokens_load(f->ctx, path, &t), want);
    assert_null(t);
    const char *err = tsr_context_last_error(f->ctx);
    if (strncmp(err, path, strlen(path)) != 0 || (detail && !strstr(err, detail)))
        fail_msg("error '%s' should name %s and say '%s'", err, path, detail ? detail : "");
    t = (tsr_tokens *)0x1;
    assert_int_equal(tsr_tokens_load_mem(f->ctx, "mem.bin", b->p, b->n, &t), want);
    assert_null(t);
    assert_int_equal(strncmp(tsr_context_last_error(f->ctx), "mem.bin: ", 9), 0);
}

static void test_header_corruptions(void **state) {
    fixture *f = *state;
    size_t count = 37;
    uint32_t *tok = distinct_tokens(count);
    bytes b;
    b = encode(20240521, 1, 37, tok, count, 2);
    expect_refused(f, &b, TSR_ERR_CORRUPT, "bad magic 20240521");
    free(b.p);
    b = encode(0x0000801, 1, 37, tok, count, 2); /* an IDX file's start */
    expect_refused(f, &b, TSR_ERR_CORRUPT, "bad magic");
    free(b.p);
    b = encode(20240520, 2, 37, tok, count, 2);
    expect_refused(f, &b, TSR_ERR_CORRUPT, "version 2 of magic 20240520 is not supported");
    free(b.p);
    b = encode(20240801, 1, 37, tok, count, 4);
    expect_refused(f, &b, TSR_ERR_CORRUPT, "version 1 of magic 20240801");
    free(b.p);
    b = encode(20240520, 1, 0xFFFFFFFFu, tok, count, 2);
    expect_refused(f, &b, TSR_ERR_CORRUPT, "negative token count -1");
    free(b.p);
    b = encode(20240520, 1, 0x80000000u, tok, count, 2);
    expect_refused(f, &b, TSR_ERR_CORRUPT, "negative token count");
    free(b.p);
    /* the header says more tokens than the file holds; then fewer */
    b = encode(20240520, 1, 38, tok, count, 2);
    expect_refused(f, &b, TSR_ERR_TRUNCATED, "the header says 38 tokens (1100 bytes), the file has 1098");
    free(b.p);
    b = encode(20240520, 1, 36, tok, count, 2);
    expect_refused(f, &b, TSR_ERR_CORRUPT, "2 trailing bytes after the 36 tokens");
    free(b.p);
    /* a uint32 file whose header claims the uint16 layout has trailing bytes */
    b = encode(20240520, 1, 37, tok, count, 4);
    expect_refused(f, &b, TSR_ERR_CORRUPT, "74 trailing bytes");
    free(b.p);
    /* a trailing odd byte */
    b = encode(20240520, 1, 37, tok, count, 2);
    b.p = realloc(b.p, b.n + 1);
    b.p[b.n++] = 7;
    expect_refused(f, &b, TSR_ERR_CORRUPT, "1 trailing bytes");
    /* truncated at every length, the header included */
    bytes cut = {b.p, 0};
    for (cut.n = 0; cut.n < b.n - 1; cut.n++)
        expect_refused(f, &cut, TSR_ERR_TRUNCATED, "truncated: ");
    free(b.p);
    free(tok);

    /* a missing file, a folder */
    char path[128];
    snprintf(path, sizeof path, "%s/none.bin", f->dir);
    tsr_tokens *t = (tsr_tokens *)0x1;
    assert_int_equal(tsr_tokens_load(f->ctx, path, &t), TSR_ERR_NOT_FOUND);
    assert_null(t);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "none.bin: cannot open"));
    assert_int_equal(tsr_tokens_load(f->ctx, f->dir, &t), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "not a regular file"));
    assert_int_equal(tsr_tokens_load(f->ctx, "", &t), TSR_ERR_INVALID_ARG);
}

static void test_vocabulary(void **state) {
    fixture *f = *state;
    size_t count = 100;
    uint32_t tok[100];
    for (size_t i = 0; i < count; i++) tok[i] = (uint32_t)(i * 37 % 256);
    tok[17] = 300;
    tok[60] = 256;
    tsr_tokens *t = load_tokens(f, tok, count, "val.bin");
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 256), TSR_ERR_MISMATCH);
    char want[256];
    snprintf(want, sizeof want,
             "%s/val.bin: token 300 at position 17 is outside the vocabulary of 256 (ids 0..255)",
             f->dir);
    assert_string_equal(tsr_context_last_error(f->ctx), want);
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 300), TSR_ERR_MISMATCH);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "token 300 at position 17"));
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 301), TSR_OK);
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 0), TSR_ERR_INVALID_ARG);
    tsr_tokens_free(t);
    tok[17] = 5;
    t = load_tokens(f, tok, count, "val.bin");
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 256), TSR_ERR_MISMATCH);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "token 256 at position 60"));
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 257), TSR_OK);
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 50257), TSR_OK);
    tsr_tokens_free(t);
    /* the uint32 layout: an id past GPT-2's vocabulary */
    tok[99] = 100000;
    t = load_tokens(f, tok, count, "big.bin");
    assert_int_equal(tsr_tokens_width(t), 4);
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 50257), TSR_ERR_MISMATCH);
    assert_non_null(strstr(tsr_context_last_error(f->ctx),
                           "token 100000 at position 99 is outside the vocabulary of 50257"));
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 256), TSR_ERR_MISMATCH);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "token 256 at position 60"));
    assert_int_equal(tsr_tokens_check_vocab(f->ctx, t, 100001), TSR_OK);
    tsr_tokens_free(t);
}

static void test_save_errors(void **state) {
    fixture *f = *state;
    uint32_t tok[4] = {1, 2, 3, 4};
    char path[128];
    snprintf(path, sizeof path, "%s/no/such/folder/x.bin", f->dir);
    assert_int_equal(tsr_tokens_save(f->ctx, path, tok, 4), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "x.bin: cannot create temp file"));
    assert_int_equal(tsr_tokens_save(f->ctx, "", tok, 4), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_tokens_save(f->ctx, path, NULL, 4), TSR_ERR_INVALID_ARG);
    snprintf(path, sizeof path, "%s/huge.bin", f->dir);
    assert_int_equal(tsr_tokens_save(f->ctx, path, tok, (size_t)1 << 31), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "2147483648 tokens, more than"));
    /* a folder in the way of the rename: the error names the step, nothing is left behind */
    snprintf(path, sizeof path, "%s/dir.bin", f->dir);
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(tsr_tokens_save(f->ctx, path, tok, 4), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "rename of temp file"));
    DIR *d = opendir(f->dir);
    struct dirent *e;
    while ((e = readdir(d))) assert_null(strstr(e->d_name, ".tmp"));
    closedir(d);
    rmdir(path);
}

/* ---- samplers ---- */

/* Position of token value v in the distinct_token sequence (v < 65521). */
static size_t position_of(uint32_t v) {
    static int32_t *inverse;
    if (!inverse) {
        inverse = malloc(65521 * sizeof *inverse);
        for (size_t i = 0; i < 65521; i++) inverse[distinct_token(i)] = (int32_t)i;
    }
    return (size_t)inverse[v];
}

/* Checks a row is the window of context + 1 tokens at some start; returns the start. */
static size_t window_start(const int32_t *in, const int32_t *tg, size_t T, size_t count) {
    size_t s = position_of((uint32_t)in[0]);
    assert_true(s + T < count);
    for (size_t i = 0; i < T; i++) {
        assert_int_equal(in[i], (int32_t)distinct_token(s + i));
        assert_int_equal(tg[i], (int32_t)distinct_token(s + i + 1));
    }
    return s;
}

static tsr_tokens_sampler *sampler(fixture *f, const tsr_tokens *t, size_t T, size_t B,
                                   uint64_t seed, int rank, int nranks, tsr_tokens_order order) {
    tsr_tokens_sampler_options o = {T, B, seed, rank, nranks, order};
    tsr_tokens_sampler *s = NULL;
    assert_int_equal(tsr_tokens_sampler_create(f->ctx, t, &o, &s), TSR_OK);
    return s;
}

static void test_random_windows(void **state) {
    fixture *f = *state;
    const size_t count = 1000, T = 13, B = 5, N = count - T;
    uint32_t *tok = distinct_tokens(count);
    tsr_tokens *t = load_tokens(f, tok, count, "train.bin");
    tsr_tokens_sampler *s = sampler(f, t, T, B, 42, 0, 1, TSR_TOKENS_RANDOM);
    int32_t in[5 * 13], tg[5 * 13];
    size_t *hits = calloc(N, sizeof *hits);
    const size_t steps = 6000;
    for (size_t k = 0; k < steps; k++) {
        size_t used = 0;
        assert_int_equal(tsr_tokens_sampler_next(s, in, tg, &used), TSR_OK);
        assert_int_equal(used, B * T);
        /* the documented stream: xoshiro256** seeded per batch, rejection-uniform starts */
        tsr_rng r;
        tsr_rng_seed(&r, tsr_tokens_step_seed(42, k));
        for (size_t b = 0; b < B; b++) {
            size_t start = window_start(in + b * T, tg + b * T, T, count);
            uint64_t x, threshold = (0 - (uint64_t)N) % N;
            do x = tsr_rng_next(&r);
            while (x < threshold);
            assert_int_equal(start, (size_t)(x % N));
            hits[start]++;
        }
    }
    assert_int_equal(tsr_tokens_sampler_position(s), steps);
    /* every start drawn, none far from the mean of 30 (chi-square over 987 starts) */
    double chi2 = 0, mean = (double)(steps * B) / (double)N;
    for (size_t i = 0; i < N; i++) {
        assert_true(hits[i] > 0);
        chi2 += (hits[i] - mean) * (hits[i] - mean) / mean;
    }
    assert_true(chi2 < N + 5 * sqrt(2.0 * N)); /* 986 degrees of freedom, 5 sigma */
    free(hits);
    tsr_tokens_sampler_free(s);

    /* the smallest file: one window, always start 0 */
    s = sampler(f, t, count - 1, 1, 7, 0, 1, TSR_TOKENS_RANDOM);
    int32_t *in1 = malloc(count * sizeof *in1), *tg1 = malloc(count * sizeof *tg1);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(tsr_tokens_sampler_next(s, in1, tg1, NULL), TSR_OK);
        assert_int_equal(window_start(in1, tg1, count - 1, count), 0);
    }
    free(in1);
    free(tg1);
    tsr_tokens_sampler_free(s);
    tsr_tokens_free(t);
    free(tok);
}

static void test_determinism_and_resume(void **state) {
    fixture *f = *state;
    const size_t count = 5000, T = 32, B = 4;
    uint32_t *tok = distinct_tokens(count);
    tsr_tokens *t = load_tokens(f, tok, count, "train.bin");
    tsr_tokens_sampler *a = sampler(f, t, T, B, 1234, 0, 1, TSR_TOKENS_RANDOM);
    tsr_tokens_sampler *b = sampler(f, t, T, B, 1234, 0, 1, TSR_TOKENS_RANDOM);
    tsr_tokens_sampler *c = sampler(f, t, T, B, 1235, 0, 1, TSR_TOKENS_RANDOM);
    int32_t ia[128], ta[128], ib[128], tb[128], ic[128], tc[128];
    int32_t saved_in[20][128];
    int differ = 0;
    for (int k = 0; k < 20; k++) {
        assert_int_equal(tsr_tokens_sampler_next(a, ia, ta, NULL), TSR_OK);
        assert_int_equal(tsr_tokens_sampler_next(b, ib, tb, NULL), TSR_OK);
        assert_int_equal(tsr_tokens_sampler_next(c, ic, tc, NULL), TSR_OK);
        assert_memory_equal(ia, ib, sizeof ia);
        assert_memory_equal(ta, tb, sizeof ta);
        differ += memcmp(ia, ic, sizeof ia) != 0;
        memcpy(saved_in[k], ia, sizeof ia);
    }
    assert_int_equal(differ, 20); /* a neighbouring seed gives another stream */
    /* resume: a new sampler sought to a position continues the same stream */
    tsr_tokens_sampler *r = sampler(f, t, T, B, 1234, 0, 1, TSR_TOKENS_RANDOM);
    assert_int_equal(tsr_tokens_sampler_seek(r, 7), TSR_OK);
    for (int k = 7; k < 20; k++) {
        assert_int_equal(tsr_tokens_sampler_next(r, ib, tb, NULL), TSR_OK);
        assert_memory_equal(ib, saved_in[k], sizeof ib);
    }
    assert_int_equal(tsr_tokens_sampler_position(r), 20);
    assert_int_equal(tsr_tokens_sampler_seek(r, (uint64_t)1 << 40), TSR_OK); /* the stream never ends */
    assert_int_equal(tsr_tokens_sampler_next(r, ib, tb, NULL), TSR_OK);
    window_start(ib, tb, T, count);
    tsr_tokens_sampler_free(a);
    tsr_tokens_sampler_free(b);
    tsr_tokens_sampler_free(c);
    tsr_tokens_sampler_free(r);
    tsr_tokens_free(t);
    free(tok);
}

static void test_shards(void **state) {
    fixture *f = *state;
    const size_t count = 3000, T = 9, B = 3;
    uint32_t *tok = distinct_tokens(count);
    tsr_tokens *t = load_tokens(f, tok, count, "train.bin");
    for (int n = 1; n <= 4; n++) {
        tsr_tokens_sampler *global = sampler(f, t, T, B * (size_t)n, 99, 0, 1, TSR_TOKENS_RANDOM);
        tsr_tokens_sampler *rank[4];
        for (int r = 0; r < n; r++) rank[r] = sampler(f, t, T, B, 99, r, n, TSR_TOKENS_RANDOM);
        int32_t gi[4 * 3 * 9], gt[4 * 3 * 9], ri[3 * 9], rt[3 * 9];
        for (int k = 0; k < 50; k++) {
            assert_int_equal(tsr_tokens_sampler_next(global, gi, gt, NULL), TSR_OK);
            for (int r = 0; r < n; r++) {
                size_t used = 0;
                assert_int_equal(tsr_tokens_sampler_next(rank[r], ri, rt, &used), TSR_OK);
                assert_int_equal(used, B * T); /* the same count on every rank */
                /* rank r's rows are draws r*B .. r*B+B-1 of the global stream: disjoint
                 * slices that together make the global batch */
                assert_memory_equal(ri, gi + (size_t)r * B * T, sizeof ri);
                assert_memory_equal(rt, gt + (size_t)r * B * T, sizeof rt);
                for (size_t b = 0; b < B; b++) window_start(ri + b * T, rt + b * T, T, count);
            }
        }
        for (int r = 0; r < n; r++) tsr_tokens_sampler_free(rank[r]);
        tsr_tokens_sampler_free(global);
    }
    tsr_tokens_free(t);
    free(tok);
}

/* Every target position 1..count-1 exactly once over all ranks; padding where promised. */
static void check_validation_pass(fixture *f, const tsr_tokens *t, size_t count, size_t T,
                                  size_t B, int n) {
    unsigned char *seen = calloc(count, 1);
    int32_t *in = malloc(B * T * sizeof *in), *tg = malloc(B * T * sizeof *tg);
    size_t windows = (count - 1 + T - 1) / T;
    uint64_t want_batches = (windows + B * (size_t)n - 1) / (B * (size_t)n);
    size_t total = 0;
    for (int r = 0; r < n; r++) {
        tsr_tokens_sampler *s = sampler(f, t, T, B, 0, r, n, TSR_TOKENS_SEQUENTIAL);
        assert_int_equal(tsr_tokens_sampler_batches(s), want_batches);
        for (int pass = 0; pass < 2; pass++) { /* a second pass after seeking to 0 */
            for (uint64_t k = 0; k < want_batches; k++) {
                size_t used = 0, real = 0;
                assert_int_equal(tsr_tokens_sampler_next(s, in, tg, &used), TSR_OK);
                for (size_t b = 0; b < B; b++) {
                    size_t w = (size_t)((k * (uint64_t)n + (uint64_t)r) * B + b);
                    for (size_t i = 0; i < T; i++) {
                        size_t pos = w * T + i; /* the input position of this slot */
                        if (pos + 1 < count) {
                            assert_int_equal(in[b * T + i], (int32_t)distinct_token(pos));
                            assert_int_equal(tg[b * T + i], (int32_t)distinct_token(pos + 1));
                            if (pass == 0) seen[pos + 1]++;
                            real++;
                        } else {
                            assert_int_equal(in[b * T + i], 0);
                            assert_int_equal(tg[b * T + i], -1);
                        }
                    }
                }
                assert_int_equal(used, real);
                if (pass == 0) total += used;
            }
            assert_int_equal(tsr_tokens_sampler_next(s, in, tg, NULL), TSR_ERR_STATE);
            assert_non_null(strstr(tsr_context_last_error(f->ctx), "validation pass is over"));
            assert_int_equal(tsr_tokens_sampler_seek(s, 0), TSR_OK);
        }
        assert_int_equal(tsr_tokens_sampler_seek(s, want_batches + 1), TSR_ERR_INVALID_ARG);
        tsr_tokens_sampler_free(s);
    }
    assert_int_equal(total, count - 1);
    assert_int_equal(seen[0], 0);
    for (size_t i = 1; i < count; i++) assert_int_equal(seen[i], 1);
    free(seen);
    free(in);
    free(tg);
}

static void test_validation_pass(void **state) {
    fixture *f = *state;
    const size_t count = 1001;
    uint32_t *tok = distinct_tokens(count);
    tsr_tokens *t = load_tokens(f, tok, count, "val.bin");
    for (int n = 1; n <= 4; n++) {
        check_validation_pass(f, t, count, 7, 3, n);   /* a short last window */
        check_validation_pass(f, t, count, 10, 4, n);  /* 1000 targets: whole windows */
        check_validation_pass(f, t, count, 1000, 1, n); /* one window, the rest padding */
        check_validation_pass(f, t, count, 1, 16, n);
    }
    tsr_tokens_free(t);
    free(tok);
}

static void test_sampler_errors(void **state) {
    fixture *f = *state;
    uint32_t tok[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    tsr_tokens *t = load_tokens(f, tok, 10, "tiny.bin");
    tsr_tokens_sampler_options o = {10, 1, 0, 0, 1, TSR_TOKENS_RANDOM};
    tsr_tokens_sampler *s = (tsr_tokens_sampler *)0x1;
    assert_int_equal(tsr_tokens_sampler_create(f->ctx, t, &o, &s), TSR_ERR_SHAPE);
    assert_null(s);
    assert_non_null(strstr(tsr_context_last_error(f->ctx),
                           "tiny.bin: 10 tokens, fewer than one window of context 10 + 1"));
    o.order = TSR_TOKENS_SEQUENTIAL;
    assert_int_equal(tsr_tokens_sampler_create(f->ctx, t, &o, &s), TSR_ERR_SHAPE);
    o.context = 9;
    assert_int_equal(tsr_tokens_sampler_create(f->ctx, t, &o, &s), TSR_OK);
    tsr_tokens_sampler_free(s);
    o.context = 0;
    assert_int_equal(tsr_tokens_sampler_create(f->ctx, t, &o, &s), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "context is 0"));
    o.context = 4;
    o.batch = 0;
    assert_int_equal(tsr_tokens_sampler_create(f->ctx, t, &o, &s), TSR_ERR_INVALID_ARG);
    o.batch = 2;
    o.rank = 2;
    o.nranks = 2;
    assert_int_equal(tsr_tokens_sampler_create(f->ctx, t, &o, &s), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "rank 2 of 2 ranks"));
    o.rank = 0;
    o.order = (tsr_tokens_order)5;
    assert_int_equal(tsr_tokens_sampler_create(f->ctx, t, &o, &s), TSR_ERR_INVALID_ARG);
    o.order = TSR_TOKENS_RANDOM;
    o.batch = SIZE_MAX / 2;
    assert_int_equal(tsr_tokens_sampler_create(f->ctx, t, &o, &s), TSR_ERR_SHAPE);
    tsr_tokens_free(t);
}

/* ---- data folders ---- */

static void touch(const char *dir, const char *name) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    write_file(path, (const unsigned char *)"x", 1);
}

static void test_probe_dir(void **state) {
    fixture *f = *state;
    char d[128], path[256];
    tsr_data_format fmt = 0;
    snprintf(d, sizeof d, "%s/data", f->dir);
    assert_int_equal(tsr_tokens_probe_dir(f->ctx, d, &fmt), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "not a folder"));
    assert_int_equal(mkdir(d, 0755), 0);
    assert_int_equal(tsr_tokens_probe_dir(f->ctx, d, &fmt), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "neither token files"));
    touch(d, "train.bin");
    assert_int_equal(tsr_tokens_probe_dir(f->ctx, d, &fmt), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "has train.bin but no val.bin"));
    touch(d, "val.bin");
    assert_int_equal(tsr_tokens_probe_dir(f->ctx, d, &fmt), TSR_OK);
    assert_int_equal(fmt, TSR_DATA_FORMAT_TOKENS);
    touch(d, "train-images-idx3-ubyte.gz");
    assert_int_equal(tsr_tokens_probe_dir(f->ctx, d, &fmt), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "holds both"));
    snprintf(path, sizeof path, "%s/train.bin", d);
    unlink(path);
    assert_int_equal(tsr_tokens_probe_dir(f->ctx, d, &fmt), TSR_ERR_INVALID_ARG);
    snprintf(path, sizeof path, "%s/val.bin", d);
    unlink(path);
    fmt = 0;
    assert_int_equal(tsr_tokens_probe_dir(f->ctx, d, &fmt), TSR_OK);
    assert_int_equal(fmt, TSR_DATA_FORMAT_IDX);
    assert_int_equal(tsr_tokens_probe_dir(f->ctx, d, NULL), TSR_ERR_INVALID_ARG);
    /* a plain file is not a folder */
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", d);
    assert_int_equal(tsr_tokens_probe_dir(f->ctx, path, &fmt), TSR_ERR_NOT_FOUND);
}

/* ---- allocator failures: each allocation of load, load_mem, save and create fails once ---- */

typedef struct {
    const char *path;
    bytes file;
    const uint32_t *tok;
    size_t count;
    const tsr_tokens *loaded;
} alloc_case;

/* Runs operation `what`, frees what it made; *made says whether it made something. */
static tsr_status run_op(tsr_context *ctx, int what, const alloc_case *c, int *made) {
    tsr_tokens *t = (tsr_tokens *)0x1;
    tsr_tokens_sampler *s = (tsr_tokens_sampler *)0x1;
    tsr_tokens_sampler_options so = {16, 2, 1, 0, 1, TSR_TOKENS_RANDOM};
    tsr_status st;
    *made = 0;
    switch (what) {
    case 0: st = tsr_tokens_load(ctx, c->path, &t); break;
    case 1: st = tsr_tokens_load_mem(ctx, "mem", c->file.p, c->file.n, &t); break;
    case 2: return tsr_tokens_save(ctx, c->path, c->tok, c->count);
    default:
        st = tsr_tokens_sampler_create(ctx, c->loaded, &so, &s);
        *made = s != NULL;
        tsr_tokens_sampler_free(s);
        return st;
    }
    *made = t != NULL;
    tsr_tokens_free(t);
    return st;
}

static void test_allocator_failures(void **state) {
    fixture *f = *state;
    size_t count = 3000;
    uint32_t *tok = distinct_tokens(count);
    char path[128];
    snprintf(path, sizeof path, "%s/alloc.bin", f->dir);
    alloc_case c = {path, encode(20240520, 1, (uint32_t)count, tok, count, 2), tok, count, NULL};
    write_file(path, c.file.p, c.file.n);
    tsr_test_alloc counter;
    tsr_test_alloc_init(&counter, 0);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    o.allocator = &counter.allocator;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    tsr_tokens *loaded;
    assert_int_equal(tsr_tokens_load_mem(ctx, "mem", c.file.p, c.file.n, &loaded), TSR_OK);
    c.loaded = loaded;
    for (int what = 0; what < 4; what++) {
        int made;
        long base = counter.calls;
        assert_int_equal(run_op(ctx, what, &c, &made), TSR_OK);
        long needed = counter.calls - base;
        assert_true(needed >= 1);
        for (long k = 1; k <= needed; k++) {
            counter.calls = base;
            counter.fail_at = base + k;
            assert_int_equal(run_op(ctx, what, &c, &made), TSR_ERR_NO_MEMORY);
            assert_int_equal(made, 0);
        }
        counter.fail_at = 0;
    }
    tsr_tokens_free(loaded);
    tsr_context_free(ctx);
    assert_int_equal(counter.live, 0);
    free(c.file.p);
    free(tok);
}

/* The fuzzing seed corpus holds valid files only (run from the repository root). */
static void test_fuzz_seeds(void **state) {
    fixture *f = *state;
    const char *dir = "tests/fuzz/corpus/tokens";
    DIR *d = opendir(dir);
    if (!d) TSR_TEST_SKIP("missing the fuzz corpus %s (run from the repository root)", dir);
    struct dirent *e;
    int loaded = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        tsr_tokens *t = NULL;
        tsr_status st = tsr_tokens_load(f->ctx, path, &t);
        if (st != TSR_OK) fail_msg("%s: %s", path, tsr_context_last_error(f->ctx));
        tsr_tokens_free(t);
        loaded++;
    }
    closedir(d);
    assert_true(loaded >= 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_header_corruptions),
        cmocka_unit_test(test_vocabulary),
        cmocka_unit_test(test_save_errors),
        cmocka_unit_test(test_random_windows),
        cmocka_unit_test(test_determinism_and_resume),
        cmocka_unit_test(test_shards),
        cmocka_unit_test(test_validation_pass),
        cmocka_unit_test(test_sampler_errors),
        cmocka_unit_test(test_probe_dir),
        cmocka_unit_test(test_allocator_failures),
        cmocka_unit_test(test_fuzz_seeds),
    };
    return cmocka_run_group_tests(tests, tsr_test_dir_setup, tsr_test_dir_teardown);
}
