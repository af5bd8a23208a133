/* MPI communicators: wrapping, node view, errors, and the `mpi` algorithm (MPI_Iallreduce). */
#include <limits.h>
#include <string.h>
#include <unistd.h>
#include "lib/comm/comm_internal.h"

tsr_status tsr_comm_mpi_error(tsr_context *ctx, int rc, const char *what) {
    char msg[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len] = '\0';
    return tsr_error(ctx, TSR_ERR_MPI, "%s failed: %s (MPI error %d)", what,
                     len ? msg : "unknown error", rc);
}

int tsr_comm_mpi_proc_failed(int rc, char *msg, size_t size) {
    int cls = 0;
    if (MPI_Error_class(rc, &cls) != MPI_SUCCESS) return 0;
#ifdef MPIX_ERR_PROC_FAILED
    if (cls != MPIX_ERR_PROC_FAILED && cls != MPIX_ERR_PROC_FAILED_PENDING && cls != MPIX_ERR_REVOKED) return 0;
    char text[MPI_MAX_ERROR_STRING + 1];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
    text[len] = '\0';
    snprintf(msg, size, "%s (MPI error %d)", len ? text : "process failure", rc);
    return 1;
#else
    (void)msg, (void)size;
    return 0;
#endif
}

/* inout[i] = f16(f32(in[i]) + f32(inout[i])): fp16 on the wire, fp32 accumulation. */
static void f16_sum_op(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    float fa[256], fb[256];
    for (int i = 0; i < *len; i += 256) {
        size_t n = (size_t)(*len - i < 256 ? *len - i : 256);
        tsr_comm_from_f16(fa, a + i, n);
        tsr_comm_from_f16(fb, b + i, n);
        tsr_comm_add(fb, fa, n);
        tsr_comm_to_f16(b + i, fb, n);
    }
}

enum { KIND_FULL = 0, KIND_NODE = 1, KIND_CROSS = 2 };

static tsr_status wrap(tsr_context *ctx, MPI_Comm mc, int finalize_mpi, int kind, tsr_comm **out);

/* Node view: local rank/size, node count, uniformity, and the cross communicator. */
static tsr_status node_view(tsr_comm *c) {
    tsr_context *ctx = c->ctx;
    MPI_Comm nc;
    int rc = MPI_Comm_split_type(c->mc, MPI_COMM_TYPE_SHARED, c->rank, MPI_INFO_NULL, &nc);
    if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(ctx, rc, "MPI_Comm_split_type(SHARED)");
    tsr_status s = wrap(ctx, nc, 0, KIND_NODE, &c->node);
    MPI_Comm_free(&nc);
    TSR_TRY(s);
    c->local_rank = c->node->rank;
    c->local_size = c->node->size;
    int mine[3] = {c->local_rank == 0, c->local_size, -c->local_size}, all[3];
    rc = MPI_Allreduce(mine, all, 1, MPI_INT, MPI_SUM, c->mc);
    if (rc == MPI_SUCCESS) rc = MPI_Allreduce(mine + 1, all + 1, 2, MPI_INT, MPI_MAX, c->mc);
    if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(ctx, rc, "MPI_Allreduce(node view)");
    c->nodes = all[0];
    c->uniform = all[1] == -all[2];
    if (c->nodes > 1 && c->uniform) {
        MPI_Comm xc;
        rc = MPI_Comm_split(c->mc, c->local_rank, c->rank, &xc);
        if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(ctx, rc, "MPI_Comm_split(cross)");
        s = wrap(ctx, xc, 0, KIND_CROSS, &c->cross);
        MPI_Comm_free(&xc);
        TSR_TRY(s);
    }
    return TSR_OK;
}

