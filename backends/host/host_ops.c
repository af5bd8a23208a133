/* Host CPU backend: element-wise ops, layers and conversions (optimizers: host_optim.c).
 * Loops are written so gcc vectorises them: unit-stride inner loops, no per-element branches
 * on geometry (im2col/col2im compute the valid column range of each kernel offset once), and
 * the common 2x2/stride 2 max pooling has its own loop. Element-wise ops allow their output
 * to alias an input at the same index (in-place use), so they do not use restrict. */
#if defined(__GNUC__) && !defined(__clang__)
/* -O2 in gcc 12 only vectorises loops whose trip count is a multiple of the vector width;
 * O3 also emits remainder loops. */
#pragma GCC optimize("O3")
#endif
#include <limits.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include "backends/host/host.h"
#include "lib/core/internal.h"
#include "lib/core/precision.h"

/* Element-wise work is split into blocks of BLOCK elements (aligned parts for the threads);
 * below GRAIN elements per thread an op runs on the caller alone. */
#define BLOCK 4096
#define GRAIN 32768
#define BLOCKS(n) (((n) + BLOCK - 1) / BLOCK)
#define GRAIN_BLOCKS (GRAIN / BLOCK)
/* Units of `work` elements each: how many units make a worthwhile part. */
static size_t grain_units(size_t work) {
    return work >= GRAIN ? 1 : GRAIN / (work ? work : 1);
}

typedef struct ew_args {
    size_t n;
    float alpha;
    const float *a, *b;
    float *y;
} ew_args;

static void block_range(const ew_args *e, size_t lo_b, size_t hi_b, size_t *lo, size_t *hi) {
    *lo = lo_b * BLOCK;
    *hi = hi_b * BLOCK < e->n ? hi_b * BLOCK : e->n;
}

/* ---- fill (host.c's slot, here for the pool) ---- */

static void fill_range(void *arg, size_t lo_b, size_t hi_b) {
    const ew_args *e = arg;
    size_t lo, hi;
    block_range(e, lo_b, hi_b, &lo, &hi);
    float *p = e->y, v = e->alpha;
    if (v == 0.0f && !signbit(v)) {
        memset(p + lo, 0, (hi - lo) * sizeof *p);
        return;
    }
    for (size_t i = lo; i < hi; i++) p[i] = v;
}

tsr_status tsr_host_fill(tsr_backend *be, tsr_ref x, size_t n, float value) {
    ew_args e = {n, value, NULL, NULL, tsr_host_f32(x)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS * 4, fill_range, &e);
    return TSR_OK;
}

/* ---- BLAS level 1 ---- */

static void axpy_range(void *arg, size_t lo_b, size_t hi_b) {
    const ew_args *e = arg;
    size_t lo, hi;
    block_range(e, lo_b, hi_b, &lo, &hi);
    const float *px = e->a, alpha = e->alpha;
    float *py = e->y;
    for (size_t i = lo; i < hi; i++) py[i] += alpha * px[i];
}

tsr_status tsr_host_axpy(tsr_backend *be, size_t n, float alpha, tsr_ref x, tsr_ref y) {
    ew_args e = {n, alpha, tsr_host_f32(x), NULL, tsr_host_f32(y)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS, axpy_range, &e);
    return TSR_OK;
}

static void scale_range(void *arg, size_t lo_b, size_t hi_b) {
    const ew_args *e = arg;
    size_t lo, hi;
    block_range(e, lo_b, hi_b, &lo, &hi);
    float *px = e->y, alpha = e->alpha;
    for (size_t i = lo; i < hi; i++) px[i] *= alpha;
}

tsr_status tsr_host_scale(tsr_backend *be, size_t n, float alpha, tsr_ref x) {
    ew_args e = {n, alpha, NULL, NULL, tsr_host_f32(x)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS, scale_range, &e);
    return TSR_OK;
}

static void mul_range(void *arg, size_t lo_b, size_t hi_b) {
    const ew_args *e = arg;
    size_t lo, hi;
    block_range(e, lo_b, hi_b, &lo, &hi);
    const float *pa = e->a, *pb = e->b;
    float *py = e->y;
    for (size_t i = lo; i < hi; i++) py[i] = pa[i] * pb[i];
}

tsr_status tsr_host_mul(tsr_backend *be, size_t n, tsr_ref a, tsr_ref b, tsr_ref y) {
    ew_args e = {n, 0.0f, tsr_host_f32(a), tsr_host_f32(b), tsr_host_f32(y)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS, mul_range, &e);
    return TSR_OK;
}

/* Sum in double (four partial sums keep the dependency chains short). */
static double sum_f64(const float *restrict x, size_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++) s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

tsr_status tsr_host_sum(tsr_backend *be, size_t n, tsr_ref x, tsr_ref out) {
    (void)be;
    float s = (float)sum_f64(tsr_host_f32(x), n);
    *tsr_host_f32(out) = s;
    return TSR_OK;
}

