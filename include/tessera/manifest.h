/* Run manifest: the audit trail of a training run, one JSON file ("tessera-manifest" v1):
 * configuration, devices (ids, names, drivers, measured figures), SHA-256 of the data files
 * and of each checkpoint, the code version (TSR_VERSION_STRING and `git describe` at build
 * time), and the final metrics. Written atomically (temp file + rename), so a reader never sees
 * half a manifest; call tsr_manifest_write as often as it changes (after each checkpoint). */
#ifndef TESSERA_MANIFEST_H
#define TESSERA_MANIFEST_H
#include <stdint.h>
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_manifest tsr_manifest;

tsr_status tsr_manifest_create(tsr_context *ctx, tsr_manifest **out);
void tsr_manifest_free(tsr_manifest *m); /* accepts NULL */

/* "config" entries (a later set of the same key replaces the value). */
tsr_status tsr_manifest_set_string(tsr_manifest *m, const char *key, const char *value);
tsr_status tsr_manifest_set_number(tsr_manifest *m, const char *key, double value);
/* "metrics" entries; non-finite values are written as null. */
tsr_status tsr_manifest_set_metric(tsr_manifest *m, const char *key, double value);
/* Appends a "devices" record for the device (all fields of tsr_device_info that identify it
 * and its measured figures). */
tsr_status tsr_manifest_add_device(tsr_manifest *m, const tsr_device_info *d);
/* Hashes `path` and records {role, path, bytes, sha256} under "files"; a later call with the
 * same path replaces the record (checkpoints are rewritten every epoch). */
tsr_status tsr_manifest_add_file(tsr_manifest *m, const char *role, const char *path);
/* The MNIST-format files of `dir` (NULL: TSR_DATA_DIR, else the Fashion-MNIST folder) that
 * exist, plain or .gz, with role "data". TSR_ERR_NOT_FOUND when there is none. */
tsr_status tsr_manifest_add_data_dir(tsr_manifest *m, const char *dir);
/* Writes the manifest to `path` atomically. */
tsr_status tsr_manifest_write(tsr_manifest *m, const char *path);

/* "0.1.0 (v0.1.0-12-gabcdef)" style: the library version and the build's git describe. */
const char *tsr_code_version(void);

/* SHA-256 (FIPS 180-4) of a buffer, and of a file as 64 lowercase hex digits + NUL. */
void tsr_sha256(const void *data, size_t size, uint8_t digest[32]);
tsr_status tsr_sha256_file(tsr_context *ctx, const char *path, char hex[65], uint64_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
