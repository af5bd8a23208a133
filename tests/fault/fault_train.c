/* Data-parallel training driver for the fault tests (tests/fault/ scripts): every rank trains the
 * same small MLP on its own synthetic batches, then the ranks average their parameters with
 * tsr_comm_allreduce (model averaging after every step) and each rank checkpoints its own
 * trainer state every --ckpt-every steps. Faults: --die-at S (rank 1 kills itself with SIGKILL
 * before step S), the checkpoint writer dies mid-write (the context's fault_ckpt_kill, which
 * TSR_FAULT_CKPT_KILL sets, set for the save of --ckpt-kill-at S). Losses (mean over ranks)
 * go to --losses FILE as "step %a" lines.
 *   fault_train --steps N --ckpt PREFIX [--ckpt-every K] [--resume] [--die-at S]
 *               [--ckpt-kill-at S --ckpt-kill-bytes B] [--losses FILE]
 *   fault_train --verify PREFIX.rank0   prints the step of a checkpoint (exit 0 if it loads) */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tessera.h"

/* Sanitizer builds: MPICH/UCX keep their MPI_Init allocations (and a rank that lost its peer
 * skips MPI_Finalize), as in tests/mpi. */
const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; }
const char *__lsan_default_suppressions(void) {
    return "leak:libucs\nleak:libuct\nleak:libucp\nleak:libmpich\n";
}

#define IN 64
#define CLASSES 10
#define BATCH 16

