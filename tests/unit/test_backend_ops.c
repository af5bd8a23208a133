/* Every backend operation on every device of the context (host + each OpenCL device),
 * checked against plain-C references written here in double precision.
 *
 * Tolerances, with u = 2^-24 (float unit roundoff):
 *  - copies, fill, relu, im2col, transpose, maxpool forward, f16<->f32, dropout masks: exact;
 *  - one rounded operation (scale, mul, bias_add): |err| <= 2u * |result terms|;
 *  - sums of q terms in any order (gemm, sum, bias_grad, col2im, maxpool backward with
 *    overlapping windows): |err| <= (q+2) * 4u * sum|terms| (the classic gamma_q bound
 *    with room for FMA and blocked/tree orders);
 *  - softmax: expf has a few ulp of error and l - max carries u*|l - max|, so the bound is
 *    (16 + cols + |l - max|) * u relative to each term;
 *  - optimizer steps: a handful of roundings, 16u relative to the magnitudes involved. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backends/backend.h"
#include "backends/host/host.h"
#include "lib/core/internal.h"
#include "lib/core/precision.h"
#include "support/test_util.h"

/* Sanitizer builds: PoCL and its LLVM leak compiler state on every clBuildProgram; only
 * blocks allocated inside those libraries are suppressed. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\nleak:libclblast\n";
}

#define U (1.0 / 16777216.0) /* 2^-24 */
#define MAX_DEVICES 16

typedef struct fixture {
    tsr_context *ctx;
    int count;
    tsr_backend *be[MAX_DEVICES];
} fixture;

static int group_setup(void **state) {
    fixture *fx = calloc(1, sizeof *fx);
    if (!fx) return -1;
    tsr_status st = tsr_context_create(&fx->ctx, NULL);
    if (st != TSR_OK) {
        fprintf(stderr, "context: %s\n", tsr_status_name(st));
        free(fx);
        return -1;
    }
    fx->count = tsr_context_device_count(fx->ctx);
    if (fx->count > MAX_DEVICES) fx->count = MAX_DEVICES;
    for (int i = 0; i < fx->count; i++) {
        st = tsr_backend_open(fx->ctx, i, &fx->be[i]);
        if (st != TSR_OK) {
            fprintf(stderr, "device %d (%s): open failed: %s: %s\n", i,
                    tsr_context_device(fx->ctx, i)->id, tsr_status_name(st),
                    tsr_context_last_error(fx->ctx));
            for (int j = 0; j < i; j++) tsr_backend_free(fx->be[j]);
            tsr_context_free(fx->ctx);
            free(fx);
            return -1;
        }
        fprintf(stderr, "device %d: %s (%s, %s)\n", i, fx->be[i]->device.id,
                fx->be[i]->iface->name, fx->be[i]->device.name);
    }
    *state = fx;
    return 0;
}

static int group_teardown(void **state) {
    fixture *fx = *state;
    for (int i = 0; i < fx->count; i++) tsr_backend_free(fx->be[i]);
    tsr_context_free(fx->ctx);
    free(fx);
    return 0;
}

/* ---- helpers ---- */

#define OK(be, call)                                                                       \
    do {                                                                                   \
        tsr_status ok_s_ = (call);                                                         \
        if (ok_s_ != TSR_OK)                                                               \
            fail_msg("[%s] %s -> %s: %s", (be)->device.id, #call, tsr_status_name(ok_s_), \
                     tsr_context_last_error((be)->ctx));                                   \
    } while (0)

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

static tsr_buf *buf_new(tsr_backend *be, size_t bytes) {
    tsr_buf *b = NULL;
    OK(be, tsr_buf_alloc(be, bytes, &b));
    return b;
}

static tsr_buf *upload(tsr_backend *be, const void *data, size_t bytes) {
    tsr_buf *b = buf_new(be, bytes);
    OK(be, tsr_buf_write(b, 0, data, bytes));
    return b;
}

static void download(tsr_buf *b, void *dst, size_t bytes) {
    OK(b->backend, tsr_buf_read(b, 0, dst, bytes));
}

static float *random_floats(size_t n, uint64_t seed, float lo, float hi) {
    float *x = xcalloc(n, sizeof *x);
    tsr_test_fill_uniform(x, n, seed, lo, hi);
    return x;
}

/* |got - ref| <= tol elementwise; names the device, the check and the worst element. */
static void check_close(const tsr_backend *be, const char *what, const float *got,
                        const double *ref, const double *tol, size_t n) {
    size_t bad = n, count = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        int nan_ok = isnan(ref[i]) && isnan(got[i]);
        if (!nan_ok && !(e <= tol[i])) {
            count++;
            double r = isnan(e) ? INFINITY : e / (tol[i] > 0 ? tol[i] : 1e-300);
            if (bad == n || r > worst) {
                worst = r;
                bad = i;
            }
        }
    }
    if (count)
        fail_msg("[%s] %s: %zu of %zu elements out of tolerance; worst [%zu] got %.9g want "
                 "%.9g (tol %.3g)",
                 be->device.id, what, count, n, bad, (double)got[bad], ref[bad], tol[bad]);
}

static void check_exact(const tsr_backend *be, const char *what, const float *got,
                        const float *want, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!(got[i] == want[i]) && !(isnan(got[i]) && isnan(want[i])))
            fail_msg("[%s] %s: element %zu of %zu is %.9g, want %.9g", be->device.id, what, i, n,
                     (double)got[i], (double)want[i]);
}

static void check_error(tsr_backend *be, tsr_status got, tsr_status want, const char *needle,
                        const char *what) {
    if (got != want)
        fail_msg("[%s] %s: status %s, want %s", be->device.id, what, tsr_status_name(got),
                 tsr_status_name(want));
    const char *msg = tsr_context_last_error(be->ctx);
    if (needle && !strstr(msg, needle))
        fail_msg("[%s] %s: error detail \"%s\" does not name \"%s\"", be->device.id, what, msg,
                 needle);
}

/* ---- memory ---- */

/* Typed element access and mapping: element offsets become byte offsets in the backend, bad
 * ranges name the buffer, the range and the size; a map of device memory is a copy that
 * round-trips, a map of host memory is the buffer itself. */
static void test_typed_access_and_map(void **state) {
    fixture *fx = *state;
    const size_t n = 300;
    float *src = random_floats(n, 7, -5, 5), *got = xcalloc(n, sizeof *got);
    float *want = xcalloc(n, sizeof *want);
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        tsr_buf *a = buf_new(be, n * 4), *b = buf_new(be, n * 4);
        tsr_buf_set_name(a, "test vector");
        OK(be, tsr_write_f32(a, 0, src, n));
        /* element offsets: 17 floats at element 40 land at byte 160 */
        float part[17];
        for (int i = 0; i < 17; i++) part[i] = (float)i - 8.5f;
        OK(be, tsr_ref_write(tsr_ref_at(a, 40), TSR_DTYPE_F32, part, 17));
        memcpy(want, src, n * 4);
        memcpy(want + 40, part, sizeof part);
        download(a, got, n * 4);
        check_exact(be, "typed write at element 40", got, want, n);
        OK(be, tsr_read_f32(a, 35, got, 30));
        check_exact(be, "typed read at element 35", got, want + 35, 30);
        /* int32 elements through the same path */
        int32_t ids[5] = {3, -1, 2147483647, 0, 9}, back[5];
        OK(be, tsr_ref_write(tsr_ref_at(b, 295), TSR_DTYPE_I32, ids, 5));
        OK(be, tsr_ref_read(tsr_ref_at(b, 295), TSR_DTYPE_I32, back, 5));
        assert_memory_equal(ids, back, sizeof ids);
        /* copy: 100 floats from a[10] to b[150] */
        OK(be, tsr_ref_copy(tsr_ref_at(b, 150), tsr_ref_at(a, 10), TSR_DTYPE_F32, 100));
        OK(be, tsr_read_f32(b, 150, got, 100));
        check_exact(be, "typed copy", got, want + 10, 100);

        /* bounds: one element past the end, named */
        check_error(be, tsr_read_f32(a, 290, got, 11), TSR_ERR_SHAPE, "test vector",
                    "read past end");
        check_error(be, tsr_read_f32(a, 290, got, 11), TSR_ERR_SHAPE, "[290, 290 + 11)",
                    "read range");
        check_error(be, tsr_read_f32(a, 290, got, 11), TSR_ERR_SHAPE, "1200 bytes, 300 elements",
                    "read size");
        check_error(be, tsr_write_f32(a, 301, src, 0), TSR_ERR_SHAPE, "test vector",
                    "write offset");
        check_error(be, tsr_ref_copy(tsr_ref_at(b, 250), tsr_ref_at(a, 0), TSR_DTYPE_F32, 51),
                    TSR_ERR_SHAPE, "buffer (1200 bytes", "copy into an unnamed buffer");
        check_error(be, tsr_ref_read(tsr_ref_at(a, 0), (tsr_dtype)99, got, 1), TSR_ERR_INVALID_ARG,
                    "not a tsr_dtype", "bad dtype");
        /* (size_t)-1 elements: the byte count overflows, still a bounds error */
        check_error(be, tsr_read_f32(a, 0, got, (size_t)-1), TSR_ERR_SHAPE, "test vector",
                    "overflowing count");
        tsr_map m;
        check_error(be, tsr_buf_map(tsr_ref_at(a, 200), TSR_DTYPE_F32, 101, TSR_MAP_READ, NULL, &m),
                    TSR_ERR_SHAPE, "map of float32 elements [200, 200 + 101)", "map past end");
        assert_null(m.data);
        OK(be, tsr_buf_unmap(&m)); /* a failed map unmaps to nothing */
        check_error(be, tsr_buf_map(tsr_ref_at(a, 0), TSR_DTYPE_F32, 1, (tsr_map_mode)4, NULL, &m),
                    TSR_ERR_INVALID_ARG, "mode 4", "bad map mode");
        download(a, got, n * 4);
        check_exact(be, "failed calls leave the buffer alone", got, want, n);

        /* read-write map of [100, 160): edit through it, unmap, read back */
        int host = be->iface->buf_wrap != NULL;
        OK(be, tsr_buf_map(tsr_ref_at(a, 100), TSR_DTYPE_F32, 60, TSR_MAP_READ_WRITE, NULL, &m));
        assert_int_equal(m.copied, !host);
        check_exact(be, "map reads", m.data, want + 100, 60);
        float *v = m.data;
        for (int i = 0; i < 60; i++) v[i] = v[i] * 2.0f + 1.0f;
        for (int i = 0; i < 60; i++) want[100 + i] = want[100 + i] * 2.0f + 1.0f;
        OK(be, tsr_buf_unmap(&m));
        assert_null(m.buf);
        download(a, got, n * 4);
        check_exact(be, "read-write map round trip", got, want, n);
        /* write-only map into caller staging: nothing read, everything written back */
        float *staging = xcalloc(n, sizeof *staging);
        for (size_t i = 0; i < n; i++) staging[i] = NAN;
        OK(be, tsr_buf_map(tsr_ref_at(a, 0), TSR_DTYPE_F32, 10, TSR_MAP_WRITE, staging, &m));
        assert_true(host ? m.data != staging : m.data == staging);
        if (!host) assert_true(isnan(((float *)m.data)[0])); /* not read */
        for (int i = 0; i < 10; i++) ((float *)m.data)[i] = want[i] = (float)(100 + i);
        OK(be, tsr_buf_unmap(&m));
        download(a, got, n * 4);
        check_exact(be, "write map into staging", got, want, n);
        /* read-only map into staging: a later change of the copy does not reach the device */
        OK(be, tsr_buf_map(tsr_ref_at(a, 5), TSR_DTYPE_F32, 20, TSR_MAP_READ, staging, &m));
        check_exact(be, "read map into staging", m.data, want + 5, 20);
        OK(be, tsr_buf_unmap(&m));
        free(staging);

        /* host memory the caller owns: the backend computes on it in place, or says it cannot */
        float *mem = aligned_alloc(64, n * 4);
        assert_non_null(mem);
        memcpy(mem, src, n * 4);
        tsr_buf *w = NULL;
        if (!host) {
            check_error(be, tsr_buf_wrap(be, mem, n * 4, &w), TSR_ERR_UNSUPPORTED, be->device.id,
                        "wrap on a device");
            assert_null(w);
            assert_false(tsr_backend_wraps_host(be));
        } else {
            assert_true(tsr_backend_wraps_host(be));
            check_error(be, tsr_buf_wrap(be, (char *)mem + 4, n * 4 - 4, &w), TSR_ERR_INVALID_ARG,
                        "64-byte aligned", "misaligned wrap");
            OK(be, tsr_buf_wrap(be, mem, n * 4, &w));
            OK(be, tsr_op_scale(be, n, 0.5f, tsr_ref_at(w, 0)));
            for (size_t i = 0; i < n; i++) assert_true(mem[i] == src[i] * 0.5f);
            OK(be, tsr_buf_map(tsr_ref_at(w, 3), TSR_DTYPE_F32, 4, TSR_MAP_READ, NULL, &m));
            assert_ptr_equal(m.data, mem + 3); /* no copy */
            OK(be, tsr_buf_unmap(&m));
            tsr_buf_free(w); /* leaves mem to us */
            mem[0] = 1.0f;
        }
        free(mem);
        tsr_buf_free(a);
        tsr_buf_free(b);
    }
    free(src);
    free(got);
    free(want);
}

static void test_memory(void **state) {
    fixture *fx = *state;
    const size_t n = 1000;
    float *src = random_floats(n, 1, -10, 10), *got = xcalloc(n, sizeof *got);
    float *want = xcalloc(n, sizeof *want);
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        tsr_buf *a = buf_new(be, n * 4), *b = buf_new(be, n * 4);
        /* whole write/read round trip */
        OK(be, tsr_buf_write(a, 0, src, n * 4));
        download(a, got, n * 4);
        check_exact(be, "write/read", got, src, n);
        /* partial write at a byte offset, partial read at another */
        float part[7] = {1, -2, 3.5f, -4, 5e-30f, 6e30f, -0.0f};
        OK(be, tsr_buf_write(a, 13 * 4, part, sizeof part));
        memcpy(want, src, n * 4);
        memcpy(want + 13, part, sizeof part);
        download(a, got, n * 4);
        check_exact(be, "write at offset", got, want, n);
        float rd[9];
        OK(be, tsr_buf_read(a, 11 * 4, rd, sizeof rd));
        check_exact(be, "read at offset", rd, want + 11, 9);
        /* copy between buffers and within one buffer (disjoint ranges) */
        OK(be, tsr_op_fill(be, tsr_ref_at(b, 0), n, -1.0f));
        OK(be, tsr_buf_copy(b, 100 * 4, a, 7 * 4, 513 * 4));
        for (size_t i = 0; i < n; i++) want[i] = -1.0f;
        memcpy(want + 100, (const float *)src + 7, 513 * 4);
        memcpy(want + 100 + 6, part, sizeof part); /* a[13..19] landed at b[106..112] */
        download(b, got, n * 4);
        check_exact(be, "copy between buffers", got, want, n);
        OK(be, tsr_buf_copy(b, 0, b, 600 * 4, 50 * 4));
        memcpy(want, want + 600, 50 * 4);
        download(b, got, n * 4);
        check_exact(be, "copy within a buffer", got, want, n);
        /* fill with an offset leaves the rest alone */
        OK(be, tsr_op_fill(be, tsr_ref_at(b, 3), 513, 2.5f));
        for (size_t i = 3; i < 516; i++) want[i] = 2.5f;
        download(b, got, n * 4);
        check_exact(be, "fill at offset", got, want, n);
        OK(be, tsr_op_fill(be, tsr_ref_at(b, 999), 1, 0.0f));
        want[999] = 0.0f;
        OK(be, tsr_op_fill(be, tsr_ref_at(b, 0), 0, 7.0f)); /* n = 0: no-op */
        download(b, got, n * 4);
        check_exact(be, "fill single / empty", got, want, n);
        OK(be, tsr_backend_finish(be));
        tsr_buf_free(a);
        tsr_buf_free(b);
        tsr_buf_free(NULL);
    }
    free(src);
    free(got);
    free(want);
}

/* ---- GEMM ---- */

typedef struct gemm_case {
    tsr_trans ta, tb;
    size_t m, n, k;
    float alpha, beta;
    size_t pad;        /* leading dimension = columns + pad */
    size_t off;        /* element offset of every operand */
    size_t batch;
    int share_a;       /* stride_a = 0 */
} gemm_case;

