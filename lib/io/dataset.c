/* Labelled image sets from IDX files, normalisation, and the sharded, shuffled batch loader. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/io/idx.h"
#include "lib/core/internal.h"

#define TSR_DEFAULT_DATA_DIR "/usr/share/datasets/fashion-mnist"

void tsr_dataset_free(tsr_context *ctx, tsr_dataset *d) {
    if (!d) return;
    tsr_free(ctx, d->images);
    tsr_free(ctx, d->labels);
    tsr_free(ctx, d->tokens);
    tsr_free(ctx, d);
}

size_t tsr_dataset_targets(const tsr_dataset *d) {
    if (!d) return 0;
    size_t n = d->count * (d->positions ? d->positions : 1), scored = 0;
    for (size_t i = 0; i < n; i++) scored += d->labels[i] != -1;
    return scored;
}

tsr_status tsr_dataset_create(tsr_context *ctx, size_t count, size_t channels, size_t height,
                              size_t width, size_t classes, tsr_dataset **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_dataset_create: out is NULL");
    *out = NULL;
    size_t features, total;
    if (!channels || !height || !width)
        return tsr_error(ctx, TSR_ERR_SHAPE, "tsr_dataset_create: empty sample shape %zux%zux%zu",
                         channels, height, width);
    if (tsr_mul_size(channels, height, &features) || tsr_mul_size(features, width, &features) ||
        tsr_mul_size(count, features, &total) || tsr_mul_size(total, sizeof(float), &total))
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "tsr_dataset_create: %zu samples of %zux%zux%zu overflow the address space",
                         count, channels, height, width);
    tsr_dataset *d = tsr_calloc(ctx, 1, sizeof *d);
    if (!d) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_dataset_create: no memory");
    d->count = count;
    d->channels = channels;
    d->height = height;
    d->width = width;
    d->features = features;
    d->classes = classes;
    d->images = tsr_calloc(ctx, count ? count * features : 1, sizeof(float));
    d->labels = tsr_calloc(ctx, count ? count : 1, sizeof(int32_t));
    if (!d->images || !d->labels) {
        tsr_dataset_free(ctx, d);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY,
                         "tsr_dataset_create: cannot allocate %zu samples of %zu floats", count,
                         features);
    }
    *out = d;
    return TSR_OK;
}

static unsigned idx_magic(const tsr_idx *x) { return (unsigned)x->type << 8 | (unsigned)x->ndim; }

tsr_status tsr_dataset_load_idx(tsr_context *ctx, const char *images_path, const char *labels_path,
                                tsr_dataset **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_dataset_load_idx: out is NULL");
    *out = NULL;
    if (!images_path || !labels_path)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_dataset_load_idx: %s path is NULL",
                         images_path ? "labels" : "images");
    tsr_idx *im = NULL, *lb = NULL;
    tsr_dataset *d = NULL;
    tsr_status st = tsr_idx_load(ctx, images_path, &im);
    if (st != TSR_OK) goto done;
    if (im->type != 0x08 || (im->ndim != 3 && im->ndim != 4)) {
        st = tsr_error(ctx, TSR_ERR_CORRUPT,
                       "%s: bad magic 0x%08x, expected 0x00000803 or 0x00000804 (images: ubyte, "
                       "[n, h, w] or [n, c, h, w]); found %s with %d dimensions",
                       images_path, idx_magic(im), tsr_idx_type_name(im->type), im->ndim);
        goto done;
    }
    st = tsr_idx_load(ctx, labels_path, &lb);
    if (st != TSR_OK) goto done;
    if (lb->type != 0x08 || lb->ndim != 1) {
        st = tsr_error(ctx, TSR_ERR_CORRUPT,
                       "%s: bad magic 0x%08x, expected 0x00000801 (labels: ubyte, 1 dimension); "
                       "found %s with %d dimensions",
                       labels_path, idx_magic(lb), tsr_idx_type_name(lb->type), lb->ndim);
        goto done;
    }
    if (im->dims[0] != lb->dims[0]) {
        st = tsr_error(ctx, TSR_ERR_MISMATCH, "%s has %u images but %s has %u labels",
                       images_path, (unsigned)im->dims[0], labels_path, (unsigned)lb->dims[0]);
        goto done;
    }
    size_t c = im->ndim == 4 ? im->dims[1] : 1;
    size_t h = im->dims[im->ndim - 2], w = im->dims[im->ndim - 1];
    if (im->dims[0] == 0 || c * h * w == 0) {
        st = tsr_error(ctx, TSR_ERR_CORRUPT, "%s: no data (%u images of %zux%zux%zu)",
                       images_path, (unsigned)im->dims[0], c, h, w);
        goto done;
    }
    st = tsr_dataset_create(ctx, im->dims[0], c, h, w, 0, &d);
    if (st != TSR_OK) goto done;
    const unsigned char *px = im->data;
    for (size_t i = 0; i < im->count; i++) d->images[i] = (float)px[i] / 255.0f;
    const unsigned char *lab = lb->data;
    int max = 0;
    for (size_t i = 0; i < d->count; i++) {
        d->labels[i] = lab[i];
        if (lab[i] > max) max = lab[i];
    }
    d->classes = (size_t)max + 1;
    *out = d;
    d = NULL;
done:
    tsr_dataset_free(ctx, d);
    tsr_idx_free(ctx, im);
    tsr_idx_free(ctx, lb);
    return st;
}

/* dir/name, or dir/name.gz when only the compressed file exists. */
static tsr_status find_file(tsr_context *ctx, const char *dir, const char *name, char *path,
                            size_t size) {
    int n = snprintf(path, size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n + 3 >= size)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "data folder path too long: %s", dir);
    if (access(path, F_OK) == 0) return TSR_OK;
    strcat(path, ".gz");
    if (access(path, F_OK) == 0) return TSR_OK;
    return tsr_error(ctx, TSR_ERR_NOT_FOUND,
                     "%s/%s[.gz] not found: run `make deps` (installs dataset-fashion-mnist) or "
                     "set TSR_DATA_DIR to a folder holding the MNIST-format files",
                     dir, name);
}

