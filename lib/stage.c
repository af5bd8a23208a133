/* Stages: device memory of a layer range and its forward/backward passes (llm.c style: plain
 * functions per layer over one activation buffer, gradients accumulated). Every operation
 * goes through the checked tsr_op_* wrappers, so a stage runs on any backend. */
#include <math.h>
#include <string.h>
#include "lib/internal.h"
#include "lib/stage.h"

typedef struct layer_mem {
    size_t in;        /* element offset of the layer input in acts */
    size_t out;       /* element offset of the output in acts */
    size_t aux;       /* im2col columns, pooling indices or dropout mask */
    size_t w, b;      /* parameter offsets (params and grads share the layout) */
    int gin, gout;    /* ping-pong index holding d(input) / d(output) during backward */
} layer_mem;

struct tsr_stage {
    tsr_context *ctx;
    tsr_backend *be;
    const tsr_model *model;
    size_t first, last, max_batch;
    int need_input_grad, is_last, trained;
    size_t nparams;
    tsr_buf *params, *grads, *acts, *g[2];
    layer_mem *mem;   /* indexed by layer - first */
    size_t input_off, labels_off, probs_off, lossrows_off, losssum_off;
    size_t ws_off, ones_off;  /* per-image conv weight gradients; a row of max_batch ones */
    int out_grad_idx, in_grad_idx;
    tsr_stage_grad_hook hook;
    void *hook_user;
    float loss_scale;  /* d(loss)/d(per-sample loss); 0: 1/n (the mean over the batch) */
    /* activation sets (pipeline micro-batches in flight): acts is slot_acts[slot] */
    tsr_buf **slot_acts;
    int *slot_trained;
    size_t nslots, slot, act_bytes;
};

/* ---- RNG ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void tsr_rng_seed(tsr_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t tsr_rng_next(tsr_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double tsr_rng_uniform(tsr_rng *r) { return (double)(tsr_rng_next(r) >> 11) * 0x1.0p-53; }

/* ---- creation ---- */

static const tsr_layer *layer(const tsr_stage *st, size_t i) { return &st->model->layers[i]; }

/* Adds `count` elements to a running offset, keeping each region 16-element aligned
 * (64 bytes) so OpenCL sub-ranges stay aligned; fails on overflow. */
static int reserve(size_t *cursor, size_t count, size_t *off) {
    size_t aligned = (count + 15) & ~(size_t)15;
    if (aligned < count || *cursor + aligned < *cursor) return -1;
    *off = *cursor;
    *cursor += aligned;
    return 0;
}

void tsr_stage_free(tsr_stage *st) {
    if (!st) return;
    tsr_buf_free(st->params);
    tsr_buf_free(st->grads);
    if (st->slot_acts) {
        for (size_t i = 0; i < st->nslots; i++) tsr_buf_free(st->slot_acts[i]);
    } else {
        tsr_buf_free(st->acts);
    }
    tsr_free(st->ctx, st->slot_acts);
    tsr_free(st->ctx, st->slot_trained);
    tsr_buf_free(st->g[0]);
    tsr_buf_free(st->g[1]);
    tsr_free(st->ctx, st->mem);
    tsr_free(st->ctx, st);
}

/* One zeroed activation set with its row of ones (conv weight-gradient reduction). */
static tsr_status new_act_set(tsr_stage *st, tsr_buf **out) {
    TSR_TRY(tsr_buf_alloc(st->be, st->act_bytes, out));
    tsr_status s = tsr_op_fill(st->be, tsr_ref_at(*out, 0), st->act_bytes / 4, 0.0f);
    if (s == TSR_OK) s = tsr_op_fill(st->be, tsr_ref_at(*out, st->ones_off), st->max_batch, 1.0f);
    if (s != TSR_OK) {
        tsr_buf_free(*out);
        *out = NULL;
    }
    return s;
}

