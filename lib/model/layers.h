/* Private layout of models and layers, shared by model.c, stage.c, the layer kinds
 * (lib/layers/) and the trainer. */
#ifndef TSR_LAYERS_H
#define TSR_LAYERS_H
#include <stddef.h>
#include "tessera.h"

#define TSR_LAYER_MAX_INPUTS 2
#define TSR_LAYER_MAX_PARAMS 2

typedef struct tsr_layer_ops tsr_layer_ops;

/* One layer: its kind's ops table, its configuration, and the shapes its kind resolved. */
typedef struct tsr_layer {
    tsr_layer_kind kind;
    const tsr_layer_ops *ops;
    /* inputs by tensor id: 0 = the model input, i + 1 = the output of layer i; input 0 is
     * the previous layer's output unless the kind says otherwise */
    size_t inputs[TSR_LAYER_MAX_INPUTS];
    size_t ninputs;
    size_t in_c, in_h, in_w;            /* shape of input 0 (one sample) */
    size_t out_c, out_h, out_w;
    size_t units;                       /* dense: outputs; conv: filters */
    size_t kh, kw, stride, pad_h, pad_w; /* conv (padding resolved); pool: kh = kw = size */
    float p;                            /* dropout */
    size_t vocab;                       /* embed, lmhead: rows of the table; posembed: positions */
    size_t heads;                       /* attention */
    size_t tied;                        /* lmhead: the embed layer's index + 1 (0: none) */
    size_t row0;                        /* vpembed, vpxent: the slice's first vocabulary row */
    float eps;                          /* layernorm */
    float std;                          /* linear: weight init std (0: GPT-2's 0.02) */
    int nobias;                         /* linear: no bias (a tensor-parallel row split's is
                                         * added once, by the tpreduce after it) */
    size_t weights, biases;             /* parameter floats ("weight" and "bias" tensors) */
} tsr_layer;

struct tsr_model {
    tsr_context *ctx;
    tsr_model_input input;              /* the input as layers see it (c x h x w) */
    tsr_model_input_desc desc;          /* as given: dtype, rank, dims, vocab */
    tsr_layer *layers;
    size_t count, cap;
    tsr_layer loss;                     /* the loss layer after the last one (softmax_xent) */
    size_t positions;                   /* labels per sample: 1, or T for a language model
                                         * whose last output is [T, classes] over T token ids */
    char *spec;                         /* canonical spec, rebuilt on demand */
};

/* Appends formatted text (at most 199 bytes) to buf[0..size) at *len, which grows by the text's
 * length even past size (snprintf-style: call with buf NULL to measure). */
void tsr_spec_append(char *buf, size_t size, size_t *len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* lib/model/gpt.c: the spec of the GPT `name` for input d (the caller frees it), NULL with the
 * context's error set. */
char *tsr_gpt_spec_for(tsr_context *ctx, const char *name, const tsr_model_input_desc *d);

static inline size_t tsr_layer_in_size(const tsr_layer *l) { return l->in_c * l->in_h * l->in_w; }
static inline size_t tsr_layer_out_size(const tsr_layer *l) {
    return l->out_c * l->out_h * l->out_w;
}

#endif
