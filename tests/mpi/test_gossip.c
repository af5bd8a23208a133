/* Gossip averaging (lib/train/gossip.c) under mpiexec -n 1..4:
 *  - a gossip trainer without peers equals the single-process trainer bitwise (with dropout);
 *  - mixing only (learning rate 0), ring and exponential graph: every rank's consensus distance
 *    matches a plain-C double reference of x <- W(t) x over all ranks; it shrinks at least as
 *    fast as the spectral bound (ring: second-largest eigenvalue modulus of W, closed form
 *    1/3 + 2/3 cos(2 pi k / n); exponential: largest singular value of the cycle's product minus
 *    the average, by power iteration) and, from W's slowest eigenvector, exactly at that rate;
 *    the mean over ranks is preserved within T * 2^-24 * max|x0| per element;
 *  - training on tests/mpi/test_dp.c's synthetic task reaches a loss within a margin of data-
 *    parallel training with the same per-rank batches; Fashion-MNIST mlp reaches an accuracy;
 *  - non-finite gradients on one rank: skipped there, nothing poisoned anywhere;
 *  - checkpoints: save writes the average; load makes every replica that average;
 *  - TSR_TIMELINE: every rank's steps, gossip waits and mixings in one trace;
 *  - bad options and arguments are refused naming them.
 * Fault mode (tests/fault/gossip-kill.sh): --die-rank R --die-step K. Measurement mode: --bench.
 * Prints each failure and exits non-zero. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mpi.h>
#include "lib/train/gossip.h"
#include "tessera.h"
#include "tests/support/mode_harness.h"
#include "tests/support/mpi_check.h"

static int rank, nranks;

enum { FEATURES = TSR_MH_FEATURES, SAMPLES = 480 };

static tsr_model *make_model(tsr_context *ctx, const char *spec) {
    tsr_model *m = tsr_mh_synthetic_model(ctx, spec);
    CHECK(m, "model: %s", tsr_context_last_error(ctx));
    return m;
}

static void options(tsr_trainer_options *o, tsr_comm *comm, size_t batch) {
    tsr_trainer_options_init(o);
    o->batch = batch;
    o->comm = comm;
    o->mode = TSR_MODE_GOSSIP;
    o->optimizer.lr = 3e-3f;
}

static double urand(uint64_t *s) { /* [-1, 1) */
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* ---- n = 1: the single-process trainer, bitwise ---- */

static void test_single(tsr_context *ctx, tsr_comm *comm, const tsr_dataset *d) {
    tsr_model *m = make_model(ctx, "dense:64,relu,dropout:0.25,dense:32,relu,dense:10");
    if (!m) return;
    size_t b = 16, np = tsr_model_param_count(m);
    tsr_trainer_options o;
    options(&o, NULL, b);
    tsr_trainer *t = NULL;
    tsr_gossip *g[2] = {NULL, NULL};
    tsr_gossip_options go = {TSR_GOSSIP_RING, 1, 0};
    o.mode = TSR_MODE_DATA;
    CHECK_OK(tsr_trainer_create(ctx, m, &o, &t), ctx);
    o.mode = TSR_MODE_GOSSIP;
    CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g[0]), ctx); /* no communicator */
    if (nranks == 1) { /* a communicator of one rank: no peers either */
        o.comm = comm;
        go.graph = TSR_GOSSIP_EXPONENTIAL;
        CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g[1]), ctx);
    }
    float *p0 = malloc(np * 4), *p1 = malloc(np * 4);
    for (int s = 0; s < 12 && t && g[0]; s++) {
        size_t off = (size_t)(s * 37) % (SAMPLES - b);
        const float *x = d->images + off * FEATURES;
        const int32_t *y = d->labels + off;
        float lt = 0, lg = 0;
        CHECK_OK(tsr_trainer_step(t, x, y, b, &lt), ctx);
        CHECK_OK(tsr_trainer_get_params(t, p0, np), ctx);
        for (int k = 0; k < 2; k++) {
            if (!g[k]) continue;
            CHECK_OK(tsr_gossip_step(g[k], x, y, b, &lg), ctx);
            CHECK_OK(tsr_gossip_get_params(g[k], p1, np), ctx);
            CHECK(!memcmp(p0, p1, np * 4) && lt == lg, "gossip %d without peers differs from the "
                  "trainer at step %d (loss %g vs %g)", k, s, (double)lg, (double)lt);
        }
    }
    double at = 0, ag = 0, lt = 0, lg = 0;
    if (t && g[0]) {
        CHECK_OK(tsr_trainer_evaluate(t, d, &at, &lt), ctx);
        CHECK_OK(tsr_gossip_evaluate(g[0], d, &ag, &lg), ctx);
        CHECK(at == ag && lt == lg, "evaluation %g/%g vs trainer %g/%g", ag, lg, at, lt);
        CHECK(tsr_gossip_steps(g[0]) == 12 && tsr_gossip_mixes(g[0]) == 0, "steps %llu mixes %llu",
              (unsigned long long)tsr_gossip_steps(g[0]), (unsigned long long)tsr_gossip_mixes(g[0]));
    }
    free(p0);
    free(p1);
    tsr_gossip_free(g[0]);
    tsr_gossip_free(g[1]);
    tsr_trainer_free(t);
    tsr_model_free(m);
}

/* ---- mixing only ---- */

