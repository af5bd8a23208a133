/* Communication: communicators and allreduce over MPICH (a "self" communicator without MPI).
 *
 * A tsr_comm wraps a duplicate of an MPI communicator (errors return, never abort) or, in
 * builds without MPI and for single-process runs, the self communicator of one rank. Every
 * collective below must be called by all ranks of the communicator in the same order.
 *
 * Allreduce works in place on float32 buffers of any length (0 included) on any rank count.
 * Algorithms (tsr_comm_options.algo, TSR_ALLREDUCE=auto|ring|rhd|shm|mpi, overrides the
 * automatic choice):
 *   mpi   MPI_Allreduce / MPI_Iallreduce;
 *   ring  reduce-scatter + allgather around a ring, each chunk cut into segments that travel
 *         as independent pipelined rings with MPI_Isend/MPI_Irecv (Baidu's design);
 *   rhd   recursive halving (reduce-scatter) + recursive doubling (allgather), Rabenseifner,
 *         with the fold of the extra ranks for non-powers of two;
 *   shm   through node-local shared memory (MPI_Win_allocate_shared): each local rank reduces
 *         its slice reading its peers' buffers, the others copy the result out; across nodes
 *         a ring per slice joins the ranks of the same local rank (hierarchical).
 * Buffers from tsr_comm_alloc live in the node's shared memory: shm then reads them in place
 * without a copy, which is what makes it fast; other buffers are copied in first.
 *
 * The result is bitwise identical on every rank (each element is reduced by one rank and then
 * copied), so replicated parameters stay identical. */
#ifndef TESSERA_COMM_H
#define TESSERA_COMM_H
#include <stddef.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* context.h embeds tsr_comm_options, so this header only names the context (the same typedef
 * as there, which C11 allows twice). */
typedef struct tsr_context tsr_context;
typedef struct tsr_comm tsr_comm;
typedef struct tsr_comm_request tsr_comm_request;

typedef enum tsr_allreduce_algo {
    TSR_ALLREDUCE_AUTO = 0, /* by size and topology */
    TSR_ALLREDUCE_MPI = 1,
    TSR_ALLREDUCE_RING = 2,
    TSR_ALLREDUCE_RHD = 3,
    TSR_ALLREDUCE_SHM = 4
} tsr_allreduce_algo;

/* Element type of what crosses between processes. F16: values are sent as IEEE half and
 * accumulated in float32 at every hop; the result has half precision (it is rounded once by
 * the rank that owns it). Within a node, shm moves float32 through shared memory (nothing to
 * compress); only its inter-node ring uses F16. */
typedef enum tsr_comm_wire { TSR_WIRE_F32 = 0, TSR_WIRE_F16 = 1 } tsr_comm_wire;

typedef enum tsr_reduce_mode {
    TSR_REDUCE_SUM = 0,
    TSR_REDUCE_AVG = 1,      /* sum / ranks */
    TSR_REDUCE_WEIGHTED = 2  /* sum(weight_r * x_r) / sum(weight_r), e.g. weight = sample count */
} tsr_reduce_mode;

typedef struct tsr_allreduce_opts {
    tsr_allreduce_algo algo;
    tsr_comm_wire wire;
    tsr_reduce_mode mode;
    double weight;         /* WEIGHTED: this rank's weight (>= 0) */
    double total_weight;   /* WEIGHTED: sum of all weights if known (> 0), else 0: one extra
                              small allreduce computes it */
    size_t segment_bytes;  /* ring/rhd segment, shm piece: 0 (the tuning table's or the
                              communicator's) or 4096 .. 1 GiB */
    int lanes;             /* ring/rhd segments in flight: 0 (table or default) or 1 .. 16 */
} tsr_allreduce_opts;

/* Communicator knobs, part of tsr_context_options (.comm): every communicator created from
 * that context uses them. Environment variables in brackets (lib/core/config.c). */
