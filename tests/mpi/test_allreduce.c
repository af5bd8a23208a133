/* Allreduce under mpiexec -n 1..4: every algorithm against MPI_Allreduce of the same data.
 * Odd lengths, float32 and fp16 wire, sum / average / weighted, private and registered
 * buffers, sub-communicators, non-blocking requests, reduce-scatter + allgather, and bitwise
 * identical results on every rank. Prints each mismatch and exits non-zero.
 * test_allreduce_hier (or TSR_TEST_HIER=1) runs it on 2 fake nodes (odd/even cliques). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include "tessera.h"
#include "lib/comm/comm_internal.h"
#include "support/test_util.h"
#include "tests/support/mpi_check.h"

static int world_rank;
static int shm_unsupported; /* world on uneven fake nodes: explicit shm must refuse */

/* 1 if every rank of `mc` holds the same bytes. */
static int same_everywhere(const float *x, size_t n, MPI_Comm mc) {
    uint64_t h = hash_bytes(x, n * sizeof(float)), lo, hi;
    MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, mc);
    MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, mc);
    return lo == hi;
}

typedef struct setup {
    tsr_context *ctx;
    tsr_comm *comm;
    MPI_Comm mc;      /* the same group, for references */
    const char *name;
} setup;

/* registered argument: odd ranks registered, even ranks private (shm pushes finished slices
 * only into registered peers; the others copy them) */
#define MIXED 2

/* Runs one configuration and compares with MPI_Allreduce of the same input. */
static void check_one(setup *S, tsr_allreduce_algo algo, size_t n, tsr_comm_wire wire,
                      tsr_reduce_mode mode, int registered, int integers) {
    int rank, size;
    MPI_Comm_rank(S->mc, &rank);
    MPI_Comm_size(S->mc, &size);
    /* tsr_comm_alloc is collective: every rank allocates, a private rank leaves it unused */
    float *buf = NULL, *reg = NULL;
    if (registered) CHECK_OK(tsr_comm_alloc(S->comm, n * sizeof(float), (void **)&reg), S->ctx);
    if (registered == MIXED && !(rank & 1)) buf = malloc(n * sizeof(float) + 1);
    else buf = registered ? reg : malloc(n * sizeof(float) + 1);
    float *ref = malloc(n * sizeof(float) + 1);
    if (!buf || !ref) {
        CHECK(0, "allocation of %zu floats failed", n);
        if (buf != reg) free(buf);
        if (reg) tsr_comm_free_mem(S->comm, reg);
        free(ref);
        return;
    }
    uint64_t seed = 1000u * (uint64_t)rank + n + 7u * (unsigned)algo + 3u * (unsigned)wire;
    if (integers) {
        for (size_t i = 0; i < n; i++)
            buf[i] = (float)((int)((i * 7 + (size_t)rank * 13) % 41) - 20);
    } else {
        tsr_test_fill_uniform(buf, n, seed, -1.0f, 1.0f);
    }
    double w = 1.0 + rank;
    /* reference: MPI_Allreduce of what each rank contributes */
    for (size_t i = 0; i < n; i++)
        ref[i] = mode == TSR_REDUCE_WEIGHTED ? (float)(buf[i] * w) : buf[i];
    MPI_Allreduce(MPI_IN_PLACE, ref, (int)n, MPI_FLOAT, MPI_SUM, S->mc);
    double div = mode == TSR_REDUCE_AVG        ? size
                 : mode == TSR_REDUCE_WEIGHTED ? size * (size + 1) / 2.0
                                               : 1;
    for (size_t i = 0; i < n; i++) ref[i] = (float)(ref[i] / div);

    tsr_allreduce_opts o;
    tsr_allreduce_opts_init(&o);
    o.algo = algo;
    o.wire = wire;
    o.mode = mode;
    o.weight = w;
    if (mode == TSR_REDUCE_WEIGHTED && (n & 1)) o.total_weight = size * (size + 1) / 2.0;
    if (algo == TSR_ALLREDUCE_SHM && shm_unsupported && S->mc == MPI_COMM_WORLD) {
        tsr_status s = tsr_comm_allreduce(S->comm, buf, n, &o);
        CHECK(s == TSR_ERR_UNSUPPORTED, "shm on uneven nodes gave %s", tsr_status_name(s));
        goto out;
    }
    CHECK_OK(tsr_comm_allreduce(S->comm, buf, n, &o), S->ctx);

    double atol = wire == TSR_WIRE_F16 ? 2e-3 * size : 1e-5 * size;
    double rtol = wire == TSR_WIRE_F16 ? 4e-3 : 1e-5;
    if (integers && wire == TSR_WIRE_F32 && mode == TSR_REDUCE_SUM) atol = rtol = 0;
    size_t worst = 0;
    double err = tsr_test_rel_error(buf, ref, n, atol ? atol : 1e-30, rtol, &worst);
    CHECK(err <= 1.0, "%s %s n=%zu wire=%s mode=%d %s%s: [%zu] = %.9g, expected %.9g (err %.3g)",
          S->name, tsr_allreduce_algo_name(algo), n, wire ? "f16" : "f32", (int)mode,
          registered == MIXED ? "mixed" : registered ? "registered" : "private",
          integers ? " integers" : "", worst,
          n ? buf[worst] : 0.0, n ? ref[worst] : 0.0, err);
    CHECK(same_everywhere(buf, n, S->mc), "%s %s n=%zu: ranks disagree bitwise", S->name,
          tsr_allreduce_algo_name(algo), n);
out:
    if (buf != reg) free(buf);
    if (registered) CHECK_OK(tsr_comm_free_mem(S->comm, reg), S->ctx);
    free(ref);
}

