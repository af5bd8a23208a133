/* Placement planner: the cost model against formulas computed here, the search against brute
 * force (every device order and every contiguous split) on random heterogeneous topologies,
 * memory limits, errors naming what was wrong, JSON round trip and its validation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/plan/plan_internal.h"
#include "lib/model/fit.h"
#include "lib/model/stage.h"
#include "support/test_util.h"
#include "topology/topology.h"

static tsr_context *new_ctx(void) {
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    return ctx;
}

static void assert_error_has(tsr_context *ctx, const char *what) {
    const char *e = tsr_context_last_error(ctx);
    if (!strstr(e, what)) fail_msg("error '%s' does not name '%s'", e, what);
}

/* ---------------------------------------------------------------- topologies */

typedef struct devspec {
    const char *id, *name;
    tsr_device_kind kind;
    int host;
    uint64_t mem;
    double peak, bw, h2d, d2h, launch_us;
} devspec;

static tsr_topology *make_topo(tsr_context *ctx, int hosts, const devspec *s, int n) {
    tsr_topology *t;
    assert_int_equal(tsr_topology_alloc(ctx, hosts, n, 0, &t), TSR_OK);
    for (int h = 0; h < hosts; h++) {
        snprintf(t->hosts[h].hostname, sizeof t->hosts[h].hostname, "node%d", h);
        t->hosts[h].memory_bytes = 1ull << 36;
    }
    for (int i = 0; i < n; i++) {
        tsr_device_info *d = &t->devices[i];
        tsr_strlcpy(d->id, s[i].id, sizeof d->id);
        tsr_strlcpy(d->name, s[i].name, sizeof d->name);
        d->kind = s[i].kind;
        d->backend = s[i].kind == TSR_DEVICE_HOST ? TSR_BACKEND_HOST : TSR_BACKEND_OPENCL;
        d->host = s[i].host;
        d->global_mem_bytes = s[i].mem;
        d->peak_gflops = s[i].peak;
        d->mem_bw_gbps = s[i].bw;
        d->h2d_gbps = s[i].h2d;
        d->d2h_gbps = s[i].d2h;
        d->launch_us = s[i].launch_us;
        d->same_as = -1;
        d->usable = 1;
        d->numa_node = -1;
        d->platform_index = d->device_index = -1;
    }
    return t;
}

static tsr_model *make_model(tsr_context *ctx, const char *spec, tsr_model_input in) {
    tsr_model *m = NULL;
    tsr_status st = tsr_model_parse(ctx, spec, in, &m);
    if (st != TSR_OK) fail_msg("model '%s': %s", spec, tsr_context_last_error(ctx));
    return m;
}

/* xorshift64 */
static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}
static double uni(uint64_t *s, double lo, double hi) {
    return lo + (hi - lo) * (double)(rnd(s) >> 11) / 9007199254740992.0;
}
static int irand(uint64_t *s, int lo, int hi) { return lo + (int)(rnd(s) % (uint64_t)(hi - lo + 1)); }

/* A random sequential model on 2x8x8 inputs, 4 classes: a spatial part then a dense part. */
static void random_spec(uint64_t *s, char *buf, size_t n, int max_layers) {
    size_t at = 0;
    int layers = irand(s, 2, max_layers - 1), h = 8, spatial = irand(s, 0, 1);
    buf[0] = 0;
    for (int i = 0; i < layers; i++) {
        char tok[32];
        int r = irand(s, 0, 3);
        if (spatial && i < layers / 2) {
            if (r == 0 && h >= 2) {
                snprintf(tok, sizeof tok, "pool2");
                h /= 2;
            } else if (r == 1)
                snprintf(tok, sizeof tok, "relu");
            else
                snprintf(tok, sizeof tok, "conv3x3:%d", irand(s, 2, 12));
        } else {
            if (r == 0)
                snprintf(tok, sizeof tok, "relu");
            else if (r == 1)
                snprintf(tok, sizeof tok, "dropout:0.25");
            else
                snprintf(tok, sizeof tok, "dense:%d", irand(s, 4, 96));
        }
        at += (size_t)snprintf(buf + at, n - at, "%s,", tok);
    }
    snprintf(buf + at, n - at, "dense:4");
}

/* Memory the whole model needs at one sample (params x 4 x 4 + activations), to size devices
 * so that memory limits bind. */
static double model_bytes(const tsr_model *m, size_t mb) {
    double b = 0;
    for (size_t l = 0; l < tsr_model_layer_count(m); l++) {
        tsr_layer_info in;
        assert_int_equal(tsr_model_layer_info(m, l, mb, &in), TSR_OK);
        b += (double)in.param_bytes * 4 + (double)in.activation_bytes;
    }
    return b;
}

static tsr_topology *random_topo(tsr_context *ctx, uint64_t *s, int n, double need) {
    int hosts = irand(s, 1, 2);
    tsr_topology *t;
    assert_int_equal(tsr_topology_alloc(ctx, hosts, n, 0, &t), TSR_OK);
    for (int h = 0; h < hosts; h++) snprintf(t->hosts[h].hostname, 64, "node%d", h);
    for (int i = 0; i < n; i++) {
        tsr_device_info *d = &t->devices[i];
        if (i > 0 && irand(s, 0, 2) == 0) {
            *d = t->devices[i - 1]; /* an identical device: same class */
        } else {
            memset(d, 0, sizeof *d);
            d->kind = irand(s, 0, 3) ? TSR_DEVICE_GPU : TSR_DEVICE_CPU;
            d->backend = TSR_BACKEND_OPENCL;
            d->host = irand(s, 0, hosts - 1);
            snprintf(d->name, sizeof d->name, "model-%d", i);
            d->global_mem_bytes = (uint64_t)(need * uni(s, 0.15, 1.6)) + 4096;
            d->peak_gflops = uni(s, 5, 5000);
            if (irand(s, 0, 1)) {
                d->gemm_points = irand(s, 1, 4);
                double r = uni(s, 0.5, 50);
                for (int k = 0; k < d->gemm_points; k++) {
                    d->gemm_n[k] = 16u << k;
                    r *= uni(s, 1.0, 3.0);
                    d->gemm_gflops_n[k] = r;
                }
            }
            d->mem_bw_gbps = irand(s, 0, 3) ? uni(s, 1, 1000) : 0;
            d->h2d_gbps = irand(s, 0, 3) ? uni(s, 0.5, 30) : 0;
            d->d2h_gbps = irand(s, 0, 3) ? uni(s, 0.5, 30) : 0;
            d->launch_us = irand(s, 0, 3) ? uni(s, 0.1, 20) : 0;
            d->same_as = -1;
            d->usable = 1;
            d->numa_node = -1;
            d->platform_index = d->device_index = -1;
        }
        snprintf(d->id, sizeof d->id, "opencl:0:%d", i);
    }
    return t;
}

/* ---------------------------------------------------------------- brute force */

typedef struct brute {
    tsr_context *ctx;
    const tsr_model *model;
    const tsr_topology *topo;
    const tsr_plan_options *o;
    size_t L, S;
    int devices[16];
    size_t bounds[17];
    int used[16];
    double best;
    long evaluated;
} brute;

static void brute_splits(brute *b, size_t j) {
    if (j == b->S - 1) {
        b->bounds[b->S] = b->L;
        tsr_plan *p = NULL;
        tsr_status st = tsr_plan_from_bounds(b->ctx, b->model, b->topo, b->o, b->bounds, b->devices,
                                             b->S, &p);
        if (st == TSR_OK) {
            if (tsr_plan_step_seconds(p) < b->best) b->best = tsr_plan_step_seconds(p);
            b->evaluated++;
        } else if (st != TSR_ERR_PLAN) {
            fail_msg("from_bounds: %s", tsr_context_last_error(b->ctx));
        }
        tsr_plan_free(p);
        return;
    }
    for (size_t e = b->bounds[j] + 1; e + (b->S - 1 - j) <= b->L; e++) {
        b->bounds[j + 1] = e;
        brute_splits(b, j + 1);
    }
}