static void run_gemm(tsr_backend *be, const gemm_case *gc, uint64_t seed) {
    const size_t m = gc->m, n = gc->n, k = gc->k, batch = gc->batch;
    const size_t ra = gc->ta ? k : m, ca = gc->ta ? m : k;
    const size_t rb = gc->tb ? n : k, cb = gc->tb ? k : n;
    const size_t lda = ca + gc->pad, ldb = cb + gc->pad, ldc = n + gc->pad;
    const size_t sa = gc->share_a ? 0 : ra * lda + 5, sb = rb * ldb + 3, sc = m * ldc + 2;
    const size_t na = gc->off + (batch - 1) * sa + ra * lda + 1;
    const size_t nb = gc->off + (batch - 1) * sb + rb * ldb + 1;
    const size_t nc = gc->off + (batch - 1) * sc + m * ldc + 1;
    float *a = random_floats(na, seed, -1, 1), *b = random_floats(nb, seed + 1, -1, 1);
    float *c = random_floats(nc, seed + 2, -1, 1), *got = xcalloc(nc, sizeof *got);
    double *ref = xcalloc(nc, sizeof *ref), *tol = xcalloc(nc, sizeof *tol);
    for (size_t i = 0; i < nc; i++) ref[i] = c[i]; /* outside the C blocks: untouched */
    for (size_t q = 0; q < batch; q++) {
        const float *A = a + gc->off + q * sa, *B = b + gc->off + q * sb;
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < n; j++) {
                double s = 0, s_abs = 0;
                for (size_t p = 0; p < k; p++) {
                    double x = gc->ta ? A[p * lda + i] : A[i * lda + p];
                    double y = gc->tb ? B[j * ldb + p] : B[p * ldb + j];
                    s += x * y;
                    s_abs += fabs(x * y);
                }
                size_t at = gc->off + q * sc + i * ldc + j;
                double c0 = c[at];
                ref[at] = gc->alpha * s + gc->beta * c0;
                tol[at] = (double)(k + 2) * 4 * U *
                              (fabs(gc->alpha) * s_abs + fabs(gc->beta * c0)) + 1e-30;
            }
    }
    tsr_buf *ba = upload(be, a, na * 4), *bb = upload(be, b, nb * 4), *bc = upload(be, c, nc * 4);
    tsr_ref ra_ = tsr_ref_at(ba, gc->off), rb_ = tsr_ref_at(bb, gc->off), rc_ = tsr_ref_at(bc, gc->off);
    if (batch == 1)
        OK(be, tsr_op_gemm(be, gc->ta, gc->tb, m, n, k, gc->alpha, ra_, lda, rb_, ldb, gc->beta,
                           rc_, ldc));
    else
        OK(be, tsr_op_gemm_batched(be, gc->ta, gc->tb, m, n, k, gc->alpha, ra_, lda, sa, rb_, ldb,
                                   sb, gc->beta, rc_, ldc, sc, batch));
    download(bc, got, nc * 4);
    char what[160];
    snprintf(what, sizeof what, "gemm%s %c%c m=%zu n=%zu k=%zu alpha=%g beta=%g pad=%zu off=%zu%s",
             batch > 1 ? "_batched" : "", gc->ta ? 'T' : 'N', gc->tb ? 'T' : 'N', m, n, k,
             (double)gc->alpha, (double)gc->beta, gc->pad, gc->off,
             gc->share_a ? " stride_a=0" : "");
    check_close(be, what, got, ref, tol, nc);
    tsr_buf_free(ba);
    tsr_buf_free(bb);
    tsr_buf_free(bc);
    free(a);
    free(b);
    free(c);
    free(got);
    free(ref);
    free(tol);
}

static void test_gemm(void **state) {
    fixture *fx = *state;
    static const size_t shapes[][3] = {{1, 1, 1},   {7, 5, 3},    {5, 7, 13}, {13, 1, 7},
                                       {1, 513, 7}, {33, 17, 513}, {64, 10, 100}, {100, 64, 1}};
    static const struct { float alpha, beta; size_t pad, off; } modes[] = {
        {1.0f, 0.0f, 0, 0}, {0.5f, -1.5f, 3, 5}, {-2.0f, 1.0f, 1, 1}};
    /* the host runs it with each float32 GEMM library it can have (tsr_host_sgemm: oneDNN
     * where built with it, then OpenBLAS), whatever its default on this CPU */
    for (int d = 0; d < fx->count * 2; d++) {
        tsr_backend *be = fx->be[d % fx->count];
        int host = be->device.backend == TSR_BACKEND_HOST, was = host ? tsr_host_impl_of(be)->sgemm_dnnl : 0;
        if (d >= fx->count && !host) continue;
        if (host) tsr_host_impl_of(be)->sgemm_dnnl = d < fx->count && TSR_WITH_DNNL;
        uint64_t seed = 100;
        for (size_t s = 0; s < TSR_ARRAY_SIZE(shapes); s++)
            for (int t = 0; t < 4; t++)
                for (size_t md = 0; md < TSR_ARRAY_SIZE(modes); md++) {
                    gemm_case gc = {(tsr_trans)(t & 1), (tsr_trans)(t >> 1), shapes[s][0],
                                    shapes[s][1], shapes[s][2], modes[md].alpha, modes[md].beta,
                                    modes[md].pad, modes[md].off, 1, 0};
                    run_gemm(be, &gc, seed++);
                }
        /* large enough for BLAS libraries' blocked (indirect) paths */
        gemm_case big[] = {{TSR_NO_TRANS, TSR_NO_TRANS, 384, 256, 600, 1.0f, 0.0f, 0, 0, 1, 0},
                           {TSR_TRANS, TSR_TRANS, 300, 257, 770, 0.75f, 0.5f, 2, 3, 1, 0},
                           {TSR_NO_TRANS, TSR_TRANS, 128, 1024, 200, 1.0f, 1.0f, 0, 0, 1, 0},
                           /* wide C: the host splits it by columns over its threads */
                           {TSR_NO_TRANS, TSR_NO_TRANS, 40, 1000, 70, 1.0f, 0.0f, 3, 1, 1, 0},
                           {TSR_TRANS, TSR_NO_TRANS, 33, 700, 90, -0.5f, 2.0f, 1, 2, 1, 0}};
        for (size_t i = 0; i < TSR_ARRAY_SIZE(big); i++) run_gemm(be, &big[i], seed++);
        /* k = 0: C = beta*C */
        gemm_case k0 = {TSR_NO_TRANS, TSR_NO_TRANS, 5, 6, 0, 1.0f, 0.5f, 0, 0, 1, 0};
        run_gemm(be, &k0, seed++);
        if (host) tsr_host_impl_of(be)->sgemm_dnnl = was;
    }
}

static void test_gemm_batched(void **state) {
    fixture *fx = *state;
    static const size_t shapes[][3] = {{7, 5, 3}, {16, 33, 25}, {1, 9, 513}};
    for (int d = 0; d < fx->count; d++) {
        uint64_t seed = 500;
        for (size_t s = 0; s < TSR_ARRAY_SIZE(shapes); s++)
            for (int t = 0; t < 4; t++)
                for (int share = 0; share < 2; share++) {
                    gemm_case gc = {(tsr_trans)(t & 1), (tsr_trans)(t >> 1), shapes[s][0],
                                    shapes[s][1], shapes[s][2], share ? 1.0f : 0.5f,
                                    share ? 0.0f : 2.0f, (size_t)share * 2, (size_t)t, 3, share};
                    run_gemm(fx->be[d], &gc, seed++);
                }
        /* large enough for the host to run the images on its threads */
        gemm_case big[] = {{TSR_NO_TRANS, TSR_NO_TRANS, 64, 130, 128, 1.0f, 0.0f, 0, 0, 5, 1},
                           {TSR_NO_TRANS, TSR_TRANS, 48, 100, 200, 0.5f, 1.0f, 2, 3, 6, 0},
                           {TSR_TRANS, TSR_NO_TRANS, 100, 70, 160, 1.0f, 0.0f, 1, 0, 4, 1}};
        for (size_t i = 0; i < TSR_ARRAY_SIZE(big); i++) run_gemm(fx->be[d], &big[i], seed++);
    }
}

/* ---- level 1 ---- */

static const size_t vec_sizes[] = {0, 1, 7, 513, 100000};

static void test_axpy_scale_mul(void **state) {
    fixture *fx = *state;
    const size_t off = 3;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t s = 0; s < TSR_ARRAY_SIZE(vec_sizes); s++) {
            const size_t n = vec_sizes[s], tot = n + 2 * off;
            float *x = random_floats(tot, 7 + s, -3, 3), *y = random_floats(tot, 8 + s, -3, 3);
            float *got = xcalloc(tot, 4);
            double *ref = xcalloc(tot, sizeof *ref), *tol = xcalloc(tot, sizeof *tol);
            char what[96];
            const float alpha = -1.75f;
            tsr_buf *bx = upload(be, x, tot * 4), *by = upload(be, y, tot * 4);
            tsr_buf *bz = upload(be, y, tot * 4);
            /* axpy: two roundings (product, sum) or one (FMA) */
            OK(be, tsr_op_axpy(be, n, alpha, tsr_ref_at(bx, off), tsr_ref_at(by, off)));
            for (size_t i = 0; i < tot; i++) {
                int in = i >= off && i < off + n;
                ref[i] = in ? (double)y[i] + (double)alpha * x[i] : y[i];
                tol[i] = in ? 2 * U * (fabs(y[i]) + fabs((double)alpha * x[i])) : 0;
            }
            download(by, got, tot * 4);
            snprintf(what, sizeof what, "axpy n=%zu", n);
            check_close(be, what, got, ref, tol, tot);
            /* scale: one rounding */
            OK(be, tsr_op_scale(be, n, alpha, tsr_ref_at(bx, off)));
            for (size_t i = 0; i < tot; i++) {
                int in = i >= off && i < off + n;
                ref[i] = in ? (double)alpha * x[i] : x[i];
                tol[i] = in ? U * fabs(ref[i]) : 0;
            }
            download(bx, got, tot * 4);
            snprintf(what, sizeof what, "scale n=%zu", n);
            check_close(be, what, got, ref, tol, tot);
            /* mul into a third buffer: y = (alpha*x) * z, one rounding */
            float *xs = xcalloc(tot, 4);
            memcpy(xs, got, tot * 4);
            OK(be, tsr_op_mul(be, n, tsr_ref_at(bx, off), tsr_ref_at(bz, off), tsr_ref_at(by, off)));
            download(by, got, tot * 4);
            float *y_after = xcalloc(tot, 4);
            memcpy(y_after, got, tot * 4);
            for (size_t i = 0; i < tot; i++) { /* outside the range: y as axpy left it */
                int in = i >= off && i < off + n;
                ref[i] = in ? (double)xs[i] * y[i] : y[i];
                tol[i] = in ? U * fabs(ref[i]) : 0;
            }
            snprintf(what, sizeof what, "mul n=%zu", n);
            check_close(be, what, got, ref, tol, tot);
            /* mul in place (y aliases a) */
            OK(be, tsr_op_mul(be, n, tsr_ref_at(by, off), tsr_ref_at(bz, off), tsr_ref_at(by, off)));
            download(by, got, tot * 4);
            for (size_t i = 0; i < tot; i++) {
                int in = i >= off && i < off + n;
                ref[i] = in ? (double)y_after[i] * y[i] : y_after[i];
                tol[i] = in ? U * fabs(ref[i]) : 0;
            }
            snprintf(what, sizeof what, "mul in place n=%zu", n);
            check_close(be, what, got, ref, tol, tot);
            tsr_buf_free(bx);
            tsr_buf_free(by);
            tsr_buf_free(bz);
            free(x);
            free(y);
            free(xs);
            free(y_after);
            free(got);
            free(ref);
            free(tol);
        }
    }
}

static void test_sum(void **state) {
    fixture *fx = *state;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t s = 0; s < TSR_ARRAY_SIZE(vec_sizes); s++) {
            const size_t n = vec_sizes[s], off = 5;
            float *x = random_floats(n + off, 40 + s, -1, 2);
            tsr_buf *bx = upload(be, x, (n + off) * 4), *bo = buf_new(be, 8);
            OK(be, tsr_op_fill(be, tsr_ref_at(bo, 0), 2, 9.0f));
            OK(be, tsr_op_sum(be, n, tsr_ref_at(bx, off), tsr_ref_at(bo, 1)));
            float got[2];
            download(bo, got, 8);
            double ref = 0, abs_sum = 0;
            for (size_t i = 0; i < n; i++) {
                ref += x[off + i];
                abs_sum += fabs(x[off + i]);
            }
            /* any summation order: gamma bound in float; double accumulation does far better */
            double tol = U * fabs(ref) + (log2((double)n + 1) + 8) * U * abs_sum + 1e-30;
            char what[64];
            snprintf(what, sizeof what, "sum n=%zu", n);
            check_close(be, what, &got[1], &ref, &tol, 1);
            if (got[0] != 9.0f) fail_msg("[%s] sum wrote outside out[0]", be->device.id);
            /* integers below 2^24 add exactly in any order: a missed or doubled element shows */
            for (size_t i = 0; i < n + off; i++) x[i] = (float)(i % 3);
            OK(be, tsr_buf_write(bx, 0, x, (n + off) * 4));
            OK(be, tsr_op_sum(be, n, tsr_ref_at(bx, off), tsr_ref_at(bo, 0)));
            download(bo, got, 8);
            float exact = 0;
            for (size_t i = 0; i < n; i++) exact += x[off + i];
            snprintf(what, sizeof what, "sum of integers n=%zu", n);
            check_exact(be, what, got, &exact, 1);
            tsr_buf_free(bx);
            tsr_buf_free(bo);
            free(x);
        }
    }
}

/* ---- non-finite screen (the trainer's check) ---- */

/* The plain reference: the first index whose value is NaN or infinite. */
static size_t ref_first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (isnan(x[i]) || isinf(x[i])) return i;
    return n;
}

static void expect_first(tsr_backend *be, tsr_buf *bx, size_t off, const float *x, size_t n,
                         const char *what) {
    size_t got = 12345, want = ref_first_nonfinite(x + off, n);
    OK(be, tsr_op_first_nonfinite(be, n, tsr_ref_at(bx, off), &got, NULL));
    if (got != want)
        fail_msg("[%s] first_nonfinite %s n=%zu: %zu, want %zu", be->device.id, what, n, got, want);
    /* with the squared norm: the same index, and when all are finite the one-order sum */
    double s2 = -1.0;
    got = 12345;
    OK(be, tsr_op_first_nonfinite(be, n, tsr_ref_at(bx, off), &got, &s2));
    if (got != want)
        fail_msg("[%s] first_nonfinite+sumsq %s n=%zu: %zu, want %zu", be->device.id, what, n, got, want);
    double plain = tsr_sumsq_f32(x + off, n);
    if (want == n && memcmp(&s2, &plain, sizeof s2))
        fail_msg("[%s] first_nonfinite+sumsq n=%zu: %.17g, tsr_sumsq_f32 %.17g", be->device.id, n, s2, plain);
    size_t h = tsr_first_nonfinite_f32(x + off, n); /* the host helper (the fallback's) */
    if (h != want) fail_msg("tsr_first_nonfinite_f32 %s n=%zu: %zu, want %zu", what, n, h, want);
}

