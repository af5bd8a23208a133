/* Internal compute-backend interface (a vtable, as ggml-backend-impl.h).
 *
 * Conventions for every operation:
 *  - matrices are row-major; images are NCHW;
 *  - a tensor argument is a tsr_ref {buffer, offset}: the offset counts ELEMENTS of the
 *    operand's type (float for float data, int32 for labels/indices, uint16 for fp16);
 *  - calls are asynchronous in queue order on a backend; read() and finish() synchronise;
 *  - "+=" in a description means the operation accumulates into its output.
 * Callers use the tsr_op_* wrappers (backend.c), which check every range against the buffer
 * size before dispatching, so backends may trust their arguments. */
#ifndef TSR_BACKEND_H
#define TSR_BACKEND_H
#include <stddef.h>
#include <stdint.h>
#include "tessera.h"

typedef struct tsr_backend tsr_backend;
typedef struct tsr_backend_iface tsr_backend_iface;

/* Element types of buffer data are the public tsr_dtype (tessera/model.h: float32, int32; a new
 * type such as bf16 joins that enum and these two functions). */
static inline size_t tsr_dtype_size(tsr_dtype t) {
    switch (t) {
    case TSR_DTYPE_F32:
    case TSR_DTYPE_I32: return 4;
    }
    return 0; /* not a dtype: the helpers reject it */
}
const char *tsr_dtype_name(tsr_dtype t); /* "float32", "int32" */

/* Device memory. Allocated by the backend; the common header is filled by tsr_buf_alloc.
 * Library code never touches `host` or `impl`: it reads and writes through the element
 * helpers below, or maps a range (tsr_buf_map), which costs nothing on host memory. */
typedef struct tsr_buf {
    tsr_backend *backend;
    size_t bytes;
    void *host;   /* backend-private: host-addressable data (host backend), NULL otherwise */
    void *impl;   /* backend-private handle (cl_mem for OpenCL) */
    const char *name;           /* for error messages (static string); NULL: "buffer" */
    void *wrapped;              /* tsr_buf_wrap: the caller's memory (not freed with the buffer) */
} tsr_buf;

typedef struct tsr_ref {
    tsr_buf *buf;
    size_t off;   /* in elements of the operand type */
} tsr_ref;

static inline tsr_ref tsr_ref_at(tsr_buf *buf, size_t off) {
    tsr_ref r = {buf, off};
    return r;
}

/* r moved on by n elements. */
static inline tsr_ref tsr_ref_offset(tsr_ref r, size_t n) {
    r.off += n;
    return r;
}
/* 1 when a and b are the same place (an in-place gradient needs no copy). */
static inline int tsr_ref_same(tsr_ref a, tsr_ref b) { return a.buf == b.buf && a.off == b.off; }

typedef enum tsr_trans { TSR_NO_TRANS = 0, TSR_TRANS = 1 } tsr_trans;

/* One convolution, applied to `batch` images at once.
 * im2col output layout: [channels*kernel_h*kernel_w][batch*out_h*out_w], the column matrix of
 * the whole batch, so that forward, weight gradient and column gradient are one GEMM each
 * (row (c*kernel_h + ki)*kernel_w + kj, column (b*out_h + oy)*out_w + ox). */
typedef struct tsr_conv_geom {
    size_t batch, channels, height, width;
    size_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w;
    size_t out_h, out_w; /* = (height + 2*pad_h - kernel_h)/stride_h + 1, checked by the wrapper */
} tsr_conv_geom;

/* Max pooling over planes = batch*channels planes of height x width. */
typedef struct tsr_pool_geom {
    size_t planes, height, width;
    size_t size, stride;
    size_t out_h, out_w; /* = (height - size)/stride + 1 */
} tsr_pool_geom;

/* Optimizer hyper-parameters for one update call. */
/* grad_scale (both): the update reads g * grad_scale, rounded once as scale() would leave
 * it (the trainer's clipping coefficient folded into the update: no pass of its own); g itself
 * is not changed. 0 or 1: g as it is. */
typedef struct tsr_sgd_params {
    float lr, momentum, weight_decay;
    int nesterov;
    float grad_scale;
} tsr_sgd_params;

typedef struct tsr_adam_params {
    float lr, beta1, beta2, eps, weight_decay;
    int decoupled;         /* 1: AdamW (decay applied to weights), 0: L2 added to the gradient */
    float bias_correction1; /* 1 - beta1^t */
    float bias_correction2; /* 1 - beta2^t */
    float grad_scale;
} tsr_adam_params;

