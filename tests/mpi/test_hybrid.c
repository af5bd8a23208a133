/* Hybrid data + model parallelism under mpiexec -n 1..4: R replicas x S stages, every layout
 * of the rank count with R, S <= 4 among 1x1, 2x1, 1x2, 3x1, 1x3, 2x2, against single-process
 * training (tsr_trainer on the whole global batch, computed on every rank):
 *  - K steps with a global batch of 11 split unevenly over the replicas (so the sample
 *    weighting matters), 2 micro-batches, both schedules: loss and parameters within the bound
 *    below of the trainer's, replicas bitwise identical after every step;
 *  - evaluation equals the trainer's on the same parameters (each replica takes a slice);
 *  - hybrid checkpoint -> single-process trainer continues as the hybrid does, and back;
 *  - a NaN in one replica's samples: every rank skips (or every rank stops);
 *  - bad options (ranks not R*S, R = 0) refused naming them, on every rank;
 *  - TSR_TIMELINE: the stage allreduce events of every rank.
 * Fault mode (tests/fault/hybrid-kill.sh): --die-rank R --die-step K as in test_pipeline.
 * Prints each failure and exits non-zero. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mpi.h>
#include "lib/train/hybrid.h"
#include "support/test_util.h"
#include "tessera.h"
#include "tests/support/mode_harness.h"
#include "tests/support/mpi_check.h"

static int rank, nranks;

enum { GLOBAL = 11, STEPS = 3, FEAT = 64 };

/* Bound of hybrid vs trainer parameters: |h - t| <= ATOL + RTOL |t|. The hybrid sums the
 * micro-batch gradients in another order and averages the replicas' mean gradients weighted by
 * n_r / N instead of summing all samples / N (float32: ~1e-7 relative per step), then 3 SGD
 * steps with lr 0.05 / Adam steps of lr 1e-3: below 1e-6 absolute on weights of ~0.3. */
#define ATOL 1e-6
#define RTOL 1e-5
/* Loss: the global mean from per-replica float sums (relative ~1e-7). */
#define LOSS_RTOL 1e-6

enum { BATCH_SEED = 2000 };

/* Global batch `step` of a learnable task: label = argmax of the first 10 features. */
static void make_batch(int step, float *x, int32_t *y) {
    tsr_mh_argmax_batch(BATCH_SEED + (uint64_t)step, GLOBAL, FEAT, 10, x, y);
}

/* Replica r of R: samples [off, off + m) of the global batch (the first G % R replicas take one
 * more: uneven on purpose). */
static void share(size_t R, size_t r, size_t *off, size_t *m) {
    size_t base = GLOBAL / R, extra = GLOBAL % R;
    *m = base + (r < extra);
    *off = r * base + (r < extra ? r : extra);
}

static const char *CNN = "conv3x3:4,relu,pool2,conv3x3:4,relu,dense:12,relu,dense:10";
static const tsr_model_input IN = {1, 8, 8, 10};

static void options(tsr_trainer_options *o, tsr_comm *comm, int adam) {
    tsr_mh_options(o, comm, GLOBAL, 11, adam);
}

static void hopts(tsr_hybrid_options *ho, size_t R, size_t S, size_t layers, size_t *b, size_t M,
                  int sched) {
    for (size_t s = 0; s <= S; s++) b[s] = s * layers / S;
    memset(ho, 0, sizeof *ho);
    ho->replicas = R;
    ho->pipeline.bounds = b;
    ho->pipeline.stages = S;
    ho->pipeline.microbatches = M;
    ho->pipeline.schedule = sched;
}

static double worst_seen;

/* max over elements of |a-b| / (ATOL + RTOL |b|); a NaN counts as infinitely far */
static double rel_err(const float *a, const float *b, size_t n) {
    return tsr_test_rel_error(a, b, n, ATOL, RTOL, NULL);
}

/* Layouts of nranks: R x S with R * S = nranks. */
static size_t layouts(size_t out[][2]) {
    size_t k = 0;
    for (size_t R = (size_t)nranks; R >= 1; R--)
        if (nranks % (int)R == 0) {
            out[k][0] = R;
            out[k][1] = (size_t)nranks / R;
            k++;
        }
    return k;
}