/* ---- non-finite screen: each thread screens its blocks, the smallest index wins; with the
 * squared norm, item 0 is that whole serial sum (its order is fixed) and items 1.. the
 * blocks, so one thread sums while the others screen ---- */

typedef struct screen_args {
    size_t n;
    const float *x;
    double *sumsq;        /* NULL: screen only */
    _Atomic size_t first; /* n while none is found */
} screen_args;

static void screen_items(void *arg, size_t lo, size_t hi) {
    screen_args *a = arg;
    size_t base = a->sumsq ? 1 : 0; /* item base + b is block b */
    if (lo < base) {
        *a->sumsq = tsr_sumsq_f32(a->x, a->n);
        lo = base;
    }
    if (lo >= hi) return;
    size_t b0 = (lo - base) * BLOCK, b1 = (hi - base) * BLOCK < a->n ? (hi - base) * BLOCK : a->n;
    if (atomic_load(&a->first) < b0) return; /* an earlier one is already known */
    size_t i = b0 + tsr_first_nonfinite_f32(a->x + b0, b1 - b0);
    if (i == b1) return;
    size_t cur = atomic_load(&a->first);
    while (i < cur && !atomic_compare_exchange_weak(&a->first, &cur, i)) {}
}

tsr_status tsr_host_first_nonfinite(tsr_backend *be, size_t n, tsr_ref x, size_t *first,
                                    double *sumsq) {
    screen_args a = {n, tsr_host_f32(x), sumsq, n};
    tsr_host_parallel(be, BLOCKS(n) + (sumsq ? 1 : 0), GRAIN_BLOCKS * 4, screen_items, &a);
    *first = atomic_load(&a.first);
    return TSR_OK;
}

/* ---- bias ---- */

typedef struct bias_args {
    size_t outer, channels, inner;
    const float *src;
    float *dst;
    int relu; /* bias_add_planes: then max(., 0) */
} bias_args;

/* dense: rows [lo, hi) of y get the bias row */
static void bias_add_rows(void *arg, size_t lo, size_t hi) {
    const bias_args *a = arg;
    const float *restrict b = a->src;
    for (size_t o = lo; o < hi; o++) {
        float *restrict row = a->dst + o * a->channels;
        for (size_t c = 0; c < a->channels; c++) row[c] += b[c];
    }
}

/* conv: planes [lo, hi) of the outer*channels planes */
static void bias_add_planes(void *arg, size_t lo, size_t hi) {
    const bias_args *a = arg;
    for (size_t q = lo; q < hi; q++) {
        float *restrict plane = a->dst + q * a->inner;
        const float bc = a->src[q % a->channels];
        if (!a->relu) {
            for (size_t i = 0; i < a->inner; i++) plane[i] += bc;
            continue;
        }
        for (size_t i = 0; i < a->inner; i++) { /* bias_add's sum, relu_forward's select */
            float v = plane[i] + bc;
            plane[i] = v > 0.0f ? v : 0.0f;
        }
    }
}

tsr_status tsr_host_bias_add(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                             tsr_ref bias, tsr_ref y) {
    bias_args a = {outer, channels, inner, tsr_host_f32(bias), tsr_host_f32(y), 0};
    if (inner == 1)
        tsr_host_parallel(be, outer, grain_units(channels), bias_add_rows, &a);
    else
        tsr_host_parallel(be, outer * channels, grain_units(inner), bias_add_planes, &a);
    return TSR_OK;
}

tsr_status tsr_host_bias_relu(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                              tsr_ref bias, tsr_ref y) {
    if (inner == 1) { /* rows: the two passes (a dense layer's output is small) */
        TSR_TRY(tsr_host_bias_add(be, outer, channels, inner, bias, y));
        return tsr_host_relu_forward(be, outer * channels, y, y);
    }
    bias_args a = {outer, channels, inner, tsr_host_f32(bias), tsr_host_f32(y), 1};
    tsr_host_parallel(be, outer * channels, grain_units(inner), bias_add_planes, &a);
    return TSR_OK;
}

/* dense: channels [lo, hi) summed down the rows, unit stride over channels */
static void bias_grad_rows(void *arg, size_t lo, size_t hi) {
    const bias_args *a = arg;
    float *restrict db = a->dst;
    for (size_t o = 0; o < a->outer; o++) {
        const float *restrict row = a->src + o * a->channels;
        for (size_t c = lo; c < hi; c++) db[c] += row[c];
    }
}

/* conv: channels [lo, hi), each summed over every sample's plane in double */
static void bias_grad_planes(void *arg, size_t lo, size_t hi) {
    const bias_args *a = arg;
    for (size_t c = lo; c < hi; c++) {
        double s = 0;
        for (size_t o = 0; o < a->outer; o++)
            s += sum_f64(a->src + (o * a->channels + c) * a->inner, a->inner);
        a->dst[c] += (float)s;
    }
}

