/* Private layout of models and layers, shared by model.c, stage.c and the trainer. */
#ifndef TSR_LAYERS_H
#define TSR_LAYERS_H
#include <stddef.h>
#include "tessera.h"

typedef struct tsr_layer {
    tsr_layer_kind kind;
    size_t in_c, in_h, in_w;
    size_t out_c, out_h, out_w;
    size_t units;                       /* dense: outputs; conv: filters */
    size_t kh, kw, stride, pad_h, pad_w; /* conv (padding resolved); pool: kh = kw = size */
    float p;                            /* dropout */
    size_t weights, biases;             /* parameter floats */
} tsr_layer;

struct tsr_model {
    tsr_context *ctx;
    tsr_model_input input;
    tsr_layer *layers;
    size_t count, cap;
    char *spec;                         /* canonical spec, rebuilt on demand */
};

static inline size_t tsr_layer_in_size(const tsr_layer *l) { return l->in_c * l->in_h * l->in_w; }
static inline size_t tsr_layer_out_size(const tsr_layer *l) {
    return l->out_c * l->out_h * l->out_w;
}

#endif
