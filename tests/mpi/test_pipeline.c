/* Pipeline parallelism under mpiexec -n 1..4 (one stage per rank), against single-process
 * training (tsr_trainer, same seed and batches) computed on every rank:
 *  - point to point: ring of blocking and non-blocking messages, errors (bad rank, tag, size);
 *  - models split several ways (even, uneven, a stage of only relu/pool layers, conv stages),
 *    M = 1, M = 3 (10 samples: micro-batches of 4, 3, 3), M = stages, both schedules:
 *    parameters and losses within tolerance of the trainer (the micro-batch gradients are summed
 *    in another order: bound below), bitwise with M = 1; GPipe and 1F1B bitwise equal;
 *  - get/set params round trip; evaluation equals the trainer's;
 *  - pipeline checkpoint -> single-process trainer continues identically, and back;
 *  - non-finite gradients in one stage: every stage skips (or every stage stops);
 *  - bad options are refused with errors naming them;
 *  - TSR_TIMELINE: per-micro-batch forward/backward and message events of every rank.
 * Fault mode (tests/fault/pipeline-kill.sh): --die-rank R --die-step K trains until rank R
 * kills itself (SIGKILL) at step K; the survivors must fail with TSR_ERR_PEER_LOST; exit 3.
 * Prints each failure and exits non-zero. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mpi.h>
#include "lib/train/pipeline.h"
#include "support/test_util.h"
#include "tessera.h"
#include "tests/support/mode_harness.h"
#include "tests/support/mpi_check.h"

static int rank, nranks;

enum { BATCH = 10, STEPS = 3, BATCH_SEED = 1000 };
#define RECOMPUTE 2 /* added to a schedule: re-materialise instead of activation sets */

/* Tolerance of pipeline vs trainer parameters: |p - t| <= ATOL + RTOL |t|. The only difference
 * is the order in which micro-batch gradients are summed (float32, a few terms per weight:
 * relative error ~1e-7 per step), followed by 3 SGD steps with lr 0.05: differences stay
 * below 1e-6 absolute on weights of size ~0.3 (measured max 4e-8 here). */
#define ATOL 1e-6
#define RTOL 1e-5

/* Batch `step` of a learnable task: label = argmax of the first `classes` features. */
static void make_batch(size_t features, size_t classes, int step, float *x, int32_t *y) {
    tsr_mh_argmax_batch(BATCH_SEED + (uint64_t)step, BATCH, features, classes, x, y);
}

typedef struct model_case {
    const char *name, *spec;
    tsr_model_input in;
} model_case;

static const model_case MLP = {"mlp", "dense:24,relu,dense:16,relu,dense:10", {1, 4, 8, 10}};
static const model_case CNN = {"cnn", "conv3x3:4,relu,pool2,conv3x3:4,relu,dense:12,relu,dense:10",
                               {1, 8, 8, 10}};

static void options(tsr_trainer_options *o, tsr_comm *comm, int adam) {
    tsr_mh_options(o, comm, BATCH, 7, adam);
}

/* Bounds for `nranks` stages of `layers` layers: 0 even; 1 uneven (stages 1.. one layer each,
 * stage 0 the rest); 2 (cnn) conv | relu,pool | conv,relu | rest (as far as the stages go). */
static void split(size_t layers, int how, size_t *b) {
    size_t S = (size_t)nranks;
    b[0] = 0;
    b[S] = layers;
    static const size_t cnn[] = {1, 3, 5};
    for (size_t s = 1; s < S; s++)
        b[s] = how == 0 ? s * layers / S : how == 1 ? layers - S + s : cnn[s - 1];
}

typedef struct run_result {
    float loss[STEPS];
    float *params;
    float *grads;   /* the last step's gradients: the trainer's whole, a pipeline's stage slice */
    size_t lo, n;   /* a pipeline: where this rank's slice lies in the flat layout */
} run_result;

static void free_result(run_result *r) {
    free(r->params);
    free(r->grads);
}

/* Where stage layers [first, last) lie in the flat parameter layout (tsr_model_param_tensor). */
static void stage_slice(const tsr_model *m, size_t first, size_t last, size_t *lo, size_t *n) {
    *lo = tsr_model_param_count(m);
    *n = 0;
    for (size_t i = 0; i < tsr_model_param_tensor_count(m); i++) {
        tsr_param_info pi;
        if (tsr_model_param_tensor(m, i, &pi) != TSR_OK || pi.layer < first || pi.layer >= last) continue;
        if (pi.offset < *lo) *lo = pi.offset;
        *n += pi.count;
    }
    if (!*n) *lo = 0;
}

/* STEPS steps of the pipeline; results into r (params malloc'ed). */
static int run_pipeline(tsr_context *ctx, const tsr_model *m, const model_case *mc,
                        tsr_comm *comm, const size_t *bounds, size_t M, int sched, int adam,
                        run_result *r) {
    tsr_trainer_options o;
    options(&o, comm, adam);
    tsr_pipeline_options po = {bounds, (size_t)nranks, M, sched & 1, (sched & RECOMPUTE) != 0};
    tsr_pipeline *p = NULL;
    size_t np = tsr_model_param_count(m), feat = mc->in.channels * mc->in.height * mc->in.width;
    r->params = calloc(np, sizeof(float));
    CHECK_OK(tsr_pipeline_create(ctx, m, &o, &po, &p), ctx);
    if (!p) return -1;
    float x[BATCH * 64];
    int32_t y[BATCH];
    for (int s = 0; s < STEPS; s++) {
        make_batch(feat, mc->in.classes, s, x, y);
        CHECK_OK(tsr_pipeline_step(p, x, y, BATCH, &r->loss[s]), ctx);
    }
    CHECK_OK(tsr_pipeline_get_params(p, r->params, np), ctx);
    stage_slice(m, bounds[rank], bounds[rank + 1], &r->lo, &r->n);
    r->grads = calloc(r->n + 1, sizeof(float));
    CHECK_OK(tsr_pipeline_get_grads(p, r->grads, r->n), ctx);
    tsr_pipeline_free(p);
    return 0;
}

