#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The diff suite's comparison (tests/vm/suite-diff.sh) on the host, without a guest: the
# streams a make check run recorded on the stock kernel (CI of 5b5d87e), which differ only in
# when the mirror's worker polled and whether IS_REMOTE_RECOVERING was asked, must compare
# equal; a spoiled Rust stream must not. Prints KTAP; exits non-zero on a wrong verdict.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# What the guest's lib.sh gives the suite: the comparable part of a record line.
canonical() { cut -d'|' -f2- "$1"; }
fail() { echo "FAIL: $*"; exit 1; }
# shellcheck source=../vm/suite-diff.sh
. "$here/../vm/suite-diff.sh"
diffs=$tmp

# record FILE TYPE...: a record of the given requests, "TYPE" or "TYPE@PAYLOAD", on log 1 or 2
# ("TYPE:2"), in the guest record's format.
record() {
	local file=$1 seq=0 req type log payload n
	shift
	: >"$file"
	for req in "$@"; do
		seq=$((seq + 1))
		payload=-
		case $req in *@*) payload=${req#*@} req=${req%@*} ;; esac
		log=1
		case $req in *:2) log=2 req=${req%:2} ;; esac
		n=$((${#payload} / 2))
		[ "$payload" = - ] && n=0
		echo "$seq|$req L$log v3 e0 n$n uuid=DIFF-UUID-0001 pad=ok $payload" >>"$file"
	done
}

r0=0000000000000000
r4=0400000000000000
# The C module's stream: the worker polled after RESUME, and it asked IS_REMOTE_RECOVERING
# before m1's first write.
record "$tmp/c.rec" CTR GET_REGION_SIZE GET_SYNC_COUNT RESUME GET_RESYNC_WORK GET_SYNC_COUNT \
	STATUS_INFO IN_SYNC@$r0 IS_REMOTE_RECOVERING@$r0 MARK_REGION@$r0 FLUSH CLEAR_REGION@$r0 FLUSH \
	CTR:2 GET_REGION_SIZE:2 GET_SYNC_COUNT:2 RESUME:2 GET_RESYNC_WORK:2 IS_REMOTE_RECOVERING:2@$r4 \
	IN_SYNC:2@$r4 FLUSH:2@$r4 CLEAR_REGION:2@$r4 DTR:2 DTR
# The Rust module's: the worker polled before RESUME; the sync count had said every region
# was in sync, so it asked no IS_REMOTE_RECOVERING for m1.
record "$tmp/rust.rec" CTR GET_REGION_SIZE RESUME GET_SYNC_COUNT STATUS_INFO IN_SYNC@$r0 \
	IS_REMOTE_RECOVERING@$r0 MARK_REGION@$r0 FLUSH CLEAR_REGION@$r0 FLUSH \
	CTR:2 GET_REGION_SIZE:2 GET_SYNC_COUNT:2 RESUME:2 IN_SYNC:2@$r4 FLUSH:2@$r4 \
	CLEAR_REGION:2@$r4 DTR:2 DTR

failed=0
echo "TAP version 13"
echo "1..2"
if out=$(same_streams "$tmp/c.rec" "$tmp/rust.rec" 2>&1); then
	echo "ok 1 the streams of the stock kernel's flaky run compare equal"
else
	echo "$out" | sed 's/^/# /'
	echo "not ok 1 the streams of the stock kernel's flaky run compare equal"
	failed=1
fi
if out=$(planted_differences "$tmp/c.rec" "$tmp/rust.rec" 2>&1); then
	echo "# $out"
	echo "ok 2 every planted difference is reported"
else
	echo "$out" | sed 's/^/# /'
	echo "not ok 2 every planted difference is reported"
	failed=1
fi
exit "$failed"
