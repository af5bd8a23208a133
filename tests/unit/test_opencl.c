/* OpenCL backend specifics: program cache, precompiled binaries, build errors, device memory
 * errors, status mapping, several backends on one device, queue ordering, GEMM variants.
 * (Per-op numerics for every device are in test_backend_ops.c.) Skips without OpenCL devices. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "backends/opencl/opencl.h"
#include "lib/core/internal.h"
#include "support/test_util.h"
#include "tsr_kernels.h"

/* Sanitizer builds: PoCL and its LLVM leak compiler state on every clBuildProgram; only
 * blocks allocated inside those libraries are suppressed. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\nleak:libclblast\n";
}

typedef struct log_capture {
    int warnings;
    char last_warning[1024];
    int info;
    char last_info[1024];
} log_capture;

static void capture(tsr_log_level level, const char *msg, void *user) {
    log_capture *c = user;
    if (level == TSR_LOG_WARN) {
        c->warnings++;
        tsr_strlcpy(c->last_warning, msg, sizeof c->last_warning);
    } else if (level == TSR_LOG_INFO) {
        c->info++;
        tsr_strlcpy(c->last_info, msg, sizeof c->last_info);
    }
}

typedef struct fixture {
    tsr_context *ctx;
    log_capture log;
    char dir[256];   /* private temporary folder: cache and binaries */
    int device;      /* context index of the first OpenCL device */
    double start;
} fixture;

static void rm_rf(const char *dir) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/tsr-test-opencl.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    char cache[300];
    snprintf(cache, sizeof cache, "%s/cache", f->dir);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.cache_dir = cache;
    o.log_fn = capture;
    o.log_user = &f->log;
    o.log_level = TSR_LOG_INFO;
    o.flags = TSR_CONTEXT_NO_HWLOC;
    if (tsr_context_create(&f->ctx, &o) != TSR_OK) return -1;
    f->device = -1;
    for (int i = 0; i < tsr_context_device_count(f->ctx); i++)
        if (tsr_context_device(f->ctx, i)->backend == TSR_BACKEND_OPENCL) {
            f->device = i;
            break;
        }
    f->start = tsr_now();
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    print_message("  (%.2f s)\n", tsr_now() - f->start);
    tsr_context_free(f->ctx);
    rm_rf(f->dir);
    free(f);
    return 0;
}

#define NEED_DEVICE(f)                                        \
    do {                                                      \
        if ((f)->device < 0) {                                \
            TSR_TEST_SKIP("missing an OpenCL device (PoCL: "  \
                          "Debian package pocl-opencl-icd)"); \
        }                                                     \
    } while (0)

static const tsr_device_info *dev(fixture *f) { return tsr_context_device(f->ctx, f->device); }

static tsr_backend *open_be(fixture *f, const tsr_opencl_options *o) {
    tsr_backend *be = NULL;
    tsr_status st = tsr_backend_opencl_create_ex(f->ctx, dev(f), o, &be);
    if (st != TSR_OK) fail_msg("open: %s: %s", tsr_status_name(st), tsr_context_last_error(f->ctx));
    return be;
}

/* A second context on this machine that reads the environment when made (as the fixture's
 * does, with its cache): the OpenCL knobs reach the backend through the context. */
static tsr_context *env_context(fixture *f) {
    char cache[300];
    snprintf(cache, sizeof cache, "%s/cache", f->dir);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.cache_dir = cache;
    o.log_level = TSR_LOG_OFF;
    o.flags = TSR_CONTEXT_NO_HWLOC;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    assert_true(f->device < tsr_context_device_count(ctx));
    return ctx;
}

static tsr_buf *upload(tsr_backend *be, const float *x, size_t n) {
    tsr_buf *b = NULL;
    assert_int_equal(tsr_buf_alloc(be, n * sizeof(float), &b), TSR_OK);
    assert_int_equal(tsr_buf_write(b, 0, x, n * sizeof(float)), TSR_OK);
    return b;
}

/* relu + sum on a backend against plain C: proves its program works. */
static void check_program_runs(tsr_backend *be) {
    enum { N = 1000 };
    float x[N], y[N], ref_sum = 0, sum = 0;
    tsr_test_fill_uniform(x, N, 7, -1.0f, 1.0f);
    tsr_buf *bx = upload(be, x, N), *by = NULL, *bs = NULL;
    assert_int_equal(tsr_buf_alloc(be, N * sizeof(float), &by), TSR_OK);
    assert_int_equal(tsr_buf_alloc(be, sizeof(float), &bs), TSR_OK);
    assert_int_equal(tsr_op_relu_forward(be, N, tsr_ref_at(bx, 0), tsr_ref_at(by, 0)), TSR_OK);
    assert_int_equal(tsr_op_sum(be, N, tsr_ref_at(by, 0), tsr_ref_at(bs, 0)), TSR_OK);
    assert_int_equal(tsr_buf_read(by, 0, y, sizeof y), TSR_OK);
    assert_int_equal(tsr_buf_read(bs, 0, &sum, sizeof sum), TSR_OK);
    for (int i = 0; i < N; i++) {
        float r = x[i] > 0 ? x[i] : 0;
        assert_true(y[i] == r);
        ref_sum += r;
    }
    assert_true(fabsf(sum - ref_sum) <= 1e-4f * (1 + fabsf(ref_sum)));
    tsr_buf_free(bx);
    tsr_buf_free(by);
    tsr_buf_free(bs);
}

static int file_exists(const char *path) { return access(path, R_OK) == 0; }

