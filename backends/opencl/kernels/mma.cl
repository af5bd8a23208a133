/* Tensor-core GEMM for NVIDIA devices of compute capability >= 8.0, through inline PTX
 * mma.sync (OpenCL C 1.2; 16-bit operands handled as ushort). Empty unless compiled with
 * -DTSR_MMA=1 (bf16, m16n8k16), 2 (fp16, m16n8k16) or 3 (tf32, m16n8k8): the backend builds
 * it as a program of its own (mma_opencl.c), never inside the main program.
 * -DTSR_MMA_EMULATE replaces the mma instruction by a scalar computation of the same warp-wide
 * product (local memory, barriers), so every other part -- tiling, edges, transposes, the
 * 16-bit conversions, the fragment registers -- runs and is tested on any device (PoCL).
 *
 * C = alpha*op(A)*op(B) + beta*C, row-major, float32 in and out (C is not read when beta is 0).
 * The operands are rounded to the operand type while staged into local memory, to nearest even
 * exactly as lib/core/precision.h and round16 do (so the backend declares these GEMMs
 * gemm_native and skips round16's passes): the result equals the float32 GEMM of the rounded
 * inputs up to summation order. */
#ifdef TSR_MMA

#define MMA_BF16 1
#define MMA_F16 2
#define MMA_TF32 3

/* Work-group tile BM x BN, k-slices of BK; 2 x 2 warps, each a WM x WN tile of MI x NI
 * instructions (16 x 8 each). */
#define BM 128
#define BN 128
#define BK 32
#define WARPS_M 2
#define WARPS_N 2
#define THREADS (32 * WARPS_M * WARPS_N)
#define WM (BM / WARPS_M)
#define WN (BN / WARPS_N)
#define MI (WM / 16)
#define NI (WN / 8)

#if TSR_MMA == MMA_TF32
#define KSTEP 8       /* m16n8k8 */
#define ELEM uint     /* one tf32 per 32-bit word */
#define SK (BK + 4)   /* words per staged row: fragment reads hit 32 distinct banks */
#else
#define KSTEP 16      /* m16n8k16 */
#define ELEM ushort   /* bf16 or IEEE half bits */
#define SK (BK + 8)   /* 16-bit elements per staged row (20 words): conflict-free */
#endif

/* ---- The fragment layout: the one place that says which lane holds what (PTX ISA, "Matrix
 * fragments for mma.m16n8k16 / mma.m16n8k8"). g = lane >> 2 (groupID), t = lane & 3
 * (threadID_in_group); register r of the fragment, h = its 16-bit half (0: low, the element of
 * the lower index; tf32 registers have h = 0 only).
 *   A (16 x KSTEP, row-major): element (FRAG_A_ROW, FRAG_A_COL)
 *   B (KSTEP x 8, "col": a lane's pair runs along k): element (FRAG_B_K, FRAG_B_N)
 *   C/D (16 x 8 float32, 4 registers i): element (FRAG_C_ROW, FRAG_C_COL) */
#define FRAG_A_ROW(g, t, r, h) ((g) + 8 * ((r) & 1))
#define FRAG_B_N(g, t, r, h) (g)
#if TSR_MMA == MMA_TF32
#define FRAG_A_COL(g, t, r, h) ((t) + 4 * ((r) >> 1))
#define FRAG_B_K(g, t, r, h) ((t) + 4 * (r))
#define FRAG_HALVES 1
#else
#define FRAG_A_COL(g, t, r, h) (2 * (t) + (h) + 8 * ((r) >> 1))
#define FRAG_B_K(g, t, r, h) (2 * (t) + (h) + 8 * (r))
#define FRAG_HALVES 2
#endif
#define FRAG_C_ROW(g, t, i) ((g) + 8 * ((i) >> 1))
#define FRAG_C_COL(g, t, i) (2 * (t) + ((i) & 1))

/* ---- Operand conversions (round to nearest even; NaN stays NaN) ---- */
#if TSR_MMA == MMA_BF16
static void put_elem(__local ELEM *s, int i, float x) {
    uint u = as_uint(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) u |= 0x00400000u; /* quiet NaN keeps its sign */
    else u += 0x7FFFu + ((u >> 16) & 1u);
    s[i] = (ushort)(u >> 16);
}
static float elem_value(__local const ELEM *s, int i) { return as_float((uint)s[i] << 16); }
#elif TSR_MMA == MMA_F16
static void put_elem(__local ELEM *s, int i, float x) { vstore_half_rte(x, i, (__local half *)s); }
static float elem_value(__local const ELEM *s, int i) { return vload_half(i, (__local const half *)s); }
#else
static void put_elem(__local ELEM *s, int i, float x) {
    uint u = as_uint(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) u |= 0x00400000u;
    else u += 0xFFFu + ((u >> 13) & 1u);
    s[i] = u & 0xFFFFE000u; /* tf32: 10 mantissa bits, the low 13 zero */
}
static float elem_value(__local const ELEM *s, int i) { return as_float(s[i]); }
#endif

