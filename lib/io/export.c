/* A model's parameters as a PyTorch nn.Sequential's state_dict in safetensors (mapping rules:
 * include/tessera/safetensors.h). The one place that knows how tessera's layers line up with
 * torch.nn modules; tsr-export writes through it and tsr-train --init reads through it. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "tessera.h"
#include "lib/core/internal.h"
#include "lib/model/layers.h"

/* Appends like snprintf at *len, which grows by what the text needs even past `size`. */
static void append(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t size, size_t *len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf && *len < size ? buf + *len : NULL, buf && *len < size ? size - *len : 0,
                      fmt, ap);
    va_end(ap);
    if (n > 0) *len += (size_t)n;
}

/* Walks the layers as nn.Sequential modules: index[i] receives layer i's module index (NULL:
 * not wanted) and buf the "nn.Sequential(...)" text (*needed: its length). A layer without an
 * nn.Sequential equivalent is TSR_ERR_UNSUPPORTED naming it. */
static tsr_status torch_layout(tsr_context *ctx, const tsr_model *m, size_t *index, char *buf,
                               size_t size, size_t *needed) {
    size_t len = 0, at = 0;
    /* dimensions of one sample of the tensor the next module sees in PyTorch */
    size_t rank = m->desc.rank;
    append(buf, size, &len, "nn.Sequential(");
    for (size_t i = 0; i < m->count; i++) {
        const tsr_layer *l = &m->layers[i];
        const char *sep = at ? ", " : "";
        switch (l->kind) {
        case TSR_LAYER_DENSE: /* tessera's dense flattens its input; nn.Linear does not */
            if (rank != 1) append(buf, size, &len, "%snn.Flatten()", sep), at++, sep = ", ";
            if (index) index[i] = at;
            append(buf, size, &len, "%snn.Linear(%zu, %zu)", sep, tsr_layer_in_size(l), l->units);
            rank = 1;
            break;
        case TSR_LAYER_CONV2D:
        case TSR_LAYER_MAXPOOL: /* both want [N, C, H, W] */
            if (rank != 3) {
                if (rank != 1) append(buf, size, &len, "%snn.Flatten()", sep), at++, sep = ", ";
                append(buf, size, &len, "%snn.Unflatten(1, (%zu, %zu, %zu))", sep, l->in_c,
                       l->in_h, l->in_w);
                at++, sep = ", ";
            }
            if (index) index[i] = at;
            if (l->kind == TSR_LAYER_CONV2D)
                append(buf, size, &len, "%snn.Conv2d(%zu, %zu, (%zu, %zu), stride=%zu, "
                       "padding=(%zu, %zu))", sep, l->in_c, l->units, l->kh, l->kw, l->stride,
                       l->pad_h, l->pad_w);
            else
                append(buf, size, &len, "%snn.MaxPool2d(%zu, stride=%zu)", sep, l->kh, l->stride);
            rank = 3;
            break;
        case TSR_LAYER_RELU:
            if (index) index[i] = at;
            append(buf, size, &len, "%snn.ReLU()", sep);
            break;
        case TSR_LAYER_DROPOUT:
            if (index) index[i] = at;
            append(buf, size, &len, "%snn.Dropout(%g)", sep, (double)l->p);
            break;
        case TSR_LAYER_FLATTEN:
            if (index) index[i] = at;
            append(buf, size, &len, "%snn.Flatten()", sep);
            rank = 1;
            break;
        case TSR_LAYER_EMBED: /* ids [N, T] -> [N, T, D] */
            if (index) index[i] = at;
            append(buf, size, &len, "%snn.Embedding(%zu, %zu)", sep, l->vocab, l->units);
            rank = 2;
            break;
        default: {
            tsr_layer_info info;
            tsr_status s = tsr_model_layer_info(m, i, 1, &info);
            if (s != TSR_OK) return s;
            return tsr_error(ctx, TSR_ERR_UNSUPPORTED,
                             "layer %zu (%s): a %s has no torch.nn.Sequential equivalent", i,
                             info.spec, l->kind == TSR_LAYER_ADD ? "residual add" : info.type);
        }
        }
        at++;
    }
    append(buf, size, &len, ")");
    if (needed) *needed = len;
    return TSR_OK;
}

/* ---- GPT-2 under Hugging Face's names ---- */

