/* BLAS-1 kernels and reductions (OpenCL C 1.2). Offsets count elements; one work-item per
 * element unless stated. Contraction stays off so results track the host backend's C. */
#pragma OPENCL FP_CONTRACT OFF

__kernel void axpy(ulong n, float alpha, __global const float *x, ulong xo, __global float *y,
                   ulong yo) {
    size_t i = get_global_id(0);
    if (i < n) y[yo + i] += alpha * x[xo + i];
}

__kernel void scale(ulong n, float alpha, __global float *x, ulong xo) {
    size_t i = get_global_id(0);
    if (i < n) x[xo + i] *= alpha;
}

__kernel void mul(ulong n, __global const float *a, ulong ao, __global const float *b, ulong bo,
                  __global float *y, ulong yo) {
    size_t i = get_global_id(0);
    if (i < n) y[yo + i] = a[ao + i] * b[bo + i];
}

/* Tree reduction of tmp[0..lsz) (lsz a power of two); the result lands in tmp[0]. */
static void reduce_local(__local float *tmp) {
    size_t lid = get_local_id(0);
    for (size_t s = get_local_size(0) / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < s) tmp[lid] += tmp[lid + s];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
}

/* Pass 1 of sum: each group strides over x (coalesced) and writes one partial sum. */
__kernel void sum_partial(ulong n, __global const float *x, ulong xo, __global float *partial,
                          __local float *tmp) {
    size_t lid = get_local_id(0);
    float acc = 0.0f;
    for (size_t i = get_global_id(0); i < n; i += get_global_size(0)) acc += x[xo + i];
    tmp[lid] = acc;
    reduce_local(tmp);
    if (lid == 0) partial[get_group_id(0)] = tmp[0];
}

/* Pass 2: one group adds the partial sums into out[oo]. */
__kernel void sum_final(ulong count, __global const float *partial, __global float *out, ulong oo,
                        __local float *tmp) {
    size_t lid = get_local_id(0);
    float acc = 0.0f;
    for (size_t i = lid; i < count; i += get_local_size(0)) acc += partial[i];
    tmp[lid] = acc;
    reduce_local(tmp);
    if (lid == 0) out[oo] = tmp[0];
}

/* The first NaN/Inf of x[xo, xo + n), n < 2^32 - 1, into *first (which starts at 0xffffffff,
 * none): each item walks its stride upwards, so its first hit is its smallest index, and
 * atomic_min keeps the smallest of all. Exponent bits rather than isfinite: right under any
 * math flags. */
__kernel void first_nonfinite(ulong n, __global const float *x, ulong xo, __global uint *first) {
    for (size_t i = get_global_id(0); i < n; i += get_global_size(0))
        if ((as_uint(x[xo + i]) & 0x7f800000u) == 0x7f800000u) {
            atomic_min(first, (uint)i);
            return;
        }
}

/* C = beta*C for an m x n block with leading dimension ldc (GEMM with k = 0); beta = 0
 * overwrites, as BLAS does. 2-D range: (column, row). */
__kernel void scale_matrix(ulong m, ulong n, float beta, __global float *c, ulong co, ulong ldc) {
    size_t j = get_global_id(0), i = get_global_id(1);
    if (i < m && j < n) {
        size_t at = co + i * ldc + j;
        c[at] = beta == 0.0f ? 0.0f : beta * c[at];
    }
}
