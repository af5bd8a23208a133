/* libFuzzer target for the capability cache reader: each input becomes <cache dir>/
 * capability.json and is applied to two devices whose keys the seed corpus uses (the host and
 * PoCL). A bad cache is ignored with a warning; applied figures must be finite and >= 0. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/core/internal.h"
#include "tessera.h"
#include "topology/topology.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64]; /* one temp folder per fuzzing process */

static void cleanup(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/capability.json", dir);
    unlink(path);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!dir[0]) {
        /* tmpfs when there is one: a file rewrite per input on a disk-backed /tmp is slow */
        snprintf(dir, sizeof dir, "%s/tsr-fuzz-cache.XXXXXX",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(dir)) abort();
        atexit(cleanup);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/capability.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);

    tsr_device_info devs[2];
    memset(devs, 0, sizeof devs);
    devs[0].backend = TSR_BACKEND_HOST;
    strcpy(devs[0].vendor, "AuthenticAMD");
    strcpy(devs[0].name, "AMD EPYC");
    strcpy(devs[0].driver_version, "C/CBLAS");
    devs[0].compute_units = 2;
    devs[1] = devs[0];
    devs[1].backend = TSR_BACKEND_OPENCL;
    strcpy(devs[1].name, "pthread-haswell-AMD EPYC");
    strcpy(devs[1].driver_version, "3.1+debian");
    for (int i = 0; i < 2; i++) devs[i].peak_gflops = 100, devs[i].same_as = -1;

    struct tsr_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.log_level = TSR_LOG_OFF;
    ctx.rank = -1;
    snprintf(ctx.cache_dir, sizeof ctx.cache_dir, "%s", dir);
    ctx.devices = devs;
    ctx.device_count = 2;
    (void)tsr_capability_apply_cache(&ctx);
    for (int i = 0; i < 2; i++) {
        const tsr_device_info *d = &devs[i];
        double v[] = {d->peak_gflops, d->gemm_gflops, d->mem_bw_gbps, d->h2d_gbps, d->d2h_gbps,
                      d->launch_us};
        for (size_t k = 0; k < sizeof v / sizeof *v; k++)
            if (!isfinite(v[k]) || v[k] < 0) __builtin_trap();
        if (d->peak_gflops != 100) __builtin_trap(); /* the analytic peak is never the cache's */
    }
    return 0;
}