static void test_first_nonfinite(void **state) {
    fixture *fx = *state;
    /* up to several 4096-float blocks per host thread's chunk and more chunks than threads;
     * past one OpenCL read-back piece (2^22 floats) */
    static const size_t sizes[] = {0, 1, 7, 4096, 4101, 100000, 1200003, 4198405};
    const float bad[] = {NAN, INFINITY, -INFINITY, -NAN};
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t s = 0; s < TSR_ARRAY_SIZE(sizes); s++) {
            const size_t n = sizes[s], off = 3;
            float *x = random_floats(n + off + 1, 70 + s, -2, 2);
            /* finite extremes are not flagged: the largest float, a subnormal, -0 */
            if (n > 3) x[off] = FLT_MAX, x[off + 1] = -FLT_MAX, x[off + 2] = 1e-45f, x[off + 3] = -0.0f;
            x[off - 1] = NAN, x[off + n] = INFINITY; /* outside the range: never seen */
            tsr_buf *bx = upload(be, x, (n + off + 1) * 4);
            expect_first(be, bx, off, x, n, "all finite");
            if (!n) {
                tsr_buf_free(bx);
                free(x);
                continue;
            }
            /* one bad value at the ends, a block edge and the middle; then two: the first wins */
            size_t at[] = {0, n - 1, n / 2, n > 4096 ? 4095 : n / 3, n > 4097 ? 4096 : n - 1};
            for (size_t k = 0; k < TSR_ARRAY_SIZE(at); k++) {
                float keep = x[off + at[k]];
                x[off + at[k]] = bad[k % TSR_ARRAY_SIZE(bad)];
                OK(be, tsr_buf_write(bx, (off + at[k]) * 4, &x[off + at[k]], 4));
                char what[48];
                snprintf(what, sizeof what, "bad at %zu", at[k]);
                expect_first(be, bx, off, x, n, what);
                size_t later = n - 1 - (n - 1 - at[k]) / 3; /* a second one at or after it */
                float keep2 = x[off + later];
                x[off + later] = INFINITY;
                OK(be, tsr_buf_write(bx, (off + later) * 4, &x[off + later], 4));
                expect_first(be, bx, off, x, n, "two bad");
                x[off + later] = keep2;
                OK(be, tsr_buf_write(bx, (off + later) * 4, &keep2, 4));
                x[off + at[k]] = keep;
                OK(be, tsr_buf_write(bx, (off + at[k]) * 4, &keep, 4));
            }
            tsr_buf_free(bx);
            free(x);
        }
    }
}

/* The squared norm alone and fused with the screen: the same bits (one order), close to a
 * long double sum, and the fused screen finds what the plain one finds. */
static void test_scan_sumsq(void **state) {
    (void)state;
    static const size_t sizes[] = {0, 1, 3, 4, 5, 4095, 4096, 4097, 8193, 100003};
    for (size_t s = 0; s < TSR_ARRAY_SIZE(sizes); s++) {
        const size_t n = sizes[s];
        float *x = random_floats(n + 1, 90 + s, -3, 3);
        long double ref = 0;
        for (size_t i = 0; i < n; i++) ref += (long double)x[i] * x[i];
        double plain = tsr_sumsq_f32(x, n), fused = -1;
        size_t first = tsr_scan_sumsq_f32(x, n, &fused);
        if (first != n) fail_msg("scan_sumsq n=%zu: first %zu on finite data", n, first);
        if (memcmp(&plain, &fused, sizeof plain))
            fail_msg("scan_sumsq n=%zu: %.17g, the plain sum %.17g", n, fused, plain);
        if (fabsl((long double)plain - ref) > 1e-12L * ref + 1e-300L)
            fail_msg("sumsq n=%zu: %.17g, reference %.17Lg", n, plain, ref);
        for (size_t k = 0; n && k < 3; k++) {
            size_t at = k == 0 ? 0 : k == 1 ? n - 1 : n / 2;
            float keep = x[at];
            x[at] = k == 1 ? -INFINITY : NAN;
            size_t want = ref_first_nonfinite(x, n);
            first = tsr_scan_sumsq_f32(x, n, &fused);
            if (first != want) fail_msg("scan_sumsq n=%zu: first %zu, want %zu", n, first, want);
            x[at] = keep;
        }
        free(x);
    }
}

/* ---- bias ---- */

static void test_bias(void **state) {
    fixture *fx = *state;
    static const size_t shapes[][3] = {{1, 1, 1},   {7, 13, 1}, {64, 513, 1}, {3, 5, 49},
                                       {2, 7, 513}, {1, 3, 7},  {8, 64, 196}, {256, 512, 1}};
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t s = 0; s < TSR_ARRAY_SIZE(shapes); s++) {
            const size_t O = shapes[s][0], C = shapes[s][1], I = shapes[s][2], total = O * C * I;
            const size_t off = 2;
            float *bias = random_floats(C + off, 60 + s, -1, 1);
            float *y = random_floats(total + off, 70 + s, -4, 4);
            float *got = xcalloc(total + off, 4);
            double *ref = xcalloc(total + off, sizeof *ref), *tol = xcalloc(total + off, sizeof *tol);
            tsr_buf *bb = upload(be, bias, (C + off) * 4), *by = upload(be, y, (total + off) * 4);
            OK(be, tsr_op_bias_add(be, O, C, I, tsr_ref_at(bb, off), tsr_ref_at(by, off)));
            for (size_t i = 0; i < off; i++) ref[i] = y[i];
            for (size_t o = 0; o < O; o++)
                for (size_t c = 0; c < C; c++)
                    for (size_t i = 0; i < I; i++) {
                        size_t at = off + (o * C + c) * I + i;
                        ref[at] = (double)y[at] + bias[off + c];
                        tol[at] = U * (fabs(y[at]) + fabs(bias[off + c]));
                    }
            download(by, got, (total + off) * 4);
            char what[96];
            snprintf(what, sizeof what, "bias_add outer=%zu channels=%zu inner=%zu", O, C, I);
            check_close(be, what, got, ref, tol, total + off);
            /* bias_relu: the bits of bias_add then relu_forward (y now holds y + bias) */
            float *sep = xcalloc(total + off, 4);
            OK(be, tsr_op_relu_forward(be, total, tsr_ref_at(by, off), tsr_ref_at(by, off)));
            download(by, sep, (total + off) * 4);
            OK(be, tsr_buf_write(by, 0, y, (total + off) * 4));
            OK(be, tsr_op_bias_relu(be, O, C, I, tsr_ref_at(bb, off), tsr_ref_at(by, off)));
            download(by, got, (total + off) * 4);
            if (memcmp(got, sep, (total + off) * 4))
                fail_msg("[%s] bias_relu outer=%zu channels=%zu inner=%zu: not the bits of bias_add + "
                         "relu_forward", be->device.id, O, C, I);
            free(sep);
            /* bias_grad accumulates into db: start from the bias values */
            float *dy = random_floats(total + off, 80 + s, -2, 2);
            OK(be, tsr_buf_write(by, 0, dy, (total + off) * 4));
            OK(be, tsr_op_bias_grad(be, O, C, I, tsr_ref_at(by, off), tsr_ref_at(bb, off)));
            for (size_t i = 0; i < off; i++) {
                ref[i] = bias[i];
                tol[i] = 0;
            }
            for (size_t c = 0; c < C; c++) {
                double sum = bias[off + c], abs_sum = fabs(bias[off + c]);
                for (size_t o = 0; o < O; o++)
                    for (size_t i = 0; i < I; i++) {
                        double v = dy[off + (o * C + c) * I + i];
                        sum += v;
                        abs_sum += fabs(v);
                    }
                ref[off + c] = sum;
                tol[off + c] = (double)(O * I + 2) * 4 * U * abs_sum;
            }
            download(bb, got, (C + off) * 4);
            snprintf(what, sizeof what, "bias_grad outer=%zu channels=%zu inner=%zu", O, C, I);
            check_close(be, what, got, ref, tol, C + off);
            tsr_buf_free(bb);
            tsr_buf_free(by);
            free(bias);
            free(y);
            free(dy);
            free(got);
            free(ref);
            free(tol);
        }
    }
}

/* ---- relu ---- */

static void test_relu(void **state) {
    fixture *fx = *state;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t s = 1; s < TSR_ARRAY_SIZE(vec_sizes); s++) {
            const size_t n = vec_sizes[s], off = 1;
            float *x = random_floats(n + off, 90 + s, -1, 1);
            for (size_t i = 0; i < n + off; i += 5) x[i] = 0.0f; /* exact zeros: not > 0 */
            float *dy = random_floats(n + off, 95 + s, -1, 1);
            float *want = xcalloc(n + off, 4), *got = xcalloc(n + off, 4);
            tsr_buf *bx = upload(be, x, (n + off) * 4), *by = buf_new(be, (n + off) * 4);
            tsr_buf *bd = upload(be, dy, (n + off) * 4);
            OK(be, tsr_op_fill(be, tsr_ref_at(by, 0), n + off, 5.0f));
            OK(be, tsr_op_relu_forward(be, n, tsr_ref_at(bx, off), tsr_ref_at(by, off)));
            want[0] = 5.0f;
            for (size_t i = off; i < n + off; i++) want[i] = x[i] > 0 ? x[i] : 0.0f;
            download(by, got, (n + off) * 4);
            char what[64];
            snprintf(what, sizeof what, "relu_forward n=%zu", n);
            check_exact(be, what, got, want, n + off);
            /* backward with dx aliasing dy */
            OK(be, tsr_op_relu_backward(be, n, tsr_ref_at(by, off), tsr_ref_at(bd, off),
                                        tsr_ref_at(bd, off)));
            want[0] = dy[0];
            for (size_t i = off; i < n + off; i++) want[i] = x[i] > 0 ? dy[i] : 0.0f;
            download(bd, got, (n + off) * 4);
            snprintf(what, sizeof what, "relu_backward in place n=%zu", n);
            check_exact(be, what, got, want, n + off);
            /* in-place forward (y aliases x) */
            OK(be, tsr_op_relu_forward(be, n, tsr_ref_at(bx, off), tsr_ref_at(bx, off)));
            want[0] = x[0];
            for (size_t i = off; i < n + off; i++) want[i] = x[i] > 0 ? x[i] : 0.0f;
            download(bx, got, (n + off) * 4);
            snprintf(what, sizeof what, "relu_forward in place n=%zu", n);
            check_exact(be, what, got, want, n + off);
            tsr_buf_free(bx);
            tsr_buf_free(by);
            tsr_buf_free(bd);
            free(x);
            free(dy);
            free(want);
            free(got);
        }
    }
}

/* ---- softmax + cross-entropy ---- */

static void softmax_case(tsr_backend *be, size_t rows, size_t cols, float base, float spread,
                         uint64_t seed) {
    const size_t total = rows * cols;
    float *l = random_floats(total, seed, -spread, spread);
    for (size_t i = 0; i < total; i++) l[i] += base;
    int32_t *lab = xcalloc(rows, sizeof *lab);
    for (size_t r = 0; r < rows; r++) lab[r] = (int32_t)((r * 7 + seed) % cols);
    tsr_buf *bl = upload(be, l, total * 4), *blab = upload(be, lab, rows * 4);
    tsr_buf *bp = buf_new(be, total * 4), *bloss = buf_new(be, rows * 4);
    OK(be, tsr_op_softmax_xent_forward(be, rows, cols, tsr_ref_at(bl, 0), tsr_ref_at(blab, 0),
                                       tsr_ref_at(bp, 0), tsr_ref_at(bloss, 0)));
    float *p = xcalloc(total, 4), *loss = xcalloc(rows, 4);
    download(bp, p, total * 4);
    download(bloss, loss, rows * 4);
    double *rp = xcalloc(total, sizeof *rp), *tp = xcalloc(total, sizeof *tp);
    double *rl = xcalloc(rows, sizeof *rl), *tl = xcalloc(rows, sizeof *tl);
    for (size_t r = 0; r < rows; r++) {
        const float *x = l + r * cols;
        double mx = x[0];
        for (size_t j = 1; j < cols; j++) mx = x[j] > mx ? x[j] : mx;
        double s = 0, range = 0;
        for (size_t j = 0; j < cols; j++) {
            s += exp(x[j] - mx);
            range = fmax(range, mx - x[j]);
        }
        for (size_t j = 0; j < cols; j++) {
            rp[r * cols + j] = exp(x[j] - mx) / s;
            tp[r * cols + j] = (16 + cols + range) * U * rp[r * cols + j] + 1e-37;
        }
        double zy = x[lab[r]] - mx;
        rl[r] = log(s) - zy;
        tl[r] = (16 + cols + range) * U * (fabs(log(s)) + fabs(zy) + 1);
    }
    char what[128];
    snprintf(what, sizeof what, "softmax probs rows=%zu cols=%zu logits %g+-%g", rows, cols,
             (double)base, (double)spread);
    check_close(be, what, p, rp, tp, total);
    snprintf(what, sizeof what, "softmax loss rows=%zu cols=%zu logits %g+-%g", rows, cols,
             (double)base, (double)spread);
    check_close(be, what, loss, rl, tl, rows);
    /* backward from the forward probabilities, scale = 1/rows, written at an offset */
    tsr_buf *bd = buf_new(be, (total + 3) * 4);
    const float scale = 1.0f / (float)rows;
    OK(be, tsr_op_softmax_xent_backward(be, rows, cols, tsr_ref_at(bp, 0), tsr_ref_at(blab, 0),
                                        scale, tsr_ref_at(bd, 3)));
    float *dl = xcalloc(total + 3, 4);
    download(bd, dl, (total + 3) * 4);
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < cols; j++) {
            size_t i = r * cols + j;
            rp[i] = (double)scale * ((double)p[i] - ((int32_t)j == lab[r] ? 1.0 : 0.0));
            tp[i] = 2 * U * fabs((double)scale) * (fabs(p[i]) + 1) + 1e-37;
        }
    snprintf(what, sizeof what, "softmax backward rows=%zu cols=%zu", rows, cols);
    check_close(be, what, dl + 3, rp, tp, total);
    tsr_buf_free(bl);
    tsr_buf_free(blab);
    tsr_buf_free(bp);
    tsr_buf_free(bloss);
    tsr_buf_free(bd);
    free(l);
    free(lab);
    free(p);
    free(loss);
    free(rp);
    free(tp);
    free(rl);
    free(tl);
    free(dl);
}

static void test_softmax_xent(void **state) {
    fixture *fx = *state;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        softmax_case(be, 1, 1, 0, 1, 1);
        softmax_case(be, 7, 10, 0, 5, 2);
        softmax_case(be, 64, 10, 0, 3, 3);
        softmax_case(be, 3, 513, 0, 8, 4);
        /* large logits: naive exp overflows at 88.7, max-subtraction must not */
        softmax_case(be, 5, 10, 1e4f, 20, 5);
        softmax_case(be, 5, 10, -1e4f, 20, 6);
        softmax_case(be, 4, 7, 3e5f, 100, 7);

        /* labels outside [0, cols) give NaN loss for that row only */
        const size_t rows = 4, cols = 5;
        float l[20];
        tsr_test_fill_uniform(l, 20, 11, -2, 2);
        int32_t lab[4] = {1, -1, 5, 4};
        tsr_buf *bl = upload(be, l, sizeof l), *blab = upload(be, lab, sizeof lab);
        tsr_buf *bp = buf_new(be, sizeof l), *bloss = buf_new(be, rows * 4);
        OK(be, tsr_op_softmax_xent_forward(be, rows, cols, tsr_ref_at(bl, 0), tsr_ref_at(blab, 0),
                                           tsr_ref_at(bp, 0), tsr_ref_at(bloss, 0)));
        float loss[4];
        download(bloss, loss, sizeof loss);
        if (!isfinite(loss[0]) || !isnan(loss[1]) || !isnan(loss[2]) || !isfinite(loss[3]))
            fail_msg("[%s] softmax bad labels: loss %g %g %g %g, want finite NaN NaN finite",
                     be->device.id, (double)loss[0], (double)loss[1], (double)loss[2],
                     (double)loss[3]);
        /* backward: a bad label's row is NaN too, the others are p - onehot */
        OK(be, tsr_op_softmax_xent_backward(be, rows, cols, tsr_ref_at(bp, 0), tsr_ref_at(blab, 0),
                                            1.0f, tsr_ref_at(bl, 0)));
        float p[20], dl[20];
        download(bp, p, sizeof p);
        download(bl, dl, sizeof dl);
        for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < cols; j++) {
                float got = dl[r * cols + j];
                int bad = lab[r] < 0 || lab[r] >= (int32_t)cols;
                double want = p[r * cols + j] - ((int32_t)j == lab[r] ? 1.0 : 0.0);
                if (bad ? !isnan(got) : !(fabs(got - want) <= 2 * U * (fabs(want) + 1)))
                    fail_msg("[%s] softmax backward bad labels: row %zu col %zu got %g want %g",
                             be->device.id, r, j, (double)got, bad ? NAN : want);
            }
        tsr_buf_free(bl);
        tsr_buf_free(blab);
        tsr_buf_free(bp);
        tsr_buf_free(bloss);
    }
}

/* ---- block transpose: exact ---- */

