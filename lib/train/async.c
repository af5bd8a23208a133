/* Asynchronous SGD with a parameter server and a stale-synchronous bound (see async.h).
 *
 * Messages (point to point, lib/comm/p2p.c). Worker -> server: a fixed-size header on TAG_REQ
 * (PULL, PUSH, SYNC, DONE, PING); a PUSH header is followed by the gradient shard on TAG_GRAD.
 * Server -> worker: a header on TAG_REP (REPLY, or WAIT answering a ping while a request is
 * held back; BYE answering DONE once every worker is done or lost), a REPLY followed by the
 * parameter shard on TAG_PAR. Every header says how many workers the server dropped: a rank
 * of the job is then gone, and teardown must not wait for it (MPI_Finalize would). Server <-> server (collective
 * points only): shards on TAG_SRV (+1, +2 for the optimizer state).
 *
 * A server never blocks on one worker: it keeps one receive posted per worker and polls them
 * all. The p2p waits mark the whole communicator broken on a timeout, which is right for a lost
 * server but not for a lost worker, so the server's waits are its own loops over
 * tsr_comm_p2p_test and drop only the silent worker. */
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/train/async.h"
#include "lib/comm/comm_internal.h"
#include "lib/io/checkpoint_internal.h"
#include "lib/core/internal.h"
#include "lib/train/optim.h"
#include "lib/model/stage.h"
#include "lib/train/strategy.h"

enum { TAG_REQ = 9000, TAG_GRAD, TAG_REP, TAG_PAR, TAG_SRV };
enum { K_PULL = 1, K_PUSH, K_SYNC, K_DONE, K_PING, K_REPLY, K_WAIT, K_BYE };
enum { SYNC_GET = 0, SYNC_SAVE = 1 };
enum { P_NONE = 0, P_PULL, P_SYNC };

typedef struct msg_hdr {
    int32_t kind, status;
    uint64_t step, version, clock;
    float loss;
    int32_t sync;
    uint64_t bad;    /* PUSH: the worker's first non-finite gradient (the run core's scan), or np */
    float bad_value; /* its value */
    uint64_t lost;   /* server -> worker: workers this server dropped so far */
    int32_t stop;    /* worker -> server: a stop request (its own, or an INTERRUPTED answer) */
    uint64_t samples; /* PUSH: the samples the gradient was computed on */
} msg_hdr;

/* A worker as its server sees it. */
typedef struct peer {
    int rank;
    msg_hdr rx, tx;
    tsr_comm_p2p *rx_req, *tx_req, *tx_par;
    float *tx_buf;           /* the shard as sent (parameters change while a send is in flight) */
    int pending;             /* P_PULL / P_SYNC: a request held back */
    int pend_sync;           /* P_SYNC: SYNC_GET or SYNC_SAVE */
    uint64_t pend_step, clock, pull_min, pull_ver;
    double last_seen;
    int done, dead;
} peer;

struct tsr_async {
    tsr_run run;               /* steps: a worker's pushed, a server's completed */
    tsr_async_options ao;
    tsr_comm *comm;
    int rank, size, K, server; /* server: this rank's shard index, -1 on workers */
    size_t np, *bound;         /* bound[0..K]: shard k = [bound[k], bound[k+1]) */
    tsr_backend *be;
    tsr_stage *stage;
    tsr_optim *optim;          /* servers: state for their shard */
    uint64_t version;
    double timeout;
    float *params, *grads, *probs; /* host: full parameters, gradients, evaluation */
    /* server */
    peer *w;
    int nw;
    tsr_status failed;
    int stopping;              /* a stop request reached this server (see tsr_async_step) */
    double loss_sum;
    uint64_t loss_n, lost_all;
    uint64_t samples, samples_mark; /* the pushes' samples received; at the last step's end */
    tsr_async_stats st;
    double clock_sum, update_sum;
    double away;               /* when the server last returned to its caller; 0 while it serves */
    /* worker */
    msg_hdr *srx, stx;
    double wait_s;
    uint64_t lost;             /* the most workers a server said it dropped */
    size_t bad;                /* this step's first non-finite gradient, np if none */
    float bad_value, loss;     /* its value; this step's loss */
    size_t n;                  /* this step's samples */
    int synced;                /* this save reached the collective point */
    int stop;                  /* a stop request: this worker's own or a server's answer */
};

static double now(void) { return tsr_comm_now(); }

/* The server returns to its caller, which does its own work (evaluation, a checkpoint write,
 * the trainer's bookkeeping) while no one listens to the workers. */
static void server_leaves(tsr_async *a) {
    if (a->server >= 0) a->away = now();
}

tsr_status tsr_async_staleness_parse(const char *text, int *out) {
    if (!text || !out) return TSR_ERR_INVALID_ARG;
    if (!strcmp(text, "inf") || !strcmp(text, "unbounded")) {
        *out = TSR_ASYNC_UNBOUNDED;
        return TSR_OK;
    }
    char *end;
    long v = strtol(text, &end, 10);
    if (end == text || *end || v < 0 || v >= INT_MAX) return TSR_ERR_PARSE;
    *out = (int)v;
    return TSR_OK;
}

static size_t shard_lo(const tsr_async *a) { return a->bound[a->server]; }
static size_t shard_n(const tsr_async *a) { return a->bound[a->server + 1] - a->bound[a->server]; }

/* ---- creation and teardown ---- */

static tsr_status check_options(tsr_context *ctx, const tsr_trainer_options *o,
                                const tsr_async_options *ao) {
    if (!o->comm)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "async: needs a communicator (servers and workers)");
    int size = tsr_comm_size(o->comm), servers = ao->servers ? ao->servers : 1;
    if (servers < 0 || servers >= size)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "async: servers %d on %d ranks leaves no worker (servers must be 1..%d)",
                         ao->servers, size, size - 1);
    if (ao->staleness < 0)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "async: staleness bound %d is negative",
                         ao->staleness);
    if (ao->staleness_lr != 0 && ao->staleness_lr != 1)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "async: staleness_lr %d is not 0 or 1",
                         ao->staleness_lr);
    TSR_TRY(tsr_run_check_options(ctx, o, "async: "));
    if (o->compress != TSR_COMPRESS_NONE || o->shard_optimizer > 0)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "async: gradient compression and shard_optimizer apply to data mode only");
    return TSR_OK;
}

static void release_peer(tsr_async *a, peer *w) {
    tsr_comm_p2p_cancel(w->rx_req);
    tsr_comm_p2p_cancel(w->tx_req);
    tsr_comm_p2p_cancel(w->tx_par);
    w->rx_req = w->tx_req = w->tx_par = NULL;
    (void)a;
}

