/* Internal: the plan object shared by the planner (lib/plan/plan.c) and its text forms
 * (lib/plan/plan_io.c). */
#ifndef TSR_PLAN_INTERNAL_H
#define TSR_PLAN_INTERNAL_H
#include "lib/core/internal.h"

#ifndef PLAN_BUDGET
#define PLAN_BUDGET 1.5e8 /* inner DP steps the search plans for (~0.3 s) */
#endif

/* A device a stage runs on, as the plan names it (replica r, stage i at [r * S + i]). */
typedef struct tsr_plan_device {
    int index;        /* into the topology's devices */
    int rank;         /* -1: no cluster view */
    int host;         /* topology host index */
    tsr_device_kind kind;
    char id[64];
    char name[128];
    char hostname[64];
} tsr_plan_device;

enum { TSR_PLAN_SEARCHED = 0, TSR_PLAN_FIXED = 1, TSR_PLAN_PARSED = 2 };

struct tsr_plan {
    tsr_context *ctx;
    char *model_spec;             /* canonical spec of the model it is for */
    size_t gpt_blocks;            /* a GPT's blocks (tsr_model_gpt_blocks), else 0: printed by block */
    char title[128];              /* "GPT, 12 blocks, ..." for a GPT, else empty: the spec */
    tsr_model_input input;
    size_t layers;
    char (*layer_spec)[64];       /* per layer, for the picture */
    tsr_plan_options opt;
    size_t stage_count;
    size_t microbatches;          /* per replica */
    size_t microbatch_size;
    size_t replica_batch;         /* samples per replica per step */
    int replicas;
    tsr_plan_stage *stages;       /* replica 0 */
    tsr_plan_device *devices;     /* replicas x stage_count */
    double allreduce_s;           /* gradient allreduce between replicas per step */
    double step_s;
    size_t bottleneck;
    int optimal;                  /* 1 when the search proved it optimal for the cost model */
    double search_work;           /* inner DP steps the search took (tests bound its cost by
                                   * this count, not by the clock) */
    int host_count;               /* hosts the stages span (for the picture) */
    int origin;                   /* TSR_PLAN_SEARCHED, _FIXED or _PARSED */
};

/* Allocates an empty plan for `model` with `stages` stages and `replicas` replicas; the caller
 * fills stages and devices, then calls tsr_plan_finish. */
tsr_status tsr_plan_alloc(tsr_context *ctx, const tsr_model *model, size_t stages, int replicas,
                          tsr_plan **out);
/* Derives step time, bottleneck and host count from the stage figures. */
void tsr_plan_finish(tsr_plan *p);

/* "1.2 GiB", "512.0 MiB", "12 B" */
void tsr_plan_format_bytes(char *buf, size_t size, double bytes);

/* ---- shared with the 3D planner (lib/plan/plan3d.c): plan.c's device figures ---- */
typedef struct tsr_plan_figures {
    double mem_bw_gbps, d2h_gbps, h2d_gbps; /* measured, else the cost model's defaults */
    double launch_s;
    uint64_t limit_bytes;                   /* fraction x global memory */
    double rate_gflops;                     /* SGEMM rate at 1024^3 */
} tsr_plan_figures;
void tsr_plan_device_figures(const tsr_device_info *d, double fraction, tsr_plan_figures *out);
/* Seconds of `flops` in `calls` GEMMs of cube size n on d (plan.c's gemm_seconds). */
double tsr_plan_gemm_seconds(const tsr_device_info *d, double flops, double n, int calls);
/* Why device i cannot be planned on, or NULL. */
const char *tsr_plan_not_candidate(const tsr_topology *t, int i);
/* Same capability (kind, name, memory, every measured figure), any host. */
int tsr_plan_same_capability(const tsr_device_info *a, const tsr_device_info *b);

#endif
