/* Status codes: 0 is success, negatives are grouped by origin. */
#ifndef TESSERA_STATUS_H
#define TESSERA_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

/*
 * -1 .. -99   OpenCL error codes passed through unchanged (CL_OUT_OF_RESOURCES = -5, ...)
 * -100..      bad input from the caller or from a file
 * -200..      out of memory (host or device)
 * -300..      I/O
 * -400..      libraries (CLBlast, BLAS)
 * -500..      MPI and peers
 * -600..      hwloc
 * -700..      numerics
 * -800..      the run was stopped on request (not a failure: see TSR_ERR_INTERRUPTED)
 * -900        internal error (a bug in tessera)
 */
typedef enum tsr_status {
    TSR_OK = 0,

    TSR_ERR_OPENCL = -99,          /* an OpenCL code outside -1..-98 */

    TSR_ERR_INVALID_ARG = -100,    /* NULL pointer, negative size, unknown enum */
    TSR_ERR_SHAPE = -101,          /* sizes that do not fit together or overflow a buffer */
    TSR_ERR_PARSE = -102,          /* malformed text (model spec, JSON, options) */
    TSR_ERR_UNSUPPORTED = -103,    /* valid, but not implemented for this device/build */
    TSR_ERR_NOT_FOUND = -104,      /* named thing (device, file entry, preset) does not exist */
    TSR_ERR_MISMATCH = -105,       /* e.g. checkpoint for another model */
    TSR_ERR_STATE = -106,          /* call not valid in the object's current state */
    TSR_ERR_PLAN = -107,           /* impossible placement */

    TSR_ERR_NO_MEMORY = -200,      /* host allocation failed */
    TSR_ERR_DEVICE_MEMORY = -201,  /* device allocation failed */
    TSR_ERR_NO_DEVICE = -202,      /* no usable device */

    TSR_ERR_IO = -300,             /* open/read/write/rename failed (errno in the detail) */
    TSR_ERR_CORRUPT = -301,        /* bad magic, checksum, or contradictory contents */
    TSR_ERR_TRUNCATED = -302,      /* file shorter than its header says */

    TSR_ERR_CLBLAST = -400,        /* CLBlast returned an error (code in the detail) */
    TSR_ERR_BLAS = -401,
    TSR_ERR_BUILD = -402,          /* OpenCL program build failed (log in the detail) */

    TSR_ERR_MPI = -500,            /* an MPI call failed */
    TSR_ERR_PEER_LOST = -501,      /* a peer rank died or stopped answering */
    TSR_ERR_TIMEOUT = -502,

    TSR_ERR_HWLOC = -600,

    TSR_ERR_NUMERIC = -700,        /* NaN or Inf where finite values are required */

    /* the caller's stop request (tsr_trainer_options.stop_flag) was honoured: the step that
     * returns it was completed on every rank, the run is consistent and can be saved */
    TSR_ERR_INTERRUPTED = -800,

    TSR_ERR_INTERNAL = -900
} tsr_status;

/* Short constant description of a status ("out of host memory"); never NULL. */
const char *tsr_status_str(tsr_status status);

/* Name of the enumerator ("TSR_ERR_SHAPE", "CL_OUT_OF_RESOURCES"); never NULL. */
const char *tsr_status_name(tsr_status status);

#ifdef __cplusplus
}
#endif
#endif
