# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# dm-ulogd as a mirror needs it: every log type carries I/O through write, read-back,
# suspend/resume and a server crash (SIGKILL) and restart, with identical legs afterwards; a
# disk log resumes from its device, in the kernel's own on-disk format (both ways); signals;
# the library's example server serves a mirror in dm-ulogd's place.

TESTS="setup log_core log_clustered_core log_disk log_clustered_disk
kernel_disk_log_read_by_server server_disk_log_read_by_kernel sigterm_refused_while_logs_exist
sigusr1_status_dump longest_ctr_string_survives_restart minimal_server_serves_a_mirror teardown
kmemleak_reports_nothing"

UUID=SERVER-UUID-0001
LOGDEV=/dev/ram4

setup() {
	load_module || fail "insmod failed"
	start_server || fail "dm-ulogd did not start"
	dd if=/dev/urandom of=/tmp/data bs=1M count=4 2>/dev/null
}

# sync_ratio DEV: "in-sync/total" regions from the mirror's status.
sync_ratio() { dm status "$1" | awk '{ print $7 }'; }

zero_logdev() { dd if=/dev/zero of="$LOGDEV" bs=64k count=1 oflag=direct 2>/dev/null; }

# survives TYPE [ARGS...]: the whole life of a mirror with that log type.
survives() {
	type=$1
	shift
	zero_logdev
	create_mirror m0 "$UUID" "$type" "$@" || fail "create with $type failed"
	dm table m0
	dd if=/tmp/data of=/dev/mapper/m0 bs=1M oflag=direct 2>/dev/null || fail "write failed"
	echo 3 >/proc/sys/vm/drop_caches
	dd if=/dev/mapper/m0 bs=1M count=4 iflag=direct 2>/dev/null | cmp - /tmp/data || fail "read-back differs"
	wait_in_sync m0 120 || fail "no sync"
	dm suspend m0 && dm resume m0 || fail "suspend/resume failed"
	wait_in_sync m0 60 || fail "no sync after resume"
	# Crash and restart; the next request re-attaches the log (CTR, RESUME).
	kill_server
	start_server || fail "restart failed"
	after=$(sync_ratio m0)
	echo "in sync after the restart: $after"
	case "$type" in
	*disk) [ "${after%/*}" = "${after#*/}" ] || fail "a disk log lost its state in the restart" ;;
	*core) [ "${after%/*}" != "${after#*/}" ] || fail "a core log claims sync it cannot know" ;;
	esac
	dd if=/tmp/data of=/dev/mapper/m0 bs=1M seek=4 oflag=direct 2>/dev/null || fail "write after restart failed"
	wait_in_sync m0 120 || fail "no sync after the restart"
	legs_identical 8 || fail "legs differ"
	dd if=/dev/ram1 bs=1M skip=4 count=4 iflag=direct 2>/dev/null | cmp - /tmp/data || fail "leg 1 lacks the data"
	dm remove m0 || fail "remove failed"
}

log_core() { survives core 1024; }
log_clustered_core() { survives clustered-core 1024; }
log_disk() { survives disk "$LOGDEV" 1024; }
log_clustered_disk() { survives clustered-disk "$LOGDEV" 1024; }

# The first bytes of the log device: header, padding and bitmap.
logdev_bytes() { dd if="$LOGDEV" bs=4k count=1 iflag=direct 2>/dev/null | od -An -tx1 -v | md5sum; }

# One history, either log: new log, full resync, a write, clean removal.
# history TABLE_LOG_PART
history() {
	dm create m0 --table "0 16384 mirror $1 2 /dev/ram0 0 /dev/ram1 0" || return 1
	dm mknodes m0
	wait_in_sync m0 120 || return 1
	dd if=/tmp/data of=/dev/mapper/m0 bs=64k count=4 seek=9 oflag=direct 2>/dev/null || return 1
	dm remove m0
}

kernel_disk_log_read_by_server() {
	zero_logdev
	history "disk 2 $LOGDEV 1024" || fail "the kernel's disk log failed"
	shown=$(dm-ulogd disk-show "$LOGDEV")
	echo "kernel wrote: $shown"
	[ "$shown" = "magic=ok version=2 nr_regions=16 clean=16" ] || fail "server reads the kernel's log as '$shown'"
	kernel=$(logdev_bytes)
	# The server's log on that device starts in sync: no resync.
	create_mirror m0 "$UUID" clustered-disk "$LOGDEV" 1024 || fail "create failed"
	first=$(sync_ratio m0)
	dm remove m0
	[ "$first" = 16/16 ] || fail "the server resynced a clean kernel log ($first)"
	# The same history through the server leaves the same bytes.
	zero_logdev
	history "userspace 4 $UUID clustered-disk $LOGDEV 1024" || fail "the server's disk log failed"
	[ "$(logdev_bytes)" = "$kernel" ] || fail "the server's bytes differ from the kernel's"
	echo "identical on-disk bytes after the same history"
}

