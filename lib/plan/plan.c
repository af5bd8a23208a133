/* Placement planner: contiguous stages of layers on devices of different speed and memory.
 *
 * Cost model (every figure per micro-batch of `mb` samples; each assumption says why):
 *  - Layer time on a device = its FLOPs / effective rate + kernel launches x launch latency.
 *    Dense and convolution layers are GEMMs (dense: mb x units x inputs; convolution through
 *    im2col: filters x (mb * output pixels) x (channels * kh * kw)); their rate is the
 *    calibrated SGEMM rate at the cube size n = cbrt(M N K) of that GEMM, interpolated in log n
 *    between calibrated sizes and flat above the largest; below the smallest, launch latency +
 *    work at that size's rate net of its launch (gemm_seconds). Without calibration by size
 *    the best measured SGEMM rate is used, and without any measurement PLAN_EFFICIENCY x peak
 *    (CLBlast reached 32.8 of the H100's 66.9 TFLOP/s, OpenBLAS 77 of 156 GF/s here: ~0.5).
 *  - Element-wise layers (relu, pooling, dropout) are bound by memory bandwidth: forward moves
 *    input + output, backward input + 2 x output (output gradient and saved state in, input
 *    gradient out), at the measured copy bandwidth (else PLAN_BALANCE bytes per FLOP of peak,
 *    the balance of current GPUs and CPUs). Flatten is a view: no time.
 *  - Convolutions also move their im2col column matrix (K x N floats per sample) at the copy
 *    bandwidth: written forward, written and folded back (col2im) backward.
 *  - Launches: dense/conv 2 kernels forward (GEMM, bias; + im2col) and 3 backward (two GEMMs,
 *    bias gradient; + col2im), element-wise layers 1 each way; latency measured, else 1 us on
 *    the host backend and 10 us through OpenCL (9 us measured on the H100). A GEMM rate
 *    calibrated by size was timed per call, so it already holds the GEMM's launch (H100:
 *    counting it twice predicted half the measured MLP throughput).
 *  - Hand-over between stages i and i+1: the boundary layer's output (activations forward,
 *    their gradients backward: 2 x bytes) costs bytes / d2h of the sender + bytes / h2d of the
 *    receiver (the host backend copies at its memory bandwidth; unmeasured links 10 GB/s, PCIe
 *    3 x16), plus bytes / network_gbps when the devices are on different hosts. Charged to the
 *    sender as send_s: one device's time per micro-batch is forward + backward + send.
 *  - Micro-batches: M as asked, else 4 x S (1 for one stage), at most the batch; micro-batch
 *    size ceil(batch / M) (the last may be smaller: the prediction takes all as full).
 *  - Step (1F1B or GPipe): (M + S - 1) x max over stages of (forward + backward + send): the
 *    bottleneck stage sets the pace, and the S - 1 extra slots are the bubble. With R replicas,
 *    plus a ring allreduce of each stage's gradients over its R copies, 2 (R-1)/R x bytes at the
 *    slower of the device's h2d and d2h (through host memory; they share a host), the largest
 *    stage's.
 *  - Memory of stage i: the stage's own memory plan at the micro-batch size (lib/model/stage.c's
 *    tsr_stage_plan_memory, what tsr_stage_create allocates: parameters, gradients, one
 *    activation set with its input, outputs, backward state and workspace, the
 *    activation-gradient buffers), plus one more activation set for each further micro-batch in
 *    flight (1F1B keeps S - i, at most M) and the optimizer state (slots x parameter bytes). It
 *    must fit memory_fraction x the device's global memory. A split that would leave a layer
 *    reading another stage's output (other than its input) is not a stage.
 *  - Candidates: usable devices, one of each same_as pair (the faster), with a rate (measured or
 *    peak); with a cluster view, only devices a rank drives.
 *
 * Search (tsr_plan_create): for each stage count S (1 .. min(layers, devices, max_stages)), the
 * device order and the contiguous split together. Identical devices (same host, name, memory
 * and capability) form a class, so orders are sequences of classes. For one order the optimal
 * split is the linear-partition dynamic program (PipeDream's planner)
 *   f_j(e) = min over b < e of max(f_{j-1}(b), cost_j(b, e))
 * (f_j(e): least bottleneck of stages 0..j covering layers [0, e); cost_j includes the send to
 * stage j+1, so row j is computed once stage j+1's class is known). The future of a prefix
 * depends only on which classes it used and the class of its next stage, and the recurrence
 * distributes over a pointwise minimum of rows, so prefixes reaching the same (class counts,
 * next class) merge into one state whose row is the pointwise minimum (Held-Karp over
 * multisets): exact, with at most prod(count_k + 1) x c states per depth for c classes, each
 * expanded to c successors in O(L^2). Total O(S_max^2 x states x c x L^2); a node with 4 kinds of
 * GPU/CPU takes a few hundred states. Pruning, exact: a state whose rows, completed by the
 * remaining layers spread over the free devices at their best relative speed (capacity bound:
 * a device whose every layer takes >= rho x the fastest class's time does <= 1/rho of the
 * work), cannot beat the best step found is dropped.
 * With many distinct devices (16 all different: 2^16 x 16 states per depth) a work budget
 * (PLAN_BUDGET inner steps, ~0.3 s) caps the states kept per depth to the most promising by
 * that bound (a beam), then a local search (swap, replace, insert, drop one stage's device,
 * each with its optimal split) improves the result; tsr_plan_optimal() then says 0. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/core/precision.h"
#include "lib/plan/plan_internal.h"
#include "lib/model/stage.h"
#include "topology/topology.h"

#define PLAN_EFFICIENCY 0.5      /* fraction of peak an uncalibrated device reaches in SGEMM */
#define PLAN_BALANCE 0.05        /* GB/s of memory bandwidth per GFLOP/s of peak when unmeasured */
#define PLAN_LINK_GBPS 10.0      /* h2d/d2h when unmeasured (PCIe 3 x16) */
#define PLAN_LAUNCH_HOST_S 1e-6  /* launch latency when unmeasured, host backend */
#define PLAN_LAUNCH_OPENCL_S 1e-5
#define PLAN_LEVEL_BYTES (32u << 20) /* candidate states of one level */
#define PLAN_BEAM_MAX 8192.0
#define PLAN_BEAM_MIN 16

void tsr_plan_options_init(tsr_plan_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->batch = 64;
    o->microbatches = 0;
    o->optimizer_slots = 0;
    o->memory_fraction = 0.9;
    o->network_gbps = 10.0;
    o->max_stages = 0;
    o->replicas = 1;
}

static tsr_status check_options(tsr_context *ctx, const tsr_plan_options *o) {
    if (o->batch == 0)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "plan option batch: 0, must be >= 1");
    if (!(o->memory_fraction > 0 && o->memory_fraction <= 1))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "plan option memory_fraction: %g, must be in (0, 1]", o->memory_fraction);
    if (!(o->network_gbps > 0) || !isfinite(o->network_gbps))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "plan option network_gbps: %g, must be > 0",
                         o->network_gbps);
    if (o->optimizer_slots < 0 || o->optimizer_slots > 16)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "plan option optimizer_slots: %d, must be in 0..16 (0 SGD, 2 Adam)",
                         o->optimizer_slots);
    if (o->replicas < 0)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "plan option replicas: %d, must be >= 0",
                         o->replicas);
    TSR_TRY(tsr_precision_check(ctx, "plan option ", o->precision));
    size_t r = o->replicas > 1 ? (size_t)o->replicas : 1;
    if (o->batch < r)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "plan option batch: %zu is less than the %zu replicas (one sample each)",
                         o->batch, r);
    size_t rb = (o->batch + r - 1) / r;
    if (o->microbatches > rb)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "plan option microbatches: %zu is more than the %zu samples of a "
                         "replica's batch",
                         o->microbatches, rb);
    return TSR_OK;
}

/* ---------------------------------------------------------------- cost model */

/* One layer, in the figures the cost model uses (per sample where it scales with the batch). */
typedef struct lay {
    tsr_layer_kind kind;
    double flops_f, flops_b;  /* per sample */
    double gm, gn, gk;        /* GEMM shape at one sample: M, N, K; `per` says which scales */
    int batch_in_m;           /* dense: M = mb; conv: N = mb x pixels */
    double in_elems, out_elems;
    uint64_t param_mem;       /* params x 4 x (2 + slots) */
    uint64_t out_per_sample;  /* output bytes of one sample (the hand-over) */
} lay;

/* A device the plan may use, with every figure the model needs filled in. */
typedef struct cand {
    int dev;                  /* topology index */
    int cls;
    int host;
    const tsr_device_info *d;
    double mem_bw, d2h, h2d;  /* GB/s */
    double launch_s;
    uint64_t limit;
} cand;

