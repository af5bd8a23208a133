/* Gradient clipping by global norm (clip_grad_norm) and weight decay on matrices only
 * (decay_matrices_only) against plain-C double computations: a clipped SGD step equals
 * w - lr * g * max_norm / (|g| + 1e-6) with |g| the reported norm, a bound above the norm
 * changes nothing (bitwise), decay skips exactly the rank-1 tensors (SGD and AdamW), on every
 * device; bad bounds are refused with a message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support/mode_harness.h"
#include "support/test_util.h"

static tsr_context *ctx;
static tsr_model *model;
static tsr_dataset *data;
enum { N = 16 };
static float x[N * TSR_MH_FEATURES];
static int32_t y[N];

static int setup(void **state) {
    (void)state;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_HWLOC;
    if (tsr_context_create(&ctx, &o) != TSR_OK) return -1;
    data = tsr_mh_synthetic_data(ctx, N);
    model = tsr_mh_synthetic_model(ctx, "dense:12,relu,dense:10");
    if (!data || !model) return -1;
    memcpy(x, data->images, sizeof x);
    memcpy(y, data->labels, sizeof y);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tsr_model_free(model);
    tsr_dataset_free(ctx, data);
    tsr_context_free(ctx);
    return 0;
}

static void options(tsr_trainer_options *o, int dev, tsr_optimizer_kind kind) {
    static char id[16];
    tsr_trainer_options_init(o);
    snprintf(id, sizeof id, "%d", dev);
    o->device = id;
    o->batch = N;
    o->seed = 5;
    o->optimizer.kind = kind;
    o->optimizer.lr = 0.1f;
    o->optimizer.momentum = 0.0f;
}

/* One step of a trainer with options o: the parameters before and after, the gradients and
 * the reported norm. */
static void one_step(const tsr_trainer_options *o, float *before, float *after, float *grads, double *norm) {
    size_t np = tsr_model_param_count(model);
    tsr_trainer *t = NULL;
    assert_int_equal(tsr_trainer_create(ctx, model, o, &t), TSR_OK);
    assert_int_equal(tsr_trainer_get_params(t, before, np), TSR_OK);
    assert_int_equal(tsr_trainer_step(t, x, y, N, NULL), TSR_OK);
    assert_int_equal(tsr_trainer_get_params(t, after, np), TSR_OK);
    assert_int_equal(tsr_trainer_get_grads(t, grads, np), TSR_OK);
    if (norm) *norm = tsr_trainer_grad_norm(t);
    tsr_trainer_free(t);
}

static void test_clipped_step_reference(void **state) {
    (void)state;
    size_t np = tsr_model_param_count(model);
    float *p0 = malloc(np * 4), *p1 = malloc(np * 4), *g = malloc(np * 4);
    float *q0 = malloc(np * 4), *q1 = malloc(np * 4), *gq = malloc(np * 4);
    for (int dev = 0; dev < tsr_context_device_count(ctx); dev++) {
        tsr_trainer_options o;
        options(&o, dev, TSR_OPTIM_SGD);
        double unset = -1.0;
        one_step(&o, p0, p1, g, &unset); /* no clipping: the plain gradient */
        assert_true(unset == 0.0);       /* nothing measured without clipping */
        double sq = 0.0;
        for (size_t i = 0; i < np; i++) sq += (double)g[i] * (double)g[i];
        double want = sqrt(sq);
        assert_true(want > 0.1);
        /* a bound of a quarter of the norm: every gradient scaled by about 1/4 */
        o.clip_grad_norm = want / 4.0;
        double norm = 0.0;
        one_step(&o, q0, q1, gq, &norm);
        assert_true(tsr_mh_bitwise(p0, q0, np));
        if (fabs(norm - want) > 1e-6 * want) {
            fprintf(stderr, "device %d: norm %.9g, double reference %.9g\n", dev, norm, want);
            fail();
        }
        double coef = o.clip_grad_norm / (want + 1e-6);
        for (size_t i = 0; i < np; i++) {
            double gi = (double)g[i] * coef, wi = (double)p0[i] - 0.1 * gi;
            if (fabs(gq[i] - gi) > 1e-6 * fabs(gi) + 1e-9 || fabs(q1[i] - wi) > 1e-6 + 1e-6 * fabs(wi)) {
                fprintf(stderr, "device %d param %zu: grad %.9g (want %.9g), param %.9g (want %.9g)\n", dev, i,
                        (double)gq[i], gi, (double)q1[i], wi);
                fail();
            }
        }
        /* a bound above the norm: the step of no clipping, bit for bit */
        o.clip_grad_norm = want * 1.5;
        one_step(&o, q0, q1, gq, &norm);
        assert_true(fabs(norm - want) <= 1e-6 * want);
        assert_true(tsr_mh_bitwise(p1, q1, np));
        assert_true(tsr_mh_bitwise(g, gq, np));
    }
    free(p0), free(p1), free(g), free(q0), free(q1), free(gq);
}

