/* Run manifest (manifest.h) and the SHA-256 of its files (through nettle). */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/core/atomic_file.h"
#include "lib/core/internal.h"
#include "tessera.h"

#ifndef TSR_GIT_DESCRIBE
#define TSR_GIT_DESCRIBE "unknown" /* set by the Makefile from `git describe` when available */
#endif
#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

/* ---- SHA-256: nettle's (no global state, no init call) ---- */
#define SHA_READ_BYTES (1 << 16) /* files are hashed in reads of this size */

void tsr_sha256(const void *data, size_t size, uint8_t digest[32]) {
    struct sha256_ctx s;
    sha256_init(&s);
    sha256_update(&s, size, data);
    sha256_digest(&s, SHA256_DIGEST_SIZE, digest);
}

tsr_status tsr_sha256_file(tsr_context *ctx, const char *path, char hex[65], uint64_t *bytes) {
    if (!path || !hex) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_sha256_file: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f) return tsr_error(ctx, TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = tsr_malloc(ctx, SHA_READ_BYTES);
    if (!buf) {
        fclose(f);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory to hash", path);
    }
    struct sha256_ctx s;
    sha256_init(&s);
    uint64_t total = 0;
    size_t n;
    while ((n = fread(buf, 1, SHA_READ_BYTES, f)) > 0) {
        sha256_update(&s, n, buf);
        total += n;
    }
    int err = ferror(f) ? errno : 0;
    fclose(f);
    tsr_free(ctx, buf);
    if (err) return tsr_error(ctx, TSR_ERR_IO, "%s: read error: %s", path, strerror(err));
    uint8_t d[SHA256_DIGEST_SIZE];
    if (bytes) *bytes = total;
    sha256_digest(&s, sizeof d, d);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
    return TSR_OK;
}

/* ---- manifest ---- */
struct tsr_manifest {
    tsr_context *ctx;
    cJSON *root, *config, *devices, *files, *metrics;
};

const char *tsr_code_version(void) { return TSR_VERSION_STRING " (" TSR_GIT_DESCRIBE ")"; }

tsr_status tsr_manifest_create(tsr_context *ctx, tsr_manifest **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_manifest_create: out is NULL");
    *out = NULL;
    tsr_manifest *m = tsr_calloc(ctx, 1, sizeof *m);
    if (!m) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "manifest");
    m->ctx = ctx;
    cJSON *code = NULL;
    int ok = (m->root = cJSON_CreateObject()) != NULL &&
             cJSON_AddStringToObject(m->root, "format", "tessera-manifest") &&
             cJSON_AddNumberToObject(m->root, "version", 1) &&
             (code = cJSON_AddObjectToObject(m->root, "code")) != NULL &&
             cJSON_AddStringToObject(code, "version", TSR_VERSION_STRING) &&
             cJSON_AddStringToObject(code, "git", TSR_GIT_DESCRIBE) &&
             (m->config = cJSON_AddObjectToObject(m->root, "config")) != NULL &&
             (m->devices = cJSON_AddArrayToObject(m->root, "devices")) != NULL &&
             (m->files = cJSON_AddArrayToObject(m->root, "files")) != NULL &&
             (m->metrics = cJSON_AddObjectToObject(m->root, "metrics")) != NULL;
    if (!ok) {
        tsr_manifest_free(m);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "manifest");
    }
    *out = m;
    return TSR_OK;
}

void tsr_manifest_free(tsr_manifest *m) {
    if (!m) return;
    cJSON_Delete(m->root);
    tsr_free(m->ctx, m);
}

static tsr_status put(tsr_manifest *m, cJSON *obj, const char *key, cJSON *item) {
    if (!item) return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "manifest entry %s", key);
    if (cJSON_GetObjectItemCaseSensitive(obj, key)) {
        if (!cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item)) goto fail;
    } else if (!cJSON_AddItemToObject(obj, key, item)) {
        goto fail;
    }
    return TSR_OK;
fail:
    cJSON_Delete(item);
    return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "manifest entry %s", key);
}

tsr_status tsr_manifest_set_string(tsr_manifest *m, const char *key, const char *value) {
    if (!m || !key) return tsr_error(m ? m->ctx : NULL, TSR_ERR_INVALID_ARG,
                                     "tsr_manifest_set_string: %s is NULL", m ? "key" : "manifest");
    return put(m, m->config, key, value ? cJSON_CreateString(value) : cJSON_CreateNull());
}

tsr_status tsr_manifest_set_number(tsr_manifest *m, const char *key, double value) {
    if (!m || !key) return tsr_error(m ? m->ctx : NULL, TSR_ERR_INVALID_ARG,
                                     "tsr_manifest_set_number: %s is NULL", m ? "key" : "manifest");
    return put(m, m->config, key, isfinite(value) ? cJSON_CreateNumber(value) : cJSON_CreateNull());
}

tsr_status tsr_manifest_set_metric(tsr_manifest *m, const char *key, double value) {
    if (!m || !key) return tsr_error(m ? m->ctx : NULL, TSR_ERR_INVALID_ARG,
                                     "tsr_manifest_set_metric: %s is NULL", m ? "key" : "manifest");
    return put(m, m->metrics, key, isfinite(value) ? cJSON_CreateNumber(value) : cJSON_CreateNull());
}

