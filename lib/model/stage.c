/* Stages: device memory of a layer range and its forward/backward passes (llm.c style: plain
 * functions per layer over one activation buffer, gradients accumulated). Each layer's work is
 * its kind's ops table (lib/layers/); memory is planned once from those tables (plan_stage),
 * and the planner reads the same plan (tsr_stage_plan_memory). Every operation goes through
 * the checked tsr_op_* wrappers, so a stage runs on any backend. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/core/precision.h"
#include "lib/layers/layer.h"
#include "lib/model/stage.h"

/* Where one layer's tensors live. Activation gradients live in `slots` buffers of one size
 * (the largest tensor), assigned by walking backward: a tensor's gradient takes a free slot
 * when its last reader writes it and frees it once its producer has read it, so a chain uses
 * two (ping-pong) and a residual keeps a third alive across the branch. */
typedef struct layer_mem {
    size_t in[TSR_LAYER_MAX_INPUTS];   /* element offsets in acts */
    size_t out, aux;
    size_t param[TSR_LAYER_MAX_PARAMS]; /* offsets in params/grads (the running offset if none) */
    int gout;                          /* slot of d(out) */
    int gin[TSR_LAYER_MAX_INPUTS];     /* slot of d(input k); -1: not wanted */
    int add[TSR_LAYER_MAX_INPUTS];     /* d(input k) already holds another reader's part */
    int scratch[TSR_LAYER_MAX_INPUTS]; /* slot the kind writes into before it is added; -1 */
    int shared;                        /* a later layer's backward (a tied head) has written
                                        * into its parameter gradients first: it adds */
    /* 16-bit storage: which tensors are kept in 16 bits (their offsets above then count
     * floats of room; the halves start at twice the offset) and where each call finds them
     * widened to float32 (offsets in the staging buffer) */
    unsigned char half_in[TSR_LAYER_MAX_INPUTS], half_out, half_aux;
    size_t stage_in[TSR_LAYER_MAX_INPUTS], stage_out, stage_aux;
} layer_mem;

/* The memory plan of a stage: computed once, without allocating device memory. */
typedef struct stage_plan {
    size_t nparams;         /* the stage's layers' parameters, then the tied copy if any */
    tsr_stage_tied tied;    /* a later stage's head tied to an earlier stage's embedding */
    layer_mem *mem;         /* last - first layers, then the loss on the last stage */
    size_t input_off, labels_off, losssum_off, ws_off, ones_off;
    size_t act_floats;      /* one activation set */
    size_t round_floats;    /* 16-bit modes: bound on one GEMM's rounded operands (below) */
    size_t slot_floats;     /* one gradient slot */
    size_t staging_floats;  /* 16-bit storage: the float32 copies one call needs, at most */
    tsr_precision precision;
    int slots, out_grad_idx, in_grad_idx;
} stage_plan;

