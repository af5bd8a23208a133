/* relu — y = max(x, 0); backward may run in place over the output gradient. */
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = *b = n * tsr_layer_out_size(l);
}

static tsr_status forward(const tsr_layer_run *r) {
    return tsr_op_relu_forward(r->be, r->n * tsr_layer_out_size(r->l), r->in[0], r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    if (!r->want_din[0]) return TSR_OK;
    return tsr_op_relu_backward(r->be, r->n * tsr_layer_out_size(r->l), r->out, r->dout, r->din[0]);
}

const tsr_layer_ops tsr_layer_relu = {
    .kind = TSR_LAYER_RELU,
    .type = "relu",
    .word = 1,
    .inplace_din = 1,
    .flops = flops,
    .half_out = 1,
    .bwd_reads_out = 1,
    .bwd_ignores_in = 1,
    .forward = forward,
    .backward = backward,
};