static void brute_orders(brute *b, size_t j, int n) {
    if (j == b->S) {
        b->bounds[0] = 0;
        brute_splits(b, 0);
        return;
    }
    for (int d = 0; d < n; d++) {
        if (b->used[d]) continue;
        b->used[d] = 1;
        b->devices[j] = d;
        brute_orders(b, j + 1, n);
        b->used[d] = 0;
    }
}

/* Least step time over every order of every subset of devices and every split. */
static double brute_best(tsr_context *ctx, const tsr_model *m, const tsr_topology *t,
                         const tsr_plan_options *o, long *evaluated) {
    brute b;
    memset(&b, 0, sizeof b);
    b.ctx = ctx, b.model = m, b.topo = t, b.o = o;
    b.L = tsr_model_layer_count(m);
    b.best = INFINITY;
    int n = tsr_topology_device_count(t);
    size_t smax = (size_t)n < b.L ? (size_t)n : b.L;
    if (o->max_stages && o->max_stages < smax) smax = o->max_stages;
    for (b.S = 1; b.S <= smax; b.S++) brute_orders(&b, 0, n);
    if (evaluated) *evaluated = b.evaluated;
    return b.best;
}

static void check_memory(const tsr_plan *p) {
    for (size_t i = 0; i < tsr_plan_stage_count(p); i++) {
        const tsr_plan_stage *s = tsr_plan_stage_at(p, i);
        if (s->memory_bytes > s->memory_limit)
            fail_msg("stage %zu needs %llu bytes, limit %llu", i,
                     (unsigned long long)s->memory_bytes, (unsigned long long)s->memory_limit);
    }
}

/* The plan's own placement, evaluated as a fixed one, predicts the same step. */
static void check_reevaluates(tsr_context *ctx, const tsr_model *m, const tsr_topology *t,
                              const tsr_plan_options *o, const tsr_plan *p) {
    size_t S = tsr_plan_stage_count(p), bounds[65];
    int devs[64];
    assert_true(S >= 1 && S <= 64);
    for (size_t i = 0; i < S; i++) {
        bounds[i] = tsr_plan_stage_at(p, i)->first;
        devs[i] = tsr_plan_stage_at(p, i)->device;
        if (i) assert_int_equal(tsr_plan_stage_at(p, i - 1)->last, bounds[i]);
    }
    bounds[S] = tsr_plan_stage_at(p, S - 1)->last;
    tsr_plan *q = NULL;
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, o, bounds, devs, S, &q), TSR_OK);
    assert_true(fabs(tsr_plan_step_seconds(q) - tsr_plan_step_seconds(p)) <=
                1e-12 * tsr_plan_step_seconds(p));
    tsr_plan_free(q);
}

static void test_search_matches_brute_force(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    long total = 0;
    int infeasible = 0, multi = 0;
    int cases = getenv("TSR_TEST_PLAN_CASES") ? atoi(getenv("TSR_TEST_PLAN_CASES")) : 60;
    for (int c = 0; c < cases; c++) {
        char spec[512];
        random_spec(&seed, spec, sizeof spec, 8);
        tsr_model *m = make_model(ctx, spec, (tsr_model_input){2, 8, 8, 4});
        tsr_plan_options o;
        tsr_plan_options_init(&o);
        static const size_t batches[] = {1, 5, 16, 64};
        o.batch = batches[irand(&seed, 0, 3)];
        o.microbatches = irand(&seed, 0, 1) ? 0 : (size_t)irand(&seed, 1, (int)o.batch);
        o.optimizer_slots = irand(&seed, 0, 2);
        o.memory_fraction = uni(&seed, 0.5, 1.0);
        o.network_gbps = uni(&seed, 0.5, 20);
        o.max_stages = irand(&seed, 0, 2) ? 0 : (size_t)irand(&seed, 1, 3);
        int n = irand(&seed, 1, 4);
        tsr_topology *t = random_topo(ctx, &seed, n, model_bytes(m, o.batch < 8 ? o.batch : 8));
        long ev = 0;
        double best = brute_best(ctx, m, t, &o, &ev);
        total += ev;
        tsr_plan *p = NULL;
        tsr_status st = tsr_plan_create(ctx, m, t, &o, &p);
        if (!(best < INFINITY)) {
            if (st != TSR_ERR_PLAN)
                fail_msg("case %d (%s): brute force finds nothing that fits, plan says %s", c,
                         spec, tsr_status_name(st));
            infeasible++;
        } else {
            if (st != TSR_OK) fail_msg("case %d (%s): %s", c, spec, tsr_context_last_error(ctx));
            double got = tsr_plan_step_seconds(p);
            if (fabs(got - best) > 1e-9 * best)
                fail_msg("case %d (%s, %d devices): search %.12g s, brute force %.12g s", c, spec,
                         n, got, best);
            assert_int_equal(tsr_plan_optimal(p), 1);
            check_memory(p);
            check_reevaluates(ctx, m, t, &o, p);
            multi += tsr_plan_stage_count(p) > 1;
        }
        tsr_plan_free(p);
        tsr_topology_free(t);
        tsr_model_free(m);
    }
    /* the cases exercise both outcomes and real pipelines, not just one device */
    assert_true(infeasible >= 1);
    assert_true(multi >= 5);
    assert_true(total > 1000);
    tsr_context_free(ctx);
}

/* ---------------------------------------------------------------- cost model */

