/* Communication: communicators and allreduce over MPICH (self communicator without MPI). */
#ifndef TESSERA_COMM_H
#define TESSERA_COMM_H
#include "context.h"

#endif
