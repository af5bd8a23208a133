/* Weights interchange with PyTorch (lib/io/export.c): the nn.Sequential names, shapes and
 * module text of mlp, cnn, a dropout model and an embedding model against hand-written
 * expectations; export -> init round trips bitwise (through trainers too); GPT-2 files as Hugging
 * Face writes them (mask buffers, the transformer. prefix, lm_head) load bitwise; every mismatch
 * refused with its message and the parameters untouched; F16/BF16 accepted; a residual add
 * refused naming the layer; no allocation leaked on any failing allocation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "support/test_util.h"

#define MLP_MODULE                                                                         \
    "nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), "   \
    "nn.ReLU(), nn.Linear(128, 100), nn.ReLU(), nn.Linear(100, 10))"
#define CNN_MODULE                                                                         \
    "nn.Sequential(nn.Conv2d(1, 32, (5, 5), stride=1, padding=(2, 2)), nn.ReLU(), "        \
    "nn.MaxPool2d(2, stride=2), nn.Conv2d(32, 64, (5, 5), stride=1, padding=(2, 2)), "     \
    "nn.ReLU(), nn.MaxPool2d(2, stride=2), nn.Flatten(), nn.Linear(3136, 1024), nn.ReLU(), " \
    "nn.Linear(1024, 10))"
/* dropouts, a strided unpadded conv, a conv after a dense (unflattened for PyTorch) */
#define DROP_SPEC "conv3x3:4/s2/p0,relu,dropout:0.25,dense:72,dropout:0.5,conv1:8,flatten,dense:10"
#define DROP_MODULE                                                                        \
    "nn.Sequential(nn.Conv2d(1, 4, (3, 3), stride=2, padding=(0, 0)), nn.ReLU(), "         \
    "nn.Dropout(0.25), nn.Flatten(), nn.Linear(676, 72), nn.Dropout(0.5), "                \
    "nn.Unflatten(1, (72, 1, 1)), nn.Conv2d(72, 8, (1, 1), stride=1, padding=(0, 0)), "         \
    "nn.Flatten(), nn.Linear(8, 10))"

typedef struct {
    tsr_context *ctx;
    char dir[64];
    char path[128];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f || tsr_test_quiet_context(&f->ctx) != TSR_OK) return -1;
    if (tsr_test_make_dir(f->dir, sizeof f->dir, "export") != 0) return -1;
    snprintf(f->path, sizeof f->path, "%s/m.safetensors", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    if (tsr_test_remove_dir(f->dir) != 0) return -1;
    tsr_context_free(f->ctx);
    free(f);
    return 0;
}

typedef struct {
    const char *name;
    size_t rank, shape[4];
} expected;

static tsr_model *parse(fixture *f, const char *spec, tsr_model_input in) {
    tsr_model *m = NULL;
    assert_int_equal(tsr_model_parse(f->ctx, spec, in, &m), TSR_OK);
    return m;
}

/* Exports random parameters, checks the file's names, shapes, values (bitwise, against the
 * flat layout) and metadata, reads it back bitwise. */
static void check_export(fixture *f, tsr_model *m, const char *input_shape, const char *module,
                         const expected *want, size_t nwant) {
    size_t n = tsr_model_param_count(m);
    float *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q);
    assert_true(p && q);
    tsr_test_fill_uniform(p, n, 42, -1.0f, 1.0f);
    memset(q, 0xff, n * sizeof *q);
    char text[1024];
    size_t needed = 0;
    assert_int_equal(tsr_model_torch_module(f->ctx, m, text, sizeof text, &needed), TSR_OK);
    assert_string_equal(text, module);
    assert_int_equal(needed, strlen(module));
    assert_int_equal(tsr_model_torch_module(f->ctx, m, text, needed, NULL), TSR_ERR_INVALID_ARG);

    tsr_st_meta extra[] = {{"input_mean", "0.25"}};
    assert_int_equal(tsr_model_save_safetensors(f->ctx, m, p, n, extra, 1, f->path), TSR_OK);
    tsr_safetensors *st;
    assert_int_equal(tsr_safetensors_open(f->ctx, f->path, &st), TSR_OK);
    assert_int_equal(st->count, nwant);
    assert_int_equal(tsr_model_param_tensor_count(m), nwant);
    for (size_t i = 0; i < nwant; i++) {
        char name[64];
        tsr_param_info info;
        assert_int_equal(tsr_model_torch_name(f->ctx, m, i, name), TSR_OK);
        assert_string_equal(name, want[i].name);
        assert_int_equal(tsr_model_param_tensor(m, i, &info), TSR_OK);
        const tsr_st_tensor *t = tsr_safetensors_find(st, want[i].name);
        assert_non_null(t);
        assert_int_equal(t->dtype, TSR_ST_F32);
        assert_int_equal(t->ndim, (int)want[i].rank);
        for (size_t d = 0; d < want[i].rank; d++) assert_int_equal(t->shape[d], want[i].shape[d]);
        assert_memory_equal(t->data, p + info.offset, info.count * sizeof *p);
    }
    assert_string_equal(tsr_safetensors_meta(st, "format"), "pt");
    assert_string_equal(tsr_safetensors_meta(st, "tessera_model"), tsr_model_spec(m));
    assert_string_equal(tsr_safetensors_meta(st, "input_shape"), input_shape);
    assert_string_equal(tsr_safetensors_meta(st, "input_dtype"),
                        tsr_model_get_input_desc(m).dtype == TSR_DTYPE_I32 ? "int32" : "float32");
    assert_string_equal(tsr_safetensors_meta(st, "classes"), "10");
    assert_string_equal(tsr_safetensors_meta(st, "pytorch_module"), module);
    assert_string_equal(tsr_safetensors_meta(st, "input_mean"), "0.25");
    tsr_safetensors_close(f->ctx, st);

    assert_int_equal(tsr_model_load_safetensors(f->ctx, m, f->path, q, n), TSR_OK);
    assert_memory_equal(p, q, n * sizeof *p);
    free(p);
    free(q);
    tsr_model_free(m);
}

