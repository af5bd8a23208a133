/* Data-parallel trainer on one process (the self communicator) on every device of the context:
 * the fusion buckets (in place on host gradients, staged through registered host memory on
 * OpenCL), the sample weighting and top-k at ratio 1 must give exactly the single-process step;
 * fp16 on a self communicator changes nothing either. Also the top-k selection against brute
 * force and the timeline written at trainer free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <cJSON.h>
#include "tessera.h"
#include "lib/train/dp.h"

const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; }
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\n";
}

static tsr_context *ctx;

static int setup(void **state) {
    (void)state;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_HWLOC;
    return tsr_context_create(&ctx, &o) == TSR_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tsr_context_free(ctx);
    return 0;
}

enum { B = 12, F = 20, C = 5 };

static void batch(float *x, int32_t *y, uint64_t seed) {
    for (int i = 0; i < B * F; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((seed >> 40) & 0xFFFF) / 32768.0f - 1.0f;
    }
    for (int i = 0; i < B; i++) y[i] = (int32_t)((i * 7 + 3) % C);
}

/* The timeline file run() asks for (options.timeline), NULL: none. */
static const char *timeline_path;

/* Three steps with opts (comm NULL or self) on device dev; parameters out. */
static void run(const char *dev, tsr_comm *comm, tsr_compress_kind c, float *params, size_t np) {
    tsr_model *m = NULL;
    tsr_model_input in = {1, 4, F / 4, C};
    assert_int_equal(tsr_model_parse(ctx, "dense:16,relu,dense:12,relu,dense:5", in, &m), TSR_OK);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.device = dev;
    o.batch = B;
    o.comm = comm;
    o.compress = c;
    o.topk_ratio = 1.0;
    o.fusion_bytes = 256; /* a bucket per layer */
    o.timeline = timeline_path;
    tsr_trainer *t = NULL;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
    float x[B * F];
    int32_t y[B];
    for (int s = 0; s < 3; s++) {
        batch(x, y, (uint64_t)s + 1);
        assert_int_equal(tsr_trainer_step(t, x, y, B - (size_t)s, NULL), TSR_OK);
    }
    if (comm) assert_int_equal(tsr_trainer_buckets(t), 3);
    assert_int_equal(tsr_trainer_get_params(t, params, np), TSR_OK);
    tsr_trainer_free(t);
    tsr_model_free(m);
}

static void test_self_comm_equals_single(void **state) {
    (void)state;
    tsr_comm *comm = NULL;
    assert_int_equal(tsr_comm_self_create(ctx, &comm), TSR_OK);
    size_t np = 16 * F + 16 + 12 * 16 + 12 + 5 * 12 + 5;
    float *ref = malloc(np * sizeof *ref), *got = malloc(np * sizeof *got);
    assert_non_null(ref);
    assert_non_null(got);
    for (int d = 0; d < tsr_context_device_count(ctx); d++) {
        const char *dev = tsr_context_device(ctx, d)->id;
        fprintf(stderr, "device %s\n", dev);
        run(dev, NULL, TSR_COMPRESS_NONE, ref, np);
        static const tsr_compress_kind kinds[] = {TSR_COMPRESS_NONE, TSR_COMPRESS_FP16,
                                                  TSR_COMPRESS_TOPK};
        for (int k = 0; k < 3; k++) {
            memset(got, 0, np * sizeof *got);
            run(dev, comm, kinds[k], got, np);
            if (memcmp(ref, got, np * sizeof *got)) {
                size_t i = 0;
                while (ref[i] == got[i]) i++;
                fail_msg("%s compress %d: parameter %zu is %.9g, single process %.9g", dev, (int)kinds[k],
                         i, (double)got[i], (double)ref[i]);
            }
        }
    }
    free(ref);
    free(got);
    tsr_comm_free(comm);
}

static void test_topk_select(void **state) {
    (void)state;
    enum { N = 257 };
    float v[N], scratch[N];
    uint32_t idx[N];
    uint64_t seed = 99;
    for (int i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = (float)((int)((seed >> 40) & 0xFF) - 128); /* many ties */
    }
    for (size_t k = 1; k <= N; k += 37) {
        tsr_topk_select(v, N, k, idx, scratch);
        /* brute force: the k-th largest magnitude; every chosen one >= it, every unchosen <= it */
        char chosen[N] = {0};
        for (size_t j = 0; j < k; j++) {
            assert_true(idx[j] < N);
            assert_false(chosen[idx[j]]);
            chosen[idx[j]] = 1;
        }
        float mags[N];
        for (int i = 0; i < N; i++) mags[i] = v[i] < 0 ? -v[i] : v[i];
        for (int i = 0; i < N; i++)
            for (int j = i + 1; j < N; j++)
                if (mags[j] > mags[i]) {
                    float t = mags[i];
                    mags[i] = mags[j];
                    mags[j] = t;
                }
        float th = mags[k - 1];
        for (int i = 0; i < N; i++) {
            float a = v[i] < 0 ? -v[i] : v[i];
            if (chosen[i]) assert_true(a >= th);
            else assert_true(a <= th);
        }
    }
}

