/* Checkpoints: bit-exact round trip, the documented layout, every single-byte corruption and
 * every truncation detected, structural checks behind a valid CRC, failing saves that keep the
 * previous file, allocator failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "lib/io/checkpoint_internal.h"
#include "lib/core/internal.h"
#include "support/test_util.h"

typedef struct {
    tsr_context *ctx;
    char dir[64];
    char path[128];
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (tsr_test_quiet_context(&f->ctx) != TSR_OK) return -1;
    if (tsr_test_make_dir(f->dir, sizeof f->dir, "ck") != 0) return -1;
    snprintf(f->path, sizeof f->path, "%s/run.ckpt", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    if (tsr_test_remove_dir(f->dir) != 0) return -1;
    tsr_context_free(f->ctx);
    free(f);
    return 0;
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)len + 1);
    assert_int_equal(fread(p, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    *n = (size_t)len;
    return p;
}

static void write_all(const char *path, const unsigned char *p, size_t n) {
    unlink(path); /* ext4 flushes a file truncated and rewritten in place on close: slow */
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    if (n) assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

/* Number of entries in `dir` whose name contains ".tmp." */
static int temp_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static uint64_t le(const unsigned char *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static void put_le(unsigned char *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (unsigned char)(v >> (8 * i));
}
/* Recomputes the trailing CRC-32, so a test reaches the checks behind it. */
static void fix_crc(unsigned char *p, size_t n) {
    put_le(p + n - 4, (uint32_t)crc32(0, p, (uInt)(n - 4)), 4);
}

/* A checkpoint with awkward values: NaN payloads, -0, infinities, subnormals, an empty tensor. */
static tsr_checkpoint *sample(fixture *f, size_t big) {
    tsr_checkpoint *ck;
    assert_int_equal(tsr_checkpoint_create(f->ctx, &ck), TSR_OK);
    snprintf(ck->model_spec, sizeof ck->model_spec, "conv5x5:32,relu,pool2,dense:10");
    strcpy(ck->optimizer, "adam");
    ck->step = 0xfedcba9876543210ull;
    ck->epoch = 7;
    ck->seed = 0x8000000000000001ull;
    for (int i = 0; i < 4; i++) ck->rng_state[i] = 0x0123456789abcdefull * (uint64_t)(i + 3);
    float *x = malloc((big + 5) * sizeof *x);
    tsr_test_fill_uniform(x, big + 5, 99, -3.0f, 3.0f);
    uint32_t specials[] = {0x7fc00001u, 0xffbfffffu, 0x80000000u, 0x7f800000u, 0x00000001u};
    for (int i = 0; i < 5; i++) memcpy(&x[i], &specials[i], 4);
    assert_int_equal(tsr_checkpoint_add_tensor(f->ctx, ck, "params", x, big + 5), TSR_OK);
    assert_int_equal(tsr_checkpoint_add_tensor(f->ctx, ck, "adam.m", x + 1, 3), TSR_OK);
    assert_int_equal(tsr_checkpoint_add_tensor(f->ctx, ck, "empty", NULL, 0), TSR_OK);
    assert_int_equal(tsr_checkpoint_add_tensor(f->ctx, ck, "adam.v", NULL, 2), TSR_OK);
    free(x);
    return ck;
}

static void assert_same(const tsr_checkpoint *a, const tsr_checkpoint *b) {
    assert_string_equal(a->model_spec, b->model_spec);
    assert_string_equal(a->optimizer, b->optimizer);
    assert_true(a->step == b->step && a->epoch == b->epoch && a->seed == b->seed);
    assert_memory_equal(a->rng_state, b->rng_state, sizeof a->rng_state);
    assert_int_equal(a->tensor_count, b->tensor_count);
    for (size_t i = 0; i < a->tensor_count; i++) {
        assert_string_equal(a->tensors[i].name, b->tensors[i].name);
        assert_int_equal(a->tensors[i].count, b->tensors[i].count);
        if (a->tensors[i].count) /* bit-exact, NaN payloads included */
            assert_memory_equal(a->tensors[i].data, b->tensors[i].data, a->tensors[i].count * 4);
    }
}

static void test_round_trip(void **state) {
    fixture *f = *state;
    tsr_checkpoint *ck = sample(f, 1000);
    /* longest strings the format holds */
    memset(ck->model_spec, 'm', sizeof ck->model_spec - 1);
    ck->model_spec[sizeof ck->model_spec - 1] = '\0';
    memset(ck->optimizer, 'o', sizeof ck->optimizer - 1);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, ck), TSR_OK);
    assert_int_equal(temp_files(f->dir), 0);
    tsr_checkpoint *back = NULL;
    assert_int_equal(tsr_checkpoint_load(f->ctx, f->path, &back), TSR_OK);
    assert_same(ck, back);
    const tsr_checkpoint_tensor *t = tsr_checkpoint_find(back, "adam.v");
    assert_non_null(t);
    assert_true(t->data[0] == 0.0f && t->data[1] == 0.0f);
    assert_null(tsr_checkpoint_find(back, "adam"));
    assert_null(tsr_checkpoint_find(NULL, "adam"));
    assert_null(tsr_checkpoint_find(back, "empty")->data);
    /* overwrite with another checkpoint: the new one replaces the old */
    back->step = 1;
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, back), TSR_OK);
    tsr_checkpoint *again;
    assert_int_equal(tsr_checkpoint_load(f->ctx, f->path, &again), TSR_OK);
    assert_same(back, again);
    tsr_checkpoint_free(f->ctx, again);
    tsr_checkpoint_free(f->ctx, back);
    tsr_checkpoint_free(f->ctx, ck);
    tsr_checkpoint_free(f->ctx, NULL);

    /* a caller-built checkpoint (stack struct, caller's arrays), no tensors at all */
    tsr_checkpoint plain;
    memset(&plain, 0, sizeof plain);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, &plain), TSR_OK);
    assert_int_equal(tsr_checkpoint_load(f->ctx, f->path, &back), TSR_OK);
    assert_same(&plain, back);
    tsr_checkpoint_free(f->ctx, back);
}

