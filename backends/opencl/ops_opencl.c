/* OpenCL backend operations: kernel arguments + one enqueue each (no per-call builds, no
 * clFinish), GEMM through CLBlast. The checked wrappers of backend.c have validated ranges. */
#include "backends/opencl/opencl.h" /* first: it sets CL_TARGET_OPENCL_VERSION */
#include <clblast_c.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"

static const char *const knames[TSR_CL_K_COUNT] = {
#define TSR_CL_NAME(name) #name,
    TSR_CL_KERNEL_LIST(TSR_CL_NAME)
#undef TSR_CL_NAME
};

/* Accumulates kernel arguments; the first failure is kept and reported at launch. */
typedef struct kargs {
    tsr_backend *be;
    tsr_cl *cl;
    int k;
    cl_uint n;
    cl_uint bad_index;
    cl_int err;
} kargs;

static kargs args_begin(tsr_backend *be, int k) {
    kargs a = {be, be->impl, k, 0, 0, CL_SUCCESS};
    return a;
}

static void arg(kargs *a, size_t size, const void *value) {
    if (a->err == CL_SUCCESS) {
        a->err = clSetKernelArg(a->cl->kernels[a->k], a->n, size, value);
        if (a->err != CL_SUCCESS) a->bad_index = a->n;
    }
    a->n++;
}
static void arg_u64(kargs *a, size_t v) {
    cl_ulong u = v;
    arg(a, sizeof u, &u);
}
static void arg_f32(kargs *a, float v) {
    cl_float f = v;
    arg(a, sizeof f, &f);
}
static void arg_i32(kargs *a, int v) {
    cl_int i = v;
    arg(a, sizeof i, &i);
}
static void arg_mem(kargs *a, cl_mem m) { arg(a, sizeof m, &m); }
/* A tensor operand: its buffer and its element offset. */
static void arg_ref(kargs *a, tsr_ref r) {
    arg_mem(a, (cl_mem)r.buf->impl);
    arg_u64(a, r.off);
}
static void arg_local(kargs *a, size_t bytes) { arg(a, bytes, NULL); }

/* Enqueues the kernel of `a` over `global` items in groups of `local` (dims 1 or 2). */
static tsr_status enqueue(kargs *a, cl_uint dims, const size_t *global, const size_t *local) {
    char call[96];
    if (a->err != CL_SUCCESS) {
        snprintf(call, sizeof call, "clSetKernelArg(%s, %u)", knames[a->k], a->bad_index);
        return tsr_opencl_error(a->be->ctx, a->err, call);
    }
    cl_int err = clEnqueueNDRangeKernel(a->cl->queue, a->cl->kernels[a->k], dims, NULL, global,
                                        local, 0, NULL, NULL);
    if (err == CL_SUCCESS) return TSR_OK;
    snprintf(call, sizeof call, "clEnqueueNDRangeKernel(%s)", knames[a->k]);
    return tsr_opencl_error(a->be->ctx, err, call);
}

/* Enqueues a 1-D range of `items` work-items (rounded up to the kernel's local size);
 * `groups` > 0 launches exactly that many work-groups instead. */
static tsr_status launch(kargs *a, size_t items, size_t groups) {
    size_t local = a->cl->wg[a->k];
    size_t global = groups ? groups * local : (items + local - 1) / local * local;
    return enqueue(a, 1, &global, &local);
}

/* Enqueues a 2-D range: dimension 0 (`inner`, contiguous) in groups of up to the kernel's
 * local size, rounded to whole warps; dimension 1 (`outer`) one row per group. */
static tsr_status launch2d(kargs *a, size_t inner, size_t outer) {
    size_t wg = a->cl->wg[a->k], l0 = (inner + 31) / 32 * 32;
    if (l0 > wg) l0 = wg;
    size_t local[2] = {l0, 1};
    size_t global[2] = {(inner + l0 - 1) / l0 * l0, outer};
    return enqueue(a, 2, global, local);
}

/* Local size of a one-group-per-row reduction kernel over rows of `cols`: the smallest power
 * of two that covers the row, at most the kernel's (power-of-two) local size. */
static size_t row_group(tsr_backend *be, int k, size_t cols) {
    size_t wg = ((tsr_cl *)be->impl)->wg[k], l = 1;
    while (l < cols && l < wg) l *= 2;
    return l;
}

/* Enqueues `rows` work-groups of `local` items (from row_group). */
static tsr_status launch_rows(kargs *a, size_t rows, size_t local) {
    size_t global = rows * local;
    return enqueue(a, 1, &global, &local);
}

/* ---- BLAS ---- */

static const char *clblast_name(CLBlastStatusCode s) {
    switch (s) {
    case CLBlastNotImplemented: return "kNotImplemented";
    case CLBlastInvalidMatrixA: return "kInvalidMatrixA";
    case CLBlastInvalidMatrixB: return "kInvalidMatrixB";
    case CLBlastInvalidMatrixC: return "kInvalidMatrixC";
    case CLBlastInvalidVectorX: return "kInvalidVectorX";
    case CLBlastInvalidVectorY: return "kInvalidVectorY";
    case CLBlastInvalidDimension: return "kInvalidDimension";
    case CLBlastInvalidLeadDimA: return "kInvalidLeadDimA";
    case CLBlastInvalidLeadDimB: return "kInvalidLeadDimB";
    case CLBlastInvalidLeadDimC: return "kInvalidLeadDimC";
    case CLBlastInvalidIncrementX: return "kInvalidIncrementX";
    case CLBlastInvalidIncrementY: return "kInvalidIncrementY";
    case CLBlastInsufficientMemoryA: return "kInsufficientMemoryA";
    case CLBlastInsufficientMemoryB: return "kInsufficientMemoryB";
    case CLBlastInsufficientMemoryC: return "kInsufficientMemoryC";
    case CLBlastInvalidBatchCount: return "kInvalidBatchCount";
    case CLBlastInvalidLocalMemUsage: return "kInvalidLocalMemUsage";
    case CLBlastNoHalfPrecision: return "kNoHalfPrecision";
    case CLBlastNoDoublePrecision: return "kNoDoublePrecision";
    case CLBlastInvalidVectorScalar: return "kInvalidVectorScalar";
    case CLBlastInsufficientMemoryScalar: return "kInsufficientMemoryScalar";
    case CLBlastDatabaseError: return "kDatabaseError";
    case CLBlastUnknownError: return "kUnknownError";
    case CLBlastUnexpectedError: return "kUnexpectedError";
    default: return "unknown";
    }
}

