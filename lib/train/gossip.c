/* Gossip averaging (D-PSGD): a replica per rank, local optimizer steps, parameter mixing with
 * graph neighbours over non-blocking point-to-point messages (see gossip.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/comm/comm_internal.h"
#include "lib/train/gossip.h"
#include "lib/io/checkpoint_internal.h"
#include "lib/core/internal.h"
#include "lib/train/optim.h"
#include "lib/model/stage.h"
#include "lib/core/timeline.h"
#include "lib/train/strategy.h"

/* Tags: ring messages to the right neighbour / to the left one (n = 2: the same rank, told
 * apart by the tag); the exponential graph's one message. Exchanges never overlap (one is
 * completed before the next starts), so no round number is needed in the tag. */
enum { TAG_RIGHT = 0, TAG_LEFT = 1, TAG_EXP = 2 };

struct tsr_gossip {
    tsr_run run;             /* counters: steps applied, skipped; last_loss: this rank's */
    tsr_gossip_options go;
    tsr_comm *comm;          /* NULL: one rank, no messages */
    int rank, size;
    tsr_backend *be;
    tsr_stage *stage;
    tsr_optim *optim;
    uint64_t rounds, mixes, bytes_sent;
    size_t np, classes;
    float *own;              /* host copy of the parameters being sent (and the mixing result) */
    float *recv[2];          /* neighbours' parameters */
    float *tmp;              /* evaluation of the average: this replica's parameters meanwhile */
    float *probs, *grads;
    tsr_comm_p2p *req[4];    /* receives, then sends, of the exchange in flight */
    int pending;             /* an exchange is in flight */
    int nrecv;               /* receives of that exchange (1 or 2) */
    int mixing;              /* the step in progress mixes */
    size_t step_n;           /* its samples */
};

tsr_status tsr_gossip_graph_parse(const char *name, tsr_gossip_graph *out) {
    if (!name || !out) return TSR_ERR_INVALID_ARG;
    if (!strcmp(name, "ring")) *out = TSR_GOSSIP_RING;
    else if (!strcmp(name, "exp") || !strcmp(name, "exponential")) *out = TSR_GOSSIP_EXPONENTIAL;
    else return TSR_ERR_PARSE;
    return TSR_OK;
}

const char *tsr_gossip_graph_name(tsr_gossip_graph graph) {
    return graph == TSR_GOSSIP_RING ? "ring" : graph == TSR_GOSSIP_EXPONENTIAL ? "exponential" : "?";
}

/* ---- exchange ---- */

static void cancel_all(tsr_gossip *g) {
    for (int i = 0; i < 4; i++) {
        tsr_comm_p2p_cancel(g->req[i]);
        g->req[i] = NULL;
    }
    g->pending = 0;
}

/* Waits for every request of the exchange in flight; on a failure abandons the rest. */
static tsr_status drain(tsr_gossip *g) {
    if (!g->pending) return TSR_OK;
    double t0 = tsr_timeline_now(g->run.tl);
    tsr_status s = TSR_OK;
    for (int i = 0; i < 4; i++) {
        tsr_comm_p2p *r = g->req[i];
        g->req[i] = NULL;
        if (!r) continue;
        if (s == TSR_OK) s = tsr_comm_p2p_wait(r);
        else tsr_comm_p2p_cancel(r);
    }
    g->pending = 0;
    TSR_TRY(s);
    return tsr_timeline_event(g->run.tl, "gossip wait", TSR_TRACK_COMM, t0, tsr_timeline_now(g->run.tl));
}

/* One MPI_Test on each request in flight: a rendezvous-size message moves only when MPI is
 * entered, so the step pokes it between its forward and backward (a failure is kept in the
 * request and reported by the wait). */
static void progress(tsr_gossip *g) {
    for (int i = 0; g->pending && i < 4; i++) {
        int done;
        if (g->req[i]) (void)tsr_comm_p2p_test(g->req[i], &done);
    }
}

/* Peers of mixing m: ring: both neighbours; exponential: i + h and i - h, h = 2^(m mod K),
 * K = ceil(log2 n). */
static int exp_hop(const tsr_gossip *g, uint64_t m) {
    int K = 0;
    while ((1 << K) < g->size) K++;
    return 1 << (int)(m % (uint64_t)K);
}