static double gemm_rate(const tsr_device_info *d, double n) {
    if (d->gemm_points > 0) {
        int k = d->gemm_points > 4 ? 4 : d->gemm_points;
        /* points sorted by size (calibration measures growing sizes) */
        if (n <= d->gemm_n[0]) return d->gemm_gflops_n[0];
        for (int i = 1; i < k; i++) {
            if (n <= d->gemm_n[i]) {
                double a = log(d->gemm_n[i - 1]), b = log(d->gemm_n[i]);
                double t = b > a ? (log(n) - a) / (b - a) : 1;
                return d->gemm_gflops_n[i - 1] + t * (d->gemm_gflops_n[i] - d->gemm_gflops_n[i - 1]);
            }
        }
        return d->gemm_gflops_n[k - 1];
    }
    if (d->gemm_gflops > 0) return d->gemm_gflops;
    return d->peak_gflops * PLAN_EFFICIENCY;
}

/* Seconds of `flops` of GEMM work done in `calls` GEMMs of cube size n on c. A rate
 * calibrated by size was timed per call, its launch included. Below the smallest size timed,
 * latency + throughput: each call pays the launch, the work runs at the rate that size's time
 * less one launch gives (continuous at that size; the linear fall of the rate assumed before
 * made a one-point calibration at 8192^3 predict 8x too slow at 1024). */
static double gemm_seconds(const cand *c, double flops, double n, int calls) {
    const tsr_device_info *d = c->d;
    if (d->gemm_points > 0 && n >= d->gemm_n[0]) return flops / (gemm_rate(d, n) * 1e9);
    if (d->gemm_points > 0) {
        double f0 = 2.0 * d->gemm_n[0] * d->gemm_n[0] * d->gemm_n[0];
        double t0 = f0 / (d->gemm_gflops_n[0] * 1e9), work = t0 - c->launch_s;
        if (work < 0.1 * t0) work = 0.1 * t0; /* a launch figure larger than the whole call */
        return flops * work / f0 + calls * c->launch_s;
    }
    return flops / (gemm_rate(d, n) * 1e9) + calls * c->launch_s;
}

static int has_rate(const tsr_device_info *d) {
    if (d->gemm_points > 0) {
        for (int i = 0; i < d->gemm_points && i < 4; i++)
            if (!(d->gemm_gflops_n[i] > 0) || d->gemm_n[i] == 0 ||
                (i && d->gemm_n[i] <= d->gemm_n[i - 1]))
                return 0;
        return 1;
    }
    return d->gemm_gflops > 0 || d->peak_gflops > 0;
}

static void fill_cand(cand *c, const tsr_device_info *d, int dev, double fraction) {
    memset(c, 0, sizeof *c);
    c->dev = dev;
    c->d = d;
    c->host = d->host;
    double peak = d->peak_gflops > 0 ? d->peak_gflops : gemm_rate(d, 1e9) / PLAN_EFFICIENCY;
    c->mem_bw = d->mem_bw_gbps > 0 ? d->mem_bw_gbps : peak * PLAN_BALANCE;
    if (d->backend == TSR_BACKEND_HOST) {
        c->d2h = c->h2d = c->mem_bw; /* a memcpy */
    } else {
        c->d2h = d->d2h_gbps > 0 ? d->d2h_gbps : PLAN_LINK_GBPS;
        c->h2d = d->h2d_gbps > 0 ? d->h2d_gbps : PLAN_LINK_GBPS;
    }
    c->launch_s = d->launch_us > 0 ? d->launch_us * 1e-6
                  : d->backend == TSR_BACKEND_HOST ? PLAN_LAUNCH_HOST_S
                                                   : PLAN_LAUNCH_OPENCL_S;
    c->limit = (uint64_t)(fraction * (double)d->global_mem_bytes);
}

/* Forward and backward seconds of layer `l` on `c` at micro-batch `mb`. */
static void layer_time(const lay *l, const cand *c, size_t mb, double *fwd, double *bwd) {
    double n = (double)mb;
    switch (l->kind) {
    case TSR_LAYER_DENSE:
    case TSR_LAYER_CONV2D:
    case TSR_LAYER_LINEAR:
    case TSR_LAYER_LMHEAD:
    case TSR_LAYER_ATTENTION: {
        double m = l->gm, nn = l->gn, k = l->gk;
        if (l->batch_in_m)
            m *= n;
        else
            nn *= n;
        double gn = cbrt(m * nn * k);
        /* besides the GEMMs (1 forward, 2 backward): bias, bias gradient; a convolution adds
         * im2col and col2im */
        int conv = l->kind == TSR_LAYER_CONV2D;
        double lf = 1 + conv, lb = 1 + conv;
        /* im2col writes the column matrix (K x N per sample) from the input; backward writes
         * the column gradient and col2im folds it back into the input gradient */
        double cols = conv ? l->gk * l->gn : 0, in = conv ? l->in_elems : 0;
        double bw = c->mem_bw * 1e9;
        *fwd = gemm_seconds(c, l->flops_f * n, gn, 1) + (cols + in) * 4 * n / bw + lf * c->launch_s;
        *bwd = gemm_seconds(c, l->flops_b * n, gn, 2) + (2 * cols + in) * 4 * n / bw +
               lb * c->launch_s;
        break;
    }
    case TSR_LAYER_FLATTEN: *fwd = *bwd = 0; break;
    default: {
        double bw = c->mem_bw * 1e9;
        *fwd = (l->in_elems + l->out_elems) * 4 * n / bw + c->launch_s;
        *bwd = (l->in_elems + 2 * l->out_elems) * 4 * n / bw + c->launch_s;
        break;
    }
    }
}

/* Hand-over of `bytes` (one way) from device a to another device b, both directions of one
 * micro-batch (the same device: nothing to move). */
static double xfer(const cand *a, const cand *b, double bytes, double net_gbps) {
    double t = 2 * bytes * (1 / (a->d2h * 1e9) + 1 / (b->h2d * 1e9));
    if (a->host != b->host) t += 2 * bytes / (net_gbps * 1e9);
    return t;
}

/* Ring allreduce of `bytes` among `r` copies on devices like c. */
static double allreduce_time(const cand *c, double bytes, int r) {
    if (r <= 1) return 0;
    double bw = (c->d2h < c->h2d ? c->d2h : c->h2d) * 1e9;
    return 2.0 * (r - 1) / r * bytes / bw;
}

static tsr_status read_layers(tsr_context *ctx, const tsr_model *model, int slots, lay **out) {
    size_t L = tsr_model_layer_count(model);
    lay *ls = tsr_calloc(ctx, L, sizeof *ls);
    if (!ls) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan: layer table");
    for (size_t i = 0; i < L; i++) {
        tsr_layer_info in;
        tsr_status st = tsr_model_layer_info(model, i, 1, &in);
        if (st != TSR_OK) {
            tsr_free(ctx, ls);
            return st;
        }
        lay *l = &ls[i];
        l->kind = in.kind;
        l->flops_f = (double)in.forward_flops;
        l->flops_b = (double)in.backward_flops;
        l->in_elems = (double)in.in_c * in.in_h * in.in_w;
        l->out_elems = (double)in.out_c * in.out_h * in.out_w;
        l->param_mem = (uint64_t)in.params * 4u * (2u + (unsigned)slots);
        l->out_per_sample = (uint64_t)(l->out_elems * 4);
        if (in.kind == TSR_LAYER_DENSE) {
            l->gm = 1, l->gn = (double)in.out_c * in.out_h * in.out_w, l->gk = l->in_elems;
            l->batch_in_m = 1;
        } else if (in.kind == TSR_LAYER_LINEAR || in.kind == TSR_LAYER_LMHEAD ||
                   in.kind == TSR_LAYER_ATTENTION) {
            /* token rows through one GEMM: [T, in] x [in, out]; attention's score and value
             * products are T x T x C in all (their rate is looked up at that size) */
            l->gm = (double)in.in_c;
            l->gn = in.kind == TSR_LAYER_ATTENTION ? (double)in.in_c : (double)in.out_h * in.out_w;
            l->gk = in.kind == TSR_LAYER_ATTENTION ? (double)in.out_h : (double)in.in_h * in.in_w;
            l->batch_in_m = 1;
        } else if (in.kind == TSR_LAYER_CONV2D) {
            /* weights = filters x (channels x kh x kw), plus one bias per filter */
            double k = in.out_c ? (double)in.params / in.out_c - 1 : 1;
            l->gm = (double)in.out_c, l->gn = (double)in.out_h * in.out_w, l->gk = k > 1 ? k : 1;
            l->batch_in_m = 0;
        }
    }
    *out = ls;
    return TSR_OK;
}

/* Stage figures for one placement, shared by the search's final plan, fixed placements and
 * the brute-force checks in the tests. */
typedef struct env {
    tsr_context *ctx;
    const tsr_model *model;
    const tsr_topology *topo;
    tsr_plan_options o;
    size_t L;
    lay *layers;
    int replicas;
    size_t rb;                /* samples per replica per step */
} env;

