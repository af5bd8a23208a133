/* embed:D — token embedding: each int32 id of the model input (in [0, vocab)) becomes row
 * id of weight [vocab][D]; output [ids, D] (ids x D x 1). Reads only the model's token ids;
 * they have no gradient. */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static int match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 5 && !strncmp(name, "embed", 5);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n, (void)start;
    const char *what = "embed needs a positive width";
    if (c->s[c->pos] != ':') return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "%s (':D')", what);
    size_t argpos = ++c->pos;
    if (tsr_spec_count(c, &l->units) || !l->units) return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "%s", what);
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) { snprintf(buf, size, "embed:%zu", l->units); }

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    size_t ids = tsr_tshape_size(in[0]);
    if (!in[0].tokens)
        return tsr_error(ctx, TSR_ERR_SHAPE, "embed:%zu reads int32 token ids, but its input holds floats",
                         l->units);
    if (!l->units || l->units > TSR_MODEL_MAX_DIM)
        return tsr_error(ctx, TSR_ERR_SHAPE, "embed needs a positive width below %zu, got %zu",
                         TSR_MODEL_MAX_DIM, l->units);
    if (ids * l->units > TSR_MODEL_MAX_SAMPLE || in[0].vocab > SIZE_MAX / 8 / l->units)
        return tsr_error(ctx, TSR_ERR_SHAPE, "embed:%zu of %zu ids over a vocabulary of %zu is too large",
                         l->units, ids, in[0].vocab);
    l->vocab = in[0].vocab;
    l->out_c = ids;
    l->out_h = l->units;
    l->out_w = 1;
    l->weights = l->vocab * l->units;
    return TSR_OK;
}

static size_t params(const tsr_layer *l, tsr_param_desc *out) {
    /* GPT-2's N(0, 0.02) */
    out[0] = tsr_param_normal(tsr_param_2d("weight", l->vocab, l->units, TSR_INIT_NORMAL, l->units, l->vocab),
                              0.02);
    return 1;
}

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = n * tsr_layer_out_size(l); /* copies, counted as one operation per float */
    *b = n * tsr_layer_out_size(l);
}

static tsr_status forward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    return tsr_op_embed_forward(r->be, r->n * l->out_c, l->units, l->vocab, r->in[0], r->param[0], r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    if (!r->accumulate) TSR_TRY(tsr_op_fill(r->be, r->grad[0], l->weights, 0.0f));
    return tsr_op_embed_backward(r->be, r->n * l->out_c, l->units, l->vocab, r->in[0], r->dout, r->grad[0]);
}

const tsr_layer_ops tsr_layer_embed = {
    .kind = TSR_LAYER_EMBED,
    .type = "embed",
    .match = match,
    .parse_arg = parse_arg,
    .print = print,
    .shape = shape,
    .params = params,
    .token_input = 1,
    .flops = flops,
    .forward = forward,
    .backward = backward,
};