/* Causal multi-head self-attention over `batch` sequences of `tokens` positions. qkv is
 * [batch][tokens][3*channels] (Hugging Face GPT-2's c_attn output: the q, k and v blocks of
 * `channels` each, head h at columns h*head_size.. of each block), out is
 * [batch][tokens][channels]. The attention weights are not kept between the passes: backward
 * recomputes them (the selective activation recomputation of Korthikanti et al., 2022, which
 * Megatron-LM applies to this core), so a model keeps O(T) per layer instead of
 * [heads][T][T], and `scratch` (TSR_ATTN_SCRATCH(g) floats, shared by the layers) is working
 * memory of one call. */
typedef struct tsr_attn_geom {
    size_t batch, tokens, channels, heads; /* channels % heads == 0 */
} tsr_attn_geom;

/* Floats of an attention call's scratch: the weights and their gradient, one
 * [batch][heads][tokens][tokens] each (the host uses a cache-sized slice per worker). */
#define TSR_ATTN_SCRATCH(g) (2 * (g)->batch * (g)->heads * (g)->tokens * (g)->tokens)

struct tsr_backend_iface {
    const char *name; /* "host", "opencl" */
    void (*destroy)(tsr_backend *be);

    /* --- memory --- */
    tsr_status (*buf_alloc)(tsr_backend *be, tsr_buf *buf); /* buf->bytes set; fill host/impl */
    void (*buf_free)(tsr_backend *be, tsr_buf *buf);
    /* Optional (NULL: unsupported): makes buf (bytes set) use `mem`, host memory of at least
     * buf->bytes bytes that the backend does not own; buf_free is not called for it. */
    tsr_status (*buf_wrap)(tsr_backend *be, tsr_buf *buf, void *mem);
    tsr_status (*write)(tsr_backend *be, tsr_buf *dst, size_t byte_off, const void *src, size_t bytes);
    tsr_status (*read)(tsr_backend *be, tsr_buf *src, size_t byte_off, void *dst, size_t bytes);
    tsr_status (*copy)(tsr_backend *be, tsr_buf *dst, size_t dst_byte_off, tsr_buf *src,
                       size_t src_byte_off, size_t bytes);
    tsr_status (*fill)(tsr_backend *be, tsr_ref x, size_t n, float value);
    tsr_status (*finish)(tsr_backend *be);

    /* --- BLAS --- */
    /* C = alpha*op(A)*op(B) + beta*C; op(A) is m x k, op(B) is k x n. */
    tsr_status (*gemm)(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n, size_t k,
                       float alpha, tsr_ref a, size_t lda, tsr_ref b, size_t ldb, float beta,
                       tsr_ref c, size_t ldc);
    /* `batch` GEMMs; matrix i starts at off + i*stride (a stride of 0 shares one matrix). */
    tsr_status (*gemm_batched)(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                               size_t k, float alpha, tsr_ref a, size_t lda, size_t stride_a,
                               tsr_ref b, size_t ldb, size_t stride_b, float beta, tsr_ref c,
                               size_t ldc, size_t stride_c, size_t batch);
    tsr_status (*axpy)(tsr_backend *be, size_t n, float alpha, tsr_ref x, tsr_ref y); /* y += alpha*x */
    tsr_status (*scale)(tsr_backend *be, size_t n, float alpha, tsr_ref x);           /* x *= alpha */
    tsr_status (*mul)(tsr_backend *be, size_t n, tsr_ref a, tsr_ref b, tsr_ref y);    /* y = a*b */
    tsr_status (*sum)(tsr_backend *be, size_t n, tsr_ref x, tsr_ref out);             /* out[0] = sum x */
    /* Optional (NULL: the wrapper maps x and screens it on the host). Synchronises: *first =
     * the index of the first NaN or infinity of x[0, n), n when all are finite; with sumsq
     * non-NULL also *sumsq = tsr_sumsq_f32(x, n), that order exactly (meaningful only when
     * *first == n). The trainer's non-finite check, and with clipping the norm in the same
     * call: a device screens where the gradients are, the host overlaps the two. */
    tsr_status (*first_nonfinite)(tsr_backend *be, size_t n, tsr_ref x, size_t *first,
                                  double *sumsq);

