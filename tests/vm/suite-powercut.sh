# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# Power cuts, every crash point, with a volatile write cache on every device: the two legs and
# the disk log of a mirror are slices of one device that dm-log-writes records (its log on a
# second RAM disk), and the block layer's completion events (ftrace) say which slice each
# flush went to. fio writes (hot and cold regions, queue depth 4, during the initial resync,
# across suspend/resume and a table reload); then dm-ulog-crashcheck replays the record entry
# by entry and, in every state a power cut could have left (per device: what its last flush
# made durable, any of its later writes lost, any version of the log written since its last
# flush on media), checks region by region that no region whose legs may differ is clean in
# the on-disk log. Each replay must exercise that check (legs that may differ, a valid log)
# at least FLOOR times, or it proved nothing.
# Configurations: the kernel's own `disk` log (the baseline, Rust run only), and `disk` and
# `clustered-disk` userspace logs served by dm-ulogd, with and without integrated_flush,
# with held clears off, with the server SIGKILLed and restarted during the writes, and with
# a server that dies right after answering a MARK_REGION, before the FLUSH that would have
# made it durable (dm-ulog-hostile's `exit` fault), replaced by dm-ulogd.
# Each test prints "unmarked differing regions: N" (N must be 0) and the replay's counts.
# The suite also serves tests/vm/suite-detect-powercut.sh (DETECT=1): bugs planted in the
# module or the server, each of which the replay must find.

if [ -z "${DETECT:-}" ]; then
	TESTS="setup power_cut_replay_kernel_disk power_cut_replay_disk
power_cut_replay_disk_integrated_flush power_cut_replay_disk_hold_clears_off
power_cut_replay_clustered_disk power_cut_replay_clustered_disk_integrated_flush
power_cut_replay_disk_server_killed power_cut_replay_disk_server_dies_after_mark
power_cut_replay_clustered_disk_integrated_flush_server_killed teardown"
fi

# The least (crash point, region) pairs with legs that may differ and a valid log per replay.
FLOOR=${FLOOR:-1000}
# The least clean-dirty-clean cycles of regions' durable bits per replay (the least seen: 299).
MIN_CYCLES=${MIN_CYCLES:-50}
# The MARK_REGION requests the dying server answers before the one it dies after: late enough
# that the cold job's regions were cleaned on the log device in its first pause (a mark of a
# region still dirty there, as during the initial resync, whose clears wait their idle time
# too, hides a lost mark: at 8, a module forgetting the dead server's marks went uncaught
# with 137 cycles), early enough to come: the cold job marks about 35 regions a burst, four
# bursts.
DIE_AFTER=${DIE_AFTER:-60}
# What each of fio's two jobs writes.
IO_SIZE=${IO_SIZE:-1M}
# The cold job pauses this long after every 64 writes: longer than the module's default idle
# time for clears (clear_idle_ms, 3 s; a clear may go up to a second early, with its leg
# flush and FLUSH), so its regions are cleaned between bursts and written again
# (clean-dirty-clean cycles, which a workload shorter than the idle time never shows: none
# were seen before the pauses).
COLD_PAUSE=${COLD_PAUSE:-4s}
TRACEFS=/sys/kernel/tracing
BACKING=/dev/ram5
RECDEV=/dev/ram6
# Slices of the recorded device, in sectors: two 4 MiB legs and a 1 MiB log; 64 KiB regions.
LEG=8192
LOGLEN=2048
REGION=128

setup() {
	load_module || fail "insmod failed"
	start_server || fail "dm-ulogd did not start"
}

# with_module_args [ARG...]: the module loaded again with these parameters (the server too).
with_module_args() {
	stop_server
	unload_module || fail "rmmod failed"
	insmod "$MODULE" "$@" || fail "insmod $* failed"
	start_server || fail "dm-ulogd did not start"
}

