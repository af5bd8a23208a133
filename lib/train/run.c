/* The run core: state and step pieces every training mode shares (see run.h). */
#include "lib/train/run.h"
#include "lib/model/fit.h"
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "lib/io/checkpoint_internal.h"
#include "lib/comm/comm_internal.h"
#include "lib/core/precision.h"
#include "lib/train/optim.h"

/* The RNG stream of the step seeds: every mode draws the same seeds as the trainer. */
#define RUN_RNG_MIX 0x5DEECE66Dull
/* Mixes a rank or replica into a dropout seed (0 keeps it). */
#define RUN_STREAM_MIX 0x9E3779B97F4A7C15ull

tsr_status tsr_run_check_options(tsr_context *ctx, const tsr_trainer_options *o, const char *who) {
    if (!o->batch || o->batch > ((size_t)1 << 20))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%sbatch size %zu is not valid", who, o->batch);
    if (o->tp_comm && (o->mode == TSR_MODE_ASYNC || o->mode == TSR_MODE_GOSSIP))
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "%stensor parallelism composes with the data (with or without ZeRO), pipeline and "
                         "hybrid modes, not %s", who, o->mode == TSR_MODE_ASYNC ? "async" : "gossip");
    if ((unsigned)o->init > TSR_INIT_GLOROT_UNIFORM)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%sunknown initialisation %d", who, (int)o->init);
    if ((unsigned)o->schedule.kind > TSR_SCHEDULE_COSINE)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%sunknown learning-rate schedule %d", who,
                         (int)o->schedule.kind);
    if ((unsigned)o->nonfinite > TSR_NONFINITE_SKIP)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%sunknown non-finite policy %d", who,
                         (int)o->nonfinite);
    TSR_TRY(tsr_precision_check(ctx, who, o->precision));
    if (o->precision == TSR_PRECISION_FP16 && (o->mode == TSR_MODE_GOSSIP || o->mode == TSR_MODE_ASYNC))
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "%sfp16 (loss scaling) is not available in %s mode (bf16 is)", who,
                         o->mode == TSR_MODE_GOSSIP ? "gossip" : "async");
    if (!(o->clip_grad_norm >= 0.0) || !isfinite(o->clip_grad_norm))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%sgradient clipping norm %g must be >= 0 (0: off)", who,
                         o->clip_grad_norm);
    if (o->fault_grad_nan_step < -1)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%sfault_grad_nan_step %lld is not -1 or a step",
                         who, (long long)o->fault_grad_nan_step);
    return TSR_OK;
}

tsr_status tsr_run_init(tsr_run *r, tsr_context *ctx, const tsr_model *model,
                        const tsr_trainer_options *o, tsr_comm *world, int rank) {
    memset(r, 0, sizeof *r);
    int dev = 0;
    if (o->device) {
        dev = tsr_context_find_device(ctx, o->device);
        if (dev < 0)
            return tsr_error(ctx, TSR_ERR_NOT_FOUND, "device '%s' not found (%d devices)", o->device,
                             tsr_context_device_count(ctx));
    }
    r->ctx = ctx;
    r->model = model;
    r->o = *o;
    r->o.device = NULL; /* the caller's strings and arrays need not outlive the call */
    r->o.stage_bounds = NULL;
    r->o.timeline = NULL;
    r->world = world && tsr_comm_size(world) > 1 ? world : NULL;
    r->rank = rank;
    r->device = dev;
    /* fp16: the loss scale needs every step's overflow check */
    r->check_grads = !o->no_grad_check || o->precision == TSR_PRECISION_FP16;
    tsr_scaler_init(&r->scaler, o->precision == TSR_PRECISION_FP16, TSR_SCALER_INIT,
                    TSR_SCALER_INTERVAL);
    r->seed = o->seed;
    tsr_rng_seed(&r->rng, o->seed ^ RUN_RNG_MIX);
    if (!o->timeline || !*o->timeline) return TSR_OK;
    /* tensor-parallel peers each run the schedule on their own world: index k > 0 writes
     * trace.tp<k>.json beside trace.json */
    int k = o->tp_comm && tsr_comm_size(o->tp_comm) > 1 ? tsr_comm_rank(o->tp_comm) : 0;
    if (!k) return tsr_timeline_create(ctx, o->timeline, rank, &r->tl);
    char path[4096];
    const char *slash = strrchr(o->timeline, '/'), *dot = strrchr(o->timeline, '.');
    size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - o->timeline) : strlen(o->timeline);
    if (snprintf(path, sizeof path, "%.*s.tp%d%s", (int)stem, o->timeline, k, o->timeline + stem) >= (int)sizeof path)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "timeline path of %zu characters is too long",
                         strlen(o->timeline));
    return tsr_timeline_create(ctx, path, rank, &r->tl);
}

