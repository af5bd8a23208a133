/* Trainer: a CI-sized Fashion-MNIST run that must reach a stated held-out accuracy,
 * bit-identical resume from a checkpoint (every device), refused mismatched checkpoints,
 * input validation, optimizer updates against a plain-C reference, schedules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/core/internal.h"
#include "lib/train/optim.h"
#include "support/mode_harness.h"
#include "support/test_util.h"

/* Sanitizer builds: PoCL and its LLVM leak their compiler state (a bare clBuildProgram does
 * too); full unwinding lets LeakSanitizer attribute those blocks so only they are suppressed. */
const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; }
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\n";
}

static tsr_context *ctx;
static char tmpdir[64];

static int setup(void **state) {
    (void)state;
    if (tsr_test_make_dir(tmpdir, sizeof tmpdir, "train-test")) return -1;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_HWLOC; /* devices through OpenCL only; keeps sanitizer runs clean */
    return tsr_context_create(&ctx, &o) == TSR_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    if (tsr_test_remove_dir(tmpdir)) return -1;
    tsr_context_free(ctx);
    return 0;
}

static tsr_model *parse(const char *spec, tsr_model_input in) {
    tsr_model *m = NULL;
    if (tsr_model_parse(ctx, spec, in, &m) != TSR_OK) {
        fprintf(stderr, "%s: %s\n", spec, tsr_context_last_error(ctx));
        fail();
    }
    return m;
}

/* CI-sized run: 2000 training images, 3 epochs of the mlp preset with Adam at batch 32 on
 * the host; must reach >= 0.75 accuracy on 1000 held-out test images (a full run reaches
 * ~0.89; chance is 0.10). Under emulation (TSR_TEST_EMULATED, cross ports under qemu) 600
 * images, 2 epochs and 500 test images, which must still reach >= 0.65. */
static void test_train_fashion_mnist_subset(void **state) {
    (void)state;
    const char *emu = getenv("TSR_TEST_EMULATED");
    int emulated = emu && *emu;
    size_t samples = emulated ? 600 : 2000, epochs = emulated ? 2 : 3;
    double target = emulated ? 0.65 : 0.75;
    tsr_dataset *train, *test;
    tsr_status st = tsr_mh_fmnist(ctx, NULL, samples, emulated ? 500 : 1000, 1, &train, &test);
    if (st == TSR_ERR_NOT_FOUND) /* make test turns a missing prerequisite into a failure */
        TSR_TEST_SKIP("missing Fashion-MNIST (Debian package dataset-fashion-mnist, or TSR_DATA_DIR): %s",
                      tsr_context_last_error(ctx));
    assert_int_equal(st, TSR_OK);
    tsr_model *m = parse("mlp", TSR_MODEL_INPUT_MNIST);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = 32;
    o.device = "host";
    tsr_trainer *t;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
    double acc0, loss0, acc, loss;
    assert_int_equal(tsr_trainer_evaluate(t, test, &acc0, &loss0), TSR_OK);
    tsr_loader_options lo = {o.batch, 7, 1, 0, 1, 0};
    tsr_loader *l;
    assert_int_equal(tsr_loader_create(ctx, train, &lo, &l), TSR_OK);
    float *x = malloc(o.batch * train->features * sizeof *x);
    int32_t *y = malloc(o.batch * sizeof *y);
    assert_true(x && y);
    double first = 0, last = 0;
    for (uint64_t e = 0; e < epochs; e++) {
        tsr_loader_start_epoch(l, e);
        size_t n, steps = 0;
        double sum = 0;
        while ((n = tsr_loader_next(l, x, y)) > 0) {
            float lv;
            assert_int_equal(tsr_trainer_step(t, x, y, n, &lv), TSR_OK);
            sum += lv;
            steps++;
        }
        if (e == 0) first = sum / (double)steps;
        last = sum / (double)steps;
    }
    assert_int_equal(tsr_trainer_steps(t), epochs * ((samples + 31) / 32));
    assert_int_equal(tsr_trainer_evaluate(t, test, &acc, &loss), TSR_OK);
    fprintf(stderr, "subset run: held-out accuracy %.4f -> %.4f, loss %.4f -> %.4f; train loss %.4f -> %.4f\n",
            acc0, acc, loss0, loss, first, last);
    assert_true(acc >= target);
    assert_true(loss < loss0);
    assert_true(last < first);
    free(x);
    free(y);
    tsr_loader_free(l);
    tsr_trainer_free(t);
    tsr_model_free(m);
    tsr_dataset_free(ctx, train);
    tsr_dataset_free(ctx, test);
}

