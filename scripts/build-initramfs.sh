#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds a test guest's initramfs: busybox, dmsetup, fio, the project's userspace binaries,
# the in-guest suites and both log modules (the Rust one and upstream's C one, as
# /modules/{rust,c}/dm_log_userspace.ko); VARIANT names the one the suites use. Helper modules
# listed in EXTRA_MODULES (space-separated paths) go to /modules/extra/; host programs listed
# in EXTRA_PROGRAMS (absolute paths), with their libraries, to the same paths. STOCK_MODULES:
# a distribution kernel's /lib/modules/<release> (scripts/build-stock.sh), whose dm, brd and
# virtio modules the guest needs (uncompressed, with a modules.dep; the init loads them).
# Usage: [EXTRA_MODULES="A.ko B.ko"] [EXTRA_PROGRAMS="/usr/sbin/x"] build-initramfs.sh OUT.cpio.gz RUST.ko C.ko VARIANT [BINARY...]
. "$(dirname "$0")/lib.sh"

out=${1:?usage}
rust_ko=${2:?usage}
c_ko=${3:?usage}
variant=${4:?usage}
shift 4

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,lib,lib64,proc,sys,dev,tmp,run,etc,modules/rust,modules/c,modules/extra,tests}

cp /bin/busybox "$root/bin/busybox"
# Copies a program and the shared libraries it needs.
add_program() {
	local prog=$1 dest=$2
	cp -L "$prog" "$root$dest"
	ldd "$prog" 2>/dev/null | awk '/=>/ { print $3 } /^[ \t]*\/lib/ { print $1 }' | while read -r lib; do
		[ -n "$lib" ] && [ -f "$lib" ] || continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L -n "$lib" "$root$lib"
	done
}
add_program "$(command -v dmsetup)" /sbin/dmsetup
add_program "$(command -v fio)" /usr/bin/fio
for b in "$@"; do
	add_program "$b" "/usr/bin/$(basename "$b")"
done
# Host programs a suite needs at their own paths (the cluster guests' corosync).
for p in ${EXTRA_PROGRAMS:-}; do
	mkdir -p "$root$(dirname "$p")"
	add_program "$p" "$p"
done
cp "$rust_ko" "$root/modules/rust/dm_log_userspace.ko"
cp "$c_ko" "$root/modules/c/dm_log_userspace.ko"
for ko in ${EXTRA_MODULES:-}; do
	cp "$ko" "$root/modules/extra/"
done
echo "$variant" >"$root/modules/VARIANT"
if [ -n "${STOCK_MODULES:-}" ]; then
	krel=$(basename "$STOCK_MODULES")
	dest="$root/lib/modules/$krel"
	mkdir -p "$dest"
	# What the suites use, and what those need (modinfo's depends, followed by depmod later).
	want="dm-mod dm-log dm-region-hash dm-mirror dm-flakey dm-delay dm-log-writes brd virtio_blk"
	while read -r ko; do
		rel=${ko#"$STOCK_MODULES"/}
		mkdir -p "$dest/$(dirname "$rel")"
		case "$ko" in
		*.xz) xz -dc "$ko" >"$dest/${rel%.xz}" ;;
		*.zst) zstd -qdc "$ko" >"$dest/${rel%.zst}" ;;
		*) cp "$ko" "$dest/$rel" ;;
		esac
	done < <(for m in $want; do find "$STOCK_MODULES/kernel" -name "$m.ko*"; done | sort -u)
	# Debian's package ships no modules.order or modules.builtin (its postinst runs depmod).
	for f in modules.order modules.builtin modules.builtin.modinfo; do
		if [ -f "$STOCK_MODULES/$f" ]; then cp "$STOCK_MODULES/$f" "$dest/"; else : >"$dest/$f"; fi
	done
	depmod -b "$root" "$krel" || die "depmod of the stock modules failed"
	# The kernel's own C log module is the reference the suites compare with; it stays out of
	# modules.dep, as in the project's kernels: a table never loads it behind a test's back.
	c=$(find "$STOCK_MODULES/kernel" -name 'dm-log-userspace.ko*' | head -n 1)
	[ -n "$c" ] || die "no dm-log-userspace module in $STOCK_MODULES"
	case "$c" in
	*.xz) xz -dc "$c" >"$root/modules/c/dm_log_userspace.ko" ;;
	*) cp "$c" "$root/modules/c/dm_log_userspace.ko" ;;
	esac
	echo "$want" >"$root/modules/STOCK"
fi
cp "$TOP"/tests/vm/*.sh "$root/tests/"
cp "$TOP/tests/vm/init" "$root/init"
echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp"
mv "$out.tmp" "$out"
