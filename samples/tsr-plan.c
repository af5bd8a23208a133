/* tsr-plan: places a model's layers on the devices of this machine (measured) or of a topology
 * file as a pipeline of stages, and prints the predicted stage times, memory and throughput.
 *
 *   tsr-plan --model cnn
 *   tsr-plan --model "conv5x5:64,relu,pool2,dense:4096,relu,dense:10" \
 *            --topology topology/examples/mixed-gpu.json --batch 256 --optimizer adam
 *   tsr-plan --model mlp --bounds 0,3,8 --devices 0,1   (a fixed placement, evaluated)
 *   tsr-plan --model gpt3 --topology topology/examples/cluster-256.json --svg plan.svg
 *                                   (a GPT: data x tensor x pipeline, tsr_plan3d_create) */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tessera.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: tsr-plan --model SPEC|mlp|cnn [options]\n"
            "  --topology FILE        plan for a topology file (default: this machine, measured)\n"
            "  --input CxHxW:K        input shape and classes (default 1x28x28:10, MNIST)\n"
            "  --context T            a GPT (--model gpt2, gpt-mini, gpt(...)): tokens per\n"
            "                         sequence (default: the model's context)\n"
            "  --batch N              global mini-batch per optimizer step (default 64)\n"
            "  --microbatches M       micro-batches per step (default 4 x stages, 1 for one)\n"
            "  --optimizer NAME       sgd, momentum or adam: optimizer state per parameter\n"
            "                         (default sgd)\n"
            "  --max-stages K         at most K pipeline stages (default: every usable device)\n"
            "  --replicas R           data-parallel copies of the pipeline (default 1)\n"
            "  --memory-fraction F    of each device's memory the plan may use (default 0.9)\n"
            "  --network-gbps G       GB/s between hosts (default 10)\n"
            "  --precision P          fp32 (default), bf16 or fp16: activations kept in 16 bits\n"
            "  --bounds B0,B1,..,BS   fixed placement: stage i holds layers [Bi, Bi+1) ...\n"
            "  --devices D0,..        ... on these topology device indices (see tsr-topo)\n"
            "  --no-calibrate         this machine: use cached figures only, measure nothing\n"
            "  --check                this machine: the cost model's time of one forward+backward\n"
            "                         pass of the whole batch on each usable device next to a\n"
            "                         timed one (tsr_trainer_measure)\n"
            "  --json                 the plan as JSON (tsr_plan_parse reads it back)\n"
            "  --load FILE            read a plan written by --json, check it against the model\n"
            "                         (and the --topology's devices) and print it\n"
            "A GPT is planned in 3D (data x tensor x pipeline: tensor groups of consecutive\n"
            "devices of one host, heads split unevenly by speed, whole blocks per stage) unless\n"
            "--pipeline-only, --bounds, --replicas, --max-stages, --json or --load is given. It\n"
            "prints one line per device (copy, stage, blocks, host, device, heads, memory used /\n"
            "limit, compute per step), the step's parts, the runners-up and the best of each\n"
            "other tensor degree with why they lost, and the layouts refused for memory. Its\n"
            "options (--optimizer defaults to adam):\n"
            "  --tensor K / --pipeline P / --data D   only that degree (default: search)\n"
            "  --zero                 optimizer state divided over the data copies (ZeRO-1)\n"
            "  --offload              layouts may keep the optimizer state (and run its step)\n"
            "                         on the host CPU when that is predicted faster or the only\n"
            "                         fit (ZeRO-Offload)\n"
            "  --runners-up N         other degrees' best layouts shown (default 4)\n"
            "  --svg FILE             also draw the plan: devices by host (colour: stage,\n"
            "                         label: heads) and one step's 1F1B schedule\n"
            "  --pipeline-only        plan a GPT by layers as a pipeline (the planner above)\n"
            "  --help\n");
}

static int bad(const char *opt, const char *why) {
    fprintf(stderr, "tsr-plan: option %s: %s\n", opt, why);
    usage(stderr);
    return 2;
}

static void die(tsr_context *ctx, tsr_status st, const char *what) {
    fprintf(stderr, "tsr-plan: %s: %s (%s)\n", what, ctx ? tsr_context_last_error(ctx) : "",
            tsr_status_name(st));
    exit(1);
}

static int parse_count(const char *s, long lo, size_t *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo) return -1;
    *out = (size_t)v;
    return 0;
}

/* Comma-separated non-negative integers; returns the count or -1. */
static long parse_list(const char *s, long *out, long cap) {
    long n = 0;
    while (*s) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || n == cap) return -1;
        out[n++] = v;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

