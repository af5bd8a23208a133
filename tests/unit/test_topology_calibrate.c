/* Capability measurement of the host backend and its cache: figures written and read back,
 * not measured again unless forced, a corrupt cache measured again with a warning. (PoCL is
 * not measured here: CLBlast's first kernel build alone takes about a minute on PoCL.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/core/internal.h"
#include "support/test_util.h"
#include "topology/topology.h"

static char cache_dir[256];

typedef struct captured {
    int warnings;
    char last[512];
} captured;

static void capture(tsr_log_level level, const char *msg, void *user) {
    captured *c = user;
    /* the host backend's advice about OpenBLAS's kernels (a VM hiding its CPU model) is not
     * about the cache */
    if (level <= TSR_LOG_WARN && !strstr(msg, "OPENBLAS_CORETYPE")) {
        c->warnings++;
        tsr_strlcpy(c->last, msg, sizeof c->last);
    }
}

static tsr_context *new_ctx(captured *cap) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL;
    o.cache_dir = cache_dir;
    o.log_fn = cap ? capture : NULL;
    o.log_user = cap;
    o.log_level = TSR_LOG_WARN;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    return ctx;
}

static void cache_file(char *buf, size_t n) { snprintf(buf, n, "%s/capability.json", cache_dir); }

static void write_cache(const char *text) {
    char path[512];
    cache_file(path, sizeof path);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void assert_measured(const tsr_device_info *d) {
    assert_true(d->gemm_gflops > 0);
    assert_true(d->gemm_points >= 1 && d->gemm_points <= 4);
    double best = 0;
    for (int k = 0; k < d->gemm_points; k++) {
        assert_true(d->gemm_n[k] >= 128);
        assert_true(d->gemm_gflops_n[k] > 0);
        if (d->gemm_gflops_n[k] > best) best = d->gemm_gflops_n[k];
        if (k) assert_int_equal(d->gemm_n[k], 2 * d->gemm_n[k - 1]);
    }
    assert_true(best == d->gemm_gflops);
    assert_true(d->mem_bw_gbps > 0);
    assert_true(d->h2d_gbps > 0);
    assert_true(d->d2h_gbps > 0);
    assert_true(d->launch_us > 0);
}

static void test_measure_and_cache(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx(NULL);
    assert_true(tsr_context_device(ctx, 0)->gemm_gflops == 0); /* nothing cached yet */
    /* what the measurement costs is bounded by what it measures (at most 4 GEMM sizes, checked
     * in assert_measured), not by a wall-clock limit */
    assert_int_equal(tsr_topology_calibrate(ctx, 0), TSR_OK);
    tsr_device_info first = *tsr_context_device(ctx, 0);
    assert_measured(&first);
    /* the cache holds exactly these figures under the device's identity */
    char path[512];
    cache_file(path, sizeof path);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char text[16384];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    cJSON *devs = cJSON_GetObjectItem(root, "devices");
    assert_int_equal(cJSON_GetArraySize(devs), 1);
    cJSON *e = cJSON_GetArrayItem(devs, 0);
    assert_non_null(strstr(e->string, first.name));
    assert_non_null(strstr(e->string, first.driver_version));
    assert_true(cJSON_GetObjectItem(e, "gemm_gflops")->valuedouble == first.gemm_gflops);
    assert_true(cJSON_GetObjectItem(e, "launch_us")->valuedouble == first.launch_us);
    cJSON_Delete(root);
    /* a new context reads them at creation, without measuring */
    tsr_context *again = new_ctx(NULL);
    const tsr_device_info *d = tsr_context_device(again, 0);
    assert_true(d->gemm_gflops == first.gemm_gflops);
    assert_true(d->mem_bw_gbps == first.mem_bw_gbps);
    assert_true(d->h2d_gbps == first.h2d_gbps);
    assert_true(d->d2h_gbps == first.d2h_gbps);
    assert_int_equal(d->gemm_points, first.gemm_points);
    /* calibrate without force keeps them; with force measures anew */
    assert_int_equal(tsr_topology_calibrate_device(again, 0, 0), TSR_OK);
    assert_true(tsr_context_device(again, 0)->launch_us == first.launch_us);
    assert_int_equal(tsr_topology_calibrate_device(again, 0, 1), TSR_OK);
    assert_measured(tsr_context_device(again, 0));
    assert_true(tsr_context_device(again, 0)->gemm_gflops != first.gemm_gflops ||
                tsr_context_device(again, 0)->launch_us != first.launch_us);
    assert_int_equal(tsr_topology_calibrate_device(again, 5, 0), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(again), "device index 5"));
    tsr_context_free(again);
    tsr_context_free(ctx);
}

