/* tsr-allreduce-bench: allreduce time, algbw and busbw per size for every tessera algorithm and
 * for MPI_Allreduce, in one run, in the style of nccl-tests. Every call's result is checked
 * against the known sum (rank-dependent small integers, exact in float and in half).
 *
 *   mpiexec -n 2 build/bin/tsr-allreduce-bench [--csv] [--min-bytes 4K] [--max-bytes 256M]
 *       [--step 4] [--iters N] [--algos auto,ring,rhd,shm,mpi] [--wire f32|f16] [--no-reg]
 *
 * Rows "<algo>" use private buffers (malloc), rows "<algo>-reg" buffers from tsr_comm_alloc
 * (registered: shm reads them in place). "mpi" is MPI_Allreduce on a private buffer.
 * busbw = algbw * 2(n-1)/n (nccl-tests). time: per call the slowest rank's time, then the
 * median over the calls (on a shared machine a mean follows whoever else runs); --stat mean
 * or min for the others. --csv prints
 * ranks,bytes,algo,time_us,algbw_GBps,busbw_GBps,ok with ok 1 (all calls right) or 0.
 *
 *   mpiexec -n 2 build/bin/tsr-allreduce-bench --tune [--max-bytes 256M]
 *   mpiexec -n 2 build/bin/tsr-allreduce-bench --tune-quick
 *
 * Two reference rows per size, measured in the same turns (one node only): "memcpy", one
 * core copying the bytes of a buffer it just wrote (the "single-core memcpy"), and
 * "floor", every rank at once copying (n-1)/n of the bytes out of a buffer a peer core just
 * wrote: the cross-core read no allreduce avoids (each rank needs its slice of every peer's
 * data before its slice is final), as the busbw of an allreduce that took only that long
 * (2(n-1)/n of the bytes over the time); the copy also writes its bytes out, so an allreduce
 * that writes into lines it has just read can pass it. A summary then shows,
 * per size, each target, what auto reached and these bounds side by side.
 *
 * --tune measures every algorithm/segment/lane candidate per size on this communicator
 * (tsr_comm_tune), writes the tuning table `auto` follows into the cache folder
 * (TSR_CACHE_DIR) and prints the chosen entries with their busbw next to MPI_Allreduce's from
 * the same run; --tune-quick does a short version (up to 1 MiB, fewer candidates). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tessera.h"

#if !TSR_WITH_MPI
int main(void) {
    fprintf(stderr, "tsr-allreduce-bench: built without MPI (WITH_MPI=0): nothing to compare\n");
    return 0;
}
#else
#include <mpi.h>

enum { ROW_ALGO, ROW_MEMCPY, ROW_FLOOR };

typedef struct row {
    const char *name;
    tsr_allreduce_algo algo;
    int kind;       /* ROW_*: an allreduce, or one of the reference copies */
    int native;     /* MPI_Allreduce itself */
    int registered;
} row;

/* Targets of the issue, checked in the summary. */
#define TARGET_REG_VS_MPI 2.0
#define TARGET_PRIV_VS_MPI 1.0
#define TARGET_REG_VS_MEMCPY 0.8

#define MAX_ITERS 200

static double now(void) { return MPI_Wtime(); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static size_t parse_bytes(const char *s) {
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K') v *= 1024, end++;
    else if (*end == 'm' || *end == 'M') v *= 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G') v *= 1024.0 * 1024 * 1024, end++;
    if (*end || v < 0) {
        fprintf(stderr, "bad byte count '%s'\n", s);
        exit(2);
    }
    return (size_t)v;
}

static void fill(float *x, size_t n, int rank) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((int)(i & 63) - 32) * (float)(rank + 1);
}

/* 1 if x is the sum over `size` ranks of fill(). */
static int check(const float *x, size_t n, int size) {
    float k = (float)size * (float)(size + 1) / 2.0f;
    for (size_t i = 0; i < n; i++)
        if (x[i] != (float)((int)(i & 63) - 32) * k) return 0;
    return 1;
}

