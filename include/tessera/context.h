/* The context: owns the allocator, logging, last error, and the device list. No globals. */
#ifndef TESSERA_CONTEXT_H
#define TESSERA_CONTEXT_H
#include <stddef.h>
#include <stdint.h>
#include "alloc.h"
#include "comm.h"
#include "device.h"
#include "log.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_context tsr_context;

enum tsr_context_flags {
    TSR_CONTEXT_NO_OPENCL = 1u << 0, /* do not look for OpenCL devices [TSR_NO_OPENCL=1] */
    TSR_CONTEXT_NO_HWLOC = 1u << 1,  /* do not read the hwloc topology [TSR_NO_HWLOC=1] */
    TSR_CONTEXT_NO_ENV = 1u << 2     /* tsr_context_create reads no TSR_* variable (a NULL
                                        cache_dir still follows XDG_CACHE_HOME and HOME) */
};

/* Which library runs the host backend's float32 GEMMs (tsr_context_options.host_sgemm). */
typedef enum tsr_host_sgemm_lib {
    TSR_HOST_SGEMM_AUTO = 0,
    TSR_HOST_SGEMM_OPENBLAS = 1,
    TSR_HOST_SGEMM_ONEDNN = 2
} tsr_host_sgemm_lib;

/* Every knob of a context. The environment variable in brackets sets the default: unless
 * flags has TSR_CONTEXT_NO_ENV, tsr_context_create fills each field still at its
 * tsr_context_options_init value from its variable (tsr_context_options_from_env, config.h,
 * does the same on your struct and says which value was wrong). A value set in code wins.
 * The context copies everything it keeps: the strings need not outlive the call. */
typedef struct tsr_context_options {
    const tsr_allocator *allocator; /* NULL: malloc/free */
    tsr_log_fn log_fn;              /* NULL: stderr sink, filtered by log_level */
    void *log_user;
    int log_level;                  /* a tsr_log_level; -1: warn [TSR_LOG] */
    const char *cache_dir;          /* capability cache, program binaries; NULL: [TSR_CACHE_DIR],
                                       else $XDG_CACHE_HOME/tessera, else ~/.cache/tessera,
                                       else /tmp/tessera-cache */
    unsigned flags;                 /* tsr_context_flags */
    const char *topology_file;      /* a topology JSON (tsr-topo --json) used instead of
                                       discovery; NULL: discover [TSR_TOPOLOGY] */
    const char *data_dir;           /* MNIST-format IDX files when a load names no folder; NULL:
                                       /usr/share/datasets/fashion-mnist [TSR_DATA_DIR] */
    int host_threads;               /* host backend threads (clamped to 64); 0: [TSR_HOST_THREADS],
                                       else OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, else cores */
    const char *kernel_binary_dir;  /* precompiled OpenCL programs <device name>.clbin; NULL:
                                       none [TSR_KERNEL_BINARY_DIR] */
    const char *clblast_params;     /* CLBlast tuning override "Xgemm:MWG=128,...;Kernel:..."
                                       applied to every OpenCL backend; NULL: none
                                       [TSR_CLBLAST_PARAMS] */
    int tensor_cores;               /* GEMMs on NVIDIA tensor cores (OpenCL devices of compute
                                       capability >= 8.0; CLBlast elsewhere): 0 no, 1 the bf16/
                                       fp16 modes' GEMMs, 2 those and fp32 ones as TF32. Not yet
                                       verified on NVIDIA hardware, hence off by default
                                       [TSR_TENSOR_CORES: 0, 1, tf32] */
    int host_sgemm;                 /* the host backend's float32 GEMM, a tsr_host_sgemm_lib:
                                       AUTO and OPENBLAS run OpenBLAS; ONEDNN runs oneDNN's JIT
                                       SGEMM for C of 32+ columns (1.0-2x OpenBLAS on an AVX2 Zen
                                       CPU; see host_dnnl.c for why it is not the default), and in
                                       a build without oneDNN OpenBLAS, with a warning. The bits of
                                       a result depend on which [TSR_HOST_SGEMM: auto, openblas,
                                       onednn] */
    int no_blas_advice;             /* 1: the host backend does not warn about OpenBLAS's generic
                                       kernels (1 when OPENBLAS_CORETYPE is set: the user chose) */
    int64_t fault_ckpt_kill;        /* tests: a checkpoint writer SIGKILLs its process after
                                       this many bytes; -1: never [TSR_FAULT_CKPT_KILL] */
    tsr_comm_options comm;          /* communicators created from this context (comm.h) */
} tsr_context_options;

/* Fills `opts` with the defaults: all NULL/0, log_level -1, fault_ckpt_kill -1, comm from
 * tsr_comm_options_init. Reads no environment. */
void tsr_context_options_init(tsr_context_options *opts);

/* Creates a context and discovers the devices. `opts` may be NULL (the defaults, with the
 * environment). On failure *out is NULL; a bad environment value is TSR_ERR_PARSE, logged at
 * error level through opts' log sink (tsr_context_options_from_env gives you the message). */
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
/* The options the context runs with, environment applied (strings owned by the context;
 * allocator NULL: the context keeps a copy of yours). */
void tsr_context_get_options(const tsr_context *ctx, tsr_context_options *out);
/* Fault injection for tests: the next checkpoint writes die after `bytes` (-1: never). */
void tsr_context_set_fault_ckpt_kill(tsr_context *ctx, int64_t bytes);

/* Devices found at creation. Index order is stable for a machine and driver set. */
int tsr_context_device_count(const tsr_context *ctx);
const tsr_device_info *tsr_context_device(const tsr_context *ctx, int index);
/* Index of the device whose id is `id` ("host", "opencl:0:0"), or a 0-based index as text; -1 if none. */
int tsr_context_find_device(const tsr_context *ctx, const char *id);

#ifdef __cplusplus
}
#endif
#endif
