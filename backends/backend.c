/* Backend-independent part: creation by device, buffer bookkeeping, and the checked wrappers
 * that validate every range before a backend sees it. */
#include <math.h>
#include <string.h>
#include "backends/backend.h"
#include "lib/core/precision.h"
#include "lib/core/internal.h"

tsr_status tsr_backend_open(tsr_context *ctx, int index, tsr_backend **out) {
    if (!ctx || !out) return tsr_error(ctx, TSR_ERR_INVALID_ARG, "tsr_backend_open: NULL argument");
    *out = NULL;
    const tsr_device_info *info = tsr_context_device(ctx, index);
    if (!info) return tsr_error(ctx, TSR_ERR_NOT_FOUND, "device index %d does not exist (%d devices)",
                                index, tsr_context_device_count(ctx));
    if (info->absent)
        return tsr_error(ctx, TSR_ERR_NO_DEVICE, "device %s (%s) comes from a topology file and "
                         "is not present on this machine", info->id, info->name);
    switch (info->backend) {
    case TSR_BACKEND_HOST: return tsr_backend_host_create(ctx, out);
    case TSR_BACKEND_OPENCL:
#if TSR_WITH_OPENCL
        return tsr_backend_opencl_create(ctx, info, out);
#else
        break;
#endif
    }
    return tsr_error(ctx, TSR_ERR_UNSUPPORTED, "device %s: backend not built in", info->id);
}

void tsr_backend_free(tsr_backend *be) {
    if (!be) return;
    tsr_buf_free(be->round_buf);
    be->iface->destroy(be);
}

tsr_status tsr_buf_alloc(tsr_backend *be, size_t bytes, tsr_buf **out) {
    if (!be || !out) return TSR_ERR_INVALID_ARG;
    *out = NULL;
    if (be->device.max_alloc_bytes && bytes > be->device.max_alloc_bytes)
        return tsr_error(be->ctx, TSR_ERR_DEVICE_MEMORY,
                         "%s: %zu bytes exceed the device's largest allocation (%llu bytes)",
                         be->device.id, bytes, (unsigned long long)be->device.max_alloc_bytes);
    tsr_buf *buf = tsr_calloc(be->ctx, 1, sizeof *buf);
    if (!buf) return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "buffer header");
    buf->backend = be;
    buf->bytes = bytes;
    tsr_status st = be->iface->buf_alloc(be, buf);
    if (st != TSR_OK) {
        tsr_free(be->ctx, buf);
        return st;
    }
    *out = buf;
    return TSR_OK;
}

int tsr_backend_wraps_host(const tsr_backend *be) { return be && be->iface->buf_wrap; }

tsr_status tsr_buf_wrap(tsr_backend *be, void *mem, size_t bytes, tsr_buf **out) {
    if (!be || !out || (!mem && bytes)) return TSR_ERR_INVALID_ARG;
    *out = NULL;
    if (!be->iface->buf_wrap)
        return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED,
                         "%s: the %s backend cannot compute on host memory it did not allocate",
                         be->device.id, be->iface->name);
    if ((uintptr_t)mem % 64)
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG,
                         "tsr_buf_wrap: memory at %p is not 64-byte aligned", mem);
    tsr_buf *buf = tsr_calloc(be->ctx, 1, sizeof *buf);
    if (!buf) return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "buffer header");
    buf->backend = be;
    buf->bytes = bytes;
    tsr_status st = be->iface->buf_wrap(be, buf, mem);
    if (st != TSR_OK) {
        tsr_free(be->ctx, buf);
        return st;
    }
    buf->wrapped = mem;
    *out = buf;
    return TSR_OK;
}

void tsr_buf_free(tsr_buf *buf) {
    if (!buf) return;
    tsr_backend *be = buf->backend;
    if (!buf->wrapped) be->iface->buf_free(be, buf); /* wrapped memory stays the caller's */
    tsr_free(be->ctx, buf);
}

void tsr_buf_set_name(tsr_buf *buf, const char *name) {
    if (buf) buf->name = name;
}

static const char *buf_name(const tsr_buf *buf) { return buf->name ? buf->name : "buffer"; }

const char *tsr_dtype_name(tsr_dtype t) {
    switch (t) {
    case TSR_DTYPE_F32: return "float32";
    case TSR_DTYPE_I32: return "int32";
    }
    return "?";
}

/* A byte range [off, off+len) inside buf. */
static int range_ok(const tsr_buf *buf, size_t off, size_t len) {
    return buf && off <= buf->bytes && len <= buf->bytes - off;
}

/* The byte range of `count` elements of `elem` bytes at r.off: the one place where element
 * offsets become byte offsets. 0 when it overflows or leaves the buffer. */
static int ref_bytes(tsr_ref r, size_t elem, size_t count, size_t *byte_off, size_t *bytes) {
    return !tsr_mul_size(r.off, elem, byte_off) && !tsr_mul_size(count, elem, bytes) &&
           range_ok(r.buf, *byte_off, *bytes);
}

/* ref_bytes for `count` elements of t, with an error naming the buffer, range and size. */
static tsr_status elem_range(const char *what, tsr_ref r, tsr_dtype t, size_t count,
                             size_t *byte_off, size_t *bytes) {
    if (!r.buf) return TSR_ERR_INVALID_ARG;
    size_t es = tsr_dtype_size(t);
    if (!es)
        return tsr_error(r.buf->backend->ctx, TSR_ERR_INVALID_ARG, "%s of %s: element type %d "
                         "is not a tsr_dtype", what, buf_name(r.buf), (int)t);
    if (!ref_bytes(r, es, count, byte_off, bytes))
        return tsr_error(r.buf->backend->ctx, TSR_ERR_SHAPE,
                         "%s of %s elements [%zu, %zu + %zu) past the end of %s (%zu bytes, "
                         "%zu elements)", what, tsr_dtype_name(t), r.off, r.off, count,
                         buf_name(r.buf), r.buf->bytes, r.buf->bytes / es);
    return TSR_OK;
}

