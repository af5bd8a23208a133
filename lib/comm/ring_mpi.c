/* Point-to-point allreduce algorithms over MPI_Isend/MPI_Irecv: ring and rhd.
 *
 * Both run as "lanes": the vector is cut into segments and each lane is an independent copy of
 * the algorithm on its segments, with its own tag, so while one lane waits for a message the
 * others reduce or send: the pipeline of Baidu's ring. A lane is a sequence of steps; a step
 * posts one send and one receive, and when both complete adds (or copies) what arrived. The
 * step that completes the reduction of a range "finalizes" it (scale, fp16 rounding) on the one
 * rank that owns it before it is passed on, so every rank ends with the same bits. */
#include <limits.h>
#include <string.h>
#include "lib/comm/comm_internal.h"

typedef struct step {
    int send_peer, recv_peer; /* -1: none */
    size_t send_off, send_n, recv_off, recv_n;
    int recv_add, finalize;
} step;

#define RHD_MAX_STEPS 132

struct tsr_lane {
    int k;           /* next step */
    int posted;      /* step k posted, waiting for its messages */
    int finished;
    MPI_Request rq[2];
    step st;
    float *tmp;      /* f32 receive staging for adds */
    uint16_t *hs, *hr;
    step *steps;     /* rhd: precomputed */
    int nsteps;
};

static int mod(int a, int n) { return ((a % n) + n) % n; }

/* Segment `lane` of chunk `c` (chunks as tsr_comm_slice). */
static void ring_seg(const tsr_comm_request *r, int c, int lane, size_t *off, size_t *n) {
    size_t lo, hi, o;
    tsr_comm_slice(r->comm, r->count, c, &lo, &hi);
    tsr_comm_split_range(hi - lo, (size_t)r->nlanes, (size_t)lane, &o, n);
    *off = lo + o;
}

static int ring_step(const tsr_comm_request *r, int lane, int k, step *st) {
    int n = r->comm->size, me = r->comm->rank;
    memset(st, 0, sizeof *st);
    st->send_peer = mod(me + 1, n);
    st->recv_peer = mod(me - 1, n);
    if (r->phases & TSR_PHASE_RS) {
        if (k < n - 1) { /* reduce-scatter: after n-1 steps this rank owns chunk `me` */
            ring_seg(r, mod(me - k - 1, n), lane, &st->send_off, &st->send_n);
            ring_seg(r, mod(me - k - 2, n), lane, &st->recv_off, &st->recv_n);
            st->recv_add = 1;
            st->finalize = k == n - 2;
            return 1;
        }
        k -= n - 1;
    }
    if ((r->phases & TSR_PHASE_AG) && k < n - 1) { /* allgather: pass finished chunks on */
        ring_seg(r, mod(me - k, n), lane, &st->send_off, &st->send_n);
        ring_seg(r, mod(me - k - 1, n), lane, &st->recv_off, &st->recv_n);
        return 1;
    }
    return 0;
}

/* Rabenseifner on [a, a+m): fold the extra ranks, halve, double, unfold. */
static int rhd_build(int me, int n, size_t a, size_t m, step *s) {
    int p2 = 1;
    while (p2 * 2 <= n) p2 *= 2;
    int rem = n - p2, ns = 0, nr;
    step z;
    memset(&z, 0, sizeof z);
    z.send_peer = z.recv_peer = -1;
    if (me < 2 * rem) {
        if (me % 2 == 0) { /* extra rank: hand the vector over, get the result back */
            s[ns] = z, s[ns].send_peer = me + 1, s[ns].send_off = a, s[ns].send_n = m, ns++;
            s[ns] = z, s[ns].recv_peer = me + 1, s[ns].recv_off = a, s[ns].recv_n = m, ns++;
            return ns;
        }
        s[ns] = z, s[ns].recv_peer = me - 1, s[ns].recv_off = a, s[ns].recv_n = m;
        s[ns].recv_add = 1, ns++;
        nr = me / 2;
    } else {
        nr = me - rem;
    }
    size_t lo = a, hi = a + m, stack_lo[32], stack_hi[32];
    int depth = 0;
    for (int d = p2 / 2; d >= 1; d /= 2) {
        int pn = nr ^ d, peer = pn < rem ? pn * 2 + 1 : pn + rem;
        size_t mid = lo + (hi - lo) / 2;
        step t = z;
        t.send_peer = t.recv_peer = peer;
        if ((nr & d) == 0) {
            t.send_off = mid, t.send_n = hi - mid, t.recv_off = lo, t.recv_n = mid - lo;
        } else {
            t.send_off = lo, t.send_n = mid - lo, t.recv_off = mid, t.recv_n = hi - mid;
        }
        t.recv_add = 1;
        t.finalize = d == 1;
        s[ns++] = t;
        stack_lo[depth] = lo, stack_hi[depth] = hi, depth++;
        lo = t.recv_off, hi = t.recv_off + t.recv_n;
    }
    for (int d = 1; d < p2; d *= 2) {
        int pn = nr ^ d, peer = pn < rem ? pn * 2 + 1 : pn + rem;
        depth--;
        size_t plo = stack_lo[depth], phi = stack_hi[depth];
        step t = z;
        t.send_peer = t.recv_peer = peer;
        t.send_off = lo, t.send_n = hi - lo;
        if (lo == plo) t.recv_off = hi, t.recv_n = phi - hi;
        else t.recv_off = plo, t.recv_n = lo - plo;
        s[ns++] = t;
        lo = plo, hi = phi;
    }
    if (me < 2 * rem) { /* unfold: the result back to the extra rank */
        s[ns] = z, s[ns].send_peer = me - 1, s[ns].send_off = a, s[ns].send_n = m, ns++;
    }
    return ns;
}

