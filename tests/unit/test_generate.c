/* Generation with a key/value cache (lib/model/generate.c) against the full forward of a stage
 * on the host backend (as test_gpt_parity reads logits): the cached logits at every position
 * equal the full forward's at that position (relative 1e-5 of the row's largest), for gpt-mini
 * with the PyTorch reference weights of tests/ref/gpt_mini_ref.safetensors (plus noise for greedy
 * decoding, whose argmax is one byte otherwise) and for a small
 * random GPT over its whole context; tokens fed in chunks give the same; greedy generation is
 * the argmax of the full forward over its window at every step, also after the window slides;
 * without the cache the same tokens; top-k 1 is greedy; a seed repeats its sample; the
 * sampler's arithmetic on known logits; refusals. */
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
#include "tessera/generate.h"
#include "tessera/safetensors.h"

#define REF_FILE "tests/ref/gpt_mini_ref.safetensors"
#define MINI_T 64
#define REL 1e-5

#define OK(ctx, call)                                                                                   \
    do {                                                                                                \
        tsr_status ok_s_ = (call);                                                                      \
        if (ok_s_ != TSR_OK)                                                                            \
            fail_msg("%s -> %s: %s", #call, tsr_status_name(ok_s_), tsr_context_last_error(ctx)); \
    } while (0)

typedef struct fixture {
    tsr_context *ctx;
    tsr_gpt_config cfg;
    tsr_model *model; /* over the whole context */
    float *params;
    size_t np, T, V;
    int32_t *ids;     /* T tokens */
} fixture;

static int host_device(tsr_context *ctx) {
    for (int i = 0; i < tsr_context_device_count(ctx); i++)
        if (tsr_context_device(ctx, i)->backend == TSR_BACKEND_HOST) return i;
    fail_msg("no host device");
    return -1;
}

/* The full forward over seq[0..n) (n <= T, padded with token 0: the rows before n do not see
 * the padding): logits [n][V] into out. */
static void full_logits(fixture *f, const int32_t *seq, size_t n, float *out) {
    tsr_context *ctx = f->ctx;
    tsr_backend *be;
    tsr_stage *st;
    OK(ctx, tsr_backend_open(ctx, host_device(ctx), &be));
    tsr_stage_options so = {0, tsr_model_layer_count(f->model), 1, 0, TSR_PRECISION_FP32, 1};
    OK(ctx, tsr_stage_create(be, f->model, &so, &st));
    OK(ctx, tsr_write_f32(tsr_stage_params(st), 0, f->params, f->np));
    int32_t *ids = calloc(f->T, sizeof *ids), *labels = calloc(f->T, sizeof *labels);
    float *all = malloc(f->T * f->V * sizeof *all);
    assert_true(ids && labels && all);
    memcpy(ids, seq, n * sizeof *ids);
    OK(ctx, tsr_ref_write(tsr_stage_input(st), TSR_DTYPE_I32, ids, f->T));
    OK(ctx, tsr_ref_write(tsr_stage_labels(st), TSR_DTYPE_I32, labels, f->T));
    OK(ctx, tsr_stage_forward(st, 1, 0, 0, NULL));
    OK(ctx, tsr_ref_read(tsr_stage_output(st), TSR_DTYPE_F32, all, f->T * f->V));
    memcpy(out, all, n * f->V * sizeof *out);
    free(all);
    free(ids);
    free(labels);
    tsr_stage_free(st);
    tsr_backend_free(be);
}

static size_t argmax(const float *x, size_t n) {
    size_t best = 0;
    for (size_t i = 1; i < n; i++) best = x[i] > x[best] ? i : best;
    return best;
}

/* max |got - want| <= REL x max |want| over one position's logits. */
static void expect_row(const char *what, size_t t, const float *got, const float *want, size_t V) {
    double diff = 0, scale = 0;
    for (size_t i = 0; i < V; i++) {
        double d = fabs((double)got[i] - want[i]);
        diff = d > diff || d != d ? d : diff;
        scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
    }
    if (!(diff <= REL * scale)) fail_msg("%s, position %zu: max |diff| %.3g > %.3g", what, t, diff, REL * scale);
}

static void fixture_model(fixture *f, const char *name) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.log_level = TSR_LOG_OFF;
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    assert_int_equal(tsr_context_create(&f->ctx, &o), TSR_OK);
    OK(f->ctx, tsr_gpt_config_parse(f->ctx, name, &f->cfg));
    f->V = f->cfg.vocab;
    OK(f->ctx, tsr_model_create_gpt(f->ctx, &f->cfg, f->T, &f->model));
    f->np = tsr_model_param_count(f->model);
    f->params = calloc(f->np, sizeof *f->params);
    f->ids = calloc(f->T, sizeof *f->ids);
    assert_true(f->params && f->ids);
}

