/* Topology objects and their file format (JSON through cJSON): write, read and validate, with
 * an error that names the offending field. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/core/atomic_file.h"
#include "lib/core/internal.h"
#include "topology/topology.h"
#if TSR_WITH_HWLOC
#define TSR_HWLOC_FREE(h) tsr_hwloc_free(h)
#else
#define TSR_HWLOC_FREE(h) ((void)(h))
#endif

#define MAX_EXACT_INT 9007199254740992.0 /* 2^53: integers a JSON double holds exactly */

tsr_status tsr_topology_alloc(tsr_context *ctx, int hosts, int devices, int ranks,
                              tsr_topology **out) {
    *out = NULL;
    tsr_topology *t = tsr_calloc(ctx, 1, sizeof *t);
    if (!t) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "topology");
    t->ctx = ctx;
    t->hosts = hosts ? tsr_calloc(ctx, (size_t)hosts, sizeof *t->hosts) : NULL;
    t->devices = devices ? tsr_calloc(ctx, (size_t)devices, sizeof *t->devices) : NULL;
    t->ranks = ranks ? tsr_calloc(ctx, (size_t)ranks, sizeof *t->ranks) : NULL;
    if ((hosts && !t->hosts) || (devices && !t->devices) || (ranks && !t->ranks)) {
        tsr_topology_free(t);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "topology of %d hosts, %d devices, %d ranks",
                         hosts, devices, ranks);
    }
    t->host_count = hosts;
    t->device_count = devices;
    t->rank_count = ranks;
    *out = t;
    return TSR_OK;
}

void tsr_topology_free(tsr_topology *t) {
    if (!t) return;
    tsr_context *ctx = t->ctx;
    TSR_HWLOC_FREE(t->hwloc);
    tsr_free(ctx, t->hosts);
    tsr_free(ctx, t->devices);
    tsr_free(ctx, t->ranks);
    tsr_free(ctx, t);
}

int tsr_topology_host_count(const tsr_topology *t) { return t ? t->host_count : 0; }
int tsr_topology_device_count(const tsr_topology *t) { return t ? t->device_count : 0; }
int tsr_topology_rank_count(const tsr_topology *t) { return t ? t->rank_count : 0; }
const tsr_host_info *tsr_topology_host(const tsr_topology *t, int i) {
    return t && i >= 0 && i < t->host_count ? &t->hosts[i] : NULL;
}
const tsr_device_info *tsr_topology_device(const tsr_topology *t, int i) {
    return t && i >= 0 && i < t->device_count ? &t->devices[i] : NULL;
}
const tsr_rank_info *tsr_topology_rank(const tsr_topology *t, int i) {
    return t && i >= 0 && i < t->rank_count ? &t->ranks[i] : NULL;
}

tsr_status tsr_topology_from_context(tsr_context *ctx, tsr_topology **out) {
    if (!ctx || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_topology_from_context: NULL argument");
    *out = NULL;
    int hosts = ctx->topology && ctx->topology->host_count ? ctx->topology->host_count : 1;
    tsr_topology *t;
    TSR_TRY(tsr_topology_alloc(ctx, hosts, ctx->device_count, 0, &t));
    if (ctx->topology && ctx->topology->host_count)
        memcpy(t->hosts, ctx->topology->hosts, (size_t)hosts * sizeof *t->hosts);
    else
        tsr_topology_host_summary_sysfs(&t->hosts[0]);
    if (ctx->device_count)
        memcpy(t->devices, ctx->devices, (size_t)ctx->device_count * sizeof *t->devices);
    *out = t;
    return TSR_OK;
}

/* ------------------------------------------------------------------ writing */

static const char *backend_name(tsr_backend_kind b) {
    return b == TSR_BACKEND_HOST ? "host" : "opencl";
}

/* Numbers that read back exactly: cJSON prints 15 digits and accepts a 1-ulp error. */
static int add_num(cJSON *o, const char *key, double v) {
    char buf[40];
    if (!isfinite(v)) v = 0;
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
    cJSON *n = cJSON_CreateRaw(buf);
    if (n && cJSON_AddItemToObject(o, key, n)) return 1;
    cJSON_Delete(n);
    return 0;
}
static int add_str(cJSON *o, const char *key, const char *v) {
    return cJSON_AddStringToObject(o, key, v) != NULL;
}
static int add_bool(cJSON *o, const char *key, int v) {
    return cJSON_AddBoolToObject(o, key, v) != NULL;
}

static cJSON *host_json(const tsr_host_info *h) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int ok = add_str(o, "hostname", h->hostname) && add_num(o, "packages", h->packages) &&
             add_num(o, "numa_nodes", h->numa_nodes) && add_num(o, "cores", h->cores) &&
             add_num(o, "pus", h->pus) && add_num(o, "memory_bytes", (double)h->memory_bytes) &&
             add_str(o, "cpuset", h->cpuset);
    if (!ok) cJSON_Delete(o);
    return ok ? o : NULL;
}

