# 32-bit Arm, hard float (Debian armhf), packages from the same suite as the build machine.
TRIPLET := arm-linux-gnueabihf
DEB_ARCH := armhf
DEB_SUITE := bookworm
QEMU := qemu-arm-static
include ports/cross.mk
