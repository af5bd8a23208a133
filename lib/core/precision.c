/* 16-bit floating point conversions: a portable loop and, on x86-64, AVX2+F16C and
 * AVX-512 (F16 through AVX512F, bfloat16 through AVX512-BF16) variants chosen at run time.
 * Every variant gives the portable loop's bits (see precision.h). */
#include "lib/core/precision.h"
#include <stdatomic.h>
#include "lib/core/internal.h"
#include <string.h>

const char *tsr_precision_name(tsr_precision p) {
    switch (p) {
    case TSR_PRECISION_FP32: return "fp32";
    case TSR_PRECISION_BF16: return "bf16";
    case TSR_PRECISION_FP16: return "fp16";
    }
    return NULL;
}

int tsr_precision_parse(const char *text, tsr_precision *p) {
    for (int i = TSR_PRECISION_FP32; i <= TSR_PRECISION_FP16; i++)
        if (text && strcmp(text, tsr_precision_name((tsr_precision)i)) == 0) {
            *p = (tsr_precision)i;
            return 0;
        }
    return -1;
}

/* ---- scalar IEEE half ---- */

uint16_t tsr_f32_to_f16(float f) {
    uint32_t x = tsr_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xFFu;
    uint32_t mant = x & 0x7FFFFFu;
    if (exp == 0xFF) /* Inf, or a NaN: upper payload kept, quiet bit set */
        return (uint16_t)(sign | 0x7C00u | (mant ? 0x200u | mant >> 13 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7C00u); /* overflow -> Inf */
    if (e <= 0) {                                   /* subnormal or zero */
        if (e < -10) return (uint16_t)sign;
        mant |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = mant >> shift;
        uint32_t rem = mant & ((1u << shift) - 1);
        uint32_t mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++; /* may become the smallest normal */
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)e << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) half++; /* may carry up to Inf: ok */
    return (uint16_t)half;
}

float tsr_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    uint32_t x;
    if (exp == 0) {
        if (!mant) x = sign;
        else { /* subnormal: normalise */
            int e = -1;
            do {
                mant <<= 1;
                e++;
            } while (!(mant & 0x400u));
            x = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3FFu) << 13);
        }
    } else if (exp == 31) { /* a NaN widens quiet, as F16C does */
        x = sign | 0x7F800000u | (mant << 13) | (mant ? 0x400000u : 0);
    } else {
        x = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    return tsr_bits_f32(x);
}

/* ---- portable loops ---- */

static void to_bf16_portable(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = tsr_f32_to_bf16(src[i]);
}
static void round_bf16_portable(float *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = tsr_bf16_to_f32(tsr_f32_to_bf16(src[i]));
}
static void to_f16_portable(uint16_t *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = tsr_f32_to_f16(src[i]);
}
static void from_f16_portable(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = tsr_f16_to_f32(src[i]);
}
static void round_f16_portable(float *dst, const float *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = tsr_f16_to_f32(tsr_f32_to_f16(src[i]));
}

#if defined(__x86_64__) && defined(__GNUC__)
#define PREC_X86 1
#include <cpuid.h>
#include <immintrin.h>

/* The target switch in gcc's and clang's spelling (as host_optim.c). */
#if defined(__clang__)
#define TARGET_BEGIN(isa) _Pragma(isa)
#define TARGET_END _Pragma("clang attribute pop")
#define F16C_ON "clang attribute push (__attribute__((target(\"avx2,f16c\"))), apply_to = function)"
#define AVX512_ON \
    "clang attribute push (__attribute__((target(\"avx512f,avx512bf16\"))), apply_to = function)"
#else
#define TARGET_BEGIN(isa) _Pragma("GCC push_options") _Pragma(isa)
#define TARGET_END _Pragma("GCC pop_options")
#define F16C_ON "GCC target(\"avx2,f16c\")"
#define AVX512_ON "GCC target(\"avx512f,avx512bf16\")"
#endif

TARGET_BEGIN(F16C_ON)
/* bfloat16 rounding on the bits, 8 lanes: (u + 0x7FFF + lsb) >> 16, NaN lanes quietened;
 * the result in the low 16 bits of each 32-bit lane. */
static __m256i bf16_bits_avx2(__m256 x) {
    const __m256i u = _mm256_castps_si256(x);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF)));
    r = _mm256_srli_epi32(r, 16);
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)),
                                           _mm256_set1_epi32(0x7F800000));
    const __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(r, q, nan);
}
static void to_bf16_f16c(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i r = bf16_bits_avx2(_mm256_loadu_ps(src + i));
        r = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08); /* lanes 0..7 low */
        _mm_storeu_si128((__m128i *)(void *)(dst + i), _mm256_castsi256_si128(r));
    }
    to_bf16_portable(dst + i, src + i, n - i);
}
static void round_bf16_f16c(float *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i r = _mm256_slli_epi32(bf16_bits_avx2(_mm256_loadu_ps(src + i)), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(r));
    }
    round_bf16_portable(dst + i, src + i, n - i);
}
static void to_f16_f16c(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(void *)(dst + i), h);
    }
    to_f16_portable(dst + i, src + i, n - i);
}
static void from_f16_f16c(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(src + i))));
    from_f16_portable(dst + i, src + i, n - i);
}
static void round_f16_f16c(float *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    round_f16_portable(dst + i, src + i, n - i);
}
TARGET_END