/* Deterministic synthetic batch: images in [-1,1), labels in [0, classes). */
static void make_batch(float *x, int32_t *y, size_t n, size_t features, size_t classes, uint64_t seed) {
    tsr_test_fill_uniform(x, n * features, seed, -1.0f, 1.0f);
    for (size_t i = 0; i < n; i++) y[i] = (int32_t)((seed * 31 + i * 7) % classes);
}

static void check_resume(int dev, const char *spec, tsr_optimizer_kind kind) {
    const tsr_model_input in = {1, 6, 6, 5};
    const size_t B = 8, F = 36, K = 4;
    tsr_model *m = parse(spec, in);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    char dev_id[16];
    snprintf(dev_id, sizeof dev_id, "%d", dev);
    o.device = dev_id;
    o.batch = B;
    o.optimizer.kind = kind;
    o.optimizer.lr = kind == TSR_OPTIM_SGD ? 0.05f : 0.01f;
    o.optimizer.nesterov = kind == TSR_OPTIM_SGD;
    o.optimizer.weight_decay = 1e-3f;
    o.schedule.kind = TSR_SCHEDULE_COSINE;
    o.schedule.warmup_steps = 2;
    o.schedule.total_steps = 10;
    o.seed = 42;
    float x[8 * 36];
    int32_t y[8];
    float la[4], lb[4];
    size_t np = tsr_model_param_count(m);
    float *pa = malloc(np * sizeof *pa), *pb = malloc(np * sizeof *pb);
    assert_true(pa && pb);
    char path[128];
    snprintf(path, sizeof path, "%s/resume-%d-%d.ckpt", tmpdir, dev, (int)kind);

    tsr_trainer *a, *b;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &a), TSR_OK);
    for (size_t s = 0; s < K; s++) {
        make_batch(x, y, B, F, in.classes, s + 1);
        assert_int_equal(tsr_trainer_step(a, x, y, B - (s & 1), NULL), TSR_OK);
    }
    tsr_trainer_set_epoch(a, 3);
    assert_int_equal(tsr_trainer_set_metadata(a, "[1]"), TSR_ERR_INVALID_ARG); /* not an object */
    assert_null(tsr_trainer_metadata(a));
    assert_int_equal(tsr_trainer_set_metadata(a, "{\"train_loss\":0.1}"), TSR_OK);
    assert_int_equal(tsr_trainer_save(a, path), TSR_OK);
    for (size_t s = 0; s < K; s++) {
        make_batch(x, y, B, F, in.classes, 100 + s);
        assert_int_equal(tsr_trainer_step(a, x, y, B, &la[s]), TSR_OK);
    }
    assert_int_equal(tsr_trainer_get_params(a, pa, np), TSR_OK);

    o.seed = 7; /* the checkpoint's seed and RNG state win */
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &b), TSR_OK);
    assert_int_equal(tsr_trainer_load(b, path), TSR_OK);
    assert_int_equal(tsr_trainer_steps(b), K);
    assert_int_equal(tsr_trainer_epoch(b), 3);
    assert_int_equal(tsr_trainer_seed(b), 42);
    assert_string_equal(tsr_trainer_metadata(b), "{\"train_loss\":0.1}"); /* the checkpoint's */
    assert_true(tsr_trainer_lr(b) == tsr_schedule_lr(&o.schedule, o.optimizer.lr, K));
    for (size_t s = 0; s < K; s++) {
        make_batch(x, y, B, F, in.classes, 100 + s);
        assert_int_equal(tsr_trainer_step(b, x, y, B, &lb[s]), TSR_OK);
    }
    assert_int_equal(tsr_trainer_get_params(b, pb, np), TSR_OK);
    assert_memory_equal(la, lb, sizeof la);      /* bit-identical losses */
    assert_memory_equal(pa, pb, np * sizeof *pa); /* and parameters */
    tsr_trainer_free(a);
    tsr_trainer_free(b);
    free(pa);
    free(pb);
    tsr_model_free(m);
}

