/* tsr-launch: runs a training job under mpiexec and restarts it from its last checkpoint when a
 * rank is lost, with the ranks that remain, as torchrun's elastic agent and Horovod elastic do:
 *
 *   tsr-launch -n 4 --max-restarts 2 -- tsr-train --mode data --checkpoint run.ckpt ...
 *
 * Each rank runs under a shell that records its exit status in a run folder; mpiexec runs with
 * -disable-auto-cleanup, so a killed rank does not take the others down with it: they stop by
 * tessera's own deadline (TSR_COMM_TIMEOUT: ULFM is not usable with Debian's MPICH, see the
 * README). After a job in which some rank died by a signal, the launcher starts it again with
 * the surviving number of ranks and `--resume <checkpoint>` (the command's own --checkpoint),
 * until --max-restarts; the library recomputes the data-parallel shares for the new world
 * (tsr_trainer_data_split) and refuses a checkpoint whose epochs no longer match. A job whose
 * ranks all exit normally (0) ends, and so does one that failed without losing a rank (bad input
 * is not retried), nor one whose ranks stopped on request (SIGTERM/SIGINT to the ranks: they
 * save the step and exit 128 + the signal). The launcher does not forward signals yet: a
 * signal to it ends it alone. Attempt k runs with TSR_RESTART=k in the environment.
 * Exit: the last job's status (0 when it finished), 2 on bad usage. */
#include <errno.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static void usage(FILE *f) {
    fprintf(f, "usage: tsr-launch -n RANKS [--max-restarts N] [--min-ranks M] [--mpiexec PATH] -- "
               "COMMAND [ARGS...]\n"
               "  runs COMMAND under mpiexec; when a rank dies, restarts it from its --checkpoint\n"
               "  with the ranks that remain (at least M, default 1), at most N times (default 3)\n");
}

/* Appends s to buf as one single-quoted shell word. 0, or -1 when it does not fit. */
static int append_quoted(char *buf, size_t size, const char *s) {
    size_t n = strlen(buf);
    if (n + 3 >= size) return -1;
    buf[n++] = ' ';
    buf[n++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t k = piece ? 4 : 1;
        if (n + k + 2 >= size) return -1;
        if (piece) memcpy(buf + n, piece, k);
        else buf[n] = *s;
        n += k;
    }
    buf[n++] = '\'';
    buf[n] = '\0';
    return 0;
}