tsr_status tsr_ref_read(tsr_ref src, tsr_dtype t, void *dst, size_t count) {
    size_t off, bytes;
    if (!dst && count) return TSR_ERR_INVALID_ARG;
    TSR_TRY(elem_range("read", src, t, count, &off, &bytes));
    if (!bytes) return TSR_OK;
    return src.buf->backend->iface->read(src.buf->backend, src.buf, off, dst, bytes);
}

tsr_status tsr_ref_write(tsr_ref dst, tsr_dtype t, const void *src, size_t count) {
    size_t off, bytes;
    if (!src && count) return TSR_ERR_INVALID_ARG;
    TSR_TRY(elem_range("write", dst, t, count, &off, &bytes));
    if (!bytes) return TSR_OK;
    return dst.buf->backend->iface->write(dst.buf->backend, dst.buf, off, src, bytes);
}

tsr_status tsr_ref_copy(tsr_ref dst, tsr_ref src, tsr_dtype t, size_t count) {
    size_t doff, soff, bytes;
    if (!dst.buf || !src.buf) return TSR_ERR_INVALID_ARG;
    if (dst.buf->backend != src.buf->backend)
        return tsr_error(dst.buf->backend->ctx, TSR_ERR_INVALID_ARG,
                         "copy from %s to %s: two backends", buf_name(src.buf), buf_name(dst.buf));
    TSR_TRY(elem_range("copy", src, t, count, &soff, &bytes));
    TSR_TRY(elem_range("copy", dst, t, count, &doff, &bytes));
    if (!bytes) return TSR_OK;
    tsr_backend *be = dst.buf->backend;
    return be->iface->copy(be, dst.buf, doff, src.buf, soff, bytes);
}

tsr_status tsr_buf_map(tsr_ref r, tsr_dtype t, size_t count, tsr_map_mode mode, void *staging,
                       tsr_map *m) {
    if (!m) return TSR_ERR_INVALID_ARG;
    memset(m, 0, sizeof *m);
    if (!(mode & TSR_MAP_READ_WRITE) || (mode & ~TSR_MAP_READ_WRITE))
        return r.buf ? tsr_error(r.buf->backend->ctx, TSR_ERR_INVALID_ARG,
                                 "map of %s: mode %d is not READ, WRITE or READ_WRITE",
                                 buf_name(r.buf), (int)mode)
                     : TSR_ERR_INVALID_ARG;
    size_t off, bytes;
    TSR_TRY(elem_range("map", r, t, count, &off, &bytes));
    if (r.buf->host) { /* host memory: a view, nothing to copy */
        m->data = (char *)r.buf->host + off;
    } else {
        tsr_backend *be = r.buf->backend;
        m->data = staging ? staging : tsr_malloc(be->ctx, bytes ? bytes : 1);
        if (!m->data)
            return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "map of %zu bytes of %s", bytes,
                             buf_name(r.buf));
        if ((mode & TSR_MAP_READ) && bytes) {
            tsr_status s = be->iface->read(be, r.buf, off, m->data, bytes);
            if (s != TSR_OK) {
                if (!staging) tsr_free(be->ctx, m->data);
                m->data = NULL;
                return s;
            }
        }
        m->copied = 1;
        m->allocated = !staging;
    }
    m->buf = r.buf;
    m->byte_off = off;
    m->bytes = bytes;
    m->mode = mode;
    return TSR_OK;
}

tsr_status tsr_buf_unmap(tsr_map *m) {
    if (!m || !m->buf) return TSR_OK;
    tsr_status s = TSR_OK;
    tsr_backend *be = m->buf->backend;
    if (m->copied && (m->mode & TSR_MAP_WRITE) && m->bytes)
        s = be->iface->write(be, m->buf, m->byte_off, m->data, m->bytes);
    if (m->allocated) tsr_free(be->ctx, m->data);
    memset(m, 0, sizeof *m);
    return s;
}

tsr_status tsr_buf_write(tsr_buf *dst, size_t byte_off, const void *src, size_t bytes) {
    if (!dst || (!src && bytes)) return TSR_ERR_INVALID_ARG;
    if (!range_ok(dst, byte_off, bytes))
        return tsr_error(dst->backend->ctx, TSR_ERR_SHAPE,
                         "write of %zu bytes at %zu past the end of %s (%zu bytes)", bytes,
                         byte_off, buf_name(dst), dst->bytes);
    if (!bytes) return TSR_OK;
    return dst->backend->iface->write(dst->backend, dst, byte_off, src, bytes);
}

tsr_status tsr_buf_read(tsr_buf *src, size_t byte_off, void *dst, size_t bytes) {
    if (!src || (!dst && bytes)) return TSR_ERR_INVALID_ARG;
    if (!range_ok(src, byte_off, bytes))
        return tsr_error(src->backend->ctx, TSR_ERR_SHAPE,
                         "read of %zu bytes at %zu past the end of %s (%zu bytes)", bytes,
                         byte_off, buf_name(src), src->bytes);
    if (!bytes) return TSR_OK;
    return src->backend->iface->read(src->backend, src, byte_off, dst, bytes);
}

tsr_status tsr_buf_copy(tsr_buf *dst, size_t dst_byte_off, tsr_buf *src, size_t src_byte_off,
                        size_t bytes) {
    if (!dst || !src) return TSR_ERR_INVALID_ARG;
    if (dst->backend != src->backend)
        return tsr_error(dst->backend->ctx, TSR_ERR_INVALID_ARG, "copy between two backends");
    if (!range_ok(dst, dst_byte_off, bytes) || !range_ok(src, src_byte_off, bytes))
        return tsr_error(dst->backend->ctx, TSR_ERR_SHAPE, "copy of %zu bytes out of range", bytes);
    if (!bytes) return TSR_OK;
    return dst->backend->iface->copy(dst->backend, dst, dst_byte_off, src, src_byte_off, bytes);
}

tsr_status tsr_backend_finish(tsr_backend *be) {
    if (!be) return TSR_ERR_INVALID_ARG;
    return be->iface->finish(be);
}

/* ---- range checks for operands ---- */

