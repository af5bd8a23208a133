/* tsr-export: a tsr-train checkpoint's parameters as a safetensors file PyTorch loads into the
 * equivalent torch.nn.Sequential:
 *   tsr-export run.ckpt model.safetensors [--input CxHxW] [--classes N]
 *
 *   from safetensors.torch import load_file
 *   import json, torch; from torch import nn
 *   meta = json.loads(...)  # or safe_open(f, "pt").metadata()
 *   net = eval(meta["pytorch_module"]); net.load_state_dict(load_file("model.safetensors"))
 *
 * Layer by layer (the mapping lives in lib/io/export.c; include/tessera/safetensors.h):
 *   dense:N        nn.Linear(in, N), with an nn.Flatten() in front when its input is not flat;
 *                  weight [N, in] is tessera's own layout (torch.nn.Linear's [out, in])
 *   convKHxKW:F    nn.Conv2d(C, F, (KH, KW), stride, padding); weight [F, C, KH, KW]
 *   poolK/sS       nn.MaxPool2d(K, stride=S)
 *   relu, dropout:P, flatten, embed:D: nn.ReLU(), nn.Dropout(P), nn.Flatten(), nn.Embedding
 *   add:N          refused: a residual add has no nn.Sequential equivalent
 * Tensors are named "<module index>.weight" / ".bias": the mlp
 * "dense:256,relu,dense:128,relu,dense:100,relu,dense:10" on 1x28x28 is nn.Sequential(
 * nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), ...), so its first weight is "1.weight"
 * [256, 784]. All F32. "__metadata__" holds "format" "pt", "tessera_model" (the spec),
 * "input_shape", "input_dtype", "classes", "pytorch_module" (the nn.Sequential as Python
 * text) and the checkpoint's input normalisation "input_mean" / "input_std" (the model sees
 * (pixel / 255 - mean) / std).
 *
 * The input the model was built on comes from the checkpoint's metadata ("input_shape",
 * "classes", which tsr-train records); without them --input (default 1x28x28, the
 * MNIST-format images tsr-train reads) and --classes (default 10) give it, and they override
 * the metadata; a parameter count that does not match is refused. tsr-train --init FILE reads such a file back. */
#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tessera.h"

static void usage(FILE *f) {
    fprintf(f, "usage: tsr-export CHECKPOINT OUT.safetensors [--input CxHxW] [--classes N]\n"
               "  writes the checkpoint's parameters under PyTorch nn.Sequential names (F32)\n"
               "  --input CxHxW   the model's input (default 1x28x28)\n"
               "  --classes N     classes of its last layer (default 10)\n");
}

static int parse_size(const char *s, size_t *out, char **end) {
    unsigned long long v = strtoull(s, end, 10);
    if (*end == s || *s == '-' || v == 0 || v > (1u << 24)) return -1;
    *out = (size_t)v;
    return 0;
}

/* The checkpoint metadata's number `key` as text in *out (NULL when absent). */
static void meta_number(const cJSON *j, const char *key, char *buf, size_t size, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    *out = NULL;
    if (cJSON_IsNumber(v)) {
        snprintf(buf, size, "%.9g", v->valuedouble);
        *out = buf;
    }
}

