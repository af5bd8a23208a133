/* The self communicator (every build, no MPI involved), option checks, registered buffers,
 * and the reduction / fp16 kernels of lib/comm against plain-C references. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "backends/backend.h"
#include "lib/comm/comm_internal.h"
#include "support/test_util.h"

static tsr_context *make_ctx(void) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    return ctx;
}

static void test_self_basics(void **state) {
    (void)state;
    tsr_context *ctx = make_ctx();
    tsr_comm *c = NULL;
    assert_int_equal(tsr_comm_self_create(ctx, &c), TSR_OK);
    assert_int_equal(tsr_comm_rank(c), 0);
    assert_int_equal(tsr_comm_size(c), 1);
    assert_int_equal(tsr_comm_local_rank(c), 0);
    assert_int_equal(tsr_comm_local_size(c), 1);
    assert_int_equal(tsr_comm_node_count(c), 1);
    assert_int_equal(tsr_comm_barrier(c), TSR_OK);
    tsr_comm *s = NULL, *n = NULL;
    assert_int_equal(tsr_comm_split(c, 3, 0, &s), TSR_OK);
    assert_int_equal(tsr_comm_size(s), 1);
    assert_int_equal(tsr_comm_split_node(c, &n), TSR_OK);
    assert_int_equal(tsr_comm_size(n), 1);
    tsr_comm *bad = (tsr_comm *)0x1;
    assert_int_equal(tsr_comm_split(c, -2, 0, &bad), TSR_ERR_INVALID_ARG);
    assert_null(bad);
    assert_non_null(strstr(tsr_context_last_error(ctx), "color -2"));
    tsr_comm_free(s);
    tsr_comm_free(n);
    tsr_comm_free(c);
    tsr_comm_free(NULL);
    assert_int_equal(tsr_comm_size(NULL), 0);
    assert_int_equal(tsr_comm_self_create(ctx, NULL), TSR_ERR_INVALID_ARG);
#if !TSR_WITH_MPI
    /* without MPI the "world" is this process */
    assert_int_equal(tsr_comm_init_world(ctx, NULL, NULL, &c), TSR_OK);
    assert_int_equal(tsr_comm_size(c), 1);
    tsr_comm_free(c);
#endif
    tsr_context_free(ctx);
}

