/* Data-parallel training under mpiexec -n 1..4:
 *  - parameters stay bitwise identical across ranks after every step (hash gathered to rank 0),
 *    uncompressed, fp16 on the wire and top-k, with small buckets (several per step);
 *  - one step with unequal local batches (shares from tsr_dp_shares, slices from the loader's
 *    tsr_loader_set_shares) equals a single-process step on the same global batch;
 *  - fp16 and top-k keep convergence: loss after N steps within a margin of the uncompressed run;
 *  - ZeRO-1: same parameters as plain data parallelism, a collective checkpoint that resumes
 *    exactly, a NaN in one rank's slice skips the step everywhere;
 *  - TSR_TIMELINE: the trace parses with cJSON, has every rank, and its events nest;
 *  - bad input gives errors that say what was wrong.
 * Prints each failure and exits non-zero. */
#include <cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mpi.h>
#include "tessera.h"
#include "tests/support/mode_harness.h"
#include "tests/support/mpi_check.h"

static int rank, nranks;

enum { FEATURES = TSR_MH_FEATURES, SAMPLES = 480 };

/* The trace train_run asks for (options.timeline), NULL: none. */
static const char *timeline_path;

/* Trains `steps` steps of batch `b` per rank (the library's split of b x ranks); checks
 * identical parameters after every step; returns the mean global loss of the last 10 steps
 * (same on every rank). */
static double train_run(tsr_context *ctx, tsr_comm *comm, const tsr_model *model,
                        const tsr_dataset *d, tsr_compress_kind compress, int steps, size_t b) {
    tsr_mh_run r;
    tsr_mh_run_init(&r);
    r.global_batch = b * (size_t)nranks;
    r.steps = steps;
    r.check_ranks = 1;
    tsr_trainer_options o = r.options;
    o.comm = comm;
    o.compress = compress;
    /* within a node shm moves float32 (nothing to compress): make fp16 really travel */
    if (compress == TSR_COMPRESS_FP16) o.algo = TSR_ALLREDUCE_RING;
    o.topk_ratio = 0.1;
    o.fusion_bytes = 1024; /* several buckets per step (3 here) */
    o.optimizer.lr = 3e-3f;
    o.timeline = timeline_path;
    r.options = o;
    CHECK_OK(tsr_mh_run_train(ctx, model, d, &r), ctx);
    CHECK(r.failed == TSR_OK, "compress %d step %d: %s (%s)", (int)compress, r.failed_step,
          tsr_status_str(r.failed), tsr_context_last_error(ctx));
    CHECK(r.rank_mismatch < 0, "compress %d step %d: the ranks' parameters differ", (int)compress,
          r.rank_mismatch);
    double tail = r.steps_done == steps ? 0.0 : NAN;
    for (int s = steps - 10; s < steps && r.losses; s++)
        if (s >= 0) tail += r.losses[s] / 10.0;
    if (nranks > 1 && r.trainer)
        CHECK(tsr_trainer_buckets(r.trainer) >= 3, "expected several gradient buckets, got %zu",
              tsr_trainer_buckets(r.trainer));
    tsr_mh_run_free(&r);
    return tail;
}

static void test_identical_and_convergence(tsr_context *ctx, tsr_comm *comm, const tsr_model *model,
                                           const tsr_dataset *d) {
    int steps = nranks <= 2 ? 80 : 40;
    size_t b = 24 / (size_t)nranks; /* same global batch at every n */
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    double none = train_run(ctx, comm, model, d, TSR_COMPRESS_NONE, steps, b);
    double f16 = train_run(ctx, comm, model, d, TSR_COMPRESS_FP16, steps, b);
    double topk = train_run(ctx, comm, model, d, TSR_COMPRESS_TOPK, steps, b);
    /* initial loss is ln(10) = 2.30; the task is separable */
    if (rank == 0) printf("n=%d: loss after %d steps: none %.4f fp16 %.4f topk(10%%) %.4f\n", nranks,
                          steps, none, f16, topk);
    CHECK(none < 1.2, "uncompressed training did not learn: loss %.4f", none);
    CHECK(fabs(f16 - none) < 0.05, "fp16 wire: loss %.4f vs %.4f uncompressed (margin 0.05)", f16, none);
    CHECK(topk < none + 0.3, "top-k: loss %.4f vs %.4f uncompressed (margin 0.3)", topk, none);
}