/* `count` elements of `elem` bytes starting at r.off fit in r.buf, which belongs to be. */
static tsr_status check_ref(tsr_backend *be, const char *op, const char *name, tsr_ref r,
                            size_t count, size_t elem) {
    if (!r.buf) return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: operand %s is NULL", op, name);
    if (r.buf->backend != be)
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: operand %s belongs to another backend",
                         op, name);
    size_t off_bytes, len_bytes;
    if (!ref_bytes(r, elem, count, &off_bytes, &len_bytes))
        return tsr_error(be->ctx, TSR_ERR_SHAPE,
                         "%s: operand %s needs %zu elements at offset %zu, %s holds %zu bytes",
                         op, name, count, r.off, buf_name(r.buf), r.buf->bytes);
    return TSR_OK;
}
#define CHECK(name, ref, count, elem) TSR_TRY(check_ref(be, op, name, ref, count, elem))
#define F 4 /* sizeof(float) == sizeof(int32_t) */
#define BE_CHECK()                                                   \
    const char *const op = __func__ + 7; /* strip "tsr_op_" */ \
    if (!be) return TSR_ERR_INVALID_ARG

/* Elements touched by a row-major matrix of `rows` x `cols` with leading dimension ld. */
static tsr_status matrix_extent(size_t rows, size_t cols, size_t ld, size_t *out) {
    if (rows == 0 || cols == 0) {
        *out = 0;
        return TSR_OK;
    }
    if (ld < cols) return TSR_ERR_SHAPE;
    size_t a;
    if (tsr_mul_size(rows - 1, ld, &a) || a + cols < a) return TSR_ERR_SHAPE;
    *out = a + cols;
    return TSR_OK;
}

static tsr_status check_matrix(tsr_backend *be, const char *op, const char *name, tsr_ref r,
                               size_t rows, size_t cols, size_t ld, size_t stride, size_t batch) {
    size_t ext;
    if (matrix_extent(rows, cols, ld, &ext) != TSR_OK)
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: %s is %zux%zu but its leading dimension is %zu",
                         op, name, rows, cols, ld);
    if (batch > 1 && ext) {
        size_t s;
        if (tsr_mul_size(batch - 1, stride, &s) || s + ext < s)
            return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: %s batch extent overflows", op, name);
        ext += s;
    }
    return check_ref(be, op, name, r, ext, F);
}

tsr_status tsr_op_fill(tsr_backend *be, tsr_ref x, size_t n, float value) {
    BE_CHECK();
    CHECK("x", x, n, F);
    return n ? be->iface->fill(be, x, n, value) : TSR_OK;
}

tsr_status tsr_op_gemm_batched(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n,
                               size_t k, float alpha, tsr_ref a, size_t lda, size_t stride_a,
                               tsr_ref b, size_t ldb, size_t stride_b, float beta, tsr_ref c,
                               size_t ldc, size_t stride_c, size_t batch) {
    BE_CHECK();
    if ((ta != TSR_NO_TRANS && ta != TSR_TRANS) || (tb != TSR_NO_TRANS && tb != TSR_TRANS))
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: bad transpose flag", op);
    if (m == 0 || n == 0 || batch == 0) return TSR_OK;
    TSR_TRY(check_matrix(be, op, "A", a, ta ? k : m, ta ? m : k, lda, stride_a, batch));
    TSR_TRY(check_matrix(be, op, "B", b, tb ? n : k, tb ? k : n, ldb, stride_b, batch));
    TSR_TRY(check_matrix(be, op, "C", c, m, n, ldc, stride_c, batch));
    if (batch > 1 && stride_c < m * ldc - (ldc - n))
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: C matrices overlap (stride %zu)", op, stride_c);
    if (be->precision != TSR_PRECISION_FP32)
        return tsr_backend_gemm16(be, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b,
                                  beta, c, ldc, stride_c, batch);
    if (batch == 1)
        return be->iface->gemm(be, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return be->iface->gemm_batched(be, ta, tb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b,
                                   beta, c, ldc, stride_c, batch);
}

tsr_status tsr_op_gemm(tsr_backend *be, tsr_trans ta, tsr_trans tb, size_t m, size_t n, size_t k,
                       float alpha, tsr_ref a, size_t lda, tsr_ref b, size_t ldb, float beta,
                       tsr_ref c, size_t ldc) {
    return tsr_op_gemm_batched(be, ta, tb, m, n, k, alpha, a, lda, 0, b, ldb, 0, beta, c, ldc, 0, 1);
}

tsr_status tsr_op_axpy(tsr_backend *be, size_t n, float alpha, tsr_ref x, tsr_ref y) {
    BE_CHECK();
    CHECK("x", x, n, F);
    CHECK("y", y, n, F);
    return n ? be->iface->axpy(be, n, alpha, x, y) : TSR_OK;
}

tsr_status tsr_op_scale(tsr_backend *be, size_t n, float alpha, tsr_ref x) {
    BE_CHECK();
    CHECK("x", x, n, F);
    return n ? be->iface->scale(be, n, alpha, x) : TSR_OK;
}

tsr_status tsr_op_mul(tsr_backend *be, size_t n, tsr_ref a, tsr_ref b, tsr_ref y) {
    BE_CHECK();
    CHECK("a", a, n, F);
    CHECK("b", b, n, F);
    CHECK("y", y, n, F);
    return n ? be->iface->mul(be, n, a, b, y) : TSR_OK;
}

tsr_status tsr_op_sum(tsr_backend *be, size_t n, tsr_ref x, tsr_ref out) {
    BE_CHECK();
    CHECK("x", x, n, F);
    CHECK("out", out, 1, F);
    return be->iface->sum(be, n, x, out);
}

tsr_status tsr_op_first_nonfinite(tsr_backend *be, size_t n, tsr_ref x, size_t *first,
                                  double *sumsq) {
    BE_CHECK();
    if (!first) return TSR_ERR_INVALID_ARG;
    *first = n;
    if (sumsq) *sumsq = 0.0;
    CHECK("x", x, n, F);
    if (!n) return TSR_OK;
    if (be->iface->first_nonfinite) return be->iface->first_nonfinite(be, n, x, first, sumsq);
    tsr_map m; /* no device screen: read it back (a view on host memory) */
    TSR_TRY(tsr_buf_map(x, TSR_DTYPE_F32, n, TSR_MAP_READ, NULL, &m));
    *first = sumsq ? tsr_scan_sumsq_f32(m.data, n, sumsq) : tsr_first_nonfinite_f32(m.data, n);
    return tsr_buf_unmap(&m);
}

static tsr_status check_3d(tsr_backend *be, const char *op, size_t a, size_t b, size_t c,
                           size_t *total) {
    size_t ab = 0;
    *total = 0;
    if (tsr_mul_size(a, b, &ab) || tsr_mul_size(ab, c, total))
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: %zux%zux%zu overflows", op, a, b, c);
    return TSR_OK;
}

/* bias_add, then max(., 0) when relu is set (through the backend's bias_relu where it has one) */
static tsr_status bias_add(tsr_backend *be, const char *op, size_t outer, size_t channels, size_t inner,
                           tsr_ref bias, tsr_ref y, int relu) {
    size_t total;
    TSR_TRY(check_3d(be, op, outer, channels, inner, &total));
    CHECK("bias", bias, channels, F);
    CHECK("y", y, total, F);
    if (!total) return TSR_OK;
    if (relu && be->iface->bias_relu) return be->iface->bias_relu(be, outer, channels, inner, bias, y);
    TSR_TRY(be->iface->bias_add(be, outer, channels, inner, bias, y));
    return relu ? tsr_op_relu_forward(be, total, y, y) : TSR_OK;
}

tsr_status tsr_op_bias_add(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                           tsr_ref bias, tsr_ref y) {
    BE_CHECK();
    return bias_add(be, op, outer, channels, inner, bias, y, 0);
}

tsr_status tsr_op_bias_relu(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                            tsr_ref bias, tsr_ref y) {
    BE_CHECK();
    return bias_add(be, op, outer, channels, inner, bias, y, 1);
}

tsr_status tsr_op_bias_grad(tsr_backend *be, size_t outer, size_t channels, size_t inner,
                            tsr_ref dy, tsr_ref db) {
    BE_CHECK();
    size_t total;
    TSR_TRY(check_3d(be, op, outer, channels, inner, &total));
    CHECK("dy", dy, total, F);
    CHECK("db", db, channels, F);
    return channels ? be->iface->bias_grad(be, outer, channels, inner, dy, db) : TSR_OK;
}

tsr_status tsr_op_relu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y) {
    BE_CHECK();
    CHECK("x", x, n, F);
    CHECK("y", y, n, F);
    return n ? be->iface->relu_forward(be, n, x, y) : TSR_OK;
}

