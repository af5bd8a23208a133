/* Single-device trainer: one stage holding the whole model, an optimizer, a schedule, an RNG
 * for dropout seeds, and checkpoints through tsr_checkpoint_save/load. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "lib/internal.h"
#include "lib/optim.h"
#include "lib/stage.h"

struct tsr_trainer {
    tsr_context *ctx;
    const tsr_model *model;
    tsr_trainer_options o;
    int device;
    tsr_backend *be;
    tsr_stage *stage;
    tsr_optim *optim;
    tsr_rng rng;
    uint64_t steps, epoch, seed;
    float *probs;  /* host copy of batch x classes for evaluation */
    float *grads;  /* host copy of the gradients when check_grads (non-finite check) */
    uint64_t skipped;
};

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
}

void tsr_trainer_free(tsr_trainer *t) {
    if (!t) return;
    tsr_optim_free(t->optim);
    tsr_stage_free(t->stage);
    tsr_backend_free(t->be);
    tsr_free(t->ctx, t->probs);
    tsr_free(t->ctx, t->grads);
    tsr_free(t->ctx, t);
}

tsr_status tsr_trainer_create(tsr_context *ctx, const tsr_model *model, const tsr_trainer_options *o,
                              tsr_trainer **out) {
    if (!ctx || !model || !o || !out)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_trainer_create: NULL argument");
    *out = NULL;
    TSR_TRY(tsr_model_check(model));
    if (!o->batch || o->batch > ((size_t)1 << 20))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "batch size %zu is not valid", o->batch);
    if ((unsigned)o->init > TSR_INIT_GLOROT_UNIFORM)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown initialisation %d", (int)o->init);
    if ((unsigned)o->schedule.kind > TSR_SCHEDULE_COSINE)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown schedule %d", (int)o->schedule.kind);
    if ((unsigned)o->nonfinite > TSR_NONFINITE_SKIP)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "unknown non-finite policy %d", (int)o->nonfinite);
    tsr_nonfinite_policy nonfinite = o->nonfinite;
    int check_grads = !o->no_grad_check;
    const char *nf = getenv("TSR_NONFINITE");
    if (nf && *nf) {
        if (strcmp(nf, "skip") && strcmp(nf, "stop"))
            return tsr_error(ctx, TSR_ERR_PARSE, "TSR_NONFINITE: '%s' is not skip or stop", nf);
        nonfinite = strcmp(nf, "skip") ? TSR_NONFINITE_STOP : TSR_NONFINITE_SKIP;
        check_grads = 1;
    }
    int dev = 0;
    if (o->device) {
        dev = tsr_context_find_device(ctx, o->device);
        if (dev < 0)
            return tsr_error(ctx, TSR_ERR_NOT_FOUND, "device '%s' not found (%d devices)", o->device,
                             tsr_context_device_count(ctx));
    }
    tsr_trainer *t = tsr_calloc(ctx, 1, sizeof *t);
    if (!t) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "trainer");
    t->ctx = ctx;
    t->model = model;
    t->o = *o;
    t->o.device = NULL; /* the caller's string need not outlive the call */
    t->o.nonfinite = nonfinite;
    t->o.no_grad_check = !check_grads;
    t->device = dev;
    t->seed = o->seed;
    tsr_rng_seed(&t->rng, o->seed ^ 0x5DEECE66Dull);
    tsr_stage_options so = {0, tsr_model_layer_count(model), o->batch, 0};
    tsr_status s;
    size_t classes = tsr_model_get_input(model).classes;
    if ((s = tsr_backend_open(ctx, dev, &t->be)) != TSR_OK ||
        (s = tsr_stage_create(t->be, model, &so, &t->stage)) != TSR_OK ||
        (s = tsr_optim_create(t->be, &o->optimizer, tsr_stage_param_count(t->stage), &t->optim)) !=
            TSR_OK ||
        (s = tsr_stage_init_params(t->stage, o->init == TSR_INIT_GLOROT_UNIFORM, o->seed)) != TSR_OK) {
        tsr_trainer_free(t);
        return s;
    }
    t->probs = tsr_calloc(ctx, o->batch * classes, sizeof *t->probs);
    t->grads = tsr_calloc(ctx, tsr_stage_param_count(t->stage), sizeof *t->grads);
    if (!t->probs || !t->grads) {
        tsr_trainer_free(t);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "evaluation buffer");
    }
    *out = t;
    return TSR_OK;
}

