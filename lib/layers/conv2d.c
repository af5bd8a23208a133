/* convKxK:F / convKHxKW:F — 2-D convolution through im2col: F filters, options /sS (stride),
 * /pP, /same ((K-1)/2, the default), /valid (= /p0). weight [F][C][KH][KW], bias [F].
 *
 * On the host and CPU devices the batch runs in chunks of images whose column matrix
 * ([C*KH*KW][images*OH*OW]) is about tsr_conv2d_chunk_floats (a GPU takes the whole batch: one
 * GEMM per layer and direction): forward, weight gradient and column gradient are one GEMM each
 * per chunk, and each GEMM finds the columns im2col (or the GEMM before it) just wrote still in
 * cache. Whole-batch GEMMs were measured slower on the host: at batch 64 the cnn's second
 * layer has 40 MB of columns, and every pass over them went to memory. For the same reason
 * the columns are not kept for backward: it builds a chunk's columns again from the input
 * (an im2col costs less than writing the batch's columns to memory in forward and reading
 * them back for the weight gradient: measured 5% fewer cycles in the cnn's GEMMs), so the
 * layer keeps no state and one chunk's columns live in the workspace (room for the whole
 * batch's). The workspace holds a chunk's output (or its gradient) in the GEMM's layout
 * [F][images][OH*OW], transposed to and from the stage's [images][F][OH*OW], then the chunk's
 * columns; forward adds the bias, and the max(., 0) of a relu the stage folds in
 * (r->fuse_relu), in the transpose's pass.
 * A backend with its own convolution for the shape (tsr_op_conv_direct: the host's oneDNN
 * kernels) runs it instead, reading the input itself; forward and backward ask separately (an
 * AVX2 host has oneDNN's first-layer forward kernels but not their weight gradient's: there the
 * host's own weight gradient from the columns, tsr_op_conv_wgrad, reads dY without the
 * transpose). */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static int match(const char *name, size_t n, tsr_layer *l) {
    return tsr_spec_match_sized(name, n, "conv", 1, &l->kh, &l->kw);
}

static tsr_status parse_arg(tsr_spec_cursor *c, const char *name, size_t n, size_t start, tsr_layer *l) {
    (void)name, (void)n;
    const char *what = "conv needs a filter count in 1..16777216";
    if (c->s[c->pos] != ':') return tsr_spec_error(c, c->pos, TSR_ERR_PARSE, "%s (':N')", what);
    size_t argpos = ++c->pos;
    if (tsr_spec_count(c, &l->units) || !l->units) return tsr_spec_error(c, argpos, TSR_ERR_PARSE, "%s", what);
    if (!l->kh || !l->kw) return tsr_spec_error(c, start, TSR_ERR_PARSE, "conv kernel size must be positive");
    l->stride = 1;
    l->pad_h = l->pad_w = TSR_PAD_SAME;
    return TSR_OK;
}

static tsr_status parse_option(tsr_spec_cursor *c, const char *name, size_t n, tsr_layer *l) {
    size_t opos = c->pos;
    char ch = c->s[c->pos];
    if (!strncmp(c->s + c->pos, "same", 4)) {
        c->pos += 4;
        l->pad_h = l->pad_w = TSR_PAD_SAME;
    } else if (!strncmp(c->s + c->pos, "valid", 5)) {
        c->pos += 5;
        l->pad_h = l->pad_w = 0;
    } else if (ch == 's' || ch == 'p') {
        c->pos++;
        size_t v;
        if (tsr_spec_count(c, &v) || (ch == 's' && !v))
            return tsr_spec_error(c, opos, TSR_ERR_PARSE, "option '/%c' needs a %s number", ch,
                                  ch == 's' ? "positive" : "non-negative");
        if (ch == 's') l->stride = v;
        else l->pad_h = l->pad_w = v;
    } else {
        return tsr_spec_error(c, opos, TSR_ERR_PARSE, "unknown option '/%c' for %.*s (%s)", ch ? ch : ' ',
                              (int)n, name, "use /sN, /pN, /same or /valid");
    }
    return TSR_OK;
}

static void print(const tsr_layer *l, char *buf, size_t size) {
    int n = snprintf(buf, size, "conv%zux%zu:%zu", l->kh, l->kw, l->units);
    if (l->stride != 1 && n > 0 && (size_t)n < size)
        n += snprintf(buf + n, size - (size_t)n, "/s%zu", l->stride);
    if ((l->pad_h != (l->kh - 1) / 2 || l->pad_w != (l->kw - 1) / 2) && n > 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, "/p%zu", l->pad_h);
}

