/* Configuration at the edge (lib/core/config.c): every variable parsed into its field, every bad
 * value refused with the variable and the value named, defaults without an environment, a
 * value set in code winning; and two checks of the tree: no getenv in lib/ backends/
 * topology/ outside lib/core/config.c, and every variable of lib/core/config.c in the README's table. */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "support/test_util.h"

/* Everything lib/core/config.c reads, cleared before each test so the run's own environment
 * (tests/run-tests.sh sets TSR_CACHE_DIR) cannot leak in. */
static const char *const all_vars[] = {
    "TSR_LOG", "TSR_CACHE_DIR", "TSR_NO_OPENCL", "TSR_NO_HWLOC", "TSR_TOPOLOGY",
    "TSR_DATA_DIR", "TSR_HOST_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "TSR_KERNEL_BINARY_DIR", "TSR_CLBLAST_PARAMS", "TSR_TENSOR_CORES", "TSR_HOST_SGEMM", "OPENBLAS_CORETYPE", "TSR_FAULT_CKPT_KILL",
    "TSR_ALLREDUCE", "TSR_ALLREDUCE_SEGMENT", "TSR_SHM_BYTES", "TSR_COMM_TIMEOUT",
    "TSR_NONFINITE", "TSR_TIMELINE", "TSR_DP_BALANCE", "TSR_FAULT_GRAD_NAN", "TSR_FUSION_BYTES",
    "TSR_COMPRESS", "TSR_ZERO"};

static int clear_env(void **state) {
    (void)state;
    for (size_t i = 0; i < TSR_ARRAY_SIZE(all_vars); i++) unsetenv(all_vars[i]);
    return 0;
}

static tsr_context_options env_context_options(void) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    assert_int_equal(tsr_context_options_from_env(&o, NULL, 0), TSR_OK);
    return o;
}

static tsr_trainer_options env_trainer_options(void) {
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    char err[256];
    tsr_status st = tsr_trainer_options_from_env(&o, err, sizeof err);
    if (st != TSR_OK) fail_msg("%s", err);
    return o;
}

static void test_defaults_without_environment(void **state) {
    (void)state;
    tsr_context_options d, o = env_context_options();
    tsr_context_options_init(&d);
    assert_int_equal(o.log_level, -1);
    assert_null(o.cache_dir);
    assert_int_equal(o.flags, 0);
    assert_null(o.topology_file);
    assert_null(o.data_dir);
    assert_int_equal(o.host_threads, 0);
    assert_null(o.kernel_binary_dir);
    assert_null(o.clblast_params);
    assert_int_equal(o.no_blas_advice, 0);
    assert_true(o.fault_ckpt_kill == -1);
    assert_int_equal(o.comm.algo, TSR_ALLREDUCE_AUTO);
    assert_int_equal(o.comm.segment_bytes, 256u << 10);
    assert_int_equal(o.comm.shm_bytes, 16u << 20);
    assert_true(o.comm.timeout_s == 300);
    assert_memory_equal(&o, &d, sizeof o);

    tsr_trainer_options t = env_trainer_options(), td;
    tsr_trainer_options_init(&td);
    assert_memory_equal(&t, &td, sizeof t);
    assert_int_equal(t.nonfinite, TSR_NONFINITE_STOP);
    assert_null(t.timeline);
    assert_int_equal(t.even_shares, 0);
    assert_true(t.fault_grad_nan_step == -1);
    assert_int_equal(t.fusion_bytes, 0);
    assert_int_equal(t.compress, TSR_COMPRESS_NONE);
    assert_int_equal(t.shard_optimizer, 0);

    /* a context made without environment runs with these, resolved */
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_context_options r;
    tsr_context_get_options(ctx, &r);
    assert_int_equal(r.log_level, TSR_LOG_OFF);
    assert_null(r.data_dir);
    assert_int_equal(r.comm.segment_bytes, 256u << 10);
    assert_string_equal(r.cache_dir, tsr_context_cache_dir(ctx));
    tsr_context_free(ctx);
}

