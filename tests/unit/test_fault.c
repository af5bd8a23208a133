/* Fault handling through the public API: non-finite values in a training step (a crafted NaN
 * input, an injected NaN gradient) stop or skip the step as configured, leaving parameters
 * untouched; a model larger than the device gives a clear device-memory error on every device.
 * (An OpenCL build failure carries the build log: test_opencl.c, test_build_error.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
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

/* The stop request (preemption): read once per step; the step in flight is completed and
 * counted, then TSR_ERR_INTERRUPTED; the parameters equal an uninterrupted trainer's after as
 * many steps, and clearing the flag lets training go on (async: tests/mpi/test_async.c). */
static void test_stop_request(void **state) {
    fixture *f = *state;
    static volatile sig_atomic_t stop;
    stop = 0;
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = B;
    tsr_trainer *ref = NULL, *t = NULL;
    assert_int_equal(tsr_trainer_create(f->ctx, f->model, &o, &ref), TSR_OK);
    o.stop_flag = &stop;
    assert_int_equal(tsr_trainer_create(f->ctx, f->model, &o, &t), TSR_OK);
    float loss = 0, ref_loss = 0;
    assert_int_equal(tsr_trainer_step(t, f->x, f->y, B, &loss), TSR_OK);
    stop = 1; /* what a SIGTERM handler does */
    assert_int_equal(tsr_trainer_step(t, f->x, f->y, B, &loss), TSR_ERR_INTERRUPTED);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "stopped on request after step 2"));
    assert_int_equal(tsr_trainer_steps(t), 2);
    for (int i = 0; i < 2; i++) assert_int_equal(tsr_trainer_step(ref, f->x, f->y, B, &ref_loss), TSR_OK);
    assert_memory_equal(&loss, &ref_loss, sizeof loss);
    size_t np = tsr_model_param_count(f->model);
    float *a = malloc(np * sizeof *a), *b = malloc(np * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(tsr_trainer_get_params(t, a, np), TSR_OK);
    assert_int_equal(tsr_trainer_get_params(ref, b, np), TSR_OK);
    assert_memory_equal(a, b, np * sizeof *a);
    stop = 0;
    assert_int_equal(tsr_trainer_step(t, f->x, f->y, B, &loss), TSR_OK);
    assert_int_equal(tsr_trainer_steps(t), 3);
    assert_string_equal(tsr_status_name(TSR_ERR_INTERRUPTED), "TSR_ERR_INTERRUPTED");
    assert_string_equal(tsr_status_str(TSR_ERR_INTERRUPTED), "stopped on request");
    free(a);
    free(b);
    tsr_trainer_free(t);
    tsr_trainer_free(ref);
}

/* tsr_loader_seek(k): the batches that follow are those of a loader that took k of them. */
static void test_loader_seek(void **state) {
    fixture *f = *state;
    enum { N = 37 };
    float img[N * 16];
    int32_t lab[N];
    for (int i = 0; i < N; i++) lab[i] = i % 3;
    tsr_test_fill_uniform(img, N * 16, 3, 0, 1);
    tsr_dataset d;
    memset(&d, 0, sizeof d);
    d.count = N, d.channels = 1, d.height = 4, d.width = 4, d.features = 16, d.classes = 3;
    d.images = img, d.labels = lab;
    tsr_loader_options lo = {5, 9, 1, 0, 1, 0};
    tsr_loader *a = NULL, *b = NULL;
    assert_int_equal(tsr_loader_create(f->ctx, &d, &lo, &a), TSR_OK);
    assert_int_equal(tsr_loader_create(f->ctx, &d, &lo, &b), TSR_OK);
    size_t ia[5], ib[5];
    tsr_loader_start_epoch(a, 2);
    tsr_loader_start_epoch(b, 2);
    for (int k = 0; k < 3; k++) assert_int_equal(tsr_loader_next_indices(a, ia), 5);
    assert_int_equal(tsr_loader_seek(b, 3), TSR_OK);
    size_t n;
    while ((n = tsr_loader_next_indices(a, ia)) > 0) {
        assert_int_equal(tsr_loader_next_indices(b, ib), n);
        assert_memory_equal(ia, ib, n * sizeof *ia);
    }
    assert_int_equal(tsr_loader_next_indices(b, ib), 0);
    assert_int_equal(tsr_loader_seek(b, 8), TSR_OK); /* the end: nothing left */
    assert_int_equal(tsr_loader_next_indices(b, ib), 0);
    assert_int_equal(tsr_loader_seek(b, 9), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "past the epoch's 8 global batches"));
    tsr_loader_free(a);
    tsr_loader_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nan_input_stop_and_skip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nan_gradient_stop_and_skip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nonfinite_bad_config, setup, teardown),
        cmocka_unit_test(test_device_memory_exhausted),
        cmocka_unit_test_setup_teardown(test_stop_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_loader_seek, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
