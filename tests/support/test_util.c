#include "test_util.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *failing_alloc(void *opaque, size_t size) {
    tsr_test_alloc *a = opaque;
    a->calls++;
    if (a->fail_at > 0 && a->calls >= a->fail_at) return NULL;
    void *p = malloc(size);
    if (p) a->live++;
    return p;
}

static void counting_free(void *opaque, void *ptr) {
    tsr_test_alloc *a = opaque;
    if (ptr) a->live--;
    free(ptr);
}

void tsr_test_alloc_init(tsr_test_alloc *a, long fail_at) {
    a->allocator.alloc = failing_alloc;
    a->allocator.free = counting_free;
    a->allocator.opaque = a;
    a->calls = 0;
    a->fail_at = fail_at;
    a->live = 0;
}

void tsr_test_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi) {
    uint64_t s = seed * 2654435761u + 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = lo + (hi - lo) * (float)((s >> 40) * (1.0 / 16777216.0));
    }
}

double tsr_test_rel_error(const float *a, const float *b, size_t n, double atol, double rtol,
                          size_t *worst) {
    double max = 0;
    size_t wi = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (isnan(e)) e = INFINITY;
        if (e > max) {
            max = e;
            wi = i;
        }
    }
    if (worst) *worst = wi;
    return max;
}

tsr_status tsr_test_quiet_context(tsr_context **out) {
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    return tsr_context_create(out, &o);
}

int tsr_test_make_dir(char *dir, size_t size, const char *tag) {
    if (snprintf(dir, size, "/tmp/tsr-%s-XXXXXX", tag) >= (int)size) return -1;
    return mkdtemp(dir) ? 0 : -1;
}

int tsr_test_remove_dir(const char *dir) {
    char cmd[256];
    if (snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir) >= (int)sizeof cmd) return -1;
    return system(cmd) == 0 ? 0 : -1;
}

tsr_dataset *tsr_test_clusters(tsr_context *ctx, size_t samples, size_t features, size_t classes) {
    tsr_dataset *d = NULL;
    float *centre = calloc(classes * features, sizeof *centre);
    if (!centre || tsr_dataset_create(ctx, samples, 1, 4, features / 4, classes, &d) != TSR_OK) {
        free(centre);
        return NULL;
    }
    uint64_t x = 12345;
    for (size_t i = 0; i < classes * features; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        centre[i] = (float)((x >> 40) & 0xFFFF) / 65536.0f * 2.0f - 1.0f;
    }
    for (size_t i = 0; i < samples; i++) {
        size_t c = i % classes;
        d->labels[i] = (int32_t)c;
        for (size_t f = 0; f < features; f++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            float noise = (float)((x >> 40) & 0xFFFF) / 65536.0f - 0.5f;
            d->images[i * features + f] = centre[c * features + f] + 3.0f * noise;
        }
    }
    free(centre);
    return d;
}

int tsr_test_dir_setup(void **state) {
    tsr_test_dir_fixture *f = calloc(1, sizeof *f);
    if (!f || tsr_test_quiet_context(&f->ctx) != TSR_OK) return -1;
    if (tsr_test_make_dir(f->dir, sizeof f->dir, "test") != 0) return -1;
    *state = f;
    return 0;
}

int tsr_test_dir_teardown(void **state) {
    tsr_test_dir_fixture *f = *state;
    if (tsr_test_remove_dir(f->dir) != 0) return -1;
    tsr_context_free(f->ctx);
    free(f);
    return 0;
}

double tsr_test_max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

double tsr_test_max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN wins */
    }
    return m;
}
