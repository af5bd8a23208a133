/* Asynchronous SGD with a parameter server (lib/train/async.c) under mpiexec -n 1..4:
 *  - one worker with staleness 0 does the single-process trainer's arithmetic: parameters
 *    bitwise equal after the same batches, with one server and with the parameters sharded
 *    over two servers (n >= 3); its checkpoint loads into a single-process trainer unchanged;
 *  - several workers converge on the synthetic task of test_dp to a loss within 0.15 (stated
 *    margin) of data-parallel training of the same samples (a single-process trainer on the
 *    global batch: test_dp shows the two equal), with one server (plain and staleness-aware
 *    learning rate) and with two (n = 4);
 *  - n = 4: 2 servers + 2 workers taking turns (a token passed between the workers) equal
 *    1 server + the same workers and the sequential trainer, bitwise;
 *  - the staleness bound holds with a slow worker (one that starts its step t only after every
 *    other worker has finished step t + s, told by messages): max clock staleness <= s for
 *    s = 0, 1, 2, and reaches s when there are two workers or more (the bound matters);
 *  - Fashion-MNIST mlp, 2 workers (n = 3), 150 steps of 32: test accuracy >= 0.75;
 *  - non-finite gradients: skip drops that gradient, stop fails the server's step and the
 *    worker's next pull;
 *  - a stop request on the server or on a worker interrupts every rank within the staleness
 *    bound plus a step, and the collective save follows;
 *  - a server stepping more often than its workers fails instead of hanging;
 *  - bad options are refused naming what was wrong.
 * Fault mode (tests/fault/async-worker-kill.sh): --die-rank R --die-step K.
 * Prints each failure and exits non-zero. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mpi.h>
#include "tessera.h"
#include "lib/train/async.h"
#include "tests/support/mode_harness.h"
#include "tests/support/mpi_check.h"

static int rank, nranks;

enum { FEATURES = TSR_MH_FEATURES, SAMPLES = 480 };

static void options(tsr_trainer_options *o, tsr_comm *comm, size_t b) {
    tsr_trainer_options_init(o);
    o->batch = b;
    o->comm = comm;
    o->mode = TSR_MODE_ASYNC;
    o->optimizer.lr = 1e-2f;
}

/* Batch t of worker w of W: samples ((t * W + w) * b + j) mod count, so the W workers' batches of
 * step t together are the global batch t of a single trainer with batch W * b. */
static void batch(const tsr_dataset *d, int t, int w, int W, size_t b, float *x, int32_t *y) {
    for (size_t j = 0; j < b; j++) {
        size_t i = (((size_t)t * (size_t)W + (size_t)w) * b + j) % d->count;
        memcpy(x + j * d->features, d->images + i * d->features, d->features * sizeof(float));
        y[j] = d->labels[i];
    }
}

/* The order in which workers step, kept by messages between them on MPI_COMM_WORLD (the
 * library works on its own duplicate of it). */
enum order {
    ORDER_FREE,  /* each worker as fast as it can */
    ORDER_TURNS, /* worker 0's step t, worker 1's, ..., worker 0's step t + 1: each takes a token
                  * from the previous worker before its step and passes it on after it */
    ORDER_SLOW,  /* the last worker starts step t after every other worker has finished step
                  * t + staleness (or all its steps): the others run as far ahead as the bound
                  * lets them, each telling the last worker every step it finished */
};
enum { TAG_ORDER = 7700 };

typedef struct run_cfg {
    int servers, staleness, steps;
    size_t b;
    enum order order;
    int staleness_lr;  /* 1: lr / max(1, update staleness) */
} run_cfg;