static void free_env(env *e) { tsr_free(e->ctx, e->layers); }

/* Memory of a stage of layers [b, end): `fixed` bytes whatever the micro-batches in flight,
 * plus `act` per micro-batch held; fixed = UINT64_MAX: not a stage (*err: out of memory). */
typedef struct stage_need {
    uint64_t fixed, act;
} stage_need;

static stage_need stage_memory(const env *e, size_t b, size_t end, size_t mb, tsr_status *err) {
    stage_need n = {UINT64_MAX, 0};
    for (size_t l = b; l < end; l++) /* a layer reading an earlier stage's output */
        for (size_t k = 0; k < e->model->layers[l].ninputs; k++)
            if (e->model->layers[l].inputs[k] < b) return n;
    tsr_stage_options so = {b, end, mb, b > 0, e->o.precision, 0};
    tsr_stage_memory m;
    tsr_status st = tsr_stage_plan_memory(e->ctx, e->model, &so, &m);
    if (st != TSR_OK) {
        if (st == TSR_ERR_NO_MEMORY && *err == TSR_OK) *err = st; /* else: not a stage */
        return n;
    }
    n.fixed = (uint64_t)m.total_bytes - m.act_set_bytes +
              (uint64_t)m.param_bytes * (unsigned)e->o.optimizer_slots +
              (e->o.precision != TSR_PRECISION_FP32 ? m.round_bytes : 0); /* as tsr_stage_check_fit */
    n.act = m.act_set_bytes;
    return n;
}

static uint64_t need_bytes(stage_need n, uint64_t inflight) {
    return n.fixed == UINT64_MAX ? UINT64_MAX : n.fixed + inflight * n.act;
}

static tsr_status make_env(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                           const tsr_plan_options *o, env *e) {
    memset(e, 0, sizeof *e);
    e->ctx = ctx;
    if (!model || !topo)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "plan: %s is NULL", model ? "topology" : "model");
    if (o)
        e->o = *o;
    else
        tsr_plan_options_init(&e->o);
    TSR_TRY(check_options(ctx, &e->o));
    e->model = model;
    e->topo = topo;
    e->L = tsr_model_layer_count(model);
    if (e->L == 0) return tsr_error(ctx, TSR_ERR_SHAPE, "plan: the model has no layers");
    e->replicas = e->o.replicas > 1 ? e->o.replicas : 1;
    e->rb = (e->o.batch + (size_t)e->replicas - 1) / (size_t)e->replicas;
    return read_layers(ctx, model, e->o.optimizer_slots, &e->layers);
}

static size_t choose_m(const env *e, size_t S) {
    if (e->o.microbatches) return e->o.microbatches;
    if (S == 1) return 1; /* no pipeline to fill: one pass over the whole batch, larger GEMMs */
    size_t m = 4 * S;
    return m < e->rb ? m : e->rb;
}

static int rank_of(const tsr_topology *t, int dev) {
    for (int r = 0; r < tsr_topology_rank_count(t); r++)
        if (tsr_topology_rank(t, r)->device == dev) return tsr_topology_rank(t, r)->rank;
    return -1;
}

/* Why device `i` cannot be planned on, or NULL. `ranked`: the topology has ranks. */
static const char *not_candidate(const tsr_topology *t, int i) {
    const tsr_device_info *d = tsr_topology_device(t, i);
    if (!d->usable) return "not usable (a slower path to a device listed twice)";
    if (d->same_as >= 0) {
        const tsr_device_info *o = tsr_topology_device(t, d->same_as);
        /* both paths usable (not calibrated): keep the faster, else the first */
        if (o && o->usable) {
            double a = has_rate(d) ? gemm_rate(d, 1024) : 0, b = has_rate(o) ? gemm_rate(o, 1024) : 0;
            if (b > a || (b == a && d->same_as < i)) return "a second path to a device listed twice";
        }
    }
    if (!has_rate(d)) return "without a compute rate (no peak or SGEMM figure)";
    if (d->global_mem_bytes == 0) return "without memory size";
    if (tsr_topology_rank_count(t) && rank_of(t, i) < 0) return "driven by no rank";
    return NULL;
}

static void fill_device(tsr_plan_device *pd, const tsr_topology *t, int dev) {
    const tsr_device_info *d = tsr_topology_device(t, dev);
    memset(pd, 0, sizeof *pd);
    pd->index = dev;
    pd->rank = rank_of(t, dev);
    pd->host = d->host;
    pd->kind = d->kind;
    tsr_strlcpy(pd->id, d->id, sizeof pd->id);
    tsr_strlcpy(pd->name, d->name, sizeof pd->name);
    const tsr_host_info *h = tsr_topology_host(t, d->host);
    if (h) tsr_strlcpy(pd->hostname, h->hostname, sizeof pd->hostname);
}

/* Builds the plan for bounds[0..S] on cands[0..S) (replica 0) and rep[r*S+i] (topology indices
 * of every replica; NULL: one replica). Memory that does not fit: TSR_ERR_PLAN naming the
 * stage. */
static tsr_status evaluate(const env *e, const size_t *bounds, const cand *cands, size_t S,
                           const int *rep, tsr_plan **out) {
    tsr_context *ctx = e->ctx;
    size_t M = choose_m(e, S);
    size_t mb = (e->rb + M - 1) / M;
    tsr_plan *p;
    TSR_TRY(tsr_plan_alloc(ctx, e->model, S, e->replicas, &p));
    p->opt = e->o;
    p->replicas = e->replicas;
    p->microbatches = M;
    p->microbatch_size = mb;
    p->replica_batch = e->rb;
    double ar = 0;
    for (size_t i = 0; i < S; i++) {
        tsr_plan_stage *s = &p->stages[i];
        const cand *c = &cands[i];
        s->first = bounds[i];
        s->last = bounds[i + 1];
        s->device = c->dev;
        tsr_strlcpy(s->device_id, c->d->id, sizeof s->device_id);
        s->rank = rank_of(e->topo, c->dev);
        uint64_t params = 0;
        for (size_t l = s->first; l < s->last; l++) {
            double f, b;
            layer_time(&e->layers[l], c, mb, &f, &b);
            s->forward_s += f;
            s->backward_s += b;
            params += e->layers[l].param_mem / (2u + (unsigned)e->o.optimizer_slots);
        }
        size_t inflight = S - i < M ? S - i : M;
        tsr_status err = TSR_OK;
        stage_need need = stage_memory(e, s->first, s->last, mb, &err);
        if (err != TSR_OK) {
            tsr_plan_free(p);
            return err;
        }
        if (need.fixed == UINT64_MAX) {
            tsr_status st = tsr_error(ctx, TSR_ERR_PLAN,
                                      "stage %zu (layers %zu-%zu) cannot be planned: a layer reads an "
                                      "earlier stage's output (a residual across the split) or its "
                                      "memory overflows",
                                      i, s->first, s->last - 1);
            tsr_plan_free(p);
            return st;
        }
        s->memory_bytes = need_bytes(need, inflight);
        s->memory_limit = c->limit;
        if (i + 1 < S && cands[i + 1].dev != c->dev)
            s->send_s = xfer(c, &cands[i + 1], (double)e->layers[s->last - 1].out_per_sample * mb,
                             e->o.network_gbps);
        double a = allreduce_time(c, (double)params, e->replicas);
        if (a > ar) ar = a;
        for (int r = 0; r < e->replicas; r++)
            fill_device(&p->devices[(size_t)r * S + i], e->topo, rep ? rep[(size_t)r * S + i] : c->dev);
        if (s->memory_bytes > s->memory_limit) {
            char need[32], lim[32], mem[32];
            tsr_plan_format_bytes(need, sizeof need, (double)s->memory_bytes);
            tsr_plan_format_bytes(lim, sizeof lim, (double)s->memory_limit);
            tsr_plan_format_bytes(mem, sizeof mem, (double)c->d->global_mem_bytes);
            tsr_status st = tsr_error(ctx, TSR_ERR_PLAN,
                                      "stage %zu (layers %zu-%zu) needs %s on %s, which allows %s "
                                      "(%.2f of %s)",
                                      i, s->first, s->last - 1, need, c->d->id, lim,
                                      e->o.memory_fraction, mem);
            tsr_plan_free(p);
            return st;
        }
    }
    p->allreduce_s = ar;
    tsr_plan_finish(p);
    *out = p;
    return TSR_OK;
}

/* ---------------------------------------------------------------- candidates and classes */

typedef struct cands {
    cand *c;       /* one per candidate device, grouped by class, in topology order within */
    int n;
    int ncls;
    int *cls_first; /* class k: c[cls_first[k] .. cls_first[k] + cls_count[k]) */
    int *cls_count;
} cands;

static void free_cands(tsr_context *ctx, cands *cs) {
    tsr_free(ctx, cs->c);
    tsr_free(ctx, cs->cls_first);
    tsr_free(ctx, cs->cls_count);
    memset(cs, 0, sizeof *cs);
}

