#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# scripts/dkms-build.sh (DKMS's build step) must refuse, with what to install, a build that
# cannot give a loadable module: headers of a kernel without Rust, and, for a distribution's
# headers (no Rust metadata), a rustc other than the kernel's, a missing kernel source, or a
# source of another version than the headers. Fake header directories and a fake rustc; no
# kernel is built. Prints one KTAP line per case; exits non-zero if any case was not refused
# as it should be.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$here/../../scripts/dkms-build.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
n=0

# headers DIR CONFIG-LINES...: a fake header directory with that .config.
headers() {
	local dir=$1
	shift
	mkdir -p "$dir"
	: >"$dir/Makefile"
	: >"$dir/Module.symvers"
	printf '%s\n' "$@" >"$dir/.config"
}
# A rustc that prints the given version string.
mkdir -p "$tmp/bin"
printf '#!/bin/sh\necho "rustc 1.98.1 (e408947bf 2026-11-01) (built from a source tarball)"\n' >"$tmp/bin/rustc"
chmod +x "$tmp/bin/rustc"

# refused NAME EXPECTED-TEXT KDIR: the build fails and says EXPECTED-TEXT.
refused() {
	local name=$1 want=$2 kdir=$3 out rc=0
	n=$((n + 1))
	out=$(PATH="$tmp/bin:$PATH" DMLU_TREE_CACHE="$tmp/cache" sh "$build" 7.3.4+deb13-amd64 "$kdir" 2>&1) || rc=$?
	if [ "$rc" -ne 0 ] && grep -qF -- "$want" <<<"$out"; then
		echo "ok $n $name"
	else
		echo "# exit $rc, output:"
		sed 's/^/#   /' <<<"$out"
		echo "not ok $n $name"
		failed=1
	fi
}

echo "KTAP version 1"
echo "1..4"
headers "$tmp/norust" "CONFIG_DM_MIRROR=m"
refused dkms_refuses_kernel_without_rust "built without Rust support" "$tmp/norust"
headers "$tmp/debian" "CONFIG_RUST=y" "CONFIG_DM_MIRROR=m" \
	'CONFIG_RUSTC_VERSION_TEXT="rustc 1.85.1 (4eb161250 2025-03-15) (built from a source tarball)"' \
	'CONFIG_CC_VERSION_TEXT="gcc (Debian 14.2.0-19) 14.2.0"'
refused dkms_refuses_other_rustc "apt install rustc rust-src bindgen" "$tmp/debian"
# The kernel's rustc now, but no kernel source where Debian puts it (unless this machine
# has one: then the case cannot be made here).
printf '#!/bin/sh\necho "rustc 1.85.1 (4eb161250 2025-03-15) (built from a source tarball)"\n' >"$tmp/bin/rustc"
printf '#!/bin/sh\necho bindgen 0.71.1\n' >"$tmp/bin/bindgen"
chmod +x "$tmp/bin/bindgen"
if [ -f /usr/src/linux-source-7.3.tar.xz ]; then
	echo "ok 3 dkms_refuses_missing_source # SKIP this machine has /usr/src/linux-source-7.3.tar.xz"
	n=3
else
	refused dkms_refuses_missing_source "apt install linux-source-7.3" "$tmp/debian"
fi
# A build directory with the Rust metadata is built as it is: no compiler check (the fake
# rustc would fail it); make then fails on the fake tree, not the check.
mkdir -p "$tmp/debian/rust" && : >"$tmp/debian/rust/libkernel.rmeta"
n=$((n + 1))
out=$(PATH="$tmp/bin:$PATH" DMLU_TREE_CACHE="$tmp/cache" sh "$build" 7.3.4+deb13-amd64 "$tmp/debian" 2>&1)
if grep -qE "was built with|preparing the Rust metadata" <<<"$out"; then
	echo "not ok $n dkms_builds_own_tree_as_it_is"
	failed=1
else
	echo "ok $n dkms_builds_own_tree_as_it_is"
fi
exit "$failed"