/* The file is what the comment at the top of checkpoint.c documents. */
static void test_layout(void **state) {
    fixture *f = *state;
    tsr_checkpoint *ck = sample(f, 10);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, ck), TSR_OK);
    size_t n;
    unsigned char *p = read_all(f->path, &n);
    assert_memory_equal(p, "TSRCKPT", 8);
    assert_int_equal(le(p + 8, 4), 1);
    assert_int_equal(le(p + 12, 4), 128);
    assert_int_equal(le(p + 16, 4), 0);
    assert_int_equal(le(p + 20, 4), 4);
    assert_int_equal(le(p + 24, 8), n);
    assert_true(le(p + 32, 8) == ck->step && le(p + 40, 8) == 7 && le(p + 48, 8) == ck->seed);
    assert_true(le(p + 56 + 24, 8) == ck->rng_state[3]);
    size_t spec = le(p + 88, 4), opt = le(p + 92, 4);
    assert_int_equal(spec, strlen(ck->model_spec) + 1);
    assert_int_equal(opt, 5);
    assert_string_equal((char *)p + 128, ck->model_spec);
    assert_string_equal((char *)p + 128 + spec, "adam");
    uint64_t table = le(p + 96, 8), data = le(p + 104, 8);
    assert_int_equal(table % 8, 0);
    assert_true(table >= 128 + spec + opt && data == table + 4 * 80);
    for (size_t i = 0; i < 4; i++) {
        const unsigned char *e = p + table + 80 * i;
        assert_string_equal((char *)e, ck->tensors[i].name);
        assert_int_equal(le(e + 64, 8), ck->tensors[i].count);
        uint64_t off = le(e + 72, 8);
        assert_int_equal(off % 8, 0);
        for (size_t k = 0; k < ck->tensors[i].count; k++) {
            uint32_t u;
            memcpy(&u, &ck->tensors[i].data[k], 4);
            assert_int_equal(le(p + off + 4 * k, 4), u);
        }
    }
    assert_int_equal(le(p + n - 4, 4), (uint32_t)crc32(0, p, (uInt)(n - 4)));
    free(p);
    tsr_checkpoint_free(f->ctx, ck);
}

