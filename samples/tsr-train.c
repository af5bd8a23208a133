/* tsr-train: trains a model on Fashion-MNIST (or any MNIST-format folder) on one device, or data
 * parallel over MPI ranks (one device each):
 *   tsr-train --model cnn --epochs 8 --json
 *   mpiexec -n 2 tsr-train --mode data --model mlp --epochs 5
 * In data mode --batch is the global batch, split across the ranks by measured throughput; rank
 * 0 prints.
 * Progress on stderr; per-epoch test accuracy on stdout (stderr with --json, whose single
 * JSON line is then the only stdout output). */
#include <cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "tessera.h"
#include "lib/core/atomic_file.h"
#include "lib/cli/cli.h"
#include "lib/train/pipeline.h"
#include "samples/blas_reexec.h"

/* Fashion-MNIST training-set pixel statistics (after scaling to [0,1]). */
#define FMNIST_MEAN 0.2860f
#define FMNIST_STD 0.3530f

typedef tsr_cli_train args;

static void usage(FILE *f) {
    fprintf(f,
            "usage: tsr-train [options]\n"
            "  --model SPEC|mlp|cnn   model spec or preset (default mlp)\n"
            "  --epochs N             training epochs (default 5)\n"
            "  --batch N              mini-batch size, 1..1048576 (default 64)\n"
            "  --optimizer NAME       sgd, adam or adamw (default adam)\n"
            "  --lr X                 base learning rate (default 0.001 for adam, 0.05 for sgd)\n"
            "  --momentum X           SGD momentum (default 0.9)\n"
            "  --nesterov             SGD with Nesterov momentum\n"
            "  --weight-decay X       weight decay (default 0)\n"
            "  --beta2 X              Adam's second-moment decay, 0 <= X < 1 (default 0.999)\n"
            "  --min-lr X             the cosine schedule's final rate (default 0)\n"
            "  --precision P          fp32, bf16 or fp16 GEMM inputs, float32 master weights and\n"
            "                         accumulation; fp16 scales the loss dynamically (default fp32)\n"
            "  --no-decay-1d          weight decay on matrices only, not on biases and layer norms\n"
            "                         (PyTorch users' and nanoGPT's convention)\n"
            "  --clip-grad X          clip the gradients' global norm to X before each update, as\n"
            "                         PyTorch's clip_grad_norm_ (default 0: off)\n"
            "  --schedule NAME        constant, step or cosine (default cosine)\n"
            "  --warmup N             linear warm-up steps in front of the schedule (default 0)\n"
            "  --seed N               initialisation, shuffling and dropout seed (default 1)\n"
            "  --data DIR             MNIST-format folder (default $TSR_DATA_DIR or Fashion-MNIST)\n"
            "  --limit N              use only the first N training samples\n"
            "  --test-limit N         evaluate on the first N test samples only\n"
            "  --device ID            device id or index (default 0 = host; see tsr-topo)\n"
            "  --checkpoint FILE      save a checkpoint after every epoch, and on SIGTERM/SIGINT at\n"
            "                         the step reached (then exit 143/130; resume continues there)\n"
            "  --resume FILE          continue from a checkpoint\n"
            "  --init FILE            initial parameters from a safetensors file (tsr-export's\n"
            "                         PyTorch nn.Sequential names; F32, F16 or BF16)\n"
            "  --manifest FILE        run manifest (JSON: config, devices, SHA-256 of data and\n"
            "                         checkpoints, code version, metrics); default FILE.manifest.json\n"
            "                         beside the --checkpoint FILE\n"
            "  --nonfinite skip|stop  NaN/Inf loss or gradients: skip the step or stop (default)\n"
            "  --mode data            data parallel over the MPI ranks (run under mpiexec);\n"
            "                         --batch is then the global batch\n"
            "  --compress none|fp16|topk  data mode: gradient compression (default none)\n"
            "  --zero                 data mode: ZeRO-1, each rank keeps and updates one slice of\n"
            "                         the optimizer state; parameters are allgathered\n"
            "  --mode pipeline        one stage of consecutive layers per MPI rank; every rank\n"
            "                         reads the same (global) batches\n"
            "  --stages a,b,..|auto   pipeline: layers per stage (default: even), auto: the\n"
            "                         planner's placement over the ranks' devices\n"
            "  --microbatches M       pipeline: micro-batches per step (default 1)\n"
            "  --pipeline-schedule gpipe|1f1b  pipeline schedule (default 1f1b)\n"
            "  --recompute            pipeline: re-run forwards instead of keeping activations\n"
            "  --mode hybrid --replicas R  R data-parallel copies of a pipeline of ranks/R stages\n"
            "                         (rank r*S+s: stage s of replica r); --batch is the global\n"
            "                         batch, each replica reads 1/R of it; the pipeline options\n"
            "                         above apply to each replica\n"
            "  --mode async           asynchronous SGD: ranks 0..K-1 are parameter servers, the\n"
            "                         others workers on their own slices; --batch is global\n"
            "  --servers K            async: parameter-server ranks, shards of the model (default 1)\n"
            "  --staleness S|inf      async: SSP bound, workers at most S steps apart (default 0)\n"
            "  --mode gossip          decentralised SGD (D-PSGD): every rank trains its own replica\n"
            "                         on its slice of --batch and averages parameters with its\n"
            "                         graph neighbours; evaluation and checkpoints: the average\n"
            "  --gossip-graph ring|exp  gossip: ring (2 neighbours) or one-peer exponential graph\n"
            "  --gossip-period K      gossip: mix every K steps (default 1)\n"
            "  language models: --data DIR holding train.bin and val.bin (llm.c token files; see\n"
            "  tsr-tokenize) trains a GPT: --model gpt-mini|gpt2|gpt2-medium|gpt2-large|gpt2-xl|\n"
            "                         gpt(layers=L,heads=H,channels=C[,context=T][,vocab=V])\n"
            "  --steps N              optimizer steps (default 1000); --batch: sequences per step\n"
            "  --context T            tokens per sequence (default: the model's context)\n"
            "  --eval-every N         validation loss every N steps (default: at the end)\n"
            "  --val-windows N        validate on the first N windows of val.bin (default: all)\n"
            "  --tp K                 tensor parallelism: groups of K consecutive ranks split every\n"
            "                         block's heads and MLP (Megatron-LM); with --mode data the\n"
            "                         groups are data-parallel replicas (ranks = data x K), with\n"
            "                         pipeline/hybrid each stage is a group (ranks = R x K x S)\n"
            "  --tp-shares a,b,..     the group's relative speeds: heads in proportion (default: the\n"
            "                         devices' measured SGEMM rates when they differ, else even)\n"
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
    if (a->init && a->resume)
        return bad_option("--init", "cannot be combined with --resume (whose checkpoint holds "
                                    "the parameters)");
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

/* Preemption: SIGTERM (what cluster schedulers send before they kill a job) or SIGINT sets
 * this flag, the library's stop request (tsr_trainer_options.stop_flag): every rank ends the
 * same step, saves it and exits with 128 + the signal number (143, 130), the code a shell
 * gives a process ended by that signal, so schedulers and scripts read it as "stopped by
 * SIGTERM" yet tell it from a failure (1) or a usage error (2). The handler restores the
 * previous (default) actions: a second signal ends the process at once. */
static volatile sig_atomic_t stop_signal;
static const int stop_signals[2] = {SIGTERM, SIGINT};
static struct sigaction stop_saved[2]; /* the actions before ours */

static void on_stop_signal(int sig) {
    for (int i = 0; i < 2; i++) sigaction(stop_signals[i], &stop_saved[i], NULL); /* signal-safe */
    stop_signal = sig;
}

/* Which of them the process was started with ignored (a shell's background job ignores
 * SIGINT, nohup-style launchers): read first thing in main, since libraries loaded later
 * (PoCL's LLVM) put their own handlers, chained to what was there, in front. */
static int stop_ignored[2];

static void note_ignored_signals(void) {
    for (int i = 0; i < 2; i++) {
        struct sigaction old;
        stop_ignored[i] = sigaction(stop_signals[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN;
    }
}

/* Ours in front of whatever is there now (restored on the first signal); an ignored one is
 * ignored again (LLVM's handler would otherwise take it and, on the way out, reset the others
 * to their default actions). */
static void catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 2; i++) {
        sigaddset(&sa.sa_mask, stop_signals[i]); /* the handler is not re-entered by the other */
        sigaction(stop_signals[i], NULL, &stop_saved[i]);
    }
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    for (int i = 0; i < 2; i++) sigaction(stop_signals[i], stop_ignored[i] ? &ign : &sa, NULL);
}

static void die(tsr_context *ctx, tsr_status s, const char *what) {
    fprintf(stderr, "tsr-train: %s: %s (%s)\n", what, tsr_context_last_error(ctx), tsr_status_str(s));
    exit(1);
}

/* Ranks of the whole launch from the launcher's environment (MPICH hydra, Open MPI, Slurm),
 * read before MPI starts; 1 without a launcher. */
static int launched_ranks(void) {
    static const char *const vars[] = {"PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) >= 1) return atoi(v);
    }
    return 1;
}

/* Ranks on this node from the launcher's environment (MPICH hydra, Open MPI, Slurm); 1 if none. */
static int local_ranks(void) {
    static const char *const vars[] = {"MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                                       "SLURM_NTASKS_PER_NODE"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) >= 1) return atoi(v);
    }
    return 1;
}

/* A lost peer must reach tessera as a stalled message, not abort the process: UCX's single-copy
 * shared-memory transport (CMA) moves a large message by reading the sender's memory
 * (process_vm_readv); when the sender has died, UCX 1.13 under MPICH 4.0 ends the reader with a
 * fatal error inside MPI_Test. When every rank is on this node (the launcher's variables say
 * so), UCX_TLS=^cma,tcp: large messages then go through the shared-memory FIFOs, a dead peer's
 * message never completes and TSR_COMM_TIMEOUT names it. Not ^cma alone: UCX then sends them
 * over TCP loopback, and MPI_Finalize hung in a few runs in ten. Across nodes nothing is
 * changed (TCP or the fabric is needed there). The user's own UCX_TLS is kept. Before MPI starts
 * (UCX reads its variables there). README "Faults injected". */
static void ucx_transports(void) {
    if (launched_ranks() > 1 && local_ranks() == launched_ranks()) setenv("UCX_TLS", "^cma,tcp", 0);
}

/* One rank per core share: with k ranks on a node of c cores each rank gets c/k threads
 * (host pool, OpenBLAS, PoCL) unless the user chose. OpenBLAS reads its variable when it is
 * loaded, so the process re-executes itself once with the variables set (before MPI or OpenCL
 * start; the launcher's variables carry over). */
static void set_rank_threads(char **argv) {
    int k = local_ranks();
    if (k <= 1 || getenv("TSR_DP_THREADS_SET")) return;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    char n[32];
    snprintf(n, sizeof n, "%ld", cores / k >= 1 ? cores / k : 1);
    setenv("TSR_DP_THREADS_SET", "1", 1);
    setenv("TSR_HOST_THREADS", n, 0);
    setenv("OPENBLAS_NUM_THREADS", n, 0);
    setenv("POCL_MAX_PTHREAD_COUNT", n, 0);
    const char *rank = getenv("MPI_LOCALRANKID");
    if (!getenv("POCL_CACHE_DIR") && rank) { /* concurrent builds in one PoCL cache crashed */
        char dir[256];
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/tsr-pocl-%s", tmp && *tmp ? tmp : "/tmp", rank);
        setenv("POCL_CACHE_DIR", dir, 1);
    }
    execv("/proc/self/exe", argv);
    /* exec failed: go on with what we have */
}

/* Run manifest (rank 0): made at the start (the data hashed then), written after each
 * checkpoint and at the end of the run. Not at the start: the manifest beside a checkpoint
 * describes that checkpoint, and a run that fails before its first save must leave both as
 * they were. */
static tsr_manifest *manifest_begin(tsr_context *ctx, const args *a, const tsr_trainer_options *to,
                                    tsr_trainer *tr, const tsr_model *model, int ranks,
                                    const char **path, char *buf, size_t size) {
    *path = a->manifest;
    if (!*path && a->checkpoint) {
        snprintf(buf, size, "%s.manifest.json", a->checkpoint);
        *path = buf;
    }
    if (!*path) return NULL;
    tsr_manifest *m;
    tsr_status s = tsr_manifest_create(ctx, &m);
    if (s == TSR_OK) {
        tsr_manifest_set_string(m, "model", tsr_model_spec(model));
        tsr_manifest_set_string(m, "mode", a->mode ? a->mode : "single");
        tsr_manifest_set_number(m, "ranks", ranks);
        tsr_manifest_set_string(m, "optimizer", a->optimizer);
        tsr_manifest_set_string(m, "schedule", a->schedule);
        tsr_manifest_set_number(m, "lr", to->optimizer.lr);
        tsr_manifest_set_number(m, "momentum", to->optimizer.momentum);
        tsr_manifest_set_number(m, "nesterov", to->optimizer.nesterov);
        tsr_manifest_set_number(m, "weight_decay", to->optimizer.weight_decay);
        tsr_manifest_set_number(m, "decay_matrices_only", to->decay_matrices_only);
        tsr_manifest_set_number(m, "clip_grad_norm", to->clip_grad_norm);
        tsr_manifest_set_number(m, "batch", (double)to->batch);
        tsr_manifest_set_number(m, "epochs", (double)a->epochs);
        tsr_manifest_set_number(m, "warmup", (double)a->warmup);
        tsr_manifest_set_number(m, "limit", (double)a->limit);
        tsr_manifest_set_number(m, "seed", (double)tsr_trainer_seed(tr));
        tsr_manifest_set_string(m, "nonfinite", to->nonfinite == TSR_NONFINITE_SKIP ? "skip" : "stop");
        tsr_manifest_set_string(m, "data", a->data);
        tsr_manifest_set_string(m, "resume", a->resume);
        tsr_manifest_set_string(m, "checkpoint", a->checkpoint);
        tsr_manifest_add_device(m, tsr_trainer_device(tr));
        s = tsr_manifest_add_data_dir(m, a->data);
        if (s == TSR_OK && a->resume) s = tsr_manifest_add_file(m, "resumed-from", a->resume);
        if (s == TSR_OK && a->init) s = tsr_manifest_add_file(m, "initialised-from", a->init);
    }
    if (s != TSR_OK) {
        fprintf(stderr, "tsr-train: manifest %s: %s (%s)\n", *path, tsr_context_last_error(ctx),
                tsr_status_str(s));
        exit(1);
    }
    return m;
}

/* What one epoch is: the schedule and the epoch boundaries of a resumed run depend on it. */
typedef struct epoch_shape {
    size_t steps;   /* optimizer steps per epoch */
    size_t batch;   /* global batch */
    size_t samples; /* training samples (after --limit) */
} epoch_shape;

/* tests/fault: kills at a known point of the run, N[@RANK] (every rank, or rank RANK alone):
 * TSR_FAULT_KILL_AFTER_SAVE=N, the process dies by SIGKILL right after its N-th checkpoint;
 * TSR_FAULT_KILL_AT_STEP=N, before optimizer step N (its messages of the step before still in
 * flight: gossip's exchange travels between steps). Only in a job's first attempt (tsr-launch
 * sets TSR_RESTART=k for attempt k), so a restarted job runs through. -1: no kill. */
static long long fault_kill_point(const char *name, int rank) {
    const char *v = getenv(name), *restart = getenv("TSR_RESTART");
    if (!v || !*v || (restart && strcmp(restart, "0"))) return -1;
    const char *at = strchr(v, '@');
    if (at && atoi(at + 1) != rank) return -1;
    return atoll(v);
}

/* tests/fault: TSR_FAULT_SIGTERM_AT_STEP=N[@RANK] raises SIGTERM before the step that starts at
 * optimizer step N, on RANK (default 0; the other ranks learn it through the step's agreement,
 * async ranks through their messages). As the kill above, only in a job's first attempt. */
static long long fault_term_point(int rank) {
    const char *v = getenv("TSR_FAULT_SIGTERM_AT_STEP");
    if (v && *v && !strchr(v, '@') && rank != 0) return -1;
    return fault_kill_point("TSR_FAULT_SIGTERM_AT_STEP", rank);
}

/* Where inside an epoch a checkpoint was taken (all 0 at an epoch's end): the batches of the
 * epoch already trained (skipped non-finite steps do not count as steps, so the step count
 * cannot say it), the sum of their losses and their samples, so that the resumed epoch
 * reports the same mean loss. */
typedef struct epoch_position {
    size_t batches;
    double loss_sum;
    size_t samples;
} epoch_position;

/* The checkpoint's metadata: the input normalisation, the epoch's shape, the figures of the
 * last finished epoch and the position inside the current one. */
static tsr_status set_figures(tsr_trainer *tr, const tsr_model *model, epoch_shape shape,
                              double train_loss, double acc, double test_loss, epoch_position at) {
    cJSON *j = cJSON_CreateObject();
    if (!j) return TSR_ERR_NO_MEMORY;
    tsr_model_input in = tsr_model_get_input(model);
    const double dims[3] = {(double)in.channels, (double)in.height, (double)in.width};
    cJSON_AddItemToObject(j, "input_shape", cJSON_CreateDoubleArray(dims, 3));
    cJSON_AddNumberToObject(j, "classes", (double)in.classes);
    cJSON_AddNumberToObject(j, "input_mean", FMNIST_MEAN);
    cJSON_AddNumberToObject(j, "input_std", FMNIST_STD);
    cJSON_AddNumberToObject(j, "steps_per_epoch", (double)shape.steps);
    cJSON_AddNumberToObject(j, "batch", (double)shape.batch);
    cJSON_AddNumberToObject(j, "train_samples", (double)shape.samples);
    if (isfinite(train_loss)) cJSON_AddNumberToObject(j, "train_loss", train_loss);
    cJSON_AddNumberToObject(j, "test_accuracy", acc);
    cJSON_AddNumberToObject(j, "test_loss", test_loss);
    if (at.batches) { /* cJSON prints a double that reads back exactly (17 digits if need be) */
        cJSON_AddNumberToObject(j, "epoch_batches", (double)at.batches);
        cJSON_AddNumberToObject(j, "epoch_loss_sum", at.loss_sum);
        cJSON_AddNumberToObject(j, "epoch_samples", (double)at.samples);
    }
    char *text = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!text) return TSR_ERR_NO_MEMORY;
    tsr_status s = tsr_trainer_set_metadata(tr, text);
    cJSON_free(text);
    return s;
}

/* A checkpoint that cannot be written is refused before training, not after an epoch of it:
 * a folder, a missing folder, no right to create files, no room for parameters and optimizer
 * state (rank 0 checks; every rank calls save). 2 after saying why, else 0. */
static int checkpoint_unwritable(tsr_context *ctx, const args *a, const tsr_trainer_options *to,
                                 const tsr_model *model, int rank) {
    if (!a->checkpoint || rank != 0) return 0;
    size_t slots = to->optimizer.kind == TSR_OPTIM_SGD ? 1 : 2;
    uint64_t bytes = (uint64_t)tsr_model_param_count(model) * 4 * (1 + slots) + 65536;
    if (tsr_file_check_writable(ctx, a->checkpoint, bytes) == TSR_OK) return 0;
    fprintf(stderr, "tsr-train: option --checkpoint: %s\n", tsr_context_last_error(ctx));
    return 2;
}

/* --init FILE: the parameters from a safetensors file, named as tsr-export names them. */
static tsr_status init_params(tsr_context *ctx, tsr_trainer *tr, const tsr_model *model,
                              const char *path) {
    size_t n = tsr_model_param_count(model);
    float *p = malloc((n ? n : 1) * sizeof *p);
    if (!p) return TSR_ERR_NO_MEMORY;
    tsr_status s = tsr_model_load_safetensors(ctx, model, path, p, n);
    if (s == TSR_OK) s = tsr_trainer_set_params(tr, p, n);
    free(p);
    return s;
}

/* After --resume: the last epoch's training loss as the checkpoint recorded it (NAN if none).
 * A checkpoint of epochs of another shape (another --batch or --limit) cannot continue: its
 * step count would sit elsewhere in this run's learning-rate schedule (past its end, at rate 0)
 * and between its epoch boundaries. 0, or 2 after saying why. */
static int resumed_figures(const tsr_trainer *tr, const char *path, epoch_shape shape,
                           double *train_loss, epoch_position *at) {
    const char *meta = tsr_trainer_metadata(tr);
    cJSON *j = meta ? cJSON_Parse(meta) : NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "train_loss");
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(j, "steps_per_epoch");
    const cJSON *batch = cJSON_GetObjectItemCaseSensitive(j, "batch");
    const cJSON *samples = cJSON_GetObjectItemCaseSensitive(j, "train_samples");
    int rc = 0;
    if (cJSON_IsNumber(steps) && steps->valuedouble != (double)shape.steps) {
        fprintf(stderr, "tsr-train: option --resume: %s was trained with %.0f steps per epoch "
                "(batch %.0f, %.0f samples); this run has %zu (batch %zu, %zu samples): resume "
                "with the same --batch and --limit\n", path, steps->valuedouble,
                cJSON_IsNumber(batch) ? batch->valuedouble : 0.0,
                cJSON_IsNumber(samples) ? samples->valuedouble : 0.0, shape.steps, shape.batch,
                shape.samples);
        rc = 2;
    }
    if (cJSON_IsNumber(v)) *train_loss = v->valuedouble;
    const cJSON *pb = cJSON_GetObjectItemCaseSensitive(j, "epoch_batches");
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(j, "epoch_loss_sum");
    const cJSON *pn = cJSON_GetObjectItemCaseSensitive(j, "epoch_samples");
    if (cJSON_IsNumber(pb) && cJSON_IsNumber(ps) && cJSON_IsNumber(pn) && !rc) {
        if (!(pb->valuedouble >= 0 && pb->valuedouble <= (double)shape.steps)) {
            fprintf(stderr, "tsr-train: option --resume: %s stopped after batch %.0f of an epoch "
                    "of %zu\n", path, pb->valuedouble, shape.steps);
            rc = 2;
        } else {
            at->batches = (size_t)pb->valuedouble;
            at->loss_sum = ps->valuedouble;
            at->samples = (size_t)pn->valuedouble;
        }
    }
    cJSON_Delete(j);
    return rc;
}