static void test_cost_model_reference(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[2] = {
        {"gpu-a", "A", TSR_DEVICE_GPU, 0, 1ull << 30, 1000, 100, 10, 20, 5},
        {"gpu-b", "B", TSR_DEVICE_GPU, 1, 1ull << 30, 500, 50, 8, 4, 2},
    };
    tsr_topology *t = make_topo(ctx, 2, ds, 2);
    tsr_model *m = make_model(ctx, "dense:8,relu,dense:3", (tsr_model_input){1, 4, 4, 3});
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.batch = 8;
    o.microbatches = 2; /* micro-batch of 4 */
    o.optimizer_slots = 1;
    o.network_gbps = 2;
    size_t bounds[3] = {0, 2, 3};
    int devs[2] = {0, 1};
    tsr_plan *p = NULL;
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, bounds, devs, 2, &p), TSR_OK);
    double mb = 4;
    /* uncalibrated: half of peak for GEMMs, copy bandwidth for relu, launches per kernel */
    double ra = 1000 * 0.5e9, rb = 500 * 0.5e9, la = 5e-6, lb = 2e-6;
    double f0 = mb * (2 * 16 * 8 + 8) / ra + 2 * la + (8 + 8) * 4 * mb / 100e9 + la;
    double b0 = mb * (4 * 16 * 8 + 8) / ra + 3 * la + (8 + 2 * 8) * 4 * mb / 100e9 + la;
    double bytes = 8 * 4 * mb;
    double s0 = 2 * bytes * (1 / 20e9 + 1 / 8e9) + 2 * bytes / 2e9; /* d2h, h2d, network */
    double f1 = mb * (2 * 8 * 3 + 3) / rb + 2 * lb;
    double b1 = mb * (4 * 8 * 3 + 3) / rb + 3 * lb;
    const tsr_plan_stage *a = tsr_plan_stage_at(p, 0), *b = tsr_plan_stage_at(p, 1);
    assert_true(fabs(a->forward_s - f0) < 1e-12 * f0);
    assert_true(fabs(a->backward_s - b0) < 1e-12 * b0);
    assert_true(fabs(a->send_s - s0) < 1e-12 * s0);
    assert_true(fabs(b->forward_s - f1) < 1e-12 * f1);
    assert_true(fabs(b->backward_s - b1) < 1e-12 * b1);
    assert_true(b->send_s == 0);
    /* the stage's memory plan: params x 4 x (2 + 1 slot) + in-flight (stage 0: 2, stage 1: 1) x
     * one activation set (regions of 16 floats: stage 0 input 64, dense 32, relu 32, ones 16;
     * stage 1 input 32, dense 16, ones 16, labels, probabilities, losses and their sum 16 each)
     * + activation-gradient buffers of the largest tensor (stage 0: 1, its relu in place and
     * no input gradient; stage 1: 2) */
    assert_int_equal(a->memory_bytes, (16 * 8 + 8) * 4 * 3 + 2 * (64 + 32 + 32 + 16) * 4 + 1 * 64 * 4);
    assert_int_equal(b->memory_bytes, (8 * 3 + 3) * 4 * 3 + 1 * (32 + 16 + 16 + 4 * 16) * 4 + 2 * 32 * 4);
    assert_int_equal(a->memory_limit, (uint64_t)(0.9 * (double)(1ull << 30)));
    double worst = fmax(f0 + b0 + s0, f1 + b1);
    assert_true(fabs(tsr_plan_step_seconds(p) - (2 + 2 - 1) * worst) < 1e-12 * worst);
    assert_int_equal(tsr_plan_bottleneck(p), f0 + b0 + s0 > f1 + b1 ? 0 : 1);
    assert_true(fabs(tsr_plan_bubble_fraction(p) - 1.0 / 3) < 1e-15);
    assert_true(fabs(tsr_plan_samples_per_s(p) - 8 / tsr_plan_step_seconds(p)) < 1e-9);
    assert_int_equal(tsr_plan_microbatch_size(p), 4);
    assert_int_equal(tsr_plan_stage_at(p, 0)->rank, -1);
    assert_string_equal(tsr_plan_stage_at(p, 1)->device_id, "gpu-b");
    tsr_plan_free(p);
    tsr_model_free(m);
    /* a convolution: im2col GEMM + column matrix traffic + im2col/col2im launches */
    m = make_model(ctx, "conv3x3:4,dense:3", (tsr_model_input){2, 5, 5, 3});
    size_t cb[2] = {0, 2};
    int cd = 0;
    o.microbatches = 1; /* micro-batch of 8 */
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, cb, &cd, 1, &p), TSR_OK);
    mb = 8;
    double cols = (2 * 3 * 3) * (5 * 5), in = 2 * 5 * 5; /* K x N of one sample, input */
    double cf = mb * 25 * (2 * 4 * 18 + 4) / ra + (cols + in) * 4 * mb / 100e9 + 3 * la +
                mb * (2 * 100 * 3 + 3) / ra + 2 * la;
    double cbw = mb * 25 * (4 * 4 * 18 + 4) / ra + (2 * cols + in) * 4 * mb / 100e9 + 4 * la +
                 mb * (4 * 100 * 3 + 3) / ra + 3 * la;
    assert_true(fabs(tsr_plan_stage_at(p, 0)->forward_s - cf) < 1e-12 * cf);
    assert_true(fabs(tsr_plan_stage_at(p, 0)->backward_s - cbw) < 1e-12 * cbw);
    tsr_plan_free(p);
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* Calibrated SGEMM rates: interpolated in log n between sizes, linear below the smallest. */
static void test_cost_model_gemm_by_size(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[1] = {{"dev", "D", TSR_DEVICE_GPU, 0, 1ull << 32, 10000, 100, 10, 10, 1}};
    tsr_topology *t = make_topo(ctx, 1, ds, 1);
    t->devices[0].gemm_points = 2;
    t->devices[0].gemm_n[0] = 128, t->devices[0].gemm_gflops_n[0] = 100;
    t->devices[0].gemm_n[1] = 256, t->devices[0].gemm_gflops_n[1] = 200;
    t->devices[0].gemm_gflops = 200;
    tsr_model *m = make_model(ctx, "dense:256", (tsr_model_input){1, 16, 16, 256});
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    size_t bounds[2] = {0, 1};
    int dev = 0;
    struct {
        size_t batch;
        double rate;
    } cases[3];
    double n64 = cbrt(64.0 * 256 * 256), n1 = cbrt(1.0 * 256 * 256);
    cases[0].batch = 64, cases[0].rate = 100 + 100 * (log(n64) - log(128)) / (log(256) - log(128));
    /* below the smallest size timed: 128^3 at 100 GF/s less one launch, plus the launch */
    double f0 = 2.0 * 128 * 128 * 128, r0 = f0 / (f0 / 100e9 - 1e-6) / 1e9;
    (void)n1;
    cases[1].batch = 1, cases[1].rate = r0;
    cases[2].batch = 1024, cases[2].rate = 200; /* past the largest size: flat */
    for (int c = 0; c < 3; c++) {
        o.batch = cases[c].batch;
        tsr_plan *p = NULL;
        assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, bounds, &dev, 1, &p), TSR_OK);
        /* the calibrated GEMM holds its own launch: only the bias kernel's is added, and the
         * GEMM's own below the calibrated sizes */
        double want = (double)o.batch * (2 * 256 * 256 + 256) / (cases[c].rate * 1e9) + 1e-6 +
                      (c == 1 ? 1e-6 : 0);
        double got = tsr_plan_stage_at(p, 0)->forward_s;
        if (fabs(got - want) > 1e-12 * want) fail_msg("batch %zu: %g s, want %g", o.batch, got, want);
        tsr_plan_free(p);
    }
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* ---------------------------------------------------------------- placement properties */