struct tsr_stage {
    tsr_context *ctx;
    tsr_backend *be;
    const tsr_model *model;
    size_t first, last, max_batch;
    int need_input_grad, is_last, trained;
    stage_plan plan;
    size_t nparams;
    tsr_buf *params, *grads, *acts;
    tsr_buf *staging; /* 16-bit storage: float32 copies of one layer's 16-bit tensors; NULL in fp32 */
    tsr_buf **g;      /* plan.slots activation-gradient buffers */
    tsr_stage_grad_hook hook;
    void *hook_user;
    tsr_comm *tp;      /* tensor-parallel group of the tpcopy/tpreduce layers; NULL: none */
    float loss_scale;  /* d(loss)/d(per-sample loss); 0: 1/n (the mean over the batch) */
    const float *grad_scale; /* fp16 loss scaling: multiplies it (lib/train/scaler.h); NULL: 1 */
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

/* ---- the memory plan ---- */

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

/* Gradient slots in use while the plan walks backward. */
typedef struct slot_pool {
    unsigned char *busy;
    int cap, used;
} slot_pool;

static int slot_take(slot_pool *p) {
    int i = 0;
    while (p->busy[i]) i++; /* cap is never reached: at most inputs + 2 per layer are live */
    p->busy[i] = 1;
    if (i + 1 > p->used) p->used = i + 1;
    return i;
}

static void plan_free(tsr_context *ctx, stage_plan *p) {
    tsr_free(ctx, p->mem);
    p->mem = NULL;
}

static size_t tensor_size(const tsr_model *m, size_t id) {
    tsr_model_input in = m->input;
    return id ? tsr_layer_out_size(&m->layers[id - 1]) : in.channels * in.height * in.width;
}

/* A bound on the floats of the rounded operand pair of any GEMM of layer l in a 16-bit mode
 * (backend_precision.c's round_buf): the GEMMs of a layer multiply two of its inputs, output
 * gradient, parameters (a tied head's: its embedding's table), backward state (conv's column
 * matrix) and workspace, so their sum bounds every pair; a layer with parameters rounds its
 * large operands in blocks (TSR_ROUND_CAP_FLOATS). Nonzero on overflow. */
static int layer_round_floats(const tsr_model *model, const tsr_layer *l, size_t B, size_t outn,
                              size_t aux, size_t w, size_t *out) {
    const tsr_layer *owner = l->ops->ties_embedding ? &model->layers[l->tied - 1] : l;
    tsr_param_desc d[TSR_LAYER_MAX_PARAMS];
    size_t np = owner->ops->params ? owner->ops->params(owner, d) : 0, sum = outn, x;
    for (size_t k = 0; k < np; k++)
        if ((sum += d[k].count) < d[k].count) return 1;
    for (size_t k = 0; k < l->ninputs; k++) {
        if (tsr_mul_size(B, tensor_size(model, l->inputs[k]), &x) || (sum += x) < x) return 1;
    }
    if ((sum += w) < w || (sum += aux) < aux) return 1;
    /* GEMMs with parameters round blocks of at most max(cap, m + n) floats
     * (backend_precision.c), and m + n is below B x (input + output) */
    size_t io = 0;
    if (np && !tsr_mul_size(B, tensor_size(model, l->inputs[0]), &io) && (io += outn) >= outn) {
        size_t blocked = io > TSR_ROUND_CAP_FLOATS ? io : TSR_ROUND_CAP_FLOATS;
        if (blocked < sum) sum = blocked;
    }
    *out = sum;
    return 0;
}

/* Plans parameters, activations, backward state, workspace and gradient slots of layers
 * [o->first, o->last) at batch o->max_batch, in o->precision's storage. */
static tsr_status plan_layout(tsr_context *ctx, const tsr_model *model, const tsr_stage_options *o,
                              stage_plan *p) {
    memset(p, 0, sizeof *p);
    TSR_TRY(tsr_model_check(model));
    if (o->first >= o->last || o->last > model->count)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "stage layers [%zu, %zu) not within the %zu layers",
                         o->first, o->last, model->count);
    if (!o->max_batch || o->max_batch > ((size_t)1 << 20))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "stage batch %zu is not valid", o->max_batch);
    TSR_TRY(tsr_precision_check(ctx, "stage ", o->precision));
    size_t first = o->first, last = o->last, nl = last - first, B = o->max_batch;
    int is_last = last == model->count;
    /* tensor ids first..last (the stage input and every output) by local index t - first */
    size_t nt = nl + 1;
    p->mem = tsr_calloc(ctx, nl + 1, sizeof *p->mem);
    size_t *toff = tsr_calloc(ctx, nt, sizeof *toff), *store = tsr_calloc(ctx, nt, sizeof *store);
    int *slot_of = tsr_calloc(ctx, nt, sizeof *slot_of);
    unsigned char *half = tsr_calloc(ctx, nt, 1); /* storage t is kept in 16 bits */
    slot_pool pool = {tsr_calloc(ctx, 2 * nt + 8, 1), (int)(2 * nt + 8), 0};
    tsr_status s = TSR_OK;
    if (!p->mem || !toff || !store || !slot_of || !half || !pool.busy) {
        s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "stage plan");
        goto done;
    }
    for (size_t i = first; i < last; i++)
        for (size_t k = 0; k < model->layers[i].ninputs; k++)
            if (model->layers[i].inputs[k] < first) {
                size_t id = model->layers[i].inputs[k];
                char what[48];
                if (id) snprintf(what, sizeof what, "layer %zu's output", id - 1);
                else snprintf(what, sizeof what, "the model input");
                size_t blocks = tsr_model_gpt_blocks(model);
                char hint[96] = "";
                if (blocks)
                    snprintf(hint, sizeof hint, " (a GPT is cut between blocks: at layers 2 + 10 b, b = 0..%zu)",
                             blocks);
                s = tsr_error(ctx, TSR_ERR_INVALID_ARG,
                              "stage layers [%zu, %zu): layer %zu reads %s, which an earlier stage holds%s",
                              first, last, i, what, hint);
                goto done;
            }

    /* parameters in reverse layer order, each layer's tensors in its kind's order */
    size_t poff = 0;
    for (size_t i = last; i-- > first;) {
        const tsr_layer *l = &model->layers[i];
        layer_mem *m = &p->mem[i - first];
        tsr_param_desc d[TSR_LAYER_MAX_PARAMS];
        size_t np = l->ops->params ? l->ops->params(l, d) : 0;
        for (size_t k = 0; k < TSR_LAYER_MAX_PARAMS; k++) {
            m->param[k] = poff;
            if (k < np) poff += d[k].count;
        }
    }
    /* a tied head uses its embedding's table and gradient */
    for (size_t i = first; i < last; i++) {
        const tsr_layer *l = &model->layers[i];
        if (!l->ops->ties_embedding) continue;
        size_t e = l->tied - 1;
        if (e < first) { /* an earlier stage holds the table: this stage keeps a copy after its own */
            if (p->tied.count) {
                s = tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                              "stage layers [%zu, %zu): two layers tied to earlier stages' tables", first, last);
                goto done;
            }
            tsr_param_desc d[TSR_LAYER_MAX_PARAMS];
            model->layers[e].ops->params(&model->layers[e], d);
            p->tied = (tsr_stage_tied){e, poff, d[0].count};
            p->mem[i - first].param[0] = poff;
            poff += d[0].count;
            continue;
        }
        p->mem[i - first].param[0] = p->mem[e - first].param[0];
        p->mem[e - first].shared = 1;
    }
    p->nparams = poff;

    /* which storages are 16-bit: outputs the kind allows, except the stage's output (the next
     * stage, the loss and the callers read it in float32) */
    int half16 = o->precision == TSR_PRECISION_BF16 || o->precision == TSR_PRECISION_FP16;
    p->precision = half16 ? o->precision : TSR_PRECISION_FP32;
    store[0] = 0;
    for (size_t i = first; i < last; i++) {
        const tsr_layer *l = &model->layers[i];
        size_t t = i + 1 - first;
        store[t] = l->ops->view ? store[l->inputs[0] - first] : t;
    }
    for (size_t i = first; half16 && i < last; i++) {
        size_t t = i + 1 - first;
        half[t] = store[t] == t && model->layers[i].ops->half_out && t != store[nl];
    }

    /* activations and backward state; a view shares its input's storage */
    size_t cur = 0, gmax = 0, ws = 0, count;
    if (tsr_mul_size(B, tensor_size(model, first), &count) || reserve(&cur, count, &p->input_off))
        goto overflow;
    gmax = count;
    toff[0] = p->input_off;
    store[0] = 0;
    for (size_t i = first; i < last; i++) {
        const tsr_layer *l = &model->layers[i];
        const tsr_layer_ops *ops = l->ops;
        layer_mem *m = &p->mem[i - first];
        size_t t = i + 1 - first, outn, aux = 0, w = 0, staged = 0;
        for (size_t k = 0; k < l->ninputs; k++) {
            size_t src = l->inputs[k] - first;
            m->in[k] = toff[src];
            if ((m->half_in[k] = half[store[src]]) &&
                (tsr_mul_size(B, tensor_size(model, l->inputs[k]), &count) || reserve(&staged, count, &m->stage_in[k])))
                goto overflow;
        }
        if (tsr_mul_size(B, tsr_layer_out_size(l), &outn)) goto overflow;
        if (outn > gmax) gmax = outn;
        m->half_out = !ops->view && half[t]; /* a view converts nothing: it is its input */
        if (ops->view) m->out = m->in[0];
        else if (reserve(&cur, half[t] ? (outn + 1) / 2 : outn, &m->out) ||
                 (half[t] && reserve(&staged, outn, &m->stage_out)))
            goto overflow;
        toff[t] = m->out;
        if (ops->state && tsr_mul_size(B, ops->state(l), &aux)) goto overflow;
        m->half_aux = half16 && aux && ops->half_state;
        if (aux && (reserve(&cur, m->half_aux ? (aux + 1) / 2 : aux, &m->aux) ||
                    (m->half_aux && reserve(&staged, aux, &m->stage_aux))))
            goto overflow;
        if (staged > p->staging_floats) p->staging_floats = staged;
        if (ops->workspace && tsr_mul_size(B, ops->workspace(l), &w)) goto overflow;
        if (w > ws) ws = w;
        size_t rf;
        if (layer_round_floats(model, l, B, outn, aux, w, &rf)) goto overflow;
        if (rf > p->round_floats) p->round_floats = rf;
    }
    if (reserve(&cur, ws, &p->ws_off) || reserve(&cur, B, &p->ones_off)) goto overflow;
    if (is_last) {
        const tsr_layer *loss = &model->loss;
        layer_mem *m = &p->mem[nl];
        size_t probs, rows; /* rows: one loss per label */
        m->in[0] = toff[nl];
        /* a token loss may put its probabilities where the logits were (the backends' xent
         * allows it; the classifiers' softmax_xent and the vocabulary-parallel loss do not) */
        int over = !o->keep_logits && loss->ops == &tsr_layer_softmax_xent && loss->out_c > 1;
        if (tsr_mul_size(B, loss->ops->state(loss), &probs) || tsr_mul_size(B, tsr_layer_out_size(loss), &rows) ||
            reserve(&cur, rows, &p->labels_off) || (over ? (m->aux = toff[nl], 0) : reserve(&cur, probs, &m->aux)) ||
            reserve(&cur, rows, &m->out) || reserve(&cur, 1, &p->losssum_off))
            goto overflow;
        m->in[1] = p->labels_off;
    }
    p->act_floats = cur;
    p->slot_floats = gmax;

    /* gradient slots, walked as backward will walk them */
    for (size_t t = 0; t < nt; t++) slot_of[t] = -1;
    p->out_grad_idx = slot_of[store[nl]] = slot_take(&pool);
    if (is_last) p->mem[nl].gin[0] = p->out_grad_idx;
    for (size_t i = last; i-- > first;) {
        const tsr_layer *l = &model->layers[i];
        layer_mem *m = &p->mem[i - first];
        size_t t = i + 1 - first;
        m->gout = slot_of[store[t]];
        for (size_t k = 0; k < TSR_LAYER_MAX_INPUTS; k++) m->gin[k] = m->scratch[k] = -1;
        if (l->ops->view) {
            m->gin[0] = m->gout;
            continue;
        }
        int taken = 0;
        for (size_t k = 0; k < l->ninputs; k++) {
            size_t src = store[l->inputs[k] - first];
            /* the stage input's gradient only when asked for, and token ids have none */
            if (src == store[0] && (!o->need_input_grad || (first == 0 && model->desc.dtype == TSR_DTYPE_I32)))
                continue;
            if (slot_of[src] >= 0) {
                m->add[k] = 1;
                if (!l->ops->accumulate_din) m->scratch[k] = slot_take(&pool);
            } else if (k == 0 && l->ops->inplace_din) {
                slot_of[src] = m->gout;
                taken = 1;
            } else {
                slot_of[src] = slot_take(&pool);
            }
            m->gin[k] = slot_of[src];
        }
        for (size_t k = 0; k < l->ninputs; k++)
            if (m->scratch[k] >= 0) pool.busy[m->scratch[k]] = 0;
        if (!taken) pool.busy[m->gout] = 0; /* its producer (this layer) has read it */
    }
    p->in_grad_idx = slot_of[store[0]] >= 0 ? slot_of[store[0]] : 0;
    p->slots = pool.used;
    goto done;