/* Register r of a fragment whose halves h sit at s[idx(h)]: for 16-bit types the two halves
 * are neighbours (FRAG_*(h = 1) = FRAG_*(h = 0) + 1 at an even index), one 32-bit read. */
#if TSR_MMA == MMA_TF32
#define FRAG_READ(s, i) ((s)[i])
#else
#define FRAG_READ(s, i) (((__local const uint *)(s))[(i) >> 1])
#endif

/* ---- One warp-wide D = A*B + D for every (mi, ni) of the warp tile ---- */
#ifndef TSR_MMA_EMULATE
#ifndef TSR_MMA_ASM
#define TSR_MMA_ASM __asm__ /* the host retries with -DTSR_MMA_ASM=asm if a compiler balks */
#endif
static void mma_tile(float acc[MI][NI][4], const uint a[MI][4], const uint b[NI][2]) {
#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int ni = 0; ni < NI; ni++) {
            float *d = acc[mi][ni];
#if TSR_MMA == MMA_BF16
            TSR_MMA_ASM("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
#elif TSR_MMA == MMA_F16
            TSR_MMA_ASM("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
#else
            TSR_MMA_ASM("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
#endif
                    "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                    : "r"(a[mi][0]), "r"(a[mi][1]), "r"(a[mi][2]), "r"(a[mi][3]),
                      "r"(b[ni][0]), "r"(b[ni][1]));
        }
}
#else
/* The same product without the instruction: every lane scatters its fragment registers into
 * the warp's A and B tiles at the positions the layout macros give, and computes its four D
 * elements from them. `w` holds MI*16*KSTEP + NI*KSTEP*8 floats per warp. */
#define EMU_WARP_FLOATS (MI * 16 * KSTEP + NI * KSTEP * 8)
static float half_value(uint reg, int h) {
#if TSR_MMA == MMA_TF32
    (void)h;
    return as_float(reg);
#elif TSR_MMA == MMA_BF16
    return as_float(h ? reg & 0xFFFF0000u : reg << 16);
#else
    ushort bits = (ushort)(h ? reg >> 16 : reg & 0xFFFFu);
    return vload_half(0, (const half *)&bits);
#endif
}
static void mma_tile(float acc[MI][NI][4], const uint a[MI][4], const uint b[NI][2],
                     __local float *w, int g, int t) {
    __local float *wa = w, *wb = w + MI * 16 * KSTEP;
    for (int mi = 0; mi < MI; mi++)
        for (int r = 0; r < 4; r++)
            for (int h = 0; h < FRAG_HALVES; h++)
                wa[(mi * 16 + FRAG_A_ROW(g, t, r, h)) * KSTEP + FRAG_A_COL(g, t, r, h)] =
                    half_value(a[mi][r], h);
    for (int ni = 0; ni < NI; ni++)
        for (int r = 0; r < 2; r++)
            for (int h = 0; h < FRAG_HALVES; h++)
                wb[(ni * KSTEP + FRAG_B_K(g, t, r, h)) * 8 + FRAG_B_N(g, t, r, h)] =
                    half_value(b[ni][r], h);
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int mi = 0; mi < MI; mi++)
        for (int ni = 0; ni < NI; ni++)
            for (int i = 0; i < 4; i++) {
                int row = FRAG_C_ROW(g, t, i), col = FRAG_C_COL(g, t, i);
                float d = acc[mi][ni][i];
                for (int p = 0; p < KSTEP; p++) /* products are exact in float32 */
                    d += wa[(mi * 16 + row) * KSTEP + p] * wb[(ni * KSTEP + p) * 8 + col];
                acc[mi][ni][i] = d;
            }
    barrier(CLK_LOCAL_MEM_FENCE);
}
#endif

/* Stages rows x cols of op(X) starting at (r0, c0) into s[row * SK + col] as ELEM, zero outside
 * [0, rows_all) x [0, cols_all). `trans`: X is stored transposed (element (r, c) at
 * x[c * ld + r]); either way consecutive work-items read consecutive addresses. */