static void test_single_device(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[1] = {{"host", "cpu", TSR_DEVICE_HOST, 0, 1ull << 33, 200, 20, 0, 0, 1}};
    tsr_topology *t = make_topo(ctx, 1, ds, 1);
    tsr_model *m = make_model(ctx, "cnn", TSR_MODEL_INPUT_MNIST);
    tsr_plan *p = NULL;
    assert_int_equal(tsr_plan_create(ctx, m, t, NULL, &p), TSR_OK);
    assert_int_equal(tsr_plan_stage_count(p), 1);
    const tsr_plan_stage *s = tsr_plan_stage_at(p, 0);
    assert_int_equal(s->first, 0);
    assert_int_equal(s->last, tsr_model_layer_count(m));
    assert_int_equal(s->device, 0);
    assert_true(s->send_s == 0);
    assert_int_equal(tsr_plan_bottleneck(p), 0);
    assert_true(tsr_plan_bubble_fraction(p) == 0);
    assert_int_equal(tsr_plan_microbatches(p), 1); /* nothing to overlap with one stage */
    assert_true(fabs(tsr_plan_step_seconds(p) - (s->forward_s + s->backward_s)) < 1e-15);
    tsr_plan_free(p);
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* The precision reaches the stages' memory: one-device plans of a cnn and a gpt-mini hold, in
 * each precision, what the memory-fit check counts for that stage. gpt-mini's blocks keep
 * their activations in 16 bits (less memory than fp32); the cnn's 16-bit storage would save
 * nothing once its staging is counted, so it keeps float32 activations and only adds the
 * rounded GEMM operands. */
static void test_precision_memory(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[1] = {{"host", "cpu", TSR_DEVICE_HOST, 0, 1ull << 33, 200, 20, 0, 0, 1}};
    tsr_topology *t = make_topo(ctx, 1, ds, 1);
    tsr_gpt_config c;
    assert_int_equal(tsr_gpt_config_parse(ctx, "gpt-mini", &c), TSR_OK);
    tsr_model *models[2] = {make_model(ctx, "cnn", TSR_MODEL_INPUT_MNIST), NULL};
    assert_int_equal(tsr_model_create_gpt(ctx, &c, 128, &models[1]), TSR_OK);
    for (int k = 0; k < 2; k++) {
        tsr_model *m = models[k];
        tsr_plan_options o;
        tsr_plan_options_init(&o);
        o.batch = 8;
        uint64_t bytes[3];
        tsr_stage_memory mem[3];
        for (int prec = 0; prec < 3; prec++) {
            o.precision = (tsr_precision)prec;
            tsr_plan *p = NULL;
            assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
            bytes[prec] = tsr_plan_stage_at(p, 0)->memory_bytes;
            tsr_stage_options so = {0, tsr_model_layer_count(m), o.batch, 0, o.precision, 0};
            tsr_fit f;
            assert_int_equal(tsr_stage_check_fit(ctx, m, &so, &t->devices[0], (size_t)o.optimizer_slots, 1, &f),
                             TSR_OK);
            assert_int_equal(tsr_stage_plan_memory(ctx, m, &so, &mem[prec]), TSR_OK);
            if (bytes[prec] != f.device_total)
                fail_msg("%s %s: the plan holds %llu bytes, the fit check %llu", tsr_model_spec(m),
                         tsr_precision_name(o.precision), (unsigned long long)bytes[prec],
                         (unsigned long long)f.device_total);
            tsr_plan_free(p);
        }
        assert_true(bytes[2] == bytes[1]);
        if (k == 0) {
            assert_int_equal(mem[1].staging_bytes, 0);
            assert_int_equal(mem[1].act_set_bytes, mem[0].act_set_bytes);
            assert_true(bytes[1] == bytes[0] + mem[1].round_bytes);
        } else {
            assert_true(mem[1].act_set_bytes + mem[1].staging_bytes < mem[0].act_set_bytes * 3 / 4);
            assert_true(bytes[1] < bytes[0]);
        }
    }
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.precision = (tsr_precision)3;
    tsr_plan *p = NULL;
    assert_int_equal(tsr_plan_create(ctx, models[0], t, &o, &p), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "plan option precision 3 is not fp32"));
    tsr_model_free(models[0]);
    tsr_model_free(models[1]);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

static void test_fast_gpu_gets_more_layers(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[2] = {
        {"host", "cpu", TSR_DEVICE_HOST, 0, 1ull << 34, 200, 50, 0, 0, 1},
        {"opencl:0:0", "gpu", TSR_DEVICE_GPU, 0, 1ull << 34, 800, 400, 12, 12, 1},
    };
    tsr_topology *t = make_topo(ctx, 1, ds, 2);
    char spec[512];
    size_t at = 0;
    for (int i = 0; i < 12; i++) at += (size_t)snprintf(spec + at, sizeof spec - at, "dense:256,relu,");
    snprintf(spec + at, sizeof spec - at, "dense:10");
    tsr_model *m = make_model(ctx, spec, (tsr_model_input){1, 16, 16, 10});
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.batch = 256;
    o.microbatches = 16;
    tsr_plan *p = NULL;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
    assert_int_equal(tsr_plan_stage_count(p), 2);
    size_t gpu = 0, cpu = 0;
    for (size_t i = 0; i < 2; i++) {
        const tsr_plan_stage *s = tsr_plan_stage_at(p, i);
        if (s->device == 1)
            gpu += s->last - s->first;
        else
            cpu += s->last - s->first;
    }
    if (!(gpu > 2 * cpu)) fail_msg("the 4x faster GPU got %zu layers, the CPU %zu", gpu, cpu);
    /* better than either device alone */
    for (int d = 0; d < 2; d++) {
        size_t bounds[2] = {0, tsr_model_layer_count(m)};
        tsr_plan *one = NULL;
        assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, bounds, &d, 1, &one), TSR_OK);
        assert_true(tsr_plan_step_seconds(p) < tsr_plan_step_seconds(one));
        tsr_plan_free(one);
    }
    tsr_plan_free(p);
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* A fast device with little memory gets only what fits; the rest goes to the big slow one. */
static void test_memory_limit_honoured(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    /* dense:1024 on 784 inputs: 803 kfloats = 3.1 MiB of weights, 4 x that with Adam */
    devspec ds[2] = {
        {"small-fast", "fast", TSR_DEVICE_GPU, 0, 6ull << 20, 100000, 1000, 20, 20, 1},
        {"big-slow", "slow", TSR_DEVICE_GPU, 0, 1ull << 32, 100, 10, 10, 10, 1},
    };
    tsr_topology *t = make_topo(ctx, 1, ds, 2);
    tsr_model *m = make_model(ctx, "dense:1024,relu,dense:256,relu,dense:10", TSR_MODEL_INPUT_MNIST);
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.batch = 32;
    o.optimizer_slots = 2;
    tsr_plan *p = NULL;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
    check_memory(p);
    /* the first layer cannot be on the fast device: 12.6 MiB > 0.9 x 6 MiB */
    assert_int_equal(tsr_plan_stage_at(p, 0)->device, 1);
    assert_int_equal(tsr_plan_stage_count(p), 2);
    assert_int_equal(tsr_plan_stage_at(p, 1)->device, 0);
    /* the same placement with everything on the fast device is refused, naming the stage */
    size_t bounds[2] = {0, 5};
    int dev = 0;
    tsr_plan *q = NULL;
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, bounds, &dev, 1, &q), TSR_ERR_PLAN);
    assert_null(q);
    assert_error_has(ctx, "stage 0 (layers 0-4) needs");
    assert_error_has(ctx, "small-fast");
    tsr_plan_free(p);
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

