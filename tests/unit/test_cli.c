/* tsr-train's option parser (lib/cli/cli.c): defaults, every accepted option, and every refusal with
 * the option it names; TSR_COMM_TIMEOUT parsing (lib/comm). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include "lib/cli/cli.h"
#include "tessera.h"

#define PARSE(a, ...)                                                                          \
    tsr_cli_parse_train((int)(sizeof((char *[]){"tsr-train", __VA_ARGS__}) / sizeof(char *)), \
                        (char *[]){"tsr-train", __VA_ARGS__}, (a))

static void test_defaults_and_values(void **state) {
    (void)state;
    tsr_cli_train a;
    char *argv0[] = {"tsr-train", NULL};
    assert_int_equal(tsr_cli_parse_train(1, argv0, &a), TSR_OK);
    assert_string_equal(a.model, "mlp");
    assert_int_equal(a.epochs, 5);
    assert_int_equal(a.batch, 64);
    assert_true(a.lr < 0);
    assert_true(a.beta2 == 0.999 && a.min_lr == 0);
    assert_true(a.clip_grad == 0 && !a.no_decay_1d);
    assert_null(a.manifest);
    assert_null(a.nonfinite);
    assert_int_equal(PARSE(&a, "--model", "cnn", "--epochs", "3", "--batch", "16", "--lr", "0.5",
                           "--momentum", "0", "--weight-decay", "1e-4", "--seed", "9", "--limit",
                           "100", "--warmup", "0", "--nesterov", "--json", "--quiet", "--summary",
                           "--manifest", "m.json", "--nonfinite", "skip", "--mode", "data",
                           "--checkpoint", "c", "--resume", "r", "--data", "d", "--device", "host",
                           "--optimizer", "sgd", "--schedule", "step", "--beta2", "0.99", "--min-lr", "1e-4"),
                     TSR_OK);
    assert_true(a.beta2 == 0.99 && a.min_lr == 1e-4);
    assert_string_equal(a.model, "cnn");
    assert_int_equal(a.epochs, 3);
    assert_int_equal(a.batch, 16);
    assert_true(a.lr == 0.5 && a.momentum == 0 && a.weight_decay == 1e-4);
    assert_int_equal(a.seed, 9);
    assert_int_equal(a.limit, 100);
    assert_true(a.nesterov && a.json && a.quiet && a.summary && !a.help);
    assert_string_equal(a.manifest, "m.json");
    assert_string_equal(a.nonfinite, "skip");
    assert_string_equal(a.mode, "data");
    assert_string_equal(a.optimizer, "sgd");
    assert_string_equal(a.schedule, "step");
    assert_null(a.init);
    assert_int_equal(PARSE(&a, "--clip-grad", "1", "--no-decay-1d"), TSR_OK);
    assert_true(a.clip_grad == 1 && a.no_decay_1d);
    assert_int_equal(PARSE(&a, "--init", "w.safetensors"), TSR_OK);
    assert_string_equal(a.init, "w.safetensors");
    assert_int_equal(PARSE(&a, "--help"), TSR_OK);
    assert_true(a.help);
}

static void refused(const char *want, tsr_status st, const tsr_cli_train *a) {
    assert_int_equal(st, TSR_ERR_PARSE);
    if (!strstr(a->error, want)) fail_msg("'%s' does not contain '%s'", a->error, want);
}

static void test_refusals(void **state) {
    (void)state;
    tsr_cli_train a;
    refused("option --bogus: unknown option", PARSE(&a, "--bogus"), &a);
    refused("option stray: unexpected argument", PARSE(&a, "stray"), &a);
    refused("option --lr: needs a value", PARSE(&a, "--lr"), &a);
    refused("option --epochs: '0' is not an integer >= 1", PARSE(&a, "--epochs", "0"), &a);
    refused("option --batch: 'x' is not an integer", PARSE(&a, "--batch", "x"), &a);
    refused("option --batch: '2147483648' is not an integer in 1..1048576",
            PARSE(&a, "--batch", "2147483648"), &a);
    assert_int_equal(PARSE(&a, "--batch", "1048576"), TSR_OK);
    refused("option --seed: '-1'", PARSE(&a, "--seed", "-1"), &a);
    refused("option --limit: '99999999999999999999'", PARSE(&a, "--limit", "99999999999999999999"), &a);
    refused("option --warmup: '1.5'", PARSE(&a, "--warmup", "1.5"), &a);
    refused("option --momentum: '1' is not a number in [0, 1)", PARSE(&a, "--momentum", "1"), &a);
    refused("option --beta2: '1' is not a number in [0, 1)", PARSE(&a, "--beta2", "1"), &a);
    refused("option --min-lr: '-1'", PARSE(&a, "--min-lr", "-1"), &a);
    refused("option --clip-grad: '-0.5' is not a number in [0, inf)", PARSE(&a, "--clip-grad", "-0.5"), &a);
    refused("option --clip-grad: 'inf'", PARSE(&a, "--clip-grad", "inf"), &a);
    refused("option --lr: 'nan'", PARSE(&a, "--lr", "nan"), &a);
    refused("option --lr: '0'", PARSE(&a, "--lr", "0"), &a);
    refused("option --weight-decay: 'inf'", PARSE(&a, "--weight-decay", "inf"), &a);
    refused("option --nonfinite: 'ignore' is not skip or stop", PARSE(&a, "--nonfinite", "ignore"), &a);
    refused("option --model: empty value", PARSE(&a, "--model", ""), &a);
    refused("option --gossip-graph: 'star' is not ring or exp", PARSE(&a, "--gossip-graph", "star"), &a);
    refused("option --gossip-period: '0'", PARSE(&a, "--gossip-period", "0"), &a);
    assert_int_equal(PARSE(&a, "--mode", "gossip", "--gossip-graph", "exp", "--gossip-period", "4"), TSR_OK);
    assert_string_equal(a.gossip_graph, "exp");
    assert_int_equal(a.graph, TSR_GOSSIP_EXPONENTIAL);
    assert_int_equal(a.gossip_period, 4);
    assert_int_equal(a.pipe_schedule, TSR_PIPELINE_1F1B); /* the default */
    refused("option --pipeline-schedule: 'zigzag' is not gpipe or 1f1b",
            PARSE(&a, "--pipeline-schedule", "zigzag"), &a);
    assert_int_equal(PARSE(&a, "--mode", "pipeline", "--pipeline-schedule", "gpipe"), TSR_OK);
    assert_int_equal(a.pipe_schedule, TSR_PIPELINE_GPIPE);
    assert_int_equal(a.graph, TSR_GOSSIP_RING);
    /* a long junk option is cut, and the message still starts with the option (fuzz finding) */
    char junk[600];
    memset(junk, 'x', sizeof junk - 1);
    junk[0] = junk[1] = '-';
    junk[sizeof junk - 1] = '\0';
    refused("unknown option", PARSE(&a, junk), &a);
    assert_memory_equal(a.error, "option --xxx", 12);
}

