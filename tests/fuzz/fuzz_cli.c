/* libFuzzer target for tsr-train's options (tsr_cli_parse_train). The input is split at NUL
 * bytes into argv[1..]. Accepted options must satisfy the documented ranges; refused ones
 * must say which option was wrong. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lib/cli/cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    char *buf = malloc(size + 1);
    char *argv[66];
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    int argc = 0;
    argv[argc++] = "tsr-train";
    for (char *p = buf; p <= buf + size && argc < 65; p += strlen(p) + 1) argv[argc++] = p;
    argv[argc] = NULL;
    tsr_cli_train a;
    tsr_status st = tsr_cli_parse_train(argc, argv, &a);
    if (st == TSR_OK) {
        if (a.error[0] || a.epochs < 1 || a.batch < 1 || a.limit < 0 || a.warmup < 0 ||
            !(a.momentum >= 0 && a.momentum < 1) || !isfinite(a.lr) ||
            !(a.lr < 0 || a.lr >= 1e-12) || !(a.weight_decay >= 0) || !isfinite(a.weight_decay) ||
            !a.model || !a.optimizer || !a.schedule)
            __builtin_trap();
        if (a.nonfinite && strcmp(a.nonfinite, "skip") && strcmp(a.nonfinite, "stop"))
            __builtin_trap();
    } else if (st != TSR_ERR_PARSE || strncmp(a.error, "option ", 7) != 0) {
        __builtin_trap();
    }
    free(buf);
    return 0;
}