static void test_mlp(void **state) {
    static const expected want[] = {
        {"1.weight", 2, {256, 784}}, {"1.bias", 1, {256}}, {"3.weight", 2, {128, 256}},
        {"3.bias", 1, {128}},        {"5.weight", 2, {100, 128}}, {"5.bias", 1, {100}},
        {"7.weight", 2, {10, 100}},  {"7.bias", 1, {10}}};
    check_export(*state, parse(*state, "mlp", TSR_MODEL_INPUT_MNIST), "[1, 28, 28]", MLP_MODULE,
                 want, 8);
}

static void test_cnn(void **state) {
    static const expected want[] = {
        {"0.weight", 4, {32, 1, 5, 5}},  {"0.bias", 1, {32}},
        {"3.weight", 4, {64, 32, 5, 5}}, {"3.bias", 1, {64}},
        {"7.weight", 2, {1024, 3136}},   {"7.bias", 1, {1024}},
        {"9.weight", 2, {10, 1024}},     {"9.bias", 1, {10}}};
    check_export(*state, parse(*state, "cnn", TSR_MODEL_INPUT_MNIST), "[1, 28, 28]", CNN_MODULE,
                 want, 8);
}

static void test_dropout_model(void **state) {
    static const expected want[] = {{"0.weight", 4, {4, 1, 3, 3}}, {"0.bias", 1, {4}},
                                    {"4.weight", 2, {72, 676}},   {"4.bias", 1, {72}},
                                    {"7.weight", 4, {8, 72, 1, 1}}, {"7.bias", 1, {8}},
                                    {"9.weight", 2, {10, 8}},     {"9.bias", 1, {10}}};
    check_export(*state, parse(*state, DROP_SPEC, TSR_MODEL_INPUT_MNIST), "[1, 28, 28]", DROP_MODULE,
                 want, 8);
}

/* token ids [5] of a vocabulary of 20: nn.Embedding gives [N, 5, 8], flattened for the Linear */
static void test_embed_model(void **state) {
    fixture *f = *state;
    static const expected want[] = {{"0.weight", 2, {20, 8}},
                                    {"2.weight", 2, {10, 40}}, {"2.bias", 1, {10}}};
    tsr_model_input_desc in = {TSR_DTYPE_I32, 1, {5, 0, 0}, 20, 10};
    tsr_model *m = NULL;
    assert_int_equal(tsr_model_parse_desc(f->ctx, "embed:8,dense:10", &in, &m), TSR_OK);
    check_export(f, m, "[5]",
                 "nn.Sequential(nn.Embedding(20, 8), nn.Flatten(), nn.Linear(40, 10))", want, 3);
}

/* What tsr-train --init does: one trainer's initial parameters, exported, set into a trainer
 * initialised from another seed, read back bitwise. */
