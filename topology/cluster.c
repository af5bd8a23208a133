/* Rank placement (which device each rank drives, which CPUs it runs on) and CPU binding.
 * Pure functions of a topology, so plans for machines that are not here use the same code. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "topology/topology.h"

/* Measured SGEMM rates compare with each other, peaks with peaks: a host where some device
 * is not measured ranks all by peak (by measurement when a device has no peak). */
static double score(const tsr_device_info *d, int measured) {
    if (measured || d->peak_gflops <= 0) return d->gemm_gflops;
    return d->peak_gflops;
}

/* Of two paths to one device, the one to use: the faster when both are measured, else the host
 * backend (no kernel compilation, no copies). */
static int preferred(const tsr_device_info *devs, int i) {
    const tsr_device_info *d = &devs[i];
    if (!d->usable) return 0;
    if (d->same_as < 0) return 1;
    const tsr_device_info *o = &devs[d->same_as];
    if (!o->usable) return 1;
    if (d->gemm_gflops > 0 && o->gemm_gflops > 0 && d->gemm_gflops != o->gemm_gflops)
        return d->gemm_gflops > o->gemm_gflops;
    return d->backend == TSR_BACKEND_HOST;
}

/* The usable devices of `host`, best first. Returns their count (indices in `out`). */
static int candidates(const tsr_topology *t, int host, int *out) {
    int n = 0, measured = 1;
    for (int i = 0; i < t->device_count; i++)
        if (t->devices[i].host == host && preferred(t->devices, i) &&
            t->devices[i].gemm_gflops <= 0)
            measured = 0;
    for (int i = 0; i < t->device_count; i++) {
        if (t->devices[i].host != host || !preferred(t->devices, i)) continue;
        int j = n++; /* insertion sort: stable, best score first */
        while (j > 0 &&
               score(&t->devices[out[j - 1]], measured) < score(&t->devices[i], measured)) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = i;
    }
    return n;
}

static void near_of(const tsr_topology *t, const tsr_rank_info *r, tsr_cpumask *m) {
    const char *list = r->device >= 0 ? t->devices[r->device].cpuset : "";
    if (!list[0]) list = t->hosts[r->host].cpuset;
    if (tsr_cpumask_parse(list, m) != 0) memset(m, 0, sizeof *m);
}

void tsr_topology_assign_bindings(tsr_topology *t, int host, const tsr_cpumask *cores, int ncores) {
    for (int i = 0; i < t->rank_count; i++) {
        tsr_rank_info *r = &t->ranks[i];
        if (r->host != host) continue;
        tsr_cpumask near, other, slice;
        near_of(t, r, &near);
        /* the ranks of this host with the same locality share it: r takes slice `pos` of `k` */
        int k = 0, pos = 0;
        for (int j = 0; j < t->rank_count; j++) {
            if (t->ranks[j].host != host) continue;
            near_of(t, &t->ranks[j], &other);
            if (memcmp(&near, &other, sizeof near) != 0) continue;
            if (t->ranks[j].local_rank < r->local_rank ||
                (t->ranks[j].local_rank == r->local_rank && j < i))
                pos++;
            k++;
        }
        tsr_topology_split_cpus(cores, ncores, &near, k, pos, &slice);
        tsr_cpumask_format(&slice, r->cpuset, sizeof r->cpuset);
    }
}

