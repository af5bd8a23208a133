/* Model spec parser, builder, canonical spec, per-layer costs and the summary table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
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

/* Parameter count of dense layers in -> u1 -> u2 ... computed by brute force. */
static size_t dense_params(size_t in, const size_t *units, size_t n) {
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += in * units[i] + units[i];
        in = units[i];
    }
    return total;
}

static void test_presets(void **state) {
    (void)state;
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, "mlp", TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    assert_string_equal(tsr_model_spec(m), "dense:256,relu,dense:128,relu,dense:100,relu,dense:10");
    size_t units[] = {256, 128, 100, 10};
    assert_int_equal(tsr_model_param_count(m), dense_params(784, units, 4));
    assert_int_equal(tsr_model_layer_count(m), 7);
    tsr_model_free(m);

    assert_int_equal(tsr_model_parse(ctx, "cnn", TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    assert_string_equal(tsr_model_spec(m),
                        "conv5x5:32,relu,pool2,conv5x5:64,relu,pool2,dense:1024,relu,dense:10");
    size_t conv = (1 * 25 * 32 + 32) + (32 * 25 * 64 + 64);
    size_t dense_units[] = {1024, 10};
    assert_int_equal(tsr_model_param_count(m), conv + dense_params(64 * 7 * 7, dense_units, 2));
    tsr_layer_info li;
    /* "same" padding keeps 28x28, pooling halves it */
    assert_int_equal(tsr_model_layer_info(m, 0, 1, &li), TSR_OK);
    assert_int_equal(li.out_c, 32);
    assert_int_equal(li.out_h, 28);
    assert_int_equal(tsr_model_layer_info(m, 5, 1, &li), TSR_OK);
    assert_int_equal(li.out_c * li.out_h * li.out_w, 64 * 7 * 7);
    tsr_model_free(m);
    assert_null(tsr_model_preset("nope"));
    assert_non_null(tsr_model_preset("cnn"));
}

static void test_options_and_canonical(void **state) {
    (void)state;
    static const struct {
        const char *spec, *canonical;
        size_t c, h, w;
    } cases[] = {
        {"conv3x3:64/s2/p1,flatten,dense:10", "conv3x3:64/s2,flatten,dense:10", 64, 14, 14},
        {" conv5x5:8 / valid , dense:10 ", "conv5x5:8/p0,dense:10", 8, 24, 24},
        {"conv3:4/same,dense:10", "conv3x3:4,dense:10", 4, 28, 28},
        {"conv2x4:3/p1,dense:10", "conv2x4:3/p1,dense:10", 3, 29, 27},
        {"pool3/s2,dense:10", "pool3/s2,dense:10", 1, 13, 13},
        {"maxpool2/s2,dense:10", "pool2,dense:10", 1, 14, 14},
        {"dropout:0.4,flatten,dense:10", "dropout:0.4,flatten,dense:10", 1, 28, 28},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(cases); i++) {
        tsr_model *m, *m2;
        if (tsr_model_parse(ctx, cases[i].spec, TSR_MODEL_INPUT_MNIST, &m) != TSR_OK) {
            fprintf(stderr, "%s: %s\n", cases[i].spec, tsr_context_last_error(ctx));
            fail();
        }
        assert_string_equal(tsr_model_spec(m), cases[i].canonical);
        tsr_layer_info li;
        assert_int_equal(tsr_model_layer_info(m, 0, 1, &li), TSR_OK);
        assert_int_equal(li.out_c, cases[i].c);
        assert_int_equal(li.out_h, cases[i].h);
        assert_int_equal(li.out_w, cases[i].w);
        /* the canonical text parses back to the same model */
        assert_int_equal(tsr_model_parse(ctx, tsr_model_spec(m), TSR_MODEL_INPUT_MNIST, &m2), TSR_OK);
        assert_string_equal(tsr_model_spec(m2), tsr_model_spec(m));
        assert_int_equal(tsr_model_param_count(m2), tsr_model_param_count(m));
        tsr_model_free(m);
        tsr_model_free(m2);
    }
}

static void test_malformed(void **state) {
    (void)state;
    static const struct {
        const char *spec;
        tsr_status status;
        const char *detail;
    } cases[] = {
        {"conv5x5:32,relu,pool2,conv5x:64", TSR_ERR_PARSE, "model spec at 23: unknown layer 'conv5x'"},
        {"dense:0,dense:10", TSR_ERR_PARSE, "model spec at 7: dense needs a unit count in 1..16777216"},
        {"dense", TSR_ERR_PARSE, "model spec at 6: dense needs a unit count in 1..16777216"},
        {"dense:abc", TSR_ERR_PARSE, "model spec at 7: dense needs a unit count in 1..16777216"},
        {"dense:99999999999", TSR_ERR_PARSE, "model spec at 7: dense needs a unit count in 1..16777216"},
        {"dense:2000000000", TSR_ERR_PARSE, "model spec at 7: dense needs a unit count in 1..16777216"},
        {"conv3x3:0", TSR_ERR_PARSE, "model spec at 9: conv needs a filter count in 1..16777216"},
        {"dense:10,", TSR_ERR_PARSE, "model spec at 10: expected a layer after ','"},
        {"dense:10,,relu", TSR_ERR_PARSE, "model spec at 10: expected a layer before ','"},
        {"", TSR_ERR_PARSE, "model spec at 1: empty model spec"},
        {"   ", TSR_ERR_PARSE, "model spec at 1: empty model spec"},
        {"relu:3,dense:10", TSR_ERR_PARSE, "model spec at 5: relu takes no ':' argument"},
        {"conv3x3:8/q2,dense:10", TSR_ERR_PARSE, "model spec at 11: unknown option '/q' for conv3x3"},
        {"conv3x3:8/s0,dense:10", TSR_ERR_PARSE, "model spec at 11: option '/s' needs a positive number"},
        {"relu/s2,dense:10", TSR_ERR_PARSE, "model spec at 6: relu takes no '/' options"},
        {"pool2/p1,dense:10", TSR_ERR_PARSE, "model spec at 7: unknown option '/p' for pool2"},
        {"dropout:1.5,dense:10", TSR_ERR_PARSE, "model spec at 9: dropout needs a probability in [0, 1)"},
        {"dropout,dense:10", TSR_ERR_PARSE, "model spec at 8: dropout needs a probability"},
        {"pool2 x,dense:10", TSR_ERR_PARSE, "model spec at 7: unexpected 'x' after pool2"},
        {"softmax", TSR_ERR_PARSE, "model spec at 1: unknown layer 'softmax'"},
        {"pool30,dense:10", TSR_ERR_SHAPE, "model spec at 1: pool30 does not fit a 28x28 input"},
        {"conv3x3:4/p3,dense:10", TSR_ERR_SHAPE, "model spec at 1: conv padding 3 must be smaller"},
        {"dense:5", TSR_ERR_SHAPE, "last layer gives 5 outputs (5x1x1) but the model has 10 classes"},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(cases); i++) {
        tsr_model *m = (tsr_model *)&m;
        tsr_status s = tsr_model_parse(ctx, cases[i].spec, TSR_MODEL_INPUT_MNIST, &m);
        const char *err = tsr_context_last_error(ctx);
        if (s != cases[i].status || !strstr(err, cases[i].detail)) {
            fprintf(stderr, "spec '%s': status %s, detail '%s'; wanted %s, '%s'\n", cases[i].spec,
                    tsr_status_name(s), err, tsr_status_name(cases[i].status), cases[i].detail);
            fail();
        }
        assert_null(m);
    }
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, NULL, TSR_MODEL_INPUT_MNIST, &m), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_model_parse(ctx, "mlp", TSR_MODEL_INPUT_MNIST, NULL), TSR_ERR_INVALID_ARG);
    tsr_model_input bad = {0, 28, 28, 10};
    assert_int_equal(tsr_model_parse(ctx, "mlp", bad, &m), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "model input 0x28x28"));
}

