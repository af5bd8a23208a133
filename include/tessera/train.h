/* Training: optimizers, learning-rate schedules, and the (single-device) trainer. */
#ifndef TESSERA_TRAIN_H
#define TESSERA_TRAIN_H
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include "comm.h"
#include "context.h"
#include "data.h"
#include "model.h"
#include "precision.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tsr_optimizer_kind {
    TSR_OPTIM_SGD = 0,   /* SGD with (optionally Nesterov) momentum, L2 weight decay */
    TSR_OPTIM_ADAM = 1,  /* Adam, weight decay added to the gradient (L2) */
    TSR_OPTIM_ADAMW = 2  /* Adam with decoupled weight decay */
} tsr_optimizer_kind;

typedef struct tsr_optimizer_options {
    tsr_optimizer_kind kind;
    float lr;            /* base learning rate */
    float momentum;      /* SGD */
    int nesterov;        /* SGD */
    float beta1, beta2, eps; /* Adam */
    float weight_decay;
} tsr_optimizer_options;

typedef enum tsr_schedule_kind {
    TSR_SCHEDULE_CONSTANT = 0,
    TSR_SCHEDULE_STEP = 1,   /* lr * gamma^floor(t / step_size) */
    TSR_SCHEDULE_COSINE = 2  /* min_lr + (lr - min_lr) * (1 + cos(pi * t / total)) / 2 */
} tsr_schedule_kind;

/* t counts optimizer steps after the warm-up; during warm-up (step < warmup_steps) the rate
 * rises linearly: lr * (step + 1) / warmup_steps. */
typedef struct tsr_schedule_options {
    tsr_schedule_kind kind;
    uint64_t warmup_steps;
    uint64_t step_size;      /* STEP */
    float gamma;             /* STEP */
    uint64_t total_steps;    /* COSINE: steps after warm-up to reach min_lr (then stays) */
    float min_lr;            /* COSINE */
} tsr_schedule_options;

/* Learning rate at optimizer step `step` (0-based). */
float tsr_schedule_lr(const tsr_schedule_options *s, float base_lr, uint64_t step);
/* "sgd", "adam", "adamw" -> kind; "constant", "step", "cosine" -> kind. TSR_ERR_PARSE else. */
tsr_status tsr_optimizer_kind_parse(const char *name, tsr_optimizer_kind *out);
const char *tsr_optimizer_kind_name(tsr_optimizer_kind kind);
tsr_status tsr_schedule_kind_parse(const char *name, tsr_schedule_kind *out);

typedef enum tsr_init_kind {
    TSR_INIT_HE_UNIFORM = 0,     /* U(+-sqrt(6/fan_in)), zero biases */
    TSR_INIT_GLOROT_UNIFORM = 1  /* U(+-sqrt(6/(fan_in+fan_out))), zero biases */
} tsr_init_kind;

/* How ranks share the work. */
typedef enum tsr_train_mode {
    TSR_MODE_DATA = 0,      /* replicated model, gradients averaged by allreduce */
    TSR_MODE_PIPELINE = 1,  /* one stage of consecutive layers per rank, micro-batches */
    TSR_MODE_HYBRID = 2,    /* replicas x pipeline stages; a stage's gradients averaged */
    TSR_MODE_ASYNC = 3,     /* parameter servers and workers, stale-synchronous bound */
    TSR_MODE_GOSSIP = 4     /* replicas mixed with graph neighbours (D-PSGD) */
} tsr_train_mode;

/* Gradient compression for data parallelism. */
typedef enum tsr_compress_kind {
    TSR_COMPRESS_NONE = 0,
    TSR_COMPRESS_FP16 = 1,  /* fp16 on the wire (TSR_WIRE_F16) */
    TSR_COMPRESS_TOPK = 2   /* top-k per bucket with error feedback (Deep Gradient Compression):
                               the k largest |g + residual| travel as index/value pairs
                               (allgather), the rest stays in a local residual */
} tsr_compress_kind;

/* "data" "pipeline" "hybrid" "async" "gossip" / "none" "fp16" "topk"; TSR_ERR_PARSE else. */
tsr_status tsr_train_mode_parse(const char *name, tsr_train_mode *out);
tsr_status tsr_compress_kind_parse(const char *name, tsr_compress_kind *out);

/* Pipeline schedule (modes PIPELINE and HYBRID). */
typedef enum tsr_pipeline_schedule {
    TSR_PIPELINE_GPIPE = 0,  /* every micro-batch forward, then every backward */
    TSR_PIPELINE_1F1B = 1    /* one forward, one backward once the pipe is full (PipeDream-Flush):
                                fewer activation sets in flight, the same result */
} tsr_pipeline_schedule;

