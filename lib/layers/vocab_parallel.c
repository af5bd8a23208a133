/* Vocabulary-parallel token embedding and cross-entropy (Megatron-LM's VocabParallelEmbedding
 * and vocab-parallel cross entropy, Shoeybi et al. 2019): over a tensor-parallel group each rank
 * holds the rows [row0, row0 + rows) of the token table (and so of the tied head), the rows
 * split unevenly like the heads, so the whole [T, V] logits never exist on one rank.
 *   vpembed:D/fromLO/rowsN  forward: the row of each id in the slice, zeros for the others,
 *                           summed over the group (every rank then holds the whole [T, D]);
 *                           backward: the rows of the slice's ids only (the output gradient is
 *                           the same on every rank), no message.
 *   vpxent (the loss after an lmhead tied to a vpembed; tsr_model picks it): the logits are the
 *   slice's [T, N]; the group agrees on each row's max and argmax, then sums its exp-sums and
 *   the target's logit (only the rank holding the target has it), so
 *     loss = log(sum exp(l - max)) + max - l[target],  probs = exp(l - max) / sum  (the slice's),
 *   backward d(logits) = scale * (probs - onehot(target)) on the slice, no message (the tpcopy
 *   before the head sums the input gradient). The state keeps the slice's probabilities, then
 *   one "hit" per row (the group's argmax is the target) for evaluation's accuracy.
 * Both run on the host view of the buffers (tsr_buf_map; no copy on the host backend). The group's
 * figures are gathered in rank order and combined in double, the same on every rank. Without a
 * group they are the whole table's embed and softmax_xent. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

/* ---- vpembed ---- */

static int embed_match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 7 && !strncmp(name, "vpembed", 7);
}

static tsr_status embed_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n, (void)start;
    const char *what = "vpembed needs a positive width";
    if (c->s[c->pos] != ':') return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "%s (':D')", what);
    size_t argpos = ++c->pos;
    if (tsr_spec_count(c, &l->units) || !l->units) return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "%s", what);
    return TSR_OK;
}

static tsr_status embed_option(tsr_spec_cursor *c, const char *name, size_t n, tsr_layer *l) {
    (void)name, (void)n;
    size_t at = c->pos, *dst = !strncmp(c->s + at, "from", 4) ? &l->row0 : !strncmp(c->s + at, "rows", 4) ? &l->vocab
                                                                                                          : NULL;
    if (!dst)
        return tsr_spec_error(c, at, TSR_ERR_PARSE, "vpembed takes the options /fromR (first row) and /rowsN");
    c->pos += 4;
    if (tsr_spec_count(c, dst)) return tsr_spec_error(c, at, TSR_ERR_PARSE, "vpembed /%.4s needs a count", c->s + at);
    return TSR_OK;
}

static void embed_print(const tsr_layer *l, char *buf, size_t size) {
    snprintf(buf, size, "vpembed:%zu/from%zu/rows%zu", l->units, l->row0, l->vocab);
}

static tsr_status embed_shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    size_t ids = tsr_tshape_size(in[0]);
    if (!in[0].tokens)
        return tsr_error(ctx, TSR_ERR_SHAPE, "vpembed:%zu reads int32 token ids, but its input holds floats",
                         l->units);
    if (!l->units || l->units > TSR_MODEL_MAX_DIM)
        return tsr_error(ctx, TSR_ERR_SHAPE, "vpembed needs a positive width below %zu, got %zu",
                         TSR_MODEL_MAX_DIM, l->units);
    if (!l->vocab || l->row0 >= in[0].vocab || l->vocab > in[0].vocab - l->row0)
        return tsr_error(ctx, TSR_ERR_SHAPE, "vpembed rows %zu..%zu are not a slice of the vocabulary of %zu",
                         l->row0, l->row0 + l->vocab, in[0].vocab);
    if (ids * l->units > TSR_MODEL_MAX_SAMPLE || l->vocab > SIZE_MAX / 8 / l->units)
        return tsr_error(ctx, TSR_ERR_SHAPE, "vpembed:%zu of %zu ids over %zu rows is too large", l->units, ids,
                         l->vocab);
    l->out_c = ids, l->out_h = l->units, l->out_w = 1;
    l->weights = l->vocab * l->units;
    return TSR_OK;
}

static size_t embed_params(const tsr_layer *l, tsr_param_desc *out) {
    out[0] = tsr_param_normal(tsr_param_2d("weight", l->vocab, l->units, TSR_INIT_NORMAL, l->units, l->vocab),
                              0.02);
    return 1;
}

static void embed_flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = n * tsr_layer_out_size(l);
    *b = n * tsr_layer_out_size(l);
}

/* Maps up to three references; on failure unmaps what was mapped. */
static tsr_status map3(tsr_map m[3], const tsr_ref *r, const tsr_dtype *t, const size_t *count,
                       const tsr_map_mode *mode, int k) {
    memset(m, 0, 3 * sizeof *m);
    for (int i = 0; i < k; i++) {
        tsr_status s = tsr_buf_map(r[i], t[i], count[i], mode[i], NULL, &m[i]);
        if (s != TSR_OK) {
            while (i-- > 0) tsr_buf_unmap(&m[i]);
            memset(m, 0, 3 * sizeof *m); /* unmapped: a later unmap3 finds nothing to do */
            return s;
        }
    }
    return TSR_OK;
}

