/* Point-to-point messages between ranks (pipeline stages hand activations and their gradients
 * over with these). One file for every build: without MPI, or on the self communicator, there
 * is no peer to talk to and each call says so.
 *
 * Tags: the ring allreduce uses MPI tags below 2^14 on the same MPI communicator, so user tag t
 * travels as 2^14 + t and the two never match each other's messages. A dead peer is noticed as
 * the collectives notice it: a wait without progress for TSR_COMM_TIMEOUT marks the
 * communicator broken and returns TSR_ERR_PEER_LOST. */
#include <limits.h>
#include <stdio.h>
#include "lib/comm/comm_internal.h"

#define P2P_TAG_BASE (1 << 14)

struct tsr_comm_p2p {
    tsr_comm *comm;
    int peer, tag, is_send;
    size_t bytes;
    int done;
    tsr_status status; /* of the completed operation, kept for the wait */
#if TSR_WITH_MPI
    MPI_Request mreq;
#endif
};

static const char *op_name(int is_send) { return is_send ? "tsr_comm_send" : "tsr_comm_recv"; }

static tsr_status check(tsr_comm *comm, int peer, int tag, const void *buf, size_t bytes,
                        int is_send) {
    const char *fn = op_name(is_send);
    if (!comm) return tsr_error(NULL, TSR_ERR_INVALID_ARG, "%s: communicator is NULL", fn);
    tsr_context *ctx = comm->ctx;
    if (!buf && bytes)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: buf is NULL with %zu bytes", fn, bytes);
    if (tag < 0 || tag > TSR_COMM_P2P_MAX_TAG)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: tag %d is not in [0, %d]", fn, tag,
                         TSR_COMM_P2P_MAX_TAG);
    if (peer < 0 || peer >= comm->size)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: rank %d is not in [0, %d)", fn, peer,
                         comm->size);
    if (bytes > INT_MAX)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED, "%s: %zu bytes exceed MPI's int counts", fn,
                         bytes);
#if TSR_WITH_MPI
    if (comm->is_mpi) {
        if (comm->broken)
            return tsr_error(ctx, TSR_ERR_PEER_LOST, "%s: the communicator lost a peer earlier", fn);
        return TSR_OK;
    }
#endif
    return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                     "%s: the self communicator has no peer to exchange messages with", fn);
}

static tsr_status start(tsr_comm *comm, int peer, int tag, void *buf, size_t bytes, int is_send,
                        tsr_comm_p2p **out) {
    if (!out) return tsr_error(comm ? comm->ctx : NULL, TSR_ERR_INVALID_ARG, "%s: out is NULL",
                               op_name(is_send));
    *out = NULL;
    TSR_TRY(check(comm, peer, tag, buf, bytes, is_send));
    tsr_comm_p2p *r = tsr_calloc(comm->ctx, 1, sizeof *r);
    if (!r) return tsr_error(comm->ctx, TSR_ERR_NO_MEMORY, "%s: request", op_name(is_send));
    r->comm = comm;
    r->peer = peer;
    r->tag = tag;
    r->is_send = is_send;
    r->bytes = bytes;
#if TSR_WITH_MPI
    char dummy = 0;
    void *p = bytes ? buf : &dummy;
    int rc = is_send ? MPI_Isend(p, (int)bytes, MPI_BYTE, peer, P2P_TAG_BASE + tag, comm->mc, &r->mreq)
                     : MPI_Irecv(p, (int)bytes, MPI_BYTE, peer, P2P_TAG_BASE + tag, comm->mc, &r->mreq);
    if (rc != MPI_SUCCESS) {
        tsr_free(comm->ctx, r);
        return tsr_comm_mpi_error(comm->ctx, rc, is_send ? "MPI_Isend" : "MPI_Irecv");
    }
#endif
    *out = r;
    return TSR_OK;
}

tsr_status tsr_comm_isend(tsr_comm *comm, int dst, int tag, const void *buf, size_t bytes,
                          tsr_comm_p2p **out) {
    return start(comm, dst, tag, (void *)buf, bytes, 1, out); /* MPI_Isend only reads buf */
}

tsr_status tsr_comm_irecv(tsr_comm *comm, int src, int tag, void *buf, size_t bytes,
                          tsr_comm_p2p **out) {
    return start(comm, src, tag, buf, bytes, 0, out);
}

