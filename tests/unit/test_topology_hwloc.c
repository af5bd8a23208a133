/* hwloc: synthetic and XML topologies for the locality and binding logic, this machine's
 * topology against hwloc read directly, and CPU binding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <hwloc.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "support/test_util.h"
#include "topology/topology.h"

/* Two packages, each a NUMA node of two cores with a GPU behind its own host bridge. */
static const char pci_xml[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!DOCTYPE topology SYSTEM \"hwloc2.dtd\">\n"
    "<topology version=\"2.0\">\n"
    " <object type=\"Machine\" os_index=\"0\" cpuset=\"0x0000000f\" complete_cpuset=\"0x0000000f\" "
    "allowed_cpuset=\"0x0000000f\" nodeset=\"0x00000003\" complete_nodeset=\"0x00000003\" "
    "allowed_nodeset=\"0x00000003\" gp_index=\"1\">\n"
    "  <object type=\"Package\" os_index=\"0\" cpuset=\"0x00000003\" "
    "complete_cpuset=\"0x00000003\" nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" "
    "gp_index=\"2\">\n"
    "   <object type=\"NUMANode\" os_index=\"0\" cpuset=\"0x00000003\" "
    "complete_cpuset=\"0x00000003\" nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" "
    "gp_index=\"3\" local_memory=\"1073741824\"/>\n"
    "   <object type=\"Core\" os_index=\"0\" cpuset=\"0x00000001\" complete_cpuset=\"0x00000001\" "
    "nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" gp_index=\"4\">\n"
    "    <object type=\"PU\" os_index=\"0\" cpuset=\"0x00000001\" complete_cpuset=\"0x00000001\" "
    "nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" gp_index=\"5\"/>\n"
    "   </object>\n"
    "   <object type=\"Core\" os_index=\"1\" cpuset=\"0x00000002\" complete_cpuset=\"0x00000002\" "
    "nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" gp_index=\"6\">\n"
    "    <object type=\"PU\" os_index=\"1\" cpuset=\"0x00000002\" complete_cpuset=\"0x00000002\" "
    "nodeset=\"0x00000001\" complete_nodeset=\"0x00000001\" gp_index=\"7\"/>\n"
    "   </object>\n"
    "   <object type=\"Bridge\" gp_index=\"20\" bridge_type=\"0-1\" depth=\"0\" "
    "bridge_pci=\"0000:[17-17]\">\n"
    "    <object type=\"PCIDev\" gp_index=\"21\" pci_busid=\"0000:17:00.0\" pci_type=\"0302 "
    "[10de:2330] [10de:16c1] a1\" pci_link_speed=\"0.000000\"/>\n"
    "   </object>\n"
    "  </object>\n"
    "  <object type=\"Package\" os_index=\"1\" cpuset=\"0x0000000c\" "
    "complete_cpuset=\"0x0000000c\" nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" "
    "gp_index=\"8\">\n"
    "   <object type=\"NUMANode\" os_index=\"1\" cpuset=\"0x0000000c\" "
    "complete_cpuset=\"0x0000000c\" nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" "
    "gp_index=\"9\" local_memory=\"1073741824\"/>\n"
    "   <object type=\"Core\" os_index=\"2\" cpuset=\"0x00000004\" complete_cpuset=\"0x00000004\" "
    "nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"10\">\n"
    "    <object type=\"PU\" os_index=\"2\" cpuset=\"0x00000004\" complete_cpuset=\"0x00000004\" "
    "nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"11\"/>\n"
    "   </object>\n"
    "   <object type=\"Core\" os_index=\"3\" cpuset=\"0x00000008\" complete_cpuset=\"0x00000008\" "
    "nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"12\">\n"
    "    <object type=\"PU\" os_index=\"3\" cpuset=\"0x00000008\" complete_cpuset=\"0x00000008\" "
    "nodeset=\"0x00000002\" complete_nodeset=\"0x00000002\" gp_index=\"13\"/>\n"
    "   </object>\n"
    "   <object type=\"Bridge\" gp_index=\"22\" bridge_type=\"0-1\" depth=\"0\" "
    "bridge_pci=\"0000:[65-65]\">\n"
    "    <object type=\"PCIDev\" gp_index=\"23\" pci_busid=\"0000:65:00.0\" pci_type=\"0302 "
    "[10de:2330] [10de:16c1] a1\" pci_link_speed=\"0.000000\"/>\n"
    "   </object>\n"
    "  </object>\n"
    " </object>\n"
    "</topology>\n";

static tsr_context *new_ctx(unsigned flags) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = flags;
    o.cache_dir = "/nonexistent/tessera-test-cache";
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    return ctx;
}