static void test_infeasible_names_layer(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[2] = {
        {"gpu-a", "a", TSR_DEVICE_GPU, 0, 512ull << 10, 1000, 100, 10, 10, 1},
        {"gpu-b", "b", TSR_DEVICE_GPU, 0, 16ull << 20, 1000, 100, 10, 10, 1},
    };
    tsr_topology *t = make_topo(ctx, 1, ds, 2);
    /* layer 2, dense:4096 after dense:64: 266 kfloats x 4 bytes x 2 = 2.03 MiB with SGD, plus
     * its activations and their gradients at a micro-batch of 8 (0.38 MiB) */
    tsr_model *m = make_model(ctx, "dense:64,relu,dense:4096,relu,dense:10", TSR_MODEL_INPUT_MNIST);
    tsr_plan *p = NULL;
    assert_int_equal(tsr_plan_create(ctx, m, t, NULL, &p), TSR_OK); /* fits on gpu-b */
    tsr_plan_free(p);
    t->devices[1].global_mem_bytes = 1ull << 20;
    assert_int_equal(tsr_plan_create(ctx, m, t, NULL, &p), TSR_ERR_PLAN);
    assert_null(p);
    assert_error_has(ctx, "layer 2 dense:4096 needs 2.");
    assert_error_has(ctx, "MiB");
    assert_error_has(ctx, "the largest usable device, gpu-b, has 921.6 KiB");
    /* every layer fits somewhere, but not all of them together */
    tsr_model_free(m);
    /* three dense layers of ~700 KB (SGD: weights + gradients), one per 1 MiB device at most */
    m = make_model(ctx, "dense:300,relu,dense:300,relu,dense:300,relu,dense:10",
                   (tsr_model_input){1, 17, 17, 10});
    t->devices[0].global_mem_bytes = t->devices[1].global_mem_bytes = 1ull << 20;
    assert_int_equal(tsr_plan_create(ctx, m, t, NULL, &p), TSR_ERR_PLAN);
    assert_error_has(ctx, "no split over the 2 usable devices fits");
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

static void test_candidates(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[4] = {
        {"host", "cpu", TSR_DEVICE_HOST, 0, 1ull << 33, 100, 20, 0, 0, 1},
        {"opencl:0:0", "cpu", TSR_DEVICE_CPU, 0, 1ull << 33, 100, 20, 5, 5, 10},
        {"opencl:1:0", "gpu", TSR_DEVICE_GPU, 0, 1ull << 33, 10000, 500, 10, 10, 5},
        {"opencl:2:0", "fpga", TSR_DEVICE_ACCELERATOR, 0, 1ull << 33, 0, 0, 0, 0, 0},
    };
    tsr_topology *t = make_topo(ctx, 1, ds, 4);
    t->devices[0].same_as = 1, t->devices[1].same_as = 0;
    t->devices[0].gemm_gflops = 80, t->devices[1].gemm_gflops = 5; /* the host path is faster */
    tsr_model *m = make_model(ctx, "mlp", TSR_MODEL_INPUT_MNIST);
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.batch = 256;
    tsr_plan *p = NULL;
    /* never the slower path of the CPU, never the FPGA without any rate */
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
        for (size_t i = 0; i < tsr_plan_stage_count(p); i++) {
            int d = tsr_plan_stage_at(p, i)->device;
            assert_true(d == 0 || d == 2);
        }
        tsr_plan_free(p);
        t->devices[2].usable = 0; /* the GPU unusable: the host alone */
        if (pass == 0) continue;
    }
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
    assert_int_equal(tsr_plan_stage_count(p), 1);
    assert_int_equal(tsr_plan_stage_at(p, 0)->device, 0);
    tsr_plan_free(p);
    /* a fixed placement on the excluded devices says why */
    size_t bounds[2] = {0, tsr_model_layer_count(m)};
    int dev = 1;
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, bounds, &dev, 1, &p), TSR_ERR_INVALID_ARG);
    assert_error_has(ctx, "devices[0]: 1 (opencl:0:0) is a second path");
    dev = 3;
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, bounds, &dev, 1, &p), TSR_ERR_INVALID_ARG);
    assert_error_has(ctx, "without a compute rate");
    dev = 7;
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, bounds, &dev, 1, &p), TSR_ERR_NOT_FOUND);
    assert_error_has(ctx, "devices[0]: 7");
    /* nothing usable at all */
    t->devices[0].usable = 0;
    t->devices[1].usable = 0;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_ERR_NO_DEVICE);
    assert_error_has(ctx, "none of the topology's 4 devices");
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* With a cluster view only devices a rank drives are used, and stages carry the rank. */
static void test_ranks(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    tsr_topology *t;
    assert_int_equal(tsr_topology_alloc(ctx, 1, 3, 2, &t), TSR_OK);
    snprintf(t->hosts[0].hostname, 64, "node0");
    for (int i = 0; i < 3; i++) {
        tsr_device_info *d = &t->devices[i];
        snprintf(d->id, sizeof d->id, "opencl:0:%d", i);
        snprintf(d->name, sizeof d->name, "gpu");
        d->kind = TSR_DEVICE_GPU, d->backend = TSR_BACKEND_OPENCL;
        d->global_mem_bytes = 1ull << 33, d->peak_gflops = 1000 * (i + 1);
        d->same_as = -1, d->usable = 1;
    }
    t->ranks[0] = (tsr_rank_info){.rank = 0, .local_size = 2, .device = 2};
    t->ranks[1] = (tsr_rank_info){.rank = 1, .local_rank = 1, .local_size = 2, .device = 0};
    tsr_model *m = make_model(ctx, "mlp", TSR_MODEL_INPUT_MNIST);
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.batch = 1024;
    tsr_plan *p = NULL;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
    for (size_t i = 0; i < tsr_plan_stage_count(p); i++) {
        const tsr_plan_stage *s = tsr_plan_stage_at(p, i);
        assert_true(s->device == 0 || s->device == 2);
        assert_int_equal(s->rank, s->device == 2 ? 0 : 1);
    }
    tsr_plan_free(p);
    t->ranks[0].device = t->ranks[1].device = -1;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_ERR_NO_DEVICE);
    assert_error_has(ctx, "driven by a rank");
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* Hybrid: R copies of the pipeline on identical devices, plus the gradient allreduce. */
static void test_replicas(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[6] = {
        {"host", "cpu", TSR_DEVICE_HOST, 0, 1ull << 35, 300, 40, 0, 0, 1},
        {"opencl:0:0", "big", TSR_DEVICE_GPU, 0, 1ull << 34, 8000, 900, 12, 13, 8},
        {"opencl:0:1", "big", TSR_DEVICE_GPU, 0, 1ull << 34, 8000, 900, 12, 13, 8},
        {"opencl:0:2", "big", TSR_DEVICE_GPU, 0, 1ull << 34, 8000, 900, 12, 13, 8},
        {"opencl:0:3", "big", TSR_DEVICE_GPU, 0, 1ull << 34, 8000, 900, 12, 13, 8},
        {"opencl:0:4", "small", TSR_DEVICE_GPU, 0, 1ull << 33, 3000, 300, 6, 6, 8},
    };
    tsr_topology *t = make_topo(ctx, 1, ds, 6);
    tsr_model *m = make_model(ctx, "conv5x5:32,relu,pool2,conv5x5:64,relu,pool2,dense:1024,"
                                   "relu,dense:1024,relu,dense:10",
                              TSR_MODEL_INPUT_MNIST);
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.batch = 512;
    o.replicas = 2;
    tsr_plan *p = NULL;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
    assert_int_equal(tsr_plan_replicas(p), 2);
    size_t S = tsr_plan_stage_count(p);
    assert_true(S >= 1 && S <= 2); /* only the 4 "big" GPUs come in pairs */
    int seen[6] = {0};
    double ar = 0, worst = 0;
    for (size_t i = 0; i < S; i++) {
        const tsr_plan_stage *s = tsr_plan_stage_at(p, i);
        assert_int_equal(tsr_plan_replica_device(p, 0, i), s->device);
        for (int r = 0; r < 2; r++) {
            int d = tsr_plan_replica_device(p, r, i);
            assert_true(d >= 1 && d <= 4);
            assert_int_equal(seen[d]++, 0);
        }
        tsr_layer_info in;
        double bytes = 0;
        for (size_t l = s->first; l < s->last; l++) {
            assert_int_equal(tsr_model_layer_info(m, l, 1, &in), TSR_OK);
            bytes += (double)in.param_bytes;
        }
        ar = fmax(ar, 2.0 * (2 - 1) / 2 * bytes / 12e9); /* ring, at min(h2d, d2h) */
        worst = fmax(worst, s->forward_s + s->backward_s + s->send_s);
    }
    assert_int_equal(tsr_plan_replica_device(p, 2, 0), -1);
    assert_true(fabs(tsr_plan_allreduce_seconds(p) - ar) < 1e-12 * ar);
    double want = (double)(tsr_plan_microbatches(p) + S - 1) * worst + ar;
    assert_true(fabs(tsr_plan_step_seconds(p) - want) < 1e-12 * want);
    assert_int_equal(tsr_plan_microbatch_size(p) * tsr_plan_microbatches(p) >= 256, 1);
    tsr_plan_free(p);
    /* more replicas than any class has members */
    o.replicas = 5;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_ERR_NO_DEVICE);
    assert_error_has(ctx, "replicas: 5");
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* ---------------------------------------------------------------- options */

