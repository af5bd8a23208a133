/* Topology: hwloc + OpenCL discovery, capability measurement and its cache, topology files
 * (JSON), and the cluster view gathered over MPI.
 *
 * A tsr_topology is a self-contained description: hosts, their devices (tsr_device_info with
 * capability) and, for a cluster view, one record per MPI rank with the device it drives.
 * It can describe this machine (tsr_topology_from_context), a file written earlier or by hand
 * (tsr_topology_load: plan for a machine that is not here), or a whole MPI job
 * (tsr_cluster_gather). */
#ifndef TESSERA_TOPOLOGY_H
#define TESSERA_TOPOLOGY_H
#include <stdint.h>
#include <stdio.h>
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_topology tsr_topology;

#define TSR_TOPOLOGY_FORMAT "tessera-topology"
#define TSR_TOPOLOGY_VERSION 1

typedef struct tsr_host_info {
    char hostname[256];
    int packages; /* sockets */
    int numa_nodes;
    int cores;
    int pus; /* hardware threads */
    uint64_t memory_bytes;
    char cpuset[128]; /* every PU as a list, "0-15" */
} tsr_host_info;

typedef struct tsr_rank_info {
    int rank;       /* rank in the communicator */
    int local_rank; /* rank among the ranks of its node (MPI_COMM_TYPE_SHARED) */
    int local_size;
    int host;         /* index into the topology's hosts: its node */
    int device;       /* index into the topology's devices it drives, -1 for none */
    char cpuset[128]; /* CPUs it is bound to (near its device), "" when not bound */
} tsr_rank_info;

/* ---- building and reading ---- */

/* A copy of what the context knows about this machine: one host, its devices, no ranks. */
tsr_status tsr_topology_from_context(tsr_context *ctx, tsr_topology **out);
/* Reads a topology file (JSON). Errors: TSR_ERR_IO, TSR_ERR_PARSE (syntax, type, missing field)
 * and TSR_ERR_CORRUPT (contradictions); the context's last error names the field, as in
 * "devices[2].global_mem_bytes: expected a non-negative integer". */
tsr_status tsr_topology_load(tsr_context *ctx, const char *path, tsr_topology **out);
/* The same from text in memory (`len` bytes, need not be terminated). */
tsr_status tsr_topology_parse(tsr_context *ctx, const char *text, size_t len, tsr_topology **out);
/* Accepts NULL. */
void tsr_topology_free(tsr_topology *topo);

/* Writes the description as JSON (the file format) to `f` / to a file (replaced atomically). */
tsr_status tsr_topology_write(const tsr_topology *topo, FILE *f);
tsr_status tsr_topology_save(const tsr_topology *topo, const char *path);

int tsr_topology_host_count(const tsr_topology *topo);
const tsr_host_info *tsr_topology_host(const tsr_topology *topo,
                                       int index); /* NULL if out of range */
int tsr_topology_device_count(const tsr_topology *topo);
const tsr_device_info *tsr_topology_device(const tsr_topology *topo, int index);
int tsr_topology_rank_count(const tsr_topology *topo); /* 0 unless a cluster view */
const tsr_rank_info *tsr_topology_rank(const tsr_topology *topo, int index);

/* ---- using a description instead of discovery ---- */

/* Replaces the context's devices by those of `topo` (all hosts), for planning. Devices that
 * match one discovered here (same host name, backend, platform/device index, vendor, name and
 * driver) stay openable; the others are marked absent and tsr_backend_open gives
 * TSR_ERR_NO_DEVICE. TSR_TOPOLOGY=file.json in the environment does this at context creation. */
tsr_status tsr_context_use_topology(tsr_context *ctx, const tsr_topology *topo);

/* ---- capability ---- */

/* Measures SGEMM GFLOP/s (several sizes), device memory bandwidth (copy), host->device and
 * device->host bandwidth and kernel launch latency of every present device through its
 * backend, and caches the figures in <cache dir>/capability.json keyed by device identity and
 * driver version. Devices with a cache entry are not measured again unless `force`. A corrupt
 * cache file is measured again, with a warning. Afterwards, of two paths to one physical
 * device (same_as) only the faster stays usable. */
tsr_status tsr_topology_calibrate(tsr_context *ctx, int force);
/* The same for one context device. */
tsr_status tsr_topology_calibrate_device(tsr_context *ctx, int index, int force);

/* ---- cluster view (MPI) ---- */

/* Gathers every rank's host and devices into one view over the communicator `mpi_comm`
 * (a pointer to an MPI_Comm; NULL for MPI_COMM_WORLD) and assigns ranks to devices: the ranks
 * of a node are spread over its usable devices, best first (one rank per device while there
 * are enough), each with a CPU binding near its device. Collective. TSR_ERR_UNSUPPORTED when
 * built without MPI. */
tsr_status tsr_cluster_gather(tsr_context *ctx, const void *mpi_comm, tsr_topology **out);
/* Binds the calling process to the CPUs of `rank` in `topo` (hwloc) and sets
 * POCL_MAX_PTHREAD_COUNT to their number unless already set (PoCL reads it at its first use). */
tsr_status tsr_cluster_bind(tsr_context *ctx, const tsr_topology *topo, int rank);

/* Recomputes ranks[].device and ranks[].cpuset from the hosts, devices and ranks' nodes
 * (what tsr_cluster_gather does after gathering; exposed for planning offline). Ranks sharing
 * one locality split its CPUs into disjoint contiguous slices (tsr_cluster_gather refines the
 * slices to whole cores with each node's hwloc topology). */
tsr_status tsr_topology_assign_ranks(tsr_topology *topo);

#ifdef __cplusplus
}
#endif
#endif
