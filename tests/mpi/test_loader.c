/* The sharded loader under mpiexec -n 1..4: every rank computes the same epoch order, and the
 * ranks' shards together hold every sample exactly once (gathered to rank 0 and counted), with
 * and without drop_last. Also a checkpoint saved by one rank loads bit-identically on all.
 * Prints each failure and exits non-zero. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <mpi.h>
#include "tessera.h"
#include "tests/support/mpi_check.h"

static int rank, nranks;

static int same_everywhere(const void *p, size_t n) {
    uint64_t h = hash_bytes(p, n), lo, hi;
    MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

static void check_epochs(tsr_context *ctx, const tsr_dataset *d, size_t batch, int drop_last) {
    size_t n = d->count, global = batch * (size_t)nranks;
    size_t *perm = malloc(n * sizeof *perm);
    int32_t *mine = malloc(n * sizeof *mine), *all = malloc(n * sizeof *all);
    int32_t *labels = malloc(batch * sizeof *labels);
    int *counts = malloc((size_t)nranks * sizeof *counts), *displs = malloc((size_t)nranks * sizeof *displs);
    size_t *seen = malloc(n * sizeof *seen);
    tsr_loader_options o = {batch, 2024, 1, rank, nranks, drop_last};
    tsr_loader *l = NULL;
    tsr_status st = tsr_loader_create(ctx, d, &o, &l);
    CHECK(st == TSR_OK, "tsr_loader_create: %s", tsr_context_last_error(ctx));
    if (st != TSR_OK) goto out;
    for (uint64_t epoch = 0; epoch < 3; epoch++) {
        tsr_shuffle_permutation(o.seed, epoch, n, perm);
        CHECK(same_everywhere(perm, n * sizeof *perm), "epoch %llu: orders differ between ranks",
              (unsigned long long)epoch);
        tsr_loader_start_epoch(l, epoch);
        int have = 0;
        size_t got, batches = 0;
        while ((got = tsr_loader_next(l, NULL, labels)) > 0) {
            memcpy(mine + have, labels, got * sizeof *labels);
            have += (int)got;
            batches++;
        }
        CHECK(batches == tsr_loader_batches(l), "epoch %llu: %zu batches, loader says %zu",
              (unsigned long long)epoch, batches, tsr_loader_batches(l));
        MPI_Gather(&have, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (rank == 0) {
            displs[0] = 0;
            for (int r = 1; r < nranks; r++) displs[r] = displs[r - 1] + counts[r - 1];
        }
        MPI_Gatherv(mine, have, MPI_INT32_T, all, counts, displs, MPI_INT32_T, 0, MPI_COMM_WORLD);
        if (rank != 0) continue;
        size_t total = (size_t)displs[nranks - 1] + (size_t)counts[nranks - 1];
        size_t kept = drop_last ? n / global * global : n;
        CHECK(total == kept, "epoch %llu drop_last %d: %zu samples over all ranks, expected %zu",
              (unsigned long long)epoch, drop_last, total, kept);
        memset(seen, 0, n * sizeof *seen);
        for (size_t i = 0; i < total && i < n; i++)
            if (all[i] >= 0 && (size_t)all[i] < n) seen[all[i]]++;
        for (size_t i = 0; i < n; i++)
            CHECK(seen[perm[i]] == (i < kept ? 1u : 0u),
                  "epoch %llu drop_last %d: sample %zu (position %zu) seen %zu times",
                  (unsigned long long)epoch, drop_last, perm[i], i, seen[perm[i]]);
    }
out:
    tsr_loader_free(l);
    free(perm);
    free(mine);
    free(all);
    free(labels);
    free(counts);
    free(displs);
    free(seen);
}

static void check_checkpoint(tsr_context *ctx) {
    char path[256];
    if (rank == 0) {
        char dir[] = "/tmp/tsr-mpi-ck-XXXXXX";
        CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
        snprintf(path, sizeof path, "%s/run.ckpt", dir);
        tsr_checkpoint *ck = NULL;
        float x[37];
        for (int i = 0; i < 37; i++) x[i] = (float)i * 0.37f - 5.0f;
        tsr_status st = tsr_checkpoint_create(ctx, &ck);
        if (st == TSR_OK) {
            strcpy(ck->model_spec, "dense:10");
            strcpy(ck->optimizer, "sgd");
            ck->step = 12345;
            st = tsr_checkpoint_add_tensor(ctx, ck, "params", x, 37);
        }
        if (st == TSR_OK) st = tsr_checkpoint_save(ctx, path, ck);
        CHECK(st == TSR_OK, "save: %s", tsr_context_last_error(ctx));
        tsr_checkpoint_free(ctx, ck);
    }
    MPI_Bcast(path, sizeof path, MPI_CHAR, 0, MPI_COMM_WORLD);
    tsr_checkpoint *ck = NULL;
    tsr_status st = tsr_checkpoint_load(ctx, path, &ck);
    CHECK(st == TSR_OK, "load: %s", tsr_context_last_error(ctx));
    float zeros[37] = {0};
    const tsr_checkpoint_tensor *t = ck ? tsr_checkpoint_find(ck, "params") : NULL;
    CHECK(t && t->count == 37 && ck->step == 12345, "params/step missing");
    CHECK(same_everywhere(t ? t->data : zeros, sizeof zeros), "loaded tensors differ between ranks");
    tsr_checkpoint_free(ctx, ck);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        unlink(path);
        *strrchr(path, '/') = '\0';
        rmdir(path);
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    mpi_check_rank = rank;
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    tsr_context *ctx = NULL;
    tsr_status st = tsr_context_create(&ctx, &o);
    CHECK(st == TSR_OK, "context: %s", tsr_status_name(st));
    tsr_dataset *d = NULL;
    if (ctx) st = tsr_dataset_create(ctx, 103, 1, 2, 2, 103, &d);
    CHECK(st == TSR_OK && d, "tsr_dataset_create: %s", tsr_context_last_error(ctx));
    if (d) {
        for (size_t i = 0; i < d->count; i++) d->labels[i] = (int32_t)i; /* label = index */
        static const size_t batches[] = {1, 4, 10, 64};
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++)
            for (int drop = 0; drop <= 1; drop++) check_epochs(ctx, d, batches[b], drop);
        check_checkpoint(ctx);
    }
    tsr_dataset_free(ctx, d);
    tsr_context_free(ctx);
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("test_loader: %d ranks, %d failures\n", nranks, total);
    MPI_Finalize();
    return total ? 1 : 0;
}
