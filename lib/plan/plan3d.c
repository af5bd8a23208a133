/* 3D planner of a GPT: data x tensor x pipeline degrees, the block cut and uneven head shares.
 *
 * Space. Candidate devices are plan.c's (usable, with a rate, one path of a device listed
 * twice). A tensor group is t consecutive candidates of one host (a host's last devices that
 * do not make a whole group idle); groups are taken fastest first (sum of SGEMM rates, then
 * topology order): with d copies of a pipeline of p stages, stage s of copy r runs on group
 * s x d + r, so the copies of one stage are groups of like speed. Every stage holds >= 1
 * whole block; the first also the embeddings, the last ln_f and the (tied) head. Each device
 * of a group holds >= 1 whole head (and its 4 x head-size MLP units); the copies share the
 * cut, each group has its own split. Micro-batches per copy: 1, 2, 4, .. below the copy's
 * batch, and the whole batch (one sequence each), or the number asked.
 *
 * Cost of one step (per micro-batch of mb sequences of T tokens, rows = mb T):
 *  - a device's block with h of H heads: the GEMMs of its share (QKV rows x 3w x C, proj
 *    rows x C x w, fc rows x 4w x C, proj2 rows x C x 4w with w = h C / H, attention 2 x mb h
 *    T x T x C/H), forward once and backward twice (and attention's q k^T once more: backward
 *    recomputes the weights), at plan.c's rate for their size; the
 *    element-wise layers (2 layer norms, 2 adds on rows x C, GELU on rows x 4w, softmax on
 *    mb h T^2) move 5 floats per element (forward in + out, backward 3) at the memory
 *    bandwidth, with 12 launches. The time is made non-decreasing in h (a device is never
 *    predicted faster with more heads; a rate curve rising faster than the work can say so).
 *  - a group's block: the slowest member's, plus Megatron's 2 allreduces forward and 2
 *    backward of rows x C floats, ring over the group: 2 (t-1)/t x bytes over the slowest
 *    member's host link (min of h2d, d2h: the peers meet in host memory).
 *  - the first stage's embeddings (5 floats per rows x C x 2 element) are run by every
 *    member; the last stage's ln_f, head GEMM (rows x V x C) and cross-entropy (rows x V) are
 *    vocabulary-parallel: 1/t of them on each member (an even split of the vocabulary).
 *  - hand-over to the next stage: rows x C floats forward and back, out of the sender's d2h,
 *    into the receiver's h2d, and over the network (network_gbps) between hosts.
 *  - stage time per micro-batch f_s = max over its copies of blocks x (block + tensor
 *    allreduce) + embeddings/head + hand-over; pipeline (M + P - 1) x max_s f_s (1F1B: the
 *    bottleneck sets the pace, P - 1 slots are the bubble).
 *  - data: each stage's gradients (its blocks' parameters, the replicated ones once per
 *    member) ring-allreduced over the d copies, 2 (d-1)/d x bytes, over the network shared by
 *    the devices of the busiest host the copies sit on (network_gbps x t / its devices), or
 *    over t host links when all copies share a host; the step adds the slowest stage's.
 *  - offload (option): the optimizer state lives on the host and its step runs there:
 *    gradients down and parameters up over the members' links (8 bytes a parameter over t
 *    links), the update moving (3 + 2 x slots) floats a parameter at the host's memory
 *    bandwidth (a host device's measured figure, else P3_HOST_BW) shared by the layout's
 *    devices on that host; added to the stage's allreduce. The state must fit
 *    memory_fraction of the hosts' memory, checked at the cut found (not searched).
 * Memory of a device (must fit memory_fraction x its memory): parameters of its share (split
 * weights and the column biases in proportion to its heads, layer norms and row biases
 * whole, the token rows of its vocabulary share and the position table on the first stage, ln_f
 * and its share of the head on the last) x 4 bytes x (2 +
 * optimizer slots, the slots / d with ZeRO); activations of the micro-batches in flight
 * (1F1B: min(P - s, M) on stage s) per block tsr_gpt_block_activation_bytes (in the
 * precision's storage) split the same way (12 C T in proportion, the rest whole), plus
 * the embeddings' outputs on the first and ln_f's and the logits on the last; workspace of 8
 * rows x C floats and one attention call's weights and their gradient (2 h T^2 per sequence;
 * not kept between the passes), + the logits' gradient on the last; in bf16/fp16 one call's
 * float32 staging (attention's q, k, v and output).
 *
 * Search, exact for this cost over this space. For each (t, d, p, M): the heads of a group at
 * a given cut minimise its slowest member: the block time of each device is non-decreasing
 * in its heads, so giving heads one at a time to the member whose next head costs least
 * (within what its memory holds at that cut) reaches the least maximum (the merge of sorted
 * increments). Stage times are non-decreasing in their blocks, so the least bottleneck cut
 * takes blocks one at a time to the stage whose next block costs least (the same argument);
 * the data allreduce is non-decreasing in blocks too, so the least pipeline + allreduce is
 * found by lowering the allreduce cap Y one value at a time (each stage's block cap shrinks),
 * solving the cut under it, and stopping once the pipeline alone is no better. A layout whose
 * lower bound (M + P - 1) x L / sum over stages of 1 / (its block time without memory limits)
 * can neither enter the best few (the plan and its runners-up) nor beat the best of its tensor
 * degree is not solved: on gpt3 over topology/examples/cluster-256.json, ~12 000 layouts,
 * ~130 000 stage evaluations, 0.11 s of CPU (the layer planner, plan.c, took 12.7 s). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/core/precision.h"
#include "lib/plan/plan3d_internal.h"
#include "lib/plan/plan_internal.h"

#define P3_MB_CHOICES 40
#define P3_HOST_BW 20.0 /* GB/s of a host CPU's memory when no host device was measured */

typedef struct p3_class {
    const tsr_device_info *d;
    tsr_plan_figures f;
} p3_class;

typedef struct p3_dev {
    int dev, host, cls;
    double limit;
} p3_dev;

typedef struct p3_group {
    int host;
    int first;            /* into e->devs: members first .. first + t - 1 */
    double speed;
    double link, d2h, h2d; /* slowest member's, GB/s */
    double *uval;         /* per micro-batch size index: least slowest-member block time
                           * without memory limits (NAN: not yet) */
    size_t *ushare;       /* its heads per member */
} p3_group;

/* Per micro-batch size: block time by class and heads (non-decreasing in heads), and each
 * class's first-stage and last-stage extras. */
typedef struct p3_mbtab {
    size_t mb;
    double *blk;          /* [cls x (H + 1) + h] */
    double *first, *last; /* [cls] */
} p3_mbtab;

struct tsr_p3 {
    tsr_context *ctx;
    const tsr_topology *topo;
    tsr_plan3d_options o;
    tsr_gpt_config g;
    double T, C, H, V, Tc;
    size_t L, nh;
    p3_dev *devs;
    int ndev;
    p3_class *cls;
    int ncls;
    int *mb_index;        /* [batch + 1]: into tabs, -1 none */
    p3_mbtab *tabs;
    size_t ntabs, captabs;
    size_t t;             /* groups built for */
    p3_group *groups;
    size_t ngroups;
    int *used;            /* per host: devices of the current layout */
    double *host_bw;      /* per host: GB/s of its CPU's memory (the offloaded optimizer step) */
    double *host_limit;   /* per host: bytes the offloaded optimizer state may use */
    double *tmp_host;     /* per host: scratch */
    double work;
    tsr_status err;       /* allocation failure inside the search */
};

void tsr_plan3d_options_init(tsr_plan3d_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->batch = 64;
    o->optimizer_slots = 2;
    o->memory_fraction = 0.9;
    o->network_gbps = 10.0;
    o->runners_up = 4;
}

/* ---------------------------------------------------------------- cost of one device */

