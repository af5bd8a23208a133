/* Models: builder, spec parser (each layer kind parses and prints itself through the registry
 * of lib/layers/), canonical spec, inputs by tensor id, per-layer costs, named parameter
 * tensors and the summary. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

/* Sizes past this are certainly typos, and keep every product far from overflow. */
#define MAX_DIM TSR_MODEL_MAX_DIM

static const struct {
    const char *name, *spec;
} presets[] = {
    {"mlp", "dense:256,relu,dense:128,relu,dense:100,relu,dense:10"},
    {"cnn", "conv5x5:32,relu,pool2,conv5x5:64,relu,pool2,dense:1024,relu,dense:10"},
};

const char *tsr_model_preset(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(presets); i++)
        if (!strcmp(name, presets[i].name)) return presets[i].spec;
    return NULL;
}

tsr_status tsr_model_create_desc(tsr_context *ctx, const tsr_model_input_desc *d, tsr_model **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_create: NULL output");
    *out = NULL;
    if (!d) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_create: NULL input");
    if (d->dtype != TSR_DTYPE_F32 && d->dtype != TSR_DTYPE_I32)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "model input type %d is not float or int32", (int)d->dtype);
    if (d->rank < 1 || d->rank > 3)
        return tsr_error(ctx, TSR_ERR_SHAPE, "model input rank %zu: 1 to 3 dimensions", d->rank);
    size_t dims[3] = {1, 1, 1}, total = 1;
    for (size_t k = 0; k < d->rank; k++) {
        if (!d->dims[k] || d->dims[k] > MAX_DIM || (total *= d->dims[k]) > MAX_DIM)
            return tsr_error(ctx, TSR_ERR_SHAPE,
                             "model input dimension %zu of %zu is %zu: each and their product must be 1 "
                             "to %zu",
                             k, d->rank, d->dims[k], MAX_DIM);
        dims[k] = d->dims[k];
    }
    if (!d->classes || d->classes > MAX_DIM)
        return tsr_error(ctx, TSR_ERR_SHAPE, "model classes %zu: 1 to %zu", d->classes, MAX_DIM);
    if (d->dtype == TSR_DTYPE_I32 && (!d->vocab || d->vocab > ((size_t)1 << 31)))
        return tsr_error(ctx, TSR_ERR_SHAPE, "token ids need a vocabulary of 1 to 2^31, got %zu", d->vocab);
    tsr_model *m = tsr_calloc(ctx, 1, sizeof *m);
    if (!m) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "model");
    m->ctx = ctx;
    m->desc = *d;
    for (size_t k = d->rank; k < 3; k++) m->desc.dims[k] = 0;
    if (d->dtype == TSR_DTYPE_F32) m->desc.vocab = 0;
    m->input.channels = dims[0], m->input.height = dims[1], m->input.width = dims[2];
    m->input.classes = d->classes;
    *out = m;
    return TSR_OK;
}

tsr_status tsr_model_create(tsr_context *ctx, tsr_model_input input, tsr_model **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_create: NULL output");
    *out = NULL;
    if (!input.channels || !input.height || !input.width || !input.classes ||
        input.channels > MAX_DIM || input.height > MAX_DIM || input.width > MAX_DIM ||
        input.classes > MAX_DIM ||
        input.channels * input.height > MAX_DIM || input.channels * input.height * input.width > MAX_DIM)
        return tsr_error(ctx, TSR_ERR_SHAPE, "model input %zux%zux%zu with %zu classes is not valid",
                         input.channels, input.height, input.width, input.classes);
    tsr_model_input_desc d = {TSR_DTYPE_F32, 3, {input.channels, input.height, input.width}, 0, input.classes};
    return tsr_model_create_desc(ctx, &d, out);
}

void tsr_model_free(tsr_model *m) {
    if (!m) return;
    tsr_free(m->ctx, m->layers);
    tsr_free(m->ctx, m->spec);
    tsr_free(m->ctx, m);
}

/* Tensor ids: 0 is the model input, i + 1 the output of layer i. */
static tsr_tshape tensor_shape(const tsr_model *m, size_t id) {
    tsr_tshape s = {0, 0, 0, 0, 0};
    if (!id) {
        s.c = m->input.channels, s.h = m->input.height, s.w = m->input.width;
        s.tokens = m->desc.dtype == TSR_DTYPE_I32;
        s.vocab = m->desc.vocab;
    } else {
        const tsr_layer *l = &m->layers[id - 1];
        s.c = l->out_c, s.h = l->out_h, s.w = l->out_w;
    }
    return s;
}

