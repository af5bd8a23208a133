/* A small fork-join pool for the host backend: the calling thread plus (threads - 1) workers
 * that sleep on a condition variable between jobs (no spinning, so they cost nothing while
 * OpenBLAS or another process has the cores). One pool per host backend; no global state.
 *
 * A job [0, n) is cut into fixed chunks (the cut depends only on n, grain and the thread
 * count, so results never depend on timing). Chunks are claimed from an atomic counter that
 * also carries the job number: the caller starts at once and a worker that wakes late finds
 * nothing left and goes back to sleep, so a busy machine (other processes on the cores)
 * costs at most the chunk a slow thread is running, not a whole share. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include "backends/host/host.h"
#include "lib/core/internal.h"

/* chunks per thread: enough to balance, few enough to keep the claiming cheap */
#define CHUNKS_PER_THREAD 8

typedef struct worker {
    struct tsr_host_pool *pool;
    pthread_t thread;
} worker;

struct tsr_host_pool {
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    int threads;               /* caller + workers that started */
    worker *workers;           /* threads - 1 entries */
    int stop;
    /* the current job, written under mu before `job` changes */
    uint32_t job;
    tsr_host_range_fn fn;
    void *arg;
    size_t n, chunks;
    _Atomic uint64_t next;     /* job << 32 | next chunk to claim */
    _Atomic size_t finished;   /* chunks of the current job completed */
};

static void run_chunk(struct tsr_host_pool *p, tsr_host_range_fn fn, void *arg, size_t n,
                      size_t chunks, size_t c) {
    size_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
    if (lo < hi) fn(arg, lo, hi);
    if (atomic_fetch_add(&p->finished, 1) + 1 == chunks) {
        pthread_mutex_lock(&p->mu); /* under the lock so the caller cannot miss it */
        pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Claims and runs chunks of job `job` until none are left or a newer job started. */
static void work(struct tsr_host_pool *p, uint32_t job, tsr_host_range_fn fn, void *arg,
                 size_t n, size_t chunks) {
    for (;;) {
        uint64_t v = atomic_load(&p->next);
        if ((uint32_t)(v >> 32) != job || (v & 0xFFFFFFFFu) >= chunks) return;
        if (atomic_compare_exchange_weak(&p->next, &v, v + 1))
            run_chunk(p, fn, arg, n, chunks, (size_t)(v & 0xFFFFFFFFu));
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    struct tsr_host_pool *p = w->pool;
    uint32_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->job == seen) pthread_cond_wait(&p->start, &p->mu);
        if (p->stop) break;
        seen = p->job;
        tsr_host_range_fn fn = p->fn;
        void *a = p->arg;
        size_t n = p->n, chunks = p->chunks;
        pthread_mutex_unlock(&p->mu);
        /* the job's arguments stay valid while any of its chunks is unclaimed or running */
        work(p, seen, fn, a, n, chunks);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int tsr_host_threads(int configured, unsigned cores) {
    unsigned t = configured > 0 ? (unsigned)configured : cores;
    return t < 1 ? 1 : t > 64 ? 64 : (int)t;
}

tsr_status tsr_host_pool_create(tsr_context *ctx, int threads, tsr_host_pool **out) {
    *out = NULL;
    if (threads <= 1) return TSR_OK; /* serial: no pool at all */
    struct tsr_host_pool *p = tsr_calloc(ctx, 1, sizeof *p);
    if (!p) return tsr_error(ctx, TSR_ERR_NO_MEMORY, "host thread pool");
    p->workers = tsr_calloc(ctx, (size_t)threads - 1, sizeof *p->workers);
    if (!p->workers) {
        tsr_free(ctx, p);
        return tsr_error(ctx, TSR_ERR_NO_MEMORY, "host thread pool of %d threads", threads);
    }
    atomic_init(&p->next, 0);
    atomic_init(&p->finished, 0);
    int sync = 0;
    if (pthread_mutex_init(&p->mu, NULL) == 0) {
        sync = 1;
        if (pthread_cond_init(&p->start, NULL) == 0) {
            sync = 2;
            if (pthread_cond_init(&p->done, NULL) == 0) sync = 3;
        }
    }
    if (sync < 3) { /* run serially rather than fail */
        if (sync >= 2) pthread_cond_destroy(&p->start);
        if (sync >= 1) pthread_mutex_destroy(&p->mu);
        tsr_free(ctx, p->workers);
        tsr_free(ctx, p);
        tsr_log(ctx, TSR_LOG_WARN, "host backend: no thread pool (synchronisation init failed)");
        return TSR_OK;
    }
    p->threads = 1;
    for (int i = 1; i < threads; i++) {
        worker *w = &p->workers[i - 1];
        w->pool = p;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            tsr_log(ctx, TSR_LOG_WARN, "host backend: started %d of %d threads", p->threads,
                    threads);
            break;
        }
        p->threads++; /* no job can start before create returns */
    }
    *out = p;
    return TSR_OK;
}

void tsr_host_pool_free(tsr_context *ctx, tsr_host_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->start);
    int started = p->threads - 1;
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < started; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->start);
    pthread_mutex_destroy(&p->mu);
    tsr_free(ctx, p->workers);
    tsr_free(ctx, p);
}

void tsr_host_parallel(tsr_backend *be, size_t n, size_t grain, tsr_host_range_fn fn, void *arg) {
    struct tsr_host_pool *p = be->impl ? tsr_host_impl_of(be)->pool : NULL;
    if (!grain) grain = 1;
    if (!p || n < 2 * grain) {
        if (n) fn(arg, 0, n);
        return;
    }
    size_t chunks = n / grain, most = (size_t)p->threads * CHUNKS_PER_THREAD;
    if (chunks > most) chunks = most;
    pthread_mutex_lock(&p->mu);
    uint32_t job = p->job + 1;
    if (job == 0) job = 1; /* 0 is the workers' "nothing seen yet" */
    p->job = job;
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->chunks = chunks;
    atomic_store(&p->finished, 0);
    atomic_store(&p->next, (uint64_t)job << 32);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    work(p, job, fn, arg, n, chunks);
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->finished) < chunks) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
