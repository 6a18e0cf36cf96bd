# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# Helpers for the in-guest suites: KTAP output with kselftest's conventions (result codes,
# "# Totals:" line, exit codes) and the module/mirror operations the tests share.

# kselftest's result and exit codes (tools/testing/selftests/kselftest/ktap_helpers.sh).
KSFT_PASS=0
KSFT_FAIL=1
KSFT_XFAIL=2
KSFT_XPASS=3
KSFT_SKIP=4

# A test's output, per suite process: a suite may run another (the kselftest suite does).
ktap_out=/tmp/ktap-test.$$.out
ktap_n=0
ktap_plan=0
ktap_cnt_pass=0
ktap_cnt_fail=0
ktap_cnt_xfail=0
ktap_cnt_skip=0

ktap_header() {
	ktap_plan=$1
	echo "KTAP version 1"
	echo "1..$1"
}

ktap_print_totals() {
	echo "# Totals: pass:$ktap_cnt_pass fail:$ktap_cnt_fail xfail:$ktap_cnt_xfail xpass:0 skip:$ktap_cnt_skip error:0"
}

# ktap_skip_all REASON: nothing of the suite can run here (kselftest's skip: exit 4).
ktap_skip_all() {
	echo "KTAP version 1"
	echo "1..0 # SKIP $*"
	ktap_print_totals
	exit "$KSFT_SKIP"
}

# ktap_bail_out REASON: the suite cannot go on (a setup or teardown step failed).
ktap_bail_out() {
	echo "Bail out! $*"
	ktap_print_totals
	exit "$KSFT_FAIL"
}

# Exits with kselftest's code for what ran: fail if a test failed or a planned one did not
# run, skip if every test skipped, else pass.
ktap_finished() {
	ktap_print_totals
	if [ "$ktap_cnt_fail" -gt 0 ] || [ "$ktap_n" -ne "$ktap_plan" ]; then
		exit "$KSFT_FAIL"
	elif [ "$ktap_plan" -gt 0 ] && [ "$ktap_cnt_skip" -eq "$ktap_plan" ]; then
		exit "$KSFT_SKIP"
	fi
	exit "$KSFT_PASS"
}

# ktap_exec CMD...: runs CMD in a subshell under the per-test time limit, its output shown as
# KTAP diagnostics and kept in $ktap_out; sets rc to its exit code.
ktap_exec() {
	("$@") >"$ktap_out" 2>&1 &
	tpid=$!
	# A hung test fails alone instead of taking the suite's time limit.
	(
		sleep "${TEST_TIMEOUT:-300}"
		echo "FAIL: timed out after ${TEST_TIMEOUT:-300}s (blocked tasks: see the console)" >>"$ktap_out"
		# The kernel shows where every blocked task waits.
		echo w >/proc/sysrq-trigger
		for p in /proc/[0-9]*; do
			read -r _ comm state _ <"$p/stat" 2>/dev/null && [ "$state" != S ] || [ "$comm" != "(sh)" ] &&
				echo "  ${p#/proc/} $comm $state $(cat "$p/wchan" 2>/dev/null)"
		done 2>/dev/null | grep -v "kworker\|ksoftirq\|migration\|rcu_\|cpuhp\|kthreadd" >>"$ktap_out"
		kill -9 "$tpid"
		# Its workload must not go on under the next tests.
		killall -9 fio dd 2>/dev/null
	) >/dev/null 2>&1 &
	# (Not on the suite's output: a runner that reads it through a pipe, as kselftest's does,
	# would wait for the watchdog's `sleep` to end after every test.)
	wpid=$!
	wait "$tpid"
	rc=$?
	kill "$wpid" 2>/dev/null
	sed 's/^/# /' "$ktap_out"
}

