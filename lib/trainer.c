/* Trainer: one stage holding the whole model, an optimizer, a schedule, an RNG for dropout
 * seeds, and checkpoints through tsr_checkpoint_save/load. With a communicator it trains data
 * parallel (lib/dp.c): the gradients of each step are averaged over the ranks, weighted by
 * their sample counts, before the (deterministic) optimizer step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <stdio.h>
#include "backends/host/host.h"
#include "lib/async.h"
#include "lib/comm/comm_internal.h"
#include "lib/dp.h"
#include "lib/gossip.h"
#include "lib/checkpoint_internal.h"
#include "lib/internal.h"
#include "lib/optim.h"
#include "lib/hybrid.h"
#include "lib/pipeline.h"
#include "lib/stage.h"
#include "lib/timeline.h"

struct tsr_trainer {
    tsr_context *ctx;
    const tsr_model *model;
    tsr_trainer_options o;
    int device;
    tsr_backend *be;
    tsr_stage *stage;
    tsr_optim *optim;
    tsr_rng rng;
    uint64_t steps, epoch, seed;
    float *probs;  /* host copy of batch x classes for evaluation */
    float *grads;  /* host copy of the gradients when check_grads (non-finite check) */
    uint64_t skipped;
    tsr_dp *dp;            /* data parallel (comm given), else NULL */
    tsr_timeline *tl;      /* TSR_TIMELINE, else NULL */
    float global_loss;
    tsr_pipeline *pl;      /* mode pipeline: the calls below go to it */
    tsr_hybrid *hy;        /* mode hybrid: owns pl (its replica's pipeline) */
    tsr_async *as;         /* mode async: the calls below go to it */
    tsr_gossip *gs;        /* mode gossip: the calls below go to it */
    char *meta;            /* run metadata kept in checkpoints (JSON object), or NULL */
};

tsr_status tsr_train_mode_parse(const char *name, tsr_train_mode *out) {
    static const char *names[] = {"data", "pipeline", "hybrid", "async", "gossip"};
    for (int i = 0; name && out && i < 5; i++)
        if (!strcmp(name, names[i])) {
            *out = (tsr_train_mode)i;
            return TSR_OK;
        }
    return TSR_ERR_PARSE;
}

tsr_status tsr_compress_kind_parse(const char *name, tsr_compress_kind *out) {
    static const char *names[] = {"none", "fp16", "topk"};
    for (int i = 0; name && out && i < 3; i++)
        if (!strcmp(name, names[i])) {
            *out = (tsr_compress_kind)i;
            return TSR_OK;
        }
    return TSR_ERR_PARSE;
}

void tsr_trainer_options_init(tsr_trainer_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->batch = 64;
    o->optimizer.kind = TSR_OPTIM_ADAM;
    o->optimizer.lr = 1e-3f;
    o->optimizer.momentum = 0.9f;
    o->optimizer.beta1 = 0.9f;
    o->optimizer.beta2 = 0.999f;
    o->optimizer.eps = 1e-8f;
    o->schedule.kind = TSR_SCHEDULE_CONSTANT;
    o->schedule.gamma = 0.1f;
    o->seed = 1;
    o->init = TSR_INIT_HE_UNIFORM;
    o->fault_grad_nan_step = -1;
}

void tsr_trainer_free(tsr_trainer *t) {
    if (!t) return;
    tsr_async_free(t->as);
    tsr_gossip_free(t->gs);
    if (t->hy) tsr_hybrid_free(t->hy);
    else tsr_pipeline_free(t->pl);
    tsr_dp_free(t->dp);
    if (t->tl) {
        /* a failed flush cannot be reported from here; the log says why */
        if (tsr_timeline_flush(t->tl, t->o.comm) != TSR_OK)
            tsr_log(t->ctx, TSR_LOG_WARN, "%s", tsr_context_last_error(t->ctx));
        tsr_timeline_free(t->tl);
    }
    tsr_optim_free(t->optim);
    tsr_stage_free(t->stage);
    tsr_backend_free(t->be);
    tsr_free(t->ctx, t->probs);
    tsr_free(t->ctx, t->grads);
    tsr_free(t->ctx, t->meta);
    tsr_free(t->ctx, t);
}

