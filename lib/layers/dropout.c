/* dropout:P — in training, zeroes each value with probability P and scales the rest by
 * 1/(1-P) (mask from the layer's seed, kept for backward); at evaluation a copy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static int match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 7 && !strncmp(name, "dropout", 7);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n, (void)start;
    if (c->s[c->pos] != ':')
        return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "dropout needs a probability (':P')");
    size_t argpos = ++c->pos;
    char *end;
    float p = strtof(c->s + c->pos, &end);
    if (end == c->s + c->pos || !(p >= 0.0f && p < 1.0f))
        return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "dropout needs a probability in [0, 1)");
    c->pos = (size_t)(end - c->s);
    l->p = p;
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) {
    snprintf(buf, size, "dropout:%g", (double)l->p);
    if (strtof(buf + 8, NULL) != l->p) snprintf(buf, size, "dropout:%.9g", (double)l->p);
}

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    (void)in;
    if (!(l->p >= 0.0f && l->p < 1.0f))
        return tsr_error(ctx, TSR_ERR_SHAPE, "dropout probability %g must be in [0, 1)", (double)l->p);
    return TSR_OK;
}

static size_t state(const tsr_layer *l) { return tsr_layer_out_size(l); } /* the mask */

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = *b = n * tsr_layer_out_size(l);
}

static tsr_status forward(const tsr_layer_run *r) {
    size_t count = r->n * tsr_layer_out_size(r->l);
    if (r->train) return tsr_op_dropout_forward(r->be, count, r->l->p, r->seed, r->in[0], r->out, r->state);
    return tsr_ref_copy(r->out, r->in[0], TSR_DTYPE_F32, count);
}

static tsr_status backward(const tsr_layer_run *r) {
    if (!r->want_din[0]) return TSR_OK;
    return tsr_op_mul(r->be, r->n * tsr_layer_out_size(r->l), r->dout, r->state, r->din[0]);
}

const tsr_layer_ops tsr_layer_dropout = {
    .kind = TSR_LAYER_DROPOUT,
    .type = "dropout",
    .match = match,
    .parse_arg = parse_arg,
    .print = print,
    .shape = shape,
    .state = state,
    .flops = flops,
    .half_out = 1,
    .bwd_ignores_in = 1,
    .forward = forward,
    .backward = backward,
};
