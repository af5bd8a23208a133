/* Device discovery: host CPU first, then OpenCL devices. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/internal.h"
#include "topology/topology.h"

void tsr_topology_host_info(tsr_device_info *info) {
    memset(info, 0, sizeof *info);
    tsr_strlcpy(info->id, "host", sizeof info->id);
    info->kind = TSR_DEVICE_HOST;
    info->backend = TSR_BACKEND_HOST;
    info->platform_index = -1;
    info->device_index = -1;
    info->numa_node = -1;
    info->same_as = -1;
    info->usable = 1;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    info->compute_units = cpus > 0 ? (unsigned)cpus : 1;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) info->global_mem_bytes = (uint64_t)pages * (uint64_t)page;
    info->max_alloc_bytes = info->global_mem_bytes;
    info->fp64 = 1;
    tsr_strlcpy(info->name, "host CPU", sizeof info->name);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            char *colon = strchr(line, ':');
            if (!colon) continue;
            char *val = colon + 1;
            while (*val == ' ' || *val == '\t') val++;
            val[strcspn(val, "\n")] = '\0';
            if (!strncmp(line, "model name", 10) && !info->name[5])
                tsr_strlcpy(info->name, val, sizeof info->name);
            else if (!strncmp(line, "vendor_id", 9) && !info->vendor[0])
                tsr_strlcpy(info->vendor, val, sizeof info->vendor);
            else if (!strncmp(line, "cpu MHz", 7) && !info->clock_mhz)
                info->clock_mhz = (unsigned)atof(val);
        }
        fclose(f);
    }
}

tsr_status tsr_topology_discover(tsr_context *ctx, tsr_device_info **devices, int *count) {
    int capacity = 4;
    tsr_device_info *list = tsr_calloc(ctx, (size_t)capacity, sizeof *list);
    if (!list) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "device list");
    int n = 0;
    tsr_topology_host_info(&list[n++]);
#if TSR_WITH_OPENCL
    if (!(ctx->flags & TSR_CONTEXT_NO_OPENCL)) {
        tsr_status st = tsr_topology_opencl_devices(ctx, &list, &n, &capacity);
        if (st != TSR_OK) {
            tsr_free(ctx, list);
            return st;
        }
    }
#endif
    *devices = list;
    *count = n;
    return TSR_OK;
}
