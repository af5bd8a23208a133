/* Sequential models: builder, spec parser, canonical spec, per-layer costs and summary. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/internal.h"
#include "lib/layers.h"

/* Sizes past this are certainly typos, and keep every product far from overflow. */
#define MAX_DIM ((size_t)1 << 24)

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

tsr_status tsr_model_create(tsr_context *ctx, tsr_model_input input, tsr_model **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_create: NULL output");
    *out = NULL;
    if (!input.channels || !input.height || !input.width || !input.classes ||
        input.channels > MAX_DIM || input.height > MAX_DIM || input.width > MAX_DIM ||
        input.classes > MAX_DIM ||
        input.channels * input.height > MAX_DIM || input.channels * input.height * input.width > MAX_DIM)
        return tsr_error(ctx, TSR_ERR_SHAPE, "model input %zux%zux%zu with %zu classes is not valid",
                         input.channels, input.height, input.width, input.classes);
    tsr_model *m = tsr_calloc(ctx, 1, sizeof *m);
    if (!m) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "model");
    m->ctx = ctx;
    m->input = input;
    *out = m;
    return TSR_OK;
}

void tsr_model_free(tsr_model *m) {
    if (!m) return;
    tsr_free(m->ctx, m->layers);
    tsr_free(m->ctx, m->spec);
    tsr_free(m->ctx, m);
}

/* Appends a layer whose input is the previous output; fills the input shape. */
static tsr_status push(tsr_model *m, tsr_layer **out) {
    if (m->count == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 8;
        tsr_layer *n = tsr_calloc(m->ctx, cap, sizeof *n);
        if (!n) return tsr_error(m->ctx, TSR_ERR_NO_MEMORY, "model layers");
        if (m->count) memcpy(n, m->layers, m->count * sizeof *n);
        tsr_free(m->ctx, m->layers);
        m->layers = n;
        m->cap = cap;
    }
    tsr_layer *l = &m->layers[m->count];
    memset(l, 0, sizeof *l);
    if (m->count) {
        const tsr_layer *p = &m->layers[m->count - 1];
        l->in_c = p->out_c;
        l->in_h = p->out_h;
        l->in_w = p->out_w;
    } else {
        l->in_c = m->input.channels;
        l->in_h = m->input.height;
        l->in_w = m->input.width;
    }
    l->out_c = l->in_c;
    l->out_h = l->in_h;
    l->out_w = l->in_w;
    *out = l;
    return TSR_OK;
}

static void commit(tsr_model *m) {
    m->count++;
    tsr_free(m->ctx, m->spec);
    m->spec = NULL;
}

tsr_status tsr_model_add_dense(tsr_model *m, size_t units) {
    if (!m) return TSR_ERR_INVALID_ARG;
    if (!units || units > MAX_DIM)
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "dense needs a positive unit count below %zu, got %zu",
                         MAX_DIM, units);
    tsr_layer *l;
    TSR_TRY(push(m, &l));
    size_t in = tsr_layer_in_size(l);
    if (in > SIZE_MAX / 8 / units)
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "dense:%zu on %zu inputs is too large", units, in);
    l->kind = TSR_LAYER_DENSE;
    l->units = units;
    l->out_c = units;
    l->out_h = l->out_w = 1;
    l->weights = units * in;
    l->biases = units;
    commit(m);
    return TSR_OK;
}

tsr_status tsr_model_add_conv2d(tsr_model *m, size_t filters, size_t kh, size_t kw, size_t stride,
                                size_t pad) {
    if (!m) return TSR_ERR_INVALID_ARG;
    if (!filters || filters > MAX_DIM)
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "conv needs a positive filter count, got %zu", filters);
    if (!kh || !kw || kh > 1024 || kw > 1024)
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "conv kernel %zux%zu is not valid", kh, kw);
    if (!stride || stride > 1024)
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "conv stride %zu is not valid", stride);
    tsr_layer *l;
    TSR_TRY(push(m, &l));
    size_t ph = pad == TSR_PAD_SAME ? (kh - 1) / 2 : pad;
    size_t pw = pad == TSR_PAD_SAME ? (kw - 1) / 2 : pad;
    if (ph >= kh || pw >= kw)
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "conv padding %zu must be smaller than the kernel %zux%zu",
                         pad, kh, kw);
    if (l->in_h + 2 * ph < kh || l->in_w + 2 * pw < kw)
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "conv kernel %zux%zu does not fit a %zux%zu input",
                         kh, kw, l->in_h, l->in_w);
    l->kind = TSR_LAYER_CONV2D;
    l->units = filters;
    l->kh = kh;
    l->kw = kw;
    l->stride = stride;
    l->pad_h = ph;
    l->pad_w = pw;
    l->out_c = filters;
    l->out_h = (l->in_h + 2 * ph - kh) / stride + 1;
    l->out_w = (l->in_w + 2 * pw - kw) / stride + 1;
    l->weights = filters * l->in_c * kh * kw;
    l->biases = filters;
    if (l->out_c * l->out_h * l->out_w > MAX_DIM || l->in_c * kh * kw > MAX_DIM)
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "conv output %zux%zux%zu is too large", l->out_c,
                         l->out_h, l->out_w);
    commit(m);
    return TSR_OK;
}

