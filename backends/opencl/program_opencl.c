/* OpenCL program creation: precompiled binaries (FPGAs), an on-disk binary cache, or the
 * embedded kernel sources, in that order.
 *
 * Cache entry: <cache dir>/opencl/<64 hex digits>.bin, the digits the SHA-256 key of platform
 * name, device name, driver version, build options and every source (each with its NUL, which
 * separates the fields). The file holds an 80-byte header {"TSRCLB2\0", key (32 bytes),
 * payload size (u64 LE), payload SHA-256 (32 bytes)} and the program binary. */
#include <errno.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "backends/opencl/opencl.h"
#include "lib/core/atomic_file.h"
#include "lib/core/internal.h"
#include "tsr_kernels.h"

#define CACHE_MAGIC "TSRCLB2" /* 2: SHA-256 key and checksum (1 had 64-bit FNV-1a) */
#define KEY_BYTES SHA256_DIGEST_SIZE
#define CACHE_HEADER (8 + KEY_BYTES + 8 + SHA256_DIGEST_SIZE)

static void key_add(struct sha256_ctx *s, const char *field) {
    sha256_update(s, strlen(field) + 1, (const uint8_t *)field); /* the NUL separates fields */
}

void tsr_opencl_binary_name(const char *device_name, char *out, size_t size) {
    if (!size) return;
    size_t o = 0;
    int pending = 0;
    for (const char *p = device_name ? device_name : ""; *p && o + 1 < size; p++) {
        char c = *p;
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
            if (pending && o && o + 2 < size) out[o++] = '_';
            pending = 0;
            out[o++] = c;
        } else {
            pending = 1;
        }
    }
    out[o] = '\0';
    if (o == 0) tsr_strlcpy(out, "device", size);
    size_t len = strlen(out);
    if (len + 7 > size) len = size - 7 > 0 ? size - 7 : 0;
    if (size >= 7) memcpy(out + len, ".clbin", 7);
}

static char *build_log(tsr_backend *be, cl_program program) {
    tsr_cl *cl = be->impl;
    size_t n = 0;
    if (clGetProgramBuildInfo(program, cl->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n) != CL_SUCCESS)
        return NULL;
    char *log = tsr_malloc(be->ctx, n + 1);
    if (!log) return NULL;
    if (clGetProgramBuildInfo(program, cl->device, CL_PROGRAM_BUILD_LOG, n, log, NULL) != CL_SUCCESS)
        n = 0;
    log[n] = '\0';
    return log;
}

/* clBuildProgram; a failure becomes TSR_ERR_BUILD with the compiler's log in the detail. */
static tsr_status build(tsr_backend *be, cl_program program, const char *options, const char *what) {
    tsr_cl *cl = be->impl;
    cl_int err = clBuildProgram(program, 1, &cl->device, options, NULL, NULL);
    if (err == CL_SUCCESS) return TSR_OK;
    char *log = build_log(be, program);
    tsr_status st = tsr_error(be->ctx, TSR_ERR_BUILD, "clBuildProgram(%s) for %s: %s: %s", what,
                              be->device.name, tsr_status_name((tsr_status)err),
                              log && *log ? log : "(no build log)");
    tsr_free(be->ctx, log);
    return st;
}

tsr_status tsr_opencl_build_source(tsr_backend *be, const char *source, const char *options,
                                   cl_program *out) {
    tsr_cl *cl = tsr_opencl_state(be);
    if (!cl || !source || !out)
        return tsr_error(be ? be->ctx : NULL, TSR_ERR_INVALID_ARG, "tsr_opencl_build_source: bad argument");
    *out = NULL;
    cl_int err;
    cl_program p = clCreateProgramWithSource(cl->context, 1, &source, NULL, &err);
    if (err != CL_SUCCESS) return tsr_opencl_error(be->ctx, err, "clCreateProgramWithSource");
    tsr_status st = build(be, p, options ? options : cl->build_options, "source");
    if (st != TSR_OK) {
        clReleaseProgram(p);
        return st;
    }
    *out = p;
    return TSR_OK;
}