/* W(t) of the library's graph as a dense n x n matrix. */
static void mixing_matrix(int graph, int n, uint64_t mix, double *W) {
    memset(W, 0, (size_t)n * n * sizeof *W);
    for (int i = 0; i < n; i++) {
        if (n == 1) {
            W[0] = 1;
        } else if (graph == TSR_GOSSIP_RING) {
            W[i * n + i] += 1.0 / 3;
            W[i * n + (i + 1) % n] += 1.0 / 3;
            W[i * n + (i + n - 1) % n] += 1.0 / 3;
        } else {
            int K = 0;
            while ((1 << K) < n) K++;
            int h = (1 << (int)(mix % (uint64_t)K)) % n;
            W[i * n + i] += 0.5;
            W[i * n + (i + n - h) % n] += 0.5;
        }
    }
}

/* Largest singular value of A (n x n) restricted to vectors orthogonal to 1, by power
 * iteration on A^T A. */
static double slem(const double *A, int n) {
    double v[8], w[8], u[8], norm = 0;
    for (int i = 0; i < n; i++) v[i] = cos(1.0 + 2.3 * i); /* generic start */
    for (int it = 0; it < 500; it++) {
        double mean = 0;
        for (int i = 0; i < n; i++) mean += v[i] / n;
        for (int i = 0; i < n; i++) v[i] -= mean;
        for (int i = 0; i < n; i++) {
            w[i] = 0;
            for (int j = 0; j < n; j++) w[i] += A[i * n + j] * v[j];
        }
        for (int i = 0; i < n; i++) {
            u[i] = 0;
            for (int j = 0; j < n; j++) u[i] += A[j * n + i] * w[j];
        }
        double nu = 0, nv = 0;
        for (int i = 0; i < n; i++) nu += u[i] * u[i], nv += v[i] * v[i];
        if (nv == 0 || nu == 0) return 0;
        norm = sqrt(sqrt(nu / nv)); /* ||A^T A v|| / ||v|| -> sigma^2 */
        for (int i = 0; i < n; i++) v[i] = u[i] / sqrt(nu);
    }
    return norm;
}

/* Consensus distance of X (n x np, double) as the library defines it. */
static double distance(const double *X, int n, size_t np) {
    double num = 0, den = 0;
    for (size_t j = 0; j < np; j++) {
        double mean = 0;
        for (int i = 0; i < n; i++) mean += X[(size_t)i * np + j] / n;
        den += mean * mean;
        for (int i = 0; i < n; i++) num += (X[(size_t)i * np + j] - mean) * (X[(size_t)i * np + j] - mean);
    }
    return num / n / den;
}

