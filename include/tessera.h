/* tessera: training neural networks across heterogeneous accelerators.
 * Umbrella header: include this one. */
#ifndef TESSERA_H
#define TESSERA_H

#include "tessera/version.h"
#include "tessera/status.h"
#include "tessera/alloc.h"
#include "tessera/log.h"
#include "tessera/device.h"
#include "tessera/context.h"
#include "tessera/data.h"
#include "tessera/checkpoint.h"
#include "tessera/model.h"
#include "tessera/train.h"
#include "tessera/topology.h"
#include "tessera/comm.h"
#include "tessera/manifest.h"
#include "tessera/plan.h"
#include "tessera/config.h"
#include "tessera/tokens.h"
#include "tessera/safetensors.h"
#include "tessera/generate.h"
#include "tessera/precision.h"

#endif
