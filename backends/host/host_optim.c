/* Host optimizer steps (SGD with momentum/Nesterov/weight decay, Adam/AdamW): a portable loop
 * and, on x86-64, SSE2/AVX2/AVX-512 kernels chosen at run time by what the CPU supports.
 * Every variant gives the portable loop's bits (host_optim_kernel.inc says how), which
 * tests/unit/test_optim_simd.c checks for each variant the CPU runs. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif
#include <math.h>
#include "backends/host/host.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define TSR_OPTIM_X86 1
#include <immintrin.h>
#endif

/* Element-wise work in blocks of BLOCK elements (as host_ops.c: aligned parts for the
 * threads); below GRAIN elements per thread the step runs on the caller alone. */
#define BLOCK 4096
#define GRAIN 32768
#define BLOCKS(n) (((n) + BLOCK - 1) / BLOCK)

/* The gradient's factor: grad_scale, 1 when it is 0. g*1 is g for every non-NaN value, so the
 * kernels always multiply (one rounding, as the separate scale pass gave). */
static float grad_factor(float s) { return s == 0.0f ? 1.0f : s; }

static void sgd_portable(size_t n, const tsr_sgd_params *p, float *restrict w,
                         const float *restrict g, float *restrict v) {
    const float lr = p->lr, wd = p->weight_decay, mom = p->momentum, gs = grad_factor(p->grad_scale);
    if (mom == 0.0f) { /* no state: v is not touched (and may be absent) */
        for (size_t i = 0; i < n; i++) w[i] -= lr * (g[i] * gs + wd * w[i]);
        return;
    }
    if (p->nesterov) {
        for (size_t i = 0; i < n; i++) {
            float gi = g[i] * gs + wd * w[i];
            float vi = mom * v[i] + gi;
            v[i] = vi;
            w[i] -= lr * (gi + mom * vi);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            float gi = g[i] * gs + wd * w[i];
            float vi = mom * v[i] + gi;
            v[i] = vi;
            w[i] -= lr * vi;
        }
    }
}

/* Adam's per-step constants, computed once so every variant uses the same roundings. */
typedef struct adam_consts {
    float lr, b1, b1c, b2, b2c, eps, inv_bc1, inv_bc2, wd_grad, wd_weight, gs;
} adam_consts;

static adam_consts adam_consts_of(const tsr_adam_params *p) {
    /* decoupled: decay on the weights (AdamW); else L2 folded into the gradient */
    return (adam_consts){p->lr, p->beta1, 1.0f - p->beta1, p->beta2, 1.0f - p->beta2, p->eps,
                         1.0f / p->bias_correction1, 1.0f / p->bias_correction2,
                         p->decoupled ? 0.0f : p->weight_decay,
                         p->decoupled ? p->weight_decay : 0.0f, grad_factor(p->grad_scale)};
}

static void adam_portable(size_t n, const tsr_adam_params *p, float *restrict w,
                          const float *restrict g, float *restrict m, float *restrict v) {
    const adam_consts c = adam_consts_of(p);
    for (size_t i = 0; i < n; i++) {
        float wi = w[i];
        float gi = g[i] * c.gs + c.wd_grad * wi;
        float mi = c.b1 * m[i] + c.b1c * gi;
        float vi = c.b2 * v[i] + (c.b2c * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] = wi - c.lr * ((mi * c.inv_bc1) / (sqrtf(vi * c.inv_bc2) + c.eps) + c.wd_weight * wi);
    }
}

#if TSR_OPTIM_X86
/* SSE2 is part of x86-64: no target attribute, no check. (gcc does not vectorise the
 * portable Adam loop itself: sqrtf may set errno.) */
#define OPTIM_FN(name) name##_sse2
#define V __m128
#define V_WIDTH 4
#define V_SET1 _mm_set1_ps
#define V_LOAD _mm_loadu_ps
#define V_STORE _mm_storeu_ps
#define V_ADD _mm_add_ps
#define V_SUB _mm_sub_ps
#define V_MUL _mm_mul_ps
#define V_DIV _mm_div_ps
#define V_SQRT _mm_sqrt_ps
#include "backends/host/host_optim_kernel.inc"

/* AVX2 and AVX-512F without FMA: the kernels must not fuse (and -std=c11 keeps gcc from
 * contracting on its own: -ffp-contract=off is its default in ISO C modes). The target
 * switch in gcc's and clang's spelling (the fuzz build is clang's). */