# ktap_run NAME CMD...: runs one test and prints its result line.
ktap_run() {
	name=$1
	shift
	ktap_n=$((ktap_n + 1))
	ktap_exec "$@"
	case $rc in
	"$KSFT_PASS")
		ktap_cnt_pass=$((ktap_cnt_pass + 1))
		echo "ok $ktap_n $name"
		;;
	"$KSFT_XFAIL")
		ktap_cnt_xfail=$((ktap_cnt_xfail + 1))
		echo "ok $ktap_n $name # XFAIL $(tail -n 1 "$ktap_out")"
		;;
	"$KSFT_SKIP")
		ktap_cnt_skip=$((ktap_cnt_skip + 1))
		echo "ok $ktap_n $name # SKIP $(tail -n 1 "$ktap_out")"
		;;
	*)
		ktap_cnt_fail=$((ktap_cnt_fail + 1))
		echo "not ok $ktap_n $name"
		;;
	esac
}

# ktap_step NAME CMD...: a setup or teardown step, not a test: its success is no result, a
# skip (teardown after a known upstream bug) is noted, a failure bails out of the suite.
ktap_step() {
	name=$1
	shift
	ktap_exec "$@"
	case $rc in
	"$KSFT_PASS") echo "# $name: done" ;;
	"$KSFT_SKIP") echo "# $name: skipped: $(tail -n 1 "$ktap_out")" ;;
	*) ktap_bail_out "$name failed: $(tail -n 1 "$ktap_out")" ;;
	esac
}

# Ends the current test (each runs in a subshell) as failed.
fail() {
	echo "FAIL: $*"
	exit "$KSFT_FAIL"
}

# upstream_bug WHY MESSAGE: ends the current test as failed; with the C module, where the
# failure is a known upstream bug, as an expected failure (KTAP XFAIL) that names it.
upstream_bug() {
	if [ "$VARIANT" = c ]; then
		echo "FAIL: $2"
		echo "known upstream bug in the C module: $1"
		exit "$KSFT_XFAIL"
	fi
	fail "$2"
}

# Where the modules are (tests/README.md): the project's guest keeps them in /modules
# (rust/, c/, extra/ and VARIANT, the one the suites test); elsewhere DMLU_KO, DMLU_C_KO,
# DMLU_EXTRA_KO_DIR and DMLU_VARIANT say.
DMLU_MODULES=${DMLU_MODULES:-/modules}
if [ -z "${DMLU_VARIANT:-}" ]; then
	DMLU_VARIANT=rust
	[ -r "$DMLU_MODULES/VARIANT" ] && DMLU_VARIANT=$(cat "$DMLU_MODULES/VARIANT")
fi
DMLU_KO=${DMLU_KO:-$DMLU_MODULES/rust/dm_log_userspace.ko}
if [ -z "${DMLU_C_KO:-}" ]; then
	DMLU_C_KO=$DMLU_MODULES/c/dm_log_userspace.ko
	# Upstream's module as the running kernel ships it (not modinfo's pick: with this project's
	# module installed, depmod prefers that one, which has the same name).
	if [ ! -e "$DMLU_C_KO" ]; then
		for f in /lib/modules/"$(uname -r)"/kernel/drivers/md/dm-log-userspace.ko*; do
			[ -e "$f" ] && DMLU_C_KO=$f && break
		done
	fi
fi
DMLU_EXTRA_KO_DIR=${DMLU_EXTRA_KO_DIR:-$DMLU_MODULES/extra}

# module_file rust|c: that variant's module file.
module_file() {
	if [ "$1" = c ]; then echo "$DMLU_C_KO"; else echo "$DMLU_KO"; fi
}

# use_variant rust|c: the module the following load_module loads.
use_variant() {
	VARIANT=$1
	MODULE=$(module_file "$1")
}
use_variant "$DMLU_VARIANT"

load_module() { insmod "$MODULE"; }
unload_module() { rmmod dm_log_userspace; }
module_loaded() { grep -q '^dm_log_userspace ' /proc/modules; }

# mark_dmesg writes a unique marker line to the kernel log; new_dmesg prints what came after
# it. Unlike a line count, a marker still works once the log buffer is full.
mark_dmesg() {
	echo "dmlu: mark $(cat /proc/sys/kernel/random/uuid)" >/tmp/dmesg.mark
	cat /tmp/dmesg.mark >/dev/kmsg
}
new_dmesg() { dmesg | sed -n "\|$(cat /tmp/dmesg.mark)|,\$p" | tail -n +2; }
# in_new_dmesg PATTERN: a line after the marker matches (for wait_for).
in_new_dmesg() { new_dmesg | grep -q "$1"; }

