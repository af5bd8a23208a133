/* The weight gradient of a few-channel convolution from its columns, dW = beta dW + dY col^T,
 * read with dY in the stage layout [images][filters][OH*OW] (no transpose). The first layer of
 * an image model (3 or 1 channels: 25-75 rows) has a dW too small for a GEMM to run well: as one
 * GEMM of 32 x 25 over 50k columns OpenBLAS reached 16-20 GFLOP/s a core on an AVX2 Zen, after
 * a transpose of dY; this kernel reaches about 30 with the transpose gone (oneDNN's own
 * first-layer weight gradient needs AVX-512). It runs where the CPU has AVX2 and FMA.
 *
 * Blocks of 4 filters x 3 rows keep 12 vector sums in registers over an image's output
 * positions (8 at a time, the rest one by one into the same lanes); each sum's lanes are
 * kept per (filter, row) across images and added pairwise at the end. A part of the work is a
 * run of filter blocks over all images, so every sum is taken in the same order whatever the
 * thread count. */
#include <string.h>
#include "backends/host/host.h"
#include "lib/core/internal.h"

#define WGRAD_FILTERS 4   /* filters per block */
#define WGRAD_ROWS 3      /* rows (channel x kernel offsets) per tile */
#define WGRAD_MAX_ROWS 128 /* the lanes of a block live on the stack: 16 KiB */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* FB filters x TB rows: the sums' lanes in lanes[(filter * rows + row) * 8]; d: the filters' dY
 * rows of one image (dstride apart), c: that image's column rows (cstride apart); pv positions
 * (a multiple of 8). */
#define WGRAD_TILE(FB, TB)                                                                          \
    __attribute__((target("avx2,fma"))) static void tile_##FB##x##TB(                             \
        const float *d, size_t dstride, const float *c, size_t cstride, size_t pv, float *lanes,  \
        size_t rows) {                                                                              \
        __m256 a[FB][TB];                                                                           \
        _Pragma("GCC unroll 8") for (int i = 0; i < FB; i++)                                        \
            _Pragma("GCC unroll 8") for (int j = 0; j < TB; j++)                                    \
                a[i][j] = _mm256_loadu_ps(lanes + ((size_t)i * rows + (size_t)j) * 8);               \
        for (size_t p = 0; p < pv; p += 8) {                                                        \
            __m256 x[TB];                                                                           \
            _Pragma("GCC unroll 8") for (int j = 0; j < TB; j++)                                    \
                x[j] = _mm256_loadu_ps(c + (size_t)j * cstride + p);                                 \
            _Pragma("GCC unroll 8") for (int i = 0; i < FB; i++) {                                  \
                __m256 y = _mm256_loadu_ps(d + (size_t)i * dstride + p);                             \
                _Pragma("GCC unroll 8") for (int j = 0; j < TB; j++)                                \
                    a[i][j] = _mm256_fmadd_ps(y, x[j], a[i][j]);                                    \
            }                                                                                       \
        }                                                                                           \
        _Pragma("GCC unroll 8") for (int i = 0; i < FB; i++)                                        \
            _Pragma("GCC unroll 8") for (int j = 0; j < TB; j++)                                    \
                _mm256_storeu_ps(lanes + ((size_t)i * rows + (size_t)j) * 8, a[i][j]);               \
    }
WGRAD_TILE(4, 3)
WGRAD_TILE(4, 1)
WGRAD_TILE(1, 3)
WGRAD_TILE(1, 1)

typedef struct wgrad_args {
    size_t images, filters, rows, ohw;
    const float *dy, *col;
    float beta;
    float *dw;
} wgrad_args;