/* Snapshot of the parameters to the host, then the receives and sends of mixing `mixes`. */
static tsr_status start_exchange(tsr_gossip *g) {
    size_t bytes = g->np * sizeof(float); /* of each message */
    TSR_TRY(tsr_read_f32(tsr_stage_params(g->stage), 0, g->own, g->np));
    int n = g->size, i = g->rank;
    tsr_status s = TSR_OK;
    g->pending = 1;
    if (g->go.graph == TSR_GOSSIP_RING && n == 2) {
        /* both neighbours are the other rank: one message, weighted 2/3 in the mixing */
        g->nrecv = 1;
        s = tsr_comm_irecv(g->comm, 1 - i, TAG_RIGHT, g->recv[0], bytes, &g->req[0]);
        if (s == TSR_OK) s = tsr_comm_isend(g->comm, 1 - i, TAG_RIGHT, g->own, bytes, &g->req[2]);
        if (s == TSR_OK) g->bytes_sent += bytes;
    } else if (g->go.graph == TSR_GOSSIP_RING) {
        int left = (i + n - 1) % n, right = (i + 1) % n;
        g->nrecv = 2;
        /* the left neighbour's message went to ITS right, the right one's to its left */
        s = tsr_comm_irecv(g->comm, left, TAG_RIGHT, g->recv[0], bytes, &g->req[0]);
        if (s == TSR_OK) s = tsr_comm_irecv(g->comm, right, TAG_LEFT, g->recv[1], bytes, &g->req[1]);
        if (s == TSR_OK) s = tsr_comm_isend(g->comm, right, TAG_RIGHT, g->own, bytes, &g->req[2]);
        if (s == TSR_OK) s = tsr_comm_isend(g->comm, left, TAG_LEFT, g->own, bytes, &g->req[3]);
        if (s == TSR_OK) g->bytes_sent += 2 * bytes;
    } else {
        int h = exp_hop(g, g->mixes) % n;
        g->nrecv = 1;
        s = tsr_comm_irecv(g->comm, (i + n - h) % n, TAG_EXP, g->recv[0], bytes, &g->req[0]);
        if (s == TSR_OK) s = tsr_comm_isend(g->comm, (i + h) % n, TAG_EXP, g->own, bytes, &g->req[2]);
        if (s == TSR_OK) g->bytes_sent += bytes;
    }
    if (s != TSR_OK) cancel_all(g);
    return s;
}

/* Completes the exchange and mixes: x_i <- sum_j W_ij x_j with this replica's CURRENT
 * parameters as its own term (the snapshot sent, unless set_params changed them since). Each
 * element is combined in double and rounded once to float, so the mean over ranks moves by at
 * most about half an ulp of the largest element per mixing. Host memory: in place. */
static tsr_status mix(tsr_gossip *g) {
    TSR_TRY(drain(g));
    double t0 = tsr_timeline_now(g->run.tl);
    tsr_map xm;
    TSR_TRY(tsr_buf_map(tsr_ref_at(tsr_stage_params(g->stage), 0), TSR_DTYPE_F32, g->np,
                        TSR_MAP_READ_WRITE, g->own, &xm));
    float *x = xm.data;
    const float *a = g->recv[0], *b = g->recv[1];
    const double third = 1.0 / 3.0;
    if (g->nrecv == 2)
        for (size_t j = 0; j < g->np; j++)
            x[j] = (float)(((double)a[j] + (double)x[j] + (double)b[j]) * third);
    else if (g->go.graph == TSR_GOSSIP_RING) /* two ranks: the neighbour counts twice */
        for (size_t j = 0; j < g->np; j++) x[j] = (float)(((double)x[j] + 2.0 * (double)a[j]) * third);
    else
        for (size_t j = 0; j < g->np; j++) x[j] = (float)(((double)x[j] + (double)a[j]) * 0.5);
    TSR_TRY(tsr_buf_unmap(&xm));
    g->mixes++;
    return tsr_timeline_event(g->run.tl, "gossip mix", TSR_TRACK_COMPUTE, t0, tsr_timeline_now(g->run.tl));
}

/* ---- creation ---- */

