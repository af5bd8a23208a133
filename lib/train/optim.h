/* Optimizer state on a device: one update over a whole contiguous parameter buffer. */
#ifndef TSR_OPTIM_H
#define TSR_OPTIM_H
#include <stddef.h>
#include "backends/backend.h"
#include "lib/model/stage.h"

/* A run of the updated range with one weight-decay rule (decay_matrices_only). */
typedef struct tsr_optim_run {
    size_t lo, hi;  /* element offsets in the parameter buffer */
    int decay;      /* 0: a vector (bias, layer-norm gain): no weight decay */
} tsr_optim_run;

typedef struct tsr_optim {
    tsr_backend *be;
    tsr_optimizer_options o;
    size_t n;
    size_t off;      /* updates parameters [off, off + n) (ZeRO-1: this rank's slice); 0 */
    tsr_buf *m, *v;  /* SGD: v = velocity (m unused); Adam: first and second moments */
    /* tsr_optim_decay_matrices: [off, off + n) cut into runs of matrices and of vectors, one kernel
     * call each; NULL: one call over the whole range (every tensor decays alike) */
    tsr_optim_run *runs;
    size_t nruns;
    float grad_scale; /* tsr_optim_scale_next's factor for the next update; 0: none */
} tsr_optim;

/* Validates the hyper-parameters (TSR_ERR_INVALID_ARG naming the bad one) and allocates
 * zeroed state for n parameters. */
tsr_status tsr_optim_create(tsr_backend *be, const tsr_optimizer_options *o, size_t n, tsr_optim **out);
void tsr_optim_free(tsr_optim *opt); /* accepts NULL */
/* Applies step `step` (0-based; Adam's bias correction uses step+1) with rate lr to
 * params/grads [off, off + n). */
tsr_status tsr_optim_update(tsr_optim *opt, tsr_buf *params, tsr_buf *grads, float lr, uint64_t step);
/* Weight decay on matrices only (the trainer's decay_matrices_only): learns from the stage which
 * parameters are vectors (rank < 2) and exempts them from weight decay (nothing to do without
 * weight decay). Call it after setting opt->off. */
tsr_status tsr_optim_decay_matrices(tsr_optim *opt, const tsr_stage *st);
/* Multiplies gradients [off, off + n) by coef: the part of a clipped gradient this optimizer
 * applies. */
tsr_status tsr_optim_scale_grads(tsr_optim *opt, tsr_buf *grads, float coef);
/* The same folded into the next tsr_optim_update (which reads g * coef, the bits the scale pass
 * would have left, and leaves g as it is): no pass of its own over the gradients. A caller
 * that hands out the gradients afterwards multiplies its copy by coef. */
void tsr_optim_scale_next(tsr_optim *opt, float coef);
/* State tensors for checkpoints: count (0..2), names and buffers. */
size_t tsr_optim_state(tsr_optim *opt, const char *names[2], tsr_buf *bufs[2]);

#endif
