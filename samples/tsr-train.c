/* tsr-train: trains a model on Fashion-MNIST (or any MNIST-format folder) on one device.
 *   tsr-train --model cnn --epochs 8 --json
 * Progress on stderr; per-epoch test accuracy on stdout (stderr with --json, whose single
 * JSON line is then the only stdout output). */
#include <cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "tessera.h"
#include "lib/cli.h"

/* Fashion-MNIST training-set pixel statistics (after scaling to [0,1]). */
#define FMNIST_MEAN 0.2860f
#define FMNIST_STD 0.3530f

typedef tsr_cli_train args;

static void usage(FILE *f) {
    fprintf(f,
            "usage: tsr-train [options]\n"
            "  --model SPEC|mlp|cnn   model spec or preset (default mlp)\n"
            "  --epochs N             training epochs (default 5)\n"
            "  --batch N              mini-batch size (default 64)\n"
            "  --optimizer NAME       sgd, adam or adamw (default adam)\n"
            "  --lr X                 base learning rate (default 0.001 for adam, 0.05 for sgd)\n"
            "  --momentum X           SGD momentum (default 0.9)\n"
            "  --nesterov             SGD with Nesterov momentum\n"
            "  --weight-decay X       weight decay (default 0)\n"
            "  --schedule NAME        constant, step or cosine (default cosine)\n"
            "  --warmup N             linear warm-up steps in front of the schedule (default 0)\n"
            "  --seed N               initialisation, shuffling and dropout seed (default 1)\n"
            "  --data DIR             MNIST-format folder (default $TSR_DATA_DIR or Fashion-MNIST)\n"
            "  --limit N              use only the first N training samples\n"
            "  --device ID            device id or index (default 0 = host; see tsr-topo)\n"
            "  --checkpoint FILE      save a checkpoint after every epoch\n"
            "  --resume FILE          continue from a checkpoint\n"
            "  --summary              print the model summary first\n"
            "  --quiet                no progress bar\n"
            "  --json                 print one JSON result line on stdout\n"
            "  --help\n");
}

static int bad_option(const char *opt, const char *why) {
    fprintf(stderr, "tsr-train: option %s: %s\n", opt, why);
    usage(stderr);
    return 2;
}

static int parse_args(int argc, char **argv, args *a) {
    if (tsr_cli_parse_train(argc, argv, a) != TSR_OK) {
        fprintf(stderr, "tsr-train: %s\n", a->error);
        usage(stderr);
        return 2;
    }
    if (a->help) {
        usage(stdout);
        exit(0);
    }
    return 0;
}

