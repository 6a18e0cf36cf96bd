#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds the module for Debian's stock kernel ($STOCK_KREL, trixie-backports) the way a Debian
# user's machine does: in the Debian 13 root of scripts/stock-root.sh, the project's
# dm-log-userspace-dkms package installed with apt, as the README says, then `dkms build` (scripts/dkms-build.sh prepares the kernel's Rust metadata from
# linux-source with Debian's rustc the first time, ~5 min, cached in the root). Copies the
# module to the cache and prints its path; the stock kernel image and modules (unpacked from
# Debian's packages) are in $CACHE/stock/kernel.
# Usage: build-stock.sh [module|kernel|workspace]
#   module (the default): the module, as above; rebuilt only when its sources changed.
#   kernel: unpacks the stock kernel's image and modules; prints their directory.
#   workspace: builds the Cargo workspace (server, tests) with Debian's cargo and rustc 1.85,
#   the workspace's rust-version, from crates vendored on the host (the root has no crates.io
#   access of its own).
. "$(dirname "$0")/lib.sh"

root=$("$TOP/scripts/stock-root.sh")
krel=$(sed -n 's/^STOCK_KREL=\${DMLU_STOCK_KREL:-\(.*\)}$/\1/p' "$TOP/scripts/stock-root.sh")
krel=${DMLU_STOCK_KREL:-$krel}
out="$CACHE/stock"

# The stock kernel itself, for the guests: vmlinuz and /lib/modules from Debian's package.
kernel_dir() {
	local dir="$out/kernel-$krel"
	if [ ! -f "$dir/vmlinuz" ]; then
		# linux-image-$krel is split: the (signed) image and the modules.
		say "unpacking Debian's linux-binary-$krel and linux-modules-$krel"
		"$TOP/scripts/stock-root.sh" run sh -c "mkdir -p /tmp/stock-debs && cd /tmp/stock-debs &&
			rm -f ./*.deb && chown _apt . 2>/dev/null; apt-get download -q linux-binary-$krel linux-modules-$krel >/dev/null"
		rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
		for deb in "$root"/tmp/stock-debs/*.deb; do dpkg-deb -x "$deb" "$dir.tmp"; done
		rm -rf "$root/tmp/stock-debs"
		# /boot/vmlinuz-<release> in older packages, /usr/lib/modules/<release>/vmlinuz now.
		image=$(find "$dir.tmp" \( -name "vmlinuz-$krel" -o -path "*/modules/$krel/vmlinuz" \) | head -n 1)
		[ -n "$image" ] || die "Debian's packages of $krel hold no vmlinuz-$krel"
		cp "$image" "$dir.tmp/vmlinuz"
		# usrmerge: the modules may be under usr/lib/modules.
		[ -d "$dir.tmp/lib/modules/$krel" ] || { mkdir -p "$dir.tmp/lib/modules" &&
			mv "$dir.tmp/usr/lib/modules/$krel" "$dir.tmp/lib/modules/"; }
		rm -rf "$dir" && mv "$dir.tmp" "$dir"
	fi
	echo "$dir"
}

# The workspace with Debian's cargo, offline, the repository and the vendored crates bound in.
workspace() {
	local vendor="$out/vendor" rc=0
	cargo vendor --locked --versioned-dirs -q "$vendor" >/dev/null ||
		die "cargo vendor failed (the crates are fetched on the host)"
	mkdir -p "$root/src" "$root/vendor"
	mountpoint -q "$root/src" || mount --bind "$TOP" "$root/src"
	mountpoint -q "$root/vendor" || mount --bind "$vendor" "$root/vendor"
	"$TOP/scripts/stock-root.sh" run sh -c "cd /src && rustc --version && CARGO_TARGET_DIR=/var/tmp/dmlu-target \
		cargo build --offline --locked --workspace --all-targets \
		--config 'source.crates-io.replace-with=\"vendored\"' \
		--config 'source.vendored.directory=\"/vendor\"'" || rc=$?
	umount "$root/src" "$root/vendor"
	return "$rc"
}

case "${1:-module}" in
kernel)
	kernel_dir
	exit
	;;
workspace)
	workspace
	exit
	;;
module) ;;
*) die "usage: build-stock.sh [module|kernel|workspace]" ;;
esac

version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
name=dm-log-userspace
# The module's source as the DKMS package ships it (scripts/build-packages.sh, cached while the
# tree is unchanged), installed in the root as apt would; the last build's module serves while
# that package is unchanged.
dkms_deb=$("$TOP/scripts/build-packages.sh" | grep '/dm-log-userspace-dkms_')
key=$(sha256sum "$dkms_deb" | cut -d' ' -f1)
if [ -f "$out/module/dm_log_userspace.ko" ] && [ "$(cat "$out/module/key" 2>/dev/null)" = "$key" ]; then
	echo "$out/module/dm_log_userspace.ko"
	exit
fi
rm -rf "$out/module"
cp "$dkms_deb" "$root/var/tmp/"
log="$out/dkms-build.log"
build() {
	"$TOP/scripts/stock-root.sh" run sh -c "
		dpkg --purge $name-dkms >/dev/null 2>&1 || true
		dkms remove -m $name -v $version --all >/dev/null 2>&1 || true
		apt-get install -y -q --no-install-recommends /var/tmp/$(basename "$dkms_deb") &&
		{ dkms status -m $name -v $version -k $krel | grep -qE 'built|installed' ||
			dkms build -m $name -v $version -k $krel; } ||
		{ cat /var/lib/dkms/$name/$version/build/make.log; exit 1; }"
}
with_progress "dkms build for $krel (Debian's rustc)" "$log" build
ko="$root/var/lib/dkms/$name/$version/$krel/x86_64/module/dm_log_userspace.ko"
[ -f "$ko" ] || ko=$(find "$root/var/lib/dkms/$name/$version/$krel" -name 'dm_log_userspace.ko*' | head -n 1)
[ -n "$ko" ] && [ -f "$ko" ] || die "dkms build made no module (log: $log)"
mkdir -p "$out/module"
case "$ko" in
*.xz) xz -dc "$ko" >"$out/module/dm_log_userspace.ko" ;;
*.zst) zstd -qdc "$ko" >"$out/module/dm_log_userspace.ko" ;;
*) cp "$ko" "$out/module/dm_log_userspace.ko" ;;
esac
vermagic=$(modinfo -F vermagic "$out/module/dm_log_userspace.ko")
case "$vermagic" in "$krel "*) ;; *) die "the module's vermagic '$vermagic' is not $krel's" ;; esac
echo "$key" >"$out/module/key"
echo "$out/module/dm_log_userspace.ko"
