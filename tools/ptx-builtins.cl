/* The OpenCL C built-ins backends/opencl/kernels/mma.cl calls, written with NVVM intrinsics the
 * way libclc does, so that tools/check-ptx.sh can hand ptxas one complete module (ptxas has no
 * linker for unresolved functions). Used only by that script; NVIDIA's driver brings its own. */
size_t __attribute__((overloadable)) get_local_id(uint d) {
    return d == 0 ? __nvvm_read_ptx_sreg_tid_x() : d == 1 ? __nvvm_read_ptx_sreg_tid_y()
           : d == 2 ? __nvvm_read_ptx_sreg_tid_z() : 0;
}
size_t __attribute__((overloadable)) get_group_id(uint d) {
    return d == 0 ? __nvvm_read_ptx_sreg_ctaid_x() : d == 1 ? __nvvm_read_ptx_sreg_ctaid_y()
           : d == 2 ? __nvvm_read_ptx_sreg_ctaid_z() : 0;
}
void __attribute__((overloadable)) barrier(cl_mem_fence_flags flags) {
    (void)flags;
    __asm__ volatile("bar.sync 0;" ::: "memory"); /* orders shared memory too */
}
void __attribute__((overloadable)) vstore_half_rte(float x, size_t i, __local half *p) {
    ((__local ushort *)p)[i] = __nvvm_f2h_rn(x);
}
