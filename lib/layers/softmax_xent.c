/* The loss: softmax over the classes of each row of logits, then the cross-entropy against
 * int32 labels. Inputs: logits, labels; output: one loss per sample; keeps the
 * probabilities. Backward: d(logits) = loss_scale * (probs - onehot(labels)). Every model
 * ends with it (it is not written in the spec). */
#include <stdio.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static void print(const tsr_layer *l, char *buf, size_t size) {
    (void)l;
    snprintf(buf, size, "softmax_xent");
}

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    (void)ctx;
    l->units = tsr_tshape_size(in[0]); /* classes */
    l->out_c = l->out_h = l->out_w = 1;
    return TSR_OK;
}

static size_t state(const tsr_layer *l) { return l->units; } /* probabilities */

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = 4 * n * l->units;
    *b = 2 * n * l->units;
}

static tsr_status forward(const tsr_layer_run *r) {
    return tsr_op_softmax_xent_forward(r->be, r->n, r->l->units, r->in[0], r->in[1], r->state, r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    return tsr_op_softmax_xent_backward(r->be, r->n, r->l->units, r->state, r->in[1], r->loss_scale,
                                        r->din[0]);
}

const tsr_layer_ops tsr_layer_softmax_xent = {
    .kind = TSR_LAYER_SOFTMAX_XENT,
    .type = "softmax_xent",
    .print = print,
    .shape = shape,
    .state = state,
    .flops = flops,
    .forward = forward,
    .backward = backward,
};
