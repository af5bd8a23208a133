/* Pipeline runtime: one stage per rank, micro-batches, GPipe and 1F1B schedules over
 * non-blocking point-to-point messages, re-materialisation of activations (see pipeline.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/comm/comm_internal.h"
#include "lib/train/dp.h"
#include "lib/io/checkpoint_internal.h"
#include "lib/core/internal.h"
#include "lib/model/layers.h"
#include "lib/train/optim.h"
#include "lib/train/pipeline.h"
#include "lib/model/stage.h"
#include "lib/core/timeline.h"
#include "lib/train/strategy.h"
#include "lib/train/tp.h"

/* Message tags: micro-batch (mod 4096) and direction. MPI keeps messages of one pair and tag
 * in order, and receives are posted in micro-batch order, so the modulus cannot mismatch. */
enum { DIR_ACT = 0, DIR_GRAD = 1 };
static int msg_tag(size_t k, int dir) { return (int)((k & 4095u) * 2u) + dir; }
#define TIE_TAG 8192 /* the tied table's gradients, past msg_tag's range */

typedef enum { OP_F = 0, OP_B = 1 } op_kind;
typedef struct pl_op {
    op_kind kind;
    size_t k;
} pl_op;

/* A host buffer with the request using it and the micro-batch it belongs to. */
typedef struct pl_slot {
    float *buf;
    tsr_comm_p2p *req;
    long mb;  /* -1: free */
} pl_slot;

struct tsr_pipeline {
    tsr_run run;             /* world: `all` below */
    tsr_comm *comm;          /* NULL: one stage, no messages */
    size_t *bounds, S, s, M; /* stage count, this stage, micro-batches */
    size_t *counts;          /* parameter floats of every stage */
    int schedule, recompute;
    tsr_backend *be;
    tsr_stage *stage;
    tsr_optim *optim;
    uint64_t recomputes;
    int broken;
    size_t mb_max, in_feat, out_feat, classes, positions; /* positions: labels per sample */
    size_t in_slots;         /* micro-batches in flight on this stage */
    pl_slot *in, *fsend;     /* in_slots each: received inputs (the re-materialisation store),
                                outputs being sent */
    pl_slot grecv[2], gsend[2];
    pl_op *ops;
    float *probs, *grads;    /* evaluation probabilities; host gradients for the check */
    size_t host_bytes;
    /* Hybrid (tsr_pipeline_create_replicated): this stage's copies in the other replicas
     * average its gradients through dp; `all` holds every rank of every replica (decisions,
     * checkpoints, the timeline); NULL comms: a plain pipeline (all = comm). */
    tsr_comm *rcomm, *all;
    tsr_dp *dp;
    size_t R, r;
    double loss_sum;         /* the step in progress: this stage's summed loss, samples */
    size_t step_n;
    /* A head tied to an embedding on another stage: the embedding's stage and the head's (which
     * keeps a copy of the table) add their gradients of it before each update, so both copies
     * take the same steps. tie_peer: the other stage, -1 when this stage has no part. */
    int tie_peer;
    size_t tie_off, tie_count, tie_whole; /* in this stage's grads; in the whole layout */
    float *tie_mine, *tie_theirs;
    /* Tensor parallelism (options tp_*): the model is this rank's share of a GPT and the
     * pipeline's flat layout the share's; the outside (parameters, checkpoints) sees the whole
     * model. comm then holds the ranks of this rank's tensor-parallel index, so activations
     * travel between the matching ranks of two stages' groups (each holds them whole). */
    tsr_tp tp;
};

/* ---- options ---- */

tsr_status tsr_pipeline_schedule_parse(const char *name, tsr_pipeline_schedule *out) {
    if (!name || !out) return TSR_ERR_INVALID_ARG;
    if (!strcmp(name, "gpipe")) *out = TSR_PIPELINE_GPIPE;
    else if (!strcmp(name, "1f1b")) *out = TSR_PIPELINE_1F1B;
    else return TSR_ERR_PARSE;
    return TSR_OK;
}

tsr_status tsr_pipeline_bounds_parse(tsr_context *ctx, const char *text, size_t layers,
                                     size_t *bounds, size_t max_bounds, size_t *stages) {
    if (!text || !bounds || !stages || max_bounds < 2)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_pipeline_bounds_parse: NULL argument");
    size_t n = 0, sum = 0;
    bounds[0] = 0;
    const char *p = text;
    for (;;) {
        char *end;
        if (*p < '0' || *p > '9')
            return tsr_error(ctx, TSR_ERR_PARSE, "stages '%s': expected layer counts like 3,4,2", text);
        unsigned long long v = strtoull(p, &end, 10);
        if (v == 0 || v > layers)
            return tsr_error(ctx, TSR_ERR_PARSE, "stages '%s': stage %zu has %llu layers (1..%zu)",
                             text, n, v, layers);
        if (n + 2 > max_bounds)
            return tsr_error(ctx, TSR_ERR_PARSE, "stages '%s': more than %zu stages", text,
                             max_bounds - 1);
        sum += (size_t)v;
        bounds[++n] = sum;
        if (*end == '\0') break;
        if (*end != ',') return tsr_error(ctx, TSR_ERR_PARSE, "stages '%s': unexpected '%c'", text, *end);
        p = end + 1;
    }
    if (sum != layers)
        return tsr_error(ctx, TSR_ERR_PARSE, "stages '%s' cover %zu layers, the model has %zu", text,
                         sum, layers);
    *stages = n;
    return TSR_OK;
}

tsr_status tsr_pipeline_bounds_from_plan(tsr_context *ctx, const tsr_plan *plan, size_t *bounds,
                                         size_t max_bounds, size_t *stages) {
    if (!plan || !bounds || !stages)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_pipeline_bounds_from_plan: NULL argument");
    size_t n = tsr_plan_stage_count(plan);
    if (!n || n + 1 > max_bounds)
        return tsr_error(ctx, TSR_ERR_SHAPE, "plan of %zu stages: room for %zu bounds", n, max_bounds);
    for (size_t s = 0; s < n; s++) {
        const tsr_plan_stage *st = tsr_plan_stage_at(plan, s);
        bounds[s] = st->first;
        bounds[s + 1] = st->last;
    }
    *stages = n;
    return TSR_OK;
}

/* ---- creation ---- */

static void slots_free(tsr_pipeline *p, pl_slot *sl, size_t n) {
    for (size_t i = 0; sl && i < n; i++) {
        /* a request abandoned on a broken communicator keeps its buffer: MPI may still write a
         * late message into it (tsr_comm_p2p_cancel) */
        int abandoned = sl[i].req && p->comm && p->comm->broken;
        tsr_comm_p2p_cancel(sl[i].req);
        sl[i].req = NULL;
        if (!abandoned) tsr_free(p->run.ctx, sl[i].buf);
    }
}

