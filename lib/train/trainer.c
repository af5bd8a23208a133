/* The trainer: a run of one training mode, a strategy table (lib/train/strategy.h) picked by
 * options->mode; every call below goes through the table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/io/checkpoint_internal.h"
#include "lib/comm/comm_internal.h"
#include "lib/core/internal.h"
#include "lib/train/strategy.h"

struct tsr_trainer {
    const tsr_strategy *st;
    void *mode;  /* the strategy's state; it embeds the run (st->run) */
};

static tsr_run *run_of(const tsr_trainer *t) { return t->st->run(t->mode); }

tsr_status tsr_train_mode_parse(const char *name, tsr_train_mode *out) {
    static const char *names[] = {"data", "pipeline", "hybrid", "async", "gossip"};
    for (int i = 0; name && out && i < 5; i++)
        if (!strcmp(name, names[i])) {
            *out = (tsr_train_mode)i;
            return TSR_OK;
        }
    return TSR_ERR_PARSE;
}

tsr_status tsr_compress_kind_parse(const char *name, tsr_compress_kind *out) {
    static const char *names[] = {"none", "fp16", "topk"};
    for (int i = 0; name && out && i < 3; i++)
        if (!strcmp(name, names[i])) {
            *out = (tsr_compress_kind)i;
            return TSR_OK;
        }
    return TSR_ERR_PARSE;
}

void tsr_trainer_options_init(tsr_trainer_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->batch = 64;
    o->optimizer.kind = TSR_OPTIM_ADAM;
    o->optimizer.lr = 1e-3f;
    o->optimizer.momentum = 0.9f;
    o->optimizer.beta1 = 0.9f;
    o->optimizer.beta2 = 0.999f;
    o->optimizer.eps = 1e-8f;
    o->schedule.kind = TSR_SCHEDULE_CONSTANT;
    o->schedule.gamma = 0.1f;
    o->seed = 1;
    o->init = TSR_INIT_HE_UNIFORM;
    o->fault_grad_nan_step = -1;
}

void tsr_trainer_free(tsr_trainer *t) {
    if (!t) return;
    tsr_context *ctx = run_of(t)->ctx;
    t->st->destroy(t->mode);
    tsr_free(ctx, t);
}

static const tsr_strategy *const strategies[] = {
    [TSR_MODE_DATA] = &tsr_strategy_data,         [TSR_MODE_PIPELINE] = &tsr_strategy_pipeline,
    [TSR_MODE_HYBRID] = &tsr_strategy_hybrid,     [TSR_MODE_ASYNC] = &tsr_strategy_async,
    [TSR_MODE_GOSSIP] = &tsr_strategy_gossip};

tsr_status tsr_trainer_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                              tsr_trainer **out) {
    if (!ctx || !model || !o || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_trainer_create: NULL argument");
    *out = NULL;
    TSR_TRY(tsr_model_check(model));
    if ((unsigned)o->mode > TSR_MODE_GOSSIP)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown training mode %d", (int)o->mode);
    const tsr_strategy *st = strategies[o->mode];
    TSR_TRY(tsr_run_check_options(ctx, o, ""));
    TSR_TRY(st->validate(ctx, model, o));
    tsr_trainer *t = tsr_calloc(ctx, 1, sizeof *t);
    if (!t) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "trainer");
    t->st = st;
    tsr_status s = st->create(ctx, model, o, &t->mode);
    if (s != TSR_OK) {
        tsr_free(ctx, t);
        return s;
    }
    *out = t;
    return TSR_OK;
}

static int reads_tokens(tsr_trainer *t) {
    return tsr_model_get_input_desc(run_of(t)->model).dtype == TSR_DTYPE_I32;
}

tsr_status tsr_trainer_step(tsr_trainer *t, const float *images, const int32_t *labels, size_t n,
                            float *loss) {
    if (!t) return TSR_ERR_INVALID_ARG;
    if (reads_tokens(t))
        return tsr_error(run_of(t)->ctx, TSR_ERR_INVALID_ARG,
                         "the model reads token ids: train it with tsr_trainer_step_tokens");
    float l = 0.0f;
    tsr_status s = t->st->step(t->mode, images, labels, n, &l);
    run_of(t)->last_loss = l;
    if (loss) *loss = l;
    return s;
}

tsr_status tsr_trainer_step_tokens(tsr_trainer *t, const int32_t *ids, const int32_t *targets, size_t n,
                                   float *loss) {
    if (!t) return TSR_ERR_INVALID_ARG;
    if (!reads_tokens(t))
        return tsr_error(run_of(t)->ctx, TSR_ERR_INVALID_ARG,
                         "the model reads floats: train it with tsr_trainer_step");
    float l = 0.0f;
    /* the modes carry a batch's inputs as 4-byte elements: int32 ids go as they are */
    tsr_status s = t->st->step(t->mode, (const float *)(const void *)ids, targets, n, &l);
    run_of(t)->last_loss = l;
    if (loss) *loss = l;
    return s;
}

tsr_status tsr_trainer_evaluate(tsr_trainer *t, const tsr_dataset *d, double *accuracy, double *loss) {
    if (!t || !d) return TSR_ERR_INVALID_ARG;
    return t->st->evaluate(t->mode, d, accuracy, loss);
}

