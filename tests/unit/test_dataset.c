/* Data sets from IDX files (real Fashion-MNIST and generated ones), normalisation, and the
 * sharded loader checked by brute force against a plain-C reference of the documented order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include "lib/core/internal.h"
#include "support/test_util.h"

#define FMNIST "/usr/share/datasets/fashion-mnist"

typedef tsr_test_dir_fixture fixture;

/* Writes an IDX file of ubyte (or `type`) elements with the given dims; data[i] = gen(i). */
static void write_idx(const char *path, int type, int ndim, const uint32_t *dims,
                      const unsigned char *data, size_t n, int gz) {
    unsigned char hdr[36] = {0, 0, (unsigned char)type, (unsigned char)ndim};
    for (int i = 0; i < ndim; i++) {
        hdr[4 + 4 * i] = (unsigned char)(dims[i] >> 24);
        hdr[5 + 4 * i] = (unsigned char)(dims[i] >> 16);
        hdr[6 + 4 * i] = (unsigned char)(dims[i] >> 8);
        hdr[7 + 4 * i] = (unsigned char)dims[i];
    }
    if (gz) {
        gzFile g = gzopen(path, "wb");
        assert_non_null(g);
        assert_int_equal(gzwrite(g, hdr, 4 + 4 * (unsigned)ndim), 4 + 4 * ndim);
        if (n) assert_int_equal(gzwrite(g, data, (unsigned)n), (int)n);
        assert_int_equal(gzclose(g), Z_OK);
    } else {
        FILE *fp = fopen(path, "wb");
        assert_non_null(fp);
        assert_int_equal(fwrite(hdr, 1, 4 + 4 * (size_t)ndim, fp), 4 + 4 * (size_t)ndim);
        if (n) assert_int_equal(fwrite(data, 1, n, fp), n);
        assert_int_equal(fclose(fp), 0);
    }
}

/* Reads `n` bytes at `off` of the decompressed file, independently of the library. */
static void gz_peek(const char *path, size_t off, unsigned char *dst, size_t n) {
    gzFile g = gzopen(path, "rb");
    assert_non_null(g);
    assert_int_equal(gzseek(g, (z_off_t)off, SEEK_SET), (z_off_t)off);
    assert_int_equal(gzread(g, dst, (unsigned)n), (int)n);
    gzclose(g);
}

static void test_fashion_mnist(void **state) {
    fixture *f = *state;
    if (access(FMNIST "/train-labels-idx1-ubyte.gz", R_OK) != 0)
        TSR_TEST_SKIP("missing Fashion-MNIST in " FMNIST);
    static const struct {
        int train;
        size_t count;
        const char *images, *labels;
    } splits[] = {{1, 60000, FMNIST "/train-images-idx3-ubyte.gz", FMNIST "/train-labels-idx1-ubyte.gz"},
                  {0, 10000, FMNIST "/t10k-images-idx3-ubyte.gz", FMNIST "/t10k-labels-idx1-ubyte.gz"}};
    for (int s = 0; s < 2; s++) {
        tsr_dataset *d = NULL;
        assert_int_equal(tsr_dataset_load_mnist_dir(f->ctx, FMNIST, splits[s].train, &d), TSR_OK);
        assert_int_equal(d->count, splits[s].count);
        assert_int_equal(d->channels, 1);
        assert_int_equal(d->height, 28);
        assert_int_equal(d->width, 28);
        assert_int_equal(d->features, 784);
        assert_int_equal(d->classes, 10);
        /* first and last labels, and two whole images, against the raw bytes */
        unsigned char lab[1], px[784];
        gz_peek(splits[s].labels, 8, lab, 1);
        assert_int_equal(d->labels[0], lab[0]);
        if (splits[s].train) assert_int_equal(d->labels[0], 9); /* "ankle boot" */
        gz_peek(splits[s].labels, 8 + d->count - 1, lab, 1);
        assert_int_equal(d->labels[d->count - 1], lab[0]);
        size_t which[2] = {0, d->count - 1};
        for (int k = 0; k < 2; k++) {
            gz_peek(splits[s].images, 16 + which[k] * 784, px, 784);
            for (int i = 0; i < 784; i++)
                assert_true(d->images[which[k] * 784 + i] == (float)px[i] / 255.0f);
        }
        /* every class is present, labels in range */
        size_t hist[10] = {0};
        for (size_t i = 0; i < d->count; i++) {
            assert_in_range(d->labels[i], 0, 9);
            hist[d->labels[i]]++;
        }
        for (int c = 0; c < 10; c++) assert_int_equal(hist[c], d->count / 10); /* balanced */
        tsr_dataset_free(f->ctx, d);
    }
}

