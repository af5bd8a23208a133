/* Shared by test_mma.c (emulated on PoCL, selection) and test_mma_hw.c (mma.sync on NVIDIA):
 * the cases of the tensor-core GEMM and their double reference. Included once per test. */
#ifndef TSR_TEST_MMA_CHECK_H
#define TSR_TEST_MMA_CHECK_H
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/core/precision.h"
#include "support/test_util.h"
#if TSR_WITH_OPENCL
#include "backends/opencl/opencl.h"

typedef enum variant { V_BF16, V_FP16, V_TF32 } variant;
static const char *const variant_names[] = {"bf16", "fp16", "tf32"};

/* tf32: float32 rounded to nearest even at 10 mantissa bits (mma.cl's put_elem) */
static float round_tf32(float x) {
    uint32_t u = tsr_f32_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return x;
    u += 0xFFFu + (u >> 13 & 1u);
    return tsr_bits_f32(u & 0xFFFFE000u);
}

static void round_operand(variant v, float *dst, const float *src, size_t n) {
    if (v == V_TF32)
        for (size_t i = 0; i < n; i++) dst[i] = round_tf32(src[i]);
    else
        tsr_round_n(v == V_BF16 ? TSR_PRECISION_BF16 : TSR_PRECISION_FP16, dst, src, n);
}

typedef struct gemm_case {
    int ta, tb;
    size_t m, n, k, batch;
    float alpha, beta;
    int direct; /* 1: be->iface->gemm(_batched), not through tsr_op_gemm's checks */
} gemm_case;

static const gemm_case cases[] = {
    {0, 0, 1, 1, 1, 1, 1.0f, 0.0f, 0},
    {0, 0, 17, 9, 33, 1, 1.5f, -0.5f, 0},
    {1, 0, 130, 129, 45, 1, 1.0f, 0.0f, 0},   /* two tiles each way, k tail */
    {0, 1, 129, 131, 70, 1, 0.5f, 2.0f, 0},
    {1, 1, 33, 257, 17, 1, 1.0f, 1.0f, 0},
    {1, 0, 7, 130, 300, 1, -1.0f, 0.25f, 0},  /* ten k slices, the last of 12 */
    {0, 1, 20, 24, 40, 3, 1.0f, 0.0f, 0},     /* batched */
    {1, 1, 45, 19, 23, 2, 1.0f, -1.0f, 0},
    {0, 0, 66, 35, 51, 2, 1.0f, 0.5f, 1},     /* the kernel's own rounding */
};

