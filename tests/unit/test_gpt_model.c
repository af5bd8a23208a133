/* GPT models as tessera builds them: OpenAI's presets have GPT-2's parameter counts (Hugging
 * Face's, head tied to wte), the gpt(...) form and its errors, the summary one row per block,
 * the per-block activation formula against what a stage plans and tsr_model_layer_info
 * reports, default pipeline cuts at block boundaries, and gpt2's whole footprint at batch
 * 4 x 64 under 3 GB. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/model/stage.h"
#include "support/test_util.h"

static tsr_context *new_ctx(void) {
    tsr_context *ctx;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    return ctx;
}

static tsr_model *gpt(tsr_context *ctx, const char *name, size_t tokens) {
    tsr_gpt_config c;
    tsr_model *m;
    assert_int_equal(tsr_gpt_config_parse(ctx, name, &c), TSR_OK);
    if (tsr_model_create_gpt(ctx, &c, tokens, &m) != TSR_OK) fail_msg("%s: %s", name, tsr_context_last_error(ctx));
    return m;
}

/* V C + P C + L (12 C^2 + 13 C) + 2 C: Hugging Face's GPT2LMHeadModel counts. */
static void test_preset_parameters(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    const struct {
        const char *name;
        size_t params, blocks;
    } want[] = {{"gpt2", 124439808, 12},       {"gpt2-medium", 354823168, 24},
                {"gpt2-large", 774030080, 36}, {"gpt2-xl", 1557611200, 48},
                {"gpt-mini", 858880, 4},       {"gpt3", 174604259328ull, 96}};
    for (size_t i = 0; i < TSR_ARRAY_SIZE(want); i++) {
        tsr_model *m = gpt(ctx, want[i].name, 64);
        assert_int_equal(tsr_model_param_count(m), want[i].params);
        assert_int_equal(tsr_model_gpt_blocks(m), want[i].blocks);
        assert_int_equal(tsr_model_positions(m), 64);
        tsr_model_free(m);
    }
    /* one token is a sequence too (generation feeds them one by one) */
    tsr_model *one = gpt(ctx, "gpt-mini", 1);
    assert_int_equal(tsr_model_positions(one), 1);
    assert_int_equal(tsr_model_param_count(one), 858880);
    tsr_model_free(one);
    /* a GPT-3 over its whole context of 2048 tokens can be described (for planning) */
    tsr_model *m = gpt(ctx, "gpt3", 2048);
    assert_int_equal(tsr_model_layer_count(m), 4 + 10 * 96);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

static void test_config_forms(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_gpt_config c;
    assert_int_equal(tsr_gpt_config_parse(ctx, "gpt(layers=2,heads=3,channels=12,context=16,vocab=50)", &c),
                     TSR_OK);
    assert_true(c.layers == 2 && c.heads == 3 && c.channels == 12 && c.context == 16 && c.vocab == 50);
    assert_int_equal(tsr_gpt_config_parse(ctx, "gpt(channels=8,heads=2,layers=1)", &c), TSR_OK);
    assert_true(c.context == 1024 && c.vocab == 50257);
    assert_true(tsr_gpt_is_name("gpt2") && tsr_gpt_is_name("gpt(x)") && !tsr_gpt_is_name("mlp"));
    assert_int_equal(tsr_gpt_config_parse(ctx, "mlp", &c), TSR_ERR_NOT_FOUND);
    assert_int_equal(tsr_gpt_config_parse(ctx, "gpt(layers=2,heads=3)", &c), TSR_ERR_PARSE);
    assert_int_equal(tsr_gpt_config_parse(ctx, "gpt(layers=2,heads=5,channels=12)", &c), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "multiple of the heads"));
    assert_int_equal(tsr_gpt_config_parse(ctx, "gpt(layers=x,heads=3,channels=12)", &c), TSR_ERR_PARSE);
    /* tokens beyond the context, and a GPT over an image input */
    assert_int_equal(tsr_gpt_config_parse(ctx, "gpt-mini", &c), TSR_OK);
    tsr_model *m = NULL;
    assert_int_equal(tsr_model_create_gpt(ctx, &c, 257, &m), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "1 to 256 tokens, not 257"));
    assert_int_equal(tsr_model_parse(ctx, "gpt-mini", TSR_MODEL_INPUT_MNIST, &m), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "gpt-mini reads 1 to 256 int32 token ids"));
    assert_null(m);
    tsr_context_free(ctx);
}

