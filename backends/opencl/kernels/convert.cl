/* float <-> 16-bit. prec 1: bfloat16, rounded on the bits as lib/core/precision.h (ushort
 * arithmetic: no device needs a bf16 type); 2: IEEE half through vstore_half_rte/vload_half,
 * which OpenCL C 1.2 provides even without cl_khr_fp16 (NVIDIA). Offsets count halves for h. */
ushort bf16_bits(float v) {
    uint u = as_uint(v);
    return (u & 0x7FFFFFFFu) > 0x7F800000u ? (ushort)((u >> 16) | 0x40u)
                                           : (ushort)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

__kernel void narrow16(ulong n, int prec, __global const float *x, ulong xo, __global ushort *h,
                       ulong ho) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    if (prec == 1) h[ho + i] = bf16_bits(x[xo + i]);
    else vstore_half_rte(x[xo + i], ho + i, (__global half *)h);
}

__kernel void widen16(ulong n, int prec, __global const ushort *h, ulong ho, __global float *x,
                      ulong xo) {
    size_t i = get_global_id(0);
    if (i >= n) return;
    x[xo + i] = prec == 1 ? as_float((uint)h[ho + i] << 16) : vload_half(ho + i, (__global const half *)h);
}

float round_one(float v, int prec) {
    if (prec == 1) return as_float((uint)bf16_bits(v) << 16);
    ushort h;
    vstore_half_rte(v, 0, (__private half *)&h);
    return vload_half(0, (__private const half *)&h);
}

/* y = float(16-bit(x)), y may be x: the GEMM inputs of a 16-bit mode (backend_precision.c). */
__kernel void round16(ulong n, int prec, __global const float *x, ulong xo, __global float *y,
                      ulong yo) {
    size_t i = get_global_id(0);
    if (i < n) y[yo + i] = round_one(x[xo + i], prec);
}

/* The same on a block: dimension 0 the columns, 1 the rows. */
__kernel void round16_block(ulong cols, int prec, __global const float *x, ulong xo, ulong ldx,
                            __global float *y, ulong yo, ulong ldy) {
    size_t c = get_global_id(0), r = get_global_id(1);
    if (c < cols) y[yo + r * ldy + c] = round_one(x[xo + r * ldx + c], prec);
}
