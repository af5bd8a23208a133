/* Communicators and collectives: the part common to every build (self communicator, option
 * checks, algorithm choice, request queue). The MPI side lives in the *_mpi.c files. */
#include <math.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "lib/comm/comm_internal.h"
#include "lib/comm/tune.h"

/* Largest element count accepted: 2^40, or half the address space where size_t is 32 bits
 * (a plain (size_t)1 << 40 overflows there). */
#define COMM_MAX_COUNT ((size_t)((uint64_t)SIZE_MAX >> 1 < (uint64_t)1 << 40 ? \
                                 (uint64_t)SIZE_MAX >> 1 : (uint64_t)1 << 40))

static const char *const algo_names[] = {"auto", "mpi", "ring", "rhd", "shm"};

void tsr_allreduce_opts_init(tsr_allreduce_opts *opts) {
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->algo = TSR_ALLREDUCE_AUTO;
    opts->wire = TSR_WIRE_F32;
    opts->mode = TSR_REDUCE_SUM;
    opts->weight = 1.0;
    opts->total_weight = 0.0;
}

const char *tsr_allreduce_algo_name(tsr_allreduce_algo algo) {
    if ((int)algo < 0 || (size_t)algo >= TSR_ARRAY_SIZE(algo_names)) return "?";
    return algo_names[algo];
}

tsr_status tsr_allreduce_algo_parse(const char *text, tsr_allreduce_algo *out) {
    if (!text || !out) return TSR_ERR_INVALID_ARG;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(algo_names); i++) {
        if (strcmp(text, algo_names[i]) == 0) {
            *out = (tsr_allreduce_algo)i;
            return TSR_OK;
        }
    }
    return TSR_ERR_PARSE;
}

void tsr_comm_options_init(tsr_comm_options *opts) {
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->algo = TSR_ALLREDUCE_AUTO;
    opts->segment_bytes = 256u << 10;
    opts->shm_bytes = 16u << 20;
    /* Long enough for the largest allreduce on a slow link, short enough that a dead peer
     * costs minutes, not a lost night of training. */
    opts->timeout_s = 300;
}

void tsr_comm_apply_options(tsr_comm *c) {
    tsr_comm_options defaults;
    tsr_comm_options_init(&defaults);
    const tsr_comm_options *o = c->ctx ? &c->ctx->opts.comm : &defaults; /* checked at creation */
    c->forced_algo = o->algo;
    c->segment_bytes = o->segment_bytes;
    c->shm_bytes = o->shm_bytes;
    c->timeout_s = o->timeout_s;
}

double tsr_comm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void tsr_comm_pause(const tsr_comm *comm, unsigned spins, double *since) {
    if (spins < 64) return;
    if (!comm->oversubscribed && *since >= 0) { /* still spinning (*since < 0: yielding) */
        if (spins & 63) return; /* the clock every 64 polls */
        double now = tsr_comm_now();
        if (*since == 0) *since = now;
        if (now - *since < TSR_COMM_SPIN_S) return;
        *since = -1;
    }
    sched_yield();
}

void tsr_comm_mark_broken(tsr_comm *c) {
    if (!c) return;
    c->broken = 1;
#if TSR_WITH_MPI
    tsr_comm_mark_broken(c->node);
    tsr_comm_mark_broken(c->cross);
#endif
}

/* Rank `rank` of c as MPI_COMM_WORLD numbers it (what mpiexec, its logs and the user see); the
 * same number for a communicator without MPI. Group calls are local: safe after a failure. */
int tsr_comm_world_rank(const tsr_comm *c, int rank) {
#if TSR_WITH_MPI
    if (c && c->is_mpi) {
        MPI_Group g, w;
        int out = MPI_UNDEFINED;
        if (MPI_Comm_group(c->mc, &g) != MPI_SUCCESS) return rank;
        if (MPI_Comm_group(MPI_COMM_WORLD, &w) == MPI_SUCCESS) {
            MPI_Group_translate_ranks(g, 1, &rank, w, &out);
            MPI_Group_free(&w);
        }
        MPI_Group_free(&g);
        return out == MPI_UNDEFINED ? rank : out;
    }
#endif
    (void)c;
    return rank;
}