static void test_context_variables(void **state) {
    (void)state;
    setenv("TSR_LOG", "debug", 1);
    setenv("TSR_CACHE_DIR", "/tmp/tsr-config-cache", 1);
    setenv("TSR_NO_OPENCL", "1", 1);
    setenv("TSR_NO_HWLOC", "0", 1);
    setenv("TSR_TOPOLOGY", "/tmp/topo.json", 1);
    setenv("TSR_DATA_DIR", "/tmp/data", 1);
    setenv("TSR_HOST_THREADS", "3", 1);
    setenv("OPENBLAS_NUM_THREADS", "5", 1);
    setenv("TSR_KERNEL_BINARY_DIR", "/tmp/bin", 1);
    setenv("TSR_CLBLAST_PARAMS", "Xgemm:MWG=128", 1);
    setenv("TSR_TENSOR_CORES", "tf32", 1);
    setenv("TSR_HOST_SGEMM", "openblas", 1);
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    setenv("TSR_FAULT_CKPT_KILL", "1000", 1);
    setenv("TSR_ALLREDUCE", "shm", 1);
    setenv("TSR_ALLREDUCE_SEGMENT", "64K", 1);
    setenv("TSR_SHM_BYTES", "2M", 1);
    setenv("TSR_COMM_TIMEOUT", "2.5", 1);
    tsr_context_options o = env_context_options();
    assert_int_equal(o.log_level, TSR_LOG_DEBUG);
    assert_string_equal(o.cache_dir, "/tmp/tsr-config-cache");
    assert_int_equal(o.flags, TSR_CONTEXT_NO_OPENCL);
    assert_string_equal(o.topology_file, "/tmp/topo.json");
    assert_string_equal(o.data_dir, "/tmp/data");
    assert_int_equal(o.host_threads, 3);
    assert_string_equal(o.kernel_binary_dir, "/tmp/bin");
    assert_string_equal(o.clblast_params, "Xgemm:MWG=128");
    assert_int_equal(o.tensor_cores, 2);
    assert_int_equal(o.host_sgemm, TSR_HOST_SGEMM_OPENBLAS);
    assert_int_equal(o.no_blas_advice, 1);
    assert_true(o.fault_ckpt_kill == 1000);
    assert_int_equal(o.comm.algo, TSR_ALLREDUCE_SHM);
    assert_int_equal(o.comm.segment_bytes, 64u << 10);
    assert_int_equal(o.comm.shm_bytes, 2u << 20);
    assert_true(o.comm.timeout_s == 2.5);

    /* TSR_NO_HWLOC=1 too; the thread fallbacks in their order, foreign lists ignored */
    setenv("TSR_NO_HWLOC", "1", 1);
    unsetenv("TSR_HOST_THREADS");
    o = env_context_options();
    assert_int_equal(o.flags, TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC);
    assert_int_equal(o.host_threads, 5);
    unsetenv("OPENBLAS_NUM_THREADS");
    setenv("OMP_NUM_THREADS", "6", 1);
    assert_int_equal(env_context_options().host_threads, 6);
    setenv("OMP_NUM_THREADS", "4,2", 1);
    assert_int_equal(env_context_options().host_threads, 0);
    setenv("TSR_TENSOR_CORES", "1", 1);
    assert_int_equal(env_context_options().tensor_cores, 1);
    setenv("TSR_TENSOR_CORES", "0", 1);
    assert_int_equal(env_context_options().tensor_cores, 0);
    setenv("TSR_HOST_SGEMM", "onednn", 1);
    assert_int_equal(env_context_options().host_sgemm, TSR_HOST_SGEMM_ONEDNN);
    setenv("TSR_HOST_SGEMM", "auto", 1);
    assert_int_equal(env_context_options().host_sgemm, TSR_HOST_SGEMM_AUTO);
}

