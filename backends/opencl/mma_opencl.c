/* GEMMs on NVIDIA tensor cores through OpenCL: kernels/mma.cl (inline PTX mma.sync), chosen
 * per backend at creation. Only when asked for (TSR_TENSOR_CORES, the context's tensor_cores,
 * or tsr_opencl_options.tensor_cores) AND the device is NVIDIA's with compute capability
 * >= 8.0 (cl_nv_device_attribute_query); everywhere else, and by default, CLBlast. Until the
 * kernel has been verified on NVIDIA hardware (tests/unit/test_mma.c there) it stays opt-in:
 * code never run on its device must not silently produce a user's results.
 * Tests run the same kernel with the instruction emulated (mma_emulate) on any device. */
#include "backends/opencl/opencl.h" /* first: it sets CL_TARGET_OPENCL_VERSION */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"

#define CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV 0x4000
#define CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV 0x4001

/* The kernel's geometry (mma.cl's BM, BN, THREADS). */
#define MMA_BM 128
#define MMA_BN 128
#define MMA_THREADS 128
#define MMA_MAX_GROUPS 65535 /* per launch in dimensions 1 and 2 (CUDA's grid limit) */

static const char *const variant_names[3] = {"bf16", "fp16", "tf32"};

/* major*10+minor of an NVIDIA device that reports it; 0 otherwise. */
static int nvidia_compute_capability(tsr_backend *be) {
    tsr_cl *cl = be->impl;
    char vendor[256] = "";
    if (clGetDeviceInfo(cl->device, CL_DEVICE_VENDOR, sizeof vendor, vendor, NULL) != CL_SUCCESS)
        return 0;
    vendor[sizeof vendor - 1] = '\0';
    if (!strstr(vendor, "NVIDIA")) return 0;
    size_t n = 0;
    if (clGetDeviceInfo(cl->device, CL_DEVICE_EXTENSIONS, 0, NULL, &n) != CL_SUCCESS || !n) return 0;
    char *ext = tsr_malloc(be->ctx, n + 1);
    if (!ext) return 0;
    int has = clGetDeviceInfo(cl->device, CL_DEVICE_EXTENSIONS, n, ext, NULL) == CL_SUCCESS &&
              (ext[n] = '\0', strstr(ext, "cl_nv_device_attribute_query") != NULL);
    tsr_free(be->ctx, ext);
    cl_uint major = 0, minor = 0;
    if (!has ||
        clGetDeviceInfo(cl->device, CL_DEVICE_COMPUTE_CAPABILITY_MAJOR_NV, sizeof major, &major,
                        NULL) != CL_SUCCESS ||
        clGetDeviceInfo(cl->device, CL_DEVICE_COMPUTE_CAPABILITY_MINOR_NV, sizeof minor, &minor,
                        NULL) != CL_SUCCESS)
        return 0;
    return (int)(major * 10 + (minor < 10 ? minor : 9));
}