/* One step at unequal local batches == one single-process step on the global batch. */
static void test_weighted_equivalence(tsr_context *ctx, tsr_comm *comm, const tsr_model *model,
                                      const tsr_dataset *d) {
    size_t global = 10 * (size_t)nranks + 3, shares[4];
    CHECK_OK(tsr_dp_shares(comm, global, 1.0 + rank, shares), ctx); /* rank r is r+1 times as fast */
    size_t sum = 0;
    for (int r = 0; r < nranks; r++) sum += shares[r];
    CHECK(sum == global, "shares sum to %zu, not %zu", sum, global);
    if (nranks > 1) CHECK(shares[nranks - 1] > shares[0], "faster rank got %zu <= %zu", shares[nranks - 1], shares[0]);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.optimizer.kind = TSR_OPTIM_SGD;
    o.optimizer.lr = 0.5f;
    o.optimizer.momentum = 0.0f;
    o.batch = global;
    size_t np = tsr_model_param_count(model);
    float *ref = malloc(np * sizeof *ref), *got = malloc(np * sizeof *got);
    float *x = malloc(global * FEATURES * sizeof *x);
    int32_t *y = malloc(global * sizeof *y);
    /* reference: one process, the whole global batch (the loader's first batch) */
    tsr_trainer *single = NULL, *dp = NULL;
    tsr_loader_options lo = {global, 3, 1, 0, 1, 1};
    tsr_loader *l = NULL;
    CHECK_OK(tsr_loader_create(ctx, d, &lo, &l), ctx);
    size_t n = tsr_loader_next(l, x, y);
    CHECK(n == global, "reference batch of %zu", n);
    CHECK_OK(tsr_trainer_create(ctx, model, &o, &single), ctx);
    float loss_ref = 0.0f;
    CHECK_OK(tsr_trainer_step(single, x, y, n, &loss_ref), ctx);
    CHECK_OK(tsr_trainer_get_params(single, ref, np), ctx);
    tsr_loader_free(l);
    /* data parallel: each rank its share of the same global batch */
    lo.rank = rank;
    lo.nranks = nranks;
    lo.batch = 1;
    CHECK_OK(tsr_loader_create(ctx, d, &lo, &l), ctx);
    CHECK_OK(tsr_loader_set_shares(l, shares), ctx);
    n = tsr_loader_next(l, x, y);
    CHECK(n == shares[rank], "rank's batch %zu, share %zu", n, shares[rank]);
    o.comm = comm;
    CHECK_OK(tsr_trainer_create(ctx, model, &o, &dp), ctx);
    CHECK_OK(tsr_trainer_step(dp, x, y, n, NULL), ctx);
    CHECK_OK(tsr_trainer_get_params(dp, got, np), ctx);
    float *init = malloc(np * sizeof *init);
    tsr_trainer *fresh = NULL;
    o.comm = NULL;
    CHECK_OK(tsr_trainer_create(ctx, model, &o, &fresh), ctx);
    CHECK_OK(tsr_trainer_get_params(fresh, init, np), ctx);
    double worst = tsr_mh_max_abs_diff(got, ref, np), moved = tsr_mh_max_abs_diff(ref, init, np);
    CHECK(moved > 1e-3, "the reference step hardly moved the parameters (%g)", moved);
    CHECK(worst <= 2e-6, "data-parallel step differs from the single-process step by %g (tol 2e-6)",
          worst);
    CHECK(fabsf(tsr_trainer_global_loss(dp) - loss_ref) <= 1e-5f * fabsf(loss_ref) + 1e-6f,
          "global loss %g vs single-process %g", (double)tsr_trainer_global_loss(dp), (double)loss_ref);
    /* a rank without a sample still takes part (weight 0) */
    size_t zero_n = rank == 0 ? 0 : n;
    if (nranks > 1) {
        CHECK_OK(tsr_trainer_step(dp, x, y, zero_n, NULL), ctx);
    } else {
        CHECK(tsr_trainer_step(dp, x, y, 0, NULL) == TSR_ERR_INVALID_ARG &&
                  strstr(tsr_context_last_error(ctx), "no rank has a sample"),
              "a step without samples: %s", tsr_context_last_error(ctx));
    }
    tsr_trainer_free(fresh);
    tsr_trainer_free(single);
    tsr_trainer_free(dp);
    tsr_loader_free(l);
    free(init);
    free(ref);
    free(got);
    free(x);
    free(y);
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void test_timeline(tsr_context *ctx, tsr_comm *comm, const tsr_model *model, const tsr_dataset *d) {
    char path[256];
    tsr_mh_shared_path(path, sizeof path, "timeline", ".json");
    timeline_path = path;
    int steps = 3;
    train_run(ctx, comm, model, d, TSR_COMPRESS_NONE, steps, 4);
    timeline_path = NULL;
    if (rank != 0) return;
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "timeline %s not written", path);
    if (!f) return;
    static char text[1 << 20];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    remove(path);
    text[len] = 0;
    cJSON *arr = cJSON_Parse(text);
    CHECK(cJSON_IsArray(arr), "timeline is not a JSON array");
    if (!cJSON_IsArray(arr)) return;
    int steps_seen[4] = {0}, fwd[4] = {0}, ar[4] = {0}, overlapped = 0, meta = 0;
    const cJSON *e, *s;
    cJSON_ArrayForEach(e, arr) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *ph = cJSON_GetObjectItemCaseSensitive(e, "ph");
        if (cJSON_IsString(ph) && !strcmp(ph->valuestring, "M")) { /* track names */
            meta++;
            continue;
        }
        double ts = num(e, "ts"), dur = num(e, "dur"), pid = num(e, "pid"), tid = num(e, "tid");
        CHECK(cJSON_IsString(name) && cJSON_IsString(ph) && !strcmp(ph->valuestring, "X") &&
                  ts >= 0 && dur >= 0 && pid >= 0 && pid < nranks && (tid == 0 || tid == 1),
              "malformed event %s", cJSON_PrintUnformatted(e));
        if (!cJSON_IsString(name) || !(pid >= 0 && pid < nranks)) continue;
        int p = (int)pid;
        const char *nm = name->valuestring;
        if (!strcmp(nm, "step")) steps_seen[p]++;
        if (!strcmp(nm, "forward")) fwd[p]++;
        if (!strncmp(nm, "allreduce", 9)) ar[p]++;
        if (strcmp(nm, "step") && tid == 0) {
            /* forward, backward and waits lie inside a step of the same rank */
            int inside = 0;
            cJSON_ArrayForEach(s, arr) {
                const cJSON *sn = cJSON_GetObjectItemCaseSensitive(s, "name");
                if (num(s, "pid") == pid && cJSON_IsString(sn) && !strcmp(sn->valuestring, "step") &&
                    num(s, "ts") <= ts + 1e-3 && ts + dur <= num(s, "ts") + num(s, "dur") + 1e-3)
                    inside = 1;
            }
            CHECK(inside, "event %s of rank %d is not inside a step", nm, p);
        }
        if (!strncmp(nm, "allreduce", 9)) {
            /* a bucket starts during its step's backward */
            cJSON_ArrayForEach(s, arr) {
                const cJSON *sn = cJSON_GetObjectItemCaseSensitive(s, "name");
                if (num(s, "pid") == pid && cJSON_IsString(sn) && !strcmp(sn->valuestring, "backward") &&
                    num(s, "ts") <= ts && ts < num(s, "ts") + num(s, "dur"))
                    overlapped++;
            }
        }
    }
    for (int r = 0; r < nranks; r++) {
        CHECK(steps_seen[r] == steps && fwd[r] == steps, "rank %d: %d steps, %d forwards in the trace",
              r, steps_seen[r], fwd[r]);
        CHECK(ar[r] >= 3 * steps, "rank %d: %d bucket allreduces for %d steps", r, ar[r], steps);
    }
    CHECK(overlapped >= nranks * steps, "only %d buckets started during backward", overlapped);
    CHECK(meta == 3 * nranks, "%d track-name records for %d ranks", meta, nranks);
    cJSON_Delete(arr);
}