/* First open compiles and writes the cache; the second loads it. */
static void test_cache_hit(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    /* the expected cache miss leaves the caller's last error as it was */
    tsr_error(f->ctx, TSR_ERR_PARSE, "an earlier error");
    tsr_backend *a = open_be(f, NULL);
    assert_string_equal(tsr_context_last_error(f->ctx), "an earlier error");
    assert_int_equal(tsr_context_last_status(f->ctx), TSR_ERR_PARSE);
    const char *path_a;
    assert_int_equal(tsr_opencl_program_origin(a, &path_a), TSR_CL_FROM_SOURCE);
    assert_non_null(strstr(path_a, "/cache/opencl/"));
    assert_true(file_exists(path_a));
    tsr_backend *b = open_be(f, NULL);
    const char *path_b;
    assert_int_equal(tsr_opencl_program_origin(b, &path_b), TSR_CL_FROM_CACHE);
    assert_string_equal(path_a, path_b);
    check_program_runs(b);
    /* no_cache compiles again and leaves the entry alone */
    tsr_opencl_options nc = {NULL, 1, 0, 0, 0};
    tsr_backend *c = open_be(f, &nc);
    assert_int_equal(tsr_opencl_program_origin(c, NULL), TSR_CL_FROM_SOURCE);
    tsr_backend_free(c);
    tsr_backend_free(b);
    tsr_backend_free(a);
}

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static size_t file_size(const char *path) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fclose(fp);
    return (size_t)n;
}

static unsigned char *read_whole(const char *path, size_t *n) {
    *n = file_size(path);
    unsigned char *data = malloc(*n);
    assert_non_null(data);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(data, 1, *n, fp), *n);
    fclose(fp);
    return data;
}

static void hex32(const uint8_t d[32], char out[65]) {
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* The entry is <cache>/opencl/<hex SHA-256 of platform, device, driver, build options and every
 * kernel source, each with its NUL>.bin, holding {"TSRCLB2\0", that key, payload size (u64 LE),
 * SHA-256 of the payload} and then the program binary: all recomputed here. */
static void test_cache_entry_layout(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    tsr_backend *be = open_be(f, NULL);
    const char *path;
    assert_int_equal(tsr_opencl_program_origin(be, &path), TSR_CL_FROM_SOURCE);
    tsr_cl *cl = tsr_opencl_state(be);
    char fields[4][256];
    assert_int_equal(clGetPlatformInfo(cl->platform, CL_PLATFORM_NAME, 256, fields[0], NULL), CL_SUCCESS);
    assert_int_equal(clGetDeviceInfo(cl->device, CL_DEVICE_NAME, 256, fields[1], NULL), CL_SUCCESS);
    assert_int_equal(clGetDeviceInfo(cl->device, CL_DRIVER_VERSION, 256, fields[2], NULL), CL_SUCCESS);
    tsr_strlcpy(fields[3], cl->build_options, sizeof fields[3]);
    size_t total = 0;
    for (int i = 0; i < 4; i++) total += strlen(fields[i]) + 1;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(tsr_kernel_sources); i++)
        total += strlen(tsr_kernel_sources[i].source) + 1;
    char *all = malloc(total), *o = all;
    assert_non_null(all);
    for (int i = 0; i < 4; i++) o = stpcpy(o, fields[i]) + 1;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(tsr_kernel_sources); i++)
        o = stpcpy(o, tsr_kernel_sources[i].source) + 1;
    assert_int_equal((size_t)(o - all), total);
    uint8_t key[32];
    tsr_sha256(all, total, key);
    free(all);
    char want[400], hex[65];
    hex32(key, hex);
    snprintf(want, sizeof want, "%s/cache/opencl/%s.bin", f->dir, hex);
    assert_string_equal(path, want);

    size_t n;
    unsigned char *entry = read_whole(path, &n);
    assert_true(n > 80);
    assert_memory_equal(entry, "TSRCLB2", 8);
    assert_memory_equal(entry + 8, key, 32);
    uint64_t size = 0;
    for (int i = 0; i < 8; i++) size |= (uint64_t)entry[40 + i] << (8 * i);
    assert_int_equal(size, n - 80);
    uint8_t sum[32];
    tsr_sha256(entry + 80, n - 80, sum);
    assert_memory_equal(entry + 48, sum, 32);
    unsigned char *bin;
    size_t bin_size;
    assert_int_equal(tsr_opencl_program_binary(be, &bin, &bin_size), TSR_OK);
    assert_int_equal(bin_size, n - 80);
    assert_memory_equal(entry + 80, bin, bin_size);
    tsr_free(f->ctx, bin);
    free(entry);
    tsr_backend_free(be);
}

/* An entry that cannot be written costs a warning naming the failed step, nothing else: the
 * backend works, the caller's last error is as it was, no temp file is left. */
static void test_cache_store_fails(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    tsr_backend *a = open_be(f, NULL);
    const char *p;
    tsr_opencl_program_origin(a, &p);
    char path[1024], inside[1100];
    tsr_strlcpy(path, p, sizeof path);
    tsr_backend_free(a);
    /* the entry's name is taken by a folder that cannot be removed (not empty) */
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(inside, sizeof inside, "%s/x", path);
    write_bytes(inside, "x", 1);
    tsr_error(f->ctx, TSR_ERR_PARSE, "an earlier error");
    int before = f->log.warnings;
    tsr_backend *b = open_be(f, NULL);
    const char *pb;
    assert_int_equal(tsr_opencl_program_origin(b, &pb), TSR_CL_FROM_SOURCE);
    assert_string_equal(pb, "");
    assert_int_equal(f->log.warnings, before + 2); /* entry unusable; new entry not written */
    assert_non_null(strstr(f->log.last_warning, "OpenCL program cache not written"));
    assert_non_null(strstr(f->log.last_warning, "rename of temp file"));
    assert_non_null(strstr(f->log.last_warning, path));
    assert_string_equal(tsr_context_last_error(f->ctx), "an earlier error");
    check_program_runs(b);
    tsr_backend_free(b);
    char dir[1024];
    tsr_strlcpy(dir, path, sizeof dir);
    *strrchr(dir, '/') = '\0';
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) assert_null(strstr(e->d_name, ".tmp."));
    closedir(d);
}

/* Garbage, a truncated entry, a flipped payload byte, a flipped checksum byte and a flipped key
 * byte are each rebuilt with a warning. */