tsr_status tsr_op_relu_backward(tsr_backend *be, size_t n, tsr_ref y, tsr_ref dy, tsr_ref dx) {
    BE_CHECK();
    CHECK("y", y, n, F);
    CHECK("dy", dy, n, F);
    CHECK("dx", dx, n, F);
    return n ? be->iface->relu_backward(be, n, y, dy, dx) : TSR_OK;
}

tsr_status tsr_op_softmax_xent_forward(tsr_backend *be, size_t rows, size_t cols, tsr_ref logits,
                                       tsr_ref labels, tsr_ref probs, tsr_ref loss) {
    BE_CHECK();
    size_t total;
    TSR_TRY(check_3d(be, op, rows, cols, 1, &total));
    if (rows && !cols) return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: zero classes", op);
    CHECK("logits", logits, total, F);
    CHECK("labels", labels, rows, F);
    CHECK("probs", probs, total, F);
    CHECK("loss", loss, rows, F);
    return rows ? be->iface->softmax_xent_forward(be, rows, cols, logits, labels, probs, loss) : TSR_OK;
}

tsr_status tsr_op_softmax_xent_backward(tsr_backend *be, size_t rows, size_t cols, tsr_ref probs,
                                        tsr_ref labels, float scale, tsr_ref dlogits) {
    BE_CHECK();
    size_t total;
    TSR_TRY(check_3d(be, op, rows, cols, 1, &total));
    CHECK("probs", probs, total, F);
    CHECK("labels", labels, rows, F);
    CHECK("dlogits", dlogits, total, F);
    return total ? be->iface->softmax_xent_backward(be, rows, cols, probs, labels, scale, dlogits)
                 : TSR_OK;
}

tsr_status tsr_conv_geom_finish(tsr_conv_geom *g) {
    if (!g || !g->kernel_h || !g->kernel_w || !g->stride_h || !g->stride_w ||
        g->height + 2 * g->pad_h < g->kernel_h || g->width + 2 * g->pad_w < g->kernel_w ||
        g->pad_h >= g->kernel_h || g->pad_w >= g->kernel_w)
        return TSR_ERR_SHAPE;
    g->out_h = (g->height + 2 * g->pad_h - g->kernel_h) / g->stride_h + 1;
    g->out_w = (g->width + 2 * g->pad_w - g->kernel_w) / g->stride_w + 1;
    return TSR_OK;
}

tsr_status tsr_pool_geom_finish(tsr_pool_geom *g) {
    if (!g || !g->size || !g->stride || g->height < g->size || g->width < g->size)
        return TSR_ERR_SHAPE;
    g->out_h = (g->height - g->size) / g->stride + 1;
    g->out_w = (g->width - g->size) / g->stride + 1;
    return TSR_OK;
}

static tsr_status check_conv(tsr_backend *be, const char *op, const tsr_conv_geom *g,
                             size_t *img, size_t *col) {
    if (!g) return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: NULL geometry", op);
    tsr_conv_geom chk = *g;
    if (tsr_conv_geom_finish(&chk) != TSR_OK || chk.out_h != g->out_h || chk.out_w != g->out_w)
        return tsr_error(be->ctx, TSR_ERR_SHAPE,
                         "%s: kernel %zux%zu stride %zu pad %zu does not fit a %zux%zu image", op,
                         g->kernel_h, g->kernel_w, g->stride_h, g->pad_h, g->height, g->width);
    size_t chw = 0, rows = 0, cols = 0;
    TSR_TRY(check_3d(be, op, g->batch, g->channels, g->height * g->width, &chw));
    TSR_TRY(check_3d(be, op, g->channels, g->kernel_h, g->kernel_w, &rows));
    TSR_TRY(check_3d(be, op, g->batch, rows, g->out_h * g->out_w, &cols));
    *img = chw;
    *col = cols;
    return TSR_OK;
}

