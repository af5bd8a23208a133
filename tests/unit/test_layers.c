/* Layer kinds as ops tables: spec round trips of every kind, residual inputs by layer index
 * and their errors, the named parameter tensors against the stage's layout, and the memory
 * plan against what a stage allocates. (Gradients of every kind and of residual models are
 * checked against finite differences in test_gradcheck.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"
#include "lib/model/stage.h"
#include "support/test_util.h"

static tsr_context *ctx;

static int setup(void **state) {
    (void)state;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    return tsr_context_create(&ctx, &o) == TSR_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tsr_context_free(ctx);
    return 0;
}

static void assert_error_has(const char *what) {
    const char *err = tsr_context_last_error(ctx);
    if (!strstr(err, what)) {
        fprintf(stderr, "error '%s' lacks '%s'\n", err, what);
        fail();
    }
}

#define RESIDUAL "dense:64,relu,dense:64,add:1,relu,dense:10"

/* Every kind in the spec (add with a layer index and with the input), written loosely, gives
 * the canonical text, which parses back to itself; every kind's table names its type. */
static void test_round_trip_every_kind(void **state) {
    (void)state;
    static const struct {
        const char *spec, *canonical;
        tsr_model_input in;
    } cases[] = {
        {"conv3x3:4 / s2 / p0, relu, maxpool2, dropout:0.5, flatten, dense:10",
         "conv3x3:4/s2/p0,relu,pool2,dropout:0.5,flatten,dense:10", {1, 28, 28, 10}},
        {"conv5x5:3/valid,pool3/s2,conv1:3,add:1,flatten,dense:10",
         "conv5x5:3/p0,pool3/s2,conv1x1:3,add:1,flatten,dense:10", {1, 28, 28, 10}},
        {"dense:784, add:in, relu, add:1 ,dense:10", "dense:784,add:in,relu,add:1,dense:10", {784, 1, 1, 10}},
        {RESIDUAL, RESIDUAL, {1, 28, 28, 10}},
        {"conv3x3:2,add:in,add:1,dense:4", "conv3x3:2,add:in,add:1,dense:4", {2, 5, 5, 4}},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(cases); i++) {
        tsr_model *m, *again;
        if (tsr_model_parse(ctx, cases[i].spec, cases[i].in, &m) != TSR_OK) {
            fprintf(stderr, "%s: %s\n", cases[i].spec, tsr_context_last_error(ctx));
            fail();
        }
        assert_string_equal(tsr_model_spec(m), cases[i].canonical);
        assert_int_equal(tsr_model_parse(ctx, tsr_model_spec(m), cases[i].in, &again), TSR_OK);
        assert_string_equal(tsr_model_spec(again), tsr_model_spec(m));
        assert_int_equal(tsr_model_param_count(again), tsr_model_param_count(m));
        for (size_t l = 0; l < tsr_model_layer_count(m); l++) {
            tsr_layer_info a;
            assert_int_equal(tsr_model_layer_info(m, l, 1, &a), TSR_OK);
            const tsr_layer_ops *ops = tsr_layer_ops_of(a.kind);
            assert_non_null(ops);
            assert_string_equal(a.type, ops->type);
        }
        tsr_model_free(m);
        tsr_model_free(again);
    }
    /* add's info: same shape in and out, no parameters, the output as activation */
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, RESIDUAL, TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    tsr_layer_info a;
    assert_int_equal(tsr_model_layer_info(m, 3, 8, &a), TSR_OK);
    assert_string_equal(a.type, "add");
    assert_string_equal(a.spec, "add:1");
    assert_int_equal(a.out_c, 64);
    assert_int_equal(a.params, 0);
    assert_int_equal(a.forward_flops, 8 * 64);
    assert_int_equal(a.activation_bytes, 8 * 64 * 4);
    /* the loss ends every model and is no spec layer */
    assert_int_equal(tsr_model_layer_count(m), 6);
    tsr_model_free(m);
    tsr_layer l;
    assert_null(tsr_layer_ops_match("softmax_xent", 12, &l));
}