/* Runs `cs` on be in variant v; fails with the worst element when beyond the bound. */
static void run_case(tsr_backend *be, variant v, const gemm_case *cs, uint64_t seed) {
    const char *dev = be->device.id;
    size_t ar = cs->ta ? cs->k : cs->m, ac = cs->ta ? cs->m : cs->k; /* A as stored */
    size_t br = cs->tb ? cs->n : cs->k, bc = cs->tb ? cs->k : cs->n;
    size_t lda = ac + 3, ldb = bc + 2, ldc = cs->n + 5, off = 5;
    size_t sa = ar * lda + 7, sb = br * ldb + 1, sc = cs->m * ldc + 3;
    size_t na = off + cs->batch * sa, nb = off + cs->batch * sb, nc = off + cs->batch * sc;
    float *a = malloc(na * 4), *b = malloc(nb * 4), *c = malloc(nc * 4), *got = malloc(nc * 4);
    float *ra = malloc(na * 4), *rb = malloc(nb * 4);
    double *ref = malloc(nc * sizeof(double)), *bound = malloc(nc * sizeof(double));
    assert_true(a && b && c && got && ra && rb && ref && bound);
    tsr_test_fill_uniform(a, na, seed, -1, 1);
    tsr_test_fill_uniform(b, nb, seed + 1, -1, 1);
    tsr_test_fill_uniform(c, nc, seed + 2, -1, 1);
    if (cs->beta == 0.0f) /* beta 0: C is not read, so NaN there stays harmless */
        for (size_t i = 0; i < nc; i++) c[i] = NAN;
    round_operand(v, ra, a, na);
    round_operand(v, rb, b, nb);
    for (size_t i = 0; i < nc; i++) {
        ref[i] = c[i];
        bound[i] = 0;
    }
    for (size_t q = 0; q < cs->batch; q++)
        for (size_t i = 0; i < cs->m; i++)
            for (size_t j = 0; j < cs->n; j++) {
                double acc = 0, mag = 0;
                for (size_t p = 0; p < cs->k; p++) {
                    double x = ra[off + q * sa + (cs->ta ? p * lda + i : i * lda + p)];
                    double y = rb[off + q * sb + (cs->tb ? j * ldb + p : p * ldb + j)];
                    acc += x * y;
                    mag += fabs(x * y);
                }
                size_t o = off + q * sc + i * ldc + j;
                double cv = cs->beta != 0.0f ? (double)cs->beta * c[o] : 0.0;
                ref[o] = cs->alpha * acc + cv;
                /* float32 accumulation of exact products, in any order */
                bound[o] = (cs->k + 4) * ldexp(1.0, -22) * (fabs(cs->alpha) * mag + fabs(cv)) +
                           1e-30;
            }
    tsr_buf *ba, *bb, *bcb;
    assert_int_equal(tsr_buf_alloc(be, na * 4, &ba), TSR_OK);
    assert_int_equal(tsr_buf_alloc(be, nb * 4, &bb), TSR_OK);
    assert_int_equal(tsr_buf_alloc(be, nc * 4, &bcb), TSR_OK);
    assert_int_equal(tsr_buf_write(ba, 0, a, na * 4), TSR_OK);
    assert_int_equal(tsr_buf_write(bb, 0, b, nb * 4), TSR_OK);
    assert_int_equal(tsr_buf_write(bcb, 0, c, nc * 4), TSR_OK);
    tsr_trans ta = cs->ta ? TSR_TRANS : TSR_NO_TRANS, tb = cs->tb ? TSR_TRANS : TSR_NO_TRANS;
    tsr_ref ra0 = tsr_ref_at(ba, off), rb0 = tsr_ref_at(bb, off), rc0 = tsr_ref_at(bcb, off);
    unsigned long calls = tsr_opencl_state(be)->mma_calls;
    tsr_status st;
    if (cs->direct && cs->batch == 1)
        st = be->iface->gemm(be, ta, tb, cs->m, cs->n, cs->k, cs->alpha, ra0, lda, rb0, ldb,
                             cs->beta, rc0, ldc);
    else if (cs->direct)
        st = be->iface->gemm_batched(be, ta, tb, cs->m, cs->n, cs->k, cs->alpha, ra0, lda, sa, rb0,
                                     ldb, sb, cs->beta, rc0, ldc, sc, cs->batch);
    else
        st = tsr_op_gemm_batched(be, ta, tb, cs->m, cs->n, cs->k, cs->alpha, ra0, lda, sa, rb0, ldb,
                                 sb, cs->beta, rc0, ldc, sc, cs->batch);
    if (st != TSR_OK) fail_msg("%s %s: %s", dev, variant_names[v], tsr_context_last_error(be->ctx));
    assert_int_equal(tsr_buf_read(bcb, 0, got, nc * 4), TSR_OK);
    /* it ran through mma.cl, once per launch */
    assert_int_equal(tsr_opencl_state(be)->mma_calls, calls + 1);
    for (size_t i = 0; i < nc; i++) {
        int inside = 0;
        if (i >= off) {
            size_t q = (i - off) / sc, r = (i - off) % sc;
            inside = q < cs->batch && r / ldc < cs->m && r % ldc < cs->n;
        }
        if (!inside) { /* outside the matrices: untouched, NaN included */
            if (memcmp(&got[i], &c[i], 4) != 0)
                fail_msg("%s %s m=%zu n=%zu k=%zu: element %zu outside C changed: %g (was %g)", dev,
                         variant_names[v], cs->m, cs->n, cs->k, i, got[i], c[i]);
            continue;
        }
        if (!(fabs(got[i] - ref[i]) <= bound[i]))
            fail_msg("%s %s ta=%d tb=%d m=%zu n=%zu k=%zu batch=%zu: element %zu is %.9g, want "
                     "%.9g (bound %.3g)", dev, variant_names[v], cs->ta, cs->tb, cs->m, cs->n,
                     cs->k, cs->batch, i, got[i], ref[i], bound[i]);
    }
    tsr_buf_free(ba);
    tsr_buf_free(bb);
    tsr_buf_free(bcb);
    free(a);
    free(b);
    free(c);
    free(got);
    free(ra);
    free(rb);
    free(ref);
    free(bound);
}

/* The kernel's own rounding, bit for bit: C = A * B with k = 1 (one product, exact in float32,
 * no summation order) through tsr_op_gemm, which hands mma.cl unrounded operands (gemm_native).
 * A holds the awkward values: ties in every precision, fp16 subnormals and its overflow
 * midpoint, float32 subnormals, infinities, a NaN; B holds 1, -0.5 and random values. */