/* Worker w of W (world rank `me`, worker 0 at world rank me - w) waits for its turn at step t. */
static void order_before(const run_cfg *c, int me, int w, int W, int t) {
    int token;
    if (c->order == ORDER_TURNS && W > 1 && (w > 0 || t > 0))
        MPI_Recv(&token, 1, MPI_INT, me - w + (w + W - 1) % W, TAG_ORDER, MPI_COMM_WORLD,
                 MPI_STATUS_IGNORE);
    if (c->order == ORDER_SLOW && w == W - 1) {
        /* each other worker sends one token per step it finished; before step t the last
         * worker takes those of steps (had, need]: had was needed before step t - 1 */
        int last = c->steps - 1, need = t + c->staleness < last ? t + c->staleness : last,
            had = t == 0 ? -1 : t - 1 + c->staleness < last ? t - 1 + c->staleness : last;
        for (int v = 0; v < W - 1; v++)
            for (int k = had; k < need; k++) {
                MPI_Recv(&token, 1, MPI_INT, me - w + v, TAG_ORDER, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                CHECK(token == k + 1, "worker %d's token for step %d, %d expected", v, token, k + 1);
            }
    }
}

/* ... and tells the next worker that it finished step t. */
static void order_after(const run_cfg *c, int me, int w, int W, int t) {
    if (c->order == ORDER_TURNS && W > 1 && (w < W - 1 || t + 1 < c->steps))
        MPI_Send(&t, 1, MPI_INT, me - w + (w + 1) % W, TAG_ORDER, MPI_COMM_WORLD);
    if (c->order == ORDER_SLOW && w < W - 1)
        MPI_Send(&t, 1, MPI_INT, me - w + W - 1, TAG_ORDER, MPI_COMM_WORLD);
}

/* Trains on comm; every rank returns the final parameters (params, may be NULL), the server
 * stats of rank 0, and the evaluation of the final parameters on d. */
static void run_async(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d,
                      const run_cfg *c, float *params, tsr_async_stats *st, double *acc,
                      double *loss, const char *save) {
    tsr_trainer_options o;
    options(&o, comm, c->b);
    tsr_async_options ao = {c->servers, c->staleness, c->staleness_lr};
    tsr_async *a = NULL;
    CHECK_OK(tsr_async_create(ctx, m, &o, &ao, &a), ctx);
    if (!a) return;
    int me = tsr_comm_rank(comm), W = tsr_comm_size(comm) - c->servers, w = me - c->servers;
    /* the workers are the last W ranks of comm and of MPI_COMM_WORLD (comm is the world or a
     * split of it that keeps the ranks' order and the last ranks) */
    const int world_me = rank;
    float *x = malloc(c->b * d->features * sizeof *x);
    int32_t *y = malloc(c->b * sizeof *y);
    for (int t = 0; t < c->steps; t++) {
        if (w >= 0) order_before(c, world_me, w, W, t);
        batch(d, t, w < 0 ? 0 : w, W, c->b, x, y);
        float l;
        tsr_status s = tsr_async_step(a, x, y, c->b, &l);
        CHECK(s == TSR_OK, "step %d: %s", t, tsr_context_last_error(ctx));
        if (s != TSR_OK) break;
        if (w >= 0) order_after(c, world_me, w, W, t);
    }
    CHECK(tsr_async_steps(a) == (uint64_t)c->steps, "%s did %llu steps, %d expected",
          tsr_async_is_server(a) ? "server" : "worker", (unsigned long long)tsr_async_steps(a),
          c->steps);
    size_t np = tsr_model_param_count(m);
    if (params) CHECK_OK(tsr_async_get_params(a, params, np), ctx);
    if (acc || loss) CHECK_OK(tsr_async_evaluate(a, d, acc, loss), ctx);
    if (save) CHECK_OK(tsr_async_save(a, save), ctx);
    if (st) tsr_async_stats_get(a, st);
    tsr_async_free(a);
    free(x);
    free(y);
}

/* The single-process trainer on W workers' batches at once (data mode's arithmetic). */
static tsr_trainer *reference(tsr_context *ctx, const tsr_model *m, const tsr_dataset *d, int W,
                              size_t b, int steps) {
    tsr_trainer_options o;
    options(&o, NULL, b * (size_t)W);
    o.mode = TSR_MODE_DATA;
    tsr_trainer *t = NULL;
    CHECK_OK(tsr_trainer_create(ctx, m, &o, &t), ctx);
    float *x = malloc(b * (size_t)W * d->features * sizeof *x);
    int32_t *y = malloc(b * (size_t)W * sizeof *y);
    for (int s = 0; t && s < steps; s++) {
        batch(d, s, 0, 1, b * (size_t)W, x, y);
        CHECK_OK(tsr_trainer_step(t, x, y, b * (size_t)W, NULL), ctx);
    }
    free(x);
    free(y);
    return t;
}

/* One worker, staleness 0: bitwise the single-process trainer, with 1 and 2 servers. */
static void test_sequential(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d) {
    char ck[256];
    tsr_mh_shared_path(ck, sizeof ck, "test-async", ".ckpt");
    for (int servers = 1; servers <= 2 && servers + 1 <= nranks; servers++) {
        tsr_comm *sub = NULL;
        CHECK_OK(tsr_comm_split(comm, rank <= servers ? 0 : 1, rank, &sub), ctx);
        if (!sub) return;
        size_t np = tsr_model_param_count(m);
        float *p = calloc(np, sizeof *p), *q = calloc(np, sizeof *q);
        if (rank <= servers) {
            run_cfg c = {servers, 0, 25, 16, ORDER_FREE, 0};
            run_async(ctx, sub, m, d, &c, p, NULL, NULL, NULL, ck);
            if (rank == 0) {
                tsr_trainer *t = reference(ctx, m, d, 1, 16, 25);
                CHECK_OK(tsr_trainer_get_params(t, q, np), ctx);
                size_t diff = 0;
                for (size_t i = 0; i < np; i++) diff += memcmp(&p[i], &q[i], sizeof *p) != 0;
                CHECK(diff == 0, "%d server(s), 1 worker: %zu of %zu parameters differ from the trainer's",
                      servers, diff, np);
                tsr_trainer *u = NULL;
                tsr_trainer_options o;
                options(&o, NULL, 16);
                o.mode = TSR_MODE_DATA;
                CHECK_OK(tsr_trainer_create(ctx, m, &o, &u), ctx);
                CHECK_OK(tsr_trainer_load(u, ck), ctx);
                CHECK_OK(tsr_trainer_get_params(u, q, np), ctx);
                CHECK(!memcmp(p, q, np * sizeof *p), "%d server(s): the checkpoint's parameters differ",
                      servers);
                CHECK(tsr_trainer_steps(u) == 25, "checkpoint step %llu, 25 expected",
                      (unsigned long long)tsr_trainer_steps(u));
                tsr_trainer_free(u);
                tsr_trainer_free(t);
                remove(ck);
            }
        }
        free(p);
        free(q);
        tsr_comm_free(sub);
        MPI_Barrier(MPI_COMM_WORLD);
    }
}

/* n = 4: 2 servers + 2 workers against 1 server + the same 2 workers (ranks 0, 2, 3), staleness
 * 0, the workers taking turns (ORDER_TURNS) so that each round runs worker 0 then worker 1 on
 * the parameters the other left: worker 1 sends its pull only after worker 0's push was sent,
 * and a server applies a push as soon as it takes its header, polling workers in rank order
 * (worker 0's next pull waits for worker 1's push through the bound). The library sends no
 * acknowledgement of a push, so the order is also checked: update staleness 0 on every server.
 * Both runs must then equal the single-process trainer fed the batches in that order,
 * bitwise: the same arithmetic per shard. */
static void test_sharded(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d) {
    size_t np = tsr_model_param_count(m);
    float *p[2] = {calloc(np, sizeof(float)), calloc(np, sizeof(float))};
    uint64_t worst = 0;
    for (int servers = 2; servers >= 1; servers--) {
        tsr_comm *sub = NULL;
        CHECK_OK(tsr_comm_split(comm, servers == 1 && rank == 1 ? 1 : 0, rank, &sub), ctx);
        if (sub && !(servers == 1 && rank == 1)) {
            run_cfg c = {servers, 0, 10, 8, ORDER_TURNS, 0};
            tsr_async_stats st;
            memset(&st, 0, sizeof st);
            run_async(ctx, sub, m, d, &c, p[servers - 1], &st, NULL, NULL, NULL);
            if (st.update_max > worst) worst = st.update_max;
        }
        tsr_comm_free(sub);
        MPI_Barrier(MPI_COMM_WORLD);
    }
    uint64_t all = 0;
    MPI_Allreduce(&worst, &all, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    CHECK(all == 0, "sharded: update staleness %llu, the workers' turns did not hold",
          (unsigned long long)all);
    if (rank == 0) {
        tsr_trainer_options o;
        options(&o, NULL, 8);
        o.mode = TSR_MODE_DATA;
        tsr_trainer *t = NULL;
        CHECK_OK(tsr_trainer_create(ctx, m, &o, &t), ctx);
        float x[8 * FEATURES];
        int32_t y[8];
        for (int s = 0; t && s < 10; s++)
            for (int w = 0; w < 2; w++) {
                batch(d, s, w, 2, 8, x, y);
                CHECK_OK(tsr_trainer_step(t, x, y, 8, NULL), ctx);
            }
        float *q = calloc(np, sizeof *q);
        if (t) CHECK_OK(tsr_trainer_get_params(t, q, np), ctx);
        for (int k = 0; k < 2; k++) {
            size_t diff = 0;
            for (size_t i = 0; i < np; i++) diff += memcmp(&p[k][i], &q[i], sizeof *q) != 0;
            CHECK(diff == 0, "%d server(s), 2 workers in turn: %zu of %zu parameters differ from the "
                  "sequential trainer's", k + 1, diff, np);
        }
        printf("sharded: 2 servers and 1 server, 2 workers in turn: bitwise the sequential trainer\n");
        free(q);
        tsr_trainer_free(t);
    }
    free(p[0]);
    free(p[1]);
}

/* Several workers: final loss within 0.15 of data-parallel training on the same samples. */
static void test_converge(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d) {
    /* 1 server; 1 server with the staleness-aware rate; 2 servers (n = 4) */
    for (int cfg = 0; cfg < (nranks == 4 ? 3 : 2); cfg++) {
        int servers = cfg == 2 ? 2 : 1, slr = cfg == 1;
        int W = nranks - servers, steps = 60;
        run_cfg c = {servers, 1, steps, 16, ORDER_FREE, slr};
        double acc = 0, loss = 0;
        run_async(ctx, comm, m, d, &c, NULL, NULL, &acc, &loss, NULL);
        if (rank == 0) {
            tsr_trainer *t = reference(ctx, m, d, W, 16, steps);
            double racc = 0, rloss = 0;
            CHECK_OK(tsr_trainer_evaluate(t, d, &racc, &rloss), ctx);
            printf("converge: %d server(s), %d workers%s: async loss %.4f acc %.3f; data mode loss %.4f "
                   "acc %.3f\n", servers, W, slr ? " (lr / staleness)" : "", loss, acc, rloss, racc);
            CHECK(loss <= rloss + 0.15, "%d server(s), %d workers: loss %g, data mode %g (margin 0.15)",
                  servers, W, loss, rloss);
            CHECK(acc >= 0.9, "%d server(s), %d workers: accuracy %g < 0.9", servers, W, acc);
            tsr_trainer_free(t);
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
}

static void test_staleness(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d) {
    int W = nranks - 1;
    for (int s = 0; s <= 2; s++) {
        run_cfg c = {1, s, 12, 8, ORDER_SLOW, 0};
        tsr_async_stats st;
        memset(&st, 0, sizeof st);
        run_async(ctx, comm, m, d, &c, NULL, &st, NULL, NULL, NULL);
        if (rank == 0) {
            printf("staleness bound %d, %d workers (one slow): clock staleness mean %.2f max %llu; "
                   "update staleness mean %.2f max %llu\n", s, W, st.clock_mean,
                   (unsigned long long)st.clock_max, st.update_mean, (unsigned long long)st.update_max);
            CHECK(st.applied == (uint64_t)(12 * W), "applied %llu gradients, %d expected",
                  (unsigned long long)st.applied, 12 * W);
            CHECK(st.clock_max <= (uint64_t)s, "bound %d: max clock staleness %llu", s,
                  (unsigned long long)st.clock_max);
            if (W >= 2)
                CHECK(st.clock_max == (uint64_t)s, "bound %d with a slow worker: max staleness %llu",
                      s, (unsigned long long)st.clock_max);
        }
    }
}

static void test_fashion(tsr_context *ctx, tsr_comm *comm) {
    tsr_dataset *train = NULL, *test = NULL;
    const char *dir = "/usr/share/datasets/fashion-mnist";
    if (tsr_mh_fmnist(ctx, dir, 0, 2000, 0, &train, &test) != TSR_OK) {
        if (rank == 0) SKIP("fashion-mnist: missing Fashion-MNIST in %s (%s)", dir,
                            tsr_context_last_error(ctx));
        return;
    }
    tsr_model *m = NULL;
    tsr_model_input in = {1, 28, 28, 10};
    CHECK_OK(tsr_model_parse(ctx, "dense:128,relu,dense:10", in, &m), ctx);
    tsr_trainer_options o;
    options(&o, comm, 32);
    o.optimizer.lr = 1e-3f;
    tsr_async_options ao = {1, 2, 0};
    tsr_async *a = NULL;
    CHECK_OK(tsr_async_create(ctx, m, &o, &ao, &a), ctx);
    float *x = malloc(32 * 784 * sizeof *x);
    int32_t *y = malloc(32 * sizeof *y);
    for (int t = 0; a && t < 150; t++) {
        batch(train, t, rank - 1 < 0 ? 0 : rank - 1, nranks - 1, 32, x, y);
        CHECK_OK(tsr_async_step(a, x, y, 32, NULL), ctx);
    }
    double acc = 0;
    if (a) CHECK_OK(tsr_async_evaluate(a, test, &acc, NULL), ctx);
    if (rank == 0) printf("fashion-mnist mlp, 2 workers, 150 steps of 32: test accuracy %.3f\n", acc);
    CHECK(acc >= 0.75, "fashion-mnist accuracy %g < 0.75", acc);
    tsr_async_free(a);
    free(x);
    free(y);
    tsr_model_free(m);
    tsr_dataset_free(ctx, train);
    tsr_dataset_free(ctx, test);
}

/* NaN in worker 1's gradient at step 2 (fault_grad_nan_step): skip and stop. */
static void test_nonfinite(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d) {
    tsr_comm *sub = NULL;
    CHECK_OK(tsr_comm_split(comm, rank <= 1 ? 0 : 1, rank, &sub), ctx);
    for (int pol = 0; sub && rank <= 1 && pol < 2; pol++) {
        tsr_trainer_options o;
        options(&o, sub, 8);
        o.nonfinite = pol ? TSR_NONFINITE_SKIP : TSR_NONFINITE_STOP;
        if (rank == 1) o.fault_grad_nan_step = 2;
        tsr_async_options ao = {1, 0, 0};
        tsr_async *a = NULL;
        CHECK_OK(tsr_async_create(ctx, m, &o, &ao, &a), ctx);
        if (!a) break;
        float x[8 * FEATURES];
        int32_t y[8];
        tsr_status s = TSR_OK;
        int t = 0;
        for (; t < 6 && s == TSR_OK; t++) {
            batch(d, t, 0, 1, 8, x, y);
            s = tsr_async_step(a, x, y, 8, NULL);
        }
        if (pol) {
            CHECK(s == TSR_OK, "skip: %s", tsr_context_last_error(ctx));
            if (rank == 0)
                CHECK(tsr_async_skipped(a) == 1, "skip: %llu gradients skipped, 1 expected",
                      (unsigned long long)tsr_async_skipped(a));
        } else {
            CHECK(s == TSR_ERR_NUMERIC, "stop: %s, TSR_ERR_NUMERIC expected", tsr_status_name(s));
            /* the server fails in its step 3 (applying step 2), the worker at the next pull */
            CHECK(t == 3 + rank, "stop: failed at step %d, %d expected", t - 1, 2 + rank);
            if (rank == 0)
                CHECK(strstr(tsr_context_last_error(ctx), "gradient") != NULL, "stop: '%s'",
                      tsr_context_last_error(ctx));
        }
        tsr_async_free(a);
    }
    tsr_comm_free(sub);
    MPI_Barrier(MPI_COMM_WORLD);
}

/* A stop request (options.stop_flag, what tsr-train's SIGTERM handler sets) on one rank, the
 * server's (rank 0) or the last worker's, before step 3: it travels in the messages, so every
 * rank's step returns TSR_ERR_INTERRUPTED within staleness + 1 steps of step 3 (the ranks are
 * that far apart: a pull is sent, with the request, before the bound lets it be answered), the
 * server's interrupted step counted; then the collective save succeeds on every rank, and a clean trainer loads it. */
static void test_stop_request(tsr_context *ctx, tsr_comm *comm, const tsr_model *m,
                              const tsr_dataset *d) {
    char ck[256];
    tsr_mh_shared_path(ck, sizeof ck, "test-async-stop", ".ckpt");
    for (int who = 0; who < 2; who++) {
        int stopper = who ? nranks - 1 : 0;
        static volatile sig_atomic_t stop;
        stop = 0;
        tsr_trainer_options o;
        options(&o, comm, 8);
        o.stop_flag = &stop;
        tsr_async_options ao = {1, 1, 0};
        tsr_async *a = NULL;
        CHECK_OK(tsr_async_create(ctx, m, &o, &ao, &a), ctx);
        if (!a) return;
        int W = nranks - 1, w = rank - 1;
        float x[8 * FEATURES];
        int32_t y[8];
        tsr_status s = TSR_OK;
        int t = 0;
        for (; t < 12 && s == TSR_OK; t++) {
            if (rank == stopper && t == 3) stop = 1;
            batch(d, t, w < 0 ? 0 : w, W, 8, x, y);
            s = tsr_async_step(a, x, y, 8, NULL);
        }
        t--; /* the step that returned s */
        CHECK(s == TSR_ERR_INTERRUPTED, "stopper rank %d: rank %d ended with %s at step %d (%s)",
              stopper, rank, tsr_status_name(s), t, tsr_context_last_error(ctx));
        int lo = 3 - ao.staleness - 1, hi = 3 + ao.staleness + 1;
        CHECK(t >= lo && t <= hi, "stopper rank %d: rank %d interrupted at step %d, %d..%d expected",
              stopper, rank, t, lo, hi);
        if (rank == 0 && s == TSR_ERR_INTERRUPTED)
            CHECK(tsr_async_steps(a) == (uint64_t)t + 1, "the server counted %llu steps, %d expected",
                  (unsigned long long)tsr_async_steps(a), t + 1);
        CHECK_OK(tsr_async_save(a, ck), ctx);
        uint64_t saved = tsr_async_steps(a);
        tsr_async_free(a);
        MPI_Bcast(&saved, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD); /* the server's count is saved */
        if (rank == 0) {
            tsr_trainer_options lo;
            options(&lo, NULL, 8);
            lo.mode = TSR_MODE_DATA;
            tsr_trainer *u = NULL;
            CHECK_OK(tsr_trainer_create(ctx, m, &lo, &u), ctx);
            if (u) {
                CHECK_OK(tsr_trainer_load(u, ck), ctx);
                CHECK(tsr_trainer_steps(u) == saved, "checkpoint at step %llu, %llu expected",
                      (unsigned long long)tsr_trainer_steps(u), (unsigned long long)saved);
            }
            tsr_trainer_free(u);
            remove(ck);
        }
        MPI_Barrier(MPI_COMM_WORLD);
    }
}

/* tsr_trainer_get_grads in async mode: the worker's last pushed gradient is bitwise the
 * single-process trainer's first-step gradient (the same parameters, batch and dropout seed);
 * a server has none of its own. */
static void test_grads(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d) {
    tsr_comm *sub = NULL;
    CHECK_OK(tsr_comm_split(comm, rank <= 1 ? 0 : 1, rank, &sub), ctx);
    if (sub && rank <= 1) {
        size_t np = tsr_model_param_count(m);
        float x[8 * FEATURES], *g = calloc(np, sizeof *g), *ref = calloc(np, sizeof *ref);
        int32_t y[8];
        batch(d, 0, 0, 1, 8, x, y);
        tsr_trainer_options o;
        options(&o, NULL, 8);
        o.mode = TSR_MODE_DATA;
        tsr_trainer *t = NULL;
        CHECK_OK(tsr_trainer_create(ctx, m, &o, &t), ctx);
        if (t) CHECK_OK(tsr_trainer_step(t, x, y, 8, NULL), ctx);
        if (t) CHECK_OK(tsr_trainer_get_grads(t, ref, np), ctx);
        tsr_trainer_free(t);
        t = NULL;
        options(&o, sub, 8);
        CHECK_OK(tsr_trainer_create(ctx, m, &o, &t), ctx);
        if (t) CHECK_OK(tsr_trainer_step(t, x, y, 8, NULL), ctx);
        if (t && rank == 1) {
            CHECK_OK(tsr_trainer_get_grads(t, g, np), ctx);
            CHECK(!memcmp(g, ref, np * sizeof *g), "worker's gradient differs from the trainer's");
        } else if (t) {
            tsr_status s = tsr_trainer_get_grads(t, g, np);
            CHECK(s == TSR_ERR_UNSUPPORTED, "server get_grads: %s, TSR_ERR_UNSUPPORTED expected",
                  tsr_status_name(s));
        }
        tsr_trainer_free(t);
        free(g);
        free(ref);
    }
    tsr_comm_free(sub);
    MPI_Barrier(MPI_COMM_WORLD);
}

/* Two servers, one worker whose step 1 has a NaN gradient in the second server's shard: with
 * SKIP every server drops that step (not only the one holding the NaN). */
static void test_nonfinite_sharded(tsr_context *ctx, tsr_comm *comm, const tsr_model *m,
                                   const tsr_dataset *d) {
    tsr_comm *sub = NULL;
    CHECK_OK(tsr_comm_split(comm, rank <= 2 ? 0 : 1, rank, &sub), ctx);
    if (sub && rank <= 2) {
        tsr_trainer_options o;
        options(&o, sub, 8);
        o.nonfinite = TSR_NONFINITE_SKIP;
        o.fault_grad_nan_step = 1; /* gradient np / 2: the second of two shards */
        tsr_async_options ao = {2, 0, 0};
        tsr_async *a = NULL;
        CHECK_OK(tsr_async_create(ctx, m, &o, &ao, &a), ctx);
        float x[8 * FEATURES];
        int32_t y[8];
        for (int t = 0; a && t < 3; t++) {
            batch(d, t, 0, 1, 8, x, y);
            CHECK_OK(tsr_async_step(a, x, y, 8, NULL), ctx);
        }
        if (a && tsr_async_is_server(a)) {
            tsr_async_stats st;
            tsr_async_stats_get(a, &st);
            CHECK(tsr_async_skipped(a) == 1 && st.applied == 2,
                  "server rank %d: %llu skipped, %llu applied; 1 and 2 expected", rank,
                  (unsigned long long)tsr_async_skipped(a), (unsigned long long)st.applied);
        }
        tsr_async_free(a);
    }
    tsr_comm_free(sub);
    MPI_Barrier(MPI_COMM_WORLD);
}

/* The server steps once more than the worker, which went on to get_params: the server's extra
 * step fails (TSR_ERR_STATE, not a hang), then both meet at get_params. */
static void test_uneven(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d) {
    tsr_comm *sub = NULL;
    CHECK_OK(tsr_comm_split(comm, rank <= 1 ? 0 : 1, rank, &sub), ctx);
    if (sub && rank <= 1) {
        tsr_trainer_options o;
        options(&o, sub, 8);
        tsr_async_options ao = {1, 0, 0};
        tsr_async *a = NULL;
        CHECK_OK(tsr_async_create(ctx, m, &o, &ao, &a), ctx);
        float x[8 * FEATURES];
        int32_t y[8];
        for (int t = 0; a && t < 2; t++) {
            batch(d, t, 0, 1, 8, x, y);
            CHECK_OK(tsr_async_step(a, x, y, 8, NULL), ctx);
        }
        if (a && rank == 0) {
            tsr_status s = tsr_async_step(a, x, y, 8, NULL);
            CHECK(s == TSR_ERR_STATE, "extra server step: %s, TSR_ERR_STATE expected", tsr_status_name(s));
            CHECK(strstr(tsr_context_last_error(ctx), "same number of steps") != NULL, "'%s'",
                  tsr_context_last_error(ctx));
        }
        size_t np = tsr_model_param_count(m);
        float *p = malloc(np * sizeof *p);
        if (a) CHECK_OK(tsr_async_get_params(a, p, np), ctx);
        free(p);
        tsr_async_free(a);
    }
    tsr_comm_free(sub);
    MPI_Barrier(MPI_COMM_WORLD);
}

static void expect_error(tsr_context *ctx, tsr_status got, tsr_status want, const char *word) {
    CHECK(got == want, "expected %s, got %s", tsr_status_name(want), tsr_status_name(got));
    CHECK(strstr(tsr_context_last_error(ctx), word) != NULL, "error '%s' does not name '%s'",
          tsr_context_last_error(ctx), word);
}

static void test_errors(tsr_context *ctx, tsr_comm *comm, const tsr_model *m) {
    tsr_trainer_options o;
    options(&o, NULL, 8);
    tsr_async_options ao = {1, 0, 0};
    tsr_async *a = NULL;
    expect_error(ctx, tsr_async_create(ctx, m, &o, &ao, &a), TSR_ERR_INVALID_ARG, "communicator");
    o.comm = comm;
    ao.servers = nranks; /* no worker */
    expect_error(ctx, tsr_async_create(ctx, m, &o, &ao, &a), TSR_ERR_INVALID_ARG, "no worker");
    ao.servers = -1;
    expect_error(ctx, tsr_async_create(ctx, m, &o, &ao, &a), TSR_ERR_INVALID_ARG, "servers -1");
    ao.servers = 1;
    if (nranks > 1) { /* one rank: the missing worker is named first */
        ao.staleness = -1;
        expect_error(ctx, tsr_async_create(ctx, m, &o, &ao, &a), TSR_ERR_INVALID_ARG,
                     "staleness bound -1");
        ao.staleness = 0;
        ao.staleness_lr = 2;
        expect_error(ctx, tsr_async_create(ctx, m, &o, &ao, &a), TSR_ERR_INVALID_ARG, "staleness_lr 2");
        ao.staleness_lr = 0;
        o.compress = TSR_COMPRESS_FP16;
        expect_error(ctx, tsr_async_create(ctx, m, &o, &ao, &a), TSR_ERR_UNSUPPORTED, "compression");
    }
    CHECK(a == NULL, "a refused create left a handle");
    int v = -5;
    CHECK(tsr_async_staleness_parse("inf", &v) == TSR_OK && v == TSR_ASYNC_UNBOUNDED, "parse inf");
    CHECK(tsr_async_staleness_parse("3", &v) == TSR_OK && v == 3, "parse 3");
    CHECK(tsr_async_staleness_parse("-1", &v) == TSR_ERR_PARSE, "parse -1 accepted");
    CHECK(tsr_async_staleness_parse("2x", &v) == TSR_ERR_PARSE, "parse 2x accepted");
}

/* Fault mode: 1 server, workers; rank die_rank kills itself before step die_step. Survivors
 * train 40 steps and print what they saw. Exit: 0 done, 3 peer lost, 4 other error. */
static int fault_mode(tsr_context *ctx, tsr_comm *comm, int die_rank, int die_step) {
    tsr_dataset *d = tsr_mh_synthetic_data(ctx, SAMPLES);
    tsr_model *m = tsr_mh_synthetic_model(ctx, "dense:64,relu,dense:10");
    if (!d || !m) return 4;
    tsr_trainer_options o;
    options(&o, comm, 8);
    tsr_async_options ao = {1, 1, 0};
    tsr_async *a = NULL;
    if (tsr_async_create(ctx, m, &o, &ao, &a) != TSR_OK) return 4;
    float x[8 * FEATURES];
    int32_t y[8];
    int rc = 0;
    for (int t = 0; t < 40 && !rc; t++) {
        if (rank == die_rank && t == die_step) raise(SIGKILL);
        batch(d, t, rank, nranks, 8, x, y);
        tsr_status s = tsr_async_step(a, x, y, 8, NULL);
        if (s != TSR_OK) {
            fprintf(stderr, "rank %d: step %d: %s (%s)\n", rank, t, tsr_context_last_error(ctx),
                    tsr_status_name(s));
            rc = s == TSR_ERR_PEER_LOST ? 3 : 4;
        }
    }
    tsr_async_stats st;
    tsr_async_stats_get(a, &st);
    if (!rc)
        fprintf(stderr, "rank %d: finished %llu steps; workers lost %llu, gradients applied %llu\n",
                rank, (unsigned long long)tsr_async_steps(a), (unsigned long long)st.workers_lost,
                (unsigned long long)st.applied);
    tsr_async_free(a);
    tsr_model_free(m);
    tsr_dataset_free(ctx, d);
    return rc;
}

int main(int argc, char **argv) {
    int die_rank = -1, die_step = -1;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--die-rank")) die_rank = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--die-step")) die_step = atoi(argv[i + 1]);
    }
    tsr_mh_world w;
    tsr_status ws = tsr_mh_world_init(&w, &argc, &argv, TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC);
    rank = mpi_check_rank = w.rank;
    nranks = w.nranks;
    tsr_context *ctx = w.ctx;
    tsr_comm *comm = w.comm;
    CHECK_OK(ws, ctx);
    if (die_rank >= 0) {
        signal(SIGUSR1, SIG_IGN); /* hydra's notice of a lost rank: the library must notice */
        int rc = fault_mode(ctx, comm, die_rank, die_step);
        fflush(stderr);
        _exit(rc); /* a peer is gone: MPI_Finalize would wait for it */
    }
    tsr_dataset *d = tsr_mh_synthetic_data(ctx, SAMPLES);
    tsr_model *m = tsr_mh_synthetic_model(ctx, "dense:64,relu,dense:32,relu,dense:10");
    CHECK(m, "model: %s", tsr_context_last_error(ctx));
    if (comm && d && m) {
        test_errors(ctx, comm, m);
        if (nranks >= 2) {
            test_sequential(ctx, comm, m, d);
            test_nonfinite(ctx, comm, m, d);
            test_stop_request(ctx, comm, m, d);
            test_grads(ctx, comm, m, d);
            test_uneven(ctx, comm, m, d);
            test_staleness(ctx, comm, m, d);
        }
        if (nranks >= 3) test_converge(ctx, comm, m, d);
        if (nranks >= 3) test_nonfinite_sharded(ctx, comm, m, d);
        if (nranks == 3) test_fashion(ctx, comm);
        if (nranks == 4) test_sharded(ctx, comm, m, d);
    }
    tsr_model_free(m);
    tsr_dataset_free(ctx, d);
    return tsr_mh_world_end(&w, failures, skips, "test_async");
}