tsr_status tsr_dataset_load_mnist_dir(tsr_context *ctx, const char *dir, int train,
                                      tsr_dataset **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_dataset_load_mnist_dir: out is NULL");
    *out = NULL;
    if ((!dir || !*dir) && ctx) dir = ctx->opts.data_dir;
    if (!dir || !*dir) dir = TSR_DEFAULT_DATA_DIR;
    const char *split = train ? "train" : "t10k";
    char name[64], images[4096], labels[4096];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", split);
    TSR_TRY(find_file(ctx, dir, name, images, sizeof images));
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split);
    TSR_TRY(find_file(ctx, dir, name, labels, sizeof labels));
    return tsr_dataset_load_idx(ctx, images, labels, out);
}

tsr_status tsr_dataset_normalize(tsr_context *ctx, tsr_dataset *d, float mean, float std) {
    if (!d) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_dataset_normalize: data set is NULL");
    if (!isfinite(mean) || !isfinite(std) || !(std > 0.0f))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "tsr_dataset_normalize: mean %g and std %g must be finite, std > 0",
                         (double)mean, (double)std);
    float inv = 1.0f / std;
    size_t n = d->count * d->features;
    for (size_t i = 0; i < n; i++) d->images[i] = (d->images[i] - mean) * inv;
    return TSR_OK;
}

void tsr_dataset_truncate(tsr_dataset *d, size_t n) {
    if (d && n < d->count) d->count = n;
}

/* --- shuffling: counter-based, so any rank can compute any epoch's order independently --- */

static uint64_t mix64(uint64_t z) { /* SplitMix64 finaliser */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define GOLDEN 0x9E3779B97F4A7C15ull

typedef struct {
    uint64_t key, counter;
} ctr_rng;

static uint64_t ctr_next(ctr_rng *r) { return mix64(r->key + ++r->counter * GOLDEN); }

/* Uniform in [0, n), n >= 1: rejects the 2^64 mod n lowest values so every residue is equally
 * likely. */
static uint64_t ctr_uniform(ctr_rng *r, uint64_t n) {
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = ctr_next(r);
        if (x >= threshold) return x % n;
    }
}

void tsr_shuffle_permutation(uint64_t seed, uint64_t epoch, size_t n, size_t *perm) {
    if (!perm) return;
    ctr_rng r = {mix64(mix64(seed + GOLDEN) ^ (epoch * GOLDEN + 0x7473722D73687566ull)), 0};
    for (size_t i = 0; i < n; i++) perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)ctr_uniform(&r, (uint64_t)i);
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

struct tsr_loader {
    tsr_context *ctx;
    const tsr_dataset *d;
    tsr_loader_options o;
    size_t *order;
    size_t count;        /* samples, fixed at creation */
    size_t global;       /* samples per global batch: batch * nranks */
    size_t global_count; /* global batches per epoch */
    size_t next;         /* next global batch */
    size_t share_off;    /* this rank's slice of a global batch: [share_off, +o.batch) */
};

