/* Generation from a GPT with a key/value cache (include/tessera/generate.h). The forward pass
 * runs over the m new positions only; every product is a GEMM over those m rows (a GEMV when
 * m = 1), attention reads the cached keys and values of the earlier positions. Layer norm,
 * GELU and the softmax are plain loops with the formulas (and float summation order) of
 * backends/host/host_gpt.c, so the logits are the full forward's up to GEMM rounding. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"
#include "lib/model/stage.h"
#include "tessera/generate.h"

#define GELU_K 0.7978845608028654f /* sqrt(2/pi), as host_gpt.c */
#define GELU_C 0.044715f

typedef struct gen_block {
    const float *ln1_w, *ln1_b, *attn_w, *attn_b, *proj_w, *proj_b;
    const float *ln2_w, *ln2_b, *fc_w, *fc_b, *fcproj_w, *fcproj_b;
    float eps1, eps2;
    float *k, *v; /* the cache: [context][C] each */
} gen_block;

struct tsr_generator {
    tsr_context *ctx;
    size_t blocks, C, H, V, P; /* blocks, channels, heads, vocabulary, context */
    const float *wte, *wpe, *lnf_w, *lnf_b;
    float lnf_eps;
    gen_block *blk;
    size_t pos;
    int32_t *tokens;     /* the ids at positions 0..pos-1 (the window a slide rebuilds from) */
    float *cache;        /* every block's k and v */
    /* work space for up to P new rows */
    float *x, *xn, *qkv, *y, *h, *scores, *logits;
    int have_logits;
    tsr_rng rng;
};

/* The tensor `name` of layer `layer` in params, of `count` floats (0: any; *shape0 its first
 * dimension when not NULL). NULL when the model has no such tensor. */
static const float *find_tensor(const tsr_model *m, const float *params, size_t layer, const char *name,
                                size_t count, size_t *shape0, size_t *shape1) {
    char want[64];
    snprintf(want, sizeof want, "%zu.%s", layer, name);
    for (size_t i = 0; i < tsr_model_param_tensor_count(m); i++) {
        tsr_param_info p;
        if (tsr_model_param_tensor(m, i, &p) != TSR_OK || p.layer != layer || strcmp(p.name, want)) continue;
        if (count && p.count != count) return NULL;
        if (shape0) *shape0 = p.shape[0];
        if (shape1) *shape1 = p.shape[1];
        return params + p.offset;
    }
    return NULL;
}

/* c[m][n] = alpha a[m][k] b (b: [k][n], or [n][k] when tb), rows strided; a GEMV for one row. */
static void matmul(int tb, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b,
                   size_t ldb, float *c, size_t ldc) {
    if (m == 1)
        cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? (int)n : (int)k, tb ? (int)k : (int)n, alpha,
                    b, (int)ldb, a, 1, 0.0f, c, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n, (int)k, alpha, a,
                    (int)lda, b, (int)ldb, 0.0f, c, (int)ldc);
}

/* y[m][n] = x[m][k] w[k][n] + b (Hugging Face's Conv1D layout, as lib/layers/linear.c). */
static void linear(size_t m, size_t k, size_t n, const float *x, const float *w, const float *b, float *y) {
    matmul(0, m, n, k, 1.0f, x, k, w, n, y, n);
    for (size_t r = 0; r < m; r++)
        for (size_t j = 0; j < n; j++) y[r * n + j] += b[j];
}

static void layernorm(size_t m, size_t d, float eps, const float *x, const float *gamma, const float *beta, float *y) {
    for (size_t r = 0; r < m; r++, x += d, y += d) {
        float mean = 0.0f;
        for (size_t j = 0; j < d; j++) mean += x[j];
        mean /= (float)d;
        float var = 0.0f;
        for (size_t j = 0; j < d; j++) {
            float c = x[j] - mean;
            var += c * c;
        }
        var /= (float)d;
        float s = 1.0f / sqrtf(var + eps);
        for (size_t j = 0; j < d; j++) y[j] = (x[j] - mean) * s * gamma[j] + beta[j];
    }
}