static void test_transpose(void **state) {
    fixture *fx = *state;
    /* rows x cols x inner: conv shapes (batch 3, 5 filters, 7 pixels), a single row or
     * column, inner 1 (a plain matrix transpose) */
    static const size_t shapes[][3] = {{3, 5, 7}, {5, 3, 7}, {1, 4, 6}, {4, 1, 6}, {9, 13, 1}};
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t si = 0; si < TSR_ARRAY_SIZE(shapes); si++) {
            const size_t R = shapes[si][0], C = shapes[si][1], K = shapes[si][2], n = R * C * K;
            const size_t off = 3;
            float *x = random_floats(n + off, 500 + si, -1, 1);
            float *want = xcalloc(n, 4), *got = xcalloc(n + off, 4);
            for (size_t i = 0; i < R; i++)
                for (size_t j = 0; j < C; j++)
                    for (size_t k = 0; k < K; k++) want[(j * R + i) * K + k] = x[off + (i * C + j) * K + k];
            tsr_buf *bx = upload(be, x, (n + off) * 4), *by = buf_new(be, (n + off) * 4);
            OK(be, tsr_op_fill(be, tsr_ref_at(by, 0), n + off, 123.0f));
            OK(be, tsr_op_transpose(be, R, C, K, tsr_ref_at(bx, off), tsr_ref_at(by, off)));
            download(by, got, (n + off) * 4);
            char what[64];
            snprintf(what, sizeof what, "transpose %zux%zux%zu", R, C, K);
            check_exact(be, what, got + off, want, n);
            for (size_t i = 0; i < off; i++)
                if (got[i] != 123.0f) fail_msg("[%s] %s wrote before y", be->device.id, what);
            /* with a bias per row i (one rounded add: exact against double rounded once),
             * then max(., 0); NaN and -0 in x check relu's expression */
            x[off] = NAN;
            if (n > 1) x[off + 1] = -0.0f;
            float *bias = random_floats(R + off, 550 + si, -1, 1);
            tsr_buf *bb = upload(be, bias, (R + off) * 4);
            OK(be, tsr_buf_write(bx, 0, x, (n + off) * 4));
            for (int relu = 0; relu <= 1; relu++) {
                for (size_t i = 0; i < R; i++)
                    for (size_t j = 0; j < C; j++)
                        for (size_t k = 0; k < K; k++) {
                            float v = (float)((double)x[off + (i * C + j) * K + k] + bias[off + i]);
                            want[(j * R + i) * K + k] = relu ? (v > 0.0f ? v : 0.0f) : v;
                        }
                OK(be, tsr_op_transpose_bias(be, R, C, K, tsr_ref_at(bx, off), tsr_ref_at(bb, off), relu,
                                             tsr_ref_at(by, off)));
                download(by, got, (n + off) * 4);
                snprintf(what, sizeof what, "transpose_bias %zux%zux%zu relu=%d", R, C, K, relu);
                check_exact(be, what, got + off, want, n);
            }
            tsr_buf_free(bb);
            free(bias);
            tsr_buf_free(bx);
            tsr_buf_free(by);
            free(x);
            free(want);
            free(got);
        }
    }
}

/* ---- im2col / col2im ---- */

typedef struct conv_case {
    size_t batch, channels, height, width, kh, kw, sh, sw, ph, pw;
} conv_case;

static const conv_case conv_cases[] = {
    {2, 3, 7, 5, 3, 3, 1, 1, 1, 1},   /* odd non-square image, same padding */
    {1, 2, 8, 9, 3, 2, 2, 2, 1, 1},   /* non-square kernel, stride 2 */
    {3, 1, 5, 6, 5, 5, 1, 1, 2, 2},   /* kernel as large as the padded image allows */
    {2, 4, 28, 28, 5, 5, 1, 1, 2, 2}, /* the Fashion-MNIST first layer */
    {2, 3, 6, 7, 1, 1, 1, 1, 0, 0},   /* 1x1 */
    {1, 2, 9, 10, 2, 2, 2, 2, 0, 0},  /* stride 2, no padding, odd height */
    {2, 2, 7, 11, 3, 4, 1, 2, 2, 1},  /* different strides and pads per axis */
    {1, 1, 1, 1, 1, 1, 1, 1, 0, 0},   /* a single pixel */
    {1, 5, 13, 4, 3, 3, 2, 1, 0, 2},
};

static void test_im2col_col2im(void **state) {
    fixture *fx = *state;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t cc = 0; cc < TSR_ARRAY_SIZE(conv_cases); cc++) {
            const conv_case *k = &conv_cases[cc];
            tsr_conv_geom g = {k->batch, k->channels, k->height, k->width, k->kh, k->kw,
                               k->sh, k->sw, k->ph, k->pw, 0, 0};
            assert_int_equal(tsr_conv_geom_finish(&g), TSR_OK);
            const size_t H = g.height, W = g.width, OH = g.out_h, OW = g.out_w;
            const size_t rows = g.channels * g.kernel_h * g.kernel_w;
            const size_t img = g.batch * g.channels * H * W, ncol = g.batch * rows * OH * OW;
            const size_t off = 4;
            float *x = random_floats(img + off, 200 + cc, -1, 1);
            float *want = xcalloc(ncol, 4), *got = xcalloc(ncol + off, 4);
            for (size_t b = 0; b < g.batch; b++)
                for (size_t c = 0; c < g.channels; c++)
                    for (size_t i = 0; i < g.kernel_h; i++)
                        for (size_t j = 0; j < g.kernel_w; j++)
                            for (size_t oh = 0; oh < OH; oh++)
                                for (size_t ow = 0; ow < OW; ow++) {
                                    long ih = (long)(oh * g.stride_h + i) - (long)g.pad_h;
                                    long iw = (long)(ow * g.stride_w + j) - (long)g.pad_w;
                                    size_t r = (c * g.kernel_h + i) * g.kernel_w + j;
                                    float v = 0;
                                    if (ih >= 0 && ih < (long)H && iw >= 0 && iw < (long)W)
                                        v = x[off + ((b * g.channels + c) * H + (size_t)ih) * W +
                                              (size_t)iw];
                                    want[(r * g.batch + b) * OH * OW + oh * OW + ow] = v;
                                }
            tsr_buf *bx = upload(be, x, (img + off) * 4), *bc = buf_new(be, (ncol + off) * 4);
            OK(be, tsr_op_fill(be, tsr_ref_at(bc, 0), ncol + off, 123.0f)); /* garbage */
            OK(be, tsr_op_im2col(be, &g, tsr_ref_at(bx, off), tsr_ref_at(bc, off)));
            download(bc, got, (ncol + off) * 4);
            char what[160];
            snprintf(what, sizeof what,
                     "im2col b=%zu c=%zu %zux%zu k=%zux%zu s=%zu,%zu p=%zu,%zu", g.batch,
                     g.channels, H, W, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w, g.pad_h,
                     g.pad_w);
            check_exact(be, what, got + off, want, ncol);
            /* col2im accumulates into dx */
            float *col = random_floats(ncol + off, 300 + cc, -1, 1);
            OK(be, tsr_buf_write(bc, 0, col, (ncol + off) * 4));
            float *dx0 = random_floats(img + off, 400 + cc, -1, 1);
            OK(be, tsr_buf_write(bx, 0, dx0, (img + off) * 4));
            OK(be, tsr_op_col2im(be, &g, tsr_ref_at(bc, off), tsr_ref_at(bx, off)));
            double *ref = xcalloc(img + off, sizeof *ref), *abs_s = xcalloc(img + off, sizeof *abs_s);
            double *tol = xcalloc(img + off, sizeof *tol);
            size_t *terms = xcalloc(img + off, sizeof *terms);
            for (size_t i = 0; i < img + off; i++) {
                ref[i] = dx0[i];
                abs_s[i] = fabs(dx0[i]);
            }
            for (size_t b = 0; b < g.batch; b++)
                for (size_t c = 0; c < g.channels; c++)
                    for (size_t i = 0; i < g.kernel_h; i++)
                        for (size_t j = 0; j < g.kernel_w; j++)
                            for (size_t oh = 0; oh < OH; oh++)
                                for (size_t ow = 0; ow < OW; ow++) {
                                    long ih = (long)(oh * g.stride_h + i) - (long)g.pad_h;
                                    long iw = (long)(ow * g.stride_w + j) - (long)g.pad_w;
                                    if (ih < 0 || ih >= (long)H || iw < 0 || iw >= (long)W) continue;
                                    size_t r = (c * g.kernel_h + i) * g.kernel_w + j;
                                    size_t at = off + ((b * g.channels + c) * H + (size_t)ih) * W +
                                                (size_t)iw;
                                    double v = col[off + (r * g.batch + b) * OH * OW + oh * OW + ow];
                                    ref[at] += v;
                                    abs_s[at] += fabs(v);
                                    terms[at]++;
                                }
            for (size_t i = 0; i < img + off; i++)
                tol[i] = (double)(terms[i] + 2) * 4 * U * abs_s[i];
            float *gx = xcalloc(img + off, 4);
            download(bx, gx, (img + off) * 4);
            memcpy(what, "col2im", 6); /* same geometry text */
            check_close(be, what, gx, ref, tol, img + off);
            tsr_buf_free(bx);
            tsr_buf_free(bc);
            free(x);
            free(want);
            free(got);
            free(col);
            free(dx0);
            free(ref);
            free(abs_s);
            free(tol);
            free(terms);
            free(gx);
        }
    }
}

/* ---- direct convolution (the host's oneDNN kernels) ---- */

typedef struct direct_case {
    size_t batch, channels, height, width, kh, kw, s, p, filters;
} direct_case;

static const direct_case direct_cases[] = {
    {11, 8, 9, 7, 3, 3, 1, 1, 16},  /* parts of 2 and 1 images */
    {3, 16, 10, 10, 5, 5, 2, 2, 8}, /* stride 2 */
    {9, 32, 14, 14, 5, 5, 1, 2, 64}, /* the cnn's second layer */
    {1, 8, 6, 8, 2, 3, 1, 0, 5},    /* valid, non-square kernel, one image */
    {20, 8, 5, 5, 3, 3, 1, 1, 3},   /* 8 parts of 3 and 2 images */
    {10, 1, 28, 28, 5, 5, 1, 2, 32}, /* the cnn's first layer: one channel, NCHW source */
    {3, 3, 9, 11, 3, 3, 1, 1, 16},  /* three channels, input gradient through oneDNN too */
};

/* y = conv(x, w), dX, dW in double, with each output's sum of |terms| for the tolerance */
static void ref_conv(const tsr_conv_geom *g, size_t F, const float *x, const float *w, const float *dy,
                     double *y, double *ay, double *dx, double *adx, double *dw, double *adw) {
    size_t C = g->channels, H = g->height, W = g->width, OH = g->out_h, OW = g->out_w;
    for (size_t b = 0; b < g->batch; b++)
        for (size_t f = 0; f < F; f++)
            for (size_t oh = 0; oh < OH; oh++)
                for (size_t ow = 0; ow < OW; ow++) {
                    size_t o = ((b * F + f) * OH + oh) * OW + ow;
                    for (size_t c = 0; c < C; c++)
                        for (size_t i = 0; i < g->kernel_h; i++)
                            for (size_t j = 0; j < g->kernel_w; j++) {
                                long ih = (long)(oh * g->stride_h + i) - (long)g->pad_h;
                                long iw = (long)(ow * g->stride_w + j) - (long)g->pad_w;
                                if (ih < 0 || ih >= (long)H || iw < 0 || iw >= (long)W) continue;
                                size_t xi = ((b * C + c) * H + (size_t)ih) * W + (size_t)iw;
                                size_t wi = ((f * C + c) * g->kernel_h + i) * g->kernel_w + j;
                                y[o] += (double)x[xi] * w[wi];
                                ay[o] += fabs((double)x[xi] * w[wi]);
                                dx[xi] += (double)dy[o] * w[wi];
                                adx[xi] += fabs((double)dy[o] * w[wi]);
                                dw[wi] += (double)dy[o] * x[xi];
                                adw[wi] += fabs((double)dy[o] * x[xi]);
                            }
                }
}

/* Where the backend has a direct convolution (the host built with oneDNN: every case with >= 8
 * channels, and the few-channel ones where the CPU has oneDNN's first-layer kernels), forward, dX and dW (overwritten and accumulated; dX also not wanted) against the
 * double reference, in fp32 and, where the backend runs it, in bf16 (the reference then on
 * operands rounded to bf16: the products' inputs are, the sums float32); and the bits do not
 * depend on the host's threads (test_host_threads). */
static void test_conv_direct(void **state) {
    fixture *fx = *state;
    int ran = 0;
    for (int d = 0; d < fx->count * 2; d++) {
        tsr_backend *be = fx->be[d % fx->count];
        tsr_precision prec = d < fx->count ? TSR_PRECISION_FP32 : TSR_PRECISION_BF16;
        OK(be, tsr_backend_set_precision(be, prec));
        for (size_t cc = 0; cc < TSR_ARRAY_SIZE(direct_cases); cc++) {
            const direct_case *k = &direct_cases[cc];
            tsr_conv_geom g = {k->batch, k->channels, k->height, k->width, k->kh, k->kw, k->s, k->s, k->p, k->p, 0, 0};
            assert_int_equal(tsr_conv_geom_finish(&g), TSR_OK);
            size_t F = k->filters, img = g.batch * g.channels * g.height * g.width;
            size_t wts = F * g.channels * g.kernel_h * g.kernel_w, out = g.batch * F * g.out_h * g.out_w;
            int fwd = tsr_op_conv_direct(be, &g, F, TSR_CONV_FORWARD);
            int bwd = tsr_op_conv_direct(be, &g, F, TSR_CONV_BACKWARD);
#if TSR_WITH_DNNL
            /* oneDNN has JIT kernels for blocked channels on every x86 with AVX2, and forward
             * ones for a plain source with few channels; the weight gradient's of those only
             * with AVX-512, so an AVX2 host keeps im2col + GEMM for that pass */
            if (be->device.backend == TSR_BACKEND_HOST && prec == TSR_PRECISION_FP32 &&
                (!fwd || (!bwd && k->channels >= 8)))
                fail_msg("[host] built with oneDNN but no direct convolution for case %zu (%s)", cc,
                         fwd ? "backward" : "forward");
#endif
            if (!fwd && !bwd) continue;
            ran += fwd + bwd;
            float *x = random_floats(img, 500 + cc, -1, 1), *w = random_floats(wts, 600 + cc, -1, 1);
            float *dy = random_floats(out, 700 + cc, -1, 1), *dx0 = random_floats(img, 800 + cc, -1, 1);
            float *dw0 = random_floats(wts, 900 + cc, -1, 1);
            double *y = xcalloc(out, 8), *ay = xcalloc(out, 8), *dx = xcalloc(img, 8), *adx = xcalloc(img, 8);
            double *dw = xcalloc(wts, 8), *adw = xcalloc(wts, 8), *tol = xcalloc(img + out + wts, 8);
            double *ref = xcalloc(img + out + wts, 8);
            float *xr = xcalloc(img, 4), *wr = xcalloc(wts, 4), *dyr = xcalloc(out, 4);
            tsr_round_n(prec, xr, x, img);
            tsr_round_n(prec, wr, w, wts);
            tsr_round_n(prec, dyr, dy, out);
            ref_conv(&g, F, xr, wr, dyr, y, ay, dx, adx, dw, adw);
            free(xr), free(wr), free(dyr);
            tsr_buf *bx = upload(be, x, img * 4), *bw = upload(be, w, wts * 4), *bdy = upload(be, dy, out * 4);
            tsr_buf *by = buf_new(be, out * 4), *bdx = upload(be, dx0, img * 4), *bdw = upload(be, dw0, wts * 4);
            float *got = xcalloc(img + out + wts, 4);
            char what[160];
            snprintf(what, sizeof what, "conv %s b=%zu c=%zu %zux%zu k=%zux%zu s=%zu p=%zu f=%zu",
                     tsr_precision_name(prec), g.batch, g.channels, g.height, g.width, g.kernel_h, g.kernel_w, k->s,
                     k->p, F);
            size_t q = g.channels * g.kernel_h * g.kernel_w, qw = g.batch * g.out_h * g.out_w;
            if (fwd) {
                OK(be, tsr_op_conv_forward(be, &g, F, tsr_ref_at(bx, 0), tsr_ref_at(bw, 0), tsr_ref_at(by, 0)));
                download(by, got, out * 4);
                for (size_t i = 0; i < out; i++) ref[i] = y[i], tol[i] = (double)(q + 2) * 4 * U * ay[i] + 1e-30;
                check_close(be, what, got, ref, tol, out);
            } else { /* the pass it does not run is refused, naming the shape */
                assert_int_equal(tsr_op_conv_forward(be, &g, F, tsr_ref_at(bx, 0), tsr_ref_at(bw, 0),
                                                     tsr_ref_at(by, 0)), TSR_ERR_UNSUPPORTED);
                assert_non_null(strstr(tsr_context_last_error(fx->ctx), "runs no direct convolution"));
            }
            if (!bwd) {
                assert_int_equal(tsr_op_conv_backward(be, &g, F, tsr_ref_at(bx, 0), tsr_ref_at(bw, 0),
                                                      tsr_ref_at(bdy, 0), 0.0f, tsr_ref_at(bdw, 0), 0.0f,
                                                      tsr_ref_at(bdx, 0)), TSR_ERR_UNSUPPORTED);
                assert_non_null(strstr(tsr_context_last_error(fx->ctx), "runs no direct convolution"));
            }
            for (int acc = 0; acc < 2 * bwd; acc++) { /* beta 0, then 1 (onto the random start values) */
                OK(be, tsr_buf_write(bdx, 0, dx0, img * 4));
                OK(be, tsr_buf_write(bdw, 0, dw0, wts * 4));
                OK(be, tsr_op_conv_backward(be, &g, F, tsr_ref_at(bx, 0), tsr_ref_at(bw, 0), tsr_ref_at(bdy, 0),
                                            (float)acc, tsr_ref_at(bdw, 0), (float)acc, tsr_ref_at(bdx, 0)));
                download(bdx, got, img * 4);
                download(bdw, got + img, wts * 4);
                for (size_t i = 0; i < img; i++)
                    ref[i] = dx[i] + (acc ? dx0[i] : 0), tol[i] = (double)(q + 3) * 4 * U * (adx[i] + fabs(dx0[i])) + 1e-30;
                for (size_t i = 0; i < wts; i++)
                    ref[img + i] = dw[i] + (acc ? dw0[i] : 0),
                              tol[img + i] = (double)(qw + 11) * 4 * U * (adw[i] + fabs(dw0[i])) + 1e-30;
                check_close(be, what, got, ref, tol, img + wts);
            }
            if (bwd) { /* dX not wanted: dw alone, dx untouched */
                OK(be, tsr_buf_write(bdx, 0, dx0, img * 4));
                tsr_ref none = {NULL, 0};
                OK(be, tsr_op_conv_backward(be, &g, F, tsr_ref_at(bx, 0), tsr_ref_at(bw, 0), tsr_ref_at(bdy, 0),
                                            0.0f, tsr_ref_at(bdw, 0), 0.0f, none));
                download(bdx, got, img * 4);
                check_exact(be, "conv backward without dx leaves dx", got, dx0, img);
            }
            tsr_buf_free(bx), tsr_buf_free(bw), tsr_buf_free(bdy), tsr_buf_free(by), tsr_buf_free(bdx), tsr_buf_free(bdw);
            free(x), free(w), free(dy), free(dx0), free(dw0), free(y), free(ay), free(dx), free(adx), free(dw), free(adw);
            free(tol), free(ref), free(got);
        }
        OK(be, tsr_backend_set_precision(be, TSR_PRECISION_FP32));
    }
    print_message("direct convolution passes run: %d\n", ran);
}