/* Small generated MNIST-format folder: plain files, found through TSR_DATA_DIR. */
static void make_split(const char *dir, const char *split, size_t n, int ndim4, int gz) {
    char path[256];
    uint32_t idims[4] = {(uint32_t)n, 2, 3, 4};
    size_t feat = ndim4 ? 2 * 3 * 4 : 3 * 4;
    unsigned char *px = malloc(n * feat + 1), *lab = malloc(n + 1);
    for (size_t i = 0; i < n * feat; i++) px[i] = (unsigned char)(i * 37 + 11);
    for (size_t i = 0; i < n; i++) lab[i] = (unsigned char)(i % 4 == 3 ? 6 : i % 4);
    if (ndim4) {
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, split, gz ? ".gz" : "");
        write_idx(path, 0x08, 4, idims, px, n * feat, gz);
    } else {
        uint32_t d3[3] = {(uint32_t)n, 3, 4};
        snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, split, gz ? ".gz" : "");
        write_idx(path, 0x08, 3, d3, px, n * feat, gz);
    }
    uint32_t ldims[1] = {(uint32_t)n};
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, split, gz ? ".gz" : "");
    write_idx(path, 0x08, 1, ldims, lab, n, gz);
    free(px);
    free(lab);
}

static void test_generated_dir(void **state) {
    fixture *f = *state;
    make_split(f->dir, "train", 9, 1, 0);  /* [n, c, h, w], plain */
    make_split(f->dir, "t10k", 5, 0, 1);   /* [n, h, w], gzip */
    /* no folder given: the context's data_dir, read from TSR_DATA_DIR when it was made */
    setenv("TSR_DATA_DIR", f->dir, 1);
    tsr_context *env_ctx;
    assert_int_equal(tsr_test_quiet_context(&env_ctx), TSR_OK);
    tsr_dataset *d;
    assert_int_equal(tsr_dataset_load_mnist_dir(env_ctx, NULL, 1, &d), TSR_OK);
    assert_int_equal(d->count, 9);
    assert_int_equal(d->channels, 2);
    assert_int_equal(d->height, 3);
    assert_int_equal(d->width, 4);
    assert_int_equal(d->features, 24);
    assert_int_equal(d->classes, 7); /* max label 6 */
    for (size_t i = 0; i < 9 * 24; i++)
        assert_true(d->images[i] == (float)(unsigned char)(i * 37 + 11) / 255.0f);
    assert_int_equal(d->labels[3], 6);
    assert_int_equal(d->labels[4], 0);

    /* normalise: (x - mean) / std, element by element */
    float before = d->images[5];
    assert_int_equal(tsr_dataset_normalize(f->ctx, d, 0.25f, 0.5f), TSR_OK);
    assert_true(fabsf(d->images[5] - (before - 0.25f) / 0.5f) < 1e-6f);
    assert_int_equal(tsr_dataset_normalize(f->ctx, d, 0.0f, 0.0f), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "std"));
    assert_int_equal(tsr_dataset_normalize(f->ctx, d, NAN, 1.0f), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_dataset_normalize(f->ctx, NULL, 0.0f, 1.0f), TSR_ERR_INVALID_ARG);
    tsr_dataset_truncate(d, 100);
    assert_int_equal(d->count, 9);
    tsr_dataset_truncate(d, 4);
    assert_int_equal(d->count, 4);
    tsr_dataset_free(env_ctx, d);

    assert_int_equal(tsr_dataset_load_mnist_dir(env_ctx, "", 0, &d), TSR_OK); /* "" too */
    assert_int_equal(d->count, 5);
    assert_int_equal(d->channels, 1);
    assert_int_equal(d->features, 12);
    tsr_dataset_free(env_ctx, d);
    tsr_context_free(env_ctx);
    unsetenv("TSR_DATA_DIR");
    tsr_dataset_free(f->ctx, NULL);
}

