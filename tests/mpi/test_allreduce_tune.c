/* Allreduce tuning table under mpiexec -n 1..4 (lib/comm/tune.c): a short measurement writes a
 * table that reloads to the same choices on every rank; `auto` runs a table's entry (algorithm,
 * segment, lanes, per buffer kind) and its results stay exact; another key's table and a
 * corrupt one are warned about and measured again (the quick set, up to 1 MiB), except while
 * an allreduce is in flight (built-in rules). Kept light: the first measurement covers 4 and
 * 16 KiB only, and n=3/4 (MPICH busy-polls, they share 2 cores here) measure again once. */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <mpi.h>
#include "tessera.h"
#include "lib/comm/comm_internal.h"
#include "tests/support/mpi_check.h"

static char warned[2048]; /* last warning logged on this rank */

static void on_log(tsr_log_level level, const char *message, void *user) {
    (void)user;
    if (level == TSR_LOG_WARN) snprintf(warned, sizeof warned, "%s", message);
}

static void fill(float *x, size_t n, int rank) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((int)(i % 61) - 30) * (float)(rank + 1);
}

static int exact(const float *x, size_t n, int size) {
    float k = (float)size * (float)(size + 1) / 2.0f;
    for (size_t i = 0; i < n; i++)
        if (x[i] != (float)((int)(i % 61) - 30) * k) return 0;
    return 1;
}

/* JSON keeps a double to about 15 digits (cJSON prints %.15g when that reads back close). */
static int near(double a, double b) { return fabs(a - b) <= 1e-12 * fabs(b); }

