/* Device discovery: hwloc first, then the host CPU and the OpenCL devices, their locality and
 * the pairs that are one physical device. sysfs/sysconf stand in for hwloc when it is absent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/core/internal.h"
#include "topology/topology.h"

static int read_line(const char *path, char *buf, size_t n) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char *ok = fgets(buf, (int)n, f);
    fclose(f);
    if (!ok) return -1;
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

void tsr_topology_hostname(char *buf, size_t n) {
    if (gethostname(buf, n) != 0) tsr_strlcpy(buf, "localhost", n);
    buf[n - 1] = '\0';
}

/* "0-3" when the machine has a single NUMA node: its number, else -1. */
static int single_numa_node(void) {
    char line[256];
    if (read_line("/sys/devices/system/node/online", line, sizeof line) != 0) return -1;
    tsr_cpumask m;
    if (tsr_cpumask_parse(line, &m) != 0 || tsr_cpumask_count(&m) != 1) return -1;
    for (int i = 0;; i++)
        if (tsr_cpumask_isset(&m, (unsigned)i)) return i;
}

static void online_cpus(char *buf, size_t n) {
    char line[1024];
    tsr_cpumask m;
    if (read_line("/sys/devices/system/cpu/online", line, sizeof line) == 0 &&
        tsr_cpumask_parse(line, &m) == 0) {
        tsr_cpumask_format(&m, buf, n);
        return;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus <= 1)
        snprintf(buf, n, "0");
    else
        snprintf(buf, n, "0-%ld", cpus - 1);
}

int tsr_topology_cpu_lanes(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 1;
    char line[4096];
    int lanes = 1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "flags", 5) != 0) continue;
        int fma = strstr(line, " fma") != NULL;
        /* vector width in floats x two FMA pipes (Haswell, Zen 2 and later) */
        if (strstr(line, " avx512f"))
            lanes = 16 * 2;
        else if (strstr(line, " avx2") && fma)
            lanes = 8 * 2;
        else if (strstr(line, " avx"))
            lanes = 8;
        else if (strstr(line, " sse"))
            lanes = 4;
        break;
    }
    fclose(f);
    return lanes;
}

void tsr_topology_host_info(tsr_device_info *info) {
    memset(info, 0, sizeof *info);
    tsr_strlcpy(info->id, "host", sizeof info->id);
    info->kind = TSR_DEVICE_HOST;
    info->backend = TSR_BACKEND_HOST;
    info->platform_index = -1;
    info->device_index = -1;
    info->same_as = -1;
    info->usable = 1;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    info->compute_units = cpus > 0 ? (unsigned)cpus : 1;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) info->global_mem_bytes = (uint64_t)pages * (uint64_t)page;
    info->max_alloc_bytes = info->global_mem_bytes;
    info->fp64 = 1;
    tsr_strlcpy(info->name, "host CPU", sizeof info->name);
    tsr_strlcpy(info->driver_version, "C/CBLAS", sizeof info->driver_version);
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        int named = 0;
        while (fgets(line, sizeof line, f)) {
            char *colon = strchr(line, ':');
            if (!colon) continue;
            char *val = colon + 1;
            while (*val == ' ' || *val == '\t') val++;
            val[strcspn(val, "\n")] = '\0';
            if (!strncmp(line, "model name", 10) && !named) {
                tsr_strlcpy(info->name, val, sizeof info->name);
                named = 1;
            } else if (!strncmp(line, "vendor_id", 9) && !info->vendor[0])
                tsr_strlcpy(info->vendor, val, sizeof info->vendor);
            else if (!strncmp(line, "cpu MHz", 7) && !info->clock_mhz)
                info->clock_mhz = (unsigned)atof(val);
        }
        fclose(f);
    }
    char khz[64];
    if (read_line("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq", khz, sizeof khz) == 0 &&
        atol(khz) > 0)
        info->clock_mhz = (unsigned)(atol(khz) / 1000);
    info->peak_gflops =
        (double)info->compute_units * info->clock_mhz * tsr_topology_cpu_lanes() * 2.0 / 1000.0;
    info->numa_node = single_numa_node();
    online_cpus(info->cpuset, sizeof info->cpuset);
}

void tsr_topology_host_summary_sysfs(tsr_host_info *host) {
    tsr_device_info cpu;
    tsr_topology_host_info(&cpu);
    tsr_topology_hostname(host->hostname, sizeof host->hostname);
    host->packages = 1;
    host->pus = (int)cpu.compute_units;
    host->cores = host->pus;
    char line[256];
    tsr_cpumask m;
    host->numa_nodes = read_line("/sys/devices/system/node/online", line, sizeof line) == 0 &&
                               tsr_cpumask_parse(line, &m) == 0 && tsr_cpumask_count(&m) > 0
                           ? tsr_cpumask_count(&m)
                           : 1;
    host->memory_bytes = cpu.global_mem_bytes;
    tsr_strlcpy(host->cpuset, cpu.cpuset, sizeof host->cpuset);
}

int tsr_sysfs_pci_locality(const char *bus_id, int *numa_node, char *cpuset, size_t cpuset_size) {
    char path[256], line[1024];
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/numa_node", bus_id);
    if (read_line(path, line, sizeof line) != 0) return -1;
    *numa_node = atoi(line) >= 0 ? atoi(line) : -1;
    snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/local_cpulist", bus_id);
    tsr_cpumask m;
    if (read_line(path, line, sizeof line) == 0 && tsr_cpumask_parse(line, &m) == 0)
        tsr_cpumask_format(&m, cpuset, cpuset_size);
    return 0;
}