static void run_rounding(tsr_backend *be, variant v) {
    enum { M = 40, N = 5 };
    static const uint32_t special[] = {
        0x3F808000u, 0x3F818000u, 0xBF808000u, /* bf16 ties: to even, up, negative */
        0x3F801000u, 0x3F803000u,              /* fp16 ties (13 bits below its mantissa) */
        0x3F800800u, 0x3F801800u,              /* below / above half an fp16 ulp */
        0x33800000u, 0x33C00000u, 0x337FFFFFu, /* fp16 subnormal range: 2^-24 and around */
        0x477FF000u, 0x477FEFFFu,              /* 65520 (fp16 overflow midpoint), just below */
        0x00000001u, 0x80400000u,              /* float32 subnormals */
        0x7F800000u, 0xFF800000u, 0x7FC00000u, /* inf, -inf, NaN */
        0x7F7FFFFFu, 0x00000000u, 0x80000000u};
    float a[M], b[N] = {1.0f, -0.5f, 0, 0, 0}, got[M * N], ra[M], rb[N];
    tsr_test_fill_uniform(a, M, 42, -4, 4);
    tsr_test_fill_uniform(b + 2, N - 2, 43, -2, 2);
    for (size_t i = 0; i < TSR_ARRAY_SIZE(special); i++) a[i] = tsr_bits_f32(special[i]);
    round_operand(v, ra, a, M);
    round_operand(v, rb, b, N);
    tsr_buf *buf;
    assert_int_equal(tsr_buf_alloc(be, sizeof a + sizeof b + sizeof got, &buf), TSR_OK);
    assert_int_equal(tsr_buf_write(buf, 0, a, sizeof a), TSR_OK);
    assert_int_equal(tsr_buf_write(buf, sizeof a, b, sizeof b), TSR_OK);
    assert_int_equal(tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, M, N, 1, 1.0f, tsr_ref_at(buf, 0),
                                 1, tsr_ref_at(buf, M), N, 0.0f, tsr_ref_at(buf, M + N), N),
                     TSR_OK);
    assert_int_equal(tsr_buf_read(buf, sizeof a + sizeof b, got, sizeof got), TSR_OK);
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < N; j++) {
            float want = 0.0f + ra[i] * rb[j], g = got[i * N + j]; /* sums start at +0 */
            if (isnan(want) ? !isnan(g) : memcmp(&want, &g, 4) != 0)
                fail_msg("%s %s: %a * %a gave %a, want %a (operands rounded %a, %a)",
                         be->device.id, variant_names[v], a[i], b[j], g, want, ra[i], rb[j]);
        }
    tsr_buf_free(buf);
}

/* Every case in every variant on be (created with tensor cores; precision set per variant). */
static void run_all(tsr_context *ctx, const tsr_device_info *info, int emulate) {
    for (int v = V_BF16; v <= V_TF32; v++) {
        tsr_opencl_options opts = {NULL, 0, TSR_CL_BATCHED_AUTO,
                                   v == V_TF32 ? TSR_CL_MMA_TF32 : TSR_CL_MMA_16, emulate};
        tsr_backend *be;
        assert_int_equal(tsr_backend_opencl_create_ex(ctx, info, &opts, &be), TSR_OK);
        assert_int_not_equal(tsr_opencl_state(be)->mma, TSR_CL_MMA_OFF);
        tsr_precision p = v == V_BF16 ? TSR_PRECISION_BF16
                          : v == V_FP16 ? TSR_PRECISION_FP16 : TSR_PRECISION_FP32;
        assert_int_equal(tsr_backend_set_precision(be, p), TSR_OK);
        run_rounding(be, (variant)v);
        for (size_t i = 0; i < TSR_ARRAY_SIZE(cases); i++)
            run_case(be, (variant)v, &cases[i], 100 + 10 * i);
        tsr_backend_free(be);
    }
}

static tsr_context *context(int tensor_cores) {
    tsr_context *ctx;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_HWLOC | TSR_CONTEXT_NO_ENV;
    o.log_level = TSR_LOG_ERROR;
    o.tensor_cores = tensor_cores;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    return ctx;
}

/* NVIDIA compute capability of an OpenCL device (0: not NVIDIA), read by a plain backend. */
static int device_cc(tsr_context *ctx, const tsr_device_info *info) {
    tsr_backend *be;
    assert_int_equal(tsr_backend_opencl_create_ex(ctx, info, NULL, &be), TSR_OK);
    int cc = tsr_opencl_state(be)->nv_cc;
    tsr_backend_free(be);
    return cc;
}

#endif /* TSR_WITH_OPENCL */
#endif