static void test_resume_bit_identical(void **state) {
    (void)state;
    for (int d = 0; d < tsr_context_device_count(ctx); d++) {
        check_resume(d, "conv3x3:4,relu,pool2,dropout:0.3,dense:12,relu,dense:5", TSR_OPTIM_SGD);
        check_resume(d, "conv3x3:4,relu,pool2,dropout:0.3,dense:12,relu,dense:5", TSR_OPTIM_ADAMW);
        check_resume(d, "dense:16,relu,dropout:0.5,dense:5", TSR_OPTIM_ADAM);
    }
}

static void test_init_identical_on_every_device(void **state) {
    (void)state;
    tsr_model *m = parse("conv3x3:4,relu,pool2,dense:12,relu,dense:5", (tsr_model_input){1, 6, 6, 5});
    size_t np = tsr_model_param_count(m);
    float *p0 = malloc(np * 4), *p = malloc(np * 4);
    assert_true(p0 && p);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.seed = 5;
    for (int d = 0; d < tsr_context_device_count(ctx); d++) {
        char id[16];
        snprintf(id, sizeof id, "%d", d);
        o.device = id;
        tsr_trainer *t;
        assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
        assert_int_equal(tsr_trainer_get_params(t, d ? p : p0, np), TSR_OK);
        if (d) assert_memory_equal(p, p0, np * 4);
        tsr_trainer_free(t);
    }
    /* He-uniform bound sqrt(6/fan_in) for the first conv: fan_in = 9; biases are zero */
    double bound = sqrt(6.0 / 9.0), maxabs = 0;
    size_t conv_w = 4 * 9, last = np - conv_w - 4; /* reverse layout: first layer at the end */
    for (size_t i = 0; i < conv_w; i++) maxabs = fmax(maxabs, fabs(p0[last + i]));
    assert_true(maxabs <= bound && maxabs > 0.5 * bound);
    for (size_t i = 0; i < 4; i++) assert_true(p0[np - 4 + i] == 0.0f);
    free(p0);
    free(p);
    tsr_model_free(m);
}