tsr_status tsr_model_add_maxpool(tsr_model *m, size_t size, size_t stride) {
    if (!m) return TSR_ERR_INVALID_ARG;
    if (!size || size > 1024) return tsr_error(m->ctx, TSR_ERR_SHAPE, "pool size %zu is not valid", size);
    if (!stride) stride = size;
    if (stride > 1024) return tsr_error(m->ctx, TSR_ERR_SHAPE, "pool stride %zu is not valid", stride);
    tsr_layer *l;
    TSR_TRY(push(m, &l));
    if (l->in_h < size || l->in_w < size)
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "pool%zu does not fit a %zux%zu input", size, l->in_h,
                         l->in_w);
    l->kind = TSR_LAYER_MAXPOOL;
    l->kh = l->kw = size;
    l->stride = stride;
    l->out_h = (l->in_h - size) / stride + 1;
    l->out_w = (l->in_w - size) / stride + 1;
    commit(m);
    return TSR_OK;
}

static tsr_status add_simple(tsr_model *m, tsr_layer_kind kind) {
    if (!m) return TSR_ERR_INVALID_ARG;
    tsr_layer *l;
    TSR_TRY(push(m, &l));
    l->kind = kind;
    if (kind == TSR_LAYER_FLATTEN) {
        l->out_c = tsr_layer_in_size(l);
        l->out_h = l->out_w = 1;
    }
    commit(m);
    return TSR_OK;
}

tsr_status tsr_model_add_relu(tsr_model *m) { return add_simple(m, TSR_LAYER_RELU); }
tsr_status tsr_model_add_flatten(tsr_model *m) { return add_simple(m, TSR_LAYER_FLATTEN); }

tsr_status tsr_model_add_dropout(tsr_model *m, float p) {
    if (!m) return TSR_ERR_INVALID_ARG;
    if (!(p >= 0.0f && p < 1.0f))
        return tsr_error(m->ctx, TSR_ERR_SHAPE, "dropout probability %g must be in [0, 1)", (double)p);
    TSR_TRY(add_simple(m, TSR_LAYER_DROPOUT));
    m->layers[m->count - 1].p = p;
    return TSR_OK;
}

tsr_status tsr_model_check(const tsr_model *m) {
    if (!m) return TSR_ERR_INVALID_ARG;
    if (!m->count) return tsr_error(m->ctx, TSR_ERR_SHAPE, "model has no layers");
    const tsr_layer *l = &m->layers[m->count - 1];
    size_t out = tsr_layer_out_size(l);
    if (out != m->input.classes)
        return tsr_error(m->ctx, TSR_ERR_SHAPE,
                         "last layer gives %zu outputs (%zux%zux%zu) but the model has %zu classes",
                         out, l->out_c, l->out_h, l->out_w, m->input.classes);
    return TSR_OK;
}

/* ---- canonical spec ---- */

