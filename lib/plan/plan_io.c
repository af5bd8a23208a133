/* Plans as text: the stage table with its picture, and JSON written and read back (validated
 * against the model: contiguous layer ranges, known devices). */
#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/plan/plan_internal.h"

void tsr_plan_format_bytes(char *buf, size_t size, double b) {
    if (b >= 1024.0 * 1024 * 1024 * 1024)
        snprintf(buf, size, "%.1f TiB", b / (1024.0 * 1024 * 1024 * 1024));
    else if (b >= 1024.0 * 1024 * 1024)
        snprintf(buf, size, "%.1f GiB", b / (1024.0 * 1024 * 1024));
    else if (b >= 1024.0 * 1024)
        snprintf(buf, size, "%.1f MiB", b / (1024.0 * 1024));
    else if (b >= 1024.0)
        snprintf(buf, size, "%.1f KiB", b / 1024.0);
    else
        snprintf(buf, size, "%.0f B", b);
}

/* ---------------------------------------------------------------- table and picture */

/* Device label: its id, and its host when the stages span several hosts. */
static void device_label(const tsr_plan *p, const tsr_plan_device *d, char *buf, size_t n) {
    if (p->host_count > 1 && d->hostname[0])
        snprintf(buf, n, "%s@%s", d->id, d->hostname);
    else if (p->host_count > 1)
        snprintf(buf, n, "%s@%d", d->id, d->host);
    else
        snprintf(buf, n, "%s", d->id);
}

tsr_status tsr_plan_print(const tsr_plan *p, FILE *f) {
    if (!p || !f) return TSR_ERR_INVALID_ARG;
    size_t S = p->stage_count;
    fprintf(f, "Plan for %s: %zu stage%s", p->title[0] ? p->title : p->model_spec, S, S == 1 ? "" : "s");
    if (p->replicas > 1) fprintf(f, " x %d replicas", p->replicas);
    fprintf(f, ", batch %zu = %s%zu micro-batch%s of %zu, %d optimizer float%s per parameter\n",
            p->opt.batch, p->replicas > 1 ? "per replica " : "", p->microbatches,
            p->microbatches == 1 ? "" : "es", p->microbatch_size, p->opt.optimizer_slots,
            p->opt.optimizer_slots == 1 ? "" : "s");
    fprintf(f, "%5s  %-9s %-24s %-11s %9s %9s %9s %21s\n", "stage", "layers", "device", "kind",
            "fwd ms", "bwd ms", "send ms", "memory used / limit");
    for (size_t i = 0; i < S; i++) {
        const tsr_plan_stage *s = &p->stages[i];
        const tsr_plan_device *d = &p->devices[i];
        char layers[32], label[136], used[32], lim[32], mem[72];
        if (s->last - s->first == 1)
            snprintf(layers, sizeof layers, "%zu", s->first);
        else
            snprintf(layers, sizeof layers, "%zu-%zu", s->first, s->last - 1);
        device_label(p, d, label, sizeof label);
        tsr_plan_format_bytes(used, sizeof used, (double)s->memory_bytes);
        tsr_plan_format_bytes(lim, sizeof lim, (double)s->memory_limit);
        snprintf(mem, sizeof mem, "%s / %s", used, lim);
        fprintf(f, "%5zu  %-9s %-24s %-11s %9.3f %9.3f %9.3f %21s%s\n", i, layers, label,
                tsr_device_kind_name(d->kind), s->forward_s * 1e3, s->backward_s * 1e3,
                s->send_s * 1e3, mem, i == p->bottleneck && S > 1 ? "  <- bottleneck" : "");
    }
    fprintf(f, "predicted: %.1f samples/s, step %.3f ms, bubble %.1f%% ((S-1)/(M+S-1) = %zu/%zu)",
            tsr_plan_samples_per_s(p), p->step_s * 1e3, 100 * tsr_plan_bubble_fraction(p), S - 1,
            p->microbatches + S - 1);
    if (p->replicas > 1) fprintf(f, ", allreduce %.3f ms", p->allreduce_s * 1e3);
    fprintf(f, "\n");
    if (p->origin == TSR_PLAN_SEARCHED && !p->optimal)
        fprintf(f, "note: the search stopped at its work budget; best plan found, not proven "
                   "optimal\n");
    for (int r = 0; r < p->replicas; r++) {
        if (p->replicas > 1) fprintf(f, "replica %d: ", r);
        for (size_t i = 0; i < S; i++) {
            const tsr_plan_stage *s = &p->stages[i];
            char label[136];
            device_label(p, &p->devices[(size_t)r * S + i], label, sizeof label);
            fprintf(f, "%s[", i ? " ==> " : "");
            if (p->gpt_blocks) { /* block b: layers 2 + 10b .. (attention half: .. 6 + 10b) */
                size_t nb = p->gpt_blocks, f0 = s->first < 2 ? 2 : s->first;
                size_t l0 = s->last - 1 > 1 + 10 * nb ? 1 + 10 * nb : s->last - 1;
                if (s->first == 0) fprintf(f, "embeddings");
                if (l0 >= f0) {
                    size_t b0 = (f0 - 2) / 10, b1 = (l0 - 2) / 10;
                    fprintf(f, "%sblocks %zu%s-%zu%s", s->first == 0 ? ", " : "", b0,
                            (f0 - 2) % 10 >= 5 ? ".mlp" : "", b1, (l0 - 2) % 10 < 5 ? ".attn" : "");
                }
                if (s->last == p->layers) fprintf(f, "%sln_f, head", l0 >= f0 || s->first == 0 ? ", " : "");
            } else
                for (size_t l = s->first; l < s->last; l++)
                    fprintf(f, "%s%s", l > s->first ? " " : "", p->layer_spec[l]);
            fprintf(f, " | %s]", label);
        }
        fprintf(f, "\n");
    }
    return ferror(f) ? tsr_error(p->ctx, TSR_ERR_IO, "plan: write failed") : TSR_OK;
}

