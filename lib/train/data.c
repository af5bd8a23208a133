/* Data strategy: one stage holding the whole model, in one process or data parallel over the
 * options' communicator (lib/train/dp.c: the gradients of each step are averaged over the ranks,
 * weighted by their sample counts, before the deterministic optimizer step), optionally with
 * the optimizer state sharded (ZeRO-1). With tensor parallelism (options tp_*) the stage holds
 * this rank's share of a GPT and the whole model is what the outside sees: its initial values,
 * parameters, gradients and checkpoints. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "backends/host/host.h"
#include "lib/comm/comm_internal.h"
#include "lib/train/dp.h"
#include "lib/train/optim.h"
#include "lib/train/strategy.h"
#include "lib/train/tp.h"

typedef struct data_mode {
    tsr_run run;
    tsr_backend *be;
    tsr_stage *stage;
    tsr_optim *optim;
    tsr_dp *dp;     /* data parallel (a communicator given), else NULL */
    size_t np;
    float *probs;   /* host copy of batch x classes for evaluation */
    float *grads;   /* host copy of the gradients for a norm the scan did not take (device backends) */
    float global_loss;
    tsr_tp tp;      /* tensor parallelism (tp.comm NULL: none): this rank's share inside */
    float grad_coef; /* this step's clipping factor, folded into the update rather than
                        applied to the buffer (get_grads multiplies its copy); 0: none */
} data_mode;

static tsr_status validate(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o) {
    (void)model;
    if ((unsigned)o->compress > TSR_COMPRESS_TOPK)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown gradient compression %d", (int)o->compress);
    if (o->compress == TSR_COMPRESS_TOPK && !(o->topk_ratio >= 0.0 && o->topk_ratio <= 1.0))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "top-k ratio %g is not in (0, 1]", o->topk_ratio);
    if (o->compress != TSR_COMPRESS_NONE && !o->comm)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "gradient compression needs a communicator");
    tsr_gpt_config c;
    if (o->tp_comm) TSR_TRY(tsr_tp_check(ctx, model, o, &c));
    return TSR_OK;
}

static void destroy(void *mode) {
    data_mode *m = mode;
    if (!m) return;
    tsr_context *ctx = m->run.ctx;
    tsr_dp_free(m->dp); /* before the stage: it restores the gradient buffer's memory */
    tsr_run_release(&m->run, 1);
    tsr_optim_free(m->optim);
    tsr_stage_free(m->stage);
    tsr_backend_free(m->be);
    tsr_free(ctx, m->probs);
    tsr_free(ctx, m->grads);
    tsr_tp_close(&m->tp);
    tsr_free(ctx, m);
}

/* ---- tensor parallelism: the whole model outside, this rank's share inside ---- */

/* The whole vector `full` into the share's buffer. */
static tsr_status tp_scatter(data_mode *m, tsr_buf *buf, size_t off, const float *full) {
    TSR_TRY(tsr_tp_scatter(&m->tp, full, m->tp.mine_buf));
    return tsr_write_f32(buf, off, m->tp.mine_buf, m->np);
}

static tsr_status tp_open(data_mode *m, const tsr_trainer_options *o) {
    TSR_TRY(tsr_tp_open(&m->tp, m->run.ctx, m->run.model, o));
    tsr_stage_set_tp(m->stage, m->tp.comm);
    /* the whole model's initial values, so a tensor-parallel run starts as a single one */
    TSR_TRY(tsr_tp_initial(&m->tp, o));
    return tsr_write_f32(tsr_stage_params(m->stage), 0, m->tp.mine_buf, m->np);
}

