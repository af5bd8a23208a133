/* A stage: a contiguous range of a model's layers on one backend, with its device memory.
 *
 * Memory (all device buffers of the stage's backend):
 *  - params: ONE buffer with every parameter of the stage;
 *  - grads:  ONE buffer of the same size and layout; both are laid out in REVERSE layer
 *    order (the last layer's weights, then its biases, at offset 0), so the gradient bytes
 *    that are final after a layer's backward form the prefix [0, end) of the buffer: the
 *    data-parallel trainer can start an allreduce on each range as backward proceeds;
 *  - acts:   the stage input and every layer's output at the maximum batch, plus the state
 *    backward needs (im2col columns, pooling indices, dropout masks);
 *  - buffers for activation gradients: two (ping-pong) for a chain, more while a residual's
 *    gradient waits for its second reader (tsr_stage_memory.grad_buffers).
 * Layers may read earlier outputs of the same stage (a residual add), not another stage's.
 * When the stage holds the model's last layer it also runs the loss layer (softmax
 * cross-entropy, mean over the batch). */
#ifndef TSR_STAGE_H
#define TSR_STAGE_H
#include <stddef.h>
#include <stdint.h>
#include "backends/backend.h"
#include "lib/model/layers.h"

typedef struct tsr_stage tsr_stage;

/* Called after layer `layer`'s backward with the range of the gradient buffer that is now
 * final, in floats: [first, first + count) (that layer's parameters; count may be 0 for layers
 * without parameters). */
typedef tsr_status (*tsr_stage_grad_hook)(void *user, size_t layer, size_t first, size_t count);

typedef struct tsr_stage_options {
    size_t first, last;      /* layers [first, last) of the model */
    size_t max_batch;
    int need_input_grad;     /* 1: backward also produces d(loss)/d(input) */
    /* BF16/FP16: the outputs (and attention's probabilities) that the kinds allow
     * (tsr_layer_ops.half_out, half_state) are kept in 16 bits, widened into float32 staging
     * for each call, unless that saves nothing over float32 storage (then float32, as a
     * shallow stage whose largest call dominates); 0 (FP32): every activation in float32. */
    tsr_precision precision;
    /* 0: a language model's loss (T > 1 positions) writes its probabilities over the logits,
     * one [T, V] tensor per sample instead of two (1.65 GB for gpt2 at 8 x 1024 tokens); 1: the
     * logits stay readable after a forward (tsr_stage_output), for a caller that reads them. */
    int keep_logits;
} tsr_stage_options;

tsr_status tsr_stage_create(tsr_backend *be, const tsr_model *model, const tsr_stage_options *o,
                            tsr_stage **out);
void tsr_stage_free(tsr_stage *st); /* accepts NULL */

/* Buffers and their element offsets. */
tsr_buf *tsr_stage_params(tsr_stage *st);
tsr_buf *tsr_stage_grads(tsr_stage *st);
/* The stage's parameter or gradient buffer. */
typedef enum tsr_stage_buffer { TSR_STAGE_PARAMS, TSR_STAGE_GRADS } tsr_stage_buffer;
/* Puts `in` (same backend, at least as large) in the place of the stage's parameter or gradient
 * buffer and copies the contents into it; *old receives the buffer it replaces, now the
 * caller's. Data parallelism moves both into registered memory this way (tsr_buf_wrap) and
 * back before it frees that memory. */
tsr_status tsr_stage_exchange_buffer(tsr_stage *st, tsr_stage_buffer which, tsr_buf *in,
                                     tsr_buf **old);
size_t tsr_stage_param_count(const tsr_stage *st);
/* A stage holding a head tied to an embedding on an earlier stage keeps a copy of the table
 * after its own parameters (params/grads [offset, offset + count)); pipelines keep the two
 * equal by adding the gradients of both before each update (Megatron-LM's embedding group).
 * 1 and *out filled when the stage has one. The stage's own parameters are then
 * tsr_stage_param_count - count. */
