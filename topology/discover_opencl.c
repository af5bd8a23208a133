/* OpenCL device enumeration: one record per device of every platform. */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>
#include <string.h>
#include "lib/internal.h"
#include "topology/topology.h"

static void get_str(cl_device_id d, cl_device_info what, char *dst, size_t n) {
    dst[0] = '\0';
    if (clGetDeviceInfo(d, what, n, dst, NULL) != CL_SUCCESS) dst[0] = '\0';
    dst[n - 1] = '\0';
}

static tsr_device_kind kind_of(cl_device_type t) {
    if (t & CL_DEVICE_TYPE_GPU) return TSR_DEVICE_GPU;
    if (t & CL_DEVICE_TYPE_ACCELERATOR) return TSR_DEVICE_ACCELERATOR;
    if (t & CL_DEVICE_TYPE_CPU) return TSR_DEVICE_CPU;
    return TSR_DEVICE_CUSTOM;
}

tsr_status tsr_topology_opencl_devices(tsr_context *ctx, tsr_device_info **devices, int *count,
                                       int *capacity) {
    cl_uint nplat = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &nplat);
    if (err != CL_SUCCESS || nplat == 0) {
        /* No ICD or no platform is not an error: the host device remains. */
        tsr_log(ctx, TSR_LOG_INFO, "no OpenCL platform (clGetPlatformIDs: %d)", (int)err);
        return TSR_OK;
    }
    cl_platform_id plats[16];
    if (nplat > 16) nplat = 16;
    if (clGetPlatformIDs(nplat, plats, NULL) != CL_SUCCESS) return TSR_OK;
    for (cl_uint p = 0; p < nplat; p++) {
        cl_uint ndev = 0;
        cl_device_id devs[64];
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 64, devs, &ndev) != CL_SUCCESS) continue;
        if (ndev > 64) ndev = 64;
        char pname[128] = "";
        clGetPlatformInfo(plats[p], CL_PLATFORM_NAME, sizeof pname, pname, NULL);
        pname[sizeof pname - 1] = '\0';
        for (cl_uint d = 0; d < ndev; d++) {
            if (*count == *capacity) {
                int cap = *capacity * 2;
                tsr_device_info *grown = tsr_calloc(ctx, (size_t)cap, sizeof *grown);
                if (!grown) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "device list");
                memcpy(grown, *devices, (size_t)*count * sizeof *grown);
                tsr_free(ctx, *devices);
                *devices = grown;
                *capacity = cap;
            }
            tsr_device_info *info = &(*devices)[(*count)++];
            memset(info, 0, sizeof *info);
            snprintf(info->id, sizeof info->id, "opencl:%u:%u", p, d);
            info->backend = TSR_BACKEND_OPENCL;
            info->platform_index = (int)p;
            info->device_index = (int)d;
            info->numa_node = -1;
            info->same_as = -1;
            info->usable = 1;
            tsr_strlcpy(info->platform, pname, sizeof info->platform);
            cl_device_type type = 0;
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
            info->kind = kind_of(type);
            get_str(devs[d], CL_DEVICE_VENDOR, info->vendor, sizeof info->vendor);
            get_str(devs[d], CL_DEVICE_NAME, info->name, sizeof info->name);
            get_str(devs[d], CL_DRIVER_VERSION, info->driver_version, sizeof info->driver_version);
            cl_uint u = 0;
            cl_ulong ul = 0;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof u, &u, NULL) == CL_SUCCESS)
                info->compute_units = u;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_MAX_CLOCK_FREQUENCY, sizeof u, &u, NULL) == CL_SUCCESS)
                info->clock_mhz = u;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof ul, &ul, NULL) == CL_SUCCESS)
                info->global_mem_bytes = ul;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_LOCAL_MEM_SIZE, sizeof ul, &ul, NULL) == CL_SUCCESS)
                info->local_mem_bytes = ul;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof ul, &ul, NULL) == CL_SUCCESS)
                info->max_alloc_bytes = ul;
            cl_device_fp_config fp = 0;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp, &fp, NULL) == CL_SUCCESS)
                info->fp64 = fp != 0;
            char ext[4096];
            get_str(devs[d], CL_DEVICE_EXTENSIONS, ext, sizeof ext);
            info->fp16 = strstr(ext, "cl_khr_fp16") != NULL;
        }
    }
    return TSR_OK;
}
