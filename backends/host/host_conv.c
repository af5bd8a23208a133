/* Direct convolutions on the host through oneDNN (float32, and bf16 operands with float32
 * accumulation in bf16 mode where the CPU has bf16 dot products): its JIT kernels work on
 * channel-blocked layouts (nChw16c) with the filters resident in registers, and ran the cnn's
 * second layer (32 -> 64 channels, 5x5, 14x14) at 1.35-1.4x OpenBLAS's SGEMM rate per core, where
 * im2col + SGEMM reaches about 0.75 of it. Layers with fewer than CONV_MIN_CHANNELS input
 * channels (the first layer of an image model) read their source as it is, NCHW. Forward and
 * backward are each run here where oneDNN has JIT kernels for them (an AVX2 CPU has the
 * first-layer forward's, not its weight gradient's), else conv2d runs im2col + GEMM.
 *
 * The batch is cut into at most CONV_PARTS parts of whole images, fixed by the batch size
 * alone; the host pool runs the parts, each a single-threaded oneDNN primitive on its images
 * (NCHW reordered into the blocked layout and back around it). Weight gradients are summed
 * over the parts in part order, so the bits do not depend on the thread count.
 * Scratch for the blocked tensors is kept by the backend between calls (tsr_host_impl). */
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include "backends/host/host.h"
#include "lib/core/internal.h"

#if TSR_WITH_DNNL
#include <omp.h>
#include "backends/host/host_dnnl.h"

#define CONV_PARTS 8
#define CONV_MIN_CHANNELS 8 /* below: the source stays NCHW (oneDNN's first-layer kernels) */

/* The images of part p of n (sizes differ by at most one). */
static void part_range(size_t n, size_t parts, size_t p, size_t *lo, size_t *count) {
    size_t q = n / parts, r = n % parts;
    *lo = p * q + (p < r ? p : r);
    *count = q + (p < r);
}

static size_t parts_of(size_t n) { return n < CONV_PARTS ? n : CONV_PARTS; }

/* Primitives for one part size: the convolution's three directions and the layouts they chose. */
typedef struct conv_prims {
    size_t images;
    dnnl_primitive_desc_t fwd_pd, bwd_data_pd, bwd_w_pd;
    dnnl_primitive_t fwd, bwd_data, bwd_w;
    dnnl_memory_desc_t src, wei, dst;    /* plain: NCHW images, OIHW filters */
} conv_prims;

static void prims_free(conv_prims *c) {
    dnnl_primitive_destroy(c->fwd);
    dnnl_primitive_destroy(c->bwd_data);
    dnnl_primitive_destroy(c->bwd_w);
    dnnl_primitive_desc_destroy(c->fwd_pd);
    dnnl_primitive_desc_destroy(c->bwd_data_pd);
    dnnl_primitive_desc_destroy(c->bwd_w_pd);
    memset(c, 0, sizeof *c);
}

/* which: 1 forward, 2 backward (both directions, and forward as their hint). half: the
 * operands' type (f32, or bf16 in bf16 mode: the reorders into the blocked layout round them,
 * the products accumulate in float32 and the results are float32). */
