# shellcheck shell=bash
# SPDX-License-Identifier: GPL-2.0
# Shared paths and helpers for the project's scripts. Source it; do not run it.

set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${DMLU_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dm-log-userspace-rs}
# The kernel whose source Debian ships as linux-source-$KVER (trixie-backports).
KVER=${DMLU_KVER:-7.3}
LLVM_SUFFIX=-19
JOBS=${JOBS:-$(nproc)}

mkdir -p "$CACHE"
# rustup's toolchain, when the environment (e.g. CI) does not put it on PATH.
if ! command -v cargo >/dev/null && [ -x "$HOME/.cargo/bin/cargo" ]; then
	PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (the kernel needs the exact rustc that rust-src matches)"


# Runs a long command with its output in a log file, printing a progress line every few seconds.
# Usage: with_progress LABEL LOGFILE cmd...
with_progress() {
	local label=$1 log=$2 start pid rc=0
	shift 2
	start=$(date +%s)
	"$@" >"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 5
		kill -0 "$pid" 2>/dev/null || break
		printf '    %s: %ss, %s\n' "$label" $(($(date +%s) - start)) \
			"$(tail -n 1 "$log" | cut -c1-90)" >&2
	done
	wait "$pid" || rc=$?
	if [ "$rc" -ne 0 ]; then
		tail -n 40 "$log" >&2
		die "$label failed (exit $rc); full log: $log"
	fi
	printf '    %s: done in %ss\n' "$label" $(($(date +%s) - start)) >&2
}

# rustc's version, e.g. 1.95.0.
rustc_version() { rustc --version | awk '{print $2}'; }

# The Debian mirror this machine already uses (for trixie packages fetched by the scripts).
mirror_uri() {
	local uri=""
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
	fi
	if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
		uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
			/etc/apt/sources.list)
	fi
	[ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
	echo "$uri"
}