void tsr_pipeline_free(tsr_pipeline *p) {
    if (!p) return;
    tsr_dp_free(p->dp); /* before the stage: it restores the gradient buffer's memory */
    tsr_run_release(&p->run, 1);
    slots_free(p, p->in, p->in_slots);
    slots_free(p, p->fsend, p->in_slots);
    slots_free(p, p->grecv, 2);
    slots_free(p, p->gsend, 2);
    tsr_free(p->run.ctx, p->in);
    tsr_free(p->run.ctx, p->fsend);
    tsr_free(p->run.ctx, p->ops);
    tsr_free(p->run.ctx, p->probs);
    tsr_free(p->run.ctx, p->grads);
    tsr_optim_free(p->optim);
    tsr_stage_free(p->stage);
    tsr_backend_free(p->be);
    tsr_free(p->run.ctx, p->bounds);
    tsr_free(p->run.ctx, p->counts);
    tsr_free(p->run.ctx, p->tie_mine);
    tsr_free(p->run.ctx, p->tie_theirs);
    tsr_tp_close(&p->tp);
    tsr_free(p->run.ctx, p);
}

static tsr_status check_options(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                                const tsr_pipeline_options *po) {
    size_t layers = tsr_model_layer_count(model);
    size_t ranks = o->comm ? (size_t)tsr_comm_size(o->comm) : 1;
    TSR_TRY(tsr_run_check_options(ctx, o, "pipeline: "));
    if (o->compress != TSR_COMPRESS_NONE)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "pipeline: gradient compression %d applies to data parallelism only",
                         (int)o->compress);
    if (o->shard_optimizer > 0)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "pipeline: a sharded optimizer (shard_optimizer) applies to data parallelism only");
    if (po->schedule != TSR_PIPELINE_GPIPE && po->schedule != TSR_PIPELINE_1F1B)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "pipeline: unknown schedule %d (gpipe or 1f1b)",
                         po->schedule);
    if (po->stages != ranks)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "pipeline: %zu stages on %zu ranks (one rank per stage)", po->stages, ranks);
    if (!po->bounds)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "pipeline: no stage bounds");
    if (po->bounds[0] != 0 || po->bounds[po->stages] != layers)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "pipeline: stage bounds [%zu, %zu) do not cover the model's %zu layers",
                         po->bounds[0], po->bounds[po->stages], layers);
    for (size_t s = 0; s < po->stages; s++)
        if (po->bounds[s + 1] <= po->bounds[s])
            return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                             "pipeline: stage %zu has no layers (bounds %zu, %zu)", s, po->bounds[s],
                             po->bounds[s + 1]);
    if (!po->microbatches || po->microbatches > o->batch)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "pipeline: %zu micro-batches; 1 to the batch of %zu",
                         po->microbatches, o->batch);
    return TSR_OK;
}

static tsr_status slots_alloc(tsr_pipeline *p, pl_slot *sl, size_t n, size_t floats) {
    for (size_t i = 0; i < n; i++) {
        sl[i].mb = -1;
        sl[i].buf = tsr_malloc(p->run.ctx, (floats ? floats : 1) * sizeof(float));
        if (!sl[i].buf) return tsr_error(p->run.ctx, TSR_ERR_NO_MEMORY, "pipeline: message buffers");
        p->host_bytes += floats * sizeof(float);
    }
    return TSR_OK;
}

/* The ranks that agree on every outcome: every rank of every replica of this tensor-parallel
 * index (the run's agreement adds the group: lib/train/run.c), or the group alone. */
static tsr_comm *everyone(tsr_pipeline *p) { return p->all ? p->all : p->run.o.tp_comm; }

/* Every rank learns whether any rank failed: 1 allreduce of a flag. */
static tsr_status agree(tsr_pipeline *p, tsr_status mine, const char *what) {
    return tsr_run_agree(&p->run, everyone(p), mine, what);
}

static size_t whole_offset(const tsr_pipeline *p, size_t st);

/* Offset of layer i's first tensor in the whole model's flat layout (reverse layer order). */
static size_t layer_whole_offset(const tsr_model *m, size_t i) {
    size_t off = 0;
    for (size_t j = i + 1; j < m->count; j++) off += m->layers[j].weights + m->layers[j].biases;
    return off;
}

static size_t stage_of(const tsr_pipeline *p, size_t layer) {
    size_t st = 0;
    while (st + 1 < p->S && layer >= p->bounds[st + 1]) st++;
    return st;
}

/* The tied pair this stage takes part in, if any (one tied head per model). */
static tsr_status setup_tie(tsr_pipeline *p) {
    const tsr_model *m = p->run.model;
    p->tie_peer = -1;
    for (size_t i = 0; i < m->count; i++) {
        const tsr_layer *l = &m->layers[i];
        if (!l->tied) continue; /* a head tied to layer tied - 1 */
        size_t e = l->tied - 1, se = stage_of(p, e), sh = stage_of(p, i);
        if (se == sh || (p->s != se && p->s != sh)) continue;
        p->tie_whole = layer_whole_offset(m, e);
        p->tie_count = m->layers[e].weights;
        if (p->s == se) {
            p->tie_peer = (int)sh;
            TSR_TRY(tsr_stage_layer_params(p->stage, e, &p->tie_off, NULL, NULL, NULL));
        } else {
            tsr_stage_tied t;
            if (!tsr_stage_tied_copy(p->stage, &t))
                return tsr_error(p->run.ctx, TSR_ERR_STATE, "pipeline: stage %zu holds no copy of layer %zu",
                                 p->s, e);
            p->tie_peer = (int)se;
            p->tie_off = t.offset;
        }
        p->tie_mine = tsr_calloc(p->run.ctx, p->tie_count, sizeof *p->tie_mine);
        p->tie_theirs = tsr_calloc(p->run.ctx, p->tie_count, sizeof *p->tie_theirs);
        if (!p->tie_mine || !p->tie_theirs)
            return tsr_error(p->run.ctx, TSR_ERR_NO_MEMORY, "pipeline: the tied table's %zu gradients",
                             p->tie_count);
    }
    return TSR_OK;
}

/* Both copies' gradients of the tied table become their sum, embedding's part first on both
 * stages (the same bits on both, so both copies stay equal). */
static tsr_status sync_tie(tsr_pipeline *p) {
    if (p->tie_peer < 0 || !p->comm) return TSR_OK;
    tsr_buf *g = tsr_stage_grads(p->stage);
    size_t n = p->tie_count, bytes = n * sizeof(float);
    int lower = (int)p->s < p->tie_peer;
    TSR_TRY(tsr_read_f32(g, p->tie_off, p->tie_mine, n));
    if (lower) {
        TSR_TRY(tsr_comm_send(p->comm, p->tie_peer, TIE_TAG, p->tie_mine, bytes));
        TSR_TRY(tsr_comm_recv(p->comm, p->tie_peer, TIE_TAG, p->tie_theirs, bytes));
    } else {
        TSR_TRY(tsr_comm_recv(p->comm, p->tie_peer, TIE_TAG, p->tie_theirs, bytes));
        TSR_TRY(tsr_comm_send(p->comm, p->tie_peer, TIE_TAG, p->tie_mine, bytes));
    }
    const float *first = lower ? p->tie_mine : p->tie_theirs, *second = lower ? p->tie_theirs : p->tie_mine;
    for (size_t i = 0; i < n; i++) p->tie_mine[i] = first[i] + second[i];
    return tsr_write_f32(g, p->tie_off, p->tie_mine, n);
}

