/* Host CPU backend: memory, copies and BLAS (OpenBLAS cblas_sgemm, row-major).
 * Layer ops, conversions and optimizers live in host_ops.c, split over a small thread pool
 * (host_pool.c) when large. Everything runs synchronously, so finish() has nothing to wait
 * for. */
#include <cblas.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <strings.h>
#include <stdint.h>
#include <string.h>
#include "backends/host/host.h"
#include "lib/core/internal.h"

/* Data blocks are aligned for AVX-512 loads and cache lines. */
#define HOST_ALIGN 64

static void host_destroy(tsr_backend *be) {
    tsr_host_impl *h = tsr_host_impl_of(be);
    if (h) {
        tsr_host_pool_free(be->ctx, h->pool);
        tsr_host_dnnl_close(be->ctx, h->dnnl);
        tsr_free(be->ctx, h->conv_scratch);
        tsr_free(be->ctx, h);
    }
    tsr_free(be->ctx, be);
}

static tsr_status host_buf_alloc(tsr_backend *be, tsr_buf *buf) {
    if (buf->bytes > SIZE_MAX - HOST_ALIGN)
        return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "host buffer of %zu bytes is too large",
                         buf->bytes);
    /* over-allocate and align; impl keeps the pointer tsr_free needs */
    void *raw = tsr_malloc(be->ctx, buf->bytes + HOST_ALIGN);
    if (!raw)
        return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "host buffer of %zu bytes", buf->bytes);
    uintptr_t p = ((uintptr_t)raw + HOST_ALIGN - 1) & ~(uintptr_t)(HOST_ALIGN - 1);
    buf->impl = raw;
    buf->host = (void *)p;
    return TSR_OK;
}

static void host_buf_free(tsr_backend *be, tsr_buf *buf) {
    tsr_free(be->ctx, buf->impl);
    buf->impl = NULL;
    buf->host = NULL;
}

/* Registered memory from a communicator: computed on in place. */
static tsr_status host_buf_wrap(tsr_backend *be, tsr_buf *buf, void *mem) {
    (void)be;
    buf->impl = NULL;
    buf->host = mem;
    return TSR_OK;
}

static tsr_status host_write(tsr_backend *be, tsr_buf *dst, size_t byte_off, const void *src,
                             size_t bytes) {
    (void)be;
    memmove((char *)dst->host + byte_off, src, bytes);
    return TSR_OK;
}

static tsr_status host_read(tsr_backend *be, tsr_buf *src, size_t byte_off, void *dst,
                            size_t bytes) {
    (void)be;
    memmove(dst, (const char *)src->host + byte_off, bytes);
    return TSR_OK;
}

static tsr_status host_copy(tsr_backend *be, tsr_buf *dst, size_t dst_byte_off, tsr_buf *src,
                            size_t src_byte_off, size_t bytes) {
    (void)be;
    /* ranges inside one buffer may overlap */
    memmove((char *)dst->host + dst_byte_off, (const char *)src->host + src_byte_off, bytes);
    return TSR_OK;
}

static tsr_status host_finish(tsr_backend *be) {
    (void)be;
    return TSR_OK;
}

/* C = beta*C for an m x n block (BLAS semantics: beta == 0 overwrites, even NaN). */
static void scale_block(size_t m, size_t n, float beta, float *c, size_t ldc) {
    for (size_t i = 0; i < m; i++) {
        float *row = c + i * ldc;
        if (beta == 0.0f)
            memset(row, 0, n * sizeof *row);
        else if (beta != 1.0f)
            for (size_t j = 0; j < n; j++) row[j] *= beta;
    }
}

static tsr_status check_blas_int(tsr_backend *be, size_t m, size_t n, size_t k, size_t lda,
                                 size_t ldb, size_t ldc) {
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX || ldb > INT_MAX ||
        ldc > INT_MAX)
        return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED,
                         "gemm: a size or leading dimension exceeds the BLAS int range "
                         "(m %zu n %zu k %zu lda %zu ldb %zu ldc %zu)",
                         m, n, k, lda, ldb, ldc);
    return TSR_OK;
}

/* cblas_sbgemm's type (bfloat16 is OpenBLAS's uint16_t). */
typedef void (*sbgemm_fn)(enum CBLAS_ORDER, enum CBLAS_TRANSPOSE, enum CBLAS_TRANSPOSE, blasint,
                          blasint, blasint, float, const uint16_t *, blasint, const uint16_t *,
                          blasint, float, float *, blasint);

/* Looked up at run time: Debian's OpenBLAS 0.3.21 declares it in cblas.h but is built
 * without it (BUILD_BFLOAT16), and a newer library may be swapped in under the same soname. */