static void test_cache_corrupt(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    tsr_backend *a = open_be(f, NULL);
    const char *p;
    tsr_opencl_program_origin(a, &p);
    char path[1024];
    tsr_strlcpy(path, p, sizeof path);
    tsr_backend_free(a);
    size_t good = file_size(path);
    assert_true(good > 80);

    for (int mode = 0; mode < 5; mode++) {
        if (mode == 0) {
            write_bytes(path, "not a program binary", 20);
        } else {
            size_t n;
            unsigned char *data = read_whole(path, &n);
            assert_int_equal(n, good);
            if (mode == 2) data[good / 2] ^= 0x5A; /* payload */
            if (mode == 3) data[60] ^= 0x01;       /* its checksum */
            if (mode == 4) data[20] ^= 0x01;       /* the key */
            write_bytes(path, data, mode == 1 ? good / 2 : good);
            free(data);
        }
        int before = f->log.warnings;
        tsr_backend *b = open_be(f, NULL);
        assert_int_equal(tsr_opencl_program_origin(b, NULL), TSR_CL_FROM_SOURCE);
        assert_int_equal(f->log.warnings, before + 1);
        assert_non_null(strstr(f->log.last_warning, "rebuilding"));
        assert_non_null(strstr(f->log.last_warning, path));
        check_program_runs(b);
        tsr_backend_free(b);
        /* the rebuilt entry is valid again */
        assert_int_equal(file_size(path), good);
        tsr_backend *c = open_be(f, NULL);
        assert_int_equal(tsr_opencl_program_origin(c, NULL), TSR_CL_FROM_CACHE);
        tsr_backend_free(c);
    }
}

static void test_binary_name(void **state) {
    (void)state;
    char out[64];
    tsr_opencl_binary_name("NVIDIA H100 80GB HBM3", out, sizeof out);
    assert_string_equal(out, "nvidia_h100_80gb_hbm3.clbin");
    tsr_opencl_binary_name("  pthread-haswell-AMD EPYC 7B13 64-Core Processor ", out, sizeof out);
    assert_string_equal(out, "pthread_haswell_amd_epyc_7b13_64_core_processor.clbin");
    tsr_opencl_binary_name("", out, sizeof out);
    assert_string_equal(out, "device.clbin");
    tsr_opencl_binary_name("a very long device name that will not fit", out, 16);
    assert_int_equal(strlen(out), 15);
    assert_string_equal(out + 9, ".clbin");
}

/* Build from source, save CL_PROGRAM_BINARIES as <dir>/<device>.clbin, and open a backend
 * that must load that file (the FPGA path), then run ops on it. */
static void test_precompiled_binary(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    tsr_opencl_options nc = {NULL, 1, 0, 0, 0};
    tsr_backend *a = open_be(f, &nc);
    unsigned char *bin;
    size_t size;
    assert_int_equal(tsr_opencl_program_binary(a, &bin, &size), TSR_OK);
    assert_true(size > 0);
    char bindir[300], name[160], path[600];
    snprintf(bindir, sizeof bindir, "%s/bin", f->dir);
    assert_int_equal(mkdir(bindir, 0755), 0);
    tsr_opencl_binary_name(dev(f)->name, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", bindir, name);
    write_bytes(path, bin, size);
    tsr_free(f->ctx, bin);
    tsr_backend_free(a);

    int info_before = f->log.info;
    tsr_opencl_options o = {bindir, 0, 0, 0, 0};
    tsr_backend *b = open_be(f, &o);
    const char *used;
    assert_int_equal(tsr_opencl_program_origin(b, &used), TSR_CL_FROM_BINARY);
    assert_string_equal(used, path);
    assert_true(f->log.info > info_before);
    assert_non_null(strstr(f->log.last_info, path)); /* logged which file was used */
    check_program_runs(b);
    /* GEMM runs through CLBlast on the same queue */
    float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {1, 0, -1, 2, 0.5f, 1}, C[4] = {0};
    tsr_buf *ba = upload(b, A, 6), *bb = upload(b, B, 6), *bc = upload(b, C, 4);
    assert_int_equal(tsr_op_gemm(b, TSR_NO_TRANS, TSR_NO_TRANS, 2, 2, 3, 1.0f, tsr_ref_at(ba, 0), 3,
                                 tsr_ref_at(bb, 0), 2, 0.0f, tsr_ref_at(bc, 0), 2), TSR_OK);
    assert_int_equal(tsr_buf_read(bc, 0, C, sizeof C), TSR_OK);
    assert_true(C[0] == 1 * 1 + 2 * -1 + 3 * 0.5f && C[1] == 0 + 2 * 2 + 3 * 1);
    assert_true(C[2] == 4 - 5 + 6 * 0.5f && C[3] == 0 + 10 + 6);
    tsr_buf_free(ba);
    tsr_buf_free(bb);
    tsr_buf_free(bc);
    tsr_backend_free(b);

    /* the environment variable selects the folder too (the context's kernel_binary_dir) */
    setenv("TSR_KERNEL_BINARY_DIR", bindir, 1);
    tsr_context *ec = env_context(f);
    unsetenv("TSR_KERNEL_BINARY_DIR");
    tsr_backend *e = NULL;
    assert_int_equal(
        tsr_backend_opencl_create(ec, tsr_context_device(ec, f->device), &e), TSR_OK);
    assert_int_equal(tsr_opencl_program_origin(e, NULL), TSR_CL_FROM_BINARY);
    tsr_backend_free(e);
    tsr_context_free(ec);

    /* a damaged binary is an error naming the file, not a silent rebuild */
    write_bytes(path, "garbage", 7);
    tsr_backend *g = NULL;
    tsr_status st = tsr_backend_opencl_create_ex(f->ctx, dev(f), &o, &g);
    assert_true(st == TSR_ERR_BUILD || st == (tsr_status)CL_INVALID_BINARY);
    assert_null(g);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), path));

    /* a folder without this device's file: a CPU/GPU compiles from source */
    char empty[320];
    snprintf(empty, sizeof empty, "%s/empty", f->dir);
    assert_int_equal(mkdir(empty, 0755), 0);
    tsr_opencl_options oe = {empty, 1, 0, 0, 0};
    tsr_backend *s = open_be(f, &oe);
    assert_int_equal(tsr_opencl_program_origin(s, NULL), TSR_CL_FROM_SOURCE);
    tsr_backend_free(s);

    /* ... but an accelerator (FPGA) cannot: NOT_FOUND naming the expected file */
    tsr_device_info acc = *dev(f);
    acc.kind = TSR_DEVICE_ACCELERATOR;
    tsr_backend *x = NULL;
    assert_int_equal(tsr_backend_opencl_create_ex(f->ctx, &acc, &oe, &x), TSR_ERR_NOT_FOUND);
    assert_null(x);
    char expected[600];
    snprintf(expected, sizeof expected, "%s/%s", empty, name);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), expected));
    tsr_opencl_options none = {NULL, 1, 0, 0, 0};
    assert_int_equal(tsr_backend_opencl_create_ex(f->ctx, &acc, &none, &x), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "TSR_KERNEL_BINARY_DIR"));
    assert_non_null(strstr(tsr_context_last_error(f->ctx), name));
}