static double gemm(const tsr_device_info *d, double m, double n, double k, int calls) {
    double f = 2 * m * n * k, size = cbrt(m * n * k);
    return tsr_plan_gemm_seconds(d, f, size, calls) + tsr_plan_gemm_seconds(d, 2 * f, size, 2 * calls);
}

static double block_time(const tsr_p3 *e, const p3_class *c, size_t h, size_t mb) {
    if (h == 0) return 0;
    double rows = (double)mb * e->T, C = e->C, w = (double)h * (C / e->H), hs = C / e->H;
    double bw = c->f.mem_bw_gbps * 1e9;
    double t = gemm(c->d, rows, 3 * w, C, 1) + gemm(c->d, rows, C, w, 1) +
               gemm(c->d, rows, 4 * w, C, 1) + gemm(c->d, rows, C, 4 * w, 1);
    /* scores and values of every (sequence, head), batched: two calls each way */
    double pairs = (double)mb * (double)h;
    t += tsr_plan_gemm_seconds(c->d, 2 * 2 * e->T * e->T * hs * pairs, cbrt(e->T * e->T * hs), 2) +
         tsr_plan_gemm_seconds(c->d, 5 * 2 * e->T * e->T * hs * pairs, cbrt(e->T * e->T * hs), 5);
    double elems = 4 * rows * C + rows * 4 * w + pairs * e->T * e->T;
    return t + elems * 5 * 4 / bw + 12 * c->f.launch_s;
}

static double first_extra(const tsr_p3 *e, const p3_class *c, size_t mb) {
    double rows = (double)mb * e->T;
    return 2 * rows * e->C * 5 * 4 / (c->f.mem_bw_gbps * 1e9) + 4 * c->f.launch_s;
}

static double last_extra(const tsr_p3 *e, const p3_class *c, size_t mb) {
    double rows = (double)mb * e->T;
    return gemm(c->d, rows, e->V, e->C, 1) +
           (rows * e->C + rows * e->V) * 5 * 4 / (c->f.mem_bw_gbps * 1e9) + 4 * c->f.launch_s;
}

/* Parameters (floats) of a device of stage holding n blocks with h heads. The token table
 * (and the tied head's copy) is vocabulary-parallel: a member holds the rows of its share,
 * split as the heads (lib/layers/vocab_parallel.c); the position table is whole. */
static double dev_params(const tsr_p3 *e, double h, size_t n, int first, int last) {
    double C = e->C, P = (double)n * ((12 * C * C + 7 * C) * h / e->H + 6 * C), Vh = e->V * h / e->H;
    if (first) P += (Vh + e->Tc) * C;
    if (last) P += 2 * C + (first ? 0 : Vh * C);
    return P;
}

/* ---------------------------------------------------------------- tables */

/* `old` (n items of `size` bytes) moved into a zeroed array of `cap` items; NULL on failure
 * (then `old` is kept). */
static void *grow(tsr_context *ctx, void *old, size_t n, size_t cap, size_t size) {
    void *p = tsr_calloc(ctx, cap, size);
    if (!p) return NULL;
    if (n) memcpy(p, old, n * size);
    tsr_free(ctx, old);
    return p;
}

static p3_mbtab *mbtab(tsr_p3 *e, size_t mb) {
    if (mb == 0 || mb > e->o.batch) return NULL;
    if (e->mb_index[mb] >= 0) return &e->tabs[e->mb_index[mb]];
    if (e->ntabs == e->captabs) {
        size_t cap = e->captabs ? 2 * e->captabs : 16;
        p3_mbtab *t = grow(e->ctx, e->tabs, e->ntabs, cap, sizeof *t);
        if (!t) return NULL;
        e->tabs = t;
        e->captabs = cap;
    }
    p3_mbtab *t = &e->tabs[e->ntabs];
    memset(t, 0, sizeof *t);
    t->mb = mb;
    size_t nc = (size_t)e->ncls, H1 = e->nh + 1;
    t->blk = tsr_calloc(e->ctx, nc * H1, sizeof *t->blk);
    t->first = tsr_calloc(e->ctx, nc, sizeof *t->first);
    t->last = tsr_calloc(e->ctx, nc, sizeof *t->last);
    if (!t->blk || !t->first || !t->last) {
        tsr_free(e->ctx, t->blk);
        tsr_free(e->ctx, t->first);
        tsr_free(e->ctx, t->last);
        return NULL;
    }
    for (size_t k = 0; k < nc; k++) {
        double prev = 0;
        for (size_t h = 0; h < H1; h++) {
            double v = block_time(e, &e->cls[k], h, mb);
            t->blk[k * H1 + h] = prev = v > prev ? v : prev;
        }
        t->first[k] = first_extra(e, &e->cls[k], mb);
        t->last[k] = last_extra(e, &e->cls[k], mb);
    }
    e->mb_index[mb] = (int)e->ntabs++;
    return t;
}

static void free_groups(tsr_p3 *e) {
    for (size_t i = 0; i < e->ngroups; i++) {
        tsr_free(e->ctx, e->groups[i].uval);
        tsr_free(e->ctx, e->groups[i].ushare);
    }
    tsr_free(e->ctx, e->groups);
    e->groups = NULL;
    e->ngroups = 0;
    e->t = 0;
}

void tsr_p3_free(tsr_p3 *e) {
    if (!e) return;
    free_groups(e);
    for (size_t i = 0; i < e->ntabs; i++) {
        tsr_free(e->ctx, e->tabs[i].blk);
        tsr_free(e->ctx, e->tabs[i].first);
        tsr_free(e->ctx, e->tabs[i].last);
    }
    tsr_free(e->ctx, e->tabs);
    tsr_free(e->ctx, e->mb_index);
    tsr_free(e->ctx, e->devs);
    tsr_free(e->ctx, e->cls);
    tsr_free(e->ctx, e->used);
    tsr_free(e->ctx, e->host_bw);
    tsr_free(e->ctx, e->host_limit);
    tsr_free(e->ctx, e->tmp_host);
    tsr_free(e->ctx, e);
}

static int cmp_group(const void *a, const void *b) {
    const p3_group *x = a, *y = b;
    if (x->speed != y->speed) return x->speed > y->speed ? -1 : 1;
    return x->first - y->first;
}

size_t tsr_p3_groups(tsr_p3 *e, size_t t) {
    if (e->t == t) return e->ngroups;
    free_groups(e);
    if (t == 0 || t > e->nh) return 0;
    p3_group *gs = tsr_calloc(e->ctx, (size_t)e->ndev / t + 1, sizeof *gs);
    if (!gs) {
        e->err = TSR_ERR_NO_MEMORY;
        return 0;
    }
    size_t n = 0;
    for (int i = 0; i < e->ndev;) { /* devs are grouped by host, topology order within */
        int j = i;
        while (j < e->ndev && e->devs[j].host == e->devs[i].host) j++;
        for (int k = i; k + (int)t <= j; k += (int)t) {
            p3_group *g = &gs[n++];
            g->host = e->devs[k].host;
            g->first = k;
            g->link = g->d2h = g->h2d = INFINITY;
            for (int q = k; q < k + (int)t; q++) {
                const tsr_plan_figures *f = &e->cls[e->devs[q].cls].f;
                g->speed += f->rate_gflops;
                double l = f->d2h_gbps < f->h2d_gbps ? f->d2h_gbps : f->h2d_gbps;
                if (l < g->link) g->link = l;
                if (f->d2h_gbps < g->d2h) g->d2h = f->d2h_gbps;
                if (f->h2d_gbps < g->h2d) g->h2d = f->h2d_gbps;
            }
        }
        i = j;
    }
    qsort(gs, n, sizeof *gs, cmp_group);
    e->groups = gs;
    e->ngroups = n;
    e->t = t;
    for (size_t i = 0; i < n; i++) {
        gs[i].uval = tsr_calloc(e->ctx, e->o.batch + 1, sizeof *gs[i].uval);
        gs[i].ushare = tsr_calloc(e->ctx, (e->o.batch + 1) * t, sizeof *gs[i].ushare);
        if (!gs[i].uval || !gs[i].ushare) {
            free_groups(e);
            e->err = TSR_ERR_NO_MEMORY;
            return 0;
        }
        for (size_t k = 0; k <= e->o.batch; k++) gs[i].uval[k] = NAN;
    }
    return n;
}

