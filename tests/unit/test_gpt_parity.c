/* GPT parity with PyTorch (as llm.c's test_gpt2.c): tessera's gpt-mini, loaded with the
 * weights of tests/ref/gpt_mini_ref.safetensors (written by bench/gpt_reference.py from
 * PyTorch), must reproduce the file's logits, loss and every gradient on the same batch, the
 * losses of 10 AdamW steps and the weights after them, on every device of the machine (host,
 * and OpenCL devices such as PoCL). Tolerances as tests/ref/README.md states and measures:
 * logits relative 1e-5, loss absolute 1e-5, gradients relative 3e-5 per tensor, AdamW losses
 * absolute 1e-4, weights after the steps absolute 2e-4 per tensor. Relative: max |a - ref| <=
 * tol * max |ref| over the tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backends/backend.h"
#include "lib/core/internal.h"
#include "lib/model/stage.h"
#include "support/test_util.h"
#include "tessera/safetensors.h"

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\nleak:libclblast\n";
}

#define REF_FILE "tests/ref/gpt_mini_ref.safetensors"
#define B 4
#define T 64
#define STEPS 10

#define OK(ctx, call)                                                                                   \
    do {                                                                                                \
        tsr_status ok_s_ = (call);                                                                      \
        if (ok_s_ != TSR_OK)                                                                            \
            fail_msg("%s -> %s: %s", #call, tsr_status_name(ok_s_), tsr_context_last_error(ctx)); \
    } while (0)

typedef struct fixture {
    tsr_context *ctx;
    tsr_safetensors *ref;
    tsr_model *model;
    size_t np;
    float *params;           /* the file's initial weights in tessera's layout */
    int32_t ids[B * T], targets[B * T];
} fixture;

/* A reference tensor as floats (caller frees); count checked when nonzero. */
static float *ref_f32(fixture *f, const char *name, size_t count) {
    const tsr_st_tensor *t = tsr_safetensors_find(f->ref, name);
    if (!t) fail_msg("%s: no tensor '%s'", REF_FILE, name);
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= (size_t)t->shape[d];
    if (count) assert_int_equal(n, count);
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    OK(f->ctx, tsr_safetensors_to_f32(f->ctx, t, x, n));
    return x;
}

static void expect_close(const char *dev, const char *what, const float *got, const float *want, size_t n,
                         double rel, double abs_tol) {
    double diff = tsr_test_max_diff(got, want, n), bound = abs_tol + rel * tsr_test_max_abs(want, n);
    if (!(diff <= bound)) fail_msg("[%s] %s: max |diff| %.3g > %.3g", dev, what, diff, bound);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.log_level = TSR_LOG_OFF;
    assert_int_equal(tsr_context_create(&f->ctx, &o), TSR_OK);
    OK(f->ctx, tsr_safetensors_open(f->ctx, REF_FILE, &f->ref));
    tsr_gpt_config c;
    OK(f->ctx, tsr_gpt_config_parse(f->ctx, "gpt-mini", &c));
    OK(f->ctx, tsr_model_create_gpt(f->ctx, &c, T, &f->model));
    f->np = tsr_model_param_count(f->model);
    assert_int_equal(f->np, 858880); /* the README's count: the head is tied, not a copy */
    f->params = calloc(f->np, sizeof *f->params);
    assert_non_null(f->params);
    for (size_t i = 0; i < tsr_model_param_tensor_count(f->model); i++) {
        tsr_param_info p;
        char name[64];
        OK(f->ctx, tsr_model_param_tensor(f->model, i, &p));
        OK(f->ctx, tsr_model_torch_name(f->ctx, f->model, i, name));
        float *x = ref_f32(f, name, p.count);
        memcpy(f->params + p.offset, x, p.count * sizeof *x);
        free(x);
    }
    const tsr_st_tensor *tok = tsr_safetensors_find(f->ref, "tokens");
    assert_non_null(tok);
    assert_int_equal(tok->dtype, TSR_ST_I32);
    int32_t all[B * (T + 1)];
    assert_int_equal(tok->bytes, sizeof all);
    memcpy(all, tok->data, sizeof all); /* little-endian int32, as this machine */
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0; t < T; t++) {
            f->ids[b * T + t] = all[b * (T + 1) + t];
            f->targets[b * T + t] = all[b * (T + 1) + t + 1];
        }
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    free(f->params);
    tsr_model_free(f->model);
    tsr_safetensors_close(f->ctx, f->ref);
    tsr_context_free(f->ctx);
    free(f);
    return 0;
}

