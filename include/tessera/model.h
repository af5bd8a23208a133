/* Models: a stack of layers over an input (an image, any float tensor of rank 1 to 3, or int32
 * token ids: tsr_model_input_desc), followed by a softmax cross-entropy loss (per sample, or
 * per position for a language model whose last output is [T, classes]).
 * Each layer reads the previous layer's output; a residual add also reads an earlier one.
 * Built from a spec string or with the builder calls.
 *
 * Spec syntax: comma-separated layers, whitespace ignored. Layers are numbered from 0 in
 * order (the index tsr_model_summary prints).
 *   dense:N                 fully connected, N units (flattens its input)
 *   convKxK:F / convK:F     2-D convolution, F filters, K x K kernel (or convKHxKW:F);
 *                           options /sS (stride, default 1), /pP (padding, default "same" =
 *                           (K-1)/2), /same, /valid (= /p0):  conv3x3:64/s2/p1
 *   poolK / maxpoolK        max pooling, K x K window; /sS stride (default K): pool3/s2
 *   relu, flatten, dropout:P (0 <= P < 1)
 *   gelu                    GELU, tanh form (GPT-2's)
 *   embed:D                 token embedding: each int32 id of the model input becomes a row
 *                           of D floats ("weight" [vocab][D]); output [ids, D] (ids x D x 1)
 * Token-wise kinds see a sample [T, C] (T x C x 1) as T rows of C (a vector is one row):
 *   layernorm               layer norm over the last dimension ("weight" ones, "bias" zeros)
 *   linear:N[/stdS]         y = x W + b per row, "weight" [C][N] (Hugging Face's Conv1D layout)
 *   attention:H             causal multi-head self-attention core: rows q | k | v of 3C -> C
 *   posembed:P              adds row t of "weight" [P][C] to row t (T <= P)
 *   lmhead:E                logits [T, vocab] = x times layer E's embedding table, transposed
 *   add:N / add:in          residual: the previous output plus the output of layer N (an
 *                           earlier layer) or of the model input, of the same shape:
 *                           "dense:64,relu,dense:64,add:1,relu,dense:10" adds layer 1's
 *                           output (the relu) to layer 2's (the second dense)
 * Presets: "mlp" = dense:256,relu,dense:128,relu,dense:100,relu,dense:10
 *          "cnn" = conv5x5:32,relu,pool2,conv5x5:64,relu,pool2,dense:1024,relu,dense:10
 *          (the 2-conv model of Fashion-MNIST's benchmark/convnet.py). */
#ifndef TESSERA_MODEL_H
#define TESSERA_MODEL_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "context.h"
#include "precision.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_model tsr_model;

/* What the model sees: one image of channels x height x width, and the class count the
 * last layer must produce. */
typedef struct tsr_model_input {
    size_t channels, height, width;
    size_t classes;
} tsr_model_input;

#define TSR_MODEL_INPUT_MNIST ((tsr_model_input){1, 28, 28, 10})

/* Element types of a model input. */
typedef enum tsr_dtype {
    TSR_DTYPE_F32 = 0,  /* float */
    TSR_DTYPE_I32       /* int32 token ids in [0, vocab) */
} tsr_dtype;

/* The general input: one sample is a tensor of rank 1 to 3 (row-major dims: [N] vectors,
 * [T] token sequences, [A, B] matrices, [C, H, W] images) of floats or int32 token ids. Layers
 * see rank 1 as N x 1 x 1 and rank 2 as A x B x 1 (tsr_layer_info, tsr_model_get_input).
 * Only kinds made for token ids take them as input; every other layer needs floats. */
typedef struct tsr_model_input_desc {
    tsr_dtype dtype;
    size_t rank, dims[3];
    size_t vocab;              /* TSR_DTYPE_I32: ids are in [0, vocab), 1 <= vocab <= 2^31 */
    size_t classes;
} tsr_model_input_desc;