/* gpt-mini over 64 tokens with the reference file's weights and its first sequence. */
static int setup_mini(void **state) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->T = MINI_T;
    fixture_model(f, "gpt-mini");
    tsr_safetensors *ref;
    OK(f->ctx, tsr_safetensors_open(f->ctx, REF_FILE, &ref));
    for (size_t i = 0; i < tsr_model_param_tensor_count(f->model); i++) {
        tsr_param_info p;
        char name[64];
        OK(f->ctx, tsr_model_param_tensor(f->model, i, &p));
        OK(f->ctx, tsr_model_torch_name(f->ctx, f->model, i, name));
        const tsr_st_tensor *t = tsr_safetensors_find(ref, name);
        if (!t) fail_msg("%s: no tensor '%s'", REF_FILE, name);
        OK(f->ctx, tsr_safetensors_to_f32(f->ctx, t, f->params + p.offset, p.count));
    }
    const tsr_st_tensor *tok = tsr_safetensors_find(ref, "tokens");
    assert_non_null(tok);
    assert_int_equal(tok->dtype, TSR_ST_I32);
    assert_true(tok->bytes >= (MINI_T + 1) * sizeof(int32_t));
    memcpy(f->ids, tok->data, MINI_T * sizeof(int32_t)); /* little-endian int32, as this machine */
    tsr_safetensors_close(f->ctx, ref);
    *state = f;
    return 0;
}

/* gpt(layers=2,heads=3,channels=12,context=16,vocab=50) with every parameter uniform in
 * [-0.5, 0.5) (layer norm gains and biases too, so that every tensor matters). */
static int setup_small(void **state) {
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->T = 16;
    fixture_model(f, "gpt(layers=2,heads=3,channels=12,context=16,vocab=50)");
    tsr_test_fill_uniform(f->params, f->np, 7, -0.5f, 0.5f);
    for (size_t t = 0; t < f->T; t++) f->ids[t] = (int32_t)((t * 17 + 3) % f->V);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    free(f->params);
    free(f->ids);
    tsr_model_free(f->model);
    tsr_context_free(f->ctx);
    free(f);
    return 0;
}

