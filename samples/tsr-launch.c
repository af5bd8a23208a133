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
 * save the step and exit 128 + the signal). Attempt k runs with TSR_RESTART=k in the environment.
 *
 * Preemption: SIGTERM or SIGINT to the launcher goes to every rank that is still running, by
 * the pid each rank's shell records just before it execs the command (mpiexec's own forwarding
 * reaches the ranks' shells and its proxy, and did not stop the job cleanly); the job then ends
 * as stopped, not lost: no restart, exit 128 + the signal. mpiexec runs in a process group of its
 * own, so that a Ctrl-C at the terminal reaches the launcher alone. A second signal is forwarded
 * too (the ranks have their default action back: they end at once) and ends the launcher. A
 * signal the launcher was started with ignored (nohup, a background job's SIGINT) stays ignored.
 * Exit: the last job's status (0 when it finished), 128 + the signal when stopped, 2 on bad
 * usage. */
#include <errno.h>
#include <fcntl.h>
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

/* SIGTERM/SIGINT received (the last one) and how many; SIGCHLD only wakes the wait */
static volatile sig_atomic_t stop_signal, stop_count;
static void on_stop(int sig) {
    stop_signal = sig;
    stop_count++;
}
static void on_child(int sig) { (void)sig; }

/* Sends sig to every rank of the job still running: its pid file exists (the rank's shell wrote
 * it and exec'd the command) and its status file does not yet (it has not ended). The number
 * of ranks signalled. */
static long forward_signal(const char *dir, long ranks, int sig) {
    long sent = 0;
    for (long r = 0; r < ranks; r++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/rc.%ld", dir, r);
        if (access(path, F_OK) == 0) continue;
        snprintf(path, sizeof path, "%s/pid.%ld", dir, r);
        FILE *f = fopen(path, "r");
        long pid = 0;
        if (f) {
            if (fscanf(f, "%ld", &pid) != 1) pid = 0;
            fclose(f);
        }
        if (pid > 1 && kill((pid_t)pid, sig) == 0) sent++;
    }
    return sent;
}

/* Waits for mpiexec (pid), forwarding each SIGTERM/SIGINT to the ranks as it comes; a second
 * one ends the launcher by that signal. TERM, INT and CHLD are blocked outside sigsuspend, so
 * none is missed between the check and the wait. Its wait status. */
static int wait_job(pid_t pid, const char *dir, long ranks, const sigset_t *unblocked) {
    int ws, forwarded = 0;
    for (;;) {
        if (stop_count > forwarded) {
            int sig = stop_signal;
            long sent = forward_signal(dir, ranks, sig);
            fprintf(stderr, "tsr-launch: %s: forwarded to %ld of %ld rank%s%s\n",
                    sig == SIGINT ? "SIGINT" : "SIGTERM", sent, ranks, ranks == 1 ? "" : "s",
                    forwarded ? ", ending at once" : "; they save the step and stop");
            if (forwarded) {
                signal(sig, SIG_DFL);
                sigprocmask(SIG_SETMASK, unblocked, NULL);
                raise(sig);
            }
            forwarded = stop_count;
        }
        pid_t w = waitpid(pid, &ws, WNOHANG);
        if (w == pid) return ws;
        if (w < 0 && errno != EINTR) return 1 << 8; /* not our child: exit 1 */
        if (w == 0) sigsuspend(unblocked);
    }
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
    sigset_t waited, unblocked;
    sigemptyset(&waited);
    sigaddset(&waited, SIGTERM);
    sigaddset(&waited, SIGINT);
    sigaddset(&waited, SIGCHLD);
    sigprocmask(SIG_BLOCK, &waited, &unblocked);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_mask = waited; /* one handler at a time */
    sa.sa_handler = on_stop;
    for (int i = 0; i < 2; i++) { /* one the launcher was started with ignored stays ignored */
        int sig = i ? SIGINT : SIGTERM;
        struct sigaction old;
        if (sigaction(sig, NULL, &old) == 0 && old.sa_handler != SIG_IGN) sigaction(sig, &sa, NULL);
    }
    sa.sa_handler = on_child;
    sigaction(SIGCHLD, &sa, NULL);
    int status = 1;
    for (long attempt = 0; attempt <= max_restarts && !stop_count; attempt++) {
        /* each rank's shell records the rank's exit status: rc.<rank>, and an inner shell the
         * pid of the command, pid.<rank>, as it execs it (the signals go there). It ignores
         * SIGUSR1, which hydra sends the surviving ranks when one dies under
         * -disable-auto-cleanup (MPICH's fault notification; the MPI process itself handles
         * it): the shell would die of it and the rank's status would be lost */
        char script[65536];
        snprintf(script, sizeof script, "trap '' USR1; sh -c 'echo $$ > \"$0\"; exec \"$@\"' "
                                        "'%s'/pid.$PMI_RANK", dir);
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
            snprintf(rc, sizeof rc, "%s/pid.%ld", dir, r);
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
            /* a group of its own (terminal signals are the launcher's to forward), no stdin
             * (a background group reading the terminal would be stopped), signals as before */
            setpgid(0, 0);
            signal(SIGCHLD, SIG_DFL); /* TERM and INT: ours revert at exec, ignored stay so */
            int null = open("/dev/null", O_RDONLY);
            if (null > 0) dup2(null, 0), close(null);
            sigprocmask(SIG_SETMASK, &unblocked, NULL);
            execlp(mpiexec, mpiexec, "-disable-auto-cleanup", "-n", np, "sh", "-c", script, (char *)NULL);
            fprintf(stderr, "tsr-launch: cannot run %s: %s\n", mpiexec, strerror(errno));
            _exit(127);
        }
        int ws = wait_job(pid, dir, ranks, &unblocked);
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
            snprintf(rc, sizeof rc, "%s/pid.%ld", dir, r);
            unlink(rc);
            /* 128 + SIGTERM/SIGINT: the rank (tsr-train) stopped on request and saved */
            int stopped = code == 128 + SIGTERM || code == 128 + SIGINT;
            alive += code >= 0 && (code < 128 || stopped);
            clean += code == 0;
            preempted += stopped;
        }
        if (stop_count) {
            fprintf(stderr, "tsr-launch: stopped by %s, not lost: %ld of %ld rank%s saved %s and "
                            "stopped: not restarted\n", stop_signal == SIGINT ? "SIGINT" : "SIGTERM",
                    preempted, ranks, ranks == 1 ? "" : "s", checkpoint);
            status = 128 + stop_signal;
            break;
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
    return stop_count ? 128 + stop_signal : status ? status : 1;
}