/* Messages name world ranks; a sub-communicator's (tensor, pipeline or replica group) own
 * numbers follow in the group's words. */
tsr_status tsr_comm_peer_lost(tsr_comm *comm, const char *what) {
    tsr_comm_mark_broken(comm);
    int me = tsr_comm_world_rank(comm, comm->rank);
    char group[64] = "";
    if (me != comm->rank || (comm->size == 2 && tsr_comm_world_rank(comm, 1 - comm->rank) != 1 - comm->rank))
        snprintf(group, sizeof group, ", rank %d of a %d-rank group", comm->rank, comm->size);
    if (comm->size == 2)
        return tsr_error(comm->ctx, TSR_ERR_PEER_LOST,
                         "rank %d lost: no progress for %g s in %s (rank %d waiting%s; "
                         "TSR_COMM_TIMEOUT)", tsr_comm_world_rank(comm, 1 - comm->rank), comm->timeout_s,
                         what, me, group);
    return tsr_error(comm->ctx, TSR_ERR_PEER_LOST,
                     "a peer rank lost: no progress for %g s in %s (rank %d waiting%s; "
                     "TSR_COMM_TIMEOUT)", comm->timeout_s, what, me,
                     group[0] ? group : "");
}

tsr_status tsr_comm_peer_failed(tsr_comm *comm, const char *what, const char *mpi_says) {
    tsr_comm_mark_broken(comm);
    return tsr_error(comm->ctx, TSR_ERR_PEER_LOST, "a peer rank lost: MPI reports a failed process in %s "
                     "(rank %d waiting): %s", what, tsr_comm_world_rank(comm, comm->rank), mpi_says);
}

tsr_status tsr_comm_self_create(tsr_context *ctx, tsr_comm **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_comm_self_create: out is NULL");
    *out = NULL;
    tsr_comm *c = tsr_calloc(ctx, 1, sizeof *c);
    if (!c) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_comm_self_create: no memory");
    c->ctx = ctx;
    c->rank = 0;
    c->size = 1;
    c->local_rank = 0;
    c->local_size = 1;
    c->nodes = 1;
    c->uniform = 1;
    tsr_comm_apply_options(c);
    *out = c;
    return TSR_OK;
}

tsr_status tsr_comm_init_world(tsr_context *ctx, int *argc, char ***argv, tsr_comm **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_comm_init_world: out is NULL");
    *out = NULL;
#if TSR_WITH_MPI
    int inited = 0, finalized = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&finalized);
    if (finalized)
        return tsr_error(ctx, TSR_ERR_STATE, "tsr_comm_init_world: MPI is already finalized");
    int we_init = 0;
    if (!inited) {
        int provided = 0;
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(ctx, rc, "MPI_Init_thread");
        we_init = 1;
        /* MPI is ours: an error MPI cannot pin on one of our communicators (a request a
         * failed peer invalidated) is returned to us, not fatal on MPI_COMM_WORLD (the default
         * handler aborted a survivor of tests/fault/gossip-train-kill.sh inside MPI_Test) */
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    }
    tsr_status s = tsr_comm_wrap_mpi(ctx, MPI_COMM_WORLD, we_init, 1, out);
    if (s != TSR_OK) {
        if (we_init) MPI_Finalize();
        return s;
    }
    tsr_context_set_rank(ctx, (*out)->rank);
    return TSR_OK;
#else
    (void)argc;
    (void)argv;
    TSR_TRY(tsr_comm_self_create(ctx, out));
    tsr_context_set_rank(ctx, 0);
    return TSR_OK;
#endif
}

tsr_status tsr_comm_split(tsr_comm *comm, int color, int key, tsr_comm **out) {
    if (!comm || !out) return TSR_ERR_INVALID_ARG;
    *out = NULL;
    if (color < 0)
        return tsr_error(comm->ctx, TSR_ERR_INVALID_ARG, "tsr_comm_split: color %d is negative",
                         color);
#if TSR_WITH_MPI
    if (comm->is_mpi) {
        MPI_Comm nc;
        int rc = MPI_Comm_split(comm->mc, color, key, &nc);
        if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(comm->ctx, rc, "MPI_Comm_split");
        tsr_status s = tsr_comm_wrap_mpi(comm->ctx, nc, 0, 1, out);
        MPI_Comm_free(&nc);
        return s;
    }
#else
    (void)key;
#endif
    return tsr_comm_self_create(comm->ctx, out);
}

