# SPDX-License-Identifier: GPL-2.0
#
# kmalloc43 -- see README.md.
#
#   make                 build kmalloc43.ko and samples/kmalloc43_client.ko
#   make run             ... and boot them in a QEMU guest
#   make check           host tests + in-guest KUnit on the test and the bench kernel,
#                        with a pass/fail verdict
#
# Without KDIR, modules are built against the project's own test kernel,
# fetched and built on first use into ~/.cache/kmalloc43/ (make kernel).
# With KDIR=/path/to/a/Rust-enabled/7.3/tree, against that tree, e.g.
#   make KDIR=~/linux LLVM=1
# The kernel build itself (Kbuild) is described in the file Kbuild.

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TOOLS := $(ROOT)/tools
OUT := $(ROOT)/out
CORE := $(ROOT)/rust/core
# What make host-check replays on the host (kmreplay): a small synthetic fixture (the damage
# tests use it), the first 20,000 rows of the committed kernel trace, and the whole trace with
# the kernel heap's setting (its metadata per MiB held against issue 9's 4 KB).
REPLAY_FIXTURE ?= $(CORE)/tests/data/kmtrace-fixture.csv
REPLAY_SLICE_OF ?= $(TOOLS)/kmtrace/traces/boot-busybox.csv.xz

# Which of the project's kernels (tools/configs/<KERNEL>.config): test or bench.
KERNEL ?= test

ifeq ($(origin KDIR),undefined)
OWN_KERNEL := 1
LLVM ?= -19
# Evaluated when used, i.e. after the kernel target has fetched the tree.
KDIR = $(shell $(TOOLS)/kernel.sh path $(KERNEL))
KERNEL_DEP := kernel
else
OWN_KERNEL :=
KERNEL_DEP :=
endif

# Each kernel's modules are built in a directory of their own, $(BUILD): out/build/<KERNEL>
# (out/build/kdir with KDIR=), a mirror of the module sources as symbolic links
# (tools/build-tree.sh), so that building for the other kernel (make check builds for both)
# does not rebuild everything. The builds with the bench or the replay module (BENCH=1,
# REPLAY=1) have their own too, out/build/<KERNEL>+bench and +replay, so that make check
# (which builds without them) leaves them as they are: make check and then bench-guest or
# replay-guest boot what make bench or make replay built. The scripts that boot the modules
# find them there (K43_BUILD; bench-guest and replay-guest take the +bench and +replay
# directory unless K43_BUILD= is given).
build_dir = $(OUT)/build/$(if $(OWN_KERNEL),$(KERNEL),kdir)$(1)
BUILD := $(call build_dir,$(if $(BENCH),+bench)$(if $(REPLAY),+replay))
export K43_BUILD := $(BUILD)

# One kbuild at a time per build directory: helpers sharing one would
# otherwise race on the same .o/.d files.
# On the project's own kernel the modules are compiled through clippy-driver
# (the kernel's CLIPPY=1) so that its lints, like -Dwarnings, fail the build;
# CLIPPY=0 turns it off, CLIPPY=1 turns it on for any KDIR.
ifeq ($(OWN_KERNEL),1)
CLIPPY ?= 1
endif
KBUILD = mkdir -p $(BUILD) && flock $(BUILD)/.kbuild.lock $(TOOLS)/build-tree.sh $(BUILD) && \
	flock $(BUILD)/.kbuild.lock $(MAKE) -C $(KDIR) M=$(BUILD) $(if $(LLVM),LLVM=$(LLVM)) \
	$(if $(filter 1,$(CLIPPY)),CLIPPY=1) \
	$(if $(NEGATIVE),NEGATIVE=$(NEGATIVE)) $(if $(BENCH),BENCH=$(BENCH)) $(if $(REPLAY),REPLAY=$(REPLAY)) $(if $(WERROR),WERROR=$(WERROR))

# With a negative control loaded, its suite is expected too.
export EXTRA_SUITES := $(sort $(EXTRA_SUITES) $(if $(NEGATIVE),kmalloc43_negative))
export GUEST_TIMEOUT
# Which of the project's kernels a guest boots (none with KDIR=): tools/check-guest.sh names it
# in its verdict and checks the fast path tools/expected-fast-path expects of it.
export K43_KERNEL := $(if $(OWN_KERNEL),$(KERNEL))

# The kernels make check boots, each with the modules built for it: the test kernel (lockdep,
# kmemleak; the C slot-lock helpers that lockdep sees) and the bench kernel (distribution-like,
# no debug options: the inline slot lock and page hint a distribution kernel runs).
# With KDIR=, that tree only.
CHECK_KERNELS ?= $(if $(OWN_KERNEL),test bench,$(KERNEL))

