/* OpenCL backend: device opening, one in-order queue, kernels created once, device memory.
 * The operations live in ops_opencl.c, program building and caching in program_opencl.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backends/opencl/opencl.h"
#include "lib/core/internal.h"

static const char *const kernel_names[TSR_CL_K_COUNT] = {
#define TSR_CL_NAME(name) #name,
    TSR_CL_KERNEL_LIST(TSR_CL_NAME)
#undef TSR_CL_NAME
};

/* Kernels that reduce in local memory need a power-of-two work-group. */
static int is_reduction(int k) {
    return k == TSR_CL_K_sum_partial || k == TSR_CL_K_sum_final ||
           k == TSR_CL_K_bias_grad_rows || k == TSR_CL_K_softmax_xent_forward ||
           k == TSR_CL_K_layernorm_forward || k == TSR_CL_K_layernorm_backward_rows ||
           k == TSR_CL_K_attn_softmax || k == TSR_CL_K_attn_softmax_backward ||
           k == TSR_CL_K_xent_forward;
}

tsr_status tsr_opencl_error(tsr_context *ctx, cl_int err, const char *call) {
    tsr_status st = (err <= -1 && err >= -68) ? (tsr_status)err : TSR_ERR_OPENCL;
    if (st == TSR_ERR_OPENCL)
        return tsr_error(ctx, st, "%s: OpenCL error %d", call, (int)err);
    return tsr_error(ctx, st, "%s: %s", call, tsr_status_name(st));
}

tsr_cl *tsr_opencl_state(tsr_backend *be) {
    return (be && be->iface == &tsr_opencl_iface) ? be->impl : NULL;
}

tsr_cl_origin tsr_opencl_program_origin(tsr_backend *be, const char **path) {
    tsr_cl *cl = tsr_opencl_state(be);
    if (path) *path = cl ? cl->program_path : "";
    return cl ? cl->origin : TSR_CL_FROM_SOURCE;
}

void tsr_opencl_destroy(tsr_backend *be) {
    if (!be) return;
    tsr_cl *cl = be->impl;
    if (cl) {
        if (cl->queue) clFinish(cl->queue);
        for (int k = 0; k < TSR_CL_K_COUNT; k++)
            if (cl->kernels[k]) clReleaseKernel(cl->kernels[k]);
        tsr_opencl_mma_release(cl);
        if (cl->scratch) clReleaseMemObject(cl->scratch);
        if (cl->program) clReleaseProgram(cl->program);
        if (cl->queue) clReleaseCommandQueue(cl->queue);
        if (cl->context) clReleaseContext(cl->context);
        tsr_free(be->ctx, cl);
    }
    tsr_free(be->ctx, be);
}

/* Finds platform/device by the enumeration indices of the device record. */
static tsr_status find_device(tsr_context *ctx, const tsr_device_info *info, tsr_cl *cl) {
    cl_uint nplat = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &nplat);
    if (err != CL_SUCCESS && err != -1001 /* CL_PLATFORM_NOT_FOUND_KHR: no ICD */)
        return tsr_opencl_error(ctx, err, "clGetPlatformIDs");
    if (info->platform_index < 0 || (cl_uint)info->platform_index >= nplat)
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "%s: OpenCL platform %d does not exist (%u platforms)",
                         info->id, info->platform_index, nplat);
    cl_platform_id plats[64];
    if (nplat > 64) nplat = 64;
    err = clGetPlatformIDs(nplat, plats, NULL);
    if (err != CL_SUCCESS) return tsr_opencl_error(ctx, err, "clGetPlatformIDs");
    cl->platform = plats[info->platform_index];
    cl_uint ndev = 0;
    cl_device_id devs[64];
    err = clGetDeviceIDs(cl->platform, CL_DEVICE_TYPE_ALL, 64, devs, &ndev);
    if (err != CL_SUCCESS && err != CL_DEVICE_NOT_FOUND)
        return tsr_opencl_error(ctx, err, "clGetDeviceIDs");
    if (err == CL_DEVICE_NOT_FOUND) ndev = 0;
    if (ndev > 64) ndev = 64;
    if (info->device_index < 0 || (cl_uint)info->device_index >= ndev)
        return tsr_error(ctx, TSR_ERR_NOT_FOUND, "%s: platform %d has no device %d (%u devices)",
                         info->id, info->platform_index, info->device_index, ndev);
    cl->device = devs[info->device_index];
    return TSR_OK;
}

