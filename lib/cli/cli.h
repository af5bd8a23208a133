/* Command-line options of tsr-train, parsed without side effects (no exit, no printing), so a
 * fuzz target can drive the parser (tests/fuzz/fuzz_cli.c). */
#ifndef TSR_CLI_H
#define TSR_CLI_H
#include <stddef.h>
#include "tessera/status.h"
#include "tessera/train.h"

/* The largest batch a trainer takes (tsr_trainer_create refuses more). */
#define TSR_CLI_MAX_BATCH (1L << 20)

typedef struct tsr_cli_train {
    const char *model, *data, *device, *checkpoint, *resume, *manifest;
    const char *init;        /* --init: initial parameters from a safetensors file */
    const char *optimizer, *schedule;
    const char *mode;        /* NULL: single device; other values are checked by the caller */
    const char *nonfinite;   /* NULL, "skip" or "stop" */
    const char *compress;    /* NULL, "none", "fp16" or "topk" */
    const char *precision;   /* NULL, "fp32", "bf16" or "fp16" (checked by the caller) */
    long epochs, batch, limit, test_limit, warmup;
    double lr, momentum, weight_decay;  /* lr < 0: the optimizer's default */
    double beta2, min_lr;    /* Adam's second-moment decay (0.999); the cosine schedule's floor (0) */
    double clip_grad;        /* --clip-grad: the gradients' global norm bound (0: no clipping) */
    int no_decay_1d;         /* --no-decay-1d: weight decay on matrices only */
    unsigned long long seed;
    int nesterov, json, quiet, summary, help;
    int zero;                /* --zero: ZeRO-1 sharded optimizer in data mode */
    const char *stages;      /* pipeline: "a,b,c" layer counts per stage, or "auto" */
    const char *pipeline_schedule; /* NULL, "gpipe" or "1f1b" as given; parsed: pipe_schedule */
    tsr_pipeline_schedule pipe_schedule; /* TSR_PIPELINE_1F1B unless given */
    long microbatches;       /* pipeline: micro-batches per step (0: 1) */
    int recompute;           /* pipeline: re-run forwards instead of keeping activations */
    long replicas;           /* hybrid: data-parallel copies of the pipeline (0: 1) */
    long servers;            /* async: parameter-server ranks (0: 1) */
    const char *staleness;   /* async: SSP bound, a number >= 0 or "inf" (NULL: 0) */
    const char *gossip_graph; /* gossip: NULL, "ring", "exp" or "exponential" as given; parsed: graph */
    tsr_gossip_graph graph;   /* TSR_GOSSIP_RING unless given */
    long gossip_period;      /* gossip: mix every K steps (0: 1) */
    /* language models on token data */
    long steps;              /* optimizer steps (0: the default) */
    long context;            /* tokens per sequence (0: the model's context) */
    long eval_every;         /* validation every N steps (0: at the end only) */
    long val_windows;        /* validation windows of --context tokens (0: all of val.bin) */
    long tp;                 /* tensor-parallel ranks per group (0: 1) */
    const char *tp_shares;   /* their relative speeds "3,1" (NULL: even) */
    char error[256];         /* "option --epochs: '0' is not an integer >= 1" on failure */
} tsr_cli_train;

/* Fills *out with the defaults, then applies argv[1..argc-1]. The strings point into argv.
 * TSR_OK (out->help set for --help), or TSR_ERR_PARSE with out->error naming the option. */
tsr_status tsr_cli_parse_train(int argc, char *const *argv, tsr_cli_train *out);

#endif