typedef struct tsr_comm_options {
    tsr_allreduce_algo algo; /* AUTO: by size and topology [TSR_ALLREDUCE] */
    size_t segment_bytes;    /* ring/rhd pipeline segment, >= 4096; 256 KiB
                                [TSR_ALLREDUCE_SEGMENT] */
    size_t shm_bytes;        /* shm scratch per rank, >= 64 KiB; 16 MiB [TSR_SHM_BYTES] */
    double timeout_s;        /* a wait without progress this long means a peer is lost; 0: no
                                limit; 300 [TSR_COMM_TIMEOUT] */
} tsr_comm_options;

/* The defaults above: AUTO, 256 KiB, 16 MiB, 300 s. */
void tsr_comm_options_init(tsr_comm_options *opts);

/* algo AUTO, wire F32, mode SUM, weight 1, total_weight 0. */
void tsr_allreduce_opts_init(tsr_allreduce_opts *opts);

/* "auto" "mpi" "ring" "rhd" "shm"; "?" for an unknown value. */
const char *tsr_allreduce_algo_name(tsr_allreduce_algo algo);
/* Parses one of the names above; TSR_ERR_PARSE for anything else. */
tsr_status tsr_allreduce_algo_parse(const char *text, tsr_allreduce_algo *out);

/* ---- communicators ---- */

/* One rank, no MPI involved: works in every build, before or without MPI_Init. */
tsr_status tsr_comm_self_create(tsr_context *ctx, tsr_comm **out);
/* The world communicator. Initialises MPI (MPI_Init_thread, FUNNELED) when nobody has yet, and
 * then finalises it in tsr_comm_free; argc/argv may be NULL. Sets the context's rank for log
 * lines. Without MPI (WITH_MPI=0) this gives the self communicator. */
tsr_status tsr_comm_init_world(tsr_context *ctx, int *argc, char ***argv, tsr_comm **out);
/* Ranks with the same color form a new communicator, ordered by key then rank (MPI_Comm_split).
 * color must be >= 0. Collective. */
tsr_status tsr_comm_split(tsr_comm *comm, int color, int key, tsr_comm **out);
/* The ranks of `comm` that share this node's memory (MPI_COMM_TYPE_SHARED). Collective. */
tsr_status tsr_comm_split_node(tsr_comm *comm, tsr_comm **out);
/* Accepts NULL. Collective for MPI communicators (frees shared windows). Wait for its requests
 * first. A world communicator that initialised MPI finalises it: free it last. */
void tsr_comm_free(tsr_comm *comm);

int tsr_comm_rank(const tsr_comm *comm);
int tsr_comm_size(const tsr_comm *comm);
/* Node view (known after creation): rank within the node, ranks on this node, node count, and
 * whether every node has the same number of ranks (needed by the hierarchical shm). */
int tsr_comm_local_rank(const tsr_comm *comm);
int tsr_comm_local_size(const tsr_comm *comm);
int tsr_comm_node_count(const tsr_comm *comm);
tsr_status tsr_comm_barrier(tsr_comm *comm);

/* ---- registered buffers ---- */

/* Allocates `bytes` (64-byte aligned) in the node's shared memory so that shm reads the buffer
 * in place. Collective: every rank calls it, sizes may differ. bytes may be 0 (gives a valid
 * unique pointer). */
tsr_status tsr_comm_alloc(tsr_comm *comm, size_t bytes, void **out);
/* Frees a buffer from tsr_comm_alloc; collective, in the same order on every rank. NULL is a
 * local no-op (pass NULL on every rank or on none). */
tsr_status tsr_comm_free_mem(tsr_comm *comm, void *ptr);
/* 1 if [ptr, ptr+bytes) lies in a buffer of tsr_comm_alloc on this communicator. */
int tsr_comm_is_registered(const tsr_comm *comm, const void *ptr, size_t bytes);

/* ---- allreduce ---- */

/* buf[0..count) = reduction over ranks, in place. opts may be NULL (defaults). */
tsr_status tsr_comm_allreduce(tsr_comm *comm, float *buf, size_t count,
                              const tsr_allreduce_opts *opts);
/* Non-blocking: starts the allreduce; the buffer must not be touched until it completes.
 * Progress happens inside tsr_comm_test / tsr_comm_wait (on any request of the communicator:
 * waiting on one progresses the earlier ones too). Requests may overlap (fusion buckets). */
