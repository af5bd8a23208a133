/* Atomic whole-file saves (lib/core/atomic_file.h): contents replaced whole, every failure keeps the
 * previous file and removes its temp file, errors name the step, stale temp files of dead
 * processes removed by the next save, and the writability check before a save. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include "lib/core/atomic_file.h"
#include "lib/core/internal.h"
#include "support/test_util.h"

typedef struct {
    tsr_context *ctx;
    char dir[64];
    char path[128]; /* <dir>/out.bin */
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f || tsr_test_quiet_context(&f->ctx) != TSR_OK) return -1;
    if (tsr_test_make_dir(f->dir, sizeof f->dir, "atomic") != 0) return -1;
    snprintf(f->path, sizeof f->path, "%s/out.bin", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    chmod(f->dir, 0755);
    if (tsr_test_remove_dir(f->dir) != 0) return -1;
    tsr_context_free(f->ctx);
    free(f);
    return 0;
}

/* Whole file into a malloc'd buffer (NUL-terminated); NULL when it cannot be read. */
static char *slurp(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *p = malloc((size_t)len + 1);
    assert_non_null(p);
    assert_int_equal(fread(p, 1, (size_t)len, fp), (size_t)len);
    fclose(fp);
    p[len] = '\0';
    if (n) *n = (size_t)len;
    return p;
}

static void assert_contents(const char *path, const char *want) {
    size_t n;
    char *got = slurp(path, &n);
    assert_non_null(got);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(got, want, n);
    free(got);
}

/* Entries of `dir` whose name contains ".tmp." */
static int temp_files(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(d);
    return n;
}

static void assert_error_has(fixture *f, const char *what) {
    const char *msg = tsr_context_last_error(f->ctx);
    if (!strstr(msg, what)) fail_msg("\"%s\" not in the error \"%s\"", what, msg);
}

static void touch(const char *path) {
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fclose(fp), 0);
}

static void test_saves_replace_whole_file(void **state) {
    fixture *f = *state;
    assert_int_equal(tsr_atomic_write_file(f->ctx, f->path, "first version", 13), TSR_OK);
    assert_contents(f->path, "first version");
    /* a shorter replacement leaves nothing of the longer file */
    assert_int_equal(tsr_atomic_write_file(f->ctx, f->path, "second", 6), TSR_OK);
    assert_contents(f->path, "second");
    /* writing through the FILE * and through tsr_atomic_write mix in order */
    tsr_atomic_file af;
    assert_int_equal(tsr_atomic_open(f->ctx, f->path, &af), TSR_OK);
    assert_int_equal(tsr_atomic_write(&af, "abc", 3), 0);
    fprintf(af.fp, "-%d-", 42);
    assert_int_equal(tsr_atomic_write(&af, "xyz", 3), 0);
    /* the target stays the previous file until the commit */
    assert_contents(f->path, "second");
    assert_int_equal(tsr_atomic_commit(&af), TSR_OK);
    assert_contents(f->path, "abc-42-xyz");
    assert_null(af.path);
    /* an empty file, and a path without a folder part is relative to the working folder */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(f->dir), 0);
    tsr_status st = tsr_atomic_write_file(f->ctx, "rel.bin", "", 0);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(st, TSR_OK);
    char rel[160];
    snprintf(rel, sizeof rel, "%s/rel.bin", f->dir);
    assert_contents(rel, "");
    assert_int_equal(temp_files(f->dir), 0);
}

