/* Host CPU backend: element-wise ops, layers, conversions and optimizers.
 * Loops are written so gcc vectorises them: unit-stride inner loops, no per-element branches
 * on geometry (im2col/col2im compute the valid column range of each kernel offset once), and
 * the common 2x2/stride 2 max pooling has its own loop. Element-wise ops allow their output
 * to alias an input at the same index (in-place use), so they do not use restrict. */
#if defined(__GNUC__) && !defined(__clang__)
/* -O2 in gcc 12 only vectorises loops whose trip count is a multiple of the vector width;
 * O3 also emits remainder loops. */
#pragma GCC optimize("O3")
#endif
#include <math.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <string.h>
#include "backends/host/host.h"
#include "lib/internal.h"

/* ---- BLAS level 1 ---- */

tsr_status tsr_host_axpy(tsr_backend *be, size_t n, float alpha, tsr_ref x, tsr_ref y) {
    (void)be;
    const float *px = tsr_host_f32(x);
    float *py = tsr_host_f32(y);
    for (size_t i = 0; i < n; i++) py[i] += alpha * px[i];
    return TSR_OK;
}

tsr_status tsr_host_scale(tsr_backend *be, size_t n, float alpha, tsr_ref x) {
    (void)be;
    float *px = tsr_host_f32(x);
    for (size_t i = 0; i < n; i++) px[i] *= alpha;
    return TSR_OK;
}

tsr_status tsr_host_mul(tsr_backend *be, size_t n, tsr_ref a, tsr_ref b, tsr_ref y) {
    (void)be;
    const float *pa = tsr_host_f32(a), *pb = tsr_host_f32(b);
    float *py = tsr_host_f32(y);
    for (size_t i = 0; i < n; i++) py[i] = pa[i] * pb[i];
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

/* ---- bias ---- */

tsr_status tsr_host_bias_add(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                             tsr_ref bias, tsr_ref y) {
    (void)be;
    const float *restrict b = tsr_host_f32(bias);
    float *restrict py = tsr_host_f32(y);
    if (inner == 1) { /* dense: a row of channels per sample */
        for (size_t o = 0; o < outer; o++) {
            float *restrict row = py + o * channels;
            for (size_t c = 0; c < channels; c++) row[c] += b[c];
        }
        return TSR_OK;
    }
    for (size_t o = 0; o < outer; o++)
        for (size_t c = 0; c < channels; c++) {
            float *restrict plane = py + (o * channels + c) * inner;
            const float bc = b[c];
            for (size_t i = 0; i < inner; i++) plane[i] += bc;
        }
    return TSR_OK;
}

tsr_status tsr_host_bias_grad(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                              tsr_ref dy, tsr_ref db) {
    (void)be;
    const float *restrict pdy = tsr_host_f32(dy);
    float *restrict pdb = tsr_host_f32(db);
    if (inner == 1) { /* dense: add rows into db, unit stride over channels */
        for (size_t o = 0; o < outer; o++) {
            const float *restrict row = pdy + o * channels;
            for (size_t c = 0; c < channels; c++) pdb[c] += row[c];
        }
        return TSR_OK;
    }
    for (size_t c = 0; c < channels; c++) {
        double s = 0;
        for (size_t o = 0; o < outer; o++) s += sum_f64(pdy + (o * channels + c) * inner, inner);
        pdb[c] += (float)s;
    }
    return TSR_OK;
}

/* ---- activations ---- */

tsr_status tsr_host_relu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y) {
    (void)be;
    const float *px = tsr_host_f32(x);
    float *py = tsr_host_f32(y);
    for (size_t i = 0; i < n; i++) py[i] = px[i] > 0.0f ? px[i] : 0.0f;
    return TSR_OK;
}