static tsr_status create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                         void **out) {
    data_mode *m = tsr_calloc(ctx, 1, sizeof *m);
    if (!m) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "trainer");
    tsr_status s = tsr_run_init(&m->run, ctx, model, o, o->comm, o->comm ? tsr_comm_rank(o->comm) : 0);
    if (s != TSR_OK) {
        tsr_free(ctx, m);
        return s;
    }
    tsr_run *r = &m->run;
    tsr_stage_options so = {0, tsr_model_layer_count(model), o->batch, 0, o->precision, 0};
    size_t classes = tsr_model_get_input(model).classes;
    if ((s = tsr_run_open_stage(r, &so, &m->be, &m->stage, &m->optim)) != TSR_OK) {
        destroy(m);
        return s;
    }
    m->np = tsr_stage_param_count(m->stage);
    m->probs = tsr_calloc(ctx, o->batch * tsr_model_positions(model) * classes, sizeof *m->probs);
    m->grads = tsr_calloc(ctx, m->np ? m->np : 1, sizeof *m->grads);
    if (!m->probs || !m->grads) {
        destroy(m);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "evaluation buffer");
    }
    if (o->tp_comm && (s = tp_open(m, o)) != TSR_OK) {
        destroy(m);
        return s;
    }
    if (o->comm) {
        if ((s = tsr_dp_create(ctx, model, m->stage, o, r->tl, &m->dp)) != TSR_OK) {
            r->world = NULL; /* nothing collective at free: the other ranks may have failed too */
            destroy(m);
            return s;
        }
        tsr_stage_set_hook(m->stage, tsr_dp_hook, m->dp);
        if (tsr_dp_sharded(m->dp)) {
            /* ZeRO-1: optimizer state for this rank's slice only */
            size_t lo, hi;
            tsr_dp_owned(m->dp, &lo, &hi);
            tsr_optim_free(m->optim);
            m->optim = NULL;
            if ((s = tsr_optim_create(m->be, &o->optimizer, hi - lo, &m->optim)) != TSR_OK) {
                destroy(m);
                return s;
            }
            m->optim->off = lo;
            if (o->decay_matrices_only && (s = tsr_optim_decay_matrices(m->optim, m->stage)) != TSR_OK) {
                destroy(m);
                return s;
            }
        }
    }
    *out = m;
    return TSR_OK;
}

static tsr_run *run_of(void *mode) { return &((data_mode *)mode)->run; }

/* ---- the step's parts (the loop is tsr_run_step) ---- */

static size_t min_batch(void *mode) {
    return ((data_mode *)mode)->dp ? 0 : 1; /* a rank may get no sample of the last global batch */
}
static tsr_stage *input(void *mode) { return ((data_mode *)mode)->stage; }
static uint64_t stream(void *mode) {
    data_mode *m = mode;
    return m->dp ? (uint64_t)tsr_comm_rank(m->run.o.comm) : 0; /* ranks draw their own masks */
}

/* forward (and, data parallel, the exchange of sample counts and losses), backward: the
 * stage's gradient buffer holds this rank's gradient, the buckets are on their way */
static tsr_status compute(void *mode, const float *images, const int32_t *labels, size_t n,
                          uint64_t seed, float *l, int *early) {
    data_mode *m = mode;
    tsr_run *r = &m->run;
    (void)images, (void)labels;
    m->grad_coef = 0.0f; /* new gradients: nothing folded yet */
    tsr_optim_scale_next(m->optim, 0.0f);
    double t0 = tsr_timeline_now(r->tl);
    if (n) TSR_TRY(tsr_stage_forward(m->stage, n, 1, seed, l));
    double t1 = tsr_timeline_now(r->tl);
    TSR_TRY(tsr_timeline_event(r->tl, "forward", TSR_TRACK_COMPUTE, t0, t1));
    /* Data parallel: a rank must not leave the step alone; its NaN reaches every rank through
     * the averaged gradients, which are then checked on all ranks alike. */
    /* tensor parallelism: the group learns any rank's stop request before the data-parallel
     * agreement spreads it to the other groups (every rank then ends the same step) */
    TSR_TRY(tsr_tp_any(&m->tp, &r->stop));
    *early = !isfinite(*l) && !m->dp && !r->check_grads && !m->tp.comm;
    if (*early) return TSR_OK;
    m->global_loss = *l;
    if (m->dp) {
        TSR_TRY(tsr_dp_begin(m->dp, n, *l, &m->global_loss, &r->stop));
        TSR_TRY(tsr_timeline_event(r->tl, "sync", TSR_TRACK_COMPUTE, t1, tsr_timeline_now(r->tl)));
    }
    t1 = tsr_timeline_now(r->tl);
    if (n) TSR_TRY(tsr_stage_backward(m->stage, n, 0));
    else TSR_TRY(tsr_op_fill(m->be, tsr_ref_at(tsr_stage_grads(m->stage), 0), m->np, 0.0f));
    return tsr_timeline_event(r->tl, "backward", TSR_TRACK_COMPUTE, t1, tsr_timeline_now(r->tl));
}

