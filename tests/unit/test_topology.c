/* Topology files (JSON round trip, malformed and contradictory files), CPU masks, rank
 * placement, and contexts that use a file instead of discovery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cJSON.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "backends/backend.h"
#include "lib/core/internal.h"
#include "support/test_util.h"
#include "topology/topology.h"

static tsr_context *new_ctx(void) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL;
    o.cache_dir = "/nonexistent/tessera-test-cache"; /* never read a real cache here */
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    return ctx;
}

/* A heterogeneous plan target: node-a (host CPU + PoCL + 4 GPUs), fpga-node (FPGA + host),
 * six ranks. Every field gets a distinct value so swapped fields show. */
static tsr_topology *sample_topology(tsr_context *ctx) {
    tsr_topology *t;
    assert_int_equal(tsr_topology_alloc(ctx, 2, 8, 6, &t), TSR_OK);
    tsr_host_info *h = t->hosts;
    snprintf(h[0].hostname, sizeof h[0].hostname, "node-a");
    h[0].packages = 2, h[0].numa_nodes = 2, h[0].cores = 16, h[0].pus = 32;
    h[0].memory_bytes = 512ull << 30;
    snprintf(h[0].cpuset, sizeof h[0].cpuset, "0-31");
    snprintf(h[1].hostname, sizeof h[1].hostname, "fpga-node");
    h[1].packages = 1, h[1].numa_nodes = 1, h[1].cores = 8, h[1].pus = 8;
    h[1].memory_bytes = 64ull << 30;
    snprintf(h[1].cpuset, sizeof h[1].cpuset, "0-7");
    static const char *gpu_bus[4] = {"0000:17:00.0", "0000:65:00.0", "0000:ca:00.0",
                                     "0000:e3:00.0"};
    static const char *gpu_cpus[4] = {"0-7,16-23", "0-7,16-23", "8-15,24-31", "8-15,24-31"};
    for (int i = 0; i < 8; i++) {
        tsr_device_info *d = &t->devices[i];
        d->host = i < 6 ? 0 : 1;
        d->platform_index = -1;
        d->device_index = -1;
        d->same_as = -1;
        d->usable = 1;
        d->numa_node = -1;
        d->compute_units = 10 + (unsigned)i;
        d->clock_mhz = 1000 + 10 * (unsigned)i;
        d->global_mem_bytes = (80ull << 30) + (uint64_t)i;
        d->local_mem_bytes = 49152 + (uint64_t)i;
        d->max_alloc_bytes = (20ull << 30) + (uint64_t)i;
        d->fp64 = i % 2;
        d->fp16 = (i / 2) % 2;
        d->peak_gflops = 1000.5 * (i + 1);
        d->mem_bw_gbps = 100.25 + i + 1.0 / 3.0; /* needs 17 digits to read back exactly */
        d->h2d_gbps = 0.1 * i + 1.0 / 7.0;
        d->d2h_gbps = 21.0625 + i;
        d->launch_us = 9.5 + i;
        snprintf(d->vendor, sizeof d->vendor, "vendor %d", i);
        snprintf(d->driver_version, sizeof d->driver_version, "drv %d.%d", i, i * 3);
    }
    tsr_device_info *d = t->devices;
    /* node-a: host CPU and its PoCL twin */
    snprintf(d[0].id, sizeof d[0].id, "host");
    d[0].kind = TSR_DEVICE_HOST, d[0].backend = TSR_BACKEND_HOST, d[0].same_as = 1,
    d[0].gemm_gflops = 40;
    snprintf(d[0].name, sizeof d[0].name, "Xeon");
    snprintf(d[0].cpuset, sizeof d[0].cpuset, "0-31");
    snprintf(d[1].id, sizeof d[1].id, "opencl:0:0");
    d[1].kind = TSR_DEVICE_CPU, d[1].backend = TSR_BACKEND_OPENCL, d[1].same_as = 0,
    d[1].gemm_gflops = 2;
    d[1].platform_index = 0, d[1].device_index = 0, d[1].usable = 0;
    snprintf(d[1].name, sizeof d[1].name, "pthread-Xeon");
    snprintf(d[1].platform, sizeof d[1].platform, "Portable Computing Language");
    for (int g = 0; g < 4; g++) {
        tsr_device_info *x = &d[2 + g];
        snprintf(x->id, sizeof x->id, "opencl:1:%d", g);
        x->kind = TSR_DEVICE_GPU, x->backend = TSR_BACKEND_OPENCL;
        x->platform_index = 1, x->device_index = g;
        snprintf(x->name, sizeof x->name, "NVIDIA H100 80GB HBM3");
        snprintf(x->platform, sizeof x->platform, "NVIDIA CUDA");
        snprintf(x->pci_bus_id, sizeof x->pci_bus_id, "%s", gpu_bus[g]);
        snprintf(x->cpuset, sizeof x->cpuset, "%s", gpu_cpus[g]);
        x->numa_node = g / 2;
        x->peak_gflops = 60000 + g;
        x->gemm_gflops = g == 3 ? 0 : 30000 + 1000 * (g == 1) - 1000 * (g == 2);
        if (g < 3) {
            x->gemm_points = 3;
            for (int k = 0; k < 3; k++) {
                x->gemm_n[k] = 256u << (2 * k);
                x->gemm_gflops_n[k] = x->gemm_gflops / (3 - k) + 0.375;
            }
        }
    }
    /* fpga-node */
    snprintf(d[6].id, sizeof d[6].id, "opencl:0:0");
    d[6].kind = TSR_DEVICE_ACCELERATOR, d[6].backend = TSR_BACKEND_OPENCL, d[6].gemm_gflops = 500;
    d[6].platform_index = 0, d[6].device_index = 0, d[6].numa_node = 0;
    snprintf(d[6].name, sizeof d[6].name, "Agilex FPGA");
    snprintf(d[6].pci_bus_id, sizeof d[6].pci_bus_id, "0000:3b:00.1");
    snprintf(d[6].cpuset, sizeof d[6].cpuset, "0-7");
    snprintf(d[7].id, sizeof d[7].id, "host");
    d[7].kind = TSR_DEVICE_HOST, d[7].backend = TSR_BACKEND_HOST, d[7].gemm_gflops = 60;
    snprintf(d[7].name, sizeof d[7].name, "EPYC");
    for (int r = 0; r < 6; r++) {
        tsr_rank_info *k = &t->ranks[r];
        k->rank = r;
        k->host = r < 4 ? 0 : 1;
        k->local_rank = r < 4 ? r : r - 4;
        k->local_size = r < 4 ? 4 : 2;
        k->device = -1;
    }
    return t;
}

