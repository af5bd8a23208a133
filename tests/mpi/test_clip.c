/* Gradient clipping by global norm and weight decay on matrices only under mpiexec -n 1..4:
 * every rank (data-parallel replica) steps with the same batch, so the update of the global
 * batch is the one-process update on that batch; in data, ZeRO-1, pipeline, hybrid (2 x 2 at
 * n = 4) and gossip mode, each step's reported pre-clip norm must match the one process's
 * within 1e-5 (relative) and be the same on every rank, and the parameters after K clipped
 * steps must match within 2e-6. An image MLP and a GPT with its head tied to the token
 * embedding (a pipeline then keeps a copy of the table on the last stage, whose gradient
 * must count once). Prints each failure and exits non-zero. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include "tessera.h"
#include "tests/support/mode_harness.h"
#include "tests/support/mpi_check.h"

enum { K = 4, B = 6, T = 8, VOCAB = 16 };
static int rank, nranks;

typedef struct setup {
    const char *name;
    tsr_train_mode mode;
    int zero;
    size_t replicas;
} setup;

typedef struct task {
    const tsr_model *model;
    int tokens;            /* token ids (a GPT) or images */
    const size_t *bounds;  /* pipeline stage bounds for nranks stages, NULL: even */
    const size_t *hbounds; /* the same for nranks / 2 stages (hybrid) */
} task;

/* Step k's batch, the same on every rank. */
static void batch(const task *tk, int k, float *x, int32_t *y) {
    if (!tk->tokens) {
        tsr_mh_argmax_batch(100 + (uint64_t)k, B, TSR_MH_FEATURES, TSR_MH_CLASSES, x, y);
        return;
    }
    uint64_t s = 1000 + (uint64_t)k;
    int32_t *ids = (int32_t *)(void *)x;
    for (size_t i = 0; i < B * T; i++) ids[i] = (int32_t)(tsr_mh_lcg(&s) % VOCAB);
    for (size_t i = 0; i < B * T; i++) y[i] = (int32_t)(tsr_mh_lcg(&s) % VOCAB);
}

static void options(tsr_trainer_options *o, tsr_comm *comm) {
    tsr_mh_options(o, comm, B, 3, 0); /* SGD lr 0.05 momentum 0.9 */
    o->optimizer.weight_decay = 0.1f;
    o->decay_matrices_only = 1;
    o->clip_grad_norm = 0.05; /* below every step's norm here: clipping always engages */
}

/* K steps; norms[k] each step's pre-clip norm, params the whole model's at the end. */
static tsr_status train(tsr_context *ctx, const task *tk, const tsr_trainer_options *o, double *norms,
                        float *params) {
    size_t np = tsr_model_param_count(tk->model);
    float *x = calloc(B * (tk->tokens ? T : TSR_MH_FEATURES), sizeof(float));
    int32_t *y = calloc(B * T, sizeof *y);
    tsr_trainer *t = NULL;
    tsr_status s = x && y ? tsr_trainer_create(ctx, tk->model, o, &t) : TSR_ERR_NO_MEMORY;
    for (int k = 0; s == TSR_OK && k < K; k++) {
        batch(tk, k, x, y);
        s = tk->tokens ? tsr_trainer_step_tokens(t, (const int32_t *)(void *)x, y, B, NULL)
                       : tsr_trainer_step(t, x, y, B, NULL);
        norms[k] = tsr_trainer_grad_norm(t);
    }
    if (s == TSR_OK) s = tsr_trainer_get_params(t, params, np);
    tsr_trainer_free(t);
    free(x);
    free(y);
    return s;
}

