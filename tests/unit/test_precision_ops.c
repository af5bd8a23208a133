/* Mixed precision on every device of the context (host, and OpenCL devices such as PoCL):
 * round16 gives lib/core/precision.c's bits; in a bf16/fp16 mode a GEMM (single, batched with
 * strides, transposed, alpha/beta) gives BITWISE what the same backend gives in fp32 on
 * operands rounded beforehand (same kernels, same summation order), differs from fp32 on the
 * unrounded operands, and stays within float32-accumulation error of a double reference on
 * the rounded operands; attention rounds P and dS too (test_attention16 says how it is
 * checked). Where the host has OpenBLAS's cblas_sbgemm the
 * host's bf16 GEMMs are checked against the reference only (another kernel). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backends/backend.h"
#include "backends/host/host.h"
#include "lib/core/precision.h"
#include "support/test_util.h"

const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\nleak:libclblast\n";
}

#define MAX_DEVICES 8
typedef struct fixture {
    tsr_context *ctx;
    int count;
    tsr_backend *be[MAX_DEVICES];
} fixture;

static int setup(void **state) {
    fixture *fx = calloc(1, sizeof *fx);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_HWLOC; /* OpenCL devices too */
    o.log_level = TSR_LOG_OFF;
    if (!fx || tsr_context_create(&fx->ctx, &o) != TSR_OK) return -1;
    fx->count = tsr_context_device_count(fx->ctx);
    if (fx->count > MAX_DEVICES) fx->count = MAX_DEVICES;
    for (int i = 0; i < fx->count; i++) {
        if (tsr_backend_open(fx->ctx, i, &fx->be[i]) != TSR_OK) {
            fprintf(stderr, "device %d: %s\n", i, tsr_context_last_error(fx->ctx));
            return -1;
        }
        print_message("device %d: %s (%s)\n", i, fx->be[i]->device.id, fx->be[i]->iface->name);
    }
    for (int i = 0; i < fx->count; i++) {
        if (fx->be[i]->device.backend != TSR_BACKEND_HOST) continue;
        const char *name = tsr_host_bf16_gemm_name(fx->be[i]);
        print_message("host bf16 GEMM: %s\n", name);
#if TSR_WITH_DNNL && defined(__x86_64__)
        /* a build with oneDNN on a CPU with bf16 dot products must use them (the cases below
         * then test oneDNN's matmul, split over the pool as the host splits SGEMM) */
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512bf16") && strncmp(name, "oneDNN", 6)) {
            fprintf(stderr, "host bf16 GEMM is \"%s\" on a CPU with AVX512_BF16 and oneDNN built in\n", name);
            return -1;
        }
#endif
    }
    *state = fx;
    return 0;
}

static int teardown(void **state) {
    fixture *fx = *state;
    for (int i = 0; i < fx->count; i++) tsr_backend_free(fx->be[i]);
    tsr_context_free(fx->ctx);
    free(fx);
    return 0;
}

#define OK(be, call)                                                                    \
    do {                                                                                \
        tsr_status s_ = (call);                                                         \
        if (s_ != TSR_OK) fail_msg("[%s] %s: %s", (be)->device.id, #call,               \
                                   tsr_context_last_error((be)->ctx));                  \
    } while (0)

static tsr_buf *upload(tsr_backend *be, const float *x, size_t n) {
    tsr_buf *b = NULL;
    OK(be, tsr_buf_alloc(be, n * 4 + 4, &b));
    OK(be, tsr_write_f32(b, 0, x, n));
    return b;
}
static void download(tsr_buf *b, float *x, size_t n) {
    OK(b->backend, tsr_read_f32(b, 0, x, n));
}

static const tsr_precision PRECS[2] = {TSR_PRECISION_BF16, TSR_PRECISION_FP16};