static void progress(const char *what, size_t done, size_t total, double rate, double loss) {
    int width = 30, fill = total ? (int)((double)width * (double)done / (double)total) : width;
    fprintf(stderr, "\r%s [", what);
    for (int i = 0; i < width; i++) fputc(i < fill ? '=' : (i == fill ? '>' : ' '), stderr);
    fprintf(stderr, "] %zu/%zu  %.0f samples/s  loss %.4f ", done, total, rate, loss);
    fflush(stderr);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(tsr_context *ctx, tsr_status s, const char *what) {
    fprintf(stderr, "tsr-train: %s: %s (%s)\n", what, tsr_context_last_error(ctx), tsr_status_str(s));
    exit(1);
}

int main(int argc, char **argv) {
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    tsr_trainer_options to;
    tsr_trainer_options_init(&to);
    if (tsr_optimizer_kind_parse(a.optimizer, &to.optimizer.kind) != TSR_OK)
        return bad_option("--optimizer", "must be sgd, adam or adamw");
    if (tsr_schedule_kind_parse(a.schedule, &to.schedule.kind) != TSR_OK)
        return bad_option("--schedule", "must be constant, step or cosine");
    to.optimizer.lr = (float)(a.lr > 0 ? a.lr : to.optimizer.kind == TSR_OPTIM_SGD ? 0.05 : 1e-3);
    to.optimizer.momentum = (float)a.momentum;
    to.optimizer.nesterov = a.nesterov;
    to.optimizer.weight_decay = (float)a.weight_decay;
    to.batch = (size_t)a.batch;
    to.seed = a.seed;
    to.device = a.device;

    tsr_context *ctx;
    tsr_context_options co;
    tsr_context_options_init(&co);
    if (!a.device || !strcmp(a.device, "host") || !strcmp(a.device, "0")) co.flags |= TSR_CONTEXT_NO_OPENCL; /* the host needs no OpenCL start-up */
    tsr_status s = tsr_context_create(&ctx, &co);
    if (s != TSR_OK) {
        fprintf(stderr, "tsr-train: context: %s\n", tsr_status_str(s));
        return 1;
    }
    tsr_dataset *train = NULL, *test = NULL;
    if ((s = tsr_dataset_load_mnist_dir(ctx, a.data, 1, &train)) != TSR_OK) die(ctx, s, "training data");
    if ((s = tsr_dataset_load_mnist_dir(ctx, a.data, 0, &test)) != TSR_OK) die(ctx, s, "test data");
    if (a.limit) tsr_dataset_truncate(train, (size_t)a.limit);
    tsr_dataset_normalize(ctx, train, FMNIST_MEAN, FMNIST_STD);
    tsr_dataset_normalize(ctx, test, FMNIST_MEAN, FMNIST_STD);

    tsr_model *model;
    tsr_model_input in = {train->channels, train->height, train->width,
                          train->classes > test->classes ? train->classes : test->classes};
    if ((s = tsr_model_parse(ctx, a.model, in, &model)) != TSR_OK) {
        fprintf(stderr, "tsr-train: option --model: %s\n", tsr_context_last_error(ctx));
        return 2;
    }
    if (a.summary) tsr_model_summary(model, stderr);

    tsr_loader_options lo = {to.batch, a.seed, 1, 0, 1, 0};
    tsr_loader *loader;
    if ((s = tsr_loader_create(ctx, train, &lo, &loader)) != TSR_OK) die(ctx, s, "loader");
    size_t per_epoch = tsr_loader_batches(loader);
    to.schedule.warmup_steps = (uint64_t)a.warmup;
    to.schedule.step_size = per_epoch * 3; /* step schedule: x0.1 every 3 epochs */
    uint64_t total = (uint64_t)a.epochs * per_epoch;
    to.schedule.total_steps = total > to.schedule.warmup_steps ? total - to.schedule.warmup_steps : 1;
    to.schedule.min_lr = 0.0f;

    tsr_trainer *tr;
    if ((s = tsr_trainer_create(ctx, model, &to, &tr)) != TSR_OK) die(ctx, s, "trainer");
    if (a.resume && (s = tsr_trainer_load(tr, a.resume)) != TSR_OK) die(ctx, s, "resume");
    if (a.resume) {
        /* shuffling continues from the checkpoint's seed */
        lo.seed = tsr_trainer_seed(tr);
        tsr_loader_free(loader);
        if ((s = tsr_loader_create(ctx, train, &lo, &loader)) != TSR_OK) die(ctx, s, "loader");
    }

    FILE *log = a.json ? stderr : stdout;
    float *images = malloc(to.batch * train->features * sizeof *images);
    int32_t *labels = malloc(to.batch * sizeof *labels);
    if (!images || !labels) {
        fprintf(stderr, "tsr-train: out of memory\n");
        return 1;
    }
    double train_time = 0, acc = 0, test_loss = 0, last_loss = NAN;
    size_t trained = 0;
    int tty = isatty(2) && !a.quiet;
    for (uint64_t e = tsr_trainer_epoch(tr); e < (uint64_t)a.epochs; e++) {
        tsr_loader_start_epoch(loader, e);
        char what[32];
        snprintf(what, sizeof what, "epoch %llu/%ld", (unsigned long long)e + 1, a.epochs);
        double t0 = now_seconds(), last_print = 0, sum = 0;
        size_t done = 0, n, steps = 0;
        while ((n = tsr_loader_next(loader, images, labels)) > 0) {
            float loss;
            if ((s = tsr_trainer_step(tr, images, labels, n, &loss)) != TSR_OK) die(ctx, s, "step");
            sum += loss;
            steps++;
            done += n;
            double now = now_seconds();
            if (!a.quiet && (now - last_print > (tty ? 0.2 : 5.0) || done == train->count)) {
                progress(what, done, train->count, (double)done / (now - t0), sum / (double)steps);
                if (!tty) fputc('\n', stderr);
                last_print = now;
            }
        }
        double dt = now_seconds() - t0;
        train_time += dt;
        trained += done;
        last_loss = sum / (double)(steps ? steps : 1);
        if (tty) fputc('\n', stderr);
        tsr_trainer_set_epoch(tr, e + 1);
        if ((s = tsr_trainer_evaluate(tr, test, &acc, &test_loss)) != TSR_OK) die(ctx, s, "evaluate");
        fprintf(log, "epoch %llu: train loss %.4f, test accuracy %.4f, test loss %.4f, %.0f samples/s\n",
                (unsigned long long)e + 1, last_loss, acc, test_loss, (double)done / dt);
        fflush(log);
        if (a.checkpoint && (s = tsr_trainer_save(tr, a.checkpoint)) != TSR_OK) die(ctx, s, "checkpoint");
    }
    if (!trained && (s = tsr_trainer_evaluate(tr, test, &acc, &test_loss)) != TSR_OK)
        die(ctx, s, "evaluate");

    if (a.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", tsr_model_spec(model));
        cJSON_AddStringToObject(j, "device", tsr_trainer_device(tr)->id);
        cJSON_AddStringToObject(j, "optimizer", a.optimizer);
        cJSON_AddNumberToObject(j, "lr", to.optimizer.lr);
        cJSON_AddNumberToObject(j, "batch", (double)to.batch);
        cJSON_AddNumberToObject(j, "epochs", (double)tsr_trainer_epoch(tr));
        cJSON_AddNumberToObject(j, "train_samples", (double)train->count);
        cJSON_AddNumberToObject(j, "test_accuracy", acc);
        cJSON_AddNumberToObject(j, "test_loss", test_loss);
        if (isfinite(last_loss)) cJSON_AddNumberToObject(j, "final_loss", last_loss);
        else cJSON_AddNullToObject(j, "final_loss");
        cJSON_AddNumberToObject(j, "samples_per_s", train_time > 0 ? (double)trained / train_time : 0);
        cJSON_AddNumberToObject(j, "train_seconds", train_time);
        cJSON_AddNumberToObject(j, "seed", (double)tsr_trainer_seed(tr));
        char *text = cJSON_PrintUnformatted(j);
        printf("%s\n", text);
        cJSON_free(text);
        cJSON_Delete(j);
    }
    free(images);
    free(labels);
    tsr_trainer_free(tr);
    tsr_loader_free(loader);
    tsr_model_free(model);
    tsr_dataset_free(ctx, train);
    tsr_dataset_free(ctx, test);
    tsr_context_free(ctx);
    return 0;
}
