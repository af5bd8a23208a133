/* tsr-train's option parser (see cli.h). */
#include "lib/cli/cli.h"
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static tsr_status fail(tsr_cli_train *a, const char *opt, const char *fmt, ...) {
    int n = snprintf(a->error, sizeof a->error, "option %.64s: ", opt); /* long junk: cut */
    if (n < 0 || (size_t)n >= sizeof a->error) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->error + n, sizeof a->error - (size_t)n, fmt, ap);
    va_end(ap);
    return TSR_ERR_PARSE;
}

/* An integer in [lo, hi]; the message names the range the option accepts. */
static tsr_status parse_range(tsr_cli_train *a, const char *opt, const char *v, long lo, long hi,
                              long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi) {
        if (hi == LONG_MAX) return fail(a, opt, "'%.64s' is not an integer >= %ld", v, lo);
        return fail(a, opt, "'%.64s' is not an integer in %ld..%ld", v, lo, hi);
    }
    *out = x;
    return TSR_OK;
}

static tsr_status parse_long(tsr_cli_train *a, const char *opt, const char *v, long lo, long *out) {
    return parse_range(a, opt, v, lo, LONG_MAX, out);
}

static tsr_status parse_double(tsr_cli_train *a, const char *opt, const char *v, double lo,
                               double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < lo || x >= hi)
        return fail(a, opt, "'%.64s' is not a number in [%g, %g)", v, lo, hi);
    *out = x;
    return TSR_OK;
}

static const char *const flags[] = {"--json",  "--quiet", "--summary", "--nesterov",
                                    "--zero", "--recompute", "--no-decay-1d", "--help",  "-h"};
static const char *const valued[] = {
    "--model",  "--data",   "--device", "--checkpoint", "--resume", "--optimizer",
    "--schedule", "--epochs", "--batch", "--limit",     "--warmup", "--seed",
    "--lr",     "--momentum", "--weight-decay", "--manifest", "--mode", "--nonfinite",
    "--compress", "--stages", "--microbatches", "--pipeline-schedule", "--replicas", "--servers",
    "--staleness", "--gossip-graph", "--gossip-period", "--init", "--steps", "--context",
    "--eval-every", "--val-windows", "--tp", "--tp-shares", "--beta2", "--min-lr",
    "--precision", "--clip-grad", "--test-limit"};