static void assert_device_equal(const tsr_device_info *a, const tsr_device_info *b) {
    assert_string_equal(a->id, b->id);
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->backend, b->backend);
    assert_string_equal(a->vendor, b->vendor);
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->driver_version, b->driver_version);
    assert_string_equal(a->platform, b->platform);
    assert_int_equal(a->platform_index, b->platform_index);
    assert_int_equal(a->device_index, b->device_index);
    assert_int_equal(a->compute_units, b->compute_units);
    assert_int_equal(a->clock_mhz, b->clock_mhz);
    assert_true(a->global_mem_bytes == b->global_mem_bytes);
    assert_true(a->local_mem_bytes == b->local_mem_bytes);
    assert_true(a->max_alloc_bytes == b->max_alloc_bytes);
    assert_int_equal(a->fp64, b->fp64);
    assert_int_equal(a->fp16, b->fp16);
    assert_string_equal(a->pci_bus_id, b->pci_bus_id);
    assert_int_equal(a->numa_node, b->numa_node);
    assert_string_equal(a->cpuset, b->cpuset);
    assert_true(a->peak_gflops == b->peak_gflops);
    assert_true(a->gemm_gflops == b->gemm_gflops);
    assert_true(a->mem_bw_gbps == b->mem_bw_gbps);
    assert_true(a->h2d_gbps == b->h2d_gbps);
    assert_true(a->d2h_gbps == b->d2h_gbps);
    assert_true(a->launch_us == b->launch_us);
    assert_int_equal(a->same_as, b->same_as);
    assert_int_equal(a->usable, b->usable);
    assert_int_equal(a->host, b->host);
    assert_int_equal(a->gemm_points, b->gemm_points);
    for (int k = 0; k < a->gemm_points; k++) {
        assert_int_equal(a->gemm_n[k], b->gemm_n[k]);
        assert_true(a->gemm_gflops_n[k] == b->gemm_gflops_n[k]);
    }
}

static void assert_topology_equal(const tsr_topology *a, const tsr_topology *b) {
    assert_int_equal(tsr_topology_host_count(a), tsr_topology_host_count(b));
    assert_int_equal(tsr_topology_device_count(a), tsr_topology_device_count(b));
    assert_int_equal(tsr_topology_rank_count(a), tsr_topology_rank_count(b));
    for (int i = 0; i < tsr_topology_host_count(a); i++) {
        const tsr_host_info *x = tsr_topology_host(a, i), *y = tsr_topology_host(b, i);
        assert_string_equal(x->hostname, y->hostname);
        assert_int_equal(x->packages, y->packages);
        assert_int_equal(x->numa_nodes, y->numa_nodes);
        assert_int_equal(x->cores, y->cores);
        assert_int_equal(x->pus, y->pus);
        assert_true(x->memory_bytes == y->memory_bytes);
        assert_string_equal(x->cpuset, y->cpuset);
    }
    for (int i = 0; i < tsr_topology_device_count(a); i++)
        assert_device_equal(tsr_topology_device(a, i), tsr_topology_device(b, i));
    for (int i = 0; i < tsr_topology_rank_count(a); i++) {
        const tsr_rank_info *x = tsr_topology_rank(a, i), *y = tsr_topology_rank(b, i);
        assert_int_equal(x->rank, y->rank);
        assert_int_equal(x->local_rank, y->local_rank);
        assert_int_equal(x->local_size, y->local_size);
        assert_int_equal(x->host, y->host);
        assert_int_equal(x->device, y->device);
        assert_string_equal(x->cpuset, y->cpuset);
    }
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/tsr-test-topology-%ld-%s", (long)getpid(), name);
}