static void test_checkpoint_mismatch(void **state) {
    (void)state;
    const tsr_model_input in = {1, 4, 4, 3};
    tsr_model *m1 = parse("dense:8,relu,dense:3", in), *m2 = parse("dense:6,relu,dense:3", in);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = 4;
    tsr_trainer *a, *b, *c;
    assert_int_equal(tsr_trainer_create(ctx, m1, &o, &a), TSR_OK);
    assert_int_equal(tsr_trainer_create(ctx, m2, &o, &b), TSR_OK);
    char path[128], path2[128];
    snprintf(path, sizeof path, "%s/m1.ckpt", tmpdir);
    snprintf(path2, sizeof path2, "%s/forged.ckpt", tmpdir);
    assert_int_equal(tsr_trainer_save(a, path), TSR_OK);

    size_t np = tsr_model_param_count(m2);
    float *before = malloc(np * 4), *after = malloc(np * 4);
    assert_true(before && after);
    assert_int_equal(tsr_trainer_get_params(b, before, np), TSR_OK);
    assert_int_equal(tsr_trainer_load(b, path), TSR_ERR_MISMATCH);
    assert_non_null(strstr(tsr_context_last_error(ctx),
                           "checkpoint is for model 'dense:8,relu,dense:3', not 'dense:6,relu,dense:3'"));
    assert_int_equal(tsr_trainer_get_params(b, after, np), TSR_OK);
    assert_memory_equal(before, after, np * 4); /* a refused load changes nothing */

    /* same model, other optimizer */
    o.optimizer.kind = TSR_OPTIM_SGD;
    o.optimizer.lr = 0.1f;
    assert_int_equal(tsr_trainer_create(ctx, m1, &o, &c), TSR_OK);
    assert_int_equal(tsr_trainer_load(c, path), TSR_ERR_MISMATCH);
    assert_non_null(strstr(tsr_context_last_error(ctx), "checkpoint optimizer is 'adam', the trainer uses 'sgd'"));

    /* right spec, wrong tensor size, and a missing tensor */
    size_t n1 = tsr_model_param_count(m1);
    float *zeros = calloc(n1 + 1, sizeof *zeros);
    assert_non_null(zeros);
    tsr_checkpoint_tensor ts[3] = {{"params", n1 + 1, zeros}, {"adam.m", n1, zeros}, {"adam.v", n1, zeros}};
    tsr_checkpoint ck;
    memset(&ck, 0, sizeof ck);
    tsr_strlcpy(ck.model_spec, tsr_model_spec(m1), sizeof ck.model_spec);
    tsr_strlcpy(ck.optimizer, "adam", sizeof ck.optimizer);
    ck.tensor_count = 3;
    ck.tensors = ts;
    assert_int_equal(tsr_checkpoint_save(ctx, path2, &ck), TSR_OK);
    assert_int_equal(tsr_trainer_load(a, path2), TSR_ERR_MISMATCH);
    char want[128];
    snprintf(want, sizeof want, "tensor 'params' has %zu floats, the model needs %zu", n1 + 1, n1);
    assert_non_null(strstr(tsr_context_last_error(ctx), want));
    ts[0].count = n1;
    ck.tensor_count = 2;
    assert_int_equal(tsr_checkpoint_save(ctx, path2, &ck), TSR_OK);
    assert_int_equal(tsr_trainer_load(a, path2), TSR_ERR_MISMATCH);
    assert_non_null(strstr(tsr_context_last_error(ctx), "checkpoint has no tensor 'adam.v'"));
    snprintf(path2, sizeof path2, "%s/missing.ckpt", tmpdir);
    assert_int_not_equal(tsr_trainer_load(a, path2), TSR_OK);

    free(zeros);
    free(before);
    free(after);
    tsr_trainer_free(a);
    tsr_trainer_free(b);
    tsr_trainer_free(c);
    tsr_model_free(m1);
    tsr_model_free(m2);
}