/* Identical devices: same capability (and, unless `any_host`, the same host). */
static int same_device(const tsr_device_info *a, const tsr_device_info *b, int any_host) {
    if ((!any_host && a->host != b->host) || a->kind != b->kind || a->backend != b->backend ||
        strcmp(a->name, b->name) || a->global_mem_bytes != b->global_mem_bytes ||
        a->peak_gflops != b->peak_gflops || a->gemm_gflops != b->gemm_gflops ||
        a->mem_bw_gbps != b->mem_bw_gbps || a->h2d_gbps != b->h2d_gbps ||
        a->d2h_gbps != b->d2h_gbps || a->launch_us != b->launch_us ||
        a->gemm_points != b->gemm_points)
        return 0;
    for (int i = 0; i < a->gemm_points && i < 4; i++)
        if (a->gemm_n[i] != b->gemm_n[i] || a->gemm_gflops_n[i] != b->gemm_gflops_n[i]) return 0;
    return 1;
}

static int same_class(const tsr_device_info *a, const tsr_device_info *b) {
    return same_device(a, b, 0);
}

/* ---------------------------------------------------------------- for lib/plan/plan3d.c */

int tsr_plan_same_capability(const tsr_device_info *a, const tsr_device_info *b) {
    return same_device(a, b, 1);
}

const char *tsr_plan_not_candidate(const tsr_topology *t, int i) { return not_candidate(t, i); }

void tsr_plan_device_figures(const tsr_device_info *d, double fraction, tsr_plan_figures *out) {
    cand c;
    fill_cand(&c, d, 0, fraction);
    out->mem_bw_gbps = c.mem_bw;
    out->d2h_gbps = c.d2h;
    out->h2d_gbps = c.h2d;
    out->launch_s = c.launch_s;
    out->limit_bytes = c.limit;
    out->rate_gflops = gemm_rate(d, 1024);
}

double tsr_plan_gemm_seconds(const tsr_device_info *d, double flops, double n, int calls) {
    cand c;
    fill_cand(&c, d, 0, 1.0);
    return gemm_seconds(&c, flops, n, calls);
}

static tsr_status find_cands(const env *e, cands *cs) {
    tsr_context *ctx = e->ctx;
    const tsr_topology *t = e->topo;
    int nd = tsr_topology_device_count(t);
    memset(cs, 0, sizeof *cs);
    cs->c = tsr_calloc(ctx, nd ? (size_t)nd : 1, sizeof *cs->c);
    cs->cls_first = tsr_calloc(ctx, nd ? (size_t)nd : 1, sizeof *cs->cls_first);
    cs->cls_count = tsr_calloc(ctx, nd ? (size_t)nd : 1, sizeof *cs->cls_count);
    int *cls = tsr_calloc(ctx, nd ? (size_t)nd : 1, sizeof *cls);
    if (!cs->c || !cs->cls_first || !cs->cls_count || !cls) {
        tsr_free(ctx, cls);
        free_cands(ctx, cs);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan: device table");
    }
    /* classes in order of first appearance; members keep topology order */
    int *rep = cs->cls_first; /* first: representative device of each class (rewritten below) */
    for (int i = 0; i < nd; i++) {
        cls[i] = -1;
        const char *why = not_candidate(t, i);
        if (why) {
            tsr_log(ctx, TSR_LOG_DEBUG, "plan: device %d (%s) skipped: %s", i,
                    tsr_topology_device(t, i)->id, why);
            continue;
        }
        const tsr_device_info *d = tsr_topology_device(t, i);
        int k = 0;
        while (k < cs->ncls && !same_class(tsr_topology_device(t, rep[k]), d)) k++;
        if (k == cs->ncls) rep[cs->ncls++] = i;
        cls[i] = k;
        cs->cls_count[k]++;
    }
    int pos = 0;
    for (int k = 0; k < cs->ncls; k++) {
        for (int i = 0; i < nd; i++) {
            if (cls[i] != k) continue;
            fill_cand(&cs->c[pos], tsr_topology_device(t, i), i, e->o.memory_fraction);
            cs->c[pos].cls = k;
            pos++;
        }
    }
    cs->n = pos;
    for (int k = 0, at = 0; k < cs->ncls; k++) {
        cs->cls_first[k] = at;
        at += cs->cls_count[k];
    }
    tsr_free(ctx, cls);
    if (cs->n == 0) {
        tsr_status st = tsr_error(ctx, TSR_ERR_NO_DEVICE,
                                  "plan: none of the topology's %d devices can be planned on "
                                  "(usable, with a compute rate and memory%s)",
                                  nd, tsr_topology_rank_count(t) ? ", driven by a rank" : "");
        free_cands(ctx, cs);
        return st;
    }
    return TSR_OK;
}

/* ---------------------------------------------------------------- search */

/* States of one depth of the dynamic program: after row j, the classes used so far (counts)
 * and the class of stage j+1 (whose send cost row j already includes). Each entry e of a row
 * keeps where its value came from: the previous state and the stage's first layer. */
typedef struct level {
    size_t n, cap;
    int *cls;           /* class of the next stage */
    uint16_t *cnt;      /* n x ncls: devices of each class used, the next stage's included */
    uint64_t *key;
    double *val;        /* n x (L+1) */
    int32_t *from;      /* n x (L+1): first layer of stage j */
    int32_t *pred;      /* n x (L+1): state of the previous level */
    double *lb;
    size_t *table;      /* hash: state index + 1, 0 empty; 2 x cap entries */
    size_t tsize;
} level;

typedef struct search {
    const env *e;
    const cands *cs;
    int ncls;
    const cand **cls_rep;   /* a representative of each class */
    int *avail;             /* per class, per replica */
    uint64_t *radix;        /* key = sum cnt[k] * radix[k] + next * radix[ncls] */
    size_t S, M, mb, L;
    double factor;          /* M + S - 1 */
    double *t;              /* ncls x (L+1): prefix sums of forward + backward per class */
    stage_need *need;       /* (L+1) x (L+1): memory of the stage [b, e) at mb, [b * (L+1) + e] */
    tsr_status err;         /* out of memory while filling `need` */
    double *out_b;          /* L: output bytes of layer l at mb */
    double *w_suf, *w_max;  /* L+1: least time any class needs for layers [e, L), and the
                             * largest single such layer */
    double *inv_rho;        /* ncls x (L+1): 1 / max slowdown of class k against w on [e, L) */
    double *tmp_val;        /* L+1 */
    int32_t *tmp_from;
    int *rho_order;         /* (L+1) x ncls: classes by inv_rho at e, largest first */
    double *coef;           /* ncls x ncls: send seconds per byte from class a to class b */
    double *ord_val;        /* improve(): S_max x (L+1) rows of one order */
    int32_t *ord_from;
    size_t *ord_bounds;     /* S_max + 2 */
    int *ord_used, *ord_try, *ord_cur;
    level *lev;             /* S levels */
    size_t beam;            /* states kept per level */
    double work, budget;
    int truncated;
    double best_step;
    size_t best_S;
    int *best_order;        /* S_max */
    size_t *best_bounds;    /* S_max + 1 */
} search;

/* Row j (stage j on class `cls`, sending to class `next`, -1: the last stage) from the
 * previous row into tmp_val/tmp_from. Returns the least entry (INFINITY: nothing fits).
 * The stage's cost for layers [b, e) is the same as evaluate() computes: prefix sums of layer
 * times, the send of layer e-1's output, memory against the class's limit. */
static double compute_row(search *s, size_t j, const double *prev, int cls, int next) {
    size_t L = s->L, S = s->S, L1 = L + 1;
    double *row = s->tmp_val;
    int32_t *from = s->tmp_from;
    const double *t = s->t + (size_t)cls * L1;
    double coef = next >= 0 ? s->coef[(size_t)cls * (size_t)s->ncls + (size_t)next] : 0;
    uint64_t limit = s->cls_rep[cls]->limit;
    uint64_t inflight = s->S - j < s->M ? s->S - j : s->M;
    for (size_t e = 0; e <= L; e++) row[e] = INFINITY, from[e] = -1;
    size_t e_lo = j + 1, e_hi = L - (S - 1 - j); /* every later stage keeps one layer */
    if (j == S - 1) e_lo = L;
    double best = INFINITY;
    for (size_t e = e_lo; e <= e_hi; e++) {
        double te = t[e] + (next >= 0 ? coef * s->out_b[e - 1] : 0);
        double v = INFINITY;
        int32_t a = -1;
        for (size_t b = j; b < e; b++) {
            double pv = prev[b];
            if (!(pv < v)) continue; /* max(pv, .) >= v: cannot improve */
            if (need_bytes(s->need[b * L1 + e], inflight) > limit) continue;
            double c = te - t[b];
            double m = pv > c ? pv : c;
            if (m < v) v = m, a = (int32_t)b;
        }
        s->work += (double)(e - j);
        row[e] = v;
        from[e] = a;
        if (v < best) best = v;
    }
    return best;
}