/* 65536 + 19: slices over 64 KiB with a ragged end (shm's streaming copies, their tails) */
static const size_t lengths[] = {0, 1, 2, 3, 7, 513, 4096 + 3, 65536 + 19, 1 << 20};
static const tsr_allreduce_algo algos[] = {TSR_ALLREDUCE_MPI, TSR_ALLREDUCE_RING,
                                           TSR_ALLREDUCE_RHD, TSR_ALLREDUCE_SHM,
                                           TSR_ALLREDUCE_AUTO};

static void check_matrix(setup *S, int light) {
    for (size_t a = 0; a < sizeof algos / sizeof algos[0]; a++) {
        for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
            size_t n = lengths[li];
            int big = n >= (1u << 20);
            /* every length: f32 sum private, f32 sum registered (exact on integers) */
            check_one(S, algos[a], n, TSR_WIRE_F32, TSR_REDUCE_SUM, 0, 0);
            check_one(S, algos[a], n, TSR_WIRE_F32, TSR_REDUCE_SUM, 1, 1);
            check_one(S, algos[a], n, TSR_WIRE_F32, TSR_REDUCE_SUM, MIXED, 1);
            if (light && big) continue;
            check_one(S, algos[a], n, TSR_WIRE_F16, TSR_REDUCE_SUM, (int)(li & 1), 0);
            check_one(S, algos[a], n, TSR_WIRE_F32, TSR_REDUCE_AVG, (int)(li & 1), 0);
            if (light) continue;
            check_one(S, algos[a], n, TSR_WIRE_F16, TSR_REDUCE_AVG, !(li & 1), 0);
            check_one(S, algos[a], n, TSR_WIRE_F32, TSR_REDUCE_WEIGHTED, !(li & 1), 0);
        }
    }
}