static void mask_of(hwloc_const_bitmap_t set, tsr_cpumask *m) {
    memset(m, 0, sizeof *m);
    int i;
    hwloc_bitmap_foreach_begin(i, set) tsr_cpumask_set(m, (unsigned)i);
    hwloc_bitmap_foreach_end();
}

static void test_synthetic_summary(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx(TSR_CONTEXT_NO_OPENCL);
    static const struct {
        const char *desc;
        int pack, numa, core, pu;
    } cases[] = {
        {"pack:2 numa:2 core:4 pu:2", 2, 2, 4, 2},
        {"pack:1 numa:1 core:6 pu:1", 1, 1, 6, 1},
        {"pack:4 numa:1 core:2 pu:4", 4, 1, 2, 4},
    };
    for (size_t c = 0; c < TSR_ARRAY_SIZE(cases); c++) {
        void *hw = NULL;
        assert_int_equal(tsr_hwloc_load_synthetic(ctx, cases[c].desc, &hw), TSR_OK);
        tsr_host_info h;
        memset(&h, 0, sizeof h);
        tsr_hwloc_host_summary(hw, &h);
        int numa = cases[c].pack * cases[c].numa, cores = numa * cases[c].core,
            pus = cores * cases[c].pu;
        assert_int_equal(h.packages, cases[c].pack);
        assert_int_equal(h.numa_nodes, numa);
        assert_int_equal(h.cores, cores);
        assert_int_equal(h.pus, pus);
        char all[64];
        snprintf(all, sizeof all, "0-%d", pus - 1);
        assert_string_equal(h.cpuset, all);
        int node;
        char cpus[128];
        tsr_hwloc_machine_locality(hw, &node, cpus, sizeof cpus);
        assert_string_equal(cpus, all);
        assert_int_equal(node, numa == 1 ? 0 : -1);
        /* cores: disjoint, pu PUs each, consecutive in synthetic numbering, covering all */
        tsr_cpumask *cl = NULL;
        int n = 0;
        assert_int_equal(tsr_hwloc_cores(ctx, hw, &cl, &n), TSR_OK);
        assert_int_equal(n, cores);
        for (int i = 0; i < n; i++) {
            assert_int_equal(tsr_cpumask_count(&cl[i]), cases[c].pu);
            for (int p = 0; p < cases[c].pu; p++)
                assert_true(tsr_cpumask_isset(&cl[i], (unsigned)(i * cases[c].pu + p)));
        }
        tsr_free(ctx, cl);
        tsr_hwloc_free(hw);
    }
    void *hw = (void *)0x1;
    assert_int_equal(tsr_hwloc_load_synthetic(ctx, "pack:two", &hw), TSR_ERR_PARSE);
    assert_null(hw);
    assert_non_null(strstr(tsr_context_last_error(ctx), "pack:two"));
    tsr_context_free(ctx);
}

/* Ranks spread over devices near each NUMA node of "pack:2 numa:2 core:4 pu:2" get whole
 * cores of their node, disjoint between the ranks that share it. */