static tsr_status wrap(tsr_context *ctx, MPI_Comm mc, int finalize_mpi, int kind, tsr_comm **out) {
    *out = NULL;
    tsr_comm *c = tsr_calloc(ctx, 1, sizeof *c);
    if (!c) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "communicator: no memory");
    c->ctx = ctx;
    c->is_mpi = 1;
    c->mc = MPI_COMM_NULL;
    c->f16_sum = MPI_OP_NULL;
    tsr_comm_apply_options(c);
    tsr_status s;
    int rc = MPI_Comm_dup(mc, &c->mc);
    if (rc != MPI_SUCCESS) {
        c->mc = MPI_COMM_NULL;
        s = tsr_comm_mpi_error(ctx, rc, "MPI_Comm_dup");
        goto fail;
    }
    c->finalize_mpi = finalize_mpi;
    MPI_Comm_set_errhandler(c->mc, MPI_ERRORS_RETURN);
    MPI_Comm_rank(c->mc, &c->rank);
    MPI_Comm_size(c->mc, &c->size);
    rc = MPI_Op_create(f16_sum_op, 1, &c->f16_sum);
    if (rc != MPI_SUCCESS) {
        c->f16_sum = MPI_OP_NULL;
        s = tsr_comm_mpi_error(ctx, rc, "MPI_Op_create");
        goto fail;
    }
    c->shm_epoch = 0;
    switch (kind) {
    case KIND_NODE:
        c->local_rank = c->rank, c->local_size = c->size, c->nodes = 1, c->uniform = 1;
        break;
    case KIND_CROSS:
        c->local_rank = 0, c->local_size = 1, c->nodes = c->size, c->uniform = 1;
        break;
    default:
        s = node_view(c);
        if (s != TSR_OK) goto fail;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    c->oversubscribed = cpus > 0 && c->local_size > cpus;
    *out = c;
    return TSR_OK;
fail:
    c->finalize_mpi = 0; /* the caller finalises what it initialised */
    tsr_comm_free_mpi(c);
    return s;
}

tsr_status tsr_comm_wrap_mpi(tsr_context *ctx, MPI_Comm mc, int finalize_mpi, int with_node,
                             tsr_comm **out) {
    return wrap(ctx, mc, finalize_mpi, with_node ? KIND_FULL : KIND_NODE, out);
}