/* The temp file sits beside the target, named <target>.tmp.<host>.<pid>.<seq>, unique per open. */
static void test_temp_name(void **state) {
    fixture *f = *state;
    tsr_atomic_file a, b;
    assert_int_equal(tsr_atomic_open(f->ctx, f->path, &a), TSR_OK);
    assert_int_equal(tsr_atomic_open(f->ctx, f->path, &b), TSR_OK);
    assert_string_not_equal(a.tmp, b.tmp);
    assert_int_equal(temp_files(f->dir), 2);
    size_t len = strlen(f->path);
    assert_memory_equal(a.tmp, f->path, len);
    assert_memory_equal(a.tmp + len, ".tmp.", 5);
    const char *host = a.tmp + len + 5, *dot = strchr(host, '.');
    assert_non_null(dot);
    assert_true(dot > host && dot - host <= 32);
    for (const char *c = host; c < dot; c++)
        assert_true((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') ||
                    (*c >= '0' && *c <= '9') || *c == '-' || *c == '_');
    char *end;
    assert_int_equal(strtol(dot + 1, &end, 10), (long)getpid());
    assert_int_equal(*end, '.');
    strtoul(end + 1, &end, 10);
    assert_int_equal(*end, '\0');
    /* both commit; the later one wins */
    assert_int_equal(tsr_atomic_write(&a, "A", 1), 0);
    assert_int_equal(tsr_atomic_write(&b, "B", 1), 0);
    assert_int_equal(tsr_atomic_commit(&a), TSR_OK);
    assert_int_equal(tsr_atomic_commit(&b), TSR_OK);
    assert_contents(f->path, "B");
    assert_int_equal(temp_files(f->dir), 0);
}

static void test_abort_keeps_previous(void **state) {
    fixture *f = *state;
    assert_int_equal(tsr_atomic_write_file(f->ctx, f->path, "kept", 4), TSR_OK);
    tsr_error(f->ctx, TSR_ERR_PARSE, "the caller's own error");
    tsr_atomic_file af;
    assert_int_equal(tsr_atomic_open(f->ctx, f->path, &af), TSR_OK);
    assert_int_equal(tsr_atomic_write(&af, "half", 4), 0);
    tsr_atomic_abort(&af);
    assert_contents(f->path, "kept");
    assert_int_equal(temp_files(f->dir), 0);
    assert_string_equal(tsr_context_last_error(f->ctx), "the caller's own error");
    tsr_atomic_abort(&af); /* finished: a no-op */
    tsr_atomic_abort(NULL);
}

/* RLIMIT_FSIZE makes the file system refuse bytes past `limit` with EFBIG. */
typedef struct {
    struct rlimit saved;
    void (*prev)(int);
} fsize_limit;

static void limit_fsize(fsize_limit *l, rlim_t limit) {
    struct rlimit lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &l->saved), 0);
    lim = l->saved;
    lim.rlim_cur = limit;
    l->prev = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
}

static void unlimit_fsize(fsize_limit *l) {
    setrlimit(RLIMIT_FSIZE, &l->saved);
    signal(SIGXFSZ, l->prev);
}

/* Each failing step: IO error naming the target, the step and strerror; previous file kept;
 * no temp file left. */
