/* Memory fit (lib/model/fit.c): the footprint comes from the stage's own plan, the check
 * refuses one byte short of it and accepts it exactly, on device memory (a GPU) and on host
 * memory (the host backend, an OpenCL CPU device), naming the device, the bytes by kind and
 * what to change; an oversized model is refused by tsr_trainer_create before allocating. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/model/fit.h"
#include "lib/model/stage.h"
#include "support/test_util.h"

static tsr_context *ctx;

static int setup(void **state) {
    (void)state;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL;
    return tsr_context_create(&ctx, &o) == TSR_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tsr_context_free(ctx);
    return 0;
}

static void expect_refusal(tsr_status st, tsr_status want, const char *device) {
    assert_int_equal(st, want);
    const char *err = tsr_context_last_error(ctx);
    if (!strstr(err, device) || !strstr(err, "parameters") || !strstr(err, "optimizer state") ||
        !strstr(err, "smaller model or batch"))
        fail_msg("the refusal does not name the device, the bytes by kind and the advice: %s", err);
}

static void test_footprint_and_bounds(void **state) {
    (void)state;
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, "cnn", TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    tsr_stage_options so = {0, tsr_model_layer_count(m), 32, 0, TSR_PRECISION_FP32, 0};
    tsr_stage_memory plan;
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &plan), TSR_OK);

    /* the figures are the plan's: what the stage allocates plus the optimizer's state */
    tsr_device_info gpu;
    memset(&gpu, 0, sizeof gpu);
    strcpy(gpu.id, "opencl:9:9");
    strcpy(gpu.name, "Test GPU");
    gpu.kind = TSR_DEVICE_GPU;
    gpu.backend = TSR_BACKEND_OPENCL;
    gpu.global_mem_bytes = 1ull << 40;
    tsr_fit f;
    assert_int_equal(tsr_stage_check_fit(ctx, m, &so, &gpu, 2, 1, &f), TSR_OK);
    assert_int_equal(f.params, plan.param_bytes);
    assert_int_equal(f.optimizer, 2 * (uint64_t)plan.param_bytes);
    assert_int_equal(f.device_total - f.optimizer, plan.total_bytes);
    tsr_backend *be;
    tsr_stage *st;
    assert_int_equal(tsr_backend_open(ctx, 0, &be), TSR_OK);
    assert_int_equal(tsr_stage_create(be, m, &so, &st), TSR_OK);
    assert_int_equal(tsr_stage_device_bytes(st), f.device_total - f.optimizer);
    tsr_stage_free(st);
    tsr_backend_free(be);

    /* device memory: one byte short is refused, exactly enough passes */
    gpu.global_mem_bytes = f.device_total - 1;
    expect_refusal(tsr_stage_check_fit(ctx, m, &so, &gpu, 2, 1, NULL), TSR_ERR_DEVICE_MEMORY,
                   "opencl:9:9");
    gpu.global_mem_bytes = f.device_total;
    assert_int_equal(tsr_stage_check_fit(ctx, m, &so, &gpu, 2, 1, NULL), TSR_OK);
    /* SGD keeps one state tensor: fits where Adam does not */
    gpu.global_mem_bytes = f.device_total - plan.param_bytes;
    assert_int_equal(tsr_stage_check_fit(ctx, m, &so, &gpu, 1, 1, NULL), TSR_OK);
    /* micro-batches in flight multiply the activation sets */
    tsr_fit f4;
    gpu.global_mem_bytes = 1ull << 40;
    assert_int_equal(tsr_stage_check_fit(ctx, m, &so, &gpu, 2, 4, &f4), TSR_OK);
    assert_int_equal(f4.activations - f.activations, 3 * (uint64_t)plan.act_set_bytes);

    /* host memory: an OpenCL CPU device whose own limit is below the footprint */
    tsr_device_info cpu = gpu;
    strcpy(cpu.id, "opencl:1:0");
    cpu.kind = TSR_DEVICE_CPU;
    cpu.global_mem_bytes = f.device_total; /* the scan copy and probabilities do not fit too */
    expect_refusal(tsr_stage_check_fit(ctx, m, &so, &cpu, 2, 1, &f), TSR_ERR_NO_MEMORY, "opencl:1:0");
    assert_true(f.host_total > f.device_total);
    cpu.global_mem_bytes = f.host_total;
    assert_int_equal(tsr_stage_check_fit(ctx, m, &so, &cpu, 2, 1, NULL), TSR_OK);
    tsr_model_free(m);
}

/* An oversized model (the probe finding: 'dense:65536,dense:65536,dense:10', ~80 GiB with Adam)
 * is refused by tsr_trainer_create with the figures, without allocating it. */
static void test_trainer_refuses_oversized(void **state) {
    (void)state;
    uint64_t avail = tsr_host_available_bytes();
    if (!avail) TSR_TEST_SKIP("no /proc/meminfo MemAvailable on this system");
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, "dense:65536,dense:65536,dense:10", TSR_MODEL_INPUT_MNIST, &m),
                     TSR_OK);
    if ((uint64_t)tsr_model_param_count(m) * 4 * 4 < avail) { /* a machine this large: not a test */
        tsr_model_free(m);
        TSR_TEST_SKIP("the host has more memory than the oversized model needs");
    }
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    tsr_trainer *t = (tsr_trainer *)0x1;
    expect_refusal(tsr_trainer_create(ctx, m, &o, &t), TSR_ERR_DEVICE_MEMORY, "host");
    assert_null(t);
    tsr_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_footprint_and_bounds),
        cmocka_unit_test(test_trainer_refuses_oversized),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
