/* tsr-conv-bound: the best step time OpenBLAS allows for the cnn preset's GEMMs, at their shapes.
 *
 *   tsr-conv-bound [--batch 64] [--threads 2] [--samples-per-s R] [--gemm-share F] [--json]
 *
 * A cnn training step (conv5x5:32,relu,pool2,conv5x5:64,relu,pool2,dense:1024,relu,dense:10 on
 * 1x28x28) is, in FLOPs, almost all GEMMs. This tool lists the GEMMs tessera performs in one
 * step at their shapes (conv: forward, weight gradient and input gradient per chunk of images
 * as lib/layers/conv2d.c cuts the batch; dense: forward, weight and input gradient as
 * lib/layers/dense.c calls them), times each with OpenBLAS alone (cblas_sgemm with OpenBLAS's
 * own --threads threads, or one single-threaded call per thread on its share of C's longer side
 * as tessera's host backend does, whichever is faster; best of 3 runs of >= 0.1 s), and times the same GEMMs as one GEMM
 * per layer over the whole batch. It prints:
 *   - the step's GEMM FLOPs (the pooling, ReLU, im2col and optimizer work is not counted),
 *   - SGEMM GFLOP/s at 1024^3 (the "host SGEMM rate" of issue 15),
 *   - GFLOP/s at the cnn's shapes, chunked and whole-batch, and so the best possible step time
 *     (the faster of the two, GEMMs only: nothing else takes time in it),
 *   - with --samples-per-s (tessera's measured training rate, e.g. from
 *     bench/train_vs_torch.py): tessera's step as GFLOP/s, as a fraction of the 1024^3 rate
 *     and as a fraction of the shape bound (bound step time / measured step time);
 *   - with --gemm-share F as well (the fraction of the step's CPU time in OpenBLAS, from a
 *     profile: perf record -g build/bin/tsr-train --model cnn ..., OpenBLAS's sgemm_* symbols
 *     over all samples): the GEMMs' rate in situ (step FLOPs / (F x step time), the threads
 *     kept busy) against the 1024^3 and shape rates, which is also the fraction of SGEMM the
 *     step would reach if all its other work vanished.
 * The input gradient of a convolution runs on the host image by image, a group of channels
 * at a time (backends/host/host_ops.c's conv_dinput): those GEMMs (marked ||) are timed as
 * the host's pool runs them, one whole single-threaded call per thread side by side.
 * The first conv has K = C*KH*KW = 25: no GEMM with so short a K reaches the 1024^3 rate, so
 * the shape bound, not the 1024^3 rate, is what a step can reach. */
#include <cblas.h>
#include <pthread.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"
#include "backends/host/host.h"
#include "samples/blas_reexec.h"

#define MAX_GEMMS 64

typedef struct gemm_shape {
    const char *what;
    int ta, tb;
    size_t m, n, k, count; /* count: calls per step at this shape */
    int apart;             /* calls that run side by side, one per thread (else one call split) */
} gemm_shape;

typedef struct shape_list {
    gemm_shape g[MAX_GEMMS];
    size_t n;
} shape_list;

static void add_apart(shape_list *s, const char *what, int ta, int tb, size_t m, size_t n, size_t k,
                      int apart) {
    for (size_t i = 0; i < s->n; i++) {
        gemm_shape *g = &s->g[i];
        if (!strcmp(g->what, what) && g->ta == ta && g->tb == tb && g->m == m && g->n == n &&
            g->k == k && g->apart == apart) {
            g->count++;
            return;
        }
    }
    if (s->n == MAX_GEMMS) return; /* cannot happen for the cnn: a dozen shapes */
    gemm_shape g = {what, ta, tb, m, n, k, 1, apart};
    s->g[s->n++] = g;
}

static void add(shape_list *s, const char *what, int ta, int tb, size_t m, size_t n, size_t k) {
    add_apart(s, what, ta, tb, m, n, k, 0);
}

/* One conv layer's GEMMs, as lib/layers/conv2d.c issues them: per chunk of `step` images
 * (the whole batch when whole is set). */