/* Uploads n samples and their labels, checking every label. */
static tsr_status upload(tsr_trainer *t, const float *images, const int32_t *labels, size_t n) {
    tsr_model_input in = tsr_model_get_input(t->model);
    if (!images || !labels) return tsr_error(t->ctx, TSR_ERR_INVALID_ARG, "NULL images or labels");
    if (!n || n > t->o.batch)
        return tsr_error(t->ctx, TSR_ERR_SHAPE, "batch of %zu samples: the trainer takes 1 to %zu", n,
                         t->o.batch);
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || (size_t)labels[i] >= in.classes)
            return tsr_error(t->ctx, TSR_ERR_INVALID_ARG, "label %d of sample %zu is not in [0, %zu)",
                             (int)labels[i], i, in.classes);
    size_t features = in.channels * in.height * in.width;
    tsr_ref x = tsr_stage_input(t->stage), y = tsr_stage_labels(t->stage);
    TSR_TRY(tsr_buf_write(x.buf, x.off * 4, images, n * features * sizeof(float)));
    return tsr_buf_write(y.buf, y.off * 4, labels, n * sizeof(int32_t));
}

tsr_status tsr_trainer_step(tsr_trainer *t, const float *images, const int32_t *labels, size_t n,
                            float *loss) {
    if (!t) return TSR_ERR_INVALID_ARG;
    TSR_TRY(upload(t, images, labels, n));
    uint64_t dropout_seed = tsr_rng_next(&t->rng);
    float l = 0.0f;
    TSR_TRY(tsr_stage_forward(t->stage, n, 1, dropout_seed, &l));
    /* Data parallel: a rank must not leave the step alone; its NaN reaches every rank through
     * the averaged gradients, which are then checked on all ranks alike. */
    int check = !t->o.no_grad_check || (!isfinite(l) && 0);
    if (!isfinite(l) && !check) {
        if (t->o.nonfinite == TSR_NONFINITE_SKIP) {
            if (loss) *loss = l;
            t->skipped++;
            tsr_log(t->ctx, TSR_LOG_WARN, "step %llu skipped: loss is %g",
                    (unsigned long long)t->steps, (double)l);
            return TSR_OK;
        }
        return tsr_error(t->ctx, TSR_ERR_NUMERIC, "loss is %g at step %llu (learning rate too high?)",
                         (double)l, (unsigned long long)t->steps);
    }
    TSR_TRY(tsr_stage_backward(t->stage, n, 0));
    if (check) {
        size_t np = tsr_stage_param_count(t->stage);
        TSR_TRY(tsr_buf_read(tsr_stage_grads(t->stage), 0, t->grads, np * sizeof(float)));
        /* tests/fault: TSR_FAULT_GRAD_NAN=<step> poisons one gradient at that step */
        const char *fault = getenv("TSR_FAULT_GRAD_NAN");
        if (fault && *fault && strtoull(fault, NULL, 10) == t->steps && np) t->grads[np / 2] = NAN;
        for (size_t i = 0; i < np; i++) {
            if (isfinite(t->grads[i])) continue;
            if (loss) *loss = l;
            if (t->o.nonfinite == TSR_NONFINITE_SKIP) {
                t->skipped++;
                tsr_log(t->ctx, TSR_LOG_WARN, "step %llu skipped: gradient %zu of %zu is %g",
                        (unsigned long long)t->steps, i, np, (double)t->grads[i]);
                return TSR_OK;
            }
            return tsr_error(t->ctx, TSR_ERR_NUMERIC, "gradient %zu of %zu is %g at step %llu%s", i,
                             np, (double)t->grads[i], (unsigned long long)t->steps,
                             isfinite(l) ? "" : " (non-finite loss)");
        }
    }
    float lr = tsr_schedule_lr(&t->o.schedule, t->o.optimizer.lr, t->steps);
    TSR_TRY(tsr_optim_update(t->optim, tsr_stage_params(t->stage), tsr_stage_grads(t->stage), lr,
                             t->steps));
    t->steps++;
    if (loss) *loss = l;
    return TSR_OK;
}

