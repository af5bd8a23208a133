/* Data-parallel gradient aggregation (see dp.h). Gradients lie in reverse layer order, so the
 * bytes that are final after each layer's backward extend a prefix: buckets are contiguous
 * ranges [start, end) closed once they hold at least fusion_bytes (or at the end). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/comm/comm_internal.h"
#include "lib/train/dp.h"

typedef struct dp_bucket {
    size_t off, count;        /* floats */
    tsr_comm_request *req;
    double t0, t_done;        /* timeline: start, first seen complete */
} dp_bucket;

typedef struct dp_pair {
    uint32_t idx;             /* position in the whole gradient */
    float val;
} dp_pair;

struct tsr_dp {
    tsr_context *ctx;
    tsr_comm *comm;
    tsr_stage *stage;
    tsr_buf *grads;
    size_t nparams, fusion;   /* floats */
    tsr_compress_kind compress;
    double topk_ratio;
    tsr_allreduce_opts ao;
    float *reg;               /* gradients as the allreduce sees them: registered memory */
    int staged;               /* reg is a copy (device memory): read before, write after */
    tsr_buf *own_grads;       /* host backend: the stage's own gradient buffer while a buffer
                                 over registered memory stands in for it (back at free) */
    dp_bucket *b;
    size_t nb, cap;
    size_t ready, pending;    /* floats final so far; start of the open bucket */
    int armed;
    double weight, total;     /* this rank's samples, all ranks' samples */
    float *residual, *scratch;  /* top-k error feedback; selection scratch */
    uint32_t *idx;
    dp_pair *send, *recv;
    size_t pairs_cap;
    tsr_timeline *tl;
    /* ZeRO-1: the gradients are reduce-scattered, this rank updates parameters [lo, hi) with
     * optimizer state for that slice only, and the parameters are allgathered. */
    int shard;
    size_t lo, hi;
    tsr_buf *params;
    float *preg;              /* parameters as the allgather sees them (registered) */
    int pstaged;              /* preg is a copy of device memory */
    tsr_buf *own_params;      /* host backend: the stage's own parameter buffer (as own_grads) */
};

static tsr_status start_bucket(tsr_dp *dp, size_t end) {
    if (dp->nb == dp->cap)
        return tsr_error(dp->ctx, TSR_ERR_INTERNAL, "data parallel: more than %zu buckets", dp->cap);
    dp_bucket *b = &dp->b[dp->nb++];
    memset(b, 0, sizeof *b);
    b->off = dp->pending;
    b->count = end - dp->pending;
    dp->pending = end;
    b->t0 = tsr_timeline_now(dp->tl);
    if (dp->compress == TSR_COMPRESS_TOPK) return TSR_OK; /* selected and gathered at the end */
    if (dp->staged) TSR_TRY(tsr_read_f32(dp->grads, b->off, dp->reg + b->off, b->count));
    return tsr_comm_allreduce_start(dp->comm, dp->reg + b->off, b->count, &dp->ao, &b->req);
}

/* Lets the communicator progress the buckets in flight and notes their completion time. */
static tsr_status poke(tsr_dp *dp) {
    for (size_t i = 0; i < dp->nb; i++) {
        dp_bucket *b = &dp->b[i];
        if (!b->req || b->t_done > 0) continue;
        int done = 0;
        TSR_TRY(tsr_comm_test(b->req, &done));
        if (done) b->t_done = tsr_timeline_now(dp->tl) + 1e-3;
        else break; /* requests complete in order */
    }
    return TSR_OK;
}

tsr_status tsr_dp_hook(void *user, size_t layer, size_t first, size_t count) {
    tsr_dp *dp = user;
    (void)layer;
    if (!dp->armed || (dp->shard && dp->compress != TSR_COMPRESS_TOPK)) return TSR_OK;
    if (count) {
        if (first != dp->ready)
            return tsr_error(dp->ctx, TSR_ERR_INTERNAL,
                             "data parallel: gradient range at float %zu, expected %zu", first,
                             dp->ready);
        dp->ready += count;
        if (dp->ready - dp->pending >= dp->fusion) TSR_TRY(start_bucket(dp, dp->ready));
    }
    return poke(dp); /* layers without parameters too: progress between every layer */
}

/* Registered (node shared) memory for the stage's buffer `which`, so that shm reduces or
 * gathers it in place; collective: every rank allocates once, whatever its device. Where the
 * backend computes on host memory a buffer over it takes the place of the stage's own (kept in
 * *own): backward writes there and nothing is copied. Other devices stage through it. */