tsr_status tsr_topology_assign_ranks(tsr_topology *t) {
    if (!t) return TSR_ERR_INVALID_ARG;
    tsr_context *ctx = t->ctx;
    int *cand = tsr_calloc(ctx, (size_t)(t->device_count ? t->device_count : 1), sizeof *cand);
    tsr_cpumask *cores = tsr_calloc(ctx, 64 * TSR_CPUMASK_WORDS, sizeof *cores);
    if (!cand || !cores) {
        tsr_free(ctx, cand);
        tsr_free(ctx, cores);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "rank assignment");
    }
    for (int i = 0; i < t->rank_count; i++)
        if (t->ranks[i].host < 0 || t->ranks[i].host >= t->host_count) {
            tsr_free(ctx, cand);
            tsr_free(ctx, cores);
            return tsr_error(ctx, TSR_ERR_CORRUPT, "ranks[%d].host: %d out of range (%d hosts)", i,
                             t->ranks[i].host, t->host_count);
        }
    for (int h = 0; h < t->host_count; h++) {
        int n = candidates(t, h, cand);
        for (int i = 0; i < t->rank_count; i++) {
            tsr_rank_info *r = &t->ranks[i];
            if (r->host != h) continue;
            /* local ranks spread over the devices, best first; more ranks than devices share */
            r->device = n ? cand[r->local_rank % n] : -1;
        }
        /* without the host's core layout, each PU counts as a core */
        tsr_cpumask all;
        int ncores = 0;
        if (tsr_cpumask_parse(t->hosts[h].cpuset, &all) != 0) memset(&all, 0, sizeof all);
        for (unsigned c = 0; c < 64 * TSR_CPUMASK_WORDS; c++)
            if (tsr_cpumask_isset(&all, c)) {
                memset(&cores[ncores], 0, sizeof cores[ncores]);
                tsr_cpumask_set(&cores[ncores++], c);
            }
        tsr_topology_assign_bindings(t, h, cores, ncores);
    }
    tsr_free(ctx, cand);
    tsr_free(ctx, cores);
    return TSR_OK;
}

tsr_status tsr_cluster_bind(tsr_context *ctx, const tsr_topology *t, int rank) {
    if (!ctx || !t) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_cluster_bind: NULL argument");
    const tsr_rank_info *r = tsr_topology_rank(t, rank);
    if (!r)
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "rank %d is not in the topology (%d ranks)", rank,
                         t->rank_count);
    tsr_cpumask m;
    if (!r->cpuset[0] || tsr_cpumask_parse(r->cpuset, &m) != 0 || tsr_cpumask_count(&m) == 0)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "ranks[%d].cpuset: \"%s\" names no CPU to bind to", rank, r->cpuset);
#if TSR_WITH_HWLOC
    if (ctx->topology && ctx->topology->hwloc) {
        TSR_TRY(tsr_hwloc_bind(ctx, ctx->topology->hwloc, r->cpuset));
    } else
#endif
    {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (unsigned c = 0; c < 64 * TSR_CPUMASK_WORDS && c < CPU_SETSIZE; c++)
            if (tsr_cpumask_isset(&m, c)) CPU_SET(c, &set);
        if (sched_setaffinity(0, sizeof set, &set) != 0)
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "binding to CPUs %s failed", r->cpuset);
    }
    /* PoCL ignores affinity and starts one thread per core: cap it (read at its first use) */
    char n[16];
    snprintf(n, sizeof n, "%d", tsr_cpumask_count(&m));
    setenv("POCL_MAX_PTHREAD_COUNT", n, 0);
    tsr_log(ctx, TSR_LOG_INFO, "rank %d bound to CPUs %s (device %d)", rank, r->cpuset, r->device);
    return TSR_OK;
}

#if !TSR_WITH_MPI
tsr_status tsr_cluster_gather(tsr_context *ctx, const void *mpi_comm, tsr_topology **out) {
    (void)mpi_comm;
    if (out) *out = NULL;
    return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                     "cluster view: tessera was built without MPI (WITH_MPI=0)");
}
#endif

tsr_status tsr_topology_local_cores(tsr_context *ctx, tsr_cpumask **cores, int *count) {
#if TSR_WITH_HWLOC
    if (ctx->topology && ctx->topology->hwloc)
        return tsr_hwloc_cores(ctx, ctx->topology->hwloc, cores, count);
#endif
    return tsr_topology_cores_sysfs(ctx, cores, count);
}