/* This stage's part of the whole state `whole` into buf: its layers' slice, and the copy of a
 * tied table. */
static tsr_status scatter_whole(tsr_pipeline *p, tsr_buf *buf, const float *whole) {
    size_t mine = p->counts[p->s];
    if (mine) TSR_TRY(tsr_write_f32(buf, 0, whole + whole_offset(p, p->s), mine));
    tsr_stage_tied t;
    if (tsr_stage_tied_copy(p->stage, &t))
        TSR_TRY(tsr_write_f32(buf, t.offset, whole + layer_whole_offset(p->run.model, t.layer), t.count));
    return TSR_OK;
}

static tsr_status setup(tsr_pipeline *p, const tsr_trainer_options *o) {
    tsr_context *ctx = p->run.ctx;
    size_t first = p->bounds[p->s], last = p->bounds[p->s + 1];
    tsr_stage_options so = {first, last, p->mb_max, p->s > 0, o->precision, 0};
    TSR_TRY(tsr_run_open_stage(&p->run, &so, &p->be, &p->stage, &p->optim));
    if (o->tp_comm) { /* the whole model's initial values, so the run starts as a single one */
        TSR_TRY(tsr_tp_open(&p->tp, ctx, p->run.model, o));
        tsr_stage_set_tp(p->stage, p->tp.comm);
        TSR_TRY(tsr_tp_initial(&p->tp, o));
    }
    const tsr_layer *l0 = &p->run.model->layers[first], *l1 = &p->run.model->layers[last - 1];
    p->in_feat = tsr_layer_in_size(l0);
    p->out_feat = tsr_layer_out_size(l1);
    p->classes = tsr_model_get_input(p->run.model).classes;
    p->positions = tsr_model_positions(p->run.model);
    TSR_TRY(setup_tie(p));
    if (p->tp.comm) TSR_TRY(scatter_whole(p, tsr_stage_params(p->stage), p->tp.mine_buf));
    /* in flight: GPipe holds every micro-batch; 1F1B at stage s warms up with S-s-1 forwards */
    p->in_slots = p->schedule == TSR_PIPELINE_GPIPE ? p->M
                  : (p->S - p->s < p->M ? p->S - p->s : p->M);
    if (!p->recompute) TSR_TRY(tsr_stage_set_slots(p->stage, p->in_slots));
    int first_stage = p->s == 0, last_stage = p->s + 1 == p->S;
    p->in = tsr_calloc(ctx, p->in_slots, sizeof *p->in);
    p->fsend = tsr_calloc(ctx, p->in_slots, sizeof *p->fsend);
    p->ops = tsr_calloc(ctx, 2 * p->M, sizeof *p->ops);
    p->probs = tsr_calloc(ctx, p->mb_max * p->positions * p->classes, sizeof *p->probs);
    /* the non-finite scan reads device gradients to the host (host backend: in place) */
    p->grads = tsr_calloc(ctx, tsr_stage_param_count(p->stage) + 1, sizeof *p->grads);
    if (!p->in || !p->fsend || !p->ops || !p->probs || !p->grads)
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "pipeline: buffers");
    for (size_t i = 0; i < p->in_slots; i++) p->in[i].mb = p->fsend[i].mb = -1;
    p->grecv[0].mb = p->grecv[1].mb = p->gsend[0].mb = p->gsend[1].mb = -1;
    size_t in_n = p->mb_max * p->in_feat, out_n = p->mb_max * p->out_feat;
    if (!first_stage) {
        TSR_TRY(slots_alloc(p, p->in, p->in_slots, in_n));
        TSR_TRY(slots_alloc(p, p->gsend, 2, in_n));
    }
    if (!last_stage) {
        TSR_TRY(slots_alloc(p, p->fsend, p->in_slots, out_n));
        TSR_TRY(slots_alloc(p, p->grecv, 2, out_n));
    }
    return TSR_OK;
}

static tsr_status create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                         const tsr_pipeline_options *po, tsr_comm *replicas, tsr_comm *world,
                         tsr_pipeline **out) {
    if (!ctx || !model || !o || !po || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_pipeline_create: NULL argument");
    *out = NULL;
    TSR_TRY(tsr_model_check(model));
    TSR_TRY(check_options(ctx, model, o, po));
    tsr_pipeline *p = tsr_calloc(ctx, 1, sizeof *p);
    if (!p) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "pipeline");
    p->comm = o->comm && tsr_comm_size(o->comm) > 1 ? o->comm : NULL;
    p->rcomm = replicas && tsr_comm_size(replicas) > 1 ? replicas : NULL;
    p->all = world && tsr_comm_size(world) > 1 ? world : p->comm;
    p->R = p->rcomm ? (size_t)tsr_comm_size(p->rcomm) : 1;
    p->r = p->rcomm ? (size_t)tsr_comm_rank(p->rcomm) : 0;
    p->S = po->stages;
    p->s = o->comm ? (size_t)tsr_comm_rank(o->comm) : 0;
    p->M = po->microbatches;
    p->schedule = po->schedule;
    p->recompute = po->recompute != 0;
    p->mb_max = (o->batch + p->M - 1) / p->M;
    p->run.ctx = ctx; /* freeable before the run is initialised */
    tsr_status s = tsr_run_init(&p->run, ctx, model, o, p->all,
                                p->all ? tsr_comm_rank(p->all) : (int)p->s);
    p->bounds = tsr_calloc(ctx, p->S + 1, sizeof *p->bounds);
    p->counts = tsr_calloc(ctx, p->S, sizeof *p->counts);
    if (s == TSR_OK && (!p->bounds || !p->counts)) s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "pipeline: stage table");
    if (s == TSR_OK) {
        memcpy(p->bounds, po->bounds, (p->S + 1) * sizeof *p->bounds);
        for (size_t st = 0; st < p->S; st++)
            for (size_t i = p->bounds[st]; i < p->bounds[st + 1]; i++)
                p->counts[st] += model->layers[i].weights + model->layers[i].biases;
        s = setup(p, o);
    }
    s = agree(p, s, "pipeline creation");
    if (s == TSR_OK && p->rcomm) {
        /* the replicas of this stage average its gradients: data parallelism on rcomm (its
         * bucket hook runs in the last micro-batch's backward); sharding stays off */
        tsr_trainer_options dpo = *o;
        dpo.comm = p->rcomm;
        dpo.shard_optimizer = -1;
        s = tsr_dp_create(ctx, model, p->stage, &dpo, p->run.tl, &p->dp);
        s = agree(p, s, "replica gradient averaging");
    }
    if (s != TSR_OK) {
        p->run.ctx = ctx;
        tsr_run_release(&p->run, 0); /* nothing collective: the other ranks failed too */
        tsr_pipeline_free(p);
        return s;
    }
    *out = p;
    return TSR_OK;
}

