/* Capability measurement through the backend interface, and its cache
 * (<cache dir>/capability.json, keyed by device identity and driver version). */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "backends/backend.h"
#include "lib/core/atomic_file.h"
#include "lib/core/internal.h"
#include "topology/topology.h"

#define CACHE_FORMAT "tessera-capability"
#define CACHE_VERSION 1
#define GEMM_MAX_N 1024
#define BW_MAX_BYTES ((size_t)64 << 20)
#define BUDGET_S 4.0   /* measuring stops growing sizes past this (compilation excluded) */
#define REP_TIME_S 0.1 /* each figure is timed over at least this long */

static void cache_key(const tsr_device_info *d, char *buf, size_t n) {
    snprintf(buf, n, "%s|%s|%s|%s|%ucu", d->backend == TSR_BACKEND_HOST ? "host" : "opencl",
             d->vendor, d->name, d->driver_version, d->compute_units);
}

static void cache_path(tsr_context *ctx, char *buf, size_t n) {
    snprintf(buf, n, "%s/capability.json", ctx->cache_dir);
}

/* Reads and checks the cache. *root = NULL with TSR_OK when there is no file; TSR_ERR_CORRUPT
 * (detail in the context) when it cannot be used. */
static tsr_status cache_load(tsr_context *ctx, cJSON **root) {
    char path[600];
    cache_path(ctx, path, sizeof path);
    *root = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return TSR_OK;
    char *text = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        len >= (16L << 20)) {
        fclose(f);
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: unreadable or larger than 16 MiB", path);
    }
    if (!(text = tsr_malloc(ctx, (size_t)len + 1))) {
        fclose(f);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: %ld bytes", path, len);
    }
    size_t got = fread(text, 1, (size_t)len, f);
    fclose(f);
    if (got != (size_t)len) {
        tsr_free(ctx, text);
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: short read", path);
    }
    text[len] = '\0';
    cJSON *r = cJSON_ParseWithLength(text, (size_t)len);
    tsr_free(ctx, text);
    const cJSON *fmt = r ? cJSON_GetObjectItemCaseSensitive(r, "format") : NULL;
    const cJSON *ver = r ? cJSON_GetObjectItemCaseSensitive(r, "version") : NULL;
    const cJSON *devs = r ? cJSON_GetObjectItemCaseSensitive(r, "devices") : NULL;
    const char *why = !r ? "not valid JSON"
                      : !cJSON_IsString(fmt) || strcmp(fmt->valuestring, CACHE_FORMAT)
                          ? "format: not \"" CACHE_FORMAT "\""
                      : !cJSON_IsNumber(ver) || ver->valuedouble != CACHE_VERSION ? "version: not 1"
                      : !cJSON_IsObject(devs) ? "devices: expected an object"
                                              : NULL;
    if (why) {
        cJSON_Delete(r);
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: %s", path, why);
    }
    /* every entry must read back as capability figures */
    const cJSON *e;
    int idx = 0;
    cJSON_ArrayForEach(e, devs) {
        tsr_device_info scratch;
        memset(&scratch, 0, sizeof scratch);
        char where[32];
        snprintf(where, sizeof where, "devices[%d]", idx++);
        if (tsr_capability_read(ctx, e, where, &scratch) != TSR_OK) {
            char detail[sizeof ctx->last_error];
            tsr_strlcpy(detail, ctx->last_error, sizeof detail);
            cJSON_Delete(r);
            return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: %s", path, detail);
        }
    }
    *root = r;
    return TSR_OK;
}

/* Copies the cached figures of `d` into it; 1 when there was an entry. */
static int cache_apply(tsr_context *ctx, const cJSON *root, tsr_device_info *d) {
    char key[512];
    cache_key(d, key, sizeof key);
    const cJSON *e =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "devices"), key);
    if (!e) return 0;
    tsr_device_info m = *d;
    if (tsr_capability_read(ctx, e, "cache", &m) != TSR_OK || m.gemm_gflops <= 0) return 0;
    double peak = d->peak_gflops; /* analytic: ours, not the cache's */
    *d = m;
    d->peak_gflops = peak;
    return 1;
}

