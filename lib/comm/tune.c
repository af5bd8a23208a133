/* Allreduce tuning: the table `auto` follows (lib/comm/tune.h), its key, file, loading and
 * measurement. */
#include <cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "lib/comm/tune.h"
#include "lib/core/atomic_file.h"

#define TUNE_FORMAT "tessera-allreduce-tune"
#define TUNE_VERSION 1
#define KEY_FIELDS 6
#define TUNE_MARGIN 1.10 /* a winner must beat the built-in choice by 10% */

typedef struct tune_key {
    char value[KEY_FIELDS][256];
} tune_key;

static const char *const key_names[KEY_FIELDS] = {"mpi_library", "ranks", "ranks_per_node",
                                                  "nodes", "host", "cpu"};

int tsr_tune_bucket(size_t bytes) {
    int lg = 0;
    while (lg < 63 && ((size_t)1 << (lg + 1)) <= bytes) lg++;
    if (lg < TSR_TUNE_MIN_LOG2) lg = TSR_TUNE_MIN_LOG2;
    if (lg > TSR_TUNE_MAX_LOG2) lg = TSR_TUNE_MAX_LOG2;
    return lg - TSR_TUNE_MIN_LOG2;
}

static void cpu_model(char *out, size_t size) {
    snprintf(out, size, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(out, size, "%.*s", (int)strcspn(v, "\n"), v);
        break;
    }
    fclose(f);
}

static void make_key(const tsr_comm *comm, tune_key *k) {
    memset(k, 0, sizeof *k);
    snprintf(k->value[0], sizeof k->value[0], "none");
#if TSR_WITH_MPI
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(lib, &len) == MPI_SUCCESS)
        snprintf(k->value[0], sizeof k->value[0], "%.*s", (int)strcspn(lib, "\n"), lib);
#endif
    snprintf(k->value[1], sizeof k->value[1], "%d", comm->size);
    if (comm->uniform) snprintf(k->value[2], sizeof k->value[2], "%d", comm->local_size);
    else snprintf(k->value[2], sizeof k->value[2], "uneven");
    snprintf(k->value[3], sizeof k->value[3], "%d", comm->nodes);
    if (gethostname(k->value[4], sizeof k->value[4] - 1) != 0)
        snprintf(k->value[4], sizeof k->value[4], "unknown");
    cpu_model(k->value[5], sizeof k->value[5]);
}

/* FNV-1a of the key: the file name. */
static uint64_t key_hash(const tune_key *k) {
    uint64_t h = 1469598103934665603ull;
    for (int f = 0; f < KEY_FIELDS; f++) {
        for (const char *p = k->value[f]; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
    }
    return h;
}

static tsr_status key_path(const tsr_comm *comm, const tune_key *k, char *buf, size_t size) {
    const char *dir = tsr_context_cache_dir(comm->ctx);
    if (!dir || !*dir)
        return tsr_error(comm->ctx, TSR_ERR_NOT_FOUND, "allreduce tuning: no cache folder "
                         "(TSR_CACHE_DIR)");
    int n = snprintf(buf, size, "%s/allreduce-%016llx.json", dir,
                     (unsigned long long)key_hash(k));
    if (n < 0 || (size_t)n >= size)
        return tsr_error(comm->ctx, TSR_ERR_INVALID_ARG, "allreduce tuning: path of %d bytes "
                         "exceeds the buffer of %zu", n, size);
    return TSR_OK;
}

tsr_status tsr_comm_tune_path(const tsr_comm *comm, char *buf, size_t size) {
    if (!comm || !buf || !size) return TSR_ERR_INVALID_ARG;
    tune_key k;
    make_key(comm, &k);
    return key_path(comm, &k, buf, size);
}

/* ---- JSON ---- */

#if TSR_WITH_MPI /* written only by tsr_comm_tune */
static char *table_json(const tune_key *k, const tsr_tune_table *t) {
    cJSON *root = cJSON_CreateObject(), *key = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", TUNE_FORMAT);
    cJSON_AddNumberToObject(root, "version", TUNE_VERSION);
    for (int f = 0; f < KEY_FIELDS; f++) cJSON_AddStringToObject(key, key_names[f], k->value[f]);
    cJSON_AddItemToObject(root, "key", key);
    for (int reg = 0; reg < 2; reg++) {
        cJSON *arr = cJSON_CreateArray();
        for (int b = 0; b < TSR_TUNE_BUCKETS; b++) {
            const tsr_tune_entry *e = &t->e[reg][b];
            if (!e->valid) continue;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "bytes", (double)((uint64_t)1 << (b + TSR_TUNE_MIN_LOG2)));
            cJSON_AddStringToObject(o, "algo", tsr_allreduce_algo_name((tsr_allreduce_algo)e->algo));
            cJSON_AddNumberToObject(o, "segment_bytes", (double)e->segment_bytes);
            cJSON_AddNumberToObject(o, "lanes", e->lanes);
            cJSON_AddNumberToObject(o, "busbw_GBps", e->busbw);
            cJSON_AddNumberToObject(o, "mpi_busbw_GBps", e->mpi_busbw);
            cJSON_AddItemToArray(arr, o);
        }
        cJSON_AddItemToObject(root, reg ? "registered" : "private", arr);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    return text;
}
#endif

static int get_num(const cJSON *o, const char *name, double lo, double hi, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) return 0;
    *out = v->valuedouble;
    return 1;
}