struct cJSON *tsr_capability_json(const tsr_device_info *d) {
    cJSON *cap = cJSON_CreateObject(), *gemm = cJSON_CreateArray();
    int ok = cap && gemm && add_num(cap, "peak_gflops", d->peak_gflops) &&
             add_num(cap, "gemm_gflops", d->gemm_gflops) &&
             add_num(cap, "mem_bw_gbps", d->mem_bw_gbps) && add_num(cap, "h2d_gbps", d->h2d_gbps) &&
             add_num(cap, "d2h_gbps", d->d2h_gbps) && add_num(cap, "launch_us", d->launch_us);
    for (int i = 0; ok && i < d->gemm_points && i < 4; i++) {
        cJSON *p = cJSON_CreateObject();
        ok = p && cJSON_AddItemToArray(gemm, p) && add_num(p, "n", d->gemm_n[i]) &&
             add_num(p, "gflops", d->gemm_gflops_n[i]);
        if (!p) break;
    }
    if (ok && cJSON_AddItemToObject(cap, "gemm", gemm))
        gemm = NULL;
    else
        ok = 0;
    cJSON_Delete(gemm);
    if (!ok) {
        cJSON_Delete(cap);
        return NULL;
    }
    return cap;
}

static cJSON *device_json(const tsr_device_info *d) {
    cJSON *o = cJSON_CreateObject(), *cap = tsr_capability_json(d);
    int ok = o && cap;
    ok = ok && add_str(o, "id", d->id) && add_num(o, "host", d->host) &&
         add_str(o, "kind", tsr_device_kind_name(d->kind)) &&
         add_str(o, "backend", backend_name(d->backend)) && add_str(o, "vendor", d->vendor) &&
         add_str(o, "name", d->name) && add_str(o, "driver_version", d->driver_version) &&
         add_str(o, "platform", d->platform) && add_num(o, "platform_index", d->platform_index) &&
         add_num(o, "device_index", d->device_index) &&
         add_num(o, "compute_units", d->compute_units) && add_num(o, "clock_mhz", d->clock_mhz) &&
         add_num(o, "global_mem_bytes", (double)d->global_mem_bytes) &&
         add_num(o, "local_mem_bytes", (double)d->local_mem_bytes) &&
         add_num(o, "max_alloc_bytes", (double)d->max_alloc_bytes) &&
         add_bool(o, "fp64", d->fp64) && add_bool(o, "fp16", d->fp16) &&
         add_str(o, "pci_bus_id", d->pci_bus_id) && add_num(o, "numa_node", d->numa_node) &&
         add_str(o, "cpuset", d->cpuset) && add_num(o, "same_as", d->same_as) &&
         add_bool(o, "usable", d->usable);
    if (ok && cJSON_AddItemToObject(o, "capability", cap))
        cap = NULL;
    else
        ok = 0;
    cJSON_Delete(cap);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *rank_json(const tsr_rank_info *r) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    int ok = add_num(o, "rank", r->rank) && add_num(o, "local_rank", r->local_rank) &&
             add_num(o, "local_size", r->local_size) && add_num(o, "host", r->host) &&
             add_num(o, "device", r->device) && add_str(o, "cpuset", r->cpuset);
    if (!ok) cJSON_Delete(o);
    return ok ? o : NULL;
}