/* Predicted against measured: one forward+backward pass of the batch on each usable device. */
static int check_model(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                       const tsr_plan_options *po) {
    tsr_model_input in = tsr_model_get_input(model);
    size_t n = po->batch, features = in.channels * in.height * in.width;
    float *x = malloc(n * features * sizeof *x);
    int32_t *y = malloc(n * sizeof *y);
    if (!x || !y) {
        fprintf(stderr, "tsr-plan: out of memory\n");
        return 1;
    }
    uint64_t r = 88172645463325252ull;
    for (size_t i = 0; i < n * features; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        x[i] = (float)((r >> 40) * (1.0 / 16777216.0));
    }
    for (size_t i = 0; i < n; i++) y[i] = (int32_t)(i % in.classes);
    tsr_plan_options one = *po;
    one.microbatches = 1;
    one.replicas = 1;
    size_t bounds[2] = {0, tsr_model_layer_count(model)};
    printf("%-14s %-40s %14s %14s %8s\n", "device", "name", "predicted/s", "measured/s",
           "ratio");
    for (int i = 0; i < tsr_topology_device_count(topo); i++) {
        const tsr_device_info *d = tsr_topology_device(topo, i);
        tsr_plan *p = NULL;
        if (tsr_plan_from_bounds(ctx, model, topo, &one, bounds, &i, 1, &p) != TSR_OK) continue;
        const tsr_plan_stage *s = tsr_plan_stage_at(p, 0);
        double predicted = (double)n / (s->forward_s + s->backward_s);
        tsr_plan_free(p);
        tsr_trainer_options to;
        tsr_trainer_options_init(&to);
        to.device = d->id;
        to.batch = n;
        tsr_trainer *t = NULL;
        double measured = 0;
        tsr_status st = tsr_trainer_create(ctx, model, &to, &t);
        if (st == TSR_OK) st = tsr_trainer_measure(t, x, y, n, &measured);
        tsr_trainer_free(t);
        if (st != TSR_OK) {
            printf("%-14s %-40.40s %14.1f %14s  (%s)\n", d->id, d->name, predicted, "-",
                   tsr_context_last_error(ctx));
            continue;
        }
        printf("%-14s %-40.40s %14.1f %14.1f %8.2f\n", d->id, d->name, predicted, measured,
               measured / predicted);
    }
    free(x);
    free(y);
    return 0;
}