/* A compile error returns TSR_ERR_BUILD with the compiler's message in the detail. */
static void test_build_error(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    tsr_backend *be = open_be(f, NULL);
    cl_program p = NULL;
    const char *bad = "__kernel void broken(__global float *x) { x[0] = no_such_symbol_42; }\n";
    assert_int_equal(tsr_opencl_build_source(be, bad, NULL, &p), TSR_ERR_BUILD);
    assert_null(p);
    const char *err = tsr_context_last_error(f->ctx);
    assert_non_null(strstr(err, "clBuildProgram"));
    assert_non_null(strstr(err, "no_such_symbol_42")); /* from the build log */
    const char *good = "__kernel void ok(__global float *x) { x[get_global_id(0)] = 1.0f; }\n";
    assert_int_equal(tsr_opencl_build_source(be, good, NULL, &p), TSR_OK);
    assert_non_null(p);
    clReleaseProgram(p);
    tsr_backend_free(be);
}

static void test_device_memory_errors(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    tsr_backend *be = open_be(f, NULL);
    tsr_buf *b = NULL;
    uint64_t too_big = dev(f)->max_alloc_bytes + 4096;
    /* through the checked wrapper */
    assert_int_equal(tsr_buf_alloc(be, (size_t)too_big, &b), TSR_ERR_DEVICE_MEMORY);
    assert_null(b);
    /* straight to the backend: the driver's refusal becomes DEVICE_MEMORY with the CL name */
    tsr_buf raw = {.backend = be, .bytes = (size_t)too_big};
    assert_int_equal(be->iface->buf_alloc(be, &raw), TSR_ERR_DEVICE_MEMORY);
    const char *err = tsr_context_last_error(f->ctx);
    assert_non_null(strstr(err, "device memory"));
    assert_non_null(strstr(err, "CL_"));
    assert_null(raw.impl);
    /* a fresh buffer reads back as zeros; a zero-sized one is valid */
    assert_int_equal(tsr_buf_alloc(be, 64, &b), TSR_OK);
    float z[16];
    memset(z, 0xFF, sizeof z);
    assert_int_equal(tsr_buf_read(b, 0, z, sizeof z), TSR_OK);
    for (int i = 0; i < 16; i++) assert_true(z[i] == 0.0f);
    tsr_buf_free(b);
    assert_int_equal(tsr_buf_alloc(be, 0, &b), TSR_OK);
    tsr_buf_free(b);
    tsr_backend_free(be);
}

static void test_status_mapping(void **state) {
    fixture *f = *state;
    assert_int_equal(tsr_opencl_error(f->ctx, CL_OUT_OF_RESOURCES,
                                      "clEnqueueNDRangeKernel(relu_forward)"),
                     (tsr_status)-5);
    assert_string_equal(tsr_context_last_error(f->ctx),
                        "clEnqueueNDRangeKernel(relu_forward): CL_OUT_OF_RESOURCES");
    assert_int_equal(tsr_opencl_error(f->ctx, -1001, "clGetPlatformIDs"), TSR_ERR_OPENCL);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "-1001"));
    NEED_DEVICE(f);
    /* a CLBlast-specific code becomes TSR_ERR_CLBLAST with the code in the detail: call the
     * slot directly with a leading dimension the checked wrapper would refuse */
    tsr_backend *be = open_be(f, NULL);
    float x[16] = {0};
    tsr_buf *b = upload(be, x, 16);
    tsr_status st = be->iface->gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, 2, 2, 4, 1.0f, tsr_ref_at(b, 0),
                                    1, tsr_ref_at(b, 0), 2, 0.0f, tsr_ref_at(b, 8), 2);
    assert_int_equal(st, TSR_ERR_CLBLAST);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "CLBlastSgemm"));
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "-1"));
    /* wrong device records */
    tsr_device_info bad = *dev(f);
    bad.device_index = 999;
    tsr_backend *x2 = NULL;
    assert_int_equal(tsr_backend_opencl_create(f->ctx, &bad, &x2), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "no device 999"));
    bad = *dev(f);
    bad.platform_index = 77;
    assert_int_equal(tsr_backend_opencl_create(f->ctx, &bad, &x2), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "platform 77"));
    assert_int_equal(tsr_backend_opencl_create(f->ctx, tsr_context_device(f->ctx, 0), &x2),
                     TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_backend_opencl_create(f->ctx, NULL, &x2), TSR_ERR_INVALID_ARG);
    assert_null(x2);
    assert_null(tsr_opencl_state(NULL));
    tsr_buf_free(b);
    tsr_backend_free(be);
}

/* TSR_CLBLAST_PARAMS: malformed text is a parse error naming it, a set CLBlast refuses is
 * TSR_ERR_CLBLAST, a complete set is accepted; the variable is read at creation. */