static void drop(tsr_async *a, peer *w, const char *why) {
    if (w->dead) return;
    w->dead = 1;
    w->pending = P_NONE;
    release_peer(a, w);
    a->st.workers_lost++;
    int live = 0;
    for (int i = 0; i < a->nw; i++) live += !a->w[i].dead && !a->w[i].done;
    tsr_log(a->run.ctx, TSR_LOG_WARN, "async server rank %d: worker rank %d lost (%s); %d worker%s left",
            a->rank, w->rank, why, live, live == 1 ? "" : "s");
}

static tsr_status post_rx(tsr_async *a, peer *w) {
    tsr_status s = tsr_comm_irecv(a->comm, w->rank, TAG_REQ, &w->rx, sizeof w->rx, &w->rx_req);
    if (s != TSR_OK) drop(a, w, "receive failed");
    return TSR_OK;
}

tsr_status tsr_async_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                            const tsr_async_options *ao, tsr_async **out) {
    if (!ctx || !model || !o || !ao || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_async_create: NULL argument");
    *out = NULL;
    TSR_TRY(tsr_model_check(model));
    TSR_TRY(check_options(ctx, o, ao));
    tsr_async *a = tsr_calloc(ctx, 1, sizeof *a);
    if (!a) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "async trainer");
    a->ao = *ao;
    a->K = ao->servers ? ao->servers : 1;
    a->comm = o->comm;
    a->rank = tsr_comm_rank(o->comm);
    a->size = tsr_comm_size(o->comm);
    a->server = a->rank < a->K ? a->rank : -1;
    a->timeout = a->comm->timeout_s;
    a->failed = TSR_OK;
    /* the trainer's RNG; worker w mixes in its index below (worker 0 draws the trainer's seeds) */
    tsr_status s = tsr_run_init(&a->run, ctx, model, o, o->comm, a->rank);
    if (s != TSR_OK) {
        tsr_free(ctx, a);
        return s;
    }
    tsr_stage_options so = {0, tsr_model_layer_count(model), o->batch, 0, o->precision, 0};
    size_t classes = tsr_model_get_input(model).classes;
    if ((s = tsr_backend_open(ctx, a->run.device, &a->be)) != TSR_OK ||
        (s = tsr_backend_set_precision(a->be, o->precision)) != TSR_OK ||
        (s = tsr_stage_create(a->be, model, &so, &a->stage)) != TSR_OK ||
        (s = tsr_stage_init_params(a->stage, o->init == TSR_INIT_GLOROT_UNIFORM, o->seed)) != TSR_OK) {
        tsr_run_release(&a->run, 0);
        tsr_async_free(a); /* before any message: nothing to tell the others */
        return s;
    }
    a->np = tsr_stage_param_count(a->stage);
    a->bound = tsr_calloc(ctx, (size_t)a->K + 1, sizeof *a->bound);
    a->params = tsr_calloc(ctx, a->np + 1, sizeof *a->params);
    a->grads = tsr_calloc(ctx, a->np + 1, sizeof *a->grads);
    a->probs = tsr_calloc(ctx, o->batch * tsr_model_positions(model) * classes, sizeof *a->probs);
    a->srx = tsr_calloc(ctx, (size_t)a->K, sizeof *a->srx);
    if (!a->bound || !a->params || !a->grads || !a->probs || !a->srx) {
        tsr_run_release(&a->run, 0);
        tsr_async_free(a);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "async: %zu parameters", a->np);
    }
    for (int k = 0; k <= a->K; k++) { /* balanced, 16-float aligned shards */
        size_t b = a->np * (size_t)k / (size_t)a->K;
        a->bound[k] = k == a->K ? a->np : (b + 15) / 16 * 16 < a->np ? (b + 15) / 16 * 16 : a->np;
    }
    if (a->server >= 0) {
        a->nw = a->size - a->K;
        a->w = tsr_calloc(ctx, (size_t)a->nw, sizeof *a->w);
        if (!a->w) {
            tsr_run_release(&a->run, 0);
        tsr_async_free(a);
            return tsr_error(ctx, TSR_ERR_NO_MEMORY, "async: %d workers", a->size - a->K);
        }
        s = tsr_optim_create(a->be, &o->optimizer, shard_n(a), &a->optim);
        if (s == TSR_OK) a->optim->off = shard_lo(a);
        if (s == TSR_OK && o->decay_matrices_only) s = tsr_optim_decay_matrices(a->optim, a->stage);
        double t = now();
        for (int i = 0; s == TSR_OK && i < a->nw; i++) {
            peer *w = &a->w[i];
            w->rank = a->K + i;
            w->last_seen = t;
            w->tx_buf = tsr_calloc(ctx, shard_n(a) + 1, sizeof(float));
            if (!w->tx_buf) s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "async: reply buffers");
            else s = tsr_comm_irecv(a->comm, w->rank, TAG_REQ, &w->rx, sizeof w->rx, &w->rx_req);
        }
        if (s != TSR_OK) {
            tsr_run_release(&a->run, 0);
        tsr_async_free(a);
            return s;
        }
    } else {
        a->run.rng.s[0] ^= 0x9E3779B97F4A7C15ull * (uint64_t)(a->rank - a->K); /* a stream each */
    }
    server_leaves(a);
    *out = a;
    return TSR_OK;
}

/* ---- server ---- */

static uint64_t min_clock(const tsr_async *a) {
    uint64_t m = UINT64_MAX;
    for (int i = 0; i < a->nw; i++)
        if (!a->w[i].dead && !a->w[i].done && a->w[i].clock < m) m = a->w[i].clock;
    return m;
}

static int live_workers(const tsr_async *a) {
    int n = 0;
    for (int i = 0; i < a->nw; i++) n += !a->w[i].dead && !a->w[i].done;
    return n;
}

/* Completes an earlier send to w before its buffer is reused; 0 if w was dropped. */
static int drain(tsr_async *a, peer *w, tsr_comm_p2p **req) {
    double t0 = now();
    while (*req) {
        int done = 0;
        if (tsr_comm_p2p_test(*req, &done) != TSR_OK) {
            drop(a, w, "send failed");
            return 0;
        }
        if (done) {
            tsr_comm_p2p_wait(*req);
            *req = NULL;
            break;
        }
        if (a->timeout > 0 && now() - t0 > a->timeout) {
            drop(a, w, "a reply was not taken");
            return 0;
        }
        sched_yield();
    }
    return !w->dead;
}

static void send_hdr(tsr_async *a, peer *w, int kind, tsr_status status, uint64_t step) {
    if (!drain(a, w, &w->tx_req)) return;
    memset(&w->tx, 0, sizeof w->tx);
    w->tx.kind = kind;
    w->tx.status = status;
    w->tx.step = step;
    w->tx.version = a->version;
    w->tx.clock = min_clock(a);
    w->tx.lost = a->st.workers_lost;
    if (tsr_comm_isend(a->comm, w->rank, TAG_REP, &w->tx, sizeof w->tx, &w->tx_req) != TSR_OK)
        drop(a, w, "send failed");
}

