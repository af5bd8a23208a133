/* SGD (momentum, Nesterov) and Adam/AdamW through the backends' fused update kernels. */
#include <math.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/train/optim.h"

static const char *const kind_names[] = {"sgd", "adam", "adamw"};

const char *tsr_optimizer_kind_name(tsr_optimizer_kind k) {
    return (unsigned)k < TSR_ARRAY_SIZE(kind_names) ? kind_names[k] : "?";
}

tsr_status tsr_optimizer_kind_parse(const char *name, tsr_optimizer_kind *out) {
    if (!name || !out) return TSR_ERR_INVALID_ARG;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(kind_names); i++)
        if (!strcmp(name, kind_names[i])) {
            *out = (tsr_optimizer_kind)i;
            return TSR_OK;
        }
    return TSR_ERR_PARSE;
}

void tsr_optim_free(tsr_optim *opt) {
    if (!opt) return;
    tsr_buf_free(opt->m);
    tsr_buf_free(opt->v);
    tsr_free(opt->be->ctx, opt->runs);
    tsr_free(opt->be->ctx, opt);
}

static tsr_status check_options(tsr_context *ctx, const tsr_optimizer_options *o) {
    if ((unsigned)o->kind > TSR_OPTIM_ADAMW)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown optimizer kind %d", (int)o->kind);
    if (!(o->lr > 0.0f) || !isfinite(o->lr))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "learning rate %g must be positive", (double)o->lr);
    if (!(o->weight_decay >= 0.0f) || !isfinite(o->weight_decay))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "weight decay %g must be >= 0", (double)o->weight_decay);
    if (o->kind == TSR_OPTIM_SGD && !(o->momentum >= 0.0f && o->momentum < 1.0f))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "momentum %g must be in [0, 1)", (double)o->momentum);
    if (o->kind == TSR_OPTIM_SGD && o->nesterov && o->momentum == 0.0f)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "Nesterov momentum needs momentum > 0");
    if (o->kind != TSR_OPTIM_SGD) {
        if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f))
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "Adam beta1 %g must be in [0, 1)", (double)o->beta1);
        if (!(o->beta2 >= 0.0f && o->beta2 < 1.0f))
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "Adam beta2 %g must be in [0, 1)", (double)o->beta2);
        if (!(o->eps > 0.0f))
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "Adam eps %g must be positive", (double)o->eps);
    }
    return TSR_OK;
}

tsr_status tsr_optim_create(tsr_backend *be, const tsr_optimizer_options *o, size_t n, tsr_optim **out) {
    if (!be || !o || !out) return TSR_ERR_INVALID_ARG;
    *out = NULL;
    TSR_TRY(check_options(be->ctx, o));
    tsr_optim *opt = tsr_calloc(be->ctx, 1, sizeof *opt);
    if (!opt) return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "optimizer");
    opt->be = be;
    opt->o = *o;
    opt->n = n;
    size_t bytes = (n ? n : 1) * tsr_dtype_size(TSR_DTYPE_F32);
    tsr_status s = TSR_OK;
    if (o->kind != TSR_OPTIM_SGD && (s = tsr_buf_alloc(be, bytes, &opt->m)) == TSR_OK)
        s = tsr_op_fill(be, tsr_ref_at(opt->m, 0), n, 0.0f);
    if (s == TSR_OK && (o->kind != TSR_OPTIM_SGD || o->momentum != 0.0f) &&
        (s = tsr_buf_alloc(be, bytes, &opt->v)) == TSR_OK)
        s = tsr_op_fill(be, tsr_ref_at(opt->v, 0), n, 0.0f);
    if (s != TSR_OK) {
        tsr_optim_free(opt);
        return s;
    }
    tsr_buf_set_name(opt->m, "optimizer first moment");
    tsr_buf_set_name(opt->v, o->kind == TSR_OPTIM_SGD ? "optimizer velocity"
                                                      : "optimizer second moment");
    *out = opt;
    return TSR_OK;
}

/* Puts [lo, hi) (clipped to the updated range) into the runs, merged with the last run of the
 * same rule. */
static void add_run(tsr_optim *opt, size_t lo, size_t hi, int decay) {
    if (lo < opt->off) lo = opt->off;
    if (hi > opt->off + opt->n) hi = opt->off + opt->n;
    if (lo >= hi) return;
    tsr_optim_run *last = opt->nruns ? &opt->runs[opt->nruns - 1] : NULL;
    if (last && last->hi == lo && last->decay == decay) last->hi = hi;
    else opt->runs[opt->nruns++] = (tsr_optim_run){lo, hi, decay};
}