/* ---------------------------------------------------------------- JSON out */

/* Numbers that read back exactly (as in the topology files). */
static int add_num(cJSON *o, const char *key, double v) {
    char buf[40];
    if (!isfinite(v)) v = 0;
    snprintf(buf, sizeof buf, "%.15g", v);
    if (strtod(buf, NULL) != v) snprintf(buf, sizeof buf, "%.17g", v);
    cJSON *n = cJSON_CreateRaw(buf);
    if (n && cJSON_AddItemToObject(o, key, n)) return 1;
    cJSON_Delete(n);
    return 0;
}

static cJSON *plan_json(const tsr_plan *p) {
    size_t S = p->stage_count;
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    int ok = cJSON_AddStringToObject(root, "format", TSR_PLAN_FORMAT) &&
             add_num(root, "version", TSR_PLAN_VERSION) &&
             cJSON_AddStringToObject(root, "model", p->model_spec);
    cJSON *in = ok ? cJSON_AddObjectToObject(root, "input") : NULL;
    ok = in && add_num(in, "channels", (double)p->input.channels) &&
         add_num(in, "height", (double)p->input.height) &&
         add_num(in, "width", (double)p->input.width) &&
         add_num(in, "classes", (double)p->input.classes) &&
         add_num(root, "layers", (double)p->layers) && add_num(root, "batch", (double)p->opt.batch) &&
         add_num(root, "microbatches", (double)p->microbatches) &&
         add_num(root, "microbatch_size", (double)p->microbatch_size) &&
         add_num(root, "replicas", p->replicas) &&
         add_num(root, "optimizer_slots", p->opt.optimizer_slots) &&
         add_num(root, "memory_fraction", p->opt.memory_fraction) &&
         add_num(root, "network_gbps", p->opt.network_gbps) &&
         add_num(root, "step_seconds", p->step_s) &&
         add_num(root, "samples_per_s", tsr_plan_samples_per_s(p)) &&
         add_num(root, "bubble_fraction", tsr_plan_bubble_fraction(p)) &&
         add_num(root, "allreduce_seconds", p->allreduce_s) &&
         add_num(root, "bottleneck", (double)p->bottleneck) &&
         cJSON_AddBoolToObject(root, "optimal", p->optimal);
    cJSON *devs = ok ? cJSON_AddArrayToObject(root, "devices") : NULL;
    ok = devs != NULL;
    for (size_t i = 0; ok && i < S * (size_t)p->replicas; i++) {
        const tsr_plan_device *d = &p->devices[i];
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(devs, o);
        if (!ok) {
            cJSON_Delete(o);
            break;
        }
        ok = add_num(o, "index", d->index) && cJSON_AddStringToObject(o, "id", d->id) &&
             cJSON_AddStringToObject(o, "name", d->name) &&
             cJSON_AddStringToObject(o, "kind", tsr_device_kind_name(d->kind)) &&
             add_num(o, "host", d->host) && cJSON_AddStringToObject(o, "hostname", d->hostname) &&
             add_num(o, "rank", d->rank);
    }
    cJSON *stages = ok ? cJSON_AddArrayToObject(root, "stages") : NULL;
    ok = stages != NULL;
    for (size_t i = 0; ok && i < S; i++) {
        const tsr_plan_stage *s = &p->stages[i];
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(stages, o);
        if (!ok) {
            cJSON_Delete(o);
            break;
        }
        char spec[1024] = "";
        size_t at = 0;
        for (size_t l = s->first; l < s->last && at < sizeof spec; l++) {
            int n = snprintf(spec + at, sizeof spec - at, "%s%s", l > s->first ? "," : "",
                             p->layer_spec[l]);
            if (n > 0) at += (size_t)n;
        }
        ok = add_num(o, "first", (double)s->first) && add_num(o, "last", (double)s->last) &&
             cJSON_AddStringToObject(o, "layers_spec", spec) && add_num(o, "device", s->device) &&
             cJSON_AddStringToObject(o, "device_id", s->device_id) && add_num(o, "rank", s->rank) &&
             add_num(o, "forward_s", s->forward_s) && add_num(o, "backward_s", s->backward_s) &&
             add_num(o, "send_s", s->send_s) && add_num(o, "memory_bytes", (double)s->memory_bytes) &&
             add_num(o, "memory_limit", (double)s->memory_limit);
    }
    if (ok && p->replicas > 1) {
        cJSON *reps = cJSON_AddArrayToObject(root, "replica_devices");
        ok = reps != NULL;
        for (int r = 0; ok && r < p->replicas; r++) {
            cJSON *a = cJSON_CreateArray();
            ok = a && cJSON_AddItemToArray(reps, a);
            if (!ok) {
                cJSON_Delete(a);
                break;
            }
            for (size_t i = 0; ok && i < S; i++) {
                cJSON *n = cJSON_CreateNumber(p->devices[(size_t)r * S + i].index);
                ok = n && cJSON_AddItemToArray(a, n);
                if (!ok) cJSON_Delete(n);
            }
        }
    }
    if (!ok) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

tsr_status tsr_plan_write_json(const tsr_plan *p, FILE *f) {
    if (!p || !f) return TSR_ERR_INVALID_ARG;
    cJSON *root = plan_json(p);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return tsr_error(p->ctx, TSR_ERR_NO_MEMORY, "plan: JSON text");
    int ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    free(text);
    return ok ? TSR_OK : tsr_error(p->ctx, TSR_ERR_IO, "plan: write failed");
}

/* ---------------------------------------------------------------- JSON in */

typedef struct rd {
    tsr_context *ctx;
    char where[64]; /* "stages[2]" or "" */
} rd;

static tsr_status ferr(const rd *r, tsr_status st, const char *field, const char *fmt, ...)
    TSR_PRINTF(4, 5);
static tsr_status ferr(const rd *r, tsr_status st, const char *field, const char *fmt, ...) {
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    return tsr_error(r->ctx, st, "plan %s%s%s: %s", r->where, r->where[0] && field[0] ? "." : "",
                     field, detail);
}

/* Integer field in [lo, hi]; `need`: missing is an error, else *v keeps its value. */
static tsr_status get_int(const rd *r, const cJSON *o, const char *key, int need, double lo,
                          double hi, double *v) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!n) return need ? ferr(r, TSR_ERR_PARSE, key, "missing") : TSR_OK;
    if (!cJSON_IsNumber(n) || n->valuedouble != floor(n->valuedouble) || n->valuedouble < lo ||
        n->valuedouble > hi)
        return ferr(r, TSR_ERR_PARSE, key, "expected an integer in %.0f..%.0f", lo, hi);
    *v = n->valuedouble;
    return TSR_OK;
}