/* One rank: sum and average leave the data, weights scale by weight / total. */
static void test_self_allreduce(void **state) {
    (void)state;
    tsr_context *ctx = make_ctx();
    tsr_comm *c;
    assert_int_equal(tsr_comm_self_create(ctx, &c), TSR_OK);
    enum { N = 1000 };
    float x[N], ref[N];
    tsr_test_fill_uniform(ref, N, 5, -3.0f, 3.0f);
    tsr_allreduce_opts o;
    const tsr_allreduce_algo algos[] = {TSR_ALLREDUCE_AUTO, TSR_ALLREDUCE_MPI, TSR_ALLREDUCE_RING,
                                        TSR_ALLREDUCE_RHD, TSR_ALLREDUCE_SHM};
    for (size_t a = 0; a < TSR_ARRAY_SIZE(algos); a++) {
        for (int wire = 0; wire < 2; wire++) {
            for (int mode = 0; mode < 2; mode++) {
                memcpy(x, ref, sizeof x);
                tsr_allreduce_opts_init(&o);
                o.algo = algos[a];
                o.wire = (tsr_comm_wire)wire;
                o.mode = (tsr_reduce_mode)mode;
                assert_int_equal(tsr_comm_allreduce(c, x, N, &o), TSR_OK);
                assert_memory_equal(x, ref, sizeof x);
            }
        }
    }
    /* weighted: weight 3 of a total 12 -> x / 4 exactly */
    memcpy(x, ref, sizeof x);
    tsr_allreduce_opts_init(&o);
    o.mode = TSR_REDUCE_WEIGHTED;
    o.weight = 3.0;
    o.total_weight = 12.0;
    assert_int_equal(tsr_comm_allreduce(c, x, N, &o), TSR_OK);
    for (int i = 0; i < N; i++) assert_true(fabsf(x[i] - ref[i] / 4.0f) <= 1e-6f * fabsf(ref[i]));
    /* total unknown: computed as this rank's weight */
    memcpy(x, ref, sizeof x);
    o.weight = 2.0;
    o.total_weight = 0.0;
    assert_int_equal(tsr_comm_allreduce(c, x, N, &o), TSR_OK);
    assert_memory_equal(x, ref, sizeof x);
    /* length 0, NULL buffer allowed */
    assert_int_equal(tsr_comm_allreduce(c, NULL, 0, NULL), TSR_OK);
    /* non-blocking */
    memcpy(x, ref, sizeof x);
    tsr_comm_request *r = NULL;
    assert_int_equal(tsr_comm_allreduce_start(c, x, N, NULL, &r), TSR_OK);
    int done = 0;
    assert_int_equal(tsr_comm_test(r, &done), TSR_OK);
    assert_int_equal(done, 1);
    assert_int_equal(tsr_comm_wait(r), TSR_OK);
    assert_int_equal(tsr_comm_wait(NULL), TSR_OK);
    assert_memory_equal(x, ref, sizeof x);
    /* ZeRO-1 on one rank: the slice is everything */
    size_t lo = 9, hi = 9;
    tsr_comm_slice(c, N, 0, &lo, &hi);
    assert_int_equal(lo, 0);
    assert_int_equal(hi, N);
    tsr_allreduce_opts_init(&o);
    o.mode = TSR_REDUCE_AVG;
    assert_int_equal(tsr_comm_reduce_scatter(c, x, N, &o), TSR_OK);
    assert_int_equal(tsr_comm_allgather(c, x, N, TSR_ALLREDUCE_AUTO), TSR_OK);
    assert_memory_equal(x, ref, sizeof x);
    tsr_comm_free(c);
    tsr_context_free(ctx);
}

static void expect_bad(tsr_comm *c, tsr_context *ctx, const tsr_allreduce_opts *o,
                       const char *detail) {
    float x[4] = {1, 2, 3, 4};
    assert_int_equal(tsr_comm_allreduce(c, x, 4, o), TSR_ERR_INVALID_ARG);
    if (!strstr(tsr_context_last_error(ctx), detail))
        fail_msg("detail '%s' does not mention '%s'", tsr_context_last_error(ctx), detail);
}

static void test_bad_input(void **state) {
    (void)state;
    tsr_context *ctx = make_ctx();
    tsr_comm *c;
    assert_int_equal(tsr_comm_self_create(ctx, &c), TSR_OK);
    tsr_allreduce_opts o;
    tsr_allreduce_opts_init(&o);
    o.algo = (tsr_allreduce_algo)42;
    expect_bad(c, ctx, &o, "unknown algorithm 42");
    tsr_allreduce_opts_init(&o);
    o.wire = (tsr_comm_wire)7;
    expect_bad(c, ctx, &o, "unknown wire type 7");
    tsr_allreduce_opts_init(&o);
    o.mode = (tsr_reduce_mode)9;
    expect_bad(c, ctx, &o, "unknown reduce mode 9");
    tsr_allreduce_opts_init(&o);
    o.mode = TSR_REDUCE_WEIGHTED;
    o.weight = -1.0;
    expect_bad(c, ctx, &o, "weight -1");
    o.weight = NAN;
    expect_bad(c, ctx, &o, "weight");
    o.weight = 1.0;
    o.total_weight = -5.0;
    expect_bad(c, ctx, &o, "total_weight -5");
    o.weight = 0.0;
    o.total_weight = 0.0;
    expect_bad(c, ctx, &o, "weights sum to 0");
    assert_int_equal(tsr_comm_allreduce(c, NULL, 3, NULL), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "buf is NULL with count 3"));
    assert_int_equal(tsr_comm_allreduce_start(c, NULL, 0, NULL, NULL), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_comm_allreduce(NULL, NULL, 0, NULL), TSR_ERR_INVALID_ARG);
    int d;
    assert_int_equal(tsr_comm_test(NULL, &d), TSR_ERR_INVALID_ARG);

    tsr_allreduce_algo a;
    for (int i = 0; i <= TSR_ALLREDUCE_SHM; i++) {
        const char *name = tsr_allreduce_algo_name((tsr_allreduce_algo)i);
        assert_int_equal(tsr_allreduce_algo_parse(name, &a), TSR_OK);
        assert_int_equal(a, i);
    }
    assert_int_equal(tsr_allreduce_algo_parse("bogus", &a), TSR_ERR_PARSE);
    assert_string_equal(tsr_allreduce_algo_name((tsr_allreduce_algo)99), "?");
    tsr_comm_free(c);
    tsr_context_free(ctx);
}