/* Parses `text` into t; returns NULL or a short reason it was refused. */
static const char *parse_table(const char *text, const tune_key *k, tsr_tune_table *t,
                               char *why, size_t why_size) {
    memset(t, 0, sizeof *t);
    cJSON *root = cJSON_Parse(text);
    const char *bad = NULL;
    if (!root) return "not valid JSON";
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "version");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(root, "key");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, TUNE_FORMAT) ||
        !cJSON_IsNumber(ver) || ver->valuedouble != TUNE_VERSION || !cJSON_IsObject(key)) {
        bad = "not a version " "1 " TUNE_FORMAT " file";
        goto out;
    }
    for (int f = 0; f < KEY_FIELDS; f++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(key, key_names[f]);
        if (!cJSON_IsString(v) || strcmp(v->valuestring, k->value[f])) {
            snprintf(why, why_size, "measured for another %s ('%s', here '%s')", key_names[f],
                     cJSON_IsString(v) ? v->valuestring : "?", k->value[f]);
            bad = why;
            goto out;
        }
    }
    for (int reg = 0; reg < 2 && !bad; reg++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, reg ? "registered" : "private");
        const cJSON *o;
        if (!cJSON_IsArray(arr)) {
            bad = reg ? "no 'registered' list" : "no 'private' list";
            break;
        }
        cJSON_ArrayForEach(o, arr) {
            double bytes, seg, lanes, bus, mbus;
            tsr_allreduce_algo algo;
            const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "algo");
            if (!get_num(o, "bytes", 4096, (double)((uint64_t)1 << TSR_TUNE_MAX_LOG2), &bytes) ||
                !cJSON_IsString(a) || tsr_allreduce_algo_parse(a->valuestring, &algo) != TSR_OK ||
                algo == TSR_ALLREDUCE_AUTO ||
                !get_num(o, "segment_bytes", 0, (double)((uint64_t)1 << 30), &seg) ||
                (seg != 0 && seg < 4096) ||
                !get_num(o, "lanes", 0, TSR_COMM_MAX_LANES, &lanes) ||
                !get_num(o, "busbw_GBps", 0, 1e6, &bus) ||
                !get_num(o, "mpi_busbw_GBps", 0, 1e6, &mbus)) {
                bad = "an entry with a missing or out-of-range field";
                break;
            }
            tsr_tune_entry *e = &t->e[reg][tsr_tune_bucket((size_t)bytes)];
            e->valid = 1;
            e->algo = (int)algo;
            e->segment_bytes = (uint64_t)seg;
            e->lanes = (int)lanes;
            e->busbw = bus;
            e->mpi_busbw = mbus;
        }
    }
