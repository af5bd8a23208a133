/* Shared-memory allreduce (one node, or hierarchical across nodes) and registered buffers.
 *
 * Every rank of the node exposes one "source" per piece of the vector: its own buffer when
 * that lies in a tsr_comm_alloc window (registered: read in place), else a copy in its
 * scratch window. Rank q reduces slice q of the piece straight from all sources into its own
 * source, then every rank copies the finished slices out. Across nodes, between those two
 * passes, each slice goes around a ring of the ranks with the same local rank.
 *
 * Synchronisation: one C11 atomic counter per rank in shared memory, stored with release and
 * read with acquire. For piece epoch e the counter goes to 4e+1 (source ready), 4e+2 (slice
 * reduced), 4e+3 (copies done). A rank rewrites its scratch or its published description only
 * after every peer reached 4(e-1)+3; a registered rank leaves the operation only after every
 * peer has finished copying from its buffer. Waits are polls, so the operation is
 * non-blocking: tsr_comm_test advances it as far as the peers allow. */
#include <stdatomic.h>
#include <string.h>
#include "lib/comm/comm_internal.h"

typedef struct shm_ctl {
    _Atomic uint64_t phase;
    char pad0[56];
    int64_t region;     /* -1: the source is the scratch copy; else a region id */
    uint64_t offset;    /* byte offset of the buffer in that rank's part of the region */
    float weight;       /* the factor of this rank's contribution (tsr_comm_request.weight) */
    char pad1[44];
} shm_ctl;

#define CTL_BYTES 4096

struct tsr_shm {
    MPI_Win win;
    int n;
    shm_ctl **ctl;
    float **scratch;
    size_t scratch_floats;
    const float **srcs;  /* reduction sources, one per local rank */
    float *weights;      /* their factors (weighted mode), in the same order */
};

struct tsr_region {
    tsr_region *next;
    int64_t id;
    MPI_Win win;
    void *user;          /* aligned pointer handed out */
    size_t bytes;
    char **base;         /* each local rank's part, in this address space */
};

enum { ST_ENTER = 0, ST_REDUCE, ST_RING, ST_COPY, ST_FINAL, ST_ONESHOT };

/* Up to this size a one-node allreduce takes one synchronisation instead of two or three:
 * every rank publishes a copy and sums all of them itself, in rank order so that every rank
 * gets the same bits. Each sync point costs a time slice when a peer is descheduled. */
#define ONESHOT_BYTES (8u << 10)

static tsr_status win_error(tsr_comm *c, int rc, const char *what) {
    return tsr_comm_mpi_error(c->ctx, rc, what);
}

static tsr_status alloc_shared(tsr_comm *c, size_t bytes, MPI_Win *win, char ***bases) {
    tsr_comm *node = c->node;
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    void *base = NULL;
    int rc = MPI_Win_allocate_shared((MPI_Aint)bytes, 1, info, node->mc, &base, win);
    MPI_Info_free(&info);
    if (rc != MPI_SUCCESS) return win_error(c, rc, "MPI_Win_allocate_shared");
    MPI_Win_set_errhandler(*win, MPI_ERRORS_RETURN);
    *bases = tsr_calloc(c->ctx, (size_t)node->size, sizeof(char *));
    if (!*bases) {
        MPI_Win_free(win);
        return tsr_error(c->ctx, TSR_ERR_NO_MEMORY, "shared window: no memory");
    }
    for (int p = 0; p < node->size; p++) {
        MPI_Aint sz;
        int du;
        void *b;
        rc = MPI_Win_shared_query(*win, p, &sz, &du, &b);
        if (rc != MPI_SUCCESS) {
            tsr_free(c->ctx, *bases);
            MPI_Win_free(win);
            return win_error(c, rc, "MPI_Win_shared_query");
        }
        (*bases)[p] = b;
    }
    return TSR_OK;
}