/* A quiet context that reads the environment, with o.comm.algo = algo. */
static tsr_status env_ctx(tsr_allreduce_algo algo, tsr_context **ctx) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    o.comm.algo = algo;
    return tsr_context_create(ctx, &o);
}

/* The communicator takes its knobs from its context, which read the environment when it was
 * made (lib/core/config.c); a bad value fails there, naming the variable and the value. */
static void test_environment(void **state) {
    (void)state;
    tsr_context *ctx = (tsr_context *)0x1;
    tsr_comm *c = NULL;
    tsr_context_options o;
    char err[256];
    setenv("TSR_ALLREDUCE", "bogus", 1);
    tsr_context_options_init(&o);
    assert_int_equal(tsr_context_options_from_env(&o, err, sizeof err), TSR_ERR_PARSE);
    assert_non_null(strstr(err, "TSR_ALLREDUCE='bogus'"));
    assert_int_equal(env_ctx(TSR_ALLREDUCE_AUTO, &ctx), TSR_ERR_PARSE);
    assert_null(ctx);
    setenv("TSR_ALLREDUCE", "rhd", 1);
    assert_int_equal(env_ctx(TSR_ALLREDUCE_AUTO, &ctx), TSR_OK);
    assert_int_equal(tsr_comm_self_create(ctx, &c), TSR_OK);
    assert_int_equal(tsr_comm_choose_algo(c, 1 << 20), TSR_ALLREDUCE_RHD);
    tsr_comm_free(c);
    tsr_context_free(ctx);
    /* a value set in code wins over the environment */
    assert_int_equal(env_ctx(TSR_ALLREDUCE_RING, &ctx), TSR_OK);
    assert_int_equal(tsr_comm_self_create(ctx, &c), TSR_OK);
    assert_int_equal(tsr_comm_choose_algo(c, 1 << 20), TSR_ALLREDUCE_RING);
    tsr_comm_free(c);
    tsr_context_free(ctx);
    unsetenv("TSR_ALLREDUCE");
    setenv("TSR_SHM_BYTES", "12", 1);
    tsr_context_options_init(&o);
    assert_int_equal(tsr_context_options_from_env(&o, err, sizeof err), TSR_ERR_PARSE);
    assert_non_null(strstr(err, "TSR_SHM_BYTES='12'"));
    setenv("TSR_SHM_BYTES", "4M", 1);
    assert_int_equal(env_ctx(TSR_ALLREDUCE_AUTO, &ctx), TSR_OK);
    assert_int_equal(tsr_comm_self_create(ctx, &c), TSR_OK);
    assert_int_equal(c->shm_bytes, 4u << 20);
    tsr_comm_free(c);
    tsr_context_free(ctx);
    unsetenv("TSR_SHM_BYTES");
    setenv("TSR_ALLREDUCE_SEGMENT", "x", 1);
    assert_int_equal(env_ctx(TSR_ALLREDUCE_AUTO, &ctx), TSR_ERR_PARSE);
    unsetenv("TSR_ALLREDUCE_SEGMENT");
}

