# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# The module's side of the protocol, one test per promise: what it sends (recorded by the
# server), how it treats the replies of a server that misbehaves on command
# (dm-ulog-hostile --fault), and what it does while no server listens.

TESTS="setup autoload_by_device_mapper request_stream_well_formed seq_wraps luid_unique_per_instance
region_size_validated ctr_device_name_validated bare_ack_fails_the_request
timeout_resends_with_new_seq_others_proceed eagain_resends eagain_bounded_by_max_server_wait
stray_and_duplicate_replies_dropped
unprivileged_reply_ignored unprivileged_socket_ignored reply_must_name_the_log_and_type
repeated_feature_refused
status_info_failure_default flush_failure_raises_event
failure_defaults_and_short_replies lying_data_size_dropped flush_group_failure_falls_back_to_single_regions
in_sync_never_sent_from_map in_sync_asked_once_per_write in_sync_answered_from_the_servers_map
withdrawal_voids_the_map withdrawal_voids_kept_answers withdrawal_restarts_the_resync
remote_recovering_rate_limited_and_hinted
server_restart_reconnects suspend_resume_not_retried_without_server
suspend_ends_a_flush_waiting_for_the_server
integrated_flush_marks_ride_in_flush integrated_flush_lazy_clear_flush
integrated_flush_early_at_postsuspend_and_dtr clears_held_for_the_next_marks_flush
clears_wait_for_their_regions_idle_time held_clears_sent_at_suspend_and_dtr
extensions_forgotten_for_a_server_that_did_not_announce debugfs_counters_match_the_record teardown
kmemleak_reports_nothing"

UUID=PROTO-UUID-0001
REC=/tmp/requests.rec

setup() {
	load_module || fail "insmod failed"
}

# serve [FAULT...]: a fresh dm-ulog-hostile that records to $REC and injects the faults; also
# removes what a failed test may have left. A test that failed with the server gone may have
# left a mirror whose worker waits for one: a server comes first, or the removal would wait.
serve() {
	[ -f /tmp/dm-ulogd.pid ] || restart_recording
	remove_all
	restart_recording "$@"
}

# Removes every mirror the tests made.
remove_all() {
	for d in m0 m1 m2; do dm remove "$d" 2>/dev/null; done
	return 0
}

autoload_by_device_mapper() {
	unload_module || fail "rmmod failed"
	dir=/lib/modules/$(uname -r)/extra
	mkdir -p "$dir"
	cp "$MODULE" "$dir/"
	depmod || fail "depmod failed"
	serve
	create_mirror m0 "$UUID" clustered-core 1024 || fail "table with a userspace log failed"
	module_loaded || fail "device-mapper did not load the module"
	grep '^dm_log_userspace ' /proc/modules
	remove_all
	rm -f "$dir/dm_log_userspace.ko"
	depmod
	return 0
}

request_stream_well_formed() {
	serve
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	dd if=/dev/urandom of=/dev/mapper/m0 bs=64k count=16 oflag=direct 2>/dev/null || fail "write failed"
	wait_in_sync m0 60 || fail "no sync"
	dm status m0 >/dev/null
	dm suspend m0 && dm resume m0 || fail "suspend/resume failed"
	dm remove m0 || fail "remove failed"
	canonical "$REC" | awk '{ print $1 }' | sort | uniq -c
	canonical "$REC" | head -n 3
	# Header: version 3, no error, zero padding, this UUID, one non-zero luid.
	bad=$(canonical "$REC" | awk -v u="uuid=$UUID" '$3 != "v3" || $4 != "e0" || $6 != u || $7 != "pad=ok"')
	[ -z "$bad" ] || fail "malformed headers: $bad"
	luid=$(first_luid "$REC")
	[ "$luid" -gt 0 ] 2>/dev/null || fail "luid $luid is not positive"
	# A kernel address would be above 2^47; the module numbers its logs.
	[ "${#luid}" -lt 10 ] || fail "luid $luid looks like a pointer"
	[ "$(sed 's/.*luid=\([0-9]*\) .*/\1/' "$REC" | sort -u | wc -l)" -eq 1 ] || fail "one log, several luids"
	# seq: one counter, +1 per request.
	seq_counts_up || fail "seq does not count up by one"
	# The CTR: "<target length> <args>" without NUL, then the region size.
	first=$(canonical "$REC" | head -n 1)
	want="CTR L1 v3 e0 n25 uuid=$UUID pad=ok $(hex_of "16384 clustered-core 1024")"
	[ "$first" = "$want" ] || fail "CTR is '$first', want '$want'"
	[ "$(canonical "$REC" | sed -n 2p | cut -d' ' -f1,5)" = "GET_REGION_SIZE n0" ] || fail "no GET_REGION_SIZE after CTR"
	[ "$(count_requests "$REC" GET_REGION_SIZE)" -eq 1 ] || fail "region size asked more than once"
	# Payload sizes by type, as the uapi header documents them. Without integrated_flush a
	# FLUSH carries nothing, or (this project's extension, to a server that announced it,
	# uapi/clears_in_flush.rs) clears only: entries with bit 63 set, the last byte of each.
	canonical "$REC" | awk '
		function want(n) { if ($5 != "n" n) { print "bad size: " $0; bad = 1 } }
		$1 ~ /^(DTR|PRESUSPEND|POSTSUSPEND|RESUME|GET_REGION_SIZE|GET_RESYNC_WORK|GET_SYNC_COUNT|STATUS_INFO|STATUS_TABLE)$/ { want(0) }
		$1 ~ /^(IS_CLEAN|IN_SYNC|IS_REMOTE_RECOVERING|GET_IN_SYNC_RANGES)$/ { want(8) }
		$1 == "FLUSH" { n = substr($5, 2) + 0
			if (n % 8 || n > 256) { print "bad size: " $0; bad = 1 }
			for (i = 0; i < n / 8; i++) if (substr($8, i * 16 + 15, 1) !~ /[89abcdef]/) { print "not a clear: " $0; bad = 1 } }
		$1 == "SET_REGION_SYNC" { want(16) }
		$1 ~ /^(MARK_REGION|CLEAR_REGION)$/ { n = substr($5, 2) + 0; if (n == 0 || n % 8 || n > 256) { print "bad size: " $0; bad = 1 } }
		END { exit bad }' || fail "payload sizes differ from the protocol"
	for t in CTR GET_REGION_SIZE RESUME MARK_REGION FLUSH GET_RESYNC_WORK \
		SET_REGION_SYNC GET_SYNC_COUNT STATUS_INFO PRESUSPEND POSTSUSPEND DTR IN_SYNC; do
		[ "$(count_requests "$REC" "$t")" -gt 0 ] || fail "no $t request seen"
	done
	# Clears: as CLEAR_REGION, or inside FLUSHes (the server announced it takes them).
	[ "$(count_requests "$REC" CLEAR_REGION)" -gt 0 ] ||
		flushes_since 0 | tr ' ' '\n' | sed -n 's/^F://p' | fold -w 16 | grep -q '[89a-f].$' ||
		fail "no clear seen"
	[ "$(canonical "$REC" | tail -n 1 | cut -d' ' -f1)" = DTR ] || fail "DTR is not the last request"
}