static void test_trainer_round_trip(void **state) {
    fixture *f = *state;
    const char *specs[] = {"mlp", "cnn", DROP_SPEC};
    for (size_t k = 0; k < 3; k++) {
        tsr_model *m = parse(f, specs[k], TSR_MODEL_INPUT_MNIST);
        size_t n = tsr_model_param_count(m);
        float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
        assert_true(a && b);
        tsr_trainer_options o;
        tsr_trainer_options_init(&o);
        o.device = "host";
        o.batch = 4;
        tsr_trainer *t1, *t2;
        assert_int_equal(tsr_trainer_create(f->ctx, m, &o, &t1), TSR_OK);
        o.seed = 99;
        assert_int_equal(tsr_trainer_create(f->ctx, m, &o, &t2), TSR_OK);
        assert_int_equal(tsr_trainer_get_params(t1, a, n), TSR_OK);
        assert_int_equal(tsr_trainer_get_params(t2, b, n), TSR_OK);
        assert_memory_not_equal(a, b, n * sizeof *a);
        assert_int_equal(tsr_model_save_safetensors(f->ctx, m, a, n, NULL, 0, f->path), TSR_OK);
        assert_int_equal(tsr_model_load_safetensors(f->ctx, m, f->path, b, n), TSR_OK);
        assert_int_equal(tsr_trainer_set_params(t2, b, n), TSR_OK);
        memset(b, 0, n * sizeof *b);
        assert_int_equal(tsr_trainer_get_params(t2, b, n), TSR_OK);
        assert_memory_equal(a, b, n * sizeof *a);
        tsr_trainer_free(t1);
        tsr_trainer_free(t2);
        free(a);
        free(b);
        tsr_model_free(m);
    }
}

/* A small mlp's file written by hand, tensor by tensor, with one thing changed. */
enum change { NONE, DROP_BIAS, EXTRA, BAD_SHAPE, BAD_DTYPE, AS_F16, AS_BF16, TWO_WRONG };

static void write_small(fixture *f, enum change c, const float *x) {
    /* "dense:3,relu,dense:2" on 1x2x2: 1.weight [3, 4], 1.bias [3], 3.weight [2, 3], 3.bias [2] */
    static const uint64_t w1[] = {3, 4}, b1[] = {3}, w3[] = {2, 3}, b3[] = {2}, bad[] = {3, 3};
    static const int32_t ints[6] = {0};
    tsr_st_writer *w;
    tsr_st_dtype dt = c == AS_F16 ? TSR_ST_F16 : c == AS_BF16 ? TSR_ST_BF16 : TSR_ST_F32;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "1.weight", dt, 2, w1, x), TSR_OK);
    if (c != DROP_BIAS && c != TWO_WRONG)
        assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "1.bias", dt, 1, b1, x + 12), TSR_OK);
    if (c == BAD_DTYPE)
        assert_int_equal(tsr_st_writer_add(f->ctx, w, "3.weight", TSR_ST_I32, 2, w3, ints, sizeof ints),
                         TSR_OK);
    else
        assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "3.weight", dt, 2,
                                               c == BAD_SHAPE || c == TWO_WRONG ? bad : w3, x + 15),
                         TSR_OK);
    assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "3.bias", dt, 1, b3, x + 24), TSR_OK);
    if (c == EXTRA)
        assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "4.weight", dt, 1, b3, x), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
}

/* A GPT-2 file as Hugging Face writes it: GPT2Model's names (openai-community/gpt2's
 * model.safetensors) with the causal-mask buffers h.N.attn.bias [1, 1, T, T] and
 * h.N.attn.masked_bias (a scalar), or GPT2LMHeadModel's (every name under "transformer.", plus
 * lm_head.weight, wte's tied copy); both load bitwise, buffers and head skipped. A tensor of
 * neither kind is still refused. */