/* tsr-train --mode data in small: the mlp preset on 3000 Fashion-MNIST images, one epoch at a
 * global batch of 64 split across the ranks, reaches the accuracy of one process trained on the
 * same global batches (rank 0 trains that reference too): within 0.01 on 1000 test images. */
static void test_fmnist_accuracy(tsr_context *ctx, tsr_comm *comm) {
    tsr_dataset *train = NULL, *test = NULL;
    if (tsr_mh_fmnist(ctx, NULL, 3000, 1000, 1, &train, &test) != TSR_OK) {
        CHECK(0, "Fashion-MNIST: %s", tsr_context_last_error(ctx));
        return;
    }
    tsr_model *m = NULL;
    tsr_model_input in = {1, 28, 28, 10};
    CHECK_OK(tsr_model_parse(ctx, "mlp", in, &m), ctx);
    size_t global = 64, shares[4];
    CHECK_OK(tsr_dp_shares(comm, global, 1.0, shares), ctx);
    float *x = malloc(global * train->features * sizeof *x);
    int32_t *y = malloc(global * sizeof *y);
    double acc[2] = {0, 0};
    for (int dp = 0; dp < 2 && m; dp++) {
        if (!dp && rank != 0) continue; /* the reference: rank 0 alone */
        tsr_trainer_options o;
        tsr_trainer_options_init(&o);
        o.batch = global;
        o.comm = dp ? comm : NULL;
        tsr_loader_options lo = {dp ? shares[rank] : global, 5, 1, dp ? rank : 0, dp ? nranks : 1, 1};
        tsr_trainer *t = NULL;
        tsr_loader *l = NULL;
        CHECK_OK(tsr_trainer_create(ctx, m, &o, &t), ctx);
        CHECK_OK(tsr_loader_create(ctx, train, &lo, &l), ctx);
        if (dp && l) CHECK_OK(tsr_loader_set_shares(l, shares), ctx);
        size_t n;
        while (t && l && (n = tsr_loader_next(l, x, y)) > 0) CHECK_OK(tsr_trainer_step(t, x, y, n, NULL), ctx);
        double loss = 0.0;
        if (t) CHECK_OK(tsr_trainer_evaluate(t, test, &acc[dp], &loss), ctx);
        if (t && dp) {
            /* each rank evaluated 1/N of the test set: the same figures as one process
             * evaluating all of it with these parameters (loss: other chunks, other rounding) */
            size_t np = tsr_model_param_count(m);
            float *p = malloc(np * sizeof *p);
            tsr_trainer_options lo1;
            tsr_trainer_options_init(&lo1);
            lo1.batch = global;
            tsr_trainer *one = NULL;
            double a1 = -1.0, l1 = -1.0;
            CHECK_OK(tsr_trainer_create(ctx, m, &lo1, &one), ctx);
            CHECK_OK(tsr_trainer_get_params(t, p, np), ctx);
            if (one) CHECK_OK(tsr_trainer_set_params(one, p, np), ctx);
            if (one) CHECK_OK(tsr_trainer_evaluate(one, test, &a1, &l1), ctx);
            CHECK(a1 == acc[dp], "sharded evaluation: accuracy %.6f, one process %.6f", acc[dp], a1);
            CHECK(fabs(loss - l1) <= 1e-5 * fabs(l1), "sharded evaluation: loss %.9g, one process %.9g",
                  loss, l1);
            tsr_trainer_free(one);
            free(p);
        }
        CHECK(tsr_trainer_steps(t) == 3000 / global, "%llu steps", (unsigned long long)tsr_trainer_steps(t));
        tsr_loader_free(l);
        tsr_trainer_free(t);
    }
    if (rank == 0) {
        printf("n=%d: Fashion-MNIST mlp, 1 epoch of 3000: accuracy %.4f data parallel, %.4f one process\n",
               nranks, acc[1], acc[0]);
        CHECK(acc[0] > 0.7, "reference accuracy %.4f", acc[0]);
        CHECK(fabs(acc[1] - acc[0]) <= 0.01, "data parallel %.4f vs one process %.4f (margin 0.01)",
              acc[1], acc[0]);
    }
    free(x);
    free(y);
    tsr_model_free(m);
    tsr_dataset_free(ctx, train);
    tsr_dataset_free(ctx, test);
}

