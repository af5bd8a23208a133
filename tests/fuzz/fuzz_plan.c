/* libFuzzer target for plans read back (tsr_plan_parse) against the "cnn" preset. Whatever
 * parses must have stages covering the model's layers without gaps or overlaps, and write
 * itself out as JSON that parses to the same stages. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "tessera.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct tsr_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.log_level = TSR_LOG_OFF;
    ctx.rank = -1;
    tsr_model *m = NULL;
    if (tsr_model_parse(&ctx, "cnn", TSR_MODEL_INPUT_MNIST, &m) != TSR_OK) __builtin_trap();
    ctx.last_error[0] = 0;
    tsr_plan *p = NULL;
    tsr_status st = tsr_plan_parse(&ctx, m, (const char *)data, size, &p);
    if (st == TSR_OK) {
        size_t S = tsr_plan_stage_count(p), end = 0;
        if (!p || S == 0) __builtin_trap();
        for (size_t i = 0; i < S; i++) {
            const tsr_plan_stage *s = tsr_plan_stage_at(p, i);
            if (s->first != end || s->last <= s->first) __builtin_trap();
            end = s->last;
        }
        if (end != tsr_model_layer_count(m) || tsr_plan_bottleneck(p) >= S) __builtin_trap();
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f || tsr_plan_write_json(p, f) != TSR_OK) __builtin_trap();
        fclose(f);
        tsr_plan *q = NULL;
        if (tsr_plan_parse(&ctx, m, text, len, &q) != TSR_OK || tsr_plan_stage_count(q) != S)
            __builtin_trap();
        for (size_t i = 0; i < S; i++)
            if (tsr_plan_stage_at(q, i)->last != tsr_plan_stage_at(p, i)->last ||
                tsr_plan_stage_at(q, i)->device != tsr_plan_stage_at(p, i)->device)
                __builtin_trap();
        tsr_plan_free(q);
        free(text);
    } else if (p != NULL || ctx.last_error[0] == '\0') {
        __builtin_trap();
    }
    tsr_plan_free(p);
    tsr_model_free(m);
    return 0;
}
