# 64-bit Arm (Debian arm64), packages from the same suite as the build machine.
TRIPLET := aarch64-linux-gnu
DEB_ARCH := arm64
DEB_SUITE := bookworm
QEMU := qemu-aarch64-static
include ports/cross.mk