/* REPLY with this server's shard (a pull's or a collective point's answer). */
static void reply(tsr_async *a, peer *w, tsr_status status) {
    if (!drain(a, w, &w->tx_par)) return;
    size_t lo = shard_lo(a), n = shard_n(a);
    tsr_status s = tsr_read_f32(tsr_stage_params(a->stage), lo, w->tx_buf, n);
    if (s != TSR_OK && status == TSR_OK) status = s;
    w->pull_min = min_clock(a);
    w->pull_ver = a->version;
    uint64_t step = w->pend_step;
    w->pending = P_NONE;
    send_hdr(a, w, K_REPLY, status, step);
    if (!w->dead &&
        tsr_comm_isend(a->comm, w->rank, TAG_PAR, w->tx_buf, n * sizeof(float), &w->tx_par) != TSR_OK)
        drop(a, w, "send failed");
    w->last_seen = now(); /* the worker computes from here: its silence counts from now */
}

/* Answers the pulls the staleness bound now allows. */
static void answer_pulls(tsr_async *a) {
    uint64_t m = min_clock(a), sb = (uint64_t)a->ao.staleness;
    for (int i = 0; i < a->nw; i++) {
        peer *w = &a->w[i];
        if (w->dead || w->pending != P_PULL) continue;
        if (a->stopping) reply(a, w, TSR_ERR_INTERRUPTED); /* the worker stops before computing */
        else if (a->ao.staleness == TSR_ASYNC_UNBOUNDED || w->pend_step <= sb || m >= w->pend_step - sb)
            reply(a, w, a->failed);
    }
}

/* A PUSH header came: take the gradient shard and apply it. */
static void apply_push(tsr_async *a, peer *w) {
    size_t lo = shard_lo(a), n = shard_n(a);
    tsr_comm_p2p *r = NULL;
    if (tsr_comm_irecv(a->comm, w->rank, TAG_GRAD, a->grads + lo, n * sizeof(float), &r) != TSR_OK) {
        drop(a, w, "gradient receive failed");
        return;
    }
    double t0 = now();
    for (;;) {
        int done = 0;
        if (tsr_comm_p2p_test(r, &done) != TSR_OK) {
            tsr_comm_p2p_cancel(r);
            drop(a, w, "gradient receive failed");
            return;
        }
        if (done) break;
        if (a->timeout > 0 && now() - t0 > a->timeout) {
            tsr_comm_p2p_cancel(r);
            drop(a, w, "gradient never came");
            return;
        }
        sched_yield();
    }
    if (tsr_comm_p2p_wait(r) != TSR_OK) {
        drop(a, w, "gradient receive failed");
        return;
    }
    uint64_t t = w->rx.step;
    float l = w->rx.loss;
    w->clock = t + 1;
    a->samples += w->rx.samples; /* trained on, applied or skipped */
    if (a->failed != TSR_OK) return;
    /* the worker scanned its whole gradient (tsr_run_step): a non-finite step is dropped by
     * every server, as the trainer skips a step as a whole */
    uint64_t bad = w->rx.bad;
    if (!isfinite(l) || bad < a->np) {
        char why[256], what[96];
        if (bad < a->np)
            snprintf(what, sizeof what, "gradient %llu of %zu is %g", (unsigned long long)bad, a->np,
                     (double)w->rx.bad_value);
        else
            snprintf(what, sizeof what, "loss is %g", (double)l);
        snprintf(why, sizeof why, "async server rank %d: %s in step %llu of worker rank %d", a->rank,
                 what, (unsigned long long)t, w->rank);
        a->failed = tsr_run_nonfinite(&a->run, why); /* skip: TSR_OK, that gradient dropped */
        return;
    }
    uint64_t cs = t - (w->pull_min < t ? w->pull_min : t), us = a->version - w->pull_ver;
    float lr = tsr_run_lr(&a->run);
    if (a->ao.staleness_lr && us > 1) lr /= (float)us;
    tsr_status s = tsr_write_f32(tsr_stage_grads(a->stage), lo, a->grads + lo, n);
    if (s == TSR_OK)
        s = tsr_optim_update(a->optim, tsr_stage_params(a->stage), tsr_stage_grads(a->stage), lr,
                             a->version);
    if (s != TSR_OK) {
        a->failed = s;
        return;
    }
    a->version++;
    a->st.applied++;
    a->clock_sum += (double)cs;
    a->update_sum += (double)us;
    if (cs > a->st.clock_max) a->st.clock_max = cs;
    if (us > a->st.update_max) a->st.update_max = us;
    a->loss_sum += l;
    a->loss_n++;
}

/* One pass over every worker: handles what arrived, drops the silent. 1 if anything came.
 * A worker's silence counts only the time this server listened: the time it was away (an
 * evaluation of the test set can outlast the timeout) is taken off, else a healthy worker that
 * evaluated as long as the server looks dead the moment the server is back. */
static int serve_once(tsr_async *a) {
    int got = 0;
    if (a->away > 0) {
        double gap = now() - a->away;
        for (int i = 0; i < a->nw; i++) a->w[i].last_seen += gap;
        a->away = 0;
    }
    for (int i = 0; i < a->nw; i++) {
        peer *w = &a->w[i];
        if (w->dead || !w->rx_req) continue; /* a done worker pings while it waits for BYE */
        int done = 0;
        if (tsr_comm_p2p_test(w->rx_req, &done) != TSR_OK) {
            drop(a, w, "receive failed");
            continue;
        }
        if (!done) continue;
        tsr_status s = tsr_comm_p2p_wait(w->rx_req);
        w->rx_req = NULL;
        if (s != TSR_OK) {
            drop(a, w, "bad message");
            continue;
        }
        got = 1;
        w->last_seen = now();
        if (w->rx.stop) a->stopping = 1;
        switch (w->rx.kind) {
        case K_PULL:
            w->pending = P_PULL;
            w->pend_step = w->rx.step;
            break;
        case K_PUSH:
            apply_push(a, w);
            break;
        case K_SYNC:
            w->pending = P_SYNC;
            w->pend_sync = w->rx.sync;
            w->pend_step = w->rx.step;
            break;
        case K_DONE:
            w->done = 1;
            w->pending = P_NONE;
            break;
        case K_PING:
            if (w->pending != P_NONE || w->done) send_hdr(a, w, K_WAIT, TSR_OK, w->pend_step);
            break;
        default:
            drop(a, w, "unknown request");
        }
        if (!w->dead) post_rx(a, w);
    }
    double t = now();
    for (int i = 0; a->timeout > 0 && i < a->nw; i++) {
        peer *w = &a->w[i];
        if (!w->dead && !w->done && t - w->last_seen > a->timeout) {
            char why[96];
            snprintf(why, sizeof why, "silent for %g s, TSR_COMM_TIMEOUT", a->timeout);
            drop(a, &a->w[i], why);
        }
    }
    answer_pulls(a);
    return got;
}

