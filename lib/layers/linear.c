/* linear:N — the same affine map on every row of the last dimension (GPT-2's c_attn, c_proj,
 * c_fc): [T, C] -> [T, N], y = x W + b with "weight" [C][N] (Hugging Face's Conv1D layout,
 * inputs first) and "bias" [N]. Weights start N(0, 0.02), or N(0, S) with the option /stdS
 * (GPT-2 scales the residual projections by 1/sqrt(2 x blocks)); biases at zero. /nobias: no
 * bias (a tensor-parallel row share, whose bias the tpreduce after it adds once). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

#define LINEAR_STD 0.02 /* GPT-2's initialiser range */

static int match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 6 && !strncmp(name, "linear", 6);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n, (void)start;
    const char *what = "linear needs an output width in 1..16777216";
    if (c->s[c->pos] != ':') return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "%s (':N')", what);
    size_t argpos = ++c->pos;
    if (tsr_spec_count(c, &l->units) || !l->units) return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "%s", what);
    return TSR_OK;
}

static tsr_status parse_option(tsr_spec_cursor *c, const char *name, size_t n, tsr_layer *l) {
    (void)name, (void)n;
    size_t at = c->pos;
    if (!strncmp(c->s + at, "nobias", 6)) {
        l->nobias = 1;
        c->pos += 6;
        return TSR_OK;
    }
    if (strncmp(c->s + at, "std", 3))
        return tsr_spec_error(c, at, TSR_ERR_PARSE,
                              "linear takes the options /stdS (weight init std) and /nobias");
    char *end;
    double v = strtod(c->s + at + 3, &end);
    if (end == c->s + at + 3 || !(v > 0.0 && v <= 1.0))
        return tsr_spec_error(c, at, TSR_ERR_PARSE, "linear /stdS needs a std in (0, 1]");
    l->std = (float)v;
    c->pos = (size_t)(end - c->s);
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) {
    int n = snprintf(buf, size, "linear:%zu", l->units);
    if (n > 0 && (size_t)n < size && l->std > 0.0f)
        n += snprintf(buf + n, size - (size_t)n, "/std%.6g", (double)l->std);
    if (n > 0 && (size_t)n < size && l->nobias) snprintf(buf + n, size - (size_t)n, "/nobias");
}

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    size_t units = l->units, dim = tsr_tshape_dim(in[0]), rows = tsr_tshape_rows(in[0]);
    if (!units || units > TSR_MODEL_MAX_DIM || rows * units > TSR_MODEL_MAX_SAMPLE)
        return tsr_error(ctx, TSR_ERR_SHAPE, "linear:%zu over %zu rows needs 1 to %zu outputs in all",
                         units, rows, TSR_MODEL_MAX_SAMPLE);
    if (dim > SIZE_MAX / 8 / units)
        return tsr_error(ctx, TSR_ERR_SHAPE, "linear:%zu on rows of %zu is too large", units, dim);
    /* rows of tokens stay rows (one token too: [1, N]); a vector stays a vector */
    if (in[0].h * in[0].w > 1) l->out_c = rows, l->out_h = units, l->out_w = 1;
    else l->out_c = units, l->out_h = l->out_w = 1;
    l->weights = dim * units;
    l->biases = l->nobias ? 0 : units;
    return TSR_OK;
}

static size_t params(const tsr_layer *l, tsr_param_desc *out) {
    size_t in = tsr_layer_in_dim(l);
    double std = l->std > 0.0f ? (double)l->std : LINEAR_STD;
    out[0] = tsr_param_normal(tsr_param_2d("weight", in, l->units, TSR_INIT_NORMAL, in, l->units), std);
    if (l->nobias) return 1;
    out[1] = tsr_param_1d("bias", l->units, TSR_INIT_ZERO);
    return 2;
}

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    uint64_t rows = tsr_layer_in_rows(l);
    *f = n * rows * (2 * (uint64_t)l->weights + l->biases);
    *b = n * rows * (4 * (uint64_t)l->weights + l->biases);
}

static tsr_status forward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t rows = r->n * tsr_layer_in_rows(l), in = tsr_layer_in_dim(l), u = l->units;
    TSR_TRY(tsr_op_gemm(r->be, TSR_NO_TRANS, TSR_NO_TRANS, rows, u, in, 1.0f, r->in[0], in, r->param[0],
                        u, 0.0f, r->out, u));
    return l->nobias ? TSR_OK : tsr_op_bias_add(r->be, rows, u, 1, r->param[1], r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t rows = r->n * tsr_layer_in_rows(l), in = tsr_layer_in_dim(l), u = l->units;
    tsr_backend *be = r->be;
    TSR_TRY(tsr_op_gemm(be, TSR_TRANS, TSR_NO_TRANS, in, u, rows, 1.0f, r->in[0], in, r->dout, u,
                        r->accumulate ? 1.0f : 0.0f, r->grad[0], u));
    if (!l->nobias) {
        if (!r->accumulate) TSR_TRY(tsr_op_fill(be, r->grad[1], u, 0.0f));
        TSR_TRY(tsr_op_bias_grad(be, rows, u, 1, r->dout, r->grad[1]));
    }
    if (!r->want_din[0]) return TSR_OK;
    return tsr_op_gemm(be, TSR_NO_TRANS, TSR_TRANS, rows, in, u, 1.0f, r->dout, u, r->param[0], u,
                       r->add_din[0] ? 1.0f : 0.0f, r->din[0], in);
}

const tsr_layer_ops tsr_layer_linear = {
    .kind = TSR_LAYER_LINEAR,
    .type = "linear",
    .match = match,
    .parse_arg = parse_arg,
    .parse_option = parse_option,
    .print = print,
    .shape = shape,
    .params = params,
    .flops = flops,
    .accumulate_din = 1,
    .half_out = 1,
    .forward = forward,
    .backward = backward,
};
