/* Run manifest and SHA-256 (nettle underneath): FIPS 180-2 known answers, files shorter and
 * longer than the file hash's read size, the manifest's JSON contents read back, file records
 * replaced on rewrite, and every error path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "tessera.h"
#include "support/test_util.h"

static void hex(const uint8_t d[32], char out[65]) {
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void test_sha256_known_answers(void **state) {
    (void)state;
    static const struct {
        const char *msg, *digest;
    } kat[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
         "lmnopqrsmnopqrstnopqrstu",
         "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
    };
    uint8_t d[32];
    char h[65];
    for (size_t i = 0; i < sizeof kat / sizeof *kat; i++) {
        tsr_sha256(kat[i].msg, strlen(kat[i].msg), d);
        hex(d, h);
        assert_string_equal(h, kat[i].digest);
    }
    /* one million 'a': many blocks */
    char *a = malloc(1000000);
    assert_non_null(a);
    memset(a, 'a', 1000000);
    tsr_sha256(a, 1000000, d);
    hex(d, h);
    assert_string_equal(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

/* Writes `n` bytes of `data` to a fresh temporary file named from the template `path`. */
static void write_file(char path[], const uint8_t *data, size_t n) {
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    assert_int_equal(close(fd), 0);
}

/* tsr_sha256_file reads 64 KiB at a time (manifest.c): an empty file, files shorter than one
 * read, of exactly one and two reads, one byte either side, and several reads plus a tail,
 * against digests of the same bytes from an independent implementation (Python's hashlib,
 * agreeing with sha256sum). */
static void test_sha256_file_streaming(void **state) {
    (void)state;
    enum { MAX = 200003 };
    static const struct {
        size_t bytes;
        const char *digest;
    } want[] = {
        {0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {1, "ca358758f6d27e6cf45272937977a748fd88391db679ceda7dc7bf1f005ee879"},
        {63, "f9740f526ff5b76381fbd8f27333de45ff77bc1e6cd2d696357f837f2c6fb3bd"},
        {64, "0277d2ee9ab7ac130da65c6f8b6612449f1f95adc68597a55393ebfde47d72cb"},
        {65535, "c7e536cdd632c06b2a75079da86bc8af5b9649e7b6966b5db21af8f16a1200d6"},
        {65536, "7aee76c81d4ed8bd31e3e5e75e86150caea8f5397989d73ec155d6fd5045c479"},
        {65537, "75e8966773f5830475602adee3b28fb106e4dee8cec366c56379fcc06b293e9f"},
        {131072, "e2c58ba07a94650ab342343b5bc3147e3f7fb6b06bace293decb26552d242792"},
        {MAX, "eb4785eb81e9f53f995ce21fffb016c5eb2b84fabd2d3affb1e8584231dee88c"},
    };
    uint8_t *data = malloc(MAX);
    assert_non_null(data);
    for (size_t i = 0; i < MAX; i++) data[i] = (uint8_t)((i * 131 + 7) % 251);
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        /* the buffer hash of the same bytes */
        uint8_t d[32];
        char h[65];
        tsr_sha256(data, want[i].bytes, d);
        hex(d, h);
        assert_string_equal(h, want[i].digest);
        /* the file of those bytes, streamed through the 64 KiB reads */
        char path[] = "/tmp/tsr-sha.XXXXXX";
        write_file(path, data, want[i].bytes);
        char fh[65];
        uint64_t bytes = 0;
        assert_int_equal(tsr_sha256_file(NULL, path, fh, &bytes), TSR_OK);
        assert_string_equal(fh, want[i].digest);
        assert_int_equal(bytes, want[i].bytes);
        unlink(path);
    }
    /* one million 'a' (FIPS 180-2 B.3) as a file: 15 full reads and a tail */
    free(data);
    data = malloc(1000000);
    assert_non_null(data);
    memset(data, 'a', 1000000);
    char path[] = "/tmp/tsr-sha.XXXXXX";
    write_file(path, data, 1000000);
    char fh[65];
    uint64_t bytes = 0;
    assert_int_equal(tsr_sha256_file(NULL, path, fh, &bytes), TSR_OK);
    assert_string_equal(fh, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    assert_int_equal(bytes, 1000000);
    unlink(path);
    free(data);

    /* errors: no path, a missing file, a folder (opens, but reading it fails) */
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    co.log_level = TSR_LOG_OFF;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &co), TSR_OK);
    assert_int_equal(tsr_sha256_file(ctx, NULL, fh, NULL), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_sha256_file(ctx, "/tmp/tsr-sha-no-such-file", fh, NULL), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(ctx), "/tmp/tsr-sha-no-such-file: cannot open"));
    char dir[] = "/tmp/tsr-sha-dir.XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(tsr_sha256_file(ctx, dir, fh, NULL), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(ctx), "read error"));
    rmdir(dir);
    tsr_context_free(ctx);
}

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    return j;
}