/* start 0: random replicas; 1: base + cos(2 pi i / n) * r (the ring's slowest eigenvector). */
static void run_mixing(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d,
                       int graph, int start) {
    const int T = 8, n = nranks;
    size_t b = 4, np = tsr_model_param_count(m);
    tsr_trainer_options o;
    options(&o, comm, b);
    tsr_gossip_options go = {graph, 1, 0};
    tsr_gossip *g = NULL;
    CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g), ctx);
    if (!g) return;
    double *X = malloc((size_t)n * np * sizeof *X), *Y = malloc((size_t)n * np * sizeof *Y);
    double W[64], P[64], Q[64];
    float *x = malloc(np * 4);
    CHECK_OK(tsr_gossip_get_params(g, x, np), ctx); /* the initialisation, same on every rank */
    uint64_t seed = 99;
    double maxabs = 0;
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < np; j++) {
            double r = urand(&seed);
            double v = start ? x[j] + 0.5 * cos(2 * M_PI * i / n) * r : x[j] + 0.5 * urand(&seed);
            X[(size_t)i * np + j] = (double)(float)v; /* what the replica holds */
        }
    for (size_t j = 0; j < (size_t)n * np; j++) maxabs = fmax(maxabs, fabs(X[j]));
    double *mean0 = calloc(np, sizeof *mean0);
    for (int i = 0; i < n; i++)
        for (size_t j = 0; j < np; j++) mean0[j] += X[(size_t)i * np + j] / n;
    for (size_t j = 0; j < np; j++) x[j] = (float)X[(size_t)rank * np + j];
    CHECK_OK(tsr_gossip_set_params(g, x, np), ctx);
    double d0 = 0, dlib = 0;
    CHECK_OK(tsr_gossip_consensus(g, &d0), ctx);
    double dref0 = distance(X, n, np);
    CHECK(fabs(d0 - dref0) <= 1e-5 * dref0, "%s: initial consensus distance %.9g, reference %.9g",
          tsr_gossip_graph_name(graph), d0, dref0);
    /* the rate: ring: SLEM of W (closed form); exponential: SLEM of one cycle's product */
    int K = 0;
    while ((1 << K) < n) K++;
    int cycle = graph == TSR_GOSSIP_RING ? 1 : (K ? K : 1);
    for (int i = 0; i < n * n; i++) P[i] = i % (n + 1) == 0;
    for (int c = 0; c < cycle; c++) {
        mixing_matrix(graph, n, (uint64_t)c, W);
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) {
                Q[i * n + j] = 0;
                for (int k = 0; k < n; k++) Q[i * n + j] += W[i * n + k] * P[k * n + j];
            }
        memcpy(P, Q, (size_t)n * n * sizeof *P);
    }
    double rate = slem(P, n);
    if (graph == TSR_GOSSIP_RING && n > 1) {
        double closed = 0;
        for (int k = 1; k < n; k++) closed = fmax(closed, fabs(1.0 / 3 + 2.0 / 3 * cos(2 * M_PI * k / n)));
        CHECK(fabs(closed - rate) < 1e-9, "ring n=%d: power iteration %.12g vs closed form %.12g", n,
              rate, closed);
        rate = closed;
    }
    double floor_d = 1e-11; /* float rounding of the replicas: ~(2^-24)^2 relative */
    int worst_step = -1;
    double worst_rel = 0;
    for (int t = 0; t < T; t++) {
        /* no sample: the step only mixes (as a learning rate of 0, which the optimizer refuses) */
        CHECK_OK(tsr_gossip_step(g, d->images, d->labels, 0, NULL), ctx);
        mixing_matrix(graph, n, (uint64_t)t, W);
        for (int i = 0; i < n; i++)
            for (size_t j = 0; j < np; j++) {
                double s = 0;
                for (int k = 0; k < n; k++) s += W[i * n + k] * X[(size_t)k * np + j];
                Y[(size_t)i * np + j] = s;
            }
        memcpy(X, Y, (size_t)n * np * sizeof *X);
        double dref = distance(X, n, np);
        CHECK_OK(tsr_gossip_consensus(g, &dlib), ctx);
        /* float replicas: each element carries ~2^-24 relative rounding per mixing */
        double rel = fabs(dlib - dref) / (1e-3 * dref + 1e-6 * sqrt(dref) + floor_d);
        if (rel > worst_rel) worst_rel = rel, worst_step = t;
        if ((t + 1) % cycle == 0 && n > 1) {
            double bound = pow(rate, 2.0 * (t + 1) / cycle) * d0;
            CHECK(dlib <= bound * (1 + 1e-3) + floor_d, "%s n=%d step %d: consensus %.6g above the "
                  "spectral bound %.6g (rate %.6g per %d mixings)", tsr_gossip_graph_name(graph), n, t,
                  dlib, bound, rate, cycle);
            /* from the slowest eigenvector the ring converges exactly at the predicted rate */
            if (start && graph == TSR_GOSSIP_RING && bound > 1e-6)
                CHECK(fabs(dlib / bound - 1) < 1e-3, "ring n=%d step %d: consensus %.9g, predicted %.9g",
                      n, t, dlib, bound);
        }
    }
    /* the reference matches the library (the library rounds each mixing to float) */
    CHECK(worst_rel <= 1, "%s start %d: consensus differs from the reference by %.3g x the "
          "tolerance 1e-3 d + 1e-6 sqrt(d) + 1e-11 (step %d)", tsr_gossip_graph_name(graph), start,
          worst_rel, worst_step);
    /* the mean of the replicas, exactly doubly stochastic mixing: only float rounding moves it */
    CHECK_OK(tsr_gossip_get_params(g, x, np), ctx);
    double *sum = calloc(np, sizeof *sum), *xd = malloc(np * sizeof *xd);
    for (size_t j = 0; j < np; j++) xd[j] = x[j];
    MPI_Allreduce(xd, sum, (int)np, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double drift = 0, bound = T * ldexp(1.0, -24) * maxabs;
    for (size_t j = 0; j < np; j++) drift = fmax(drift, fabs(sum[j] / n - mean0[j]));
    CHECK(drift <= bound, "%s: mean of the replicas moved by %.3g, bound T*2^-24*max|x0| = %.3g",
          tsr_gossip_graph_name(graph), drift, bound);
    if (rank == 0)
        printf("n=%d %s start %d: consensus %.3g -> %.3g after %d mixings (rate %.4f per %d), "
               "mean drift %.2g (bound %.2g)\n", n, tsr_gossip_graph_name(graph), start, d0, dlib, T,
               rate, cycle, drift, bound);
    CHECK(tsr_gossip_mixes(g) == (nranks > 1 ? (uint64_t)T : 0), "%llu mixings",
          (unsigned long long)tsr_gossip_mixes(g));
    free(sum);
    free(xd);
    free(mean0);
    free(X);
    free(Y);
    free(x);
    tsr_gossip_free(g);
}

static void test_mixing(tsr_context *ctx, tsr_comm *comm, const tsr_dataset *d) {
    tsr_model *m = make_model(ctx, "dense:16,relu,dense:10");
    if (!m) return;
    if (nranks == 1) return tsr_model_free(m); /* nothing to mix; n = 0 is refused (test_errors) */
    run_mixing(ctx, comm, m, d, TSR_GOSSIP_RING, 0);
    run_mixing(ctx, comm, m, d, TSR_GOSSIP_RING, 1);
    run_mixing(ctx, comm, m, d, TSR_GOSSIP_EXPONENTIAL, 0);
    tsr_model_free(m);
}

/* ---- training ---- */

/* Loss of the average model on the whole data set after `steps` steps of b per rank, each rank
 * its own shard (loader), gossip over `graph` (or data parallel with graph < 0). */