overflow:
    s = tsr_error(ctx, TSR_ERR_SHAPE, "stage memory for batch %zu overflows", B);
done:
    tsr_free(ctx, toff);
    tsr_free(ctx, store);
    tsr_free(ctx, half);
    tsr_free(ctx, slot_of);
    tsr_free(ctx, pool.busy);
    if (s != TSR_OK) plan_free(ctx, p);
    return s;
}

/* The stage's plan: in bf16/fp16 the 16-bit storage, unless it saves nothing over float32
 * storage once its staging is counted (a shallow stage whose largest call dominates, as the
 * cnn's); then the activations stay float32 (the GEMM operands are rounded either way). */
static tsr_status plan_stage(tsr_context *ctx, const tsr_model *model, const tsr_stage_options *o,
                             stage_plan *p) {
    TSR_TRY(plan_layout(ctx, model, o, p));
    if (p->precision == TSR_PRECISION_FP32) return TSR_OK;
    tsr_stage_options f = *o;
    f.precision = TSR_PRECISION_FP32;
    stage_plan full;
    tsr_status s = plan_layout(ctx, model, &f, &full);
    if (s != TSR_OK) {
        plan_free(ctx, p);
        return s;
    }
    if (p->act_floats + p->staging_floats < full.act_floats) {
        plan_free(ctx, &full);
        return TSR_OK;
    }
    plan_free(ctx, p);
    *p = full;
    return TSR_OK;
}

/* The device bytes of each buffer the plan asks for (a stage without parameters still holds
 * a 4-byte params/grads pair). */
