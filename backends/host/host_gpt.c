/* Host CPU backend: the transformer (GPT-2) pieces — layer norm, GELU (tanh form), the causal
 * self-attention core and cross-entropy with ignored positions. Formulas follow llm.c's
 * train_gpt2.c; attention runs its score and value products through single-threaded
 * SGEMM calls, whole (sequence, head) pairs per pool part, QBLOCK query rows at a time, and
 * recomputes P in backward rather than keeping it. Every sum runs in a fixed order
 * that does not depend on the thread count, so results are the same bits with any pool. */
#if defined(__GNUC__) && !defined(__clang__)
/* O3 as host_ops.c: vectorised remainder loops. no-trapping-math: fast_exp's clamps are
 * selects on ordered (exception-raising) compares, which GCC 12 if-converts into vector code
 * only with AVX-512 masks; without it the AVX2 and SSE clones of GELU, the softmaxes and
 * cross-entropy ran scalar. It changes no value (no reassociation, no contraction). */
#pragma GCC optimize("O3", "no-trapping-math")
#endif
#include <limits.h>
#include <math.h>
#include <string.h>
#include "backends/host/host.h"
#include "lib/core/precision.h"
#include "lib/core/internal.h"

/* Below about this many floats of work a part is not worth a pool job. */
#define GRAIN 32768
static size_t grain_of(size_t work_per_unit) {
    return work_per_unit >= GRAIN ? 1 : GRAIN / (work_per_unit ? work_per_unit : 1);
}

/* ---- layer norm ---- */

typedef struct ln_args {
    size_t rows, dim;
    float eps;
    int add_dx;
    const float *x, *gamma, *beta, *dy, *mean, *rstd;
    float *y, *mean_out, *rstd_out, *dx, *dgamma, *dbeta;
} ln_args;

static void ln_forward_rows(void *arg, size_t lo, size_t hi) {
    const ln_args *a = arg;
    size_t d = a->dim;
    for (size_t r = lo; r < hi; r++) {
        const float *x = a->x + r * d;
        float *y = a->y + r * d;
        float m = 0.0f;
        for (size_t j = 0; j < d; j++) m += x[j];
        m /= (float)d;
        float v = 0.0f;
        for (size_t j = 0; j < d; j++) {
            float c = x[j] - m;
            v += c * c;
        }
        v /= (float)d;
        float s = 1.0f / sqrtf(v + a->eps);
        for (size_t j = 0; j < d; j++) y[j] = (x[j] - m) * s * a->gamma[j] + a->beta[j];
        a->mean_out[r] = m;
        a->rstd_out[r] = s;
    }
}

tsr_status tsr_host_layernorm_forward(tsr_backend *be, size_t rows, size_t dim, float eps,
                                      tsr_ref x, tsr_ref gamma, tsr_ref beta, tsr_ref y,
                                      tsr_ref mean, tsr_ref rstd) {
    ln_args a = {rows, dim, eps, 0, tsr_host_f32(x), tsr_host_f32(gamma), tsr_host_f32(beta),
                 NULL, NULL, NULL, tsr_host_f32(y), tsr_host_f32(mean), tsr_host_f32(rstd),
                 NULL, NULL, NULL};
    tsr_host_parallel(be, rows, grain_of(3 * dim), ln_forward_rows, &a);
    return TSR_OK;
}

/* dx rows: independent of each other. */
static void ln_backward_rows(void *arg, size_t lo, size_t hi) {
    const ln_args *a = arg;
    size_t d = a->dim;
    for (size_t r = lo; r < hi; r++) {
        const float *x = a->x + r * d, *dy = a->dy + r * d;
        float *dx = a->dx + r * d;
        float m = a->mean[r], s = a->rstd[r];
        float g_mean = 0.0f, gx_mean = 0.0f;
        for (size_t j = 0; j < d; j++) {
            float g = a->gamma[j] * dy[j];
            g_mean += g;
            gx_mean += g * ((x[j] - m) * s);
        }
        g_mean /= (float)d;
        gx_mean /= (float)d;
        for (size_t j = 0; j < d; j++) {
            float g = a->gamma[j] * dy[j];
            float v = (g - g_mean - ((x[j] - m) * s) * gx_mean) * s;
            dx[j] = a->add_dx ? dx[j] + v : v;
        }
    }
}

