/* Hybrid data + model parallelism (PipeDream-2BW / Megatron layout): R replicas of an S-stage
 * pipeline on R*S ranks; rank = r*S + s runs stage s of replica r. Each replica steps with its
 * own share of the global batch; after the pipeline's backward, stage s's gradients are
 * averaged over the R ranks that run stage s (weighted by their replicas' sample counts,
 * bucketed and overlapped with the last micro-batch's backward), so every replica applies the
 * update of the global batch and the replicas' parameters stay bitwise identical.
 * Every function is collective over o->comm. */
#ifndef TSR_HYBRID_H
#define TSR_HYBRID_H
#include <stddef.h>
#include <stdint.h>
#include "lib/train/pipeline.h"
#include "tessera.h"

typedef struct tsr_hybrid_options {
    size_t replicas;                /* R >= 1; the ranks of o->comm must be R * pipeline.stages */
    tsr_pipeline_options pipeline;  /* per replica: stages S, bounds, micro-batches, schedule */
} tsr_hybrid_options;

typedef struct tsr_hybrid tsr_hybrid;

/* Replica and stage of `rank` among `ranks` ranks: rank = replica * stages + stage.
 * TSR_ERR_INVALID_ARG naming the numbers when replicas is 0 or ranks != replicas * stages. */
tsr_status tsr_hybrid_layout(tsr_context *ctx, size_t ranks, size_t replicas, size_t stages,
                             size_t rank, size_t *replica, size_t *stage);

/* Splits o->comm (NULL: one rank) into the replica's pipeline and the stage's replica group
 * and creates this rank's stage (tsr_pipeline_create_replicated). o->batch is the largest
 * batch a replica steps with. Bad options fail on every rank alike. */
tsr_status tsr_hybrid_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                             const tsr_hybrid_options *ho, tsr_hybrid **out);
void tsr_hybrid_free(tsr_hybrid *h); /* accepts NULL; collective unless a peer was lost */

/* One step on this replica's n samples (every rank of a replica passes the same ones; n may
 * differ between replicas). *loss: the mean loss over the global batch, on every rank. */
tsr_status tsr_hybrid_step(tsr_hybrid *h, const float *images, const int32_t *labels, size_t n,
                           float *loss);
/* Accuracy and mean loss over the data set (each replica evaluates its slice), every rank. */
tsr_status tsr_hybrid_evaluate(tsr_hybrid *h, const tsr_dataset *d, double *accuracy,
                               double *loss);
/* The whole model's parameters in tsr_trainer_get_params's layout (gathered / taken). */
tsr_status tsr_hybrid_get_params(tsr_hybrid *h, float *dst, size_t count);
tsr_status tsr_hybrid_set_params(tsr_hybrid *h, const float *src, size_t count);
/* tsr_trainer_save's format; rank 0 writes, every rank returns its result. A checkpoint of a
 * single process, a pipeline or another layout loads here and the other way round. */
tsr_status tsr_hybrid_save(tsr_hybrid *h, const char *path);
tsr_status tsr_hybrid_load(tsr_hybrid *h, const char *path);

uint64_t tsr_hybrid_steps(const tsr_hybrid *h);
uint64_t tsr_hybrid_skipped(const tsr_hybrid *h);
uint64_t tsr_hybrid_epoch(const tsr_hybrid *h);
uint64_t tsr_hybrid_seed(const tsr_hybrid *h);
void tsr_hybrid_set_epoch(tsr_hybrid *h, uint64_t epoch);
/* This rank's replica and stage; the replica count. */
size_t tsr_hybrid_replica(const tsr_hybrid *h);
size_t tsr_hybrid_stage(const tsr_hybrid *h);
size_t tsr_hybrid_replicas(const tsr_hybrid *h);
/* The pipeline behind it (stage range, activation bytes...). */
tsr_pipeline *tsr_hybrid_pipeline(tsr_hybrid *h);

#endif