/* Least bottleneck any completion of state i of level `lv` (row j done) can reach: the
 * remaining R stages take layers [e, L) on the devices still free, each device k at best
 * 1/rho_k times as fast as the fastest class on every layer. */
static double lower_bound(const search *s, const level *lv, size_t i, size_t j) {
    size_t L = s->L, L1 = L + 1, R = s->S - 1 - j;
    const double *row = lv->val + i * L1;
    const uint16_t *cnt = lv->cnt + i * (size_t)s->ncls;
    double lb = INFINITY;
    for (size_t e = 0; e <= L; e++) {
        if (!(row[e] < lb)) continue;
        double rest = 0;
        if (R) {
            /* capacity of the R best free devices, in units of the fastest class */
            double cap = 0;
            size_t left = R;
            const int *ord = s->rho_order + e * (size_t)s->ncls;
            for (int q = 0; q < s->ncls && left; q++) {
                int k = ord[q];
                int free_k = s->avail[k] - cnt[k] + (k == lv->cls[i]);
                if (free_k <= 0) continue;
                size_t use = (size_t)free_k < left ? (size_t)free_k : left;
                cap += (double)use * s->inv_rho[(size_t)k * L1 + e];
                left -= use;
            }
            rest = cap > 0 ? s->w_suf[e] / cap : s->w_suf[e] > 0 ? INFINITY : 0;
            if (s->w_max[e] > rest) rest = s->w_max[e];
        }
        double v = row[e] > rest ? row[e] : rest;
        if (v < lb) lb = v;
    }
    return lb;
}

static void free_level(tsr_context *ctx, level *lv) {
    tsr_free(ctx, lv->cls);
    tsr_free(ctx, lv->cnt);
    tsr_free(ctx, lv->key);
    tsr_free(ctx, lv->val);
    tsr_free(ctx, lv->from);
    tsr_free(ctx, lv->pred);
    tsr_free(ctx, lv->lb);
    tsr_free(ctx, lv->table);
    memset(lv, 0, sizeof *lv);
}

static tsr_status alloc_level(tsr_context *ctx, level *lv, size_t cap, size_t ncls, size_t L1) {
    memset(lv, 0, sizeof *lv);
    lv->cap = cap ? cap : 1;
    lv->tsize = 16;
    while (lv->tsize < 2 * lv->cap) lv->tsize *= 2;
    lv->cls = tsr_calloc(ctx, lv->cap, sizeof *lv->cls);
    lv->cnt = tsr_calloc(ctx, lv->cap * ncls, sizeof *lv->cnt);
    lv->key = tsr_calloc(ctx, lv->cap, sizeof *lv->key);
    lv->val = tsr_calloc(ctx, lv->cap * L1, sizeof *lv->val);
    lv->from = tsr_calloc(ctx, lv->cap * L1, sizeof *lv->from);
    lv->pred = tsr_calloc(ctx, lv->cap * L1, sizeof *lv->pred);
    lv->lb = tsr_calloc(ctx, lv->cap, sizeof *lv->lb);
    lv->table = tsr_calloc(ctx, lv->tsize, sizeof *lv->table);
    if (!lv->cls || !lv->cnt || !lv->key || !lv->val || !lv->from || !lv->pred || !lv->lb ||
        !lv->table) {
        free_level(ctx, lv);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan: search states");
    }
    return TSR_OK;
}

/* The state of `lv` with counts `cnt` (ncls) and next class `next`, created when new (rows
 * at INFINITY). Returns its index; the level's capacity is never exceeded by construction. */
static size_t level_find(search *s, level *lv, const uint16_t *cnt, int next) {
    size_t nc = (size_t)s->ncls, L1 = s->L + 1;
    uint64_t key = (uint64_t)next * s->radix[nc];
    for (size_t k = 0; k < nc; k++) key += cnt[k] * s->radix[k];
    size_t h = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (lv->tsize - 1);
    while (lv->table[h]) {
        size_t i = lv->table[h] - 1;
        if (lv->key[i] == key && lv->cls[i] == next && !memcmp(lv->cnt + i * nc, cnt, nc * sizeof *cnt))
            return i;
        h = (h + 1) & (lv->tsize - 1);
    }
    size_t i = lv->n++;
    lv->table[h] = i + 1;
    lv->key[i] = key;
    lv->cls[i] = next;
    memcpy(lv->cnt + i * nc, cnt, nc * sizeof *cnt);
    for (size_t e = 0; e < L1; e++) lv->val[i * L1 + e] = INFINITY;
    for (size_t e = 0; e < L1; e++) lv->from[i * L1 + e] = lv->pred[i * L1 + e] = -1;
    return i;
}

typedef struct rank_item {
    double lb;
    size_t i;
} rank_item;

static int by_lb(const void *a, const void *b) {
    const rank_item *x = a, *y = b;
    return x->lb < y->lb ? -1 : x->lb > y->lb ? 1 : (x->i > y->i) - (x->i < y->i);
}

/* Drops the states of level j+1 that cannot beat the best step, and keeps at most `beam` of
 * the rest (the most promising); a level is compacted in place. */
static tsr_status prune_level(search *s, level *lv, size_t j) {
    tsr_context *ctx = s->e->ctx;
    size_t nc = (size_t)s->ncls, L1 = s->L + 1, n = 0;
    rank_item *items = tsr_calloc(ctx, lv->n ? lv->n : 1, sizeof *items);
    if (!items) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan: search states");
    for (size_t i = 0; i < lv->n; i++) {
        double lb = lower_bound(s, lv, i, j);
        if (lb * s->factor < s->best_step) items[n++] = (rank_item){lb, i};
    }
    if (n > s->beam) {
        qsort(items, n, sizeof *items, by_lb);
        n = s->beam;
        s->truncated = 1;
        /* keep the survivors in index order: compaction below moves each state down only */
        for (size_t a = 1; a < n; a++)
            for (size_t b = a; b > 0 && items[b].i < items[b - 1].i; b--) {
                rank_item t = items[b];
                items[b] = items[b - 1];
                items[b - 1] = t;
            }
    }
    for (size_t k = 0; k < n; k++) {
        size_t i = items[k].i;
        lv->lb[k] = items[k].lb;
        if (i == k) continue;
        lv->cls[k] = lv->cls[i];
        lv->key[k] = lv->key[i];
        memmove(lv->cnt + k * nc, lv->cnt + i * nc, nc * sizeof *lv->cnt);
        memmove(lv->val + k * L1, lv->val + i * L1, L1 * sizeof *lv->val);
        memmove(lv->from + k * L1, lv->from + i * L1, L1 * sizeof *lv->from);
        memmove(lv->pred + k * L1, lv->pred + i * L1, L1 * sizeof *lv->pred);
    }
    lv->n = n;
    tsr_free(ctx, items);
    return TSR_OK;
}

static void prepare_s(search *s, size_t S) {
    const env *e = s->e;
    size_t L = s->L, L1 = L + 1, nc = (size_t)s->ncls;
    s->S = S;
    s->M = choose_m(e, S);
    size_t mb = (e->rb + s->M - 1) / s->M;
    s->factor = (double)(s->M + S - 1);
    if (mb == s->mb) return;
    s->mb = mb;
    for (size_t k = 0; k < nc; k++) {
        double *t = s->t + k * L1;
        t[0] = 0;
        for (size_t l = 0; l < L; l++) {
            double f, b;
            layer_time(&e->layers[l], s->cls_rep[k], mb, &f, &b);
            t[l + 1] = t[l] + f + b;
        }
    }
    for (size_t b = 0; b < L; b++)
        for (size_t end = b + 1; end <= L; end++) s->need[b * L1 + end] = stage_memory(e, b, end, mb, &s->err);
    for (size_t l = 0; l < L; l++) s->out_b[l] = (double)e->layers[l].out_per_sample * (double)mb;
    s->w_suf[L] = s->w_max[L] = 0;
    for (size_t k = 0; k < nc; k++) s->inv_rho[k * L1 + L] = 0;
    for (size_t l = L; l-- > 0;) {
        double w = INFINITY;
        for (size_t k = 0; k < nc; k++) {
            const double *t = s->t + k * L1;
            if (t[l + 1] - t[l] < w) w = t[l + 1] - t[l];
        }
        s->w_suf[l] = s->w_suf[l + 1] + w;
        s->w_max[l] = s->w_max[l + 1] > w ? s->w_max[l + 1] : w;
        for (size_t k = 0; k < nc; k++) {
            /* how fast class k is on layer l relative to the fastest (<= 1); views count not */
            double tk = s->t[k * L1 + l + 1] - s->t[k * L1 + l];
            double r = w > 0 && tk > 0 ? w / tk : 0;
            double next = s->inv_rho[k * L1 + l + 1];
            s->inv_rho[k * L1 + l] = r > next ? r : next;
        }
    }
    for (size_t e = 0; e <= L; e++) {
        int *ord = s->rho_order + e * nc;
        for (size_t k = 0; k < nc; k++) {
            size_t q = k;
            for (; q > 0 && s->inv_rho[(size_t)ord[q - 1] * L1 + e] < s->inv_rho[k * L1 + e]; q--)
                ord[q] = ord[q - 1];
            ord[q] = (int)k;
        }
    }
}