static tsr_status none_left(tsr_async *a) {
    for (int i = 0; i < a->nw; i++)
        if (!a->w[i].dead) return TSR_OK; /* some finished normally */
    return tsr_error(a->run.ctx, TSR_ERR_PEER_LOST, "async server rank %d: every worker was lost",
                     a->rank);
}

static tsr_status server_step(tsr_async *a, float *loss) {
    a->loss_sum = 0.0;
    a->loss_n = 0;
    tsr_status s = TSR_OK;
    for (;;) {
        if (a->failed != TSR_OK) {
            s = a->failed;
            break;
        }
        if (!live_workers(a)) {
            s = none_left(a);
            break;
        }
        if (tsr_run_stop_requested(&a->run)) a->stopping = 1;
        if (a->stopping) { /* the step is counted, as every mode counts its interrupted step */
            answer_pulls(a);
            a->run.steps++;
            s = tsr_error(a->run.ctx, TSR_ERR_INTERRUPTED, "async server rank %d: stopped on request "
                          "after step %llu", a->rank, (unsigned long long)a->run.steps);
            break;
        }
        if (min_clock(a) >= a->run.steps + 1) {
            a->run.steps++;
            break;
        }
        int at_sync = 0;
        for (int i = 0; i < a->nw; i++)
            at_sync += !a->w[i].dead && !a->w[i].done && a->w[i].pending == P_SYNC;
        if (at_sync == live_workers(a)) { /* they wait for this server: it would wait forever */
            s = tsr_error(a->run.ctx, TSR_ERR_STATE,
                          "async server rank %d: step %llu while every worker waits at a collective "
                          "point (evaluate, get_params, save): do servers and workers take the "
                          "same number of steps?", a->rank, (unsigned long long)a->run.steps);
            break;
        }
        if (!serve_once(a)) sched_yield();
    }
    if (loss) *loss = a->loss_n ? (float)(a->loss_sum / (double)a->loss_n) : 0.0f;
    /* what this step covered: the pushes since the last one ended (a lost worker's no more) */
    a->run.step_samples = a->samples - a->samples_mark;
    a->samples_mark = a->samples;
    server_leaves(a);
    return s;
}

/* Collective point `kind` (SYNC_GET, SYNC_SAVE), the servers' side: serves until every live
 * worker waits at it. When stopping, a worker waiting at an evaluation's point while the
 * servers save is told INTERRUPTED there, and comes to the save. */
static void sync_wait(tsr_async *a, int kind) {
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < a->nw; i++) {
            peer *w = &a->w[i];
            if (a->stopping && kind == SYNC_SAVE && !w->dead && w->pending == P_SYNC &&
                w->pend_sync != SYNC_SAVE)
                reply(a, w, TSR_ERR_INTERRUPTED);
            waiting += !w->dead && !w->done && w->pending != P_SYNC;
        }
        if (!waiting) break;
        if (!serve_once(a)) sched_yield();
    }
}

/* Completes the shard exchange between servers, serving the workers meanwhile (a peer server
 * may still be waiting for a worker this one already dropped: 2 timeouts). */
static tsr_status exchange(tsr_async *a, tsr_comm_p2p **req, int nreq, tsr_status s) {
    double t0 = now();
    for (int left = nreq; s == TSR_OK && left;) {
        left = 0;
        for (int i = 0; s == TSR_OK && i < nreq; i++) {
            int done = 0;
            if (req[i] && (s = tsr_comm_p2p_test(req[i], &done)) == TSR_OK && done) {
                s = tsr_comm_p2p_wait(req[i]);
                req[i] = NULL;
            }
            left += req[i] != NULL;
        }
        if (s == TSR_OK && left) {
            if (!serve_once(a)) sched_yield();
            if (a->timeout > 0 && now() - t0 > 2 * a->timeout)
                s = tsr_comm_peer_lost(a->comm, "async: shards between servers");
        }
    }
    for (int i = 0; i < nreq; i++) tsr_comm_p2p_cancel(req[i]);
    return s;
}

/* Every server's parameter shard to every server: a->params and the stage hold the latest
 * parameters. */
static tsr_status share_params(tsr_async *a) {
    size_t lo = shard_lo(a), n = shard_n(a);
    tsr_status s = tsr_read_f32(tsr_stage_params(a->stage), 0, a->params, a->np);
    int nreq = 0;
    tsr_comm_p2p **req = tsr_calloc(a->run.ctx, 2 * (size_t)a->K, sizeof *req);
    if (!req && s == TSR_OK) s = tsr_error(a->run.ctx, TSR_ERR_NO_MEMORY, "async: exchange");
    for (int k = 0; s == TSR_OK && k < a->K; k++) {
        if (k == a->server) continue;
        size_t klo = a->bound[k], kn = a->bound[k + 1] - klo;
        s = tsr_comm_isend(a->comm, k, TAG_SRV, a->params + lo, n * 4, &req[nreq++]);
        if (s == TSR_OK) s = tsr_comm_irecv(a->comm, k, TAG_SRV, a->params + klo, kn * 4, &req[nreq++]);
    }
    s = exchange(a, req, nreq, s);
    tsr_free(a->run.ctx, req);
    if (s == TSR_OK)
        s = tsr_write_f32(tsr_stage_params(a->stage), 0, a->params, a->np);
    return s;
}

/* Optimizer state tensor i (this server's shard in buf) into rank 0's whole copy. */
static tsr_status gather_state(tsr_async *a, size_t i, tsr_buf *buf, float *whole) {
    size_t lo = shard_lo(a), n = shard_n(a);
    tsr_status s = tsr_read_f32(buf, 0, whole + lo, n);
    int nreq = 0, tag = TAG_SRV + 1 + (int)i;
    tsr_comm_p2p **req = tsr_calloc(a->run.ctx, (size_t)a->K, sizeof *req);
    if (!req && s == TSR_OK) s = tsr_error(a->run.ctx, TSR_ERR_NO_MEMORY, "async: exchange");
    for (int k = 0; s == TSR_OK && k < a->K; k++) {
        if (k == a->server) continue;
        size_t klo = a->bound[k], kn = a->bound[k + 1] - klo;
        if (a->rank == 0) s = tsr_comm_irecv(a->comm, k, tag, whole + klo, kn * 4, &req[nreq++]);
        else if (k == 0) s = tsr_comm_isend(a->comm, 0, tag, whole + lo, n * 4, &req[nreq++]);
    }
    s = exchange(a, req, nreq, s);
    tsr_free(a->run.ctx, req);
    return s;
}