size_t tsr_p3_microbatch_choices(const tsr_p3 *e, size_t d, size_t *out, size_t cap) {
    if (d == 0 || d > e->o.batch) return 0;
    size_t rb = (e->o.batch + d - 1) / d, n = 0;
    if (e->o.microbatches) {
        if (e->o.microbatches > rb || cap == 0) return 0;
        out[0] = e->o.microbatches;
        return 1;
    }
    for (size_t m = 1; m < rb && n + 1 < cap; m *= 2) out[n++] = m;
    if (n < cap) out[n++] = rb;
    return n;
}

/* ---------------------------------------------------------------- one stage */

/* A stage position of the layout being solved. */
typedef struct p3_stage {
    int first, last;
    size_t inflight;
    size_t g0;            /* its groups: g0 .. g0 + d - 1 */
    double *send;         /* per copy: hand-over to the next stage per micro-batch */
    double ar_coef;       /* seconds per byte of its data allreduce */
    double off_coef;      /* seconds per parameter float of its offloaded optimizer step */
} p3_stage;

typedef struct p3_layout {
    size_t t, d, p, m, mb;
    int offload;          /* optimizer state and step on the host (ZeRO-Offload) */
    p3_mbtab *tab;
    p3_stage *st;
    double *send;         /* d x p */
    double *tp;           /* per group of the layout (d x p): tensor allreduces per block */
} p3_layout;

/* Bytes on a device holding h heads of n blocks at stage position `st` of layout `l`. */
static double dev_memory(const tsr_p3 *e, size_t h, size_t n, const p3_stage *st,
                         const p3_layout *l) {
    int first = st->first, last = st->last;
    size_t inflight = st->inflight, d = l->d, mb = l->mb;
    double C = e->C, T = e->T, hh = (double)h;
    double slots = l->offload ? 0 : e->o.optimizer_slots; /* offloaded: on the host */
    if (e->o.zero) slots /= (double)d;
    double bytes = dev_params(e, hh, n, first, last) * 4 * (2 + slots);
    /* bytes: the split part (12 C T) is all 16-bit in bf16/fp16 */
    int half = e->o.precision != TSR_PRECISION_FP32;
    double full = (double)tsr_gpt_block_activation_bytes(&e->g, (size_t)T, e->o.precision);
    double split = T * 12 * C * (half ? 2 : 4);
    double act = (double)n * ((full - split) + split * hh / e->H);
    if (first) act += 2 * T * C * 4;
    if (last) act += (3 * T * C + T * e->V * hh / e->H) * 4; /* its share of the logits */
    bytes += (double)inflight * act * (double)mb;
    if (half) bytes += 4 * T * C * (double)mb * 4; /* one call's staging */
    bytes += (8 * T * C + 2 * hh * T * T) * (double)mb * 4; /* workspace */
    bytes += last ? (double)mb * T * e->V * hh / e->H * 4 : 0;
    return bytes;
}

/* Heads of group g's members (at most cap[i] each, >= 1) minimising the slowest member's
 * block time; returns that time, INFINITY when the caps cannot hold all heads. */
static double split_heads(const tsr_p3 *e, const p3_group *g, const p3_mbtab *tab,
                          const size_t *cap, size_t *heads) {
    size_t t = e->t, H1 = e->nh + 1, left = e->nh - t;
    double worst = 0;
    for (size_t i = 0; i < t; i++) {
        if (cap[i] < 1) return INFINITY;
        heads[i] = 1;
        double v = tab->blk[(size_t)e->devs[g->first + (int)i].cls * H1 + 1];
        if (v > worst) worst = v;
    }
    for (; left > 0; left--) {
        size_t best = t;
        double bv = INFINITY;
        for (size_t i = 0; i < t; i++) {
            if (heads[i] >= cap[i]) continue;
            double v = tab->blk[(size_t)e->devs[g->first + (int)i].cls * H1 + heads[i] + 1];
            if (v < bv) bv = v, best = i;
        }
        if (best == t) return INFINITY;
        heads[best]++;
        if (bv > worst) worst = bv;
    }
    return worst;
}

/* Most heads device `dv` holds at n blocks (0: not even one). */
static size_t head_cap(const tsr_p3 *e, const p3_dev *dv, size_t n, const p3_stage *s,
                       const p3_layout *l) {
    double m0 = dev_memory(e, 0, n, s, l);
    double m1 = dev_memory(e, 1, n, s, l);
    if (m1 > dv->limit) return 0;
    double slope = m1 - m0;
    size_t c = slope > 0 ? (size_t)fmin((dv->limit - m0) / slope, (double)e->nh) : e->nh;
    if (c < 1) c = 1;
    while (c > 1 && dev_memory(e, c, n, s, l) > dv->limit) c--;
    while (c < e->nh && dev_memory(e, c + 1, n, s, l) <= dv->limit) c++;
    return c;
}

/* Least slowest-member block time of group g at n blocks on stage s within memory, its
 * heads in `heads` (t entries). */
static double group_block(tsr_p3 *e, p3_group *g, size_t n, const p3_stage *s,
                          const p3_layout *l, size_t *heads) {
    size_t t = e->t, mbi = (size_t)e->mb_index[l->mb];
    size_t *u = g->ushare + mbi * t;
    if (isnan(g->uval[mbi])) {
        size_t cap[64];
        for (size_t i = 0; i < t; i++) cap[i] = e->nh;
        g->uval[mbi] = split_heads(e, g, l->tab, cap, u);
    }
    int fits = 1;
    for (size_t i = 0; i < t && fits; i++)
        fits = dev_memory(e, u[i], n, s, l) <=
               e->devs[g->first + (int)i].limit;
    if (fits) {
        memcpy(heads, u, t * sizeof *heads);
        return g->uval[mbi];
    }
    size_t cap[64];
    for (size_t i = 0; i < t; i++) cap[i] = head_cap(e, &e->devs[g->first + (int)i], n, s, l);
    return split_heads(e, g, l->tab, cap, heads);
}

static double group_extra(const tsr_p3 *e, const p3_group *g, const p3_stage *s,
                          const p3_mbtab *tab) {
    double x = 0;
    for (size_t i = 0; i < e->t; i++) {
        int k = e->devs[g->first + (int)i].cls;
        /* the head is vocabulary-parallel: its GEMM and cross-entropy over the group (taken
         * as even; ln_f with it, a small part) */
        double v = (s->first ? tab->first[k] : 0) + (s->last ? tab->last[k] / (double)e->t : 0);
        if (v > x) x = v;
    }
    return x;
}

/* Stage time per micro-batch at n blocks (the slowest copy); heads of every copy's members
 * to heads[r x t ..] when not NULL. */
static double stage_time(tsr_p3 *e, const p3_layout *l, size_t s, size_t n, size_t *heads) {
    const p3_stage *st = &l->st[s];
    double worst = 0;
    size_t tmp[64];
    e->work += 1;
    for (size_t r = 0; r < l->d; r++) {
        size_t gi = st->g0 + r;
        p3_group *g = &e->groups[gi];
        double b = group_block(e, g, n, st, l, heads ? heads + r * e->t : tmp);
        if (!(b < INFINITY)) return INFINITY;
        double v = (double)n * (b + l->tp[gi]) + group_extra(e, g, st, l->tab) + st->send[r];
        if (v > worst) worst = v;
    }
    return worst;
}

/* Parameter floats of a stage's group at n blocks (the replicated ones once per member, the
 * vocabulary-parallel token rows once over the group). */