/* conv_wgrad: dw = beta dw + dY col^T from the columns, dY in the stage layout, against a
 * double reference on every conv case where the backend runs it (the host: an AVX2 + FMA CPU,
 * 8 or more output positions per image), with filter counts that fill no block (3) and that
 * leave a partial one (9); elsewhere it is refused, naming the shape. */
static void test_conv_wgrad(void **state) {
    fixture *fx = *state;
    static const size_t filter_counts[] = {3, 9};
    int ran = 0;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t it = 0; it < TSR_ARRAY_SIZE(filter_counts) * TSR_ARRAY_SIZE(conv_cases); it++) {
            size_t cc = it % TSR_ARRAY_SIZE(conv_cases), F = filter_counts[it / TSR_ARRAY_SIZE(conv_cases)];
            const conv_case *k = &conv_cases[cc];
            tsr_conv_geom g = {k->batch, k->channels, k->height, k->width, k->kh, k->kw,
                               k->sh, k->sw, k->ph, k->pw, 0, 0};
            assert_int_equal(tsr_conv_geom_finish(&g), TSR_OK);
            const size_t ohw = g.out_h * g.out_w, rows = g.channels * g.kernel_h * g.kernel_w;
            const size_t n = g.batch * ohw, img = g.batch * g.channels * g.height * g.width;
            float *x = random_floats(img, 300 + cc, -1, 1), *dy = random_floats(g.batch * F * ohw, 400 + cc, -1, 1);
            float *dw0 = random_floats(F * rows, 450 + cc, -1, 1);
            float *col = xcalloc(rows * n, 4), *got = xcalloc(F * rows, 4);
            double *ref = xcalloc(F * rows, 8), *tol = xcalloc(F * rows, 8);
            tsr_buf *bx = upload(be, x, img * 4), *bdy = upload(be, dy, g.batch * F * ohw * 4);
            tsr_buf *bc = buf_new(be, rows * n * 4), *bdw = upload(be, dw0, F * rows * 4);
            char what[160];
            snprintf(what, sizeof what, "conv_wgrad f=%zu b=%zu c=%zu %zux%zu k=%zux%zu s=%zu,%zu", F, g.batch,
                     g.channels, g.height, g.width, g.kernel_h, g.kernel_w, g.stride_h, g.stride_w);
            int runs = tsr_op_conv_wgrad_cols(be, &g, F);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
            if (be->device.backend == TSR_BACKEND_HOST && !runs && ohw >= 8 && __builtin_cpu_supports("avx2") &&
                __builtin_cpu_supports("fma"))
                fail_msg("[host] AVX2 + FMA CPU but no weight gradient from columns: %s", what);
#endif
            if (!runs) {
                assert_int_equal(tsr_op_conv_wgrad(be, &g, F, tsr_ref_at(bdy, 0), tsr_ref_at(bc, 0), 0.0f,
                                                   tsr_ref_at(bdw, 0)), TSR_ERR_UNSUPPORTED);
                assert_non_null(strstr(tsr_context_last_error(fx->ctx), "no weight gradient from columns"));
            }
            OK(be, tsr_op_im2col(be, &g, tsr_ref_at(bx, 0), tsr_ref_at(bc, 0)));
            download(bc, col, rows * n * 4);
            if (runs) { /* beta is 0 or 1 */
                assert_int_equal(tsr_op_conv_wgrad(be, &g, F, tsr_ref_at(bdy, 0), tsr_ref_at(bc, 0), 0.5f,
                                                   tsr_ref_at(bdw, 0)), TSR_ERR_INVALID_ARG);
                assert_non_null(strstr(tsr_context_last_error(fx->ctx), "beta must be 0 or 1"));
            }
            for (int beta = 0; runs && beta <= 1; beta++) {
                OK(be, tsr_buf_write(bdw, 0, dw0, F * rows * 4));
                OK(be, tsr_op_conv_wgrad(be, &g, F, tsr_ref_at(bdy, 0), tsr_ref_at(bc, 0), (float)beta,
                                         tsr_ref_at(bdw, 0)));
                download(bdw, got, F * rows * 4);
                for (size_t f = 0; f < F; f++)
                    for (size_t r = 0; r < rows; r++) {
                        double sum = beta ? dw0[f * rows + r] : 0.0, abs_sum = fabs(sum);
                        for (size_t b = 0; b < g.batch; b++)
                            for (size_t p = 0; p < ohw; p++) {
                                double v = (double)dy[(b * F + f) * ohw + p] * col[r * n + b * ohw + p];
                                sum += v;
                                abs_sum += fabs(v);
                            }
                        ref[f * rows + r] = sum;
                        tol[f * rows + r] = (double)(n + 12) * 4 * U * abs_sum + 1e-30;
                    }
                check_close(be, what, got, ref, tol, F * rows);
                ran++;
            }
            tsr_buf_free(bx), tsr_buf_free(bdy), tsr_buf_free(bc), tsr_buf_free(bdw);
            free(x), free(dy), free(dw0), free(col), free(got), free(ref), free(tol);
        }
    }
    print_message("weight gradients from columns run: %d\n", ran);
}

/* conv_dinput: dx (add: +=) col2im(W^T dY) against a double reference on every conv case, and
 * on a backend with its own slot, bit for bit against the GEMM, fill and col2im it stands for
 * where its GEMMs are OpenBLAS's (a part of an OpenBLAS GEMM has the bits of the whole; oneDNN's
 * SGEMM picks its kernels by shape, so the host runs the cases with each library it can use). */
static void test_conv_dinput(void **state) {
    fixture *fx = *state;
    const size_t filters = 5;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        int host = be->device.backend == TSR_BACKEND_HOST;
        int sgemm_dnnl = host ? tsr_host_impl_of(be)->sgemm_dnnl : 0, libs = host && TSR_WITH_DNNL ? 2 : 1;
        /* every case per library (the host: oneDNN's SGEMM, then OpenBLAS's) */
        for (size_t it = 0; it < libs * TSR_ARRAY_SIZE(conv_cases); it++) {
            size_t cc = it % TSR_ARRAY_SIZE(conv_cases);
            if (host) tsr_host_impl_of(be)->sgemm_dnnl = libs == 2 && it < TSR_ARRAY_SIZE(conv_cases);
            const conv_case *k = &conv_cases[cc];
            tsr_conv_geom g = {k->batch, k->channels, k->height, k->width, k->kh, k->kw,
                               k->sh, k->sw, k->ph, k->pw, 0, 0};
            assert_int_equal(tsr_conv_geom_finish(&g), TSR_OK);
            const size_t H = g.height, W = g.width, OH = g.out_h, OW = g.out_w, ohw = OH * OW;
            const size_t rows = g.channels * g.kernel_h * g.kernel_w, n = g.batch * ohw;
            const size_t img = g.batch * g.channels * H * W, ncol = rows * n;
            float *w = random_floats(filters * rows, 500 + cc, -1, 1);
            float *dy = random_floats(filters * n, 600 + cc, -1, 1);
            float *dx0 = random_floats(img, 700 + cc, -1, 1);
            float *got = xcalloc(img, 4), *alt = xcalloc(img, 4);
            double *ref = xcalloc(img, sizeof *ref), *abs_s = xcalloc(img, sizeof *abs_s);
            double *tol = xcalloc(img, sizeof *tol);
            size_t *terms = xcalloc(img, sizeof *terms);
            tsr_buf *bw = upload(be, w, filters * rows * 4), *bdy = upload(be, dy, filters * n * 4);
            tsr_buf *bc = buf_new(be, ncol * 4), *bx = buf_new(be, img * 4);
            for (int add = 0; add <= 1; add++) {
                for (size_t i = 0; i < img; i++) {
                    ref[i] = add ? dx0[i] : 0.0;
                    abs_s[i] = add ? fabs(dx0[i]) : 0.0;
                    terms[i] = add;
                }
                for (size_t b = 0; b < g.batch; b++)
                    for (size_t c = 0; c < g.channels; c++)
                        for (size_t i = 0; i < g.kernel_h; i++)
                            for (size_t j = 0; j < g.kernel_w; j++)
                                for (size_t oh = 0; oh < OH; oh++)
                                    for (size_t ow = 0; ow < OW; ow++) {
                                        long ih = (long)(oh * g.stride_h + i) - (long)g.pad_h;
                                        long iw = (long)(ow * g.stride_w + j) - (long)g.pad_w;
                                        if (ih < 0 || ih >= (long)H || iw < 0 || iw >= (long)W)
                                            continue;
                                        size_t r = (c * g.kernel_h + i) * g.kernel_w + j;
                                        size_t at = ((b * g.channels + c) * H + (size_t)ih) * W + (size_t)iw;
                                        for (size_t f = 0; f < filters; f++) {
                                            double v = (double)w[f * rows + r] * dy[f * n + b * ohw + oh * OW + ow];
                                            ref[at] += v;
                                            abs_s[at] += fabs(v);
                                        }
                                        terms[at] += filters;
                                    }
                for (size_t i = 0; i < img; i++) tol[i] = (double)(terms[i] + 2) * 4 * U * abs_s[i];
                OK(be, tsr_buf_write(bx, 0, dx0, img * 4));
                OK(be, tsr_op_fill(be, tsr_ref_at(bc, 0), ncol, 123.0f)); /* garbage scratch */
                OK(be, tsr_op_conv_dinput(be, &g, filters, tsr_ref_at(bw, 0), tsr_ref_at(bdy, 0),
                                          tsr_ref_at(bc, 0), add, tsr_ref_at(bx, 0)));
                download(bx, got, img * 4);
                char what[160];
                snprintf(what, sizeof what, "conv_dinput add=%d b=%zu c=%zu %zux%zu k=%zux%zu s=%zu,%zu "
                         "p=%zu,%zu", add, g.batch, g.channels, H, W, g.kernel_h, g.kernel_w,
                         g.stride_h, g.stride_w, g.pad_h, g.pad_w);
                check_close(be, what, got, ref, tol, img);
                if (!be->iface->conv_dinput || (host && tsr_host_impl_of(be)->sgemm_dnnl)) continue;
                /* the composition the slot stands for */
                OK(be, tsr_buf_write(bx, 0, dx0, img * 4));
                OK(be, tsr_op_gemm(be, TSR_TRANS, TSR_NO_TRANS, rows, n, filters, 1.0f,
                                   tsr_ref_at(bw, 0), rows, tsr_ref_at(bdy, 0), n, 0.0f,
                                   tsr_ref_at(bc, 0), n));
                if (!add) OK(be, tsr_op_fill(be, tsr_ref_at(bx, 0), img, 0.0f));
                OK(be, tsr_op_col2im(be, &g, tsr_ref_at(bc, 0), tsr_ref_at(bx, 0)));
                download(bx, alt, img * 4);
                if (memcmp(got, alt, img * 4))
                    fail_msg("[%s] %s: not bit for bit the GEMM + col2im", be->device.id, what);
            }
            tsr_buf_free(bw);
            tsr_buf_free(bdy);
            tsr_buf_free(bc);
            tsr_buf_free(bx);
            free(w);
            free(dy);
            free(dx0);
            free(got);
            free(alt);
            free(ref);
            free(abs_s);
            free(tol);
            free(terms);
        }
        if (host) tsr_host_impl_of(be)->sgemm_dnnl = sgemm_dnnl;
    }
}

/* ---- max pooling ---- */

typedef struct pool_case {
    size_t planes, height, width, size, stride;
} pool_case;

static const pool_case pool_cases[] = {
    {3, 8, 8, 2, 2},   {2, 7, 9, 2, 2},   /* odd sizes drop the last row/column */
    {2, 9, 7, 3, 2},   {5, 13, 11, 3, 1}, /* overlapping windows */
    {1, 1, 1, 1, 1},   {4, 28, 28, 2, 2}, {1, 6, 5, 3, 3}, {2, 5, 4, 4, 1},
    {96, 28, 28, 2, 2}, {33, 14, 15, 3, 2}, /* large enough for the host's threads */
};

