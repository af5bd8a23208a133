/* libFuzzer target for the token file reader (tsr_tokens_load_mem) and, on the files it
 * accepts, the vocabulary check and both window samplers. Header ints 3..6, which the format
 * leaves unused, choose the sampler's context, batch, rank and rank count.
 * Build (from the repository root): make build/fuzz/fuzz_tokens
 * Run: build/fuzz/fuzz_tokens -max_total_time=60 -rss_limit_mb=1024 tests/fuzz/corpus/tokens */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t header_int(const uint8_t *data, int i) {
    const uint8_t *p = data + 4 * i;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Draws batches from both samplers and checks each row against the file. */
static void exercise(tsr_context *ctx, const tsr_tokens *t, const uint8_t *data) {
    size_t count = tsr_tokens_count(t);
    tsr_tokens_sampler_options o;
    o.context = 1 + header_int(data, 3) % 64;
    o.batch = 1 + header_int(data, 4) % 8;
    o.nranks = 1 + (int)(header_int(data, 5) % 4);
    o.rank = (int)(header_int(data, 6) % (uint32_t)o.nranks);
    o.seed = header_int(data, 7);
    size_t n = o.batch * o.context;
    int32_t *in = malloc(n * sizeof *in), *tg = malloc(n * sizeof *tg);
    if (!in || !tg) __builtin_trap();
    for (int order = 0; order < 2; order++) {
        o.order = order ? TSR_TOKENS_SEQUENTIAL : TSR_TOKENS_RANDOM;
        tsr_tokens_sampler *s = NULL;
        tsr_status st = tsr_tokens_sampler_create(ctx, t, &o, &s);
        if ((st == TSR_OK) != (count > o.context)) __builtin_trap();
        if (st != TSR_OK) continue;
        uint64_t batches = order ? tsr_tokens_sampler_batches(s) : 4;
        size_t T = o.context;
        for (uint64_t k = 0; k < batches && k < 64; k++) {
            size_t used = 0, real = 0;
            if (tsr_tokens_sampler_next(s, in, tg, &used) != TSR_OK) __builtin_trap();
            for (size_t b = 0; b < o.batch; b++) {
                const int32_t *ri = in + b * T, *rt = tg + b * T;
                /* random: any start, so targets are the inputs shifted by one; sequential:
                 * window w starts at w x T, padding past the last token */
                size_t w = (size_t)((k * (uint64_t)o.nranks + (uint64_t)o.rank) * o.batch + b);
                for (size_t i = 0; i < T; i++) {
                    if (!order) {
                        if (i + 1 < T && rt[i] != ri[i + 1]) __builtin_trap();
                        real++;
                    } else if (w * T + i + 1 < count) {
                        if (ri[i] != (int32_t)tsr_tokens_at(t, w * T + i) ||
                            rt[i] != (int32_t)tsr_tokens_at(t, w * T + i + 1))
                            __builtin_trap();
                        real++;
                    } else if (ri[i] != 0 || rt[i] != -1) {
                        __builtin_trap();
                    }
                }
            }
            if (real != used) __builtin_trap();
        }
        if (order && batches <= 64 && tsr_tokens_sampler_next(s, in, tg, NULL) != TSR_ERR_STATE)
            __builtin_trap(); /* a pass ends */
        tsr_tokens_sampler_free(s);
    }
    free(in);
    free(tg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A bare context (no device discovery): malloc, logging off, but error details are still
     * formatted, so their format strings are exercised too. */
    struct tsr_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.log_level = TSR_LOG_OFF;
    ctx.rank = -1;
    tsr_tokens *t = NULL;
    tsr_status st = tsr_tokens_load_mem(&ctx, "fuzz.bin", data, size, &t);
    if (st == TSR_OK) {
        size_t count = tsr_tokens_count(t);
        int width = tsr_tokens_width(t);
        if (size != TSR_TOKENS_HEADER_BYTES + count * (size_t)width) __builtin_trap();
        uint32_t max = 0;
        for (size_t i = 0; i < count; i++)
            if (tsr_tokens_at(t, i) > max) max = tsr_tokens_at(t, i);
        /* the check passes exactly for vocabularies above the largest id */
        if (count && max < UINT32_MAX) {
            if (tsr_tokens_check_vocab(&ctx, t, max + 1) != TSR_OK) __builtin_trap();
            if (max && tsr_tokens_check_vocab(&ctx, t, max) != TSR_ERR_MISMATCH) __builtin_trap();
        }
        if (count <= (1u << 16)) exercise(&ctx, t, data);
    } else if (t != NULL || ctx.last_error[0] == '\0' ||
               strncmp(ctx.last_error, "fuzz.bin: ", 10) != 0) {
        __builtin_trap(); /* every failure leaves no result and a detail naming the input */
    }
    tsr_tokens_free(t);
    return 0;
}