static tsr_layer config(tsr_layer_kind kind) {
    tsr_layer l;
    memset(&l, 0, sizeof l);
    l.kind = kind;
    l.ops = tsr_layer_ops_of(kind);
    return l;
}

/* Labels per sample: one, or one per position when a token model's last output is
 * [T, classes] (a language model's logits). */
/* The vocabulary-parallel embedding the last layer (a head) is tied to, or NULL: its logits
 * are [T, the slice's rows] (lib/layers/vocab_parallel.c). */
static const tsr_layer *vocab_slice_of(const tsr_model *m) {
    const tsr_layer *h = m->count ? &m->layers[m->count - 1] : NULL;
    const tsr_layer *e = h && h->ops->ties_embedding && h->tied ? &m->layers[h->tied - 1] : NULL;
    return e && e->kind == TSR_LAYER_VPEMBED ? e : NULL;
}

static size_t positions_of(const tsr_model *m) {
    tsr_tshape out = tensor_shape(m, m->count);
    size_t classes = m->input.classes;
    if (vocab_slice_of(m)) return out.c;
    if (m->desc.dtype == TSR_DTYPE_I32 && out.c > 1 && out.h * out.w == classes &&
        tsr_tshape_size(out) != classes)
        return out.c;
    return 1;
}

/* The loss layer over the last layer's output (logits) and the labels. */
static void set_loss(tsr_model *m) {
    const tsr_layer *slice = vocab_slice_of(m);
    tsr_layer loss = config(slice ? TSR_LAYER_VPXENT : TSR_LAYER_SOFTMAX_XENT);
    if (slice) loss.row0 = slice->row0;
    m->positions = positions_of(m);
    tsr_tshape in[2] = {tensor_shape(m, m->count), {m->positions, 1, 1, 0, 0}};
    loss.ninputs = 2;
    loss.inputs[0] = m->count;
    loss.in_c = in[0].c, loss.in_h = in[0].h, loss.in_w = in[0].w;
    (void)loss.ops->shape(m->ctx, &loss, in); /* cannot fail */
    m->loss = loss;
}

/* Appends the layer configured in `cfg` (kind, ops, its arguments; inputs[1..] for kinds with
 * several inputs): input 0 is the previous output; the kind checks the shapes and fills the
 * output shape. */
static tsr_status add_layer(tsr_model *m, const tsr_layer *cfg) {
    if (m->count == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 8;
        tsr_layer *n = tsr_calloc(m->ctx, cap, sizeof *n);
        if (!n) return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "model layers");
        if (m->count) memcpy(n, m->layers, m->count * sizeof *n);
        tsr_free(m->ctx, m->layers);
        m->layers = n;
        m->cap = cap;
    }
    tsr_layer l = *cfg;
    if (!l.ninputs) l.ninputs = 1;
    l.inputs[0] = m->count;
    tsr_tshape in[TSR_LAYER_MAX_INPUTS];
    for (size_t k = 0; k < l.ninputs; k++) {
        if (l.inputs[k] > m->count) {
            char tok[64];
            tsr_layer_token(&l, tok, sizeof tok);
            return tsr_error(m->ctx, TSR_ERR_SHAPE,
                             "layer %zu (%s) reads layer %zu's output, which is not before it "
                             "(layers 0 to %zu%s, or 'in')",
                             m->count, tok, l.inputs[k] - 1, m->count ? m->count - 1 : 0,
                             m->count ? "" : " do not exist yet");
        }
        in[k] = tensor_shape(m, l.inputs[k]);
    }
    for (size_t k = 0; k < l.ninputs; k++)
        if (l.inputs[k] == 0 && m->desc.dtype == TSR_DTYPE_I32 && !(k == 0 && l.ops->token_input)) {
            char tok[64];
            tsr_layer_token(&l, tok, sizeof tok);
            return tsr_error(m->ctx, TSR_ERR_SHAPE,
                             "layer %zu (%s) needs float input, but the model input is int32 token ids "
                             "(a token kind must read them first)",
                             m->count, tok);
        }
    if (l.ops->ties_embedding) {
        const tsr_layer *e = l.tied && l.tied <= m->count ? &m->layers[l.tied - 1] : NULL;
        if (!e || (e->kind != TSR_LAYER_EMBED && e->kind != TSR_LAYER_VPEMBED)) {
            char tok[64];
            tsr_layer_token(&l, tok, sizeof tok);
            return tsr_error(m->ctx, TSR_ERR_SHAPE,
                             "layer %zu (%s) is tied to layer %zu, which is not an embed layer before it",
                             m->count, tok, l.tied - 1);
        }
        l.vocab = e->vocab, l.units = e->units;
    }
    l.in_c = in[0].c, l.in_h = in[0].h, l.in_w = in[0].w;
    l.out_c = in[0].c, l.out_h = in[0].h, l.out_w = in[0].w;
    if (l.ops->shape) TSR_TRY(l.ops->shape(m->ctx, &l, in));
    m->layers[m->count++] = l;
    set_loss(m);
    tsr_free(m->ctx, m->spec);
    m->spec = NULL;
    return TSR_OK;
}