server_disk_log_read_by_kernel() {
	zero_logdev
	history "userspace 4 $UUID clustered-disk $LOGDEV 1024" || fail "the server's disk log failed"
	dm-ulogd disk-show "$LOGDEV"
	dm create m0 --table "0 16384 mirror disk 2 $LOGDEV 1024 2 /dev/ram0 0 /dev/ram1 0" || fail "kernel disk log refused the server's device"
	first=$(sync_ratio m0)
	dm status m0
	dm remove m0
	[ "$first" = 16/16 ] || fail "the kernel resynced a clean server log ($first)"
}

server_pid() { cat /tmp/dm-ulogd.pid; }

sigterm_refused_while_logs_exist() {
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	kill -TERM "$(server_pid)"
	sleep 1
	kill -0 "$(server_pid)" 2>/dev/null || fail "dm-ulogd exited under a live log"
	grep -i "refus" /tmp/dm-ulogd.log | tail -n 1
	dm status m0 | grep -q clustered-core || fail "the server stopped answering"
	dm remove m0 || fail "remove failed"
	pid=$(server_pid)
	kill -TERM "$pid"
	wait_for 5 sh -c "! kill -0 $pid 2>/dev/null" || fail "dm-ulogd did not exit without logs"
	rm -f /tmp/dm-ulogd.pid
	start_server || fail "restart failed"
}

sigusr1_status_dump() {
	create_mirror m0 "$UUID" clustered-core 1024 || fail "create failed"
	wait_in_sync m0 60 || fail "no sync"
	n=$(wc -l </tmp/dm-ulogd.log)
	kill -USR1 "$(server_pid)"
	sleep 1
	tail -n +$((n + 1)) /tmp/dm-ulogd.log
	tail -n +$((n + 1)) /tmp/dm-ulogd.log | grep "uuid=$UUID" | grep -q "in_sync=16" || fail "no status line for the log"
	tail -n +$((n + 1)) /tmp/dm-ulogd.log | grep -q "requests.*GET_SYNC_COUNT.*p99=" || fail "no request statistics"
	dm remove m0
}

longest_ctr_string_survives_restart() {
	# "16384 clustered-disk <path> 1024" of exactly 332 bytes, the whole request payload: the
	# path is 306 characters (upstream cannot re-send it after a restart and loops).
	dir=/tmp/$(printf '%0250d' 0)
	mkdir -p "$dir"
	path=$dir/$(printf '%050d' 0)
	ln -sf "$LOGDEV" "$path"
	zero_logdev
	create_mirror m0 "$UUID" clustered-disk "$path" 1024 || fail "create with a 332-byte CTR string failed"
	wait_in_sync m0 120 || fail "no sync"
	kill_server
	start_server || fail "restart failed"
	dd if=/tmp/data of=/dev/mapper/m0 bs=1M count=1 oflag=direct 2>/dev/null || fail "write after restart failed"
	dm status m0 || fail "status after restart failed"
	grep -c "log created" /tmp/dm-ulogd.log
	legs_identical 8 || fail "legs differ"
	dm remove m0 || fail "remove failed"
}

# The library's example (server/examples/minimal_server.rs) in place of dm-ulogd: a mirror with
# a core log syncs, takes writes with identical legs, and goes away.
minimal_server_serves_a_mirror() {
	stop_server
	n=$(wc -l </tmp/dm-ulogd.log)
	start_server minimal_server || fail "minimal_server did not start"
	create_mirror m0 "$UUID" core 1024 || fail "create failed"
	dd if=/tmp/data of=/dev/mapper/m0 bs=1M oflag=direct 2>/dev/null || fail "write failed"
	wait_in_sync m0 120 || fail "no sync"
	dm status m0
	dm status m0 | grep -q " 16/16 1 AA .* core" || fail "status is not in sync with the server's log: $(dm status m0)"
	legs_identical 8 || fail "legs differ"
	dd if=/dev/ram1 bs=1M count=4 iflag=direct 2>/dev/null | cmp - /tmp/data || fail "leg 1 lacks the data"
	dm remove m0 || fail "remove failed"
	tail -n +$((n + 1)) /tmp/dm-ulogd.log | grep -q "log created" || fail "minimal_server did not log the creation"
	stop_server
	start_server || fail "dm-ulogd did not start again"
}

teardown() {
	dm remove m0 2>/dev/null
	stop_server
	grep -E "ERROR" /tmp/dm-ulogd.log && fail "the server logged errors"
	unload_module || fail "rmmod failed"
}