tsr_status tsr_comm_mpi_poll(tsr_comm *comm, MPI_Request *rq, const char *what) {
    double deadline = comm->timeout_s > 0 ? tsr_comm_now() + comm->timeout_s : 0;
    double since = 0;
    for (unsigned spins = 0;; spins++) {
        int flag = 0;
        int rc = MPI_Test(rq, &flag, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(comm->ctx, rc, what);
        if (flag) return TSR_OK;
        tsr_comm_pause(comm, spins, &since);
        if (deadline > 0 && (spins & 255) == 255 && tsr_comm_now() > deadline)
            return tsr_comm_peer_lost(comm, what); /* the request is abandoned, not waited */
    }
}

tsr_status tsr_comm_mpi_allgatherv(tsr_comm *comm, const void *send, void *recv,
                                   const size_t *bytes) {
    int n = comm->size;
    int *cnt = tsr_malloc(comm->ctx, 2 * (size_t)n * sizeof *cnt);
    if (!cnt) return tsr_error(comm->ctx, TSR_ERR_NO_MEMORY, "allgatherv: counts");
    int *disp = cnt + n;
    size_t off = 0;
    for (int r = 0; r < n; r++) {
        if (bytes[r] > INT_MAX || off > INT_MAX) {
            tsr_free(comm->ctx, cnt);
            return tsr_error(comm->ctx, TSR_ERR_UNSUPPORTED,
                             "allgatherv: %zu bytes from rank %d exceed MPI's int counts", bytes[r], r);
        }
        cnt[r] = (int)bytes[r];
        disp[r] = (int)off;
        off += bytes[r];
    }
    MPI_Request rq;
    char dummy = 0;
    int rc = MPI_Iallgatherv(send ? send : &dummy, cnt[comm->rank], MPI_BYTE, recv ? recv : &dummy,
                             cnt, disp, MPI_BYTE, comm->mc, &rq);
    tsr_status s = rc != MPI_SUCCESS ? tsr_comm_mpi_error(comm->ctx, rc, "MPI_Iallgatherv")
                                     : tsr_comm_mpi_poll(comm, &rq, "allgatherv");
    tsr_free(comm->ctx, cnt);
    return s;
}

void tsr_comm_free_mpi(tsr_comm *c) {
    if (c->broken) {
        /* A peer is gone: collective teardown (window frees, finalize) would wait for it
         * forever. Free our memory only; the process is expected to exit. */
        tsr_comm_free(c->cross);
        tsr_comm_free(c->node);
        tsr_free(c->ctx, c);
        return;
    }
    tsr_comm_shm_free_all(c);
    tsr_comm_free(c->cross);
    tsr_comm_free(c->node);
    if (c->f16_sum != MPI_OP_NULL) MPI_Op_free(&c->f16_sum);
    if (c->mc != MPI_COMM_NULL) MPI_Comm_free(&c->mc);
    int fin = c->finalize_mpi;
    tsr_free(c->ctx, c);
    if (fin) MPI_Finalize();
}

/* ---- algorithm `mpi` ---- */

tsr_status tsr_comm_mpi_start(tsr_comm_request *r) {
    tsr_comm *c = r->comm;
    r->mreq = MPI_REQUEST_NULL;
    if (r->count > INT_MAX)
        return tsr_error(c->ctx, TSR_ERR_UNSUPPORTED,
                         "allreduce mpi: count %zu exceeds MPI's int counts; use ring or shm",
                         r->count);
    int rc;
    if (r->wire == TSR_WIRE_F16) {
        r->half = tsr_malloc(c->ctx, r->count * sizeof(uint16_t));
        if (!r->half) return tsr_error(c->ctx, TSR_ERR_NO_MEMORY, "allreduce mpi: fp16 staging");
        tsr_comm_to_f16(r->half, r->buf, r->count);
        rc = MPI_Iallreduce(MPI_IN_PLACE, r->half, (int)r->count, MPI_UINT16_T, c->f16_sum, c->mc,
                            &r->mreq);
    } else {
        rc = MPI_Iallreduce(MPI_IN_PLACE, r->buf, (int)r->count, MPI_FLOAT, MPI_SUM, c->mc,
                            &r->mreq);
    }
    if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(c->ctx, rc, "MPI_Iallreduce");
    return TSR_OK;
}

tsr_status tsr_comm_mpi_progress(tsr_comm_request *r) {
    int flag = 0;
    int rc = MPI_Test(&r->mreq, &flag, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(r->comm->ctx, rc, "MPI_Test(Iallreduce)");
    if (!flag) return TSR_OK;
    if (r->half) tsr_comm_from_f16(r->buf, r->half, r->count);
    tsr_comm_scale(r->buf, r->count, r->scale);
    r->done = 1;
    return TSR_OK;
}

void tsr_comm_request_release(tsr_comm_request *r) {
    tsr_context *ctx = r->comm->ctx;
    if (r->comm->broken) { /* waiting on a lost peer would hang: abandon the MPI requests */
        if (r->lanes) {
            tsr_free(ctx, r->lane_mem);
            r->lane_mem = NULL;
            r->lanes = NULL;
        }
        r->inner = NULL; /* still queued on the cross communicator, which frees it */
        tsr_free(ctx, r->half);
        r->half = NULL;
        return;
    }
    if (r->algo == TSR_ALLREDUCE_MPI && !r->done && r->mreq != MPI_REQUEST_NULL) {
        /* An abandoned collective cannot be cancelled: complete it so MPI state stays sane. */
        MPI_Wait(&r->mreq, MPI_STATUS_IGNORE);
    }
    tsr_comm_lanes_release(r);
    if (r->inner) {
        tsr_comm_wait(r->inner);
        r->inner = NULL;
    }
    tsr_free(ctx, r->half);
    r->half = NULL;
}