tsr_status tsr_host_bias_grad(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                              tsr_ref dy, tsr_ref db) {
    bias_args a = {outer, channels, inner, tsr_host_f32(dy), tsr_host_f32(db), 0};
    if (inner == 1)
        tsr_host_parallel(be, channels, grain_units(outer) < 16 ? 16 : grain_units(outer),
                          bias_grad_rows, &a);
    else
        tsr_host_parallel(be, channels, grain_units(outer * inner), bias_grad_planes, &a);
    return TSR_OK;
}

/* ---- activations ---- */

static void relu_fwd_range(void *arg, size_t lo_b, size_t hi_b) {
    const ew_args *e = arg;
    size_t lo, hi;
    block_range(e, lo_b, hi_b, &lo, &hi);
    const float *px = e->a;
    float *py = e->y;
    for (size_t i = lo; i < hi; i++) py[i] = px[i] > 0.0f ? px[i] : 0.0f;
}

tsr_status tsr_host_relu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y) {
    ew_args e = {n, 0.0f, tsr_host_f32(x), NULL, tsr_host_f32(y)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS, relu_fwd_range, &e);
    return TSR_OK;
}

static void relu_bwd_range(void *arg, size_t lo_b, size_t hi_b) {
    const ew_args *e = arg;
    size_t lo, hi;
    block_range(e, lo_b, hi_b, &lo, &hi);
    const float *py = e->a, *pdy = e->b;
    float *pdx = e->y;
    for (size_t i = lo; i < hi; i++) {
        float d = pdy[i]; /* loaded unconditionally so the loop has no branch */
        pdx[i] = py[i] > 0.0f ? d : 0.0f;
    }
}

tsr_status tsr_host_relu_backward(tsr_backend *be, size_t n, tsr_ref y, tsr_ref dy, tsr_ref dx) {
    ew_args e = {n, 0.0f, tsr_host_f32(y), tsr_host_f32(dy), tsr_host_f32(dx)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS, relu_bwd_range, &e);
    return TSR_OK;
}

/* ---- softmax + cross-entropy ---- */

tsr_status tsr_host_softmax_xent_forward(tsr_backend *be, size_t rows, size_t cols,
                                         tsr_ref logits, tsr_ref labels, tsr_ref probs,
                                         tsr_ref loss) {
    (void)be;
    const float *pl = tsr_host_f32(logits);
    const int32_t *lab = tsr_host_i32(labels);
    float *pp = tsr_host_f32(probs), *ploss = tsr_host_f32(loss);
    for (size_t r = 0; r < rows; r++) {
        const float *l = pl + r * cols;
        float *p = pp + r * cols;
        float mx = l[0];
        for (size_t j = 1; j < cols; j++) mx = l[j] > mx ? l[j] : mx;
        /* read the label's logit before p (which may alias l) is written */
        int32_t y = lab[r];
        float zy = (y >= 0 && (size_t)y < cols) ? l[y] - mx : NAN;
        double s = 0;
        for (size_t j = 0; j < cols; j++) {
            float e = expf(l[j] - mx); /* <= 1: no overflow for any logit size */
            p[j] = e;
            s += e;
        }
        float inv = (float)(1.0 / s);
        for (size_t j = 0; j < cols; j++) p[j] *= inv;
        ploss[r] = (float)(log(s) - (double)zy); /* log-sum-exp form */
    }
    return TSR_OK;
}

tsr_status tsr_host_softmax_xent_backward(tsr_backend *be, size_t rows, size_t cols,
                                          tsr_ref probs, tsr_ref labels, float scale,
                                          tsr_ref dlogits) {
    (void)be;
    const float *pp = tsr_host_f32(probs);
    const int32_t *lab = tsr_host_i32(labels);
    float *pd = tsr_host_f32(dlogits);
    for (size_t r = 0; r < rows; r++) {
        const float *p = pp + r * cols;
        float *d = pd + r * cols;
        int32_t y = lab[r];
        for (size_t j = 0; j < cols; j++) d[j] = scale * p[j];
        if (y >= 0 && (size_t)y < cols)
            d[y] = scale * (p[y] - 1.0f);
        else /* a bad label poisons its row, as the forward loss does */
            for (size_t j = 0; j < cols; j++) d[j] = NAN;
    }
    return TSR_OK;
}

/* ---- im2col / col2im ---- */