static uint64_t mix(uint64_t x) { /* SplitMix64 finaliser */
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* Batch of (step, rank): pixels in [0,1), label = the brightest of the first 10 pixels. */
static void batch(uint64_t step, int rank, float *x, int32_t *y) {
    for (int i = 0; i < BATCH; i++) {
        uint64_t base = (step * 1000003ull + (uint64_t)rank) * BATCH + (uint64_t)i;
        int best = 0;
        for (int k = 0; k < IN; k++) {
            x[i * IN + k] = (float)(mix(base * IN + (uint64_t)k) >> 40) / (float)(1 << 24);
            if (k < CLASSES && x[i * IN + k] > x[i * IN + best]) best = k;
        }
        y[i] = best;
    }
}

static int fail(tsr_context *ctx, int rank, long step, const char *what, tsr_status s) {
    fprintf(stderr, "fault_train rank %d: step %ld: %s: %s (%s)\n", rank, step, what,
            tsr_context_last_error(ctx), tsr_status_str(s));
    return 3;
}

int main(int argc, char **argv) {
    long steps = 20, every = 5, die_at = -1, kill_at = -1;
    const char *prefix = NULL, *losses = NULL, *kill_bytes = "1000", *verify = NULL;
    int resume = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(o, "--resume")) resume = 1;
        else if (!strcmp(o, "--steps")) steps = atol(v), i++;
        else if (!strcmp(o, "--ckpt-every")) every = atol(v), i++;
        else if (!strcmp(o, "--die-at")) die_at = atol(v), i++;
        else if (!strcmp(o, "--ckpt-kill-at")) kill_at = atol(v), i++;
        else if (!strcmp(o, "--ckpt-kill-bytes")) kill_bytes = v, i++;
        else if (!strcmp(o, "--ckpt")) prefix = v, i++;
        else if (!strcmp(o, "--losses")) losses = v, i++;
        else if (!strcmp(o, "--verify")) verify = v, i++;
        else {
            fprintf(stderr, "fault_train: unknown option %s\n", o);
            return 2;
        }
    }
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    tsr_context *ctx;
    tsr_status s = tsr_context_create(&ctx, &co);
    if (s != TSR_OK) return 3;
    if (verify) {
        tsr_checkpoint *ck = NULL;
        s = tsr_checkpoint_load(ctx, verify, &ck);
        if (s == TSR_OK) printf("step %llu\n", (unsigned long long)ck->step);
        else fprintf(stderr, "fault_train: %s\n", tsr_context_last_error(ctx));
        tsr_checkpoint_free(ctx, ck);
        tsr_context_free(ctx);
        return s == TSR_OK ? 0 : 1;
    }
    if (!prefix) return 2;
    tsr_comm *comm = NULL;
    tsr_model *model = NULL;
    tsr_trainer *tr = NULL;
    int rank = 0, rc = 0;
    long step = 0;
    if ((s = tsr_comm_init_world(ctx, &argc, &argv, &comm)) != TSR_OK) {
        rc = fail(ctx, rank, step, "comm", s);
        goto out;
    }
    rank = tsr_comm_rank(comm);
    tsr_model_input in = {1, 8, 8, CLASSES};
    if ((s = tsr_model_parse(ctx, "dense:32,relu,dense:10", in, &model)) != TSR_OK) {
        rc = fail(ctx, rank, step, "model", s);
        goto out;
    }
    tsr_trainer_options to;
    tsr_trainer_options_init(&to);
    to.batch = BATCH;
    to.optimizer.kind = TSR_OPTIM_SGD;
    to.optimizer.lr = 0.1f;
    to.optimizer.momentum = 0.9f;
    if ((s = tsr_trainer_create(ctx, model, &to, &tr)) != TSR_OK) {
        rc = fail(ctx, rank, step, "trainer", s);
        goto out;
    }
    char path[512];
    snprintf(path, sizeof path, "%s.rank%d", prefix, rank);
    if (resume && (s = tsr_trainer_load(tr, path)) != TSR_OK) {
        rc = fail(ctx, rank, step, "resume", s);
        goto out;
    }
    size_t np = tsr_model_param_count(model);
    float *p = malloc((np + 1) * sizeof *p), x[BATCH * IN];
    int32_t y[BATCH];
    FILE *lf = losses && rank == 0 ? fopen(losses, "a") : NULL;
    if (!p || (losses && rank == 0 && !lf)) {
        fprintf(stderr, "fault_train: no memory or cannot open %s\n", losses ? losses : "");
        rc = 3;
        goto out_loop;
    }
    for (step = (long)tsr_trainer_steps(tr) + 1; step <= steps; step++) {
        if (step == die_at && rank == 1) raise(SIGKILL);
        float loss[1];
        batch((uint64_t)step, rank, x, y);
        if ((s = tsr_trainer_step(tr, x, y, BATCH, loss)) != TSR_OK) {
            rc = fail(ctx, rank, step, "step", s);
            break;
        }
        tsr_allreduce_opts ao;
        tsr_allreduce_opts_init(&ao);
        ao.mode = TSR_REDUCE_AVG;
        if ((s = tsr_trainer_get_params(tr, p, np)) != TSR_OK) {
            rc = fail(ctx, rank, step, "get params", s);
            break;
        }
        p[np] = loss[0];
        if ((s = tsr_comm_allreduce(comm, p, np + 1, &ao)) != TSR_OK) {
            rc = fail(ctx, rank, step, "allreduce", s);
            break;
        }
        if ((s = tsr_trainer_set_params(tr, p, np)) != TSR_OK) {
            rc = fail(ctx, rank, step, "set params", s);
            break;
        }
        if (lf) fprintf(lf, "%ld %a\n", step, (double)p[np]), fflush(lf);
        if (every > 0 && step % every == 0) {
            if (step == kill_at && rank == 0)
                tsr_context_set_fault_ckpt_kill(ctx, atoll(kill_bytes));
            if ((s = tsr_trainer_save(tr, path)) != TSR_OK) {
                rc = fail(ctx, rank, step, "checkpoint", s);
                break;
            }
        }
    }
out_loop:
    if (lf) fclose(lf);
    free(p);
out:
    tsr_trainer_free(tr);
    tsr_model_free(model);
    tsr_comm_free(comm);
    tsr_context_free(ctx);
    return rc;
}