char *tsr_topology_to_json(const tsr_topology *t, int pretty) {
    cJSON *root = cJSON_CreateObject(), *hosts = NULL;
    int ok = root && add_str(root, "format", TSR_TOPOLOGY_FORMAT) &&
             add_num(root, "version", TSR_TOPOLOGY_VERSION);
    ok = ok && (hosts = cJSON_AddArrayToObject(root, "hosts")) != NULL;
    for (int i = 0; ok && i < t->host_count; i++) {
        cJSON *h = host_json(&t->hosts[i]);
        ok = h && cJSON_AddItemToArray(hosts, h);
    }
    cJSON *devs = ok ? cJSON_AddArrayToObject(root, "devices") : NULL;
    ok = ok && devs;
    for (int i = 0; ok && i < t->device_count; i++) {
        cJSON *d = device_json(&t->devices[i]);
        ok = d && cJSON_AddItemToArray(devs, d);
    }
    if (ok && t->rank_count) {
        cJSON *ranks = cJSON_AddArrayToObject(root, "ranks");
        ok = ranks != NULL;
        for (int i = 0; ok && i < t->rank_count; i++) {
            cJSON *r = rank_json(&t->ranks[i]);
            ok = r && cJSON_AddItemToArray(ranks, r);
        }
    }
    char *text = ok ? (pretty ? cJSON_Print(root) : cJSON_PrintUnformatted(root)) : NULL;
    cJSON_Delete(root);
    return text;
}

tsr_status tsr_topology_write(const tsr_topology *t, FILE *f) {
    if (!t || !f)
        return tsr_error(t ? t->ctx : NULL, TSR_ERR_INVALID_ARG,
                         "tsr_topology_write: NULL argument");
    char *text = tsr_topology_to_json(t, 1);
    if (!text) return tsr_error(t->ctx, TSR_ERR_NO_MEMORY, "topology JSON text");
    int bad = fputs(text, f) < 0 || fputc('\n', f) == EOF || fflush(f) != 0;
    int e = errno;
    free(text);
    if (bad) return tsr_error(t->ctx, TSR_ERR_IO, "writing the topology: %s", strerror(e));
    return TSR_OK;
}

tsr_status tsr_topology_save(const tsr_topology *t, const char *path) {
    if (!t || !path)
        return tsr_error(t ? t->ctx : NULL, TSR_ERR_INVALID_ARG,
                         "tsr_topology_save: NULL argument");
    tsr_atomic_file file;
    TSR_TRY(tsr_atomic_open(t->ctx, path, &file));
    tsr_status st = tsr_topology_write(t, file.fp);
    if (st != TSR_OK) {
        tsr_atomic_abort(&file);
        return st;
    }
    return tsr_atomic_commit(&file);
}

/* ------------------------------------------------------------------ reading */

typedef struct reader {
    tsr_context *ctx;
    char where[96]; /* "devices[2]" */
} reader;

#define FIELD_ERR(r, st, key, ...) field_err((r), (st), (key), __VA_ARGS__)
static tsr_status field_err(reader *r, tsr_status st, const char *key, const char *fmt, ...)
    TSR_PRINTF(4, 5);
static tsr_status field_err(reader *r, tsr_status st, const char *key, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return tsr_error(r->ctx, st, "%s%s%s: %s", r->where, r->where[0] && key[0] ? "." : "", key,
                     msg);
}

/* Looks `key` up; NULL and *st = error when required and missing. */
static const cJSON *field(reader *r, const cJSON *o, const char *key, int required,
                          tsr_status *st) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *st = TSR_OK;
    if (!v && required) *st = FIELD_ERR(r, TSR_ERR_PARSE, key, "missing");
    return v;
}

static tsr_status get_int(reader *r, const cJSON *o, const char *key, int required, double lo,
                          double hi, double *out) {
    tsr_status st;
    const cJSON *v = field(r, o, key, required, &st);
    if (!v) return st;
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!isfinite(d) || floor(d) != d || d < lo || d > hi) {
        if (lo == 0)
            return FIELD_ERR(r, TSR_ERR_PARSE, key, "expected a non-negative integer%s",
                             hi < MAX_EXACT_INT ? " below 2^32" : "");
        return FIELD_ERR(r, TSR_ERR_PARSE, key, "expected an integer >= %.0f", lo);
    }
    *out = d;
    return TSR_OK;
}

static tsr_status get_i32(reader *r, const cJSON *o, const char *key, int required, int lo,
                          int *out) {
    double d = *out;
    TSR_TRY(get_int(r, o, key, required, lo, 2147483647.0, &d));
    *out = (int)d;
    return TSR_OK;
}

static tsr_status get_u32(reader *r, const cJSON *o, const char *key, int required, unsigned *out) {
    double d = *out;
    TSR_TRY(get_int(r, o, key, required, 0, 4294967295.0, &d));
    *out = (unsigned)d;
    return TSR_OK;
}

static tsr_status get_u64(reader *r, const cJSON *o, const char *key, int required, uint64_t *out) {
    double d = (double)*out;
    TSR_TRY(get_int(r, o, key, required, 0, MAX_EXACT_INT, &d));
    *out = (uint64_t)d;
    return TSR_OK;
}