dm() { dmsetup --noudevsync "$@"; }

# A mirror table over two RAM disks with a userspace log: mirror_table UUID [LOG ARGS...]
mirror_table() {
	uuid=$1
	shift
	set -- "$uuid" "$@"
	echo "0 16384 mirror userspace $# $* 2 /dev/ram0 0 /dev/ram1 0"
}

# start_server [PROGRAM [ARGS...]]: a log server (default dm-ulogd) in the background; every
# server of a run logs to /tmp/dm-ulogd.log. Returns once it has joined the connector group.
start_server() {
	prog=dm-ulogd
	if [ $# -gt 0 ]; then
		prog=$1
		shift
	fi
	# The guest runs no corosync (but a cluster guest's): dm-ulogd serves clustered-* logs
	# on this node alone.
	[ "$prog" = dm-ulogd ] && [ -z "${DMLU_NODE:-}" ] && set -- --single-node "$@"
	touch /tmp/dm-ulogd.log
	before=$(wc -l </tmp/dm-ulogd.log)
	"$prog" --foreground --log "${DMULOGD_LOG:-info}" "$@" >>/tmp/dm-ulogd.log 2>&1 &
	echo $! >/tmp/dm-ulogd.pid
	for _ in $(seq 100); do
		tail -n +$((before + 1)) /tmp/dm-ulogd.log | grep -q "listening" && return 0
		kill -0 "$(cat /tmp/dm-ulogd.pid)" 2>/dev/null || break
		sleep 0.1
	done
	tail -n +$((before + 1)) /tmp/dm-ulogd.log
	return 1
}

# Stops the server: SIGTERM (which it refuses while it serves logs), then SIGKILL after 3 s.
stop_server() {
	[ -f /tmp/dm-ulogd.pid ] || return 0
	pid=$(cat /tmp/dm-ulogd.pid)
	kill "$pid" 2>/dev/null
	for _ in $(seq 30); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	wait_for 10 gone "$pid"
	rm -f /tmp/dm-ulogd.pid
}

# restart_recording [FAULT...]: a fresh dm-ulog-hostile that records every request to $REC
# and injects the faults (--fault TYPE:ACTION); mirrors are left alone.
restart_recording() {
	stop_server
	rm -f "$REC"
	args=""
	for f in "$@"; do args="$args --fault $f"; done
	# shellcheck disable=SC2086
	start_server dm-ulog-hostile --record "$REC" ${SERVER_ARGS:-} $args || fail "dm-ulog-hostile did not start"
}

# Kills the server as a crash would, and waits until it is gone (a server started by an
# earlier test is not this shell's child, so `wait` alone returns at once).
kill_server() {
	pid=$(cat /tmp/dm-ulogd.pid)
	kill -9 "$pid"
	wait "$pid" 2>/dev/null
	wait_for 10 gone "$pid"
	rm -f /tmp/dm-ulogd.pid
}

# gone PID: the process has exited (or is a zombie nobody has waited for yet).
gone() {
	! kill -0 "$1" 2>/dev/null || [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = Z ]
}

# A request record (dm-ulogd --record): one line per request, "seq=S luid=L |TYPE Lk vV eE nN
# uuid=U pad=P PAYLOAD". canonical FILE prints what is comparable across runs and modules.
canonical() { cut -d'|' -f2- "$1"; }
# count_requests FILE TYPE
count_requests() { canonical "$1" | awk -v t="$2" '$1 == t' | wc -l; }
# The raw luid of the first request in FILE.
first_luid() { sed -n '1s/.*luid=\([0-9]*\) .*/\1/p' "$1"; }
# Hex of a string, as the record prints payloads.
hex_of() { printf '%s' "$1" | od -An -tx1 -v | tr -d ' \n'; }

# The module's debugfs file of every log's counters (stats.rs): a block each, from "log LUID".
LOGS_FILE=/sys/kernel/debug/dm_log_userspace/logs
# luids: the luids of the logs that exist, oldest first (none without the Rust module).
luids() { awk '$1 == "log" { print $2 }' "$LOGS_FILE" 2>/dev/null; }
# log_block LUID: that log's lines of $LOGS_FILE.
log_block() { awk -v l="$1" '$1 == "log" { cur = $2; next } cur == l && NF' "$LOGS_FILE"; }
# log_stat LUID NAME: one of a log's debugfs counters.
log_stat() { log_block "$1" | awk -v k="$2" '$1 == k { print $2 }'; }
# transport_stat NAME: one of the transport's debugfs counters.
transport_stat() { awk -v k="$1" '$1 == k { print $2 }' /sys/kernel/debug/dm_log_userspace/transport; }

# Milliseconds since boot.
now_ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }

# wait_for SECONDS CMD...: polls CMD every 0.1 s until it succeeds.
wait_for() {
	n=$(($1 * 10))
	shift
	for _ in $(seq "$n"); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# create_mirror NAME UUID LOGARGS...: creates the device and its node.
create_mirror() {
	name=$1
	shift
	dm create "$name" --table "$(mirror_table "$@")" || return 1
	dm mknodes "$name"
	[ -b "/dev/mapper/$name" ] || { echo "/dev/mapper/$name is not a block device"; return 1; }
}

# many_mirrors NAME UUID SECTORS: 64 nosync mirrors NAME0..NAME63 of SECTORS sectors each, side
# by side over /dev/ram0 and /dev/ram1, with core logs UUID-0..UUID-63.
many_mirrors() {
	i=0
	while [ "$i" -lt 64 ]; do
		off=$((i * $3))
		dm create "$1$i" --table "0 $3 mirror userspace 4 $2-$i core 256 nosync 2 /dev/ram0 $off /dev/ram1 $off" ||
			{ echo "mirror $i failed"; return 1; }
		i=$((i + 1))
	done
	dm mknodes
}

# scratch_disk N: the device of the scratch disk with serial dmlu-scratchN (scripts/vm-run.sh
# attaches two to the mirror suite's guest: virtio, volatile write cache); fails if absent.
scratch_disk() {
	for serial in /sys/block/vd*/serial; do
		[ "$(cat "$serial" 2>/dev/null)" = "dmlu-scratch$1" ] || continue
		dev=${serial%/serial}
		echo "/dev/${dev##*/}"
		return 0
	done
	return 1
}

# Waits until the mirror reports every region in sync (at most $2 seconds, default 60).
wait_in_sync() {
	for _ in $(seq $((${2:-60} * 10))); do
		ratio=$(dm status "$1" | awk '{ print $7 }')
		[ "${ratio%/*}" = "${ratio#*/}" ] && return 0
		sleep 0.1
	done
	echo "not in sync after ${2:-60}s: $(dm status "$1")"
	return 1
}

# Both legs hold the same first $1 MiB.
legs_identical() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	a=$(dd if=/dev/ram0 bs=1M count="$1" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
	b=$(dd if=/dev/ram1 bs=1M count="$1" iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
	echo "leg 0: $a"
	echo "leg 1: $b"
	[ "$a" = "$b" ]
}

# kmemleak, after two scans, reports nothing (skips on kernels without it).
kmemleak_reports_nothing() {
	[ -e /sys/kernel/debug/kmemleak ] || { echo "kmemleak not in this kernel"; return "$KSFT_SKIP"; }
	# kmemleak reports only blocks older than 5 s.
	sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	echo scan >/sys/kernel/debug/kmemleak
	leaks=$(cat /sys/kernel/debug/kmemleak)
	[ -z "$leaks" ] || { echo "$leaks" | head -40; fail "kmemleak reports leaks"; }
}

# detector_reports PLANT REGEX: loads the throwaway module planting bug PLANT
# (tests/detectors) and checks that the kernel log shows REGEX.
detector_reports() {
	mark_dmesg
	insmod "$DMLU_EXTRA_KO_DIR/dmlu_detectors.ko" plant="$1" || fail "insmod failed"
	new_dmesg | grep -A12 -E "$2" | head -16
	new_dmesg | grep -qE "$2" || fail "no report matching /$2/"
}