/* The workers waiting at the collective point get the latest parameters and the outcome. The
 * sends are completed here: the server goes away next (its own evaluation), and over a
 * transport that needs the sender's progress (shared memory without CMA, what tsr-train picks on
 * one node) a shard left in flight would stall there
 * and the workers would call the server lost. */
static void answer_sync(tsr_async *a, tsr_status s) {
    for (int i = 0; i < a->nw; i++)
        if (!a->w[i].dead && a->w[i].pending == P_SYNC) reply(a, &a->w[i], s);
    for (int i = 0; i < a->nw; i++)
        if (!a->w[i].dead && drain(a, &a->w[i], &a->w[i].tx_req)) drain(a, &a->w[i], &a->w[i].tx_par);
}

/* ---- worker ---- */

/* Waits for server k's reply header (posted in *req), pinging while it waits; WAIT answers
 * re-arm the receive. A server silent for the timeout is lost. */
static tsr_status wait_reply(tsr_async *a, int k, tsr_comm_p2p **req) {
    double t0 = now(), heard = t0, ping = t0;
    tsr_status s = TSR_OK;
    for (unsigned spins = 0;; spins++) {
        int done = 0;
        if ((s = tsr_comm_p2p_test(*req, &done)) != TSR_OK) break;
        if (done) {
            s = tsr_comm_p2p_wait(*req);
            *req = NULL;
            if (s == TSR_OK && a->srx[k].lost > a->lost) a->lost = a->srx[k].lost;
            if (s != TSR_OK || a->srx[k].kind != K_WAIT) break;
            heard = now();
            s = tsr_comm_irecv(a->comm, k, TAG_REP, &a->srx[k], sizeof a->srx[k], req);
            if (s != TSR_OK) break;
            continue;
        }
        if (spins > 64) sched_yield();
        if (a->timeout <= 0 || (spins & 63)) continue;
        double t = now();
        if (t - ping > a->timeout / 4) {
            msg_hdr p = {K_PING, 0, a->run.steps, 0, 0, 0.0f, 0, 0, 0.0f, 0, 0, 0};
            ping = t;
            if ((s = tsr_comm_send(a->comm, k, TAG_REQ, &p, sizeof p)) != TSR_OK) break;
        }
        if (t - heard > a->timeout) {
            char what[96];
            snprintf(what, sizeof what, "async: waiting for server rank %d", k);
            s = tsr_comm_peer_lost(a->comm, what);
            break;
        }
    }
    tsr_comm_p2p_cancel(*req);
    *req = NULL;
    a->wait_s += now() - t0;
    return s;
}

/* A worker's message to or from server k failed: inside MPI (UCX reports a dead peer as an
 * endpoint timeout) or by the timeout. That server is lost: the communicator is marked broken
 * and the error names the server. */
static tsr_status server_error(tsr_async *a, int k, tsr_status s) {
    if (s != TSR_ERR_MPI && s != TSR_ERR_PEER_LOST) return s;
    char detail[400];
    tsr_strlcpy(detail, tsr_context_last_error(a->run.ctx), sizeof detail);
    for (char *c = detail; *c; c++)
        if (*c == '\n') *c = ' ';
    if (!a->comm->broken) tsr_comm_peer_lost(a->comm, "async");
    return tsr_error(a->run.ctx, TSR_ERR_PEER_LOST, "async: server rank %d lost: %s", k, detail);
}

/* Sends `kind` to every server and gathers their shards into a->params (pull or collective
 * point). *status: the worst status the servers answered. */
static tsr_status request_all(tsr_async *a, int kind, int sync, tsr_status *status) {
    tsr_comm_p2p **rh = tsr_calloc(a->run.ctx, (size_t)a->K * 2, sizeof *rh), **rp = rh ? rh + a->K : NULL;
    if (!rh) return tsr_error(a->run.ctx, TSR_ERR_NO_MEMORY, "async: requests");
    tsr_status s = TSR_OK;
    *status = TSR_OK;
    int bad = 0; /* the server the failure concerns */
    for (int k = 0; s == TSR_OK && k < a->K; k++) {
        size_t lo = a->bound[k], n = a->bound[k + 1] - lo;
        bad = k;
        s = tsr_comm_irecv(a->comm, k, TAG_REP, &a->srx[k], sizeof a->srx[k], &rh[k]);
        if (s == TSR_OK) s = tsr_comm_irecv(a->comm, k, TAG_PAR, a->params + lo, n * 4, &rp[k]);
        msg_hdr h = {kind, 0, a->run.steps, 0, 0, 0.0f, sync, 0, 0.0f, 0, a->stop || a->run.stop, 0};
        if (s == TSR_OK) s = tsr_comm_send(a->comm, k, TAG_REQ, &h, sizeof h);
    }
    for (int k = 0; s == TSR_OK && k < a->K; k++) {
        bad = k;
        s = wait_reply(a, k, &rh[k]);
        if (s == TSR_OK) {
            s = tsr_comm_p2p_wait(rp[k]);
            rp[k] = NULL;
        }
        if (s == TSR_OK && a->srx[k].status != TSR_OK && *status == TSR_OK) {
            *status = a->srx[k].status;
            if (*status == TSR_ERR_INTERRUPTED) {
                a->stop = 1; /* every later message says so: each server learns it */
                tsr_error(a->run.ctx, *status, "async: stopped on request (server rank %d) before "
                          "step %llu", k, (unsigned long long)a->run.steps);
            } else {
                tsr_error(a->run.ctx, *status, "async: server rank %d answered %s (its log says why)", k,
                          tsr_status_name(*status));
            }
        }
    }
    for (int k = 0; k < 2 * a->K; k++) tsr_comm_p2p_cancel(rh[k]);
    tsr_free(a->run.ctx, rh);
    return server_error(a, bad, s);
}

/* ---- a worker's step: the run core's loop (tsr_run_step) on these parts; the servers make
 * the non-finite decision from the worker's scan, which travels with the push ---- */

static size_t w_min_batch(void *mode) {
    (void)mode;
    return 1;
}
static tsr_stage *w_input(void *mode) { return ((tsr_async *)mode)->stage; }
static uint64_t w_stream(void *mode) {
    (void)mode;
    return 0; /* a worker's stream is mixed into its RNG state at creation */
}