static void gelu(size_t n, float *x) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(GELU_K * (v + GELU_C * v * v * v)));
    }
}

/* Softmax of row[0..n) in place (host_gpt.c's causal_softmax on one row). */
static void softmax(float *row, size_t n) {
    float mx = row[0];
    for (size_t j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0.0f;
    for (size_t j = 0; j < n; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
    }
    float inv = 1.0f / sum;
    for (size_t j = 0; j < n; j++) row[j] *= inv;
}

/* Attention of the m new rows (queries in g->qkv, positions pos..pos+m-1) over the cached keys
 * and values of positions 0..their own, into g->y [m][C]. */
static void attention(tsr_generator *g, const gen_block *b, size_t m) {
    size_t C = g->C, hs = C / g->H, n = g->pos + m;
    float scale = 1.0f / sqrtf((float)hs);
    for (size_t h = 0; h < g->H; h++) {
        /* scores [m][n]: row r sees keys 0..pos+r */
        matmul(1, m, n, hs, scale, g->qkv + h * hs, 3 * C, b->k + h * hs, C, g->scores, n);
        for (size_t r = 0; r < m; r++) {
            float *row = g->scores + r * n;
            size_t seen = g->pos + r + 1;
            softmax(row, seen);
            for (size_t j = seen; j < n; j++) row[j] = 0.0f;
        }
        matmul(0, m, hs, n, 1.0f, g->scores, n, b->v + h * hs, C, g->y + h * hs, C);
    }
}

static tsr_status bad_model(tsr_context *ctx, const char *what) {
    return tsr_error(ctx, TSR_ERR_UNSUPPORTED, "generation needs a GPT (embed, posembed, blocks, layernorm, "
                     "lmhead:0 as tsr_model_create_gpt builds): %s", what);
}

tsr_status tsr_generator_create(tsr_context *ctx, const tsr_model *m, const float *params, size_t count,
                                tsr_generator **out) {
    if (!m || !params || !out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_generator_create: NULL argument");
    *out = NULL;
    size_t blocks = tsr_model_gpt_blocks(m);
    if (!blocks) return bad_model(ctx, "this model is not laid out as one");
    if (count != tsr_model_param_count(m))
        return tsr_error(ctx, TSR_ERR_SHAPE, "tsr_generator_create: %zu parameters given, the model has %zu", count,
                         tsr_model_param_count(m));
    size_t V = 0, C = 0, P = 0, C2 = 0;
    const float *wte = find_tensor(m, params, 0, "weight", 0, &V, &C);
    const float *wpe = find_tensor(m, params, 1, "weight", 0, &P, &C2);
    if (!wte || !wpe || !V || !C || !P || C2 != C) return bad_model(ctx, "no token and position tables");
    tsr_generator *g = tsr_calloc(ctx, 1, sizeof *g);
    if (!g) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "generator");
    g->ctx = ctx, g->blocks = blocks, g->C = C, g->V = V, g->P = P, g->wte = wte, g->wpe = wpe;
    g->H = m->layers[4].heads;
    tsr_rng_seed(&g->rng, 0);
    size_t lnf = m->count - 2;
    g->lnf_eps = m->layers[lnf].eps;
    g->lnf_w = find_tensor(m, params, lnf, "weight", C, NULL, NULL);
    g->lnf_b = find_tensor(m, params, lnf, "bias", C, NULL, NULL);
    g->blk = tsr_calloc(ctx, blocks, sizeof *g->blk);
    /* caches 2 x blocks x P x C, work space 10 P C (x, xn, y: C; qkv: 3C; h: 4C) + P^2 scores */
    size_t pc = P * C, cache = 2 * blocks * pc, work = 10 * pc + P * P + V; /* < 2^46: GPT bounds */
    g->cache = tsr_malloc(ctx, cache * sizeof(float));
    g->x = tsr_malloc(ctx, work * sizeof(float));
    g->tokens = tsr_malloc(ctx, P * sizeof *g->tokens);
    if (!g->blk || !g->cache || !g->x || !g->tokens) {
        tsr_generator_free(g);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "generator: caches of %zu blocks x %zu positions x %zu channels",
                         blocks, P, C);
    }
    g->xn = g->x + pc, g->y = g->xn + pc, g->qkv = g->y + pc, g->h = g->qkv + 3 * pc;
    g->scores = g->h + 4 * pc, g->logits = g->scores + P * P;
    if (!g->H || C % g->H || !g->lnf_w || !g->lnf_b) {
        tsr_generator_free(g);
        return bad_model(ctx, "ln_f or the attention heads do not fit the channels");
    }
    for (size_t i = 0; i < blocks; i++) {
        gen_block *b = &g->blk[i];
        size_t L = 2 + 10 * i;
        b->ln1_w = find_tensor(m, params, L, "weight", C, NULL, NULL);
        b->ln1_b = find_tensor(m, params, L, "bias", C, NULL, NULL);
        b->attn_w = find_tensor(m, params, L + 1, "weight", C * 3 * C, NULL, NULL);
        b->attn_b = find_tensor(m, params, L + 1, "bias", 3 * C, NULL, NULL);
        b->proj_w = find_tensor(m, params, L + 3, "weight", C * C, NULL, NULL);
        b->proj_b = find_tensor(m, params, L + 3, "bias", C, NULL, NULL);
        b->ln2_w = find_tensor(m, params, L + 5, "weight", C, NULL, NULL);
        b->ln2_b = find_tensor(m, params, L + 5, "bias", C, NULL, NULL);
        b->fc_w = find_tensor(m, params, L + 6, "weight", C * 4 * C, NULL, NULL);
        b->fc_b = find_tensor(m, params, L + 6, "bias", 4 * C, NULL, NULL);
        b->fcproj_w = find_tensor(m, params, L + 8, "weight", 4 * C * C, NULL, NULL);
        b->fcproj_b = find_tensor(m, params, L + 8, "bias", C, NULL, NULL);
        b->eps1 = m->layers[L].eps, b->eps2 = m->layers[L + 5].eps;
        b->k = g->cache + 2 * i * pc, b->v = b->k + pc;
        if (!b->ln1_w || !b->ln1_b || !b->attn_w || !b->attn_b || !b->proj_w || !b->proj_b || !b->ln2_w ||
            !b->ln2_b || !b->fc_w || !b->fc_b || !b->fcproj_w || !b->fcproj_b || m->layers[L + 2].heads != g->H) {
            tsr_generator_free(g);
            char what[96];
            snprintf(what, sizeof what, "block %zu lacks a tensor of the GPT shapes (or has biasless linears)", i);
            return bad_model(ctx, what);
        }
    }
    *out = g;
    return TSR_OK;
}