/* CLBlast codes in -1..-68 are OpenCL's own and pass through; the rest are TSR_ERR_CLBLAST. */
static tsr_status clblast_status(tsr_backend *be, CLBlastStatusCode s, const char *call) {
    if (s == CLBlastSuccess) return TSR_OK;
    if ((int)s <= -1 && (int)s >= -68) return tsr_opencl_error(be->ctx, (cl_int)s, call);
    return tsr_error(be->ctx, TSR_ERR_CLBLAST, "%s on %s: CLBlast status %d (%s)", call,
                     be->device.name, (int)s, clblast_name(s));
}

/* TSR_CLBLAST_PARAMS="Kernel:NAME=V,NAME=V,...;Kernel:..." overrides CLBlast's tuning for
 * this device in single precision (CLBlast 1.5.3 has no Hopper entry: 128x128 Xgemm tiles
 * took H100 SGEMM from 32.8 to 41.1 TFLOP/s). CLBlast keeps overrides per device for the
 * whole process. A malformed value is TSR_ERR_PARSE; a set CLBlast refuses, TSR_ERR_CLBLAST. */
tsr_status tsr_opencl_clblast_params(tsr_backend *be, const char *spec) {
    tsr_cl *cl = be->impl;
    if (!spec || !*spec) return TSR_OK;
    char buf[1024];
    if (strlen(spec) >= sizeof buf)
        return tsr_error(be->ctx, TSR_ERR_PARSE, "TSR_CLBLAST_PARAMS: longer than %zu characters",
                         sizeof buf - 1);
    tsr_strlcpy(buf, spec, sizeof buf);
    char *save_entry = NULL;
    for (char *entry = strtok_r(buf, ";", &save_entry); entry;
         entry = strtok_r(NULL, ";", &save_entry)) {
        char *colon = strchr(entry, ':');
        if (!colon || colon == entry)
            return tsr_error(be->ctx, TSR_ERR_PARSE,
                             "TSR_CLBLAST_PARAMS: \"%s\" is not Kernel:NAME=VALUE,...", entry);
        *colon = '\0';
        const char *names[64];
        size_t values[64], n = 0;
        char *save_param = NULL;
        for (char *kv = strtok_r(colon + 1, ",", &save_param); kv;
             kv = strtok_r(NULL, ",", &save_param)) {
            char *eq = strchr(kv, '='), *end = NULL;
            unsigned long v = eq ? strtoul(eq + 1, &end, 10) : 0;
            if (!eq || eq == kv || eq[1] < '0' || eq[1] > '9' || !end || *end || n == 64)
                return tsr_error(be->ctx, TSR_ERR_PARSE,
                                 "TSR_CLBLAST_PARAMS: %s: bad parameter \"%s\" (want NAME=number)",
                                 entry, kv);
            *eq = '\0';
            names[n] = kv;
            values[n++] = v;
        }
        CLBlastStatusCode st = CLBlastOverrideParameters(cl->device, entry, CLBlastPrecisionSingle,
                                                         n, names, values);
        if (st != CLBlastSuccess)
            return tsr_error(be->ctx, TSR_ERR_CLBLAST,
                             "TSR_CLBLAST_PARAMS: CLBlastOverrideParameters(%s, %zu parameters) on "
                             "%s: CLBlast status %d (%s)", entry, n, be->device.name, (int)st,
                             clblast_name(st));
        tsr_log(be->ctx, TSR_LOG_INFO, "%s: CLBlast %s tuning overridden (%zu parameters)",
                be->device.id, entry, n);
    }
    return TSR_OK;
}

static CLBlastTranspose tr(tsr_trans t) { return t == TSR_TRANS ? CLBlastTransposeYes : CLBlastTransposeNo; }

/* C = beta*C: GEMM with k = 0 (CLBlast rejects an empty inner dimension). */
static tsr_status scale_matrix(tsr_backend *be, size_t m, size_t n, float beta, tsr_ref c,
                               size_t ldc, size_t stride_c, size_t batch) {
    tsr_cl *cl = be->impl;
    for (size_t b = 0; b < batch; b++) {
        kargs a = args_begin(be, TSR_CL_K_scale_matrix);
        arg_u64(&a, m);
        arg_u64(&a, n);
        arg_f32(&a, beta);
        arg_mem(&a, (cl_mem)c.buf->impl);
        arg_u64(&a, c.off + b * stride_c);
        arg_u64(&a, ldc);
        if (a.err != CL_SUCCESS) return tsr_opencl_error(be->ctx, a.err, "clSetKernelArg(scale_matrix)");
        size_t lx = 16, ly = cl->wg[TSR_CL_K_scale_matrix] / 16;
        if (ly == 0) {
            lx = cl->wg[TSR_CL_K_scale_matrix];
            ly = 1;
        }
        size_t local[2] = {lx, ly};
        size_t global[2] = {(n + lx - 1) / lx * lx, (m + ly - 1) / ly * ly};
        cl_int err = clEnqueueNDRangeKernel(cl->queue, cl->kernels[TSR_CL_K_scale_matrix], 2, NULL,
                                            global, local, 0, NULL, NULL);
        if (err != CL_SUCCESS)
            return tsr_opencl_error(be->ctx, err, "clEnqueueNDRangeKernel(scale_matrix)");
    }
    return TSR_OK;
}

