/* Private to the host backend: operand access and the layer ops defined in host_ops.c. */
#ifndef TSR_BACKEND_HOST_H
#define TSR_BACKEND_HOST_H
#include "backends/backend.h"

/* Element pointers of an operand. The checked wrappers guarantee the range; an optional
 * operand (sgd's v without momentum) may have a NULL buffer. */
static inline float *tsr_host_f32(tsr_ref r) {
    return r.buf ? (float *)r.buf->host + r.off : NULL;
}
static inline int32_t *tsr_host_i32(tsr_ref r) {
    return r.buf ? (int32_t *)r.buf->host + r.off : NULL;
}
static inline uint16_t *tsr_host_u16(tsr_ref r) {
    return r.buf ? (uint16_t *)r.buf->host + r.off : NULL;
}

/* Fork-join pool (host_pool.c); a NULL pool runs everything on the caller. */
typedef struct tsr_host_pool tsr_host_pool;
/* oneDNN's engine (host_dnnl.c); NULL in a build without oneDNN. */
typedef struct tsr_host_dnnl tsr_host_dnnl;
/* What host_conv.c's probe found for one convolution pass (oneDNN JIT kernels or not). */
typedef struct tsr_host_conv_probe {
    tsr_conv_geom g;
    size_t filters;
    int precision, pass, direct;
} tsr_host_conv_probe;
#define TSR_HOST_CONV_PROBES 16
/* A host backend's be->impl. */
typedef struct tsr_host_impl {
    tsr_host_pool *pool;
    tsr_host_dnnl *dnnl;
    int sgemm_dnnl;     /* float32 GEMMs through oneDNN (tsr_host_sgemm), else OpenBLAS */
    void *conv_scratch; /* host_conv.c's blocked tensors, kept between calls */
    size_t conv_scratch_bytes;
    /* the last probes (a ring): a model asks the same few every step, and a probe builds
     * oneDNN primitive descriptors */
    tsr_host_conv_probe conv_probes[TSR_HOST_CONV_PROBES];
    size_t conv_probes_made;
} tsr_host_impl;
static inline tsr_host_impl *tsr_host_impl_of(const tsr_backend *be) { return be->impl; }
typedef void (*tsr_host_range_fn)(void *arg, size_t lo, size_t hi);
/* Threads to use: `configured` (the context's host_threads) when > 0, else the cores; 1..64. */
int tsr_host_threads(int configured, unsigned cores);
/* Transitional (lib/core/config.c): the same from the environment, for lib/train/trainer.c's device
 * classes that have no context at hand yet. */
int tsr_host_thread_count(unsigned cores);
/* The OpenBLAS core type worth setting when OpenBLAS chose generic kernels on a better CPU
 * ("SkylakeX"), else NULL; tsr_blas_better_coretype adds the OPENBLAS_CORETYPE check. */
const char *tsr_host_blas_advice(void);
/* threads <= 1 gives *out = NULL (serial). A thread that fails to start is logged, not fatal. */
tsr_status tsr_host_pool_create(tsr_context *ctx, int threads, tsr_host_pool **out);
void tsr_host_pool_free(tsr_context *ctx, tsr_host_pool *pool); /* accepts NULL */
/* fn(arg, lo, hi) over contiguous parts of [0, n), one per thread, when n >= 2*grain;
 * else fn(arg, 0, n) on the caller. Returns when every part is done. */
void tsr_host_parallel(tsr_backend *be, size_t n, size_t grain, tsr_host_range_fn fn, void *arg);

tsr_status tsr_host_fill(tsr_backend *be, tsr_ref x, size_t n, float value);
tsr_status tsr_host_axpy(tsr_backend *be, size_t n, float alpha, tsr_ref x, tsr_ref y);
tsr_status tsr_host_scale(tsr_backend *be, size_t n, float alpha, tsr_ref x);
tsr_status tsr_host_mul(tsr_backend *be, size_t n, tsr_ref a, tsr_ref b, tsr_ref y);
tsr_status tsr_host_sum(tsr_backend *be, size_t n, tsr_ref x, tsr_ref out);
tsr_status tsr_host_first_nonfinite(tsr_backend *be, size_t n, tsr_ref x, size_t *first,
                                    double *sumsq);
