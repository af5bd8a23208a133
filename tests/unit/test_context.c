/* Context, status strings, logging, allocator hook. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <stdlib.h>
#include "lib/core/internal.h"
#include "support/test_util.h"

static void test_status_strings(void **state) {
    (void)state;
    assert_string_equal(tsr_status_str(TSR_OK), "success");
    assert_string_equal(tsr_status_name(TSR_ERR_SHAPE), "TSR_ERR_SHAPE");
    assert_string_equal(tsr_status_name((tsr_status)-5), "CL_OUT_OF_RESOURCES");
    assert_string_equal(tsr_status_str((tsr_status)-70), "OpenCL error");
    assert_string_equal(tsr_status_str((tsr_status)12345), "unknown status");
    assert_string_equal(tsr_version(), TSR_VERSION_STRING);
}

static void test_create_free(void **state) {
    (void)state;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_context_create(&ctx, NULL), TSR_OK);
    assert_non_null(ctx);
    assert_true(tsr_context_device_count(ctx) >= 1);
    const tsr_device_info *host = tsr_context_device(ctx, 0);
    assert_string_equal(host->id, "host");
    assert_int_equal(host->kind, TSR_DEVICE_HOST);
    assert_int_equal(tsr_context_find_device(ctx, "host"), 0);
    assert_int_equal(tsr_context_find_device(ctx, "0"), 0);
    assert_int_equal(tsr_context_find_device(ctx, "no-such-device"), -1);
    assert_null(tsr_context_device(ctx, -1));
    assert_null(tsr_context_device(ctx, 1000));
    assert_string_equal(tsr_context_last_error(ctx), "");
    tsr_context_free(ctx);
    tsr_context_free(NULL);
    assert_int_equal(tsr_context_create(NULL, NULL), TSR_ERR_INVALID_ARG);
}

typedef struct {
    int count;
    char last[256];
    tsr_log_level level;
} log_capture;

static void capture(tsr_log_level level, const char *msg, void *user) {
    log_capture *c = user;
    c->count++;
    c->level = level;
    strncpy(c->last, msg, sizeof c->last - 1);
}

/* A context that cannot be made still tells why: its topology file's error reaches the log
 * sink, naming the setting and the file (the detail used to be lost with the context). */
static void test_create_failure_detail(void **state) {
    (void)state;
    const char *files[] = {"/nonexistent/topo.json", "tests/unit/test_context.c"}; /* missing; not JSON */
    for (int i = 0; i < 2; i++) {
        log_capture cap = {0};
        tsr_context_options o;
        tsr_context_options_init(&o);
        o.log_fn = capture;
        o.log_user = &cap;
        o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_ENV;
        o.topology_file = files[i];
        tsr_context *ctx = (tsr_context *)0x1;
        assert_int_not_equal(tsr_context_create(&ctx, &o), TSR_OK);
        assert_null(ctx);
        assert_int_equal(cap.level, TSR_LOG_ERROR);
        if (!strstr(cap.last, "TSR_TOPOLOGY (topology_file)") || !strstr(cap.last, files[i]))
            fail_msg("the log does not name the setting and the file: %s", cap.last);
    }
}

static void test_errors_and_log(void **state) {
    (void)state;
    log_capture cap = {0};
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.log_fn = capture;
    o.log_user = &cap;
    o.log_level = TSR_LOG_DEBUG;
    o.flags = TSR_CONTEXT_NO_OPENCL;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    assert_int_equal(tsr_error(ctx, TSR_ERR_CORRUPT, "train-images: bad magic 0x%08x", 0x801u),
                     TSR_ERR_CORRUPT);
    assert_string_equal(tsr_context_last_error(ctx), "train-images: bad magic 0x00000801");
    assert_int_equal(tsr_context_last_status(ctx), TSR_ERR_CORRUPT);
    assert_true(cap.count >= 1);
    assert_non_null(strstr(cap.last, "bad magic"));
    tsr_context_clear_error(ctx);
    assert_string_equal(tsr_context_last_error(ctx), "");
    /* messages above the level are dropped */
    tsr_context_set_log(ctx, capture, &cap, TSR_LOG_WARN);
    int before = cap.count;
    tsr_log(ctx, TSR_LOG_INFO, "not shown");
    assert_int_equal(cap.count, before);
    tsr_log(ctx, TSR_LOG_ERROR, "shown %d", 7);
    assert_int_equal(cap.count, before + 1);
    assert_string_equal(cap.last, "shown 7");
    tsr_context_free(ctx);
}

static void test_log_level_parse(void **state) {
    (void)state;
    assert_int_equal(tsr_log_level_parse("debug", TSR_LOG_WARN), TSR_LOG_DEBUG);
    assert_int_equal(tsr_log_level_parse("ERROR", TSR_LOG_WARN), TSR_LOG_ERROR);
    assert_int_equal(tsr_log_level_parse("bogus", TSR_LOG_WARN), TSR_LOG_WARN);
    assert_int_equal(tsr_log_level_parse(NULL, TSR_LOG_INFO), TSR_LOG_INFO);
}

/* Every allocation failure point during create returns NO_MEMORY and leaks nothing. */
static void test_allocator_failures(void **state) {
    (void)state;
    tsr_test_alloc counter;
    tsr_test_alloc_init(&counter, 0);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.allocator = &counter.allocator;
    o.flags = TSR_CONTEXT_NO_OPENCL;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    long needed = counter.calls;
    assert_true(needed >= 1);
    tsr_context_free(ctx);
    assert_int_equal(counter.live, 0);
    for (long k = 1; k <= needed; k++) {
        tsr_test_alloc fail;
        tsr_test_alloc_init(&fail, k);
        o.allocator = &fail.allocator;
        ctx = (tsr_context *)0x1;
        assert_int_equal(tsr_context_create(&ctx, &o), TSR_ERR_NO_MEMORY);
        assert_null(ctx);
        assert_int_equal(fail.live, 0);
    }
}

static void test_bad_options(void **state) {
    (void)state;
    tsr_allocator half = {NULL, NULL, NULL};
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.allocator = &half;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_ERR_INVALID_ARG);
    tsr_context_options_init(&o);
    o.log_level = 99;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_ERR_INVALID_ARG);
    tsr_context_options_init(&o);
    o.host_sgemm = 3; /* one past TSR_HOST_SGEMM_ONEDNN */
    o.flags = TSR_CONTEXT_NO_ENV;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_strings),     cmocka_unit_test(test_create_free),
        cmocka_unit_test(test_errors_and_log),     cmocka_unit_test(test_create_failure_detail),     cmocka_unit_test(test_log_level_parse),
        cmocka_unit_test(test_allocator_failures), cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
