/* 16-bit conversions (lib/core/precision.c): the portable loop against a reference written
 * from the definitions (nearest representable value by search, ties to the even code,
 * overflow at max + half an ulp, NaN quiet), over all 65536 16-bit inputs and millions of
 * float32 ones (random bit patterns, every tie between neighbouring 16-bit values and its
 * float32 neighbours, every 16-bit value's own float32); then every vectorised variant the
 * CPU supports against the portable loop, BITWISE, with odd lengths and unaligned starts.
 * A variant the CPU lacks is reported as skipped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/precision.h"
#include "tessera.h"

typedef struct format {
    const char *name;
    int mbits, bias; /* mantissa bits, exponent bias; exponent bits = 15 - mbits */
} format;
static const format BF16 = {"bf16", 7, 127}, F16 = {"f16", 10, 15};

/* The largest finite code: exponent all ones minus one, mantissa all ones. */
static unsigned max_finite(const format *f) {
    unsigned emax = (1u << (15 - f->mbits)) - 2;
    return (emax << f->mbits) | ((1u << f->mbits) - 1);
}

/* Value of a finite non-negative code, from the definition. */
static double code_value(const format *f, unsigned c) {
    unsigned e = c >> f->mbits, m = c & ((1u << f->mbits) - 1);
    if (e == 0) return ldexp((double)m, 1 - f->bias - f->mbits);
    return ldexp(1.0 + ldexp((double)m, -f->mbits), (int)e - f->bias);
}

/* Reference narrowing of a float32 with bits u. */
static uint16_t ref_narrow(const format *f, uint32_t u) {
    unsigned sign = (u >> 16) & 0x8000u;
    float x;
    memcpy(&x, &u, 4);
    if (isnan(x)) { /* sign and upper payload, quiet bit set */
        unsigned inf = (1u << (15 - f->mbits)) - 1;
        unsigned payload = (u & 0x7FFFFFu) >> (23 - f->mbits);
        return (uint16_t)(sign | inf << f->mbits | payload | 1u << (f->mbits - 1));
    }
    double a = fabs((double)x);
    unsigned top = max_finite(f);
    double limit = code_value(f, top) + (code_value(f, top) - code_value(f, top - 1)) / 2;
    if (a >= limit) return (uint16_t)(sign | (top + 1)); /* infinity */
    unsigned lo = 0, hi = top; /* largest code with value <= a */
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (code_value(f, mid) <= a) lo = mid;
        else hi = mid - 1;
    }
    unsigned c = lo;
    if (c < top + 1 && a > code_value(f, c)) {
        double dlo = a - code_value(f, c), dhi = code_value(f, c + 1) - a;
        if (dhi < dlo || (dhi == dlo && (c & 1))) c++;
    }
    return (uint16_t)(sign | c);
}

static uint16_t narrow(const format *f, float x) {
    return f == &BF16 ? tsr_f32_to_bf16(x) : tsr_f32_to_f16(x);
}
static float widen(const format *f, uint16_t h) {
    return f == &BF16 ? tsr_bf16_to_f32(h) : tsr_f16_to_f32(h);
}
static uint32_t bits(float x) { return tsr_f32_bits(x); }

/* The float32 inputs: random bit patterns, then for every 16-bit code of both formats its own
 * value, the tie with the next code and the float32 on either side of that tie. */
#define RANDOM_INPUTS 4000000u
static float *inputs(size_t *count) {
    size_t n = RANDOM_INPUTS + 2u * 65536u * 4u, k = 0;
    float *x = malloc(n * sizeof *x);
    assert_non_null(x);
    uint64_t s = 0x243F6A8885A308D3ull;
    for (size_t i = 0; i < RANDOM_INPUTS; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[k++] = tsr_bits_f32((uint32_t)(s >> 16));
    }
    const format *fs[2] = {&BF16, &F16};
    for (int fi = 0; fi < 2; fi++)
        for (unsigned h = 0; h < 65536; h++) {
            const format *f = fs[fi];
            float v = widen(f, (uint16_t)h);
            x[k++] = v;
            unsigned mag = h & 0x7FFFu;
            if (isnan(v) || isinf(v) || mag >= max_finite(f)) { /* past the top: the limit */
                double top = code_value(f, max_finite(f));
                double t = top + (top - code_value(f, max_finite(f) - 1)) / 2;
                float tf = (float)((h & 0x8000u) ? -t : t);
                x[k++] = tf;
                x[k++] = tsr_bits_f32(bits(tf) - 1);
                x[k++] = tsr_bits_f32(bits(tf) + 1);
                continue;
            }
            double mid = (code_value(f, mag) + code_value(f, mag + 1)) / 2; /* exact in float32 */
            float mf = (float)((h & 0x8000u) ? -mid : mid);
            assert_true((double)fabsf(mf) == mid);
            x[k++] = mf;
            x[k++] = tsr_bits_f32(bits(mf) - 1);
            x[k++] = tsr_bits_f32(bits(mf) + 1);
        }
    *count = k;
    return x;
}