static void run_trainer(tsr_context *ctx, const tsr_model *m, const model_case *mc, int adam,
                        run_result *r) {
    tsr_trainer_options o;
    options(&o, NULL, adam);
    size_t np = tsr_model_param_count(m), feat = mc->in.channels * mc->in.height * mc->in.width;
    r->params = calloc(np, sizeof(float));
    r->grads = calloc(np, sizeof(float));
    CHECK_OK(tsr_mh_reference_grads(ctx, m, &o, STEPS, BATCH, feat, mc->in.classes, BATCH_SEED, r->loss,
                                    r->params, r->grads), ctx);
}

static double worst_seen;

/* max over elements of |a-b| / (ATOL + RTOL |b|); a NaN counts as infinitely far */
static double rel_err(const float *a, const float *b, size_t n) {
    return tsr_test_rel_error(a, b, n, ATOL, RTOL, NULL);
}

static void test_match_trainer(tsr_context *ctx, tsr_comm *comm) {
    const model_case *cases[2] = {&MLP, &CNN};
    for (int c = 0; c < 2; c++) {
        const model_case *mc = cases[c];
        tsr_model *m = NULL;
        CHECK_OK(tsr_model_parse(ctx, mc->spec, mc->in, &m), ctx);
        if (!m) continue;
        size_t L = tsr_model_layer_count(m), np = tsr_model_param_count(m);
        run_result ref = {{0}, NULL, NULL, 0, 0};
        run_trainer(ctx, m, mc, 0, &ref);
        size_t Ms[3] = {1, 3, (size_t)nranks};
        for (int how = 0; how < (c == 1 ? 3 : 2); how++) {
            size_t b[8];
            split(L, how, b);
            for (int mi = 0; mi < 3; mi++) {
                if (mi == 2 && Ms[2] <= 3 && nranks != 2) continue; /* already covered */
                run_result g = {{0}, NULL, NULL, 0, 0}, f = g, gr = g, fr = g;
                if (run_pipeline(ctx, m, mc, comm, b, Ms[mi], TSR_PIPELINE_GPIPE, 0, &g) ||
                    run_pipeline(ctx, m, mc, comm, b, Ms[mi], TSR_PIPELINE_1F1B, 0, &f) ||
                    run_pipeline(ctx, m, mc, comm, b, Ms[mi], TSR_PIPELINE_GPIPE | RECOMPUTE, 0, &gr) ||
                    run_pipeline(ctx, m, mc, comm, b, Ms[mi], TSR_PIPELINE_1F1B | RECOMPUTE, 0, &fr)) {
                    free_result(&g);
                    free_result(&f);
                    free_result(&gr);
                    free_result(&fr);
                    continue;
                }
                /* the last step's gradients: this stage's slice of the trainer's (the step's
                 * parameters already differ within the tolerance above) */
                double ge = rel_err(g.grads, ref.grads + g.lo, g.n);
                CHECK(ge <= 10.0, "%s split %d M=%zu: stage %d's gradients differ from the trainer's "
                      "slice [%zu, %zu) by %g x tolerance", mc->name, how, Ms[mi], rank, g.lo,
                      g.lo + g.n, ge);
                if (Ms[mi] == 1)
                    CHECK(!memcmp(g.grads, ref.grads + g.lo, g.n * 4),
                          "%s split %d M=1: gradients not bitwise the trainer's", mc->name, how);
                CHECK(!memcmp(g.params, gr.params, np * 4) && !memcmp(g.params, fr.params, np * 4),
                      "%s split %d M=%zu: re-materialisation changed the result", mc->name, how, Ms[mi]);
                double e = rel_err(g.params, ref.params, np);
                if (e > worst_seen) worst_seen = e;
                CHECK(e <= 1.0, "%s split %d M=%zu: parameters differ from the trainer's by %g x tolerance",
                      mc->name, how, Ms[mi], e);
                for (int s = 0; s < STEPS; s++)
                    CHECK(fabs(g.loss[s] - ref.loss[s]) <= 1e-6 + 1e-5 * fabs(ref.loss[s]),
                          "%s split %d M=%zu step %d: loss %.9g, trainer %.9g", mc->name, how, Ms[mi], s,
                          (double)g.loss[s], (double)ref.loss[s]);
                if (Ms[mi] == 1)
                    CHECK(!memcmp(g.params, ref.params, np * 4), "%s split %d M=1: not bitwise the trainer's",
                          mc->name, how);
                CHECK(!memcmp(g.params, f.params, np * 4) && !memcmp(g.loss, f.loss, sizeof g.loss),
                      "%s split %d M=%zu: GPipe and 1F1B differ", mc->name, how, Ms[mi]);
                free_result(&g);
                free_result(&f);
                free_result(&gr);
                free_result(&fr);
            }
        }
        /* Adam, M = 1: bitwise the trainer's as well */
        run_result ra = {{0}, NULL, NULL, 0, 0}, pa = ra;
        run_trainer(ctx, m, mc, 1, &ra);
        size_t b[8];
        split(L, 0, b);
        if (!run_pipeline(ctx, m, mc, comm, b, 1, TSR_PIPELINE_1F1B, 1, &pa))
            CHECK(!memcmp(pa.params, ra.params, np * 4), "%s Adam M=1: not bitwise the trainer's", mc->name);
        free_result(&ra);
        free_result(&pa);
        free_result(&ref);
        tsr_model_free(m);
    }
}

/* Dropout: M = 1 uses the trainer's masks (bitwise the trainer); with M = 3 the re-run
 * forwards (re-materialisation) must reproduce each micro-batch's masks: bitwise equal to
 * activation sets. */
