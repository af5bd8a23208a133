/* Tensor-parallel GPT blocks under mpiexec -n 1..4 (lib/model/gpt_tp.c, the tpcopy/tpreduce
 * layers): every rank holds a share of each block's heads and MLP units, unevenly by speed
 * ({3, 1, 1, 1}: rank 0 takes the most) and evenly, and the group's loss, gradients (gathered
 * into the whole layout) and parameters after 3 AdamW steps must equal the whole model's on one
 * process: loss within 1e-5 relative, gradients 1e-4 of each tensor's largest, parameters 2e-4
 * absolute (Adam moves a weight by up to lr per step whatever its rounding: tests/ref/README.md).
 * Then the trainer in every layout the ranks allow (ranks = replicas x tensor K x stages, the
 * tensor-parallel peers consecutive): data x tensor with and without ZeRO, tensor x pipeline
 * (with micro-batches), tensor x hybrid, even and uneven shares: each step's global loss and
 * the whole model's parameters after 4 AdamW steps (tsr_trainer_get_params) must equal a
 * single-process trainer's on the same global batches, and a checkpoint written by the layout
 * must load into the single trainer as its own parameters and optimizer state (the next step
 * equal). Also: the share arithmetic and refusals. Prints each failure and exits non-zero. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include "backends/backend.h"
#include "lib/model/stage.h"
#include "lib/train/optim.h"
#include "support/test_util.h"
#include "tessera.h"
#include "tests/support/mode_harness.h"
#include "tests/support/mpi_check.h"

enum { B = 3, T = 12, STEPS = 3 };
static const char *CFG = "gpt(layers=2,heads=6,channels=24,context=16,vocab=40)";

typedef struct run {
    tsr_model *model;
    tsr_stage *stage;
    tsr_optim *optim;
    size_t np;
} run;

static void run_open(tsr_context *ctx, tsr_backend *be, tsr_model *m, tsr_comm *tp, run *r) {
    r->model = m;
    tsr_stage_options so = {0, tsr_model_layer_count(m), B, 0, TSR_PRECISION_FP32, 0};
    CHECK_OK(tsr_stage_create(be, m, &so, &r->stage), ctx);
    tsr_stage_set_tp(r->stage, tp);
    r->np = tsr_stage_param_count(r->stage);
    tsr_optimizer_options oo = {TSR_OPTIM_ADAMW, 1e-3f, 0, 0, 0.9f, 0.999f, 1e-8f, 0.1f};
    CHECK_OK(tsr_optim_create(be, &oo, r->np, &r->optim), ctx);
}

static void run_close(run *r) {
    tsr_optim_free(r->optim);
    tsr_stage_free(r->stage);
    tsr_model_free(r->model);
}

static float step(tsr_context *ctx, run *r, const int32_t *ids, const int32_t *targets, uint64_t t) {
    float loss = NAN;
    CHECK_OK(tsr_ref_write(tsr_stage_input(r->stage), TSR_DTYPE_I32, ids, B * T), ctx);
    CHECK_OK(tsr_ref_write(tsr_stage_labels(r->stage), TSR_DTYPE_I32, targets, B * T), ctx);
    CHECK_OK(tsr_stage_forward(r->stage, B, 1, 0, &loss), ctx);
    CHECK_OK(tsr_stage_backward(r->stage, B, 0), ctx);
    (void)t;
    return loss;
}

static void update(tsr_context *ctx, run *r, uint64_t t) {
    CHECK_OK(tsr_optim_update(r->optim, tsr_stage_params(r->stage), tsr_stage_grads(r->stage), 1e-3f, t), ctx);
}

static void test_match_whole(tsr_context *ctx, tsr_comm *comm, int rank, int K, const double *speed) {
    tsr_gpt_config c;
    CHECK_OK(tsr_gpt_config_parse(ctx, CFG, &c), ctx);
    size_t heads[4], head0 = 0;
    CHECK_OK(tsr_gpt_tp_split(ctx, &c, (size_t)K, speed, heads), ctx);
    for (int r = 0; r < rank; r++) head0 += heads[r];
    tsr_backend *be;
    CHECK_OK(tsr_backend_open(ctx, 0, &be), ctx);
    tsr_model *wm, *lm;
    CHECK_OK(tsr_model_create_gpt(ctx, &c, T, &wm), ctx);
    CHECK_OK(tsr_model_create_gpt_tp(ctx, &c, T, head0, heads[rank], &lm), ctx);
    run whole, mine;
    run_open(ctx, be, wm, NULL, &whole);
    run_open(ctx, be, lm, K > 1 ? comm : NULL, &mine);
    size_t n = whole.np;
    float *full = calloc(n, sizeof *full), *loc = calloc(mine.np, sizeof *loc), *g = calloc(n, sizeof *g);
    float *wg = calloc(n, sizeof *wg), *want = calloc(mine.np, sizeof *want);
    int32_t ids[B * T], targets[B * T];
    for (size_t i = 0; i < B * T; i++) {
        ids[i] = (int32_t)((i * 7 + 3) % c.vocab);
        targets[i] = (int32_t)((i * 11 + 5) % c.vocab);
    }
    CHECK_OK(tsr_stage_init_params(whole.stage, 0, 42), ctx);
    CHECK_OK(tsr_read_f32(tsr_stage_params(whole.stage), 0, full, n), ctx);
    CHECK_OK(tsr_gpt_tp_scatter(ctx, wm, lm, &c, head0, heads[rank], full, loc), ctx);
    CHECK_OK(tsr_write_f32(tsr_stage_params(mine.stage), 0, loc, mine.np), ctx);
    for (uint64_t t = 0; t < STEPS; t++) {
        float lw = step(ctx, &whole, ids, targets, t), ll = step(ctx, &mine, ids, targets, t);
        CHECK(fabsf(lw - ll) <= 1e-5f * fabsf(lw), "K=%d step %llu: loss %.8g, whole model %.8g", K,
              (unsigned long long)t, (double)ll, (double)lw);
        /* the group's gradients gathered into the whole layout */
        CHECK_OK(tsr_read_f32(tsr_stage_grads(mine.stage), 0, loc, mine.np), ctx);
        memset(g, 0, n * sizeof *g);
        CHECK_OK(tsr_gpt_tp_gather(ctx, wm, lm, &c, head0, heads[rank], loc, rank == 0, g), ctx);
        if (K > 1) CHECK_OK(tsr_comm_allreduce(comm, g, n, NULL), ctx);
        CHECK_OK(tsr_read_f32(tsr_stage_grads(whole.stage), 0, wg, n), ctx);
        for (size_t k = 0; k < tsr_model_param_tensor_count(wm); k++) {
            tsr_param_info p;
            CHECK_OK(tsr_model_param_tensor(wm, k, &p), ctx);
            double d = tsr_test_max_diff(g + p.offset, wg + p.offset, p.count), b = 1e-4 * tsr_test_max_abs(wg + p.offset, p.count);
            CHECK(d <= b + 1e-7, "K=%d step %llu: gradient %s differs by %.3g (bound %.3g)", K,
                  (unsigned long long)t, p.name, d, b);
        }
        update(ctx, &whole, t);
        update(ctx, &mine, t);
        /* this rank's parameters: its share of the whole model's, replicated tensors included */
        CHECK_OK(tsr_read_f32(tsr_stage_params(whole.stage), 0, full, n), ctx);
        CHECK_OK(tsr_gpt_tp_scatter(ctx, wm, lm, &c, head0, heads[rank], full, want), ctx);
        CHECK_OK(tsr_read_f32(tsr_stage_params(mine.stage), 0, loc, mine.np), ctx);
        double d = tsr_test_max_diff(loc, want, mine.np);
        CHECK(d <= 2e-4, "K=%d step %llu: parameters differ by %.3g", K, (unsigned long long)t, d);
    }
    free(full), free(loc), free(g), free(wg), free(want);
    run_close(&whole);
    run_close(&mine);
    tsr_backend_free(be);
}

