/* Training: optimizers, schedules, trainer. */
#ifndef TESSERA_TRAIN_H
#define TESSERA_TRAIN_H
#include "context.h"

#endif