/* round16 on every backend: the precision module's bits (NaNs: NaN). */
static void test_round16(void **state) {
    fixture *fx = *state;
    const size_t n = 200003;
    float *x = malloc(n * 4), *want = malloc(n * 4), *got = malloc(n * 4);
    uint64_t s = 7;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        /* half of them: random bits; half: values in fp16's range, subnormals included */
        x[i] = i & 1 ? tsr_bits_f32((uint32_t)(s >> 20))
                     : ldexpf((float)(s >> 40) / 16777216.0f, (int)(s % 50) - 30) * (s & 2 ? -1 : 1);
    }
    for (int d = 0; d < fx->count; d++)
        for (int p = 0; p < 2; p++) {
            tsr_backend *be = fx->be[d];
            tsr_buf *b = upload(be, x, n);
            tsr_round_n(PRECS[p], want, x, n);
            OK(be, tsr_op_round16(be, PRECS[p], n - 1, tsr_ref_at(b, 1), tsr_ref_at(b, 1)));
            download(b, got, n);
            assert_true(tsr_f32_bits(got[0]) == tsr_f32_bits(x[0])); /* outside the range */
            for (size_t i = 1; i < n; i++)
                if (isnan(want[i]) ? !isnan(got[i]) : tsr_f32_bits(got[i]) != tsr_f32_bits(want[i]))
                    fail_msg("[%s] round16 %s(%a): got %a want %a", be->device.id,
                             tsr_precision_name(PRECS[p]), (double)x[i], (double)got[i], (double)want[i]);
            assert_int_equal(tsr_op_round16(be, TSR_PRECISION_FP32, 4, tsr_ref_at(b, 0), tsr_ref_at(b, 0)),
                             TSR_ERR_INVALID_ARG);
            assert_non_null(strstr(tsr_context_last_error(be->ctx), "precision 0 is not bf16"));
            tsr_buf_free(b);
        }
    assert_int_equal(tsr_backend_set_precision(fx->be[0], (tsr_precision)3), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(fx->ctx), "precision 3 is not fp32 (0), bf16 (1) or fp16 (2)"));
    free(x), free(want), free(got);
}

typedef struct gemm_case {
    tsr_trans ta, tb;
    size_t m, n, k, lda, ldb, ldc, sa, sb, sc, batch;
    float alpha, beta;
} gemm_case;

static const gemm_case CASES[] = {
    {TSR_NO_TRANS, TSR_NO_TRANS, 37, 29, 301, 301, 29, 29, 0, 0, 0, 1, 1.0f, 0.0f},
    {TSR_TRANS, TSR_NO_TRANS, 64, 48, 200, 70, 48, 50, 0, 0, 0, 1, 0.5f, 1.0f},
    {TSR_NO_TRANS, TSR_TRANS, 130, 140, 90, 96, 90, 140, 0, 0, 0, 1, 1.0f, 0.0f},
    {TSR_TRANS, TSR_TRANS, 17, 19, 23, 17, 23, 19, 0, 0, 0, 1, 2.0f, -1.0f},
    /* a wide and a tall one: blocked along n and along m (test_gemm16_blocked) */
    {TSR_NO_TRANS, TSR_TRANS, 4, 500, 6, 7, 6, 503, 0, 0, 0, 1, 1.0f, 0.5f},
    {TSR_TRANS, TSR_NO_TRANS, 500, 4, 6, 501, 4, 5, 0, 0, 0, 1, -1.0f, 0.0f},
    /* batched: strided A and C, a shared B (stride 0), gaps between matrices */
    {TSR_NO_TRANS, TSR_NO_TRANS, 16, 12, 40, 40, 12, 12, 700, 0, 200, 5, 1.0f, 0.0f},
    {TSR_NO_TRANS, TSR_TRANS, 8, 8, 64, 192, 192, 8, 64, 64, 64, 3, 0.125f, 0.0f},
};

static size_t span(size_t rows, size_t cols, size_t ld, size_t stride, size_t batch) {
    return tsr_matrix_span(rows, cols, ld, stride, batch);
}

static tsr_status run_gemm(tsr_backend *be, const gemm_case *c, tsr_buf *a, tsr_buf *b, tsr_buf *cb) {
    return tsr_op_gemm_batched(be, c->ta, c->tb, c->m, c->n, c->k, c->alpha, tsr_ref_at(a, 0),
                               c->lda, c->sa, tsr_ref_at(b, 0), c->ldb, c->sb, c->beta,
                               tsr_ref_at(cb, 0), c->ldc, c->sc, c->batch);
}