/* The token-wise kinds refuse bad specs naming what is wrong. */
static void test_kind_errors(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_model_input_desc d = {TSR_DTYPE_I32, 1, {3, 0, 0}, 10, 10};
    const struct {
        const char *spec, *says;
        tsr_status st;
    } bad[] = {
        {"embed:6,linear:4/std0,lmhead:0", "linear /stdS needs a std in (0, 1]", TSR_ERR_PARSE},
        {"embed:6,linear:4/bogus,lmhead:0", "options /stdS (weight init std) and /nobias", TSR_ERR_PARSE},
        {"embed:6,linear:0", "linear needs an output width", TSR_ERR_PARSE},
        {"embed:6,attention:0", "attention needs a head count", TSR_ERR_PARSE},
        {"embed:6,attention:4", "a width of 3 x C with C a multiple of 4 heads", TSR_ERR_SHAPE},
        {"embed:6,posembed:2", "posembed:2 holds 2 positions, but its input has 3", TSR_ERR_SHAPE},
        {"embed:6,layernorm,lmhead:1", "is tied to layer 1, which is not an embed layer", TSR_ERR_SHAPE},
        {"embed:6,linear:5,lmhead:0", "its input rows have 5 channels but the embedding's are 6 wide", TSR_ERR_SHAPE},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(bad); i++) {
        tsr_model *m = NULL;
        tsr_status st = tsr_model_parse_desc(ctx, bad[i].spec, &d, &m);
        if (st != bad[i].st || !strstr(tsr_context_last_error(ctx), bad[i].says))
            fail_msg("%s: %s (%s), expected '%s'", bad[i].spec, tsr_status_name(st), tsr_context_last_error(ctx),
                     bad[i].says);
        assert_null(m);
    }
    tsr_context_free(ctx);
}

static void test_summary_by_block(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_model *m = gpt(ctx, "gpt-mini", 32);
    char buf[4096];
    size_t n = tsr_model_summary_string(m, buf, sizeof buf);
    assert_true(n < sizeof buf);
    assert_non_null(strstr(buf, "Model: GPT, 4 blocks, 4 heads, 128 channels, context 256, vocabulary 256"));
    assert_non_null(strstr(buf, "2-11    block 0"));
    assert_non_null(strstr(buf, "32-41   block 3"));
    assert_non_null(strstr(buf, "lmhead:0"));
    assert_null(strstr(buf, "attention:4")); /* the block rows stand for their layers */
    assert_non_null(strstr(buf, "Total: 858880 parameters"));
    tsr_model_free(m);
    tsr_context_free(ctx);
}

