/* Dynamic loss scaling (see scaler.h). */
#include "lib/train/scaler.h"
#include <math.h>

void tsr_scaler_init(tsr_scaler *s, int enabled, float scale, uint32_t interval) {
    s->enabled = enabled;
    s->scale = enabled ? scale : 1.0f;
    s->interval = interval ? interval : 1;
    s->clean = 0;
}

void tsr_scaler_update(tsr_scaler *s, int overflow) {
    if (!s->enabled) return;
    if (overflow) { /* torch._amp_update_scale_: backoff 0.5, growth tracker reset */
        s->scale *= 0.5f;
        s->clean = 0;
        return;
    }
    if (++s->clean < s->interval) return;
    s->clean = 0;
    if (isfinite(s->scale * 2.0f)) s->scale *= 2.0f;
}

int tsr_scaler_restore(tsr_scaler *s, float scale, float clean) {
    if (!(scale > 0.0f) || !isfinite(scale) || !(clean >= 0.0f) || clean >= (float)s->interval ||
        clean != floorf(clean))
        return -1;
    s->scale = scale;
    s->clean = (uint32_t)clean;
    return 0;
}