static dnnl_status_t prims_make(dnnl_engine_t engine, const tsr_conv_geom *g, size_t filters,
                                size_t images, int which, dnnl_data_type_t half, conv_prims *c) {
    memset(c, 0, sizeof *c);
    c->images = images;
    dnnl_dims_t ds = {(dnnl_dim_t)images, (dnnl_dim_t)g->channels, (dnnl_dim_t)g->height, (dnnl_dim_t)g->width};
    dnnl_dims_t dw = {(dnnl_dim_t)filters, (dnnl_dim_t)g->channels, (dnnl_dim_t)g->kernel_h, (dnnl_dim_t)g->kernel_w};
    dnnl_dims_t dd = {(dnnl_dim_t)images, (dnnl_dim_t)filters, (dnnl_dim_t)g->out_h, (dnnl_dim_t)g->out_w};
    dnnl_dims_t strides = {(dnnl_dim_t)g->stride_h, (dnnl_dim_t)g->stride_w};
    dnnl_dims_t pl = {(dnnl_dim_t)g->pad_h, (dnnl_dim_t)g->pad_w};
    dnnl_dims_t pr = {(dnnl_dim_t)((g->out_h - 1) * g->stride_h + g->kernel_h) - (dnnl_dim_t)(g->height + g->pad_h),
                      (dnnl_dim_t)((g->out_w - 1) * g->stride_w + g->kernel_w) - (dnnl_dim_t)(g->width + g->pad_w)};
    /* as/aw: source and weights as the products read them; ad: the output; ah: the output's
     * gradient as read; af/awf: the input's and weights' gradients, float32 */
    dnnl_memory_desc_t as, aw, ad, ah, af, awf;
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_tag(&c->src, 4, ds, dnnl_f32, dnnl_nchw)) ||
        (s = dnnl_memory_desc_init_by_tag(&c->wei, 4, dw, dnnl_f32, dnnl_oihw)) ||
        (s = dnnl_memory_desc_init_by_tag(&c->dst, 4, dd, dnnl_f32, dnnl_nchw)) ||
        (s = dnnl_memory_desc_init_by_tag(&as, 4, ds, half,
                                          g->channels < CONV_MIN_CHANNELS ? dnnl_nchw : dnnl_format_tag_any)) ||
        (s = dnnl_memory_desc_init_by_tag(&aw, 4, dw, half, dnnl_format_tag_any)) ||
        (s = dnnl_memory_desc_init_by_tag(&ad, 4, dd, dnnl_f32, dnnl_format_tag_any)) ||
        (s = dnnl_memory_desc_init_by_tag(&ah, 4, dd, half, dnnl_format_tag_any)) ||
        (s = dnnl_memory_desc_init_by_tag(&af, 4, ds, dnnl_f32, dnnl_format_tag_any)) ||
        (s = dnnl_memory_desc_init_by_tag(&awf, 4, dw, dnnl_f32, dnnl_format_tag_any)))
        return s;
    dnnl_convolution_desc_t fd, bd, wd;
    dnnl_primitive_attr_t attr = NULL;
    if (!(s = tsr_host_dnnl_attr(&attr)) &&
        !(s = dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &as, &aw,
                                                 NULL, &ad, strides, pl, pr)) &&
        !(s = dnnl_primitive_desc_create(&c->fwd_pd, &fd, attr, engine, NULL)))
        s = dnnl_primitive_create(&c->fwd, c->fwd_pd);
    if (!s && which == 2 &&
        !(s = dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, &af, &aw, &ah, strides, pl,
                                                       pr)) &&
        !(s = dnnl_primitive_desc_create(&c->bwd_data_pd, &bd, attr, engine, c->fwd_pd)) &&
        !(s = dnnl_primitive_create(&c->bwd_data, c->bwd_data_pd)) &&
        !(s = dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, &as, &awf, NULL, &ah,
                                                          strides, pl, pr)) &&
        !(s = dnnl_primitive_desc_create(&c->bwd_w_pd, &wd, attr, engine, c->fwd_pd)))
        s = dnnl_primitive_create(&c->bwd_w, c->bwd_w_pd);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

static const dnnl_memory_desc_t *md_of(const_dnnl_primitive_desc_t pd, dnnl_query_t q) {
    return dnnl_primitive_desc_query_md(pd, q, 0);
}

/* dst (layout `to`) = src (layout `from`) [+ dst when add]; a plain copy when the two agree
 * and nothing is added. On the calling thread. */
