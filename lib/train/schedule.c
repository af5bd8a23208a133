/* Learning-rate schedules: constant, step, cosine, each with an optional linear warm-up. */
#include <math.h>
#include <string.h>
#include "lib/core/internal.h"

float tsr_schedule_lr(const tsr_schedule_options *s, float base_lr, uint64_t step) {
    if (!s) return base_lr;
    if (step < s->warmup_steps)
        return (float)((double)base_lr * (double)(step + 1) / (double)s->warmup_steps);
    uint64_t t = step - s->warmup_steps;
    switch (s->kind) {
    case TSR_SCHEDULE_STEP:
        if (!s->step_size) return base_lr;
        return (float)((double)base_lr * pow((double)s->gamma, (double)(t / s->step_size)));
    case TSR_SCHEDULE_COSINE: {
        if (!s->total_steps || t >= s->total_steps) return s->total_steps ? s->min_lr : base_lr;
        double c = 0.5 * (1.0 + cos(M_PI * (double)t / (double)s->total_steps));
        return (float)((double)s->min_lr + ((double)base_lr - (double)s->min_lr) * c);
    }
    case TSR_SCHEDULE_CONSTANT: break;
    }
    return base_lr;
}

tsr_status tsr_schedule_kind_parse(const char *name, tsr_schedule_kind *out) {
    static const char *const names[] = {"constant", "step", "cosine"};
    if (!name || !out) return TSR_ERR_INVALID_ARG;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(names); i++)
        if (!strcmp(name, names[i])) {
            *out = (tsr_schedule_kind)i;
            return TSR_OK;
        }
    return TSR_ERR_PARSE;
}
