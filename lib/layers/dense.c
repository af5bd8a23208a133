/* dense:N — fully connected, N units over the flattened input: y = x W^T + b,
 * weight [N][inputs], bias [N]. */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static int match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 5 && !strncmp(name, "dense", 5);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n, (void)start;
    const char *what = "dense needs a unit count in 1..16777216";
    if (c->s[c->pos] != ':') return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "%s (':N')", what);
    size_t argpos = ++c->pos;
    if (tsr_spec_count(c, &l->units) || !l->units) return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "%s", what);
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) { snprintf(buf, size, "dense:%zu", l->units); }

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    size_t units = l->units, inputs = tsr_tshape_size(in[0]);
    if (!units || units > TSR_MODEL_MAX_DIM)
        return tsr_error(ctx, TSR_ERR_SHAPE, "dense needs a unit count in 1..%zu, got %zu",
                         TSR_MODEL_MAX_DIM, units);
    if (inputs > SIZE_MAX / 8 / units)
        return tsr_error(ctx, TSR_ERR_SHAPE, "dense:%zu on %zu inputs is too large", units, inputs);
    l->out_c = units;
    l->out_h = l->out_w = 1;
    l->weights = units * inputs;
    l->biases = units;
    return TSR_OK;
}

static size_t params(const tsr_layer *l, tsr_param_desc *out) {
    size_t in = tsr_layer_in_size(l);
    out[0] = tsr_param_2d("weight", l->units, in, TSR_INIT_FAN, in, l->units);
    out[1] = tsr_param_1d("bias", l->units, TSR_INIT_ZERO);
    return 2;
}

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = n * (2 * (uint64_t)l->weights + l->biases);
    *b = n * (4 * (uint64_t)l->weights + l->biases);
}

static tsr_status forward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t in = tsr_layer_in_size(l), u = l->units;
    TSR_TRY(tsr_op_gemm(r->be, TSR_NO_TRANS, TSR_TRANS, r->n, u, in, 1.0f, r->in[0], in, r->param[0],
                        in, 0.0f, r->out, u));
    return tsr_op_bias_add(r->be, r->n, u, 1, r->param[1], r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t in = tsr_layer_in_size(l), u = l->units, n = r->n;
    tsr_backend *be = r->be;
    TSR_TRY(tsr_op_gemm(be, TSR_TRANS, TSR_NO_TRANS, u, in, n, 1.0f, r->dout, u, r->in[0], in,
                        r->accumulate ? 1.0f : 0.0f, r->grad[0], in));
    if (!r->accumulate) TSR_TRY(tsr_op_fill(be, r->grad[1], u, 0.0f));
    TSR_TRY(tsr_op_bias_grad(be, n, u, 1, r->dout, r->grad[1]));
    if (!r->want_din[0]) return TSR_OK;
    return tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, n, in, u, 1.0f, r->dout, u, r->param[0], in,
                       r->add_din[0] ? 1.0f : 0.0f, r->din[0], in);
}

const tsr_layer_ops tsr_layer_dense = {
    .kind = TSR_LAYER_DENSE,
    .type = "dense",
    .match = match,
    .parse_arg = parse_arg,
    .print = print,
    .shape = shape,
    .params = params,
    .flops = flops,
    .accumulate_din = 1,
    .half_out = 1,
    .forward = forward,
    .backward = backward,
};
