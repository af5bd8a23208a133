/* flatten — a view of its input as one vector: no memory, no work. */
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    (void)ctx;
    l->out_c = tsr_tshape_size(in[0]);
    l->out_h = l->out_w = 1;
    return TSR_OK;
}

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    (void)l, (void)n;
    *f = *b = 0;
}

static tsr_status nothing(const tsr_layer_run *r) {
    (void)r;
    return TSR_OK;
}

const tsr_layer_ops tsr_layer_flatten = {
    .kind = TSR_LAYER_FLATTEN,
    .type = "flatten",
    .word = 1,
    .shape = shape,
    .view = 1,
    .flops = flops,
    .forward = nothing,
    .backward = nothing,
};