/* the averaged gradient (ZeRO-1: this rank's slice of it) */
static tsr_status combine(void *mode, size_t n, float *l) {
    data_mode *m = mode;
    (void)n, (void)l;
    return m->dp ? tsr_dp_finish(m->dp) : TSR_OK;
}

static int grads(void *mode, float l, tsr_buf **g, float **scratch, size_t *lo, size_t *hi, size_t *np) {
    data_mode *m = mode;
    if (!m->run.check_grads && !(!isfinite(l) && m->dp)) return 0;
    *g = tsr_stage_grads(m->stage);
    *scratch = m->grads;
    *np = m->np;
    *lo = 0, *hi = m->np;
    if (m->dp) tsr_dp_owned(m->dp, lo, hi); /* ZeRO-1: only this slice is reduced */
    return 1;
}

/* every rank scanned the same averaged gradient (ZeRO-1: its slice; the first bad index is
 * agreed) */
static tsr_status agree(void *mode, float *l, int early, size_t bad, float value, size_t np,
                        int *skip, char *why, size_t size) {
    data_mode *m = mode;
    *skip = 0;
    if (early) {
        snprintf(why, size, "loss is %g", (double)*l);
        *skip = 1;
        return TSR_OK;
    }
    size_t lo = 0, hi = np;
    if (m->dp) tsr_dp_owned(m->dp, &lo, &hi);
    if (np && tsr_dp_sharded(m->dp)) TSR_TRY(tsr_dp_first_bad(m->dp, bad, &bad));
    int any = bad < np; /* tensor parallel: each rank scanned its own share, the group skips together */
    TSR_TRY(tsr_tp_any(&m->tp, &any));
    if (any && bad >= np) {
        snprintf(why, size, "a gradient of another tensor-parallel rank is not finite");
        *skip = 1;
        return TSR_OK;
    }
    if (bad < np) {
        char text[32] = "not finite"; /* the value itself where this rank holds it */
        if (bad >= lo && bad < hi) snprintf(text, sizeof text, "%g", (double)value);
        snprintf(why, size, "gradient %zu of %zu is %s%s", bad, np, text,
                 isfinite(*l) ? "" : " (non-finite loss)");
        *skip = 1;
    }
    return TSR_OK;
}

static tsr_status apply(void *mode, float lr, int *applied) {
    data_mode *m = mode;
    *applied = 1;
    TSR_TRY(tsr_optim_update(m->optim, tsr_stage_params(m->stage), tsr_stage_grads(m->stage), lr,
                             m->run.steps));
    return tsr_dp_sharded(m->dp) ? tsr_dp_gather_params(m->dp) : TSR_OK;
}

/* Tensor parallelism: the share's squared gradients [lo, hi) as parts[0] split over the group
 * (summed over its ranks) and parts[1] replicated (the same on every rank of the group). */
static tsr_status tp_sumsq(data_mode *m, size_t lo, size_t hi, double parts[2]) {
    tsr_tp *tp = &m->tp;
    float *share = tp->mine_buf, *whole = tp->whole_buf;
    TSR_TRY(tsr_read_f32(tsr_stage_grads(m->stage), 0, share, m->np));
    memset(share, 0, lo * sizeof *share); /* ZeRO-1: only [lo, hi) is reduced */
    memset(share + hi, 0, (m->np - hi) * sizeof *share);
    memset(whole, 0, tp->nwhole * sizeof *whole);
    /* not the owner: only the split tensors land in the whole vector */
    TSR_TRY(tsr_gpt_tp_gather(tp->ctx, tp->whole, tp->mine, &tp->gpt, tp->head0, tp->heads, share, 0, whole));
    parts[0] = tsr_sumsq_f32(whole, tp->nwhole);
    parts[1] = tsr_sumsq_f32(share + lo, hi - lo) - parts[0];
    return TSR_OK;
}