static int plan_bytes(const stage_plan *p, tsr_stage_memory *m) {
    memset(m, 0, sizeof *m);
    m->param_bytes = p->nparams ? p->nparams * 4 : 4;
    if (p->nparams > SIZE_MAX / 4 || tsr_mul_size(p->act_floats, 4, &m->act_set_bytes) ||
        tsr_mul_size(p->slot_floats, 4, &m->grad_buffer_bytes))
        return -1;
    m->grad_buffers = (size_t)p->slots;
    if (tsr_mul_size(p->round_floats, 4, &m->round_bytes) || tsr_mul_size(p->staging_floats, 4, &m->staging_bytes))
        return -1;
    size_t g;
    if (tsr_mul_size(m->grad_buffers, m->grad_buffer_bytes, &g)) return -1;
    m->total_bytes = 2 * m->param_bytes + m->act_set_bytes + g;
    if (m->total_bytes < g || m->total_bytes + m->staging_bytes < m->staging_bytes) return -1;
    m->total_bytes += m->staging_bytes;
    return 0;
}

tsr_status tsr_stage_plan_memory(tsr_context *ctx, const tsr_model *model, const tsr_stage_options *o,
                                 tsr_stage_memory *out) {
    if (!model || !o || !out) return TSR_ERR_INVALID_ARG;
    stage_plan p;
    TSR_TRY(plan_stage(ctx, model, o, &p));
    int bad = plan_bytes(&p, out);
    plan_free(ctx, &p);
    return bad ? tsr_error(ctx, TSR_ERR_SHAPE, "stage memory for batch %zu overflows", o->max_batch) : TSR_OK;
}

/* ---- creation ---- */

void tsr_stage_free(tsr_stage *st) {
    if (!st) return;
    tsr_buf_free(st->params);
    tsr_buf_free(st->grads);
    tsr_buf_free(st->staging);
    if (st->slot_acts) {
        for (size_t i = 0; i < st->nslots; i++) tsr_buf_free(st->slot_acts[i]);
    } else {
        tsr_buf_free(st->acts);
    }
    tsr_free(st->ctx, st->slot_acts);
    tsr_free(st->ctx, st->slot_trained);
    for (int i = 0; st->g && i < st->plan.slots; i++) tsr_buf_free(st->g[i]);
    tsr_free(st->ctx, st->g);
    plan_free(st->ctx, &st->plan);
    tsr_free(st->ctx, st);
}

/* One zeroed activation set with its row of ones (conv weight-gradient reduction). */
static tsr_status new_act_set(tsr_stage *st, tsr_buf **out) {
    TSR_TRY(tsr_buf_alloc(st->be, st->act_bytes, out));
    tsr_status s = tsr_op_fill(st->be, tsr_ref_at(*out, 0), st->act_bytes / 4, 0.0f);
    if (s == TSR_OK) s = tsr_op_fill(st->be, tsr_ref_at(*out, st->plan.ones_off), st->max_batch, 1.0f);
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
    stage_plan plan;
    tsr_stage_memory mem;
    TSR_TRY(plan_stage(ctx, model, o, &plan));
    if (plan_bytes(&plan, &mem)) {
        plan_free(ctx, &plan);
        return tsr_error(ctx, TSR_ERR_SHAPE, "stage memory for batch %zu overflows", o->max_batch);
    }
    tsr_stage *st = tsr_calloc(ctx, 1, sizeof *st);
    if (!st) {
        plan_free(ctx, &plan);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "stage");
    }
    st->ctx = ctx;
    st->be = be;
    st->model = model;
    st->first = o->first;
    st->last = o->last;
    st->max_batch = o->max_batch;
    st->need_input_grad = o->need_input_grad;
    st->is_last = o->last == model->count;
    st->nslots = 1;
    st->plan = plan;
    st->nparams = plan.nparams;
    st->act_bytes = mem.act_set_bytes;
    st->slot_acts = tsr_calloc(ctx, 1, sizeof *st->slot_acts);
    st->slot_trained = tsr_calloc(ctx, 1, sizeof *st->slot_trained);
    st->g = tsr_calloc(ctx, (size_t)plan.slots, sizeof *st->g);
    if (!st->slot_acts || !st->slot_trained || !st->g) {
        tsr_stage_free(st);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "stage layers");
    }
    tsr_status s;
    if ((s = tsr_buf_alloc(be, mem.param_bytes, &st->params)) != TSR_OK ||
        (s = tsr_buf_alloc(be, mem.param_bytes, &st->grads)) != TSR_OK ||
        (s = tsr_op_fill(be, tsr_ref_at(st->grads, 0), st->nparams, 0.0f)) != TSR_OK) {
        tsr_stage_free(st);
        return s;
    }
    tsr_buf_set_name(st->params, "parameters");
    tsr_buf_set_name(st->grads, "gradients");
    for (int i = 0; i < plan.slots; i++)
        if ((s = tsr_buf_alloc(be, mem.grad_buffer_bytes, &st->g[i])) != TSR_OK) {
            tsr_stage_free(st);
            return s;
        }
    if (mem.staging_bytes && (s = tsr_buf_alloc(be, mem.staging_bytes, &st->staging)) != TSR_OK) {
        tsr_stage_free(st);
        return s;
    }
    if (st->staging) tsr_buf_set_name(st->staging, "16-bit activations' float32 copies");
    if ((s = new_act_set(st, &st->slot_acts[0])) != TSR_OK) {
        tsr_stage_free(st);
        return s;
    }
    st->acts = st->slot_acts[0];
    *out = st;
    return TSR_OK;
}

size_t tsr_stage_device_bytes(const tsr_stage *st) {
    if (!st) return 0;
    size_t n = st->params->bytes + st->grads->bytes + (st->staging ? st->staging->bytes : 0);
    for (size_t i = 0; i < st->nslots; i++) n += st->slot_acts[i]->bytes;
    for (int i = 0; i < st->plan.slots; i++) n += st->g[i]->bytes;
    return n;
}

/* ---- accessors ---- */

tsr_buf *tsr_stage_params(tsr_stage *st) { return st ? st->params : NULL; }
tsr_buf *tsr_stage_grads(tsr_stage *st) { return st ? st->grads : NULL; }
size_t tsr_stage_param_count(const tsr_stage *st) { return st ? st->nparams : 0; }

