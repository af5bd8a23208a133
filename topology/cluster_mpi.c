/* The cluster view over MPI: every rank's host and devices gathered into one topology (each
 * node's description serialised as JSON, MPI_Allgatherv), ranks assigned to devices, and each
 * rank's CPU binding computed on its own node's hwloc topology and gathered. */
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "topology/topology.h"

#define MPI_TRY(call, what)                                                                        \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != MPI_SUCCESS) {                                                                  \
            st = tsr_error(ctx, TSR_ERR_MPI, "cluster view: %s failed (MPI error %d)", what, rc_); \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

/* Appends node `node`'s host and devices (parsed from its leader's text) to `all`. */
static tsr_status add_node(tsr_context *ctx, tsr_topology *all, int node, const char *text, int len,
                           int *next_device) {
    tsr_topology *part;
    TSR_TRY(tsr_topology_parse(ctx, text, (size_t)len, &part));
    tsr_status st = TSR_OK;
    if (part->host_count != 1) {
        st = tsr_error(ctx, TSR_ERR_CORRUPT, "cluster view: node %d described %d hosts", node,
                       part->host_count);
    } else if (*next_device + part->device_count > all->device_count) {
        st = tsr_error(ctx, TSR_ERR_INTERNAL, "cluster view: device count changed while gathering");
    } else {
        all->hosts[node] = part->hosts[0];
        for (int i = 0; i < part->device_count; i++) {
            tsr_device_info *d = &all->devices[*next_device + i];
            *d = part->devices[i];
            d->host = node;
            if (d->same_as >= 0) d->same_as += *next_device;
        }
        *next_device += part->device_count;
    }
    tsr_topology_free(part);
    return st;
}