static dnnl_status_t reorder(dnnl_engine_t engine, dnnl_stream_t st, const dnnl_memory_desc_t *from,
                             void *src, const dnnl_memory_desc_t *to, void *dst, int add) {
    if (!add && dnnl_memory_desc_equal(from, to)) {
        if (src != dst) memcpy(dst, src, dnnl_memory_desc_get_size(from));
        return dnnl_success;
    }
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t p = NULL;
    dnnl_memory_t m[2] = {NULL, NULL};
    dnnl_status_t s = tsr_host_dnnl_attr(&attr);
    if (!s && add) {
        s = dnnl_post_ops_create(&ops);
        if (!s) s = dnnl_post_ops_append_sum(ops, 1.0f);
        if (!s) s = dnnl_primitive_attr_set_post_ops(attr, ops);
    }
    if (!s) s = dnnl_reorder_primitive_desc_create(&pd, from, engine, to, engine, attr);
    if (!s) s = dnnl_primitive_create(&p, pd);
    if (!s) s = dnnl_memory_create(&m[0], from, engine, src);
    if (!s) s = dnnl_memory_create(&m[1], to, engine, dst);
    if (!s) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, m[0]}, {DNNL_ARG_TO, m[1]}};
        s = tsr_host_dnnl_run(engine, st, p, 2, args);
    }
    dnnl_memory_destroy(m[0]);
    dnnl_memory_destroy(m[1]);
    dnnl_primitive_destroy(p);
    dnnl_primitive_desc_destroy(pd);
    dnnl_post_ops_destroy(ops);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

static dnnl_status_t run(dnnl_primitive_t p, dnnl_engine_t engine, dnnl_stream_t st, int n,
                         const int *which, const dnnl_memory_desc_t *const *mds, void *const *data) {
    dnnl_memory_t m[4] = {NULL, NULL, NULL, NULL};
    dnnl_exec_arg_t args[4];
    dnnl_status_t s = dnnl_success;
    for (int i = 0; i < n && !s; i++) {
        s = dnnl_memory_create(&m[i], mds[i], engine, data[i]);
        args[i] = (dnnl_exec_arg_t){which[i], m[i]};
    }
    if (!s) s = tsr_host_dnnl_run(engine, st, p, n, args);
    for (int i = 0; i < n; i++) dnnl_memory_destroy(m[i]);
    return s;
}

/* The scratch bytes one part needs (the largest blocked tensors of its direction), rounded to
 * cache lines. */
static size_t round_up(size_t b) { return (b + 63) & ~(size_t)63; }

typedef struct conv_job {
    tsr_host_dnnl *h;
    const tsr_conv_geom *g;
    size_t filters, parts;
    conv_prims *prims;           /* [0]: parts of the larger size, [1]: of the smaller (or NULL) */
    const float *x, *w_blocked_fwd, *w_blocked_bwd;
    float *y;                    /* forward */
    const float *dy;             /* backward */
    float *dx, *partials;        /* dx NULL: not wanted; partials [parts][F*C*KH*KW] */
    float beta_dx;
    unsigned char *scratch;      /* [parts][part_bytes] */
    size_t part_bytes;
    _Atomic int failed;
} conv_job;

static conv_prims *prims_for(const conv_job *j, size_t images) {
    return j->prims[0].images == images ? &j->prims[0] : &j->prims[1];
}