static tsr_status get_real(reader *r, const cJSON *o, const char *key, double *out) {
    tsr_status st;
    const cJSON *v = field(r, o, key, 0, &st);
    if (!v) return st;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0)
        return FIELD_ERR(r, TSR_ERR_PARSE, key, "expected a non-negative number");
    *out = v->valuedouble;
    return TSR_OK;
}

static tsr_status get_bool(reader *r, const cJSON *o, const char *key, int required, int *out) {
    tsr_status st;
    const cJSON *v = field(r, o, key, required, &st);
    if (!v) return st;
    if (!cJSON_IsBool(v)) return FIELD_ERR(r, TSR_ERR_PARSE, key, "expected true or false");
    *out = cJSON_IsTrue(v);
    return TSR_OK;
}

static tsr_status get_str(reader *r, const cJSON *o, const char *key, int required, char *dst,
                          size_t n) {
    tsr_status st;
    const cJSON *v = field(r, o, key, required, &st);
    if (!v) return st;
    if (!cJSON_IsString(v) || !v->valuestring)
        return FIELD_ERR(r, TSR_ERR_PARSE, key, "expected a string");
    if (strlen(v->valuestring) >= n)
        return FIELD_ERR(r, TSR_ERR_PARSE, key, "longer than %zu characters", n - 1);
    tsr_strlcpy(dst, v->valuestring, n);
    return TSR_OK;
}

static tsr_status get_cpuset(reader *r, const cJSON *o, const char *key, char *dst, size_t n) {
    TSR_TRY(get_str(r, o, key, 0, dst, n));
    tsr_cpumask m;
    if (tsr_cpumask_parse(dst, &m) != 0)
        return FIELD_ERR(r, TSR_ERR_PARSE, key, "\"%s\" is not a CPU list like \"0-3,8\"", dst);
    return TSR_OK;
}

static const cJSON *get_array(reader *r, const cJSON *o, const char *key, int required,
                              tsr_status *st) {
    const cJSON *v = field(r, o, key, required, st);
    if (v && !cJSON_IsArray(v)) {
        *st = FIELD_ERR(r, TSR_ERR_PARSE, key, "expected an array");
        return NULL;
    }
    return v;
}

static tsr_status read_host(reader *r, const cJSON *o, tsr_host_info *h) {
    if (!cJSON_IsObject(o)) return FIELD_ERR(r, TSR_ERR_PARSE, "", "expected an object");
    h->packages = 1;
    h->numa_nodes = 1;
    TSR_TRY(get_str(r, o, "hostname", 1, h->hostname, sizeof h->hostname));
    TSR_TRY(get_i32(r, o, "packages", 0, 1, &h->packages));
    TSR_TRY(get_i32(r, o, "numa_nodes", 0, 1, &h->numa_nodes));
    TSR_TRY(get_i32(r, o, "cores", 1, 1, &h->cores));
    TSR_TRY(get_i32(r, o, "pus", 1, 1, &h->pus));
    TSR_TRY(get_u64(r, o, "memory_bytes", 0, &h->memory_bytes));
    TSR_TRY(get_cpuset(r, o, "cpuset", h->cpuset, sizeof h->cpuset));
    if (h->pus < h->cores)
        return FIELD_ERR(r, TSR_ERR_CORRUPT, "pus", "%d PUs are fewer than its %d cores", h->pus,
                         h->cores);
    return TSR_OK;
}

static tsr_status read_kind(reader *r, const cJSON *o, tsr_device_kind *kind) {
    char name[32];
    TSR_TRY(get_str(r, o, "kind", 1, name, sizeof name));
    for (int k = TSR_DEVICE_HOST; k <= TSR_DEVICE_CUSTOM; k++)
        if (strcmp(name, tsr_device_kind_name((tsr_device_kind)k)) == 0) {
            *kind = (tsr_device_kind)k;
            return TSR_OK;
        }
    if (strcmp(name, "fpga") == 0) {
        *kind = TSR_DEVICE_ACCELERATOR;
        return TSR_OK;
    }
    return FIELD_ERR(r, TSR_ERR_PARSE, "kind",
                     "\"%s\" is not one of host, cpu, gpu, accelerator, custom", name);
}

static tsr_status read_capability_object(reader *r, const cJSON *cap, tsr_device_info *d);