static void expect_load(fixture *f, const unsigned char *p, size_t n, tsr_status want,
                        const char *what, const char *ctx_msg) {
    write_all(f->path, p, n);
    tsr_checkpoint *ck = (tsr_checkpoint *)0x1;
    tsr_status st = tsr_checkpoint_load(f->ctx, f->path, &ck);
    const char *err = tsr_context_last_error(f->ctx);
    if (st != want || !strstr(err, f->path) || (what && !strstr(err, what)))
        fail_msg("%s: got %s \"%s\", expected %s with \"%s\"", ctx_msg, tsr_status_name(st), err,
                 tsr_status_name(want), what ? what : "");
    assert_null(ck);
}

/* Every byte of a small checkpoint, flipped three ways, is detected. */
static void test_every_byte_corruption(void **state) {
    fixture *f = *state;
    tsr_checkpoint *ck = sample(f, 3);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, ck), TSR_OK);
    size_t n;
    unsigned char *good = read_all(f->path, &n), *p = malloc(n);
    static const unsigned char flips[] = {0x01, 0x80, 0xff};
    char where[64];
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 3; k++) {
            memcpy(p, good, n);
            p[i] ^= flips[k];
            write_all(f->path, p, n);
            tsr_checkpoint *back = (tsr_checkpoint *)0x1;
            tsr_status st = tsr_checkpoint_load(f->ctx, f->path, &back);
            snprintf(where, sizeof where, "byte %zu ^ 0x%02x", i, flips[k]);
            const char *err = tsr_context_last_error(f->ctx);
            if (st == TSR_OK) fail_msg("%s: corruption not detected", where);
            if (!(st == TSR_ERR_CORRUPT || st == TSR_ERR_TRUNCATED || st == TSR_ERR_UNSUPPORTED))
                fail_msg("%s: %s", where, tsr_status_name(st));
            if (!strstr(err, f->path)) fail_msg("%s: detail \"%s\" lacks the file", where, err);
            assert_null(back);
        }
    free(p);
    free(good);
    tsr_checkpoint_free(f->ctx, ck);
}

/* Metadata (format version 2): a JSON object that round-trips; without it the file stays
 * version 1; bad metadata is refused at save and at load, naming what is wrong. */
static void test_metadata(void **state) {
    fixture *f = *state;
    tsr_checkpoint *ck = sample(f, 3);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, ck), TSR_OK);
    size_t n;
    unsigned char *plain = read_all(f->path, &n);
    assert_int_equal(le(plain + 8, 4), 1); /* no metadata: a version 1 file, as older builds wrote */
    free(plain);
    const char *meta = "{\"input_mean\":0.286,\"train_loss\":0.53886253945529459,\"k\":[1,2]}";
    assert_int_equal(tsr_checkpoint_set_meta(f->ctx, ck, meta), TSR_OK);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, ck), TSR_OK);
    unsigned char *good = read_all(f->path, &n), *p = malloc(n);
    assert_int_equal(le(good + 8, 4), 2);
    assert_int_equal(le(good + 112, 4), strlen(meta) + 1);
    tsr_checkpoint *back;
    assert_int_equal(tsr_checkpoint_load(f->ctx, f->path, &back), TSR_OK);
    assert_same(ck, back);
    assert_string_equal(back->meta, meta);
    tsr_checkpoint_free(f->ctx, back);
    /* refused at save: not an object, not JSON, too long; the checkpoint keeps its metadata */
    const char *bad[] = {"[1,2]", "{\"a\":", "3", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(tsr_checkpoint_set_meta(f->ctx, ck, bad[i]), TSR_ERR_INVALID_ARG);
        assert_non_null(strstr(tsr_context_last_error(f->ctx), "not a JSON object"));
        assert_string_equal(ck->meta, meta);
    }
    size_t big = TSR_CKPT_META_MAX + 10;
    char *huge = malloc(big);
    memset(huge, ' ', big);
    huge[0] = '{';
    huge[big - 2] = '}';
    huge[big - 1] = '\0';
    assert_int_equal(tsr_checkpoint_set_meta(f->ctx, ck, huge), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "exceeds 65536"));
    free(huge);
    /* refused at load, behind a valid CRC */
    size_t at = 128 + le(good + 88, 4) + le(good + 92, 4); /* the metadata's first byte */