void tsr_generator_free(tsr_generator *g) {
    if (!g) return;
    tsr_free(g->ctx, g->blk);
    tsr_free(g->ctx, g->cache);
    tsr_free(g->ctx, g->x);
    tsr_free(g->ctx, g->tokens);
    tsr_free(g->ctx, g);
}

size_t tsr_generator_context(const tsr_generator *g) { return g ? g->P : 0; }
size_t tsr_generator_vocab(const tsr_generator *g) { return g ? g->V : 0; }
size_t tsr_generator_position(const tsr_generator *g) { return g ? g->pos : 0; }
void tsr_generator_reset(tsr_generator *g) {
    if (g) g->pos = 0, g->have_logits = 0;
}
void tsr_generator_seed(tsr_generator *g, uint64_t seed) {
    if (g) tsr_rng_seed(&g->rng, seed);
}

tsr_status tsr_generator_feed(tsr_generator *g, const int32_t *ids, size_t m, float *logits) {
    if (!g || !ids) return TSR_ERR_INVALID_ARG;
    tsr_context *ctx = g->ctx;
    size_t C = g->C, P = g->P;
    if (!m) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_generator_feed: no tokens");
    if (m > P - g->pos)
        return tsr_error(ctx, TSR_ERR_SHAPE, "tsr_generator_feed: %zu tokens at position %zu pass the context of %zu",
                         m, g->pos, P);
    for (size_t r = 0; r < m; r++)
        if (ids[r] < 0 || (size_t)ids[r] >= g->V)
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_generator_feed: token %zu is %ld, outside the vocabulary "
                             "[0, %zu)", r, (long)ids[r], g->V);
    memmove(g->tokens + g->pos, ids, m * sizeof *ids); /* ids may be g->tokens itself (a slide) */
    for (size_t r = 0; r < m; r++) {
        const float *te = g->wte + (size_t)ids[r] * C, *pe = g->wpe + (g->pos + r) * C;
        for (size_t j = 0; j < C; j++) g->x[r * C + j] = te[j] + pe[j];
    }
    for (size_t i = 0; i < g->blocks; i++) {
        gen_block *b = &g->blk[i];
        layernorm(m, C, b->eps1, g->x, b->ln1_w, b->ln1_b, g->xn);
        linear(m, C, 3 * C, g->xn, b->attn_w, b->attn_b, g->qkv);
        for (size_t r = 0; r < m; r++) {
            memcpy(b->k + (g->pos + r) * C, g->qkv + r * 3 * C + C, C * sizeof(float));
            memcpy(b->v + (g->pos + r) * C, g->qkv + r * 3 * C + 2 * C, C * sizeof(float));
        }
        attention(g, b, m);
        linear(m, C, C, g->y, b->proj_w, b->proj_b, g->xn);
        for (size_t j = 0; j < m * C; j++) g->x[j] += g->xn[j];
        layernorm(m, C, b->eps2, g->x, b->ln2_w, b->ln2_b, g->xn);
        linear(m, C, 4 * C, g->xn, b->fc_w, b->fc_b, g->h);
        gelu(m * 4 * C, g->h);
        linear(m, 4 * C, C, g->h, b->fcproj_w, b->fcproj_b, g->xn);
        for (size_t j = 0; j < m * C; j++) g->x[j] += g->xn[j];
    }
    g->pos += m;
    /* the head on the last new row only */
    layernorm(1, C, g->lnf_eps, g->x + (m - 1) * C, g->lnf_w, g->lnf_b, g->xn);
    matmul(1, 1, g->V, C, 1.0f, g->xn, C, g->wte, C, g->logits, g->V);
    g->have_logits = 1;
    if (logits) memcpy(logits, g->logits, g->V * sizeof *logits);
    return TSR_OK;
}