tsr_status tsr_loader_create(tsr_context *ctx, const tsr_dataset *d, const tsr_loader_options *o,
                             tsr_loader **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_loader_create: out is NULL");
    *out = NULL;
    if (!d || !o)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_loader_create: %s is NULL",
                         d ? "options" : "data set");
    if (o->batch == 0)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_loader_create: batch must be >= 1");
    if (o->nranks < 1 || o->rank < 0 || o->rank >= o->nranks)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "tsr_loader_create: rank %d of %d ranks: need 0 <= rank < nranks",
                         o->rank, o->nranks);
    size_t global;
    if (tsr_mul_size(o->batch, (size_t)o->nranks, &global))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_loader_create: batch %zu x %d ranks overflows",
                         o->batch, o->nranks);
    if (d->count && (!d->images || !d->labels))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_loader_create: data set without %s",
                         d->images ? "labels" : "images");
    tsr_loader *l = tsr_calloc(ctx, 1, sizeof *l);
    if (!l) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tsr_loader_create: no memory");
    l->order = tsr_calloc(ctx, d->count ? d->count : 1, sizeof *l->order);
    if (!l->order) {
        tsr_free(ctx, l);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY,
                         "tsr_loader_create: cannot allocate the order of %zu samples", d->count);
    }
    l->ctx = ctx;
    l->d = d;
    l->o = *o;
    l->count = d->count;
    l->global = global;
    l->global_count = l->count / global + (!o->drop_last && l->count % global ? 1 : 0);
    l->share_off = (size_t)o->rank * o->batch;
    tsr_loader_start_epoch(l, 0);
    *out = l;
    return TSR_OK;
}

void tsr_loader_free(tsr_loader *l) {
    if (!l) return;
    tsr_context *ctx = l->ctx;
    tsr_free(ctx, l->order);
    tsr_free(ctx, l);
}

void tsr_loader_start_epoch(tsr_loader *l, uint64_t epoch) {
    if (!l) return;
    l->next = 0;
    if (l->o.shuffle) {
        tsr_shuffle_permutation(l->o.seed, epoch, l->count, l->order);
    } else {
        for (size_t i = 0; i < l->count; i++) l->order[i] = i;
    }
}

tsr_status tsr_loader_seek(tsr_loader *l, size_t k) {
    if (!l) return TSR_ERR_INVALID_ARG;
    if (k > l->global_count)
        return tsr_error(l->ctx, TSR_ERR_INVALID_ARG,
                         "tsr_loader_seek: batch %zu is past the epoch's %zu global batches", k,
                         l->global_count);
    l->next = k; /* the epoch's order is already drawn: only the position moves */
    return TSR_OK;
}

size_t tsr_loader_batches(const tsr_loader *l) {
    if (!l) return 0;
    size_t full = l->count / l->global, rem = l->count % l->global;
    if (l->o.drop_last || rem == 0) return full;
    return full + (rem > l->share_off ? 1 : 0);
}

/* [*start, start + n) of the order for this rank's slice of the next global batch. */
static size_t next_slice(tsr_loader *l, size_t *start) {
    if (l->next >= l->global_count) return 0;
    size_t begin = l->next * l->global + l->share_off;
    l->next++;
    if (begin >= l->count) return 0; /* the partial last global batch ends before this rank */
    size_t n = l->count - begin;
    if (n > l->o.batch) n = l->o.batch;
    *start = begin;
    return n;
}

size_t tsr_loader_next_indices(tsr_loader *l, size_t *indices) {
    if (!l) return 0;
    size_t start = 0, n = next_slice(l, &start);
    if (indices)
        for (size_t i = 0; i < n; i++) indices[i] = l->order[start + i];
    return n;
}

size_t tsr_loader_next(tsr_loader *l, float *images, int32_t *labels) {
    if (!l) return 0;
    size_t start = 0, n = next_slice(l, &start);
    const tsr_dataset *d = l->d;
    for (size_t i = 0; i < n; i++) {
        size_t s = l->order[start + i];
        if (images) memcpy(images + i * d->features, d->images + s * d->features,
                           d->features * sizeof(float));
        if (labels) labels[i] = d->labels[s];
    }
    return n;
}

tsr_status tsr_loader_set_shares(tsr_loader *l, const size_t *shares) {
    if (!l || !shares) return TSR_ERR_INVALID_ARG;
    size_t global = 0, off = 0;
    for (int r = 0; r < l->o.nranks; r++) {
        if (r == l->o.rank) off = global;
        if (shares[r] > SIZE_MAX - global)
            return tsr_error(l->ctx, TSR_ERR_INVALID_ARG, "tsr_loader_set_shares: shares overflow");
        global += shares[r];
    }
    if (!shares[l->o.rank])
        return tsr_error(l->ctx, TSR_ERR_INVALID_ARG,
                         "tsr_loader_set_shares: rank %d has a share of 0 samples", l->o.rank);
    l->o.batch = shares[l->o.rank];
    l->share_off = off;
    l->global = global;
    l->global_count = l->count / global + (!l->o.drop_last && l->count % global ? 1 : 0);
    l->next = 0;
    return TSR_OK;
}