#define MUTATE(stmt, status, what)                         \
    do {                                                   \
        memcpy(p, good, n);                                \
        stmt;                                              \
        fix_crc(p, n);                                     \
        expect_load(f, p, n, status, what, #stmt);         \
    } while (0)
    MUTATE(p[at] = '[', TSR_ERR_CORRUPT, "metadata is not a JSON object");
    MUTATE(p[at + strlen(meta)] = ' ', TSR_ERR_CORRUPT, "metadata is not a NUL-terminated string");
    MUTATE(put_le(p + 112, 2, 4), TSR_ERR_CORRUPT, "metadata length 2 outside 3..65536");
    MUTATE(put_le(p + 112, 70000, 4), TSR_ERR_CORRUPT, "metadata length 70000");
    MUTATE(put_le(p + 112, 4000, 4), TSR_ERR_CORRUPT, "run past the data");
    MUTATE(p[116] = 1, TSR_ERR_CORRUPT, "reserved header byte 116");
#undef MUTATE
    /* NULL clears: the file is version 1 again */
    assert_int_equal(tsr_checkpoint_set_meta(f->ctx, ck, NULL), TSR_OK);
    assert_null(ck->meta);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, ck), TSR_OK);
    free(good);
    good = read_all(f->path, &n);
    assert_int_equal(le(good + 8, 4), 1);
    free(good);
    free(p);
    tsr_checkpoint_free(f->ctx, ck);
}

static void test_every_truncation(void **state) {
    fixture *f = *state;
    tsr_checkpoint *ck = sample(f, 3);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, ck), TSR_OK);
    size_t n;
    unsigned char *good = read_all(f->path, &n);
    char where[64];
    for (size_t len = 0; len < n; len++) {
        snprintf(where, sizeof where, "length %zu of %zu", len, n);
        expect_load(f, good, len, TSR_ERR_TRUNCATED, "truncated", where);
    }
    unsigned char *longer = calloc(1, n + 8);
    memcpy(longer, good, n);
    expect_load(f, longer, n + 8, TSR_ERR_CORRUPT, "8 bytes of trailing garbage", "appended");
    free(longer);
    free(good);
    tsr_checkpoint_free(f->ctx, ck);
}

/* Structural checks behind a valid CRC, each naming its field. */
static void test_structure_checks(void **state) {
    fixture *f = *state;
    tsr_checkpoint *ck = sample(f, 3);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, ck), TSR_OK);
    size_t n;
    unsigned char *good = read_all(f->path, &n), *p = malloc(n);
    uint64_t table = le(good + 96, 8);
    size_t spec = le(good + 88, 4);