tsr_status tsr_manifest_add_device(tsr_manifest *m, const tsr_device_info *d) {
    if (!m || !d) return tsr_error(m ? m->ctx : NULL, TSR_ERR_INVALID_ARG,
                                   "tsr_manifest_add_device: %s is NULL", m ? "device" : "manifest");
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddStringToObject(o, "id", d->id) &&
             cJSON_AddStringToObject(o, "vendor", d->vendor) &&
             cJSON_AddStringToObject(o, "name", d->name) &&
             cJSON_AddStringToObject(o, "driver_version", d->driver_version) &&
             cJSON_AddStringToObject(o, "platform", d->platform) &&
             cJSON_AddNumberToObject(o, "compute_units", d->compute_units) &&
             cJSON_AddNumberToObject(o, "global_mem_bytes", (double)d->global_mem_bytes) &&
             cJSON_AddStringToObject(o, "pci_bus_id", d->pci_bus_id) &&
             cJSON_AddNumberToObject(o, "peak_gflops", d->peak_gflops) &&
             cJSON_AddNumberToObject(o, "gemm_gflops", d->gemm_gflops) &&
             cJSON_AddNumberToObject(o, "mem_bw_gbps", d->mem_bw_gbps) &&
             cJSON_AddNumberToObject(o, "h2d_gbps", d->h2d_gbps) &&
             cJSON_AddNumberToObject(o, "d2h_gbps", d->d2h_gbps) &&
             cJSON_AddNumberToObject(o, "launch_us", d->launch_us);
    if (!ok || !cJSON_AddItemToArray(m->devices, o)) {
        cJSON_Delete(o);
        return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "manifest device %s", d->id);
    }
    return TSR_OK;
}

tsr_status tsr_manifest_add_file(tsr_manifest *m, const char *role, const char *path) {
    if (!m || !role || !path)
        return tsr_error(m ? m->ctx : NULL, TSR_ERR_INVALID_ARG,
                         "tsr_manifest_add_file: %s is NULL", !m ? "manifest" : !role ? "role" : "path");
    char hex[65];
    uint64_t bytes = 0;
    TSR_TRY(tsr_sha256_file(m->ctx, path, hex, &bytes));
    cJSON *o = cJSON_CreateObject();
    int ok = o && cJSON_AddStringToObject(o, "role", role) &&
             cJSON_AddStringToObject(o, "path", path) &&
             cJSON_AddNumberToObject(o, "bytes", (double)bytes) &&
             cJSON_AddStringToObject(o, "sha256", hex);
    if (!ok) {
        cJSON_Delete(o);
        return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "manifest file %s", path);
    }
    int i = 0;
    cJSON *e;
    cJSON_ArrayForEach(e, m->files) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(e, "path");
        if (cJSON_IsString(p) && !strcmp(p->valuestring, path)) {
            cJSON_ReplaceItemInArray(m->files, i, o); /* cannot fail: index exists */
            return TSR_OK;
        }
        i++;
    }
    if (!cJSON_AddItemToArray(m->files, o)) {
        cJSON_Delete(o);
        return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "manifest file %s", path);
    }
    return TSR_OK;
}

tsr_status tsr_manifest_add_data_dir(tsr_manifest *m, const char *dir) {
    if (!m) return TSR_ERR_INVALID_ARG;
    if (!dir || !*dir) dir = m->ctx ? m->ctx->opts.data_dir : NULL;
    if (!dir || !*dir) dir = DEFAULT_DATA_DIR;
    static const char *const names[] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};
    int found = 0;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(names); i++) {
        char path[4096];
        for (int gz = 0; gz < 2; gz++) {
            int n = snprintf(path, sizeof path, "%s/%s%s", dir, names[i], gz ? ".gz" : "");
            if (n < 0 || (size_t)n >= sizeof path)
                return tsr_error(m->ctx, TSR_ERR_INVALID_ARG, "data folder path too long: %s", dir);
            if (access(path, R_OK) != 0) continue;
            TSR_TRY(tsr_manifest_add_file(m, "data", path));
            found++;
            break;
        }
    }
    if (!found)
        return tsr_error(m->ctx, TSR_ERR_NOT_FOUND, "%s: no MNIST-format data files to hash", dir);
    return TSR_OK;
}

tsr_status tsr_manifest_write(tsr_manifest *m, const char *path) {
    if (!m || !path || !*path)
        return tsr_error(m ? m->ctx : NULL, TSR_ERR_INVALID_ARG, "tsr_manifest_write: %s",
                         m ? "empty path" : "manifest is NULL");
    char *text = cJSON_Print(m->root);
    if (!text) return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "%s: manifest text", path);
    tsr_atomic_file file;
    tsr_status st = tsr_atomic_open(m->ctx, path, &file);
    if (st == TSR_OK) {
        tsr_atomic_write(&file, text, strlen(text));
        tsr_atomic_write(&file, "\n", 1);
        st = tsr_atomic_commit(&file);
    }
    cJSON_free(text);
    return st;
}
