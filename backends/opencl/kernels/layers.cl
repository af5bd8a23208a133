/* Layer kernels (OpenCL C 1.2): bias, ReLU, softmax cross-entropy, im2col/col2im (gathers, no
 * atomics), max pooling, dropout. Offsets count elements of the operand's type. */
#pragma OPENCL FP_CONTRACT OFF

/* y[o][c][i] += bias[c]; one work-item per element of y. */
__kernel void bias_add(ulong total, ulong channels, ulong inner, __global const float *bias,
                       ulong bo, __global float *y, ulong yo) {
    size_t i = get_global_id(0);
    if (i >= total) return;
    /* 32-bit division when it can be (64-bit division is emulated on GPUs) */
    ulong c = total <= 0xFFFFFFFFUL ? ((uint)i / (uint)inner) % (uint)channels
                                    : (i / inner) % channels;
    y[yo + i] += bias[bo + c];
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

/* The index-heavy kernels below run on a 2-D range: dimension 0 walks a plane (contiguous
 * memory, coalesced), dimension 1 the planes, so per-item index arithmetic is one division
 * plus work that is uniform along dimension 0. Each comes in two builds: T = uint when every
 * index fits in 32 bits (64-bit division is emulated on GPUs and slow on CPUs) and T = ulong
 * (`_wide`) for larger tensors. Arguments are ulong in both. */

/* col[(c*KH + ki)*KW + kj][b][oy*OW + ox] = x[b][c][oy*SH + ki - PH][ox*SW + kj - PW] or 0.
 * Range: (OH*OW, C*KH*KW*batch); dimension 1 is the (row, image) pair r = row*batch + b. */
#define DEFINE_IM2COL(name, T, ST)                                                            \
__kernel void name(ulong C_, ulong H_, ulong W_, ulong KH_, ulong KW_, ulong SH_, ulong SW_,    \
                   ulong PH_, ulong PW_, ulong OH_, ulong OW_, ulong rows_total,                 \
                   __global const float *x, ulong xo, __global float *col, ulong co) {          \
    size_t pos_ = get_global_id(0), r_ = get_global_id(1);                                      \
    T plane = (T)(OH_ * OW_);                                                                   \
    if (pos_ >= plane || r_ >= rows_total) return;                                              \
    T pos = (T)pos_, r = (T)r_, C = (T)C_, H = (T)H_, W = (T)W_, KW = (T)KW_;                   \
    T kk = (T)KH_ * KW, batch = (T)rows_total / (C * kk);                                       \
    T row = r / batch, b = r - row * batch;                                                     \
    T c = row / kk, k = row - c * kk;                                                           \
    T ki = k / KW, kj = k - ki * KW;                                                            \
    T OW = (T)OW_, oy = pos / OW, ox = pos - oy * OW;                                           \
    ST iy = (ST)(oy * (T)SH_ + ki) - (ST)PH_;                                                   \
    ST ix = (ST)(ox * (T)SW_ + kj) - (ST)PW_;                                                   \
    float v = 0.0f;                                                                             \
    if (iy >= 0 && iy < (ST)H && ix >= 0 && ix < (ST)W)                                         \
        v = x[xo + ((b * C + c) * H + (T)iy) * W + (T)ix];                                      \
    col[co + (ulong)r * plane + pos] = v;                                                       \
}
DEFINE_IM2COL(im2col, uint, int)
DEFINE_IM2COL(im2col_wide, ulong, long)

/* dx[b][c][y][x] += every col entry that im2col read from it: a gather over the kernel
 * offsets ki = (y+PH) mod SH, +SH, ... (and likewise kj) whose output coordinate is whole,
 * so no atomics and no division inside the loops. Range: (H*W, batch*C). */
#define DEFINE_COL2IM(name, T)                                                                \
__kernel void name(ulong C_, ulong H_, ulong W_, ulong KH_, ulong KW_, ulong SH_, ulong SW_,    \
                   ulong PH_, ulong PW_, ulong OH_, ulong OW_, ulong planes,                    \
                   __global const float *col, ulong co, __global float *dx, ulong dxo) {        \
    size_t i_ = get_global_id(0), r_ = get_global_id(1);                                        \
    if (i_ >= H_ * W_ || r_ >= planes) return;                                                  \
    T i = (T)i_, r = (T)r_, C = (T)C_, W = (T)W_, KH = (T)KH_, KW = (T)KW_;                     \
    T SH = (T)SH_, SW = (T)SW_, OH = (T)OH_, OW = (T)OW_, plane = OH * OW;                      \
    T yy = i / W, xx = i - yy * W;                                                              \
    T b = r / C, c = r - b * C;                                                                 \
    T batch = (T)planes / C;                    /* kernel offset k of (b, c): row c*KH*KW + k */ \
    T ld = batch * plane;                                                                       \
    __global const float *base = col + co + (ulong)(c * KH * KW * ld + b * plane);              \
    T ty = yy + (T)PH_, tx = xx + (T)PW_;                                                       \
    T ki0 = ty % SH, oy0 = ty / SH, kj0 = tx % SW, ox0 = tx / SW;                               \
    float acc = 0.0f;                                                                           \
    T oy = oy0;                                                                                 \
    for (T ki = ki0; ki < KH && ki <= ty; ki += SH, oy--) {                                     \
        if (oy >= OH) continue;                                                                 \
        T ox = ox0;                                                                             \
        for (T kj = kj0; kj < KW && kj <= tx; kj += SW, ox--) {                                 \
            if (ox >= OW) continue;                                                             \
            acc += base[(ki * KW + kj) * ld + oy * OW + ox];                                    \
        }                                                                                       \
    }                                                                                           \
    dx[dxo + (ulong)r * H_ * W_ + i] += acc;                                                    \
}
DEFINE_COL2IM(col2im, uint)
DEFINE_COL2IM(col2im_wide, ulong)

/* y[j][i][k] = x[i][j][k]: a rows x cols matrix of blocks of `inner` floats transposed.
 * Range: (inner, cols*rows); dimension 1 is the output block u = j*rows + i. */
#define DEFINE_TRANSPOSE(name, T)                                                             \
__kernel void name(ulong rows_, ulong cols_, ulong inner_, __global const float *x, ulong xo,   \
                   __global float *y, ulong yo) {                                               \
    size_t k_ = get_global_id(0), u_ = get_global_id(1);                                        \
    if (k_ >= inner_ || u_ >= rows_ * cols_) return;                                            \
    T k = (T)k_, u = (T)u_, rows = (T)rows_, inner = (T)inner_;                                 \
    T j = u / rows, i = u - j * rows;                                                           \
    y[yo + u * inner + k] = x[xo + (i * (T)cols_ + j) * inner + k];                             \
}
DEFINE_TRANSPOSE(transpose, uint)
DEFINE_TRANSPOSE(transpose_wide, ulong)

/* The same plus bias[i] on block (i, j), then max(., 0) when relu (bias_add's and
 * relu_forward's expressions). */
#define DEFINE_TRANSPOSE_BIAS(name, T)                                                        \
__kernel void name(ulong rows_, ulong cols_, ulong inner_, __global const float *x, ulong xo,   \
                   __global const float *bias, ulong bo, int relu, __global float *y, ulong yo) { \
    size_t k_ = get_global_id(0), u_ = get_global_id(1);                                        \
    if (k_ >= inner_ || u_ >= rows_ * cols_) return;                                            \
    T k = (T)k_, u = (T)u_, rows = (T)rows_, inner = (T)inner_;                                 \
    T j = u / rows, i = u - j * rows;                                                           \
    float v = x[xo + (i * (T)cols_ + j) * inner + k] + bias[bo + i];                            \
    y[yo + u * inner + k] = relu ? (v > 0.0f ? v : 0.0f) : v;                                   \
}
DEFINE_TRANSPOSE_BIAS(transpose_bias, uint)
DEFINE_TRANSPOSE_BIAS(transpose_bias_wide, ulong)

/* y = max of each window, idx = h*W + w of the first maximum. Range: (OH*OW, planes). */
#define DEFINE_MAXPOOL_FORWARD(name, T)                                                       \
__kernel void name(ulong planes, ulong H_, ulong W_, ulong size_, ulong stride_, ulong OH_,     \
                   ulong OW_, __global const float *x, ulong xo, __global float *y, ulong yo,   \
                   __global int *idx, ulong io) {                                               \
    size_t o_ = get_global_id(0), p = get_global_id(1);                                         \
    if (o_ >= OH_ * OW_ || p >= planes) return;                                                 \
    T o = (T)o_, W = (T)W_, size = (T)size_, stride = (T)stride_, OW = (T)OW_;                  \
    T oy = o / OW, ox = o - oy * OW;                                                            \
    __global const float *in = x + xo + (ulong)p * H_ * W_;                                     \
    T y0 = oy * stride, x0 = ox * stride;                                                       \
    T best_i = y0 * W + x0;                                                                     \
    float best = in[best_i];                                                                    \
    for (T dy = 0; dy < size; dy++)                                                             \
        for (T dx = 0; dx < size; dx++) {                                                       \
            T at = (y0 + dy) * W + x0 + dx;                                                     \
            float v = in[at];                                                                   \
            if (v > best) {                                                                     \
                best = v;                                                                       \
                best_i = at;                                                                    \
            }                                                                                   \
        }                                                                                       \
    ulong out = (ulong)p * OH_ * OW_ + o;                                                       \
    y[yo + out] = best;                                                                         \
    idx[io + out] = (int)best_i;                                                                \
}
DEFINE_MAXPOOL_FORWARD(maxpool_forward, uint)
DEFINE_MAXPOOL_FORWARD(maxpool_forward_wide, ulong)

/* dx[p][h][w] = sum of dy over the windows that contain (h, w) and chose it: a gather over
 * the outputs whose window could have picked this input, so no atomics are needed.
 * Range: (H*W, planes). */
#define DEFINE_MAXPOOL_BACKWARD(name, T)                                                      \
__kernel void name(ulong planes, ulong H_, ulong W_, ulong size_, ulong stride_, ulong OH_,     \
                   ulong OW_, __global const float *dy, ulong dyo, __global const int *idx,     \
                   ulong io, __global float *dx, ulong dxo) {                                   \
    size_t i_ = get_global_id(0), p = get_global_id(1);                                         \
    if (i_ >= H_ * W_ || p >= planes) return;                                                   \
    T i = (T)i_, W = (T)W_, size = (T)size_, stride = (T)stride_;                               \
    T OH = (T)OH_, OW = (T)OW_;                                                                 \
    T yy = i / W, xx = i - yy * W;                                                              \
    int self = (int)i;                                                                          \
    T oy0 = yy >= size ? (yy - size) / stride + 1 : 0, oy1 = yy / stride;                       \
    T ox0 = xx >= size ? (xx - size) / stride + 1 : 0, ox1 = xx / stride;                       \
    if (oy1 >= OH) oy1 = OH - 1;                                                                \
    if (ox1 >= OW) ox1 = OW - 1;                                                                \
    ulong base = (ulong)p * OH_ * OW_;                                                          \
    float acc = 0.0f;                                                                           \
    for (T oy = oy0; oy <= oy1; oy++)                                                           \
        for (T ox = ox0; ox <= ox1; ox++) {                                                     \
            ulong o = base + oy * OW + ox;                                                      \
            if (idx[io + o] == self) acc += dy[dyo + o];                                        \
        }                                                                                       \
    dx[dxo + (ulong)p * H_ * W_ + i] = acc;                                                     \
}
DEFINE_MAXPOOL_BACKWARD(maxpool_backward, uint)
DEFINE_MAXPOOL_BACKWARD(maxpool_backward_wide, ulong)

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

/* y[i][c] = table[ids[i]][c]; an id outside [0, vocab) gives NaN. 2-D: c, i. */
__kernel void embed_forward(ulong dim, ulong vocab, __global const int *ids, ulong io,
                            __global const float *table, ulong to, __global float *y, ulong yo) {
    size_t c = get_global_id(0), i = get_global_id(1);
    if (c >= dim) return;
    int id = ids[io + i];
    y[yo + i * dim + c] = id < 0 || (ulong)id >= vocab ? NAN : table[to + (ulong)id * dim + c];
}

/* dtable[ids[i]][c] += dy[i][c] for i in order, one work-item per column c. */
__kernel void embed_backward(ulong count, ulong dim, ulong vocab, __global const int *ids, ulong io,
                             __global const float *dy, ulong dyo, __global float *dt, ulong dto) {
    size_t c = get_global_id(0);
    if (c >= dim) return;
    for (ulong i = 0; i < count; i++) {
        int id = ids[io + i];
        if (id < 0 || (ulong)id >= vocab) continue;
        dt[dto + (ulong)id * dim + c] += dy[dyo + i * dim + c];
    }
}