static tsr_status read_capability(reader *r, const cJSON *dev, tsr_device_info *d) {
    tsr_status st;
    const cJSON *cap = field(r, dev, "capability", 0, &st);
    if (!cap) return st;
    return read_capability_object(r, cap, d);
}

tsr_status tsr_capability_read(tsr_context *ctx, const struct cJSON *cap, const char *where,
                               tsr_device_info *d) {
    reader r = {ctx, ""};
    tsr_strlcpy(r.where, where, sizeof r.where);
    return read_capability_object(&r, cap, d);
}

static tsr_status read_capability_object(reader *r, const cJSON *cap, tsr_device_info *d) {
    tsr_status st;
    size_t len = strlen(r->where);
    if (!cJSON_IsObject(cap))
        return FIELD_ERR(r, TSR_ERR_PARSE, "capability", "expected an object");
    snprintf(r->where + len, sizeof r->where - len, ".capability");
    if ((st = get_real(r, cap, "peak_gflops", &d->peak_gflops)) != TSR_OK ||
        (st = get_real(r, cap, "gemm_gflops", &d->gemm_gflops)) != TSR_OK ||
        (st = get_real(r, cap, "mem_bw_gbps", &d->mem_bw_gbps)) != TSR_OK ||
        (st = get_real(r, cap, "h2d_gbps", &d->h2d_gbps)) != TSR_OK ||
        (st = get_real(r, cap, "d2h_gbps", &d->d2h_gbps)) != TSR_OK ||
        (st = get_real(r, cap, "launch_us", &d->launch_us)) != TSR_OK)
        return st;
    const cJSON *gemm = get_array(r, cap, "gemm", 0, &st);
    if (!gemm) return st;
    int n = cJSON_GetArraySize(gemm);
    if (n > 4) return FIELD_ERR(r, TSR_ERR_PARSE, "gemm", "%d sizes, at most 4", n);
    size_t base = strlen(r->where);
    for (int i = 0; i < n; i++) {
        const cJSON *p = cJSON_GetArrayItem(gemm, i);
        snprintf(r->where + base, sizeof r->where - base, ".gemm[%d]", i);
        if (!cJSON_IsObject(p)) return FIELD_ERR(r, TSR_ERR_PARSE, "", "expected an object");
        TSR_TRY(get_u32(r, p, "n", 1, &d->gemm_n[i]));
        tsr_status s2;
        if (!field(r, p, "gflops", 1, &s2)) return s2;
        TSR_TRY(get_real(r, p, "gflops", &d->gemm_gflops_n[i]));
    }
    d->gemm_points = n;
    r->where[len] = '\0';
    return TSR_OK;
}

