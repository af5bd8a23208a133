/* Reduction and fp16 conversion loops of the communication layer.
 *
 * gcc -O2 only vectorises loops whose trip count is a known multiple of the vector width
 * (the "very-cheap" cost model), so every loop runs over fixed blocks of BLK elements plus a
 * scalar tail. fp16 conversion is lib/core/precision.c's (vectorised where the CPU allows). */
#include <string.h>
#include "backends/backend.h"
#include "lib/comm/comm_internal.h"
#include "lib/core/precision.h"
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
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

/* fp16 conversions: the precision module's (F16C/AVX-512 where the CPU has them). */
void tsr_comm_to_f16(uint16_t *restrict h, const float *restrict x, size_t n) {
    tsr_f32_to_f16_n(h, x, n);
}

void tsr_comm_from_f16(float *restrict x, const uint16_t *restrict h, size_t n) {
    tsr_f16_to_f32_n(x, h, n);
}

void tsr_comm_add_f16(float *restrict y, const uint16_t *restrict h, size_t n) {
    float tmp[BLK]; /* widened a block at a time, then added */
    for (size_t i = 0; i < n; i += BLK) {
        size_t len = n - i < BLK ? n - i : BLK;
        tsr_f16_to_f32_n(tmp, h + i, len);
        if (len == BLK) add_blk(y + i, tmp);
        else for (size_t j = 0; j < len; j++) y[i + j] += tmp[j];
    }
}

void tsr_comm_round_f16(float *x, size_t n) { tsr_round_n(TSR_PRECISION_FP16, x, x, n); }