/* Local size per kernel from what the compiled kernel allows on this device. */
static tsr_status pick_work_groups(tsr_context *ctx, tsr_cl *cl) {
    cl_ulong local_mem = 0;
    clGetDeviceInfo(cl->device, CL_DEVICE_LOCAL_MEM_SIZE, sizeof local_mem, &local_mem, NULL);
    for (int k = 0; k < TSR_CL_K_COUNT; k++) {
        size_t max_wg = 1, multiple = 1;
        cl_int err = clGetKernelWorkGroupInfo(cl->kernels[k], cl->device, CL_KERNEL_WORK_GROUP_SIZE,
                                              sizeof max_wg, &max_wg, NULL);
        if (err != CL_SUCCESS) return tsr_opencl_error(ctx, err, "clGetKernelWorkGroupInfo");
        if (clGetKernelWorkGroupInfo(cl->kernels[k], cl->device,
                                     CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE, sizeof multiple,
                                     &multiple, NULL) != CL_SUCCESS || multiple == 0)
            multiple = 1;
        /* 256 suits GPUs (8 warps) and PoCL alike; reductions keep wg floats in local memory */
        size_t wg = max_wg < 256 ? max_wg : 256;
        if (local_mem && wg * sizeof(float) * 2 > local_mem) wg = (size_t)(local_mem / 8);
        if (is_reduction(k)) {
            size_t p = 1;
            while (p * 2 <= wg) p *= 2;
            wg = p;
        } else if (wg > multiple) {
            wg -= wg % multiple;
        }
        cl->wg[k] = wg ? wg : 1;
    }
    return TSR_OK;
}

tsr_status tsr_backend_opencl_create_ex(tsr_context *ctx, const tsr_device_info *info,
                                        const tsr_opencl_options *opts, tsr_backend **out) {
    if (!ctx || !info || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_backend_opencl_create: NULL argument");
    *out = NULL;
    if (info->backend != TSR_BACKEND_OPENCL)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "device %s is not an OpenCL device", info->id);
    tsr_opencl_options defaults = {NULL, 0, TSR_CL_BATCHED_AUTO, TSR_CL_MMA_CONTEXT, 0};
    if (!opts) opts = &defaults;

    tsr_backend *be = tsr_calloc(ctx, 1, sizeof *be);
    tsr_cl *cl = tsr_calloc(ctx, 1, sizeof *cl);
    if (!be || !cl) {
        tsr_free(ctx, be);
        tsr_free(ctx, cl);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "OpenCL backend state");
    }
    be->iface = &tsr_opencl_iface;
    be->ctx = ctx;
    be->device = *info;
    be->impl = cl;
    tsr_strlcpy(cl->build_options, "-cl-std=CL1.2", sizeof cl->build_options);
    if (opts->batched_gemm < TSR_CL_BATCHED_AUTO || opts->batched_gemm > TSR_CL_BATCHED_LOOP) {
        tsr_free(ctx, be);
        tsr_free(ctx, cl);
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "OpenCL options: unknown batched_gemm mode %d",
                         opts->batched_gemm);
    }
    cl->batched = opts->batched_gemm != TSR_CL_BATCHED_AUTO ? (tsr_cl_batched)opts->batched_gemm
                  : info->kind == TSR_DEVICE_GPU           ? TSR_CL_BATCHED_CLBLAST
                                                           : TSR_CL_BATCHED_LOOP;

    tsr_status st = find_device(ctx, info, cl);
    cl_int err = CL_SUCCESS;
    if (st == TSR_OK) {
        cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)cl->platform, 0};
        cl->context = clCreateContext(props, 1, &cl->device, NULL, NULL, &err);
        if (err != CL_SUCCESS) st = tsr_opencl_error(ctx, err, "clCreateContext");
    }
    if (st == TSR_OK) {
        cl->queue = clCreateCommandQueue(cl->context, cl->device, 0, &err);
        if (err != CL_SUCCESS) st = tsr_opencl_error(ctx, err, "clCreateCommandQueue");
    }
    if (st == TSR_OK) {
        cl->scratch = clCreateBuffer(cl->context, CL_MEM_READ_WRITE,
                                     TSR_CL_SUM_GROUPS * sizeof(float), NULL, &err);
        if (err != CL_SUCCESS) st = tsr_opencl_error(ctx, err, "clCreateBuffer(scratch)");
    }
    if (st == TSR_OK) st = tsr_opencl_program_load(be, opts);
    for (int k = 0; st == TSR_OK && k < TSR_CL_K_COUNT; k++) {
        cl->kernels[k] = clCreateKernel(cl->program, kernel_names[k], &err);
        if (err != CL_SUCCESS) {
            char call[96];
            snprintf(call, sizeof call, "clCreateKernel(%s)", kernel_names[k]);
            st = tsr_opencl_error(ctx, err, call);
        }
    }
    if (st == TSR_OK) st = pick_work_groups(ctx, cl);
    if (st == TSR_OK) st = tsr_opencl_clblast_params(be, ctx->opts.clblast_params);
    if (st == TSR_OK) st = tsr_opencl_mma_setup(be, opts);
    if (st != TSR_OK) {
        tsr_opencl_destroy(be);
        return st;
    }
    tsr_log(ctx, TSR_LOG_DEBUG, "%s: OpenCL backend on %s (program %s%s%s)", info->id, info->name,
            cl->origin == TSR_CL_FROM_SOURCE ? "compiled"
            : cl->origin == TSR_CL_FROM_CACHE ? "from cache" : "from binary",
            cl->program_path[0] ? " " : "", cl->program_path);
    *out = be;
    return TSR_OK;
}