static void test_synthetic_binding(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx(TSR_CONTEXT_NO_OPENCL);
    void *hwv = NULL;
    assert_int_equal(tsr_hwloc_load_synthetic(ctx, "pack:2 numa:2 core:4 pu:2", &hwv), TSR_OK);
    hwloc_topology_t hw = hwv;
    int numa = hwloc_get_nbobjs_by_type(hw, HWLOC_OBJ_NUMANODE);
    assert_int_equal(numa, 4);
    for (int nranks = 1; nranks <= 12; nranks++) {
        tsr_topology *t;
        assert_int_equal(tsr_topology_alloc(ctx, 1, numa, nranks, &t), TSR_OK);
        tsr_hwloc_host_summary(hw, &t->hosts[0]);
        tsr_strlcpy(t->hosts[0].hostname, "synthetic", sizeof t->hosts[0].hostname);
        for (int g = 0; g < numa; g++) {
            tsr_device_info *d = &t->devices[g];
            snprintf(d->id, sizeof d->id, "opencl:0:%d", g);
            d->kind = TSR_DEVICE_GPU, d->backend = TSR_BACKEND_OPENCL, d->usable = 1,
            d->same_as = -1;
            d->peak_gflops = 1000.0 * (g + 1); /* the last NUMA node's device is the best */
            hwloc_obj_t node = hwloc_get_obj_by_type(hw, HWLOC_OBJ_NUMANODE, (unsigned)g);
            d->numa_node = (int)node->os_index;
            hwloc_bitmap_list_snprintf(d->cpuset, sizeof d->cpuset, node->cpuset);
        }
        for (int r = 0; r < nranks; r++) {
            t->ranks[r].rank = r, t->ranks[r].local_rank = r, t->ranks[r].local_size = nranks;
        }
        assert_int_equal(tsr_topology_assign_ranks(t), TSR_OK);
        tsr_cpumask *cores;
        int ncores;
        assert_int_equal(tsr_hwloc_cores(ctx, hw, &cores, &ncores), TSR_OK);
        tsr_topology_assign_bindings(t, 0, cores, ncores);
        for (int r = 0; r < nranks; r++) {
            /* best first, round robin */
            assert_int_equal(t->ranks[r].device, numa - 1 - r % numa);
            tsr_cpumask mine, near;
            assert_int_equal(tsr_cpumask_parse(t->ranks[r].cpuset, &mine), 0);
            assert_int_equal(tsr_cpumask_parse(t->devices[t->ranks[r].device].cpuset, &near), 0);
            int sharing = nranks / numa + (r % numa < nranks % numa);
            int pos = r / numa; /* its place among the ranks on that node */
            /* 4 cores per node, contiguous runs, the first 4 % sharing runs one core longer */
            int want_cores = sharing >= 4 ? 1 : 4 / sharing + (pos < 4 % sharing);
            assert_int_equal(tsr_cpumask_count(&mine), 2 * want_cores);
            for (int c = 0; c < ncores; c++) { /* whole cores, inside the node */
                int in = 0, all = 1;
                for (int w = 0; w < TSR_CPUMASK_WORDS; w++) {
                    in |= (mine.bits[w] & cores[c].bits[w]) != 0;
                    all &= (mine.bits[w] & cores[c].bits[w]) == cores[c].bits[w];
                    assert_true((mine.bits[w] & ~near.bits[w]) == 0);
                }
                if (in) assert_true(all);
            }
            for (int q = 0; q < r && sharing <= 4; q++) {
                tsr_cpumask other;
                assert_int_equal(tsr_cpumask_parse(t->ranks[q].cpuset, &other), 0);
                for (int w = 0; w < TSR_CPUMASK_WORDS; w++)
                    assert_true((mine.bits[w] & other.bits[w]) == 0);
            }
        }
        tsr_free(ctx, cores);
        tsr_topology_free(t);
    }
    tsr_hwloc_free(hwv);
    tsr_context_free(ctx);
}