# The record's seqs are one run of consecutive numbers, modulo 2^32, each used once. (Requests
# sent at once by different tasks may reach the server in another order than their seqs.)
seq_counts_up() {
	sed 's/^seq=\([0-9]*\) .*/\1/' "$REC" | awk '
		NR == 1 { base = $1 }
		{ off = ($1 - base + 4294967296) % 4294967296
		  if (seen[off]++) { bad = 1; print "seq " $1 " used twice" }
		  if (off > max) max = off }
		END { if (max != NR - 1) { bad = 1; print NR " requests span " max + 1 " seqs" }; exit bad }'
}

seq_wraps() {
	stop_server
	unload_module || fail "rmmod failed"
	insmod "$MODULE" first_seq=4294967293 || fail "insmod with first_seq failed"
	serve
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	dm status m0 >/dev/null
	remove_all
	head -n 5 "$REC"
	seq_counts_up || fail "seq does not count up by one across the wrap"
	grep -q "^seq=4294967295 " "$REC" && grep -q "^seq=0 " "$REC" || fail "the counter did not wrap"
	stop_server
	unload_module && load_module || fail "reload failed"
}

luid_unique_per_instance() {
	serve
	# Two tables naming one log UUID: two instances, told apart by luid.
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create m0 failed"
	dm create m1 --table "0 16384 mirror userspace 3 $UUID clustered-core 1024 2 /dev/ram2 0 /dev/ram3 0" || fail "create m1 failed"
	n=$(grep CTR "$REC" | sed 's/.*luid=\([0-9]*\) .*/\1/' | sort -u | wc -l)
	remove_all
	[ "$n" -eq 2 ] || fail "$n distinct luids for two instances"
}

# expect_create_refused WHY: a mirror create must fail.
expect_create_refused() {
	if create_mirror m0 "$UUID" clustered-core 1024 2>/tmp/create.err; then
		remove_all
		fail "table loaded despite $1"
	fi
	cat /tmp/create.err
	return 0
}

# expect_create_fails WHY: a mirror create must fail and the server must see the log destroyed:
# the last request it heard is a DTR naming the CTR's luid.
expect_create_fails() {
	expect_create_refused "$1"
	ctr=$(awk '$3 == "|CTR" { l = $2 } END { print l }' "$REC")
	last=$(awk 'END { print $2, $3 }' "$REC")
	[ -n "$ctr" ] || fail "the server heard no CTR before $1"
	[ "$last" = "$ctr |DTR" ] ||
		fail "no DTR after $1: the server keeps the log (last request: ${last:-none}, the CTR's $ctr)"
}

region_size_validated() {
	for v in 0 3 4294967296; do
		serve "get_region_size:u64=$v"
		mark_dmesg
		expect_create_fails "region size $v"
		new_dmesg | grep -q "region size $v" || { new_dmesg; fail "no message about region size $v"; }
	done
	serve "get_region_size:size=16"
	mark_dmesg
	expect_create_fails "a 16-byte region size reply"
	new_dmesg | grep -q "Insufficient space" || fail "no ENOSPC message"
}

ctr_device_name_validated() {
	serve "ctr:device-raw=1:2"
	mark_dmesg
	expect_create_fails "a device name without NUL"
	new_dmesg | grep -q "not properly terminated" || fail "no message about the unterminated name"
	serve "ctr:size=200"
	mark_dmesg
	expect_create_fails "a 200-byte device name"
	new_dmesg | grep -q "Insufficient space" || fail "no ENOSPC message"
	# A valid name is opened as a table dependency and released with the table.
	serve "ctr:device=1:2"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create with a log device failed"
	deps=$(dm deps m0)
	echo "$deps"
	remove_all
	case "$deps" in *"(1, 2)"*) ;; *) fail "log device 1:2 not among the table's dependencies" ;; esac
	# Released: another table can claim /dev/ram2 (1:2) for itself.
	dm create claim --table "0 8 linear /dev/ram2 0" || fail "the log device is still held after removal"
	dm remove claim
}

bare_ack_fails_the_request() {
	serve "ctr:ack=22"
	mark_dmesg
	# The server refused the CTR: it has no log to destroy.
	expect_create_refused "a NACK"
	new_dmesg | grep -E "failed to create log: -22" || { new_dmesg; fail "the ACK's error did not reach the CTR"; }
}

timeout_resends_with_new_seq_others_proceed() {
	serve "status_info:drop"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create m0 failed"
	dm create m1 --table "0 16384 mirror userspace 3 OTHER-UUID clustered-core 1024 2 /dev/ram2 0 /dev/ram3 0" || fail "create m1 failed"
	luid=$(first_luid "$REC")
	mark_dmesg
	start=$(now_ms)
	dm status m0 >/tmp/status0 &
	bg=$!
	sleep 1
	# The unanswered request blocks nobody else.
	t=$(now_ms)
	dm status m1 || fail "status of m1 failed"
	[ $(($(now_ms) - t)) -lt 5000 ] || fail "m1 waited behind m0's lost request"
	wait $bg || fail "status of m0 failed"
	took=$(($(now_ms) - start))
	cat /tmp/status0
	echo "m0 status took ${took} ms"
	[ "$took" -ge 14000 ] || fail "answered before the 15 s timeout"
	grep -q "clustered-core" /tmp/status0 || fail "m0's status lacks the server's INFO"
	new_dmesg | grep "Request timed out" || fail "no timeout message"
	seqs=$(grep "luid=$luid |STATUS_INFO" "$REC" | sed 's/^seq=\([0-9]*\) .*/\1/' | sort -u | wc -l)
	[ "$seqs" -eq 2 ] || fail "$seqs distinct seqs for one request sent twice"
	[ "$(log_stat "$luid" timeouts)" = 1 ] || fail "timeouts counter is not 1"
	remove_all
}