/* l->pad_h holds the padding asked for (a count or TSR_PAD_SAME) until resolved here. */
static tsr_status shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    size_t filters = l->units, kh = l->kh, kw = l->kw, stride = l->stride, pad = l->pad_h;
    if (!filters || filters > TSR_MODEL_MAX_DIM)
        return tsr_error(ctx, TSR_ERR_SHAPE, "conv needs a filter count in 1..%zu, got %zu",
                         TSR_MODEL_MAX_DIM, filters);
    if (!kh || !kw || kh > 1024 || kw > 1024)
        return tsr_error(ctx, TSR_ERR_SHAPE, "conv kernel %zux%zu is not valid", kh, kw);
    if (!stride || stride > 1024)
        return tsr_error(ctx, TSR_ERR_SHAPE, "conv stride %zu is not valid", stride);
    size_t ph = pad == TSR_PAD_SAME ? (kh - 1) / 2 : pad;
    size_t pw = pad == TSR_PAD_SAME ? (kw - 1) / 2 : pad;
    if (ph >= kh || pw >= kw)
        return tsr_error(ctx, TSR_ERR_SHAPE, "conv padding %zu must be smaller than the kernel %zux%zu",
                         pad, kh, kw);
    if (in[0].h + 2 * ph < kh || in[0].w + 2 * pw < kw)
        return tsr_error(ctx, TSR_ERR_SHAPE, "conv kernel %zux%zu does not fit a %zux%zu input", kh, kw,
                         in[0].h, in[0].w);
    l->pad_h = ph;
    l->pad_w = pw;
    l->out_c = filters;
    l->out_h = (in[0].h + 2 * ph - kh) / stride + 1;
    l->out_w = (in[0].w + 2 * pw - kw) / stride + 1;
    l->weights = filters * in[0].c * kh * kw;
    l->biases = filters;
    if (l->out_c * l->out_h * l->out_w > TSR_MODEL_MAX_DIM || in[0].c * kh * kw > TSR_MODEL_MAX_DIM)
        return tsr_error(ctx, TSR_ERR_SHAPE, "conv output %zux%zux%zu is too large", l->out_c, l->out_h,
                         l->out_w);
    return TSR_OK;
}

static size_t params(const tsr_layer *l, tsr_param_desc *out) {
    tsr_param_desc w = {"weight", 4, {l->units, l->in_c, l->kh, l->kw}, l->weights, TSR_INIT_FAN,
                        l->in_c * l->kh * l->kw, l->units * l->kh * l->kw, 0.0};
    out[0] = w;
    out[1] = tsr_param_1d("bias", l->units, TSR_INIT_ZERO);
    return 2;
}

/* The workspace: a chunk's GEMM output [F][images*OH*OW], then its columns. Nothing is kept
 * for backward: it builds the columns again from the input (see the file's comment). */
static size_t workspace(const tsr_layer *l) {
    return (l->out_c + l->in_c * l->kh * l->kw) * l->out_h * l->out_w;
}

static void flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    uint64_t ohw = (uint64_t)l->out_h * l->out_w;
    *f = n * ohw * (2 * (uint64_t)l->weights + l->biases);
    *b = n * ohw * (4 * (uint64_t)l->weights + l->biases);
}

static tsr_conv_geom geom(const tsr_layer *l, size_t n) {
    tsr_conv_geom g = {n, l->in_c, l->in_h, l->in_w, l->kh, l->kw, l->stride, l->stride,
                       l->pad_h, l->pad_w, l->out_h, l->out_w};
    return g;
}

/* Column floats per chunk (4 MiB): enough columns that the GEMMs run at full rate, few enough
 * that they stay in the last-level cache between the GEMMs. The chunk depends on the shape
 * only, so results do not depend on the thread count. */
size_t tsr_conv2d_chunk_floats = (size_t)1 << 20;

/* Images per chunk. A GPU or accelerator takes the whole batch: one GEMM per layer and
 * direction, its largest and fewest launches (their caches are not what the chunks are for). */
static size_t chunk_images(const tsr_layer *l, const tsr_backend *be, size_t n) {
    if (be->device.kind == TSR_DEVICE_GPU || be->device.kind == TSR_DEVICE_ACCELERATOR) return n ? n : 1;
    size_t per_image = l->in_c * l->kh * l->kw * l->out_h * l->out_w;
    size_t k = tsr_conv2d_chunk_floats / per_image;
    return k < 1 ? 1 : k > n ? n : k;
}

static tsr_status forward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t rows = l->in_c * l->kh * l->kw, ohw = l->out_h * l->out_w, f = l->units;
    tsr_conv_geom whole = geom(l, r->n);
    if (tsr_op_conv_direct(r->be, &whole, f, TSR_CONV_FORWARD)) { /* the backend's own convolution */
        TSR_TRY(tsr_op_conv_forward(r->be, &whole, f, r->in[0], r->param[0], r->out));
        return r->fuse_relu ? tsr_op_bias_relu(r->be, r->n, f, ohw, r->param[1], r->out)
                            : tsr_op_bias_add(r->be, r->n, f, ohw, r->param[1], r->out);
    }
    size_t in = tsr_layer_in_size(l), step = chunk_images(l, r->be, r->n);
    for (size_t b = 0; b < r->n; b += step) {
        size_t m = r->n - b < step ? r->n - b : step, cols = m * ohw;
        tsr_conv_geom g = geom(l, m);
        tsr_ref col = tsr_ref_offset(r->ws, f * step * ohw);
        TSR_TRY(tsr_op_im2col(r->be, &g, tsr_ref_offset(r->in[0], b * in), col));
        TSR_TRY(tsr_op_gemm(r->be, TSR_NO_TRANS, TSR_NO_TRANS, f, cols, rows, 1.0f, r->param[0],
                            rows, col, cols, 0.0f, r->ws, cols));
        /* into the stage layout with the bias (and a following relu) on the way */
        TSR_TRY(tsr_op_transpose_bias(r->be, f, m, ohw, r->ws, r->param[1], r->fuse_relu,
                                      tsr_ref_offset(r->out, b * f * ohw)));
    }
    return TSR_OK;
}