static double train(tsr_context *ctx, tsr_comm *comm, const tsr_model *m, const tsr_dataset *d,
                    int graph, int steps, size_t b, double *consensus) {
    tsr_trainer_options o;
    options(&o, comm, b);
    o.optimizer.kind = TSR_OPTIM_SGD; /* D-PSGD's optimizer; momentum 0.9 */
    o.optimizer.lr = 0.05f;
    tsr_trainer *t = NULL;
    tsr_gossip *g = NULL;
    tsr_gossip_options go = {graph, 1, 0};
    if (graph < 0) {
        o.mode = TSR_MODE_DATA;
        CHECK_OK(tsr_trainer_create(ctx, m, &o, &t), ctx);
    } else {
        CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g), ctx);
    }
    tsr_loader_options lo = {b, 7, 1, rank, nranks, 1};
    tsr_loader *l = NULL;
    CHECK_OK(tsr_loader_create(ctx, d, &lo, &l), ctx);
    float *x = malloc(b * FEATURES * sizeof *x);
    int32_t *y = malloc(b * sizeof *y);
    uint64_t epoch = 0;
    for (int s = 0; s < steps && l && (t || g); s++) {
        size_t n = tsr_loader_next(l, x, y);
        if (!n) {
            tsr_loader_start_epoch(l, ++epoch);
            n = tsr_loader_next(l, x, y);
        }
        CHECK_OK(t ? tsr_trainer_step(t, x, y, n, NULL) : tsr_gossip_step(g, x, y, n, NULL), ctx);
    }
    double loss = NAN;
    if (t) CHECK_OK(tsr_trainer_evaluate(t, d, NULL, &loss), ctx);
    if (g) CHECK_OK(tsr_gossip_evaluate(g, d, NULL, &loss), ctx);
    if (g && consensus) CHECK_OK(tsr_gossip_consensus(g, consensus), ctx);
    free(x);
    free(y);
    tsr_loader_free(l);
    tsr_trainer_free(t);
    tsr_gossip_free(g);
    return loss;
}

static void test_training(tsr_context *ctx, tsr_comm *comm, const tsr_dataset *d) {
    tsr_model *m = make_model(ctx, "dense:64,relu,dense:32,relu,dense:10");
    if (!m) return;
    int steps = nranks <= 2 ? 80 : 40;
    size_t b = 24 / (size_t)nranks;
    double cr = 0, ce = 0;
    double dp = train(ctx, comm, m, d, -1, steps, b, NULL);
    double ring = train(ctx, comm, m, d, TSR_GOSSIP_RING, steps, b, &cr);
    double ex = train(ctx, comm, m, d, TSR_GOSSIP_EXPONENTIAL, steps, b, &ce);
    if (rank == 0)
        printf("n=%d: loss of the average model after %d steps of %zu per rank: data parallel %.4f, "
               "gossip ring %.4f (consensus %.2g), exponential %.4f (consensus %.2g)\n", nranks, steps,
               b, dp, ring, cr, ex, ce);
    CHECK(dp < 1.2, "data-parallel training did not learn: loss %.4f", dp);
    CHECK(ring < dp + 0.05, "gossip ring: loss %.4f vs %.4f data parallel (margin 0.05)", ring, dp);
    CHECK(ex < dp + 0.05, "gossip exponential: loss %.4f vs %.4f data parallel (margin 0.05)", ex, dp);
    CHECK(cr < 1e-2 && ce < 1e-2, "replicas drifted apart: consensus ring %.3g exp %.3g", cr, ce);
    tsr_model_free(m);
}

/* Fashion-MNIST, the mlp preset, one epoch of 3000 images at a global batch of 64 (64 / n per
 * rank): the average of the replicas reaches 0.70 and within 0.03 of one process. */
static void test_fmnist(tsr_context *ctx, tsr_comm *comm) {
    tsr_dataset *train_d = NULL, *test_d = NULL;
    if (tsr_mh_fmnist(ctx, NULL, 3000, 1000, 1, &train_d, &test_d) != TSR_OK) {
        CHECK(0, "Fashion-MNIST: %s", tsr_context_last_error(ctx));
        return;
    }
    tsr_model *m = NULL;
    tsr_model_input in = {1, 28, 28, 10};
    CHECK_OK(tsr_model_parse(ctx, "mlp", in, &m), ctx);
    size_t b = 64 / (size_t)nranks;
    float *x = malloc(64 * train_d->features * sizeof *x);
    int32_t *y = malloc(64 * sizeof *y);
    double acc[2] = {0, 0}, local = 0;
    for (int gs = 0; gs < 2 && m; gs++) {
        if (!gs && rank != 0) continue; /* the reference: rank 0 alone, batch 64 */
        tsr_trainer_options o;
        options(&o, gs ? comm : NULL, gs ? b : 64);
        o.optimizer.kind = TSR_OPTIM_SGD; /* momentum 0.9 */
        o.optimizer.lr = 0.02f;
        tsr_gossip_options go = {TSR_GOSSIP_RING, 1, 0};
        tsr_loader_options lo = {gs ? b : 64, 5, 1, gs ? rank : 0, gs ? nranks : 1, 1};
        tsr_gossip *g = NULL;
        tsr_loader *l = NULL;
        CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g), ctx);
        CHECK_OK(tsr_loader_create(ctx, train_d, &lo, &l), ctx);
        size_t n;
        while (g && l && (n = tsr_loader_next(l, x, y)) > 0) CHECK_OK(tsr_gossip_step(g, x, y, n, NULL), ctx);
        if (g) CHECK_OK(tsr_gossip_evaluate(g, test_d, &acc[gs], NULL), ctx);
        if (g && gs) CHECK_OK(tsr_gossip_evaluate_local(g, test_d, &local, NULL), ctx);
        tsr_loader_free(l);
        tsr_gossip_free(g);
    }
    if (rank == 0) {
        printf("n=%d: Fashion-MNIST mlp, 1 epoch of 3000: accuracy %.4f gossip ring average (rank 0's "
               "replica %.4f), %.4f one process\n", nranks, acc[1], local, acc[0]);
        CHECK(acc[0] > 0.7, "reference accuracy %.4f", acc[0]);
        CHECK(acc[1] > 0.7 && acc[1] >= acc[0] - 0.03, "gossip %.4f vs one process %.4f (margin 0.03)",
              acc[1], acc[0]);
    }
    free(x);
    free(y);
    tsr_model_free(m);
    tsr_dataset_free(ctx, train_d);
    tsr_dataset_free(ctx, test_d);
}