out:
    cJSON_Delete(root);
    if (bad) memset(t, 0, sizeof *t);
    return bad;
}

/* A refused table is measured again, over this many bytes at most (the quick set): its file
 * says tuning was asked for on this key, so `auto` should not fall back for good. */
#define REMEASURE_MAX_BYTES ((size_t)1 << 20)

/* Rank 0's side of loading: 1 and t filled when a valid table of key k is there, 0 when there
 * is none, -1 when there is one that cannot be used (corrupt, another key's, unreadable). */
static int read_table(tsr_comm *comm, const tune_key *k, tsr_tune_table *t) {
    char path[1024];
    memset(t, 0, sizeof *t);
    if (key_path(comm, k, path, sizeof path) != TSR_OK) return 0;
    FILE *f = fopen(path, "rb");
    if (!f) return 0; /* none yet: the built-in rules */
    char *text = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len >= 0 && len < (1 << 20) && fseek(f, 0, SEEK_SET) == 0 &&
        (text = malloc((size_t)len + 1)) != NULL) {
        if (fread(text, 1, (size_t)len, f) != (size_t)len) len = -1;
        text[len < 0 ? 0 : len] = '\0';
    }
    fclose(f);
    char why[700];
    const char *bad = !text ? "unreadable or over 1 MiB" : len < 0 ? "read failed"
                            : parse_table(text, k, t, why, sizeof why);
    free(text);
    if (bad) {
        tsr_log(comm->ctx, TSR_LOG_WARN, "allreduce tuning table %s ignored: %s; measuring it "
                "again (quick: 4 KiB .. 1 MiB; tsr-allreduce-bench --tune measures every size)",
                path, bad);
        return -1;
    }
    return 1;
}

#if TSR_WITH_MPI
/* Rank 0's table (or none) to every rank. */
static tsr_status bcast_table(tsr_comm *comm, tsr_tune_table *t, int *have) {
    MPI_Request rq;
    int rc = MPI_Ibcast(have, 1, MPI_INT, 0, comm->mc, &rq);
    if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(comm->ctx, rc, "MPI_Ibcast(tuning)");
    TSR_TRY(tsr_comm_mpi_poll(comm, &rq, "broadcast of the tuning table"));
    if (*have <= 0) return TSR_OK;
    rc = MPI_Ibcast(t, (int)sizeof *t, MPI_BYTE, 0, comm->mc, &rq);
    if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(comm->ctx, rc, "MPI_Ibcast(tuning)");
    return tsr_comm_mpi_poll(comm, &rq, "broadcast of the tuning table");
}
#endif

static tsr_status install(tsr_comm *comm, const tsr_tune_table *t) {
    if (!comm->tune) {
        comm->tune = tsr_malloc(comm->ctx, sizeof *comm->tune);
        if (!comm->tune)
            return tsr_error(comm->ctx, TSR_ERR_NO_MEMORY, "allreduce tuning: no memory");
    }
    *comm->tune = *t;
    return TSR_OK;
}

#if TSR_WITH_MPI
/* A refused table is measured again when every rank is free to (no allreduce of this
 * communicator in flight anywhere: the measurement's own calls would interleave with it). */
static tsr_status remeasure(tsr_comm *comm) {
    int busy = comm->nactive > 0, any = 0;
    MPI_Request rq;
    int rc = MPI_Iallreduce(&busy, &any, 1, MPI_INT, MPI_MAX, comm->mc, &rq);
    if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(comm->ctx, rc, "MPI_Iallreduce(tuning)");
    TSR_TRY(tsr_comm_mpi_poll(comm, &rq, "agreement to measure the tuning table again"));
    if (any) {
        if (comm->rank == 0)
            tsr_log(comm->ctx, TSR_LOG_WARN, "allreduce tuning: not measured now (allreduces "
                    "in flight); auto uses its built-in rules");
        return TSR_OK;
    }
    tsr_status s = tsr_comm_tune(comm, 1, REMEASURE_MAX_BYTES);
    if (s != TSR_OK && comm->tune) { /* measured and installed; only rank 0's save failed */
        tsr_log(comm->ctx, TSR_LOG_WARN, "allreduce tuning: the new measurement is used but "
                "was not saved: %s", tsr_context_last_error(comm->ctx));
        s = TSR_OK;
    }
    return s;
}
#endif

