/* The transformer (GPT-2) backend ops — layer norm, GELU, the causal attention core,
 * cross-entropy with ignored positions — and the GEMM compositions that serve as the Conv1D
 * linear and the tied language-model head, checked at odd shapes against plain-C references
 * in double precision. Each reference backward is itself checked by central differences of
 * its reference forward (loss = sum of dy * y), so a formula mistake shared by kernel and
 * reference cannot pass. Every case runs on the host backend, with 1 and 3 pool threads that
 * must give the same bits, and on every OpenCL device of the machine (PoCL here), twice, with
 * the same bits both times (the kernels use no atomics); a machine without an OpenCL device
 * skips the OpenCL tests, saying so. A backend without these ops refuses them by name.
 *
 * Tolerances, the same for every backend, u = 2^-24: a float result built from q rounded
 * terms is allowed K * (q + 8) * u * (sum of |terms| + 1), K = 8 (room for exp/tanh's few ulp
 * -- OpenCL allows 3 and 5 -- its division and sqrt's 2.5 and 3 ulp, and chained roundings);
 * GELU K = 16 on its argument's rounding; the finite differences (h = 1e-5, double) are
 * allowed 1e-6 * (1 + |g|). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "backends/backend.h"
#include "lib/core/internal.h"
#include "support/test_util.h"
#if TSR_WITH_OPENCL
#include "backends/opencl/opencl.h"
#endif

const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\nleak:libclblast\n";
}

#define U (1.0 / 16777216.0)
#define FD_H 1e-5
#define FD_TOL 1e-6

#define OK(be, call)                                                                       \
    do {                                                                                   \
        tsr_status ok_s_ = (call);                                                         \
        if (ok_s_ != TSR_OK)                                                               \
            fail_msg("[%s] %s -> %s: %s", (be)->device.id, #call, tsr_status_name(ok_s_), \
                     tsr_context_last_error((be)->ctx));                                   \
    } while (0)

/* ---- helpers ---- */

static void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size);
    assert_non_null(p);
    return p;
}

static float *random_floats(size_t n, uint64_t seed, float lo, float hi) {
    float *x = xcalloc(n, sizeof *x);
    tsr_test_fill_uniform(x, n, seed, lo, hi);
    return x;
}