static void test_round_trip(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_topology *t = sample_topology(ctx);
    assert_int_equal(tsr_topology_assign_ranks(t), TSR_OK);
    char path[256];
    tmp_path(path, sizeof path, "rt.json");
    assert_int_equal(tsr_topology_save(t, path), TSR_OK);
    tsr_topology *back = NULL;
    assert_int_equal(tsr_topology_load(ctx, path, &back), TSR_OK);
    assert_topology_equal(t, back);
    /* text in memory, compact form */
    char *text = tsr_topology_to_json(back, 0);
    assert_non_null(text);
    tsr_topology *again = NULL;
    assert_int_equal(tsr_topology_parse(ctx, text, strlen(text), &again), TSR_OK);
    assert_topology_equal(t, again);
    free(text);
    tsr_topology_free(again);
    tsr_topology_free(back);
    /* this machine's description round-trips too */
    tsr_topology *here = NULL;
    assert_int_equal(tsr_topology_from_context(ctx, &here), TSR_OK);
    assert_int_equal(tsr_topology_host_count(here), 1);
    assert_int_equal(tsr_topology_device_count(here), tsr_context_device_count(ctx));
    assert_int_equal(tsr_topology_save(here, path), TSR_OK);
    assert_int_equal(tsr_topology_load(ctx, path, &back), TSR_OK);
    assert_topology_equal(here, back);
    tsr_topology_free(back);
    tsr_topology_free(here);
    remove(path);
    /* failed saves name the target and the step, and leave no temp file */
    char missing[300], folder[256];
    snprintf(missing, sizeof missing, "/tmp/tsr-test-topology-%ld-none/t.json", (long)getpid());
    assert_int_equal(tsr_topology_save(t, missing), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(ctx), missing));
    assert_non_null(strstr(tsr_context_last_error(ctx), "cannot create temp file"));
    tmp_path(folder, sizeof folder, "folder.json");
    assert_int_equal(mkdir(folder, 0755), 0);
    assert_int_equal(tsr_topology_save(t, folder), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(ctx), "rename of temp file"));
    assert_int_equal(rmdir(folder), 0);
    char pattern[300];
    snprintf(pattern, sizeof pattern, "/tmp/tsr-test-topology-%ld-*.tmp.*", (long)getpid());
    glob_t g;
    assert_int_equal(glob(pattern, 0, NULL, &g), GLOB_NOMATCH);
    tsr_topology_free(t);
    /* accessors out of range */
    assert_null(tsr_topology_device(NULL, 0));
    assert_int_equal(tsr_topology_device_count(NULL), 0);
    tsr_topology_free(NULL);
    tsr_context_free(ctx);
}

/* ---- malformed files: one mutation of the sample each, with the field the error must name ---- */

static cJSON *item(cJSON *root, const char *array, int index) {
    cJSON *a = cJSON_GetObjectItemCaseSensitive(root, array);
    assert_non_null(a);
    cJSON *o = cJSON_GetArrayItem(a, index);
    assert_non_null(o);
    return o;
}
static void set(cJSON *o, const char *key, cJSON *value) {
    assert_non_null(value);
    if (cJSON_GetObjectItemCaseSensitive(o, key))
        cJSON_ReplaceItemInObjectCaseSensitive(o, key, value);
    else
        cJSON_AddItemToObject(o, key, value);
}
static void set_dev(cJSON *r, int i, const char *key, cJSON *v) {
    set(item(r, "devices", i), key, v);
}
static void set_host(cJSON *r, int i, const char *key, cJSON *v) {
    set(item(r, "hosts", i), key, v);
}
static void set_rank(cJSON *r, int i, const char *key, cJSON *v) {
    set(item(r, "ranks", i), key, v);
}
static cJSON *cap(cJSON *r, int i) {
    return cJSON_GetObjectItemCaseSensitive(item(r, "devices", i), "capability");
}

typedef struct bad_case {
    const char *what;
    tsr_status status;
    const char *expect; /* substring of the error detail */
} bad_case;

