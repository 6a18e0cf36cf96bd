# SPDX-License-Identifier: GPL-2.0
#
# Builds the module against a Rust-enabled kernel tree, like any out-of-tree Rust module,
# and drives the project's scripts (test kernel, VM tests, demo). See README.md.

KDIR ?= /lib/modules/$(shell uname -r)/build

# The LLVM toolchain, as the kernel takes it (Documentation/kbuild/llvm.rst): LLVM=1 for clang,
# ld.lld, ... on PATH, LLVM=-19 for suffixed ones (Debian's clang-19), LLVM=/dir/ for a prefix.
# A module must be built with the toolchain its tree was built with, so unless LLVM is given,
# it comes from the tree: a clang-built one (CONFIG_CC_IS_CLANG) gets LLVM=-<major> when
# clang-<major> of its CONFIG_CLANG_VERSION is on PATH, else LLVM=1; a GCC-built one none.
ifeq ($(origin LLVM),undefined)
dmlu_auto_conf := $(wildcard $(KDIR)/include/config/auto.conf)
ifneq ($(dmlu_auto_conf),)
ifneq ($(shell grep -sx 'CONFIG_CC_IS_CLANG=y' $(dmlu_auto_conf)),)
dmlu_clang_major := $(shell sed -n 's/^CONFIG_CLANG_VERSION=\([0-9]*\)[0-9]\{4\}$$/\1/p' $(dmlu_auto_conf))
LLVM := $(if $(and $(dmlu_clang_major),$(shell command -v clang-$(dmlu_clang_major))),-$(dmlu_clang_major),1)
endif
endif
endif
ifneq ($(LLVM),)
export LLVM
# DKMS appends CC=clang LD=ld.lld to its make command for a clang-built kernel; with LLVM=-19
# or LLVM=/dir/ those are not the tree's tools (or do not exist), so LLVM's names replace them.
dmlu_llvm_tool = $(filter %/,$(LLVM))$(1)$(filter -%,$(LLVM))
ifeq ($(origin CC)$(CC),command lineclang)
dmlu_tools += CC=$(call dmlu_llvm_tool,clang)
endif
ifeq ($(origin LD)$(LD),command lineld.lld)
dmlu_tools += LD=$(call dmlu_llvm_tool,ld.lld)
endif
endif
ifneq ($(RUST_LIB_SRC),)
export RUST_LIB_SRC
endif
# bindgen, unless given: the one the tree generated the kernel crate's bindings with, as its
# .cmd file records it, if it is still there; else the kernel's default (bindgen on PATH).
ifeq ($(origin BINDGEN),undefined)
dmlu_tree_bindgen := $(firstword $(shell sed -n '1s/^savedcmd_[^ ]* := //p' \
	$(KDIR)/rust/bindings/.bindings_generated.rs.cmd 2>/dev/null))
ifneq ($(and $(dmlu_tree_bindgen),$(wildcard $(dmlu_tree_bindgen))),)
BINDGEN := $(dmlu_tree_bindgen)
# On the command line: the kernel's Makefile sets BINDGEN over the environment's.
dmlu_tools += BINDGEN=$(BINDGEN)
endif
endif
ifneq ($(BINDGEN),)
export BINDGEN
endif
# make check LONG=1: the reliability suite's long counts.
ifneq ($(LONG),)
export LONG
endif

kmake = $(MAKE) -C $(KDIR) M=$(CURDIR) $(dmlu_tools)

# make install: the server and its systemd unit. PREFIX=/usr for a distribution's layout.
PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
# systemd reads units from /usr/lib/systemd/system and /usr/local/lib/systemd/system alike.
UNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
CARGO ?= cargo
DMULOGD := target/release/dm-ulogd
# The module's source for DKMS, and its version (dkms.conf has it).
DKMS_VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\(.*\)"$$/\1/p' $(CURDIR)/dkms.conf)
DKMS_SRCDIR ?= /usr/src/dm-log-userspace-$(DKMS_VERSION)
# The module's directories: the same list as scripts/build-module.sh's (scripts/dkms-test.sh
# builds from what this copies, so a missing one fails the lint stage).
MODULE_DIRS := log sys transfer uapi
DKMS_FILES = Makefile Kbuild dkms.conf scripts/dkms-build.sh $(wildcard *.rs) $(shell find $(MODULE_DIRS) -type f \
	\( -name '*.rs' -o -name '*.h' \) ! -name bindings_generated.rs)