static int get_step(const tsr_comm_request *r, tsr_lane *l, int lane, step *st) {
    if (r->algo == TSR_ALLREDUCE_RHD) {
        if (l->k >= l->nsteps) return 0;
        *st = l->steps[l->k];
        return 1;
    }
    return ring_step(r, lane, l->k, st);
}

tsr_status tsr_comm_lanes_start(tsr_comm_request *r) {
    tsr_comm *c = r->comm;
    size_t es = r->wire == TSR_WIRE_F16 ? 2 : 4, maxseg;
    size_t seg = (r->seg_bytes ? r->seg_bytes : c->segment_bytes) / es;
    int rhd = r->algo == TSR_ALLREDUCE_RHD;
    size_t cap = rhd ? 8 : TSR_COMM_MAX_LANES; /* rhd: 8 lanes' steps fit its staging */
    if (r->max_lanes > 0 && (size_t)r->max_lanes < cap) cap = (size_t)r->max_lanes;
    if (rhd) {
        size_t nl = (r->count + 2 * seg - 1) / (2 * seg);
        r->nlanes = (int)(nl < 1 ? 1 : nl > cap ? cap : nl);
        maxseg = r->count / (size_t)r->nlanes + 1;
    } else {
        size_t lo, hi;
        tsr_comm_slice(c, r->count, 0, &lo, &hi); /* chunk 0 is a largest one */
        size_t nl = (hi - lo + seg - 1) / seg;
        r->nlanes = (int)(nl < 1 ? 1 : nl > cap ? cap : nl);
        maxseg = (hi - lo) / (size_t)r->nlanes + 1;
    }
    if (maxseg > INT_MAX)
        return tsr_error(c->ctx, TSR_ERR_UNSUPPORTED, "allreduce %s: segments of %zu elements "
                         "exceed MPI's int counts", tsr_allreduce_algo_name(r->algo), maxseg);
    /* One block: lanes, then per lane its staging buffers and rhd steps. */
    size_t per = 0;
    if (r->wire == TSR_WIRE_F16) per += 2 * maxseg * sizeof(uint16_t);
    else if (r->phases & TSR_PHASE_RS) per += maxseg * sizeof(float);
    per = (per + 63) & ~(size_t)63;
    size_t steps_bytes = rhd ? RHD_MAX_STEPS * sizeof(step) : 0;
    size_t lanes_bytes = ((size_t)r->nlanes * sizeof(tsr_lane) + 63) & ~(size_t)63;
    size_t total = lanes_bytes + (size_t)r->nlanes * (per + steps_bytes) + 64;
    r->lane_mem = tsr_calloc(c->ctx, 1, total);
    if (!r->lane_mem)
        return tsr_error(c->ctx, TSR_ERR_NO_MEMORY, "allreduce %s: %zu bytes of staging",
                         tsr_allreduce_algo_name(r->algo), total);
    char *p = (char *)(((uintptr_t)r->lane_mem + 63) & ~(uintptr_t)63);
    r->lanes = (tsr_lane *)(void *)p;
    p += lanes_bytes;
    for (int i = 0; i < r->nlanes; i++) {
        tsr_lane *l = &r->lanes[i];
        l->rq[0] = l->rq[1] = MPI_REQUEST_NULL;
        if (r->wire == TSR_WIRE_F16) {
            l->hs = (uint16_t *)(void *)p;
            l->hr = l->hs + maxseg;
        } else if (r->phases & TSR_PHASE_RS) {
            l->tmp = (float *)(void *)p;
        }
        p += per;
        if (rhd) {
            size_t off, n;
            tsr_comm_split_range(r->count, (size_t)r->nlanes, (size_t)i, &off, &n);
            l->steps = (step *)(void *)p;
            l->nsteps = rhd_build(c->rank, c->size, off, n, l->steps);
            p += steps_bytes;
        }
    }
    return tsr_comm_lanes_progress(r);
}

