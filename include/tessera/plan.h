/* Placement planner (model parallelism): splits a sequential model into contiguous stages of
 * layers and places each stage on one device of a topology, by measured capability, so that
 * the slowest stage of the resulting pipeline is as fast as possible.
 *
 * The plan predicts, per stage, forward/backward time of one micro-batch, the hand-over to the
 * next stage and the memory it needs; the pipeline runtime (lib/train/pipeline.c) consumes the
 * stage list. A plan can be written as JSON and read back (tsr_plan_parse), validated against
 * the model. */
#ifndef TESSERA_PLAN_H
#define TESSERA_PLAN_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "context.h"
#include "model.h"
#include "topology.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_plan tsr_plan;

#define TSR_PLAN_FORMAT "tessera-plan"
#define TSR_PLAN_VERSION 1

typedef struct tsr_plan_options {
    size_t batch;           /* global mini-batch (samples per optimizer step); default 64 */
    size_t microbatches;    /* pipeline micro-batches per step and replica (0: choose, 4 x
                             * stages, 1 for one stage, at most the batch) */
    int optimizer_slots;    /* extra floats of state per parameter: 0 SGD, 1 momentum, 2 Adam */
    double memory_fraction; /* of each device's global memory the plan may use (default 0.9) */
    double network_gbps;    /* between hosts when the topology has no figure (default 10) */
    size_t max_stages;      /* 0: up to every usable device */
    int replicas;           /* hybrid: data-parallel copies of the pipeline (0/1: one) */
    tsr_precision precision; /* activations' storage and GEMM operands (tsr_trainer_options) */
} tsr_plan_options;

/* Defaults as above. */
void tsr_plan_options_init(tsr_plan_options *o);

typedef struct tsr_plan_stage {
    size_t first, last;           /* layers [first, last) */
    int device;                   /* index into the topology's devices */
    char device_id[64];
    int rank;                     /* cluster rank driving the device (-1: no cluster view) */
    double forward_s, backward_s; /* predicted per micro-batch */
    double send_s;                /* activations to the next stage and their gradients back
                                   * (0 for the last stage) */
    uint64_t memory_bytes;        /* params + grads + optimizer state + in-flight activations */
    uint64_t memory_limit;        /* memory_fraction x the device's global memory */
} tsr_plan_stage;

/* Best placement of `model` on the usable devices of `topo` (see lib/plan/plan.c for the cost model
 * and the search): the number of stages, the order of the devices along the pipeline and the
 * layer split that give the least predicted step time; exact (tsr_plan_optimal) unless many
 * distinct devices exhaust the search's work budget. Candidates: usable devices with a compute
 * rate, one path of a device listed twice (same_as), with a cluster view only devices a rank
 * drives. With replicas > 1 each stage's class of identical devices holds one device per
 * replica; the split minimises the pipeline, the gradient allreduce is added afterwards.
 * `o` may be NULL (defaults). Errors: TSR_ERR_INVALID_ARG naming a bad option,
 * TSR_ERR_NO_DEVICE when no device can be planned on, TSR_ERR_PLAN when no placement fits in
 * memory (the detail names the layer that needs most and the largest device:
 * "layer 2 dense:4096 needs 2.0 MiB (...); the largest usable device, gpu-b, has 921.6 KiB
 * (0.90 of 1.0 MiB)", or says that no split fits). */
tsr_status tsr_plan_create(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                           const tsr_plan_options *o, tsr_plan **out);

/* A fixed placement evaluated with the same cost model (to compare with tsr_plan_create's):
 * stage i holds layers [bounds[i], bounds[i+1]) on topology device devices[i]; bounds has
 * stages + 1 entries, bounds[0] = 0 and bounds[stages] = the layer count, each device once.
 * One replica only (TSR_ERR_UNSUPPORTED otherwise). TSR_ERR_INVALID_ARG naming bad bounds or
 * a device that cannot be planned on, TSR_ERR_PLAN when a stage does not fit in memory (the
 * detail names the stage). */
tsr_status tsr_plan_from_bounds(tsr_context *ctx, const tsr_model *model,
                                const tsr_topology *topo, const tsr_plan_options *o,
                                const size_t *bounds, const int *devices, size_t stages,
                                tsr_plan **out);

void tsr_plan_free(tsr_plan *p); /* accepts NULL */

size_t tsr_plan_stage_count(const tsr_plan *p);
const tsr_plan_stage *tsr_plan_stage_at(const tsr_plan *p, size_t i); /* NULL if out of range */
size_t tsr_plan_microbatches(const tsr_plan *p);
size_t tsr_plan_microbatch_size(const tsr_plan *p); /* samples per micro-batch (last may be less) */
size_t tsr_plan_batch(const tsr_plan *p);
int tsr_plan_replicas(const tsr_plan *p);
double tsr_plan_step_seconds(const tsr_plan *p); /* predicted time of one optimizer step */
double tsr_plan_samples_per_s(const tsr_plan *p);
double tsr_plan_bubble_fraction(const tsr_plan *p); /* (S-1)/(M+S-1) */
size_t tsr_plan_bottleneck(const tsr_plan *p);      /* index of the slowest stage */
/* Gradient allreduce between replicas per step (0 with one replica), included in the step. */
double tsr_plan_allreduce_seconds(const tsr_plan *p);
/* Hybrid plans: topology device and rank of `stage` in `replica` (replica 0 is the stage list);
 * -1 when out of range. */
