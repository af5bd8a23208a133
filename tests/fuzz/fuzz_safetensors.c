/* libFuzzer target for the safetensors reader (tsr_safetensors_open_memory).
 * Build (from the repository root): make fuzz-targets (it links the library built with clang
 * and the sanitizers in build/fuzz/lib).
 * Run: build/fuzz/fuzz_safetensors -max_total_time=60 -rss_limit_mb=1024 \
 *        tests/fuzz/corpus/safetensors */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An accepted file must be self-consistent: tensors tile the data buffer in order, each one's
 * size is its shape times its dtype, names are unique, and every byte and value is readable. */
static void check(const tsr_safetensors *st, const uint8_t *data, size_t size) {
    const uint8_t *buf = data + 8 + st->header_bytes;
    if (8 + st->header_bytes > size || st->file_bytes != size) __builtin_trap();
    uint64_t at = 0;
    volatile unsigned char sum = 0;
    for (size_t i = 0; i < st->count; i++) {
        const tsr_st_tensor *t = &st->tensors[i];
        uint64_t count = 1;
        for (int d = 0; d < t->ndim; d++) count *= t->shape[d];
        if (t->offset != at || count != t->count || (const uint8_t *)t->data != buf + at ||
            t->count * tsr_st_dtype_bits(t->dtype) != 8 * (uint64_t)t->bytes ||
            tsr_safetensors_find(st, t->name) != t)
            __builtin_trap();
        for (size_t k = 0; k < t->bytes; k++) sum ^= ((const unsigned char *)t->data)[k];
        if (t->dtype == TSR_ST_F32 || t->dtype == TSR_ST_F16 || t->dtype == TSR_ST_BF16 ||
            t->dtype == TSR_ST_F64) {
            float *out = malloc(t->count ? t->count * sizeof *out : 1);
            if (tsr_safetensors_to_f32(NULL, t, out, t->count) != TSR_OK) __builtin_trap();
            free(out);
        }
        at += t->bytes;
    }
    if (8 + st->header_bytes + at != size) __builtin_trap();
    for (size_t i = 0; i < st->meta_count; i++)
        if (tsr_safetensors_meta(st, st->meta[i].key) != st->meta[i].value) __builtin_trap();
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A bare context (no device discovery): malloc, logging off, but error details are still
     * formatted, so their format strings are exercised too. */
    struct tsr_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.log_level = TSR_LOG_OFF;
    ctx.rank = -1;
    tsr_safetensors *st = NULL;
    tsr_status s = tsr_safetensors_open_memory(&ctx, "fuzz.st", data, size, &st);
    if (s == TSR_OK) {
        check(st, data, size);
    } else if (st != NULL || ctx.last_error[0] == '\0' ||
               strncmp(ctx.last_error, "fuzz.st: ", 9) != 0) {
        __builtin_trap(); /* every failure leaves no result and a detail naming the input */
    }
    tsr_safetensors_close(&ctx, st);
    return 0;
}
