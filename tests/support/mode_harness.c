/* The shared set-up of the training-mode tests (see mode_harness.h). */
#include "tests/support/mode_harness.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "tests/support/test_util.h"
#if TSR_WITH_MPI
#include <mpi.h>
#endif

/* Whether this process runs under MPI (the unit tests do not initialise it). */
static int mpi_running(void) {
#if TSR_WITH_MPI
    int on = 0, off = 0;
    MPI_Initialized(&on);
    MPI_Finalized(&off);
    return on && !off;
#else
    return 0;
#endif
}

static void barrier(void) {
#if TSR_WITH_MPI
    if (mpi_running()) MPI_Barrier(MPI_COMM_WORLD);
#endif
}

#if TSR_WITH_MPI
tsr_status tsr_mh_world_init(tsr_mh_world *w, int *argc, char ***argv, unsigned context_flags) {
    memset(w, 0, sizeof *w);
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &w->nranks);
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = context_flags;
    if (tsr_context_create(&w->ctx, &co) != TSR_OK) {
        fprintf(stderr, "rank %d: context\n", w->rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    return tsr_comm_init_world(w->ctx, argc, argv, &w->comm);
}

void tsr_mh_world_close(tsr_mh_world *w) {
    tsr_comm_free(w->comm);
    tsr_context_free(w->ctx);
    w->comm = NULL;
    w->ctx = NULL;
    MPI_Finalize();
}

int tsr_mh_world_end(tsr_mh_world *w, int failures, int skips, const char *name) {
    int mine[2] = {failures, skips}, all[2] = {0, 0};
    tsr_comm_free(w->comm); /* MPI_COMM_WORLD stays usable until MPI_Finalize */
    w->comm = NULL;
    MPI_Allreduce(mine, all, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    tsr_mh_world_close(w);
    if (w->rank == 0) printf("%s n=%d: %s\n", name, w->nranks, all[0] ? "FAILED" : "ok");
    return all[0] ? 1 : all[1] ? 77 : 0;
}
#endif

void tsr_mh_shared_path(char *path, size_t size, const char *tag, const char *ext) {
    long id = (long)getpid();
#if TSR_WITH_MPI
    if (mpi_running()) MPI_Bcast(&id, 1, MPI_LONG, 0, MPI_COMM_WORLD);
#endif
    const char *tmp = getenv("TMPDIR");
    snprintf(path, size, "%s/tsr-%s-%ld%s", tmp && *tmp ? tmp : "/tmp", tag, id, ext);
}

tsr_dataset *tsr_mh_synthetic_data(tsr_context *ctx, size_t samples) {
    return tsr_test_clusters(ctx, samples, TSR_MH_FEATURES, TSR_MH_CLASSES);
}

tsr_model *tsr_mh_synthetic_model(tsr_context *ctx, const char *spec) {
    tsr_model *m = NULL;
    tsr_model_input in = {1, 4, TSR_MH_FEATURES / 4, TSR_MH_CLASSES};
    return tsr_model_parse(ctx, spec, in, &m) == TSR_OK ? m : NULL;
}

tsr_status tsr_mh_fmnist(tsr_context *ctx, const char *dir, size_t train_n, size_t test_n,
                         int normalize, tsr_dataset **train, tsr_dataset **test) {
    *train = *test = NULL;
    tsr_status s = tsr_dataset_load_mnist_dir(ctx, dir, 1, train);
    if (s == TSR_OK) s = tsr_dataset_load_mnist_dir(ctx, dir, 0, test);
    if (s == TSR_OK && train_n) tsr_dataset_truncate(*train, train_n);
    if (s == TSR_OK && test_n) tsr_dataset_truncate(*test, test_n);
    if (s == TSR_OK && normalize) s = tsr_dataset_normalize(ctx, *train, 0.286f, 0.353f);
    if (s == TSR_OK && normalize) s = tsr_dataset_normalize(ctx, *test, 0.286f, 0.353f);
    if (s != TSR_OK) {
        tsr_dataset_free(ctx, *train);
        tsr_dataset_free(ctx, *test);
        *train = *test = NULL;
    }
    return s;
}

uint64_t tsr_mh_lcg(uint64_t *state) {
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return *state >> 33;
}

void tsr_mh_argmax_batch(uint64_t seed, size_t n, size_t features, size_t classes, float *x,
                         int32_t *y) {
    for (size_t i = 0; i < n; i++) {
        size_t best = 0;
        for (size_t f = 0; f < features; f++) {
            x[i * features + f] = (float)(tsr_mh_lcg(&seed) & 0xFFFF) / 65536.0f;
            if (f < classes && x[i * features + f] > x[i * features + best]) best = f;
        }
        y[i] = (int32_t)best;
    }
}

void tsr_mh_options(tsr_trainer_options *o, tsr_comm *comm, size_t batch, uint64_t seed, int adam) {
    tsr_trainer_options_init(o);
    o->batch = batch;
    o->seed = seed;
    o->comm = comm;
    if (!adam) {
        o->optimizer.kind = TSR_OPTIM_SGD;
        o->optimizer.lr = 0.05f;
        o->optimizer.momentum = 0.9f;
    }
}

static tsr_status reference(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                            int steps, size_t n, size_t features, size_t classes, uint64_t batch_seed,
                            float *losses, float *params, int every_step, float *grads) {
    tsr_trainer_options single = *o;
    single.comm = NULL;
    tsr_trainer *t = NULL;
    tsr_status s = tsr_trainer_create(ctx, model, &single, &t);
    size_t np = tsr_model_param_count(model);
    float *x = malloc(n * features * sizeof *x);
    int32_t *y = malloc(n * sizeof *y);
    if (s == TSR_OK && (!x || !y)) s = TSR_ERR_NO_MEMORY;
    for (int k = 0; s == TSR_OK && k < steps; k++) {
        float loss = 0.0f;
        tsr_mh_argmax_batch(batch_seed + (uint64_t)k, n, features, classes, x, y);
        s = tsr_trainer_step(t, x, y, n, &loss);
        if (s == TSR_OK && losses) losses[k] = loss;
        if (s == TSR_OK && (every_step || k == steps - 1))
            s = tsr_trainer_get_params(t, params + (every_step ? (size_t)k * np : 0), np);
    }
    if (s == TSR_OK && grads) s = tsr_trainer_get_grads(t, grads, np);
    free(x);
    free(y);
    tsr_trainer_free(t);
    return s;
}

tsr_status tsr_mh_reference(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                            int steps, size_t n, size_t features, size_t classes, uint64_t batch_seed,
                            float *losses, float *params, int every_step) {
    return reference(ctx, model, o, steps, n, features, classes, batch_seed, losses, params, every_step,
                     NULL);
}

tsr_status tsr_mh_reference_grads(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                                  int steps, size_t n, size_t features, size_t classes,
                                  uint64_t batch_seed, float *losses, float *params, float *grads) {
    return reference(ctx, model, o, steps, n, features, classes, batch_seed, losses, params, 0, grads);
}

void tsr_mh_run_init(tsr_mh_run *r) {
    memset(r, 0, sizeof *r);
    tsr_trainer_options_init(&r->options);
    r->shuffle_seed = 7;
    r->failed_step = -1;
    r->rank_mismatch = -1;
    r->snapshot_before = -1;
}

tsr_status tsr_mh_run_train(tsr_context *ctx, const tsr_model *model, const tsr_dataset *data,
                            tsr_mh_run *r) {
    tsr_data_split split;
    size_t shares[64];
    tsr_status s = tsr_trainer_data_split(ctx, &r->options, r->global_batch, r->shuffle_seed, &split,
                                          shares);
    if (s != TSR_OK) return s;
    r->options.batch = split.step_batch;
    s = tsr_trainer_create(ctx, model, &r->options, &r->trainer);
    if (s != TSR_OK) return s;
    tsr_loader *l = NULL;
    s = tsr_loader_create(ctx, data, &split.loader, &l);
    if (s != TSR_OK) return s;
    r->param_count = tsr_model_param_count(model);
    size_t b = split.loader.batch;
    float *x = malloc(b * data->features * sizeof *x);
    int32_t *y = malloc(b * sizeof *y);
    r->losses = calloc(r->steps > 0 ? (size_t)r->steps : 1, sizeof *r->losses);
    r->params = malloc(r->param_count * sizeof *r->params);
    if (!x || !y || !r->losses || !r->params) s = TSR_ERR_NO_MEMORY;
    uint64_t epoch = 0;
    for (int k = 0; s == TSR_OK && k < r->steps; k++) {
        size_t n = tsr_loader_next(l, x, y);
        if (!n) {
            tsr_loader_start_epoch(l, ++epoch);
            n = tsr_loader_next(l, x, y);
        }
        if (k == r->snapshot_before) {
            r->snapshot = malloc(r->param_count * sizeof *r->snapshot);
            s = r->snapshot ? tsr_trainer_get_params(r->trainer, r->snapshot, r->param_count)
                            : TSR_ERR_NO_MEMORY;
            if (s != TSR_OK) break;
        }
        tsr_status st = tsr_trainer_step(r->trainer, x, y, n, NULL);
        if (st != TSR_OK) {
            r->failed = st;
            r->failed_step = k;
            break;
        }
        r->steps_done++;
        r->losses[k] = tsr_trainer_global_loss(r->trainer);
        if (r->check_ranks) {
            s = tsr_trainer_get_params(r->trainer, r->params, r->param_count);
            if (s == TSR_OK && !tsr_mh_same_on_all_ranks(r->params, r->param_count) &&
                r->rank_mismatch < 0)
                r->rank_mismatch = k;
        }
    }
    if (s == TSR_OK) s = tsr_trainer_get_params(r->trainer, r->params, r->param_count);
    r->skipped = tsr_trainer_skipped(r->trainer);
    free(x);
    free(y);
    tsr_loader_free(l);
    return s;
}

void tsr_mh_run_free(tsr_mh_run *r) {
    tsr_trainer_free(r->trainer);
    free(r->losses);
    free(r->params);
    free(r->snapshot);
    r->trainer = NULL;
    r->losses = r->params = r->snapshot = NULL;
}

tsr_status tsr_mh_nonfinite(tsr_context *ctx, const tsr_trainer_options *o, const char *spec,
                            int nan_step, int *as_expected, char *why, size_t size) {
    *as_expected = 0;
    snprintf(why, size, "not run");
    tsr_dataset *data = tsr_mh_synthetic_data(ctx, 96);
    tsr_model *model = data ? tsr_mh_synthetic_model(ctx, spec) : NULL;
    tsr_status s = model ? TSR_OK : data ? TSR_ERR_PARSE : TSR_ERR_NO_MEMORY;
    tsr_status skip_failed = TSR_OK, stop_failed = TSR_OK;
    uint64_t skipped = 0;
    int unchanged = 0, stop_step = -1;
    for (int policy = 0; policy < 2 && s == TSR_OK; policy++) {
        tsr_mh_run r;
        tsr_mh_run_init(&r);
        r.options = *o;
        r.options.fault_grad_nan_step = nan_step;
        r.options.nonfinite = policy ? TSR_NONFINITE_SKIP : TSR_NONFINITE_STOP;
        r.global_batch = 8;
        r.steps = nan_step + 1;
        r.snapshot_before = nan_step;
        s = tsr_mh_run_train(ctx, model, data, &r);
        if (s == TSR_OK && policy) {
            skip_failed = r.failed;
            skipped = r.skipped;
            unchanged = r.snapshot && tsr_mh_bitwise(r.snapshot, r.params, r.param_count);
        } else if (s == TSR_OK) {
            stop_failed = r.failed;
            stop_step = r.failed_step;
        }
        tsr_mh_run_free(&r);
    }
    if (s == TSR_OK) {
        snprintf(why, size, "skip: %s, %llu skipped, parameters %s; stop: %s at step %d (NaN at %d)",
                 tsr_status_str(skip_failed), (unsigned long long)skipped,
                 unchanged ? "unchanged" : "changed", tsr_status_str(stop_failed), stop_step, nan_step);
        *as_expected = skip_failed == TSR_OK && skipped == 1 && unchanged &&
                       stop_failed == TSR_ERR_NUMERIC && stop_step == nan_step;
    }
    tsr_model_free(model);
    tsr_dataset_free(ctx, data);
    return s;
}

double tsr_mh_max_abs_diff(const float *a, const float *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - (double)b[i]));
    return worst;
}

