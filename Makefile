# tessera — one entry point. `make help` lists the targets.
#   make [lib|samples|test|bench|demo|deps|install|uninstall|clean] [PORT=<triplet>]
#   switches: WITH_MPI=0 WITH_OPENCL=0 WITH_HWLOC=0 SANITIZE=address,undefined V=1
.DEFAULT_GOAL := all
.SUFFIXES:

CC ?= cc
AR ?= ar
PKG_CONFIG ?= pkg-config
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=

WITH_MPI ?= 1
WITH_OPENCL ?= 1
WITH_HWLOC ?= 1
SANITIZE ?=
PORT ?=

ifneq ($(PORT),)
include ports/$(PORT).mk
endif

# oneDNN (libdnnl) runs the host's bf16 GEMMs where it is installed (make deps installs it);
# the cross ports build without it.
WITH_DNNL ?= $(if $(PORT_CROSS),0,$(if $(wildcard /usr/include/oneapi/dnnl/dnnl.h),1,0))

# Each configuration builds out of tree in its own folder, so they never mix objects.
variant := $(PORT)$(if $(filter 0,$(WITH_MPI)),-nompi)$(if $(filter 0,$(WITH_OPENCL)),-noocl)$(if $(filter 0,$(WITH_HWLOC)),-nohwloc)$(if $(SANITIZE),-san)
BUILD ?= build$(if $(variant),/$(patsubst -%,%,$(variant)))

ifeq ($(V),1)
Q :=
else
Q := @
endif

CFLAGS ?= -O2 -g
CFLAGS += -std=c11 -Wall -Wextra -Werror -fPIC
CPPFLAGS += -D_GNU_SOURCE -Iinclude -I. -I$(BUILD)/gen
LDLIBS ?=
ifneq ($(SANITIZE),)
CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

# --- dependencies through pkg-config (ports point PKG_CONFIG at their sysroot) ---
pc_pkgs := openblas libcjson zlib nettle
ifeq ($(WITH_OPENCL),1)
pc_pkgs += OpenCL clblast
endif
ifeq ($(WITH_HWLOC),1)
pc_pkgs += hwloc
endif
ifeq ($(WITH_MPI),1)
pc_pkgs += mpich
endif
PC_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(pc_pkgs) 2>/dev/null)
PC_LIBS := $(shell $(PKG_CONFIG) --libs $(pc_pkgs) 2>/dev/null)
CPPFLAGS += $(PC_CFLAGS) -DTSR_WITH_MPI=$(WITH_MPI) -DTSR_WITH_OPENCL=$(WITH_OPENCL) -DTSR_WITH_HWLOC=$(WITH_HWLOC) \
            -DTSR_WITH_DNNL=$(WITH_DNNL)
DNNL_LIBS := $(if $(filter 1,$(WITH_DNNL)),-ldnnl -lgomp)
LIBS := $(PC_LIBS) $(DNNL_LIBS) -lm -lpthread $(LDLIBS)

