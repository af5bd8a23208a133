/* Whole-file replacement through a temp file and rename (atomic_file.h). */
#include "lib/core/atomic_file.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include "lib/core/internal.h"

#define TEMP_INFIX ".tmp."
#define HOST_TAG_MAX 32
/* ".tmp." + host + "." + pid + "." + seq + NUL */
#define TEMP_SUFFIX_MAX (sizeof TEMP_INFIX + HOST_TAG_MAX + 1 + 20 + 1 + 10 + 1)
#define CREATE_TRIES 100 /* names taken by a dead process of the same pid are skipped */

static atomic_uint temp_seq; /* makes names unique between threads of one process */

/* This host's name as temp names carry it: [A-Za-z0-9-] kept, anything else '_'. */
static void host_tag(char out[HOST_TAG_MAX + 1]) {
    char name[256];
    if (gethostname(name, sizeof name) != 0 || !name[0]) tsr_strlcpy(name, "localhost", sizeof name);
    name[sizeof name - 1] = '\0';
    size_t i = 0;
    for (; name[i] && i < HOST_TAG_MAX; i++) {
        char c = name[i];
        int keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   c == '-';
        out[i] = keep ? c : '_';
    }
    out[i] = '\0';
}

/* The folder of `path` into dir ("." when it has none). */
static void folder_of(const char *path, char *dir) {
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
        return;
    }
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    memcpy(dir, path, n);
    dir[n] = '\0';
}

/* One allocation holds the target, temp and folder names, so nothing can fail for want of
 * memory once the new file is in place. */
static tsr_status start(tsr_context *ctx, const char *path, tsr_atomic_file *af) {
    memset(af, 0, sizeof *af);
    size_t len = strlen(path);
    char *block = tsr_malloc(ctx, 3 * (len + 1) + TEMP_SUFFIX_MAX + 1);
    if (!block) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "%s: no memory for the temp file name", path);
    af->ctx = ctx;
    af->path = block;
    memcpy(af->path, path, len + 1);
    af->tmp = af->path + len + 1;
    af->dir = af->tmp + len + TEMP_SUFFIX_MAX;
    folder_of(path, af->dir);
    return TSR_OK;
}

static void finish(tsr_atomic_file *af) {
    tsr_free(af->ctx, af->path);
    memset(af, 0, sizeof *af);
}

/* Creates a temp file with a fresh name into af->tmp: an fd, or -1 with errno set. */
static int create_temp(tsr_atomic_file *af) {
    char host[HOST_TAG_MAX + 1];
    host_tag(host);
    for (int i = 0;; i++) {
        unsigned seq = atomic_fetch_add(&temp_seq, 1u);
        snprintf(af->tmp, strlen(af->path) + TEMP_SUFFIX_MAX, "%s" TEMP_INFIX "%s.%ld.%u", af->path,
                 host, (long)getpid(), seq);
        int fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0666);
        if (fd >= 0 || errno != EEXIST || i + 1 == CREATE_TRIES) return fd;
    }
}

/* The pid of a temp name of ours after "<base>.tmp.", when it was made on this host; else 0. */
static long temp_pid(const char *rest, const char *host) {
    const char *seq = strrchr(rest, '.');
    if (!seq || seq == rest || !seq[1] || strspn(seq + 1, "0123456789") != strlen(seq + 1)) return 0;
    const char *pid = seq - 1;
    while (pid > rest && *pid != '.') pid--;
    if (*pid != '.' || pid + 1 == seq || strspn(pid + 1, "0123456789") != (size_t)(seq - pid - 1))
        return 0;
    size_t host_len = (size_t)(pid - rest);
    if (host_len != strlen(host) || memcmp(rest, host, host_len) != 0) return 0;
    long v = strtol(pid + 1, NULL, 10);
    return v > 0 && v <= INT_MAX ? v : 0;
}

/* Removes the temp files of `base` in `dir` left by dead processes of this host. */
static int remove_stale(tsr_context *ctx, const char *dir, const char *base) {
    size_t base_len = strlen(base), infix = strlen(TEMP_INFIX);
    char host[HOST_TAG_MAX + 1];
    host_tag(host);
    int removed = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, base, base_len) != 0 ||
            strncmp(e->d_name + base_len, TEMP_INFIX, infix) != 0)
            continue;
        long pid = temp_pid(e->d_name + base_len + infix, host);
        /* EPERM: alive under another user. Our own pid: possibly another thread's save. */
        if (pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue;
        if (unlinkat(dirfd(d), e->d_name, 0) == 0) {
            removed++;
            tsr_log(ctx, TSR_LOG_INFO, "%s/%s: removed the temp file of process %ld, which is gone",
                    dir, e->d_name, pid);
        }
    }
    if (d) closedir(d);
    return removed;
}

static const char *base_of(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int tsr_atomic_remove_stale(tsr_context *ctx, const char *path) {
    if (!path || !*path) return 0;
    char *dir = tsr_malloc(ctx, strlen(path) + 2);
    if (!dir) return 0;
    folder_of(path, dir);
    int removed = remove_stale(ctx, dir, base_of(path));
    tsr_free(ctx, dir);
    return removed;
}

tsr_status tsr_atomic_open(tsr_context *ctx, const char *path, tsr_atomic_file *af) {
    if (!af) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_atomic_open: NULL argument");
    memset(af, 0, sizeof *af);
    if (!path || !*path)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_atomic_open: path is %s", path ? "empty" : "NULL");
    TSR_TRY(start(ctx, path, af));
    remove_stale(ctx, af->dir, base_of(path));
    int fd = create_temp(af);
    if (fd < 0) {
        int e = errno;
        tsr_status st = tsr_error(ctx, TSR_ERR_IO, "%s: cannot create temp file %s: %s (previous file kept)",
                                  path, af->tmp, strerror(e));
        finish(af);
        return st;
    }
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        int e = errno;
        close(fd);
        unlink(af->tmp);
        tsr_status st = tsr_error(ctx, TSR_ERR_IO, "%s: fdopen of temp file %s failed: %s (previous file kept)",
                                  path, af->tmp, strerror(e));
        finish(af);
        return st;
    }
    return TSR_OK;
}