static void test_failures_keep_previous(void **state) {
    fixture *f = *state;
    assert_int_equal(tsr_atomic_write_file(f->ctx, f->path, "previous", 8), TSR_OK);
    enum { BIG = 1 << 16 };
    char *big = calloc(BIG, 1);
    assert_non_null(big);
    char efbig[128];
    snprintf(efbig, sizeof efbig, ": %s (previous file kept)", strerror(EFBIG));

    /* write: one fwrite larger than the limit and the stdio buffer */
    fsize_limit l;
    limit_fsize(&l, 4096);
    tsr_status st = tsr_atomic_write_file(f->ctx, f->path, big, BIG);
    unlimit_fsize(&l);
    assert_int_equal(st, TSR_ERR_IO);
    assert_error_has(f, f->path);
    assert_error_has(f, ": write of temp file ");
    assert_error_has(f, efbig);
    assert_contents(f->path, "previous");
    assert_int_equal(temp_files(f->dir), 0);

    /* flush: the write fits the stdio buffer, the file system refuses it at the flush */
    tsr_atomic_file af;
    limit_fsize(&l, 16);
    assert_int_equal(tsr_atomic_open(f->ctx, f->path, &af), TSR_OK);
    assert_int_equal(tsr_atomic_write(&af, big, 100), 0);
    st = tsr_atomic_commit(&af);
    unlimit_fsize(&l);
    assert_int_equal(st, TSR_ERR_IO);
    assert_error_has(f, ": flush of temp file ");
    assert_error_has(f, efbig);
    assert_contents(f->path, "previous");
    assert_int_equal(temp_files(f->dir), 0);

    /* a failed direct write to the FILE * is caught by the commit too */
    limit_fsize(&l, 16);
    assert_int_equal(tsr_atomic_open(f->ctx, f->path, &af), TSR_OK);
    size_t wrote = fwrite(big, 1, BIG, af.fp);
    st = tsr_atomic_commit(&af);
    unlimit_fsize(&l);
    assert_true(wrote < BIG);
    assert_int_equal(st, TSR_ERR_IO);
    assert_error_has(f, ": write of temp file ");
    assert_contents(f->path, "previous");
    assert_int_equal(temp_files(f->dir), 0);
    free(big);

    /* rename: the target is a folder */
    char sub[160];
    snprintf(sub, sizeof sub, "%s/folder", f->dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(tsr_atomic_write_file(f->ctx, sub, "x", 1), TSR_ERR_IO);
    assert_error_has(f, sub);
    assert_error_has(f, ": rename of temp file ");
    assert_error_has(f, strerror(EISDIR));
    assert_error_has(f, "(previous file kept)");
    struct stat sb;
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(temp_files(f->dir), 0);

    /* create: the folder does not exist */
    char nodir[200];
    snprintf(nodir, sizeof nodir, "%s/no/such/x.bin", f->dir);
    assert_int_equal(tsr_atomic_write_file(f->ctx, nodir, "x", 1), TSR_ERR_IO);
    assert_error_has(f, nodir);
    assert_error_has(f, ": cannot create temp file ");
    assert_error_has(f, strerror(ENOENT));

    /* bad arguments */
    assert_int_equal(tsr_atomic_open(f->ctx, "", &af), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_atomic_open(f->ctx, NULL, &af), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_atomic_open(f->ctx, f->path, NULL), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_atomic_commit(NULL), TSR_ERR_INVALID_ARG);
    assert_contents(f->path, "previous");
    assert_int_equal(temp_files(f->dir), 0);
}

/* The one allocation fails: a clear error, nothing created. */
static void test_no_memory(void **state) {
    fixture *f = *state;
    tsr_test_alloc a;
    tsr_test_alloc_init(&a, 0);
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.allocator = &a.allocator;
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    tsr_context *ctx = NULL;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    a.fail_at = a.calls + 1;
    assert_int_equal(tsr_atomic_write_file(ctx, f->path, "x", 1), TSR_ERR_NO_MEMORY);
    assert_non_null(strstr(tsr_context_last_error(ctx), f->path));
    assert_int_equal(temp_files(f->dir), 0);
    assert_int_equal(access(f->path, F_OK), -1);
    /* the save needs that one allocation only, and frees it */
    a.fail_at = 0;
    long before = a.calls;
    assert_int_equal(tsr_atomic_write_file(ctx, f->path, "x", 1), TSR_OK);
    assert_int_equal(a.calls - before, 1);
    tsr_context_free(ctx);
    assert_int_equal(a.live, 0);
}

/* A pid that no process has: a child's, once it has exited and been reaped. */
static pid_t dead_pid(void) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return pid;
}

/* A save removes the temp files of its own target left by dead processes of this host, and
 * nothing else. */