static tsr_status get_real(const rd *r, const cJSON *o, const char *key, double lo, double *v) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!n) return TSR_OK;
    if (!cJSON_IsNumber(n) || !isfinite(n->valuedouble) || n->valuedouble < lo)
        return ferr(r, TSR_ERR_PARSE, key, "expected a number >= %g", lo);
    *v = n->valuedouble;
    return TSR_OK;
}

static const char *get_str(const rd *r, const cJSON *o, const char *key, tsr_status *st) {
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!n || !cJSON_IsString(n) || !n->valuestring[0]) {
        *st = ferr(r, TSR_ERR_PARSE, key, n ? "expected a non-empty string" : "missing");
        return NULL;
    }
    return n->valuestring;
}

#define MAX_COUNT 1e9 /* bounds every integer field read */

static tsr_status kind_from_name(const char *s, tsr_device_kind *k) {
    for (int i = TSR_DEVICE_HOST; i <= TSR_DEVICE_CUSTOM; i++)
        if (!strcmp(s, tsr_device_kind_name((tsr_device_kind)i))) {
            *k = (tsr_device_kind)i;
            return TSR_OK;
        }
    return TSR_ERR_PARSE;
}

/* The plan's device table entry for topology index `index`, or NULL. */
static const tsr_plan_device *table_find(const tsr_plan_device *t, size_t n, int index) {
    for (size_t i = 0; i < n; i++)
        if (t[i].index == index) return &t[i];
    return NULL;
}