tsr_status tsr_pipeline_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                               const tsr_pipeline_options *po, tsr_pipeline **out) {
    return create(ctx, model, o, po, NULL, NULL, out);
}

tsr_status tsr_pipeline_create_replicated(tsr_context *ctx, const tsr_model *model,
                                          const tsr_trainer_options *o,
                                          const tsr_pipeline_options *po, tsr_comm *replicas,
                                          tsr_comm *world, tsr_pipeline **out) {
    return create(ctx, model, o, po, replicas, world, out);
}

/* ---- step ---- */

static void mb_range(size_t n, size_t M, size_t k, size_t *off, size_t *m) {
    tsr_comm_split_range(n, M, k, off, m);
}

/* Seed of micro-batch k's dropout masks: the step's seed itself for k = 0 (so M = 1 matches
 * the single-process trainer), mixed with k otherwise. */
static uint64_t mb_seed(uint64_t step_seed, size_t k) {
    return k ? step_seed ^ (0xD6E8FEB86659FD93ull * (uint64_t)k) : step_seed;
}

static size_t build_ops(tsr_pipeline *p, size_t M) {
    size_t n = 0;
    if (p->schedule == TSR_PIPELINE_GPIPE) {
        for (size_t k = 0; k < M; k++) p->ops[n++] = (pl_op){OP_F, k};
        for (size_t k = 0; k < M; k++) p->ops[n++] = (pl_op){OP_B, k};
        return n;
    }
    size_t warm = p->S - p->s - 1 < M ? p->S - p->s - 1 : M;
    for (size_t k = 0; k < warm; k++) p->ops[n++] = (pl_op){OP_F, k};
    for (size_t i = 0; i + warm < M; i++) {
        p->ops[n++] = (pl_op){OP_F, warm + i};
        p->ops[n++] = (pl_op){OP_B, i};
    }
    for (size_t k = M - warm; k < M; k++) p->ops[n++] = (pl_op){OP_B, k};
    return n;
}

typedef struct step_state {
    size_t n, M;
    size_t next_in, next_grad;  /* next micro-batch whose receive is not posted yet */
    long held;                  /* micro-batch whose activations the stage holds, -1: none */
} step_state;

/* Posts the receives whose buffers are free, in micro-batch order. */
static tsr_status post_receives(tsr_pipeline *p, step_state *ss) {
    int first_stage = p->s == 0, last_stage = p->s + 1 == p->S;
    while (!first_stage && ss->next_in < ss->M) {
        pl_slot *sl = &p->in[ss->next_in % p->in_slots];
        if (sl->mb >= 0) break;
        size_t off, m;
        mb_range(ss->n, ss->M, ss->next_in, &off, &m);
        TSR_TRY(tsr_comm_irecv(p->comm, (int)p->s - 1, msg_tag(ss->next_in, DIR_ACT), sl->buf,
                               m * p->in_feat * sizeof(float), &sl->req));
        sl->mb = (long)ss->next_in++;
    }
    while (!last_stage && ss->next_grad < ss->M) {
        pl_slot *sl = &p->grecv[ss->next_grad % 2];
        if (sl->mb >= 0) break;
        size_t off, m;
        mb_range(ss->n, ss->M, ss->next_grad, &off, &m);
        TSR_TRY(tsr_comm_irecv(p->comm, (int)p->s + 1, msg_tag(ss->next_grad, DIR_GRAD), sl->buf,
                               m * p->out_feat * sizeof(float), &sl->req));
        sl->mb = (long)ss->next_grad++;
    }
    return TSR_OK;
}

/* Waits for a slot's request; `what` names the timeline event. */
static tsr_status slot_wait(tsr_pipeline *p, pl_slot *sl, const char *what, size_t k) {
    if (!sl->req) return TSR_OK;
    double t0 = tsr_timeline_now(p->run.tl);
    tsr_status s = tsr_comm_p2p_wait(sl->req);
    sl->req = NULL;
    TSR_TRY(s);
    char name[48];
    snprintf(name, sizeof name, "%s %zu", what, k);
    return tsr_timeline_event(p->run.tl, name, TSR_TRACK_COMM, t0, tsr_timeline_now(p->run.tl));
}

/* Writes micro-batch k's input (and labels on the last stage) into the stage. */
static tsr_status load_input(tsr_pipeline *p, const float *images, const int32_t *labels, size_t off,
                             size_t m, size_t k) {
    tsr_ref x = tsr_stage_input(p->stage);
    const float *src = p->s == 0 ? images + off * p->in_feat : p->in[k % p->in_slots].buf;
    TSR_TRY(tsr_ref_write(x, TSR_DTYPE_F32, src, m * p->in_feat));
    if (p->s + 1 == p->S) {
        tsr_ref y = tsr_stage_labels(p->stage);
        TSR_TRY(tsr_ref_write(y, TSR_DTYPE_I32, labels + off * p->positions, m * p->positions));
    }
    return TSR_OK;
}

/* Activation set of micro-batch k (one set when re-materialising). */
static tsr_status select_slot(tsr_pipeline *p, size_t k) {
    return tsr_stage_select(p->stage, p->recompute ? 0 : k % p->in_slots);
}

static tsr_status run_forward(tsr_pipeline *p, step_state *ss, const float *images,
                              const int32_t *labels, uint64_t seed, size_t k, double *loss_sum) {
    size_t off, m;
    mb_range(ss->n, ss->M, k, &off, &m);
    pl_slot *in = p->s > 0 ? &p->in[k % p->in_slots] : NULL;
    if (in) {
        if (in->mb != (long)k)
            return tsr_error(p->run.ctx, TSR_ERR_INTERNAL, "pipeline: input of micro-batch %zu not posted", k);
        TSR_TRY(slot_wait(p, in, "recv act", k));
    }
    TSR_TRY(select_slot(p, k));
    TSR_TRY(load_input(p, images, labels, off, m, k));
    double t0 = tsr_timeline_now(p->run.tl);
    float l = 0.0f;
    int last = p->s + 1 == p->S;
    TSR_TRY(tsr_stage_forward(p->stage, m, 1, mb_seed(seed, k), last ? &l : NULL));
    ss->held = (long)k;
    if (last) *loss_sum += (double)l * (double)m;
    char name[32];
    snprintf(name, sizeof name, "forward %zu", k);
    TSR_TRY(tsr_timeline_event(p->run.tl, name, TSR_TRACK_COMPUTE, t0, tsr_timeline_now(p->run.tl)));
    if (last) return TSR_OK;
    pl_slot *out = &p->fsend[k % p->in_slots];
    TSR_TRY(slot_wait(p, out, "send act", (size_t)out->mb)); /* normally done long ago */
    tsr_ref y = tsr_stage_output(p->stage);
    TSR_TRY(tsr_ref_read(y, TSR_DTYPE_F32, out->buf, m * p->out_feat));
    out->mb = (long)k;
    return tsr_comm_isend(p->comm, (int)p->s + 1, msg_tag(k, DIR_ACT), out->buf,
                          m * p->out_feat * sizeof(float), &out->req);
}

