/* Fault handling through the public API: non-finite values in a training step (a crafted NaN
 * input, an injected NaN gradient) stop or skip the step as configured, leaving parameters
 * untouched; a model larger than the device gives a clear device-memory error on every device.
 * (An OpenCL build failure carries the build log: test_opencl.c, test_build_error.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tessera.h"
#include "support/test_util.h"

#define B 8

typedef struct fixture {
    tsr_context *ctx;
    tsr_model *model;
    float x[B * 16];
    int32_t y[B];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    co.log_level = TSR_LOG_OFF;
    if (!f || tsr_context_create(&f->ctx, &co) != TSR_OK) return -1;
    tsr_model_input in = {1, 4, 4, 3};
    if (tsr_model_parse(f->ctx, "dense:8,relu,dense:3", in, &f->model) != TSR_OK) return -1;
    tsr_test_fill_uniform(f->x, B * 16, 7, 0, 1);
    for (int i = 0; i < B; i++) f->y[i] = i % 3;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    tsr_model_free(f->model);
    tsr_context_free(f->ctx);
    free(f);
    return 0;
}

/* fault_step: the optimizer step whose gradient is poisoned (fault_grad_nan_step), -1: none */
static tsr_trainer *make_fault(fixture *f, tsr_nonfinite_policy p, int no_grad_check,
                               int64_t fault_step) {
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = B;
    o.nonfinite = p;
    o.no_grad_check = no_grad_check;
    o.fault_grad_nan_step = fault_step;
    tsr_trainer *t = NULL;
    assert_int_equal(tsr_trainer_create(f->ctx, f->model, &o, &t), TSR_OK);
    return t;
}

static tsr_trainer *make(fixture *f, tsr_nonfinite_policy p, int no_grad_check) {
    return make_fault(f, p, no_grad_check, -1);
}

/* One step on `x`; returns its status and checks the parameters did not move. */
static tsr_status step_unchanged(fixture *f, tsr_trainer *t, const float *x) {
    size_t np = tsr_model_param_count(f->model);
    float *before = malloc(np * sizeof *before), *after = malloc(np * sizeof *after);
    assert_non_null(before);
    assert_non_null(after);
    assert_int_equal(tsr_trainer_get_params(t, before, np), TSR_OK);
    uint64_t steps = tsr_trainer_steps(t);
    float loss = 0;
    tsr_status s = tsr_trainer_step(t, x, f->y, B, &loss);
    assert_int_equal(tsr_trainer_get_params(t, after, np), TSR_OK);
    assert_memory_equal(before, after, np * sizeof *before);
    assert_int_equal(tsr_trainer_steps(t), steps);
    free(before);
    free(after);
    return s;
}

static void test_nan_input_stop_and_skip(void **state) {
    fixture *f = *state;
    float bad[B * 16];
    memcpy(bad, f->x, sizeof bad);
    bad[5] = NAN; /* crafted input: one NaN pixel. relu drops it (the loss stays finite) but
                   * the weights it meets get NaN gradients: the gradient check catches it */
    tsr_trainer *t = make(f, TSR_NONFINITE_STOP, 0);
    assert_int_equal(step_unchanged(f, t, bad), TSR_ERR_NUMERIC);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "is nan at step 0"));
    tsr_trainer_free(t);
    /* an infinite pixel (+inf - inf in the first layer) reaches the loss: caught even without
     * the gradient check */
    bad[5] = INFINITY;
    t = make(f, TSR_NONFINITE_STOP, 1);
    assert_int_equal(step_unchanged(f, t, bad), TSR_ERR_NUMERIC);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "loss is "));
    tsr_trainer_free(t);

    bad[5] = INFINITY;
    for (int nc = 0; nc < 2; nc++) {
        t = make(f, TSR_NONFINITE_SKIP, nc);
        assert_int_equal(step_unchanged(f, t, bad), TSR_OK);
        assert_int_equal(tsr_trainer_skipped(t), 1);
        float loss;
        assert_int_equal(tsr_trainer_step(t, f->x, f->y, B, &loss), TSR_OK); /* goes on */
        assert_true(isfinite(loss));
        assert_int_equal(tsr_trainer_steps(t), 1);
        tsr_trainer_free(t);
    }
    t = make(f, TSR_NONFINITE_SKIP, 0);
    memcpy(bad, f->x, sizeof bad);
    bad[20] = -INFINITY;
    assert_int_equal(step_unchanged(f, t, bad), TSR_OK);
    assert_int_equal(tsr_trainer_skipped(t), 1);
    float loss;
    assert_int_equal(tsr_trainer_step(t, f->x, f->y, B, &loss), TSR_OK); /* training goes on */
    assert_true(isfinite(loss));
    assert_int_equal(tsr_trainer_steps(t), 1);
    tsr_trainer_free(t);
}