static long parse_count(const char *opt, const char *v, long lo) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < lo || x > 4096) {
        fprintf(stderr, "tsr-launch: option %s: '%s' is not an integer in %ld..4096\n", opt,
                v ? v : "", lo);
        usage(stderr);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv) {
    long ranks = 0, max_restarts = 3, min_ranks = 1;
    const char *mpiexec = "mpiexec";
    int i = 1;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--ranks")) ranks = parse_count(argv[i], argv[i + 1], 1), i++;
        else if (!strcmp(argv[i], "--max-restarts")) max_restarts = parse_count(argv[i], argv[i + 1], 0), i++;
        else if (!strcmp(argv[i], "--min-ranks")) min_ranks = parse_count(argv[i], argv[i + 1], 1), i++;
        else if (!strcmp(argv[i], "--mpiexec") && i + 1 < argc) mpiexec = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "tsr-launch: option %.64s: unknown option\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!ranks || i + 1 >= argc) {
        fprintf(stderr, "tsr-launch: %s\n", !ranks ? "option -n: the number of ranks is required"
                                                   : "no command after --");
        usage(stderr);
        return 2;
    }
    char **cmd = argv + i + 1;
    int ncmd = argc - i - 1;
    const char *checkpoint = NULL;
    for (int k = 0; k + 1 < ncmd; k++)
        if (!strcmp(cmd[k], "--checkpoint")) checkpoint = cmd[k + 1];
        else if (!strcmp(cmd[k], "--resume")) {
            fprintf(stderr, "tsr-launch: the command's --resume is the launcher's to add (from "
                            "its --checkpoint)\n");
            return 2;
        }
    if (!checkpoint) {
        fprintf(stderr, "tsr-launch: the command has no --checkpoint: a restart would start over\n");
        return 2;
    }
    char dir[] = "/tmp/tsr-launch.XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "tsr-launch: cannot create a run folder in /tmp: %s\n", strerror(errno));
        return 1;
    }
    int status = 1;
    for (long attempt = 0; attempt <= max_restarts; attempt++) {
        /* each rank's shell records the rank's exit status: rc.<rank>. It ignores SIGUSR1,
         * which hydra sends the surviving ranks when one dies under -disable-auto-cleanup
         * (MPICH's fault notification; the MPI process itself handles it): the shell would
         * die of it and the rank's status would be lost */
        char script[65536] = "trap '' USR1;";
        int fail = 0;
        for (int k = 0; k < ncmd && !fail; k++) fail = append_quoted(script, sizeof script, cmd[k]);
        struct stat sb;
        int resume = attempt > 0 && stat(checkpoint, &sb) == 0;
        if (resume && !fail) fail = append_quoted(script, sizeof script, "--resume") ||
                                    append_quoted(script, sizeof script, checkpoint);
        size_t n = strlen(script);
        if (fail || snprintf(script + n, sizeof script - n, "; echo $? > '%s'/rc.$PMI_RANK", dir) >=
                        (int)(sizeof script - n)) {
            fprintf(stderr, "tsr-launch: the command is too long\n");
            return 2;
        }
        for (long r = 0; r < ranks; r++) {
            char rc[PATH_MAX];
            snprintf(rc, sizeof rc, "%s/rc.%ld", dir, r);
            unlink(rc);
        }
        char np[32], restart[32];
        snprintf(np, sizeof np, "%ld", ranks);
        snprintf(restart, sizeof restart, "%ld", attempt);
        setenv("TSR_RESTART", restart, 1);
        fprintf(stderr, "tsr-launch: attempt %ld: %ld rank%s%s\n", attempt + 1, ranks,
                ranks == 1 ? "" : "s", resume ? ", resuming from the checkpoint" : "");
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "tsr-launch: fork: %s\n", strerror(errno));
            return 1;
        }
        if (pid == 0) {
            execlp(mpiexec, mpiexec, "-disable-auto-cleanup", "-n", np, "sh", "-c", script, (char *)NULL);
            fprintf(stderr, "tsr-launch: cannot run %s: %s\n", mpiexec, strerror(errno));
            _exit(127);
        }
        int ws;
        while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {}
        status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
        /* which ranks lived to the end: a status file below 128; a signal or no file: lost */
        long alive = 0, clean = 0, preempted = 0;
        for (long r = 0; r < ranks; r++) {
            char rc[PATH_MAX];
            snprintf(rc, sizeof rc, "%s/rc.%ld", dir, r);
            FILE *f = fopen(rc, "r");
            int code = -1;
            if (f) {
                if (fscanf(f, "%d", &code) != 1) code = -1;
                fclose(f);
                unlink(rc);
            }
            /* 128 + SIGTERM/SIGINT: the rank (tsr-train) stopped on request and saved */
            int stopped = code == 128 + SIGTERM || code == 128 + SIGINT;
            alive += code >= 0 && (code < 128 || stopped);
            clean += code == 0;
            preempted += stopped;
        }
        if (preempted) {
            fprintf(stderr, "tsr-launch: %ld rank%s stopped on request (SIGTERM/SIGINT) and saved "
                            "%s: not restarted\n", preempted, preempted == 1 ? "" : "s", checkpoint);
            break;
        }
        if (clean == ranks && status == 0) {
            rmdir(dir);
            return 0;
        }
        if (alive == ranks) {
            fprintf(stderr, "tsr-launch: the job failed (exit %d) without losing a rank: not "
                            "restarted\n", status);
            break;
        }
        fprintf(stderr, "tsr-launch: %ld of %ld ranks lost (exit %d)\n", ranks - alive, ranks, status);
        if (alive < min_ranks) {
            fprintf(stderr, "tsr-launch: %ld ranks remain, fewer than --min-ranks %ld: stopping\n",
                    alive, min_ranks);
            break;
        }
        if (attempt == max_restarts) {
            fprintf(stderr, "tsr-launch: %ld restarts used (--max-restarts): stopping\n", max_restarts);
            break;
        }
        ranks = alive;
    }
    rmdir(dir);
    return status ? status : 1;
}
