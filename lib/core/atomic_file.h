/* Whole-file replacement that never leaves half a file (internal).
 *
 * A save writes a temp file beside the target, flushes, fsyncs and renames it over the target,
 * then fsyncs the folder so the rename survives a power cut. Every failure removes the temp
 * file and leaves the previous file as it was. Checkpoints, manifests, topology files, the
 * capability cache and the OpenCL program cache all save through here.
 *
 * Temp files are named "<target>.tmp.<host>.<pid>.<seq>" (<host>: gethostname with characters
 * other than [A-Za-z0-9-] replaced by '_', at most 32 of them). A process killed mid-save
 * cannot remove its own; the next save of the same target does, when <host> is this host and
 * process <pid> no longer exists here (a folder shared over NFS holds other hosts' temp files,
 * whose processes cannot be checked from here: those are left alone).
 *
 *     tsr_atomic_file af;
 *     TSR_TRY(tsr_atomic_open(ctx, path, &af));
 *     tsr_atomic_write(&af, data, size);          // or fprintf(af.fp, ...)
 *     return tsr_atomic_commit(&af);              // or tsr_atomic_abort(&af)
 */
#ifndef TSR_ATOMIC_FILE_H
#define TSR_ATOMIC_FILE_H
#include <stdint.h>
#include <stdio.h>
#include "tessera.h"

typedef struct tsr_atomic_file {
    FILE *fp;          /* the open temp file: write through tsr_atomic_write or directly */
    int err;           /* errno of the first failed tsr_atomic_write; 0 while all went well */
    tsr_context *ctx;
    char *path;        /* the target (a copy); the temp name and the folder share its block */
    char *tmp;
    char *dir;
} tsr_atomic_file;

/* Removes stale temp files of `path`, then creates a fresh temp file beside it. On failure
 * nothing is left open or allocated ("<path>: cannot create temp file <tmp>: <strerror>"). */
tsr_status tsr_atomic_open(tsr_context *ctx, const char *path, tsr_atomic_file *af);

/* fwrite that remembers the first failure in af->err (then does nothing more); returns
 * af->err. */
int tsr_atomic_write(tsr_atomic_file *af, const void *data, size_t size);

/* Flush, fsync, close, rename over the target, fsync of the folder. On any failure before
 * the rename the temp file is removed and the error names the target, the step that failed
 * (write, flush, fsync, close, rename) and the temp file, and says the previous file was kept.
 * A failed folder sync is reported too: the new file is then in place but its rename may not
 * survive a power cut. af is finished either way. */
tsr_status tsr_atomic_commit(tsr_atomic_file *af);

/* Closes and removes the temp file; the target is untouched. Leaves the context's last
 * error alone (the caller's own error describes the failure). NULL and finished af are no-ops. */
void tsr_atomic_abort(tsr_atomic_file *af);

/* The whole save in one call, for contents already in memory. */
tsr_status tsr_atomic_write_file(tsr_context *ctx, const char *path, const void *data,
                                 size_t size);

/* Removes the temp files of `path` left by dead processes of this host; returns how many.
 * tsr_atomic_open calls it; loaders may too. Never fails (what it cannot remove it leaves). */
int tsr_atomic_remove_stale(tsr_context *ctx, const char *path);

/* Checks, before the work that will end in a save, that `path` can take a file of `bytes`:
 * not a folder itself, its folder exists and accepts new files (a temp file of the name
 * tsr_atomic_open would use is created and removed), and the free space of the folder's file
 * system (statvfs, unprivileged share) and the file size limit (RLIMIT_FSIZE) both hold
 * `bytes`. Errors name the path, the bytes needed and, for space, the bytes available:
 * TSR_ERR_INVALID_ARG (a folder; the parent is not a folder), TSR_ERR_NOT_FOUND (no such
 * folder), TSR_ERR_IO (cannot create files there, not enough room). */
tsr_status tsr_file_check_writable(tsr_context *ctx, const char *path, uint64_t bytes);

#endif
