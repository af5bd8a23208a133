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

/* y = float(16-bit(x)), y may be x: the GEMM inputs of a 16-bit mode (backend_precision.c).
 * prec 1: bfloat16, rounded on the bits as lib/core/precision.h (ushort arithmetic: no
 * device needs a bf16 type); 2: IEEE half through vstore_half_rte/vload_half (no cl_khr_fp16
 * needed). */
__kernel void round16(ulong n, int prec, __global const float *x, ulong xo, __global float *y,
                      ulong yo) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    float v = x[xo + i];
    if (prec == 1) {
        uint u = as_uint(v);
        uint h = (u & 0x7FFFFFFFu) > 0x7F800000u ? (u >> 16) | 0x40u
                                                  : (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
        y[yo + i] = as_float(h << 16);
    } else {
        ushort h;
        vstore_half_rte(v, 0, (__private half *)&h);
        y[yo + i] = vload_half(0, (__private const half *)&h);
    }
}