eagain_resends() {
	serve "status_info:errno=11"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	luid=$(first_luid "$REC")
	s=$(dm status m0) || fail "status failed"
	echo "$s"
	case "$s" in *" 1 clustered-core"*) ;; *) fail "status not from the resent request" ;; esac
	[ "$(count_requests "$REC" STATUS_INFO)" -eq 2 ] || fail "EAGAIN did not cause exactly one resend"
	[ "$(log_stat "$luid" eagain_resends)" = 1 ] || fail "eagain_resends counter is not 1"
	remove_all
}

# A server that keeps answering EAGAIN (a cluster minority does) is waited for no longer than
# max_server_wait, as a missing one is.
eagain_bounded_by_max_server_wait() {
	serve "status_info:errno=11*0"
	create_mirror m0 "$UUID" max_server_wait=2 clustered-core 1024 || fail "create failed"
	luid=$(first_luid "$REC")
	start=$(now_ms)
	timeout -s KILL 30 dmsetup status m0 >/tmp/status0 2>&1
	rc=$?
	took=$(($(now_ms) - start))
	cat /tmp/status0
	echo "status with EAGAIN every time: rc $rc after ${took} ms (bound 2 s); eagain_resends $(log_stat "$luid" eagain_resends), gave_up $(log_stat "$luid" gave_up)"
	remove_all
	[ "$rc" -ne 137 ] || fail "still resending after 30 s: max_server_wait does not bound EAGAIN"
	[ "$took" -ge 1900 ] || fail "gave up before the bound"
	grep -q "COM_FAILURE" /tmp/status0 || fail "the status does not show the log's failure"
}

stray_and_duplicate_replies_dropped() {
	serve "status_info:stray" "status_info:dup"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	before=$(transport_stat dropped_unmatched)
	dm status m0 | grep -q "1 clustered-core" || fail "status with a stray reply failed"
	dm status m0 | grep -q "1 clustered-core" || fail "status with a duplicated reply failed"
	dm status m0 | grep -q "1 clustered-core" || fail "status after the duplicate failed"
	after=$(transport_stat dropped_unmatched)
	echo "unmatched replies dropped: $before -> $after"
	[ $((after - before)) -eq 2 ] || fail "expected 2 unmatched replies dropped"
	remove_all
}

unprivileged_reply_ignored() {
	serve "status_info:unpriv"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	before=$(transport_stat dropped_unprivileged)
	start=$(now_ms)
	dm status m0 | grep -q "1 clustered-core" || fail "status failed"
	took=$(($(now_ms) - start))
	after=$(transport_stat dropped_unprivileged)
	echo "took ${took} ms; unprivileged replies dropped: $before -> $after"
	[ $((after - before)) -ge 1 ] || fail "the forged reply was not dropped as unprivileged"
	[ "$took" -ge 14000 ] || fail "the forged reply completed the request"
	remove_all
}

# A privileged process replying on a connected socket opened without CAP_SYS_ADMIN: netlink's
# semantics require both. The server sends that reply (a region size of 3) before the correct
# one.
unprivileged_socket_ignored() {
	serve "get_region_size:unpriv-socket"
	before=$(transport_stat dropped_unprivileged)
	create_mirror m0 "$UUID" clustered-core 1024 || fail "the reply from the unprivileged socket was taken"
	after=$(transport_stat dropped_unprivileged)
	echo "unprivileged replies dropped: $before -> $after"
	[ $((after - before)) -ge 1 ] || fail "the reply was not dropped as unprivileged"
	remove_all
}

status_info_failure_default() {
	serve "status_info:errno=5"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	s=$(dm status m0)
	echo "$s"
	remove_all
	case "$s" in *"userspace 1 COM_FAILURE"*) ;; *) fail "no COM_FAILURE status" ;; esac
}

failure_defaults_and_short_replies() {
	# A failed GET_SYNC_COUNT counts as 0 regions in sync, and so does a 4-byte answer.
	serve "get_sync_count:errno=5*0"
	create_mirror m0 "$UUID" clustered-core 1024 nosync || fail "create failed"
	failed=$(sync_ratio_of m0)
	serve "get_sync_count:size=4*0"
	create_mirror m0 "$UUID" clustered-core 1024 nosync || fail "create failed"
	mark_dmesg
	short=$(sync_ratio_of m0)
	new_dmesg | grep "malformed GET_SYNC_COUNT" || fail "no message about the short reply"
	serve
	create_mirror m0 "$UUID" clustered-core 1024 nosync || fail "create failed"
	good=$(sync_ratio_of m0)
	echo "in sync: $failed after an error, $short after a short reply, $good after a good one"
	remove_all
	[ "$failed" = 0/16 ] && [ "$short" = 0/16 ] || fail "failure and short reply do not read as 0"
	[ "$good" = 16/16 ] || fail "a nosync log does not read as in sync"
}

sync_ratio_of() { dm status "$1" | awk '{ print $7 }'; }

lying_data_size_dropped() {
	# data_size larger than the message: dropped as malformed, the request resent after 15 s.
	serve "status_info:data-size=4000"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	before=$(transport_stat dropped_malformed)
	dm status m0 | grep -q "1 clustered-core" || fail "status failed"
	after=$(transport_stat dropped_malformed)
	echo "malformed replies dropped: $before -> $after"
	remove_all
	[ $((after - before)) -eq 1 ] || fail "the lying reply was not dropped as malformed"
}

flush_group_failure_falls_back_to_single_regions() {
	# The first mark holds the mirror's worker for 2 s, so two writes meanwhile are marked
	# in one group; that group fails.
	serve "mark_region:delay=2000" "mark_region:errno=5"
	create_mirror m0 "$UUID" clustered-core 1024 nosync || fail "create failed"
	sleep 1
	n0=$(wc -l <"$REC")
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 oflag=direct 2>/dev/null &
	w0=$!
	sleep 0.7
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=$((4 * 128)) oflag=direct 2>/dev/null &
	w4=$!
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=$((5 * 128)) oflag=direct 2>/dev/null &
	w5=$!
	# Not a bare wait: the server is a background child too.
	wait $w0 $w4 $w5
	tail -n +$((n0 + 1)) "$REC" | cut -d'|' -f2- | grep -E "MARK_REGION|FLUSH"
	marks=$(tail -n +$((n0 + 1)) "$REC" | cut -d'|' -f2- | awk '$1 == "MARK_REGION" { print $5 }' | tr '\n' ' ')
	remove_all
	[ "$marks" = "n8 n16 n8 n8 " ] || fail "marks sent as '$marks', want one, a failing group of two, then one by one"
}