/* Several overlapping requests (fusion buckets), waited for out of order. */
static void check_nonblocking(setup *S) {
    int rank, size;
    MPI_Comm_rank(S->mc, &rank);
    MPI_Comm_size(S->mc, &size);
    enum { NB = 5 };
    const size_t ns[NB] = {1000, 77, 5000, 3, 70000};
    const tsr_allreduce_algo al[NB] = {TSR_ALLREDUCE_SHM, TSR_ALLREDUCE_RING, TSR_ALLREDUCE_SHM,
                                       TSR_ALLREDUCE_MPI, TSR_ALLREDUCE_RHD};
    float *b[NB], *ref[NB];
    tsr_comm_request *req[NB];
    for (int i = 0; i < NB; i++) {
        b[i] = malloc(ns[i] * sizeof(float));
        ref[i] = malloc(ns[i] * sizeof(float));
        for (size_t j = 0; j < ns[i]; j++) b[i][j] = (float)((int)(j % 17) + rank * 3 + i);
        MPI_Allreduce(b[i], ref[i], (int)ns[i], MPI_FLOAT, MPI_SUM, S->mc);
        tsr_allreduce_opts o;
        tsr_allreduce_opts_init(&o);
        o.algo = al[i];
        if (o.algo == TSR_ALLREDUCE_SHM && shm_unsupported && S->mc == MPI_COMM_WORLD)
            o.algo = TSR_ALLREDUCE_AUTO;
        req[i] = NULL;
        CHECK_OK(tsr_comm_allreduce_start(S->comm, b[i], ns[i], &o, &req[i]), S->ctx);
    }
    int done = 0;
    for (int spin = 0; spin < 3 && req[1]; spin++) CHECK_OK(tsr_comm_test(req[1], &done), S->ctx);
    for (int i = NB - 1; i >= 0; i--) CHECK_OK(tsr_comm_wait(req[i]), S->ctx);
    for (int i = 0; i < NB; i++) {
        CHECK(memcmp(b[i], ref[i], ns[i] * sizeof(float)) == 0, "%s non-blocking request %d (%s) "
              "differs from MPI_Allreduce", S->name, i, tsr_allreduce_algo_name(al[i]));
        free(b[i]);
        free(ref[i]);
    }
}

/* ZeRO-1: reduce-scatter, change the own slice, allgather. */
static void check_rs_ag(setup *S, tsr_allreduce_algo algo, size_t n, int registered) {
    int rank, size;
    MPI_Comm_rank(S->mc, &rank);
    MPI_Comm_size(S->mc, &size);
    float *buf = NULL, *ref = malloc(n * sizeof(float) + 4);
    if (registered) CHECK_OK(tsr_comm_alloc(S->comm, n * sizeof(float), (void **)&buf), S->ctx);
    else buf = malloc(n * sizeof(float) + 4);
    for (size_t i = 0; i < n; i++) buf[i] = (float)((int)(i % 23) - 11 + rank);
    MPI_Allreduce(buf, ref, (int)n, MPI_FLOAT, MPI_SUM, S->mc);
    tsr_allreduce_opts o;
    tsr_allreduce_opts_init(&o);
    o.algo = algo;
    CHECK_OK(tsr_comm_reduce_scatter(S->comm, buf, n, &o), S->ctx);
    size_t lo, hi;
    tsr_comm_slice(S->comm, n, rank, &lo, &hi);
    CHECK(lo <= hi && hi <= n, "slice [%zu,%zu) of %zu", lo, hi, n);
    for (size_t i = lo; i < hi; i++) {
        if (buf[i] != ref[i]) {
            CHECK(0, "%s reduce_scatter %s n=%zu: [%zu] = %g, expected %g", S->name,
                  tsr_allreduce_algo_name(algo), n, i, buf[i], ref[i]);
            break;
        }
        buf[i] = ref[i] = ref[i] * 0.5f; /* "optimizer step" on the own slice */
    }
    for (int r = 0; r < size; r++) { /* every rank applies the same step to its reference */
        size_t a, b;
        tsr_comm_slice(S->comm, n, r, &a, &b);
        if (r != rank)
            for (size_t i = a; i < b; i++) ref[i] *= 0.5f;
    }
    CHECK_OK(tsr_comm_allgather(S->comm, buf, n, algo), S->ctx);
    CHECK(memcmp(buf, ref, n * sizeof(float)) == 0, "%s allgather %s n=%zu %s differs", S->name,
          tsr_allreduce_algo_name(algo), n, registered ? "registered" : "private");
    if (registered) CHECK_OK(tsr_comm_free_mem(S->comm, buf), S->ctx);
    else free(buf);
    free(ref);
}