    /* --- layers --- */
    /* y[o][c][i] += bias[c] for o < outer, c < channels, i < inner (dense: inner=1; conv: H*W) */
    tsr_status (*bias_add)(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                           tsr_ref bias, tsr_ref y);
    /* Optional (NULL: bias_add, then relu_forward): bias_add and max(., 0) in one pass over y,
     * their expressions (so their bits) */
    tsr_status (*bias_relu)(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                            tsr_ref bias, tsr_ref y);
    /* db[c] += sum over o, i of dy[o][c][i] */
    tsr_status (*bias_grad)(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                            tsr_ref dy, tsr_ref db);
    tsr_status (*relu_forward)(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y);  /* y = max(x,0) */
    /* dx = y > 0 ? dy : 0   (y is the forward output; dx may alias dy) */
    tsr_status (*relu_backward)(tsr_backend *be, size_t n, tsr_ref y, tsr_ref dy, tsr_ref dx);
    /* probs = softmax(logits) per row; loss[r] = -log(probs[r][labels[r]]) (labels int32).
     * A label outside [0, cols) gives loss[r] = NaN (forward) and a NaN row of dlogits
     * (backward); layers validate labels before this. */
    tsr_status (*softmax_xent_forward)(tsr_backend *be, size_t rows, size_t cols, tsr_ref logits,
                                       tsr_ref labels, tsr_ref probs, tsr_ref loss);
    /* dlogits = scale * (probs - onehot(labels)) */
    tsr_status (*softmax_xent_backward)(tsr_backend *be, size_t rows, size_t cols, tsr_ref probs,
                                        tsr_ref labels, float scale, tsr_ref dlogits);
    tsr_status (*im2col)(tsr_backend *be, const tsr_conv_geom *g, tsr_ref x, tsr_ref col);
    /* y[j][i][k] = x[i][j][k] for i < rows, j < cols, k < inner: a rows x cols matrix of
     * blocks of `inner` floats transposed (conv: [F][batch][OH*OW] <-> [batch][F][OH*OW]);
     * x and y do not overlap */
    tsr_status (*transpose)(tsr_backend *be, size_t rows, size_t cols, size_t inner, tsr_ref x,
                            tsr_ref y);
    /* The same with the epilogue of a convolution: y[j][i][k] = act(x[i][j][k] + bias[i]), act
     * max(., 0) when relu is set (the expressions of bias_add and relu_forward, so the bits
     * are theirs), else none. */
    tsr_status (*transpose_bias)(tsr_backend *be, size_t rows, size_t cols, size_t inner,
                                 tsr_ref x, tsr_ref bias, int relu, tsr_ref y);
    /* dx += col2im(col) (dx is NCHW [batch][channels][height][width]) */
    tsr_status (*col2im)(tsr_backend *be, const tsr_conv_geom *g, tsr_ref col, tsr_ref dx);
    /* Direct convolution (optional; NULL or conv_direct 0: conv2d runs im2col + GEMM).
     * conv_direct: 1 when the backend runs `pass` (TSR_CONV_FORWARD: conv_forward;
     * TSR_CONV_BACKWARD: conv_backward) of geometry g with `filters` outputs directly in its
     * current precision (and faster than im2col + GEMM); the two passes may differ.
     * x NCHW [batch][channels][h][w], w [filters][channels][kh][kw], y [batch][filters][oh][ow],
     * no bias.
     * conv_forward: y = conv(x, w). conv_backward: dw = beta_dw dw + dW; dx = beta_dx dx + dX
     * unless dx is a NULL ref (not wanted); beta 0 or 1. Results do not depend on the threads. */
    int (*conv_direct)(tsr_backend *be, const tsr_conv_geom *g, size_t filters, int pass);
    tsr_status (*conv_forward)(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                               tsr_ref w, tsr_ref y);
    tsr_status (*conv_backward)(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                tsr_ref w, tsr_ref dy, float beta_dw, tsr_ref dw, float beta_dx,
                                tsr_ref dx);
    /* Optional (NULL: tsr_op_conv_dinput runs GEMM, fill and col2im): the input gradient of a
     * convolution, dx (add: +=, else =) col2im(W^T dY), w [filters][rows] (rows =
     * channels*kernel_h*kernel_w), dy [filters][batch*out_h*out_w] (the GEMM layout), col
     * rows x batch*out_h*out_w floats of scratch it may overwrite. Bit for bit the GEMM, fill
     * and col2im it stands for (float32 only); the host does it image by image, so that each
     * image's columns are still in cache when folded back. */
    tsr_status (*conv_dinput)(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref w,
                              tsr_ref dy, tsr_ref col, int add, tsr_ref dx);
    /* Optional (NULL or conv_wgrad_cols 0: conv2d transposes dY and runs a GEMM): the weight
     * gradient from the columns im2col wrote, dw = beta dw + dY col^T, beta 0 or 1, with dy in
     * the stage layout [batch][filters][out_h*out_w] and col [rows][batch*out_h*out_w].
     * conv_wgrad_cols: 1 when the backend runs it for the shape (the host: few-channel layers on
     * an AVX2 CPU). Its own summation order, the same with any thread count. */
    int (*conv_wgrad_cols)(tsr_backend *be, const tsr_conv_geom *g, size_t filters);
    tsr_status (*conv_wgrad)(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref dy,
                             tsr_ref col, float beta, tsr_ref dw);
    /* y = max over each window; idx (int32) = flat index h*width+w of the max within its plane
     * (ties: the first maximum in row-major window order) */
    tsr_status (*maxpool_forward)(tsr_backend *be, const tsr_pool_geom *g, tsr_ref x, tsr_ref y,
                                  tsr_ref idx);
    /* dx = 0, then dx[plane][idx] += dy for every output */
    tsr_status (*maxpool_backward)(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                   tsr_ref idx, tsr_ref dx);
    /* Optional (NULL: the stage runs the relu before a pool on its own): maxpool_backward with
     * the backward of a relu whose output the pool read folded in, dx[plane][idx] += y > 0 ? dy :
     * 0 with y the pool's output (the relu's output at idx), so the bits of maxpool_backward then
     * relu_backward */
    tsr_status (*maxpool_backward_relu)(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                        tsr_ref idx, tsr_ref y, tsr_ref dx);
    /* mask[i] = keep ? 1/(1-p) : 0 with keep = tsr_dropout_keep(seed, i, p); y = x*mask */
    tsr_status (*dropout_forward)(tsr_backend *be, size_t n, float p, uint64_t seed, tsr_ref x,
                                  tsr_ref y, tsr_ref mask);
    /* Embedding lookup of `count` int32 ids into rows of `dim` floats of a [vocab][dim] table:
     * y[i][:] = table[ids[i]][:]; an id outside [0, vocab) gives a NaN row. */
    tsr_status (*embed_forward)(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                tsr_ref table, tsr_ref y);
    /* dtable[ids[i]][:] += dy[i][:] for i = 0, 1, ... in that order (ids outside [0, vocab)
     * skipped): every backend adds in the same order, so results match bit for bit. */
    tsr_status (*embed_backward)(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                 tsr_ref dy, tsr_ref dtable);