static void layer_token(const tsr_layer *l, char *buf, size_t size) {
    int n = 0;
    switch (l->kind) {
    case TSR_LAYER_DENSE: snprintf(buf, size, "dense:%zu", l->units); return;
    case TSR_LAYER_CONV2D: {
        n = snprintf(buf, size, "conv%zux%zu:%zu", l->kh, l->kw, l->units);
        if (l->stride != 1 && n > 0 && (size_t)n < size)
            n += snprintf(buf + n, size - (size_t)n, "/s%zu", l->stride);
        if ((l->pad_h != (l->kh - 1) / 2 || l->pad_w != (l->kw - 1) / 2) && n > 0 &&
            (size_t)n < size)
            snprintf(buf + n, size - (size_t)n, "/p%zu", l->pad_h);
        return;
    }
    case TSR_LAYER_MAXPOOL:
        if (l->stride == l->kh) snprintf(buf, size, "pool%zu", l->kh);
        else snprintf(buf, size, "pool%zu/s%zu", l->kh, l->stride);
        return;
    case TSR_LAYER_RELU: snprintf(buf, size, "relu"); return;
    case TSR_LAYER_FLATTEN: snprintf(buf, size, "flatten"); return;
    case TSR_LAYER_DROPOUT:
        snprintf(buf, size, "dropout:%g", (double)l->p);
        if (strtof(buf + 8, NULL) != l->p) snprintf(buf, size, "dropout:%.9g", (double)l->p);
        return;
    }
    snprintf(buf, size, "?");
}

static const char *kind_name(tsr_layer_kind k) {
    static const char *const names[] = {"dense", "conv2d", "maxpool", "relu", "dropout", "flatten"};
    return (unsigned)k < TSR_ARRAY_SIZE(names) ? names[k] : "?";
}

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
        layer_token(&m->layers[i], tok, sizeof tok);
        len += (size_t)snprintf(s + len, cap - len, "%s%s", i ? "," : "", tok);
    }
    m->spec = s;
    return s;
}

/* ---- parser ---- */

typedef struct parser {
    tsr_context *ctx;
    const char *s;
    size_t pos;
} parser;

static tsr_status perr(parser *p, size_t pos, tsr_status st, const char *fmt, ...) TSR_PRINTF(4, 5);
static tsr_status perr(parser *p, size_t pos, tsr_status st, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return tsr_error(p->ctx, st, "model spec at %zu: %s", pos + 1, detail);
}

static void skip_ws(parser *p) {
    while (p->s[p->pos] && isspace((unsigned char)p->s[p->pos])) p->pos++;
}