/* Mode pipeline: this rank's stage of the model (lib/pipeline.c) behind the trainer's API. */
static tsr_status create_pipeline(tsr_context *ctx, const tsr_model *model,
                                  const tsr_trainer_options *o, tsr_trainer **out) {
    size_t ranks = o->comm ? (size_t)tsr_comm_size(o->comm) : 1, layers = tsr_model_layer_count(model);
    size_t replicas = o->mode == TSR_MODE_HYBRID && o->replicas ? o->replicas : 1;
    size_t stages = ranks / replicas ? ranks / replicas : 1; /* hybrid checks R x S = ranks */
    int dev = o->device ? tsr_context_find_device(ctx, o->device) : 0;
    if (dev < 0)
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "device '%s' not found (%d devices)", o->device,
                         tsr_context_device_count(ctx));
    size_t *even = o->stage_bounds ? NULL : tsr_calloc(ctx, stages + 1, sizeof *even);
    tsr_trainer *t = tsr_calloc(ctx, 1, sizeof *t);
    if (!t || (!o->stage_bounds && !even)) {
        tsr_free(ctx, t);
        tsr_free(ctx, even);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "trainer");
    }
    for (size_t s = 0; even && s <= stages; s++) even[s] = s * layers / stages;
    tsr_pipeline_options po = {even ? even : o->stage_bounds, stages,
                               o->microbatches ? o->microbatches : 1, o->pipeline_schedule,
                               o->recompute};
    tsr_hybrid_options ho = {replicas, po};
    t->ctx = ctx;
    t->model = model;
    t->o = *o;
    t->o.device = NULL; /* the caller's strings and arrays need not outlive the call */
    t->o.stage_bounds = NULL;
    t->device = dev;
    tsr_status s = TSR_OK;
    if (o->mode == TSR_MODE_HYBRID) {
        /* the pipeline behind the calls below is this replica's */
        s = tsr_hybrid_create(ctx, model, o, &ho, &t->hy);
        t->pl = tsr_hybrid_pipeline(t->hy);
    } else {
        s = tsr_pipeline_create(ctx, model, o, &po, &t->pl);
    }
    tsr_free(ctx, even);
    if (s != TSR_OK) {
        tsr_free(ctx, t);
        return s;
    }
    *out = t;
    return TSR_OK;
}

/* Mode async: a parameter server or a worker (lib/async.c) behind the trainer's API. */
static tsr_status create_async(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                               tsr_trainer **out) {
    int dev = o->device ? tsr_context_find_device(ctx, o->device) : 0;
    if (dev < 0)
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "device '%s' not found (%d devices)", o->device,
                         tsr_context_device_count(ctx));
    tsr_trainer *t = tsr_calloc(ctx, 1, sizeof *t);
    if (!t) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "trainer");
    t->ctx = ctx;
    t->model = model;
    t->o = *o;
    t->o.device = NULL;
    t->o.stage_bounds = NULL;
    t->device = dev;
    tsr_async_options ao = {o->async_servers, o->async_staleness, o->async_staleness_lr};
    tsr_status s = tsr_async_create(ctx, model, o, &ao, &t->as);
    if (s != TSR_OK) {
        tsr_free(ctx, t);
        return s;
    }
    *out = t;
    return TSR_OK;
}

/* Mode gossip: this rank's replica (lib/gossip.c) behind the trainer's API. */
static tsr_status create_gossip(tsr_context *ctx, const tsr_model *model,
                                const tsr_trainer_options *o, tsr_trainer **out) {
    int dev = o->device ? tsr_context_find_device(ctx, o->device) : 0;
    if (dev < 0)
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "device '%s' not found (%d devices)", o->device,
                         tsr_context_device_count(ctx));
    tsr_trainer *t = tsr_calloc(ctx, 1, sizeof *t);
    if (!t) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "trainer");
    tsr_gossip_options go = {o->gossip_graph, o->gossip_period, o->gossip_eval_local};
    t->ctx = ctx;
    t->model = model;
    t->o = *o;
    t->o.device = NULL; /* the caller's strings and arrays need not outlive the call */
    t->o.stage_bounds = NULL;
    t->device = dev;
    tsr_status s = tsr_gossip_create(ctx, model, o, &go, &t->gs);
    if (s != TSR_OK) {
        tsr_free(ctx, t);
        return s;
    }
    *out = t;
    return TSR_OK;
}