static tsr_status registered(tsr_dp *dp, tsr_stage_buffer which, float **mem, tsr_buf **own,
                             int *staged) {
    tsr_buf *cur =
        which == TSR_STAGE_GRADS ? tsr_stage_grads(dp->stage) : tsr_stage_params(dp->stage);
    void *p = NULL;
    TSR_TRY(tsr_comm_alloc(dp->comm, cur->bytes, &p));
    *mem = p;
    if (!tsr_backend_wraps_host(cur->backend)) {
        *staged = 1;
        return TSR_OK;
    }
    tsr_buf *reg;
    TSR_TRY(tsr_buf_wrap(cur->backend, p, cur->bytes, &reg));
    tsr_status s = tsr_stage_exchange_buffer(dp->stage, which, reg, own);
    if (s != TSR_OK) tsr_buf_free(reg);
    return s;
}

/* The stage gets its own buffer back with the data (the trainer may still read the
 * parameters), then the registered memory goes: collective, so not after a lost peer (it
 * would wait forever). */
static void unregister(tsr_dp *dp, tsr_stage_buffer which, float *mem, tsr_buf *own) {
    tsr_buf *reg = NULL;
    if (own && tsr_stage_exchange_buffer(dp->stage, which, own, &reg) == TSR_OK) tsr_buf_free(reg);
    if (mem && !dp->comm->broken) tsr_comm_free_mem(dp->comm, mem);
}

void tsr_dp_free(tsr_dp *dp) {
    if (!dp) return;
    tsr_context *ctx = dp->ctx;
    for (size_t i = 0; i < dp->nb; i++) tsr_comm_wait(dp->b[i].req);
    /* in the reverse order of allocation */
    unregister(dp, TSR_STAGE_PARAMS, dp->preg, dp->own_params);
    unregister(dp, TSR_STAGE_GRADS, dp->reg, dp->own_grads);
    tsr_free(ctx, dp->b);
    tsr_free(ctx, dp->residual);
    tsr_free(ctx, dp->scratch);
    tsr_free(ctx, dp->idx);
    if (!dp->comm->broken) { /* an abandoned top-k allgather may still write them (comm.h) */
        tsr_free(ctx, dp->send);
        tsr_free(ctx, dp->recv);
    }
    tsr_free(ctx, dp);
}

tsr_status tsr_dp_create(tsr_context *ctx, const tsr_model *model, tsr_stage *stage, const tsr_trainer_options *o,
                         tsr_timeline *tl, tsr_dp **out) {
    *out = NULL;
    tsr_dp *dp = tsr_calloc(ctx, 1, sizeof *dp);
    if (!dp) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "data parallel state");
    dp->ctx = ctx;
    dp->comm = o->comm;
    dp->stage = stage;
    dp->tl = tl;
    dp->nparams = tsr_stage_param_count(stage);
    size_t fb = o->fusion_bytes ? o->fusion_bytes : (size_t)4 << 20;
    dp->fusion = fb / sizeof(float) ? fb / sizeof(float) : 1;
    dp->compress = o->compress;
    dp->topk_ratio = o->topk_ratio > 0 ? o->topk_ratio : 0.01;
    dp->shard = o->shard_optimizer > 0;
    dp->lo = 0;
    dp->hi = dp->nparams;
    if (dp->shard) tsr_comm_slice(dp->comm, dp->nparams, tsr_comm_rank(dp->comm), &dp->lo, &dp->hi);
    tsr_allreduce_opts_init(&dp->ao);
    dp->ao.algo = o->algo;
    dp->ao.wire = dp->compress == TSR_COMPRESS_FP16 ? TSR_WIRE_F16 : TSR_WIRE_F32;
    dp->ao.mode = TSR_REDUCE_WEIGHTED;
    /* every bucket ends at a layer boundary: at most one per layer, plus the closing one */
    dp->cap = tsr_model_layer_count(model) + 2;
    dp->b = tsr_calloc(ctx, dp->cap, sizeof *dp->b);
    tsr_status s = dp->b ? TSR_OK : tsr_error(ctx, TSR_ERR_NO_MEMORY, "buckets");
    /* gradients in registered memory; with ZeRO-1 the parameters too, so that the allgather
     * writes them in place */
    if (s == TSR_OK) s = registered(dp, TSR_STAGE_GRADS, &dp->reg, &dp->own_grads, &dp->staged);
    if (s == TSR_OK && dp->shard)
        s = registered(dp, TSR_STAGE_PARAMS, &dp->preg, &dp->own_params, &dp->pstaged);
    dp->grads = tsr_stage_grads(stage);
    dp->params = tsr_stage_params(stage);
    if (s == TSR_OK && dp->compress == TSR_COMPRESS_TOPK) {
        size_t n = dp->nparams ? dp->nparams : 1;
        dp->residual = tsr_calloc(ctx, n, sizeof *dp->residual);
        dp->scratch = tsr_calloc(ctx, n, sizeof *dp->scratch);
        dp->idx = tsr_calloc(ctx, n, sizeof *dp->idx);
        if (!dp->residual || !dp->scratch || !dp->idx)
            s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "top-k state for %zu parameters", n);
        if (dp->nparams > UINT32_MAX)
            s = tsr_error(ctx, TSR_ERR_UNSUPPORTED, "top-k: %zu parameters exceed 32-bit indices",
                          dp->nparams);
    }
    if (s != TSR_OK) {
        tsr_dp_free(dp);
        return s;
    }
    *out = dp;
    return TSR_OK;
}