/* Decimal count at p->pos; -1 when there are no digits or it is too large. */
static int parse_count(parser *p, size_t *out) {
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

/* Matches `tok` (length n) against "name<d>[x<d>]"; returns 1 and the sizes when it fits. */
static int match_sized(const char *tok, size_t n, const char *name, int two, size_t *a, size_t *b) {
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

/* Re-labels a builder error with the position of the token that caused it. */
static tsr_status located(parser *p, size_t pos, tsr_status st) {
    char detail[1024];
    tsr_strlcpy(detail, tsr_context_last_error(p->ctx), sizeof detail);
    return perr(p, pos, st, "%s", detail);
}

static tsr_status parse_layer(parser *p, tsr_model *m) {
    skip_ws(p);
    size_t start = p->pos, n = 0;
    const char *tok = p->s + start;
    while (tok[n] && tok[n] != ',' && tok[n] != ':' && tok[n] != '/' && !isspace((unsigned char)tok[n]))
        n++;
    if (!n) {
        if (tok[0]) return perr(p, start, TSR_ERR_PARSE, "expected a layer before '%c'", tok[0]);
        return perr(p, start, TSR_ERR_PARSE, "expected a layer");
    }
    p->pos += n;
    size_t a = 0, b = 0;
    enum { L_DENSE, L_CONV, L_POOL, L_RELU, L_FLATTEN, L_DROPOUT } kind;
    if (n == 5 && !strncmp(tok, "dense", 5)) kind = L_DENSE;
    else if (n == 4 && !strncmp(tok, "relu", 4)) kind = L_RELU;
    else if (n == 7 && !strncmp(tok, "flatten", 7)) kind = L_FLATTEN;
    else if (n == 7 && !strncmp(tok, "dropout", 7)) kind = L_DROPOUT;
    else if (match_sized(tok, n, "conv", 1, &a, &b)) kind = L_CONV;
    else if (match_sized(tok, n, "pool", 0, &a, &b) || match_sized(tok, n, "maxpool", 0, &a, &b))
        kind = L_POOL;
    else
        return perr(p, start, TSR_ERR_PARSE, "unknown layer '%.*s'", (int)(n > 40 ? 40 : n), tok);

    size_t arg = 0, argpos = p->pos + 1;
    float prob = 0.0f;
    int has_arg = p->s[p->pos] == ':';
    if (kind == L_DENSE || kind == L_CONV) {
        const char *what = kind == L_DENSE ? "dense needs a positive unit count"
                                           : "conv needs a positive filter count";
        if (!has_arg) return perr(p, p->pos, TSR_ERR_PARSE, "%s (':N')", what);
        p->pos++;
        if (parse_count(p, &arg) || !arg) return perr(p, argpos, TSR_ERR_PARSE, "%s", what);
    } else if (kind == L_DROPOUT) {
        if (!has_arg) return perr(p, p->pos, TSR_ERR_PARSE, "dropout needs a probability (':P')");
        p->pos++;
        char *end;
        prob = strtof(p->s + p->pos, &end);
        if (end == p->s + p->pos || !(prob >= 0.0f && prob < 1.0f))
            return perr(p, argpos, TSR_ERR_PARSE, "dropout needs a probability in [0, 1)");
        p->pos = (size_t)(end - p->s);
    } else if (has_arg) {
        return perr(p, p->pos, TSR_ERR_PARSE, "%.*s takes no ':' argument", (int)n, tok);
    }

    size_t stride = 0, pad = TSR_PAD_SAME;
    skip_ws(p);
    for (; p->s[p->pos] == '/'; skip_ws(p)) {
        p->pos++;
        skip_ws(p);
        size_t opos = p->pos;
        if (kind != L_CONV && kind != L_POOL)
            return perr(p, opos, TSR_ERR_PARSE, "%.*s takes no '/' options", (int)n, tok);
        char c = p->s[p->pos];
        if (!strncmp(p->s + p->pos, "same", 4) && kind == L_CONV) {
            p->pos += 4;
            pad = TSR_PAD_SAME;
        } else if (!strncmp(p->s + p->pos, "valid", 5) && kind == L_CONV) {
            p->pos += 5;
            pad = 0;
        } else if (c == 's' || (c == 'p' && kind == L_CONV)) {
            p->pos++;
            size_t v;
            if (parse_count(p, &v) || (c == 's' && !v))
                return perr(p, opos, TSR_ERR_PARSE, "option '/%c' needs a %s number", c,
                            c == 's' ? "positive" : "non-negative");
            if (c == 's') stride = v;
            else pad = v;
        } else {
            return perr(p, opos, TSR_ERR_PARSE, "unknown option '/%c' for %.*s (%s)", c ? c : ' ',
                        (int)n, tok, kind == L_CONV ? "use /sN, /pN, /same or /valid" : "use /sN");
        }
    }
    skip_ws(p);
    if (p->s[p->pos] && p->s[p->pos] != ',')
        return perr(p, p->pos, TSR_ERR_PARSE, "unexpected '%c' after %.*s", p->s[p->pos], (int)n, tok);

    tsr_status st = TSR_OK;
    switch (kind) {
    case L_DENSE: st = tsr_model_add_dense(m, arg); break;
    case L_CONV:
        if (!a || !b) return perr(p, start, TSR_ERR_PARSE, "conv kernel size must be positive");
        st = tsr_model_add_conv2d(m, arg, a, b, stride ? stride : 1, pad);
        break;
    case L_POOL:
        if (!a) return perr(p, start, TSR_ERR_PARSE, "pool size must be positive");
        st = tsr_model_add_maxpool(m, a, stride ? stride : a);
        break;
    case L_RELU: st = tsr_model_add_relu(m); break;
    case L_FLATTEN: st = tsr_model_add_flatten(m); break;
    case L_DROPOUT: st = tsr_model_add_dropout(m, prob); break;
    }
    return st == TSR_OK ? TSR_OK : located(p, start, st);
}

tsr_status tsr_model_parse(tsr_context *ctx, const char *spec, tsr_model_input input,
                           tsr_model **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_parse: NULL output");
    *out = NULL;
    if (!spec) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_parse: NULL spec");
    const char *preset = tsr_model_preset(spec);
    parser p = {ctx, preset ? preset : spec, 0};
    tsr_model *m;
    TSR_TRY(tsr_model_create(ctx, input, &m));
    tsr_status st = TSR_OK;
    skip_ws(&p);
    if (!p.s[p.pos]) st = perr(&p, 0, TSR_ERR_PARSE, "empty model spec");
    while (st == TSR_OK) {
        st = parse_layer(&p, m);
        if (st != TSR_OK || !p.s[p.pos]) break;
        p.pos++; /* ',' */
        skip_ws(&p);
        if (!p.s[p.pos]) st = perr(&p, p.pos, TSR_ERR_PARSE, "expected a layer after ','");
    }
    if (st == TSR_OK) st = tsr_model_check(m);
    if (st != TSR_OK) {
        tsr_model_free(m);
        return st;
    }
    *out = m;
    return TSR_OK;
}

/* ---- inspection ---- */

tsr_model_input tsr_model_get_input(const tsr_model *m) {
    tsr_model_input z = {0, 0, 0, 0};
    return m ? m->input : z;
}

size_t tsr_model_layer_count(const tsr_model *m) { return m ? m->count : 0; }

size_t tsr_model_param_count(const tsr_model *m) {
    size_t n = 0;
    for (size_t i = 0; m && i < m->count; i++) n += m->layers[i].weights + m->layers[i].biases;
    return n;
}

tsr_status tsr_model_layer_info(const tsr_model *m, size_t index, size_t batch, tsr_layer_info *info) {
    if (!m || !info) return TSR_ERR_INVALID_ARG;
    if (index >= m->count)
        return tsr_error(m->ctx, TSR_ERR_NOT_FOUND, "layer %zu does not exist (%zu layers)", index,
                         m->count);
    const tsr_layer *l = &m->layers[index];
    memset(info, 0, sizeof *info);
    info->kind = l->kind;
    info->type = kind_name(l->kind);
    layer_token(l, info->spec, sizeof info->spec);
    info->in_c = l->in_c, info->in_h = l->in_h, info->in_w = l->in_w;
    info->out_c = l->out_c, info->out_h = l->out_h, info->out_w = l->out_w;
    info->params = l->weights + l->biases;
    info->param_bytes = info->params * sizeof(float);
    uint64_t n = batch, in = tsr_layer_in_size(l), out = tsr_layer_out_size(l);
    size_t act = (size_t)(n * out * sizeof(float));
    switch (l->kind) {
    case TSR_LAYER_DENSE:
        info->forward_flops = n * (2 * l->weights + l->biases);
        info->backward_flops = n * (4 * l->weights + l->biases);
        break;
    case TSR_LAYER_CONV2D: {
        uint64_t ohw = l->out_h * l->out_w;
        info->forward_flops = n * ohw * (2 * l->weights + l->biases);
        info->backward_flops = n * ohw * (4 * l->weights + l->biases);
        act += (size_t)(n * l->in_c * l->kh * l->kw * ohw * sizeof(float)); /* im2col kept */
        break;
    }
    case TSR_LAYER_MAXPOOL:
        info->forward_flops = n * out * l->kh * l->kw;
        info->backward_flops = n * (in + out);
        act += (size_t)(n * out * sizeof(int32_t)); /* argmax indices */
        break;
    case TSR_LAYER_RELU:
        info->forward_flops = n * out;
        info->backward_flops = n * out;
        break;
    case TSR_LAYER_DROPOUT:
        info->forward_flops = n * out;
        info->backward_flops = n * out;
        act += (size_t)(n * out * sizeof(float)); /* mask */
        break;
    case TSR_LAYER_FLATTEN: act = 0; break; /* a view of its input */
    }
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
    sb_printf(b, "Model: %s\n", tsr_model_spec(m));
    sb_printf(b, "Input: %zux%zux%zu, %zu classes\n", m->input.channels, m->input.height,
              m->input.width, m->input.classes);
    sb_printf(b, "%-3s %-16s %-14s %10s %10s %10s %12s\n", "#", "Layer", "Output", "Params",
              "FLOPs fwd", "FLOPs bwd", "Act bytes");
    uint64_t tf = 0, tb = 0;
    size_t ta = 0;
    for (size_t i = 0; i < m->count; i++) {
        tsr_layer_info in;
        tsr_model_layer_info(m, i, 1, &in);
        char shape[48], f[16], bw[16], a[16];
        snprintf(shape, sizeof shape, "%zux%zux%zu", in.out_c, in.out_h, in.out_w);
        human(f, sizeof f, (double)in.forward_flops);
        human(bw, sizeof bw, (double)in.backward_flops);
        human(a, sizeof a, (double)in.activation_bytes);
        sb_printf(b, "%-3zu %-16s %-14s %10zu %10s %10s %12s\n", i, in.spec, shape, in.params, f, bw, a);
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