/* Top-k order: the larger logit first, the lower id among equal ones. */
typedef struct ranked {
    float logit;
    int32_t id;
} ranked;
static int by_rank(const void *pa, const void *pb) {
    const ranked *a = pa, *b = pb;
    if (a->logit != b->logit) return a->logit > b->logit ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

tsr_status tsr_sample_logits(tsr_context *ctx, const float *logits, size_t V, const tsr_sampling *s, double u,
                             int32_t *token) {
    if (!logits || !s || !token || !V) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_sample_logits: NULL argument");
    if (V > INT32_MAX) return tsr_error(ctx, TSR_ERR_SHAPE, "tsr_sample_logits: vocabulary %zu above 2^31 - 1", V);
    if (!(s->temperature >= 0.0f && s->temperature <= 1000.0f))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "sampling temperature %g: 0 (greedy) to 1000",
                         (double)s->temperature);
    if (s->top_k > V) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "sampling top-k %zu: 0 (all) to the vocabulary %zu",
                                       s->top_k, V);
    if (!(u >= 0.0 && u < 1.0)) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_sample_logits: draw %g outside [0, 1)", u);
    for (size_t i = 0; i < V; i++)
        if (!isfinite(logits[i]))
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_sample_logits: logit %zu is not finite", i);
    size_t best = 0;
    for (size_t i = 1; i < V; i++) best = logits[i] > logits[best] ? i : best;
    if (s->temperature == 0.0f || s->top_k == 1) {
        *token = (int32_t)best;
        return TSR_OK;
    }
    /* threshold: the k-th largest (ties at it kept up to k by lower id) */
    size_t k = s->top_k ? s->top_k : V;
    float kth = -INFINITY;
    size_t ties_kept = V; /* how many logits equal to kth are kept, in id order */
    if (k < V) {
        ranked *r = tsr_malloc(ctx, V * sizeof *r);
        if (!r) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "top-k of %zu logits", V);
        for (size_t i = 0; i < V; i++) r[i] = (ranked){logits[i], (int32_t)i};
        qsort(r, V, sizeof *r, by_rank);
        kth = r[k - 1].logit;
        ties_kept = 0;
        for (size_t i = 0; i < k; i++) ties_kept += r[i].logit == kth;
        tsr_free(ctx, r);
    }
    double inv_t = 1.0 / (double)s->temperature, mx = logits[best], sum = 0.0;
    size_t ties = 0;
    for (size_t i = 0; i < V; i++)
        if (logits[i] > kth || (logits[i] == kth && ties++ < ties_kept)) sum += exp((logits[i] - mx) * inv_t);
    double target = u * sum, acc = 0.0;
    size_t last = best;
    ties = 0;
    for (size_t i = 0; i < V; i++)
        if (logits[i] > kth || (logits[i] == kth && ties++ < ties_kept)) {
            acc += exp((logits[i] - mx) * inv_t);
            last = i;
            if (acc > target) break;
        }
    *token = (int32_t)last; /* rounding past the end: the last kept token */
    return TSR_OK;
}