    /* --- conversion --- */
    /* h = the 16-bit patterns of x in precision p (bf16 or IEEE half; lib/core/precision.h's
     * rounding), and back (exact). h counts 2-byte elements: activations a 16-bit mode stores
     * in half the bytes (stage.c). */
    tsr_status (*narrow16)(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref h);
    tsr_status (*widen16)(tsr_backend *be, tsr_precision p, size_t n, tsr_ref h, tsr_ref x);
    /* y = float32(p(x)): x rounded to precision p (bf16 or fp16) and widened back; y may be x.
     * How the GEMM inputs of a 16-bit mode are made (backend_precision.c). */
    tsr_status (*round16)(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref y);
    /* The same on a rows x cols block (leading dimensions ldx, ldy >= cols; no overlap): a
     * block of a GEMM operand too large to round whole (backend_precision.c). */
    tsr_status (*round16_block)(tsr_backend *be, tsr_precision p, size_t rows, size_t cols,
                                tsr_ref x, size_t ldx, tsr_ref y, size_t ldy);
    /* Optional: 1 when gemm/gemm_batched round their inputs to p themselves (the host's
     * OpenBLAS bf16 GEMM); NULL or 0: the inputs are rounded by round16 before them. */
    int (*gemm_native)(tsr_backend *be, tsr_precision p);

    /* --- optimizers (in place on w, state buffers v / m) --- */
    /* g' = g*s + wd*w (s = grad_scale); v = momentum*v + g'; w -= lr * (nesterov ? g' + momentum*v : v) */
    tsr_status (*sgd_update)(tsr_backend *be, size_t n, const tsr_sgd_params *p, tsr_ref w,
                             tsr_ref g, tsr_ref v);
    /* Adam/AdamW, with g read as g*grad_scale: m = b1*m + (1-b1)g; v = b2*v + (1-b2)g^2;
     * w -= lr * (m/bc1) / (sqrt(v/bc2) + eps) [+ lr*wd*w when decoupled] */
    tsr_status (*adam_update)(tsr_backend *be, size_t n, const tsr_adam_params *p, tsr_ref w,
                              tsr_ref g, tsr_ref m, tsr_ref v);

