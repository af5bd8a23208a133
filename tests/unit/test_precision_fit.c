/* Memory in bf16/fp16: a stage's footprint adds tsr_stage_memory.round_bytes, a bound on the
 * backend's rounded copy of one GEMM's operands, and keeps activations in 16 bits where that
 * saves memory. Checked: the bound's exact value for a one-layer model and the fit figures with
 * and without it; the 16-bit storage's exact bytes and the fallback to float32 storage; that
 * 16-bit storage gives bitwise the results of float32 storage where every reader rounds
 * anyway (host and PoCL); that a real bf16 forward and backward (mlp, cnn, gpt-mini; host)
 * never asks the backend for more 16-bit operand room than the bound. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "backends/backend.h"
#include "lib/model/fit.h"
#include "lib/model/stage.h"
#include "support/test_util.h"
#include "tessera.h"

static void test_exact_and_fit(void **st) {
    (void)st;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_model *m = NULL;
    assert_int_equal(tsr_model_parse(ctx, "dense:10", (tsr_model_input){1, 4, 8, 10}, &m), TSR_OK);
    tsr_stage_options so = {0, 1, 16, 0, TSR_PRECISION_FP32, 0};
    tsr_stage_memory mem;
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &mem), TSR_OK);
    /* input 16 x 32, output gradient 16 x 10, weights 32 x 10 and bias 10 */
    assert_int_equal(mem.round_bytes, (16 * 32 + 16 * 10 + 320 + 10) * 4);
    tsr_fit f32, f16;
    const tsr_device_info *dev = tsr_context_device(ctx, 0);
    assert_int_equal(tsr_stage_check_fit(ctx, m, &so, dev, 2, 1, &f32), TSR_OK);
    tsr_stage_options half = so;
    half.precision = TSR_PRECISION_BF16; /* its only output is the stage's: nothing stored in 16 bits */
    assert_int_equal(tsr_stage_check_fit(ctx, m, &half, dev, 2, 1, &f16), TSR_OK);
    assert_true(f16.activations == f32.activations + mem.round_bytes);
    assert_true(f16.device_total == f32.device_total + mem.round_bytes);
    assert_true(f16.params == f32.params && f16.optimizer == f32.optimizer);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

/* One bf16 training forward and backward of a stage of the whole model at batch B. */
static void bound_holds(tsr_context *ctx, tsr_model *m, size_t B) {
    tsr_backend *be = NULL;
    assert_int_equal(tsr_backend_open(ctx, 0, &be), TSR_OK);
    assert_int_equal(tsr_backend_set_precision(be, TSR_PRECISION_BF16), TSR_OK);
    tsr_stage_options so = {0, tsr_model_layer_count(m), B, 0, TSR_PRECISION_BF16, 0};
    tsr_stage_memory mem;
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &mem), TSR_OK);
    tsr_stage *st = NULL;
    assert_int_equal(tsr_stage_create(be, m, &so, &st), TSR_OK);
    assert_int_equal(tsr_stage_init_params(st, 0, 3), TSR_OK);
    tsr_model_input_desc d = tsr_model_get_input_desc(m);
    size_t per = d.dims[0] * (d.rank > 1 ? d.dims[1] : 1) * (d.rank > 2 ? d.dims[2] : 1);
    size_t P = tsr_model_positions(m), n = B * per;
    float *x = malloc(n * sizeof *x);
    int32_t *y = malloc(B * P * sizeof *y);
    for (size_t i = 0; i < n; i++) {
        if (d.dtype == TSR_DTYPE_I32) ((int32_t *)x)[i] = (int32_t)(i * 7 % d.vocab);
        else x[i] = (float)(i % 17) / 17.0f - 0.5f;
    }
    for (size_t i = 0; i < B * P; i++) y[i] = (int32_t)(i * 3 % d.classes);
    assert_int_equal(tsr_ref_write(tsr_stage_input(st), d.dtype, x, n), TSR_OK);
    assert_int_equal(tsr_ref_write(tsr_stage_labels(st), TSR_DTYPE_I32, y, B * P), TSR_OK);
    float loss;
    assert_int_equal(tsr_stage_forward(st, B, 1, 1, &loss), TSR_OK);
    assert_int_equal(tsr_stage_backward(st, B, 0), TSR_OK);
    assert_non_null(be->round_buf);
    /* round_room allocates a quarter more than it was asked for */
    if (be->round_buf->bytes > mem.round_bytes + mem.round_bytes / 4)
        fail_msg("%s: the backend asked for %zu bytes of 16-bit operands, the bound is %zu",
                 tsr_model_spec(m), be->round_buf->bytes * 4 / 5, mem.round_bytes);
    tsr_stage_free(st);
    tsr_backend_free(be);
    free(x);
    free(y);
}