int tsr_atomic_write(tsr_atomic_file *af, const void *data, size_t size) {
    if (af->err || !size) return af->err;
    errno = 0;
    if (fwrite(data, 1, size, af->fp) != size) af->err = errno ? errno : EIO;
    return af->err;
}

/* fsync of folder `dir`, so the rename itself is durable: 0 or errno. */
static int sync_folder(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    int e = 0;
    if (fsync(fd) != 0 && errno != EINVAL) e = errno; /* EINVAL: the fs cannot sync folders */
    close(fd);
    return e;
}

tsr_status tsr_atomic_commit(tsr_atomic_file *af) {
    if (!af || !af->fp)
        return tsr_error(af ? af->ctx : NULL, TSR_ERR_INVALID_ARG, "tsr_atomic_commit: no open file");
    const char *step = "write";
    int e = af->err;
    if (!e && ferror(af->fp)) e = EIO; /* a direct write to fp failed; its errno is gone */
    errno = 0;
    if (!e && fflush(af->fp) != 0) {
        e = errno ? errno : EIO;
        step = "flush";
    }
    if (!e && fsync(fileno(af->fp)) != 0) {
        e = errno;
        step = "fsync";
    }
    errno = 0;
    if (fclose(af->fp) != 0 && !e) { /* delayed write errors can surface only here */
        e = errno ? errno : EIO;
        step = "close";
    }
    af->fp = NULL;
    if (!e && rename(af->tmp, af->path) != 0) {
        e = errno;
        step = "rename";
    }
    tsr_status st = TSR_OK;
    if (e) {
        unlink(af->tmp);
        st = tsr_error(af->ctx, TSR_ERR_IO, "%s: %s of temp file %s failed: %s (previous file kept)",
                       af->path, step, af->tmp, strerror(e));
    } else if ((e = sync_folder(af->dir)) != 0) {
        st = tsr_error(af->ctx, TSR_ERR_IO,
                       "%s: written and renamed, but the folder sync of %s failed: %s", af->path,
                       af->dir, strerror(e));
    }
    finish(af);
    return st;
}

void tsr_atomic_abort(tsr_atomic_file *af) {
    if (!af || !af->path) return;
    if (af->fp) fclose(af->fp);
    unlink(af->tmp);
    finish(af);
}

tsr_status tsr_atomic_write_file(tsr_context *ctx, const char *path, const void *data,
                                 size_t size) {
    tsr_atomic_file af;
    TSR_TRY(tsr_atomic_open(ctx, path, &af));
    tsr_atomic_write(&af, data, size);
    return tsr_atomic_commit(&af);
}

tsr_status tsr_file_check_writable(tsr_context *ctx, const char *path, uint64_t bytes) {
    if (!path || !*path)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_file_check_writable: path is %s",
                         path ? "empty" : "NULL");
    unsigned long long need = (unsigned long long)bytes;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
        return tsr_error(ctx, TSR_ERR_INVALID_ARG,
                         "%s is a folder: a file of %llu bytes cannot be written there", path, need);
    tsr_atomic_file af;
    TSR_TRY(start(ctx, path, &af));
    tsr_status st = TSR_OK;
    struct statvfs vfs;
    struct rlimit lim;
    int fd;
    if (stat(af.dir, &sb) != 0) {
        int e = errno;
        st = tsr_error(ctx, e == ENOENT ? TSR_ERR_NOT_FOUND : TSR_ERR_IO,
                       "%s: folder %s %s (a file of %llu bytes is to be written there)", path,
                       af.dir, e == ENOENT ? "does not exist" : strerror(e), need);
    } else if (!S_ISDIR(sb.st_mode)) {
        st = tsr_error(ctx, TSR_ERR_INVALID_ARG,
                       "%s: %s is not a folder (a file of %llu bytes is to be written there)", path,
                       af.dir, need);
    } else if ((fd = create_temp(&af)) < 0) {
        int e = errno;
        st = tsr_error(ctx, TSR_ERR_IO,
                       "%s: cannot create files in folder %s: %s (a file of %llu bytes is to be "
                       "written there)", path, af.dir, strerror(e), need);
    } else {
        close(fd);
        unlink(af.tmp);
        if (statvfs(af.dir, &vfs) != 0) {
            st = tsr_error(ctx, TSR_ERR_IO, "%s: statvfs of %s: %s", path, af.dir, strerror(errno));
        } else if ((unsigned long long)vfs.f_bavail * vfs.f_frsize < need) {
            st = tsr_error(ctx, TSR_ERR_IO,
                           "%s: not enough room: the file needs %llu bytes, %s has %llu available",
                           path, need, af.dir, (unsigned long long)vfs.f_bavail * vfs.f_frsize);
        } else if (getrlimit(RLIMIT_FSIZE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
                   (unsigned long long)lim.rlim_cur < need) {
            st = tsr_error(ctx, TSR_ERR_IO,
                           "%s: the file needs %llu bytes, the file size limit (RLIMIT_FSIZE, "
                           "ulimit -f) allows %llu", path, need, (unsigned long long)lim.rlim_cur);
        }
    }
    finish(&af);
    return st;
}