/* Every position's cached logits, one token at a time and in chunks of 1, 5, 2, rest. */
static void check_positions(fixture *f) {
    size_t T = f->T, V = f->V;
    float *want = malloc(T * V * sizeof *want), *got = malloc(V * sizeof *got);
    assert_true(want && got);
    full_logits(f, f->ids, T, want);
    tsr_generator *g;
    OK(f->ctx, tsr_generator_create(f->ctx, f->model, f->params, f->np, &g));
    assert_int_equal(tsr_generator_context(g), f->cfg.context);
    assert_int_equal(tsr_generator_vocab(g), V);
    for (size_t t = 0; t < T; t++) {
        OK(f->ctx, tsr_generator_feed(g, f->ids + t, 1, got));
        assert_int_equal(tsr_generator_position(g), t + 1);
        expect_row("one token at a time", t, got, want + t * V, V);
    }
    tsr_generator_reset(g);
    size_t chunks[] = {1, 5, 2, T - 8};
    for (size_t c = 0, at = 0; c < 4; at += chunks[c++]) {
        OK(f->ctx, tsr_generator_feed(g, f->ids + at, chunks[c], got));
        expect_row("in chunks", at + chunks[c] - 1, got, want + (at + chunks[c] - 1) * V, V);
    }
    tsr_generator_free(g);
    /* the parameter layout does not depend on the model's token count (2: a GPT over one token
     * is refused today, its [1, 3C] rows read as a vector) */
    tsr_model *one;
    OK(f->ctx, tsr_model_create_gpt(f->ctx, &f->cfg, 2, &one));
    OK(f->ctx, tsr_generator_create(f->ctx, one, f->params, f->np, &g));
    OK(f->ctx, tsr_generator_feed(g, f->ids, T, got));
    expect_row("a model over one token", T - 1, got, want + (T - 1) * V, V);
    tsr_generator_free(g);
    tsr_model_free(one);
    free(want);
    free(got);
}

static void test_mini_positions(void **state) { check_positions(*state); }
static void test_small_positions(void **state) { check_positions(*state); }

typedef struct collected {
    int32_t tok[256];
    size_t n, stop_at;
} collected;
static int collect(void *user, int32_t t) {
    collected *c = user;
    c->tok[c->n++] = t;
    return c->stop_at && c->n == c->stop_at;
}

static void run(fixture *f, tsr_generator *g, size_t prompt, size_t n, tsr_generate_options o, collected *c) {
    memset(c, 0, sizeof *c);
    o.max_tokens = n;
    OK(f->ctx, tsr_generate(g, f->ids, prompt, &o, collect, c));
    assert_int_equal(c->n, n);
}

/* Greedy: deterministic, the argmax of the full forward over each step's window (the last
 * `context` tokens, so also after the window slides), the same without the cache and with
 * top-k 1; sampling: a seed repeats its tokens, another seed changes them. */
static void check_greedy(fixture *f, size_t prompt, size_t n) {
    size_t V = f->V, T = f->T;
    tsr_generator *g;
    OK(f->ctx, tsr_generator_create(f->ctx, f->model, f->params, f->np, &g));
    collected a, b;
    tsr_generate_options greedy = {{0.0f, 0}, 0, 1, 0};
    run(f, g, prompt, n, greedy, &a);
    run(f, g, prompt, n, greedy, &b);
    assert_memory_equal(a.tok, b.tok, n * sizeof *a.tok);
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < i && a.tok[j] != a.tok[i]) j++;
        distinct += j == i;
    }
    if (distinct < 2) fail_msg("greedy decoding repeats one token: too little to test");
    int32_t *seq = malloc((prompt + n) * sizeof *seq);
    float *logits = malloc(T * V * sizeof *logits);
    assert_true(seq && logits);
    memcpy(seq, f->ids, prompt * sizeof *seq);
    memcpy(seq + prompt, a.tok, n * sizeof *seq);
    for (size_t j = prompt; j < prompt + n; j++) {
        size_t from = j > T ? j - T : 0;
        full_logits(f, seq + from, j - from, logits);
        if (argmax(logits + (j - from - 1) * V, V) != (size_t)seq[j])
            fail_msg("greedy token %zu is %d, the full forward's argmax %zu", j, seq[j],
                     argmax(logits + (j - from - 1) * V, V));
    }
    tsr_generate_options nocache = greedy, topk1 = {{1.0f, 1}, 0, 9, 0};
    nocache.no_cache = 1;
    run(f, g, prompt, n, nocache, &b);
    assert_memory_equal(a.tok, b.tok, n * sizeof *a.tok);
    run(f, g, prompt, n, topk1, &b);
    assert_memory_equal(a.tok, b.tok, n * sizeof *a.tok);
    tsr_generate_options s1 = {{1.0f, 0}, 0, 1, 0}, s1k = {{0.8f, 5}, 0, 1, 0}, s2 = {{1.0f, 0}, 0, 2, 0};
    collected c;
    run(f, g, prompt, n, s1, &a);
    run(f, g, prompt, n, s1, &b);
    assert_memory_equal(a.tok, b.tok, n * sizeof *a.tok);
    run(f, g, prompt, n, s2, &c);
    assert_memory_not_equal(a.tok, c.tok, n * sizeof *a.tok);
    run(f, g, prompt, n, s1k, &a);
    run(f, g, prompt, n, s1k, &b);
    assert_memory_equal(a.tok, b.tok, n * sizeof *a.tok);
    /* the callback stops early */
    memset(&c, 0, sizeof c);
    c.stop_at = 3;
    s1.max_tokens = n;
    OK(f->ctx, tsr_generate(g, f->ids, prompt, &s1, collect, &c));
    assert_int_equal(c.n, 3);
    free(seq);
    free(logits);
    tsr_generator_free(g);
}