#if defined(__clang__)
#define TARGET_BEGIN(isa) _Pragma(isa)
#define TARGET_END _Pragma("clang attribute pop")
#define AVX2_ON "clang attribute push (__attribute__((target(\"avx2\"))), apply_to = function)"
#define AVX512_ON "clang attribute push (__attribute__((target(\"avx512f\"))), apply_to = function)"
#else
#define TARGET_BEGIN(isa) _Pragma("GCC push_options") _Pragma(isa)
#define TARGET_END _Pragma("GCC pop_options")
#define AVX2_ON "GCC target(\"avx2\")"
#define AVX512_ON "GCC target(\"avx512f\")"
#endif
TARGET_BEGIN(AVX2_ON)
#define OPTIM_FN(name) name##_avx2
#define V __m256
#define V_WIDTH 8
#define V_SET1 _mm256_set1_ps
#define V_LOAD _mm256_loadu_ps
#define V_STORE _mm256_storeu_ps
#define V_ADD _mm256_add_ps
#define V_SUB _mm256_sub_ps
#define V_MUL _mm256_mul_ps
#define V_DIV _mm256_div_ps
#define V_SQRT _mm256_sqrt_ps
#include "backends/host/host_optim_kernel.inc"
TARGET_END

TARGET_BEGIN(AVX512_ON)
#define OPTIM_FN(name) name##_avx512
#define V __m512
#define V_WIDTH 16
#define V_SET1 _mm512_set1_ps
#define V_LOAD _mm512_loadu_ps
#define V_STORE _mm512_storeu_ps
#define V_ADD _mm512_add_ps
#define V_SUB _mm512_sub_ps
#define V_MUL _mm512_mul_ps
#define V_DIV _mm512_div_ps
#define V_SQRT _mm512_sqrt_ps
#include "backends/host/host_optim_kernel.inc"
TARGET_END

static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
static int cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f"); /* gcc's check includes the OS saving zmm state */
}
#endif

/* Widest first: tsr_host_optim_best takes the first one the CPU supports. */
static const tsr_host_optim_variant variants[] = {
#if TSR_OPTIM_X86
    {"avx512", cpu_has_avx512, sgd_avx512, adam_avx512},
    {"avx2", cpu_has_avx2, sgd_avx2, adam_avx2},
    {"sse2", NULL, sgd_sse2, adam_sse2},
#endif
    {"portable", NULL, sgd_portable, adam_portable},
};

size_t tsr_host_optim_variants(const tsr_host_optim_variant **list) {
    *list = variants;
    return sizeof variants / sizeof variants[0];
}

const tsr_host_optim_variant *tsr_host_optim_best(void) {
    size_t i = 0;
    while (variants[i].supported && !variants[i].supported()) i++; /* the last needs no check */
    return &variants[i];
}

typedef struct optim_args {
    size_t n;
    const tsr_host_optim_variant *k;
    const tsr_sgd_params *sgd;
    const tsr_adam_params *adam;
    float *w, *m, *v;
    const float *g;
} optim_args;

static void sgd_range(void *arg, size_t lo_b, size_t hi_b) {
    const optim_args *a = arg;
    size_t lo = lo_b * BLOCK, hi = hi_b * BLOCK < a->n ? hi_b * BLOCK : a->n;
    a->k->sgd(hi - lo, a->sgd, a->w + lo, a->g + lo, a->v ? a->v + lo : NULL);
}

static void adam_range(void *arg, size_t lo_b, size_t hi_b) {
    const optim_args *a = arg;
    size_t lo = lo_b * BLOCK, hi = hi_b * BLOCK < a->n ? hi_b * BLOCK : a->n;
    a->k->adam(hi - lo, a->adam, a->w + lo, a->g + lo, a->m + lo, a->v + lo);
}

tsr_status tsr_host_sgd_update(tsr_backend *be, size_t n, const tsr_sgd_params *p, tsr_ref w,
                               tsr_ref g, tsr_ref v) {
    optim_args a = {n, tsr_host_optim_best(), p, NULL, tsr_host_f32(w), NULL, tsr_host_f32(v),
                    tsr_host_f32(g)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN / BLOCK, sgd_range, &a);
    return TSR_OK;
}

tsr_status tsr_host_adam_update(tsr_backend *be, size_t n, const tsr_adam_params *p, tsr_ref w,
                                tsr_ref g, tsr_ref m, tsr_ref v) {
    optim_args a = {n, tsr_host_optim_best(), NULL, p, tsr_host_f32(w), tsr_host_f32(m),
                    tsr_host_f32(v), tsr_host_f32(g)};
    tsr_host_parallel(be, BLOCKS(n), GRAIN / BLOCK, adam_range, &a);
    return TSR_OK;
}