static void test_match_trainer(tsr_context *ctx, tsr_comm *comm) {
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, CNN, IN, &m), ctx);
    if (!m) return;
    size_t L = tsr_model_layer_count(m), np = tsr_model_param_count(m), lay[8][2];
    size_t nl = layouts(lay);
    float *x = calloc(GLOBAL * FEAT, 4), *ref = calloc(STEPS * np, 4), *got = calloc(np, 4);
    int32_t y[GLOBAL];
    for (int adam = 0; adam < 2; adam++) {
        /* the reference: one process, the whole global batch; its parameters after step s at
         * ref + s * np */
        tsr_trainer_options o;
        options(&o, NULL, adam);
        float ref_loss[STEPS];
        tsr_status rs = tsr_mh_reference(ctx, m, &o, STEPS, GLOBAL, FEAT, 10, BATCH_SEED, ref_loss, ref,
                                         1);
        CHECK_OK(rs, ctx);
        if (rs != TSR_OK) continue;
        for (size_t li = 0; li < nl; li++) {
            size_t R = lay[li][0], S = lay[li][1], b[8];
            int sched = (int)(li + (size_t)adam) & 1;
            tsr_hybrid_options ho;
            hopts(&ho, R, S, L, b, 2, sched);
            options(&o, comm, adam);
            tsr_hybrid *h = NULL;
            CHECK_OK(tsr_hybrid_create(ctx, m, &o, &ho, &h), ctx);
            if (!h) continue;
            size_t r = tsr_hybrid_replica(h), off, n;
            CHECK(r == (size_t)rank / S && tsr_hybrid_stage(h) == (size_t)rank % S,
                  "%zux%zu: rank %d is replica %zu stage %zu", R, S, rank, r, tsr_hybrid_stage(h));
            share(R, r, &off, &n);
            for (int s = 0; s < STEPS; s++) {
                make_batch(s, x, y);
                float l = NAN;
                CHECK_OK(tsr_hybrid_step(h, x + off * FEAT, y + off, n, &l), ctx);
                CHECK(fabs((double)l - ref_loss[s]) <= LOSS_RTOL * (1.0 + fabs((double)ref_loss[s])),
                      "%zux%zu %s step %d: loss %.9g, trainer %.9g", R, S, adam ? "adam" : "sgd", s,
                      (double)l, (double)ref_loss[s]);
                CHECK_OK(tsr_hybrid_get_params(h, got, np), ctx);
                CHECK(tsr_mh_same_on_all_ranks(got, np), "%zux%zu step %d: replicas differ", R, S, s);
                double e = rel_err(got, ref + (size_t)s * np, np);
                if (e > worst_seen) worst_seen = e;
                CHECK(e <= 1.0, "%zux%zu %s step %d: parameters %.3g x the bound from the trainer's",
                      R, S, adam ? "adam" : "sgd", s, e);
            }
            CHECK(tsr_hybrid_steps(h) == STEPS, "steps %llu", (unsigned long long)tsr_hybrid_steps(h));
            tsr_hybrid_free(h);
        }
    }
    free(x);
    free(ref);
    free(got);
    tsr_model_free(m);
}

/* Evaluation, parameters and checkpoints, on the layout with the most replicas > 1 stage if
 * there is one (2x2 at n=4), else the most replicas. */