static tsr_status read_devices(rd *r, const cJSON *root, tsr_plan_device **out, size_t *count) {
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "devices");
    if (!a || !cJSON_IsArray(a) || cJSON_GetArraySize(a) < 1)
        return ferr(r, TSR_ERR_PARSE, "devices", a ? "expected a non-empty array" : "missing");
    size_t n = (size_t)cJSON_GetArraySize(a);
    tsr_plan_device *t = tsr_calloc(r->ctx, n, sizeof *t);
    if (!t) return tsr_error(r->ctx, TSR_ERR_NO_MEMORY, "plan: devices");
    tsr_status st = TSR_OK;
    for (size_t i = 0; i < n && st == TSR_OK; i++) {
        const cJSON *o = cJSON_GetArrayItem(a, (int)i);
        snprintf(r->where, sizeof r->where, "devices[%zu]", i);
        if (!cJSON_IsObject(o)) {
            st = ferr(r, TSR_ERR_PARSE, "", "expected an object");
            break;
        }
        double v = 0, rank = -1, host = 0;
        const char *id;
        if ((st = get_int(r, o, "index", 1, 0, MAX_COUNT, &v)) != TSR_OK) break;
        if (!(id = get_str(r, o, "id", &st))) break;
        if ((st = get_int(r, o, "rank", 0, -1, MAX_COUNT, &rank)) != TSR_OK) break;
        if ((st = get_int(r, o, "host", 0, 0, MAX_COUNT, &host)) != TSR_OK) break;
        t[i].index = (int)v;
        t[i].rank = (int)rank;
        t[i].host = (int)host;
        t[i].kind = TSR_DEVICE_CUSTOM;
        tsr_strlcpy(t[i].id, id, sizeof t[i].id);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "name");
        if (cJSON_IsString(s)) tsr_strlcpy(t[i].name, s->valuestring, sizeof t[i].name);
        s = cJSON_GetObjectItemCaseSensitive(o, "hostname");
        if (cJSON_IsString(s)) tsr_strlcpy(t[i].hostname, s->valuestring, sizeof t[i].hostname);
        s = cJSON_GetObjectItemCaseSensitive(o, "kind");
        if (s && (!cJSON_IsString(s) || kind_from_name(s->valuestring, &t[i].kind) != TSR_OK)) {
            st = ferr(r, TSR_ERR_PARSE, "kind", "expected host, cpu, gpu, accelerator or custom");
            break;
        }
        for (size_t j = 0; j < i; j++)
            if (t[j].index == t[i].index) {
                st = ferr(r, TSR_ERR_PARSE, "index", "%d is listed twice (devices[%zu])",
                          t[i].index, j);
                break;
            }
    }
    r->where[0] = 0;
    if (st != TSR_OK) {
        tsr_free(r->ctx, t);
        return st;
    }
    *out = t;
    *count = n;
    return TSR_OK;
}