static tsr_status cl_gemm(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                          size_t k, float alpha, tsr_ref a, size_t lda, tsr_ref b, size_t ldb,
                          float beta, tsr_ref c, size_t ldc) {
    tsr_cl *cl = be->impl;
    if (k == 0) return scale_matrix(be, m, n, beta, c, ldc, 0, 1);
    if (tsr_opencl_mma_takes(be))
        return tsr_opencl_mma_gemm(be, ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
    CLBlastStatusCode s = CLBlastSgemm(CLBlastLayoutRowMajor, tr(ta), tr(tb), m, n, k, alpha,
                                       (cl_mem)a.buf->impl, a.off, lda, (cl_mem)b.buf->impl, b.off,
                                       ldb, beta, (cl_mem)c.buf->impl, c.off, ldc, &cl->queue, NULL);
    return clblast_status(be, s, "CLBlastSgemm");
}

static tsr_status cl_gemm_batched(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                                  size_t k, float alpha, tsr_ref a, size_t lda, size_t stride_a,
                                  tsr_ref b, size_t ldb, size_t stride_b, float beta, tsr_ref c,
                                  size_t ldc, size_t stride_c, size_t batch) {
    tsr_cl *cl = be->impl;
    if (k == 0) return scale_matrix(be, m, n, beta, c, ldc, stride_c, batch);
    if (tsr_opencl_mma_takes(be))
        return tsr_opencl_mma_gemm(be, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b,
                                   beta, c, ldc, stride_c, batch);
    if (cl->batched == TSR_CL_BATCHED_CLBLAST) {
        CLBlastStatusCode s = CLBlastSgemmStridedBatched(
            CLBlastLayoutRowMajor, tr(ta), tr(tb), m, n, k, alpha, (cl_mem)a.buf->impl, a.off, lda,
            stride_a, (cl_mem)b.buf->impl, b.off, ldb, stride_b, beta, (cl_mem)c.buf->impl, c.off,
            ldc, stride_c, batch, &cl->queue, NULL);
        if (s == CLBlastSuccess) return TSR_OK;
        if (s != CLBlastInvalidDimension && s != CLBlastNotImplemented &&
            s != CLBlastInvalidBatchCount)
            return clblast_status(be, s, "CLBlastSgemmStridedBatched");
        cl->batched_fallbacks++;
        tsr_log(be->ctx, TSR_LOG_DEBUG, "CLBlastSgemmStridedBatched refused (status %d, strides "
                "%zu/%zu/%zu): looping over single GEMMs", (int)s, stride_a, stride_b, stride_c);
    }
    /* LOOP mode, or a CLBlast that refuses this batch shape: one GEMM per matrix. */
    for (size_t i = 0; i < batch; i++)
        TSR_TRY(cl_gemm(be, ta, tb, m, n, k, alpha, tsr_ref_at(a.buf, a.off + i * stride_a), lda,
                        tsr_ref_at(b.buf, b.off + i * stride_b), ldb, beta,
                        tsr_ref_at(c.buf, c.off + i * stride_c), ldc));
    return TSR_OK;
}

static tsr_status cl_axpy(tsr_backend *be, size_t n, float alpha, tsr_ref x, tsr_ref y) {
    kargs a = args_begin(be, TSR_CL_K_axpy);
    arg_u64(&a, n);
    arg_f32(&a, alpha);
    arg_ref(&a, x);
    arg_ref(&a, y);
    return launch(&a, n, 0);
}

static tsr_status cl_scale(tsr_backend *be, size_t n, float alpha, tsr_ref x) {
    kargs a = args_begin(be, TSR_CL_K_scale);
    arg_u64(&a, n);
    arg_f32(&a, alpha);
    arg_ref(&a, x);
    return launch(&a, n, 0);
}

static tsr_status cl_mul(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y, tsr_ref out) {
    kargs a = args_begin(be, TSR_CL_K_mul);
    arg_u64(&a, n);
    arg_ref(&a, x);
    arg_ref(&a, y);
    arg_ref(&a, out);
    return launch(&a, n, 0);
}

/* Two passes: up to TSR_CL_SUM_GROUPS partial sums into the scratch buffer, then one group.
 * The scratch is reused by later sums only after this one ran (the queue is in order). */
static tsr_status cl_sum(tsr_backend *be, size_t n, tsr_ref x, tsr_ref out) {
    tsr_cl *cl = be->impl;
    size_t wg = cl->wg[TSR_CL_K_sum_partial];
    size_t groups = (n + wg - 1) / wg;
    if (groups > TSR_CL_SUM_GROUPS) groups = TSR_CL_SUM_GROUPS;
    if (groups == 0) groups = 1;
    kargs a = args_begin(be, TSR_CL_K_sum_partial);
    arg_u64(&a, n);
    arg_ref(&a, x);
    arg_mem(&a, cl->scratch);
    arg_local(&a, wg * sizeof(float));
    TSR_TRY(launch(&a, 0, groups));
    kargs f = args_begin(be, TSR_CL_K_sum_final);
    arg_u64(&f, groups);
    arg_mem(&f, cl->scratch);
    arg_ref(&f, out);
    arg_local(&f, cl->wg[TSR_CL_K_sum_final] * sizeof(float));
    return launch(&f, 0, 1);
}

/* Screens where the data are (the trainer's check reads back 4 bytes, not the gradients), in
 * pieces whose indices fit the kernel's uint; the scratch buffer holds the answer. The norm's
 * fixed serial order is the host's: with sumsq the data come back once, piece by piece,
 * screened and summed together. */
#define TSR_CL_SCREEN_PIECE ((size_t)1 << 31)
#define TSR_CL_SCREEN_GROUPS 1024
#define TSR_CL_READBACK_PIECE ((size_t)1 << 22) /* floats per read-back piece (16 MiB) */

static tsr_status cl_screen_readback(tsr_backend *be, size_t n, tsr_ref x, size_t *first,
                                     double *sumsq) {
    size_t piece = n < TSR_CL_READBACK_PIECE ? n : TSR_CL_READBACK_PIECE;
    float *h = tsr_malloc(be->ctx, piece * sizeof *h);
    if (!h) return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "first_nonfinite: %zu floats of read-back", piece);
    double acc[4] = {0.0, 0.0, 0.0, 0.0};
    tsr_status s = TSR_OK;
    for (size_t lo = 0; lo < n && *first == n; lo += piece) {
        size_t len = n - lo < piece ? n - lo : piece; /* every piece but the last: a multiple of 4 */
        if ((s = tsr_ref_read(tsr_ref_offset(x, lo), TSR_DTYPE_F32, h, len)) != TSR_OK) break;
        size_t i = tsr_first_nonfinite_f32(h, len);
        if (i < len) *first = lo + i;
        else tsr_sumsq_f32_add(acc, h, len);
    }
    tsr_free(be->ctx, h);
    if (s == TSR_OK && *first == n) *sumsq = tsr_sumsq_f32_total(acc);
    return s;
}