static void test_stale_temp_files(void **state) {
    fixture *f = *state;
    /* this host's tag, as the module writes it */
    tsr_atomic_file af;
    assert_int_equal(tsr_atomic_open(f->ctx, f->path, &af), TSR_OK);
    char host[64];
    const char *h = af.tmp + strlen(f->path) + 5;
    size_t hl = (size_t)(strchr(h, '.') - h);
    memcpy(host, h, hl);
    host[hl] = '\0';
    tsr_atomic_abort(&af);

    pid_t dead = dead_pid();
    char name[8][256];
    snprintf(name[0], 256, "%s.tmp.%s.%ld.0", f->path, host, (long)dead);      /* stale */
    snprintf(name[1], 256, "%s.tmp.%s.%ld.17", f->path, host, (long)dead);     /* stale */
    snprintf(name[2], 256, "%s.tmp.%s.%ld.0", f->path, host, (long)getppid()); /* alive */
    snprintf(name[3], 256, "%s.tmp.other-host.%ld.0", f->path, (long)dead);    /* elsewhere */
    snprintf(name[4], 256, "%s.tmp.%s.%ld.3", f->path, host, (long)getpid());  /* ours */
    snprintf(name[5], 256, "%s/other.bin.tmp.%s.%ld.0", f->dir, host, (long)dead); /* not ours */
    snprintf(name[6], 256, "%s.tmp.%ld", f->path, (long)dead); /* another format */
    snprintf(name[7], 256, "%s.tmp.%s.%ldx.0", f->path, host, (long)dead);
    for (int i = 0; i < 8; i++) touch(name[i]);
    assert_int_equal(tsr_atomic_write_file(f->ctx, f->path, "new", 3), TSR_OK);
    assert_contents(f->path, "new");
    for (int i = 0; i < 8; i++)
        if ((access(name[i], F_OK) == 0) != (i >= 2)) fail_msg("%s: wrongly %s", name[i], i >= 2 ? "removed" : "kept");
    assert_int_equal(temp_files(f->dir), 6);
    /* the call loaders may use finds nothing more to remove */
    assert_int_equal(tsr_atomic_remove_stale(f->ctx, f->path), 0);
    touch(name[1]);
    assert_int_equal(tsr_atomic_remove_stale(f->ctx, f->path), 1);
    assert_int_equal(access(name[1], F_OK), -1);
}

/* ---- tsr_file_check_writable ---- */

static void test_check_writable(void **state) {
    fixture *f = *state;
    /* a new file and a file to replace */
    assert_int_equal(tsr_file_check_writable(f->ctx, f->path, 1000), TSR_OK);
    assert_int_equal(access(f->path, F_OK), -1);
    assert_int_equal(tsr_atomic_write_file(f->ctx, f->path, "old", 3), TSR_OK);
    assert_int_equal(tsr_file_check_writable(f->ctx, f->path, 1000), TSR_OK);
    assert_contents(f->path, "old");
    assert_int_equal(temp_files(f->dir), 0);

    /* the path is a folder */
    assert_int_equal(tsr_file_check_writable(f->ctx, f->dir, 1234), TSR_ERR_INVALID_ARG);
    assert_error_has(f, f->dir);
    assert_error_has(f, "is a folder");
    assert_error_has(f, "1234 bytes");

    /* its folder does not exist */
    char nodir[200];
    snprintf(nodir, sizeof nodir, "%s/no/such/x.bin", f->dir);
    assert_int_equal(tsr_file_check_writable(f->ctx, nodir, 1234), TSR_ERR_NOT_FOUND);
    assert_error_has(f, nodir);
    assert_error_has(f, "folder ");
    assert_error_has(f, "/no/such does not exist");
    assert_error_has(f, "1234 bytes");

    /* its "folder" is a file */
    char under_file[200];
    snprintf(under_file, sizeof under_file, "%s/x.bin", f->path);
    assert_int_equal(tsr_file_check_writable(f->ctx, under_file, 1234), TSR_ERR_INVALID_ARG);
    assert_error_has(f, under_file);
    assert_error_has(f, "is not a folder");

    /* more than the file system holds */
    uint64_t huge = (uint64_t)1 << 62;
    struct statvfs vfs;
    assert_int_equal(statvfs(f->dir, &vfs), 0);
    assert_true((uint64_t)vfs.f_bavail * vfs.f_frsize < huge);
    assert_int_equal(tsr_file_check_writable(f->ctx, f->path, huge), TSR_ERR_IO);
    assert_error_has(f, f->path);
    assert_error_has(f, "not enough room");
    char needed[64];
    snprintf(needed, sizeof needed, "needs %llu bytes", (unsigned long long)huge);
    assert_error_has(f, needed);
    /* the bytes available are the statvfs figure (other writers may move it a little) */
    const char *avail = strstr(tsr_context_last_error(f->ctx), " has ");
    assert_non_null(avail);
    double have = strtod(avail + 5, NULL), want = (double)vfs.f_bavail * vfs.f_frsize;
    assert_true(have >= 0.9 * want - 1e6 && have <= 1.1 * want + 1e6);
    assert_int_equal(temp_files(f->dir), 0);

    assert_int_equal(tsr_file_check_writable(f->ctx, "", 1), TSR_ERR_INVALID_ARG);
    assert_int_equal(tsr_file_check_writable(f->ctx, NULL, 1), TSR_ERR_INVALID_ARG);
}