static tsr_status cache_store(tsr_context *ctx, cJSON *root) {
    char path[600];
    cache_path(ctx, path, sizeof path);
    if (mkdir(ctx->cache_dir, 0755) != 0 && errno != EEXIST) {
        /* one level of parents (~/.cache) is enough for the defaults */
        char parent[512];
        tsr_strlcpy(parent, ctx->cache_dir, sizeof parent);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent) {
            *slash = '\0';
            mkdir(parent, 0755);
        }
        if (mkdir(ctx->cache_dir, 0755) != 0 && errno != EEXIST)
            return tsr_error(ctx, TSR_ERR_IO, "cache dir %s: %s", ctx->cache_dir, strerror(errno));
    }
    char *text = cJSON_Print(root);
    if (!text) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "capability cache text");
    /* atomic: ranks sharing the cache never read half a file */
    tsr_status st = tsr_atomic_write_file(ctx, path, text, strlen(text));
    free(text);
    return st;
}

static cJSON *cache_new(void) {
    cJSON *r = cJSON_CreateObject();
    if (r && (!cJSON_AddStringToObject(r, "format", CACHE_FORMAT) ||
              !cJSON_AddNumberToObject(r, "version", CACHE_VERSION) ||
              !cJSON_AddObjectToObject(r, "devices"))) {
        cJSON_Delete(r);
        r = NULL;
    }
    return r;
}

static int cache_put(cJSON *root, const tsr_device_info *d) {
    char key[512];
    cache_key(d, key, sizeof key);
    cJSON *devs = cJSON_GetObjectItemCaseSensitive(root, "devices");
    cJSON *cap = tsr_capability_json(d);
    if (!cap) return -1;
    cJSON_DeleteItemFromObjectCaseSensitive(devs, key);
    if (!cJSON_AddItemToObject(devs, key, cap)) {
        cJSON_Delete(cap);
        return -1;
    }
    return 0;
}

tsr_status tsr_capability_apply_cache(tsr_context *ctx) {
    cJSON *root;
    tsr_status st = cache_load(ctx, &root);
    if (st == TSR_ERR_NO_MEMORY) return st;
    if (st != TSR_OK) {
        tsr_log(ctx, TSR_LOG_WARN, "ignoring the capability cache: %s",
                tsr_context_last_error(ctx));
        tsr_context_clear_error(ctx);
        return TSR_OK;
    }
    if (!root) return TSR_OK;
    for (int i = 0; i < ctx->device_count; i++)
        if (!ctx->devices[i].absent) cache_apply(ctx, root, &ctx->devices[i]);
    cJSON_Delete(root);
    tsr_topology_pair_devices(ctx->devices, ctx->device_count);
    return TSR_OK;
}

/* ------------------------------------------------------------------ measurement */

typedef struct bench {
    tsr_backend *be;
    tsr_buf *a, *b, *c;
    void *host;
    double t0;
} bench;

static void bench_free(tsr_context *ctx, bench *m) {
    tsr_buf_free(m->a);
    tsr_buf_free(m->b);
    tsr_buf_free(m->c);
    tsr_free(ctx, m->host);
    tsr_backend_free(m->be);
}

/* GFLOP/s of n^3 SGEMM; *one = seconds of one call, *warm = seconds of the first call. */
static tsr_status time_gemm(bench *m, size_t n, double *gflops, double *one, double *warm) {
    tsr_backend *be = m->be;
    tsr_ref a = tsr_ref_at(m->a, 0), b = tsr_ref_at(m->b, 0), c = tsr_ref_at(m->c, 0);
    /* warm-up: compiles kernels and tunes, not timed */
    double w = tsr_now();
    TSR_TRY(tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n));
    TSR_TRY(tsr_backend_finish(be));
    *warm = tsr_now() - w;
    int reps = 0;
    double t = tsr_now(), el;
    do {
        TSR_TRY(tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n));
        TSR_TRY(tsr_backend_finish(be));
        reps++;
        el = tsr_now() - t;
    } while (el < REP_TIME_S && reps < 50);
    *one = el / reps;
    *gflops = 2.0 * (double)n * n * n / *one * 1e-9;
    return TSR_OK;
}