static tsr_status read_device(reader *r, const cJSON *o, tsr_device_info *d) {
    if (!cJSON_IsObject(o)) return FIELD_ERR(r, TSR_ERR_PARSE, "", "expected an object");
    char backend[16];
    d->platform_index = d->device_index = -1;
    d->numa_node = -1;
    d->same_as = -1;
    d->usable = 1;
    TSR_TRY(get_str(r, o, "id", 1, d->id, sizeof d->id));
    TSR_TRY(get_i32(r, o, "host", 0, 0, &d->host));
    TSR_TRY(read_kind(r, o, &d->kind));
    TSR_TRY(get_str(r, o, "backend", 1, backend, sizeof backend));
    if (strcmp(backend, "host") == 0)
        d->backend = TSR_BACKEND_HOST;
    else if (strcmp(backend, "opencl") == 0)
        d->backend = TSR_BACKEND_OPENCL;
    else
        return FIELD_ERR(r, TSR_ERR_PARSE, "backend", "\"%s\" is not one of host, opencl", backend);
    TSR_TRY(get_str(r, o, "vendor", 0, d->vendor, sizeof d->vendor));
    TSR_TRY(get_str(r, o, "name", 1, d->name, sizeof d->name));
    TSR_TRY(get_str(r, o, "driver_version", 0, d->driver_version, sizeof d->driver_version));
    TSR_TRY(get_str(r, o, "platform", 0, d->platform, sizeof d->platform));
    TSR_TRY(get_i32(r, o, "platform_index", 0, -1, &d->platform_index));
    TSR_TRY(get_i32(r, o, "device_index", 0, -1, &d->device_index));
    TSR_TRY(get_u32(r, o, "compute_units", 1, &d->compute_units));
    TSR_TRY(get_u32(r, o, "clock_mhz", 1, &d->clock_mhz));
    TSR_TRY(get_u64(r, o, "global_mem_bytes", 1, &d->global_mem_bytes));
    TSR_TRY(get_u64(r, o, "local_mem_bytes", 0, &d->local_mem_bytes));
    d->max_alloc_bytes = d->global_mem_bytes;
    TSR_TRY(get_u64(r, o, "max_alloc_bytes", 0, &d->max_alloc_bytes));
    TSR_TRY(get_bool(r, o, "fp64", 0, &d->fp64));
    TSR_TRY(get_bool(r, o, "fp16", 0, &d->fp16));
    TSR_TRY(get_str(r, o, "pci_bus_id", 0, d->pci_bus_id, sizeof d->pci_bus_id));
    unsigned a, b, c, f;
    char tail;
    if (d->pci_bus_id[0] && sscanf(d->pci_bus_id, "%x:%x:%x.%x%c", &a, &b, &c, &f, &tail) != 4)
        return FIELD_ERR(r, TSR_ERR_PARSE, "pci_bus_id",
                         "\"%s\" is not a bus id like \"0000:65:00.0\"", d->pci_bus_id);
    TSR_TRY(get_i32(r, o, "numa_node", 0, -1, &d->numa_node));
    TSR_TRY(get_cpuset(r, o, "cpuset", d->cpuset, sizeof d->cpuset));
    TSR_TRY(get_i32(r, o, "same_as", 0, -1, &d->same_as));
    TSR_TRY(get_bool(r, o, "usable", 0, &d->usable));
    TSR_TRY(read_capability(r, o, d));
    if (d->compute_units == 0)
        return FIELD_ERR(r, TSR_ERR_CORRUPT, "compute_units", "0 compute units");
    if ((d->backend == TSR_BACKEND_HOST) != (d->kind == TSR_DEVICE_HOST))
        return FIELD_ERR(r, TSR_ERR_CORRUPT, "kind", "\"%s\" contradicts backend \"%s\"",
                         tsr_device_kind_name(d->kind), backend);
    if (d->max_alloc_bytes > d->global_mem_bytes)
        return FIELD_ERR(
            r, TSR_ERR_CORRUPT, "max_alloc_bytes", "%llu exceeds global_mem_bytes %llu",
            (unsigned long long)d->max_alloc_bytes, (unsigned long long)d->global_mem_bytes);
    return TSR_OK;
}

static tsr_status read_rank(reader *r, const cJSON *o, tsr_rank_info *k) {
    if (!cJSON_IsObject(o)) return FIELD_ERR(r, TSR_ERR_PARSE, "", "expected an object");
    k->device = -1;
    k->local_size = 1;
    TSR_TRY(get_i32(r, o, "rank", 1, 0, &k->rank));
    TSR_TRY(get_i32(r, o, "local_rank", 1, 0, &k->local_rank));
    TSR_TRY(get_i32(r, o, "local_size", 0, 1, &k->local_size));
    TSR_TRY(get_i32(r, o, "host", 1, 0, &k->host));
    TSR_TRY(get_i32(r, o, "device", 0, -1, &k->device));
    TSR_TRY(get_cpuset(r, o, "cpuset", k->cpuset, sizeof k->cpuset));
    if (k->local_rank >= k->local_size)
        return FIELD_ERR(r, TSR_ERR_CORRUPT, "local_rank", "%d is not below local_size %d",
                         k->local_rank, k->local_size);
    return TSR_OK;
}