static void test_clblast_params(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    tsr_backend *be = open_be(f, NULL);
    assert_int_equal(tsr_opencl_clblast_params(be, NULL), TSR_OK);
    assert_int_equal(tsr_opencl_clblast_params(be, "Xgemm"), TSR_ERR_PARSE);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "\"Xgemm\""));
    assert_int_equal(tsr_opencl_clblast_params(be, "XgemmDirect:WGD=32,KWID=x2"), TSR_ERR_PARSE);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "KWID=x2"));
    assert_int_equal(tsr_opencl_clblast_params(be, "XgemmDirect:WGD=-8"), TSR_ERR_PARSE);
    assert_int_equal(tsr_opencl_clblast_params(be, "NoSuchKernel:A=1"), TSR_ERR_CLBLAST);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "NoSuchKernel"));
    /* Xgemm (the large-size path, not used by these tests' small GEMMs) with a full set */
    const char *xgemm = "Xgemm:GEMMK=0,KREG=1,KWG=16,KWI=2,MDIMA=8,MDIMC=8,MWG=32,NDIMB=8,"
                        "NDIMC=8,NWG=32,SA=0,SB=0,STRM=0,STRN=0,VWM=1,VWN=1";
    if (tsr_opencl_clblast_params(be, xgemm) != TSR_OK)
        fail_msg("%s", tsr_context_last_error(f->ctx));
    /* TSR_CLBLAST_PARAMS: the context's clblast_params, applied by every OpenCL backend */
    setenv("TSR_CLBLAST_PARAMS", "Xgemm:MWG", 1);
    tsr_context *ec = env_context(f);
    tsr_backend *bad = NULL;
    assert_int_equal(tsr_backend_opencl_create(ec, tsr_context_device(ec, f->device), &bad),
                     TSR_ERR_PARSE);
    assert_null(bad);
    assert_non_null(strstr(tsr_context_last_error(ec), "TSR_CLBLAST_PARAMS"));
    tsr_context_free(ec);
    setenv("TSR_CLBLAST_PARAMS", xgemm, 1);
    ec = env_context(f);
    unsetenv("TSR_CLBLAST_PARAMS");
    tsr_backend *ok = NULL;
    assert_int_equal(tsr_backend_opencl_create(ec, tsr_context_device(ec, f->device), &ok),
                     TSR_OK);
    tsr_backend_free(ok);
    tsr_context_free(ec);
    tsr_backend_free(be);
}

/* Three backends on one device, interleaved: each keeps its own queue and buffers. */
static void test_many_backends(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    enum { K = 3, N = 4096 };
    tsr_backend *be[K];
    tsr_buf *x[K], *s[K];
    float h[N];
    tsr_test_fill_uniform(h, N, 3, -1.0f, 1.0f);
    for (int k = 0; k < K; k++) {
        be[k] = open_be(f, NULL);
        x[k] = upload(be[k], h, N);
        assert_int_equal(tsr_buf_alloc(be[k], sizeof(float), &s[k]), TSR_OK);
    }
    for (int round = 0; round < 4; round++)
        for (int k = 0; k < K; k++)
            assert_int_equal(tsr_op_scale(be[k], N, (float)(k + 2), tsr_ref_at(x[k], 0)), TSR_OK);
    for (int k = 0; k < K; k++) {
        assert_int_equal(tsr_op_sum(be[k], N, tsr_ref_at(x[k], 0), tsr_ref_at(s[k], 0)), TSR_OK);
        float got[N], sum;
        assert_int_equal(tsr_buf_read(x[k], 0, got, sizeof got), TSR_OK);
        assert_int_equal(tsr_buf_read(s[k], 0, &sum, sizeof sum), TSR_OK);
        float f4 = (float)(k + 2) * (float)(k + 2) * (float)(k + 2) * (float)(k + 2);
        double ref = 0;
        for (int i = 0; i < N; i++) {
            float r = h[i];
            for (int j = 0; j < 4; j++) r *= (float)(k + 2);
            assert_true(got[i] == r);
            ref += r;
        }
        assert_true(fabs(sum - ref) <= 1e-4 * f4 * N);
    }
    /* buffers of another backend are refused */
    assert_int_equal(tsr_op_axpy(be[0], N, 1.0f, tsr_ref_at(x[1], 0), tsr_ref_at(x[0], 0)),
                     TSR_ERR_INVALID_ARG);
    for (int k = 0; k < K; k++) {
        tsr_buf_free(x[k]);
        tsr_buf_free(s[k]);
        tsr_backend_free(be[k]);
    }
}

/* A long chain of dependent asynchronous ops (no finish between them) must run in order. */
static void test_queue_order(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    enum { N = 1 << 16, STEPS = 50 };
    tsr_backend *be = open_be(f, NULL);
    tsr_buf *x = NULL, *y = NULL, *s = NULL;
    assert_int_equal(tsr_buf_alloc(be, N * sizeof(float), &x), TSR_OK);
    assert_int_equal(tsr_buf_alloc(be, 2 * N * sizeof(float), &y), TSR_OK);
    assert_int_equal(tsr_buf_alloc(be, sizeof(float), &s), TSR_OK);
    assert_int_equal(tsr_op_fill(be, tsr_ref_at(x, 0), N, 1.0f), TSR_OK);
    assert_int_equal(tsr_op_fill(be, tsr_ref_at(y, 0), 2 * N, 0.0f), TSR_OK);
    /* y[N..2N) accumulates x; x doubles each step: y = 1+2+4+... */
    for (int i = 0; i < STEPS; i++) {
        assert_int_equal(tsr_op_axpy(be, N, 1.0f, tsr_ref_at(x, 0), tsr_ref_at(y, N)), TSR_OK);
        assert_int_equal(tsr_op_scale(be, N, 2.0f, tsr_ref_at(x, 0)), TSR_OK);
        if (i == STEPS / 2) /* copies are queued in the same order */
            assert_int_equal(tsr_buf_copy(y, 0, y, N * sizeof(float), N * sizeof(float)), TSR_OK);
    }
    assert_int_equal(tsr_op_sum(be, 64, tsr_ref_at(y, 0), tsr_ref_at(s, 0)), TSR_OK);
    float first, last, sum;
    assert_int_equal(tsr_buf_read(y, 0, &first, sizeof first), TSR_OK);
    assert_int_equal(tsr_buf_read(y, (2 * N - 1) * sizeof(float), &last, sizeof last), TSR_OK);
    assert_int_equal(tsr_buf_read(s, 0, &sum, sizeof sum), TSR_OK);
    assert_true(first == ldexpf(1.0f, STEPS / 2 + 1) - 1.0f);
    assert_true(last == ldexpf(1.0f, STEPS) - 1.0f);
    assert_true(sum == 64.0f * first);
    /* overlapping copy inside one buffer behaves like memmove */
    float h[8] = {0, 1, 2, 3, 4, 5, 6, 7}, out[8];
    assert_int_equal(tsr_buf_write(x, 0, h, sizeof h), TSR_OK);
    assert_int_equal(tsr_buf_copy(x, 2 * sizeof(float), x, 0, 5 * sizeof(float)), TSR_OK);
    assert_int_equal(tsr_backend_finish(be), TSR_OK);
    assert_int_equal(tsr_buf_read(x, 0, out, sizeof out), TSR_OK);
    const float want[8] = {0, 1, 0, 1, 2, 3, 4, 7};
    for (int i = 0; i < 8; i++) assert_true(out[i] == want[i]);
    tsr_buf_free(x);
    tsr_buf_free(y);
    tsr_buf_free(s);
    tsr_backend_free(be);
}