/* Each kind of damage: the context warns and ignores the cache; calibrate warns, measures
 * again and leaves a good cache. */
static void test_corrupt_cache(void **state) {
    (void)state;
    static const struct {
        const char *text;
        const char *named;
    } damage[] = {
        {"{\"format\":\"tessera-capability\",\"version\":1,\"devices\":{", "not valid JSON"},
        {"\x01\x02garbage", "not valid JSON"},
        {"", "not valid JSON"},
        {"[]", "format"},
        {"{\"format\":\"tessera-capability\",\"version\":7,\"devices\":{}}", "version"},
        {"{\"format\":\"tessera-capability\",\"version\":1,\"devices\":[]}",
         "devices: expected an object"},
        {"{\"format\":\"tessera-capability\",\"version\":1,\"devices\":{\"k\":{\"gemm_gflops\":"
         "\"fast\"}}}",
         "devices[0].capability.gemm_gflops: expected a non-negative number"},
        {"{\"format\":\"tessera-capability\",\"version\":1,\"devices\":{\"k\":5}}",
         "devices[0].capability: expected an object"},
    };
    for (size_t i = 0; i < 1; i++) { /* the whole cycle once: measuring takes a second */
        write_cache(damage[i].text);
        captured cap = {0, ""};
        tsr_context *ctx = new_ctx(&cap);
        assert_int_equal(cap.warnings, 1);
        assert_non_null(strstr(cap.last, "ignoring the capability cache"));
        if (!strstr(cap.last, damage[i].named))
            fail_msg("damage %zu: warning \"%s\" does not name \"%s\"", i, cap.last,
                     damage[i].named);
        assert_true(tsr_context_device(ctx, 0)->gemm_gflops == 0);
        cap.warnings = 0;
        assert_int_equal(tsr_topology_calibrate(ctx, 0), TSR_OK);
        assert_int_equal(cap.warnings, 1);
        assert_non_null(strstr(cap.last, "corrupt, measuring again"));
        assert_measured(tsr_context_device(ctx, 0));
        tsr_context_free(ctx);
        /* repaired: the next context reads it silently */
        cap.warnings = 0;
        ctx = new_ctx(&cap);
        assert_int_equal(cap.warnings, 0);
        assert_true(tsr_context_device(ctx, 0)->gemm_gflops > 0);
        tsr_context_free(ctx);
    }
    for (size_t i = 0; i < TSR_ARRAY_SIZE(damage); i++) { /* every kind of damage is detected */
        write_cache(damage[i].text);
        captured cap = {0, ""};
        tsr_context *ctx = new_ctx(&cap);
        assert_int_equal(cap.warnings, 1);
        if (!strstr(cap.last, damage[i].named))
            fail_msg("damage %zu: warning \"%s\" does not name \"%s\"", i, cap.last,
                     damage[i].named);
        tsr_context_free(ctx);
    }
    /* an unwritable cache dir: figures still measured, a warning, no failure */
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL;
    o.cache_dir = "/proc/tessera-cannot-write-here/x";
    captured cap = {0, ""};
    o.log_fn = capture;
    o.log_user = &cap;
    o.log_level = TSR_LOG_WARN;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    assert_int_equal(tsr_topology_calibrate(ctx, 0), TSR_OK);
    assert_measured(tsr_context_device(ctx, 0));
    assert_int_equal(cap.warnings, 1);
    assert_non_null(strstr(cap.last, "capability cache not written"));
    tsr_context_free(ctx);
}

static int setup(void **state) {
    (void)state;
    snprintf(cache_dir, sizeof cache_dir, "/tmp/tsr-test-calibrate-XXXXXX");
    return mkdtemp(cache_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char path[512];
    cache_file(path, sizeof path);
    remove(path);
    rmdir(cache_dir);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_measure_and_cache),
        cmocka_unit_test(test_corrupt_cache),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