/* 16-bit storage, exactly: in dense:32,relu,dense:32,relu,dense:32,relu,dense:10 at batch 16
 * the outputs of the first six layers (16 x 32 each) are kept in fp16, the last (the stage's)
 * in float32; a relu's call stages its input and output in float32 (the largest call). With
 * one dense and relu the 16-bit storage would save less than that staging: the stage keeps
 * float32 activations. */
static void test_half_storage_exact(void **st) {
    (void)st;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_model *m = NULL;
    assert_int_equal(tsr_model_parse(ctx, "dense:32,relu,dense:32,relu,dense:32,relu,dense:10",
                                     (tsr_model_input){1, 4, 8, 10}, &m), TSR_OK);
    tsr_stage_options so = {0, 7, 16, 0, TSR_PRECISION_FP32, 0}, half = so;
    half.precision = TSR_PRECISION_FP16;
    tsr_stage_memory a, b;
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &a), TSR_OK);
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &half, &b), TSR_OK);
    assert_int_equal(a.staging_bytes, 0);
    assert_int_equal(b.act_set_bytes, a.act_set_bytes - 6 * (16 * 32 / 2) * 4);
    assert_int_equal(b.staging_bytes, 2 * 16 * 32 * 4);
    assert_int_equal(b.total_bytes, a.total_bytes - 6 * (16 * 32 / 2) * 4 + b.staging_bytes);
    tsr_model *shallow = NULL;
    assert_int_equal(tsr_model_parse(ctx, "dense:32,relu,dense:10", (tsr_model_input){1, 4, 8, 10}, &shallow),
                     TSR_OK);
    tsr_stage_options s3 = {0, 3, 16, 0, TSR_PRECISION_FP16, 0};
    assert_int_equal(tsr_stage_plan_memory(ctx, shallow, &s3, &b), TSR_OK);
    assert_int_equal(b.staging_bytes, 0);
    s3.precision = TSR_PRECISION_FP32;
    assert_int_equal(tsr_stage_plan_memory(ctx, shallow, &s3, &a), TSR_OK);
    assert_int_equal(b.act_set_bytes, a.act_set_bytes);
    tsr_model_free(shallow);
    half.precision = (tsr_precision)7;
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &half, &b), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "stage precision 7 is not fp32"));
    tsr_model_free(m);
    tsr_context_free(ctx);
}

/* Loss and every gradient of a dense/relu chain after one forward and backward on device
 * `dev` with GEMMs in `p`, activations stored in `storage` (fp32 or p). */
