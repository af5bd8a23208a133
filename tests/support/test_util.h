/* Shared test helpers: a failing allocator, tolerant comparisons, deterministic data. */
#ifndef TSR_TEST_UTIL_H
#define TSR_TEST_UTIL_H
#include <stddef.h>
#include <stdint.h>
#include "tessera.h"

/* Allocator that fails the (fail_at)-th allocation onward (0 = never), and counts live blocks. */
typedef struct tsr_test_alloc {
    tsr_allocator allocator;
    long calls;
    long fail_at;
    long live;
} tsr_test_alloc;
void tsr_test_alloc_init(tsr_test_alloc *a, long fail_at);

/* Fills x[n] with uniform values in [lo, hi) from a 64-bit seed (xorshift). */
void tsr_test_fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi);

/* Max |a-b| / (atol + rtol*|b|) over n elements; <= 1 means within tolerance. Reports
 * the worst index through *worst when non-NULL. */
/* max |x|, and max |a - b| (a NaN anywhere: NaN), over n floats. */
double tsr_test_max_abs(const float *x, size_t n);
double tsr_test_max_diff(const float *a, const float *b, size_t n);
double tsr_test_rel_error(const float *a, const float *b, size_t n, double atol, double rtol,
                          size_t *worst);

/* A learnable synthetic task: `samples` samples of 1 x 4 x (features / 4) floats in `classes`
 * classes; class c (sample i has class i % classes) has a fixed random centre, samples are
 * centre + 3 x uniform noise in [-0.5, 0.5). The same on every rank (fixed seed). NULL on error. */
tsr_dataset *tsr_test_clusters(tsr_context *ctx, size_t samples, size_t features, size_t classes);

/* Skips the running cmocka test, saying why on a line "SKIP: <why>" (printf-style, a literal
 * format first) that tests/run-tests.sh reports. A reason that starts with "missing " names a
 * prerequisite the suite promises (Fashion-MNIST, an OpenCL device, the fuzz corpus): `make test`
 * fails on it (TSR_TEST_REQUIRE); any other reason says why the test does not apply here. */
#define TSR_TEST_SKIP(...)                   \
    do {                                     \
        print_message("SKIP: " __VA_ARGS__); \
        print_message("\n");                 \
        skip();                              \
    } while (0)

/* A context without OpenCL, hwloc or log output, for tests of host-only modules. */
tsr_status tsr_test_quiet_context(tsr_context **out);
/* mkdtemp of "/tmp/tsr-<tag>-XXXXXX" into dir (>= 64 bytes); 0 on success. */
int tsr_test_make_dir(char *dir, size_t size, const char *tag);
/* rm -rf dir; 0 on success. */
int tsr_test_remove_dir(const char *dir);

/* The fixture of file-format tests: a quiet context and a fresh temporary folder.
 * tsr_test_dir_setup / tsr_test_dir_teardown are cmocka group setup/teardown functions. */
typedef struct tsr_test_dir_fixture {
    tsr_context *ctx;
    char dir[64];
} tsr_test_dir_fixture;
int tsr_test_dir_setup(void **state);
int tsr_test_dir_teardown(void **state);

#endif
