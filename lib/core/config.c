/* Configuration at the edge: the only file of the library that reads the environment.
 * Each variable is parsed and checked here into its options field; a bad value is
 * TSR_ERR_PARSE naming the variable, the value and what is accepted. The README's
 * configuration table lists every variable read below (tests/check-config.sh compares). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backends/host/host.h"
#include "internal.h"

/* Largest byte count a variable takes: 2^40, or half the address space on 32-bit targets. */
#define CONFIG_MAX_BYTES ((uint64_t)SIZE_MAX >> 1 < (uint64_t)1 << 40 ? (uint64_t)SIZE_MAX >> 1 \
                                                                    : (uint64_t)1 << 40)

/* A variable's value, or NULL when it is unset or empty (empty counts as unset). */
static const char *env(const char *name) {
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static tsr_status bad_value(char *err, size_t err_size, const char *name, const char *value,
                            const char *fmt, ...) TSR_PRINTF(5, 6);
static tsr_status bad_value(char *err, size_t err_size, const char *name, const char *value,
                            const char *fmt, ...) {
    if (err && err_size) {
        int n = snprintf(err, err_size, "%s='%s': expected ", name, value);
        if (n >= 0 && (size_t)n < err_size) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, err_size - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return TSR_ERR_PARSE;
}

/* Decimal digits only, in [min, max]. */
static int parse_int(const char *v, int64_t min, int64_t max, int64_t *out) {
    if (*v < '0' || *v > '9') return 0;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    if (*end || x > (unsigned long long)max || (int64_t)x < min) return 0;
    *out = (int64_t)x;
    return 1;
}

/* Digits with an optional K or M suffix (binary: 256K = 262144), in [min, CONFIG_MAX_BYTES]. */
static int parse_bytes(const char *v, uint64_t min, size_t *out) {
    if (*v < '0' || *v > '9') return 0;
    char *end;
    unsigned long long x = strtoull(v, &end, 10);
    int shift = (*end == 'k' || *end == 'K') ? 10 : (*end == 'm' || *end == 'M') ? 20 : 0;
    if (shift) end++;
    if (*end || x > CONFIG_MAX_BYTES >> shift || (x << shift) < min) return 0;
    *out = (size_t)(x << shift);
    return 1;
}

/* "0" or "1". */
static int parse_bool(const char *v, int *out) {
    if (strcmp(v, "0") && strcmp(v, "1")) return 0;
    *out = v[0] == '1';
    return 1;
}

static tsr_status env_string(const char *name, const char **field) {
    const char *v;
    if (!*field && (v = env(name))) *field = v;
    return TSR_OK;
}

static tsr_status env_flag(const char *name, unsigned bit, unsigned *flags, char *err,
                           size_t err_size) {
    const char *v = env(name);
    int on;
    if (!v) return TSR_OK;
    if (!parse_bool(v, &on)) return bad_value(err, err_size, name, v, "0 or 1");
    if (on) *flags |= bit;
    return TSR_OK;
}

static tsr_status env_bytes(const char *name, uint64_t min, size_t def, size_t *field, char *err,
                            size_t err_size) {
    const char *v = env(name);
    if (!v || *field != def) return TSR_OK;
    if (!parse_bytes(v, min, field))
        return bad_value(err, err_size, name, v,
                         "a byte count >= %llu: digits with an optional K or M suffix (e.g. 256K)",
                         (unsigned long long)min);
    return TSR_OK;
}

/* A foreign thread count (OpenBLAS's, OpenMP's): a positive number, else ignored (OpenMP also
 * allows lists such as "4,2" that are not ours to judge). */
static int foreign_threads(const char *name) {
    const char *v = env(name);
    int64_t t;
    return v && parse_int(v, 1, 1 << 20, &t) ? (int)t : 0;
}

static tsr_status comm_from_env(tsr_comm_options *c, char *err, size_t err_size) {
    tsr_comm_options d;
    tsr_comm_options_init(&d);
    const char *v;
    if (c->algo == d.algo && (v = env("TSR_ALLREDUCE")) &&
        tsr_allreduce_algo_parse(v, &c->algo) != TSR_OK)
        return bad_value(err, err_size, "TSR_ALLREDUCE", v, "auto, ring, rhd, shm or mpi");
    TSR_TRY(env_bytes("TSR_ALLREDUCE_SEGMENT", 4096, d.segment_bytes, &c->segment_bytes, err,
                      err_size));
    TSR_TRY(env_bytes("TSR_SHM_BYTES", 64u << 10, d.shm_bytes, &c->shm_bytes, err, err_size));
    if (c->timeout_s == d.timeout_s && (v = env("TSR_COMM_TIMEOUT"))) {
        char *end;
        double x = strtod(v, &end);
        if (end == v || *end || !(x >= 0) || x > 1e9)
            return bad_value(err, err_size, "TSR_COMM_TIMEOUT", v,
                             "seconds in [0, 1e9] (0: no limit)");
        c->timeout_s = x;
    }
    return TSR_OK;
}

tsr_status tsr_context_options_from_env(tsr_context_options *o, char *err, size_t err_size) {
    if (err && err_size) err[0] = '\0';
    if (!o) return TSR_ERR_INVALID_ARG;
    tsr_context_options d;
    tsr_context_options_init(&d);
    const char *v;
    if (o->log_level == d.log_level && (v = env("TSR_LOG"))) {
        tsr_log_level l = tsr_log_level_parse(v, (tsr_log_level)-1);
        if ((int)l < 0)
            return bad_value(err, err_size, "TSR_LOG", v, "off, error, warn, info or debug");
        o->log_level = (int)l;
    }
    env_string("TSR_CACHE_DIR", &o->cache_dir);
    TSR_TRY(env_flag("TSR_NO_OPENCL", TSR_CONTEXT_NO_OPENCL, &o->flags, err, err_size));
    TSR_TRY(env_flag("TSR_NO_HWLOC", TSR_CONTEXT_NO_HWLOC, &o->flags, err, err_size));
    env_string("TSR_TOPOLOGY", &o->topology_file);
    env_string("TSR_DATA_DIR", &o->data_dir);
    if (o->host_threads == d.host_threads) {
        int64_t t;
        if ((v = env("TSR_HOST_THREADS"))) {
            if (!parse_int(v, 1, 1 << 20, &t))
                return bad_value(err, err_size, "TSR_HOST_THREADS", v,
                                 "a thread count >= 1 (more than 64 runs 64)");
            o->host_threads = (int)t;
        } else if (!(o->host_threads = foreign_threads("OPENBLAS_NUM_THREADS"))) {
            o->host_threads = foreign_threads("OMP_NUM_THREADS");
        }
    }
    env_string("TSR_KERNEL_BINARY_DIR", &o->kernel_binary_dir);
    env_string("TSR_CLBLAST_PARAMS", &o->clblast_params);
    if (o->tensor_cores == d.tensor_cores && (v = env("TSR_TENSOR_CORES"))) {
        if (!strcmp(v, "0") || !strcmp(v, "1")) o->tensor_cores = *v - '0';
        else if (!strcmp(v, "tf32")) o->tensor_cores = 2;
        else return bad_value(err, err_size, "TSR_TENSOR_CORES", v,
                              "0, 1 (bf16/fp16 GEMMs) or tf32 (fp32 GEMMs too)");
    }
    if (o->host_sgemm == d.host_sgemm && (v = env("TSR_HOST_SGEMM"))) {
        if (!strcmp(v, "auto")) o->host_sgemm = TSR_HOST_SGEMM_AUTO;
        else if (!strcmp(v, "openblas")) o->host_sgemm = TSR_HOST_SGEMM_OPENBLAS;
        else if (!strcmp(v, "onednn")) o->host_sgemm = TSR_HOST_SGEMM_ONEDNN;
        else return bad_value(err, err_size, "TSR_HOST_SGEMM", v, "auto, openblas or onednn");
    }
    if (!o->no_blas_advice && getenv("OPENBLAS_CORETYPE")) o->no_blas_advice = 1;
    if (o->fault_ckpt_kill == d.fault_ckpt_kill && (v = env("TSR_FAULT_CKPT_KILL")) &&
        !parse_int(v, 0, INT64_MAX, &o->fault_ckpt_kill))
        return bad_value(err, err_size, "TSR_FAULT_CKPT_KILL", v, "a byte count >= 0");
    return comm_from_env(&o->comm, err, err_size);
}

tsr_status tsr_config_context(tsr_context_options *o, char *cache_dir, size_t cache_size,
                              char *err, size_t err_size) {
    if (!(o->flags & TSR_CONTEXT_NO_ENV)) TSR_TRY(tsr_context_options_from_env(o, err, err_size));
    const char *base;
    int n;
    if (o->cache_dir && *o->cache_dir)
        n = snprintf(cache_dir, cache_size, "%s", o->cache_dir);
    else if ((base = env("XDG_CACHE_HOME")))
        n = snprintf(cache_dir, cache_size, "%s/tessera", base);
    else if ((base = env("HOME")))
        n = snprintf(cache_dir, cache_size, "%s/.cache/tessera", base);
    else
        n = snprintf(cache_dir, cache_size, "/tmp/tessera-cache");
    if (n < 0 || (size_t)n >= cache_size) {
        if (err && err_size)
            snprintf(err, err_size, "cache folder longer than %zu characters", cache_size - 1);
        return TSR_ERR_INVALID_ARG;
    }
    return TSR_OK;
}

tsr_status tsr_trainer_options_from_env(tsr_trainer_options *o, char *err, size_t err_size) {
    if (err && err_size) err[0] = '\0';
    if (!o) return TSR_ERR_INVALID_ARG;
    tsr_trainer_options d;
    tsr_trainer_options_init(&d);
    const char *v;
    int on;
    if ((v = env("TSR_NONFINITE"))) {
        if (strcmp(v, "skip") && strcmp(v, "stop"))
            return bad_value(err, err_size, "TSR_NONFINITE", v, "skip or stop");
        if (o->nonfinite == d.nonfinite)
            o->nonfinite = strcmp(v, "skip") ? TSR_NONFINITE_STOP : TSR_NONFINITE_SKIP;
        o->no_grad_check = 0; /* a policy asked for from outside checks the gradients too */
    }
    env_string("TSR_TIMELINE", &o->timeline);
    if ((v = env("TSR_DP_BALANCE"))) {
        if (!parse_bool(v, &on))
            return bad_value(err, err_size, "TSR_DP_BALANCE", v,
                             "0 (even shares) or 1 (shares by measured throughput)");
        if (o->even_shares == d.even_shares) o->even_shares = !on;
    }
    if (o->fault_grad_nan_step == d.fault_grad_nan_step && (v = env("TSR_FAULT_GRAD_NAN")) &&
        !parse_int(v, 0, INT64_MAX, &o->fault_grad_nan_step))
        return bad_value(err, err_size, "TSR_FAULT_GRAD_NAN", v, "an optimizer step >= 0");
    TSR_TRY(env_bytes("TSR_FUSION_BYTES", 1, d.fusion_bytes, &o->fusion_bytes, err, err_size));
    if (o->compress == d.compress && (v = env("TSR_COMPRESS")) &&
        tsr_compress_kind_parse(v, &o->compress) != TSR_OK)
        return bad_value(err, err_size, "TSR_COMPRESS", v, "none, fp16 or topk");
    if ((v = env("TSR_ZERO"))) {
        if (!parse_bool(v, &on)) return bad_value(err, err_size, "TSR_ZERO", v, "0 or 1");
        if (o->shard_optimizer == d.shard_optimizer) o->shard_optimizer = on ? 1 : -1;
    }
    return TSR_OK;
}

/* The OpenBLAS advice for callers without a context (the tools, before they start): none when
 * the user set OPENBLAS_CORETYPE. */
const char *tsr_blas_better_coretype(void) {
    return getenv("OPENBLAS_CORETYPE") ? NULL : tsr_host_blas_advice();
}

/* Transitional: lib/train/trainer.c's device classes still ask for the host thread count without a
 * context; it goes once that code calls tsr_host_threads(ctx, cores). */
int tsr_host_thread_count(unsigned cores) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    if (tsr_context_options_from_env(&o, NULL, 0) != TSR_OK) o.host_threads = 0;
    return tsr_host_threads(o.host_threads, cores);
}