/* Stage device: the index must be in the table, with the same id. */
static tsr_status stage_device(const rd *r, const cJSON *o, const tsr_plan_device *t, size_t n,
                               const tsr_plan_device **out) {
    double v = 0;
    tsr_status st;
    TSR_TRY(get_int(r, o, "device", 1, 0, MAX_COUNT, &v));
    const char *id = get_str(r, o, "device_id", &st);
    if (!id) return st;
    const tsr_plan_device *d = table_find(t, n, (int)v);
    if (!d)
        return ferr(r, TSR_ERR_NOT_FOUND, "device", "%d ('%s') is not among the plan's devices",
                    (int)v, id);
    if (strcmp(d->id, id))
        return ferr(r, TSR_ERR_NOT_FOUND, "device_id",
                    "'%s', but the plan's devices list device %d as '%s'", id, d->index, d->id);
    *out = d;
    return TSR_OK;
}

static tsr_status parse_root(rd *r, const tsr_model *model, const cJSON *root, tsr_plan **out) {
    tsr_context *ctx = r->ctx;
    tsr_status st = TSR_OK;
    if (!cJSON_IsObject(root)) return ferr(r, TSR_ERR_PARSE, "", "expected an object");
    const char *fmt = get_str(r, root, "format", &st);
    if (!fmt) return st;
    if (strcmp(fmt, TSR_PLAN_FORMAT))
        return ferr(r, TSR_ERR_PARSE, "format", "'%s', expected '%s'", fmt, TSR_PLAN_FORMAT);
    double v = 0;
    TSR_TRY(get_int(r, root, "version", 1, 0, MAX_COUNT, &v));
    if (v != TSR_PLAN_VERSION)
        return ferr(r, TSR_ERR_PARSE, "version", "%.0f, this tessera reads %d", v,
                    TSR_PLAN_VERSION);
    const char *spec = get_str(r, root, "model", &st);
    if (!spec) return st;
    if (strcmp(spec, tsr_model_spec(model)))
        return ferr(r, TSR_ERR_MISMATCH, "model", "plan for '%s', the model is '%s'", spec,
                    tsr_model_spec(model));
    tsr_model_input mi = tsr_model_get_input(model);
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(root, "input");
    if (in) {
        double c = (double)mi.channels, h = (double)mi.height, w = (double)mi.width,
               k = (double)mi.classes;
        snprintf(r->where, sizeof r->where, "input");
        if (!cJSON_IsObject(in)) return ferr(r, TSR_ERR_PARSE, "", "expected an object");
        TSR_TRY(get_int(r, in, "channels", 1, 1, MAX_COUNT, &c));
        TSR_TRY(get_int(r, in, "height", 1, 1, MAX_COUNT, &h));
        TSR_TRY(get_int(r, in, "width", 1, 1, MAX_COUNT, &w));
        TSR_TRY(get_int(r, in, "classes", 1, 1, MAX_COUNT, &k));
        if (c != mi.channels || h != mi.height || w != mi.width || k != mi.classes)
            return ferr(r, TSR_ERR_MISMATCH, "",
                        "%.0fx%.0fx%.0f with %.0f classes, the model takes %zux%zux%zu with %zu",
                        c, h, w, k, mi.channels, mi.height, mi.width, mi.classes);
        r->where[0] = 0;
    }
    size_t L = tsr_model_layer_count(model);
    double layers = (double)L;
    TSR_TRY(get_int(r, root, "layers", 0, 1, MAX_COUNT, &layers));
    if (layers != (double)L)
        return ferr(r, TSR_ERR_MISMATCH, "layers", "%.0f, the model has %zu", layers, L);
    tsr_plan_options o;
    tsr_plan_options_init(&o);
    double batch = 0, micro = 0, reps = 1, slots = 0, frac = o.memory_fraction,
           net = o.network_gbps, ar = 0;
    TSR_TRY(get_int(r, root, "batch", 1, 1, MAX_COUNT, &batch));
    TSR_TRY(get_int(r, root, "microbatches", 1, 1, MAX_COUNT, &micro));
    TSR_TRY(get_int(r, root, "replicas", 0, 1, 65536, &reps));
    TSR_TRY(get_int(r, root, "optimizer_slots", 0, 0, 16, &slots));
    TSR_TRY(get_real(r, root, "memory_fraction", 0, &frac));
    TSR_TRY(get_real(r, root, "network_gbps", 0, &net));
    TSR_TRY(get_real(r, root, "allreduce_seconds", 0, &ar));
    if (!(frac > 0 && frac <= 1))
        return ferr(r, TSR_ERR_PARSE, "memory_fraction", "%g, must be in (0, 1]", frac);
    if (!(net > 0)) return ferr(r, TSR_ERR_PARSE, "network_gbps", "must be > 0");
    size_t R = (size_t)reps, rb = ((size_t)batch + R - 1) / R;
    if (batch < reps)
        return ferr(r, TSR_ERR_PARSE, "batch", "%.0f is less than the %zu replicas", batch, R);
    if (micro > (double)rb)
        return ferr(r, TSR_ERR_PARSE, "microbatches", "%.0f, more than the %zu samples of a "
                    "replica's batch", micro, rb);
    o.batch = (size_t)batch;
    o.microbatches = (size_t)micro;
    o.replicas = (int)reps;
    o.optimizer_slots = (int)slots;
    o.memory_fraction = frac;
    o.network_gbps = net;

    tsr_plan_device *table = NULL;
    size_t nt = 0;
    TSR_TRY(read_devices(r, root, &table, &nt));
    const cJSON *sa = cJSON_GetObjectItemCaseSensitive(root, "stages");
    if (!sa || !cJSON_IsArray(sa) || cJSON_GetArraySize(sa) < 1) {
        tsr_free(ctx, table);
        return ferr(r, TSR_ERR_PARSE, "stages", sa ? "expected a non-empty array" : "missing");
    }
    size_t S = (size_t)cJSON_GetArraySize(sa);
    if (S > L) {
        tsr_free(ctx, table);
        return ferr(r, TSR_ERR_PARSE, "stages", "%zu stages for %zu layers", S, L);
    }
    tsr_plan *p;
    st = tsr_plan_alloc(ctx, model, S, (int)R, &p);
    if (st != TSR_OK) {
        tsr_free(ctx, table);
        return st;
    }
    p->opt = o;
    p->replicas = (int)R;
    p->microbatches = o.microbatches;
    p->replica_batch = rb;
    p->microbatch_size = (rb + o.microbatches - 1) / o.microbatches;
    p->allreduce_s = ar;
    p->origin = TSR_PLAN_PARSED;
    size_t end = 0;
    for (size_t i = 0; i < S && st == TSR_OK; i++) {
        const cJSON *so = cJSON_GetArrayItem(sa, (int)i);
        snprintf(r->where, sizeof r->where, "stages[%zu]", i);
        if (!cJSON_IsObject(so)) {
            st = ferr(r, TSR_ERR_PARSE, "", "expected an object");
            break;
        }
        tsr_plan_stage *s = &p->stages[i];
        double first = 0, last = 0, rank = -2, mem = 0, lim = 0;
        if ((st = get_int(r, so, "first", 1, 0, MAX_COUNT, &first)) != TSR_OK) break;
        if ((st = get_int(r, so, "last", 1, 0, MAX_COUNT, &last)) != TSR_OK) break;
        if (first != (double)end) {
            st = ferr(r, TSR_ERR_PARSE, "first", "%.0f, but %s at %zu (%s)", first,
                      i ? "the previous stage ends" : "the model starts", end,
                      first > (double)end ? "a gap" : "an overlap");
            break;
        }
        if (last <= first) {
            st = ferr(r, TSR_ERR_PARSE, "last", "%.0f, not after first %.0f (an empty stage)", last,
                      first);
            break;
        }
        if (last > (double)L) {
            st = ferr(r, TSR_ERR_PARSE, "last", "%.0f is past the model's %zu layers", last, L);
            break;
        }
        end = (size_t)last;
        s->first = (size_t)first;
        s->last = (size_t)last;
        const tsr_plan_device *d = NULL;
        if ((st = stage_device(r, so, table, nt, &d)) != TSR_OK) break;
        for (size_t j = 0; j < i; j++)
            if (p->stages[j].device == d->index) {
                st = ferr(r, TSR_ERR_PARSE, "device", "%d already runs stage %zu", d->index, j);
                break;
            }
        if (st != TSR_OK) break;
        s->device = d->index;
        tsr_strlcpy(s->device_id, d->id, sizeof s->device_id);
        if ((st = get_int(r, so, "rank", 0, -1, MAX_COUNT, &rank)) != TSR_OK) break;
        s->rank = rank >= -1 ? (int)rank : d->rank;
        if ((st = get_real(r, so, "forward_s", 0, &s->forward_s)) != TSR_OK) break;
        if ((st = get_real(r, so, "backward_s", 0, &s->backward_s)) != TSR_OK) break;
        if ((st = get_real(r, so, "send_s", 0, &s->send_s)) != TSR_OK) break;
        if ((st = get_int(r, so, "memory_bytes", 0, 0, 9007199254740992.0, &mem)) != TSR_OK) break;
        if ((st = get_int(r, so, "memory_limit", 0, 0, 9007199254740992.0, &lim)) != TSR_OK) break;
        s->memory_bytes = (uint64_t)mem;
        s->memory_limit = (uint64_t)lim;
        p->devices[i] = *d;
        p->devices[i].rank = s->rank;
    }
    r->where[0] = 0;
    if (st == TSR_OK && end != L)
        st = ferr(r, TSR_ERR_PARSE, "stages", "the last stage ends at layer %zu, the model has %zu",
                  end, L);
    if (st == TSR_OK && R > 1) {
        const cJSON *ra = cJSON_GetObjectItemCaseSensitive(root, "replica_devices");
        if (!ra || !cJSON_IsArray(ra) || (size_t)cJSON_GetArraySize(ra) != R)
            st = ferr(r, TSR_ERR_PARSE, "replica_devices", "expected %zu arrays of %zu devices",
                      R, S);
        for (size_t k = 0; st == TSR_OK && k < R; k++) {
            const cJSON *a = cJSON_GetArrayItem(ra, (int)k);
            snprintf(r->where, sizeof r->where, "replica_devices[%zu]", k);
            if (!cJSON_IsArray(a) || (size_t)cJSON_GetArraySize(a) != S) {
                st = ferr(r, TSR_ERR_PARSE, "", "expected an array of %zu devices", S);
                break;
            }
            for (size_t i = 0; i < S; i++) {
                const cJSON *n = cJSON_GetArrayItem(a, (int)i);
                const tsr_plan_device *d =
                    cJSON_IsNumber(n) ? table_find(table, nt, (int)n->valuedouble) : NULL;
                if (!d || n->valuedouble != floor(n->valuedouble)) {
                    st = ferr(r, TSR_ERR_NOT_FOUND, "", "entry %zu is not among the plan's devices",
                              i);
                    break;
                }
                if (k == 0 && d->index != p->stages[i].device) {
                    st = ferr(r, TSR_ERR_PARSE, "", "entry %zu: %d, but stages[%zu].device is %d",
                              i, d->index, i, p->stages[i].device);
                    break;
                }
                for (size_t u = 0; u < k * S + i && st == TSR_OK; u++)
                    if (p->devices[u].index == d->index)
                        st = ferr(r, TSR_ERR_PARSE, "",
                                  "entry %zu: device %d already runs stage %zu of replica %zu", i,
                                  d->index, u % S, u / S);
                if (st != TSR_OK) break;
                p->devices[k * S + i] = *d;
            }
        }
        r->where[0] = 0;
    }
    tsr_free(ctx, table);
    if (st != TSR_OK) {
        tsr_plan_free(p);
        return st;
    }
    tsr_plan_finish(p);
    *out = p;
    return TSR_OK;
}