int tsr_stage_tied_copy(const tsr_stage *st, tsr_stage_tied *out) {
    if (!st || !st->plan.tied.count) return 0;
    if (out) *out = st->plan.tied;
    return 1;
}

int tsr_stage_tensor(const tsr_stage *st, size_t index, size_t *offset, size_t *count, size_t *rank) {
    if (!st) return 0;
    for (size_t i = st->first; i < st->last; i++) {
        tsr_param_desc d[TSR_LAYER_MAX_PARAMS];
        const tsr_layer *l = layer(st, i);
        size_t np = l->ops->params ? l->ops->params(l, d) : 0;
        if (index >= np) {
            index -= np;
            continue;
        }
        *offset = st->plan.mem[i - st->first].param[index];
        *count = d[index].count;
        *rank = d[index].rank;
        return 1;
    }
    if (index || !st->plan.tied.count) return 0;
    *offset = st->plan.tied.offset; /* the copy of an earlier stage's embedding table */
    *count = st->plan.tied.count;
    *rank = 2;
    return 1;
}

tsr_status tsr_stage_exchange_buffer(tsr_stage *st, tsr_stage_buffer which, tsr_buf *in,
                                     tsr_buf **old) {
    if (!st || !in || !old) return TSR_ERR_INVALID_ARG;
    tsr_buf **slot = which == TSR_STAGE_GRADS ? &st->grads : &st->params;
    if (in->backend != st->be || in->bytes < (*slot)->bytes)
        return tsr_error(st->ctx, TSR_ERR_INVALID_ARG,
                         "stage %s: a replacement of %zu bytes on %s for %zu bytes on %s",
                         (*slot)->name, in->bytes, in->backend->device.id, (*slot)->bytes,
                         st->be->device.id);
    TSR_TRY(tsr_ref_copy(tsr_ref_at(in, 0), tsr_ref_at(*slot, 0), TSR_DTYPE_F32, st->nparams));
    tsr_buf_set_name(in, (*slot)->name);
    *old = *slot;
    *slot = in;
    return TSR_OK;
}

tsr_status tsr_stage_layer_params(const tsr_stage *st, size_t i, size_t *w_off, size_t *w_count,
                                  size_t *b_off, size_t *b_count) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (i < st->first || i >= st->last)
        return tsr_error(st->ctx, TSR_ERR_NOT_FOUND, "layer %zu is not in stage [%zu, %zu)", i,
                         st->first, st->last);
    const layer_mem *m = &st->plan.mem[i - st->first];
    if (w_off) *w_off = m->param[0];
    if (b_off) *b_off = m->param[1];
    if (w_count) *w_count = layer(st, i)->weights;
    if (b_count) *b_count = layer(st, i)->biases;
    return TSR_OK;
}

static tsr_ref slot_ref(tsr_stage *st, int slot) { return tsr_ref_at(st->g[slot], 0); }

tsr_ref tsr_stage_input(tsr_stage *st) { return tsr_ref_at(st->acts, st->plan.input_off); }
tsr_ref tsr_stage_output(tsr_stage *st) {
    return tsr_ref_at(st->acts, st->plan.mem[st->last - 1 - st->first].out);
}
tsr_ref tsr_stage_input_grad(tsr_stage *st) { return slot_ref(st, st->plan.in_grad_idx); }
tsr_ref tsr_stage_output_grad(tsr_stage *st) { return slot_ref(st, st->plan.out_grad_idx); }
tsr_ref tsr_stage_labels(tsr_stage *st) { return tsr_ref_at(st->acts, st->plan.labels_off); }
tsr_ref tsr_stage_probs(tsr_stage *st) {
    return tsr_ref_at(st->acts, st->plan.mem[st->last - st->first].aux);
}

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

void tsr_stage_set_grad_scale(tsr_stage *st, const float *scale) {
    if (st) st->grad_scale = scale;
}

void tsr_stage_set_tp(tsr_stage *st, tsr_comm *tp) {
    if (st) st->tp = tp;
}

void tsr_stage_set_hook(tsr_stage *st, tsr_stage_grad_hook hook, void *user) {
    if (!st) return;
    st->hook = hook;
    st->hook_user = user;
}

/* ---- forward and backward through the kinds' tables ---- */

uint64_t tsr_stage_dropout_seed(uint64_t seed, size_t i) {
    return ((uint64_t)tsr_hash32(seed, 2 * i) << 32) | tsr_hash32(seed, 2 * i + 1);
}

/* 16-bit storage: layer i's 16-bit inputs, output and state, those the call reads (forward:
 * the inputs; backward: what the kind says it reads, and its state), widened into their
 * float32 staging before the call, as r refers to them (layer_run). */
static tsr_status widen_for_call(tsr_stage *st, size_t i, size_t n, int backward) {
    const tsr_layer *l = layer(st, i);
    const layer_mem *m = &st->plan.mem[i - st->first];
    tsr_precision p = st->plan.precision;
    for (size_t k = 0; k < l->ninputs && !(backward && l->ops->bwd_ignores_in); k++)
        if (m->half_in[k])
            TSR_TRY(tsr_op_widen16(st->be, p, n * tensor_size(st->model, l->inputs[k]),
                                   tsr_ref_at(st->acts, 2 * m->in[k]), tsr_ref_at(st->staging, m->stage_in[k])));
    if (!backward) return TSR_OK;
    if (m->half_out && l->ops->bwd_reads_out)
        TSR_TRY(tsr_op_widen16(st->be, p, n * tsr_layer_out_size(l), tsr_ref_at(st->acts, 2 * m->out),
                               tsr_ref_at(st->staging, m->stage_out)));
    if (m->half_aux)
        TSR_TRY(tsr_op_widen16(st->be, p, n * l->ops->state(l), tsr_ref_at(st->acts, 2 * m->aux),
                               tsr_ref_at(st->staging, m->stage_aux)));
    return TSR_OK;
}