tsr_status tsr_optim_decay_matrices(tsr_optim *opt, const tsr_stage *st) {
    if (!opt || !st) return TSR_ERR_INVALID_ARG;
    if (opt->o.weight_decay == 0.0f) return TSR_OK;
    /* the vectors' ranges, sorted by offset (the layout is reverse layer order) */
    size_t count = 0, off, n, rank;
    while (tsr_stage_tensor(st, count, &off, &n, &rank)) count++;
    tsr_optim_run *vec = tsr_calloc(opt->be->ctx, count + 1, sizeof *vec);
    tsr_free(opt->be->ctx, opt->runs);
    opt->nruns = 0;
    opt->runs = tsr_calloc(opt->be->ctx, 2 * count + 2, sizeof *opt->runs);
    if (!vec || !opt->runs) {
        tsr_free(opt->be->ctx, vec);
        tsr_free(opt->be->ctx, opt->runs);
        opt->runs = NULL;
        return tsr_error(opt->be->ctx, TSR_ERR_NO_MEMORY, "optimizer: %zu tensors' decay rules", count);
    }
    size_t nv = 0;
    for (size_t i = 0; i < count; i++) {
        tsr_stage_tensor(st, i, &off, &n, &rank);
        if (rank >= 2) continue;
        size_t k = nv++; /* insertion sort: a few hundred tensors at most, once */
        for (; k > 0 && vec[k - 1].lo > off; k--) vec[k] = vec[k - 1];
        vec[k] = (tsr_optim_run){off, off + n, 0};
    }
    size_t at = opt->off;
    for (size_t i = 0; i < nv; i++) { /* matrices in the gaps between vectors */
        add_run(opt, at, vec[i].lo, 1);
        add_run(opt, vec[i].lo, vec[i].hi, 0);
        if (vec[i].hi > at) at = vec[i].hi;
    }
    add_run(opt, at, opt->off + opt->n, 1);
    tsr_free(opt->be->ctx, vec);
    return TSR_OK;
}

tsr_status tsr_optim_scale_grads(tsr_optim *opt, tsr_buf *grads, float coef) {
    if (!opt || !grads) return TSR_ERR_INVALID_ARG;
    return opt->n ? tsr_op_scale(opt->be, opt->n, coef, tsr_ref_at(grads, opt->off)) : TSR_OK;
}

void tsr_optim_scale_next(tsr_optim *opt, float coef) {
    if (opt) opt->grad_scale = coef;
}

/* The update of parameters [lo, lo + n) (state at lo - off) with weight decay wd. */
static tsr_status update_range(tsr_optim *opt, tsr_buf *params, tsr_buf *grads, float lr, uint64_t step,
                               size_t lo, size_t n, float wd) {
    const tsr_optimizer_options *o = &opt->o;
    tsr_ref w = tsr_ref_at(params, lo), g = tsr_ref_at(grads, lo);
    size_t so = lo - opt->off;
    if (o->kind == TSR_OPTIM_SGD) {
        tsr_sgd_params p = {lr, o->momentum, wd, o->nesterov, opt->grad_scale};
        /* without momentum the velocity is never read; pass the gradient as a placeholder */
        return tsr_op_sgd_update(opt->be, n, &p, w, g, opt->v ? tsr_ref_at(opt->v, so) : g);
    }
    double t = (double)step + 1.0;
    tsr_adam_params p = {lr, o->beta1, o->beta2, o->eps, wd, o->kind == TSR_OPTIM_ADAMW,
                         (float)(1.0 - pow((double)o->beta1, t)), (float)(1.0 - pow((double)o->beta2, t)),
                         opt->grad_scale};
    /* beta1 = 0 gives bias correction 1; tiny betas^t may round the correction to 1: fine */
    return tsr_op_adam_update(opt->be, n, &p, w, g, tsr_ref_at(opt->m, so), tsr_ref_at(opt->v, so));
}

tsr_status tsr_optim_update(tsr_optim *opt, tsr_buf *params, tsr_buf *grads, float lr, uint64_t step) {
    if (!opt || !params || !grads) return TSR_ERR_INVALID_ARG;
    tsr_status s = TSR_OK;
    if (!opt->runs) s = update_range(opt, params, grads, lr, step, opt->off, opt->n, opt->o.weight_decay);
    for (size_t i = 0; opt->runs && s == TSR_OK && i < opt->nruns; i++) {
        const tsr_optim_run *r = &opt->runs[i];
        s = update_range(opt, params, grads, lr, step, r->lo, r->hi - r->lo,
                         r->decay ? opt->o.weight_decay : 0.0f);
    }
    opt->grad_scale = 0.0f; /* one update's */
    return s;
}

size_t tsr_optim_state(tsr_optim *opt, const char *names[2], tsr_buf *bufs[2]) {
    if (!opt) return 0;
    if (opt->o.kind == TSR_OPTIM_SGD) {
        if (!opt->v) return 0;
        names[0] = "sgd.velocity";
        bufs[0] = opt->v;
        return 1;
    }
    names[0] = "adam.m";
    bufs[0] = opt->m;
    names[1] = "adam.v";
    bufs[1] = opt->v;
    return 2;
}