static void test_dropout(tsr_context *ctx, tsr_comm *comm) {
    model_case mc = {"dropout", "dense:24,relu,dropout:0.3,dense:16,relu,dropout:0.2,dense:10",
                     {1, 4, 8, 10}};
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, mc.spec, mc.in, &m), ctx);
    if (!m) return;
    size_t np = tsr_model_param_count(m), b[8];
    split(tsr_model_layer_count(m), 0, b);
    run_result ref = {{0}, NULL, NULL, 0, 0}, g1 = ref, g = ref, f = ref;
    run_trainer(ctx, m, &mc, 0, &ref);
    if (!run_pipeline(ctx, m, &mc, comm, b, 1, TSR_PIPELINE_GPIPE, 0, &g1))
        CHECK(!memcmp(g1.params, ref.params, np * 4), "dropout M=1: not bitwise the trainer's");
    if (!run_pipeline(ctx, m, &mc, comm, b, 3, TSR_PIPELINE_GPIPE, 0, &g) &&
        !run_pipeline(ctx, m, &mc, comm, b, 3, TSR_PIPELINE_1F1B | RECOMPUTE, 0, &f)) {
        CHECK(!memcmp(g.params, f.params, np * 4), "dropout M=3: re-materialised 1F1B differs from GPipe");
        CHECK(memcmp(g.params, ref.params, np * 4), "dropout M=3: the trainer's masks (expected others)");
    }
    free_result(&ref);
    free_result(&g1);
    free_result(&g);
    free_result(&f);
    tsr_model_free(m);
}

/* Two ranks, two kinds of device: stage 0 on the host, stage 1 on an OpenCL device (PoCL here),
 * activations staged through host memory. Against the host trainer within a looser bound than
 * above: the device's GEMMs round differently (|p - t| <= 1e-5 + 1e-4 |t| after 3 steps).
 * Skipped (SKIP, exit 77) where rank 1 has no OpenCL device. */
static void test_heterogeneous(tsr_comm *comm) {
    if (nranks != 2) return;
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_HWLOC;
    co.log_level = TSR_LOG_ERROR;
    tsr_context *ctx = NULL;
    int have = 0, both = 0;
    if (rank == 1 && tsr_context_create(&ctx, &co) == TSR_OK)
        have = tsr_context_find_device(ctx, "opencl:0:0") >= 0;
    if (rank == 0) have = 1;
    MPI_Allreduce(&have, &both, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!both) {
        if (rank == 1) {
#if TSR_WITH_OPENCL
            SKIP("heterogeneous pipeline: missing an OpenCL device on rank 1 (PoCL: Debian package "
                 "pocl-opencl-icd)");
#else
            SKIP("heterogeneous pipeline: built without OpenCL (WITH_OPENCL=0)");
#endif
        }
        tsr_context_free(ctx);
        return;
    }
    if (rank == 0) CHECK_OK(tsr_test_quiet_context(&ctx), ctx);
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, CNN.spec, CNN.in, &m), ctx);
    if (!m) goto out;
    size_t np = tsr_model_param_count(m), b[8];
    split(tsr_model_layer_count(m), 0, b);
    run_result ref = {{0}, NULL, NULL, 0, 0}, g = ref;
    run_trainer(ctx, m, &CNN, 0, &ref);
    tsr_trainer_options o;
    options(&o, comm, 0);
    if (rank == 1) o.device = "opencl:0:0";
    tsr_pipeline_options po = {b, 2, 3, TSR_PIPELINE_1F1B, 0};
    tsr_pipeline *p = NULL;
    g.params = calloc(np, 4);
    CHECK_OK(tsr_pipeline_create(ctx, m, &o, &po, &p), ctx);
    float x[BATCH * 64];
    int32_t y[BATCH];
    for (int s = 0; p && s < STEPS; s++) {
        make_batch(64, 10, s, x, y);
        CHECK_OK(tsr_pipeline_step(p, x, y, BATCH, &g.loss[s]), ctx);
        CHECK(fabs(g.loss[s] - ref.loss[s]) <= 1e-5 + 1e-4 * fabs(ref.loss[s]), "host+opencl step %d: loss %g vs %g",
              s, (double)g.loss[s], (double)ref.loss[s]);
    }
    if (p) CHECK_OK(tsr_pipeline_get_params(p, g.params, np), ctx);
    double e = 0.0;
    for (size_t i = 0; i < np; i++)
        e = fmax(e, fabs((double)g.params[i] - ref.params[i]) / (1e-5 + 1e-4 * fabs((double)ref.params[i])));
    CHECK(e <= 1.0, "host+opencl pipeline: parameters off the host trainer's by %g x tolerance", e);
    if (rank == 0) printf("heterogeneous pipeline (host + %s): worst parameter error %.3g x tolerance\n",
                          "opencl:0:0", e);
    tsr_pipeline_free(p);
    free_result(&ref);
    free_result(&g);
out:
    tsr_model_free(m);
    tsr_context_free(ctx);
}