tsr_status tsr_stage_create(tsr_backend *be, const tsr_model *model, const tsr_stage_options *o,
                            tsr_stage **out) {
    if (!be || !model || !o || !out) return TSR_ERR_INVALID_ARG;
    *out = NULL;
    tsr_context *ctx = be->ctx;
    TSR_TRY(tsr_model_check(model));
    if (o->first >= o->last || o->last > model->count)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "stage layers [%zu, %zu) not within the %zu layers",
                         o->first, o->last, model->count);
    if (!o->max_batch || o->max_batch > ((size_t)1 << 20))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "stage batch %zu is not valid", o->max_batch);
    tsr_stage *st = tsr_calloc(ctx, 1, sizeof *st);
    if (!st) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "stage");
    st->ctx = ctx;
    st->be = be;
    st->model = model;
    st->first = o->first;
    st->last = o->last;
    st->max_batch = o->max_batch;
    st->need_input_grad = o->need_input_grad;
    st->is_last = o->last == model->count;
    st->nslots = 1;
    size_t nl = o->last - o->first, B = o->max_batch;
    tsr_status s = TSR_ERR_SHAPE;
    st->mem = tsr_calloc(ctx, nl, sizeof *st->mem);
    st->slot_acts = tsr_calloc(ctx, 1, sizeof *st->slot_acts);
    st->slot_trained = tsr_calloc(ctx, 1, sizeof *st->slot_trained);
    if (!st->mem || !st->slot_acts || !st->slot_trained) {
        tsr_stage_free(st);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "stage layers");
    }

    /* parameters in reverse layer order */
    size_t poff = 0;
    for (size_t i = o->last; i-- > o->first;) {
        const tsr_layer *l = layer(st, i);
        st->mem[i - o->first].w = poff;
        poff += l->weights;
        st->mem[i - o->first].b = poff;
        poff += l->biases;
    }
    st->nparams = poff;

    /* activations, state and, for the last stage, the loss */
    size_t cur = 0, gmax = 0, count, ws = 0;
    const tsr_layer *l0 = layer(st, o->first);
    if (tsr_mul_size(B, tsr_layer_in_size(l0), &count) || reserve(&cur, count, &st->input_off))
        goto overflow;
    gmax = count;
    size_t prev = st->input_off;
    for (size_t i = o->first; i < o->last; i++) {
        const tsr_layer *l = layer(st, i);
        layer_mem *m = &st->mem[i - o->first];
        m->in = prev;
        size_t outn;
        if (tsr_mul_size(B, tsr_layer_out_size(l), &outn)) goto overflow;
        if (outn > gmax) gmax = outn;
        if (l->kind == TSR_LAYER_FLATTEN) m->out = m->in;
        else if (reserve(&cur, outn, &m->out)) goto overflow;
        size_t aux = 0;
        if (l->kind == TSR_LAYER_CONV2D) {
            size_t rows = l->in_c * l->kh * l->kw, ohw = l->out_h * l->out_w, t;
            if (tsr_mul_size(rows, ohw, &t) || tsr_mul_size(t, B, &aux)) goto overflow;
            if (tsr_mul_size(l->weights, B, &t)) goto overflow;
            if (t > ws) ws = t;
        } else if (l->kind == TSR_LAYER_MAXPOOL || l->kind == TSR_LAYER_DROPOUT) {
            aux = outn;
        }
        if (aux && reserve(&cur, aux, &m->aux)) goto overflow;
        prev = m->out;
    }
    if (reserve(&cur, ws, &st->ws_off) || reserve(&cur, B, &st->ones_off)) goto overflow;
    if (st->is_last) {
        size_t classes = model->input.classes, pc;
        if (tsr_mul_size(B, classes, &pc) || reserve(&cur, B, &st->labels_off) ||
            reserve(&cur, pc, &st->probs_off) || reserve(&cur, B, &st->lossrows_off) ||
            reserve(&cur, 1, &st->losssum_off))
            goto overflow;
    }

    /* ping-pong plan for activation gradients, walked as backward will walk it */
    int g = 0;
    st->out_grad_idx = 0;
    for (size_t i = o->last; i-- > o->first;) {
        const tsr_layer *l = layer(st, i);
        layer_mem *m = &st->mem[i - o->first];
        m->gout = g;
        if (l->kind != TSR_LAYER_RELU && l->kind != TSR_LAYER_FLATTEN) g ^= 1; /* in place */
        m->gin = g;
    }
    st->in_grad_idx = g;

    size_t act_bytes, g_bytes;
    if (tsr_mul_size(cur, 4, &act_bytes) || tsr_mul_size(gmax, 4, &g_bytes)) goto overflow;
    if ((s = tsr_buf_alloc(be, st->nparams ? st->nparams * 4 : 4, &st->params)) != TSR_OK ||
        (s = tsr_buf_alloc(be, st->nparams ? st->nparams * 4 : 4, &st->grads)) != TSR_OK ||
        (s = tsr_buf_alloc(be, g_bytes, &st->g[0])) != TSR_OK ||
        (s = tsr_buf_alloc(be, g_bytes, &st->g[1])) != TSR_OK ||
        (s = tsr_op_fill(be, tsr_ref_at(st->grads, 0), st->nparams, 0.0f)) != TSR_OK) {
        tsr_stage_free(st);
        return s;
    }
    st->act_bytes = act_bytes;
    if ((s = new_act_set(st, &st->slot_acts[0])) != TSR_OK) {
        tsr_stage_free(st);
        return s;
    }
    st->acts = st->slot_acts[0];
    *out = st;
    return TSR_OK;
