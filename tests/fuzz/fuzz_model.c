/* libFuzzer target for the model spec parser (tsr_model_parse). The first 4 bytes choose the
 * input shape (channels, height, width, classes); the rest is the spec text. Whatever parses
 * must round-trip: its canonical spec parses to the same spec and parameter count. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lib/internal.h"
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
    tsr_status st = tsr_model_parse(&ctx, spec, in, &m);
    if (st == TSR_OK) {
        if (!m) __builtin_trap();
        tsr_model *again = NULL;
        const char *canon = tsr_model_spec(m);
        if (tsr_model_parse(&ctx, canon, in, &again) != TSR_OK ||
            strcmp(tsr_model_spec(again), canon) != 0 ||
            tsr_model_param_count(again) != tsr_model_param_count(m))
            __builtin_trap();
        char buf[256];
        (void)tsr_model_summary_string(m, buf, sizeof buf);
        for (size_t i = 0; i < tsr_model_layer_count(m); i++) {
            tsr_layer_info li;
            if (tsr_model_layer_info(m, i, 2, &li) != TSR_OK) __builtin_trap();
        }
        tsr_model_free(again);
    } else if (m != NULL || ctx.last_error[0] == '\0') {
        __builtin_trap(); /* a failure leaves no model and says why */
    }
    tsr_model_free(m);
    free(spec);
    return 0;
}