/* pull every server's shard, then forward and backward from those parameters */
static tsr_status w_compute(void *mode, const float *images, const int32_t *labels, size_t n,
                           uint64_t seed, float *l, int *early) {
    tsr_async *a = mode;
    tsr_run *r = &a->run;
    (void)images, (void)labels;
    *early = 0;
    double t0 = tsr_timeline_now(r->tl);
    tsr_status answered;
    TSR_TRY(request_all(a, K_PULL, 0, &answered));
    if (answered != TSR_OK) return answered;
    double t1 = tsr_timeline_now(r->tl);
    TSR_TRY(tsr_timeline_event(r->tl, "pull", TSR_TRACK_COMM, t0, t1));
    TSR_TRY(tsr_write_f32(tsr_stage_params(a->stage), 0, a->params, a->np));
    TSR_TRY(tsr_stage_forward(a->stage, n, 1, seed, l));
    TSR_TRY(tsr_stage_backward(a->stage, n, 0));
    return tsr_timeline_event(r->tl, "forward+backward", TSR_TRACK_COMPUTE, t1, tsr_timeline_now(r->tl));
}
static tsr_status w_combine(void *mode, size_t n, float *l) {
    (void)mode, (void)n, (void)l;
    return TSR_OK; /* a worker's gradient is its own: the servers apply it as it comes */
}
/* the whole gradient (with a non-finite loss too: the servers name the first bad gradient) */
static int w_grads(void *mode, float l, tsr_buf **g, float **scratch, size_t *lo, size_t *hi,
                   size_t *np) {
    tsr_async *a = mode;
    if (!a->run.check_grads && isfinite(l)) return 0;
    *g = tsr_stage_grads(a->stage);
    *scratch = a->grads;
    *lo = 0, *hi = *np = a->np;
    return 1;
}
/* the worker never skips: its scan goes with the push and the servers decide */
static tsr_status w_agree(void *mode, float *l, int early, size_t bad, float value, size_t np,
                         int *skip, char *why, size_t size) {
    tsr_async *a = mode;
    (void)early, (void)why, (void)size;
    a->bad = bad < np ? bad : a->np;
    a->bad_value = value;
    a->loss = *l;
    *skip = 0;
    return TSR_OK;
}
/* push each gradient shard to its server, with the loss and the scan */
static tsr_status w_apply(void *mode, float lr, int *applied) {
    tsr_async *a = mode;
    tsr_run *r = &a->run;
    (void)lr; /* the servers' schedule (and staleness) set the rate */
    *applied = 1;
    double t0 = tsr_timeline_now(r->tl);
    /* a view on host memory, else a copy in a->grads (read again after a scan: the servers
     * decide on the scan's figures in the header, not on a poisoned copy) */
    tsr_map gm;
    TSR_TRY(tsr_buf_map(tsr_ref_at(tsr_stage_grads(a->stage), 0), TSR_DTYPE_F32, a->np, TSR_MAP_READ,
                        a->grads, &gm));
    const float *g = gm.data;
    tsr_comm_p2p **rq = tsr_calloc(r->ctx, (size_t)a->K * 2, sizeof *rq);
    if (!rq) return tsr_error(r->ctx, TSR_ERR_NO_MEMORY, "async: push");
    a->stx = (msg_hdr){K_PUSH, 0, r->steps, 0, 0, a->loss, 0, a->bad, a->bad_value, 0, a->stop || r->stop,
                       a->n};
    tsr_status s = TSR_OK;
    int bad = 0; /* the server the failure concerns */
    for (int k = 0; s == TSR_OK && k < a->K; k++) {
        bad = k;
        size_t lo = a->bound[k], m = a->bound[k + 1] - lo;
        s = tsr_comm_isend(a->comm, k, TAG_REQ, &a->stx, sizeof a->stx, &rq[2 * k]);
        if (s == TSR_OK) s = tsr_comm_isend(a->comm, k, TAG_GRAD, g + lo, m * 4, &rq[2 * k + 1]);
    }
    for (int k = 0; k < 2 * a->K; k++) {
        if (s == TSR_OK) bad = k / 2;
        if (s == TSR_OK) s = tsr_comm_p2p_wait(rq[k]);
        else tsr_comm_p2p_cancel(rq[k]);
        rq[k] = NULL;
    }
    tsr_free(r->ctx, rq);
    TSR_TRY(server_error(a, bad, s));
    return tsr_timeline_event(r->tl, "push", TSR_TRACK_COMM, t0, tsr_timeline_now(r->tl));
}

/* clipping: a worker's own gradient, before it is pushed */
static tsr_status w_grad_sumsq(void *mode, double *sumsq) {
    tsr_async *a = mode;
    return tsr_run_sumsq(&a->run, tsr_stage_grads(a->stage), a->grads, 0, a->np, sumsq);
}
static tsr_status w_grad_scale(void *mode, float coef) {
    tsr_async *a = mode;
    return a->np ? tsr_op_scale(a->be, a->np, coef, tsr_ref_at(tsr_stage_grads(a->stage), 0)) : TSR_OK;
}

static const tsr_step_ops worker_ops = {"", w_min_batch, w_input, w_stream, w_compute, w_combine,
                                        w_grads, w_agree, w_apply, NULL, NULL, w_grad_sumsq,
                                        w_grad_scale};

/* ---- the trainer's calls ---- */

tsr_status tsr_async_step(tsr_async *a, const float *images, const int32_t *labels, size_t n,
                          float *loss) {
    if (!a) return TSR_ERR_INVALID_ARG;
    if (a->comm->broken)
        return tsr_error(a->run.ctx, TSR_ERR_PEER_LOST, "async: the communicator lost a server earlier");
    a->n = n;
    return a->server >= 0 ? server_step(a, loss)
                          : tsr_run_step(&a->run, &worker_ops, a, images, labels, n, loss);
}

/* The collective point of evaluate and get_params: every rank ends with the latest parameters
 * in a->params and its stage. */
static tsr_status sync_point(tsr_async *a) {
    if (a->comm->broken)
        return tsr_error(a->run.ctx, TSR_ERR_PEER_LOST, "async: the communicator lost a server earlier");
    if (a->server >= 0) {
        sync_wait(a, SYNC_GET);
        tsr_status s = share_params(a);
        answer_sync(a, s);
        server_leaves(a);
        return s;
    }
    tsr_status answered;
    TSR_TRY(request_all(a, K_SYNC, SYNC_GET, &answered));
    TSR_TRY(tsr_write_f32(tsr_stage_params(a->stage), 0, a->params, a->np));
    return answered;
}

