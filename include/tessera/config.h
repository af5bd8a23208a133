/* Configuration at the edge: the one place of the library that reads the environment.
 *
 * Every TSR_* variable (the README's configuration table) is read and validated here into an
 * options struct; nothing below reads the environment. A variable fills its field only while
 * that field still holds its *_options_init default, so a value set in code wins. A bad value
 * is TSR_ERR_PARSE with "TSR_NAME='value': expected ..." in `err` (which may be NULL; the
 * message is cut to err_size). Strings set from the environment point into it: they stay
 * valid until that variable changes. */
#ifndef TESSERA_CONFIG_H
#define TESSERA_CONFIG_H
#include <stddef.h>
#include "context.h"
#include "status.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* TSR_LOG, TSR_CACHE_DIR, TSR_NO_OPENCL, TSR_NO_HWLOC, TSR_TOPOLOGY, TSR_DATA_DIR,
 * TSR_HOST_THREADS (else OPENBLAS_NUM_THREADS, OMP_NUM_THREADS), TSR_KERNEL_BINARY_DIR,
 * TSR_CLBLAST_PARAMS, TSR_FAULT_CKPT_KILL, OPENBLAS_CORETYPE (no_blas_advice) and the
 * communicator's TSR_ALLREDUCE, TSR_ALLREDUCE_SEGMENT, TSR_SHM_BYTES, TSR_COMM_TIMEOUT.
 * tsr_context_create does this itself unless flags has TSR_CONTEXT_NO_ENV; call it first to
 * report a bad value with its message. On error `opts` may be partly filled. */
tsr_status tsr_context_options_from_env(tsr_context_options *opts, char *err, size_t err_size);

/* TSR_NONFINITE (skip|stop; also turns the gradient check on), TSR_TIMELINE, TSR_DP_BALANCE
 * (0: even_shares), TSR_FAULT_GRAD_NAN, TSR_FUSION_BYTES, TSR_COMPRESS, TSR_ZERO. Call it
 * right after tsr_trainer_options_init. */
tsr_status tsr_trainer_options_from_env(tsr_trainer_options *opts, char *err, size_t err_size);

#ifdef __cplusplus
}
#endif
#endif
