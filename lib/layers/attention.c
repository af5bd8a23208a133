/* attention:H — the core of causal multi-head self-attention (GPT-2's attn between c_attn and
 * c_proj): input [T, 3C], each row q | k | v of C channels (head h at channels h*C/H.. of each
 * block), output [T, C]: for every head softmax over keys j <= t of q_t.k_j / sqrt(C/H), times
 * v, heads side by side. No parameters and no kept state: backward recomputes the weights
 * (Megatron-LM's selective activation recomputation; one more q k^T product), so the model
 * keeps O(T) per layer instead of [H][T][T] per sample; the weights and their gradient live
 * in the stage's workspace, shared by its layers, only during a call. */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static int match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 9 && !strncmp(name, "attention", 9);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n, (void)start;
    const char *what = "attention needs a head count in 1..16777216";
    if (c->s[c->pos] != ':') return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "%s (':H')", what);
    size_t argpos = ++c->pos;
    if (tsr_spec_count(c, &l->heads) || !l->heads) return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "%s", what);
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) { snprintf(buf, size, "attention:%zu", l->heads); }

static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    size_t T = in[0].c, width = in[0].h * in[0].w, H = l->heads;
    if (!H) return tsr_error(ctx, TSR_ERR_SHAPE, "attention needs at least one head");
    if (width % 3 || !width || (width / 3) % H)
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "attention:%zu reads rows of q | k | v: a width of 3 x C with C a multiple of "
                         "%zu heads, got %zux%zu",
                         H, H, T, width);
    if (H * T > TSR_MODEL_MAX_SAMPLE / T)
        return tsr_error(ctx, TSR_ERR_SHAPE, "attention:%zu over %zu tokens: %zu x %zu x %zu weights per "
                         "sample are more than %zu", H, T, H, T, T, TSR_MODEL_MAX_SAMPLE);
    l->out_c = T, l->out_h = width / 3, l->out_w = 1;
    return TSR_OK;
}

/* TSR_ATTN_SCRATCH per sample: the weights and their gradient. */
static size_t workspace(const tsr_layer *l) { return 2 * l->heads * l->in_c * l->in_c; }

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    uint64_t T = l->in_c, C = l->out_h;
    *f = n * (4 * T * T * C + 5 * l->heads * T * T); /* q.k and att.v, the softmax */
    *b = n * (10 * T * T * C + 10 * l->heads * T * T); /* both again for the weights, four products */
}

static tsr_attn_geom geom(const tsr_layer_run *r) {
    tsr_attn_geom g = {r->n, r->l->in_c, r->l->out_h, r->l->heads};
    return g;
}

static tsr_status forward(const tsr_layer_run *r) {
    tsr_attn_geom g = geom(r);
    return tsr_op_attention_forward(r->be, &g, r->in[0], r->ws, r->out);
}

static tsr_status backward(const tsr_layer_run *r) {
    if (!r->want_din[0]) return TSR_OK;
    tsr_attn_geom g = geom(r);
    return tsr_op_attention_backward(r->be, &g, r->in[0], r->dout, r->ws, r->din[0]);
}

const tsr_layer_ops tsr_layer_attention = {
    .kind = TSR_LAYER_ATTENTION,
    .type = "attention",
    .match = match,
    .parse_arg = parse_arg,
    .print = print,
    .shape = shape,
    .workspace = workspace,
    .flops = flops,
    .half_out = 1,
    .forward = forward,
    .backward = backward,
};
