/* lmhead:E — the language-model head tied to the token embedding of layer E (GPT-2's): logits
 * [T, V] = x [T, C] times the embedding table [V][C] transposed. It owns no parameters: the
 * stage hands it layer E's table, and the gradients of both uses add up in E's gradient. */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static int match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 6 && !strncmp(name, "lmhead", 6);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n, (void)start;
    const char *what = "lmhead needs the embed layer it is tied to (':E', a layer index)";
    if (c->s[c->pos] != ':') return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "%s", what);
    size_t argpos = ++c->pos, e;
    if (tsr_spec_count(c, &e)) return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "%s", what);
    l->tied = e + 1;
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) { snprintf(buf, size, "lmhead:%zu", l->tied - 1); }

/* The model has put the tied table's rows in l->vocab and its width in l->units. */
static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    size_t C = tsr_tshape_dim(in[0]), T = tsr_tshape_rows(in[0]);
    if (C != l->units)
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "lmhead:%zu: its input rows have %zu channels but the embedding's are %zu wide",
                         l->tied - 1, C, l->units);
    if (T * l->vocab > TSR_MODEL_MAX_SAMPLE)
        return tsr_error(ctx, TSR_ERR_SHAPE, "lmhead:%zu: %zu x %zu logits per sample are more than %zu",
                         l->tied - 1, T, l->vocab, TSR_MODEL_MAX_SAMPLE);
    if (in[0].h * in[0].w > 1) l->out_c = T, l->out_h = l->vocab, l->out_w = 1; /* as linear */
    else l->out_c = l->vocab, l->out_h = l->out_w = 1;
    return TSR_OK;
}

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    uint64_t w = (uint64_t)l->vocab * l->units * tsr_layer_in_rows(l);
    *f = 2 * n * w;
    *b = 4 * n * w;
}

static tsr_status forward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t rows = r->n * tsr_layer_in_rows(l), C = l->units, V = l->vocab;
    return tsr_op_gemm(r->be, TSR_NO_TRANS, TSR_TRANS, rows, V, C, 1.0f, r->in[0], C, r->param[0], C, 0.0f,
                       r->out, V);
}

static tsr_status backward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t rows = r->n * tsr_layer_in_rows(l), C = l->units, V = l->vocab;
    TSR_TRY(tsr_op_gemm(r->be, TSR_TRANS, TSR_NO_TRANS, V, C, rows, 1.0f, r->dout, V, r->in[0], C,
                        r->accumulate ? 1.0f : 0.0f, r->grad[0], C));
    if (!r->want_din[0]) return TSR_OK;
    return tsr_op_gemm(r->be, TSR_NO_TRANS, TSR_NO_TRANS, rows, C, V, 1.0f, r->dout, V, r->param[0], C,
                       r->add_din[0] ? 1.0f : 0.0f, r->din[0], C);
}

const tsr_layer_ops tsr_layer_lmhead = {
    .kind = TSR_LAYER_LMHEAD,
    .type = "lmhead",
    .match = match,
    .parse_arg = parse_arg,
    .print = print,
    .shape = shape,
    .ties_embedding = 1,
    .accumulate_din = 1,
    .flops = flops,
    .forward = forward,
    .backward = backward,
};