/* Follows the final state back to the first stage: classes and layer bounds. */
static void record(search *s, double step, size_t fin, int32_t b_last) {
    size_t S = s->S, L1 = s->L + 1;
    s->best_step = step;
    s->best_S = S;
    s->best_bounds[S] = s->L;
    s->best_bounds[S - 1] = (size_t)b_last;
    size_t i = fin, b = (size_t)b_last;
    s->best_order[S - 1] = s->lev[S - 1].cls[i];
    for (size_t j = S - 1; j-- > 0;) {
        const level *lv = &s->lev[j + 1];
        size_t prev_b = (size_t)lv->from[i * L1 + b];
        size_t prev_i = (size_t)lv->pred[i * L1 + b];
        s->best_bounds[j] = prev_b;
        s->best_order[j] = s->lev[j].cls[prev_i];
        i = prev_i, b = prev_b;
    }
}

static tsr_status search_s(search *s) {
    tsr_context *ctx = s->e->ctx;
    size_t S = s->S, nc = (size_t)s->ncls, L1 = s->L + 1;
    uint16_t *cnt = tsr_calloc(ctx, nc, sizeof *cnt);
    if (!cnt) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan: search");
    tsr_status st = alloc_level(ctx, &s->lev[0], nc, nc, L1);
    /* level 0: the first stage's class; an empty prefix ends at layer 0 */
    for (size_t k = 0; st == TSR_OK && k < nc; k++) {
        if (!s->avail[k]) continue;
        memset(cnt, 0, nc * sizeof *cnt);
        cnt[k] = 1;
        size_t i = level_find(s, &s->lev[0], cnt, (int)k);
        s->lev[0].val[i * L1] = 0;
    }
    for (size_t j = 0; st == TSR_OK && j + 1 < S; j++) {
        level *cur = &s->lev[j], *nx = &s->lev[j + 1];
        if (cur->n == 0) break;
        st = alloc_level(ctx, nx, cur->n * nc, nc, L1);
        for (size_t i = 0; st == TSR_OK && i < cur->n; i++) {
            const uint16_t *ci = cur->cnt + i * nc;
            for (size_t k = 0; k < nc; k++) {
                if (ci[k] >= s->avail[k]) continue;
                if (!(compute_row(s, j, cur->val + i * L1, cur->cls[i], (int)k) < INFINITY))
                    continue;
                memcpy(cnt, ci, nc * sizeof *cnt);
                cnt[k]++;
                size_t t = level_find(s, nx, cnt, (int)k);
                double *v = nx->val + t * L1;
                for (size_t e = 0; e < L1; e++)
                    if (s->tmp_val[e] < v[e]) {
                        v[e] = s->tmp_val[e];
                        nx->from[t * L1 + e] = s->tmp_from[e];
                        nx->pred[t * L1 + e] = (int32_t)i;
                    }
            }
        }
        if (st == TSR_OK) st = prune_level(s, nx, j);
    }
    /* the last stage, and the best complete plan of this S */
    const level *lv = &s->lev[S - 1];
    for (size_t i = 0; st == TSR_OK && i < lv->n; i++) {
        if (!(compute_row(s, S - 1, lv->val + i * L1, lv->cls[i], -1) < INFINITY)) continue;
        double step = s->factor * s->tmp_val[s->L]; /* allreduce added when evaluated */
        if (step < s->best_step) record(s, step, i, s->tmp_from[s->L]);
    }
    for (size_t j = 0; j < S; j++) free_level(ctx, &s->lev[j]);
    tsr_free(ctx, cnt);
    return st;
}

/* Bottleneck of the best split of the class order `order` (s->S stages, prepare_s done), its
 * bounds into `bounds`; INFINITY when no split fits. */
static double order_value(search *s, const int *order, size_t *bounds) {
    size_t S = s->S, L1 = s->L + 1;
    double *prev = s->ord_val + (S - 1) * L1; /* the last row slot as the empty prefix */
    for (size_t e = 0; e < L1; e++) prev[e] = e ? INFINITY : 0;
    for (size_t j = 0; j < S; j++) {
        double *row = s->ord_val + j * L1;
        if (!(compute_row(s, j, prev, order[j], j + 1 < S ? order[j + 1] : -1) < INFINITY))
            return INFINITY;
        memcpy(row, s->tmp_val, L1 * sizeof *row);
        memcpy(s->ord_from + j * L1, s->tmp_from, L1 * sizeof *s->tmp_from);
        prev = row;
    }
    size_t e = s->L;
    bounds[S] = e;
    for (size_t j = S; j-- > 0;) {
        e = (size_t)s->ord_from[j * L1 + e];
        bounds[j] = e;
    }
    return s->ord_val[(S - 1) * L1 + s->L];
}

/* Tries the order `o` of `S` classes; keeps it when it beats the best plan. */
static int try_order(search *s, const int *o, size_t S) {
    int *used = s->ord_used;
    memset(used, 0, (size_t)s->ncls * sizeof *used);
    for (size_t i = 0; i < S; i++)
        if (++used[o[i]] > s->avail[o[i]]) return 0;
    prepare_s(s, S);
    if (s->err != TSR_OK) return 0;
    double v = order_value(s, o, s->ord_bounds);
    double step = s->factor * v;
    if (!(step < s->best_step * (1 - 1e-12))) return 0;
    s->best_step = step;
    s->best_S = S;
    memcpy(s->best_order, o, S * sizeof *o);
    memcpy(s->best_bounds, s->ord_bounds, (S + 1) * sizeof *s->ord_bounds);
    return 1;
}

/* After a truncated search: local improvement of the best order by swapping two stages'
 * classes, replacing one, inserting a free one or dropping one, each with its optimal split,
 * until no move helps or the whole budget is spent. */
static void improve(search *s, size_t smax) {
    int *o = s->ord_try;
    size_t nc = (size_t)s->ncls;
    int better = 1;
    while (better && s->work < s->budget / 0.6) {
        better = 0;
        size_t S = s->best_S;
        int *cur = s->ord_cur;
        memcpy(cur, s->best_order, S * sizeof *cur);
        for (size_t i = 0; i < S && !better; i++)
            for (size_t j = i + 1; j < S && !better; j++) {
                if (cur[i] == cur[j]) continue;
                memcpy(o, cur, S * sizeof *o);
                o[i] = cur[j], o[j] = cur[i];
                better = try_order(s, o, S);
            }
        for (size_t i = 0; i < S && !better; i++)
            for (size_t k = 0; k < nc && !better; k++) {
                if ((int)k == cur[i]) continue;
                memcpy(o, cur, S * sizeof *o);
                o[i] = (int)k;
                better = try_order(s, o, S);
            }
        for (size_t i = 0; i <= S && S < smax && !better; i++)
            for (size_t k = 0; k < nc && !better; k++) {
                memcpy(o, cur, i * sizeof *o);
                o[i] = (int)k;
                memcpy(o + i + 1, cur + i, (S - i) * sizeof *o);
                better = try_order(s, o, S + 1);
            }
        for (size_t i = 0; i < S && S > 1 && !better; i++) {
            memcpy(o, cur, i * sizeof *o);
            memcpy(o + i, cur + i + 1, (S - i - 1) * sizeof *o);
            better = try_order(s, o, S - 1);
        }
    }
}

static void free_search(tsr_context *ctx, search *s) {
    tsr_free(ctx, s->cls_rep);
    tsr_free(ctx, s->avail);
    tsr_free(ctx, s->radix);
    tsr_free(ctx, s->t);
    tsr_free(ctx, s->need);
    tsr_free(ctx, s->out_b);
    tsr_free(ctx, s->w_suf);
    tsr_free(ctx, s->w_max);
    tsr_free(ctx, s->inv_rho);
    tsr_free(ctx, s->tmp_val);
    tsr_free(ctx, s->tmp_from);
    tsr_free(ctx, s->rho_order);
    tsr_free(ctx, s->coef);
    tsr_free(ctx, s->ord_val);
    tsr_free(ctx, s->ord_from);
    tsr_free(ctx, s->ord_bounds);
    tsr_free(ctx, s->ord_used);
    tsr_free(ctx, s->ord_try);
    tsr_free(ctx, s->ord_cur);
    tsr_free(ctx, s->lev);
    tsr_free(ctx, s->best_order);
    tsr_free(ctx, s->best_bounds);
}

