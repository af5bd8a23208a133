/* Dynamic loss scaling for fp16 training, PyTorch GradScaler's rule: the loss gradient is
 * multiplied by `scale` so that small gradients survive fp16's range in the backward; a step
 * whose (scaled) gradients hold an Inf/NaN is skipped and the scale halved; after `interval`
 * consecutive applied steps the scale doubles (when the doubled scale is finite). The run core
 * (lib/train/run.c) drives it: every rank of a mode reaches the same skip decision, so the
 * scales stay equal on all ranks. */
#ifndef TSR_TRAIN_SCALER_H
#define TSR_TRAIN_SCALER_H
#include <stdint.h>

#define TSR_SCALER_INIT 65536.0f /* GradScaler's init_scale */
#define TSR_SCALER_INTERVAL 2000 /* growth_interval */

typedef struct tsr_scaler {
    int enabled;       /* 0: scale stays 1 and update does nothing */
    float scale;       /* multiplies the loss gradient; the gradients are divided by it */
    uint32_t interval; /* clean steps before the scale doubles */
    uint32_t clean;    /* consecutive applied steps since the last change */
} tsr_scaler;

void tsr_scaler_init(tsr_scaler *s, int enabled, float scale, uint32_t interval);
/* After a step: overflow = its gradients held an Inf/NaN (the step was skipped). */
void tsr_scaler_update(tsr_scaler *s, int overflow);
/* Restores a saved state (scale, clean steps): 0, or -1 when the values are not a state
 * (scale not a positive finite float, clean not an integer in [0, interval)). */
int tsr_scaler_restore(tsr_scaler *s, float scale, float clean);

#endif
