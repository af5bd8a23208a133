/* GPT-2-class models (Radford et al. 2019; llm.c's train_gpt2.c, nanoGPT's model.py) written
 * as a layer spec: token and position embeddings, pre-norm blocks of ten layers
 *   layernorm, linear:3C, attention:H, linear:C, add (ln_1 -> attn -> residual)
 *   layernorm, linear:4C, gelu, linear:C, add        (ln_2 -> mlp  -> residual)
 * then ln_f and the head tied to the token embedding. The two residual projections start at
 * N(0, 0.02 / sqrt(2 x blocks)) as GPT-2's. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static const struct {
    const char *name;
    tsr_gpt_config c;
} gpt_presets[] = {
    {"gpt2", {12, 12, 768, 1024, 50257}},
    {"gpt2-medium", {24, 16, 1024, 1024, 50257}},
    {"gpt2-large", {36, 20, 1280, 1024, 50257}},
    {"gpt2-xl", {48, 25, 1600, 1024, 50257}},
    {"gpt3", {96, 96, 12288, 2048, 50257}},
    {"gpt-mini", {4, 4, 128, 256, 256}},
};

/* "key=value" of the gpt(...) form; 0 when it is not there. */
static int key_value(const char *s, const char *key, size_t *out) {
    size_t n = strlen(key);
    for (const char *p = s; (p = strstr(p, key)); p += n) {
        if ((p > s && p[-1] != '(' && p[-1] != ',') || p[n] != '=') continue;
        char *end;
        unsigned long long v = strtoull(p + n + 1, &end, 10);
        if (end == p + n + 1 || (*end != ',' && *end != ')')) return -1;
        *out = (size_t)v;
        return 1;
    }
    return 0;
}

/* The blocks of a model laid out as tsr_gpt_spec writes a GPT (embed, posembed, blocks of ten,
 * layernorm, lmhead:0), else 0. */
size_t tsr_model_gpt_blocks(const tsr_model *m) {
    if (!m) return 0;
    static const tsr_layer_kind block[10] = {
        TSR_LAYER_LAYERNORM, TSR_LAYER_LINEAR, TSR_LAYER_ATTENTION, TSR_LAYER_LINEAR, TSR_LAYER_ADD,
        TSR_LAYER_LAYERNORM, TSR_LAYER_LINEAR, TSR_LAYER_GELU,      TSR_LAYER_LINEAR, TSR_LAYER_ADD};
    if (m->count < 14 || (m->count - 4) % 10 || m->layers[0].kind != TSR_LAYER_EMBED ||
        m->layers[1].kind != TSR_LAYER_POSEMBED || m->layers[m->count - 2].kind != TSR_LAYER_LAYERNORM ||
        m->layers[m->count - 1].kind != TSR_LAYER_LMHEAD || m->layers[m->count - 1].tied != 1)
        return 0;
    size_t blocks = (m->count - 4) / 10;
    for (size_t b = 0; b < blocks; b++)
        for (size_t j = 0; j < 10; j++)
            if (m->layers[2 + 10 * b + j].kind != block[j]) return 0;
    return blocks;
}

tsr_status tsr_model_gpt_config(const tsr_model *m, tsr_gpt_config *out) {
    size_t blocks = tsr_model_gpt_blocks(m);
    if (!blocks || !out) return TSR_ERR_NOT_FOUND;
    out->layers = blocks;
    out->heads = m->layers[4].heads;
    out->channels = m->layers[0].units;
    out->context = m->layers[1].vocab;
    out->vocab = m->layers[0].vocab;
    return TSR_OK;
}

size_t tsr_gpt_block_activation_floats(const tsr_gpt_config *c, size_t tokens) {
    return c ? tokens * (18 * c->channels + 4) : 0;
}

size_t tsr_gpt_block_activation_bytes(const tsr_gpt_config *c, size_t tokens, tsr_precision p) {
    if (!c) return 0;
    if (p != TSR_PRECISION_BF16 && p != TSR_PRECISION_FP16) return 4 * tsr_gpt_block_activation_floats(c, tokens);
    size_t T = tokens, C = c->channels;
    return 2 * 16 * C * T + 4 * (2 * C * T + 4 * T);
}

int tsr_gpt_is_name(const char *name) {
    if (!name) return 0;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(gpt_presets); i++)
        if (!strcmp(name, gpt_presets[i].name)) return 1;
    return !strncmp(name, "gpt(", 4);
}

