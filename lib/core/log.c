/* Logging and the per-context last error. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include "internal.h"

static const char *const level_names[] = {"off", "error", "warn", "info", "debug"};

tsr_log_level tsr_log_level_parse(const char *text, tsr_log_level fallback) {
    if (!text || !*text) return fallback;
    for (int i = 0; i < (int)TSR_ARRAY_SIZE(level_names); i++)
        if (strcasecmp(text, level_names[i]) == 0) return (tsr_log_level)i;
    if (strcasecmp(text, "warning") == 0) return TSR_LOG_WARN;
    return fallback;
}

const char *tsr_log_level_name(tsr_log_level level) {
    if ((int)level < 0 || (int)level >= (int)TSR_ARRAY_SIZE(level_names)) return "?";
    return level_names[level];
}

void tsr_vlog(tsr_context *ctx, tsr_log_level level, const char *fmt, va_list ap) {
    if (!tsr_log_enabled(ctx, level) || level == TSR_LOG_OFF) return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    if (ctx->log_fn) {
        ctx->log_fn(level, msg, ctx->log_user);
        return;
    }
    /* Default sink: one line on stderr, rank first so interleaved mpiexec output stays readable. */
    if (ctx->rank >= 0)
        fprintf(stderr, "[tessera %d] %s: %s\n", ctx->rank, tsr_log_level_name(level), msg);
    else
        fprintf(stderr, "[tessera] %s: %s\n", tsr_log_level_name(level), msg);
}

void tsr_log(tsr_context *ctx, tsr_log_level level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    tsr_vlog(ctx, level, fmt, ap);
    va_end(ap);
}

tsr_status tsr_error(tsr_context *ctx, tsr_status status, const char *fmt, ...) {
    if (!ctx) return status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->last_error, sizeof ctx->last_error, fmt, ap);
    va_end(ap);
    ctx->last_status = status;
    tsr_log(ctx, TSR_LOG_DEBUG, "%s: %s", tsr_status_name(status), ctx->last_error);
    return status;
}
