/* Locality of an OpenCL device through hwloc/opencl.h (AMD/NVIDIA attribute queries). The
 * caller falls back to cl_khr_pci_bus_info when this fails or disagrees with it. */
#include "lib/core/internal.h"
#include "topology/topology.h"
#if TSR_WITH_OPENCL
#define CL_TARGET_OPENCL_VERSION 120
#include <hwloc.h>
#include <hwloc/opencl.h>
#include <stdio.h>

int tsr_hwloc_opencl_locality(void *hw, void *cl_device, char *pci_bus_id, size_t pci_size,
                              int *numa_node, char *cpuset, size_t cpuset_size) {
    hwloc_topology_t t = hw;
    cl_device_id dev = cl_device;
    unsigned domain, bus, d, f;
    if (hwloc_opencl_get_device_pci_busid(dev, &domain, &bus, &d, &f) != 0) return -1;
    /* The OS device exists only when hwloc's OpenCL plugin ran; the PCI object is enough. */
    hwloc_obj_t osdev = hwloc_opencl_get_device_osdev(t, dev);
    if (osdev && osdev->parent && osdev->parent->type == HWLOC_OBJ_PCI_DEVICE) {
        hwloc_obj_t pci = osdev->parent;
        domain = pci->attr->pcidev.domain, bus = pci->attr->pcidev.bus;
        d = pci->attr->pcidev.dev, f = pci->attr->pcidev.func;
    }
    return tsr_hwloc_pci_locality(hw, domain, bus, d, f, pci_bus_id, pci_size, numa_node, cpuset,
                                  cpuset_size);
}
#endif