TARGET_BEGIN(AVX512_ON)
/* 16 lanes through VCVTNEPS2BF16, which flushes float32 subnormals to zero: lanes holding one
 * take the rounding on the bits instead (VPMOVDW with merge masking). */
static __m256i bf16_avx512(__m512 x) {
    __m256i r = (__m256i)_mm512_cvtneps_pbh(x);
    const __m512i u = _mm512_castps_si512(x);
    const __mmask16 sub = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7F800000)) &
                          _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x007FFFFF));
    if (sub) {
        const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
        __m512i b = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
        r = _mm512_mask_cvtepi32_epi16(r, sub, _mm512_srli_epi32(b, 16));
    }
    return r;
}
static void to_bf16_avx512(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(void *)(dst + i), bf16_avx512(_mm512_loadu_ps(src + i)));
    to_bf16_portable(dst + i, src + i, n - i);
}
static void round_bf16_avx512(float *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16_avx512(_mm512_loadu_ps(src + i))), 16);
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(w));
    }
    round_bf16_portable(dst + i, src + i, n - i);
}
static void to_f16_avx512(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(void *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    to_f16_portable(dst + i, src + i, n - i);
}
static void from_f16_avx512(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(src + i))));
    from_f16_portable(dst + i, src + i, n - i);
}
static void round_f16_avx512(float *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
    }
    round_f16_portable(dst + i, src + i, n - i);
}
TARGET_END

static int cpu_has_f16c(void) {
    /* F16C from CPUID leaf 1 (ECX bit 29): clang 14 does not know "f16c" as a feature name */
    unsigned a, b, c, d;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1);
}
static int cpu_has_avx512bf16(void) {
    /* AVX512-BF16: CPUID leaf 7 subleaf 1, EAX bit 5; avx512f's check includes the OS saving
     * the zmm state */
    unsigned a, b, c, d;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __get_cpuid_count(7, 1, &a, &b, &c, &d) &&
           (a >> 5 & 1);
}
#endif

/* Widest first: tsr_precision_best takes the first one the CPU supports. */
static const tsr_precision_variant variants[] = {
#if PREC_X86
    {"avx512bf16", cpu_has_avx512bf16, to_bf16_avx512, round_bf16_avx512, to_f16_avx512,
     from_f16_avx512, round_f16_avx512},
    {"f16c", cpu_has_f16c, to_bf16_f16c, round_bf16_f16c, to_f16_f16c, from_f16_f16c,
     round_f16_f16c},
#endif
    {"portable", NULL, to_bf16_portable, round_bf16_portable, to_f16_portable, from_f16_portable,
     round_f16_portable},
};

size_t tsr_precision_variants(const tsr_precision_variant **list) {
    *list = variants;
    return sizeof variants / sizeof variants[0];
}

/* Chosen once (CPUID is not free); threads racing on the first call store the same value. */
static const tsr_precision_variant *_Atomic best_variant;

const tsr_precision_variant *tsr_precision_best(void) {
    const tsr_precision_variant *v = atomic_load_explicit(&best_variant, memory_order_relaxed);
    if (v) return v;
    size_t i = 0;
    while (variants[i].supported && !variants[i].supported()) i++; /* the last needs no check */
    atomic_store_explicit(&best_variant, &variants[i], memory_order_relaxed);
    return &variants[i];
}

void tsr_f32_to_bf16_n(uint16_t *dst, const float *src, size_t n) {
    tsr_precision_best()->to_bf16(dst, src, n);
}
/* A shift, exact: vectorised by gcc at O3 in one copy per instruction set (-O2 left it
 * scalar, 6% of a bf16 gpt-mini step). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default"), optimize("O3")))
#endif
void tsr_bf16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = tsr_bf16_to_f32(src[i]);
}
void tsr_f32_to_f16_n(uint16_t *dst, const float *src, size_t n) {
    tsr_precision_best()->to_f16(dst, src, n);
}
void tsr_f16_to_f32_n(float *dst, const uint16_t *src, size_t n) {
    tsr_precision_best()->from_f16(dst, src, n);
}
void tsr_round_n(tsr_precision p, float *dst, const float *src, size_t n) {
    switch (p) {
    case TSR_PRECISION_BF16: tsr_precision_best()->round_bf16(dst, src, n); return;
    case TSR_PRECISION_FP16: tsr_precision_best()->round_f16(dst, src, n); return;
    case TSR_PRECISION_FP32: break;
    }
    if (dst != src) memmove(dst, src, n * sizeof *dst);
}

tsr_status tsr_precision_check(tsr_context *ctx, const char *who, tsr_precision p) {
    if (tsr_precision_name(p)) return TSR_OK;
    return tsr_error(ctx, TSR_ERR_INVALID_ARG, "%sprecision %d is not fp32 (0), bf16 (1) or fp16 (2)", who,
                     (int)p);
}