static tsr_status build_embedded(tsr_backend *be, cl_program *out) {
    tsr_cl *cl = be->impl;
    enum { N = sizeof tsr_kernel_sources / sizeof tsr_kernel_sources[0] };
    const char *src[N];
    for (size_t i = 0; i < N; i++) src[i] = tsr_kernel_sources[i].source;
    cl_int err;
    cl_program p = clCreateProgramWithSource(cl->context, N, src, NULL, &err);
    if (err != CL_SUCCESS) return tsr_opencl_error(be->ctx, err, "clCreateProgramWithSource");
    tsr_status st = build(be, p, cl->build_options, "tessera kernels");
    if (st != TSR_OK) {
        clReleaseProgram(p);
        return st;
    }
    *out = p;
    return TSR_OK;
}

/* Program from a device binary; `what` names the file in errors. */
static tsr_status from_binary(tsr_backend *be, const unsigned char *data, size_t size,
                              const char *what, cl_program *out) {
    tsr_cl *cl = be->impl;
    cl_int err, bin_status = CL_SUCCESS;
    cl_program p = clCreateProgramWithBinary(cl->context, 1, &cl->device, &size, &data,
                                             &bin_status, &err);
    if (err == CL_SUCCESS && bin_status != CL_SUCCESS) err = bin_status;
    if (err != CL_SUCCESS) {
        if (p) clReleaseProgram(p);
        char call[1100];
        snprintf(call, sizeof call, "clCreateProgramWithBinary(%s)", what);
        return tsr_opencl_error(be->ctx, err, call);
    }
    tsr_status st = build(be, p, cl->build_options, what);
    if (st != TSR_OK) {
        clReleaseProgram(p);
        return st;
    }
    *out = p;
    return TSR_OK;
}

/* Whole file into memory. TSR_ERR_NOT_FOUND when it does not exist. */
static tsr_status read_file(tsr_context *ctx, const char *path, unsigned char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        return tsr_error(ctx, e == ENOENT ? TSR_ERR_NOT_FOUND : TSR_ERR_IO, "%s: %s", path,
                         strerror(e));
    }
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f); /* a folder "opens" and has a size of LONG_MAX */
        return tsr_error(ctx, TSR_ERR_IO, "%s: not a regular file", path);
    }
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return tsr_error(ctx, TSR_ERR_IO, "%s: cannot determine size", path);
    }
    /* Zero padding past the end: PoCL parses a fixed-size header without checking the size,
     * so a truncated or damaged binary file made it read past the buffer (valgrind). */
    unsigned char *buf = tsr_calloc(ctx, (size_t)len + 4096, 1);
    if (!buf) {
        fclose(f);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: %ld bytes", path, len);
    }
    size_t got = fread(buf, 1, (size_t)len, f);
    fclose(f);
    if (got != (size_t)len) {
        tsr_free(ctx, buf);
        return tsr_error(ctx, TSR_ERR_IO, "%s: short read (%zu of %ld bytes)", path, got, len);
    }
    *data = buf;
    *size = (size_t)len;
    return TSR_OK;
}

static int mkdir_p(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        int r = mkdir(path, 0755);
        *p = '/';
        if (r != 0 && errno != EEXIST) return -1;
    }
    return (mkdir(path, 0755) == 0 || errno == EEXIST) ? 0 : -1;
}

/* The device binary of a built program (one device). */
static tsr_status program_binary(tsr_backend *be, cl_program p, unsigned char **data, size_t *size) {
    *data = NULL;
    size_t n = 0;
    cl_int err = clGetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof n, &n, NULL);
    if (err != CL_SUCCESS) return tsr_opencl_error(be->ctx, err, "clGetProgramInfo(BINARY_SIZES)");
    if (n == 0) return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED, "%s: driver returns no program binary",
                                 be->device.name);
    unsigned char *buf = tsr_malloc(be->ctx, n);
    if (!buf) return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "program binary of %zu bytes", n);
    err = clGetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof buf, &buf, NULL);
    if (err != CL_SUCCESS) {
        tsr_free(be->ctx, buf);
        return tsr_opencl_error(be->ctx, err, "clGetProgramInfo(BINARIES)");
    }
    *data = buf;
    *size = n;
    return TSR_OK;
}

static void put64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint64_t get64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Writes the entry through tsr_atomic_*, so readers never see half a file; 1 when written.
 * Failures only cost a rebuild next time: they are logged, not returned (the caller restores
 * its error). */