tsr_status tsr_trainer_evaluate(tsr_trainer *t, const tsr_dataset *d, double *accuracy, double *loss) {
    if (!t || !d) return TSR_ERR_INVALID_ARG;
    tsr_model_input in = tsr_model_get_input(t->model);
    if (d->features != in.channels * in.height * in.width)
        return tsr_error(t->ctx, TSR_ERR_SHAPE, "data set has %zu features per sample, model takes %zu",
                         d->features, in.channels * in.height * in.width);
    if (!d->count) return tsr_error(t->ctx, TSR_ERR_SHAPE, "evaluation on an empty data set");
    size_t correct = 0, classes = in.classes;
    double total = 0.0;
    tsr_ref probs = tsr_stage_probs(t->stage);
    for (size_t i = 0; i < d->count; i += t->o.batch) {
        size_t n = d->count - i < t->o.batch ? d->count - i : t->o.batch;
        float l;
        TSR_TRY(upload(t, d->images + i * d->features, d->labels + i, n));
        TSR_TRY(tsr_stage_forward(t->stage, n, 0, 0, &l));
        total += (double)l * (double)n;
        TSR_TRY(tsr_buf_read(probs.buf, probs.off * 4, t->probs, n * classes * sizeof(float)));
        for (size_t r = 0; r < n; r++) {
            const float *p = t->probs + r * classes;
            size_t best = 0;
            for (size_t c = 1; c < classes; c++)
                if (p[c] > p[best]) best = c;
            correct += best == (size_t)d->labels[i + r];
        }
    }
    if (accuracy) *accuracy = (double)correct / (double)d->count;
    if (loss) *loss = total / (double)d->count;
    return TSR_OK;
}

uint64_t tsr_trainer_steps(const tsr_trainer *t) { return t ? t->steps : 0; }
uint64_t tsr_trainer_skipped(const tsr_trainer *t) { return t ? t->skipped : 0; }
uint64_t tsr_trainer_epoch(const tsr_trainer *t) { return t ? t->epoch : 0; }
void tsr_trainer_set_epoch(tsr_trainer *t, uint64_t epoch) {
    if (t) t->epoch = epoch;
}
uint64_t tsr_trainer_seed(const tsr_trainer *t) { return t ? t->seed : 0; }
float tsr_trainer_lr(const tsr_trainer *t) {
    return t ? tsr_schedule_lr(&t->o.schedule, t->o.optimizer.lr, t->steps) : 0.0f;
}
const tsr_device_info *tsr_trainer_device(const tsr_trainer *t) {
    return t ? tsr_context_device(t->ctx, t->device) : NULL;
}