#define MUTATE(stmt, status, what)                         \
    do {                                                   \
        memcpy(p, good, n);                                \
        stmt;                                              \
        fix_crc(p, n);                                     \
        expect_load(f, p, n, status, what, #stmt);         \
    } while (0)
    MUTATE(put_le(p + 8, 3, 4), TSR_ERR_UNSUPPORTED, "format version 3 is newer than this build reads (version 2)");
    MUTATE(put_le(p + 8, 0, 4), TSR_ERR_CORRUPT, "format version 0");
    MUTATE(put_le(p + 12, 136, 4), TSR_ERR_CORRUPT, "header size 136");
    MUTATE(put_le(p + 16, 4, 4), TSR_ERR_UNSUPPORTED, "unknown flags");
    MUTATE(p[120] = 1, TSR_ERR_CORRUPT, "reserved header byte 120");
    MUTATE(p[112] = 5, TSR_ERR_CORRUPT, "reserved header byte 112"); /* version 1: no metadata */
    MUTATE(put_le(p + 24, n + 1, 8), TSR_ERR_TRUNCATED, "file size");
    MUTATE(put_le(p + 24, n - 1, 8), TSR_ERR_CORRUPT, "trailing garbage");
    MUTATE(put_le(p + 88, 0, 4), TSR_ERR_CORRUPT, "model spec length 0");
    MUTATE(put_le(p + 88, 1025, 4), TSR_ERR_CORRUPT, "model spec length 1025");
    MUTATE(put_le(p + 92, 65, 4), TSR_ERR_CORRUPT, "optimizer name length 65");
    MUTATE(p[128 + spec - 1] = 'x', TSR_ERR_CORRUPT, "model spec is not a NUL-terminated");
    MUTATE(p[128 + 1] = 0, TSR_ERR_CORRUPT, "model spec is not a NUL-terminated");
    MUTATE(p[128 + spec + 4] = 'x', TSR_ERR_CORRUPT, "optimizer name is not");
    MUTATE(put_le(p + 96, table + 4, 8), TSR_ERR_CORRUPT, "tensor table offset");
    MUTATE(put_le(p + 96, 64, 8), TSR_ERR_CORRUPT, "tensor table offset");
    MUTATE(put_le(p + 96, 1ull << 62, 8), TSR_ERR_CORRUPT, "tensor table offset");
    MUTATE(put_le(p + 20, 1000000, 4), TSR_ERR_CORRUPT, "tensor table of 1000000 entries");
    MUTATE(put_le(p + 104, table + 80, 8), TSR_ERR_CORRUPT, "tensor data offset");
    MUTATE(memset(p + table, 'a', 64), TSR_ERR_CORRUPT, "tensor 0: name is not NUL-terminated");
    MUTATE(p[table] = 0, TSR_ERR_CORRUPT, "tensor 0: name is empty");
    MUTATE(memcpy(p + table + 80, "params", 7), TSR_ERR_CORRUPT, "tensors 0 and 1 are both named");
    /* second tensor moved onto the first one, misaligned, past the end, huge count */
    MUTATE(put_le(p + table + 80 + 72, le(p + table + 72, 8), 8), TSR_ERR_CORRUPT,
           "tensor \"adam.m\"");
    MUTATE(put_le(p + table + 80 + 72, le(p + table + 80 + 72, 8) + 4, 8), TSR_ERR_CORRUPT,
           "tensor \"adam.m\"");
    MUTATE(put_le(p + table + 80 + 64, 1000, 8), TSR_ERR_CORRUPT, "run past the data");
    MUTATE(put_le(p + table + 64, UINT64_MAX / 2, 8), TSR_ERR_CORRUPT, "tensor \"params\"");
#undef MUTATE
    /* the same checks hold with the CRC skipped (the fuzzing entry point) */
    memcpy(p, good, n);
    put_le(p + table + 80 + 64, 1000, 8);
    tsr_checkpoint *back = (tsr_checkpoint *)0x1;
    assert_int_equal(tsr_checkpoint_load_mem(f->ctx, "mem", p, n, TSR_CKPT_LOAD_NO_CRC, &back),
                     TSR_ERR_CORRUPT);
    assert_null(back);
    assert_int_equal(tsr_checkpoint_load_mem(f->ctx, "mem", good, n, TSR_CKPT_LOAD_NO_CRC, &back),
                     TSR_OK);
    assert_same(ck, back);
    tsr_checkpoint_free(f->ctx, back);
    /* not a checkpoint at all, and missing */
    expect_load(f, (const unsigned char *)"\x89PNG\r\n\x1a\n....", 12, TSR_ERR_CORRUPT, "bad magic",
                "png");
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none", f->dir);
    assert_int_equal(tsr_checkpoint_load(f->ctx, missing, &back), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), missing));
    assert_int_equal(tsr_checkpoint_load(f->ctx, NULL, &back), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_checkpoint_load(f->ctx, f->path, NULL), TSR_ERR_INVALID_ARG);
    free(p);
    free(good);
    tsr_checkpoint_free(f->ctx, ck);
}