static void test_maxpool(void **state) {
    fixture *fx = *state;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t pc = 0; pc < TSR_ARRAY_SIZE(pool_cases); pc++) {
            const pool_case *k = &pool_cases[pc];
            tsr_pool_geom g = {k->planes, k->height, k->width, k->size, k->stride, 0, 0};
            assert_int_equal(tsr_pool_geom_finish(&g), TSR_OK);
            const size_t in = g.height * g.width, out = g.out_h * g.out_w;
            const size_t nin = g.planes * in, nout = g.planes * out, off = 3;
            float *x = random_floats(nin + off, 500 + pc, -5, 5);
            if (pc % 2) /* ties: values in {-1, 0, 1}; the first maximum in row-major order wins */
                for (size_t i = 0; i < nin + off; i++) x[i] = floorf(x[i] * 0.3f);
            float *wy = xcalloc(nout, 4), *wi = xcalloc(nout, 4);
            for (size_t p = 0; p < g.planes; p++)
                for (size_t oh = 0; oh < g.out_h; oh++)
                    for (size_t ow = 0; ow < g.out_w; ow++) {
                        size_t best = oh * g.stride * g.width + ow * g.stride;
                        for (size_t i = 0; i < g.size; i++)
                            for (size_t j = 0; j < g.size; j++) {
                                size_t at = (oh * g.stride + i) * g.width + ow * g.stride + j;
                                if (x[off + p * in + at] > x[off + p * in + best]) best = at;
                            }
                        wy[p * out + oh * g.out_w + ow] = x[off + p * in + best];
                        wi[p * out + oh * g.out_w + ow] = (float)best;
                    }
            tsr_buf *bx = upload(be, x, (nin + off) * 4), *by = buf_new(be, (nout + off) * 4);
            tsr_buf *bi = buf_new(be, (nout + off) * 4);
            OK(be, tsr_op_maxpool_forward(be, &g, tsr_ref_at(bx, off), tsr_ref_at(by, off),
                                          tsr_ref_at(bi, off)));
            float *gy = xcalloc(nout + off, 4), *gi = xcalloc(nout + off, 4);
            int32_t *idx = xcalloc(nout + off, 4);
            download(by, gy, (nout + off) * 4);
            download(bi, idx, (nout + off) * 4);
            for (size_t i = 0; i < nout; i++) gi[i] = (float)idx[off + i];
            char what[128];
            snprintf(what, sizeof what, "maxpool_forward y planes=%zu %zux%zu size=%zu stride=%zu",
                     g.planes, g.height, g.width, g.size, g.stride);
            check_exact(be, what, gy + off, wy, nout);
            snprintf(what, sizeof what, "maxpool_forward idx planes=%zu %zux%zu size=%zu stride=%zu",
                     g.planes, g.height, g.width, g.size, g.stride);
            check_exact(be, what, gi, wi, nout);
            /* backward: dx is overwritten (garbage first), dy scattered to the argmax */
            float *dy = random_floats(nout + off, 600 + pc, -1, 1);
            OK(be, tsr_buf_write(by, 0, dy, (nout + off) * 4));
            OK(be, tsr_op_fill(be, tsr_ref_at(bx, 0), nin + off, 77.0f));
            OK(be, tsr_op_maxpool_backward(be, &g, tsr_ref_at(by, off), tsr_ref_at(bi, off),
                                           tsr_ref_at(bx, off)));
            double *ref = xcalloc(nin + off, sizeof *ref), *tol = xcalloc(nin + off, sizeof *tol);
            for (size_t i = 0; i < off; i++) ref[i] = 77.0;
            for (size_t p = 0; p < g.planes; p++)
                for (size_t o = 0; o < out; o++) {
                    size_t at = off + p * in + (size_t)wi[p * out + o];
                    ref[at] += dy[off + p * out + o];
                    tol[at] += 8 * U * fabs(dy[off + p * out + o]); /* <= size^2 terms */
                }
            for (size_t i = 0; i < nin + off; i++) tol[i] *= (double)(g.size * g.size + 2);
            float *gx = xcalloc(nin + off, 4);
            download(bx, gx, (nin + off) * 4);
            snprintf(what, sizeof what, "maxpool_backward planes=%zu %zux%zu size=%zu stride=%zu",
                     g.planes, g.height, g.width, g.size, g.stride);
            check_close(be, what, gx, ref, tol, nin + off);
            /* a relu's backward folded in, on a relu's output (zeros, and ties among them): the
             * bits of maxpool_backward then relu_backward */
            for (size_t i = 0; i < nin + off; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
            tsr_buf *br = upload(be, x, (nin + off) * 4), *bry = buf_new(be, nout * 4), *bt = buf_new(be, nin * 4);
            OK(be, tsr_op_maxpool_forward(be, &g, tsr_ref_at(br, off), tsr_ref_at(bry, 0), tsr_ref_at(bi, off)));
            OK(be, tsr_op_maxpool_backward(be, &g, tsr_ref_at(by, off), tsr_ref_at(bi, off), tsr_ref_at(bt, 0)));
            OK(be, tsr_op_relu_backward(be, nin, tsr_ref_at(br, off), tsr_ref_at(bt, 0), tsr_ref_at(bt, 0)));
            download(bt, gx, nin * 4);
            OK(be, tsr_op_fill(be, tsr_ref_at(bt, 0), nin, 77.0f));
            tsr_status folded = tsr_op_maxpool_backward_relu(be, &g, tsr_ref_at(by, off), tsr_ref_at(bi, off),
                                                             tsr_ref_at(bry, 0), tsr_ref_at(bt, 0));
            if (!tsr_op_maxpool_relu_folds(be)) {
                assert_int_equal(folded, TSR_ERR_UNSUPPORTED);
            } else {
                OK(be, folded);
                float *gf = xcalloc(nin, 4);
                download(bt, gf, nin * 4);
                if (memcmp(gf, gx, nin * 4))
                    fail_msg("[%s] maxpool_backward_relu planes=%zu %zux%zu size=%zu stride=%zu: not the bits "
                             "of maxpool_backward + relu_backward", be->device.id, g.planes, g.height, g.width,
                             g.size, g.stride);
                free(gf);
            }
            tsr_buf_free(br);
            tsr_buf_free(bry);
            tsr_buf_free(bt);
            tsr_buf_free(bx);
            tsr_buf_free(by);
            tsr_buf_free(bi);
            free(x);
            free(wy);
            free(wi);
            free(gy);
            free(gi);
            free(idx);
            free(dy);
            free(ref);
            free(tol);
            free(gx);
        }
    }
}

/* ---- dropout ---- */

static void test_dropout(void **state) {
    fixture *fx = *state;
    static const float probs[] = {0.0f, 0.3f, 0.9f};
    const size_t n = 100000, off = 2;
    const uint64_t seed = 0x1234abcdULL;
    float *x = random_floats(n + off, 700, -3, 3);
    float *first_mask[3] = {NULL, NULL, NULL};
    float *got = xcalloc(n + off, 4), *mask = xcalloc(n + off, 4);
    double *ref = xcalloc(n, sizeof *ref), *tol = xcalloc(n, sizeof *tol);
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t pi = 0; pi < TSR_ARRAY_SIZE(probs); pi++) {
            const float p = probs[pi];
            tsr_buf *bx = upload(be, x, (n + off) * 4), *by = buf_new(be, (n + off) * 4);
            tsr_buf *bm = buf_new(be, (n + off) * 4);
            OK(be, tsr_op_dropout_forward(be, n, p, seed, tsr_ref_at(bx, off), tsr_ref_at(by, off),
                                          tsr_ref_at(bm, off)));
            download(by, got, (n + off) * 4);
            download(bm, mask, (n + off) * 4);
            const double keep_scale = 1.0 / (1.0 - (double)p);
            size_t kept = 0, wrong = 0;
            for (size_t i = 0; i < n; i++) {
                /* the keep decision is the shared hash of (seed, index within the operand) */
                int keep = tsr_dropout_keep(seed, i, p);
                kept += (size_t)keep;
                double m = mask[off + i];
                if (keep ? fabs(m - keep_scale) > 4 * U * keep_scale : m != 0.0) wrong++;
                ref[i] = keep ? (double)x[off + i] * keep_scale : 0.0;
                tol[i] = 8 * U * fabs(ref[i]);
            }
            if (wrong)
                fail_msg("[%s] dropout p=%g: %zu mask values differ from the shared hash",
                         be->device.id, (double)p, wrong);
            char what[64];
            snprintf(what, sizeof what, "dropout y p=%g", (double)p);
            check_close(be, what, got + off, ref, tol, n);
            /* the kept fraction is 1-p within ~5 standard deviations */
            double frac = (double)kept / (double)n, sd = sqrt(p * (1 - p) / (double)n);
            if (fabs(frac - (1 - p)) > 5 * sd + 1e-12)
                fail_msg("[%s] dropout p=%g kept %.4f", be->device.id, (double)p, frac);
            /* identical masks on every backend, bit for bit */
            if (!first_mask[pi]) {
                first_mask[pi] = xcalloc(n, 4);
                memcpy(first_mask[pi], mask + off, n * 4);
            } else if (memcmp(first_mask[pi], mask + off, n * 4) != 0) {
                fail_msg("[%s] dropout p=%g: mask differs from device %s", be->device.id,
                         (double)p, fx->be[0]->device.id);
            }
            tsr_buf_free(bx);
            tsr_buf_free(by);
            tsr_buf_free(bm);
        }
    }
    for (int i = 0; i < 3; i++) free(first_mask[i]);
    free(x);
    free(got);
    free(mask);
    free(ref);
    free(tol);
}

/* ---- embedding ---- */

/* Lookup and scatter-add against plain C: forward copies rows exactly (NaN for an id outside
 * the vocabulary); backward adds in token order, so a float reference in the same order is
 * matched bit for bit, repeated ids included, on every device alike. */
static void test_embed(void **state) {
    fixture *fx = *state;
    const size_t count = 300, dim = 37, vocab = 11, off = 3;
    int32_t *ids = xcalloc(count + off, sizeof *ids);
    for (size_t i = 0; i < count; i++) ids[off + i] = (int32_t)((i * 7 + i / 5) % vocab);
    ids[off + 5] = -1;                /* outside the vocabulary: NaN row, no gradient */
    ids[off + 9] = (int32_t)vocab;
    float *table = random_floats(vocab * dim + off, 901, -1, 1);
    float *dy = random_floats(count * dim + off, 902, -1, 1);
    float *dt0 = random_floats(vocab * dim + off, 903, -1, 1);
    float *ref = xcalloc(count * dim, 4), *refg = xcalloc(vocab * dim, 4);
    float *got = xcalloc(count * dim + off, 4), *gotg = xcalloc(vocab * dim + off, 4);
    for (size_t i = 0; i < count; i++)
        for (size_t c = 0; c < dim; c++) {
            int32_t id = ids[off + i];
            ref[i * dim + c] = id < 0 || (size_t)id >= vocab ? NAN : table[off + (size_t)id * dim + c];
        }
    memcpy(refg, dt0 + off, vocab * dim * 4);
    for (size_t i = 0; i < count; i++) {
        int32_t id = ids[off + i];
        if (id < 0 || (size_t)id >= vocab) continue;
        for (size_t c = 0; c < dim; c++) refg[(size_t)id * dim + c] += dy[off + i * dim + c];
    }
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        tsr_buf *bi = upload(be, ids, (count + off) * 4), *bt = upload(be, table, (vocab * dim + off) * 4);
        tsr_buf *by = buf_new(be, (count * dim + off) * 4), *bd = upload(be, dy, (count * dim + off) * 4);
        tsr_buf *bg = upload(be, dt0, (vocab * dim + off) * 4);
        OK(be, tsr_op_embed_forward(be, count, dim, vocab, tsr_ref_at(bi, off), tsr_ref_at(bt, off),
                                    tsr_ref_at(by, off)));
        download(by, got, (count * dim + off) * 4);
        for (size_t i = 0; i < count * dim; i++)
            if (isnan(ref[i]) ? !isnan(got[off + i]) : memcmp(&ref[i], &got[off + i], 4))
                fail_msg("[%s] embed_forward element %zu: %g, expected %g", be->device.id, i,
                         (double)got[off + i], (double)ref[i]);
        OK(be, tsr_op_embed_backward(be, count, dim, vocab, tsr_ref_at(bi, off), tsr_ref_at(bd, off),
                                     tsr_ref_at(bg, off)));
        download(bg, gotg, (vocab * dim + off) * 4);
        check_exact(be, "embed_backward", gotg + off, refg, vocab * dim);
        if (memcmp(gotg, dt0, off * 4)) fail_msg("[%s] embed_backward wrote before its range", be->device.id);
        /* ranges are checked before dispatch */
        check_error(be, tsr_op_embed_forward(be, count + 1, dim, vocab, tsr_ref_at(bi, off), tsr_ref_at(bt, off),
                                             tsr_ref_at(by, off)),
                    TSR_ERR_SHAPE, "ids", "embed_forward past the ids");
        check_error(be, tsr_op_embed_backward(be, count, dim, vocab + 1, tsr_ref_at(bi, off), tsr_ref_at(bd, off),
                                              tsr_ref_at(bg, off)),
                    TSR_ERR_SHAPE, "dtable", "embed_backward past the table");
        tsr_buf_free(bi);
        tsr_buf_free(bt);
        tsr_buf_free(by);
        tsr_buf_free(bd);
        tsr_buf_free(bg);
    }
    free(ids);
    free(table);
    free(dy);
    free(dt0);
    free(ref);
    free(refg);
    free(got);
    free(gotg);
}

/* ---- half precision ---- */

/* Value of a finite non-negative half with bits h (h <= 0x7BFF), from the definition. */
static double half_value(unsigned h) {
    unsigned e = h >> 10, m = h & 0x3FFu;
    return e ? ldexp(1024.0 + m, (int)e - 25) : ldexp((double)m, -24);
}

/* Reference float -> half: nearest finite half by binary search, ties to even mantissa,
 * magnitudes >= 65520 (max + half an ulp) to Inf. */
static uint16_t ref_f32_to_f16(float f) {
    unsigned sign = signbit(f) ? 0x8000u : 0;
    if (isnan(f)) return (uint16_t)(sign | 0x7E00u);
    double a = fabs((double)f);
    if (a >= 65520.0) return (uint16_t)(sign | 0x7C00u);
    unsigned lo = 0, hi = 0x7BFF; /* largest h with value(h) <= a */
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (half_value(mid) <= a) lo = mid;
        else hi = mid - 1;
    }
    unsigned h = lo;
    if (h < 0x7BFF) {
        double dlo = a - half_value(h), dhi = half_value(h + 1) - a;
        if (dhi < dlo || (dhi == dlo && (h & 1))) h++;
    }
    return (uint16_t)(sign | h);
}

/* Reference float -> bfloat16 from the definition: the nearer of the two bf16 values around
 * x (truncation and the next one up in magnitude), ties to the even pattern, magnitudes past
 * the largest finite bf16 by half an ulp or more to Inf, a NaN to a quiet NaN. */
static uint16_t ref_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    unsigned sign = u >> 16 & 0x8000u;
    if (isnan(f)) return (uint16_t)(sign | 0x7FC0u);
    double a = fabs((double)f), max = ldexp(255.0, 120); /* (2 - 2^-7) 2^127 */
    if (a >= max + ldexp(1.0, 119)) return (uint16_t)(sign | 0x7F80u);
    unsigned lo = (u & 0x7FFFFFFFu) >> 16;
    uint32_t lob = (uint32_t)lo << 16, hib = (uint32_t)(lo + 1) << 16;
    float flo, fhi;
    memcpy(&flo, &lob, 4);
    memcpy(&fhi, &hib, 4);
    double dlo = a - (double)flo, dhi = (double)fhi - a;
    unsigned h = dhi < dlo || (dhi == dlo && (lo & 1)) ? lo + 1 : lo;
    return (uint16_t)(sign | h);
}

