# 32-bit Arm, hard float (Debian armhf), packages from the same suite as the build machine.
TRIPLET := arm-linux-gnueabihf
DEB_ARCH := armhf
DEB_SUITE := bookworm
QEMU := qemu-arm-static
# 64-bit file offsets on this 32-bit target: checkpoints may pass 2 GiB, and readdir() without
# them fails with EOVERFLOW on file systems with 64-bit directory cookies (and under qemu-user).
PORT_CFLAGS := -D_FILE_OFFSET_BITS=64
include ports/cross.mk
