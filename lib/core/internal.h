/* Internal helpers shared by every module: context layout, errors, logging, memory. */
#ifndef TSR_INTERNAL_H
#define TSR_INTERNAL_H
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include "tessera.h"

#if defined(__GNUC__)
#define TSR_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define TSR_PRINTF(f, a)
#endif

struct tsr_context {
    tsr_allocator alloc;
    tsr_log_fn log_fn;
    void *log_user;
    tsr_log_level log_level;
    int rank;                  /* -1: not set */
    unsigned flags;
    tsr_status last_status;
    char last_error[1024];
    char cache_dir[512];
    tsr_device_info *devices;
    int device_count;
    struct tsr_topology *topology; /* topology module state: host record, hwloc handle */
    /* The options as resolved at creation (environment applied, lib/core/config.c); its strings
     * are the context's own copies. log and flags live in the fields above. */
    tsr_context_options opts;
};

/* lib/core/config.c, for tsr_context_create: applies the environment to `o` unless o->flags has
 * TSR_CONTEXT_NO_ENV (a bad value: TSR_ERR_PARSE, message in err), then writes the cache folder
 * into cache_dir: o->cache_dir, else $XDG_CACHE_HOME/tessera, else $HOME/.cache/tessera, else
 * /tmp/tessera-cache. */
tsr_status tsr_config_context(tsr_context_options *o, char *cache_dir, size_t cache_size,
                              char *err, size_t err_size);

/* Records status + formatted detail as the context's last error, logs it at debug level and
 * returns `status`, so error paths read `return tsr_error(ctx, TSR_ERR_SHAPE, "...", ...);`.
 * ctx may be NULL (then only the status is returned). */
tsr_status tsr_error(tsr_context *ctx, tsr_status status, const char *fmt, ...) TSR_PRINTF(3, 4);

void tsr_log(tsr_context *ctx, tsr_log_level level, const char *fmt, ...) TSR_PRINTF(3, 4);
void tsr_vlog(tsr_context *ctx, tsr_log_level level, const char *fmt, va_list ap);
static inline int tsr_log_enabled(const tsr_context *ctx, tsr_log_level level) {
    return ctx && level <= ctx->log_level;
}

/* Host memory through the context's allocator. ctx may be NULL (plain malloc). */
void *tsr_malloc(tsr_context *ctx, size_t size);
void *tsr_calloc(tsr_context *ctx, size_t count, size_t size); /* overflow-checked */
void tsr_free(tsr_context *ctx, void *ptr);
char *tsr_strdup(tsr_context *ctx, const char *s);

/* Overflow-checked multiply: returns 0 and sets *out, or -1 on overflow. */
static inline int tsr_mul_size(size_t a, size_t b, size_t *out) {
    if (a && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

/* Copies at most dst_size-1 bytes and always terminates. */
void tsr_strlcpy(char *dst, const char *src, size_t dst_size);

/* Monotonic time in seconds. */
double tsr_now(void);

#define TSR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Propagates a failing status: TSR_TRY(call()); */
#define TSR_TRY(expr)                       \
    do {                                    \
        tsr_status tsr_try_s_ = (expr);     \
        if (tsr_try_s_ != TSR_OK) return tsr_try_s_; \
    } while (0)

#endif