typedef enum { BW_COPY, BW_H2D, BW_D2H } bw_kind;

static tsr_status time_bw(bench *m, bw_kind kind, size_t bytes, double *gbps) {
    int reps = 0;
    double t = 0, el = 0;
    for (int i = -1; i < 200 && el < REP_TIME_S; i++) { /* i = -1: warm-up */
        if (i == 0) t = tsr_now();
        if (kind == BW_COPY)
            TSR_TRY(tsr_buf_copy(m->b, 0, m->a, 0, bytes));
        else if (kind == BW_H2D)
            TSR_TRY(tsr_buf_write(m->a, 0, m->host, bytes));
        else
            TSR_TRY(tsr_buf_read(m->a, 0, m->host, bytes));
        TSR_TRY(tsr_backend_finish(m->be));
        if (i >= 0) {
            reps++;
            el = tsr_now() - t;
        }
    }
    /* a copy reads and writes every byte */
    *gbps = (kind == BW_COPY ? 2.0 : 1.0) * (double)bytes * reps / el * 1e-9;
    return TSR_OK;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static tsr_status time_launch(bench *m, double *us) {
    double t[41];
    tsr_ref x = tsr_ref_at(m->c, 0);
    for (int i = -1; i < 41; i++) {
        double s = tsr_now();
        TSR_TRY(tsr_op_scale(m->be, 1, 1.0f, x));
        TSR_TRY(tsr_backend_finish(m->be));
        if (i >= 0) t[i] = tsr_now() - s;
    }
    qsort(t, 41, sizeof t[0], cmp_double);
    *us = t[20] * 1e6; /* median: launch and wait of a one-element kernel */
    return TSR_OK;
}

static tsr_status measure(tsr_context *ctx, int index, tsr_device_info *out) {
    bench m;
    memset(&m, 0, sizeof m);
    tsr_device_info *d = &ctx->devices[index];
    double start = tsr_now();
    tsr_status st = tsr_backend_open(ctx, index, &m.be);
    size_t limit = d->max_alloc_bytes ? (size_t)d->max_alloc_bytes : BW_MAX_BYTES;
    size_t gemm_n = GEMM_MAX_N;
    while (gemm_n > 64 && gemm_n * gemm_n * sizeof(float) > limit / 2) gemm_n /= 2;
    size_t bw = BW_MAX_BYTES;
    while (bw > 4096 && bw > limit / 2) bw /= 2;
    size_t big = gemm_n * gemm_n * sizeof(float) > bw ? gemm_n * gemm_n * sizeof(float) : bw;
    if (st == TSR_OK) st = tsr_buf_alloc(m.be, big, &m.a);
    if (st == TSR_OK) st = tsr_buf_alloc(m.be, big, &m.b);
    if (st == TSR_OK) st = tsr_buf_alloc(m.be, gemm_n * gemm_n * sizeof(float), &m.c);
    if (st == TSR_OK && !(m.host = tsr_calloc(ctx, 1, big)))
        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "calibration host buffer of %zu bytes", big);
    if (st == TSR_OK) { /* defined inputs: zeros could take fast paths */
        float *h = m.host;
        for (size_t i = 0; i < big / sizeof(float); i++) h[i] = (float)(i % 17) * 0.0625f - 0.5f;
        st = tsr_buf_write(m.a, 0, h, big);
        if (st == TSR_OK) st = tsr_buf_write(m.b, 0, h, big);
        if (st == TSR_OK) st = tsr_buf_write(m.c, 0, h, gemm_n * gemm_n * sizeof(float));
    }
    /* the budget counts measuring only: not opening the device nor building kernels */
    double best = 0, compile = 0, measure_start = tsr_now();
    int points = 0;
    for (size_t n = 128; st == TSR_OK && n <= gemm_n && points < 4; n *= 2) {
        double gf, one, warm;
        st = time_gemm(&m, n, &gf, &one, &warm);
        if (st != TSR_OK) break;
        compile += warm > one ? warm - one : 0;
        tsr_log(ctx, TSR_LOG_DEBUG,
                "%s: SGEMM %zu^3 %.2f GFLOP/s (%.2f ms per call, %.2f s so far)", d->id, n, gf,
                one * 1e3, tsr_now() - start);
        out->gemm_n[points] = (unsigned)n;
        out->gemm_gflops_n[points++] = gf;
        if (gf > best) best = gf;
        /* the next size costs 8x: stop before the budget runs out */
        if (tsr_now() - measure_start + 8 * one * 10 > BUDGET_S + compile) break;
    }
    if (st == TSR_OK) st = time_bw(&m, BW_COPY, bw, &out->mem_bw_gbps);
    if (st == TSR_OK) st = time_bw(&m, BW_H2D, bw, &out->h2d_gbps);
    if (st == TSR_OK) st = time_bw(&m, BW_D2H, bw, &out->d2h_gbps);
    if (st == TSR_OK) st = time_launch(&m, &out->launch_us);
    bench_free(ctx, &m);
    if (st != TSR_OK) return st;
    out->gemm_points = points;
    out->gemm_gflops = best;
    double total = tsr_now() - start, setup = measure_start - start + compile;
    tsr_log(ctx, TSR_LOG_INFO,
            "%s: SGEMM %.1f GFLOP/s, copy %.1f GB/s, h2d %.1f, d2h %.1f, launch %.1f us (measured "
            "in %.2f s, "
            "%.2f s more opening the device and building kernels)",
            d->id, best, out->mem_bw_gbps, out->h2d_gbps, out->d2h_gbps, out->launch_us,
            total - setup, setup);
    return TSR_OK;
}