static void test_eval_and_checkpoints(tsr_context *ctx, tsr_comm *comm) {
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, CNN, IN, &m), ctx);
    if (!m) return;
    size_t L = tsr_model_layer_count(m), np = tsr_model_param_count(m), b[8];
    size_t R = nranks == 4 ? 2 : (size_t)nranks, S = (size_t)nranks / R;
    tsr_hybrid_options ho;
    hopts(&ho, R, S, L, b, 3, TSR_PIPELINE_1F1B);
    tsr_trainer_options o, os;
    options(&o, comm, 1);
    options(&os, NULL, 1);
    tsr_hybrid *h = NULL;
    tsr_trainer *t = NULL;
    CHECK_OK(tsr_hybrid_create(ctx, m, &o, &ho, &h), ctx);
    CHECK_OK(tsr_trainer_create(ctx, m, &os, &t), ctx);
    float *a = calloc(np, 4), *c = calloc(np, 4), *x = calloc(GLOBAL * FEAT, 4);
    int32_t y[GLOBAL];
    tsr_dataset *d = NULL;
    char path[256];
    tsr_mh_shared_path(path, sizeof path, "test-hybrid", ".ckpt");
    if (!h || !t) goto out;
    uint64_t s = 77;
    for (size_t i = 0; i < np; i++) a[i] = (float)(tsr_mh_lcg(&s) & 0xFFFF) / 65536.0f - 0.5f;
    CHECK_OK(tsr_hybrid_set_params(h, a, np), ctx);
    CHECK_OK(tsr_hybrid_get_params(h, c, np), ctx);
    CHECK(!memcmp(a, c, np * 4), "get after set differs");
    CHECK(tsr_hybrid_get_params(h, c, np + 1) == TSR_ERR_SHAPE, "get with a wrong count");
    CHECK_OK(tsr_trainer_set_params(t, a, np), ctx);
    CHECK_OK(tsr_dataset_create(ctx, 29, 1, 8, 8, 10, &d), ctx); /* slices 15/14, 10/10/9 */
    if (d) {
        uint64_t q = 5;
        for (size_t i = 0; i < d->count * d->features; i++) d->images[i] = (float)(tsr_mh_lcg(&q) & 0xFFFF) / 65536.0f;
        for (size_t i = 0; i < d->count; i++) d->labels[i] = (int32_t)(tsr_mh_lcg(&q) % 10);
        double ha = -1, hl = -1, ta = -2, tl = -2;
        CHECK_OK(tsr_hybrid_evaluate(h, d, &ha, &hl), ctx);
        CHECK_OK(tsr_trainer_evaluate(t, d, &ta, &tl), ctx);
        CHECK(ha == ta && fabs(hl - tl) <= 1e-6 * fabs(tl), "evaluate: %.6f / %.9g, trainer %.6f / %.9g",
              ha, hl, ta, tl);
    }
    /* a step, then hybrid -> trainer: both continue alike */
    make_batch(0, x, y);
    size_t r = tsr_hybrid_replica(h), off, n;
    share(R, r, &off, &n);
    CHECK_OK(tsr_trainer_step(t, x, y, GLOBAL, NULL), ctx);
    CHECK_OK(tsr_hybrid_step(h, x + off * FEAT, y + off, n, NULL), ctx);
    CHECK_OK(tsr_hybrid_save(h, path), ctx);
    tsr_trainer *t2 = NULL;
    CHECK_OK(tsr_trainer_create(ctx, m, &os, &t2), ctx);
    if (t2) {
        CHECK_OK(tsr_trainer_load(t2, path), ctx);
        CHECK(tsr_trainer_steps(t2) == 1, "trainer from a hybrid checkpoint: step %llu",
              (unsigned long long)tsr_trainer_steps(t2));
        CHECK_OK(tsr_trainer_get_params(t2, a, np), ctx);
        CHECK_OK(tsr_hybrid_get_params(h, c, np), ctx);
        CHECK(!memcmp(a, c, np * 4), "trainer loaded other parameters than the hybrid's");
        make_batch(1, x, y);
        CHECK_OK(tsr_trainer_step(t2, x, y, GLOBAL, NULL), ctx);
        CHECK_OK(tsr_hybrid_step(h, x + off * FEAT, y + off, n, NULL), ctx);
        CHECK_OK(tsr_trainer_get_params(t2, a, np), ctx);
        CHECK_OK(tsr_hybrid_get_params(h, c, np), ctx);
        double e = rel_err(c, a, np);
        CHECK(e <= 1.0, "after resuming: hybrid %.3g x the bound from the trainer", e);
        /* trainer -> hybrid: a fresh hybrid takes the trainer's state bitwise */
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0) CHECK_OK(tsr_trainer_save(t2, path), ctx);
        MPI_Barrier(MPI_COMM_WORLD);
        tsr_hybrid *h2 = NULL;
        CHECK_OK(tsr_hybrid_create(ctx, m, &o, &ho, &h2), ctx);
        if (h2) {
            CHECK_OK(tsr_hybrid_load(h2, path), ctx);
            CHECK(tsr_hybrid_steps(h2) == 2, "hybrid from a trainer checkpoint: step %llu",
                  (unsigned long long)tsr_hybrid_steps(h2));
            CHECK_OK(tsr_hybrid_get_params(h2, c, np), ctx);
            CHECK(!memcmp(a, c, np * 4), "hybrid loaded other parameters than the trainer's");
            make_batch(2, x, y);
            CHECK_OK(tsr_trainer_step(t2, x, y, GLOBAL, NULL), ctx);
            CHECK_OK(tsr_hybrid_step(h2, x + off * FEAT, y + off, n, NULL), ctx);
            CHECK_OK(tsr_trainer_get_params(t2, a, np), ctx);
            CHECK_OK(tsr_hybrid_get_params(h2, c, np), ctx);
            e = rel_err(c, a, np);
            CHECK(e <= 1.0, "after loading a trainer's state: %.3g x the bound", e);
            CHECK(tsr_mh_same_on_all_ranks(c, np), "replicas differ after a load and a step");
            /* a checkpoint of another model is refused on every rank */
            tsr_model *m2 = NULL;
            CHECK_OK(tsr_model_parse(ctx, "dense:10", IN, &m2), ctx);
            tsr_trainer *t3 = NULL;
            CHECK_OK(tsr_trainer_create(ctx, m2, &os, &t3), ctx);
            MPI_Barrier(MPI_COMM_WORLD);
            if (rank == 0 && t3) CHECK_OK(tsr_trainer_save(t3, path), ctx);
            MPI_Barrier(MPI_COMM_WORLD);
            tsr_status ls = tsr_hybrid_load(h2, path);
            CHECK(ls == TSR_ERR_MISMATCH && strstr(tsr_context_last_error(ctx), "model"),
                  "other model's checkpoint: %s (%s)", tsr_status_str(ls), tsr_context_last_error(ctx));
            tsr_trainer_free(t3);
            tsr_model_free(m2);
            tsr_hybrid_free(h2);
        }
        tsr_trainer_free(t2);
    }
