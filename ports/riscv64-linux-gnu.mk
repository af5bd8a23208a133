# 64-bit RISC-V (Debian riscv64). bookworm has no riscv64 archive (it became an official
# architecture in trixie), so the target packages come from trixie, with trixie's libc in the
# sysroot: bookworm's cross libc (2.36) is older than what those libraries were built against.
TRIPLET := riscv64-linux-gnu
DEB_ARCH := riscv64
DEB_SUITE := trixie
QEMU := qemu-riscv64-static
OWN_LIBC := 1
include ports/cross.mk