void tsr_gossip_free(tsr_gossip *g) {
    if (!g) return;
    tsr_context *ctx = g->run.ctx;
    /* a healthy communicator: complete the exchange in flight (the neighbours post the matching
     * operations in the same round); a broken one: abandon it */
    if (g->pending && g->comm && !g->comm->broken) {
        if (drain(g) != TSR_OK) tsr_log(ctx, TSR_LOG_WARN, "%s", tsr_context_last_error(ctx));
    }
    cancel_all(g);
    tsr_run_release(&g->run, 1);
    if (g->comm && g->comm->broken) {
        /* requests of an exchange were abandoned, not cancelled: MPI may still write a
         * neighbour's late message into recv (or read own), so these stay allocated for the
         * rest of the process (freed, they were heap corruption in 1 of 8 runs of
         * tests/fault/gossip-train-kill.sh) */
        tsr_log(ctx, TSR_LOG_DEBUG, "gossip: %zu bytes of exchange buffers kept after a lost peer",
                3 * g->np * sizeof(float));
    } else {
        tsr_free(ctx, g->own);
        tsr_free(ctx, g->recv[0]);
        tsr_free(ctx, g->recv[1]);
    }
    tsr_free(ctx, g->tmp);
    tsr_free(ctx, g->probs);
    tsr_free(ctx, g->grads);
    tsr_optim_free(g->optim);
    tsr_stage_free(g->stage);
    tsr_backend_free(g->be);
    tsr_free(ctx, g);
}

static tsr_status check_options(tsr_context *ctx, const tsr_trainer_options *o,
                                const tsr_gossip_options *go) {
    TSR_TRY(tsr_run_check_options(ctx, o, "gossip: "));
    if (o->compress != TSR_COMPRESS_NONE)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "gossip: gradient compression %d applies to data parallelism only",
                         (int)o->compress);
    if (o->shard_optimizer > 0)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "gossip: a sharded optimizer (shard_optimizer) applies to data parallelism only");
    if (go->graph != TSR_GOSSIP_RING && go->graph != TSR_GOSSIP_EXPONENTIAL)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "gossip: unknown graph %d (ring or exponential)",
                         go->graph);
    if (go->period > 1000000)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "gossip: mixing period %zu is not in 1..1000000",
                         go->period);
    if (go->eval_local != 0 && go->eval_local != 1)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "gossip: eval_local %d is not 0 or 1", go->eval_local);
    return TSR_OK;
}

/* Every rank learns whether any rank failed: one allreduce of a flag. */
static tsr_status agree(tsr_gossip *g, tsr_status mine, const char *what) {
    return tsr_run_agree(&g->run, g->comm, mine, what);
}

static tsr_status setup(tsr_gossip *g, const tsr_trainer_options *o) {
    tsr_context *ctx = g->run.ctx;
    tsr_stage_options so = {0, tsr_model_layer_count(g->run.model), o->batch, 0, o->precision, 0};
    TSR_TRY(tsr_run_open_stage(&g->run, &so, &g->be, &g->stage, &g->optim));
    g->np = tsr_stage_param_count(g->stage);
    if (g->np * sizeof(float) > (size_t)0x7fffffff)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED, "gossip: %zu parameters exceed one message", g->np);
    g->classes = tsr_model_get_input(g->run.model).classes;
    size_t words = g->np ? g->np : 1;
    g->own = tsr_malloc(ctx, words * sizeof(float));
    g->tmp = tsr_malloc(ctx, words * sizeof(float));
    g->recv[0] = tsr_malloc(ctx, words * sizeof(float));
    g->recv[1] = tsr_malloc(ctx, words * sizeof(float));
    g->probs = tsr_calloc(ctx, o->batch * tsr_model_positions(g->run.model) * g->classes, sizeof *g->probs);
    /* the non-finite scan reads device gradients to the host (host backend: in place) */
    g->grads = tsr_calloc(ctx, words, sizeof *g->grads);
    if (!g->own || !g->tmp || !g->recv[0] || !g->recv[1] || !g->probs || !g->grads)
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "gossip: buffers of %zu parameters", g->np);
    return TSR_OK;
}