/* get/set round trip, evaluation, checkpoints both ways. */
static void test_params_and_checkpoints(tsr_context *ctx, tsr_comm *comm) {
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, CNN.spec, CNN.in, &m), ctx);
    if (!m) return;
    size_t L = tsr_model_layer_count(m), np = tsr_model_param_count(m), feat = 64, b[8];
    split(L, 0, b);
    tsr_trainer_options o, os;
    options(&o, comm, 1);
    options(&os, NULL, 1);
    tsr_pipeline_options po = {b, (size_t)nranks, 2, TSR_PIPELINE_1F1B, 1};
    tsr_pipeline *p = NULL;
    tsr_trainer *t = NULL;
    CHECK_OK(tsr_pipeline_create(ctx, m, &o, &po, &p), ctx);
    CHECK_OK(tsr_trainer_create(ctx, m, &os, &t), ctx);
    float *a = calloc(np, 4), *c = calloc(np, 4), x[BATCH * 64];
    int32_t y[BATCH];
    if (!p || !t) goto out;
    /* round trip of arbitrary values (same on every rank) */
    uint64_t s = 99;
    for (size_t i = 0; i < np; i++) a[i] = (float)(tsr_mh_lcg(&s) & 0xFFFF) / 65536.0f - 0.5f;
    CHECK_OK(tsr_pipeline_set_params(p, a, np), ctx);
    CHECK_OK(tsr_pipeline_get_params(p, c, np), ctx);
    CHECK(!memcmp(a, c, np * 4), "get after set differs");
    CHECK(tsr_pipeline_get_params(p, c, np - 1) == TSR_ERR_SHAPE &&
              strstr(tsr_context_last_error(ctx), "parameters"), "get with a wrong count");
    /* the layout is the trainer's: the same parameters give the same evaluation */
    CHECK_OK(tsr_trainer_set_params(t, a, np), ctx);
    tsr_dataset *d = NULL;
    CHECK_OK(tsr_dataset_create(ctx, 27, 1, 8, 8, 10, &d), ctx); /* a partial last chunk */
    if (d) {
        for (size_t i = 0; i < 3; i++) {
            size_t k = i < 2 ? BATCH : 7;
            make_batch(feat, 10, 50 + (int)i, x, y);
            memcpy(d->images + i * BATCH * feat, x, k * feat * 4);
            memcpy(d->labels + i * BATCH, y, k * 4);
        }
        double acc_p, loss_p, acc_t, loss_t;
        CHECK_OK(tsr_pipeline_evaluate(p, d, &acc_p, &loss_p), ctx);
        CHECK_OK(tsr_trainer_evaluate(t, d, &acc_t, &loss_t), ctx);
        CHECK(acc_p == acc_t && fabs(loss_p - loss_t) <= 1e-6 * fabs(loss_t),
              "evaluate: pipeline %g/%g, trainer %g/%g", acc_p, loss_p, acc_t, loss_t);
        tsr_dataset_free(ctx, d);
    }
    /* train 2 steps on the pipeline, save, load into the trainer, both continue 2 steps */
    for (int st = 0; st < 2; st++) {
        make_batch(feat, 10, st, x, y);
        CHECK_OK(tsr_pipeline_step(p, x, y, BATCH, NULL), ctx);
    }
    char path[256], path2[256];
    tsr_mh_shared_path(path, sizeof path, "test-pipeline", ".ck");
    tsr_mh_shared_path(path2, sizeof path2, "test-pipeline-t", ".ck");
    CHECK_OK(tsr_pipeline_save(p, path), ctx);
    CHECK_OK(tsr_trainer_load(t, path), ctx);
    CHECK(tsr_trainer_steps(t) == 2, "trainer resumed at step %llu", (unsigned long long)tsr_trainer_steps(t));
    float lp[2], lt[2];
    for (int st = 2; st < 4; st++) {
        make_batch(feat, 10, st, x, y);
        CHECK_OK(tsr_pipeline_step(p, x, y, BATCH, &lp[st - 2]), ctx);
        CHECK_OK(tsr_trainer_step(t, x, y, BATCH, &lt[st - 2]), ctx);
    }
    CHECK_OK(tsr_pipeline_get_params(p, a, np), ctx);
    CHECK_OK(tsr_trainer_get_params(t, c, np), ctx);
    /* M = 2 sums micro-batch gradients in another order; Adam normalises, so allow ~lr/100 */
    double e = 0.0;
    for (size_t i = 0; i < np; i++) e = fmax(e, fabs((double)a[i] - (double)c[i]));
    CHECK(e <= 1e-5, "pipeline -> trainer resume: parameters differ by %g", e);
    CHECK(fabs(lp[1] - lt[1]) <= 1e-5 * fabs(lt[1]), "resume: losses %g vs %g", (double)lp[1], (double)lt[1]);
    /* back: the trainer's checkpoint into a fresh pipeline (M = 1 there: bitwise) */
    if (rank == 0) CHECK_OK(tsr_trainer_save(t, path2), ctx);
    MPI_Barrier(MPI_COMM_WORLD);
    tsr_pipeline *q = NULL;
    po.microbatches = 1;
    CHECK_OK(tsr_pipeline_create(ctx, m, &o, &po, &q), ctx);
    if (q) {
        CHECK_OK(tsr_pipeline_load(q, path2), ctx);
        CHECK(tsr_pipeline_steps(q) == 4, "pipeline resumed at step %llu",
              (unsigned long long)tsr_pipeline_steps(q));
        make_batch(feat, 10, 4, x, y);
        CHECK_OK(tsr_pipeline_step(q, x, y, BATCH, &lp[0]), ctx);
        CHECK_OK(tsr_trainer_step(t, x, y, BATCH, &lt[0]), ctx);
        CHECK_OK(tsr_pipeline_get_params(q, a, np), ctx);
        CHECK_OK(tsr_trainer_get_params(t, c, np), ctx);
        CHECK(!memcmp(a, c, np * 4) && lp[0] == lt[0], "trainer -> pipeline resume is not bitwise");
        /* a checkpoint of another model is refused on every rank */
        tsr_model *other = NULL;
        CHECK_OK(tsr_model_parse(ctx, MLP.spec, MLP.in, &other), ctx);
        tsr_trainer *t2 = NULL;
        CHECK_OK(tsr_trainer_create(ctx, other, &os, &t2), ctx);
        if (rank == 0 && t2) CHECK_OK(tsr_trainer_save(t2, path2), ctx);
        MPI_Barrier(MPI_COMM_WORLD);
        CHECK(tsr_pipeline_load(q, path2) == TSR_ERR_MISMATCH &&
                  strstr(tsr_context_last_error(ctx), "checkpoint is for model"),
              "load of another model's checkpoint: %s", tsr_context_last_error(ctx));
        CHECK(tsr_pipeline_steps(q) == 5, "a refused load changed the step");
        tsr_trainer_free(t2);
        tsr_model_free(other);
        tsr_pipeline_free(q);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        remove(path);
        remove(path2);
    }
