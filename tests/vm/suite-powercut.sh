# shellcheck shell=sh
# Power cuts, every crash point: the two legs and the disk log of a mirror are slices of one
# device that dm-log-writes records (its log on a second RAM disk). fio writes with verify;
# then dm-ulog-crashcheck replays the record entry by entry and, in every state a power cut
# could have left, checks that each region whose legs differ is dirty in the on-disk log.
# Configurations: the kernel's own `disk` log (the baseline, Rust run only), and `disk` and
# `clustered-disk` userspace logs served by dm-ulogd, with and without integrated_flush, and
# with the server SIGKILLed and restarted during the writes.
# Each test prints "unmarked differing regions: N" (N must be 0) and the replay's counts.

TESTS="setup power_cut_replay_kernel_disk power_cut_replay_disk
power_cut_replay_disk_integrated_flush power_cut_replay_clustered_disk
power_cut_replay_clustered_disk_integrated_flush power_cut_replay_disk_server_killed
power_cut_replay_clustered_disk_integrated_flush_server_killed teardown"

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

# recorded_mirror LOGSPEC...: the slices over a fresh dm-log-writes device, and the mirror.
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
	dm create pm --table "0 $LEG mirror $* 2 /dev/mapper/pleg0 0 /dev/mapper/pleg1 0" || return 1
	dm mknodes
}

# Removes the mirror and the slices; dm-log-writes then writes its last entries and super.
unrecord() {
	for d in pm pleg0 pleg1 plog lw; do dm remove "$d" 2>/dev/null; done
	return 0
}

# workload [kill]: random writes with verify over the mirror (fsync every 32 writes); with
# `kill`, the server is SIGKILLed and restarted twice during them.
workload() {
	fio --name=w --filename=/dev/mapper/pm --rw=randwrite --bs=4k --direct=1 --ioengine=psync \
		--size=4M --io_size=2M --fsync=32 --verify=crc32c --verify_fatal=1 >/tmp/fio.out 2>&1 &
	fpid=$!
	if [ -n "$kill" ]; then
		for _ in 1 2; do
			sleep 1
			kill_server
			start_server || fail "dm-ulogd did not restart"
		done
	fi
	wait_for 60 gone "$fpid" || stuck "the writes did not finish after the server restarts"
	wait "$fpid" || { tail -n 20 /tmp/fio.out; fail "fio failed"; }
}

# stuck MESSAGE: the mirror's I/O stopped after the server restarts. What was recorded until
# then is still judged (a mark makes dm-log-writes write its entry count); then the test ends,
# with the C module as its known upstream bug. Where the I/O stops depends on the timing: in
# the writes, or in the next request from the mirror's worker (the read after them).
stuck() {
	dm message lw 0 mark stuck
	replay
	upstream_bug "its reconnect CTR has no room for a disk log's device name, so it retries for ever" "$1"
}

# Replays the record and checks every crash point; prints the result line of $name.
replay() {
	out=$(dm-ulog-crashcheck replay --record "$RECDEV" --leg0 "0:$LEG" --leg1 "$LEG:$LEG" \
		--log "$((2 * LEG)):$LOGLEN" --region "$REGION")
	rc=$?
	echo "$out"
	# One line for tests/results/power-cut.md (scripts/power-cut-report.py).
	echo "power-cut replay $name server_killed=$([ -n "$kill" ] && echo 1 || echo 0)" \
		"crash_points=$(echo "$out" | sed -n 's/.*crash_points=\([0-9]*\).*/\1/p')" \
		"unmarked=$(echo "$out" | sed -n 's/^unmarked differing regions: //p')"
	echo "$out" | grep -q "^unmarked differing regions: " || fail "the replay did not run"
	[ "$rc" -eq 0 ] || fail "a power cut could leave a differing region marked clean"
}

# cut_and_check "module=M config=C" [kill] LOGSPEC...: records the workload on a mirror with
# that log, then checks every crash point of the record.
cut_and_check() {
	name=$1
	shift
	if dm ls | grep -q "^pm"; then
		echo "the mirror of an earlier test is stuck (its known upstream bug above)"
		exit "$KSFT_SKIP"
	fi
	kill=
	[ "$1" = kill ] && { kill=kill; shift; }
	recorded_mirror "$@" || fail "the recorded mirror could not be built"
	wait_in_sync pm 120 || fail "no initial sync"
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
power_cut_replay_disk_server_killed() { cut_and_check "$M=disk" kill $(userspace_log disk); }
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