/* The vocabulary-parallel table by central differences of the group's loss: each rank in turn
 * moves entries of its own rows (those of tokens in the batch, so their gradients are not 0)
 * by +-h; every rank runs the forward, whose embedding sums the group's rows and whose loss
 * combines the group's logits. (L(+h) - L(-h)) / 2h must match the analytic gradient. */
static void test_vocab_central(tsr_context *ctx, tsr_comm *comm, int rank, int K, const double *speed) {
    tsr_gpt_config c;
    CHECK_OK(tsr_gpt_config_parse(ctx, CFG, &c), ctx);
    size_t heads[4], head0 = 0;
    CHECK_OK(tsr_gpt_tp_split(ctx, &c, (size_t)K, speed, heads), ctx);
    for (int r = 0; r < rank; r++) head0 += heads[r];
    tsr_backend *be;
    CHECK_OK(tsr_backend_open(ctx, 0, &be), ctx);
    tsr_model *lm;
    CHECK_OK(tsr_model_create_gpt_tp(ctx, &c, T, head0, heads[rank], &lm), ctx);
    run mine;
    run_open(ctx, be, lm, K > 1 ? comm : NULL, &mine);
    size_t row0 = c.vocab * head0 / c.heads, rows = c.vocab * (head0 + heads[rank]) / c.heads - row0;
    size_t w_off, w_count;
    CHECK_OK(tsr_stage_layer_params(mine.stage, 0, &w_off, &w_count, NULL, NULL), ctx);
    CHECK(w_count == rows * c.channels, "K=%d: the table slice holds %zu floats, %zu rows x %zu wanted", K, w_count,
          rows, c.channels);
    int32_t ids[B * T], targets[B * T];
    for (size_t i = 0; i < B * T; i++) {
        ids[i] = (int32_t)((i * 7 + 3) % c.vocab);
        targets[i] = (int32_t)((i * 11 + 5) % c.vocab);
    }
    /* the group's share of one whole model (replicated tensors alike on every rank) */
    tsr_model *wm;
    CHECK_OK(tsr_model_create_gpt(ctx, &c, T, &wm), ctx);
    float *full = calloc(tsr_model_param_count(wm), sizeof *full);
    float *p = calloc(mine.np, sizeof *p), *g = calloc(mine.np, sizeof *g);
    CHECK_OK(tsr_model_init_host(wm, 0, 42, full), ctx);
    CHECK_OK(tsr_gpt_tp_scatter(ctx, wm, lm, &c, head0, heads[rank], full, p), ctx);
    CHECK_OK(tsr_write_f32(tsr_stage_params(mine.stage), 0, p, mine.np), ctx);
    free(full);
    tsr_model_free(wm);
    (void)step(ctx, &mine, ids, targets, 0);
    CHECK_OK(tsr_read_f32(tsr_stage_grads(mine.stage), 0, g, mine.np), ctx);
    const float h = 1e-2f;
    for (int q = 0; q < K; q++)
        for (int k = 0; k < 3; k++) {
            /* rank q's entry: channel k of the row of a token of the batch that it holds */
            size_t at = SIZE_MAX;
            for (size_t i = 0; rank == q && i < B * T && at == SIZE_MAX; i++)
                if ((size_t)ids[i] >= row0 && (size_t)ids[i] - row0 < rows)
                    at = w_off + ((size_t)ids[i] - row0) * c.channels + (size_t)(k * 5) % c.channels;
            float lp = NAN, lm2 = NAN, saved = 0;
            for (int sign = 1; sign >= -1; sign -= 2) {
                if (at != SIZE_MAX) {
                    saved = p[at];
                    float v = saved + (float)sign * h;
                    CHECK_OK(tsr_write_f32(tsr_stage_params(mine.stage), at, &v, 1), ctx);
                }
                CHECK_OK(tsr_ref_write(tsr_stage_input(mine.stage), TSR_DTYPE_I32, ids, B * T), ctx);
                CHECK_OK(tsr_ref_write(tsr_stage_labels(mine.stage), TSR_DTYPE_I32, targets, B * T), ctx);
                CHECK_OK(tsr_stage_forward(mine.stage, B, 0, 0, sign > 0 ? &lp : &lm2), ctx);
                if (at != SIZE_MAX) CHECK_OK(tsr_write_f32(tsr_stage_params(mine.stage), at, &saved, 1), ctx);
            }
            if (at == SIZE_MAX) continue;
            double fd = ((double)lp - (double)lm2) / (2.0 * h), an = g[at];
            CHECK(fabs(fd - an) <= 2e-4 + 2e-2 * fabs(an), "K=%d rank %d: table entry %zu: analytic %.6g, central "
                  "difference %.6g", K, rank, at - w_off, an, fd);
            CHECK(fabs(an) > 1e-6, "K=%d rank %d: table entry %zu has no gradient", K, rank, at - w_off);
        }
    free(p), free(g);
    run_close(&mine);
    tsr_backend_free(be);
}

