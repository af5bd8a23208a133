/* Models: layers, model spec parser, builder, summary. */
#ifndef TESSERA_MODEL_H
#define TESSERA_MODEL_H
#include "context.h"

#endif
