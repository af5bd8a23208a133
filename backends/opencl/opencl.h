/* Internal: the OpenCL backend's private state and the hooks its tests use
 * (program origin, building arbitrary source, binary naming). Not installed. */
#ifndef TSR_BACKEND_OPENCL_H
#define TSR_BACKEND_OPENCL_H
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include "backends/backend.h"

/* Every kernel of the embedded program, created once per backend. */
#define TSR_CL_KERNEL_LIST(X)                                                                   \
    X(axpy) X(scale) X(mul) X(sum_partial) X(sum_final) X(first_nonfinite) X(scale_matrix)     \
    X(bias_add)                                                                                 \
    X(bias_grad_rows) X(bias_grad_cols) X(relu_forward) X(relu_backward)                        \
    X(softmax_xent_forward) X(softmax_xent_backward) X(im2col) X(im2col_wide) X(col2im)         \
    X(col2im_wide) X(transpose) X(transpose_wide) X(transpose_bias) X(transpose_bias_wide)      \
    X(maxpool_forward) X(maxpool_forward_wide) X(maxpool_backward) X(maxpool_backward_wide)     \
    X(dropout_forward) X(narrow16)                                                              \
    X(widen16) X(sgd_update) X(adam_update) X(embed_forward) X(embed_backward)               \
    X(layernorm_forward) X(layernorm_backward_rows) X(layernorm_backward_cols)                  \
    X(gelu_forward) X(gelu_backward) X(attn_softmax) X(attn_softmax_backward)                   \
    X(xent_forward) X(xent_backward) X(round16) X(round16_block)

enum {
#define TSR_CL_ENUM(name) TSR_CL_K_##name,
    TSR_CL_KERNEL_LIST(TSR_CL_ENUM)
#undef TSR_CL_ENUM
    TSR_CL_K_COUNT
};

/* Where the backend's program came from. */
typedef enum tsr_cl_origin {
    TSR_CL_FROM_SOURCE = 0, /* compiled from the embedded sources (cache written) */
    TSR_CL_FROM_CACHE = 1,  /* loaded from <cache dir>/opencl/<key>.bin */
    TSR_CL_FROM_BINARY = 2  /* loaded from TSR_KERNEL_BINARY_DIR/<device>.clbin */
} tsr_cl_origin;

/* How gemm_batched runs. AUTO: CLBlastSgemmStridedBatched (one launch) on GPUs; on CPU and
 * accelerator devices a loop of CLBlastSgemm, which reuses the program single GEMMs already
 * compiled: on PoCL the batched program costs ~27 s of CPU to compile (measured here) while a
 * launch costs microseconds next to the GEMM itself. */
typedef enum tsr_cl_batched {
    TSR_CL_BATCHED_AUTO = 0,
    TSR_CL_BATCHED_CLBLAST = 1,
    TSR_CL_BATCHED_LOOP = 2
} tsr_cl_batched;

/* GEMMs on tensor cores (mma_opencl.c, kernels/mma.cl). */
typedef enum tsr_cl_mma {
    TSR_CL_MMA_CONTEXT = 0, /* options only: the context's tensor_cores [TSR_TENSOR_CORES] */
    TSR_CL_MMA_OFF = 1,     /* CLBlast for every GEMM */
    TSR_CL_MMA_16 = 2,      /* the bf16/fp16 modes' GEMMs through mma.sync */
    TSR_CL_MMA_TF32 = 3     /* those and fp32 GEMMs (as TF32) */
} tsr_cl_mma;

/* Creation knobs beyond the device record and the context's options. */
typedef struct tsr_opencl_options {
    const char *kernel_binary_dir; /* precompiled programs; NULL: the context's */
    int no_cache;                  /* 1: neither read nor write the on-disk program cache */
    int batched_gemm;              /* a tsr_cl_batched; 0 = AUTO */
    int tensor_cores;              /* a tsr_cl_mma; 0 = the context's. Takes effect only on an
                                      NVIDIA device of compute capability >= 8.0 */
    int mma_emulate;               /* tests: 1 runs mma.cl with the instruction emulated
                                      (TSR_MMA_EMULATE) on any device, tensor_cores as asked */
} tsr_opencl_options;

#define TSR_CL_SUM_GROUPS 256 /* partial sums of the first reduction pass */