# The kernel-side Rust files rustfmt checks in host-check: every file but the crate roots, which
# mount bindgen output that exists only after a module build (rustfmt follows their mods).
RUSTFMT_FILES = $(wildcard $(ROOT)/rust/glue/*.rs $(ROOT)/rust/client/*.rs \
	$(ROOT)/samples/kmalloc43_client/*.rs $(ROOT)/tools/bench/kmalloc43_bench/*.rs)

# Host-side knobs.
NICE := nice
FUZZ_SECONDS ?= 30
MIRI_TEST_ARGS ?=

.PHONY: all modules kernel bench-kernel setup run check guest-check check-boots check-harness stress \
	host-check miri fuzz bench-host bench bench-guest bench-cost replay replay-guest trace clean \
	modules_install rust-analyzer help

all: modules

help:
	@sed -n '3,13p' $(ROOT)/Makefile | sed 's/^# \{0,1\}//'
	@echo 'Other targets: kernel bench-kernel setup guest-check check-boots check-harness host-check stress'
	@echo '               miri fuzz bench-host bench bench-cost clean modules_install rust-analyzer'
	@echo 'See README.md and Documentation/pipeline.rst.'

setup:
	@$(TOOLS)/setup-deps.sh

ifeq ($(OWN_KERNEL),1)
kernel: setup
	@$(TOOLS)/kernel.sh build $(KERNEL) >/dev/null

# make run KERNEL=bench boots the modules on it.
bench-kernel: setup
	@$(TOOLS)/kernel.sh build bench >/dev/null
else
kernel bench-kernel:
	@echo "KDIR=$(KDIR) given: not building a kernel"
endif

modules: $(KERNEL_DEP)
	@test -f "$(KDIR)/Module.symvers" || { echo "error: KDIR=$(KDIR) is not a built kernel tree" >&2; exit 1; }
	$(KBUILD) modules

modules_install rust-analyzer: $(KERNEL_DEP)
	$(KBUILD) $@

clean:
	@if [ -n "$(KDIR)" ] && [ -f "$(KDIR)/Makefile" ]; then $(KBUILD) clean; fi
	rm -rf $(OUT)

# --- guest -------------------------------------------------------------------

run: modules
	@$(TOOLS)/guest-test.sh $(KDIR) $(OUT)/run --live

# One boot of KERNEL, in out/check (test kernel), out/check-bench (bench kernel), or
# out/negative-<control>[-bench] with NEGATIVE.
guest-check: modules
	@$(TOOLS)/guest-test.sh $(KDIR) $(OUT)/$(if $(NEGATIVE),negative-$(NEGATIVE),check)$(if $(filter-out test,$(K43_KERNEL)),-$(K43_KERNEL))

# The guest part of make check: guest-check on each kernel of CHECK_KERNELS (modules rebuilt for
# each), all of them even after a failure; fails if any boot failed.
check-boots:
	@rc=0; for k in $(CHECK_KERNELS); do \
		echo "==> the $$k kernel: modules built for it, one boot"; \
		$(MAKE) --no-print-directory KERNEL=$$k guest-check || rc=1; \
	done; exit $$rc

# The output is also kept in out/check.log, from which the last line counts the tests run.
check:
	@start=$$(date +%s); mkdir -p $(OUT); \
	{ { $(MAKE) --no-print-directory setup && \
	    $(MAKE) --no-print-directory host-check && \
	    $(MAKE) --no-print-directory check-boots; echo $$? > $(OUT)/check.rc; } 2>&1; } \
	  | tee $(OUT)/check.log; rc=$$(cat $(OUT)/check.rc); \
	secs=$$(( $$(date +%s) - start )); \
	if [ $$rc = 0 ]; then echo "make check: PASS in $${secs}s"; \
	else echo "make check: FAIL after $${secs}s (reason and log path above)"; fi; \
	$(TOOLS)/check-summary.sh $(OUT)/check.log $$rc; \
	exit $$rc

# SMP stress of the magazine layer (test kernel: lockdep, 2 vCPUs): the
# kmalloc43_magazines KUnit stress case with STRESS_OPS random operations
# (make check runs it with the module's default, 200,000), then the usual
# verdict: every suite ok, no splat, pages taken == given back at unload.
# The stress case runs for minutes of emulated time on a busy host: KUnit's
# per-case timeout (300 s by default) is raised to an hour.
STRESS_OPS ?= 10000000
stress: modules
	@GUEST_CMDLINE="$(GUEST_CMDLINE) kmalloc43.stress_ops=$(STRESS_OPS) kunit.timeout=3600" \
		GUEST_TIMEOUT=$${GUEST_TIMEOUT:-3600} \
		$(TOOLS)/guest-test.sh $(KDIR) $(OUT)/stress

# Every negative control must make the check fail, for its own reason, on the test kernel and,
# where the bench kernel can show it, on the bench kernel.
check-harness: modules
	@$(TOOLS)/check-harness.sh

# --- host-side Rust ------------------------------------------------------------

host-check:
	@echo '==> host tests (rust/core): fmt, clippy, no_std build, cargo test --release'
	cd $(CORE) && cargo fmt --check
	cd $(CORE) && $(NICE) cargo clippy --quiet --all-targets -- -D warnings
	cd $(CORE) && $(NICE) cargo build --quiet --no-default-features
	cd $(CORE) && $(NICE) cargo test --quiet --release
	@echo '==> host tests (tools/kmstat): report and --json from saved debugfs files'
	$(TOOLS)/tests/kmstat-test.sh
	@echo '==> rustfmt --check of the module, client and tool sources (the core is checked above)'
	rustfmt --edition 2021 --check $(RUSTFMT_FILES)
	@echo '==> build directories: make check and make bench/replay kbuild apart (tools/tests/build-dirs-test.sh)'
	$(TOOLS)/tests/build-dirs-test.sh
	@echo '==> documentation examples are the compiled samples (tools/tests/doc-examples.py)'
	$(TOOLS)/tests/doc-examples.py
	@echo '==> host tests (tools/kmtrace): ftrace -> CSV, stats, binary trace'
	/usr/bin/python3 $(TOOLS)/tests/kmtrace-test.py
	@echo '==> host replay (kmreplay): a fixture and a slice of the committed trace in both size-class modes, the whole trace's metadata with the kernel's setting, damaged input rejected'
	cd $(CORE) && $(NICE) cargo build --quiet --release --bin kmreplay
	$(TOOLS)/tests/kmreplay-test.sh $(CORE)/target/release/kmreplay $(REPLAY_FIXTURE) $(REPLAY_SLICE_OF)

# Tests can opt out with #[cfg_attr(miri, ignore)]; MIRI_TEST_ARGS selects
# targets or filters, e.g. make miri MIRI_TEST_ARGS='--test vmem_unit'.
miri:
	@rustup +nightly component list --installed 2>/dev/null | grep -q '^miri' || \
		rustup +nightly component add miri rust-src
	cd $(CORE) && $(NICE) cargo +nightly miri test $(MIRI_TEST_ARGS)

fuzz:
	@if [ ! -d $(CORE)/fuzz ]; then echo 'no rust/core/fuzz: nothing to fuzz'; exit 0; fi; \
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz || exit 1; \
	cd $(CORE) && for t in $$(cargo +nightly fuzz list); do \
		echo "==> fuzz $$t for $(FUZZ_SECONDS)s"; \
		$(NICE) cargo +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

bench-host:
	cd $(CORE) && $(NICE) cargo bench

# In-guest benchmarks (tools/bench/): kmalloc43 against kmalloc and genalloc in
# one boot of the bench kernel on multi-threaded TCG; the table and the CSV go to
# out/bench/, the SVG plots to out/bench/ and Documentation/. Not part of check.
bench:
	@$(TOOLS)/setup-deps.sh plot
	@$(MAKE) --no-print-directory KERNEL=bench BENCH=1 modules
	@$(MAKE) --no-print-directory KERNEL=bench bench-guest

bench-guest: export K43_BUILD := $(if $(BENCH),$(BUILD),$(call build_dir,+bench))
bench-guest:
	@$(TOOLS)/bench-guest.sh $(KDIR) $(OUT)/bench

# Instructions per malloc+free pair in the malloc core, layer by layer (callgrind on the host;
# Documentation/performance.rst).
bench-cost:
	@$(TOOLS)/setup-deps.sh cost
	$(NICE) /usr/bin/python3 $(TOOLS)/bench/pair_cost.py

# Trace replay (tools/kmtrace/): the trace through SLUB and kmalloc43 (both class modes) in one
# boot of the bench kernel; table, series and SVG plot in out/replay/.  TRACE defaults to the
# committed trace.  make trace records a new one into out/trace/.
TRACE ?= $(TOOLS)/kmtrace/traces/boot-busybox.csv.xz
replay:
	@$(TOOLS)/setup-deps.sh plot || echo 'make replay: no matplotlib, no plot (the table is still made)'
	@$(MAKE) --no-print-directory KERNEL=bench REPLAY=1 modules
	@$(MAKE) --no-print-directory KERNEL=bench replay-guest

replay-guest: export K43_BUILD := $(if $(REPLAY),$(BUILD),$(call build_dir,+replay))
replay-guest:
	@$(TOOLS)/kmtrace/replay.sh $(KDIR) $(abspath $(TRACE)) $(OUT)/replay

trace: bench-kernel
	@$(TOOLS)/kmtrace/record.sh $$($(TOOLS)/kernel.sh path bench) $(OUT)/trace