out:
    free(a);
    free(c);
    tsr_trainer_free(t);
    tsr_pipeline_free(p);
    tsr_model_free(m);
}

/* A NaN input poisons the first dense layer's gradients (relu drops the NaN, the loss stays
 * finite): only stage 0 sees it, yet every stage must skip, or every stage must stop. */
static void test_nonfinite(tsr_context *ctx, tsr_comm *comm) {
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, MLP.spec, MLP.in, &m), ctx);
    if (!m) return;
    size_t L = tsr_model_layer_count(m), np = tsr_model_param_count(m), b[8];
    split(L, 0, b);
    for (int policy = 0; policy < 2; policy++) {
        tsr_trainer_options o;
        options(&o, comm, 0);
        o.nonfinite = policy ? TSR_NONFINITE_SKIP : TSR_NONFINITE_STOP;
        tsr_pipeline_options po = {b, (size_t)nranks, 2, TSR_PIPELINE_GPIPE, 0};
        tsr_pipeline *p = NULL;
        CHECK_OK(tsr_pipeline_create(ctx, m, &o, &po, &p), ctx);
        if (!p) continue;
        float x[BATCH * 32], *before = calloc(np, 4), *after = calloc(np, 4);
        int32_t y[BATCH];
        make_batch(32, 10, 0, x, y);
        x[5] = NAN;
        CHECK_OK(tsr_pipeline_get_params(p, before, np), ctx);
        tsr_status s = tsr_pipeline_step(p, x, y, BATCH, NULL);
        if (policy) {
            CHECK(s == TSR_OK && tsr_pipeline_skipped(p) == 1 && tsr_pipeline_steps(p) == 0,
                  "skip policy: status %s, skipped %llu", tsr_status_str(s),
                  (unsigned long long)tsr_pipeline_skipped(p));
            CHECK_OK(tsr_pipeline_get_params(p, after, np), ctx);
            CHECK(!memcmp(before, after, np * 4), "a skipped step changed the parameters");
            make_batch(32, 10, 1, x, y); /* and training goes on */
            CHECK_OK(tsr_pipeline_step(p, x, y, BATCH, NULL), ctx);
            CHECK(tsr_pipeline_steps(p) == 1, "step after a skip");
        } else {
            CHECK(s == TSR_ERR_NUMERIC, "stop policy: %s (%s)", tsr_status_str(s), tsr_context_last_error(ctx));
            CHECK(strstr(tsr_context_last_error(ctx), rank == 0 ? "gradient" : "gradient of another stage")
                      || nranks == 1,
                  "stop message: %s", tsr_context_last_error(ctx));
        }
        free(before);
        free(after);
        tsr_pipeline_free(p);
    }
    tsr_model_free(m);
}

/* The same through tsr_trainer in pipeline mode, the fault injected (fault_grad_nan_step) into
 * every stage's gradients at step 4. */
static void test_nonfinite_injected(tsr_context *ctx, tsr_comm *comm) {
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.comm = comm;
    o.mode = TSR_MODE_PIPELINE;
    o.microbatches = 2;
    int ok = 0;
    char why[256];
    CHECK_OK(tsr_mh_nonfinite(ctx, &o, MLP.spec, 4, &ok, why, sizeof why), ctx);
    CHECK(ok, "pipeline mode: %s", why);
}

static void expect_error(tsr_context *ctx, tsr_status got, tsr_status want, const char *words,
                         const char *what) {
    CHECK(tsr_mh_error_is(ctx, got, want, words), "%s: %s (%s), wanted %s with '%s'",
          what, tsr_status_str(got), tsr_context_last_error(ctx), tsr_status_str(want), words);
}