static void forward_parts(void *arg, size_t lo, size_t hi) {
    conv_job *j = arg;
    const tsr_conv_geom *g = j->g;
    dnnl_engine_t engine = tsr_host_dnnl_engine(j->h);
    size_t img = g->channels * g->height * g->width, out = j->filters * g->out_h * g->out_w;
    int omp_was = omp_get_max_threads(); /* this thread's setting, the application's own */
    omp_set_num_threads(1);                /* this part only: the pool splits the batch */
    dnnl_stream_t st = NULL;
    dnnl_status_t s = dnnl_stream_create(&st, engine, dnnl_stream_default_flags);
    for (size_t p = lo; p < hi && !s; p++) {
        size_t i0, n;
        part_range(g->batch, j->parts, p, &i0, &n);
        conv_prims *c = prims_for(j, n);
        const dnnl_memory_desc_t *src = md_of(c->fwd_pd, dnnl_query_src_md),
                                 *dst = md_of(c->fwd_pd, dnnl_query_dst_md),
                                 *wei = md_of(c->fwd_pd, dnnl_query_weights_md);
        unsigned char *sp = j->scratch + p * j->part_bytes;
        void *bs = sp, *bd = sp + round_up(dnnl_memory_desc_get_size(src));
        float *xp = (float *)j->x + i0 * img, *yp = j->y + i0 * out;
        s = reorder(engine, st, &c->src, xp, src, bs, 0);
        if (!s) {
            static const int which[3] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST};
            const dnnl_memory_desc_t *mds[3] = {src, wei, dst};
            void *data[3] = {bs, (void *)j->w_blocked_fwd, bd};
            s = run(c->fwd, engine, st, 3, which, mds, data);
        }
        if (!s) s = reorder(engine, st, dst, bd, &c->dst, yp, 0);
        if (!s) s = dnnl_stream_wait(st);
    }
    dnnl_stream_destroy(st);
    omp_set_num_threads(omp_was);
    if (s) atomic_store(&j->failed, (int)s);
}

static void backward_parts(void *arg, size_t lo, size_t hi) {
    conv_job *j = arg;
    const tsr_conv_geom *g = j->g;
    dnnl_engine_t engine = tsr_host_dnnl_engine(j->h);
    size_t img = g->channels * g->height * g->width, out = j->filters * g->out_h * g->out_w;
    size_t wts = j->filters * g->channels * g->kernel_h * g->kernel_w;
    int omp_was = omp_get_max_threads();
    omp_set_num_threads(1);
    dnnl_stream_t st = NULL;
    dnnl_status_t s = dnnl_stream_create(&st, engine, dnnl_stream_default_flags);
    for (size_t p = lo; p < hi && !s; p++) {
        size_t i0, n;
        part_range(g->batch, j->parts, p, &i0, &n);
        conv_prims *c = prims_for(j, n);
        const dnnl_memory_desc_t *w_src = md_of(c->bwd_w_pd, dnnl_query_src_md),
                                 *w_ddst = md_of(c->bwd_w_pd, dnnl_query_diff_dst_md),
                                 *w_dwei = md_of(c->bwd_w_pd, dnnl_query_diff_weights_md),
                                 *d_ddst = md_of(c->bwd_data_pd, dnnl_query_diff_dst_md),
                                 *d_wei = md_of(c->bwd_data_pd, dnnl_query_weights_md),
                                 *d_dsrc = md_of(c->bwd_data_pd, dnnl_query_diff_src_md);
        unsigned char *sp = j->scratch + p * j->part_bytes;
        void *b_src = sp, *b_ddst = sp + round_up(dnnl_memory_desc_get_size(w_src));
        void *b_dwei = (unsigned char *)b_ddst + round_up(dnnl_memory_desc_get_size(w_ddst));
        void *b_ddst2 = (unsigned char *)b_dwei + round_up(dnnl_memory_desc_get_size(w_dwei));
        void *b_dsrc = (unsigned char *)b_ddst2 + round_up(dnnl_memory_desc_get_size(d_ddst));
        float *xp = (float *)j->x + i0 * img, *dyp = (float *)j->dy + i0 * out;
        /* the weight gradient of these images, into partials[p] */
        s = reorder(engine, st, &c->src, xp, w_src, b_src, 0);
        if (!s) s = reorder(engine, st, &c->dst, dyp, w_ddst, b_ddst, 0);
        if (!s) {
            static const int which[3] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS};
            const dnnl_memory_desc_t *mds[3] = {w_src, w_ddst, w_dwei};
            void *data[3] = {b_src, b_ddst, b_dwei};
            s = run(c->bwd_w, engine, st, 3, which, mds, data);
        }
        if (!s) s = reorder(engine, st, w_dwei, b_dwei, &c->wei, j->partials + p * wts, 0);
        if (!s && j->dx) { /* and the input gradient */
            void *dd = b_ddst;
            if (!dnnl_memory_desc_equal(d_ddst, w_ddst)) {
                dd = b_ddst2;
                s = reorder(engine, st, &c->dst, dyp, d_ddst, dd, 0);
            }
            if (!s) {
                static const int which[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
                const dnnl_memory_desc_t *mds[3] = {d_ddst, d_wei, d_dsrc};
                void *data[3] = {dd, (void *)j->w_blocked_bwd, b_dsrc};
                s = run(c->bwd_data, engine, st, 3, which, mds, data);
            }
            if (!s) s = reorder(engine, st, d_dsrc, b_dsrc, &c->src, j->dx + i0 * img, j->beta_dx != 0.0f);
        }
        if (!s) s = dnnl_stream_wait(st);
    }
    dnnl_stream_destroy(st);
    omp_set_num_threads(omp_was);
    if (s) atomic_store(&j->failed, (int)s);
}