static void test_bad_input(void **state) {
    (void)state;
    const tsr_model_input in = {1, 2, 2, 3};
    tsr_model *m = parse("dense:3", in);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = 4;
    tsr_trainer *t;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
    float x[16] = {0};
    int32_t y[4] = {0, 1, 3, 2};
    assert_int_equal(tsr_trainer_step(t, x, y, 4, NULL), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "label 3 of sample 2 is not in [0, 3)"));
    y[2] = -1;
    assert_int_equal(tsr_trainer_step(t, x, y, 4, NULL), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "label -1 of sample 2"));
    y[2] = 2;
    assert_int_equal(tsr_trainer_step(t, x, y, 5, NULL), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "batch of 5 samples: the trainer takes 1 to 4"));
    assert_int_equal(tsr_trainer_step(t, x, y, 0, NULL), TSR_ERR_SHAPE);
    assert_int_equal(tsr_trainer_step(t, NULL, y, 4, NULL), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_trainer_steps(t), 0);
    assert_int_equal(tsr_trainer_step(t, x, y, 4, NULL), TSR_OK);
    assert_int_equal(tsr_trainer_steps(t), 1);
    float p[15];
    assert_int_equal(tsr_trainer_get_params(t, p, 14), TSR_ERR_SHAPE);
    assert_int_equal(tsr_trainer_get_params(t, p, 15), TSR_OK);
    /* evaluation refuses a data set of another shape */
    tsr_dataset d = {1, 1, 3, 3, 9, 3, x, y, NULL, 1};
    assert_int_equal(tsr_trainer_evaluate(t, &d, NULL, NULL), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "data set has 9 features and 1 labels per sample, the model takes 4 and 1"));
    tsr_trainer_free(t);

    /* options */
    tsr_trainer_options bad = o;
    bad.device = "no-such-device";
    assert_int_equal(tsr_trainer_create(ctx, m, &bad, &t), TSR_ERR_NOT_FOUND);
    assert_non_null(strstr(tsr_context_last_error(ctx), "device 'no-such-device' not found"));
    bad = o;
    bad.batch = 0;
    assert_int_equal(tsr_trainer_create(ctx, m, &bad, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "batch size 0"));
    bad = o;
    bad.optimizer.lr = 0;
    assert_int_equal(tsr_trainer_create(ctx, m, &bad, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "learning rate 0 must be positive"));
    bad = o;
    bad.optimizer.kind = TSR_OPTIM_SGD;
    bad.optimizer.momentum = 1.0f;
    assert_int_equal(tsr_trainer_create(ctx, m, &bad, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "momentum 1 must be in [0, 1)"));
    bad = o;
    bad.optimizer.beta2 = 1.0f;
    assert_int_equal(tsr_trainer_create(ctx, m, &bad, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "beta2 1 must be in [0, 1)"));
    bad = o;
    bad.optimizer.weight_decay = -1;
    assert_int_equal(tsr_trainer_create(ctx, m, &bad, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "weight decay -1"));
    tsr_model *incomplete = parse("dense:3", in);
    assert_int_equal(tsr_model_add_dense(incomplete, 4), TSR_OK);
    assert_int_equal(tsr_trainer_create(ctx, incomplete, &o, &t), TSR_ERR_SHAPE);
    assert_non_null(strstr(tsr_context_last_error(ctx), "last layer gives 4 outputs"));
    tsr_model_free(incomplete);
    tsr_model_free(m);
}

/* The optimizer over three steps against the formulas, in double. */
static void test_optimizer_reference(void **state) {
    (void)state;
    const size_t n = 37;
    float w0[37], g[3][37], w[37];
    tsr_test_fill_uniform(w0, n, 1, -1, 1);
    for (int s = 0; s < 3; s++) tsr_test_fill_uniform(g[s], n, 10 + (uint64_t)s, -1, 1);
    tsr_backend *be;
    assert_int_equal(tsr_backend_open(ctx, 0, &be), TSR_OK);
    for (int kind = 0; kind < 4; kind++) {
        tsr_optimizer_options o = {TSR_OPTIM_SGD, 0.1f, 0.9f, kind == 1, 0.9f, 0.99f, 1e-6f, 0.01f};
        if (kind >= 2) o.kind = kind == 2 ? TSR_OPTIM_ADAM : TSR_OPTIM_ADAMW;
        tsr_optim *opt;
        tsr_buf *wb, *gb;
        assert_int_equal(tsr_optim_create(be, &o, n, &opt), TSR_OK);
        assert_int_equal(tsr_buf_alloc(be, n * 4, &wb), TSR_OK);
        assert_int_equal(tsr_buf_alloc(be, n * 4, &gb), TSR_OK);
        assert_int_equal(tsr_buf_write(wb, 0, w0, n * 4), TSR_OK);
        double rw[37], m[37] = {0}, v[37] = {0};
        for (size_t i = 0; i < n; i++) rw[i] = w0[i];
        for (int s = 0; s < 3; s++) {
            float lr = 0.1f / (float)(s + 1);
            assert_int_equal(tsr_buf_write(gb, 0, g[s], n * 4), TSR_OK);
            assert_int_equal(tsr_optim_update(opt, wb, gb, lr, (uint64_t)s), TSR_OK);
            for (size_t i = 0; i < n; i++) {
                double gi = g[s][i];
                if (o.kind == TSR_OPTIM_SGD) {
                    gi += o.weight_decay * rw[i];
                    v[i] = o.momentum * v[i] + gi;
                    rw[i] -= lr * (o.nesterov ? gi + o.momentum * v[i] : v[i]);
                } else {
                    if (o.kind == TSR_OPTIM_ADAM) gi += o.weight_decay * rw[i];
                    m[i] = o.beta1 * m[i] + (1 - o.beta1) * gi;
                    v[i] = o.beta2 * v[i] + (1 - o.beta2) * gi * gi;
                    double mh = m[i] / (1 - pow(o.beta1, s + 1)), vh = v[i] / (1 - pow(o.beta2, s + 1));
                    double wd = o.kind == TSR_OPTIM_ADAMW ? lr * o.weight_decay * rw[i] : 0;
                    rw[i] -= lr * mh / (sqrt(vh) + o.eps) + wd;
                }
            }
        }
        assert_int_equal(tsr_buf_read(wb, 0, w, n * 4), TSR_OK);
        for (size_t i = 0; i < n; i++)
            if (fabs(w[i] - rw[i]) > 1e-5 + 1e-5 * fabs(rw[i])) {
                fprintf(stderr, "optimizer %d: w[%zu] = %.8g, reference %.8g\n", kind, i, (double)w[i], rw[i]);
                fail();
            }
        tsr_buf_free(wb);
        tsr_buf_free(gb);
        tsr_optim_free(opt);
    }
    tsr_backend_free(be);
}

