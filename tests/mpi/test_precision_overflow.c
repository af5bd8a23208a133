/* fp16 training's overflow rule under mpiexec -n 1..4, data mode with and without ZeRO: a
 * batch whose input overflows fp16 on ONE rank (the last) makes every rank skip that step
 * together: parameters bitwise unchanged on every rank, one step skipped, the loss scale halved
 * from 65536 to 32768 everywhere; the next clean step applies on every rank, the ranks'
 * parameters equal. Prints each failure and exits non-zero. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#include "tessera.h"
#include "tests/support/mode_harness.h"
#include "tests/support/mpi_check.h"

static int rank, nranks;
enum { B = 8, F = TSR_MH_FEATURES };

static uint64_t params_hash(const float *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n * sizeof *p; i++) h = (h ^ ((const unsigned char *)p)[i]) * 1099511628211ull;
    return h;
}

static void run(tsr_context *ctx, tsr_comm *comm, const tsr_model *model, int zero) {
    if (zero && nranks < 2) return;
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = B;
    o.comm = nranks > 1 ? comm : NULL;
    o.shard_optimizer = zero;
    o.precision = TSR_PRECISION_FP16;
    o.optimizer.lr = 1e-2f;
    tsr_trainer *t = NULL;
    CHECK_OK(tsr_trainer_create(ctx, model, &o, &t), ctx);
    if (!t) return;
    size_t np = tsr_model_param_count(model);
    float x[B * F], *before = malloc(np * sizeof *before), *after = malloc(np * sizeof *after), loss;
    int32_t y[B];
    for (int i = 0; i < B * F; i++) x[i] = (float)((i * 37 + rank * 11) % 101) / 101.0f - 0.5f;
    for (int i = 0; i < B; i++) y[i] = (i + rank) % TSR_MH_CLASSES;
    CHECK_OK(tsr_trainer_step(t, x, y, B, &loss), ctx);
    CHECK(tsr_trainer_steps(t) == 1 && tsr_trainer_skipped(t) == 0, "zero %d: a clean first step: "
          "%llu steps, %llu skipped", zero, (unsigned long long)tsr_trainer_steps(t),
          (unsigned long long)tsr_trainer_skipped(t));
    CHECK(tsr_trainer_loss_scale(t) == 65536.0f, "zero %d: scale %g after a clean step", zero,
          (double)tsr_trainer_loss_scale(t));
    CHECK_OK(tsr_trainer_get_params(t, before, np), ctx);
    /* the last rank's batch holds a value beyond fp16's range (65504): its GEMM input is Inf */
    float saved = x[5];
    if (rank == nranks - 1) x[5] = 1e6f;
    CHECK_OK(tsr_trainer_step(t, x, y, B, &loss), ctx);
    x[5] = saved;
    CHECK_OK(tsr_trainer_get_params(t, after, np), ctx);
    CHECK(memcmp(before, after, np * sizeof *after) == 0, "zero %d: the overflowing step changed "
          "the parameters", zero);
    CHECK(tsr_trainer_steps(t) == 1 && tsr_trainer_skipped(t) == 1, "zero %d: after the overflow: "
          "%llu steps, %llu skipped (want 1, 1)", zero, (unsigned long long)tsr_trainer_steps(t),
          (unsigned long long)tsr_trainer_skipped(t));
    CHECK(tsr_trainer_loss_scale(t) == 32768.0f, "zero %d: scale %g after the overflow (want 32768)",
          zero, (double)tsr_trainer_loss_scale(t));
    CHECK_OK(tsr_trainer_step(t, x, y, B, &loss), ctx);
    CHECK_OK(tsr_trainer_get_params(t, after, np), ctx);
    CHECK(isfinite(loss) && tsr_trainer_steps(t) == 2 && memcmp(before, after, np * sizeof *after),
          "zero %d: the clean step after it did not apply (loss %g, %llu steps)", zero, (double)loss,
          (unsigned long long)tsr_trainer_steps(t));
    CHECK(tsr_trainer_loss_scale(t) == 32768.0f, "zero %d: scale %g", zero, (double)tsr_trainer_loss_scale(t));
    /* the scale travels in checkpoints: a fresh trainer that loads one continues at 32768 */
    char path[128];
    tsr_mh_shared_path(path, sizeof path, "precision", ".ckpt");
    CHECK_OK(tsr_trainer_save(t, path), ctx);
    MPI_Barrier(MPI_COMM_WORLD);
    tsr_trainer *t2 = NULL;
    CHECK_OK(tsr_trainer_create(ctx, model, &o, &t2), ctx);
    if (t2) {
        CHECK(tsr_trainer_loss_scale(t2) == 65536.0f, "a new fp16 trainer starts at %g",
              (double)tsr_trainer_loss_scale(t2));
        CHECK_OK(tsr_trainer_load(t2, path), ctx);
        CHECK(tsr_trainer_loss_scale(t2) == 32768.0f, "zero %d: loaded scale %g (want 32768)", zero,
              (double)tsr_trainer_loss_scale(t2));
    }
    tsr_trainer_free(t2);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) remove(path);
    uint64_t h = params_hash(after, np), h0 = h;
    MPI_Bcast(&h0, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    CHECK(h == h0, "zero %d: the ranks' parameters differ after the steps", zero);
    free(before);
    free(after);
    tsr_trainer_free(t);
}

int main(int argc, char **argv) {
    tsr_mh_world w;
    tsr_status ws = tsr_mh_world_init(&w, &argc, &argv, TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC);
    rank = mpi_check_rank = w.rank;
    nranks = w.nranks;
    CHECK_OK(ws, w.ctx);
    tsr_model *model = tsr_mh_synthetic_model(w.ctx, "dense:64,relu,dense:32,relu,dense:10");
    CHECK(model, "model: %s", tsr_context_last_error(w.ctx));
    if (w.comm && model) {
        run(w.ctx, w.comm, model, 0);
        run(w.ctx, w.comm, model, 1);
    }
    tsr_model_free(model);
    return tsr_mh_world_end(&w, failures, skips, "test_precision_overflow");
}