/* Filters [f0, f0 + nf) (nf <= WGRAD_FILTERS) over all images. */
__attribute__((target("avx2,fma"))) static void wgrad_block(const wgrad_args *a, size_t f0, size_t nf) {
    float lanes[WGRAD_FILTERS * WGRAD_MAX_ROWS * 8];
    const size_t rows = a->rows, ohw = a->ohw, cols = a->images * ohw, pv = ohw & ~(size_t)7;
    memset(lanes, 0, nf * rows * 8 * sizeof *lanes);
    for (size_t n = 0; n < a->images; n++) {
        const float *d = a->dy + (n * a->filters + f0) * ohw, *c = a->col + n * ohw;
        if (nf == WGRAD_FILTERS) {
            size_t t = 0;
            for (; t + WGRAD_ROWS <= rows; t += WGRAD_ROWS)
                tile_4x3(d, ohw, c + t * cols, cols, pv, lanes + t * 8, rows);
            for (; t < rows; t++) tile_4x1(d, ohw, c + t * cols, cols, pv, lanes + t * 8, rows);
        } else {
            for (size_t f = 0; f < nf; f++) {
                size_t t = 0;
                for (; t + WGRAD_ROWS <= rows; t += WGRAD_ROWS)
                    tile_1x3(d + f * ohw, ohw, c + t * cols, cols, pv, lanes + (f * rows + t) * 8, rows);
                for (; t < rows; t++)
                    tile_1x1(d + f * ohw, ohw, c + t * cols, cols, pv, lanes + (f * rows + t) * 8, rows);
            }
        }
        for (size_t f = 0; f < nf; f++) /* positions past the last 8: one lane each */
            for (size_t t = 0; t < rows; t++)
                for (size_t p = pv; p < ohw; p++) {
                    float *l = lanes + (f * rows + t) * 8 + (p - pv);
                    *l = __builtin_fmaf(d[f * ohw + p], c[t * cols + p], *l);
                }
    }
    for (size_t f = 0; f < nf; f++)
        for (size_t t = 0; t < rows; t++) {
            const float *l = lanes + (f * rows + t) * 8;
            float sum = ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
            float *w = a->dw + (f0 + f) * rows + t;
            *w = a->beta != 0.0f ? *w + sum : sum;
        }
}

static void wgrad_blocks(void *arg, size_t lo, size_t hi) {
    const wgrad_args *a = arg;
    for (size_t b = lo; b < hi; b++) {
        size_t f0 = b * WGRAD_FILTERS;
        wgrad_block(a, f0, a->filters - f0 < WGRAD_FILTERS ? a->filters - f0 : WGRAD_FILTERS);
    }
}

static int cpu_has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int tsr_host_conv_wgrad_cols(tsr_backend *be, const tsr_conv_geom *g, size_t filters) {
    size_t rows = g->channels * g->kernel_h * g->kernel_w;
    /* fewer than 8 positions per image would all go through the one-lane tail */
    return be->precision == TSR_PRECISION_FP32 && filters && rows <= WGRAD_MAX_ROWS &&
           g->out_h * g->out_w >= 8 && cpu_has_avx2_fma();
}

tsr_status tsr_host_conv_wgrad(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref dy,
                               tsr_ref col, float beta, tsr_ref dw) {
    wgrad_args a = {g->batch, filters, g->channels * g->kernel_h * g->kernel_w, g->out_h * g->out_w,
                    tsr_host_f32(dy), tsr_host_f32(col), beta, tsr_host_f32(dw)};
    tsr_host_parallel(be, (filters + WGRAD_FILTERS - 1) / WGRAD_FILTERS, 1, wgrad_blocks, &a);
    return TSR_OK;
}

#else /* not x86-64: conv2d transposes dY and runs a GEMM */

int tsr_host_conv_wgrad_cols(tsr_backend *be, const tsr_conv_geom *g, size_t filters) {
    (void)be, (void)g, (void)filters;
    return 0;
}

tsr_status tsr_host_conv_wgrad(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref dy,
                               tsr_ref col, float beta, tsr_ref dw) {
    (void)g, (void)filters, (void)dy, (void)col, (void)beta, (void)dw;
    return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED, "conv_wgrad: no kernel for this CPU");
}
#endif
