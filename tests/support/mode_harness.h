/* The set-up every training-mode test shares (tests/mpi/test_{dp,pipeline,hybrid,gossip,async}.c,
 * tests/unit/test_train*.c and the unit tests of the modes): the MPI world and a quiet context,
 * the synthetic task and its model, a Fashion-MNIST slice, K steps of a trainer of any mode on
 * the global batch split the library's way (tsr_trainer_data_split), parameter comparisons
 * (within a tolerance, bitwise, across ranks), a checkpoint path every rank agrees on, a
 * checkpoint round trip, and the non-finite step (fault_grad_nan_step) under skip or stop.
 * It asserts nothing itself: it returns statuses and figures, and the test checks them with its
 * own framework (cmocka in tests/unit, mpi_check.h's CHECK in tests/mpi). */
#ifndef TSR_TESTS_MODE_HARNESS_H
#define TSR_TESTS_MODE_HARNESS_H
#include <stddef.h>
#include <stdint.h>
#include "tessera.h"

/* --- the MPI world of a tests/mpi program --- */
typedef struct tsr_mh_world {
    int rank, nranks;
    tsr_context *ctx;
    tsr_comm *comm; /* NULL when tsr_comm_init_world failed (its status is returned) */
} tsr_mh_world;

/* MPI_Init, rank and size, a context with `context_flags` (TSR_CONTEXT_NO_OPENCL |
 * TSR_CONTEXT_NO_HWLOC for host-only tests; MPI_Abort when even that fails), then the world
 * communicator. Returns tsr_comm_init_world's status. */
tsr_status tsr_mh_world_init(tsr_mh_world *w, int *argc, char ***argv, unsigned context_flags);
/* Frees the communicator and context, agrees on the exit status over every rank (1 if any rank
 * counted a failure, else 77 if any skipped a part, else 0), prints "<name> n=<ranks>: ok|FAILED"
 * on rank 0 and finalises MPI. Returns the exit status. */
int tsr_mh_world_end(tsr_mh_world *w, int failures, int skips, const char *name);
/* Frees the communicator and context and finalises MPI, agreeing on nothing (fault and
 * measurement modes, which return their own status). */
void tsr_mh_world_close(tsr_mh_world *w);
/* A path "<TMPDIR or /tmp>/tsr-<tag>-<rank 0's pid><ext>" that is the same on every rank of
 * MPI_COMM_WORLD (collective under MPI); size >= 96. */
void tsr_mh_shared_path(char *path, size_t size, const char *tag, const char *ext);

/* --- data and models --- */
enum { TSR_MH_FEATURES = 32, TSR_MH_CLASSES = 10 };
/* The synthetic task (tsr_test_clusters: `samples` samples of 1 x 4 x 8, 10 classes, the same
 * on every rank). NULL on error. */
tsr_dataset *tsr_mh_synthetic_data(tsr_context *ctx, size_t samples);
/* A model of `spec` over the synthetic task's input; NULL on error (the context says why). */
tsr_model *tsr_mh_synthetic_model(tsr_context *ctx, const char *spec);
/* Fashion-MNIST from `dir` (NULL: the default place): the first `train_n` training and `test_n`
 * test images (0: all), normalised with tsr-train's mean 0.286 / std 0.353 when `normalize`.
 * On error both are NULL and the context says why. */
tsr_status tsr_mh_fmnist(tsr_context *ctx, const char *dir, size_t train_n, size_t test_n,
                         int normalize, tsr_dataset **train, tsr_dataset **test);

/* The argmax task of the pipeline and hybrid tests: n samples of `features` uniform [0, 1)
 * values from an LCG seeded with `seed`, the label the index of the largest of the first
 * `classes` features. */
uint64_t tsr_mh_lcg(uint64_t *state); /* the next 31-bit value */
void tsr_mh_argmax_batch(uint64_t seed, size_t n, size_t features, size_t classes, float *x,
                         int32_t *y);
/* Trainer options of the pipeline and hybrid comparisons: batch, seed, comm; Adam at the
 * defaults, or (adam 0) SGD lr 0.05 momentum 0.9. */
void tsr_mh_options(tsr_trainer_options *o, tsr_comm *comm, size_t batch, uint64_t seed, int adam);
/* The single-process reference: a trainer of options *o without communicator takes `steps`
 * steps of tsr_mh_argmax_batch(batch_seed + k, n, features, classes); losses[k] (NULL: not kept)
 * gets step k's loss; params the parameters after the last step, or with every_step those after
 * each step k at params + k * param_count (steps x param_count floats). Returns the first
 * failing call's status. */