static tsr_status cl_first_nonfinite(tsr_backend *be, size_t n, tsr_ref x, size_t *first,
                                     double *sumsq) {
    tsr_cl *cl = be->impl;
    size_t wg = cl->wg[TSR_CL_K_first_nonfinite];
    *first = n;
    if (sumsq) return cl_screen_readback(be, n, x, first, sumsq);
    for (size_t lo = 0; lo < n; lo += TSR_CL_SCREEN_PIECE) {
        size_t len = n - lo < TSR_CL_SCREEN_PIECE ? n - lo : TSR_CL_SCREEN_PIECE;
        size_t groups = (len + wg - 1) / wg;
        if (groups > TSR_CL_SCREEN_GROUPS) groups = TSR_CL_SCREEN_GROUPS;
        cl_uint none = 0xffffffffu, got = none;
        cl_int err = clEnqueueWriteBuffer(cl->queue, cl->scratch, CL_FALSE, 0, sizeof none, &none,
                                          0, NULL, NULL);
        if (err != CL_SUCCESS) return tsr_opencl_error(be->ctx, err, "clEnqueueWriteBuffer(screen)");
        kargs a = args_begin(be, TSR_CL_K_first_nonfinite);
        arg_u64(&a, len);
        arg_ref(&a, tsr_ref_offset(x, lo));
        arg_mem(&a, cl->scratch);
        TSR_TRY(launch(&a, 0, groups));
        err = clEnqueueReadBuffer(cl->queue, cl->scratch, CL_TRUE, 0, sizeof got, &got, 0, NULL, NULL);
        if (err != CL_SUCCESS) return tsr_opencl_error(be->ctx, err, "clEnqueueReadBuffer(screen)");
        if (got != none) {
            *first = lo + got;
            return TSR_OK;
        }
    }
    return TSR_OK;
}

/* ---- layers ---- */

static tsr_status cl_bias_add(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                              tsr_ref bias, tsr_ref y) {
    size_t total = outer * channels * inner;
    kargs a = args_begin(be, TSR_CL_K_bias_add);
    arg_u64(&a, total);
    arg_u64(&a, channels);
    arg_u64(&a, inner);
    arg_ref(&a, bias);
    arg_ref(&a, y);
    return launch(&a, total, 0);
}

static tsr_status cl_bias_grad(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                               tsr_ref dy, tsr_ref db) {
    tsr_cl *cl = be->impl;
    if (inner == 1 && channels >= cl->wg[TSR_CL_K_bias_grad_cols]) {
        kargs a = args_begin(be, TSR_CL_K_bias_grad_cols);
        arg_u64(&a, outer);
        arg_u64(&a, channels);
        arg_ref(&a, dy);
        arg_ref(&a, db);
        return launch(&a, channels, 0);
    }
    kargs a = args_begin(be, TSR_CL_K_bias_grad_rows);
    arg_u64(&a, outer);
    arg_u64(&a, channels);
    arg_u64(&a, inner);
    arg_ref(&a, dy);
    arg_ref(&a, db);
    arg_local(&a, cl->wg[TSR_CL_K_bias_grad_rows] * sizeof(float));
    return launch(&a, 0, channels);
}

static tsr_status cl_relu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y) {
    kargs a = args_begin(be, TSR_CL_K_relu_forward);
    arg_u64(&a, n);
    arg_ref(&a, x);
    arg_ref(&a, y);
    return launch(&a, n, 0);
}

static tsr_status cl_relu_backward(tsr_backend *be, size_t n, tsr_ref y, tsr_ref dy, tsr_ref dx) {
    kargs a = args_begin(be, TSR_CL_K_relu_backward);
    arg_u64(&a, n);
    arg_ref(&a, y);
    arg_ref(&a, dy);
    arg_ref(&a, dx);
    return launch(&a, n, 0);
}

static tsr_status cl_softmax_xent_forward(tsr_backend *be, size_t rows, size_t cols,
                                          tsr_ref logits, tsr_ref labels, tsr_ref probs,
                                          tsr_ref loss) {
    tsr_cl *cl = be->impl;
    kargs a = args_begin(be, TSR_CL_K_softmax_xent_forward);
    arg_u64(&a, cols);
    arg_ref(&a, logits);
    arg_ref(&a, labels);
    arg_ref(&a, probs);
    arg_ref(&a, loss);
    arg_local(&a, cl->wg[TSR_CL_K_softmax_xent_forward] * sizeof(float));
    return launch(&a, 0, rows);
}

