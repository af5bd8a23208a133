/* The tensor-core GEMM (backends/opencl/kernels/mma.cl) without NVIDIA hardware, against a
 * double reference of the rounded operands (mma_check.h: bf16, fp16, tf32; odd m, n, k across
 * tile edges; every transpose; offsets, padded leading dimensions, batches; beta 0):
 * - emulated: the kernel with the instruction replaced by its scalar stand-in
 *   (TSR_MMA_EMULATE), on every OpenCL device that is not NVIDIA (PoCL here): everything but
 *   mma.sync itself and the fragment layout macros' agreement with the hardware, which
 *   test_mma_hw checks on an NVIDIA device (SKIPPED elsewhere);
 * - selection: CLBlast unless asked for AND on such a device; bad settings refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/core/precision.h"
#include "support/test_util.h"

/* Sanitizer builds: PoCL and its LLVM leak compiler state on every clBuildProgram. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\nleak:libclblast\n";
}
#if TSR_WITH_OPENCL
#include "mma_check.h"

static void test_mma_emulated(void **state) {
    (void)state;
    tsr_context *ctx = context(0);
    int tested = 0;
    for (int d = 0; d < tsr_context_device_count(ctx); d++) {
        const tsr_device_info *info = tsr_context_device(ctx, d);
        if (info->backend != TSR_BACKEND_OPENCL || device_cc(ctx, info)) continue;
        run_all(ctx, info, 1);
        tested++;
    }
    tsr_context_free(ctx);
    if (!tested) TSR_TEST_SKIP("no OpenCL device other than NVIDIA's to emulate mma.sync on");
}

/* CLBlast unless tensor cores are asked for (options or context) AND the device qualifies. */
static void test_mma_selection(void **state) {
    (void)state;
    int tested = 0;
    for (int ctx_tc = 0; ctx_tc <= 2; ctx_tc++) {
        tsr_context *ctx = context(ctx_tc);
        for (int d = 0; d < tsr_context_device_count(ctx); d++) {
            const tsr_device_info *info = tsr_context_device(ctx, d);
            if (info->backend != TSR_BACKEND_OPENCL) continue;
            for (int want = TSR_CL_MMA_CONTEXT; want <= TSR_CL_MMA_TF32; want++) {
                tsr_opencl_options opts = {NULL, 0, TSR_CL_BATCHED_AUTO, want, 0};
                tsr_backend *be;
                assert_int_equal(tsr_backend_opencl_create_ex(ctx, info, &opts, &be), TSR_OK);
                tsr_cl *cl = tsr_opencl_state(be);
                int asked = want == TSR_CL_MMA_CONTEXT ? ctx_tc != 0 : want != TSR_CL_MMA_OFF;
                assert_int_equal(cl->mma != TSR_CL_MMA_OFF, asked && cl->nv_cc >= 80);
                /* a bf16 GEMM goes through mma.cl exactly when it is selected */
                enum { N = 24 };
                float x[N * N];
                tsr_test_fill_uniform(x, N * N, 7, -1, 1);
                tsr_buf *buf;
                assert_int_equal(tsr_buf_alloc(be, sizeof x, &buf), TSR_OK);
                assert_int_equal(tsr_buf_write(buf, 0, x, sizeof x), TSR_OK);
                assert_int_equal(tsr_backend_set_precision(be, TSR_PRECISION_BF16), TSR_OK);
                assert_int_equal(tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, 8, 8, 8, 1.0f,
                                             tsr_ref_at(buf, 0), 8, tsr_ref_at(buf, 64), 8, 0.0f,
                                             tsr_ref_at(buf, 128), 8),
                                 TSR_OK);
                assert_int_equal(tsr_backend_finish(be), TSR_OK);
                assert_int_equal(cl->mma_calls != 0, cl->mma != TSR_CL_MMA_OFF);
                tsr_buf_free(buf);
                tsr_backend_free(be);
                tested++;
            }
        }
        /* an unknown setting is refused, naming the field and what it takes */
        for (int d = 0; d < tsr_context_device_count(ctx); d++) {
            const tsr_device_info *info = tsr_context_device(ctx, d);
            if (info->backend != TSR_BACKEND_OPENCL) continue;
            tsr_opencl_options bad = {NULL, 0, TSR_CL_BATCHED_AUTO, 7, 0};
            tsr_backend *be = NULL;
            assert_int_equal(tsr_backend_opencl_create_ex(ctx, info, &bad, &be), TSR_ERR_INVALID_ARG);
            assert_null(be);
            assert_non_null(strstr(tsr_context_last_error(ctx), "tensor_cores 7"));
            break;
        }
        tsr_context_free(ctx);
    }
    if (!tested) TSR_TEST_SKIP("missing an OpenCL device (PoCL: Debian package pocl-opencl-icd)");
}
#else
static void test_mma_emulated(void **state) {
    (void)state;
    TSR_TEST_SKIP("built without OpenCL (WITH_OPENCL=0)");
}
static void test_mma_selection(void **state) {
    (void)state;
    TSR_TEST_SKIP("built without OpenCL (WITH_OPENCL=0)");
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mma_selection),
        cmocka_unit_test(test_mma_emulated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
