/* Discovery on this machine: the host CPU and every OpenCL device (PoCL here), checked against
 * OpenCL queried directly; the PoCL CPU paired with the host; hwloc loaded before OpenCL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#define CL_TARGET_OPENCL_VERSION 120
#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/core/internal.h"
#include "support/test_util.h"
#include "topology/topology.h"
#if TSR_WITH_HWLOC
#include <hwloc.h>
#endif

#if TSR_WITH_HWLOC
static int pci_devices_before_opencl = -1;
#endif

static tsr_context *new_ctx(unsigned flags) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = flags;
    o.cache_dir = "/nonexistent/tessera-test-cache";
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    return ctx;
}

static void str_info(cl_device_id d, cl_device_info what, char *buf, size_t n) {
    buf[0] = '\0';
    clGetDeviceInfo(d, what, n, buf, NULL);
    buf[n - 1] = '\0';
}

static void test_discovery_matches_opencl(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx(0);
    const tsr_device_info *host = tsr_context_device(ctx, 0);
    assert_int_equal(host->kind, TSR_DEVICE_HOST);
    assert_int_equal(host->compute_units, (unsigned)sysconf(_SC_NPROCESSORS_ONLN));
    assert_true(host->global_mem_bytes ==
                (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE));
    assert_true(host->peak_gflops > 0);
    tsr_cpumask m;
    assert_int_equal(tsr_cpumask_parse(host->cpuset, &m), 0);
    assert_int_equal(tsr_cpumask_count(&m), (int)sysconf(_SC_NPROCESSORS_ONLN));

    cl_uint nplat = 0;
    cl_platform_id plats[16];
    if (clGetPlatformIDs(16, plats, &nplat) != CL_SUCCESS) nplat = 0;
    int expected = 1, first_cpu = -1;
    for (cl_uint p = 0; p < nplat && p < 16; p++) {
        cl_device_id devs[64];
        cl_uint nd = 0;
        if (clGetDeviceIDs(plats[p], CL_DEVICE_TYPE_ALL, 64, devs, &nd) != CL_SUCCESS) continue;
        for (cl_uint d = 0; d < nd; d++, expected++) {
            assert_true(expected < tsr_context_device_count(ctx));
            const tsr_device_info *info = tsr_context_device(ctx, expected);
            char want[256];
            snprintf(want, sizeof want, "opencl:%u:%u", p, d);
            assert_string_equal(info->id, want);
            assert_int_equal(info->backend, TSR_BACKEND_OPENCL);
            str_info(devs[d], CL_DEVICE_NAME, want, sizeof want);
            assert_string_equal(info->name, want);
            str_info(devs[d], CL_DEVICE_VENDOR, want, sizeof want);
            assert_string_equal(info->vendor, want);
            str_info(devs[d], CL_DRIVER_VERSION, want, sizeof want);
            assert_string_equal(info->driver_version, want);
            cl_uint u;
            cl_ulong ul;
            clGetDeviceInfo(devs[d], CL_DEVICE_MAX_COMPUTE_UNITS, sizeof u, &u, NULL);
            assert_int_equal(info->compute_units, u);
            clGetDeviceInfo(devs[d], CL_DEVICE_MAX_CLOCK_FREQUENCY, sizeof u, &u, NULL);
            assert_int_equal(info->clock_mhz, u);
            clGetDeviceInfo(devs[d], CL_DEVICE_GLOBAL_MEM_SIZE, sizeof ul, &ul, NULL);
            assert_true(info->global_mem_bytes == ul);
            clGetDeviceInfo(devs[d], CL_DEVICE_LOCAL_MEM_SIZE, sizeof ul, &ul, NULL);
            assert_true(info->local_mem_bytes == ul);
            clGetDeviceInfo(devs[d], CL_DEVICE_MAX_MEM_ALLOC_SIZE, sizeof ul, &ul, NULL);
            assert_true(info->max_alloc_bytes == ul);
            cl_device_type type;
            clGetDeviceInfo(devs[d], CL_DEVICE_TYPE, sizeof type, &type, NULL);
            tsr_device_kind kind = type & CL_DEVICE_TYPE_GPU           ? TSR_DEVICE_GPU
                                   : type & CL_DEVICE_TYPE_ACCELERATOR ? TSR_DEVICE_ACCELERATOR
                                   : type & CL_DEVICE_TYPE_CPU         ? TSR_DEVICE_CPU
                                                                       : TSR_DEVICE_CUSTOM;
            assert_int_equal(info->kind, kind);
            cl_device_fp_config fp = 0;
            clGetDeviceInfo(devs[d], CL_DEVICE_DOUBLE_FP_CONFIG, sizeof fp, &fp, NULL);
            assert_int_equal(info->fp64, fp != 0);
            char ext[8192];
            str_info(devs[d], CL_DEVICE_EXTENSIONS, ext, sizeof ext);
            assert_int_equal(info->fp16, strstr(ext, "cl_khr_fp16") != NULL);
            assert_true(info->peak_gflops > 0);
            if (kind == TSR_DEVICE_CPU) {
                if (first_cpu < 0) first_cpu = expected;
                /* a CPU device runs on the host's cores */
                assert_string_equal(info->cpuset, host->cpuset);
                assert_int_equal(info->numa_node, host->numa_node);
            }
            if (info->cpuset[0]) assert_int_equal(tsr_cpumask_parse(info->cpuset, &m), 0);
        }
    }
    assert_int_equal(tsr_context_device_count(ctx), expected);
    /* the PoCL CPU and the host backend are one physical device */
    assert_int_equal(host->same_as, first_cpu);
    if (first_cpu >= 0) assert_int_equal(tsr_context_device(ctx, first_cpu)->same_as, 0);
    /* not measured at creation (no cache): both paths usable */
    for (int i = 0; i < tsr_context_device_count(ctx); i++) {
        assert_true(tsr_context_device(ctx, i)->gemm_gflops == 0);
        assert_int_equal(tsr_context_device(ctx, i)->usable, 1);
    }
    /* the real description round-trips through JSON */
    tsr_topology *t, *back;
    assert_int_equal(tsr_topology_from_context(ctx, &t), TSR_OK);
    char *text = tsr_topology_to_json(t, 1);
    assert_non_null(text);
    assert_int_equal(tsr_topology_parse(ctx, text, strlen(text), &back), TSR_OK);
    assert_int_equal(back->device_count, t->device_count);
    for (int i = 0; i < t->device_count; i++)
        assert_memory_equal(&t->devices[i], &back->devices[i], sizeof t->devices[i]);
    free(text);
    tsr_topology_free(back);
    tsr_topology_free(t);
    tsr_context_free(ctx);
    /* TSR_CONTEXT_NO_OPENCL: only the host */
    ctx = new_ctx(TSR_CONTEXT_NO_OPENCL);
    assert_int_equal(tsr_context_device_count(ctx), 1);
    assert_int_equal(tsr_context_device(ctx, 0)->same_as, -1);
    tsr_context_free(ctx);
}

