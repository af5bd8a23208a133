/* Tensor-parallel GPT blocks (Megatron-LM's split, Shoeybi et al. 2019) with uneven shares.
 * Rank r of a group of K holds heads [head0, head0 + heads) of every block's attention and the
 * same fraction of its MLP (4 x head size hidden units per head): c_attn's q, k and v columns
 * of its heads and c_fc's columns of its units (column splits), c_proj's matching rows (row
 * splits) without their bias, which the tpreduce after them adds once, after the sum. The token
 * embedding is vocabulary-parallel: the rank holds the rows [V h0 / H, V (h0 + h) / H) of the
 * table (vpembed, lib/layers/vocab_parallel.c), so the tied head gives its slice of the logits
 * (after a tpcopy) and the loss combines the group's (vpxent). Layer norms and the position
 * embedding are replicated. A rank's block is fourteen layers:
 *   layernorm, tpcopy, linear:3c, attention:h, linear:C/nobias, tpreduce, add,
 *   layernorm, tpcopy, linear:f, gelu, linear:C/nobias, tpreduce, add      (c = h x hs, f = 4c)
 * and the model ends in layernorm, tpcopy, lmhead:0.
 * Shares follow the ranks' speeds (largest remainder, at least one head each), so a fast
 * device can take 9 heads of 12 and a slow one 3. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

#define FULL_BLOCK 10 /* layers of a block in the whole model (tsr_gpt_spec) */
#define TP_BLOCK 14   /* in a tensor-parallel rank's model */

tsr_status tsr_gpt_tp_split(tsr_context *ctx, const tsr_gpt_config *c, size_t ranks, const double *speed,
                            size_t *heads) {
    TSR_TRY(tsr_gpt_config_check(ctx, c));
    if (!heads || !ranks || ranks > c->heads)
        return tsr_error(ctx, TSR_ERR_SHAPE, "%zu tensor-parallel ranks for %zu heads: each rank needs at least "
                         "one head", ranks, c->heads);
    double total = 0;
    for (size_t r = 0; r < ranks; r++) {
        double v = speed ? speed[r] : 1.0;
        if (!(v > 0) || !isfinite(v))
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tensor-parallel rank %zu: speed %g is not positive", r, v);
        total += v;
    }
    /* one head each, the rest by largest remainder of the speed-proportional share */
    size_t left = c->heads - ranks;
    double *rem = tsr_calloc(ctx, ranks, sizeof *rem);
    if (!rem) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tensor-parallel split");
    size_t given = 0;
    for (size_t r = 0; r < ranks; r++) {
        double want = (double)left * (speed ? speed[r] : 1.0) / total;
        heads[r] = 1 + (size_t)floor(want);
        rem[r] = want - floor(want);
        given += heads[r] - 1;
    }
    while (given < left) { /* the largest remainders, the lower rank first on ties */
        size_t best = 0;
        for (size_t r = 1; r < ranks; r++)
            if (rem[r] > rem[best]) best = r;
        heads[best]++, rem[best] = -1, given++;
    }
    tsr_free(ctx, rem);
    return TSR_OK;
}

/* The vocabulary rows of the share of heads [head0, head0 + heads): in proportion, at least one
 * each when the vocabulary has at least as many rows as there are heads. */
static void vocab_rows(const tsr_gpt_config *c, size_t head0, size_t heads, size_t *row0, size_t *rows) {
    *row0 = c->vocab * head0 / c->heads;
    *rows = c->vocab * (head0 + heads) / c->heads - *row0;
}

static size_t tp_spec(const tsr_gpt_config *c, size_t head0, size_t heads, char *buf, size_t size) {
    size_t C = c->channels, hs = C / c->heads, cl = heads * hs, len = 0, row0, rows;
    double proj_std = 0.02 / sqrt(2.0 * (double)c->layers);
    vocab_rows(c, head0, heads, &row0, &rows);
    if (buf && size) buf[0] = 0;
    tsr_spec_append(buf, size, &len, "vpembed:%zu/from%zu/rows%zu,posembed:%zu", C, row0, rows, c->context);
    for (size_t b = 0; b < c->layers; b++) {
        size_t x = 1 + TP_BLOCK * b;
        tsr_spec_append(buf, size, &len, ",layernorm,tpcopy,linear:%zu,attention:%zu,linear:%zu/std%.6g/nobias,tpreduce,add:%zu",
            3 * cl, heads, C, proj_std, x);
        tsr_spec_append(buf, size, &len, ",layernorm,tpcopy,linear:%zu,gelu,linear:%zu/std%.6g/nobias,tpreduce,add:%zu", 4 * cl,
            C, proj_std, x + 7);
    }
    tsr_spec_append(buf, size, &len, ",layernorm,tpcopy,lmhead:0");
    return len;
}

