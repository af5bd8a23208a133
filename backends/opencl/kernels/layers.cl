/* Layer kernels (OpenCL C 1.2): bias, ReLU, softmax cross-entropy, im2col/col2im (gathers, no
 * atomics), max pooling, dropout. Offsets count elements of the operand's type. */
#pragma OPENCL FP_CONTRACT OFF

/* y[o][c][i] += bias[c]; one work-item per element of y. */
__kernel void bias_add(ulong total, ulong channels, ulong inner, __global const float *bias,
                       ulong bo, __global float *y, ulong yo) {
    size_t i = get_global_id(0);
    if (i < total) y[yo + i] += bias[bo + (i / inner) % channels];
}

static void reduce_sum(__local float *tmp) {
    size_t lid = get_local_id(0);
    for (size_t s = get_local_size(0) / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < s) tmp[lid] += tmp[lid + s];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* db[c] += sum over o, i of dy[o][c][i]: one work-group per channel, reading runs of `inner`
 * consecutive elements (conv layers, inner = H*W). */
__kernel void bias_grad_rows(ulong outer, ulong channels, ulong inner, __global const float *dy,
                             ulong dyo, __global float *db, ulong dbo, __local float *tmp) {
    size_t c = get_group_id(0), lid = get_local_id(0);
    ulong count = outer * inner;
    float acc = 0.0f;
    for (ulong j = lid; j < count; j += get_local_size(0)) {
        ulong o = j / inner;
        acc += dy[dyo + (o * channels + c) * inner + (j - o * inner)];
    }
    tmp[lid] = acc;
    reduce_sum(tmp);
    if (lid == 0) db[dbo + c] += tmp[0];
}

/* Dense layers (inner = 1): one work-item per channel walks the rows; neighbours read
 * neighbouring columns, so loads coalesce. */
__kernel void bias_grad_cols(ulong outer, ulong channels, __global const float *dy, ulong dyo,
                             __global float *db, ulong dbo) {
    size_t c = get_global_id(0);
    if (c >= channels) return;
    float acc = 0.0f;
    for (ulong o = 0; o < outer; o++) acc += dy[dyo + o * channels + c];
    db[dbo + c] += acc;
}

__kernel void relu_forward(ulong n, __global const float *x, ulong xo, __global float *y, ulong yo) {
    size_t i = get_global_id(0);
    if (i < n) {
        float v = x[xo + i];
        y[yo + i] = v > 0.0f ? v : 0.0f;
    }
}

__kernel void relu_backward(ulong n, __global const float *y, ulong yo, __global const float *dy,
                            ulong dyo, __global float *dx, ulong dxo) {
    size_t i = get_global_id(0);
    if (i < n) dx[dxo + i] = y[yo + i] > 0.0f ? dy[dyo + i] : 0.0f;
}

/* One work-group per row: max and sum of exponentials reduced in local memory. A label
 * outside [0, cols) gives a NaN loss (it cannot be reported from the device). */
__kernel void softmax_xent_forward(ulong cols, __global const float *logits, ulong lo,
                                   __global const int *labels, ulong lbo, __global float *probs,
                                   ulong po, __global float *loss, ulong losso,
                                   __local float *tmp) {
    size_t r = get_group_id(0), lid = get_local_id(0), lsz = get_local_size(0);
    __global const float *x = logits + lo + r * cols;
    __global float *p = probs + po + r * cols;
    float m = -INFINITY;
    for (ulong j = lid; j < cols; j += lsz) m = fmax(m, x[j]);
    tmp[lid] = m;
    for (size_t s = lsz / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < s) tmp[lid] = fmax(tmp[lid], tmp[lid + s]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    m = tmp[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    float acc = 0.0f;
    for (ulong j = lid; j < cols; j += lsz) acc += exp(x[j] - m);
    tmp[lid] = acc;
    reduce_sum(tmp);
    float sum = tmp[0];
    for (ulong j = lid; j < cols; j += lsz) p[j] = exp(x[j] - m) / sum;
    if (lid == 0) {
        int label = labels[lbo + r];
        loss[losso + r] = (label < 0 || (ulong)label >= cols) ? NAN
                                                             : log(sum) - (x[label] - m);
    }
}

/* dlogits = scale * (probs - onehot(labels)); one work-item per element. */
__kernel void softmax_xent_backward(ulong total, ulong cols, __global const float *probs, ulong po,
                                    __global const int *labels, ulong lbo, float scale,
                                    __global float *dl, ulong dlo) {
    size_t i = get_global_id(0);
    if (i >= total) return;
    ulong r = i / cols, j = i - r * cols;
    int label = labels[lbo + r];
    float onehot = (long)label == (long)j ? 1.0f : 0.0f;
    /* a bad label poisons its row, as the forward loss does (host backend likewise) */
    dl[dlo + i] = (label < 0 || (ulong)label >= cols) ? NAN : scale * (probs[po + i] - onehot);
}

/* col[b][(c*KH + ki)*KW + kj][oy*OW + ox] = x[b][c][oy*SH + ki - PH][ox*SW + kj - PW] or 0;
 * one work-item per col element, so writes are coalesced. */
__kernel void im2col(ulong total, ulong C, ulong H, ulong W, ulong KH, ulong KW, ulong SH, ulong SW,
                     ulong PH, ulong PW, ulong OH, ulong OW, __global const float *x, ulong xo,
                     __global float *col, ulong co) {
    size_t i = get_global_id(0);
    if (i >= total) return;
    ulong plane = OH * OW, rows = C * KH * KW;
    ulong pos = i % plane, t = i / plane;
    ulong row = t % rows, b = t / rows;
    ulong c = row / (KH * KW), k = row % (KH * KW);
    ulong ki = k / KW, kj = k % KW;
    long iy = (long)((pos / OW) * SH + ki) - (long)PH;
    long ix = (long)((pos % OW) * SW + kj) - (long)PW;
    float v = 0.0f;
    if (iy >= 0 && iy < (long)H && ix >= 0 && ix < (long)W)
        v = x[xo + ((b * C + c) * H + (ulong)iy) * W + (ulong)ix];
    col[co + i] = v;
}

/* dx[b][c][y][x] += every col entry that im2col read from it: a gather over the kernel
 * offsets (ki, kj) whose window position lands on a whole output coordinate. */
__kernel void col2im(ulong total, ulong C, ulong H, ulong W, ulong KH, ulong KW, ulong SH, ulong SW,
                     ulong PH, ulong PW, ulong OH, ulong OW, __global const float *col, ulong co,
                     __global float *dx, ulong dxo) {
    size_t i = get_global_id(0);
    if (i >= total) return;
    ulong xx = i % W, yy = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
    ulong plane = OH * OW;
    __global const float *base = col + co + (b * C * KH * KW) * plane;
    float acc = 0.0f;
    for (ulong ki = 0; ki < KH; ki++) {
        long ty = (long)(yy + PH) - (long)ki;
        if (ty < 0 || ty % (long)SH) continue;
        ulong oy = (ulong)ty / SH;
        if (oy >= OH) continue;
        for (ulong kj = 0; kj < KW; kj++) {
            long tx = (long)(xx + PW) - (long)kj;
            if (tx < 0 || tx % (long)SW) continue;
            ulong ox = (ulong)tx / SW;
            if (ox >= OW) continue;
            acc += base[((c * KH + ki) * KW + kj) * plane + oy * OW + ox];
        }
    }
    dx[dxo + i] += acc;
}

/* y = max of each window, idx = h*W + w of the first maximum; one work-item per output. */
__kernel void maxpool_forward(ulong total, ulong H, ulong W, ulong size, ulong stride, ulong OH,
                              ulong OW, __global const float *x, ulong xo, __global float *y,
                              ulong yo, __global int *idx, ulong io) {
    size_t o = get_global_id(0);
    if (o >= total) return;
    ulong ox = o % OW, oy = (o / OW) % OH, p = o / (OW * OH);
    __global const float *in = x + xo + p * H * W;
    ulong y0 = oy * stride, x0 = ox * stride;
    ulong best_i = y0 * W + x0;
    float best = in[best_i];
    for (ulong dy = 0; dy < size; dy++)
        for (ulong dx = 0; dx < size; dx++) {
            ulong at = (y0 + dy) * W + x0 + dx;
            float v = in[at];
            if (v > best) {
                best = v;
                best_i = at;
            }
        }
    y[yo + o] = best;
    idx[io + o] = (int)best_i;
}

/* dx[p][h][w] = sum of dy over the windows that contain (h, w) and chose it: a gather over
 * the outputs whose window could have picked this input, so no atomics are needed. */
__kernel void maxpool_backward(ulong total, ulong H, ulong W, ulong size, ulong stride, ulong OH,
                               ulong OW, __global const float *dy, ulong dyo,
                               __global const int *idx, ulong io, __global float *dx, ulong dxo) {
    size_t i = get_global_id(0);
    if (i >= total) return;
    ulong xx = i % W, yy = (i / W) % H, p = i / (W * H);
    int self = (int)(yy * W + xx);
    ulong oy0 = yy >= size ? (yy - size) / stride + 1 : 0, oy1 = yy / stride;
    ulong ox0 = xx >= size ? (xx - size) / stride + 1 : 0, ox1 = xx / stride;
    if (oy1 >= OH) oy1 = OH - 1;
    if (ox1 >= OW) ox1 = OW - 1;
    ulong base = p * OH * OW;
    float acc = 0.0f;
    for (ulong oy = oy0; oy <= oy1; oy++)
        for (ulong ox = ox0; ox <= ox1; ox++) {
            ulong o = base + oy * OW + ox;
            if (idx[io + o] == self) acc += dy[dyo + o];
        }
    dx[dxo + i] = acc;
}

/* tsr_hash32 of backend.h (splitmix64), so masks match the host backend bit for bit. */
static uint tsr_hash32(ulong seed, ulong i) {
    ulong z = seed + 0x9E3779B97F4A7C15UL * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
    return (uint)((z ^ (z >> 31)) >> 32);
}

/* mask = keep ? scale : 0 with scale = 1/(1-p) computed by the host; y = x*mask. */
__kernel void dropout_forward(ulong n, float p, float scale, ulong seed, __global const float *x,
                              ulong xo, __global float *y, ulong yo, __global float *mask,
                              ulong mo) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    int keep = (float)(tsr_hash32(seed, i) >> 8) * (1.0f / 16777216.0f) >= p;
    float m = keep ? scale : 0.0f;
    mask[mo + i] = m;
    y[yo + i] = x[xo + i] * m;
}
