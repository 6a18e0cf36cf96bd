#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Builds a Rust-enabled test kernel of one flavour (perf or debug) from Debian's kernel source
# and the config fragments beside this script, in the cache, keyed by kernel version, rustc
# version and config hash: a second run with the same key rebuilds nothing.
# Usage: build-kernel.sh perf|debug        Prints the build directory (usable as KDIR).
. "$(dirname "$0")/lib.sh"

flavour=${1:-}
case "$flavour" in perf | debug) ;; *) die "usage: $0 perf|debug" ;; esac

BINDGEN=$("$TOP/scripts/host-deps.sh" | tail -n 1)
mapfile -t srcs < <("$TOP/scripts/fetch-sources.sh")
ksrc=${srcs[0]}
rust_lib=${srcs[1]}

fragments=("$TOP/scripts/kconfig/common.config" "$TOP/scripts/kconfig/$flavour.config")
key=$(
	{
		echo "$KVER $(rustc_version) $LLVM_SUFFIX"
		cat "${fragments[@]}"
		head -c 4096 "$ksrc/Makefile"
	} | sha256sum | cut -c1-12
)
out="$CACHE/build/$flavour-$KVER-$(rustc_version)-$key"
kmake=(make -C "$ksrc" O="$out" LLVM="$LLVM_SUFFIX" RUST_LIB_SRC="$rust_lib" BINDGEN="$BINDGEN" -j"$JOBS")

if [ -f "$out/.dmlu-built" ]; then
	echo "$out"
	exit 0
fi
# One kernel build at a time: a second caller waits, then finds it built.
exec 9>"$CACHE/kernel-build.lock"
flock 9
if [ -f "$out/.dmlu-built" ]; then
	echo "$out"
	exit 0
fi

mkdir -p "$out"
say "configuring the $flavour kernel in $out"
"${kmake[@]}" rustavailable >"$out/rustavailable.log" 2>&1 ||
	{ cat "$out/rustavailable.log" >&2; die "the kernel says Rust is not available with this toolchain (see above)"; }
"${kmake[@]}" tinyconfig >/dev/null
(cd "$out" && "$ksrc/scripts/kconfig/merge_config.sh" -m -O "$out" "$out/.config" "${fragments[@]}" >/dev/null)
"${kmake[@]}" olddefconfig >/dev/null

# olddefconfig silently drops options whose dependencies are unmet (e.g. RUST): check each one.
bad=0
while IFS='=' read -r name value; do
	case "$name" in CONFIG_*) ;; *) continue ;; esac
	if [ "$value" = n ]; then
		grep -q "^$name=" "$out/.config" && { echo "  $name should be off" >&2; bad=1; }
	else
		grep -qx "$name=$value" "$out/.config" || { echo "  $name=$value did not stick: $(grep "$name[= ]" "$out/.config")" >&2; bad=1; }
	fi
done < <(cat "${fragments[@]}")
[ "$bad" -eq 0 ] || die "kernel config for $flavour is missing options (see above)"

say "building the $flavour kernel (-j$JOBS; 4-6 minutes from clean)"
with_progress "kernel $flavour" "$out/build.log" "${kmake[@]}" bzImage modules
[ -f "$out/drivers/md/dm-log-userspace.ko" ] || die "the C reference module was not built"
touch "$out/.dmlu-built"
echo "$out"
