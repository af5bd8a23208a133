/* Tensor parallelism seen from the training modes (see tp.h). */
#include "lib/train/tp.h"
#include <string.h>
#include "lib/model/stage.h"

tsr_status tsr_tp_check(tsr_context *ctx, const tsr_model *mine, const tsr_trainer_options *o, tsr_gpt_config *gpt) {
    if (!o->tp_whole || tsr_model_gpt_config(o->tp_whole, gpt) != TSR_OK)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tensor parallelism needs the whole GPT (tp_whole)");
    if (!o->tp_heads || o->tp_head0 + o->tp_heads > gpt->heads)
        return tsr_error(ctx, TSR_ERR_SHAPE, "tensor-parallel share of heads %zu..%zu of %zu", o->tp_head0,
                         o->tp_head0 + o->tp_heads, gpt->heads);
    if (tsr_model_layer_count(mine) != tsr_gpt_tp_layer(gpt, tsr_model_layer_count(o->tp_whole)))
        return tsr_error(ctx, TSR_ERR_SHAPE,
                         "the trainer's model is not a tensor-parallel share of the %zu-block GPT "
                         "(tsr_model_create_gpt_tp)", gpt->layers);
    return TSR_OK;
}

tsr_status tsr_tp_open(tsr_tp *tp, tsr_context *ctx, const tsr_model *mine, const tsr_trainer_options *o) {
    memset(tp, 0, sizeof *tp);
    tp->ctx = ctx;
    if (!o->tp_comm) return TSR_OK;
    TSR_TRY(tsr_tp_check(ctx, mine, o, &tp->gpt));
    tp->whole = o->tp_whole;
    tp->mine = mine;
    tp->head0 = o->tp_head0, tp->heads = o->tp_heads;
    tp->nwhole = tsr_model_param_count(tp->whole);
    tp->nmine = tsr_model_param_count(mine);
    tp->whole_buf = tsr_calloc(ctx, tp->nwhole, sizeof *tp->whole_buf);
    tp->mine_buf = tsr_calloc(ctx, tp->nmine ? tp->nmine : 1, sizeof *tp->mine_buf);
    if (!tp->whole_buf || !tp->mine_buf) {
        tsr_tp_close(tp);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "tensor parallelism: %zu parameters of the whole model",
                         tsr_model_param_count(o->tp_whole));
    }
    tp->comm = o->tp_comm;
    return TSR_OK;
}

void tsr_tp_close(tsr_tp *tp) {
    if (!tp || !tp->ctx) return;
    tsr_free(tp->ctx, tp->whole_buf);
    tsr_free(tp->ctx, tp->mine_buf);
    tp->whole_buf = tp->mine_buf = NULL;
    tp->comm = NULL;
}

tsr_status tsr_tp_scatter(tsr_tp *tp, const float *whole, float *share) {
    return tsr_gpt_tp_scatter(tp->ctx, tp->whole, tp->mine, &tp->gpt, tp->head0, tp->heads, whole, share);
}

tsr_status tsr_tp_gather(tsr_tp *tp, const float *share, float *whole) {
    memset(whole, 0, tp->nwhole * sizeof *whole);
    int owner = tsr_comm_rank(tp->comm) == 0; /* the replicated tensors: once */
    TSR_TRY(tsr_gpt_tp_gather(tp->ctx, tp->whole, tp->mine, &tp->gpt, tp->head0, tp->heads, share, owner,
                              whole));
    return tsr_comm_allreduce(tp->comm, whole, tp->nwhole, NULL);
}

tsr_status tsr_tp_initial(tsr_tp *tp, const tsr_trainer_options *o) {
    TSR_TRY(tsr_model_init_host(tp->whole, o->init == TSR_INIT_GLOROT_UNIFORM, o->seed, tp->whole_buf));
    return tsr_tp_scatter(tp, tp->whole_buf, tp->mine_buf);
}

tsr_status tsr_tp_any(tsr_tp *tp, int *flag) {
    if (!tp->comm) return TSR_OK;
    float f = *flag ? 1.0f : 0.0f;
    TSR_TRY(tsr_comm_allreduce(tp->comm, &f, 1, NULL));
    *flag = f > 0;
    return TSR_OK;
}