void tsr_run_release(tsr_run *r, int flush) {
    if (!r || !r->ctx) return;
    if (r->tl && flush && (!r->world || !r->world->broken)) {
        /* a failed flush cannot be reported from here; the log says why */
        if (tsr_timeline_flush(r->tl, r->world) != TSR_OK)
            tsr_log(r->ctx, TSR_LOG_WARN, "%s", tsr_context_last_error(r->ctx));
    }
    tsr_timeline_free(r->tl);
    r->tl = NULL;
    tsr_free(r->ctx, r->meta);
    r->meta = NULL;
}

tsr_status tsr_run_agree(tsr_run *r, tsr_comm *comm, tsr_status mine, const char *what) {
    /* tensor parallelism: comm holds the ranks of one tensor-parallel index, the group those of
     * the others; a flag over one, then over the other, reaches every rank */
    tsr_comm *over[2] = {comm, comm && comm != r->o.tp_comm ? r->o.tp_comm : NULL};
    float flag = mine != TSR_OK;
    for (int i = 0; i < 2; i++) {
        if (!over[i] || tsr_comm_size(over[i]) < 2 || over[i]->broken) continue;
        tsr_status s = tsr_comm_allreduce(over[i], &flag, 1, NULL);
        if (s != TSR_OK) return s;
    }
    if (mine == TSR_OK && flag > 0)
        return tsr_error(r->ctx, TSR_ERR_STATE, "%s failed on another rank", what);
    return mine;
}

tsr_status tsr_run_open_stage(tsr_run *r, const tsr_stage_options *so, tsr_backend **be,
                              tsr_stage **stage, tsr_optim **optim) {
    /* refused with the figures before anything is allocated (an oversized model used to be
     * OOM-killed half-way through its allocations) */
    if (so->precision != r->o.precision)
        return tsr_error(r->ctx, TSR_ERR_INVALID_ARG, "stage precision %s, trainer precision %s",
                         tsr_precision_name(so->precision), tsr_precision_name(r->o.precision));
    TSR_TRY(tsr_stage_check_fit(r->ctx, r->model, so, tsr_context_device(r->ctx, r->device),
                                r->o.optimizer.kind == TSR_OPTIM_SGD ? 1 : 2, 1, NULL));
    TSR_TRY(tsr_backend_open(r->ctx, r->device, be));
    TSR_TRY(tsr_backend_set_precision(*be, r->o.precision));
    TSR_TRY(tsr_stage_create(*be, r->model, so, stage));
    if (r->scaler.enabled) tsr_stage_set_grad_scale(*stage, &r->scaler.scale);
    TSR_TRY(tsr_optim_create(*be, &r->o.optimizer, tsr_stage_param_count(*stage), optim));
    if (r->o.decay_matrices_only) TSR_TRY(tsr_optim_decay_matrices(*optim, *stage));
    return tsr_stage_init_params(*stage, r->o.init == TSR_INIT_GLOROT_UNIFORM, r->o.seed);
}

tsr_status tsr_run_check_batch(tsr_run *r, const float *images, const int32_t *labels, size_t n,
                               size_t min_n, const char *who) {
    if (n && (!images || !labels))
        return tsr_error(r->ctx, TSR_ERR_INVALID_ARG, "%sNULL images or labels", who);
    if (n < min_n || n > r->o.batch)
        return tsr_error(r->ctx, TSR_ERR_SHAPE, "%sbatch of %zu samples: the trainer takes %zu to %zu",
                         who, n, min_n, r->o.batch);
    size_t classes = tsr_model_get_input(r->model).classes, P = tsr_model_positions(r->model);
    for (size_t i = 0; i < n * P; i++) /* every rank checks its own: refused before any message */
        if (labels[i] < 0 || (size_t)labels[i] >= classes)
            return tsr_error(r->ctx, TSR_ERR_INVALID_ARG, "label %d of sample %zu%s is not in [0, %zu)",
                             (int)labels[i], i / P, P > 1 ? " (a target token)" : "", classes);
    tsr_model_input_desc d = tsr_model_get_input_desc(r->model);
    if (d.dtype == TSR_DTYPE_I32) { /* token ids travel in the images pointer */
        const int32_t *ids = (const int32_t *)(const void *)images;
        size_t T = d.dims[0];
        for (size_t i = 0; i < n * T; i++)
            if (ids[i] < 0 || (size_t)ids[i] >= d.vocab)
                return tsr_error(r->ctx, TSR_ERR_INVALID_ARG, "%stoken %d of sequence %zu is not in [0, %zu)",
                                 who, (int)ids[i], i / T, d.vocab);
    }
    return TSR_OK;
}