tsr_status tsr_trainer_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                              tsr_trainer **out) {
    if (!ctx || !model || !o || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_trainer_create: NULL argument");
    *out = NULL;
    TSR_TRY(tsr_model_check(model));
    if (!o->batch || o->batch > ((size_t)1 << 20))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "batch size %zu is not valid", o->batch);
    if ((unsigned)o->init > TSR_INIT_GLOROT_UNIFORM)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown initialisation %d", (int)o->init);
    if ((unsigned)o->schedule.kind > TSR_SCHEDULE_COSINE)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown schedule %d", (int)o->schedule.kind);
    if ((unsigned)o->mode > TSR_MODE_GOSSIP)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown training mode %d", (int)o->mode);
    if (o->mode == TSR_MODE_PIPELINE || o->mode == TSR_MODE_HYBRID)
        return create_pipeline(ctx, model, o, out);
    if (o->mode == TSR_MODE_ASYNC) return create_async(ctx, model, o, out);
    if (o->mode == TSR_MODE_GOSSIP) return create_gossip(ctx, model, o, out);
    if (o->mode != TSR_MODE_DATA)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED, "training mode %d: only data parallelism exists",
                         (int)o->mode);
    if ((unsigned)o->compress > TSR_COMPRESS_TOPK)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown gradient compression %d", (int)o->compress);
    if (o->compress == TSR_COMPRESS_TOPK && !(o->topk_ratio >= 0.0 && o->topk_ratio <= 1.0))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "top-k ratio %g is not in (0, 1]", o->topk_ratio);
    if (o->compress != TSR_COMPRESS_NONE && !o->comm)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "gradient compression needs a communicator");
    if ((unsigned)o->nonfinite > TSR_NONFINITE_SKIP)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown non-finite policy %d", (int)o->nonfinite);
    tsr_nonfinite_policy nonfinite = o->nonfinite;
    int check_grads = !o->no_grad_check;
    const char *nf = getenv("TSR_NONFINITE");
    if (nf && *nf) {
        if (strcmp(nf, "skip") && strcmp(nf, "stop"))
            return tsr_error(ctx, TSR_ERR_PARSE, "TSR_NONFINITE: '%s' is not skip or stop", nf);
        nonfinite = strcmp(nf, "skip") ? TSR_NONFINITE_STOP : TSR_NONFINITE_SKIP;
        check_grads = 1;
    }
    int dev = 0;
    if (o->device) {
        dev = tsr_context_find_device(ctx, o->device);
        if (dev < 0)
            return tsr_error(ctx, TSR_ERR_NOT_FOUND, "device '%s' not found (%d devices)", o->device,
                             tsr_context_device_count(ctx));
    }
    tsr_trainer *t = tsr_calloc(ctx, 1, sizeof *t);
    if (!t) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "trainer");
    t->ctx = ctx;
    t->model = model;
    t->o = *o;
    t->o.device = NULL; /* the caller's string need not outlive the call */
    t->o.nonfinite = nonfinite;
    t->o.no_grad_check = !check_grads;
    t->device = dev;
    t->seed = o->seed;
    tsr_rng_seed(&t->rng, o->seed ^ 0x5DEECE66Dull);
    tsr_stage_options so = {0, tsr_model_layer_count(model), o->batch, 0};
    tsr_status s;
    size_t classes = tsr_model_get_input(model).classes;
    if ((s = tsr_backend_open(ctx, dev, &t->be)) != TSR_OK ||
        (s = tsr_stage_create(t->be, model, &so, &t->stage)) != TSR_OK ||
        (s = tsr_optim_create(t->be, &o->optimizer, tsr_stage_param_count(t->stage), &t->optim)) !=
            TSR_OK ||
        (s = tsr_stage_init_params(t->stage, o->init == TSR_INIT_GLOROT_UNIFORM, o->seed)) != TSR_OK) {
        tsr_trainer_free(t);
        return s;
    }
    t->probs = tsr_calloc(ctx, o->batch * classes, sizeof *t->probs);
    t->grads = tsr_calloc(ctx, tsr_stage_param_count(t->stage), sizeof *t->grads);
    if (!t->probs || !t->grads) {
        tsr_trainer_free(t);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "evaluation buffer");
    }
    const char *tl_path = getenv("TSR_TIMELINE");
    if (tl_path && *tl_path &&
        (s = tsr_timeline_create(ctx, tl_path, o->comm ? tsr_comm_rank(o->comm) : 0, &t->tl)) != TSR_OK) {
        tsr_trainer_free(t);
        return s;
    }
    if (o->comm) {
        if ((s = tsr_dp_create(ctx, model, t->stage, o, t->tl, &t->dp)) != TSR_OK) {
            t->o.comm = NULL; /* nothing collective at free: the other ranks may have failed too */
            tsr_trainer_free(t);
            return s;
        }
        tsr_stage_set_hook(t->stage, tsr_dp_hook, t->dp);
        if (tsr_dp_sharded(t->dp)) {
            /* ZeRO-1: optimizer state for this rank's slice only */
            size_t lo, hi;
            tsr_dp_owned(t->dp, &lo, &hi);
            tsr_optim_free(t->optim);
            t->optim = NULL;
            if ((s = tsr_optim_create(t->be, &o->optimizer, hi - lo, &t->optim)) != TSR_OK) {
                tsr_trainer_free(t);
                return s;
            }
            t->optim->off = lo;
        }
    }
    *out = t;
    return TSR_OK;
}

/* Uploads n samples and their labels, checking every label. */
static tsr_status upload(tsr_trainer *t, const float *images, const int32_t *labels, size_t n) {
    tsr_model_input in = tsr_model_get_input(t->model);
    if (!images || !labels) return tsr_error(t->ctx, TSR_ERR_INVALID_ARG, "NULL images or labels");
    if ((!n && !t->dp) || n > t->o.batch)
        return tsr_error(t->ctx, TSR_ERR_SHAPE, "batch of %zu samples: the trainer takes 1 to %zu", n,
                         t->o.batch);
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || (size_t)labels[i] >= in.classes)
            return tsr_error(t->ctx, TSR_ERR_INVALID_ARG, "label %d of sample %zu is not in [0, %zu)",
                             (int)labels[i], i, in.classes);
    size_t features = in.channels * in.height * in.width;
    tsr_ref x = tsr_stage_input(t->stage), y = tsr_stage_labels(t->stage);
    TSR_TRY(tsr_buf_write(x.buf, x.off * 4, images, n * features * sizeof(float)));
    return tsr_buf_write(y.buf, y.off * 4, labels, n * sizeof(int32_t));
}

/* Index of the first NaN/Inf of g[0..n), n if none. Whole blocks are screened branch-free on
 * the exponent bits: (exponent & all-ones) + 1 carries into bit 31 only for NaN/Inf. The fixed
 * trip count lets gcc vectorise at -O2 (4.5x the scalar loop), so a clean gradient costs one
 * streaming read. */