static void test_registered(void **state) {
    (void)state;
    tsr_context *ctx = make_ctx();
    tsr_comm *c;
    assert_int_equal(tsr_comm_self_create(ctx, &c), TSR_OK);
    float *a = NULL, *b = NULL;
    void *z = NULL;
    assert_int_equal(tsr_comm_alloc(c, 1000 * sizeof(float), (void **)&a), TSR_OK);
    assert_int_equal(tsr_comm_alloc(c, 77, (void **)&b), TSR_OK);
    assert_int_equal(tsr_comm_alloc(c, 0, &z), TSR_OK);
    assert_non_null(z);
    assert_int_equal((uintptr_t)a % 64, 0);
    assert_int_equal((uintptr_t)b % 64, 0);
    assert_true(tsr_comm_is_registered(c, a, 1000 * sizeof(float)));
    assert_true(tsr_comm_is_registered(c, a + 10, 990 * sizeof(float)));
    assert_false(tsr_comm_is_registered(c, a + 10, 991 * sizeof(float)));
    float local[4];
    assert_false(tsr_comm_is_registered(c, local, sizeof local));
    for (int i = 0; i < 1000; i++) a[i] = (float)i;
    assert_int_equal(tsr_comm_allreduce(c, a, 1000, NULL), TSR_OK);
    for (int i = 0; i < 1000; i++) assert_true(a[i] == (float)i);
    assert_int_equal(tsr_comm_free_mem(c, local), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(ctx), "not allocated by tsr_comm_alloc"));
    assert_int_equal(tsr_comm_free_mem(c, NULL), TSR_OK);
    assert_int_equal(tsr_comm_free_mem(c, a), TSR_OK);
    assert_int_equal(tsr_comm_free_mem(c, a), TSR_ERR_NOT_FOUND);
    assert_int_equal(tsr_comm_free_mem(c, z), TSR_OK);
    tsr_comm_free(c); /* frees b */
    tsr_context_free(ctx);
}

static void test_allocator_failures(void **state) {
    (void)state;
    for (long k = 1; k <= 3; k++) {
        tsr_test_alloc fa;
        tsr_test_alloc_init(&fa, 0);
        tsr_context_options o;
        tsr_context_options_init(&o);
        o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
        o.allocator = &fa.allocator;
        tsr_context *ctx;
        assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
        long base = fa.live;
        fa.fail_at = fa.calls + k; /* the k-th allocation of the communicator fails */
        tsr_comm *c = NULL;
        tsr_status s = tsr_comm_self_create(ctx, &c);
        if (s == TSR_OK) {
            void *p = NULL;
            s = tsr_comm_alloc(c, 100, &p);
            if (s == TSR_OK) {
                float x[3] = {1, 2, 3};
                tsr_comm_request *r = NULL;
                s = tsr_comm_allreduce_start(c, x, 3, NULL, &r);
                if (s == TSR_OK) tsr_comm_wait(r);
                else assert_null(r);
            }
            tsr_comm_free(c);
        }
        assert_int_equal(s, TSR_ERR_NO_MEMORY);
        assert_int_equal(fa.live, base);
        fa.fail_at = 0;
        tsr_context_free(ctx);
        assert_int_equal(fa.live, 0);
    }
}