typedef struct tsr_stage_tied {
    size_t layer;          /* the embed layer (on an earlier stage) */
    size_t offset, count;  /* the copy in this stage's params and grads */
} tsr_stage_tied;
int tsr_stage_tied_copy(const tsr_stage *st, tsr_stage_tied *out);
/* Parameter tensor `index` of the stage (its layers' tensors in model order, then a tied copy):
 * its element offset in params/grads, its floats and its rank (2 for a matrix, 1 for a bias or
 * a layer norm's gain). 0 past the last tensor. */
int tsr_stage_tensor(const tsr_stage *st, size_t index, size_t *offset, size_t *count, size_t *rank);
/* Element offsets of layer `layer`'s weights and biases in params/grads (0 counts for
 * layers without parameters). Weights: dense [units][inputs], conv [filters][c][kh][kw]. */
tsr_status tsr_stage_layer_params(const tsr_stage *st, size_t layer, size_t *w_off, size_t *w_count,
                                  size_t *b_off, size_t *b_count);
/* Where to write the stage input (batch x input features, float) before forward. */
tsr_ref tsr_stage_input(tsr_stage *st);
/* Output of the last layer of the stage (logits on the last stage). */
tsr_ref tsr_stage_output(tsr_stage *st);
/* Gradient of the input after backward (only with need_input_grad). */
tsr_ref tsr_stage_input_grad(tsr_stage *st);
/* Where a non-final stage receives d(loss)/d(output) before backward. */
tsr_ref tsr_stage_output_grad(tsr_stage *st);
/* Last stage: labels (int32, batch x tsr_model_positions) go here before forward with the loss. */
tsr_ref tsr_stage_labels(tsr_stage *st);
/* Last stage: softmax probabilities (batch x positions x classes) after forward. */
tsr_ref tsr_stage_probs(tsr_stage *st);

void tsr_stage_set_hook(tsr_stage *st, tsr_stage_grad_hook hook, void *user);
/* The tensor-parallel group the model's tpcopy/tpreduce layers sum over (NULL: none, one
 * rank). The caller keeps it alive while the stage runs. */
void tsr_stage_set_tp(tsr_stage *st, tsr_comm *tp);
/* Last stage: backward scales each sample's loss gradient by `scale` instead of 1/n (0 restores
 * 1/n). A pipeline sets 1/(whole batch) so that micro-batch gradients sum to the gradient of
 * the mean loss over the batch, with the same per-sample arithmetic as one big batch. */
void tsr_stage_set_loss_scale(tsr_stage *st, float scale);
/* fp16 loss scaling: the backward multiplies the loss gradient by *scale, read at each
 * backward (the run's scaler owns it; NULL: no scaling). */
void tsr_stage_set_grad_scale(tsr_stage *st, const float *scale);
/* Pipelines: tsr_stage_set_slots gives the stage `slots` activation sets (input, every layer's
 * output and backward state, labels, probabilities; one at creation), one per micro-batch in
 * flight; parameters, gradients and the gradient ping-pong buffers are shared. Forward,
 * backward and the input/output/labels/probs accessors work on the selected set (slot 0 at
 * first); each set remembers the training forward it holds. */
tsr_status tsr_stage_set_slots(tsr_stage *st, size_t slots);
tsr_status tsr_stage_select(tsr_stage *st, size_t slot);
/* Device bytes of one activation set. */
size_t tsr_stage_act_bytes(const tsr_stage *st);

/* The stage's device memory, planned once from the layer kinds' tables: tsr_stage_create
 * allocates exactly this (one activation set), and the planner reads it. */
typedef struct tsr_stage_memory {
    size_t param_bytes;        /* the params buffer; grads the same */
    size_t act_set_bytes;      /* one activation set (input, outputs, kept state, workspace,
                                * labels/probabilities/losses on the last stage) */
    size_t grad_buffers, grad_buffer_bytes; /* activation-gradient buffers */
    size_t total_bytes;        /* 2 x param_bytes + act_set_bytes + the gradient buffers
                                * + staging_bytes */
    size_t round_bytes;        /* bf16/fp16 modes add this: a bound on the backend's rounded
                                * copy of one GEMM's operands (backend_precision.c) */
    size_t staging_bytes;      /* bf16/fp16: the float32 copies of one layer's 16-bit tensors
                                * (in total_bytes) */
} tsr_stage_memory;
/* The plan of a stage with options `o`, without allocating device memory (errors as
 * tsr_stage_create's). */