    /* --- transformer (GPT-2) pieces; optional: NULL where a backend lacks them, and the
     *     tsr_op_* wrapper then answers TSR_ERR_UNSUPPORTED naming the op and backend --- */
    /* Layer norm over the last dimension of rows x dim (biased variance):
     * mean[r], rstd[r] = 1/sqrt(var + eps), y = (x - mean) * rstd * gamma + beta. */
    tsr_status (*layernorm_forward)(tsr_backend *be, size_t rows, size_t dim, float eps,
                                    tsr_ref x, tsr_ref gamma, tsr_ref beta, tsr_ref y,
                                    tsr_ref mean, tsr_ref rstd);
    /* With xhat = (x - mean) * rstd and g = gamma * dy: dgamma += sum over rows of dy * xhat,
     * dbeta += sum of dy, dx = (add_dx: +=) rstd * (g - mean(g) - xhat * mean(g * xhat)). */
    tsr_status (*layernorm_backward)(tsr_backend *be, size_t rows, size_t dim, tsr_ref x,
                                     tsr_ref gamma, tsr_ref mean, tsr_ref rstd, tsr_ref dy,
                                     tsr_ref dx, tsr_ref dgamma, tsr_ref dbeta, int add_dx);
    /* GELU, tanh form: y = x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))). */
    tsr_status (*gelu_forward)(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y);
    /* dx = gelu'(x) * dy (dx may alias dy). */
    tsr_status (*gelu_backward)(tsr_backend *be, size_t n, tsr_ref x, tsr_ref dy, tsr_ref dx);
    /* Causal self-attention core (see tsr_attn_geom): with P[b][h] = softmax over j <= t of
     * q_t . k_j / sqrt(head size) (0 for j > t), out[b][t][h-th head] = P[b][h] @ v. P lives
     * in scratch (TSR_ATTN_SCRATCH floats) only during the call. */
    tsr_status (*attention_forward)(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                    tsr_ref scratch, tsr_ref out);
    /* dqkv = d(loss)/d(qkv) (overwritten) from dout; P is recomputed from qkv exactly as the
     * forward computed it (the same bits), in scratch. */
    tsr_status (*attention_backward)(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                     tsr_ref dout, tsr_ref scratch, tsr_ref dqkv);
    /* Cross-entropy per row of logits (rows x cols) against int32 targets: probs = softmax,
     * loss[r] = -log probs[r][target]; target -1 is ignored (loss 0), another target outside
     * [0, cols) gives NaN. probs may alias logits. */
    tsr_status (*xent_forward)(tsr_backend *be, size_t rows, size_t cols, tsr_ref logits,
                               tsr_ref targets, tsr_ref probs, tsr_ref loss);
    /* dlogits = scale * (probs - onehot(target)), a zero row for target -1, NaN for another
     * target outside [0, cols); dlogits may alias probs. */
    tsr_status (*xent_backward)(tsr_backend *be, size_t rows, size_t cols, tsr_ref probs,
                                tsr_ref targets, float scale, tsr_ref dlogits);
};

struct tsr_backend {
    const tsr_backend_iface *iface;
    tsr_context *ctx;           /* errors and host allocations */
    tsr_device_info device;     /* copy of the record it drives */
    void *impl;                 /* backend private state */
    /* Mixed precision (backend_precision.c): GEMM inputs (and attention's q, k, v, dout, P and
     * dS) are rounded to `precision` before every product, accumulation stays float32; round_buf is
     * where the rounded operands go (grown on demand, freed with the backend). */
    tsr_precision precision;
    tsr_buf *round_buf;
    size_t round_cap; /* floats of rounded operands before GEMMs go by blocks; 0: TSR_ROUND_CAP_FLOATS */
};

/* ---- creation ---- */
tsr_status tsr_backend_host_create(tsr_context *ctx, tsr_backend **out);
#if TSR_WITH_OPENCL
/* Opens the OpenCL device of `info` (platform_index/device_index). */
tsr_status tsr_backend_opencl_create(tsr_context *ctx, const tsr_device_info *info,
                                     tsr_backend **out);
#endif
/* Opens the backend that drives context device `index`. */
tsr_status tsr_backend_open(tsr_context *ctx, int index, tsr_backend **out);
void tsr_backend_free(tsr_backend *be); /* accepts NULL */
/* The precision of this backend's GEMM inputs from now on (TSR_PRECISION_FP32: as before,
 * bit for bit). TSR_ERR_INVALID_ARG for a value outside the enum. */
tsr_status tsr_backend_set_precision(tsr_backend *be, tsr_precision p);

/* ---- memory ---- */
tsr_status tsr_buf_alloc(tsr_backend *be, size_t bytes, tsr_buf **out);
void tsr_buf_free(tsr_buf *buf); /* accepts NULL */
/* Byte-level access for untyped data; element data goes through the typed helpers below. */
tsr_status tsr_buf_write(tsr_buf *dst, size_t byte_off, const void *src, size_t bytes);
tsr_status tsr_buf_read(tsr_buf *src, size_t byte_off, void *dst, size_t bytes);
tsr_status tsr_buf_copy(tsr_buf *dst, size_t dst_byte_off, tsr_buf *src, size_t src_byte_off,
                        size_t bytes);
tsr_status tsr_backend_finish(tsr_backend *be);
/* Names buf in error messages (a static string: "gradients", "parameters", ...). */
void tsr_buf_set_name(tsr_buf *buf, const char *name);

