# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# Differential check: one scripted sequence of dmsetup operations and mirror I/O, run once
# with upstream's C module and once with the Rust module in the same guest, each against a
# recording dm-ulogd. The request streams (type, header fields but seq and the raw luid,
# payload bytes) must be equal, in order, but for the timed requests below.
#
# Timed requests are those whose number and place follow the mirror's worker and the clock,
# not the log module: the worker's polls after each of its wake-ups (GET_RESYNC_WORK,
# GET_SYNC_COUNT), and IS_REMOTE_RECOVERING, which the C module asks at most once every 250 ms
# across all its logs and the Rust module skips once the sync count says every region is in
# sync. They are compared as sets: the Rust module may send fewer, never one the C module did
# not send. The rest is compared in order, consecutive identical lines merged. The scenario
# avoids the paths where the Rust module differs on purpose (reconnect with a long CTR,
# malformed replies), which suite-protocol covers, and runs without the request-saving
# features that change the stream (held clears; the server offers no in-sync map).
# streams_equal also plants differences in copies of the Rust stream and must see each.

TESTS="stream_c stream_rust streams_equal"
# Where the comparison keeps its files (the host's test of it sets its own).
diffs=/tmp

# scenario VARIANT: runs the sequence with that module, the record in /tmp/VARIANT.rec.
scenario() {
	use_variant "$1"
	# The Rust module's held clears change the order of requests on purpose (suite-protocol).
	case $1 in
	rust) insmod "$MODULE" hold_clears=0 ;;
	*) load_module ;;
	esac || fail "insmod of the $1 module failed"
	rec=/tmp/$1.rec
	rm -f "$rec"
	# Upstream's protocol only: the in-sync map is an announced extension (suite-protocol).
	start_server dm-ulogd --record "$rec" --no-in-sync-map || fail "dm-ulogd did not start"
	dm create m0 --table "$(mirror_table DIFF-UUID-0001 clustered-core 1024 nosync)" || fail "create failed"
	dm mknodes m0
	sleep 1
	dm status m0
	dm table m0
	# Writes to four regions, one at a time, each left to finish its mark/flush/clear cycle.
	for r in 0 3 7 15; do
		dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=$((r * 128)) oflag=direct 2>/dev/null || fail "write failed"
		sleep 0.5
	done
	# A write spanning two regions.
	dd if=/dev/zero of=/dev/mapper/m0 bs=64k count=2 seek=$((5 * 8 - 1)) oflag=direct 2>/dev/null || fail "write failed"
	sleep 0.5
	dd if=/dev/mapper/m0 of=/dev/null bs=4k count=1 skip=$((9 * 128)) iflag=direct 2>/dev/null || fail "read failed"
	sleep 0.5
	dm suspend m0 || fail "suspend failed"
	dm resume m0 || fail "resume failed"
	sleep 0.5
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=$((11 * 128)) oflag=direct 2>/dev/null || fail "write failed"
	sleep 0.5
	# The same log UUID in an integrated_flush table, beside the first.
	dm create m1 --table "0 16384 mirror userspace 5 DIFF-UUID-0001 integrated_flush clustered-core 1024 nosync 2 /dev/ram2 0 /dev/ram3 0" || fail "create m1 failed"
	dm mknodes m1
	sleep 1
	dd if=/dev/zero of=/dev/mapper/m1 bs=4k count=1 seek=$((4 * 128)) oflag=direct 2>/dev/null || fail "write to m1 failed"
	# Long enough for the lazy FLUSH of its clear.
	sleep 5
	dm status m1
	dm remove m1 || fail "remove m1 failed"
	dm remove m0 || fail "remove failed"
	stop_server
	unload_module || fail "rmmod failed"
	echo "$(wc -l <"$rec") requests recorded, $(ordered "$rec" | wc -l) in order after merging repeats"
	canonical "$rec" | awk '{ print $1 }' | sort | uniq -c
}

stream_c() { scenario c; }
stream_rust() { scenario rust; }

# The timed requests (see the top of this file).
TIMED='^(GET_RESYNC_WORK|GET_SYNC_COUNT|IS_REMOTE_RECOVERING) '
# ordered REC: the requests in order but the timed ones, consecutive repeats merged.
ordered() { canonical "$1" | grep -vE "$TIMED" | uniq; }
# timed REC: the distinct timed requests.
timed() { canonical "$1" | grep -E "$TIMED" | sort -u; }

# same_streams C_REC RUST_REC: succeeds when the ordered streams are equal and the Rust module
# sent no timed request the C module did not; else prints how they differ.
same_streams() {
	ordered "$1" >"$diffs/c.ordered"
	ordered "$2" >"$diffs/rust.ordered"
	if ! diff "$diffs/c.ordered" "$diffs/rust.ordered" >"$diffs/stream.diff"; then
		echo "--- C module, +++ Rust module"
		head -n 60 "$diffs/stream.diff"
		return 1
	fi
	timed "$1" >"$diffs/c.timed"
	timed "$2" | grep -vxF -f "$diffs/c.timed" >"$diffs/rust.extra"
	if [ -s "$diffs/rust.extra" ]; then
		echo "timed requests only the Rust module sent:"
		cat "$diffs/rust.extra"
		return 1
	fi
}

# planted_differences C_REC RUST_REC: spoils copies of the Rust record in three ways that
# same_streams must each report; prints how many it caught of how many.
planted_differences() {
	caught=0
	# A mark of another region (its payload's first byte changed).
	awk '!done && index($0, "|MARK_REGION ") { $NF = "fe" substr($NF, 3); done = 1 } 1' "$2" >"$diffs/planted.rec"
	same_streams "$1" "$diffs/planted.rec" >/dev/null || caught=$((caught + 1))
	# A log never destroyed (its only DTR left out).
	grep -v '|DTR L1 ' "$2" >"$diffs/planted.rec"
	same_streams "$1" "$diffs/planted.rec" >/dev/null || caught=$((caught + 1))
	# A question the C module never asked.
	{ cat "$2"; echo "0|IS_REMOTE_RECOVERING L1 v3 e0 n8 uuid=DIFF-UUID-0001 pad=ok ffffffffffffffff"; } >"$diffs/planted.rec"
	same_streams "$1" "$diffs/planted.rec" >/dev/null || caught=$((caught + 1))
	echo "planted differences caught: $caught of 3"
	[ "$caught" = 3 ]
}

streams_equal() {
	[ -s /tmp/c.rec ] && [ -s /tmp/rust.rec ] || fail "a record is missing"
	same_streams /tmp/c.rec /tmp/rust.rec || fail "the request streams differ"
	in_order=$(wc -l <"$diffs/rust.ordered")
	# What was compared: a floor, so that a scenario that stopped early cannot pass.
	[ "$in_order" -ge 40 ] || fail "only $in_order requests compared in order (expected at least 40)"
	echo "identical: $in_order requests in order; timed requests: C $(wc -l <"$diffs/c.timed") distinct," \
		"the Rust module none other"
	planted_differences /tmp/c.rec /tmp/rust.rec || fail "the comparison missed a planted difference"
}