/* What the context was made with, kept after the environment changes. */
static void test_context_keeps_its_copy(void **state) {
    (void)state;
    setenv("TSR_DATA_DIR", "/tmp/tsr-config-data", 1);
    setenv("TSR_CLBLAST_PARAMS", "XgemmDirect:WGD=32", 1);
    setenv("TSR_HOST_THREADS", "2", 1);
    setenv("TSR_ALLREDUCE", "ring", 1);
    setenv("TSR_FAULT_CKPT_KILL", "77", 1);
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    clear_env(NULL);
    tsr_context_options r;
    tsr_context_get_options(ctx, &r);
    assert_string_equal(r.data_dir, "/tmp/tsr-config-data");
    assert_string_equal(r.clblast_params, "XgemmDirect:WGD=32");
    assert_int_equal(r.host_threads, 2);
    assert_int_equal(r.comm.algo, TSR_ALLREDUCE_RING);
    assert_true(r.fault_ckpt_kill == 77);
    assert_int_equal(r.flags, TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC);
    tsr_context_set_fault_ckpt_kill(ctx, -9);
    tsr_context_get_options(ctx, &r);
    assert_true(r.fault_ckpt_kill == -1);
    /* a communicator of this context takes its knobs */
    tsr_comm *c;
    assert_int_equal(tsr_comm_self_create(ctx, &c), TSR_OK);
    assert_int_equal(tsr_comm_choose_algo(c, 1 << 20), TSR_ALLREDUCE_RING);
    tsr_comm_free(c);
    tsr_context_free(ctx);
}

static const char *cache_dir_of_new_context(char *buf, size_t size) {
    tsr_context *ctx;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_strlcpy(buf, tsr_context_cache_dir(ctx), size);
    tsr_context_free(ctx);
    return buf;
}

static void test_cache_dir_fallbacks(void **state) {
    (void)state;
    char home[512] = "", buf[512];
    const char *h = getenv("HOME"), *x = getenv("XDG_CACHE_HOME");
    char xdg[512] = "";
    if (h) tsr_strlcpy(home, h, sizeof home);
    if (x) tsr_strlcpy(xdg, x, sizeof xdg);
    setenv("TSR_CACHE_DIR", "/tmp/tsr-a", 1);
    setenv("XDG_CACHE_HOME", "/tmp/tsr-x", 1);
    setenv("HOME", "/tmp/tsr-h", 1);
    assert_string_equal(cache_dir_of_new_context(buf, sizeof buf), "/tmp/tsr-a");
    unsetenv("TSR_CACHE_DIR");
    assert_string_equal(cache_dir_of_new_context(buf, sizeof buf), "/tmp/tsr-x/tessera");
    unsetenv("XDG_CACHE_HOME");
    assert_string_equal(cache_dir_of_new_context(buf, sizeof buf), "/tmp/tsr-h/.cache/tessera");
    unsetenv("HOME");
    assert_string_equal(cache_dir_of_new_context(buf, sizeof buf), "/tmp/tessera-cache");
    if (*home) setenv("HOME", home, 1);
    if (*xdg) setenv("XDG_CACHE_HOME", xdg, 1);
}

static void test_trainer_variables(void **state) {
    (void)state;
    setenv("TSR_NONFINITE", "skip", 1);
    setenv("TSR_TIMELINE", "/tmp/t.json", 1);
    setenv("TSR_DP_BALANCE", "0", 1);
    setenv("TSR_FAULT_GRAD_NAN", "7", 1);
    setenv("TSR_FUSION_BYTES", "64K", 1);
    setenv("TSR_COMPRESS", "topk", 1);
    setenv("TSR_ZERO", "1", 1);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    o.no_grad_check = 1;
    assert_int_equal(tsr_trainer_options_from_env(&o, NULL, 0), TSR_OK);
    assert_int_equal(o.nonfinite, TSR_NONFINITE_SKIP);
    assert_int_equal(o.no_grad_check, 0); /* a policy from outside checks the gradients */
    assert_string_equal(o.timeline, "/tmp/t.json");
    assert_int_equal(o.even_shares, 1);
    assert_true(o.fault_grad_nan_step == 7);
    assert_int_equal(o.fusion_bytes, 64u << 10);
    assert_int_equal(o.compress, TSR_COMPRESS_TOPK);
    assert_int_equal(o.shard_optimizer, 1);

    setenv("TSR_NONFINITE", "stop", 1);
    setenv("TSR_DP_BALANCE", "1", 1);
    setenv("TSR_FUSION_BYTES", "3M", 1);
    setenv("TSR_COMPRESS", "fp16", 1);
    setenv("TSR_ZERO", "0", 1);
    o = env_trainer_options();
    assert_int_equal(o.nonfinite, TSR_NONFINITE_STOP);
    assert_int_equal(o.even_shares, 0);
    assert_int_equal(o.fusion_bytes, 3u << 20);
    assert_int_equal(o.compress, TSR_COMPRESS_FP16);
    assert_int_equal(o.shard_optimizer, -1);
    setenv("TSR_FUSION_BYTES", "123", 1);
    setenv("TSR_COMPRESS", "none", 1);
    o = env_trainer_options();
    assert_int_equal(o.fusion_bytes, 123);
    assert_int_equal(o.compress, TSR_COMPRESS_NONE);
}

