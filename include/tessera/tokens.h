/* Token data for language models: the token files of llm.c (its dev/data scripts),
 * seeded random training windows sharded over data-parallel ranks, and sequential passes over
 * a validation file. */
#ifndef TESSERA_TOKENS_H
#define TESSERA_TOKENS_H
#include <stddef.h>
#include <stdint.h>
#include "context.h"

#ifdef __cplusplus
extern "C" {
#endif

/* File layout (llm.c's dev/data/data_common.py write_datafile): a header of 256 little-endian
 * int32 - magic, version, token count, the rest unused - then the tokens, little-endian:
 *   magic 20240520, version 1: uint16 tokens (GPT-2 vocabularies; nanoGPT's prepare.py
 *     writes the same tokens without the header, which this reader refuses as a bad magic);
 *   magic 20240801, version 7: uint32 tokens (llm.c's layout for larger vocabularies).
 * The file holds exactly 1024 + count x token-width bytes. */
#define TSR_TOKENS_MAGIC_U16 20240520
#define TSR_TOKENS_VERSION_U16 1
#define TSR_TOKENS_MAGIC_U32 20240801
#define TSR_TOKENS_VERSION_U32 7
#define TSR_TOKENS_HEADER_BYTES 1024
#define TSR_TOKENS_MAX_COUNT 2147483647u /* the header's count is an int32 */

/* A token file in memory (mapped read-only when loaded from a path). */
typedef struct tsr_tokens tsr_tokens;

/* Reads `path`: checks the magic, the version, a count >= 0, and that the file is exactly as
 * long as the header says. Errors name the file: TSR_ERR_CORRUPT for a wrong magic or
 * version, a negative count or trailing bytes; TSR_ERR_TRUNCATED for a short file;
 * TSR_ERR_NOT_FOUND / TSR_ERR_IO when it cannot be opened or read. */
tsr_status tsr_tokens_load(tsr_context *ctx, const char *path, tsr_tokens **out);
/* As tsr_tokens_load, from `size` bytes in memory (copied); `name` stands for the file in
 * errors. */
tsr_status tsr_tokens_load_mem(tsr_context *ctx, const char *name, const void *data, size_t size,
                               tsr_tokens **out);
void tsr_tokens_free(tsr_tokens *t); /* accepts NULL */

size_t tsr_tokens_count(const tsr_tokens *t);
/* Token i (i < count). */
uint32_t tsr_tokens_at(const tsr_tokens *t, size_t i);
/* Bytes per stored token: 2 or 4. */
int tsr_tokens_width(const tsr_tokens *t);
/* The path or name it was loaded from. */
const char *tsr_tokens_name(const tsr_tokens *t);

/* Checks every id against a model's vocabulary (ids 0..vocab-1): TSR_ERR_MISMATCH naming
 * the file, the first position and the bound, "val.bin: token 300 at position 17 is outside
 * the vocabulary of 256 (ids 0..255)". Call it once after loading, before training. */
tsr_status tsr_tokens_check_vocab(tsr_context *ctx, const tsr_tokens *t, uint32_t vocab);

/* Writes `count` tokens to `path` atomically (a temp file beside it, synced, then renamed over
 * it; on failure the previous file is kept). The 20240520/1 uint16 layout when every id is
 * below 65536, else 20240801/7 uint32. count <= TSR_TOKENS_MAX_COUNT. */
tsr_status tsr_tokens_save(tsr_context *ctx, const char *path, const uint32_t *tokens,
                           size_t count);

/* What a data folder holds, for tools that take either kind (tsr-train --data DIR). */
typedef enum tsr_data_format {
    TSR_DATA_FORMAT_TOKENS = 1, /* train.bin and val.bin */
    TSR_DATA_FORMAT_IDX = 2     /* train-images-idx3-ubyte[.gz] (Fashion-MNIST and kin) */
} tsr_data_format;
/* Looks at the names only (loading checks the contents). TSR_ERR_NOT_FOUND when `dir` holds
 * neither kind, or train.bin without val.bin (or the reverse); TSR_ERR_INVALID_ARG when it
 * holds both kinds; the detail names the folder and the files looked for. */
tsr_status tsr_tokens_probe_dir(tsr_context *ctx, const char *dir, tsr_data_format *out);

/* ---- batches of windows ----
 * A window of context + 1 tokens starting at s gives one sequence: inputs are tokens
 * s .. s+context-1, targets tokens s+1 .. s+context. A batch is `batch` sequences, written as
 * int32 inputs[batch][context] and targets[batch][context].
 *
 * TSR_TOKENS_RANDOM (training): batch k (k = 0, 1, ...) of the global batch of
 * nranks x batch sequences draws its starts from xoshiro256** (tsr_rng) seeded with
 *   tsr_tokens_step_seed(seed, k),
 * each start uniform in [0, count - context - 1] (rejection, no modulo bias); rank r takes
 * draws r*batch .. (r+1)*batch - 1. So the ranks' sequences are disjoint slices of one stream,
 * every rank gets `batch` per step, and together they equal what one rank with batch
 * nranks x batch draws. The stream never ends.
 *
 * TSR_TOKENS_SEQUENTIAL (validation): window w starts at w x context, so the pass predicts
 * every token 1 .. count-1 exactly once; the last window may be short. Global window
 * k*nranks*batch + r*batch + b is row b of rank r's batch k. Rows past the end of the data
 * are padding: input 0, target -1 (nanoGPT's ignore_index), so every rank draws the same
 * number of batches, tsr_tokens_sampler_batches.
 *
 * Ids are written as int32: check the file against the model's vocabulary first
 * (tsr_tokens_check_vocab), which keeps them below 2^31. */
typedef enum tsr_tokens_order { TSR_TOKENS_RANDOM = 0, TSR_TOKENS_SEQUENTIAL = 1 } tsr_tokens_order;

typedef struct tsr_tokens_sampler_options {
    size_t context;         /* tokens per sequence, >= 1 */
    size_t batch;           /* sequences per rank per batch, >= 1 */
    uint64_t seed;          /* TSR_TOKENS_RANDOM only */
    int rank, nranks;       /* 0, 1 for a single process */
    tsr_tokens_order order;
} tsr_tokens_sampler_options;

/* The sampler keeps a pointer to `t`, which must outlive it. TSR_ERR_SHAPE (naming the file)
 * when the file has fewer than context + 1 tokens. */
typedef struct tsr_tokens_sampler tsr_tokens_sampler;
tsr_status tsr_tokens_sampler_create(tsr_context *ctx, const tsr_tokens *t,
                                     const tsr_tokens_sampler_options *o,
                                     tsr_tokens_sampler **out);
void tsr_tokens_sampler_free(tsr_tokens_sampler *s); /* accepts NULL */

/* Writes the next batch and advances the position. *targets_used (may be NULL) gets the
 * number of targets that are not padding: batch x context except at the end of a sequential
 * pass. A sequential sampler past its last batch returns TSR_ERR_STATE (seek to 0 to start
 * another pass). */
tsr_status tsr_tokens_sampler_next(tsr_tokens_sampler *s, int32_t *inputs, int32_t *targets,
                                   size_t *targets_used);
/* Batches drawn so far: the whole state, for a checkpoint to carry. */
uint64_t tsr_tokens_sampler_position(const tsr_tokens_sampler *s);
/* Continues from `position` (a sequential sampler: at most its batch count). */
tsr_status tsr_tokens_sampler_seek(tsr_tokens_sampler *s, uint64_t position);
/* Batches of one sequential pass, the same on every rank (0 for a random sampler). */
uint64_t tsr_tokens_sampler_batches(const tsr_tokens_sampler *s);

/* A validation set for tsr_trainer_evaluate: the sequential windows of `context` tokens of
 * `t` (every token 1 .. count-1 predicted once; the last window padded with target -1), at
 * most `max_windows` of them (0: all). count = windows, features = positions = context,
 * tokens and labels filled, images NULL. Freed with tsr_dataset_free. */
struct tsr_dataset;
tsr_status tsr_dataset_from_tokens(tsr_context *ctx, const tsr_tokens *t, size_t context,
                                   size_t max_windows, struct tsr_dataset **out);

/* Seed of random batch `k`: a SplitMix64-finalizer mix of (seed, k), so neighbouring seeds
 * and batches give unrelated streams. */
uint64_t tsr_tokens_step_seed(uint64_t seed, uint64_t k);

#ifdef __cplusplus
}
#endif
#endif