tsr_status tsr_gossip_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                             const tsr_gossip_options *go, tsr_gossip **out) {
    if (!ctx || !model || !o || !go || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_gossip_create: NULL argument");
    *out = NULL;
    TSR_TRY(tsr_model_check(model));
    TSR_TRY(check_options(ctx, o, go));
    tsr_gossip *g = tsr_calloc(ctx, 1, sizeof *g);
    if (!g) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "gossip");
    g->go = *go;
    if (!g->go.period) g->go.period = 1;
    g->comm = o->comm && tsr_comm_size(o->comm) > 1 ? o->comm : NULL;
    g->rank = o->comm ? tsr_comm_rank(o->comm) : 0;
    g->size = g->comm ? tsr_comm_size(g->comm) : 1;
    tsr_status s = tsr_run_init(&g->run, ctx, model, o, g->comm, g->rank);
    if (s == TSR_OK) s = setup(g, o);
    s = tsr_run_agree(&g->run, g->comm, s, "gossip creation");
    if (s != TSR_OK) {
        g->run.ctx = ctx;
        tsr_run_release(&g->run, 0); /* nothing collective at free: the other ranks failed too */
        tsr_gossip_free(g);
        return s;
    }
    *out = g;
    return TSR_OK;
}

/* ---- step ---- */

/* The step's parts (the loop is tsr_run_step). The non-finite decision is LOCAL: a collective
 * per step is what gossip avoids; a replica that skips keeps its parameters finite, so it never
 * sends poisoned values, and STOP still completes this step's exchange. */

static size_t min_batch(void *mode) { return ((tsr_gossip *)mode)->comm ? 0 : 1; }
static tsr_stage *input(void *mode) { return ((tsr_gossip *)mode)->stage; }
/* replicas draw their own masks (rank 0 and a single process: the trainer's) */
static uint64_t stream(void *mode) { return (uint64_t)((tsr_gossip *)mode)->rank; }

/* forward and backward at the current parameters, while the exchange travels */
static tsr_status compute(void *mode, const float *images, const int32_t *labels, size_t n,
                          uint64_t seed, float *loss, int *early) {
    tsr_gossip *g = mode;
    tsr_run *r = &g->run;
    (void)images, (void)labels;
    g->step_n = n;
    g->mixing = g->comm && g->rounds % g->go.period == 0;
    /* first round, or after a load: nothing in flight yet, send now (no overlap this once) */
    if (g->mixing && !g->pending) TSR_TRY(start_exchange(g));
    if (!n) return TSR_OK;
    double t0 = tsr_timeline_now(r->tl);
    TSR_TRY(tsr_stage_forward(g->stage, n, 1, seed, loss));
    double t1 = tsr_timeline_now(r->tl);
    TSR_TRY(tsr_timeline_event(r->tl, "forward", TSR_TRACK_COMPUTE, t0, t1));
    progress(g);
    *early = !isfinite(*loss); /* no backward: the loss decides */
    if (*early) return TSR_OK;
    TSR_TRY(tsr_stage_backward(g->stage, n, 0));
    return tsr_timeline_event(r->tl, "backward", TSR_TRACK_COMPUTE, t1, tsr_timeline_now(r->tl));
}

/* the mixing: x_i <- sum_j W_ij x_j (the gradient stays this replica's own) */
static tsr_status combine(void *mode, size_t n, float *loss) {
    tsr_gossip *g = mode;
    (void)n;
    g->run.last_loss = *loss;
    if (g->mixing) TSR_TRY(mix(g));
    g->rounds++;
    return TSR_OK;
}

static int grads(void *mode, float loss, tsr_buf **gb, float **scratch, size_t *lo, size_t *hi,
                 size_t *np) {
    tsr_gossip *g = mode;
    (void)loss;
    if (!g->run.check_grads || !g->step_n) return 0;
    *gb = tsr_stage_grads(g->stage);
    *scratch = g->grads;
    *lo = 0, *hi = *np = g->np;
    return 1;
}

static tsr_status decide(void *mode, float *loss, int early, size_t bad, float value, size_t np,
                         int *skip, char *why, size_t size) {
    tsr_gossip *g = mode;
    /* gossip has no per-step collective to carry a stop request: with a stop flag set, one
     * allreduce of it (no flag: none) */
    if (g->comm && g->run.o.stop_flag) {
        float stop = g->run.stop ? 1.0f : 0.0f;
        TSR_TRY(tsr_comm_allreduce(g->comm, &stop, 1, NULL));
        g->run.stop = stop > 0.0f;
    }
    *skip = early || bad < np;
    if (early) snprintf(why, size, "gossip rank %d: loss is %g", g->rank, (double)*loss);
    else if (bad < np)
        snprintf(why, size, "gossip rank %d: gradient %zu of %zu is %g", g->rank, bad, np, (double)value);
    return TSR_OK;
}

