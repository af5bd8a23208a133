/* Gradient checks: for every layer kind and for small whole models, on every device of the
 * context (host, and PoCL/OpenCL when built in), the stage's analytic gradients (parameters
 * and input) against central finite differences of a double-precision plain-C reference
 * forward written here.
 * Tolerance: |analytic - fd| <= 2e-4 + 2e-3 * |fd| for every checked element (float
 * arithmetic on the device against a double reference with h = 1e-4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "lib/core/internal.h"
#include "lib/layers/layer.h"
#include "lib/model/stage.h"
#include "support/test_util.h"

/* Sanitizer builds: PoCL and its LLVM leak their compiler state (a bare clBuildProgram does
 * too); full unwinding lets LeakSanitizer attribute those blocks so only they are suppressed. */
const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void) { return "fast_unwind_on_malloc=0"; }
const char *__lsan_default_suppressions(void) {
    return "leak:libpocl\nleak:libLLVM\nleak:libclang\nleak:libOpenCL\n";
}

#define ATOL 2e-4
#define RTOL 2e-3
#define BATCH 3

typedef struct ref {
    const tsr_model *m;
    const tsr_stage *st;
    uint64_t seed;
    size_t n;
    const int32_t *labels;
} ref;

/* Double-precision forward of the whole model plus mean softmax cross-entropy. */
static double ref_loss(const ref *r, const double *p, const double *x) {
    const tsr_model *m = r->m;
    size_t n = r->n, maxsz = tsr_layer_in_size(&m->layers[0]);
    for (size_t i = 0; i < m->count; i++)
        if (tsr_layer_out_size(&m->layers[i]) > maxsz) maxsz = tsr_layer_out_size(&m->layers[i]);
    /* every tensor by id: 0 the input, i + 1 the output of layer i */
    double **t = calloc(m->count + 1, sizeof *t);
    assert_non_null(t);
    for (size_t i = 0; i <= m->count; i++) {
        t[i] = calloc(n * maxsz, sizeof *t[i]);
        assert_non_null(t[i]);
    }
    memcpy(t[0], x, n * tsr_layer_in_size(&m->layers[0]) * sizeof *t[0]);
    for (size_t li = 0; li < m->count; li++) {
        const tsr_layer *l = &m->layers[li];
        const double *a = t[l->inputs[0]], *a1 = l->ninputs > 1 ? t[l->inputs[1]] : NULL;
        double *b = t[li + 1];
        size_t in = tsr_layer_in_size(l), out = tsr_layer_out_size(l), wo, bo;
        assert_int_equal(tsr_stage_layer_params(r->st, li, &wo, NULL, &bo, NULL), TSR_OK);
        const double *W = p + wo, *B = p + bo;
        for (size_t s = 0; s < n; s++) {
            const double *xs = a + s * in, *xs1 = a1 ? a1 + s * in : NULL;
            double *ys = b + s * out;
            switch (l->kind) {
            case TSR_LAYER_DENSE:
                for (size_t u = 0; u < l->units; u++) {
                    double acc = B[u];
                    for (size_t k = 0; k < in; k++) acc += W[u * in + k] * xs[k];
                    ys[u] = acc;
                }
                break;
            case TSR_LAYER_CONV2D:
                for (size_t f = 0; f < l->out_c; f++)
                    for (size_t oy = 0; oy < l->out_h; oy++)
                        for (size_t ox = 0; ox < l->out_w; ox++) {
                            double acc = B[f];
                            for (size_t c = 0; c < l->in_c; c++)
                                for (size_t ky = 0; ky < l->kh; ky++)
                                    for (size_t kx = 0; kx < l->kw; kx++) {
                                        long iy = (long)(oy * l->stride + ky) - (long)l->pad_h;
                                        long ix = (long)(ox * l->stride + kx) - (long)l->pad_w;
                                        if (iy < 0 || ix < 0 || iy >= (long)l->in_h || ix >= (long)l->in_w)
                                            continue;
                                        acc += W[((f * l->in_c + c) * l->kh + ky) * l->kw + kx] *
                                               xs[(c * l->in_h + (size_t)iy) * l->in_w + (size_t)ix];
                                    }
                            ys[(f * l->out_h + oy) * l->out_w + ox] = acc;
                        }
                break;
            case TSR_LAYER_MAXPOOL:
                for (size_t c = 0; c < l->in_c; c++)
                    for (size_t oy = 0; oy < l->out_h; oy++)
                        for (size_t ox = 0; ox < l->out_w; ox++) {
                            double best = -INFINITY;
                            for (size_t ky = 0; ky < l->kh; ky++)
                                for (size_t kx = 0; kx < l->kw; kx++) {
                                    double v = xs[(c * l->in_h + oy * l->stride + ky) * l->in_w +
                                                  ox * l->stride + kx];
                                    if (v > best) best = v;
                                }
                            ys[(c * l->out_h + oy) * l->out_w + ox] = best;
                        }
                break;
            case TSR_LAYER_RELU:
                for (size_t k = 0; k < out; k++) ys[k] = xs[k] > 0 ? xs[k] : 0;
                break;
            case TSR_LAYER_GELU:
                for (size_t k = 0; k < out; k++)
                    ys[k] = 0.5 * xs[k] *
                            (1 + tanh(0.79788456080286535588 * (xs[k] + 0.044715 * xs[k] * xs[k] * xs[k])));
                break;
            case TSR_LAYER_DROPOUT: {
                uint64_t seed = tsr_stage_dropout_seed(r->seed, li);
                float scale = 1.0f / (1.0f - l->p);
                for (size_t k = 0; k < out; k++)
                    ys[k] = tsr_dropout_keep(seed, s * out + k, l->p) ? xs[k] * scale : 0.0;
                break;
            }
            case TSR_LAYER_FLATTEN: memcpy(ys, xs, out * sizeof *ys); break;
            case TSR_LAYER_EMBED: /* xs holds the ids */
                for (size_t k = 0; k < in; k++)
                    for (size_t c = 0; c < l->units; c++) ys[k * l->units + c] = W[(size_t)xs[k] * l->units + c];
                break;
            case TSR_LAYER_VPEMBED: /* rows [row0, row0 + vocab) of the table; zeros for other ids */
                for (size_t k = 0; k < in; k++)
                    for (size_t c = 0; c < l->units; c++) {
                        size_t row = (size_t)xs[k] - l->row0;
                        ys[k * l->units + c] = (size_t)xs[k] >= l->row0 && row < l->vocab ? W[row * l->units + c] : 0;
                    }
                break;
            case TSR_LAYER_ADD:
                for (size_t k = 0; k < out; k++) ys[k] = xs[k] + xs1[k];
                break;
            case TSR_LAYER_LAYERNORM: {
                size_t dim = tsr_layer_in_dim(l);
                for (size_t r0 = 0; r0 < in; r0 += dim) {
                    double mean = 0, var = 0;
                    for (size_t k = 0; k < dim; k++) mean += xs[r0 + k];
                    mean /= (double)dim;
                    for (size_t k = 0; k < dim; k++) var += (xs[r0 + k] - mean) * (xs[r0 + k] - mean);
                    double rstd = 1.0 / sqrt(var / (double)dim + (double)l->eps);
                    for (size_t k = 0; k < dim; k++) ys[r0 + k] = (xs[r0 + k] - mean) * rstd * W[k] + B[k];
                }
                break;
            }
            case TSR_LAYER_LINEAR: { /* W [dim][units] */
                size_t dim = tsr_layer_in_dim(l), rows = in / dim;
                for (size_t q = 0; q < rows; q++)
                    for (size_t u = 0; u < l->units; u++) {
                        double acc = l->biases ? B[u] : 0.0;
                        for (size_t k = 0; k < dim; k++) acc += xs[q * dim + k] * W[k * l->units + u];
                        ys[q * l->units + u] = acc;
                    }
                break;
            }
            case TSR_LAYER_POSEMBED:
                for (size_t k = 0; k < out; k++) ys[k] = xs[k] + W[k];
                break;
            case TSR_LAYER_TPCOPY: memcpy(ys, xs, out * sizeof *ys); break; /* one rank */
            case TSR_LAYER_TPREDUCE: /* its only tensor, the bias, is its first */
                for (size_t k = 0; k < out; k++) ys[k] = xs[k] + W[k % l->biases];
                break;
            case TSR_LAYER_ATTENTION: { /* rows q | k | v, causal, heads side by side */
                size_t Tn = l->in_c, C = l->out_h, H = l->heads, hs = C / H;
                for (size_t h = 0; h < H; h++)
                    for (size_t t = 0; t < Tn; t++) {
                        double sc[64], mx = -INFINITY, sum = 0;
                        assert_true(Tn <= 64);
                        for (size_t j = 0; j <= t; j++) {
                            double dot = 0;
                            for (size_t e = 0; e < hs; e++)
                                dot += xs[t * 3 * C + h * hs + e] * xs[j * 3 * C + C + h * hs + e];
                            sc[j] = dot / sqrt((double)hs);
                            mx = sc[j] > mx ? sc[j] : mx;
                        }
                        for (size_t j = 0; j <= t; j++) sum += (sc[j] = exp(sc[j] - mx));
                        for (size_t e = 0; e < hs; e++) {
                            double acc = 0;
                            for (size_t j = 0; j <= t; j++) acc += sc[j] / sum * xs[j * 3 * C + 2 * C + h * hs + e];
                            ys[t * C + h * hs + e] = acc;
                        }
                    }
                break;
            }
            case TSR_LAYER_LMHEAD: { /* W: the tied embedding's table [vocab][C] */
                size_t C = l->units, rows = in / C;
                for (size_t q = 0; q < rows; q++)
                    for (size_t v = 0; v < l->vocab; v++) {
                        double acc = 0;
                        for (size_t c = 0; c < C; c++) acc += xs[q * C + c] * W[v * C + c];
                        ys[q * l->vocab + v] = acc;
                    }
                break;
            }
            case TSR_LAYER_SOFTMAX_XENT:
            case TSR_LAYER_VPXENT: fail(); break;
            }
        }
    }
    const double *a = t[m->count];
    size_t classes = m->input.classes, P = tsr_model_positions(m);
    double loss = 0;
    for (size_t s = 0; s < n * P; s++) { /* a label per sample, or per position */
        const double *z = a + s * classes;
        double mx = z[0], sum = 0;
        for (size_t c = 1; c < classes; c++) mx = z[c] > mx ? z[c] : mx;
        for (size_t c = 0; c < classes; c++) sum += exp(z[c] - mx);
        loss += mx + log(sum) - z[r->labels[s]];
    }
    for (size_t i = 0; i <= m->count; i++) free(t[i]);
    free(t);
    return loss / (double)(n * P);
}

