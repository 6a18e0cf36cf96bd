#!/usr/bin/env bash
# Builds the module for Debian's stock kernel ($STOCK_KREL, trixie-backports) the way a Debian
# user's machine does: in the Debian 13 root of scripts/stock-root.sh, from the module's DKMS
# source, with `dkms build` (scripts/dkms-build.sh prepares the kernel's Rust metadata from
# linux-source with Debian's rustc the first time, ~5 min, cached in the root). Copies the
# module to the cache and prints its path; the stock kernel image and modules (unpacked from
# Debian's packages) are in $CACHE/stock/kernel.
# Usage: build-stock.sh [module|kernel]     (module: the default; kernel: print the image dir)
. "$(dirname "$0")/lib.sh"

root=$("$TOP/scripts/stock-root.sh")
krel=$(sed -n 's/^STOCK_KREL=\${DMLU_STOCK_KREL:-\(.*\)}$/\1/p' "$TOP/scripts/stock-root.sh")
krel=${DMLU_STOCK_KREL:-$krel}
out="$CACHE/stock"

# The stock kernel itself, for the guests: vmlinuz and /lib/modules from Debian's package.
kernel_dir() {
	local dir="$out/kernel-$krel"
	if [ ! -f "$dir/vmlinuz" ]; then
		say "unpacking Debian's linux-image-$krel"
		"$TOP/scripts/stock-root.sh" run sh -c "cd /tmp && rm -f linux-image-*.deb && apt-get download -q linux-image-$krel >/dev/null"
		rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
		dpkg-deb -x "$root"/tmp/linux-image-"$krel"_*.deb "$dir.tmp"
		cp "$dir.tmp/boot/vmlinuz-$krel" "$dir.tmp/vmlinuz"
		rm -f "$root"/tmp/linux-image-*.deb
		rm -rf "$dir" && mv "$dir.tmp" "$dir"
	fi
	echo "$dir"
}

if [ "${1:-module}" = kernel ]; then
	kernel_dir
	exit
fi

version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$TOP/dkms.conf")
name=dm-log-userspace
src=/usr/src/$name-$version
# The sources as `make dkms-source` installs them (what the DKMS package ships).
rm -rf "$root$src"
make -s -C "$TOP" dkms-source DESTDIR="$root" DKMS_SRCDIR="$src"
log="$out/dkms-build.log"
build() {
	"$TOP/scripts/stock-root.sh" run sh -c "
		dkms remove -m $name -v $version --all >/dev/null 2>&1 || true
		dkms add -m $name -v $version &&
		dkms build -m $name -v $version -k $krel ||
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
echo "$out/module/dm_log_userspace.ko"