static void conv_gemms(shape_list *s, const char *name, size_t batch, size_t c, size_t h, size_t w,
                       size_t f, size_t kk, int want_din, int whole) {
    size_t rows = c * kk * kk, ohw = h * w; /* 'same' padding, stride 1 */
    size_t step = whole ? batch : tsr_conv2d_chunk_floats / (rows * ohw);
    if (step < 1) step = 1;
    if (step > batch) step = batch;
    for (size_t b = 0; b < batch; b += step) {
        size_t m = batch - b < step ? batch - b : step, cols = m * ohw;
        add(s, name, 0, 0, f, cols, rows);        /* forward: Y = W col */
        add(s, name, 0, 1, f, rows, cols);        /* dW (+)= dY col^T */
        if (!want_din) continue;
        if (whole) {
            add(s, name, 1, 0, rows, cols, f);    /* d(col) = W^T dY */
            continue;
        }
        /* the host's conv_dinput: per image, a group of channels at a time, the images of a
         * chunk spread over the threads */
        size_t group = TSR_HOST_DINPUT_GROUP_FLOATS / (kk * kk * ohw);
        if (group < 1) group = 1;
        for (size_t i = 0; i < m; i++)
            for (size_t c0 = 0; c0 < c; c0 += group)
                add_apart(s, name, 1, 0, ((c - c0 < group) ? c - c0 : group) * kk * kk, ohw, f, 1);
    }
}

static void dense_gemms(shape_list *s, const char *name, size_t batch, size_t in, size_t u) {
    add(s, name, 0, 1, batch, u, in); /* Y = X W^T */
    add(s, name, 1, 0, u, in, batch); /* dW = dY^T X */
    add(s, name, 0, 0, batch, in, u); /* dX = dY W */
}

static void cnn_gemms(shape_list *s, size_t batch, int whole) {
    s->n = 0;
    conv_gemms(s, "conv1", batch, 1, 28, 28, 32, 5, 0, whole);
    conv_gemms(s, "conv2", batch, 32, 14, 14, 64, 5, 1, whole);
    dense_gemms(s, "dense1", batch, 64 * 7 * 7, 1024);
    dense_gemms(s, "dense2", batch, 1024, 10);
}

static float *buf_a, *buf_b, *buf_c;
static size_t n_threads;

/* Rows [r0, r1) of C (split_rows) or columns [r0, r1), of the full-size operands. */
static void run_part(const gemm_shape *g, int split_rows, size_t r0, size_t r1) {
    size_t lda = g->ta ? g->m : g->k, ldb = g->tb ? g->k : g->n;
    const float *a = buf_a, *b = buf_b;
    float *c = buf_c;
    size_t m = g->m, n = g->n;
    if (split_rows) a += g->ta ? r0 : r0 * lda, c += r0 * g->n, m = r1 - r0;
    else b += g->tb ? r0 * ldb : r0, c += r0, n = r1 - r0;
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans,
                (int)m, (int)n, (int)g->k, 1.0f, a, (int)lda, b, (int)ldb, 0.0f, c, (int)g->n);
}

typedef struct part_job {
    const gemm_shape *g;
    int split_rows;
    size_t r0, r1;
    size_t whole; /* apart: 1 + the thread's index (whole calls into its own C) */
    size_t reps;  /* apart: calls in a row */
} part_job;

static void *part_main(void *arg) {
    const part_job *j = arg;
    for (size_t r = 0; j->whole && r < j->reps; r++) {
        const gemm_shape *g = j->g;
        cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans,
                    (int)g->m, (int)g->n, (int)g->k, 1.0f, buf_a, (int)(g->ta ? g->m : g->k), buf_b,
                    (int)(g->tb ? g->k : g->n), 0.0f, buf_c + (j->whole - 1) * g->m * g->n, (int)g->n);
    }
    if (!j->whole) run_part(j->g, j->split_rows, j->r0, j->r1);
    return NULL;
}

/* Whole single-threaded calls side by side, `reps` in a row on each of n_threads threads (the
 * host's per-image GEMMs, which its pool's threads run in a row without a handoff). */
#define APART_REPS 32
static void run_apart(const gemm_shape *g) {
    pthread_t th[64];
    part_job jobs[64];
    size_t started = 0;
    for (size_t p = 0; p < n_threads && p < 64; p++) {
        part_job j = {g, 0, 0, 0, p + 1, APART_REPS};
        jobs[p] = j;
        if (p && pthread_create(&th[p], NULL, part_main, &jobs[p]) == 0) started |= (size_t)1 << p;
        else if (p) part_main(&jobs[p]);
    }
    part_main(&jobs[0]);
    for (size_t p = 1; p < n_threads && p < 64; p++)
        if (started >> p & 1) pthread_join(th[p], NULL);
}

/* The way tessera's host backend runs a large GEMM: the longer side of C cut into one part per
 * thread, each a single-threaded OpenBLAS call (when split is set); else one call with
 * OpenBLAS's own threads. */
