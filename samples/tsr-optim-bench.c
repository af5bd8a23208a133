/* tsr-optim-bench: the host optimizer step's time per float of every kernel variant the CPU
 * supports (portable, SSE2, AVX2, AVX-512), side by side in one run, with the speedup over
 * the portable loop.
 *
 *   tsr-optim-bench [--sizes 262144,4194304] [--rounds 5]
 *
 * One thread, no pool: the kernels themselves. Each round times every variant in turn (so
 * load on a shared machine falls on all of them alike) for >= 50 ms each: SGD with Nesterov
 * momentum and weight decay (reads w, g, v; writes w, v) and AdamW (reads w, g, m, v; writes
 * w, m, v). Printed: the median over rounds in ns per float, and the spread (max/min). The
 * variants' results are compared bitwise with the portable one's after the run. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "backends/host/host.h"

#define MAX_SIZES 16
#define MAX_ROUNDS 64
#define MAX_VARIANTS 8

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct arrays {
    float *w, *g, *m, *v;
} arrays;

static float *floats(size_t n, unsigned seed) {
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "tsr-optim-bench: out of memory for %zu floats\n", n);
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = ((seed >> 8) & 0xffff) / 65536.0f * 0.02f - 0.01f;
    }
    return p;
}

static void arrays_init(arrays *a, size_t n) {
    a->w = floats(n, 1), a->g = floats(n, 2), a->m = floats(n, 3), a->v = floats(n, 4);
    for (size_t i = 0; i < n; i++) a->v[i] *= a->v[i]; /* a second moment is >= 0 */
}

static void arrays_free(arrays *a) {
    free(a->w), free(a->g), free(a->m), free(a->v);
}

/* Seconds per call of one step, repeated for >= 50 ms. The same steps on every variant: the
 * bias corrections of step t are recomputed per call, as training does. */
static double time_step(const tsr_host_optim_variant *k, int adam, arrays *a, size_t n) {
    const tsr_sgd_params sp = {0.01f, 0.9f, 5e-4f, 1, 0.0f};
    tsr_adam_params ap = {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 1, 0.1f, 0.001f, 0.0f};
    int calls = 0;
    double t0 = now(), t;
    do {
        if (adam)
            k->adam(n, &ap, a->w, a->g, a->m, a->v);
        else
            k->sgd(n, &sp, a->w, a->g, a->v);
        calls++;
    } while ((t = now() - t0) < 0.05);
    return t / calls;
}

static size_t parse_sizes(const char *s, size_t *out) {
    size_t count = 0;
    while (*s && count < MAX_SIZES) {
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (end == s || v == 0 || v > (1ULL << 28)) {
            fprintf(stderr, "tsr-optim-bench: --sizes wants numbers in 1..2^28, comma-separated: %s\n", s);
            exit(2);
        }
        out[count++] = (size_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return count;
}

int main(int argc, char **argv) {
    size_t sizes[MAX_SIZES], nsizes = parse_sizes("262144,4194304", sizes);
    int rounds = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc)
            nsizes = parse_sizes(argv[++i], sizes);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
            if (rounds < 1 || rounds > MAX_ROUNDS) {
                fprintf(stderr, "tsr-optim-bench: --rounds wants 1..%d\n", MAX_ROUNDS);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: tsr-optim-bench [--sizes N,N,...] [--rounds 1..%d]\n", MAX_ROUNDS);
            return 2;
        }
    }
    const tsr_host_optim_variant *all, *run[MAX_VARIANTS];
    size_t count = tsr_host_optim_variants(&all), nrun = 0;
    for (size_t i = count; i-- > 0;) /* portable first */
        if (!all[i].supported || all[i].supported()) run[nrun++] = &all[i];
    printf("%-6s %10s %-9s %12s %9s %8s\n", "step", "floats", "variant", "ns/float", "speedup", "spread");
    int mismatches = 0;
    for (size_t si = 0; si < nsizes; si++) {
        size_t n = sizes[si];
        for (int adam = 0; adam < 2; adam++) {
            static double t[MAX_VARIANTS][MAX_ROUNDS];
            arrays a[MAX_VARIANTS];
            for (size_t k = 0; k < nrun; k++) arrays_init(&a[k], n);
            for (int r = 0; r < rounds; r++)
                for (size_t k = 0; k < nrun; k++) t[k][r] = time_step(run[k], adam, &a[k], n);
            double base = 0;
            for (size_t k = 0; k < nrun; k++) {
                qsort(t[k], rounds, sizeof t[k][0], cmp_double);
                double med = t[k][rounds / 2];
                if (k == 0) base = med;
                printf("%-6s %10zu %-9s %12.3f %8.2fx %8.2f\n", adam ? "adamw" : "sgd", n, run[k]->name,
                       med / n * 1e9, base / med, t[k][rounds - 1] / t[k][0]);
            }
            /* one step from the same start: the same bits as portable's */
            for (size_t k = 0; k < nrun; k++) {
                arrays_free(&a[k]);
                arrays_init(&a[k], n);
                if (adam) {
                    tsr_adam_params ap = {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 1, 0.1f, 0.001f, 0.0f};
                    run[k]->adam(n, &ap, a[k].w, a[k].g, a[k].m, a[k].v);
                } else {
                    tsr_sgd_params sp = {0.01f, 0.9f, 5e-4f, 1, 0.0f};
                    run[k]->sgd(n, &sp, a[k].w, a[k].g, a[k].v);
                }
                if (k && (memcmp(a[k].w, a[0].w, n * 4) || memcmp(a[k].v, a[0].v, n * 4) ||
                          memcmp(a[k].m, a[0].m, n * 4))) {
                    fprintf(stderr, "tsr-optim-bench: %s's bits differ from portable's\n", run[k]->name);
                    mismatches++;
                }
            }
            for (size_t k = 0; k < nrun; k++) arrays_free(&a[k]);
        }
    }
    return mismatches ? 1 : 0;
}