static tsr_status apply(void *mode, float lr, int *applied) {
    tsr_gossip *g = mode;
    *applied = g->step_n > 0; /* no sample: this rank only mixes */
    if (!*applied) return TSR_OK;
    return tsr_optim_update(g->optim, tsr_stage_params(g->stage), tsr_stage_grads(g->stage), lr,
                            g->run.steps);
}

/* the next mixing's messages travel while the next step computes */
static tsr_status after(void *mode) {
    tsr_gossip *g = mode;
    return g->comm && g->rounds % g->go.period == 0 ? start_exchange(g) : TSR_OK;
}

/* clipping: this replica's own gradient (no collective, as the rest of a gossip step) */
static tsr_status grad_sumsq(void *mode, double *sumsq) {
    tsr_gossip *g = mode;
    *sumsq = 0.0;
    if (!g->step_n) return TSR_OK; /* no sample: nothing is applied */
    return tsr_run_sumsq(&g->run, tsr_stage_grads(g->stage), g->grads, 0, g->np, sumsq);
}

static tsr_status grad_scale(void *mode, float coef) {
    tsr_gossip *g = mode;
    return tsr_optim_scale_grads(g->optim, tsr_stage_grads(g->stage), coef);
}

static const tsr_step_ops step_ops = {"", min_batch, input, stream, compute, combine, grads,
                                      decide, apply, after, NULL, grad_sumsq, grad_scale};

tsr_status tsr_gossip_step(tsr_gossip *g, const float *images, const int32_t *labels, size_t n,
                           float *loss) {
    if (!g) return TSR_ERR_INVALID_ARG;
    return tsr_run_step(&g->run, &step_ops, g, images, labels, n, loss);
}

/* ---- evaluation and parameters ---- */

static tsr_status eval_current(tsr_gossip *g, const tsr_dataset *d, double *accuracy, double *loss) {
    size_t correct = 0;
    double total = 0.0;
    TSR_TRY(tsr_stage_evaluate(g->stage, d, 0, d->count, g->probs, &correct, &total));
    double targets = (double)tsr_dataset_targets(d);
    if (accuracy) *accuracy = (double)correct / targets;
    if (loss) *loss = total / targets;
    return TSR_OK;
}

tsr_status tsr_gossip_evaluate_local(tsr_gossip *g, const tsr_dataset *d, double *accuracy,
                                     double *loss) {
    if (!g || !d) return TSR_ERR_INVALID_ARG;
    return eval_current(g, d, accuracy, loss);
}

/* Average of a device buffer over the ranks into dst (host). */
static tsr_status average_buf(tsr_gossip *g, tsr_buf *b, float *dst) {
    TSR_TRY(tsr_read_f32(b, 0, dst, g->np));
    if (!g->comm) return TSR_OK;
    tsr_allreduce_opts ao;
    tsr_allreduce_opts_init(&ao);
    ao.mode = TSR_REDUCE_AVG;
    return tsr_comm_allreduce(g->comm, dst, g->np, &ao);
}

tsr_status tsr_gossip_evaluate(tsr_gossip *g, const tsr_dataset *d, double *accuracy, double *loss) {
    if (!g || !d) return TSR_ERR_INVALID_ARG;
    if (g->go.eval_local || !g->comm) return eval_current(g, d, accuracy, loss);
    /* the average in place of this replica for the evaluation, then this replica back */
    tsr_buf *pb = tsr_stage_params(g->stage);
    TSR_TRY(tsr_read_f32(pb, 0, g->tmp, g->np));
    float *avg = tsr_malloc(g->run.ctx, (g->np ? g->np : 1) * sizeof(float));
    tsr_status s = avg ? TSR_OK : tsr_error(g->run.ctx, TSR_ERR_NO_MEMORY, "gossip: average parameters");
    s = agree(g, s, "evaluation buffer");
    if (s == TSR_OK) s = average_buf(g, pb, avg);
    if (s == TSR_OK) s = tsr_write_f32(pb, 0, avg, g->np);
    if (s == TSR_OK) s = eval_current(g, d, accuracy, loss);
    tsr_status r = tsr_write_f32(pb, 0, g->tmp, g->np);
    tsr_free(g->run.ctx, avg);
    return s != TSR_OK ? s : r;
}

