#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds the Debian packages (debian/): dm-log-userspace-dkms (the module's DKMS source) and
# dm-ulogd (the server and its systemd unit), with dpkg-buildpackage in the Debian 13 root of
# scripts/stock-root.sh, from the repository's files and crates vendored on the host; then
# checks them with lintian (any error or warning fails). Copies the .deb files to
# $CACHE/stock/debs and prints their paths.
# Usage: build-packages.sh
. "$(dirname "$0")/lib.sh"

root=$("$TOP/scripts/stock-root.sh")
out="$CACHE/stock/debs"
version=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$TOP/debian/changelog")
build=/var/tmp/dmlu-packages
src=$build/dm-log-userspace-$version

# The tree as git sees it (tracked and new files, nothing ignored); the last packages serve
# while it is unchanged.
key=$(cd "$TOP" && git ls-files -co --exclude-standard -z | sort -z |
	xargs -0 sha256sum 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ "$(cat "$out/key" 2>/dev/null)" = "$key" ] && ls "$out"/*.deb >/dev/null 2>&1; then
	ls "$out"/*.deb
	exit
fi
rm -rf "$root$build" && mkdir -p "$root$src"
(cd "$TOP" && git ls-files -co --exclude-standard -z | xargs -0 cp -a --parents -t "$root$src" 2>/dev/null) ||
	die "copying the sources into the build root failed"
vendor="$CACHE/stock/vendor"
cargo vendor --locked --versioned-dirs -q "$vendor" >/dev/null || die "cargo vendor failed"
mkdir -p "$root/vendor"
mountpoint -q "$root/vendor" || mount --bind "$vendor" "$root/vendor"
log="$CACHE/stock/packages.log"
rc=0
with_progress "dpkg-buildpackage (Debian's cargo 1.85)" "$log" "$TOP/scripts/stock-root.sh" run \
	sh -c "cd $src && DMLU_VENDOR=/vendor dpkg-buildpackage -b -us -uc" || rc=$?
umount "$root/vendor"
[ "$rc" -eq 0 ] || die "the package build failed (log: $log)"

# lintian: errors and warnings fail; its informational tags are printed.
lint_log="$CACHE/stock/lintian.log"
"$TOP/scripts/stock-root.sh" run sh -c "cd $build && lintian --display-info *.changes" >"$lint_log" 2>&1 || true
sed 's/^/    /' "$lint_log" >&2
if grep -qE "^[EW]: " "$lint_log"; then
	die "lintian found errors or warnings (above)"
fi
rm -rf "$out" && mkdir -p "$out"
cp "$root$build"/*.deb "$out/"
echo "$key" >"$out/key"
ls "$out"/*.deb
