/* Small shared utilities: allocation through the context, strings, time. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "internal.h"

void *tsr_malloc(tsr_context *ctx, size_t size) {
    if (size == 0) size = 1;
    if (ctx && ctx->alloc.alloc) return ctx->alloc.alloc(ctx->alloc.opaque, size);
    return malloc(size);
}

void *tsr_calloc(tsr_context *ctx, size_t count, size_t size) {
    size_t total;
    if (tsr_mul_size(count, size, &total)) return NULL;
    void *p = tsr_malloc(ctx, total);
    if (p) memset(p, 0, total ? total : 1);
    return p;
}

void tsr_free(tsr_context *ctx, void *ptr) {
    if (!ptr) return;
    if (ctx && ctx->alloc.free) ctx->alloc.free(ctx->alloc.opaque, ptr);
    else free(ptr);
}

char *tsr_strdup(tsr_context *ctx, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = tsr_malloc(ctx, n);
    if (d) memcpy(d, s, n);
    return d;
}

void tsr_strlcpy(char *dst, const char *src, size_t dst_size) {
    if (!dst_size) return;
    size_t n = src ? strlen(src) : 0;
    if (n >= dst_size) n = dst_size - 1;
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

double tsr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