tsr_status tsr_cluster_gather(tsr_context *ctx, const void *mpi_comm, tsr_topology **out) {
    if (!ctx || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_cluster_gather: NULL argument");
    *out = NULL;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) return tsr_error(ctx, TSR_ERR_STATE, "cluster view: MPI is not initialised");
    MPI_Comm comm = mpi_comm ? *(const MPI_Comm *)mpi_comm : MPI_COMM_WORLD;
    MPI_Comm local = MPI_COMM_NULL;
    tsr_status st = TSR_OK;
    tsr_topology *mine = NULL, *all = NULL;
    char *text = NULL, *texts = NULL;
    int *meta = NULL, *counts = NULL, *displs = NULL;
    tsr_cpumask *cores = NULL;
    char *cpusets = NULL;
    int rank, size, local_rank, local_size, leader;

    MPI_TRY(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
    MPI_TRY(MPI_Comm_size(comm, &size), "MPI_Comm_size");
    MPI_TRY(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local),
            "MPI_Comm_split_type(SHARED)");
    MPI_TRY(MPI_Comm_rank(local, &local_rank), "MPI_Comm_rank(local)");
    MPI_TRY(MPI_Comm_size(local, &local_size), "MPI_Comm_size(local)");
    leader = rank;
    MPI_TRY(MPI_Bcast(&leader, 1, MPI_INT, 0, local), "MPI_Bcast(leader)");

    /* this rank's description: only node leaders' are used, every rank's has the same shape */
    int len = 0, ndev = ctx->device_count;
    if ((st = tsr_topology_from_context(ctx, &mine)) == TSR_OK) {
        text = tsr_topology_to_json(mine, 0);
        if (!text)
            st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "cluster view: JSON text");
        else
            len = (int)strlen(text);
    }
    int ok = st == TSR_OK, all_ok = 0;
    MPI_TRY(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce(status)");
    if (!all_ok) {
        if (st == TSR_OK)
            st = tsr_error(ctx, TSR_ERR_PEER_LOST,
                           "cluster view: another rank failed to describe its node");
        goto done;
    }
    int my_meta[5] = {local_rank, local_size, leader, len, ndev};
    meta = tsr_calloc(ctx, (size_t)size * 5, sizeof *meta);
    counts = tsr_calloc(ctx, (size_t)size, sizeof *counts);
    displs = tsr_calloc(ctx, (size_t)size, sizeof *displs);
    if (!meta || !counts || !displs) {
        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "cluster view of %d ranks", size);
        goto done; /* every rank fails alike here only when all are out of memory */
    }
    MPI_TRY(MPI_Allgather(my_meta, 5, MPI_INT, meta, 5, MPI_INT, comm), "MPI_Allgather(meta)");
    long total = 0;
    for (int r = 0; r < size; r++) {
        counts[r] = meta[5 * r + 3];
        displs[r] = (int)total;
        total += counts[r];
    }
    if (total > (1L << 30)) {
        st = tsr_error(ctx, TSR_ERR_SHAPE, "cluster view: %ld bytes of descriptions", total);
        goto done;
    }
    texts = tsr_malloc(ctx, (size_t)total + 1);
    if (!texts) {
        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "cluster view: %ld bytes of descriptions", total);
        goto done;
    }
    MPI_TRY(MPI_Allgatherv(text, len, MPI_CHAR, texts, counts, displs, MPI_CHAR, comm),
            "MPI_Allgatherv");

    /* nodes in order of their leader's rank; a node's devices are its leader's */
    int nodes = 0, devices = 0;
    for (int r = 0; r < size; r++)
        if (meta[5 * r + 2] == r) {
            nodes++;
            devices += meta[5 * r + 4];
        }
    if ((st = tsr_topology_alloc(ctx, nodes, devices, size, &all)) != TSR_OK) goto done;
    int next_device = 0, node = 0;
    for (int r = 0; r < size && st == TSR_OK; r++)
        if (meta[5 * r + 2] == r)
            st = add_node(ctx, all, node++, texts + displs[r], counts[r], &next_device);
    if (st != TSR_OK) goto done;
    for (int r = 0; r < size; r++) {
        tsr_rank_info *k = &all->ranks[r];
        k->rank = r;
        k->local_rank = meta[5 * r];
        k->local_size = meta[5 * r + 1];
        k->host = 0;
        for (int q = 0; q < meta[5 * r + 2]; q++) /* node index = leaders before this one */
            if (meta[5 * q + 2] == q) k->host++;
    }
    if ((st = tsr_topology_assign_ranks(all)) != TSR_OK) goto done;

    /* bindings in whole cores of this node, computed here and gathered */
    int ncores = 0;
    if ((st = tsr_topology_local_cores(ctx, &cores, &ncores)) != TSR_OK) goto done;
    tsr_topology_assign_bindings(all, all->ranks[rank].host, cores, ncores);
    cpusets = tsr_calloc(ctx, (size_t)size, sizeof all->ranks[0].cpuset);
    if (!cpusets) {
        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "cluster view: bindings");
        goto done;
    }
    MPI_TRY(MPI_Allgather(all->ranks[rank].cpuset, (int)sizeof all->ranks[0].cpuset, MPI_CHAR,
                          cpusets, (int)sizeof all->ranks[0].cpuset, MPI_CHAR, comm),
            "MPI_Allgather(bindings)");
    for (int r = 0; r < size; r++) {
        char *c = cpusets + (size_t)r * sizeof all->ranks[0].cpuset;
        c[sizeof all->ranks[0].cpuset - 1] = '\0';
        tsr_strlcpy(all->ranks[r].cpuset, c, sizeof all->ranks[r].cpuset);
    }
    *out = all;
    all = NULL;
done:
    if (local != MPI_COMM_NULL) MPI_Comm_free(&local);
    tsr_topology_free(mine);
    tsr_topology_free(all);
    free(text);
    tsr_free(ctx, texts);
    tsr_free(ctx, meta);
    tsr_free(ctx, counts);
    tsr_free(ctx, displs);
    tsr_free(ctx, cores);
    tsr_free(ctx, cpusets);
    return st;
}
