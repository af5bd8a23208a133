/* Pipeline pieces that need no second rank (every build, WITH_MPI=0 included): point to point
 * on the self communicator is refused clearly; a one-stage pipeline with micro-batches equals
 * the trainer (tolerance: micro-batch gradients are summed in another order) and GPipe equals
 * 1F1B bitwise, with the re-materialisation counts each schedule implies; stage-list parsing.
 * The multi-rank cases are in tests/mpi/test_pipeline.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/train/pipeline.h"
#include "support/test_util.h"

static void test_p2p_self(void **state) {
    (void)state;
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_comm *self;
    assert_int_equal(tsr_comm_self_create(ctx, &self), TSR_OK);
    int v = 1;
    tsr_comm_p2p *r = (tsr_comm_p2p *)&v;
    assert_int_equal(tsr_comm_send(self, 0, 0, &v, 4), TSR_ERR_UNSUPPORTED);
    assert_non_null(strstr(tsr_context_last_error(ctx), "self communicator"));
    assert_int_equal(tsr_comm_recv(self, 0, 0, &v, 4), TSR_ERR_UNSUPPORTED);
    assert_int_equal(tsr_comm_irecv(self, 0, 0, &v, 4, &r), TSR_ERR_UNSUPPORTED);
    assert_null(r);
    assert_int_equal(tsr_comm_isend(self, 1, 0, &v, 4, &r), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "rank 1 is not in [0, 1)"));
    assert_int_equal(tsr_comm_send(self, 0, TSR_COMM_P2P_MAX_TAG + 1, &v, 4), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "tag"));
    assert_int_equal(tsr_comm_send(NULL, 0, 0, &v, 4), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_comm_p2p_wait(NULL), TSR_OK);
    int done;
    assert_int_equal(tsr_comm_p2p_test(NULL, &done), TSR_ERR_INVALID_ARG);
    tsr_comm_p2p_cancel(NULL);
    tsr_comm_free(self);
    tsr_context_free(ctx);
}

static void batch(size_t features, int step, size_t n, float *x, int32_t *y) {
    uint64_t s = 77u + (uint64_t)step;
    tsr_test_fill_uniform(x, n * features, s, 0.0f, 1.0f);
    for (size_t i = 0; i < n; i++) {
        size_t best = 0;
        for (size_t f = 1; f < 10; f++)
            if (x[i * features + f] > x[i * features + best]) best = f;
        y[i] = (int32_t)best;
    }
}

enum { B = 12, STEPS = 3 };

/* One stage on the self communicator (or none), 4 micro-batches of 3. */
static void test_single_stage_matches_trainer(void **state) {
    (void)state;
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_model *m;
    tsr_model_input in = {1, 8, 8, 10};
    assert_int_equal(tsr_model_parse(ctx, "conv3x3:4,relu,pool2,dropout:0.25,dense:16,relu,dense:10", in, &m),
                     TSR_OK);
    tsr_comm *self;
    assert_int_equal(tsr_comm_self_create(ctx, &self), TSR_OK);
    size_t L = tsr_model_layer_count(m), np = tsr_model_param_count(m), bounds[2] = {0, L};
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = B;
    o.optimizer.kind = TSR_OPTIM_SGD;
    o.optimizer.lr = 0.05f;
    o.optimizer.momentum = 0.9f;
    tsr_trainer *t;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
    /* GPipe M=4 re-materialised, 1F1B M=4 (self communicator), GPipe M=1, GPipe M=4 */
    tsr_pipeline *p[4];
    for (int k = 0; k < 4; k++) {
        tsr_pipeline_options po = {bounds, 1, k == 2 ? 1 : 4, k == 1 ? TSR_PIPELINE_1F1B : TSR_PIPELINE_GPIPE,
                                   k == 0};
        o.comm = k == 1 ? self : NULL;
        assert_int_equal(tsr_pipeline_create(ctx, m, &o, &po, &p[k]), TSR_OK);
    }
    float x[B * 64], *pt = malloc(np * 4);
    float *pp[4] = {malloc(np * 4), malloc(np * 4), malloc(np * 4), malloc(np * 4)};
    int32_t y[B];
    for (int s = 0; s < STEPS; s++) {
        batch(64, s, B, x, y);
        float lt, lp[4];
        assert_int_equal(tsr_trainer_step(t, x, y, B, &lt), TSR_OK);
        for (int k = 0; k < 4; k++) assert_int_equal(tsr_pipeline_step(p[k], x, y, B, &lp[k]), TSR_OK);
        assert_true(lp[0] == lp[1] && lp[0] == lp[3]);
        assert_true(lp[2] == lt); /* M = 1: the trainer's arithmetic and dropout masks */
    }
    assert_int_equal(tsr_trainer_get_params(t, pt, np), TSR_OK);
    for (int k = 0; k < 4; k++) assert_int_equal(tsr_pipeline_get_params(p[k], pp[k], np), TSR_OK);
    assert_memory_equal(pp[0], pp[1], np * 4);
    assert_memory_equal(pp[0], pp[3], np * 4);
    assert_memory_equal(pp[2], pt, np * 4);
    /* GPipe re-runs every micro-batch's forward before its backward (backwards go in
     * micro-batch order, as 1F1B's, for the same arithmetic: the stage holds micro-batch 3 when
     * backward 0 starts); 1F1B on one stage runs each backward right after its forward */
    assert_int_equal(tsr_pipeline_recomputes(p[0]), STEPS * 4);
    assert_int_equal(tsr_pipeline_recomputes(p[1]), 0);
    assert_int_equal(tsr_pipeline_recomputes(p[2]), 0);
    assert_int_equal(tsr_pipeline_recomputes(p[3]), 0);
    /* memory: GPipe keeps 4 activation sets of 3 samples, re-materialisation one */
    assert_true(tsr_pipeline_act_bytes(p[0]) > 0);
    assert_int_equal(tsr_pipeline_act_bytes(p[3]), 4 * tsr_pipeline_act_bytes(p[0]));
    assert_int_equal(tsr_pipeline_act_bytes(p[1]), tsr_pipeline_act_bytes(p[0]));
    assert_int_equal(tsr_pipeline_steps(p[0]), STEPS);
    assert_int_equal(tsr_pipeline_seed(p[0]), o.seed);
    size_t first, last, count;
    tsr_pipeline_stage_range(p[0], &first, &last, &count);
    assert_true(first == 0 && last == L && count == np);
    /* a dropout-free model against the trainer within tolerance with M = 4 */
    tsr_model *m2;
    assert_int_equal(tsr_model_parse(ctx, "conv3x3:4,relu,pool2,dense:16,relu,dense:10", in, &m2), TSR_OK);
    size_t b2[2] = {0, tsr_model_layer_count(m2)};
    tsr_pipeline_options po = {b2, 1, 4, TSR_PIPELINE_GPIPE, 0};
    o.comm = NULL;
    tsr_trainer *t2;
    tsr_pipeline *q;
    assert_int_equal(tsr_trainer_create(ctx, m2, &o, &t2), TSR_OK);
    assert_int_equal(tsr_pipeline_create(ctx, m2, &o, &po, &q), TSR_OK);
    size_t np2 = tsr_model_param_count(m2);
    for (int s = 0; s < STEPS; s++) {
        batch(64, s, B, x, y);
        float lt, lq;
        assert_int_equal(tsr_trainer_step(t2, x, y, B, &lt), TSR_OK);
        assert_int_equal(tsr_pipeline_step(q, x, y, B, &lq), TSR_OK);
        assert_true(fabsf(lt - lq) <= 1e-5f * fabsf(lt));
    }
    assert_int_equal(tsr_trainer_get_params(t2, pt, np2), TSR_OK);
    assert_int_equal(tsr_pipeline_get_params(q, pp[0], np2), TSR_OK);
    assert_true(tsr_test_rel_error(pp[0], pt, np2, 1e-6, 1e-5, NULL) <= 1.0);
    assert_true(tsr_pipeline_host_bytes(q) == 0); /* one stage: no messages, inputs from the batch */
    tsr_pipeline_free(q);
    tsr_trainer_free(t2);
    tsr_model_free(m2);
    for (int k = 0; k < 4; k++) {
        tsr_pipeline_free(p[k]);
        free(pp[k]);
    }
    free(pt);
    tsr_trainer_free(t);
    tsr_comm_free(self);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

static void test_parse(void **state) {
    (void)state;
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    size_t b[5], n;
    assert_int_equal(tsr_pipeline_bounds_parse(ctx, "3,4,2", 9, b, 5, &n), TSR_OK);
    assert_true(n == 3 && b[0] == 0 && b[1] == 3 && b[2] == 7 && b[3] == 9);
    assert_int_equal(tsr_pipeline_bounds_parse(ctx, "9", 9, b, 5, &n), TSR_OK);
    assert_true(n == 1 && b[1] == 9);
    static const struct {
        const char *text, *words;
    } bad[] = {{"3,4", "cover 7 layers, the model has 9"}, {"3,0,6", "stage 1 has 0 layers"},
               {"3,x", "expected layer counts"}, {"", "expected layer counts"},
               {"3;6", "unexpected ';'"}, {"1,1,1,1,5", "more than 4 stages"},
               {"10", "stage 0 has 10 layers"}};
    for (size_t i = 0; i < TSR_ARRAY_SIZE(bad); i++) {
        assert_int_equal(tsr_pipeline_bounds_parse(ctx, bad[i].text, 9, b, 5, &n), TSR_ERR_PARSE);
        if (!strstr(tsr_context_last_error(ctx), bad[i].words))
            fail_msg("'%s': %s", bad[i].text, tsr_context_last_error(ctx));
    }
    tsr_pipeline_schedule s;
    assert_int_equal(tsr_pipeline_schedule_parse("gpipe", &s), TSR_OK);
    assert_int_equal(s, TSR_PIPELINE_GPIPE);
    assert_int_equal(tsr_pipeline_schedule_parse("1f1b", &s), TSR_OK);
    assert_int_equal(s, TSR_PIPELINE_1F1B);
    assert_int_equal(tsr_pipeline_schedule_parse("1F1B", &s), TSR_ERR_PARSE);
    tsr_context_free(ctx);
}

/* Bounds from a plan of the planner: every plan of the topology's (here: host-only) devices
 * maps to its stage list. */
static void test_bounds_from_plan(void **state) {
    (void)state;
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_model *m;
    tsr_model_input in = {1, 8, 8, 10};
    assert_int_equal(tsr_model_parse(ctx, "dense:24,relu,dense:16,relu,dense:10", in, &m), TSR_OK);
    tsr_topology *topo;
    assert_int_equal(tsr_topology_from_context(ctx, &topo), TSR_OK);
    size_t want[2] = {0, 5}, got[3], n = 0;
    int devices[1] = {0};
    tsr_plan *plan = NULL, *best = NULL;
    tsr_status ps = tsr_plan_from_bounds(ctx, m, topo, NULL, want, devices, 1, &plan);
    if (ps != TSR_OK) fail_msg("plan: %s", tsr_context_last_error(ctx));
    assert_int_equal(tsr_pipeline_bounds_from_plan(ctx, plan, got, 3, &n), TSR_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(got, want, sizeof want);
    assert_int_equal(tsr_pipeline_bounds_from_plan(ctx, plan, got, 1, &n), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "1 stages"));
    ps = tsr_plan_create(ctx, m, topo, NULL, &best);
    if (ps != TSR_OK) fail_msg("plan: %s", tsr_context_last_error(ctx));
    assert_int_equal(tsr_pipeline_bounds_from_plan(ctx, best, got, 3, &n), TSR_OK);
    assert_true(n == tsr_plan_stage_count(best) && got[0] == 0 && got[n] == 5);
    tsr_plan_free(best);
    tsr_plan_free(plan);
    tsr_topology_free(topo);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_p2p_self),
        cmocka_unit_test(test_single_stage_matches_trainer),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_bounds_from_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