/* Kernels: reduction against a plain sum, fp16 against the scalar converters. */
static void test_kernels(void **state) {
    (void)state;
    /* 20003: over 64 KiB, so the mirror is written with streaming stores */
    const size_t ns[] = {0, 1, 7, 1023, 1024, 1025, 5000, 20003};
    const float w[4] = {0.5f, 0.3f, 1.7f, 0.1f};
    for (size_t t = 0; t < TSR_ARRAY_SIZE(ns); t++) {
        size_t n = ns[t];
        for (int nsrc = 1; nsrc <= 4; nsrc++) {
            for (int weighted = 0; weighted < 2; weighted++) {
                float *src[4], *y = malloc((n + 1) * sizeof(float));
                float *ref = malloc((n + 1) * sizeof(float));
                for (int p = 0; p < nsrc; p++) {
                    src[p] = malloc((n + 1) * sizeof(float));
                    tsr_test_fill_uniform(src[p], n, (uint64_t)(p + 1) * 31 + n, -1, 1);
                }
                memcpy(y, src[0], n * sizeof(float));
                /* weighted: the bits of scaling each source first, then summing */
                for (size_t i = 0; i < n; i++) {
                    float s = weighted ? w[0] * src[0][i] : src[0][i];
                    for (int p = 1; p < nsrc; p++) {
                        float x = weighted ? w[p] * src[p][i] : src[p][i];
                        s += x;
                    }
                    ref[i] = s * 0.25f;
                }
                const float *srcs[4] = {y, src[1], src[2], src[3]};
                float *mirror = malloc((n + 1) * sizeof(float));
                tsr_comm_reduce_into(y, srcs, weighted ? w : NULL, nsrc, n, 0.25f,
                                     nsrc & 1 ? mirror : NULL, weighted);
                assert_memory_equal(y, ref, n * sizeof(float));
                if (nsrc & 1) assert_memory_equal(mirror, ref, n * sizeof(float));
                free(mirror);
                for (int p = 0; p < nsrc; p++) free(src[p]);
                free(y);
                free(ref);
            }
        }
    }
    /* copies, small (memcpy) and large (streaming stores) at odd alignments */
    const size_t copy_ns[] = {5, 188, 6959, 300001};
    for (size_t t = 0; t < TSR_ARRAY_SIZE(copy_ns); t++) {
        size_t n = copy_ns[t];
        float *src = malloc((n + 8) * sizeof(float)), *dst = calloc(n + 8, sizeof(float));
        tsr_test_fill_uniform(src, n + 8, n, -1, 1);
        tsr_comm_copy(dst + 3, src + 1, n);
        assert_memory_equal(dst + 3, src + 1, n * sizeof(float));
        assert_true(dst[2] == 0.0f && dst[n + 3] == 0.0f);
        free(src);
        free(dst);
    }
    /* every half value converts like the scalar reference */
    uint16_t *h = malloc(65536 * sizeof(uint16_t));
    float *f = malloc(65536 * sizeof(float)), *g = malloc(65536 * sizeof(float));
    for (uint32_t i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    tsr_comm_from_f16(f, h, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        float r = tsr_f16_to_f32_scalar((uint16_t)i);
        if (isnan(r)) assert_true(isnan(f[i]));
        else assert_memory_equal(&f[i], &r, sizeof r);
    }
    /* float -> half rounds to nearest even like the scalar reference (NaNs stay NaN) */
    tsr_test_fill_uniform(f, 65536, 99, -70000.0f, 70000.0f);
    for (int i = 0; i < 1000; i++) f[i] = ldexpf(f[i], -30 + i % 40); /* subnormals, tiny, huge */
    f[1000] = INFINITY, f[1001] = -INFINITY, f[1002] = NAN, f[1003] = 65520.0f, f[1004] = -0.0f;
    tsr_comm_to_f16(h, f, 65536);
    for (int i = 0; i < 65536; i++) {
        uint16_t r = tsr_f32_to_f16_scalar(f[i]);
        if (isnan(f[i])) assert_true((h[i] & 0x7C00u) == 0x7C00u && (h[i] & 0x3FFu));
        else if (h[i] != r) fail_msg("f16(%a): %04x, expected %04x", (double)f[i], h[i], r);
    }
    memcpy(g, f, 65536 * sizeof(float));
    tsr_comm_round_f16(g, 65536);
    for (int i = 0; i < 65536; i++) {
        if (isnan(f[i])) continue;
        float r = tsr_f16_to_f32_scalar(tsr_f32_to_f16_scalar(f[i]));
        assert_memory_equal(&g[i], &r, sizeof r);
    }
    /* y += f32(h) */
    for (int i = 0; i < 65536; i++)
        g[i] = 1.0f, h[i] = tsr_f32_to_f16_scalar((float)(i % 100) * 0.5f);
    tsr_comm_add_f16(g, h, 65535);
    for (int i = 0; i < 65535; i++) assert_true(g[i] == 1.0f + (float)(i % 100) * 0.5f);
    assert_true(g[65535] == 1.0f);
    free(h);
    free(f);
    free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_basics),  cmocka_unit_test(test_self_allreduce),
        cmocka_unit_test(test_bad_input),    cmocka_unit_test(test_environment),
        cmocka_unit_test(test_registered),   cmocka_unit_test(test_allocator_failures),
        cmocka_unit_test(test_kernels),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