/* A buffer over host memory the caller provides (registered memory of a communicator, so that
 * collectives work on the data in place): the backend computes on `mem` directly, nothing is
 * copied. `mem` holds `bytes` bytes, is 64-byte aligned and outlives the buffer: tsr_buf_free
 * leaves it to the caller. TSR_ERR_UNSUPPORTED when the backend cannot compute on host memory
 * (OpenCL; tsr_backend_wraps_host says so beforehand): the caller then stages the data through
 * `mem` with the helpers below. */
tsr_status tsr_buf_wrap(tsr_backend *be, void *mem, size_t bytes, tsr_buf **out);
int tsr_backend_wraps_host(const tsr_backend *be);

/* ---- typed element access: offsets and counts in elements of a dtype ----
 * Byte offsets are computed here and nowhere else. A range past the end of the buffer is
 * TSR_ERR_SHAPE naming the buffer, the element range and the buffer's size. */
tsr_status tsr_ref_read(tsr_ref src, tsr_dtype t, void *dst, size_t count);
tsr_status tsr_ref_write(tsr_ref dst, tsr_dtype t, const void *src, size_t count);
/* count elements from src to dst (same backend; overlapping ranges allowed) */
tsr_status tsr_ref_copy(tsr_ref dst, tsr_ref src, tsr_dtype t, size_t count);
/* float32 shorthands, the common case */
static inline tsr_status tsr_read_f32(tsr_buf *src, size_t off, float *dst, size_t count) {
    return tsr_ref_read(tsr_ref_at(src, off), TSR_DTYPE_F32, dst, count);
}
static inline tsr_status tsr_write_f32(tsr_buf *dst, size_t off, const float *src, size_t count) {
    return tsr_ref_write(tsr_ref_at(dst, off), TSR_DTYPE_F32, src, count);
}

/* ---- mapping: a host-visible view of a range ----
 * tsr_buf_map gives m->data, `count` elements of type t at r. On host memory it points into
 * the buffer: no copy (m->copied = 0), the host backend's speed. Otherwise it is a host copy,
 * read from the device when the mode has TSR_MAP_READ, held in `staging` (the caller's, at
 * least count elements, reused step after step) or, when staging is NULL, allocated.
 * tsr_buf_unmap writes a copy back when the mode has TSR_MAP_WRITE and frees what map
 * allocated; a READ map into the caller's staging holds nothing to release. Unmap accepts a
 * zeroed map or one whose map failed. While mapped, no backend op runs on the range. */
typedef enum tsr_map_mode {
    TSR_MAP_READ = 1,      /* the view starts with the buffer's data */
    TSR_MAP_WRITE = 2,     /* the view's data goes to the buffer at unmap */
    TSR_MAP_READ_WRITE = 3
} tsr_map_mode;
typedef struct tsr_map {
    void *data;
    tsr_buf *buf;
    size_t byte_off, bytes;
    tsr_map_mode mode;
    int copied;     /* data is a host copy, not the buffer's memory */
    int allocated;  /* the copy was allocated by map (no staging): unmap frees it */
} tsr_map;
tsr_status tsr_buf_map(tsr_ref r, tsr_dtype t, size_t count, tsr_map_mode mode, void *staging,
                       tsr_map *m);
tsr_status tsr_buf_unmap(tsr_map *m);

/* ---- checked operation wrappers: same arguments as the iface slots ---- */
tsr_status tsr_op_fill(tsr_backend *be, tsr_ref x, size_t n, float value);
tsr_status tsr_op_gemm(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n, size_t k,
                       float alpha, tsr_ref a, size_t lda, tsr_ref b, size_t ldb, float beta,
                       tsr_ref c, size_t ldc);
tsr_status tsr_op_gemm_batched(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                               size_t k, float alpha, tsr_ref a, size_t lda, size_t stride_a,
                               tsr_ref b, size_t ldb, size_t stride_b, float beta, tsr_ref c,
                               size_t ldc, size_t stride_c, size_t batch);
tsr_status tsr_op_axpy(tsr_backend *be, size_t n, float alpha, tsr_ref x, tsr_ref y);
tsr_status tsr_op_scale(tsr_backend *be, size_t n, float alpha, tsr_ref x);
tsr_status tsr_op_mul(tsr_backend *be, size_t n, tsr_ref a, tsr_ref b, tsr_ref y);
tsr_status tsr_op_sum(tsr_backend *be, size_t n, tsr_ref x, tsr_ref out);
tsr_status tsr_op_first_nonfinite(tsr_backend *be, size_t n, tsr_ref x, size_t *first, double *sumsq);