/* Gossip mixing graph (mode GOSSIP). */
typedef enum tsr_gossip_graph {
    TSR_GOSSIP_RING = 0,        /* neighbours i +- 1, weights 1/3 */
    TSR_GOSSIP_EXPONENTIAL = 1  /* one peer per step: i + 2^(t mod log2 n), weights 1/2 */
} tsr_gossip_graph;

/* "gpipe" "1f1b" / "ring" "exp" "exponential"; TSR_ERR_PARSE else (TSR_ERR_INVALID_ARG for
 * NULL). tsr_gossip_graph_name: "ring", "exponential", "?" for another value. */
tsr_status tsr_pipeline_schedule_parse(const char *name, tsr_pipeline_schedule *out);
tsr_status tsr_gossip_graph_parse(const char *name, tsr_gossip_graph *out);
const char *tsr_gossip_graph_name(tsr_gossip_graph graph);

typedef enum tsr_nonfinite_policy {
    TSR_NONFINITE_STOP = 0,
    TSR_NONFINITE_SKIP = 1
} tsr_nonfinite_policy;

typedef struct tsr_trainer_options {
    const char *device;      /* context device id ("host", "opencl:0:0") or index as text;
                                NULL: device 0 */
    size_t batch;            /* largest batch a step takes */
    tsr_optimizer_options optimizer;
    tsr_schedule_options schedule;
    uint64_t seed;           /* initialisation, dropout masks */
    tsr_init_kind init;
    /* Non-finite loss or gradients (data parallel: the averaged gradients, so every rank
     * decides alike; a NaN input can leave the loss finite, relu drops it, yet poison the
     * weights): STOP fails the step with TSR_ERR_NUMERIC, SKIP leaves the parameters
     * untouched, counts the step in tsr_trainer_skipped and returns TSR_OK.
     * Every mode applies the same rule (gossip decides per rank, an async server per pushed
     * gradient). tsr_trainer_options_from_env maps TSR_NONFINITE=skip|stop to the policy
     * (clearing no_grad_check); the trainer reads no environment.
     * no_grad_check = 1 saves the gradient check's device-to-host read per step (the loss is
     * still checked). */
    tsr_nonfinite_policy nonfinite;
    int no_grad_check;
    /* Data parallelism. comm NULL (or one rank): a single process. With comm, every rank
     * calls step with its own local batch (sizes may differ: gradients are weighted by sample
     * count, so the update is the gradient of the global batch), all ranks in step. Parameters
     * start identical (same seed) and stay bitwise identical. */
    tsr_comm *comm;
    tsr_train_mode mode;
    /* Fields with a TSR_* name in brackets: tsr_trainer_options_from_env (lib/core/config.c)
     * sets them from that variable; the trainer itself reads no environment. */
    size_t fusion_bytes;         /* gradient bucket size; 0: 4 MiB (TSR_FUSION_BYTES) */
    tsr_allreduce_algo algo;     /* AUTO: the communicator's choice */
    tsr_compress_kind compress;  /* none (TSR_COMPRESS=none|fp16|topk) */
    double topk_ratio;           /* TOPK: fraction of each bucket sent; 0: 0.01 */
    /* ZeRO-1 (Rajbhandari et al.): gradients are reduce-scattered, each rank updates only its
     * slice of the parameters with optimizer state for that slice (1/ranks of the memory),
     * then the parameters are allgathered. Same result as without (up to the reduction
     * order); one reduce-scatter after backward instead of overlapping buckets. 1: on,
     * 0 or -1: off (from the environment: TSR_ZERO=1). tsr_trainer_save is then collective. */
    int shard_optimizer;
    /* Pipeline (mode PIPELINE, lib/train/pipeline.h): stage s = layers [stage_bounds[s],
     * stage_bounds[s+1]) on rank s of comm, one stage per rank (no comm: one stage); every
     * rank steps with the same (global) batch. */
    const size_t *stage_bounds;  /* ranks + 1 entries; NULL: layers split evenly */
    size_t microbatches;         /* per step; 0: 1 */
    tsr_pipeline_schedule pipeline_schedule; /* GPipe or 1F1B (the default of tsr-train) */
    int recompute;               /* 1: keep stage inputs only, re-run forwards for backward */
    /* Hybrid (mode HYBRID, lib/train/hybrid.h): `replicas` copies of a pipeline of
     * stages = ranks / replicas stages (stage_bounds has stages + 1 entries, the pipeline
     * options above apply to each copy); rank r * stages + s runs stage s of replica r. Every
     * rank of replica r steps with replica r's batch (batch: the largest), the stages'
     * gradients are averaged over the replicas, the loss is the global batch's. */
    size_t replicas;             /* 0: 1 */
    /* Asynchronous SGD with a parameter server (mode ASYNC, lib/train/async.h): ranks
     * [0, async_servers) hold the parameters sharded and apply each pushed gradient, the rest
     * are workers; a worker may start step t + s + 1 only once every live worker pushed step t
     * (SSP bound s = async_staleness: 0 synchronous rounds, INT_MAX unbounded). */
    int async_servers;           /* 0: 1 */
    int async_staleness;         /* >= 0; INT_MAX: no bound */
    int async_staleness_lr;      /* 1: lr / max(1, updates since the worker's pull) */
    /* Gossip (mode GOSSIP, lib/train/gossip.h; D-PSGD): every rank trains its own replica on its own
     * batches and averages parameters with its graph neighbours after each step (point to point,
     * overlapped with the next step; no allreduce). Evaluation and checkpoints use the average
     * of the replicas (collective); get_params gives this rank's replica. */
    tsr_gossip_graph gossip_graph; /* ring (default) or exponential */
    size_t gossip_period;        /* mix every K steps; 0: 1 */
    int gossip_eval_local;       /* 1: evaluate this rank's replica instead of the average */
    /* Knobs that also have a TSR_* environment variable: the configuration layer reads the
     * environment once into these fields (tsr_trainer_options_from_env); nothing below it
     * reads the environment. */
    const char *timeline;        /* Chrome/Perfetto trace file (TSR_TIMELINE); NULL: none */
    int even_shares;             /* data mode: 1 splits the global batch evenly instead of by
                                    measured throughput (TSR_DP_BALANCE=0) */
    int64_t fault_grad_nan_step; /* tests: poison one gradient at this optimizer step
                                    (TSR_FAULT_GRAD_NAN); -1: never */
    /* Stop request (preemption): a flag the application sets, typically from a SIGTERM
     * handler (a sig_atomic_t store is async-signal-safe); the library only reads it, once per
     * step. Every rank's request goes into the step's existing agreement (data and ZeRO: the
     * allreduce of sample counts and losses; pipeline and hybrid: the loss/non-finite
     * allreduce; gossip, which has none: one allreduce of the flag per step, only when set),
     * so all ranks see it at the same step: that step is completed, then tsr_trainer_step
     * returns TSR_ERR_INTERRUPTED on every rank (the step counted, *loss set), and the caller
     * saves as usual. Async mode (its workers step independently) has no common step: a
     * request travels in the messages instead (a worker's pull or push, a server's answer), the
     * servers answer every later pull TSR_ERR_INTERRUPTED and end their step with it (counted),
     * so every rank's step or evaluation returns it and the collective save follows; the workers
     * may have pushed different numbers of steps, so its resume is not bitwise. NULL: none. */
    const volatile sig_atomic_t *stop_flag;
    /* Tensor parallelism (a GPT; lib/model/gpt_tp.c), data, pipeline and hybrid modes: the
     * trainer's model is this rank's share of tp_whole (tsr_model_create_gpt_tp: tp_heads heads
     * from tp_head0) and tp_comm the group its tpcopy/tpreduce layers sum over; comm, if any,
     * holds the ranks of the same tensor-parallel index: the data-parallel group, or the
     * pipeline (hybrid: replicas x stages) whose stages are cut from the share, activations
     * passing between matching ranks of the groups. Initial parameters are tp_whole's,
     * and parameters, gradients (tsr_trainer_get_*) and checkpoints are the whole model's:
     * one unsharded file, whatever the layout. NULL tp_comm: none. */
    tsr_comm *tp_comm;
    const tsr_model *tp_whole;
    size_t tp_head0, tp_heads;
    /* Mixed precision (tessera/precision.h): BF16/FP16 round every GEMM's inputs (dense,
     * linear, conv2d, the LM head, attention's q, k, v and dout) to 16 bits, products
     * accumulated in float32; parameters (master weights), optimizer and checkpoints stay
     * float32. FP16 also scales the loss dynamically (PyTorch GradScaler: 65536 at first,
     * halved with the step skipped when a gradient overflows, doubled after 2000 clean steps;
     * the scale is kept in checkpoints); not in gossip and async modes. FP32: the default. */
    tsr_precision precision;
    /* Gradient clipping by the global norm (PyTorch's clip_grad_norm_): before each update the
     * gradient is multiplied by clip_grad_norm / (norm + 1e-6) when that is below 1. The norm
     * is the whole model's gradient's, as the update uses it (data: after the averaging; ZeRO,
     * pipeline, hybrid and tensor parallelism: partial sums of squares, in double, over the
     * ranks), so every rank clips alike; async and gossip clip each rank's own gradient.
     * tsr_trainer_get_grads then gives the clipped gradient. 0: off (default). */
    double clip_grad_norm;
    /* 1: the optimizer's weight decay on matrices only (tensors of 2+ dimensions), not on biases
     * or layer-norm gains and shifts (nanoGPT's and PyTorch users' convention); 0: every tensor
     * (default). */
    int decay_matrices_only;
} tsr_trainer_options;

