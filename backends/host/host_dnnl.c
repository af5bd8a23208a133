/* oneDNN (libdnnl) on the host: the engine the host backend keeps, and bf16 GEMMs through its
 * matmul primitive (the direct convolutions are in host_conv.c). bf16 operands, float32
 * accumulation and output, alpha as an output scale and beta as a sum post-op, so one call is a
 * BLAS GEMM. On a CPU with bf16 dot products (AVX512_BF16, AMX) oneDNN's brgemm kernels run at
 * about twice OpenBLAS's SGEMM rate (`tsr-gemm-bench --precision bf16` shows both); elsewhere
 * this module says it is not usable and bf16 GEMMs round their inputs and call SGEMM.
 * Float32 GEMMs can run oneDNN's dnnl_sgemm instead of OpenBLAS (tsr_host_sgemm decides per
 * backend and shape; `TSR_HOST_SGEMM=openblas|onednn` picks one for a comparison).
 *
 * Threading: the host backend's pool splits a GEMM into parts and each part is one
 * single-threaded matmul on the thread that runs it (Debian's oneDNN runs on OpenMP; one
 * OpenMP thread per caller keeps its team from competing with the pool for the cores).
 * Primitives come from oneDNN's own primitive cache, keyed by shape: a training run's few
 * dozen shapes are built (JIT) once each. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "backends/host/host.h"
#include "lib/core/internal.h"

#if TSR_WITH_DNNL
#include <omp.h>
#include <stdlib.h>
#include "backends/host/host_dnnl.h"

struct tsr_host_dnnl {
    dnnl_engine_t engine;
    int bf16;      /* bf16 GEMMs worth running here */
    char impl[64]; /* the implementation oneDNN picked for a bf16 probe ("brg:avx512_core_bf16") */
};

dnnl_engine_t tsr_host_dnnl_engine(const tsr_host_dnnl *h) { return h->engine; }

dnnl_status_t tsr_host_dnnl_attr(dnnl_primitive_attr_t *attr) {
    dnnl_status_t s = dnnl_primitive_attr_create(attr);
    if (!s) s = dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user);
    return s;
}

dnnl_status_t tsr_host_dnnl_run(dnnl_engine_t engine, dnnl_stream_t st, dnnl_primitive_t p, int n,
                                const dnnl_exec_arg_t *args) {
    const_dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t s = dnnl_primitive_get_primitive_desc(p, &pd);
    const dnnl_memory_desc_t *smd = s ? NULL : dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t bytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    void *buf = bytes ? malloc(bytes) : NULL;
    dnnl_memory_t sm = NULL;
    dnnl_exec_arg_t all[8];
    if (!s && (n > 7 || (bytes && !buf))) s = dnnl_out_of_memory;
    if (!s && bytes) s = dnnl_memory_create(&sm, smd, engine, buf);
    if (!s) {
        memcpy(all, args, (size_t)n * sizeof *all);
        if (sm) all[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, sm};
        s = dnnl_primitive_execute(p, st, n, all);
    }
    if (!s) s = dnnl_stream_wait(st);
    dnnl_memory_destroy(sm);
    free(buf);
    return s;
}

/* One matmul descriptor + attributes for C = alpha op(A) op(B) + beta C with the given strides
 * (row-major, a transposed operand is a stride swap). */
