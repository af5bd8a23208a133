/* Asynchronous SGD with a parameter server (Downpour SGD, Dean et al. 2012; Li et al.'s
 * Parameter Server) with a stale-synchronous bound (SSP, Ho et al. 2013).
 *
 * Roles: ranks [0, servers) of the trainer options' communicator are servers, the rest workers.
 * The parameters (one flat vector, the trainer's layout) are split into `servers` contiguous
 * shards (balanced, 16-float aligned); server k holds shard k's optimizer state and applies
 * every pushed gradient of that shard as it arrives. Every rank keeps a full model (stage) for
 * evaluation.
 *
 * A worker's step t: pull (every server's shard and its version), forward + backward on its
 * own batch, push (each gradient shard to its server, with the loss), return. It never waits
 * for other workers except through the staleness bound.
 *
 * Staleness bound s (SSP): a server answers a worker's pull for step t only when every live
 * worker that has not finished has pushed t - s steps (its "clock" >= t - s). s = 0 is
 * synchronous (bulk-synchronous rounds), TSR_ASYNC_UNBOUNDED fully asynchronous. Each applied
 * gradient records two stalenesses (tsr_async_stats): clock staleness = t - (the smallest live
 * clock when its parameters were pulled), which the bound keeps <= s; and update staleness =
 * updates applied to the shard between its pull and its push (the delay of Zhang et al. 2016).
 *
 * Learning rate: the server uses the trainer's schedule at its step count (below) and, with
 * staleness_lr = 1, divides it by max(1, update staleness) (staleness-aware async SGD, Zhang
 * et al. 2016); 0 (default): the plain rate. Adam's bias correction counts the updates applied
 * to the shard. One worker with s = 0 does the arithmetic of the single-process trainer.
 *
 * A server's step: serves pulls and pushes until every live, unfinished worker has pushed one
 * more step than the server has completed (the smallest live clock passes steps + 1), so N
 * steps on every rank means N steps of every worker, as in data mode; *loss is the mean loss
 * of the gradients it applied during the call. Its images are not used (n may be 0). When no
 * worker is left to wait for (all finished) it returns at once; when every worker was lost it
 * fails with TSR_ERR_PEER_LOST.
 *
 * Faults: while a worker waits for a server it sends a ping every TSR_COMM_TIMEOUT / 4 and the
 * server answers it, so both sides hear each other at least that often. A worker silent for
 * TSR_COMM_TIMEOUT is dropped (logged at warn level): the servers and the other workers go on,
 * the bound counts live workers only. Silence counts only while the server serves: the time it
 * spends in its caller (its own evaluation, a checkpoint write) is not held against a worker.
 * Every server header says how many workers that server dropped; tsr_async_free waits for each
 * server's last word, and where a worker was lost it marks the communicator broken on every
 * surviving rank, so that teardown does not wait for the dead rank (MPI_Finalize would). A server silent for TSR_COMM_TIMEOUT ends the worker's
 * call with TSR_ERR_PEER_LOST (the communicator is marked broken). A worker step that computes
 * longer than TSR_COMM_TIMEOUT looks dead: set the timeout above the slowest step.
 *
 * Non-finite loss or gradients: a worker's step is the run core's loop (tsr_run_step), whose one
 * scan of the whole gradient travels with the push; every server decides on it with the
 * trainer's rule: SKIP drops that gradient on every server (tsr_async_skipped: the step is not
 * half applied), STOP fails the server's step with TSR_ERR_NUMERIC and every later pull is
 * answered with that error.
 *
 * Collective points (every rank calls them; workers may be at different steps: the servers
 * serve until every live worker has arrived): tsr_async_get_params, tsr_async_evaluate (pulls
 * the latest parameters everywhere, then evaluates locally: every rank gets the same figures),
 * tsr_async_save (tsr_run_save: rank 0 writes the whole state in the trainer's checkpoint format) and
 * tsr_async_free (workers tell the servers they are done and wait for their answer; a server
 * answers once every worker is done or lost). tsr_async_set_params and tsr_async_load are local (each server takes its
 * shard): call them on every rank before the first step. */
#ifndef TSR_ASYNC_H
#define TSR_ASYNC_H
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include "tessera.h"

#define TSR_ASYNC_UNBOUNDED INT_MAX /* no staleness bound: fully asynchronous */

typedef struct tsr_async_options {
    int servers;       /* server ranks [0, servers); 0: 1 */
    int staleness;     /* SSP bound s >= 0; TSR_ASYNC_UNBOUNDED: none */
    int staleness_lr;  /* 1: lr / max(1, update staleness); 0: plain lr */
} tsr_async_options;

typedef struct tsr_async_stats {
    uint64_t applied;           /* gradients applied by this server (0 on workers) */
    double clock_mean;          /* clock staleness of the applied gradients (<= s) */
    uint64_t clock_max;
    double update_mean;         /* update staleness (updates between pull and push) */
    uint64_t update_max;
    uint64_t workers_lost;      /* workers this server dropped */
    uint64_t wait_s_x1000;      /* worker: milliseconds spent waiting for pulls (SSP + network) */
} tsr_async_stats;

typedef struct tsr_async tsr_async;

/* "inf" | "unbounded" | a number >= 0 -> staleness bound; TSR_ERR_PARSE else. */
tsr_status tsr_async_staleness_parse(const char *text, int *out);

/* Collective. o->comm is required (>= 2 ranks); ao: servers in [1, ranks - 1], staleness >= 0.
 * Parameters are initialised from o->seed as tsr_trainer_create does. */
tsr_status tsr_async_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                            const tsr_async_options *ao, tsr_async **out);
void tsr_async_free(tsr_async *a); /* collective (see above); accepts NULL */

tsr_status tsr_async_step(tsr_async *a, const float *images, const int32_t *labels, size_t n,
                          float *loss);
tsr_status tsr_async_evaluate(tsr_async *a, const tsr_dataset *d, double *accuracy, double *loss);
tsr_status tsr_async_get_params(tsr_async *a, float *dst, size_t count);
tsr_status tsr_async_set_params(tsr_async *a, const float *src, size_t count);
tsr_status tsr_async_save(tsr_async *a, const char *path);
tsr_status tsr_async_load(tsr_async *a, const char *path);

int tsr_async_is_server(const tsr_async *a);
uint64_t tsr_async_steps(const tsr_async *a);   /* worker: steps pushed; server: steps done */
uint64_t tsr_async_skipped(const tsr_async *a); /* server: gradients dropped as non-finite */
uint64_t tsr_async_epoch(const tsr_async *a);
void tsr_async_set_epoch(tsr_async *a, uint64_t epoch);
uint64_t tsr_async_seed(const tsr_async *a);
void tsr_async_stats_get(const tsr_async *a, tsr_async_stats *out);

#endif