tsr_status tsr_gpt_config_parse(tsr_context *ctx, const char *name, tsr_gpt_config *out) {
    if (!name || !out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_gpt_config_parse: NULL argument");
    for (size_t i = 0; i < TSR_ARRAY_SIZE(gpt_presets); i++)
        if (!strcmp(name, gpt_presets[i].name)) {
            *out = gpt_presets[i].c;
            return TSR_OK;
        }
    if (strncmp(name, "gpt(", 4))
        return tsr_error(ctx, TSR_ERR_NOT_FOUND,
                         "'%.40s' is not a GPT (gpt2, gpt2-medium, gpt2-large, gpt2-xl, gpt3, gpt-mini or "
                         "gpt(layers=L,heads=H,channels=C[,context=T][,vocab=V]))",
                         name);
    const char *form = "gpt(layers=L,heads=H,channels=C[,context=T][,vocab=V])";
    size_t len = strlen(name);
    if (name[len - 1] != ')') return tsr_error(ctx, TSR_ERR_PARSE, "'%.60s': expected %s", name, form);
    tsr_gpt_config c = {0, 0, 0, 1024, 50257};
    int got[5] = {key_value(name, "layers", &c.layers), key_value(name, "heads", &c.heads),
                  key_value(name, "channels", &c.channels), key_value(name, "context", &c.context),
                  key_value(name, "vocab", &c.vocab)};
    for (int k = 0; k < 5; k++)
        if (got[k] < 0 || (k < 3 && !got[k]))
            return tsr_error(ctx, TSR_ERR_PARSE, "'%.60s': expected %s", name, form);
    *out = c;
    return tsr_gpt_config_check(ctx, out);
}

tsr_status tsr_gpt_config_check(tsr_context *ctx, const tsr_gpt_config *c) {
    if (!c) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_gpt_config_check: NULL config");
    if (!c->layers || c->layers > 4096)
        return tsr_error(ctx, TSR_ERR_SHAPE, "GPT with %zu blocks: 1 to 4096", c->layers);
    if (!c->heads || !c->channels || c->channels % c->heads || c->channels > 65536)
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "GPT with %zu channels and %zu heads: channels (at most 65536) must be a multiple "
                         "of the heads",
                         c->channels, c->heads);
    if (!c->context || c->context > 65536)
        return tsr_error(ctx, TSR_ERR_SHAPE, "GPT context of %zu tokens: 1 to 65536", c->context);
    if (c->vocab < 2 || c->vocab > ((size_t)1 << 24))
        return tsr_error(ctx, TSR_ERR_SHAPE, "GPT vocabulary of %zu: 2 to 16777216", c->vocab);
    return TSR_OK;
}

void tsr_spec_append(char *buf, size_t size, size_t *len, const char *fmt, ...) {
    char tmp[200];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n <= 0) return;
    if (buf && *len < size) tsr_strlcpy(buf + *len, tmp, size - *len);
    *len += (size_t)n;
}

size_t tsr_gpt_spec(const tsr_gpt_config *c, char *buf, size_t size) {
    size_t C = c->channels, len = 0;
    double proj_std = 0.02 / sqrt(2.0 * (double)c->layers);
    if (buf && size) buf[0] = 0;
    tsr_spec_append(buf, size, &len, "embed:%zu,posembed:%zu", C, c->context);
    for (size_t b = 0; b < c->layers; b++) {
        size_t x = 1 + 10 * b; /* the block's input: layer x's output */
        tsr_spec_append(buf, size, &len, ",layernorm,linear:%zu,attention:%zu,linear:%zu/std%.6g,add:%zu", 3 * C, c->heads,
            C, proj_std, x);
        tsr_spec_append(buf, size, &len, ",layernorm,linear:%zu,gelu,linear:%zu/std%.6g,add:%zu", 4 * C, C, proj_std, x + 5);
    }
    tsr_spec_append(buf, size, &len, ",layernorm,lmhead:0");
    return len;
}

char *tsr_gpt_spec_for(tsr_context *ctx, const char *name, const tsr_model_input_desc *d) {
    tsr_gpt_config c;
    if (tsr_gpt_config_parse(ctx, name, &c) != TSR_OK) return NULL;
    if (d->dtype != TSR_DTYPE_I32 || d->rank != 1 || d->vocab != c.vocab || d->classes != c.vocab ||
        d->dims[0] > c.context) {
        tsr_error(ctx, TSR_ERR_SHAPE,
                  "%s reads 1 to %zu int32 token ids below %zu and predicts %zu classes; the input given "
                  "is %s of rank %zu (%zu values), vocabulary %zu, %zu classes",
                  name, c.context, c.vocab, c.vocab, d->dtype == TSR_DTYPE_I32 ? "token ids" : "floats",
                  d->rank, d->dims[0], d->vocab, d->classes);
        return NULL;
    }
    size_t n = tsr_gpt_spec(&c, NULL, 0) + 1;
    char *spec = tsr_malloc(ctx, n);
    if (!spec) tsr_error(ctx, TSR_ERR_NO_MEMORY, "GPT spec");
    else tsr_gpt_spec(&c, spec, n);
    return spec;
}

tsr_status tsr_model_create_gpt(tsr_context *ctx, const tsr_gpt_config *c, size_t tokens, tsr_model **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_create_gpt: NULL output");
    *out = NULL;
    TSR_TRY(tsr_gpt_config_check(ctx, c));
    if (!tokens || tokens > c->context)
        return tsr_error(ctx, TSR_ERR_SHAPE, "a GPT of context %zu reads 1 to %zu tokens, not %zu", c->context,
                         c->context, tokens);
    size_t n = tsr_gpt_spec(c, NULL, 0) + 1;
    char *spec = tsr_malloc(ctx, n);
    if (!spec) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "GPT spec");
    tsr_gpt_spec(c, spec, n);
    tsr_model_input_desc d = {TSR_DTYPE_I32, 1, {tokens, 0, 0}, c->vocab, c->vocab};
    tsr_status s = tsr_model_parse_desc(ctx, spec, &d, out);
    tsr_free(ctx, spec);
    return s;
}