tsr_status tsr_op_im2col(tsr_backend *be, const tsr_conv_geom *g, tsr_ref x, tsr_ref col) {
    BE_CHECK();
    size_t img, cols;
    TSR_TRY(check_conv(be, op, g, &img, &cols));
    CHECK("x", x, img, F);
    CHECK("col", col, cols, F);
    return cols ? be->iface->im2col(be, g, x, col) : TSR_OK;
}

tsr_status tsr_op_col2im(tsr_backend *be, const tsr_conv_geom *g, tsr_ref col, tsr_ref dx) {
    BE_CHECK();
    size_t img, cols;
    TSR_TRY(check_conv(be, op, g, &img, &cols));
    CHECK("col", col, cols, F);
    CHECK("dx", dx, img, F);
    return cols ? be->iface->col2im(be, g, col, dx) : TSR_OK;
}

int tsr_op_conv_direct(tsr_backend *be, const tsr_conv_geom *g, size_t filters, int pass) {
    return be && g && filters && (pass == TSR_CONV_FORWARD || pass == TSR_CONV_BACKWARD) &&
           be->iface->conv_direct && be->iface->conv_forward && be->iface->conv_backward &&
           be->iface->conv_direct(be, g, filters, pass);
}

/* x, dx: the batch's images; w, dw: the filters; y, dy: the outputs */
static tsr_status check_conv_direct(tsr_backend *be, const char *op, const tsr_conv_geom *g,
                                    size_t filters, int pass, size_t *img, size_t *wts, size_t *out) {
    size_t cols;
    TSR_TRY(check_conv(be, op, g, img, &cols));
    TSR_TRY(check_3d(be, op, filters, g->channels, g->kernel_h * g->kernel_w, wts));
    TSR_TRY(check_3d(be, op, g->batch, filters, g->out_h * g->out_w, out));
    if (!tsr_op_conv_direct(be, g, filters, pass))
        return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED, "%s: %s runs no direct convolution of %zu x %zu "
                         "x %zux%zu, kernel %zux%zu, into %zu filters", op, be->device.id, g->batch,
                         g->channels, g->height, g->width, g->kernel_h, g->kernel_w, filters);
    return TSR_OK;
}

tsr_status tsr_op_conv_forward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                               tsr_ref w, tsr_ref y) {
    BE_CHECK();
    size_t img, wts, out;
    TSR_TRY(check_conv_direct(be, op, g, filters, TSR_CONV_FORWARD, &img, &wts, &out));
    CHECK("x", x, img, F);
    CHECK("w", w, wts, F);
    CHECK("y", y, out, F);
    return out ? be->iface->conv_forward(be, g, filters, x, w, y) : TSR_OK;
}

tsr_status tsr_op_conv_backward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                tsr_ref w, tsr_ref dy, float beta_dw, tsr_ref dw, float beta_dx,
                                tsr_ref dx) {
    BE_CHECK();
    size_t img, wts, out;
    TSR_TRY(check_conv_direct(be, op, g, filters, TSR_CONV_BACKWARD, &img, &wts, &out));
    if ((beta_dw != 0.0f && beta_dw != 1.0f) || (beta_dx != 0.0f && beta_dx != 1.0f))
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: beta must be 0 or 1 (dw %g, dx %g)", op,
                         (double)beta_dw, (double)beta_dx);
    CHECK("x", x, img, F);
    CHECK("w", w, wts, F);
    CHECK("dy", dy, out, F);
    CHECK("dw", dw, wts, F);
    if (dx.buf) CHECK("dx", dx, img, F);
    return be->iface->conv_backward(be, g, filters, x, w, dy, beta_dw, dw, beta_dx, dx);
}

int tsr_op_conv_wgrad_cols(tsr_backend *be, const tsr_conv_geom *g, size_t filters) {
    return be && g && filters && be->iface->conv_wgrad_cols && be->iface->conv_wgrad &&
           be->iface->conv_wgrad_cols(be, g, filters);
}

tsr_status tsr_op_conv_wgrad(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref dy,
                             tsr_ref col, float beta, tsr_ref dw) {
    BE_CHECK();
    size_t img, cols, wts, out;
    TSR_TRY(check_conv(be, op, g, &img, &cols));
    TSR_TRY(check_3d(be, op, filters, g->channels, g->kernel_h * g->kernel_w, &wts));
    TSR_TRY(check_3d(be, op, g->batch, filters, g->out_h * g->out_w, &out));
    if (beta != 0.0f && beta != 1.0f)
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: beta must be 0 or 1, got %g", op, (double)beta);
    if (!tsr_op_conv_wgrad_cols(be, g, filters))
        return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED, "%s: %s has no weight gradient from columns for "
                         "%zu channels x kernel %zux%zu into %zu filters", op, be->device.id,
                         g->channels, g->kernel_h, g->kernel_w, filters);
    CHECK("dy", dy, out, F);
    CHECK("col", col, cols, F);
    CHECK("dw", dw, wts, F);
    return be->iface->conv_wgrad(be, g, filters, dy, col, beta, dw);
}