/* Hugging Face GPT-2's name of layer i's tensor `what` ("weight", "bias"). */
static void gpt_name(const tsr_model *m, size_t i, const char *what, char name[64]) {
    static const char *const part[10] = {"ln_1", "attn.c_attn", "", "attn.c_proj", "",
                                         "ln_2", "mlp.c_fc",    "", "mlp.c_proj",  ""};
    size_t len = 0;
    if (i == 0) append(name, 64, &len, "wte.%s", what);
    else if (i == 1) append(name, 64, &len, "wpe.%s", what);
    else if (i == m->count - 2) append(name, 64, &len, "ln_f.%s", what);
    else append(name, 64, &len, "h.%zu.%s.%s", (i - 2) / 10, part[(i - 2) % 10], what);
}

/* File tensors a GPT-2 checkpoint may carry that are not parameters: the causal-mask buffers
 * and the head's copy of wte. */
static int gpt_extra(const char *name) {
    const char *tail = strrchr(name, '.');
    if (!strcmp(name, "lm_head.weight")) return 1;
    return tail && (!strcmp(tail, ".bias") || !strcmp(tail, ".masked_bias")) && strstr(name, ".attn.") &&
           !strstr(name, "c_attn") && !strstr(name, "c_proj");
}

static tsr_status check_model(tsr_context *ctx, const tsr_model *m, const char *fn) {
    if (!ctx) return TSR_ERR_INVALID_ARG;
    if (!m) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: NULL model", fn);
    return TSR_OK;
}

tsr_status tsr_model_torch_module(tsr_context *ctx, const tsr_model *model, char *buf,
                                  size_t size, size_t *needed) {
    tsr_status s = check_model(ctx, model, "tsr_model_torch_module");
    if (s != TSR_OK) return s;
    size_t len = 0;
    if ((s = torch_layout(ctx, model, NULL, buf, size, &len)) != TSR_OK) return s;
    if (needed) *needed = len;
    if (len >= size)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_model_torch_module: %zu bytes for a "
                         "text of %zu", size, len);
    return TSR_OK;
}

/* The module index of every layer (count of them, through ctx); a GPT's names come from
 * gpt_name, its index stays NULL. */
static tsr_status torch_indices(tsr_context *ctx, const tsr_model *m, size_t **out) {
    *out = NULL;
    if (tsr_model_gpt_blocks(m)) return TSR_OK;
    size_t *index = tsr_calloc(ctx, m->count ? m->count : 1, sizeof *index);
    if (!index) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "module indices of %zu layers", m->count);
    tsr_status s = torch_layout(ctx, m, index, NULL, 0, NULL);
    if (s != TSR_OK) {
        tsr_free(ctx, index);
        return s;
    }
    *out = index;
    return TSR_OK;
}

/* "<module>.<tensor>": layer l's "weight" is "<index[l]>.weight"; a GPT's Hugging Face name. */
static void torch_name(const tsr_model *m, const size_t *index, const tsr_param_info *p, char name[64]) {
    const char *dot = strchr(p->name, '.');
    size_t len = 0; /* "<index>." is at most 21 bytes and kinds' names are short */
    if (!index) gpt_name(m, p->layer, dot ? dot + 1 : p->name, name);
    else append(name, 64, &len, "%zu.%s", index[p->layer], dot ? dot + 1 : p->name);
}

tsr_status tsr_model_torch_name(tsr_context *ctx, const tsr_model *model, size_t tensor,
                                char name[64]) {
    tsr_status s = check_model(ctx, model, "tsr_model_torch_name");
    if (s != TSR_OK) return s;
    tsr_param_info p;
    if (tensor >= tsr_model_param_tensor_count(model))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "parameter tensor %zu: the model has %zu",
                         tensor, tsr_model_param_tensor_count(model));
    size_t *index;
    if ((s = tsr_model_param_tensor(model, tensor, &p)) != TSR_OK ||
        (s = torch_indices(ctx, model, &index)) != TSR_OK)
        return s;
    torch_name(model, index, &p, name);
    tsr_free(ctx, index);
    return TSR_OK;
}

static tsr_status check_count(tsr_context *ctx, const tsr_model *m, const float *params,
                              size_t count, const char *fn) {
    if (!params) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: NULL parameters", fn);
    if (count != tsr_model_param_count(m))
        return tsr_error(ctx, TSR_ERR_SHAPE, "%s: %zu parameters for a model of %zu", fn, count,
                         tsr_model_param_count(m));
    return TSR_OK;
}

static void shape_text(char *buf, size_t size, size_t rank, const size_t *shape) {
    size_t len = 0;
    append(buf, size, &len, "[");
    for (size_t d = 0; d < rank; d++) append(buf, size, &len, "%s%zu", d ? ", " : "", shape[d]);
    append(buf, size, &len, "]");
}