static void test_errors(tsr_context *ctx, tsr_comm *comm) {
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, MLP.spec, MLP.in, &m), ctx);
    if (!m) return;
    size_t L = tsr_model_layer_count(m), b[8];
    split(L, 0, b);
    tsr_trainer_options o;
    options(&o, comm, 0);
    tsr_pipeline *p = NULL;
    tsr_pipeline_options po = {b, (size_t)nranks, 2, TSR_PIPELINE_GPIPE, 0};
    size_t S = (size_t)nranks;
    b[S] = L - 1;
    expect_error(ctx, tsr_pipeline_create(ctx, m, &o, &po, &p), TSR_ERR_INVALID_ARG, "do not cover",
                 "bounds short of the model");
    b[S] = L;
    po.stages = S + 1;
    size_t b2[9];
    memcpy(b2, b, sizeof b);
    b2[S + 1] = L;
    po.bounds = b2;
    expect_error(ctx, tsr_pipeline_create(ctx, m, &o, &po, &p), TSR_ERR_INVALID_ARG,
                 "one rank per stage", "stages != ranks");
    po.bounds = b;
    po.stages = S;
    po.microbatches = 0;
    expect_error(ctx, tsr_pipeline_create(ctx, m, &o, &po, &p), TSR_ERR_INVALID_ARG, "micro-batches",
                 "0 micro-batches");
    po.microbatches = BATCH + 1;
    expect_error(ctx, tsr_pipeline_create(ctx, m, &o, &po, &p), TSR_ERR_INVALID_ARG, "micro-batches",
                 "more micro-batches than the batch");
    po.microbatches = 2;
    if (S >= 2) {
        size_t keep = b[1];
        b[1] = 0;
        expect_error(ctx, tsr_pipeline_create(ctx, m, &o, &po, &p), TSR_ERR_INVALID_ARG,
                     "stage 0 has no layers", "a stage with zero layers");
        b[1] = keep;
    }
    po.schedule = 7;
    expect_error(ctx, tsr_pipeline_create(ctx, m, &o, &po, &p), TSR_ERR_INVALID_ARG, "schedule",
                 "unknown schedule");
    po.schedule = TSR_PIPELINE_1F1B;
    po.bounds = NULL;
    expect_error(ctx, tsr_pipeline_create(ctx, m, &o, &po, &p), TSR_ERR_INVALID_ARG, "bounds",
                 "no bounds");
    po.bounds = b;
    o.compress = TSR_COMPRESS_FP16;
    expect_error(ctx, tsr_pipeline_create(ctx, m, &o, &po, &p), TSR_ERR_UNSUPPORTED, "compression",
                 "compression");
    o.compress = TSR_COMPRESS_NONE;
    o.device = "no-such-device";
    expect_error(ctx, tsr_pipeline_create(ctx, m, &o, &po, &p), TSR_ERR_NOT_FOUND, "no-such-device",
                 "unknown device");
    o.device = NULL;
    CHECK(p == NULL, "a refused create returned a pipeline");
    /* one rank's device is missing: every rank fails (the others with TSR_ERR_STATE) */
    if (S >= 2) {
        o.device = rank == 1 ? "no-such-device" : NULL;
        tsr_status s = tsr_pipeline_create(ctx, m, &o, &po, &p);
        if (rank == 1) expect_error(ctx, s, TSR_ERR_NOT_FOUND, "no-such-device", "rank 1's device");
        else expect_error(ctx, s, TSR_ERR_STATE, "failed on another rank", "another rank's device");
        o.device = NULL;
    }
    /* bad batches are refused on every rank alike, and the pipeline still works after */
    CHECK_OK(tsr_pipeline_create(ctx, m, &o, &po, &p), ctx);
    if (p) {
        float x[BATCH * 32];
        int32_t y[BATCH];
        make_batch(32, 10, 0, x, y);
        expect_error(ctx, tsr_pipeline_step(p, x, y, 0, NULL), TSR_ERR_SHAPE, "batch of 0", "empty batch");
        expect_error(ctx, tsr_pipeline_step(p, x, y, BATCH + 1, NULL), TSR_ERR_SHAPE, "batch of 11",
                     "batch too large");
        expect_error(ctx, tsr_pipeline_step(p, NULL, y, BATCH, NULL), TSR_ERR_INVALID_ARG, "NULL images",
                     "NULL images");
        y[3] = 10;
        expect_error(ctx, tsr_pipeline_step(p, x, y, BATCH, NULL), TSR_ERR_INVALID_ARG, "label 10 of sample 3",
                     "bad label");
        y[3] = 1;
        float l;
        CHECK_OK(tsr_pipeline_step(p, x, y, 1, &l), ctx); /* fewer samples than micro-batches */
        CHECK_OK(tsr_pipeline_step(p, x, y, BATCH, &l), ctx);
        CHECK(isfinite(l), "loss %g", (double)l);
        tsr_pipeline_free(p);
    }
    tsr_pipeline_free(NULL);
    /* parsers */
    tsr_pipeline_schedule sched;
    CHECK(tsr_pipeline_schedule_parse("1f1b", &sched) == TSR_OK && sched == TSR_PIPELINE_1F1B, "1f1b");
    CHECK(tsr_pipeline_schedule_parse("gpipe", &sched) == TSR_OK && sched == TSR_PIPELINE_GPIPE, "gpipe");
    CHECK(tsr_pipeline_schedule_parse("zigzag", &sched) == TSR_ERR_PARSE, "zigzag");
    tsr_model_free(m);
}

/* Point to point around the ring, blocking and not, and its errors. */
static void test_p2p(tsr_context *ctx, tsr_comm *comm) {
    int next = (rank + 1) % nranks, prev = (rank + nranks - 1) % nranks;
    int out[64], in[64];
    for (int i = 0; i < 64; i++) out[i] = rank * 1000 + i;
    tsr_comm_p2p *rr = NULL, *sr = NULL;
    CHECK_OK(tsr_comm_irecv(comm, prev, 5, in, sizeof in, &rr), ctx);
    CHECK_OK(tsr_comm_isend(comm, next, 5, out, sizeof out, &sr), ctx);
    int done = 0;
    for (int spin = 0; spin < 1000000 && !done && rr; spin++) CHECK_OK(tsr_comm_p2p_test(rr, &done), ctx);
    CHECK_OK(tsr_comm_p2p_wait(rr), ctx);
    CHECK_OK(tsr_comm_p2p_wait(sr), ctx);
    CHECK(in[0] == prev * 1000 && in[63] == prev * 1000 + 63, "ring message: %d %d", in[0], in[63]);
    /* blocking, a large message (rendezvous protocol) in both directions through even/odd order */
    size_t big = 1 << 18;
    float *a = malloc(big * 4), *b = malloc(big * 4);
    for (size_t i = 0; i < big; i++) a[i] = (float)rank + (float)i * 1e-3f;
    if (nranks > 1) {
        if (rank % 2 == 0) {
            CHECK_OK(tsr_comm_send(comm, next, 9, a, big * 4), ctx);
            CHECK_OK(tsr_comm_recv(comm, prev, 9, b, big * 4), ctx);
        } else {
            CHECK_OK(tsr_comm_recv(comm, prev, 9, b, big * 4), ctx);
            CHECK_OK(tsr_comm_send(comm, next, 9, a, big * 4), ctx);
        }
        if (nranks % 2 == 0 || rank != 0) /* odd ring: rank 0 got from the last even rank */
            CHECK(b[0] == (float)prev && b[big - 1] == (float)prev + (float)(big - 1) * 1e-3f,
                  "big message from rank %d: %g", prev, (double)b[0]);
    }
    free(a);
    free(b);
    /* errors */
    expect_error(ctx, tsr_comm_send(comm, nranks, 0, out, 4), TSR_ERR_INVALID_ARG, "rank", "bad rank");
    expect_error(ctx, tsr_comm_send(comm, 0, -1, out, 4), TSR_ERR_INVALID_ARG, "tag -1", "bad tag");
    expect_error(ctx, tsr_comm_send(comm, 0, TSR_COMM_P2P_MAX_TAG + 1, out, 4), TSR_ERR_INVALID_ARG, "tag",
                 "tag too large");
    expect_error(ctx, tsr_comm_recv(comm, 0, 0, NULL, 4), TSR_ERR_INVALID_ARG, "NULL", "NULL buffer");
    expect_error(ctx, tsr_comm_isend(comm, 0, 0, out, 4, NULL), TSR_ERR_INVALID_ARG, "out", "NULL out");
    /* a shorter message than expected: named, by test and then by wait */
    CHECK_OK(tsr_comm_isend(comm, next, 12, out, 8, &sr), ctx);
    expect_error(ctx, tsr_comm_recv(comm, prev, 12, in, 16), TSR_ERR_MISMATCH, "has 8 bytes, 16 expected",
                 "short message");
    CHECK_OK(tsr_comm_p2p_wait(sr), ctx);
    CHECK_OK(tsr_comm_isend(comm, next, 14, out, 8, &sr), ctx);
    CHECK_OK(tsr_comm_irecv(comm, prev, 14, in, 16, &rr), ctx);
    tsr_status ts = TSR_OK;
    done = 0;
    for (int spin = 0; spin < 10000000 && !done && rr; spin++) ts = tsr_comm_p2p_test(rr, &done);
    CHECK(done && ts == TSR_ERR_MISMATCH, "test of a short message: done %d, %s", done, tsr_status_name(ts));
    CHECK(tsr_comm_p2p_wait(rr) == TSR_ERR_MISMATCH, "wait after test forgot the short message");
    CHECK_OK(tsr_comm_p2p_wait(sr), ctx);
    tsr_comm_p2p_cancel(NULL);
    CHECK_OK(tsr_comm_p2p_wait(NULL), ctx);
    /* an unmatched receive can be cancelled */
    CHECK_OK(tsr_comm_irecv(comm, prev, 13, in, 4, &rr), ctx);
    tsr_comm_p2p_cancel(rr);
    MPI_Barrier(MPI_COMM_WORLD);
}