# recorded_mirror LOGSPEC...: the slices over a fresh dm-log-writes device, and the mirror
# (TABLE: its table, for reloads); the flush trace starts before the mirror's first I/O.
recorded_mirror() {
	dd if=/dev/zero of="$BACKING" bs=1M count=10 oflag=direct 2>/dev/null
	dd if=/dev/zero of="$RECDEV" bs=1M count=1 oflag=direct 2>/dev/null
	unrecord
	dm create lw --table "0 $((2 * LEG + LOGLEN)) log-writes $BACKING $RECDEV" || return 1
	dm mknodes lw
	dm create pleg0 --table "0 $LEG linear /dev/mapper/lw 0" &&
		dm create pleg1 --table "0 $LEG linear /dev/mapper/lw $LEG" &&
		dm create plog --table "0 $LOGLEN linear /dev/mapper/lw $((2 * LEG))" || return 1
	dm mknodes
	SLICES=$(for d in pleg0 pleg1 plog; do dm info -c --noheadings -o major,minor "$d"; done | tr '\n' ',')
	SLICES=${SLICES%,}
	trace_flushes || return 1
	TABLE="0 $LEG mirror $* 2 /dev/mapper/pleg0 0 /dev/mapper/pleg1 0"
	dm create pm --table "$TABLE" || return 1
	dm mknodes
}

# Starts recording every flush's completion (ftrace block_bio_complete, preflushes only).
trace_flushes() {
	[ -d "$TRACEFS/events" ] || mount -t tracefs nodev "$TRACEFS" || return 1
	ev=$TRACEFS/events/block/block_bio_complete
	[ -f "$ev/enable" ] || { echo "no block_bio_complete event in this kernel"; return 1; }
	echo 0 >"$TRACEFS/tracing_on"
	echo 0 >"$ev/enable"
	echo 8192 >"$TRACEFS/buffer_size_kb"
	echo 'rwbs ~ "F*"' >"$ev/filter" || return 1
	: >"$TRACEFS/trace"
	echo 1 >"$ev/enable"
	echo 1 >"$TRACEFS/tracing_on"
}

# Stops the flush trace and keeps it in /tmp/flush.trace; fails if events were lost.
stop_trace() {
	echo 0 >"$TRACEFS/tracing_on"
	echo 0 >"$TRACEFS/events/block/block_bio_complete/enable"
	cat "$TRACEFS/trace" >/tmp/flush.trace
	lost=$(cat "$TRACEFS"/per_cpu/cpu*/stats 2>/dev/null | awk '/^overrun:/ { n += $2 } END { print n + 0 }')
	[ "$lost" -eq 0 ] || { echo "the flush trace lost $lost events"; return 1; }
}

# Removes the mirror and the slices; dm-log-writes then writes its last entries and super.
unrecord() {
	for d in pm pleg0 pleg1 plog lw; do dm remove "$d" 2>/dev/null; done
	return 0
}

