/* tpcopy and tpreduce — Megatron-LM's f and g operators around a block's split matrices
 * (Shoeybi et al. 2019). Over a tensor-parallel group of K ranks, each holding a share of the
 * heads and hidden units:
 *   tpcopy:   forward the identity (every rank has the whole input); backward the sum of the
 *             ranks' input gradients (each computed one from its share of the columns).
 *   tpreduce: forward the sum of the ranks' partial outputs (their row shares of the
 *             projection) plus "bias" [C], added once, after the sum; backward the identity.
 * Without a group (one rank) both are the identity (tpreduce still adds its bias). */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

tsr_status tsr_tp_allreduce(tsr_comm *tp, tsr_ref r, size_t count) {
    if (!tp || tsr_comm_size(tp) < 2 || !count) return TSR_OK;
    tsr_map m;
    TSR_TRY(tsr_buf_map(r, TSR_DTYPE_F32, count, TSR_MAP_READ_WRITE, NULL, &m));
    tsr_status s = tsr_comm_allreduce(tp, m.data, count, NULL);
    tsr_status u = tsr_buf_unmap(&m);
    return s != TSR_OK ? s : u;
}

static tsr_status pass_through(tsr_ref dst, tsr_ref src, size_t count) {
    return tsr_ref_same(dst, src) ? TSR_OK : tsr_ref_copy(dst, src, TSR_DTYPE_F32, count);
}

/* ---- tpcopy ---- */

static int copy_match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 6 && !strncmp(name, "tpcopy", 6);
}

static void copy_print(const tsr_layer *l, char *buf, size_t size) {
    (void)l;
    snprintf(buf, size, "tpcopy");
}

static tsr_status same_shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    (void)ctx;
    l->out_c = in[0].c, l->out_h = in[0].h, l->out_w = in[0].w;
    return TSR_OK;
}

static void copy_flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = 0;
    *b = n * tsr_layer_out_size(l);
}

static tsr_status copy_forward(const tsr_layer_run *r) {
    return pass_through(r->out, r->in[0], r->n * tsr_layer_out_size(r->l));
}

static tsr_status copy_backward(const tsr_layer_run *r) {
    if (!r->want_din[0]) return TSR_OK;
    size_t count = r->n * tsr_layer_out_size(r->l);
    TSR_TRY(pass_through(r->din[0], r->dout, count));
    return tsr_tp_allreduce(r->tp, r->din[0], count);
}

const tsr_layer_ops tsr_layer_tpcopy = {
    .kind = TSR_LAYER_TPCOPY,
    .type = "tpcopy",
    .match = copy_match,
    .print = copy_print,
    .shape = same_shape,
    .inplace_din = 1,
    .flops = copy_flops,
    .forward = copy_forward,
    .backward = copy_backward,
};

/* ---- tpreduce ---- */

static int reduce_match(const char *name, size_t n, tsr_layer *l) {
    (void)l;
    return n == 8 && !strncmp(name, "tpreduce", 8);
}

static void reduce_print(const tsr_layer *l, char *buf, size_t size) {
    (void)l;
    snprintf(buf, size, "tpreduce");
}

static tsr_status reduce_shape(tsr_context *ctx, tsr_layer *l, const tsr_tshape *in) {
    TSR_TRY(same_shape(ctx, l, in));
    l->biases = tsr_tshape_dim(in[0]);
    return TSR_OK;
}

static size_t reduce_params(const tsr_layer *l, tsr_param_desc *out) {
    out[0] = tsr_param_1d("bias", l->biases, TSR_INIT_ZERO);
    return 1;
}

static void reduce_flops(const tsr_layer *l, uint64_t n, uint64_t *f, uint64_t *b) {
    *f = 2 * n * tsr_layer_out_size(l);
    *b = n * tsr_layer_out_size(l);
}

static tsr_status reduce_forward(const tsr_layer_run *r) {
    size_t count = r->n * tsr_layer_out_size(r->l), C = r->l->biases;
    TSR_TRY(pass_through(r->out, r->in[0], count));
    TSR_TRY(tsr_tp_allreduce(r->tp, r->out, count));
    return tsr_op_bias_add(r->be, count / C, C, 1, r->param[0], r->out);
}

static tsr_status reduce_backward(const tsr_layer_run *r) {
    size_t count = r->n * tsr_layer_out_size(r->l), C = r->l->biases;
    if (!r->accumulate) TSR_TRY(tsr_op_fill(r->be, r->grad[0], C, 0.0f));
    TSR_TRY(tsr_op_bias_grad(r->be, count / C, C, 1, r->dout, r->grad[0]));
    if (!r->want_din[0]) return TSR_OK;
    return pass_through(r->din[0], r->dout, count);
}

const tsr_layer_ops tsr_layer_tpreduce = {
    .kind = TSR_LAYER_TPREDUCE,
    .type = "tpreduce",
    .match = reduce_match,
    .print = reduce_print,
    .shape = reduce_shape,
    .params = reduce_params,
    .inplace_din = 1,
    .flops = reduce_flops,
    .forward = reduce_forward,
    .backward = reduce_backward,
};
