/* Optimizer state on a device: one update over a whole contiguous parameter buffer. */
#ifndef TSR_OPTIM_H
#define TSR_OPTIM_H
#include <stddef.h>
#include "backends/backend.h"

typedef struct tsr_optim {
    tsr_backend *be;
    tsr_optimizer_options o;
    size_t n;
    size_t off;      /* updates parameters [off, off + n) (ZeRO-1: this rank's slice); 0 */
    tsr_buf *m, *v;  /* SGD: v = velocity (m unused); Adam: first and second moments */
} tsr_optim;

/* Validates the hyper-parameters (TSR_ERR_INVALID_ARG naming the bad one) and allocates
 * zeroed state for n parameters. */
tsr_status tsr_optim_create(tsr_backend *be, const tsr_optimizer_options *o, size_t n, tsr_optim **out);
void tsr_optim_free(tsr_optim *opt); /* accepts NULL */
/* Applies step `step` (0-based; Adam's bias correction uses step+1) with rate lr to
 * params/grads [off, off + n). */
tsr_status tsr_optim_update(tsr_optim *opt, tsr_buf *params, tsr_buf *grads, float lr, uint64_t step);
/* State tensors for checkpoints: count (0..2), names and buffers. */
size_t tsr_optim_state(tsr_optim *opt, const char *names[2], tsr_buf *bufs[2]);

#endif