static tsr_status cl_softmax_xent_backward(tsr_backend *be, size_t rows, size_t cols,
                                           tsr_ref probs, tsr_ref labels, float scale,
                                           tsr_ref dlogits) {
    size_t total = rows * cols;
    kargs a = args_begin(be, TSR_CL_K_softmax_xent_backward);
    arg_u64(&a, total);
    arg_u64(&a, cols);
    arg_ref(&a, probs);
    arg_ref(&a, labels);
    arg_f32(&a, scale);
    arg_ref(&a, dlogits);
    return launch(&a, total, 0);
}

static void arg_conv(kargs *a, const tsr_conv_geom *g) {
    arg_u64(a, g->channels);
    arg_u64(a, g->height);
    arg_u64(a, g->width);
    arg_u64(a, g->kernel_h);
    arg_u64(a, g->kernel_w);
    arg_u64(a, g->stride_h);
    arg_u64(a, g->stride_w);
    arg_u64(a, g->pad_h);
    arg_u64(a, g->pad_w);
    arg_u64(a, g->out_h);
    arg_u64(a, g->out_w);
}

/* The 32-bit kernels index within an operand (its offset is added in 64 bits): they serve
 * whenever every operand of the op holds fewer than 2^32 elements. */
static int narrow_(tsr_backend *be, size_t a, size_t b) {
    return a <= 0xFFFFFFFFu && b <= 0xFFFFFFFFu && !((tsr_cl *)be->impl)->force_wide;
}
#define narrow(a, b) narrow_(be, a, b)

static tsr_status cl_im2col(tsr_backend *be, const tsr_conv_geom *g, tsr_ref x, tsr_ref col) {
    size_t rows = g->batch * g->channels * g->kernel_h * g->kernel_w, plane = g->out_h * g->out_w;
    size_t img = g->batch * g->channels * g->height * g->width;
    kargs a = args_begin(be, narrow(rows * plane, img) ? TSR_CL_K_im2col : TSR_CL_K_im2col_wide);
    arg_conv(&a, g);
    arg_u64(&a, rows);
    arg_ref(&a, x);
    arg_ref(&a, col);
    return launch2d(&a, plane, rows);
}

static tsr_status cl_col2im(tsr_backend *be, const tsr_conv_geom *g, tsr_ref col, tsr_ref dx) {
    size_t planes = g->batch * g->channels, plane = g->height * g->width;
    size_t cols = planes * g->kernel_h * g->kernel_w * g->out_h * g->out_w;
    if (!planes || !plane) return TSR_OK;
    kargs a = args_begin(be, narrow(planes * plane, cols) ? TSR_CL_K_col2im : TSR_CL_K_col2im_wide);
    arg_conv(&a, g);
    arg_u64(&a, planes);
    arg_ref(&a, col);
    arg_ref(&a, dx);
    return launch2d(&a, plane, planes);
}

static tsr_status cl_transpose(tsr_backend *be, size_t rows, size_t cols, size_t inner, tsr_ref x,
                               tsr_ref y) {
    size_t total = rows * cols * inner;
    kargs a = args_begin(be, narrow(total, total) ? TSR_CL_K_transpose : TSR_CL_K_transpose_wide);
    arg_u64(&a, rows);
    arg_u64(&a, cols);
    arg_u64(&a, inner);
    arg_ref(&a, x);
    arg_ref(&a, y);
    return launch2d(&a, inner, rows * cols);
}

static tsr_status cl_transpose_bias(tsr_backend *be, size_t rows, size_t cols, size_t inner,
                                    tsr_ref x, tsr_ref bias, int relu, tsr_ref y) {
    size_t total = rows * cols * inner;
    kargs a = args_begin(be, narrow(total, total) ? TSR_CL_K_transpose_bias : TSR_CL_K_transpose_bias_wide);
    arg_u64(&a, rows);
    arg_u64(&a, cols);
    arg_u64(&a, inner);
    arg_ref(&a, x);
    arg_ref(&a, bias);
    arg_i32(&a, relu);
    arg_ref(&a, y);
    return launch2d(&a, inner, rows * cols);
}

static void arg_pool(kargs *a, const tsr_pool_geom *g) {
    arg_u64(a, g->planes);
    arg_u64(a, g->height);
    arg_u64(a, g->width);
    arg_u64(a, g->size);
    arg_u64(a, g->stride);
    arg_u64(a, g->out_h);
    arg_u64(a, g->out_w);
}

static tsr_status cl_maxpool_forward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref x, tsr_ref y,
                                     tsr_ref idx) {
    if ((uint64_t)g->height * g->width > INT32_MAX)
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "maxpool_forward: %zux%zu plane overflows int32 "
                         "indices", g->height, g->width);
    size_t out = g->planes * g->out_h * g->out_w, in = g->planes * g->height * g->width;
    kargs a = args_begin(be, narrow(out, in) ? TSR_CL_K_maxpool_forward
                                             : TSR_CL_K_maxpool_forward_wide);
    arg_pool(&a, g);
    arg_ref(&a, x);
    arg_ref(&a, y);
    arg_ref(&a, idx);
    return launch2d(&a, g->out_h * g->out_w, g->planes);
}

static tsr_status cl_maxpool_backward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                      tsr_ref idx, tsr_ref dx) {
    size_t in = g->planes * g->height * g->width, out = g->planes * g->out_h * g->out_w;
    kargs a = args_begin(be, narrow(in, out) ? TSR_CL_K_maxpool_backward
                                             : TSR_CL_K_maxpool_backward_wide);
    arg_pool(&a, g);
    arg_ref(&a, dy);
    arg_ref(&a, idx);
    arg_ref(&a, dx);
    return launch2d(&a, g->height * g->width, g->planes);
}

