/* Mixed precision on every backend: in a 16-bit mode (tsr_backend_set_precision) the inputs
 * of each GEMM, and attention's q, k, v and dout, are rounded to bf16 or fp16 by the
 * backend's round16 into be->round_buf before the float32 product, so the products see
 * exactly the 16-bit values while accumulating in float32 (bf16 x bf16 and fp16 x fp16
 * products are exact in float32: only the summation order can differ from a 16-bit GEMM
 * with float32 accumulation). Attention's probabilities P and their gradient dS, made inside
 * the backends' attention, are rounded there (backward recomputes P the same way, rounded too).
 * A backend whose GEMM takes 16-bit inputs itself (gemm_native: the host's OpenBLAS
 * cblas_sbgemm) gets its operands unrounded. Operands larger than TSR_ROUND_CAP_FLOATS are
 * rounded and multiplied a block at a time (gemm16_blocked). */
#include "backends/backend.h"
#include "lib/core/internal.h"
#include "lib/core/precision.h"

tsr_status tsr_backend_set_precision(tsr_backend *be, tsr_precision p) {
    if (!be) return TSR_ERR_INVALID_ARG;
    TSR_TRY(tsr_precision_check(be->ctx, "", p));
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

/* One operand of a blocked GEMM: stored row-major (rows of op(X) when not transposed), with
 * the block of op(X) rows [r0, r0 + nr) and columns [c0, c0 + nc) rounded into dst (compact,
 * leading dimension = its stored columns). */
typedef struct operand {
    tsr_ref x;
    size_t ld;
    int trans;
} operand;

static tsr_status round_block(tsr_backend *be, const operand *o, size_t r0, size_t nr, size_t c0, size_t nc,
                              tsr_ref dst, size_t *ld) {
    size_t rows = o->trans ? nc : nr, cols = o->trans ? nr : nc;
    size_t off = o->trans ? c0 * o->ld + r0 : r0 * o->ld + c0;
    *ld = cols;
    return be->iface->round16_block(be, be->precision, rows, cols, tsr_ref_offset(o->x, off), o->ld, dst, cols);
}

/* C = alpha op(A) op(B) + beta C with rounded operands of at most `room` floats: blocks along
 * the dimension that needs the fewest (m and n blocks write disjoint parts of C once; k blocks
 * add into C, so they take the k sums in pieces: the same products, another summation order). */
static tsr_status gemm16_blocked(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n, size_t k,
                                 float alpha, tsr_ref a, size_t lda, tsr_ref b, size_t ldb, float beta,
                                 tsr_ref c, size_t ldc, size_t room) {
    size_t bm = room > k * n ? (room - k * n) / k : 0, bn = room > m * k ? (room - m * k) / k : 0;
    size_t bk = room / (m + n);
    size_t cm = bm ? (m + bm - 1) / bm : SIZE_MAX, cn = bn ? (n + bn - 1) / bn : SIZE_MAX;
    size_t ck = bk ? (k + bk - 1) / bk : SIZE_MAX;
    operand A = {a, lda, ta != TSR_NO_TRANS}, B = {b, ldb, tb != TSR_NO_TRANS};
    tsr_ref buf = tsr_ref_at(be->round_buf, 0);
    size_t la, lb;
    if (cm <= cn && cm <= ck) { /* row blocks of A; B rounded once */
        TSR_TRY(round_block(be, &B, 0, k, 0, n, buf, &lb));
        tsr_ref rb = buf, ra = tsr_ref_offset(buf, k * n);
        for (size_t i = 0; i < m; i += bm) {
            size_t h = m - i < bm ? m - i : bm;
            TSR_TRY(round_block(be, &A, i, h, 0, k, ra, &la));
            TSR_TRY(be->iface->gemm(be, ta, tb, h, n, k, alpha, ra, la, rb, lb, beta, tsr_ref_offset(c, i * ldc), ldc));
        }
    } else if (cn <= ck) { /* column blocks of B; A rounded once */
        TSR_TRY(round_block(be, &A, 0, m, 0, k, buf, &la));
        tsr_ref ra = buf, rb = tsr_ref_offset(buf, m * k);
        for (size_t j = 0; j < n; j += bn) {
            size_t w = n - j < bn ? n - j : bn;
            TSR_TRY(round_block(be, &B, 0, k, j, w, rb, &lb));
            TSR_TRY(be->iface->gemm(be, ta, tb, m, w, k, alpha, ra, la, rb, lb, beta, tsr_ref_offset(c, j), ldc));
        }
    } else { /* k blocks, accumulated into C */
        for (size_t l = 0; l < k; l += bk) {
            size_t d = k - l < bk ? k - l : bk;
            tsr_ref ra = buf, rb = tsr_ref_offset(buf, m * d);
            TSR_TRY(round_block(be, &A, 0, m, l, d, ra, &la));
            TSR_TRY(round_block(be, &B, l, d, 0, n, rb, &lb));
            TSR_TRY(be->iface->gemm(be, ta, tb, m, n, d, alpha, ra, la, rb, lb, l ? 1.0f : beta, c, ldc));
        }
    }
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
        size_t have = be->round_buf ? be->round_buf->bytes / 4 : 0;
        size_t cap = be->round_cap ? be->round_cap : TSR_ROUND_CAP_FLOATS;
        size_t room = have > cap ? have : cap;
        if (batch == 1 && m && n && sa + sb > room) {
            if (room < m + n) room = m + n; /* one k at a time always fits */
            TSR_TRY(tsr_backend_round_room(be, room));
            return gemm16_blocked(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, room);
        }
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
                                           tsr_ref qkv, tsr_ref scratch, tsr_ref out) {
    TSR_TRY(tsr_backend_round_room(be, nqkv));
    tsr_ref rq = tsr_ref_at(be->round_buf, 0);
    TSR_TRY(be->iface->round16(be, be->precision, nqkv, qkv, rq));
    return be->iface->attention_forward(be, g, rq, scratch, out);
}

tsr_status tsr_backend_attention16_backward(tsr_backend *be, const tsr_attn_geom *g, size_t nqkv,
                                            size_t nout, tsr_ref qkv, tsr_ref dout,
                                            tsr_ref scratch, tsr_ref dqkv) {
    TSR_TRY(tsr_backend_round_room(be, nqkv + nout));
    tsr_ref rq = tsr_ref_at(be->round_buf, 0), rd = tsr_ref_at(be->round_buf, nqkv);
    TSR_TRY(be->iface->round16(be, be->precision, nqkv, qkv, rq));
    TSR_TRY(be->iface->round16(be, be->precision, nout, dout, rd));
    return be->iface->attention_backward(be, g, rq, rd, scratch, dqkv);
}