/* The reference weights' argmax is one byte everywhere (96): noise of +-0.2 on every weight
 * gives greedy decoding something to follow. */
static void test_mini_greedy(void **state) {
    fixture *f = *state;
    float *noise = malloc(f->np * sizeof *noise);
    assert_non_null(noise);
    tsr_test_fill_uniform(noise, f->np, 11, -0.2f, 0.2f);
    for (size_t i = 0; i < f->np; i++) f->params[i] += noise[i];
    free(noise);
    check_greedy(f, 8, 24);
}
/* 10 prompt tokens and 30 generated over a context of 16: the window slides 24 times */
static void test_small_greedy_slides(void **state) { check_greedy(*state, 10, 30); }

/* The sampler on known logits: ids 1 and 2 tie for the largest. */
static void test_sample_logits(void **state) {
    fixture *f = *state;
    tsr_context *ctx = f->ctx;
    const float l[4] = {1.0f, 3.0f, 3.0f, 2.0f};
    int32_t t;
    tsr_sampling greedy = {0.0f, 0}, k1 = {2.0f, 1}, k2 = {1.0f, 2}, all = {1.0f, 0}, k3 = {0.5f, 3};
    OK(ctx, tsr_sample_logits(ctx, l, 4, &greedy, 0.99, &t));
    assert_int_equal(t, 1); /* the first of equal ones */
    OK(ctx, tsr_sample_logits(ctx, l, 4, &k1, 0.99, &t));
    assert_int_equal(t, 1);
    /* top 2: ids 1 and 2 at one half each */
    OK(ctx, tsr_sample_logits(ctx, l, 4, &k2, 0.49, &t));
    assert_int_equal(t, 1);
    OK(ctx, tsr_sample_logits(ctx, l, 4, &k2, 0.51, &t));
    assert_int_equal(t, 2);
    /* all at temperature 1: weights e^1, e^3, e^3, e^2 in id order */
    double e[4] = {exp(1.0), exp(3.0), exp(3.0), exp(2.0)}, sum = e[0] + e[1] + e[2] + e[3];
    OK(ctx, tsr_sample_logits(ctx, l, 4, &all, 0.0, &t));
    assert_int_equal(t, 0);
    OK(ctx, tsr_sample_logits(ctx, l, 4, &all, e[0] / sum - 1e-9, &t));
    assert_int_equal(t, 0);
    OK(ctx, tsr_sample_logits(ctx, l, 4, &all, e[0] / sum + 1e-9, &t));
    assert_int_equal(t, 1);
    OK(ctx, tsr_sample_logits(ctx, l, 4, &all, (e[0] + e[1] + e[2]) / sum + 1e-9, &t));
    assert_int_equal(t, 3);
    /* top 3 at temperature 0.5: ids 1, 2, 3 weighted e^6, e^6, e^4 */
    double w = 2 * exp(6.0) + exp(4.0);
    OK(ctx, tsr_sample_logits(ctx, l, 4, &k3, 2 * exp(6.0) / w - 1e-9, &t));
    assert_int_equal(t, 2);
    OK(ctx, tsr_sample_logits(ctx, l, 4, &k3, 2 * exp(6.0) / w + 1e-9, &t));
    assert_int_equal(t, 3);
    /* refusals */
    tsr_sampling cold = {-1.0f, 0}, nan_t = {NAN, 0}, big_k = {1.0f, 5};
    assert_int_equal(tsr_sample_logits(ctx, l, 4, &cold, 0.5, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "temperature"));
    assert_int_equal(tsr_sample_logits(ctx, l, 4, &nan_t, 0.5, &t), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_sample_logits(ctx, l, 4, &big_k, 0.5, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "top-k 5"));
    assert_int_equal(tsr_sample_logits(ctx, l, 4, &all, 1.0, &t), TSR_ERR_INVALID_ARG);
    const float bad[2] = {0.0f, NAN};
    assert_int_equal(tsr_sample_logits(ctx, bad, 2, &all, 0.5, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "logit 1"));
}

