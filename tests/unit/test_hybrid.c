/* Hybrid pieces that need no second rank (every build, WITH_MPI=0 included): the rank layout
 * and its errors, bad options refused naming them, and a 1 x 1 hybrid (no communicator, or the
 * self communicator) that trains as the single-process trainer does: the same arithmetic with
 * one micro-batch, so bitwise the same parameters and losses. The multi-rank cases are in
 * tests/mpi/test_hybrid.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "lib/train/hybrid.h"
#include "lib/core/internal.h"
#include "support/test_util.h"

static const char *SPEC = "conv3x3:4,relu,pool2,dense:12,relu,dense:10";
static const tsr_model_input IN = {1, 8, 8, 10};

static void test_layout(void **state) {
    (void)state;
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    size_t r = 9, s = 9;
    /* brute force: every rank of every layout up to 4 x 4 maps to a distinct (r, s) */
    for (size_t R = 1; R <= 4; R++)
        for (size_t S = 1; S <= 4; S++) {
            int seen[16] = {0};
            for (size_t k = 0; k < R * S; k++) {
                assert_int_equal(tsr_hybrid_layout(ctx, R * S, R, S, k, &r, &s), TSR_OK);
                assert_true(r < R && s < S && r * S + s == k);
                assert_int_equal(seen[r * S + s]++, 0);
            }
        }
    assert_int_equal(tsr_hybrid_layout(ctx, 4, 0, 4, 0, &r, &s), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "replicas is 0"));
    assert_int_equal(tsr_hybrid_layout(ctx, 4, 4, 0, 0, &r, &s), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "stages is 0"));
    assert_int_equal(tsr_hybrid_layout(ctx, 5, 2, 2, 0, &r, &s), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "5 ranks are not replicas 2 x stages 2 (= 4)"));
    assert_int_equal(tsr_hybrid_layout(ctx, 4, 2, 2, 4, &r, &s), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "rank 4 of 4"));
    assert_int_equal(tsr_hybrid_layout(ctx, 4, 2, 2, 0, NULL, &s), TSR_ERR_INVALID_ARG);
    tsr_context_free(ctx);
}

static void test_bad_options(void **state) {
    (void)state;
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, SPEC, IN, &m), TSR_OK);
    size_t L = tsr_model_layer_count(m), b[3] = {0, 2, L};
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = 8;
    tsr_hybrid_options ho = {1, {b, 1, 1, TSR_PIPELINE_GPIPE, 0}};
    b[1] = L;
    tsr_hybrid *h = (tsr_hybrid *)&o;
    ho.replicas = 0;
    assert_int_equal(tsr_hybrid_create(ctx, m, &o, &ho, &h), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "replicas is 0"));
    assert_null(h);
    ho.replicas = 2; /* one rank */
    assert_int_equal(tsr_hybrid_create(ctx, m, &o, &ho, &h), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "1 ranks are not replicas 2 x stages 1"));
    ho.replicas = 1;
    ho.pipeline.stages = 2; /* two stages on one rank */
    b[1] = 2;
    assert_int_equal(tsr_hybrid_create(ctx, m, &o, &ho, &h), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "replicas 1 x stages 2"));
    ho.pipeline.stages = 1;
    b[1] = L;
    ho.pipeline.microbatches = 9; /* more than the batch: the pipeline's own check */
    assert_int_equal(tsr_hybrid_create(ctx, m, &o, &ho, &h), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "micro-batches"));
    assert_int_equal(tsr_hybrid_create(ctx, m, &o, NULL, &h), TSR_ERR_INVALID_ARG);
    tsr_hybrid_free(NULL);
    assert_int_equal(tsr_hybrid_step(NULL, NULL, NULL, 0, NULL), TSR_ERR_INVALID_ARG);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

/* 1 x 1 with one micro-batch = the trainer, bitwise; with or without a (self) communicator. */
static void test_single_matches_trainer(void **state) {
    (void)state;
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, SPEC, IN, &m), TSR_OK);
    size_t L = tsr_model_layer_count(m), np = tsr_model_param_count(m), b[2] = {0, L};
    enum { N = 8, STEPS = 3 };
    float *x = malloc(N * 64 * sizeof *x), *pt = malloc(np * 4), *ph = malloc(np * 4);
    int32_t y[N];
    tsr_comm *self;
    assert_int_equal(tsr_comm_self_create(ctx, &self), TSR_OK);
    for (int with_comm = 0; with_comm < 2; with_comm++) {
        tsr_trainer_options o;
        tsr_trainer_options_init(&o);
        o.batch = N;
        o.seed = 3;
        tsr_trainer *t;
        assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
        o.comm = with_comm ? self : NULL;
        tsr_hybrid_options ho = {1, {b, 1, 1, TSR_PIPELINE_1F1B, 0}};
        tsr_hybrid *h;
        assert_int_equal(tsr_hybrid_create(ctx, m, &o, &ho, &h), TSR_OK);
        assert_int_equal(tsr_hybrid_replicas(h), 1);
        assert_int_equal(tsr_hybrid_replica(h), 0);
        assert_int_equal(tsr_hybrid_stage(h), 0);
        for (int s = 0; s < STEPS; s++) {
            tsr_test_fill_uniform(x, N * 64, 100u + (uint64_t)s, 0.0f, 1.0f);
            for (int i = 0; i < N; i++) y[i] = (int32_t)((i * 7 + s) % 10);
            float lt = -1, lh = -2;
            assert_int_equal(tsr_trainer_step(t, x, y, N, &lt), TSR_OK);
            assert_int_equal(tsr_hybrid_step(h, x, y, N, &lh), TSR_OK);
            assert_memory_equal(&lt, &lh, sizeof lt);
        }
        assert_int_equal(tsr_trainer_get_params(t, pt, np), TSR_OK);
        assert_int_equal(tsr_hybrid_get_params(h, ph, np), TSR_OK);
        assert_memory_equal(pt, ph, np * 4);
        assert_int_equal(tsr_hybrid_steps(h), STEPS);
        tsr_hybrid_free(h);
        tsr_trainer_free(t);
    }
    tsr_comm_free(self);
    free(x);
    free(pt);
    free(ph);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_single_matches_trainer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