#define SCREEN_BLOCK 4096
static uint32_t screen_block(const float *g) {
    uint32_t bad = 0;
    for (size_t i = 0; i < SCREEN_BLOCK; i++) {
        uint32_t u;
        memcpy(&u, g + i, sizeof u);
        bad |= (u & 0x7f800000u) + 0x00800000u;
    }
    return bad;
}

static size_t first_nonfinite(const float *g, size_t n) {
    float tail[SCREEN_BLOCK];
    for (size_t b = 0; b < n; b += SCREEN_BLOCK) {
        size_t len = n - b < SCREEN_BLOCK ? n - b : SCREEN_BLOCK;
        const float *blk = g + b;
        if (len < SCREEN_BLOCK) { /* the last, short block: zero-padded copy */
            memset(tail, 0, sizeof tail);
            memcpy(tail, g + b, len * sizeof *g);
            blk = tail;
        }
        if (screen_block(blk) & 0x80000000u)
            for (size_t i = b; i < b + len; i++)
                if (!isfinite(g[i])) return i;
    }
    return n;
}

tsr_status tsr_trainer_step(tsr_trainer *t, const float *images, const int32_t *labels, size_t n,
                            float *loss) {
    if (!t) return TSR_ERR_INVALID_ARG;
    if (t->pl) { /* the pipeline's loss is the whole batch's already */
        tsr_status s = tsr_pipeline_step(t->pl, images, labels, n, &t->global_loss);
        if (loss) *loss = t->global_loss;
        return s;
    }
    if (t->gs) { /* this rank's own batch and loss */
        tsr_status s = tsr_gossip_step(t->gs, images, labels, n, &t->global_loss);
        if (loss) *loss = t->global_loss;
        return s;
    }
    if (t->as) { /* a server's loss: the mean of the gradients it applied in this step */
        tsr_status s = tsr_async_step(t->as, images, labels, n, &t->global_loss);
        if (loss) *loss = t->global_loss;
        return s;
    }
    /* data parallel: a rank may get no sample of the last global batch; it still takes part */
    if (n || !t->dp) TSR_TRY(upload(t, images, labels, n));
    uint64_t dropout_seed = tsr_rng_next(&t->rng);
    if (t->dp) dropout_seed ^= 0x9E3779B97F4A7C15ull * (uint64_t)tsr_comm_rank(t->o.comm);
    float l = 0.0f;
    double t0 = tsr_timeline_now(t->tl);
    if (n) TSR_TRY(tsr_stage_forward(t->stage, n, 1, dropout_seed, &l));
    double t1 = tsr_timeline_now(t->tl);
    TSR_TRY(tsr_timeline_event(t->tl, "forward", TSR_TRACK_COMPUTE, t0, t1));
    /* Data parallel: a rank must not leave the step alone; its NaN reaches every rank through
     * the averaged gradients, which are then checked on all ranks alike. */
    int check = !t->o.no_grad_check || (!isfinite(l) && t->dp);
    if (!isfinite(l) && !check) {
        if (t->o.nonfinite == TSR_NONFINITE_SKIP) {
            if (loss) *loss = l;
            t->skipped++;
            tsr_log(t->ctx, TSR_LOG_WARN, "step %llu skipped: loss is %g",
                    (unsigned long long)t->steps, (double)l);
            return TSR_OK;
        }
        return tsr_error(t->ctx, TSR_ERR_NUMERIC, "loss is %g at step %llu (learning rate too high?)",
                         (double)l, (unsigned long long)t->steps);
    }
    t->global_loss = l;
    if (t->dp) {
        TSR_TRY(tsr_dp_begin(t->dp, n, l, &t->global_loss));
        TSR_TRY(tsr_timeline_event(t->tl, "sync", TSR_TRACK_COMPUTE, t1, tsr_timeline_now(t->tl)));
    }
    t1 = tsr_timeline_now(t->tl);
    if (n) TSR_TRY(tsr_stage_backward(t->stage, n, 0));
    else TSR_TRY(tsr_op_fill(t->be, tsr_ref_at(tsr_stage_grads(t->stage), 0),
                             tsr_stage_param_count(t->stage), 0.0f));
    double t2 = tsr_timeline_now(t->tl);
    TSR_TRY(tsr_timeline_event(t->tl, "backward", TSR_TRACK_COMPUTE, t1, t2));
    if (t->dp) TSR_TRY(tsr_dp_finish(t->dp));
    double tc = tsr_timeline_now(t->tl);
    if (check) {
        size_t np = tsr_stage_param_count(t->stage), lo = 0, hi = np;
        if (t->dp) tsr_dp_owned(t->dp, &lo, &hi); /* ZeRO-1: only this slice is reduced */
        /* host backend: scan the gradients where they are (no copy: memory bandwidth is what
         * two ranks on one socket share) */
        tsr_buf *gb = tsr_stage_grads(t->stage);
        float *g = gb->host ? (float *)gb->host : t->grads;
        if (!gb->host) TSR_TRY(tsr_buf_read(gb, lo * 4, t->grads + lo, (hi - lo) * sizeof(float)));
        /* tests/fault: TSR_FAULT_GRAD_NAN=<step> poisons one gradient at that step */
        const char *fault = getenv("TSR_FAULT_GRAD_NAN");
        if (fault && *fault && strtoull(fault, NULL, 10) == t->steps && np) g[np / 2] = NAN;
        size_t i = lo + first_nonfinite(g + lo, hi - lo);
        if (i == hi) i = np;
        if (tsr_dp_sharded(t->dp)) TSR_TRY(tsr_dp_first_bad(t->dp, i, &i)); /* every rank alike */
        if (i < np) {
            char value[32] = "not finite"; /* the value itself where this rank holds it */
            if (i >= lo && i < hi) snprintf(value, sizeof value, "%g", (double)g[i]);
            if (loss) *loss = l;
            if (t->o.nonfinite == TSR_NONFINITE_SKIP) {
                t->skipped++;
                tsr_log(t->ctx, TSR_LOG_WARN, "step %llu skipped: gradient %zu of %zu is %s",
                        (unsigned long long)t->steps, i, np, value);
                return TSR_OK;
            }
            return tsr_error(t->ctx, TSR_ERR_NUMERIC, "gradient %zu of %zu is %s at step %llu%s", i,
                             np, value, (unsigned long long)t->steps,
                             isfinite(l) ? "" : " (non-finite loss)");
        }
    }
    float lr = tsr_schedule_lr(&t->o.schedule, t->o.optimizer.lr, t->steps);
    double t3 = tsr_timeline_now(t->tl);
    TSR_TRY(tsr_timeline_event(t->tl, "check", TSR_TRACK_COMPUTE, tc, t3));
    TSR_TRY(tsr_optim_update(t->optim, tsr_stage_params(t->stage), tsr_stage_grads(t->stage), lr,
                             t->steps));
    if (tsr_dp_sharded(t->dp)) TSR_TRY(tsr_dp_gather_params(t->dp));
    TSR_TRY(tsr_timeline_event(t->tl, "update", TSR_TRACK_COMPUTE, t3, tsr_timeline_now(t->tl)));
    TSR_TRY(tsr_timeline_event(t->tl, "step", TSR_TRACK_COMPUTE, t0, tsr_timeline_now(t->tl)));
    t->steps++;
    if (loss) *loss = l;
    return TSR_OK;
}