typedef struct hook_log {
    size_t calls, next_off, last_layer;
    int bad;
} hook_log;

/* Checks that ranges arrive in reverse layer order as one growing prefix of the buffer. */
static tsr_status hook(void *user, size_t layer, size_t first, size_t count) {
    hook_log *h = user;
    if (h->calls && layer >= h->last_layer) h->bad = 1;
    if (count && first != h->next_off) h->bad = 1;
    h->next_off += count;
    h->last_layer = layer;
    h->calls++;
    return TSR_OK;
}

static int check_close(const char *what, const char *spec, const char *dev, size_t idx, double got,
                       double want) {
    if (fabs(got - want) <= ATOL + RTOL * fabs(want)) return 0;
    fprintf(stderr, "%s on %s: %s gradient %zu: analytic %.7g, finite difference %.7g\n", spec, dev,
            what, idx, got, want);
    return 1;
}

/* One model on one device: returns the number of mismatches. */
static int check_model(tsr_context *ctx, int dev, const char *spec, const tsr_model_input_desc *desc,
                       size_t max_checks) {
    tsr_model *m;
    if (tsr_model_parse_desc(ctx, spec, desc, &m) != TSR_OK) {
        fprintf(stderr, "%s: %s\n", spec, tsr_context_last_error(ctx));
        fail();
    }
    tsr_backend *be;
    assert_int_equal(tsr_backend_open(ctx, dev, &be), TSR_OK);
    const char *dname = be->device.id;
    tsr_stage *st;
    tsr_stage_options so = {0, m->count, BATCH, 1, TSR_PRECISION_FP32, 0};
    assert_int_equal(tsr_stage_create(be, m, &so, &st), TSR_OK);
    hook_log hl = {0, 0, 0, 0};
    tsr_stage_set_hook(st, hook, &hl);

    size_t np = tsr_stage_param_count(st), nx = BATCH * tsr_layer_in_size(&m->layers[0]);
    float *pf = malloc((np + 1) * sizeof *pf), *xf = malloc(nx * sizeof *xf);
    float *gf = malloc((np + 1) * sizeof *gf), *dxf = malloc(nx * sizeof *dxf);
    double *p = malloc((np + 1) * sizeof *p), *x = malloc(nx * sizeof *x);
    int32_t labels[BATCH * 16];
    assert_true(tsr_model_positions(m) <= 16);
    assert_true(pf && xf && gf && dxf && p && x);
    uint64_t seed = 0x1234 + (uint64_t)strlen(spec);
    tsr_test_fill_uniform(pf, np, seed, -0.5f, 0.5f);
    tsr_model_input in = tsr_model_get_input(m);
    int tokens = desc->dtype == TSR_DTYPE_I32; /* x holds ids (written as int32), no gradient */
    tsr_test_fill_uniform(xf, nx, seed + 1, -1.0f, 1.0f);
    size_t nlabels = BATCH * tsr_model_positions(m);
    for (size_t s = 0; s < nlabels; s++) labels[s] = (int32_t)((s * 7 + 3) % in.classes);
    for (size_t i = 0; i < np; i++) p[i] = pf[i];
    for (size_t i = 0; i < nx; i++) {
        int32_t id = (int32_t)((i * 5 + i / 3) % desc->vocab); /* ids repeat within a sample */
        if (tokens) memcpy(&xf[i], &id, 4);
        x[i] = tokens ? (double)id : xf[i];
    }
    assert_int_equal(tsr_buf_write(tsr_stage_params(st), 0, pf, np * 4), TSR_OK);
    tsr_ref xi = tsr_stage_input(st), li = tsr_stage_labels(st);
    assert_int_equal(tsr_buf_write(xi.buf, xi.off * 4, xf, nx * 4), TSR_OK);
    assert_int_equal(tsr_buf_write(li.buf, li.off * 4, labels, nlabels * 4), TSR_OK);

    uint64_t dseed = 99;
    float loss;
    assert_int_equal(tsr_stage_forward(st, BATCH, 1, dseed, &loss), TSR_OK);
    assert_int_equal(tsr_stage_backward(st, BATCH, 0), TSR_OK);
    assert_int_equal(tsr_buf_read(tsr_stage_grads(st), 0, gf, np * 4), TSR_OK);
    tsr_ref dx = tsr_stage_input_grad(st);
    assert_int_equal(tsr_buf_read(dx.buf, dx.off * 4, dxf, nx * 4), TSR_OK);
    /* the hook saw every layer once, last to first, covering the gradient buffer */
    assert_int_equal(hl.calls, m->count);
    assert_int_equal(hl.bad, 0);
    assert_int_equal(hl.next_off, np);

    ref r = {m, st, dseed, BATCH, labels};
    double l0 = ref_loss(&r, p, x);
    int bad = 0;
    if (fabs(l0 - loss) > 1e-4 + 1e-4 * fabs(l0)) {
        fprintf(stderr, "%s on %s: loss %.7g, reference %.7g\n", spec, dname, (double)loss, l0);
        bad++;
    }
    const double h = 1e-4;
    size_t stride = np > max_checks ? np / max_checks + 1 : 1;
    for (size_t i = 0; i < np; i += stride) {
        double keep = p[i];
        p[i] = keep + h;
        double lp = ref_loss(&r, p, x);
        p[i] = keep - h;
        double lm = ref_loss(&r, p, x);
        p[i] = keep;
        bad += check_close("parameter", spec, dname, i, gf[i], (lp - lm) / (2 * h));
    }
    stride = nx > max_checks ? nx / max_checks + 1 : 1;
    for (size_t i = 0; i < nx && !tokens; i += stride) {
        double keep = x[i];
        x[i] = keep + h;
        double lp = ref_loss(&r, p, x);
        x[i] = keep - h;
        double lm = ref_loss(&r, p, x);
        x[i] = keep;
        bad += check_close("input", spec, dname, i, dxf[i], (lp - lm) / (2 * h));
    }

    /* accumulate = 1 adds a second copy of the same gradient */
    if (np) {
        float *g2 = malloc(np * sizeof *g2);
        assert_non_null(g2);
        assert_int_equal(tsr_stage_forward(st, BATCH, 1, dseed, NULL), TSR_OK);
        assert_int_equal(tsr_stage_backward(st, BATCH, 1), TSR_OK);
        assert_int_equal(tsr_buf_read(tsr_stage_grads(st), 0, g2, np * 4), TSR_OK);
        for (size_t i = 0; i < np; i++)
            if (fabsf(g2[i] - 2 * gf[i]) > 1e-5f + 1e-5f * fabsf(gf[i])) {
                fprintf(stderr, "%s on %s: accumulated gradient %zu: %g, expected %g\n", spec, dname, i,
                        (double)g2[i], 2.0 * gf[i]);
                bad++;
                break;
            }
        free(g2);
    }
    free(pf), free(xf), free(gf), free(dxf), free(p), free(x);
    tsr_stage_free(st);
    tsr_backend_free(be);
    tsr_model_free(m);
    return bad;
}