tsr_status tsr_op_conv_dinput(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref w,
                              tsr_ref dy, tsr_ref col, int add, tsr_ref dx) {
    BE_CHECK();
    size_t img, cols;
    TSR_TRY(check_conv(be, op, g, &img, &cols));
    size_t rows = g->channels * g->kernel_h * g->kernel_w, n = g->batch * g->out_h * g->out_w;
    size_t nw, ndy;
    TSR_TRY(check_3d(be, op, filters, rows, 1, &nw));
    TSR_TRY(check_3d(be, op, filters, g->batch, g->out_h * g->out_w, &ndy));
    CHECK("w", w, nw, F);
    CHECK("dy", dy, ndy, F);
    CHECK("col", col, cols, F);
    CHECK("dx", dx, img, F);
    if (!cols || !filters) return add ? TSR_OK : tsr_op_fill(be, dx, img, 0.0f);
    if (be->iface->conv_dinput && be->precision == TSR_PRECISION_FP32)
        return be->iface->conv_dinput(be, g, filters, w, dy, col, add, dx);
    TSR_TRY(tsr_op_gemm(be, TSR_TRANS, TSR_NO_TRANS, rows, n, filters, 1.0f, w, rows, dy, n, 0.0f,
                        col, n));
    if (!add) TSR_TRY(tsr_op_fill(be, dx, img, 0.0f));
    return tsr_op_col2im(be, g, col, dx);
}

tsr_status tsr_op_transpose(tsr_backend *be, size_t rows, size_t cols, size_t inner, tsr_ref x,
                            tsr_ref y) {
    BE_CHECK();
    size_t total;
    TSR_TRY(check_3d(be, op, rows, cols, inner, &total));
    CHECK("x", x, total, F);
    CHECK("y", y, total, F);
    if (total && x.buf == y.buf && x.off < y.off + total && y.off < x.off + total)
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG,
                         "%s: x [%zu, %zu) and y [%zu, %zu) overlap in %s", op, x.off,
                         x.off + total, y.off, y.off + total, buf_name(x.buf));
    return total ? be->iface->transpose(be, rows, cols, inner, x, y) : TSR_OK;
}

tsr_status tsr_op_transpose_bias(tsr_backend *be, size_t rows, size_t cols, size_t inner, tsr_ref x,
                                 tsr_ref bias, int relu, tsr_ref y) {
    BE_CHECK();
    size_t total;
    TSR_TRY(check_3d(be, op, rows, cols, inner, &total));
    CHECK("x", x, total, F);
    CHECK("bias", bias, rows, F);
    CHECK("y", y, total, F);
    if (total && x.buf == y.buf && x.off < y.off + total && y.off < x.off + total)
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG,
                         "%s: x [%zu, %zu) and y [%zu, %zu) overlap in %s", op, x.off,
                         x.off + total, y.off, y.off + total, buf_name(x.buf));
    return total ? be->iface->transpose_bias(be, rows, cols, inner, x, bias, relu != 0, y) : TSR_OK;
}

static tsr_status check_pool(tsr_backend *be, const char *op, const tsr_pool_geom *g, size_t *in,
                             size_t *out) {
    if (!g) return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: NULL geometry", op);
    tsr_pool_geom chk = *g;
    if (tsr_pool_geom_finish(&chk) != TSR_OK || chk.out_h != g->out_h || chk.out_w != g->out_w)
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: window %zu stride %zu does not fit %zux%zu",
                         op, g->size, g->stride, g->height, g->width);
    TSR_TRY(check_3d(be, op, g->planes, g->height, g->width, in));
    TSR_TRY(check_3d(be, op, g->planes, g->out_h, g->out_w, out));
    return TSR_OK;
}

tsr_status tsr_op_maxpool_forward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref x, tsr_ref y,
                                  tsr_ref idx) {
    BE_CHECK();
    size_t in, out;
    TSR_TRY(check_pool(be, op, g, &in, &out));
    CHECK("x", x, in, F);
    CHECK("y", y, out, F);
    CHECK("idx", idx, out, F);
    return out ? be->iface->maxpool_forward(be, g, x, y, idx) : TSR_OK;
}

tsr_status tsr_op_maxpool_backward(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                   tsr_ref idx, tsr_ref dx) {
    BE_CHECK();
    size_t in, out;
    TSR_TRY(check_pool(be, op, g, &in, &out));
    CHECK("dy", dy, out, F);
    CHECK("idx", idx, out, F);
    CHECK("dx", dx, in, F);
    return in ? be->iface->maxpool_backward(be, g, dy, idx, dx) : TSR_OK;
}

int tsr_op_maxpool_relu_folds(const tsr_backend *be) { return be && be->iface->maxpool_backward_relu; }

tsr_status tsr_op_maxpool_backward_relu(tsr_backend *be, const tsr_pool_geom *g, tsr_ref dy,
                                        tsr_ref idx, tsr_ref y, tsr_ref dx) {
    BE_CHECK();
    size_t in, out;
    TSR_TRY(check_pool(be, op, g, &in, &out));
    if (!tsr_op_maxpool_relu_folds(be))
        return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED, "%s: %s folds no relu into a pool's backward", op,
                         be->device.id);
    CHECK("dy", dy, out, F);
    CHECK("idx", idx, out, F);
    CHECK("y", y, out, F);
    CHECK("dx", dx, in, F);
    return in ? be->iface->maxpool_backward_relu(be, g, dy, idx, y, dx) : TSR_OK;
}

tsr_status tsr_op_dropout_forward(tsr_backend *be, size_t n, float p, uint64_t seed, tsr_ref x,
                                  tsr_ref y, tsr_ref mask) {
    BE_CHECK();
    if (!(p >= 0.0f && p < 1.0f))
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: drop probability %g not in [0,1)", op,
                         (double)p);
    CHECK("x", x, n, F);
    CHECK("y", y, n, F);
    CHECK("mask", mask, n, F);
    return n ? be->iface->dropout_forward(be, n, p, seed, x, y, mask) : TSR_OK;
}

tsr_status tsr_op_embed_forward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                tsr_ref table, tsr_ref y) {
    BE_CHECK();
    size_t rows, tab;
    TSR_TRY(check_3d(be, op, count, dim, 1, &rows));
    TSR_TRY(check_3d(be, op, vocab, dim, 1, &tab));
    if (vocab > INT32_MAX) return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: vocabulary %zu above 2^31 - 1", op, vocab);
    CHECK("ids", ids, count, F);
    CHECK("table", table, tab, F);
    CHECK("y", y, rows, F);
    return rows ? be->iface->embed_forward(be, count, dim, vocab, ids, table, y) : TSR_OK;
}