static void ref_gemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                     size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double acc = 0;
            for (size_t p = 0; p < k; p++)
                acc += (double)(ta ? a[p * lda + i] : a[i * lda + p]) *
                       (double)(tb ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = (float)(alpha * acc + (beta == 0.0f ? 0.0 : beta * c[i * ldc + j]));
        }
}

/* All transposes with offsets and padded leading dimensions; strided batches with a shared
 * (stride 0) A; k = 0. */
static void test_gemm_variants(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    tsr_backend *be = open_be(f, NULL);
    /* AUTO: CLBlast's batched routine on GPUs, a loop of single GEMMs elsewhere */
    assert_int_equal(tsr_opencl_state(be)->batched, dev(f)->kind == TSR_DEVICE_GPU
                                                        ? TSR_CL_BATCHED_CLBLAST
                                                        : TSR_CL_BATCHED_LOOP);
    tsr_opencl_options bad = {NULL, 0, 7, 0, 0};
    tsr_backend *nb = NULL;
    assert_int_equal(tsr_backend_opencl_create_ex(f->ctx, dev(f), &bad, &nb), TSR_ERR_INVALID_ARG);
    assert_null(nb);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "batched_gemm"));
    enum { M = 13, N = 11, K = 7, LD = 17, OFF = 5, BATCH = 3 };
    size_t sa = M * LD + 3, sb = K * LD + 1, sc = M * LD + 2, total = OFF + BATCH * 256;
    float *a = malloc(total * sizeof(float)), *b = malloc(total * sizeof(float));
    float *c = malloc(total * sizeof(float)), *ref = malloc(total * sizeof(float));
    float *got = malloc(total * sizeof(float));
    assert_true(a && b && c && ref && got);
    assert_true(sa < 256 && sb < 256 && sc < 256);
    tsr_test_fill_uniform(a, total, 11, -1, 1);
    tsr_test_fill_uniform(b, total, 12, -1, 1);
    tsr_test_fill_uniform(c, total, 13, -1, 1);
    tsr_buf *ba = upload(be, a, total), *bb = upload(be, b, total), *bc = NULL;
    assert_int_equal(tsr_buf_alloc(be, total * sizeof(float), &bc), TSR_OK);
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int batched = 0; batched < 2; batched++) {
                size_t batch = batched ? BATCH : 1, stride_a = batched && ta ? 0 : sa;
                memcpy(ref, c, total * sizeof(float));
                assert_int_equal(tsr_buf_write(bc, 0, c, total * sizeof(float)), TSR_OK);
                for (size_t i = 0; i < batch; i++)
                    ref_gemm(ta, tb, M, N, K, 0.75f, a + OFF + i * stride_a, LD,
                             b + OFF + i * sb, LD, 0.5f, ref + OFF + i * sc, LD);
                assert_int_equal(tsr_op_gemm_batched(be, (tsr_trans)ta, (tsr_trans)tb, M, N, K,
                                                     0.75f, tsr_ref_at(ba, OFF), LD, stride_a,
                                                     tsr_ref_at(bb, OFF), LD, sb, 0.5f,
                                                     tsr_ref_at(bc, OFF), LD, sc, batch),
                                 TSR_OK);
                assert_int_equal(tsr_buf_read(bc, 0, got, total * sizeof(float)), TSR_OK);
                size_t worst;
                double e = tsr_test_rel_error(got, ref, total, 1e-5, 1e-4, &worst);
                if (e > 1) fail_msg("ta=%d tb=%d batch=%zu: element %zu is %g, want %g", ta, tb,
                                    batch, worst, got[worst], ref[worst]);
            }
    /* k = 0: C = beta*C; beta = 0 overwrites even NaN */
    float nan_c[4] = {NAN, 2, 3, 4}, out[4];
    assert_int_equal(tsr_buf_write(bc, 0, nan_c, sizeof nan_c), TSR_OK);
    assert_int_equal(tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, 1, 2, 0, 1.0f, tsr_ref_at(ba, 0),
                                 1, tsr_ref_at(bb, 0), 2, 0.0f, tsr_ref_at(bc, 0), 2), TSR_OK);
    assert_int_equal(tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, 1, 2, 0, 1.0f, tsr_ref_at(ba, 0),
                                 1, tsr_ref_at(bb, 0), 2, 3.0f, tsr_ref_at(bc, 2), 2), TSR_OK);
    assert_int_equal(tsr_buf_read(bc, 0, out, sizeof out), TSR_OK);
    assert_true(out[0] == 0 && out[1] == 0 && out[2] == 9 && out[3] == 12);
    tsr_buf_free(ba);
    tsr_buf_free(bb);
    tsr_buf_free(bc);
    free(a);
    free(b);
    free(c);
    free(ref);
    free(got);
    tsr_backend_free(be);
}