static void test_bad_options(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[1] = {{"host", "cpu", TSR_DEVICE_HOST, 0, 1ull << 33, 200, 20, 0, 0, 1}};
    tsr_topology *t = make_topo(ctx, 1, ds, 1);
    tsr_model *m = make_model(ctx, "mlp", TSR_MODEL_INPUT_MNIST);
    tsr_plan_options o;
    tsr_plan *p = NULL;
    size_t bounds[2] = {0, tsr_model_layer_count(m)};
    int dev = 0;
#define EXPECT_BAD(field, assign)                                                                \
    do {                                                                                         \
        tsr_plan_options_init(&o);                                                               \
        assign;                                                                                  \
        assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_ERR_INVALID_ARG);               \
        assert_null(p);                                                                          \
        assert_error_has(ctx, "plan option " field);                                             \
        assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, bounds, &dev, 1, &p),               \
                         TSR_ERR_INVALID_ARG);                                                   \
        assert_error_has(ctx, "plan option " field);                                             \
    } while (0)
    EXPECT_BAD("batch: 0", o.batch = 0);
    EXPECT_BAD("memory_fraction: 0", o.memory_fraction = 0);
    EXPECT_BAD("memory_fraction: 1.5", o.memory_fraction = 1.5);
    EXPECT_BAD("memory_fraction: -0.5", o.memory_fraction = -0.5);
    EXPECT_BAD("memory_fraction: nan", o.memory_fraction = NAN);
    EXPECT_BAD("network_gbps: 0", o.network_gbps = 0);
    EXPECT_BAD("optimizer_slots: -1", o.optimizer_slots = -1);
    EXPECT_BAD("replicas: -2", o.replicas = -2);
    EXPECT_BAD("microbatches: 65", o.microbatches = 65);
    EXPECT_BAD("batch: 3 is less than the 4 replicas", (o.batch = 3, o.replicas = 4));
    /* the edges that are valid */
    tsr_plan_options_init(&o);
    o.memory_fraction = 1;
    o.microbatches = 64;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
    tsr_plan_free(p);
    assert_int_equal(tsr_plan_create(ctx, m, t, NULL, NULL), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_plan_create(ctx, NULL, t, NULL, &p), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_plan_create(ctx, m, NULL, NULL, &p), TSR_ERR_INVALID_ARG);
    /* fixed placements: bounds that do not cover the model, empty stages, a device twice */
    tsr_plan_options_init(&o);
    size_t b2[3] = {0, 3, 6}; /* mlp: 7 layers */
    int d2[2] = {0, 0};
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, b2, d2, 2, &p), TSR_ERR_INVALID_ARG);
    assert_error_has(ctx, "bounds: must run from 0 to the model's 7 layers");
    size_t b3[3] = {0, 0, 7};
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, b3, d2, 2, &p), TSR_ERR_INVALID_ARG);
    assert_error_has(ctx, "bounds[1]: 0");
    size_t b4[3] = {0, 4, 7};
    assert_int_equal(tsr_plan_from_bounds(ctx, m, t, &o, b4, d2, 2, &p), TSR_ERR_INVALID_ARG);
    assert_error_has(ctx, "devices[1]: 0 (host) is already running an earlier stage");
    tsr_plan_free(NULL);
    assert_int_equal(tsr_plan_stage_count(NULL), 0);
    assert_null(tsr_plan_stage_at(NULL, 0));
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* ---------------------------------------------------------------- text forms */

static char *plan_text(const tsr_plan *p, int json) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(json ? tsr_plan_write_json(p, f) : tsr_plan_print(p, f), TSR_OK);
    fclose(f);
    return buf;
}

typedef struct fixture3 {
    tsr_context *ctx;
    tsr_topology *t;
    tsr_model *m;
    tsr_plan *p;
} fixture3;

/* A 3-stage fixed plan over two hosts. */
static void make_fixture3(fixture3 *f) {
    f->ctx = new_ctx();
    devspec ds[3] = {
        {"opencl:0:0", "gpu", TSR_DEVICE_GPU, 0, 1ull << 34, 9000, 900, 12, 13, 8},
        {"host", "cpu", TSR_DEVICE_HOST, 0, 1ull << 35, 300, 40, 0, 0, 1},
        {"opencl:0:0", "gpu", TSR_DEVICE_GPU, 1, 1ull << 34, 9000, 900, 12, 13, 8},
    };
    f->t = make_topo(f->ctx, 2, ds, 3);
    f->m = make_model(f->ctx, "cnn", TSR_MODEL_INPUT_MNIST);
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.batch = 96;
    size_t bounds[4] = {0, 3, 6, 9};
    int devs[3] = {0, 1, 2};
    assert_int_equal(tsr_plan_from_bounds(f->ctx, f->m, f->t, &o, bounds, devs, 3, &f->p), TSR_OK);
}

static void free_fixture3(fixture3 *f) {
    tsr_plan_free(f->p);
    tsr_model_free(f->m);
    tsr_topology_free(f->t);
    tsr_context_free(f->ctx);
}

static void test_print(void **state) {
    (void)state;
    fixture3 f;
    make_fixture3(&f);
    char *s = plan_text(f.p, 0);
    assert_non_null(strstr(s, "Plan for conv5x5:32,relu,pool2"));
    assert_non_null(strstr(s, "3 stages"));
    assert_non_null(strstr(s, "<- bottleneck"));
    assert_non_null(strstr(s, "[conv5x5:32 relu pool2 | opencl:0:0@node0] ==> "
                              "[conv5x5:64 relu pool2 | host@node0] ==> "
                              "[dense:1024 relu dense:10 | opencl:0:0@node1]"));
    char want[96];
    snprintf(want, sizeof want, "bubble %.1f%% ((S-1)/(M+S-1) = 2/%zu)",
             100 * tsr_plan_bubble_fraction(f.p), tsr_plan_microbatches(f.p) + 2);
    assert_non_null(strstr(s, want));
    free(s);
    free_fixture3(&f);
}

static void test_json_round_trip(void **state) {
    (void)state;
    fixture3 f;
    make_fixture3(&f);
    char *s = plan_text(f.p, 1);
    tsr_plan *q = NULL;
    assert_int_equal(tsr_plan_parse(f.ctx, f.m, s, strlen(s), &q), TSR_OK);
    assert_int_equal(tsr_plan_stage_count(q), 3);
    for (size_t i = 0; i < 3; i++) {
        const tsr_plan_stage *a = tsr_plan_stage_at(f.p, i), *b = tsr_plan_stage_at(q, i);
        assert_int_equal(a->first, b->first);
        assert_int_equal(a->last, b->last);
        assert_int_equal(a->device, b->device);
        assert_string_equal(a->device_id, b->device_id);
        assert_int_equal(a->rank, b->rank);
        assert_true(a->forward_s == b->forward_s && a->backward_s == b->backward_s &&
                    a->send_s == b->send_s);
        assert_int_equal(a->memory_bytes, b->memory_bytes);
        assert_int_equal(a->memory_limit, b->memory_limit);
    }
    assert_true(tsr_plan_step_seconds(q) == tsr_plan_step_seconds(f.p));
    assert_int_equal(tsr_plan_bottleneck(q), tsr_plan_bottleneck(f.p));
    assert_int_equal(tsr_plan_microbatches(q), tsr_plan_microbatches(f.p));
    assert_int_equal(tsr_plan_microbatch_size(q), tsr_plan_microbatch_size(f.p));
    /* the same text again */
    char *s2 = plan_text(q, 1);
    assert_string_equal(s, s2);
    free(s2);
    tsr_plan_free(q);
    assert_int_equal(tsr_plan_parse_for(f.ctx, f.m, f.t, s, strlen(s), &q), TSR_OK);
    tsr_plan_free(q);
    /* against a topology where device 2 is another model, then has another id */
    snprintf(f.t->devices[2].name, sizeof f.t->devices[2].name, "older gpu");
    assert_int_equal(tsr_plan_parse_for(f.ctx, f.m, f.t, s, strlen(s), &q), TSR_ERR_NOT_FOUND);
    assert_error_has(f.ctx, "stages[2].device: 2 ('opencl:0:0') is a 'gpu' in the plan, a "
                            "'older gpu' in the topology");
    snprintf(f.t->devices[2].id, sizeof f.t->devices[2].id, "opencl:1:0");
    assert_int_equal(tsr_plan_parse_for(f.ctx, f.m, f.t, s, strlen(s), &q), TSR_ERR_NOT_FOUND);
    assert_null(q);
    assert_error_has(f.ctx, "stages[2].device: 2 ('opencl:0:0') is not that device");
    free(s);
    free_fixture3(&f);
}