static double group_params(const tsr_p3 *e, const p3_layout *l, const p3_stage *st, size_t n) {
    double C = e->C, t = (double)l->t;
    return (double)n * (12 * C * C + 7 * C + 6 * C * t) +
           (st->first ? (e->V + t * e->Tc) * C : 0) +
           (st->last ? t * 2 * C + (st->first ? 0 : e->V * C) : 0);
}

/* After the pipeline: the stage's gradient allreduce over the copies, and with offload its
 * optimizer step on the host. */
static double stage_allreduce(const tsr_p3 *e, const p3_layout *l, size_t s, size_t n) {
    const p3_stage *st = &l->st[s];
    double P = group_params(e, l, st, n);
    return 4 * P * st->ar_coef + (l->offload ? P * st->off_coef : 0);
}

/* Offloaded optimizer state fits the hosts' memory at cut n. */
static int host_memory_fits(tsr_p3 *e, const p3_layout *l, const size_t *n) {
    if (!l->offload) return 1;
    int nh = tsr_topology_host_count(e->topo);
    double *use = (double *)e->tmp_host;
    for (int h = 0; h < nh; h++) use[h] = 0;
    double per = 4.0 * e->o.optimizer_slots / (e->o.zero ? (double)l->d : 1.0);
    for (size_t s = 0; s < l->p; s++)
        for (size_t r = 0; r < l->d; r++)
            use[e->groups[l->st[s].g0 + r].host] += per * group_params(e, l, &l->st[s], n[s]);
    for (int h = 0; h < nh; h++)
        if (use[h] > e->host_limit[h]) return 0;
    return 1;
}

static double send_time(const tsr_p3 *e, const p3_group *a, const p3_group *b, size_t mb) {
    double bytes = (double)mb * e->T * e->C * 4;
    double v = 2 * bytes * (1 / (a->d2h * 1e9) + 1 / (b->h2d * 1e9));
    if (a->host != b->host) v += 2 * bytes / (e->o.network_gbps * 1e9);
    return v;
}

/* Fills the stage positions of (t, d, p, m) on the current groups. */
static void layout_init(tsr_p3 *e, p3_layout *l, size_t d, size_t p, size_t m, int offload) {
    size_t rb = (e->o.batch + d - 1) / d;
    l->t = e->t, l->d = d, l->p = p, l->m = m;
    l->offload = offload;
    l->mb = (rb + m - 1) / m;
    l->tab = mbtab(e, l->mb);
    int nh = tsr_topology_host_count(e->topo);
    memset(e->used, 0, (size_t)nh * sizeof *e->used);
    for (size_t i = 0; i < d * p; i++) e->used[e->groups[i].host] += (int)l->t;
    double rows = (double)l->mb * e->T;
    for (size_t i = 0; i < d * p; i++) {
        const p3_group *g = &e->groups[i];
        l->tp[i] = l->t > 1 ? 4 * 2.0 * (double)(l->t - 1) / (double)l->t * rows * e->C * 4 /
                                  (g->link * 1e9)
                            : 0;
    }
    for (size_t s = 0; s < p; s++) {
        p3_stage *st = &l->st[s];
        st->first = s == 0;
        st->last = s + 1 == p;
        st->inflight = p - s < m ? p - s : m;
        st->g0 = s * d;
        st->send = l->send + s * d;
        int cross = 0;
        for (size_t r = 1; r < d; r++) cross |= e->groups[st->g0 + r].host != e->groups[st->g0].host;
        double bw = INFINITY;
        st->off_coef = 0;
        for (size_t r = 0; r < d; r++) {
            const p3_group *g = &e->groups[st->g0 + r];
            /* offloaded: gradients down and parameters up over the members' links, the
             * optimizer step on the host's CPU, shared by the layout's devices there */
            double slots = e->o.optimizer_slots / (e->o.zero ? (double)d : 1.0);
            double off = 8 / ((double)l->t * g->link * 1e9) +
                         (3 + 2 * slots) * 4 * e->used[g->host] / ((double)l->t * e->host_bw[g->host] * 1e9);
            if (off > st->off_coef) st->off_coef = off;
            double b = cross ? e->o.network_gbps * (double)l->t / e->used[g->host]
                             : (double)l->t * g->link;
            if (b < bw) bw = b;
            st->send[r] = s + 1 < p ? send_time(e, g, &e->groups[st->g0 + d + r], l->mb) : 0;
        }
        st->ar_coef = d > 1 ? 2.0 * (double)(d - 1) / (double)d / (bw * 1e9) : 0;
    }
}

/* ---------------------------------------------------------------- evaluation of a layout */

typedef struct p3_detail {
    tsr_p3_cost cost;
    double *stage_s;      /* per stage (p) */
    tsr_p3_device *dev;   /* d x p x t */
} p3_detail;

static double evaluate(tsr_p3 *e, p3_layout *l, const size_t *blocks, const size_t *heads,
                       p3_detail *out) {
    size_t t = l->t, d = l->d, p = l->p, H1 = e->nh + 1, total = 0;
    double F = 0, G = 0;
    size_t bott = 0;
    for (size_t s = 0; s < p; s++) {
        const p3_stage *st = &l->st[s];
        size_t n = blocks[s];
        if (n == 0) return INFINITY;
        total += n;
        double fs = 0;
        for (size_t r = 0; r < d; r++) {
            size_t gi = st->g0 + r, sum = 0;
            const p3_group *g = &e->groups[gi];
            double worst = 0;
            for (size_t i = 0; i < t; i++) {
                size_t h = heads[gi * t + i];
                const p3_dev *dv = &e->devs[g->first + (int)i];
                if (h == 0 || h > e->nh) return INFINITY;
                sum += h;
                double mem = dev_memory(e, h, n, st, l);
                if (mem > dv->limit) return INFINITY;
                double b = l->tab->blk[(size_t)dv->cls * H1 + h];
                if (b > worst) worst = b;
                if (out) {
                    tsr_p3_device *od = &out->dev[(r * p + s) * t + i];
                    od->dev = dv->dev;
                    od->host = dv->host;
                    od->stage = s, od->copy = r, od->member = i, od->heads = h;
                    od->memory = mem;
                    od->limit = dv->limit;
                    od->busy_s = (double)l->m *
                                 ((double)n * b + (st->first ? l->tab->first[dv->cls] : 0) +
                                  (st->last ? l->tab->last[dv->cls] : 0));
                }
            }
            if (sum != e->nh) return INFINITY;
            double v = (double)n * (worst + l->tp[gi]) + group_extra(e, g, st, l->tab) + st->send[r];
            if (v > fs) fs = v;
        }
        if (out) out->stage_s[s] = fs;
        if (fs > F) F = fs, bott = s;
        double a = stage_allreduce(e, l, s, n);
        if (a > G) G = a;
    }
    if (total != e->L || !host_memory_fits(e, l, blocks)) return INFINITY;
    double A = (double)(l->m + p - 1);
    double step = A * F + G;
    if (out) {
        /* the bottleneck stage's slowest copy, by part */
        tsr_p3_cost *c = &out->cost;
        const p3_stage *st = &l->st[bott];
        size_t n = blocks[bott];
        double fs = -1;
        for (size_t r = 0; r < d; r++) {
            size_t gi = st->g0 + r;
            const p3_group *g = &e->groups[gi];
            double worst = 0;
            for (size_t i = 0; i < t; i++) {
                double b = l->tab->blk[(size_t)e->devs[g->first + (int)i].cls * H1 + heads[gi * t + i]];
                if (b > worst) worst = b;
            }
            double comp = (double)n * worst + group_extra(e, g, st, l->tab);
            double v = comp + (double)n * l->tp[gi] + st->send[r];
            if (v > fs) {
                fs = v;
                c->compute = (double)l->m * comp;
                c->tp = (double)l->m * (double)n * l->tp[gi];
                c->send = (double)l->m * st->send[r];
            }
        }
        c->t = t, c->d = d, c->p = p, c->m = l->m, c->mb = l->mb;
        c->offload = l->offload;
        c->bubble = (double)(p - 1) * F;
        c->allreduce = G;
        c->stage_s = F;
        c->step = step;
    }
    return step;
}