/* After a forward call: its 16-bit output and state rounded into their storage. */
static tsr_status narrow_after_forward(tsr_stage *st, size_t i, size_t n) {
    const tsr_layer *l = layer(st, i);
    const layer_mem *m = &st->plan.mem[i - st->first];
    tsr_precision p = st->plan.precision;
    if (m->half_out)
        TSR_TRY(tsr_op_narrow16(st->be, p, n * tsr_layer_out_size(l), tsr_ref_at(st->staging, m->stage_out),
                                tsr_ref_at(st->acts, 2 * m->out)));
    if (m->half_aux)
        TSR_TRY(tsr_op_narrow16(st->be, p, n * l->ops->state(l), tsr_ref_at(st->staging, m->stage_aux),
                                tsr_ref_at(st->acts, 2 * m->aux)));
    return TSR_OK;
}

/* The references of layer i (the loss when i == st->last) for a call on n samples. */
static tsr_layer_run layer_run(tsr_stage *st, size_t i, size_t n) {
    const tsr_layer *l = i < st->last ? layer(st, i) : &st->model->loss;
    const layer_mem *m = &st->plan.mem[i - st->first];
    tsr_layer_run r;
    memset(&r, 0, sizeof r);
    r.be = st->be;
    r.l = l;
    r.index = i;
    r.n = n;
    for (size_t k = 0; k < l->ninputs; k++)
        r.in[k] = m->half_in[k] ? tsr_ref_at(st->staging, m->stage_in[k]) : tsr_ref_at(st->acts, m->in[k]);
    r.out = m->half_out ? tsr_ref_at(st->staging, m->stage_out) : tsr_ref_at(st->acts, m->out);
    r.state = m->half_aux ? tsr_ref_at(st->staging, m->stage_aux) : tsr_ref_at(st->acts, m->aux);
    r.ws = tsr_ref_at(st->acts, st->plan.ws_off);
    r.ones = tsr_ref_at(st->acts, st->plan.ones_off);
    r.tp = st->tp;
    for (size_t k = 0; k < TSR_LAYER_MAX_PARAMS; k++) {
        r.param[k] = tsr_ref_at(st->params, m->param[k]);
        r.grad[k] = tsr_ref_at(st->grads, m->param[k]);
    }
    return r;
}

/* 1 when layer i is a convolution whose output only the relu after it reads, both on this
 * float32 stage: the convolution then writes the relu's output itself (one pass over the
 * activations fewer) and the relu's forward is skipped. Nothing reads the convolution's own
 * output then: its backward needs its columns, the relu's backward its output. */
static int conv_relu_fused(const tsr_stage *st, size_t i) {
    if (st->staging || i + 1 >= st->last) return 0;
    const tsr_layer *c = layer(st, i), *r = layer(st, i + 1);
    if (c->kind != TSR_LAYER_CONV2D || r->kind != TSR_LAYER_RELU || r->inputs[0] != i + 1) return 0;
    for (size_t j = i + 2; j < st->last; j++)
        for (size_t k = 0; k < layer(st, j)->ninputs; k++)
            if (layer(st, j)->inputs[k] == i + 1) return 0;
    return 1;
}

/* 1 when layer i is a max pool whose input only comes from the relu before it, on this float32
 * stage, with both gradients in the one slot (the relu's backward in place, nothing added): the
 * pool's backward then writes the relu's input gradient itself (one pass fewer) and the relu's
 * backward is skipped. The relu's output at a pool's argmax is the pool's output there. */
static int pool_relu_folded(const tsr_stage *st, size_t i) {
    if (st->staging || i <= st->first || i >= st->last || !tsr_op_maxpool_relu_folds(st->be)) return 0;
    const tsr_layer *r = layer(st, i - 1), *p = layer(st, i);
    if (p->kind != TSR_LAYER_MAXPOOL || r->kind != TSR_LAYER_RELU || p->inputs[0] != i) return 0;
    for (size_t j = i + 1; j < st->last; j++)
        for (size_t k = 0; k < layer(st, j)->ninputs; k++)
            if (layer(st, j)->inputs[k] == i) return 0;
    const layer_mem *mp = &st->plan.mem[i - st->first], *mr = &st->plan.mem[i - 1 - st->first];
    return mp->gin[0] >= 0 && mp->scratch[0] < 0 && !mp->add[0] && mr->gin[0] == mr->gout &&
           mr->scratch[0] < 0 && !mr->add[0];
}

tsr_status tsr_stage_forward(tsr_stage *st, size_t n, int train, uint64_t dropout_seed, float *loss) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (!n || n > st->max_batch)
        return tsr_error(st->ctx, TSR_ERR_SHAPE, "batch of %zu samples: the stage holds 1 to %zu", n,
                         st->max_batch);
    st->trained = 0;
    size_t end = st->is_last ? st->last + 1 : st->last; /* the loss after the last layer */
    for (size_t i = st->first; i < end; i++) {
        tsr_layer_run r = layer_run(st, i, n);
        if (r.l->ops->view) continue;
        r.train = train;
        r.seed = tsr_stage_dropout_seed(dropout_seed, i);
        if (st->staging && i < st->last) TSR_TRY(widen_for_call(st, i, n, 0));
        if (i < st->last && conv_relu_fused(st, i)) {
            r.fuse_relu = 1;
            r.out = layer_run(st, i + 1, n).out;
            TSR_TRY(r.l->ops->forward(&r));
            i++; /* the relu is done */
            continue;
        }
        TSR_TRY(r.l->ops->forward(&r));
        if (st->staging && i < st->last) TSR_TRY(narrow_after_forward(st, i, n));
    }
    if (st->is_last && loss) {
        float sum;
        size_t labels = n * tsr_model_positions(st->model);
        tsr_ref rows = tsr_ref_at(st->acts, st->plan.mem[st->last - st->first].out);
        TSR_TRY(tsr_op_sum(st->be, labels, rows, tsr_ref_at(st->acts, st->plan.losssum_off)));
        TSR_TRY(tsr_read_f32(st->acts, st->plan.losssum_off, &sum, 1));
        *loss = sum / (float)labels;
    }
    st->trained = train ? (int)n : -(int)n;
    return TSR_OK;
}