/* The formula, tsr_model_layer_info and the stage's plan agree on a block's activations. */
static void test_block_activations(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    const char *names[] = {"gpt-mini", "gpt(layers=3,heads=3,channels=12,context=40,vocab=50)"};
    const size_t tokens[] = {64, 37}, batches[] = {4, 3};
    for (size_t c = 0; c < 2; c++) {
        tsr_gpt_config cfg;
        assert_int_equal(tsr_gpt_config_parse(ctx, names[c], &cfg), TSR_OK);
        size_t T = tokens[c], B = batches[c], C = cfg.channels;
        tsr_model *m = gpt(ctx, names[c], T);
        size_t per = tsr_gpt_block_activation_floats(&cfg, T), first = 12, last = 22; /* block 1 */
        size_t info = 0;
        for (size_t i = first; i < last; i++) {
            tsr_layer_info li;
            assert_int_equal(tsr_model_layer_info(m, i, B, &li), TSR_OK);
            info += li.activation_bytes;
        }
        assert_int_equal(info, B * per * 4);
        /* the stage holds the block's input, the formula's floats, a workspace (the largest
         * kind's: attention's 2 H T^2 or layer norm's T C) and a row of ones, each region rounded
         * up to 16 floats */
        tsr_stage_options so = {first, last, B, 1, TSR_PRECISION_FP32, 0};
        tsr_stage_memory mem;
        assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &mem), TSR_OK);
        /* workspace: one attention call's weights and their gradient (not kept per block) */
        size_t ws = B * (2 * cfg.heads * T * T > T * C ? 2 * cfg.heads * T * T : T * C);
        size_t floor_ = B * T * C + B * per + ws + B, regions = 16;
        assert_true(mem.act_set_bytes / 4 >= floor_);
        assert_true(mem.act_set_bytes / 4 <= floor_ + 15 * regions);
        assert_int_equal(tsr_gpt_block_activation_bytes(&cfg, T, TSR_PRECISION_FP32), per * 4);
        /* bf16 and fp16: the formula's 16-bit bytes, each 16-bit region rounded up to 32 halves
         * (gpt-mini, two blocks). One gpt-mini block saves no more than its largest call's
         * float32 staging (GELU's 8 C T): that stage keeps float32 */
        for (int p = TSR_PRECISION_BF16; p <= TSR_PRECISION_FP16; p++) {
            tsr_stage_options half = so;
            half.precision = (tsr_precision)p;
            tsr_stage_memory hm;
            assert_int_equal(tsr_stage_plan_memory(ctx, m, &half, &hm), TSR_OK);
            if (c == 0) {
                assert_int_equal(hm.staging_bytes, 0);
                assert_int_equal(hm.act_set_bytes, mem.act_set_bytes);
            } else { /* attention's call (4 C T) is the tiny model's largest: 16 bits pay */
                assert_true(hm.staging_bytes > 0 && hm.act_set_bytes < mem.act_set_bytes);
            }
            half.last = last + 10;
            assert_int_equal(tsr_stage_plan_memory(ctx, m, &half, &hm), TSR_OK);
            if (c == 1) continue; /* its regions round differently; gpt-mini is the check */
            size_t bytes = (B * T * C + ws + B) * 4 + 2 * B * tsr_gpt_block_activation_bytes(&cfg, T, (tsr_precision)p);
            assert_true(hm.act_set_bytes >= bytes);
            assert_true(hm.act_set_bytes <= bytes + 2 * 15 * 4 * regions);
            /* the block's own bytes: 0.53-0.57 of fp32's here */
            assert_true(tsr_gpt_block_activation_bytes(&cfg, T, (tsr_precision)p) * 100 < per * 4 * 58);
            /* staging: attention's call, the largest (q, k, v and its output) */
            assert_int_equal(hm.staging_bytes / 4 >= B * 4 * T * C, 1);
        }
        tsr_model_free(m);
    }
    tsr_context_free(ctx);
}

/* A stage cut inside a block is refused, naming where a GPT can be cut. */
static void test_cut_inside_block(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_model *m = gpt(ctx, "gpt-mini", 32);
    tsr_stage_options so = {5, tsr_model_layer_count(m), 2, 1, TSR_PRECISION_FP32, 0};
    tsr_stage_memory mem;
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &mem), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "layer 6 reads layer 1's output"));
    assert_non_null(strstr(tsr_context_last_error(ctx), "cut between blocks: at layers 2 + 10 b, b = 0..4"));
    so.first = 12;
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &mem), TSR_OK);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

/* gpt2 at batch 4 x 64 with Adam: parameters, gradients, two moments and activations. */
static void test_gpt2_footprint(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_model *m = gpt(ctx, "gpt2", 64);
    tsr_stage_options so = {0, tsr_model_layer_count(m), 4, 0, TSR_PRECISION_FP32, 0};
    tsr_stage_memory mem;
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &mem), TSR_OK);
    double total = (double)mem.total_bytes + 2.0 * (double)mem.param_bytes; /* + Adam's m, v */
    fprintf(stderr, "gpt2 at 4 x 64: %.2f GB (stage %.2f GB, params %.2f GB)\n", total / 1e9,
            (double)mem.total_bytes / 1e9, (double)mem.param_bytes / 1e9);
    assert_true(total < 3e9);
    /* bf16 keeps the blocks' activations in about half the bytes; the [T, V] logits and the
     * loss's probabilities (the stage's output and the loss) stay float32 */
    tsr_stage_options half = so;
    half.precision = TSR_PRECISION_BF16;
    tsr_stage_memory hm;
    assert_int_equal(tsr_stage_plan_memory(ctx, m, &half, &hm), TSR_OK);
    fprintf(stderr, "gpt2 at 4 x 64 activations: fp32 %.1f MB, bf16 %.1f MB + %.1f MB staging\n",
            (double)mem.act_set_bytes / 1e6, (double)hm.act_set_bytes / 1e6, (double)hm.staging_bytes / 1e6);
    assert_true(hm.act_set_bytes + hm.staging_bytes < mem.act_set_bytes);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preset_parameters), cmocka_unit_test(test_config_forms),
        cmocka_unit_test(test_summary_by_block),  cmocka_unit_test(test_block_activations), cmocka_unit_test(test_cut_inside_block),
        cmocka_unit_test(test_kind_errors),
        cmocka_unit_test(test_gpt2_footprint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
