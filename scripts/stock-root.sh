#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# A Debian 13 (trixie) root in the cache, with trixie-backports enabled, holding what a Debian
# user's machine holds to build this module for Debian's stock kernel: the distribution's own
# rustc, bindgen and gcc-14 (the kernel's Rust symbols carry a hash of the exact compiler
# version string, so only Debian's rustc can build a module for Debian's kernel), the stock
# kernel's headers, linux-source, dkms and lintian. Made once with debootstrap (~10 min); later
# runs only print its path. The host's apt setup is not touched.
# Usage: stock-root.sh          Prints the root's path.
# In the root: stock-root.sh run CMD...   (binds /proc, /dev and /sys for the command)
. "$(dirname "$0")/lib.sh"

# The stock kernel: Debian's backports kernel of $KVER.
STOCK_KREL=${DMLU_STOCK_KREL:-7.3.4+deb13-amd64}
ROOT="$CACHE/stock/root"
PACKAGES=(
	make gcc-14 bc bison flex libelf-dev libssl-dev kmod cpio xz-utils dwarves python3
	rustc rust-src bindgen libclang-dev
	dkms lintian dpkg-dev fakeroot ca-certificates
	build-essential debhelper dh-dkms cargo pkgconf libcpg-dev libcfg-dev libcmap-dev libquorum-dev libvotequorum-dev
)

# Runs a command inside the root with /proc, /dev and /sys bound, unbinding them afterwards.
in_root() {
	local m rc=0
	for m in proc dev sys; do mountpoint -q "$ROOT/$m" || mount --bind "/$m" "$ROOT/$m"; done
	chroot "$ROOT" env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin HOME=/root \
		DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@" || rc=$?
	for m in sys dev proc; do umount -l "$ROOT/$m" 2>/dev/null || true; done
	return "$rc"
}

[ "$(id -u)" -eq 0 ] || die "the Debian 13 build root needs root (debootstrap and chroot): run as root"

if [ "${1:-}" = run ]; then
	shift
	[ -f "$ROOT/.ready" ] || die "no build root yet: run scripts/stock-root.sh first"
	in_root "$@"
	exit
fi

if [ ! -f "$ROOT/.ready" ]; then
	command -v debootstrap >/dev/null || {
		say "installing debootstrap"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
	}
	uri=$(mirror_uri)
	log="$CACHE/stock/root.log"
	mkdir -p "$CACHE/stock"
	if [ ! -f "$ROOT/.bootstrapped" ]; then
		rm -rf "$ROOT"
		with_progress "debootstrap trixie" "$log" \
			debootstrap --variant=minbase trixie "$ROOT" "$uri"
		touch "$ROOT/.bootstrapped"
	fi
	{
		echo "deb $uri trixie main"
		echo "deb $uri trixie-backports main"
	} >"$ROOT/etc/apt/sources.list"
	# Packages are fetched into the cache, not into the root's image of it.
	cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
	with_progress "apt in the root" "$log" in_root sh -c "apt-get update -q && \
		apt-get install -y -q --no-install-recommends ${PACKAGES[*]} && \
		apt-get install -y -q --no-install-recommends -t trixie-backports \
			linux-headers-$STOCK_KREL linux-source-$KVER"
	touch "$ROOT/.ready"
fi
# A root made before a package joined the list gets it now.
installed=$(in_root dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null |
	awk '/install ok installed/ { print $1 }' || true)
missing=$(printf '%s\n' "${PACKAGES[@]}" | grep -vxF -f <(echo "$installed") || true)
if [ -n "$missing" ]; then
	say "installing into the build root: $(echo $missing)"
	# shellcheck disable=SC2086
	in_root apt-get install -y -q --no-install-recommends $missing >"$CACHE/stock/root.log" 2>&1 ||
		{ tail -n 20 "$CACHE/stock/root.log" >&2; die "apt-get install in the build root failed"; }
fi
echo "$ROOT"