static tsr_status unmap3(tsr_map m[3], int k, tsr_status s) {
    for (int i = 0; i < k; i++) {
        tsr_status u = tsr_buf_unmap(&m[i]);
        if (s == TSR_OK) s = u;
    }
    return s;
}

static tsr_status embed_forward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t ids = r->n * l->out_c, D = l->units, N = l->vocab;
    tsr_map m[3];
    TSR_TRY(map3(m, (tsr_ref[]){r->in[0], r->param[0], r->out}, (tsr_dtype[]){TSR_DTYPE_I32, TSR_DTYPE_F32, TSR_DTYPE_F32},
                 (size_t[]){ids, N * D, ids * D}, (tsr_map_mode[]){TSR_MAP_READ, TSR_MAP_READ, TSR_MAP_WRITE}, 3));
    const int32_t *id = m[0].data;
    const float *table = m[1].data;
    float *out = m[2].data;
    for (size_t i = 0; i < ids; i++) {
        size_t row = (size_t)(uint32_t)id[i] - l->row0; /* wraps past N below the slice */
        if (id[i] >= 0 && row < N) memcpy(out + i * D, table + row * D, D * sizeof *out);
        else memset(out + i * D, 0, D * sizeof *out);
    }
    TSR_TRY(unmap3(m, 3, TSR_OK));
    return tsr_tp_allreduce(r->tp, r->out, ids * D);
}

static tsr_status embed_backward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t ids = r->n * l->out_c, D = l->units, N = l->vocab;
    tsr_map m[3];
    TSR_TRY(map3(m, (tsr_ref[]){r->in[0], r->dout, r->grad[0]}, (tsr_dtype[]){TSR_DTYPE_I32, TSR_DTYPE_F32, TSR_DTYPE_F32},
                 (size_t[]){ids, ids * D, N * D},
                 (tsr_map_mode[]){TSR_MAP_READ, TSR_MAP_READ, r->accumulate ? TSR_MAP_READ_WRITE : TSR_MAP_WRITE}, 3));
    const int32_t *id = m[0].data;
    const float *dout = m[1].data;
    float *g = m[2].data;
    if (!r->accumulate) memset(g, 0, N * D * sizeof *g);
    for (size_t i = 0; i < ids; i++) { /* in id order, as the whole table's embed adds them */
        size_t row = (size_t)(uint32_t)id[i] - l->row0;
        if (id[i] < 0 || row >= N) continue;
        for (size_t j = 0; j < D; j++) g[row * D + j] += dout[i * D + j];
    }
    return unmap3(m, 3, TSR_OK);
}

const tsr_layer_ops tsr_layer_vpembed = {
    .kind = TSR_LAYER_VPEMBED,
    .type = "vpembed",
    .match = embed_match,
    .parse_arg = embed_arg,
    .parse_option = embed_option,
    .print = embed_print,
    .shape = embed_shape,
    .params = embed_params,
    .token_input = 1,
    .flops = embed_flops,
    .forward = embed_forward,
    .backward = embed_backward,
};

/* ---- vpxent ---- */

static void xent_print(const tsr_layer *l, char *buf, size_t size) {
    snprintf(buf, size, "vpxent/from%zu", l->row0);
}

/* in[1]: the labels of one sample, P x 1 x 1 */
static tsr_status xent_shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    (void)ctx;
    size_t positions = in[1].c ? in[1].c : 1;
    l->units = tsr_tshape_size(in[0]) / positions; /* the slice's rows */
    l->out_c = positions, l->out_h = l->out_w = 1;
    return TSR_OK;
}

static size_t xent_state(const tsr_layer *l) { return l->out_c * (l->units + 1); } /* probs, hits */

static void xent_flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = 4 * n * l->out_c * l->units;
    *b = 2 * n * l->out_c * l->units;
}

/* The group's figures (bytes[k] each), rank after rank, into all; one rank: its own. */
static tsr_status gather_rows(tsr_comm *tp, size_t K, const double *mine, double *all, const size_t *bytes) {
    if (K == 1) {
        memcpy(all, mine, bytes[0]);
        return TSR_OK;
    }
    return tsr_comm_allgatherv(tp, mine, all, bytes);
}