static tsr_status cl_dropout_forward(tsr_backend *be, size_t n, float p, uint64_t seed, tsr_ref x,
                                     tsr_ref y, tsr_ref mask) {
    kargs a = args_begin(be, TSR_CL_K_dropout_forward);
    arg_u64(&a, n);
    arg_f32(&a, p);
    arg_f32(&a, 1.0f / (1.0f - p)); /* same float expression as the host backend */
    arg_u64(&a, seed);
    arg_ref(&a, x);
    arg_ref(&a, y);
    arg_ref(&a, mask);
    return launch(&a, n, 0);
}

static tsr_status cl_embed_forward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                   tsr_ref table, tsr_ref y) {
    kargs a = args_begin(be, TSR_CL_K_embed_forward);
    arg_u64(&a, dim);
    arg_u64(&a, vocab);
    arg_ref(&a, ids);
    arg_ref(&a, table);
    arg_ref(&a, y);
    return launch2d(&a, dim, count);
}

/* One work-item per column walks the ids in order: the host's order of additions. */
static tsr_status cl_embed_backward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                    tsr_ref dy, tsr_ref dtable) {
    kargs a = args_begin(be, TSR_CL_K_embed_backward);
    arg_u64(&a, count);
    arg_u64(&a, dim);
    arg_u64(&a, vocab);
    arg_ref(&a, ids);
    arg_ref(&a, dy);
    arg_ref(&a, dtable);
    return launch(&a, dim, 0);
}

/* ---- conversion ---- */

static tsr_status cl_narrow16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref h) {
    kargs a = args_begin(be, TSR_CL_K_narrow16);
    arg_u64(&a, n);
    arg_i32(&a, (int)p);
    arg_ref(&a, x);
    arg_ref(&a, h);
    return launch(&a, n, 0);
}

static tsr_status cl_round16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref y) {
    kargs a = args_begin(be, TSR_CL_K_round16);
    arg_u64(&a, n);
    arg_i32(&a, (int)p);
    arg_ref(&a, x);
    arg_ref(&a, y);
    return launch(&a, n, 0);
}

static tsr_status cl_round16_block(tsr_backend *be, tsr_precision p, size_t rows, size_t cols, tsr_ref x,
                                   size_t ldx, tsr_ref y, size_t ldy) {
    kargs a = args_begin(be, TSR_CL_K_round16_block);
    arg_u64(&a, cols);
    arg_i32(&a, (int)p);
    arg_ref(&a, x);
    arg_u64(&a, ldx);
    arg_ref(&a, y);
    arg_u64(&a, ldy);
    return launch2d(&a, cols, rows);
}

static tsr_status cl_widen16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref h, tsr_ref x) {
    kargs a = args_begin(be, TSR_CL_K_widen16);
    arg_u64(&a, n);
    arg_i32(&a, (int)p);
    arg_ref(&a, h);
    arg_ref(&a, x);
    return launch(&a, n, 0);
}

/* ---- optimizers ---- */

static tsr_status cl_sgd_update(tsr_backend *be, size_t n, const tsr_sgd_params *p, tsr_ref w,
                                tsr_ref g, tsr_ref v) {
    tsr_cl *cl = be->impl;
    kargs a = args_begin(be, TSR_CL_K_sgd_update);
    arg_u64(&a, n);
    arg_f32(&a, p->lr);
    arg_f32(&a, p->momentum);
    arg_f32(&a, p->weight_decay);
    arg_i32(&a, p->nesterov ? 1 : 0);
    arg_f32(&a, p->grad_scale == 0.0f ? 1.0f : p->grad_scale);
    arg_ref(&a, w);
    arg_ref(&a, g);
    if (p->momentum != 0.0f && v.buf) {
        arg_ref(&a, v);
    } else { /* momentum 0 never reads v, which may be absent */
        arg_mem(&a, cl->scratch);
        arg_u64(&a, 0);
    }
    return launch(&a, n, 0);
}

static tsr_status cl_adam_update(tsr_backend *be, size_t n, const tsr_adam_params *p, tsr_ref w,
                                 tsr_ref g, tsr_ref m, tsr_ref v) {
    kargs a = args_begin(be, TSR_CL_K_adam_update);
    arg_u64(&a, n);
    arg_f32(&a, p->lr);
    arg_f32(&a, p->beta1);
    arg_f32(&a, p->beta2);
    arg_f32(&a, p->eps);
    arg_f32(&a, p->weight_decay);
    arg_i32(&a, p->decoupled ? 1 : 0);
    arg_f32(&a, p->bias_correction1);
    arg_f32(&a, p->bias_correction2);
    arg_f32(&a, p->grad_scale == 0.0f ? 1.0f : p->grad_scale);
    arg_ref(&a, w);
    arg_ref(&a, g);
    arg_ref(&a, m);
    arg_ref(&a, v);
    return launch(&a, n, 0);
}

/* ---- transformer (GPT-2) pieces: kernels/gpt.cl, attention's products through CLBlast ---- */

static tsr_status cl_layernorm_forward(tsr_backend *be, size_t rows, size_t dim, float eps,
                                       tsr_ref x, tsr_ref gamma, tsr_ref beta, tsr_ref y,
                                       tsr_ref mean, tsr_ref rstd) {
    size_t local = row_group(be, TSR_CL_K_layernorm_forward, dim);
    kargs a = args_begin(be, TSR_CL_K_layernorm_forward);
    arg_u64(&a, dim);
    arg_f32(&a, eps);
    arg_ref(&a, x);
    arg_ref(&a, gamma);
    arg_ref(&a, beta);
    arg_ref(&a, y);
    arg_ref(&a, mean);
    arg_ref(&a, rstd);
    arg_local(&a, local * sizeof(float));
    return launch_rows(&a, rows, local);
}