/* Outputs o in [*lo, *hi) read input position o*stride + k - pad inside [0, size). */
static void valid_range(size_t k, size_t pad, size_t stride, size_t size, size_t out, size_t *lo,
                        size_t *hi) {
    size_t l = pad > k ? (pad - k + stride - 1) / stride : 0;
    size_t h = 0;
    if (size + pad > k) h = (size - 1 + pad - k) / stride + 1;
    if (h > out) h = out;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* Padded planes up to this many floats are built on the stack (im2col_padded). */
#define IM2COL_PAD_FLOATS 4096

/* Stride 1 with narrow output rows (the cnn's second layer: 14 wide): channel c copied once
 * into a zero-padded plane, then every kernel offset's row of columns is OH runs of OW floats
 * from it. The general loop below spends more on its per-offset memcpy/memset calls and
 * border loops than on the copying when rows are this short. */
#if defined(__GNUC__) && !defined(__clang__)
/* the runs are short: copied inline, not through a memcpy call each (gcc's loop distribution
 * turns the copy loop into one) */
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void im2col_padded(const tsr_conv_geom *g, const float *restrict xc, float *restrict col,
                          size_t ld, size_t c) {
    const size_t H = g->height, W = g->width, OH = g->out_h, OW = g->out_w;
    const size_t PH = g->pad_h, PW = g->pad_w, PWD = W + 2 * PW;
    float pad[IM2COL_PAD_FLOATS];
    memset(pad, 0, (H + 2 * PH) * PWD * sizeof *pad);
    for (size_t h = 0; h < H; h++) memcpy(pad + (h + PH) * PWD + PW, xc + h * W, W * sizeof *pad);
    for (size_t ki = 0; ki < g->kernel_h; ki++)
        for (size_t kj = 0; kj < g->kernel_w; kj++) {
            float *restrict row = col + ((c * g->kernel_h + ki) * g->kernel_w + kj) * ld;
            const float *restrict src = pad + ki * PWD + kj;
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) row[oh * OW + ow] = src[oh * PWD + ow];
        }
}

/* Channel c of one image: x is the image, col its first column in the batch's column matrix,
 * whose rows are ld floats apart. */
static void im2col_channel(const tsr_conv_geom *g, const float *restrict x, float *restrict col,
                           size_t ld, size_t c) {
    const size_t H = g->height, W = g->width, OH = g->out_h, OW = g->out_w;
    const size_t SH = g->stride_h, SW = g->stride_w, PH = g->pad_h, PW = g->pad_w;
    const float *restrict xc = x + c * H * W;
    /* stride 1 makes OH = H + 2PH - KH + 1 <= H + 2PH: the padded plane holds every read */
    if (SH == 1 && SW == 1 && OW < 32 && (H + 2 * PH) * (W + 2 * PW) <= IM2COL_PAD_FLOATS) {
        im2col_padded(g, xc, col, ld, c);
        return;
    }
    /* stride 1 and the output as wide as the input ('same' padding): the valid rows of a
     * kernel offset are the input plane shifted by whole elements, contiguous in both */
    const int shifted_plane = SH == 1 && SW == 1 && OW == W;
    for (size_t ki = 0; ki < g->kernel_h; ki++) {
        size_t oh_lo, oh_hi;
        valid_range(ki, PH, SH, H, OH, &oh_lo, &oh_hi);
        for (size_t kj = 0; kj < g->kernel_w; kj++) {
            float *restrict row = col + ((c * g->kernel_h + ki) * g->kernel_w + kj) * ld;
            size_t ow_lo, ow_hi;
            valid_range(kj, PW, SW, W, OW, &ow_lo, &ow_hi);
            if (oh_lo) memset(row, 0, oh_lo * OW * sizeof *row);
            if (oh_hi < OH) memset(row + oh_hi * OW, 0, (OH - oh_hi) * OW * sizeof *row);
            const size_t nv = ow_hi - ow_lo;
            if (shifted_plane && nv && oh_lo < oh_hi) {
                /* one copy of the shifted plane, then the columns outside [ow_lo, ow_hi),
                 * which it filled from the neighbouring rows, are zeroed column by column:
                 * a strided loop, where a row-by-row one became two memset calls of a
                 * float or two per row (7% of a cnn step in memset and its PLT stub) */
                memcpy(row + oh_lo * OW + ow_lo, xc + (oh_lo + ki - PH) * W + (ow_lo + kj - PW),
                       ((oh_hi - oh_lo - 1) * OW + nv) * sizeof *row);
                for (size_t ow = 0; ow < ow_lo; ow++)
                    for (size_t oh = oh_lo; oh < oh_hi; oh++) row[oh * OW + ow] = 0.0f;
                for (size_t ow = ow_hi; ow < OW; ow++)
                    for (size_t oh = oh_lo; oh < oh_hi; oh++) row[oh * OW + ow] = 0.0f;
                continue;
            }
            for (size_t oh = oh_lo; oh < oh_hi; oh++) {
                float *restrict dst = row + oh * OW;
                const float *restrict src = xc + (oh * SH + ki - PH) * W + (ow_lo * SW + kj - PW);
                for (size_t ow = 0; ow < ow_lo; ow++) dst[ow] = 0.0f;
                if (SW == 1)
                    memcpy(dst + ow_lo, src, nv * sizeof *dst);
                else if (SW == 2)
                    for (size_t t = 0; t < nv; t++) dst[ow_lo + t] = src[2 * t];
                else
                    for (size_t t = 0; t < nv; t++) dst[ow_lo + t] = src[t * SW];
                for (size_t ow = ow_hi; ow < OW; ow++) dst[ow] = 0.0f;
            }
        }
    }
}