/* ---- the trainer in a layout against the trainer on one process ---- */

enum { GB = 4, LSTEPS = 4 };

typedef struct layout {
    const char *name;
    int K;                /* tensor-parallel ranks per group */
    tsr_train_mode mode;  /* DATA, PIPELINE or HYBRID */
    size_t R, M;          /* hybrid replicas; pipeline micro-batches */
    int zero;
    const double *speed;  /* NULL: even shares */
} layout;

static tsr_trainer_options lm_options(void) {
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.optimizer = (tsr_optimizer_options){TSR_OPTIM_ADAMW, 1e-3f, 0, 0, 0.9f, 0.999f, 1e-8f, 0.1f};
    o.seed = 7;
    o.batch = GB;
    return o;
}

/* step k's global batch: GB sequences of T ids and targets */
static void lm_batch(const tsr_gpt_config *c, int k, int32_t *ids, int32_t *targets) {
    for (size_t i = 0; i < GB * T; i++) {
        ids[i] = (int32_t)((i * 7 + 3 + 13 * (size_t)k) % c->vocab);
        targets[i] = (int32_t)((i * 11 + 5 + 3 * (size_t)k * i) % c->vocab);
    }
}

static void test_layout(tsr_context *ctx, tsr_comm *world, int rank, int size, const layout *L,
                        const char *ckpt) {
    size_t K = (size_t)L->K, R = L->mode == TSR_MODE_HYBRID ? L->R : 1;
    if ((size_t)size % (K * R)) return; /* not a layout of these ranks */
    tsr_gpt_config c;
    CHECK_OK(tsr_gpt_config_parse(ctx, CFG, &c), ctx);
    size_t heads[4], head0 = 0, t = (size_t)rank % K;
    CHECK_OK(tsr_gpt_tp_split(ctx, &c, K, L->speed, heads), ctx);
    for (size_t q = 0; q < t; q++) head0 += heads[q];
    tsr_model *wm, *sm;
    CHECK_OK(tsr_model_create_gpt(ctx, &c, T, &wm), ctx);
    CHECK_OK(tsr_model_create_gpt_tp(ctx, &c, T, head0, heads[t], &sm), ctx);
    /* the layout's communicators, as tsr-train builds them */
    tsr_comm *tp, *rest;
    CHECK_OK(tsr_comm_split(world, rank / (int)K, (int)t, &tp), ctx);
    CHECK_OK(tsr_comm_split(world, (int)t, rank / (int)K, &rest), ctx);
    tsr_trainer_options o = lm_options(), ro = lm_options();
    o.mode = L->mode;
    o.comm = size / (int)K > 1 ? rest : NULL;
    o.shard_optimizer = L->zero;
    o.replicas = R;
    o.microbatches = L->M;
    o.tp_comm = tp, o.tp_whole = wm, o.tp_head0 = head0, o.tp_heads = heads[t];
    char tl[256], tl1[256];
    tsr_mh_shared_path(tl, sizeof tl, "tp-timeline", ".json");
    snprintf(tl1, sizeof tl1, "%.*s.tp1.json", (int)(strlen(tl) - 5), tl);
    if (L->mode == TSR_MODE_PIPELINE) o.timeline = tl; /* each tensor index writes its own */
    tsr_data_split split;
    size_t shares[8];
    CHECK_OK(tsr_trainer_data_split(ctx, &o, GB, 1, &split, shares), ctx);
    o.batch = split.step_batch;
    tsr_trainer *tr = NULL, *ref = NULL;
    CHECK_OK(tsr_trainer_create(ctx, sm, &o, &tr), ctx);
    CHECK_OK(tsr_trainer_create(ctx, wm, &ro, &ref), ctx);
    size_t n = tsr_model_param_count(wm), b = split.loader.batch, lo = b * (size_t)split.loader.rank;
    float *got = calloc(n, sizeof *got), *want = calloc(n, sizeof *want);
    int32_t ids[GB * T], targets[GB * T];
    for (int k = 0; k < LSTEPS && tr && ref; k++) {
        lm_batch(&c, k, ids, targets);
        float lw = NAN, ll = NAN;
        CHECK_OK(tsr_trainer_step_tokens(ref, ids, targets, GB, &lw), ctx);
        /* this rank's slice of the global batch (data: its replica's share; pipeline: all) */
        CHECK_OK(tsr_trainer_step_tokens(tr, ids + lo * T, targets + lo * T, b, &ll), ctx);
        if (L->mode == TSR_MODE_DATA) ll = tsr_trainer_global_loss(tr);
        CHECK(fabsf(lw - ll) <= 1e-5f * fabsf(lw), "%s n=%d step %d: loss %.8g, one process %.8g", L->name, size,
              k, (double)ll, (double)lw);
    }
    if (tr && ref) {
        CHECK_OK(tsr_trainer_get_params(tr, got, n), ctx);
        CHECK_OK(tsr_trainer_get_params(ref, want, n), ctx);
        double d = tsr_test_max_diff(got, want, n);
        CHECK(d <= 2e-4, "%s n=%d: parameters after %d AdamW steps differ by %.3g", L->name, size, LSTEPS, d);
        /* the layout's checkpoint is the whole model: a single trainer continues from it */
        tsr_trainer *back = NULL;
        CHECK_OK(tsr_trainer_save(tr, ckpt), ctx);
        MPI_Barrier(MPI_COMM_WORLD); /* data mode: rank 0 writes, the others return at once */
        CHECK_OK(tsr_trainer_create(ctx, wm, &ro, &back), ctx);
        if (back) {
            CHECK_OK(tsr_trainer_load(back, ckpt), ctx);
            CHECK_OK(tsr_trainer_get_params(back, want, n), ctx);
            CHECK(tsr_test_max_diff(got, want, n) == 0.0, "%s n=%d: checkpoint parameters differ", L->name, size);
            lm_batch(&c, LSTEPS, ids, targets);
            float lb = NAN, ll = NAN;
            CHECK_OK(tsr_trainer_step_tokens(back, ids, targets, GB, &lb), ctx);
            CHECK_OK(tsr_trainer_step_tokens(tr, ids + lo * T, targets + lo * T, b, &ll), ctx);
            if (L->mode == TSR_MODE_DATA) ll = tsr_trainer_global_loss(tr);
            CHECK(fabsf(lb - ll) <= 1e-5f * fabsf(lb), "%s n=%d: step after the checkpoint %.8g, resumed %.8g",
                  L->name, size, (double)ll, (double)lb);
            CHECK_OK(tsr_trainer_get_params(tr, got, n), ctx);
            CHECK_OK(tsr_trainer_get_params(back, want, n), ctx);
            d = tsr_test_max_diff(got, want, n);
            CHECK(d <= 2e-4, "%s n=%d: parameters after the resumed step differ by %.3g", L->name, size, d);
        }
        tsr_trainer_free(back);
        MPI_Barrier(MPI_COMM_WORLD); /* every rank read the file before the next layout writes it */
    }
    free(got), free(want);
    tsr_trainer_free(tr); /* writes the timelines */
    tsr_trainer_free(ref);
    if (o.timeline) {
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0) {
            FILE *f0 = fopen(tl, "r"), *f1 = fopen(tl1, "r");
            CHECK(f0 && f1, "%s n=%d: timelines %s (%s) and %s (%s)", L->name, size, tl, f0 ? "written" : "missing",
                  tl1, f1 ? "written" : "missing");
            if (f0) fclose(f0);
            if (f1) fclose(f1);
            remove(tl);
            remove(tl1);
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
    tsr_comm_free(rest);
    tsr_comm_free(tp);
    tsr_model_free(sm);
    tsr_model_free(wm);
}

static void test_layouts(tsr_context *ctx, tsr_comm *world, int rank, int size) {
    static const double fast_slow[2] = {3, 1}, uneven3[3] = {2, 1, 1};
    const layout layouts[] = {
        {"tensor 2", 2, TSR_MODE_DATA, 1, 0, 0, NULL},
        {"tensor 2 at 3:1", 2, TSR_MODE_DATA, 1, 0, 0, fast_slow},
        {"tensor 3 at 2:1:1", 3, TSR_MODE_DATA, 1, 0, 0, uneven3},
        {"data x tensor 2, ZeRO", 2, TSR_MODE_DATA, 1, 0, 1, NULL},
        {"tensor 2 x pipeline", 2, TSR_MODE_PIPELINE, 1, 2, 0, NULL},
        {"tensor 2 at 3:1 x pipeline", 2, TSR_MODE_PIPELINE, 1, 1, 0, fast_slow},
        {"tensor 2 x hybrid 2 replicas", 2, TSR_MODE_HYBRID, 2, 1, 0, NULL},
        {"tensor 4", 4, TSR_MODE_DATA, 1, 0, 0, NULL},
    };
    char ckpt[256];
    tsr_mh_shared_path(ckpt, sizeof ckpt, "tp-layout", ".ckpt");
    for (size_t i = 0; i < sizeof layouts / sizeof *layouts; i++) test_layout(ctx, world, rank, size, &layouts[i], ckpt);
    if (rank == 0) remove(ckpt);
}

/* A vocabulary slice out of bounds, an unknown option, a GPT whose vocabulary cannot give every
 * head's share a row: refused with the bound; a slice in bounds parses and prints back. */
static void test_vocab_refusals(tsr_context *ctx) {
    static const struct {
        const char *spec, *says;
    } bad[] = {
        {"vpembed:4/from5/rows4,lmhead:0", "rows 5..9 are not a slice of the vocabulary of 8"},
        {"vpembed:4/from8/rows1,lmhead:0", "rows 8..9 are not a slice of the vocabulary of 8"},
        {"vpembed:4/rows0,lmhead:0", "rows 0..0 are not a slice of the vocabulary of 8"},
        {"vpembed:4/size3,lmhead:0", "vpembed takes the options /fromR (first row) and /rowsN"},
        {"vpembed,lmhead:0", "vpembed needs a positive width"},
    };
    tsr_model_input_desc d = {TSR_DTYPE_I32, 1, {3, 0, 0}, 8, 8};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tsr_model *m = NULL;
        tsr_status s = tsr_model_parse_desc(ctx, bad[i].spec, &d, &m);
        CHECK(s != TSR_OK && strstr(tsr_context_last_error(ctx), bad[i].says), "%s: %s (wanted \"%s\")", bad[i].spec,
              s == TSR_OK ? "accepted" : tsr_context_last_error(ctx), bad[i].says);
        tsr_model_free(m);
    }
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse_desc(ctx, "vpembed:4/from2/rows5,lmhead:0", &d, &m), ctx);
    if (m) {
        CHECK(!strcmp(tsr_model_spec(m), "vpembed:4/from2/rows5,lmhead:0"), "spec printed as %s", tsr_model_spec(m));
        CHECK(tsr_model_param_count(m) == 20, "a slice of 5 rows of 4: %zu parameters", tsr_model_param_count(m));
    }
    tsr_model_free(m);
    tsr_gpt_config c;
    CHECK_OK(tsr_gpt_config_parse(ctx, "gpt(layers=1,heads=6,channels=24,context=16,vocab=5)", &c), ctx);
    CHECK(tsr_model_create_gpt_tp(ctx, &c, 8, 0, 3, &m) == TSR_ERR_SHAPE &&
              strstr(tsr_context_last_error(ctx), "a vocabulary of 5 rows split like 6 heads"),
          "a vocabulary smaller than the heads: %s", tsr_context_last_error(ctx));
}