static tsr_status shm_setup(tsr_comm *c) {
    if (c->shm) return TSR_OK;
    int n = c->node->size;
    tsr_shm *s = tsr_calloc(c->ctx, 1, sizeof *s);
    if (!s) return tsr_error(c->ctx, TSR_ERR_NO_MEMORY, "shm: no memory");
    s->n = n;
    s->scratch_floats = (c->shm_bytes / sizeof(float)) & ~(size_t)(TSR_COMM_ALIGN - 1);
    s->ctl = tsr_calloc(c->ctx, (size_t)n, sizeof *s->ctl);
    s->scratch = tsr_calloc(c->ctx, (size_t)n, sizeof *s->scratch);
    s->srcs = tsr_calloc(c->ctx, (size_t)n, sizeof *s->srcs);
    s->weights = tsr_calloc(c->ctx, (size_t)n, sizeof *s->weights);
    char **bases = NULL;
    tsr_status st = TSR_OK;
    if (!s->ctl || !s->scratch || !s->srcs || !s->weights) {
        st = tsr_error(c->ctx, TSR_ERR_NO_MEMORY, "shm: no memory");
        goto fail;
    }
    st = alloc_shared(c, CTL_BYTES + s->scratch_floats * sizeof(float), &s->win, &bases);
    if (st != TSR_OK) goto fail;
    for (int p = 0; p < n; p++) {
        s->ctl[p] = (shm_ctl *)(void *)bases[p];
        s->scratch[p] = (float *)(void *)(bases[p] + CTL_BYTES);
    }
    tsr_free(c->ctx, bases);
    shm_ctl *me = s->ctl[c->node->rank];
    me->region = -1;
    me->offset = 0;
    atomic_store_explicit(&me->phase, 3, memory_order_release); /* epoch 0 is complete */
    int rc = MPI_Barrier(c->node->mc); /* every control block initialised before use */
    if (rc != MPI_SUCCESS) {
        MPI_Win_free(&s->win);
        st = win_error(c, rc, "MPI_Barrier(shm setup)");
        goto fail;
    }
    c->shm = s;
    return TSR_OK;
fail:
    tsr_free(c->ctx, s->ctl);
    tsr_free(c->ctx, s->scratch);
    tsr_free(c->ctx, s->srcs);
    tsr_free(c->ctx, s->weights);
    tsr_free(c->ctx, s);
    return st;
}

/* ---- registered buffers ---- */

/* 2^46 bytes, or half the address space where size_t is 32 bits (1 << 46 overflows there). */
#define SHM_MAX_BYTES ((size_t)((uint64_t)SIZE_MAX >> 1 < (uint64_t)1 << 46 ? \
                                (uint64_t)SIZE_MAX >> 1 : (uint64_t)1 << 46))

tsr_status tsr_comm_shm_alloc(tsr_comm *c, size_t bytes, void **out) {
    if (bytes > SHM_MAX_BYTES)
        return tsr_error(c->ctx, TSR_ERR_INVALID_ARG, "tsr_comm_alloc: %zu bytes is too large",
                         bytes);
    tsr_region *g = tsr_calloc(c->ctx, 1, sizeof *g);
    if (!g) return tsr_error(c->ctx, TSR_ERR_NO_MEMORY, "tsr_comm_alloc: no memory");
    size_t want = ((bytes + 63) & ~(size_t)63) + 64; /* room to align to 64 */
    tsr_status s = alloc_shared(c, want, &g->win, &g->base);
    if (s != TSR_OK) {
        tsr_free(c->ctx, g);
        return s;
    }
    char *mine = g->base[c->node->rank];
    g->user = (void *)(((uintptr_t)mine + 63) & ~(uintptr_t)63);
    g->bytes = bytes;
    g->id = c->region_ids++;
    g->next = c->regions;
    c->regions = g;
    *out = g->user;
    return TSR_OK;
}

static void region_free(tsr_comm *c, tsr_region *g) {
    MPI_Win_free(&g->win);
    tsr_free(c->ctx, g->base);
    tsr_free(c->ctx, g);
}

tsr_status tsr_comm_shm_free_mem(tsr_comm *c, void *ptr) {
    if (!ptr) return TSR_OK;
    for (tsr_region **pp = &c->regions; *pp; pp = &(*pp)->next) {
        if ((*pp)->user == ptr) {
            tsr_region *g = *pp;
            *pp = g->next;
            region_free(c, g);
            return TSR_OK;
        }
    }
    return tsr_error(c->ctx, TSR_ERR_NOT_FOUND,
                     "tsr_comm_free_mem: %p was not allocated by tsr_comm_alloc on this "
                     "communicator", ptr);
}

static const tsr_region *find_region(const tsr_comm *c, const void *ptr, size_t bytes) {
    for (const tsr_region *g = c->regions; g; g = g->next) {
        uintptr_t lo = (uintptr_t)g->user, p = (uintptr_t)ptr;
        if (p >= lo && p - lo <= g->bytes && bytes <= g->bytes - (p - lo)) return g;
    }
    return NULL;
}