/* ---------------------------------------------------------------- the cut */

typedef struct p3_solver {
    double *f;            /* p x (nmax + 2): stage time at n blocks, NAN unknown */
    size_t *n, *cap, *heap;
    double *key;
    size_t stride;
} p3_solver;

static double fval(tsr_p3 *e, const p3_layout *l, p3_solver *sv, size_t s, size_t n) {
    double *x = &sv->f[s * sv->stride + n];
    if (isnan(*x)) *x = stage_time(e, l, s, n, NULL);
    return *x;
}

static void heap_push(p3_solver *sv, size_t *len, size_t s) {
    size_t i = (*len)++;
    sv->heap[i] = s;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (sv->key[sv->heap[up]] <= sv->key[sv->heap[i]]) break;
        size_t tmp = sv->heap[up];
        sv->heap[up] = sv->heap[i], sv->heap[i] = tmp, i = up;
    }
}

static size_t heap_pop(p3_solver *sv, size_t *len) {
    size_t top = sv->heap[0];
    sv->heap[0] = sv->heap[--*len];
    size_t i = 0;
    for (;;) {
        size_t a = 2 * i + 1, b = a + 1, m = i;
        if (a < *len && sv->key[sv->heap[a]] < sv->key[sv->heap[m]]) m = a;
        if (b < *len && sv->key[sv->heap[b]] < sv->key[sv->heap[m]]) m = b;
        if (m == i) break;
        size_t tmp = sv->heap[m];
        sv->heap[m] = sv->heap[i], sv->heap[i] = tmp, i = m;
    }
    return top;
}

/* Least bottleneck over cuts with n[s] <= cap[s]; the cut in sv->n. */
static double least_bottleneck(tsr_p3 *e, const p3_layout *l, p3_solver *sv) {
    size_t p = l->p, len = 0;
    double F = 0;
    for (size_t s = 0; s < p; s++) {
        sv->n[s] = 1;
        double v = fval(e, l, sv, s, 1);
        if (!(v < INFINITY)) return INFINITY;
        if (v > F) F = v;
    }
    for (size_t s = 0; s < p; s++)
        if (sv->cap[s] > 1) {
            sv->key[s] = fval(e, l, sv, s, 2);
            heap_push(sv, &len, s);
        }
    for (size_t k = p; k < e->L; k++) {
        if (len == 0) return INFINITY;
        size_t s = heap_pop(sv, &len);
        double v = sv->key[s];
        if (!(v < INFINITY)) return INFINITY;
        sv->n[s]++;
        if (v > F) F = v;
        if (sv->n[s] < sv->cap[s]) {
            sv->key[s] = fval(e, l, sv, s, sv->n[s] + 1);
            heap_push(sv, &len, s);
        }
    }
    return F;
}

/* Least step of layout l over every cut (the cut in best_n); INFINITY when none fits. */
static double solve(tsr_p3 *e, const p3_layout *l, p3_solver *sv, size_t *best_n) {
    size_t p = l->p, nmax = e->L - p + 1;
    double A = (double)(l->m + p - 1);
    for (size_t i = 0; i < p * sv->stride; i++) sv->f[i] = NAN;
    for (size_t s = 0; s < p; s++) sv->cap[s] = nmax;
    double F = least_bottleneck(e, l, sv);
    if (!(F < INFINITY)) return INFINITY;
    double G = 0;
    for (size_t s = 0; s < p; s++) {
        double a = stage_allreduce(e, l, s, sv->n[s]);
        if (a > G) G = a;
    }
    double best = A * F + G;
    memcpy(best_n, sv->n, p * sizeof *best_n);
    if (l->d < 2 || p == 1) return best;
    /* lower the allreduce cap: every stage keeps the blocks whose allreduce is below it */
    for (size_t s = 0; s < p; s++) {
        size_t c = nmax;
        while (c > 1 && stage_allreduce(e, l, s, c) > G) c--;
        sv->cap[s] = c;
    }
    for (;;) {
        double Y = 0;
        for (size_t s = 0; s < p; s++) {
            double a = stage_allreduce(e, l, s, sv->cap[s]);
            if (a > Y) Y = a;
        }
        size_t sum = 0;
        for (size_t s = 0; s < p; s++) {
            while (sv->cap[s] > 0 && stage_allreduce(e, l, s, sv->cap[s]) >= Y) sv->cap[s]--;
            sum += sv->cap[s];
            if (sv->cap[s] == 0) sum = 0, s = p - 1;
        }
        if (sum < e->L) break;
        double Fy = least_bottleneck(e, l, sv);
        if (!(Fy < INFINITY) || A * Fy >= best) break;
        double Gy = 0;
        for (size_t s = 0; s < p; s++) {
            double a = stage_allreduce(e, l, s, sv->n[s]);
            if (a > Gy) Gy = a;
        }
        if (A * Fy + Gy < best) {
            best = A * Fy + Gy;
            memcpy(best_n, sv->n, p * sizeof *best_n);
        }
    }
    return best;
}

/* ---------------------------------------------------------------- setup */

static tsr_status check_options(tsr_context *ctx, const tsr_plan3d_options *o) {
    if (o->batch == 0 || o->batch > (1u << 20))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "plan option batch: %zu, must be in 1..%u",
                         o->batch, 1u << 20);
    if (o->microbatches > o->batch)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "plan option microbatches: %zu is more than the batch of %zu sequences",
                         o->microbatches, o->batch);
    if (o->optimizer_slots < 0 || o->optimizer_slots > 16)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "plan option optimizer_slots: %d, must be in 0..16 (0 SGD, 2 Adam)",
                         o->optimizer_slots);
    if (!(o->memory_fraction > 0 && o->memory_fraction <= 1))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "plan option memory_fraction: %g, must be in (0, 1]",
                         o->memory_fraction);
    if (!(o->network_gbps > 0) || !isfinite(o->network_gbps))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "plan option network_gbps: %g, must be > 0",
                         o->network_gbps);
    if (o->data > o->batch)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "plan option data: %zu copies, more than the batch of %zu sequences",
                         o->data, o->batch);
    if (o->runners_up > 64)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "plan option runners_up: %zu, must be <= 64",
                         o->runners_up);
    TSR_TRY(tsr_precision_check(ctx, "plan option ", o->precision));
    return TSR_OK;
}