tsr_status tsr_model_add_dense(tsr_model *m, size_t units) {
    if (!m) return TSR_ERR_INVALID_ARG;
    tsr_layer l = config(TSR_LAYER_DENSE);
    l.units = units;
    return add_layer(m, &l);
}

tsr_status tsr_model_add_conv2d(tsr_model *m, size_t filters, size_t kh, size_t kw, size_t stride,
                                size_t pad) {
    if (!m) return TSR_ERR_INVALID_ARG;
    tsr_layer l = config(TSR_LAYER_CONV2D);
    l.units = filters, l.kh = kh, l.kw = kw, l.stride = stride, l.pad_h = l.pad_w = pad;
    return add_layer(m, &l);
}

tsr_status tsr_model_add_maxpool(tsr_model *m, size_t size, size_t stride) {
    if (!m) return TSR_ERR_INVALID_ARG;
    tsr_layer l = config(TSR_LAYER_MAXPOOL);
    l.kh = l.kw = size, l.stride = stride;
    return add_layer(m, &l);
}

static tsr_status add_simple(tsr_model *m, tsr_layer_kind kind) {
    if (!m) return TSR_ERR_INVALID_ARG;
    tsr_layer l = config(kind);
    return add_layer(m, &l);
}

tsr_status tsr_model_add_relu(tsr_model *m) { return add_simple(m, TSR_LAYER_RELU); }
tsr_status tsr_model_add_flatten(tsr_model *m) { return add_simple(m, TSR_LAYER_FLATTEN); }

tsr_status tsr_model_add_dropout(tsr_model *m, float p) {
    if (!m) return TSR_ERR_INVALID_ARG;
    tsr_layer l = config(TSR_LAYER_DROPOUT);
    l.p = p;
    return add_layer(m, &l);
}

tsr_status tsr_model_add_residual(tsr_model *m, size_t from) {
    if (!m) return TSR_ERR_INVALID_ARG;
    tsr_layer l = config(TSR_LAYER_ADD);
    l.ninputs = 2;
    l.inputs[1] = from == TSR_MODEL_INPUT_TENSOR ? 0 : from + 1;
    if (from != TSR_MODEL_INPUT_TENSOR && from >= m->count)
        return tsr_error(m->ctx, TSR_ERR_SHAPE,
                         "layer %zu (add:%zu) reads layer %zu's output, which is not before it (layers "
                         "0 to %zu, or the input)",
                         m->count, from, from, m->count ? m->count - 1 : 0);
    return add_layer(m, &l);
}

tsr_status tsr_model_check(const tsr_model *m) {
    if (!m) return TSR_ERR_INVALID_ARG;
    if (!m->count) return tsr_error(m->ctx, TSR_ERR_SHAPE, "model has no layers");
    const tsr_layer *l = &m->layers[m->count - 1];
    size_t out = tsr_layer_out_size(l);
    if (m->positions > 1 || vocab_slice_of(m)) return TSR_OK; /* [T, classes or a slice]: set_loss matched it */
    if (out != m->input.classes)
        return tsr_error(m->ctx, TSR_ERR_SHAPE,
                         "last layer gives %zu outputs (%zux%zux%zu) but the model has %zu classes",
                         out, l->out_c, l->out_h, l->out_w, m->input.classes);
    return TSR_OK;
}

