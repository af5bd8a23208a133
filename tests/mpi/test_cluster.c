/* Cluster view under mpiexec -n 1..4: every rank's host, local rank and devices gathered,
 * checked against MPI's own answers (MPI_Comm_split_type, MPI_Allgather) and the same on every
 * rank; ranks placed on devices of their node; CPU binding applied. test_cluster_cliques runs
 * the same on two fake nodes (MPIR_CVAR_ODD_EVEN_CLIQUES=1). Prints failures, exits non-zero. */
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include "lib/core/internal.h"
#include "topology/topology.h"
#include "tests/support/mpi_check.h"

#ifndef CLUSTER_CLIQUES
#define CLUSTER_CLIQUES 0
#endif

static int world_rank;

int main(int argc, char **argv) {
    if (CLUSTER_CLIQUES) setenv("MPIR_CVAR_ODD_EVEN_CLIQUES", "1", 1); /* read by MPI_Init */
    MPI_Init(&argc, &argv);
    int size;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    mpi_check_rank = world_rank;
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    tsr_context_options o;
    tsr_context_options_init(&o);
    o.cache_dir = "/nonexistent/tessera-test-cache"; /* no measurement in this test */
    tsr_context *ctx = NULL;
    tsr_status st = tsr_context_create(&ctx, &o);
    CHECK(st == TSR_OK, "context: %s", tsr_status_name(st));
    if (st != TSR_OK) MPI_Abort(MPI_COMM_WORLD, 1);

    /* references from MPI itself */
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &local);
    int lrank, lsize, leader = world_rank;
    MPI_Comm_rank(local, &lrank);
    MPI_Comm_size(local, &lsize);
    MPI_Bcast(&leader, 1, MPI_INT, 0, local);
    int mine[4] = {lrank, lsize, leader, tsr_context_device_count(ctx)};
    int *all = calloc((size_t)size * 4, sizeof *all);
    MPI_Allgather(mine, 4, MPI_INT, all, 4, MPI_INT, MPI_COMM_WORLD);
    int nodes = 0;
    for (int r = 0; r < size; r++) nodes += all[4 * r + 2] == r;
    if (CLUSTER_CLIQUES && size >= 2) { /* odd/even cliques: rank r on node r % 2 */
        CHECK(nodes == 2, "%d nodes, want 2 fake nodes", nodes);
        CHECK(lrank == world_rank / 2, "local rank %d, want %d", lrank, world_rank / 2);
        CHECK(lsize == (size + 1 - world_rank % 2) / 2, "local size %d", lsize);
    }

    tsr_topology *t = NULL;
    st = tsr_cluster_gather(ctx, NULL, &t); /* a hang is run-tests.sh's timeout's to catch */
    CHECK(st == TSR_OK, "gather: %s %s", tsr_status_name(st), tsr_context_last_error(ctx));
    if (st != TSR_OK) MPI_Abort(MPI_COMM_WORLD, 1);

    CHECK(tsr_topology_rank_count(t) == size, "%d ranks, want %d", tsr_topology_rank_count(t),
          size);
    CHECK(tsr_topology_host_count(t) == nodes, "%d hosts, want %d", tsr_topology_host_count(t),
          nodes);
    int want_devices = 0;
    for (int r = 0; r < size; r++)
        if (all[4 * r + 2] == r) want_devices += all[4 * r + 3];
    CHECK(tsr_topology_device_count(t) == want_devices, "%d devices, want %d",
          tsr_topology_device_count(t), want_devices);
    char me[256];
    tsr_topology_hostname(me, sizeof me);
    for (int r = 0; r < size && r < tsr_topology_rank_count(t); r++) {
        const tsr_rank_info *k = tsr_topology_rank(t, r);
        CHECK(k->rank == r, "ranks[%d].rank = %d", r, k->rank);
        CHECK(k->local_rank == all[4 * r], "ranks[%d].local_rank = %d, MPI says %d", r,
              k->local_rank, all[4 * r]);
        CHECK(k->local_size == all[4 * r + 1], "ranks[%d].local_size = %d, MPI says %d", r,
              k->local_size, all[4 * r + 1]);
        int node = 0; /* nodes numbered by their leader's rank */
        for (int q = 0; q < all[4 * r + 2]; q++) node += all[4 * q + 2] == q;
        CHECK(k->host == node, "ranks[%d].host = %d, want %d", r, k->host, node);
        const tsr_device_info *d = tsr_topology_device(t, k->device);
        CHECK(d != NULL, "ranks[%d] drives no device", r);
        if (d) {
            CHECK(d->host == k->host, "ranks[%d] drives a device of host %d", r, d->host);
            CHECK(d->usable, "ranks[%d] drives an unusable device", r);
        }
        tsr_cpumask m, hostset;
        CHECK(k->cpuset[0] && tsr_cpumask_parse(k->cpuset, &m) == 0 && tsr_cpumask_count(&m) > 0,
              "ranks[%d].cpuset \"%s\"", r, k->cpuset);
        if (tsr_cpumask_parse(t->hosts[k->host].cpuset, &hostset) == 0)
            for (int w = 0; w < TSR_CPUMASK_WORDS; w++)
                CHECK((m.bits[w] & ~hostset.bits[w]) == 0, "ranks[%d] bound outside its host", r);
        /* ranks sharing a device split its CPUs while there are enough of them */
        for (int q = 0; q < r; q++) {
            const tsr_rank_info *o2 = tsr_topology_rank(t, q);
            tsr_cpumask m2;
            if (o2->host != k->host || o2->device != k->device ||
                tsr_cpumask_parse(o2->cpuset, &m2) != 0)
                continue;
            int sharing = 0;
            for (int x = 0; x < size; x++)
                sharing += t->ranks[x].host == k->host && t->ranks[x].device == k->device;
            if (sharing > tsr_cpumask_count(&hostset)) continue;
            for (int w = 0; w < TSR_CPUMASK_WORDS; w++)
                CHECK((m.bits[w] & m2.bits[w]) == 0, "ranks %d and %d overlap (%s, %s)", q, r,
                      o2->cpuset, k->cpuset);
        }
    }
    /* every node here is this machine: its devices are ours, in order */
    for (int i = 0; i < tsr_topology_device_count(t); i++) {
        const tsr_device_info *d = tsr_topology_device(t, i);
        CHECK(strcmp(t->hosts[d->host].hostname, me) == 0, "host %d is %s", d->host,
              t->hosts[d->host].hostname);
        int first = 0;
        while (first < i && t->devices[first].host != d->host) first++;
        const tsr_device_info *ours = tsr_context_device(ctx, i - first);
        CHECK(ours && strcmp(ours->name, d->name) == 0 && strcmp(ours->id, d->id) == 0,
              "devices[%d] is %s", i, d->name);
        if (d->same_as >= 0)
            CHECK(t->devices[d->same_as].host == d->host && t->devices[d->same_as].same_as == i,
                  "devices[%d].same_as = %d", i, d->same_as);
    }
    /* one view: identical text on every rank */
    char *text = tsr_topology_to_json(t, 0);
    uint64_t h = hash_bytes(text, strlen(text)), lo, hi;
    MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    CHECK(lo == hi, "the views differ between ranks");
    /* and it reads back as a topology file */
    tsr_topology *back = NULL;
    CHECK(tsr_topology_parse(ctx, text, strlen(text), &back) == TSR_OK, "view does not parse: %s",
          tsr_context_last_error(ctx));
    CHECK(back && tsr_topology_rank_count(back) == size, "parsed view lost its ranks");
    tsr_topology_free(back);
    free(text);

    /* binding */
    cpu_set_t before, now;
    sched_getaffinity(0, sizeof before, &before);
    st = tsr_cluster_bind(ctx, t, world_rank);
    CHECK(st == TSR_OK, "bind: %s %s", tsr_status_name(st), tsr_context_last_error(ctx));
    sched_getaffinity(0, sizeof now, &now);
    tsr_cpumask m;
    tsr_cpumask_parse(t->ranks[world_rank].cpuset, &m);
    for (int c = 0; c < 64 * TSR_CPUMASK_WORDS && c < CPU_SETSIZE; c++)
        CHECK(!!CPU_ISSET(c, &now) == tsr_cpumask_isset(&m, (unsigned)c), "CPU %d binding wrong",
              c);
    sched_setaffinity(0, sizeof before, &before);

    tsr_topology_free(t);
    tsr_context_free(ctx);
    free(all);
    MPI_Comm_free(&local);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (world_rank == 0)
        printf("%s: %d ranks, %d nodes: %s\n",
               CLUSTER_CLIQUES ? "cluster (odd/even cliques)" : "cluster", size, nodes,
               total ? "FAILED" : "ok");
    MPI_Finalize();
    return total ? 1 : 0;
}