# --- sources: every .c of a module folder; *_mpi.c / *_opencl.c / *_hwloc.c follow the switches ---
lib_src := $(wildcard lib/*.c lib/*/*.c backends/*.c backends/host/*.c topology/*.c)
ifeq ($(WITH_OPENCL),1)
lib_src += $(wildcard backends/opencl/*.c)
endif
lib_src := $(filter-out $(if $(filter 0,$(WITH_MPI)),%_mpi.c) $(if $(filter 0,$(WITH_OPENCL)),%_opencl.c) \
                        $(if $(filter 0,$(WITH_HWLOC)),%_hwloc.c),$(lib_src))
lib_obj := $(lib_src:%.c=$(BUILD)/obj/%.o)
LIB := $(BUILD)/libtessera.a

kernel_src := $(sort $(wildcard backends/opencl/kernels/*.cl))
KERNELS_H := $(BUILD)/gen/tsr_kernels.h

sample_src := $(wildcard samples/tsr-*.c)
sample_src := $(filter-out $(if $(filter 0,$(WITH_MPI)),%_mpi.c),$(sample_src))
SAMPLES := $(sample_src:samples/%.c=$(BUILD)/bin/%)

unit_src := $(wildcard tests/unit/test_*.c)
unit_src := $(filter-out $(if $(filter 0,$(WITH_MPI)),%_mpi.c) $(if $(filter 0,$(WITH_OPENCL)),%_opencl.c) \
                         $(if $(filter 0,$(WITH_HWLOC)),%_hwloc.c),$(unit_src))
UNIT_TESTS := $(unit_src:tests/unit/%.c=$(BUILD)/tests/%)
ifeq ($(WITH_MPI),1)
MPI_TESTS := $(patsubst tests/mpi/%.c,$(BUILD)/tests/mpi/%,$(wildcard tests/mpi/test_*.c))
endif
test_support_src := $(wildcard tests/support/*.c)
test_support_obj := $(test_support_src:%.c=$(BUILD)/obj/%.o)

.PHONY: all lib samples tests test unit-tests deps demo bench install uninstall clean help fuzz \
        embed-test size

all: lib samples

lib: $(LIB)

$(LIB): $(lib_obj)
	@echo "  AR      $@"
	$(Q)rm -f $@ && $(AR) rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# OpenCL kernel sources are embedded in the library as C strings.
$(KERNELS_H): $(kernel_src) tools/embed-kernels.sh
	@mkdir -p $(dir $@)
	@echo "  EMBED   $@"
	$(Q)sh tools/embed-kernels.sh $(kernel_src) > $@.tmp && mv $@.tmp $@
$(filter backends/opencl/%,$(lib_obj)): $(KERNELS_H)
$(BUILD)/obj/backends/opencl/%.o: $(KERNELS_H)
# explicit object list: a pattern rule without a recipe adds no prerequisite
$(filter $(BUILD)/obj/backends/opencl/%,$(lib_obj)): $(KERNELS_H)

samples: $(SAMPLES)
$(BUILD)/bin/%: samples/%.c $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP $< -o $@ $(LDFLAGS) $(LIB) $(LIBS)

tests: $(UNIT_TESTS) $(MPI_TESTS)
$(BUILD)/tests/%: tests/unit/%.c $(test_support_obj) $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CPPFLAGS) -Itests $(CFLAGS) -MMD -MP $< -o $@ $(LDFLAGS) $(test_support_obj) $(LIB) $(LIBS) -lcmocka
$(BUILD)/tests/mpi/%: tests/mpi/%.c $(test_support_obj) $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CPPFLAGS) -Itests $(CFLAGS) -MMD -MP $< -o $@ $(LDFLAGS) $(test_support_obj) $(LIB) $(LIBS)

# Installs missing Debian packages (no-op when all are present).
deps:
	@sh tools/deps.sh

# TSR_TEST_REQUIRE=1: a skip for a missing prerequisite (Fashion-MNIST, mpiexec, python3, an
# OpenCL device) fails; `make TSR_TEST_REQUIRE=0 test` on a partial machine, 0 by default under
# a cross port's qemu (no OpenCL ICD there).
test: deps
	@$(MAKE) --no-print-directory all tests $(FUZZ_TEST_TARGETS)
	@BUILD=$(BUILD) TSR_TEST_REQUIRE=$${TSR_TEST_REQUIRE:-$(if $(PORT_CROSS),0,1)} sh tests/run-tests.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh tools/demo.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) sh bench/run.sh

# --- install (zstd's lib/Makefile is the model) ---
# tessera.pc: Requires.private names the .pc files of the dependencies of this configuration,
# so `pkg-config --static --libs tessera` gives a complete link line for libtessera.a.
# Paths under PREFIX are written as ${prefix}/..., and prefix as ${destdir}PREFIX with destdir
# empty: a DESTDIR install is usable in place with --define-variable=destdir=<DESTDIR>.
pc_dir = $(if $(filter $(PREFIX)/%,$(1)),$${prefix}$(patsubst $(PREFIX)%,%,$(1)),$${destdir}$(1))
PC_LIBS_PRIVATE := $(DNNL_LIBS) -lm -lpthread $(if $(SANITIZE),-fsanitize=$(SANITIZE))
$(BUILD)/tessera.pc: tessera.pc.in Makefile $(wildcard ports/$(PORT).mk)
	@mkdir -p $(dir $@)
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(call pc_dir,$(LIBDIR))|' \
	    -e 's|@INCLUDEDIR@|$(call pc_dir,$(INCLUDEDIR))|' \
	    -e 's|@VERSION@|$(shell sed -n 's/.*TSR_VERSION_STRING "\(.*\)"/\1/p' include/tessera/version.h)|' \
	    -e 's|@REQUIRES@|$(pc_pkgs)|' -e 's|@LIBS_PRIVATE@|$(PC_LIBS_PRIVATE)|' $< > $@

install: $(LIB) $(BUILD)/tessera.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR)/tessera $(DESTDIR)$(PKGCONFIGDIR)
	install -m 644 $(LIB) $(DESTDIR)$(LIBDIR)/libtessera.a
	install -m 644 include/tessera.h $(DESTDIR)$(INCLUDEDIR)/tessera.h
	install -m 644 include/tessera/*.h $(DESTDIR)$(INCLUDEDIR)/tessera/
	install -m 644 $(BUILD)/tessera.pc $(DESTDIR)$(PKGCONFIGDIR)/tessera.pc

# The configuration of this build folder, for scripts that call make again with it
# (tests/embed-test.sh). Rewritten on every build of lib.
.PHONY: $(BUILD)/config.sh
lib: $(BUILD)/config.sh
$(BUILD)/config.sh:
	@mkdir -p $(dir $@)
	@printf "%s\n" "TSR_MAKE_ARGS='PORT=$(PORT) WITH_MPI=$(WITH_MPI) WITH_OPENCL=$(WITH_OPENCL) WITH_HWLOC=$(WITH_HWLOC) SANITIZE=$(SANITIZE) BUILD=$(BUILD)'" \
	    "TSR_PORT='$(PORT)'" "TSR_CROSS='$(PORT_CROSS)'" "TSR_CC='$(CC)'" > $@

# A port's objects and programs are rebuilt when its flags change.
ifneq ($(PORT),)
$(lib_obj) $(test_support_obj) $(SAMPLES) $(UNIT_TESTS) $(MPI_TESTS): \
    $(wildcard ports/$(PORT).mk $(if $(PORT_CROSS),ports/cross.mk))
endif

# Builds samples/embed out of tree against a DESTDIR install of this configuration, and runs it.
embed-test: lib
	@BUILD=$(BUILD) MAKE="$(MAKE)" sh tests/embed-test.sh

# Size of the library of this configuration: archive bytes and the text/data/bss of its objects.
SIZE ?= $(patsubst %gcc,%size,$(filter %gcc,$(CC)))
size: $(LIB)
	@set -- $$($(or $(SIZE),size) -t $(LIB) | tail -n 1); \
	echo "libtessera.a $(or $(PORT),native)$(if $(filter 0,$(WITH_MPI)), WITH_MPI=0)$(if $(filter 0,$(WITH_OPENCL)), WITH_OPENCL=0)$(if $(filter 0,$(WITH_HWLOC)), WITH_HWLOC=0)$(if $(SANITIZE), SANITIZE=$(SANITIZE)):" \
	     "$$(wc -c < $(LIB)) bytes; code+data $$(($$1 + $$2 + $$3)) bytes (text $$1, data $$2, bss $$3)"

# --- fuzzing (reliability): libFuzzer targets tests/fuzz/fuzz_*.c, built with clang against the
# library without MPI/OpenCL/hwloc, compiled with coverage + ASan/UBSan in its own folder.
# `make fuzz` runs each target FUZZ_SECONDS (default 120) on a corpus kept in build/fuzz/corpus
# plus the seeds; `make test` runs each a few seconds (tests/run-tests.sh, fuzz block).
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 120
FUZZ_BUILD := build/fuzz
FUZZ_LIB := $(FUZZ_BUILD)/lib/libtessera.a
FUZZERS := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_CPPFLAGS := -D_GNU_SOURCE -Iinclude -I. -DTSR_WITH_MPI=0 -DTSR_WITH_OPENCL=0 -DTSR_WITH_HWLOC=0 \
                 $(shell $(PKG_CONFIG) --cflags libcjson 2>/dev/null)
FUZZ_LIBS := $(shell $(PKG_CONFIG) --libs openblas libcjson zlib 2>/dev/null) -lm -lpthread
# make test builds the fuzz targets too, natively and only where clang is installed
FUZZ_TEST_TARGETS := $(if $(PORT),,$(if $(shell command -v $(FUZZ_CC) 2>/dev/null),fuzz-targets))
.PHONY: fuzz-targets valgrind FORCE
FORCE:
fuzz-targets: $(FUZZERS)
ifneq ($(BUILD),$(FUZZ_BUILD)/lib)
$(FUZZ_LIB): FORCE
	@$(MAKE) --no-print-directory CC=$(FUZZ_CC) WITH_MPI=0 WITH_OPENCL=0 WITH_HWLOC=0 WITH_DNNL=0 PORT= \
	    SANITIZE=fuzzer-no-link,address,undefined BUILD=$(FUZZ_BUILD)/lib lib
endif
$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_LIB)
	@echo "  FUZZ    $@"
	$(Q)$(FUZZ_CC) -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    $(FUZZ_CPPFLAGS) $< -o $@ $(FUZZ_LIB) $(FUZZ_LIBS)
fuzz: fuzz-targets
	@mkdir -p $(FUZZ_BUILD)/artifacts; for f in $(FUZZERS); do n=$${f##*/fuzz_}; \
	    mkdir -p $(FUZZ_BUILD)/corpus/$$n; log=$(FUZZ_BUILD)/$$n.log; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -print_final_stats=1 \
	        -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$n- $(FUZZ_BUILD)/corpus/$$n \
	        tests/fuzz/corpus/$$n > $$log 2>&1; rc=$$?; \
	    echo "$$n: $$(sed -n 's/^stat::number_of_executed_units: *//p' $$log) execs," \
	         "$$(ls $(FUZZ_BUILD)/corpus/$$n | wc -l) corpus files, exit $$rc"; \
	    if [ $$rc != 0 ]; then tail -n 40 $$log; exit 1; fi; done