static dnnl_status_t make_primitive(dnnl_engine_t engine, int ta, int tb, size_t m, size_t n,
                                    size_t k, float alpha, size_t lda, size_t ldb, float beta,
                                    size_t ldc, dnnl_primitive_t *out, char *impl, size_t impl_size) {
    dnnl_memory_desc_t a, b, c;
    dnnl_dims_t da = {(dnnl_dim_t)m, (dnnl_dim_t)k}, db = {(dnnl_dim_t)k, (dnnl_dim_t)n},
                dc = {(dnnl_dim_t)m, (dnnl_dim_t)n};
    dnnl_dims_t sa = {ta ? 1 : (dnnl_dim_t)lda, ta ? (dnnl_dim_t)lda : 1};
    dnnl_dims_t sb = {tb ? 1 : (dnnl_dim_t)ldb, tb ? (dnnl_dim_t)ldb : 1};
    dnnl_dims_t sc = {(dnnl_dim_t)ldc, 1};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_strides(&a, 2, da, dnnl_bf16, sa)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_strides(&b, 2, db, dnnl_bf16, sb)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_strides(&c, 2, dc, dnnl_f32, sc)) != dnnl_success)
        return s;
    dnnl_matmul_desc_t md;
    if ((s = dnnl_matmul_desc_init(&md, &a, &b, NULL, &c)) != dnnl_success) return s;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    s = tsr_host_dnnl_attr(&attr);
    if (s == dnnl_success && alpha != 1.0f) s = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha);
    if (s == dnnl_success && beta != 0.0f) {
        s = dnnl_post_ops_create(&ops);
        if (s == dnnl_success) s = dnnl_post_ops_append_sum(ops, beta);
        if (s == dnnl_success) s = dnnl_primitive_attr_set_post_ops(attr, ops);
    }
    if (s == dnnl_success) s = dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL);
    if (s == dnnl_success && impl) {
        const char *name = NULL;
        if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success && name)
            snprintf(impl, impl_size, "%s", name);
    }
    if (s == dnnl_success) s = dnnl_primitive_create(out, pd);
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(ops);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

tsr_host_dnnl *tsr_host_dnnl_open(tsr_context *ctx) {
    tsr_host_dnnl *h = tsr_calloc(ctx, 1, sizeof *h);
    if (!h) return NULL;
    if (dnnl_engine_create(&h->engine, dnnl_cpu, 0) != dnnl_success) {
        tsr_log(ctx, TSR_LOG_WARN, "host: oneDNN's CPU engine could not be created: im2col "
                "convolutions and SGEMM-based bf16 GEMMs instead");
        tsr_free(ctx, h);
        return NULL;
    }
    /* bf16 dot products in hardware; below that oneDNN emulates them, slower than SGEMM */
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    dnnl_primitive_t probe = NULL;
    if ((isa & dnnl_cpu_isa_avx512_core_bf16) != dnnl_cpu_isa_avx512_core_bf16)
        tsr_log(ctx, TSR_LOG_DEBUG, "host: no bf16 dot products on this CPU: bf16 GEMMs round and "
                "call SGEMM");
    else if (make_primitive(h->engine, 0, 0, 64, 64, 64, 1.0f, 64, 64, 0.0f, 64, &probe, h->impl,
                            sizeof h->impl) != dnnl_success || !strncmp(h->impl, "ref", 3))
        /* a reference loop is no faster than rounding + SGEMM */
        tsr_log(ctx, TSR_LOG_DEBUG, "host: oneDNN bf16 matmul unavailable (%s)",
                h->impl[0] ? h->impl : "primitive creation failed");
    else
        h->bf16 = 1;
    dnnl_primitive_destroy(probe);
    return h;
}

void tsr_host_dnnl_close(tsr_context *ctx, tsr_host_dnnl *h) {
    if (!h) return;
    if (h->engine) dnnl_engine_destroy(h->engine);
    tsr_free(ctx, h);
}

const char *tsr_host_dnnl_bf16(const tsr_host_dnnl *h) { return h && h->bf16 ? h->impl : NULL; }

int tsr_host_dnnl_gemm_bf16(tsr_host_dnnl *h, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                       const uint16_t *a, size_t lda, const uint16_t *b, size_t ldb, float beta,
                       float *c, size_t ldc) {
    if (!m || !n) return 0;
    int omp_was = omp_get_max_threads(); /* this thread's OpenMP setting, the application's */
    omp_set_num_threads(1);                /* one thread: the pool already split the GEMM */
    dnnl_primitive_t p = NULL;
    dnnl_stream_t st = NULL;
    dnnl_memory_t mem[3] = {NULL, NULL, NULL};
    dnnl_status_t s = make_primitive(h->engine, ta, tb, m, n, k, alpha, lda, ldb, beta, ldc, &p, NULL, 0);
    const_dnnl_primitive_desc_t pd = NULL;
    if (s == dnnl_success) s = dnnl_primitive_get_primitive_desc(p, &pd);
    static const int which[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
    static const dnnl_query_t query[3] = {dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_dst_md};
    void *data[3] = {(void *)a, (void *)b, c};
    dnnl_exec_arg_t args[3];
    for (int i = 0; i < 3 && s == dnnl_success; i++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, query[i], 0);
        s = md ? dnnl_memory_create(&mem[i], md, h->engine, data[i]) : dnnl_invalid_arguments;
        args[i] = (dnnl_exec_arg_t){which[i], mem[i]};
    }
    if (s == dnnl_success) s = dnnl_stream_create(&st, h->engine, dnnl_stream_default_flags);
    if (s == dnnl_success) s = tsr_host_dnnl_run(h->engine, st, p, 3, args);
    dnnl_stream_destroy(st);
    for (int i = 0; i < 3; i++) dnnl_memory_destroy(mem[i]);
    dnnl_primitive_destroy(p);
    omp_set_num_threads(omp_was);
    return s == dnnl_success ? 0 : (int)s;
}

