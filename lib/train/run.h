/* The run core: the state every training mode shares (context, model, resolved options, world
 * communicator, timeline, RNG, counters, run metadata) and the pieces of a step written once:
 * option checks, device lookup, batch checks and upload, the one non-finite scan (with the
 * gradient fault knob) and skip/stop rule, the learning rate, checkpoint assembly.
 *
 * A mode embeds a tsr_run and is a strategy table (lib/train/strategy.h) behind tsr_trainer. */
#ifndef TSR_TRAIN_RUN_H
#define TSR_TRAIN_RUN_H
#include <stddef.h>
#include <stdint.h>
#include "lib/core/internal.h"
#include "lib/train/optim.h"
#include "lib/model/stage.h"
#include "lib/core/timeline.h"
#include "lib/train/scaler.h"
#include "tessera.h"

typedef struct tsr_run {
    tsr_context *ctx;
    const tsr_model *model;
    tsr_trainer_options o;   /* resolved copy: device, stage_bounds, timeline cleared */
    tsr_comm *world;         /* every rank of the run with >= 2 ranks; NULL: one process */
    int rank;                /* in world (0 without); the timeline's pid */
    int device;              /* context device index */
    int check_grads;         /* scan the gradients (not no_grad_check) */
    tsr_timeline *tl;        /* options->timeline, else NULL */
    tsr_rng rng;             /* one draw per step: the dropout seed */
    uint64_t steps, epoch, seed, skipped;
    int has_grads;           /* a step computed gradients (tsr_trainer_get_grads) */
    float last_loss;
    uint64_t step_samples;   /* samples the last step covered on every rank, where the mode
                                counts them (an async server: its workers' pushes); else 0 */
    double grad_norm;        /* the last applied step's gradient norm before clipping (with
                                clip_grad_norm; 0 otherwise) */
    /* the caller's stop request: read into `stop` at the start of each step; a mode with
     * several ranks replaces it by the agreed value (any rank's request) inside the step's
     * agreement, so every rank ends the same step with TSR_ERR_INTERRUPTED */
    int stop;
    char *meta;              /* run metadata (JSON object) kept in checkpoints, or NULL */
    tsr_scaler scaler;       /* fp16 loss scaling (enabled by precision FP16) */
    /* With clipping, the step's non-finite scan also sums the squares (one read for both):
     * tsr_run_sumsq answers from here for the same buffer and range until the step ends. */
    struct {
        int valid;
        tsr_buf *buf;
        size_t lo, hi;
        double value;
    } sumsq;
} tsr_run;

/* Checks common to every mode (batch, initialisation, schedule, non-finite policy); `who`
 * prefixes the message ("" or "gossip: "). */
tsr_status tsr_run_check_options(tsr_context *ctx, const tsr_trainer_options *o, const char *who);
/* Looks the device up, seeds the RNG, copies the options, opens the timeline. world: the run's
 * communicator (may be NULL); rank: this rank's timeline pid. On failure r holds nothing. */
tsr_status tsr_run_init(tsr_run *r, tsr_context *ctx, const tsr_model *model,
                        const tsr_trainer_options *o, tsr_comm *world, int rank);
/* Flushes the timeline (collective on world unless it is broken; flush = 0 after a failed
 * creation: the other ranks may not be there) and frees what the run holds. */
void tsr_run_release(tsr_run *r, int flush);

/* Every rank of comm learns whether any rank failed (one allreduce of a flag); comm NULL, of
 * one rank or broken: mine. */
tsr_status tsr_run_agree(tsr_run *r, tsr_comm *comm, tsr_status mine, const char *what);

/* Backend (in the run's precision), stage over layers [first, last) at max_batch (fed the
 * loss scale in fp16), optimizer for the stage's parameters and the parameters initialised
 * from the seed: what every mode opens the same way. */
tsr_status tsr_run_open_stage(tsr_run *r, const tsr_stage_options *so, tsr_backend **be,
                              tsr_stage **stage, tsr_optim **optim);

/* Images, labels and n of a step: n in [min_n, batch], each label in [0, classes).
 * `who` prefixes the message. */