tsr_status tsr_p3_create(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                         const tsr_plan3d_options *o, tsr_p3 **out) {
    *out = NULL;
    if (!model || !topo)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "3D plan: %s is NULL", model ? "topology" : "model");
    tsr_plan3d_options opt;
    if (o)
        opt = *o;
    else
        tsr_plan3d_options_init(&opt);
    TSR_TRY(check_options(ctx, &opt));
    tsr_gpt_config g;
    if (tsr_model_gpt_config(model, &g) != TSR_OK)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "3D plan: the model is not a GPT (embeddings, blocks, ln_f, head); "
                         "plan it by layers instead");
    tsr_layer_info li;
    TSR_TRY(tsr_model_layer_info(model, 0, 1, &li));
    if (opt.tensor > g.heads)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "plan option tensor: %zu, more than the model's %zu heads (one each)",
                         opt.tensor, g.heads);
    if (opt.pipeline > g.layers)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "plan option pipeline: %zu, more than the model's %zu blocks (one each)",
                         opt.pipeline, g.layers);
    if (g.heads > 4096)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "3D plan: %zu heads, at most 4096", g.heads);
    tsr_p3 *e = tsr_calloc(ctx, 1, sizeof *e);
    if (!e) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan");
    e->ctx = ctx;
    e->topo = topo;
    e->o = opt;
    e->g = g;
    e->T = (double)li.out_c;
    e->C = (double)g.channels, e->H = (double)g.heads, e->V = (double)g.vocab;
    e->Tc = (double)g.context;
    e->L = g.layers;
    e->nh = g.heads;
    int nd = tsr_topology_device_count(topo), nh = tsr_topology_host_count(topo);
    e->devs = tsr_calloc(ctx, (size_t)nd + 1, sizeof *e->devs);
    e->cls = tsr_calloc(ctx, (size_t)nd + 1, sizeof *e->cls);
    e->used = tsr_calloc(ctx, (size_t)nh + 1, sizeof *e->used);
    e->mb_index = tsr_calloc(ctx, opt.batch + 1, sizeof *e->mb_index);
    e->host_bw = tsr_calloc(ctx, (size_t)nh + 1, sizeof *e->host_bw);
    e->host_limit = tsr_calloc(ctx, (size_t)nh + 1, sizeof *e->host_limit);
    e->tmp_host = tsr_calloc(ctx, (size_t)nh + 1, sizeof *e->tmp_host);
    if (!e->devs || !e->cls || !e->used || !e->mb_index || !e->host_bw || !e->host_limit ||
        !e->tmp_host) {
        tsr_p3_free(e);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan: tables");
    }
    for (size_t i = 0; i <= opt.batch; i++) e->mb_index[i] = -1;
    for (int h = 0; h < nh; h++) { /* the host's CPU as the topology measured it, if it did */
        e->host_bw[h] = P3_HOST_BW;
        for (int i = 0; i < nd; i++) {
            const tsr_device_info *d = tsr_topology_device(topo, i);
            if (d->host == h && d->backend == TSR_BACKEND_HOST && d->mem_bw_gbps > 0)
                e->host_bw[h] = d->mem_bw_gbps;
        }
        e->host_limit[h] = opt.memory_fraction * (double)tsr_topology_host(topo, h)->memory_bytes;
    }
    /* candidates by host, topology order within */
    for (int h = 0; h < nh; h++)
        for (int i = 0; i < nd; i++) {
            const tsr_device_info *d = tsr_topology_device(topo, i);
            if (d->host != h || tsr_plan_not_candidate(topo, i)) continue;
            int k = 0;
            while (k < e->ncls && !tsr_plan_same_capability(e->cls[k].d, d)) k++;
            if (k == e->ncls) {
                e->cls[k].d = d;
                tsr_plan_device_figures(d, opt.memory_fraction, &e->cls[k].f);
                e->ncls++;
            }
            p3_dev *dv = &e->devs[e->ndev++];
            dv->dev = i;
            dv->host = h;
            dv->cls = k;
            dv->limit = (double)e->cls[k].f.limit_bytes;
        }
    if (e->ndev == 0) {
        tsr_p3_free(e);
        return tsr_error(ctx, TSR_ERR_NO_DEVICE,
                         "3D plan: none of the topology's %d devices can be planned on (usable, "
                         "with a compute rate and a memory size)",
                         nd);
    }
    *out = e;
    return TSR_OK;
}

/* Solver and layout buffers for up to p stages and d x p groups. */
typedef struct p3_work {
    p3_layout l;
    p3_solver sv;
    size_t *cut;
    size_t *heads;
} p3_work;

static void work_free(tsr_context *ctx, p3_work *w) {
    tsr_free(ctx, w->l.st);
    tsr_free(ctx, w->l.send);
    tsr_free(ctx, w->l.tp);
    tsr_free(ctx, w->sv.f);
    tsr_free(ctx, w->sv.n);
    tsr_free(ctx, w->sv.cap);
    tsr_free(ctx, w->sv.heap);
    tsr_free(ctx, w->sv.key);
    tsr_free(ctx, w->cut);
    tsr_free(ctx, w->heads);
    memset(w, 0, sizeof *w);
}

static tsr_status work_alloc(tsr_p3 *e, p3_work *w, size_t groups, size_t tmax) {
    tsr_context *ctx = e->ctx;
    size_t P = e->L < groups ? e->L : groups;
    memset(w, 0, sizeof *w);
    w->sv.stride = e->L + 2;
    w->l.st = tsr_calloc(ctx, P + 1, sizeof *w->l.st);
    w->l.send = tsr_calloc(ctx, groups + 1, sizeof *w->l.send);
    w->l.tp = tsr_calloc(ctx, groups + 1, sizeof *w->l.tp);
    w->sv.f = tsr_calloc(ctx, (P + 1) * w->sv.stride, sizeof *w->sv.f);
    w->sv.n = tsr_calloc(ctx, P + 1, sizeof *w->sv.n);
    w->sv.cap = tsr_calloc(ctx, P + 1, sizeof *w->sv.cap);
    w->sv.heap = tsr_calloc(ctx, P + 1, sizeof *w->sv.heap);
    w->sv.key = tsr_calloc(ctx, P + 1, sizeof *w->sv.key);
    w->cut = tsr_calloc(ctx, P + 1, sizeof *w->cut);
    w->heads = tsr_calloc(ctx, (groups + 1) * tmax, sizeof *w->heads);
    if (!w->l.st || !w->l.send || !w->l.tp || !w->sv.f || !w->sv.n || !w->sv.cap || !w->sv.heap ||
        !w->sv.key || !w->cut || !w->heads) {
        work_free(ctx, w);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan: search buffers");
    }
    return TSR_OK;
}

double tsr_p3_evaluate(tsr_p3 *e, size_t t, size_t d, size_t p, size_t m, int offload,
                       const size_t *blocks, const size_t *heads) {
    size_t G = tsr_p3_groups(e, t);
    if (!G || !d || !p || d * p > G || p > e->L || !m || !blocks || !heads) return INFINITY;
    p3_work w;
    if (work_alloc(e, &w, G, t) != TSR_OK) return INFINITY;
    layout_init(e, &w.l, d, p, m, offload);
    double v = w.l.tab ? evaluate(e, &w.l, blocks, heads, NULL) : INFINITY;
    work_free(e->ctx, &w);
    return v;
}

/* ---------------------------------------------------------------- the search */

typedef struct p3_top {
    tsr_p3_cost *c;       /* best of each (t, d, p) kept, fastest first */
    size_t n, cap;
} p3_top;

static double top_threshold(const p3_top *k) { return k->n < k->cap ? INFINITY : k->c[k->n - 1].step; }

static void top_offer(p3_top *k, const tsr_p3_cost *c) {
    size_t i = 0;
    for (; i < k->n; i++) /* one entry per degrees: keep its best micro-batch count */
        if (k->c[i].t == c->t && k->c[i].d == c->d && k->c[i].p == c->p &&
            k->c[i].offload == c->offload)
            break;
    if (i < k->n) {
        if (c->step >= k->c[i].step) return;
        memmove(&k->c[i], &k->c[i + 1], (k->n - i - 1) * sizeof *k->c);
        k->n--;
    }
    if (k->n == k->cap && c->step >= k->c[k->n - 1].step) return;
    if (k->n == k->cap) k->n--;
    size_t j = k->n;
    while (j > 0 && k->c[j - 1].step > c->step) {
        k->c[j] = k->c[j - 1];
        j--;
    }
    k->c[j] = *c;
    k->n++;
}

/* Heads of every group at the cut n (each group's least slowest member within memory). */
static void cut_heads(tsr_p3 *e, const p3_layout *l, const size_t *n, size_t *heads) {
    for (size_t s = 0; s < l->p; s++) stage_time(e, l, s, n[s], heads + l->st[s].g0 * l->t);
}

/* A refused layout's reason: at the even cut and the heads of least time, the device
 * furthest over its limit. */
