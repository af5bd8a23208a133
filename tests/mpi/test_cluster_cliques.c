/* The cluster view on two fake nodes: MPIR_CVAR_ODD_EVEN_CLIQUES=1 puts rank r on node r % 2. */
#define CLUSTER_CLIQUES 1
#include "test_cluster.c"