tsr_status tsr_model_create_gpt_tp(tsr_context *ctx, const tsr_gpt_config *c, size_t tokens, size_t head0,
                                   size_t heads, tsr_model **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_create_gpt_tp: NULL output");
    *out = NULL;
    TSR_TRY(tsr_gpt_config_check(ctx, c));
    if (!heads || head0 + heads > c->heads)
        return tsr_error(ctx, TSR_ERR_SHAPE, "a tensor-parallel share of heads %zu..%zu of %zu", head0,
                         head0 + heads, c->heads);
    if (c->vocab < c->heads)
        return tsr_error(ctx, TSR_ERR_SHAPE, "a vocabulary of %zu rows split like %zu heads: at least one row "
                         "a head", c->vocab, c->heads);
    if (!tokens || tokens > c->context)
        return tsr_error(ctx, TSR_ERR_SHAPE, "a GPT of context %zu reads 1 to %zu tokens, not %zu", c->context,
                         c->context, tokens);
    size_t n = tp_spec(c, head0, heads, NULL, 0) + 1;
    char *spec = tsr_malloc(ctx, n);
    if (!spec) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "GPT spec");
    tp_spec(c, head0, heads, spec, n);
    tsr_model_input_desc d = {TSR_DTYPE_I32, 1, {tokens, 0, 0}, c->vocab, c->vocab};
    tsr_status s = tsr_model_parse_desc(ctx, spec, &d, out);
    tsr_free(ctx, spec);
    return s;
}

size_t tsr_gpt_tp_layer(const tsr_gpt_config *c, size_t layer) {
    /* where each of a whole block's ten layers begins among the share's fourteen: c_attn and
     * c_fc with the tpcopy before them, the residual adds after their tpreduce */
    static const size_t at[FULL_BLOCK] = {0, 1, 3, 4, 6, 7, 8, 10, 11, 13};
    if (layer < 2) return layer;
    if (layer > 2 + FULL_BLOCK * c->layers) /* the head (after its tpcopy) and the end */
        return layer + (TP_BLOCK - FULL_BLOCK) * c->layers + 1;
    if (layer == 2 + FULL_BLOCK * c->layers) return 2 + TP_BLOCK * c->layers; /* ln_f */
    return 2 + TP_BLOCK * ((layer - 2) / FULL_BLOCK) + at[(layer - 2) % FULL_BLOCK];
}

/* ---- the whole model's parameters and a rank's share ---- */

/* Tensor k of layer `layer` (offset and count in the flat layout). */
static int tensor_of(const tsr_model *m, size_t layer, size_t k, tsr_param_info *out) {
    for (size_t t = 0, n = tsr_model_param_tensor_count(m); t < n; t++) {
        if (tsr_model_param_tensor(m, t, out) != TSR_OK) return 0;
        if (out->layer == layer && k-- == 0) return 1;
    }
    return 0;
}

/* How a rank's tensor sits in the whole one: `rows` rows of the local width taken from the
 * whole tensor's rows starting at row0, each from nseg column segments of the whole width. */
typedef struct slice {
    size_t row0, rows, full_w, local_w;
    size_t nseg, seg0[3], seglen;
} slice;

static void copy_slice(const slice *s, float *full, float *local, int to_local) {
    for (size_t r = 0; r < s->rows; r++)
        for (size_t g = 0; g < s->nseg; g++) {
            float *f = full + (s->row0 + r) * s->full_w + s->seg0[g], *l = local + r * s->local_w + g * s->seglen;
            if (to_local) memcpy(l, f, s->seglen * sizeof *f);
            else memcpy(f, l, s->seglen * sizeof *f);
        }
}

