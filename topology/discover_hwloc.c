/* hwloc side of discovery: the machine (packages, NUMA nodes, cores, PCI devices), device
 * locality by PCI bus id, core lists and CPU binding. */
#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "topology/topology.h"

static tsr_status finish_load(tsr_context *ctx, hwloc_topology_t t, const char *what) {
    if (hwloc_topology_load(t) != 0) {
        int e = errno;
        hwloc_topology_destroy(t);
        return tsr_error(ctx, TSR_ERR_HWLOC, "hwloc: loading %s failed (%s)", what, strerror(e));
    }
    return TSR_OK;
}

tsr_status tsr_hwloc_load(tsr_context *ctx, void **out) {
    hwloc_topology_t t;
    *out = NULL;
    if (hwloc_topology_init(&t) != 0)
        return tsr_error(ctx, TSR_ERR_HWLOC, "hwloc_topology_init failed");
    /* PCI devices and OS devices (GPUs, co-processors) are filtered out by default. */
    hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
#ifdef __linux__
    /* Linux reads PCI from sysfs itself; the libpciaccess plugin only adds a leak (ASan). */
    hwloc_topology_set_components(t, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST, "pci");
#endif
    TSR_TRY(finish_load(ctx, t, "this machine"));
    *out = t;
    return TSR_OK;
}

tsr_status tsr_hwloc_load_synthetic(tsr_context *ctx, const char *desc, void **out) {
    hwloc_topology_t t;
    *out = NULL;
    if (!desc) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "hwloc: NULL description");
    if (hwloc_topology_init(&t) != 0)
        return tsr_error(ctx, TSR_ERR_HWLOC, "hwloc_topology_init failed");
    hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    size_t len = strlen(desc);
    int rc;
    if (desc[0] == '<')
        rc = hwloc_topology_set_xmlbuffer(t, desc, (int)len + 1);
    else if (len > 4 && strcmp(desc + len - 4, ".xml") == 0)
        rc = hwloc_topology_set_xml(t, desc);
    else
        rc = hwloc_topology_set_synthetic(t, desc);
    if (rc != 0) {
        hwloc_topology_destroy(t);
        return tsr_error(ctx, TSR_ERR_PARSE, "hwloc: cannot use topology description \"%.60s\"",
                         desc);
    }
    TSR_TRY(finish_load(ctx, t, "a synthetic topology"));
    *out = t;
    return TSR_OK;
}

void tsr_hwloc_free(void *hw) {
    if (hw) hwloc_topology_destroy((hwloc_topology_t)hw);
}

static void format_set(hwloc_const_bitmap_t set, char *buf, size_t n) {
    if (!n) return;
    buf[0] = '\0';
    if (!set || hwloc_bitmap_iszero(set)) return;
    if (hwloc_bitmap_list_snprintf(buf, n, set) >= (int)n) buf[0] = '\0'; /* truncated: unknown */
}

void tsr_hwloc_host_summary(void *hw, tsr_host_info *host) {
    hwloc_topology_t t = hw;
    host->packages = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE);
    host->numa_nodes = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    host->cores = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
    host->pus = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
    if (host->packages <= 0) host->packages = 1;
    if (host->numa_nodes <= 0) host->numa_nodes = 1;
    if (host->cores <= 0) host->cores = host->pus;
    hwloc_obj_t root = hwloc_get_root_obj(t);
    uint64_t mem = root->total_memory;
    if (mem) host->memory_bytes = mem;
    format_set(hwloc_topology_get_topology_cpuset(t), host->cpuset, sizeof host->cpuset);
}

/* NUMA node and cpuset of the first non-I/O ancestor of an I/O object. */
static void locality_of(hwloc_topology_t t, hwloc_obj_t io, int *numa_node, char *cpuset,
                        size_t cpuset_size) {
    hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, io);
    *numa_node = -1;
    cpuset[0] = '\0';
    if (!anc) return;
    format_set(anc->cpuset, cpuset, cpuset_size);
    if (anc->nodeset && hwloc_bitmap_weight(anc->nodeset) == 1)
        *numa_node = hwloc_bitmap_first(anc->nodeset);
}