/* Double reference of C on the given operands. */
static void ref_gemm(const gemm_case *c, const float *a, const float *b, const float *c0, double *out) {
    for (size_t t = 0; t < c->batch; t++)
        for (size_t i = 0; i < c->m; i++)
            for (size_t j = 0; j < c->n; j++) {
                double acc = 0;
                for (size_t l = 0; l < c->k; l++) {
                    double av = a[t * c->sa + (c->ta ? l * c->lda + i : i * c->lda + l)];
                    double bv = b[t * c->sb + (c->tb ? j * c->ldb + l : l * c->ldb + j)];
                    acc += av * bv;
                }
                size_t o = t * c->sc + i * c->ldc + j;
                out[o] = c->alpha * acc + (c->beta != 0.0f ? c->beta * (double)c0[o] : 0.0);
            }
}

static void test_gemm16(void **state) {
    fixture *fx = *state;
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const gemm_case *c = &CASES[ci];
        size_t na = span(c->ta ? c->k : c->m, c->ta ? c->m : c->k, c->lda, c->sa, c->batch);
        size_t nb = span(c->tb ? c->n : c->k, c->tb ? c->k : c->n, c->ldb, c->sb, c->batch);
        size_t nc = span(c->m, c->n, c->ldc, c->sc, c->batch);
        float *a = malloc(na * 4), *b = malloc(nb * 4), *c0 = malloc(nc * 4), *ar = malloc(na * 4),
              *br = malloc(nb * 4), *got = malloc(nc * 4), *want = malloc(nc * 4), *plain = malloc(nc * 4);
        double *ref = calloc(nc, sizeof *ref);
        tsr_test_fill_uniform(a, na, 11 + ci, -2.0f, 2.0f);
        tsr_test_fill_uniform(b, nb, 23 + ci, -2.0f, 2.0f);
        tsr_test_fill_uniform(c0, nc, 37 + ci, -1.0f, 1.0f);
        for (int p = 0; p < 2; p++) {
            tsr_round_n(PRECS[p], ar, a, na);
            tsr_round_n(PRECS[p], br, b, nb);
            memset(ref, 0, nc * sizeof *ref);
            ref_gemm(c, ar, br, c0, ref);
            for (int d = 0; d < fx->count; d++) {
                tsr_backend *be = fx->be[d];
                int native = be->iface->gemm_native && be->iface->gemm_native(be, PRECS[p]);
                tsr_buf *ba = upload(be, a, na), *bb = upload(be, b, nb), *bar = upload(be, ar, na),
                        *bbr = upload(be, br, nb), *bc = upload(be, c0, nc);
                /* fp32 on the rounded operands, fp32 on the raw ones, then the 16-bit mode */
                OK(be, run_gemm(be, c, bar, bbr, bc));
                download(bc, want, nc);
                OK(be, tsr_write_f32(bc, 0, c0, nc));
                OK(be, run_gemm(be, c, ba, bb, bc));
                download(bc, plain, nc);
                OK(be, tsr_write_f32(bc, 0, c0, nc));
                OK(be, tsr_backend_set_precision(be, PRECS[p]));
                tsr_status s = run_gemm(be, c, ba, bb, bc);
                OK(be, tsr_backend_set_precision(be, TSR_PRECISION_FP32));
                OK(be, s);
                download(bc, got, nc);
                size_t differs = 0;
                for (size_t t = 0; t < c->batch; t++)
                    for (size_t i = 0; i < c->m; i++)
                        for (size_t j = 0; j < c->n; j++) {
                            size_t o = t * c->sc + i * c->ldc + j;
                            double tol = 1e-5 * (double)c->k * 4.0 * fabs((double)c->alpha) + 1e-5;
                            if (!native && tsr_f32_bits(got[o]) != tsr_f32_bits(want[o]))
                                fail_msg("[%s] %s case %zu C[%zu][%zu][%zu]: %a, fp32 on rounded "
                                         "operands %a", be->device.id, tsr_precision_name(PRECS[p]),
                                         ci, t, i, j, (double)got[o], (double)want[o]);
                            if (fabs(got[o] - ref[o]) > tol)
                                fail_msg("[%s] %s case %zu C[%zu][%zu][%zu]: %.9g, reference %.9g",
                                         be->device.id, tsr_precision_name(PRECS[p]), ci, t, i, j,
                                         (double)got[o], ref[o]);
                            differs += got[o] != plain[o];
                        }
                /* the rounding happened: most outputs differ from fp32 on raw operands */
                if (differs * 2 < c->m * c->n * c->batch)
                    fail_msg("[%s] %s case %zu: only %zu of %zu outputs differ from fp32", be->device.id,
                             tsr_precision_name(PRECS[p]), ci, differs, c->m * c->n * c->batch);
                tsr_buf_free(ba), tsr_buf_free(bb), tsr_buf_free(bar), tsr_buf_free(bbr), tsr_buf_free(bc);
            }
        }
        free(a), free(b), free(c0), free(ar), free(br), free(got), free(want), free(plain), free(ref);
    }
}