static void run(const gemm_shape *g, int split) {
    if (!split) {
        run_part(g, 1, 0, g->m);
        return;
    }
    if (g->apart) {
        run_apart(g);
        return;
    }
    int rows = g->m >= g->n;
    size_t span = rows ? g->m : g->n, parts = n_threads < span ? n_threads : span;
    pthread_t th[64];
    part_job jobs[64];
    size_t started = 0;
    for (size_t p = 0; p < parts && p < 64; p++) {
        part_job j = {g, rows, span * p / parts, span * (p + 1) / parts, 0, 0};
        jobs[p] = j;
        if (p && pthread_create(&th[p], NULL, part_main, &jobs[p]) == 0) started |= (size_t)1 << p;
        else if (p) part_main(&jobs[p]);
    }
    part_main(&jobs[0]);
    for (size_t p = 1; p < parts && p < 64; p++)
        if (started >> p & 1) pthread_join(th[p], NULL);
}

/* Seconds per call: best of 3 runs, each of >= 0.1 s. */
static double time_mode(const gemm_shape *g, int split) {
    openblas_set_num_threads(split ? 1 : (int)n_threads);
    run(g, split);
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        size_t calls = 0;
        double t0 = tsr_now(), t;
        do {
            run(g, split);
            calls++;
            t = tsr_now() - t0;
        } while (t < 0.1);
        if (t / calls < best) best = t / calls;
    }
    /* side by side: a run is n_threads * APART_REPS calls */
    return split && g->apart && n_threads > 1 ? best / (double)(n_threads * APART_REPS) : best;
}

/* The faster of OpenBLAS's own threading and one single-threaded part per thread; calls the
 * host makes side by side are timed so. */
static double time_one(const gemm_shape *g) {
    if (g->apart && n_threads > 1) return time_mode(g, 1);
    double whole = time_mode(g, 0);
    if (n_threads < 2) return whole;
    double split = time_mode(g, 1);
    return split < whole ? split : whole;
}

static double flops_of(const gemm_shape *g) { return 2.0 * g->m * g->n * g->k * g->count; }

/* Seconds of one step's GEMMs; prints each shape when verbose. */
static double time_list(const shape_list *s, double *flops, int verbose) {
    double total = 0;
    *flops = 0;
    for (size_t i = 0; i < s->n; i++) {
        const gemm_shape *g = &s->g[i];
        double t = time_one(g);
        total += t * g->count;
        *flops += flops_of(g);
        if (verbose)
            printf("  %-6s %c%c m %5zu n %6zu k %6zu x%-4zu%s %8.3f ms %7.1f GFLOP/s\n", g->what,
                   g->ta ? 'T' : 'N', g->tb ? 'T' : 'N', g->m, g->n, g->k, g->count, g->apart ? "||" : "  ",
                   t * g->count * 1e3, flops_of(g) / (t * g->count) / 1e9);
    }
    return total;
}

static size_t parse_count(const char *flag, const char *s, size_t max) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || *end || errno || v == 0 || v > max) {
        fprintf(stderr, "tsr-conv-bound: %s needs a number in 1..%zu, got '%s'\n", flag, max, s);
        exit(2);
    }
    return (size_t)v;
}

