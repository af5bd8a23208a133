/* Run manifest (manifest.h) and SHA-256. */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/internal.h"
#include "tessera.h"

#ifndef TSR_GIT_DESCRIBE
#define TSR_GIT_DESCRIBE "unknown" /* set by the Makefile from `git describe` when available */
#endif
#define DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

/* ---- SHA-256 (FIPS 180-4) ---- */
typedef struct sha256 {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t block[64];
    size_t fill;
} sha256;

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_block(sha256 *s, const uint8_t *p) {
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, s->h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = v[7] + (ror(v[4], 6) ^ ror(v[4], 11) ^ ror(v[4], 25)) +
                      ((v[4] & v[5]) ^ (~v[4] & v[6])) + K[i] + w[i];
        uint32_t t2 = (ror(v[0], 2) ^ ror(v[0], 13) ^ ror(v[0], 22)) +
                      ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
        memmove(v + 1, v, 7 * sizeof *v);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) s->h[i] += v[i];
}

static void sha_init(sha256 *s) {
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->bytes = 0;
    s->fill = 0;
}

static void sha_update(sha256 *s, const void *data, size_t n) {
    const uint8_t *p = data;
    s->bytes += n;
    while (n) {
        size_t k = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->block + s->fill, p, k);
        s->fill += k, p += k, n -= k;
        if (s->fill == 64) sha_block(s, s->block), s->fill = 0;
    }
}

static void sha_final(sha256 *s, uint8_t out[32]) {
    uint64_t bits = s->bytes * 8;
    uint8_t pad[72] = {0x80};
    size_t padn = (s->fill < 56 ? 56 : 120) - s->fill;
    for (int i = 0; i < 8; i++) pad[padn + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
    sha_update(s, pad, padn + 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

void tsr_sha256(const void *data, size_t size, uint8_t digest[32]) {
    sha256 s;
    sha_init(&s);
    sha_update(&s, data, size);
    sha_final(&s, digest);
}

tsr_status tsr_sha256_file(tsr_context *ctx, const char *path, char hex[65], uint64_t *bytes) {
    if (!path || !hex) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_sha256_file: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f) return tsr_error(ctx, TSR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char *buf = tsr_malloc(ctx, 1 << 16);
    if (!buf) {
        fclose(f);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory to hash", path);
    }
    sha256 s;
    sha_init(&s);
    size_t n;
    while ((n = fread(buf, 1, 1 << 16, f)) > 0) sha_update(&s, buf, n);
    int bad = ferror(f);
    fclose(f);
    tsr_free(ctx, buf);
    if (bad) return tsr_error(ctx, TSR_ERR_IO, "%s: read error", path);
    uint8_t d[32];
    if (bytes) *bytes = s.bytes;
    sha_final(&s, d);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
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
    if (!dir || !*dir) dir = getenv("TSR_DATA_DIR");
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
    size_t len = strlen(path) + 32;
    char *tmp = tsr_malloc(m->ctx, len);
    if (!tmp) {
        cJSON_free(text);
        return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "%s: temp name", path);
    }
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    tsr_status st = TSR_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = tsr_error(m->ctx, TSR_ERR_IO, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    } else {
        size_t n = strlen(text);
        int bad = fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF;
        bad |= fclose(f) != 0;
        if (bad || rename(tmp, path) != 0) {
            st = tsr_error(m->ctx, TSR_ERR_IO, "%s: write failed: %s", path, strerror(errno));
            unlink(tmp);
        }
    }
    tsr_free(m->ctx, tmp);
    cJSON_free(text);
    return st;
}
