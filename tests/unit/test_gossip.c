/* Gossip without peers (every build, WITH_MPI=0 included): the single-process trainer bitwise,
 * a checkpoint that either loads, refused options naming what is wrong, every allocation
 * failure of creation cleaned up. The mixing itself is tested under MPI (tests/mpi). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/train/gossip.h"
#include "lib/core/internal.h"
#include "support/test_util.h"

enum { F = 12, C = 4, N = 64, B = 8 };

static tsr_model *model(tsr_context *ctx) {
    tsr_model *m = NULL;
    tsr_model_input in = {1, 3, 4, C};
    assert_int_equal(tsr_model_parse(ctx, "dense:16,relu,dropout:0.3,dense:4", in, &m), TSR_OK);
    return m;
}

static void data(float *x, int32_t *y) {
    tsr_test_fill_uniform(x, N * F, 42, -1.0f, 1.0f);
    for (int i = 0; i < N; i++) {
        y[i] = i % C;
        x[i * F + y[i]] += 2.0f; /* learnable */
    }
}

static void test_equals_trainer(void **state) {
    (void)state;
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_model *m = model(ctx);
    static float x[N * F];
    static int32_t y[N];
    data(x, y);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = B;
    tsr_trainer *t = NULL;
    tsr_gossip *g = NULL, *h = NULL;
    tsr_gossip_options go = {TSR_GOSSIP_RING, 3, 1};
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
    assert_int_equal(tsr_gossip_create(ctx, m, &o, &go, &g), TSR_OK);
    size_t np = tsr_model_param_count(m);
    float *a = malloc(np * 4), *b = malloc(np * 4);
    for (int s = 0; s < 10; s++) {
        size_t off = (size_t)(s * B) % N;
        float lt, lg;
        assert_int_equal(tsr_trainer_step(t, x + off * F, y + off, B, &lt), TSR_OK);
        assert_int_equal(tsr_gossip_step(g, x + off * F, y + off, B, &lg), TSR_OK);
        assert_true(lt == lg);
        assert_int_equal(tsr_trainer_get_params(t, a, np), TSR_OK);
        assert_int_equal(tsr_gossip_get_params(g, b, np), TSR_OK);
        assert_memory_equal(a, b, np * 4);
    }
    double d = -1;
    assert_int_equal(tsr_gossip_consensus(g, &d), TSR_OK);
    assert_true(d == 0.0);
    assert_int_equal(tsr_gossip_average_params(g, b, np), TSR_OK);
    assert_memory_equal(a, b, np * 4);
    /* no samples without peers: refused, as the trainer refuses */
    assert_int_equal(tsr_gossip_step(g, x, y, 0, NULL), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "0 samples"));
    /* checkpoints: gossip's loads into a trainer and the other way round */
    char dir[64], path[128];
    assert_int_equal(tsr_test_make_dir(dir, sizeof dir, "gossip"), 0);
    snprintf(path, sizeof path, "%s/g.ck", dir);
    assert_int_equal(tsr_gossip_save(g, path), TSR_OK);
    assert_int_equal(tsr_gossip_create(ctx, m, &o, &go, &h), TSR_OK);
    assert_int_equal(tsr_gossip_load(h, path), TSR_OK);
    assert_int_equal(tsr_gossip_get_params(h, b, np), TSR_OK);
    assert_memory_equal(a, b, np * 4);
    assert_int_equal(tsr_gossip_steps(h), 10);
    /* both continue alike (optimizer state and RNG came along) */
    assert_int_equal(tsr_gossip_step(g, x, y, B, NULL), TSR_OK);
    assert_int_equal(tsr_gossip_step(h, x, y, B, NULL), TSR_OK);
    assert_int_equal(tsr_gossip_get_params(g, a, np), TSR_OK);
    assert_int_equal(tsr_gossip_get_params(h, b, np), TSR_OK);
    assert_memory_equal(a, b, np * 4);
    assert_int_equal(tsr_trainer_save(t, path), TSR_OK);
    assert_int_equal(tsr_gossip_load(h, path), TSR_OK);
    assert_int_equal(tsr_trainer_get_params(t, a, np), TSR_OK);
    assert_int_equal(tsr_gossip_get_params(h, b, np), TSR_OK);
    assert_memory_equal(a, b, np * 4);
    remove(path);
    tsr_test_remove_dir(dir);
    double acc0, acc1;
    assert_int_equal(tsr_trainer_evaluate(t, &(tsr_dataset){N, 1, 3, 4, F, C, x, y, NULL, 1}, &acc0, NULL), TSR_OK);
    assert_int_equal(tsr_gossip_evaluate(h, &(tsr_dataset){N, 1, 3, 4, F, C, x, y, NULL, 1}, &acc1, NULL), TSR_OK);
    assert_true(acc0 == acc1 && acc0 > 0.25);
    free(a);
    free(b);
    tsr_gossip_free(h);
    tsr_gossip_free(g);
    tsr_gossip_free(NULL);
    tsr_trainer_free(t);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