/* Token models: the embedding's table gradient (ids repeat, so rows accumulate). */
static const struct {
    const char *spec;
    tsr_model_input_desc in;
} token_cases[] = {
    {"embed:3,dense:4", {TSR_DTYPE_I32, 1, {5, 0, 0}, 7, 4}},
    {"embed:4,relu,add:0,dropout:0.25,dense:3", {TSR_DTYPE_I32, 2, {2, 3, 0}, 5, 3}},
};

static const struct {
    const char *spec;
    tsr_model_input in;
} cases[] = {
    {"dense:5", {1, 2, 3, 5}},
    {"conv3x3:3", {2, 5, 5, 75}},
    {"conv3x3:2/s2/p1", {2, 6, 6, 18}},
    {"conv2x3:2/valid", {1, 4, 5, 18}},
    /* 32 filters over 9 rows: the weight gradient as a batch of two 16-filter GEMMs */
    {"conv3x3:32", {1, 4, 4, 512}},
    {"pool2", {2, 4, 4, 8}},
    {"pool3/s2", {1, 7, 7, 9}},
    {"relu", {1, 3, 4, 12}},
    {"dropout:0.5", {1, 3, 4, 12}},
    {"flatten", {2, 2, 2, 8}},
    {"dense:8,relu,dense:4", {1, 3, 3, 4}},
    {"conv3x3:4,relu,pool2,conv3x3:4/s2/p1,relu,flatten,dropout:0.25,dense:6,relu,dense:5", {1, 8, 8, 5}},
    /* residuals: a gradient read twice accumulates (in place, through a dense, a relu's
     * scratch, a conv's col2im, the stage input) */
    {"dense:6,relu,dense:6,add:1,relu,dense:4", {1, 2, 3, 4}},
    {"dense:6,add:in,relu,add:0,dense:6", {6, 1, 1, 6}},
    {"relu,dense:12,add:0,relu,add:2,dense:3", {12, 1, 1, 3}},
    {"conv3x3:2,relu,conv3x3:2,add:1,add:in,pool2,flatten,add:6,dense:4", {2, 4, 4, 4}},
    {"dense:5,add:0,add:1,dense:5", {1, 1, 5, 5}},
};

