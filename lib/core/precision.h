/* 16-bit floating point conversions (bfloat16 and IEEE half), written once for the library.
 *
 * Narrowing rounds to nearest, ties to even; a value beyond the largest finite one by half an
 * ulp or more becomes an infinity; a NaN stays a NaN of the same sign with its upper payload
 * bits and the quiet bit set (what F16C and AVX512-BF16 do); subnormals on both sides are
 * rounded exactly (bfloat16 keeps float32's subnormals, which VCVTNEPS2BF16 would flush: the
 * vector path patches those lanes). Widening is exact.
 *
 * Array conversions run the widest variant the CPU supports (chosen once at run time); every
 * variant gives the portable loop's bits, which tests/unit/test_precision.c checks for all
 * 65536 16-bit inputs and millions of float32 ones. */
#ifndef TSR_CORE_PRECISION_H
#define TSR_CORE_PRECISION_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "tessera/context.h"
#include "tessera/precision.h"

static inline uint32_t tsr_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float tsr_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* bfloat16 is the upper half of a float32. */
static inline uint16_t tsr_f32_to_bf16(float f) {
    uint32_t u = tsr_f32_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)(u >> 16 | 0x0040u); /* quiet NaN */
    u += 0x7FFFu + (u >> 16 & 1u); /* carries into the exponent, up to infinity: as wanted */
    return (uint16_t)(u >> 16);
}
static inline float tsr_bf16_to_f32(uint16_t h) { return tsr_bits_f32((uint32_t)h << 16); }

uint16_t tsr_f32_to_f16(float f);
float tsr_f16_to_f32(uint16_t h);

/* Element-wise over arrays (dst and src do not overlap, except round_*: dst may be src). */
void tsr_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n);
void tsr_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n);
void tsr_f32_to_f16_n(uint16_t *dst, const float *src, size_t n);
void tsr_f16_to_f32_n(float *dst, const uint16_t *src, size_t n);
/* dst = float32(16-bit(src)): the value a GEMM input of that precision has
 * (TSR_PRECISION_FP32: a copy). */
void tsr_round_n(tsr_precision p, float *dst, const float *src, size_t n);

/* TSR_OK for fp32, bf16 or fp16; else TSR_ERR_INVALID_ARG
 * "<who>precision <p> is not fp32 (0), bf16 (1) or fp16 (2)" (who: a prefix such as "stage "). */
tsr_status tsr_precision_check(tsr_context *ctx, const char *who, tsr_precision p);

/* The variants compiled in, widest first, the portable one last (tests and benchmarks run each
 * the CPU supports against the portable one). */
typedef struct tsr_precision_variant {
    const char *name;
    int (*supported)(void); /* NULL: always */
    void (*to_bf16)(uint16_t *dst, const float *src, size_t n);
    void (*round_bf16)(float *dst, const float *src, size_t n);
    void (*to_f16)(uint16_t *dst, const float *src, size_t n);
    void (*from_f16)(float *dst, const uint16_t *src, size_t n);
    void (*round_f16)(float *dst, const float *src, size_t n);
} tsr_precision_variant;
size_t tsr_precision_variants(const tsr_precision_variant **list);
const tsr_precision_variant *tsr_precision_best(void);

#endif