tsr_status tsr_run_check_batch(tsr_run *r, const float *images, const int32_t *labels, size_t n,
                               size_t min_n, const char *who);
/* Writes n samples and their labels into the stage's input (the stage holds the loss). */
tsr_status tsr_run_upload(tsr_run *r, tsr_stage *st, const float *images, const int32_t *labels,
                          size_t n);

/* This step's dropout seed: the next draw, mixed with `stream` (a rank or replica; 0 keeps the
 * single-process masks). */
uint64_t tsr_run_dropout_seed(tsr_run *r, uint64_t stream);

/* Scans gradients [lo, hi) of a buffer of np where they are (tsr_op_first_nonfinite: the
 * host's threads, a device kernel); sumsq 1: the same call also sums their squares
 * (tsr_sumsq_f32's order), kept for tsr_run_sumsq when all are finite. The options'
 * fault_grad_nan_step poisons gradient np / 2 at that step. *bad: the first non-finite index,
 * np if none; *value: its value (when bad < np). */
tsr_status tsr_run_scan_grads(tsr_run *r, tsr_buf *grads, size_t lo, size_t hi, size_t np,
                              size_t *bad, float *value, int sumsq);
/* The one skip/stop rule on a non-finite step: SKIP counts it, logs `why` and returns TSR_OK;
 * STOP fails with TSR_ERR_NUMERIC "<why> at step N". */
tsr_status tsr_run_nonfinite(tsr_run *r, const char *why);

/* This process's stop request (options.stop_flag set and non-zero): 1 or 0. */
int tsr_run_stop_requested(const tsr_run *r);

/* The gradients of the last step from a stage's gradient buffer (count: its parameters):
 * TSR_ERR_STATE before any step computed some. */
tsr_status tsr_run_read_grads(tsr_run *r, tsr_stage *st, float *dst, size_t count);

/* Sum of squares, in double (tsr_sumsq_f32), of gradients [lo, hi) of a buffer: the step's
 * scan's figure when it took it for the same range, else a read (host backend: where they
 * are; else into scratch at the same offsets). */
tsr_status tsr_run_sumsq(tsr_run *r, tsr_buf *grads, float *scratch, size_t lo, size_t hi, double *out);
/* x[0..k) summed over the ranks of comm in rank order (an allgather): the same figures on every
 * rank. comm NULL or of one rank: x as it is. */
tsr_status tsr_run_sum_over(tsr_run *r, tsr_comm *comm, double *x, size_t k);

/* Learning rate of the next step. */
float tsr_run_lr(const tsr_run *r);

/* ---- the step loop, written once ---- */

/* A strategy's parts of a step (mode = the strategy's state). The loop (tsr_run_step): check
 * the batch -> upload -> compute -> combine -> scan the gradients -> agree on one non-finite
 * decision -> skip/stop rule -> learning rate -> apply -> after -> timeline, counters. */