/* PCI devices in an hwloc XML: each GPU's NUMA node and cpuset are its package's. */
static void test_xml_pci_locality(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx(TSR_CONTEXT_NO_OPENCL);
    void *hwv = NULL;
    assert_int_equal(tsr_hwloc_load_synthetic(ctx, pci_xml, &hwv), TSR_OK);
    hwloc_topology_t hw = hwv;
    assert_int_equal(hwloc_get_nbobjs_by_type(hw, HWLOC_OBJ_PCI_DEVICE), 2);
    static const struct {
        unsigned bus;
        int pack;
    } gpus[] = {{0x17, 0}, {0x65, 1}};
    for (size_t i = 0; i < TSR_ARRAY_SIZE(gpus); i++) {
        int node = -7;
        char cpus[128] = "x", want[128];
        char found[32];
        assert_int_equal(tsr_hwloc_pci_locality(hw, 0, gpus[i].bus, 0, 0, found, sizeof found,
                                                &node, cpus, sizeof cpus),
                         0);
        snprintf(want, sizeof want, "0000:%02x:00.0", gpus[i].bus);
        assert_string_equal(found, want);
        hwloc_obj_t pack = hwloc_get_obj_by_type(hw, HWLOC_OBJ_PACKAGE, (unsigned)gpus[i].pack);
        hwloc_bitmap_list_snprintf(want, sizeof want, pack->cpuset);
        assert_string_equal(cpus, want);
        assert_int_equal(node, hwloc_bitmap_first(pack->nodeset));
    }
    int node;
    char cpus[128], found[32];
    assert_int_equal(
        tsr_hwloc_pci_locality(hw, 0, 0x99, 0, 0, found, sizeof found, &node, cpus, sizeof cpus),
        -1);
    /* a mis-decoded slot on the right bus finds the bus's display controller */
    assert_int_equal(
        tsr_hwloc_pci_locality(hw, 0, 0x65, 0x1f, 3, found, sizeof found, &node, cpus, sizeof cpus),
        0);
    assert_string_equal(found, "0000:65:00.0");
    assert_int_equal(node, 1);
    /* two ranks on the GPU of package 1: one core each, both in package 1 */
    tsr_topology *t;
    assert_int_equal(tsr_topology_alloc(ctx, 1, 1, 2, &t), TSR_OK);
    tsr_hwloc_host_summary(hw, &t->hosts[0]);
    tsr_device_info *d = &t->devices[0];
    d->kind = TSR_DEVICE_GPU, d->backend = TSR_BACKEND_OPENCL, d->usable = 1, d->same_as = -1;
    assert_int_equal(tsr_hwloc_pci_locality(hw, 0, 0x65, 0, 0, NULL, 0, &d->numa_node, d->cpuset,
                                            sizeof d->cpuset),
                     0);
    for (int r = 0; r < 2; r++)
        t->ranks[r].rank = r, t->ranks[r].local_rank = r, t->ranks[r].local_size = 2;
    assert_int_equal(tsr_topology_assign_ranks(t), TSR_OK);
    tsr_cpumask *cores;
    int ncores;
    assert_int_equal(tsr_hwloc_cores(ctx, hw, &cores, &ncores), TSR_OK);
    tsr_topology_assign_bindings(t, 0, cores, ncores);
    hwloc_obj_t pack1 = hwloc_get_obj_by_type(hw, HWLOC_OBJ_PACKAGE, 1);
    tsr_cpumask p1, r0, r1;
    mask_of(pack1->cpuset, &p1);
    assert_int_equal(tsr_cpumask_parse(t->ranks[0].cpuset, &r0), 0);
    assert_int_equal(tsr_cpumask_parse(t->ranks[1].cpuset, &r1), 0);
    assert_int_equal(tsr_cpumask_count(&r0), 1);
    assert_int_equal(tsr_cpumask_count(&r1), 1);
    for (int w = 0; w < TSR_CPUMASK_WORDS; w++) {
        assert_true((r0.bits[w] | r1.bits[w]) == p1.bits[w]);
        assert_true((r0.bits[w] & r1.bits[w]) == 0);
    }
    tsr_free(ctx, cores);
    tsr_topology_free(t);
    tsr_hwloc_free(hwv);
    tsr_context_free(ctx);
}