tsr_status tsr_backend_opencl_create(tsr_context *ctx, const tsr_device_info *info,
                                     tsr_backend **out) {
    return tsr_backend_opencl_create_ex(ctx, info, NULL, out);
}

/* ---- memory ---- */

static int is_alloc_failure(cl_int err) {
    return err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES ||
           err == CL_INVALID_BUFFER_SIZE || err == CL_OUT_OF_HOST_MEMORY;
}

tsr_status tsr_opencl_buf_alloc(tsr_backend *be, tsr_buf *buf) {
    tsr_cl *cl = be->impl;
    /* OpenCL rejects empty buffers; a 4-byte one keeps zero-sized tensors valid. */
    size_t bytes = buf->bytes ? buf->bytes : 4;
    /* Some drivers (NVIDIA's) accept buffers beyond their own per-allocation limit and fail
     * later or never; refuse them here so every device behaves alike. */
    if (be->device.max_alloc_bytes && bytes > be->device.max_alloc_bytes)
        return tsr_error(be->ctx, TSR_ERR_DEVICE_MEMORY,
                         "%s (%s): cannot allocate %zu bytes of device memory: more than "
                         "CL_DEVICE_MAX_MEM_ALLOC_SIZE (%llu)", be->device.id, be->device.name,
                         buf->bytes, (unsigned long long)be->device.max_alloc_bytes);
    cl_int err;
    cl_mem mem = clCreateBuffer(cl->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err == CL_SUCCESS) {
        /* Drivers allocate lazily: zero-filling now makes a shortage show here, not in an op. */
        cl_event ev = NULL;
        if (bytes % 4 == 0) {
            cl_uint zero = 0;
            err = clEnqueueFillBuffer(cl->queue, mem, &zero, 4, 0, bytes, 0, NULL, &ev);
        } else {
            cl_uchar zero = 0;
            err = clEnqueueFillBuffer(cl->queue, mem, &zero, 1, 0, bytes, 0, NULL, &ev);
        }
        if (err == CL_SUCCESS) {
            err = clWaitForEvents(1, &ev);
            cl_int exec = CL_COMPLETE;
            if (err == CL_EXEC_STATUS_ERROR_FOR_EVENTS_IN_WAIT_LIST || err == CL_SUCCESS)
                clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof exec, &exec, NULL);
            if (exec < 0) err = exec;
        }
        if (ev) clReleaseEvent(ev);
        if (err != CL_SUCCESS) clReleaseMemObject(mem);
    }
    if (err != CL_SUCCESS) {
        if (is_alloc_failure(err))
            return tsr_error(be->ctx, TSR_ERR_DEVICE_MEMORY,
                             "%s (%s): cannot allocate %zu bytes of device memory: %s",
                             be->device.id, be->device.name, buf->bytes,
                             tsr_status_name((tsr_status)err));
        return tsr_opencl_error(be->ctx, err, "clCreateBuffer");
    }
    buf->impl = mem;
    buf->host = NULL;
    return TSR_OK;
}