void tsr_async_free(tsr_async *a) {
    if (!a) return;
    if (a->comm && !a->comm->broken && a->bound && a->srx) {
        if (a->server < 0) {
            /* each server answers BYE once every worker is done or lost: then this worker
             * knows whether a rank of the job is gone */
            msg_hdr h = {K_DONE, 0, a->run.steps, 0, 0, 0.0f, 0, 0, 0.0f, 0, 0, 0};
            tsr_status s = TSR_OK;
            for (int k = 0; s == TSR_OK && k < a->K; k++) {
                tsr_comm_p2p *rq = NULL;
                s = tsr_comm_irecv(a->comm, k, TAG_REP, &a->srx[k], sizeof a->srx[k], &rq);
                if (s == TSR_OK) s = tsr_comm_send(a->comm, k, TAG_REQ, &h, sizeof h);
                if (s == TSR_OK) s = wait_reply(a, k, &rq);
                else tsr_comm_p2p_cancel(rq);
                server_error(a, k, s); /* a lost server: the communicator is marked broken */
            }
            if (a->lost) tsr_comm_mark_broken(a->comm);
        } else if (a->w) {
            /* serve the workers still stepping until each is done or lost; a worker waiting at
             * a collective point the servers left is told so */
            while (live_workers(a)) {
                for (int i = 0; i < a->nw; i++)
                    if (!a->w[i].dead && a->w[i].pending == P_SYNC)
                        reply(a, &a->w[i],
                              tsr_error(a->run.ctx, TSR_ERR_STATE, "async: the servers are shutting down"));
                if (!serve_once(a)) sched_yield();
            }
            for (int i = 0; i < a->nw; i++)
                if (!a->w[i].dead) {
                    drain(a, &a->w[i], &a->w[i].tx_par);
                    send_hdr(a, &a->w[i], K_BYE, TSR_OK, a->run.steps);
                    drain(a, &a->w[i], &a->w[i].tx_req);
                }
            if (a->st.workers_lost) tsr_comm_mark_broken(a->comm);
        }
    }
    if (a->w) {
        tsr_async_stats st;
        tsr_async_stats_get(a, &st);
        tsr_log(a->run.ctx, TSR_LOG_INFO,
                "async server rank %d: %llu gradients applied, %llu skipped; staleness in steps mean "
                "%.2f max %llu (bound %d), in updates mean %.2f max %llu; %llu workers lost",
                a->rank, (unsigned long long)st.applied, (unsigned long long)a->run.skipped,
                st.clock_mean, (unsigned long long)st.clock_max, a->ao.staleness, st.update_mean,
                (unsigned long long)st.update_max, (unsigned long long)st.workers_lost);
    }
    tsr_run_release(&a->run, 1);
    for (int i = 0; a->w && i < a->nw; i++) {
        release_peer(a, &a->w[i]);
        tsr_free(a->run.ctx, a->w[i].tx_buf);
    }
    /* Receives abandoned on a broken communicator (not cancelled: tsr_comm_p2p_cancel) may
     * still have MPI write a late message: the request headers (in the peers and srx), the
     * parameters and the gradient shard stay allocated for the rest of the process, as gossip's
     * and the pipelines' buffers do. */
    if (a->comm && a->comm->broken) {
        tsr_log(a->run.ctx, TSR_LOG_DEBUG, "async: receive buffers kept after a lost peer");
    } else {
        tsr_free(a->run.ctx, a->w);
        tsr_free(a->run.ctx, a->params);
        tsr_free(a->run.ctx, a->grads);
        tsr_free(a->run.ctx, a->srx);
    }
    tsr_optim_free(a->optim);
    tsr_stage_free(a->stage);
    tsr_backend_free(a->be);
    tsr_free(a->run.ctx, a->bound);
    tsr_free(a->run.ctx, a->probs);
    tsr_free(a->run.ctx, a);
}

tsr_status tsr_async_evaluate(tsr_async *a, const tsr_dataset *d, double *accuracy, double *loss) {
    if (!a || !d) return TSR_ERR_INVALID_ARG;
    tsr_model_input in = tsr_model_get_input(a->run.model);
    /* shape checked before the collective, so a bad data set fails every rank alike */
    if (d->features != in.channels * in.height * in.width || !d->count)
        return tsr_error(a->run.ctx, TSR_ERR_SHAPE, "data set of %zu samples, %zu features per sample: "
                         "the model takes %zu", d->count, d->features, in.channels * in.height * in.width);
    TSR_TRY(sync_point(a));
    size_t correct = 0;
    double total = 0.0;
    TSR_TRY(tsr_stage_evaluate(a->stage, d, 0, d->count, a->probs, &correct, &total));
    double targets = (double)tsr_dataset_targets(d);
    if (accuracy) *accuracy = (double)correct / targets;
    if (loss) *loss = total / targets;
    return TSR_OK;
}