/* --load: a plan file read back, checked against the model (and a topology file's devices). */
static int load_plan(tsr_context *ctx, tsr_model *model, const char *topo_file, const char *path,
                     int json) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tsr-plan: option --load: cannot open %s\n", path);
        return 1;
    }
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    char buf[65536];
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        if (len + n > cap) {
            cap = 2 * (len + n);
            char *t = realloc(text, cap);
            if (!t) {
                fprintf(stderr, "tsr-plan: out of memory\n");
                return 1;
            }
            text = t;
        }
        memcpy(text + len, buf, n);
        len += n;
    }
    fclose(f);
    tsr_topology *topo = NULL;
    tsr_status st = TSR_OK;
    if (topo_file && (st = tsr_topology_load(ctx, topo_file, &topo)) != TSR_OK)
        die(ctx, st, "reading the topology");
    tsr_plan *plan = NULL;
    st = topo ? tsr_plan_parse_for(ctx, model, topo, text, len, &plan)
              : tsr_plan_parse(ctx, model, text, len, &plan);
    free(text);
    if (st != TSR_OK) die(ctx, st, path);
    st = json ? tsr_plan_write_json(plan, stdout) : tsr_plan_print(plan, stdout);
    if (st != TSR_OK) die(ctx, st, "writing");
    tsr_plan_free(plan);
    tsr_topology_free(topo);
    tsr_model_free(model);
    tsr_context_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    const char *model_spec = NULL, *topo_file = NULL, *bounds_s = NULL, *devices_s = NULL;
    const char *load = NULL;
    int json = 0, calibrate = 1, check = 0, pipeline_only = 0, optimizer_set = 0, layer_opts = 0;
    const char *svg = NULL;
    tsr_plan3d_options p3;
    tsr_plan3d_options_init(&p3);
    tsr_plan_options po;
    tsr_plan_options_init(&po);
    tsr_model_input in = TSR_MODEL_INPUT_MNIST;
    size_t context = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        size_t n;
        if (!strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        } else if (!strcmp(a, "--no-calibrate")) {
            calibrate = 0;
            continue;
        } else if (!strcmp(a, "--check")) {
            check = 1;
            continue;
        } else if (!strcmp(a, "--zero")) {
            p3.zero = 1;
            continue;
        } else if (!strcmp(a, "--offload")) {
            p3.offload = 1;
            continue;
        } else if (!strcmp(a, "--pipeline-only")) {
            pipeline_only = 1;
            continue;
        }
        if (a[0] != '-' || a[1] != '-') return bad(a, "unknown argument");
        if (!v) return bad(a, "needs a value");
        i++;
        if (!strcmp(a, "--model"))
            model_spec = v;
        else if (!strcmp(a, "--topology"))
            topo_file = v;
        else if (!strcmp(a, "--load"))
            load = v;
        else if (!strcmp(a, "--bounds"))
            bounds_s = v;
        else if (!strcmp(a, "--devices"))
            devices_s = v;
        else if (!strcmp(a, "--svg"))
            svg = v;
        else if (!strcmp(a, "--tensor") || !strcmp(a, "--pipeline") || !strcmp(a, "--data") ||
                 !strcmp(a, "--runners-up")) {
            if (parse_count(v, a[2] == 'r' ? 0 : 1, &n) || n > 65536)
                return bad(a, a[2] == 'r' ? "expected an integer in 0..64" : "expected an integer in 1..65536");
            *(a[2] == 't' ? &p3.tensor : a[2] == 'p' ? &p3.pipeline : a[2] == 'd' ? &p3.data : &p3.runners_up) = n;
        } else if (!strcmp(a, "--precision")) {
            if (tsr_precision_parse(v, &po.precision)) return bad(a, "expected fp32, bf16 or fp16");
            p3.precision = po.precision;
        } else if (!strcmp(a, "--context")) {
            if (parse_count(v, 1, &context)) return bad(a, "expected an integer >= 1");
        } else if (!strcmp(a, "--batch")) {
            if (parse_count(v, 1, &po.batch)) return bad(a, "expected an integer >= 1");
        } else if (!strcmp(a, "--microbatches")) {
            if (parse_count(v, 1, &po.microbatches)) return bad(a, "expected an integer >= 1");
        } else if (!strcmp(a, "--max-stages")) {
            if (parse_count(v, 1, &po.max_stages)) return bad(a, "expected an integer >= 1");
            layer_opts = 1;
        } else if (!strcmp(a, "--replicas")) {
            if (parse_count(v, 1, &n) || n > 65536) return bad(a, "expected an integer in 1..65536");
            po.replicas = (int)n;
            layer_opts = 1;
        } else if (!strcmp(a, "--optimizer")) {
            optimizer_set = 1;
            if (!strcmp(v, "sgd"))
                po.optimizer_slots = 0;
            else if (!strcmp(v, "momentum"))
                po.optimizer_slots = 1;
            else if (!strcmp(v, "adam") || !strcmp(v, "adamw"))
                po.optimizer_slots = 2;
            else
                return bad(a, "expected sgd, momentum or adam");
        } else if (!strcmp(a, "--memory-fraction") || !strcmp(a, "--network-gbps")) {
            char *end;
            double x = strtod(v, &end);
            if (end == v || *end) return bad(a, "expected a number");
            if (a[2] == 'm')
                po.memory_fraction = x;
            else
                po.network_gbps = x;
        } else if (!strcmp(a, "--input")) {
            unsigned long c, h, w, k;
            char tail;
            if (sscanf(v, "%lux%lux%lu:%lu%c", &c, &h, &w, &k, &tail) != 4 || !c || !h || !w || !k)
                return bad(a, "expected CxHxW:K, e.g. 3x32x32:10");
            in = (tsr_model_input){c, h, w, k};
        } else
            return bad(a, "unknown option");
    }
    if (!model_spec) return bad("--model", "required");
    if (!bounds_s != !devices_s) return bad(bounds_s ? "--devices" : "--bounds", "goes with the other");
    if (check && topo_file) return bad("--check", "measures this machine, not a --topology file");

    tsr_context_options co;
    tsr_context_options_init(&co);
    if (topo_file) co.flags |= TSR_CONTEXT_NO_OPENCL; /* a file needs no device */
    char env_err[256];
    if (tsr_context_options_from_env(&co, env_err, sizeof env_err) != TSR_OK) {
        fprintf(stderr, "tsr-plan: %s\n", env_err);
        return 2;
    }
    tsr_context *ctx;
    tsr_status st = tsr_context_create(&ctx, &co);
    if (st != TSR_OK) die(NULL, st, "creating the context");
    tsr_model *model;
    tsr_gpt_config gpt;
    if (tsr_gpt_is_name(model_spec)) { /* token input of its own: --input does not apply */
        if ((st = tsr_gpt_config_parse(ctx, model_spec, &gpt)) == TSR_OK)
            st = tsr_model_create_gpt(ctx, &gpt, context ? context : gpt.context, &model);
    } else if (context) {
        return bad("--context", "is for a GPT (--model gpt2, gpt-mini, gpt(...))");
    } else {
        st = tsr_model_parse(ctx, model_spec, in, &model);
    }
    if (st != TSR_OK) {
        fprintf(stderr, "tsr-plan: option --model: %s\n", tsr_context_last_error(ctx));
        return 2;
    }
    if (load) return load_plan(ctx, model, topo_file, load, json);
    int plan3d = tsr_model_gpt_blocks(model) && !pipeline_only && !bounds_s && !layer_opts && !json;
    if (!plan3d && (svg || p3.zero || p3.offload || p3.tensor || p3.pipeline || p3.data))
        return bad(svg ? "--svg" : p3.zero ? "--zero" : p3.offload ? "--offload" : "--tensor/--pipeline/--data",
                   "is for the 3D plan of a GPT (without --pipeline-only, --bounds, --replicas, "
                   "--max-stages, --json)");
    tsr_topology *topo = NULL;
    if (topo_file) {
        st = tsr_topology_load(ctx, topo_file, &topo);
        /* a cluster description: place its ranks on devices, as tsr_cluster_gather would */
        if (st == TSR_OK && tsr_topology_rank_count(topo)) st = tsr_topology_assign_ranks(topo);
        if (st != TSR_OK) die(ctx, st, "reading the topology");
    } else {
        if (calibrate && (st = tsr_topology_calibrate(ctx, 0)) != TSR_OK)
            die(ctx, st, "measuring the devices");
        if ((st = tsr_topology_from_context(ctx, &topo)) != TSR_OK)
            die(ctx, st, "describing this machine");
    }
    if (check) {
        int rc = check_model(ctx, model, topo, &po);
        tsr_topology_free(topo);
        tsr_model_free(model);
        tsr_context_free(ctx);
        return rc;
    }
    if (plan3d) {
        p3.batch = po.batch;
        p3.microbatches = po.microbatches;
        p3.memory_fraction = po.memory_fraction;
        p3.network_gbps = po.network_gbps;
        if (optimizer_set) p3.optimizer_slots = po.optimizer_slots;
        tsr_plan3d *p = NULL;
        if ((st = tsr_plan3d_create(ctx, model, topo, &p3, &p)) != TSR_OK) die(ctx, st, "planning");
        if ((st = tsr_plan3d_print(p, stdout)) != TSR_OK) die(ctx, st, "writing");
        if (svg) {
            FILE *f = fopen(svg, "w");
            if (!f) {
                fprintf(stderr, "tsr-plan: option --svg: cannot write %s\n", svg);
                return 1;
            }
            st = tsr_plan3d_write_svg(p, f);
            if (fclose(f) != 0 && st == TSR_OK) st = TSR_ERR_IO;
            if (st != TSR_OK) die(ctx, st, "writing the picture");
        }
        tsr_plan3d_free(p);
        tsr_topology_free(topo);
        tsr_model_free(model);
        tsr_context_free(ctx);
        return 0;
    }
    tsr_plan *plan = NULL;
    if (bounds_s) {
        long b[257], d[257];
        long nb = parse_list(bounds_s, b, 257), nd = parse_list(devices_s, d, 256);
        if (nb < 2) return bad("--bounds", "expected 0,B1,...,LAYERS (at least 2 numbers)");
        if (nd != nb - 1) return bad("--devices", "expected one device index per stage");
        size_t bounds[257];
        int devs[256];
        for (long i = 0; i < nb; i++) bounds[i] = (size_t)b[i];
        for (long i = 0; i < nd; i++) devs[i] = (int)d[i];
        st = tsr_plan_from_bounds(ctx, model, topo, &po, bounds, devs, (size_t)nd, &plan);
    } else {
        st = tsr_plan_create(ctx, model, topo, &po, &plan);
    }
    if (st != TSR_OK) die(ctx, st, "planning");
    st = json ? tsr_plan_write_json(plan, stdout) : tsr_plan_print(plan, stdout);
    if (st != TSR_OK) die(ctx, st, "writing");
    tsr_plan_free(plan);
    tsr_topology_free(topo);
    tsr_model_free(model);
    tsr_context_free(ctx);
    return 0;
}