/* Defaults: device 0, batch 64, Adam lr 1e-3 (betas 0.9/0.999, eps 1e-8), no weight decay,
 * constant schedule, seed 1, He-uniform initialisation; no communicator, mode data, 4 MiB
 * buckets, no compression, no timeline, no fault injection. */
void tsr_trainer_options_init(tsr_trainer_options *o);

typedef struct tsr_trainer tsr_trainer;

/* The model must outlive the trainer. Parameters are initialised from options->seed. */
tsr_status tsr_trainer_create(tsr_context *ctx, const tsr_model *model,
                              const tsr_trainer_options *options, tsr_trainer **out);
void tsr_trainer_free(tsr_trainer *t); /* accepts NULL */

/* One optimizer step on n (1..batch) samples: images n x features (float, host), labels in
 * [0, classes). *loss (may be NULL) receives the mean cross-entropy before the update. */
tsr_status tsr_trainer_step(tsr_trainer *t, const float *images, const int32_t *labels, size_t n,
                            float *loss);
/* The same for a language model over T token ids (tsr_model_positions = T): n x T input ids
 * in [0, vocab) and n x T targets (the next token at each position; tsr_tokens_sampler_next
 * writes both). *loss: the mean cross-entropy over the n x T positions. */
tsr_status tsr_trainer_step_tokens(tsr_trainer *t, const int32_t *ids, const int32_t *targets, size_t n,
                                   float *loss);
