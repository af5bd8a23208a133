/* Optimizer updates in place, one work-item per parameter; formulas as in backend.h. */
#pragma OPENCL FP_CONTRACT OFF

/* g' = g*gs + wd*w; v = momentum*v + g'; w -= lr * (nesterov ? g' + momentum*v : v).
 * With momentum 0 the step is g' and v is not touched (it may be a dummy). gs: the gradient's
 * factor (1: as it is; g*1 is g). */
__kernel void sgd_update(ulong n, float lr, float momentum, float wd, int nesterov, float gs,
                         __global float *w, ulong wo, __global const float *g, ulong go,
                         __global float *v, ulong vo) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    float wi = w[wo + i];
    float gi = g[go + i] * gs + wd * wi;
    float step = gi;
    if (momentum != 0.0f) {
        float vi = momentum * v[vo + i] + gi;
        v[vo + i] = vi;
        step = nesterov ? gi + momentum * vi : vi;
    }
    w[wo + i] = wi - lr * step;
}

/* Adam (decoupled = 0: L2 added to the gradient) and AdamW (decoupled = 1). */
__kernel void adam_update(ulong n, float lr, float beta1, float beta2, float eps, float wd,
                          int decoupled, float bc1, float bc2, float gs, __global float *w,
                          ulong wo, __global const float *g, ulong go, __global float *m,
                          ulong mo, __global float *v, ulong vo) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    float wi = w[wo + i];
    float gi = g[go + i] * gs;
    if (!decoupled) gi += wd * wi;
    float mi = beta1 * m[mo + i] + (1.0f - beta1) * gi;
    float vi = beta2 * v[vo + i] + (1.0f - beta2) * gi * gi;
    m[mo + i] = mi;
    v[vo + i] = vi;
    float upd = lr * (mi / bc1) / (sqrt(vi / bc2) + eps);
    if (decoupled) upd += lr * wd * wi;
    w[wo + i] = wi - upd;
}