static void expect(tsr_context *ctx, tsr_status got, tsr_status want, const char *needle) {
    assert_int_equal(got, want);
    if (!strstr(tsr_context_last_error(ctx), needle)) fail_msg("'%s' lacks '%s'", tsr_context_last_error(ctx), needle);
}

static void test_errors(void **state) {
    (void)state;
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_model *m = model(ctx);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = B;
    tsr_gossip *g = NULL;
    tsr_gossip_options go = {2, 1, 0};
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_INVALID_ARG, "unknown graph 2");
    go = (tsr_gossip_options){TSR_GOSSIP_EXPONENTIAL, 1000001, 0};
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_INVALID_ARG, "period 1000001");
    go = (tsr_gossip_options){TSR_GOSSIP_EXPONENTIAL, 1, -1};
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_INVALID_ARG, "eval_local -1");
    go.eval_local = 0;
    o.compress = TSR_COMPRESS_FP16;
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_UNSUPPORTED, "compression");
    o.compress = TSR_COMPRESS_NONE;
    o.nonfinite = (tsr_nonfinite_policy)5;
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_INVALID_ARG, "non-finite policy 5");
    o.nonfinite = TSR_NONFINITE_STOP;
    o.optimizer.lr = -1.0f;
    expect(ctx, tsr_gossip_create(ctx, m, &o, &go, &g), TSR_ERR_INVALID_ARG, "learning rate");
    assert_null(g);
    assert_int_equal(tsr_gossip_create(ctx, m, &o, NULL, &g), TSR_ERR_INVALID_ARG);
    tsr_gossip_graph graph;
    assert_int_equal(tsr_gossip_graph_parse("exponential", &graph), TSR_OK);
    assert_int_equal(graph, TSR_GOSSIP_EXPONENTIAL);
    assert_int_equal(tsr_gossip_graph_parse("Ring", &graph), TSR_ERR_PARSE);
    assert_int_equal(tsr_gossip_graph_parse(NULL, &graph), TSR_ERR_INVALID_ARG);
    assert_string_equal(tsr_gossip_graph_name(TSR_GOSSIP_RING), "ring");
    /* a NaN input with STOP: the step names the non-finite value; nothing changed */
    o.optimizer.lr = 1e-3f;
    assert_int_equal(tsr_gossip_create(ctx, m, &o, &go, &g), TSR_OK);
    float x[B * F];
    int32_t y[B] = {0};
    tsr_test_fill_uniform(x, B * F, 1, -1, 1);
    x[5] = NAN;
    size_t np = tsr_model_param_count(m);
    float *p0 = malloc(np * 4), *p1 = malloc(np * 4);
    assert_int_equal(tsr_gossip_get_params(g, p0, np), TSR_OK);
    expect(ctx, tsr_gossip_step(g, x, y, B, NULL), TSR_ERR_NUMERIC, "is nan"); /* loss or gradient */
    assert_int_equal(tsr_gossip_get_params(g, p1, np), TSR_OK);
    assert_memory_equal(p0, p1, np * 4);
    assert_int_equal(tsr_gossip_steps(g), 0);
    free(p0);
    free(p1);
    tsr_gossip_free(g);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

static void test_allocation_failures(void **state) {
    (void)state;
    int created = 0;
    for (long k = 1; k <= 200 && !created; k++) { /* every allocation of creation fails once */
        tsr_test_alloc fa;
        tsr_test_alloc_init(&fa, 0);
        tsr_context_options co;
        tsr_context_options_init(&co);
        co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
        co.allocator = &fa.allocator;
        tsr_context *ctx;
        assert_int_equal(tsr_context_create(&ctx, &co), TSR_OK);
        tsr_model *m = model(ctx);
        long base = fa.live;
        tsr_trainer_options o;
        tsr_trainer_options_init(&o);
        o.batch = B;
        tsr_gossip_options go = {TSR_GOSSIP_RING, 1, 0};
        tsr_gossip *g = NULL;
        fa.fail_at = fa.calls + k; /* the k-th allocation of creation fails */
        tsr_status s = tsr_gossip_create(ctx, m, &o, &go, &g);
        fa.fail_at = 0;
        if (s == TSR_OK) {
            created = 1;
            tsr_gossip_free(g);
        } else {
            assert_int_equal(s, TSR_ERR_NO_MEMORY);
            assert_null(g);
        }
        assert_int_equal(fa.live, base);
        tsr_model_free(m);
        tsr_context_free(ctx);
        assert_int_equal(fa.live, 0);
    }
    assert_true(created);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equals_trainer),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