static void col2im_channel(const tsr_conv_geom *g, const float *restrict col, size_t ld,
                           float *restrict dx, size_t c) {
    const size_t H = g->height, W = g->width, OH = g->out_h, OW = g->out_w;
    const size_t SH = g->stride_h, SW = g->stride_w, PH = g->pad_h, PW = g->pad_w;
    float *restrict dc = dx + c * H * W;
    for (size_t ki = 0; ki < g->kernel_h; ki++) {
        size_t oh_lo, oh_hi;
        valid_range(ki, PH, SH, H, OH, &oh_lo, &oh_hi);
        for (size_t kj = 0; kj < g->kernel_w; kj++) {
            const float *restrict row = col + ((c * g->kernel_h + ki) * g->kernel_w + kj) * ld;
            size_t ow_lo, ow_hi;
            valid_range(kj, PW, SW, W, OW, &ow_lo, &ow_hi);
            const size_t nv = ow_hi - ow_lo;
            for (size_t oh = oh_lo; oh < oh_hi; oh++) {
                const float *restrict src = row + oh * OW + ow_lo;
                float *restrict dst = dc + (oh * SH + ki - PH) * W + (ow_lo * SW + kj - PW);
                if (SW == 1)
                    for (size_t t = 0; t < nv; t++) dst[t] += src[t];
                else
                    for (size_t t = 0; t < nv; t++) dst[t * SW] += src[t];
            }
        }
    }
}

typedef struct conv_args {
    const tsr_conv_geom *g;
    const float *src;
    float *dst;
    size_t img, ohw, ld; /* elements per image of x, and per image and per row of col */
} conv_args;

/* units are (image, channel) pairs: disjoint parts of col's rows and disjoint planes of dx */
static void im2col_units(void *arg, size_t lo, size_t hi) {
    const conv_args *a = arg;
    const size_t C = a->g->channels;
    for (size_t u = lo; u < hi; u++)
        im2col_channel(a->g, a->src + (u / C) * a->img, a->dst + (u / C) * a->ohw, a->ld, u % C);
}

static void col2im_units(void *arg, size_t lo, size_t hi) {
    const conv_args *a = arg;
    const size_t C = a->g->channels;
    for (size_t u = lo; u < hi; u++)
        col2im_channel(a->g, a->src + (u / C) * a->ohw, a->ld, a->dst + (u / C) * a->img, u % C);
}

static conv_args conv_args_of(const tsr_conv_geom *g, const float *src, float *dst) {
    const size_t ohw = g->out_h * g->out_w;
    conv_args a = {g, src, dst, g->channels * g->height * g->width, ohw, g->batch * ohw};
    return a;
}

tsr_status tsr_host_im2col(tsr_backend *be, const tsr_conv_geom *g, tsr_ref x, tsr_ref col) {
    conv_args a = conv_args_of(g, tsr_host_f32(x), tsr_host_f32(col));
    size_t per_c = g->kernel_h * g->kernel_w * a.ohw;
    tsr_host_parallel(be, g->batch * g->channels, grain_units(per_c), im2col_units, &a);
    return TSR_OK;
}

tsr_status tsr_host_col2im(tsr_backend *be, const tsr_conv_geom *g, tsr_ref col, tsr_ref dx) {
    conv_args a = conv_args_of(g, tsr_host_f32(col), tsr_host_f32(dx));
    size_t per_c = g->kernel_h * g->kernel_w * a.ohw;
    tsr_host_parallel(be, g->batch * g->channels, grain_units(per_c), col2im_units, &a);
    return TSR_OK;
}

/* ---- convolution input gradient: GEMM and col2im image by image ---- */

typedef struct dinput_args {
    const tsr_conv_geom *g;
    size_t filters, n; /* n: columns of dy (batch*OH*OW) */
    const float *w, *dy;
    float *col, *dx;
    int add;
    const tsr_backend *be;
} dinput_args;

/* Images [lo, hi): their column gradient, a group of channels at a time, goes through the
 * scratch of image lo (the column floats of [lo, hi) are this part's own). */
static void dinput_images(void *arg, size_t lo, size_t hi) {
    const dinput_args *a = arg;
    const tsr_conv_geom *g = a->g;
    const size_t C = g->channels, kk = g->kernel_h * g->kernel_w, ohw = g->out_h * g->out_w;
    const size_t rows = C * kk, img = C * g->height * g->width;
    size_t group = TSR_HOST_DINPUT_GROUP_FLOATS / (kk * ohw);
    if (group < 1) group = 1;
    float *scratch = a->col + lo * rows * ohw;
    for (size_t i = lo; i < hi; i++) {
        float *dxi = a->dx + i * img;
        if (!a->add) memset(dxi, 0, img * sizeof *dxi);
        for (size_t c0 = 0; c0 < C; c0 += group) {
            size_t c1 = c0 + group < C ? c0 + group : C;
            /* d(col) rows of channels [c0, c1), image i's columns: W^T dY */
            tsr_host_sgemm(a->be, 1, 0, (c1 - c0) * kk, ohw, a->filters, 1.0f, a->w + c0 * kk, rows,
                           a->dy + i * ohw, a->n, 0.0f, scratch, ohw);
            for (size_t c = c0; c < c1; c++) /* as channel 0 of its own plane */
                col2im_channel(g, scratch + (c - c0) * kk * ohw, ohw,
                               dxi + c * g->height * g->width, 0);
        }
    }
}