tsr_status tsr_host_bias_add(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                             tsr_ref bias, tsr_ref y);
tsr_status tsr_host_bias_relu(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                              tsr_ref bias, tsr_ref y);
tsr_status tsr_host_bias_grad(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                              tsr_ref dy, tsr_ref db);
tsr_status tsr_host_relu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y);
tsr_status tsr_host_relu_backward(tsr_backend *be, size_t n, tsr_ref y, tsr_ref dy, tsr_ref dx);
tsr_status tsr_host_softmax_xent_forward(tsr_backend *be, size_t rows, size_t cols,
                                         tsr_ref logits, tsr_ref labels, tsr_ref probs,
                                         tsr_ref loss);
tsr_status tsr_host_softmax_xent_backward(tsr_backend *be, size_t rows, size_t cols,
                                          tsr_ref probs, tsr_ref labels, float scale,
                                          tsr_ref dlogits);
tsr_status tsr_host_im2col(tsr_backend *be, const tsr_conv_geom *g, tsr_ref x, tsr_ref col);
tsr_status tsr_host_col2im(tsr_backend *be, const tsr_conv_geom *g, tsr_ref col, tsr_ref dx);
/* conv_dinput's column floats computed at a time (a group of channels of one image): small
 * enough to stay in a core's L2 cache between the GEMM that writes them and col2im reading
 * them back (tsr-conv-bound lists the GEMMs it makes). */
#define TSR_HOST_DINPUT_GROUP_FLOATS ((size_t)1 << 16)
tsr_status tsr_host_conv_dinput(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref w,
                                tsr_ref dy, tsr_ref col, int add, tsr_ref dx);
/* host_wgrad.c: the weight gradient of few-channel layers from their columns (AVX2 + FMA) */
int tsr_host_conv_wgrad_cols(tsr_backend *be, const tsr_conv_geom *g, size_t filters);
tsr_status tsr_host_conv_wgrad(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref dy,
                               tsr_ref col, float beta, tsr_ref dw);
tsr_status tsr_host_transpose(tsr_backend *be, size_t rows, size_t cols, size_t inner, tsr_ref x,
                              tsr_ref y);
tsr_status tsr_host_transpose_bias(tsr_backend *be, size_t rows, size_t cols, size_t inner,
                                   tsr_ref x, tsr_ref bias, int relu, tsr_ref y);
tsr_status tsr_host_maxpool_forward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref x,
                                    tsr_ref y, tsr_ref idx);
tsr_status tsr_host_maxpool_backward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                     tsr_ref idx, tsr_ref dx);
tsr_status tsr_host_maxpool_backward_relu(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                          tsr_ref idx, tsr_ref y, tsr_ref dx);
tsr_status tsr_host_embed_forward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                  tsr_ref table, tsr_ref y);
tsr_status tsr_host_embed_backward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                   tsr_ref dy, tsr_ref dtable);
tsr_status tsr_host_dropout_forward(tsr_backend *be, size_t n, float p, uint64_t seed, tsr_ref x,
                                    tsr_ref y, tsr_ref mask);
tsr_status tsr_host_narrow16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref h);
tsr_status tsr_host_widen16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref h, tsr_ref x);
tsr_status tsr_host_round16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref y);
tsr_status tsr_host_round16_block(tsr_backend *be, tsr_precision p, size_t rows, size_t cols, tsr_ref x,
                                  size_t ldx, tsr_ref y, size_t ldy);
/* dst = bf16(src), n elements, split over the pool (the operands of cblas_sbgemm) */
void tsr_host_to_bf16(tsr_backend *be, size_t n, const float *src, uint16_t *dst);
/* OpenBLAS's cblas_sbgemm where the installed library exports it (looked up once), else 0. */
int tsr_host_has_sbgemm(void);
/* oneDNN's CPU engine where this build has oneDNN, else NULL. */
tsr_host_dnnl *tsr_host_dnnl_open(tsr_context *ctx);
void tsr_host_dnnl_close(tsr_context *ctx, tsr_host_dnnl *h); /* accepts NULL */
/* The implementation of oneDNN's bf16 matmul ("brg:avx512_core_bf16") where the CPU has bf16 dot
 * products (checked with a probe primitive), else NULL: bf16 GEMMs then round and call SGEMM. */