static void finalize(tsr_comm_request *r, size_t off, size_t n) {
    tsr_comm_scale(r->buf + off, n, r->scale);
    if (r->wire == TSR_WIRE_F16) tsr_comm_round_f16(r->buf + off, n);
}

static tsr_status lane_progress(tsr_comm_request *r, int lane) {
    tsr_comm *c = r->comm;
    tsr_lane *l = &r->lanes[lane];
    int tag = (int)(((r->tag & 1023u) << 4) | (unsigned)lane);
    int f16 = r->wire == TSR_WIRE_F16;
    for (;;) {
        if (!l->posted) {
            if (!get_step(r, l, lane, &l->st)) {
                l->finished = 1;
                return TSR_OK;
            }
            step *s = &l->st;
            int rc = MPI_SUCCESS;
            if (s->recv_peer >= 0 && s->recv_n) {
                if (f16) rc = MPI_Irecv(l->hr, (int)s->recv_n, MPI_UINT16_T, s->recv_peer, tag,
                                        c->mc, &l->rq[0]);
                else rc = MPI_Irecv(s->recv_add ? l->tmp : r->buf + s->recv_off, (int)s->recv_n,
                                    MPI_FLOAT, s->recv_peer, tag, c->mc, &l->rq[0]);
                if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(c->ctx, rc, "MPI_Irecv");
            }
            if (s->send_peer >= 0 && s->send_n) {
                if (f16) {
                    tsr_comm_to_f16(l->hs, r->buf + s->send_off, s->send_n);
                    rc = MPI_Isend(l->hs, (int)s->send_n, MPI_UINT16_T, s->send_peer, tag, c->mc,
                                   &l->rq[1]);
                } else {
                    rc = MPI_Isend(r->buf + s->send_off, (int)s->send_n, MPI_FLOAT, s->send_peer,
                                   tag, c->mc, &l->rq[1]);
                }
                if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(c->ctx, rc, "MPI_Isend");
            }
            l->posted = 1;
        }
        int flag = 0;
        MPI_Status sts[2]; /* not MPI_STATUSES_IGNORE: gcc 12 misreads its size */
        int rc = MPI_Testall(2, l->rq, &flag, sts);
        if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(c->ctx, rc, "MPI_Testall");
        if (!flag) return TSR_OK;
        step *s = &l->st;
        if (s->recv_peer >= 0 && s->recv_n) {
            float *dst = r->buf + s->recv_off;
            if (f16) {
                if (s->recv_add) tsr_comm_add_f16(dst, l->hr, s->recv_n);
                else tsr_comm_from_f16(dst, l->hr, s->recv_n);
            } else if (s->recv_add) {
                tsr_comm_add(dst, l->tmp, s->recv_n);
            }
        }
        if (s->finalize) finalize(r, s->recv_off, s->recv_n);
        l->k++;
        l->posted = 0;
    }
}

tsr_status tsr_comm_lanes_progress(tsr_comm_request *r) {
    int finished = 1;
    for (int i = 0; i < r->nlanes; i++) {
        if (r->lanes[i].finished) continue;
        TSR_TRY(lane_progress(r, i));
        finished &= r->lanes[i].finished;
    }
    if (finished) r->done = 1;
    return TSR_OK;
}

void tsr_comm_lanes_release(tsr_comm_request *r) {
    if (!r->lanes) return;
    for (int i = 0; i < r->nlanes; i++) {
        for (int j = 0; j < 2; j++) {
            MPI_Request *q = &r->lanes[i].rq[j];
            if (*q == MPI_REQUEST_NULL) continue;
            MPI_Cancel(q);
            MPI_Wait(q, MPI_STATUS_IGNORE);
        }
    }
    tsr_free(r->comm->ctx, r->lane_mem);
    r->lane_mem = NULL;
    r->lanes = NULL;
}