tsr_status tsr_comm_allreduce_start(tsr_comm *comm, float *buf, size_t count,
                                    const tsr_allreduce_opts *opts, tsr_comm_request **out);
/* *done = 1 once complete (the request still needs tsr_comm_wait to be freed). */
tsr_status tsr_comm_test(tsr_comm_request *req, int *done);
/* Completes and frees the request (NULL: no-op); returns the operation's status. */
tsr_status tsr_comm_wait(tsr_comm_request *req);

/* The algorithm `auto` takes for `count` floats in private buffers on this communicator
 * (after the context's comm.algo); tsr_comm_auto_choice().algo. */
tsr_allreduce_algo tsr_comm_choose_algo(const tsr_comm *comm, size_t count);

/* ---- tuning (lib/comm/tune.c) ----
 * `auto` follows a table measured on this machine when there is one: per message size (powers
 * of two, 4 KiB .. 256 MiB) and per buffer kind (private, registered) the algorithm, segment
 * bytes and lane count that measured fastest, with the busbw measured for them and for
 * MPI_Allreduce. The table lives in the context's cache folder (TSR_CACHE_DIR) as
 * allreduce-<hash>.json, keyed by the MPI library version, ranks, ranks per node, nodes, host
 * name and CPU model; tsr-allreduce-bench --tune writes it. A communicator reads it at its
 * first `auto` allreduce (collective: rank 0 reads, broadcasts, so every rank picks alike).
 * With no table `auto` uses built-in rules: nothing is measured unasked, as a measurement at
 * start-up would busy every core in a job that did not ask for it. A table that is there but
 * cannot be used (corrupt, another key's, unreadable) says tuning was asked for on this key:
 * it is logged as a warning and measured again at once (the quick measurement, 4 KiB .. 1 MiB,
 * about a second on 2 ranks; larger sizes follow the built-in rules until --tune), unless an
 * allreduce of this communicator is in flight on some rank (then the built-in rules).
 * `auto` with a registered buffer on some ranks and a private one on others may pick different
 * algorithms per rank: register on every rank or on none (tessera's own users do). */
typedef struct tsr_allreduce_choice {
    tsr_allreduce_algo algo;
    size_t segment_bytes;   /* 0: the communicator's (TSR_ALLREDUCE_SEGMENT; shm: its scratch) */
    int lanes;              /* 0: the algorithm's default cap */
    int tuned;              /* 1: from the tuning table */
    double busbw_GBps;      /* tuned: busbw measured for this choice */
    double mpi_busbw_GBps;  /* tuned: busbw of MPI_Allreduce in the same measurement */
} tsr_allreduce_choice;
/* What `auto` runs for `count` floats in a private (registered 0) or registered buffer. Local:
 * reflects the table once the communicator has loaded it (tsr_comm_tune_load). */
tsr_allreduce_choice tsr_comm_auto_choice(const tsr_comm *comm, size_t count, int registered);
/* Collective: loads the tuning table of this communicator's key now (otherwise the first `auto`
 * allreduce does). A missing, corrupt or foreign table is not an error (see above: the last
 * two are measured again); an MPI failure of the loading or of that measurement is. */
tsr_status tsr_comm_tune_load(tsr_comm *comm);
/* Collective: measures every candidate (mpi; shm with several piece sizes; ring and rhd with
 * several segment sizes and lane counts) at each power of two from 4 KiB to max_bytes (0: 256
 * MiB) in private and registered buffers, candidates taking turns call by call; keeps per size
 * the fastest whose results were exact, writes the table atomically (rank 0) and installs it on
 * comm. quick: fewer candidates, sizes 4 KiB .. min(max_bytes, 1 MiB) by 4x, fewer calls. Needs
 * an MPI communicator of more than one rank. */
tsr_status tsr_comm_tune(tsr_comm *comm, int quick, size_t max_bytes);
/* The table's file for this communicator as this rank sees it (rank 0's is the one used). */
tsr_status tsr_comm_tune_path(const tsr_comm *comm, char *buf, size_t size);