const char *tsr_host_dnnl_bf16(const tsr_host_dnnl *h);
/* Its dnnl_engine_t. */
struct dnnl_engine *tsr_host_dnnl_engine(const tsr_host_dnnl *h);
/* Direct float32 convolutions through oneDNN (host_conv.c; the backend's conv_* slots). */
int tsr_host_conv_direct(tsr_backend *be, const tsr_conv_geom *g, size_t filters, int pass);
tsr_status tsr_host_conv_forward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                 tsr_ref w, tsr_ref y);
tsr_status tsr_host_conv_backward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                  tsr_ref w, tsr_ref dy, float beta_dw, tsr_ref dw, float beta_dx,
                                  tsr_ref dx);
/* C = alpha op(A) op(B) + beta C, float32, row-major, on the calling thread alone, through the
 * backend's SGEMM (oneDNN's or OpenBLAS's: impl->sgemm_dnnl). Sizes fit int (the callers check). */
void tsr_host_sgemm(const tsr_backend *be, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                    const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);
/* oneDNN's dnnl_sgemm on one thread; 0 on success, else its status (-1 without oneDNN). */
int tsr_host_dnnl_sgemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                        size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc);
/* Whether `want` (a tsr_host_sgemm_lib) runs float32 GEMMs through oneDNN in this build; a
 * reason for the log when ONEDNN was asked for and cannot be, else *why = NULL. */
int tsr_host_dnnl_sgemm_wanted(int want, const char **why);
/* C = alpha op(A) op(B) + beta C on the calling thread alone, A and B bf16, row-major with
 * leading dimensions; 0 on success, else oneDNN's status. */
int tsr_host_dnnl_gemm_bf16(tsr_host_dnnl *h, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                            const uint16_t *a, size_t lda, const uint16_t *b, size_t ldb, float beta,
                            float *c, size_t ldc);
/* What runs a bf16-mode GEMM on this backend: "oneDNN <impl>", "OpenBLAS cblas_sbgemm" or
 * "rounded inputs + SGEMM". */
const char *tsr_host_bf16_gemm_name(const tsr_backend *be);
/* Optimizer steps (host_optim.c) and their kernels, one set per instruction set: the test
 * and the bench run every variant the CPU supports against the portable one. */
typedef struct tsr_host_optim_variant {
    const char *name;        /* "avx512", "avx2", "sse2", "portable" */
    int (*supported)(void);  /* NULL: always */
    void (*sgd)(size_t n, const tsr_sgd_params *p, float *w, const float *g, float *v);
    void (*adam)(size_t n, const tsr_adam_params *p, float *w, const float *g, float *m,
                 float *v);
} tsr_host_optim_variant;
/* Every variant compiled in, widest first, the portable one last; *list points at them. */
size_t tsr_host_optim_variants(const tsr_host_optim_variant **list);
/* The widest variant this CPU supports (the one the steps use). */
const tsr_host_optim_variant *tsr_host_optim_best(void);
tsr_status tsr_host_sgd_update(tsr_backend *be, size_t n, const tsr_sgd_params *p, tsr_ref w,
                               tsr_ref g, tsr_ref v);
tsr_status tsr_host_adam_update(tsr_backend *be, size_t n, const tsr_adam_params *p, tsr_ref w,
                                tsr_ref g, tsr_ref m, tsr_ref v);
/* transformer pieces (host_gpt.c) */
tsr_status tsr_host_layernorm_forward(tsr_backend *be, size_t rows, size_t dim, float eps,
                                      tsr_ref x, tsr_ref gamma, tsr_ref beta, tsr_ref y,
                                      tsr_ref mean, tsr_ref rstd);
tsr_status tsr_host_layernorm_backward(tsr_backend *be, size_t rows, size_t dim, tsr_ref x,
                                       tsr_ref gamma, tsr_ref mean, tsr_ref rstd, tsr_ref dy,
                                       tsr_ref dx, tsr_ref dgamma, tsr_ref dbeta, int add_dx);
tsr_status tsr_host_gelu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y);
tsr_status tsr_host_gelu_backward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref dy, tsr_ref dx);
tsr_status tsr_host_attention_forward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                      tsr_ref scratch, tsr_ref out);
tsr_status tsr_host_attention_backward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                       tsr_ref dout, tsr_ref scratch, tsr_ref dqkv);
tsr_status tsr_host_xent_forward(tsr_backend *be, size_t rows, size_t cols, tsr_ref logits,
                                 tsr_ref targets, tsr_ref probs, tsr_ref loss);
tsr_status tsr_host_xent_backward(tsr_backend *be, size_t rows, size_t cols, tsr_ref probs,
                                  tsr_ref targets, float scale, tsr_ref dlogits);

#endif