tsr_status tsr_run_upload(tsr_run *r, tsr_stage *st, const float *images, const int32_t *labels,
                          size_t n) {
    tsr_model_input in = tsr_model_get_input(r->model);
    size_t features = in.channels * in.height * in.width;
    tsr_ref x = tsr_stage_input(st), y = tsr_stage_labels(st);
    /* token ids are int32 of the same size: the bytes go as they are */
    TSR_TRY(tsr_ref_write(x, TSR_DTYPE_F32, images, n * features));
    return tsr_ref_write(y, TSR_DTYPE_I32, labels, n * tsr_model_positions(r->model));
}

uint64_t tsr_run_dropout_seed(tsr_run *r, uint64_t stream) {
    uint64_t seed = tsr_rng_next(&r->rng);
    return stream ? seed ^ (RUN_STREAM_MIX * stream) : seed;
}

tsr_status tsr_run_scan_grads(tsr_run *r, tsr_buf *grads, size_t lo, size_t hi, size_t np,
                              size_t *bad, float *value, int sumsq) {
    *bad = np;
    r->sumsq.valid = 0;
    if (!np) return TSR_OK;
    /* tests/fault: one poisoned gradient at that step */
    if (r->o.fault_grad_nan_step >= 0 && (uint64_t)r->o.fault_grad_nan_step == r->steps) {
        const float nan = NAN;
        TSR_TRY(tsr_ref_write(tsr_ref_at(grads, np / 2), TSR_DTYPE_F32, &nan, 1));
    }
    size_t i = hi;
    double s2 = 0.0;
    if (hi > lo) {
        TSR_TRY(tsr_op_first_nonfinite(grads->backend, hi - lo, tsr_ref_at(grads, lo), &i,
                                       sumsq ? &s2 : NULL));
        i += lo;
    }
    if (sumsq && i == hi) {
        r->sumsq.valid = 1;
        r->sumsq.buf = grads;
        r->sumsq.lo = lo;
        r->sumsq.hi = hi;
        r->sumsq.value = s2;
    }
    if (i < hi) {
        *bad = i;
        if (value) TSR_TRY(tsr_ref_read(tsr_ref_at(grads, i), TSR_DTYPE_F32, value, 1));
    }
    return TSR_OK;
}

tsr_status tsr_run_nonfinite(tsr_run *r, const char *why) {
    if (r->o.nonfinite == TSR_NONFINITE_SKIP) {
        r->skipped++;
        tsr_log(r->ctx, TSR_LOG_WARN, "step %llu skipped: %s", (unsigned long long)r->steps, why);
        return TSR_OK;
    }
    return tsr_error(r->ctx, TSR_ERR_NUMERIC, "%s at step %llu", why, (unsigned long long)r->steps);
}

int tsr_run_stop_requested(const tsr_run *r) { return r->o.stop_flag && *r->o.stop_flag; }