/* The transformer pieces (every backend has them). */
static const struct {
    const char *spec;
    tsr_model_input in;
} gpt_cases[] = {
    {"gelu", {1, 3, 5, 15}},
    {"dense:6,gelu,dense:6,add:1,gelu,dense:4", {1, 2, 3, 4}},
    /* a transformer block's pieces over [T, C] rows: T = 3 tokens of 5 channels */
    {"layernorm,linear:12,attention:2,linear:5/std0.3,add:in,layernorm,posembed:4", {3, 5, 1, 15}},
    {"linear:6,gelu,linear:2,layernorm", {4, 3, 1, 8}},
    /* the tensor-parallel operators on one rank: identities around a bias-less projection */
    {"layernorm,tpcopy,linear:7,gelu,linear:5/nobias,tpreduce,add:in", {3, 5, 1, 15}},
};

/* A GPT in small: the tied head adds its gradient to the embedding's, and
 * the loss is over every position. */
static const struct {
    const char *spec;
    tsr_model_input_desc in;
} gpt_token_cases[] = {
    {"embed:6,posembed:5,layernorm,linear:18,attention:3,linear:6,add:1,layernorm,linear:8,gelu,linear:6,"
     "add:6,layernorm,lmhead:0",
     {TSR_DTYPE_I32, 1, {4, 0, 0}, 7, 7}},
    /* the vocabulary-parallel kinds on one rank (the whole vocabulary as its slice): the
     * tensor-parallel share of a GPT (lib/model/gpt_tp.c) */
    {"vpembed:6/from0/rows7,posembed:5,layernorm,tpcopy,linear:18,attention:3,linear:6/nobias,tpreduce,add:1,"
     "layernorm,tpcopy,lmhead:0",
     {TSR_DTYPE_I32, 1, {4, 0, 0}, 7, 7}},
};