float tsr_trainer_global_loss(const tsr_trainer *t) { return t ? t->global_loss : 0.0f; }
size_t tsr_trainer_buckets(const tsr_trainer *t) { return t ? tsr_dp_buckets(t->dp) : 0; }

static double mono_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

tsr_status tsr_trainer_measure(tsr_trainer *t, const float *images, const int32_t *labels, size_t n,
                               double *samples_per_s) {
    if (!t || !samples_per_s) return TSR_ERR_INVALID_ARG;
    if (t->pl || t->as || t->gs)
        return tsr_error(t->ctx, TSR_ERR_UNSUPPORTED, "tsr_trainer_measure: data mode only");
    if (!n) return tsr_error(t->ctx, TSR_ERR_SHAPE, "tsr_trainer_measure: 0 samples");
    TSR_TRY(upload(t, images, labels, n));
    tsr_stage_set_hook(t->stage, NULL, NULL); /* no allreduce while measuring */
    tsr_status s = TSR_OK;
    /* the fastest of several passes (after a warm-up): robust to other processes' bursts */
    double best = 0.0, spent = 0.0;
    for (int i = 0; s == TSR_OK && i < 40 && (i < 6 || spent < 0.15); i++) {
        double t0 = mono_seconds();
        s = tsr_stage_forward(t->stage, n, 1, 1, NULL);
        if (s == TSR_OK) s = tsr_stage_backward(t->stage, n, 0);
        float probe; /* a blocking read waits for the device's queue (OpenCL runs async) */
        if (s == TSR_OK) s = tsr_buf_read(tsr_stage_grads(t->stage), 0, &probe, sizeof probe);
        double dt = mono_seconds() - t0;
        spent += dt;
        if (i >= 1 && (best == 0.0 || dt < best)) best = dt;
    }
    if (t->dp) tsr_stage_set_hook(t->stage, tsr_dp_hook, t->dp);
    TSR_TRY(s);
    *samples_per_s = best > 0 ? (double)n / best : 0.0;
    return TSR_OK;
}