tsr_status tsr_dp_begin(tsr_dp *dp, size_t n, float local_loss, float *global_loss, int *stop) {
    /* a step that failed half way may have left buckets in flight */
    for (size_t i = 0; i < dp->nb; i++) {
        tsr_comm_wait(dp->b[i].req);
        dp->b[i].req = NULL;
    }
    /* the stop request rides along: the same message, one more float */
    float v[3] = {local_loss * (float)n, (float)n, stop && *stop ? 1.0f : 0.0f};
    if (!n) v[0] = 0.0f;
    tsr_allreduce_opts ao;
    tsr_allreduce_opts_init(&ao);
    TSR_TRY(tsr_comm_allreduce(dp->comm, v, 3, &ao));
    if (stop) *stop = v[2] > 0.0f;
    if (!(v[1] > 0.0f))
        return tsr_error(dp->ctx, TSR_ERR_INVALID_ARG, "data parallel step: no rank has a sample");
    dp->weight = (double)n;
    dp->total = (double)v[1];
    /* weights as fractions of the global batch (sum 1): a rank holding every sample scales its
     * gradient by exactly 1 */
    dp->ao.weight = dp->weight / dp->total;
    dp->ao.total_weight = 1.0;
    if (global_loss) *global_loss = v[0] / v[1];
    dp->nb = dp->ready = dp->pending = 0;
    dp->armed = 1;
    return TSR_OK;
}

static int cmp_pair(const void *a, const void *b) {
    uint32_t x = ((const dp_pair *)a)->idx, y = ((const dp_pair *)b)->idx;
    return x < y ? -1 : x > y;
}

/* Top-k with error feedback: v = residual + (n/N) g; the k largest |v| of each bucket go out,
 * the rest stays in the residual; every rank sums all ranks' pairs in the same order. */
static tsr_status topk_exchange(tsr_dp *dp) {
    tsr_context *ctx = dp->ctx;
    if (dp->staged) TSR_TRY(tsr_read_f32(dp->grads, 0, dp->reg, dp->nparams));
    float w = (float)(dp->weight / dp->total);
    size_t total_k = 0;
    for (size_t i = 0; i < dp->nb; i++) {
        size_t k = (size_t)((double)dp->b[i].count * dp->topk_ratio + 0.5);
        total_k += k ? k : (dp->b[i].count ? 1 : 0);
    }
    int size = tsr_comm_size(dp->comm);
    if (total_k > dp->pairs_cap) {
        tsr_free(ctx, dp->send);
        tsr_free(ctx, dp->recv);
        dp->send = tsr_calloc(ctx, total_k, sizeof *dp->send);
        dp->recv = tsr_calloc(ctx, total_k * (size_t)size, sizeof *dp->recv);
        dp->pairs_cap = dp->send && dp->recv ? total_k : 0;
        if (!dp->pairs_cap) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "top-k pairs");
    }
    size_t m = 0;
    for (size_t i = 0; i < dp->nb; i++) {
        const dp_bucket *b = &dp->b[i];
        float *v = dp->residual + b->off;
        const float *g = dp->reg + b->off;
        for (size_t j = 0; j < b->count; j++) v[j] += w * g[j];
        size_t k = (size_t)((double)b->count * dp->topk_ratio + 0.5);
        if (!k && b->count) k = 1;
        tsr_topk_select(v, b->count, k, dp->idx, dp->scratch);
        for (size_t j = 0; j < k; j++) {
            dp->send[m].idx = (uint32_t)(b->off + dp->idx[j]);
            dp->send[m].val = v[dp->idx[j]];
            v[dp->idx[j]] = 0.0f;
            m++;
        }
    }
    /* sorted indices: the sum below adds in the same order on every rank */
    qsort(dp->send, m, sizeof *dp->send, cmp_pair);
    size_t *bytes = tsr_malloc(ctx, (size_t)size * sizeof *bytes);
    if (!bytes) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "top-k counts");
    for (int r = 0; r < size; r++) bytes[r] = m * sizeof(dp_pair);
    double t0 = tsr_timeline_now(dp->tl);
    tsr_status s = tsr_comm_allgatherv(dp->comm, dp->send, dp->recv, bytes);
    tsr_free(ctx, bytes);
    TSR_TRY(s);
    TSR_TRY(tsr_timeline_event(dp->tl, "topk allgather", TSR_TRACK_COMM, t0, tsr_timeline_now(dp->tl)));
    memset(dp->reg, 0, dp->nparams * sizeof *dp->reg);
    for (size_t j = 0; j < m * (size_t)size; j++) dp->reg[dp->recv[j].idx] += dp->recv[j].val;
    if (dp->staged) TSR_TRY(tsr_write_f32(dp->grads, 0, dp->reg, dp->nparams));
    return TSR_OK;
}