event_nr() { dm info m0 | awk '/Event number/ { print $3 }'; }

flush_failure_raises_event() {
	# Every FLUSH fails: the resync's own flushes come before the write's.
	serve "flush:errno=5*0"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	wait_in_sync m0 60 || fail "no sync"
	before=$(event_nr)
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 oflag=direct 2>/dev/null
	wait_for 5 sh -c "[ \$(dmsetup info m0 | awk '/Event number/ { print \$3 }') -gt $before ]" ||
		fail "no device-mapper event after a failed flush"
	echo "events: $before -> $(event_nr)"
	remove_all
}

# in_sync_requests_for read|write [LOG_TYPE]: the IN_SYNC requests for four reads or writes,
# one at a time, to four idle regions of a fresh mirror (log type clustered-core unless
# given); the server is started with $SERVER_ARGS. Sets LUID.
in_sync_requests_for() {
	serve
	create_mirror m0 "$UUID" "${2:-clustered-core}" 1024 || fail "create failed"
	wait_in_sync m0 60 || fail "no sync"
	sleep 1
	before=$(count_requests "$REC" IN_SYNC)
	for r in 3 5 7 9; do
		case $1 in
		read) dd if=/dev/mapper/m0 of=/dev/null bs=4k count=1 skip=$((r * 128)) iflag=direct ;;
		write) dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=$((r * 128)) oflag=direct ;;
		esac 2>/dev/null || fail "$1 failed"
		sleep 0.2
	done
	echo $(($(count_requests "$REC" IN_SYNC) - before))
	LUID=$(first_luid "$REC")
	remove_all
}

# Without the in-sync map, the map path may only ask without blocking (-EWOULDBLOCK, nothing
# sent); the worker then asks once per read.
in_sync_never_sent_from_map() {
	n=$(SERVER_ARGS=--no-in-sync-map in_sync_requests_for read) || fail "$n"
	[ "$n" -eq 4 ] || fail "$n IN_SYNC requests for 4 reads (want 4)"
}

# dm-raid1 asks IN_SYNC twice for a write to a region its region hash does not hold; the Rust
# module answers the second from the first (log/in_sync.rs) unless reuse_in_sync=0, and never
# for clustered-* logs. The server does not offer its in-sync map here.
in_sync_asked_once_per_write() {
	export SERVER_ARGS=--no-in-sync-map
	n=$(in_sync_requests_for write core) || fail "$n"
	echo "$n IN_SYNC requests for 4 writes ($VARIANT module, core log)"
	if [ "$VARIANT" = c ]; then
		[ "$n" -eq 8 ] || fail "$n IN_SYNC requests for 4 writes (upstream asks 8)"
		return
	fi
	[ "$n" -eq 4 ] || fail "$n IN_SYNC requests for 4 writes (want 4: one per write)"
	n=$(in_sync_requests_for write clustered-core) || fail "$n"
	echo "clustered-core: $n IN_SYNC requests for 4 writes"
	[ "$n" -eq 8 ] || fail "clustered-core: $n IN_SYNC requests for 4 writes (want 8: nothing kept in a cluster)"
	unload_module || fail "rmmod failed"
	insmod "$MODULE" reuse_in_sync=0 || fail "insmod reuse_in_sync=0 failed"
	n=$(in_sync_requests_for write core) || fail "$n"
	echo "reuse_in_sync=0: $n IN_SYNC requests for 4 writes"
	unload_module || fail "rmmod failed"
	load_module || fail "insmod failed"
	[ "$n" -eq 8 ] || fail "reuse_in_sync=0: $n IN_SYNC requests for 4 writes (want 8, as upstream)"
}

# A server that announces the in-sync map hands it over after RESUME (GET_IN_SYNC_RANGES), and
# the Rust module answers IN_SYNC about in-sync regions itself, on the map path too
# (uapi/in_sync_map.rs). Upstream's module ignores the announcement.
in_sync_answered_from_the_servers_map() {
	n=$(in_sync_requests_for write clustered-core) || fail "$n"
	echo "$n IN_SYNC requests for 4 writes ($VARIANT module, server with the map)"
	if [ "$VARIANT" = c ]; then
		[ "$n" -eq 8 ] || fail "$n IN_SYNC requests for 4 writes (upstream asks 8)"
		[ "$(count_requests "$REC" GET_IN_SYNC_RANGES)" -eq 0 ] || fail "upstream asked for the map"
		return
	fi
	ranges=$(count_requests "$REC" GET_IN_SYNC_RANGES)
	echo "GET_IN_SYNC_RANGES: $ranges"
	[ "$n" -eq 0 ] || fail "$n IN_SYNC requests for 4 writes to in-sync regions (want 0)"
	[ "$ranges" -ge 1 ] || fail "the map was never asked for"
	n=$(in_sync_requests_for read clustered-core) || fail "$n"
	[ "$n" -eq 0 ] || fail "$n IN_SYNC requests for 4 reads of in-sync regions (want 0)"
	unload_module || fail "rmmod failed"
	insmod "$MODULE" in_sync_map=0 || fail "insmod in_sync_map=0 failed"
	n=$(in_sync_requests_for write clustered-core) || fail "$n"
	ranges=$(count_requests "$REC" GET_IN_SYNC_RANGES)
	unload_module || fail "rmmod failed"
	load_module || fail "insmod failed"
	echo "in_sync_map=0: $n IN_SYNC requests for 4 writes, $ranges GET_IN_SYNC_RANGES"
	[ "$n" -eq 8 ] && [ "$ranges" -eq 0 ] || fail "in_sync_map=0 did not give upstream's requests"
}

# in_sync_after_write REGION: the IN_SYNC requests and map answers for one write to REGION of
# m0 ("requests answers").
in_sync_after_write() {
	before=$(count_requests "$REC" IN_SYNC)
	map_before=$(log_stat "$LUID" in_sync_from_map)
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=$(($1 * 128)) oflag=direct 2>/dev/null || fail "write failed"
	sleep 0.5
	echo "$(($(count_requests "$REC" IN_SYNC) - before)) $(($(log_stat "$LUID" in_sync_from_map) - map_before))"
}

