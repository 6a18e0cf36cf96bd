#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# DKMS's build step (dkms.conf MAKE[0]); shipped in the module's DKMS source and standalone.
#
# A Rust module is built against the kernel crate's compiled metadata (rust/libkernel.rmeta and
# the rest), made by the very rustc that built the kernel: Rust symbols carry a hash of the
# compiler's exact version string. A kernel you built yourself has that metadata in its build
# directory, and this step is a plain `make`. A distribution's header package has none (Debian's
# linux-headers-*), so this step makes it once per kernel release, from the distribution's
# kernel source (linux-source-X.Y) and the headers' .config and Module.symvers, in
# $DMLU_TREE_CACHE/<release> (default /var/cache/dm-log-userspace; about 1.5 GB and 5 minutes
# on two cores), and builds against that. It refuses, saying what to install, when the rustc on
# PATH is not the one the kernel was built with.
#
# Usage: dkms-build.sh KERNELRELEASE KERNEL_SOURCE_DIR
set -eu

krel=$1
kdir=$2
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${DMLU_TREE_CACHE:-/var/cache/dm-log-userspace}

die() {
	echo "dm-log-userspace: $*" >&2
	exit 1
}

[ -f "$kdir/Makefile" ] || die "no kernel headers in $kdir: install the headers of $krel (Debian: apt install linux-headers-$krel)"
config=$kdir/.config
[ -f "$config" ] || die "$kdir has no .config: it is not a kernel build or header directory"
grep -qx 'CONFIG_RUST=y' "$config" ||
	die "kernel $krel was built without Rust support (CONFIG_RUST): this module needs a Rust-enabled kernel"
grep -qx 'CONFIG_DM_MIRROR=[ym]' "$config" ||
	die "kernel $krel has no device-mapper mirror target (CONFIG_DM_MIRROR): nothing would use this log"

# A build directory with the Rust metadata (a kernel you built): build against it as it is.
if [ -f "$kdir/rust/libkernel.rmeta" ]; then
	exec make -C "$here" KDIR="$kdir" modules
fi

# A distribution's headers: the compiler must be the kernel's.
want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"$/\1/p' "$config")
have=$(rustc --version 2>/dev/null || true)
if [ "$have" != "$want" ]; then
	echo "dm-log-userspace: kernel $krel was built with" >&2
	echo "    $want" >&2
	echo "but the rustc on PATH is" >&2
	echo "    ${have:-(none)}" >&2
	die "a Rust module must be built by the same compiler. Install the distribution's rustc that built this kernel (Debian 13: 'apt install rustc rust-src bindgen' from trixie, not rustup's and not trixie-backports'), and make sure it comes first on PATH; then 'dkms autoinstall -k $krel'"
fi
cc=$(sed -n 's/^CONFIG_CC_VERSION_TEXT="\([^ ]*\) .*$/\1/p' "$config")
command -v "$cc" >/dev/null || die "kernel $krel was built with $cc, which is not installed (Debian: apt install ${cc#x86_64-linux-gnu-})"
command -v bindgen >/dev/null || die "no bindgen: install it (Debian: apt install bindgen)"

# The kernel's source: the distribution's source package of the same version as the headers.
series=$(echo "$krel" | sed -n 's/^\([0-9]*\.[0-9]*\).*/\1/p')
tarball=/usr/src/linux-source-$series.tar.xz
[ -f "$tarball" ] || die "no $tarball: install the kernel's source (Debian: apt install linux-source-$series, from the same suite as the kernel)"
version=unknown
if command -v dpkg-query >/dev/null; then
	version=$(dpkg-query -W -f='${Version}' "linux-source-$series" 2>/dev/null || echo unknown)
	headers=$(dpkg-query -S "$kdir/.config" 2>/dev/null | cut -d: -f1 || true)
	if [ -n "$headers" ]; then
		hv=$(dpkg-query -W -f='${Version}' "$headers")
		[ "$hv" = "$version" ] ||
			die "linux-source-$series is $version but $headers is $hv: install linux-source-$series=$hv"
	fi
fi

tree=$cache/$krel/linux
stamp=$cache/$krel/prepared
key="$version $want"
if [ "$(cat "$stamp" 2>/dev/null)" != "$key" ]; then
	echo "dm-log-userspace: preparing the Rust metadata of $krel from $tarball (once; ~5 min)"
	rm -rf "$cache/$krel"
	mkdir -p "$tree"
	tar -xf "$tarball" -C "$tree" --strip-components=1
	cp "$config" "$tree/.config"
	cp "$kdir/Module.symvers" "$tree/Module.symvers"
	# The headers' release string, so that the module's vermagic is the kernel's.
	make -C "$tree" -s CC="$cc" KERNELRELEASE="$krel" olddefconfig
	cmp -s "$config" "$tree/.config" || die "the source of $version does not take $krel's configuration unchanged: is linux-source-$series the kernel's version?"
	make -C "$tree" -s CC="$cc" KERNELRELEASE="$krel" -j"$(nproc)" modules_prepare
	[ -f "$tree/rust/libkernel.rmeta" ] || die "modules_prepare made no rust/libkernel.rmeta in $tree"
	echo "$key" >"$stamp"
fi
exec make -C "$here" KDIR="$tree" CC="$cc" KERNELRELEASE="$krel" modules