static void test_schedules(void **state) {
    (void)state;
    tsr_schedule_options s = {TSR_SCHEDULE_CONSTANT, 0, 0, 0, 0, 0};
    assert_true(tsr_schedule_lr(&s, 0.5f, 1000) == 0.5f);
    s.warmup_steps = 4;
    assert_true(fabsf(tsr_schedule_lr(&s, 0.5f, 0) - 0.125f) < 1e-7f);
    assert_true(fabsf(tsr_schedule_lr(&s, 0.5f, 3) - 0.5f) < 1e-7f);
    s.kind = TSR_SCHEDULE_STEP;
    s.step_size = 10;
    s.gamma = 0.5f;
    assert_true(fabsf(tsr_schedule_lr(&s, 0.8f, 4 + 9) - 0.8f) < 1e-7f);
    assert_true(fabsf(tsr_schedule_lr(&s, 0.8f, 4 + 10) - 0.4f) < 1e-7f);
    assert_true(fabsf(tsr_schedule_lr(&s, 0.8f, 4 + 25) - 0.2f) < 1e-7f);
    s.kind = TSR_SCHEDULE_COSINE;
    s.total_steps = 100;
    s.min_lr = 0.1f;
    for (uint64_t t = 0; t <= 120; t += 7) {
        double want = t >= 100 ? 0.1 : 0.1 + 0.9 * 0.5 * (1 + cos(M_PI * (double)t / 100.0));
        assert_true(fabs(tsr_schedule_lr(&s, 1.0f, 4 + t) - want) < 1e-6);
    }
    tsr_optimizer_kind k;
    tsr_schedule_kind sk;
    assert_int_equal(tsr_optimizer_kind_parse("adamw", &k), TSR_OK);
    assert_int_equal(k, TSR_OPTIM_ADAMW);
    assert_int_equal(tsr_optimizer_kind_parse("rmsprop", &k), TSR_ERR_PARSE);
    assert_int_equal(tsr_schedule_kind_parse("cosine", &sk), TSR_OK);
    assert_int_equal(sk, TSR_SCHEDULE_COSINE);
    assert_int_equal(tsr_schedule_kind_parse("linear", &sk), TSR_ERR_PARSE);
}

