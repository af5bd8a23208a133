/* Timeline events in memory, gathered to rank 0 and written as a Chrome trace JSON array. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "lib/core/timeline.h"

typedef struct tl_event {
    char name[24];
    int track;
    double ts, dur;  /* microseconds */
} tl_event;

struct tsr_timeline {
    tsr_context *ctx;
    char *path;
    int rank;
    double origin;
    tl_event *ev;
    size_t n, cap;
};

static double mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

tsr_status tsr_timeline_create(tsr_context *ctx, const char *path, int rank, tsr_timeline **out) {
    if (!out || !path || !*path)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_timeline_create: %s",
                         out ? "empty path" : "out is NULL");
    *out = NULL;
    tsr_timeline *tl = tsr_calloc(ctx, 1, sizeof *tl);
    size_t len = strlen(path) + 1;
    char *p = tsr_malloc(ctx, len);
    if (!tl || !p) {
        tsr_free(ctx, tl);
        tsr_free(ctx, p);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "timeline");
    }
    memcpy(p, path, len);
    tl->ctx = ctx;
    tl->path = p;
    tl->rank = rank;
    tl->origin = mono_us();
    *out = tl;
    return TSR_OK;
}

double tsr_timeline_now(const tsr_timeline *tl) { return tl ? mono_us() - tl->origin : 0.0; }

tsr_status tsr_timeline_event(tsr_timeline *tl, const char *name, int track, double t0, double t1) {
    if (!tl) return TSR_OK;
    if (tl->n == tl->cap) {
        size_t cap = tl->cap ? 2 * tl->cap : 256;
        tl_event *ev = tsr_malloc(tl->ctx, cap * sizeof *ev);
        if (!ev) return tsr_error(tl->ctx, TSR_ERR_NO_MEMORY, "timeline: %zu events", cap);
        if (tl->n) memcpy(ev, tl->ev, tl->n * sizeof *ev);
        tsr_free(tl->ctx, tl->ev);
        tl->ev = ev;
        tl->cap = cap;
    }
    tl_event *e = &tl->ev[tl->n++];
    tsr_strlcpy(e->name, name, sizeof e->name);
    e->track = track;
    e->ts = t0;
    e->dur = t1 > t0 ? t1 - t0 : 0.0;
    return TSR_OK;
}

size_t tsr_timeline_count(const tsr_timeline *tl) { return tl ? tl->n : 0; }

/* Gathered record: the rank travels with each event. */
typedef struct tl_wire {
    tl_event e;
    int rank;
} tl_wire;

tsr_status tsr_timeline_flush(tsr_timeline *tl, tsr_comm *comm) {
    if (!tl) return TSR_OK;
    tsr_context *ctx = tl->ctx;
    int size = comm ? tsr_comm_size(comm) : 1, me = comm ? tsr_comm_rank(comm) : 0;
    size_t *bytes = tsr_calloc(ctx, (size_t)size, sizeof *bytes);
    size_t *counts = tsr_calloc(ctx, (size_t)size, sizeof *counts);
    tl_wire *mine = tsr_calloc(ctx, tl->n ? tl->n : 1, sizeof *mine), *all = NULL;
    tsr_status s = TSR_OK;
    if (!bytes || !counts || !mine) s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "timeline flush");
    for (size_t i = 0; s == TSR_OK && i < tl->n; i++) {
        mine[i].e = tl->ev[i];
        mine[i].e.ts += tl->origin; /* absolute: the ranks of a node share CLOCK_MONOTONIC */
        mine[i].rank = tl->rank;
    }
    size_t total = tl->n;
    if (s == TSR_OK && comm && size > 1) {
        /* everybody learns everybody's count, then the events travel */
        for (int r = 0; r < size; r++) bytes[r] = sizeof(size_t);
        counts[me] = tl->n;
        size_t mycount = tl->n;
        s = tsr_comm_allgatherv(comm, &mycount, counts, bytes);
        total = 0;
        for (int r = 0; s == TSR_OK && r < size; r++) {
            bytes[r] = counts[r] * sizeof(tl_wire);
            total += counts[r];
        }
        if (s == TSR_OK && !(all = tsr_calloc(ctx, total ? total : 1, sizeof *all)))
            s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "timeline: %zu gathered events", total);
        if (s == TSR_OK) s = tsr_comm_allgatherv(comm, mine, all, bytes);
    }
    if (s == TSR_OK && me == 0) {
        const tl_wire *w = all ? all : mine;
        double t0 = 0.0; /* the trace starts at the earliest event of any rank */
        for (size_t i = 0; i < total; i++)
            if (i == 0 || w[i].e.ts < t0) t0 = w[i].e.ts;
        FILE *f = fopen(tl->path, "w");
        if (!f) {
            s = tsr_error(ctx, TSR_ERR_IO, "timeline: cannot write '%s'", tl->path);
        } else {
            fputs("[\n", f);
            /* track names for the viewers: one process per rank, compute and allreduce tracks */
            int ranks = comm ? size : 1;
            for (int r = 0; r < ranks; r++) {
                int pid = comm ? r : tl->rank;
                fprintf(f, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
                        "\"args\":{\"name\":\"rank %d\"}},\n", pid, pid);
                fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,"
                        "\"args\":{\"name\":\"compute\"}},\n", pid);
                fprintf(f, "{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":1,"
                        "\"args\":{\"name\":\"allreduce\"}}%s\n", pid, total || r + 1 < ranks ? "," : "");
            }
            for (size_t i = 0; i < total; i++)
                fprintf(f, "{\"name\":\"%s\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":%d,"
                        "\"tid\":%d}%s\n", w[i].e.name, w[i].e.ts - t0, w[i].e.dur, w[i].rank,
                        w[i].e.track, i + 1 < total ? "," : "");
            fputs("]\n", f);
            if (fclose(f) != 0) s = tsr_error(ctx, TSR_ERR_IO, "timeline: writing '%s' failed", tl->path);
        }
    }
    tsr_free(ctx, all);
    tsr_free(ctx, mine);
    tsr_free(ctx, counts);
    tsr_free(ctx, bytes);
    return s;
}

void tsr_timeline_free(tsr_timeline *tl) {
    if (!tl) return;
    tsr_free(tl->ctx, tl->ev);
    tsr_free(tl->ctx, tl->path);
    tsr_free(tl->ctx, tl);
}
