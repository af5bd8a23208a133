/* Mixed precision on every backend: in a 16-bit mode (tsr_backend_set_precision) the inputs
 * of each GEMM, and attention's q, k, v and dout, are rounded to bf16 or fp16 by the
 * backend's round16 into be->round_buf before the float32 product, so the products see
 * exactly the 16-bit values while accumulating in float32 (bf16 x bf16 and fp16 x fp16
 * products are exact in float32: only the summation order can differ from a 16-bit GEMM
 * with float32 accumulation). Attention's probabilities P and their gradient dS, made inside
 * the backends' attention, are rounded there (P is kept rounded for the backward).
 * A backend whose GEMM takes 16-bit inputs itself (gemm_native: the host's OpenBLAS
 * cblas_sbgemm) gets its operands unrounded. */
#include "backends/backend.h"
#include "lib/core/internal.h"

tsr_status tsr_backend_set_precision(tsr_backend *be, tsr_precision p) {
    if (!be) return TSR_ERR_INVALID_ARG;
    if (!tsr_precision_name(p))
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG,
                         "precision %d is not one of fp32 (0), bf16 (1), fp16 (2)", (int)p);
    be->precision = p;
    return TSR_OK;
}

tsr_status tsr_backend_round_room(tsr_backend *be, size_t floats) {
    size_t bytes;
    if (tsr_mul_size(floats, sizeof(float), &bytes) || bytes > SIZE_MAX / 5 * 4)
        return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "16-bit operands of %zu floats", floats);
    if (be->round_buf && be->round_buf->bytes >= bytes) return TSR_OK;
    tsr_buf_free(be->round_buf); /* queued work on it finishes first (OpenCL releases late) */
    be->round_buf = NULL;
    TSR_TRY(tsr_buf_alloc(be, bytes + bytes / 4, &be->round_buf));
    tsr_buf_set_name(be->round_buf, "16-bit operand scratch");
    return TSR_OK;
}

tsr_status tsr_backend_gemm16(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                              size_t k, float alpha, tsr_ref a, size_t lda, size_t stride_a,
                              tsr_ref b, size_t ldb, size_t stride_b, float beta, tsr_ref c,
                              size_t ldc, size_t stride_c, size_t batch) {
    int native = be->iface->gemm_native && be->iface->gemm_native(be, be->precision);
    if (k && alpha != 0.0f && !native) {
        size_t sa = tsr_matrix_span(ta ? k : m, ta ? m : k, lda, stride_a, batch);
        size_t sb = tsr_matrix_span(tb ? n : k, tb ? k : n, ldb, stride_b, batch);
        TSR_TRY(tsr_backend_round_room(be, sa + sb));
        tsr_ref ra = tsr_ref_at(be->round_buf, 0), rb = tsr_ref_at(be->round_buf, sa);
        TSR_TRY(be->iface->round16(be, be->precision, sa, a, ra));
        TSR_TRY(be->iface->round16(be, be->precision, sb, b, rb));
        a = ra;
        b = rb;
    }
    if (batch == 1) return be->iface->gemm(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return be->iface->gemm_batched(be, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b,
                                   beta, c, ldc, stride_c, batch);
}

tsr_status tsr_backend_attention16_forward(tsr_backend *be, const tsr_attn_geom *g, size_t nqkv,
                                           tsr_ref qkv, tsr_ref att, tsr_ref out) {
    TSR_TRY(tsr_backend_round_room(be, nqkv));
    tsr_ref rq = tsr_ref_at(be->round_buf, 0);
    TSR_TRY(be->iface->round16(be, be->precision, nqkv, qkv, rq));
    return be->iface->attention_forward(be, g, rq, att, out);
}

tsr_status tsr_backend_attention16_backward(tsr_backend *be, const tsr_attn_geom *g, size_t nqkv,
                                            size_t nout, tsr_ref qkv, tsr_ref att, tsr_ref dout,
                                            tsr_ref scratch, tsr_ref dqkv) {
    TSR_TRY(tsr_backend_round_room(be, nqkv + nout));
    tsr_ref rq = tsr_ref_at(be->round_buf, 0), rd = tsr_ref_at(be->round_buf, nqkv);
    TSR_TRY(be->iface->round16(be, be->precision, nqkv, qkv, rq));
    TSR_TRY(be->iface->round16(be, be->precision, nout, dout, rd));
    return be->iface->attention_backward(be, g, rq, att, rd, scratch, dqkv);
}