/* Evaluation does not depend on how the set is cut into batches, and matches a step's loss. */
static void test_evaluate_batching(void **state) {
    (void)state;
    const tsr_model_input in = {1, 3, 3, 4};
    tsr_model *m = parse("dense:6,relu,dense:4", in);
    float x[10 * 9];
    int32_t y[10];
    make_batch(x, y, 10, 9, 4, 3);
    tsr_dataset d = {10, 1, 3, 3, 9, 4, x, y, NULL, 1};
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    double acc[2], loss[2];
    for (int i = 0; i < 2; i++) {
        o.batch = i ? 3 : 16;
        tsr_trainer *t;
        assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
        assert_int_equal(tsr_trainer_evaluate(t, &d, &acc[i], &loss[i]), TSR_OK);
        if (i == 0) {
            float l;
            assert_int_equal(tsr_trainer_step(t, x, y, 10, &l), TSR_OK);
            assert_true(fabs(l - loss[0]) < 1e-5);
        }
        tsr_trainer_free(t);
    }
    assert_true(acc[0] == acc[1]);
    assert_true(fabs(loss[0] - loss[1]) < 1e-6);
    tsr_model_free(m);
}

/* tsr_trainer_get_grads: the last step's gradient of the mean batch loss, in the flat layout,
 * against central differences of the loss (tsr_trainer_evaluate on the same batch, in float:
 * eps 1e-3 leaves ~1e-4 of rounding in a difference quotient); refused before any step and for
 * another count. */
static void test_get_grads_finite_differences(void **state) {
    (void)state;
    const tsr_model_input in = {1, 3, 3, 4};
    tsr_model *m = parse("dense:6,relu,dense:4", in);
    enum { N = 10 };
    float x[N * 9];
    int32_t y[N];
    make_batch(x, y, N, 9, 4, 5);
    tsr_dataset d = {N, 1, 3, 3, 9, 4, x, y, NULL, 1};
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.batch = N;
    tsr_trainer *t;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
    size_t np = tsr_model_param_count(m);
    float *p0 = malloc(np * sizeof *p0), *g = malloc(np * sizeof *g), *p = malloc(np * sizeof *p);
    assert_int_equal(tsr_trainer_get_grads(t, g, np), TSR_ERR_STATE);
    assert_int_equal(tsr_trainer_get_params(t, p0, np), TSR_OK);
    assert_int_equal(tsr_trainer_step(t, x, y, N, NULL), TSR_OK);
    assert_int_equal(tsr_trainer_get_grads(t, g, np - 1), TSR_ERR_SHAPE);
    assert_int_equal(tsr_trainer_get_grads(t, g, np), TSR_OK);
    const float eps = 1e-3f;
    double worst = 0.0, norm = 0.0;
    for (size_t i = 0; i < np; i++) {
        double l[2];
        for (int k = 0; k < 2; k++) {
            memcpy(p, p0, np * sizeof *p);
            p[i] += k ? -eps : eps;
            assert_int_equal(tsr_trainer_set_params(t, p, np), TSR_OK);
            assert_int_equal(tsr_trainer_evaluate(t, &d, NULL, &l[k]), TSR_OK);
        }
        double fd = (l[0] - l[1]) / (2.0 * (double)eps), e = fabs(fd - g[i]) / (1e-3 + 1e-2 * fabs(fd));
        if (e > worst) worst = e;
        norm += (double)g[i] * g[i];
    }
    if (worst > 1.0) fprintf(stderr, "get_grads: %g x tolerance from the finite differences\n", worst);
    assert_true(worst <= 1.0);
    assert_true(norm > 1e-4); /* not a zero gradient passing by tolerance */
    free(p0);
    free(g);
    free(p);
    tsr_trainer_free(t);
    tsr_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_fashion_mnist_subset),
        cmocka_unit_test(test_resume_bit_identical),
        cmocka_unit_test(test_init_identical_on_every_device),
        cmocka_unit_test(test_checkpoint_mismatch),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_optimizer_reference),
        cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_evaluate_batching),
        cmocka_unit_test(test_get_grads_finite_differences),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
