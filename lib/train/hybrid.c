/* Hybrid data + model parallelism (see hybrid.h): the communicators of the R x S layout and a
 * pipeline whose stage averages its gradients over its replicas (lib/train/pipeline.c, lib/train/dp.c). */
#include <string.h>
#include "lib/comm/comm_internal.h"
#include "lib/train/hybrid.h"
#include "lib/core/internal.h"
#include "lib/train/strategy.h"

struct tsr_hybrid {
    tsr_context *ctx;
    tsr_comm *pipe;   /* the ranks of this replica, ordered by stage */
    tsr_comm *group;  /* the ranks running this stage, ordered by replica */
    tsr_pipeline *pl;
    size_t R, S, r, s;
};

tsr_status tsr_hybrid_layout(tsr_context *ctx, size_t ranks, size_t replicas, size_t stages,
                             size_t rank, size_t *replica, size_t *stage) {
    if (!replica || !stage)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_hybrid_layout: NULL argument");
    if (!replicas)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "hybrid: replicas is 0 (at least 1)");
    if (!stages)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "hybrid: stages is 0 (at least 1)");
    if (ranks / replicas != stages || ranks % replicas)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "hybrid: %zu ranks are not replicas %zu x stages %zu (= %zu)", ranks,
                         replicas, stages, replicas * stages);
    if (rank >= ranks)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "hybrid: rank %zu of %zu", rank, ranks);
    *replica = rank / stages;
    *stage = rank % stages;
    return TSR_OK;
}

void tsr_hybrid_free(tsr_hybrid *h) {
    if (!h) return;
    tsr_pipeline_free(h->pl);
    /* freeing a communicator is collective: not after a lost peer */
    int lost = (h->pipe && h->pipe->broken) || (h->group && h->group->broken);
    if (!lost) {
        tsr_comm_free(h->group);
        tsr_comm_free(h->pipe);
    }
    tsr_free(h->ctx, h);
}

tsr_status tsr_hybrid_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                             const tsr_hybrid_options *ho, tsr_hybrid **out) {
    if (!ctx || !model || !o || !ho || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_hybrid_create: NULL argument");
    *out = NULL;
    size_t ranks = o->comm ? (size_t)tsr_comm_size(o->comm) : 1;
    size_t rank = o->comm ? (size_t)tsr_comm_rank(o->comm) : 0, r, s;
    /* the same on every rank: all refuse alike, before anything collective */
    TSR_TRY(tsr_hybrid_layout(ctx, ranks, ho->replicas, ho->pipeline.stages, rank, &r, &s));
    tsr_hybrid *h = tsr_calloc(ctx, 1, sizeof *h);
    if (!h) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "hybrid");
    h->ctx = ctx;
    h->R = ho->replicas;
    h->S = ho->pipeline.stages;
    h->r = r;
    h->s = s;
    tsr_status st = TSR_OK;
    if (ranks > 1) { /* key = position: the pipeline's rank is the stage, the group's the replica */
        st = tsr_comm_split(o->comm, (int)r, (int)s, &h->pipe);
        if (st == TSR_OK) st = tsr_comm_split(o->comm, (int)s, (int)r, &h->group);
    }
    if (st == TSR_OK) {
        tsr_trainer_options po = *o;
        po.comm = h->pipe; /* NULL with one rank: a single stage */
        st = tsr_pipeline_create_replicated(ctx, model, &po, &ho->pipeline, h->group, o->comm,
                                            &h->pl);
    }
    if (st != TSR_OK) {
        tsr_hybrid_free(h);
        return st;
    }
    *out = h;
    return TSR_OK;
}

tsr_status tsr_hybrid_step(tsr_hybrid *h, const float *images, const int32_t *labels, size_t n,
                           float *loss) {
    if (!h) return TSR_ERR_INVALID_ARG;
    return tsr_pipeline_step(h->pl, images, labels, n, loss);
}

tsr_status tsr_hybrid_evaluate(tsr_hybrid *h, const tsr_dataset *d, double *accuracy,
                               double *loss) {
    if (!h) return TSR_ERR_INVALID_ARG;
    return tsr_pipeline_evaluate(h->pl, d, accuracy, loss);
}

tsr_status tsr_hybrid_get_params(tsr_hybrid *h, float *dst, size_t count) {
    return h ? tsr_pipeline_get_params(h->pl, dst, count) : TSR_ERR_INVALID_ARG;
}
tsr_status tsr_hybrid_set_params(tsr_hybrid *h, const float *src, size_t count) {
    return h ? tsr_pipeline_set_params(h->pl, src, count) : TSR_ERR_INVALID_ARG;
}
tsr_status tsr_hybrid_save(tsr_hybrid *h, const char *path) {
    return h ? tsr_pipeline_save(h->pl, path) : TSR_ERR_INVALID_ARG;
}
tsr_status tsr_hybrid_load(tsr_hybrid *h, const char *path) {
    return h ? tsr_pipeline_load(h->pl, path) : TSR_ERR_INVALID_ARG;
}