void tsr_opencl_buf_free(tsr_backend *be, tsr_buf *buf) {
    (void)be;
    if (buf->impl) clReleaseMemObject((cl_mem)buf->impl);
    buf->impl = NULL;
}

tsr_status tsr_opencl_write(tsr_backend *be, tsr_buf *dst, size_t off, const void *src, size_t n) {
    tsr_cl *cl = be->impl;
    /* blocking: the caller may reuse src as soon as we return */
    cl_int err = clEnqueueWriteBuffer(cl->queue, (cl_mem)dst->impl, CL_TRUE, off, n, src, 0, NULL,
                                      NULL);
    return err == CL_SUCCESS ? TSR_OK : tsr_opencl_error(be->ctx, err, "clEnqueueWriteBuffer");
}

tsr_status tsr_opencl_read(tsr_backend *be, tsr_buf *src, size_t off, void *dst, size_t n) {
    tsr_cl *cl = be->impl;
    cl_int err = clEnqueueReadBuffer(cl->queue, (cl_mem)src->impl, CL_TRUE, off, n, dst, 0, NULL,
                                     NULL);
    return err == CL_SUCCESS ? TSR_OK : tsr_opencl_error(be->ctx, err, "clEnqueueReadBuffer");
}

tsr_status tsr_opencl_copy(tsr_backend *be, tsr_buf *dst, size_t dst_off, tsr_buf *src,
                           size_t src_off, size_t n) {
    tsr_cl *cl = be->impl;
    cl_mem s = src->impl, d = dst->impl;
    /* OpenCL forbids overlapping copies within one buffer: bounce through a temporary. */
    if (s == d && src_off < dst_off + n && dst_off < src_off + n) {
        if (src_off == dst_off) return TSR_OK;
        cl_int err;
        cl_mem tmp = clCreateBuffer(cl->context, CL_MEM_READ_WRITE, n, NULL, &err);
        if (err != CL_SUCCESS)
            return tsr_error(be->ctx, TSR_ERR_DEVICE_MEMORY,
                             "overlapping copy of %zu bytes: temporary buffer: %s", n,
                             tsr_status_name((tsr_status)err));
        err = clEnqueueCopyBuffer(cl->queue, s, tmp, src_off, 0, n, 0, NULL, NULL);
        if (err == CL_SUCCESS) err = clEnqueueCopyBuffer(cl->queue, tmp, d, 0, dst_off, n, 0, NULL, NULL);
        clReleaseMemObject(tmp); /* released once the queued copies are done */
        return err == CL_SUCCESS ? TSR_OK : tsr_opencl_error(be->ctx, err, "clEnqueueCopyBuffer");
    }
    cl_int err = clEnqueueCopyBuffer(cl->queue, s, d, src_off, dst_off, n, 0, NULL, NULL);
    return err == CL_SUCCESS ? TSR_OK : tsr_opencl_error(be->ctx, err, "clEnqueueCopyBuffer");
}

tsr_status tsr_opencl_fill(tsr_backend *be, tsr_ref x, size_t n, float value) {
    tsr_cl *cl = be->impl;
    cl_float v = value;
    cl_int err = clEnqueueFillBuffer(cl->queue, (cl_mem)x.buf->impl, &v, sizeof v,
                                     x.off * sizeof(float), n * sizeof(float), 0, NULL, NULL);
    return err == CL_SUCCESS ? TSR_OK : tsr_opencl_error(be->ctx, err, "clEnqueueFillBuffer");
}

tsr_status tsr_opencl_finish(tsr_backend *be) {
    tsr_cl *cl = be->impl;
    cl_int err = clFinish(cl->queue);
    return err == CL_SUCCESS ? TSR_OK : tsr_opencl_error(be->ctx, err, "clFinish");
}