/* The builder gives the same model as the spec, inputs included. */
static void test_builder_residual(void **state) {
    (void)state;
    tsr_model *b, *p;
    tsr_model_input in = {784, 1, 1, 10};
    assert_int_equal(tsr_model_create(ctx, in, &b), TSR_OK);
    assert_int_equal(tsr_model_add_dense(b, 784), TSR_OK);
    assert_int_equal(tsr_model_add_residual(b, TSR_MODEL_INPUT_TENSOR), TSR_OK);
    assert_int_equal(tsr_model_add_relu(b), TSR_OK);
    assert_int_equal(tsr_model_add_residual(b, 0), TSR_OK);
    assert_int_equal(tsr_model_add_dense(b, 10), TSR_OK);
    assert_int_equal(tsr_model_check(b), TSR_OK);
    assert_int_equal(tsr_model_parse(ctx, tsr_model_spec(b), in, &p), TSR_OK);
    assert_string_equal(tsr_model_spec(b), "dense:784,add:in,relu,add:0,dense:10");
    for (size_t i = 0; i < tsr_model_layer_count(b); i++) {
        assert_int_equal(b->layers[i].ninputs, p->layers[i].ninputs);
        assert_memory_equal(b->layers[i].inputs, p->layers[i].inputs, sizeof b->layers[i].inputs);
    }
    assert_int_equal(b->layers[1].inputs[0], 1); /* layer 0's output */
    assert_int_equal(b->layers[1].inputs[1], 0); /* the model input */
    assert_int_equal(b->layers[3].inputs[1], 1);
    /* a later or missing layer, a shape that does not match */
    assert_int_equal(tsr_model_add_residual(b, 5), TSR_ERR_SHAPE);
    assert_error_has("layer 5 (add:5) reads layer 5's output, which is not before it (layers 0 to 4");
    assert_int_equal(tsr_model_add_residual(b, 3), TSR_ERR_SHAPE);
    assert_error_has("add: the previous output is 10x1x1 but layer 3's output is 784x1x1");
    assert_int_equal(tsr_model_layer_count(b), 5);
    tsr_model_free(b);
    tsr_model_free(p);
}

static void test_residual_spec_errors(void **state) {
    (void)state;
    static const struct {
        const char *spec;
        tsr_status status;
        const char *detail;
    } cases[] = {
        {"dense:10,add:1", TSR_ERR_SHAPE,
         "model spec at 10: layer 1 (add:1) reads layer 1's output, which is not before it (layers 0 to 0, or 'in')"},
        {"add:0,dense:10", TSR_ERR_SHAPE, "model spec at 1: layer 0 (add:0) reads layer 0's output, which is not"},
        {"dense:10,add:7", TSR_ERR_SHAPE, "(layers 0 to 0, or 'in')"},
        {"dense:64,relu,dense:10,add:0", TSR_ERR_SHAPE,
         "model spec at 24: add: the previous output is 10x1x1 but layer 0's output is 64x1x1"},
        {"dense:10,add:in", TSR_ERR_SHAPE, "add: the previous output is 10x1x1 but the model input is 1x28x28"},
        {"dense:10,add", TSR_ERR_PARSE, "model spec at 13: add needs the layer whose output it adds"},
        {"dense:10,add:x", TSR_ERR_PARSE, "model spec at 14: add needs the layer"},
        {"dense:10,add:99999999999", TSR_ERR_PARSE, "model spec at 14: add needs the layer"},
        {"dense:10,add:0/s2", TSR_ERR_PARSE, "model spec at 16: add takes no '/' options"},
        {"dense:10,add:0x", TSR_ERR_PARSE, "model spec at 15: unexpected 'x' after add"},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(cases); i++) {
        tsr_model *m = (tsr_model *)1;
        tsr_status s = tsr_model_parse(ctx, cases[i].spec, TSR_MODEL_INPUT_MNIST, &m);
        const char *err = tsr_context_last_error(ctx);
        if (s != cases[i].status || !strstr(err, cases[i].detail)) {
            fprintf(stderr, "spec '%s': status %s, detail '%s'; wanted %s, '%s'\n", cases[i].spec,
                    tsr_status_name(s), err, tsr_status_name(cases[i].status), cases[i].detail);
            fail();
        }
        assert_null(m);
    }
}

/* Named tensors in model order; offsets follow the documented flat layout (reverse layer
 * order, weight then bias) and match where a whole-model stage keeps them. */