static void apply(cJSON *r, int which) {
    char long_name[300];
    switch (which) {
    case 0: set_dev(r, 2, "global_mem_bytes", cJSON_CreateNumber(-5)); break;
    case 1: set_dev(r, 2, "global_mem_bytes", cJSON_CreateNumber(1.5)); break;
    case 2: set_dev(r, 2, "global_mem_bytes", cJSON_CreateString("lots")); break;
    case 3: set_dev(r, 3, "compute_units", cJSON_CreateNumber(1099511627776.0)); break;
    case 4: cJSON_DeleteItemFromObject(item(r, "devices", 1), "name"); break;
    case 5: cJSON_DeleteItemFromObject(item(r, "devices", 1), "id"); break;
    case 6: set_dev(r, 0, "kind", cJSON_CreateString("tpu")); break;
    case 7: set_dev(r, 0, "backend", cJSON_CreateString("cuda")); break;
    case 8: set_dev(r, 4, "fp64", cJSON_CreateNumber(1)); break;
    case 9: set_dev(r, 4, "pci_bus_id", cJSON_CreateString("65:00")); break;
    case 10: set_dev(r, 4, "cpuset", cJSON_CreateString("0-")); break;
    case 11: set_dev(r, 4, "numa_node", cJSON_CreateNumber(-2)); break;
    case 12: set(cap(r, 5), "gemm_gflops", cJSON_CreateNumber(-1)); break;
    case 13: set_dev(r, 5, "capability", cJSON_CreateNumber(3)); break;
    case 14:
        set(cJSON_GetArrayItem(cJSON_GetObjectItem(cap(r, 2), "gemm"), 1), "n",
            cJSON_CreateString("x"));
        break;
    case 15:
        memset(long_name, 'x', sizeof long_name - 1);
        long_name[sizeof long_name - 1] = '\0';
        set_dev(r, 5, "name", cJSON_CreateString(long_name));
        break;
    case 16: set(r, "devices", cJSON_CreateObject()); break;
    case 17:
        cJSON_ReplaceItemInArray(cJSON_GetObjectItem(r, "devices"), 3, cJSON_CreateNumber(7));
        break;
    case 18: cJSON_DeleteItemFromObject(r, "hosts"); break;
    case 19: set(r, "hosts", cJSON_CreateArray()); break;
    case 20: set_host(r, 1, "pus", cJSON_CreateNumber(0)); break;
    case 21: cJSON_DeleteItemFromObject(item(r, "hosts", 0), "hostname"); break;
    case 22: set(r, "version", cJSON_CreateNumber(2)); break;
    case 23: set(r, "format", cJSON_CreateString("something-else")); break;
    case 24: set_rank(r, 5, "local_rank", cJSON_CreateNumber(9)); break;
    case 25: set_dev(r, 1, "same_as", cJSON_CreateNumber(12)); break;
    case 26: set_dev(r, 1, "same_as", cJSON_CreateNumber(1)); break;
    case 27: set_dev(r, 2, "same_as", cJSON_CreateNumber(0)); break;
    case 28: /* the host CPU of node-a paired with the host CPU of fpga-node */
        set_dev(r, 0, "same_as", cJSON_CreateNumber(7));
        set_dev(r, 7, "same_as", cJSON_CreateNumber(0));
        set_dev(r, 1, "same_as", cJSON_CreateNumber(-1));
        break;
    case 29: set_dev(r, 6, "host", cJSON_CreateNumber(5)); break;
    case 30: set_dev(r, 2, "max_alloc_bytes", cJSON_CreateNumber(200.0 * (1ull << 30))); break;
    case 31: set_dev(r, 0, "kind", cJSON_CreateString("gpu")); break;
    case 32: set_dev(r, 3, "id", cJSON_CreateString("opencl:1:0")); break;
    case 33: set_rank(r, 2, "device", cJSON_CreateNumber(6)); break;
    case 34: set_rank(r, 0, "rank", cJSON_CreateNumber(3)); break;
    case 35: set_rank(r, 0, "device", cJSON_CreateNumber(99)); break;
    case 36: set(r, "ranks", cJSON_CreateString("none")); break;
    case 37: set_host(r, 0, "cores", cJSON_CreateNumber(64)); break;
    case 38: cJSON_DeleteItemFromObject(item(r, "devices", 4), "global_mem_bytes"); break;
    case 39: set_dev(r, 3, "usable", cJSON_CreateString("yes")); break;
    case 40:
        cJSON_DeleteItemFromObject(cJSON_GetArrayItem(cJSON_GetObjectItem(cap(r, 2), "gemm"), 0),
                                   "gflops");
        break;
    }
}

static const bad_case bad_cases[] = {
    {"negative size", TSR_ERR_PARSE,
     "devices[2].global_mem_bytes: expected a non-negative integer"},
    {"fractional size", TSR_ERR_PARSE,
     "devices[2].global_mem_bytes: expected a non-negative integer"},
    {"string size", TSR_ERR_PARSE, "devices[2].global_mem_bytes: expected a non-negative integer"},
    {"huge CU count", TSR_ERR_PARSE,
     "devices[3].compute_units: expected a non-negative integer below 2^32"},
    {"missing name", TSR_ERR_PARSE, "devices[1].name: missing"},
    {"missing id", TSR_ERR_PARSE, "devices[1].id: missing"},
    {"unknown kind", TSR_ERR_PARSE, "devices[0].kind: \"tpu\" is not one of"},
    {"unknown backend", TSR_ERR_PARSE, "devices[0].backend: \"cuda\" is not one of"},
    {"number for bool", TSR_ERR_PARSE, "devices[4].fp64: expected true or false"},
    {"bad bus id", TSR_ERR_PARSE, "devices[4].pci_bus_id: \"65:00\" is not a bus id"},
    {"bad cpuset", TSR_ERR_PARSE, "devices[4].cpuset: \"0-\" is not a CPU list"},
    {"numa below -1", TSR_ERR_PARSE, "devices[4].numa_node: expected an integer >= -1"},
    {"negative rate", TSR_ERR_PARSE,
     "devices[5].capability.gemm_gflops: expected a non-negative number"},
    {"capability not object", TSR_ERR_PARSE, "devices[5].capability: expected an object"},
    {"gemm size string", TSR_ERR_PARSE,
     "devices[2].capability.gemm[1].n: expected a non-negative integer"},
    {"name too long", TSR_ERR_PARSE, "devices[5].name: longer than 127 characters"},
    {"devices not array", TSR_ERR_PARSE, "devices: expected an array"},
    {"device not object", TSR_ERR_PARSE, "devices[3]: expected an object"},
    {"no hosts", TSR_ERR_PARSE, "hosts: missing"},
    {"empty hosts", TSR_ERR_PARSE, "hosts: empty"},
    {"zero PUs", TSR_ERR_PARSE, "hosts[1].pus: expected an integer >= 1"},
    {"no hostname", TSR_ERR_PARSE, "hosts[0].hostname: missing"},
    {"future version", TSR_ERR_PARSE, "version: 2 is not supported"},
    {"other format", TSR_ERR_PARSE, "format: \"something-else\""},
    {"local rank past size", TSR_ERR_CORRUPT, "ranks[5].local_rank: 9 is not below local_size 2"},
    {"same_as out of range", TSR_ERR_CORRUPT, "devices[1].same_as: 12 out of range"},
    {"same_as itself", TSR_ERR_CORRUPT, "devices[1].same_as: 1 is the device itself"},
    {"same_as one way", TSR_ERR_CORRUPT, "devices[2].same_as: 0, but devices[0].same_as is 1"},
    {"same_as across hosts", TSR_ERR_CORRUPT, "devices[0].same_as: 7 is on another host"},
    {"host out of range", TSR_ERR_CORRUPT, "devices[6].host: 5 out of range"},
    {"alloc above memory", TSR_ERR_CORRUPT, "devices[2].max_alloc_bytes"},
    {"kind against backend", TSR_ERR_CORRUPT,
     "devices[0].kind: \"gpu\" contradicts backend \"host\""},
    {"duplicate id", TSR_ERR_CORRUPT, "devices[3].id: \"opencl:1:0\" repeats devices[2]"},
    {"rank on other host's device", TSR_ERR_CORRUPT, "ranks[2].device: 6 is on host 1"},
    {"rank out of order", TSR_ERR_CORRUPT, "ranks[0].rank: 3 at position 0"},
    {"rank device out of range", TSR_ERR_CORRUPT, "ranks[0].device: 99 out of range"},
    {"ranks not array", TSR_ERR_PARSE, "ranks: expected an array"},
    {"more cores than PUs", TSR_ERR_CORRUPT, "hosts[0].pus: 32 PUs are fewer than its 64 cores"},
    {"missing memory", TSR_ERR_PARSE, "devices[4].global_mem_bytes: missing"},
    {"string for bool", TSR_ERR_PARSE, "devices[3].usable: expected true or false"},
    {"gemm point without rate", TSR_ERR_PARSE, "devices[2].capability.gemm[0].gflops: missing"},
};