tsr_status tsr_host_relu_backward(tsr_backend *be, size_t n, tsr_ref y, tsr_ref dy, tsr_ref dx) {
    (void)be;
    const float *py = tsr_host_f32(y), *pdy = tsr_host_f32(dy);
    float *pdx = tsr_host_f32(dx);
    for (size_t i = 0; i < n; i++) {
        float d = pdy[i]; /* loaded unconditionally so the loop has no branch */
        pdx[i] = py[i] > 0.0f ? d : 0.0f;
    }
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

static void im2col_image(const tsr_conv_geom *g, const float *restrict x, float *restrict col) {
    const size_t H = g->height, W = g->width, OH = g->out_h, OW = g->out_w;
    const size_t SH = g->stride_h, SW = g->stride_w, PH = g->pad_h, PW = g->pad_w;
    const size_t ohw = OH * OW;
    for (size_t c = 0; c < g->channels; c++) {
        const float *restrict xc = x + c * H * W;
        for (size_t ki = 0; ki < g->kernel_h; ki++) {
            size_t oh_lo, oh_hi;
            valid_range(ki, PH, SH, H, OH, &oh_lo, &oh_hi);
            for (size_t kj = 0; kj < g->kernel_w; kj++) {
                float *restrict row = col + ((c * g->kernel_h + ki) * g->kernel_w + kj) * ohw;
                size_t ow_lo, ow_hi;
                valid_range(kj, PW, SW, W, OW, &ow_lo, &ow_hi);
                memset(row, 0, oh_lo * OW * sizeof *row);
                memset(row + oh_hi * OW, 0, (OH - oh_hi) * OW * sizeof *row);
                const size_t nv = ow_hi - ow_lo;
                for (size_t oh = oh_lo; oh < oh_hi; oh++) {
                    float *restrict dst = row + oh * OW;
                    const float *restrict src =
                        xc + (oh * SH + ki - PH) * W + (ow_lo * SW + kj - PW);
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
}

static void col2im_image(const tsr_conv_geom *g, const float *restrict col, float *restrict dx) {
    const size_t H = g->height, W = g->width, OH = g->out_h, OW = g->out_w;
    const size_t SH = g->stride_h, SW = g->stride_w, PH = g->pad_h, PW = g->pad_w;
    const size_t ohw = OH * OW;
    for (size_t c = 0; c < g->channels; c++) {
        float *restrict dc = dx + c * H * W;
        for (size_t ki = 0; ki < g->kernel_h; ki++) {
            size_t oh_lo, oh_hi;
            valid_range(ki, PH, SH, H, OH, &oh_lo, &oh_hi);
            for (size_t kj = 0; kj < g->kernel_w; kj++) {
                const float *restrict row =
                    col + ((c * g->kernel_h + ki) * g->kernel_w + kj) * ohw;
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
}

tsr_status tsr_host_im2col(tsr_backend *be, const tsr_conv_geom *g, tsr_ref x, tsr_ref col) {
    (void)be;
    const float *px = tsr_host_f32(x);
    float *pc = tsr_host_f32(col);
    const size_t img = g->channels * g->height * g->width;
    const size_t cols = g->channels * g->kernel_h * g->kernel_w * g->out_h * g->out_w;
    for (size_t b = 0; b < g->batch; b++) im2col_image(g, px + b * img, pc + b * cols);
    return TSR_OK;
}

tsr_status tsr_host_col2im(tsr_backend *be, const tsr_conv_geom *g, tsr_ref col, tsr_ref dx) {
    (void)be;
    const float *pc = tsr_host_f32(col);
    float *pdx = tsr_host_f32(dx);
    const size_t img = g->channels * g->height * g->width;
    const size_t cols = g->channels * g->kernel_h * g->kernel_w * g->out_h * g->out_w;
    for (size_t b = 0; b < g->batch; b++) col2im_image(g, pc + b * cols, pdx + b * img);
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

tsr_status tsr_host_maxpool_forward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref x,
                                    tsr_ref y, tsr_ref idx) {
    if ((uint64_t)g->height * g->width > INT32_MAX)
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "maxpool_forward: %zux%zu plane overflows int32 "
                         "indices", g->height, g->width);
    const float *px = tsr_host_f32(x);
    float *py = tsr_host_f32(y);
    int32_t *pi = tsr_host_i32(idx);
    const size_t in = g->height * g->width, out = g->out_h * g->out_w;
    const int fast = g->size == 2 && g->stride == 2;
    for (size_t p = 0; p < g->planes; p++) {
        if (fast)
            maxpool_2x2s2(g, px + p * in, py + p * out, pi + p * out);
        else
            maxpool_generic(g, px + p * in, py + p * out, pi + p * out);
    }
    return TSR_OK;
}

tsr_status tsr_host_maxpool_backward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                     tsr_ref idx, tsr_ref dx) {
    (void)be;
    const float *pdy = tsr_host_f32(dy);
    const int32_t *pi = tsr_host_i32(idx);
    float *pdx = tsr_host_f32(dx);
    const size_t in = g->height * g->width, out = g->out_h * g->out_w;
    memset(pdx, 0, g->planes * in * sizeof *pdx);
    for (size_t p = 0; p < g->planes; p++) {
        const float *d = pdy + p * out;
        const int32_t *ix = pi + p * out;
        float *plane = pdx + p * in;
        for (size_t o = 0; o < out; o++)
            if ((uint32_t)ix[o] < in) plane[ix[o]] += d[o]; /* a corrupt index is skipped */
    }
    return TSR_OK;
}

/* ---- dropout ---- */

tsr_status tsr_host_dropout_forward(tsr_backend *be, size_t n, float p, uint64_t seed, tsr_ref x,
                                    tsr_ref y, tsr_ref mask) {
    (void)be;
    const float *px = tsr_host_f32(x);
    float *py = tsr_host_f32(y), *pm = tsr_host_f32(mask);
    const float keep_scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++) {
        float m = tsr_dropout_keep(seed, i, p) ? keep_scale : 0.0f;
        float v = px[i] * m;
        pm[i] = m;
        py[i] = v;
    }
    return TSR_OK;
}

/* ---- half precision ---- */

tsr_status tsr_host_f32_to_f16(tsr_backend *be, size_t n, tsr_ref x, tsr_ref h) {
    (void)be;
    const float *px = tsr_host_f32(x);
    uint16_t *ph = tsr_host_u16(h);
    for (size_t i = 0; i < n; i++) ph[i] = tsr_f32_to_f16_scalar(px[i]);
    return TSR_OK;
}

tsr_status tsr_host_f16_to_f32(tsr_backend *be, size_t n, tsr_ref h, tsr_ref x) {
    (void)be;
    const uint16_t *ph = tsr_host_u16(h);
    float *px = tsr_host_f32(x);
    for (size_t i = 0; i < n; i++) px[i] = tsr_f16_to_f32_scalar(ph[i]);
    return TSR_OK;
}

/* ---- optimizers ---- */

tsr_status tsr_host_sgd_update(tsr_backend *be, size_t n, const tsr_sgd_params *p, tsr_ref w,
                               tsr_ref g, tsr_ref v) {
    (void)be;
    float *restrict pw = tsr_host_f32(w);
    const float *restrict pg = tsr_host_f32(g);
    const float lr = p->lr, wd = p->weight_decay, mom = p->momentum;
    if (mom == 0.0f) { /* no state: v is not touched (and may be absent) */
        for (size_t i = 0; i < n; i++) pw[i] -= lr * (pg[i] + wd * pw[i]);
        return TSR_OK;
    }
    float *restrict pv = tsr_host_f32(v);
    if (p->nesterov) {
        for (size_t i = 0; i < n; i++) {
            float gi = pg[i] + wd * pw[i];
            float vi = mom * pv[i] + gi;
            pv[i] = vi;
            pw[i] -= lr * (gi + mom * vi);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float gi = pg[i] + wd * pw[i];
            float vi = mom * pv[i] + gi;
            pv[i] = vi;
            pw[i] -= lr * vi;
        }
    }
    return TSR_OK;
}

tsr_status tsr_host_adam_update(tsr_backend *be, size_t n, const tsr_adam_params *p, tsr_ref w,
                                tsr_ref g, tsr_ref m, tsr_ref v) {
    (void)be;
    float *restrict pw = tsr_host_f32(w);
    const float *restrict pg = tsr_host_f32(g);
    float *restrict pm = tsr_host_f32(m), *restrict pv = tsr_host_f32(v);
    const float lr = p->lr, b1 = p->beta1, b2 = p->beta2, eps = p->eps;
    const float inv_bc1 = 1.0f / p->bias_correction1, inv_bc2 = 1.0f / p->bias_correction2;
    /* decoupled: decay on the weights (AdamW); else L2 folded into the gradient */
    const float wd_grad = p->decoupled ? 0.0f : p->weight_decay;
    const float wd_weight = p->decoupled ? p->weight_decay : 0.0f;
    size_t i = 0;
#if defined(__SSE2__)
    /* sqrtf sets errno, which keeps gcc from vectorising the scalar loop at -O2/-O3 */
    {
        const __m128 vb1 = _mm_set1_ps(b1), vb1c = _mm_set1_ps(1.0f - b1);
        const __m128 vb2 = _mm_set1_ps(b2), vb2c = _mm_set1_ps(1.0f - b2);
        const __m128 vlr = _mm_set1_ps(lr), veps = _mm_set1_ps(eps);
        const __m128 vbc1 = _mm_set1_ps(inv_bc1), vbc2 = _mm_set1_ps(inv_bc2);
        const __m128 vwdg = _mm_set1_ps(wd_grad), vwdw = _mm_set1_ps(wd_weight);
        for (; i + 4 <= n; i += 4) {
            __m128 wi = _mm_loadu_ps(pw + i);
            __m128 gi = _mm_add_ps(_mm_loadu_ps(pg + i), _mm_mul_ps(vwdg, wi));
            __m128 mi = _mm_add_ps(_mm_mul_ps(vb1, _mm_loadu_ps(pm + i)), _mm_mul_ps(vb1c, gi));
            __m128 vi = _mm_add_ps(_mm_mul_ps(vb2, _mm_loadu_ps(pv + i)),
                                   _mm_mul_ps(_mm_mul_ps(vb2c, gi), gi));
            _mm_storeu_ps(pm + i, mi);
            _mm_storeu_ps(pv + i, vi);
            __m128 den = _mm_add_ps(_mm_sqrt_ps(_mm_mul_ps(vi, vbc2)), veps);
            __m128 upd = _mm_add_ps(_mm_div_ps(_mm_mul_ps(mi, vbc1), den), _mm_mul_ps(vwdw, wi));
            _mm_storeu_ps(pw + i, _mm_sub_ps(wi, _mm_mul_ps(vlr, upd)));
        }
    }
#endif
    for (; i < n; i++) {
        float wi = pw[i];
        float gi = pg[i] + wd_grad * wi;
        float mi = b1 * pm[i] + (1.0f - b1) * gi;
        float vi = b2 * pv[i] + ((1.0f - b2) * gi) * gi;
        pm[i] = mi;
        pv[i] = vi;
        pw[i] = wi - lr * ((mi * inv_bc1) / (sqrtf(vi * inv_bc2) + eps) + wd_weight * wi);
    }
    return TSR_OK;
}