tsr_status tsr_op_embed_backward(tsr_backend *be, size_t count, size_t dim, size_t vocab, tsr_ref ids,
                                 tsr_ref dy, tsr_ref dtable) {
    BE_CHECK();
    size_t rows, tab;
    TSR_TRY(check_3d(be, op, count, dim, 1, &rows));
    TSR_TRY(check_3d(be, op, vocab, dim, 1, &tab));
    if (vocab > INT32_MAX) return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: vocabulary %zu above 2^31 - 1", op, vocab);
    CHECK("ids", ids, count, F);
    CHECK("dy", dy, rows, F);
    CHECK("dtable", dtable, tab, F);
    return rows ? be->iface->embed_backward(be, count, dim, vocab, ids, dy, dtable) : TSR_OK;
}

static tsr_status check_16bit(tsr_backend *be, const char *op, tsr_precision p) {
    if (p != TSR_PRECISION_BF16 && p != TSR_PRECISION_FP16)
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: precision %d is not bf16 (1) or fp16 (2)",
                         op, (int)p);
    return TSR_OK;
}

tsr_status tsr_op_narrow16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref h) {
    BE_CHECK();
    TSR_TRY(check_16bit(be, op, p));
    CHECK("x", x, n, F);
    CHECK("h", h, n, 2);
    return n ? be->iface->narrow16(be, p, n, x, h) : TSR_OK;
}

tsr_status tsr_op_widen16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref h, tsr_ref x) {
    BE_CHECK();
    TSR_TRY(check_16bit(be, op, p));
    CHECK("h", h, n, 2);
    CHECK("x", x, n, F);
    return n ? be->iface->widen16(be, p, n, h, x) : TSR_OK;
}

tsr_status tsr_op_round16_block(tsr_backend *be, tsr_precision p, size_t rows, size_t cols, tsr_ref x,
                                size_t ldx, tsr_ref y, size_t ldy) {
    BE_CHECK();
    TSR_TRY(check_16bit(be, op, p));
    if (!rows || !cols) return TSR_OK;
    if (ldx < cols || ldy < cols)
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: leading dimensions %zu, %zu below the %zu columns", op,
                         ldx, ldy, cols);
    size_t nx, ny;
    if (tsr_mul_size(rows - 1, ldx, &nx) || (nx += cols) < cols || tsr_mul_size(rows - 1, ldy, &ny) ||
        (ny += cols) < cols)
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: a %zu x %zu block overflows", op, rows, cols);
    CHECK("x", x, nx, F);
    CHECK("y", y, ny, F);
    return be->iface->round16_block(be, p, rows, cols, x, ldx, y, ldy);
}

tsr_status tsr_op_round16(tsr_backend *be, tsr_precision p, size_t n, tsr_ref x, tsr_ref y) {
    BE_CHECK();
    TSR_TRY(check_16bit(be, op, p));
    CHECK("x", x, n, F);
    CHECK("y", y, n, F);
    return n ? be->iface->round16(be, p, n, x, y) : TSR_OK;
}


tsr_status tsr_op_sgd_update(tsr_backend *be, size_t n, const tsr_sgd_params *p, tsr_ref w,
                             tsr_ref g, tsr_ref v) {
    BE_CHECK();
    if (!p) return TSR_ERR_INVALID_ARG;
    CHECK("w", w, n, F);
    CHECK("g", g, n, F);
    if (p->momentum != 0.0f) CHECK("v", v, n, F);
    return n ? be->iface->sgd_update(be, n, p, w, g, v) : TSR_OK;
}

tsr_status tsr_op_adam_update(tsr_backend *be, size_t n, const tsr_adam_params *p, tsr_ref w,
                              tsr_ref g, tsr_ref m, tsr_ref v) {
    BE_CHECK();
    if (!p || !(p->bias_correction1 > 0.0f) || !(p->bias_correction2 > 0.0f))
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: bias corrections must be > 0", op);
    CHECK("w", w, n, F);
    CHECK("g", g, n, F);
    CHECK("m", m, n, F);
    CHECK("v", v, n, F);
    return n ? be->iface->adam_update(be, n, p, w, g, m, v) : TSR_OK;
}

/* ---- transformer pieces: optional slots ---- */

#define HAS_SLOT(slot)                                                                     \
    if (!be->iface->slot)                                                                  \
    return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED, "%s: not implemented by the %s backend", \
                     op, be->iface->name)

tsr_status tsr_op_layernorm_forward(tsr_backend *be, size_t rows, size_t dim, float eps, tsr_ref x,
                                    tsr_ref gamma, tsr_ref beta, tsr_ref y, tsr_ref mean,
                                    tsr_ref rstd) {
    BE_CHECK();
    HAS_SLOT(layernorm_forward);
    if (!(eps > 0.0f) || !isfinite(eps))
        return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: eps %g must be finite and > 0", op,
                         (double)eps);
    size_t total;
    TSR_TRY(check_3d(be, op, rows, dim, 1, &total));
    if (!total) return TSR_OK;
    CHECK("x", x, total, F);
    CHECK("gamma", gamma, dim, F);
    CHECK("beta", beta, dim, F);
    CHECK("y", y, total, F);
    CHECK("mean", mean, rows, F);
    CHECK("rstd", rstd, rows, F);
    return be->iface->layernorm_forward(be, rows, dim, eps, x, gamma, beta, y, mean, rstd);
}

tsr_status tsr_op_layernorm_backward(tsr_backend *be, size_t rows, size_t dim, tsr_ref x,
                                     tsr_ref gamma, tsr_ref mean, tsr_ref rstd, tsr_ref dy,
                                     tsr_ref dx, tsr_ref dgamma, tsr_ref dbeta, int add_dx) {
    BE_CHECK();
    HAS_SLOT(layernorm_backward);
    size_t total;
    TSR_TRY(check_3d(be, op, rows, dim, 1, &total));
    if (!total) return TSR_OK;
    CHECK("x", x, total, F);
    CHECK("gamma", gamma, dim, F);
    CHECK("mean", mean, rows, F);
    CHECK("rstd", rstd, rows, F);
    CHECK("dy", dy, total, F);
    CHECK("dx", dx, total, F);
    CHECK("dgamma", dgamma, dim, F);
    CHECK("dbeta", dbeta, dim, F);
    return be->iface->layernorm_backward(be, rows, dim, x, gamma, mean, rstd, dy, dx, dgamma,
                                         dbeta, add_dx);
}

