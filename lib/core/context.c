/* Context lifetime: options (the environment through lib/core/config.c), device discovery. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "internal.h"
#include "topology/topology.h"

static void *default_alloc(void *opaque, size_t size) {
    (void)opaque;
    return malloc(size);
}
static void default_free(void *opaque, void *ptr) {
    (void)opaque;
    free(ptr);
}

void tsr_context_options_init(tsr_context_options *opts) {
    if (!opts) return;
    memset(opts, 0, sizeof *opts);
    opts->log_level = -1;
    opts->fault_ckpt_kill = -1;
    tsr_comm_options_init(&opts->comm);
}

/* The first option set in code out of its bounds, or NULL (the environment's values are
 * checked in lib/core/config.c). */
static const char *invalid_option(const tsr_context_options *o) {
    if (o->log_level < -1 || o->log_level > TSR_LOG_DEBUG) return "log_level (-1..TSR_LOG_DEBUG)";
    if (o->host_threads < 0) return "host_threads (>= 0)";
    if ((unsigned)o->host_sgemm > TSR_HOST_SGEMM_ONEDNN) return "host_sgemm (a tsr_host_sgemm_lib)";
    if (o->fault_ckpt_kill < -1) return "fault_ckpt_kill (>= -1)";
    if ((unsigned)o->comm.algo > TSR_ALLREDUCE_SHM) return "comm.algo (a tsr_allreduce_algo)";
    if (o->comm.segment_bytes < 4096) return "comm.segment_bytes (>= 4096)";
    if (o->comm.shm_bytes < (64u << 10)) return "comm.shm_bytes (>= 65536)";
    if (!(o->comm.timeout_s >= 0)) return "comm.timeout_s (>= 0)";
    return NULL;
}

/* The context keeps its own copy of every string option of `o` (NULL stays NULL). */
static tsr_status copy_strings(tsr_context *ctx, const tsr_context_options *o) {
    const char *const from[] = {o->topology_file, o->data_dir, o->kernel_binary_dir,
                                o->clblast_params};
    const char **to[] = {&ctx->opts.topology_file, &ctx->opts.data_dir,
                         &ctx->opts.kernel_binary_dir, &ctx->opts.clblast_params};
    tsr_status st = TSR_OK;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(to); i++) {
        *to[i] = st == TSR_OK && from[i] ? tsr_strdup(ctx, from[i]) : NULL;
        if (from[i] && !*to[i]) st = TSR_ERR_NO_MEMORY;
    }
    return st;
}

static void free_strings(tsr_context *ctx) {
    tsr_free(ctx, (char *)ctx->opts.topology_file);
    tsr_free(ctx, (char *)ctx->opts.data_dir);
    tsr_free(ctx, (char *)ctx->opts.kernel_binary_dir);
    tsr_free(ctx, (char *)ctx->opts.clblast_params);
}

tsr_status tsr_context_create(tsr_context **out, const tsr_context_options *opts) {
    if (!out) return TSR_ERR_INVALID_ARG;
    *out = NULL;
    tsr_context_options o;
    if (opts) o = *opts;
    else tsr_context_options_init(&o);
    if (o.allocator && (!o.allocator->alloc || !o.allocator->free)) return TSR_ERR_INVALID_ARG;

    tsr_allocator alloc = {default_alloc, default_free, NULL};
    if (o.allocator) alloc = *o.allocator;
    tsr_context *ctx = alloc.alloc(alloc.opaque, sizeof *ctx);
    if (!ctx) return TSR_ERR_NO_MEMORY;
    memset(ctx, 0, sizeof *ctx);
    ctx->alloc = alloc;
    ctx->log_fn = o.log_fn;
    ctx->log_user = o.log_user;
    ctx->log_level = o.log_level >= 0 && o.log_level <= TSR_LOG_DEBUG ? (tsr_log_level)o.log_level
                                                                      : TSR_LOG_WARN;
    ctx->rank = -1;
    /* The environment, read once here: a bad value fails the creation, and the sink the
     * caller chose hears why (there is no context left to ask). */
    char err[512] = "";
    tsr_status st = tsr_config_context(&o, ctx->cache_dir, sizeof ctx->cache_dir, err, sizeof err);
    const char *invalid = st == TSR_OK ? invalid_option(&o) : NULL;
    if (invalid) {
        snprintf(err, sizeof err, "tsr_context_create: option %s out of range", invalid);
        st = TSR_ERR_INVALID_ARG;
    }
    if (st != TSR_OK) {
        tsr_log(ctx, TSR_LOG_ERROR, "%s", err);
        alloc.free(alloc.opaque, ctx);
        return st;
    }
    ctx->log_level = o.log_level >= 0 ? (tsr_log_level)o.log_level : TSR_LOG_WARN;
    ctx->flags = o.flags;
    ctx->opts = o;
    ctx->opts.allocator = NULL; /* the caller's may not outlive the call: ctx->alloc is the copy */
    ctx->opts.cache_dir = ctx->cache_dir;
    st = copy_strings(ctx, &o);
    if (st == TSR_OK) st = tsr_topology_discover(ctx, &ctx->devices, &ctx->device_count);
    if (st != TSR_OK) {
        /* the context holding the detail is about to go: the log sink gets it */
        tsr_log(ctx, TSR_LOG_ERROR, "creating the context: %s", ctx->last_error);
        tsr_context_free(ctx);
        return st;
    }
    *out = ctx;
    return TSR_OK;
}