/* ---- canonical spec ---- */

const char *tsr_model_spec(const tsr_model *cm) {
    if (!cm) return NULL;
    tsr_model *m = (tsr_model *)cm; /* the cached string is not part of the model's value */
    if (m->spec) return m->spec;
    size_t cap = 64 * m->count + 1;
    char *s = tsr_malloc(m->ctx, cap);
    if (!s) return "";
    size_t len = 0;
    s[0] = 0;
    for (size_t i = 0; i < m->count; i++) {
        char tok[64];
        tsr_layer_token(&m->layers[i], tok, sizeof tok);
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? "," : "", tok);
    }
    /* a GPT exactly as tsr_gpt_spec writes it: its gpt(...) form, which parses back to it */
    tsr_gpt_config c;
    if (tsr_model_gpt_config(m, &c) == TSR_OK) {
        size_t n = tsr_gpt_spec(&c, NULL, 0) + 1;
        char *g = n == len + 1 ? tsr_malloc(m->ctx, n) : NULL;
        if (g) tsr_gpt_spec(&c, g, n);
        if (g && !strcmp(g, s))
            snprintf(s, cap, "gpt(layers=%zu,heads=%zu,channels=%zu,context=%zu,vocab=%zu)", c.layers, c.heads,
                     c.channels, c.context, c.vocab);
        tsr_free(m->ctx, g);
    }
    m->spec = s;
    return s;
}

/* ---- parser ---- */

tsr_status tsr_spec_error(tsr_spec_cursor *p, size_t pos, tsr_status st, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return tsr_error(p->ctx, st, "model spec at %zu: %s", pos + 1, detail);
}

void tsr_spec_skip_ws(tsr_spec_cursor *p) {
    while (p->s[p->pos] && isspace((unsigned char)p->s[p->pos])) p->pos++;
}

int tsr_spec_count(tsr_spec_cursor *p, size_t *out) {
    size_t v = 0, start = p->pos;
    while (isdigit((unsigned char)p->s[p->pos])) {
        v = v * 10 + (size_t)(p->s[p->pos] - '0');
        if (v > MAX_DIM) return -1;
        p->pos++;
    }
    if (p->pos == start) return -1;
    *out = v;
    return 0;
}

int tsr_spec_match_sized(const char *tok, size_t n, const char *name, int two, size_t *a, size_t *b) {
    size_t ln = strlen(name);
    if (n <= ln || strncmp(tok, name, ln)) return 0;
    size_t i = ln, v = 0, d = 0;
    while (i < n && isdigit((unsigned char)tok[i]) && d < 5) v = v * 10 + (size_t)(tok[i++] - '0'), d++;
    if (!d) return 0;
    *a = *b = v;
    if (i == n) return 1;
    if (!two || tok[i] != 'x') return 0;
    i++;
    v = 0;
    d = 0;
    while (i < n && isdigit((unsigned char)tok[i]) && d < 5) v = v * 10 + (size_t)(tok[i++] - '0'), d++;
    if (!d || i != n) return 0;
    *b = v;
    return 1;
}

tsr_status tsr_spec_no_arg(tsr_spec_cursor *p, const char *name, size_t n) {
    if (p->s[p->pos] != ':') return TSR_OK;
    return tsr_spec_error(p, p->pos, TSR_ERR_PARSE, "%.*s takes no ':' argument", (int)n, name);
}

/* Re-labels a builder error with the position of the token that caused it. */
static tsr_status located(tsr_spec_cursor *p, size_t pos, tsr_status st) {
    char detail[1024];
    tsr_strlcpy(detail, tsr_context_last_error(p->ctx), sizeof detail);
    return tsr_spec_error(p, pos, st, "%s", detail);
}

static tsr_status parse_spec(tsr_context *ctx, const char *spec, tsr_model *m, tsr_model **out);

