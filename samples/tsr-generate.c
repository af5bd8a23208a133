/* tsr-generate: text from a GPT, byte by byte, with a key/value cache (include/tessera/generate.h):
 *   tsr-generate --checkpoint F --prompt TEXT --max-tokens N [--temperature T] [--top-k K] [--seed S]
 *   tsr-generate --model NAME [--init FILE.safetensors] --prompt TEXT --max-tokens N ...
 * Tokens are bytes (tsr-tokenize --bytes): the prompt's bytes are its ids, generated ids are
 * written to stdout as bytes as they come (an id above 255, from a model with a wider
 * vocabulary, as "<|id|>"). The model comes from the checkpoint (tsr-train --checkpoint: its
 * spec, the vocabulary from its parameter count), or is a GPT by name (tsr-train's --model)
 * with the weights of a safetensors file under Hugging Face's names (other tensors skipped), or
 * without --init the trainer's random initialisation (seed --seed; for speed measurements).
 * When the window is full it slides: every further token recomputes the last context tokens.
 * --no-cache recomputes the window for every token (the reference path); --bench generates
 * both ways from the same prompt and prints one JSON line instead of the text: tokens/s with
 * and without the cache and whether the tokens were the same. */
#include <cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "blas_reexec.h"
#include "tessera.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tsr-generate (--checkpoint F | --model NAME [--init FILE.safetensors]) --prompt TEXT\n"
            "                    --max-tokens N [--temperature T] [--top-k K] [--seed S] [--no-cache] [--bench]\n"
            "  --checkpoint F   a GPT checkpoint of tsr-train (the model and its parameters)\n"
            "  --model NAME     a GPT by name (gpt-mini, gpt2, gpt(layers=..,heads=..,channels=..)) with the\n"
            "                   weights of --init (Hugging Face names), else random ones (speed tests)\n"
            "  --prompt TEXT    the first tokens: the text's bytes (1 to the context)\n"
            "  --max-tokens N   bytes to generate (1 to 1000000)\n"
            "  --temperature T  0 (the default): the most probable byte; else sampled, 0 < T <= 1000\n"
            "  --top-k K        sample among the K most probable (0, the default: all)\n"
            "  --seed S         the sampling stream (default 1)\n"
            "  --no-cache       recompute the whole window for each token (the reference path)\n"
            "  --bench          generate with and without the cache, print tokens/s as JSON\n");
}

static int bad_option(const char *opt, const char *value, const char *want) {
    fprintf(stderr, "tsr-generate: option %s: '%s' is not %s\n", opt, value, want);
    return 2;
}

