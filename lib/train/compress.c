/* Gradient compression helpers: top-k selection by magnitude (Deep Gradient Compression). */
#include <math.h>
#include <string.h>
#include "lib/train/dp.h"

/* k-th largest magnitude by quickselect (Hoare partition, median-of-three pivot) on a copy. */
static float kth_largest(float *a, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1, want = k - 1; /* descending order position */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        float x = a[lo], y = a[mid], z = a[hi];
        float p = x > y ? (y > z ? y : (x > z ? z : x)) : (x > z ? x : (y > z ? z : y));
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > p) i++;
            while (a[j] < p) j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else return a[want];
    }
    return a[want];
}

void tsr_topk_select(const float *v, size_t n, size_t k, uint32_t *idx, float *scratch) {
    if (!k || !n) return;
    if (k >= n) {
        for (size_t i = 0; i < n; i++) idx[i] = (uint32_t)i;
        return;
    }
    for (size_t i = 0; i < n; i++) scratch[i] = fabsf(v[i]);
    float th = kth_largest(scratch, n, k);
    size_t m = 0;
    for (size_t i = 0; i < n && m < k; i++) /* strictly above the threshold first */
        if (fabsf(v[i]) > th) idx[m++] = (uint32_t)i;
    for (size_t i = 0; i < n && m < k; i++) /* then ties, by position */
        if (fabsf(v[i]) == th) idx[m++] = (uint32_t)i;
}