out:
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) remove(path);
    tsr_dataset_free(ctx, d);
    free(a);
    free(c);
    free(x);
    tsr_hybrid_free(h);
    tsr_trainer_free(t);
    tsr_model_free(m);
}

static void test_nonfinite(tsr_context *ctx, tsr_comm *comm) {
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, CNN, IN, &m), ctx);
    if (!m) return;
    size_t L = tsr_model_layer_count(m), np = tsr_model_param_count(m), b[8];
    size_t R = nranks == 4 ? 2 : (size_t)nranks, S = (size_t)nranks / R;
    for (int policy = 0; policy < 2; policy++) {
        tsr_trainer_options o;
        options(&o, comm, 0);
        o.nonfinite = policy ? TSR_NONFINITE_SKIP : TSR_NONFINITE_STOP;
        tsr_hybrid_options ho;
        hopts(&ho, R, S, L, b, 2, TSR_PIPELINE_GPIPE);
        tsr_hybrid *h = NULL;
        CHECK_OK(tsr_hybrid_create(ctx, m, &o, &ho, &h), ctx);
        if (!h) continue;
        float *x = calloc(GLOBAL * FEAT, 4), *before = calloc(np, 4), *after = calloc(np, 4);
        int32_t y[GLOBAL];
        make_batch(0, x, y);
        x[3] = NAN; /* in replica 0's slice only */
        size_t off, n;
        share(R, tsr_hybrid_replica(h), &off, &n);
        CHECK_OK(tsr_hybrid_get_params(h, before, np), ctx);
        tsr_status s = tsr_hybrid_step(h, x + off * FEAT, y + off, n, NULL);
        if (policy) {
            CHECK(s == TSR_OK && tsr_hybrid_skipped(h) == 1 && tsr_hybrid_steps(h) == 0,
                  "skip policy: status %s, skipped %llu", tsr_status_str(s),
                  (unsigned long long)tsr_hybrid_skipped(h));
            CHECK_OK(tsr_hybrid_get_params(h, after, np), ctx);
            CHECK(!memcmp(before, after, np * 4), "a skipped step changed the parameters");
            make_batch(1, x, y);
            CHECK_OK(tsr_hybrid_step(h, x + off * FEAT, y + off, n, NULL), ctx);
            CHECK(tsr_hybrid_steps(h) == 1, "step after a skip");
        } else {
            CHECK(s == TSR_ERR_NUMERIC, "stop policy: %s (%s)", tsr_status_str(s),
                  tsr_context_last_error(ctx));
        }
        free(x);
        free(before);
        free(after);
        tsr_hybrid_free(h);
    }
    tsr_model_free(m);
}

/* The same through tsr_trainer in hybrid mode (2 replicas where the ranks allow), the fault
 * injected (fault_grad_nan_step) into every rank's gradients at step 4. */