typedef enum tsr_layer_kind {
    TSR_LAYER_DENSE = 0,
    TSR_LAYER_CONV2D,
    TSR_LAYER_MAXPOOL,
    TSR_LAYER_RELU,
    TSR_LAYER_DROPOUT,
    TSR_LAYER_FLATTEN,
    TSR_LAYER_ADD,          /* residual sum of two outputs */
    TSR_LAYER_SOFTMAX_XENT, /* the loss every model ends with (not a spec layer) */
    TSR_LAYER_EMBED,        /* token embedding */
    TSR_LAYER_GELU,         /* GELU, tanh form */
    TSR_LAYER_LAYERNORM,    /* layer norm over the last dimension */
    TSR_LAYER_LINEAR,       /* per-row linear map over the last dimension */
    TSR_LAYER_ATTENTION,    /* causal multi-head self-attention core */
    TSR_LAYER_POSEMBED,     /* learned position embedding, added */
    TSR_LAYER_LMHEAD,       /* language-model head tied to a token embedding */
    TSR_LAYER_TPCOPY,       /* tensor parallelism: identity, gradient summed over the group */
    TSR_LAYER_TPREDUCE,     /* tensor parallelism: sum over the group plus a bias */
    TSR_LAYER_VPEMBED,      /* tensor parallelism: a slice of the token embedding's rows */
    TSR_LAYER_VPXENT        /* tensor parallelism: the loss over the slices' logits */
} tsr_layer_kind;

/* tsr_model_add_residual's `from` naming the model input rather than a layer. */
#define TSR_MODEL_INPUT_TENSOR ((size_t)-1)

/* Padding value meaning "same": (kernel-1)/2 on each side. */
#define TSR_PAD_SAME ((size_t)-1)

/* Everything a planner needs to know about one layer. */
typedef struct tsr_layer_info {
    tsr_layer_kind kind;
    const char *type;          /* "dense", "conv2d", "maxpool", "relu", "dropout", "flatten", "add" */
    char spec[64];             /* canonical spec token: "conv5x5:32", "pool3/s2" */
    size_t in_c, in_h, in_w;   /* input shape of one sample */
    size_t out_c, out_h, out_w;
    size_t params;             /* trainable floats (weights + biases) */
    size_t param_bytes;
    uint64_t forward_flops;    /* at the batch size asked for (multiply-add = 2) */
    uint64_t backward_flops;   /* input and parameter gradients */
    size_t activation_bytes;   /* output + state kept for backward (masks, indices, im2col) */
} tsr_layer_info;

/* ---- builder ---- */
tsr_status tsr_model_create(tsr_context *ctx, tsr_model_input input, tsr_model **out);
void tsr_model_free(tsr_model *model); /* accepts NULL */
/* The same from a general input (tsr_model_create's input is {3, {channels, height, width}}). */
tsr_status tsr_model_create_desc(tsr_context *ctx, const tsr_model_input_desc *input, tsr_model **out);
tsr_status tsr_model_add_dense(tsr_model *model, size_t units);
/* pad: a count or TSR_PAD_SAME. */
tsr_status tsr_model_add_conv2d(tsr_model *model, size_t filters, size_t kernel_h, size_t kernel_w,
                                size_t stride, size_t pad);
tsr_status tsr_model_add_maxpool(tsr_model *model, size_t size, size_t stride);
tsr_status tsr_model_add_relu(tsr_model *model);
tsr_status tsr_model_add_dropout(tsr_model *model, float p);
tsr_status tsr_model_add_flatten(tsr_model *model);
/* Residual add: the previous output plus the output of layer `from` (< the layer count) or,
 * with TSR_MODEL_INPUT_TENSOR, the model input; both of one shape. Spec "add:N" / "add:in". */
tsr_status tsr_model_add_residual(tsr_model *model, size_t from);
/* Checks the model is complete: at least one layer and a last layer producing exactly
 * `classes` features. Trainers call it; TSR_ERR_SHAPE with a detail otherwise. */
tsr_status tsr_model_check(const tsr_model *model);

/* ---- spec ---- */
/* Parses `spec` (or a preset name) and checks it. Malformed text: TSR_ERR_PARSE with the
 * 1-based character position in the detail ("model spec at 14: unknown layer 'conv5x'"). */
tsr_status tsr_model_parse(tsr_context *ctx, const char *spec, tsr_model_input input,
                           tsr_model **out);
tsr_status tsr_model_parse_desc(tsr_context *ctx, const char *spec, const tsr_model_input_desc *input,
                                tsr_model **out);
