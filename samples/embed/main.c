/* A host application embedding tessera: it links the installed static library through
 * pkg-config, uses only the public API (<tessera.h>), and trains a small model on a synthetic
 * task it generates itself. Exits non-zero when a call fails or the model does not learn. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <tessera.h>

#define SIDE 8
#define CLASSES 4

#define CHECK(call)                                                                        \
    do {                                                                                   \
        tsr_status st_ = (call);                                                           \
        if (st_ != TSR_OK) {                                                               \
            fprintf(stderr, "embed-app: %s failed: %s (%s)\n", #call, tsr_status_str(st_), \
                    tsr_context_last_error(ctx));                                          \
            goto done;                                                                     \
        }                                                                                  \
    } while (0)

static uint32_t next_random(uint64_t *s) { /* xorshift64*: the app's own noise */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (uint32_t)((*s * 2685821657736338717ull) >> 32);
}

/* Class c: a bright bar on rows 2c and 2c+1 of an 8x8 image, over uniform noise in [0, 0.5). */
static void fill(tsr_dataset *d, uint64_t seed) {
    for (size_t i = 0; i < d->count; i++) {
        int32_t c = (int32_t)(next_random(&seed) % CLASSES);
        float *img = d->images + i * d->features;
        for (size_t p = 0; p < d->features; p++) {
            img[p] = 0.5f * (float)(next_random(&seed) >> 8) / (float)(1u << 24);
            if (p / SIDE / 2 == (size_t)c) img[p] += 0.5f;
        }
        d->labels[i] = c;
    }
}

int main(void) {
    tsr_context *ctx = NULL;
    tsr_model *model = NULL;
    tsr_dataset *train = NULL, *test = NULL;
    tsr_loader *loader = NULL;
    tsr_trainer *trainer = NULL;
    float *images = NULL;
    int32_t *labels = NULL;
    int rc = 1;

    printf("tessera %s\n", tsr_version());
    if (tsr_context_create(&ctx, NULL) != TSR_OK) {
        fprintf(stderr, "embed-app: no context\n");
        return 1;
    }
    for (int i = 0; i < tsr_context_device_count(ctx); i++) {
        const tsr_device_info *d = tsr_context_device(ctx, i);
        printf("device %d: %-14s %s\n", i, d->id, d->name);
    }

    tsr_model_input input = {1, SIDE, SIDE, CLASSES};
    CHECK(tsr_model_parse(ctx, "dense:32,relu,dense:4", input, &model));
    size_t want = (SIDE * SIDE * 32 + 32) + (32 * CLASSES + CLASSES);
    if (tsr_model_param_count(model) != want) {
        fprintf(stderr, "embed-app: %zu parameters, expected %zu\n", tsr_model_param_count(model),
                want);
        goto done;
    }
    CHECK(tsr_model_summary(model, stdout));

    CHECK(tsr_dataset_create(ctx, 512, 1, SIDE, SIDE, CLASSES, &train));
    CHECK(tsr_dataset_create(ctx, 256, 1, SIDE, SIDE, CLASSES, &test));
    fill(train, 1);
    fill(test, 2);

    tsr_trainer_options topt;
    tsr_trainer_options_init(&topt);
    topt.device = "host";
    topt.batch = 32;
    topt.optimizer.lr = 0.01f;
    CHECK(tsr_trainer_create(ctx, model, &topt, &trainer));
    tsr_loader_options lopt = {.batch = topt.batch, .seed = 7, .shuffle = 1, .rank = 0, .nranks = 1};
    CHECK(tsr_loader_create(ctx, train, &lopt, &loader));
    images = malloc(topt.batch * train->features * sizeof *images);
    labels = malloc(topt.batch * sizeof *labels);
    if (!images || !labels) {
        fprintf(stderr, "embed-app: out of memory\n");
        goto done;
    }

    double acc0, loss0, acc = 0, loss = 0;
    CHECK(tsr_trainer_evaluate(trainer, test, &acc0, &loss0));
    printf("before training: test accuracy %.3f, loss %.3f\n", acc0, loss0);
    for (uint64_t epoch = 0; epoch < 5; epoch++) {
        tsr_loader_start_epoch(loader, epoch);
        size_t n;
        while ((n = tsr_loader_next(loader, images, labels)) > 0)
            CHECK(tsr_trainer_step(trainer, images, labels, n, NULL));
        CHECK(tsr_trainer_evaluate(trainer, test, &acc, &loss));
        printf("epoch %llu: test accuracy %.3f, loss %.3f\n", (unsigned long long)epoch + 1, acc,
               loss);
    }
    /* The bars are plain to see: a working trainer separates them almost perfectly. */
    if (acc < 0.9 || !(loss < loss0)) {
        fprintf(stderr, "embed-app: did not learn (accuracy %.3f, loss %.3f -> %.3f)\n", acc, loss0,
                loss);
        goto done;
    }
    printf("embed-app: ok\n");
    rc = 0;
done:
    free(images);
    free(labels);
    tsr_trainer_free(trainer);
    tsr_loader_free(loader);
    tsr_dataset_free(ctx, test);
    tsr_dataset_free(ctx, train);
    tsr_model_free(model);
    tsr_context_free(ctx);
    return rc;
}