/* Walks the tensors of a rank's model and the whole one side by side: to_local copies the
 * whole parameters into the rank's, else the rank's into the whole (replicated tensors only
 * when `owner`). */
static tsr_status walk(tsr_context *ctx, const tsr_model *whole, const tsr_model *mine, const tsr_gpt_config *c,
                       size_t head0, size_t heads, float *full, float *local, int to_local, int owner) {
    size_t L = c->layers, C = c->channels, hs = C / c->heads;
    if (tsr_model_layer_count(whole) != 4 + FULL_BLOCK * L || tsr_model_layer_count(mine) != 5 + TP_BLOCK * L ||
        head0 + heads > c->heads)
        return tsr_error(ctx, TSR_ERR_SHAPE, "tensor-parallel share: the models are not a GPT of %zu blocks "
                         "and its share of heads %zu..%zu", L, head0, head0 + heads);
    /* rank layer -> whole layer of a block (-1: no parameters) */
    static const int of_block[TP_BLOCK] = {0, -1, 1, -1, 3, 3, -1, 5, -1, 6, -1, 8, 8, -1};
    size_t cl = heads * hs, f0 = head0 * 4 * hs, fl = 4 * cl, row0, rows;
    vocab_rows(c, head0, heads, &row0, &rows);
    for (size_t i = 0; i < tsr_model_layer_count(mine); i++) {
        size_t wi = i; /* embeddings, then ln_f and the head */
        int j = -2;
        if (i >= 2 && i < 2 + TP_BLOCK * L) {
            j = (int)((i - 2) % TP_BLOCK);
            if (of_block[j] < 0) continue;
            wi = 2 + FULL_BLOCK * ((i - 2) / TP_BLOCK) + (size_t)of_block[j];
        } else if (i >= 2) {
            wi = i - (TP_BLOCK - FULL_BLOCK) * L;
        }
        for (size_t k = 0;; k++) {
            tsr_param_info lt, wt;
            if (!tensor_of(mine, i, k, &lt)) break;
            /* tpreduce's bias is the whole c_proj's second tensor */
            size_t wk = (j == 5 || j == 12) ? 1 : k;
            if (!tensor_of(whole, wi, wk, &wt))
                return tsr_error(ctx, TSR_ERR_STATE, "tensor-parallel share: layer %zu has no tensor %zu", wi, wk);
            int weight = lt.rank == 2;
            slice s = {0, weight ? lt.shape[0] : 1, weight ? wt.shape[1] : wt.count, weight ? lt.shape[1] : lt.count,
                       1, {0, 0, 0}, weight ? lt.shape[1] : lt.count};
            if (j == 2) { /* c_attn: the q, k and v columns of the share's heads */
                s.nseg = 3, s.seglen = cl;
                for (size_t g = 0; g < 3; g++) s.seg0[g] = g * C + head0 * hs;
            } else if (j == 9) { /* c_fc: its hidden units' columns */
                s.seg0[0] = f0, s.seglen = fl;
            } else if ((j == 4 || j == 11) && k == 0) { /* c_proj: the matching rows */
                s.row0 = j == 4 ? head0 * hs : f0;
            } else if (i == 0) { /* the token table: the vocabulary slice's rows */
                s.row0 = row0;
            } else if (!to_local && !owner) {
                continue; /* replicated: one rank writes it into the whole */
            }
            copy_slice(&s, full + wt.offset, local + lt.offset, to_local);
        }
    }
    return TSR_OK;
}

tsr_status tsr_gpt_tp_scatter(tsr_context *ctx, const tsr_model *whole, const tsr_model *mine,
                              const tsr_gpt_config *c, size_t head0, size_t heads, const float *full,
                              float *local) {
    if (!whole || !mine || !c || !full || !local)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_gpt_tp_scatter: NULL argument");
    return walk(ctx, whole, mine, c, head0, heads, (float *)full, local, 1, 1);
}

tsr_status tsr_gpt_tp_gather(tsr_context *ctx, const tsr_model *whole, const tsr_model *mine,
                             const tsr_gpt_config *c, size_t head0, size_t heads, const float *local,
                             int owner, float *full) {
    if (!whole || !mine || !c || !full || !local)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_gpt_tp_gather: NULL argument");
    return walk(ctx, whole, mine, c, head0, heads, full, (float *)local, 0, owner);
}