int tsr_mh_error_is(tsr_context *ctx, tsr_status got, tsr_status want, const char *words) {
    return got == want && strstr(tsr_context_last_error(ctx), words) != NULL;
}

int tsr_mh_bitwise(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof *a); }

int tsr_mh_same_on_all_ranks(const float *p, size_t n) {
    const unsigned char *c = (const unsigned char *)p;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n * sizeof *p; i++) h = (h ^ c[i]) * 1099511628211ull;
#if TSR_WITH_MPI
    if (mpi_running()) {
        uint64_t lo = h, hi = h;
        MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
        MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
        return lo == hi;
    }
#endif
    return 1;
}

tsr_status tsr_mh_checkpoint_round_trip(tsr_trainer *from, tsr_trainer *to, size_t n,
                                        const char *path, int *differs) {
    *differs = 1;
    tsr_status s = tsr_trainer_save(from, path);
    barrier(); /* rank 0 writes; the others read it after */
    if (s == TSR_OK) s = tsr_trainer_load(to, path);
    if (s != TSR_OK) return s;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    if (!a || !b) s = TSR_ERR_NO_MEMORY;
    if (s == TSR_OK) s = tsr_trainer_get_params(from, a, n);
    if (s == TSR_OK) s = tsr_trainer_get_params(to, b, n);
    if (s == TSR_OK)
        *differs = !tsr_mh_bitwise(a, b, n) || tsr_trainer_steps(from) != tsr_trainer_steps(to);
    free(a);
    free(b);
    return s;
}
