# 64-bit Arm (Debian arm64), packages from the same suite as the build machine.
TRIPLET := aarch64-linux-gnu
DEB_ARCH := arm64
DEB_SUITE := bookworm
QEMU := qemu-aarch64-static
# Debian's aarch64-linux-gnu-gcc 12.2.0 crashes (ICE in vect_transform_reduction) vectorizing
#   double m = 0; for (i = 0; i < 36; i++) m = fmax(m, fabs(float_array[i]));
# (tests/unit/test_train.c has one); the native and other cross compilers do not.
PORT_CFLAGS := -fno-tree-loop-vectorize
include ports/cross.mk
