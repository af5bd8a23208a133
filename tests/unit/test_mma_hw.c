/* The tensor-core GEMM on the hardware it is for: mma.sync (backends/opencl/kernels/mma.cl)
 * on every NVIDIA OpenCL device of compute capability >= 8.0, the cases of mma_check.h (bf16,
 * fp16, tf32; odd shapes, transposes, batches) against a double reference of the rounded
 * operands. SKIPPED without such a device: never a pass for code that did not run. Until this
 * passes on NVIDIA hardware the kernel stays opt-in (TSR_TENSOR_CORES). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "lib/core/internal.h"
#include "support/test_util.h"

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\nleak:libclblast\n";
}
#if TSR_WITH_OPENCL
#include "mma_check.h"

static void test_mma_hardware(void **state) {
    (void)state;
    tsr_context *ctx = context(0);
    int tested = 0;
    for (int d = 0; d < tsr_context_device_count(ctx); d++) {
        const tsr_device_info *info = tsr_context_device(ctx, d);
        if (info->backend != TSR_BACKEND_OPENCL || device_cc(ctx, info) < 80) continue;
        run_all(ctx, info, 0);
        print_message("mma.sync verified on %s (%s)\n", info->id, info->name);
        tested++;
    }
    tsr_context_free(ctx);
    if (!tested)
        TSR_TEST_SKIP("no NVIDIA OpenCL device of compute capability >= 8.0: mma.sync not tested");
}
#else
static void test_mma_hardware(void **state) {
    (void)state;
    TSR_TEST_SKIP("built without OpenCL (WITH_OPENCL=0)");
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_mma_hardware)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
