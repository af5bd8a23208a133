/* Gossip averaging: decentralised parallel SGD (D-PSGD, Lian et al. 2017) over the ranks of the
 * trainer options' communicator. Every rank keeps its own replica x_i of the whole model, takes
 * optimizer steps on its OWN batches, and mixes parameters with its graph neighbours through a
 * doubly stochastic matrix W (no allreduce in a step):
 *
 *     x_i(t+1) = sum_j W_ij(t) x_j(t)  -  optimizer step with the gradient at x_i(t)
 *
 * Overlap: after the update of step t the rank copies its parameters to a host buffer and starts
 * non-blocking sends to its out-neighbours and receives from its in-neighbours; step t+1 runs
 * forward and backward while they travel and completes them just before it mixes.
 *
 * Graphs (n ranks; n = 1 or no communicator: no messages, the single-process trainer):
 *  - RING: x_i <- (x_{i-1} + x_i + x_{i+1}) / 3 (n = 2: one message, the neighbour counts twice, W =
 *    [[1/3, 2/3], [2/3, 1/3]]). Symmetric; eigenvalues 1/3 + 2/3 cos(2 pi k / n).
 *  - EXPONENTIAL (time-varying, one peer per mixing, SGP's one-peer exponential graph): at mixing
 *    m, with K = ceil(log2 n) and h = 2^(m mod K), rank i sends to i + h and receives from i - h
 *    (mod n), x_i <- (x_i + x_{i-h}) / 2. W = (I + shift^h) / 2 is doubly stochastic; for n a
 *    power of two, K consecutive mixings give the exact average.
 * Mixing happens at every `period`-th call of step (rounds counted per call, skipped steps
 * included, so that every rank keeps the same schedule).
 *
 * Non-finite values (the trainer's policy, decided LOCALLY: a collective per step is what gossip
 * avoids): a rank whose loss or gradients are not finite never applies them. SKIP: it still takes
 * part in the mixing (its parameters stay finite, so it never sends poisoned values), counts the
 * step in skipped and returns TSR_OK. STOP: it completes this step's exchange without the update
 * and returns TSR_ERR_NUMERIC; its neighbours learn of it when its next messages do not come
 * (TSR_ERR_PEER_LOST after TSR_COMM_TIMEOUT) unless the application ends them first.
 *
 * A dead neighbour: the wait for its message ends with TSR_ERR_PEER_LOST within TSR_COMM_TIMEOUT
 * (lib/comm/p2p.c); the communicator is then broken and tsr_gossip_free does nothing collective. */
#ifndef TSR_GOSSIP_H
#define TSR_GOSSIP_H
#include <stddef.h>
#include <stdint.h>
#include "tessera.h"

typedef struct tsr_gossip_options {
    tsr_gossip_graph graph;
    size_t period;      /* mix at every period-th step (1 = every step; 1..1000000); 0: 1 */
    int eval_local;     /* tsr_gossip_evaluate: 0 = the AVERAGE of the replicas (collective, one
                           allreduce of the parameters; default), 1 = this rank's own replica */
} tsr_gossip_options;

typedef struct tsr_gossip tsr_gossip;


/* Collective: every rank creates its replica (device o->device), initialised from o->seed as
 * tsr_trainer_create does (identical replicas). Options gossip does not do (gradient compression,
 * a sharded optimizer) and bad gossip options are refused naming them; all ranks fail alike. */
tsr_status tsr_gossip_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                             const tsr_gossip_options *go, tsr_gossip **out);
/* Completes or cancels the exchange in flight; collective only for the timeline flush (skipped
 * on a broken communicator). Accepts NULL. */
void tsr_gossip_free(tsr_gossip *g);

/* One step on this rank's own n (0..batch) samples; every rank calls it the same number of times
 * (a rank with no sample, n = 0, only mixes). *loss (may be NULL): this rank's mean loss. */
tsr_status tsr_gossip_step(tsr_gossip *g, const float *images, const int32_t *labels, size_t n,
                           float *loss);

/* Accuracy and mean loss over a data set (no dropout), of the average of the replicas
 * (collective) or of this rank's replica (eval_local), see tsr_gossip_options. Outputs may be
 * NULL. tsr_gossip_evaluate_local always evaluates the own replica (not collective). */
tsr_status tsr_gossip_evaluate(tsr_gossip *g, const tsr_dataset *d, double *accuracy, double *loss);
tsr_status tsr_gossip_evaluate_local(tsr_gossip *g, const tsr_dataset *d, double *accuracy,
                                     double *loss);

/* Consensus distance: mean over ranks of ||x_i - x_mean||^2 / ||x_mean||^2 (0 when x_mean = 0
 * and the replicas agree). Collective: one allreduce of the parameters and one of a float, so
 * ask for it every K steps or at evaluation, not every step. Same value on every rank. */
tsr_status tsr_gossip_consensus(tsr_gossip *g, double *distance);

/* This rank's replica (tsr_trainer_get_params's layout, count = tsr_model_param_count); local.
 * set_params writes this rank's replica only (after completing the exchange in flight). */
tsr_status tsr_gossip_get_params(tsr_gossip *g, float *dst, size_t count);
tsr_status tsr_gossip_set_params(tsr_gossip *g, const float *src, size_t count);
/* The average of the replicas into dst on every rank (collective). */
tsr_status tsr_gossip_average_params(tsr_gossip *g, float *dst, size_t count);

/* Checkpoints in tsr_trainer_save's format. Save (collective): the AVERAGE of the replicas'
 * parameters and optimizer state, written by rank 0; every rank returns rank 0's result. Load
 * (collective): every rank reads `path` and sets its replica (and optimizer state), so all
 * replicas restart identical; refused on every rank if any rank refuses (nothing changes then).
 * A single-process trainer's checkpoint loads here and the other way round. */
tsr_status tsr_gossip_save(tsr_gossip *g, const char *path);
tsr_status tsr_gossip_load(tsr_gossip *g, const char *path);

uint64_t tsr_gossip_steps(const tsr_gossip *g);    /* optimizer steps this rank applied */
uint64_t tsr_gossip_skipped(const tsr_gossip *g);  /* steps this rank skipped (non-finite) */
uint64_t tsr_gossip_rounds(const tsr_gossip *g);   /* calls of step (same on every rank) */
uint64_t tsr_gossip_mixes(const tsr_gossip *g);    /* mixings done */
uint64_t tsr_gossip_epoch(const tsr_gossip *g);
uint64_t tsr_gossip_seed(const tsr_gossip *g);     /* after a load: the checkpoint's */
void tsr_gossip_set_epoch(tsr_gossip *g, uint64_t epoch);
float tsr_gossip_last_loss(const tsr_gossip *g);
/* Bytes this rank sent to neighbours since creation. */
uint64_t tsr_gossip_bytes_sent(const tsr_gossip *g);

#endif
