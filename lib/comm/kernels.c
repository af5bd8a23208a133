/* Reduction and fp16 conversion loops of the communication layer.
 *
 * gcc -O2 only vectorises loops whose trip count is a known multiple of the vector width
 * (the "very-cheap" cost model), so every loop runs over fixed blocks of BLK elements plus a
 * scalar tail. fp16 conversion uses F16C when the CPU has it (checked at run time), else the
 * scalar converters of backends/backend.h. */
#include <string.h>
#include "backends/backend.h"
#include "lib/comm/comm_internal.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define TSR_HAVE_F16C_PATH 1
#endif

#define BLK 1024

static void add_blk(float *restrict y, const float *restrict x) {
    for (int j = 0; j < BLK; j++) y[j] += x[j];
}

void tsr_comm_add(float *restrict y, const float *restrict x, size_t n) {
    size_t i = 0;
    for (; i + BLK <= n; i += BLK) add_blk(y + i, x + i);
    for (; i < n; i++) y[i] += x[i];
}

static void scale_blk(float *restrict x, float a) {
    for (int j = 0; j < BLK; j++) x[j] *= a;
}

void tsr_comm_scale(float *x, size_t n, float a) {
    if (a == 1.0f) return;
    size_t i = 0;
    for (; i + BLK <= n; i += BLK) scale_blk(x + i, a);
    for (; i < n; i++) x[i] *= a;
}

void tsr_comm_reduce_into(float *y, const float *const *src, int nsrc, size_t n, float scale,
                          float *mirror) {
    size_t i = 0;
    for (; i + BLK <= n; i += BLK) {
        for (int p = 1; p < nsrc; p++) add_blk(y + i, src[p] + i);
        if (scale != 1.0f) scale_blk(y + i, scale);
        if (mirror) memcpy(mirror + i, y + i, BLK * sizeof(float));
    }
    size_t rest = n - i;
    for (int p = 1; p < nsrc; p++)
        for (size_t j = 0; j < rest; j++) y[i + j] += src[p][i + j];
    if (scale != 1.0f)
        for (size_t j = 0; j < rest; j++) y[i + j] *= scale;
    if (mirror && rest) memcpy(mirror + i, y + i, rest * sizeof(float));
}

/* Large copies bypass the cache on the way out (streaming stores): the destination is not
 * read first (no read-for-ownership), a third less memory traffic when nothing fits in cache. */
void tsr_comm_copy(float *restrict dst, const float *restrict src, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__)
    if (n * sizeof(float) >= ((size_t)1 << 20)) {
        size_t i = 0;
        while (i < n && ((uintptr_t)(dst + i) & 15)) dst[i] = src[i], i++;
        for (; i + 16 <= n; i += 16) {
            __m128 a = _mm_loadu_ps(src + i), b = _mm_loadu_ps(src + i + 4);
            __m128 c = _mm_loadu_ps(src + i + 8), d = _mm_loadu_ps(src + i + 12);
            _mm_stream_ps(dst + i, a);
            _mm_stream_ps(dst + i + 4, b);
            _mm_stream_ps(dst + i + 8, c);
            _mm_stream_ps(dst + i + 12, d);
        }
        for (; i < n; i++) dst[i] = src[i];
        _mm_sfence(); /* streaming stores are weakly ordered: publish before any flag */
        return;
    }
#endif
    memcpy(dst, src, n * sizeof(float));
}

#ifdef TSR_HAVE_F16C_PATH
static int have_f16c(void) {
    /* __builtin_cpu_supports reads a table filled by a libgcc constructor: no state of ours.
     * F16C from CPUID leaf 1 (ECX bit 29): clang 14 does not know "f16c" as a feature name. */
    unsigned a, b, c, d;
    return __builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1);
}

__attribute__((target("avx,f16c"))) static size_t to_f16_x86(uint16_t *h, const float *x,
                                                              size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(void *)(h + i), v);
    }
    return i;
}

__attribute__((target("avx,f16c"))) static size_t from_f16_x86(float *x, const uint16_t *h,
                                                                size_t n, int add) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(h + i)));
        if (add) v = _mm256_add_ps(v, _mm256_loadu_ps(x + i));
        _mm256_storeu_ps(x + i, v);
    }
    return i;
}

__attribute__((target("avx,f16c"))) static size_t round_f16_x86(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i v = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(v));
    }
    return i;
}
#endif

void tsr_comm_to_f16(uint16_t *restrict h, const float *restrict x, size_t n) {
    size_t i = 0;
#ifdef TSR_HAVE_F16C_PATH
    if (have_f16c()) i = to_f16_x86(h, x, n);
#endif
    for (; i < n; i++) h[i] = tsr_f32_to_f16_scalar(x[i]);
}

void tsr_comm_from_f16(float *restrict x, const uint16_t *restrict h, size_t n) {
    size_t i = 0;
#ifdef TSR_HAVE_F16C_PATH
    if (have_f16c()) i = from_f16_x86(x, h, n, 0);
#endif
    for (; i < n; i++) x[i] = tsr_f16_to_f32_scalar(h[i]);
}

void tsr_comm_add_f16(float *restrict y, const uint16_t *restrict h, size_t n) {
    size_t i = 0;
#ifdef TSR_HAVE_F16C_PATH
    if (have_f16c()) i = from_f16_x86(y, h, n, 1);
#endif
    for (; i < n; i++) y[i] += tsr_f16_to_f32_scalar(h[i]);
}

void tsr_comm_round_f16(float *x, size_t n) {
    size_t i = 0;
#ifdef TSR_HAVE_F16C_PATH
    if (have_f16c()) i = round_f16_x86(x, n);
#endif
    for (; i < n; i++) x[i] = tsr_f16_to_f32_scalar(tsr_f32_to_f16_scalar(x[i]));
}