static void test_malformed_fields(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_topology *t = sample_topology(ctx);
    assert_int_equal(tsr_topology_assign_ranks(t), TSR_OK);
    char *good = tsr_topology_to_json(t, 0);
    assert_non_null(good);
    tsr_topology *out = NULL;
    assert_int_equal(tsr_topology_parse(ctx, good, strlen(good), &out),
                     TSR_OK); /* the baseline is valid */
    tsr_topology_free(out);
    for (size_t c = 0; c < TSR_ARRAY_SIZE(bad_cases); c++) {
        cJSON *root = cJSON_Parse(good);
        assert_non_null(root);
        apply(root, (int)c);
        char *text = cJSON_PrintUnformatted(root);
        cJSON_Delete(root);
        out = (tsr_topology *)0x1;
        tsr_status st = tsr_topology_parse(ctx, text, strlen(text), &out);
        if (st != bad_cases[c].status || !strstr(tsr_context_last_error(ctx), bad_cases[c].expect))
            fail_msg("case %zu (%s): got %s \"%s\", want %s \"%s\"", c, bad_cases[c].what,
                     tsr_status_name(st), tsr_context_last_error(ctx),
                     tsr_status_name(bad_cases[c].status), bad_cases[c].expect);
        assert_null(out);
        free(text);
    }
    /* not an object at all */
    assert_int_equal(tsr_topology_parse(ctx, "[1,2]", 5, &out), TSR_ERR_PARSE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "topology: expected a JSON object"));
    free(good);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* Every prefix of a valid file is rejected as a syntax error (and nothing leaks). */
static void test_truncated(void **state) {
    (void)state;
    tsr_test_alloc counter;
    tsr_test_alloc_init(&counter, 0);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL;
    o.allocator = &counter.allocator;
    o.cache_dir = "/nonexistent/tessera-test-cache";
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    tsr_topology *t = sample_topology(ctx);
    char *text = tsr_topology_to_json(t, 1);
    size_t len = strlen(text);
    for (size_t cut = 0; cut < len; cut++) {
        tsr_topology *out = (tsr_topology *)0x1;
        tsr_status st = tsr_topology_parse(ctx, text, cut, &out);
        /* a prefix that ends right after the closing brace would be valid: there is none */
        if (st != TSR_ERR_PARSE || !strstr(tsr_context_last_error(ctx), "JSON syntax error"))
            fail_msg("prefix of %zu bytes: %s \"%s\"", cut, tsr_status_name(st),
                     tsr_context_last_error(ctx));
        assert_null(out);
    }
    /* through a file, the detail names it */
    char path[256];
    tmp_path(path, sizeof path, "cut.json");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fwrite(text, 1, len / 2, f);
    fclose(f);
    tsr_topology *out;
    assert_int_equal(tsr_topology_load(ctx, path, &out), TSR_ERR_PARSE);
    assert_non_null(strstr(tsr_context_last_error(ctx), path));
    assert_non_null(strstr(tsr_context_last_error(ctx), "truncated"));
    remove(path);
    assert_int_equal(tsr_topology_load(ctx, path, &out), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(ctx), path));
    free(text);
    tsr_topology_free(t);
    tsr_context_free(ctx);
    assert_int_equal(counter.live, 0);
}

/* Allocation failures while reading give NO_MEMORY and leak nothing. */
static void test_load_allocation_failures(void **state) {
    (void)state;
    tsr_context *plain = new_ctx();
    tsr_topology *t = sample_topology(plain);
    char path[256];
    tmp_path(path, sizeof path, "alloc.json");
    assert_int_equal(tsr_topology_save(t, path), TSR_OK);
    tsr_topology_free(t);
    tsr_context_free(plain);
    for (long k = 1;; k++) {
        tsr_test_alloc a;
        tsr_test_alloc_init(&a, 0);
        tsr_context_options o;
        tsr_context_options_init(&o);
        o.flags = TSR_CONTEXT_NO_OPENCL;
        o.allocator = &a.allocator;
        o.cache_dir = "/nonexistent/tessera-test-cache";
        tsr_context *ctx;
        assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
        a.fail_at = a.calls + k;
        tsr_topology *out = NULL;
        tsr_status st = tsr_topology_load(ctx, path, &out);
        a.fail_at = 0;
        tsr_topology_free(out);
        tsr_context_free(ctx);
        assert_int_equal(a.live, 0);
        if (st == TSR_OK) break;
        assert_int_equal(st, TSR_ERR_NO_MEMORY);
        assert_true(k < 50);
    }
    remove(path);
}