static void test_nonfinite_injected(tsr_context *ctx, tsr_comm *comm) {
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.comm = comm;
    o.mode = TSR_MODE_HYBRID;
    o.replicas = nranks % 2 ? 1 : 2;
    o.microbatches = 2;
    int ok = 0;
    char why[256];
    CHECK_OK(tsr_mh_nonfinite(ctx, &o, "dense:16,relu,dense:16,relu,dense:10", 4, &ok, why, sizeof why), ctx);
    CHECK(ok, "hybrid mode: %s", why);
}

static void expect_error(tsr_context *ctx, tsr_status got, tsr_status want, const char *words,
                         const char *what) {
    CHECK(tsr_mh_error_is(ctx, got, want, words), "%s: %s (%s), wanted %s with '%s'",
          what, tsr_status_str(got), tsr_context_last_error(ctx), tsr_status_str(want), words);
}

static void test_errors(tsr_context *ctx, tsr_comm *comm) {
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, CNN, IN, &m), ctx);
    if (!m) return;
    size_t L = tsr_model_layer_count(m), b[8];
    tsr_trainer_options o;
    options(&o, comm, 0);
    tsr_hybrid_options ho;
    tsr_hybrid *h = NULL;
    hopts(&ho, 0, (size_t)nranks, L, b, 1, 0);
    expect_error(ctx, tsr_hybrid_create(ctx, m, &o, &ho, &h), TSR_ERR_INVALID_ARG, "replicas is 0",
                 "R = 0");
    CHECK(h == NULL, "R = 0 gave a hybrid");
    hopts(&ho, 2, (size_t)nranks, L, b, 1, 0); /* 2 x n on n ranks */
    expect_error(ctx, tsr_hybrid_create(ctx, m, &o, &ho, &h), TSR_ERR_INVALID_ARG,
                 "ranks are not replicas 2 x stages", "ranks != R*S");
    if (nranks == 4) {
        hopts(&ho, 3, 1, L, b, 1, 0);
        expect_error(ctx, tsr_hybrid_create(ctx, m, &o, &ho, &h), TSR_ERR_INVALID_ARG,
                     "4 ranks are not replicas 3 x stages 1", "4 ranks as 3x1");
    }
    /* the pipeline's own checks still apply, on every rank alike */
    hopts(&ho, (size_t)nranks, 1, L, b, GLOBAL + 1, 0);
    expect_error(ctx, tsr_hybrid_create(ctx, m, &o, &ho, &h), TSR_ERR_INVALID_ARG, "micro-batches",
                 "too many micro-batches");
    size_t rr = 9, ss = 9;
    CHECK_OK(tsr_hybrid_layout(ctx, 6, 3, 2, 5, &rr, &ss), ctx);
    CHECK(rr == 2 && ss == 1, "layout of rank 5 in 3x2: replica %zu stage %zu", rr, ss);
    expect_error(ctx, tsr_hybrid_layout(ctx, 6, 4, 2, 0, &rr, &ss), TSR_ERR_INVALID_ARG,
                 "6 ranks are not replicas 4 x stages 2 (= 8)", "layout 4x2 on 6");
    expect_error(ctx, tsr_hybrid_layout(ctx, 6, 3, 0, 0, &rr, &ss), TSR_ERR_INVALID_ARG,
                 "stages is 0", "layout S = 0");
    /* a batch larger than the replica's limit */
    hopts(&ho, (size_t)nranks, 1, L, b, 1, 0);
    CHECK_OK(tsr_hybrid_create(ctx, m, &o, &ho, &h), ctx);
    if (h) {
        float *x = calloc((GLOBAL + 1) * FEAT, 4);
        int32_t y[GLOBAL + 1] = {0};
        expect_error(ctx, tsr_hybrid_step(h, x, y, GLOBAL + 1, NULL), TSR_ERR_SHAPE, "batch of 12",
                     "batch too large");
        free(x);
        tsr_hybrid_free(h);
    }
    tsr_model_free(m);
}