typedef struct tsr_step_ops {
    const char *who;  /* message prefix: "" or "pipeline: " */
    /* the fewest samples a step takes (1; 0 where a rank without samples still takes part) */
    size_t (*min_batch)(void *mode);
    /* the stage the host batch goes to before compute; NULL: compute reads the host batch */
    tsr_stage *(*input)(void *mode);
    /* the stream mixed into the dropout seed (a rank or replica; 0: the trainer's masks) */
    uint64_t (*stream)(void *mode);
    /* forward and backward (and what overlaps them) on n samples; *loss: this rank's loss;
     * *early = 1: no backward ran, the (non-finite) loss decides the step */
    tsr_status (*compute)(void *mode, const float *images, const int32_t *labels, size_t n,
                          uint64_t seed, float *loss, int *early);
    /* the step's gradients made final on this rank (allreduce, mixing); may replace *loss */
    tsr_status (*combine)(void *mode, size_t n, float *loss);
    /* the gradients to scan: 0 for none this step (no check wanted); else the buffer, np
     * floats of host scratch, this rank's slice [lo, hi) of np */
    int (*grads)(void *mode, float loss, tsr_buf **g, float **scratch, size_t *lo, size_t *hi,
                 size_t *np);
    /* the decision every rank of the mode shares, from this rank's first non-finite gradient
     * (bad = np: none; value its value) and the loss (may be replaced by the agreed one):
     * *skip = 1 with why (without " at step N") when the step must not be applied */
    tsr_status (*agree)(void *mode, float *loss, int early, size_t bad, float value, size_t np,
                        int *skip, char *why, size_t size);
    /* the optimizer step at rate lr; *applied = 0 when nothing was applied (no sample) */
    tsr_status (*apply)(void *mode, float lr, int *applied);
    /* after the update or a skip (gossip: the next exchange starts); NULL: none */
    tsr_status (*after)(void *mode);
    /* an error inside compute/combine/agree (a pipeline refuses later steps); NULL: none */
    tsr_status (*failed)(void *mode, tsr_status s);
    /* gradient clipping (options clip_grad_norm), before apply: *sumsq = the squared norm of
     * the whole model's gradient as apply will use it, the same on every rank that shares the
     * update; then grad_scale multiplies what apply uses by coef when the norm is too large */
    tsr_status (*grad_sumsq)(void *mode, double *sumsq);
    tsr_status (*grad_scale)(void *mode, float coef);
} tsr_step_ops;

/* One optimizer step of a strategy: *loss (may be NULL) receives the step's loss, set even
 * when the step is skipped or stopped. */
tsr_status tsr_run_step(tsr_run *r, const tsr_step_ops *ops, void *mode, const float *images,
                        const int32_t *labels, size_t n, float *loss);

/* ---- checkpoints: written once on the strategies' gather/scatter ---- */

/* A strategy's state as checkpoints see it: tensors "params" and the optimizer's, each the
 * whole model's count floats in tsr_trainer_get_params's layout. */
typedef struct tsr_state_ops {
    const char *who;  /* in a refusal: "the trainer", "the pipeline", "gossip" */
    size_t (*count)(void *mode);
    /* names[0] = "params", then the optimizer's; this rank's buffers of them */
    size_t (*tensors)(void *mode, const char *names[3], tsr_buf *bufs[3]);
    /* the ranks that agree on every outcome (allocation, write, fit); NULL: none, each rank
     * stands alone (data mode: only rank 0 writes) */
    tsr_comm *(*comm)(void *mode);
    /* writer and gather: NULL where the mode saves itself (async: its servers' exchange) */
    int (*writer)(void *mode);  /* 1 on the rank that writes */
    /* tensor i of this rank (buf) into the whole state (count floats, every writer) */
    tsr_status (*gather)(void *mode, size_t i, tsr_buf *buf, float *whole);
    /* this rank's part of the whole tensor i into buf */
    tsr_status (*scatter)(void *mode, size_t i, tsr_buf *buf, const float *whole);
    /* before anything is written into the buffers (gossip: the exchange in flight); NULL */
    tsr_status (*before_load)(void *mode);
    /* after the counters were restored (the mode's own counters from ck); NULL */
    void (*loaded)(void *mode, const tsr_checkpoint *ck);
} tsr_state_ops;

/* The model checkpoints hold: the whole model of a tensor-parallel run, else the run's. */
static inline const tsr_model *tsr_run_saved_model(const tsr_run *r) {
    return r->o.tp_whole ? r->o.tp_whole : r->model;
}

/* The run's checkpoint: gather, then the writer writes (counters, RNG, metadata). */
tsr_status tsr_run_save(tsr_run *r, const tsr_state_ops *ops, void *mode, const char *path);
/* Reads and checks path (every rank of comm agrees before anything changes), scatters it and
 * restores the counters, RNG and metadata. */
tsr_status tsr_run_load(tsr_run *r, const tsr_state_ops *ops, void *mode, const char *path);
/* The pieces, for a mode that assembles its state itself (async: its servers' exchange):
 * writes names[0..nt) with data[i] (n floats each) and the run's counters, RNG, metadata. */
tsr_status tsr_run_checkpoint_write(tsr_run *r, const char *path, const char *const *names,
                                    float *const *data, size_t nt, size_t n);

#endif
