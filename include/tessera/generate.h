/* Text generation from a GPT (tsr_model_create_gpt's layout) with a key/value cache.
 *
 * A generator reads the model's flat parameters (tsr_model_param_count floats in
 * tsr_trainer_get_params' layout; found tensor by tensor through tsr_model_param_tensor) and
 * keeps, per block, the keys and values of every position seen so far ([context][channels]
 * each). Feeding tokens runs the forward pass over the new positions only: embeddings at
 * positions pos.., per block ln_1, c_attn, the new keys and values appended to the cache,
 * attention of each new query over positions 0..its own, c_proj, residual, ln_2, MLP,
 * residual; then ln_f and the tied head on the last new position: logits = x wte^T. The
 * logits at every position are those of the full forward over the sequence (up to float
 * rounding: tests/unit/test_generate.c holds them to 1e-5 relative).
 * Host code: OpenBLAS GEMM/GEMV for the products, plain loops for layer norm, GELU and the
 * softmax (the formulas of backends/host/host_gpt.c). */
#ifndef TESSERA_GENERATE_H
#define TESSERA_GENERATE_H
#include <stddef.h>
#include <stdint.h>
#include "context.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tsr_generator tsr_generator;

/* A generator over `model` (any token count; a GPT layout, else TSR_ERR_UNSUPPORTED) and its
 * parameters params[0..count) (count = tsr_model_param_count, else TSR_ERR_SHAPE). The
 * parameters are read in place: they must stay alive and unchanged while the generator
 * lives. Allocates the caches and the work space of a full window (TSR_ERR_NO_MEMORY). */
tsr_status tsr_generator_create(tsr_context *ctx, const tsr_model *model, const float *params, size_t count,
                                tsr_generator **out);
void tsr_generator_free(tsr_generator *g); /* accepts NULL */
/* The model's context (positions the cache holds) and vocabulary. */
size_t tsr_generator_context(const tsr_generator *g);
size_t tsr_generator_vocab(const tsr_generator *g);
/* Tokens in the cache: the position the next fed token takes. */
size_t tsr_generator_position(const tsr_generator *g);
/* Empties the cache (position 0). */
void tsr_generator_reset(tsr_generator *g);
/* Appends ids[0..n) at positions pos..pos+n-1 and computes the logits of the last one into
 * logits[0..vocab) (NULL: kept for tsr_generator_sample only). n >= 1; an id outside
 * [0, vocab) or pos + n > context is refused (TSR_ERR_INVALID_ARG / TSR_ERR_SHAPE) with the
 * cache unchanged. */
tsr_status tsr_generator_feed(tsr_generator *g, const int32_t *ids, size_t n, float *logits);

/* Sampling of the next token from logits. temperature 0: the most probable token (the first of
 * equal ones); otherwise p ~ exp(logit / temperature) over the top_k most probable tokens (0:
 * all; ties broken by the lower id), drawn by inverse CDF in id order. */
typedef struct tsr_sampling {
    float temperature; /* 0 (greedy) or in (0, 1000] */
    size_t top_k;      /* 0 (all) or 1..vocab */
} tsr_sampling;
/* The token the uniform draw u in [0, 1) picks from logits[0..vocab). */
tsr_status tsr_sample_logits(tsr_context *ctx, const float *logits, size_t vocab, const tsr_sampling *s,
                             double u, int32_t *token);
/* Seeds the generator's random stream (xoshiro256**; seed 0 at creation). */
void tsr_generator_seed(tsr_generator *g, uint64_t seed);
/* Samples from the last fed position's logits with a draw from the generator's stream. */
tsr_status tsr_generator_sample(tsr_generator *g, const tsr_sampling *s, int32_t *token);

/* Generation from a prompt. When the window is full it slides: the cache is rebuilt from the
 * last context - 1 tokens and the new one (position embeddings are absolute, so the cached
 * keys cannot shift), a full-window forward for every token from then on, as nanoGPT's
 * generate crops its input to the last context tokens. */
typedef struct tsr_generate_options {
    tsr_sampling sampling;
    size_t max_tokens;  /* tokens to generate */
    uint64_t seed;      /* the sampling stream (tsr_generator_seed) */
    int no_cache;       /* 1: recompute the whole window for every token (the reference path) */
} tsr_generate_options;
/* Called with each generated token; nonzero stops the generation (not an error). */
typedef int (*tsr_token_fn)(void *user, int32_t token);
/* Resets the generator, feeds prompt[0..n) (1 to context tokens, else TSR_ERR_SHAPE) and
 * generates up to max_tokens tokens, handing each to emit. */
tsr_status tsr_generate(tsr_generator *g, const int32_t *prompt, size_t n, const tsr_generate_options *o,
                        tsr_token_fn emit, void *user);

#ifdef __cplusplus
}
#endif
#endif
