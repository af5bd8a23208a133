/* Host-memory screens of float data: the first NaN/Inf, the squared norm in one fixed order,
 * and the two in one read (gradient clipping needs both). Shared by the host backend's
 * first_nonfinite (per thread), the OpenCL backend's read-back and the wrapper's fallback. */
#include <math.h>
#include <string.h>
#include "backends/backend.h"

/* Whole blocks are screened branch-free on the exponent bits: (exponent & all-ones) + 1
 * carries into bit 31 only for NaN/Inf. The fixed trip count lets gcc vectorise at -O2 (4.5x
 * the scalar loop), so a clean gradient costs one streaming read. */
static uint32_t screen_block(const float *g) {
    uint32_t bad = 0;
    for (size_t i = 0; i < TSR_SCAN_BLOCK; i++) {
        uint32_t u;
        memcpy(&u, g + i, sizeof u);
        bad |= (u & 0x7f800000u) + 0x00800000u;
    }
    return bad;
}

/* 1 when x[0, len) (len <= TSR_SCAN_BLOCK) holds a NaN/Inf: the last, short block through a
 * zero-padded copy. */
static int block_bad(const float *x, size_t len) {
    if (len == TSR_SCAN_BLOCK) return (screen_block(x) & 0x80000000u) != 0;
    float tail[TSR_SCAN_BLOCK];
    memset(tail, 0, sizeof tail);
    memcpy(tail, x, len * sizeof *x);
    return (screen_block(tail) & 0x80000000u) != 0;
}

static size_t first_in(const float *x, size_t b, size_t len) {
    for (size_t i = b; i < b + len; i++)
        if (!isfinite(x[i])) return i;
    return b + len; /* not reached after block_bad */
}

size_t tsr_first_nonfinite_f32(const float *x, size_t n) {
    for (size_t b = 0; b < n; b += TSR_SCAN_BLOCK) {
        size_t len = n - b < TSR_SCAN_BLOCK ? n - b : TSR_SCAN_BLOCK;
        if (block_bad(x + b, len)) return first_in(x, b, len);
    }
    return n;
}

/* Four chains over i % 4 (the adds overlap), the tail on chain 0: the one order every caller
 * gets, fused or not. */
void tsr_sumsq_f32_add(double acc[4], const float *x, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (size_t k = 0; k < 4; k++) acc[k] += (double)x[i + k] * (double)x[i + k];
    for (; i < n; i++) acc[0] += (double)x[i] * (double)x[i];
}

double tsr_sumsq_f32_total(const double acc[4]) { return (acc[0] + acc[1]) + (acc[2] + acc[3]); }

double tsr_sumsq_f32(const float *x, size_t n) {
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    tsr_sumsq_f32_add(acc, x, n);
    return tsr_sumsq_f32_total(acc);
}

size_t tsr_scan_sumsq_f32(const float *x, size_t n, double *sumsq) {
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    *sumsq = 0.0;
    for (size_t b = 0; b < n; b += TSR_SCAN_BLOCK) { /* blocks are whole groups of 4 but the last */
        size_t len = n - b < TSR_SCAN_BLOCK ? n - b : TSR_SCAN_BLOCK;
        if (block_bad(x + b, len)) return first_in(x, b, len);
        tsr_sumsq_f32_add(acc, x + b, len); /* the block is still in L1 */
    }
    *sumsq = tsr_sumsq_f32_total(acc);
    return n;
}