static void test_errors(tsr_context *ctx, tsr_comm *comm, const tsr_model *model) {
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    tsr_trainer *t = NULL;
    o.compress = TSR_COMPRESS_TOPK;
    CHECK(tsr_trainer_create(ctx, model, &o, &t) == TSR_ERR_INVALID_ARG &&
              strstr(tsr_context_last_error(ctx), "communicator"),
          "compression without a communicator: %s", tsr_context_last_error(ctx));
    o.compress = TSR_COMPRESS_NONE;
    o.mode = (tsr_train_mode)99;
    o.comm = comm;
    CHECK(tsr_trainer_create(ctx, model, &o, &t) == TSR_ERR_INVALID_ARG &&
              strstr(tsr_context_last_error(ctx), "mode"),
          "training mode 99: %s", tsr_context_last_error(ctx));
    size_t shares[4];
    CHECK(tsr_dp_shares(comm, (size_t)nranks - 1, 1.0, shares) == TSR_ERR_INVALID_ARG &&
              strstr(tsr_context_last_error(ctx), "global batch"),
          "too small global batch: %s", tsr_context_last_error(ctx));
    /* a loader share of 0 samples is refused */
    tsr_dataset *d = NULL;
    tsr_loader *l = NULL;
    CHECK_OK(tsr_dataset_create(ctx, 16, 1, 2, 2, 2, &d), ctx);
    tsr_loader_options lo = {1, 1, 0, rank, nranks, 1};
    CHECK_OK(tsr_loader_create(ctx, d, &lo, &l), ctx);
    for (int r = 0; r < nranks; r++) shares[r] = r == rank ? 0 : 2;
    CHECK(tsr_loader_set_shares(l, shares) == TSR_ERR_INVALID_ARG &&
              strstr(tsr_context_last_error(ctx), "share of 0"),
          "zero share: %s", tsr_context_last_error(ctx));
    tsr_loader_free(l);
    tsr_dataset_free(ctx, d);
    /* allgatherv without a send buffer for a non-empty contribution */
    size_t bytes[4] = {8, 8, 8, 8};
    char recv[32];
    CHECK(tsr_comm_allgatherv(comm, NULL, recv, bytes) == TSR_ERR_INVALID_ARG &&
              strstr(tsr_context_last_error(ctx), "send"),
          "allgatherv NULL send: %s", tsr_context_last_error(ctx));
    tsr_train_mode m;
    tsr_compress_kind k;
    CHECK(tsr_train_mode_parse("data", &m) == TSR_OK && m == TSR_MODE_DATA, "parse data");
    CHECK(tsr_train_mode_parse("model", &m) == TSR_ERR_PARSE, "parse 'model'");
    CHECK(tsr_compress_kind_parse("topk", &k) == TSR_OK && k == TSR_COMPRESS_TOPK, "parse topk");
    CHECK(tsr_compress_kind_parse("zip", &k) == TSR_ERR_PARSE, "parse 'zip'");
}