/* Accuracy and mean loss over a whole data set (no dropout): per label, so a token set
 * (tsr_dataset_from_tokens) gives next-token accuracy and the mean loss over its scored
 * positions. Either output may be NULL.
 * Data mode with several ranks: collective; every rank passes the same data set, evaluates
 * 1/N of it, and all get the same figures. */
tsr_status tsr_trainer_evaluate(tsr_trainer *t, const tsr_dataset *d, double *accuracy, double *loss);

/* Checkpoints hold the parameters, optimizer state, step, epoch, seed and RNG state. Load
 * refuses a checkpoint of another model spec, optimizer or tensor size (TSR_ERR_MISMATCH).
 * With a communicator only rank 0 writes (the other ranks' calls return TSR_OK); with a
 * sharded optimizer (shard_optimizer) save is collective: every rank must call it, and rank 0
 * writes the whole state. The file is the same either way, and any trainer loads it. */
tsr_status tsr_trainer_save(tsr_trainer *t, const char *path);
tsr_status tsr_trainer_load(tsr_trainer *t, const char *path);

/* Run metadata, a JSON object of at most 64 KiB that checkpoints carry: tsr-train stores the
 * input normalisation ("input_mean", "input_std") and the last epoch's figures ("train_loss",
 * "test_loss", "test_accuracy"), so a resumed run that has nothing left to do still reports
 * them. tsr_trainer_save writes it, tsr_trainer_load replaces it with the checkpoint's (NULL
 * when the file has none). A text that is not a JSON object: TSR_ERR_INVALID_ARG. Every mode:
 * the rank that writes the checkpoint writes its own copy. */
tsr_status tsr_trainer_set_metadata(tsr_trainer *t, const char *json_object);
const char *tsr_trainer_metadata(const tsr_trainer *t); /* NULL if none */

uint64_t tsr_trainer_steps(const tsr_trainer *t);   /* optimizer steps taken */
uint64_t tsr_trainer_skipped(const tsr_trainer *t); /* steps skipped for non-finite values */
/* Samples the last step covered on every rank where the mode counts them as they come: an async
 * server, the batches its workers pushed since its previous step (a lost worker's no longer);
 * 0 in the other modes, whose steps cover tsr_data_split.step_samples. */
uint64_t tsr_trainer_step_samples(const tsr_trainer *t);
float tsr_trainer_loss_scale(const tsr_trainer *t);  /* fp16: the next step's loss scale; else 1 */
uint64_t tsr_trainer_epoch(const tsr_trainer *t);   /* completed epochs, as set by the caller */
void tsr_trainer_set_epoch(tsr_trainer *t, uint64_t epoch);
uint64_t tsr_trainer_seed(const tsr_trainer *t);    /* after a load: the checkpoint's seed */
float tsr_trainer_lr(const tsr_trainer *t);         /* rate the next step will use */
/* The last applied step's gradient norm before clipping (with clip_grad_norm > 0; 0 without,
 * and before the first step). */
