/* Shared by the tools: re-executes the program once with OPENBLAS_CORETYPE set when OpenBLAS
 * chose generic kernels on a better CPU (tsr_blas_better_coretype). Call first thing in main,
 * before MPI or OpenCL start; a failed exec carries on with the slow kernels. */
#ifndef TSR_SAMPLES_BLAS_REEXEC_H
#define TSR_SAMPLES_BLAS_REEXEC_H
#include <stdlib.h>
#include <unistd.h>
#include "tessera.h"

static void blas_reexec(char **argv) {
    const char *core = tsr_blas_better_coretype();
    const char *off = getenv("TSR_NO_BLAS_REEXEC");
    if (!core || (off && *off && *off != '0')) return;
    if (setenv("OPENBLAS_CORETYPE", core, 1) == 0) execv("/proc/self/exe", argv);
}

#endif