/* The error when nothing fits: the layer that cannot fit on any device, or the whole model. */
static tsr_status infeasible(const env *e, const cands *cs, size_t mb) {
    const cand *big = &cs->c[0];
    for (int i = 1; i < cs->n; i++)
        if (cs->c[i].limit > big->limit) big = &cs->c[i];
    size_t worst = 0;
    uint64_t worst_need = 0, total = 0;
    tsr_status err = TSR_OK;
    for (size_t l = 0; l < e->L; l++) {
        uint64_t need = need_bytes(stage_memory(e, l, l + 1, mb, &err), 1);
        if (need != UINT64_MAX && need > worst_need) worst_need = need, worst = l;
    }
    total = need_bytes(stage_memory(e, 0, e->L, mb, &err), 1);
    if (err != TSR_OK) return err;
    char need[32], lim[32], mem[32];
    tsr_plan_format_bytes(lim, sizeof lim, (double)big->limit);
    tsr_plan_format_bytes(mem, sizeof mem, (double)big->d->global_mem_bytes);
    if (worst_need > big->limit) {
        tsr_layer_info in;
        tsr_model_layer_info(e->model, worst, 1, &in);
        tsr_plan_format_bytes(need, sizeof need, (double)worst_need);
        return tsr_error(e->ctx, TSR_ERR_PLAN,
                         "layer %zu %s needs %s (parameters, gradients and optimizer state, and "
                         "activations of a %zu-sample micro-batch); the largest usable device, "
                         "%s, has %s (%.2f of %s)",
                         worst, in.spec, need, mb, big->d->id, lim, e->o.memory_fraction, mem);
    }
    tsr_plan_format_bytes(need, sizeof need, (double)total);
    return tsr_error(e->ctx, TSR_ERR_PLAN,
                     "the model needs at least %s (micro-batch %zu) and no split over the %d "
                     "usable devices fits it; the largest, %s, has %s (%.2f of %s)",
                     need, mb, cs->n, big->d->id, lim, e->o.memory_fraction, mem);
}

static tsr_status run_search(const env *e, const cands *cs, tsr_plan **out) {
    tsr_context *ctx = e->ctx;
    search s;
    memset(&s, 0, sizeof s);
    s.e = e;
    s.cs = cs;
    s.ncls = cs->ncls;
    s.L = e->L;
    s.mb = 0;
    size_t L1 = e->L + 1, nc = (size_t)cs->ncls;
    int per_total = 0;
    s.cls_rep = tsr_calloc(ctx, nc, sizeof *s.cls_rep);
    s.avail = tsr_calloc(ctx, nc, sizeof *s.avail);
    s.radix = tsr_calloc(ctx, nc + 1, sizeof *s.radix);
    s.t = tsr_calloc(ctx, nc * L1, sizeof *s.t);
    s.need = tsr_calloc(ctx, L1 * L1, sizeof *s.need);
    s.out_b = tsr_calloc(ctx, L1, sizeof *s.out_b);
    s.w_suf = tsr_calloc(ctx, L1, sizeof *s.w_suf);
    s.w_max = tsr_calloc(ctx, L1, sizeof *s.w_max);
    s.inv_rho = tsr_calloc(ctx, nc * L1, sizeof *s.inv_rho);
    s.tmp_val = tsr_calloc(ctx, L1, sizeof *s.tmp_val);
    s.tmp_from = tsr_calloc(ctx, L1, sizeof *s.tmp_from);
    s.rho_order = tsr_calloc(ctx, nc * L1, sizeof *s.rho_order);
    s.coef = tsr_calloc(ctx, nc * nc, sizeof *s.coef);
    tsr_status st = TSR_OK;
    if (!s.cls_rep || !s.avail || !s.radix || !s.t || !s.need || !s.out_b || !s.w_suf ||
        !s.w_max || !s.inv_rho || !s.tmp_val || !s.tmp_from || !s.rho_order ||
        !s.coef) {
        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan: search tables");
        goto done;
    }
    for (size_t k = 0; k < nc; k++) {
        s.cls_rep[k] = &cs->c[cs->cls_first[k]];
        s.avail[k] = cs->cls_count[k] / e->replicas;
        per_total += s.avail[k];
    }
    /* members of one class are distinct devices: a hand-over between them costs too */
    for (size_t a = 0; a < nc; a++)
        for (size_t b = 0; b < nc; b++) s.coef[a * nc + b] = xfer(s.cls_rep[a], s.cls_rep[b], 1, e->o.network_gbps);
    if (per_total == 0) {
        st = tsr_error(ctx, TSR_ERR_NO_DEVICE,
                       "plan option replicas: %d, but no class of identical devices (same host "
                       "and capability) has that many members",
                       e->replicas);
        goto done;
    }
    /* state keys hash the class counts (mixed radix; wraps harmlessly: lookups compare counts) */
    uint64_t r = 1;
    for (size_t k = 0; k <= nc; k++) {
        s.radix[k] = r;
        r *= k < nc ? (uint64_t)s.avail[k] + 1 : 1;
    }
    size_t smax = (size_t)per_total < e->L ? (size_t)per_total : e->L;
    if (e->o.max_stages && e->o.max_stages < smax) smax = e->o.max_stages;
    s.lev = tsr_calloc(ctx, smax, sizeof *s.lev);
    s.best_order = tsr_calloc(ctx, smax + 1, sizeof *s.best_order);
    s.best_bounds = tsr_calloc(ctx, smax + 2, sizeof *s.best_bounds);
    s.ord_val = tsr_calloc(ctx, (smax + 1) * L1, sizeof *s.ord_val);
    s.ord_from = tsr_calloc(ctx, (smax + 1) * L1, sizeof *s.ord_from);
    s.ord_bounds = tsr_calloc(ctx, smax + 2, sizeof *s.ord_bounds);
    s.ord_used = tsr_calloc(ctx, nc, sizeof *s.ord_used);
    s.ord_try = tsr_calloc(ctx, smax + 1, sizeof *s.ord_try);
    s.ord_cur = tsr_calloc(ctx, smax + 1, sizeof *s.ord_cur);
    if (!s.lev || !s.best_order || !s.best_bounds || !s.ord_val || !s.ord_from || !s.ord_bounds ||
        !s.ord_used || !s.ord_try || !s.ord_cur) {
        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan: search levels");
        goto done;
    }
    s.best_step = INFINITY;
    s.budget = 0.6 * PLAN_BUDGET; /* the rest for improve() when the beam had to cut */
    size_t mb_min = SIZE_MAX;
    /* states one level may keep: by the work left for the remaining stage counts, and by
     * memory (a level of n states holds n x classes candidates of L+1 entries, 16 bytes each) */
    double state_cost = (double)nc * (double)L1 * (double)L1 / 2;
    double mem_cap = (double)PLAN_LEVEL_BYTES / ((double)nc * (double)L1 * 16.0);
    for (size_t S = 1; S <= smax && st == TSR_OK; S++) {
        prepare_s(&s, S);
        if (s.err != TSR_OK) {
            st = s.err;
            break;
        }
        if (s.mb < mb_min) mb_min = s.mb;
        double left = s.budget - s.work;
        double beam = left / ((double)(smax - S + 1) * (double)S * state_cost);
        if (beam > mem_cap) beam = mem_cap;
        if (beam > PLAN_BEAM_MAX) beam = PLAN_BEAM_MAX;
        s.beam = beam < PLAN_BEAM_MIN ? PLAN_BEAM_MIN : (size_t)beam;
        st = search_s(&s);
    }
    if (st != TSR_OK) goto done;
    if (s.truncated && s.best_step < INFINITY) improve(&s, smax);
    if ((st = s.err) != TSR_OK) goto done;
    if (s.truncated)
        tsr_log(ctx, TSR_LOG_INFO,
                "plan: the search kept only the most promising states of some levels (work "
                "budget); the plan is the best found, not proven optimal");
    if (!(s.best_step < INFINITY)) {
        st = infeasible(e, cs, mb_min);
        goto done;
    }
    {
        size_t S = s.best_S;
        cand *cc = tsr_calloc(ctx, S, sizeof *cc);
        int *rep = tsr_calloc(ctx, S * (size_t)e->replicas, sizeof *rep);
        int *taken = tsr_calloc(ctx, nc, sizeof *taken);
        if (!cc || !rep || !taken) {
            tsr_free(ctx, cc);
            tsr_free(ctx, rep);
            tsr_free(ctx, taken);
            st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan: result");
            goto done;
        }
        /* replica r takes block r of each class's members (consecutive devices, one host) */
        for (size_t i = 0; i < S; i++) {
            int k = s.best_order[i];
            int m = taken[k]++;
            for (int rr = 0; rr < e->replicas; rr++)
                rep[(size_t)rr * S + i] = cs->c[cs->cls_first[k] + rr * s.avail[k] + m].dev;
            cc[i] = cs->c[cs->cls_first[k] + m];
        }
        st = evaluate(e, s.best_bounds, cc, S, rep, out);
        if (st == TSR_OK) {
            (*out)->optimal = !s.truncated;
            (*out)->search_work = s.work;
        }
        tsr_free(ctx, cc);
        tsr_free(ctx, rep);
        tsr_free(ctx, taken);
    }
done:
    free_search(ctx, &s);
    return st;
}