static void test_param_tensors(void **state) {
    (void)state;
    tsr_backend *be;
    assert_int_equal(tsr_backend_open(ctx, 0, &be), TSR_OK);
    const char *specs[] = {"mlp", "cnn", RESIDUAL};
    for (size_t c = 0; c < TSR_ARRAY_SIZE(specs); c++) {
        tsr_model *m;
        assert_int_equal(tsr_model_parse(ctx, specs[c], TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
        tsr_stage *st;
        tsr_stage_options so = {0, tsr_model_layer_count(m), 2, 0, TSR_PRECISION_FP32, 0};
        assert_int_equal(tsr_stage_create(be, m, &so, &st), TSR_OK);
        size_t n = tsr_model_param_tensor_count(m), total = 0, layers_with = 0;
        for (size_t l = 0; l < tsr_model_layer_count(m); l++) layers_with += m->layers[l].weights > 0;
        assert_int_equal(n, 2 * layers_with);
        size_t prev_layer = 0;
        for (size_t i = 0; i < n; i++) {
            tsr_param_info p;
            assert_int_equal(tsr_model_param_tensor(m, i, &p), TSR_OK);
            size_t wo, wc, bo, bc, prod = 1;
            assert_int_equal(tsr_stage_layer_params(st, p.layer, &wo, &wc, &bo, &bc), TSR_OK);
            char want[64];
            snprintf(want, sizeof want, "%zu.%s", p.layer, i % 2 ? "bias" : "weight");
            assert_string_equal(p.name, want);
            assert_true(p.layer >= prev_layer);
            prev_layer = p.layer;
            for (size_t d = 0; d < p.rank; d++) prod *= p.shape[d];
            assert_int_equal(prod, p.count);
            assert_int_equal(p.offset, i % 2 ? bo : wo);
            assert_int_equal(p.count, i % 2 ? bc : wc);
            if (i % 2 == 0) {
                const tsr_layer *l = &m->layers[p.layer];
                assert_int_equal(p.shape[0], l->units);
                assert_int_equal(p.rank, l->kind == TSR_LAYER_CONV2D ? 4 : 2);
                assert_int_equal(p.shape[1], l->kind == TSR_LAYER_CONV2D ? l->in_c : tsr_layer_in_size(l));
            }
            total += p.count;
        }
        assert_int_equal(total, tsr_model_param_count(m));
        /* the last layer's weight sits at offset 0 */
        tsr_param_info last;
        assert_int_equal(tsr_model_param_tensor(m, n - 2, &last), TSR_OK);
        assert_int_equal(last.offset, 0);
        assert_int_equal(tsr_model_param_tensor(m, n, &last), TSR_ERR_NOT_FOUND);
        assert_error_has("parameter tensor");
        tsr_stage_free(st);
        tsr_model_free(m);
    }
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, "mlp", TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    tsr_param_info p;
    assert_int_equal(tsr_model_param_tensor(m, 0, &p), TSR_OK);
    assert_string_equal(p.name, "0.weight");
    assert_int_equal(p.shape[0], 256);
    assert_int_equal(p.shape[1], 784);
    assert_int_equal(p.offset, 10 * 100 + 10 + 100 * 128 + 100 + 128 * 256 + 128);
    tsr_model_free(m);
    tsr_backend_free(be);
}

/* The memory plan's bytes are what the stage allocates, for whole models, stages of them,
 * with and without the input gradient, and with more activation sets. */
static void test_memory_plan_is_allocation(void **state) {
    (void)state;
    tsr_backend *be;
    assert_int_equal(tsr_backend_open(ctx, 0, &be), TSR_OK);
    const char *specs[] = {"mlp", "cnn", RESIDUAL, "conv3x3:8,relu,conv3x3:8,add:1,relu,pool2,flatten,dense:10"};
    for (size_t c = 0; c < TSR_ARRAY_SIZE(specs); c++) {
        tsr_model *m;
        assert_int_equal(tsr_model_parse(ctx, specs[c], TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
        size_t L = tsr_model_layer_count(m);
        size_t ranges[][2] = {{0, L}, {0, 2}, {L - 2, L}, {1, L - 1}};
        for (size_t r = 0; r < TSR_ARRAY_SIZE(ranges); r++)
            for (int need = 0; need < 2; need++)
                for (size_t batch = 1; batch <= 33; batch += 32) {
                    tsr_stage_options so = {ranges[r][0], ranges[r][1], batch, need, TSR_PRECISION_FP32, 0};
                    tsr_stage_memory plan;
                    tsr_status s = tsr_stage_plan_memory(ctx, m, &so, &plan);
                    tsr_stage *st = NULL;
                    assert_int_equal(tsr_stage_create(be, m, &so, &st), s);
                    if (s != TSR_OK) { /* a stage inside the residual */
                        assert_error_has("which an earlier stage holds");
                        continue;
                    }
                    assert_int_equal(tsr_stage_device_bytes(st), plan.total_bytes);
                    assert_int_equal(tsr_stage_act_bytes(st), plan.act_set_bytes);
                    assert_int_equal(plan.total_bytes, 2 * plan.param_bytes + plan.act_set_bytes +
                                                           plan.grad_buffers * plan.grad_buffer_bytes);
                    assert_int_equal(tsr_stage_set_slots(st, 3), TSR_OK);
                    assert_int_equal(tsr_stage_device_bytes(st), plan.total_bytes + 2 * plan.act_set_bytes);
                    tsr_stage_free(st);
                }
        tsr_model_free(m);
    }
    /* a chain needs two gradient buffers (ping-pong); a residual whose branch ends in a dense
     * layer too (the add hands its gradient over in place, the dense adds into the other); one
     * with a dropout in the branch needs a third while the branch runs */
    tsr_model *m;
    tsr_stage_memory a, b;
    tsr_stage_options so = {0, 6, 4, 0, TSR_PRECISION_FP32, 0};
    assert_int_equal(tsr_model_parse(ctx, "dense:64,relu,dense:64,relu,relu,dense:10", TSR_MODEL_INPUT_MNIST, &m),
                     TSR_OK);
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &a), TSR_OK);
    tsr_model_free(m);
    assert_int_equal(tsr_model_parse(ctx, RESIDUAL, TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &b), TSR_OK);
    assert_int_equal(a.grad_buffers, 2);
    assert_int_equal(b.grad_buffers, 2);
    assert_int_equal(b.grad_buffer_bytes, 4 * 784 * 4);
    tsr_model *d;
    tsr_stage_options sd = {0, 7, 4, 0, TSR_PRECISION_FP32, 0};
    assert_int_equal(tsr_model_parse(ctx, "dense:64,relu,dense:64,dropout:0.5,add:1,relu,dense:10",
                                     TSR_MODEL_INPUT_MNIST, &d),
                     TSR_OK);
    assert_int_equal(tsr_stage_plan_memory(ctx, d, &sd, &b), TSR_OK);
    assert_int_equal(b.grad_buffers, 3);
    tsr_model_free(d);
    /* the stage [3, 6) would read layer 1's output, held by the stage before */
    tsr_stage_options cut = {3, 6, 4, 1, TSR_PRECISION_FP32, 0};
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &cut, &b), TSR_ERR_INVALID_ARG);
    assert_error_has("stage layers [3, 6): layer 3 reads layer 1's output, which an earlier stage holds");
    tsr_model_free(m);
    /* the conv workspace (its output in the GEMM's [F][batch][OH*OW] layout) is in the plan */
    assert_int_equal(tsr_model_parse(ctx, "conv5x5:8,flatten,dense:10", TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    tsr_stage_options one = {0, 1, 4, 0, TSR_PRECISION_FP32, 0};
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &one, &a), TSR_OK);
    size_t input = 4 * 784, out = 4 * 8 * 784, cols = 4 * 25 * 784, ws = 8 * 4 * 784, ones = 16;
    assert_int_equal(a.act_set_bytes, (input + out + cols + ws + ones) * 4);
    tsr_model_free(m);
    tsr_backend_free(be);
}