/* TSR_TIMELINE: every rank's micro-batch events reach rank 0's file. */
static void test_timeline(tsr_context *ctx, tsr_comm *comm) {
    char path[256];
    tsr_mh_shared_path(path, sizeof path, "test-pipeline-tl", ".json");
    tsr_model *m = NULL;
    CHECK_OK(tsr_model_parse(ctx, MLP.spec, MLP.in, &m), ctx);
    size_t b[8];
    split(tsr_model_layer_count(m), 0, b);
    tsr_trainer_options o;
    options(&o, comm, 0);
    o.timeline = path;
    tsr_pipeline_options po = {b, (size_t)nranks, 4, TSR_PIPELINE_1F1B, 1};
    tsr_pipeline *p = NULL;
    CHECK_OK(tsr_pipeline_create(ctx, m, &o, &po, &p), ctx);
    float x[BATCH * 32];
    int32_t y[BATCH];
    make_batch(32, 10, 0, x, y);
    if (p) CHECK_OK(tsr_pipeline_step(p, x, y, BATCH, NULL), ctx);
    tsr_pipeline_free(p);
    if (rank == 0) {
        FILE *f = fopen(path, "rb");
        CHECK(f != NULL, "no timeline file %s", path);
        static char text[1 << 20];
        size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
        text[n] = 0;
        if (f) fclose(f);
        CHECK(strstr(text, "\"forward 3\"") && strstr(text, "\"backward 3\"") && strstr(text, "\"update\""),
              "timeline lacks micro-batch events");
        if (nranks > 1)
            CHECK(strstr(text, "\"recv act 0\"") && strstr(text, "\"recv grad 0\"") &&
                      strstr(text, "\"pid\":1") && strstr(text, "\"recompute"),
                  "timeline lacks message events, rank 1 or a re-materialisation");
        remove(path);
    }
    tsr_model_free(m);
}

/* Fault mode: train until rank `die_rank` kills itself at step `die_step`. */
static int fault_mode(tsr_context *ctx, tsr_comm *comm, int die_rank, int die_step) {
    tsr_model *m = NULL;
    if (tsr_model_parse(ctx, MLP.spec, MLP.in, &m) != TSR_OK) return 2;
    size_t b[8];
    split(tsr_model_layer_count(m), 0, b);
    tsr_trainer_options o;
    options(&o, comm, 0);
    tsr_pipeline_options po = {b, (size_t)nranks, 4, TSR_PIPELINE_1F1B, 1};
    tsr_pipeline *p = NULL;
    if (tsr_pipeline_create(ctx, m, &o, &po, &p) != TSR_OK) return 2;
    float x[BATCH * 32];
    int32_t y[BATCH];
    for (int s = 0; s < 1000; s++) {
        if (rank == die_rank && s == die_step) raise(SIGKILL);
        make_batch(32, 10, s, x, y);
        tsr_status st = tsr_pipeline_step(p, x, y, BATCH, NULL);
        if (st != TSR_OK) {
            fprintf(stderr, "rank %d: step %d: %s (%s)\n", rank, s, tsr_context_last_error(ctx),
                    tsr_status_name(st));
            tsr_pipeline_free(p); /* the communicator is broken: nothing collective */
            tsr_model_free(m);
            return st == TSR_ERR_PEER_LOST ? 3 : 4;
        }
    }
    return 0;
}

/* Measurement mode (not run by the tests): samples/s of MODEL (spec or preset, 28x28x1 input,
 * 10 classes, synthetic data) trained as a pipeline over the ranks, or with --micro 0 by the
 * single-process trainer (one rank). Prints one line on rank 0.
 *   test_pipeline --bench cnn --batch 64 --steps 20 --micro 4 --sched 1f1b --stages 4,6
 *                 [--recompute] [--device DEV] [--device1 DEV (rank 1 only)] */