typedef struct bad_case {
    const char *path;   /* "stages[1].first" or "format" */
    const char *value;  /* JSON text; NULL: delete */
    tsr_status status;
    const char *message;
} bad_case;

/* Sets or deletes the member at `path` (one optional [i] step) of the JSON text. */
static char *edit_json(const char *text, const char *path, const char *value) {
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    cJSON *obj = root;
    char key[64];
    const char *dot = strchr(path, '.');
    if (dot) {
        char arr[32];
        int idx;
        assert_int_equal(sscanf(path, "%31[^[][%d]", arr, &idx), 2);
        obj = cJSON_GetArrayItem(cJSON_GetObjectItem(root, arr), idx);
        assert_non_null(obj);
        snprintf(key, sizeof key, "%s", dot + 1);
    } else {
        snprintf(key, sizeof key, "%s", path);
    }
    if (value) {
        cJSON *v = cJSON_Parse(value);
        assert_non_null(v);
        if (cJSON_GetObjectItem(obj, key))
            cJSON_ReplaceItemInObject(obj, key, v);
        else
            cJSON_AddItemToObject(obj, key, v);
    } else {
        cJSON_DeleteItemFromObject(obj, key);
    }
    char *out = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return out;
}

static void test_parse_rejects(void **state) {
    (void)state;
    fixture3 f;
    make_fixture3(&f);
    char *good = plan_text(f.p, 1);
    tsr_plan *q = NULL;
    static const char *garbage[] = {"", "{", "[1,2]", "null", "{\"format\":1}", "tessera-plan"};
    for (size_t i = 0; i < TSR_ARRAY_SIZE(garbage); i++) {
        assert_int_equal(tsr_plan_parse(f.ctx, f.m, garbage[i], strlen(garbage[i]), &q),
                         TSR_ERR_PARSE);
        assert_null(q);
    }
    /* text cut short */
    assert_int_equal(tsr_plan_parse(f.ctx, f.m, good, strlen(good) / 2, &q), TSR_ERR_PARSE);
    assert_error_has(f.ctx, "not valid JSON");
    const bad_case cases[] = {
        {"format", "\"tessera-topology\"", TSR_ERR_PARSE, "plan format: 'tessera-topology'"},
        {"version", "2", TSR_ERR_PARSE, "plan version: 2"},
        {"model", "\"mlp\"", TSR_ERR_MISMATCH, "plan model: plan for 'mlp'"},
        {"model", NULL, TSR_ERR_PARSE, "plan model: missing"},
        {"layers", "7", TSR_ERR_MISMATCH, "plan layers: 7, the model has 9"},
        {"batch", "0", TSR_ERR_PARSE, "plan batch: expected an integer in 1.."},
        {"microbatches", "1000", TSR_ERR_PARSE, "plan microbatches: 1000"},
        {"memory_fraction", "1.5", TSR_ERR_PARSE, "plan memory_fraction: 1.5"},
        {"stages", "[]", TSR_ERR_PARSE, "plan stages: expected a non-empty array"},
        {"devices", NULL, TSR_ERR_PARSE, "plan devices: missing"},
        {"stages[1].first", "4", TSR_ERR_PARSE, "plan stages[1].first: 4, but the previous stage "
                                                "ends at 3 (a gap)"},
        {"stages[1].first", "2", TSR_ERR_PARSE, "plan stages[1].first: 2, but the previous stage "
                                                "ends at 3 (an overlap)"},
        {"stages[0].first", "1", TSR_ERR_PARSE, "plan stages[0].first: 1, but the model starts at 0"},
        {"stages[2].last", "10", TSR_ERR_PARSE, "plan stages[2].last: 10 is past the model's 9"},
        {"stages[2].last", "8", TSR_ERR_PARSE, "the last stage ends at layer 8, the model has 9"},
        {"stages[1].last", "3", TSR_ERR_PARSE, "plan stages[1].last: 3, not after first 3"},
        {"stages[1].last", "-1", TSR_ERR_PARSE, "plan stages[1].last: expected an integer"},
        {"stages[1].first", "\"3\"", TSR_ERR_PARSE, "plan stages[1].first: expected an integer"},
        {"stages[1].device", "7", TSR_ERR_NOT_FOUND,
         "plan stages[1].device: 7 ('host') is not among the plan's devices"},
        {"stages[1].device_id", "\"opencl:9:9\"", TSR_ERR_NOT_FOUND,
         "plan stages[1].device_id: 'opencl:9:9', but the plan's devices list device 1 as 'host'"},
        {"stages[1].device_id", NULL, TSR_ERR_PARSE, "plan stages[1].device_id: missing"},
        {"stages[2].device", "1", TSR_ERR_NOT_FOUND,
         "plan stages[2].device_id: 'opencl:0:0', but the plan's devices list device 1 as 'host'"},
        {"stages[0].forward_s", "-1", TSR_ERR_PARSE, "plan stages[0].forward_s: expected a number"},
        {"devices[1].index", "0", TSR_ERR_PARSE, "plan devices[1].index: 0 is listed twice"},
        {"devices[0].kind", "\"toaster\"", TSR_ERR_PARSE, "plan devices[0].kind"},
        {"input", "{\"channels\":3,\"height\":28,\"width\":28,\"classes\":10}", TSR_ERR_MISMATCH,
         "plan input: 3x28x28 with 10 classes"},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(cases); i++) {
        char *bad = edit_json(good, cases[i].path, cases[i].value);
        tsr_status st = tsr_plan_parse(f.ctx, f.m, bad, strlen(bad), &q);
        if (st != cases[i].status || !strstr(tsr_context_last_error(f.ctx), cases[i].message))
            fail_msg("%s = %s: %s '%s', want %s '%s'", cases[i].path,
                     cases[i].value ? cases[i].value : "(deleted)", tsr_status_name(st),
                     tsr_context_last_error(f.ctx), tsr_status_name(cases[i].status),
                     cases[i].message);
        assert_null(q);
        free(bad);
    }
    /* a device used by two stages */
    char *a = edit_json(good, "stages[2].device", "0");
    char *b = edit_json(a, "stages[2].device_id", "\"opencl:0:0\"");
    assert_int_equal(tsr_plan_parse(f.ctx, f.m, b, strlen(b), &q), TSR_ERR_PARSE);
    assert_error_has(f.ctx, "plan stages[2].device: 0 already runs stage 0");
    free(a);
    free(b);
    /* replicas: each stage of each replica on its own device */
    const char *rep2 = "{\"format\":\"tessera-plan\",\"version\":1,"
                       "\"model\":\"conv5x5:32,relu,pool2,conv5x5:64,relu,pool2,dense:1024,relu,"
                       "dense:10\",\"batch\":32,\"microbatches\":4,\"replicas\":2,"
                       "\"devices\":[{\"index\":1,\"id\":\"host\"},{\"index\":4,\"id\":\"gpu\"}],"
                       "\"stages\":[{\"first\":0,\"last\":9,\"device\":1,\"device_id\":\"host\"}],"
                       "\"replica_devices\":[[1],[%d]]}";
    char rbuf[1024];
    snprintf(rbuf, sizeof rbuf, rep2, 4);
    assert_int_equal(tsr_plan_parse(f.ctx, f.m, rbuf, strlen(rbuf), &q), TSR_OK);
    assert_int_equal(tsr_plan_replicas(q), 2);
    assert_int_equal(tsr_plan_replica_device(q, 1, 0), 4);
    tsr_plan_free(q);
    snprintf(rbuf, sizeof rbuf, rep2, 1);
    assert_int_equal(tsr_plan_parse(f.ctx, f.m, rbuf, strlen(rbuf), &q), TSR_ERR_PARSE);
    assert_error_has(f.ctx, "plan replica_devices[1]: entry 0: device 1 already runs stage 0 of "
                            "replica 0");
    snprintf(rbuf, sizeof rbuf, rep2, 7);
    assert_int_equal(tsr_plan_parse(f.ctx, f.m, rbuf, strlen(rbuf), &q), TSR_ERR_NOT_FOUND);
    assert_error_has(f.ctx, "plan replica_devices[1]: entry 0 is not among the plan's devices");
    /* a hand-written minimal plan: no predictions, a single stage */
    const char *mini = "{\"format\":\"tessera-plan\",\"version\":1,"
                       "\"model\":\"conv5x5:32,relu,pool2,conv5x5:64,relu,pool2,dense:1024,relu,"
                       "dense:10\",\"batch\":32,\"microbatches\":4,"
                       "\"devices\":[{\"index\":1,\"id\":\"host\"}],"
                       "\"stages\":[{\"first\":0,\"last\":9,\"device\":1,\"device_id\":\"host\"}]}";
    assert_int_equal(tsr_plan_parse(f.ctx, f.m, mini, strlen(mini), &q), TSR_OK);
    assert_int_equal(tsr_plan_stage_count(q), 1);
    assert_int_equal(tsr_plan_microbatch_size(q), 8);
    assert_int_equal(tsr_plan_stage_at(q, 0)->rank, -1);
    tsr_plan_free(q);
    free(good);
    free_fixture3(&f);
}

