/* Private layout of communicators and requests, shared by the files of lib/comm/. */
#ifndef TSR_COMM_INTERNAL_H
#define TSR_COMM_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include "lib/core/internal.h"
#if TSR_WITH_MPI
#include <mpi.h>
#endif

#define TSR_COMM_ALIGN 16        /* slices start at multiples of 16 floats (64 bytes) */
#define TSR_COMM_MAX_LANES 16    /* pipelined segments in flight per request */
#define TSR_COMM_MAX_ACTIVE 512  /* outstanding requests per communicator (tag space) */

/* What a request does: both phases = allreduce. */
enum { TSR_PHASE_RS = 1, TSR_PHASE_AG = 2, TSR_PHASE_ALL = 3 };

typedef struct tsr_shm tsr_shm;
typedef struct tsr_region tsr_region;
typedef struct tsr_tune_table tsr_tune_table;

struct tsr_comm {
    tsr_context *ctx;
    int rank, size;
    int local_rank, local_size, nodes, uniform; /* uniform: same local_size on every node */
    /* from the context's comm options (tsr_comm_apply_options) */
    tsr_allreduce_algo forced_algo;             /* algo (AUTO: by size and topology) */
    size_t segment_bytes;                       /* ring/rhd segment */
    size_t shm_bytes;                           /* shm scratch per rank */
    unsigned seq;                               /* requests started: tags and shm epochs */
    int oversubscribed;                         /* more ranks on this node than CPUs */
    tsr_comm_request *active;                   /* FIFO of started, unfinished requests */
    int nactive;
    void *self_regions;                         /* self comm: list of tsr_comm_alloc blocks */
    double timeout_s;     /* a wait without completion this long means a peer is lost (0: wait
                             forever) */
    int broken;           /* a peer was lost: teardown skips collective MPI calls */
    tsr_tune_table *tune; /* what auto runs per size (lib/comm/tune.c); NULL: built-in rules */
    int tune_loaded;      /* the table was looked for (its first auto allreduce) */
#if TSR_WITH_MPI
    int is_mpi;
    MPI_Comm mc;          /* our duplicate, MPI_ERRORS_RETURN */
    MPI_Op f16_sum;       /* user op: fp16 sum accumulated in fp32 */
    int finalize_mpi;     /* this communicator initialised MPI and finalises it */
    tsr_comm *node;       /* node-local communicator (NULL for a node comm itself) */
    tsr_comm *cross;      /* ranks with the same local rank on every node (uniform only) */
    tsr_shm *shm;         /* control block + scratch window on the node comm, lazily */
    tsr_region *regions;  /* tsr_comm_alloc buffers (windows on the node comm) */
    uint64_t shm_epoch;   /* shm pieces run on this communicator (same on its node) */
    int64_t region_ids;   /* tsr_comm_alloc calls so far: region ids agree across ranks */
#endif
};

typedef struct tsr_lane tsr_lane;

struct tsr_comm_request {
    tsr_comm *comm;
    tsr_comm_request *next;
    float *buf;
    size_t count;
    tsr_allreduce_algo algo;
    tsr_comm_wire wire;
    int phases;
    float scale;          /* applied once to each element by the rank that finishes it */
    float weight;         /* weighted mode: this rank's factor, applied by shm as it reads
                             each source (1: applied before the start, or none) */
    int done;
    tsr_status status;
    unsigned tag;         /* request number: lane tags and shm ordering */
    size_t seg_bytes;     /* ring/rhd segment; shm piece cap (0: its whole scratch) */
    int max_lanes;        /* ring/rhd lanes cap (0: the algorithm's default) */
#if TSR_WITH_MPI
    /* lane engine (ring, rhd) */
    int nlanes;
    tsr_lane *lanes;
    void *lane_mem;
    /* mpi */
    MPI_Request mreq;
    uint16_t *half;       /* fp16 staging for mpi+F16 */
    /* shm */
    int stage;
    size_t piece, pieces, sub;
    uint64_t epoch;
    int registered;
    int oneshot;          /* small: every rank sums the whole vector from all scratches */
    tsr_comm_request *inner;  /* shm: the inter-node ring of this piece */
#endif
};

/* ---- kernels (kernels.c): plain loops written so gcc vectorises them ---- */
void tsr_comm_add(float *restrict y, const float *restrict x, size_t n);    /* y += x */
void tsr_comm_scale(float *x, size_t n, float a);                           /* x *= a */
void tsr_comm_copy(float *restrict dst, const float *restrict src, size_t n); /* no overlap */
void tsr_comm_to_f16(uint16_t *restrict h, const float *restrict x, size_t n);
void tsr_comm_from_f16(float *restrict x, const uint16_t *restrict h, size_t n);
void tsr_comm_add_f16(float *restrict y, const uint16_t *restrict h, size_t n); /* y += f32(h) */
void tsr_comm_round_f16(float *x, size_t n);                                /* x = f32(f16(x)) */
/* y = sum of src[0..nsrc) where src[0] == y (y's own contribution) and the other sources do
 * not overlap y, each times w[p] first when w is not NULL (the bits of scaling every source
 * before the sum); then y *= scale unless scale == 1; then, if mirror is not NULL, mirror = y,
 * with streaming stores when `stream` (as tsr_comm_copy). Blocked so y stays in L1 between the
 * passes. */
