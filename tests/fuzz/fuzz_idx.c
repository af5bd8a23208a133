/* libFuzzer target for the IDX reader (plain and gzip input through tsr_idx_load_mem).
 * Build (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -I. -D_GNU_SOURCE \
 *     -DTSR_WITH_MPI=0 -DTSR_WITH_OPENCL=0 -DTSR_WITH_HWLOC=0 tests/fuzz/fuzz_idx.c lib/io/idx.c \
 *     lib/core/util.c lib/core/log.c lib/core/status.c -lz -o build/fuzz_idx
 * Run: build/fuzz_idx -max_total_time=60 -rss_limit_mb=1024 tests/fuzz/corpus/idx */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "lib/io/idx.h"
#include "lib/core/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A bare context (no device discovery): malloc, logging off, but error details are still
     * formatted, so their format strings are exercised too. */
    struct tsr_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.log_level = TSR_LOG_OFF;
    ctx.rank = -1;
    tsr_idx *idx = NULL;
    tsr_status st = tsr_idx_load_mem(&ctx, "fuzz.idx", data, size, &idx);
    if (st == TSR_OK) {
        /* The result must be self-consistent: touch every byte it claims to hold. */
        size_t count = 1;
        for (int i = 0; i < idx->ndim; i++) count *= idx->dims[i];
        if (count != idx->count || idx->elem_size != tsr_idx_type_size(idx->type))
            __builtin_trap();
        volatile unsigned char sum = 0;
        for (size_t i = 0; i < idx->count * idx->elem_size; i++)
            sum ^= ((const unsigned char *)idx->data)[i];
        (void)sum;
    } else if (idx != NULL || ctx.last_error[0] == '\0' ||
               strncmp(ctx.last_error, "fuzz.idx: ", 10) != 0) {
        __builtin_trap(); /* every failure leaves no result and a detail naming the input */
    }
    tsr_idx_free(&ctx, idx);
    return 0;
}
