/* Private checkpoint entry points: parsing from memory (fuzz target, tests). */
#ifndef TSR_CHECKPOINT_INTERNAL_H
#define TSR_CHECKPOINT_INTERNAL_H
#include <stddef.h>
#include "tessera.h"

#define TSR_CKPT_VERSION 2u   /* newest written; 1 when there is no metadata */
#define TSR_CKPT_META_MAX 65536u /* metadata bytes, NUL included */
#define TSR_CKPT_HEADER_SIZE 128u
#define TSR_CKPT_ENTRY_SIZE 80u

enum {
    /* Skip the CRC check, so a fuzzer reaches the structural checks behind it. */
    TSR_CKPT_LOAD_NO_CRC = 1u << 0
};

/* Parses a checkpoint image held in memory; `name` stands for the file name in errors. */
tsr_status tsr_checkpoint_load_mem(tsr_context *ctx, const char *name, const void *data,
                                   size_t size, unsigned flags, tsr_checkpoint **out);

/* A training checkpoint fits a run when its model spec and optimizer are the run's and each
 * tensor names[0..nt) is present with `count` floats: else TSR_ERR_MISMATCH naming what
 * differs ("<path>: checkpoint optimizer is 'adam', <who> uses 'sgd'"). Nothing is changed, so
 * a refused load leaves the run as it was. */
tsr_status tsr_checkpoint_check_fit(tsr_context *ctx, const char *path, const tsr_checkpoint *ck,
                                    const char *spec, const char *optimizer, const char *who,
                                    const char *const *names, size_t nt, size_t count);

#endif
