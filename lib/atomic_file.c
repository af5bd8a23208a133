/* Atomic file replacement (see atomic_file.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "lib/atomic_file.h"
#include "lib/internal.h"

/* fsync of folder `dir`, so the rename itself is durable. */
static int sync_folder(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int e = 0;
    if (fsync(fd) != 0 && errno != EINVAL) e = errno; /* EINVAL: fs cannot sync folders */
    close(fd);
    return e;
}

tsr_status tsr_atomic_file_begin(tsr_context *ctx, const char *path, tsr_atomic_file *af) {
    memset(af, 0, sizeof *af);
    /* One allocation holds the temp name and the folder name, so nothing can fail for want
     * of memory once the new file is in place. */
    size_t len = strlen(path), tmp_size = len + 32;
    char *tmp = tsr_malloc(ctx, tmp_size + len + 2);
    if (!tmp)
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory for the temp file name", path);
    snprintf(tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());
    char *dir = tmp + tmp_size;
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else {
        size_t n = slash == path ? 1 : (size_t)(slash - path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    tsr_status st;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        int e = errno;
        st = tsr_error(ctx, TSR_ERR_IO, "%s: cannot create temp file %s: %s", path, tmp,
                       strerror(e));
        tsr_free(ctx, tmp);
        return st;
    }
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        int e = errno;
        close(fd);
        unlink(tmp);
        st = tsr_error(ctx, TSR_ERR_IO, "%s: fdopen of %s: %s", path, tmp, strerror(e));
        tsr_free(ctx, tmp);
        return st;
    }
    af->fp = fp;
    af->path = path;
    af->tmp = tmp;
    af->dir = dir;
    return TSR_OK;
}

tsr_status tsr_atomic_file_commit(tsr_context *ctx, tsr_atomic_file *af, int write_errno) {
    int err = write_errno;
    const char *what = "write";
    if (!err && fflush(af->fp) != 0) {
        err = errno ? errno : EIO;
        what = "flush";
    }
    if (!err && fsync(fileno(af->fp)) != 0) {
        err = errno;
        what = "fsync";
    }
    if (fclose(af->fp) != 0 && !err) { /* delayed write errors can surface only here */
        err = errno ? errno : EIO;
        what = "close";
    }
    if (!err && rename(af->tmp, af->path) != 0) {
        err = errno;
        what = "rename";
    }
    tsr_status st = TSR_OK;
    if (err) {
        unlink(af->tmp);
        st = tsr_error(ctx, TSR_ERR_IO, "%s: %s of temp file %s failed: %s (previous file kept)",
                       af->path, what, af->tmp, strerror(err));
    } else if ((err = sync_folder(af->dir)) != 0) {
        st = tsr_error(ctx, TSR_ERR_IO,
                       "%s: written and renamed, but syncing its folder failed: %s", af->path,
                       strerror(err));
    }
    tsr_free(ctx, af->tmp);
    memset(af, 0, sizeof *af);
    return st;
}