/* dgamma/dbeta columns [lo, hi): each part sums its columns over every row, in row order. */
static void ln_backward_cols(void *arg, size_t lo, size_t hi) {
    const ln_args *a = arg;
    size_t d = a->dim, w = hi - lo;
    float sg[256], sb[256]; /* columns are done in slices of 256 */
    for (size_t c0 = lo; c0 < hi; c0 += 256) {
        w = hi - c0 < 256 ? hi - c0 : 256;
        memset(sg, 0, sizeof sg);
        memset(sb, 0, sizeof sb);
        for (size_t r = 0; r < a->rows; r++) {
            const float *x = a->x + r * d + c0, *dy = a->dy + r * d + c0;
            float m = a->mean[r], s = a->rstd[r];
            for (size_t j = 0; j < w; j++) {
                sg[j] += dy[j] * ((x[j] - m) * s);
                sb[j] += dy[j];
            }
        }
        for (size_t j = 0; j < w; j++) {
            a->dgamma[c0 + j] += sg[j];
            a->dbeta[c0 + j] += sb[j];
        }
    }
}

tsr_status tsr_host_layernorm_backward(tsr_backend *be, size_t rows, size_t dim, tsr_ref x,
                                       tsr_ref gamma, tsr_ref mean, tsr_ref rstd, tsr_ref dy,
                                       tsr_ref dx, tsr_ref dgamma, tsr_ref dbeta, int add_dx) {
    ln_args a = {rows, dim, 0.0f, add_dx, tsr_host_f32(x), tsr_host_f32(gamma), NULL,
                 tsr_host_f32(dy), tsr_host_f32(mean), tsr_host_f32(rstd), NULL, NULL, NULL,
                 tsr_host_f32(dx), tsr_host_f32(dgamma), tsr_host_f32(dbeta)};
    /* the parameter sums read dy before dx (which may alias it) is written */
    tsr_host_parallel(be, dim, grain_of(2 * rows), ln_backward_cols, &a);
    tsr_host_parallel(be, rows, grain_of(4 * dim), ln_backward_rows, &a);
    return TSR_OK;
}

/* ---- GELU, tanh form ---- */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

/* e^x by Cephes' expf (x = k ln2 + r, ln 2 in two parts, a degree-6 polynomial in r, 2^k put
 * in the exponent bits), within 2 ulp, clamped to [-87, 88] (GELU's tanh is -1 or 1 beyond;
 * the softmaxes call it on x <= 0, where e^-87 is 1.6e-38 against a sum >= 1). Arithmetic
 * only, so the loops calling it vectorise; -std=c11 keeps multiplies and adds unfused, so
 * every lane, any vector width, gives the scalar code's bits (checked over 2^24 inputs). */
static inline float fast_exp(float x) {
    x = x < -87.0f ? -87.0f : x > 88.0f ? 88.0f : x;
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* tanh as 1 - 2 / (1 + e^2u) through fast_exp: no libm call, so GELU runs in vectors (16 lanes
 * with AVX-512; its share of a gpt-mini step fell from about 29% to 3%). */
static inline float fast_tanh(float u) {
    return 1.0f - 2.0f / (1.0f + fast_exp(2.0f * u));
}

/* x86-64: one copy of the element-wise loops per instruction set, the widest the CPU has
 * chosen at load time (the same bits, see fast_exp). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

typedef struct gelu_args {
    const float *x, *dy;
    float *y;
} gelu_args;

VECTOR_CLONES static void gelu_forward_range(void *arg, size_t lo, size_t hi) {
    const gelu_args *a = arg;
    for (size_t i = lo; i < hi; i++) {
        float x = a->x[i];
        a->y[i] = 0.5f * x * (1.0f + fast_tanh(GELU_K * (x + GELU_C * x * x * x)));
    }
}

VECTOR_CLONES static void gelu_backward_range(void *arg, size_t lo, size_t hi) {
    const gelu_args *a = arg;
    for (size_t i = lo; i < hi; i++) {
        float x = a->x[i];
        float t = fast_tanh(GELU_K * (x + GELU_C * x * x * x));
        float sech2 = 1.0f - t * t; /* = 1/cosh^2, without cosh's overflow */
        float local = 0.5f * (1.0f + t) +
                      0.5f * x * sech2 * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
        a->y[i] = local * a->dy[i];
    }
}