overflow:
    tsr_stage_free(st);
    return tsr_error(ctx, TSR_ERR_SHAPE, "stage memory for batch %zu overflows", B);
}

/* ---- accessors ---- */

tsr_buf *tsr_stage_params(tsr_stage *st) { return st ? st->params : NULL; }
tsr_buf *tsr_stage_grads(tsr_stage *st) { return st ? st->grads : NULL; }
size_t tsr_stage_param_count(const tsr_stage *st) { return st ? st->nparams : 0; }

tsr_status tsr_stage_layer_params(const tsr_stage *st, size_t i, size_t *w_off, size_t *w_count,
                                  size_t *b_off, size_t *b_count) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (i < st->first || i >= st->last)
        return tsr_error(st->ctx, TSR_ERR_NOT_FOUND, "layer %zu is not in stage [%zu, %zu)", i,
                         st->first, st->last);
    const layer_mem *m = &st->mem[i - st->first];
    if (w_off) *w_off = m->w;
    if (b_off) *b_off = m->b;
    if (w_count) *w_count = layer(st, i)->weights;
    if (b_count) *b_count = layer(st, i)->biases;
    return TSR_OK;
}

tsr_ref tsr_stage_input(tsr_stage *st) { return tsr_ref_at(st->acts, st->input_off); }
tsr_ref tsr_stage_output(tsr_stage *st) {
    return tsr_ref_at(st->acts, st->mem[st->last - 1 - st->first].out);
}
tsr_ref tsr_stage_input_grad(tsr_stage *st) { return tsr_ref_at(st->g[st->in_grad_idx], 0); }
tsr_ref tsr_stage_output_grad(tsr_stage *st) { return tsr_ref_at(st->g[st->out_grad_idx], 0); }
tsr_ref tsr_stage_labels(tsr_stage *st) { return tsr_ref_at(st->acts, st->labels_off); }
tsr_ref tsr_stage_probs(tsr_stage *st) { return tsr_ref_at(st->acts, st->probs_off); }

tsr_status tsr_stage_select(tsr_stage *st, size_t slot) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (slot >= st->nslots)
        return tsr_error(st->ctx, TSR_ERR_INVALID_ARG, "activation slot %zu of a stage with %zu", slot,
                         st->nslots);
    st->slot_trained[st->slot] = st->trained;
    st->slot = slot;
    st->acts = st->slot_acts[slot];
    st->trained = st->slot_trained[slot];
    return TSR_OK;
}