tsr_status tsr_gossip_consensus(tsr_gossip *g, double *distance) {
    if (!g || !distance) return TSR_ERR_INVALID_ARG;
    *distance = 0.0;
    if (!g->comm) return TSR_OK;
    /* tmp: the average; own is busy with the exchange in flight */
    TSR_TRY(average_buf(g, tsr_stage_params(g->stage), g->tmp));
    float *mine = tsr_malloc(g->run.ctx, (g->np ? g->np : 1) * sizeof(float));
    tsr_status s = mine ? TSR_OK : tsr_error(g->run.ctx, TSR_ERR_NO_MEMORY, "gossip: consensus buffer");
    s = agree(g, s, "consensus buffer");
    if (s == TSR_OK) s = tsr_read_f32(tsr_stage_params(g->stage), 0, mine, g->np);
    double num = 0.0, den = 0.0;
    for (size_t j = 0; s == TSR_OK && j < g->np; j++) {
        double e = (double)mine[j] - (double)g->tmp[j];
        num += e * e;
        den += (double)g->tmp[j] * (double)g->tmp[j];
    }
    tsr_free(g->run.ctx, mine);
    float ratio = (float)(den > 0.0 ? num / den : num > 0.0 ? INFINITY : 0.0);
    tsr_allreduce_opts ao;
    tsr_allreduce_opts_init(&ao);
    ao.mode = TSR_REDUCE_AVG;
    if (s == TSR_OK) s = tsr_comm_allreduce(g->comm, &ratio, 1, &ao);
    if (s == TSR_OK) *distance = ratio;
    return s;
}