/* dgamma/dbeta first: they read dy, which dx may alias (the queue runs in order). */
static tsr_status cl_layernorm_backward(tsr_backend *be, size_t rows, size_t dim, tsr_ref x,
                                        tsr_ref gamma, tsr_ref mean, tsr_ref rstd, tsr_ref dy,
                                        tsr_ref dx, tsr_ref dgamma, tsr_ref dbeta, int add_dx) {
    tsr_cl *cl = be->impl;
    /* column sums: blocks of up to 32 columns, the rest of the group as row lanes */
    size_t wg = cl->wg[TSR_CL_K_layernorm_backward_cols], width = wg < 32 ? wg : 32;
    size_t local[2] = {width, wg / width};
    size_t global[2] = {(dim + width - 1) / width * width, local[1]};
    kargs c = args_begin(be, TSR_CL_K_layernorm_backward_cols);
    arg_u64(&c, rows);
    arg_u64(&c, dim);
    arg_ref(&c, x);
    arg_ref(&c, mean);
    arg_ref(&c, rstd);
    arg_ref(&c, dy);
    arg_ref(&c, dgamma);
    arg_ref(&c, dbeta);
    arg_local(&c, 2 * local[0] * local[1] * sizeof(float));
    TSR_TRY(enqueue(&c, 2, global, local));

    size_t rl = row_group(be, TSR_CL_K_layernorm_backward_rows, dim);
    kargs a = args_begin(be, TSR_CL_K_layernorm_backward_rows);
    arg_u64(&a, dim);
    arg_i32(&a, add_dx ? 1 : 0);
    arg_ref(&a, x);
    arg_ref(&a, gamma);
    arg_ref(&a, mean);
    arg_ref(&a, rstd);
    arg_ref(&a, dy);
    arg_ref(&a, dx);
    arg_local(&a, rl * sizeof(float));
    return launch_rows(&a, rows, rl);
}

static tsr_status cl_gelu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y) {
    kargs a = args_begin(be, TSR_CL_K_gelu_forward);
    arg_u64(&a, n);
    arg_ref(&a, x);
    arg_ref(&a, y);
    return launch(&a, n, 0);
}

static tsr_status cl_gelu_backward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref dy, tsr_ref dx) {
    kargs a = args_begin(be, TSR_CL_K_gelu_backward);
    arg_u64(&a, n);
    arg_ref(&a, x);
    arg_ref(&a, dy);
    arg_ref(&a, dx);
    return launch(&a, n, 0);
}

/* An attention operand as seen by one (sequence b, head h) pair: its matrix starts at
 * r + b*seq + h*head and has leading dimension ld (3C inside qkv, C inside out/dout, T in
 * the T x T score matrices). */
typedef struct attn_operand {
    tsr_ref r;
    size_t ld, seq, head;
} attn_operand;

static attn_operand qkv_part(const tsr_attn_geom *g, tsr_ref qkv, size_t block) {
    size_t C = g->channels;
    attn_operand o = {tsr_ref_offset(qkv, block * C), 3 * C, g->tokens * 3 * C, C / g->heads};
    return o;
}

static attn_operand scores(const tsr_attn_geom *g, tsr_ref att) {
    size_t TT = g->tokens * g->tokens;
    attn_operand o = {att, g->tokens, g->heads * TT, TT};
    return o;
}

static attn_operand head_rows(const tsr_attn_geom *g, tsr_ref out) {
    attn_operand o = {out, g->channels, g->tokens * g->channels, g->channels / g->heads};
    return o;
}

/* C = alpha op(A) op(B) (beta 0) for every (sequence, head) pair: strided batches over the
 * more numerous of heads and sequences, one batch per value of the other (cl_gemm_batched
 * picks CLBlast's strided batch or a loop, as for every batched GEMM). */
static tsr_status attn_gemm(tsr_backend *be, const tsr_attn_geom *g, tsr_trans ta, tsr_trans tb,
                            size_t m, size_t n, size_t k, float alpha, attn_operand a,
                            attn_operand b, attn_operand c) {
    int over_heads = g->heads >= g->batch;
    size_t outer = over_heads ? g->batch : g->heads, count = over_heads ? g->heads : g->batch;
    for (size_t o = 0; o < outer; o++) {
        const attn_operand *op[3] = {&a, &b, &c};
        tsr_ref at[3];
        size_t stride[3];
        for (int i = 0; i < 3; i++) {
            at[i] = tsr_ref_offset(op[i]->r, o * (over_heads ? op[i]->seq : op[i]->head));
            stride[i] = over_heads ? op[i]->head : op[i]->seq;
        }
        TSR_TRY(cl_gemm_batched(be, ta, tb, m, n, k, alpha, at[0], a.ld, stride[0], at[1], b.ld,
                                stride[1], 0.0f, at[2], c.ld, stride[2], count));
    }
    return TSR_OK;
}

/* A row kernel (attn_softmax, attn_softmax_backward) over the batch*heads*T rows of T. */
static tsr_status attn_rows(tsr_backend *be, int k, const tsr_attn_geom *g, tsr_ref att,
                            const tsr_ref *d) {
    size_t T = g->tokens, local = row_group(be, k, T);
    kargs a = args_begin(be, k);
    arg_u64(&a, T);
    arg_ref(&a, att);
    if (d) arg_ref(&a, *d);
    arg_local(&a, local * sizeof(float));
    return launch_rows(&a, g->batch * g->heads * T, local);
}

/* P into att (the first half of the call's scratch): the forward and the backward's
 * recomputation run this same code, so backward sees the forward's bits. */
static tsr_status attn_probs(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv, tsr_ref att) {
    size_t T = g->tokens, hs = g->channels / g->heads;
    float scale = 1.0f / sqrtf((float)hs);
    attn_operand q = qkv_part(g, qkv, 0), k = qkv_part(g, qkv, 1);
    TSR_TRY(attn_gemm(be, g, TSR_NO_TRANS, TSR_TRANS, T, T, hs, scale, q, k, scores(g, att)));
    TSR_TRY(attn_rows(be, TSR_CL_K_attn_softmax, g, att, NULL));
    if (be->precision != TSR_PRECISION_FP32) /* P, an input of P v, 16-bit (backend_precision.c) */
        TSR_TRY(cl_round16(be, be->precision, g->batch * g->heads * T * T, att, att));
    return TSR_OK;
}