/* The interrupted step's checkpoint (every rank takes part, as at an epoch's end; rank 0
 * writes it and the manifest) and the message. e: the epoch in progress (0-based). */
static void save_interrupted(tsr_context *ctx, const args *a, tsr_trainer *tr,
                             const tsr_model *model, tsr_manifest *man,
                             const char *mpath, epoch_shape shape, double last_loss, double acc,
                             double test_loss, epoch_position at, uint64_t e, int sig,
                             int term_again, int rank) {
    const char *name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
    unsigned long long step = (unsigned long long)tsr_trainer_steps(tr), epoch = e + 1;
    if (!a->checkpoint) {
        if (rank == 0)
            fprintf(stderr, "tsr-train: interrupted by %s at step %llu (epoch %llu): no "
                            "--checkpoint, nothing saved\n", name, step, epoch);
        return;
    }
    if (term_again) raise(SIGTERM); /* tests/fault: the second signal ends the process here */
    tsr_status s;
    if ((s = set_figures(tr, model, shape, last_loss, acc, test_loss, at)) != TSR_OK ||
        (s = tsr_trainer_save(tr, a->checkpoint)) != TSR_OK)
        die(ctx, s, "checkpoint");
    if (man && ((s = tsr_manifest_add_file(man, "checkpoint", a->checkpoint)) != TSR_OK ||
                (s = tsr_manifest_set_number(man, "checkpoint_epoch", (double)e)) != TSR_OK ||
                (s = tsr_manifest_set_number(man, "checkpoint_step", (double)step)) != TSR_OK ||
                (s = tsr_manifest_set_string(man, "interrupted_by", name)) != TSR_OK ||
                (s = tsr_manifest_write(man, mpath)) != TSR_OK))
        die(ctx, s, "manifest");
    if (rank == 0)
        fprintf(stderr, "tsr-train: interrupted by %s at step %llu (epoch %llu): checkpoint %s "
                        "written; resume with --resume %s\n", name, step, epoch, a->checkpoint,
                a->checkpoint);
}

