/* libFuzzer target for the model spec parser (tsr_model_parse). The first 4 bytes choose the
 * input shape (channels, height, width, classes; with the first byte's top bit: int32 token
 * ids of rank 1 or 2, height x width of them, vocabulary 1 + the fourth byte); the rest is
 * the spec text. Whatever parses must round-trip: its canonical spec parses to the same spec
 * and parameter count, its named parameter tensors cover the parameters, and its memory plan
 * (the stage's, without device memory) can be made or is refused with a reason. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/model/stage.h"
#include "tessera.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4 || size > 4096) return 0;
    struct tsr_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.log_level = TSR_LOG_OFF;
    ctx.rank = -1;
    tsr_model_input in = {1 + data[0] % 4, 1 + data[1] % 40, 1 + data[2] % 40, 1 + data[3] % 16};
    char *spec = malloc(size - 4 + 1);
    if (!spec) return 0;
    memcpy(spec, data + 4, size - 4);
    spec[size - 4] = '\0';
    tsr_model *m = NULL;
    /* the top bit of the first byte asks for int32 token ids of rank 1 or 2 instead */
    tsr_model_input_desc tok = {TSR_DTYPE_I32, 1 + (data[0] >> 6 & 1), {in.height, in.width, 0},
                                1 + data[3], in.classes};
    int tokens = data[0] & 0x80;
    tsr_status st = tokens ? tsr_model_parse_desc(&ctx, spec, &tok, &m) : tsr_model_parse(&ctx, spec, in, &m);
    if (st == TSR_OK) {
        if (!m) __builtin_trap();
        tsr_model *again = NULL;
        const char *canon = tsr_model_spec(m);
        if ((tokens ? tsr_model_parse_desc(&ctx, canon, &tok, &again) : tsr_model_parse(&ctx, canon, in, &again)) !=
                TSR_OK ||
            strcmp(tsr_model_spec(again), canon) != 0 ||
            tsr_model_param_count(again) != tsr_model_param_count(m))
            __builtin_trap();
        char buf[256];
        (void)tsr_model_summary_string(m, buf, sizeof buf);
        for (size_t i = 0; i < tsr_model_layer_count(m); i++) {
            tsr_layer_info li;
            if (tsr_model_layer_info(m, i, 2, &li) != TSR_OK) __builtin_trap();
        }
        size_t floats = 0;
        for (size_t i = 0; i < tsr_model_param_tensor_count(m); i++) {
            tsr_param_info pi;
            if (tsr_model_param_tensor(m, i, &pi) != TSR_OK ||
                pi.offset + pi.count > tsr_model_param_count(m))
                __builtin_trap();
            floats += pi.count;
        }
        if (floats != tsr_model_param_count(m)) __builtin_trap();
        size_t L = tsr_model_layer_count(m);
        tsr_stage_options so = {data[0] % L, L, 1 + data[1] % 3, data[2] & 1, TSR_PRECISION_FP32, 0};
        tsr_stage_memory mem;
        tsr_status ps = tsr_stage_plan_memory(&ctx, m, &so, &mem);
        if (ps == TSR_OK ? mem.total_bytes < 2 * mem.param_bytes + mem.act_set_bytes
                         : ctx.last_error[0] == '\0')
            __builtin_trap();
        tsr_model_free(again);
    } else if (m != NULL || ctx.last_error[0] == '\0') {
        __builtin_trap(); /* a failure leaves no model and says why */
    }
    tsr_model_free(m);
    free(spec);
    return 0;
}