#if TSR_WITH_MPI
/* One MPI_Test; a receive checks that the message had the expected size. */
static tsr_status poll_test(tsr_comm_p2p *r) {
    MPI_Status st;
    int flag = 0;
    int rc = MPI_Test(&r->mreq, &flag, &st);
    if (rc != MPI_SUCCESS) {
        char says[MPI_MAX_ERROR_STRING + 64], what[96];
        r->done = 1;
        if (tsr_comm_mpi_proc_failed(rc, says, sizeof says)) { /* MPI saw the peer die first */
            snprintf(what, sizeof what, "%s of %zu bytes %s rank %d", r->is_send ? "send" : "receive", r->bytes,
                     r->is_send ? "to" : "from", tsr_comm_world_rank(r->comm, r->peer));
            return tsr_comm_peer_failed(r->comm, what, says);
        }
        return tsr_comm_mpi_error(r->comm->ctx, rc, r->is_send ? "MPI_Test(Isend)" : "MPI_Test(Irecv)");
    }
    if (!flag) return TSR_OK;
    r->done = 1;
    if (!r->is_send) {
        int got = 0;
        MPI_Get_count(&st, MPI_BYTE, &got);
        if ((size_t)got != r->bytes)
            return tsr_error(r->comm->ctx, TSR_ERR_MISMATCH,
                             "tsr_comm_recv: message from rank %d (tag %d) has %d bytes, %zu expected",
                             r->peer, r->tag, got, r->bytes);
    }
    return TSR_OK;
}

static tsr_status poll_once(tsr_comm_p2p *r) {
    tsr_status s = poll_test(r);
    if (r->done) r->status = s;
    return s;
}
#endif

tsr_status tsr_comm_p2p_test(tsr_comm_p2p *req, int *done) {
    if (!req || !done) return TSR_ERR_INVALID_ARG;
    *done = 0;
#if TSR_WITH_MPI
    if (!req->done) {
        if (req->comm->broken)
            return tsr_error(req->comm->ctx, TSR_ERR_PEER_LOST, "%s: the communicator lost a peer",
                             op_name(req->is_send));
        tsr_status s = poll_once(req);
        *done = req->done;
        return s;
    }
#endif
    *done = 1;
    return req->status;
}

tsr_status tsr_comm_p2p_wait(tsr_comm_p2p *req) {
    if (!req) return TSR_OK;
    tsr_comm *comm = req->comm;
    tsr_status s = req->status;
#if TSR_WITH_MPI
    double deadline = comm->timeout_s > 0 ? tsr_comm_now() + comm->timeout_s : 0;
    double since = 0;
    for (unsigned spins = 0; !req->done && s == TSR_OK; spins++) {
        if (comm->broken) {
            /* a lost peer never completes the request: abandon it rather than wait */
            s = tsr_error(comm->ctx, TSR_ERR_PEER_LOST, "%s: the communicator lost a peer",
                          op_name(req->is_send));
            break;
        }
        s = poll_once(req);
        if (req->done) break;
        tsr_comm_pause(comm, spins, &since);
        if (deadline > 0 && (spins & 255) == 255 && tsr_comm_now() > deadline) {
            char what[96];
            snprintf(what, sizeof what, "%s of %zu bytes %s rank %d", req->is_send ? "send" : "receive",
                     req->bytes, req->is_send ? "to" : "from", tsr_comm_world_rank(comm, req->peer));
            s = tsr_comm_peer_lost(comm, what);
        }
    }
#endif
    tsr_free(comm->ctx, req);
    return s;
}

void tsr_comm_p2p_cancel(tsr_comm_p2p *req) {
    if (!req) return;
#if TSR_WITH_MPI
    if (!req->done && !req->comm->broken) {
        /* a cancelled request still has to be completed before MPI forgets it */
        MPI_Cancel(&req->mreq);
        MPI_Request_free(&req->mreq);
    }
#endif
    tsr_free(req->comm->ctx, req);
}

tsr_status tsr_comm_send(tsr_comm *comm, int dst, int tag, const void *buf, size_t bytes) {
    tsr_comm_p2p *r;
    TSR_TRY(tsr_comm_isend(comm, dst, tag, buf, bytes, &r));
    return tsr_comm_p2p_wait(r);
}

tsr_status tsr_comm_recv(tsr_comm *comm, int src, int tag, void *buf, size_t bytes) {
    tsr_comm_p2p *r;
    TSR_TRY(tsr_comm_irecv(comm, src, tag, buf, bytes, &r));
    return tsr_comm_p2p_wait(r);
}