tsr_status tsr_stage_set_slots(tsr_stage *st, size_t slots) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (!slots || slots > 4096)
        return tsr_error(st->ctx, TSR_ERR_INVALID_ARG, "%zu activation slots (1 to 4096)", slots);
    if (slots <= st->nslots) return TSR_OK;
    tsr_buf **a = tsr_calloc(st->ctx, slots, sizeof *a);
    int *t = tsr_calloc(st->ctx, slots, sizeof *t);
    if (!a || !t) {
        tsr_free(st->ctx, a);
        tsr_free(st->ctx, t);
        return tsr_error(st->ctx, TSR_ERR_NO_MEMORY, "stage: %zu activation slots", slots);
    }
    memcpy(a, st->slot_acts, st->nslots * sizeof *a);
    memcpy(t, st->slot_trained, st->nslots * sizeof *t);
    tsr_free(st->ctx, st->slot_acts);
    tsr_free(st->ctx, st->slot_trained);
    st->slot_acts = a;
    st->slot_trained = t;
    for (; st->nslots < slots; st->nslots++) /* counted as they come: free releases them */
        TSR_TRY(new_act_set(st, &st->slot_acts[st->nslots]));
    return TSR_OK;
}

size_t tsr_stage_act_bytes(const tsr_stage *st) { return st ? st->act_bytes : 0; }

void tsr_stage_set_loss_scale(tsr_stage *st, float scale) {
    if (st) st->loss_scale = scale;
}

void tsr_stage_set_hook(tsr_stage *st, tsr_stage_grad_hook hook, void *user) {
    if (!st) return;
    st->hook = hook;
    st->hook_user = user;
}

/* ---- layers ---- */

static tsr_conv_geom conv_geom(const tsr_layer *l, size_t n) {
    tsr_conv_geom g = {n, l->in_c, l->in_h, l->in_w, l->kh, l->kw, l->stride, l->stride,
                       l->pad_h, l->pad_w, l->out_h, l->out_w};
    return g;
}

static tsr_pool_geom pool_geom(const tsr_layer *l, size_t n) {
    tsr_pool_geom g = {n * l->in_c, l->in_h, l->in_w, l->kh, l->stride, l->out_h, l->out_w};
    return g;
}

uint64_t tsr_stage_dropout_seed(uint64_t seed, size_t i) {
    return ((uint64_t)tsr_hash32(seed, 2 * i) << 32) | tsr_hash32(seed, 2 * i + 1);
}

static tsr_status dense_forward(tsr_stage *st, const tsr_layer *l, const layer_mem *m, size_t n) {
    size_t in = tsr_layer_in_size(l), u = l->units;
    tsr_backend *be = st->be;
    TSR_TRY(tsr_op_gemm(be, TSR_NO_TRANS, TSR_TRANS, n, u, in, 1.0f, tsr_ref_at(st->acts, m->in), in,
                        tsr_ref_at(st->params, m->w), in, 0.0f, tsr_ref_at(st->acts, m->out), u));
    return tsr_op_bias_add(be, n, u, 1, tsr_ref_at(st->params, m->b), tsr_ref_at(st->acts, m->out));
}

static tsr_status dense_backward(tsr_stage *st, const tsr_layer *l, const layer_mem *m, size_t n,
                                 int accumulate, int want_dx) {
    size_t in = tsr_layer_in_size(l), u = l->units;
    tsr_backend *be = st->be;
    tsr_ref dy = tsr_ref_at(st->g[m->gout], 0);
    TSR_TRY(tsr_op_gemm(be, TSR_TRANS, TSR_NO_TRANS, u, in, n, 1.0f, dy, u,
                        tsr_ref_at(st->acts, m->in), in, accumulate ? 1.0f : 0.0f,
                        tsr_ref_at(st->grads, m->w), in));
    if (!accumulate) TSR_TRY(tsr_op_fill(be, tsr_ref_at(st->grads, m->b), u, 0.0f));
    TSR_TRY(tsr_op_bias_grad(be, n, u, 1, dy, tsr_ref_at(st->grads, m->b)));
    if (!want_dx) return TSR_OK;
    return tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, n, in, u, 1.0f, dy, u,
                       tsr_ref_at(st->params, m->w), in, 0.0f, tsr_ref_at(st->g[m->gin], 0), in);
}