static tsr_status xent_forward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    tsr_context *ctx = r->be->ctx;
    size_t rows = r->n * l->out_c, N = l->units, lo = l->row0;
    size_t K = r->tp && tsr_comm_size(r->tp) > 1 ? (size_t)tsr_comm_size(r->tp) : 1;
    double *mine = tsr_malloc(ctx, 2 * rows * sizeof *mine), *all = tsr_malloc(ctx, 2 * rows * K * sizeof *all);
    size_t *bytes = tsr_malloc(ctx, K * sizeof *bytes);
    if (!mine || !all || !bytes) {
        tsr_free(ctx, mine), tsr_free(ctx, all), tsr_free(ctx, bytes);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "vocabulary-parallel loss over %zu rows", rows);
    }
    for (size_t k = 0; k < K; k++) bytes[k] = 2 * rows * sizeof *mine; /* two figures a row */
    tsr_map m[3], o;
    memset(&o, 0, sizeof o);
    tsr_status s = map3(m, (tsr_ref[]){r->in[0], r->in[1], r->state},
                        (tsr_dtype[]){TSR_DTYPE_F32, TSR_DTYPE_I32, TSR_DTYPE_F32},
                        (size_t[]){rows * N, rows, rows * (N + 1)},
                        (tsr_map_mode[]){TSR_MAP_READ, TSR_MAP_READ, TSR_MAP_WRITE}, 3);
    if (s == TSR_OK) s = tsr_buf_map(r->out, TSR_DTYPE_F32, rows, TSR_MAP_WRITE, NULL, &o);
    const float *logit = s == TSR_OK ? m[0].data : NULL;
    const int32_t *y = s == TSR_OK ? m[1].data : NULL;
    float *p = s == TSR_OK ? m[2].data : NULL, *hit = p ? p + rows * N : NULL, *loss = o.data;
    /* 1: each row's max and (first) argmax over the group (ranks hold rows in vocabulary order) */
    for (size_t i = 0; s == TSR_OK && i < rows; i++) {
        const float *li = logit + i * N;
        size_t best = 0;
        for (size_t j = 1; j < N; j++)
            if (li[j] > li[best]) best = j;
        mine[2 * i] = li[best], mine[2 * i + 1] = (double)(lo + best);
    }
    if (s == TSR_OK) s = gather_rows(r->tp, K, mine, all, bytes);
    for (size_t i = 0; s == TSR_OK && i < rows; i++) {
        double mx = all[2 * i], arg = all[2 * i + 1];
        for (size_t k = 1; k < K; k++) /* a later rank's rows come later: only a larger max wins */
            if (all[k * 2 * rows + 2 * i] > mx) mx = all[k * 2 * rows + 2 * i], arg = all[k * 2 * rows + 2 * i + 1];
        hit[i] = y[i] >= 0 && (double)y[i] == arg;
        /* 2: this slice's sum of exp(l - max) and the target's logit where it lies here */
        const float *li = logit + i * N;
        float fmx = (float)mx;
        double sum = 0;
        for (size_t j = 0; j < N; j++) {
            float e = expf(li[j] - fmx);
            p[i * N + j] = e;
            sum += e;
        }
        size_t t = (size_t)(uint32_t)y[i] - lo;
        mine[2 * i] = sum;
        mine[2 * i + 1] = y[i] >= 0 && t < N ? (double)(li[t] - fmx) : 0.0;
    }
    if (s == TSR_OK) s = gather_rows(r->tp, K, mine, all, bytes);
    for (size_t i = 0; s == TSR_OK && i < rows; i++) {
        double sum = 0, zy = 0;
        for (size_t k = 0; k < K; k++) sum += all[k * 2 * rows + 2 * i], zy += all[k * 2 * rows + 2 * i + 1];
        float inv = (float)(1.0 / sum);
        for (size_t j = 0; j < N; j++) p[i * N + j] *= inv;
        loss[i] = y[i] == -1 ? 0.0f : y[i] < 0 ? NAN : (float)(log(sum) - zy);
    }
    tsr_free(ctx, mine);
    tsr_free(ctx, all);
    tsr_free(ctx, bytes);
    tsr_status u = tsr_buf_unmap(&o);
    s = unmap3(m, 3, s);
    return s != TSR_OK ? s : u;
}

static tsr_status xent_backward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t rows = r->n * l->out_c, N = l->units, lo = l->row0;
    tsr_map m[3];
    TSR_TRY(map3(m, (tsr_ref[]){r->state, r->in[1], r->din[0]}, (tsr_dtype[]){TSR_DTYPE_F32, TSR_DTYPE_I32, TSR_DTYPE_F32},
                 (size_t[]){rows * N, rows, rows * N}, (tsr_map_mode[]){TSR_MAP_READ, TSR_MAP_READ, TSR_MAP_WRITE}, 3));
    const float *p = m[0].data;
    const int32_t *y = m[1].data;
    float *d = m[2].data;
    for (size_t i = 0; i < rows; i++) {
        if (y[i] == -1) {
            memset(d + i * N, 0, N * sizeof *d);
            continue;
        }
        for (size_t j = 0; j < N; j++) d[i * N + j] = r->loss_scale * p[i * N + j];
        size_t t = (size_t)(uint32_t)y[i] - lo;
        if (y[i] >= 0 && t < N) d[i * N + t] -= r->loss_scale;
    }
    return unmap3(m, 3, TSR_OK);
}

const tsr_layer_ops tsr_layer_vpxent = {
    .kind = TSR_LAYER_VPXENT,
    .type = "vpxent",
    .print = xent_print,
    .shape = xent_shape,
    .state = xent_state,
    .flops = xent_flops,
    .forward = xent_forward,
    .backward = xent_backward,
};