tsr_status tsr_async_get_params(tsr_async *a, float *dst, size_t count) {
    if (!a || (!dst && count)) return TSR_ERR_INVALID_ARG;
    if (count != a->np)
        return tsr_error(a->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu asked for", a->np, count);
    TSR_TRY(sync_point(a));
    memcpy(dst, a->params, a->np * sizeof(float));
    return TSR_OK;
}

tsr_status tsr_async_set_params(tsr_async *a, const float *src, size_t count) {
    if (!a || (!src && count)) return TSR_ERR_INVALID_ARG;
    if (count != a->np)
        return tsr_error(a->run.ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu given", a->np, count);
    return tsr_write_f32(tsr_stage_params(a->stage), 0, src, a->np);
}

/* ---- checkpoints: tsr_run_save / tsr_run_load on this state ----
 * Saving is a collective point: the servers gather the parameters (every server's shard to every
 * server, the workers get them in the answer) and the optimizer state (to rank 0, which writes).
 * A load is local: every rank takes the parameters, a server its shard of the optimizer state. */
static size_t state_count(void *mode) { return ((tsr_async *)mode)->np; }
static size_t state_tensors(void *mode, const char *names[3], tsr_buf *bufs[3]) {
    tsr_async *a = mode;
    names[0] = "params";
    bufs[0] = tsr_stage_params(a->stage);
    return 1 + (a->optim ? tsr_optim_state(a->optim, names + 1, bufs + 1) : 0);
}
static tsr_comm *state_comm(void *mode) {
    (void)mode;
    return NULL; /* the servers agree through their exchange, the workers through the answer */
}
static int writer(void *mode) { return ((tsr_async *)mode)->rank == 0; }
static tsr_status gather(void *mode, size_t i, tsr_buf *buf, float *whole) {
    tsr_async *a = mode;
    (void)buf;
    if (i > 0) return gather_state(a, i - 1, buf, whole); /* servers only: a worker has no state */
    a->synced = 1;
    tsr_status s = TSR_OK, answered = TSR_OK;
    if (a->server >= 0) {
        sync_wait(a, SYNC_SAVE);
        s = share_params(a);
    } else {
        /* rank 0's write is in the servers' answer */
        s = request_all(a, K_SYNC, SYNC_SAVE, &answered);
        if (s == TSR_OK) s = tsr_write_f32(tsr_stage_params(a->stage), 0, a->params, a->np);
        if (s == TSR_OK) s = answered;
    }
    if (s == TSR_OK) memcpy(whole, a->params, a->np * sizeof(float));
    return s;
}
static tsr_status scatter(void *mode, size_t i, tsr_buf *buf, const float *whole) {
    tsr_async *a = mode;
    return i == 0 ? tsr_write_f32(buf, 0, whole, a->np)
                  : tsr_write_f32(buf, 0, whole + shard_lo(a), shard_n(a));
}
static void loaded(void *mode, const tsr_checkpoint *ck) {
    tsr_async *a = mode;
    a->version = ck->step;
    if (a->server < 0) a->run.rng.s[0] ^= 0x9E3779B97F4A7C15ull * (uint64_t)(a->rank - a->K);
    for (int i = 0; i < a->nw; i++) a->w[i].clock = a->w[i].pull_min = a->w[i].pull_ver = ck->step;
}

static const tsr_state_ops state_ops = {"the trainer", state_count, state_tensors, state_comm,
                                        writer, gather, scatter, NULL, loaded};

tsr_status tsr_async_save(tsr_async *a, const char *path) {
    if (!a || !path) return TSR_ERR_INVALID_ARG;
    if (a->comm->broken)
        return tsr_error(a->run.ctx, TSR_ERR_PEER_LOST, "async: the communicator lost a server earlier");
    const char *spec = tsr_model_spec(a->run.model);
    if (strlen(spec) >= sizeof ((tsr_checkpoint *)0)->model_spec) /* every rank alike */
        return tsr_error(a->run.ctx, TSR_ERR_UNSUPPORTED, "model spec of %zu bytes is too long for a checkpoint",
                         strlen(spec));
    a->synced = 0;
    tsr_status s = tsr_run_save(&a->run, &state_ops, a, path);
    if (!a->synced) { /* failed before the collective point: reach it anyway, with the error */
        tsr_status answered;
        if (a->server >= 0) {
            sync_wait(a, SYNC_SAVE);
            share_params(a); /* the other servers exchange with this one */
        } else {
            request_all(a, K_SYNC, SYNC_SAVE, &answered);
        }
    }
    if (a->server >= 0) answer_sync(a, s);
    server_leaves(a);
    return s;
}

tsr_status tsr_async_load(tsr_async *a, const char *path) {
    return a && path ? tsr_run_load(&a->run, &state_ops, a, path) : TSR_ERR_INVALID_ARG;
}

/* ---- accessors ---- */

int tsr_async_is_server(const tsr_async *a) { return a && a->server >= 0; }
uint64_t tsr_async_steps(const tsr_async *a) { return a ? a->run.steps : 0; }
uint64_t tsr_async_skipped(const tsr_async *a) { return a ? a->run.skipped : 0; }
uint64_t tsr_async_epoch(const tsr_async *a) { return a ? a->run.epoch : 0; }
void tsr_async_set_epoch(tsr_async *a, uint64_t epoch) {
    if (a) a->run.epoch = epoch;
}
uint64_t tsr_async_seed(const tsr_async *a) { return a ? a->run.seed : 0; }
void tsr_async_stats_get(const tsr_async *a, tsr_async_stats *out) {
    if (!a || !out) return;
    *out = a->st;
    out->clock_mean = a->st.applied ? a->clock_sum / (double)a->st.applied : 0.0;
    out->update_mean = a->st.applied ? a->update_sum / (double)a->st.applied : 0.0;
    out->wait_s_x1000 = (uint64_t)(a->wait_s * 1000.0);
}

/* ---- the async strategy behind tsr_trainer: it overrides the whole step ---- */

static tsr_async_options async_options(const tsr_trainer_options *o) {
    tsr_async_options ao = {o->async_servers, o->async_staleness, o->async_staleness_lr};
    return ao;
}
static tsr_status st_validate(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o) {
    (void)model;
    tsr_async_options ao = async_options(o);
    return check_options(ctx, o, &ao);
}
static tsr_status st_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                            void **mode) {
    tsr_async_options ao = async_options(o);
    return tsr_async_create(ctx, model, o, &ao, (tsr_async **)mode);
}
static void st_destroy(void *mode) { tsr_async_free(mode); }
static tsr_run *st_run(void *mode) { return &((tsr_async *)mode)->run; }
static tsr_status st_step(void *mode, const float *images, const int32_t *labels, size_t n,
                          float *loss) {
    /* a server's loss: the mean of the gradients it applied in this step */
    return tsr_async_step(mode, images, labels, n, loss);
}
static tsr_status st_evaluate(void *mode, const tsr_dataset *d, double *accuracy, double *loss) {
    return tsr_async_evaluate(mode, d, accuracy, loss); /* collective */
}
static tsr_status st_get(void *mode, float *dst, size_t count) {
    return tsr_async_get_params(mode, dst, count); /* collective */
}
static tsr_status st_set(void *mode, const float *src, size_t count) {
    return tsr_async_set_params(mode, src, count);
}
static tsr_status st_grads(void *mode, float *dst, size_t count) {
    tsr_async *a = mode; /* a worker's last pushed gradient; a server applies its workers' */
    if (a->server >= 0)
        return tsr_error(a->run.ctx, TSR_ERR_UNSUPPORTED, "async server rank %d has no gradient of its "
                         "own: it applies its workers' as they come", a->rank);
    return tsr_run_read_grads(&a->run, a->stage, dst, count);
}
static tsr_status st_save(void *mode, const char *path) { return tsr_async_save(mode, path); }
static tsr_status st_load(void *mode, const char *path) { return tsr_async_load(mode, path); }
/* the workers split the data (and the global batch) as data mode's ranks do; a server reads as
 * worker 0 (its step serves the workers' steps, its batch is unused) */
static tsr_status st_shard(tsr_context *ctx, const tsr_trainer_options *o, size_t global_batch,
                           uint64_t seed, tsr_data_split *split, size_t *shares) {
    int size = o->comm ? tsr_comm_size(o->comm) : 1, rank = o->comm ? tsr_comm_rank(o->comm) : 0;
    int servers = o->async_servers ? o->async_servers : 1, workers = size - servers;
    if (workers < 1 || global_batch < (size_t)workers)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "async: %d servers on %d ranks, global batch %zu: need a worker and a "
                         "sample per worker", servers, size, global_batch);
    split->loader = (tsr_loader_options){global_batch / (size_t)workers, seed, 1,
                                         rank >= servers ? rank - servers : 0, workers, 1};
    split->step_batch = global_batch;
    split->step_samples = global_batch; /* a server's step: every worker's batch */
    for (int r = 0; r < size; r++) shares[r] = r < servers ? 0 : split->loader.batch;
    return TSR_OK;
}

const tsr_strategy tsr_strategy_async = {"async", st_validate, st_create, st_destroy, st_run, st_step,
                                         st_evaluate, st_get, st_set, st_grads, st_save, st_load, st_shard};