tsr_status tsr_generator_sample(tsr_generator *g, const tsr_sampling *s, int32_t *token) {
    if (!g) return TSR_ERR_INVALID_ARG;
    if (!g->have_logits) return tsr_error(g->ctx, TSR_ERR_INVALID_ARG, "tsr_generator_sample: nothing fed yet");
    return tsr_sample_logits(g->ctx, g->logits, g->V, s, tsr_rng_uniform(&g->rng), token);
}

tsr_status tsr_generate(tsr_generator *g, const int32_t *prompt, size_t n, const tsr_generate_options *o,
                        tsr_token_fn emit, void *user) {
    if (!g || !prompt || !o) return TSR_ERR_INVALID_ARG;
    tsr_context *ctx = g->ctx;
    if (!n || n > g->P)
        return tsr_error(ctx, TSR_ERR_SHAPE, "prompt of %zu tokens: 1 to the context of %zu", n, g->P);
    tsr_generator_reset(g);
    tsr_generator_seed(g, o->seed);
    TSR_TRY(tsr_generator_feed(g, prompt, n, NULL));
    for (size_t done = 0; done < o->max_tokens; done++) {
        int32_t t;
        TSR_TRY(tsr_generator_sample(g, &o->sampling, &t));
        if (emit && emit(user, t)) break;
        if (done + 1 == o->max_tokens) break;
        if (g->pos < g->P && !o->no_cache) {
            TSR_TRY(tsr_generator_feed(g, &t, 1, NULL));
            continue;
        }
        /* a full window slides by one; without the cache every token recomputes the window */
        size_t keep = g->pos < g->P ? g->pos : g->P - 1;
        memmove(g->tokens, g->tokens + (g->pos - keep), keep * sizeof *g->tokens);
        g->tokens[keep] = t;
        g->pos = 0;
        TSR_TRY(tsr_generator_feed(g, g->tokens, keep + 1, NULL));
    }
    return TSR_OK;
}