static void test_errors(void **state) {
    fixture *f = *state;
    tsr_context *ctx = f->ctx;
    tsr_generator *g = NULL;
    /* not a GPT */
    tsr_model *mlp;
    OK(ctx, tsr_model_parse(ctx, "mlp", TSR_MODEL_INPUT_MNIST, &mlp));
    float *p = calloc(tsr_model_param_count(mlp), sizeof *p);
    assert_non_null(p);
    assert_int_equal(tsr_generator_create(ctx, mlp, p, tsr_model_param_count(mlp), &g), TSR_ERR_UNSUPPORTED);
    assert_non_null(strstr(tsr_context_last_error(ctx), "GPT"));
    assert_null(g);
    free(p);
    tsr_model_free(mlp);
    assert_int_equal(tsr_generator_create(ctx, f->model, f->params, f->np - 1, &g), TSR_ERR_SHAPE);
    OK(ctx, tsr_generator_create(ctx, f->model, f->params, f->np, &g));
    int32_t t;
    tsr_sampling greedy = {0.0f, 0};
    assert_int_equal(tsr_generator_sample(g, &greedy, &t), TSR_ERR_INVALID_ARG);
    /* tokens outside the vocabulary, the cache untouched */
    int32_t bad[2] = {1, (int32_t)f->V}, neg = -1;
    assert_int_equal(tsr_generator_feed(g, bad, 2, NULL), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "outside the vocabulary"));
    assert_int_equal(tsr_generator_feed(g, &neg, 1, NULL), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_generator_position(g), 0);
    assert_int_equal(tsr_generator_feed(g, bad, 0, NULL), TSR_ERR_INVALID_ARG);
    /* past the context */
    int32_t *many = calloc(f->T + 1, sizeof *many);
    assert_non_null(many);
    OK(ctx, tsr_generator_feed(g, many, f->T - 1, NULL));
    assert_int_equal(tsr_generator_feed(g, many, 2, NULL), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "context of 16"));
    assert_int_equal(tsr_generator_position(g), f->T - 1);
    /* prompts: empty, longer than the context */
    tsr_generate_options o = {greedy, 4, 0, 0};
    assert_int_equal(tsr_generate(g, many, 0, &o, NULL, NULL), TSR_ERR_SHAPE);
    assert_int_equal(tsr_generate(g, many, f->T + 1, &o, NULL, NULL), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "prompt of 17 tokens"));
    many[3] = 99;
    assert_int_equal(tsr_generate(g, many, 5, &o, NULL, NULL), TSR_ERR_INVALID_ARG);
    free(many);
    tsr_generator_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_mini_positions, setup_mini, teardown),
        cmocka_unit_test_setup_teardown(test_small_positions, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_mini_greedy, setup_mini, teardown),
        cmocka_unit_test_setup_teardown(test_small_greedy_slides, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_sample_logits, setup_small, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup_small, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
