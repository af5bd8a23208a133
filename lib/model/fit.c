/* Memory fit of a training stage: the stage's memory plan against the device and the host. */
#include "lib/model/fit.h"
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"

uint64_t tsr_host_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
    fclose(f);
    return (uint64_t)kib * 1024;
}

/* "1.5 GiB" */
static const char *human(uint64_t b, char *buf, size_t n) {
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)b;
    int u = 0;
    while (x >= 1024 && u < 4) x /= 1024, u++;
    snprintf(buf, n, u ? "%.1f %s" : "%.0f %s", x, unit[u]);
    return buf;
}

tsr_status tsr_stage_check_fit(tsr_context *ctx, const tsr_model *model, const tsr_stage_options *o,
                               const tsr_device_info *dev, size_t optimizer_slots, size_t act_sets,
                               tsr_fit *fit) {
    tsr_fit f;
    memset(&f, 0, sizeof f);
    if (fit) *fit = f;
    if (!model || !o || !dev)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_stage_check_fit: NULL argument");
    tsr_stage_memory m;
    TSR_TRY(tsr_stage_plan_memory(ctx, model, o, &m));
    f.params = m.param_bytes;
    f.grads = m.param_bytes;
    f.optimizer = (uint64_t)m.param_bytes * optimizer_slots;
    f.activations = ((uint64_t)m.act_set_bytes * (act_sets ? act_sets : 1)) +
                    (uint64_t)m.grad_buffers * m.grad_buffer_bytes +
                    (uint64_t)m.staging_bytes + /* 16-bit storage: one call's float32 copies */
                    (o->precision != TSR_PRECISION_FP32 ? m.round_bytes : 0); /* 16-bit operands */
    f.device_total = f.params + f.grads + f.optimizer + f.activations;
    int host_memory = dev->backend == TSR_BACKEND_HOST || dev->kind == TSR_DEVICE_CPU;
    size_t classes = tsr_model_get_input(model).classes;
    /* the trainer's host copies: gradients for the non-finite scan (the host backend's are
     * scanned in place), evaluation probabilities */
    f.host_total = (host_memory ? f.device_total : 0) +
                   (dev->backend == TSR_BACKEND_HOST ? 0 : m.param_bytes) +
                   (uint64_t)o->max_batch * classes * sizeof(float);
    f.device_limit = host_memory ? 0 : dev->global_mem_bytes;
    f.host_limit = tsr_host_available_bytes();
    if (host_memory && dev->global_mem_bytes && (!f.host_limit || dev->global_mem_bytes < f.host_limit))
        f.host_limit = dev->global_mem_bytes; /* a device's own limit on host memory (PoCL) */
    if (fit) *fit = f;
    char p[32], g[32], s[32], a[32], c[32], need[32], have[32];
    const char *advice = "use a smaller model or batch, a device with more memory, SGD instead of "
                         "Adam (one state tensor instead of two), or split the model over devices "
                         "(--mode pipeline)";
    if (f.device_limit && f.device_total > f.device_limit)
        return tsr_error(ctx, TSR_ERR_DEVICE_MEMORY,
                         "model does not fit device %s (%s): it needs %s (%llu bytes: parameters %s, "
                         "gradients %s, optimizer state %s, activations and workspace %s at batch %zu), "
                         "the device has %s: %s", dev->id, dev->name,
                         human(f.device_total, need, sizeof need), (unsigned long long)f.device_total,
                         human(f.params, p, sizeof p), human(f.grads, g, sizeof g),
                         human(f.optimizer, s, sizeof s), human(f.activations, a, sizeof a),
                         o->max_batch, human(f.device_limit, have, sizeof have), advice);
    if (f.host_limit && f.host_total > f.host_limit)
        /* the device's own footprint on host memory is the device's memory; host copies alone
         * are the host's */
        return tsr_error(ctx, host_memory && f.device_total > f.host_limit ? TSR_ERR_DEVICE_MEMORY
                                                                           : TSR_ERR_NO_MEMORY,
                         "model does not fit the host's memory for device %s: it needs %s (%llu bytes: "
                         "parameters %s, gradients %s, optimizer state %s, activations and workspace "
                         "%s at batch %zu, host copies %s), %s is available: %s", dev->id,
                         human(f.host_total, need, sizeof need), (unsigned long long)f.host_total,
                         human(f.params, p, sizeof p),
                         human(f.grads, g, sizeof g), human(f.optimizer, s, sizeof s),
                         human(f.activations, a, sizeof a), o->max_batch,
                         human(f.host_total - (host_memory ? f.device_total : 0), c, sizeof c),
                         human(f.host_limit, have, sizeof have), advice);
    return TSR_OK;
}