tsr_status tsr_model_save_safetensors(tsr_context *ctx, const tsr_model *model,
                                      const float *params, size_t count, const tsr_st_meta *meta,
                                      size_t meta_count, const char *path) {
    const char *fn = "tsr_model_save_safetensors";
    tsr_status s = check_model(ctx, model, fn);
    if (s == TSR_OK) s = check_count(ctx, model, params, count, fn);
    if (s != TSR_OK) return s;
    if (!path || (meta_count && !meta))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: NULL path or metadata", fn);
    size_t *index = NULL, text_len = 0;
    char *text = NULL;
    tsr_st_writer *w = NULL;
    size_t blocks = tsr_model_gpt_blocks(model);
    char gpt_cfg[5][24];
    if (blocks) { /* Hugging Face GPT2LMHeadModel's names; the config for loaders */
        const tsr_layer *att = &model->layers[4];
        snprintf(gpt_cfg[0], sizeof gpt_cfg[0], "%zu", blocks);
        snprintf(gpt_cfg[1], sizeof gpt_cfg[1], "%zu", att->heads);
        snprintf(gpt_cfg[2], sizeof gpt_cfg[2], "%zu", model->layers[0].units);
        snprintf(gpt_cfg[3], sizeof gpt_cfg[3], "%zu", model->layers[1].vocab);
        snprintf(gpt_cfg[4], sizeof gpt_cfg[4], "%zu", model->layers[0].vocab);
        text_len = strlen("GPT-2 (Hugging Face GPT2LMHeadModel names, head tied to wte)");
    } else if ((s = torch_indices(ctx, model, &index)) != TSR_OK ||
               (s = torch_layout(ctx, model, NULL, NULL, 0, &text_len)) != TSR_OK)
        goto done;
    if (!(text = tsr_malloc(ctx, text_len + 1))) {
        s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: module text of %zu bytes", fn, text_len);
        goto done;
    }
    if (blocks) tsr_strlcpy(text, "GPT-2 (Hugging Face GPT2LMHeadModel names, head tied to wte)", text_len + 1);
    else if ((s = torch_layout(ctx, model, NULL, text, text_len + 1, NULL)) != TSR_OK)
        goto done;
    if ((s = tsr_st_writer_create(ctx, &w)) != TSR_OK) goto done;
    for (size_t t = 0; s == TSR_OK && t < tsr_model_param_tensor_count(model); t++) {
        tsr_param_info p;
        char name[64];
        uint64_t shape[4];
        if ((s = tsr_model_param_tensor(model, t, &p)) != TSR_OK) break;
        torch_name(model, index, &p, name);
        for (size_t d = 0; d < p.rank; d++) shape[d] = p.shape[d];
        s = tsr_st_writer_add_f32(ctx, w, name, TSR_ST_F32, (int)p.rank, shape, params + p.offset);
    }
    tsr_model_input_desc in = tsr_model_get_input_desc(model);
    char input[96], classes[32];
    shape_text(input, sizeof input, in.rank, in.dims);
    snprintf(classes, sizeof classes, "%zu", in.classes);
    const tsr_st_meta own[] = {
        {"format", "pt"}, {"tessera_model", tsr_model_spec(model)}, {"input_shape", input},
        {"input_dtype", in.dtype == TSR_DTYPE_I32 ? "int32" : "float32"}, {"classes", classes},
        {"pytorch_module", text}};
    for (size_t k = 0; s == TSR_OK && k < sizeof own / sizeof *own; k++)
        s = tsr_st_writer_set_meta(ctx, w, own[k].key, own[k].value);
    static const char *const gpt_keys[5] = {"n_layer", "n_head", "n_embd", "n_ctx", "vocab"};
    for (size_t k = 0; s == TSR_OK && blocks && k < 5; k++)
        s = tsr_st_writer_set_meta(ctx, w, gpt_keys[k], gpt_cfg[k]);
    for (size_t k = 0; s == TSR_OK && k < meta_count; k++)
        s = tsr_st_writer_set_meta(ctx, w, meta[k].key, meta[k].value);
    if (s == TSR_OK) s = tsr_st_writer_save(ctx, w, path);
done:
    tsr_st_writer_free(ctx, w);
    tsr_free(ctx, text);
    tsr_free(ctx, index);
    return s;
}

