/* Internal: the 3D planner's tables (lib/plan/plan3d.c), shared with its text and picture
 * (lib/plan/plan3d_io.c) and with the brute-force checks of the tests. */
#ifndef TSR_PLAN3D_INTERNAL_H
#define TSR_PLAN3D_INTERNAL_H
#include "lib/core/internal.h"
#include "lib/plan/plan_internal.h"

typedef struct tsr_p3 tsr_p3; /* the planner's tables for one model, topology and options */

tsr_status tsr_p3_create(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                         const tsr_plan3d_options *o, tsr_p3 **out);
void tsr_p3_free(tsr_p3 *e);
/* Builds the tensor groups of `t` devices (consecutive devices of one host, fastest group
 * first); returns their count. Stage s of copy r runs on group s x data + r. */
size_t tsr_p3_groups(tsr_p3 *e, size_t t);
/* Micro-batch counts the search tries for `data` copies (ascending); returns the count. */
size_t tsr_p3_microbatch_choices(const tsr_p3 *e, size_t data, size_t *out, size_t cap);
/* Predicted step time of one layout on the groups of tsr_p3_groups(e, t): blocks[s] per stage,
 * heads[(s x d + r) x t + i] of device i of stage s in copy r; INFINITY when a device's
 * memory does not hold its share (or the layout is malformed). */
double tsr_p3_evaluate(tsr_p3 *e, size_t t, size_t d, size_t p, size_t m, int offload,
                       const size_t *blocks, const size_t *heads);

/* One device of the chosen layout. */
typedef struct tsr_p3_device {
    int dev, host;             /* topology indices */
    size_t stage, copy, member; /* member: position in the tensor group */
    size_t heads;
    double memory, limit;      /* bytes */
    double busy_s;             /* its own compute per step */
} tsr_p3_device;

/* A layout's step time by what it is spent on: the bottleneck stage's compute, tensor
 * allreduces and hand-over over the M micro-batches, the bubble (P - 1 more slots), the
 * gradient allreduce over the data copies. */
typedef struct tsr_p3_cost {
    size_t t, d, p, m, mb;
    int offload;               /* optimizer state and step on the host */
    double step, compute, tp, send, bubble, allreduce; /* allreduce: + the offloaded step */
    double stage_s;            /* the bottleneck stage per micro-batch */
} tsr_p3_cost;

/* A layout refused for memory, with its reason. */
typedef struct tsr_p3_refusal {
    size_t t, d, p, m;
    int offload;
    double need, limit;        /* the device furthest over its limit */
    char why[256];
} tsr_p3_refusal;

struct tsr_plan3d {
    tsr_context *ctx;
    char title[160];
    tsr_plan3d_options opt;
    size_t blocks_total, heads_total;
    tsr_p3_cost best;
    size_t *blocks;            /* per stage */
    double *stage_s;           /* per stage: forward + backward + send of one micro-batch */
    tsr_p3_device *devices;    /* d x p x t: copy-major, then stage, then member */
    size_t ndevices;
    char (*dev_id)[64];
    char (*host_name)[64];
    tsr_p3_cost *runners;      /* best of other degrees, fastest first */
    size_t nrunners;
    tsr_p3_cost *per_tensor;   /* the best of each other tensor degree, by degree */
    size_t nper_tensor;
    tsr_p3_refusal *refused;   /* the closest to fitting first */
    size_t nrefused, refused_total;
    double work;
    size_t layouts;            /* (t, d, p, m) combinations considered */
};

#endif