#if TSR_WITH_HWLOC
/* PoCL sets HWLOC_PLUGINS_PATH=/dev/null once initialised: the context loads hwloc first, so
 * it sees the PCI devices that hwloc found before any OpenCL call. */
static void test_hwloc_before_opencl(void **state) {
    (void)state;
    tsr_context *ctx = new_ctx(0);
    assert_non_null(ctx->topology);
    assert_non_null(ctx->topology->hwloc);
    int seen =
        hwloc_get_nbobjs_by_type((hwloc_topology_t)ctx->topology->hwloc, HWLOC_OBJ_PCI_DEVICE);
    assert_int_equal(seen, pci_devices_before_opencl);
    tsr_context_free(ctx);
}
#endif

/* Cached figures for the host backend and its PoCL twin decide, at context creation, which
 * of the two paths stays usable (both ways round). */
static void test_cached_pair_keeps_faster(void **state) {
    (void)state;
    char dir[] = "/tmp/tsr-test-pair-XXXXXX";
    assert_non_null(mkdtemp(dir));
    tsr_context *probe = new_ctx(0);
    int cpu = tsr_context_device(probe, 0)->same_as;
    if (cpu < 0) { /* no OpenCL CPU device on this machine: nothing to pair */
        tsr_context_free(probe);
        rmdir(dir);
        TSR_TEST_SKIP("missing an OpenCL CPU device (PoCL: Debian package pocl-opencl-icd)");
    }
    tsr_device_info h = *tsr_context_device(probe, 0), c = *tsr_context_device(probe, cpu);
    tsr_context_free(probe);
    char path[256];
    snprintf(path, sizeof path, "%s/capability.json", dir);
    for (int host_faster = 0; host_faster < 2; host_faster++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        /* keys: backend|vendor|name|driver|<CUs>cu (topology/calibrate.c) */
        fprintf(f,
                "{\"format\":\"tessera-capability\",\"version\":1,\"devices\":{"
                "\"host|%s|%s|%s|%ucu\":{\"gemm_gflops\":%g,\"mem_bw_gbps\":1,\"h2d_gbps\":1,\"d2h_"
                "gbps\":1,\"launch_us\":1},"
                "\"opencl|%s|%s|%s|%ucu\":{\"gemm_gflops\":%g,\"mem_bw_gbps\":2,\"h2d_gbps\":2,"
                "\"d2h_gbps\":2,\"launch_us\":9}}}",
                h.vendor, h.name, h.driver_version, h.compute_units, host_faster ? 50.0 : 5.0,
                c.vendor, c.name, c.driver_version, c.compute_units, host_faster ? 4.0 : 40.0);
        fclose(f);
        tsr_context_options o;
        tsr_context_options_init(&o);
        o.cache_dir = dir;
        tsr_context *ctx;
        assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
        const tsr_device_info *hd = tsr_context_device(ctx, 0), *cd = tsr_context_device(ctx, cpu);
        assert_true(hd->gemm_gflops == (host_faster ? 50.0 : 5.0));
        assert_true(cd->gemm_gflops == (host_faster ? 4.0 : 40.0));
        assert_true(cd->launch_us == 9.0);
        assert_int_equal(hd->usable, host_faster);
        assert_int_equal(cd->usable, !host_faster);
        tsr_context_free(ctx);
    }
    remove(path);
    rmdir(dir);
}

int main(void) {
#if TSR_WITH_HWLOC
    /* reference, read before anything touches OpenCL */
    hwloc_topology_t ref;
    if (hwloc_topology_init(&ref) == 0) {
        hwloc_topology_set_io_types_filter(ref, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
#ifdef __linux__
        hwloc_topology_set_components(ref, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST,
                                      "pci"); /* as the library */
#endif
        if (hwloc_topology_load(ref) == 0)
            pci_devices_before_opencl = hwloc_get_nbobjs_by_type(ref, HWLOC_OBJ_PCI_DEVICE);
        hwloc_topology_destroy(ref);
    }
#endif
    const struct CMUnitTest tests[] = {
#if TSR_WITH_HWLOC
        cmocka_unit_test(test_hwloc_before_opencl),
#endif
        cmocka_unit_test(test_discovery_matches_opencl),
        cmocka_unit_test(test_cached_pair_keeps_faster),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