void tsr_context_free(tsr_context *ctx) {
    if (!ctx) return;
    tsr_topology_release(ctx);
    tsr_free(ctx, ctx->devices);
    free_strings(ctx);
    tsr_allocator a = ctx->alloc;
    a.free(a.opaque, ctx);
}

void tsr_context_get_options(const tsr_context *ctx, tsr_context_options *out) {
    if (!out) return;
    if (!ctx) {
        tsr_context_options_init(out);
        return;
    }
    *out = ctx->opts;
    out->log_fn = ctx->log_fn;
    out->log_user = ctx->log_user;
    out->log_level = (int)ctx->log_level;
    out->flags = ctx->flags;
}

void tsr_context_set_fault_ckpt_kill(tsr_context *ctx, int64_t bytes) {
    if (ctx) ctx->opts.fault_ckpt_kill = bytes < 0 ? -1 : bytes;
}

const char *tsr_context_last_error(const tsr_context *ctx) { return ctx ? ctx->last_error : ""; }
tsr_status tsr_context_last_status(const tsr_context *ctx) { return ctx ? ctx->last_status : TSR_OK; }
void tsr_context_clear_error(tsr_context *ctx) {
    if (!ctx) return;
    ctx->last_status = TSR_OK;
    ctx->last_error[0] = '\0';
}

void tsr_context_set_log(tsr_context *ctx, tsr_log_fn fn, void *user, tsr_log_level level) {
    if (!ctx) return;
    ctx->log_fn = fn;
    ctx->log_user = user;
    ctx->log_level = level;
}

void tsr_context_set_rank(tsr_context *ctx, int rank) {
    if (ctx) ctx->rank = rank;
}

const char *tsr_context_cache_dir(const tsr_context *ctx) { return ctx ? ctx->cache_dir : ""; }

int tsr_context_device_count(const tsr_context *ctx) { return ctx ? ctx->device_count : 0; }

const tsr_device_info *tsr_context_device(const tsr_context *ctx, int index) {
    if (!ctx || index < 0 || index >= ctx->device_count) return NULL;
    return &ctx->devices[index];
}

int tsr_context_find_device(const tsr_context *ctx, const char *id) {
    if (!ctx || !id || !*id) return -1;
    for (int i = 0; i < ctx->device_count; i++)
        if (strcmp(ctx->devices[i].id, id) == 0) return i;
    char *end;
    long idx = strtol(id, &end, 10);
    if (*end == '\0' && idx >= 0 && idx < ctx->device_count) return (int)idx;
    return -1;
}

const char *tsr_device_kind_name(tsr_device_kind kind) {
    switch (kind) {
    case TSR_DEVICE_HOST: return "host";
    case TSR_DEVICE_CPU: return "cpu";
    case TSR_DEVICE_GPU: return "gpu";
    case TSR_DEVICE_ACCELERATOR: return "accelerator";
    case TSR_DEVICE_CUSTOM: return "custom";
    }
    return "?";
}