int main(int argc, char **argv) {
    blas_reexec(argv);
    size_t batch = 64, threads = 2;
    double measured = 0, share = 0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = parse_count("--batch", argv[++i], 4096);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = parse_count("--threads", argv[++i], 1024);
        else if (!strcmp(argv[i], "--samples-per-s") && i + 1 < argc) {
            char *end;
            measured = strtod(argv[++i], &end);
            if (*end || !(measured > 0)) {
                fprintf(stderr, "tsr-conv-bound: --samples-per-s needs a positive rate, got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--gemm-share") && i + 1 < argc) {
            char *end;
            share = strtod(argv[++i], &end);
            if (*end || !(share > 0 && share <= 1)) {
                fprintf(stderr, "tsr-conv-bound: --gemm-share needs a fraction in (0, 1], got '%s'\n", argv[i]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--json")) json = 1;
        else {
            fprintf(stderr, "usage: tsr-conv-bound [--batch N] [--threads N] [--samples-per-s R] "
                            "[--gemm-share F] [--json]\n");
            return 2;
        }
    }
    n_threads = threads > 64 ? 64 : threads;

    shape_list chunked, whole;
    cnn_gemms(&chunked, batch, 0);
    cnn_gemms(&whole, batch, 1);
    size_t most = 1024 * 1024; /* the 1024^3 GEMM's operands */
    for (int pass = 0; pass < 2; pass++) {
        const shape_list *s = pass ? &whole : &chunked;
        for (size_t i = 0; i < s->n; i++) {
            const gemm_shape *g = &s->g[i];
            size_t sizes[3] = {g->m * g->k, g->k * g->n, g->m * g->n * (g->apart ? n_threads : 1)};
            for (int j = 0; j < 3; j++) most = sizes[j] > most ? sizes[j] : most;
        }
    }
    buf_a = malloc(most * sizeof *buf_a);
    buf_b = malloc(most * sizeof *buf_b);
    buf_c = malloc(most * sizeof *buf_c);
    if (!buf_a || !buf_b || !buf_c) {
        fprintf(stderr, "tsr-conv-bound: out of memory for %zu floats\n", 3 * most);
        return 1;
    }
    for (size_t i = 0; i < most; i++) {
        buf_a[i] = (float)(i % 13) * 0.01f;
        buf_b[i] = (float)(i % 7) * 0.02f;
        buf_c[i] = 0.0f;
    }

    gemm_shape big = {"1024^3", 0, 0, 1024, 1024, 1024, 1, 0};
    double peak = flops_of(&big) / time_one(&big);
    int verbose = !json;
    if (verbose) printf("cnn step GEMMs at batch %zu, OpenBLAS alone on %zu thread(s), chunked as tessera:\n", batch, threads);
    double flops, flops_whole;
    double t_chunked = time_list(&chunked, &flops, verbose);
    if (verbose) printf("the same as one GEMM per layer over the batch:\n");
    double t_whole = time_list(&whole, &flops_whole, verbose);
    double bound = t_chunked < t_whole ? t_chunked : t_whole;
    double step = measured > 0 ? batch / measured : 0;
    if (json) {
        printf("{\"batch\": %zu, \"threads\": %zu, \"step_gflop\": %.4f, \"sgemm_1024_gflops\": %.1f, "
               "\"shape_gflops_chunked\": %.1f, \"shape_gflops_whole\": %.1f, \"bound_step_ms\": %.3f",
               batch, threads, flops / 1e9, peak / 1e9, flops / t_chunked / 1e9, flops / t_whole / 1e9,
               bound * 1e3);
        if (step > 0)
            printf(", \"tessera_step_ms\": %.3f, \"tessera_gflops\": %.1f, \"fraction_of_sgemm\": %.3f, "
                   "\"fraction_of_bound\": %.3f", step * 1e3, flops / step / 1e9, flops / step / peak,
                   bound / step);
        if (step > 0 && share > 0)
            printf(", \"gemm_share\": %.3f, \"insitu_gemm_gflops\": %.1f, \"insitu_fraction_of_sgemm\": %.3f, "
                   "\"insitu_fraction_of_shape\": %.3f", share, flops / (step * share) / 1e9,
                   flops / (step * share) / peak, bound / (step * share));
        printf("}\n");
    } else {
        printf("step GEMM FLOPs       %.3f GFLOP (batch %zu)\n", flops / 1e9, batch);
        printf("SGEMM 1024^3          %.1f GFLOP/s\n", peak / 1e9);
        printf("at the cnn's shapes   %.1f GFLOP/s chunked (%.2f of 1024^3), %.1f whole-batch (%.2f)\n",
               flops / t_chunked / 1e9, flops / t_chunked / peak, flops / t_whole / 1e9, flops / t_whole / peak);
        printf("best possible step    %.2f ms = %.0f samples/s (GEMMs only)\n", bound * 1e3, batch / bound);
        if (step > 0)
            printf("tessera measured      %.2f ms/step = %.1f GFLOP/s: %.2f of SGEMM 1024^3 (target 0.75), "
                   "%.2f of the shape bound\n", step * 1e3, flops / step / 1e9, flops / step / peak, bound / step);
        if (step > 0 && share > 0)
            printf("GEMMs in situ         %.2f of the step: %.1f GFLOP/s = %.2f of SGEMM 1024^3, %.2f of the "
                   "shape rate; with nothing but them the step would reach %.2f of SGEMM\n", share,
                   flops / (step * share) / 1e9, flops / (step * share) / peak, bound / (step * share),
                   flops / (step * share) / peak);
    }
    free(buf_a);
    free(buf_b);
    free(buf_c);
    return 0;
}