static void ref_im2col(const tsr_conv_geom *g, const float *x, float *col) {
    size_t rows = g->channels * g->kernel_h * g->kernel_w, plane = g->out_h * g->out_w;
    for (size_t b = 0; b < g->batch; b++)
        for (size_t r = 0; r < rows; r++)
            for (size_t p = 0; p < plane; p++) {
                size_t c = r / (g->kernel_h * g->kernel_w), ki = r / g->kernel_w % g->kernel_h;
                size_t kj = r % g->kernel_w, oy = p / g->out_w, ox = p % g->out_w;
                long iy = (long)(oy * g->stride_h + ki) - (long)g->pad_h;
                long ix = (long)(ox * g->stride_w + kj) - (long)g->pad_w;
                int in = iy >= 0 && iy < (long)g->height && ix >= 0 && ix < (long)g->width;
                col[(r * g->batch + b) * plane + p] =
                    in ? x[((b * g->channels + c) * g->height + (size_t)iy) * g->width + (size_t)ix]
                       : 0.0f;
            }
}

/* dx += col2im(col): the scatter im2col's transpose describes. */
static void ref_col2im(const tsr_conv_geom *g, const float *col, float *dx) {
    size_t rows = g->channels * g->kernel_h * g->kernel_w, plane = g->out_h * g->out_w;
    for (size_t b = 0; b < g->batch; b++)
        for (size_t r = 0; r < rows; r++)
            for (size_t p = 0; p < plane; p++) {
                size_t c = r / (g->kernel_h * g->kernel_w), ki = r / g->kernel_w % g->kernel_h;
                size_t kj = r % g->kernel_w, oy = p / g->out_w, ox = p % g->out_w;
                long iy = (long)(oy * g->stride_h + ki) - (long)g->pad_h;
                long ix = (long)(ox * g->stride_w + kj) - (long)g->pad_w;
                if (iy >= 0 && iy < (long)g->height && ix >= 0 && ix < (long)g->width)
                    dx[((b * g->channels + c) * g->height + (size_t)iy) * g->width + (size_t)ix] +=
                        col[(r * g->batch + b) * plane + p];
            }
}

/* The 32-bit-index kernels and their 64-bit (_wide) twins, which only tensors of 2^32
 * elements would reach, both against plain C: conv geometries with strides, padding and
 * offsets, max pooling with overlapping windows, the block transpose. */