/* The backend's scratch holds at least `bytes`, 64-byte aligned (grown, never shrunk; one caller
 * at a time, as every op of a backend). */
static tsr_status scratch(tsr_backend *be, size_t bytes, unsigned char **out) {
    tsr_host_impl *h = tsr_host_impl_of(be);
    if (h->conv_scratch_bytes < bytes) {
        tsr_free(be->ctx, h->conv_scratch);
        h->conv_scratch = bytes <= SIZE_MAX - 64 ? tsr_malloc(be->ctx, bytes + 64) : NULL;
        h->conv_scratch_bytes = h->conv_scratch ? bytes : 0;
        if (!h->conv_scratch)
            return tsr_error(be->ctx, TSR_ERR_NO_MEMORY, "host convolution scratch of %zu bytes", bytes);
    }
    *out = (unsigned char *)(((uintptr_t)h->conv_scratch + 63) & ~(uintptr_t)63);
    return TSR_OK;
}

static tsr_status dnnl_failed(tsr_backend *be, const char *what, const tsr_conv_geom *g, size_t filters,
                              int status) {
    return tsr_error(be->ctx, TSR_ERR_BLAS, "host convolution %s (oneDNN) of %zu x %zu x %zux%zu, kernel "
                     "%zux%zu, %zu filters: dnnl status %d", what, g->batch, g->channels, g->height,
                     g->width, g->kernel_h, g->kernel_w, filters, status);
}

static tsr_host_dnnl *engine_of(const tsr_backend *be) {
    return be->impl ? tsr_host_impl_of(be)->dnnl : NULL;
}

/* The operands' type in the backend's precision; dnnl_data_type_undef where there is no direct
 * convolution in it (fp16; bf16 without bf16 dot products). */
static dnnl_data_type_t half_of(const tsr_backend *be) {
    if (be->precision == TSR_PRECISION_FP32) return dnnl_f32;
    if (be->precision == TSR_PRECISION_BF16 && tsr_host_dnnl_bf16(engine_of(be))) return dnnl_bf16;
    return dnnl_data_type_undef;
}

static int jit_impl(const_dnnl_primitive_desc_t pd) {
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl) return 0;
    return (!strncmp(impl, "jit", 3) || !strncmp(impl, "brg", 3)) && !strstr(impl, "gemm");
}

