/* Data-parallel gradient aggregation for the trainer: fusion buckets that start a non-blocking
 * allreduce from the stage's backward hook as soon as their gradients are final, overlapping
 * the rest of backward; weighting by sample count; fp16 wire or top-k with error feedback. */
#ifndef TSR_DP_H
#define TSR_DP_H
#include <stddef.h>
#include "backends/backend.h"
#include "lib/model/stage.h"
#include "lib/core/timeline.h"

typedef struct tsr_dp tsr_dp;

/* o->comm must be non-NULL. tl (may be NULL) receives the bucket and wait events. */
tsr_status tsr_dp_create(tsr_context *ctx, const tsr_model *model, tsr_stage *stage, const tsr_trainer_options *o,
                         tsr_timeline *tl, tsr_dp **out);
void tsr_dp_free(tsr_dp *dp); /* accepts NULL; collective (registered staging memory) */
/* After forward: exchanges (n, loss) with every rank; *global_loss = mean over the global
 * batch. Arms the hook for the backward that follows. TSR_ERR_INVALID_ARG when no rank has a
 * sample. stop (may be NULL): this rank's stop request in, any rank's out (same message). */
tsr_status tsr_dp_begin(tsr_dp *dp, size_t n, float local_loss, float *global_loss, int *stop);
/* The stage hook (user = dp). */
tsr_status tsr_dp_hook(void *user, size_t layer, size_t first, size_t count);
/* After backward: starts what is left, waits for every bucket, leaves the averaged gradient in
 * the stage's gradient buffer. */
tsr_status tsr_dp_finish(tsr_dp *dp);
size_t tsr_dp_buckets(const tsr_dp *dp);

/* ZeRO-1 (options shard_optimizer = 1): tsr_dp_finish reduce-scatters, so only
 * this rank's slice [lo, hi) of the gradient is final; the trainer updates that slice of the
 * parameters (optimizer state for it alone) and tsr_dp_gather_params allgathers them. Without
 * sharding the slice is the whole buffer. The parameter buffer of a host stage lives in
 * registered memory while the dp exists. */
int tsr_dp_sharded(const tsr_dp *dp);
void tsr_dp_owned(const tsr_dp *dp, size_t *lo, size_t *hi);
/* Collective: the smallest of every rank's `local` (first non-finite gradient index found in
 * its slice, or the parameter count when none) in *global. */
tsr_status tsr_dp_first_bad(tsr_dp *dp, size_t local, size_t *global);
/* Collective: every rank's updated slice of the parameters to all ranks. */
tsr_status tsr_dp_gather_params(tsr_dp *dp);
/* Collective, in place: full[lo, hi) of every rank to all ranks (parameter-sized host array;
 * checkpoints gather the sharded optimizer state with it). */
tsr_status tsr_dp_gather_slices(tsr_dp *dp, float *full);

/* Top-k (compress.c): idx[0..k) = positions of the k largest |v[i]| of v[0..n) (any order;
 * ties broken by position); scratch holds n floats. */
void tsr_topk_select(const float *v, size_t n, size_t k, uint32_t *idx, float *scratch);

#endif