int main(int argc, char **argv) {
    const char *in_path = NULL, *out_path = NULL;
    tsr_model_input input = TSR_MODEL_INPUT_MNIST;
    int input_given = 0, classes_given = 0;
    for (int i = 1; i < argc; i++) {
        char *end;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--input") && i + 1 < argc) {
            const char *v = argv[++i];
            if (parse_size(v, &input.channels, &end) || *end != 'x' ||
                parse_size(end + 1, &input.height, &end) || *end != 'x' ||
                parse_size(end + 1, &input.width, &end) || *end) {
                fprintf(stderr, "tsr-export: option --input: '%s' is not CxHxW (sizes 1..2^24)\n", v);
                return 2;
            }
            input_given = 1;
        } else if (!strcmp(argv[i], "--classes") && i + 1 < argc) {
            if (parse_size(argv[++i], &input.classes, &end) || *end) {
                fprintf(stderr, "tsr-export: option --classes: '%s' is not a count 1..2^24\n", argv[i]);
                return 2;
            }
            classes_given = 1;
        } else if (!strncmp(argv[i], "--", 2)) {
            fprintf(stderr, "tsr-export: option %s: unknown or without its value\n", argv[i]);
            usage(stderr);
            return 2;
        } else if (!in_path) in_path = argv[i];
        else if (!out_path) out_path = argv[i];
        else {
            fprintf(stderr, "tsr-export: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!out_path) {
        usage(stderr);
        return 2;
    }
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC; /* files only: no device */
    tsr_context *ctx;
    if (tsr_context_create(&ctx, &co) != TSR_OK) {
        fprintf(stderr, "tsr-export: cannot create a context\n");
        return 1;
    }
    tsr_checkpoint *ck = NULL;
    tsr_model *model = NULL;
    cJSON *meta_json = NULL;
    int rc = 1;
    tsr_status s;
    const tsr_checkpoint_tensor *params;
    if ((s = tsr_checkpoint_load(ctx, in_path, &ck)) != TSR_OK) goto fail;
    if (!(params = tsr_checkpoint_find(ck, "params"))) {
        fprintf(stderr, "tsr-export: %s holds no \"params\" tensor\n", in_path);
        goto done;
    }
    if (ck->meta && (meta_json = cJSON_Parse(ck->meta))) {
        /* tsr-train records the input it trained on: the options only override it */
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(meta_json, "input_shape");
        const cJSON *classes = cJSON_GetObjectItemCaseSensitive(meta_json, "classes");
        size_t dims[3];
        int n = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, shape) if (n < 3 && cJSON_IsNumber(x) && x->valuedouble >= 1 &&
                                         x->valuedouble <= 16777216) dims[n++] = (size_t)x->valuedouble;
        if (!input_given && n == 3 && cJSON_GetArraySize(shape) == 3)
            input.channels = dims[0], input.height = dims[1], input.width = dims[2];
        if (!classes_given && cJSON_IsNumber(classes) && classes->valuedouble >= 1 &&
            classes->valuedouble <= 16777216)
            input.classes = (size_t)classes->valuedouble;
    }
    tsr_gpt_config gpt;
    if (tsr_gpt_is_name(ck->model_spec)) { /* a GPT reads token ids: its own input */
        if ((s = tsr_gpt_config_parse(ctx, ck->model_spec, &gpt)) != TSR_OK ||
            (s = tsr_model_create_gpt(ctx, &gpt, gpt.context, &model)) != TSR_OK)
            goto fail;
    } else if ((s = tsr_model_parse(ctx, ck->model_spec, input, &model)) != TSR_OK) {
        goto fail;
    }
    if (params->count != tsr_model_param_count(model)) {
        fprintf(stderr, "tsr-export: %s: %zu parameters, but model %s on a %zux%zux%zu input "
                "with %zu classes has %zu (--input, --classes)\n", in_path, params->count,
                ck->model_spec, input.channels, input.height, input.width, input.classes,
                tsr_model_param_count(model));
        goto done;
    }
    /* the normalisation the model was trained with, when the checkpoint recorded it */
    tsr_st_meta meta[2];
    size_t nmeta = 0;
    char mean[32], std[32];
    const char *v;
    if (meta_json) {
        meta_number(meta_json, "input_mean", mean, sizeof mean, &v);
        if (v) meta[nmeta++] = (tsr_st_meta){"input_mean", v};
        meta_number(meta_json, "input_std", std, sizeof std, &v);
        if (v) meta[nmeta++] = (tsr_st_meta){"input_std", v};
    }
    if ((s = tsr_model_save_safetensors(ctx, model, params->data, params->count, meta, nmeta,
                                        out_path)) != TSR_OK)
        goto fail;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "tsr-export: %s (%s)\n", tsr_context_last_error(ctx), tsr_status_str(s));
done:
    cJSON_Delete(meta_json);
    tsr_model_free(model);
    tsr_checkpoint_free(ctx, ck);
    tsr_context_free(ctx);
    return rc;
}
