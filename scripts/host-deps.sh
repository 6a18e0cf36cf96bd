#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Installs the host tools the build and the VM tests need: Debian packages of this release,
# and bindgen-cli from crates.io into the project cache. Safe to run again: it only installs
# what is missing.
. "$(dirname "$0")/lib.sh"

PACKAGES=(
	build-essential flex bison bc libelf-dev libssl-dev cpio kmod xz-utils
	clang-19 lld-19 llvm-19 libclang-19-dev
	qemu-system-x86 busybox-static dmsetup fio
	iproute2 ca-certificates python3
	systemd dkms
	corosync libcpg-dev libcfg-dev libcmap-dev libquorum-dev libvotequorum-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || die "need root to install: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
	say "installing Debian packages: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The kernel of $KVER needs bindgen >= 0.71.1; Debian's is older, so take the crate.
BINDGEN_VERSION=0.71.1
BINDGEN="$CACHE/bindgen-$BINDGEN_VERSION/bin/bindgen"
if [ ! -x "$BINDGEN" ]; then
	say "installing bindgen-cli $BINDGEN_VERSION (cargo, ~1 min)"
	LIBCLANG_PATH=/usr/lib/llvm-19/lib cargo install --quiet --locked bindgen-cli \
		--version "$BINDGEN_VERSION" --root "$CACHE/bindgen-$BINDGEN_VERSION"
fi
echo "$BINDGEN"
