/* The host optimizer kernels of every instruction set (SSE2/AVX2/AVX-512 on x86-64) against
 * the portable loop, BITWISE: odd lengths around each vector width, unaligned starts, three
 * steps so that the state carries over, SGD (plain, weight decay, momentum, Nesterov) and
 * Adam/AdamW. A variant the CPU lacks is reported as skipped. Also: the host backend's
 * threaded steps give the portable kernel's bits on a length that splits across threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backends/host/host.h"
#include "lib/core/internal.h"
#include "support/test_util.h"

#define OFFSETS 4 /* starts 0..3 floats past a 64-byte boundary */
#define STEPS 3

static const size_t lengths[] = {0, 1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 47, 63, 65, 255, 1021, 4099};

static const tsr_sgd_params sgd_cases[] = {
    {0.1f, 0.0f, 0.0f, 0, 0.0f},    /* plain */
    {0.05f, 0.0f, 0.01f, 0, 0.37f}, /* plain + weight decay, gradient scaled */
    {0.1f, 0.9f, 0.0f, 0, 0.0f},    /* momentum */
    {0.1f, 0.9f, 5e-4f, 0, 0.81f},  /* momentum + weight decay, gradient scaled */
    {0.1f, 0.9f, 5e-4f, 1, 0.0f},   /* nesterov + weight decay */
    {0.01f, 0.5f, 0.1f, 1, 0.6f},
};

/* Adam, L2 Adam and AdamW; the bias corrections are set per step. */
static const tsr_adam_params adam_cases[] = {
    {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0, 1, 1, 0.0f},
    {1e-2f, 0.9f, 0.999f, 1e-8f, 1e-2f, 0, 1, 1, 0.45f}, /* gradient scaled */
    {1e-3f, 0.8f, 0.95f, 1e-6f, 0.1f, 1, 1, 1, 0.0f},
    {1e-3f, 0.8f, 0.95f, 1e-6f, 0.1f, 1, 1, 1, 0.7f},
};

static uint64_t rng_state;
static float uniform(float lo, float hi) {
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (float)((rng_state >> 40) / 16777216.0);
}

/* Values over several magnitudes, with exact zeros (v = 0 makes eps decide Adam's step). */
static void fill(float *x, size_t n, float scale, int nonneg) {
    for (size_t i = 0; i < n; i++) {
        float m = uniform(0, 1) < 0.1f ? 0.0f : scale * powf(10.0f, uniform(-3, 0));
        x[i] = nonneg || uniform(0, 1) < 0.5f ? m : -m;
    }
}

typedef struct state {
    float *w, *g, *m, *v; /* 64-byte aligned, OFFSETS + max length each */
} state;

static float *aligned_floats(size_t n) {
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    assert_non_null(p);
    return p;
}

static void state_init(state *s, size_t n, uint64_t seed) {
    rng_state = seed;
    s->w = aligned_floats(n), s->g = aligned_floats(n), s->m = aligned_floats(n), s->v = aligned_floats(n);
    fill(s->w, n, 1.0f, 0);
    fill(s->g, n, 1.0f, 0);
    fill(s->m, n, 0.1f, 0);
    fill(s->v, n, 0.01f, 1);
}

static void state_free(state *s) {
    free(s->w), free(s->g), free(s->m), free(s->v);
}

static void expect_same(const float *got, const float *want, size_t n, const char *what,
                        const char *variant, size_t len, size_t off, size_t c) {
    if (memcmp(got, want, n * sizeof *got) == 0) return;
    for (size_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0)
            fail_msg("%s: %s differs from portable at [%zu] (%a vs %a), case %zu, length %zu, offset %zu",
                     variant, what, i, (double)got[i], (double)want[i], c, len, off);
}

static void adam_step_params(tsr_adam_params *p, int t) {
    p->bias_correction1 = 1.0f - powf(p->beta1, (float)t);
    p->bias_correction2 = 1.0f - powf(p->beta2, (float)t);
}

