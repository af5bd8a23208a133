/* The fp16 loss scaler's state machine (lib/train/scaler.c) against sequences worked out by
 * hand from PyTorch's GradScaler rule (torch._amp_update_scale_: backoff 0.5 and the growth
 * tracker reset on an overflow; growth 2 when the tracker reaches the interval, then reset;
 * no growth to an infinite scale), and the checkpoint restore's checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <string.h>
#include "lib/train/scaler.h"
#include "support/test_util.h"
#include "tessera.h"

static void test_sequence(void **st) {
    (void)st;
    tsr_scaler s;
    tsr_scaler_init(&s, 1, 65536.0f, 3);
    /* o = overflow, . = clean; after each event: scale, clean count */
    static const char events[] = "..o...o.o....oo..";
    static const float scale[] = {65536, 65536, 32768, 32768, 32768, 65536, 32768, 32768,
                                  16384, 16384, 16384, 32768, 32768, 16384, 8192, 8192, 8192};
    static const unsigned clean[] = {1, 2, 0, 1, 2, 0, 0, 1, 0, 1, 2, 0, 1, 0, 0, 1, 2};
    for (size_t i = 0; events[i]; i++) {
        tsr_scaler_update(&s, events[i] == 'o');
        if (s.scale != scale[i] || s.clean != clean[i])
            fail_msg("event %zu ('%c'): scale %g clean %u, want %g %u", i, events[i], (double)s.scale,
                     s.clean, (double)scale[i], clean[i]);
    }
}

static void test_defaults_and_disabled(void **st) {
    (void)st;
    tsr_scaler s;
    tsr_scaler_init(&s, 1, TSR_SCALER_INIT, TSR_SCALER_INTERVAL);
    assert_true(s.scale == 65536.0f && s.interval == 2000);
    for (int i = 0; i < 1999; i++) tsr_scaler_update(&s, 0);
    assert_true(s.scale == 65536.0f && s.clean == 1999);
    tsr_scaler_update(&s, 0); /* the 2000th clean step doubles */
    assert_true(s.scale == 131072.0f && s.clean == 0);
    tsr_scaler_init(&s, 0, 65536.0f, 2000); /* disabled: 1, and nothing moves it */
    tsr_scaler_update(&s, 1);
    tsr_scaler_update(&s, 0);
    assert_true(s.scale == 1.0f && s.clean == 0);
}

static void test_no_infinite_growth(void **st) {
    (void)st;
    tsr_scaler s;
    tsr_scaler_init(&s, 1, 0x1p127f, 1);
    tsr_scaler_update(&s, 0); /* 2^128 is not finite: kept, the tracker reset */
    assert_true(s.scale == 0x1p127f && s.clean == 0);
    tsr_scaler_update(&s, 1);
    assert_true(s.scale == 0x1p126f);
}

static void test_restore(void **st) {
    (void)st;
    tsr_scaler s;
    tsr_scaler_init(&s, 1, 65536.0f, 2000);
    assert_int_equal(tsr_scaler_restore(&s, 1024.0f, 17.0f), 0);
    assert_true(s.scale == 1024.0f && s.clean == 17);
    const float bad[][2] = {{0, 0}, {-1, 0}, {INFINITY, 0}, {NAN, 0}, {1, -1}, {1, 2000}, {1, 1.5f}, {1, NAN}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(tsr_scaler_restore(&s, bad[i][0], bad[i][1]), -1);
        assert_true(s.scale == 1024.0f && s.clean == 17); /* untouched */
    }
}

/* The trainer refuses a precision outside the enum and fp16 where no loss scaling runs, and
 * reports 1 as the scale of a run without it. */
static void test_trainer_options(void **st) {
    (void)st;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_test_quiet_context(&ctx), TSR_OK);
    tsr_model_input in = {1, 4, 8, 10};
    tsr_model *m = NULL;
    assert_int_equal(tsr_model_parse(ctx, "dense:10", in, &m), TSR_OK);
    tsr_trainer_options o;
    tsr_trainer_options_init(&o);
    assert_int_equal(o.precision, TSR_PRECISION_FP32);
    tsr_trainer *t = NULL;
    o.precision = (tsr_precision)7;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_ERR_INVALID_ARG);
    assert_non_null(strstr(tsr_context_last_error(ctx), "precision 7 is not fp32 (0), bf16 (1) or fp16 (2)"));
    o.precision = TSR_PRECISION_FP16;
    o.mode = TSR_MODE_GOSSIP;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_ERR_UNSUPPORTED);
    assert_non_null(strstr(tsr_context_last_error(ctx), "fp16 (loss scaling) is not available in gossip mode"));
    assert_null(t);
    o.mode = TSR_MODE_DATA;
    o.precision = TSR_PRECISION_BF16;
    assert_int_equal(tsr_trainer_create(ctx, m, &o, &t), TSR_OK);
    assert_true(tsr_trainer_loss_scale(t) == 1.0f);
    tsr_trainer_free(t);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequence),
        cmocka_unit_test(test_defaults_and_disabled),
        cmocka_unit_test(test_no_infinite_growth),
        cmocka_unit_test(test_restore),
        cmocka_unit_test(test_trainer_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
