/* layernorm — layer norm over the last dimension (GPT-2's ln_1, ln_2, ln_f):
 * y = (x - mean) / sqrt(var + 1e-5) * weight + bias, biased variance, per row; "weight" [C]
 * starts at ones, "bias" [C] at zeros. Keeps each row's mean and 1/std for backward. */
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

#define LN_EPS 1e-5f /* PyTorch's and GPT-2's */

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    (void)ctx;
    if (!l->eps) l->eps = LN_EPS;
    l->weights = l->biases = tsr_tshape_dim(in[0]);
    return TSR_OK;
}

static size_t params(const tsr_layer *l, tsr_param_desc *out) {
    out[0] = tsr_param_1d("weight", l->weights, TSR_INIT_ONE);
    out[1] = tsr_param_1d("bias", l->biases, TSR_INIT_ZERO);
    return 2;
}

static size_t state(const tsr_layer *l) { return 2 * tsr_layer_in_rows(l); } /* mean, 1/std */
/* d(input) when nobody wants it (the op always writes one) */
static size_t workspace(const tsr_layer *l) { return tsr_layer_in_size(l); }

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = 8 * n * tsr_layer_out_size(l);
    *b = 14 * n * tsr_layer_out_size(l);
}

static tsr_status forward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t rows = r->n * tsr_layer_in_rows(l);
    return tsr_op_layernorm_forward(r->be, rows, tsr_layer_in_dim(l), l->eps, r->in[0], r->param[0],
                                    r->param[1], r->out, r->state, tsr_ref_offset(r->state, rows));
}

static tsr_status backward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t rows = r->n * tsr_layer_in_rows(l), dim = tsr_layer_in_dim(l);
    if (!r->accumulate) {
        TSR_TRY(tsr_op_fill(r->be, r->grad[0], dim, 0.0f));
        TSR_TRY(tsr_op_fill(r->be, r->grad[1], dim, 0.0f));
    }
    tsr_ref dx = r->want_din[0] ? r->din[0] : r->ws;
    return tsr_op_layernorm_backward(r->be, rows, dim, r->in[0], r->param[0], r->state,
                                     tsr_ref_offset(r->state, rows), r->dout, dx, r->grad[0],
                                     r->grad[1], r->want_din[0] && r->add_din[0]);
}

const tsr_layer_ops tsr_layer_layernorm = {
    .kind = TSR_LAYER_LAYERNORM,
    .type = "layernorm",
    .word = 1,
    .shape = shape,
    .params = params,
    .state = state,
    .workspace = workspace,
    .accumulate_din = 1,
    .flops = flops,
    .half_out = 1,
    .forward = forward,
    .backward = backward,
};