/* ---- non-finite, checkpoints, errors ---- */

static void test_nonfinite(tsr_context *ctx, tsr_comm *comm, const tsr_dataset *d) {
    tsr_model *m = make_model(ctx, "dense:16,relu,dense:10");
    if (!m) return;
    size_t b = 8, np = tsr_model_param_count(m);
    tsr_trainer_options o;
    options(&o, comm, b);
    o.nonfinite = TSR_NONFINITE_SKIP;
    tsr_gossip_options go = {TSR_GOSSIP_RING, 1, 0};
    tsr_gossip *g = NULL;
    /* rank 0's 4th step; a skipped step is not counted, so rank 0 stays at it (3 skipped) */
    if (rank == 0) o.fault_grad_nan_step = 3;
    CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g), ctx);
    float *p = malloc(np * 4);
    for (int s = 0; s < 6 && g; s++) {
        size_t off = (size_t)(s * 13 + rank * 29) % (SAMPLES - b);
        CHECK_OK(tsr_gossip_step(g, d->images + off * FEATURES, d->labels + off, b, NULL), ctx);
    }
    if (g) {
        CHECK_OK(tsr_gossip_get_params(g, p, np), ctx);
        size_t bad = 0;
        for (size_t j = 0; j < np; j++) bad += !isfinite(p[j]);
        CHECK(bad == 0, "%zu non-finite parameters after a skipped step", bad);
        CHECK(tsr_gossip_skipped(g) == (rank == 0 ? 3u : 0u) &&
                  tsr_gossip_steps(g) == (rank == 0 ? 3u : 6u) &&
                  tsr_gossip_rounds(g) == 6,
              "skipped %llu steps %llu rounds %llu", (unsigned long long)tsr_gossip_skipped(g),
              (unsigned long long)tsr_gossip_steps(g), (unsigned long long)tsr_gossip_rounds(g));
    }
    tsr_gossip_free(g);
    g = NULL;
    /* STOP on every rank at the same step: each says why, after completing the exchange */
    o.nonfinite = TSR_NONFINITE_STOP;
    o.fault_grad_nan_step = 0;
    CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g), ctx);
    tsr_status s = g ? tsr_gossip_step(g, d->images, d->labels, b, NULL) : TSR_OK;
    CHECK(s == TSR_ERR_NUMERIC && strstr(tsr_context_last_error(ctx), "gradient"),
          "STOP: %s (%s)", tsr_status_str(s), tsr_context_last_error(ctx));
    /* the ranks stay in step: the unapplied step 0 is poisoned again, the exchange completes */
    if (g) {
        s = tsr_gossip_step(g, d->images, d->labels, b, NULL);
        CHECK(s == TSR_ERR_NUMERIC && tsr_gossip_rounds(g) == 2 && tsr_gossip_steps(g) == 0,
              "STOP again: %s, %llu rounds", tsr_status_str(s), (unsigned long long)tsr_gossip_rounds(g));
    }
    tsr_gossip_free(g);
    free(p);
    tsr_model_free(m);
}

