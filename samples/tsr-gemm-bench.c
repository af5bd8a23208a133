/* tsr-gemm-bench: SGEMM GFLOP/s of every device of the context next to its analytic peak.
 *
 *   tsr-gemm-bench [--sizes 256,512,...] [--device ID] [--precision fp32|bf16|fp16] [--json]
 *
 * --precision: the backend's GEMM input precision (tsr_backend_set_precision), as training in
 * that mode runs it: the operands are rounded to 16 bits, then multiplied with float32
 * accumulation (on NVIDIA with TSR_TENSOR_CORES=1, by the tensor-core kernel). The check then
 * uses the rounded operands; with TSR_TENSOR_CORES=tf32 its bound allows TF32 operands.
 *
 * Each size: C = A*B (n x n x n, row-major, beta = 0), one warm-up call (which also pays any
 * kernel compilation), then repetitions until >= 0.3 s have passed, timed to the device's
 * finish(). A size whose predicted run (from the previous size's rate) exceeds ~10 s is
 * skipped and reported. Eight sampled entries of C are checked against a double-precision
 * dot product, so a fast wrong answer cannot pass.
 *
 * Peak (GFLOP/s) = compute units x clock x flops per cycle per unit:
 *  - host: cores x clock x 64 with AVX-512F (2 FMA units x 16 lanes x 2), x 32 with AVX2+FMA
 *    (2 x 8 x 2), x 16 with AVX, x 8 otherwise (__builtin_cpu_supports);
 *  - OpenCL: the device record's analytic peak, CUs x clock x lanes x 2, where lanes is the
 *    FP32 lanes per compute unit: for GPUs the per-SM/CU core count (NVIDIA 64 or 128 by
 *    compute capability, AMD 64, Intel 8); for CPU devices the host's SIMD lanes x FMA units;
 *    else CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT. Clocks are the reported maximum (boost) clock,
 *    so the fraction is a lower bound on efficiency. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backends/backend.h"
#include "lib/core/internal.h"
#include "lib/core/precision.h"
#include "tessera.h"
#include "samples/blas_reexec.h"

#define MAX_SIZES 32

static void die(const char *what, tsr_context *ctx, tsr_status st) {
    fprintf(stderr, "tsr-gemm-bench: %s: %s (%s)\n", what, tsr_status_name(st),
            ctx ? tsr_context_last_error(ctx) : "");
    exit(1);
}

static double host_peak(const tsr_device_info *d) {
    int flops = 8;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) flops = 64;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) flops = 32;
    else if (__builtin_cpu_supports("avx")) flops = 16;
#endif
    return (double)d->compute_units * d->clock_mhz * flops / 1000.0;
}

static double peak_of(const tsr_device_info *d) {
    return d->backend == TSR_BACKEND_HOST ? host_peak(d) : d->peak_gflops;
}

static int parse_sizes(const char *s, size_t *sizes) {
    int n = 0;
    while (*s) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || errno || v == 0 || v > 65536 || n == MAX_SIZES) return -1;
        sizes[n++] = v;
        if (*end == ',') end++;
        else if (*end) return -1;
        s = end;
    }
    return n;
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') putchar('\\');
        if ((unsigned char)*s >= 0x20) putchar(*s);
    }
    putchar('"');
}

/* Max relative error of 8 sampled entries of C against a double dot product (of the operands
 * as the GEMM sees them: a and b already rounded to the precision). */
static double check_sample(const float *a, const float *b, const float *c, size_t n) {
    double worst = 0;
    for (int s = 0; s < 8; s++) {
        size_t i = (size_t)(s * 7919u) % n, j = (size_t)(s * 104729u + 3) % n;
        double ref = 0, mag = 0;
        for (size_t p = 0; p < n; p++) {
            ref += (double)a[i * n + p] * b[p * n + j];
            mag += fabs((double)a[i * n + p] * b[p * n + j]);
        }
        double e = fabs(c[s] - ref) / (mag + 1e-30);
        if (e > worst) worst = e;
    }
    return worst;
}