/* Rows of dW per part when dW is too small for the backend to split (below). */
#define WGRAD_PART_ROWS 16

/* dW (+)= dY col^T, dW [f][rows]. A dW under 128 in both sides (the first layer's 32 x 25 over
 * K = 50k columns) is one GEMM the host runs on one thread; cut into parts of 16 filters (a
 * batch of GEMMs sharing the columns) it runs on all of them. A part's entries are summed over
 * K in the same order as the whole's, so the bits are the same. */
static tsr_status weight_grad(tsr_backend *be, size_t f, size_t rows, size_t cols, tsr_ref dy,
                              tsr_ref col, float beta, tsr_ref dw) {
    if (f < 128 && rows < 128 && f % WGRAD_PART_ROWS == 0 && f > WGRAD_PART_ROWS)
        return tsr_op_gemm_batched(be, TSR_NO_TRANS, TSR_TRANS, WGRAD_PART_ROWS, rows, cols, 1.0f, dy,
                                   cols, WGRAD_PART_ROWS * cols, col, cols, 0, beta, dw, rows,
                                   WGRAD_PART_ROWS * rows, f / WGRAD_PART_ROWS);
    return tsr_op_gemm(be, TSR_NO_TRANS, TSR_TRANS, f, rows, cols, 1.0f, dy, cols, col, cols, beta, dw,
                       rows);
}

static tsr_status backward(const tsr_layer_run *r) {
    const tsr_layer *l = r->l;
    size_t rows = l->in_c * l->kh * l->kw, ohw = l->out_h * l->out_w, f = l->units, n = r->n;
    size_t in = tsr_layer_in_size(l), step = chunk_images(l, r->be, n);
    tsr_backend *be = r->be;
    if (!r->accumulate) TSR_TRY(tsr_op_fill(be, r->grad[1], f, 0.0f));
    TSR_TRY(tsr_op_bias_grad(be, n, f, ohw, r->dout, r->grad[1]));
    tsr_conv_geom whole = geom(l, n);
    if (tsr_op_conv_direct(be, &whole, f, TSR_CONV_BACKWARD)) {
        tsr_ref none = {NULL, 0};
        return tsr_op_conv_backward(be, &whole, f, r->in[0], r->param[0], r->dout, r->accumulate ? 1.0f : 0.0f,
                                    r->grad[0], r->add_din[0] ? 1.0f : 0.0f, r->want_din[0] ? r->din[0] : none);
    }
    /* the backend's weight gradient from the columns reads dY as it is (few-channel layers) */
    int wgrad_cols = tsr_op_conv_wgrad_cols(be, &whole, f);
    for (size_t b = 0; b < n; b += step) {
        size_t m = n - b < step ? n - b : step, cols = m * ohw;
        tsr_ref col = tsr_ref_offset(r->ws, f * step * ohw);
        tsr_ref din = tsr_ref_offset(r->din[0], b * in), dy = tsr_ref_offset(r->dout, b * f * ohw);
        tsr_conv_geom g = geom(l, m);
        float beta = b || r->accumulate ? 1.0f : 0.0f;
        TSR_TRY(tsr_op_im2col(be, &g, tsr_ref_offset(r->in[0], b * in), col));
        if (wgrad_cols) TSR_TRY(tsr_op_conv_wgrad(be, &g, f, dy, col, beta, r->grad[0]));
        if (wgrad_cols && !r->want_din[0]) continue;
        /* dY as [F][images*OH*OW], then dW (+)= dY col^T */
        TSR_TRY(tsr_op_transpose(be, m, f, ohw, dy, r->ws));
        if (!wgrad_cols) TSR_TRY(weight_grad(be, f, rows, cols, r->ws, col, beta, r->grad[0]));
        if (!r->want_din[0]) continue;
        /* d(col) = W^T dY, in the columns' room (no longer needed), folded back into dX */
        TSR_TRY(tsr_op_conv_dinput(be, &g, f, r->param[0], r->ws, col, r->add_din[0], din));
    }
    return TSR_OK;
}

const tsr_layer_ops tsr_layer_conv2d = {
    .kind = TSR_LAYER_CONV2D,
    .type = "conv2d",
    .match = match,
    .parse_arg = parse_arg,
    .parse_option = parse_option,
    .print = print,
    .shape = shape,
    .params = params,
    .workspace = workspace,
    .accumulate_din = 1,
    .flops = flops,
    .half_out = 1,
    .forward = forward,
    .backward = backward,
};