/* ---- CPU masks and the split of a locality among ranks ---- */

static void test_cpumask(void **state) {
    (void)state;
    tsr_cpumask m;
    char buf[512];
    assert_int_equal(tsr_cpumask_parse("0-3,8,10-11", &m), 0);
    assert_int_equal(tsr_cpumask_count(&m), 7);
    tsr_cpumask_format(&m, buf, sizeof buf);
    assert_string_equal(buf, "0-3,8,10-11");
    assert_int_equal(tsr_cpumask_parse("", &m), 0);
    assert_int_equal(tsr_cpumask_count(&m), 0);
    static const char *bad[] = {"1-", "a", "3-1", "1,,2", "2000", "-1", "1 2", "0-1024"};
    for (size_t i = 0; i < TSR_ARRAY_SIZE(bad); i++)
        assert_int_equal(tsr_cpumask_parse(bad[i], &m), -1);
    /* random masks survive format + parse */
    uint64_t s = 88172645463325252ull;
    for (int iter = 0; iter < 200; iter++) {
        tsr_cpumask a, b;
        memset(&a, 0, sizeof a);
        for (int c = 0; c < 256; c++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            if ((s >> 60) < (uint64_t)(iter % 16)) tsr_cpumask_set(&a, (unsigned)c);
        }
        char text[2048];
        tsr_cpumask_format(&a, text, sizeof text);
        assert_int_equal(tsr_cpumask_parse(text, &b), 0);
        assert_memory_equal(&a, &b, sizeof a);
    }
}

static void test_split_cpus(void **state) {
    (void)state;
    /* cores of 1, 2 or 4 PUs in two numberings (siblings adjacent, or n apart as on Linux) */
    for (int threads = 1; threads <= 4; threads *= 2)
        for (int linux_order = 0; linux_order < 2; linux_order++)
            for (int ncores = 1; ncores <= 12; ncores++) {
                tsr_cpumask cores[12];
                for (int c = 0; c < ncores; c++) {
                    memset(&cores[c], 0, sizeof cores[c]);
                    for (int t = 0; t < threads; t++)
                        tsr_cpumask_set(&cores[c],
                                        (unsigned)(linux_order ? c + t * ncores : c * threads + t));
                }
                /* near: all, or every other core's PUs */
                for (int sub = 0; sub < 2; sub++) {
                    tsr_cpumask near;
                    memset(&near, 0, sizeof near);
                    int nin = 0;
                    for (int c = 0; c < ncores; c++)
                        if (!sub || c % 2 == 0) {
                            nin++;
                            for (int w = 0; w < TSR_CPUMASK_WORDS; w++)
                                near.bits[w] |= cores[c].bits[w];
                        }
                    for (int k = 1; k <= 6; k++) {
                        tsr_cpumask seen;
                        memset(&seen, 0, sizeof seen);
                        int total = 0;
                        for (int i = 0; i < k; i++) {
                            tsr_cpumask out;
                            tsr_topology_split_cpus(cores, ncores, &near, k, i, &out);
                            int n = tsr_cpumask_count(&out);
                            assert_true(n > 0);
                            for (int w = 0; w < TSR_CPUMASK_WORDS; w++) {
                                assert_true((out.bits[w] & ~near.bits[w]) ==
                                            0); /* inside the locality */
                                if (nin >= k)
                                    assert_true((out.bits[w] & seen.bits[w]) == 0); /* disjoint */
                                seen.bits[w] |= out.bits[w];
                            }
                            /* whole cores: a core is in or out */
                            int whole = 0;
                            for (int c = 0; c < ncores; c++) {
                                int in = 0, all = 1;
                                for (int w = 0; w < TSR_CPUMASK_WORDS; w++) {
                                    uint64_t x = cores[c].bits[w] & near.bits[w];
                                    in |= (out.bits[w] & x) != 0;
                                    all &= (out.bits[w] & x) == x;
                                }
                                if (in) {
                                    assert_true(all);
                                    whole++;
                                }
                            }
                            /* balanced: floor or ceil of nin/k cores, one core when ranks outnumber
                             * them */
                            if (nin >= k)
                                assert_true(whole == nin / k || whole == (nin + k - 1) / k);
                            else
                                assert_int_equal(whole, 1);
                            total += whole;
                        }
                        assert_memory_equal(&seen, &near, sizeof near); /* everything used */
                        if (nin >= k) assert_int_equal(total, nin);
                    }
                }
            }
}

/* ---- rank placement ---- */

/* measured rates when every candidate of the host is measured, else peaks (rate when no peak) */
static double ref_score(const tsr_device_info *d, int all_measured) {
    return all_measured || d->peak_gflops <= 0 ? d->gemm_gflops : d->peak_gflops;
}

