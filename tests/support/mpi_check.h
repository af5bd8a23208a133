/* Shared by the MPI test programs (tests/mpi/test_*.c: one program each, run under mpiexec,
 * no cmocka): sanitizer settings for the libraries that keep allocations for the whole
 * process, a CHECK that counts failures and names the rank, and a hash to compare buffers
 * across ranks. main sets mpi_check_rank after MPI_Init. */
#ifndef TSR_TESTS_MPI_CHECK_H
#define TSR_TESTS_MPI_CHECK_H
#include <stdint.h>
#include <stdio.h>
#include "tessera.h"

/* MPICH/UCX keep their MPI_Init allocations; PoCL, LLVM and CLBlast (OpenCL cases) keep their
 * compiler state; hwloc's PCI backend keeps libpciaccess's. */
const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; }
const char *__lsan_default_suppressions(void) {
    return "leak:libucs\nleak:libuct\nleak:libucp\nleak:libmpich\nleak:libpciaccess\n"
           "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\nleak:libclblast\n";
}

static int failures;
static int mpi_check_rank;

#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        if (!(cond)) {                                                               \
            failures++;                                                              \
            fprintf(stderr, "rank %d: %s:%d: ", mpi_check_rank, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fprintf(stderr, "\n");                                                   \
        }                                                                            \
    } while (0)
#define CHECK_OK(expr, ctx)                                                              \
    do {                                                                                 \
        tsr_status s_ = (expr);                                                          \
        CHECK(s_ == TSR_OK, "%s: %s (%s)", #expr, tsr_status_str(s_),                    \
              tsr_context_last_error(ctx));                                              \
    } while (0)

/* FNV-1a */
static inline uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

#endif
