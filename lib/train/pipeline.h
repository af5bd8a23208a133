/* Pipeline (model) parallelism: a model split into stages of consecutive layers, stage s on
 * rank s of the trainer options' communicator (one rank drives one device). Every rank calls
 * each function with the same arguments (collective on the communicator).
 *
 * A step splits its n samples into M micro-batches; stage s forwards micro-batch k and sends
 * its output (host memory, batch x features floats) to stage s+1, the last stage computes the
 * loss, and the gradients travel back. Each stage accumulates its parameter gradients over
 * the micro-batches (the last stage scales every loss gradient by 1/n, so the sum is the
 * gradient of the mean loss over the whole batch) and updates its own parameters with its own
 * optimizer state. Schedules: GPipe (all forwards, then all backwards) and 1F1B
 * (PipeDream-Flush: warm-up forwards, then one forward one backward, then the drain). Both run
 * the backwards in micro-batch order, so they do the same arithmetic and give bitwise the same
 * parameters.
 *
 * Memory: micro-batches in flight on stage s: M with GPipe, min(M, stages - s) with 1F1B.
 * By default the stage holds one activation set (every layer's output, im2col columns,
 * pooling indices, at the micro-batch size) per micro-batch in flight (tsr_stage_set_slots).
 * With recompute = 1 it holds one set and keeps only the stage INPUT of each micro-batch in
 * flight; a backward whose micro-batch is not the one last forwarded re-runs that forward from
 * the kept input first (re-materialisation, as in the GPipe paper): bitwise the same
 * activations (dropout masks come from a seed per micro-batch), one extra forward per such
 * backward, (in flight - 1) x the activation set saved.
 *
 * Dropout: micro-batch k uses masks from the step's seed mixed with k; with M = 1 they are the
 * masks of tsr_trainer, with M > 1 other (equally distributed) masks. */
#ifndef TSR_PIPELINE_H
#define TSR_PIPELINE_H
#include <stddef.h>
#include <stdint.h>
#include "tessera.h"

typedef struct tsr_pipeline_options {
    const size_t *bounds;  /* stages + 1 layer indices: stage s = layers [bounds[s], bounds[s+1]),
                              bounds[0] = 0, bounds[stages] = layer count, each stage >= 1 layer */
    size_t stages;         /* = ranks of o->comm (1 without a communicator) */
    size_t microbatches;   /* 1..o->batch */
    tsr_pipeline_schedule schedule;
    int recompute;         /* 0: one activation set per micro-batch in flight; 1: keep only
                              the stage inputs and re-run forwards (re-materialisation) */
} tsr_pipeline_options;

typedef struct tsr_pipeline tsr_pipeline;

/* "a,b,c": the first layer of stages 1.. (stage 0 starts at 0, the last ends at `layers`)
 * into bounds[0..stages] (bounds holds max_bounds entries). TSR_ERR_PARSE naming the bad part. */
tsr_status tsr_pipeline_bounds_parse(tsr_context *ctx, const char *text, size_t layers,
                                     size_t *bounds, size_t max_bounds, size_t *stages);

/* Stage bounds of a plan (tsr_plan_create / tsr_plan_from_bounds: --stages auto) into
 * bounds[0..stages] (max_bounds entries). The pipeline runs plan stage s on rank s: split the
 * communicator so that ranks follow the plan's stage order, and give each rank its stage's
 * device_id. TSR_ERR_SHAPE when bounds is too small. */
tsr_status tsr_pipeline_bounds_from_plan(tsr_context *ctx, const tsr_plan *plan, size_t *bounds,
                                         size_t max_bounds, size_t *stages);

/* Collective: every rank creates its stage (device o->device, as for the trainer; each rank may
 * pass its own), initialised from o->seed exactly as tsr_trainer_create would initialise those
 * layers. Options the pipeline does not do (gradient compression) are refused. All ranks fail
 * alike: a rank whose device fails makes the others fail with TSR_ERR_STATE. */
tsr_status tsr_pipeline_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                               const tsr_pipeline_options *po, tsr_pipeline **out);
/* Hybrid parallelism (lib/train/hybrid.h builds the communicators): as tsr_pipeline_create on the
 * replica's communicator o->comm (stage s = its rank), plus `replicas`: the ranks that run this
 * same stage in the other replicas (its rank = the replica index; NULL or one rank: none) and
 * `world`: every rank of every replica (NULL: o->comm). Each step averages this stage's
 * gradients over `replicas`, weighted by every replica's sample count (lib/train/dp.c: buckets
 * start during the last micro-batch's backward), so the update is that of the replicas'
 * union batch; the loss, the non-finite decision, creation, save and load agree over
 * `world`; evaluate gives replica r the slice r of R of the data set and adds the replicas'
 * figures; rank 0 of world writes checkpoints and the timeline. Both communicators must
 * outlive the pipeline. */