static void assert_unchanged(fixture *f, const unsigned char *old, size_t old_n) {
    size_t n;
    unsigned char *now = read_all(f->path, &n);
    assert_int_equal(n, old_n);
    assert_memory_equal(now, old, n);
    free(now);
    assert_int_equal(temp_files(f->dir), 0);
}

static void test_failed_saves(void **state) {
    fixture *f = *state;
    tsr_checkpoint *ck = sample(f, 3);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, ck), TSR_OK);
    size_t old_n;
    unsigned char *old = read_all(f->path, &old_n);
    tsr_checkpoint *big = sample(f, 1 << 16);
    big->step = 2;

    /* the file system refuses the write part-way (file size limit): old file kept */
    struct rlimit saved, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    lim = saved;
    lim.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    tsr_status st = tsr_checkpoint_save(f->ctx, f->path, big);
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, prev);
    assert_int_equal(st, TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), f->path));
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "previous file kept"));
    assert_unchanged(f, old, old_n);

    /* the target is a folder: rename fails, nothing left behind */
    char sub[160];
    snprintf(sub, sizeof sub, "%s/folder", f->dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(tsr_checkpoint_save(f->ctx, sub, big), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "rename"));
    struct stat sb;
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_unchanged(f, old, old_n);

    /* the folder does not exist */
    char nodir[200];
    snprintf(nodir, sizeof nodir, "%s/no/such/x.ckpt", f->dir);
    assert_int_equal(tsr_checkpoint_save(f->ctx, nodir, big), TSR_ERR_IO);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "cannot create temp file"));

    /* a folder without write permission (root may write anyway: then it simply succeeds) */
    char ro[160], ro_file[200];
    snprintf(ro, sizeof ro, "%s/ro", f->dir);
    snprintf(ro_file, sizeof ro_file, "%s/x.ckpt", ro);
    assert_int_equal(mkdir(ro, 0555), 0);
    if (geteuid() != 0) {
        assert_int_equal(tsr_checkpoint_save(f->ctx, ro_file, big), TSR_ERR_IO);
        assert_int_equal(temp_files(ro), 0);
    }

    /* what the format cannot hold is refused before any file is touched */
    tsr_checkpoint bad = *ck;
    memset(bad.model_spec, 'x', sizeof bad.model_spec);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, &bad), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "model_spec"));
    bad = *ck;
    memset(bad.optimizer, 'x', sizeof bad.optimizer);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, &bad), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "optimizer"));
    tsr_checkpoint_tensor tensors[2];
    memcpy(tensors, ck->tensors, sizeof tensors);
    strcpy(tensors[1].name, "params");
    bad = *ck;
    bad.tensors = tensors;
    bad.tensor_count = 2;
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, &bad), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "both named \"params\""));
    memcpy(tensors, ck->tensors, sizeof tensors);
    tensors[1].data = NULL;
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, &bad), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "adam.m"));
    memcpy(tensors, ck->tensors, sizeof tensors);
    tensors[0].name[0] = '\0';
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, &bad), TSR_ERR_INVALID_ARG);
    bad.tensors = NULL;
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, &bad), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_checkpoint_save(f->ctx, NULL, ck), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_checkpoint_save(f->ctx, "", ck), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_checkpoint_save(f->ctx, f->path, NULL), TSR_ERR_INVALID_ARG);
    assert_unchanged(f, old, old_n);

    /* add_tensor argument checks */
    assert_int_equal(tsr_checkpoint_add_tensor(f->ctx, ck, "params", NULL, 1), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "already present"));
    assert_int_equal(tsr_checkpoint_add_tensor(f->ctx, ck, "", NULL, 1), TSR_ERR_INVALID_ARG);
    char longname[80];
    memset(longname, 'n', 64);
    longname[64] = '\0';
    assert_int_equal(tsr_checkpoint_add_tensor(f->ctx, ck, longname, NULL, 1), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_checkpoint_add_tensor(f->ctx, NULL, "x", NULL, 1), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_checkpoint_create(f->ctx, NULL), TSR_ERR_INVALID_ARG);

    free(old);
    tsr_checkpoint_free(f->ctx, big);
    tsr_checkpoint_free(f->ctx, ck);
}