static tsr_status run_backward(tsr_pipeline *p, step_state *ss, const float *images,
                               const int32_t *labels, uint64_t seed, size_t k) {
    size_t off, m;
    mb_range(ss->n, ss->M, k, &off, &m);
    int last = p->s + 1 == p->S;
    if (!last) {
        pl_slot *g = &p->grecv[k % 2];
        if (g->mb != (long)k)
            return tsr_error(p->run.ctx, TSR_ERR_INTERNAL, "pipeline: gradient of micro-batch %zu not posted", k);
        TSR_TRY(slot_wait(p, g, "recv grad", k));
        /* the next stage has run its backward of k, so it holds our output of k: that send is
         * complete (or completes now) and its buffer is free */
        pl_slot *out = &p->fsend[k % p->in_slots];
        TSR_TRY(slot_wait(p, out, "send act", k));
        out->mb = -1;
    }
    TSR_TRY(select_slot(p, k));
    if (p->recompute && ss->held != (long)k) { /* re-materialise micro-batch k's activations */
        double t0 = tsr_timeline_now(p->run.tl);
        TSR_TRY(load_input(p, images, labels, off, m, k));
        TSR_TRY(tsr_stage_forward(p->stage, m, 1, mb_seed(seed, k), NULL));
        p->recomputes++;
        char name[32];
        snprintf(name, sizeof name, "recompute %zu", k);
        TSR_TRY(tsr_timeline_event(p->run.tl, name, TSR_TRACK_COMPUTE, t0, tsr_timeline_now(p->run.tl)));
    }
    if (!last) { /* written after the re-materialisation: forward does not touch it, but
                    keep the gradient beside the activations it belongs to */
        tsr_ref dy = tsr_stage_output_grad(p->stage);
        pl_slot *g = &p->grecv[k % 2];
        TSR_TRY(tsr_ref_write(dy, TSR_DTYPE_F32, g->buf, m * p->out_feat));
        g->mb = -1;
    }
    double t0 = tsr_timeline_now(p->run.tl);
    /* hybrid: the last micro-batch's backward makes each layer's gradients final; the
     * replicas' allreduce of every bucket starts from there, overlapping the rest */
    int hook = p->dp && k + 1 == ss->M;
    if (hook) tsr_stage_set_hook(p->stage, tsr_dp_hook, p->dp);
    tsr_status bs = tsr_stage_backward(p->stage, m, k > 0);
    if (hook) tsr_stage_set_hook(p->stage, NULL, NULL);
    TSR_TRY(bs);
    ss->held = -1; /* backward overwrites im2col columns with their gradients */
    char name[32];
    snprintf(name, sizeof name, "backward %zu", k);
    TSR_TRY(tsr_timeline_event(p->run.tl, name, TSR_TRACK_COMPUTE, t0, tsr_timeline_now(p->run.tl)));
    if (p->s > 0) {
        p->in[k % p->in_slots].mb = -1; /* its input is no longer needed */
        pl_slot *gs = &p->gsend[k % 2];
        TSR_TRY(slot_wait(p, gs, "send grad", (size_t)gs->mb));
        tsr_ref dx = tsr_stage_input_grad(p->stage);
        TSR_TRY(tsr_ref_read(dx, TSR_DTYPE_F32, gs->buf, m * p->in_feat));
        gs->mb = (long)k;
        TSR_TRY(tsr_comm_isend(p->comm, (int)p->s - 1, msg_tag(k, DIR_GRAD), gs->buf,
                               m * p->in_feat * sizeof(float), &gs->req));
    }
    return TSR_OK;
}

/* After an error inside a step the ranks' messages are out of step: cancel what is pending
 * and refuse further steps. */
static tsr_status step_failed(tsr_pipeline *p, tsr_status s) {
    pl_slot *groups[4] = {p->in, p->fsend, p->grecv, p->gsend};
    size_t counts[4] = {p->in_slots, p->in_slots, 2, 2};
    for (int g = 0; g < 4; g++)
        for (size_t i = 0; groups[g] && i < counts[g]; i++) {
            tsr_comm_p2p_cancel(groups[g][i].req);
            groups[g][i].req = NULL;
            groups[g][i].mb = -1;
        }
    p->broken = 1;
    return s;
}

/* ---- the step's parts (the loop is tsr_run_step) ---- */

static size_t min_batch(void *mode) {
    (void)mode;
    return 1;
}
/* replicas draw their own dropout masks (replica 0 those of the plain pipeline) */
static uint64_t stream(void *mode) { return (uint64_t)((tsr_pipeline *)mode)->r; }

/* the schedule's forwards and backwards over the micro-batches, the messages between stages */
static tsr_status compute(void *mode, const float *images, const int32_t *labels, size_t n,
                          uint64_t seed, float *loss, int *early) {
    tsr_pipeline *p = mode;
    (void)loss, (void)early;
    if (p->broken)
        return tsr_error(p->run.ctx, TSR_ERR_STATE, "pipeline: an earlier step failed mid-way");
    step_state ss = {n, p->M < n ? p->M : n, 0, 0, -1};
    p->step_n = n;
    p->loss_sum = 0.0;
    if (p->s + 1 == p->S) tsr_stage_set_loss_scale(p->stage, 1.0f / (float)(n * p->positions));
    /* hybrid: the replicas' sample counts weight their mean gradients (arms the bucket hook) */
    if (p->dp) TSR_TRY(tsr_dp_begin(p->dp, n, 0.0f, NULL, NULL)); /* stop: in decide */
    size_t nops = build_ops(p, ss.M);
    tsr_status s = post_receives(p, &ss);
    for (size_t i = 0; i < nops && s == TSR_OK; i++) {
        const pl_op *op = &p->ops[i];
        s = op->kind == OP_F ? run_forward(p, &ss, images, labels, seed, op->k, &p->loss_sum)
                             : run_backward(p, &ss, images, labels, seed, op->k);
        if (s == TSR_OK) s = post_receives(p, &ss);
    }
    for (int i = 0; i < 2 && s == TSR_OK; i++) {
        s = slot_wait(p, &p->gsend[i], "send grad", (size_t)p->gsend[i].mb);
        p->gsend[i].mb = -1;
    }
    return s;
}

/* hybrid: the replicas' mean gradient of this stage; then a tied table's two copies agree */
static tsr_status combine(void *mode, size_t n, float *loss) {
    tsr_pipeline *p = mode;
    (void)n, (void)loss;
    if (p->dp) TSR_TRY(tsr_dp_finish(p->dp));
    return sync_tie(p);
}

static int grads(void *mode, float loss, tsr_buf **g, float **scratch, size_t *lo, size_t *hi,
                 size_t *np) {
    tsr_pipeline *p = mode;
    (void)loss;
    if (!p->run.check_grads) return 0;
    *g = tsr_stage_grads(p->stage);
    *scratch = p->grads;
    *lo = 0, *hi = *np = tsr_stage_param_count(p->stage);
    return 1;
}