#include "samples/train_lm.h"

int main(int argc, char **argv) {
    blas_reexec(argv); /* before anything starts: OpenBLAS's kernels are chosen at load */
    note_ignored_signals();
    args a;
    int rc = parse_args(argc, argv, &a);
    if (rc) return rc;
    tsr_train_mode mode = TSR_MODE_DATA;
    /* under mpiexec without --mode each rank would train alone, all onto one checkpoint */
    int default_data = !a.mode && launched_ranks() > 1;
    if (default_data) a.mode = "data";
    if (a.mode && tsr_train_mode_parse(a.mode, &mode) != TSR_OK)
        return bad_option("--mode", "must be data, pipeline, hybrid, async or gossip");
    /* hybrid: a pipeline per replica (pp), replicas R */
    int hy = a.mode && mode == TSR_MODE_HYBRID, as = a.mode && mode == TSR_MODE_ASYNC;
    int gs = a.mode && mode == TSR_MODE_GOSSIP; /* gossip: each rank its own slice, as data */
    int pp = a.mode && (mode == TSR_MODE_PIPELINE || hy), dp = a.mode && !pp && !as && !gs;
    size_t R = hy && a.replicas ? (size_t)a.replicas : 1;
    if (a.mode && mode != TSR_MODE_DATA && !pp && !as && !gs)
        return bad_option("--mode", "only data, pipeline, hybrid, async and gossip parallelism are implemented");
    if (!gs && (a.gossip_graph || a.gossip_period))
        return bad_option("--gossip-graph", "--gossip-graph and --gossip-period need --mode gossip");
    if (!pp && (a.stages || a.microbatches || a.pipeline_schedule || a.recompute))
        return bad_option("--stages", "--stages, --microbatches, --pipeline-schedule and --recompute "
                                      "need --mode pipeline or hybrid");
    if (!hy && a.replicas) return bad_option("--replicas", "needs --mode hybrid");
    if (!as && (a.servers || a.staleness))
        return bad_option("--servers", "--servers and --staleness need --mode async");
    if (dp || pp || as || gs) set_rank_threads(argv);
    tsr_trainer_options to;
    tsr_trainer_options_init(&to);
    char env_err[256];
    if (tsr_trainer_options_from_env(&to, env_err, sizeof env_err) != TSR_OK) {
        fprintf(stderr, "tsr-train: %s\n", env_err);
        return 2;
    }
    if (tsr_optimizer_kind_parse(a.optimizer, &to.optimizer.kind) != TSR_OK)
        return bad_option("--optimizer", "must be sgd, adam or adamw");
    if (tsr_schedule_kind_parse(a.schedule, &to.schedule.kind) != TSR_OK)
        return bad_option("--schedule", "must be constant, step or cosine");
    to.optimizer.lr = (float)(a.lr > 0 ? a.lr : to.optimizer.kind == TSR_OPTIM_SGD ? 0.05 : 1e-3);
    to.optimizer.momentum = (float)a.momentum;
    to.optimizer.nesterov = a.nesterov;
    to.optimizer.weight_decay = (float)a.weight_decay;
    to.optimizer.beta2 = (float)a.beta2;
    if (a.precision && tsr_precision_parse(a.precision, &to.precision) != 0)
        return bad_option("--precision", "must be fp32, bf16 or fp16");
    to.decay_matrices_only = a.no_decay_1d;
    to.clip_grad_norm = a.clip_grad;
    if (a.min_lr > 0 && a.min_lr >= to.optimizer.lr)
        return bad_option("--min-lr", "must be below the learning rate (--lr)");
    to.batch = (size_t)a.batch;
    to.seed = a.seed;
    to.device = a.device;
    if (a.nonfinite) to.nonfinite = strcmp(a.nonfinite, "skip") ? TSR_NONFINITE_STOP : TSR_NONFINITE_SKIP;
    if (a.compress && tsr_compress_kind_parse(a.compress, &to.compress) != TSR_OK) return 2;
    if (a.zero) to.shard_optimizer = 1;
    if (as) {
        to.mode = TSR_MODE_ASYNC;
        to.async_servers = (int)a.servers;
        to.async_staleness = !a.staleness ? 0 : !strcmp(a.staleness, "inf") ? INT_MAX : atoi(a.staleness);
    }
    if (pp) {
        to.mode = hy ? TSR_MODE_HYBRID : TSR_MODE_PIPELINE;
        to.replicas = R;
        to.microbatches = (size_t)a.microbatches;
        to.pipeline_schedule = a.pipe_schedule;
        to.recompute = a.recompute;
        if (to.batch < R) return bad_option("--batch", "smaller than --replicas");
        if (to.microbatches * R > to.batch)
            return bad_option("--microbatches", "more than --batch (per replica)");
    }
    if (gs) {
        to.mode = TSR_MODE_GOSSIP;
        to.gossip_graph = a.graph;
        to.gossip_period = (size_t)a.gossip_period;
    }

    to.stop_flag = &stop_signal;

    tsr_context *ctx;
    tsr_context_options co;
    tsr_context_options_init(&co);
    if ((!a.device || !strcmp(a.device, "host") || !strcmp(a.device, "0")) &&
        !(a.stages && !strcmp(a.stages, "auto")))
        co.flags |= TSR_CONTEXT_NO_OPENCL; /* the host needs no OpenCL start-up */
    if (tsr_context_options_from_env(&co, env_err, sizeof env_err) != TSR_OK) {
        fprintf(stderr, "tsr-train: %s\n", env_err);
        return 2;
    }
    tsr_status s = tsr_context_create(&ctx, &co);
    if (s != TSR_OK) {
        fprintf(stderr, "tsr-train: context: %s\n", tsr_status_str(s));
        return 1;
    }
    tsr_comm *comm = NULL;
    int rank = 0, size = 1;
    if (dp || pp || as || gs) {
        ucx_transports();
        if ((s = tsr_comm_init_world(ctx, &argc, &argv, &comm)) != TSR_OK) die(ctx, s, "MPI");
        rank = tsr_comm_rank(comm);
        size = tsr_comm_size(comm);
        if (default_data && rank == 0)
            fprintf(stderr, "tsr-train: %d ranks and no --mode: training data parallel "
                            "(--mode data)\n", size);
        if (rank != 0) a.quiet = 1, a.summary = 0;
        if ((dp || gs) && to.batch < (size_t)size) {
            if (rank == 0)
                fprintf(stderr, "tsr-train: option --batch: global batch %zu is smaller than %d ranks\n",
                        to.batch, size);
            tsr_comm_free(comm);
            return 2;
        }
        if (hy && (size_t)size % R) {
            if (rank == 0)
                fprintf(stderr, "tsr-train: option --replicas: %d ranks are not %zu replicas x "
                                "stages\n", size, R);
            tsr_comm_free(comm);
            return 2;
        }
    }
    catch_stop_signals(); /* after MPI started: ours, not the launcher library's */
    /* token files (train.bin, val.bin) train a language model */
    tsr_data_format format = TSR_DATA_FORMAT_IDX;
    const char *data_dir = a.data ? a.data : "the default data folder";
    if (a.data && tsr_tokens_probe_dir(ctx, a.data, &format) == TSR_OK && format == TSR_DATA_FORMAT_TOKENS)
        return train_lm(ctx, &a, &to, comm, rank, size, pp, a.data);
    if (tsr_gpt_is_name(a.model)) {
        if (rank == 0)
            fprintf(stderr, "tsr-train: option --model: %s trains on token data: --data DIR holding "
                            "train.bin and val.bin (tsr-tokenize writes them); %s holds none\n",
                    a.model, data_dir);
        tsr_comm_free(comm);
        return 2;
    }
    tsr_dataset *train = NULL, *test = NULL;
    if ((s = tsr_dataset_load_mnist_dir(ctx, a.data, 1, &train)) != TSR_OK) die(ctx, s, "training data");
    if ((s = tsr_dataset_load_mnist_dir(ctx, a.data, 0, &test)) != TSR_OK) die(ctx, s, "test data");
    if (a.limit) tsr_dataset_truncate(train, (size_t)a.limit);
    if (a.test_limit) tsr_dataset_truncate(test, (size_t)a.test_limit);
    tsr_dataset_normalize(ctx, train, FMNIST_MEAN, FMNIST_STD);
    tsr_dataset_normalize(ctx, test, FMNIST_MEAN, FMNIST_STD);

    if (test->channels != train->channels || test->height != train->height ||
        test->width != train->width) {
        fprintf(stderr, "tsr-train: test data: images are %zux%zux%zu (channels x height x width), "
                        "the training images %zux%zux%zu\n", test->channels, test->height,
                test->width, train->channels, train->height, train->width);
        return 2;
    }
    tsr_model *model;
    tsr_model_input in = {train->channels, train->height, train->width,
                          train->classes > test->classes ? train->classes : test->classes};
    if ((s = tsr_model_parse(ctx, a.model, in, &model)) != TSR_OK) {
        fprintf(stderr, "tsr-train: option --model: %s\n", tsr_context_last_error(ctx));
        if (s == TSR_ERR_SHAPE) { /* the class count comes from the data: show its evidence */
            const tsr_dataset *d = train->classes >= test->classes ? train : test;
            size_t at = 0;
            for (size_t i = 0; i < d->count; i++)
                if ((size_t)d->labels[i] + 1 == d->classes) {
                    at = i;
                    break;
                }
            fprintf(stderr, "tsr-train: the class count %zu comes from the %s labels, whose "
                            "largest is %d (sample %zu): a label out of range, or a model whose "
                            "last layer must give %zu outputs\n", d->classes,
                    d == train ? "training" : "test", d->labels[at], at, d->classes);
        }
        return 2;
    }
    if (a.summary) tsr_model_summary(model, stderr);
    size_t bounds[65];
    char plan_dev[64];
    tsr_comm *stage_comm = NULL; /* --stages auto: ranks in the plan's stage order */
    if (pp && a.stages && strcmp(a.stages, "auto")) {
        size_t stages;
        if ((s = tsr_pipeline_bounds_parse(ctx, a.stages, tsr_model_layer_count(model), bounds, 65,
                                           &stages)) != TSR_OK) {
            fprintf(stderr, "tsr-train: option --stages: %s\n", tsr_context_last_error(ctx));
            tsr_comm_free(comm);
            return 2;
        }
        if (stages * R != (size_t)size) {
            if (rank == 0)
                fprintf(stderr, "tsr-train: option --stages: '%s' makes %zu stage%s (it lists "
                                "the layers of each stage, e.g. %s); %d ranks%s need %zu, one rank "
                                "each\n", a.stages, stages, stages == 1 ? "" : "s",
                        size / (int)R == 2 ? "3,4 for 2 stages" : "3,2,2 for 3 stages", size,
                        R > 1 ? " of this many replicas" : "", (size_t)size / R);
            tsr_comm_free(comm); /* finalises MPI: the launcher then lets rank 0 finish its say */
            return 2;
        }
        to.stage_bounds = bounds;
    } else if (pp && a.stages) { /* auto: the planner over the ranks' devices */
        tsr_topology *topo = NULL;
        tsr_plan *plan = NULL;
        tsr_plan_options po;
        tsr_plan_options_init(&po);
        po.batch = to.batch;
        po.microbatches = to.microbatches;
        po.max_stages = (size_t)size / R;
        po.replicas = (int)R;
        po.optimizer_slots = to.optimizer.kind == TSR_OPTIM_SGD ? 1 : 2;
        size_t stages = 0;
        int key = -1;
        if ((s = tsr_cluster_gather(ctx, NULL, &topo)) != TSR_OK ||
            (s = tsr_plan_create(ctx, model, topo, &po, &plan)) != TSR_OK ||
            (s = tsr_pipeline_bounds_from_plan(ctx, plan, bounds, 65, &stages)) != TSR_OK)
            die(ctx, s, "--stages auto");
        /* rank order of the run: replica q's stage i is rank q * stages + i */
        for (size_t q = 0; q < R; q++)
            for (size_t i = 0; i < stages; i++)
                if (tsr_plan_replica_rank(plan, (int)q, i) == rank) {
                    const tsr_device_info *di =
                        tsr_topology_device(topo, tsr_plan_replica_device(plan, (int)q, i));
                    key = (int)(q * stages + i);
                    snprintf(plan_dev, sizeof plan_dev, "%s",
                             q == 0 || !di ? tsr_plan_stage_at(plan, i)->device_id : di->id);
                    to.device = plan_dev;
                }
        if (stages * R != (size_t)size || key < 0) {
            if (rank == 0) {
                fprintf(stderr, "tsr-train: --stages auto: the plan has %zu stages x %zu replicas "
                                "for %d ranks:\n", stages, R, size);
                tsr_plan_print(plan, stderr);
            }
            tsr_plan_free(plan);
            tsr_topology_free(topo);
            tsr_comm_free(comm);
            return 2;
        }
        if (rank == 0 && !a.quiet) tsr_plan_print(plan, stderr);
        if ((s = tsr_comm_split(comm, 0, key, &stage_comm)) != TSR_OK) die(ctx, s, "--stages auto");
        tsr_plan_free(plan);
        tsr_topology_free(topo);
        to.stage_bounds = bounds;
    }

    /* how the mode splits the data over the ranks is the library's rule; a data-parallel
     * run's shares start even (measured below) */
    to.comm = stage_comm ? stage_comm : comm;
    size_t *shares = calloc((size_t)size, sizeof *shares);
    if (!shares) return 1;
    tsr_data_split split;
    if ((s = tsr_trainer_data_split(ctx, &to, to.batch, a.seed, &split, shares)) != TSR_OK) {
        if (rank == 0) fprintf(stderr, "tsr-train: %s\n", tsr_context_last_error(ctx));
        tsr_comm_free(comm);
        return 2;
    }
    tsr_loader_options lo = split.loader;
    size_t global = hy ? split.step_samples : to.batch; /* the epoch's shape records it */
    tsr_loader *loader;
    if ((s = tsr_loader_create(ctx, train, &lo, &loader)) != TSR_OK) die(ctx, s, "loader");
    size_t per_epoch = tsr_loader_batches(loader);
    to.schedule.warmup_steps = (uint64_t)a.warmup;
    to.schedule.step_size = per_epoch * 3; /* step schedule: x0.1 every 3 epochs */
    uint64_t total = (uint64_t)a.epochs * per_epoch;
    to.schedule.total_steps = total > to.schedule.warmup_steps ? total - to.schedule.warmup_steps : 1;
    to.schedule.min_lr = (float)a.min_lr;

    /* one rank has nothing to average: without the communicator a device's gradients are not
     * staged through the host every step (3x the samples/s of cnn on an H100) */
    to.comm = size > 1 ? (stage_comm ? stage_comm : comm) : NULL;
    if (!to.comm) to.compress = TSR_COMPRESS_NONE, to.shard_optimizer = 0;
    tsr_trainer *tr;
    to.batch = split.step_batch; /* hybrid: the largest batch a replica steps with */
    if ((s = tsr_trainer_create(ctx, model, &to, &tr)) != TSR_OK) die(ctx, s, "trainer");
    if (dp) {
        /* each rank's share of the global batch in proportion to its measured samples/s (a short
         * timed forward+backward of the model itself; identical devices share one rate);
         * even_shares (TSR_DP_BALANCE=0) keeps them even */
        size_t probe = to.batch / (size_t)size;
        s = tsr_trainer_balance(tr, to.batch, train->images, train->labels, probe, shares);
        if (s != TSR_OK) die(ctx, s, "batch shares");
        if ((s = tsr_loader_set_shares(loader, shares)) != TSR_OK) die(ctx, s, "loader shares");
    }
    if (a.init && (s = init_params(ctx, tr, model, a.init)) != TSR_OK) die(ctx, s, "option --init");
    if (a.resume && (s = tsr_trainer_load(tr, a.resume)) != TSR_OK) die(ctx, s, "resume");
    if (a.resume) {
        /* shuffling continues from the checkpoint's seed */
        lo.seed = tsr_trainer_seed(tr);
        tsr_loader_free(loader);
        if ((s = tsr_loader_create(ctx, train, &lo, &loader)) != TSR_OK) die(ctx, s, "loader");
        if (dp && (s = tsr_loader_set_shares(loader, shares)) != TSR_OK) die(ctx, s, "loader shares");
    }

    if ((rc = checkpoint_unwritable(ctx, &a, &to, model, rank)) != 0) return rc;
    FILE *log = a.json ? stderr : stdout;
    const char *mpath = NULL;
    char mbuf[4096];
    tsr_manifest *man = rank == 0 ? manifest_begin(ctx, &a, &to, tr, model, size, &mpath, mbuf,
                                                   sizeof mbuf)
                                  : NULL;
    float *images = malloc(to.batch * train->features * sizeof *images);
    int32_t *labels = malloc(to.batch * sizeof *labels);
    if (!images || !labels) {
        fprintf(stderr, "tsr-train: out of memory\n");
        return 1;
    }
    double train_time = 0, acc = 0, test_loss = 0, last_loss = NAN;
    size_t trained = 0, epochs_run = 0; /* samples trained in this run's time; epochs entered */
    epoch_shape shape = {per_epoch, global, train->count};
    epoch_position resume_at = {0, 0.0, 0}; /* inside the checkpoint's epoch */
    /* the checkpoint's figures are reported when nothing is left to train */
    if (a.resume && (rc = resumed_figures(tr, a.resume, shape, &last_loss, &resume_at)) != 0) {
        tsr_comm_free(comm);
        return rc;
    }
    long long kill_after = fault_kill_point("TSR_FAULT_KILL_AFTER_SAVE", rank), saves = 0;
    long long kill_at = fault_kill_point("TSR_FAULT_KILL_AT_STEP", rank);
    /* tests/fault: TSR_FAULT_SIGTERM_AT_STEP (fault_term_point); TSR_FAULT_SIGTERM_AGAIN=1
     * raises a second SIGTERM as the interrupted run starts its save */
    long long term_at = fault_term_point(rank);
    int term_again = term_at >= 0 && getenv("TSR_FAULT_SIGTERM_AGAIN") &&
                     !strcmp(getenv("TSR_FAULT_SIGTERM_AGAIN"), "1");
    int tty = isatty(2) && !a.quiet, interrupted = 0;
    for (uint64_t e = tsr_trainer_epoch(tr); e < (uint64_t)a.epochs && !interrupted; e++) {
        tsr_loader_start_epoch(loader, e);
        char what[32];
        snprintf(what, sizeof what, "epoch %llu/%ld", (unsigned long long)e + 1, a.epochs);
        double t0 = now_seconds(), last_print = 0, sum = resume_at.loss_sum;
        size_t done = resume_at.samples, n, steps = resume_at.batches;
        size_t resumed = done; /* trained before the checkpoint: not in this run's time */
        /* a checkpoint taken inside this epoch: the batches it trained are skipped */
        if (resume_at.batches && (s = tsr_loader_seek(loader, resume_at.batches)) != TSR_OK)
            die(ctx, s, "resume");
        resume_at = (epoch_position){0, 0.0, 0};
        while ((n = tsr_loader_next(loader, images, labels)) > 0) {
            float loss;
            if (kill_at >= 0 && tsr_trainer_steps(tr) == (uint64_t)kill_at) raise(SIGKILL);
            if (term_at >= 0 && tsr_trainer_steps(tr) == (uint64_t)term_at) {
                term_at = -1;
                raise(SIGTERM);
            }
            s = tsr_trainer_step(tr, images, labels, n, &loss);
            /* interrupted: the step was completed on every rank; counted, then saved below */
            if (s == TSR_ERR_INTERRUPTED) interrupted = stop_signal ? stop_signal : SIGTERM;
            else if (s != TSR_OK) die(ctx, s, "step");
            if (dp) loss = tsr_trainer_global_loss(tr); /* the global batch's */
            /* what the step covered everywhere: an async server counts its workers' pushes */
            if (tsr_trainer_step_samples(tr)) n = (size_t)tsr_trainer_step_samples(tr);
            else if (split.step_samples) n = split.step_samples;
            sum += loss;
            steps++;
            done += n;
            if (interrupted) break;
            double now = now_seconds();
            if (!a.quiet && (now - last_print > (tty ? 0.2 : 5.0) || done == train->count)) {
                progress(what, done, train->count, (double)done / (now - t0), sum / (double)steps);
                if (!tty) fputc('\n', stderr);
                last_print = now;
            }
        }
        double dt = now_seconds() - t0;
        train_time += dt;
        trained += done - resumed;
        epochs_run++;
        if (interrupted) {
            if (tty) fputc('\n', stderr);
            epoch_position at = {steps, sum, done};
            save_interrupted(ctx, &a, tr, model, man, mpath, shape, last_loss, acc, test_loss, at, e,
                             interrupted, term_again, rank);
            break;
        }
        last_loss = sum / (double)(steps ? steps : 1);
        if (tty) fputc('\n', stderr);
        tsr_trainer_set_epoch(tr, e + 1);
        s = tsr_trainer_evaluate(tr, test, &acc, &test_loss);
        if (s == TSR_ERR_INTERRUPTED) { /* async: the servers stopped while this worker evaluated */
            epoch_position end = {0, 0.0, 0};
            interrupted = stop_signal ? stop_signal : SIGTERM;
            save_interrupted(ctx, &a, tr, model, man, mpath, shape, last_loss, acc, test_loss, end,
                             e + 1, interrupted, 0, rank);
            break;
        }
        if (s != TSR_OK) die(ctx, s, "evaluate");
        if (rank == 0)
            fprintf(log, "epoch %llu: train loss %.4f, test accuracy %.4f, test loss %.4f, %.0f samples/s\n",
                (unsigned long long)e + 1, last_loss, acc, test_loss, (double)(done - resumed) / dt);
        fflush(log);
        /* every rank takes part (a sharded optimizer's state is gathered); rank 0 writes */
        epoch_position end = {0, 0.0, 0};
        if (a.checkpoint && ((s = set_figures(tr, model, shape, last_loss, acc, test_loss, end)) != TSR_OK ||
                             (s = tsr_trainer_save(tr, a.checkpoint)) != TSR_OK))
            die(ctx, s, "checkpoint");
        if (man && a.checkpoint &&
            ((s = tsr_manifest_add_file(man, "checkpoint", a.checkpoint)) != TSR_OK ||
             (s = tsr_manifest_set_number(man, "checkpoint_epoch", (double)(e + 1))) != TSR_OK ||
             (s = tsr_manifest_write(man, mpath)) != TSR_OK))
            die(ctx, s, "manifest");
        if (a.checkpoint && kill_after > 0 && ++saves == kill_after) raise(SIGKILL);
    }
    if (!epochs_run && !interrupted && (s = tsr_trainer_evaluate(tr, test, &acc, &test_loss)) != TSR_OK)
        die(ctx, s, "evaluate");

    if (interrupted) { /* the manifest describes the checkpoint; no final figures */
        tsr_manifest_free(man);
        man = NULL;
    }
    if (man) {
        tsr_manifest_set_metric(man, "epochs", (double)tsr_trainer_epoch(tr));
        tsr_manifest_set_metric(man, "steps", (double)tsr_trainer_steps(tr));
        tsr_manifest_set_metric(man, "skipped_steps", (double)tsr_trainer_skipped(tr));
        tsr_manifest_set_metric(man, "test_accuracy", acc);
        tsr_manifest_set_metric(man, "test_loss", test_loss);
        tsr_manifest_set_metric(man, "final_loss", last_loss);
        tsr_manifest_set_metric(man, "samples_per_s", train_time > 0 ? (double)trained / train_time : 0);
        tsr_manifest_set_metric(man, "train_seconds", train_time);
        if ((s = tsr_manifest_write(man, mpath)) != TSR_OK) die(ctx, s, "manifest");
        tsr_manifest_free(man);
    }
    if (a.json && rank == 0 && !interrupted) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", tsr_model_spec(model));
        cJSON_AddStringToObject(j, "device", tsr_trainer_device(tr)->id);
        cJSON_AddStringToObject(j, "optimizer", a.optimizer);
        cJSON_AddNumberToObject(j, "lr", to.optimizer.lr);
        cJSON_AddNumberToObject(j, "batch", (double)to.batch);
        cJSON_AddNumberToObject(j, "epochs", (double)tsr_trainer_epoch(tr));
        cJSON_AddNumberToObject(j, "train_samples", (double)train->count);
        cJSON_AddNumberToObject(j, "trained_samples", (double)trained); /* samples/s counts these */
        cJSON_AddNumberToObject(j, "test_accuracy", acc);
        cJSON_AddNumberToObject(j, "test_loss", test_loss);
        if (isfinite(last_loss)) cJSON_AddNumberToObject(j, "final_loss", last_loss);
        else cJSON_AddNullToObject(j, "final_loss");
        cJSON_AddNumberToObject(j, "samples_per_s", train_time > 0 ? (double)trained / train_time : 0);
        cJSON_AddNumberToObject(j, "train_seconds", train_time);
        cJSON_AddNumberToObject(j, "seed", (double)tsr_trainer_seed(tr));
        cJSON_AddStringToObject(j, "mode", dp ? "data" : hy ? "hybrid" : pp ? "pipeline" : as ? "async" : gs ? "gossip" : "single");
        cJSON_AddNumberToObject(j, "ranks", size);
        cJSON *per = cJSON_AddArrayToObject(j, "batch_per_rank");
        for (int r = 0; r < size; r++) cJSON_AddItemToArray(per, cJSON_CreateNumber((double)shares[r]));
        char *text = cJSON_PrintUnformatted(j);
        printf("%s\n", text);
        cJSON_free(text);
        cJSON_Delete(j);
    }
    free(images);
    free(labels);
    free(shares);
    tsr_trainer_free(tr);
    tsr_loader_free(loader);
    tsr_model_free(model);
    tsr_dataset_free(ctx, train);
    tsr_dataset_free(ctx, test);
    tsr_comm_free(stage_comm);
    tsr_comm_free(comm); /* finalises MPI */
    tsr_context_free(ctx);
    return interrupted ? 128 + interrupted : 0;
}