tsr_status tsr_host_conv_dinput(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref w,
                                tsr_ref dy, tsr_ref col, int add, tsr_ref dx) {
    size_t rows = g->channels * g->kernel_h * g->kernel_w, n = g->batch * g->out_h * g->out_w;
    if (rows > INT_MAX || n > INT_MAX || filters > INT_MAX)
        return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED, "conv_dinput: %zu rows, %zu columns or %zu "
                         "filters exceed the BLAS int range", rows, n, filters);
    dinput_args a = {g, filters, n, tsr_host_f32(w), tsr_host_f32(dy), tsr_host_f32(col),
                     tsr_host_f32(dx), add, be};
    tsr_host_parallel(be, g->batch, 1, dinput_images, &a);
    return TSR_OK;
}

/* ---- block transpose ---- */

typedef struct transpose_args {
    size_t rows, cols, inner;
    const float *x;
    float *y;
    const float *bias; /* transpose_bias */
    int relu;
} transpose_args;

/* units are output blocks y[j][i] */
static void transpose_units(void *arg, size_t lo, size_t hi) {
    const transpose_args *a = arg;
    for (size_t u = lo; u < hi; u++) {
        size_t j = u / a->rows, i = u % a->rows;
        memcpy(a->y + u * a->inner, a->x + (i * a->cols + j) * a->inner, a->inner * sizeof *a->y);
    }
}

tsr_status tsr_host_transpose(tsr_backend *be, size_t rows, size_t cols, size_t inner, tsr_ref x,
                              tsr_ref y) {
    transpose_args a = {rows, cols, inner, tsr_host_f32(x), tsr_host_f32(y), NULL, 0};
    tsr_host_parallel(be, rows * cols, grain_units(inner), transpose_units, &a);
    return TSR_OK;
}

/* units are output blocks y[j][i], x's block plus bias[i], then max(., 0) with relu */
static void transpose_bias_units(void *arg, size_t lo, size_t hi) {
    const transpose_args *a = arg;
    for (size_t u = lo; u < hi; u++) {
        size_t j = u / a->rows, i = u % a->rows;
        const float *restrict src = a->x + (i * a->cols + j) * a->inner;
        float *restrict dst = a->y + u * a->inner;
        const float b = a->bias[i];
        if (a->relu)
            for (size_t k = 0; k < a->inner; k++) {
                float v = src[k] + b;
                dst[k] = v > 0.0f ? v : 0.0f;
            }
        else
            for (size_t k = 0; k < a->inner; k++) dst[k] = src[k] + b;
    }
}

tsr_status tsr_host_transpose_bias(tsr_backend *be, size_t rows, size_t cols, size_t inner,
                                   tsr_ref x, tsr_ref bias, int relu, tsr_ref y) {
    transpose_args a = {rows, cols, inner, tsr_host_f32(x), tsr_host_f32(y), tsr_host_f32(bias), relu};
    tsr_host_parallel(be, rows * cols, grain_units(inner), transpose_bias_units, &a);
    return TSR_OK;
}

/* ---- max pooling ---- */

/* 2x2 windows, stride 2: two input rows per output row. Ties keep the first element in
 * row-major window order, as the generic loop does. */
static void maxpool_2x2s2(const tsr_pool_geom *g, const float *restrict x, float *restrict y,
                          int32_t *restrict idx) {
    const size_t W = g->width, OH = g->out_h, OW = g->out_w;
    for (size_t oh = 0; oh < OH; oh++) {
        const float *restrict r0 = x + 2 * oh * W, *restrict r1 = r0 + W;
        float *restrict yo = y + oh * OW;
        int32_t *restrict io = idx + oh * OW;
        const int32_t base = (int32_t)(2 * oh * W);
        for (size_t ow = 0; ow < OW; ow++) {
            float a = r0[2 * ow], b = r0[2 * ow + 1], c = r1[2 * ow], d = r1[2 * ow + 1];
            int32_t i = base + (int32_t)(2 * ow);
            float m = a;
            int32_t mi = i;
            if (b > m) { m = b; mi = i + 1; }
            if (c > m) { m = c; mi = i + (int32_t)W; }
            if (d > m) { m = d; mi = i + (int32_t)W + 1; }
            yo[ow] = m;
            io[ow] = mi;
        }
    }
}