/* weight decay on the matrices only: SGD w - lr (g + wd w) on rank-2 tensors, w - lr g on the
 * biases; AdamW's first step w - lr (g / (|g| + eps) + wd w), decay likewise */
static void test_decay_matrices_only(void **state) {
    (void)state;
    size_t np = tsr_model_param_count(model), nt = tsr_model_param_tensor_count(model);
    float *p0 = malloc(np * 4), *p1 = malloc(np * 4), *g = malloc(np * 4);
    char *decays = calloc(np, 1);
    size_t vectors = 0;
    for (size_t t = 0; t < nt; t++) {
        tsr_param_info info;
        assert_int_equal(tsr_model_param_tensor(model, t, &info), TSR_OK);
        memset(decays + info.offset, info.rank >= 2, info.count);
        vectors += info.rank < 2 ? info.count : 0;
    }
    assert_true(vectors == 22); /* the two biases */
    for (int dev = 0; dev < tsr_context_device_count(ctx); dev++)
        for (int adamw = 0; adamw < 2; adamw++) {
            tsr_trainer_options o;
            options(&o, dev, adamw ? TSR_OPTIM_ADAMW : TSR_OPTIM_SGD);
            o.optimizer.weight_decay = 0.5f;
            o.decay_matrices_only = 1;
            one_step(&o, p0, p1, g, NULL);
            const double lr = 0.1, wd = 0.5, eps = o.optimizer.eps;
            for (size_t i = 0; i < np; i++) {
                double step = adamw ? (double)g[i] / (fabs((double)g[i]) + eps) : (double)g[i];
                double want = (double)p0[i] - lr * (step + (decays[i] ? wd * p0[i] : 0.0));
                if (fabs(p1[i] - want) > 2e-6 + 2e-6 * fabs(want)) {
                    fprintf(stderr, "device %d %s param %zu (%s): %.9g, reference %.9g\n", dev,
                            adamw ? "adamw" : "sgd", i, decays[i] ? "matrix" : "vector", (double)p1[i], want);
                    fail();
                }
            }
        }
    free(p0), free(p1), free(g), free(decays);
}

/* without decay_matrices_only the update is the one of before (every tensor decays) */
static void test_decay_all_unchanged(void **state) {
    (void)state;
    size_t np = tsr_model_param_count(model);
    float *p0 = malloc(np * 4), *p1 = malloc(np * 4), *g = malloc(np * 4);
    tsr_trainer_options o;
    options(&o, 0, TSR_OPTIM_SGD);
    o.optimizer.weight_decay = 0.5f;
    one_step(&o, p0, p1, g, NULL);
    for (size_t i = 0; i < np; i++) {
        double want = (double)p0[i] - 0.1 * ((double)g[i] + 0.5 * p0[i]);
        assert_true(fabs(p1[i] - want) <= 2e-6 + 2e-6 * fabs(want));
    }
    free(p0), free(p1), free(g);
}

static void test_bad_bound(void **state) {
    (void)state;
    const double bad[] = {-1.0, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tsr_trainer_options o;
        options(&o, 0, TSR_OPTIM_SGD);
        o.clip_grad_norm = bad[i];
        tsr_trainer *t = NULL;
        assert_true(tsr_mh_error_is(ctx, tsr_trainer_create(ctx, model, &o, &t), TSR_ERR_INVALID_ARG,
                                    "gradient clipping norm"));
        assert_null(t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clipped_step_reference),
        cmocka_unit_test(test_decay_matrices_only),
        cmocka_unit_test(test_decay_all_unchanged),
        cmocka_unit_test(test_bad_bound),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