/* Operands over the backend's rounding room go by blocks: with the room cut to a few hundred
 * floats, every single-GEMM case (each transpose pair, alpha and beta) splits along m, n or
 * k; the results stay within float32-accumulation error of the double reference on the rounded
 * operands (blocks may sum in another order) and still differ from fp32 on the raw ones. And
 * round16_block on a strided block gives round16's bits, leaving the gaps alone. */
static void test_gemm16_blocked(void **state) {
    fixture *fx = *state;
    static const size_t rooms[] = {100, 700, 3000};
    for (size_t ci = 0; ci < sizeof CASES / sizeof *CASES; ci++) {
        const gemm_case *c = &CASES[ci];
        if (c->batch != 1) continue;
        size_t na = span(c->ta ? c->k : c->m, c->ta ? c->m : c->k, c->lda, 0, 1);
        size_t nb = span(c->tb ? c->n : c->k, c->tb ? c->k : c->n, c->ldb, 0, 1);
        size_t nc = span(c->m, c->n, c->ldc, 0, 1);
        float *a = malloc(na * 4), *b = malloc(nb * 4), *c0 = malloc(nc * 4), *ar = malloc(na * 4),
              *br = malloc(nb * 4), *got = malloc(nc * 4);
        double *ref = calloc(nc, sizeof *ref);
        tsr_test_fill_uniform(a, na, 51 + ci, -2.0f, 2.0f);
        tsr_test_fill_uniform(b, nb, 63 + ci, -2.0f, 2.0f);
        tsr_test_fill_uniform(c0, nc, 77 + ci, -1.0f, 1.0f);
        for (int p = 0; p < 2; p++) {
            tsr_round_n(PRECS[p], ar, a, na);
            tsr_round_n(PRECS[p], br, b, nb);
            memset(ref, 0, nc * sizeof *ref);
            ref_gemm(c, ar, br, c0, ref);
            for (int d = 0; d < fx->count; d++)
                for (size_t r = 0; r < sizeof rooms / sizeof *rooms; r++) {
                    tsr_backend *be = fx->be[d];
                    if (be->iface->gemm_native && be->iface->gemm_native(be, PRECS[p])) continue;
                    tsr_buf *ba = upload(be, a, na), *bb = upload(be, b, nb), *bc = upload(be, c0, nc);
                    tsr_buf_free(be->round_buf); /* start from an empty room */
                    be->round_buf = NULL;
                    be->round_cap = rooms[r];
                    OK(be, tsr_backend_set_precision(be, PRECS[p]));
                    tsr_status s = run_gemm(be, c, ba, bb, bc);
                    OK(be, tsr_backend_set_precision(be, TSR_PRECISION_FP32));
                    be->round_cap = 0;
                    OK(be, s);
                    size_t room = rooms[r] > c->m + c->n ? rooms[r] : c->m + c->n;
                    if (be->round_buf->bytes > room * 5) /* round_room adds a quarter */
                        fail_msg("[%s] case %zu: %zu bytes of room for a cap of %zu floats", be->device.id, ci,
                                 be->round_buf->bytes, room);
                    download(bc, got, nc);
                    for (size_t i = 0; i < c->m; i++)
                        for (size_t j = 0; j < c->n; j++) {
                            size_t o = i * c->ldc + j;
                            double tol = 1e-5 * (double)c->k * 4.0 * fabs((double)c->alpha) + 1e-5;
                            if (fabs(got[o] - ref[o]) > tol)
                                fail_msg("[%s] %s case %zu room %zu C[%zu][%zu]: %.9g, reference %.9g",
                                         be->device.id, tsr_precision_name(PRECS[p]), ci, rooms[r], i, j,
                                         (double)got[o], ref[o]);
                        }
                    tsr_buf_free(ba), tsr_buf_free(bb), tsr_buf_free(bc);
                }
        }
        free(a), free(b), free(c0), free(ar), free(br), free(got), free(ref);
    }
    /* a 5 x 7 block of a 5 x 11 matrix into a 5 x 9 one */
    float x[55], y[45], want[45];
    tsr_test_fill_uniform(x, 55, 5, -3.0f, 3.0f);
    for (int p = 0; p < 2; p++)
        for (int d = 0; d < fx->count; d++) {
            tsr_backend *be = fx->be[d];
            for (size_t i = 0; i < 45; i++) want[i] = -7.0f;
            for (size_t r = 0; r < 5; r++) tsr_round_n(PRECS[p], want + r * 9 + 1, x + r * 11 + 2, 7);
            tsr_buf *bx = upload(be, x, 55), *by = NULL;
            for (size_t i = 0; i < 45; i++) y[i] = -7.0f;
            by = upload(be, y, 45);
            OK(be, tsr_op_round16_block(be, PRECS[p], 5, 7, tsr_ref_at(bx, 2), 11, tsr_ref_at(by, 1), 9));
            download(by, y, 45);
            for (size_t i = 0; i < 45; i++)
                if (tsr_f32_bits(y[i]) != tsr_f32_bits(want[i]))
                    fail_msg("[%s] round16_block %s y[%zu]: %a want %a", be->device.id, tsr_precision_name(PRECS[p]),
                             i, (double)y[i], (double)want[i]);
            assert_int_equal(tsr_op_round16_block(be, PRECS[p], 5, 7, tsr_ref_at(bx, 2), 6, tsr_ref_at(by, 1), 9),
                             TSR_ERR_SHAPE);
            assert_int_equal(tsr_op_round16_block(be, PRECS[p], 6, 7, tsr_ref_at(bx, 2), 11, tsr_ref_at(by, 1), 9),
                             TSR_ERR_SHAPE);
            tsr_buf_free(bx), tsr_buf_free(by);
        }
}

