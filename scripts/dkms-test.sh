#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds the module with DKMS against a test kernel, the way a user's `dkms install` would,
# but with every DKMS tree in a temporary directory (nothing under /usr/src, /var/lib/dkms or
# /lib/modules is touched): `make dkms-source` stages the sources, then dkms add, build and
# install (into a private install tree), and depmod there. Takes ~15 s.
# Usage: dkms-test.sh [perf|debug]      Prints the built .ko's modinfo; exits non-zero on failure.
. "$(dirname "$0")/lib.sh"

flavour=${1:-perf}
kdir=$("$TOP/scripts/build-kernel.sh" "$flavour")
"$TOP/scripts/host-deps.sh" >/dev/null
command -v dkms >/dev/null || die "dkms not found (apt-get install dkms, or run scripts/host-deps.sh)"
krel=$(cat "$kdir/include/config/kernel.release")
arch=$(uname -m)
version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
name=dm-log-userspace

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trees=(--sourcetree "$tmp/src" --dkmstree "$tmp/dkms" --installtree "$tmp/root/lib/modules")
mkdir -p "$tmp/dkms" "$tmp/root/lib/modules/$krel"
make -s -C "$TOP" dkms-source DKMS_SRCDIR="$tmp/src/$name-$version"

log=$tmp/dkms.log
run() {
	if ! "$@" >>"$log" 2>&1; then
		cat "$log" >&2
		find "$tmp/dkms" -name make.log -exec tail -n 30 {} + >&2 2>/dev/null || true
		die "failed: $*"
	fi
}
# As at a kernel upgrade: no BINDGEN, LLVM or CC given; the Makefile takes them from the tree
# (and replaces the CC=clang LD=ld.lld that dkms adds for a clang-built kernel).
unset BINDGEN LLVM CC LD
run dkms add -m "$name" -v "$version" "${trees[@]}"
run dkms build -m "$name" -v "$version" -k "$krel/$arch" --kernelsourcedir "$kdir" "${trees[@]}"
ko=$tmp/dkms/$name/$version/$krel/$arch/module/dm_log_userspace.ko
[ -f "$ko" ] || { cat "$log" >&2; die "dkms build made no $ko"; }
# dkms install runs depmod for the system's /lib/modules; skip that by doing it here instead.
run dkms install -m "$name" -v "$version" -k "$krel/$arch" --kernelsourcedir "$kdir" "${trees[@]}" --no-depmod
installed=$(find "$tmp/root" -name 'dm_log_userspace.ko*' | head -n 1)
[ -n "$installed" ] || die "dkms install placed no module under the install tree"
depmod -b "$tmp/root" "$krel" 2>/dev/null || die "depmod failed on the install tree"
grep -q "dm_log_userspace.ko" "$tmp/root/lib/modules/$krel/modules.dep" || die "depmod did not list the module"
vermagic=$(modinfo -F vermagic "$installed")
case "$vermagic" in "$krel "*) ;; *) die "vermagic '$vermagic' is not for $krel" ;; esac
run dkms remove -m "$name" -v "$version" --all "${trees[@]}" --no-depmod
echo "dkms: built and installed ${installed#"$tmp/root"} for $krel (vermagic: $vermagic)"