/* ---------------------------------------------------------------- scale and failures */

/* 16 devices (4 kinds on 2 hosts) and a 50-layer model: the exact search stays fast. */
static void test_scale_16_devices_50_layers(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec kinds[4] = {
        {"", "h100", TSR_DEVICE_GPU, 0, 80ull << 30, 60000, 2800, 25, 25, 9},
        {"", "v100", TSR_DEVICE_GPU, 0, 16ull << 30, 14000, 800, 12, 12, 8},
        {"", "a10", TSR_DEVICE_GPU, 0, 24ull << 30, 30000, 600, 12, 12, 8},
        {"", "epyc", TSR_DEVICE_HOST, 0, 256ull << 30, 3000, 100, 0, 0, 1},
    };
    devspec ds[16];
    char ids[16][16];
    int n = 0;
    for (int h = 0; h < 2; h++)
        for (int k = 0; k < 4; k++)
            for (int c = 0; c < (k == 3 ? 1 : 7 - 2 * k) && n < 16; c++) {
                ds[n] = kinds[k];
                ds[n].host = h;
                if (k == 3)
                    snprintf(ids[n], sizeof ids[n], "host");
                else
                    snprintf(ids[n], sizeof ids[n], "opencl:0:%d", n % 8);
                ds[n].id = ids[n];
                n++;
            }
    assert_int_equal(n, 16);
    tsr_topology *t = make_topo(ctx, 2, ds, 16);
    char spec[1024];
    size_t at = 0;
    for (int i = 0; i < 16; i++)
        at += (size_t)snprintf(spec + at, sizeof spec - at, "dense:%d,relu,dropout:0.1,",
                               2048 + 512 * (i % 5));
    snprintf(spec + at, sizeof spec - at, "dense:10");
    tsr_model *m = make_model(ctx, spec, TSR_MODEL_INPUT_MNIST);
    assert_int_equal(tsr_model_layer_count(m), 49);
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.batch = 8192;
    o.optimizer_slots = 2;
    tsr_plan *p = NULL;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
    print_message("16 devices (4 kinds), 49 layers: %zu stages, %.3g search steps, optimal %d\n",
                  tsr_plan_stage_count(p), p->search_work, tsr_plan_optimal(p));
    if (getenv("TSR_TEST_PLAN_PRINT")) tsr_plan_print(p, stderr);
    double step_classes = tsr_plan_step_seconds(p);
    assert_int_equal(tsr_plan_optimal(p), 1);
    check_memory(p);
    check_reevaluates(ctx, m, t, &o, p);
    /* the search's cost, counted (not timed): classes of equal devices keep it exact and well
     * inside the work budget (1.6e7 of 1.5e8 steps) */
    assert_true(p->search_work > 0 && p->search_work < 0.25 * PLAN_BUDGET);
    tsr_plan_free(p);
    /* 16 devices all different: the search may settle at its budget, but no further */
    for (int i = 0; i < 16; i++) t->devices[i].peak_gflops *= 1 + 0.01 * i;
    assert_int_equal(tsr_plan_create(ctx, m, t, &o, &p), TSR_OK);
    print_message("16 distinct devices, 49 layers: %zu stages, %.3g search steps, optimal %d\n",
                  tsr_plan_stage_count(p), p->search_work, tsr_plan_optimal(p));
    if (getenv("TSR_TEST_PLAN_PRINT")) tsr_plan_print(p, stderr);
    check_memory(p);
    check_reevaluates(ctx, m, t, &o, p);
    /* every device is at least as fast as before: the (heuristic) answer must not be worse */
    assert_true(tsr_plan_step_seconds(p) <= step_classes);
    /* the local search starts no move past the budget; one move is far below 5 % of it */
    assert_true(p->search_work > 0 && p->search_work < 1.05 * PLAN_BUDGET);
    tsr_plan_free(p);
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

static void test_allocation_failures(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx();
    devspec ds[3] = {
        {"host", "cpu", TSR_DEVICE_HOST, 0, 1ull << 33, 300, 40, 0, 0, 1},
        {"opencl:0:0", "gpu", TSR_DEVICE_GPU, 0, 1ull << 33, 9000, 900, 12, 13, 8},
        {"opencl:0:1", "gpu", TSR_DEVICE_GPU, 0, 1ull << 33, 9000, 900, 12, 13, 8},
    };
    tsr_topology *t = make_topo(ctx, 1, ds, 3);
    tsr_model *m = make_model(ctx, "cnn", TSR_MODEL_INPUT_MNIST);
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    o.batch = 256;
    o.replicas = 2;
    int succeeded = 0;
    for (long fail_at = 1; fail_at < 400 && !succeeded; fail_at++) {
        tsr_test_alloc ta;
        tsr_test_alloc_init(&ta, 0);
        tsr_context_options co;
        tsr_context_options_init(&co);
        co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
        co.log_level = TSR_LOG_OFF;
        co.allocator = &ta.allocator;
        tsr_context *fc;
        assert_int_equal(tsr_context_create(&fc, &co), TSR_OK);
        long live = ta.live;
        ta.fail_at = ta.calls + fail_at;
        tsr_plan *p = NULL, *q = NULL;
        tsr_status st = tsr_plan_create(fc, m, t, &o, &p);
        char *s = NULL;
        if (st == TSR_OK) {
            s = plan_text(p, 1);
            st = tsr_plan_parse(fc, m, s, strlen(s), &q);
        }
        if (st == TSR_OK)
            succeeded = 1;
        else
            assert_int_equal(st, TSR_ERR_NO_MEMORY);
        free(s);
        tsr_plan_free(p);
        tsr_plan_free(q);
        assert_int_equal(ta.live, live);
        ta.fail_at = 0;
        tsr_context_free(fc);
        assert_int_equal(ta.live, 0);
    }
    assert_true(succeeded);
    tsr_model_free(m);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cost_model_reference),
        cmocka_unit_test(test_cost_model_gemm_by_size),
        cmocka_unit_test(test_search_matches_brute_force),
        cmocka_unit_test(test_single_device),
        cmocka_unit_test(test_precision_memory), cmocka_unit_test(test_fast_gpu_gets_more_layers),
        cmocka_unit_test(test_memory_limit_honoured),
        cmocka_unit_test(test_infeasible_names_layer),
        cmocka_unit_test(test_candidates),
        cmocka_unit_test(test_ranks),
        cmocka_unit_test(test_replicas),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_scale_16_devices_50_layers),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