tsr_status tsr_op_gelu_forward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref y) {
    BE_CHECK();
    HAS_SLOT(gelu_forward);
    CHECK("x", x, n, F);
    CHECK("y", y, n, F);
    return n ? be->iface->gelu_forward(be, n, x, y) : TSR_OK;
}

tsr_status tsr_op_gelu_backward(tsr_backend *be, size_t n, tsr_ref x, tsr_ref dy, tsr_ref dx) {
    BE_CHECK();
    HAS_SLOT(gelu_backward);
    CHECK("x", x, n, F);
    CHECK("dy", dy, n, F);
    CHECK("dx", dx, n, F);
    return n ? be->iface->gelu_backward(be, n, x, dy, dx) : TSR_OK;
}

/* Element counts of the attention operands: qkv/out (batch*tokens*3C / *C) and scratch. */
static tsr_status check_attn(tsr_backend *be, const char *op, const tsr_attn_geom *g,
                             size_t *qkv, size_t *out, size_t *scratch) {
    if (!g) return tsr_error(be->ctx, TSR_ERR_INVALID_ARG, "%s: NULL geometry", op);
    if (!g->heads || g->channels % g->heads)
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: %zu channels do not split into %zu heads",
                         op, g->channels, g->heads);
    size_t bt, c3, bh;
    if (tsr_mul_size(g->batch, g->tokens, &bt) || tsr_mul_size(g->channels, 3, &c3) ||
        tsr_mul_size(bt, c3, qkv) || tsr_mul_size(bt, g->channels, out) ||
        tsr_mul_size(g->batch, g->heads, &bh) || tsr_mul_size(bh, g->tokens, scratch) ||
        tsr_mul_size(*scratch, g->tokens, scratch) || tsr_mul_size(*scratch, 2, scratch))
        return tsr_error(be->ctx, TSR_ERR_SHAPE,
                         "%s: batch %zu x tokens %zu x channels %zu x heads %zu overflows", op,
                         g->batch, g->tokens, g->channels, g->heads);
    return TSR_OK;
}

tsr_status tsr_op_attention_forward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                    tsr_ref scratch, tsr_ref out) {
    BE_CHECK();
    HAS_SLOT(attention_forward);
    size_t nqkv, nout, nscratch;
    TSR_TRY(check_attn(be, op, g, &nqkv, &nout, &nscratch));
    if (!nout) return TSR_OK;
    CHECK("qkv", qkv, nqkv, F);
    CHECK("scratch", scratch, nscratch, F);
    CHECK("out", out, nout, F);
    if (be->precision != TSR_PRECISION_FP32)
        return tsr_backend_attention16_forward(be, g, nqkv, qkv, scratch, out);
    return be->iface->attention_forward(be, g, qkv, scratch, out);
}

tsr_status tsr_op_attention_backward(tsr_backend *be, const tsr_attn_geom *g, tsr_ref qkv,
                                     tsr_ref dout, tsr_ref scratch, tsr_ref dqkv) {
    BE_CHECK();
    HAS_SLOT(attention_backward);
    size_t nqkv, nout, nscratch;
    TSR_TRY(check_attn(be, op, g, &nqkv, &nout, &nscratch));
    if (!nout) return TSR_OK;
    CHECK("qkv", qkv, nqkv, F);
    CHECK("dout", dout, nout, F);
    CHECK("scratch", scratch, nscratch, F);
    CHECK("dqkv", dqkv, nqkv, F);
    if (be->precision != TSR_PRECISION_FP32)
        return tsr_backend_attention16_backward(be, g, nqkv, nout, qkv, dout, scratch, dqkv);
    return be->iface->attention_backward(be, g, qkv, dout, scratch, dqkv);
}

/* Cross-entropy shapes: rows x cols without overflow, and (with rows) 1..2^31-1 classes. */
static tsr_status check_xent(tsr_backend *be, const char *op, size_t rows, size_t cols,
                             size_t *total) {
    TSR_TRY(check_3d(be, op, rows, cols, 1, total));
    if (rows && (!cols || cols > INT32_MAX))
        return tsr_error(be->ctx, TSR_ERR_SHAPE, "%s: %zu classes not in [1, 2^31 - 1]", op, cols);
    return TSR_OK;
}

tsr_status tsr_op_xent_forward(tsr_backend *be, size_t rows, size_t cols, tsr_ref logits,
                               tsr_ref targets, tsr_ref probs, tsr_ref loss) {
    BE_CHECK();
    HAS_SLOT(xent_forward);
    size_t total;
    TSR_TRY(check_xent(be, op, rows, cols, &total));
    if (!rows) return TSR_OK;
    CHECK("logits", logits, total, F);
    CHECK("targets", targets, rows, F);
    CHECK("probs", probs, total, F);
    CHECK("loss", loss, rows, F);
    return be->iface->xent_forward(be, rows, cols, logits, targets, probs, loss);
}

tsr_status tsr_op_xent_backward(tsr_backend *be, size_t rows, size_t cols, tsr_ref probs,
                                tsr_ref targets, float scale, tsr_ref dlogits) {
    BE_CHECK();
    HAS_SLOT(xent_backward);
    size_t total;
    TSR_TRY(check_xent(be, op, rows, cols, &total));
    if (!rows) return TSR_OK;
    CHECK("probs", probs, total, F);
    CHECK("targets", targets, rows, F);
    CHECK("dlogits", dlogits, total, F);
    return be->iface->xent_backward(be, rows, cols, probs, targets, scale, dlogits);
}

/* ---- IEEE half <-> float: the precision module's (one rounding for the whole library) ---- */
uint16_t tsr_f32_to_f16_scalar(float f) { return tsr_f32_to_f16(f); }
float tsr_f16_to_f32_scalar(uint16_t h) { return tsr_f16_to_f32(h); }