static int conv_direct(tsr_backend *be, const tsr_conv_geom *g, size_t filters, int pass) {
    tsr_host_dnnl *h = engine_of(be);
    dnnl_data_type_t half = half_of(be);
    if (!h || half == dnnl_data_type_undef || !g->batch) return 0;
    if ((g->out_h - 1) * g->stride_h + g->kernel_h < g->height + g->pad_h ||
        (g->out_w - 1) * g->stride_w + g->kernel_w < g->width + g->pad_w)
        return 0; /* oneDNN takes no negative right padding */
    tsr_host_impl *impl = tsr_host_impl_of(be);
    for (size_t i = 0; i < TSR_HOST_CONV_PROBES && i < impl->conv_probes_made; i++) {
        const tsr_host_conv_probe *p = &impl->conv_probes[i];
        if (p->pass == pass && p->precision == (int)be->precision && p->filters == filters &&
            !memcmp(&p->g, g, sizeof *g))
            return p->direct;
    }
    /* JIT kernels for this shape (not a GEMM or reference fallback, slower than im2col): the
     * forward's, and for backward both gradients' (with few channels only the weight
     * gradient's: oneDNN's first-layer kernels read the plain source, and their input gradient
     * is GEMM-based, which a first layer never asks for) */
    conv_prims c;
    size_t i0, n;
    part_range(g->batch, parts_of(g->batch), 0, &i0, &n);
    int few = g->channels < CONV_MIN_CHANNELS;
    dnnl_status_t s = prims_make(tsr_host_dnnl_engine(h), g, filters, n, pass == TSR_CONV_FORWARD ? 1 : 2, half, &c);
    int ok = !s && jit_impl(c.fwd_pd) &&
             (pass == TSR_CONV_FORWARD || (jit_impl(c.bwd_w_pd) && (few || jit_impl(c.bwd_data_pd))));
    prims_free(&c);
    tsr_host_conv_probe *slot = &impl->conv_probes[impl->conv_probes_made++ % TSR_HOST_CONV_PROBES];
    *slot = (tsr_host_conv_probe){*g, filters, (int)be->precision, pass, ok};
    return ok;
}

/* The weights in the layout `to` (scratch at *at, advanced). */
static dnnl_status_t weights_to(dnnl_engine_t engine, const conv_prims *c, const dnnl_memory_desc_t *to,
                                const float *w, unsigned char **at) {
    dnnl_stream_t st = NULL;
    dnnl_status_t s = dnnl_stream_create(&st, engine, dnnl_stream_default_flags);
    if (!s) s = reorder(engine, st, &c->wei, (void *)w, to, *at, 0);
    if (!s) s = dnnl_stream_wait(st);
    dnnl_stream_destroy(st);
    *at += round_up(dnnl_memory_desc_get_size(to));
    return s;
}

/* Primitives for the (at most two) part sizes of a batch. */
static dnnl_status_t job_prims(conv_job *j, int which, dnnl_data_type_t half) {
    size_t i0, big, small;
    part_range(j->g->batch, j->parts, 0, &i0, &big);
    part_range(j->g->batch, j->parts, j->parts - 1, &i0, &small);
    dnnl_engine_t engine = tsr_host_dnnl_engine(j->h);
    dnnl_status_t s = prims_make(engine, j->g, j->filters, big, which, half, &j->prims[0]);
    if (!s && small != big) s = prims_make(engine, j->g, j->filters, small, which, half, &j->prims[1]);
    return s;
}

