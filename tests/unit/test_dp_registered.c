/* Data parallelism keeps the stage's gradients (and, with ZeRO-1, its parameters) in the
 * communicator's registered memory: on the host backend a buffer made over that memory
 * (tsr_buf_wrap) stands in for the stage's own while the dp exists, on a device the dp stages
 * through it. Checked with the self communicator on every device: the data survives the move
 * both ways, the allreduce of one rank leaves the gradient bit for bit, and the stage gets its
 * own buffers back at the end. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backends/backend.h"
#include "lib/model/stage.h"
#include "lib/train/dp.h"
#include "support/test_util.h"

#define BATCH 4

static void read_all(tsr_buf *b, float *dst, size_t n) {
    assert_int_equal(tsr_read_f32(b, 0, dst, n), TSR_OK);
}

static void check_device(tsr_context *ctx, int dev, int shard) {
    tsr_model *m;
    tsr_model_input in = {1, 4, 4, 3};
    assert_int_equal(tsr_model_parse(ctx, "dense:6,relu,dense:3", in, &m), TSR_OK);
    tsr_backend *be;
    assert_int_equal(tsr_backend_open(ctx, dev, &be), TSR_OK);
    tsr_stage *st;
    tsr_stage_options so = {0, m->count, BATCH, 1, TSR_PRECISION_FP32, 0};
    assert_int_equal(tsr_stage_create(be, m, &so, &st), TSR_OK);
    size_t np = tsr_stage_param_count(st);
    float *p = malloc(np * sizeof *p), *g = malloc(np * sizeof *g), *got = malloc(np * sizeof *got);
    assert_true(p && g && got);
    tsr_test_fill_uniform(p, np, 11, -1.0f, 1.0f);
    tsr_test_fill_uniform(g, np, 12, -1.0f, 1.0f);
    tsr_buf *own_p = tsr_stage_params(st), *own_g = tsr_stage_grads(st);
    assert_int_equal(tsr_write_f32(own_p, 0, p, np), TSR_OK);
    assert_int_equal(tsr_write_f32(own_g, 0, g, np), TSR_OK);

    tsr_comm *comm;
    assert_int_equal(tsr_comm_self_create(ctx, &comm), TSR_OK);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.comm = comm;
    o.shard_optimizer = shard;
    tsr_dp *dp;
    assert_int_equal(tsr_dp_create(ctx, m, st, &o, NULL, &dp), TSR_OK);

    int host = tsr_backend_wraps_host(be);
    tsr_buf *gb = tsr_stage_grads(st), *pb = tsr_stage_params(st);
    tsr_map gm, pm;
    assert_int_equal(tsr_buf_map(tsr_ref_at(gb, 0), TSR_DTYPE_F32, np, TSR_MAP_READ, NULL, &gm),
                     TSR_OK);
    assert_int_equal(tsr_buf_map(tsr_ref_at(pb, 0), TSR_DTYPE_F32, np, TSR_MAP_READ, NULL, &pm),
                     TSR_OK);
    /* host: the stage computes on registered memory; a device keeps its own buffers */
    assert_int_equal(tsr_comm_is_registered(comm, gm.data, np * 4), host);
    assert_int_equal(tsr_comm_is_registered(comm, pm.data, np * 4), host && shard);
    assert_true(host ? gb != own_g : gb == own_g);
    assert_true(host && shard ? pb != own_p : pb == own_p);
    assert_memory_equal(gm.data, g, np * 4); /* the data moved along */
    assert_memory_equal(pm.data, p, np * 4);
    assert_int_equal(tsr_buf_unmap(&gm), TSR_OK);
    assert_int_equal(tsr_buf_unmap(&pm), TSR_OK);

    /* one rank holding the whole batch: the averaged gradient is its own, bit for bit */
    float global = 0.0f;
    assert_int_equal(tsr_dp_begin(dp, BATCH, 0.5f, &global, NULL), TSR_OK);
    assert_true(global == 0.5f);
    assert_int_equal(tsr_dp_finish(dp), TSR_OK);
    read_all(tsr_stage_grads(st), got, np);
    assert_memory_equal(got, g, np * 4);
    if (shard) {
        assert_int_equal(tsr_dp_gather_params(dp), TSR_OK);
        read_all(tsr_stage_params(st), got, np);
        assert_memory_equal(got, p, np * 4);
    }
    /* the stage's gradient range past its end is named */
    assert_int_equal(tsr_read_f32(tsr_stage_grads(st), np, got, 1), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "gradients"));

    /* a changed parameter while registered comes back with the stage's own buffer */
    p[0] = 42.0f;
    assert_int_equal(tsr_write_f32(tsr_stage_params(st), 0, p, 1), TSR_OK);
    tsr_dp_free(dp);
    assert_ptr_equal(tsr_stage_params(st), own_p);
    assert_ptr_equal(tsr_stage_grads(st), own_g);
    read_all(own_p, got, np);
    assert_memory_equal(got, p, np * 4);
    read_all(own_g, got, np);
    assert_memory_equal(got, g, np * 4);

    tsr_comm_free(comm);
    free(p);
    free(g);
    free(got);
    tsr_stage_free(st);
    tsr_backend_free(be);
    tsr_model_free(m);
}

static void test_registered_every_device(void **state) {
    (void)state;
    tsr_context *ctx;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_HWLOC;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    for (int d = 0; d < tsr_context_device_count(ctx); d++) {
        fprintf(stderr, "device %s\n", tsr_context_device(ctx, d)->id);
        for (int shard = 0; shard <= 1; shard++) check_device(ctx, d, shard);
    }
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_registered_every_device)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
