#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The README's "Install on Debian 13", typed as a new user would, in a fresh Debian 13 root
# (debootstrap; nothing of the build root of make stock): the backports kernel, headers and
# source, then the project's two packages with apt. Passes when apt pulled in trixie's rustc
# (the kernel's), DKMS built and installed the module for the stock kernel with the kernel's
# vermagic and DKMS's signature, and the unit can be enabled. Not in make check (about 15
# minutes, most of it the first DKMS build); its last run is in tests/results/debian-install.md.
# Usage: tests/debian/new-user.sh      (as root; builds the packages first if needed)
. "$(dirname "$0")/../../scripts/lib.sh"

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, chroot)"
# The packages make packages left (built from this tree if there are none).
ls "$CACHE"/stock/debs/*.deb >/dev/null 2>&1 || "$TOP/scripts/build-packages.sh" >/dev/null
mapfile -t debs < <(ls "$CACHE"/stock/debs/*.deb | grep -v dbgsym)
krel=$(sed -n 's/^STOCK_KREL=\${DMLU_STOCK_KREL:-\(.*\)}$/\1/p' "$TOP/scripts/stock-root.sh")
root="$CACHE/stock/new-user"
uri=$(mirror_uri)
rm -rf "$root"
say "a fresh Debian 13 root"
debootstrap --variant=minbase trixie "$root" "$uri" >"$CACHE/stock/new-user.log" 2>&1 ||
	die "debootstrap failed (log: $CACHE/stock/new-user.log)"
{
	echo "deb $uri trixie main"
	echo "deb $uri trixie-backports main"
} >"$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "${debs[@]}" "$root/root/"
for m in proc dev sys; do mount --bind "/$m" "$root/$m"; done
trap 'for m in sys dev proc; do umount -l "$root/$m" 2>/dev/null; done' EXIT
in_new_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive "$@"; }

# The README's commands (without sudo: this is root; the image's initramfs hook is left to run).
say "README line 1: the backports kernel, its headers and source"
in_new_root sh -c "apt-get update -q && apt-get install -y -q -t trixie-backports linux-image-amd64 linux-headers-amd64 linux-source-7.3" \
	>>"$CACHE/stock/new-user.log" 2>&1 || die "line 1 failed (log: $CACHE/stock/new-user.log)"
say "README line 2: the two packages"
start=$(date +%s)
in_new_root sh -c "cd /root && apt-get install -y -q ./dm-log-userspace-dkms_*_all.deb ./dm-ulogd_*_amd64.deb" \
	>>"$CACHE/stock/new-user.log" 2>&1 || die "line 2 failed (log: $CACHE/stock/new-user.log)"
echo "line 2 took $(($(date +%s) - start)) s"
say "README line 3 (what a chroot allows: enabling the unit)"
in_new_root systemctl enable dm-ulogd >>"$CACHE/stock/new-user.log" 2>&1 || die "systemctl enable failed"

echo "rustc: $(in_new_root rustc --version)"
want=$(sed -n 's/^CONFIG_RUSTC_VERSION_TEXT="\(.*\)"$/\1/p' "$root/usr/src/linux-headers-$krel/.config")
[ "$(in_new_root rustc --version)" = "$want" ] || die "apt installed a rustc other than the kernel's ($want)"
in_new_root dkms status
ko=$(find "$root/lib/modules/$krel/updates" -name 'dm_log_userspace.ko*' | head -n 1)
[ -n "$ko" ] || die "DKMS installed no module for $krel"
tmpko=$(mktemp --suffix=.ko)
case "$ko" in *.xz) xz -dc "$ko" >"$tmpko" ;; *.zst) zstd -qdc "$ko" >"$tmpko" ;; *) cp "$ko" "$tmpko" ;; esac
modinfo -F vermagic "$tmpko" | grep -q "^$krel " || die "the module's vermagic is not $krel's"
echo "module: ${ko#"$root"} vermagic $(modinfo -F vermagic "$tmpko"); signer: $(modinfo -F signer "$tmpko")"
rm -f "$tmpko"
[ -L "$root/etc/systemd/system/multi-user.target.wants/dm-ulogd.service" ] || die "the unit is not enabled"
echo "new user: ok"