static void refusal(tsr_p3 *e, p3_work *w, tsr_p3_refusal *r) {
    p3_layout *l = &w->l;
    size_t p = l->p, t = l->t;
    double worst = -1;
    size_t nn = e->L / p, extra = e->L % p;
    memset(r, 0, sizeof *r);
    r->t = t, r->d = l->d, r->p = p, r->m = l->m, r->offload = l->offload;
    for (size_t s = 0; s < p; s++) {
        const p3_stage *st = &l->st[s];
        size_t n = nn + (s < extra);
        for (size_t q = 0; q < l->d; q++) {
            p3_group *g = &e->groups[st->g0 + q];
            size_t mbi = (size_t)e->mb_index[l->mb];
            if (isnan(g->uval[mbi])) {
                size_t cap[64];
                for (size_t i = 0; i < t; i++) cap[i] = e->nh;
                g->uval[mbi] = split_heads(e, g, l->tab, cap, g->ushare + mbi * t);
            }
            for (size_t i = 0; i < t; i++) {
                const p3_dev *dv = &e->devs[g->first + (int)i];
                size_t h = g->ushare[mbi * t + i];
                double need = dev_memory(e, h, n, st, l);
                double ratio = need / dv->limit;
                if (ratio > worst) {
                    worst = ratio;
                    r->need = need, r->limit = dv->limit;
                    char a[32], b[32];
                    tsr_plan_format_bytes(a, sizeof a, need);
                    tsr_plan_format_bytes(b, sizeof b, dv->limit);
                    const tsr_device_info *di = tsr_topology_device(e->topo, dv->dev);
                    const tsr_host_info *hi = tsr_topology_host(e->topo, dv->host);
                    snprintf(r->why, sizeof r->why,
                             "stage %zu (%zu blocks, %zu heads%s%s) on %.40s@%.40s needs %s, allows %s", s, n,
                             h, st->first ? ", embeddings" : "", st->last ? ", head" : "", di->id,
                             hi ? hi->hostname : "?", a, b);
                }
            }
        }
    }
}

static int cmp_refusal(const void *a, const void *b) {
    const tsr_p3_refusal *x = a, *y = b;
    double rx = x->need / x->limit, ry = y->need / y->limit;
    return rx < ry ? -1 : rx > ry;
}