tsr_status tsr_mh_reference(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                            int steps, size_t n, size_t features, size_t classes, uint64_t batch_seed,
                            float *losses, float *params, int every_step);
/* The same (params after the last step) and grads: the last step's gradients
 * (tsr_trainer_get_grads, param_count floats). */
tsr_status tsr_mh_reference_grads(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                                  int steps, size_t n, size_t features, size_t classes,
                                  uint64_t batch_seed, float *losses, float *params, float *grads);

/* --- running a mode --- */
typedef struct tsr_mh_run {
    /* in */
    tsr_trainer_options options; /* mode, comm and mode options; batch is set from the split */
    size_t global_batch;         /* split over the ranks by tsr_trainer_data_split */
    uint64_t shuffle_seed;
    int steps;                   /* K: a new epoch starts whenever the loader runs dry */
    /* out */
    tsr_trainer *trainer;        /* kept open for further checks; tsr_mh_run_free frees it */
    float *losses;               /* [steps]: tsr_trainer_global_loss after each step */
    float *params;               /* [param_count] after the last step */
    size_t param_count;
    int steps_done;              /* steps that returned TSR_OK */
    tsr_status failed;           /* the first step's error (TSR_OK: none) */
    int failed_step;             /* its step, -1 if none */
    uint64_t skipped;            /* tsr_trainer_skipped at the end */
    int rank_mismatch;           /* first step whose parameters differed between ranks (checked
                                    after every step when check_ranks), -1 if none */
    int check_ranks;
    int snapshot_before;         /* >= 0: the parameters before this step go to snapshot */
    float *snapshot;             /* [param_count] when snapshot_before was reached, else NULL */
} tsr_mh_run;

/* Defaults: options from tsr_trainer_options_init, seed 7, no steps, no rank check, no
 * snapshot. */
void tsr_mh_run_init(tsr_mh_run *r);
/* Creates the trainer of r->options on `model`, splits r->global_batch over the ranks of
 * r->options.comm with tsr_trainer_data_split (a loader of `data` with this rank's slice; data
 * mode: even shares), runs r->steps steps on every rank (stopping at the first failing step) and
 * fills the outputs. Returns the first error of creation (the trainer is then NULL); a failing
 * step is reported in r->failed, not returned. */
tsr_status tsr_mh_run_train(tsr_context *ctx, const tsr_model *model, const tsr_dataset *data,
                            tsr_mh_run *r);
void tsr_mh_run_free(tsr_mh_run *r);

/* The non-finite rule of a mode: runs of nan_step + 1 steps with options *o (mode, comm and mode
 * options) on the synthetic task (96 samples, global batch 8, model `spec`), a NaN gradient at
 * step nan_step on every rank (fault_grad_nan_step), once under SKIP (expected: no error, one
 * step skipped, the parameters bitwise as before that step) and once under STOP (expected:
 * TSR_ERR_NUMERIC from that very step). *as_expected gets 1 when both hold, else 0; `why` says
 * what happened either way. Returns the first error of the set-up. */
tsr_status tsr_mh_nonfinite(tsr_context *ctx, const tsr_trainer_options *o, const char *spec,
                            int nan_step, int *as_expected, char *why, size_t size);

/* --- comparisons --- */
/* 1 if `got` is `want` and the context's last error contains `words`. */
int tsr_mh_error_is(tsr_context *ctx, tsr_status got, tsr_status want, const char *words);
/* Max |a - b| over n. */
double tsr_mh_max_abs_diff(const float *a, const float *b, size_t n);
/* 1 if the n floats agree bit for bit. */
int tsr_mh_bitwise(const float *a, const float *b, size_t n);
/* 1 if these n floats hash alike on every rank of MPI_COMM_WORLD (collective; every rank gets
 * the answer). */
int tsr_mh_same_on_all_ranks(const float *p, size_t n);

/* A checkpoint round trip: `from` saves to `path` (rank 0 writes, every rank waits for it),
 * `to` loads it; then *differs gets 0 when the two trainers' n parameters are bitwise equal and
 * their step counts agree. Returns the first failing call's status. */
tsr_status tsr_mh_checkpoint_round_trip(tsr_trainer *from, tsr_trainer *to, size_t n,
                                        const char *path, int *differs);

#endif
