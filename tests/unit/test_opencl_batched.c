/* CLBlastSgemmStridedBatched on the OpenCL devices, forced (AUTO uses it only on GPUs): a
 * shared A (stride 0), offsets and padded leading dimensions, against plain C. Kept apart from
 * test_opencl because compiling CLBlast's batched program on PoCL takes ~30 s of CPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "support/test_util.h"

/* Sanitizer builds: PoCL and its LLVM leak compiler state on every clBuildProgram; only
 * blocks allocated inside those libraries are suppressed. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\nleak:libclblast\n";
}
#if TSR_WITH_OPENCL
#include "backends/opencl/opencl.h"

static void ref_gemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                     size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double acc = 0;
            for (size_t p = 0; p < k; p++)
                acc += (double)(ta ? a[p * lda + i] : a[i * lda + p]) *
                       (double)(tb ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = (float)(alpha * acc + beta * c[i * ldc + j]);
        }
}

static void test_strided_batched_shared_a(void **state) {
    (void)state;
    tsr_context *ctx;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_HWLOC;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    int tested = 0;
    for (int d = 0; d < tsr_context_device_count(ctx); d++) {
        const tsr_device_info *info = tsr_context_device(ctx, d);
        if (info->backend != TSR_BACKEND_OPENCL) continue;
        tsr_opencl_options opts = {NULL, 0, TSR_CL_BATCHED_CLBLAST, 0, 0};
        tsr_backend *be;
        assert_int_equal(tsr_backend_opencl_create_ex(ctx, info, &opts, &be), TSR_OK);
        enum { M = 9, N = 10, K = 6, LD = 12, OFF = 3, BATCH = 4 };
        const size_t sb = K * LD + 2, sc = M * LD + 1, total = OFF + BATCH * 128;
        float *a = malloc(total * 4), *b = malloc(total * 4), *c = malloc(total * 4);
        float *ref = malloc(total * 4), *got = malloc(total * 4);
        assert_true(a && b && c && ref && got);
        tsr_test_fill_uniform(a, total, 1, -1, 1);
        tsr_test_fill_uniform(b, total, 2, -1, 1);
        tsr_test_fill_uniform(c, total, 3, -1, 1);
        memcpy(ref, c, total * 4);
        for (size_t i = 0; i < BATCH; i++) /* A shared by every batch entry */
            ref_gemm(0, 0, M, N, K, 1.5f, a + OFF, LD, b + OFF + i * sb, LD, -0.5f,
                     ref + OFF + i * sc, LD);
        tsr_buf *ba, *bb, *bc;
        assert_int_equal(tsr_buf_alloc(be, total * 4, &ba), TSR_OK);
        assert_int_equal(tsr_buf_alloc(be, total * 4, &bb), TSR_OK);
        assert_int_equal(tsr_buf_alloc(be, total * 4, &bc), TSR_OK);
        assert_int_equal(tsr_buf_write(ba, 0, a, total * 4), TSR_OK);
        assert_int_equal(tsr_buf_write(bb, 0, b, total * 4), TSR_OK);
        assert_int_equal(tsr_buf_write(bc, 0, c, total * 4), TSR_OK);
        assert_int_equal(tsr_op_gemm_batched(be, TSR_NO_TRANS, TSR_NO_TRANS, M, N, K, 1.5f,
                                             tsr_ref_at(ba, OFF), LD, 0, tsr_ref_at(bb, OFF), LD,
                                             sb, -0.5f, tsr_ref_at(bc, OFF), LD, sc, BATCH),
                         TSR_OK);
        assert_int_equal(tsr_buf_read(bc, 0, got, total * 4), TSR_OK);
        size_t worst;
        double e = tsr_test_rel_error(got, ref, total, 1e-5, 1e-4, &worst);
        if (e > 1) fail_msg("%s: element %zu is %g, want %g", info->id, worst, got[worst], ref[worst]);
        /* CLBlast itself took the shared A: no fallback to the loop */
        assert_int_equal(tsr_opencl_state(be)->batched_fallbacks, 0);
        tsr_buf_free(ba);
        tsr_buf_free(bb);
        tsr_buf_free(bc);
        free(a);
        free(b);
        free(c);
        free(ref);
        free(got);
        tsr_backend_free(be);
        tested++;
    }
    tsr_context_free(ctx);
    if (!tested) {
        TSR_TEST_SKIP("missing an OpenCL device (PoCL: Debian package pocl-opencl-icd)");
    }
}
#else
static void test_strided_batched_shared_a(void **state) {
    (void)state;
    TSR_TEST_SKIP("built without OpenCL (WITH_OPENCL=0)");
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_strided_batched_shared_a)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
