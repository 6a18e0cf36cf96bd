# shellcheck shell=sh
# Differential check: one scripted sequence of dmsetup operations and mirror I/O, run once
# with upstream's C module and once with the Rust module in the same guest, each against a
# recording dm-ulogd. The request streams (type, header fields but seq and the raw luid,
# payload bytes) must be equal.
#
# Normalisation, the same for both: consecutive identical lines are merged, because how often
# the mirror's worker polls (GET_RESYNC_WORK, GET_SYNC_COUNT) follows its wake-ups, not the
# log module. Intentional differences would be listed in KNOWN_DIFFERENCES; the scenario
# avoids the paths where the Rust module differs on purpose (reconnect with a long CTR,
# malformed replies), which suite-protocol covers, and runs without the request-saving
# features that change the stream (held clears; the server offers no in-sync map).

TESTS="stream_c stream_rust streams_equal"

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
	canonical "$rec" | uniq >"/tmp/$1.stream"
	echo "$(wc -l <"$rec") requests recorded, $(wc -l <"/tmp/$1.stream") after merging repeats"
	canonical "$rec" | awk '{ print $1 }' | sort | uniq -c
}

stream_c() { scenario c; }
stream_rust() { scenario rust; }

streams_equal() {
	[ -s /tmp/c.stream ] && [ -s /tmp/rust.stream ] || fail "a stream is missing"
	if ! diff /tmp/c.stream /tmp/rust.stream >/tmp/stream.diff; then
		echo "--- C module, +++ Rust module"
		head -n 60 /tmp/stream.diff
		fail "the request streams differ"
	fi
	echo "identical: $(wc -l </tmp/rust.stream) requests"
}