tsr_status tsr_comm_split_node(tsr_comm *comm, tsr_comm **out) {
    if (!comm || !out) return TSR_ERR_INVALID_ARG;
    *out = NULL;
#if TSR_WITH_MPI
    if (comm->is_mpi) {
        MPI_Comm nc;
        int rc = MPI_Comm_split_type(comm->mc, MPI_COMM_TYPE_SHARED, comm->rank, MPI_INFO_NULL,
                                     &nc);
        if (rc != MPI_SUCCESS)
            return tsr_comm_mpi_error(comm->ctx, rc, "MPI_Comm_split_type(SHARED)");
        tsr_status s = tsr_comm_wrap_mpi(comm->ctx, nc, 0, 1, out);
        MPI_Comm_free(&nc);
        return s;
    }
#endif
    return tsr_comm_self_create(comm->ctx, out);
}

/* Self communicator's registered blocks: [link][pad to 64][data]. */
typedef struct self_block {
    struct self_block *next;
    void *data;
    size_t bytes;
} self_block;

void tsr_comm_free(tsr_comm *comm) {
    if (!comm) return;
    /* Requests never waited for are released with the communicator. */
    while (comm->active) {
        tsr_comm_request *r = comm->active;
        comm->active = r->next;
#if TSR_WITH_MPI
        tsr_comm_request_release(r);
#endif
        tsr_free(comm->ctx, r);
    }
    tsr_free(comm->ctx, comm->tune);
    comm->tune = NULL;
    self_block *b = comm->self_regions;
    while (b) {
        self_block *n = b->next;
        tsr_free(comm->ctx, b);
        b = n;
    }
#if TSR_WITH_MPI
    if (comm->is_mpi) {
        tsr_comm_free_mpi(comm);
        return;
    }
#endif
    tsr_free(comm->ctx, comm);
}

int tsr_comm_rank(const tsr_comm *comm) { return comm ? comm->rank : -1; }
int tsr_comm_size(const tsr_comm *comm) { return comm ? comm->size : 0; }
int tsr_comm_local_rank(const tsr_comm *comm) { return comm ? comm->local_rank : -1; }
int tsr_comm_local_size(const tsr_comm *comm) { return comm ? comm->local_size : 0; }
int tsr_comm_node_count(const tsr_comm *comm) { return comm ? comm->nodes : 0; }

tsr_status tsr_comm_barrier(tsr_comm *comm) {
    if (!comm) return TSR_ERR_INVALID_ARG;
#if TSR_WITH_MPI
    if (comm->is_mpi) {
        MPI_Request rq;
        int rc = MPI_Ibarrier(comm->mc, &rq);
        if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(comm->ctx, rc, "MPI_Ibarrier");
        return tsr_comm_mpi_poll(comm, &rq, "barrier");
    }
#endif
    return TSR_OK;
}

tsr_status tsr_comm_allgatherv(tsr_comm *comm, const void *send, void *recv, const size_t *bytes) {
    if (!comm || !bytes || (!send && bytes[comm->rank]))
        return tsr_error(comm ? comm->ctx : NULL, TSR_ERR_INVALID_ARG,
                         "tsr_comm_allgatherv: NULL %s", !comm ? "communicator" : !bytes ? "bytes" : "send");
    size_t total = 0;
    for (int r = 0; r < comm->size; r++) total += bytes[r];
    if (total && !recv)
        return tsr_error(comm->ctx, TSR_ERR_INVALID_ARG, "tsr_comm_allgatherv: NULL recv");
#if TSR_WITH_MPI
    if (comm->is_mpi) return tsr_comm_mpi_allgatherv(comm, send, recv, bytes);
#endif
    if (bytes[0]) memmove(recv, send, bytes[0]);
    return TSR_OK;
}