tsr_status tsr_opencl_mma_setup(tsr_backend *be, const tsr_opencl_options *opts) {
    tsr_cl *cl = be->impl;
    tsr_context *ctx = be->ctx;
    if (opts->tensor_cores < TSR_CL_MMA_CONTEXT || opts->tensor_cores > TSR_CL_MMA_TF32)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "OpenCL options: tensor_cores %d is not 0 (the context's), 1 (off), 2 "
                         "(bf16/fp16) or 3 (tf32 too)", opts->tensor_cores);
    if (ctx->opts.tensor_cores < 0 || ctx->opts.tensor_cores > 2)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "context tensor_cores %d is not 0 (off), 1 (bf16/fp16) or 2 (tf32 too)",
                         ctx->opts.tensor_cores);
    tsr_cl_mma want = opts->tensor_cores != TSR_CL_MMA_CONTEXT ? (tsr_cl_mma)opts->tensor_cores
                      : ctx->opts.tensor_cores == 0          ? TSR_CL_MMA_OFF
                      : ctx->opts.tensor_cores == 1          ? TSR_CL_MMA_16
                                                             : TSR_CL_MMA_TF32;
    cl->nv_cc = nvidia_compute_capability(be);
    cl->mma_emulate = opts->mma_emulate != 0;
    cl->mma = TSR_CL_MMA_OFF;
    if (want == TSR_CL_MMA_OFF) return TSR_OK;
    if (!cl->mma_emulate && cl->nv_cc < 80) {
        tsr_log(ctx, TSR_LOG_INFO, "%s: tensor cores asked for, but %s is not an NVIDIA device of "
                "compute capability >= 8.0: GEMMs through CLBlast", be->device.id, be->device.name);
        return TSR_OK;
    }
    cl->mma = want;
    tsr_log(ctx, cl->mma_emulate ? TSR_LOG_DEBUG : TSR_LOG_WARN,
            "%s: GEMMs of the bf16/fp16 modes%s through %s (compute capability %d.%d): the "
            "tensor-core kernel is not yet verified on NVIDIA hardware", be->device.id,
            want == TSR_CL_MMA_TF32 ? " and fp32 ones (as TF32)" : "",
            cl->mma_emulate ? "mma.cl with the instruction emulated" : "mma.sync",
            cl->nv_cc / 10, cl->nv_cc % 10);
    return TSR_OK;
}

int tsr_opencl_mma_takes(tsr_backend *be) {
    tsr_cl *cl = be->impl;
    if (cl->mma == TSR_CL_MMA_OFF) return 0;
    return be->precision != TSR_PRECISION_FP32 || cl->mma == TSR_CL_MMA_TF32;
}

int tsr_opencl_mma_native(tsr_backend *be, tsr_precision p) {
    tsr_cl *cl = be->impl;
    return cl->mma != TSR_CL_MMA_OFF && p != TSR_PRECISION_FP32;
}

void tsr_opencl_mma_release(tsr_cl *cl) {
    for (int v = 0; v < 3; v++) {
        if (cl->mma_kernel[v]) clReleaseKernel(cl->mma_kernel[v]);
        if (cl->mma_program[v]) clReleaseProgram(cl->mma_program[v]);
        cl->mma_kernel[v] = NULL;
        cl->mma_program[v] = NULL;
    }
}

/* The kernel of variant v (0 bf16, 1 fp16, 2 tf32), built at its first use. */
static tsr_status mma_kernel(tsr_backend *be, int v, cl_kernel *out) {
    tsr_cl *cl = be->impl;
    if (!cl->mma_kernel[v]) {
        const char *src = tsr_opencl_kernel_source("mma");
        if (!src) return tsr_error(be->ctx, TSR_ERR_INTERNAL, "kernels/mma.cl is not embedded");
        char options[192];
        snprintf(options, sizeof options, "%s -DTSR_MMA=%d%s", cl->build_options, v + 1,
                 cl->mma_emulate ? " -DTSR_MMA_EMULATE" : "");
        tsr_status st = tsr_opencl_build_source(be, src, options, &cl->mma_program[v]);
        if (st == TSR_ERR_BUILD && !cl->mma_emulate) {
            /* GNU C's other spelling of the inline-assembly keyword, for a front end that
             * knows only `asm`; a second failure reports its own build log */
            tsr_log(be->ctx, TSR_LOG_DEBUG, "mma.cl with __asm__: %s", tsr_context_last_error(be->ctx));
            tsr_strlcpy(options + strlen(options), " -DTSR_MMA_ASM=asm", sizeof options - strlen(options));
            st = tsr_opencl_build_source(be, src, options, &cl->mma_program[v]);
        }
        TSR_TRY(st);
        cl_int err;
        cl->mma_kernel[v] = clCreateKernel(cl->mma_program[v], "gemm_mma", &err);
        if (err != CL_SUCCESS) {
            cl->mma_kernel[v] = NULL;
            clReleaseProgram(cl->mma_program[v]);
            cl->mma_program[v] = NULL;
            char call[64];
            snprintf(call, sizeof call, "clCreateKernel(gemm_mma, %s)", variant_names[v]);
            return tsr_opencl_error(be->ctx, err, call);
        }
    }
    *out = cl->mma_kernel[v];
    return TSR_OK;
}