static void test_gradcheck_all_devices(void **state) {
    (void)state;
    tsr_context *ctx;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_HWLOC; /* devices through OpenCL only; keeps sanitizer runs clean */
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    int bad = 0, devices = tsr_context_device_count(ctx);
    for (int d = 0; d < devices; d++) {
        const tsr_device_info *info = tsr_context_device(ctx, d);
        fprintf(stderr, "device %s\n", info->id);
        for (size_t c = 0; c < TSR_ARRAY_SIZE(cases); c++) {
            tsr_model_input in = cases[c].in;
            tsr_model_input_desc desc = {TSR_DTYPE_F32, 3, {in.channels, in.height, in.width}, 0, in.classes};
            bad += check_model(ctx, d, cases[c].spec, &desc, 400);
        }
        /* convolutions whose batch runs in chunks: one image each, and at 360 column floats
         * a chunk, 2 + 1 images (the last chunk shorter) for the stride-2 layers (162 and 144
         * floats an image), one image for the 450- and 576-float ones */
        static const size_t chunks[] = {1, 360};
        size_t saved = tsr_conv2d_chunk_floats;
        for (size_t k = 0; k < TSR_ARRAY_SIZE(chunks); k++)
            for (size_t c = 0; c < TSR_ARRAY_SIZE(cases); c++) {
                if (!strstr(cases[c].spec, "conv")) continue;
                tsr_conv2d_chunk_floats = chunks[k];
                tsr_model_input in = cases[c].in;
                tsr_model_input_desc desc = {TSR_DTYPE_F32, 3, {in.channels, in.height, in.width}, 0, in.classes};
                bad += check_model(ctx, d, cases[c].spec, &desc, 400);
            }
        tsr_conv2d_chunk_floats = saved;
        for (size_t c = 0; c < TSR_ARRAY_SIZE(token_cases); c++)
            bad += check_model(ctx, d, token_cases[c].spec, &token_cases[c].in, 400);
        for (size_t c = 0; c < TSR_ARRAY_SIZE(gpt_cases); c++) {
            tsr_model_input in = gpt_cases[c].in;
            tsr_model_input_desc desc = {TSR_DTYPE_F32, 3, {in.channels, in.height, in.width}, 0, in.classes};
            bad += check_model(ctx, d, gpt_cases[c].spec, &desc, 400);
        }
        for (size_t c = 0; c < TSR_ARRAY_SIZE(gpt_token_cases); c++)
            bad += check_model(ctx, d, gpt_token_cases[c].spec, &gpt_token_cases[c].in, 400);
    }
    tsr_context_free(ctx);
    assert_int_equal(bad, 0);
}