/* The tool's own error (the library's are in the context). */
static char tool_error[320];
static tsr_status tool_fail(tsr_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static tsr_status tool_fail(tsr_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tool_error, sizeof tool_error, fmt, ap);
    va_end(ap);
    return s;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The model and parameters of a tsr-train GPT checkpoint: its spec is a gpt(...) name, or a
 * layer spec whose vocabulary follows from the parameter count (only the token table depends
 * on it). The parameter count is checked by tsr_generator_create. */
static tsr_status load_checkpoint(tsr_context *ctx, const char *path, tsr_checkpoint **ck, tsr_model **model,
                                  const float **params) {
    tsr_status s = tsr_checkpoint_load(ctx, path, ck);
    if (s != TSR_OK) return s;
    const tsr_checkpoint_tensor *p = tsr_checkpoint_find(*ck, "params");
    if (!p) return tool_fail(TSR_ERR_NOT_FOUND, "%s holds no \"params\" tensor", path);
    *params = p->data;
    tsr_gpt_config c;
    if (tsr_gpt_is_name((*ck)->model_spec)) { /* the gpt(...) form of today's checkpoints */
        if ((s = tsr_gpt_config_parse(ctx, (*ck)->model_spec, &c)) != TSR_OK) return s;
        return tsr_model_create_gpt(ctx, &c, c.context < 2 ? c.context : 2, model);
    }
    /* a layer spec (checkpoints written before the gpt(...) form) */
    tsr_model_input_desc d = {TSR_DTYPE_I32, 1, {2, 0, 0}, 2, 2};
    if ((s = tsr_model_parse_desc(ctx, (*ck)->model_spec, &d, model)) != TSR_OK || !tsr_model_gpt_blocks(*model))
        return tool_fail(TSR_ERR_UNSUPPORTED, "%s holds the model %.60s, not a GPT", path, (*ck)->model_spec);
    tsr_param_info wte;
    size_t base = tsr_model_param_count(*model);
    if ((s = tsr_model_param_tensor(*model, 0, &wte)) != TSR_OK) return s;
    size_t C = wte.rank == 2 ? wte.shape[1] : 0;
    tsr_model_free(*model);
    *model = NULL;
    if (!C || p->count < base || (p->count - base) % C)
        return tool_fail(TSR_ERR_SHAPE, "%s: %zu parameters do not fit its model %.60s... with any vocabulary",
                         path, p->count, (*ck)->model_spec);
    d.vocab = d.classes = 2 + (p->count - base) / C;
    return tsr_model_parse_desc(ctx, (*ck)->model_spec, &d, model);
}

/* A GPT by name: its weights from a safetensors file, or the trainer's initialisation. */
static tsr_status load_named(tsr_context *ctx, const char *name, const char *init, uint64_t seed, tsr_model **model,
                             float **params) {
    tsr_gpt_config c;
    tsr_status s = tsr_gpt_config_parse(ctx, name, &c);
    if (s != TSR_OK) return s;
    if ((s = tsr_model_create_gpt(ctx, &c, c.context < 2 ? c.context : 2, model)) != TSR_OK) return s;
    size_t n = tsr_model_param_count(*model);
    if (!(*params = malloc(n * sizeof **params))) return tool_fail(TSR_ERR_NO_MEMORY, "%zu parameters", n);
    /* Hugging Face's names, also under "transformer."; GPT-2's mask buffers and lm_head skipped */
    if (init) return tsr_model_load_safetensors(ctx, *model, init, *params, n);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = 1;
    o.seed = seed;
    tsr_trainer *tr;
    if ((s = tsr_trainer_create(ctx, *model, &o, &tr)) != TSR_OK) return s;
    s = tsr_trainer_get_params(tr, *params, n);
    tsr_trainer_free(tr);
    return s;
}

typedef struct output {
    FILE *f;
    int32_t *tokens; /* --bench: the tokens of the cached run, then compared */
    size_t n, differ;
} output;

static int put_token(void *user, int32_t t) {
    output *o = user;
    if (o->f) {
        if (t < 256) fputc(t, o->f);
        else fprintf(o->f, "<|%ld|>", (long)t);
        fflush(o->f);
    } else if (o->differ == (size_t)-1) {
        o->tokens[o->n++] = t;
    } else {
        o->differ += o->tokens[o->n++] != t;
    }
    return 0;
}

int main(int argc, char **argv) {
    blas_reexec(argv);
    const char *ck_path = NULL, *model_name = NULL, *init = NULL, *prompt = NULL;
    tsr_generate_options go = {{0.0f, 0}, 0, 1, 0};
    int bench = 0;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end;
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(opt, "--no-cache")) {
            go.no_cache = 1;
            continue;
        } else if (!strcmp(opt, "--bench")) {
            bench = 1;
            continue;
        } else if (!v || strncmp(opt, "--", 2)) {
            fprintf(stderr, "tsr-generate: %s %s\n", opt, strncmp(opt, "--", 2) ? "is not an option" : "needs a value");
            usage(stderr);
            return 2;
        }
        i++;
        errno = 0;
        if (!strcmp(opt, "--checkpoint")) ck_path = v;
        else if (!strcmp(opt, "--model")) model_name = v;
        else if (!strcmp(opt, "--init")) init = v;
        else if (!strcmp(opt, "--prompt")) prompt = v;
        else if (!strcmp(opt, "--max-tokens")) {
            unsigned long long n = strtoull(v, &end, 10);
            if (end == v || *end || *v == '-' || errno || !n || n > 1000000)
                return bad_option(opt, v, "a count of 1 to 1000000");
            go.max_tokens = (size_t)n;
        } else if (!strcmp(opt, "--temperature")) {
            double t = strtod(v, &end);
            if (end == v || *end || !(t >= 0 && t <= 1000)) return bad_option(opt, v, "a temperature of 0 to 1000");
            go.sampling.temperature = (float)t;
        } else if (!strcmp(opt, "--top-k")) {
            unsigned long long k = strtoull(v, &end, 10);
            if (end == v || *end || *v == '-' || errno || k > (1u << 24))
                return bad_option(opt, v, "a count of 0 (all) to 16777216");
            go.sampling.top_k = (size_t)k;
        } else if (!strcmp(opt, "--seed")) {
            unsigned long long s = strtoull(v, &end, 10);
            if (end == v || *end || *v == '-' || errno) return bad_option(opt, v, "an unsigned 64-bit seed");
            go.seed = s;
        } else {
            fprintf(stderr, "tsr-generate: unknown option %s\n", opt);
            usage(stderr);
            return 2;
        }
    }
    const char *missing = !ck_path == !model_name ? "exactly one of --checkpoint and --model"
                          : init && !model_name    ? "--model with --init"
                          : !prompt                ? "--prompt"
                          : !go.max_tokens         ? "--max-tokens"
                                                   : NULL;
    if (missing) {
        fprintf(stderr, "tsr-generate: needs %s\n", missing);
        usage(stderr);
        return 2;
    }
    size_t n = strlen(prompt);
    if (!n) {
        fprintf(stderr, "tsr-generate: option --prompt: empty; the model needs at least one byte to start from\n");
        return 2;
    }
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC; /* host code only */
    co.log_level = TSR_LOG_OFF;
    tsr_context *ctx;
    if (tsr_context_create(&ctx, &co) != TSR_OK) {
        fprintf(stderr, "tsr-generate: cannot create a context\n");
        return 1;
    }
    tsr_checkpoint *ck = NULL;
    tsr_model *model = NULL;
    const float *params = NULL;
    float *own = NULL;
    tsr_generator *g = NULL;
    int32_t *ids = malloc(n * sizeof *ids);
    output out = {NULL, NULL, 0, 0};
    int rc = 1;
    const char *what = ck_path ? "option --checkpoint" : init ? "option --init" : "option --model";
    tsr_status s = ids ? TSR_OK : TSR_ERR_NO_MEMORY;
    if (s == TSR_OK && ck_path) s = load_checkpoint(ctx, ck_path, &ck, &model, &params);
    else if (s == TSR_OK) s = load_named(ctx, model_name, init, go.seed, &model, &own), params = own;
    if (s == TSR_OK) {
        what = "generator";
        s = tsr_generator_create(ctx, model, params, tsr_model_param_count(model), &g);
    }
    if (s != TSR_OK) goto fail;
    for (size_t i = 0; i < n; i++) ids[i] = (unsigned char)prompt[i];
    if (go.sampling.top_k > tsr_generator_vocab(g)) {
        fprintf(stderr, "tsr-generate: option --top-k: %zu is more than the vocabulary of %zu\n", go.sampling.top_k,
                tsr_generator_vocab(g));
        rc = 2;
        goto done;
    }
    what = "option --prompt";
    if (!bench) {
        out.f = stdout;
        if ((s = tsr_generate(g, ids, n, &go, put_token, &out)) != TSR_OK) goto fail;
        rc = 0;
        goto done;
    }
    /* --bench: the cached run records its tokens, the uncached one compares */
    if (!(out.tokens = malloc(go.max_tokens * sizeof *out.tokens))) {
        s = tool_fail(TSR_ERR_NO_MEMORY, "%zu tokens", go.max_tokens);
        goto fail;
    }
    double secs[2];
    for (int nc = 0; nc < 2; nc++) {
        go.no_cache = nc;
        out.n = 0, out.differ = nc ? 0 : (size_t)-1;
        double t0 = now_seconds();
        if ((s = tsr_generate(g, ids, n, &go, put_token, &out)) != TSR_OK) goto fail;
        secs[nc] = now_seconds() - t0;
    }
    printf("{\"model\":\"%s\",\"params\":%zu,\"context\":%zu,\"prompt_tokens\":%zu,\"tokens\":%zu,"
           "\"cached_tokens_per_s\":%.2f,\"uncached_tokens_per_s\":%.2f,\"speedup\":%.2f,\"same_tokens\":%s}\n",
           ck_path ? ck_path : model_name, tsr_model_param_count(model), tsr_generator_context(g), n,
           go.max_tokens, (double)go.max_tokens / secs[0], (double)go.max_tokens / secs[1], secs[1] / secs[0],
           out.differ ? "false" : "true");
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "tsr-generate: %s: %s (%s)\n", what, *tool_error ? tool_error : tsr_context_last_error(ctx),
            tsr_status_str(s));
done:
    free(out.tokens);
    free(ids);
    tsr_generator_free(g);
    free(own);
    tsr_model_free(model);
    tsr_checkpoint_free(ctx, ck);
    tsr_context_free(ctx);
    return rc;
}