tsr_status tsr_host_gelu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y) {
    gelu_args a = {tsr_host_f32(x), NULL, tsr_host_f32(y)};
    tsr_host_parallel(be, n, GRAIN / 4, gelu_forward_range, &a);
    return TSR_OK;
}

tsr_status tsr_host_gelu_backward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref dy, tsr_ref dx) {
    gelu_args a = {tsr_host_f32(x), tsr_host_f32(dy), tsr_host_f32(dx)};
    tsr_host_parallel(be, n, GRAIN / 4, gelu_backward_range, &a);
    return TSR_OK;
}

/* ---- causal self-attention core ---- */

/* Query rows a block: a pair's scores are made QBLOCK rows at a time, so a worker's P and dP
 * (2 x QBLOCK x T floats: 512 KiB at GPT-2's 1024 tokens) stay in its cache instead of
 * [heads][T][T] per sequence passing through memory. */
#define QBLOCK 64

typedef struct attn_args {
    size_t T, C, NH, hs, qb;
    float scale; /* 1/sqrt(head size) */
    const float *qkv, *dout;
    float *out, *scratch, *dqkv;
    tsr_precision prec; /* 16-bit modes: P and dS rounded too (backend_precision.c) */
    const tsr_backend *be; /* its SGEMM */
} attn_args;

/* Row-major single-threaded GEMM (the pool supplies the parallelism; sizes fit int, checked
 * by the callers). */