static void maxpool_generic(const tsr_pool_geom *g, const float *restrict x, float *restrict y,
                            int32_t *restrict idx) {
    const size_t W = g->width, S = g->stride, K = g->size;
    for (size_t oh = 0; oh < g->out_h; oh++)
        for (size_t ow = 0; ow < g->out_w; ow++) {
            size_t h0 = oh * S, w0 = ow * S;
            size_t best = h0 * W + w0;
            float m = x[best];
            for (size_t i = 0; i < K; i++) {
                const float *row = x + (h0 + i) * W + w0;
                for (size_t j = 0; j < K; j++)
                    if (row[j] > m) {
                        m = row[j];
                        best = (h0 + i) * W + w0 + j;
                    }
            }
            y[oh * g->out_w + ow] = m;
            idx[oh * g->out_w + ow] = (int32_t)best;
        }
}

typedef struct pool_args {
    const tsr_pool_geom *g;
    const float *src;
    float *dst;
    int32_t *idx;
    const float *mask; /* backward with a relu folded in: the pool's output, else NULL */
} pool_args;

static void maxpool_fwd_planes(void *arg, size_t lo, size_t hi) {
    const pool_args *a = arg;
    const tsr_pool_geom *g = a->g;
    const size_t in = g->height * g->width, out = g->out_h * g->out_w;
    const int fast = g->size == 2 && g->stride == 2;
    for (size_t p = lo; p < hi; p++) {
        if (fast)
            maxpool_2x2s2(g, a->src + p * in, a->dst + p * out, a->idx + p * out);
        else
            maxpool_generic(g, a->src + p * in, a->dst + p * out, a->idx + p * out);
    }
}

static void maxpool_bwd_planes(void *arg, size_t lo, size_t hi) {
    const pool_args *a = arg;
    const tsr_pool_geom *g = a->g;
    const size_t in = g->height * g->width, out = g->out_h * g->out_w;
    for (size_t p = lo; p < hi; p++) {
        const float *d = a->src + p * out;
        const int32_t *ix = a->idx + p * out;
        float *plane = a->dst + p * in;
        memset(plane, 0, in * sizeof *plane);
        if (!a->mask) {
            for (size_t o = 0; o < out; o++)
                if ((uint32_t)ix[o] < in) plane[ix[o]] += d[o]; /* a corrupt index is skipped */
            continue;
        }
        const float *y = a->mask + p * out; /* the relu's output at the argmax */
        for (size_t o = 0; o < out; o++)
            if ((uint32_t)ix[o] < in) plane[ix[o]] += y[o] > 0.0f ? d[o] : 0.0f;
    }
}

tsr_status tsr_host_maxpool_forward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref x,
                                    tsr_ref y, tsr_ref idx) {
    if ((uint64_t)g->height * g->width > INT32_MAX)
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "maxpool_forward: %zux%zu plane overflows int32 "
                         "indices", g->height, g->width);
    pool_args a = {g, tsr_host_f32(x), tsr_host_f32(y), tsr_host_i32(idx), NULL};
    tsr_host_parallel(be, g->planes, grain_units(g->height * g->width), maxpool_fwd_planes, &a);
    return TSR_OK;
}

tsr_status tsr_host_maxpool_backward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                     tsr_ref idx, tsr_ref dx) {
    pool_args a = {g, tsr_host_f32(dy), tsr_host_f32(dx), tsr_host_i32(idx), NULL};
    tsr_host_parallel(be, g->planes, grain_units(g->height * g->width), maxpool_bwd_planes, &a);
    return TSR_OK;
}

tsr_status tsr_host_maxpool_backward_relu(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                          tsr_ref idx, tsr_ref y, tsr_ref dx) {
    pool_args a = {g, tsr_host_f32(dy), tsr_host_f32(dx), tsr_host_i32(idx), tsr_host_f32(y)};
    tsr_host_parallel(be, g->planes, grain_units(g->height * g->width), maxpool_bwd_planes, &a);
    return TSR_OK;
}

/* ---- dropout ---- */

typedef struct dropout_args {
    size_t n;
    float p, keep_scale;
    uint64_t seed;
    const float *x;
    float *y, *mask;
} dropout_args;

static void dropout_range(void *arg, size_t lo_b, size_t hi_b) {
    const dropout_args *a = arg;
    size_t lo = lo_b * BLOCK, hi = hi_b * BLOCK < a->n ? hi_b * BLOCK : a->n;
    for (size_t i = lo; i < hi; i++) {
        /* the decision depends on (seed, i) only, so every part and backend agree */
        float m = tsr_dropout_keep(a->seed, i, a->p) ? a->keep_scale : 0.0f;
        float v = a->x[i] * m;
        a->mask[i] = m;
        a->y[i] = v;
    }
}

tsr_status tsr_host_dropout_forward(tsr_backend *be, size_t n, float p, uint64_t seed, tsr_ref x,
                                    tsr_ref y, tsr_ref mask) {
    dropout_args a = {n, p, 1.0f / (1.0f - p), seed, tsr_host_f32(x), tsr_host_f32(y),
                      tsr_host_f32(mask)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS / 4, dropout_range, &a);
    return TSR_OK;
}

