/* Transformer (GPT-2) kernels (OpenCL C 1.2): layer norm, GELU (tanh form), the causal
 * softmax of attention and its backward, cross-entropy with ignored targets. Formulas as
 * backends/host/host_gpt.c (llm.c's train_gpt2.c). The row kernels run one work-group per row
 * with a power-of-two local size and tree reductions in local memory; nothing uses atomics,
 * so a device gives the same bits run after run. Offsets count elements. */
#pragma OPENCL FP_CONTRACT OFF

/* Sum (max) of v over the work-group, returned to every work-item; tmp holds the local size
 * in floats and is free again on return. */
static float group_sum(float v, __local float *tmp) {
    size_t lid = get_local_id(0);
    tmp[lid] = v;
    for (size_t s = get_local_size(0) / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < s) tmp[lid] += tmp[lid + s];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float r = tmp[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

static float group_max(float v, __local float *tmp) {
    size_t lid = get_local_id(0);
    tmp[lid] = v;
    for (size_t s = get_local_size(0) / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < s) tmp[lid] = fmax(tmp[lid], tmp[lid + s]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float r = tmp[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* ---- layer norm: one work-group per row of `dim` ---- */

__kernel void layernorm_forward(ulong dim, float eps, __global const float *x, ulong xo,
                                __global const float *gamma, ulong go,
                                __global const float *beta, ulong bo, __global float *y,
                                ulong yo, __global float *mean, ulong mo, __global float *rstd,
                                ulong ro, __local float *tmp) {
    size_t r = get_group_id(0), lid = get_local_id(0), lsz = get_local_size(0);
    __global const float *xr = x + xo + r * dim;
    __global float *yr = y + yo + r * dim;
    float acc = 0.0f;
    for (ulong j = lid; j < dim; j += lsz) acc += xr[j];
    float m = group_sum(acc, tmp) / (float)dim;
    acc = 0.0f;
    for (ulong j = lid; j < dim; j += lsz) {
        float c = xr[j] - m;
        acc += c * c;
    }
    float s = 1.0f / sqrt(group_sum(acc, tmp) / (float)dim + eps);
    for (ulong j = lid; j < dim; j += lsz) yr[j] = (xr[j] - m) * s * gamma[go + j] + beta[bo + j];
    if (lid == 0) {
        mean[mo + r] = m;
        rstd[ro + r] = s;
    }
}

/* dx (+)= rstd * (g - mean(g) - xhat * mean(g * xhat)), g = gamma * dy. Each work-item reads
 * dy[j] before it writes dx[j], so dx may alias dy. */
__kernel void layernorm_backward_rows(ulong dim, int add_dx, __global const float *x, ulong xo,
                                      __global const float *gamma, ulong go,
                                      __global const float *mean, ulong mo,
                                      __global const float *rstd, ulong ro,
                                      __global const float *dy, ulong dyo, __global float *dx,
                                      ulong dxo, __local float *tmp) {
    size_t r = get_group_id(0), lid = get_local_id(0), lsz = get_local_size(0);
    __global const float *xr = x + xo + r * dim, *dyr = dy + dyo + r * dim;
    __global float *dxr = dx + dxo + r * dim;
    float m = mean[mo + r], s = rstd[ro + r], g_acc = 0.0f, gx_acc = 0.0f;
    for (ulong j = lid; j < dim; j += lsz) {
        float g = gamma[go + j] * dyr[j];
        g_acc += g;
        gx_acc += g * ((xr[j] - m) * s);
    }
    float g_mean = group_sum(g_acc, tmp) / (float)dim;
    float gx_mean = group_sum(gx_acc, tmp) / (float)dim;
    for (ulong j = lid; j < dim; j += lsz) {
        float g = gamma[go + j] * dyr[j];
        float v = (g - g_mean - ((xr[j] - m) * s) * gx_mean) * s;
        dxr[j] = add_dx ? dxr[j] + v : v;
    }
}

/* dgamma[c] += sum over rows of dy * xhat, dbeta[c] += sum of dy. 2-D groups: dimension 0 a
 * block of columns, dimension 1 `lanes` work-items that each sum every lanes-th row; lane 0
 * then adds the lanes in order. tmp holds 2 x the group's size in floats. */
__kernel void layernorm_backward_cols(ulong rows, ulong dim, __global const float *x, ulong xo,
                                      __global const float *mean, ulong mo,
                                      __global const float *rstd, ulong ro,
                                      __global const float *dy, ulong dyo,
                                      __global float *dgamma, ulong dgo, __global float *dbeta,
                                      ulong dbo, __local float *tmp) {
    size_t c = get_global_id(0), lc = get_local_id(0), lane = get_local_id(1);
    size_t width = get_local_size(0), lanes = get_local_size(1);
    float sg = 0.0f, sb = 0.0f;
    if (c < dim)
        for (ulong r = lane; r < rows; r += lanes) {
            float d = dy[dyo + r * dim + c];
            sg += d * ((x[xo + r * dim + c] - mean[mo + r]) * rstd[ro + r]);
            sb += d;
        }
    __local float *tg = tmp, *tb = tmp + width * lanes;
    tg[lane * width + lc] = sg;
    tb[lane * width + lc] = sb;
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lane != 0 || c >= dim) return;
    for (size_t l = 1; l < lanes; l++) {
        sg += tg[l * width + lc];
        sb += tb[l * width + lc];
    }
    dgamma[dgo + c] += sg;
    dbeta[dbo + c] += sb;
}

/* ---- GELU, tanh form: element-wise ---- */

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_C 0.044715f

__kernel void gelu_forward(ulong n, __global const float *x, ulong xo, __global float *y,
                           ulong yo) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    float v = x[xo + i];
    y[yo + i] = 0.5f * v * (1.0f + tanh(GELU_K * (v + GELU_C * v * v * v)));
}

/* dx = gelu'(x) * dy; dx may alias dy. */
__kernel void gelu_backward(ulong n, __global const float *x, ulong xo, __global const float *dy,
                            ulong dyo, __global float *dx, ulong dxo) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    float v = x[xo + i];
    float t = tanh(GELU_K * (v + GELU_C * v * v * v));
    float sech2 = 1.0f - t * t; /* = 1/cosh^2, without cosh's overflow */
    float slope = 0.5f * (1.0f + t) + 0.5f * v * sech2 * GELU_K * (1.0f + 3.0f * GELU_C * v * v);
    dx[dxo + i] = slope * dy[dyo + i];
}

/* ---- attention: the batch*heads T x T score matrices stacked, one work-group per row;
 *      row t of a matrix (t = row % T) keeps columns j <= t ---- */

/* In place: softmax over j <= t of the (already scaled) scores, 0 above the diagonal. */
__kernel void attn_softmax(ulong T, __global float *att, ulong ao, __local float *tmp) {
    size_t row = get_group_id(0), lid = get_local_id(0), lsz = get_local_size(0);
    ulong t = row % T;
    __global float *a = att + ao + row * T;
    float m = -INFINITY;
    for (ulong j = lid; j <= t; j += lsz) m = fmax(m, a[j]);
    m = group_max(m, tmp);
    float acc = 0.0f;
    for (ulong j = lid; j <= t; j += lsz) {
        float e = exp(a[j] - m);
        a[j] = e;
        acc += e;
    }
    float inv = 1.0f / group_sum(acc, tmp);
    for (ulong j = lid; j < T; j += lsz) a[j] = j <= t ? a[j] * inv : 0.0f;
}

/* In place on d (d att on entry): d score = att * (d att - sum_j att * d att), causal part. */
__kernel void attn_softmax_backward(ulong T, __global const float *att, ulong ao,
                                    __global float *d, ulong dso, __local float *tmp) {
    size_t row = get_group_id(0), lid = get_local_id(0), lsz = get_local_size(0);
    ulong t = row % T;
    __global const float *a = att + ao + row * T;
    __global float *g = d + dso + row * T;
    float acc = 0.0f;
    for (ulong j = lid; j <= t; j += lsz) acc += a[j] * g[j];
    float dot = group_sum(acc, tmp);
    for (ulong j = lid; j < T; j += lsz) g[j] = j <= t ? a[j] * (g[j] - dot) : 0.0f;
}

/* ---- cross-entropy, target -1 ignored: one work-group per row of V logits ---- */

/* probs = softmax(logits), loss = -log probs[target] (0 for -1, NaN for another target outside
 * [0, V)). Each work-item writes only the columns it read, and the target's logit is read
 * before the first barrier, so probs may alias logits. */
__kernel void xent_forward(ulong V, __global const float *logits, ulong lo,
                           __global const int *targets, ulong to, __global float *probs,
                           ulong po, __global float *loss, ulong losso, __local float *tmp) {
    size_t r = get_group_id(0), lid = get_local_id(0), lsz = get_local_size(0);
    __global const float *l = logits + lo + r * V;
    __global float *p = probs + po + r * V;
    int y = targets[to + r];
    int valid = y >= 0 && (ulong)y < V;
    float ly = valid ? l[y] : 0.0f;
    float m = -INFINITY;
    for (ulong j = lid; j < V; j += lsz) m = fmax(m, l[j]);
    m = group_max(m, tmp);
    float acc = 0.0f;
    for (ulong j = lid; j < V; j += lsz) {
        float e = exp(l[j] - m);
        p[j] = e;
        acc += e;
    }
    float sum = group_sum(acc, tmp), inv = 1.0f / sum;
    for (ulong j = lid; j < V; j += lsz) p[j] *= inv;
    if (lid == 0) loss[losso + r] = y == -1 ? 0.0f : valid ? log(sum) - (ly - m) : NAN;
}

/* dlogits = scale * (probs - onehot(target)): a zero row for -1, NaN for a target outside
 * [0, V). 2-D range (column, row); dlogits may alias probs. */
__kernel void xent_backward(ulong V, __global const float *probs, ulong po,
                            __global const int *targets, ulong to, float scale,
                            __global float *dl, ulong dlo) {
    size_t j = get_global_id(0), r = get_global_id(1);
    if (j >= V) return;
    int y = targets[to + r];
    ulong i = r * V + j;
    float d = scale * probs[po + i];
    if (y == -1)
        d = 0.0f;
    else if (y < 0 || (ulong)y >= V)
        d = NAN;
    else if ((ulong)y == j)
        d -= scale;
    dl[dlo + i] = d;
}