static void sgemm(const attn_args *args, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                  const float *a, size_t lda, const float *b, size_t ldb, float beta, float *c,
                  size_t ldc) {
    tsr_host_sgemm(args->be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* Rows t0 + i (i < m) of the causal softmax, each over its keys j <= t0 + i of the n = t0 + m
 * in the block (row stride n); zero above the diagonal. The exponentials run in vectors, the
 * sum in order. */
VECTOR_CLONES static void causal_softmax(float *s, size_t t0, size_t m) {
    size_t n = t0 + m;
    for (size_t i = 0; i < m; i++) {
        float *row = s + i * n;
        size_t t = t0 + i;
        float mx = row[0];
        for (size_t j = 1; j <= t; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0.0f;
        for (size_t j = 0; j <= t; j++) row[j] = fast_exp(row[j] - mx);
        for (size_t j = 0; j <= t; j++) sum += row[j];
        float inv = 1.0f / sum;
        for (size_t j = 0; j <= t; j++) row[j] *= inv;
        for (size_t j = t + 1; j < n; j++) row[j] = 0.0f;
    }
}

/* One (sequence, head) pair's operands. */
typedef struct attn_pair {
    const float *q, *k, *v, *dout;
    float *out, *dq, *dk, *dv;
} attn_pair;

static attn_pair pair_of(const attn_args *a, size_t p) {
    size_t b = p / a->NH, h = p % a->NH, qo = b * a->T * 3 * a->C + h * a->hs;
    size_t oo = b * a->T * a->C + h * a->hs;
    attn_pair x = {a->qkv + qo, a->qkv + qo + a->C, a->qkv + qo + 2 * a->C, NULL, NULL, NULL, NULL, NULL};
    if (a->dout) x.dout = a->dout + oo;
    if (a->out) x.out = a->out + oo;
    if (a->dqkv) x.dq = a->dqkv + qo, x.dk = x.dq + a->C, x.dv = x.dq + 2 * a->C;
    return x;
}

/* P of query rows [t0, t0 + m) against keys [0, t0 + m), into s (row stride t0 + m): the
 * forward and the backward's recomputation run this same code, so backward sees the forward's
 * bits. */
static void attn_probs(const attn_args *a, const attn_pair *x, size_t t0, size_t m, float *s) {
    size_t n = t0 + m, ld = 3 * a->C;
    sgemm(a, 0, 1, m, n, a->hs, a->scale, x->q + t0 * ld, ld, x->k, ld, 0.0f, s, n); /* scaled q k^T */
    causal_softmax(s, t0, m);
    if (a->prec != TSR_PRECISION_FP32) tsr_round_n(a->prec, s, s, m * n);
}

/* A part's scratch: its first pair's slot (2 x QBLOCK x T floats of the call's scratch). */
static float *part_scratch(const attn_args *a, size_t lo) { return a->scratch + lo * 2 * a->qb * a->T; }

static void attn_forward_pairs(void *arg, size_t lo, size_t hi) {
    const attn_args *a = arg;
    float *s = part_scratch(a, lo);
    for (size_t p = lo; p < hi; p++) {
        attn_pair x = pair_of(a, p);
        for (size_t t0 = 0; t0 < a->T; t0 += a->qb) {
            size_t m = a->T - t0 < a->qb ? a->T - t0 : a->qb, n = t0 + m;
            attn_probs(a, &x, t0, m, s);
            sgemm(a, 0, 0, m, a->hs, n, 1.0f, s, n, x.v, 3 * a->C, 0.0f, x.out + t0 * a->C, a->C); /* P v */
        }
    }
}

static void attn_backward_pairs(void *arg, size_t lo, size_t hi) {
    const attn_args *a = arg;
    size_t T = a->T, C = a->C, hs = a->hs, ld = 3 * C;
    float *s = part_scratch(a, lo), *ds = s + a->qb * T;
    for (size_t p = lo; p < hi; p++) {
        attn_pair x = pair_of(a, p);
        for (size_t t = 0; t < T; t++) { /* dk and dv add up over the query blocks */
            memset(x.dk + t * ld, 0, hs * sizeof(float));
            memset(x.dv + t * ld, 0, hs * sizeof(float));
        }
        for (size_t t0 = 0; t0 < T; t0 += a->qb) {
            size_t m = T - t0 < a->qb ? T - t0 : a->qb, n = t0 + m;
            const float *dout = x.dout + t0 * C, *q = x.q + t0 * ld;
            attn_probs(a, &x, t0, m, s);
            sgemm(a, 0, 1, m, n, hs, 1.0f, dout, C, x.v, ld, 0.0f, ds, n); /* dP = dout v^T */
            sgemm(a, 1, 0, n, hs, m, 1.0f, s, n, dout, C, 1.0f, x.dv, ld); /* dv += P^T dout */
            /* softmax backward: dS[t][j] = P (dP - sum_k P dP), causal part only */
            for (size_t i = 0; i < m; i++) {
                const float *pr = s + i * n;
                float *dr = ds + i * n;
                size_t t = t0 + i;
                float dot = 0.0f;
                for (size_t j = 0; j <= t; j++) dot += pr[j] * dr[j];
                for (size_t j = 0; j <= t; j++) dr[j] = pr[j] * (dr[j] - dot);
                for (size_t j = t + 1; j < n; j++) dr[j] = 0.0f;
            }
            if (a->prec != TSR_PRECISION_FP32) tsr_round_n(a->prec, ds, ds, m * n);
            sgemm(a, 0, 0, m, hs, n, a->scale, ds, n, x.k, ld, 0.0f, x.dq + t0 * ld, ld); /* dq = scale dS k */
            sgemm(a, 1, 0, n, hs, m, a->scale, ds, n, q, ld, 1.0f, x.dk, ld); /* dk += scale dS^T q */
        }
    }
}

static tsr_status attn_setup(tsr_backend *be, const tsr_attn_geom *g, attn_args *a) {
    if (g->tokens > INT_MAX || g->channels > INT_MAX / 3)
        return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED,
                         "attention: %zu tokens or 3 x %zu channels exceed the BLAS int range",
                         g->tokens, g->channels);
    memset(a, 0, sizeof *a);
    a->T = g->tokens;
    a->C = g->channels;
    a->NH = g->heads;
    a->hs = g->channels / g->heads;
    a->qb = g->tokens < QBLOCK ? g->tokens : QBLOCK; /* a part's slot fits its first pair's */
    a->scale = 1.0f / sqrtf((float)a->hs);
    a->prec = be->precision;
    a->be = be;
    return TSR_OK;
}

tsr_status tsr_host_attention_forward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                      tsr_ref scratch, tsr_ref out) {
    attn_args a;
    TSR_TRY(attn_setup(be, g, &a));
    a.qkv = tsr_host_f32(qkv);
    a.scratch = tsr_host_f32(scratch);
    a.out = tsr_host_f32(out);
    tsr_host_parallel(be, g->batch * g->heads, grain_of(2 * a.T * a.T * a.hs), attn_forward_pairs,
                      &a);
    return TSR_OK;
}

tsr_status tsr_host_attention_backward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                       tsr_ref dout, tsr_ref scratch, tsr_ref dqkv) {
    attn_args a;
    TSR_TRY(attn_setup(be, g, &a));
    a.qkv = tsr_host_f32(qkv);
    a.dout = tsr_host_f32(dout);
    a.scratch = tsr_host_f32(scratch);
    a.dqkv = tsr_host_f32(dqkv);
    tsr_host_parallel(be, g->batch * g->heads, grain_of(5 * a.T * a.T * a.hs),
                      attn_backward_pairs, &a);
    return TSR_OK;
}

