/* Internal: the topology module (discovery, locality, capability, files, cluster view). */
#ifndef TSR_TOPOLOGY_H
#define TSR_TOPOLOGY_H
#include <stdint.h>
#include "tessera.h"

struct tsr_topology {
    tsr_context *ctx; /* allocator and errors */
    tsr_host_info *hosts;
    int host_count;
    tsr_device_info *devices;
    int device_count;
    tsr_rank_info *ranks;
    int rank_count;
    void *hwloc; /* hwloc_topology_t of this machine (context state only) */
};

/* Discovers this machine: hwloc first (PoCL breaks hwloc's plugins once it initialises), then
 * the host CPU and (unless disabled) every OpenCL device, their locality, the same_as pairs and
 * cached capability. Allocates *devices with the context allocator (the context frees it) and
 * keeps the host record and hwloc handle in ctx->topology. TSR_TOPOLOGY=file.json replaces the
 * devices by those of the file (tsr_context_use_topology). */
tsr_status tsr_topology_discover(tsr_context *ctx, tsr_device_info **devices, int *count);
/* Frees ctx->topology (called by tsr_context_free). */
void tsr_topology_release(tsr_context *ctx);

/* Fills the host-CPU record (sysconf, /proc/cpuinfo). */
void tsr_topology_host_info(tsr_device_info *info);
/* Fills a host summary from sysconf/sysfs (used without hwloc). */
void tsr_topology_host_summary_sysfs(tsr_host_info *host);
/* Float lanes x FMA pipes per core of this x86 CPU from /proc/cpuinfo flags (1 if unknown). */
int tsr_topology_cpu_lanes(void);

#if TSR_WITH_OPENCL
/* Appends one record per OpenCL device to a growable array. `hw` is the hwloc topology (or
 * NULL) used to find each device's PCI locality. */
tsr_status tsr_topology_opencl_devices(tsr_context *ctx, void *hw, tsr_device_info **devices,
                                       int *count, int *capacity);
#endif

/* ---- CPU masks: up to 1024 CPUs, text form "0-3,8" ---- */
#define TSR_CPUMASK_WORDS 16
typedef struct tsr_cpumask {
    uint64_t bits[TSR_CPUMASK_WORDS];
} tsr_cpumask;
int tsr_cpumask_parse(const char *list, tsr_cpumask *m);            /* 0, or -1 when malformed */
void tsr_cpumask_format(const tsr_cpumask *m, char *buf, size_t n); /* "" when empty */
int tsr_cpumask_count(const tsr_cpumask *m);
static inline void tsr_cpumask_set(tsr_cpumask *m, unsigned cpu) {
    if (cpu < 64 * TSR_CPUMASK_WORDS) m->bits[cpu / 64] |= 1ull << (cpu % 64);
}
static inline int tsr_cpumask_isset(const tsr_cpumask *m, unsigned cpu) {
    return cpu < 64 * TSR_CPUMASK_WORDS && (m->bits[cpu / 64] >> (cpu % 64)) & 1;
}

/* CPUs for slice `i` of `k` ranks sharing the locality `near`: the cores (each a mask of its
 * PUs) that intersect `near` are split into k contiguous runs of whole cores; with fewer cores
 * than ranks, rank i gets core i mod n. Result restricted to `near`; `near` itself when no core
 * intersects. */
void tsr_topology_split_cpus(const tsr_cpumask *cores, int ncores, const tsr_cpumask *near, int k,
                             int i, tsr_cpumask *out);

/* Recomputes ranks[].cpuset of the ranks on `host` from that host's cores (masks of PUs). */
void tsr_topology_assign_bindings(tsr_topology *t, int host, const tsr_cpumask *cores, int ncores);
/* This machine's cores: hwloc when the context has it, else sysfs. */
tsr_status tsr_topology_local_cores(tsr_context *ctx, tsr_cpumask **cores, int *count);