tsr_status tsr_comm_tune_load(tsr_comm *comm) {
    if (!comm) return TSR_ERR_INVALID_ARG;
    comm->tune_loaded = 1;
    tsr_free(comm->ctx, comm->tune);
    comm->tune = NULL;
    if (comm->size == 1) return TSR_OK; /* one rank: nothing moves, nothing to choose */
    tsr_tune_table *t = tsr_calloc(comm->ctx, 1, sizeof *t);
    if (!t) return tsr_error(comm->ctx, TSR_ERR_NO_MEMORY, "allreduce tuning: no memory");
    int have = 0; /* read_table's answer on rank 0 */
    tsr_status s = TSR_OK;
    if (comm->rank == 0) {
        tune_key k;
        make_key(comm, &k);
        have = read_table(comm, &k, t);
    }
#if TSR_WITH_MPI
    if (comm->is_mpi) s = bcast_table(comm, t, &have);
#endif
    if (s == TSR_OK && have > 0) s = install(comm, t);
    tsr_free(comm->ctx, t);
#if TSR_WITH_MPI
    if (s == TSR_OK && have < 0 && comm->is_mpi) s = remeasure(comm);
#endif
    return s;
}

tsr_status tsr_tune_ensure(tsr_comm *comm) {
    return comm->tune_loaded ? TSR_OK : tsr_comm_tune_load(comm);
}

/* ---- measurement ---- */

#if TSR_WITH_MPI
typedef struct candidate {
    tsr_allreduce_algo algo;
    size_t segment_bytes;
    int lanes;
} candidate;

static const candidate full_set[] = {
    {TSR_ALLREDUCE_MPI, 0, 0},
    {TSR_ALLREDUCE_SHM, 0, 0},           {TSR_ALLREDUCE_SHM, 256u << 10, 0},
    {TSR_ALLREDUCE_SHM, 1u << 20, 0},    {TSR_ALLREDUCE_RING, 64u << 10, 1},
    {TSR_ALLREDUCE_RING, 64u << 10, 4},  {TSR_ALLREDUCE_RING, 64u << 10, 16},
    {TSR_ALLREDUCE_RING, 256u << 10, 1}, {TSR_ALLREDUCE_RING, 256u << 10, 4},
    {TSR_ALLREDUCE_RING, 256u << 10, 16}, {TSR_ALLREDUCE_RING, 1u << 20, 1},
    {TSR_ALLREDUCE_RING, 1u << 20, 4},   {TSR_ALLREDUCE_RING, 1u << 20, 16},
    {TSR_ALLREDUCE_RHD, 256u << 10, 8},  {TSR_ALLREDUCE_RHD, 1u << 20, 8},
};
static const candidate quick_set[] = {
    {TSR_ALLREDUCE_MPI, 0, 0},           {TSR_ALLREDUCE_SHM, 0, 0},
    {TSR_ALLREDUCE_RING, 256u << 10, 1}, {TSR_ALLREDUCE_RING, 256u << 10, 16},
    {TSR_ALLREDUCE_RHD, 256u << 10, 8},
};
#define MAX_CANDIDATES 16
#define MAX_CALLS 40

static void fill(float *x, size_t n, int rank) {
    for (size_t i = 0; i < n; i++) x[i] = (float)((int)(i & 63) - 32) * (float)(rank + 1);
}