/* The context's view of this machine matches hwloc's own answer, and sysfs agrees on PUs. */
static void test_this_machine(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx(TSR_CONTEXT_NO_OPENCL);
    hwloc_topology_t ref;
    assert_int_equal(hwloc_topology_init(&ref), 0);
    assert_int_equal(hwloc_topology_load(ref), 0);
    tsr_topology *t;
    assert_int_equal(tsr_topology_from_context(ctx, &t), TSR_OK);
    const tsr_host_info *h = tsr_topology_host(t, 0);
    assert_int_equal(h->pus, hwloc_get_nbobjs_by_type(ref, HWLOC_OBJ_PU));
    int cores = hwloc_get_nbobjs_by_type(ref, HWLOC_OBJ_CORE);
    assert_int_equal(h->cores, cores > 0 ? cores : h->pus);
    int packages = hwloc_get_nbobjs_by_type(ref, HWLOC_OBJ_PACKAGE);
    assert_int_equal(h->packages, packages > 0 ? packages : 1);
    char all[128];
    hwloc_bitmap_list_snprintf(all, sizeof all, hwloc_topology_get_topology_cpuset(ref));
    assert_string_equal(h->cpuset, all);
    const tsr_device_info *host = tsr_context_device(ctx, 0);
    assert_string_equal(host->cpuset, all);
    /* the sysfs path (no hwloc) finds the same PUs and cores */
    tsr_cpumask *hc, *sc;
    int hn, sn;
    assert_int_equal(tsr_topology_local_cores(ctx, &hc, &hn), TSR_OK);
    assert_int_equal(tsr_topology_cores_sysfs(ctx, &sc, &sn), TSR_OK);
    assert_int_equal(hn, sn);
    for (int i = 0; i < hn; i++) assert_memory_equal(&hc[i], &sc[i], sizeof hc[i]);
    tsr_free(ctx, hc);
    tsr_free(ctx, sc);
    tsr_topology_free(t);
    hwloc_topology_destroy(ref);
    tsr_context_free(ctx);
    /* without hwloc the summary comes from sysfs and still counts every PU */
    ctx = new_ctx(TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC);
    assert_int_equal(tsr_topology_from_context(ctx, &t), TSR_OK);
    assert_int_equal(tsr_topology_host(t, 0)->pus, (int)tsr_context_device(ctx, 0)->compute_units);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

/* tsr_cluster_bind pins the process to a rank's CPUs and caps PoCL's threads. */
static void test_bind(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx(TSR_CONTEXT_NO_OPENCL);
    cpu_set_t before;
    assert_int_equal(sched_getaffinity(0, sizeof before, &before), 0);
    int last = -1;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &before)) last = c;
    assert_true(last >= 0);
    tsr_topology *t;
    assert_int_equal(tsr_topology_alloc(ctx, 1, 0, 2, &t), TSR_OK);
    snprintf(t->ranks[1].cpuset, sizeof t->ranks[1].cpuset, "%d", last);
    t->ranks[1].rank = 1;
    char *saved =
        getenv("POCL_MAX_PTHREAD_COUNT") ? strdup(getenv("POCL_MAX_PTHREAD_COUNT")) : NULL;
    unsetenv("POCL_MAX_PTHREAD_COUNT");
    assert_int_equal(tsr_cluster_bind(ctx, t, 1), TSR_OK);
    cpu_set_t now;
    assert_int_equal(sched_getaffinity(0, sizeof now, &now), 0);
    assert_int_equal(CPU_COUNT(&now), 1);
    assert_true(CPU_ISSET(last, &now));
    assert_string_equal(getenv("POCL_MAX_PTHREAD_COUNT"), "1");
    /* bad requests */
    assert_int_equal(tsr_cluster_bind(ctx, t, 0), TSR_ERR_INVALID_ARG); /* no CPUs */
    assert_non_null(strstr(tsr_context_last_error(ctx), "ranks[0].cpuset"));
    assert_int_equal(tsr_cluster_bind(ctx, t, 5), TSR_ERR_NOT_FOUND);
    assert_int_equal(sched_setaffinity(0, sizeof before, &before), 0);
    if (saved)
        setenv("POCL_MAX_PTHREAD_COUNT", saved, 1);
    else
        unsetenv("POCL_MAX_PTHREAD_COUNT");
    free(saved);
    tsr_topology_free(t);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synthetic_summary),
        cmocka_unit_test(test_synthetic_binding),
        cmocka_unit_test(test_xml_pci_locality),
        cmocka_unit_test(test_this_machine),
        cmocka_unit_test(test_bind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