tsr_status tsr_plan3d_create(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                             const tsr_plan3d_options *o, tsr_plan3d **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_plan3d_create: NULL output");
    *out = NULL;
    tsr_p3 *e;
    TSR_TRY(tsr_p3_create(ctx, model, topo, o, &e));
    tsr_status st = TSR_OK;
    size_t K = e->o.runners_up + 1, nref = 0, capref = 8, ntodo = 0;
    tsr_p3_cost per_t[65], todo[64 + 65];
    for (int i = 0; i < 65; i++) per_t[i].step = INFINITY;
    p3_top top = {tsr_calloc(ctx, K, sizeof(tsr_p3_cost)), 0, K};
    tsr_p3_refusal *ref = tsr_calloc(ctx, capref, sizeof *ref);
    tsr_plan3d *p = tsr_calloc(ctx, 1, sizeof *p);
    p3_work w;
    memset(&w, 0, sizeof w);
    size_t layouts = 0, refused_total = 0;
    if (p) p->ctx = ctx; /* freed through the context's allocator on every path */
    if (!top.c || !ref || !p) {
        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan");
        goto done;
    }
    size_t maxhost = 0;
    for (int i = 0, j; i < e->ndev; i = j) {
        for (j = i; j < e->ndev && e->devs[j].host == e->devs[i].host;) j++;
        if ((size_t)(j - i) > maxhost) maxhost = (size_t)(j - i);
    }
    size_t tmax = maxhost < e->nh ? maxhost : e->nh;
    if (tmax > 64) tmax = 64; /* the split's per-member buffers */
    if (e->o.tensor > tmax) {
        st = tsr_error(ctx, TSR_ERR_PLAN,
                       "plan option tensor: %zu, but the largest host has %zu usable devices "
                       "(tensor groups stay on one host)",
                       e->o.tensor, maxhost);
        goto done;
    }
    for (size_t t = e->o.tensor ? e->o.tensor : 1; t <= (e->o.tensor ? e->o.tensor : tmax) && st == TSR_OK; t++) {
        size_t G = tsr_p3_groups(e, t);
        if (e->err) {
            st = tsr_error(ctx, e->err, "3D plan: groups");
            break;
        }
        if (!G) continue;
        if ((st = work_alloc(e, &w, G, t)) != TSR_OK) break;
        size_t pmax = G < e->L ? G : e->L;
        for (size_t pp = e->o.pipeline ? e->o.pipeline : 1; pp <= (e->o.pipeline ? e->o.pipeline : pmax); pp++) {
            if (pp > pmax) break;
            size_t dmax = G / pp < e->o.batch ? G / pp : e->o.batch;
            for (size_t d = e->o.data ? e->o.data : 1; d <= (e->o.data ? e->o.data : dmax); d++) {
                if (d > dmax) break;
                size_t ms[P3_MB_CHOICES];
                size_t nm = tsr_p3_microbatch_choices(e, d, ms, P3_MB_CHOICES);
                int solved = 0, feasible = 0, noff = e->o.offload ? 2 : 1;
                for (size_t k = 0; k < nm * (size_t)noff; k++) {
                    size_t mi = k / (size_t)noff;
                    int off = (int)(k % (size_t)noff);
                    layouts++;
                    layout_init(e, &w.l, d, pp, ms[mi], off);
                    if (!w.l.tab) {
                        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan: tables");
                        goto done;
                    }
                    /* lower bound: blocks spread over the stages at their unlimited speed */
                    double inv = 0;
                    size_t mbi = (size_t)e->mb_index[w.l.mb];
                    for (size_t s = 0; s < pp; s++) {
                        double beta = 0;
                        for (size_t r = 0; r < d; r++) {
                            p3_group *g = &e->groups[w.l.st[s].g0 + r];
                            if (isnan(g->uval[mbi])) {
                                size_t cap[64];
                                for (size_t i = 0; i < t; i++) cap[i] = e->nh;
                                g->uval[mbi] = split_heads(e, g, w.l.tab, cap, g->ushare + mbi * t);
                            }
                            double b = g->uval[mbi] + w.l.tp[w.l.st[s].g0 + r];
                            if (b > beta) beta = b;
                        }
                        inv += 1 / beta;
                    }
                    double lb = (double)(ms[mi] + pp - 1) * (double)e->L / inv;
                    /* skipped only when it can enter neither the best few nor beat the best
                     * of its tensor degree */
                    if (lb >= top_threshold(&top) && lb >= per_t[t].step) continue;
                    solved++;
                    double v = solve(e, &w.l, &w.sv, w.cut);
                    /* the hosts' memory is checked at the cut found, not searched over cuts */
                    if (!(v < INFINITY) || !host_memory_fits(e, &w.l, w.cut)) continue;
                    feasible = 1;
                    tsr_p3_cost c;
                    memset(&c, 0, sizeof c);
                    c.t = t, c.d = d, c.p = pp, c.m = ms[mi], c.mb = w.l.mb, c.step = v;
                    c.offload = off;
                    top_offer(&top, &c);
                    if (v < per_t[t].step) per_t[t] = c;
                }
                if (solved == (int)nm * noff && !feasible && nm) {
                    refused_total++;
                    if (nref == capref) {
                        tsr_p3_refusal *r2 = grow(ctx, ref, nref, 2 * capref, sizeof *r2);
                        if (!r2) {
                            st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan: refusals");
                            goto done;
                        }
                        ref = r2, capref *= 2;
                    }
                    /* the smallest micro-batches, the optimizer state offloaded if it may be */
                    layout_init(e, &w.l, d, pp, ms[nm - 1], noff - 1);
                    if (!w.l.tab) {
                        st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan: tables");
                        goto done;
                    }
                    refusal(e, &w, &ref[nref++]);
                }
            }
        }
        work_free(ctx, &w);
    }
    if (st != TSR_OK) goto done;
    qsort(ref, nref, sizeof *ref, cmp_refusal);
    if (top.n == 0) {
        if (nref) {
            char a[32], b[32];
            tsr_plan_format_bytes(a, sizeof a, ref[0].need);
            tsr_plan_format_bytes(b, sizeof b, ref[0].limit);
            st = tsr_error(ctx, TSR_ERR_PLAN,
                           "the model does not fit anywhere: of %zu layouts none fits; the closest "
                           "(tensor %zu x pipeline %zu x data %zu, %zu micro-batches) needs %s on one "
                           "device where %.2f of its memory allows %s: %s",
                           layouts, ref[0].t, ref[0].p, ref[0].d, ref[0].m, a, e->o.memory_fraction, b,
                           ref[0].why);
        } else {
            /* only fixed degrees leave nothing to try: name the bound they break */
            size_t t1 = e->o.tensor ? e->o.tensor : 1, d1 = e->o.data ? e->o.data : 1;
            size_t p1 = e->o.pipeline ? e->o.pipeline : 1, G = tsr_p3_groups(e, t1);
            size_t rb = (e->o.batch + d1 - 1) / d1;
            if (e->o.microbatches > rb)
                st = tsr_error(ctx, TSR_ERR_PLAN,
                               "plan option microbatches: %zu, more than the %zu sequences of a copy's "
                               "batch (%zu over %zu copies)",
                               e->o.microbatches, rb, e->o.batch, d1);
            else
                st = tsr_error(ctx, TSR_ERR_PLAN,
                               "no layout: pipeline %zu x data %zu needs %zu tensor groups of %zu "
                               "devices of one host; the %d usable devices form %zu",
                               p1, d1, p1 * d1, t1, e->ndev, G);
        }
        goto done;
    }
    /* the plan: its cut and heads again, then every figure by evaluate() */
    {
        tsr_p3_cost b = top.c[0];
        p->ctx = ctx;
        p->opt = e->o;
        p->blocks_total = e->L;
        p->heads_total = e->nh;
        p->work = e->work;
        p->layouts = layouts;
        p->ndevices = b.d * b.p * b.t;
        p->blocks = tsr_calloc(ctx, b.p, sizeof *p->blocks);
        p->stage_s = tsr_calloc(ctx, b.p, sizeof *p->stage_s);
        p->devices = tsr_calloc(ctx, p->ndevices, sizeof *p->devices);
        p->dev_id = tsr_calloc(ctx, p->ndevices, sizeof *p->dev_id);
        p->host_name = tsr_calloc(ctx, p->ndevices, sizeof *p->host_name);
        p->runners = tsr_calloc(ctx, K, sizeof *p->runners);
        p->per_tensor = tsr_calloc(ctx, 65, sizeof *p->per_tensor);
        if (!p->blocks || !p->stage_s || !p->devices || !p->dev_id ||
            !p->host_name || !p->runners || !p->per_tensor) {
            st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan: result");
            goto done;
        }
        for (size_t k = 0; k < top.n; k++) todo[ntodo++] = top.c[k];
        for (size_t t = 1; t < 65; t++) /* the best of each other tensor degree */
            if (t != b.t && per_t[t].step < INFINITY) todo[ntodo++] = per_t[t];
        for (size_t k = 0; k < ntodo; k++) {
            tsr_p3_cost c = todo[k];
            size_t G = tsr_p3_groups(e, c.t);
            if (!G) {
                st = tsr_error(ctx, e->err ? e->err : TSR_ERR_INTERNAL, "3D plan: groups");
                goto done;
            }
            work_free(ctx, &w);
            if ((st = work_alloc(e, &w, G, c.t)) != TSR_OK) goto done;
            layout_init(e, &w.l, c.d, c.p, c.m, c.offload);
            if (!w.l.tab) {
                st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan: tables");
                goto done;
            }
            solve(e, &w.l, &w.sv, w.cut);
            cut_heads(e, &w.l, w.cut, w.heads);
            p3_detail det = {{0}, k == 0 ? p->stage_s : NULL, k == 0 ? p->devices : NULL};
            if (k) { /* figures only */
                det.stage_s = tsr_calloc(ctx, c.p, sizeof *det.stage_s);
                det.dev = tsr_calloc(ctx, c.d * c.p * c.t, sizeof *det.dev);
                if (!det.stage_s || !det.dev) {
                    tsr_free(ctx, det.stage_s);
                    tsr_free(ctx, det.dev);
                    st = tsr_error(ctx, TSR_ERR_NO_MEMORY, "3D plan: runners-up");
                    goto done;
                }
            }
            double v = evaluate(e, &w.l, w.cut, w.heads, &det);
            if (k) {
                tsr_free(ctx, det.stage_s);
                tsr_free(ctx, det.dev);
            }
            if (!(v < INFINITY) || fabs(v - c.step) > 1e-9 * c.step) {
                st = tsr_error(ctx, TSR_ERR_INTERNAL,
                               "3D plan: the layout re-evaluates to %g s, the search said %g s", v,
                               c.step);
                goto done;
            }
            if (k == 0) {
                p->best = det.cost;
                memcpy(p->blocks, w.cut, c.p * sizeof *p->blocks);
            } else if (k < top.n) {
                p->runners[p->nrunners++] = det.cost;
            } else {
                p->per_tensor[p->nper_tensor++] = det.cost;
            }
        }
        for (size_t i = 0; i < p->ndevices; i++) {
            const tsr_device_info *di = tsr_topology_device(topo, p->devices[i].dev);
            const tsr_host_info *hi = tsr_topology_host(topo, p->devices[i].host);
            tsr_strlcpy(p->dev_id[i], di->id, sizeof p->dev_id[i]);
            if (hi && hi->hostname[0])
                tsr_strlcpy(p->host_name[i], hi->hostname, sizeof p->host_name[i]);
            else
                snprintf(p->host_name[i], sizeof p->host_name[i], "host%d", p->devices[i].host);
        }
        tsr_gpt_config g = e->g;
        snprintf(p->title, sizeof p->title,
                 "GPT of %zu blocks, %zu heads, %zu channels, %zu tokens, vocabulary %zu",
                 g.layers, g.heads, g.channels, (size_t)e->T, g.vocab);
        p->refused = ref;
        p->nrefused = nref;
        p->refused_total = refused_total;
        ref = NULL;
        *out = p;
        p = NULL;
    }
done:
    work_free(ctx, &w);
    tsr_free(ctx, top.c);
    tsr_free(ctx, ref);
    tsr_plan3d_free(p);
    tsr_p3_free(e);
    return st;
}

void tsr_plan3d_free(tsr_plan3d *p) {
    if (!p) return;
    tsr_context *ctx = p->ctx;
    tsr_free(ctx, p->blocks);
    tsr_free(ctx, p->stage_s);
    tsr_free(ctx, p->devices);
    tsr_free(ctx, p->dev_id);
    tsr_free(ctx, p->host_name);
    tsr_free(ctx, p->runners);
    tsr_free(ctx, p->per_tensor);
    tsr_free(ctx, p->refused);
    tsr_free(ctx, p);
}

size_t tsr_plan3d_tensor(const tsr_plan3d *p) { return p ? p->best.t : 0; }
size_t tsr_plan3d_pipeline(const tsr_plan3d *p) { return p ? p->best.p : 0; }
size_t tsr_plan3d_data(const tsr_plan3d *p) { return p ? p->best.d : 0; }
size_t tsr_plan3d_microbatches(const tsr_plan3d *p) { return p ? p->best.m : 0; }
double tsr_plan3d_step_seconds(const tsr_plan3d *p) { return p ? p->best.step : 0; }
double tsr_plan3d_work(const tsr_plan3d *p) { return p ? p->work : 0; }
size_t tsr_plan3d_stage_blocks(const tsr_plan3d *p, size_t s) {
    return p && s < p->best.p ? p->blocks[s] : 0;
}
size_t tsr_plan3d_heads(const tsr_plan3d *p, size_t r, size_t s, size_t i) {
    if (!p || r >= p->best.d || s >= p->best.p || i >= p->best.t) return 0;
    return p->devices[(r * p->best.p + s) * p->best.t + i].heads;
}