/* ---------------------------------------------------------------- public */

tsr_status tsr_plan_create(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                           const tsr_plan_options *o, tsr_plan **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_plan_create: NULL output");
    *out = NULL;
    env e;
    tsr_status st = make_env(ctx, model, topo, o, &e);
    if (st != TSR_OK) {
        free_env(&e);
        return st;
    }
    cands cs;
    st = find_cands(&e, &cs);
    if (st == TSR_OK) {
        st = run_search(&e, &cs, out);
        free_cands(ctx, &cs);
    }
    free_env(&e);
    return st;
}

tsr_status tsr_plan_from_bounds(tsr_context *ctx, const tsr_model *model,
                                const tsr_topology *topo, const tsr_plan_options *o,
                                const size_t *bounds, const int *devices, size_t stages,
                                tsr_plan **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_plan_from_bounds: NULL output");
    *out = NULL;
    if (!bounds || !devices || stages == 0)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "tsr_plan_from_bounds: %s", !stages ? "0 stages" : "NULL bounds or devices");
    env e;
    tsr_status st = make_env(ctx, model, topo, o, &e);
    if (st != TSR_OK) {
        free_env(&e);
        return st;
    }
    if (e.replicas > 1) {
        free_env(&e);
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "plan option replicas: %d; a fixed placement describes one pipeline",
                         e.replicas);
    }
    if (bounds[0] != 0 || bounds[stages] != e.L) {
        free_env(&e);
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "bounds: must run from 0 to the model's %zu layers, not %zu to %zu", e.L,
                         bounds[0], bounds[stages]);
    }
    cand *cc = tsr_calloc(ctx, stages, sizeof *cc);
    if (!cc) {
        free_env(&e);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan: stages");
    }
    int nd = tsr_topology_device_count(topo);
    for (size_t i = 0; i < stages && st == TSR_OK; i++) {
        if (bounds[i + 1] <= bounds[i]) {
            st = tsr_error(ctx, TSR_ERR_INVALID_ARG,
                           "bounds[%zu]: %zu, stage %zu would be empty or reversed (from %zu)",
                           i + 1, bounds[i + 1], i, bounds[i]);
        } else if (devices[i] < 0 || devices[i] >= nd) {
            st = tsr_error(ctx, TSR_ERR_NOT_FOUND,
                           "devices[%zu]: %d is not a device of the topology (%d devices)", i,
                           devices[i], nd);
        } else {
            const char *why = not_candidate(topo, devices[i]);
            for (size_t j = 0; j < i && !why; j++)
                if (devices[j] == devices[i]) why = "already running an earlier stage";
            if (why)
                st = tsr_error(ctx, TSR_ERR_INVALID_ARG, "devices[%zu]: %d (%s) is %s", i,
                               devices[i], tsr_topology_device(topo, devices[i])->id, why);
            else
                fill_cand(&cc[i], tsr_topology_device(topo, devices[i]), devices[i],
                          e.o.memory_fraction);
        }
    }
    if (st == TSR_OK) {
        if (!e.o.max_stages || stages <= e.o.max_stages) {
            st = evaluate(&e, bounds, cc, stages, NULL, out);
            if (st == TSR_OK) (*out)->origin = TSR_PLAN_FIXED;
        } else {
            st = tsr_error(ctx, TSR_ERR_INVALID_ARG, "stages: %zu, more than max_stages %zu",
                           stages, e.o.max_stages);
        }
    }
    tsr_free(ctx, cc);
    free_env(&e);
    return st;
}

tsr_status tsr_plan_alloc(tsr_context *ctx, const tsr_model *model, size_t stages, int replicas,
                          tsr_plan **out) {
    *out = NULL;
    size_t L = tsr_model_layer_count(model);
    tsr_plan *p = tsr_calloc(ctx, 1, sizeof *p);
    if (!p) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan");
    p->ctx = ctx;
    p->layers = L;
    p->stage_count = stages;
    p->replicas = replicas > 1 ? replicas : 1;
    p->input = tsr_model_get_input(model);
    p->model_spec = tsr_strdup(ctx, tsr_model_spec(model));
    if ((p->gpt_blocks = tsr_model_gpt_blocks(model))) {
        tsr_layer_info e, a;
        tsr_model_layer_info(model, 0, 1, &e);
        tsr_model_layer_info(model, 4, 1, &a);
        snprintf(p->title, sizeof p->title, "GPT of %zu blocks, %zu channels, %zu params, %zu tokens",
                 p->gpt_blocks, e.out_h, tsr_model_param_count(model), e.out_c);
    }
    p->layer_spec = tsr_calloc(ctx, L ? L : 1, sizeof *p->layer_spec);
    p->stages = tsr_calloc(ctx, stages ? stages : 1, sizeof *p->stages);
    p->devices = tsr_calloc(ctx, (stages ? stages : 1) * (size_t)p->replicas, sizeof *p->devices);
    if (!p->model_spec || !p->layer_spec || !p->stages || !p->devices) {
        tsr_plan_free(p);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "plan");
    }
    for (size_t l = 0; l < L; l++) {
        tsr_layer_info in;
        if (tsr_model_layer_info(model, l, 1, &in) == TSR_OK)
            tsr_strlcpy(p->layer_spec[l], in.spec, sizeof p->layer_spec[l]);
    }
    *out = p;
    return TSR_OK;
}

void tsr_plan_finish(tsr_plan *p) {
    double worst = -1;
    p->bottleneck = 0;
    for (size_t i = 0; i < p->stage_count; i++) {
        const tsr_plan_stage *s = &p->stages[i];
        double t = s->forward_s + s->backward_s + s->send_s;
        if (t > worst) worst = t, p->bottleneck = i;
    }
    p->step_s = (double)(p->microbatches + p->stage_count - 1) * (worst > 0 ? worst : 0) +
                p->allreduce_s;
    int hosts = 0;
    for (size_t i = 0; i < p->stage_count; i++) {
        int seen = 0;
        for (size_t j = 0; j < i; j++) seen |= p->devices[j].host == p->devices[i].host;
        hosts += !seen;
    }
    p->host_count = hosts;
}

void tsr_plan_free(tsr_plan *p) {
    if (!p) return;
    tsr_context *ctx = p->ctx;
    tsr_free(ctx, p->model_spec);
    tsr_free(ctx, p->layer_spec);
    tsr_free(ctx, p->stages);
    tsr_free(ctx, p->devices);
    tsr_free(ctx, p);
}

size_t tsr_plan_stage_count(const tsr_plan *p) { return p ? p->stage_count : 0; }
const tsr_plan_stage *tsr_plan_stage_at(const tsr_plan *p, size_t i) {
    return p && i < p->stage_count ? &p->stages[i] : NULL;
}
size_t tsr_plan_microbatches(const tsr_plan *p) { return p ? p->microbatches : 0; }
size_t tsr_plan_microbatch_size(const tsr_plan *p) { return p ? p->microbatch_size : 0; }
size_t tsr_plan_batch(const tsr_plan *p) { return p ? p->opt.batch : 0; }
int tsr_plan_replicas(const tsr_plan *p) { return p ? p->replicas : 0; }
int tsr_plan_replica_device(const tsr_plan *p, int replica, size_t stage) {
    if (!p || replica < 0 || replica >= p->replicas || stage >= p->stage_count) return -1;
    return p->devices[(size_t)replica * p->stage_count + stage].index;
}
int tsr_plan_replica_rank(const tsr_plan *p, int replica, size_t stage) {
    if (!p || replica < 0 || replica >= p->replicas || stage >= p->stage_count) return -1;
    return p->devices[(size_t)replica * p->stage_count + stage].rank;
}
double tsr_plan_allreduce_seconds(const tsr_plan *p) { return p ? p->allreduce_s : 0; }
double tsr_plan_step_seconds(const tsr_plan *p) { return p ? p->step_s : 0; }
double tsr_plan_samples_per_s(const tsr_plan *p) {
    return p && p->step_s > 0 ? (double)p->opt.batch / p->step_s : 0;
}
double tsr_plan_bubble_fraction(const tsr_plan *p) {
    if (!p || !p->stage_count) return 0;
    return (double)(p->stage_count - 1) / (double)(p->microbatches + p->stage_count - 1);
}
size_t tsr_plan_bottleneck(const tsr_plan *p) { return p ? p->bottleneck : 0; }
int tsr_plan_optimal(const tsr_plan *p) { return p ? p->optimal : 0; }
