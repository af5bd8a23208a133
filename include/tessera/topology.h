/* Topology: hwloc + OpenCL discovery, capability, topology files, cluster view. */
#ifndef TESSERA_TOPOLOGY_H
#define TESSERA_TOPOLOGY_H
#include "context.h"

#endif