static tsr_status conv_forward(tsr_stage *st, const tsr_layer *l, const layer_mem *m, size_t n) {
    tsr_conv_geom g = conv_geom(l, n);
    size_t rows = l->in_c * l->kh * l->kw, ohw = l->out_h * l->out_w, f = l->units;
    tsr_backend *be = st->be;
    TSR_TRY(tsr_op_im2col(be, &g, tsr_ref_at(st->acts, m->in), tsr_ref_at(st->acts, m->aux)));
    /* one weight matrix (stride 0) against every image's columns */
    TSR_TRY(tsr_op_gemm_batched(be, TSR_NO_TRANS, TSR_NO_TRANS, f, ohw, rows, 1.0f,
                                tsr_ref_at(st->params, m->w), rows, 0, tsr_ref_at(st->acts, m->aux),
                                ohw, rows * ohw, 0.0f, tsr_ref_at(st->acts, m->out), ohw, f * ohw, n));
    return tsr_op_bias_add(be, n, f, ohw, tsr_ref_at(st->params, m->b), tsr_ref_at(st->acts, m->out));
}

static tsr_status conv_backward(tsr_stage *st, const tsr_layer *l, const layer_mem *m, size_t n,
                                int accumulate, int want_dx) {
    size_t rows = l->in_c * l->kh * l->kw, ohw = l->out_h * l->out_w, f = l->units;
    tsr_backend *be = st->be;
    tsr_buf *dyb = st->g[m->gout];
    /* dW += sum over images of dY_i * col_i^T: one batched GEMM into per-image partials (the
     * backend may run the images in parallel), then a ones-row GEMM sums them */
    TSR_TRY(tsr_op_gemm_batched(be, TSR_NO_TRANS, TSR_TRANS, f, rows, ohw, 1.0f, tsr_ref_at(dyb, 0),
                                ohw, f * ohw, tsr_ref_at(st->acts, m->aux), ohw, rows * ohw, 0.0f,
                                tsr_ref_at(st->acts, st->ws_off), rows, f * rows, n));
    TSR_TRY(tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, 1, f * rows, n, 1.0f,
                        tsr_ref_at(st->acts, st->ones_off), n, tsr_ref_at(st->acts, st->ws_off),
                        f * rows, accumulate ? 1.0f : 0.0f, tsr_ref_at(st->grads, m->w), f * rows));
    if (!accumulate) TSR_TRY(tsr_op_fill(be, tsr_ref_at(st->grads, m->b), f, 0.0f));
    TSR_TRY(tsr_op_bias_grad(be, n, f, ohw, tsr_ref_at(dyb, 0), tsr_ref_at(st->grads, m->b)));
    if (!want_dx) return TSR_OK;
    /* d(col) = W^T dY_i, written over the columns (no longer needed), then folded back */
    TSR_TRY(tsr_op_gemm_batched(be, TSR_TRANS, TSR_NO_TRANS, rows, ohw, f, 1.0f,
                                tsr_ref_at(st->params, m->w), rows, 0, tsr_ref_at(dyb, 0), ohw, f * ohw,
                                0.0f, tsr_ref_at(st->acts, m->aux), ohw, rows * ohw, n));
    tsr_ref dx = tsr_ref_at(st->g[m->gin], 0);
    TSR_TRY(tsr_op_fill(be, dx, n * tsr_layer_in_size(l), 0.0f));
    tsr_conv_geom g = conv_geom(l, n);
    return tsr_op_col2im(be, &g, tsr_ref_at(st->acts, m->aux), dx);
}