/* Measures the devices of [first, last) that need it and updates the cache. */
static tsr_status calibrate_range(tsr_context *ctx, int first, int last, int force) {
    cJSON *root = NULL;
    tsr_status st = cache_load(ctx, &root);
    if (st == TSR_ERR_NO_MEMORY) return st;
    if (st != TSR_OK) {
        tsr_log(ctx, TSR_LOG_WARN, "capability cache is corrupt, measuring again: %s",
                tsr_context_last_error(ctx));
        tsr_context_clear_error(ctx);
        force = 1;
        root = NULL;
    }
    if (!root && !(root = cache_new()))
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "capability cache");
    int changed = 0;
    st = TSR_OK;
    for (int i = first; i < last && st == TSR_OK; i++) {
        tsr_device_info *d = &ctx->devices[i];
        if (d->absent) continue;
        if (!force && cache_apply(ctx, root, d)) continue;
        tsr_device_info m = *d;
        st = measure(ctx, i, &m);
        if (st != TSR_OK) break;
        *d = m;
        if (cache_put(root, d) != 0)
            st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "capability cache entry");
        changed = 1;
    }
    if (changed) {
        tsr_status cs = cache_store(ctx, root);
        if (cs != TSR_OK) { /* the figures are still good for this run */
            tsr_log(ctx, TSR_LOG_WARN, "capability cache not written: %s",
                    tsr_context_last_error(ctx));
            if (st == TSR_OK) tsr_context_clear_error(ctx);
        }
    }
    cJSON_Delete(root);
    for (int i = 0; i < ctx->device_count; i++)
        if (ctx->devices[i].same_as >= 0 && ctx->devices[i].gemm_gflops > 0)
            ctx->devices[i].usable = 1;
    tsr_topology_pair_devices(ctx->devices, ctx->device_count);
    return st;
}

tsr_status tsr_topology_calibrate(tsr_context *ctx, int force) {
    if (!ctx) return TSR_ERR_INVALID_ARG;
    return calibrate_range(ctx, 0, ctx->device_count, force);
}

tsr_status tsr_topology_calibrate_device(tsr_context *ctx, int index, int force) {
    if (!ctx) return TSR_ERR_INVALID_ARG;
    if (index < 0 || index >= ctx->device_count)
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "device index %d does not exist (%d devices)",
                         index, ctx->device_count);
    if (ctx->devices[index].absent)
        return tsr_error(ctx, TSR_ERR_NO_DEVICE,
                         "device %s is not present on this machine: cannot measure it",
                         ctx->devices[index].id);
    return calibrate_range(ctx, index, index + 1, force);
}