tsr_status tsr_topology_cores_sysfs(tsr_context *ctx, tsr_cpumask **cores, int *count) {
    tsr_device_info cpu;
    tsr_topology_host_info(&cpu);
    tsr_cpumask online, done;
    if (tsr_cpumask_parse(cpu.cpuset, &online) != 0 || tsr_cpumask_count(&online) == 0)
        return tsr_error(ctx, TSR_ERR_IO, "cannot read the online CPUs");
    int n = tsr_cpumask_count(&online), used = 0;
    tsr_cpumask *list = tsr_calloc(ctx, (size_t)n, sizeof *list);
    if (!list) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "core list");
    memset(&done, 0, sizeof done);
    for (unsigned c = 0; c < 64 * TSR_CPUMASK_WORDS; c++) {
        if (!tsr_cpumask_isset(&online, c) || tsr_cpumask_isset(&done, c)) continue;
        char path[128], line[256];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%u/topology/thread_siblings_list",
                 c);
        tsr_cpumask sib;
        if (read_line(path, line, sizeof line) != 0 || tsr_cpumask_parse(line, &sib) != 0) {
            memset(&sib, 0, sizeof sib);
            tsr_cpumask_set(&sib, c);
        }
        for (int w = 0; w < TSR_CPUMASK_WORDS; w++) {
            sib.bits[w] &= online.bits[w] & ~done.bits[w];
            done.bits[w] |= sib.bits[w];
        }
        tsr_cpumask_set(&sib, c);
        tsr_cpumask_set(&done, c);
        list[used++] = sib;
    }
    *cores = list;
    *count = used;
    return TSR_OK;
}

void tsr_topology_pair_devices(tsr_device_info *devices, int count) {
    for (int i = 0; i < count; i++) {
        if (devices[i].kind != TSR_DEVICE_HOST || devices[i].absent) continue;
        for (int j = 0; j < count; j++) {
            tsr_device_info *c = &devices[j];
            if (c->kind != TSR_DEVICE_CPU || c->host != devices[i].host || c->absent) continue;
            if (c->same_as >= 0 && c->same_as != i) continue;
            /* The OpenCL CPU device of this host drives the same cores as the host backend. */
            devices[i].same_as = j;
            c->same_as = i;
            break;
        }
        int j = devices[i].same_as;
        if (j < 0) continue;
        double a = devices[i].gemm_gflops, b = devices[j].gemm_gflops;
        if (a > 0 && b > 0) {
            devices[i].usable = a >= b;
            devices[j].usable = b > a;
        }
    }
}

void tsr_topology_release(tsr_context *ctx) {
    if (!ctx || !ctx->topology) return;
    tsr_topology *t = ctx->topology;
    ctx->topology = NULL;
    t->ctx = ctx;
    tsr_topology_free(t);
}

tsr_status tsr_topology_discover(tsr_context *ctx, tsr_device_info **devices, int *count) {
    tsr_topology *state;
    TSR_TRY(tsr_topology_alloc(ctx, 1, 0, 0, &state));
    tsr_host_info *host = &state->hosts[0];
    tsr_topology_host_summary_sysfs(host);
#if TSR_WITH_HWLOC
    /* Before any OpenCL call: PoCL sets HWLOC_PLUGINS_PATH=/dev/null when it initialises. */
    if (!(ctx->flags & TSR_CONTEXT_NO_HWLOC)) {
        tsr_status st = tsr_hwloc_load(ctx, &state->hwloc);
        if (st != TSR_OK) {
            tsr_log(ctx, TSR_LOG_WARN, "hwloc unavailable, using sysfs: %s",
                    tsr_context_last_error(ctx));
            tsr_context_clear_error(ctx);
        } else {
            tsr_hwloc_host_summary(state->hwloc, host);
        }
    }
#endif
    int capacity = 4;
    tsr_device_info *list = tsr_calloc(ctx, (size_t)capacity, sizeof *list);
    if (!list) {
        tsr_topology_free(state);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "device list");
    }
    int n = 0;
    tsr_topology_host_info(&list[n]);
#if TSR_WITH_HWLOC
    if (state->hwloc)
        tsr_hwloc_machine_locality(state->hwloc, &list[n].numa_node, list[n].cpuset,
                                   sizeof list[n].cpuset);
#endif
    n++;
#if TSR_WITH_OPENCL
    if (!(ctx->flags & TSR_CONTEXT_NO_OPENCL)) {
        tsr_status st = tsr_topology_opencl_devices(ctx, state->hwloc, &list, &n, &capacity);
        if (st != TSR_OK) {
            tsr_free(ctx, list);
            tsr_topology_free(state);
            return st;
        }
    }
#endif
    tsr_topology_pair_devices(list, n);
    ctx->topology = state;
    ctx->devices = list;
    ctx->device_count = n;
    tsr_status st = tsr_capability_apply_cache(ctx);
    const char *file = ctx->opts.topology_file;
    if (st == TSR_OK && file && *file) {
        tsr_topology *t;
        st = tsr_topology_load(ctx, file, &t);
        if (st == TSR_OK) {
            st = tsr_context_use_topology(ctx, t);
            tsr_topology_free(t);
        }
        if (st != TSR_OK) { /* say which setting named the file; the detail names the file */
            char detail[sizeof ctx->last_error];
            snprintf(detail, sizeof detail, "%s", ctx->last_error);
            tsr_error(ctx, st, "TSR_TOPOLOGY (topology_file): %s", detail);
        }
    }
    if (st != TSR_OK) { /* the context frees ctx->topology */
        tsr_free(ctx, ctx->devices);
        ctx->devices = NULL;
        ctx->device_count = 0;
        return st;
    }
    *devices = ctx->devices;
    *count = ctx->device_count;
    return TSR_OK;
}