/* the averaged gradient's squared norm: each rank holds all of it, or (ZeRO-1) its slice */
static tsr_status grad_sumsq(void *mode, double *sumsq) {
    data_mode *m = mode;
    tsr_run *r = &m->run;
    size_t lo = 0, hi = m->np;
    if (m->dp) tsr_dp_owned(m->dp, &lo, &hi);
    int sharded = tsr_dp_sharded(m->dp);
    if (!m->tp.comm) {
        TSR_TRY(tsr_run_sumsq(r, tsr_stage_grads(m->stage), m->grads, lo, hi, sumsq));
        return sharded ? tsr_run_sum_over(r, r->o.comm, sumsq, 1) : TSR_OK;
    }
    double parts[2];
    TSR_TRY(tp_sumsq(m, lo, hi, parts));
    if (sharded) TSR_TRY(tsr_run_sum_over(r, r->o.comm, parts, 2));
    TSR_TRY(tsr_run_sum_over(r, m->tp.comm, parts, 1));
    *sumsq = parts[0] + parts[1];
    return TSR_OK;
}

/* Clipping: the coefficient rides on the update (apply comes next), which saves a read and a
 * write of every gradient; get_grads scales its copy the same way. */
static tsr_status grad_scale(void *mode, float coef) {
    data_mode *m = mode;
    m->grad_coef = coef;
    tsr_optim_scale_next(m->optim, coef);
    return TSR_OK;
}

/* dst[0, n) as the scale pass would have left the gradients */
static void fold_coef(const data_mode *m, float *dst, size_t n) {
    if (m->grad_coef != 0.0f)
        for (size_t i = 0; i < n; i++) dst[i] *= m->grad_coef;
}

static const tsr_step_ops step_ops = {"", min_batch, input, stream, compute, combine, grads,
                                      agree, apply, NULL, NULL, grad_sumsq, grad_scale};

static tsr_status step(void *mode, const float *images, const int32_t *labels, size_t n, float *loss) {
    return tsr_run_step(&((data_mode *)mode)->run, &step_ops, mode, images, labels, n, loss);
}

static tsr_status evaluate(void *mode, const tsr_dataset *d, double *accuracy, double *loss) {
    data_mode *m = mode;
    tsr_context *ctx = m->run.ctx;
    size_t correct = 0;
    double total = 0.0;
    if (!m->dp) {
        TSR_TRY(tsr_stage_evaluate(m->stage, d, 0, d->count, m->probs, &correct, &total));
    } else {
        /* each rank evaluates its 1/N of the set; the figures are gathered and summed in rank
         * order, so every rank gets the same ones */
        tsr_comm *comm = m->run.o.comm;
        int size = tsr_comm_size(comm), rk = tsr_comm_rank(comm);
        size_t lo = d->count * (size_t)rk / (size_t)size, hi = d->count * (size_t)(rk + 1) / (size_t)size;
        double mine[3] = {0.0, 0.0, 0.0}; /* correct, loss sum, failed */
        size_t c = 0;
        tsr_status es = hi > lo ? tsr_stage_evaluate(m->stage, d, lo, hi - lo, m->probs, &c, &mine[1])
                                : TSR_OK;
        mine[0] = (double)c;
        mine[2] = es != TSR_OK;
        double *all = tsr_calloc(ctx, (size_t)size * 3, sizeof *all);
        size_t *bytes = tsr_calloc(ctx, (size_t)size, sizeof *bytes);
        tsr_status s = all && bytes ? TSR_OK : tsr_error(ctx, TSR_ERR_NO_MEMORY, "evaluation: %d ranks", size);
        for (int k = 0; s == TSR_OK && k < size; k++) bytes[k] = sizeof mine;
        if (s == TSR_OK) s = tsr_comm_allgatherv(comm, mine, all, bytes); /* even after a local error */
        int failed = 0;
        for (int k = 0; s == TSR_OK && k < size; k++) {
            correct += (size_t)all[3 * k];
            total += all[3 * k + 1];
            failed |= all[3 * k + 2] != 0.0;
        }
        tsr_free(ctx, all);
        tsr_free(ctx, bytes);
        TSR_TRY(es);
        TSR_TRY(s);
        if (failed) return tsr_error(ctx, TSR_ERR_STATE, "evaluation failed on another rank");
    }
    double targets = (double)tsr_dataset_targets(d);
    if (accuracy) *accuracy = (double)correct / targets;
    if (loss) *loss = total / targets;
    return TSR_OK;
}