# A withdrawal (what a cluster's server sends before a region goes out of sync elsewhere)
# makes the kernel ask the server again about every region; what it learns then is answered
# from the map again. A resume hands the whole map over again.
withdrawal_voids_the_map() {
	[ "$VARIANT" = c ] && { echo "upstream's module has no in-sync map"; return "$KSFT_SKIP"; }
	serve
	create_mirror m0 "$UUID" core 1024 || fail "create failed"
	wait_in_sync m0 60 || fail "no sync"
	sleep 1
	LUID=$(first_luid "$REC")
	set -- $(in_sync_after_write 3)
	echo "before the withdrawal: $1 IN_SYNC requests, $2 answers from the map"
	[ "$1" -eq 0 ] && [ "$2" -ge 1 ] || fail "the write was not answered from the map"
	withdrawals=$(transport_stat server_withdrawals)
	dm-ulog-hostile withdraw "$LUID" || fail "the withdrawal could not be sent"
	set -- $(in_sync_after_write 3)
	echo "after the withdrawal: $1 IN_SYNC requests, $2 answers from the map"
	# Asked once; dm-raid1's second question is answered from what the first one learned.
	[ "$1" -ge 1 ] || fail "the withdrawn region was answered from the map"
	[ "$(transport_stat server_withdrawals)" -eq $((withdrawals + 1)) ] || fail "the kernel did not count the withdrawal"
	set -- $(in_sync_after_write 3)
	echo "learned again: $1 IN_SYNC requests, $2 answers from the map"
	[ "$1" -eq 0 ] || fail "the region's new answer was not kept"
	# Region 5 was in the map before the withdrawal only: after it, only a hand-over can
	# put it back.
	dm-ulog-hostile withdraw "$LUID" || fail "the withdrawal could not be sent"
	dm suspend m0 && dm resume m0 || fail "suspend/resume failed"
	set -- $(in_sync_after_write 5)
	echo "after a resume: $1 IN_SYNC requests, $2 answers from the map"
	[ "$1" -eq 0 ] && [ "$2" -ge 1 ] || fail "the handed-over map did not answer"
	remove_all
}

# A withdrawal that arrives while the kernel waits for an IN_SYNC answer voids the answer it
# keeps for dm-raid1's second question about the region (log/in_sync.rs): the server's state
# may have changed in between, so that question goes to the server too. The server offers no
# map here, and withdraws (a fault) before its first IN_SYNC answer only.
withdrawal_voids_kept_answers() {
	[ "$VARIANT" = c ] && { echo "upstream's module keeps no answers"; return "$KSFT_SKIP"; }
	export SERVER_ARGS=--no-in-sync-map
	serve "in_sync:withdraw"
	# nosync: no resync, whose region hash asks IN_SYNC too; the first one is the write's.
	create_mirror m0 "$UUID" core 1024 nosync || fail "create failed"
	sleep 1
	LUID=$(first_luid "$REC")
	set -- $(in_sync_after_write 3)
	echo "write with a withdrawal during its first IN_SYNC: $1 IN_SYNC requests"
	first=$1
	set -- $(in_sync_after_write 5)
	echo "write without: $1 IN_SYNC requests"
	remove_all
	[ "$first" -eq 2 ] || fail "the kept answer outlived the withdrawal ($first requests, want 2)"
	[ "$1" -eq 1 ] || fail "$1 IN_SYNC requests without a withdrawal (want 1)"
}

# A withdrawal (in a cluster: a departed node's marked regions going out of sync) voids the
# in-sync hint: the mirror asks for resync work again, where with every region in sync it
# asked nothing; otherwise the withdrawn regions would never be recovered.
withdrawal_restarts_the_resync() {
	[ "$VARIANT" = c ] && { echo "upstream's module takes no withdrawals"; return "$KSFT_SKIP"; }
	serve
	create_mirror m0 "$UUID" core 1024 nosync || fail "create failed"
	# GET_SYNC_COUNT says every region is in sync: the hint covers them all.
	dm status m0 >/dev/null || fail "status failed"
	LUID=$(first_luid "$REC")
	write_region 3
	before=$(count_requests "$REC" GET_RESYNC_WORK)
	write_region 4
	[ "$(count_requests "$REC" GET_RESYNC_WORK)" -eq "$before" ] ||
		fail "resync work asked for with every region in sync"
	dm-ulog-hostile withdraw "$LUID" --first 5 --count 1 || fail "the withdrawal could not be sent"
	write_region 6
	n=$(($(count_requests "$REC" GET_RESYNC_WORK) - before))
	echo "$n GET_RESYNC_WORK requests after the withdrawal"
	remove_all
	[ "$n" -ge 1 ] || fail "no resync work asked for after the withdrawal: withdrawn regions stay unrecovered"
}

remote_recovering_rate_limited_and_hinted() {
	# No resync work ever: regions stay out of sync, so writes keep asking.
	serve "get_resync_work:size=16*0"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	sleep 1
	before=$(count_requests "$REC" IS_REMOTE_RECOVERING)
	start=$(now_ms)
	# Eight writers at once into region 12 for 3 s.
	fio --name=w --filename=/dev/mapper/m0 --rw=write --bs=4k --direct=1 --ioengine=psync \
		--numjobs=8 --group_reporting --offset=6M --size=256k --time_based --runtime=3 >/tmp/fio.out 2>&1 ||
		{ cat /tmp/fio.out; fail "fio failed"; }
	took=$(($(now_ms) - start))
	writes=$(sed -n 's/.*issued rwts: total=[0-9]*,\([0-9]*\),.*/\1/p' /tmp/fio.out)
	n=$(($(count_requests "$REC" IS_REMOTE_RECOVERING) - before))
	skipped=$(log_stat "$(first_luid "$REC")" recovery_queries_skipped)
	echo "$n IS_REMOTE_RECOVERING requests, $skipped answered from the rate limit, $writes writes in ${took} ms"
	remove_all
	[ "$n" -ge 1 ] || fail "never asked"
	[ "$n" -le $((took / 250 + 2)) ] || fail "more than one request per 250 ms"
	[ "$skipped" -gt 0 ] || fail "the rate limit never answered: it was not exercised"
	# In sync: the server's hint covers every region, and nothing more is asked.
	serve
	create_mirror m0 "$UUID" clustered-core 1024 nosync || fail "create failed"
	for _ in $(seq 10); do
		dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=1536 oflag=direct 2>/dev/null || fail "write failed"
		sleep 0.1
	done
	n=$(count_requests "$REC" IS_REMOTE_RECOVERING)
	remove_all
	[ "$n" -le 1 ] || fail "$n requests although the hint says all regions are in sync"
}