static void expect(fixture *f, tsr_status got, tsr_status want, const char *a, const char *b) {
    const char *err = tsr_context_last_error(f->ctx);
    if (got != want || (a && !strstr(err, a)) || (b && !strstr(err, b)))
        fail_msg("got %s \"%s\", expected %s with \"%s\" and \"%s\"", tsr_status_name(got), err,
                 tsr_status_name(want), a ? a : "", b ? b : "");
}

static void test_load_errors(void **state) {
    fixture *f = *state;
    char im[256], lb[256], other[512];
    unsigned char data[64] = {0};
    uint32_t d3[3] = {4, 2, 2}, d1[1] = {4}, d1b[1] = {5}, d2[2] = {4, 1};
    snprintf(im, sizeof im, "%s/img", f->dir);
    snprintf(lb, sizeof lb, "%s/lab", f->dir);
    snprintf(other, sizeof other, "%s/other", f->dir);
    write_idx(im, 0x08, 3, d3, data, 16, 0);
    write_idx(lb, 0x08, 1, d1, data, 4, 1);
    tsr_dataset *d = (tsr_dataset *)0x1;
    expect(f, tsr_dataset_load_idx(f->ctx, im, lb, &d), TSR_OK, NULL, NULL);
    assert_int_equal(d->classes, 1);
    tsr_dataset_free(f->ctx, d);

    /* labels given as images and images as labels: the magic names the expected one */
    expect(f, tsr_dataset_load_idx(f->ctx, lb, lb, &d), TSR_ERR_CORRUPT, lb, "expected 0x00000803");
    assert_null(d);
    expect(f, tsr_dataset_load_idx(f->ctx, im, im, &d), TSR_ERR_CORRUPT, im,
           "bad magic 0x00000803, expected 0x00000801 (labels");
    /* wrong element type (int images) and wrong label rank */
    write_idx(other, 0x0C, 3, d3, data, 64, 0);
    expect(f, tsr_dataset_load_idx(f->ctx, other, lb, &d), TSR_ERR_CORRUPT, other,
           "bad magic 0x00000c03");
    write_idx(other, 0x08, 2, d2, data, 4, 0);
    expect(f, tsr_dataset_load_idx(f->ctx, im, other, &d), TSR_ERR_CORRUPT, other,
           "bad magic 0x00000802, expected 0x00000801");
    /* 5 labels for 4 images */
    write_idx(other, 0x08, 1, d1b, data, 5, 0);
    expect(f, tsr_dataset_load_idx(f->ctx, im, other, &d), TSR_ERR_MISMATCH, "4 images",
           "5 labels");
    assert_non_null(strstr(tsr_context_last_error(f->ctx), other));
    /* no images at all */
    uint32_t z3[3] = {0, 2, 2}, z1[1] = {0};
    write_idx(other, 0x08, 3, z3, data, 0, 0);
    char zl[256];
    snprintf(zl, sizeof zl, "%s/zero-labels", f->dir);
    write_idx(zl, 0x08, 1, z1, data, 0, 0);
    expect(f, tsr_dataset_load_idx(f->ctx, other, zl, &d), TSR_ERR_CORRUPT, other, "no data");
    /* truncated label file propagates the reader's error */
    write_idx(other, 0x08, 1, d1, data, 3, 0);
    expect(f, tsr_dataset_load_idx(f->ctx, im, other, &d), TSR_ERR_TRUNCATED, other, "truncated");
    /* missing files: NOT_FOUND, the path, and how to get the data */
    char empty[256];
    snprintf(empty, sizeof empty, "%s/empty", f->dir);
    assert_int_equal(mkdir(empty, 0755), 0);
    expect(f, tsr_dataset_load_mnist_dir(f->ctx, empty, 1, &d), TSR_ERR_NOT_FOUND,
           "empty/train-images-idx3-ubyte", "make deps");
    assert_non_null(strstr(tsr_context_last_error(f->ctx), "TSR_DATA_DIR"));
    make_split(empty, "t10k", 3, 0, 0);
    snprintf(other, sizeof other, "%s/t10k-labels-idx1-ubyte", empty);
    unlink(other);
    expect(f, tsr_dataset_load_mnist_dir(f->ctx, empty, 0, &d), TSR_ERR_NOT_FOUND,
           "t10k-labels-idx1-ubyte[.gz] not found", "make deps");
    expect(f, tsr_dataset_load_idx(f->ctx, im, NULL, &d), TSR_ERR_INVALID_ARG, "labels", NULL);
    expect(f, tsr_dataset_load_idx(f->ctx, im, lb, NULL), TSR_ERR_INVALID_ARG, NULL, NULL);
    expect(f, tsr_dataset_create(f->ctx, 3, 0, 1, 1, 2, &d), TSR_ERR_SHAPE, "empty", NULL);
    expect(f, tsr_dataset_create(f->ctx, SIZE_MAX / 2, 4, 1, 1, 2, &d), TSR_ERR_SHAPE, "overflow",
           NULL);
}