/* Host-memory screens (backend_scan.c), in blocks of TSR_SCAN_BLOCK floats: the index of the
 * first NaN/Inf of x[0, n) (n when none); the sum of squares in double in one fixed order
 * (four chains over i % 4, the tail on chain 0), whole or piece by piece (every piece but the
 * last a multiple of 4 long; then the total); and screen and sum in one read (*sumsq is
 * meaningful only when the answer is n). */
#define TSR_SCAN_BLOCK 4096
size_t tsr_first_nonfinite_f32(const float *x, size_t n);
double tsr_sumsq_f32(const float *x, size_t n);
void tsr_sumsq_f32_add(double acc[4], const float *x, size_t n);
double tsr_sumsq_f32_total(const double acc[4]);
size_t tsr_scan_sumsq_f32(const float *x, size_t n, double *sumsq);
tsr_status tsr_op_bias_add(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                           tsr_ref bias, tsr_ref y);
/* y = max(y + bias, 0) per channel: see the bias_relu slot */
tsr_status tsr_op_bias_relu(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                            tsr_ref bias, tsr_ref y);
tsr_status tsr_op_bias_grad(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                            tsr_ref dy, tsr_ref db);
tsr_status tsr_op_relu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y);
tsr_status tsr_op_relu_backward(tsr_backend *be, size_t n, tsr_ref y, tsr_ref dy, tsr_ref dx);
tsr_status tsr_op_softmax_xent_forward(tsr_backend *be, size_t rows, size_t cols, tsr_ref logits,
                                       tsr_ref labels, tsr_ref probs, tsr_ref loss);
tsr_status tsr_op_softmax_xent_backward(tsr_backend *be, size_t rows, size_t cols, tsr_ref probs,
                                        tsr_ref labels, float scale, tsr_ref dlogits);
tsr_status tsr_op_im2col(tsr_backend *be, const tsr_conv_geom *g, tsr_ref x, tsr_ref col);
tsr_status tsr_op_col2im(tsr_backend *be, const tsr_conv_geom *g, tsr_ref col, tsr_ref dx);
enum { TSR_CONV_FORWARD = 1, TSR_CONV_BACKWARD = 2 }; /* a direct convolution's passes */
int tsr_op_conv_direct(tsr_backend *be, const tsr_conv_geom *g, size_t filters, int pass);
tsr_status tsr_op_conv_forward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                               tsr_ref w, tsr_ref y);
tsr_status tsr_op_conv_backward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                tsr_ref w, tsr_ref dy, float beta_dw, tsr_ref dw, float beta_dx,
                                tsr_ref dx);
/* dx (add: +=, else =) col2im(W^T dY): see the conv_dinput slot. */
tsr_status tsr_op_conv_dinput(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref w,
                              tsr_ref dy, tsr_ref col, int add, tsr_ref dx);
/* dw = beta dw + dY col^T from the columns, dY in the stage layout: see the conv_wgrad slot. */
int tsr_op_conv_wgrad_cols(tsr_backend *be, const tsr_conv_geom *g, size_t filters);
tsr_status tsr_op_conv_wgrad(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref dy,
                             tsr_ref col, float beta, tsr_ref dw);
tsr_status tsr_op_transpose(tsr_backend *be, size_t rows, size_t cols, size_t inner, tsr_ref x,
                            tsr_ref y);
tsr_status tsr_op_transpose_bias(tsr_backend *be, size_t rows, size_t cols, size_t inner, tsr_ref x,
                                 tsr_ref bias, int relu, tsr_ref y);
tsr_status tsr_op_maxpool_forward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref x, tsr_ref y,
                                  tsr_ref idx);
tsr_status tsr_op_maxpool_backward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                   tsr_ref idx, tsr_ref dx);
/* see the maxpool_backward_relu slot; tsr_op_maxpool_relu_folds: 1 when the backend has it */
int tsr_op_maxpool_relu_folds(const tsr_backend *be);
tsr_status tsr_op_maxpool_backward_relu(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                        tsr_ref idx, tsr_ref y, tsr_ref dx);
tsr_status tsr_op_dropout_forward(tsr_backend *be, size_t n, float p, uint64_t seed, tsr_ref x,
                                  tsr_ref y, tsr_ref mask);
tsr_status tsr_op_embed_forward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                tsr_ref table, tsr_ref y);
tsr_status tsr_op_embed_backward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                 tsr_ref dy, tsr_ref dtable);
tsr_status tsr_op_narrow16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref h);
tsr_status tsr_op_widen16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref h, tsr_ref x);
tsr_status tsr_op_round16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref y);
tsr_status tsr_op_round16_block(tsr_backend *be, tsr_precision p, size_t rows, size_t cols, tsr_ref x,
                                size_t ldx, tsr_ref y, size_t ldy);