/* Spec of a preset ("mlp", "cnn"), NULL if unknown. */
const char *tsr_model_preset(const char *name);
/* ---- GPT-2-class language models ----
 * A GPT is a spec of the token kinds (lib/model/gpt.c writes it): embed:C, posembed:T, then per
 * block layernorm, linear:3C, attention:H, linear:C, add, layernorm, linear:4C, gelu,
 * linear:C, add (ten layers), then layernorm and lmhead:0 (tied to the embedding). Its input
 * is T' <= T int32 token ids, its loss the mean cross-entropy over all T' positions. */
typedef struct tsr_gpt_config {
    size_t layers, heads, channels; /* blocks, attention heads, model width */
    size_t context, vocab;          /* positions it holds (posembed), token ids */
} tsr_gpt_config;
/* OpenAI's shapes: "gpt2" (12 blocks, 12 heads, 768 channels, context 1024, vocabulary 50257),
 * "gpt2-medium" (24/16/1024), "gpt2-large" (36/20/1280), "gpt2-xl" (48/25/1600), "gpt3"
 * (96/96/12288, context 2048), and "gpt-mini" (4/4/128, context 256, vocabulary 256) for
 * tests and the demo; or any size as "gpt(layers=L,heads=H,channels=C[,context=T][,vocab=V])"
 * (context 1024 and vocabulary 50257 by default). TSR_ERR_NOT_FOUND for a name that is not a
 * GPT, TSR_ERR_PARSE / TSR_ERR_SHAPE for a bad gpt(...). */
tsr_status tsr_gpt_config_parse(tsr_context *ctx, const char *name, tsr_gpt_config *out);
/* Blocks of a model laid out as a GPT (tsr_gpt_spec's layers), 0 for any other model. Block b
 * is layers 2 + 10b .. 11 + 10b; layers 0, 1 the embeddings, the last two ln_f and the head. */
size_t tsr_model_gpt_blocks(const tsr_model *model);
/* Activation floats of one GPT block per sequence of T tokens, as a stage plans them: the ten
 * outputs (ln_1 C, c_attn 3C, attention C, c_proj C, add C, ln_2 C, c_fc 4C, gelu 4C, c_proj C,
 * add C: 18 C per token) and each layer norm's mean and 1/std (2 per token each): T (18 C + 4).
 * The attention weights are not kept (backward recomputes them): the stage's workspace holds
 * one call's, 2 H T^2 per sequence, shared by every block. */
size_t tsr_gpt_block_activation_floats(const tsr_gpt_config *config, size_t tokens);
/* Their bytes in `precision`: 4 per float in fp32; in bf16/fp16 the stage keeps 16 C per token
 * (every output but the two residual adds) in 2 bytes, the adds and the statistics in 4:
 * 2 x 16 C T + 4 (2 C T + 4 T). */
size_t tsr_gpt_block_activation_bytes(const tsr_gpt_config *config, size_t tokens, tsr_precision precision);
/* ---- tensor parallelism (lib/model/gpt_tp.c) ----
 * Megatron-LM's split of every block over a group of K ranks, unevenly: rank r holds `heads`
 * heads (and 4 x head-size MLP units per head) starting at head0 = the heads of ranks < r:
 * column shares of c_attn and c_fc, row shares of both c_proj, between tpcopy and tpreduce
 * layers that sum over the group (tsr_stage_set_tp). The token embedding, tied head and loss
 * are split by vocabulary rows in the same proportion; layer norms and the position embedding
 * are replicated. */
/* Heads per rank in proportion to `speed` (NULL: even), at least one each: 12 heads on speeds
 * {3, 1} give {9, 3}. */
tsr_status tsr_gpt_tp_split(tsr_context *ctx, const tsr_gpt_config *config, size_t ranks, const double *speed,
                            size_t *heads);
/* A rank's model holding heads [head0, head0 + heads) (fourteen layers a block) and the same
 * fraction of the vocabulary's rows, [V head0 / H, V (head0 + heads) / H): a vocabulary-parallel
 * token embedding, head and loss (Megatron-LM's; the [T, V] logits are never whole). */
tsr_status tsr_model_create_gpt_tp(tsr_context *ctx, const tsr_gpt_config *config, size_t tokens, size_t head0,
                                   size_t heads, tsr_model **out);