/* Values of x[0..n) all representable in precision p. */
static int representable(tsr_precision p, const float *x, size_t n) {
    float *r = malloc(n * sizeof *r);
    tsr_round_n(p, r, x, n);
    int same = memcmp(r, x, n * sizeof *r) == 0;
    free(r);
    return same;
}

/* Attention in a 16-bit mode: q, k, v and dout rounded on the way in, the probabilities P
 * (recomputed by the backward) and their gradient dS rounded inside, so the call's scratch
 * holds only 16-bit values after either pass; out is P v of those (bitwise on the host, whose
 * kernel makes the same SGEMM call: its one part here leaves the last pair's P first in the
 * scratch), and out and dqkv stay close to fp32 attention on rounded qkv and dout while
 * differing from fp32 on the raw ones. */
static void test_attention16(void **state) {
    fixture *fx = *state;
    tsr_attn_geom g = {2, 9, 12, 3};
    size_t T = g.tokens, C = g.channels, hs = C / g.heads;
    size_t nqkv = g.batch * T * 3 * C, nout = g.batch * T * C, nscr = TSR_ATTN_SCRATCH(&g);
    float *qkv = malloc(nqkv * 4), *dout = malloc(nout * 4), *qr = malloc(nqkv * 4),
          *dr = malloc(nout * 4), *o[3], *att16 = malloc(nscr * 4), *ds16 = malloc(nscr * 4),
          *pv = malloc(T * hs * 4), *zero = calloc(nscr, 4);
    for (int i = 0; i < 3; i++) o[i] = malloc((nout + nqkv) * 4); /* out, then dqkv */
    tsr_test_fill_uniform(qkv, nqkv, 5, -1.5f, 1.5f);
    tsr_test_fill_uniform(dout, nout, 6, -1.0f, 1.0f);
    for (int p = 0; p < 2; p++) {
        tsr_round_n(PRECS[p], qr, qkv, nqkv);
        tsr_round_n(PRECS[p], dr, dout, nout);
        for (int d = 0; d < fx->count; d++) {
            tsr_backend *be = fx->be[d];
            if (!be->iface->attention_forward) continue;
            tsr_buf *bq = upload(be, qkv, nqkv), *bqr = upload(be, qr, nqkv), *bd = upload(be, dout, nout),
                    *bdr = upload(be, dr, nout), *scr = upload(be, zero, nscr), *out = NULL, *dq = NULL;
            OK(be, tsr_buf_alloc(be, nout * 4, &out));
            OK(be, tsr_buf_alloc(be, nqkv * 4, &dq));
            for (int pass = 0; pass < 3; pass++) { /* fp32 rounded, fp32 raw, 16-bit raw */
                tsr_buf *q = pass == 0 ? bqr : bq, *dd = pass == 0 ? bdr : bd;
                if (pass == 2) { /* clean scratch: what is left there after each pass is 16-bit */
                    OK(be, tsr_buf_write(scr, 0, zero, nscr * 4));
                    OK(be, tsr_backend_set_precision(be, PRECS[p]));
                }
                OK(be, tsr_op_attention_forward(be, &g, tsr_ref_at(q, 0), tsr_ref_at(scr, 0), tsr_ref_at(out, 0)));
                if (pass == 2) download(scr, att16, nscr);
                OK(be, tsr_op_attention_backward(be, &g, tsr_ref_at(q, 0), tsr_ref_at(dd, 0),
                                                 tsr_ref_at(scr, 0), tsr_ref_at(dq, 0)));
                if (pass == 2) download(scr, ds16, nscr);
                OK(be, tsr_backend_set_precision(be, TSR_PRECISION_FP32));
                download(out, o[pass], nout);
                download(dq, o[pass] + nout, nqkv);
            }
            const char *pn = tsr_precision_name(PRECS[p]);
            if (!representable(PRECS[p], att16, nscr))
                fail_msg("[%s] %s attention: P holds values that are not %s", be->device.id, pn, pn);
            if (!representable(PRECS[p], ds16, nscr))
                fail_msg("[%s] %s attention: dS holds values that are not %s", be->device.id, pn, pn);
            size_t lb = g.batch - 1, lh = g.heads - 1, last = lb * T * C + lh * hs; /* the last pair */
            if (!strcmp(be->iface->name, "host")) /* out = P v, the kernel's SGEMM call */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)hs, (int)T, 1.0f,
                            att16, (int)T, qr + lb * T * 3 * C + 2 * C + lh * hs, (int)(3 * C), 0.0f,
                            pv, (int)hs);
            double big = tsr_test_max_abs(o[0], nout + nqkv), tol = (p == 0 ? 2e-2 : 4e-3) * big;
            size_t diff = 0;
            for (size_t i = 0; i < nout + nqkv; i++) {
                if (fabs((double)o[2][i] - o[0][i]) > tol)
                    fail_msg("[%s] %s attention: element %zu %.6g, fp32 on rounded inputs %.6g (tolerance %.3g)",
                             be->device.id, pn, i, (double)o[2][i], (double)o[0][i], tol);
                size_t row = (i - last) / C, col = (i - last) % C;
                if (i >= last && i < nout && col < hs && !strcmp(be->iface->name, "host") &&
                    tsr_f32_bits(o[2][i]) != tsr_f32_bits(pv[row * hs + col]))
                    fail_msg("[host] %s attention: out[%zu] %a, P v %a", pn, i, (double)o[2][i],
                             (double)pv[row * hs + col]);
                diff += o[1][i] != o[2][i];
            }
            if (diff * 2 < nout + nqkv)
                fail_msg("[%s] %s attention: only %zu of %zu outputs differ from fp32", be->device.id,
                         pn, diff, nout + nqkv);
            tsr_buf_free(bq), tsr_buf_free(bqr), tsr_buf_free(bd), tsr_buf_free(bdr);
            tsr_buf_free(out), tsr_buf_free(scr), tsr_buf_free(dq);
        }
    }
    for (int i = 0; i < 3; i++) free(o[i]);
    free(qkv), free(dout), free(qr), free(dr), free(att16), free(ds16), free(pv), free(zero);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round16),
        cmocka_unit_test(test_gemm16_blocked),
        cmocka_unit_test(test_gemm16),
        cmocka_unit_test(test_attention16),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