tsr_status tsr_op_sgd_update(tsr_backend *be, size_t n, const tsr_sgd_params *p, tsr_ref w,
                             tsr_ref g, tsr_ref v);
tsr_status tsr_op_adam_update(tsr_backend *be, size_t n, const tsr_adam_params *p, tsr_ref w,
                              tsr_ref g, tsr_ref m, tsr_ref v);
/* transformer pieces (optional slots) */
tsr_status tsr_op_layernorm_forward(tsr_backend *be, size_t rows, size_t dim, float eps, tsr_ref x,
                                    tsr_ref gamma, tsr_ref beta, tsr_ref y, tsr_ref mean,
                                    tsr_ref rstd);
tsr_status tsr_op_layernorm_backward(tsr_backend *be, size_t rows, size_t dim, tsr_ref x,
                                     tsr_ref gamma, tsr_ref mean, tsr_ref rstd, tsr_ref dy,
                                     tsr_ref dx, tsr_ref dgamma, tsr_ref dbeta, int add_dx);
tsr_status tsr_op_gelu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y);
tsr_status tsr_op_gelu_backward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref dy, tsr_ref dx);
tsr_status tsr_op_attention_forward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                    tsr_ref scratch, tsr_ref out);
tsr_status tsr_op_attention_backward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                     tsr_ref dout, tsr_ref scratch, tsr_ref dqkv);
tsr_status tsr_op_xent_forward(tsr_backend *be, size_t rows, size_t cols, tsr_ref logits,
                               tsr_ref targets, tsr_ref probs, tsr_ref loss);
tsr_status tsr_op_xent_backward(tsr_backend *be, size_t rows, size_t cols, tsr_ref probs,
                                tsr_ref targets, float scale, tsr_ref dlogits);

/* ---- mixed precision (backend_precision.c), called by the wrappers above in a 16-bit mode:
 * the same operations on operands rounded into be->round_buf ---- */
/* A single GEMM's rounded operands take at most this many floats (16 MiB) of round_buf, or
 * m + n when that is more: larger operands are rounded and multiplied a block at a time (along
 * m, n or k, whichever takes the fewest blocks), so a GPT's tied head does not need a rounded
 * copy of the whole embedding table. */
#define TSR_ROUND_CAP_FLOATS ((size_t)1 << 22)
tsr_status tsr_backend_gemm16(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                              size_t k, float alpha, tsr_ref a, size_t lda, size_t stride_a,
                              tsr_ref b, size_t ldb, size_t stride_b, float beta, tsr_ref c,
                              size_t ldc, size_t stride_c, size_t batch);
tsr_status tsr_backend_attention16_forward(tsr_backend *be, const tsr_attn_geom *g, size_t nqkv,
                                           tsr_ref qkv, tsr_ref scratch, tsr_ref out);
tsr_status tsr_backend_attention16_backward(tsr_backend *be, const tsr_attn_geom *g, size_t nqkv,
                                            size_t nout, tsr_ref qkv, tsr_ref dout,
                                            tsr_ref scratch, tsr_ref dqkv);
/* Elements from the first of `batch` row-major matrices' first element to the last one's last
 * (rows x cols, leading dimension ld, `stride` apart); for operands the wrapper checked, so
 * it cannot overflow. */
static inline size_t tsr_matrix_span(size_t rows, size_t cols, size_t ld, size_t stride,
                                     size_t batch) {
    return rows && cols && batch ? (batch - 1) * stride + (rows - 1) * ld + cols : 0;
}
/* be->round_buf holds at least `floats` floats afterwards (for a gemm_native backend's own
 * 16-bit copies too). */
tsr_status tsr_backend_round_room(tsr_backend *be, size_t floats);

/* Fills out_h/out_w from the other fields; TSR_ERR_SHAPE when the window does not fit. */
tsr_status tsr_conv_geom_finish(tsr_conv_geom *g);
tsr_status tsr_pool_geom_finish(tsr_pool_geom *g);

/* ---- shared numerics (identical on every backend, so results match bit for bit) ---- */
/* Counter-based hash (splitmix64 of seed and index): the dropout keep decision. */
static inline uint32_t tsr_hash32(uint64_t seed, uint64_t i) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}
static inline int tsr_dropout_keep(uint64_t seed, uint64_t i, float p) {
    /* keep when the 24-bit uniform is >= p */
    return (float)(tsr_hash32(seed, i) >> 8) * (1.0f / 16777216.0f) >= p;
}

/* IEEE half conversion in C (round to nearest even; Inf/NaN/subnormals handled). */
uint16_t tsr_f32_to_f16_scalar(float f);
float tsr_f16_to_f32_scalar(uint16_t h);

#endif