static void test_comm_timeout_env(void **state) {
    (void)state;
    tsr_context_options co;
    tsr_context_options_init(&co);
    co.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    co.log_level = TSR_LOG_OFF;
    tsr_context *ctx = NULL;
    const char *bad[] = {"abc", "-1", "3s"};
    for (int i = 0; i < 3; i++) {
        setenv("TSR_COMM_TIMEOUT", bad[i], 1);
        tsr_context_options o = co;
        char err[256];
        assert_int_equal(tsr_context_options_from_env(&o, err, sizeof err), TSR_ERR_PARSE);
        assert_non_null(strstr(err, "TSR_COMM_TIMEOUT"));
        assert_non_null(strstr(err, bad[i]));
        assert_int_equal(tsr_context_create(&ctx, &co), TSR_ERR_PARSE);
        assert_null(ctx);
    }
    setenv("TSR_COMM_TIMEOUT", "0", 1); /* 0: no limit */
    assert_int_equal(tsr_context_create(&ctx, &co), TSR_OK);
    tsr_comm *c = NULL;
    assert_int_equal(tsr_comm_self_create(ctx, &c), TSR_OK);
    float x[3] = {1, 2, 3};
    assert_int_equal(tsr_comm_allreduce(c, x, 3, NULL), TSR_OK);
    assert_true(x[2] == 3);
    tsr_comm_free(c);
    unsetenv("TSR_COMM_TIMEOUT");
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_values),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_comm_timeout_env),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