static void write_hf_gpt(fixture *f, const tsr_model *m, const float *p, int lm_head, int stray) {
    tsr_st_writer *w;
    assert_int_equal(tsr_st_writer_create(f->ctx, &w), TSR_OK);
    char names[64][96];
    size_t nt = tsr_model_param_tensor_count(m);
    assert_true(nt + 8 <= 64);
    uint64_t shapes[64][4];
    for (size_t i = 0; i < nt; i++) {
        tsr_param_info info;
        char name[64];
        assert_int_equal(tsr_model_param_tensor(m, i, &info), TSR_OK);
        assert_int_equal(tsr_model_torch_name(f->ctx, m, i, name), TSR_OK);
        snprintf(names[i], sizeof names[i], "%s%s", lm_head ? "transformer." : "", name);
        for (size_t d = 0; d < info.rank; d++) shapes[i][d] = info.shape[d];
        assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, names[i], TSR_ST_F32, (int)info.rank,
                                               shapes[i], p + info.offset), TSR_OK);
        if (!strcmp(name, "wte.weight") && lm_head)
            assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "lm_head.weight", TSR_ST_F32, 2,
                                                   shapes[i], p + info.offset), TSR_OK);
    }
    static const float mask[16] = {1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1}, big = -1e4f;
    static const uint64_t mask_shape[4] = {1, 1, 4, 4};
    for (int b = 0; b < 2; b++) {
        size_t k = nt + 2 * (size_t)b;
        snprintf(names[k], sizeof names[k], "%sh.%d.attn.bias", lm_head ? "transformer." : "", b);
        snprintf(names[k + 1], sizeof names[k + 1], "%sh.%d.attn.masked_bias", lm_head ? "transformer." : "", b);
        assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, names[k], TSR_ST_F32, 4, mask_shape, mask), TSR_OK);
        assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, names[k + 1], TSR_ST_F32, 0, mask_shape, &big),
                         TSR_OK);
    }
    if (stray)
        assert_int_equal(tsr_st_writer_add_f32(f->ctx, w, "h.1.attn.scale", TSR_ST_F32, 0, mask_shape, &big),
                         TSR_OK);
    assert_int_equal(tsr_st_writer_set_meta(f->ctx, w, "format", "pt"), TSR_OK);
    assert_int_equal(tsr_st_writer_save(f->ctx, w, f->path), TSR_OK);
    tsr_st_writer_free(f->ctx, w);
}

static void test_hugging_face_gpt2_files(void **state) {
    fixture *f = *state;
    tsr_gpt_config c;
    tsr_model *m = NULL;
    assert_int_equal(tsr_gpt_config_parse(f->ctx, "gpt(layers=2,heads=2,channels=8,context=4,vocab=11)", &c),
                     TSR_OK);
    assert_int_equal(tsr_model_create_gpt(f->ctx, &c, 4, &m), TSR_OK);
    size_t n = tsr_model_param_count(m);
    float *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q);
    assert_true(p && q);
    tsr_test_fill_uniform(p, n, 7, -1.0f, 1.0f);
    for (int lm_head = 0; lm_head < 2; lm_head++) {
        write_hf_gpt(f, m, p, lm_head, 0);
        memset(q, 0xff, n * sizeof *q);
        assert_int_equal(tsr_model_load_safetensors(f->ctx, m, f->path, q, n), TSR_OK);
        assert_memory_equal(p, q, n * sizeof *p);
    }
    write_hf_gpt(f, m, p, 0, 1);
    memset(q, 0xff, n * sizeof *q);
    assert_int_equal(tsr_model_load_safetensors(f->ctx, m, f->path, q, n), TSR_ERR_MISMATCH);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "tensor 'h.1.attn.scale' is not a parameter of the model"));
    for (size_t i = 0; i < n; i++) assert_true(isnan(q[i])); /* untouched */
    free(p);
    free(q);
    tsr_model_free(m);
}

static void test_mismatches(void **state) {
    fixture *f = *state;
    tsr_model *m = parse(f, "dense:3,relu,dense:2", (tsr_model_input){1, 2, 2, 2});
    assert_int_equal(tsr_model_param_count(m), 12 + 3 + 6 + 2);
    /* values F16 and BF16 hold exactly: multiples of 1/8 in [-2, 2) */
    float x[32], p[23], sentinel[23];
    for (int i = 0; i < 32; i++) x[i] = (float)((i * 7) % 32 - 16) / 8.0f;
    for (int i = 0; i < 23; i++) sentinel[i] = p[i] = -1234.5f;

    static const struct {
        enum change c;
        const char *detail;
    } bad[] = {
        {DROP_BIAS, "tensor '1.bias' is missing (layer 0's bias) (model dense:3,relu,dense:2; "
                    "1 mismatch with it)"},
        {EXTRA, "tensor '4.weight' is not a parameter of the model (model dense:3,relu,dense:2; "
                "1 mismatch with it)"},
        {BAD_SHAPE, "tensor '3.weight' has shape [3, 3], the model's is [2, 3] (model "
                    "dense:3,relu,dense:2; 1 mismatch with it)"},
        {BAD_DTYPE, "tensor '3.weight' has dtype I32 (F32, F16, BF16 or F64 expected)"},
        {TWO_WRONG, "tensor '1.bias' is missing (layer 0's bias) (model dense:3,relu,dense:2; "
                    "2 mismatches with it)"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        write_small(f, bad[k].c, x);
        assert_int_equal(tsr_model_load_safetensors(f->ctx, m, f->path, p, 23), TSR_ERR_MISMATCH);
        const char *e = tsr_context_last_error(f->ctx);
        assert_non_null(strstr(e, f->path));
        if (!strstr(e, bad[k].detail)) fail_msg("case %zu: '%s' lacks '%s'", k, e, bad[k].detail);
        assert_memory_equal(p, sentinel, sizeof p); /* untouched */
    }

    /* F16 and BF16 are widened exactly; each tensor lands at its flat offset */
    for (enum change c = NONE; c <= AS_BF16; c = c == NONE ? AS_F16 : c + 1) {
        write_small(f, c, x);
        assert_int_equal(tsr_model_load_safetensors(f->ctx, m, f->path, p, 23), TSR_OK);
        const size_t src[4] = {0, 12, 15, 24}, count[4] = {12, 3, 6, 2};
        for (size_t t = 0; t < 4; t++) {
            tsr_param_info info;
            assert_int_equal(tsr_model_param_tensor(m, t, &info), TSR_OK);
            assert_int_equal(info.count, count[t]);
            assert_memory_equal(p + info.offset, x + src[t], count[t] * sizeof *p);
        }
    }

    /* wrong parameter counts, missing files */
    assert_int_equal(tsr_model_load_safetensors(f->ctx, m, f->path, p, 22), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "22 parameters for a model of 23"));
    assert_int_equal(tsr_model_save_safetensors(f->ctx, m, p, 24, NULL, 0, f->path), TSR_ERR_SHAPE);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.safetensors", f->dir);
    assert_int_equal(tsr_model_load_safetensors(f->ctx, m, missing, p, 23), TSR_ERR_NOT_FOUND);
    tsr_model_free(m);
}

