/* Allreduce tuning table (lib/comm/tune.c): what `auto` runs per message size, measured on
 * this machine by tsr_comm_tune and cached as JSON in the context's cache folder, one file per
 * key (MPI library, ranks, ranks per node, nodes, host, CPU model), as MPICH's JSON tuning
 * files and NCCL's tuner plugins do. Without a table `auto` uses the built-in rules. */
#ifndef TSR_COMM_TUNE_H
#define TSR_COMM_TUNE_H
#include "lib/comm/comm_internal.h"

#define TSR_TUNE_MIN_LOG2 12  /* 4 KiB */
#define TSR_TUNE_MAX_LOG2 28  /* 256 MiB */
#define TSR_TUNE_BUCKETS (TSR_TUNE_MAX_LOG2 - TSR_TUNE_MIN_LOG2 + 1)

typedef struct tsr_tune_entry {
    int valid;                /* measured; otherwise the built-in rule applies */
    int algo;                 /* tsr_allreduce_algo, never AUTO */
    int lanes;                /* ring/rhd lane cap (0: the algorithm's default) */
    int pad;
    uint64_t segment_bytes;   /* ring/rhd segment, shm piece (0: the communicator's) */
    double busbw;             /* GB/s measured for the winner */
    double mpi_busbw;         /* GB/s of MPI_Allreduce in the same run */
} tsr_tune_entry;

/* Plain data: broadcast as bytes from rank 0 so every rank holds the same table. */
struct tsr_tune_table {
    tsr_tune_entry e[2][TSR_TUNE_BUCKETS]; /* [0] private, [1] registered buffers */
};

/* Bucket of a message: floor(log2(bytes)) clamped to 4 KiB .. 256 MiB. */
int tsr_tune_bucket(size_t bytes);

/* Loads the table of comm's key once (collective on first call: rank 0 reads, broadcasts).
 * A missing file leaves the built-in rules; a corrupt or foreign file is warned about and
 * measured again (quick). Errors only for MPI failures. */
tsr_status tsr_tune_ensure(tsr_comm *comm);
#endif
