/* libFuzzer target for the topology file loader (tsr_topology_parse, which tsr_topology_load
 * calls on the file's text). Whatever parses must write itself out and read back with the
 * same host, device and rank counts. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "tessera.h"
#include "topology/topology.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    struct tsr_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.log_level = TSR_LOG_OFF;
    ctx.rank = -1;
    tsr_topology *t = NULL;
    tsr_status st = tsr_topology_parse(&ctx, (const char *)data, size, &t);
    if (st == TSR_OK) {
        if (!t) __builtin_trap();
        char *text = tsr_topology_to_json(t, 0);
        if (!text) __builtin_trap();
        tsr_topology *again = NULL;
        if (tsr_topology_parse(&ctx, text, strlen(text), &again) != TSR_OK ||
            tsr_topology_host_count(again) != tsr_topology_host_count(t) ||
            tsr_topology_device_count(again) != tsr_topology_device_count(t) ||
            tsr_topology_rank_count(again) != tsr_topology_rank_count(t))
            __builtin_trap();
        tsr_topology_free(again);
        free(text);
    } else if (t != NULL || ctx.last_error[0] == '\0') {
        __builtin_trap();
    }
    tsr_topology_free(t);
    return 0;
}