static void put_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_manifest_contents(void **state) {
    (void)state;
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    co.log_level = TSR_LOG_OFF;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &co), TSR_OK);
    char dir[] = "/tmp/tsr-manifest.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char p_img[256], p_lbl[256], p_ck[256], p_man[256];
    snprintf(p_img, sizeof p_img, "%s/train-images-idx3-ubyte", dir);
    snprintf(p_lbl, sizeof p_lbl, "%s/t10k-labels-idx1-ubyte.gz", dir);
    snprintf(p_ck, sizeof p_ck, "%s/run.ckpt", dir);
    snprintf(p_man, sizeof p_man, "%s/run.manifest.json", dir);
    put_file(p_img, "abc");
    put_file(p_lbl, "");
    put_file(p_ck, "first");

    tsr_manifest *m;
    assert_int_equal(tsr_manifest_create(ctx, &m), TSR_OK);
    assert_int_equal(tsr_manifest_set_string(m, "model", "dense:10"), TSR_OK);
    assert_int_equal(tsr_manifest_set_number(m, "batch", 32), TSR_OK);
    assert_int_equal(tsr_manifest_set_number(m, "batch", 64), TSR_OK); /* replaces */
    assert_int_equal(tsr_manifest_add_device(m, tsr_context_device(ctx, 0)), TSR_OK);
    assert_int_equal(tsr_manifest_add_data_dir(m, dir), TSR_OK);
    assert_int_equal(tsr_manifest_add_file(m, "checkpoint", p_ck), TSR_OK);
    put_file(p_ck, "second version");
    assert_int_equal(tsr_manifest_add_file(m, "checkpoint", p_ck), TSR_OK); /* replaces */
    assert_int_equal(tsr_manifest_set_metric(m, "test_accuracy", 0.875), TSR_OK);
    assert_int_equal(tsr_manifest_set_metric(m, "final_loss", NAN), TSR_OK);
    assert_int_equal(tsr_manifest_write(m, p_man), TSR_OK);

    cJSON *j = read_json(p_man);
    assert_string_equal(cJSON_GetObjectItem(j, "format")->valuestring, "tessera-manifest");
    cJSON *code = cJSON_GetObjectItem(j, "code");
    assert_string_equal(cJSON_GetObjectItem(code, "version")->valuestring, TSR_VERSION_STRING);
    assert_true(strlen(cJSON_GetObjectItem(code, "git")->valuestring) > 0);
    assert_non_null(strstr(tsr_code_version(), TSR_VERSION_STRING));
    cJSON *cfg = cJSON_GetObjectItem(j, "config");
    assert_string_equal(cJSON_GetObjectItem(cfg, "model")->valuestring, "dense:10");
    assert_true(cJSON_GetObjectItem(cfg, "batch")->valuedouble == 64);
    assert_int_equal(cJSON_GetArraySize(cfg), 2);
    cJSON *dev = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "devices"), 0);
    assert_string_equal(cJSON_GetObjectItem(dev, "id")->valuestring, tsr_context_device(ctx, 0)->id);
    assert_string_equal(cJSON_GetObjectItem(dev, "name")->valuestring,
                        tsr_context_device(ctx, 0)->name);
    cJSON *files = cJSON_GetObjectItem(j, "files");
    assert_int_equal(cJSON_GetArraySize(files), 3); /* two data files, one checkpoint */
    const char *want[3][3] = {
        {p_img, "data", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {p_lbl, "data", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {p_ck, "checkpoint", NULL}};
    uint8_t d[32];
    char h[65];
    tsr_sha256("second version", 14, d);
    hex(d, h);
    want[2][2] = h;
    for (int i = 0; i < 3; i++) {
        cJSON *f = cJSON_GetArrayItem(files, i);
        assert_string_equal(cJSON_GetObjectItem(f, "path")->valuestring, want[i][0]);
        assert_string_equal(cJSON_GetObjectItem(f, "role")->valuestring, want[i][1]);
        assert_string_equal(cJSON_GetObjectItem(f, "sha256")->valuestring, want[i][2]);
    }
    assert_true(cJSON_GetObjectItem(cJSON_GetArrayItem(files, 2), "bytes")->valuedouble == 14);
    cJSON *met = cJSON_GetObjectItem(j, "metrics");
    assert_true(cJSON_GetObjectItem(met, "test_accuracy")->valuedouble == 0.875);
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(met, "final_loss")));
    cJSON_Delete(j);

    /* errors name what was wrong */
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope", dir);
    assert_int_equal(tsr_manifest_add_file(m, "data", missing), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(ctx), missing));
    assert_int_equal(tsr_manifest_add_data_dir(m, missing), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(ctx), "no MNIST-format data files"));
    snprintf(missing, sizeof missing, "%s/no/such/folder/m.json", dir);
    assert_int_equal(tsr_manifest_write(m, missing), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(ctx), "cannot create"));
    /* the target is a folder: the rename fails, the folder stays, no temp file is left */
    char folder[300];
    snprintf(folder, sizeof folder, "%s/as-folder.json", dir);
    assert_int_equal(mkdir(folder, 0755), 0);
    assert_int_equal(tsr_manifest_write(m, folder), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(ctx), folder));
    assert_non_null(strstr(tsr_context_last_error(ctx), "rename of temp file"));
    assert_non_null(strstr(tsr_context_last_error(ctx), "(previous file kept)"));
    assert_int_equal(rmdir(folder), 0);
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    for (struct dirent *e; (e = readdir(dp));) assert_null(strstr(e->d_name, ".tmp."));
    closedir(dp);
    assert_int_equal(tsr_manifest_write(m, ""), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_manifest_set_string(m, NULL, "x"), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_manifest_set_metric(NULL, "x", 1), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_manifest_add_device(m, NULL), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_manifest_add_file(m, NULL, p_ck), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_manifest_create(ctx, NULL), TSR_ERR_INVALID_ARG);
    tsr_manifest_free(m);
    tsr_manifest_free(NULL);

    unlink(p_img);
    unlink(p_lbl);
    unlink(p_ck);
    unlink(p_man);
    rmdir(dir);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_known_answers),
        cmocka_unit_test(test_sha256_file_streaming),
        cmocka_unit_test(test_manifest_contents),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