int tsr_hwloc_pci_locality(void *hw, unsigned domain, unsigned bus, unsigned dev, unsigned func,
                           char *found, size_t found_size, int *numa_node, char *cpuset,
                           size_t cpuset_size) {
    hwloc_topology_t t = hw;
    hwloc_obj_t pci = hwloc_get_pcidev_by_busid(t, domain, bus, dev, func);
    if (!pci) {
        /* Some VMs give NVIDIA slot ids that decode to no device (DESIGN.md): the bus is still
         * right, so take the one display controller on that bus. */
        hwloc_obj_t o = NULL;
        int n = 0;
        while ((o = hwloc_get_next_pcidev(t, o)) != NULL)
            if (o->attr->pcidev.domain == domain && o->attr->pcidev.bus == bus &&
                (o->attr->pcidev.class_id >> 8) == 0x03) {
                pci = o;
                n++;
            }
        if (n != 1) return -1;
    }
    if (found)
        snprintf(found, found_size, "%04x:%02x:%02x.%x", pci->attr->pcidev.domain,
                 pci->attr->pcidev.bus, pci->attr->pcidev.dev, pci->attr->pcidev.func);
    locality_of(t, pci, numa_node, cpuset, cpuset_size);
    return 0;
}

void tsr_hwloc_machine_locality(void *hw, int *numa_node, char *cpuset, size_t cpuset_size) {
    hwloc_topology_t t = hw;
    format_set(hwloc_topology_get_topology_cpuset(t), cpuset, cpuset_size);
    *numa_node = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE) == 1
                     ? (int)hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, 0)->os_index
                     : -1;
}

static void to_mask(hwloc_const_bitmap_t set, tsr_cpumask *m) {
    memset(m, 0, sizeof *m);
    int i;
    hwloc_bitmap_foreach_begin(i, set) tsr_cpumask_set(m, (unsigned)i);
    hwloc_bitmap_foreach_end();
}

tsr_status tsr_hwloc_cores(tsr_context *ctx, void *hw, tsr_cpumask **cores, int *count) {
    hwloc_topology_t t = hw;
    hwloc_obj_type_t type = HWLOC_OBJ_CORE;
    int n = hwloc_get_nbobjs_by_type(t, type);
    if (n <= 0) { /* some VMs report no cores: one per PU */
        type = HWLOC_OBJ_PU;
        n = hwloc_get_nbobjs_by_type(t, type);
    }
    if (n <= 0) return tsr_error(ctx, TSR_ERR_HWLOC, "hwloc: the topology has no cores or PUs");
    tsr_cpumask *list = tsr_calloc(ctx, (size_t)n, sizeof *list);
    if (!list) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "core list (%d cores)", n);
    for (int i = 0; i < n; i++)
        to_mask(hwloc_get_obj_by_type(t, type, (unsigned)i)->cpuset, &list[i]);
    *cores = list;
    *count = n;
    return TSR_OK;
}

tsr_status tsr_hwloc_bind(tsr_context *ctx, void *hw, const char *cpuset) {
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "hwloc bitmap");
    if (hwloc_bitmap_list_sscanf(set, cpuset) != 0 || hwloc_bitmap_iszero(set)) {
        hwloc_bitmap_free(set);
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "bind: \"%s\" is not a CPU list", cpuset);
    }
    int rc = hwloc_set_cpubind((hwloc_topology_t)hw, set, HWLOC_CPUBIND_PROCESS);
    int e = errno;
    hwloc_bitmap_free(set);
    if (rc != 0)
        return tsr_error(ctx, TSR_ERR_HWLOC, "hwloc_set_cpubind to %s failed (%s)", cpuset,
                         strerror(e));
    return TSR_OK;
}