/* General inputs: rank 1 to 3 floats, or int32 token ids that only a token kind reads. */
static void test_input_desc(void **state) {
    (void)state;
    tsr_model *m;
    static const struct {
        tsr_model_input_desc d;
        const char *detail;
    } bad[] = {
        {{TSR_DTYPE_F32, 0, {1, 0, 0}, 0, 10}, "model input rank 0: 1 to 3 dimensions"},
        {{TSR_DTYPE_F32, 4, {1, 1, 1}, 0, 10}, "model input rank 4: 1 to 3 dimensions"},
        {{TSR_DTYPE_F32, 2, {5, 0, 0}, 0, 10}, "model input dimension 1 of 2 is 0"},
        {{TSR_DTYPE_F32, 2, {1 << 13, 1 << 12, 0}, 0, 10}, "each and their product must be 1 to 16777216"},
        {{TSR_DTYPE_F32, 1, {5, 0, 0}, 0, 0}, "model classes 0: 1 to 16777216"},
        {{TSR_DTYPE_I32, 1, {5, 0, 0}, 0, 10}, "token ids need a vocabulary of 1 to 2^31, got 0"},
        {{(tsr_dtype)7, 1, {5, 0, 0}, 0, 10}, "model input type 7 is not float or int32"},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(bad); i++) {
        m = (tsr_model *)1;
        assert_int_not_equal(tsr_model_create_desc(ctx, &bad[i].d, &m), TSR_OK);
        assert_null(m);
        assert_error_has(bad[i].detail);
    }
    /* a rank-1 float input is N x 1 x 1 to the layers */
    tsr_model_input_desc vec = {TSR_DTYPE_F32, 1, {784, 0, 0}, 0, 10};
    assert_int_equal(tsr_model_parse_desc(ctx, "dense:32,relu,dense:10", &vec, &m), TSR_OK);
    tsr_model_input in = tsr_model_get_input(m);
    assert_int_equal(in.channels, 784);
    assert_int_equal(in.height * in.width, 1);
    assert_int_equal(tsr_model_get_input_desc(m).rank, 1);
    tsr_model_free(m);
    /* token ids: an embedding reads them; its table is [vocab][D]; nothing else may */
    tsr_model_input_desc tok = {TSR_DTYPE_I32, 2, {4, 4, 0}, 100, 10};
    assert_int_equal(tsr_model_parse_desc(ctx, "embed:8,relu,add:0,flatten,dense:10", &tok, &m), TSR_OK);
    assert_string_equal(tsr_model_spec(m), "embed:8,relu,add:0,flatten,dense:10");
    tsr_layer_info li;
    assert_int_equal(tsr_model_layer_info(m, 0, 1, &li), TSR_OK);
    assert_string_equal(li.type, "embed");
    assert_int_equal(li.out_c, 16);
    assert_int_equal(li.out_h, 8);
    assert_int_equal(li.params, 800);
    tsr_param_info p;
    assert_int_equal(tsr_model_param_tensor_count(m), 3);
    assert_int_equal(tsr_model_param_tensor(m, 0, &p), TSR_OK);
    assert_string_equal(p.name, "0.weight");
    assert_int_equal(p.shape[0], 100);
    assert_int_equal(p.shape[1], 8);
    assert_int_equal(p.offset, 16 * 8 * 10 + 10);
    char text[512];
    tsr_model_summary_string(m, text, sizeof text);
    assert_non_null(strstr(text, "Input: 16 token ids below 100, 10 classes"));
    /* no gradient buffer for the ids, even when the input gradient is asked for */
    tsr_stage_memory with, without;
    tsr_stage_options o1 = {0, 5, 4, 1, TSR_PRECISION_FP32, 0}, o0 = {0, 5, 4, 0, TSR_PRECISION_FP32, 0};
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &o1, &with), TSR_OK);
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &o0, &without), TSR_OK);
    assert_int_equal(with.total_bytes, without.total_bytes);
    tsr_backend *be;
    tsr_stage *st;
    assert_int_equal(tsr_backend_open(ctx, 0, &be), TSR_OK);
    assert_int_equal(tsr_stage_create(be, m, &o1, &st), TSR_OK);
    assert_int_equal(tsr_stage_device_bytes(st), with.total_bytes);
    /* image data sets hold floats, not ids */
    tsr_dataset *data = tsr_test_clusters(ctx, 8, 16, 10);
    float probs[4 * 10];
    size_t correct = 0;
    double loss = 0;
    assert_non_null(data);
    assert_int_equal(tsr_stage_evaluate(st, data, 0, 8, probs, &correct, &loss), TSR_ERR_SHAPE);
    assert_error_has("the data set holds images but the model reads token ids");
    tsr_dataset_free(ctx, data);
    tsr_stage_free(st);
    tsr_backend_free(be);
    tsr_model_free(m);
    static const struct {
        const char *spec, *detail;
    } refused[] = {
        {"dense:10", "model spec at 1: layer 0 (dense:10) needs float input, but the model input is int32 token ids"},
        {"embed:4,add:in,dense:10", "model spec at 9: layer 1 (add:in) needs float input"},
        {"embed:4,embed:4,dense:10", "model spec at 9: embed:4 reads int32 token ids, but its input holds floats"},
        {"embed,dense:10", "model spec at 6: embed needs a positive width (':D')"},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(refused); i++) {
        assert_int_not_equal(tsr_model_parse_desc(ctx, refused[i].spec, &tok, &m), TSR_OK);
        assert_error_has(refused[i].detail);
    }
    assert_int_equal(tsr_model_parse(ctx, "embed:4,dense:10", TSR_MODEL_INPUT_MNIST, &m), TSR_ERR_SHAPE);
    assert_error_has("embed:4 reads int32 token ids, but its input holds floats");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_kind),
        cmocka_unit_test(test_builder_residual),
        cmocka_unit_test(test_residual_spec_errors),
        cmocka_unit_test(test_param_tensors),
        cmocka_unit_test(test_memory_plan_is_allocation),
        cmocka_unit_test(test_input_desc),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