static void test_builder(void **state) {
    (void)state;
    tsr_model *m, *p;
    assert_int_equal(tsr_model_create(ctx, TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    assert_int_equal(tsr_model_check(m), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "model has no layers"));
    assert_int_equal(tsr_model_add_conv2d(m, 16, 3, 3, 1, TSR_PAD_SAME), TSR_OK);
    assert_int_equal(tsr_model_add_relu(m), TSR_OK);
    assert_int_equal(tsr_model_add_maxpool(m, 3, 2), TSR_OK);
    assert_int_equal(tsr_model_add_dropout(m, 0.25f), TSR_OK);
    assert_int_equal(tsr_model_add_flatten(m), TSR_OK);
    assert_int_equal(tsr_model_add_dense(m, 10), TSR_OK);
    assert_int_equal(tsr_model_check(m), TSR_OK);
    assert_string_equal(tsr_model_spec(m), "conv3x3:16,relu,pool3/s2,dropout:0.25,flatten,dense:10");
    assert_int_equal(tsr_model_parse(ctx, tsr_model_spec(m), TSR_MODEL_INPUT_MNIST, &p), TSR_OK);
    assert_int_equal(tsr_model_param_count(p), tsr_model_param_count(m));
    tsr_model_free(p);
    /* bad layers are refused and leave the model as it was */
    assert_int_equal(tsr_model_add_dense(m, 0), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "dense needs a unit count in 1..16777216"));
    assert_int_equal(tsr_model_add_dropout(m, 1.0f), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "dropout probability 1 must be in [0, 1)"));
    assert_int_equal(tsr_model_add_maxpool(m, 20, 0), TSR_ERR_SHAPE);
    assert_int_equal(tsr_model_add_conv2d(m, 4, 0, 3, 1, 0), TSR_ERR_SHAPE);
    assert_int_equal(tsr_model_add_conv2d(m, 4, 3, 3, 0, 0), TSR_ERR_SHAPE);
    assert_int_equal(tsr_model_layer_count(m), 6);
    assert_int_equal(tsr_model_check(m), TSR_OK);
    tsr_model_free(m);
    tsr_model_free(NULL);
    assert_int_equal(tsr_model_create(ctx, TSR_MODEL_INPUT_MNIST, NULL), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_model_add_relu(NULL), TSR_ERR_INVALID_ARG);
}