static size_t outside_count(const data_mode *m) { return m->tp.comm ? m->tp.nwhole : m->np; }

static tsr_status get_params(void *mode, float *dst, size_t count) {
    data_mode *m = mode;
    if (count != outside_count(m))
        return tsr_error(m->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu asked for", outside_count(m),
                         count);
    if (!m->tp.comm) return tsr_read_f32(tsr_stage_params(m->stage), 0, dst, m->np);
    TSR_TRY(tsr_read_f32(tsr_stage_params(m->stage), 0, m->tp.mine_buf, m->np));
    return tsr_tp_gather(&m->tp, m->tp.mine_buf, dst); /* collective over the group */
}

static tsr_status set_params(void *mode, const float *src, size_t count) {
    data_mode *m = mode;
    if (count != outside_count(m))
        return tsr_error(m->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu given", outside_count(m),
                         count);
    if (m->tp.comm) return tp_scatter(m, tsr_stage_params(m->stage), 0, src);
    return tsr_write_f32(tsr_stage_params(m->stage), 0, src, m->np);
}

/* the averaged gradient with a communicator; ZeRO-1 averages only this rank's slice */
static tsr_status get_grads(void *mode, float *dst, size_t count) {
    data_mode *m = mode;
    if (tsr_dp_sharded(m->dp)) {
        size_t lo, hi;
        tsr_dp_owned(m->dp, &lo, &hi);
        return tsr_error(m->run.ctx, TSR_ERR_UNSUPPORTED,
                         "gradients with shard_optimizer: this rank averages only [%zu, %zu) of %zu",
                         lo, hi, m->np);
    }
    if (!m->tp.comm) {
        TSR_TRY(tsr_run_read_grads(&m->run, m->stage, dst, count));
        fold_coef(m, dst, count);
        return TSR_OK;
    }
    if (count != m->tp.nwhole)
        return tsr_error(m->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu gradients asked for",
                         m->tp.nwhole, count);
    TSR_TRY(tsr_run_read_grads(&m->run, m->stage, m->tp.mine_buf, m->np));
    fold_coef(m, m->tp.mine_buf, m->np);
    return tsr_tp_gather(&m->tp, m->tp.mine_buf, dst);
}

/* ---- checkpoint state: the parameters whole, the optimizer state by slice (ZeRO-1) ---- */

static size_t state_count(void *mode) { return outside_count(mode); }
static size_t state_tensors(void *mode, const char *names[3], tsr_buf *bufs[3]) {
    data_mode *m = mode;
    names[0] = "params";
    bufs[0] = tsr_stage_params(m->stage);
    return 1 + tsr_optim_state(m->optim, names + 1, bufs + 1);
}
/* each rank stands alone: rank 0 writes, the others' calls only take part in ZeRO's gather */
static tsr_comm *state_comm(void *mode) {
    (void)mode;
    return NULL;
}
static int state_writer(void *mode) {
    data_mode *m = mode;
    return m->run.rank == 0 && (!m->tp.comm || tsr_comm_rank(m->tp.comm) == 0);
}
static void owned(data_mode *m, size_t *lo, size_t *hi) {
    *lo = 0, *hi = m->np;
    if (m->dp) tsr_dp_owned(m->dp, lo, hi);
}
/* this rank's model's tensor i (its share with tensor parallelism) into mine[np] */
static tsr_status gather_mine(data_mode *m, size_t i, tsr_buf *buf, float *mine) {
    size_t lo, hi;
    if (i == 0) return tsr_read_f32(buf, 0, mine, m->np);
    owned(m, &lo, &hi);
    TSR_TRY(tsr_read_f32(buf, 0, mine + lo, hi - lo));
    return tsr_dp_sharded(m->dp) ? tsr_dp_gather_slices(m->dp, mine) : TSR_OK;
}
static tsr_status gather(void *mode, size_t i, tsr_buf *buf, float *whole) {
    data_mode *m = mode;
    if (!m->tp.comm) return gather_mine(m, i, buf, whole);
    TSR_TRY(gather_mine(m, i, buf, m->tp.mine_buf));
    return tsr_tp_gather(&m->tp, m->tp.mine_buf, whole);
}
static tsr_status scatter(void *mode, size_t i, tsr_buf *buf, const float *whole) {
    data_mode *m = mode;
    size_t lo, hi;
    if (m->tp.comm) { /* the share, then this rank's slice of it (ZeRO-1) */
        TSR_TRY(tsr_tp_scatter(&m->tp, whole, m->tp.mine_buf));
        whole = m->tp.mine_buf;
    }
    if (i == 0) return tsr_write_f32(buf, 0, whole, m->np);
    owned(m, &lo, &hi);
    return tsr_write_f32(buf, 0, whole + lo, hi - lo);
}

