/* float <-> IEEE half through vstore_half/vload_half, which OpenCL C 1.2 provides even
 * without cl_khr_fp16 (NVIDIA). Offsets count halves for h. */
__kernel void f32_to_f16(ulong n, __global const float *x, ulong xo, __global half *h, ulong ho) {
    size_t i = get_global_id(0);
    if (i < n) vstore_half_rte(x[xo + i], ho + i, h);
}

__kernel void f16_to_f32(ulong n, __global const half *h, ulong ho, __global float *x, ulong xo) {
    size_t i = get_global_id(0);
    if (i < n) x[xo + i] = vload_half(ho + i, h);
}