static void test_all_16bit_inputs(void **st) {
    (void)st;
    const format *fs[2] = {&BF16, &F16};
    for (int fi = 0; fi < 2; fi++) {
        const format *f = fs[fi];
        unsigned inf = (1u << (15 - f->mbits)) - 1, mmask = (1u << f->mbits) - 1;
        for (unsigned h = 0; h < 65536; h++) {
            float v = widen(f, (uint16_t)h);
            unsigned e = (h >> f->mbits) & inf, m = h & mmask;
            double want = e == inf ? (m ? NAN : INFINITY) : code_value(f, h & 0x7FFFu);
            if (h & 0x8000u) want = -want;
            if (isnan(want) ? !isnan(v) : ((double)v != want || !signbit(v) != !(h & 0x8000u)))
                fail_msg("%s 0x%04x widens to %a, want %a", f->name, h, (double)v, want);
            /* and back: the same code (a NaN comes back quiet) */
            unsigned back = narrow(f, v), expect = h;
            if (e == inf && m) expect |= 1u << (f->mbits - 1);
            if (back != expect)
                fail_msg("%s 0x%04x -> %a -> 0x%04x, want 0x%04x", f->name, h, (double)v, back, expect);
        }
    }
}

static void test_float32_inputs(void **st) {
    (void)st;
    size_t n;
    float *x = inputs(&n);
    print_message("%zu float32 inputs\n", n);
    const format *fs[2] = {&BF16, &F16};
    for (int fi = 0; fi < 2; fi++)
        for (size_t i = 0; i < n; i++) {
            uint16_t got = narrow(fs[fi], x[i]), want = ref_narrow(fs[fi], bits(x[i]));
            if (got != want)
                fail_msg("%s(%a = 0x%08x): got 0x%04x want 0x%04x", fs[fi]->name, (double)x[i],
                         bits(x[i]), got, want);
        }
    free(x);
}

/* Bitwise comparison of a variant's outputs with the portable one's. */
static void same_bits(const char *variant, const char *what, const void *got, const void *want,
                      size_t n, size_t esize, const float *in) {
    if (memcmp(got, want, n * esize) == 0) return;
    for (size_t i = 0; i < n; i++)
        if (memcmp((const char *)got + i * esize, (const char *)want + i * esize, esize))
            fail_msg("%s %s: element %zu of %zu (input 0x%08x) differs from the portable loop",
                     variant, what, i, n, in ? bits(in[i]) : 0u);
}

static void run_variant(const tsr_precision_variant *k, const tsr_precision_variant *ref,
                        const float *x, size_t n, const uint16_t *codes, size_t off) {
    size_t cap = (n > 65536 ? n : 65536) + 8;
    uint16_t *h1 = malloc(cap * 2), *h2 = malloc(cap * 2);
    float *f1 = malloc(cap * 4), *f2 = malloc(cap * 4);
    assert_true(h1 && h2 && f1 && f2);
    x += off; /* unaligned starts and every tail length */
    n -= off;
    k->to_bf16(h1 + off, x, n), ref->to_bf16(h2 + off, x, n);
    same_bits(k->name, "to_bf16", h1 + off, h2 + off, n, 2, x);
    k->round_bf16(f1 + off, x, n), ref->round_bf16(f2 + off, x, n);
    same_bits(k->name, "round_bf16", f1 + off, f2 + off, n, 4, x);
    k->to_f16(h1 + off, x, n), ref->to_f16(h2 + off, x, n);
    same_bits(k->name, "to_f16", h1 + off, h2 + off, n, 2, x);
    k->round_f16(f1 + off, x, n), ref->round_f16(f2 + off, x, n);
    same_bits(k->name, "round_f16", f1 + off, f2 + off, n, 4, x);
    /* in place */
    memcpy(f1, x, n * 4);
    k->round_bf16(f1, f1, n);
    ref->round_bf16(f2, x, n);
    same_bits(k->name, "round_bf16 in place", f1, f2, n, 4, x);
    size_t nc = 65536 - off;
    k->from_f16(f1, codes + off, nc), ref->from_f16(f2, codes + off, nc);
    same_bits(k->name, "from_f16", f1, f2, nc, 4, NULL);
    free(h1), free(h2), free(f1), free(f2);
}

