/* test_allreduce on two fake nodes (MPIR_CVAR_ODD_EVEN_CLIQUES=1): the hierarchical shm, the
 * cross-node ring per slice, and uneven nodes at n=3. */
#define TSR_TEST_HIER_BUILD 1
#include "mpi/test_allreduce.c"