tsr_status tsr_comm_alloc(tsr_comm *comm, size_t bytes, void **out) {
    if (!comm || !out) return TSR_ERR_INVALID_ARG;
    *out = NULL;
#if TSR_WITH_MPI
    if (comm->is_mpi) return tsr_comm_shm_alloc(comm, bytes, out);
#endif
    size_t total;
    if (bytes > SIZE_MAX - 128 || tsr_mul_size(1, bytes + 128, &total))
        return tsr_error(comm->ctx, TSR_ERR_INVALID_ARG, "tsr_comm_alloc: %zu bytes is too large",
                         bytes);
    self_block *b = tsr_malloc(comm->ctx, total);
    if (!b) return tsr_error(comm->ctx, TSR_ERR_NO_MEMORY, "tsr_comm_alloc: %zu bytes", bytes);
    uintptr_t p = ((uintptr_t)(b + 1) + 63) & ~(uintptr_t)63;
    b->data = (void *)p;
    b->bytes = bytes;
    b->next = comm->self_regions;
    comm->self_regions = b;
    *out = b->data;
    return TSR_OK;
}

tsr_status tsr_comm_free_mem(tsr_comm *comm, void *ptr) {
    if (!comm) return TSR_ERR_INVALID_ARG;
#if TSR_WITH_MPI
    if (comm->is_mpi) return tsr_comm_shm_free_mem(comm, ptr);
#endif
    if (!ptr) return TSR_OK;
    for (self_block **pp = (self_block **)&comm->self_regions; *pp; pp = &(*pp)->next) {
        if ((*pp)->data == ptr) {
            self_block *b = *pp;
            *pp = b->next;
            tsr_free(comm->ctx, b);
            return TSR_OK;
        }
    }
    return tsr_error(comm->ctx, TSR_ERR_NOT_FOUND,
                     "tsr_comm_free_mem: %p was not allocated by tsr_comm_alloc", ptr);
}

int tsr_comm_is_registered(const tsr_comm *comm, const void *ptr, size_t bytes) {
    if (!comm || !ptr) return 0;
#if TSR_WITH_MPI
    if (comm->is_mpi) return tsr_comm_shm_is_registered(comm, ptr, bytes);
#endif
    for (const self_block *b = comm->self_regions; b; b = b->next) {
        uintptr_t lo = (uintptr_t)b->data, p = (uintptr_t)ptr;
        if (p >= lo && p - lo <= b->bytes && bytes <= b->bytes - (p - lo)) return 1;
    }
    return 0;
}

void tsr_comm_slice(const tsr_comm *comm, size_t count, int rank, size_t *lo, size_t *hi) {
    size_t n = comm && comm->size > 0 ? (size_t)comm->size : 1;
    size_t r = rank < 0 ? 0 : (size_t)rank;
    if (r >= n) r = n - 1;
    size_t units = (count + TSR_COMM_ALIGN - 1) / TSR_COMM_ALIGN, off, len;
    tsr_comm_split_range(units, n, r, &off, &len);
    size_t a = off * TSR_COMM_ALIGN, b = (off + len) * TSR_COMM_ALIGN;
    if (lo) *lo = a < count ? a : count;
    if (hi) *hi = b < count ? b : count;
}

/* Built-in rules, for sizes the tuning table does not cover (or no table). */
tsr_allreduce_algo tsr_comm_builtin_algo(const tsr_comm *comm, size_t count) {
    size_t bytes = count * sizeof(float);
    /* One node: shared memory beats the MPI stack at every size measured here (flags in
     * shared memory cost less than a message). Several nodes with the same rank count: the
     * hierarchical shm once a message is large enough for its two shared-memory passes to pay,
     * MPI's own tuned small-message algorithms below. Uneven nodes: the ring. */
    if (comm->nodes == 1) return TSR_ALLREDUCE_SHM;
    if (!comm->uniform) return bytes >= (256u << 10) ? TSR_ALLREDUCE_RING : TSR_ALLREDUCE_MPI;
    return bytes >= (64u << 10) ? TSR_ALLREDUCE_SHM : TSR_ALLREDUCE_MPI;
}