/* Cross-record checks: indices in range, same_as symmetric, ids unique per host. */
static tsr_status check_links(reader *r, tsr_topology *t) {
    for (int i = 0; i < t->device_count; i++) {
        tsr_device_info *d = &t->devices[i];
        snprintf(r->where, sizeof r->where, "devices[%d]", i);
        if (d->host >= t->host_count)
            return FIELD_ERR(r, TSR_ERR_CORRUPT, "host", "%d out of range (%d hosts)", d->host,
                             t->host_count);
        if (d->same_as >= t->device_count)
            return FIELD_ERR(r, TSR_ERR_CORRUPT, "same_as", "%d out of range (%d devices)",
                             d->same_as, t->device_count);
        if (d->same_as == i)
            return FIELD_ERR(r, TSR_ERR_CORRUPT, "same_as", "%d is the device itself", i);
    }
    for (int i = 0; i < t->device_count; i++) { /* indices are all in range now */
        tsr_device_info *d = &t->devices[i];
        snprintf(r->where, sizeof r->where, "devices[%d]", i);
        if (d->same_as >= 0) {
            const tsr_device_info *o = &t->devices[d->same_as];
            if (o->same_as != i)
                return FIELD_ERR(r, TSR_ERR_CORRUPT, "same_as", "%d, but devices[%d].same_as is %d",
                                 d->same_as, d->same_as, o->same_as);
            if (o->host != d->host)
                return FIELD_ERR(r, TSR_ERR_CORRUPT, "same_as", "%d is on another host",
                                 d->same_as);
        }
        for (int j = 0; j < i; j++)
            if (t->devices[j].host == d->host && strcmp(t->devices[j].id, d->id) == 0)
                return FIELD_ERR(r, TSR_ERR_CORRUPT, "id", "\"%s\" repeats devices[%d] on host %d",
                                 d->id, j, d->host);
    }
    for (int i = 0; i < t->rank_count; i++) {
        tsr_rank_info *k = &t->ranks[i];
        snprintf(r->where, sizeof r->where, "ranks[%d]", i);
        if (k->rank != i)
            return FIELD_ERR(r, TSR_ERR_CORRUPT, "rank", "%d at position %d", k->rank, i);
        if (k->host >= t->host_count)
            return FIELD_ERR(r, TSR_ERR_CORRUPT, "host", "%d out of range (%d hosts)", k->host,
                             t->host_count);
        if (k->device >= t->device_count)
            return FIELD_ERR(r, TSR_ERR_CORRUPT, "device", "%d out of range (%d devices)",
                             k->device, t->device_count);
        if (k->device >= 0 && t->devices[k->device].host != k->host)
            return FIELD_ERR(r, TSR_ERR_CORRUPT, "device", "%d is on host %d, the rank on host %d",
                             k->device, t->devices[k->device].host, k->host);
    }
    return TSR_OK;
}

static tsr_status read_all(reader *r, const cJSON *root, tsr_topology **out) {
    tsr_status st;
    if (!cJSON_IsObject(root))
        return FIELD_ERR(r, TSR_ERR_PARSE, "topology", "expected a JSON object");
    char format[64];
    TSR_TRY(get_str(r, root, "format", 1, format, sizeof format));
    if (strcmp(format, TSR_TOPOLOGY_FORMAT) != 0)
        return FIELD_ERR(r, TSR_ERR_PARSE, "format", "\"%s\", expected \"%s\"", format,
                         TSR_TOPOLOGY_FORMAT);
    int version = 0;
    TSR_TRY(get_i32(r, root, "version", 1, 0, &version));
    if (version != TSR_TOPOLOGY_VERSION)
        return FIELD_ERR(r, TSR_ERR_PARSE, "version", "%d is not supported (expected %d)", version,
                         TSR_TOPOLOGY_VERSION);
    const cJSON *hosts = get_array(r, root, "hosts", 1, &st);
    if (!hosts) return st;
    const cJSON *devs = get_array(r, root, "devices", 1, &st);
    if (!devs) return st;
    const cJSON *ranks = get_array(r, root, "ranks", 0, &st);
    if (st != TSR_OK) return st;
    int nh = cJSON_GetArraySize(hosts), nd = cJSON_GetArraySize(devs);
    int nr = ranks ? cJSON_GetArraySize(ranks) : 0;
    if (nh == 0) return FIELD_ERR(r, TSR_ERR_PARSE, "hosts", "empty, at least one host is needed");
    tsr_topology *t;
    TSR_TRY(tsr_topology_alloc(r->ctx, nh, nd, nr, &t));
    st = TSR_OK;
    for (int i = 0; st == TSR_OK && i < nh; i++) {
        snprintf(r->where, sizeof r->where, "hosts[%d]", i);
        st = read_host(r, cJSON_GetArrayItem(hosts, i), &t->hosts[i]);
    }
    for (int i = 0; st == TSR_OK && i < nd; i++) {
        snprintf(r->where, sizeof r->where, "devices[%d]", i);
        st = read_device(r, cJSON_GetArrayItem(devs, i), &t->devices[i]);
    }
    for (int i = 0; st == TSR_OK && i < nr; i++) {
        snprintf(r->where, sizeof r->where, "ranks[%d]", i);
        st = read_rank(r, cJSON_GetArrayItem(ranks, i), &t->ranks[i]);
    }
    if (st == TSR_OK) st = check_links(r, t);
    if (st != TSR_OK) {
        tsr_topology_free(t);
        return st;
    }
    *out = t;
    return TSR_OK;
}