# workload: while the mirror resyncs, fio writes a hot area (4 regions, rewritten over and
# over) and a cold one (random, verified, fsync every 32 writes, a pause of $COLD_PAUSE after
# every 64), four writes in flight each;
# the mirror is suspended and resumed, then reloaded (a new log instance), under the writes;
# with $kill `kill`, the server is SIGKILLed and restarted twice as well; with `dies`, the
# server (started dying) is replaced by dm-ulogd as soon as it is gone.
workload() {
	if [ "$kill" = dies ]; then
		# The replacement waits for the death in the background: the writes, suspend and
		# reload stall until a server is back.
		dying=$(cat /tmp/dm-ulogd.pid)
		(wait_for 120 gone "$dying" && start_server >/dev/null) &
		rpid=$!
	fi
	fio --ioengine=libaio --iodepth=4 --direct=1 --bs=4k --rw=randwrite \
		--name=hot --filename=/dev/mapper/pm --offset=0 --size=256k --io_size="$IO_SIZE" --norandommap \
		--name=cold --filename=/dev/mapper/pm --offset=1M --size=3M --io_size="$IO_SIZE" --fsync=32 \
		--thinktime="$COLD_PAUSE" --thinktime_blocks=64 \
		--verify=crc32c --verify_fatal=1 >/tmp/fio.out 2>&1 &
	fpid=$!
	sleep 1
	bounded suspend_resume || fail "suspend/resume under the writes failed"
	sleep 1
	bounded reload_resume || fail "reload under the writes failed"
	if [ "$kill" = kill ]; then
		for _ in 1 2; do
			sleep 1
			kill_server
			start_server || fail "dm-ulogd did not restart"
		done
	fi
	wait_for 90 gone "$fpid" || stuck "the writes did not finish after the server restarts"
	wait "$fpid" || { tail -n 20 /tmp/fio.out; fail "fio failed"; }
	if [ "$kill" = dies ]; then
		wait "$rpid" || fail "the server did not die at its MARK_REGION, or its replacement did not start"
		grep -q "fault exit" /tmp/dm-ulogd.log || fail "the dying server left no word of its exit"
	fi
}

suspend_resume() { dm suspend pm && dm resume pm; }
reload_resume() { dm reload pm --table "$TABLE" && dm resume pm; }

# bounded FUNCTION: a table operation under the writes, which a server that never comes back
# (or a module that cannot reach the new one) would hang for good: judged as stuck then.
bounded() {
	"$1" &
	bpid=$!
	wait_for 90 gone "$bpid" || stuck "$1 did not finish after the server restarts"
	wait "$bpid"
}

# stuck MESSAGE: the mirror's I/O stopped after the server restarts. What was recorded until
# then is still judged (a mark makes dm-log-writes write its entry count); then the test ends,
# with the C module as its known upstream bug. Where the I/O stops depends on the timing: in
# the writes, or in the next request from the mirror's worker (the read after them).
stuck() {
	dm message lw 0 mark stuck
	STUCK=1 replay
	upstream_bug "its reconnect CTR has no room for a disk log's device name, so it retries for ever" "$1"
}

# Replays the record and checks every crash point; prints the result line of $name.
replay() {
	stop_trace || [ -n "${STUCK:-}" ] || fail "the flush trace is incomplete"
	out=$(dm-ulog-crashcheck replay --record "$RECDEV" --leg0 "0:$LEG" --leg1 "$LEG:$LEG" \
		--log "$((2 * LEG)):$LOGLEN" --region "$REGION" --trace /tmp/flush.trace \
		--slices "$SLICES" --floor "$FLOOR" --min-cycles "$MIN_CYCLES")
	rc=$?
	echo "$out"
	# One line for tests/results/power-cut.md (scripts/power-cut-report.py).
	field() { echo "$out" | sed -n "s/.* $1=\([0-9]*\).*/\1/p"; }
	echo "power-cut replay $name server_killed=$([ -n "$kill" ] && echo 1 || echo 0)" \
		"crash_points=$(field crash_points) legs_may_differ=$(field points_legs_may_differ)" \
		"log_valid=$(field points_log_valid) exercised=$(field exercised) cycles=$(field cycles)" \
		"dirty_max=$(field dirty_max) dirty_mean=$(echo "$out" | sed -n 's/.* dirty_mean=\([0-9.]*\).*/\1/p')" \
		"unmarked=$(echo "$out" | sed -n 's/^unmarked differing regions: //p')"
	# A stuck mirror's record ends where it hung, its trace later: judged by the bug it hit.
	echo "$out" | grep -q "^unmarked differing regions: " || [ -n "${STUCK:-}" ] || fail "the replay did not run"
	[ "$rc" -ne 2 ] || [ -n "${STUCK:-}" ] || fail "the invariant was exercised fewer than $FLOOR times, or regions were cleaned fewer than $MIN_CYCLES times: nothing was proved"
	if [ "$rc" -ne 0 ]; then
		[ -n "${DETECT:-}" ] && return 1
		why="it never flushes the legs before a clear (flush_callback_fn unused)"
		[ "$kill" = dies ] && why="$why, and never sends the marks a dead server answered to the next one"
		upstream_bug "$why" \
			"a power cut could leave a differing region marked clean"
	fi
	[ -z "${DETECT:-}" ] || return 0
}