tsr_status tsr_cli_parse_train(int argc, char *const *argv, tsr_cli_train *a) {
    memset(a, 0, sizeof *a);
    a->model = "mlp";
    a->epochs = 5;
    a->batch = 64;
    a->optimizer = "adam";
    a->schedule = "cosine";
    a->lr = -1;
    a->momentum = 0.9;
    a->beta2 = 0.999;
    a->seed = 1;
    a->pipe_schedule = TSR_PIPELINE_1F1B;
    a->graph = TSR_GOSSIP_RING;
    if (argc < 1 || !argv) return TSR_OK;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!o) return fail(a, "(null)", "NULL argument");
        int is_flag = 0, is_valued = 0;
        for (size_t k = 0; k < sizeof flags / sizeof *flags; k++) is_flag |= !strcmp(o, flags[k]);
        for (size_t k = 0; k < sizeof valued / sizeof *valued; k++)
            is_valued |= !strcmp(o, valued[k]);
        if (is_flag) {
            if (!strcmp(o, "--json")) a->json = 1;
            else if (!strcmp(o, "--quiet")) a->quiet = 1;
            else if (!strcmp(o, "--summary")) a->summary = 1;
            else if (!strcmp(o, "--nesterov")) a->nesterov = 1;
            else if (!strcmp(o, "--zero")) a->zero = 1;
            else if (!strcmp(o, "--recompute")) a->recompute = 1;
            else if (!strcmp(o, "--no-decay-1d")) a->no_decay_1d = 1;
            else a->help = 1;
            continue;
        }
        if (!is_valued) {
            if (strncmp(o, "--", 2)) return fail(a, o, "unexpected argument");
            return fail(a, o, "unknown option");
        }
        if (i + 1 >= argc || !argv[i + 1]) return fail(a, o, "needs a value");
        const char *v = argv[++i];
        long l;
        tsr_status st = TSR_OK;
        if (!strcmp(o, "--model")) a->model = v;
        else if (!strcmp(o, "--data")) a->data = v;
        else if (!strcmp(o, "--device")) a->device = v;
        else if (!strcmp(o, "--checkpoint")) a->checkpoint = v;
        else if (!strcmp(o, "--resume")) a->resume = v;
        else if (!strcmp(o, "--init")) a->init = v;
        else if (!strcmp(o, "--manifest")) a->manifest = v;
        else if (!strcmp(o, "--optimizer")) a->optimizer = v;
        else if (!strcmp(o, "--schedule")) a->schedule = v;
        else if (!strcmp(o, "--mode")) a->mode = v;
        else if (!strcmp(o, "--stages")) a->stages = v;
        else if (!strcmp(o, "--microbatches")) st = parse_long(a, o, v, 1, &a->microbatches);
        else if (!strcmp(o, "--replicas")) st = parse_long(a, o, v, 1, &a->replicas);
        else if (!strcmp(o, "--servers")) st = parse_long(a, o, v, 1, &a->servers);
        else if (!strcmp(o, "--staleness")) {
            char *end;
            long sv = strtol(v, &end, 10);
            if (strcmp(v, "inf") && (end == v || *end || sv < 0))
                return fail(a, o, "'%.64s' is not a number >= 0 or inf", v);
            a->staleness = v;
        }
        else if (!strcmp(o, "--pipeline-schedule")) {
            if (tsr_pipeline_schedule_parse(v, &a->pipe_schedule) != TSR_OK)
                return fail(a, o, "'%.64s' is not gpipe or 1f1b", v);
            a->pipeline_schedule = v;
        }
        else if (!strcmp(o, "--gossip-graph")) {
            if (tsr_gossip_graph_parse(v, &a->graph) != TSR_OK)
                return fail(a, o, "'%.64s' is not ring or exp", v);
            a->gossip_graph = v;
        } else if (!strcmp(o, "--gossip-period")) st = parse_long(a, o, v, 1, &a->gossip_period);
        else if (!strcmp(o, "--nonfinite")) {
            if (strcmp(v, "skip") && strcmp(v, "stop"))
                return fail(a, o, "'%.64s' is not skip or stop", v);
            a->nonfinite = v;
        } else if (!strcmp(o, "--compress")) {
            if (strcmp(v, "none") && strcmp(v, "fp16") && strcmp(v, "topk"))
                return fail(a, o, "'%.64s' is not none, fp16 or topk", v);
            a->compress = v;
        } else if (!strcmp(o, "--epochs")) st = parse_long(a, o, v, 1, &a->epochs);
        else if (!strcmp(o, "--batch")) st = parse_range(a, o, v, 1, TSR_CLI_MAX_BATCH, &a->batch);
        else if (!strcmp(o, "--limit")) st = parse_long(a, o, v, 1, &a->limit);
        else if (!strcmp(o, "--test-limit")) st = parse_long(a, o, v, 1, &a->test_limit);
        else if (!strcmp(o, "--steps")) st = parse_long(a, o, v, 1, &a->steps);
        else if (!strcmp(o, "--context")) st = parse_range(a, o, v, 1, 65536, &a->context);
        else if (!strcmp(o, "--eval-every")) st = parse_long(a, o, v, 1, &a->eval_every);
        else if (!strcmp(o, "--val-windows")) st = parse_long(a, o, v, 1, &a->val_windows);
        else if (!strcmp(o, "--tp")) st = parse_range(a, o, v, 1, 4096, &a->tp);
        else if (!strcmp(o, "--tp-shares")) a->tp_shares = v;
        else if (!strcmp(o, "--warmup")) st = parse_long(a, o, v, 0, &a->warmup);
        else if (!strcmp(o, "--seed")) {
            if ((st = parse_long(a, o, v, 0, &l)) == TSR_OK) a->seed = (unsigned long long)l;
        } else if (!strcmp(o, "--lr")) st = parse_double(a, o, v, 1e-12, HUGE_VAL, &a->lr);
        else if (!strcmp(o, "--momentum")) st = parse_double(a, o, v, 0, 1, &a->momentum);
        else if (!strcmp(o, "--weight-decay"))
            st = parse_double(a, o, v, 0, HUGE_VAL, &a->weight_decay);
        else if (!strcmp(o, "--beta2")) st = parse_double(a, o, v, 0, 1, &a->beta2);
        else if (!strcmp(o, "--min-lr")) st = parse_double(a, o, v, 0, HUGE_VAL, &a->min_lr);
        else if (!strcmp(o, "--precision")) a->precision = v;
        else if (!strcmp(o, "--clip-grad")) st = parse_double(a, o, v, 0, HUGE_VAL, &a->clip_grad);
        if (st != TSR_OK) return st;
        if (!*v) return fail(a, o, "empty value");
    }
    return TSR_OK;
}