/* A tensor by name, or under Hugging Face's "transformer." prefix (GPT2LMHeadModel files). */
static const tsr_st_tensor *find_tensor(const tsr_safetensors *st, const char *name) {
    const tsr_st_tensor *t = tsr_safetensors_find(st, name);
    char prefixed[80];
    if (t) return t;
    snprintf(prefixed, sizeof prefixed, "transformer.%s", name);
    return tsr_safetensors_find(st, prefixed);
}

/* Why file tensor `t` cannot be model tensor `p` (empty when it can). */
static void tensor_mismatch(const tsr_st_tensor *t, const tsr_param_info *p, char *why,
                            size_t size) {
    why[0] = '\0';
    int same = (size_t)t->ndim == p->rank;
    for (size_t d = 0; same && d < p->rank; d++) same = t->shape[d] == (uint64_t)p->shape[d];
    if (!same) {
        char want[96];
        size_t len = 0;
        shape_text(want, sizeof want, p->rank, p->shape);
        append(why, size, &len, "has shape [");
        for (int d = 0; d < t->ndim; d++)
            append(why, size, &len, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
        append(why, size, &len, "], the model's is %s", want);
        return;
    }
    if (t->dtype != TSR_ST_F32 && t->dtype != TSR_ST_F16 && t->dtype != TSR_ST_BF16 &&
        t->dtype != TSR_ST_F64)
        snprintf(why, size, "has dtype %s (F32, F16, BF16 or F64 expected)",
                 tsr_st_dtype_name(t->dtype));
}

tsr_status tsr_model_load_safetensors(tsr_context *ctx, const tsr_model *model, const char *path,
                                      float *params, size_t count) {
    const char *fn = "tsr_model_load_safetensors";
    tsr_status s = check_model(ctx, model, fn);
    if (s == TSR_OK) s = check_count(ctx, model, params, count, fn);
    if (s != TSR_OK) return s;
    if (!path) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%s: NULL path", fn);
    size_t *index = NULL, tensors = tsr_model_param_tensor_count(model);
    tsr_safetensors *st = NULL;
    if ((s = torch_indices(ctx, model, &index)) != TSR_OK ||
        (s = tsr_safetensors_open(ctx, path, &st)) != TSR_OK) {
        tsr_free(ctx, index);
        return s;
    }
    /* every mismatch is counted, the first one named */
    char first[384] = "", why[160];
    size_t mismatches = 0, matched = 0;
    for (size_t i = 0; i < tensors; i++) {
        tsr_param_info p;
        char name[64];
        if ((s = tsr_model_param_tensor(model, i, &p)) != TSR_OK) goto done;
        torch_name(model, index, &p, name);
        const tsr_st_tensor *t = find_tensor(st, name);
        if (t) matched++, tensor_mismatch(t, &p, why, sizeof why);
        else
            snprintf(why, sizeof why, "is missing (layer %zu's %s)", p.layer,
                     strchr(p.name, '.') + 1);
        if (why[0] && !mismatches++) snprintf(first, sizeof first, "tensor '%s' %s", name, why);
    }
    for (size_t k = 0; matched < st->count && k < st->count; k++) {
        /* a file tensor no model tensor claimed */
        int claimed = 0;
        for (size_t i = 0; !claimed && i < tensors; i++) {
            tsr_param_info p;
            char name[64];
            tsr_model_param_tensor(model, i, &p);
            torch_name(model, index, &p, name);
            claimed = !strcmp(name, st->tensors[k].name) ||
                      (!strncmp(st->tensors[k].name, "transformer.", 12) &&
                       !strcmp(name, st->tensors[k].name + 12));
        }
        if (!index && gpt_extra(st->tensors[k].name)) claimed = 1;
        if (!claimed && !mismatches++)
            snprintf(first, sizeof first, "tensor '%.200s' is not a parameter of the model",
                     st->tensors[k].name);
    }
    if (mismatches) {
        s = tsr_error(ctx, TSR_ERR_MISMATCH, "%s: %s (model %s; %zu mismatch%s with it)", path,
                      first, tsr_model_spec(model), mismatches,
                      mismatches == 1 ? "" : "es");
        goto done;
    }
    for (size_t i = 0; s == TSR_OK && i < tensors; i++) {
        tsr_param_info p;
        char name[64];
        tsr_model_param_tensor(model, i, &p);
        torch_name(model, index, &p, name);
        s = tsr_safetensors_to_f32(ctx, find_tensor(st, name), params + p.offset, p.count);
    }
done:
    tsr_safetensors_close(ctx, st);
    tsr_free(ctx, index);
    return s;
}