/* One layer token: a name the registry knows, then its kind's ':' argument and '/' options. */
static tsr_status parse_layer(tsr_spec_cursor *p, tsr_model *m) {
    tsr_spec_skip_ws(p);
    size_t start = p->pos, n = 0;
    const char *tok = p->s + start;
    while (tok[n] && tok[n] != ',' && tok[n] != ':' && tok[n] != '/' && !isspace((unsigned char)tok[n]))
        n++;
    if (!n) {
        if (tok[0]) return tsr_spec_error(p, start, TSR_ERR_PARSE, "expected a layer before '%c'", tok[0]);
        return tsr_spec_error(p, start, TSR_ERR_PARSE, "expected a layer");
    }
    p->pos += n;
    tsr_layer l;
    memset(&l, 0, sizeof l);
    const tsr_layer_ops *ops = tsr_layer_ops_match(tok, n, &l);
    if (!ops)
        return tsr_spec_error(p, start, TSR_ERR_PARSE, "unknown layer '%.*s'", (int)(n > 40 ? 40 : n), tok);
    l.kind = ops->kind;
    l.ops = ops;
    if (ops->parse_arg) TSR_TRY(ops->parse_arg(p, tok, n, start, &l));
    else TSR_TRY(tsr_spec_no_arg(p, tok, n));
    tsr_spec_skip_ws(p);
    for (; p->s[p->pos] == '/'; tsr_spec_skip_ws(p)) {
        p->pos++;
        tsr_spec_skip_ws(p);
        if (!ops->parse_option)
            return tsr_spec_error(p, p->pos, TSR_ERR_PARSE, "%.*s takes no '/' options", (int)n, tok);
        TSR_TRY(ops->parse_option(p, tok, n, &l));
    }
    tsr_spec_skip_ws(p);
    if (p->s[p->pos] && p->s[p->pos] != ',')
        return tsr_spec_error(p, p->pos, TSR_ERR_PARSE, "unexpected '%c' after %.*s", p->s[p->pos], (int)n,
                              tok);
    tsr_status st = add_layer(m, &l);
    return st == TSR_OK ? TSR_OK : located(p, start, st);
}

/* Parses `spec` into the empty model m (freed on error). */
static tsr_status parse_into(tsr_context *ctx, const char *spec, tsr_model *m, tsr_model **out) {
    const char *preset = tsr_model_preset(spec);
    char *gpt = NULL;
    if (tsr_gpt_is_name(spec) && !(gpt = tsr_gpt_spec_for(ctx, spec, &m->desc))) {
        tsr_model_free(m);
        return tsr_context_last_status(ctx);
    }
    tsr_status st = parse_spec(ctx, gpt ? gpt : preset ? preset : spec, m, out);
    tsr_free(ctx, gpt);
    return st;
}

static tsr_status parse_spec(tsr_context *ctx, const char *spec, tsr_model *m, tsr_model **out) {
    tsr_spec_cursor p = {ctx, spec, 0};
    tsr_status st = TSR_OK;
    tsr_spec_skip_ws(&p);
    if (!p.s[p.pos]) st = tsr_spec_error(&p, 0, TSR_ERR_PARSE, "empty model spec");
    while (st == TSR_OK) {
        st = parse_layer(&p, m);
        if (st != TSR_OK || !p.s[p.pos]) break;
        p.pos++; /* ',' */
        tsr_spec_skip_ws(&p);
        if (!p.s[p.pos]) st = tsr_spec_error(&p, p.pos, TSR_ERR_PARSE, "expected a layer after ','");
    }
    if (st == TSR_OK) st = tsr_model_check(m);
    if (st != TSR_OK) {
        tsr_model_free(m);
        return st;
    }
    *out = m;
    return TSR_OK;
}

tsr_status tsr_model_parse(tsr_context *ctx, const char *spec, tsr_model_input input,
                           tsr_model **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_parse: NULL output");
    *out = NULL;
    if (!spec) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_parse: NULL spec");
    tsr_model *m;
    TSR_TRY(tsr_model_create(ctx, input, &m));
    return parse_into(ctx, spec, m, out);
}

tsr_status tsr_model_parse_desc(tsr_context *ctx, const char *spec, const tsr_model_input_desc *input,
                                tsr_model **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_parse: NULL output");
    *out = NULL;
    if (!spec) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_parse: NULL spec");
    tsr_model *m;
    TSR_TRY(tsr_model_create_desc(ctx, input, &m));
    return parse_into(ctx, spec, m, out);
}

/* ---- inspection ---- */

tsr_model_input tsr_model_get_input(const tsr_model *m) {
    tsr_model_input z = {0, 0, 0, 0};
    return m ? m->input : z;
}