static void test_index_width_variants(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    tsr_backend *be = open_be(f, NULL);
    const tsr_conv_geom geoms[] = {
        {.batch = 2, .channels = 3, .height = 9, .width = 7, .kernel_h = 3, .kernel_w = 3,
         .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1},
        {.batch = 1, .channels = 2, .height = 6, .width = 11, .kernel_h = 5, .kernel_w = 2,
         .stride_h = 1, .stride_w = 3, .pad_h = 2, .pad_w = 0},
        {.batch = 3, .channels = 1, .height = 5, .width = 5, .kernel_h = 2, .kernel_w = 2,
         .stride_h = 3, .stride_w = 3, .pad_h = 0, .pad_w = 1},
    };
    for (int wide = 0; wide < 2; wide++) {
        tsr_opencl_state(be)->force_wide = wide;
        for (size_t gi = 0; gi < TSR_ARRAY_SIZE(geoms); gi++) {
            tsr_conv_geom g = geoms[gi];
            assert_int_equal(tsr_conv_geom_finish(&g), TSR_OK);
            size_t img = g.batch * g.channels * g.height * g.width;
            size_t cols = g.batch * g.channels * g.kernel_h * g.kernel_w * g.out_h * g.out_w;
            const size_t OFF = 3;
            float *x = malloc((img + OFF) * 4), *col = malloc((cols + OFF) * 4);
            float *ref_col = calloc(cols, 4), *dx = malloc((img + OFF) * 4);
            float *ref_dx = malloc(img * 4), *got = malloc((cols > img ? cols : img) * 4);
            assert_true(x && col && ref_col && dx && ref_dx && got);
            tsr_test_fill_uniform(x, img + OFF, 40 + gi, -1, 1);
            tsr_test_fill_uniform(col, cols + OFF, 50 + gi, -1, 1);
            tsr_test_fill_uniform(dx, img + OFF, 60 + gi, -1, 1);
            ref_im2col(&g, x + OFF, ref_col);
            memcpy(ref_dx, dx + OFF, img * 4);
            ref_col2im(&g, col + OFF, ref_dx);
            tsr_buf *bx = upload(be, x, img + OFF), *bcol = upload(be, col, cols + OFF);
            tsr_buf *bdx = upload(be, dx, img + OFF), *bout = NULL;
            assert_int_equal(tsr_buf_alloc(be, (cols + OFF) * 4, &bout), TSR_OK);
            assert_int_equal(tsr_op_im2col(be, &g, tsr_ref_at(bx, OFF), tsr_ref_at(bout, OFF)), TSR_OK);
            assert_int_equal(tsr_buf_read(bout, OFF * 4, got, cols * 4), TSR_OK);
            for (size_t i = 0; i < cols; i++)
                if (got[i] != ref_col[i]) fail_msg("wide=%d geom %zu im2col[%zu] = %g, want %g",
                                                   wide, gi, i, got[i], ref_col[i]);
            assert_int_equal(tsr_op_col2im(be, &g, tsr_ref_at(bcol, OFF), tsr_ref_at(bdx, OFF)), TSR_OK);
            assert_int_equal(tsr_buf_read(bdx, OFF * 4, got, img * 4), TSR_OK);
            size_t worst;
            if (tsr_test_rel_error(got, ref_dx, img, 1e-6, 1e-5, &worst) > 1)
                fail_msg("wide=%d geom %zu col2im[%zu] = %g, want %g", wide, gi, worst, got[worst],
                         ref_dx[worst]);
            tsr_buf_free(bx);
            tsr_buf_free(bcol);
            tsr_buf_free(bdx);
            tsr_buf_free(bout);
            free(x);
            free(col);
            free(ref_col);
            free(dx);
            free(ref_dx);
            free(got);
        }
        /* max pooling, 3x3 windows at stride 2 (overlapping), two planes */
        tsr_pool_geom pg = {.planes = 2, .height = 7, .width = 9, .size = 3, .stride = 2};
        assert_int_equal(tsr_pool_geom_finish(&pg), TSR_OK);
        enum { IN = 2 * 7 * 9 };
        size_t out = pg.planes * pg.out_h * pg.out_w;
        float x[IN], dy[64], y[64], dx[IN], ref_y[64], ref_dx[IN] = {0};
        int32_t idx[64], ref_idx[64];
        tsr_test_fill_uniform(x, IN, 77 + wide, -1, 1);
        tsr_test_fill_uniform(dy, out, 78, -1, 1);
        for (size_t p = 0; p < pg.planes; p++)
            for (size_t oy = 0; oy < pg.out_h; oy++)
                for (size_t ox = 0; ox < pg.out_w; ox++) {
                    size_t o = (p * pg.out_h + oy) * pg.out_w + ox, best = oy * 2 * 9 + ox * 2;
                    for (size_t a = 0; a < 3; a++)
                        for (size_t b = 0; b < 3; b++) {
                            size_t at = (oy * 2 + a) * 9 + ox * 2 + b;
                            if (x[p * 63 + at] > x[p * 63 + best]) best = at;
                        }
                    ref_y[o] = x[p * 63 + best];
                    ref_idx[o] = (int32_t)best;
                    ref_dx[p * 63 + best] += dy[o];
                }
        tsr_buf *bx = upload(be, x, IN), *by = NULL, *bi = NULL, *bdy = upload(be, dy, out);
        tsr_buf *bdx = NULL;
        assert_int_equal(tsr_buf_alloc(be, out * 4, &by), TSR_OK);
        assert_int_equal(tsr_buf_alloc(be, out * 4, &bi), TSR_OK);
        assert_int_equal(tsr_buf_alloc(be, IN * 4, &bdx), TSR_OK);
        assert_int_equal(tsr_op_maxpool_forward(be, &pg, tsr_ref_at(bx, 0), tsr_ref_at(by, 0),
                                                tsr_ref_at(bi, 0)), TSR_OK);
        assert_int_equal(tsr_op_maxpool_backward(be, &pg, tsr_ref_at(bdy, 0), tsr_ref_at(bi, 0),
                                                 tsr_ref_at(bdx, 0)), TSR_OK);
        assert_int_equal(tsr_buf_read(by, 0, y, out * 4), TSR_OK);
        assert_int_equal(tsr_buf_read(bi, 0, idx, out * 4), TSR_OK);
        assert_int_equal(tsr_buf_read(bdx, 0, dx, IN * 4), TSR_OK);
        for (size_t o = 0; o < out; o++) {
            assert_true(y[o] == ref_y[o]);
            assert_int_equal(idx[o], ref_idx[o]);
        }
        size_t worst;
        if (tsr_test_rel_error(dx, ref_dx, IN, 1e-6, 1e-5, &worst) > 1)
            fail_msg("wide=%d maxpool dx[%zu] = %g, want %g", wide, worst, dx[worst], ref_dx[worst]);
        tsr_buf_free(bx);
        tsr_buf_free(by);
        tsr_buf_free(bi);
        tsr_buf_free(bdy);
        tsr_buf_free(bdx);
        /* block transpose of a 3 x 4 matrix of 5-float blocks, at an offset */
        enum { TR = 3, TC = 4, TK = 5, TN = TR * TC * TK };
        float t_in[TN + 2], t_got[TN];
        tsr_test_fill_uniform(t_in, TN + 2, 79 + wide, -1, 1);
        tsr_buf *bt = upload(be, t_in, TN + 2), *bto = NULL;
        assert_int_equal(tsr_buf_alloc(be, TN * 4, &bto), TSR_OK);
        assert_int_equal(tsr_op_transpose(be, TR, TC, TK, tsr_ref_at(bt, 2), tsr_ref_at(bto, 0)), TSR_OK);
        assert_int_equal(tsr_buf_read(bto, 0, t_got, TN * 4), TSR_OK);
        for (size_t i = 0; i < TR; i++)
            for (size_t j = 0; j < TC; j++)
                for (size_t k = 0; k < TK; k++)
                    if (t_got[(j * TR + i) * TK + k] != t_in[2 + (i * TC + j) * TK + k])
                        fail_msg("wide=%d transpose [%zu][%zu][%zu] = %g, want %g", wide, j, i, k,
                                 t_got[(j * TR + i) * TK + k], t_in[2 + (i * TC + j) * TK + k]);
        tsr_buf_free(bt);
        tsr_buf_free(bto);
    }
    tsr_backend_free(be);
}

/* Every host allocation failure during creation returns NO_MEMORY and leaks nothing. */
static void test_create_allocation_failures(void **state) {
    fixture *f = *state;
    NEED_DEVICE(f);
    const tsr_device_info info = *dev(f);
    for (long k = 1; k < 64; k++) {
        tsr_test_alloc fail;
        tsr_test_alloc_init(&fail, k);
        tsr_context_options o;
        tsr_context_options_init(&o);
        o.allocator = &fail.allocator;
        o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
        o.log_level = TSR_LOG_OFF;
        char cache[300];
        snprintf(cache, sizeof cache, "%s/cache", f->dir);
        o.cache_dir = cache;
        fail.fail_at = 0; /* let the context itself succeed */
        tsr_context *ctx;
        assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
        fail.fail_at = fail.calls + k;
        tsr_backend *be = NULL;
        tsr_status st = tsr_backend_opencl_create(ctx, &info, &be);
        if (st == TSR_OK) {
            tsr_backend_free(be);
            tsr_context_free(ctx);
            assert_int_equal(fail.live, 0);
            return; /* every failure point before this one was covered */
        }
        assert_int_equal(st, TSR_ERR_NO_MEMORY);
        assert_null(be);
        tsr_context_free(ctx);
        assert_int_equal(fail.live, 0);
    }
    fail_msg("backend creation still failing after 63 allocation points");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary_name),
        cmocka_unit_test_setup_teardown(test_status_mapping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_entry_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_store_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precompiled_binary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_build_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_device_memory_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clblast_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_backends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gemm_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_width_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_allocation_failures, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