int tsr_comm_shm_is_registered(const tsr_comm *c, const void *ptr, size_t bytes) {
    return find_region(c, ptr, bytes) != NULL;
}

void tsr_comm_shm_free_all(tsr_comm *c) {
    while (c->regions) {
        tsr_region *g = c->regions;
        c->regions = g->next;
        region_free(c, g);
    }
    if (c->shm) {
        MPI_Win_free(&c->shm->win);
        tsr_free(c->ctx, c->shm->ctl);
        tsr_free(c->ctx, c->shm->scratch);
        tsr_free(c->ctx, c->shm->srcs);
        tsr_free(c->ctx, c->shm->weights);
        tsr_free(c->ctx, c->shm);
        c->shm = NULL;
    }
}

/* ---- the operation ---- */

static void node_slice(size_t count, int n, int q, size_t *lo, size_t *hi) {
    size_t units = (count + TSR_COMM_ALIGN - 1) / TSR_COMM_ALIGN, off, len;
    tsr_comm_split_range(units, (size_t)n, (size_t)q, &off, &len);
    size_t a = off * TSR_COMM_ALIGN, b = (off + len) * TSR_COMM_ALIGN;
    *lo = a < count ? a : count;
    *hi = b < count ? b : count;
}

/* Piece `k` of slice q: [*off, *off + *n) of the vector. */
static void piece_range(const tsr_comm_request *r, int q, size_t *off, size_t *n) {
    size_t lo, hi;
    node_slice(r->count, r->comm->node->size, q, &lo, &hi);
    size_t a = lo + r->piece * r->sub;
    *off = a < hi ? a : hi;
    size_t e = *off + r->sub;
    *n = (e < hi ? e : hi) - *off;
}

static int all_reached(const tsr_shm *s, uint64_t v) {
    for (int p = 0; p < s->n; p++)
        if (atomic_load_explicit(&s->ctl[p]->phase, memory_order_acquire) < v) return 0;
    return 1;
}

static void signal_phase(tsr_comm_request *r, uint64_t v) {
    tsr_comm *c = r->comm;
    atomic_store_explicit(&c->shm->ctl[c->node->rank]->phase, v, memory_order_release);
}

/* Where rank p's data for slice q of the current piece lives, or NULL if p's region is gone. */
static float *source(tsr_comm_request *r, int p, int q) {
    tsr_comm *c = r->comm;
    tsr_shm *s = c->shm;
    size_t off, n;
    piece_range(r, q, &off, &n);
    int64_t id = s->ctl[p]->region;
    if (id < 0) return s->scratch[p] + (size_t)q * r->sub;
    for (const tsr_region *g = c->regions; g; g = g->next) {
        if (g->id == id) {
            char *b = g->base[p];
            b = (char *)(((uintptr_t)b + 63) & ~(uintptr_t)63);
            return (float *)(void *)(b + s->ctl[p]->offset) + off;
        }
    }
    return NULL;
}

/* Whether this rank writes its finished slices into peer p's buffer (p's is registered in a
 * one-node allreduce), and whether the peers write theirs into this rank's (the same rule seen
 * from p): every rank reads ctl[p]->region after p published it for this piece. Pushing moves
 * each slice across cores once, while it is still in the reducing core's cache, into lines
 * that core has just read (ordinary stores are fast there, unlike a copy into lines another
 * core read); a registered rank then has nothing to copy. 1 MiB on 2 ranks: 60 us pulling
 * the slices back, 25 us pushing them. */
static int push_to(const tsr_comm_request *r, int p) {
    const tsr_comm *c = r->comm;
    return c->nodes == 1 && r->phases == TSR_PHASE_ALL && c->shm->ctl[p]->region >= 0;
}

static int pushed(const tsr_comm_request *r) {
    const tsr_comm *c = r->comm;
    return c->nodes == 1 && r->phases == TSR_PHASE_ALL && r->registered;
}

/* The published factors in the order of the sources (first: rank `first`'s, then the others in
 * rank order; first < 0: plain rank order), or NULL when every rank's is 1. */