tsr_model_input_desc tsr_model_get_input_desc(const tsr_model *m) {
    tsr_model_input_desc z;
    memset(&z, 0, sizeof z);
    return m ? m->desc : z;
}

size_t tsr_model_layer_count(const tsr_model *m) { return m ? m->count : 0; }
size_t tsr_model_positions(const tsr_model *m) { return m && m->positions ? m->positions : 1; }

size_t tsr_model_param_count(const tsr_model *m) {
    size_t n = 0;
    for (size_t i = 0; m && i < m->count; i++) n += m->layers[i].weights + m->layers[i].biases;
    return n;
}

/* Parameter tensors in model order; offsets follow the flat layout (reverse layer order, each
 * layer's tensors in the order its kind lists them). */
size_t tsr_model_param_tensor_count(const tsr_model *m) {
    size_t n = 0;
    tsr_param_desc d[TSR_LAYER_MAX_PARAMS];
    for (size_t i = 0; m && i < m->count; i++)
        if (m->layers[i].ops->params) n += m->layers[i].ops->params(&m->layers[i], d);
    return n;
}

tsr_status tsr_model_param_tensor(const tsr_model *m, size_t index, tsr_param_info *info) {
    if (!m || !info) return TSR_ERR_INVALID_ARG;
    size_t seen = 0, after = 0; /* floats of the layers after layer i (they come first) */
    for (size_t i = 0; i < m->count; i++) after += m->layers[i].weights + m->layers[i].biases;
    for (size_t i = 0; i < m->count; i++) {
        const tsr_layer *l = &m->layers[i];
        after -= l->weights + l->biases;
        tsr_param_desc d[TSR_LAYER_MAX_PARAMS];
        size_t np = l->ops->params ? l->ops->params(l, d) : 0, off = after;
        for (size_t k = 0; k < np; off += d[k].count, k++, seen++) {
            if (seen != index) continue;
            memset(info, 0, sizeof *info);
            snprintf(info->name, sizeof info->name, "%zu.%s", i, d[k].name);
            info->layer = i;
            info->rank = d[k].rank;
            memcpy(info->shape, d[k].shape, sizeof info->shape);
            info->count = d[k].count;
            info->offset = off;
            return TSR_OK;
        }
    }
    return tsr_error(m->ctx, TSR_ERR_NOT_FOUND, "parameter tensor %zu does not exist (%zu tensors)", index,
                     seen);
}

tsr_status tsr_model_layer_info(const tsr_model *m, size_t index, size_t batch, tsr_layer_info *info) {
    if (!m || !info) return TSR_ERR_INVALID_ARG;
    if (index >= m->count)
        return tsr_error(m->ctx, TSR_ERR_NOT_FOUND, "layer %zu does not exist (%zu layers)", index,
                         m->count);
    const tsr_layer *l = &m->layers[index];
    memset(info, 0, sizeof *info);
    info->kind = l->kind;
    info->type = l->ops->type;
    tsr_layer_token(l, info->spec, sizeof info->spec);
    info->in_c = l->in_c, info->in_h = l->in_h, info->in_w = l->in_w;
    info->out_c = l->out_c, info->out_h = l->out_h, info->out_w = l->out_w;
    info->params = l->weights + l->biases;
    info->param_bytes = info->params * sizeof(float);
    uint64_t n = batch;
    l->ops->flops(l, n, &info->forward_flops, &info->backward_flops);
    /* the output and the state kept for backward (a view keeps nothing) */
    size_t state = l->ops->state ? l->ops->state(l) : 0;
    size_t act = l->ops->view ? 0 : (size_t)(n * (tsr_layer_out_size(l) + state) * sizeof(float));
    info->activation_bytes = act;
    return TSR_OK;
}

/* Appends formatted text to a growing string (the summary is built once, then copied). */
typedef struct sbuf {
    char *p;
    size_t len, size;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) TSR_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p ? b->p + (b->len < b->size ? b->len : b->size) : NULL,
                      b->len < b->size ? b->size - b->len : 0, fmt, ap);
    va_end(ap);
    if (n > 0) b->len += (size_t)n;
}

static void human(char *buf, size_t size, double v) {
    if (v >= 1e9) snprintf(buf, size, "%.2fG", v / 1e9);
    else if (v >= 1e6) snprintf(buf, size, "%.2fM", v / 1e6);
    else if (v >= 1e3) snprintf(buf, size, "%.1fk", v / 1e3);
    else snprintf(buf, size, "%.0f", v);
}