static void test_load_allocator_failures(void **state) {
    fixture *f = *state;
    char im[256], lb[256];
    unsigned char data[48];
    for (int i = 0; i < 48; i++) data[i] = (unsigned char)(i * 5);
    uint32_t d3[3] = {3, 4, 4}, d1[1] = {3};
    snprintf(im, sizeof im, "%s/img.gz", f->dir);
    snprintf(lb, sizeof lb, "%s/lab", f->dir);
    write_idx(im, 0x08, 3, d3, data, 48, 1);
    write_idx(lb, 0x08, 1, d1, data, 3, 0);
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
    tsr_dataset *d;
    assert_int_equal(tsr_dataset_load_idx(ctx, im, lb, &d), TSR_OK);
    tsr_loader_options lo = {2, 1, 1, 0, 1, 0};
    tsr_loader *l;
    assert_int_equal(tsr_loader_create(ctx, d, &lo, &l), TSR_OK);
    long needed = counter.calls - base;
    tsr_loader_free(l);
    tsr_dataset_free(ctx, d);
    assert_true(needed >= 6);
    for (long k = 1; k <= needed; k++) {
        counter.calls = base;
        counter.fail_at = base + k;
        d = NULL;
        l = NULL;
        tsr_status st = tsr_dataset_load_idx(ctx, im, lb, &d);
        if (st == TSR_OK) st = tsr_loader_create(ctx, d, &lo, &l);
        assert_int_equal(st, TSR_ERR_NO_MEMORY);
        assert_null(l);
        tsr_dataset_free(ctx, d);
    }
    counter.fail_at = 0;
    tsr_context_free(ctx);
    assert_int_equal(counter.live, 0);
}

/* ---- loader ---- */

/* Plain-C restatement of the documented order (data.h): SplitMix64 finaliser, key from
 * (seed, epoch), outputs at counters 1, 2, ..., rejection sampling, Fisher-Yates from the end. */