/* Forward and backward once at the file's weights: logits, loss, every gradient. */
static void check_gradients(fixture *f, int device) {
    tsr_context *ctx = f->ctx;
    const char *dev = tsr_context_device(ctx, device)->id;
    tsr_backend *be;
    tsr_stage *st;
    OK(ctx, tsr_backend_open(ctx, device, &be));
    tsr_stage_options so = {0, tsr_model_layer_count(f->model), B, 0, TSR_PRECISION_FP32, 1};
    OK(ctx, tsr_stage_create(be, f->model, &so, &st));
    OK(ctx, tsr_write_f32(tsr_stage_params(st), 0, f->params, f->np));
    OK(ctx, tsr_ref_write(tsr_stage_input(st), TSR_DTYPE_I32, f->ids, B * T));
    OK(ctx, tsr_ref_write(tsr_stage_labels(st), TSR_DTYPE_I32, f->targets, B * T));
    float loss;
    OK(ctx, tsr_stage_forward(st, B, 1, 0, &loss));
    float *want = ref_f32(f, "logits", B * T * 256), *got = malloc(B * T * 256 * sizeof *got);
    assert_non_null(got);
    OK(ctx, tsr_ref_read(tsr_stage_output(st), TSR_DTYPE_F32, got, B * T * 256));
    expect_close(dev, "logits", got, want, B * T * 256, 1e-5, 0);
    free(want);
    free(got);
    float *ref_loss = ref_f32(f, "loss", 1);
    expect_close(dev, "loss", &loss, ref_loss, 1, 0, 1e-5);
    free(ref_loss);
    OK(ctx, tsr_stage_backward(st, B, 0));
    float *grads = malloc(f->np * sizeof *grads);
    assert_non_null(grads);
    OK(ctx, tsr_read_f32(tsr_stage_grads(st), 0, grads, f->np));
    for (size_t i = 0; i < tsr_model_param_tensor_count(f->model); i++) {
        tsr_param_info p;
        char name[64], gname[80];
        OK(ctx, tsr_model_param_tensor(f->model, i, &p));
        OK(ctx, tsr_model_torch_name(ctx, f->model, i, name));
        snprintf(gname, sizeof gname, "grad.%s", name);
        float *g = ref_f32(f, gname, p.count);
        expect_close(dev, gname, grads + p.offset, g, p.count, 3e-5, 0);
        free(g);
    }
    /* the probabilities written over the logits (keep_logits 0, what training does): the same
     * loss and gradients bit for bit, one [B, T, V] tensor less */
    tsr_stage *over;
    so.keep_logits = 0;
    OK(ctx, tsr_stage_create(be, f->model, &so, &over));
    assert_int_equal(tsr_stage_device_bytes(over) + B * T * 256 * sizeof(float), tsr_stage_device_bytes(st));
    OK(ctx, tsr_write_f32(tsr_stage_params(over), 0, f->params, f->np));
    OK(ctx, tsr_ref_write(tsr_stage_input(over), TSR_DTYPE_I32, f->ids, B * T));
    OK(ctx, tsr_ref_write(tsr_stage_labels(over), TSR_DTYPE_I32, f->targets, B * T));
    float loss_over;
    OK(ctx, tsr_stage_forward(over, B, 1, 0, &loss_over));
    OK(ctx, tsr_stage_backward(over, B, 0));
    float *grads_over = malloc(f->np * sizeof *grads_over);
    assert_non_null(grads_over);
    OK(ctx, tsr_read_f32(tsr_stage_grads(over), 0, grads_over, f->np));
    if (memcmp(&loss_over, &loss, sizeof loss) || memcmp(grads_over, grads, f->np * sizeof *grads))
        fail_msg("[%s] probabilities over the logits change the loss or the gradients", dev);
    free(grads_over);
    tsr_stage_free(over);
    free(grads);
    tsr_stage_free(st);
    tsr_backend_free(be);
}