/* ---- ZeRO-1 style: reduce-scatter, update your own slice, allgather ---- */

/* The slice [*lo, *hi) of `count` elements that `rank` owns (balanced, 16-element aligned). */
void tsr_comm_slice(const tsr_comm *comm, size_t count, int rank, size_t *lo, size_t *hi);
/* After it, buf[lo, hi) of this rank's slice holds the reduction (sum/avg/weighted as in opts;
 * algo AUTO, SHM (single node) or RING; RHD and MPI run as RING); the rest of buf is undefined. */
tsr_status tsr_comm_reduce_scatter(tsr_comm *comm, float *buf, size_t count,
                                   const tsr_allreduce_opts *opts);
/* In place: every rank's slice of buf is copied to all ranks (float32). algo as above. */
tsr_status tsr_comm_allgather(tsr_comm *comm, float *buf, size_t count, tsr_allreduce_algo algo);

/* ---- variable-size gather ---- */

/* Every rank contributes send[0..bytes[rank]) and receives all contributions concatenated in
 * rank order into recv (sum of bytes[] bytes). bytes[] (one entry per rank) must be the same on
 * every rank (MPI_Allgatherv; used for top-k sparse gradients and timeline gathering). */
tsr_status tsr_comm_allgatherv(tsr_comm *comm, const void *send, void *recv, const size_t *bytes);

/* ---- point to point (pipeline stages; lib/comm/p2p.c) ----
 * Bytes between two ranks of an MPI communicator. Tags are 0..TSR_COMM_P2P_MAX_TAG (they live
 * in their own tag range, apart from the ring allreduce's). A wait that sees no progress for
 * comm.timeout_s seconds (TSR_COMM_TIMEOUT) ends with TSR_ERR_PEER_LOST and marks the
 * communicator broken (as the collectives do); on a broken communicator every call fails at
 * once. The self
 * communicator (builds without MPI) has no peer: these calls return TSR_ERR_UNSUPPORTED.
 * Messages of more than INT_MAX bytes are refused (MPI's int counts). */
#define TSR_COMM_P2P_MAX_TAG 16383
typedef struct tsr_comm_p2p tsr_comm_p2p;

/* Blocking: returns once buf may be reused (send) or holds the message (recv). recv requires
 * a message of exactly `bytes` bytes: a shorter one is TSR_ERR_MISMATCH; a longer one is an MPI
 * truncation error, which MPICH treats as fatal inside MPI_Test (match the sizes). */
tsr_status tsr_comm_send(tsr_comm *comm, int dst, int tag, const void *buf, size_t bytes);
tsr_status tsr_comm_recv(tsr_comm *comm, int src, int tag, void *buf, size_t bytes);
/* Non-blocking: buf must stay untouched until the request completes. */
tsr_status tsr_comm_isend(tsr_comm *comm, int dst, int tag, const void *buf, size_t bytes,
                          tsr_comm_p2p **out);
tsr_status tsr_comm_irecv(tsr_comm *comm, int src, int tag, void *buf, size_t bytes,
                          tsr_comm_p2p **out);
/* *done = 1 once complete (the request still needs tsr_comm_p2p_wait to be freed). */
tsr_status tsr_comm_p2p_test(tsr_comm_p2p *req, int *done);
/* Completes and frees the request (NULL: no-op); the operation's status, or
 * TSR_ERR_PEER_LOST after comm.timeout_s without completion (the request is abandoned). */
tsr_status tsr_comm_p2p_wait(tsr_comm_p2p *req);
/* Error paths: cancels an unfinished request (MPI_Cancel; on a broken communicator it is only
 * abandoned) and frees it. NULL: no-op. An abandoned request's buffer must stay allocated for
 * the rest of the process: MPI may still write a late message into it. */
void tsr_comm_p2p_cancel(tsr_comm_p2p *req);

#ifdef __cplusplus
}
#endif
/* Last: context.h needs tsr_comm_options from above (either header may come first). */
#include "context.h"
#endif