static const tsr_state_ops state_ops = {"the trainer", state_count, state_tensors, state_comm,
                                        state_writer, gather, scatter, NULL, NULL};

static tsr_status save(void *mode, const char *path) {
    return tsr_run_save(&((data_mode *)mode)->run, &state_ops, mode, path);
}
static tsr_status load(void *mode, const char *path) {
    return tsr_run_load(&((data_mode *)mode)->run, &state_ops, mode, path);
}

/* Data parallel: every rank an equal slice of each global batch until the shares are measured
 * (tsr_trainer_balance); equal step counts on every rank need drop_last. */
static tsr_status shard_data(tsr_context *ctx, const tsr_trainer_options *o, size_t global_batch,
                             uint64_t seed, tsr_data_split *split, size_t *shares) {
    tsr_comm *comm = o->comm;
    int size = comm ? tsr_comm_size(comm) : 1, rank = comm ? tsr_comm_rank(comm) : 0;
    if (global_batch < (size_t)size)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "global batch %zu is smaller than %d ranks",
                         global_batch, size);
    split->loader = (tsr_loader_options){global_batch / (size_t)size, seed, 1, rank, size, comm != NULL};
    split->step_batch = global_batch;
    split->step_samples = comm ? global_batch : 0; /* one process: the batch the loader gives */
    if (!comm) {
        shares[0] = global_batch;
        return TSR_OK;
    }
    return tsr_dp_shares(comm, global_batch, 1.0, shares);
}

const tsr_strategy tsr_strategy_data = {"data", validate, create, destroy, run_of, step, evaluate,
                                        get_params, set_params, get_grads, save, load, shard_data};

/* ---- throughput ---- */

static double mono_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

tsr_status tsr_data_measure(void *mode, const float *images, const int32_t *labels, size_t n,
                            double *samples_per_s) {
    data_mode *m = mode;
    tsr_run *r = &m->run;
    if (!n) return tsr_error(r->ctx, TSR_ERR_SHAPE, "tsr_trainer_measure: 0 samples");
    TSR_TRY(tsr_run_check_batch(r, images, labels, n, 1, ""));
    TSR_TRY(tsr_run_upload(r, m->stage, images, labels, n));
    tsr_stage_set_hook(m->stage, NULL, NULL); /* no allreduce while measuring */
    tsr_status s = TSR_OK;
    /* the fastest of several passes (after a warm-up): robust to other processes' bursts */
    double best = 0.0, spent = 0.0;
    for (int i = 0; s == TSR_OK && i < 40 && (i < 6 || spent < 0.15); i++) {
        double t0 = mono_seconds();
        s = tsr_stage_forward(m->stage, n, 1, 1, NULL);
        if (s == TSR_OK) s = tsr_stage_backward(m->stage, n, 0);
        float probe; /* a blocking read waits for the device's queue (OpenCL runs async) */
        if (s == TSR_OK) s = tsr_read_f32(tsr_stage_grads(m->stage), 0, &probe, 1);
        double dt = mono_seconds() - t0;
        spent += dt;
        if (i >= 1 && (best == 0.0 || dt < best)) best = dt;
    }
    if (m->dp) tsr_stage_set_hook(m->stage, tsr_dp_hook, m->dp);
    TSR_TRY(s);
    *samples_per_s = best > 0 ? (double)n / best : 0.0;
    return TSR_OK;
}

const tsr_device_info *tsr_data_device_info(void *mode) { return &((data_mode *)mode)->be->device; }
float tsr_data_global_loss(void *mode) { return ((data_mode *)mode)->global_loss; }
size_t tsr_data_buckets(void *mode) { return tsr_dp_buckets(((data_mode *)mode)->dp); }