# --- fault tests (reliability): tests/fault/*.c are driver programs for tests/fault/*.sh, which
# tests/run-tests.sh runs (fault block).
FAULT_BINS := $(patsubst tests/fault/%.c,$(BUILD)/tests/fault/%,$(wildcard tests/fault/*.c))
tests: $(FAULT_BINS)
$(BUILD)/tests/fault/%: tests/fault/%.c $(LIB)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP $< -o $@ $(LDFLAGS) $(LIB) $(LIBS)
-include $(FAULT_BINS:=.d)

# --- run manifest (reliability): the code version records `git describe` at build time; the
# manifest object is rebuilt when it changes.
GIT_DESCRIBE := $(or $(shell git describe --always --dirty 2>/dev/null),unknown)
$(BUILD)/obj/lib/manifest.o: CPPFLAGS += -DTSR_GIT_DESCRIBE='"$(GIT_DESCRIBE)"'
$(BUILD)/obj/lib/manifest.o: $(BUILD)/gen/git-describe
$(BUILD)/gen/git-describe: FORCE
	@mkdir -p $(dir $@)
	@[ "$$(cat $@ 2>/dev/null)" = "$(GIT_DESCRIBE)" ] || echo "$(GIT_DESCRIBE)" > $@

# --- valgrind memcheck over the unit tests (suppressions for third-party libraries only);
# TSR_TEST_EMULATED shrinks the training test's data as under qemu ---
VALGRIND ?= valgrind --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite \
            --suppressions=tests/valgrind.supp --gen-suppressions=all
valgrind: all tests
	@BUILD=$(BUILD) TSR_TEST_NO_MPI=1 TSR_TEST_NO_FUZZ=1 TSR_TEST_NO_FAULT=1 TSR_TEST_EMULATED=1 \
	    TSR_TEST_WRAPPER="$(VALGRIND)" sh tests/run-tests.sh

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libtessera.a $(DESTDIR)$(INCLUDEDIR)/tessera.h $(DESTDIR)$(PKGCONFIGDIR)/tessera.pc
	rm -rf $(DESTDIR)$(INCLUDEDIR)/tessera

clean:
	rm -rf build

help:
	@sed -n '1,4p' Makefile

-include $(lib_obj:.o=.d) $(test_support_obj:.o=.d) $(SAMPLES:=.d) $(UNIT_TESTS:=.d) $(MPI_TESTS:=.d)
