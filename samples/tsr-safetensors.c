/* tsr-safetensors: what a safetensors file holds (after validating all of it): its metadata
 * and, for each tensor in file order, the name, dtype, shape, byte size and data offset.
 *
 *   tsr-safetensors [--json] FILE
 *
 * Exit status: 0, 1 when the file is refused (the reason on stderr), 2 for a usage error. */
#include <stdio.h>
#include <string.h>
#include <cJSON.h>
#include "tessera.h"

static void usage(FILE *f) { fprintf(f, "usage: tsr-safetensors [--json] FILE\n"); }

static void shape_text(const tsr_st_tensor *t, char *buf, size_t n) {
    size_t at = (size_t)snprintf(buf, n, "[");
    for (int d = 0; d < t->ndim && at < n; d++)
        at += (size_t)snprintf(buf + at, n - at, "%s%llu", d ? ", " : "",
                               (unsigned long long)t->shape[d]);
    if (at < n) snprintf(buf + at, n - at, "]");
}

static void print_table(const char *path, const tsr_safetensors *st) {
    unsigned long long elements = 0, bytes = 0;
    for (size_t i = 0; i < st->count; i++) {
        elements += st->tensors[i].count;
        bytes += st->tensors[i].bytes;
    }
    printf("%s: %zu tensors, %llu elements, %llu data bytes; header %zu bytes, file %zu bytes\n",
           path, st->count, elements, bytes, st->header_bytes, st->file_bytes);
    if (st->meta_count) printf("metadata:\n");
    for (size_t i = 0; i < st->meta_count; i++)
        printf("  %s = %s\n", st->meta[i].key, st->meta[i].value);
    size_t w = 4;
    for (size_t i = 0; i < st->count; i++) {
        size_t n = strlen(st->tensors[i].name);
        if (n > w) w = n;
    }
    if (w > 60) w = 60;
    if (st->count)
        printf("  %-*s  %-7s  %-20s  %12s  %12s\n", (int)w, "name", "dtype", "shape", "bytes",
               "offset");
    for (size_t i = 0; i < st->count; i++) {
        const tsr_st_tensor *t = &st->tensors[i];
        char shape[256];
        shape_text(t, shape, sizeof shape);
        printf("  %-*s  %-7s  %-20s  %12zu  %12llu\n", (int)w, t->name,
               tsr_st_dtype_name(t->dtype), shape, t->bytes, (unsigned long long)t->offset);
    }
}

static int print_json(const char *path, const tsr_safetensors *st) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject(), *list = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "file", path);
    cJSON_AddNumberToObject(root, "header_bytes", (double)st->header_bytes);
    cJSON_AddNumberToObject(root, "file_bytes", (double)st->file_bytes);
    for (size_t i = 0; i < st->meta_count; i++)
        cJSON_AddStringToObject(meta, st->meta[i].key, st->meta[i].value);
    cJSON_AddItemToObject(root, "metadata", meta);
    for (size_t i = 0; i < st->count; i++) {
        const tsr_st_tensor *t = &st->tensors[i];
        cJSON *o = cJSON_CreateObject(), *shape = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "dtype", tsr_st_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[d]));
        cJSON_AddItemToObject(o, "shape", shape);
        cJSON_AddNumberToObject(o, "elements", (double)t->count);
        cJSON_AddNumberToObject(o, "bytes", (double)t->bytes);
        cJSON_AddNumberToObject(o, "offset", (double)t->offset);
        cJSON_AddItemToArray(list, o);
    }
    cJSON_AddItemToObject(root, "tensors", list);
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    if (!s) {
        fprintf(stderr, "tsr-safetensors: out of memory\n");
        return 1;
    }
    printf("%s\n", s);
    cJSON_free(s);
    return 0;
}

int main(int argc, char **argv) {
    int json = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            fprintf(stderr, "tsr-safetensors: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (path) {
            fprintf(stderr, "tsr-safetensors: one FILE only (%s, then %s)\n", path, argv[i]);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC; /* a file needs no device */
    tsr_context *ctx;
    tsr_status s = tsr_context_create(&ctx, &co);
    if (s != TSR_OK) {
        fprintf(stderr, "tsr-safetensors: creating the context: %s\n", tsr_status_name(s));
        return 1;
    }
    tsr_safetensors *st;
    s = tsr_safetensors_open(ctx, path, &st);
    if (s != TSR_OK) {
        fprintf(stderr, "tsr-safetensors: %s (%s)\n", tsr_context_last_error(ctx),
                tsr_status_name(s));
        tsr_context_free(ctx);
        return 1;
    }
    int rc = 0;
    if (json) rc = print_json(path, st);
    else print_table(path, st);
    tsr_safetensors_close(ctx, st);
    tsr_context_free(ctx);
    return rc;
}