static int cache_store(tsr_backend *be, const char *dir, const char *path,
                       const uint8_t key[KEY_BYTES], const unsigned char *bin, size_t size) {
    char d[1024];
    tsr_strlcpy(d, dir, sizeof d);
    if (mkdir_p(d) != 0) {
        tsr_log(be->ctx, TSR_LOG_WARN, "OpenCL program cache: cannot create %s: %s", dir,
                strerror(errno));
        return 0;
    }
    unsigned char hdr[CACHE_HEADER];
    memcpy(hdr, CACHE_MAGIC, 8);
    memcpy(hdr + 8, key, KEY_BYTES);
    put64(hdr + 8 + KEY_BYTES, size);
    tsr_sha256(bin, size, hdr + 16 + KEY_BYTES);
    tsr_atomic_file file;
    tsr_status st = tsr_atomic_open(be->ctx, path, &file);
    if (st == TSR_OK) {
        tsr_atomic_write(&file, hdr, sizeof hdr);
        tsr_atomic_write(&file, bin, size);
        st = tsr_atomic_commit(&file);
    }
    if (st != TSR_OK)
        tsr_log(be->ctx, TSR_LOG_WARN, "OpenCL program cache not written: %s",
                tsr_context_last_error(be->ctx));
    return st == TSR_OK;
}

/* Loads a cache entry. TSR_ERR_NOT_FOUND when absent; TSR_ERR_CORRUPT (detail says why) when
 * the file is damaged or the driver rejects its binary. */
static tsr_status cache_load(tsr_backend *be, const char *path, const uint8_t key[KEY_BYTES],
                             cl_program *out) {
    tsr_context *ctx = be->ctx;
    unsigned char *data;
    size_t size;
    tsr_status st = read_file(ctx, path, &data, &size);
    if (st != TSR_OK) return st;
    uint8_t sum[SHA256_DIGEST_SIZE];
    if (size >= CACHE_HEADER) tsr_sha256(data + CACHE_HEADER, size - CACHE_HEADER, sum);
    if (size < CACHE_HEADER || memcmp(data, CACHE_MAGIC, 8) != 0 ||
        memcmp(data + 8, key, KEY_BYTES) != 0 || get64(data + 8 + KEY_BYTES) != size - CACHE_HEADER ||
        memcmp(data + 16 + KEY_BYTES, sum, sizeof sum) != 0) {
        tsr_free(ctx, data);
        return tsr_error(ctx, TSR_ERR_CORRUPT, "%s: bad header or checksum", path);
    }
    st = from_binary(be, data + CACHE_HEADER, size - CACHE_HEADER, path, out);
    tsr_free(ctx, data);
    if (st != TSR_OK && st != TSR_ERR_NO_MEMORY) st = TSR_ERR_CORRUPT; /* detail already says why */
    return st;
}

static void device_string(tsr_cl *cl, cl_device_info what, char *dst, size_t n) {
    dst[0] = '\0';
    if (clGetDeviceInfo(cl->device, what, n, dst, NULL) != CL_SUCCESS) dst[0] = '\0';
    dst[n - 1] = '\0';
}

/* Expected misses (no binary file, no cache entry) pass through tsr_error; this puts the
 * caller's last error back so a successful open leaves no trace of them. */
typedef struct saved_error {
    tsr_status status;
    char text[sizeof ((tsr_context *)0)->last_error];
} saved_error;

static void restore_error(tsr_context *ctx, const saved_error *e) {
    ctx->last_status = e->status;
    memcpy(ctx->last_error, e->text, sizeof e->text);
}