tsr_status tsr_stage_backward(tsr_stage *st, size_t n, int accumulate) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (st->trained != (int)n)
        return tsr_error(st->ctx, TSR_ERR_STATE,
                         "stage backward on %zu samples needs a training forward on the same batch", n);
    if (st->is_last) {
        tsr_layer_run r = layer_run(st, st->last, n);
        r.loss_scale = st->loss_scale > 0.0f ? st->loss_scale
                                             : 1.0f / (float)(n * tsr_model_positions(st->model));
        if (st->grad_scale) r.loss_scale *= *st->grad_scale;
        r.want_din[0] = 1;
        r.din[0] = slot_ref(st, st->plan.out_grad_idx);
        TSR_TRY(r.l->ops->backward(&r));
    }
    int relu_done = 0; /* the relu at i ran inside the pool's backward after it */
    for (size_t i = st->last; i-- > st->first;) {
        const layer_mem *m = &st->plan.mem[i - st->first];
        tsr_layer_run r = layer_run(st, i, n);
        const tsr_layer *l = r.l;
        if (relu_done) {
            relu_done = 0;
        } else if (!l->ops->view) {
            r.fuse_relu = relu_done = pool_relu_folded(st, i);
            r.accumulate = accumulate || m->shared;
            r.dout = slot_ref(st, m->gout);
            for (size_t k = 0; k < l->ninputs; k++) {
                if (m->gin[k] < 0) continue;
                r.want_din[k] = 1;
                r.add_din[k] = m->add[k] && m->scratch[k] < 0;
                r.din[k] = slot_ref(st, m->scratch[k] >= 0 ? m->scratch[k] : m->gin[k]);
            }
            if (st->staging) TSR_TRY(widen_for_call(st, i, n, 1));
            TSR_TRY(l->ops->backward(&r));
            /* a second reader's part of a gradient, through scratch for kinds that overwrite */
            for (size_t k = 0; k < l->ninputs; k++)
                if (m->scratch[k] >= 0)
                    TSR_TRY(tsr_op_axpy(st->be, n * tensor_size(st->model, l->inputs[k]), 1.0f, r.din[k],
                                        slot_ref(st, m->gin[k])));
        }
        if (st->hook) TSR_TRY(st->hook(st->hook_user, i, m->param[0], l->weights + l->biases));
    }
    return TSR_OK;
}

/* Layer i's parameters from its own stream (seeded by its index: the same values however the
 * model is split), tensor k written to params at off[k] through `host` (room for the largest
 * tensor); only the first `only` tensors when nonzero (a tied copy of an embedding's table). */
static tsr_status init_layer(tsr_buf *params, const tsr_layer *l, size_t i, int glorot, uint64_t seed,
                             float *host, const size_t *off, size_t only) {
    /* params NULL: host is the whole flat vector, tensor k goes to host + off[k] */
    tsr_param_desc d[TSR_LAYER_MAX_PARAMS];
    size_t np = l->ops->params ? l->ops->params(l, d) : 0;
    if (only && np > only) np = only;
    tsr_rng r;
    tsr_rng_seed(&r, seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(i + 1)));
    for (size_t k = 0; k < np; k++) {
        float *w = params ? host : host + off[k];
        if (d[k].init == TSR_INIT_ZERO || d[k].init == TSR_INIT_ONE) {
            float v = d[k].init == TSR_INIT_ONE ? 1.0f : 0.0f;
            for (size_t e = 0; e < d[k].count; e++) w[e] = v;
        } else if (d[k].init == TSR_INIT_NORMAL) { /* Box-Muller: two values from each pair of draws */
            for (size_t e = 0; e < d[k].count; e += 2) {
                double u1 = 1.0 - tsr_rng_uniform(&r), u2 = tsr_rng_uniform(&r);
                double radius = d[k].std * sqrt(-2.0 * log(u1)), angle = 6.283185307179586 * u2;
                w[e] = (float)(radius * cos(angle));
                if (e + 1 < d[k].count) w[e + 1] = (float)(radius * sin(angle));
            }
        } else {
            double bound = glorot ? sqrt(6.0 / (double)(d[k].fan_in + d[k].fan_out))
                                  : sqrt(6.0 / (double)d[k].fan_in);
            for (size_t e = 0; e < d[k].count; e++) w[e] = (float)((2.0 * tsr_rng_uniform(&r) - 1.0) * bound);
        }
        if (params) TSR_TRY(tsr_write_f32(params, off[k], w, d[k].count));
    }
    return TSR_OK;
}

tsr_status tsr_model_init_host(const tsr_model *m, int glorot, uint64_t seed, float *out) {
    if (!m || !out) return TSR_ERR_INVALID_ARG;
    for (size_t i = 0, after = tsr_model_param_count(m); i < m->count; i++) {
        const tsr_layer *l = &m->layers[i];
        tsr_param_desc d[TSR_LAYER_MAX_PARAMS];
        size_t np = l->ops->params ? l->ops->params(l, d) : 0, off[TSR_LAYER_MAX_PARAMS];
        after -= l->weights + l->biases; /* reverse layer order: the later layers come first */
        for (size_t k = 0, o = after; k < np; o += d[k].count, k++) off[k] = o;
        TSR_TRY(init_layer(NULL, l, i, glorot, seed, out, off, 0));
    }
    return TSR_OK;
}