/* Every float of a 16-bit pattern, from the definition. */
static float ref_widen(tsr_precision p, unsigned h) {
    if (p == TSR_PRECISION_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    unsigned e = (h >> 10) & 0x1F, m = h & 0x3FF;
    double v = e == 31 ? (m ? NAN : INFINITY) : half_value(h & 0x7FFF);
    return (float)((h & 0x8000) ? -v : v);
}

static int is_nan16(tsr_precision p, uint16_t h) {
    return p == TSR_PRECISION_BF16 ? (h & 0x7F80) == 0x7F80 && (h & 0x7F)
                                   : (h & 0x7C00) == 0x7C00 && (h & 0x3FF);
}

/* narrow16 / widen16 on every device against the definitions: special values, ties,
 * subnormals, overflow and a sweep of exponents narrowed; all 65536 patterns widened. */
static void test_narrow_widen(void **state) {
    fixture *fx = *state;
    float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, -65520.0f,
                       1e6f, -1e30f, INFINITY, -INFINITY, NAN, 3.3895314e38f, -3.4e38f, FLT_MAX,
                       ldexpf(1, -24), ldexpf(1, -25), ldexpf(1.5f, -25), ldexpf(1, -26),
                       ldexpf(3, -25), ldexpf(1, -14), ldexpf(1023, -24), ldexpf(2047, -25),
                       1e-40f, -1e-45f, ldexpf(0x181, -141), ldexpf(0x180, -140), FLT_MIN,
                       1.0f + ldexpf(1, -11), 1.0f + ldexpf(3, -11), 1.0f + ldexpf(1, -8),
                       1.0f + ldexpf(3, -8), 1.0f + ldexpf(1, -8) + ldexpf(1, -20),
                       1.0f + ldexpf(1, -11) + ldexpf(1, -20), 2049.0f, 2051.0f, -2053.0f,
                       0.1f, 1.0f / 3.0f, 3.14159265f};
    const size_t ns = TSR_ARRAY_SIZE(special), nr = 20000, n = ns + nr;
    float *x = xcalloc(n, 4);
    memcpy(x, special, sizeof special);
    uint64_t s = 99;
    for (size_t i = 0; i < nr; i++) { /* random mantissas, exponents 2^-140 .. 2^127 */
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        float m = 1.0f + (float)((s >> 40) & 0xFFFFFF) / 16777216.0f;
        int e = i % 2 ? (int)((s >> 8) % 48) - 30 : (int)((s >> 8) % 268) - 140;
        x[ns + i] = ldexpf((s & 1) ? -m : m, e);
    }
    uint16_t *want = xcalloc(n, 2), *got = xcalloc(n + 1, 2), *all = xcalloc(65536, 2);
    float *all_got = xcalloc(65538, 4);
    for (unsigned h = 0; h < 65536; h++) all[h] = (uint16_t)h;
    static const tsr_precision precs[] = {TSR_PRECISION_BF16, TSR_PRECISION_FP16};
    for (size_t pi = 0; pi < 2; pi++) {
        tsr_precision p = precs[pi];
        const char *pn = tsr_precision_name(p);
        for (size_t i = 0; i < n; i++) want[i] = p == TSR_PRECISION_BF16 ? ref_f32_to_bf16(x[i]) : ref_f32_to_f16(x[i]);
        for (int d = 0; d < fx->count; d++) {
            tsr_backend *be = fx->be[d];
            tsr_buf *bx = upload(be, x, n * 4), *bh = buf_new(be, (n + 1) * 2);
            OK(be, tsr_op_narrow16(be, p, n, tsr_ref_at(bx, 0), tsr_ref_at(bh, 1)));
            download(bh, got, (n + 1) * 2);
            for (size_t i = 0; i < n; i++) {
                uint16_t g = got[i + 1], w = want[i];
                if (is_nan16(p, w) ? !is_nan16(p, g) : g != w)
                    fail_msg("[%s] narrow16 %s(%.9g = 0x%08x): got 0x%04x want 0x%04x", be->device.id, pn,
                             (double)x[i], (unsigned)(union { float f; uint32_t u; }){x[i]}.u, g, w);
            }
            tsr_buf *bh2 = upload(be, all, 65536 * 2), *bx2 = buf_new(be, (65536 + 2) * 4);
            OK(be, tsr_op_widen16(be, p, 65536, tsr_ref_at(bh2, 0), tsr_ref_at(bx2, 2)));
            download(bx2, all_got, 65538 * 4);
            for (unsigned h = 0; h < 65536; h++) {
                float g = all_got[h + 2], w = ref_widen(p, h);
                if (isnan(w) ? !isnan(g) : (g != w || signbit(g) != signbit(w)))
                    fail_msg("[%s] widen16 %s(0x%04x): got %.9g want %.9g", be->device.id, pn, h,
                             (double)g, (double)w);
            }
            tsr_buf_free(bx);
            tsr_buf_free(bh);
            tsr_buf_free(bh2);
            tsr_buf_free(bx2);
        }
    }
    free(x);
    free(want);
    free(got);
    free(all);
    free(all_got);
}

/* ---- optimizers ---- */

static void test_sgd(void **state) {
    fixture *fx = *state;
    static const tsr_sgd_params params[] = {
        {0.1f, 0.0f, 0.0f, 0, 0.0f},    /* plain */
        {0.05f, 0.0f, 0.01f, 0, 0.3f},  /* plain + weight decay, gradient scaled */
        {0.1f, 0.9f, 0.0f, 0, 1.0f},    /* momentum */
        {0.1f, 0.9f, 5e-4f, 1, 0.7f},   /* nesterov + weight decay, gradient scaled */
        {0.01f, 0.5f, 0.1f, 0, 0.0f},
    };
    static const size_t sizes[] = {1, 7, 513, 100000};
    const size_t off = 1;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t pi = 0; pi < TSR_ARRAY_SIZE(params); pi++)
            for (size_t si = 0; si < TSR_ARRAY_SIZE(sizes); si++) {
                const tsr_sgd_params *p = &params[pi];
                const size_t n = sizes[si], tot = n + off;
                float *w = random_floats(tot, 800 + si, -1, 1), *g = random_floats(tot, 810 + si, -1, 1);
                float *v = random_floats(tot, 820 + si, -0.5f, 0.5f);
                tsr_buf *bw = upload(be, w, tot * 4), *bg = upload(be, g, tot * 4);
                tsr_buf *bv = upload(be, v, tot * 4);
                /* without momentum v is optional: pass none */
                tsr_ref rv = p->momentum != 0.0f ? tsr_ref_at(bv, off) : tsr_ref_at(NULL, 0);
                OK(be, tsr_op_sgd_update(be, n, p, tsr_ref_at(bw, off), tsr_ref_at(bg, off), rv));
                double *rw = xcalloc(tot, sizeof *rw), *tw = xcalloc(tot, sizeof *tw);
                double *rvv = xcalloc(tot, sizeof *rvv), *tv = xcalloc(tot, sizeof *tv);
                rw[0] = w[0];
                rvv[0] = v[0];
                const double gs = p->grad_scale == 0.0f ? 1.0 : p->grad_scale;
                for (size_t i = off; i < tot; i++) {
                    double gi = (double)g[i] * gs + (double)p->weight_decay * w[i];
                    double ga = fabs(g[i] * gs) + fabs((double)p->weight_decay * w[i]);
                    double vi = v[i], va = fabs(v[i]);
                    double upd = gi, ua = ga;
                    if (p->momentum != 0.0f) {
                        vi = p->momentum * (double)v[i] + gi;
                        va = fabs(p->momentum * (double)v[i]) + ga;
                        upd = p->nesterov ? gi + p->momentum * vi : vi;
                        ua = p->nesterov ? ga + fabs((double)p->momentum) * va : va;
                    }
                    rvv[i] = vi;
                    tv[i] = 16 * U * va;
                    rw[i] = w[i] - (double)p->lr * upd;
                    tw[i] = 16 * U * (fabs(w[i]) + fabs((double)p->lr) * ua);
                }
                float *gw = xcalloc(tot, 4), *gv = xcalloc(tot, 4);
                download(bw, gw, tot * 4);
                download(bv, gv, tot * 4);
                char what[128];
                snprintf(what, sizeof what, "sgd w lr=%g momentum=%g wd=%g nesterov=%d n=%zu",
                         (double)p->lr, (double)p->momentum, (double)p->weight_decay, p->nesterov, n);
                check_close(be, what, gw, rw, tw, tot);
                memcpy(what + 4, "v", 1);
                check_close(be, what, gv, rvv, tv, tot);
                tsr_buf_free(bw);
                tsr_buf_free(bg);
                tsr_buf_free(bv);
                free(w);
                free(g);
                free(v);
                free(rw);
                free(tw);
                free(rvv);
                free(tv);
                free(gw);
                free(gv);
            }
    }
}

static void test_adam(void **state) {
    fixture *fx = *state;
    static const struct { float lr, b1, b2, eps, wd; int decoupled, t; float gs; } cases[] = {
        {1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0, 1, 0.0f},   /* Adam, first step */
        {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 0, 3, 0.4f},  /* Adam + L2, gradient scaled */
        {2e-3f, 0.9f, 0.99f, 1e-6f, 1e-2f, 1, 10, 0.0f},  /* AdamW */
        {0.1f, 0.5f, 0.9f, 1e-3f, 0.1f, 1, 2, 0.55f},     /* AdamW, gradient scaled */
    };
    static const size_t sizes[] = {1, 7, 513, 100000};
    const size_t off = 2;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        for (size_t ci = 0; ci < TSR_ARRAY_SIZE(cases); ci++)
            for (size_t si = 0; si < TSR_ARRAY_SIZE(sizes); si++) {
                const size_t n = sizes[si], tot = n + off;
                tsr_adam_params p = {cases[ci].lr, cases[ci].b1, cases[ci].b2, cases[ci].eps,
                                     cases[ci].wd, cases[ci].decoupled,
                                     (float)(1 - pow(cases[ci].b1, cases[ci].t)),
                                     (float)(1 - pow(cases[ci].b2, cases[ci].t)), cases[ci].gs};
                float *w = random_floats(tot, 900 + si, -1, 1), *g = random_floats(tot, 910 + si, -1, 1);
                float *m = random_floats(tot, 920 + si, -0.1f, 0.1f);
                float *v = random_floats(tot, 930 + si, 0.0f, 0.01f);
                tsr_buf *bw = upload(be, w, tot * 4), *bg = upload(be, g, tot * 4);
                tsr_buf *bm = upload(be, m, tot * 4), *bv = upload(be, v, tot * 4);
                OK(be, tsr_op_adam_update(be, n, &p, tsr_ref_at(bw, off), tsr_ref_at(bg, off),
                                          tsr_ref_at(bm, off), tsr_ref_at(bv, off)));
                double *rw = xcalloc(tot, 8), *tw = xcalloc(tot, 8), *rm = xcalloc(tot, 8);
                double *tm = xcalloc(tot, 8), *rv = xcalloc(tot, 8), *tv = xcalloc(tot, 8);
                for (size_t i = 0; i < off; i++) {
                    rw[i] = w[i];
                    rm[i] = m[i];
                    rv[i] = v[i];
                }
                const double b1 = p.beta1, b2 = p.beta2, lr = p.lr, wd = p.weight_decay;
                const double gs = p.grad_scale == 0.0f ? 1.0 : p.grad_scale;
                for (size_t i = off; i < tot; i++) {
                    double gi = g[i] * gs + (p.decoupled ? 0.0 : wd * w[i]);
                    double mi = b1 * m[i] + (1 - b1) * gi;
                    double vi = b2 * v[i] + (1 - b2) * gi * gi;
                    double upd = (mi / p.bias_correction1) / (sqrt(vi / p.bias_correction2) + p.eps);
                    double dec = p.decoupled ? wd * w[i] : 0.0;
                    rm[i] = mi;
                    tm[i] = 16 * U * (fabs(b1 * m[i]) + fabs((1 - b1) * gi));
                    rv[i] = vi;
                    tv[i] = 16 * U * (b2 * v[i] + (1 - b2) * gi * gi);
                    rw[i] = w[i] - lr * (upd + dec);
                    /* upd is a ratio: its relative error grows with m's cancellation */
                    double m_rel = tm[i] / (fabs(mi) + 1e-30);
                    tw[i] = 16 * U * fabs(w[i]) +
                            lr * (fabs(upd) * (32 * U + m_rel) + 16 * U * fabs(dec));
                }
                float *gw = xcalloc(tot, 4), *gm = xcalloc(tot, 4), *gv = xcalloc(tot, 4);
                download(bw, gw, tot * 4);
                download(bm, gm, tot * 4);
                download(bv, gv, tot * 4);
                char what[128];
                snprintf(what, sizeof what, "%s m lr=%g wd=%g t=%d n=%zu",
                         p.decoupled ? "adamw" : "adam ", (double)p.lr, (double)p.weight_decay,
                         cases[ci].t, n);
                check_close(be, what, gm, rm, tm, tot);
                what[6] = 'v';
                check_close(be, what, gv, rv, tv, tot);
                what[6] = 'w';
                check_close(be, what, gw, rw, tw, tot);
                tsr_buf_free(bw);
                tsr_buf_free(bg);
                tsr_buf_free(bm);
                tsr_buf_free(bv);
                free(w);
                free(g);
                free(m);
                free(v);
                free(rw);
                free(tw);
                free(rm);
                free(tm);
                free(rv);
                free(tv);
                free(gw);
                free(gm);
                free(gv);
            }
    }
}

/* ---- error paths ---- */

/* A gradient factor folded into the update gives the bits of scale() then the update, and
 * leaves g as it was (the trainer's clipping relies on both). */
static void test_optim_grad_scale(void **state) {
    fixture *fx = *state;
    const size_t n = 100003; /* past the host's threading grain, with a vector tail */
    const float coef = 0.3141f;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        float *w = random_floats(n, 1001, -1, 1), *g = random_floats(n, 1002, -3, 3);
        float *m = random_floats(n, 1003, -0.1f, 0.1f), *v = random_floats(n, 1004, 0.0f, 0.01f);
        for (int kind = 0; kind < 4; kind++) { /* sgd momentum, sgd nesterov, adam + L2, adamw */
            float *out[2][4];
            for (int fused = 0; fused < 2; fused++) {
                tsr_buf *bw = upload(be, w, n * 4), *bg = upload(be, g, n * 4);
                tsr_buf *bm = upload(be, m, n * 4), *bv = upload(be, v, n * 4);
                if (!fused) OK(be, tsr_op_scale(be, n, coef, tsr_ref_at(bg, 0)));
                float s = fused ? coef : 0.0f;
                if (kind < 2) {
                    tsr_sgd_params p = {0.05f, 0.9f, 1e-3f, kind, s};
                    OK(be, tsr_op_sgd_update(be, n, &p, tsr_ref_at(bw, 0), tsr_ref_at(bg, 0),
                                             tsr_ref_at(bv, 0)));
                } else {
                    tsr_adam_params p = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, kind == 3, 0.271f, 0.0975f, s};
                    OK(be, tsr_op_adam_update(be, n, &p, tsr_ref_at(bw, 0), tsr_ref_at(bg, 0),
                                              tsr_ref_at(bm, 0), tsr_ref_at(bv, 0)));
                }
                tsr_buf *bufs[4] = {bw, bm, bv, bg};
                for (int k = 0; k < 4; k++) {
                    out[fused][k] = xcalloc(n, 4);
                    download(bufs[k], out[fused][k], n * 4);
                    tsr_buf_free(bufs[k]);
                }
            }
            static const char *const names[4] = {"w", "m", "v", "g"};
            for (int k = 0; k < 3; k++)
                if (memcmp(out[0][k], out[1][k], n * 4))
                    fail_msg("[%s] optimizer %d: %s with grad_scale differs from scale() then update",
                             be->device.id, kind, names[k]);
            if (memcmp(out[1][3], g, n * 4))
                fail_msg("[%s] optimizer %d: grad_scale changed g", be->device.id, kind);
            for (int f = 0; f < 2; f++)
                for (int k = 0; k < 4; k++) free(out[f][k]);
        }
        free(w);
        free(g);
        free(m);
        free(v);
    }
}

