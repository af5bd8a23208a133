/* The loss: softmax over the classes of each row of logits, then the cross-entropy against
 * int32 labels. Inputs: logits, labels; output: one loss per label; keeps the probabilities.
 * A classifier has one row and one label per sample; a language model one per position
 * (logits [T, V], labels [T]), where label -1 is an ignored position (loss 0, no gradient).
 * Backward: d(logits) = loss_scale * (probs - onehot(labels)). Every model ends with it (it
 * is not written in the spec). */
#include <stdio.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static void print(const tsr_layer *l, char *buf, size_t size) {
    (void)l;
    snprintf(buf, size, "softmax_xent");
}

/* in[1]: the labels of one sample, P x 1 x 1. */
static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    (void)ctx;
    size_t positions = in[1].c ? in[1].c : 1;
    l->units = tsr_tshape_size(in[0]) / positions; /* classes */
    l->out_c = positions, l->out_h = l->out_w = 1;
    return TSR_OK;
}

static size_t state(const tsr_layer *l) { return l->out_c * l->units; } /* probabilities */

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = 4 * n * l->out_c * l->units;
    *b = 2 * n * l->out_c * l->units;
}

/* One label per sample keeps the classifiers' own kernels (and their bits). */
static tsr_status forward(const tsr_layer_run *r) {
    size_t rows = r->n * r->l->out_c, classes = r->l->units;
    if (r->l->out_c == 1)
        return tsr_op_softmax_xent_forward(r->be, rows, classes, r->in[0], r->in[1], r->state, r->out);
    return tsr_op_xent_forward(r->be, rows, classes, r->in[0], r->in[1], r->state, r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    size_t rows = r->n * r->l->out_c, classes = r->l->units;
    if (r->l->out_c == 1)
        return tsr_op_softmax_xent_backward(r->be, rows, classes, r->state, r->in[1], r->loss_scale,
                                            r->din[0]);
    return tsr_op_xent_backward(r->be, rows, classes, r->state, r->in[1], r->loss_scale, r->din[0]);
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