# cut_and_check "module=M config=C" [kill|dies] LOGSPEC...: records the workload on a mirror
# with that log, then checks every crash point of the record. `dies`: dm-ulog-hostile serves
# the log until it has answered DIE_AFTER marks and one more, then dies (see workload).
cut_and_check() {
	name=$1
	shift
	if dm ls | grep -q "^pm"; then
		echo "the mirror of an earlier test is stuck (its known upstream bug above)"
		exit "$KSFT_SKIP"
	fi
	kill=
	case "$1" in kill | dies) kill=$1 && shift ;; esac
	if [ "$kill" = dies ]; then
		stop_server
		start_server dm-ulog-hostile --fault "mark_region:delay=0*$DIE_AFTER" \
			--fault mark_region:exit || fail "dm-ulog-hostile did not start"
	fi
	recorded_mirror "$@" || fail "the recorded mirror could not be built"
	workload
	# After a server restart the idle mirror resyncs only when its worker next runs (as
	# upstream): a read wakes it.
	dd if=/dev/mapper/pm of=/dev/null bs=1M iflag=direct 2>/dev/null &
	wait_for 60 gone $! || stuck "the read after the writes did not finish"
	wait_in_sync pm 120 || fail "no sync after the writes"
	dm status pm
	unrecord
	replay
}

# The userspace log's table arguments: userspace_log TYPE [integrated_flush].
userspace_log() {
	type=$1
	shift
	set -- PCUT-UUID-0001 "$@" "$type" /dev/mapper/plog "$REGION"
	echo "userspace $# $*"
}

power_cut_replay_kernel_disk() {
	[ "$VARIANT" = c ] && { echo "the kernel's own log runs once, in the Rust module's run"; exit "$KSFT_SKIP"; }
	cut_and_check "module=kernel config=kernel-disk" disk 2 /dev/mapper/plog "$REGION"
}
M="module=$VARIANT config"
power_cut_replay_disk() { cut_and_check "$M=disk" $(userspace_log disk); }
power_cut_replay_disk_integrated_flush() {
	cut_and_check "$M=disk+integrated_flush" $(userspace_log disk integrated_flush)
}
power_cut_replay_clustered_disk() { cut_and_check "$M=clustered-disk" $(userspace_log clustered-disk); }
power_cut_replay_clustered_disk_integrated_flush() {
	cut_and_check "$M=clustered-disk+integrated_flush" $(userspace_log clustered-disk integrated_flush)
}
power_cut_replay_disk_hold_clears_off() {
	[ "$VARIANT" = rust ] || { echo "hold_clears: a parameter of the Rust module"; exit "$KSFT_SKIP"; }
	with_module_args hold_clears=0
	cut_and_check "$M=disk+hold_clears=0" $(userspace_log disk)
	with_module_args
}
power_cut_replay_disk_server_killed() { cut_and_check "$M=disk" kill $(userspace_log disk); }
power_cut_replay_disk_server_dies_after_mark() {
	cut_and_check "$M=disk+server_dies_after_mark" dies $(userspace_log disk)
}
power_cut_replay_clustered_disk_integrated_flush_server_killed() {
	cut_and_check "$M=clustered-disk+integrated_flush" kill $(userspace_log clustered-disk integrated_flush)
}

teardown() {
	if dm ls | grep -q "^pm"; then
		echo "the mirror of an earlier test is stuck (its known upstream bug above)"
		exit "$KSFT_SKIP"
	fi
	unrecord
	stop_server
	unload_module || fail "rmmod failed"
}