/* one allreduce of the loss and this stage's flag over every rank (hybrid: of every replica) */
static tsr_status decide(void *mode, float *loss, int early, size_t bad, float value, size_t np,
                         int *skip, char *why, size_t size) {
    tsr_pipeline *p = mode;
    (void)early;
    int last = p->s + 1 == p->S;
    size_t n = p->step_n;
    /* the mean in double, rounded once: with one micro-batch it is the stage's own loss */
    /* loss, non-finite flag, hybrid's sample count, the stop request (run.h) */
    float shared[4] = {last ? (float)(p->loss_sum / (double)n) : 0.0f, bad < np ? 1.0f : 0.0f, 0.0f,
                       p->run.stop ? 1.0f : 0.0f};
    if (p->rcomm) { /* hybrid: every rank of every replica; the loss is the global batch's */
        shared[0] = last ? (float)p->loss_sum : 0.0f;
        shared[2] = last ? (float)n : 0.0f;
        TSR_TRY(tsr_comm_allreduce(p->all, shared, 4, NULL));
        shared[0] /= shared[2];
    } else if (p->comm) {
        TSR_TRY(tsr_comm_allreduce(p->comm, shared, 4, NULL));
    }
    /* tensor parallel: each rank scanned its own share; the group stops and skips together */
    int others_bad = shared[1] > 0, stop = shared[3] > 0;
    TSR_TRY(tsr_tp_any(&p->tp, &others_bad));
    TSR_TRY(tsr_tp_any(&p->tp, &stop));
    p->run.stop = stop;
    *loss = shared[0];
    *skip = !isfinite(*loss) || others_bad;
    if (bad < np)
        snprintf(why, size, "gradient %zu of stage %zu's %zu is %g", bad, p->s, np, (double)value);
    else if (others_bad)
        snprintf(why, size, "a gradient of another stage or tensor-parallel rank is not finite");
    else
        snprintf(why, size, "loss is %g", (double)*loss);
    return TSR_OK;
}

static tsr_status apply(void *mode, float lr, int *applied) {
    tsr_pipeline *p = mode;
    *applied = 1;
    return tsr_optim_update(p->optim, tsr_stage_params(p->stage), tsr_stage_grads(p->stage), lr,
                            p->run.steps);
}

static tsr_status failed(void *mode, tsr_status s) { return step_failed(mode, s); }

/* the stages' partial sums of squares over this replica's pipeline (hybrid: every replica
 * holds the same averaged gradients, so each sums its own pipeline); a tied table's copy on
 * the head's stage holds the same gradient as the embedding's stage: counted there only */
static tsr_status gather_outside(tsr_pipeline *p, tsr_buf *mine, float *dst);
static tsr_status grad_sumsq(void *mode, double *sumsq) {
    tsr_pipeline *p = mode;
    if (p->tp.comm) { /* the whole model's gradient on every rank (split and replicated tensors
                       * each once, exactly: the rest of the gather is zeros); only when clipping */
        TSR_TRY(gather_outside(p, tsr_stage_grads(p->stage), p->tp.whole_buf));
        *sumsq = tsr_sumsq_f32(p->tp.whole_buf, p->tp.nwhole);
        return TSR_OK;
    }
    tsr_stage_tied tied;
    size_t np = tsr_stage_param_count(p->stage);
    if (tsr_stage_tied_copy(p->stage, &tied)) np = tied.offset; /* the copy comes last */
    TSR_TRY(tsr_run_sumsq(&p->run, tsr_stage_grads(p->stage), p->grads, 0, np, sumsq));
    return tsr_run_sum_over(&p->run, p->comm, sumsq, 1);
}

static tsr_status grad_scale(void *mode, float coef) {
    tsr_pipeline *p = mode;
    return tsr_optim_scale_grads(p->optim, tsr_stage_grads(p->stage), coef);
}

static const tsr_step_ops step_ops = {"pipeline: ", min_batch, NULL, stream, compute, combine,
                                      grads, decide, apply, NULL, failed, grad_sumsq, grad_scale};

tsr_status tsr_pipeline_step(tsr_pipeline *p, const float *images, const int32_t *labels, size_t n,
                             float *loss) {
    if (!p) return TSR_ERR_INVALID_ARG;
    return tsr_run_step(&p->run, &step_ops, p, images, labels, n, loss);
}

/* ---- evaluation ---- */

tsr_status tsr_pipeline_evaluate(tsr_pipeline *p, const tsr_dataset *d, double *accuracy,
                                 double *loss) {
    if (!p || !d) return TSR_ERR_INVALID_ARG;
    TSR_TRY(tsr_stage_check_dataset(p->run.ctx, p->run.model, d, 0, d->count));
    if (p->broken)
        return tsr_error(p->run.ctx, TSR_ERR_STATE, "pipeline: an earlier step failed mid-way");
    int last = p->s + 1 == p->S;
    double res[2] = {0.0, 0.0}; /* correct, loss sum */
    size_t correct = 0;
    TSR_TRY(tsr_stage_select(p->stage, 0));
    tsr_status s = TSR_OK;
    size_t lo = 0, cnt = d->count; /* hybrid: replica r takes its slice of the data set */
    if (p->rcomm) tsr_comm_split_range(d->count, p->R, p->r, &lo, &cnt);
    for (size_t i = lo; i < lo + cnt && s == TSR_OK; i += p->mb_max) {
        size_t m = lo + cnt - i < p->mb_max ? lo + cnt - i : p->mb_max;
        tsr_ref x = tsr_stage_input(p->stage);
        if (p->s > 0) {
            s = tsr_comm_recv(p->comm, (int)p->s - 1, msg_tag(0, DIR_ACT), p->in[0].buf,
                              m * p->in_feat * sizeof(float));
            if (s == TSR_OK) s = tsr_ref_write(x, TSR_DTYPE_F32, p->in[0].buf, m * p->in_feat);
            if (s == TSR_OK && last)
                s = tsr_ref_write(tsr_stage_labels(p->stage), TSR_DTYPE_I32, d->labels + i * p->positions,
                                  m * p->positions);
        } else {
            s = tsr_stage_upload_samples(p->stage, d, i, m);
        }
        float l = 0.0f;
        if (s == TSR_OK) s = tsr_stage_forward(p->stage, m, 0, 0, last ? &l : NULL);
        if (s == TSR_OK && !last) {
            tsr_ref y = tsr_stage_output(p->stage);
            s = tsr_ref_read(y, TSR_DTYPE_F32, p->fsend[0].buf, m * p->out_feat);
            if (s == TSR_OK)
                s = tsr_comm_send(p->comm, (int)p->s + 1, msg_tag(0, DIR_ACT), p->fsend[0].buf,
                                  m * p->out_feat * sizeof(float));
        }
        if (s == TSR_OK && last) {
            s = tsr_stage_score_last(p->stage, m, d->labels + i * p->positions, l, p->probs, &correct, &res[1]);
        }
    }
    if (s != TSR_OK) return step_failed(p, s);
    res[0] = (double)correct;
    if (p->comm) { /* the last stage's figures to every rank */
        size_t *bytes = tsr_calloc(p->run.ctx, p->S, sizeof *bytes);
        if (!bytes) return tsr_error(p->run.ctx, TSR_ERR_NO_MEMORY, "pipeline: evaluation");
        bytes[p->S - 1] = sizeof res;
        double got[2];
        s = tsr_comm_allgatherv(p->comm, last ? res : NULL, got, bytes);
        tsr_free(p->run.ctx, bytes);
        if (s != TSR_OK) return step_failed(p, s);
        memcpy(res, got, sizeof res);
    }
    if (p->rcomm) { /* the replicas' sums, added in replica order: the same on every rank */
        size_t *bytes = tsr_calloc(p->run.ctx, p->R, sizeof *bytes);
        double *got = tsr_calloc(p->run.ctx, 2 * p->R, sizeof *got);
        if (!bytes || !got) s = tsr_error(p->run.ctx, TSR_ERR_NO_MEMORY, "pipeline: evaluation");
        for (size_t q = 0; s == TSR_OK && q < p->R; q++) bytes[q] = sizeof res;
        if (s == TSR_OK) s = tsr_comm_allgatherv(p->rcomm, res, got, bytes);
        if (s == TSR_OK) {
            res[0] = res[1] = 0.0;
            for (size_t q = 0; q < p->R; q++) {
                res[0] += got[2 * q];
                res[1] += got[2 * q + 1];
            }
        }
        tsr_free(p->run.ctx, bytes);
        tsr_free(p->run.ctx, got);
        if (s != TSR_OK) return step_failed(p, s);
    }
    double targets = (double)tsr_dataset_targets(d);
    if (accuracy) *accuracy = res[0] / targets;
    if (loss) *loss = res[1] / targets;
    return TSR_OK;
}