typedef struct tsr_cl {
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    cl_program program;
    cl_kernel kernels[TSR_CL_K_COUNT];
    size_t wg[TSR_CL_K_COUNT];   /* local size per kernel (a power of two for reductions) */
    cl_mem scratch;              /* TSR_CL_SUM_GROUPS floats: partial sums; dummy operand */
    tsr_cl_batched batched;      /* resolved: CLBLAST or LOOP */
    unsigned long batched_fallbacks; /* CLBlast refused a batch shape: looped instead */
    int force_wide;              /* tests: use the 64-bit-index kernels for every size */
    tsr_cl_origin origin;
    char program_path[1024];     /* cache entry or binary file, "" when none */
    char build_options[128];
    /* tensor cores (mma_opencl.c) */
    int nv_cc;                   /* NVIDIA compute capability major*10+minor; 0: not NVIDIA */
    tsr_cl_mma mma;              /* resolved: OFF, 16 or TF32 */
    int mma_emulate;             /* the scalar stand-in for mma.sync (tests on any device) */
    cl_program mma_program[3];   /* bf16, fp16, tf32: built at first use */
    cl_kernel mma_kernel[3];
    unsigned long mma_calls;     /* GEMM launches that went through mma.cl (tests) */
} tsr_cl;

tsr_status tsr_backend_opencl_create_ex(tsr_context *ctx, const tsr_device_info *info,
                                        const tsr_opencl_options *opts, tsr_backend **out);

/* The backend's OpenCL objects (NULL when be is not an OpenCL backend). */
tsr_cl *tsr_opencl_state(tsr_backend *be);

/* Where the program came from; *path (may be NULL) receives the file used or "". */
tsr_cl_origin tsr_opencl_program_origin(tsr_backend *be, const char **path);

/* Compiles `source` for be's device with `options` (NULL: the backend's). On a compile
 * error returns TSR_ERR_BUILD with the build log in the context's error detail. */
tsr_status tsr_opencl_build_source(tsr_backend *be, const char *source, const char *options,
                                   cl_program *out);

/* The device binary of be's program (what a precompiled file holds); free with tsr_free. */
tsr_status tsr_opencl_program_binary(tsr_backend *be, unsigned char **data, size_t *size);

/* File name a precompiled program for `device_name` must have inside the binary folder:
 * the name lower-cased, every run of characters outside [a-z0-9] replaced by one '_',
 * leading/trailing '_' dropped, plus ".clbin" ("NVIDIA H100 80GB HBM3" ->
 * "nvidia_h100_80gb_hbm3.clbin"). */
void tsr_opencl_binary_name(const char *device_name, char *out, size_t size);

/* Maps an OpenCL error to a status and records "call: CL_NAME" as the context's error. */
tsr_status tsr_opencl_error(tsr_context *ctx, cl_int err, const char *call);

/* Program creation (program_opencl.c): fills cl->program, origin, program_path. */
tsr_status tsr_opencl_program_load(tsr_backend *be, const tsr_opencl_options *opts);

/* The embedded source of kernels/NAME.cl; NULL when there is none. */
const char *tsr_opencl_kernel_source(const char *name);

/* Tensor cores (mma_opencl.c). setup resolves cl->mma and cl->nv_cc at creation (logs why a
 * request is not honoured); mma_takes says whether a GEMM in be's precision goes through
 * mma.cl; mma_gemm runs it (k > 0); release frees its programs. */
tsr_status tsr_opencl_mma_setup(tsr_backend *be, const tsr_opencl_options *opts);
int tsr_opencl_mma_takes(tsr_backend *be);
/* The iface's gemm_native: 1 for bf16/fp16 when mma.cl runs them (it rounds its operands itself,
 * as round16 would), so backend_precision.c skips the two rounding passes. */
int tsr_opencl_mma_native(tsr_backend *be, tsr_precision p);
tsr_status tsr_opencl_mma_gemm(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                               size_t k, float alpha, tsr_ref a, size_t lda, size_t stride_a,
                               tsr_ref b, size_t ldb, size_t stride_b, float beta, tsr_ref c,
                               size_t ldc, size_t stride_c, size_t batch);
void tsr_opencl_mma_release(tsr_cl *cl);

/* Applies a TSR_CLBLAST_PARAMS-style override list for be's device (ops_opencl.c). */
tsr_status tsr_opencl_clblast_params(tsr_backend *be, const char *spec);

/* Memory slots (backend_opencl.c), gathered with the ops into the table of ops_opencl.c. */
void tsr_opencl_destroy(tsr_backend *be);
tsr_status tsr_opencl_buf_alloc(tsr_backend *be, tsr_buf *buf);
void tsr_opencl_buf_free(tsr_backend *be, tsr_buf *buf);
tsr_status tsr_opencl_write(tsr_backend *be, tsr_buf *dst, size_t off, const void *src, size_t n);
tsr_status tsr_opencl_read(tsr_backend *be, tsr_buf *src, size_t off, void *dst, size_t n);
tsr_status tsr_opencl_copy(tsr_backend *be, tsr_buf *dst, size_t dst_off, tsr_buf *src,
                           size_t src_off, size_t n);
tsr_status tsr_opencl_fill(tsr_backend *be, tsr_ref x, size_t n, float value);
tsr_status tsr_opencl_finish(tsr_backend *be);
extern const tsr_backend_iface tsr_opencl_iface;

#endif
