/* tsr-topo: the devices tessera finds here (or in a topology file), their capability and
 * locality; under mpiexec, the cluster view with each rank's device and CPU binding.
 *
 *   tsr-topo [--json] [--file topo.json [--assign]] [--recalibrate] [--no-calibrate]
 *
 * Without --no-calibrate, devices without cached figures are measured (a few seconds each).
 * --assign places the ranks of a file on its devices (planning a machine that is not here). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tessera.h"
#include "samples/blas_reexec.h"
#if TSR_WITH_MPI
#include <mpi.h>
#endif

static void die(tsr_context *ctx, tsr_status st, const char *what) {
    fprintf(stderr, "tsr-topo: %s: %s (%s)\n", what, ctx ? tsr_context_last_error(ctx) : "",
            tsr_status_name(st));
    exit(1);
}

static const char *backend_name(tsr_backend_kind b) {
    return b == TSR_BACKEND_HOST ? "host" : "opencl";
}

static void fmt_num(char *buf, size_t n, double v, const char *f) {
    if (v > 0)
        snprintf(buf, n, f, v);
    else
        snprintf(buf, n, "-");
}

static void print_table(const tsr_topology *t) {
    for (int h = 0; h < tsr_topology_host_count(t); h++) {
        const tsr_host_info *host = tsr_topology_host(t, h);
        printf("%shost %d: %s  %d package(s), %d NUMA node(s), %d cores, %d PUs (%s), %.1f GiB\n",
               h ? "\n" : "", h, host->hostname, host->packages, host->numa_nodes, host->cores,
               host->pus, host->cpuset, (double)host->memory_bytes / (1u << 30));
        /* the `clinfo -l` list of this host */
        int last_platform = -2;
        for (int i = 0; i < tsr_topology_device_count(t); i++) {
            const tsr_device_info *d = tsr_topology_device(t, i);
            if (d->host != h || d->backend != TSR_BACKEND_OPENCL) continue;
            if (d->platform_index != last_platform)
                printf("Platform #%d: %s\n", d->platform_index, d->platform);
            last_platform = d->platform_index;
            printf(" `-- Device #%d: %s\n", d->device_index, d->name);
        }
        printf("  #  %-11s %-11s %-7s %4s %5s %8s %8s %8s %7s %7s %7s %8s %4s %-9s %-12s %4s %3s  "
               "%s\n",
               "id", "kind", "backend", "CUs", "MHz", "mem GiB", "peak GF", "SGEMM GF", "copy GB/s",
               "h2d", "d2h", "launch us", "numa", "cpus", "pci", "same", "use", "name");
        for (int i = 0; i < tsr_topology_device_count(t); i++) {
            const tsr_device_info *d = tsr_topology_device(t, i);
            if (d->host != h) continue;
            char peak[16], gemm[16], copy[16], h2d[16], d2h[16], lat[16], same[16], numa[16];
            fmt_num(peak, sizeof peak, d->peak_gflops, "%.1f");
            fmt_num(gemm, sizeof gemm, d->gemm_gflops, "%.1f");
            fmt_num(copy, sizeof copy, d->mem_bw_gbps, "%.2f");
            fmt_num(h2d, sizeof h2d, d->h2d_gbps, "%.2f");
            fmt_num(d2h, sizeof d2h, d->d2h_gbps, "%.2f");
            fmt_num(lat, sizeof lat, d->launch_us, "%.2f");
            if (d->same_as >= 0)
                snprintf(same, sizeof same, "#%d", d->same_as);
            else
                snprintf(same, sizeof same, "-");
            if (d->numa_node >= 0)
                snprintf(numa, sizeof numa, "%d", d->numa_node);
            else
                snprintf(numa, sizeof numa, "-");
            printf("  %-2d %-11s %-11s %-7s %4u %5u %8.1f %8s %8s %9s %7s %7s %9s %4s %-9s %-12s "
                   "%4s %3s  %s\n",
                   i, d->id, tsr_device_kind_name(d->kind), backend_name(d->backend),
                   d->compute_units, d->clock_mhz, (double)d->global_mem_bytes / (1u << 30), peak,
                   gemm, copy, h2d, d2h, lat, numa, d->cpuset[0] ? d->cpuset : "-",
                   d->pci_bus_id[0] ? d->pci_bus_id : "-", same,
                   d->absent   ? "abs"
                   : d->usable ? "yes"
                               : "no",
                   d->name);
        }
        for (int i = 0; i < tsr_topology_device_count(t); i++) {
            const tsr_device_info *d = tsr_topology_device(t, i);
            if (d->host != h || !d->gemm_points) continue;
            printf("  #%d SGEMM by size:", i);
            for (int k = 0; k < d->gemm_points && k < 4; k++)
                printf("  %u^3 %.1f GF/s", d->gemm_n[k], d->gemm_gflops_n[k]);
            printf("\n");
        }
    }
    if (tsr_topology_rank_count(t)) {
        printf("\nranks:\n  %4s %5s %5s %4s %-11s %-11s %s\n", "rank", "node", "local", "dev",
               "kind", "id", "cpus");
        for (int r = 0; r < tsr_topology_rank_count(t); r++) {
            const tsr_rank_info *k = tsr_topology_rank(t, r);
            const tsr_device_info *d = tsr_topology_device(t, k->device);
            printf("  %4d %5d %2d/%-2d %4d %-11s %-11s %s\n", k->rank, k->host, k->local_rank,
                   k->local_size, k->device, d ? tsr_device_kind_name(d->kind) : "-",
                   d ? d->id : "-", k->cpuset[0] ? k->cpuset : "-");
        }
    }
}