tsr_status tsr_dp_shares(tsr_comm *comm, size_t global_batch, double rate, size_t *shares) {
    if (!comm || !shares) return TSR_ERR_INVALID_ARG;
    int size = tsr_comm_size(comm), me = tsr_comm_rank(comm);
    tsr_context *ctx = comm->ctx;
    if (!(rate > 0.0) || !isfinite(rate) || global_batch < (size_t)size)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "tsr_dp_shares: rate %g must be > 0 and the global batch %zu >= %d ranks",
                         rate, global_batch, size);
    float *rates = tsr_calloc(ctx, (size_t)size, sizeof *rates);
    double *frac = tsr_calloc(ctx, (size_t)size, sizeof *frac);
    if (!rates || !frac) {
        tsr_free(ctx, rates);
        tsr_free(ctx, frac);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_dp_shares: %d ranks", size);
    }
    rates[me] = (float)rate;
    tsr_status s = tsr_comm_allreduce(comm, rates, (size_t)size, NULL); /* every rank's rate */
    if (s == TSR_OK) {
        double sum = 0.0;
        for (int r = 0; r < size; r++) sum += rates[r];
        /* one sample each, the rest in proportion to the rates (largest remainder) */
        size_t rest = global_batch - (size_t)size, given = 0;
        for (int r = 0; r < size; r++) {
            double want = (double)rest * rates[r] / sum;
            shares[r] = 1 + (size_t)want;
            frac[r] = want - (double)(size_t)want;
            given += (size_t)want;
        }
        for (; given < rest; given++) {
            int best = 0;
            for (int r = 1; r < size; r++)
                if (frac[r] > frac[best]) best = r;
            shares[best]++;
            frac[best] = -1.0;
        }
    }
    tsr_free(ctx, rates);
    tsr_free(ctx, frac);
    return s;
}