static void test_nan_gradient_stop_and_skip(void **state) {
    fixture *f = *state;
    tsr_trainer *t = make_fault(f, TSR_NONFINITE_STOP, 0, 0); /* poison a gradient at step 0 */
    assert_int_equal(step_unchanged(f, t, f->x), TSR_ERR_NUMERIC);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "is nan at step 0"));
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "gradient "));
    tsr_trainer_free(t);
    /* no_grad_check: the poisoned gradient is not looked at */
    t = make_fault(f, TSR_NONFINITE_STOP, 1, 0);
    float loss;
    assert_int_equal(tsr_trainer_step(t, f->x, f->y, B, &loss), TSR_OK);
    tsr_trainer_free(t);
    /* skip: a skipped step is not counted, so the poisoned step comes again */
    t = make_fault(f, TSR_NONFINITE_SKIP, 0, 0);
    assert_int_equal(step_unchanged(f, t, f->x), TSR_OK);
    assert_int_equal(tsr_trainer_skipped(t), 1);
    assert_int_equal(tsr_trainer_step(t, f->x, f->y, B, &loss), TSR_OK); /* step 0 again: */
    assert_int_equal(tsr_trainer_skipped(t), 2);                           /* still poisoned */
    assert_int_equal(tsr_trainer_steps(t), 0);
    tsr_trainer_free(t);
    /* a later step: the ones before it are applied, that one skipped */
    t = make_fault(f, TSR_NONFINITE_SKIP, 0, 1);
    assert_int_equal(tsr_trainer_step(t, f->x, f->y, B, &loss), TSR_OK);
    assert_int_equal(tsr_trainer_steps(t), 1);
    assert_int_equal(step_unchanged(f, t, f->x), TSR_OK);
    assert_int_equal(tsr_trainer_skipped(t), 1);
    tsr_trainer_free(t);
}

static void test_nonfinite_bad_config(void **state) {
    fixture *f = *state;
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    tsr_trainer *t = NULL;
    o.nonfinite = (tsr_nonfinite_policy)7;
    assert_int_equal(tsr_trainer_create(f->ctx, f->model, &o, &t), TSR_ERR_INVALID_ARG);
    assert_null(t);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "non-finite policy 7"));
    tsr_trainer_options_init(&o);
    o.fault_grad_nan_step = -2;
    assert_int_equal(tsr_trainer_create(f->ctx, f->model, &o, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "fault_grad_nan_step -2"));
}

/* A model whose parameters exceed what the device can hold: a clear error naming the device
 * and the size, on every device of a full context (host, and PoCL's CPU device if present). */
static void test_device_memory_exhausted(void **state) {
    (void)state;
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_HWLOC;
    co.log_level = TSR_LOG_OFF;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &co), TSR_OK);
    /* 2^22 inputs x 2^14 units = 2^36 weights = 256 GiB of parameters */
    tsr_model_input in = {1, 2048, 2048, 10};
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, "dense:16384,dense:10", in, &m), TSR_OK);
    for (int d = 0; d < tsr_context_device_count(ctx); d++) {
        const tsr_device_info *info = tsr_context_device(ctx, d);
        assert_true((double)tsr_model_param_count(m) * 4 > (double)info->global_mem_bytes);
        tsr_trainer_options o;
        tsr_trainer_options_init(&o);
        o.device = info->id;
        o.batch = 1;
        tsr_trainer *t = NULL;
        tsr_status s = tsr_trainer_create(ctx, m, &o, &t);
        print_message("%s: %s (%s)\n", info->id, tsr_context_last_error(ctx), tsr_status_str(s));
        assert_int_equal(s, TSR_ERR_DEVICE_MEMORY);
        assert_null(t);
        assert_non_null(strstr(tsr_context_last_error(ctx), info->id));
        assert_non_null(strstr(tsr_context_last_error(ctx), "bytes"));
    }
    tsr_model_free(m);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nan_input_stop_and_skip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nan_gradient_stop_and_skip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nonfinite_bad_config, setup, teardown),
        cmocka_unit_test(test_device_memory_exhausted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
