/* The registry of layer kinds: the only place the parser, the model and the stage find them. */
#include <stdio.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"

static const tsr_layer_ops *const kinds[] = {
    &tsr_layer_dense, &tsr_layer_conv2d, &tsr_layer_maxpool, &tsr_layer_relu,
    &tsr_layer_dropout, &tsr_layer_flatten, &tsr_layer_add, &tsr_layer_softmax_xent, &tsr_layer_embed,
    &tsr_layer_gelu, &tsr_layer_layernorm, &tsr_layer_linear, &tsr_layer_attention,
    &tsr_layer_posembed, &tsr_layer_lmhead, &tsr_layer_tpcopy, &tsr_layer_tpreduce, &tsr_layer_vpembed,
    &tsr_layer_vpxent,
};

const tsr_layer_ops *tsr_layer_ops_match(const char *name, size_t n, tsr_layer *l) {
    for (size_t i = 0; i < TSR_ARRAY_SIZE(kinds); i++)
        if (kinds[i]->match ? kinds[i]->match(name, n, l)
                            : kinds[i]->word && strlen(kinds[i]->type) == n && !strncmp(name, kinds[i]->type, n))
            return kinds[i];
    return NULL;
}

const tsr_layer_ops *tsr_layer_ops_of(tsr_layer_kind kind) {
    for (size_t i = 0; i < TSR_ARRAY_SIZE(kinds); i++)
        if (kinds[i]->kind == kind) return kinds[i];
    return NULL;
}

void tsr_layer_token(const tsr_layer *l, char *buf, size_t size) {
    if (l->ops->print) l->ops->print(l, buf, size);
    else snprintf(buf, size, "%s", l->ops->type);
}
