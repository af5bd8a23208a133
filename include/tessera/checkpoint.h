/* Checkpoints: versioned binary format with header and checksum, written atomically. */
#ifndef TESSERA_CHECKPOINT_H
#define TESSERA_CHECKPOINT_H
#include <stddef.h>
#include <stdint.h>
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_checkpoint_tensor {
    char name[64];    /* "params", "sgd.velocity", "adam.m", ... */
    size_t count;     /* floats */
    float *data;
} tsr_checkpoint_tensor;

typedef struct tsr_checkpoint {
    char model_spec[1024];   /* canonical model spec the tensors belong to */
    char optimizer[64];      /* "sgd", "adam", ... */
    uint64_t step;           /* optimizer steps taken */
    uint64_t epoch;          /* completed epochs */
    uint64_t seed;           /* run seed */
    uint64_t rng_state[4];   /* trainer RNG state, restored on resume */
    size_t tensor_count;
    tsr_checkpoint_tensor *tensors;
    /* Run metadata: NULL or a JSON object (at most 64 KiB) the trainer's user chose, e.g.
     * tsr-train's {"input_mean":..,"input_std":..,"train_loss":..}. Allocated through ctx
     * (tsr_checkpoint_set_meta, load); a caller's own struct may point it at its string. */
    char *meta;
} tsr_checkpoint;

/* Writes `path` atomically: a temp file beside it, fsync, rename, fsync of the folder.
 * On any failure the previous file at `path` is untouched and no temp file remains. */
tsr_status tsr_checkpoint_save(tsr_context *ctx, const char *path, const tsr_checkpoint *ck);
/* Reads and validates everything (magic, version, sizes, checksum); errors name the file
 * and the field. The result is freed with tsr_checkpoint_free. */
tsr_status tsr_checkpoint_load(tsr_context *ctx, const char *path, tsr_checkpoint **out);
/* Frees the checkpoint, its tensor table and every tensor's data (all allocated through ctx,
 * as load/create/add_tensor do). Accepts NULL. */
void tsr_checkpoint_free(tsr_context *ctx, tsr_checkpoint *ck);
/* An empty checkpoint (all zero) to fill and save; freed with tsr_checkpoint_free. */
tsr_status tsr_checkpoint_create(tsr_context *ctx, tsr_checkpoint **out);
/* Appends a copy of data[0..count) (NULL data: zeros) as tensor `name` to a checkpoint from
 * tsr_checkpoint_create/load. Names are 1..63 bytes and unique (duplicate -> INVALID_ARG). */
tsr_status tsr_checkpoint_add_tensor(tsr_context *ctx, tsr_checkpoint *ck, const char *name,
                                     const float *data, size_t count);
/* Replaces the metadata with a copy of `json` (a JSON object; NULL clears it). A text that is
 * not a JSON object, or longer than 64 KiB, is TSR_ERR_INVALID_ARG. */
tsr_status tsr_checkpoint_set_meta(tsr_context *ctx, tsr_checkpoint *ck, const char *json);
/* Tensor by name, NULL if absent. */
const tsr_checkpoint_tensor *tsr_checkpoint_find(const tsr_checkpoint *ck, const char *name);

#ifdef __cplusplus
}
#endif
#endif