tsr_status tsr_pipeline_create_replicated(tsr_context *ctx, const tsr_model *model,
                                          const tsr_trainer_options *o,
                                          const tsr_pipeline_options *po, tsr_comm *replicas,
                                          tsr_comm *world, tsr_pipeline **out);
/* Collective (timeline flush) unless the communicator lost a peer. Accepts NULL. */
void tsr_pipeline_free(tsr_pipeline *p);

/* One optimizer step on n (1..batch) samples, the same images and labels on every rank (stage
 * 0 reads the images, the last stage the labels). *loss (may be NULL): mean loss over the n
 * samples, on every rank. Non-finite loss or gradients: every rank decides alike (one
 * allreduce of the flags), per the trainer's policy (TSR_ERR_NUMERIC, or skip). */
tsr_status tsr_pipeline_step(tsr_pipeline *p, const float *images, const int32_t *labels, size_t n,
                             float *loss);
/* Accuracy and mean loss over a data set (no dropout), on every rank. Outputs may be NULL. */
tsr_status tsr_pipeline_evaluate(tsr_pipeline *p, const tsr_dataset *d, double *accuracy,
                                 double *loss);

/* The WHOLE model's parameters in tsr_trainer_get_params's layout (count =
 * tsr_model_param_count), gathered on every rank / taken from every rank's src. */
tsr_status tsr_pipeline_get_params(tsr_pipeline *p, float *dst, size_t count);
/* This stage's gradients of the last step: its slice of the whole layout (its layers'
 * tensors, in model order; count: its parameters), the replicas' average in hybrid mode.
 * Tensor parallel: the slice of this rank's share (tsr_model_create_gpt_tp's layout), while
 * parameters and checkpoints are the whole model's. */
tsr_status tsr_pipeline_get_grads(tsr_pipeline *p, float *dst, size_t count);
tsr_status tsr_pipeline_set_params(tsr_pipeline *p, const float *src, size_t count);

/* One checkpoint in tsr_trainer_save's format (parameters and optimizer state of the whole
 * model, step, epoch, seed, RNG): gathered and written by rank 0; every rank returns rank 0's
 * result. Load reads `path` on every rank (a file every rank can read) and takes its part;
 * refused on all ranks if any rank refuses (nothing changes then). A checkpoint of a
 * single-process trainer loads here and the other way round. */
tsr_status tsr_pipeline_save(tsr_pipeline *p, const char *path);
tsr_status tsr_pipeline_load(tsr_pipeline *p, const char *path);

uint64_t tsr_pipeline_steps(const tsr_pipeline *p);
uint64_t tsr_pipeline_skipped(const tsr_pipeline *p);
uint64_t tsr_pipeline_epoch(const tsr_pipeline *p);
uint64_t tsr_pipeline_seed(const tsr_pipeline *p);  /* after a load: the checkpoint's */
void tsr_pipeline_set_epoch(tsr_pipeline *p, uint64_t epoch);
/* This rank's stage: first layer, end layer, parameter count. */
void tsr_pipeline_stage_range(const tsr_pipeline *p, size_t *first, size_t *last, size_t *params);

/* The run core state behind the pipeline (lib/train/run.h): counters, RNG, timeline. */
struct tsr_run *tsr_pipeline_run(tsr_pipeline *p);
/* The pipeline options of trainer options: options->stage_bounds, or the model's layers split
 * evenly over `stages` (written to even[stages + 1]). */
tsr_pipeline_options tsr_pipeline_options_of(const tsr_trainer_options *o, const tsr_model *model,
                                             size_t stages, size_t *even);
/* Micro-batch forwards re-run for backward (re-materialisation) since creation, this rank. */
uint64_t tsr_pipeline_recomputes(const tsr_pipeline *p);
/* Device bytes of this rank's activation sets (one per micro-batch in flight, or one). */
size_t tsr_pipeline_act_bytes(const tsr_pipeline *p);
/* Host bytes this rank keeps for micro-batch inputs and messages (the re-materialisation
 * store and the send/receive buffers). */
size_t tsr_pipeline_host_bytes(const tsr_pipeline *p);

#endif