static void test_timeline_single(void **state) {
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/tsr-tl-unit-%ld.json", (long)getpid());
    timeline_path = path;
    tsr_comm *comm = NULL;
    assert_int_equal(tsr_comm_self_create(ctx, &comm), TSR_OK);
    size_t np = 16 * F + 16 + 12 * 16 + 12 + 5 * 12 + 5;
    float *p = malloc(np * sizeof *p);
    run("host", comm, TSR_COMPRESS_NONE, p, np);
    timeline_path = NULL;
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char text[16384];
    size_t len = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    remove(path);
    text[len] = 0;
    cJSON *a = cJSON_Parse(text);
    assert_true(cJSON_IsArray(a));
    int steps = 0, buckets = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        if (!strcmp(cJSON_GetObjectItemCaseSensitive(e, "ph")->valuestring, "M")) continue;
        const char *n = cJSON_GetObjectItemCaseSensitive(e, "name")->valuestring;
        steps += !strcmp(n, "step");
        buckets += !strncmp(n, "allreduce", 9);
        assert_int_equal(cJSON_GetObjectItemCaseSensitive(e, "pid")->valueint, 0);
    }
    assert_int_equal(steps, 3);
    assert_int_equal(buckets, 9);
    cJSON_Delete(a);
    /* an unwritable path: the trainer still works, the failure is logged at free */
    timeline_path = "/nonexistent-dir/x.json";
    run("host", comm, TSR_COMPRESS_NONE, p, np);
    timeline_path = NULL;
    free(p);
    tsr_comm_free(comm);
}

/* Throughput measurement: a positive rate on every device, parameters and steps unchanged. */
static void test_measure(void **state) {
    (void)state;
    tsr_model *m = NULL;
    tsr_model_input in = {1, 4, F / 4, C};
    assert_int_equal(tsr_model_parse(ctx, "dense:16,relu,dense:5", in, &m), TSR_OK);
    size_t np = tsr_model_param_count(m);
    float *before = malloc(np * sizeof *before), *after = malloc(np * sizeof *after);
    float x[B * F];
    int32_t y[B];
    batch(x, y, 5);
    for (int d = 0; d < tsr_context_device_count(ctx); d++) {
        tsr_trainer_options o;
        tsr_trainer_options_init(&o);
        o.device = tsr_context_device(ctx, d)->id;
        o.batch = B;
        tsr_trainer *t = NULL;
        assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
        assert_int_equal(tsr_trainer_get_params(t, before, np), TSR_OK);
        double rate = 0.0;
        assert_int_equal(tsr_trainer_measure(t, x, y, B, &rate), TSR_OK);
        fprintf(stderr, "%s: %.0f samples/s forward+backward\n", o.device, rate);
        assert_true(rate > 0.0);
        assert_int_equal(tsr_trainer_get_params(t, after, np), TSR_OK);
        assert_memory_equal(before, after, np * sizeof *before);
        assert_int_equal(tsr_trainer_steps(t), 0);
        assert_int_equal(tsr_trainer_measure(t, x, y, 0, &rate), TSR_ERR_SHAPE);
        tsr_trainer_free(t);
    }
    free(before);
    free(after);
    tsr_model_free(m);
}

/* Bad option values are refused by name (the environment's are lib/core/config.c's). */
static void test_bad_options(void **state) {
    (void)state;
    tsr_comm *comm = NULL;
    assert_int_equal(tsr_comm_self_create(ctx, &comm), TSR_OK);
    tsr_model *m = NULL;
    tsr_model_input in = {1, 4, F / 4, C};
    assert_int_equal(tsr_model_parse(ctx, "dense:5", in, &m), TSR_OK);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.comm = comm;
    tsr_trainer *t = NULL;
    o.fusion_bytes = 64 << 10;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
    tsr_trainer_free(t);
    t = NULL;
    o.compress = (tsr_compress_kind)9;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "unknown gradient compression 9"));
    o.compress = TSR_COMPRESS_TOPK;
    o.topk_ratio = 1.5;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "top-k ratio 1.5"));
    assert_null(t);
    tsr_model_free(m);
    tsr_comm_free(comm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topk_select),
        cmocka_unit_test(test_self_comm_equals_single),
        cmocka_unit_test(test_timeline_single),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_measure),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