uint64_t tsr_hybrid_steps(const tsr_hybrid *h) { return h ? tsr_pipeline_steps(h->pl) : 0; }
uint64_t tsr_hybrid_skipped(const tsr_hybrid *h) { return h ? tsr_pipeline_skipped(h->pl) : 0; }
uint64_t tsr_hybrid_epoch(const tsr_hybrid *h) { return h ? tsr_pipeline_epoch(h->pl) : 0; }
uint64_t tsr_hybrid_seed(const tsr_hybrid *h) { return h ? tsr_pipeline_seed(h->pl) : 0; }
void tsr_hybrid_set_epoch(tsr_hybrid *h, uint64_t epoch) {
    if (h) tsr_pipeline_set_epoch(h->pl, epoch);
}
size_t tsr_hybrid_replica(const tsr_hybrid *h) { return h ? h->r : 0; }
size_t tsr_hybrid_stage(const tsr_hybrid *h) { return h ? h->s : 0; }
size_t tsr_hybrid_replicas(const tsr_hybrid *h) { return h ? h->R : 0; }
tsr_pipeline *tsr_hybrid_pipeline(tsr_hybrid *h) { return h ? h->pl : NULL; }

/* ---- the hybrid strategy behind tsr_trainer ---- */

static size_t replicas_of(const tsr_trainer_options *o) { return o->replicas ? o->replicas : 1; }
static size_t stages_of(const tsr_trainer_options *o) {
    size_t ranks = o->comm ? (size_t)tsr_comm_size(o->comm) : 1, R = replicas_of(o);
    return ranks / R ? ranks / R : 1; /* create checks R x S = ranks */
}

static tsr_status st_validate(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o) {
    (void)model;
    size_t ranks = o->comm ? (size_t)tsr_comm_size(o->comm) : 1, r, s;
    size_t rank = o->comm ? (size_t)tsr_comm_rank(o->comm) : 0;
    return tsr_hybrid_layout(ctx, ranks, replicas_of(o), stages_of(o), rank, &r, &s);
}
static tsr_status st_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                            void **mode) {
    size_t stages = stages_of(o), *even = tsr_calloc(ctx, stages + 1, sizeof *even);
    if (!even) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "hybrid: stage table");
    tsr_hybrid_options ho = {replicas_of(o), tsr_pipeline_options_of(o, model, stages, even)};
    tsr_status s = tsr_hybrid_create(ctx, model, o, &ho, (tsr_hybrid **)mode);
    tsr_free(ctx, even);
    return s;
}
static void st_destroy(void *mode) { tsr_hybrid_free(mode); }
static tsr_run *st_run(void *mode) { return tsr_pipeline_run(((tsr_hybrid *)mode)->pl); }
static tsr_status st_step(void *mode, const float *images, const int32_t *labels, size_t n,
                          float *loss) {
    return tsr_hybrid_step(mode, images, labels, n, loss); /* the global batch's loss */
}
static tsr_status st_evaluate(void *mode, const tsr_dataset *d, double *accuracy, double *loss) {
    return tsr_hybrid_evaluate(mode, d, accuracy, loss);
}
static tsr_status st_get(void *mode, float *dst, size_t count) {
    return tsr_hybrid_get_params(mode, dst, count);
}
static tsr_status st_set(void *mode, const float *src, size_t count) {
    return tsr_hybrid_set_params(mode, src, count);
}
static tsr_status st_grads(void *mode, float *dst, size_t count) {
    return tsr_pipeline_get_grads(((tsr_hybrid *)mode)->pl, dst, count); /* replica-averaged */
}
static tsr_status st_save(void *mode, const char *path) { return tsr_hybrid_save(mode, path); }
static tsr_status st_load(void *mode, const char *path) { return tsr_hybrid_load(mode, path); }
/* replica r reads shard r of R; every stage of a replica the same batches */
static tsr_status st_shard(tsr_context *ctx, const tsr_trainer_options *o, size_t global_batch,
                           uint64_t seed, tsr_data_split *split, size_t *shares) {
    size_t R = replicas_of(o), S = stages_of(o), ranks = o->comm ? (size_t)tsr_comm_size(o->comm) : 1;
    size_t rank = o->comm ? (size_t)tsr_comm_rank(o->comm) : 0, r, s;
    TSR_TRY(tsr_hybrid_layout(ctx, ranks, R, S, rank, &r, &s));
    if (global_batch < R)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "hybrid: global batch %zu is smaller than %zu replicas",
                         global_batch, R);
    split->loader = (tsr_loader_options){global_batch / R, seed, 1, (int)r, (int)R, 1};
    split->step_batch = global_batch / R; /* the largest batch a replica steps with */
    split->step_samples = split->loader.batch * R;
    for (size_t k = 0; k < ranks; k++) shares[k] = split->loader.batch;
    return TSR_OK;
}

const tsr_strategy tsr_strategy_hybrid = {"hybrid", st_validate, st_create, st_destroy, st_run,
                                          st_step, st_evaluate, st_get, st_set, st_grads, st_save, st_load,
                                          st_shard};