tsr_status tsr_stage_forward(tsr_stage *st, size_t n, int train, uint64_t dropout_seed, float *loss) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (!n || n > st->max_batch)
        return tsr_error(st->ctx, TSR_ERR_SHAPE, "batch of %zu samples: the stage holds 1 to %zu", n,
                         st->max_batch);
    tsr_backend *be = st->be;
    st->trained = 0;
    for (size_t i = st->first; i < st->last; i++) {
        const tsr_layer *l = layer(st, i);
        const layer_mem *m = &st->mem[i - st->first];
        size_t count = n * tsr_layer_out_size(l);
        tsr_ref x = tsr_ref_at(st->acts, m->in), y = tsr_ref_at(st->acts, m->out);
        switch (l->kind) {
        case TSR_LAYER_DENSE: TSR_TRY(dense_forward(st, l, m, n)); break;
        case TSR_LAYER_CONV2D: TSR_TRY(conv_forward(st, l, m, n)); break;
        case TSR_LAYER_MAXPOOL: {
            tsr_pool_geom g = pool_geom(l, n);
            TSR_TRY(tsr_op_maxpool_forward(be, &g, x, y, tsr_ref_at(st->acts, m->aux)));
            break;
        }
        case TSR_LAYER_RELU: TSR_TRY(tsr_op_relu_forward(be, count, x, y)); break;
        case TSR_LAYER_DROPOUT:
            if (train)
                TSR_TRY(tsr_op_dropout_forward(be, count, l->p, tsr_stage_dropout_seed(dropout_seed, i), x, y,
                                               tsr_ref_at(st->acts, m->aux)));
            else
                TSR_TRY(tsr_buf_copy(st->acts, m->out * 4, st->acts, m->in * 4, count * 4));
            break;
        case TSR_LAYER_FLATTEN: break;
        }
    }
    if (st->is_last) {
        size_t classes = st->model->input.classes;
        TSR_TRY(tsr_op_softmax_xent_forward(be, n, classes, tsr_stage_output(st), tsr_stage_labels(st),
                                            tsr_stage_probs(st), tsr_ref_at(st->acts, st->lossrows_off)));
        if (loss) {
            float sum;
            TSR_TRY(tsr_op_sum(be, n, tsr_ref_at(st->acts, st->lossrows_off),
                               tsr_ref_at(st->acts, st->losssum_off)));
            TSR_TRY(tsr_buf_read(st->acts, st->losssum_off * 4, &sum, 4));
            *loss = sum / (float)n;
        }
    }
    st->trained = train ? (int)n : -(int)n;
    return TSR_OK;
}

tsr_status tsr_stage_backward(tsr_stage *st, size_t n, int accumulate) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (st->trained != (int)n)
        return tsr_error(st->ctx, TSR_ERR_STATE,
                         "stage backward on %zu samples needs a training forward on the same batch", n);
    tsr_backend *be = st->be;
    float scale = st->loss_scale > 0.0f ? st->loss_scale : 1.0f / (float)n;
    if (st->is_last)
        TSR_TRY(tsr_op_softmax_xent_backward(be, n, st->model->input.classes, tsr_stage_probs(st),
                                             tsr_stage_labels(st), scale,
                                             tsr_ref_at(st->g[st->out_grad_idx], 0)));
    for (size_t i = st->last; i-- > st->first;) {
        const tsr_layer *l = layer(st, i);
        const layer_mem *m = &st->mem[i - st->first];
        int want_dx = i > st->first || st->need_input_grad;
        size_t count = n * tsr_layer_out_size(l);
        tsr_ref dy = tsr_ref_at(st->g[m->gout], 0), dx = tsr_ref_at(st->g[m->gin], 0);
        switch (l->kind) {
        case TSR_LAYER_DENSE: TSR_TRY(dense_backward(st, l, m, n, accumulate, want_dx)); break;
        case TSR_LAYER_CONV2D: TSR_TRY(conv_backward(st, l, m, n, accumulate, want_dx)); break;
        case TSR_LAYER_MAXPOOL:
            if (want_dx) {
                tsr_pool_geom g = pool_geom(l, n);
                TSR_TRY(tsr_op_maxpool_backward(be, &g, dy, tsr_ref_at(st->acts, m->aux), dx));
            }
            break;
        case TSR_LAYER_RELU:
            if (want_dx) TSR_TRY(tsr_op_relu_backward(be, count, tsr_ref_at(st->acts, m->out), dy, dx));
            break;
        case TSR_LAYER_DROPOUT:
            if (want_dx) TSR_TRY(tsr_op_mul(be, count, dy, tsr_ref_at(st->acts, m->aux), dx));
            break;
        case TSR_LAYER_FLATTEN: break;
        }
        if (st->hook)
            TSR_TRY(st->hook(st->hook_user, i, m->w * 4, (l->weights + l->biases) * 4));
    }
    return TSR_OK;
}