double tsr_trainer_grad_norm(const tsr_trainer *t);
const tsr_device_info *tsr_trainer_device(const tsr_trainer *t);
/* Data parallelism: samples/s of a timed forward+backward (no update) of n samples, after one
 * warm-up; the trainer's state is unchanged. */
tsr_status tsr_trainer_measure(tsr_trainer *t, const float *images, const int32_t *labels, size_t n,
                               double *samples_per_s);
/* Splits a global batch across the ranks of comm in proportion to each rank's rate (>0):
 * shares[0..size) (same on every rank), each >= 1, summing to global_batch (>= size).
 * Collective. */
tsr_status tsr_dp_shares(tsr_comm *comm, size_t global_batch, double rate, size_t *shares);
/* Both steps at once, as tsr-train does: measures this rank's throughput on `probe` samples
 * (tsr_trainer_measure), gives ranks that drive identical devices (same backend, name, driver,
 * compute units and host threads) the mean of their rates, so timing noise never splits a
 * homogeneous cluster unevenly, then tsr_dp_shares. Collective; one rank (or no
 * communicator): shares[0] = global_batch. With options->even_shares the shares are even and
 * nothing is measured. */
tsr_status tsr_trainer_balance(tsr_trainer *t, size_t global_batch, const float *images,
                               const int32_t *labels, size_t probe, size_t *shares);
/* How a mode splits the training data over the ranks, so that an application need not know. */
typedef struct tsr_data_split {
    tsr_loader_options loader; /* this rank's loader (batch, shard, drop_last; seed as given) */
    size_t step_batch;         /* options->batch to create the trainer with: the most samples
                                  one step of this rank takes */
    size_t step_samples;       /* samples of the whole run one step covers; 0: the n this rank's
                                  step got (one process, pipeline) */
} tsr_data_split;

/* The split of a global batch of global_batch samples, shuffled from `seed`, for the mode,
 * communicator and mode options of `o` (call it before tsr_trainer_create: the loader's batch
 * count sets the schedule): data and gossip: an equal slice per rank (data: drop_last with a
 * communicator); pipeline: every rank the same batches; hybrid: replica r reads shard r of R,
 * its steps take global_batch / R; async: the workers split it, a server reads as worker 0.
 * shares[ranks of o->comm] receives each rank's samples per step (data mode with a
 * communicator: even shares, collective; tsr_trainer_balance measures better ones; async
 * servers 0). A global batch smaller than the ranks that need a sample each:
 * TSR_ERR_INVALID_ARG naming both. */
tsr_status tsr_trainer_data_split(tsr_context *ctx, const tsr_trainer_options *o, size_t global_batch,
                                  uint64_t seed, tsr_data_split *split, size_t *shares);
/* Mean loss of the last step over the global batch (data mode; the local loss otherwise, gossip
 * included). */
float tsr_trainer_global_loss(const tsr_trainer *t);
/* Gradient buckets of the last step (data mode with more than one rank; 0 otherwise). */
size_t tsr_trainer_buckets(const tsr_trainer *t);

/* Copies all parameters (tsr_model_param_count floats) to or from the host. */
tsr_status tsr_trainer_get_params(tsr_trainer *t, float *dst, size_t count);
tsr_status tsr_trainer_set_params(tsr_trainer *t, const float *src, size_t count);
/* The gradients of the last step (of the mean loss over its batch, before the update; a skipped
 * step's too), in the parameters' flat layout (tsr_model_param_tensor's offsets). Local, never
 * collective. Data mode: count = tsr_model_param_count, the gradient averaged over the ranks
 * (TSR_ERR_UNSUPPORTED with shard_optimizer: a rank averages only its slice). Pipeline and
 * hybrid: this rank's stage only, count = its parameters: the slice of the flat layout that
 * holds its layers' tensors (the first stage's at offset 0, then the next stage's), averaged
 * over the replicas in hybrid mode. Gossip: this replica's own gradient (mixing averages the
 * parameters). Async: a worker's last pushed gradient (TSR_ERR_UNSUPPORTED on a server).
 * TSR_ERR_STATE before any step computed gradients; TSR_ERR_SHAPE for another count. */
tsr_status tsr_trainer_get_grads(tsr_trainer *t, float *dst, size_t count);

#ifdef __cplusplus
}
#endif
#endif