# A reply with the right seq but another log's luid, or another request type, answers nothing:
# the server sends one such (its payload a region size of 3) before the correct reply. A reply
# with luid 0 (cmirrord's) is taken.
reply_must_name_the_log_and_type() {
	for wrong in misaddressed mistyped; do
		serve "get_region_size:$wrong"
		dropped_before=$(transport_stat dropped_unmatched)
		create_mirror m0 "$UUID" clustered-core 1024 || fail "$wrong reply taken: create failed"
		[ "$(transport_stat dropped_unmatched)" -gt "$dropped_before" ] || fail "the $wrong reply was not dropped"
		remove_all
	done
	# Luid 0 names no log: cmirrord answers so once a request went through its cluster.
	serve "get_region_size:anonymous"
	create_mirror m0 "$UUID" clustered-core 1024 || fail "a reply with luid 0 was not taken"
	remove_all
}

# A feature word given twice would not read back from `dmsetup table` as it was loaded.
repeated_feature_refused() {
	serve
	mark_dmesg
	if create_mirror m0 "$UUID" integrated_flush integrated_flush clustered-core 1024; then
		remove_all
		fail "integrated_flush twice accepted"
	fi
	new_dmesg | grep -q "given twice" || fail "no 'given twice' message"
	[ -s "$REC" ] && fail "the server heard of the refused table"
	return 0
}

server_restart_reconnects() {
	serve
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	wait_in_sync m0 60 || fail "no sync"
	luid=$(first_luid "$REC")
	dd if=/dev/urandom of=/tmp/data bs=64k count=8 2>/dev/null
	kill_server
	mark_dmesg
	dd if=/tmp/data of=/dev/mapper/m0 bs=64k oflag=direct 2>/dev/null &
	writer=$!
	sleep 3
	restart_recording
	wait $writer || fail "the write failed across the restart"
	new_dmesg | grep -E "not found|Attempting|Reconnected"
	new_dmesg | grep -q "Reconnected to userspace log server" || fail "no reconnect message"
	# The new server first hears CTR (NUL-terminated) and RESUME, then the retried request.
	head -n 3 "$REC" | cut -d'|' -f2-
	set -- $(canonical "$REC" | head -n 2 | awk '{ print $1 }')
	[ "$1 $2" = "CTR RESUME" ] || fail "reconnect began with '$1 $2', not CTR RESUME"
	canonical "$REC" | head -n 1 | grep -q "$(hex_of "16384 clustered-core 1024")00\$" || fail "reconnect CTR not NUL-terminated"
	[ "$(log_stat "$luid" reconnects)" -ge 1 ] || fail "reconnects counter not counted"
	dd if=/dev/mapper/m0 bs=64k count=8 iflag=direct 2>/dev/null | cmp - /tmp/data || fail "data lost"
	remove_all
}

suspend_resume_not_retried_without_server() {
	serve
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	wait_in_sync m0 60 || fail "no sync"
	kill_server
	mark_dmesg
	start=$(now_ms)
	dm suspend m0 || fail "suspend failed"
	dm resume m0 || fail "resume failed"
	took=$(($(now_ms) - start))
	new_dmesg | tail -n 5
	echo "suspend + resume without a server: ${took} ms"
	restart_recording
	dm status m0
	remove_all
	[ "$took" -lt 1900 ] || fail "suspend/resume waited for a server"
}

# A held clear's lazy FLUSH that found no server waits 2 s between tries to reach one; a
# suspend in that pause ends the wait instead of sitting it out (seen: 2.3 s in CI).
suspend_ends_a_flush_waiting_for_the_server() {
	serve
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	wait_in_sync m0 60 || fail "no sync"
	mark_dmesg
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=256 oflag=direct 2>/dev/null || fail "write failed"
	# The write's clear is held for up to 3 s; the server goes before that.
	kill_server
	wait_for 20 in_new_dmesg "Attempting to contact" ||
		fail "the lazy FLUSH did not try to reach the server"
	# The FLUSH has just begun a 2 s pause.
	start=$(now_ms)
	dm suspend m0 || fail "suspend failed"
	took=$(($(now_ms) - start))
	dm resume m0 || fail "resume failed"
	new_dmesg | grep -E "not found|Attempting|not flushed" | tail -n 3
	echo "suspend during the lazy FLUSH's pause: ${took} ms"
	restart_recording
	remove_all
	[ "$took" -lt 1200 ] || fail "suspend sat out the FLUSH's pause between tries"
}

# An integrated_flush mirror whose first write has gone through: mirror_if UUID
mirror_if() {
	dm create m0 --table "0 16384 mirror userspace 4 $1 integrated_flush clustered-core 1024 2 /dev/ram0 0 /dev/ram1 0" || return 1
	dm mknodes m0
	wait_in_sync m0 60
}

integrated_flush_marks_ride_in_flush() {
	serve
	mirror_if "$UUID" || fail "create failed"
	n0=$(wc -l <"$REC")
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=$((6 * 128)) oflag=direct 2>/dev/null || fail "write failed"
	tail -n +$((n0 + 1)) "$REC" | cut -d'|' -f2-
	[ "$(tail -n +$((n0 + 1)) "$REC" | grep -c '|MARK_REGION')" -eq 0 ] || fail "MARK_REGION sent with integrated_flush"
	# Its entries, 16 hex digits each; held clears (bit 63) may ride with it.
	flushes_since "$n0" | tr ' ' '\n' | sed -n 's/^F://p' | fold -w 16 | grep -qx 0600000000000000 ||
		fail "no FLUSH carrying region 6"
	dm table m0 | grep -q "userspace 4 $UUID integrated_flush clustered-core 1024" || fail "table line lacks integrated_flush"
	remove_all
}

# Lines of $REC after line $1, canonical.
since() { tail -n +$(($1 + 1)) "$REC" | cut -d'|' -f2-; }

# Writes to region 2 and waits until its clear has been sent; prints the record's length before.
write_until_cleared() {
	n0=$(wc -l <"$REC")
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=256 oflag=direct 2>/dev/null || return 1
	wait_for 10 sh -c "tail -n +$((n0 + 1)) $REC | grep -q '|CLEAR_REGION'" || return 1
	echo "$n0"
}

# Upstream's clears with integrated_flush: sent at once, their FLUSH 3 s later. The Rust module
# does so with hold_clears=0 (clears_held_for_the_next_marks_flush has its default).
with_upstream_clears() {
	[ "$VARIANT" = c ] && return 0
	unload_module && insmod "$MODULE" hold_clears=0 || fail "insmod hold_clears=0 failed"
}
with_default_clears() {
	[ "$VARIANT" = c ] && return 0
	unload_module && load_module || fail "insmod failed"
}

