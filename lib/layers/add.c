/* add:N / add:in — residual sum: the previous layer's output plus layer N's output (or the
 * model input), of the same shape. Backward hands the output gradient to both inputs. */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static int match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 3 && !strncmp(name, "add", 3);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n, (void)start;
    const char *what = "add needs the layer whose output it adds (':N', N a layer index, or ':in')";
    if (c->s[c->pos] != ':') return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "%s", what);
    size_t argpos = ++c->pos, layer;
    l->ninputs = 2;
    if (!strncmp(c->s + c->pos, "in", 2)) {
        c->pos += 2;
        l->inputs[1] = 0;
        return TSR_OK;
    }
    if (tsr_spec_count(c, &layer)) return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "%s", what);
    l->inputs[1] = layer + 1;
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) {
    if (l->inputs[1] == 0) snprintf(buf, size, "add:in");
    else snprintf(buf, size, "add:%zu", l->inputs[1] - 1);
}

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    if (in[0].c != in[1].c || in[0].h != in[1].h || in[0].w != in[1].w) {
        char what[48];
        if (l->inputs[1]) snprintf(what, sizeof what, "layer %zu's output", l->inputs[1] - 1);
        else snprintf(what, sizeof what, "the model input");
        return tsr_error(ctx, TSR_ERR_SHAPE, "add: the previous output is %zux%zux%zu but %s is %zux%zux%zu",
                         in[0].c, in[0].h, in[0].w, what, in[1].c, in[1].h, in[1].w);
    }
    return TSR_OK;
}

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = n * tsr_layer_out_size(l);
    *b = 2 * n * tsr_layer_out_size(l);
}

static tsr_status forward(const tsr_layer_run *r) {
    size_t count = r->n * tsr_layer_out_size(r->l);
    TSR_TRY(tsr_ref_copy(r->out, r->in[0], TSR_DTYPE_F32, count));
    return tsr_op_axpy(r->be, count, 1.0f, r->in[1], r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    size_t count = r->n * tsr_layer_out_size(r->l);
    for (size_t k = 0; k < 2; k++) {
        if (!r->want_din[k]) continue;
        if (r->add_din[k]) TSR_TRY(tsr_op_axpy(r->be, count, 1.0f, r->dout, r->din[k]));
        else if (!tsr_ref_same(r->din[k], r->dout))
            TSR_TRY(tsr_ref_copy(r->din[k], r->dout, TSR_DTYPE_F32, count));
    }
    return TSR_OK;
}

const tsr_layer_ops tsr_layer_add = {
    .kind = TSR_LAYER_ADD,
    .type = "add",
    .match = match,
    .parse_arg = parse_arg,
    .print = print,
    .shape = shape,
    .inplace_din = 1,
    .accumulate_din = 1,
    .flops = flops,
    .bwd_ignores_in = 1,
    .forward = forward,
    .backward = backward,
};