/* The layer of a share where layer `layer` of the whole model begins (a pipeline cut before
 * it; the layer count for the model's end). */
size_t tsr_gpt_tp_layer(const tsr_gpt_config *config, size_t layer);
/* The whole model's flat parameters (or gradients, optimizer state) `full` to a rank's share
 * (`whole` the whole model, `mine` the rank's, both over the same tokens). */
tsr_status tsr_gpt_tp_scatter(tsr_context *ctx, const tsr_model *whole, const tsr_model *mine,
                              const tsr_gpt_config *config, size_t head0, size_t heads, const float *full,
                              float *local);
/* The reverse: writes the rank's share into `full`, the replicated tensors only when `owner`,
 * so that the sum over the group of zero-initialised `full`s is the whole model. */
tsr_status tsr_gpt_tp_gather(tsr_context *ctx, const tsr_model *whole, const tsr_model *mine,
                             const tsr_gpt_config *config, size_t head0, size_t heads, const float *local,
                             int owner, float *full);
/* 1 when `name` is one of those presets or a gpt(...) form (well formed or not). */
int tsr_gpt_is_name(const char *name);
tsr_status tsr_gpt_config_check(tsr_context *ctx, const tsr_gpt_config *config);
/* Writes the layer spec of the GPT (snprintf-style: returns its length). */
size_t tsr_gpt_spec(const tsr_gpt_config *config, char *buf, size_t size);
/* The model over `tokens` (1 to context) token ids. */
tsr_status tsr_model_create_gpt(tsr_context *ctx, const tsr_gpt_config *config, size_t tokens,
                                tsr_model **out);
/* Labels per sample: 1 for a classifier, T for a language model over T tokens (its labels are
 * the next token at every position; -1 marks a position to ignore in evaluation). */
size_t tsr_model_positions(const tsr_model *model);

/* The configuration of a model laid out as a GPT (tsr_model_gpt_blocks); TSR_ERR_NOT_FOUND for
 * any other model. */
tsr_status tsr_model_gpt_config(const tsr_model *model, tsr_gpt_config *out);

/* Canonical spec: parsing it gives the same model (a GPT as tsr_gpt_spec writes it: its
 * "gpt(layers=..,heads=..,channels=..,context=..,vocab=..)" form). Valid while the model lives. */
const char *tsr_model_spec(const tsr_model *model);

/* ---- inspection ---- */
tsr_model_input tsr_model_get_input(const tsr_model *model);
tsr_model_input_desc tsr_model_get_input_desc(const tsr_model *model);
size_t tsr_model_layer_count(const tsr_model *model);
size_t tsr_model_param_count(const tsr_model *model);

/* Parameters. All of a model's parameters form one flat float vector (the one checkpoints,
 * stages and optimizers hold), laid out in REVERSE layer order: the last layer's tensors at
 * offset 0, then the layer before it, ...; within a layer its tensors in the order its kind
 * lists them (dense: "weight" [units][inputs] then "bias" [units]; conv2d: "weight"
 * [filters][channels][kh][kw] then "bias" [filters]). Gradients use the same layout.
 * tsr_model_param_tensor lists the tensors in model order (index 0: layer 0's first). */
typedef struct tsr_param_info {
    char name[64];          /* "<layer>.<name>": "0.weight", "0.bias" */
    size_t layer;
    size_t rank, shape[4];  /* row-major, shape[rank..3] = 0 */
    size_t count;           /* floats */
    size_t offset;          /* element offset in the flat vector */
} tsr_param_info;
size_t tsr_model_param_tensor_count(const tsr_model *model);
tsr_status tsr_model_param_tensor(const tsr_model *model, size_t index, tsr_param_info *info);
tsr_status tsr_model_layer_info(const tsr_model *model, size_t index, size_t batch,
                                tsr_layer_info *info);
/* Keras-like table (layer, output shape, parameters, FLOPs per sample) plus totals.
 * tsr_model_summary_string writes at most `size` bytes (always terminated) and returns the
 * length the full text needs, like snprintf. */
tsr_status tsr_model_summary(const tsr_model *model, FILE *out);
size_t tsr_model_summary_string(const tsr_model *model, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
