/* A training mode as a strategy table behind tsr_trainer: tsr_trainer_create picks the table by
 * options->mode, and every tsr_trainer_* call goes through it (no mode tests in trainer.c).
 * Each mode's state embeds a tsr_run (lib/train/run.h): counters, RNG, timeline, metadata. */
#ifndef TSR_TRAIN_STRATEGY_H
#define TSR_TRAIN_STRATEGY_H
#include <stddef.h>
#include <stdint.h>
#include "lib/train/run.h"
#include "tessera.h"

typedef struct tsr_strategy {
    const char *name;
    /* Mode-specific option checks, before anything is allocated (the common ones are done). */
    tsr_status (*validate)(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o);
    /* Collective where the mode is; *mode receives the state. */
    tsr_status (*create)(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                         void **mode);
    void (*destroy)(void *mode);
    tsr_run *(*run)(void *mode);
    /* One whole step: check the batch, compute, combine, the non-finite decision, apply. */
    tsr_status (*step)(void *mode, const float *images, const int32_t *labels, size_t n, float *loss);
    tsr_status (*evaluate)(void *mode, const tsr_dataset *d, double *accuracy, double *loss);
    /* The whole model's parameters in tsr_trainer_get_params's layout. */
    tsr_status (*get_params)(void *mode, float *dst, size_t count);
    tsr_status (*set_params)(void *mode, const float *src, size_t count);
    /* The gradients of the last step in the same layout (tsr_trainer_get_grads). */
    tsr_status (*get_grads)(void *mode, float *dst, size_t count);
    /* Checkpoints in the one format: tsr_run_save / tsr_run_load on the mode's gather and
     * scatter (lib/train/run.h). */
    tsr_status (*save)(void *mode, const char *path);
    tsr_status (*load)(void *mode, const char *path);
    /* How this rank reads the data, from the options alone (tsr_trainer_data_split; global_batch
     * >= 1 is checked there, the mode checks its own bounds). */
    tsr_status (*shard_data)(tsr_context *ctx, const tsr_trainer_options *o, size_t global_batch,
                             uint64_t seed, tsr_data_split *split, size_t *shares);
} tsr_strategy;

extern const tsr_strategy tsr_strategy_data;     /* one process, data parallel, ZeRO-1 */
extern const tsr_strategy tsr_strategy_pipeline;
extern const tsr_strategy tsr_strategy_hybrid;
extern const tsr_strategy tsr_strategy_async;
extern const tsr_strategy tsr_strategy_gossip;

/* The data strategy's pieces tsr_trainer_measure / tsr_trainer_balance use. */
tsr_status tsr_data_measure(void *mode, const float *images, const int32_t *labels, size_t n,
                            double *samples_per_s);
const tsr_device_info *tsr_data_device_info(void *mode);
float tsr_data_global_loss(void *mode);
size_t tsr_data_buckets(void *mode);
/* tsr_trainer_balance of a data-mode run (lib/train/balance.c). */
tsr_status tsr_data_balance(void *mode, size_t global_batch, const float *images,
                            const int32_t *labels, size_t probe, size_t *shares);

#endif