static void stage(__local ELEM *s, __global const float *x, ulong ld, int trans, ulong r0,
                  ulong c0, ulong rows_all, ulong cols_all, int rows, int cols, int tid) {
    for (int idx = tid; idx < rows * cols; idx += THREADS) {
        int r, c;
        if (trans) {
            c = idx / rows;
            r = idx % rows;
        } else {
            r = idx / cols;
            c = idx % cols;
        }
        ulong gr = r0 + r, gc = c0 + c;
        float v = 0.0f;
        if (gr < rows_all && gc < cols_all) v = trans ? x[gc * ld + gr] : x[gr * ld + gc];
        put_elem(s, r * SK + c, v);
    }
}

/* Global size {ceil(n / BN) * THREADS, ceil(m / BM), batch}, local size {THREADS, 1, 1}.
 * ta: A is stored k x m (lda >= m), else m x k; tb: B is stored n x k, else k x n. */
__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1)))
void gemm_mma(ulong m, ulong n, ulong k, float alpha, int ta, __global const float *a,
              ulong aoff, ulong lda, ulong stride_a, int tb, __global const float *b, ulong boff,
              ulong ldb, ulong stride_b, float beta, __global float *c, ulong coff, ulong ldc,
              ulong stride_c) {
    /* aligned: fragments are read as 32-bit words (FRAG_READ) */
    __local ELEM As[BM * SK] __attribute__((aligned(16))); /* op(A) tile, row-major */
    __local ELEM Bs[BN * SK] __attribute__((aligned(16))); /* Bs[j * SK + p] = op(B)(p, j) */
#ifdef TSR_MMA_EMULATE
    __local float emu[THREADS / 32 * EMU_WARP_FLOATS];
#endif
    const int tid = (int)get_local_id(0), lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int wm = (warp / WARPS_N) * WM, wn = (warp % WARPS_N) * WN;
    const ulong m0 = get_group_id(1) * (ulong)BM, n0 = get_group_id(0) * (ulong)BN;
    const ulong batch = get_group_id(2);
    a += aoff + batch * stride_a;
    b += boff + batch * stride_b;
    c += coff + batch * stride_c;

    float acc[MI][NI][4];
    for (int mi = 0; mi < MI; mi++)
        for (int ni = 0; ni < NI; ni++)
            for (int i = 0; i < 4; i++) acc[mi][ni][i] = 0.0f;

    for (ulong k0 = 0; k0 < k; k0 += BK) {
        /* op(A)(i, p) for i in [m0, m0+BM), p in [k0, k0+BK) */
        stage(As, a, lda, ta, m0, k0, m, k, BM, BK, tid);
        /* op(B)(p, j) lands at Bs[j * SK + p]: staged as the n x k matrix op(B)^T, which is
         * B itself when tb (stored n x k) and B transposed otherwise */
        stage(Bs, b, ldb, !tb, n0, k0, n, k, BN, BK, tid);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int kk = 0; kk < BK; kk += KSTEP) {
            uint fa[MI][4], fb[NI][2];
#pragma unroll
            for (int mi = 0; mi < MI; mi++)
#pragma unroll
                for (int r = 0; r < 4; r++)
                    fa[mi][r] = FRAG_READ(As, (wm + mi * 16 + FRAG_A_ROW(g, t, r, 0)) * SK + kk +
                                                  FRAG_A_COL(g, t, r, 0));
#pragma unroll
            for (int ni = 0; ni < NI; ni++)
#pragma unroll
                for (int r = 0; r < 2; r++)
                    fb[ni][r] = FRAG_READ(Bs, (wn + ni * 8 + FRAG_B_N(g, t, r, 0)) * SK + kk +
                                                  FRAG_B_K(g, t, r, 0));
#ifdef TSR_MMA_EMULATE
            mma_tile(acc, fa, fb, emu + warp * EMU_WARP_FLOATS, g, t);
#else
            mma_tile(acc, fa, fb);
#endif
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }

#pragma unroll
    for (int mi = 0; mi < MI; mi++)
#pragma unroll
        for (int ni = 0; ni < NI; ni++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                ulong row = m0 + wm + mi * 16 + FRAG_C_ROW(g, t, i);
                ulong col = n0 + wn + ni * 8 + FRAG_C_COL(g, t, i);
                if (row < m && col < n) {
                    __global float *out = c + row * ldc + col;
                    float v = alpha * acc[mi][ni][i];
                    *out = beta != 0.0f ? v + beta * *out : v;
                }
            }
}

#endif /* TSR_MMA */
