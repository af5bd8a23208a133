/* Devices: what the topology found and measured. One record per device a backend can drive. */
#ifndef TESSERA_DEVICE_H
#define TESSERA_DEVICE_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tsr_device_kind {
    TSR_DEVICE_HOST = 0,        /* the host CPU through the C/BLAS backend */
    TSR_DEVICE_CPU = 1,         /* an OpenCL CPU device (PoCL, ...) */
    TSR_DEVICE_GPU = 2,
    TSR_DEVICE_ACCELERATOR = 3, /* FPGAs and other CL_DEVICE_TYPE_ACCELERATOR */
    TSR_DEVICE_CUSTOM = 4
} tsr_device_kind;

typedef enum tsr_backend_kind {
    TSR_BACKEND_HOST = 0,
    TSR_BACKEND_OPENCL = 1
} tsr_backend_kind;

typedef struct tsr_device_info {
    char id[64];                 /* stable text id: "host", "opencl:<platform>:<device>" */
    tsr_device_kind kind;
    tsr_backend_kind backend;
    char vendor[128];
    char name[128];
    char driver_version[64];
    char platform[128];          /* OpenCL platform name, "" for the host */
    int platform_index;          /* OpenCL enumeration indices, -1 for the host */
    int device_index;
    unsigned compute_units;
    unsigned clock_mhz;
    uint64_t global_mem_bytes;
    uint64_t local_mem_bytes;
    uint64_t max_alloc_bytes;
    int fp64;                    /* 1 when double precision is supported */
    int fp16;                    /* 1 when cl_khr_fp16 (or native half) is supported */
    char pci_bus_id[32];         /* "0000:65:00.0", "" when not a PCI device or unknown */
    int numa_node;               /* -1 when unknown */
    char cpuset[128];            /* nearby cores as a list, "0-15"; "" when unknown */

    /* Capability. peak is analytic (CUs x clock x lanes x 2); the rest are measured, 0 = not yet. */
    double peak_gflops;
    double gemm_gflops;          /* best SGEMM rate measured */
    double mem_bw_gbps;          /* device memory bandwidth (copy) */
    double h2d_gbps;             /* host -> device */
    double d2h_gbps;             /* device -> host */
    double launch_us;            /* kernel launch latency */

    int same_as;                 /* index of the record for the same physical device, -1 if none */
    int usable;                  /* 0 when a duplicate path that calibration found slower */

    /* Added by the topology module. */
    int host;                    /* index of its host in a topology (0 on this machine) */
    int absent;                  /* 1: described by a topology file, not present here (planning only) */
    int gemm_points;             /* SGEMM rate measured at gemm_n[i]^3, i < gemm_points */
    unsigned gemm_n[4];
    double gemm_gflops_n[4];
} tsr_device_info;

const char *tsr_device_kind_name(tsr_device_kind kind);
/* The OpenBLAS core type to set in OPENBLAS_CORETYPE before the process starts when OpenBLAS
 * chose generic kernels on a CPU that has better ones (VMs that hide the CPU model), e.g.
 * "SkylakeX"; NULL when its choice is fine or OPENBLAS_CORETYPE is set. The host backend logs
 * a warning then; the tools re-execute themselves with it (TSR_NO_BLAS_REEXEC=1 stops that). */
const char *tsr_blas_better_coretype(void);

#ifdef __cplusplus
}
#endif
#endif