/* --tune: measure, save, and show what auto now picks per size and buffer kind. */
static int run_tune(tsr_context *ctx, tsr_comm *comm, int quick, size_t max_bytes, int csv) {
    int rank = tsr_comm_rank(comm);
    tsr_status s = tsr_comm_tune(comm, quick, max_bytes);
    char path[1024] = "";
    tsr_comm_tune_path(comm, path, sizeof path);
    if (s != TSR_OK) {
        fprintf(stderr, "rank %d: tuning failed: %s\n", rank, tsr_context_last_error(ctx));
    } else if (rank == 0) {
        if (csv) {
            printf("ranks,bytes,buffers,algo,segment_bytes,lanes,busbw_GBps,mpi_busbw_GBps,vs_mpi\n");
        } else {
            printf("# allreduce tuning table written to %s\n", path);
            printf("# auto's choice per size; busbw and MPI_Allreduce's busbw from the same run\n");
            printf("%12s  %-10s %-5s %9s %5s %10s %10s %7s\n", "bytes", "buffers", "algo",
                   "segment", "lanes", "busbw_GB/s", "mpi_GB/s", "vs_mpi");
        }
        for (int reg = 0; reg < 2; reg++) {
            for (size_t bytes = 4096; bytes <= ((size_t)256 << 20); bytes *= 2) {
                tsr_allreduce_choice c = tsr_comm_auto_choice(comm, bytes / sizeof(float), reg);
                if (!c.tuned) continue;
                double ratio = c.mpi_busbw_GBps > 0 ? c.busbw_GBps / c.mpi_busbw_GBps : 0.0;
                if (csv)
                    printf("%d,%zu,%s,%s,%zu,%d,%.4f,%.4f,%.3f\n", tsr_comm_size(comm), bytes,
                           reg ? "registered" : "private", tsr_allreduce_algo_name(c.algo),
                           c.segment_bytes, c.lanes, c.busbw_GBps, c.mpi_busbw_GBps, ratio);
                else
                    printf("%12zu  %-10s %-5s %9zu %5d %10.3f %10.3f %6.2fx\n", bytes,
                           reg ? "registered" : "private", tsr_allreduce_algo_name(c.algo),
                           c.segment_bytes, c.lanes, c.busbw_GBps, c.mpi_busbw_GBps, ratio);
            }
        }
        fflush(stdout);
    }
    tsr_comm_free(comm);
    tsr_context_free(ctx);
    return s == TSR_OK ? 0 : 1;
}

/* One size's busbw of MPI_Allreduce, auto on private and registered buffers (0: no such row),
 * and the reference rates. */
typedef struct summary {
    size_t bytes;
    double mpi, priv, reg, memcpy, floor;
} summary;

static void ratio_cell(char *out, size_t size, double a, double b, double target) {
    if (a > 0 && b > 0)
        snprintf(out, size, "%.2f%s", a / b, target > 0 && a / b < target ? "!" : "");
    else
        snprintf(out, size, "-");
}

/* Each target next to what was reached and the measured bounds. */
static void print_summary(const summary *S, int n, int size) {
    printf("\n# targets (n = %d): auto-reg >= %.1fx MPI at 1-64 MiB, auto (private) >= %.1fx MPI "
           "from 4 KiB, auto-reg >= %.1f of memcpy from 1 MiB; '!' marks a miss\n", size,
           TARGET_REG_VS_MPI, TARGET_PRIV_VS_MPI, TARGET_REG_VS_MEMCPY);
    printf("# memcpy: one core copying what it just wrote; floor: all cores at once copying out "
           "their (n-1)/n of the bytes a peer core just wrote, as busbw (the read every allreduce "
           "needs; the copy's own writes make it a reference, not a strict bound)\n");
    printf("%12s %9s %9s %8s %9s %8s %9s %9s %8s %8s\n", "bytes", "mpi", "auto-reg", "reg/mpi",
           "auto", "priv/mpi", "memcpy", "floor", "reg/mcpy", "reg/flr");
    for (int i = 0; i < n; i++) {
        const summary *s = &S[i];
        int in_reg = s->bytes >= ((size_t)1 << 20) && s->bytes <= ((size_t)64 << 20);
        char rm[16], pm[16], rc[16], rf[16];
        ratio_cell(rm, sizeof rm, s->reg, s->mpi, in_reg ? TARGET_REG_VS_MPI : 0);
        ratio_cell(pm, sizeof pm, s->priv, s->mpi, s->bytes >= 4096 ? TARGET_PRIV_VS_MPI : 0);
        ratio_cell(rc, sizeof rc, s->reg, s->memcpy,
                   s->bytes >= ((size_t)1 << 20) ? TARGET_REG_VS_MEMCPY : 0);
        ratio_cell(rf, sizeof rf, s->reg, s->floor, 0);
        printf("%12zu %9.3f %9.3f %8s %9.3f %8s %9.3f %9.3f %8s %8s\n", s->bytes, s->mpi, s->reg,
               rm, s->priv, pm, s->memcpy, s->floor, rc, rf);
    }
    fflush(stdout);
}

