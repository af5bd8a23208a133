/* The ops table of a layer kind: everything the model, the stage and the planner need to know
 * about one kind lives in its own file (lib/layers/<kind>.c) behind one of these tables, and
 * the registry (registry.c) is the only place kinds are looked up.
 *
 * Adding a kind: write lib/layers/<kind>.c with its table, list it in registry.c, add its
 * backend kernels (backends/) if it needs new ones, and its tests. */
#ifndef TSR_LAYERS_LAYER_H
#define TSR_LAYERS_LAYER_H
#include <stddef.h>
#include <stdint.h>
#include "backends/backend.h"
#include "lib/model/layers.h"

/* Shape of one sample of a tensor (channels x height x width; vectors are c x 1 x 1). */
typedef struct tsr_tshape {
    size_t c, h, w;
    int tokens;           /* int32 token ids in [0, vocab) (only the model input), else floats */
    size_t vocab;
} tsr_tshape;

typedef enum tsr_init_rule {
    TSR_INIT_ZERO = 0,    /* zeros, no draws */
    TSR_INIT_FAN,         /* He or Glorot uniform from fan_in / fan_out (one draw per float) */
    TSR_INIT_ONE,         /* ones (layer-norm gains), no draws */
    TSR_INIT_NORMAL       /* N(0, std^2), Box-Muller: two floats per two draws; GPT-2's 0.02 */
} tsr_init_rule;

/* One named parameter tensor of a layer. */
typedef struct tsr_param_desc {
    const char *name;     /* "weight", "bias" */
    size_t rank, shape[4];
    size_t count;         /* product of the shape */
    tsr_init_rule init;
    size_t fan_in, fan_out;
    double std;           /* TSR_INIT_NORMAL */
} tsr_param_desc;

/* Text position of a spec being parsed; kinds parse their own arguments through it. */
typedef struct tsr_spec_cursor {
    tsr_context *ctx;
    const char *s;
    size_t pos;
} tsr_spec_cursor;