/* A value set in code wins; TSR_CONTEXT_NO_ENV reads nothing. */
static void test_code_wins(void **state) {
    (void)state;
    setenv("TSR_LOG", "debug", 1);
    setenv("TSR_DATA_DIR", "/tmp/env", 1);
    setenv("TSR_ALLREDUCE", "shm", 1);
    setenv("TSR_COMM_TIMEOUT", "9", 1);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.log_level = TSR_LOG_OFF;
    o.data_dir = "/tmp/code";
    o.comm.algo = TSR_ALLREDUCE_RING;
    assert_int_equal(tsr_context_options_from_env(&o, NULL, 0), TSR_OK);
    assert_int_equal(o.log_level, TSR_LOG_OFF);
    assert_string_equal(o.data_dir, "/tmp/code");
    assert_int_equal(o.comm.algo, TSR_ALLREDUCE_RING);
    assert_true(o.comm.timeout_s == 9);

    setenv("TSR_NONFINITE", "stop", 1);
    setenv("TSR_COMPRESS", "topk", 1);
    setenv("TSR_ZERO", "1", 1);
    tsr_trainer_options t;
    tsr_trainer_options_init(&t);
    t.nonfinite = TSR_NONFINITE_SKIP;
    t.compress = TSR_COMPRESS_FP16;
    t.shard_optimizer = -1;
    assert_int_equal(tsr_trainer_options_from_env(&t, NULL, 0), TSR_OK);
    assert_int_equal(t.nonfinite, TSR_NONFINITE_SKIP);
    assert_int_equal(t.compress, TSR_COMPRESS_FP16);
    assert_int_equal(t.shard_optimizer, -1);

    setenv("TSR_LOG", "loud", 1); /* would fail, but is not read */
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC | TSR_CONTEXT_NO_ENV;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    tsr_context_options r;
    tsr_context_get_options(ctx, &r);
    assert_null(r.data_dir);
    assert_int_equal(r.log_level, TSR_LOG_WARN);
    assert_int_equal(r.comm.algo, TSR_ALLREDUCE_AUTO);
    tsr_context_free(ctx);
}

typedef struct {
    const char *name, *value, *accepted;
} bad_case;

static void capture(tsr_log_level level, const char *msg, void *user) {
    if (level == TSR_LOG_ERROR) tsr_strlcpy(user, msg, 512);
}

static void check_message(const char *msg, const bad_case *b) {
    char want[256];
    snprintf(want, sizeof want, "%s='%s': expected ", b->name, b->value);
    if (!strstr(msg, want) || !strstr(msg, b->accepted))
        fail_msg("%s=%s: message \"%s\" lacks \"%s\" or \"%s\"", b->name, b->value, msg, want,
                 b->accepted);
}