/* Ten AdamW steps on the same batch through the trainer: losses, weights, the loss after. */
static void check_adamw(fixture *f, int device) {
    tsr_context *ctx = f->ctx;
    const char *dev = tsr_context_device(ctx, device)->id;
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.device = dev;
    o.batch = B;
    o.optimizer.kind = TSR_OPTIM_ADAMW;
    o.optimizer.lr = 1e-3f;
    o.optimizer.beta1 = 0.9f, o.optimizer.beta2 = 0.999f, o.optimizer.eps = 1e-8f;
    o.optimizer.weight_decay = 0.1f;
    tsr_trainer *tr;
    OK(ctx, tsr_trainer_create(ctx, f->model, &o, &tr));
    OK(ctx, tsr_trainer_set_params(tr, f->params, f->np));
    float losses[STEPS];
    for (int s = 0; s < STEPS; s++) OK(ctx, tsr_trainer_step_tokens(tr, f->ids, f->targets, B, &losses[s]));
    float *want = ref_f32(f, "adamw.losses", STEPS);
    expect_close(dev, "adamw.losses", losses, want, STEPS, 0, 1e-4);
    free(want);
    /* the loss after the steps, through evaluation over the same batch */
    tsr_dataset d = {B, T, 1, 1, T, 256, NULL, f->targets, f->ids, T};
    double acc, after;
    OK(ctx, tsr_trainer_evaluate(tr, &d, &acc, &after));
    float after_f = (float)after, *ref_after = ref_f32(f, "adamw.loss_after", 1);
    expect_close(dev, "adamw.loss_after", &after_f, ref_after, 1, 0, 1e-4);
    free(ref_after);
    float *now = malloc(f->np * sizeof *now);
    assert_non_null(now);
    OK(ctx, tsr_trainer_get_params(tr, now, f->np));
    size_t compared = 0;
    for (size_t i = 0; i < tsr_model_param_tensor_count(f->model); i++) {
        tsr_param_info p;
        char name[64], aname[80];
        OK(ctx, tsr_model_param_tensor(f->model, i, &p));
        OK(ctx, tsr_model_torch_name(ctx, f->model, i, name));
        snprintf(aname, sizeof aname, "after10.%s", name);
        if (!tsr_safetensors_find(f->ref, aname)) continue;
        float *w = ref_f32(f, aname, p.count);
        expect_close(dev, aname, now + p.offset, w, p.count, 0, 2e-4);
        free(w);
        compared++;
    }
    assert_true(compared >= 10);
    free(now);
    tsr_trainer_free(tr);
}

static void test_host(void **state) {
    fixture *f = *state;
    for (int i = 0; i < tsr_context_device_count(f->ctx); i++)
        if (tsr_context_device(f->ctx, i)->backend == TSR_BACKEND_HOST) {
            check_gradients(f, i);
            check_adamw(f, i);
            return;
        }
    fail_msg("no host device");
}

/* Every OpenCL device that has the transformer kernels. */
static void test_opencl(void **state) {
    fixture *f = *state;
    int ran = 0;
    for (int i = 0; i < tsr_context_device_count(f->ctx); i++) {
        if (tsr_context_device(f->ctx, i)->backend == TSR_BACKEND_HOST) continue;
        tsr_backend *be;
        if (tsr_backend_open(f->ctx, i, &be) != TSR_OK) continue;
        int has = be->iface->attention_forward != NULL;
        tsr_backend_free(be);
        if (!has) continue;
        check_gradients(f, i);
        check_adamw(f, i);
        ran++;
    }
    if (!ran) TSR_TEST_SKIP("no OpenCL device with the transformer kernels on this machine");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_host, setup, teardown),
        cmocka_unit_test_setup_teardown(test_opencl, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