static void test_assign_ranks(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_topology *t = sample_topology(ctx);
    assert_int_equal(tsr_topology_assign_ranks(t), TSR_OK);
    /* reference: per host, the usable devices minus the slower of a same_as pair, best first */
    for (int h = 0; h < t->host_count; h++) {
        int list[8], n = 0;
        for (int i = 0; i < t->device_count; i++) {
            const tsr_device_info *d = &t->devices[i];
            if (d->host != h || !d->usable) continue;
            if (d->same_as >= 0 && t->devices[d->same_as].usable &&
                t->devices[d->same_as].gemm_gflops > d->gemm_gflops)
                continue;
            list[n++] = i;
        }
        int all_measured = 1;
        for (int a = 0; a < n; a++) all_measured &= t->devices[list[a]].gemm_gflops > 0;
        for (int a = 0; a < n;
             a++) { /* stable selection: the best remaining, lowest index on ties */
            int best = a;
            for (int b = a + 1; b < n; b++)
                if (ref_score(&t->devices[list[b]], all_measured) >
                    ref_score(&t->devices[list[best]], all_measured))
                    best = b;
            int x = list[best];
            memmove(&list[a + 1], &list[a], (size_t)(best - a) * sizeof list[0]);
            list[a] = x;
        }
        for (int r = 0; r < t->rank_count; r++) {
            const tsr_rank_info *k = &t->ranks[r];
            if (k->host != h) continue;
            assert_true(n > 0);
            assert_int_equal(k->device, list[k->local_rank % n]);
        }
    }
    /* node-a: 4 ranks, 4 GPUs -> one each; the unmeasured GPU counts by its peak */
    for (int r = 0; r < 4; r++)
        assert_int_equal(t->devices[t->ranks[r].device].kind, TSR_DEVICE_GPU);
    for (int r = 0; r < 4; r++)
        for (int q = 0; q < r; q++) assert_int_not_equal(t->ranks[r].device, t->ranks[q].device);
    /* two GPUs share each NUMA node: their ranks split its CPUs */
    for (int r = 0; r < 4; r++) {
        tsr_cpumask mine, near, other;
        assert_int_equal(tsr_cpumask_parse(t->ranks[r].cpuset, &mine), 0);
        assert_int_equal(tsr_cpumask_parse(t->devices[t->ranks[r].device].cpuset, &near), 0);
        assert_int_equal(tsr_cpumask_count(&mine), 8);
        for (int w = 0; w < TSR_CPUMASK_WORDS; w++)
            assert_true((mine.bits[w] & ~near.bits[w]) == 0);
        for (int q = 0; q < 4; q++) {
            if (q == r) continue;
            assert_int_equal(tsr_cpumask_parse(t->ranks[q].cpuset, &other), 0);
            for (int w = 0; w < TSR_CPUMASK_WORDS; w++)
                assert_true((mine.bits[w] & other.bits[w]) == 0);
        }
    }
    /* fpga-node: FPGA (500) before the host CPU (60) */
    assert_int_equal(t->ranks[4].device, 6);
    assert_int_equal(t->ranks[5].device, 7);
    /* more ranks than devices: they share, CPUs still split */
    t->devices[2].usable = t->devices[3].usable = t->devices[4].usable = t->devices[5].usable = 0;
    assert_int_equal(tsr_topology_assign_ranks(t), TSR_OK);
    for (int r = 0; r < 4; r++)
        assert_int_equal(t->ranks[r].device, 0); /* host beats its PoCL twin */
    for (int r = 0; r < 4; r++) {
        tsr_cpumask m;
        assert_int_equal(tsr_cpumask_parse(t->ranks[r].cpuset, &m), 0);
        assert_int_equal(tsr_cpumask_count(&m), 8);
    }
    /* no usable device on a host */
    t->devices[0].usable = 0;
    assert_int_equal(tsr_topology_assign_ranks(t), TSR_OK);
    for (int r = 0; r < 4; r++) assert_int_equal(t->ranks[r].device, -1);
    t->ranks[1].host = 9;
    assert_int_equal(tsr_topology_assign_ranks(t), TSR_ERR_CORRUPT);
    assert_non_null(strstr(tsr_context_last_error(ctx), "ranks[1].host"));
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

static void test_pairing(void **state) {
    (void)state;
    tsr_device_info d[3];
    for (int faster_host = 0; faster_host < 2; faster_host++) {
        memset(d, 0, sizeof d);
        d[0].kind = TSR_DEVICE_HOST, d[1].kind = TSR_DEVICE_GPU, d[2].kind = TSR_DEVICE_CPU;
        for (int i = 0; i < 3; i++) d[i].same_as = -1, d[i].usable = 1;
        tsr_topology_pair_devices(d, 3);
        assert_int_equal(d[0].same_as, 2);
        assert_int_equal(d[2].same_as, 0);
        assert_int_equal(d[1].same_as, -1);
        assert_true(d[0].usable && d[2].usable); /* not measured: both stay */
        d[0].gemm_gflops = faster_host ? 30 : 3;
        d[2].gemm_gflops = faster_host ? 2 : 20;
        tsr_topology_pair_devices(d, 3);
        assert_int_equal(d[0].usable, faster_host);
        assert_int_equal(d[2].usable, !faster_host);
        assert_int_equal(d[1].usable, 1);
    }
}

/* ---- a context that plans with a file ---- */

static void test_context_from_file(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    /* this machine's devices plus four GPUs that are not here */
    tsr_topology *here;
    assert_int_equal(tsr_topology_from_context(ctx, &here), TSR_OK);
    tsr_topology *t;
    int n = here->device_count;
    assert_int_equal(tsr_topology_alloc(ctx, 1, n + 4, 0, &t), TSR_OK);
    t->hosts[0] = here->hosts[0];
    memcpy(t->devices, here->devices, (size_t)n * sizeof *t->devices);
    for (int g = 0; g < 4; g++) {
        tsr_device_info *x = &t->devices[n + g];
        memset(x, 0, sizeof *x);
        snprintf(x->id, sizeof x->id, "opencl:7:%d", g);
        snprintf(x->name, sizeof x->name, "far away GPU");
        x->kind = TSR_DEVICE_GPU, x->backend = TSR_BACKEND_OPENCL;
        x->platform_index = 7, x->device_index = g, x->same_as = -1, x->numa_node = -1,
        x->usable = 1;
        x->compute_units = 132, x->clock_mhz = 1980, x->global_mem_bytes = 80ull << 30;
        x->peak_gflops = 66.9e3;
    }
    char path[256];
    tmp_path(path, sizeof path, "plan.json");
    assert_int_equal(tsr_topology_save(t, path), TSR_OK);
    setenv("TSR_TOPOLOGY", path, 1);
    tsr_context *plan = new_ctx();
    assert_int_equal(tsr_context_device_count(plan), n + 4);
    tsr_backend *be = NULL;
    assert_int_equal(tsr_backend_open(plan, 0, &be), TSR_OK); /* the host is here */
    tsr_backend_free(be);
    for (int g = 0; g < 4; g++) {
        const tsr_device_info *x = tsr_context_device(plan, n + g);
        assert_int_equal(x->absent, 1);
        assert_true(x->peak_gflops == 66.9e3);
        assert_int_equal(tsr_backend_open(plan, n + g, &be), TSR_ERR_NO_DEVICE);
        assert_null(be);
        assert_non_null(strstr(tsr_context_last_error(plan), "not present on this machine"));
        assert_int_equal(tsr_topology_calibrate_device(plan, n + g, 0), TSR_ERR_NO_DEVICE);
    }
    tsr_context_free(plan);
    /* a file for another machine: nothing can be opened, everything can be planned */
    snprintf(t->hosts[0].hostname, sizeof t->hosts[0].hostname, "not-%.200s",
             here->hosts[0].hostname);
    assert_int_equal(tsr_topology_save(t, path), TSR_OK);
    plan = new_ctx();
    for (int i = 0; i < tsr_context_device_count(plan); i++) {
        assert_int_equal(tsr_context_device(plan, i)->absent, 1);
        assert_int_equal(tsr_backend_open(plan, i, &be), TSR_ERR_NO_DEVICE);
    }
    /* its description is the file's */
    tsr_topology *desc;
    assert_int_equal(tsr_topology_from_context(plan, &desc), TSR_OK);
    assert_string_equal(desc->hosts[0].hostname, t->hosts[0].hostname);
    tsr_topology_free(desc);
    tsr_context_free(plan);
    /* a malformed file fails context creation with the field named */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"format\":\"tessera-topology\",\"version\":1,\"hosts\":[{\"hostname\":\"x\",\"cores\":"
          "1,\"pus\":1}],"
          "\"devices\":[{\"id\":\"a\",\"kind\":\"gpu\",\"backend\":\"opencl\",\"name\":\"n\","
          "\"compute_units\":1,"
          "\"clock_mhz\":1,\"global_mem_bytes\":-1}]}",
          f);
    fclose(f);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL;
    tsr_context *bad = (tsr_context *)0x1;
    assert_int_equal(tsr_context_create(&bad, &o), TSR_ERR_PARSE);
    assert_null(bad);
    unsetenv("TSR_TOPOLOGY");
    remove(path);
    tsr_topology_free(t);
    tsr_topology_free(here);
    tsr_context_free(ctx);
}