static int exact(const float *x, size_t n, int size) {
    float k = (float)size * (float)(size + 1) / 2.0f;
    for (size_t i = 0; i < n; i++)
        if (x[i] != (float)((int)(i & 63) - 32) * k) return 0;
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Times every candidate on `bytes` in buf, taking turns call by call; fills busbw[] (the
 * median over calls of the slowest rank's time; 0 for a candidate that failed or was wrong,
 * the same on every rank). */
static tsr_status measure(tsr_comm *comm, float *buf, size_t bytes, const candidate *cand,
                          int ncand, int calls, double *busbw) {
    static double times[MAX_CANDIDATES][MAX_CALLS];
    int ok[MAX_CANDIDATES];
    size_t count = bytes / sizeof(float);
    for (int c = 0; c < ncand; c++) ok[c] = 1;
    for (int it = -1; it < calls; it++) { /* -1: warm-up, not timed */
        for (int c = 0; c < ncand; c++) {
            tsr_allreduce_opts o;
            tsr_allreduce_opts_init(&o);
            o.algo = cand[c].algo;
            o.segment_bytes = cand[c].segment_bytes;
            o.lanes = cand[c].lanes;
            fill(buf, count, comm->rank);
            TSR_TRY(tsr_comm_barrier(comm));
            double t0 = MPI_Wtime();
            tsr_status s = tsr_comm_allreduce(comm, buf, count, &o);
            double t = MPI_Wtime() - t0, slowest = t;
            if (s == TSR_ERR_PEER_LOST) return s;
            int good = s == TSR_OK && exact(buf, count, comm->size), all;
            double pair[2] = {t, (double)!good}, red[2];
            int rc = MPI_Allreduce(pair, red, 2, MPI_DOUBLE, MPI_MAX, comm->mc);
            if (rc != MPI_SUCCESS) return tsr_comm_mpi_error(comm->ctx, rc, "MPI_Allreduce(tune)");
            slowest = red[0];
            all = red[1] == 0.0;
            if (!all) ok[c] = 0;
            if (it >= 0) times[c][it] = slowest;
        }
    }
    for (int c = 0; c < ncand; c++) {
        qsort(times[c], (size_t)calls, sizeof(double), cmp_double);
        double med = calls % 2 ? times[c][calls / 2]
                               : 0.5 * (times[c][calls / 2 - 1] + times[c][calls / 2]);
        double algbw = med > 0 ? (double)bytes / med / 1e9 : 0.0;
        busbw[c] = ok[c] ? algbw * 2.0 * (comm->size - 1) / comm->size : 0.0;
    }
    return TSR_OK;
}
#endif

tsr_status tsr_comm_tune(tsr_comm *comm, int quick, size_t max_bytes) {
    if (!comm) return TSR_ERR_INVALID_ARG;
#if TSR_WITH_MPI
    tsr_context *ctx = comm->ctx;
    if (!comm->is_mpi || comm->size < 2)
        return tsr_error(ctx, TSR_ERR_UNSUPPORTED, "allreduce tuning needs an MPI communicator "
                         "of more than one rank (this one has %d)", comm->size);
    size_t top = (size_t)1 << TSR_TUNE_MAX_LOG2;
    if (max_bytes == 0) max_bytes = top;
    if (quick && max_bytes > ((size_t)1 << 20)) max_bytes = (size_t)1 << 20;
    if (max_bytes < 4096 || max_bytes > top)
        return tsr_error(ctx, TSR_ERR_INVALID_ARG, "allreduce tuning: max_bytes %zu is outside "
                         "4096 .. %zu", max_bytes, top);
    const candidate *cand = quick ? quick_set : full_set;
    int ncand = quick ? (int)TSR_ARRAY_SIZE(quick_set) : (int)TSR_ARRAY_SIZE(full_set);
    /* largest power of two <= max_bytes */
    size_t last = (size_t)1 << (tsr_tune_bucket(max_bytes) + TSR_TUNE_MIN_LOG2);
    float *priv = NULL, *reg = NULL;
    tsr_tune_table *t = tsr_calloc(ctx, 1, sizeof *t);
    tsr_status s = TSR_OK;
    if (!t || posix_memalign((void **)&priv, 64, last) != 0) {
        priv = NULL;
        s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "allreduce tuning: %zu bytes", last);
    }
    /* collective: every rank allocates (an error on one rank shows in the measurement) */
    tsr_status sr = tsr_comm_alloc(comm, last, (void **)&reg);
    if (s == TSR_OK) s = sr;
    int fail = s != TSR_OK, any;
    MPI_Allreduce(&fail, &any, 1, MPI_INT, MPI_MAX, comm->mc);
    if (any && s == TSR_OK)
        s = tsr_error(ctx, TSR_ERR_NO_MEMORY, "allreduce tuning: another rank could not "
                      "allocate %zu bytes", last);
    double busbw[MAX_CANDIDATES];
    for (size_t bytes = 4096; s == TSR_OK && bytes <= last; bytes *= quick ? 4 : 2) {
        /* about 32 MiB per candidate and size (16 MiB quick), 3 to MAX_CALLS calls */
        size_t budget = ((size_t)(quick ? 16 : 32) << 20) / bytes;
        int calls = budget > (size_t)(quick ? 9 : MAX_CALLS) ? (quick ? 9 : MAX_CALLS)
                    : budget < 3 ? 3 : (int)budget;
        for (int r = 0; r < 2 && s == TSR_OK; r++) {
            s = measure(comm, r ? reg : priv, bytes, cand, ncand, calls, busbw);
            if (s != TSR_OK) break;
            int best = -1, builtin = -1;
            tsr_allreduce_algo rule = tsr_comm_builtin_algo(comm, bytes / sizeof(float));
            for (int c = 0; c < ncand; c++) {
                if (busbw[c] > 0 && (best < 0 || busbw[c] > busbw[best])) best = c;
                if (cand[c].algo == rule && !cand[c].segment_bytes && !cand[c].lanes) builtin = c;
            }
            if (best < 0) continue; /* nothing exact: leave the built-in rule */
            /* On a busy machine the order of close candidates is noise: the built-in choice
             * keeps its place unless another beats it by TUNE_MARGIN. */
            if (builtin >= 0 && busbw[builtin] > 0 && busbw[best] < TUNE_MARGIN * busbw[builtin])
                best = builtin;
            tsr_tune_entry *e = &t->e[r][tsr_tune_bucket(bytes)];
            e->valid = 1;
            e->algo = (int)cand[best].algo;
            e->segment_bytes = cand[best].segment_bytes;
            e->lanes = cand[best].lanes;
            e->busbw = busbw[best];
            e->mpi_busbw = busbw[0]; /* candidate 0 is MPI_Allreduce */
        }
    }
    if (reg) tsr_comm_free_mem(comm, reg);
    free(priv);
    if (s == TSR_OK) {
        /* rank 0 decides: its table is the one every rank installs and the one saved */
        int have = 1;
        s = bcast_table(comm, t, &have);
    }
    if (s == TSR_OK) s = install(comm, t);
    if (s == TSR_OK) comm->tune_loaded = 1;
    tsr_status saved = TSR_OK;
    if (s == TSR_OK && comm->rank == 0) {
        tune_key k;
        char path[1024];
        make_key(comm, &k);
        saved = key_path(comm, &k, path, sizeof path);
        char *text = saved == TSR_OK ? table_json(&k, t) : NULL;
        if (saved == TSR_OK && !text)
            saved = tsr_error(ctx, TSR_ERR_NO_MEMORY, "allreduce tuning: no memory for JSON");
        if (text) saved = tsr_atomic_write_file(ctx, path, text, strlen(text));
        cJSON_free(text);
    }
    tsr_free(ctx, t);
    return s != TSR_OK ? s : saved;
#else
    (void)quick;
    (void)max_bytes;
    return tsr_error(comm->ctx, TSR_ERR_UNSUPPORTED, "allreduce tuning needs MPI (WITH_MPI=0)");
#endif
}