/* ---- hwloc (files named ..._hwloc.c, only with WITH_HWLOC=1) ---- */
#if TSR_WITH_HWLOC
/* Loads this machine's topology with I/O discovery (PCI devices, OS devices). */
tsr_status tsr_hwloc_load(tsr_context *ctx, void **out);
/* Loads a synthetic description ("pack:2 numa:2 core:4 pu:2") or, when it starts with '<' or
 * ends in .xml, an hwloc XML file; for tests of the locality logic. */
tsr_status tsr_hwloc_load_synthetic(tsr_context *ctx, const char *desc, void **out);
void tsr_hwloc_free(void *hw);
void tsr_hwloc_host_summary(void *hw, tsr_host_info *host);
/* Locality of PCI device domain:bus:dev.func: its NUMA node (-1 if none or several) and nearby
 * cpuset; `found` (may be NULL) gets the bus id of the device used. When no device has that id,
 * the only display controller on that bus stands in (mis-decoded NVIDIA slots). Returns 0 when
 * a device was found, -1 otherwise. */
int tsr_hwloc_pci_locality(void *hw, unsigned domain, unsigned bus, unsigned dev, unsigned func,
                           char *found, size_t found_size, int *numa_node, char *cpuset,
                           size_t cpuset_size);
/* The machine's whole cpuset and single NUMA node (-1 when several) for CPU devices. */
void tsr_hwloc_machine_locality(void *hw, int *numa_node, char *cpuset, size_t cpuset_size);
/* One mask per core, in logical order (*cores allocated with the context allocator). */
tsr_status tsr_hwloc_cores(tsr_context *ctx, void *hw, tsr_cpumask **cores, int *count);
/* Binds the whole process to `cpuset`. */
tsr_status tsr_hwloc_bind(tsr_context *ctx, void *hw, const char *cpuset);
#endif
#if TSR_WITH_HWLOC && TSR_WITH_OPENCL
/* PCI locality of an OpenCL device through hwloc/opencl.h (cl_device_id as void*). Returns 0
 * and fills the fields when found. */
int tsr_hwloc_opencl_locality(void *hw, void *cl_device, char *pci_bus_id, size_t pci_size,
                              int *numa_node, char *cpuset, size_t cpuset_size);
#endif

/* Cores of this machine without hwloc: sysfs thread_siblings_list, else one per CPU. */
tsr_status tsr_topology_cores_sysfs(tsr_context *ctx, tsr_cpumask **cores, int *count);
/* sysfs locality of a PCI device "dddd:bb:dd.f": numa_node and local_cpulist. 0 when found. */
int tsr_sysfs_pci_locality(const char *bus_id, int *numa_node, char *cpuset, size_t cpuset_size);

/* ---- topology objects ---- */
tsr_status tsr_topology_alloc(tsr_context *ctx, int hosts, int devices, int ranks,
                              tsr_topology **out);
/* JSON text of the description (cJSON-allocated: free with free()). NULL when out of memory. */
char *tsr_topology_to_json(const tsr_topology *topo, int pretty);
/* Marks same_as pairs (host backend and an OpenCL CPU device on one host) and, when both
 * are measured, keeps only the faster usable. */
void tsr_topology_pair_devices(tsr_device_info *devices, int count);
/* Capability figures as a cJSON object (the "capability" member of a device), NULL when out
 * of memory; and back, with errors naming `where` ("devices[2]"). */
struct cJSON;
struct cJSON *tsr_capability_json(const tsr_device_info *d);
tsr_status tsr_capability_read(tsr_context *ctx, const struct cJSON *cap, const char *where,
                               tsr_device_info *d);
/* Reads cached capability into the context's devices (no measurement). Silent when there is
 * no cache, a warning when it is corrupt; fails only when out of memory. */
tsr_status tsr_capability_apply_cache(tsr_context *ctx);
/* The context's own hostname. */
void tsr_topology_hostname(char *buf, size_t n);

#endif