static void test_variant(void **st) {
    const tsr_precision_variant *k = *st, *all;
    size_t count = tsr_precision_variants(&all);
    if (k->supported && !k->supported()) {
        print_message("skipped: this CPU lacks %s\n", k->name);
        skip();
    }
    size_t n;
    float *x = inputs(&n);
    uint16_t *codes = malloc(65536 * 2);
    assert_non_null(codes);
    for (unsigned h = 0; h < 65536; h++) codes[h] = (uint16_t)h;
    for (size_t off = 0; off < 17; off += 5) run_variant(k, &all[count - 1], x, n, codes, off);
    static const size_t lengths[] = {1, 7, 8, 9, 15, 16, 17, 33};
    for (size_t i = 0; i < sizeof lengths / sizeof *lengths; i++) /* short arrays: tails only */
        run_variant(k, &all[count - 1], x + 4000, lengths[i] + 3, codes, 3);
    free(codes);
    free(x);
}

/* The library's array entry points use the best variant the CPU supports. */
static void test_best(void **st) {
    (void)st;
    const tsr_precision_variant *best = tsr_precision_best();
    assert_true(!best->supported || best->supported());
    print_message("16-bit conversion kernels: %s\n", best->name);
    float x[37], y[37], z[37];
    uint16_t h[37];
    for (int i = 0; i < 37; i++) x[i] = (float)i * 0.3371f - 5.0f;
    tsr_round_n(TSR_PRECISION_BF16, y, x, 37);
    tsr_f32_to_bf16_n(h, x, 37);
    tsr_bf16_to_f32_n(z, h, 37);
    for (int i = 0; i < 37; i++) assert_true(bits(y[i]) == bits(z[i]) && h[i] == tsr_f32_to_bf16(x[i]));
    tsr_round_n(TSR_PRECISION_FP16, y, x, 37);
    tsr_f32_to_f16_n(h, x, 37);
    tsr_f16_to_f32_n(z, h, 37);
    for (int i = 0; i < 37; i++) assert_true(bits(y[i]) == bits(z[i]) && h[i] == tsr_f32_to_f16(x[i]));
    tsr_round_n(TSR_PRECISION_FP32, y, x, 37);
    assert_memory_equal(y, x, sizeof x);
}

static void test_names(void **st) {
    (void)st;
    tsr_precision p = TSR_PRECISION_FP32;
    assert_int_equal(tsr_precision_parse("bf16", &p), 0);
    assert_int_equal(p, TSR_PRECISION_BF16);
    assert_int_equal(tsr_precision_parse("fp16", &p), 0);
    assert_int_equal(p, TSR_PRECISION_FP16);
    assert_int_equal(tsr_precision_parse("fp32", &p), 0);
    assert_int_equal(p, TSR_PRECISION_FP32);
    assert_int_equal(tsr_precision_parse("half", &p), -1);
    assert_int_equal(tsr_precision_parse(NULL, &p), -1);
    assert_int_equal(p, TSR_PRECISION_FP32);
    assert_string_equal(tsr_precision_name(TSR_PRECISION_FP16), "fp16");
    assert_null(tsr_precision_name((tsr_precision)7));
}

int main(void) {
    const tsr_precision_variant *all;
    size_t count = tsr_precision_variants(&all);
    struct CMUnitTest tests[8];
    size_t nt = 0;
    tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_names);
    tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_all_16bit_inputs);
    tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_float32_inputs);
    tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_best);
    for (size_t i = 0; i + 1 < count && nt < 8; i++) {
        struct CMUnitTest t = cmocka_unit_test_prestate(test_variant, (void *)&all[i]);
        t.name = all[i].name;
        tests[nt++] = t;
    }
    return _cmocka_run_group_tests("precision", tests, nt, NULL, NULL);
}
