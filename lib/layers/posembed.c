/* posembed:P — learned position embedding (GPT-2's wpe): adds row t of "weight" [P][C] to row
 * t of its input [T, C], T <= P (a model of context P trains on shorter sequences with the
 * first T rows). Weights start N(0, 0.02). */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

#define POSEMBED_STD 0.02

static int match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 8 && !strncmp(name, "posembed", 8);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n, (void)start;
    const char *what = "posembed needs the positions it holds (':P', the model's context)";
    if (c->s[c->pos] != ':') return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "%s", what);
    size_t argpos = ++c->pos;
    if (tsr_spec_count(c, &l->vocab) || !l->vocab) return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "%s", what);
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) { snprintf(buf, size, "posembed:%zu", l->vocab); }

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    size_t T = tsr_tshape_rows(in[0]), C = tsr_tshape_dim(in[0]);
    if (T > l->vocab)
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "posembed:%zu holds %zu positions, but its input has %zu (the model's context "
                         "is at most %zu tokens)",
                         l->vocab, l->vocab, T, l->vocab);
    if (l->vocab > SIZE_MAX / 8 / C)
        return tsr_error(ctx, TSR_ERR_SHAPE, "posembed:%zu of width %zu is too large", l->vocab, C);
    l->weights = l->vocab * C;
    return TSR_OK;
}

static size_t params(const tsr_layer *l, tsr_param_desc *out) {
    size_t C = tsr_layer_in_dim(l);
    out[0] = tsr_param_normal(tsr_param_2d("weight", l->vocab, C, TSR_INIT_NORMAL, C, l->vocab), POSEMBED_STD);
    return 1;
}

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = n * tsr_layer_out_size(l);
    *b = n * tsr_layer_out_size(l);
}

/* The first T rows of the table are one bias over each sample's T x C values. */
static tsr_status forward(const tsr_layer_run *r) {
    size_t count = tsr_layer_out_size(r->l);
    TSR_TRY(tsr_ref_copy(r->out, r->in[0], TSR_DTYPE_F32, r->n * count));
    return tsr_op_bias_add(r->be, r->n, count, 1, r->param[0], r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    size_t count = tsr_layer_out_size(r->l);
    if (!r->accumulate) TSR_TRY(tsr_op_fill(r->be, r->grad[0], r->l->weights, 0.0f));
    TSR_TRY(tsr_op_bias_grad(r->be, r->n, count, 1, r->dout, r->grad[0]));
    if (!r->want_din[0]) return TSR_OK;
    if (r->add_din[0]) return tsr_op_axpy(r->be, r->n * count, 1.0f, r->dout, r->din[0]);
    if (tsr_ref_same(r->din[0], r->dout)) return TSR_OK;
    return tsr_ref_copy(r->din[0], r->dout, TSR_DTYPE_F32, r->n * count);
}

const tsr_layer_ops tsr_layer_posembed = {
    .kind = TSR_LAYER_POSEMBED,
    .type = "posembed",
    .match = match,
    .parse_arg = parse_arg,
    .print = print,
    .shape = shape,
    .params = params,
    .inplace_din = 1,
    .accumulate_din = 1,
    .flops = flops,
    .forward = forward,
    .backward = backward,
};