/* ZeRO-1 (shard_optimizer): the same parameters as plain data parallelism (tolerance: the
 * reduce-scatter may sum in another order than the allreduce), bitwise identical on every
 * rank; its collective checkpoint equals the plain trainer's and resumes exactly; a non-finite
 * gradient in one rank's slice makes every rank skip the step. */
static void test_zero(tsr_context *ctx, tsr_comm *comm, const tsr_model *model, const tsr_dataset *d) {
    size_t b = 8, np = tsr_model_param_count(model);
    tsr_trainer *t[3] = {NULL, NULL, NULL}; /* plain, ZeRO, ZeRO resumed */
    for (int k = 0; k < 3; k++) {
        tsr_trainer_options o;
        tsr_trainer_options_init(&o);
        o.batch = b;
        o.comm = comm;
        o.shard_optimizer = k ? 1 : -1;
        o.nonfinite = TSR_NONFINITE_SKIP;
        o.optimizer.lr = 3e-3f;
        o.fault_grad_nan_step = 23; /* the last step below */
        CHECK_OK(tsr_trainer_create(ctx, model, &o, &t[k]), ctx);
        if (!t[k]) goto out;
    }
    tsr_loader_options lo = {b, 3, 1, rank, nranks, 1};
    tsr_loader *l = NULL;
    CHECK_OK(tsr_loader_create(ctx, d, &lo, &l), ctx);
    float *x = malloc(b * FEATURES * sizeof *x), *p0 = malloc(np * 4), *p1 = malloc(np * 4);
    int32_t *y = malloc(b * sizeof *y);
    uint64_t *hashes = malloc((size_t)nranks * sizeof *hashes);
    char path[2][256];
    tsr_mh_shared_path(path[0], sizeof path[0], "test-zero-plain", ".ck");
    tsr_mh_shared_path(path[1], sizeof path[1], "test-zero-sharded", ".ck");
    double worst = 0.0;
    for (int s = 0; s < 24 && l; s++) {
        size_t n = tsr_loader_next(l, x, y);
        if (!n) {
            tsr_loader_start_epoch(l, (uint64_t)s);
            n = tsr_loader_next(l, x, y);
        }
        if (s == 23) {
            /* every rank poisons gradient np / 2 (fault_grad_nan_step), which only its owner's
             * slice holds (n > 1) */
            CHECK_OK(tsr_trainer_get_params(t[1], p0, np), ctx);
            for (int k = 0; k < 3; k++) CHECK_OK(tsr_trainer_step(t[k], x, y, n, NULL), ctx);
            for (int k = 0; k < 3; k++)
                CHECK(tsr_trainer_skipped(t[k]) == 1, "trainer %d skipped %llu steps after a NaN", k,
                      (unsigned long long)tsr_trainer_skipped(t[k]));
            CHECK_OK(tsr_trainer_get_params(t[1], p1, np), ctx);
            CHECK(!memcmp(p0, p1, np * 4), "ZeRO: a skipped step changed the parameters");
            break;
        }
        CHECK_OK(tsr_trainer_step(t[0], x, y, n, NULL), ctx);
        CHECK_OK(tsr_trainer_step(t[1], x, y, n, NULL), ctx);
        if (s == 16) { /* checkpoints of both; the third (ZeRO) trainer resumes from this one */
            CHECK_OK(tsr_trainer_save(t[0], path[0]), ctx);
            int differs = 1;
            CHECK_OK(tsr_mh_checkpoint_round_trip(t[1], t[2], np, path[1], &differs), ctx);
            CHECK(!differs, "ZeRO: the resumed trainer differs right after the load");
        }
        if (s > 16 && s < 23) CHECK_OK(tsr_trainer_step(t[2], x, y, n, NULL), ctx);
        CHECK_OK(tsr_trainer_get_params(t[0], p0, np), ctx);
        CHECK_OK(tsr_trainer_get_params(t[1], p1, np), ctx);
        for (size_t i = 0; i < np; i++) {
            double e = fabs((double)p0[i] - p1[i]) / (1.0 + fabs((double)p0[i]));
            if (e > worst) worst = e;
        }
        uint64_t h = hash_bytes(p1, np * 4);
        MPI_Gather(&h, 1, MPI_UINT64_T, hashes, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
        for (int r = 1; rank == 0 && r < nranks; r++)
            CHECK(hashes[r] == hashes[0], "ZeRO step %d: rank %d parameters differ from rank 0's", s, r);
        if (s > 16) {
            CHECK_OK(tsr_trainer_get_params(t[2], p0, np), ctx);
            CHECK(!memcmp(p0, p1, np * 4), "ZeRO step %d: the resumed trainer differs", s);
        }
    }
    CHECK(worst <= 1e-5, "ZeRO vs plain: parameters differ by %.3g (relative; bound 1e-5)", worst);
    if (rank == 0) {
        /* the gathered checkpoint holds the whole optimizer state, as the plain one does */
        tsr_checkpoint *c[2] = {NULL, NULL};
        for (int k = 0; k < 2; k++) CHECK_OK(tsr_checkpoint_load(ctx, path[k], &c[k]), ctx);
        const char *names[] = {"params", "adam.m", "adam.v"};
        for (int i = 0; c[0] && c[1] && i < 3; i++) {
            const tsr_checkpoint_tensor *a = tsr_checkpoint_find(c[0], names[i]);
            const tsr_checkpoint_tensor *z = tsr_checkpoint_find(c[1], names[i]);
            CHECK(a && z && a->count == np && z->count == np, "checkpoint tensor %s", names[i]);
            double e = 0.0;
            for (size_t j = 0; a && z && j < np; j++)
                e = fmax(e, fabs((double)a->data[j] - z->data[j]) / (1e-6 + fabs((double)a->data[j])));
            CHECK(e <= 1e-4, "checkpoint %s: ZeRO vs plain differ by %.3g (relative)", names[i], e);
        }
        for (int k = 0; k < 2; k++) tsr_checkpoint_free(ctx, c[k]);
        for (int k = 0; k < 2; k++) remove(path[k]);
    }
    free(x);
    free(y);
    free(p0);
    free(p1);
    free(hashes);
    tsr_loader_free(l);
out:
    for (int k = 0; k < 3; k++) tsr_trainer_free(t[k]);
}

/* A NaN gradient at step 4 on every rank: SKIP leaves the parameters bitwise as they were and
 * counts the step, STOP fails that very step with TSR_ERR_NUMERIC. */
static void test_nonfinite(tsr_context *ctx, tsr_comm *comm) {
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.comm = comm;
    int ok = 0;
    char why[256];
    CHECK_OK(tsr_mh_nonfinite(ctx, &o, "dense:64,relu,dense:32,relu,dense:10", 4, &ok, why, sizeof why), ctx);
    CHECK(ok, "data mode: %s", why);
}

/* tsr_trainer_data_split: how each mode reads a global batch of 24 (shard, batch, drop_last),
 * the trainer batch and the samples a step covers, against the rules written out here. */
static void test_data_split(tsr_context *ctx, tsr_comm *comm) {
    size_t G = 24, shares[4];
    tsr_data_split sp;
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.comm = comm;
    /* data: an equal slice per rank, even shares summing to G */
    CHECK_OK(tsr_trainer_data_split(ctx, &o, G, 9, &sp, shares), ctx);
    size_t sum = 0;
    for (int r = 0; r < nranks; r++) sum += shares[r];
    CHECK(sp.loader.batch == G / (size_t)nranks && sp.loader.rank == rank &&
              sp.loader.nranks == nranks && sp.loader.drop_last && sp.loader.seed == 9 &&
              sp.step_batch == G && sp.step_samples == G && sum == G,
          "data split: batch %zu rank %d of %d, shares sum %zu", sp.loader.batch, sp.loader.rank,
          sp.loader.nranks, sum);
    /* one process (no communicator): the whole batch, the last one may be partial */
    o.comm = NULL;
    CHECK_OK(tsr_trainer_data_split(ctx, &o, G, 9, &sp, shares), ctx);
    CHECK(sp.loader.batch == G && sp.loader.nranks == 1 && !sp.loader.drop_last &&
              sp.step_samples == 0 && shares[0] == G, "single split");
    o.comm = comm;
    /* pipeline: every stage the same global batches */
    o.mode = TSR_MODE_PIPELINE;
    CHECK_OK(tsr_trainer_data_split(ctx, &o, G, 9, &sp, shares), ctx);
    CHECK(sp.loader.batch == G && sp.loader.rank == 0 && sp.loader.nranks == 1 &&
              !sp.loader.drop_last && sp.step_samples == 0 && shares[nranks - 1] == G,
          "pipeline split: batch %zu", sp.loader.batch);
    /* gossip: an equal slice per rank; a step covers every rank's */
    o.mode = TSR_MODE_GOSSIP;
    CHECK_OK(tsr_trainer_data_split(ctx, &o, G, 9, &sp, shares), ctx);
    CHECK(sp.loader.batch == G / (size_t)nranks && sp.loader.rank == rank && sp.loader.drop_last &&
              sp.step_samples == G / (size_t)nranks * (size_t)nranks, "gossip split");
    /* hybrid: replica r = rank / stages reads shard r of R, steps take G / R */
    o.mode = TSR_MODE_HYBRID;
    o.replicas = nranks % 2 ? 1 : 2;
    size_t R = o.replicas, S = (size_t)nranks / R;
    CHECK_OK(tsr_trainer_data_split(ctx, &o, G, 9, &sp, shares), ctx);
    CHECK(sp.loader.batch == G / R && sp.loader.rank == (int)((size_t)rank / S) &&
              sp.loader.nranks == (int)R && sp.step_batch == G / R && sp.step_samples == G,
          "hybrid split: shard %d of %d", sp.loader.rank, sp.loader.nranks);
    o.replicas = 3; /* ranks are not 3 x stages */
    if (nranks % 3) CHECK(tsr_trainer_data_split(ctx, &o, G, 9, &sp, shares) == TSR_ERR_INVALID_ARG,
                          "hybrid: 3 replicas on %d ranks accepted", nranks);
    o.replicas = 0;
    /* async: the workers split it; a server reads as worker 0 and computes nothing */
    o.mode = TSR_MODE_ASYNC;
    tsr_status s = tsr_trainer_data_split(ctx, &o, G, 9, &sp, shares);
    if (nranks == 1) {
        CHECK(s == TSR_ERR_INVALID_ARG && strstr(tsr_context_last_error(ctx), "need a worker"),
              "async on one rank: %s", tsr_context_last_error(ctx));
    } else {
        int w = nranks - 1;
        CHECK(s == TSR_OK && sp.loader.batch == G / (size_t)w && sp.loader.nranks == w &&
                  sp.loader.rank == (rank ? rank - 1 : 0) && shares[0] == 0 &&
                  shares[nranks - 1] == G / (size_t)w && sp.step_samples == G,
              "async split: batch %zu rank %d of %d", sp.loader.batch, sp.loader.rank, sp.loader.nranks);
    }
    o.mode = TSR_MODE_DATA;
    CHECK(tsr_trainer_data_split(ctx, &o, 0, 9, &sp, shares) == TSR_ERR_INVALID_ARG, "global batch 0");
    if (nranks > 1)
        CHECK(tsr_trainer_data_split(ctx, &o, 1, 9, &sp, shares) == TSR_ERR_INVALID_ARG &&
                  strstr(tsr_context_last_error(ctx), "smaller than"),
              "a global batch of 1 on %d ranks", nranks);
}

int main(int argc, char **argv) {
    tsr_mh_world w;
    tsr_status ws = tsr_mh_world_init(&w, &argc, &argv, TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC);
    rank = mpi_check_rank = w.rank;
    nranks = w.nranks;
    tsr_context *ctx = w.ctx;
    tsr_comm *comm = w.comm;
    CHECK_OK(ws, ctx);
    tsr_dataset *d = tsr_mh_synthetic_data(ctx, SAMPLES);
    tsr_model *model = tsr_mh_synthetic_model(ctx, "dense:64,relu,dense:32,relu,dense:10");
    CHECK(model, "model: %s", tsr_context_last_error(ctx));
    if (comm && d && model && nranks <= 4) {
        test_errors(ctx, comm, model);
        test_data_split(ctx, comm);
        test_weighted_equivalence(ctx, comm, model, d);
        test_identical_and_convergence(ctx, comm, model, d);
        test_zero(ctx, comm, model, d);
        test_nonfinite(ctx, comm);
        test_timeline(ctx, comm, model, d);
        test_fmnist_accuracy(ctx, comm);
    }
    tsr_model_free(model);
    tsr_dataset_free(ctx, d);
    return tsr_mh_world_end(&w, failures, skips, "test_dp");
}
