#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Fetches, from Debian's archive, the kernel source (linux-source-$KVER) and the Rust standard
# library source (rust-src) that matches the installed rustc, and unpacks both into the cache.
# It reaches trixie-backports through private apt lists: the system's apt setup is not touched
# and nothing from trixie is installed into the system. The mirror is the one this machine
# already uses.
# Prints two lines: the kernel source dir and RUST_LIB_SRC.
. "$(dirname "$0")/lib.sh"

APT="$CACHE/apt"
SRC="$CACHE/src"
mkdir -p "$APT"/{state/lists/partial,cache/archives/partial,debs} "$SRC"

apt_opts() {
	echo -o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State="$APT/state" -o Dir::Cache="$APT/cache"
}

apt_private() {
	apt-get -q -o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null \
		-o Dir::State="$APT/state" -o Dir::Cache="$APT/cache" \
		-o APT::Get::AllowUnauthenticated=false -o APT::Sandbox::User=root "$@"
}

rustc_ver=$(rustc_version)
kdir="$SRC/linux-source-$KVER"
rust_lib="$SRC/rust-src-$rustc_ver/usr/src/rustc-$rustc_ver/library"

if [ ! -f "$kdir/Makefile" ] || [ ! -d "$rust_lib/core" ]; then
	uri=$(mirror_uri)
	keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	{
		echo "deb [signed-by=$keyring] $uri trixie main"
		echo "deb [signed-by=$keyring] $uri trixie-backports main"
	} >"$APT/sources.list"
	say "updating private apt lists for trixie-backports"
	apt_private update >"$APT/update.log" 2>&1 || { cat "$APT/update.log" >&2; die "apt-get update of the private lists failed"; }
fi

if [ ! -f "$kdir/Makefile" ]; then
	say "downloading linux-source-$KVER (Debian, ~170 MB)"
	(cd "$APT/debs" && apt_private download "linux-source-$KVER" >/dev/null)
	deb=$(ls -t "$APT"/debs/linux-source-"$KVER"_*.deb | head -n 1)
	rm -rf "$SRC/unpack-linux" && mkdir -p "$SRC/unpack-linux"
	dpkg-deb -x "$deb" "$SRC/unpack-linux"
	say "unpacking the kernel source"
	rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp"
	tar -xf "$SRC/unpack-linux/usr/src/linux-source-$KVER.tar.xz" -C "$kdir.tmp" --strip-components=1
	rm -rf "$SRC/unpack-linux" "$kdir"
	mv "$kdir.tmp" "$kdir"
fi

if [ ! -d "$rust_lib/core" ]; then
	# rust-src must match rustc exactly: the kernel builds core and alloc from it.
	# shellcheck disable=SC2046
	have=$(apt-cache $(apt_opts) madison rust-src | awk -F'|' '{gsub(/ /, "", $2); print $2}')
	ver=$(echo "$have" | grep "^$rustc_ver+" | head -n 1 || true)
	[ -n "$ver" ] || die "Debian has no rust-src for rustc $rustc_ver (it has: $(echo $have)); install a rustc whose version one of these matches (rustup toolchain install X.Y.Z)"
	say "downloading rust-src $ver"
	(cd "$APT/debs" && apt_private download "rust-src=$ver" >/dev/null)
	deb=$(ls -t "$APT"/debs/rust-src_*.deb | head -n 1)
	rm -rf "$SRC/rust-src-$rustc_ver"
	dpkg-deb -x "$deb" "$SRC/rust-src-$rustc_ver"
	[ -d "$rust_lib/core" ] || die "rust-src package did not contain $rust_lib"
fi

echo "$kdir"
echo "$rust_lib"
