/* poolK / maxpoolK — max pooling over K x K windows, option /sS (stride, default K). Keeps the
 * argmax indices (int32) for backward. */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static int match(const char *name, size_t n, tsr_layer *l) {
    return tsr_spec_match_sized(name, n, "pool", 0, &l->kh, &l->kw) ||
           tsr_spec_match_sized(name, n, "maxpool", 0, &l->kh, &l->kw);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    TSR_TRY(tsr_spec_no_arg(c, name, n));
    if (!l->kh) return tsr_spec_error(c, start, TSR_ERR_PARSE, "pool size must be positive");
    l->stride = 0; /* the window size */
    return TSR_OK;
}

static tsr_status parse_option(tsr_spec_cursor *c, const char *name, size_t n, tsr_layer *l) {
    size_t opos = c->pos;
    char ch = c->s[c->pos];
    if (ch != 's')
        return tsr_spec_error(c, opos, TSR_ERR_PARSE, "unknown option '/%c' for %.*s (%s)", ch ? ch : ' ',
                              (int)n, name, "use /sN");
    c->pos++;
    if (tsr_spec_count(c, &l->stride) || !l->stride)
        return tsr_spec_error(c, opos, TSR_ERR_PARSE, "option '/s' needs a positive number");
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) {
    if (l->stride == l->kh) snprintf(buf, size, "pool%zu", l->kh);
    else snprintf(buf, size, "pool%zu/s%zu", l->kh, l->stride);
}

/* l->kh is the window size; a stride of 0 means the window size. */
static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    size_t size = l->kh;
    if (!size || size > 1024) return tsr_error(ctx, TSR_ERR_SHAPE, "pool size %zu is not valid", size);
    if (!l->stride) l->stride = size;
    if (l->stride > 1024) return tsr_error(ctx, TSR_ERR_SHAPE, "pool stride %zu is not valid", l->stride);
    if (in[0].h < size || in[0].w < size)
        return tsr_error(ctx, TSR_ERR_SHAPE, "pool%zu does not fit a %zux%zu input", size, in[0].h, in[0].w);
    l->kw = size;
    l->out_c = in[0].c;
    l->out_h = (in[0].h - size) / l->stride + 1;
    l->out_w = (in[0].w - size) / l->stride + 1;
    return TSR_OK;
}

static size_t state(const tsr_layer *l) { return tsr_layer_out_size(l); } /* int32 indices */

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = n * tsr_layer_out_size(l) * l->kh * l->kw;
    *b = n * (tsr_layer_in_size(l) + tsr_layer_out_size(l));
}

static tsr_pool_geom geom(const tsr_layer *l, size_t n) {
    tsr_pool_geom g = {n * l->in_c, l->in_h, l->in_w, l->kh, l->stride, l->out_h, l->out_w};
    return g;
}

static tsr_status forward(const tsr_layer_run *r) {
    tsr_pool_geom g = geom(r->l, r->n);
    return tsr_op_maxpool_forward(r->be, &g, r->in[0], r->out, r->state);
}

static tsr_status backward(const tsr_layer_run *r) {
    if (!r->want_din[0]) return TSR_OK;
    tsr_pool_geom g = geom(r->l, r->n);
    if (r->fuse_relu) /* the relu before: din is its input's gradient */
        return tsr_op_maxpool_backward_relu(r->be, &g, r->dout, r->state, r->out, r->din[0]);
    return tsr_op_maxpool_backward(r->be, &g, r->dout, r->state, r->din[0]);
}

const tsr_layer_ops tsr_layer_maxpool = {
    .kind = TSR_LAYER_MAXPOOL,
    .type = "maxpool",
    .match = match,
    .parse_arg = parse_arg,
    .parse_option = parse_option,
    .print = print,
    .shape = shape,
    .state = state,
    .flops = flops,
    .half_out = 1,
    .bwd_ignores_in = 1,
    .forward = forward,
    .backward = backward,
};