tsr_status tsr_stage_plan_memory(tsr_context *ctx, const tsr_model *model, const tsr_stage_options *o,
                                 tsr_stage_memory *out);
/* Device bytes the stage holds now: every buffer it allocated, all activation sets. */
size_t tsr_stage_device_bytes(const tsr_stage *st);

/* Forward on the first n samples of the input. train = 1 applies dropout with masks from
 * dropout_seed (each layer mixes in its index). On the last stage also computes the
 * per-sample losses; *loss (may be NULL) receives their mean, which synchronises. */
tsr_status tsr_stage_forward(tsr_stage *st, size_t n, int train, uint64_t dropout_seed, float *loss);
/* Backward for the same n. accumulate = 0 overwrites the gradient buffer, 1 adds to it. */
tsr_status tsr_stage_backward(tsr_stage *st, size_t n, int accumulate);

/* Evaluation on a stage that holds the whole model: forwards samples [first, first + count)
 * of d in chunks of at most the stage's max batch (no dropout), adds the correct predictions
 * to *correct and the summed loss to *loss_sum. probs: host scratch of max_batch x classes
 * floats. Checks the data set's shape and labels first (TSR_ERR_SHAPE / INVALID_ARG). */
tsr_status tsr_stage_evaluate(tsr_stage *st, const tsr_dataset *d, size_t first, size_t count,
                              float *probs, size_t *correct, double *loss_sum);
/* The scoring of one evaluated chunk, shared with the pipeline's last stage: adds the rows
 * (labels: samples x positions) whose most probable class (the first of equal ones) is their
 * label to *correct (rows labelled -1 are not scored), and the chunk's mean loss times rows to
 * *loss_sum. probs: rows x classes on the host. */
void tsr_stage_score(const float *probs, size_t rows, size_t classes, const int32_t *labels, float loss,
                     size_t *correct, double *loss_sum);
/* The same for the last forward of n samples on the last stage (loss: its mean): reads the
 * probabilities into probs (n x positions x classes floats) and scores them, or, after a
 * vocabulary-parallel loss (whose probabilities are its slice's), reads the rows it marked as
 * hits (the group's most probable token is the label). */
tsr_status tsr_stage_score_last(tsr_stage *st, size_t n, const int32_t *labels, float loss, float *probs,
                                size_t *correct, double *loss_sum);
/* Checks samples [first, first + count) of d against the model (kind, features, labels, token
 * ids); errors name the sample and the bound. */
tsr_status tsr_stage_check_dataset(tsr_context *ctx, const tsr_model *model, const tsr_dataset *d,
                                   size_t first, size_t count);
/* Writes samples [first, first + n) of d (images or token ids) into the stage's input, and
 * their labels when the stage is the last. */
tsr_status tsr_stage_upload_samples(tsr_stage *st, const tsr_dataset *d, size_t first, size_t n);

/* Seed of layer `layer`'s dropout masks for a forward given `dropout_seed`. */
uint64_t tsr_stage_dropout_seed(uint64_t dropout_seed, size_t layer);

/* Parameter initialisation on the host, identical on every backend: He (Kaiming) uniform
 * U(-sqrt(6/fan_in), +sqrt(6/fan_in)) or Glorot uniform U(+-sqrt(6/(fan_in+fan_out))) for
 * weights, zero biases; draws come from xoshiro256** seeded with `seed`, layer by layer in
 * model order. Writes the stage's parameters. */
tsr_status tsr_stage_init_params(tsr_stage *st, int glorot, uint64_t seed);
/* The same values for a whole model into host memory: out[tsr_model_param_count] in the flat
 * layout (what a stage of the whole model would hold after tsr_stage_init_params). */
tsr_status tsr_model_init_host(const tsr_model *model, int glorot, uint64_t seed, float *out);

/* xoshiro256** (Blackman & Vigna), used for initialisation and per-step seeds. */
typedef struct tsr_rng {
    uint64_t s[4];
} tsr_rng;
void tsr_rng_seed(tsr_rng *r, uint64_t seed);
uint64_t tsr_rng_next(tsr_rng *r);
/* Uniform in [0, 1) with 53 bits. */
double tsr_rng_uniform(tsr_rng *r);

#endif