static void test_bad_context_values(void **state) {
    (void)state;
    static const bad_case bad[] = {
        {"TSR_LOG", "loud", "off, error, warn, info or debug"},
        {"TSR_NO_OPENCL", "yes", "0 or 1"},
        {"TSR_NO_HWLOC", "2", "0 or 1"},
        {"TSR_HOST_THREADS", "0", "a thread count >= 1"},
        {"TSR_TENSOR_CORES", "yes", "0, 1 (bf16/fp16 GEMMs) or tf32"},
        {"TSR_HOST_SGEMM", "mkl", "auto, openblas or onednn"},
        {"TSR_HOST_THREADS", "four", "a thread count >= 1"},
        {"TSR_HOST_THREADS", "2x", "a thread count >= 1"},
        {"TSR_FAULT_CKPT_KILL", "-5", "a byte count >= 0"},
        {"TSR_ALLREDUCE", "tree", "auto, ring, rhd, shm or mpi"},
        {"TSR_ALLREDUCE_SEGMENT", "1K", "a byte count >= 4096"},
        {"TSR_ALLREDUCE_SEGMENT", "x", "a byte count >= 4096"},
        {"TSR_SHM_BYTES", "16G", "a byte count >= 65536"},
        {"TSR_SHM_BYTES", "-1M", "a byte count >= 65536"},
        {"TSR_COMM_TIMEOUT", "-1", "seconds in [0, 1e9]"},
        {"TSR_COMM_TIMEOUT", "3s", "seconds in [0, 1e9]"},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(bad); i++) {
        clear_env(NULL);
        setenv(bad[i].name, bad[i].value, 1);
        tsr_context_options o;
        tsr_context_options_init(&o);
        char err[256];
        if (tsr_context_options_from_env(&o, err, sizeof err) != TSR_ERR_PARSE)
            fail_msg("%s='%s' was accepted", bad[i].name, bad[i].value);
        check_message(err, &bad[i]);
        /* the context refuses it too, and its log sink hears why */
        char logged[512] = "";
        tsr_context_options_init(&o);
        o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
        o.log_fn = capture;
        o.log_user = logged; /* log_level left to the environment: TSR_LOG is a case */
        tsr_context *ctx = (tsr_context *)0x1;
        assert_int_equal(tsr_context_create(&ctx, &o), TSR_ERR_PARSE);
        assert_null(ctx);
        check_message(logged, &bad[i]);
    }
    /* a message cut to a short buffer stays a string */
    setenv("TSR_LOG", "loud", 1);
    tsr_context_options o;
    tsr_context_options_init(&o);
    char tiny[8];
    assert_int_equal(tsr_context_options_from_env(&o, tiny, sizeof tiny), TSR_ERR_PARSE);
    assert_string_equal(tiny, "TSR_LOG");
}

static void test_bad_trainer_values(void **state) {
    (void)state;
    static const bad_case bad[] = {
        {"TSR_NONFINITE", "maybe", "skip or stop"},
        {"TSR_DP_BALANCE", "yes", "0 (even shares) or 1"},
        {"TSR_FAULT_GRAD_NAN", "-1", "an optimizer step >= 0"},
        {"TSR_FUSION_BYTES", "0", "a byte count >= 1"},
        {"TSR_FUSION_BYTES", "4X", "a byte count >= 1"},
        {"TSR_COMPRESS", "zip", "none, fp16 or topk"},
        {"TSR_ZERO", "2", "0 or 1"},
    };
    for (size_t i = 0; i < TSR_ARRAY_SIZE(bad); i++) {
        clear_env(NULL);
        setenv(bad[i].name, bad[i].value, 1);
        tsr_trainer_options o;
        tsr_trainer_options_init(&o);
        char err[256];
        if (tsr_trainer_options_from_env(&o, err, sizeof err) != TSR_ERR_PARSE)
            fail_msg("%s='%s' was accepted", bad[i].name, bad[i].value);
        check_message(err, &bad[i]);
    }
}

/* ---- the tree: run from the source root (tests/run-tests.sh does); skipped elsewhere ---- */

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s) s[n] = '\0';
    fclose(f);
    return s;
}

#define NEED_SOURCE_TREE()                                                   \
    do {                                                                     \
        FILE *probe_ = fopen("lib/core/config.c", "r");                      \
        if (!probe_) TSR_TEST_SKIP("not run from the source root");          \
        fclose(probe_);                                                      \
    } while (0)