/* ---- 16-bit conversions (lib/core/precision.c picks the CPU's widest variant) ---- */

typedef struct half_args {
    size_t n;
    tsr_precision prec; /* round_range */
    const float *f_in;
    const uint16_t *h_in;
    float *f_out;
    uint16_t *h_out;
} half_args;

static void half_range(const half_args *a, size_t lo_b, size_t hi_b, size_t *lo, size_t *hi) {
    *lo = lo_b * BLOCK;
    *hi = hi_b * BLOCK < a->n ? hi_b * BLOCK : a->n;
}

static void narrow_range(void *arg, size_t lo_b, size_t hi_b) {
    const half_args *a = arg;
    size_t lo, hi;
    half_range(a, lo_b, hi_b, &lo, &hi);
    if (a->prec == TSR_PRECISION_BF16) tsr_f32_to_bf16_n(a->h_out + lo, a->f_in + lo, hi - lo);
    else tsr_f32_to_f16_n(a->h_out + lo, a->f_in + lo, hi - lo);
}

static void widen_range(void *arg, size_t lo_b, size_t hi_b) {
    const half_args *a = arg;
    size_t lo, hi;
    half_range(a, lo_b, hi_b, &lo, &hi);
    if (a->prec == TSR_PRECISION_BF16) tsr_bf16_to_f32_n(a->f_out + lo, a->h_in + lo, hi - lo);
    else tsr_f16_to_f32_n(a->f_out + lo, a->h_in + lo, hi - lo);
}

static void round_range(void *arg, size_t lo_b, size_t hi_b) {
    const half_args *a = arg;
    size_t lo, hi;
    half_range(a, lo_b, hi_b, &lo, &hi);
    tsr_round_n(a->prec, a->f_out + lo, a->f_in + lo, hi - lo);
}

tsr_status tsr_host_narrow16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref h) {
    half_args a = {n, p, tsr_host_f32(x), NULL, NULL, tsr_host_u16(h)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS / 4, narrow_range, &a);
    return TSR_OK;
}

tsr_status tsr_host_widen16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref h, tsr_ref x) {
    half_args a = {n, p, NULL, tsr_host_u16(h), tsr_host_f32(x), NULL};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS / 4, widen_range, &a);
    return TSR_OK;
}

tsr_status tsr_host_round16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref y) {
    half_args a = {n, p, tsr_host_f32(x), NULL, tsr_host_f32(y), NULL};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS / 4, round_range, &a);
    return TSR_OK;
}

typedef struct block_args {
    tsr_precision prec;
    size_t cols, ldx, ldy;
    const float *x;
    float *y;
} block_args;

static void round_rows(void *arg, size_t lo, size_t hi) {
    const block_args *a = arg;
    for (size_t r = lo; r < hi; r++) tsr_round_n(a->prec, a->y + r * a->ldy, a->x + r * a->ldx, a->cols);
}

tsr_status tsr_host_round16_block(tsr_backend *be, tsr_precision p, size_t rows, size_t cols, tsr_ref x,
                                  size_t ldx, tsr_ref y, size_t ldy) {
    block_args a = {p, cols, ldx, ldy, tsr_host_f32(x), tsr_host_f32(y)};
    tsr_host_parallel(be, rows, cols >= GRAIN ? 1 : GRAIN / cols, round_rows, &a);
    return TSR_OK;
}

void tsr_host_to_bf16(tsr_backend *be, size_t n, const float *src, uint16_t *dst) {
    half_args a = {n, TSR_PRECISION_BF16, src, NULL, NULL, dst};
    tsr_host_parallel(be, BLOCKS(n), GRAIN_BLOCKS / 4, narrow_range, &a);
}

/* ---- embedding ---- */

tsr_status tsr_host_embed_forward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                  tsr_ref table, tsr_ref y) {
    (void)be;
    const int32_t *pi = (const int32_t *)tsr_host_f32(ids);
    const float *pt = tsr_host_f32(table);
    float *py = tsr_host_f32(y);
    for (size_t i = 0; i < count; i++) {
        int32_t id = pi[i];
        float *row = py + i * dim;
        if (id < 0 || (size_t)id >= vocab)
            for (size_t c = 0; c < dim; c++) row[c] = NAN;
        else
            memcpy(row, pt + (size_t)id * dim, dim * sizeof *row);
    }
    return TSR_OK;
}

tsr_status tsr_host_embed_backward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                   tsr_ref dy, tsr_ref dtable) {
    (void)be;
    const int32_t *pi = (const int32_t *)tsr_host_f32(ids);
    const float *pd = tsr_host_f32(dy);
    float *pt = tsr_host_f32(dtable);
    for (size_t i = 0; i < count; i++) {
        int32_t id = pi[i];
        if (id < 0 || (size_t)id >= vocab) continue;
        float *row = pt + (size_t)id * dim;
        for (size_t c = 0; c < dim; c++) row[c] += pd[i * dim + c];
    }
    return TSR_OK;
}