static void chain_run(tsr_context *ctx, int dev, tsr_precision p, tsr_precision storage, float *loss,
                      float *grads, size_t *stored_bytes) {
    tsr_model *m = NULL;
    assert_int_equal(tsr_model_parse(ctx, "dense:40,relu,dense:33,relu,dense:40,relu,dense:29,relu,dense:10",
                                     (tsr_model_input){1, 3, 7, 10}, &m), TSR_OK);
    const size_t B = 9, in = 21;
    tsr_backend *be = NULL;
    assert_int_equal(tsr_backend_open(ctx, dev, &be), TSR_OK);
    assert_int_equal(tsr_backend_set_precision(be, p), TSR_OK);
    tsr_stage_options so = {0, tsr_model_layer_count(m), B, 0, storage, 0};
    tsr_stage *st = NULL;
    assert_int_equal(tsr_stage_create(be, m, &so, &st), TSR_OK);
    assert_int_equal(tsr_stage_init_params(st, 0, 5), TSR_OK);
    float x[9 * 21];
    int32_t y[9];
    for (size_t i = 0; i < B * in; i++) x[i] = (float)((i * 37) % 23) / 7.0f - 1.5f;
    for (size_t i = 0; i < B; i++) y[i] = (int32_t)(i * 3 % 10);
    assert_int_equal(tsr_ref_write(tsr_stage_input(st), TSR_DTYPE_F32, x, B * in), TSR_OK);
    assert_int_equal(tsr_ref_write(tsr_stage_labels(st), TSR_DTYPE_I32, y, B), TSR_OK);
    assert_int_equal(tsr_stage_forward(st, B, 1, 1, loss), TSR_OK);
    assert_int_equal(tsr_stage_backward(st, B, 0), TSR_OK);
    assert_int_equal(tsr_read_f32(tsr_stage_grads(st), 0, grads, tsr_stage_param_count(st)), TSR_OK);
    *stored_bytes = tsr_stage_act_bytes(st);
    tsr_stage_free(st);
    tsr_backend_free(be);
    tsr_model_free(m);
}

/* 16-bit storage changes nothing where every reader of a stored tensor rounds it anyway: in a
 * chain of dense layers and relus (relu commutes with rounding; a dense rounds its input for
 * its GEMM, and its weight gradient's), the loss and every gradient with activations stored in
 * bf16/fp16 equal those with float32 storage bit for bit, on every device. */
static void test_half_storage_bitwise(void **st) {
    (void)st;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    enum { NP = 40 * 21 + 40 + 33 * 40 + 33 + 40 * 33 + 40 + 29 * 40 + 29 + 10 * 29 + 10 };
    static float g32[NP], g16[NP];
    for (int dev = 0; dev < tsr_context_device_count(ctx) && dev < 2; dev++)
        for (int p = TSR_PRECISION_BF16; p <= TSR_PRECISION_FP16; p++) {
            float l32, l16;
            size_t b32, b16;
            chain_run(ctx, dev, (tsr_precision)p, TSR_PRECISION_FP32, &l32, g32, &b32);
            chain_run(ctx, dev, (tsr_precision)p, (tsr_precision)p, &l16, g16, &b16);
            assert_true(b16 < b32); /* the storage did take 16 bits */
            if (memcmp(&l32, &l16, sizeof l32))
                fail_msg("device %d %s: loss %.9g with 16-bit storage, %.9g without", dev,
                         tsr_precision_name((tsr_precision)p), (double)l16, (double)l32);
            for (size_t i = 0; i < NP; i++)
                if (memcmp(&g32[i], &g16[i], sizeof *g32))
                    fail_msg("device %d %s: gradient %zu is %.9g with 16-bit storage, %.9g without", dev,
                             tsr_precision_name((tsr_precision)p), i, (double)g16[i], (double)g32[i]);
        }
    tsr_context_free(ctx);
}

static void test_bound_holds(void **st) {
    (void)st;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    static const char *specs[] = {"dense:256,relu,dense:128,relu,dense:10",
                                  "conv3x3:8,relu,pool2,conv3x3:16,relu,pool2,dense:32,relu,dense:10"};
    for (size_t i = 0; i < 2; i++) {
        tsr_model *m = NULL;
        assert_int_equal(tsr_model_parse(ctx, specs[i], TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
        bound_holds(ctx, m, 8);
        tsr_model_free(m);
    }
    tsr_gpt_config c;
    tsr_model *g = NULL;
    assert_int_equal(tsr_gpt_config_parse(ctx, "gpt-mini", &c), TSR_OK);
    assert_int_equal(tsr_model_create_gpt(ctx, &c, 32, &g), TSR_OK);
    bound_holds(ctx, g, 4);
    tsr_model_free(g);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_and_fit),
        cmocka_unit_test(test_half_storage_exact),
        cmocka_unit_test(test_half_storage_bitwise),
        cmocka_unit_test(test_bound_holds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