int main(int argc, char **argv) {
    int csv = 0, iters_fixed = 0, step = 4, use_reg = 1, tune = 0, max_given = 0;
    const char *stat = "median";
    size_t min_bytes = 4096, max_bytes = (size_t)256 << 20;
    const char *algos = "mpi,auto,ring,rhd,shm";
    tsr_comm_wire wire = TSR_WIRE_F32;
    tsr_context *ctx;
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    char env_err[256];
    if (tsr_context_options_from_env(&co, env_err, sizeof env_err) != TSR_OK) {
        fprintf(stderr, "tsr-allreduce-bench: %s\n", env_err);
        return 2;
    }
    if (tsr_context_create(&ctx, &co) != TSR_OK) return 1;
    tsr_comm *comm;
    if (tsr_comm_init_world(ctx, &argc, &argv, &comm) != TSR_OK) {
        fprintf(stderr, "tsr_comm_init_world: %s\n", tsr_context_last_error(ctx));
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--csv")) csv = 1;
        else if (!strcmp(a, "--tune")) tune = 1;
        else if (!strcmp(a, "--tune-quick")) tune = 2;
        else if (!strcmp(a, "--no-reg")) use_reg = 0;
        else if (!strcmp(a, "--stat") && v && (!strcmp(v, "median") || !strcmp(v, "mean") ||
                                               !strcmp(v, "min"))) stat = v, i++;
        else if (!strcmp(a, "--min-bytes") && v) min_bytes = parse_bytes(v), i++;
        else if (!strcmp(a, "--max-bytes") && v) max_bytes = parse_bytes(v), max_given = 1, i++;
        else if (!strcmp(a, "--iters") && v) iters_fixed = atoi(v), i++;
        else if (!strcmp(a, "--step") && v) step = atoi(v), i++;
        else if (!strcmp(a, "--algos") && v) algos = v, i++;
        else if (!strcmp(a, "--wire") && v)
            wire = !strcmp(v, "f16") ? TSR_WIRE_F16 : TSR_WIRE_F32, i++;
        else {
            fprintf(stderr, "usage: %s [--csv] [--min-bytes N] [--max-bytes N] [--step 2|4] "
                    "[--iters N] [--algos auto,ring,rhd,shm,mpi] [--wire f32|f16] [--no-reg] "
                    "[--stat median|mean|min] [--tune | --tune-quick]\n",
                    argv[0]);
            return 2;
        }
    }
    if (tune) return run_tune(ctx, comm, tune == 2, max_given ? max_bytes : 0, csv);
    if (step < 2) step = 2;
    if (min_bytes < 4) min_bytes = 4;
    int rank = tsr_comm_rank(comm), size = tsr_comm_size(comm);

    /* rows: each algorithm on private buffers, then registered ones for tessera's */
    row rows[16];
    int nrows = 0;
    char list[256];
    snprintf(list, sizeof list, "%s", algos);
    for (int pass = 0; pass < 2; pass++) {
        char tmp[256];
        memcpy(tmp, list, sizeof tmp);
        for (char *t = strtok(tmp, ","); t && nrows < 16; t = strtok(NULL, ",")) {
            tsr_allreduce_algo al;
            if (tsr_allreduce_algo_parse(t, &al) != TSR_OK) {
                if (rank == 0) fprintf(stderr, "unknown algorithm '%s'\n", t);
                return 2;
            }
            int native = al == TSR_ALLREDUCE_MPI;
            if (pass == 1 && (native || !use_reg)) continue;
            rows[nrows].algo = al;
            rows[nrows].kind = ROW_ALGO;
            rows[nrows].native = native;
            rows[nrows].registered = pass;
            rows[nrows].name = tsr_allreduce_algo_name(al);
            nrows++;
        }
    }

    /* the reference copies need every rank's memory in this address space: one node */
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    int node_size = 0;
    MPI_Comm_size(node, &node_size);
    int refs = node_size == size && size > 1 && nrows + 2 <= 16;
    if (refs) {
        rows[nrows++] = (row){"memcpy", TSR_ALLREDUCE_AUTO, ROW_MEMCPY, 0, 0};
        rows[nrows++] = (row){"floor", TSR_ALLREDUCE_AUTO, ROW_FLOOR, 0, 0};
    }

    size_t max_count = max_bytes / sizeof(float);
    float *priv = NULL, *reg = NULL, *dst = NULL, *peer = NULL, *own = NULL;
    MPI_Win win = MPI_WIN_NULL;
    if (refs) {
        void *base = NULL;
        MPI_Aint wsz;
        int du;
        if (MPI_Win_allocate_shared((MPI_Aint)(max_count * sizeof(float)), sizeof(float),
                                    MPI_INFO_NULL, node, &base, &win) != MPI_SUCCESS ||
            MPI_Win_shared_query(win, (rank + 1) % size, &wsz, &du, (void **)&peer) !=
                MPI_SUCCESS ||
            posix_memalign((void **)&dst, 64, max_count * sizeof(float) + 64)) {
            fprintf(stderr, "rank %d: cannot allocate the reference buffers\n", rank);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        own = base;
    }
    if (posix_memalign((void **)&priv, 64, max_count * sizeof(float) + 64)) priv = NULL;
    if (!priv || tsr_comm_alloc(comm, max_count * sizeof(float), (void **)&reg) != TSR_OK) {
        fprintf(stderr, "rank %d: cannot allocate %zu bytes: %s\n", rank, max_bytes,
                tsr_context_last_error(ctx));
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0) {
        if (csv) {
            printf("ranks,bytes,algo,time_us,algbw_GBps,busbw_GBps,ok\n");
        } else {
            printf("# tessera allreduce bench: %d ranks on %d node(s), %s on the wire, sum\n", size,
                   tsr_comm_node_count(comm), wire == TSR_WIRE_F16 ? "fp16" : "float32");
            printf("# rows <algo>: private buffers (malloc); <algo>-reg: tsr_comm_alloc "
                   "(registered); mpi: MPI_Allreduce. auto picks by size (shown in brackets)\n");
            printf("# time: %s over calls of the slowest rank; busbw = algbw*2(n-1)/n; "
                   "vs_mpi = busbw / MPI_Allreduce busbw\n", stat);
            printf("%12s  %-14s %10s %10s %10s %7s %4s\n", "bytes", "algo", "time_us",
                   "algbw_GB/s", "busbw_GB/s", "vs_mpi", "ok");
        }
        fflush(stdout);
    }
    /* Warm-up: the first second after start-up measured slow in every row here (ranks and
     * the launcher still settling), so spend half a second in small collectives first. */
    for (double t_end = now() + 0.5, go = 1; go;) {
        /* the decision to go on is collective (each rank's deadline differs slightly) */
        for (int ri = 0; ri < nrows; ri++) {
            if (rows[ri].kind != ROW_ALGO) continue;
            tsr_allreduce_opts o;
            tsr_allreduce_opts_init(&o);
            o.algo = rows[ri].algo;
            fill(rows[ri].registered ? reg : priv, 1024, rank);
            tsr_comm_allreduce(comm, rows[ri].registered ? reg : priv, 1024, &o);
        }
        double more = now() < t_end;
        MPI_Allreduce(&more, &go, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    }
    int all_ok = 1;
    static summary sums[64];
    int nsum = 0;
    for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= (size_t)step) {
        size_t count = bytes / sizeof(float);
        /* about 64 MiB per row and size: 3 calls from 16 MiB up, 100 at 512 KiB and below */
        size_t budget = ((size_t)64 << 20) / bytes;
        int iters = iters_fixed > 0 ? iters_fixed
                                    : (int)(budget > 100 ? 100 : budget < 3 ? 3 : budget);
        if (iters > MAX_ITERS) iters = MAX_ITERS;
        /* Rows take turns call by call, so whatever else runs on the machine slows them alike. */
        static double times[16][MAX_ITERS];
        double total[16] = {0}, rate[16] = {0};
        size_t xbytes = bytes / (size_t)size * (size_t)(size - 1); /* floor: bytes pulled */
        int ok[16];
        for (int ri = 0; ri < nrows; ri++) ok[ri] = 1;
        for (int it = -1; it < iters; it++) { /* it = -1: warm-up, not timed */
            for (int ri = 0; ri < nrows; ri++) {
                row *R = &rows[ri];
                float *buf = R->registered ? reg : priv;
                if (R->kind != ROW_ALGO) {
                    /* the copied bytes are written by the core that copies (memcpy) or by
                     * the next rank's core (floor) just before, as an allreduce finds them */
                    float *src = R->kind == ROW_MEMCPY ? priv : peer;
                    size_t n = R->kind == ROW_MEMCPY ? bytes : xbytes;
                    if (R->kind == ROW_MEMCPY) fill(priv, count, rank);
                    else fill(own, count, rank);
                    MPI_Barrier(MPI_COMM_WORLD);
                    double t0 = now();
                    memcpy(dst, src, n);
                    double t = now() - t0, slowest;
                    MPI_Allreduce(&t, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
                    if (it >= 0) {
                        total[ri] += slowest;
                        times[ri][it] = slowest;
                    }
                    if (n >= sizeof(float) && memcmp(dst, src, n) != 0) ok[ri] = 0;
                    continue;
                }
                tsr_allreduce_opts o;
                tsr_allreduce_opts_init(&o);
                o.algo = R->algo;
                o.wire = wire;
                fill(buf, count, rank);
                MPI_Barrier(MPI_COMM_WORLD);
                double t0 = now();
                int rc;
                if (R->native && wire == TSR_WIRE_F32)
                    rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)count, MPI_FLOAT, MPI_SUM,
                                       MPI_COMM_WORLD) == MPI_SUCCESS ? 0 : 1;
                else
                    rc = tsr_comm_allreduce(comm, buf, count, &o) == TSR_OK ? 0 : 1;
                double t = now() - t0, slowest;
                MPI_Allreduce(&t, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
                if (it >= 0) {
                    total[ri] += slowest;
                    times[ri][it] = slowest;
                }
                if (rc || !check(buf, count, size)) ok[ri] = 0;
            }
        }
        double mpi_bus = 0;
        for (int ri = 0; ri < nrows; ri++) {
            row *R = &rows[ri];
            qsort(times[ri], (size_t)iters, sizeof(double), cmp_double);
            double worst = iters % 2 ? times[ri][iters / 2]
                                     : 0.5 * (times[ri][iters / 2 - 1] + times[ri][iters / 2]);
            if (!strcmp(stat, "mean")) worst = total[ri] / iters;
            if (!strcmp(stat, "min")) worst = times[ri][0];
            int all;
            MPI_Allreduce(&ok[ri], &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
            all_ok &= all;
            double algbw = (double)bytes / worst / 1e9;
            double busbw = size > 1 ? algbw * 2.0 * (size - 1) / size : 0.0;
            /* reference rows: the copy's own rate, in both columns */
            if (R->kind == ROW_MEMCPY) algbw = busbw = (double)bytes / worst / 1e9;
            if (R->kind == ROW_FLOOR) algbw = busbw = 2.0 * (double)xbytes / worst / 1e9;
            rate[ri] = busbw;
            if (R->native) mpi_bus = busbw;
            if (rank != 0) continue;
            char name[48];
            snprintf(name, sizeof name, "%s%s", R->name, R->registered ? "-reg" : "");
            if (csv) {
                printf("%d,%zu,%s,%.2f,%.4f,%.4f,%d\n", size, bytes, name, worst * 1e6, algbw,
                       busbw, all);
            } else {
                char shown[64], ratio[16] = "";
                if (R->kind == ROW_ALGO && R->algo == TSR_ALLREDUCE_AUTO)
                    snprintf(shown, sizeof shown, "%s[%s]", name,
                             tsr_allreduce_algo_name(
                                 tsr_comm_auto_choice(comm, count, R->registered).algo));
                else
                    snprintf(shown, sizeof shown, "%s", name);
                if (mpi_bus > 0 && !R->native && R->kind == ROW_ALGO)
                    snprintf(ratio, sizeof ratio, "%.2fx", busbw / mpi_bus);
                printf("%12zu  %-14s %10.1f %10.3f %10.3f %7s %4s\n", bytes, shown, worst * 1e6,
                       algbw, busbw, ratio, all ? "ok" : "FAIL");
            }
            fflush(stdout);
        }
        if (rank == 0 && nsum < 64) {
            summary *S = &sums[nsum++];
            S->bytes = bytes;
            for (int ri = 0; ri < nrows; ri++) {
                const row *R = &rows[ri];
                if (R->native) S->mpi = rate[ri];
                if (R->kind == ROW_MEMCPY) S->memcpy = rate[ri];
                if (R->kind == ROW_FLOOR) S->floor = rate[ri];
                if (R->kind == ROW_ALGO && R->algo == TSR_ALLREDUCE_AUTO) {
                    if (R->registered) S->reg = rate[ri];
                    else S->priv = rate[ri];
                }
            }
        }
    }
    if (rank == 0 && !csv) print_summary(sums, nsum, size);
    if (win != MPI_WIN_NULL) MPI_Win_free(&win);
    MPI_Comm_free(&node);
    free(dst);
    tsr_comm_free_mem(comm, reg);
    free(priv);
    tsr_comm_free(comm);
    tsr_context_free(ctx);
    return all_ok ? 0 : 1;
}
#endif