static void test_timeline(tsr_context *ctx, tsr_comm *comm) {
    char path[256];
    tsr_mh_shared_path(path, sizeof path, "test-hybrid-tl", ".json");
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, CNN, IN, &m), ctx);
    size_t b[8], R = nranks == 4 ? 2 : (size_t)nranks, S = (size_t)nranks / R;
    tsr_trainer_options o;
    options(&o, comm, 0);
    o.timeline = path;
    tsr_hybrid_options ho;
    hopts(&ho, R, S, tsr_model_layer_count(m), b, 2, TSR_PIPELINE_1F1B);
    tsr_hybrid *h = NULL;
    CHECK_OK(tsr_hybrid_create(ctx, m, &o, &ho, &h), ctx);
    float *x = calloc(GLOBAL * FEAT, 4);
    int32_t y[GLOBAL];
    make_batch(0, x, y);
    size_t off = 0, n = GLOBAL;
    if (h) share(R, tsr_hybrid_replica(h), &off, &n);
    if (h) CHECK_OK(tsr_hybrid_step(h, x + off * FEAT, y + off, n, NULL), ctx);
    tsr_hybrid_free(h);
    free(x);
    if (rank == 0) {
        FILE *f = fopen(path, "rb");
        CHECK(f != NULL, "no timeline file %s", path);
        static char text[1 << 20];
        size_t k = f ? fread(text, 1, sizeof text - 1, f) : 0;
        text[k] = 0;
        if (f) fclose(f);
        CHECK(strstr(text, "\"backward 1\"") && strstr(text, "\"update\""), "timeline lacks steps");
        if (R > 1) CHECK(strstr(text, "\"allreduce b0\""), "timeline lacks the stage allreduce");
        char want[32];
        snprintf(want, sizeof want, "\"pid\":%d", nranks - 1);
        CHECK(strstr(text, want), "timeline lacks the last rank (%s)", want);
        remove(path);
    }
    tsr_model_free(m);
}

/* Fault mode: 2x2 (4 ranks) or 2x1 / 1x3 layouts; train until `die_rank` kills itself. */
static int fault_mode(tsr_context *ctx, tsr_comm *comm, int die_rank, int die_step) {
    tsr_model *m = NULL;
    if (tsr_model_parse(ctx, CNN, IN, &m) != TSR_OK) return 2;
    size_t b[8], R = nranks == 4 || nranks == 2 ? 2 : 1, S = (size_t)nranks / R;
    tsr_trainer_options o;
    options(&o, comm, 0);
    tsr_hybrid_options ho;
    hopts(&ho, R, S, tsr_model_layer_count(m), b, 2, TSR_PIPELINE_1F1B);
    tsr_hybrid *h = NULL;
    if (tsr_hybrid_create(ctx, m, &o, &ho, &h) != TSR_OK) return 2;
    float *x = calloc(GLOBAL * FEAT, 4);
    int32_t y[GLOBAL];
    size_t off, n;
    share(R, tsr_hybrid_replica(h), &off, &n);
    for (int s = 0; s < 1000; s++) {
        if (rank == die_rank && s == die_step) raise(SIGKILL);
        make_batch(s, x, y);
        tsr_status st = tsr_hybrid_step(h, x + off * FEAT, y + off, n, NULL);
        if (st != TSR_OK) {
            fprintf(stderr, "rank %d: step %d: %s (%s)\n", rank, s, tsr_context_last_error(ctx),
                    tsr_status_name(st));
            return st == TSR_ERR_PEER_LOST ? 3 : 4; /* nothing collective after a lost peer */
        }
    }
    tsr_hybrid_free(h);
    free(x);
    tsr_model_free(m);
    return 0;
}


/* Measurement mode (not run by the tests): samples/s of cnn (28x28x1, synthetic data, global
 * batch B) on all ranks as hybrid 2 x (n/2), data parallel (tsr_trainer, n ranks: B/n each)
 * and a pipeline of n stages (1 x n hybrid: the pipeline itself, micro-batches of the
 * hybrid's size), interleaved over --rounds rounds of --steps steps so that machine noise hits
 * each alike; prints every round and the median per layout on rank 0.
 *   test_hybrid --bench 64 [--steps 8] [--rounds 3] [--micro 2] */
