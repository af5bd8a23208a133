/* Context lifetime: options, environment, device discovery. */
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
}

static void resolve_cache_dir(tsr_context *ctx, const char *requested) {
    const char *env;
    if (requested && *requested) {
        tsr_strlcpy(ctx->cache_dir, requested, sizeof ctx->cache_dir);
    } else if ((env = getenv("TSR_CACHE_DIR")) && *env) {
        tsr_strlcpy(ctx->cache_dir, env, sizeof ctx->cache_dir);
    } else if ((env = getenv("XDG_CACHE_HOME")) && *env) {
        snprintf(ctx->cache_dir, sizeof ctx->cache_dir, "%s/tessera", env);
    } else if ((env = getenv("HOME")) && *env) {
        snprintf(ctx->cache_dir, sizeof ctx->cache_dir, "%s/.cache/tessera", env);
    } else {
        tsr_strlcpy(ctx->cache_dir, "/tmp/tessera-cache", sizeof ctx->cache_dir);
    }
}

static int env_flag(const char *name) {
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

tsr_status tsr_context_create(tsr_context **out, const tsr_context_options *opts) {
    if (!out) return TSR_ERR_INVALID_ARG;
    *out = NULL;
    tsr_context_options defaults;
    if (!opts) {
        tsr_context_options_init(&defaults);
        opts = &defaults;
    }
    if ((opts->allocator && (!opts->allocator->alloc || !opts->allocator->free)) ||
        opts->log_level > TSR_LOG_DEBUG)
        return TSR_ERR_INVALID_ARG;

    tsr_allocator alloc = {default_alloc, default_free, NULL};
    if (opts->allocator) alloc = *opts->allocator;
    tsr_context *ctx = alloc.alloc(alloc.opaque, sizeof *ctx);
    if (!ctx) return TSR_ERR_NO_MEMORY;
    memset(ctx, 0, sizeof *ctx);
    ctx->alloc = alloc;
    ctx->log_fn = opts->log_fn;
    ctx->log_user = opts->log_user;
    ctx->log_level = opts->log_level >= 0 ? (tsr_log_level)opts->log_level
                                          : tsr_log_level_parse(getenv("TSR_LOG"), TSR_LOG_WARN);
    ctx->rank = -1;
    ctx->flags = opts->flags;
    if (env_flag("TSR_NO_OPENCL")) ctx->flags |= TSR_CONTEXT_NO_OPENCL;
    if (env_flag("TSR_NO_HWLOC")) ctx->flags |= TSR_CONTEXT_NO_HWLOC;
    resolve_cache_dir(ctx, opts->cache_dir);

    tsr_status st = tsr_topology_discover(ctx, &ctx->devices, &ctx->device_count);
    if (st != TSR_OK) {
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
    tsr_allocator a = ctx->alloc;
    a.free(a.opaque, ctx);
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