static void test_residual_refused(void **state) {
    fixture *f = *state;
    tsr_model *m = parse(f, "dense:8,relu,dense:8,add:1,relu,dense:10", TSR_MODEL_INPUT_MNIST);
    size_t n = tsr_model_param_count(m);
    float *p = calloc(n, sizeof *p);
    assert_non_null(p);
    const char *want = "layer 3 (add:1): a residual add has no torch.nn.Sequential equivalent";
    char text[256], name[64];
    assert_int_equal(tsr_model_torch_module(f->ctx, m, text, sizeof text, NULL),
                     TSR_ERR_UNSUPPORTED);
    assert_string_equal(tsr_context_last_error(f->ctx), want);
    assert_int_equal(tsr_model_torch_name(f->ctx, m, 0, name), TSR_ERR_UNSUPPORTED);
    assert_int_equal(tsr_model_save_safetensors(f->ctx, m, p, n, NULL, 0, f->path),
                     TSR_ERR_UNSUPPORTED);
    assert_string_equal(tsr_context_last_error(f->ctx), want);
    assert_null(fopen(f->path, "rb")); /* nothing written */
    assert_int_equal(tsr_model_load_safetensors(f->ctx, m, f->path, p, n), TSR_ERR_UNSUPPORTED);
    free(p);
    tsr_model_free(m);
}

/* Every failing allocation of a save and a load fails cleanly, leaking nothing. */
static void test_allocator_failures(void **state) {
    fixture *f = *state;
    tsr_test_alloc counter;
    tsr_test_alloc_init(&counter, 0);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    o.allocator = &counter.allocator;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    tsr_model *m;
    assert_int_equal(tsr_model_parse(ctx, DROP_SPEC, TSR_MODEL_INPUT_MNIST, &m), TSR_OK);
    size_t n = tsr_model_param_count(m);
    float *p = malloc(n * sizeof *p);
    assert_non_null(p);
    tsr_test_fill_uniform(p, n, 7, -1.0f, 1.0f);
    assert_non_null(tsr_model_spec(m)); /* the model keeps the text it builds on first use */
    for (int load = 0; load < 2; load++) {
        long needed = 0, live0 = counter.live;
        for (long k = 0;; k++) { /* k = 0: count the allocations of a full run */
            long base = counter.calls;
            counter.fail_at = k ? base + k : 0;
            tsr_status s = load ? tsr_model_load_safetensors(ctx, m, f->path, p, n)
                                : tsr_model_save_safetensors(ctx, m, p, n, NULL, 0, f->path);
            counter.fail_at = 0;
            assert_int_equal(counter.live, live0);
            if (k == 0) {
                assert_int_equal(s, TSR_OK);
                needed = counter.calls - base;
                assert_true(needed > 0);
                continue;
            }
            assert_int_equal(s, TSR_ERR_NO_MEMORY);
            if (k == needed) break;
        }
    }
    free(p);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mlp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cnn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dropout_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_embed_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trainer_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hugging_face_gpt2_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_residual_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocator_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