static void test_split(tsr_context *ctx) {
    tsr_gpt_config c;
    CHECK_OK(tsr_gpt_config_parse(ctx, "gpt2", &c), ctx);
    size_t h[4];
    const double fast_slow[2] = {3, 1}, three[3] = {1, 1, 1};
    CHECK_OK(tsr_gpt_tp_split(ctx, &c, 2, fast_slow, h), ctx);
    CHECK(h[0] == 9 && h[1] == 3, "12 heads on speeds {3, 1}: %zu, %zu", h[0], h[1]);
    CHECK_OK(tsr_gpt_tp_split(ctx, &c, 3, three, h), ctx);
    CHECK(h[0] == 4 && h[1] == 4 && h[2] == 4, "12 heads over 3 equal ranks: %zu %zu %zu", h[0], h[1], h[2]);
    const double skew[2] = {1000, 1};
    CHECK_OK(tsr_gpt_tp_split(ctx, &c, 2, skew, h), ctx);
    CHECK(h[0] == 11 && h[1] == 1, "a very slow rank keeps one head: %zu, %zu", h[0], h[1]);
    CHECK(tsr_gpt_tp_split(ctx, &c, 13, NULL, h) == TSR_ERR_SHAPE, "13 ranks for 12 heads accepted");
    const double bad[2] = {1, 0};
    CHECK(tsr_gpt_tp_split(ctx, &c, 2, bad, h) == TSR_ERR_INVALID_ARG, "a zero speed accepted");
}

int main(int argc, char **argv) {
    tsr_mh_world w;
    tsr_status ws = tsr_mh_world_init(&w, &argc, &argv, TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC);
    mpi_check_rank = w.rank;
    CHECK_OK(ws, w.ctx);
    if (w.nranks <= 4) {
        static const double speeds[4] = {3, 1, 1, 1};
        test_split(w.ctx);
        test_vocab_refusals(w.ctx);
        test_match_whole(w.ctx, w.comm, w.rank, w.nranks, speeds);
        test_match_whole(w.ctx, w.comm, w.rank, w.nranks, NULL);
        test_vocab_central(w.ctx, w.comm, w.rank, w.nranks, speeds);
        test_layouts(w.ctx, w.comm, w.rank, w.nranks);
    }
    return tsr_mh_world_end(&w, failures, skips, "test_tensor_parallel");
}