static tsr_status parse_any(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                            const char *text, size_t len, tsr_plan **out) {
    if (!out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_plan_parse: NULL output");
    *out = NULL;
    if (!model || (!text && len))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_plan_parse: NULL %s",
                         model ? "text" : "model");
    cJSON *root = cJSON_ParseWithLength(text ? text : "", len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = at && text && at >= text && at <= text + len ? (long)(at - text) : -1;
        return tsr_error(ctx, TSR_ERR_PARSE, "plan: not valid JSON (near byte %ld)", off);
    }
    rd r = {ctx, ""};
    tsr_plan *p = NULL;
    tsr_status st = parse_root(&r, model, root, &p);
    cJSON_Delete(root);
    if (st == TSR_OK && topo) {
        int nd = tsr_topology_device_count(topo);
        for (size_t i = 0; i < p->stage_count * (size_t)p->replicas && st == TSR_OK; i++) {
            const tsr_plan_device *d = &p->devices[i];
            const tsr_device_info *td = d->index < nd ? tsr_topology_device(topo, d->index) : NULL;
            if (!td || strcmp(td->id, d->id))
                st = tsr_error(ctx, TSR_ERR_NOT_FOUND,
                               "plan stages[%zu].device: %d ('%s') is not that device of the "
                               "topology (%s)",
                               i % p->stage_count, d->index, d->id,
                               td ? td->id : "no such index");
            else if (d->name[0] && strcmp(td->name, d->name))
                st = tsr_error(ctx, TSR_ERR_NOT_FOUND,
                               "plan stages[%zu].device: %d ('%s') is a '%s' in the plan, a '%s' "
                               "in the topology",
                               i % p->stage_count, d->index, d->id, d->name, td->name);
        }
    }
    if (st != TSR_OK) {
        tsr_plan_free(p);
        return st;
    }
    *out = p;
    return TSR_OK;
}

tsr_status tsr_plan_parse(tsr_context *ctx, const tsr_model *model, const char *text, size_t len,
                          tsr_plan **out) {
    return parse_any(ctx, model, NULL, text, len, out);
}

tsr_status tsr_plan_parse_for(tsr_context *ctx, const tsr_model *model, const tsr_topology *topo,
                              const char *text, size_t len, tsr_plan **out) {
    if (!topo) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_plan_parse_for: NULL topology");
    return parse_any(ctx, model, topo, text, len, out);
}
