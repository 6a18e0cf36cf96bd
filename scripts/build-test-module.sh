#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds a small helper module of the test suites or benchmarks (tests/detectors: planted bugs;
# bench/pingpong: the bare connector round trip) for one kernel flavour, in a copy under out/.
# Prints the .ko path.
# Usage: build-test-module.sh perf|debug DIR
. "$(dirname "$0")/lib.sh"

flavour=${1:?usage: $0 perf|debug DIR}
dir=${2:?usage}
kdir=$("$TOP/scripts/build-kernel.sh" "$flavour")
mapfile -t srcs < <("$TOP/scripts/fetch-sources.sh")
name=$(sed -n 's/^obj-m := \(.*\)\.o$/\1/p' "$TOP/$dir/Kbuild")
[ -n "$name" ] || die "$dir/Kbuild names no module (obj-m := NAME.o)"

work="$TOP/out/$(basename "$dir")-$flavour"
mkdir -p "$work"
cp -a "$TOP/$dir"/. "$work/"
if [ "$(cat "$work/.kdir" 2>/dev/null)" != "$kdir" ]; then
	make -s -C "$kdir" M="$work" LLVM="$LLVM_SUFFIX" clean >/dev/null 2>&1 || true
	echo "$kdir" >"$work/.kdir"
fi
make -s -C "$kdir" M="$work" LLVM="$LLVM_SUFFIX" RUST_LIB_SRC="${srcs[1]}" modules >&2
echo "$work/$name.ko"