/* FNV-1a over what makes two devices interchangeable for throughput. */
static uint64_t device_class(const tsr_device_info *d) {
    char key[512];
    int threads = d->backend == TSR_BACKEND_HOST ? tsr_host_thread_count(d->compute_units) : 0;
    snprintf(key, sizeof key, "%d|%s|%s|%s|%u|%d", (int)d->backend, d->vendor, d->name,
             d->driver_version, d->compute_units, threads);
    uint64_t h = 1469598103934665603ull;
    for (const char *c = key; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h;
}

tsr_status tsr_trainer_balance(tsr_trainer *t, size_t global_batch, const float *images,
                               const int32_t *labels, size_t probe, size_t *shares) {
    if (!t || !shares) return TSR_ERR_INVALID_ARG;
    if (t->pl || t->as || t->gs) return tsr_error(t->ctx, TSR_ERR_UNSUPPORTED, "balance: data mode only");
    tsr_comm *comm = t->o.comm;
    int size = comm ? tsr_comm_size(comm) : 1;
    if (size == 1) {
        if (!global_batch) return tsr_error(t->ctx, TSR_ERR_INVALID_ARG, "balance: global batch 0");
        shares[0] = global_batch;
        return TSR_OK;
    }
    double rate = 0.0;
    TSR_TRY(tsr_trainer_measure(t, images, labels, probe, &rate));
    /* every rank's (device class, rate) */
    struct { uint64_t cls; double rate; } mine = {device_class(&t->be->device), rate}, *all;
    all = tsr_calloc(t->ctx, (size_t)size, sizeof *all);
    size_t *bytes = tsr_calloc(t->ctx, (size_t)size, sizeof *bytes);
    tsr_status s = all && bytes ? TSR_OK : tsr_error(t->ctx, TSR_ERR_NO_MEMORY, "balance: %d ranks", size);
    for (int r = 0; s == TSR_OK && r < size; r++) bytes[r] = sizeof mine;
    if (s == TSR_OK) s = tsr_comm_allgatherv(comm, &mine, all, bytes);
    if (s == TSR_OK) {
        /* identical devices take the mean of their rates: timing noise (another process's
         * burst during the probe) must not split a homogeneous cluster unevenly */
        double sum = 0.0;
        int same = 0;
        for (int r = 0; r < size; r++)
            if (all[r].cls == mine.cls) {
                sum += all[r].rate;
                same++;
            }
        s = tsr_dp_shares(comm, global_batch, sum / same, shares);
    }
    tsr_free(t->ctx, all);
    tsr_free(t->ctx, bytes);
    return s;
}

tsr_status tsr_trainer_evaluate(tsr_trainer *t, const tsr_dataset *d, double *accuracy, double *loss) {
    if (!t || !d) return TSR_ERR_INVALID_ARG;
    if (t->pl) return tsr_pipeline_evaluate(t->pl, d, accuracy, loss);
    if (t->as) return tsr_async_evaluate(t->as, d, accuracy, loss); /* collective */
    if (t->gs) return tsr_gossip_evaluate(t->gs, d, accuracy, loss); /* the average: collective */
    size_t correct = 0;
    double total = 0.0;
    if (!t->dp) {
        TSR_TRY(tsr_stage_evaluate(t->stage, d, 0, d->count, t->probs, &correct, &total));
    } else {
        /* data mode: each rank evaluates its 1/N of the set; the figures are gathered and
         * summed in rank order, so every rank gets the same ones */
        tsr_comm *comm = t->o.comm;
        int size = tsr_comm_size(comm), r = tsr_comm_rank(comm);
        size_t lo = d->count * (size_t)r / (size_t)size, hi = d->count * (size_t)(r + 1) / (size_t)size;
        double mine[3] = {0.0, 0.0, 0.0}; /* correct, loss sum, failed */
        size_t c = 0;
        tsr_status es = hi > lo ? tsr_stage_evaluate(t->stage, d, lo, hi - lo, t->probs, &c, &mine[1])
                                : TSR_OK;
        mine[0] = (double)c;
        mine[2] = es != TSR_OK;
        double *all = tsr_calloc(t->ctx, (size_t)size * 3, sizeof *all);
        size_t *bytes = tsr_calloc(t->ctx, (size_t)size, sizeof *bytes);
        tsr_status s = all && bytes ? TSR_OK : tsr_error(t->ctx, TSR_ERR_NO_MEMORY, "evaluation: %d ranks", size);
        for (int k = 0; s == TSR_OK && k < size; k++) bytes[k] = sizeof mine;
        if (s == TSR_OK) s = tsr_comm_allgatherv(comm, mine, all, bytes); /* even after a local error */
        int failed = 0;
        for (int k = 0; s == TSR_OK && k < size; k++) {
            correct += (size_t)all[3 * k];
            total += all[3 * k + 1];
            failed |= all[3 * k + 2] != 0.0;
        }
        tsr_free(t->ctx, all);
        tsr_free(t->ctx, bytes);
        TSR_TRY(es);
        TSR_TRY(s);
        if (failed) return tsr_error(t->ctx, TSR_ERR_STATE, "evaluation failed on another rank");
    }
    if (accuracy) *accuracy = (double)correct / (double)d->count;
    if (loss) *loss = total / (double)d->count;
    return TSR_OK;
}

uint64_t tsr_trainer_steps(const tsr_trainer *t) {
    return !t ? 0 : t->pl ? tsr_pipeline_steps(t->pl) : t->as ? tsr_async_steps(t->as)
                                 : t->gs ? tsr_gossip_steps(t->gs) : t->steps;
}
uint64_t tsr_trainer_skipped(const tsr_trainer *t) {
    return !t ? 0 : t->pl ? tsr_pipeline_skipped(t->pl) : t->as ? tsr_async_skipped(t->as)
                                 : t->gs ? tsr_gossip_skipped(t->gs) : t->skipped;
}
uint64_t tsr_trainer_epoch(const tsr_trainer *t) {
    return !t ? 0 : t->pl ? tsr_pipeline_epoch(t->pl) : t->as ? tsr_async_epoch(t->as)
                                 : t->gs ? tsr_gossip_epoch(t->gs) : t->epoch;
}
void tsr_trainer_set_epoch(tsr_trainer *t, uint64_t epoch) {
    if (t) t->epoch = epoch;
    if (t) tsr_pipeline_set_epoch(t->pl, epoch);
    if (t) tsr_async_set_epoch(t->as, epoch);
    if (t) tsr_gossip_set_epoch(t->gs, epoch);
}
uint64_t tsr_trainer_seed(const tsr_trainer *t) {
    return !t ? 0 : t->pl ? tsr_pipeline_seed(t->pl) : t->as ? tsr_async_seed(t->as)
                                 : t->gs ? tsr_gossip_seed(t->gs) : t->seed;
}
float tsr_trainer_lr(const tsr_trainer *t) {
    return t ? tsr_schedule_lr(&t->o.schedule, t->o.optimizer.lr, tsr_trainer_steps(t)) : 0.0f;
}
const tsr_device_info *tsr_trainer_device(const tsr_trainer *t) {
    return t ? tsr_context_device(t->ctx, t->device) : NULL;
}

tsr_status tsr_trainer_get_params(tsr_trainer *t, float *dst, size_t count) {
    if (!t || (!dst && count)) return TSR_ERR_INVALID_ARG;
    if (t->pl) return tsr_pipeline_get_params(t->pl, dst, count); /* collective */
    if (t->as) return tsr_async_get_params(t->as, dst, count);    /* collective */
    if (t->gs) return tsr_gossip_get_params(t->gs, dst, count);   /* this rank's replica */
    size_t n = tsr_stage_param_count(t->stage);
    if (count != n)
        return tsr_error(t->ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu asked for", n, count);
    return tsr_buf_read(tsr_stage_params(t->stage), 0, dst, n * sizeof(float));
}

tsr_status tsr_trainer_set_params(tsr_trainer *t, const float *src, size_t count) {
    if (!t || (!src && count)) return TSR_ERR_INVALID_ARG;
    if (t->pl) return tsr_pipeline_set_params(t->pl, src, count);
    if (t->as) return tsr_async_set_params(t->as, src, count);
    if (t->gs) return tsr_gossip_set_params(t->gs, src, count);
    size_t n = tsr_stage_param_count(t->stage);
    if (count != n)
        return tsr_error(t->ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu given", n, count);
    return tsr_buf_write(tsr_stage_params(t->stage), 0, src, n * sizeof(float));
}

/* ---- checkpoints ---- */

/* Parameters first, then the optimizer's state tensors. */
static size_t tensor_list(tsr_trainer *t, const char *names[3], tsr_buf *bufs[3]) {
    names[0] = "params";
    bufs[0] = tsr_stage_params(t->stage);
    return 1 + tsr_optim_state(t->optim, names + 1, bufs + 1);
}

tsr_status tsr_trainer_save(tsr_trainer *t, const char *path) {
    if (!t || !path) return TSR_ERR_INVALID_ARG;
    if (t->pl) return tsr_pipeline_save(t->pl, path); /* collective: rank 0 writes */
    if (t->as) return tsr_async_save(t->as, path);    /* collective: rank 0 writes */
    if (t->gs) return tsr_gossip_save(t->gs, path);   /* collective: the average, rank 0 writes */
    const char *names[3];
    tsr_buf *bufs[3];
    size_t nt = tensor_list(t, names, bufs), n = tsr_stage_param_count(t->stage);
    tsr_checkpoint ck;
    tsr_checkpoint_tensor tensors[3];
    memset(&ck, 0, sizeof ck);
    memset(tensors, 0, sizeof tensors);
    const char *spec = tsr_model_spec(t->model);
    if (strlen(spec) >= sizeof ck.model_spec)
        return tsr_error(t->ctx, TSR_ERR_UNSUPPORTED, "model spec of %zu bytes is too long for a checkpoint",
                         strlen(spec));
    tsr_strlcpy(ck.model_spec, spec, sizeof ck.model_spec);
    tsr_strlcpy(ck.optimizer, tsr_optimizer_kind_name(t->o.optimizer.kind), sizeof ck.optimizer);
    ck.step = t->steps;
    ck.epoch = t->epoch;
    ck.seed = t->seed;
    memcpy(ck.rng_state, t->rng.s, sizeof ck.rng_state);
    ck.tensor_count = nt;
    ck.tensors = tensors;
    ck.meta = t->meta;
    float *data = tsr_calloc(t->ctx, nt * (n ? n : 1), sizeof(float));
    if (!data) return tsr_error(t->ctx, TSR_ERR_NO_MEMORY, "checkpoint staging");
    tsr_status s = TSR_OK;
    size_t lo = 0, hi = n; /* optimizer state: this rank's slice (ZeRO-1) or all */
    if (t->dp) tsr_dp_owned(t->dp, &lo, &hi);
    for (size_t i = 0; i < nt && s == TSR_OK; i++) {
        tsr_strlcpy(tensors[i].name, names[i], sizeof tensors[i].name);
        tensors[i].count = n;
        tensors[i].data = data + i * n;
        if (i == 0) {
            s = tsr_buf_read(bufs[i], 0, tensors[i].data, n * sizeof(float));
        } else {
            s = tsr_buf_read(bufs[i], 0, tensors[i].data + lo, (hi - lo) * sizeof(float));
            if (s == TSR_OK && tsr_dp_sharded(t->dp)) s = tsr_dp_gather_slices(t->dp, tensors[i].data);
        }
    }
    int writer = !t->o.comm || tsr_comm_rank(t->o.comm) == 0; /* rank 0 writes for all */
    if (s == TSR_OK && writer) s = tsr_checkpoint_save(t->ctx, path, &ck);
    tsr_free(t->ctx, data);
    return s;
}

tsr_status tsr_trainer_load(tsr_trainer *t, const char *path) {
    if (!t || !path) return TSR_ERR_INVALID_ARG;
    if (t->pl) return tsr_pipeline_load(t->pl, path); /* collective */
    if (t->as) return tsr_async_load(t->as, path);    /* every rank reads its part */
    if (t->gs) return tsr_gossip_load(t->gs, path);   /* collective: every replica */
    tsr_checkpoint *ck = NULL;
    TSR_TRY(tsr_checkpoint_load(t->ctx, path, &ck));
    const char *names[3];
    tsr_buf *bufs[3];
    size_t nt = tensor_list(t, names, bufs), n = tsr_stage_param_count(t->stage);
    /* check every tensor before touching the device, so a refused load changes nothing */
    tsr_status s = tsr_checkpoint_check_fit(t->ctx, path, ck, tsr_model_spec(t->model),
                                            tsr_optimizer_kind_name(t->o.optimizer.kind),
                                            "the trainer", names, nt, n);
    size_t lo = 0, hi = n; /* optimizer state: this rank's slice (ZeRO-1) or all */
    if (t->dp) tsr_dp_owned(t->dp, &lo, &hi);
    for (size_t i = 0; i < nt && s == TSR_OK; i++) {
        const float *src = tsr_checkpoint_find(ck, names[i])->data;
        s = i == 0 ? tsr_buf_write(bufs[i], 0, src, n * sizeof(float))
                   : tsr_buf_write(bufs[i], 0, src + lo, (hi - lo) * sizeof(float));
    }
    if (s == TSR_OK) {
        t->steps = ck->step;
        t->epoch = ck->epoch;
        t->seed = ck->seed;
        memcpy(t->rng.s, ck->rng_state, sizeof t->rng.s);
        tsr_free(t->ctx, t->meta);
        t->meta = ck->meta; /* the checkpoint's metadata now belongs to the run */
        ck->meta = NULL;
    }
    tsr_checkpoint_free(t->ctx, ck);
    return s;
}

/* ---- run metadata ---- */

tsr_status tsr_trainer_set_metadata(tsr_trainer *t, const char *json) {
    if (!t) return TSR_ERR_INVALID_ARG;
    tsr_checkpoint holder; /* the checkpoint module validates and copies it */
    memset(&holder, 0, sizeof holder);
    TSR_TRY(tsr_checkpoint_set_meta(t->ctx, &holder, json));
    tsr_free(t->ctx, t->meta);
    t->meta = holder.meta;
    return TSR_OK;
}

const char *tsr_trainer_metadata(const tsr_trainer *t) { return t ? t->meta : NULL; }