/* One kernel argument; after the first failure the rest are skipped (*err keeps it). */
static void set_arg(cl_kernel kn, cl_uint *i, size_t size, const void *value, cl_int *err) {
    if (*err == CL_SUCCESS) *err = clSetKernelArg(kn, *i, size, value);
    (*i)++;
}
static void set_u64(cl_kernel kn, cl_uint *i, size_t v, cl_int *err) {
    cl_ulong u = v;
    set_arg(kn, i, sizeof u, &u, err);
}
/* An operand: transposed flag (A, B) or none (C: trans < 0), buffer, offset, ld, stride. */
static void set_operand(cl_kernel kn, cl_uint *i, int trans, tsr_ref r, size_t off, size_t ld,
                        size_t stride, cl_int *err) {
    cl_int t = trans;
    cl_mem mem = (cl_mem)r.buf->impl;
    if (trans >= 0) set_arg(kn, i, sizeof t, &t, err);
    set_arg(kn, i, sizeof mem, &mem, err);
    set_u64(kn, i, off, err);
    set_u64(kn, i, ld, err);
    set_u64(kn, i, stride, err);
}

tsr_status tsr_opencl_mma_gemm(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                               size_t k, float alpha, tsr_ref a, size_t lda, size_t stride_a,
                               tsr_ref b, size_t ldb, size_t stride_b, float beta, tsr_ref c,
                               size_t ldc, size_t stride_c, size_t batch) {
    tsr_cl *cl = be->impl;
    int v = be->precision == TSR_PRECISION_BF16 ? 0 : be->precision == TSR_PRECISION_FP16 ? 1 : 2;
    cl_kernel kn = NULL;
    TSR_TRY(mma_kernel(be, v, &kn));
    if (m == 0 || n == 0 || batch == 0) return TSR_OK;
    /* Launches of at most MMA_MAX_GROUPS row blocks and batch entries each. */
    const size_t rows_max = (size_t)MMA_MAX_GROUPS * MMA_BM;
    for (size_t b0 = 0; b0 < batch; b0 += MMA_MAX_GROUPS) {
        size_t nb = batch - b0 < MMA_MAX_GROUPS ? batch - b0 : MMA_MAX_GROUPS;
        for (size_t r0 = 0; r0 < m; r0 += rows_max) {
            size_t mm = m - r0 < rows_max ? m - r0 : rows_max;
            size_t aoff = a.off + b0 * stride_a + (ta == TSR_TRANS ? r0 : r0 * lda);
            size_t coff = c.off + b0 * stride_c + r0 * ldc;
            cl_int err = CL_SUCCESS;
            cl_uint i = 0;
            set_u64(kn, &i, mm, &err);
            set_u64(kn, &i, n, &err);
            set_u64(kn, &i, k, &err);
            set_arg(kn, &i, sizeof alpha, &alpha, &err);
            set_operand(kn, &i, ta == TSR_TRANS, a, aoff, lda, stride_a, &err);
            set_operand(kn, &i, tb == TSR_TRANS, b, b.off + b0 * stride_b, ldb, stride_b, &err);
            set_arg(kn, &i, sizeof beta, &beta, &err);
            set_operand(kn, &i, -1, c, coff, ldc, stride_c, &err);
            if (err != CL_SUCCESS) return tsr_opencl_error(be->ctx, err, "clSetKernelArg(gemm_mma)");
            size_t local[3] = {MMA_THREADS, 1, 1};
            size_t global[3] = {(n + MMA_BN - 1) / MMA_BN * MMA_THREADS, (mm + MMA_BM - 1) / MMA_BM,
                                nb};
            err = clEnqueueNDRangeKernel(cl->queue, kn, 3, NULL, global, local, 0, NULL, NULL);
            if (err != CL_SUCCESS)
                return tsr_opencl_error(be->ctx, err, "clEnqueueNDRangeKernel(gemm_mma)");
            cl->mma_calls++;
        }
    }
    return TSR_OK;
}