tsr_status tsr_run_read_grads(tsr_run *r, tsr_stage *st, float *dst, size_t count) {
    size_t np = tsr_stage_param_count(st);
    if (count != np)
        return tsr_error(r->ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu gradients asked for", np, count);
    if (!r->has_grads) return tsr_error(r->ctx, TSR_ERR_STATE, "no step has computed gradients yet");
    return tsr_ref_read(tsr_ref_at(tsr_stage_grads(st), 0), TSR_DTYPE_F32, dst, np);
}

tsr_status tsr_run_sumsq(tsr_run *r, tsr_buf *grads, float *scratch, size_t lo, size_t hi, double *out) {
    *out = 0.0;
    if (hi <= lo) return TSR_OK;
    if (r->sumsq.valid && r->sumsq.buf == grads && r->sumsq.lo == lo && r->sumsq.hi == hi) {
        *out = r->sumsq.value; /* the scan's: the same gradients, the same order */
        return TSR_OK;
    }
    tsr_map gm;
    TSR_TRY(tsr_buf_map(tsr_ref_at(grads, lo), TSR_DTYPE_F32, hi - lo, TSR_MAP_READ, scratch + lo, &gm));
    *out = tsr_sumsq_f32(gm.data, hi - lo);
    return tsr_buf_unmap(&gm);
}

tsr_status tsr_run_sum_over(tsr_run *r, tsr_comm *comm, double *x, size_t k) {
    if (!comm || tsr_comm_size(comm) < 2) return TSR_OK;
    int size = tsr_comm_size(comm);
    double *all = tsr_calloc(r->ctx, (size_t)size * k, sizeof *all);
    size_t *bytes = tsr_calloc(r->ctx, (size_t)size, sizeof *bytes);
    tsr_status s = all && bytes ? TSR_OK : tsr_error(r->ctx, TSR_ERR_NO_MEMORY, "sum over %d ranks", size);
    for (int q = 0; s == TSR_OK && q < size; q++) bytes[q] = k * sizeof *x;
    if (s == TSR_OK) s = tsr_comm_allgatherv(comm, x, all, bytes);
    for (size_t j = 0; s == TSR_OK && j < k; j++) {
        x[j] = 0.0;
        for (int q = 0; q < size; q++) x[j] += all[(size_t)q * k + j];
    }
    tsr_free(r->ctx, all);
    tsr_free(r->ctx, bytes);
    return s;
}

float tsr_run_lr(const tsr_run *r) {
    return tsr_schedule_lr(&r->o.schedule, r->o.optimizer.lr, r->steps);
}

/* ---- the step loop ---- */

static tsr_status step_failed(const tsr_step_ops *ops, void *mode, tsr_status s) {
    return s != TSR_OK && ops->failed ? ops->failed(mode, s) : s;
}

/* Clipping by the global norm, as PyTorch's clip_grad_norm_: the gradient times
 * max_norm / (norm + 1e-6) when that is below 1. A non-finite norm is left to the non-finite
 * rule (the scan, or no check at all). */
static tsr_status clip_grads(tsr_run *r, const tsr_step_ops *ops, void *mode) {
    double sumsq = 0.0;
    if (!ops->grad_sumsq || !ops->grad_scale)
        return tsr_error(r->ctx, TSR_ERR_UNSUPPORTED, "%sgradient clipping in this mode", ops->who);
    TSR_TRY(ops->grad_sumsq(mode, &sumsq));
    r->grad_norm = sqrt(sumsq);
    double coef = r->o.clip_grad_norm / (r->grad_norm + 1e-6);
    if (!isfinite(r->grad_norm) || coef >= 1.0) return TSR_OK;
    return ops->grad_scale(mode, (float)coef);
}

tsr_status tsr_run_step(tsr_run *r, const tsr_step_ops *ops, void *mode, const float *images,
                        const int32_t *labels, size_t n, float *loss) {
    TSR_TRY(tsr_run_check_batch(r, images, labels, n, ops->min_batch(mode), ops->who));
    tsr_stage *in = ops->input ? ops->input(mode) : NULL;
    if (n && in) TSR_TRY(tsr_run_upload(r, in, images, labels, n));
    uint64_t seed = tsr_run_dropout_seed(r, ops->stream(mode));
    r->stop = tsr_run_stop_requested(r); /* agreed on inside the step (compute or agree) */
    double t0 = tsr_timeline_now(r->tl);
    float l = 0.0f;
    int early = 0, skip = 0, applied = 1;
    tsr_status s = ops->compute(mode, images, labels, n, seed, &l, &early);
    if (s == TSR_OK) s = ops->combine(mode, n, &l);
    if (s != TSR_OK) {
        if (loss) *loss = l;
        return step_failed(ops, mode, s);
    }
    r->has_grads = !early;
    /* the one non-finite decision: this rank's scan, then what every rank of the mode agrees */
    double tc = tsr_timeline_now(r->tl);
    tsr_buf *g;
    float *scratch, value = 0.0f;
    size_t lo = 0, hi = 0, np = 0, bad = 0;
    char why[160] = "";
    /* clipping reads the squares of the same gradients next: one read for both (fp16 first
     * unscales them, so not there) */
    int fuse_sumsq = r->o.clip_grad_norm > 0.0 && !r->scaler.enabled;
    r->sumsq.valid = 0;
    if (!early && ops->grads(mode, l, &g, &scratch, &lo, &hi, &np))
        s = tsr_run_scan_grads(r, g, lo, hi, np, &bad, &value, fuse_sumsq);
    else
        bad = np;
    if (s == TSR_OK) s = ops->agree(mode, &l, early, bad, value, np, &skip, why, sizeof why);
    if (loss) *loss = l;
    if (s != TSR_OK) return step_failed(ops, mode, s);
    double tu = tsr_timeline_now(r->tl);
    TSR_TRY(tsr_timeline_event(r->tl, "check", TSR_TRACK_COMPUTE, tc, tu));
    if (skip && r->scaler.enabled) { /* fp16: an overflow lowers the scale, nothing fails */
        tsr_scaler_update(&r->scaler, 1);
        r->skipped++;
        tsr_log(r->ctx, TSR_LOG_INFO, "step %llu skipped: %s; fp16 loss scale now %g",
                (unsigned long long)r->steps, why, (double)r->scaler.scale);
    } else if (skip) {
        TSR_TRY(tsr_run_nonfinite(r, why));
    } else {
        if (r->scaler.enabled && hi > lo) /* the gradients this rank applies, unscaled (exact) */
            TSR_TRY(tsr_op_scale(g->backend, hi - lo, 1.0f / r->scaler.scale, tsr_ref_at(g, lo)));
        if (r->o.clip_grad_norm > 0.0) TSR_TRY(clip_grads(r, ops, mode));
        TSR_TRY(ops->apply(mode, tsr_run_lr(r), &applied));
        tsr_scaler_update(&r->scaler, 0);
        if (applied) {
            TSR_TRY(tsr_timeline_event(r->tl, "update", TSR_TRACK_COMPUTE, tu, tsr_timeline_now(r->tl)));
            r->steps++;
        }
    }
    r->sumsq.valid = 0;
    if (ops->after) TSR_TRY(ops->after(mode));
    TSR_TRY(tsr_timeline_event(r->tl, "step", TSR_TRACK_COMPUTE, t0, tsr_timeline_now(r->tl)));
    if (!skip) r->last_loss = l;
    if (r->stop)
        return tsr_error(r->ctx, TSR_ERR_INTERRUPTED, "stopped on request after step %llu",
                         (unsigned long long)r->steps);
    return TSR_OK;
}

/* ---- checkpoints ---- */

/* fp16 runs add this tensor: {scale, clean steps}; other runs ignore it, and an fp16 run
 * loading a checkpoint without it starts from the initial scale. */
#define SCALER_TENSOR "loss_scale"

/* The checkpoint's loss-scaler state, checked (into a copy) before anything changes. */
static tsr_status check_scaler(tsr_run *r, const char *path, const tsr_checkpoint *ck, tsr_scaler *out) {
    *out = r->scaler;
    const tsr_checkpoint_tensor *t = r->scaler.enabled ? tsr_checkpoint_find(ck, SCALER_TENSOR) : NULL;
    if (t && (t->count != 2 || tsr_scaler_restore(out, t->data[0], t->data[1]) != 0))
        return tsr_error(r->ctx, TSR_ERR_MISMATCH,
                         "%s: tensor '%s' is not a loss scale (2 floats: a positive finite scale "
                         "and a clean-step count below %u)", path, SCALER_TENSOR, (unsigned)r->scaler.interval);
    return TSR_OK;
}

tsr_status tsr_run_checkpoint_write(tsr_run *r, const char *path, const char *const *names,
                                    float *const *data, size_t nt, size_t n) {
    tsr_checkpoint ck;
    tsr_checkpoint_tensor tensors[4];
    memset(&ck, 0, sizeof ck);
    memset(tensors, 0, sizeof tensors);
    const char *spec = tsr_model_spec(tsr_run_saved_model(r));
    if (strlen(spec) >= sizeof ck.model_spec)
        return tsr_error(r->ctx, TSR_ERR_UNSUPPORTED, "model spec of %zu bytes is too long for a checkpoint",
                         strlen(spec));
    if (nt > 3) return tsr_error(r->ctx, TSR_ERR_STATE, "checkpoint: %zu tensors", nt);
    tsr_strlcpy(ck.model_spec, spec, sizeof ck.model_spec);
    tsr_strlcpy(ck.optimizer, tsr_optimizer_kind_name(r->o.optimizer.kind), sizeof ck.optimizer);
    ck.step = r->steps;
    ck.epoch = r->epoch;
    ck.seed = r->seed;
    memcpy(ck.rng_state, r->rng.s, sizeof ck.rng_state);
    ck.tensor_count = nt;
    ck.tensors = tensors;
    ck.meta = r->meta;
    for (size_t i = 0; i < nt; i++) {
        tsr_strlcpy(tensors[i].name, names[i], sizeof tensors[i].name);
        tensors[i].count = n;
        tensors[i].data = data[i];
    }
    float scaler[2] = {r->scaler.scale, (float)r->scaler.clean};
    if (r->scaler.enabled) { /* fp16: the loss scale and its clean-step count */
        tsr_strlcpy(tensors[nt].name, SCALER_TENSOR, sizeof tensors[nt].name);
        tensors[nt].count = 2;
        tensors[nt].data = scaler;
        ck.tensor_count++;
    }
    return tsr_checkpoint_save(r->ctx, path, &ck);
}

tsr_status tsr_run_save(tsr_run *r, const tsr_state_ops *ops, void *mode, const char *path) {
    const char *names[3];
    tsr_buf *bufs[3];
    size_t nt = ops->tensors(mode, names, bufs), n = ops->count(mode);
    tsr_comm *comm = ops->comm(mode);
    float *data = tsr_calloc(r->ctx, nt * (n ? n : 1), sizeof(float)), *parts[3];
    tsr_status s = data ? TSR_OK : tsr_error(r->ctx, TSR_ERR_NO_MEMORY, "checkpoint staging");
    /* a failed allocation must not leave the others waiting in a gather: agree first */
    s = tsr_run_agree(r, comm, s, "checkpoint staging");
    for (size_t i = 0; i < nt && s == TSR_OK; i++) {
        parts[i] = data + i * n;
        s = ops->gather(mode, i, bufs[i], parts[i]);
    }
    int writing = s == TSR_OK;
    if (writing && ops->writer(mode)) s = tsr_run_checkpoint_write(r, path, names, parts, nt, n);
    if (writing) s = tsr_run_agree(r, comm, s, "checkpoint save (rank 0 writes)");
    tsr_free(r->ctx, data);
    return s;
}

tsr_status tsr_run_load(tsr_run *r, const tsr_state_ops *ops, void *mode, const char *path) {
    const char *names[3];
    tsr_buf *bufs[3];
    size_t nt = ops->tensors(mode, names, bufs), n = ops->count(mode);
    tsr_checkpoint *ck = NULL;
    tsr_scaler scaler;
    tsr_status s = tsr_checkpoint_load(r->ctx, path, &ck);
    /* checks every tensor before anything changes, so a refused load leaves the run as it was */
    if (s == TSR_OK)
        s = tsr_checkpoint_check_fit(r->ctx, path, ck, tsr_model_spec(tsr_run_saved_model(r)),
                                     tsr_optimizer_kind_name(r->o.optimizer.kind), ops->who, names,
                                     nt, n);
    if (s == TSR_OK) s = check_scaler(r, path, ck, &scaler);
    /* every rank checked its copy: change nothing unless all can load */
    s = tsr_run_agree(r, ops->comm(mode), s, "checkpoint load");
    if (s == TSR_OK && ops->before_load) s = ops->before_load(mode);
    for (size_t i = 0; i < nt && s == TSR_OK; i++)
        s = ops->scatter(mode, i, bufs[i], tsr_checkpoint_find(ck, names[i])->data);
    if (s == TSR_OK) {
        r->steps = ck->step;
        r->epoch = ck->epoch;
        r->seed = ck->seed;
        memcpy(r->rng.s, ck->rng_state, sizeof r->rng.s);
        r->scaler = scaler;
        tsr_free(r->ctx, r->meta);
        r->meta = ck->meta; /* the checkpoint's metadata now belongs to the run */
        ck->meta = NULL;
        if (ops->loaded) ops->loaded(mode, ck);
    }
    if (ck) tsr_checkpoint_free(r->ctx, ck);
    return s;
}