static void test_checkpoint(tsr_context *ctx, tsr_comm *comm, const tsr_dataset *d) {
    tsr_model *m = make_model(ctx, "dense:16,relu,dense:10");
    tsr_model *other = make_model(ctx, "dense:8,relu,dense:10");
    if (!m || !other) goto out_models;
    size_t b = 8, np = tsr_model_param_count(m);
    tsr_trainer_options o;
    options(&o, comm, b);
    tsr_gossip_options go = {TSR_GOSSIP_EXPONENTIAL, 2, 0};
    tsr_gossip *g = NULL, *h = NULL, *wrong = NULL;
    tsr_trainer *single = NULL;
    CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g), ctx);
    CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &h), ctx);
    CHECK_OK(tsr_gossip_create(ctx, other, &o, &go, &wrong), ctx);
    char path[256];
    tsr_mh_shared_path(path, sizeof path, "test-gossip", ".ck");
    float *avg = malloc(np * 4), *p = malloc(np * 4);
    for (int s = 0; s < 4 && g && h; s++) { /* 4 rounds, period 2: an exchange in flight */
        size_t off = (size_t)(s * 17 + rank * 31) % (SAMPLES - b);
        CHECK_OK(tsr_gossip_step(g, d->images + off * FEATURES, d->labels + off, b, NULL), ctx);
        CHECK_OK(tsr_gossip_step(h, d->images + off * FEATURES, d->labels + off, b, NULL), ctx);
    }
    if (g && h && wrong) {
        CHECK_OK(tsr_gossip_average_params(g, avg, np), ctx);
        CHECK_OK(tsr_gossip_save(g, path), ctx);
        tsr_checkpoint *ck = NULL;
        CHECK_OK(tsr_checkpoint_load(ctx, path, &ck), ctx);
        const tsr_checkpoint_tensor *pt = ck ? tsr_checkpoint_find(ck, "params") : NULL;
        CHECK(pt && pt->count == np && !memcmp(pt->data, avg, np * 4),
              "the checkpoint's parameters are not the average of the replicas");
        CHECK(ck && ck->step == tsr_gossip_steps(g), "checkpoint step %llu",
              ck ? (unsigned long long)ck->step : 0ull);
        tsr_checkpoint_free(ctx, ck);
        /* h, mid-exchange, loads it: every replica is the average afterwards */
        CHECK_OK(tsr_gossip_load(h, path), ctx);
        CHECK_OK(tsr_gossip_get_params(h, p, np), ctx);
        CHECK(!memcmp(p, avg, np * 4), "a loaded replica differs from the saved average");
        double c = 1;
        CHECK_OK(tsr_gossip_consensus(h, &c), ctx);
        CHECK(c < 1e-12, "consensus distance %g after a load", c);
        for (int s = 0; s < 3; s++) CHECK_OK(tsr_gossip_step(h, d->images, d->labels, b, NULL), ctx);
        /* another model's checkpoint is refused on every rank, naming the model */
        CHECK(tsr_gossip_load(wrong, path) == TSR_ERR_MISMATCH &&
                  strstr(tsr_context_last_error(ctx), "model"),
              "load of another model: %s", tsr_context_last_error(ctx));
        /* the single-process trainer reads the gossip checkpoint */
        o.comm = NULL;
        o.mode = TSR_MODE_DATA;
        CHECK_OK(tsr_trainer_create(ctx, m, &o, &single), ctx);
        if (single) {
            CHECK_OK(tsr_trainer_load(single, path), ctx);
            CHECK_OK(tsr_trainer_get_params(single, p, np), ctx);
            CHECK(!memcmp(p, avg, np * 4), "trainer loaded other parameters");
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) remove(path);
    free(avg);
    free(p);
    tsr_trainer_free(single);
    tsr_gossip_free(g);
    tsr_gossip_free(h);
    tsr_gossip_free(wrong);
out_models:
    tsr_model_free(m);
    tsr_model_free(other);
}

static void expect(tsr_context *ctx, tsr_status got, tsr_status want, const char *needle,
                   const char *what) {
    CHECK(got == want && strstr(tsr_context_last_error(ctx), needle), "%s: %s (%s), expected %s "
          "naming '%s'", what, tsr_status_str(got), tsr_context_last_error(ctx), tsr_status_str(want),
          needle);
}

static void test_errors(tsr_context *ctx, tsr_comm *comm, const tsr_dataset *d) {
    tsr_model *m = make_model(ctx, "dense:16,relu,dense:10");
    if (!m) return;
    tsr_trainer_options o;
    options(&o, comm, 8);
    tsr_gossip *g = NULL;
    tsr_gossip_options go = {7, 1, 0};
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_INVALID_ARG, "graph", "graph 7");
    go = (tsr_gossip_options){TSR_GOSSIP_RING, 2000000, 0};
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_INVALID_ARG, "period", "period");
    go = (tsr_gossip_options){TSR_GOSSIP_RING, 1, 2};
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_INVALID_ARG, "eval_local", "eval_local");
    go = (tsr_gossip_options){TSR_GOSSIP_RING, 1, 0};
    o.compress = TSR_COMPRESS_TOPK;
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_UNSUPPORTED, "compression", "compression");
    o.compress = TSR_COMPRESS_NONE;
    o.shard_optimizer = 1;
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_UNSUPPORTED, "shard_optimizer", "ZeRO");
    o.shard_optimizer = 0;
    o.batch = 0;
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_INVALID_ARG, "batch", "batch 0");
    o.batch = 8;
    o.device = "no-such-device";
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_NOT_FOUND, "no-such-device", "device");
    o.device = NULL;
    CHECK(g == NULL, "a refused create returned a handle");
    tsr_gossip_graph graph = TSR_GOSSIP_EXPONENTIAL;
    CHECK(tsr_gossip_graph_parse("ring", &graph) == TSR_OK && graph == TSR_GOSSIP_RING, "parse ring");
    CHECK(tsr_gossip_graph_parse("exp", &graph) == TSR_OK && graph == TSR_GOSSIP_EXPONENTIAL, "parse exp");
    CHECK(tsr_gossip_graph_parse("star", &graph) == TSR_ERR_PARSE, "parse star");
    CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g), ctx);
    if (g) {
        expect(ctx, tsr_gossip_step(g, d->images, d->labels, 9, NULL), TSR_ERR_SHAPE, "9 samples",
               "batch of 9");
        int32_t bad[8] = {0, 1, 2, 3, 10, 0, 0, 0};
        expect(ctx, tsr_gossip_step(g, d->images, bad, 8, NULL), TSR_ERR_INVALID_ARG, "label 10",
               "label");
        float p[4];
        expect(ctx, tsr_gossip_get_params(g, p, 4), TSR_ERR_SHAPE, "4 asked", "get_params count");
        expect(ctx, tsr_gossip_set_params(g, p, 4), TSR_ERR_SHAPE, "4 given", "set_params count");
        expect(ctx, tsr_gossip_load(g, "/nonexistent/gossip.ck"), TSR_ERR_NOT_FOUND, "/nonexistent", "load");
        tsr_dataset wrong = *d;
        wrong.features = 5;
        expect(ctx, tsr_gossip_evaluate(g, &wrong, NULL, NULL), TSR_ERR_SHAPE, "5 features", "evaluate");
        CHECK(tsr_gossip_rounds(g) == 0, "refused steps counted: %llu",
              (unsigned long long)tsr_gossip_rounds(g));
        tsr_gossip_free(g);
    }
    tsr_model_free(m);
}