tsr_status tsr_trainer_get_params(tsr_trainer *t, float *dst, size_t count) {
    if (!t || (!dst && count)) return TSR_ERR_INVALID_ARG;
    return t->st->get_params(t->mode, dst, count);
}

tsr_status tsr_trainer_set_params(tsr_trainer *t, const float *src, size_t count) {
    if (!t || (!src && count)) return TSR_ERR_INVALID_ARG;
    return t->st->set_params(t->mode, src, count);
}

tsr_status tsr_trainer_get_grads(tsr_trainer *t, float *dst, size_t count) {
    if (!t || (!dst && count)) return TSR_ERR_INVALID_ARG;
    return t->st->get_grads(t->mode, dst, count);
}

tsr_status tsr_trainer_save(tsr_trainer *t, const char *path) {
    if (!t || !path) return TSR_ERR_INVALID_ARG;
    return t->st->save(t->mode, path);
}

tsr_status tsr_trainer_load(tsr_trainer *t, const char *path) {
    if (!t || !path) return TSR_ERR_INVALID_ARG;
    return t->st->load(t->mode, path);
}

tsr_status tsr_trainer_data_split(tsr_context *ctx, const tsr_trainer_options *o, size_t global_batch,
                                  uint64_t seed, tsr_data_split *split, size_t *shares) {
    if (!ctx || !o || !split || !shares)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_trainer_data_split: NULL argument");
    if ((unsigned)o->mode > TSR_MODE_GOSSIP)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown training mode %d", (int)o->mode);
    if (!global_batch) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "global batch 0");
    return strategies[o->mode]->shard_data(ctx, o, global_batch, seed, split, shares);
}

uint64_t tsr_trainer_steps(const tsr_trainer *t) { return t ? run_of(t)->steps : 0; }
uint64_t tsr_trainer_step_samples(const tsr_trainer *t) { return t ? run_of(t)->step_samples : 0; }
uint64_t tsr_trainer_skipped(const tsr_trainer *t) { return t ? run_of(t)->skipped : 0; }
float tsr_trainer_loss_scale(const tsr_trainer *t) { return t ? run_of(t)->scaler.scale : 1.0f; }
uint64_t tsr_trainer_epoch(const tsr_trainer *t) { return t ? run_of(t)->epoch : 0; }
void tsr_trainer_set_epoch(tsr_trainer *t, uint64_t epoch) {
    if (t) run_of(t)->epoch = epoch;
}
uint64_t tsr_trainer_seed(const tsr_trainer *t) { return t ? run_of(t)->seed : 0; }
float tsr_trainer_lr(const tsr_trainer *t) { return t ? tsr_run_lr(run_of(t)) : 0.0f; }
double tsr_trainer_grad_norm(const tsr_trainer *t) { return t ? run_of(t)->grad_norm : 0.0; }
const tsr_device_info *tsr_trainer_device(const tsr_trainer *t) {
    return t ? tsr_context_device(run_of(t)->ctx, run_of(t)->device) : NULL;
}
/* data mode: the global batch's; the others: the loss their step reported */
float tsr_trainer_global_loss(const tsr_trainer *t) {
    return !t ? 0.0f : t->st == &tsr_strategy_data ? tsr_data_global_loss(t->mode) : run_of(t)->last_loss;
}
size_t tsr_trainer_buckets(const tsr_trainer *t) {
    return t && t->st == &tsr_strategy_data ? tsr_data_buckets(t->mode) : 0;
}

tsr_status tsr_trainer_measure(tsr_trainer *t, const float *images, const int32_t *labels, size_t n,
                               double *samples_per_s) {
    if (!t || !samples_per_s) return TSR_ERR_INVALID_ARG;
    if (t->st != &tsr_strategy_data)
        return tsr_error(run_of(t)->ctx, TSR_ERR_UNSUPPORTED, "tsr_trainer_measure: data mode only");
    return tsr_data_measure(t->mode, images, labels, n, samples_per_s);
}

tsr_status tsr_trainer_balance(tsr_trainer *t, size_t global_batch, const float *images,
                               const int32_t *labels, size_t probe, size_t *shares) {
    if (!t || !shares) return TSR_ERR_INVALID_ARG;
    if (t->st != &tsr_strategy_data)
        return tsr_error(run_of(t)->ctx, TSR_ERR_UNSUPPORTED, "balance: data mode only");
    return tsr_data_balance(t->mode, global_batch, images, labels, probe, shares);
}

/* ---- run metadata ---- */

tsr_status tsr_trainer_set_metadata(tsr_trainer *t, const char *json) {
    if (!t) return TSR_ERR_INVALID_ARG;
    tsr_checkpoint holder; /* the checkpoint module validates and copies it */
    memset(&holder, 0, sizeof holder);
    TSR_TRY(tsr_checkpoint_set_meta(run_of(t)->ctx, &holder, json));
    tsr_free(run_of(t)->ctx, run_of(t)->meta);
    run_of(t)->meta = holder.meta;
    return TSR_OK;
}

const char *tsr_trainer_metadata(const tsr_trainer *t) { return t ? run_of(t)->meta : NULL; }
