/* OpenCL device enumeration: one record per device of every platform, with its PCI locality
 * (hwloc/opencl.h, else cl_khr_pci_bus_info + hwloc or sysfs) and analytic peak. */
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <CL/cl_ext.h>
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "topology/topology.h"

#define NV_COMPUTE_CAPABILITY_MAJOR 0x4000 /* cl_nv_device_attribute_query */
#define NV_COMPUTE_CAPABILITY_MINOR 0x4001

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

/* FP32 lanes per compute unit, so that peak = CUs x clock x lanes x 2 (FMA). */
static unsigned lanes_of(cl_device_id d, const tsr_device_info *info, const char *ext) {
    if (info->kind == TSR_DEVICE_CPU) return (unsigned)tsr_topology_cpu_lanes();
    if (info->kind == TSR_DEVICE_GPU) {
        if (strstr(ext, "cl_nv_device_attribute_query")) {
            cl_uint major = 0, minor = 0;
            clGetDeviceInfo(d, NV_COMPUTE_CAPABILITY_MAJOR, sizeof major, &major, NULL);
            clGetDeviceInfo(d, NV_COMPUTE_CAPABILITY_MINOR, sizeof minor, &minor, NULL);
            /* FP32 cores per SM: Pascal GP100, Volta and A100 have 64, the others 128. */
            if ((major == 6 && minor == 0) || major == 7 || (major == 8 && minor == 0)) return 64;
            return 128;
        }
        if (strstr(info->vendor, "Advanced Micro Devices") || strstr(info->vendor, "AMD"))
            return 64;
        if (strstr(info->vendor, "Intel")) return 8;
    }
    cl_uint w = 0;
    clGetDeviceInfo(d, CL_DEVICE_NATIVE_VECTOR_WIDTH_FLOAT, sizeof w, &w, NULL);
    return w ? w : 1;
}

static void locate(void *hw, cl_device_id d, tsr_device_info *info, const char *ext) {
    char khr_id[32] = "";
    if (strstr(ext, "cl_khr_pci_bus_info")) {
        cl_device_pci_bus_info_khr bi;
        if (clGetDeviceInfo(d, CL_DEVICE_PCI_BUS_INFO_KHR, sizeof bi, &bi, NULL) == CL_SUCCESS)
            snprintf(khr_id, sizeof khr_id, "%04x:%02x:%02x.%x", bi.pci_domain, bi.pci_bus,
                     bi.pci_device, bi.pci_function);
    }
#if TSR_WITH_HWLOC
    if (hw) {
        char id[32] = "";
        int numa = -1;
        char cpus[128] = "";
        /* hwloc decodes some NVIDIA slots wrongly (DESIGN.md): trust the KHR id over it. */
        if (tsr_hwloc_opencl_locality(hw, d, id, sizeof id, &numa, cpus, sizeof cpus) == 0 &&
            (!khr_id[0] || strcmp(id, khr_id) == 0)) {
            tsr_strlcpy(info->pci_bus_id, id, sizeof info->pci_bus_id);
            info->numa_node = numa;
            tsr_strlcpy(info->cpuset, cpus, sizeof info->cpuset);
            return;
        }
        if (khr_id[0]) {
            unsigned dom, bus, dev, fn;
            tsr_strlcpy(info->pci_bus_id, khr_id, sizeof info->pci_bus_id);
            if (sscanf(khr_id, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) == 4 &&
                tsr_hwloc_pci_locality(hw, dom, bus, dev, fn, NULL, 0, &info->numa_node,
                                       info->cpuset, sizeof info->cpuset) == 0)
                return;
        }
        if (info->kind == TSR_DEVICE_CPU) { /* hwloc skips CPU devices: they span the machine */
            tsr_hwloc_machine_locality(hw, &info->numa_node, info->cpuset, sizeof info->cpuset);
            return;
        }
    }
#else
    (void)hw;
#endif
    if (khr_id[0]) {
        tsr_strlcpy(info->pci_bus_id, khr_id, sizeof info->pci_bus_id);
        tsr_sysfs_pci_locality(khr_id, &info->numa_node, info->cpuset, sizeof info->cpuset);
    } else if (info->kind == TSR_DEVICE_CPU) {
        tsr_device_info host;
        tsr_topology_host_info(&host);
        info->numa_node = host.numa_node;
        tsr_strlcpy(info->cpuset, host.cpuset, sizeof info->cpuset);
    }
}

tsr_status tsr_topology_opencl_devices(tsr_context *ctx, void *hw, tsr_device_info **devices,
                                       int *count, int *capacity) {
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
            if (clGetDeviceInfo(devs[d], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof u, &u, NULL) ==
                CL_SUCCESS)
                info->compute_units = u;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_MAX_CLOCK_FREQUENCY, sizeof u, &u, NULL) ==
                CL_SUCCESS)
                info->clock_mhz = u;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof ul, &ul, NULL) ==
                CL_SUCCESS)
                info->global_mem_bytes = ul;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_LOCAL_MEM_SIZE, sizeof ul, &ul, NULL) ==
                CL_SUCCESS)
                info->local_mem_bytes = ul;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof ul, &ul, NULL) ==
                CL_SUCCESS)
                info->max_alloc_bytes = ul;
            cl_device_fp_config fp = 0;
            if (clGetDeviceInfo(devs[d], CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp, &fp, NULL) ==
                CL_SUCCESS)
                info->fp64 = fp != 0;
            char ext[8192];
            get_str(devs[d], CL_DEVICE_EXTENSIONS, ext, sizeof ext);
            info->fp16 = strstr(ext, "cl_khr_fp16") != NULL;
            info->peak_gflops = (double)info->compute_units * info->clock_mhz *
                                lanes_of(devs[d], info, ext) * 2.0 / 1000.0;
            locate(hw, devs[d], info, ext);
        }
    }
    return TSR_OK;
}