/* TSR_TIMELINE: every rank's steps, waits and mixings in one trace. */
static void test_timeline(tsr_context *ctx, tsr_comm *comm, const tsr_dataset *d) {
    tsr_model *m = make_model(ctx, "dense:16,relu,dense:10");
    if (!m) return;
    char path[256];
    tsr_mh_shared_path(path, sizeof path, "gossip-timeline", ".json");
    tsr_trainer_options o;
    options(&o, comm, 8);
    o.timeline = path;
    tsr_gossip_options go = {TSR_GOSSIP_RING, 1, 0};
    tsr_gossip *g = NULL;
    CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g), ctx);
    for (int s = 0; s < 3 && g; s++) CHECK_OK(tsr_gossip_step(g, d->images, d->labels, 8, NULL), ctx);
    tsr_gossip_free(g); /* flushes: rank 0 writes every rank's events */
    tsr_model_free(m);
    if (rank != 0) return;
    static char text[1 << 18];
    FILE *f = fopen(path, "r");
    size_t len = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[len] = 0;
    if (f) fclose(f);
    remove(path);
    int steps = 0;
    for (const char *p = text; (p = strstr(p, "\"step\"")); p++) steps++;
    CHECK(steps == 3 * nranks, "timeline: %d step events for %d ranks x 3 steps", steps, nranks);
    char pid[32];
    snprintf(pid, sizeof pid, "\"pid\":%d", nranks - 1);
    CHECK(strstr(text, "\"forward\"") && strstr(text, pid), "timeline lacks forwards or rank %d",
          nranks - 1);
    if (nranks > 1)
        CHECK(strstr(text, "\"gossip wait\"") && strstr(text, "\"gossip mix\""),
              "timeline lacks the gossip events");
}

/* tsr_trainer with mode GOSSIP is tsr_gossip behind the trainer's API: the same replicas
 * bitwise, the average evaluated, checkpoints of the average. */
static void test_trainer_mode(tsr_context *ctx, tsr_comm *comm, const tsr_dataset *d) {
    tsr_model *m = make_model(ctx, "dense:16,relu,dense:10");
    if (!m) return;
    size_t b = 8, np = tsr_model_param_count(m);
    tsr_trainer_options o;
    options(&o, comm, b);
    o.gossip_graph = TSR_GOSSIP_EXPONENTIAL;
    tsr_gossip_options go = {TSR_GOSSIP_EXPONENTIAL, 1, 0};
    tsr_trainer *t = NULL;
    tsr_gossip *g = NULL;
    CHECK_OK(tsr_trainer_create(ctx, m, &o, &t), ctx);
    CHECK_OK(tsr_gossip_create(ctx, m, &o, &go, &g), ctx);
    float *p0 = malloc(np * 4), *p1 = malloc(np * 4);
    for (int s = 0; s < 5 && t && g; s++) {
        size_t off = (size_t)(s * 19 + rank * 23) % (SAMPLES - b);
        float lt = 0, lg = 0;
        CHECK_OK(tsr_trainer_step(t, d->images + off * FEATURES, d->labels + off, b, &lt), ctx);
        CHECK_OK(tsr_gossip_step(g, d->images + off * FEATURES, d->labels + off, b, &lg), ctx);
        CHECK_OK(tsr_trainer_get_params(t, p0, np), ctx);
        CHECK_OK(tsr_gossip_get_params(g, p1, np), ctx);
        CHECK(lt == lg && !memcmp(p0, p1, np * 4), "trainer mode gossip differs at step %d", s);
    }
    double a0 = 0, a1 = 1;
    if (t && g) {
        CHECK_OK(tsr_trainer_evaluate(t, d, &a0, NULL), ctx);
        CHECK_OK(tsr_gossip_evaluate(g, d, &a1, NULL), ctx);
        CHECK(a0 == a1, "trainer mode gossip: accuracy %g vs %g", a0, a1);
        CHECK(tsr_trainer_steps(t) == 5, "%llu steps", (unsigned long long)tsr_trainer_steps(t));
    }
    free(p0);
    free(p1);
    tsr_trainer_free(t);
    tsr_gossip_free(g);
    tsr_model_free(m);
}

/* ---- fault and measurement modes ---- */

static int fault_mode(tsr_context *ctx, tsr_comm *comm, const tsr_dataset *d, int die_rank,
                      int die_step) {
    /* 698 parameters: a 2.8 KB message goes eagerly. A rank killed while a rendezvous-size
     * message of its own is in flight makes UCX abort the receiver (its CMA read of the dead
     * process fails fatally inside MPI_Test), which no library above MPI can catch. */
    tsr_model *m = make_model(ctx, "dense:16,relu,dense:10");
    if (!m) return 2;
    tsr_trainer_options o;
    options(&o, comm, 8);
    tsr_gossip_options go = {TSR_GOSSIP_RING, 1, 0};
    tsr_gossip *g = NULL;
    if (tsr_gossip_create(ctx, m, &o, &go, &g) != TSR_OK) return 2;
    for (int s = 0; s < 100000; s++) {
        if (rank == die_rank && s == die_step) raise(SIGKILL);
        size_t off = (size_t)(s * 8) % (SAMPLES - 8);
        tsr_status st = tsr_gossip_step(g, d->images + off * FEATURES, d->labels + off, 8, NULL);
        if (st != TSR_OK) {
            fprintf(stderr, "rank %d: step %d: %s (%s)\n", rank, s, tsr_context_last_error(ctx),
                    tsr_status_name(st));
            tsr_gossip_free(g); /* the communicator is broken: nothing collective */
            tsr_model_free(m);
            return st == TSR_ERR_PEER_LOST ? 3 : 4;
        }
    }
    return 0;
}