tsr_status tsr_stage_init_params(tsr_stage *st, int glorot, uint64_t seed) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (!st->nparams) return TSR_OK;
    float *host = tsr_malloc(st->ctx, st->nparams * sizeof *host);
    if (!host) return tsr_error(st->ctx, TSR_ERR_NO_MEMORY, "initial parameters");
    for (size_t i = st->first; i < st->last; i++) {
        const tsr_layer *l = layer(st, i);
        const layer_mem *m = &st->mem[i - st->first];
        if (!l->weights) continue;
        size_t fan_in = l->kind == TSR_LAYER_CONV2D ? l->in_c * l->kh * l->kw : tsr_layer_in_size(l);
        size_t fan_out = l->kind == TSR_LAYER_CONV2D ? l->units * l->kh * l->kw : l->units;
        double bound = glorot ? sqrt(6.0 / (double)(fan_in + fan_out)) : sqrt(6.0 / (double)fan_in);
        tsr_rng r; /* one stream per layer: the same values however the model is split */
        tsr_rng_seed(&r, seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(i + 1)));
        for (size_t k = 0; k < l->weights; k++)
            host[m->w + k] = (float)((2.0 * tsr_rng_uniform(&r) - 1.0) * bound);
        memset(host + m->b, 0, l->biases * sizeof *host);
    }
    tsr_status s = tsr_buf_write(st->params, 0, host, st->nparams * sizeof *host);
    tsr_free(st->ctx, host);
    return s;
}

tsr_status tsr_stage_evaluate(tsr_stage *st, const tsr_dataset *d, size_t first, size_t count,
                              float *probs, size_t *correct, double *loss_sum) {
    tsr_model_input in = tsr_model_get_input(st->model);
    if (st->first != 0 || st->last != tsr_model_layer_count(st->model))
        return tsr_error(st->ctx, TSR_ERR_INVALID_ARG, "evaluation needs a stage of the whole model");
    if (d->features != in.channels * in.height * in.width)
        return tsr_error(st->ctx, TSR_ERR_SHAPE, "data set has %zu features per sample, model takes %zu",
                         d->features, in.channels * in.height * in.width);
    if (!d->count) return tsr_error(st->ctx, TSR_ERR_SHAPE, "evaluation on an empty data set");
    if (first > d->count || count > d->count - first)
        return tsr_error(st->ctx, TSR_ERR_SHAPE, "samples [%zu, %zu) of a data set of %zu", first,
                         first + count, d->count);
    for (size_t i = first; i < first + count; i++)
        if (d->labels[i] < 0 || (size_t)d->labels[i] >= in.classes)
            return tsr_error(st->ctx, TSR_ERR_INVALID_ARG, "label %d of sample %zu is not in [0, %zu)",
                             (int)d->labels[i], i, in.classes);
    size_t classes = in.classes;
    tsr_ref x = tsr_stage_input(st), y = tsr_stage_labels(st), pr = tsr_stage_probs(st);
    for (size_t i = first; i < first + count; i += st->max_batch) {
        size_t n = first + count - i < st->max_batch ? first + count - i : st->max_batch;
        float l;
        TSR_TRY(tsr_buf_write(x.buf, x.off * 4, d->images + i * d->features, n * d->features * 4));
        TSR_TRY(tsr_buf_write(y.buf, y.off * 4, d->labels + i, n * sizeof(int32_t)));
        TSR_TRY(tsr_stage_forward(st, n, 0, 0, &l));
        *loss_sum += (double)l * (double)n;
        TSR_TRY(tsr_buf_read(pr.buf, pr.off * 4, probs, n * classes * sizeof(float)));
        for (size_t r = 0; r < n; r++) {
            const float *p = probs + r * classes;
            size_t best = 0;
            for (size_t c = 1; c < classes; c++)
                if (p[c] > p[best]) best = c;
            *correct += best == (size_t)d->labels[i + r];
        }
    }
    return TSR_OK;
}