static void bench_device(tsr_context *ctx, int index, const size_t *sizes, int nsizes, int json,
                         tsr_precision prec) {
    const tsr_device_info *d = tsr_context_device(ctx, index);
    double peak = peak_of(d);
    tsr_backend *be;
    tsr_status st = tsr_backend_open(ctx, index, &be);
    if (st == TSR_OK && (st = tsr_backend_set_precision(be, prec)) != TSR_OK) {
        tsr_backend_free(be);
        be = NULL;
    }
    if (st != TSR_OK) {
        if (json) {
            printf("{\"device\":");
            json_str(d->id);
            printf(",\"error\":");
            json_str(tsr_context_last_error(ctx));
            printf("}\n");
        } else {
            printf("%-14s cannot open: %s\n", d->id, tsr_context_last_error(ctx));
        }
        return;
    }
    if (!json)
        printf("%-14s %s (%s GEMM inputs; float32 peak %.1f GFLOP/s)\n", d->id, d->name,
               tsr_precision_name(prec), peak);
    double rate = 0; /* GFLOP/s of the previous size, for the prediction */
    for (int si = 0; si < nsizes; si++) {
        size_t n = sizes[si];
        double flop = 2.0 * (double)n * n * n;
        double predicted = rate > 0 ? 2 * flop / (rate * 1e9) : 0; /* warm-up + one timed call */
        if (predicted > 10.0) {
            if (json) {
                printf("{\"device\":");
                json_str(d->id);
                printf(",\"n\":%zu,\"skipped\":true,\"predicted_s\":%.1f}\n", n, predicted);
            } else {
                printf("  n=%-5zu skipped: predicted %.0f s at %.1f GFLOP/s\n", n, predicted, rate);
            }
            continue;
        }
        size_t bytes = n * n * sizeof(float);
        float *ha = malloc(bytes), *hb = malloc(bytes);
        if (!ha || !hb) die("host memory", NULL, TSR_ERR_NO_MEMORY);
        uint64_t s = 0x9E3779B97F4A7C15ull ^ n;
        for (size_t i = 0; i < n * n; i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            ha[i] = (float)((s >> 40) * (1.0 / 16777216.0)) - 0.5f;
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            hb[i] = (float)((s >> 40) * (1.0 / 16777216.0)) - 0.5f;
        }
        tsr_buf *a, *b, *c;
        if ((st = tsr_buf_alloc(be, bytes, &a)) || (st = tsr_buf_alloc(be, bytes, &b)) ||
            (st = tsr_buf_alloc(be, bytes, &c)))
            die("device buffer", ctx, st);
        if ((st = tsr_buf_write(a, 0, ha, bytes)) || (st = tsr_buf_write(b, 0, hb, bytes)))
            die("upload", ctx, st);
#define GEMM()                                                                                \
    tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, n, n, n, 1.0f, tsr_ref_at(a, 0), n,           \
                tsr_ref_at(b, 0), n, 0.0f, tsr_ref_at(c, 0), n)
        double t0 = tsr_now();
        if ((st = GEMM()) || (st = tsr_backend_finish(be))) die("gemm", ctx, st);
        double warm = tsr_now() - t0;
        int reps = 0;
        double t;
        t0 = tsr_now();
        do { /* batches of calls between finishes, so launch gaps do not count as idle */
            int batch = reps < 1 ? 1 : reps;
            for (int r = 0; r < batch; r++)
                if ((st = GEMM())) die("gemm", ctx, st);
            if ((st = tsr_backend_finish(be))) die("finish", ctx, st);
            reps += batch;
            t = tsr_now() - t0;
        } while (t < 0.3);
        rate = flop * reps / t / 1e9;
        float sample[8];
        for (int k = 0; k < 8; k++) {
            size_t i = (size_t)(k * 7919u) % n, j = (size_t)(k * 104729u + 3) % n;
            if ((st = tsr_buf_read(c, (i * n + j) * sizeof(float), &sample[k], sizeof(float))))
                die("download", ctx, st);
        }
        tsr_round_n(prec, ha, ha, n * n); /* the operands the product saw */
        tsr_round_n(prec, hb, hb, n * n);
        double err = check_sample(ha, hb, sample, n);
        /* float32 accumulation; TF32 operands (TSR_TENSOR_CORES=tf32) lose 13 bits each */
        int ok = err < (prec == TSR_PRECISION_FP32 && ctx->opts.tensor_cores == 2 ? 2e-3 : 1e-4);
        if (json) {
            printf("{\"device\":");
            json_str(d->id);
            printf(",\"name\":");
            json_str(d->name);
            printf(",\"precision\":");
            json_str(tsr_precision_name(prec));
            printf(",\"n\":%zu,\"gflops\":%.2f,\"peak_gflops\":%.2f,\"fraction\":%.4f,"
                   "\"reps\":%d,\"seconds\":%.4f,\"warmup_s\":%.4f,\"max_rel_err\":%.2e,"
                   "\"ok\":%s}\n",
                   n, rate, peak, peak > 0 ? rate / peak : 0.0, reps, t, warm, err,
                   ok ? "true" : "false");
        } else {
            printf("  n=%-5zu %9.1f GFLOP/s  %5.1f%% of peak  (%d reps, %.2f s; warm-up %.2f s)%s\n",
                   n, rate, peak > 0 ? 100 * rate / peak : 0.0, reps, t, warm,
                   ok ? "" : "  WRONG RESULT");
        }
        fflush(stdout);
        tsr_buf_free(a);
        tsr_buf_free(b);
        tsr_buf_free(c);
        free(ha);
        free(hb);
        if (!ok) {
            fprintf(stderr, "tsr-gemm-bench: %s n=%zu: sampled relative error %.2e\n", d->id, n,
                    err);
            exit(1);
        }
    }
    tsr_backend_free(be);
}