static uint64_t ref_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static void ref_permutation(uint64_t seed, uint64_t epoch, size_t n, size_t *perm) {
    const uint64_t g = 0x9E3779B97F4A7C15ull;
    uint64_t key = ref_mix(ref_mix(seed + g) ^ (epoch * g + 0x7473722D73687566ull)), ctr = 0;
    for (size_t i = 0; i < n; i++) perm[i] = i;
    for (size_t i = n - 1; n && i >= 1; i--) {
        uint64_t bound = i + 1, x;
        do x = ref_mix(key + ++ctr * g);
        while (x < (UINT64_MAX - bound + 1) % bound);
        size_t j = (size_t)(x % bound), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* A data set whose sample i has label i and pixels i*1000 + k, so batches name their samples. */
static tsr_dataset *numbered(fixture *f, size_t n) {
    tsr_dataset *d;
    assert_int_equal(tsr_dataset_create(f->ctx, n, 1, 1, 3, n, &d), TSR_OK);
    for (size_t i = 0; i < n; i++) {
        d->labels[i] = (int32_t)i;
        for (int k = 0; k < 3; k++) d->images[i * 3 + k] = (float)(i * 1000 + (size_t)k);
    }
    return d;
}

static void test_loader_brute_force(void **state) {
    fixture *f = *state;
    static const size_t counts[] = {1, 2, 7, 23, 24, 64};
    static const size_t batches[] = {1, 3, 5, 8};
    for (size_t ci = 0; ci < TSR_ARRAY_SIZE(counts); ci++) {
        size_t n = counts[ci];
        tsr_dataset *d = numbered(f, n);
        size_t *order = malloc(n * sizeof *order), *seen = malloc(n * sizeof *seen);
        size_t *idx = malloc(16 * sizeof *idx);
        float *img = malloc(16 * 3 * sizeof *img);
        int32_t *lab = malloc(16 * sizeof *lab);
        for (size_t bi = 0; bi < TSR_ARRAY_SIZE(batches); bi++)
            for (int nr = 1; nr <= 4; nr++)
                for (int drop = 0; drop <= 1; drop++)
                    for (int shuffle = 0; shuffle <= 1; shuffle++)
                        for (uint64_t epoch = 0; epoch < 3; epoch++) {
                            size_t b = batches[bi], G = b * (size_t)nr;
                            uint64_t seed = 42 + n;
                            if (shuffle) ref_permutation(seed, epoch, n, order);
                            else for (size_t i = 0; i < n; i++) order[i] = i;
                            memset(seen, 0, n * sizeof *seen);
                            size_t total = 0;
                            for (int r = 0; r < nr; r++) {
                                tsr_loader_options o = {b, seed, shuffle, r, nr, drop};
                                tsr_loader *l;
                                assert_int_equal(tsr_loader_create(f->ctx, d, &o, &l), TSR_OK);
                                tsr_loader_start_epoch(l, epoch);
                                size_t k = 0, got;
                                /* alternate the two ways to read a batch */
                                while ((got = (k % 2 ? tsr_loader_next(l, img, lab)
                                                     : tsr_loader_next_indices(l, idx))) > 0) {
                                    size_t start = k * G + (size_t)r * b;
                                    assert_true(got <= b);
                                    if (got < b) assert_int_equal(start + got, n); /* only the tail */
                                    for (size_t i = 0; i < got; i++) {
                                        size_t s = order[start + i];
                                        if (k % 2) {
                                            assert_int_equal(lab[i], (int32_t)s);
                                            assert_true(img[i * 3 + 2] == (float)(s * 1000 + 2));
                                        } else {
                                            assert_int_equal(idx[i], s);
                                        }
                                        seen[s]++;
                                    }
                                    total += got;
                                    k++;
                                }
                                assert_int_equal(k, tsr_loader_batches(l));
                                assert_int_equal(tsr_loader_next(l, img, lab), 0); /* stays done */
                                tsr_loader_free(l);
                            }
                            /* exactly once each; drop_last drops precisely the order's tail */
                            size_t kept = drop ? n / G * G : n;
                            assert_int_equal(total, kept);
                            for (size_t i = 0; i < n; i++)
                                assert_int_equal(seen[order[i]], i < kept ? 1 : 0);
                        }
        free(order);
        free(seen);
        free(idx);
        free(img);
        free(lab);
        tsr_dataset_free(f->ctx, d);
    }
}

static void test_shuffle_properties(void **state) {
    fixture *f = *state;
    enum { N = 1000 };
    size_t *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), *r = malloc(N * sizeof *r);
    /* the reference's generator is SplitMix64: outputs of Vigna's splitmix64.c from state
     * 1477776061723855037 (published known-answer values) */
    static const uint64_t known[3] = {1985237415132408290ull, 2979275885539914483ull,
                                      13511426838097143398ull};
    for (uint64_t k = 0; k < 3; k++)
        assert_true(ref_mix(1477776061723855037ull + (k + 1) * 0x9E3779B97F4A7C15ull) == known[k]);
    /* a permutation, equal to the reference, and deterministic */
    tsr_shuffle_permutation(7, 3, N, a);
    ref_permutation(7, 3, N, r);
    assert_memory_equal(a, r, N * sizeof *a);
    tsr_shuffle_permutation(7, 3, N, b);
    assert_memory_equal(a, b, N * sizeof *a);
    /* other epochs and other seeds give other orders; few fixed points */
    for (uint64_t e = 0; e < 5; e++) {
        tsr_shuffle_permutation(7, e, N, b);
        if (e != 3) assert_memory_not_equal(a, b, N * sizeof *a);
        size_t fixed = 0;
        for (size_t i = 0; i < N; i++) fixed += b[i] == i;
        assert_true(fixed < 10);
    }
    tsr_shuffle_permutation(8, 3, N, b);
    assert_memory_not_equal(a, b, N * sizeof *a);
    /* a loader keyed the same way reproduces its epoch after another one */
    tsr_dataset *d = numbered(f, N);
    tsr_loader_options o = {N, 7, 1, 0, 1, 0};
    tsr_loader *l;
    assert_int_equal(tsr_loader_create(f->ctx, d, &o, &l), TSR_OK);
    tsr_loader_start_epoch(l, 3);
    assert_int_equal(tsr_loader_next_indices(l, b), N);
    assert_memory_equal(a, b, N * sizeof *a);
    tsr_loader_start_epoch(l, 4);
    tsr_loader_start_epoch(l, 3);
    assert_int_equal(tsr_loader_next_indices(l, b), N);
    assert_memory_equal(a, b, N * sizeof *a);
    tsr_loader_free(l);
    tsr_dataset_free(f->ctx, d);
    free(a);
    free(b);
    free(r);

    /* uniform: all 24 orders of 4 elements over 24000 (seed, epoch) keys, chi-square with
     * 23 degrees of freedom far below its 1e-6 tail (about 65) */
    long hist[24] = {0};
    size_t p[4];
    for (uint64_t k = 0; k < 24000; k++) {
        tsr_shuffle_permutation(k / 8, k % 8, 4, p);
        int code = 0, used[4] = {0};
        for (int i = 0; i < 4; i++) {
            int rank = 0;
            for (size_t v = 0; v < p[i]; v++) rank += !used[v];
            used[p[i]] = 1;
            code = code * (4 - i) + rank;
        }
        hist[code]++;
    }
    double chi2 = 0;
    for (int i = 0; i < 24; i++) chi2 += ((double)hist[i] - 1000.0) * ((double)hist[i] - 1000.0) / 1000.0;
    assert_true(chi2 < 65.0);
    tsr_shuffle_permutation(1, 1, 0, p); /* n = 0 and 1 are no-ops */
    p[0] = 5;
    tsr_shuffle_permutation(1, 1, 1, p);
    assert_int_equal(p[0], 0);
}

static void test_loader_bad_options(void **state) {
    fixture *f = *state;
    tsr_dataset *d = numbered(f, 10);
    tsr_loader *l = (tsr_loader *)0x1;
    tsr_loader_options o = {0, 1, 1, 0, 1, 0};
    expect(f, tsr_loader_create(f->ctx, d, &o, &l), TSR_ERR_INVALID_ARG, "batch", NULL);
    assert_null(l);
    o.batch = 2;
    o.rank = 2;
    o.nranks = 2;
    expect(f, tsr_loader_create(f->ctx, d, &o, &l), TSR_ERR_INVALID_ARG, "rank 2 of 2", NULL);
    o.rank = -1;
    expect(f, tsr_loader_create(f->ctx, d, &o, &l), TSR_ERR_INVALID_ARG, "rank -1", NULL);
    o.rank = 0;
    o.nranks = 0;
    expect(f, tsr_loader_create(f->ctx, d, &o, &l), TSR_ERR_INVALID_ARG, "0 ranks", NULL);
    o.nranks = 1;
    expect(f, tsr_loader_create(f->ctx, NULL, &o, &l), TSR_ERR_INVALID_ARG, "data set", NULL);
    expect(f, tsr_loader_create(f->ctx, d, NULL, &l), TSR_ERR_INVALID_ARG, "options", NULL);
    o.batch = SIZE_MAX / 2;
    o.nranks = 3;
    expect(f, tsr_loader_create(f->ctx, d, &o, &l), TSR_ERR_INVALID_ARG, "overflow", NULL);
    tsr_loader_free(NULL);
    assert_int_equal(tsr_loader_next(NULL, NULL, NULL), 0);
    assert_int_equal(tsr_loader_batches(NULL), 0);
    tsr_dataset_free(f->ctx, d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fashion_mnist),
        cmocka_unit_test(test_generated_dir),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_allocator_failures),
        cmocka_unit_test(test_loader_brute_force),
        cmocka_unit_test(test_shuffle_properties),
        cmocka_unit_test(test_loader_bad_options),
    };
    return cmocka_run_group_tests(tests, tsr_test_dir_setup, tsr_test_dir_teardown);
}