/* oneDNN's SGEMM is its JIT GEMM (the kernels under its inner products), on the caller's one
 * OpenMP thread like the rest of this module. */
int tsr_host_dnnl_sgemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                        size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    int omp_was = omp_get_max_threads();
    omp_set_num_threads(1);
    dnnl_status_t s = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', (dnnl_dim_t)m, (dnnl_dim_t)n, (dnnl_dim_t)k,
                                 alpha, a, (dnnl_dim_t)lda, b, (dnnl_dim_t)ldb, beta, c, (dnnl_dim_t)ldc);
    omp_set_num_threads(omp_was);
    return (int)s;
}

/* Only when asked for (AUTO is OpenBLAS). Measured on a 2-core AMD EPYC (Zen, AVX2), one thread
 * each: oneDNN 1.0-2x OpenBLAS 0.3.21 at the shapes of training wider than 32 columns (the
 * cnn's 64-row GEMMs, 64-deep weight gradients, attention's 64 x 64 x 64), equal at 1024^3; the
 * cnn trained 5% faster. Not the default: in tests/fault/gossip-train-kill.sh (MPICH over UCX, a
 * peer SIGKILLed mid-exchange) the survivors corrupted their heap in 6 of 12 runs with oneDNN's
 * SGEMM and in none of 14 with OpenBLAS's, none of 6 with oneDNN and UCX_MEM_EVENTS=no; later 3
 * of 24 (10 of 24 with one host thread) against none of 24 with OpenBLAS. Not understood: an
 * ASan build hid it (0 of 6), valgrind finds no invalid write in a run without a fault, and
 * glibc's mmap threshold raised to 1 GiB (no munmap of oneDNN's per-call buffers) still failed
 * (a segfault inside oneDNN). */
int tsr_host_dnnl_sgemm_wanted(int want, const char **why) {
    *why = NULL;
    return want == TSR_HOST_SGEMM_ONEDNN;
}

#else /* built without oneDNN (WITH_DNNL=0, the cross and minimal ports) */

int tsr_host_dnnl_sgemm(int ta, int tb, size_t m, size_t n, size_t k, float alpha, const float *a,
                        size_t lda, const float *b, size_t ldb, float beta, float *c, size_t ldc) {
    (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b, (void)ldb,
        (void)beta, (void)c, (void)ldc;
    return -1;
}
int tsr_host_dnnl_sgemm_wanted(int want, const char **why) {
    *why = want == TSR_HOST_SGEMM_ONEDNN ? "this build has no oneDNN (WITH_DNNL=0)" : NULL;
    return 0;
}

tsr_host_dnnl *tsr_host_dnnl_open(tsr_context *ctx) {
    (void)ctx;
    return NULL;
}
void tsr_host_dnnl_close(tsr_context *ctx, tsr_host_dnnl *h) { (void)ctx, (void)h; }
const char *tsr_host_dnnl_bf16(const tsr_host_dnnl *h) {
    (void)h;
    return NULL;
}
int tsr_host_dnnl_gemm_bf16(tsr_host_dnnl *h, int ta, int tb, size_t m, size_t n, size_t k, float alpha,
                            const uint16_t *a, size_t lda, const uint16_t *b, size_t ldb, float beta,
                            float *c, size_t ldc) {
    (void)h, (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)a, (void)lda, (void)b,
        (void)ldb, (void)beta, (void)c, (void)ldc;
    return -1;
}
#endif