/* "model spec at <pos+1>: <detail>" */
tsr_status tsr_spec_error(tsr_spec_cursor *c, size_t pos, tsr_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Decimal count at c->pos (at most TSR_MODEL_MAX_DIM); -1 without digits or when too large. */
int tsr_spec_count(tsr_spec_cursor *c, size_t *out);
void tsr_spec_skip_ws(tsr_spec_cursor *c);
/* Matches name (n chars) against "<prefix><d>" or, with two, "<prefix><d>x<d>": 1 and the
 * sizes (*a = *b for one) when it fits. */
int tsr_spec_match_sized(const char *name, size_t n, const char *prefix, int two, size_t *a, size_t *b);
/* TSR_ERR_PARSE "<name> takes no ':' argument" when c is at a ':'. */
tsr_status tsr_spec_no_arg(tsr_spec_cursor *c, const char *name, size_t n);

/* Sizes past this are certainly typos, and keep every product far from overflow. */
#define TSR_MODEL_MAX_DIM ((size_t)1 << 24)
/* Floats of one sample's tensor for the token-wise kinds (a GPT-3's [2048, 50257] logits and
 * 96 x 2048 x 2048 attention weights fit; times a batch of 2^20 it stays below 2^64). */
#define TSR_MODEL_MAX_SAMPLE ((size_t)1 << 36)

/* What a forward or backward call works on: device references resolved by the stage's
 * memory plan. */
typedef struct tsr_layer_run {
    tsr_backend *be;
    const tsr_layer *l;
    size_t index;                         /* layer index in the model */
    size_t n;                             /* samples */
    tsr_ref in[TSR_LAYER_MAX_INPUTS];     /* inputs (loss: logits, labels) */
    tsr_ref out;                          /* output (loss: per-sample losses) */
    tsr_ref state;                        /* what the kind keeps for backward */
    tsr_ref ws;                           /* workspace shared by the stage's layers */
    tsr_ref ones;                         /* max_batch ones */
    tsr_ref param[TSR_LAYER_MAX_PARAMS], grad[TSR_LAYER_MAX_PARAMS];
    /* forward */
    int train;
    int fuse_relu;                        /* forward, conv: out is the next relu's output,
                                           * written as max(., 0) (the stage skips that relu's
                                           * forward); backward, maxpool: din is the gradient of
                                           * the input of the relu before (its backward skipped) */
    uint64_t seed;                        /* dropout: this layer's mask seed */
    /* backward */
    int accumulate;                       /* parameter gradients: 1 add, 0 overwrite */
    tsr_ref dout;                         /* d(loss)/d(out) */
    tsr_ref din[TSR_LAYER_MAX_INPUTS];    /* where d(loss)/d(input k) goes */
    int want_din[TSR_LAYER_MAX_INPUTS];   /* 0: not needed */
    int add_din[TSR_LAYER_MAX_INPUTS];    /* 1: add into din (kinds with accumulate_din) */
    float loss_scale;                     /* loss: d(loss)/d(per-sample loss) */
    tsr_comm *tp;                         /* tensor-parallel group (tpcopy, tpreduce); NULL: none */
} tsr_layer_run;

struct tsr_layer_ops {
    tsr_layer_kind kind;
    const char *type;                     /* "dense", "conv2d", ... (tsr_layer_info.type) */
    /* Claims a spec name ("dense", "conv5x5"): 1 and what the name holds (kernel size) put in
     * l, else 0. NULL: the name is `type` itself when `word` is set (relu, gelu), else the kind
     * is never written in a spec (the loss). */
    int (*match)(const char *name, size_t n, tsr_layer *l);
    int word;
    /* Parses the ':' argument into l, c->pos at the character after the name (which began at
     * `start`); errors through tsr_spec_error. NULL: the kind takes no argument. */
    tsr_status (*parse_arg)(tsr_spec_cursor *c, const char *name, size_t n, size_t start,
                            tsr_layer *l);
    /* One '/' option, c->pos after the '/'. NULL: the kind takes no options. */
    tsr_status (*parse_option)(tsr_spec_cursor *c, const char *name, size_t n, tsr_layer *l);
    /* Canonical spec token. NULL: `type` (tsr_layer_token). */
    void (*print)(const tsr_layer *l, char *buf, size_t size);
    /* Checks the configuration against the input shapes (in[k], k < l->ninputs; l->in_* is
     * in[0]) and fills the output shape (preset to in[0]'s) and l->weights / l->biases. Errors
     * name the layer and the bound broken. NULL: the output is shaped as the input, no
     * parameters. */
    tsr_status (*shape)(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in);
    /* Its parameter tensors in layout order (at most TSR_LAYER_MAX_PARAMS); returns the count. */
    size_t (*params)(const tsr_layer *l, tsr_param_desc *out);
    /* Floats per sample kept from forward for backward (im2col columns, indices, masks). */
    size_t (*state)(const tsr_layer *l);
    /* Floats per sample of scratch it needs during a call (shared by the stage's layers). */
    size_t (*workspace)(const tsr_layer *l);
    int view;             /* output is input 0 itself (flatten): no memory, no work */
    int inplace_din;      /* backward may write d(input 0) over d(out) */
    int accumulate_din;   /* backward honours add_din (else the stage adds through scratch) */
    int token_input;      /* input 0 may be the model's int32 token ids (other kinds need floats) */
    /* In a 16-bit mode the stage may store the output (half_out) and the backward state
     * (half_state) in 16 bits, as autocast keeps 16-bit matmul and activation outputs: their
     * readers take the rounding. The residual stream (add, embeddings), statistics, indices
     * and masks stay float32 (stage.c). */
    int half_out, half_state;
    /* What backward reads of the forward's tensors beyond its state, so that a 16-bit stage
     * widens only those: the output (relu's), never its inputs (relu, dropout, maxpool, add). */
    int bwd_reads_out, bwd_ignores_in;
    /* l->tied names (index + 1) an earlier embed layer whose table this kind uses as its
     * weight (param[0]) instead of owning one: the language-model head tied to the token
     * embedding. Both must sit on one stage; the gradients of both uses add up. */
    int ties_embedding;
    /* FLOPs at batch n (multiply-add = 2). */
    void (*flops)(const tsr_layer *l, uint64_t n, uint64_t *forward, uint64_t *backward);
    tsr_status (*forward)(const tsr_layer_run *r);
    tsr_status (*backward)(const tsr_layer_run *r);
};

/* ---- registry (registry.c) ---- */
/* The kind claiming spec name `name` (n chars), with what the name holds put in l; NULL if
 * none. */
const tsr_layer_ops *tsr_layer_ops_match(const char *name, size_t n, tsr_layer *l);
/* The table of a kind; NULL if unknown. */
const tsr_layer_ops *tsr_layer_ops_of(tsr_layer_kind kind);
/* l's canonical spec token ("dense:64", "relu"). */
void tsr_layer_token(const tsr_layer *l, char *buf, size_t size);

/* The kinds (one file each). */
extern const tsr_layer_ops tsr_layer_dense, tsr_layer_conv2d, tsr_layer_maxpool, tsr_layer_relu,
    tsr_layer_dropout, tsr_layer_flatten, tsr_layer_add, tsr_layer_softmax_xent, tsr_layer_embed,
    tsr_layer_gelu, tsr_layer_layernorm, tsr_layer_linear, tsr_layer_attention, tsr_layer_posembed,
    tsr_layer_lmhead, tsr_layer_tpcopy, tsr_layer_tpreduce, tsr_layer_vpembed, tsr_layer_vpxent;

/* The sum of `count` floats at r over the tensor-parallel group, in place (no group: nothing). */
tsr_status tsr_tp_allreduce(tsr_comm *tp, tsr_ref r, size_t count);

/* Column floats per chunk of a convolution's batch (conv2d.c); tests shrink it to run the
 * chunked path at small shapes. */
extern size_t tsr_conv2d_chunk_floats;

/* Helpers for kinds. */
static inline size_t tsr_tshape_size(tsr_tshape s) { return s.c * s.h * s.w; }
static inline tsr_param_desc tsr_param_2d(const char *name, size_t a, size_t b, tsr_init_rule init,
                                          size_t fan_in, size_t fan_out) {
    tsr_param_desc d = {name, 2, {a, b, 0, 0}, a * b, init, fan_in, fan_out, 0.0};
    return d;
}
static inline tsr_param_desc tsr_param_1d(const char *name, size_t a, tsr_init_rule init) {
    tsr_param_desc d = {name, 1, {a, 0, 0, 0}, a, init, 0, 0, 0.0};
    return d;
}
static inline tsr_param_desc tsr_param_normal(tsr_param_desc d, double std) {
    d.init = TSR_INIT_NORMAL;
    d.std = std;
    return d;
}

/* Token-wise kinds (layernorm, linear, attention, posembed, lmhead) see a sample as rows of a
 * last dimension: [T, C] (T x C x 1) is T rows of C; a vector (C x 1 x 1) one row of C. */
static inline size_t tsr_tshape_dim(tsr_tshape s) { return s.h * s.w > 1 ? s.h * s.w : s.c; }
static inline size_t tsr_tshape_rows(tsr_tshape s) { return tsr_tshape_size(s) / tsr_tshape_dim(s); }
static inline size_t tsr_layer_in_dim(const tsr_layer *l) {
    tsr_tshape s = {l->in_c, l->in_h, l->in_w, 0, 0};
    return tsr_tshape_dim(s);
}
static inline size_t tsr_layer_in_rows(const tsr_layer *l) {
    tsr_tshape s = {l->in_c, l->in_h, l->in_w, 0, 0};
    return tsr_tshape_rows(s);
}

#endif
