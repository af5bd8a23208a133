/* Files replaced atomically: written to a temp file beside the target, flushed, fsync'ed,
 * renamed over the target, and the folder fsync'ed, so a crash or a failure at any point
 * leaves either the previous file or the complete new one, never a mix or a stray temp file. */
#ifndef TSR_ATOMIC_FILE_H
#define TSR_ATOMIC_FILE_H
#include <stdio.h>
#include "tessera.h"

typedef struct tsr_atomic_file {
    FILE *fp;        /* write the contents here */
    const char *path;
    char *tmp;       /* temp name; the folder name follows it in the same allocation */
    const char *dir;
} tsr_atomic_file;

/* Creates the temp file beside `path`. TSR_ERR_IO / TSR_ERR_NO_MEMORY naming `path`. */
tsr_status tsr_atomic_file_begin(tsr_context *ctx, const char *path, tsr_atomic_file *af);
/* write_errno: 0, or the errno of a failed write into af->fp (then the file is abandoned).
 * Flushes, syncs, closes and renames; on any failure removes the temp file and returns
 * TSR_ERR_IO naming `path`, the step and the reason. Always releases `af`. */
tsr_status tsr_atomic_file_commit(tsr_context *ctx, tsr_atomic_file *af, int write_errno);

#endif