/* A model split into two stages on one backend (activations and gradients handed over by
 * copies, as a pipeline does) gives the same loss and gradients as one stage. */
static void test_split_stages_match_whole(void **state) {
    (void)state;
    tsr_context_options o;
    tsr_context_options_init(&o);
    o.flags = TSR_CONTEXT_NO_OPENCL | TSR_CONTEXT_NO_HWLOC;
    tsr_context *ctx;
    assert_int_equal(tsr_context_create(&ctx, &o), TSR_OK);
    tsr_model *m;
    tsr_model_input in = {1, 8, 8, 5};
    assert_int_equal(tsr_model_parse(ctx, "conv3x3:4,relu,pool2,dropout:0.2,dense:6,relu,dense:5", in, &m),
                     TSR_OK);
    tsr_backend *be;
    assert_int_equal(tsr_backend_open(ctx, 0, &be), TSR_OK);
    const size_t split = 3, B = 4, nx = B * 64;
    tsr_stage *whole, *a, *b;
    tsr_stage_options ow = {0, m->count, B, 0, TSR_PRECISION_FP32, 0}, oa = {0, split, B, 0, TSR_PRECISION_FP32, 0},
                      ob = {split, m->count, B, 1, TSR_PRECISION_FP32, 0};
    assert_int_equal(tsr_stage_create(be, m, &ow, &whole), TSR_OK);
    assert_int_equal(tsr_stage_create(be, m, &oa, &a), TSR_OK);
    assert_int_equal(tsr_stage_create(be, m, &ob, &b), TSR_OK);
    assert_int_equal(tsr_stage_param_count(a) + tsr_stage_param_count(b), tsr_stage_param_count(whole));
    assert_int_equal(tsr_stage_init_params(whole, 0, 3), TSR_OK);
    assert_int_equal(tsr_stage_init_params(a, 0, 3), TSR_OK);
    assert_int_equal(tsr_stage_init_params(b, 0, 3), TSR_OK);
    float x[4 * 64];
    int32_t y[4] = {0, 4, 2, 1};
    tsr_test_fill_uniform(x, nx, 77, -1, 1);
    tsr_ref r;
    r = tsr_stage_input(whole);
    assert_int_equal(tsr_buf_write(r.buf, r.off * 4, x, sizeof x), TSR_OK);
    r = tsr_stage_input(a);
    assert_int_equal(tsr_buf_write(r.buf, r.off * 4, x, sizeof x), TSR_OK);
    r = tsr_stage_labels(whole);
    assert_int_equal(tsr_buf_write(r.buf, r.off * 4, y, sizeof y), TSR_OK);
    r = tsr_stage_labels(b);
    assert_int_equal(tsr_buf_write(r.buf, r.off * 4, y, sizeof y), TSR_OK);
    float lw, lb;
    assert_int_equal(tsr_stage_forward(whole, B, 1, 5, &lw), TSR_OK);
    assert_int_equal(tsr_stage_backward(whole, B, 0), TSR_OK);
    /* pipeline: a forward, hand over the activations, b forward + backward, hand back */
    size_t boundary = B * tsr_layer_out_size(&m->layers[split - 1]) * 4;
    tsr_ref ao = tsr_stage_output(a), bi = tsr_stage_input(b);
    assert_int_equal(tsr_stage_forward(a, B, 1, 5, NULL), TSR_OK);
    assert_int_equal(tsr_buf_copy(bi.buf, bi.off * 4, ao.buf, ao.off * 4, boundary), TSR_OK);
    assert_int_equal(tsr_stage_forward(b, B, 1, 5, &lb), TSR_OK);
    assert_int_equal(tsr_stage_backward(b, B, 0), TSR_OK);
    tsr_ref bg = tsr_stage_input_grad(b), ag = tsr_stage_output_grad(a);
    assert_int_equal(tsr_buf_copy(ag.buf, ag.off * 4, bg.buf, bg.off * 4, boundary), TSR_OK);
    assert_int_equal(tsr_stage_backward(a, B, 0), TSR_OK);
    assert_true(lw == lb);
    for (size_t i = 0; i < m->count; i++) {
        tsr_stage *part = i < split ? a : b;
        size_t wo, wc, bo, bc, pwo, pbo;
        if (tsr_stage_layer_params(whole, i, &wo, &wc, &bo, &bc) != TSR_OK) fail();
        if (tsr_stage_layer_params(part, i, &pwo, NULL, &pbo, NULL) != TSR_OK) fail();
        if (!wc) continue;
        float g1[64 * 6], g2[64 * 6];
        assert_true(wc <= 64 * 6);
        assert_int_equal(tsr_buf_read(tsr_stage_grads(whole), wo * 4, g1, wc * 4), TSR_OK);
        assert_int_equal(tsr_buf_read(tsr_stage_grads(part), pwo * 4, g2, wc * 4), TSR_OK);
        for (size_t k = 0; k < wc; k++) assert_true(fabsf(g1[k] - g2[k]) <= 1e-6f + 1e-5f * fabsf(g1[k]));
        assert_int_equal(tsr_buf_read(tsr_stage_params(whole), bo * 4, g1, bc * 4), TSR_OK);
        assert_int_equal(tsr_buf_read(tsr_stage_params(part), pbo * 4, g2, bc * 4), TSR_OK);
        assert_memory_equal(g1, g2, bc * 4);
    }
    /* backward without a matching training forward is refused */
    assert_int_equal(tsr_stage_forward(whole, B, 0, 0, NULL), TSR_OK);
    assert_int_equal(tsr_stage_backward(whole, B, 0), TSR_ERR_STATE);
    assert_int_equal(tsr_stage_forward(whole, B + 1, 1, 0, NULL), TSR_ERR_SHAPE);
    tsr_stage_free(whole);
    tsr_stage_free(a);
    tsr_stage_free(b);
    tsr_stage_free(NULL);
    tsr_backend_free(be);
    tsr_model_free(m);
    tsr_context_free(ctx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck_all_devices),
        cmocka_unit_test(test_split_stages_match_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