static char offenders[4096];

static int find_getenv(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb;
    (void)ftw;
    size_t n = strlen(path);
    if (type != FTW_F || n < 2 || (strcmp(path + n - 2, ".c") && strcmp(path + n - 2, ".h")))
        return 0;
    if (!strcmp(path, "lib/core/config.c")) return 0;
    char *text = read_text(path);
    if (!text) return 0;
    int hit = strstr(text, "getenv") != NULL;
    free(text);
    if (hit && strlen(offenders) + n + 2 < sizeof offenders) {
        strcat(offenders, " ");
        strcat(offenders, path);
    }
    return 0;
}

static void test_no_getenv_below_the_edge(void **state) {
    (void)state;
    NEED_SOURCE_TREE();
    offenders[0] = '\0';
    const char *const roots[] = {"lib", "backends", "topology"};
    for (size_t i = 0; i < TSR_ARRAY_SIZE(roots); i++)
        assert_int_equal(nftw(roots[i], find_getenv, 16, FTW_PHYS), 0);
    if (offenders[0]) fail_msg("getenv outside lib/core/config.c:%s", offenders);
}

/* Whether `name` occurs in `text` as a whole word. */
static int has_word(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *p = strstr(text, name); p; p = strstr(p + 1, name)) {
        int before = p > text && (p[-1] == '_' || (p[-1] >= 'A' && p[-1] <= 'Z') ||
                                  (p[-1] >= '0' && p[-1] <= '9'));
        char c = p[n];
        int after = c == '_' || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!before && !after) return 1;
    }
    return 0;
}

/* Every variable lib/core/config.c names ("NAME" string literals in capitals) is in the README's
 * configuration table, and every TSR_ variable of the table is read by lib/core/config.c or a tool. */
static void test_readme_table(void **state) {
    (void)state;
    NEED_SOURCE_TREE();
    char *config = read_text("lib/core/config.c"), *readme = read_text("README.md");
    char *train = read_text("samples/tsr-train.c"), *reexec = read_text("samples/blas_reexec.h");
    assert_non_null(config);
    assert_non_null(readme);
    assert_non_null(train);
    assert_non_null(reexec);
    char *table = strstr(readme, "\n## Configuration");
    assert_non_null(table);
    char *end = strstr(table + 1, "\n## ");
    if (end) *end = '\0';
    int names = 0;
    for (const char *p = strchr(config, '"'); p; p = strchr(p + 1, '"')) {
        size_t n = strspn(p + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
        if (n < 3 || p[1 + n] != '"') continue;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)n, p + 1);
        if (!has_word(table, name)) fail_msg("%s (lib/core/config.c) is not in README's table", name);
        names++;
        p += n + 1;
    }
    assert_true(names >= (int)TSR_ARRAY_SIZE(all_vars));
    for (const char *p = strstr(table, "| `TSR_"); p; p = strstr(p + 1, "| `TSR_")) {
        char name[64];
        size_t n = strspn(p + 3, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
        snprintf(name, sizeof name, "%.*s", (int)n, p + 3);
        if (!has_word(config, name) && !has_word(train, name) && !has_word(reexec, name))
            fail_msg("%s is in README's table but nothing reads it", name);
    }
    free(config);
    free(readme);
    free(train);
    free(reexec);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_defaults_without_environment, clear_env),
        cmocka_unit_test_setup(test_context_variables, clear_env),
        cmocka_unit_test_setup(test_context_keeps_its_copy, clear_env),
        cmocka_unit_test_setup(test_cache_dir_fallbacks, clear_env),
        cmocka_unit_test_setup(test_trainer_variables, clear_env),
        cmocka_unit_test_setup(test_code_wins, clear_env),
        cmocka_unit_test_setup(test_bad_context_values, clear_env),
        cmocka_unit_test_setup(test_bad_trainer_values, clear_env),
        cmocka_unit_test(test_no_getenv_below_the_edge),
        cmocka_unit_test(test_readme_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