/* 1 if v is the same on every rank. */
static int agreed(long v) {
    long lo, hi;
    MPI_Allreduce(&v, &lo, 1, MPI_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&v, &hi, 1, MPI_LONG, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

/* An auto allreduce of n floats (registered or private): checks the request runs `want`
 * (algo, segment, lanes as auto_choice reports them) and the sum is exact. */
static void run_auto(tsr_context *ctx, tsr_comm *comm, size_t n, int registered,
                     const char *what) {
    float *buf = NULL;
    if (registered) CHECK_OK(tsr_comm_alloc(comm, n * sizeof(float), (void **)&buf), ctx);
    else buf = malloc(n * sizeof(float));
    if (!buf) return;
    fill(buf, n, tsr_comm_rank(comm));
    tsr_comm_request *r = NULL;
    CHECK_OK(tsr_comm_allreduce_start(comm, buf, n, NULL, &r), ctx);
    tsr_allreduce_choice c = tsr_comm_auto_choice(comm, n, registered);
    if (r) {
        CHECK(r->algo == c.algo, "%s: auto ran %s, auto_choice says %s", what,
              tsr_allreduce_algo_name(r->algo), tsr_allreduce_algo_name(c.algo));
        CHECK(r->seg_bytes == c.segment_bytes && r->max_lanes == c.lanes,
              "%s: segment %zu lanes %d, auto_choice says %zu, %d", what, r->seg_bytes,
              r->max_lanes, c.segment_bytes, c.lanes);
        CHECK(agreed((long)r->algo * 100000000L + (long)r->seg_bytes + r->max_lanes),
              "%s: ranks picked different algorithms", what);
        CHECK_OK(tsr_comm_wait(r), ctx);
    }
    CHECK(exact(buf, n, tsr_comm_size(comm)), "%s: %zu floats: wrong sum", what, n);
    if (registered) CHECK_OK(tsr_comm_free_mem(comm, buf), ctx);
    else free(buf);
}

/* Rank 0 rewrites the table file: every entry of both lists gets the given choice, and the
 * key's host field becomes `host` when not NULL. Returns 1 if rewritten. */
static int rewrite_table(const char *path, const char *algo_priv, const char *algo_reg,
                         double seg, int lanes, const char *host) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char text[1 << 16];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[len] = '\0';
    cJSON *root = cJSON_Parse(text);
    if (!root) return 0;
    for (int reg = 0; reg < 2; reg++) {
        cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItem(root, reg ? "registered" : "private")) {
            cJSON_ReplaceItemInObject(e, "algo", cJSON_CreateString(reg ? algo_reg : algo_priv));
            cJSON_ReplaceItemInObject(e, "segment_bytes", cJSON_CreateNumber(seg));
            cJSON_ReplaceItemInObject(e, "lanes", cJSON_CreateNumber(lanes));
        }
    }
    if (host)
        cJSON_ReplaceItemInObject(cJSON_GetObjectItem(root, "key"), "host",
                                  cJSON_CreateString(host));
    char *out = cJSON_Print(root);
    cJSON_Delete(root);
    f = fopen(path, "wb");
    int ok = f && out && fputs(out, f) >= 0;
    if (f) fclose(f);
    cJSON_free(out);
    return ok;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* After a refused table was loaded: rank 0 warned (naming the file and `why`), every rank
 * holds the same new measurement from 4 KiB to 1 MiB (not beyond), and the file now reloads
 * without a warning. */
static void check_remeasured(tsr_context *ctx, tsr_comm *comm, const char *path,
                             const char *why, const char *what) {
    int rank = tsr_comm_rank(comm);
    CHECK(rank != 0 || (strstr(warned, path) && strstr(warned, why) &&
                        strstr(warned, "measuring it again")),
          "%s: warning '%s'", what, warned);
    for (int reg = 0; reg < 2; reg++) {
        for (size_t n = 1024; n <= ((size_t)1 << 18); n *= 4) {
            tsr_allreduce_choice c = tsr_comm_auto_choice(comm, n, reg);
            CHECK(c.tuned && c.busbw_GBps > 0, "%s: %zu floats (%s) not measured again", what,
                  n, reg ? "registered" : "private");
            CHECK(agreed((long)c.algo * 100000000L + (long)c.segment_bytes + c.lanes),
                  "%s: ranks hold different entries", what);
        }
    }
    CHECK(!tsr_comm_auto_choice(comm, (size_t)1 << 20, 0).tuned, "%s: 4 MiB measured", what);
    warned[0] = '\0';
    CHECK_OK(tsr_comm_tune_load(comm), ctx);
    CHECK(tsr_comm_auto_choice(comm, 1024, 0).tuned && !warned[0],
          "%s: the new table did not reload cleanly: '%s'", what, warned);
    run_auto(ctx, comm, 4096, 1, what);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    mpi_check_rank = rank;
    /* one fresh cache folder for all ranks */
    char dir[256] = "";
    if (rank == 0) {
        snprintf(dir, sizeof dir, "%s/tsr-tune-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dir)) dir[0] = '\0';
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (!dir[0]) {
        fprintf(stderr, "rank %d: cannot create a temp folder\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    co.cache_dir = dir;
    tsr_context *ctx = NULL;
    tsr_comm *comm = NULL;
    if (tsr_context_create(&ctx, &co) != TSR_OK ||
        tsr_comm_init_world(ctx, &argc, &argv, &comm) != TSR_OK) {
        fprintf(stderr, "rank %d: setup failed\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    tsr_context_set_log(ctx, on_log, NULL, TSR_LOG_WARN);
    char path[1024] = "";
    CHECK_OK(tsr_comm_tune_path(comm, path, sizeof path), ctx);
    CHECK(strncmp(path, dir, strlen(dir)) == 0, "table %s is not in the cache folder %s", path,
          dir);
    const size_t n4k = 1024, n16k = 4096, n1m = 1 << 18;

    if (size == 1) {
        CHECK(tsr_comm_tune(comm, 1, 16384) == TSR_ERR_UNSUPPORTED, "tuning one rank");
        CHECK_OK(tsr_comm_tune_load(comm), ctx);
        CHECK(!tsr_comm_auto_choice(comm, n4k, 0).tuned, "one rank uses no table");
        run_auto(ctx, comm, n4k, 0, "one rank");
        SKIP("tuning needs more than one rank");
    } else {
        /* no table: the built-in rules (one node: shm) */
        CHECK_OK(tsr_comm_tune_load(comm), ctx);
        tsr_allreduce_choice c = tsr_comm_auto_choice(comm, n4k, 0);
        CHECK(!c.tuned && c.algo == tsr_comm_choose_algo(comm, n4k),
              "no table: tuned %d algo %s", c.tuned, tsr_allreduce_algo_name(c.algo));
        CHECK(!warned[0], "no table should not warn: %s", warned);

        /* measurement, then a reload gives the same choices, on every rank */
        CHECK_OK(tsr_comm_tune(comm, 1, 16384), ctx);
        tsr_allreduce_choice before[2][2];
        for (int reg = 0; reg < 2; reg++) {
            before[reg][0] = tsr_comm_auto_choice(comm, n4k, reg);
            before[reg][1] = tsr_comm_auto_choice(comm, n16k, reg);
            for (int k = 0; k < 2; k++) {
                tsr_allreduce_choice *b = &before[reg][k];
                CHECK(b->tuned && b->algo != TSR_ALLREDUCE_AUTO && b->busbw_GBps > 0 &&
                      b->mpi_busbw_GBps > 0, "tuned entry %d/%d: tuned %d algo %s busbw %g mpi %g",
                      reg, k, b->tuned, tsr_allreduce_algo_name(b->algo), b->busbw_GBps,
                      b->mpi_busbw_GBps);
                /* MPI_Allreduce is a candidate; the built-in choice stays within 10% */
                CHECK(b->busbw_GBps * 1.1 * (1 + 1e-9) >= b->mpi_busbw_GBps, "the choice (%g "
                      "GB/s) is slower than MPI_Allreduce (%g) by more than 10%%", b->busbw_GBps,
                      b->mpi_busbw_GBps);
                CHECK(agreed((long)b->algo * 100000000L + (long)b->segment_bytes + b->lanes),
                      "ranks hold different tuned entries");
            }
        }
        /* beyond the measured sizes: the built-in rules */
        CHECK(!tsr_comm_auto_choice(comm, n1m, 0).tuned, "1 MiB was not measured");
        CHECK(access(path, R_OK) == 0 || rank != 0, "no table at %s", path);
        CHECK_OK(tsr_comm_tune_load(comm), ctx);
        for (int reg = 0; reg < 2; reg++) {
            for (int k = 0; k < 2; k++) {
                tsr_allreduce_choice a = tsr_comm_auto_choice(comm, k ? n16k : n4k, reg);
                tsr_allreduce_choice *b = &before[reg][k];
                CHECK(a.tuned && a.algo == b->algo && a.segment_bytes == b->segment_bytes &&
                      a.lanes == b->lanes && near(a.busbw_GBps, b->busbw_GBps) &&
                      near(a.mpi_busbw_GBps, b->mpi_busbw_GBps), "reload %d/%d differs: %d %s %zu %d %.17g %.17g vs %s %zu %d %.17g %.17g", reg, k, a.tuned, tsr_allreduce_algo_name(a.algo), a.segment_bytes, a.lanes, a.busbw_GBps, a.mpi_busbw_GBps, tsr_allreduce_algo_name(b->algo), b->segment_bytes, b->lanes, b->busbw_GBps, b->mpi_busbw_GBps);
            }
        }
        CHECK(!warned[0], "a valid table warned: %s", warned);
        run_auto(ctx, comm, n4k, 0, "tuned, private");
        run_auto(ctx, comm, n16k, 1, "tuned, registered");

        /* a table's entry is what auto runs: rhd with 64 KiB segments and 2 lanes for private
         * buffers, ring for registered ones */
        int ok = 1;
        if (rank == 0) ok = rewrite_table(path, "rhd", "ring", 65536, 2, NULL);
        MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
        CHECK(ok, "cannot rewrite %s", path);
        CHECK_OK(tsr_comm_tune_load(comm), ctx);
        c = tsr_comm_auto_choice(comm, n4k, 0);
        CHECK(c.tuned && c.algo == TSR_ALLREDUCE_RHD && c.segment_bytes == 65536 && c.lanes == 2,
              "private 4 KiB: %s %zu %d", tsr_allreduce_algo_name(c.algo), c.segment_bytes,
              c.lanes);
        c = tsr_comm_auto_choice(comm, n16k, 1);
        CHECK(c.tuned && c.algo == TSR_ALLREDUCE_RING, "registered 16 KiB: %s",
              tsr_allreduce_algo_name(c.algo));
        CHECK(tsr_comm_choose_algo(comm, n16k) == TSR_ALLREDUCE_RHD, "choose_algo: %s",
              tsr_allreduce_algo_name(tsr_comm_choose_algo(comm, n16k)));
        run_auto(ctx, comm, n4k, 0, "rewritten, private");
        run_auto(ctx, comm, n16k + 5, 1, "rewritten, registered");
        /* an explicit algorithm is not touched by the table */
        {
            float *x = malloc(n4k * sizeof(float));
            tsr_allreduce_opts o;
            tsr_allreduce_opts_init(&o);
            o.algo = TSR_ALLREDUCE_MPI;
            tsr_comm_request *r = NULL;
            fill(x, n4k, rank);
            CHECK_OK(tsr_comm_allreduce_start(comm, x, n4k, &o, &r), ctx);
            CHECK(r && r->algo == TSR_ALLREDUCE_MPI, "explicit mpi ran %s",
                  r ? tsr_allreduce_algo_name(r->algo) : "nothing");
            CHECK_OK(tsr_comm_wait(r), ctx);
            CHECK(exact(x, n4k, size), "explicit mpi: wrong sum");
            free(x);
        }

        /* A table that is there but cannot be used: warned (rank 0 reads it) and measured
         * again at once (the quick set, 4 KiB .. 1 MiB), on every rank alike, and saved: a
         * reload is clean. n > 2 oversubscribes the 2 cores (a measurement takes seconds), so
         * there the foreign table alone is measured again and a corrupt one meets a busy
         * communicator. */
        if (rank == 0) ok = rewrite_table(path, "rhd", "ring", 65536, 2, "another-host");
        warned[0] = '\0';
        CHECK_OK(tsr_comm_tune_load(comm), ctx);
        check_remeasured(ctx, comm, path, "another host", "foreign table");

        static const char *const bad[] = {
            "{\"format\": \"tessera-allreduce-tune\", \"version\": 1, \"key\": {",
            "[1, 2, 3]",
            "",
        };
        for (size_t i = 0; size == 2 && i < sizeof bad / sizeof bad[0]; i++) {
            if (rank == 0) write_text(path, bad[i]);
            MPI_Barrier(MPI_COMM_WORLD);
            warned[0] = '\0';
            if (i == 0) {
                CHECK_OK(tsr_comm_tune_load(comm), ctx);
            } else { /* the first auto allreduce loads the table by itself */
                comm->tune_loaded = 0;
                run_auto(ctx, comm, n16k, 1, "corrupt table, first auto allreduce");
            }
            char what[64];
            snprintf(what, sizeof what, "corrupt table %zu", i);
            check_remeasured(ctx, comm, path, "ignored", what);
        }
        /* an entry out of range (lanes 99): the whole file is refused */
        if (size == 2) {
            if (rank == 0) ok = rewrite_table(path, "ring", "ring", 65536, 99, NULL);
            MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
            CHECK(ok, "cannot rewrite %s", path);
            warned[0] = '\0';
            CHECK_OK(tsr_comm_tune_load(comm), ctx);
            check_remeasured(ctx, comm, path, "out-of-range", "out-of-range table");
        }

        /* a table that cannot be read or replaced (a folder in its place): measured again,
         * used, and the failed save warned about */
        if (size == 2) {
            if (rank == 0) {
                unlink(path);
                ok = mkdir(path, 0700) == 0;
            }
            MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
            CHECK(ok, "cannot make a folder at %s", path);
            warned[0] = '\0';
            CHECK_OK(tsr_comm_tune_load(comm), ctx);
            CHECK(tsr_comm_auto_choice(comm, 1024, 0).tuned, "unsaved table not used");
            CHECK(rank != 0 || strstr(warned, "not saved"), "unsaved: warning '%s'", warned);
            run_auto(ctx, comm, 4096, 0, "unsaved table");
            MPI_Barrier(MPI_COMM_WORLD);
            if (rank == 0) rmdir(path);
        }

        /* an allreduce in flight when the first auto one finds a corrupt table: not measured
         * then (its calls would interleave), the built-in rules, every sum exact */
        {
            if (rank == 0) write_text(path, bad[0]);
            MPI_Barrier(MPI_COMM_WORLD);
            warned[0] = '\0';
            comm->tune_loaded = 0;
            float *x = malloc(n4k * sizeof(float)), *y = malloc(n4k * sizeof(float));
            tsr_allreduce_opts o;
            tsr_allreduce_opts_init(&o);
            o.algo = TSR_ALLREDUCE_MPI;
            tsr_comm_request *r1 = NULL, *r2 = NULL;
            fill(x, n4k, rank);
            fill(y, n4k, rank);
            CHECK_OK(tsr_comm_allreduce_start(comm, x, n4k, &o, &r1), ctx);
            CHECK_OK(tsr_comm_allreduce_start(comm, y, n4k, NULL, &r2), ctx);
            if (r1) CHECK_OK(tsr_comm_wait(r1), ctx);
            if (r2) CHECK_OK(tsr_comm_wait(r2), ctx);
            CHECK(exact(x, n4k, size) && exact(y, n4k, size), "busy: wrong sum");
            free(x);
            free(y);
            CHECK(!tsr_comm_auto_choice(comm, n4k, 0).tuned, "measured while busy");
            CHECK(rank != 0 || strstr(warned, "in flight"), "busy: warning '%s'", warned);
        }

        /* bad options name their bound */
        tsr_allreduce_opts o;
        tsr_allreduce_opts_init(&o);
        o.lanes = 17;
        float x[4] = {0};
        CHECK(tsr_comm_allreduce(comm, x, 4, &o) == TSR_ERR_INVALID_ARG &&
              strstr(tsr_context_last_error(ctx), "0 .. 16"), "lanes 17: %s",
              tsr_context_last_error(ctx));
        o.lanes = 0;
        o.segment_bytes = 100;
        CHECK(tsr_comm_allreduce(comm, x, 4, &o) == TSR_ERR_INVALID_ARG &&
              strstr(tsr_context_last_error(ctx), "4096"), "segment 100: %s",
              tsr_context_last_error(ctx));
        CHECK(tsr_comm_tune(comm, 1, 100) == TSR_ERR_INVALID_ARG, "max_bytes 100");
    }
    int total = 0, rc = mpi_check_status(&total);
    if (rank == 0) {
        unlink(path);
        rmdir(dir);
    }
    tsr_comm_free(comm);
    tsr_context_free(ctx);
    MPI_Finalize(); /* ours: the world communicator found MPI initialised */
    if (rank == 0) printf("%s: %d failure(s)\n", rc == 1 ? "FAIL" : "ok", total);
    return rc;
}