/* ---- cross-entropy with ignored positions ---- */

typedef struct xent_args {
    size_t cols;
    float scale;
    const float *in;
    const int32_t *targets;
    float *out, *loss;
} xent_args;

VECTOR_CLONES static void xent_forward_rows(void *arg, size_t lo, size_t hi) {
    const xent_args *a = arg;
    size_t V = a->cols;
    for (size_t r = lo; r < hi; r++) {
        const float *l = a->in + r * V;
        float *p = a->out + r * V;
        int32_t y = a->targets[r];
        float mx = l[0];
        for (size_t j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
        /* the target's logit is read before p (which may alias l) is written */
        float zy = y == -1 ? 0.0f : (y >= 0 && (size_t)y < V) ? l[y] - mx : NAN;
        double s = 0;
        for (size_t j = 0; j < V; j++) p[j] = fast_exp(l[j] - mx); /* in vectors; the sum in order */
        for (size_t j = 0; j < V; j++) s += p[j];
        float inv = (float)(1.0 / s);
        for (size_t j = 0; j < V; j++) p[j] *= inv;
        a->loss[r] = y == -1 ? 0.0f : (float)(log(s) - (double)zy);
    }
}

static void xent_backward_rows(void *arg, size_t lo, size_t hi) {
    const xent_args *a = arg;
    size_t V = a->cols;
    for (size_t r = lo; r < hi; r++) {
        const float *p = a->in + r * V;
        float *d = a->out + r * V;
        int32_t y = a->targets[r];
        if (y == -1) {
            memset(d, 0, V * sizeof *d);
            continue;
        }
        for (size_t j = 0; j < V; j++) d[j] = a->scale * p[j];
        if (y >= 0 && (size_t)y < V)
            d[y] -= a->scale;
        else
            for (size_t j = 0; j < V; j++) d[j] = NAN;
    }
}

tsr_status tsr_host_xent_forward(tsr_backend *be, size_t rows, size_t cols, tsr_ref logits,
                                 tsr_ref targets, tsr_ref probs, tsr_ref loss) {
    xent_args a = {cols, 0.0f, tsr_host_f32(logits), tsr_host_i32(targets), tsr_host_f32(probs),
                   tsr_host_f32(loss)};
    tsr_host_parallel(be, rows, grain_of(3 * cols), xent_forward_rows, &a);
    return TSR_OK;
}

tsr_status tsr_host_xent_backward(tsr_backend *be, size_t rows, size_t cols, tsr_ref probs,
                                  tsr_ref targets, float scale, tsr_ref dlogits) {
    xent_args a = {cols, scale, tsr_host_f32(probs), tsr_host_i32(targets), tsr_host_f32(dlogits),
                   NULL};
    tsr_host_parallel(be, rows, grain_of(cols), xent_backward_rows, &a);
    return TSR_OK;
}
