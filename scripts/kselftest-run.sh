#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Runs the suites the kselftest way in a guest: `make -C tests install` builds a kselftest tree
# (the kernel's run_kselftest.sh and runner, kselftest-list.txt, the project's programs and the
# Rust module), which is added to the guest as /kselftest; the `kselftest` suite runs a suite
# from it with run_kselftest.sh and checks what the runner reports.
# Usage: kselftest-run.sh [debug|perf] [TIMEOUT]
. "$(dirname "$0")/lib.sh"

flavour=${1:-debug}
limit=${2:-600}
mapfile -t srcs < <("$TOP/scripts/fetch-sources.sh")
ko=$("$TOP/scripts/build-module.sh" "$flavour")
mapfile -t bins < <("$TOP/scripts/build-userspace.sh")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s -C "$TOP/tests" install INSTALL_PATH="$tmp/kselftest" \
	KSFT_DIR="${srcs[0]}/tools/testing/selftests" DMLU_BIN="$(dirname "${bins[0]}")" DMLU_KO="$ko"
(cd "$tmp" && find kselftest | cpio -o -H newc --quiet | gzip) >"$tmp/kselftest.cpio.gz"
DMLU_INITRD_EXTRA="$tmp/kselftest.cpio.gz" "$TOP/scripts/vm-run.sh" "$flavour" rust kselftest "$limit"
