/* Does a training stage fit its device? The whole footprint is computed from the stage's own
 * memory plan (tsr_stage_plan_memory, what tsr_stage_create allocates) before anything is
 * allocated, so a model too large for the device or the host is refused with the figures
 * instead of being killed by the kernel's OOM killer half-way through its allocations. */
#ifndef TSR_MODEL_FIT_H
#define TSR_MODEL_FIT_H
#include <stddef.h>
#include <stdint.h>
#include "lib/model/stage.h"

typedef struct tsr_fit {
    uint64_t params, grads, optimizer, activations; /* device bytes by kind */
    uint64_t device_total;   /* their sum */
    uint64_t host_total;     /* host bytes: the device's when its memory is host memory (host
                              * backend, OpenCL CPU devices), plus the trainer's host copies */
    uint64_t device_limit;   /* the device's memory (0: unknown, not checked) */
    uint64_t host_limit;     /* the host's available memory (MemAvailable; 0: unknown) */
} tsr_fit;

/* Figures of stage `o` of `model` on `dev` with `optimizer_slots` state tensors per parameter
 * (SGD 1, Adam 2) and `act_sets` activation sets (micro-batches in flight), and the check:
 * TSR_ERR_DEVICE_MEMORY when the device's footprint does not fit its memory (host memory for
 * the host backend and OpenCL CPU devices), TSR_ERR_NO_MEMORY when only the trainer's host
 * copies do not; the message names the device, the bytes needed by kind and the bytes
 * available, and what to change. `fit` (may be NULL) receives the figures either way. In
 * bf16/fp16 (o->precision) the activations count 16-bit storage, its float32 staging and the
 * backend's rounded copy of one GEMM's operands (tsr_stage_memory.round_bytes). */
tsr_status tsr_stage_check_fit(tsr_context *ctx, const tsr_model *model, const tsr_stage_options *o,
                               const tsr_device_info *dev, size_t optimizer_slots, size_t act_sets,
                               tsr_fit *fit);

/* The host's available memory in bytes (MemAvailable of /proc/meminfo), 0 when unknown. */
uint64_t tsr_host_available_bytes(void);

#endif