static void compare(tsr_context *ctx, tsr_comm *comm, const task *tk, const setup *su, const char *what) {
    size_t np = tsr_model_param_count(tk->model);
    float *want = calloc(np, sizeof *want), *got = calloc(np, sizeof *got);
    double ref[K], norms[K];
    tsr_trainer_options o;
    options(&o, NULL);
    CHECK_OK(train(ctx, tk, &o, ref, want), ctx);
    CHECK(ref[K - 1] > o.clip_grad_norm, "%s: the last norm %g does not exceed the bound", what, ref[K - 1]);
    options(&o, comm);
    o.mode = su->mode;
    o.shard_optimizer = su->zero;
    o.replicas = su->replicas;
    o.stage_bounds = su->mode == TSR_MODE_HYBRID ? tk->hbounds : su->mode == TSR_MODE_PIPELINE ? tk->bounds : NULL;
    o.microbatches = su->mode == TSR_MODE_PIPELINE || su->mode == TSR_MODE_HYBRID ? 2 : 0;
    tsr_status s = train(ctx, tk, &o, norms, got);
    CHECK(s == TSR_OK, "%s %s: %s (%s)", what, su->name, tsr_status_str(s), tsr_context_last_error(ctx));
    if (s != TSR_OK) goto done;
    for (int k = 0; k < K; k++)
        CHECK(fabs(norms[k] - ref[k]) <= 1e-5 * ref[k], "%s %s step %d: norm %.9g, one process %.9g", what,
              su->name, k, norms[k], ref[k]);
    CHECK(tsr_mh_same_on_all_ranks((const float *)(const void *)norms, 2 * K), "%s %s: the ranks' norms differ",
          what, su->name);
    double d = tsr_mh_max_abs_diff(got, want, np);
    CHECK(d <= 2e-6, "%s %s: parameters differ from one process's by %g", what, su->name, d);
done:
    free(want);
    free(got);
}

static void run_all(tsr_context *ctx, tsr_comm *comm, const task *tk, const char *what) {
    const setup setups[] = {
        {"data", TSR_MODE_DATA, 0, 0},
        {"zero", TSR_MODE_DATA, 1, 0},
        {"pipeline", TSR_MODE_PIPELINE, 0, 0},
        {"hybrid", TSR_MODE_HYBRID, 0, 2},
        {"gossip", TSR_MODE_GOSSIP, 0, 0},
    };
    for (size_t i = 0; i < sizeof setups / sizeof *setups; i++) {
        if (setups[i].mode == TSR_MODE_HYBRID && nranks != 4) continue; /* 2 x 2 */
        compare(ctx, comm, tk, &setups[i], what);
    }
}

int main(int argc, char **argv) {
    tsr_mh_world w;
    tsr_status ws = tsr_mh_world_init(&w, &argc, &argv, TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC);
    rank = w.rank, nranks = w.nranks;
    mpi_check_rank = w.rank;
    CHECK_OK(ws, w.ctx);
    if (nranks <= 4 && w.comm) {
        tsr_model *mlp = tsr_mh_synthetic_model(w.ctx, "dense:16,relu,dense:16,relu,dense:16,relu,dense:10");
        CHECK(mlp != NULL, "mlp: %s", tsr_context_last_error(w.ctx));
        task images = {mlp, 0, NULL, NULL};
        if (mlp) run_all(w.ctx, w.comm, &images, "mlp");
        /* 2 blocks: layers 0-1 embeddings, 2-11 and 12-21 the blocks, 22-23 ln_f and the tied
         * head; stages cut at block boundaries */
        static const size_t cuts[5][5] = {{0}, {0, 24}, {0, 12, 24}, {0, 2, 12, 24}, {0, 2, 12, 22, 24}};
        tsr_gpt_config c;
        tsr_model *gpt = NULL;
        CHECK_OK(tsr_gpt_config_parse(w.ctx, "gpt(layers=2,heads=2,channels=8,context=8,vocab=16)", &c), w.ctx);
        CHECK_OK(tsr_model_create_gpt(w.ctx, &c, T, &gpt), w.ctx);
        task tokens = {gpt, 1, cuts[nranks], cuts[nranks / 2 ? nranks / 2 : 1]};
        if (gpt) run_all(w.ctx, w.comm, &tokens, "gpt");
        tsr_model_free(gpt);
        tsr_model_free(mlp);
    }
    return tsr_mh_world_end(&w, failures, skips, "test_clip");
}
