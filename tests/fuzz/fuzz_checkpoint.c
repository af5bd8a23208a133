/* libFuzzer target for the checkpoint loader (tsr_checkpoint_load_mem), run twice per input:
 * with the CRC check (what users get) and without it (so mutated inputs reach the structural
 * checks behind the checksum).
 * Build (from the repository root):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -I. -D_GNU_SOURCE \
 *     -DTSR_WITH_MPI=0 -DTSR_WITH_OPENCL=0 -DTSR_WITH_HWLOC=0 tests/fuzz/fuzz_checkpoint.c \
 *     lib/io/checkpoint.c lib/io/idx.c lib/core/util.c lib/core/log.c lib/core/status.c -lz -o build/fuzz_checkpoint
 * Run: build/fuzz_checkpoint -max_total_time=60 -rss_limit_mb=1024 tests/fuzz/corpus/checkpoint */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "lib/io/checkpoint_internal.h"
#include "lib/core/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const tsr_checkpoint *ck) {
    if (strnlen(ck->model_spec, sizeof ck->model_spec) == sizeof ck->model_spec ||
        strnlen(ck->optimizer, sizeof ck->optimizer) == sizeof ck->optimizer)
        __builtin_trap();
    volatile float sum = 0;
    for (size_t i = 0; i < ck->tensor_count; i++) {
        const tsr_checkpoint_tensor *t = &ck->tensors[i];
        if (strnlen(t->name, sizeof t->name) == sizeof t->name || !t->name[0]) __builtin_trap();
        if (tsr_checkpoint_find(ck, t->name) != t) __builtin_trap(); /* names are unique */
        for (size_t k = 0; k < t->count; k++) sum += t->data[k];
    }
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct tsr_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.log_level = TSR_LOG_OFF;
    ctx.rank = -1;
    for (unsigned flags = 0; flags <= TSR_CKPT_LOAD_NO_CRC; flags += TSR_CKPT_LOAD_NO_CRC) {
        tsr_checkpoint *ck = NULL;
        tsr_status st = tsr_checkpoint_load_mem(&ctx, "fuzz.ckpt", data, size, flags, &ck);
        if (st == TSR_OK) {
            check(ck);
        } else if (ck != NULL || strncmp(ctx.last_error, "fuzz.ckpt: ", 11) != 0) {
            __builtin_trap();
        }
        tsr_checkpoint_free(&ctx, ck);
    }
    return 0;
}
