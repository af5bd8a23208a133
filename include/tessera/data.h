/* Data: IDX files (MNIST format, gzip optional), data sets, seeded shuffling, batching, sharding. */
#ifndef TESSERA_DATA_H
#define TESSERA_DATA_H
#include <stddef.h>
#include <stdint.h>
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One IDX file as stored: element type code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int,
 * 0x0D float, 0x0E double), dimensions, and the data converted to host byte order. */
typedef struct tsr_idx {
    int type;
    int ndim;
    uint32_t dims[8];
    size_t count;    /* product of dims */
    size_t elem_size;
    void *data;
} tsr_idx;

/* Reads `path` (gzip detected by its magic). Validates magic, type, dimensions and length;
 * errors name the file: "t10k-images-idx3-ubyte.gz: truncated: 7840000 data bytes expected, 512 found". */
tsr_status tsr_idx_load(tsr_context *ctx, const char *path, tsr_idx **out);
void tsr_idx_free(tsr_context *ctx, tsr_idx *idx); /* accepts NULL */

/* A labelled set in host memory: images, count x (channels*height*width) floats, with one
 * label each; or (tsr_dataset_from_tokens) token sequences, count x features int32 ids in
 * `tokens` (images NULL) with `positions` labels each, the next token at every position. */
typedef struct tsr_dataset {
    size_t count;
    size_t channels, height, width;
    size_t features;  /* channels*height*width */
    size_t classes;   /* 1 + largest label */
    float *images;
    int32_t *labels;  /* count x positions; -1: a position that is not scored */
    int32_t *tokens;  /* token sequences (else NULL) */
    size_t positions; /* labels per sample: 0 or 1 for images */
} tsr_dataset;

/* Images scaled to [0,1]; label file must have as many entries as the image file. */
tsr_status tsr_dataset_load_idx(tsr_context *ctx, const char *images_path, const char *labels_path,
                                tsr_dataset **out);
/* `dir` holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] (the plain file is used when
 * both exist). NULL or "" dir: the context's data_dir (TSR_DATA_DIR), else
 * /usr/share/datasets/fashion-mnist.
 * `train` 1 = training split, 0 = test split. A missing file -> TSR_ERR_NOT_FOUND. */
tsr_status tsr_dataset_load_mnist_dir(tsr_context *ctx, const char *dir, int train,
                                      tsr_dataset **out);
void tsr_dataset_free(tsr_context *ctx, tsr_dataset *d); /* accepts NULL */
/* An all-zero data set of `count` samples of channels x height x width (synthetic data,
 * tests); `classes` is stored as given. Freed with tsr_dataset_free. */
tsr_status tsr_dataset_create(tsr_context *ctx, size_t count, size_t channels, size_t height,
                              size_t width, size_t classes, tsr_dataset **out);
/* Labels that are scored: count x positions less the ignored (-1) ones. Evaluation divides
 * its summed loss and correct predictions by this. */
size_t tsr_dataset_targets(const tsr_dataset *d);
/* x = (x - mean) / std for every pixel. */
tsr_status tsr_dataset_normalize(tsr_context *ctx, tsr_dataset *d, float mean, float std);
/* Keeps the first n samples (n >= count keeps all). */
void tsr_dataset_truncate(tsr_dataset *d, size_t n);

/* Iterates mini-batches of one rank's shard. Each epoch the sample order is a permutation
 * drawn from (seed, epoch) when shuffling, so every rank computes the same order; rank r of
 * n takes every global batch's slice [r*b, (r+1)*b) where b = batch.
 * Global batch = batch * nranks samples. Without drop_last the final global batch may be
 * partial: its samples go to ranks 0, 1, ... in slices of `batch`, so some ranks get a
 * smaller batch or none (tsr_loader_batches then differs between ranks; data-parallel
 * training that needs equal step counts sets drop_last). Every sample is seen exactly once
 * per epoch across all ranks (less the dropped tail with drop_last).
 * The loader keeps a pointer to the data set, which must outlive it; it uses the sample
 * count the data set had at creation (truncate before creating the loader). */
typedef struct tsr_loader tsr_loader;
typedef struct tsr_loader_options {
    size_t batch;       /* per-rank batch size */
    uint64_t seed;
    int shuffle;        /* 1: permute each epoch */
    int rank, nranks;   /* shard: 0, 1 for a single process */
    int drop_last;      /* 1: skip a final partial global batch */
} tsr_loader_options;
tsr_status tsr_loader_create(tsr_context *ctx, const tsr_dataset *d, const tsr_loader_options *o,
                             tsr_loader **out);
void tsr_loader_free(tsr_loader *l); /* accepts NULL */
/* Starts epoch `epoch` (reshuffles). tsr_loader_create starts epoch 0. */
void tsr_loader_start_epoch(tsr_loader *l, uint64_t epoch);
/* Skips to global batch k of the current epoch (0 <= k <= the epoch's global batches), as if
 * k batches had been taken: a run resumed inside an epoch continues with the same batches. */
tsr_status tsr_loader_seek(tsr_loader *l, size_t k);
/* Batches this rank gets per epoch. */
size_t tsr_loader_batches(const tsr_loader *l);
/* Copies the next batch into images (batch x features) and labels (either may be NULL);
 * returns its size, 0 at the end of the epoch. */
size_t tsr_loader_next(tsr_loader *l, float *images, int32_t *labels);
/* As tsr_loader_next, but gives the data set indices of the next batch (no copy). */
size_t tsr_loader_next_indices(tsr_loader *l, size_t *indices);

/* Heterogeneous shards: rank r takes shares[r] samples of every global batch (shares has
 * nranks entries, the same on every rank, each >= 1; global batch = their sum), the slice
 * after the shares of ranks 0..r-1. Restarts the current epoch. */
tsr_status tsr_loader_set_shares(tsr_loader *l, const size_t *shares);

/* The sample order of epoch `epoch`: perm[0..n) becomes a permutation of 0..n-1, by
 * Fisher-Yates (i = n-1 down to 1, j uniform in [0, i]) driven by a counter-based generator
 * (SplitMix64 outputs at counters 1, 2, ... of a key mixed from seed and epoch; uniform draws
 * by rejection, no modulo bias). Pure integer arithmetic: the same on every rank and platform. */
void tsr_shuffle_permutation(uint64_t seed, uint64_t epoch, size_t n, size_t *perm);

#ifdef __cplusplus
}
#endif
#endif