static tsr_status conv_forward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                               tsr_ref w, tsr_ref y) {
    conv_prims prims[2];
    memset(prims, 0, sizeof prims);
    conv_job j = {.h = engine_of(be), .g = g, .filters = filters, .parts = parts_of(g->batch),
                  .prims = prims, .x = tsr_host_f32(x), .y = tsr_host_f32(y)};
    dnnl_status_t s = job_prims(&j, 1, half_of(be));
    tsr_status st = TSR_OK;
    if (!s) {
        size_t part = 0;
        for (int i = 0; i < 2; i++)
            if (prims[i].fwd_pd) {
                size_t b = round_up(dnnl_memory_desc_get_size(md_of(prims[i].fwd_pd, dnnl_query_src_md))) +
                           round_up(dnnl_memory_desc_get_size(md_of(prims[i].fwd_pd, dnnl_query_dst_md)));
                if (b > part) part = b;
            }
        size_t wbytes = round_up(dnnl_memory_desc_get_size(md_of(prims[0].fwd_pd, dnnl_query_weights_md)));
        unsigned char *mem;
        st = scratch(be, wbytes + part * j.parts, &mem);
        if (st == TSR_OK) {
            j.w_blocked_fwd = (const float *)mem;
            s = weights_to(tsr_host_dnnl_engine(j.h), &prims[0], md_of(prims[0].fwd_pd, dnnl_query_weights_md),
                           tsr_host_f32(w), &mem);
            j.scratch = mem;
            j.part_bytes = part;
        }
        /* a second part size shares the weights only in the same layout */
        if (!s && st == TSR_OK && prims[1].fwd_pd &&
            !dnnl_memory_desc_equal(md_of(prims[0].fwd_pd, dnnl_query_weights_md),
                                    md_of(prims[1].fwd_pd, dnnl_query_weights_md)))
            s = dnnl_unimplemented;
        if (!s && st == TSR_OK) {
            tsr_host_parallel(be, j.parts, 1, forward_parts, &j);
            s = atomic_load(&j.failed);
        }
    }
    prims_free(&prims[0]);
    prims_free(&prims[1]);
    if (st != TSR_OK) return st;
    return s ? dnnl_failed(be, "forward", g, filters, (int)s) : TSR_OK;
}

/* dw = beta dw + sum of the parts' gradients, in part order */
static void sum_partials(size_t wts, size_t parts, const float *partials, float beta, float *dw) {
    for (size_t i = 0; i < wts; i++) {
        float acc = beta != 0.0f ? dw[i] + partials[i] : partials[i];
        for (size_t p = 1; p < parts; p++) acc += partials[p * wts + i];
        dw[i] = acc;
    }
}

static tsr_status conv_backward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                tsr_ref w, tsr_ref dy, float beta_dw, tsr_ref dw, float beta_dx, tsr_ref dx) {
    size_t wts = filters * g->channels * g->kernel_h * g->kernel_w;
    if (!g->batch) { /* no image: dW = 0 */
        float *d = tsr_host_f32(dw);
        if (beta_dw == 0.0f) memset(d, 0, wts * sizeof *d);
        return TSR_OK;
    }
    conv_prims prims[2];
    memset(prims, 0, sizeof prims);
    conv_job j = {.h = engine_of(be), .g = g, .filters = filters, .parts = parts_of(g->batch),
                  .prims = prims, .x = tsr_host_f32(x), .dy = tsr_host_f32(dy),
                  .dx = dx.buf ? tsr_host_f32(dx) : NULL, .beta_dx = beta_dx};
    dnnl_status_t s = job_prims(&j, 2, half_of(be));
    tsr_status st = TSR_OK;
    if (!s) {
        size_t part = 0;
        for (int i = 0; i < 2; i++)
            if (prims[i].bwd_w_pd) {
                size_t b = round_up(dnnl_memory_desc_get_size(md_of(prims[i].bwd_w_pd, dnnl_query_src_md))) +
                           round_up(dnnl_memory_desc_get_size(md_of(prims[i].bwd_w_pd, dnnl_query_diff_dst_md))) +
                           round_up(dnnl_memory_desc_get_size(md_of(prims[i].bwd_w_pd, dnnl_query_diff_weights_md))) +
                           round_up(dnnl_memory_desc_get_size(md_of(prims[i].bwd_data_pd, dnnl_query_diff_dst_md))) +
                           round_up(dnnl_memory_desc_get_size(md_of(prims[i].bwd_data_pd, dnnl_query_diff_src_md)));
                if (b > part) part = b;
            }
        const dnnl_memory_desc_t *wmd = md_of(prims[0].bwd_data_pd, dnnl_query_weights_md);
        size_t wbytes = round_up(dnnl_memory_desc_get_size(wmd)), pbytes = round_up(j.parts * wts * sizeof(float));
        unsigned char *mem;
        st = scratch(be, wbytes + pbytes + part * j.parts, &mem);
        if (st == TSR_OK) {
            j.w_blocked_bwd = (const float *)mem;
            s = weights_to(tsr_host_dnnl_engine(j.h), &prims[0], wmd, tsr_host_f32(w), &mem);
            j.partials = (float *)mem;
            j.scratch = mem + pbytes;
            j.part_bytes = part;
        }
        if (!s && st == TSR_OK && prims[1].bwd_data_pd &&
            !dnnl_memory_desc_equal(wmd, md_of(prims[1].bwd_data_pd, dnnl_query_weights_md)))
            s = dnnl_unimplemented;
        if (!s && st == TSR_OK) {
            tsr_host_parallel(be, j.parts, 1, backward_parts, &j);
            s = atomic_load(&j.failed);
        }
        if (!s && st == TSR_OK) sum_partials(wts, j.parts, j.partials, beta_dw, tsr_host_f32(dw));
    }
    prims_free(&prims[0]);
    prims_free(&prims[1]);
    if (st != TSR_OK) return st;
    return s ? dnnl_failed(be, "backward", g, filters, (int)s) : TSR_OK;
}