static tsr_status cl_attention_forward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                       tsr_ref scratch, tsr_ref out) {
    size_t T = g->tokens, hs = g->channels / g->heads;
    TSR_TRY(attn_probs(be, g, qkv, scratch));
    return attn_gemm(be, g, TSR_NO_TRANS, TSR_NO_TRANS, T, hs, T, 1.0f, scores(g, scratch),
                     qkv_part(g, qkv, 2), head_rows(g, out));
}

static tsr_status cl_attention_backward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                        tsr_ref dout, tsr_ref scratch, tsr_ref dqkv) {
    size_t T = g->tokens, hs = g->channels / g->heads, natt = g->batch * g->heads * T * T;
    float scale = 1.0f / sqrtf((float)hs);
    tsr_ref att = scratch, dscores = tsr_ref_offset(scratch, natt);
    TSR_TRY(attn_probs(be, g, qkv, att));
    attn_operand q = qkv_part(g, qkv, 0), k = qkv_part(g, qkv, 1), v = qkv_part(g, qkv, 2);
    attn_operand dq = qkv_part(g, dqkv, 0), dk = qkv_part(g, dqkv, 1), dv = qkv_part(g, dqkv, 2);
    attn_operand a = scores(g, att), ds = scores(g, dscores), d = head_rows(g, dout);
    TSR_TRY(attn_gemm(be, g, TSR_NO_TRANS, TSR_TRANS, T, T, hs, 1.0f, d, v, ds)); /* d att */
    TSR_TRY(attn_gemm(be, g, TSR_TRANS, TSR_NO_TRANS, T, hs, T, 1.0f, a, d, dv));
    TSR_TRY(attn_rows(be, TSR_CL_K_attn_softmax_backward, g, att, &dscores)); /* d scores */
    if (be->precision != TSR_PRECISION_FP32) /* dS, an input of the dq and dk products */
        TSR_TRY(cl_round16(be, be->precision, natt, dscores, dscores));
    TSR_TRY(attn_gemm(be, g, TSR_NO_TRANS, TSR_NO_TRANS, T, hs, T, scale, ds, k, dq));
    return attn_gemm(be, g, TSR_TRANS, TSR_NO_TRANS, T, hs, T, scale, ds, q, dk);
}

static tsr_status cl_xent_forward(tsr_backend *be, size_t rows, size_t cols, tsr_ref logits,
                                  tsr_ref targets, tsr_ref probs, tsr_ref loss) {
    size_t local = row_group(be, TSR_CL_K_xent_forward, cols);
    kargs a = args_begin(be, TSR_CL_K_xent_forward);
    arg_u64(&a, cols);
    arg_ref(&a, logits);
    arg_ref(&a, targets);
    arg_ref(&a, probs);
    arg_ref(&a, loss);
    arg_local(&a, local * sizeof(float));
    return launch_rows(&a, rows, local);
}

static tsr_status cl_xent_backward(tsr_backend *be, size_t rows, size_t cols, tsr_ref probs,
                                   tsr_ref targets, float scale, tsr_ref dlogits) {
    kargs a = args_begin(be, TSR_CL_K_xent_backward);
    arg_u64(&a, cols);
    arg_ref(&a, probs);
    arg_ref(&a, targets);
    arg_f32(&a, scale);
    arg_ref(&a, dlogits);
    return launch2d(&a, cols, rows);
}

const tsr_backend_iface tsr_opencl_iface = {
    .name = "opencl",
    .destroy = tsr_opencl_destroy,
    .buf_alloc = tsr_opencl_buf_alloc,
    .buf_free = tsr_opencl_buf_free,
    .write = tsr_opencl_write,
    .read = tsr_opencl_read,
    .copy = tsr_opencl_copy,
    .fill = tsr_opencl_fill,
    .finish = tsr_opencl_finish,
    .gemm = cl_gemm,
    .gemm_batched = cl_gemm_batched,
    .axpy = cl_axpy,
    .scale = cl_scale,
    .mul = cl_mul,
    .sum = cl_sum,
    .first_nonfinite = cl_first_nonfinite,
    .bias_add = cl_bias_add,
    .bias_grad = cl_bias_grad,
    .relu_forward = cl_relu_forward,
    .relu_backward = cl_relu_backward,
    .softmax_xent_forward = cl_softmax_xent_forward,
    .softmax_xent_backward = cl_softmax_xent_backward,
    .im2col = cl_im2col,
    .col2im = cl_col2im,
    .transpose = cl_transpose,
    .transpose_bias = cl_transpose_bias,
    .maxpool_forward = cl_maxpool_forward,
    .maxpool_backward = cl_maxpool_backward,
    .dropout_forward = cl_dropout_forward,
    .embed_forward = cl_embed_forward,
    .embed_backward = cl_embed_backward,
    .narrow16 = cl_narrow16,
    .widen16 = cl_widen16,
    .round16 = cl_round16,
    .round16_block = cl_round16_block,
    .gemm_native = tsr_opencl_mma_native,
    .sgd_update = cl_sgd_update,
    .adam_update = cl_adam_update,
    .layernorm_forward = cl_layernorm_forward,
    .layernorm_backward = cl_layernorm_backward,
    .gelu_forward = cl_gelu_forward,
    .gelu_backward = cl_gelu_backward,
    .attention_forward = cl_attention_forward,
    .attention_backward = cl_attention_backward,
    .xent_forward = cl_xent_forward,
    .xent_backward = cl_xent_backward,
};