static double median(double *v, int n) {
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double x = v[j];
            v[j] = v[j - 1];
            v[j - 1] = x;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int bench_mode(tsr_context *ctx, tsr_comm *comm, int argc, char **argv) {
    size_t B = 64, micro = 2;
    int steps = 8, rounds = 3;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--bench")) B = (size_t)atol(argv[i + 1]);
        if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
        if (!strcmp(argv[i], "--micro")) micro = (size_t)atol(argv[i + 1]);
    }
    if (rounds > 16) rounds = 16;
    tsr_model_input in = {1, 28, 28, 10};
    tsr_model *m = NULL;
    if (tsr_model_parse(ctx, "cnn", in, &m) != TSR_OK) return 2;
    size_t L = tsr_model_layer_count(m), b[17];
    float *x = malloc(B * 784 * sizeof *x);
    int32_t *y = malloc(B * sizeof *y);
    uint64_t seed = 5;
    for (size_t i = 0; i < B * 784; i++) x[i] = (float)(tsr_mh_lcg(&seed) & 0xFFFF) / 65536.0f;
    for (size_t i = 0; i < B; i++) y[i] = (int32_t)(i % 10);
    const char *names[3] = {"hybrid", "data", "pipeline"};
    double rate[3][16];
    size_t R2 = nranks % 2 ? 1 : 2;
    for (int rd = 0; rd < rounds; rd++)
        for (int k = 0; k < 3; k++) {
            tsr_trainer_options o;
            tsr_trainer_options_init(&o);
            o.comm = comm;
            o.no_grad_check = 1;
            tsr_hybrid *h = NULL;
            tsr_trainer *t = NULL;
            size_t R = k == 0 ? R2 : 1, S = (size_t)nranks / R, n = B / R, off = 0;
            tsr_status st;
            if (k == 1) {
                o.batch = B / (size_t)nranks;
                st = tsr_trainer_create(ctx, m, &o, &t);
                n = o.batch;
                off = (size_t)rank * n;
            } else {
                tsr_hybrid_options ho;
                hopts(&ho, R, S, L, b, k == 0 ? micro : micro * R2, TSR_PIPELINE_1F1B);
                o.batch = n;
                st = tsr_hybrid_create(ctx, m, &o, &ho, &h);
                off = (size_t)rank / S * n;
            }
            if (st != TSR_OK) {
                fprintf(stderr, "rank %d: %s: %s\n", rank, names[k], tsr_context_last_error(ctx));
                return 2;
            }
            double t0 = 0;
            for (int s = -1; s < steps && st == TSR_OK; s++) { /* one warm-up step */
                if (s == 0) {
                    MPI_Barrier(MPI_COMM_WORLD);
                    t0 = MPI_Wtime();
                }
                st = t ? tsr_trainer_step(t, x + off * 784, y + off, n, NULL)
                       : tsr_hybrid_step(h, x + off * 784, y + off, n, NULL);
            }
            MPI_Barrier(MPI_COMM_WORLD);
            rate[k][rd] = (double)B * steps / (MPI_Wtime() - t0);
            if (st != TSR_OK) fprintf(stderr, "rank %d: step: %s\n", rank, tsr_context_last_error(ctx));
            if (rank == 0)
                printf("round %d %-8s %zux%zu: %.1f samples/s\n", rd, names[k], k == 1 ? (size_t)nranks : R,
                       k == 1 ? (size_t)1 : S, rate[k][rd]);
            tsr_trainer_free(t);
            tsr_hybrid_free(h);
        }
    if (rank == 0)
        for (int k = 0; k < 3; k++)
            printf("median %-8s %.1f samples/s (cnn, global batch %zu, %d ranks)\n", names[k],
                   median(rate[k], rounds), B, nranks);
    free(x);
    free(y);
    tsr_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    int die_rank = -1, die_step = -1, bench = 0;
    for (int i = 1; i + 1 < argc; i++) {
        if (!strcmp(argv[i], "--bench")) bench = 1;
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
    if (bench) {
        int rc = bench_mode(ctx, comm, argc, argv);
        tsr_mh_world_close(&w);
        return rc;
    }
    if (die_rank >= 0) {
        signal(SIGUSR1, SIG_IGN); /* as test_pipeline: the library must notice by itself */
        int rc = fault_mode(ctx, comm, die_rank, die_step);
        if (rc == 3) _exit(3); /* a peer is gone: MPI_Finalize would wait for it */
        tsr_mh_world_close(&w);
        return rc;
    }
    if (comm && nranks <= 4) {
        test_errors(ctx, comm);
        test_match_trainer(ctx, comm);
        test_eval_and_checkpoints(ctx, comm);
        test_nonfinite(ctx, comm);
        test_nonfinite_injected(ctx, comm);
        test_timeline(ctx, comm);
    }
    double worst = 0.0;
    MPI_Allreduce(&worst_seen, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0)
        printf("test_hybrid n=%d: worst parameter error vs trainer: %.3g x tolerance\n", nranks, worst);
    return tsr_mh_world_end(&w, failures, skips, "test_hybrid");
}
