/* The context: owns the allocator, logging, last error, and the device list. No globals. */
#ifndef TESSERA_CONTEXT_H
#define TESSERA_CONTEXT_H
#include <stddef.h>
#include "alloc.h"
#include "device.h"
#include "log.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_context tsr_context;

enum tsr_context_flags {
    TSR_CONTEXT_NO_OPENCL = 1u << 0,  /* do not look for OpenCL devices */
    TSR_CONTEXT_NO_HWLOC = 1u << 1    /* do not read the hwloc topology */
};

typedef struct tsr_context_options {
    const tsr_allocator *allocator; /* NULL: malloc/free */
    tsr_log_fn log_fn;              /* NULL: stderr sink, filtered by log_level */
    void *log_user;
    int log_level;                  /* a tsr_log_level, or -1: from TSR_LOG (default "warn") */
    const char *cache_dir;          /* NULL: TSR_CACHE_DIR, else $XDG_CACHE_HOME/tessera, else ~/.cache/tessera */
    unsigned flags;                 /* tsr_context_flags; TSR_NO_OPENCL=1 in the environment adds NO_OPENCL */
} tsr_context_options;

/* Fills `opts` with the defaults (all NULL/0, log_level -1). */
void tsr_context_options_init(tsr_context_options *opts);

/* Creates a context and discovers the devices. `opts` may be NULL. On failure *out is NULL. */
tsr_status tsr_context_create(tsr_context **out, const tsr_context_options *opts);
/* Accepts NULL. */
void tsr_context_free(tsr_context *ctx);

/* Detail of the last error set on this context ("train-images: bad magic 0x00000801"), "" if none. */
const char *tsr_context_last_error(const tsr_context *ctx);
tsr_status tsr_context_last_status(const tsr_context *ctx);
void tsr_context_clear_error(tsr_context *ctx);

/* Replaces the log sink/level at run time. */
void tsr_context_set_log(tsr_context *ctx, tsr_log_fn fn, void *user, tsr_log_level level);
/* Rank shown in log lines (set by the communicator); -1 for none. */
void tsr_context_set_rank(tsr_context *ctx, int rank);

const char *tsr_context_cache_dir(const tsr_context *ctx);

/* Devices found at creation. Index order is stable for a machine and driver set. */
int tsr_context_device_count(const tsr_context *ctx);
const tsr_device_info *tsr_context_device(const tsr_context *ctx, int index);
/* Index of the device whose id is `id` ("host", "opencl:0:0"), or a 0-based index as text; -1 if none. */
int tsr_context_find_device(const tsr_context *ctx, const char *id);

#ifdef __cplusplus
}
#endif
#endif