static double *to_double(const float *x, size_t n) {
    double *d = xcalloc(n, sizeof *d);
    for (size_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* A host backend whose pool has `threads` threads (its own context). */
typedef struct host {
    tsr_context *ctx;
    tsr_backend *be;
} host;

static host host_open(int threads) {
    host h = {NULL, NULL};
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    o.log_level = TSR_LOG_OFF;
    o.host_threads = threads;
    assert_int_equal(tsr_context_create(&h.ctx, &o), TSR_OK);
    assert_int_equal(tsr_backend_host_create(h.ctx, &h.be), TSR_OK);
    return h;
}

static void host_close(host *h) {
    tsr_backend_free(h->be);
    tsr_context_free(h->ctx);
}

static tsr_buf *buf_new(tsr_backend *be, size_t bytes) {
    tsr_buf *b = NULL;
    OK(be, tsr_buf_alloc(be, bytes, &b));
    return b;
}

static tsr_buf *upload(tsr_backend *be, const void *data, size_t bytes) {
    tsr_buf *b = buf_new(be, bytes);
    OK(be, tsr_buf_write(b, 0, data, bytes));
    return b;
}

static void download(tsr_buf *b, void *dst, size_t bytes) {
    OK(b->backend, tsr_buf_read(b, 0, dst, bytes));
}

static tsr_ref at(tsr_buf *b) {
    return tsr_ref_at(b, 0);
}

/* |got - want| <= tol[i]; names the check and the worst element. */
static void check_close(const char *what, const float *got, const double *want, const double *tol,
                        size_t n) {
    size_t bad = n, count = 0;
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (isnan(want[i]) && isnan(got[i])) continue;
        if (!(e <= tol[i])) {
            count++;
            double r = isnan(e) ? INFINITY : e / tol[i];
            if (bad == n || r > worst) {
                worst = r;
                bad = i;
            }
        }
    }
    if (count)
        fail_msg("%s: %zu of %zu elements out of tolerance; worst [%zu] got %.9g want %.9g "
                 "(tol %.3g)",
                 what, count, n, bad, (double)got[bad], want[bad], tol[bad]);
}

/* Reference analytic gradient vs central differences of f at x (double). */
typedef double (*loss_fn)(void *ctx, const double *x);
static void check_fd(const char *what, loss_fn f, void *ctx, double *x, const double *grad,
                     size_t n) {
    for (size_t i = 0; i < n; i++) {
        double keep = x[i];
        x[i] = keep + FD_H;
        double lp = f(ctx, x);
        x[i] = keep - FD_H;
        double lm = f(ctx, x);
        x[i] = keep;
        double fd = (lp - lm) / (2 * FD_H);
        if (!(fabs(fd - grad[i]) <= FD_TOL * (1 + fabs(grad[i]))))
            fail_msg("%s: element %zu of %zu: analytic %.12g, central difference %.12g", what, i,
                     n, grad[i], fd);
    }
}

/* ---- where a case runs ----
 * dev NULL: the host backend, once with 1 and once with 3 pool threads; otherwise an OpenCL
 * device, twice in a row. Either way the two runs must agree to the bit. */
typedef struct twice {
    host h1, h3;
    tsr_backend *be[2];
} twice;

static twice twice_open(tsr_backend *dev) {
    twice t = {{NULL, NULL}, {NULL, NULL}, {dev, dev}};
    if (!dev) {
        t.h1 = host_open(1);
        t.h3 = host_open(3);
        t.be[0] = t.h1.be;
        t.be[1] = t.h3.be;
    }
    return t;
}

static void twice_close(twice *t) {
    if (t->h1.be) host_close(&t->h1);
    if (t->h3.be) host_close(&t->h3);
}

static void same_bits(tsr_backend *dev, const char *what, const float *a, const float *b,
                      size_t n) {
    if (memcmp(a, b, n * sizeof *a) != 0)
        fail_msg("[%s] %s: %s", dev ? dev->device.id : "host", what,
                 dev ? "two runs give different bits" : "results with 3 threads differ from 1");
}

/* Names the device in a failing check. */
static char what_buf[160];
static const char *on(tsr_backend *dev, const char *what) {
    snprintf(what_buf, sizeof what_buf, "[%s] %s", dev ? dev->device.id : "host", what);
    return what_buf;
}

static double dot(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ---- layer norm ---- */

#define LN_EPS 1e-5

typedef struct ln_ref {
    size_t rows, dim;
    const double *gamma, *beta, *dy; /* dy: the loss weights for central differences */
    double *y, *mean, *rstd, *ay;    /* ay: |terms| for the tolerance */
} ln_ref;

static void ln_ref_forward(ln_ref *r, const double *x) {
    for (size_t i = 0; i < r->rows; i++) {
        const double *xr = x + i * r->dim;
        double m = 0, v = 0;
        for (size_t j = 0; j < r->dim; j++) m += xr[j];
        m /= (double)r->dim;
        for (size_t j = 0; j < r->dim; j++) v += (xr[j] - m) * (xr[j] - m);
        v /= (double)r->dim;
        double s = 1 / sqrt(v + LN_EPS);
        r->mean[i] = m;
        r->rstd[i] = s;
        for (size_t j = 0; j < r->dim; j++) {
            double xh = (xr[j] - m) * s;
            r->y[i * r->dim + j] = xh * r->gamma[j] + r->beta[j];
            if (r->ay) r->ay[i * r->dim + j] = fabs(xh * r->gamma[j]) + fabs(r->beta[j]);
        }
    }
}

static double ln_loss_x(void *ctx, const double *x) {
    ln_ref *r = ctx;
    ln_ref_forward(r, x);
    return dot(r->y, r->dy, r->rows * r->dim);
}

/* x is fixed, the parameters vary: gamma then beta in one vector. */
typedef struct ln_param_ctx {
    ln_ref *r;
    const double *x;
} ln_param_ctx;
static double ln_loss_params(void *ctx, const double *gb) {
    ln_param_ctx *c = ctx;
    ln_ref r = *c->r;
    r.gamma = gb;
    r.beta = gb + r.dim;
    r.ay = NULL;
    ln_ref_forward(&r, c->x);
    return dot(r.y, r.dy, r.rows * r.dim);
}

/* dx, then dgamma/dbeta appended in dgb (2*dim). */
static void ln_ref_backward(const ln_ref *r, const double *x, double *dx, double *dgb) {
    size_t d = r->dim;
    memset(dgb, 0, 2 * d * sizeof *dgb);
    for (size_t i = 0; i < r->rows; i++) {
        const double *xr = x + i * d, *dy = r->dy + i * d;
        double m = r->mean[i], s = r->rstd[i], gm = 0, gxm = 0;
        for (size_t j = 0; j < d; j++) {
            double xh = (xr[j] - m) * s, g = r->gamma[j] * dy[j];
            gm += g;
            gxm += g * xh;
            dgb[j] += dy[j] * xh;
            dgb[d + j] += dy[j];
        }
        gm /= (double)d;
        gxm /= (double)d;
        for (size_t j = 0; j < d; j++) {
            double xh = (xr[j] - m) * s;
            dx[i * d + j] = (r->gamma[j] * dy[j] - gm - xh * gxm) * s;
        }
    }
}

/* Runs the kernels on `be`; outputs y, mean, rstd, dx (added to dx0), dgamma, dbeta (added
 * to 0.25 and -0.5) in one array. */
static void ln_run(tsr_backend *be, size_t rows, size_t dim, const float *x, const float *g,
                   const float *b, const float *dy, const float *dx0, float *out) {
    size_t n = rows * dim;
    float *pg = xcalloc(dim, 4), *pb = xcalloc(dim, 4);
    for (size_t j = 0; j < dim; j++) pg[j] = 0.25f, pb[j] = -0.5f;
    tsr_buf *bx = upload(be, x, n * 4), *bg = upload(be, g, dim * 4), *bb = upload(be, b, dim * 4);
    tsr_buf *bdy = upload(be, dy, n * 4), *bdx = upload(be, dx0, n * 4);
    tsr_buf *by = buf_new(be, n * 4), *bm = buf_new(be, rows * 4), *bs = buf_new(be, rows * 4);
    tsr_buf *bdg = upload(be, pg, dim * 4), *bdb = upload(be, pb, dim * 4);
    OK(be, tsr_op_layernorm_forward(be, rows, dim, (float)LN_EPS, at(bx), at(bg), at(bb), at(by),
                                    at(bm), at(bs)));
    OK(be, tsr_op_layernorm_backward(be, rows, dim, at(bx), at(bg), at(bm), at(bs), at(bdy),
                                     at(bdx), at(bdg), at(bdb), 1));
    download(by, out, n * 4);
    download(bm, out + n, rows * 4);
    download(bs, out + n + rows, rows * 4);
    download(bdx, out + n + 2 * rows, n * 4);
    download(bdg, out + 2 * n + 2 * rows, dim * 4);
    download(bdb, out + 2 * n + 2 * rows + dim, dim * 4);
    tsr_buf *all[] = {bx, bg, bb, bdy, bdx, by, bm, bs, bdg, bdb};
    for (size_t i = 0; i < TSR_ARRAY_SIZE(all); i++) tsr_buf_free(all[i]);
    free(pg);
    free(pb);
}

static void ln_case(tsr_backend *dev, size_t rows, size_t dim, uint64_t seed, int fd) {
    size_t n = rows * dim, total = 2 * n + 2 * rows + 2 * dim;
    float *x = random_floats(n, seed, -3, 3), *g = random_floats(dim, seed + 1, -1.5f, 1.5f);
    float *b = random_floats(dim, seed + 2, -1, 1), *dy = random_floats(n, seed + 3, -1, 1);
    float *dx0 = random_floats(n, seed + 4, -1, 1);
    for (size_t i = 0; i < n; i++) x[i] += (float)(i % dim) * 0.1f; /* uneven rows */
    float *got = xcalloc(total, 4), *again = xcalloc(total, 4);
    twice t = twice_open(dev);
    ln_run(t.be[0], rows, dim, x, g, b, dy, dx0, got);
    ln_run(t.be[1], rows, dim, x, g, b, dy, dx0, again);
    twice_close(&t);
    same_bits(dev, "layernorm", got, again, total);

    double *dxd = to_double(x, n), *gd = to_double(g, dim), *bd = to_double(b, dim);
    double *dyd = to_double(dy, n);
    ln_ref r = {rows, dim, gd, bd, dyd, xcalloc(n, 8), xcalloc(rows, 8), xcalloc(rows, 8),
                xcalloc(n, 8)};
    ln_ref_forward(&r, dxd);
    double *rdx = xcalloc(n, 8), *rdgb = xcalloc(2 * dim, 8), *tol = xcalloc(n, 8);
    ln_ref_backward(&r, dxd, rdx, rdgb);
    double k = 8 * U * (double)(dim + 8);
    for (size_t i = 0; i < n; i++) tol[i] = k * (r.ay[i] + 1);
    check_close(on(dev, "layernorm y"), got, r.y, tol, n);
    for (size_t i = 0; i < rows; i++) tol[i] = k * (fabs(r.mean[i]) + 3);
    check_close(on(dev, "layernorm mean"), got + n, r.mean, tol, rows);
    for (size_t i = 0; i < rows; i++) tol[i] = k * r.rstd[i];
    check_close(on(dev, "layernorm rstd"), got + n + rows, r.rstd, tol, rows);
    /* dx += the gradient: every term of dx is bounded by rstd * 3 * |g| sums */
    for (size_t i = 0; i < n; i++) {
        double s = r.rstd[i / dim], gy = 0;
        for (size_t j = 0; j < dim; j++) gy += fabs(gd[j] * dyd[(i / dim) * dim + j]);
        double xh = (dxd[i] - r.mean[i / dim]) * s;
        rdx[i] += dx0[i];
        tol[i] = k * s * (fabs(gd[i % dim] * dyd[i]) + (1 + fabs(xh)) * gy / (double)dim) +
                 2 * U * fabs(rdx[i]);
    }
    check_close(on(dev, "layernorm dx (added)"), got + n + 2 * rows, rdx, tol, n);
    double *dgb = xcalloc(2 * dim, 8), *tgb = xcalloc(2 * dim, 8);
    double kr = 8 * U * (double)(rows + 8);
    for (size_t j = 0; j < dim; j++) {
        double sg = 0, sb = 0;
        for (size_t i = 0; i < rows; i++) {
            double xh = (dxd[i * dim + j] - r.mean[i]) * r.rstd[i];
            sg += fabs(dyd[i * dim + j] * xh);
            sb += fabs(dyd[i * dim + j]);
        }
        dgb[j] = rdgb[j] + 0.25, dgb[dim + j] = rdgb[dim + j] - 0.5;
        tgb[j] = kr * (sg + 1), tgb[dim + j] = kr * (sb + 1);
    }
    check_close(on(dev, "layernorm dgamma/dbeta (added)"), got + 2 * n + 2 * rows, dgb, tgb,
                2 * dim);

    if (fd && !dev) { /* the reference backward against central differences */
        ln_ref_backward(&r, dxd, rdx, rdgb);
        ln_ref rr = r;
        rr.ay = NULL;
        check_fd("layernorm reference dx", ln_loss_x, &rr, dxd, rdx, n);
        double *gb = xcalloc(2 * dim, 8);
        memcpy(gb, gd, dim * 8);
        memcpy(gb + dim, bd, dim * 8);
        ln_param_ctx pc = {&rr, dxd};
        check_fd("layernorm reference dgamma/dbeta", ln_loss_params, &pc, gb, rdgb, 2 * dim);
        free(gb);
    }
    free(x), free(g), free(b), free(dy), free(dx0), free(got), free(again);
    free(dxd), free(gd), free(bd), free(dyd), free(r.y), free(r.mean), free(r.rstd), free(r.ay);
    free(rdx), free(rdgb), free(tol), free(dgb), free(tgb);
}

static void layernorm_cases(tsr_backend *dev) {
    ln_case(dev, 7, 13, 11, 1);
    ln_case(dev, 1, 1, 12, 0);   /* one element: y = beta, dx = 0 */
    ln_case(dev, 5, 300, 13, 1); /* more than one 256-column slice (and work-group) */
    ln_case(dev, 600, 96, 14, 0); /* splits over the threads */
    ln_case(dev, 3, 1000, 15, 0); /* rows longer than a work-group, not a multiple of it */
}

/* ---- GELU ---- */

static const double GELU_K = 0.79788456080286535588; /* sqrt(2/pi) */

static double gelu_ref(double x) {
    return 0.5 * x * (1 + tanh(GELU_K * (x + 0.044715 * x * x * x)));
}
static double gelu_grad_ref(double x) {
    double t = tanh(GELU_K * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_K * (1 + 3 * 0.044715 * x * x);
}

static void gelu_run(tsr_backend *be, size_t n, const float *x, const float *dy, float *out) {
    tsr_buf *bx = upload(be, x, n * 4), *bd = upload(be, dy, n * 4), *by = upload(be, x, n * 4);
    OK(be, tsr_op_gelu_forward(be, n, at(bx), at(by)));
    OK(be, tsr_op_gelu_backward(be, n, at(bx), at(bd), at(bd))); /* dx over dy */
    download(by, out, n * 4);
    download(bd, out + n, n * 4);
    tsr_buf_free(bx), tsr_buf_free(bd), tsr_buf_free(by);
}

static double gelu_fd_loss(void *ctx, const double *x) {
    (void)ctx;
    return gelu_ref(x[0]);
}

static void gelu_cases(tsr_backend *dev) {
    const size_t n = 100003; /* odd, and large enough to split */
    float *x = random_floats(n, 21, -6, 6), *dy = random_floats(n, 22, -1, 1);
    x[0] = 0, x[1] = -20, x[2] = 20, x[3] = 1e-3f, x[4] = -1e-3f, x[5] = 40;
    float *got = xcalloc(2 * n, 4), *again = xcalloc(2 * n, 4);
    twice t = twice_open(dev);
    gelu_run(t.be[0], n, x, dy, got);
    gelu_run(t.be[1], n, x, dy, again);
    twice_close(&t);
    same_bits(dev, "gelu", got, again, 2 * n);
    double *ry = xcalloc(n, 8), *rd = xcalloc(n, 8), *ty = xcalloc(n, 8), *td = xcalloc(n, 8);
    for (size_t i = 0; i < n; i++) {
        double xi = x[i], g = gelu_grad_ref(xi);
        ry[i] = gelu_ref(xi);
        rd[i] = g * dy[i];
        /* tanh's argument carries |x|(1 + 0.13 x^2) u of rounding, scaled by x/2 * sech^2 */
        double arg = fabs(xi) * (1 + 0.134 * xi * xi) * GELU_K;
        ty[i] = 16 * U * (fabs(ry[i]) + fabs(xi) + arg * fabs(xi)) + 1e-30;
        td[i] = 16 * U * (1 + arg * (1 + fabs(xi)) * (1 + 0.134 * xi * xi)) * fabs(dy[i]) + 1e-30;
        if (i < 1000 && !dev) { /* the reference derivative by central differences */
            double xx = xi;
            check_fd("gelu reference derivative", gelu_fd_loss, NULL, &xx, &g, 1);
        }
    }
    check_close(on(dev, "gelu y"), got, ry, ty, n);
    check_close(on(dev, "gelu dx"), got + n, rd, td, n);
    free(x), free(dy), free(got), free(again), free(ry), free(rd), free(ty), free(td);
}

/* ---- causal self-attention ---- */

typedef struct attn_ref {
    size_t B, T, C, NH;
    const double *dout;
    double *att, *out, *aout; /* aout: |terms| of out for the tolerance */
} attn_ref;

static void attn_ref_forward(attn_ref *r, const double *qkv) {
    size_t T = r->T, C = r->C, hs = C / r->NH;
    double scale = 1 / sqrt((double)hs);
    for (size_t b = 0; b < r->B; b++)
        for (size_t h = 0; h < r->NH; h++) {
            double *att = r->att + (b * r->NH + h) * T * T;
            for (size_t t = 0; t < T; t++) {
                const double *q = qkv + (b * T + t) * 3 * C + h * hs;
                double mx = -INFINITY, sum = 0;
                for (size_t j = 0; j < T; j++) {
                    const double *k = qkv + (b * T + j) * 3 * C + C + h * hs;
                    att[t * T + j] = j <= t ? scale * dot(q, k, hs) : 0;
                    if (j <= t && att[t * T + j] > mx) mx = att[t * T + j];
                }
                for (size_t j = 0; j <= t; j++) sum += att[t * T + j] = exp(att[t * T + j] - mx);
                for (size_t j = 0; j <= t; j++) att[t * T + j] /= sum;
                for (size_t i = 0; i < hs; i++) {
                    double o = 0, ao = 0;
                    for (size_t j = 0; j <= t; j++) {
                        double v = qkv[(b * T + j) * 3 * C + 2 * C + h * hs + i];
                        o += att[t * T + j] * v;
                        ao += att[t * T + j] * fabs(v);
                    }
                    r->out[(b * T + t) * C + h * hs + i] = o;
                    if (r->aout) r->aout[(b * T + t) * C + h * hs + i] = ao;
                }
            }
        }
}

static double attn_loss(void *ctx, const double *qkv) {
    attn_ref *r = ctx;
    attn_ref_forward(r, qkv);
    return dot(r->out, r->dout, r->B * r->T * r->C);
}

/* llm.c's attention_backward in double, written as loops. */
static void attn_ref_backward(const attn_ref *r, const double *qkv, double *dqkv) {
    size_t T = r->T, C = r->C, hs = C / r->NH;
    double scale = 1 / sqrt((double)hs);
    memset(dqkv, 0, r->B * T * 3 * C * sizeof *dqkv);
    double *datt = xcalloc(T, 8);
    for (size_t b = 0; b < r->B; b++)
        for (size_t h = 0; h < r->NH; h++) {
            const double *att = r->att + (b * r->NH + h) * T * T;
            for (size_t t = 0; t < T; t++) {
                const double *dout = r->dout + (b * T + t) * C + h * hs;
                for (size_t j = 0; j <= t; j++) {
                    const double *v = qkv + (b * T + j) * 3 * C + 2 * C + h * hs;
                    double *dv = dqkv + (b * T + j) * 3 * C + 2 * C + h * hs;
                    datt[j] = dot(dout, v, hs);
                    for (size_t i = 0; i < hs; i++) dv[i] += att[t * T + j] * dout[i];
                }
                double s = 0;
                for (size_t j = 0; j <= t; j++) s += att[t * T + j] * datt[j];
                const double *q = qkv + (b * T + t) * 3 * C + h * hs;
                double *dq = dqkv + (b * T + t) * 3 * C + h * hs;
                for (size_t j = 0; j <= t; j++) {
                    double dpre = att[t * T + j] * (datt[j] - s) * scale;
                    const double *k = qkv + (b * T + j) * 3 * C + C + h * hs;
                    double *dk = dqkv + (b * T + j) * 3 * C + C + h * hs;
                    for (size_t i = 0; i < hs; i++) {
                        dq[i] += dpre * k[i];
                        dk[i] += dpre * q[i];
                    }
                }
            }
        }
    free(datt);
}

/* out then dqkv into `out`. The scratch is dirtied again between the passes: backward
 * recomputes the weights and must not read what the forward left there. */
static void attn_run(tsr_backend *be, const tsr_attn_geom *g, const float *qkv, const float *dout,
                     float *out) {
    size_t nq = g->batch * g->tokens * 3 * g->channels, no = g->batch * g->tokens * g->channels;
    size_t ns = TSR_ATTN_SCRATCH(g);
    float *junk = random_floats(nq > ns ? nq : ns, 99, -1e3f, 1e3f); /* outputs start dirty */
    tsr_buf *bq = upload(be, qkv, nq * 4), *bd = upload(be, dout, no * 4);
    tsr_buf *bo = upload(be, junk, no * 4);
    tsr_buf *bs = upload(be, junk, ns * 4), *bdq = upload(be, junk, nq * 4);
    OK(be, tsr_op_attention_forward(be, g, at(bq), at(bs), at(bo)));
    OK(be, tsr_buf_write(bs, 0, junk + 1, (ns - 1) * 4));
    OK(be, tsr_op_attention_backward(be, g, at(bq), at(bd), at(bs), at(bdq)));
    download(bo, out, no * 4);
    download(bdq, out + no, nq * 4);
    tsr_buf_free(bq), tsr_buf_free(bd), tsr_buf_free(bo), tsr_buf_free(bs);
    tsr_buf_free(bdq);
    free(junk);
}

static void attn_case(tsr_backend *dev, size_t B, size_t T, size_t C, size_t NH, uint64_t seed,
                      int fd) {
    tsr_attn_geom g = {B, T, C, NH};
    size_t nq = B * T * 3 * C, no = B * T * C, na = B * NH * T * T, hs = C / NH;
    size_t total = no + nq;
    float *qkv = random_floats(nq, seed, -1.5f, 1.5f), *dout = random_floats(no, seed + 1, -1, 1);
    float *got = xcalloc(total, 4), *again = xcalloc(total, 4);
    twice t = twice_open(dev);
    attn_run(t.be[0], &g, qkv, dout, got);
    attn_run(t.be[1], &g, qkv, dout, again);
    twice_close(&t);
    same_bits(dev, "attention", got, again, total);

    double *qd = to_double(qkv, nq), *dd = to_double(dout, no);
    attn_ref r = {B, T, C, NH, dd, xcalloc(na, 8), xcalloc(no, 8), xcalloc(no, 8)};
    attn_ref_forward(&r, qd);
    double *rdq = xcalloc(nq, 8), *tol = xcalloc(total, 8);
    attn_ref_backward(&r, qd, rdq);
    /* scores sum hs products of |q||k| <= 2.25 (scaled), softmax adds T terms: a relative
     * error of K (hs + T + 8) u * (1 + max score) on att, carried into out and the gradients */
    double k = 8 * U * (double)(hs + T + 8) * (1 + 2.25 * sqrt((double)hs));
    for (size_t i = 0; i < no; i++) tol[i] = k * (r.aout[i] + 1);
    check_close(on(dev, "attention out"), got, r.out, tol, no);
    /* gradients: the same relative error, on each element and on the typical magnitude
     * (softmax backward subtracts terms of that size) */
    double mean_dq = 0;
    for (size_t i = 0; i < nq; i++) mean_dq += fabs(rdq[i]) / (double)nq;
    for (size_t i = 0; i < nq; i++) tol[i] = k * (fabs(rdq[i]) + mean_dq);
    check_close(on(dev, "attention dqkv"), got + no, rdq, tol, nq);
    if (fd && !dev) {
        attn_ref rr = r;
        rr.aout = NULL;
        check_fd("attention reference dqkv", attn_loss, &rr, qd, rdq, nq);
    }
    free(qkv), free(dout), free(got), free(again), free(qd), free(dd), free(r.att), free(r.out);
    free(r.aout), free(rdq), free(tol);
}

static void attention_cases(tsr_backend *dev) {
    attn_case(dev, 2, 7, 15, 3, 31, 1);  /* head size 5 */
    attn_case(dev, 1, 1, 4, 1, 32, 1);   /* one token: att = 1, out = v */
    attn_case(dev, 3, 17, 24, 4, 33, 1); /* head size 6 */
    attn_case(dev, 2, 64, 64, 4, 34, 0); /* pairs split over the threads */
    attn_case(dev, 5, 3, 6, 2, 35, 0);   /* more sequences than heads */
    attn_case(dev, 1, 150, 16, 2, 36, 0); /* the host's query blocks: 64, 64 and 22 rows */
}

/* ---- cross-entropy with ignored positions ---- */

typedef struct xent_ref {
    size_t rows, cols;
    const int32_t *targets;
    double scale;
} xent_ref;

static double xent_mean_loss(void *ctx, const double *l) {
    const xent_ref *r = ctx;
    double s = 0;
    for (size_t i = 0; i < r->rows; i++) {
        if (r->targets[i] == -1) continue;
        const double *z = l + i * r->cols;
        double mx = z[0], e = 0;
        for (size_t j = 1; j < r->cols; j++) mx = z[j] > mx ? z[j] : mx;
        for (size_t j = 0; j < r->cols; j++) e += exp(z[j] - mx);
        s += log(e) + mx - z[r->targets[i]];
    }
    return s * r->scale;
}

static void xent_run(tsr_backend *be, size_t rows, size_t cols, const float *logits,
                     const int32_t *targets, float scale, float *out) {
    size_t n = rows * cols;
    tsr_buf *bl = upload(be, logits, n * 4), *bt = upload(be, targets, rows * 4);
    tsr_buf *bloss = upload(be, logits, rows * 4);
    /* probabilities over the logits, gradient over the probabilities: the in-place use */
    OK(be, tsr_op_xent_forward(be, rows, cols, at(bl), at(bt), at(bl), at(bloss)));
    download(bl, out, n * 4);
    OK(be, tsr_op_xent_backward(be, rows, cols, at(bl), at(bt), scale, at(bl)));
    download(bl, out + n, n * 4);
    download(bloss, out + 2 * n, rows * 4);
    tsr_buf_free(bl), tsr_buf_free(bt), tsr_buf_free(bloss);
}

static void xent_case(tsr_backend *dev, size_t rows, size_t cols, uint64_t seed, float spread,
                      int fd) {
    size_t n = rows * cols, total = 2 * n + rows, count = 0;
    float *logits = random_floats(n, seed, -spread, spread);
    int32_t *targets = xcalloc(rows, 4);
    for (size_t i = 0; i < rows; i++) {
        targets[i] = i % 4 == 2 ? -1 : (int32_t)((i * 7919 + seed) % cols);
        count += targets[i] != -1;
    }
    if (rows > 3) targets[3] = (int32_t)cols; /* out of range: NaN row */
    float scale = count ? 1.0f / (float)count : 0.0f;
    float *got = xcalloc(total, 4), *again = xcalloc(total, 4);
    twice t = twice_open(dev);
    xent_run(t.be[0], rows, cols, logits, targets, scale, got);
    xent_run(t.be[1], rows, cols, logits, targets, scale, again);
    twice_close(&t);
    same_bits(dev, "xent", got, again, total);

    double *p = xcalloc(n, 8), *d = xcalloc(n, 8), *loss = xcalloc(rows, 8);
    double *tol = xcalloc(n, 8);
    for (size_t i = 0; i < rows; i++) {
        const float *z = logits + i * cols;
        double mx = z[0], e = 0;
        for (size_t j = 1; j < cols; j++) mx = z[j] > mx ? z[j] : mx;
        for (size_t j = 0; j < cols; j++) e += exp(z[j] - mx);
        int32_t y = targets[i];
        int valid = y >= 0 && (size_t)y < cols;
        loss[i] = y == -1 ? 0 : valid ? log(e) + mx - z[y] : NAN;
        for (size_t j = 0; j < cols; j++) {
            p[i * cols + j] = exp(z[j] - mx) / e;
            d[i * cols + j] = y == -1 ? 0 : valid ? scale * (p[i * cols + j] - (j == (size_t)y)) : NAN;
        }
    }
    double k = 8 * U * (double)(cols + 16 + 2 * spread);
    for (size_t i = 0; i < n; i++) tol[i] = k * p[i] + 1e-30;
    check_close(on(dev, "xent probabilities"), got, p, tol, n);
    for (size_t i = 0; i < n; i++)
        tol[i] = targets[i / cols] == -1 ? 0 : k * scale * (p[i] + 1) + 1e-30;
    check_close(on(dev, "xent dlogits"), got + n, d, tol, n);
    for (size_t i = 0; i < rows; i++) /* ignored rows: exactly 0 */
        tol[i] = targets[i] == -1 ? 0 : k * (fabs(loss[i]) + 2 * spread + 1);
    check_close(on(dev, "xent loss"), got + 2 * n, loss, tol, rows);

    /* the mean over counted positions: central differences of the reference loss (the
     * out-of-range row left out) */
    if (rows > 3) targets[3] = -1, count--;
    xent_ref r = {rows, cols, targets, 1.0 / (double)count};
    double *ld = to_double(logits, n);
    for (size_t i = 0; i < n; i++) {
        int32_t y = targets[i / cols];
        d[i] = y == -1 ? 0 : r.scale * (p[i] - ((size_t)y == i % cols));
    }
    if (fd && !dev) check_fd("xent reference dlogits", xent_mean_loss, &r, ld, d, n);
    free(logits), free(targets), free(got), free(again), free(p), free(d), free(loss), free(tol);
    free(ld);
}

static void xent_cases(tsr_backend *dev) {
    xent_case(dev, 9, 13, 41, 4, 1);
    xent_case(dev, 1, 1, 42, 1, 1);      /* one class: loss 0, gradient 0 */
    xent_case(dev, 300, 257, 43, 20, 0); /* rows split over the threads; large logits */
    xent_case(dev, 6, 1001, 44, 8, 0);   /* rows longer than a work-group */
}

/* ---- linear (Conv1D layout) and the tied head: the existing GEMM and bias ops ---- */

/* y = x W + b with W [cin][cout]; dx = dy W^T; dW += x^T dy; db += sum dy. Then the tied head:
 * logits = y wte^T with wte [V][cout]; dy' = dlogits wte; dwte += dlogits^T y. */
static void linear_and_head_cases(tsr_backend *dev) {
    const size_t bt = 11, cin = 7, cout = 9, V = 13;
    float *x = random_floats(bt * cin, 51, -1, 1), *w = random_floats(cin * cout, 52, -1, 1);
    float *b = random_floats(cout, 53, -1, 1), *dy = random_floats(bt * cout, 54, -1, 1);
    float *wte = random_floats(V * cout, 55, -1, 1), *dl = random_floats(bt * V, 56, -1, 1);
    host h = {NULL, NULL};
    if (!dev) h = host_open(1);
    tsr_backend *be = dev ? dev : h.be;
    tsr_buf *bx = upload(be, x, bt * cin * 4), *bw = upload(be, w, cin * cout * 4);
    tsr_buf *bb = upload(be, b, cout * 4), *bdy = upload(be, dy, bt * cout * 4);
    tsr_buf *bwte = upload(be, wte, V * cout * 4), *bdl = upload(be, dl, bt * V * 4);
    tsr_buf *by = upload(be, dy, bt * cout * 4), *bdx = upload(be, x, bt * cin * 4);
    tsr_buf *bdw = upload(be, w, cin * cout * 4), *bdb = upload(be, b, cout * 4);
    tsr_buf *blog = upload(be, dl, bt * V * 4), *bdh = upload(be, dy, bt * cout * 4);
    tsr_buf *bdwte = upload(be, wte, V * cout * 4);
    /* linear forward and backward (dW, db accumulate onto their initial W, b) */
    OK(be, tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, bt, cout, cin, 1, at(bx), cin, at(bw), cout,
                       0, at(by), cout));
    OK(be, tsr_op_bias_add(be, bt, cout, 1, at(bb), at(by)));
    OK(be, tsr_op_gemm(be, TSR_NO_TRANS, TSR_TRANS, bt, cin, cout, 1, at(bdy), cout, at(bw), cout,
                       0, at(bdx), cin));
    OK(be, tsr_op_gemm(be, TSR_TRANS, TSR_NO_TRANS, cin, cout, bt, 1, at(bx), cin, at(bdy), cout,
                       1, at(bdw), cout));
    OK(be, tsr_op_bias_grad(be, bt, cout, 1, at(bdy), at(bdb)));
    /* tied head over y */
    OK(be, tsr_op_gemm(be, TSR_NO_TRANS, TSR_TRANS, bt, V, cout, 1, at(by), cout, at(bwte), cout,
                       0, at(blog), V));
    OK(be, tsr_op_gemm(be, TSR_NO_TRANS, TSR_NO_TRANS, bt, cout, V, 1, at(bdl), V, at(bwte), cout,
                       0, at(bdh), cout));
    OK(be, tsr_op_gemm(be, TSR_TRANS, TSR_NO_TRANS, V, cout, bt, 1, at(bdl), V, at(by), cout, 1,
                       at(bdwte), cout));
    size_t sizes[] = {bt * cout, bt * cin, cin * cout, cout, bt * V, bt * cout, V * cout};
    tsr_buf *outs[] = {by, bdx, bdw, bdb, blog, bdh, bdwte};
    const char *names[] = {"linear y", "linear dx", "linear dW", "linear db", "head logits",
                           "head dx", "head dwte"};
    float *got[7];
    double *want[7], *tol[7];
    for (size_t i = 0; i < 7; i++) {
        got[i] = xcalloc(sizes[i], 4);
        want[i] = xcalloc(sizes[i], 8);
        tol[i] = xcalloc(sizes[i], 8);
        download(outs[i], got[i], sizes[i] * 4);
    }
    /* references: term sums of |products| for the tolerance (all inputs in [-1, 1]) */
    double yd[11 * 9];
    for (size_t r = 0; r < bt; r++)
        for (size_t o = 0; o < cout; o++) {
            double s = b[o], a = fabs(b[o]);
            for (size_t i = 0; i < cin; i++) {
                s += (double)x[r * cin + i] * w[i * cout + o];
                a += fabs((double)x[r * cin + i] * w[i * cout + o]);
            }
            want[0][r * cout + o] = yd[r * cout + o] = s;
            tol[0][r * cout + o] = 8 * U * (cin + 8) * (a + 1);
        }
    for (size_t r = 0; r < bt; r++)
        for (size_t i = 0; i < cin; i++) {
            double s = 0;
            for (size_t o = 0; o < cout; o++) s += (double)dy[r * cout + o] * w[i * cout + o];
            want[1][r * cin + i] = s;
            tol[1][r * cin + i] = 8 * U * (cout + 8) * (cout + 1);
        }
    for (size_t i = 0; i < cin; i++)
        for (size_t o = 0; o < cout; o++) {
            double s = w[i * cout + o];
            for (size_t r = 0; r < bt; r++) s += (double)x[r * cin + i] * dy[r * cout + o];
            want[2][i * cout + o] = s;
            tol[2][i * cout + o] = 8 * U * (bt + 8) * (bt + 2);
        }
    for (size_t o = 0; o < cout; o++) {
        double s = b[o];
        for (size_t r = 0; r < bt; r++) s += dy[r * cout + o];
        want[3][o] = s;
        tol[3][o] = 8 * U * (bt + 8) * (bt + 2);
    }
    for (size_t r = 0; r < bt; r++)
        for (size_t v = 0; v < V; v++) {
            double s = 0, a = 0;
            for (size_t o = 0; o < cout; o++) {
                s += yd[r * cout + o] * wte[v * cout + o];
                a += fabs(yd[r * cout + o] * wte[v * cout + o]);
            }
            want[4][r * V + v] = s;
            /* y itself carries its own rounding: allow for it, (cin + 8) relative */
            tol[4][r * V + v] = 8 * U * (cout + cin + 16) * (a + 1) * (cin + 2);
        }
    for (size_t r = 0; r < bt; r++)
        for (size_t o = 0; o < cout; o++) {
            double s = 0;
            for (size_t v = 0; v < V; v++) s += (double)dl[r * V + v] * wte[v * cout + o];
            want[5][r * cout + o] = s;
            tol[5][r * cout + o] = 8 * U * (V + 8) * (V + 1);
        }
    for (size_t v = 0; v < V; v++)
        for (size_t o = 0; o < cout; o++) {
            double s = wte[v * cout + o], a = fabs(s);
            for (size_t r = 0; r < bt; r++) {
                s += (double)dl[r * V + v] * yd[r * cout + o];
                a += fabs(dl[r * V + v] * yd[r * cout + o]);
            }
            want[6][v * cout + o] = s;
            tol[6][v * cout + o] = 8 * U * (bt + cin + 16) * (a + 1) * (cin + 2);
        }
    for (size_t i = 0; i < 7; i++) {
        check_close(on(dev, names[i]), got[i], want[i], tol[i], sizes[i]);
        free(got[i]), free(want[i]), free(tol[i]);
    }
    tsr_buf *all[] = {bx, bw, bb, bdy, bwte, bdl, by, bdx, bdw, bdb, blog, bdh, bdwte};
    for (size_t i = 0; i < TSR_ARRAY_SIZE(all); i++) tsr_buf_free(all[i]);
    if (h.be) host_close(&h);
    free(x), free(w), free(b), free(dy), free(wte), free(dl);
}

/* ---- argument checks, and backends without the ops ---- */

static void expect(tsr_backend *be, tsr_status got, tsr_status want, const char *needle) {
    if (got != want)
        fail_msg("[%s] status %s, want %s (%s)", be->device.id, tsr_status_name(got),
                 tsr_status_name(want), tsr_context_last_error(be->ctx));
    if (!strstr(tsr_context_last_error(be->ctx), needle))
        fail_msg("[%s] error \"%s\" does not name \"%s\"", be->device.id,
                 tsr_context_last_error(be->ctx), needle);
}

static void test_errors(void **state) {
    (void)state;
    host h = host_open(1);
    tsr_backend *be = h.be;
    tsr_buf *b = buf_new(be, 64 * 4);
    tsr_ref r = at(b);
    tsr_attn_geom g = {1, 4, 6, 4};
    expect(be, tsr_op_attention_forward(be, &g, r, r, r), TSR_ERR_SHAPE, "6 channels do not split into 4 heads");
    g.heads = 2; /* qkv needs 72 floats */
    expect(be, tsr_op_attention_forward(be, &g, r, r, r), TSR_ERR_SHAPE, "operand qkv needs 72");
    g = (tsr_attn_geom){1, 2, 4, 2}; /* scratch 2 x 8, qkv 24: scratch at 50 overflows */
    expect(be, tsr_op_attention_backward(be, &g, r, r, tsr_ref_at(b, 50), r), TSR_ERR_SHAPE,
           "operand scratch needs 16");
    expect(be, tsr_op_attention_forward(be, &g, r, tsr_ref_at(b, 50), r), TSR_ERR_SHAPE,
           "operand scratch needs 16");
    expect(be, tsr_op_layernorm_forward(be, 4, 8, 0.0f, r, r, r, r, r, r), TSR_ERR_INVALID_ARG,
           "eps");
    expect(be, tsr_op_layernorm_backward(be, 8, 9, r, r, r, r, r, r, r, r, 0), TSR_ERR_SHAPE,
           "operand x needs 72");
    expect(be, tsr_op_gelu_backward(be, 65, r, r, r), TSR_ERR_SHAPE, "operand x needs 65");
    expect(be, tsr_op_xent_forward(be, 4, 0, r, r, r, r), TSR_ERR_SHAPE, "0 classes");
    expect(be, tsr_op_xent_backward(be, 4, 17, r, r, 1.0f, r), TSR_ERR_SHAPE, "operand probs");
    tsr_buf_free(b);
    host_close(&h);
}

/* A backend without the transformer slots (the host's table with them cleared) refuses each
 * op by name through the tsr_op_* wrappers. */
static void test_unsupported(void **state) {
    (void)state;
    host h = host_open(1);
    tsr_backend *be = h.be;
    tsr_backend_iface bare = *be->iface;
    const tsr_backend_iface *keep = be->iface;
    bare.name = "bare";
    bare.layernorm_forward = NULL, bare.layernorm_backward = NULL;
    bare.gelu_forward = NULL, bare.gelu_backward = NULL;
    bare.attention_forward = NULL, bare.attention_backward = NULL;
    bare.xent_forward = NULL, bare.xent_backward = NULL;
    tsr_buf *b = buf_new(be, 64 * 4);
    tsr_ref r = at(b);
    tsr_attn_geom g = {1, 2, 2, 1};
    be->iface = &bare;
    expect(be, tsr_op_layernorm_forward(be, 2, 2, 1e-5f, r, r, r, r, r, r), TSR_ERR_UNSUPPORTED,
           "layernorm_forward: not implemented by the bare backend");
    expect(be, tsr_op_layernorm_backward(be, 2, 2, r, r, r, r, r, r, r, r, 0),
           TSR_ERR_UNSUPPORTED, "layernorm_backward");
    expect(be, tsr_op_gelu_forward(be, 4, r, r), TSR_ERR_UNSUPPORTED, "gelu_forward");
    expect(be, tsr_op_gelu_backward(be, 4, r, r, r), TSR_ERR_UNSUPPORTED, "gelu_backward");
    expect(be, tsr_op_attention_forward(be, &g, r, r, r), TSR_ERR_UNSUPPORTED,
           "attention_forward");
    expect(be, tsr_op_attention_backward(be, &g, r, r, r, r), TSR_ERR_UNSUPPORTED,
           "attention_backward");
    expect(be, tsr_op_xent_forward(be, 2, 2, r, r, r, r), TSR_ERR_UNSUPPORTED, "xent_forward");
    expect(be, tsr_op_xent_backward(be, 2, 2, r, r, 1.0f, r), TSR_ERR_UNSUPPORTED,
           "xent_backward");
    be->iface = keep;
    tsr_buf_free(b);
    host_close(&h);
}

/* ---- the cases on each backend ---- */

#define MAX_CL 8
static tsr_context *cl_ctx;
static tsr_backend *cl_dev[MAX_CL];
static int cl_count;

/* Opens every OpenCL device of the machine once for the whole group. */
static int open_opencl(void **state) {
    (void)state;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.log_level = TSR_LOG_OFF;
    o.flags = TSR_CONTEXT_NO_HWLOC;
    if (tsr_context_create(&cl_ctx, &o) != TSR_OK) return -1;
    for (int i = 0; i < tsr_context_device_count(cl_ctx) && cl_count < MAX_CL; i++) {
        if (tsr_context_device(cl_ctx, i)->backend != TSR_BACKEND_OPENCL) continue;
        tsr_status st = tsr_backend_open(cl_ctx, i, &cl_dev[cl_count]);
        if (st != TSR_OK) {
            fprintf(stderr, "%s: open failed: %s: %s\n", tsr_context_device(cl_ctx, i)->id,
                    tsr_status_name(st), tsr_context_last_error(cl_ctx));
            return -1;
        }
        cl_count++;
    }
    return 0;
}

static int close_opencl(void **state) {
    (void)state;
    for (int i = 0; i < cl_count; i++) tsr_backend_free(cl_dev[i]);
    tsr_context_free(cl_ctx);
    return 0;
}

static void on_opencl(void (*cases)(tsr_backend *dev)) {
    if (!cl_count) TSR_TEST_SKIP("missing an OpenCL device (PoCL: Debian package pocl-opencl-icd)");
    for (int i = 0; i < cl_count; i++) cases(cl_dev[i]);
}

static void test_layernorm(void **state) { (void)state; layernorm_cases(NULL); }
static void test_gelu(void **state) { (void)state; gelu_cases(NULL); }
static void test_attention(void **state) { (void)state; attention_cases(NULL); }
static void test_xent(void **state) { (void)state; xent_cases(NULL); }
static void test_linear_and_head(void **state) { (void)state; linear_and_head_cases(NULL); }
static void test_layernorm_opencl(void **state) { (void)state; on_opencl(layernorm_cases); }
static void test_gelu_opencl(void **state) { (void)state; on_opencl(gelu_cases); }
static void test_attention_opencl(void **state) { (void)state; on_opencl(attention_cases); }
static void test_xent_opencl(void **state) { (void)state; on_opencl(xent_cases); }
static void test_linear_and_head_opencl(void **state) {
    (void)state;
    on_opencl(linear_and_head_cases);
}

#if TSR_WITH_OPENCL
/* Attention with CLBlastSgemmStridedBatched forced (what GPUs use; CPU devices loop over single
 * GEMMs): the per-head operands inside the interleaved qkv, ld 3C, go through CLBlast's strided
 * batches without a fallback to the loop. */
static void test_attention_opencl_strided(void **state) {
    (void)state;
    if (!cl_count) TSR_TEST_SKIP("missing an OpenCL device (PoCL: Debian package pocl-opencl-icd)");
    for (int i = 0; i < cl_count; i++) {
        tsr_opencl_options opts = {NULL, 0, TSR_CL_BATCHED_CLBLAST, 0, 0};
        tsr_backend *be = NULL;
        OK(cl_dev[i], tsr_backend_opencl_create_ex(cl_ctx, &cl_dev[i]->device, &opts, &be));
        attention_cases(be);
        assert_int_equal(tsr_opencl_state(be)->batched_fallbacks, 0);
        tsr_backend_free(be);
    }
}
#endif

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm),        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_attention),        cmocka_unit_test(test_xent),
        cmocka_unit_test(test_linear_and_head),  cmocka_unit_test(test_errors),
        cmocka_unit_test(test_unsupported),      cmocka_unit_test(test_layernorm_opencl),
        cmocka_unit_test(test_gelu_opencl),      cmocka_unit_test(test_attention_opencl),
        cmocka_unit_test(test_xent_opencl),      cmocka_unit_test(test_linear_and_head_opencl),
#if TSR_WITH_OPENCL
        cmocka_unit_test(test_attention_opencl_strided),
#endif
    };
    return cmocka_run_group_tests(tests, open_opencl, close_opencl);
}