/* samples/s of gossip (ring, exponential) and data-parallel training of one model, the same
 * per-rank batch, synthetic data; prints one line on rank 0.
 *   test_gossip --bench mlp --batch 32 --steps 100 */
static int bench_mode(tsr_context *ctx, tsr_comm *comm, int argc, char **argv) {
    const char *spec = "mlp";
    size_t batch = 32;
    int steps = 100;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--bench")) spec = argv[i + 1];
        if (!strcmp(argv[i], "--batch")) batch = (size_t)atol(argv[i + 1]);
        if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
    }
    tsr_model_input in = {1, 28, 28, 10};
    tsr_model *m = NULL;
    if (tsr_model_parse(ctx, spec, in, &m) != TSR_OK) return 2;
    float *x = malloc(batch * 784 * sizeof *x);
    int32_t *y = malloc(batch * sizeof *y);
    uint64_t seed = 5;
    for (size_t i = 0; i < batch; i++) y[i] = (int32_t)(i % 10);
    for (size_t i = 0; i < batch * 784; i++) x[i] = (float)urand(&seed);
    double rate[3] = {0, 0, 0};
    /* twice in turn, the better of each: the machine is shared */
    for (int kk = 0; kk < 6; kk++) {
        int k = kk % 3;
        tsr_trainer_options o;
        options(&o, comm, batch);
        o.no_grad_check = 1;
        tsr_gossip_options go = {k == 1 ? TSR_GOSSIP_RING : TSR_GOSSIP_EXPONENTIAL, 1, 0};
        tsr_trainer *t = NULL;
        tsr_gossip *g = NULL;
        o.mode = k ? TSR_MODE_GOSSIP : TSR_MODE_DATA;
        tsr_status st = k ? tsr_gossip_create(ctx, m, &o, &go, &g) : tsr_trainer_create(ctx, m, &o, &t);
        if (st != TSR_OK) return 2;
        double t0 = 0;
        for (int s = -3; s < steps && st == TSR_OK; s++) {
            if (s == 0) {
                MPI_Barrier(MPI_COMM_WORLD);
                t0 = MPI_Wtime();
            }
            st = t ? tsr_trainer_step(t, x, y, batch, NULL) : tsr_gossip_step(g, x, y, batch, NULL);
        }
        MPI_Barrier(MPI_COMM_WORLD);
        double r = (double)batch * nranks * steps / (MPI_Wtime() - t0);
        if (r > rate[k]) rate[k] = r;
        tsr_trainer_free(t);
        tsr_gossip_free(g);
        if (st != TSR_OK) return 2;
    }
    if (rank == 0)
        printf("%s, %d ranks x batch %zu: samples/s data parallel %.0f, gossip ring %.0f (%.2fx), "
               "gossip exponential %.0f (%.2fx)\n", spec, nranks, batch, rate[0], rate[1],
               rate[1] / rate[0], rate[2], rate[2] / rate[0]);
    free(x);
    free(y);
    tsr_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    int die_rank = -1, die_step = -1, bench = 0;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--die-rank")) die_rank = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--die-step")) die_step = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--bench")) bench = 1;
    }
    tsr_mh_world w;
    tsr_status ws = tsr_mh_world_init(&w, &argc, &argv, TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC);
    rank = mpi_check_rank = w.rank;
    nranks = w.nranks;
    tsr_context *ctx = w.ctx;
    tsr_comm *comm = w.comm;
    CHECK_OK(ws, ctx);
    tsr_dataset *d = tsr_mh_synthetic_data(ctx, SAMPLES);
    if (bench || die_rank >= 0) {
        int rc;
        if (bench) {
            rc = bench_mode(ctx, comm, argc, argv);
        } else {
            /* hydra (-disable-auto-cleanup) tells the survivors with SIGUSR1, which would end them
             * before they notice anything themselves: that is what is tested here */
            signal(SIGUSR1, SIG_IGN);
            rc = fault_mode(ctx, comm, d, die_rank, die_step);
            if (rc == 3) _exit(3); /* a peer is gone: MPI_Finalize would wait for it */
        }
        tsr_dataset_free(ctx, d);
        tsr_mh_world_close(&w);
        return rc;
    }
    if (comm && d && nranks <= 4) {
        test_errors(ctx, comm, d);
        test_single(ctx, comm, d);
        test_mixing(ctx, comm, d);
        test_nonfinite(ctx, comm, d);
        test_checkpoint(ctx, comm, d);
        test_training(ctx, comm, d);
        test_fmnist(ctx, comm);
        test_timeline(ctx, comm, d);
        test_trainer_mode(ctx, comm, d);
    }
    tsr_dataset_free(ctx, d);
    return tsr_mh_world_end(&w, failures, skips, "test_gossip");
}