.PHONY: all module modules modules_install clean clippy rust-analyzer rustfmt rustfmtcheck \
	check-kdir check-bindgen server install uninstall dkms-source \
	kernel kernel-perf kernel-debug stock packages demo demo-cluster check check-host check-lint check-cluster check-cluster-guests check-vm bench

all module modules: check-kdir check-bindgen
	$(kmake) modules

# Into $(INSTALL_MOD_PATH)/lib/modules/<release>/$(INSTALL_MOD_DIR) (the kernel's default
# for external modules: updates), then depmod, as the kernel's own modules_install does.
modules_install: check-kdir
	$(kmake) modules_install

# The server, built as the user. make install brings it up to date when cargo is on PATH (not
# usually under sudo: then it installs what `make server` built).
server:
	$(CARGO) build --release --locked $(CARGO_FLAGS) -p dm-ulogd --bin dm-ulogd

# The unit's ExecStart= names /usr/sbin/dm-ulogd; the installed one names $(SBINDIR).
install:
	@if command -v $(CARGO) >/dev/null; then \
		echo "$(CARGO) build --release --locked $(CARGO_FLAGS) -p dm-ulogd --bin dm-ulogd"; \
		$(CARGO) build --release --locked $(CARGO_FLAGS) -p dm-ulogd --bin dm-ulogd; \
	elif [ ! -x $(DMULOGD) ]; then \
		echo "error: no $(DMULOGD) and no $(CARGO) to build it: run 'make server' first"; exit 1; fi
	install -D -m 0755 $(DMULOGD) $(DESTDIR)$(SBINDIR)/dm-ulogd
	install -D -m 0644 server/dm-ulogd.8 $(DESTDIR)$(MANDIR)/man8/dm-ulogd.8
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|^ExecStart=/usr/sbin/dm-ulogd|ExecStart=$(SBINDIR)/dm-ulogd|' server/dm-ulogd.service \
		>$(DESTDIR)$(UNITDIR)/dm-ulogd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/dm-ulogd.service
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/dm-ulogd $(DESTDIR)$(UNITDIR)/dm-ulogd.service $(DESTDIR)$(MANDIR)/man8/dm-ulogd.8
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

# The module's sources where DKMS looks for them; then: dkms install dm-log-userspace/$(DKMS_VERSION)
dkms-source:
	install -d -m 0755 $(DESTDIR)$(DKMS_SRCDIR)
	cp --parents $(DKMS_FILES) $(DESTDIR)$(DKMS_SRCDIR)/

clippy: check-kdir check-bindgen
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

check-bindgen:
	@command -v $(or $(BINDGEN),bindgen) >/dev/null || { \
		echo "error: no bindgen ($(or $(BINDGEN),bindgen)): the module generates bindings with the kernel's"; \
		echo "       bindgen. Install bindgen-cli (at least the version the kernel wants, see the tree's"; \
		echo "       scripts/min-tool-version.sh) and put it on PATH, or pass BINDGEN=/path/to/bindgen."; \
		exit 1; }

# The project's test kernels (cached outside the repository).
kernel: kernel-perf kernel-debug
kernel-perf:
	scripts/build-kernel.sh perf
kernel-debug:
	scripts/build-kernel.sh debug

# The module for Debian's stock kernel (trixie-backports), built as a Debian machine's DKMS
# builds it, with Debian's rustc, in a Debian 13 root made with debootstrap (cached); needs root.
stock:
	scripts/build-stock.sh

# The Debian packages (dm-log-userspace-dkms, dm-ulogd), built in that root and lintian-checked;
# needs root. They land in ~/.cache/dm-log-userspace-rs/stock/debs.
packages:
	scripts/build-packages.sh

# The main job: a mirror with a userspace log in a VM.
demo:
	scripts/demo.sh

# A mirror served by two nodes (two QEMU guests with corosync), the leader killed; needs root.
demo-cluster:
	scripts/demo-cluster.sh

# Every test: host unit tests, lints (rustfmt, clippy, the unit, DKMS), then the VM suites on
# the debug and perf kernels against the Rust module and against upstream's C module.
check:
	scripts/check.sh

check-host:
	scripts/check.sh host

check-cluster:
	scripts/check.sh cluster

# Two QEMU guests (debug kernel, Rust module, corosync) sharing a mirror's disks.
check-cluster-guests:
	scripts/check.sh cluster-guests

check-vm:
	scripts/check.sh vm

check-lint:
	scripts/check.sh lint

# Benchmarks (not tests): every configuration in one boot of the perf kernel; writes
# bench/results/latest.{json,md} (see bench/README.md).
bench:
	scripts/bench.sh