static void test_layer_info(void **state) {
    (void)state;
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, "conv5x5:8/s1/p0,relu,pool2,dropout:0.5,dense:10",
                                     TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    const size_t B = 32;
    tsr_layer_info li;
    /* conv: 8 x 24 x 24 outputs, each 25 multiply-adds + bias */
    assert_int_equal(tsr_model_layer_info(m, 0, B, &li), TSR_OK);
    assert_string_equal(li.type, "conv2d");
    assert_string_equal(li.spec, "conv5x5:8/p0");
    assert_int_equal(li.params, 8 * 25 + 8);
    assert_int_equal(li.param_bytes, (8 * 25 + 8) * 4);
    assert_int_equal(li.forward_flops, (uint64_t)B * 8 * 24 * 24 * (2 * 25 + 1));
    assert_int_equal(li.backward_flops, (uint64_t)B * 8 * 24 * 24 * (4 * 25 + 1));
    assert_int_equal(li.activation_bytes, B * 4 * 8 * 24 * 24); /* outputs; columns are rebuilt in backward */
    assert_int_equal(tsr_model_layer_info(m, 2, B, &li), TSR_OK);
    assert_string_equal(li.type, "maxpool");
    assert_int_equal(li.out_h, 12);
    assert_int_equal(li.activation_bytes, B * 8 * 12 * 12 * 8); /* values + indices */
    assert_int_equal(tsr_model_layer_info(m, 3, B, &li), TSR_OK);
    assert_int_equal(li.activation_bytes, B * 8 * 12 * 12 * 8); /* values + mask */
    assert_int_equal(tsr_model_layer_info(m, 4, B, &li), TSR_OK);
    assert_int_equal(li.in_c * li.in_h * li.in_w, 8 * 12 * 12);
    assert_int_equal(li.params, 8 * 144 * 10 + 10);
    assert_int_equal(li.forward_flops, (uint64_t)B * (2 * 8 * 144 * 10 + 10));
    assert_int_equal(tsr_model_layer_info(m, 5, B, &li), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(ctx), "layer 5 does not exist"));
    assert_int_equal(tsr_model_layer_info(m, 0, B, NULL), TSR_ERR_INVALID_ARG);
    tsr_model_free(m);
}

static void test_summary(void **state) {
    (void)state;
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, "mlp", TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    size_t need = tsr_model_summary_string(m, NULL, 0);
    assert_true(need > 100);
    char *full = malloc(need + 1);
    assert_non_null(full);
    assert_int_equal(tsr_model_summary_string(m, full, need + 1), need);
    assert_int_equal(strlen(full), need);
    assert_non_null(strstr(full, "dense:256        256x1x1            200960"));
    assert_non_null(strstr(full, "Total: 247766 parameters"));
    char small[16];
    assert_int_equal(tsr_model_summary_string(m, small, sizeof small), need);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, full, sizeof small - 1);
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(tsr_model_summary(m, f), TSR_OK);
    assert_int_equal(ftell(f), (long)need);
    fclose(f);
    assert_int_equal(tsr_model_summary(m, NULL), TSR_ERR_INVALID_ARG);
    free(full);
    tsr_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets),      cmocka_unit_test(test_options_and_canonical),
        cmocka_unit_test(test_malformed),    cmocka_unit_test(test_builder),
        cmocka_unit_test(test_layer_info),   cmocka_unit_test(test_summary),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
