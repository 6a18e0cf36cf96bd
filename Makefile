# SPDX-License-Identifier: GPL-2.0
#
# Builds the module against a Rust-enabled kernel tree, like any out-of-tree Rust module,
# and drives the project's scripts (test kernel, VM tests, demo). See README.md.

KDIR ?= /lib/modules/$(shell uname -r)/build
LLVM ?= -19
export LLVM
ifneq ($(RUST_LIB_SRC),)
export RUST_LIB_SRC
endif
ifneq ($(BINDGEN),)
export BINDGEN
endif
# make check LONG=1: the reliability suite's long counts.
ifneq ($(LONG),)
export LONG
endif

kmake = $(MAKE) -C $(KDIR) M=$(CURDIR)

.PHONY: all module modules clean clippy rust-analyzer rustfmt rustfmtcheck check-kdir \
	kernel kernel-perf kernel-debug demo check check-host check-lint check-vm bench

all module modules: check-kdir
	$(kmake) modules

clippy: check-kdir
	$(kmake) CLIPPY=1 modules

rust-analyzer: check-kdir
	$(kmake) rust-analyzer

clean:
	@if [ -f "$(KDIR)/Makefile" ]; then $(kmake) clean; else \
		rm -f *.o *.ko *.mod *.mod.c .*.cmd Module.symvers modules.order sys/bindings_generated.rs; fi

rustfmt:
	rustfmt --edition 2021 dm_log_userspace.rs && cargo fmt --all

rustfmtcheck:
	rustfmt --edition 2021 --check dm_log_userspace.rs && cargo fmt --all --check

check-kdir:
	@if [ ! -f "$(KDIR)/Makefile" ] || [ ! -f "$(KDIR)/rust/libkernel.rmeta" ]; then \
		echo "error: KDIR=$(KDIR) is not a built Rust-enabled kernel tree (no rust/libkernel.rmeta)."; \
		echo "       Build the project's test kernel with 'make kernel' and pass KDIR=\$$(scripts/build-kernel.sh perf),"; \
		echo "       or point KDIR at your own kernel build directory built with CONFIG_RUST=y."; \
		exit 1; fi

# The project's test kernels (cached outside the repository).
kernel: kernel-perf kernel-debug
kernel-perf:
	scripts/build-kernel.sh perf
kernel-debug:
	scripts/build-kernel.sh debug

# The main job: a mirror with a userspace log in a VM.
demo:
	scripts/demo.sh

# Every test: host unit tests, then the VM suite on the debug kernel against the Rust module
# and against the upstream C module.
check:
	scripts/check.sh

check-host:
	scripts/check.sh host

check-vm:
	scripts/check.sh vm

check-lint:
	scripts/check.sh lint

# Benchmarks (not tests): every configuration in one boot of the perf kernel; writes
# bench/results/latest.{json,md,svg} and the README's performance section.
bench:
	scripts/bench.sh