tsr_status tsr_trainer_get_params(tsr_trainer *t, float *dst, size_t count) {
    if (!t || (!dst && count)) return TSR_ERR_INVALID_ARG;
    size_t n = tsr_stage_param_count(t->stage);
    if (count != n)
        return tsr_error(t->ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu asked for", n, count);
    return tsr_buf_read(tsr_stage_params(t->stage), 0, dst, n * sizeof(float));
}

tsr_status tsr_trainer_set_params(tsr_trainer *t, const float *src, size_t count) {
    if (!t || (!src && count)) return TSR_ERR_INVALID_ARG;
    size_t n = tsr_stage_param_count(t->stage);
    if (count != n)
        return tsr_error(t->ctx, TSR_ERR_SHAPE, "model has %zu parameters, %zu given", n, count);
    return tsr_buf_write(tsr_stage_params(t->stage), 0, src, n * sizeof(float));
}

/* ---- checkpoints ---- */

/* Parameters first, then the optimizer's state tensors. */
static size_t tensor_list(tsr_trainer *t, const char *names[3], tsr_buf *bufs[3]) {
    names[0] = "params";
    bufs[0] = tsr_stage_params(t->stage);
    return 1 + tsr_optim_state(t->optim, names + 1, bufs + 1);
}

tsr_status tsr_trainer_save(tsr_trainer *t, const char *path) {
    if (!t || !path) return TSR_ERR_INVALID_ARG;
    const char *names[3];
    tsr_buf *bufs[3];
    size_t nt = tensor_list(t, names, bufs), n = tsr_stage_param_count(t->stage);
    tsr_checkpoint ck;
    tsr_checkpoint_tensor tensors[3];
    memset(&ck, 0, sizeof ck);
    memset(tensors, 0, sizeof tensors);
    const char *spec = tsr_model_spec(t->model);
    if (strlen(spec) >= sizeof ck.model_spec)
        return tsr_error(t->ctx, TSR_ERR_UNSUPPORTED, "model spec of %zu bytes is too long for a checkpoint",
                         strlen(spec));
    tsr_strlcpy(ck.model_spec, spec, sizeof ck.model_spec);
    tsr_strlcpy(ck.optimizer, tsr_optimizer_kind_name(t->o.optimizer.kind), sizeof ck.optimizer);
    ck.step = t->steps;
    ck.epoch = t->epoch;
    ck.seed = t->seed;
    memcpy(ck.rng_state, t->rng.s, sizeof ck.rng_state);
    ck.tensor_count = nt;
    ck.tensors = tensors;
    float *data = tsr_calloc(t->ctx, nt * (n ? n : 1), sizeof(float));
    if (!data) return tsr_error(t->ctx, TSR_ERR_NO_MEMORY, "checkpoint staging");
    tsr_status s = TSR_OK;
    for (size_t i = 0; i < nt && s == TSR_OK; i++) {
        tsr_strlcpy(tensors[i].name, names[i], sizeof tensors[i].name);
        tensors[i].count = n;
        tensors[i].data = data + i * n;
        s = tsr_buf_read(bufs[i], 0, tensors[i].data, n * sizeof(float));
    }
    if (s == TSR_OK) s = tsr_checkpoint_save(t->ctx, path, &ck);
    tsr_free(t->ctx, data);
    return s;
}

tsr_status tsr_trainer_load(tsr_trainer *t, const char *path) {
    if (!t || !path) return TSR_ERR_INVALID_ARG;
    tsr_checkpoint *ck = NULL;
    TSR_TRY(tsr_checkpoint_load(t->ctx, path, &ck));
    const char *names[3];
    tsr_buf *bufs[3];
    size_t nt = tensor_list(t, names, bufs), n = tsr_stage_param_count(t->stage);
    const char *spec = tsr_model_spec(t->model);
    const char *opt = tsr_optimizer_kind_name(t->o.optimizer.kind);
    tsr_status s = TSR_OK;
    if (strcmp(ck->model_spec, spec))
        s = tsr_error(t->ctx, TSR_ERR_MISMATCH, "%s: checkpoint is for model '%s', not '%s'", path,
                      ck->model_spec, spec);
    else if (strcmp(ck->optimizer, opt))
        s = tsr_error(t->ctx, TSR_ERR_MISMATCH, "%s: checkpoint optimizer is '%s', the trainer uses '%s'",
                      path, ck->optimizer, opt);
    /* check every tensor before touching the device, so a refused load changes nothing */
    for (size_t i = 0; i < nt && s == TSR_OK; i++) {
        const tsr_checkpoint_tensor *tt = tsr_checkpoint_find(ck, names[i]);
        if (!tt)
            s = tsr_error(t->ctx, TSR_ERR_MISMATCH, "%s: checkpoint has no tensor '%s'", path, names[i]);
        else if (tt->count != n)
            s = tsr_error(t->ctx, TSR_ERR_MISMATCH, "%s: tensor '%s' has %zu floats, the model needs %zu",
                          path, names[i], tt->count, n);
    }
    for (size_t i = 0; i < nt && s == TSR_OK; i++)
        s = tsr_buf_write(bufs[i], 0, tsr_checkpoint_find(ck, names[i])->data, n * sizeof(float));
    if (s == TSR_OK) {
        t->steps = ck->step;
        t->epoch = ck->epoch;
        t->seed = ck->seed;
        memcpy(t->rng.s, ck->rng_state, sizeof t->rng.s);
    }
    tsr_checkpoint_free(t->ctx, ck);
    return s;
}