static void check_errors(setup *S) {
    float x[4] = {0};
    tsr_allreduce_opts o;
    tsr_allreduce_opts_init(&o);
    o.algo = (tsr_allreduce_algo)42;
    CHECK(tsr_comm_allreduce(S->comm, x, 4, &o) == TSR_ERR_INVALID_ARG, "unknown algo accepted");
    CHECK(strstr(tsr_context_last_error(S->ctx), "unknown algorithm") != NULL, "detail: %s",
          tsr_context_last_error(S->ctx));
    CHECK(tsr_comm_allreduce(S->comm, NULL, 4, NULL) == TSR_ERR_INVALID_ARG, "NULL buf accepted");
    tsr_allreduce_opts_init(&o);
    o.mode = TSR_REDUCE_WEIGHTED;
    o.weight = 0.0; /* all ranks: the weights sum to 0 (collectively detected) */
    CHECK(tsr_comm_allreduce(S->comm, x, 4, &o) == TSR_ERR_INVALID_ARG, "zero weights accepted");
    o.weight = -1.0;
    CHECK(tsr_comm_allreduce(S->comm, x, 4, &o) == TSR_ERR_INVALID_ARG, "negative weight accepted");
    int dummy;
    CHECK(tsr_comm_free_mem(S->comm, &dummy) == TSR_ERR_NOT_FOUND, "free of a foreign pointer");
    /* MPI failures become TSR_ERR_MPI with MPI's own words in the detail */
    char expect[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    MPI_Error_string(MPI_ERR_COUNT, expect, &len);
    expect[len] = '\0';
    CHECK(tsr_comm_mpi_error(S->ctx, MPI_ERR_COUNT, "MPI_Isend") == TSR_ERR_MPI,
          "mpi error status");
    CHECK(strstr(tsr_context_last_error(S->ctx), "MPI_Isend failed: ") &&
              strstr(tsr_context_last_error(S->ctx), expect),
          "MPI error detail '%s' lacks '%s'", tsr_context_last_error(S->ctx), expect);
    /* a second "world" while MPI runs: wraps it, and freeing it leaves MPI running */
    tsr_comm *again = NULL;
    CHECK_OK(tsr_comm_init_world(S->ctx, NULL, NULL, &again), S->ctx);
    CHECK(again && tsr_comm_size(again) == tsr_comm_size(S->comm), "second world");
    tsr_comm_free(again);
    int finalized = 1;
    MPI_Finalized(&finalized);
    CHECK(!finalized, "freeing a communicator that did not initialise MPI finalised it");
    tsr_comm *bad = (tsr_comm *)0x1;
    CHECK(tsr_comm_split(S->comm, -1, 0, &bad) == TSR_ERR_INVALID_ARG && bad == NULL,
          "negative color accepted");
}

static void run_suite(setup *S, int light) {
    check_matrix(S, light);
    check_nonblocking(S);
    const tsr_allreduce_algo rs[] = {TSR_ALLREDUCE_AUTO, TSR_ALLREDUCE_RING, TSR_ALLREDUCE_SHM};
    for (int i = 0; i < 3; i++) {
        check_rs_ag(S, rs[i], 4099, i & 1);
        check_rs_ag(S, rs[i], 5, !(i & 1));
    }
}

#ifndef TSR_TEST_HIER_BUILD
#define TSR_TEST_HIER_BUILD 0
#endif

int main(int argc, char **argv) {
    int hier = TSR_TEST_HIER_BUILD || getenv("TSR_TEST_HIER") != NULL;
    /* Two fake nodes of alternating ranks: read by MPICH at MPI_Init. */
    if (hier) setenv("MPIR_CVAR_ODD_EVEN_CLIQUES", "1", 1);
    /* A small scratch so 1<<20 floats take several shm pieces. */
    setenv("TSR_SHM_BYTES", "1M", 0);
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    tsr_context *ctx = NULL;
    if (tsr_context_create(&ctx, &co) != TSR_OK) {
        fprintf(stderr, "context creation failed\n");
        return 1;
    }
    setup W = {ctx, NULL, MPI_COMM_NULL, "world"};
    tsr_status s = tsr_comm_init_world(ctx, &argc, &argv, &W.comm);
    if (s != TSR_OK) {
        fprintf(stderr, "tsr_comm_init_world: %s\n", tsr_context_last_error(ctx));
        return 1;
    }
    W.mc = MPI_COMM_WORLD;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    mpi_check_rank = world_rank;
    int size = tsr_comm_size(W.comm);
    CHECK(tsr_comm_rank(W.comm) == world_rank, "rank %d", tsr_comm_rank(W.comm));
    int expect_nodes = hier && size > 1 ? 2 : 1;
    CHECK(tsr_comm_node_count(W.comm) == expect_nodes, "%d nodes, expected %d",
          tsr_comm_node_count(W.comm), expect_nodes);
    int ls = tsr_comm_local_size(W.comm), lmin, lmax;
    MPI_Allreduce(&ls, &lmin, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&ls, &lmax, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    shm_unsupported = lmin != lmax;
    int light = size > 2; /* more ranks than cores here: MPI busy-polls */

    check_errors(&W);
    run_suite(&W, light || hier);

    /* sub-communicators: halves by parity, then the node communicator */
    setup H = {ctx, NULL, MPI_COMM_NULL, "half"};
    CHECK_OK(tsr_comm_split(W.comm, world_rank % 2, -world_rank, &H.comm), ctx);
    MPI_Comm_split(MPI_COMM_WORLD, world_rank % 2, -world_rank, &H.mc);
    if (H.comm) {
        int hr;
        MPI_Comm_rank(H.mc, &hr);
        CHECK(tsr_comm_rank(H.comm) == hr, "split rank %d, MPI says %d", tsr_comm_rank(H.comm), hr);
        check_one(&H, TSR_ALLREDUCE_RING, 4099, TSR_WIRE_F32, TSR_REDUCE_SUM, 0, 0);
        check_one(&H, TSR_ALLREDUCE_RHD, 513, TSR_WIRE_F16, TSR_REDUCE_AVG, 1, 0);
        check_one(&H, TSR_ALLREDUCE_SHM, 70001, TSR_WIRE_F32, TSR_REDUCE_SUM, 1, 1);
        check_one(&H, TSR_ALLREDUCE_AUTO, 7, TSR_WIRE_F32, TSR_REDUCE_AVG, 0, 0);
        check_nonblocking(&H);
    }
    tsr_comm_free(H.comm);
    MPI_Comm_free(&H.mc);

    setup N = {ctx, NULL, MPI_COMM_NULL, "node"};
    CHECK_OK(tsr_comm_split_node(W.comm, &N.comm), ctx);
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &N.mc);
    if (N.comm) {
        CHECK(tsr_comm_node_count(N.comm) == 1, "node communicator spans %d nodes",
              tsr_comm_node_count(N.comm));
        CHECK(tsr_comm_size(N.comm) == tsr_comm_local_size(W.comm), "node size %d vs local %d",
              tsr_comm_size(N.comm), tsr_comm_local_size(W.comm));
        check_one(&N, TSR_ALLREDUCE_SHM, 4099, TSR_WIRE_F32, TSR_REDUCE_SUM, 1, 0);
        check_one(&N, TSR_ALLREDUCE_AUTO, 1 << 16, TSR_WIRE_F32, TSR_REDUCE_AVG, 0, 0);
    }
    tsr_comm_free(N.comm);
    MPI_Comm_free(&N.mc);

    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (world_rank == 0)
        printf("allreduce%s: %d ranks, %d nodes: %s (%d failures)\n", hier ? " (2 fake nodes)" : "",
               size, expect_nodes, total ? "FAILED" : "ok", total);
    tsr_comm_free(W.comm); /* finalises MPI: it initialised it */
    tsr_context_free(ctx);
    return total ? 1 : 0;
}