/* ---- parameters and checkpoints ---- */

/* Offset of stage st's block in the whole model's layout: gradients and parameters are in
 * reverse layer order, so the last stage's block comes first. */
static size_t whole_offset(const tsr_pipeline *p, size_t st) {
    size_t off = 0;
    for (size_t t = st + 1; t < p->S; t++) off += p->counts[t];
    return off;
}

static size_t whole_count(const tsr_pipeline *p) {
    size_t n = 0;
    for (size_t t = 0; t < p->S; t++) n += p->counts[t];
    return n;
}

/* dst[whole_count] = every stage's `mine` buffer, on every rank. */
static tsr_status gather_whole(tsr_pipeline *p, tsr_buf *mine, float *dst) {
    size_t n = p->counts[p->s], off = whole_offset(p, p->s);
    if (n) TSR_TRY(tsr_read_f32(mine, 0, dst + off, n));
    if (!p->comm) return TSR_OK;
    size_t total = whole_count(p);
    size_t *bytes = tsr_calloc(p->run.ctx, p->S, sizeof *bytes);
    float *tmp = tsr_calloc(p->run.ctx, total + 1, sizeof *tmp);
    tsr_status s = TSR_OK;
    if (!bytes || !tmp) s = tsr_error(p->run.ctx, TSR_ERR_NO_MEMORY, "pipeline: gathering %zu parameters", total);
    for (size_t t = 0; s == TSR_OK && t < p->S; t++) bytes[t] = p->counts[t] * sizeof(float);
    /* rank order is stage order: rank t's block lands after those of ranks < t */
    if (s == TSR_OK) s = tsr_comm_allgatherv(p->comm, dst + off, tmp, bytes);
    for (size_t t = 0, at = 0; s == TSR_OK && t < p->S; at += p->counts[t], t++)
        memcpy(dst + whole_offset(p, t), tmp + at, p->counts[t] * sizeof(float));
    tsr_free(p->run.ctx, bytes);
    tsr_free(p->run.ctx, tmp);
    return s;
}

/* The parameter count the outside sees: the whole model's with tensor parallelism. */
static size_t outside_count(const tsr_pipeline *p) { return p->tp.comm ? p->tp.nwhole : whole_count(p); }

/* dst[outside_count] = every stage's (and tensor-parallel rank's) `mine`, on every rank. */
static tsr_status gather_outside(tsr_pipeline *p, tsr_buf *mine, float *dst) {
    if (!p->tp.comm) return gather_whole(p, mine, dst);
    TSR_TRY(gather_whole(p, mine, p->tp.mine_buf));
    return tsr_tp_gather(&p->tp, p->tp.mine_buf, dst);
}

static tsr_status scatter_outside(tsr_pipeline *p, tsr_buf *buf, const float *src) {
    if (!p->tp.comm) return scatter_whole(p, buf, src);
    TSR_TRY(tsr_tp_scatter(&p->tp, src, p->tp.mine_buf));
    return scatter_whole(p, buf, p->tp.mine_buf);
}