static int can_create_in(const char *dir) {
    char probe[256];
    snprintf(probe, sizeof probe, "%s/probe", dir);
    FILE *fp = fopen(probe, "w");
    if (!fp) return 0;
    fclose(fp);
    unlink(probe);
    return 1;
}

/* A folder without write permission. Root (CAP_DAC_OVERRIDE) writes there anyway: the checks
 * run in a child that drops to user "nobody" (65534); where it cannot, the test is skipped.
 * Exit codes say which expectation failed. */
static void test_check_writable_read_only(void **state) {
    fixture *f = *state;
    char ro[160], target[200];
    snprintf(ro, sizeof ro, "%s/ro", f->dir);
    snprintf(target, sizeof target, "%s/x.bin", ro);
    assert_int_equal(mkdir(ro, 0555), 0);
    assert_int_equal(chmod(ro, 0555), 0); /* whatever the umask */
    assert_int_equal(chmod(f->dir, 0755), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (can_create_in(ro) && (setgid(65534) != 0 || setuid(65534) != 0 || can_create_in(ro)))
            _exit(77);
        if (tsr_file_check_writable(f->ctx, target, 1234) != TSR_ERR_IO) _exit(10);
        const char *msg = tsr_context_last_error(f->ctx);
        if (!strstr(msg, target) || !strstr(msg, "cannot create files in folder ") ||
            !strstr(msg, strerror(EACCES)) || !strstr(msg, "1234 bytes"))
            _exit(11);
        /* and the save itself fails at its first step */
        if (tsr_atomic_write_file(f->ctx, target, "x", 1) != TSR_ERR_IO) _exit(12);
        if (!strstr(tsr_context_last_error(f->ctx), "cannot create temp file")) _exit(13);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    chmod(ro, 0755);
    if (WEXITSTATUS(status) == 77) {
        TSR_TEST_SKIP("permission bits do not stop this user and it cannot drop to nobody: "
                      "read-only folder not checked");
    }
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(temp_files(ro), 0);
    assert_int_equal(access(target, F_OK), -1);
}

/* RLIMIT_FSIZE below the size, in a child so the limit ends with it. Exit codes say which
 * expectation failed. */
static void test_check_writable_fsize_limit(void **state) {
    fixture *f = *state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit lim;
        if (getrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(10);
        lim.rlim_cur = 4096;
        if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(11);
        if (tsr_file_check_writable(f->ctx, f->path, 4096) != TSR_OK) _exit(12);
        if (tsr_file_check_writable(f->ctx, f->path, 8192) != TSR_ERR_IO) _exit(13);
        const char *msg = tsr_context_last_error(f->ctx);
        if (!strstr(msg, f->path) || !strstr(msg, "RLIMIT_FSIZE") ||
            !strstr(msg, "needs 8192 bytes") || !strstr(msg, "allows 4096"))
            _exit(14);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_saves_replace_whole_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_temp_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abort_keeps_previous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures_keep_previous, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_memory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_temp_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_writable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_writable_read_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_writable_fsize_limit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