tsr_allreduce_choice tsr_comm_auto_choice(const tsr_comm *comm, size_t count, int registered) {
    tsr_allreduce_choice c;
    memset(&c, 0, sizeof c);
    if (!comm) return c;
    if (comm->forced_algo != TSR_ALLREDUCE_AUTO) {
        c.algo = comm->forced_algo;
    } else if (comm->size == 1) {
        c.algo = TSR_ALLREDUCE_RING; /* nothing moves: any algorithm is a copy */
    } else {
        size_t bytes = count > SIZE_MAX / sizeof(float) ? SIZE_MAX : count * sizeof(float);
        const tsr_tune_entry *e =
            comm->tune ? &comm->tune->e[registered ? 1 : 0][tsr_tune_bucket(bytes)] : NULL;
        if (e && e->valid) {
            c.algo = (tsr_allreduce_algo)e->algo;
            c.segment_bytes = (size_t)e->segment_bytes;
            c.lanes = e->lanes;
            c.tuned = 1;
            c.busbw_GBps = e->busbw;
            c.mpi_busbw_GBps = e->mpi_busbw;
        } else {
            c.algo = tsr_comm_builtin_algo(comm, count);
        }
    }
    return c;
}

tsr_allreduce_algo tsr_comm_choose_algo(const tsr_comm *comm, size_t count) {
    return comm ? tsr_comm_auto_choice(comm, count, 0).algo : TSR_ALLREDUCE_AUTO;
}

static tsr_status check_opts(tsr_comm *comm, const tsr_allreduce_opts *o, const char *fn) {
    tsr_context *ctx = comm->ctx;
    if ((int)o->algo < 0 || o->algo > TSR_ALLREDUCE_SHM)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: unknown algorithm %d", fn, (int)o->algo);
    if (o->wire != TSR_WIRE_F32 && o->wire != TSR_WIRE_F16)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: unknown wire type %d", fn, (int)o->wire);
    if ((int)o->mode < 0 || o->mode > TSR_REDUCE_WEIGHTED)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: unknown reduce mode %d", fn, (int)o->mode);
    if (o->segment_bytes && (o->segment_bytes < 4096 || o->segment_bytes > ((size_t)1 << 30)))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: segment_bytes %zu is outside 4096 .. "
                         "1073741824 (0: default)", fn, o->segment_bytes);
    if (o->lanes < 0 || o->lanes > TSR_COMM_MAX_LANES)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: lanes %d is outside 0 .. %d", fn,
                         o->lanes, TSR_COMM_MAX_LANES);
    if (o->mode == TSR_REDUCE_WEIGHTED) {
        if (!(o->weight >= 0.0) || !isfinite(o->weight))
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: weight %g must be finite and >= 0",
                             fn, o->weight);
        if (!(o->total_weight >= 0.0) || !isfinite(o->total_weight))
            return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                             "%s: total_weight %g must be finite and >= 0 (0: computed)", fn,
                             o->total_weight);
    }
    return TSR_OK;
}

static void queue_remove(tsr_comm *comm, tsr_comm_request *req) {
    for (tsr_comm_request **pp = &comm->active; *pp; pp = &(*pp)->next) {
        if (*pp == req) {
            *pp = req->next;
            req->next = NULL;
            comm->nactive--;
            return;
        }
    }
}

static tsr_status progress_one(tsr_comm_request *r) {
#if TSR_WITH_MPI
    switch (r->algo) {
    case TSR_ALLREDUCE_MPI: return tsr_comm_mpi_progress(r);
    case TSR_ALLREDUCE_SHM: return tsr_comm_shm_progress(r);
    default: return tsr_comm_lanes_progress(r);
    }
#else
    r->done = 1;
    return TSR_OK;
#endif
}

/* Advances every unfinished request of the communicator in start order. Shared-memory
 * requests use one control block per node, so only the oldest of them moves. */
static void comm_progress(tsr_comm *comm) {
    int shm_blocked = 0;
    tsr_comm_request *r = comm->active;
    while (r) {
        tsr_comm_request *next = r->next;
        if (!r->done && !(r->algo == TSR_ALLREDUCE_SHM && shm_blocked)) {
            tsr_status s = progress_one(r);
            if (s != TSR_OK) {
                r->status = s;
                r->done = 1;
            }
        }
        if (r->algo == TSR_ALLREDUCE_SHM && !r->done) shm_blocked = 1;
        if (r->done) queue_remove(comm, r);
        r = next;
    }
}

