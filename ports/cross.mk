# Shared part of the cross ports: included by ports/<triplet>.mk after it sets
#   TRIPLET     GNU triplet of Debian's cross toolchain (gcc-$(TRIPLET))
#   DEB_ARCH    Debian architecture of the target packages
#   DEB_SUITE   Debian suite the target packages come from
#   QEMU        qemu-user binary that runs the tests
#   OWN_LIBC    1: the sysroot carries the suite's libc too (suite newer than the toolchain)
#   PORT_CFLAGS extra compiler flags (optional)
# See ports/README.md.
OWN_LIBC ?= 0
PORT_CROSS := 1
SYSROOT := $(CURDIR)/build/$(TRIPLET)/sysroot
SYSROOT_LIBDIRS := $(SYSROOT)/usr/lib/$(TRIPLET) $(SYSROOT)/lib/$(TRIPLET) \
                   $(SYSROOT)/usr/lib/$(TRIPLET)/openblas-pthread

CC := $(TRIPLET)-gcc
AR := $(TRIPLET)-ar
# Debian's .pc files name /usr paths: the sysroot variables turn them into sysroot paths.
# (make 4.3 does not pass exported variables to $(shell), hence env on the command.)
PKG_CONFIG := env PKG_CONFIG_SYSROOT_DIR=$(SYSROOT) \
    PKG_CONFIG_LIBDIR=$(SYSROOT)/usr/lib/$(TRIPLET)/pkgconfig:$(SYSROOT)/usr/share/pkgconfig pkg-config
# Headers without a .pc file (zlib, CL/, hwloc, cmocka) live in the sysroot's /usr/include;
# -isystem keeps -Werror off third-party headers, as for the native build.
CPPFLAGS += -isystem $(SYSROOT)/usr/include/$(TRIPLET) -isystem $(SYSROOT)/usr/include
LDFLAGS += $(addprefix -L,$(SYSROOT_LIBDIRS)) $(addprefix -Wl$(comma)-rpath-link$(comma),$(SYSROOT_LIBDIRS))
comma := ,
# Compiler flags of a port go into CPPFLAGS: the Makefile sets its CFLAGS default (-O2 -g) only
# when CFLAGS is still unset after this file.
CPPFLAGS += $(PORT_CFLAGS)
ifeq ($(OWN_LIBC),1)
CPPFLAGS += --sysroot=$(SYSROOT)
LDFLAGS += --sysroot=$(SYSROOT)
QEMU_LD_PREFIX := $(SYSROOT)
else
QEMU_LD_PREFIX := /usr/$(TRIPLET)
endif

# Tests run under qemu-user; MPI tests are linked but not run (MPICH hangs in MPI_Init under
# qemu-user). No OpenCL ICD exists for the target: an empty vendor folder makes that explicit.
# One OpenBLAS thread: spinning worker threads cost a lot under emulation (-13% on test_train).
export TSR_TEST_WRAPPER ?= $(QEMU) -L $(QEMU_LD_PREFIX) \
    -E LD_LIBRARY_PATH=$(subst $(space),:,$(strip $(SYSROOT_LIBDIRS))) \
    -E OCL_ICD_VENDORS=$(CURDIR)/build/$(TRIPLET)/no-icd -E OPENBLAS_NUM_THREADS=1
export TSR_TEST_NO_MPI ?= 1
# The libFuzzer targets (build/fuzz) are native programs, covered by the native `make test`.
export TSR_TEST_NO_FUZZ ?= 1
# Emulation is 5-10x slower than native: tests may read this to shrink long runs.
export TSR_TEST_EMULATED ?= qemu
empty :=
space := $(empty) $(empty)

# port-deps: cross toolchain, qemu-user-static and the sysroot. The stamp below is an included
# makefile, so make fetches the sysroot before it reads the pkg-config flags (it restarts after
# remaking an included makefile); `make PORT=... port-deps` runs it alone.
PORT_STAMP := build/$(TRIPLET)/port-deps.mk
ifeq ($(filter clean help,$(MAKECMDGOALS)),)
-include $(PORT_STAMP)
endif
$(PORT_STAMP): ports/$(PORT).mk ports/cross.mk tools/sysroot.sh
	@sh tools/sysroot.sh $(TRIPLET) $(DEB_ARCH) $(DEB_SUITE) $(SYSROOT) $(OWN_LIBC)
	@mkdir -p build/$(TRIPLET)/no-icd
	@echo "# sysroot for $(TRIPLET) ready (tools/sysroot.sh)" > $@

.PHONY: port-deps
port-deps: $(PORT_STAMP)