int tsr_plan_replica_device(const tsr_plan *p, int replica, size_t stage);
int tsr_plan_replica_rank(const tsr_plan *p, int replica, size_t stage);
/* 1 when tsr_plan_create proved the plan optimal for its cost model; 0 for fixed or parsed
 * plans and when the search stopped at its work budget (then it is the best found). */
int tsr_plan_optimal(const tsr_plan *p);

/* Stage table, totals and a one-line picture. */
tsr_status tsr_plan_print(const tsr_plan *p, FILE *f);
/* JSON (cJSON): format, version, model spec, options, stages, predictions. */
tsr_status tsr_plan_write_json(const tsr_plan *p, FILE *f);
/* A plan read back (e.g. tsr-plan --json output), validated against the model: layer ranges
 * must cover [0, layers) without gaps or overlaps, every stage's device must be in the plan's
 * "devices" list (index and id) and run one stage of one replica. Errors: TSR_ERR_PARSE naming
 * the field ("plan stages[1].first: 4, but the previous stage ends at 3 (a gap)"),
 * TSR_ERR_NOT_FOUND for an unknown device, TSR_ERR_MISMATCH when the plan is for another model.
 * Stage figures are taken as written (0 when absent); step, bottleneck and bubble follow from
 * them. */
tsr_status tsr_plan_parse(tsr_context *ctx, const tsr_model *model, const char *text, size_t len,
                          tsr_plan **out);
/* The same, also checking every stage's device against `topo` (the same id, and name when the
 * plan gives one, at its index): TSR_ERR_NOT_FOUND naming the stage otherwise. */
tsr_status tsr_plan_parse_for(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                              const char *text, size_t len, tsr_plan **out);

/* ---- 3D plans of a GPT (lib/plan/plan3d.c) ----
 * Data x tensor x pipeline: tensor-parallel groups of K consecutive devices of one host (they
 * talk every block), pipeline stages of whole blocks (embeddings on the first, ln_f and the
 * head on the last), data-parallel copies of the pipeline. Each group splits the heads (and
 * 4 x head-size MLP units per head) unevenly, in whole heads, by device speed and memory. The
 * plan predicts the step time (compute from the devices' GEMM rates, 2 + 2 allreduces per
 * block in the tensor group, activations between stages, the bubble (P-1)/(M+P-1), the gradient
 * allreduce of each stage's parameters over the data copies) and each device's memory
 * (parameters, gradients, optimizer state (/ data degree with ZeRO), activations of the
 * micro-batches in flight, workspace); layouts that do not fit are refused. */
typedef struct tsr_plan3d tsr_plan3d;

typedef struct tsr_plan3d_options {
    size_t batch;           /* sequences per optimizer step, all copies (default 64) */
    size_t microbatches;    /* per copy and step (0: choose among 1, 2, 4, .. and all) */
    int optimizer_slots;    /* floats of state per parameter (default 2: Adam) */
    int zero;               /* 1: optimizer state divided over the data copies (ZeRO-1) */
    double memory_fraction; /* of each device's memory a layout may use (default 0.9) */
    double network_gbps;    /* GB/s between hosts (default 10) */
    size_t tensor, pipeline, data; /* 0: search that degree; else only that degree */
    size_t runners_up;      /* best layouts of other degrees kept to explain the choice (4) */
    int offload;            /* 1: layouts may also keep the optimizer state on the host and run
                             * its step there (ZeRO-Offload): device memory without the state,
                             * gradients down and parameters up each step, the update at the
                             * host's memory bandwidth; the state must fit memory_fraction of
                             * the host's memory (checked at the cut found, not searched) */
    tsr_precision precision; /* bf16/fp16: blocks' activations in 16 bits
                              * (tsr_gpt_block_activation_bytes) */
} tsr_plan3d_options;

void tsr_plan3d_options_init(tsr_plan3d_options *o);
/* The layout of least predicted step time of a GPT (tsr_model_gpt_blocks) on the usable devices
 * of `topo`. Exact for the cost model over its space (every degree, micro-batch count, block
 * cut and head split; groups taken fastest first). Errors: TSR_ERR_INVALID_ARG naming a bad
 * option or a model that is not a GPT, TSR_ERR_NO_DEVICE, TSR_ERR_PLAN when no layout fits
 * (naming the least memory a device would need). */
tsr_status tsr_plan3d_create(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                             const tsr_plan3d_options *o, tsr_plan3d **out);
void tsr_plan3d_free(tsr_plan3d *p); /* accepts NULL */
size_t tsr_plan3d_tensor(const tsr_plan3d *p);
size_t tsr_plan3d_pipeline(const tsr_plan3d *p);
size_t tsr_plan3d_data(const tsr_plan3d *p);
size_t tsr_plan3d_microbatches(const tsr_plan3d *p);
double tsr_plan3d_step_seconds(const tsr_plan3d *p);
/* Stage cuts the search solved (tests bound the search's cost by this, not by the clock). */
double tsr_plan3d_work(const tsr_plan3d *p);
/* Blocks of stage s; heads of device i (0..K-1) of stage s in copy r (0 when out of range). */
size_t tsr_plan3d_stage_blocks(const tsr_plan3d *p, size_t s);
size_t tsr_plan3d_heads(const tsr_plan3d *p, size_t r, size_t s, size_t i);
/* The table (per device: host, stage, blocks, heads, memory, time), the runners-up and why
 * they lost, the refused layouts. */
tsr_status tsr_plan3d_print(const tsr_plan3d *p, FILE *f);
/* A self-contained SVG: devices by host with their stage and heads, one step's schedule. */
tsr_status tsr_plan3d_write_svg(const tsr_plan3d *p, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