static sbgemm_fn sbgemm_lookup(void) {
    static _Atomic int looked;      /* threads racing on the first call find the same symbol */
    static sbgemm_fn _Atomic found;
    if (!atomic_load(&looked)) {
        void *sym = dlsym(RTLD_DEFAULT, "cblas_sbgemm");
        sbgemm_fn f;
        memcpy(&f, &sym, sizeof f); /* object to function pointer: POSIX guarantees it works */
        atomic_store(&found, f);
        atomic_store(&looked, 1);
    }
    return atomic_load(&found);
}

int tsr_host_has_sbgemm(void) { return sbgemm_lookup() != NULL; }

/* The bf16 GEMM this backend runs: oneDNN first (twice SGEMM's rate where the CPU has bf16 dot
 * products), then OpenBLAS's sbgemm. */
static tsr_host_dnnl *bf16_engine(const tsr_backend *be) {
    tsr_host_dnnl *d = be->impl ? tsr_host_impl_of(be)->dnnl : NULL;
    return tsr_host_dnnl_bf16(d) ? d : NULL;
}
static int has_bf16_gemm(const tsr_backend *be) { return bf16_engine(be) || sbgemm_lookup(); }

const char *tsr_host_bf16_gemm_name(const tsr_backend *be) {
    static _Thread_local char name[96];
    if (bf16_engine(be)) {
        snprintf(name, sizeof name, "oneDNN %s", tsr_host_dnnl_bf16(bf16_engine(be)));
        return name;
    }
    return sbgemm_lookup() ? "OpenBLAS cblas_sbgemm" : "rounded inputs + SGEMM";
}

/* Element i of an operand: float, or bf16 for cblas_sbgemm. */
static const void *elem_at(const void *p, int bf16, size_t i) {
    return bf16 ? (const void *)((const uint16_t *)p + i) : (const void *)((const float *)p + i);
}

#define SGEMM_DNNL_MIN_N 32