/* The shipped example (4 H100 + FPGA node, run from the repository root) loads and plans. */
static void test_example_file(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_topology *t = NULL;
    tsr_status st = tsr_topology_load(ctx, "topology/examples/gpu4-fpga.json", &t);
    if (st != TSR_OK) fail_msg("%s: %s", tsr_status_name(st), tsr_context_last_error(ctx));
    assert_int_equal(tsr_topology_host_count(t), 2);
    assert_int_equal(tsr_topology_device_count(t), 7);
    assert_int_equal(tsr_topology_rank_count(t), 6);
    assert_int_equal(tsr_topology_assign_ranks(t), TSR_OK);
    int used[7] = {0};
    for (int r = 0; r < 4; r++) {
        const tsr_rank_info *k = tsr_topology_rank(t, r);
        const tsr_device_info *d = tsr_topology_device(t, k->device);
        assert_non_null(d);
        assert_int_equal(d->kind, TSR_DEVICE_GPU);
        assert_int_equal(used[k->device]++, 0);
        tsr_cpumask mine, near;
        assert_int_equal(tsr_cpumask_parse(k->cpuset, &mine), 0);
        assert_int_equal(tsr_cpumask_parse(d->cpuset, &near), 0);
        assert_int_equal(tsr_cpumask_count(&mine), 32);
        for (int w = 0; w < TSR_CPUMASK_WORDS; w++)
            assert_true((mine.bits[w] & ~near.bits[w]) == 0);
    }
    /* the FPGA node: its two devices, one rank each */
    assert_int_not_equal(t->ranks[4].device, t->ranks[5].device);
    assert_int_equal(t->devices[t->ranks[4].device].host, 1);
    assert_int_equal(t->devices[t->ranks[5].device].host, 1);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),        cmocka_unit_test(test_malformed_fields),
        cmocka_unit_test(test_truncated),         cmocka_unit_test(test_load_allocation_failures),
        cmocka_unit_test(test_cpumask),           cmocka_unit_test(test_split_cpus),
        cmocka_unit_test(test_assign_ranks),      cmocka_unit_test(test_pairing),
        cmocka_unit_test(test_context_from_file), cmocka_unit_test(test_example_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
