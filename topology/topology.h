/* Internal: device discovery. The topology module fills the context's device list. */
#ifndef TSR_TOPOLOGY_H
#define TSR_TOPOLOGY_H
#include "tessera.h"

/* Discovers the host CPU and (unless disabled) every OpenCL device. Allocates *devices
 * with the context allocator; the context frees it. */
tsr_status tsr_topology_discover(tsr_context *ctx, tsr_device_info **devices, int *count);

/* Fills the host-CPU record (sysconf, /proc/cpuinfo). */
void tsr_topology_host_info(tsr_device_info *info);

#if TSR_WITH_OPENCL
/* Appends one record per OpenCL device to a growable array. */
tsr_status tsr_topology_opencl_devices(tsr_context *ctx, tsr_device_info **devices, int *count,
                                       int *capacity);
#endif

#endif