static const float *weights(tsr_comm_request *r, int first) {
    tsr_shm *s = r->comm->shm;
    int any = 0;
    if (first >= 0) s->weights[0] = s->ctl[first]->weight;
    for (int p = 0, j = first >= 0 ? 1 : 0; p < s->n; p++) {
        if (p == first) continue;
        s->weights[j++] = s->ctl[p]->weight;
    }
    for (int p = 0; p < s->n; p++) any |= s->weights[p] != 1.0f;
    return any ? s->weights : NULL;
}

tsr_status tsr_comm_shm_start(tsr_comm_request *r) {
    tsr_comm *c = r->comm;
    TSR_TRY(shm_setup(c));
    int n = c->node->size;
    size_t lo, hi;
    node_slice(r->count, n, 0, &lo, &hi); /* slice 0 is a largest one */
    r->sub = (c->shm->scratch_floats / (size_t)n) & ~(size_t)(TSR_COMM_ALIGN - 1);
    if (r->seg_bytes && r->sub > r->seg_bytes / sizeof(float)) /* a tuned piece size */
        r->sub = (r->seg_bytes / sizeof(float)) & ~(size_t)(TSR_COMM_ALIGN - 1);
    if (r->sub == 0) r->sub = TSR_COMM_ALIGN;
    if (c->shm->scratch_floats < r->sub * (size_t)n)
        return tsr_error(c->ctx, TSR_ERR_INVALID_ARG,
                         "shm: TSR_SHM_BYTES=%zu is too small for %d ranks", c->shm_bytes, n);
    r->pieces = (hi - lo + r->sub - 1) / r->sub;
    if (r->pieces == 0) r->pieces = 1;
    r->piece = 0;
    r->stage = ST_ENTER;
    r->registered = find_region(c, r->buf, r->count * sizeof(float)) != NULL;
    r->oneshot = c->nodes == 1 && r->phases == TSR_PHASE_ALL &&
                 r->count * sizeof(float) <= ONESHOT_BYTES &&
                 r->count <= c->shm->scratch_floats;
    if (r->oneshot) r->registered = 0, r->pieces = 1; /* peers read copies, never buf */
    /* One control block per node: an earlier shm request must finish first. */
    for (const tsr_comm_request *a = c->active; a; a = a->next)
        if (a->algo == TSR_ALLREDUCE_SHM && !a->done) return TSR_OK;
    return tsr_comm_shm_progress(r);
}