void tsr_comm_reduce_into(float *y, const float *const *src, const float *w, int nsrc, size_t n,
                          float scale, float *mirror, int stream);

/* Balanced split of `len` into `parts`: element offset and length of part i. */
static inline void tsr_comm_split_range(size_t len, size_t parts, size_t i, size_t *off,
                                        size_t *n) {
    size_t q = len / parts, r = len % parts;
    *off = q * i + (i < r ? i : r);
    *n = q + (i < r ? 1 : 0);
}

/* ---- MPI side (comm_mpi.c, ring_mpi.c, shm_mpi.c) ---- */
#if TSR_WITH_MPI
tsr_status tsr_comm_mpi_error(tsr_context *ctx, int rc, const char *what);
/* 1 when rc says a process failed (MPICH's MPIX_ERR_PROC_FAILED, _PENDING, MPIX_ERR_REVOKED),
 * with MPI's text for it in msg. */
int tsr_comm_mpi_proc_failed(int rc, char *msg, size_t size);
/* Creates the tsr_comm around a duplicate of `mc` (node view included). */
tsr_status tsr_comm_wrap_mpi(tsr_context *ctx, MPI_Comm mc, int finalize_mpi, int with_node,
                             tsr_comm **out);
void tsr_comm_free_mpi(tsr_comm *comm);

tsr_status tsr_comm_mpi_start(tsr_comm_request *req);
tsr_status tsr_comm_mpi_progress(tsr_comm_request *req);
tsr_status tsr_comm_lanes_start(tsr_comm_request *req);
tsr_status tsr_comm_lanes_progress(tsr_comm_request *req);
tsr_status tsr_comm_shm_start(tsr_comm_request *req);
tsr_status tsr_comm_shm_progress(tsr_comm_request *req);
void tsr_comm_lanes_release(tsr_comm_request *req);
void tsr_comm_request_release(tsr_comm_request *req); /* frees algorithm state, not req */

tsr_status tsr_comm_shm_alloc(tsr_comm *comm, size_t bytes, void **out);
tsr_status tsr_comm_shm_free_mem(tsr_comm *comm, void *ptr);
int tsr_comm_shm_is_registered(const tsr_comm *comm, const void *ptr, size_t bytes);
void tsr_comm_shm_free_all(tsr_comm *comm);
#endif

/* What auto runs where no tuning table covers the size (rules measured once, by hand). */
tsr_allreduce_algo tsr_comm_builtin_algo(const tsr_comm *comm, size_t count);

/* Copies the knobs of c->ctx's comm options into c (the defaults without a context). */
void tsr_comm_apply_options(tsr_comm *comm);

/* Builds a request for `phases` on buf (shared by allreduce, reduce-scatter, allgather) and
 * runs it to completion when `out` is NULL. scale >= 0 replaces the scale of opts->mode (the
 * hierarchical shm passes its own to the inter-node ring). */
tsr_status tsr_comm_run(tsr_comm *comm, float *buf, size_t count, const tsr_allreduce_opts *opts,
                        int phases, float scale, tsr_comm_request **out);

/* Monotonic seconds. */
double tsr_comm_now(void);
/* Between the polls of a wait (spins: polls so far, *since: 0 before the first): spins while
 * the peer is likely running, yields the CPU once the wait has lasted TSR_COMM_SPIN_S or
 * at once when this node has more ranks than CPUs. On a machine shared with other jobs a
 * peer that is not running leaves a spinning rank burning the time slices its own progress
 * (and, where the scheduler moves tasks, the peer's) needs. */
#define TSR_COMM_SPIN_S 100e-6
void tsr_comm_pause(const tsr_comm *comm, unsigned spins, double *since);
/* Rank `rank` of c in MPI_COMM_WORLD's numbers (error messages name these). */
int tsr_comm_world_rank(const tsr_comm *c, int rank);
/* Marks comm (and its node/cross parts) broken and returns TSR_ERR_PEER_LOST with a detail
 * naming the lost rank where it is known (two ranks) and what was waiting. */
tsr_status tsr_comm_peer_lost(tsr_comm *comm, const char *what);
/* The same when MPI itself reported the failure (its error string in mpi_says). */
tsr_status tsr_comm_peer_failed(tsr_comm *comm, const char *what, const char *mpi_says);
/* Marks comm (and its node/cross parts) broken without an error: a caller that learnt of a
 * lost rank by its own means (an async server dropping a worker) keeps teardown from waiting
 * for it (collective frees, MPI_Finalize's barrier). */
void tsr_comm_mark_broken(tsr_comm *comm);
#if TSR_WITH_MPI
/* Waits for a non-blocking MPI operation with the communicator's deadline. */
tsr_status tsr_comm_mpi_poll(tsr_comm *comm, MPI_Request *rq, const char *what);
/* MPI_Iallgatherv of bytes (tsr_comm_allgatherv). */
tsr_status tsr_comm_mpi_allgatherv(tsr_comm *comm, const void *send, void *recv,
                                   const size_t *bytes);
#endif
#endif

