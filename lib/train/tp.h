/* Tensor parallelism seen from the training modes (a GPT split by lib/model/gpt_tp.c): the
 * trainer's model is this rank's share of tp_whole, the whole model is what the outside sees
 * (initial values, parameters, gradients, checkpoints: one unsharded layout whatever the
 * group). Used by the data strategy and by pipelines (whose stages are cut from the share). */
#ifndef TSR_TRAIN_TP_H
#define TSR_TRAIN_TP_H
#include <stddef.h>
#include "lib/core/internal.h"
#include "tessera.h"

typedef struct tsr_tp {
    tsr_context *ctx;
    tsr_comm *comm;               /* the group; NULL: no tensor parallelism */
    const tsr_model *whole, *mine;
    tsr_gpt_config gpt;
    size_t head0, heads;
    size_t nwhole, nmine;         /* flat parameter counts of the whole model and of the share */
    float *whole_buf, *mine_buf;  /* scratch of nwhole and nmine floats */
} tsr_tp;

/* Checks the options' tp_* (o->tp_comm set): `mine` is a share of tp_whole; *gpt its
 * configuration. */
tsr_status tsr_tp_check(tsr_context *ctx, const tsr_model *mine, const tsr_trainer_options *o, tsr_gpt_config *gpt);
/* From the options' tp_*: checks that `mine` is a share of tp_whole and allocates the
 * scratch; o->tp_comm NULL: tp->comm stays NULL and nothing is allocated. */
tsr_status tsr_tp_open(tsr_tp *tp, tsr_context *ctx, const tsr_model *mine, const tsr_trainer_options *o);
void tsr_tp_close(tsr_tp *tp); /* accepts one never opened (zeroed) */
/* The whole vector (nwhole floats) to this rank's share (nmine floats). */
tsr_status tsr_tp_scatter(tsr_tp *tp, const float *whole, float *share);
/* The group's shares into the whole vector on every rank of the group (collective). */
tsr_status tsr_tp_gather(tsr_tp *tp, const float *share, float *whole);
/* The whole model's initial parameters (as a single trainer of tp_whole draws them from the
 * options' seed and init) as this rank's share, into tp->mine_buf. */
tsr_status tsr_tp_initial(tsr_tp *tp, const tsr_trainer_options *o);
/* *flag becomes 1 on every rank of the group when it is set on any. */
tsr_status tsr_tp_any(tsr_tp *tp, int *flag);

#endif
