/* How data mode splits a global batch over its ranks: shares in proportion to each rank's
 * measured throughput (tsr_trainer_balance), identical devices sharing one rate. */
#include <math.h>
#include <stdio.h>
#include "backends/host/host.h"
#include "lib/comm/comm_internal.h"
#include "lib/core/internal.h"
#include "lib/train/strategy.h"

tsr_status tsr_dp_shares(tsr_comm *comm, size_t global_batch, double rate, size_t *shares) {
    if (!comm || !shares) return TSR_ERR_INVALID_ARG;
    int size = tsr_comm_size(comm), me = tsr_comm_rank(comm);
    tsr_context *ctx = comm->ctx;
    if (!(rate > 0.0) || !isfinite(rate) || global_batch < (size_t)size)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "tsr_dp_shares: rate %g must be > 0 and the global batch %zu >= %d ranks",
                         rate, global_batch, size);
    float *rates = tsr_calloc(ctx, (size_t)size, sizeof *rates);
    double *frac = tsr_calloc(ctx, (size_t)size, sizeof *frac);
    if (!rates || !frac) {
        tsr_free(ctx, rates);
        tsr_free(ctx, frac);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_dp_shares: %d ranks", size);
    }
    rates[me] = (float)rate;
    tsr_status s = tsr_comm_allreduce(comm, rates, (size_t)size, NULL); /* every rank's rate */
    if (s == TSR_OK) {
        double sum = 0.0;
        for (int r = 0; r < size; r++) sum += rates[r];
        /* one sample each, the rest in proportion to the rates (largest remainder) */
        size_t rest = global_batch - (size_t)size, given = 0;
        for (int r = 0; r < size; r++) {
            double want = (double)rest * rates[r] / sum;
            shares[r] = 1 + (size_t)want;
            frac[r] = want - (double)(size_t)want;
            given += (size_t)want;
        }
        for (; given < rest; given++) {
            int best = 0;
            for (int r = 1; r < size; r++)
                if (frac[r] > frac[best]) best = r;
            shares[best]++;
            frac[best] = -1.0;
        }
    }
    tsr_free(ctx, rates);
    tsr_free(ctx, frac);
    return s;
}

/* FNV-1a over what makes two devices interchangeable for throughput. */
static uint64_t device_class(const tsr_device_info *d) {
    char key[512];
    int threads = d->backend == TSR_BACKEND_HOST ? tsr_host_thread_count(d->compute_units) : 0;
    snprintf(key, sizeof key, "%d|%s|%s|%s|%u|%d", (int)d->backend, d->vendor, d->name,
             d->driver_version, d->compute_units, threads);
    uint64_t h = 1469598103934665603ull;
    for (const char *c = key; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
    return h;
}

tsr_status tsr_data_balance(void *mode, size_t global_batch, const float *images,
                            const int32_t *labels, size_t probe, size_t *shares) {
    tsr_run *r = tsr_strategy_data.run(mode);
    tsr_comm *comm = r->o.comm;
    int size = comm ? tsr_comm_size(comm) : 1;
    if (size == 1) {
        if (!global_batch) return tsr_error(r->ctx, TSR_ERR_INVALID_ARG, "balance: global batch 0");
        shares[0] = global_batch;
        return TSR_OK;
    }
    if (r->o.even_shares) return tsr_dp_shares(comm, global_batch, 1.0, shares);
    double rate = 0.0;
    TSR_TRY(tsr_data_measure(mode, images, labels, probe, &rate));
    /* every rank's (device class, rate) */
    struct { uint64_t cls; double rate; } mine = {device_class(tsr_data_device_info(mode)), rate}, *all;
    all = tsr_calloc(r->ctx, (size_t)size, sizeof *all);
    size_t *bytes = tsr_calloc(r->ctx, (size_t)size, sizeof *bytes);
    tsr_status s = all && bytes ? TSR_OK : tsr_error(r->ctx, TSR_ERR_NO_MEMORY, "balance: %d ranks", size);
    for (int r = 0; s == TSR_OK && r < size; r++) bytes[r] = sizeof mine;
    if (s == TSR_OK) s = tsr_comm_allgatherv(comm, &mine, all, bytes);
    if (s == TSR_OK) {
        /* identical devices take the mean of their rates: timing noise (another process's
         * burst during the probe) must not split a homogeneous cluster unevenly */
        double sum = 0.0;
        int same = 0;
        for (int r = 0; r < size; r++)
            if (all[r].cls == mine.cls) {
                sum += all[r].rate;
                same++;
            }
        s = tsr_dp_shares(comm, global_batch, sum / same, shares);
    }
    tsr_free(r->ctx, all);
    tsr_free(r->ctx, bytes);
    return s;
}