static void run_variant(const tsr_host_optim_variant *k, int adam) {
    const tsr_host_optim_variant *all;
    size_t count = tsr_host_optim_variants(&all);
    const tsr_host_optim_variant *ref = &all[count - 1];
    assert_string_equal(ref->name, "portable");
    size_t cases = adam ? TSR_ARRAY_SIZE(adam_cases) : TSR_ARRAY_SIZE(sgd_cases);
    for (size_t c = 0; c < cases; c++)
        for (size_t li = 0; li < TSR_ARRAY_SIZE(lengths); li++)
            for (size_t off = 0; off < OFFSETS; off++) {
                size_t n = lengths[li], tot = n + OFFSETS;
                state a, b;
                state_init(&a, tot, 1000 * c + 10 * li + off);
                state_init(&b, tot, 1000 * c + 10 * li + off);
                for (int t = 1; t <= STEPS; t++) {
                    if (adam) {
                        tsr_adam_params p = adam_cases[c];
                        adam_step_params(&p, t);
                        k->adam(n, &p, a.w + off, a.g + off, a.m + off, a.v + off);
                        ref->adam(n, &p, b.w + off, b.g + off, b.m + off, b.v + off);
                    } else {
                        const tsr_sgd_params *p = &sgd_cases[c];
                        k->sgd(n, p, a.w + off, a.g + off, p->momentum != 0.0f ? a.v + off : NULL);
                        ref->sgd(n, p, b.w + off, b.g + off, p->momentum != 0.0f ? b.v + off : NULL);
                    }
                }
                /* whole buffers: nothing outside [off, off + n) may change either */
                expect_same(a.w, b.w, tot, "w", k->name, n, off, c);
                expect_same(a.m, b.m, tot, "m", k->name, n, off, c);
                expect_same(a.v, b.v, tot, "v", k->name, n, off, c);
                /* and the steps did change the weights (b is fresh from here on) */
                if (n >= 16) {
                    state_free(&b);
                    state_init(&b, tot, 1000 * c + 10 * li + off);
                    if (memcmp(a.w + off, b.w + off, n * sizeof(float)) == 0)
                        fail_msg("%s: no weight changed (case %zu, length %zu)", k->name, c, n);
                }
                state_free(&a);
                state_free(&b);
            }
}

static void test_variant(void **st) {
    const tsr_host_optim_variant *k = *st;
    if (k->supported && !k->supported()) {
        print_message("skipped: this CPU lacks %s\n", k->name);
        skip();
    }
    run_variant(k, 0);
    run_variant(k, 1);
}

/* The backend (2 threads, a length over two threads' grain, an unaligned start) uses the
 * best variant and gives the portable kernel's bits. */
static void test_backend_steps(void **st) {
    (void)st;
    const tsr_host_optim_variant *all;
    size_t count = tsr_host_optim_variants(&all);
    const tsr_host_optim_variant *best = tsr_host_optim_best(), *ref = &all[count - 1];
    assert_true(!best->supported || best->supported());
    print_message("host optimizer kernels: %s\n", best->name);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    o.host_threads = 2;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    tsr_backend *be = NULL;
    assert_int_equal(tsr_backend_host_create(ctx, &be), TSR_OK);
    const size_t n = 100003, off = 3, tot = n + off;
    for (int adam = 0; adam < 2; adam++) {
        state s, r;
        state_init(&s, tot, 77 + adam);
        state_init(&r, tot, 77 + adam);
        tsr_buf *bw = NULL, *bg = NULL, *bm = NULL, *bv = NULL;
        assert_int_equal(tsr_buf_wrap(be, s.w, tot * 4, &bw), TSR_OK);
        assert_int_equal(tsr_buf_wrap(be, s.g, tot * 4, &bg), TSR_OK);
        assert_int_equal(tsr_buf_wrap(be, s.m, tot * 4, &bm), TSR_OK);
        assert_int_equal(tsr_buf_wrap(be, s.v, tot * 4, &bv), TSR_OK);
        for (int t = 1; t <= STEPS; t++) {
            if (adam) {
                tsr_adam_params p = adam_cases[2];
                adam_step_params(&p, t);
                assert_int_equal(tsr_op_adam_update(be, n, &p, tsr_ref_at(bw, off), tsr_ref_at(bg, off),
                                                    tsr_ref_at(bm, off), tsr_ref_at(bv, off)),
                                 TSR_OK);
                ref->adam(n, &p, r.w + off, r.g + off, r.m + off, r.v + off);
            } else {
                const tsr_sgd_params *p = &sgd_cases[4];
                assert_int_equal(tsr_op_sgd_update(be, n, p, tsr_ref_at(bw, off), tsr_ref_at(bg, off),
                                                   tsr_ref_at(bv, off)),
                                 TSR_OK);
                ref->sgd(n, p, r.w + off, r.g + off, r.v + off);
            }
        }
        expect_same(s.w, r.w, tot, "backend w", best->name, n, off, 0);
        expect_same(s.m, r.m, tot, "backend m", best->name, n, off, 0);
        expect_same(s.v, r.v, tot, "backend v", best->name, n, off, 0);
        tsr_buf_free(bw), tsr_buf_free(bg), tsr_buf_free(bm), tsr_buf_free(bv);
        state_free(&s);
        state_free(&r);
    }
    tsr_backend_free(be);
    tsr_context_free(ctx);
}

int main(void) {
    const tsr_host_optim_variant *all;
    size_t count = tsr_host_optim_variants(&all);
    struct CMUnitTest tests[8];
    size_t t = 0;
    static char names[8][48];
    for (size_t i = 0; i + 1 < count && t < 7; i++, t++) { /* the last is the reference */
        snprintf(names[t], sizeof names[t], "%s_vs_portable", all[i].name);
        tests[t] = (struct CMUnitTest){names[t], test_variant, NULL, NULL, (void *)&all[i]};
    }
    tests[t++] = (struct CMUnitTest){"backend_steps", test_backend_steps, NULL, NULL, NULL};
    return _cmocka_run_group_tests("optim_simd", tests, t, NULL, NULL);
}