tsr_status tsr_stage_init_params(tsr_stage *st, int glorot, uint64_t seed) {
    if (!st) return TSR_ERR_INVALID_ARG;
    if (!st->nparams) return TSR_OK;
    size_t largest = 1; /* one tensor at a time: no second copy of a large model in host memory */
    for (size_t i = st->first; i < st->last; i++) {
        tsr_param_desc d[TSR_LAYER_MAX_PARAMS];
        const tsr_layer *l = layer(st, i);
        size_t np = l->ops->params ? l->ops->params(l, d) : 0;
        for (size_t k = 0; k < np; k++) largest = d[k].count > largest ? d[k].count : largest;
    }
    const tsr_stage_tied *t = &st->plan.tied;
    if (t->count > largest) largest = t->count;
    float *host = tsr_malloc(st->ctx, largest * sizeof *host);
    if (!host) return tsr_error(st->ctx, TSR_ERR_NO_MEMORY, "initial parameters");
    tsr_status s = TSR_OK;
    for (size_t i = st->first; s == TSR_OK && i < st->last; i++)
        s = init_layer(st->params, layer(st, i), i, glorot, seed, host, st->plan.mem[i - st->first].param, 0);
    if (s == TSR_OK && t->count)
        s = init_layer(st->params, layer(st, t->layer), t->layer, glorot, seed, host, &t->offset, 1);
    tsr_free(st->ctx, host);
    return s;
}

tsr_status tsr_stage_check_dataset(tsr_context *ctx, const tsr_model *model, const tsr_dataset *d,
                                   size_t first, size_t count) {
    tsr_model_input in = tsr_model_get_input(model);
    size_t P = tsr_model_positions(model), features = in.channels * in.height * in.width;
    int tokens = model->desc.dtype == TSR_DTYPE_I32;
    if (tokens != (d->tokens != NULL) || (!tokens && !d->images))
        return tsr_error(ctx, TSR_ERR_SHAPE, "the data set holds %s but the model reads %s",
                         d->tokens ? "token ids" : "images", tokens ? "token ids" : "floats");
    if (d->features != features || (d->positions ? d->positions : 1) != P)
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "data set has %zu features and %zu labels per sample, the model takes %zu and %zu",
                         d->features, d->positions ? d->positions : 1, features, P);
    if (!d->count) return tsr_error(ctx, TSR_ERR_SHAPE, "evaluation on an empty data set");
    if (first > d->count || count > d->count - first)
        return tsr_error(ctx, TSR_ERR_SHAPE, "samples [%zu, %zu) of a data set of %zu", first, first + count,
                         d->count);
    for (size_t i = first * P; i < (first + count) * P; i++) {
        int32_t y = d->labels[i];
        if ((y < 0 && !(y == -1 && P > 1)) || (y >= 0 && (size_t)y >= in.classes))
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "label %d of sample %zu is not in [0, %zu)%s", (int)y,
                             i / P, in.classes, P > 1 ? " or -1 (not scored)" : "");
    }
    if (tokens)
        for (size_t i = first * features; i < (first + count) * features; i++)
            if (d->tokens[i] < 0 || (size_t)d->tokens[i] >= model->desc.vocab)
                return tsr_error(ctx, TSR_ERR_INVALID_ARG, "token %d of sample %zu is not in [0, %zu)",
                                 (int)d->tokens[i], i / features, model->desc.vocab);
    return TSR_OK;
}

tsr_status tsr_stage_upload_samples(tsr_stage *st, const tsr_dataset *d, size_t first, size_t n) {
    size_t f = d->features, P = tsr_model_positions(st->model);
    if (d->tokens) TSR_TRY(tsr_ref_write(tsr_stage_input(st), TSR_DTYPE_I32, d->tokens + first * f, n * f));
    else TSR_TRY(tsr_ref_write(tsr_stage_input(st), TSR_DTYPE_F32, d->images + first * f, n * f));
    if (!st->is_last) return TSR_OK; /* labels live on the last stage only */
    return tsr_ref_write(tsr_stage_labels(st), TSR_DTYPE_I32, d->labels + first * P, n * P);
}

tsr_status tsr_stage_evaluate(tsr_stage *st, const tsr_dataset *d, size_t first, size_t count,
                              float *probs, size_t *correct, double *loss_sum) {
    if (st->first != 0 || st->last != tsr_model_layer_count(st->model))
        return tsr_error(st->ctx, TSR_ERR_INVALID_ARG, "evaluation needs a stage of the whole model");
    TSR_TRY(tsr_stage_check_dataset(st->ctx, st->model, d, first, count));
    size_t P = tsr_model_positions(st->model);
    for (size_t i = first; i < first + count; i += st->max_batch) {
        size_t n = first + count - i < st->max_batch ? first + count - i : st->max_batch;
        float l;
        TSR_TRY(tsr_stage_upload_samples(st, d, i, n));
        TSR_TRY(tsr_stage_forward(st, n, 0, 0, &l));
        TSR_TRY(tsr_stage_score_last(st, n, d->labels + i * P, l, probs, correct, loss_sum));
    }
    return TSR_OK;
}

tsr_status tsr_stage_score_last(tsr_stage *st, size_t n, const int32_t *labels, float loss, float *probs,
                                size_t *correct, double *loss_sum) {
    const tsr_layer *l = &st->model->loss;
    size_t rows = n * tsr_model_positions(st->model), classes = tsr_model_get_input(st->model).classes;
    size_t aux = st->plan.mem[st->last - st->first].aux;
    if (l->kind != TSR_LAYER_VPXENT) {
        TSR_TRY(tsr_read_f32(st->acts, aux, probs, rows * classes));
        tsr_stage_score(probs, rows, classes, labels, loss, correct, loss_sum);
        return TSR_OK;
    }
    TSR_TRY(tsr_read_f32(st->acts, aux + rows * l->units, probs, rows)); /* after the slice's probabilities */
    *loss_sum += (double)loss * (double)rows;
    for (size_t r = 0; r < rows; r++) *correct += labels[r] >= 0 && probs[r] > 0.5f;
    return TSR_OK;
}

void tsr_stage_score(const float *probs, size_t rows, size_t classes, const int32_t *labels, float loss,
                     size_t *correct, double *loss_sum) {
    *loss_sum += (double)loss * (double)rows; /* the mean over rows; unscored rows add 0 */
    for (size_t r = 0; r < rows; r++) {
        if (labels[r] < 0) continue;
        const float *p = probs + r * classes;
        size_t best = 0;
        for (size_t c = 1; c < classes; c++)
            if (p[c] > p[best]) best = c;
        *correct += best == (size_t)labels[r];
    }
}