static void summary(const tsr_model *m, sbuf *b) {
    size_t nb = tsr_model_gpt_blocks(m);
    if (nb) /* its spec is ten layers a block: the shape says more */
        sb_printf(b, "Model: GPT, %zu blocks, %zu heads, %zu channels, context %zu, vocabulary %zu\n", nb,
                  m->layers[4].heads, m->layers[0].units, m->layers[1].vocab, m->layers[0].vocab);
    else
        sb_printf(b, "Model: %s\n", tsr_model_spec(m));
    if (m->desc.dtype == TSR_DTYPE_I32)
        sb_printf(b, "Input: %zu token ids below %zu, %zu classes\n", tsr_tshape_size(tensor_shape(m, 0)),
                  m->desc.vocab, m->input.classes);
    else
        sb_printf(b, "Input: %zux%zux%zu, %zu classes\n", m->input.channels, m->input.height,
                  m->input.width, m->input.classes);
    sb_printf(b, "%-7s %-16s %-14s %10s %10s %10s %12s\n", "#", "Layer", "Output", "Params",
              "FLOPs fwd", "FLOPs bwd", "Act bytes");
    uint64_t tf = 0, tb = 0;
    size_t ta = 0, blocks = tsr_model_gpt_blocks(m);
    for (size_t i = 0; i < m->count; i++) {
        tsr_layer_info in;
        tsr_model_layer_info(m, i, 1, &in);
        char shape[48], f[16], bw[16], a[16], idx[24];
        snprintf(idx, sizeof idx, "%zu", i);
        /* a GPT: one row per transformer block (layers 2 + 10b ..), its ten layers summed */
        if (blocks && i >= 2 && i < 2 + 10 * blocks) {
            for (size_t j = i + 1; j < i + 10; j++) {
                tsr_layer_info more;
                tsr_model_layer_info(m, j, 1, &more);
                in.params += more.params;
                in.forward_flops += more.forward_flops;
                in.backward_flops += more.backward_flops;
                in.activation_bytes += more.activation_bytes;
            }
            snprintf(idx, sizeof idx, "%zu-%zu", i, i + 9);
            snprintf(in.spec, sizeof in.spec, "block %zu", (i - 2) / 10);
            i += 9;
        }
        snprintf(shape, sizeof shape, "%zux%zux%zu", in.out_c, in.out_h, in.out_w);
        human(f, sizeof f, (double)in.forward_flops);
        human(bw, sizeof bw, (double)in.backward_flops);
        human(a, sizeof a, (double)in.activation_bytes);
        sb_printf(b, "%-7s %-16s %-14s %10zu %10s %10s %12s\n", idx, in.spec, shape, in.params, f, bw, a);
        tf += in.forward_flops;
        tb += in.backward_flops;
        ta += in.activation_bytes;
    }
    char f[16], bw[16], a[16], pb[16];
    size_t params = tsr_model_param_count(m);
    human(f, sizeof f, (double)tf);
    human(bw, sizeof bw, (double)tb);
    human(a, sizeof a, (double)ta);
    human(pb, sizeof pb, (double)params * 4);
    sb_printf(b, "Total: %zu parameters (%sB), per sample %s FLOPs forward, %s backward, %sB activations\n",
              params, pb, f, bw, a);
}

size_t tsr_model_summary_string(const tsr_model *m, char *buf, size_t size) {
    if (!m) return 0;
    sbuf b = {buf, 0, buf ? size : 0};
    if (buf && size) buf[0] = 0;
    summary(m, &b);
    return b.len;
}

tsr_status tsr_model_summary(const tsr_model *m, FILE *out) {
    if (!m || !out) return TSR_ERR_INVALID_ARG;
    size_t n = tsr_model_summary_string(m, NULL, 0);
    char *s = tsr_malloc(m->ctx, n + 1);
    if (!s) return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "model summary");
    tsr_model_summary_string(m, s, n + 1);
    int ok = fputs(s, out) >= 0;
    tsr_free(m->ctx, s);
    return ok ? TSR_OK : tsr_error(m->ctx, TSR_ERR_IO, "model summary: write failed");
}