integrated_flush_lazy_clear_flush() {
	with_upstream_clears
	serve
	mirror_if "$UUID" || fail "create failed"
	n0=$(write_until_cleared) || fail "no CLEAR_REGION after the write"
	cleared=$(wc -l <"$REC")
	sleep 1
	since "$n0"
	since "$cleared" | grep -q "^FLUSH .* n0 " && fail "clears flushed at once, not lazily"
	wait_for 6 sh -c "tail -n +$((cleared + 1)) $REC | grep -q '|FLUSH L1 v3 e0 n0 '" || fail "no lazy FLUSH within 7 s"
	since "$n0"
	remove_all
	with_default_clears
}

integrated_flush_early_at_postsuspend_and_dtr() {
	with_upstream_clears
	serve
	mirror_if "$UUID" || fail "create failed"
	write_until_cleared >/dev/null || fail "no CLEAR_REGION after the write"
	n1=$(wc -l <"$REC")
	dm suspend m0 || fail "suspend failed"
	since "$n1"
	[ "$(since "$n1" | awk '{ print $1 }' | tr '\n' ' ')" = "PRESUSPEND FLUSH POSTSUSPEND " ] ||
		fail "the pending FLUSH did not run between PRESUSPEND and POSTSUSPEND"
	dm resume m0 || fail "resume failed"
	write_until_cleared >/dev/null || fail "no CLEAR_REGION after the second write"
	n2=$(wc -l <"$REC")
	dm remove m0 || fail "remove failed"
	since "$n2"
	since "$n2" | awk '{ print $1 }' | tr '\n' ' ' | grep -q "FLUSH .*DTR $" || fail "no FLUSH before DTR"
	with_default_clears
}

# flushes_since LINE: the MARK_REGION, CLEAR_REGION and FLUSH requests after line LINE of the
# record, as "TYPE:regions" words (FLUSH's regions are its marks).
flushes_since() {
	since "$1" | awk '$1 ~ /^(MARK_REGION|CLEAR_REGION|FLUSH)$/ {
		r = ""; for (i = 8; i <= NF; i++) if ($i != "-") r = r $i
		printf "%s:%s ", substr($1, 1, 1), r }'
}

# write_region R: one 4 KiB write to region R of m0 (1024-sector regions), then a pause that
# lets its clear be recorded.
write_region() {
	dd if=/dev/zero of=/dev/mapper/m0 bs=4k count=1 seek=$(($1 * 128)) oflag=direct 2>/dev/null || fail "write failed"
	sleep 0.5
}

# held_clear_stream [MODULE_PARAMS]: the flush stream (flushes_since) of three writes to a core
# log, to regions 2, 4 and 4, and what follows within 4 s; then the log's clears_cancelled.
held_clear_stream() {
	if [ "$VARIANT" = rust ]; then
		# shellcheck disable=SC2086
		unload_module && insmod "$MODULE" $1 || fail "insmod $1 failed"
	fi
	serve
	create_mirror m0 "$UUID" core 1024 || fail "create failed"
	wait_in_sync m0 60 || fail "no sync"
	sleep 4
	n0=$(wc -l <"$REC")
	write_region 2
	write_region 4
	write_region 4
	sleep 4
	stream=$(flushes_since "$n0")
	cancelled=$(log_stat "$(first_luid "$REC")" clears_cancelled 2>/dev/null)
	remove_all
	echo "$stream$cancelled"
}

# Held clears (log/flush.rs), without an idle time (clear_idle_ms=0; the default's is the next
# test's): a flush with only clears sends nothing; the clears go out with
# the next FLUSH that carries marks, or with their own FLUSH 3 s later, and a new mark of the
# region cancels its clear and is not sent (the server still holds the region marked). With a
# server that takes them (uapi/clears_in_flush.rs) they ride inside that FLUSH. Upstream sends
# each clear with a FLUSH of its own at once, and every mark.
clears_held_for_the_next_marks_flush() {
	r2=0200000000000000 r4=0400000000000000 c2=0200000000000080 c4=0400000000000080
	upstream="M:$r2 F: C:$r2 F: M:$r4 F: C:$r4 F: M:$r4 F: C:$r4 F: "
	if [ "$VARIANT" = c ]; then
		got=$(held_clear_stream)
		echo "upstream: $got"
		[ "$got" = "$upstream" ] || fail "not upstream's stream"
		return
	fi
	got=$(held_clear_stream clear_idle_ms=0) || fail "$got"
	echo "clear_idle_ms=0: $got"
	[ "$got" = "M:$r2 F: M:$r4 F:$c2 F:$c4 1" ] || fail "clears did not ride in the FLUSH (one cancelled, its mark not sent)"
	got=$(held_clear_stream "clear_idle_ms=0 clears_in_flush=0") || fail "$got"
	echo "clear_idle_ms=0 clears_in_flush=0: $got"
	[ "$got" = "M:$r2 F: C:$r2 M:$r4 F: C:$r4 F: 1" ] || fail "clears were not held (one cancelled, its mark not sent)"
	got=$(held_clear_stream hold_clears=0) || fail "$got"
	echo "hold_clears=0: $got"
	load_module_default
	[ "$got" = "${upstream}0" ] || fail "hold_clears=0 is not upstream's stream"
}

load_module_default() { unload_module && load_module || fail "insmod failed"; }