static tsr_status shm_step(tsr_comm_request *r, int *moved) {
    tsr_comm *c = r->comm;
    tsr_shm *s = c->shm;
    int me = c->node->rank, n = s->n;
    int hier = c->nodes > 1;
    *moved = 0;
    switch (r->stage) {
    case ST_ENTER: {
        if (r->piece == 0) r->epoch = c->shm_epoch + 1; /* until it enters, nobody else can */
        uint64_t e = r->epoch;
        if (!all_reached(s, 4 * (e - 1) + 3)) return TSR_OK;
        c->shm_epoch = e;
        shm_ctl *ctl = s->ctl[me];
        ctl->weight = r->weight;
        if (r->registered) {
            const tsr_region *g = find_region(c, r->buf, r->count * sizeof(float));
            ctl->region = g->id;
            ctl->offset = (uint64_t)((char *)r->buf - (char *)g->user);
        } else if (r->oneshot) {
            ctl->region = -1;
            memcpy(s->scratch[me], r->buf, r->count * sizeof(float));
        } else {
            ctl->region = -1;
            for (int q = 0; q < n; q++) {
                /* reduce: the peers' slices (the own one is reduced straight from buf);
                 * allgather: only the own slice */
                if ((r->phases & TSR_PHASE_RS) ? q == me : q != me) continue;
                size_t off, len;
                piece_range(r, q, &off, &len);
                tsr_comm_copy(s->scratch[me] + (size_t)q * r->sub, r->buf + off, len);
            }
        }
        signal_phase(r, 4 * e + 1);
        r->stage = r->oneshot ? ST_ONESHOT : ST_REDUCE;
        *moved = 1;
        return TSR_OK;
    }
    case ST_ONESHOT: {
        uint64_t e = r->epoch;
        if (!all_reached(s, 4 * e + 1)) return TSR_OK;
        memcpy(r->buf, s->scratch[0], r->count * sizeof(float));
        s->srcs[0] = r->buf;
        for (int p = 1; p < n; p++) s->srcs[p] = s->scratch[p];
        tsr_comm_reduce_into(r->buf, s->srcs, weights(r, -1), n, r->count, r->scale, NULL, 0);
        /* done reading the peers' copies: they may reuse their scratch */
        signal_phase(r, 4 * e + 3);
        r->done = 1;
        *moved = 1;
        return TSR_OK;
    }
    case ST_REDUCE: {
        uint64_t e = r->epoch;
        if (!all_reached(s, 4 * e + 1)) return TSR_OK;
        for (int p = 0; p < n; p++) {
            if (!source(r, p, me))
                return tsr_error(c->ctx, TSR_ERR_STATE, "shm: local rank %d names a registered "
                                 "buffer this rank does not know (alloc/free out of order?)", p);
        }
        size_t off, len;
        piece_range(r, me, &off, &len);
        /* The own slice is reduced in the caller's buffer; a private buffer's result is
         * mirrored into the scratch where the peers copy it from. */
        float *y = r->buf + off, *mirror = r->registered ? NULL : source(r, me, me);
        if (r->phases & TSR_PHASE_RS) {
            s->srcs[0] = y;
            for (int p = 0, j = 1; p < n; p++)
                if (p != me) s->srcs[j++] = source(r, p, me);
            /* One node, allreduce: the finished slice goes straight into every registered
             * peer's buffer too (pushed while in cache; see push_to) instead of each peer
             * reading it back in a pass of its own. With one destination it is written as
             * the reduction's mirror. */
            int push = !hier && r->phases == TSR_PHASE_ALL, first = -1, stream = mirror != NULL;
            for (int p = 0; push && p < n && !mirror; p++)
                if (p != me && push_to(r, p)) mirror = source(r, p, me), first = p;
            tsr_comm_reduce_into(y, s->srcs, weights(r, me), n, len, hier ? 1.0f : r->scale,
                                 hier ? NULL : mirror, stream);
            for (int p = 0; push && p < n; p++)
                if (p != me && p != first && push_to(r, p))
                    memcpy(source(r, p, me), y, len * sizeof(float));
        }
        if (hier && (r->phases & TSR_PHASE_RS) && len) {
            tsr_allreduce_opts o;
            tsr_allreduce_opts_init(&o);
            o.algo = TSR_ALLREDUCE_RING;
            o.wire = r->wire;
            TSR_TRY(tsr_comm_run(c->cross, y, len, &o, TSR_PHASE_ALL, r->scale, &r->inner));
            r->stage = ST_RING;
        } else {
            signal_phase(r, 4 * e + 2);
            r->stage = ST_COPY;
        }
        *moved = 1;
        return TSR_OK;
    }
    case ST_RING: {
        int done = 0;
        TSR_TRY(tsr_comm_test(r->inner, &done));
        if (!done) return TSR_OK;
        tsr_status st = tsr_comm_wait(r->inner);
        r->inner = NULL;
        TSR_TRY(st);
        if (!r->registered) {
            size_t off, len;
            piece_range(r, me, &off, &len);
            memcpy(source(r, me, me), r->buf + off, len * sizeof(float));
        }
        signal_phase(r, 4 * r->epoch + 2);
        r->stage = ST_COPY;
        *moved = 1;
        return TSR_OK;
    }
    case ST_COPY: {
        uint64_t e = r->epoch;
        if (!all_reached(s, 4 * e + 2)) return TSR_OK;
        for (int q = 0; q < n; q++) {
            size_t off, len;
            piece_range(r, q, &off, &len);
            if (!len) continue;
            if (q == me || pushed(r)) {
                continue; /* reduced in place, pushed here (or, for an allgather, never moved) */
            } else if (r->phases & TSR_PHASE_AG) {
                tsr_comm_copy(r->buf + off, source(r, q, q), len);
            }
        }
        signal_phase(r, 4 * e + 3);
        *moved = 1;
        if (++r->piece < r->pieces) {
            r->epoch = e + 1;
            r->stage = ST_ENTER;
        } else if (r->registered) {
            r->stage = ST_FINAL;
        } else {
            r->done = 1;
        }
        return TSR_OK;
    }
    case ST_FINAL:
        if (!all_reached(s, 4 * r->epoch + 3)) return TSR_OK;
        r->done = 1;
        return TSR_OK;
    }
    return tsr_error(c->ctx, TSR_ERR_INTERNAL, "shm: bad stage %d", r->stage);
}

tsr_status tsr_comm_shm_progress(tsr_comm_request *r) {
    int moved = 1;
    while (moved && !r->done) TSR_TRY(shm_step(r, &moved));
    return TSR_OK;
}