tsr_status tsr_comm_run(tsr_comm *comm, float *buf, size_t count, const tsr_allreduce_opts *opts,
                        int phases, float scale_override, tsr_comm_request **out) {
    static const char *const fns[] = {"", "tsr_comm_reduce_scatter", "tsr_comm_allgather",
                                      "tsr_comm_allreduce"};
    if (out) *out = NULL;
    if (!comm) return TSR_ERR_INVALID_ARG;
    const char *fn = fns[phases & 3];
    tsr_context *ctx = comm->ctx;
    if (!buf && count)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: buf is NULL with count %zu", fn, count);
    if (count > COMM_MAX_COUNT)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: count %zu is too large", fn, count);
    tsr_allreduce_opts o;
    tsr_allreduce_opts_init(&o);
    if (opts) o = *opts;
    TSR_TRY(check_opts(comm, &o, fn));
    if (comm->nactive >= TSR_COMM_MAX_ACTIVE)
        return tsr_error(ctx, TSR_ERR_STATE, "%s: %d requests already in flight; wait for some",
                         fn, comm->nactive);

    tsr_allreduce_algo algo = o.algo;
    size_t seg_bytes = o.segment_bytes;
    int max_lanes = o.lanes;
    if (algo == TSR_ALLREDUCE_AUTO) {
        /* the first auto allreduce looks for the tuning table (collective, like this call) */
        if (comm->forced_algo == TSR_ALLREDUCE_AUTO && comm->size > 1)
            TSR_TRY(tsr_tune_ensure(comm));
        tsr_allreduce_choice ch = tsr_comm_auto_choice(
            comm, count, tsr_comm_is_registered(comm, buf, count * sizeof(float)));
        algo = ch.algo;
        if (!seg_bytes) seg_bytes = ch.segment_bytes;
        if (!max_lanes) max_lanes = ch.lanes;
    }
    if (phases != TSR_PHASE_ALL) {
        /* Slices follow tsr_comm_slice: shm on one node and the ring produce that layout. */
        if (algo == TSR_ALLREDUCE_SHM && comm->nodes > 1) algo = TSR_ALLREDUCE_RING;
        if (algo == TSR_ALLREDUCE_MPI || algo == TSR_ALLREDUCE_RHD) algo = TSR_ALLREDUCE_RING;
    }
    if (algo == TSR_ALLREDUCE_SHM && comm->nodes > 1 && !comm->uniform)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                         "%s: shm needs the same number of ranks on every node (%d nodes differ)",
                         fn, comm->nodes);

    /* Scale applied to each finished element: averaging and weights. */
    double scale = 1.0, pre = 1.0;
    if (o.mode == TSR_REDUCE_AVG) scale = 1.0 / comm->size;
    if (o.mode == TSR_REDUCE_WEIGHTED) {
        double total = o.total_weight;
        pre = o.weight;
        if (total == 0.0) {
            total = o.weight;
#if TSR_WITH_MPI
            if (comm->is_mpi) {
                MPI_Request rq;
                int rc = MPI_Iallreduce(&o.weight, &total, 1, MPI_DOUBLE, MPI_SUM, comm->mc, &rq);
                if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(ctx, rc, "MPI_Iallreduce(weight)");
                TSR_TRY(tsr_comm_mpi_poll(comm, &rq, "allreduce of the weights"));
            }
#endif
        }
        if (!(total > 0.0))
            return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: the weights sum to %g, not > 0", fn,
                             total);
        scale = 1.0 / total;
    }

    tsr_comm_request *r = tsr_calloc(ctx, 1, sizeof *r);
    if (!r) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory for a request", fn);
    r->comm = comm;
    r->buf = buf;
    r->count = count;
    r->algo = algo;
    r->wire = o.wire;
    r->phases = phases;
    r->scale = phases & TSR_PHASE_RS ? (float)scale : 1.0f;
    if (scale_override >= 0.0f) r->scale = scale_override;
    r->tag = comm->seq++;
    r->seg_bytes = seg_bytes;
    r->max_lanes = max_lanes;
    /* A weight is a pass over buf of its own, except for shm on one node: it multiplies each
     * source as it reads it (the same bits, one pass less). */
    r->weight = 1.0f;
    if (pre != 1.0 && (phases & TSR_PHASE_RS)) {
        if (algo == TSR_ALLREDUCE_SHM && comm->nodes == 1 && comm->size > 1) r->weight = (float)pre;
        else tsr_comm_scale(buf, count, (float)pre);
    }

    tsr_status s = TSR_OK;
    if (count == 0) {
        r->done = 1;
    } else if (comm->size == 1) {
        /* One rank: nothing crosses a wire; only the scale applies. */
        tsr_comm_scale(buf, count, r->scale);
        r->done = 1;
    }