tsr_status tsr_opencl_program_load(tsr_backend *be, const tsr_opencl_options *opts) {
    tsr_cl *cl = be->impl;
    tsr_context *ctx = be->ctx;
    saved_error saved;
    saved.status = ctx->last_status;
    memcpy(saved.text, ctx->last_error, sizeof saved.text);
    char devname[256], driver[256], platname[256] = "";
    device_string(cl, CL_DEVICE_NAME, devname, sizeof devname);
    device_string(cl, CL_DRIVER_VERSION, driver, sizeof driver);
    clGetPlatformInfo(cl->platform, CL_PLATFORM_NAME, sizeof platname, platname, NULL);
    platname[sizeof platname - 1] = '\0';
    cl_device_type type = 0;
    clGetDeviceInfo(cl->device, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    if (be->device.kind == TSR_DEVICE_ACCELERATOR) type |= CL_DEVICE_TYPE_ACCELERATOR;
    cl->program_path[0] = '\0';

    /* 1. A precompiled program for this device (the only way on FPGAs). */
    const char *bindir = opts->kernel_binary_dir ? opts->kernel_binary_dir
                                                 : ctx->opts.kernel_binary_dir;
    char name[160], path[1024];
    tsr_opencl_binary_name(devname, name, sizeof name);
    if (bindir && *bindir) {
        snprintf(path, sizeof path, "%s/%s", bindir, name);
        unsigned char *data;
        size_t size;
        tsr_status st = read_file(ctx, path, &data, &size);
        if (st == TSR_OK) {
            st = from_binary(be, data, size, path, &cl->program);
            tsr_free(ctx, data);
            if (st != TSR_OK) return st;
            cl->origin = TSR_CL_FROM_BINARY;
            tsr_strlcpy(cl->program_path, path, sizeof cl->program_path);
            tsr_log(ctx, TSR_LOG_INFO, "%s: using precompiled OpenCL program %s", be->device.id, path);
            return TSR_OK;
        }
        if (st != TSR_ERR_NOT_FOUND) return st;
        if (type & CL_DEVICE_TYPE_ACCELERATOR)
            return tsr_error(ctx, TSR_ERR_NOT_FOUND,
                             "%s (%s) is an accelerator that cannot compile OpenCL C: expected a "
                             "precompiled program at %s", be->device.id, devname, path);
        restore_error(ctx, &saved);
    } else if (type & CL_DEVICE_TYPE_ACCELERATOR) {
        return tsr_error(ctx, TSR_ERR_NOT_FOUND,
                         "%s (%s) is an accelerator that cannot compile OpenCL C: set "
                         "TSR_KERNEL_BINARY_DIR to a folder holding %s", be->device.id, devname, name);
    }

    /* 2. The binary cache. */
    uint8_t key[KEY_BYTES];
    struct sha256_ctx hash;
    sha256_init(&hash);
    key_add(&hash, platname);
    key_add(&hash, devname);
    key_add(&hash, driver);
    key_add(&hash, cl->build_options);
    for (size_t i = 0; i < TSR_ARRAY_SIZE(tsr_kernel_sources); i++)
        key_add(&hash, tsr_kernel_sources[i].source);
    sha256_digest(&hash, sizeof key, key);
    int use_cache = !opts->no_cache && ctx->cache_dir[0];
    char dir[1024] = "", cpath[1024] = "";
    if (use_cache) {
        char hex[2 * KEY_BYTES + 1];
        for (int i = 0; i < KEY_BYTES; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
        snprintf(dir, sizeof dir, "%s/opencl", ctx->cache_dir);
        snprintf(cpath, sizeof cpath, "%s/%s.bin", dir, hex);
        tsr_status st = cache_load(be, cpath, key, &cl->program);
        if (st == TSR_OK) {
            cl->origin = TSR_CL_FROM_CACHE;
            tsr_strlcpy(cl->program_path, cpath, sizeof cl->program_path);
            return TSR_OK;
        }
        if (st == TSR_ERR_NO_MEMORY) return st;
        if (st != TSR_ERR_NOT_FOUND) {
            tsr_log(ctx, TSR_LOG_WARN, "OpenCL program cache entry unusable, rebuilding: %s",
                    tsr_context_last_error(ctx));
            remove(cpath);
        }
        restore_error(ctx, &saved);
    }

    /* 3. Compile the embedded sources and remember the result. */
    TSR_TRY(build_embedded(be, &cl->program));
    cl->origin = TSR_CL_FROM_SOURCE;
    if (use_cache) {
        unsigned char *bin;
        size_t size;
        if (program_binary(be, cl->program, &bin, &size) == TSR_OK) {
            if (cache_store(be, dir, cpath, key, bin, size))
                tsr_strlcpy(cl->program_path, cpath, sizeof cl->program_path);
            tsr_free(ctx, bin);
        }
        restore_error(ctx, &saved);
    }
    return TSR_OK;
}

const char *tsr_opencl_kernel_source(const char *name) {
    for (size_t i = 0; i < TSR_ARRAY_SIZE(tsr_kernel_sources); i++)
        if (name && !strcmp(tsr_kernel_sources[i].name, name)) return tsr_kernel_sources[i].source;
    return NULL;
}

tsr_status tsr_opencl_program_binary(tsr_backend *be, unsigned char **data, size_t *size) {
    tsr_cl *cl = tsr_opencl_state(be);
    if (!cl || !data || !size)
        return tsr_error(be ? be->ctx : NULL, TSR_ERR_INVALID_ARG, "tsr_opencl_program_binary: bad argument");
    return program_binary(be, cl->program, data, size);
}