int main(int argc, char **argv) {
    blas_reexec(argv); /* before anything starts: OpenBLAS's kernels are chosen at load */
    int json = 0, recalibrate = 0, calibrate = 1, assign = 0;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--recalibrate"))
            recalibrate = 1;
        else if (!strcmp(argv[i], "--no-calibrate"))
            calibrate = 0;
        else if (!strcmp(argv[i], "--assign"))
            assign = 1;
        else if (!strcmp(argv[i], "--file") && i + 1 < argc)
            file = argv[++i];
        else {
            if (!strcmp(argv[i], "--file"))
                fprintf(stderr, "tsr-topo: option --file: needs a value\n");
            else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
                ; /* just the usage */
            else
                fprintf(stderr, "tsr-topo: option %.64s: %s\n", argv[i],
                        strncmp(argv[i], "--", 2) ? "unexpected argument" : "unknown option");
            fprintf(stderr,
                    "usage: %s [--json] [--file topo.json [--assign]] [--recalibrate] "
                    "[--no-calibrate]\n",
                    argv[0]);
            return 2;
        }
    }
    tsr_context_options o;
    tsr_context_options_init(&o);
    if (file) o.flags |= TSR_CONTEXT_NO_OPENCL; /* showing a file needs no device */
    char env_err[256];
    if (tsr_context_options_from_env(&o, env_err, sizeof env_err) != TSR_OK) {
        fprintf(stderr, "tsr-topo: %s\n", env_err);
        return 2;
    }
    int rank = 0, size = 1;
#if TSR_WITH_MPI
    /* under mpiexec (PMI_SIZE / OMPI_COMM_WORLD_SIZE set), show the cluster view */
    int use_mpi = !file && (getenv("PMI_SIZE") || getenv("OMPI_COMM_WORLD_SIZE"));
    MPI_Comm local = MPI_COMM_NULL;
    int local_rank = 0;
    if (use_mpi) {
        MPI_Init(&argc, &argv);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local);
        MPI_Comm_rank(local, &local_rank);
    }
#endif
    tsr_context *ctx;
    tsr_status st = tsr_context_create(&ctx, &o);
    if (st != TSR_OK) die(NULL, st, "creating the context");
    tsr_context_set_rank(ctx, size > 1 ? rank : -1);
    tsr_topology *t = NULL;
    if (file) {
        st = tsr_topology_load(ctx, file, &t);
        if (st == TSR_OK && assign) st = tsr_topology_assign_ranks(t);
        if (st != TSR_OK) die(ctx, st, "reading the topology file");
    } else {
#if TSR_WITH_MPI
        /* one rank per node measures; the others read its cache */
        if (use_mpi && local_rank != 0) MPI_Barrier(local);
#endif
        if (calibrate || recalibrate) {
            st = tsr_topology_calibrate(ctx, recalibrate);
            if (st != TSR_OK) die(ctx, st, "measuring the devices");
        }
#if TSR_WITH_MPI
        if (use_mpi && local_rank == 0) MPI_Barrier(local);
        if (use_mpi) {
            st = tsr_cluster_gather(ctx, NULL, &t);
            if (st == TSR_OK) st = tsr_cluster_bind(ctx, t, rank);
        } else
#endif
            st = tsr_topology_from_context(ctx, &t);
        if (st != TSR_OK) die(ctx, st, "describing the topology");
    }
    if (rank == 0) {
        if (json)
            st = tsr_topology_write(t, stdout);
        else
            print_table(t);
        if (st != TSR_OK) die(ctx, st, "writing");
    }
    tsr_topology_free(t);
    tsr_context_free(ctx);
#if TSR_WITH_MPI
    if (use_mpi) {
        MPI_Comm_free(&local);
        MPI_Finalize();
    }
#endif
    return 0;
}