# With an idle time (clear_idle_ms), a held clear waits until its region has gone that long
# without a write, as md's bitmap waits daemon_sleep. A recovered region's clear stands for
# no mark: a write right after the recovery is marked. Two regions written in turn for 3 s take
# one MARK and FLUSH each, and their clears come once they have been idle for 4 s, in one FLUSH
# (clears due within a second of each other go together). Without it (clear_idle_ms=0) every
# write would mark again: the other region's marks take its clear along. (The default, 3000,
# is shorter than a turn may take here under TCG, hence 4000.)
clears_wait_for_their_regions_idle_time() {
	[ "$VARIANT" = c ] && { echo "upstream's module holds no clears"; return "$KSFT_SKIP"; }
	r2=0200000000000000 r4=0400000000000000 c2=0200000000000080 c4=0400000000000080
	unload_module && insmod "$MODULE" clear_idle_ms=4000 || fail "insmod clear_idle_ms=4000 failed"
	serve
	create_mirror m0 "$UUID" core 1024 || fail "create failed"
	wait_in_sync m0 60 || fail "no sync"
	# Region 6 was just recovered: dm-region-hash cleared it, although it was never marked,
	# and that clear is held. A write now must still be marked.
	n0=$(wc -l <"$REC")
	write_region 6
	after_recovery=$(flushes_since "$n0")
	echo "a write right after its region's recovery: $after_recovery"
	case $after_recovery in
	*"M:0600000000000000 "*) ;;
	*) fail "a write right after its region's recovery went out without a mark" ;;
	esac
	# Every held clear sent.
	sleep 5
	n0=$(wc -l <"$REC")
	# The longest a region went without a write (one turn), against the idle time less the
	# second by which a clear may go early.
	longest=0
	for _ in 1 2 3; do
		start=$(now_ms)
		write_region 2
		write_region 4
		turn=$(($(now_ms) - start))
		[ "$turn" -gt "$longest" ] && longest=$turn
	done
	busy=$(flushes_since "$n0")
	sleep 6
	stream=$(flushes_since "$n0")
	cancelled=$(log_stat "$(first_luid "$REC")" clears_cancelled)
	remove_all
	load_module_default
	echo "while written (turns of at most ${longest} ms): $busy"
	echo "then: $stream; clears cancelled: $cancelled"
	[ "$longest" -lt 3000 ] || fail "a turn took ${longest} ms: the regions were idle long enough between writes"
	[ "$busy" = "M:$r2 F: M:$r4 F: " ] || fail "a region written again within its idle time was marked again, or a clear went early"
	# Region 4's clear falls due about 0.5 s after region 2's: within the second, both in one
	# FLUSH (a slow guest may push it past the second: then a FLUSH each).
	case $stream in
	"M:$r2 F: M:$r4 F: F:$c2$c4 " | "M:$r2 F: M:$r4 F: F:$c2 F:$c4 ") ;;
	*) fail "the clears did not come once their regions were idle" ;;
	esac
	# Region 6's, then two of each region's.
	[ "$cancelled" = 5 ] || fail "$cancelled clears cancelled, want 5"
}

# Held clears are sent, with a FLUSH, when the mirror suspends and when the log is destroyed
# (inside it, with a server that takes them there).
held_clears_sent_at_suspend_and_dtr() {
	[ "$VARIANT" = c ] && { echo "upstream's module holds no clears"; return "$KSFT_SKIP"; }
	serve
	mirror_if "$UUID" || fail "create failed"
	sleep 4
	held_clear_sent_by suspend "PRESUSPEND FLUSH POSTSUSPEND "
	dm resume m0 || fail "resume failed"
	held_clear_sent_by remove "PRESUSPEND FLUSH POSTSUSPEND DTR "
}

# held_clear_sent_by OP STREAM: writes region 2 of m0 (its clear is then held), runs dmsetup OP
# on m0, and checks the request types that follow (STREAM) and that the FLUSH carried the clear.
held_clear_sent_by() {
	write_region 2
	n=$(wc -l <"$REC")
	dm "$1" m0 || fail "$1 failed"
	stream=$(since "$n" | awk '{ print $1 }' | tr '\n' ' ')
	echo "$1: $stream $(flushes_since "$n")"
	[ "$stream" = "$2" ] && [ "$(flushes_since "$n")" = "F:0200000000000080 " ] ||
		fail "the held clear was not sent in a FLUSH at $1"
}

# A server that takes the log over without announcing itself (cmirrord, dm-ulogd
# --no-announce) gets upstream's protocol, whatever the one before announced: no clears in a
# FLUSH (it would refuse them as regions out of range, failing the flush) and no in-sync map.
extensions_forgotten_for_a_server_that_did_not_announce() {
	[ "$VARIANT" = c ] && { echo "upstream's module uses no extension"; return "$KSFT_SKIP"; }
	serve
	mirror_if "$UUID" || fail "create failed"
	# The resync's clears made durable: nothing held when the server goes.
	sleep 4
	luid=$(first_luid "$REC")
	echo "features announced: $(transport_stat server_features)"
	[ "$(transport_stat server_features)" -ne 0 ] || fail "the first server announced no features"
	kill_server
	SERVER_ARGS=--no-announce restart_recording
	write_region 2
	write_region 4
	sleep 4
	flushes=$(flushes_since 0)
	echo "features now: $(transport_stat server_features); flushes: $flushes"
	failures=$(log_stat "$luid" failures)
	remove_all
	[ "$(count_requests "$REC" CTR)" -ge 1 ] || fail "the log was not re-created on the new server"
	echo "$flushes" | grep -q "80 " && fail "a clear rode in a FLUSH to a server that did not take them"
	# One failed: the new server answered ESRCH, and the log re-created itself there.
	[ "$failures" -le 1 ] || fail "$failures requests failed"
	[ "$(count_requests "$REC" GET_IN_SYNC_RANGES)" -eq 0 ] || fail "the in-sync map was asked for"
	return 0
}

debugfs_counters_match_the_record() {
	serve
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	dd if=/dev/urandom of=/dev/mapper/m0 bs=64k count=4 oflag=direct 2>/dev/null
	wait_in_sync m0 60 || fail "no sync"
	dm status m0 >/dev/null
	luid=$(first_luid "$REC")
	log_block "$luid"
	cat /sys/kernel/debug/dm_log_userspace/transport
	log_block "$luid" | grep -q "^uuid $UUID\$" || fail "uuid missing"
	for t in CTR GET_REGION_SIZE MARK_REGION CLEAR_REGION FLUSH GET_SYNC_COUNT STATUS_INFO; do
		want=$(count_requests "$REC" "$t")
		got=$(log_stat "$luid" "requests.$t")
		[ "$got" = "$want" ] || fail "requests.$t is $got, the server saw $want"
	done
	[ "$(log_stat "$luid" requests)" = "$(wc -l <"$REC")" ] || fail "total differs from the record"
	[ "$(log_stat "$luid" latency_max_us)" -gt 0 ] || fail "no latency measured"
	remove_all
	luids | grep -qx "$luid" && fail "the log's block in $LOGS_FILE outlived it"
	return 0
}

teardown() {
	[ -f /tmp/dm-ulogd.pid ] || restart_recording
	remove_all
	stop_server
	cat /tmp/dm-ulogd.log | grep -E "fault|WARN|ERROR" | head -n 40
	unload_module || fail "rmmod failed"
}
