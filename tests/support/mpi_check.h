/* Shared by the MPI test programs (tests/mpi/test_*.c: one program each, run under mpiexec,
 * no cmocka): sanitizer settings for the libraries that keep allocations for the whole
 * process, a CHECK that counts failures and names the rank, a SKIP that counts the parts not
 * run, the exit status that reports both, and a hash to compare buffers across ranks. main
 * sets mpi_check_rank after MPI_Init. */
#ifndef TSR_TESTS_MPI_CHECK_H
#define TSR_TESTS_MPI_CHECK_H
#include <stdint.h>
#include <mpi.h>
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
static int skips;
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

/* A part of the test that cannot run here: prints "SKIP: <why>" (tests/run-tests.sh reports the
 * last such line as the reason) and counts it. A reason that starts with "missing " names a
 * prerequisite the suite promises (Fashion-MNIST, an OpenCL device): `make test` fails on it
 * (TSR_TEST_REQUIRE); any other reason says why the part does not apply here. */
#define SKIP(...)                      \
    do {                               \
        skips++;                       \
        printf("SKIP: " __VA_ARGS__);  \
        printf("\n");                  \
        fflush(stdout);                \
    } while (0)

/* The exit status of every rank, agreed over MPI_COMM_WORLD (call before MPI_Finalize): 1 when a
 * check failed on any rank, else 77 (the automake convention for "skipped") when a part was
 * skipped on any rank, else 0. *total_failures (may be NULL) gets the failures of all ranks. */
static inline int mpi_check_status(int *total_failures) {
    int mine[2] = {failures, skips}, all[2] = {0, 0};
    MPI_Allreduce(mine, all, 2, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (total_failures) *total_failures = all[0];
    return all[0] ? 1 : all[1] ? 77 : 0;
}

/* FNV-1a */
static inline uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

#endif