#if TSR_WITH_MPI
    else if (algo == TSR_ALLREDUCE_MPI) s = tsr_comm_mpi_start(r);
    else if (algo == TSR_ALLREDUCE_SHM) s = tsr_comm_shm_start(r);
    else s = tsr_comm_lanes_start(r);
#endif
    if (s != TSR_OK) {
#if TSR_WITH_MPI
        tsr_comm_request_release(r);
#endif
        tsr_free(ctx, r);
        return s;
    }
    if (!r->done) {
        tsr_comm_request **pp = &comm->active;
        while (*pp) pp = &(*pp)->next;
        *pp = r;
        comm->nactive++;
    }
    if (out) {
        *out = r;
        return TSR_OK;
    }
    return tsr_comm_wait(r);
}

tsr_status tsr_comm_allreduce(tsr_comm *comm, float *buf, size_t count,
                              const tsr_allreduce_opts *opts) {
    return tsr_comm_run(comm, buf, count, opts, TSR_PHASE_ALL, -1.0f, NULL);
}

tsr_status tsr_comm_allreduce_start(tsr_comm *comm, float *buf, size_t count,
                                    const tsr_allreduce_opts *opts, tsr_comm_request **out) {
    if (!out) {
        return tsr_error(comm ? comm->ctx : NULL, TSR_ERR_INVALID_ARG,
                         "tsr_comm_allreduce_start: out is NULL");
    }
    return tsr_comm_run(comm, buf, count, opts, TSR_PHASE_ALL, -1.0f, out);
}

tsr_status tsr_comm_reduce_scatter(tsr_comm *comm, float *buf, size_t count,
                                   const tsr_allreduce_opts *opts) {
    return tsr_comm_run(comm, buf, count, opts, TSR_PHASE_RS, -1.0f, NULL);
}

tsr_status tsr_comm_allgather(tsr_comm *comm, float *buf, size_t count, tsr_allreduce_algo algo) {
    tsr_allreduce_opts o;
    tsr_allreduce_opts_init(&o);
    o.algo = algo;
    return tsr_comm_run(comm, buf, count, &o, TSR_PHASE_AG, -1.0f, NULL);
}

tsr_status tsr_comm_test(tsr_comm_request *req, int *done) {
    if (!req || !done) return TSR_ERR_INVALID_ARG;
    if (!req->done) comm_progress(req->comm);
    *done = req->done;
    return req->done ? req->status : TSR_OK;
}

tsr_status tsr_comm_wait(tsr_comm_request *req) {
    if (!req) return TSR_OK;
    tsr_comm *comm = req->comm;
    double deadline = comm->timeout_s > 0 ? tsr_comm_now() + comm->timeout_s : 0;
    tsr_status lost = TSR_OK;
    double since = 0;
    for (unsigned spins = 0; !req->done; spins++) {
        comm_progress(comm);
        if (!req->done) tsr_comm_pause(comm, spins, &since);
        if (!req->done && deadline > 0 && (spins & 255) == 255 && tsr_comm_now() > deadline) {
            char what[96];
            snprintf(what, sizeof what, "%s of %zu floats", tsr_allreduce_algo_name(req->algo),
                     req->count);
            lost = tsr_comm_peer_lost(comm, what);
            queue_remove(comm, req);
            break;
        }
    }
    tsr_status s = lost != TSR_OK ? lost : req->status;
#if TSR_WITH_MPI
    tsr_comm_request_release(req);
#endif
    tsr_free(comm->ctx, req);
    return s;
}