static int bench_mode(tsr_context *ctx, tsr_comm *comm, int argc, char **argv) {
    const char *spec = "cnn", *stages = NULL, *dev = NULL, *dev1 = NULL, *sched = "1f1b";
    size_t batch = 64, micro = 4;
    int steps = 20, recompute = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(a, "--bench")) spec = v, i++;
        else if (!strcmp(a, "--batch")) batch = (size_t)atol(v), i++;
        else if (!strcmp(a, "--steps")) steps = atoi(v), i++;
        else if (!strcmp(a, "--micro")) micro = (size_t)atol(v), i++;
        else if (!strcmp(a, "--sched")) sched = v, i++;
        else if (!strcmp(a, "--stages")) stages = v, i++;
        else if (!strcmp(a, "--device")) dev = v, i++;
        else if (!strcmp(a, "--device1")) dev1 = v, i++;
        else if (!strcmp(a, "--recompute")) recompute = 1;
    }
    if (dev1 && rank == 1) dev = dev1;
    tsr_model_input in = {1, 28, 28, 10};
    tsr_model *m = NULL;
    if (tsr_model_parse(ctx, spec, in, &m) != TSR_OK) {
        fprintf(stderr, "model: %s\n", tsr_context_last_error(ctx));
        return 2;
    }
    size_t L = tsr_model_layer_count(m), b[17], S = 1;
    if (stages && tsr_pipeline_bounds_parse(ctx, stages, L, b, 17, &S) != TSR_OK) {
        fprintf(stderr, "stages: %s\n", tsr_context_last_error(ctx));
        return 2;
    }
    if (!stages) b[0] = 0, b[1] = L;
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = batch;
    o.device = dev;
    o.no_grad_check = 1;
    float *x = malloc(batch * 784 * sizeof *x);
    int32_t *y = malloc(batch * sizeof *y);
    for (size_t i = 0; i < batch; i++) y[i] = (int32_t)(i % 10);
    uint64_t seed = 5;
    for (size_t i = 0; i < batch * 784; i++) x[i] = (float)(tsr_mh_lcg(&seed) & 0xFFFF) / 65536.0f;
    tsr_trainer *t = NULL;
    tsr_pipeline *p = NULL;
    tsr_status st;
    tsr_pipeline_schedule sch = TSR_PIPELINE_1F1B;
    tsr_pipeline_schedule_parse(sched, &sch);
    if (!micro) {
        st = tsr_trainer_create(ctx, m, &o, &t);
    } else {
        o.comm = comm;
        tsr_pipeline_options po = {b, S, micro, sch, recompute};
        st = tsr_pipeline_create(ctx, m, &o, &po, &p);
    }
    if (st != TSR_OK) {
        fprintf(stderr, "rank %d: create: %s\n", rank, tsr_context_last_error(ctx));
        return 2;
    }
    double t0 = 0;
    for (int s = -2; s < steps; s++) {
        if (s == 0) {
            MPI_Barrier(MPI_COMM_WORLD);
            t0 = MPI_Wtime();
        }
        float l;
        st = t ? tsr_trainer_step(t, x, y, batch, &l) : tsr_pipeline_step(p, x, y, batch, &l);
        if (st != TSR_OK) {
            fprintf(stderr, "rank %d: step: %s\n", rank, tsr_context_last_error(ctx));
            return 2;
        }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double dt = MPI_Wtime() - t0;
    unsigned long long act = p ? (unsigned long long)tsr_pipeline_act_bytes(p) : 0, all[16] = {0};
    MPI_Gather(&act, 1, MPI_UNSIGNED_LONG_LONG, all, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        printf("%s batch %zu: %s: %.1f samples/s (%.2f ms/step)", spec, batch,
               t ? "single process" : sched, (double)batch * steps / dt, 1e3 * dt / steps);
        if (p) {
            printf(" stages %s M=%zu%s; activation MB per rank:", stages ? stages : "all", micro,
                   recompute ? " recompute" : "");
            for (int r = 0; r < nranks && r < 16; r++) printf(" %.1f", (double)all[r] / 1048576.0);
        }
        printf("\n");
    }
    tsr_trainer_free(t);
    tsr_pipeline_free(p);
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
    /* --bench's --device may name an OpenCL device */
    unsigned flags = TSR_CONTEXT_NO_HWLOC | (bench ? 0u : (unsigned)TSR_CONTEXT_NO_OPENCL);
    tsr_status ws = tsr_mh_world_init(&w, &argc, &argv, flags);
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
        /* hydra (-disable-auto-cleanup) tells the survivors of a failed rank with SIGUSR1, which
         * would end them before they notice anything themselves: that is what is tested here */
        signal(SIGUSR1, SIG_IGN);
        int rc = fault_mode(ctx, comm, die_rank, die_step);
        if (rc == 3) _exit(3); /* a peer is gone: MPI_Finalize would wait for it */
        tsr_mh_world_close(&w);
        return rc;
    }
    if (comm && nranks <= 4) {
        test_p2p(ctx, comm);
        test_errors(ctx, comm);
        test_match_trainer(ctx, comm);
        test_dropout(ctx, comm);
        test_params_and_checkpoints(ctx, comm);
        test_nonfinite(ctx, comm);
        test_nonfinite_injected(ctx, comm);
        test_timeline(ctx, comm);
        test_heterogeneous(comm);
    }
    double worst = 0.0;
    MPI_Allreduce(&worst_seen, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0)
        printf("test_pipeline n=%d: worst parameter error vs trainer: %.3g x tolerance\n", nranks, worst);
    return tsr_mh_world_end(&w, failures, skips, "test_pipeline");
}
