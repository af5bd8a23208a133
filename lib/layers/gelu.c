/* gelu — GELU in its tanh form (GPT-2's), element-wise; backward reads the layer's input and
 * may run in place over the output gradient. */
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    /* a tanh and about eight multiply-adds forward, twice that backward */
    *f = 10 * n * tsr_layer_out_size(l);
    *b = 2 * *f;
}

static tsr_status forward(const tsr_layer_run *r) {
    return tsr_op_gelu_forward(r->be, r->n * tsr_layer_out_size(r->l), r->in[0], r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    if (!r->want_din[0]) return TSR_OK;
    return tsr_op_gelu_backward(r->be, r->n * tsr_layer_out_size(r->l), r->in[0], r->dout,
                                r->din[0]);
}

const tsr_layer_ops tsr_layer_gelu = {
    .kind = TSR_LAYER_GELU,
    .type = "gelu",
    .word = 1,
    .inplace_din = 1,
    .flops = flops,
    .half_out = 1,
    .forward = forward,
    .backward = backward,
};