void tsr_host_sgemm(const tsr_backend *be, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                    const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    /* oneDNN's kernels are blocked along C's rows of 16+ floats: a C narrower than
     * SGEMM_DNNL_MIN_N wastes lanes, and OpenBLAS ran those 1.1-1.8x faster (the cnn's 32 x 25
     * first-layer weight gradient, a 10-class output layer) where oneDNN ran every wider shape
     * measured 1.0-2x faster (attention's 64 x 64 x 64 twice). oneDNN fails only on arguments
     * the callers already checked; OpenBLAS then computes the same product (in its own order)
     * rather than leave C unwritten. */
    if (tsr_host_impl_of(be)->sgemm_dnnl && n >= SGEMM_DNNL_MIN_N &&
        !tsr_host_dnnl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc))
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* 0, or oneDNN's failure status (bf16 through dnnl only) */
static int gemm_one(const tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n, size_t k,
                    float alpha, const void *a, size_t lda, const void *b, size_t ldb, float beta, float *c,
                    size_t ldc, int bf16, tsr_host_dnnl *dnnl) {
    if (k == 0 || alpha == 0.0f) { /* A and B may be empty: never hand BLAS a zero ld */
        scale_block(m, n, beta, c, ldc);
        return 0;
    }
    if (bf16 && dnnl)
        return tsr_host_dnnl_gemm_bf16(dnnl, ta != TSR_NO_TRANS, tb != TSR_NO_TRANS, m, n, k, alpha, a, lda, b,
                                  ldb, beta, c, ldc);
    if (bf16)
        sbgemm_lookup()(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                        (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
    else
        tsr_host_sgemm(be, ta != TSR_NO_TRANS, tb != TSR_NO_TRANS, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return 0;
}

/* Threading: the GEMMs are split over the pool's threads, each calling a single-threaded
 * OpenBLAS (set at creation). Per-image conv GEMMs (64x196x800) handed one at a
 * time to a 2-thread OpenBLAS spent much of their time in its fork-join and spinning, and
 * collapsed when other processes had the cores; a pool part is a whole run of images. */

/* Below this many multiply-adds a GEMM (or a batch item) is not worth a pool job. */
#define GEMM_PAR_MIN_WORK ((size_t)1 << 20)
/* A large single GEMM is cut into at most GEMM_PARTS parts of whole 16-row/column blocks,
 * at least GEMM_PAR_MIN_SPAN wide (each part repacks the shared operand). The cut depends on
 * the shape only, never on the thread count: OpenBLAS rounds a part differently from the
 * whole, so the results are the same bits with any number of threads. */
#define GEMM_PARTS 8
#define GEMM_PAR_MIN_SPAN 64

typedef struct gemm_args {
    tsr_trans ta, tb;
    size_t m, n, k, lda, ldb, ldc, sa, sb, sc;
    float alpha, beta;
    const void *a, *b; /* float, or bf16 when bf16 is set */
    float *c;
    int bf16;
    tsr_host_dnnl *dnnl; /* bf16: through oneDNN (else cblas_sbgemm) */
    _Atomic int failed;  /* a part's oneDNN status */
    int split_rows; /* single GEMM: parts are rows (else columns) of C */
    size_t part;    /* rows or columns per part */
    const tsr_backend *be; /* its SGEMM library */
} gemm_args;

static void gemm_batch_range(void *arg, size_t lo, size_t hi) {
    gemm_args *g = arg;
    for (size_t i = lo; i < hi; i++) {
        int rc = gemm_one(g->be, g->ta, g->tb, g->m, g->n, g->k, g->alpha, elem_at(g->a, g->bf16, i * g->sa),
                          g->lda, elem_at(g->b, g->bf16, i * g->sb), g->ldb, g->beta, g->c + i * g->sc,
                          g->ldc, g->bf16, g->dnnl);
        if (rc) atomic_store(&g->failed, rc);
    }
}

/* Parts [lo, hi) of the C rows (they need A's rows, A^T's columns) or of the C columns. */
static void gemm_split_range(void *arg, size_t lo, size_t hi) {
    gemm_args *g = arg;
    size_t span = g->split_rows ? g->m : g->n;
    for (size_t p = lo; p < hi; p++) {
        size_t r0 = p * g->part, r1 = r0 + g->part < span ? r0 + g->part : span;
        int rc;
        if (g->split_rows)
            rc = gemm_one(g->be, g->ta, g->tb, r1 - r0, g->n, g->k, g->alpha,
                          elem_at(g->a, g->bf16, g->ta ? r0 : r0 * g->lda), g->lda, g->b, g->ldb,
                          g->beta, g->c + r0 * g->ldc, g->ldc, g->bf16, g->dnnl);
        else
            rc = gemm_one(g->be, g->ta, g->tb, g->m, r1 - r0, g->k, g->alpha, g->a, g->lda,
                          elem_at(g->b, g->bf16, g->tb ? r0 * g->ldb : r0), g->ldb, g->beta,
                          g->c + r0, g->ldc, g->bf16, g->dnnl);
        if (rc) atomic_store(&g->failed, rc);
    }
}

static size_t gemm_work(size_t m, size_t n, size_t k) {
    /* saturating: only compared against GEMM_PAR_MIN_WORK */
    size_t mn = n && m > SIZE_MAX / n ? SIZE_MAX : m * n;
    return k && mn > SIZE_MAX / k ? SIZE_MAX : mn * k;
}

/* bf16 mode with a bf16 GEMM: A and B converted to bf16 in be->round_buf (host_gemm_native
 * told the wrapper not to round them). */
static tsr_status to_bf16_gemm(tsr_backend *be, gemm_args *g, size_t batch) {
    if (be->precision != TSR_PRECISION_BF16 || !has_bf16_gemm(be) || !g->k || g->alpha == 0.0f)
        return TSR_OK;
    size_t sa = tsr_matrix_span(g->ta ? g->k : g->m, g->ta ? g->m : g->k, g->lda, g->sa, batch);
    size_t sb = tsr_matrix_span(g->tb ? g->n : g->k, g->tb ? g->k : g->n, g->ldb, g->sb, batch);
    TSR_TRY(tsr_backend_round_room(be, (sa + sb + 1) / 2));
    uint16_t *a16 = be->round_buf->host, *b16 = a16 + sa;
    tsr_host_to_bf16(be, sa, g->a, a16);
    tsr_host_to_bf16(be, sb, g->b, b16);
    g->a = a16;
    g->b = b16;
    g->bf16 = 1;
    g->dnnl = bf16_engine(be);
    return TSR_OK;
}

/* After the parts: a oneDNN failure names the GEMM. */
static tsr_status gemm_outcome(tsr_backend *be, gemm_args *g) {
    int rc = atomic_load(&g->failed);
    if (!rc) return TSR_OK;
    return tsr_error(be->ctx, TSR_ERR_BLAS, "host bf16 gemm (oneDNN matmul) m %zu n %zu k %zu "
                     "lda %zu ldb %zu ldc %zu: dnnl status %d", g->m, g->n, g->k, g->lda, g->ldb, g->ldc, rc);
}

static int host_gemm_native(tsr_backend *be, tsr_precision p) {
    return p == TSR_PRECISION_BF16 && has_bf16_gemm(be);
}

static tsr_status host_gemm(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                            size_t k, float alpha, tsr_ref a, size_t lda, tsr_ref b, size_t ldb,
                            float beta, tsr_ref c, size_t ldc) {
    TSR_TRY(check_blas_int(be, m, n, k, lda, ldb, ldc));
    gemm_args g = {ta, tb, m, n, k, lda, ldb, ldc, 0, 0, 0, alpha, beta,
                   tsr_host_f32(a), tsr_host_f32(b), tsr_host_f32(c), 0, NULL, 0, m >= n, 0, be};
    TSR_TRY(to_bf16_gemm(be, &g, 1));
    size_t span = g.split_rows ? m : n;
    if (k == 0 || alpha == 0.0f || gemm_work(m, n, k) < GEMM_PAR_MIN_WORK ||
        span < 2 * GEMM_PAR_MIN_SPAN) {
        atomic_store(&g.failed, gemm_one(be, ta, tb, m, n, k, alpha, g.a, lda, g.b, ldb, beta, g.c, ldc,
                                         g.bf16, g.dnnl));
        return gemm_outcome(be, &g);
    }
    g.part = ((span + GEMM_PARTS - 1) / GEMM_PARTS + 15) & ~(size_t)15;
    if (g.part < GEMM_PAR_MIN_SPAN) g.part = GEMM_PAR_MIN_SPAN;
    tsr_host_parallel(be, (span + g.part - 1) / g.part, 1, gemm_split_range, &g);
    return gemm_outcome(be, &g);
}

static tsr_status host_gemm_batched(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m,
                                    size_t n, size_t k, float alpha, tsr_ref a, size_t lda,
                                    size_t stride_a, tsr_ref b, size_t ldb, size_t stride_b,
                                    float beta, tsr_ref c, size_t ldc, size_t stride_c,
                                    size_t batch) {
    TSR_TRY(check_blas_int(be, m, n, k, lda, ldb, ldc));
    gemm_args g = {ta, tb, m, n, k, lda, ldb, ldc, stride_a, stride_b, stride_c, alpha, beta,
                   tsr_host_f32(a), tsr_host_f32(b), tsr_host_f32(c), 0, NULL, 0, 0, 0, be};
    if (batch == 1) /* one GEMM: split it instead */
        return host_gemm(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    TSR_TRY(to_bf16_gemm(be, &g, batch));
    size_t work = gemm_work(m, n, k);
    if (m && n && stride_c < (m - 1) * ldc + n) { /* outputs overlap: keep the order */
        gemm_batch_range(&g, 0, batch);
        return gemm_outcome(be, &g);
    }
    size_t grain = work >= GEMM_PAR_MIN_WORK ? 1 : GEMM_PAR_MIN_WORK / (work ? work : 1);
    tsr_host_parallel(be, batch, grain, gemm_batch_range, &g);
    return gemm_outcome(be, &g);
}

static const tsr_backend_iface host_iface = {
    .name = "host",
    .destroy = host_destroy,
    .buf_alloc = host_buf_alloc,
    .buf_free = host_buf_free,
    .buf_wrap = host_buf_wrap,
    .write = host_write,
    .read = host_read,
    .copy = host_copy,
    .fill = tsr_host_fill,
    .finish = host_finish,
    .gemm = host_gemm,
    .gemm_batched = host_gemm_batched,
    .axpy = tsr_host_axpy,
    .scale = tsr_host_scale,
    .mul = tsr_host_mul,
    .sum = tsr_host_sum,
    .first_nonfinite = tsr_host_first_nonfinite,
    .bias_add = tsr_host_bias_add,
    .bias_relu = tsr_host_bias_relu,
    .bias_grad = tsr_host_bias_grad,
    .relu_forward = tsr_host_relu_forward,
    .relu_backward = tsr_host_relu_backward,
    .softmax_xent_forward = tsr_host_softmax_xent_forward,
    .softmax_xent_backward = tsr_host_softmax_xent_backward,
    .im2col = tsr_host_im2col,
    .col2im = tsr_host_col2im,
    .conv_dinput = tsr_host_conv_dinput,
    .conv_wgrad_cols = tsr_host_conv_wgrad_cols,
    .conv_wgrad = tsr_host_conv_wgrad,
    .transpose_bias = tsr_host_transpose_bias,
    .transpose = tsr_host_transpose,
    .conv_direct = tsr_host_conv_direct,
    .conv_forward = tsr_host_conv_forward,
    .conv_backward = tsr_host_conv_backward,
    .maxpool_forward = tsr_host_maxpool_forward,
    .maxpool_backward = tsr_host_maxpool_backward,
    .maxpool_backward_relu = tsr_host_maxpool_backward_relu,
    .dropout_forward = tsr_host_dropout_forward,
    .embed_forward = tsr_host_embed_forward,
    .embed_backward = tsr_host_embed_backward,
    .narrow16 = tsr_host_narrow16,
    .widen16 = tsr_host_widen16,
    .round16 = tsr_host_round16,
    .round16_block = tsr_host_round16_block,
    .gemm_native = host_gemm_native,
    .sgd_update = tsr_host_sgd_update,
    .adam_update = tsr_host_adam_update,
    .layernorm_forward = tsr_host_layernorm_forward,
    .layernorm_backward = tsr_host_layernorm_backward,
    .gelu_forward = tsr_host_gelu_forward,
    .gelu_backward = tsr_host_gelu_backward,
    .attention_forward = tsr_host_attention_forward,
    .attention_backward = tsr_host_attention_backward,
    .xent_forward = tsr_host_xent_forward,
    .xent_backward = tsr_host_xent_backward,
};

/* OpenBLAS picks its kernels from CPUID when it loads. Some VMs report a generic CPU model and a
 * DYNAMIC_ARCH OpenBLAS then falls back to its Prescott (SSE3) kernels: on the 16-core AVX-512
 * VM of our GPU machine SGEMM 2048^3 ran at 86 GFLOP/s, and at 535 with OPENBLAS_CORETYPE=SkylakeX.
 * The choice cannot change after load, so all a library can do is say what to set. */
const char *tsr_host_blas_advice(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    const char *core = openblas_get_corename();
    static const char *const generic[] = {"prescott", "core2", "penryn", "dunnington", "nehalem",
                                          "atom", "opteron", "barcelona", "unknown"};
    int is_generic = 0;
    for (size_t i = 0; core && i < sizeof generic / sizeof *generic; i++)
        is_generic |= !strcasecmp(core, generic[i]);
    if (!is_generic) return NULL;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        return "SkylakeX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
    return NULL;
}

tsr_status tsr_backend_host_create(tsr_context *ctx, tsr_backend **out) {
    if (!ctx || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_backend_host_create: NULL argument");
    *out = NULL;
    /* device 0 is the host by construction; look it up by id so a reordering cannot fool us */
    int index = tsr_context_find_device(ctx, "host");
    const tsr_device_info *info = index >= 0 ? tsr_context_device(ctx, index) : NULL;
    if (!info || info->backend != TSR_BACKEND_HOST)
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "the context has no \"host\" device record");
    tsr_backend *be = tsr_calloc(ctx, 1, sizeof *be);
    if (!be) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "host backend");
    be->iface = &host_iface;
    be->ctx = ctx;
    be->device = *info;
    tsr_host_pool *pool = NULL;
    tsr_status st = tsr_host_pool_create(
        ctx, tsr_host_threads(ctx->opts.host_threads, info->compute_units), &pool);
    if (st != TSR_OK) {
        tsr_free(ctx, be);
        return st;
    }
    tsr_host_impl *impl = tsr_calloc(ctx, 1, sizeof *impl);
    if (!impl) {
        tsr_host_pool_free(ctx, pool);
        tsr_free(ctx, be);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "host backend");
    }
    impl->pool = pool;
    impl->dnnl = tsr_host_dnnl_open(ctx);
    const char *why;
    impl->sgemm_dnnl = tsr_host_dnnl_sgemm_wanted(ctx->opts.host_sgemm, &why);
    if (why) tsr_log(ctx, TSR_LOG_WARN, "host: float32 GEMMs run OpenBLAS, not oneDNN as asked: %s", why);
    be->impl = impl;
    /* The pool splits the GEMMs itself: OpenBLAS threads on top would oversubscribe the cores
     * (and make the bits depend on their count). Process-wide: OpenBLAS has one setting, and
     * only the host backend calls BLAS. */
    openblas_set_num_threads(1);
    const char *better = ctx->opts.no_blas_advice ? NULL : tsr_host_blas_advice();
    if (better)
        tsr_log(ctx, TSR_LOG_WARN,
                "host: OpenBLAS runs its generic %s kernels on a CPU that has %s's instructions; "
                "start the program with OPENBLAS_CORETYPE=%s (6x faster SGEMM measured on such a VM)",
                openblas_get_corename(), better, better);
    *out = be;
    return TSR_OK;
}