tsr_status tsr_topology_parse(tsr_context *ctx, const char *text, size_t len, tsr_topology **out) {
    if (!out || (!text && len))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_topology_parse: NULL argument");
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text ? text : "", len, &end, 0);
    if (!root) {
        size_t at = end && text && end >= text ? (size_t)(end - text) : 0;
        return tsr_error(ctx, TSR_ERR_PARSE, "topology: JSON syntax error at byte %zu of %zu%s", at,
                         len, at + 1 >= len ? " (truncated?)" : "");
    }
    reader r = {ctx, ""};
    tsr_status st = read_all(&r, root, out);
    cJSON_Delete(root);
    return st;
}

tsr_status tsr_topology_load(tsr_context *ctx, const char *path, tsr_topology **out) {
    if (!path || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_topology_load: NULL argument");
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return tsr_error(ctx, TSR_ERR_IO, "topology file %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = tsr_malloc(ctx, cap);
    tsr_status st = buf ? TSR_OK : tsr_error(ctx, TSR_ERR_NO_MEMORY, "topology file %s", path);
    while (st == TSR_OK) { /* read to the end: works on pipes (/dev/stdin) too */
        if (len == cap) {
            char *grown = cap < ((size_t)64 << 20) ? tsr_malloc(ctx, cap * 2) : NULL;
            if (!grown) {
                st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "topology file %s: larger than %zu bytes",
                               path, cap);
                break;
            }
            memcpy(grown, buf, len);
            tsr_free(ctx, buf);
            buf = grown;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                st = tsr_error(ctx, TSR_ERR_IO, "reading topology file %s: %s", path,
                               strerror(errno));
            break;
        }
    }
    fclose(f);
    if (st == TSR_OK) {
        st = tsr_topology_parse(ctx, buf, len, out);
        if (st != TSR_OK) { /* name the file in the detail */
            char detail[sizeof ctx->last_error];
            tsr_strlcpy(detail, tsr_context_last_error(ctx), sizeof detail);
            tsr_error(ctx, st, "%s: %s", path, detail);
        }
    }
    tsr_free(ctx, buf);
    return st;
}

/* ------------------------------------------------------------------ context */

static int same_device(const tsr_device_info *a, const tsr_device_info *b) {
    return a->backend == b->backend && a->platform_index == b->platform_index &&
           a->device_index == b->device_index && strcmp(a->vendor, b->vendor) == 0 &&
           strcmp(a->name, b->name) == 0 && strcmp(a->driver_version, b->driver_version) == 0;
}

tsr_status tsr_context_use_topology(tsr_context *ctx, const tsr_topology *topo) {
    if (!ctx || !topo)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_context_use_topology: NULL argument");
    char me[256];
    tsr_topology_hostname(me, sizeof me);
    tsr_device_info *devs =
        tsr_calloc(ctx, topo->device_count ? (size_t)topo->device_count : 1, sizeof *devs);
    tsr_host_info *hosts = tsr_calloc(ctx, (size_t)topo->host_count, sizeof *hosts);
    tsr_topology *state = NULL;
    if (!devs || !hosts || (!ctx->topology && tsr_topology_alloc(ctx, 0, 0, 0, &state) != TSR_OK)) {
        tsr_free(ctx, devs);
        tsr_free(ctx, hosts);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "devices of a topology");
    }
    if (topo->device_count) memcpy(devs, topo->devices, (size_t)topo->device_count * sizeof *devs);
    memcpy(hosts, topo->hosts, (size_t)topo->host_count * sizeof *hosts);
    for (int i = 0; i < topo->device_count; i++) {
        devs[i].absent = 1;
        if (strcmp(topo->hosts[devs[i].host].hostname, me) != 0) continue;
        for (int j = 0; j < ctx->device_count; j++)
            if (!ctx->devices[j].absent && same_device(&devs[i], &ctx->devices[j]))
                devs[i].absent = 0;
    }
    if (state) ctx->topology = state;
    tsr_free(ctx, ctx->topology->hosts);
    ctx->topology->hosts = hosts;
    ctx->topology->host_count = topo->host_count;
    tsr_free(ctx, ctx->devices);
    ctx->devices = devs;
    ctx->device_count = topo->device_count;
    tsr_log(ctx, TSR_LOG_INFO, "using a topology of %d hosts and %d devices", topo->host_count,
            topo->device_count);
    return TSR_OK;
}