/* The entry points run with one OpenMP thread on the calling thread as well as in the parts:
 * oneDNN's kernels fix their thread count when their primitive is created (here, on the
 * caller), and a team of two started from a part stayed spinning in libgomp between calls, on
 * the cores the pool runs on (a quarter of the cnn's CPU time, seen in perf). The thread's own
 * setting (the application's) comes back afterwards. */
int tsr_host_conv_direct(tsr_backend *be, const tsr_conv_geom *g, size_t filters, int pass) {
    int omp_was = omp_get_max_threads();
    omp_set_num_threads(1);
    int ok = conv_direct(be, g, filters, pass);
    omp_set_num_threads(omp_was);
    return ok;
}

tsr_status tsr_host_conv_forward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                 tsr_ref w, tsr_ref y) {
    int omp_was = omp_get_max_threads();
    omp_set_num_threads(1);
    tsr_status s = conv_forward(be, g, filters, x, w, y);
    omp_set_num_threads(omp_was);
    return s;
}

tsr_status tsr_host_conv_backward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                  tsr_ref w, tsr_ref dy, float beta_dw, tsr_ref dw, float beta_dx,
                                  tsr_ref dx) {
    int omp_was = omp_get_max_threads();
    omp_set_num_threads(1);
    tsr_status s = conv_backward(be, g, filters, x, w, dy, beta_dw, dw, beta_dx, dx);
    omp_set_num_threads(omp_was);
    return s;
}

#else /* without oneDNN: conv2d runs im2col + GEMM */

int tsr_host_conv_direct(tsr_backend *be, const tsr_conv_geom *g, size_t filters, int pass) {
    (void)be, (void)g, (void)filters, (void)pass;
    return 0;
}
tsr_status tsr_host_conv_forward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                 tsr_ref w, tsr_ref y) {
    (void)g, (void)filters, (void)x, (void)w, (void)y;
    return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED, "host convolution: built without oneDNN");
}
tsr_status tsr_host_conv_backward(tsr_backend *be, const tsr_conv_geom *g, size_t filters, tsr_ref x,
                                  tsr_ref w, tsr_ref dy, float beta_dw, tsr_ref dw, float beta_dx,
                                  tsr_ref dx) {
    (void)g, (void)filters, (void)x, (void)w, (void)dy, (void)beta_dw, (void)dw, (void)beta_dx, (void)dx;
    return tsr_error(be->ctx, TSR_ERR_UNSUPPORTED, "host convolution: built without oneDNN");
}
#endif