tsr_status tsr_pipeline_get_params(tsr_pipeline *p, float *dst, size_t count) {
    if (!p || (!dst && count)) return TSR_ERR_INVALID_ARG;
    size_t n = outside_count(p);
    if (count != n)
        return tsr_error(p->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu asked for", n, count);
    return gather_outside(p, tsr_stage_params(p->stage), dst);
}

tsr_status tsr_pipeline_get_grads(tsr_pipeline *p, float *dst, size_t count) {
    if (!p || (!dst && count)) return TSR_ERR_INVALID_ARG;
    size_t mine = p->counts[p->s];
    if (count != mine)
        return tsr_error(p->run.ctx, TSR_ERR_SHAPE, "pipeline: stage %zu has %zu parameters, %zu gradients "
                         "asked for", p->s, mine, count);
    if (!p->run.has_grads)
        return tsr_error(p->run.ctx, TSR_ERR_STATE, "no step has computed gradients yet");
    return mine ? tsr_ref_read(tsr_ref_at(tsr_stage_grads(p->stage), 0), TSR_DTYPE_F32, dst, mine) : TSR_OK;
}

tsr_status tsr_pipeline_set_params(tsr_pipeline *p, const float *src, size_t count) {
    if (!p || (!src && count)) return TSR_ERR_INVALID_ARG;
    size_t n = outside_count(p);
    if (count != n)
        return tsr_error(p->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu given", n, count);
    return scatter_outside(p, tsr_stage_params(p->stage), src);
}

/* ---- checkpoints: every stage's block gathered; a load takes this stage's ---- */

static size_t state_count(void *mode) { return outside_count(mode); }
static size_t state_tensors(void *mode, const char *names[3], tsr_buf *bufs[3]) {
    tsr_pipeline *p = mode;
    names[0] = "params";
    bufs[0] = tsr_stage_params(p->stage);
    return 1 + tsr_optim_state(p->optim, names + 1, bufs + 1);
}
static tsr_comm *state_comm(void *mode) { return everyone(mode); }
/* replicas hold the same state: replica 0's first stage (rank 0 of all; of its
 * tensor-parallel group) writes */
static int state_writer(void *mode) {
    tsr_pipeline *p = mode;
    return p->s == 0 && p->r == 0 && (!p->tp.comm || tsr_comm_rank(p->tp.comm) == 0);
}
static tsr_status gather(void *mode, size_t i, tsr_buf *buf, float *whole) {
    (void)i;
    return gather_outside(mode, buf, whole);
}
static tsr_status scatter(void *mode, size_t i, tsr_buf *buf, const float *whole) {
    (void)i;
    return scatter_outside(mode, buf, whole);
}

static const tsr_state_ops state_ops = {"the pipeline", state_count, state_tensors, state_comm,
                                        state_writer, gather, scatter, NULL, NULL};

tsr_status tsr_pipeline_save(tsr_pipeline *p, const char *path) {
    return p && path ? tsr_run_save(&p->run, &state_ops, p, path) : TSR_ERR_INVALID_ARG;
}
tsr_status tsr_pipeline_load(tsr_pipeline *p, const char *path) {
    return p && path ? tsr_run_load(&p->run, &state_ops, p, path) : TSR_ERR_INVALID_ARG;
}

/* ---- accessors ---- */

uint64_t tsr_pipeline_steps(const tsr_pipeline *p) { return p ? p->run.steps : 0; }
uint64_t tsr_pipeline_skipped(const tsr_pipeline *p) { return p ? p->run.skipped : 0; }
uint64_t tsr_pipeline_epoch(const tsr_pipeline *p) { return p ? p->run.epoch : 0; }
uint64_t tsr_pipeline_seed(const tsr_pipeline *p) { return p ? p->run.seed : 0; }
void tsr_pipeline_set_epoch(tsr_pipeline *p, uint64_t epoch) {
    if (p) p->run.epoch = epoch;
}
uint64_t tsr_pipeline_recomputes(const tsr_pipeline *p) { return p ? p->recomputes : 0; }
size_t tsr_pipeline_host_bytes(const tsr_pipeline *p) { return p ? p->host_bytes : 0; }
size_t tsr_pipeline_act_bytes(const tsr_pipeline *p) {
    return p ? tsr_stage_act_bytes(p->stage) * (p->recompute ? 1 : p->in_slots) : 0;
}

void tsr_pipeline_stage_range(const tsr_pipeline *p, size_t *first, size_t *last, size_t *params) {
    if (!p) return;
    if (first) *first = p->bounds[p->s];
    if (last) *last = p->bounds[p->s + 1];
    if (params) *params = p->counts[p->s];
}

/* ---- the pipeline strategy behind tsr_trainer ---- */

tsr_run *tsr_pipeline_run(tsr_pipeline *p) { return p ? &p->run : NULL; }

/* 1 when the model may be cut before layer k: no layer from k on reads a tensor made before
 * layer k - 1 (a residual's other input), so a stage needs only the previous stage's output. */
static int cut_ok(const tsr_model *m, size_t k) {
    for (size_t j = k; j < m->count; j++)
        for (size_t x = 0; x < m->layers[j].ninputs; x++)
            if (m->layers[j].inputs[x] < k) return 0;
    return 1;
}

/* options->stage_bounds, or the layers split evenly over `stages` (even[stages + 1]), each cut
 * moved to the nearest place a residual does not cross (a transformer's block boundaries) */
tsr_pipeline_options tsr_pipeline_options_of(const tsr_trainer_options *o, const tsr_model *model,
                                             size_t stages, size_t *even) {
    size_t layers = tsr_model_layer_count(model);
    for (size_t s = 0; s <= stages; s++) even[s] = s * layers / stages;
    for (size_t s = 1; s < stages; s++) {
        size_t lo = even[s - 1] + 1, hi = layers - (stages - s), best = even[s];
        if (hi < lo || layers < stages) break;
        for (size_t d = 0; d <= layers; d++) {
            if (even[s] >= d && even[s] - d >= lo && cut_ok(model, even[s] - d)) {
                best = even[s] - d;
                break;
            }
            if (even[s] + d <= hi && cut_ok(model, even[s] + d)) {
                best = even[s] + d;
                break;
            }
            if (even[s] < d + lo && even[s] + d > hi) break;
        }
        even[s] = best;
    }
    tsr_pipeline_options po = {o->stage_bounds ? o->stage_bounds : even, stages,
                               o->microbatches ? o->microbatches : 1, o->pipeline_schedule,
                               o->recompute};
    return po;
}

static size_t ranks_of(const tsr_trainer_options *o) {
    return o->comm ? (size_t)tsr_comm_size(o->comm) : 1;
}

static tsr_status st_validate(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o) {
    size_t stages = ranks_of(o), *even = tsr_calloc(ctx, stages + 1, sizeof *even);
    if (!even) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "pipeline: stage table");
    tsr_pipeline_options po = tsr_pipeline_options_of(o, model, stages, even);
    tsr_status s = check_options(ctx, model, o, &po);
    tsr_free(ctx, even);
    return s;
}
static tsr_status st_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                            void **mode) {
    size_t stages = ranks_of(o), *even = tsr_calloc(ctx, stages + 1, sizeof *even);
    if (!even) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "pipeline: stage table");
    tsr_pipeline_options po = tsr_pipeline_options_of(o, model, stages, even);
    tsr_status s = tsr_pipeline_create(ctx, model, o, &po, (tsr_pipeline **)mode);
    tsr_free(ctx, even);
    return s;
}
static void st_destroy(void *mode) { tsr_pipeline_free(mode); }
static tsr_run *st_run(void *mode) { return &((tsr_pipeline *)mode)->run; }
static tsr_status st_step(void *mode, const float *images, const int32_t *labels, size_t n,
                          float *loss) {
    return tsr_pipeline_step(mode, images, labels, n, loss); /* the whole batch's loss */
}
static tsr_status st_evaluate(void *mode, const tsr_dataset *d, double *accuracy, double *loss) {
    return tsr_pipeline_evaluate(mode, d, accuracy, loss);
}
static tsr_status st_get(void *mode, float *dst, size_t count) {
    return tsr_pipeline_get_params(mode, dst, count); /* collective */
}
static tsr_status st_set(void *mode, const float *src, size_t count) {
    return tsr_pipeline_set_params(mode, src, count);
}
static tsr_status st_grads(void *mode, float *dst, size_t count) {
    return tsr_pipeline_get_grads(mode, dst, count); /* this stage's slice */
}
static tsr_status st_save(void *mode, const char *path) { return tsr_pipeline_save(mode, path); }
static tsr_status st_load(void *mode, const char *path) { return tsr_pipeline_load(mode, path); }
/* every stage steps with the same (global) batches */
static tsr_status st_shard(tsr_context *ctx, const tsr_trainer_options *o, size_t global_batch,
                           uint64_t seed, tsr_data_split *split, size_t *shares) {
    (void)ctx;
    split->loader = (tsr_loader_options){global_batch, seed, 1, 0, 1, 0};
    split->step_batch = global_batch;
    split->step_samples = 0;
    for (size_t r = 0; r < ranks_of(o); r++) shares[r] = global_batch;
    return TSR_OK;
}

const tsr_strategy tsr_strategy_pipeline = {"pipeline", st_validate, st_create, st_destroy, st_run,
                                            st_step, st_evaluate, st_get, st_set, st_grads, st_save, st_load,
                                            st_shard};