static void test_allocator_failures(void **state) {
    fixture *f = *state;
    tsr_test_alloc counter;
    tsr_test_alloc_init(&counter, 0);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    o.allocator = &counter.allocator;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    long base = counter.calls;
    /* build, save, load: every allocation point in turn fails */
    tsr_checkpoint *ck = NULL, *back = NULL;
    float x[4] = {1, 2, 3, 4};
    tsr_status st = tsr_checkpoint_create(ctx, &ck);
    if (st == TSR_OK) st = tsr_checkpoint_add_tensor(ctx, ck, "a", x, 4);
    if (st == TSR_OK) st = tsr_checkpoint_add_tensor(ctx, ck, "b", x, 2);
    if (st == TSR_OK) st = tsr_checkpoint_save(ctx, f->path, ck);
    if (st == TSR_OK) st = tsr_checkpoint_load(ctx, f->path, &back);
    assert_int_equal(st, TSR_OK);
    assert_same(ck, back);
    long needed = counter.calls - base;
    assert_true(needed >= 10);
    tsr_checkpoint_free(ctx, ck);
    tsr_checkpoint_free(ctx, back);
    size_t n;
    unsigned char *before = read_all(f->path, &n);
    for (long k = 1; k <= needed; k++) {
        counter.calls = base;
        counter.fail_at = base + k;
        ck = back = NULL;
        st = tsr_checkpoint_create(ctx, &ck);
        if (st == TSR_OK) st = tsr_checkpoint_add_tensor(ctx, ck, "a", x, 4);
        if (st == TSR_OK) st = tsr_checkpoint_add_tensor(ctx, ck, "b", x, 2);
        if (st == TSR_OK) st = tsr_checkpoint_save(ctx, f->path, ck);
        if (st == TSR_OK) st = tsr_checkpoint_load(ctx, f->path, &back);
        assert_int_equal(st, TSR_ERR_NO_MEMORY);
        assert_null(back);
        if (ck) assert_true(ck->tensor_count <= 2);
        tsr_checkpoint_free(ctx, ck);
        assert_int_equal(temp_files(f->dir), 0);
    }
    counter.fail_at = 0;
    assert_unchanged(f, before, n);
    free(before);
    tsr_context_free(ctx);
    assert_int_equal(counter.live, 0);
}

/* The fuzzing seed corpus holds valid checkpoints only (run from the repository root). */
static void test_fuzz_seeds(void **state) {
    fixture *f = *state;
    const char *dir = "tests/fuzz/corpus/checkpoint";
    DIR *d = opendir(dir);
    if (!d) TSR_TEST_SKIP("missing %s (run from the repository root)", dir);
    struct dirent *e;
    int loaded = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        tsr_checkpoint *ck = NULL;
        tsr_status st = tsr_checkpoint_load(f->ctx, path, &ck);
        if (st != TSR_OK) fail_msg("%s: %s", path, tsr_context_last_error(f->ctx));
        assert_true(ck->model_spec[0] != '\0');
        tsr_checkpoint_free(f->ctx, ck);
        loaded++;
    }
    closedir(d);
    assert_true(loaded >= 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_every_byte_corruption),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_structure_checks),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_failed_saves),
        cmocka_unit_test(test_allocator_failures),
        cmocka_unit_test(test_fuzz_seeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