int main(int argc, char **argv) {
    blas_reexec(argv); /* before anything starts: OpenBLAS's kernels are chosen at load */
    size_t sizes[MAX_SIZES] = {256, 512, 1024, 2048, 4096};
    int nsizes = 5, json = 0;
    const char *device = NULL;
    tsr_precision prec = TSR_PRECISION_FP32;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            nsizes = parse_sizes(argv[++i], sizes);
            if (nsizes <= 0) {
                fprintf(stderr, "tsr-gemm-bench: --sizes wants a list like 256,512 (1..65536)\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            device = argv[++i];
        } else if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
            if (tsr_precision_parse(argv[++i], &prec) != 0) {
                fprintf(stderr, "tsr-gemm-bench: --precision wants fp32, bf16 or fp16, not '%s'\n",
                        argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: %s [--sizes 256,512,...] [--device ID] "
                    "[--precision fp32|bf16|fp16] [--json]\n", argv[0]);
            return !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h") ? 0 : 2;
        }
    }
    tsr_context_options co;
    tsr_context_options_init(&co);
    char env_err[256];
    if (tsr_context_options_from_env(&co, env_err, sizeof env_err) != TSR_OK) {
        fprintf(stderr, "tsr-gemm-bench: %s\n", env_err);
        return 2;
    }
    tsr_context *ctx;
    tsr_status st = tsr_context_create(&ctx, &co);
    if (st != TSR_OK) die("context", NULL, st);
    int first = 0, last = tsr_context_device_count(ctx) - 1;
    if (device) {
        first = last = tsr_context_find_device(ctx, device);
        if (first < 0) {
            fprintf(stderr, "tsr-gemm-bench: no device '%s' (%d devices)\n", device,
                    tsr_context_device_count(ctx));
            tsr_context_free(ctx);
            return 2;
        }
    }
    for (int d = first; d <= last; d++) bench_device(ctx, d, sizes, nsizes, json, prec);
    tsr_context_free(ctx);
    return 0;
}