tsr_status tsr_gossip_get_params(tsr_gossip *g, float *dst, size_t count) {
    if (!g || (!dst && count)) return TSR_ERR_INVALID_ARG;
    if (count != g->np)
        return tsr_error(g->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu asked for", g->np, count);
    return tsr_read_f32(tsr_stage_params(g->stage), 0, dst, g->np);
}

tsr_status tsr_gossip_set_params(tsr_gossip *g, const float *src, size_t count) {
    if (!g || (!src && count)) return TSR_ERR_INVALID_ARG;
    if (count != g->np)
        return tsr_error(g->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu given", g->np, count);
    /* the exchange in flight keeps its snapshot (neighbours see the new values from the next
     * one); this replica's own term of the next mixing is the new values */
    return tsr_write_f32(tsr_stage_params(g->stage), 0, src, g->np);
}

tsr_status tsr_gossip_average_params(tsr_gossip *g, float *dst, size_t count) {
    if (!g || (!dst && count)) return TSR_ERR_INVALID_ARG;
    if (count != g->np)
        return tsr_error(g->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu asked for", g->np, count);
    return average_buf(g, tsr_stage_params(g->stage), dst);
}

/* ---- checkpoints: the average of the replicas; a load sets every replica ---- */

static size_t state_count(void *mode) { return ((tsr_gossip *)mode)->np; }
static size_t state_tensors(void *mode, const char *names[3], tsr_buf *bufs[3]) {
    tsr_gossip *g = mode;
    names[0] = "params";
    bufs[0] = tsr_stage_params(g->stage);
    return 1 + tsr_optim_state(g->optim, names + 1, bufs + 1);
}
static tsr_comm *state_comm(void *mode) { return ((tsr_gossip *)mode)->comm; }
/* rank 0's counters (a resumed run restarts its mixing schedule from this step on every rank) */
static int state_writer(void *mode) { return ((tsr_gossip *)mode)->rank == 0; }
static tsr_status gather(void *mode, size_t i, tsr_buf *buf, float *whole) {
    (void)i;
    return average_buf(mode, buf, whole);
}
static tsr_status scatter(void *mode, size_t i, tsr_buf *buf, const float *whole) {
    (void)i;
    return tsr_write_f32(buf, 0, whole, ((tsr_gossip *)mode)->np);
}
/* the exchange in flight carries the old parameters: complete it; the first step after the load
 * starts a fresh one from the loaded values */
static tsr_status before_load(void *mode) { return drain(mode); }
static void loaded(void *mode, const tsr_checkpoint *ck) {
    tsr_gossip *g = mode;
    g->rounds = ck->step;
    g->mixes = g->rounds / g->go.period + (g->rounds % g->go.period != 0);
}

static const tsr_state_ops state_ops = {"gossip", state_count, state_tensors, state_comm,
                                        state_writer, gather, scatter, before_load, loaded};

tsr_status tsr_gossip_save(tsr_gossip *g, const char *path) {
    return g && path ? tsr_run_save(&g->run, &state_ops, g, path) : TSR_ERR_INVALID_ARG;
}
tsr_status tsr_gossip_load(tsr_gossip *g, const char *path) {
    return g && path ? tsr_run_load(&g->run, &state_ops, g, path) : TSR_ERR_INVALID_ARG;
}

/* ---- accessors ---- */

uint64_t tsr_gossip_steps(const tsr_gossip *g) { return g ? g->run.steps : 0; }
uint64_t tsr_gossip_skipped(const tsr_gossip *g) { return g ? g->run.skipped : 0; }
uint64_t tsr_gossip_rounds(const tsr_gossip *g) { return g ? g->rounds : 0; }
uint64_t tsr_gossip_mixes(const tsr_gossip *g) { return g ? g->mixes : 0; }
uint64_t tsr_gossip_epoch(const tsr_gossip *g) { return g ? g->run.epoch : 0; }
uint64_t tsr_gossip_seed(const tsr_gossip *g) { return g ? g->run.seed : 0; }
void tsr_gossip_set_epoch(tsr_gossip *g, uint64_t epoch) {
    if (g) g->run.epoch = epoch;
}
float tsr_gossip_last_loss(const tsr_gossip *g) { return g ? g->run.last_loss : 0.0f; }
uint64_t tsr_gossip_bytes_sent(const tsr_gossip *g) { return g ? g->bytes_sent : 0; }

/* ---- the gossip strategy behind tsr_trainer ---- */

static tsr_gossip_options gossip_options(const tsr_trainer_options *o) {
    tsr_gossip_options go = {o->gossip_graph, o->gossip_period, o->gossip_eval_local};
    return go;
}
static tsr_status st_validate(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o) {
    (void)model;
    tsr_gossip_options go = gossip_options(o);
    return check_options(ctx, o, &go);
}
static tsr_status st_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                            void **mode) {
    tsr_gossip_options go = gossip_options(o);
    return tsr_gossip_create(ctx, model, o, &go, (tsr_gossip **)mode);
}
static void st_destroy(void *mode) { tsr_gossip_free(mode); }
static tsr_run *st_run(void *mode) { return &((tsr_gossip *)mode)->run; }
static tsr_status st_step(void *mode, const float *images, const int32_t *labels, size_t n,
                          float *loss) {
    return tsr_gossip_step(mode, images, labels, n, loss); /* this rank's own batch and loss */
}
static tsr_status st_evaluate(void *mode, const tsr_dataset *d, double *accuracy, double *loss) {
    return tsr_gossip_evaluate(mode, d, accuracy, loss); /* the average: collective */
}
static tsr_status st_get(void *mode, float *dst, size_t count) {
    return tsr_gossip_get_params(mode, dst, count); /* this rank's replica */
}
static tsr_status st_set(void *mode, const float *src, size_t count) {
    return tsr_gossip_set_params(mode, src, count);
}
static tsr_status st_grads(void *mode, float *dst, size_t count) {
    tsr_gossip *g = mode; /* this replica's own gradient (the mixing averages parameters) */
    return tsr_run_read_grads(&g->run, g->stage, dst, count);
}
static tsr_status st_save(void *mode, const char *path) { return tsr_gossip_save(mode, path); }
static tsr_status st_load(void *mode, const char *path) { return tsr_gossip_load(mode, path); }
/* every rank its own equal slice of each global batch, the same step counts */
static tsr_status st_shard(tsr_context *ctx, const tsr_trainer_options *o, size_t global_batch,
                           uint64_t seed, tsr_data_split *split, size_t *shares) {
    int size = o->comm ? tsr_comm_size(o->comm) : 1, rank = o->comm ? tsr_comm_rank(o->comm) : 0;
    if (global_batch < (size_t)size)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "gossip: global batch %zu is smaller than %d ranks",
                         global_batch, size);
    split->loader = (tsr_loader_options){global_batch / (size_t)size, seed, 1, rank, size, 1};
    split->step_batch = global_batch;
    split->step_samples = split->loader.batch * (size_t)size;
    for (int r = 0; r < size; r++) shares[r] = split->loader.batch;
    return TSR_OK;
}

const tsr_strategy tsr_strategy_gossip = {"gossip", st_validate, st_create, st_destroy, st_run,
                                          st_step, st_evaluate, st_get, st_set, st_grads, st_save, st_load,
                                          st_shard};
