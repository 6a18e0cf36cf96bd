#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds dm_log_userspace.ko for one test kernel flavour, in a copy of the sources under out/,
# so that the perf and debug builds never share stale objects (Kbuild does not rebuild an
# out-of-tree module when the kernel tree changes). Prints the .ko path.
# Usage: build-module.sh perf|debug [extra make args, e.g. CLIPPY=1]
# DMLU_KRUSTFLAGS adds rustc flags for an experiment (e.g. -Coverflow-checks=n, measured once
# for bench/README.md), built in a directory of its own.
. "$(dirname "$0")/lib.sh"

flavour=${1:?usage: $0 perf|debug}
shift
kdir=$("$TOP/scripts/build-kernel.sh" "$flavour")
mapfile -t srcs < <("$TOP/scripts/fetch-sources.sh")
bindgen=$("$TOP/scripts/host-deps.sh" | tail -n 1)

work="$TOP/out/module-$flavour"
extra=()
if [ -n "${DMLU_KRUSTFLAGS:-}" ]; then
	work="$work-custom"
	extra=(KRUSTFLAGS="$DMLU_KRUSTFLAGS")
fi
# DMLU_PLANTED=NAME builds the module with a bug planted for a checker's self-test
# (`cfg(dmlu_planted_NAME)` in the sources; tests/vm/suite-detect-powercut.sh) and prints
# the path of a copy named dm_log_userspace_planted_NAME.ko. Never the module users get.
if [ -n "${DMLU_PLANTED:-}" ]; then
	work="$work-planted-$DMLU_PLANTED"
	extra=(KRUSTFLAGS="--cfg dmlu_planted_$DMLU_PLANTED")
fi
mkdir -p "$work"
# Only the module's own sources; cp -a keeps timestamps so unchanged files are not rebuilt.
files=(Kbuild $(cd "$TOP" && echo *.rs) log sys transfer uapi)
(cd "$TOP" && cp -a --parents $(find "${files[@]}" -type f \( -name '*.rs' -o -name '*.h' -o -name Kbuild \) ! -name 'bindings_generated.rs') "$work/")
if [ "$(cat "$work/.kdir" 2>/dev/null)" != "$kdir" ]; then
	make -s -C "$kdir" M="$work" LLVM="$LLVM_SUFFIX" clean >/dev/null 2>&1 || true
	echo "$kdir" >"$work/.kdir"
fi
make -s -C "$kdir" M="$work" LLVM="$LLVM_SUFFIX" RUST_LIB_SRC="${srcs[1]}" BINDGEN="$bindgen" "${extra[@]}" "$@" modules >&2
if [ -n "${DMLU_PLANTED:-}" ]; then
	cp "$work/dm_log_userspace.ko" "$work/dm_log_userspace_planted_$DMLU_PLANTED.ko"
	echo "$work/dm_log_userspace_planted_$DMLU_PLANTED.ko"
else
	echo "$work/dm_log_userspace.ko"
fi