static void test_errors(void **state) {
    fixture *fx = *state;
    for (int d = 0; d < fx->count; d++) {
        tsr_backend *be = fx->be[d];
        tsr_buf *a = buf_new(be, 64 * 4), *b = buf_new(be, 64 * 4);
        tsr_ref ra = tsr_ref_at(a, 0), rb = tsr_ref_at(b, 0);
        /* ranges past the end name the operand */
        check_error(be, tsr_op_axpy(be, 60, 1.0f, ra, tsr_ref_at(b, 10)), TSR_ERR_SHAPE,
                    "operand y", "axpy past the end of y");
        check_error(be, tsr_op_fill(be, tsr_ref_at(a, 65), 0, 1.0f), TSR_ERR_SHAPE, "operand x",
                    "fill at an offset past the end");
        check_error(be, tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, 8, 8, 8, 1.0f, ra, 8, rb, 8,
                                    0.0f, tsr_ref_at(b, 1), 8),
                    TSR_ERR_SHAPE, "operand C", "gemm C one element too long");
        check_error(be, tsr_op_gemm(be, TSR_TRANS, TSR_NO_TRANS, 4, 4, 4, 1.0f, ra, 3, rb, 4,
                                    0.0f, rb, 4),
                    TSR_ERR_SHAPE, "A", "gemm lda smaller than the columns of A");
        check_error(be, tsr_op_gemm_batched(be, TSR_NO_TRANS, TSR_NO_TRANS, 4, 4, 4, 1.0f, ra, 4,
                                            0, rb, 4, 17, 0.0f, tsr_ref_at(a, 16), 4, 16, 4),
                    TSR_ERR_SHAPE, "operand B", "gemm_batched B past the end");
        check_error(be, tsr_op_sum(be, 10, ra, tsr_ref_at(b, 64)), TSR_ERR_SHAPE, "operand out",
                    "sum out past the end");
        check_error(be, tsr_op_transpose(be, 3, 4, 5, ra, tsr_ref_at(b, 5)), TSR_ERR_SHAPE,
                    "operand y", "transpose y past the end");
        check_error(be, tsr_op_transpose(be, 2, 3, 4, ra, tsr_ref_at(a, 23)), TSR_ERR_INVALID_ARG,
                    "overlap", "transpose onto an overlapping y");
        check_error(be, tsr_op_softmax_xent_forward(be, 8, 10, ra, rb, ra, rb), TSR_ERR_SHAPE,
                    "operand logits", "softmax logits too short");
        check_error(be, tsr_op_narrow16(be, TSR_PRECISION_FP16, 64, ra, tsr_ref_at(b, 100)), TSR_ERR_SHAPE,
                    "operand h", "narrow16 h past the end (2-byte elements)");
        check_error(be, tsr_op_widen16(be, TSR_PRECISION_FP32, 4, ra, rb), TSR_ERR_INVALID_ARG,
                    "not bf16 (1) or fp16 (2)", "widen16 in fp32");
        uint8_t bytes[8] = {0};
        check_error(be, tsr_buf_write(a, 64 * 4 - 4, bytes, 8), TSR_ERR_SHAPE, "past the end",
                    "write past the end");
        check_error(be, tsr_buf_read(a, 64 * 4 + 1, bytes, 0), TSR_ERR_SHAPE, "past the end",
                    "read at an offset past the end");
        /* a buffer of another backend */
        tsr_backend *other = fx->be[(d + 1) % fx->count];
        tsr_backend *extra = NULL;
        if (other == be) { /* one device: a second backend instance is another backend */
            OK(be, tsr_backend_open(fx->ctx, d, &extra));
            other = extra;
        }
        tsr_buf *ob = buf_new(other, 64 * 4);
        check_error(be, tsr_op_axpy(be, 4, 1.0f, tsr_ref_at(ob, 0), rb), TSR_ERR_INVALID_ARG,
                    "operand x belongs to another backend", "axpy with a foreign x");
        check_error(be, tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, 2, 2, 2, 1.0f, ra, 2, rb, 2,
                                    0.0f, tsr_ref_at(ob, 0), 2),
                    TSR_ERR_INVALID_ARG, "operand C", "gemm with a foreign C");
        check_error(be, tsr_buf_copy(a, 0, ob, 0, 16), TSR_ERR_INVALID_ARG, "two backends",
                    "copy between backends");
        tsr_buf_free(ob);
        tsr_backend_free(extra);
        check_error(be, tsr_op_relu_forward(be, 4, tsr_ref_at(NULL, 0), rb), TSR_ERR_INVALID_ARG,
                    "operand x is NULL", "relu with a NULL x");
        /* bad geometry */
        tsr_conv_geom cg = {1, 1, 4, 4, 3, 3, 1, 1, 1, 1, 0, 0};
        assert_int_equal(tsr_conv_geom_finish(&cg), TSR_OK);
        tsr_conv_geom bad = cg;
        bad.out_h++; /* not what the other fields give */
        check_error(be, tsr_op_im2col(be, &bad, ra, rb), TSR_ERR_SHAPE, "does not fit",
                    "im2col with inconsistent out_h");
        bad = cg;
        bad.kernel_h = 7; /* larger than the padded image */
        check_error(be, tsr_op_col2im(be, &bad, ra, rb), TSR_ERR_SHAPE, "does not fit",
                    "col2im with a kernel larger than the image");
        bad = cg;
        bad.stride_w = 0;
        check_error(be, tsr_op_im2col(be, &bad, ra, rb), TSR_ERR_SHAPE, "does not fit",
                    "im2col with stride 0");
        tsr_conv_geom big = {2, 3, 8, 8, 3, 3, 1, 1, 1, 1, 0, 0};
        assert_int_equal(tsr_conv_geom_finish(&big), TSR_OK);
        check_error(be, tsr_op_im2col(be, &big, ra, rb), TSR_ERR_SHAPE, "operand x",
                    "im2col with an image larger than x");
        check_error(be, tsr_op_im2col(be, NULL, ra, rb), TSR_ERR_INVALID_ARG, "geometry",
                    "im2col without geometry");
        tsr_pool_geom pg = {1, 4, 4, 2, 2, 0, 0};
        assert_int_equal(tsr_pool_geom_finish(&pg), TSR_OK);
        tsr_pool_geom pbad = pg;
        pbad.size = 5;
        check_error(be, tsr_op_maxpool_forward(be, &pbad, ra, rb, ra), TSR_ERR_SHAPE,
                    "does not fit", "maxpool window larger than the plane");
        pbad = pg;
        pbad.out_w = 3;
        check_error(be, tsr_op_maxpool_backward(be, &pbad, ra, rb, ra), TSR_ERR_SHAPE,
                    "does not fit", "maxpool with inconsistent out_w");
        pbad = pg;
        pbad.planes = 5; /* 5*16 inputs > 64 */
        check_error(be, tsr_op_maxpool_forward(be, &pbad, ra, rb, tsr_ref_at(b, 0)), TSR_ERR_SHAPE,
                    "operand x", "maxpool input larger than x");
        assert_int_equal(tsr_pool_geom_finish(NULL), TSR_ERR_SHAPE);
        /* bad scalar arguments */
        check_error(be, tsr_op_dropout_forward(be, 4, 1.0f, 1, ra, rb, ra), TSR_ERR_INVALID_ARG,
                    "drop probability", "dropout with p = 1");
        tsr_adam_params ap = {1e-3f, 0.9f, 0.999f, 1e-8f, 0, 0, 0.0f, 0.001f, 0.0f};
        check_error(be, tsr_op_adam_update(be, 4, &ap, ra, rb, ra, rb), TSR_ERR_INVALID_ARG,
                    "bias corrections", "adam with bias correction 0");
        check_error(be, tsr_op_gemm(be, (tsr_trans)2, TSR_NO_TRANS, 2, 2, 2, 1.0f, ra, 2, rb, 2,
                                    0.0f, rb, 2),
                    TSR_ERR_INVALID_ARG, "transpose", "gemm with a bad transpose flag");
        tsr_buf_free(a);
        tsr_buf_free(b);
    }
}

/* Every allocation failure while opening a backend and allocating buffers reports
 * TSR_ERR_NO_MEMORY (or the device's out-of-memory) and leaks nothing. */
static void test_alloc_failures(void **state) {
    fixture *fx = *state;
    for (int d = 0; d < fx->count; d++) {
        const char *id = fx->be[d]->device.id;
        tsr_test_alloc ta;
        tsr_test_alloc_init(&ta, 0);
        tsr_context_options o;
        tsr_context_options_init(&o);
        o.allocator = &ta.allocator;
        if (fx->be[d]->device.backend == TSR_BACKEND_HOST) o.flags = TSR_CONTEXT_NO_OPENCL;
        tsr_context *ctx = NULL;
        assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
        int index = tsr_context_find_device(ctx, id);
        if (index < 0) fail_msg("[%s] device not found again in a second context", id);
        /* count the allocations of one open + alloc + free cycle */
        long live0 = ta.live, calls0 = ta.calls;
        tsr_backend *be = NULL;
        tsr_buf *buf = NULL;
        assert_int_equal(tsr_backend_open(ctx, index, &be), TSR_OK);
        assert_int_equal(tsr_buf_alloc(be, 4096, &buf), TSR_OK);
        tsr_buf_free(buf);
        tsr_backend_free(be);
        long needed = ta.calls - calls0;
        if (ta.live != live0) fail_msg("[%s] open/alloc/free leaks %ld blocks", id, ta.live - live0);
        for (long k = 1; k <= needed; k++) {
            ta.fail_at = ta.calls + k; /* the k-th allocation from here fails, and all after */
            be = NULL;
            buf = NULL;
            tsr_status st = tsr_backend_open(ctx, index, &be);
            if (st == TSR_OK) {
                st = tsr_buf_alloc(be, 4096, &buf);
                if (st == TSR_OK) fail_msg("[%s] allocation %ld of %ld failed unnoticed", id, k, needed);
                if (buf) fail_msg("[%s] failed buf_alloc left a buffer", id);
            } else if (be) {
                fail_msg("[%s] failed open left a backend", id);
            }
            if (st != TSR_ERR_NO_MEMORY && st != TSR_ERR_DEVICE_MEMORY)
                fail_msg("[%s] allocation %ld failing gave %s: %s", id, k, tsr_status_name(st),
                         tsr_context_last_error(ctx));
            tsr_backend_free(be);
            if (ta.live != live0)
                fail_msg("[%s] allocation %ld failing leaked %ld blocks", id, k, ta.live - live0);
        }
        ta.fail_at = 0;
        /* a buffer larger than memory: a clean error, nothing leaked */
        assert_int_equal(tsr_backend_open(ctx, index, &be), TSR_OK);
        tsr_status st = tsr_buf_alloc(be, SIZE_MAX - 8, &buf);
        if (st != TSR_ERR_NO_MEMORY && st != TSR_ERR_DEVICE_MEMORY)
            fail_msg("[%s] huge buffer gave %s", id, tsr_status_name(st));
        assert_null(buf);
        tsr_backend_free(be);
        tsr_context_free(ctx);
        if (ta.live != 0) fail_msg("[%s] %ld blocks live after the context is freed", id, ta.live);
    }
}

/* The host backend splits large ops over threads; the split must not change any bit. */
#define HOST_WGRAD_FLOATS (10 * 3 * 5 * 5) /* the sequence's weight gradient from columns */
static void run_host_sequence(tsr_backend *be, float *out, size_t n) {
    float *x = random_floats(n, 1234, -2, 2), *g = random_floats(n, 1235, -1, 1);
    tsr_buf *bx = upload(be, x, n * 4), *bg = upload(be, g, n * 4), *bm = buf_new(be, n * 4);
    tsr_buf *bv = buf_new(be, n * 4), *bc = buf_new(be, n * 4 * 9), *bs = buf_new(be, 4 * 64);
    OK(be, tsr_op_fill(be, tsr_ref_at(bm, 0), n, 0.0f));
    OK(be, tsr_op_fill(be, tsr_ref_at(bv, 0), n, 0.0f));
    OK(be, tsr_op_fill(be, tsr_ref_at(bs, 0), 64, 0.0f));
    tsr_adam_params ap = {1e-2f, 0.9f, 0.999f, 1e-8f, 1e-2f, 1, 0.1f, 0.001f, 0.0f};
    OK(be, tsr_op_adam_update(be, n, &ap, tsr_ref_at(bx, 0), tsr_ref_at(bg, 0), tsr_ref_at(bm, 0),
                              tsr_ref_at(bv, 0)));
    OK(be, tsr_op_relu_forward(be, n, tsr_ref_at(bx, 0), tsr_ref_at(bx, 0)));
    tsr_conv_geom cg = {4, 16, 32, 32, 3, 3, 1, 1, 1, 1, 0, 0}; /* 4*16*32*32 = n */
    assert_int_equal(tsr_conv_geom_finish(&cg), TSR_OK);
    OK(be, tsr_op_im2col(be, &cg, tsr_ref_at(bx, 0), tsr_ref_at(bc, 0)));
    OK(be, tsr_op_col2im(be, &cg, tsr_ref_at(bc, 0), tsr_ref_at(bg, 0)));
    OK(be, tsr_op_bias_grad(be, 4, 64, 256, tsr_ref_at(bg, 0), tsr_ref_at(bs, 0)));
    if (tsr_op_conv_direct(be, &cg, 16, TSR_CONV_FORWARD) &&
        tsr_op_conv_direct(be, &cg, 16, TSR_CONV_BACKWARD)) { /* parts of the batch on the pool: same bits */
        OK(be, tsr_op_conv_forward(be, &cg, 16, tsr_ref_at(bx, 0), tsr_ref_at(bc, 0), tsr_ref_at(bm, 0)));
        OK(be, tsr_op_conv_backward(be, &cg, 16, tsr_ref_at(bm, 0), tsr_ref_at(bc, 0), tsr_ref_at(bg, 0), 1.0f,
                                    tsr_ref_at(bc, 4096), 1.0f, tsr_ref_at(bx, 0)));
    }
    tsr_pool_geom pg = {64, 32, 32, 3, 2, 0, 0};
    assert_int_equal(tsr_pool_geom_finish(&pg), TSR_OK);
    OK(be, tsr_op_maxpool_forward(be, &pg, tsr_ref_at(bg, 0), tsr_ref_at(bm, 0), tsr_ref_at(bv, 0)));
    OK(be, tsr_op_maxpool_backward(be, &pg, tsr_ref_at(bm, 0), tsr_ref_at(bv, 0), tsr_ref_at(bx, 0)));
    /* a GEMM split by columns and per-image GEMMs spread over the threads */
    tsr_buf *bo = buf_new(be, 131072 * 4);
    OK(be, tsr_op_fill(be, tsr_ref_at(bo, 0), 131072, 0.5f));
    OK(be, tsr_op_gemm(be, TSR_NO_TRANS, TSR_TRANS, 64, 1024, 144, 1.0f, tsr_ref_at(bx, 0), 144,
                       tsr_ref_at(bc, 0), 144, 0.0f, tsr_ref_at(bo, 0), 1024));
    OK(be, tsr_op_gemm_batched(be, TSR_NO_TRANS, TSR_NO_TRANS, 16, 1024, 144, 1.0f,
                               tsr_ref_at(bx, 0), 144, 0, tsr_ref_at(bc, 0), 1024, 147456, 1.0f,
                               tsr_ref_at(bo, 65536), 1024, 16384, 4));
    download(bo, out + n + 64, 131072 * 4);
    tsr_buf_free(bo);
    /* a few-channel weight gradient from columns, its filter blocks over the threads */
    tsr_conv_geom wg = {4, 3, 16, 16, 5, 5, 1, 1, 2, 2, 0, 0};
    assert_int_equal(tsr_conv_geom_finish(&wg), TSR_OK);
    tsr_buf *bw = buf_new(be, HOST_WGRAD_FLOATS * 4);
    OK(be, tsr_op_fill(be, tsr_ref_at(bw, 0), HOST_WGRAD_FLOATS, 0.25f));
    if (tsr_op_conv_wgrad_cols(be, &wg, 10)) {
        OK(be, tsr_op_im2col(be, &wg, tsr_ref_at(bx, 0), tsr_ref_at(bc, 0)));
        OK(be, tsr_op_conv_wgrad(be, &wg, 10, tsr_ref_at(bg, 0), tsr_ref_at(bc, 0), 1.0f, tsr_ref_at(bw, 0)));
    }
    download(bw, out + n + 64 + 131072, HOST_WGRAD_FLOATS * 4);
    tsr_buf_free(bw);
    download(bx, out, n * 4);
    download(bs, out + n, 64 * 4);
    tsr_buf_free(bx);
    tsr_buf_free(bg);
    tsr_buf_free(bm);
    tsr_buf_free(bv);
    tsr_buf_free(bc);
    tsr_buf_free(bs);
    free(x);
    free(g);
}

static void test_host_threads(void **state) {
    fixture *fx = *state;
    const size_t n = 4 * 16 * 32 * 32;
    static const char *const counts[] = {"1", "2", "3", "5"};
    const size_t total = n + 64 + 131072 + HOST_WGRAD_FLOATS; /* outputs, bias gradient, GEMMs, dW */
    float *first = xcalloc(total, 4), *got = xcalloc(total, 4);
    for (size_t i = 0; i < TSR_ARRAY_SIZE(counts); i++) {
        /* the context's host_threads (what TSR_HOST_THREADS sets) */
        tsr_context_options o;
        tsr_context_options_init(&o);
        o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
        o.log_level = TSR_LOG_OFF;
        o.host_threads = atoi(counts[i]);
        tsr_context *ctx = NULL;
        OK(fx->be[0], tsr_context_create(&ctx, &o));
        tsr_backend *be = NULL;
        OK(fx->be[0], tsr_backend_host_create(ctx, &be));
        run_host_sequence(be, i ? got : first, n);
        tsr_backend_free(be);
        tsr_context_free(ctx);
        if (i && memcmp(first, got, total * 4) != 0)
            fail_msg("[host] results with %s threads differ from 1 thread", counts[i]);
    }
    free(first);
    free(got);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory),        cmocka_unit_test(test_typed_access_and_map),
        cmocka_unit_test(test_gemm),
        cmocka_unit_test(test_gemm_batched),  cmocka_unit_test(test_axpy_scale_mul),
        cmocka_unit_test(test_sum),           cmocka_unit_test(test_first_nonfinite),
        cmocka_unit_test(test_scan_sumsq),    cmocka_unit_test(test_bias),
        cmocka_unit_test(test_relu),          cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_im2col_col2im), cmocka_unit_test(test_transpose),
        cmocka_unit_test(test_conv_direct),
        cmocka_unit_test(test_conv_dinput), cmocka_unit_test(test_conv_wgrad),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_dropout),       cmocka_unit_test(test_embed),
        cmocka_unit_test(test_narrow_widen),
        cmocka_unit_test(test_sgd),           cmocka_unit_test(test_adam),
        cmocka_unit_test(test_optim_grad_scale),
        cmocka_unit_test(test_errors),        cmocka_unit_test(test_alloc_failures),
        cmocka_unit_test(test_host_threads),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