tsr_status tsr_dp_finish(tsr_dp *dp) {
    dp->armed = 0;
    if (dp->shard && dp->compress != TSR_COMPRESS_TOPK) {
        /* ZeRO-1: one reduce-scatter of the whole buffer; this rank's slice is final */
        double t0 = tsr_timeline_now(dp->tl);
        if (dp->staged) TSR_TRY(tsr_read_f32(dp->grads, 0, dp->reg, dp->nparams));
        TSR_TRY(tsr_comm_reduce_scatter(dp->comm, dp->reg, dp->nparams, &dp->ao));
        if (dp->staged)
            TSR_TRY(tsr_write_f32(dp->grads, dp->lo, dp->reg + dp->lo, dp->hi - dp->lo));
        return tsr_timeline_event(dp->tl, "reduce-scatter", TSR_TRACK_COMM, t0,
                                  tsr_timeline_now(dp->tl));
    }
    if (dp->pending < dp->nparams || !dp->nb) TSR_TRY(start_bucket(dp, dp->nparams));
    if (dp->compress == TSR_COMPRESS_TOPK) return topk_exchange(dp);
    tsr_status s = TSR_OK;
    char name[48];
    for (size_t i = 0; i < dp->nb; i++) {
        dp_bucket *b = &dp->b[i];
        double w0 = tsr_timeline_now(dp->tl);
        tsr_status w = tsr_comm_wait(b->req);
        b->req = NULL;
        double w1 = tsr_timeline_now(dp->tl);
        if (s == TSR_OK) s = w;
        if (b->t_done <= 0) b->t_done = w1;
        snprintf(name, sizeof name, "allreduce b%u", (unsigned)(i % 1000));
        if (s == TSR_OK) s = tsr_timeline_event(dp->tl, name, TSR_TRACK_COMM, b->t0, b->t_done);
        snprintf(name, sizeof name, "wait b%u", (unsigned)(i % 1000));
        if (s == TSR_OK) s = tsr_timeline_event(dp->tl, name, TSR_TRACK_COMPUTE, w0, w1);
        if (s == TSR_OK && dp->staged)
            s = tsr_write_f32(dp->grads, b->off, dp->reg + b->off, b->count);
    }
    return s;
}

size_t tsr_dp_buckets(const tsr_dp *dp) { return dp ? dp->nb : 0; }

int tsr_dp_sharded(const tsr_dp *dp) { return dp && dp->shard; }

void tsr_dp_owned(const tsr_dp *dp, size_t *lo, size_t *hi) {
    *lo = dp->lo;
    *hi = dp->hi;
}

tsr_status tsr_dp_first_bad(tsr_dp *dp, size_t local, size_t *global) {
    int size = tsr_comm_size(dp->comm);
    uint64_t mine = local, *all = tsr_calloc(dp->ctx, (size_t)size, sizeof *all);
    size_t *bytes = tsr_calloc(dp->ctx, (size_t)size, sizeof *bytes);
    tsr_status s = all && bytes ? TSR_OK : tsr_error(dp->ctx, TSR_ERR_NO_MEMORY, "%d ranks", size);
    for (int r = 0; s == TSR_OK && r < size; r++) bytes[r] = sizeof mine;
    if (s == TSR_OK) s = tsr_comm_allgatherv(dp->comm, &mine, all, bytes);
    *global = dp->nparams;
    for (int r = 0; s == TSR_OK && r < size; r++)
        if (all[r] < *global) *global = (size_t)all[r];
    tsr_free(dp->ctx, all);
    tsr_free(dp->ctx, bytes);
    return s;
}

tsr_status tsr_dp_gather_params(tsr_dp *dp) {
    double t0 = tsr_timeline_now(dp->tl);
    size_t lo = dp->lo, n = dp->hi - dp->lo;
    if (dp->pstaged) TSR_TRY(tsr_read_f32(dp->params, lo, dp->preg + lo, n));
    TSR_TRY(tsr_comm_allgather(dp->comm, dp->preg, dp->nparams, dp->ao.algo));
    if (dp->pstaged) TSR_TRY(tsr_write_f32(dp->params, 0, dp->preg, dp->nparams));
    return tsr_timeline_event(dp->tl, "allgather", TSR_TRACK_COMM, t0, tsr_timeline_now(dp->tl));
}

tsr_status tsr_dp_gather_slices(tsr_dp *dp, float *full) {
    return tsr_comm_allgather(dp->comm, full, dp->nparams, dp->ao.algo);
}
