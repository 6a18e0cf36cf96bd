# shellcheck shell=sh
# make bench (scripts/bench.sh): every configuration measured in one boot of the perf kernel,
# back to back and interleaved round by round, so that ratios between them mean something
# even under TCG. Not a test suite: nothing here judges a figure; a test fails only when a
# measurement could not be taken. Each figure is one "BENCH kind=... key=value ..." line in
# the KTAP diagnostics, read by bench/report.py; progress goes to the console.
#
# - request_roundtrip: the bare connector ping-pong (bench/pingpong, echoed by
#   `dm-ulog-bench echo`) and timed status ioctls on a mirror with the kernel's core log, the
#   C module's and the Rust module's userspace log (each status: GET_SYNC_COUNT + STATUS_INFO);
# - randwrite_round_N: fio on a two-leg mirror over /dev/ram0 and /dev/ram1, random 4 KiB
#   writes at iodepth 1 and 8 with 1 and 4 jobs and one sequential case, for the core log and
#   both modules with and without integrated_flush;
# - scaling_round_N: 64 mirrors over 1 MiB slices of /dev/ram2 and /dev/ram3 (kernel memory
#   per mirror from /proc/meminfo before and after creating them, also with the core log),
#   then 1, 8 and 64 of them written at once, counting the log requests dm-ulogd answers per
#   second.
#
# The measurements run on one vCPU (setup takes CPU 1 offline, after one ping-pong on both).

TESTS="setup request_roundtrip_round_1 randwrite_round_1 scaling_round_1
request_roundtrip_round_2 randwrite_round_2 scaling_round_2
request_roundtrip_round_3 randwrite_round_3 scaling_round_3
request_roundtrip_round_4 randwrite_round_4 scaling_round_4 teardown"
ROUNDS=4
# One test may take a while under TCG: a round of fio cases is about two minutes.
TEST_TIMEOUT=900

# The mirror of the fio cases: all of ram0/ram1 (64 MiB), regions of 512 KiB.
SECTORS=131072
REGION=1024
FIO_RUNTIME=3
CONFIGS="core c c_if rust rust_if"
CASES="rand_qd1_j1 rand_qd8_j1 rand_qd1_j4 rand_qd8_j4 seq_qd8_j1"
PINGS=5000
STATUS_COUNT=3000
STATUS_WARMUP=200
# Scaling: mirrors of 1 MiB with regions of 128 KiB.
SCALE_SECTORS=2048
SCALE_REGION=256
SCALE_RUNTIME=8
SCALE_WINDOW_START=3
SCALE_WINDOW=4

progress() { echo "dmlu-bench: $*" >/dev/console; }
bench() { echo "BENCH $*"; }

# The module loaded and served by dm-ulogd: ensure_module c|rust. The state outlives the
# test's subshell in /tmp/bench.loaded.
ensure_module() {
	have=$(cat /tmp/bench.loaded 2>/dev/null || echo none)
	[ "$have" = "$1" ] && return 0
	if [ "$have" != none ]; then
		stop_server
		unload_module || return 1
		echo none >/tmp/bench.loaded
	fi
	use_variant "$1"
	load_module || return 1
	start_server || return 1
	echo "$1" >/tmp/bench.loaded
}

# server_counts: the requests dm-ulogd has answered so far, "TOTAL TYPE=N TYPE=N ...", from a
# fresh SIGUSR1 status dump (one "requests TYPE count=N ..." line per type seen).
server_counts() {
	[ -f /tmp/dm-ulogd.pid ] || { echo 0; return; }
	n=$(grep -c "requests unknown=" /tmp/dm-ulogd.log)
	kill -USR1 "$(cat /tmp/dm-ulogd.pid)"
	for _ in $(seq 1000); do
		[ "$(grep -c "requests unknown=" /tmp/dm-ulogd.log)" -gt "$n" ] && break
		sleep 0.01
	done
	[ "$(grep -c "requests unknown=" /tmp/dm-ulogd.log)" -gt "$n" ] || { echo "no status dump from dm-ulogd"; return 1; }
	awk '/status: [0-9]+ logs/ { total = 0; line = "" }
		/ requests [A-Z_]+ count=/ {
			for (i = 1; i < NF; i++) if ($i == "requests") t = $(i + 1)
			for (i = 1; i <= NF; i++) if ($i ~ /^count=/) c = substr($i, 7)
			total += c
			line = line " " t "=" c
		}
		END { print total + 0 line }' /tmp/dm-ulogd.log
}

# counts_delta BEFORE AFTER: "TOTAL TYPE:N,TYPE:N" of the requests between two server_counts.
counts_delta() {
	echo "$1|$2" | awk -F'|' '{
		n = split($1, a, " ")
		for (i = 2; i <= n; i++) { split(a[i], kv, "="); b[kv[1]] = kv[2] }
		m = split($2, c, " ")
		out = ""
		for (i = 2; i <= m; i++) {
			split(c[i], kv, "=")
			d = kv[2] - b[kv[1]]
			if (d) out = out (out == "" ? "" : ",") kv[1] ":" d
		}
		print c[1] - a[1], (out == "" ? "none" : out)
	}'
}

# Devices a failed measurement left behind would block the next ones.
remove_leftovers() {
	dm remove_all >/dev/null 2>&1
	true
}

# A mirror's table: mirror_line CONFIG UUID SECTORS REGION LEG0 LEG1 OFFSET
mirror_line() {
	case $1 in
	core) log="core 2 $4 nosync" ;;
	c | rust) log="userspace 4 $2 core $4 nosync" ;;
	c_if | rust_if) log="userspace 5 $2 integrated_flush core $4 nosync" ;;
	esac
	echo "0 $3 mirror $log 2 $5 $7 $6 $7"
}

module_of() {
	case $1 in
	c | c_if) echo c ;;
	rust | rust_if) echo rust ;;
	*) cat /tmp/bench.loaded ;;
	esac
}

# fio_case DEVICE CASE: one fio run; prints "iops ios clat_mean_us clat_p50_us clat_p99_us".
fio_case() {
	case $2 in
	rand_qd1_j1) rw=randwrite qd=1 jobs=1 ;;
	rand_qd8_j1) rw=randwrite qd=8 jobs=1 ;;
	rand_qd1_j4) rw=randwrite qd=1 jobs=4 ;;
	rand_qd8_j4) rw=randwrite qd=8 jobs=4 ;;
	seq_qd8_j1) rw=write qd=8 jobs=1 ;;
	esac
	fio --name=b --filename="/dev/mapper/$1" --rw=$rw --bs=4k --direct=1 --ioengine=libaio \
		--iodepth=$qd --numjobs=$jobs --thread --group_reporting --norandommap --randrepeat=0 \
		--time_based --runtime=$FIO_RUNTIME --output-format=terse --terse-version=3 >/tmp/fio.out 2>&1 ||
		{ cat /tmp/fio.out; return 1; }
	# terse v3, write side: 47 KiB, 49 IOPS, 57 clat mean, 65 and 71 clat p50 and p99 (us).
	awk -F';' 'NF > 80 { sub(/.*=/, "", $65); sub(/.*=/, "", $71); print $49, int($47 / 4), $57, $65, $71; exit }' /tmp/fio.out
}

setup() {
	bench "kind=env kernel=$(uname -r) cpus=$(nproc) mem_kb=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)" \
		"clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" \
		"fio=$(fio --version) rounds=$ROUNDS fio_runtime_s=$FIO_RUNTIME region_sectors=$REGION" \
		"scale_region_sectors=$SCALE_REGION pings=$PINGS status_count=$STATUS_COUNT"
	fio --enghelp 2>/dev/null | grep -qw libaio || fail "the guest's fio has no libaio engine"
	# Every page of the RAM disks exists before any timing: brd allocates on first write.
	for d in 0 1 2 3; do
		dd if=/dev/zero of=/dev/ram$d bs=1M count=64 2>/dev/null || fail "cannot fill /dev/ram$d"
	done
	insmod /modules/extra/dmlu_pingpong.ko || fail "insmod dmlu_pingpong failed"
	# Under TCG on a small, shared host a wake-up that crosses vCPUs waits until the host
	# runs the other vCPU's thread: milliseconds, which would drown every figure here. This
	# ping-pong shows it; the rest runs on one vCPU.
	pingpong_run two_vcpus || fail "the ping-pong failed"
	echo 0 >/sys/devices/system/cpu/cpu1/online || fail "cannot take CPU 1 offline"
	bench "kind=env_cpus online=$(cat /sys/devices/system/cpu/online)"
	pingpong_run one_vcpu || fail "the ping-pong failed"
	# Memory figures compare like with like: whatever the first 64 mirrors allocate once
	# (caches, device nodes) is allocated here.
	create_scale_mirrors core 0 >/dev/null || fail "cannot create 64 core mirrors"
	remove_scale_mirrors || fail "cannot remove the core mirrors"
	echo none >/tmp/bench.loaded
	ensure_module c || fail "cannot load the C module with dm-ulogd"
	bench "kind=module cfg=c size=$(awk '$1 == "dm_log_userspace" { print $2 }' /proc/modules)"
	ensure_module rust || fail "cannot load the Rust module with dm-ulogd"
	bench "kind=module cfg=rust size=$(awk '$1 == "dm_log_userspace" { print $2 }' /proc/modules)"
	progress "setup done; $ROUNDS rounds of: round trip, fio ($CONFIGS x $CASES, ${FIO_RUNTIME}s each), scaling 1/8/64 mirrors"
}

# pingpong_run LABEL: $PINGS pings echoed by dm-ulog-bench; prints the module's results.
pingpong_run() {
	dm-ulog-bench echo 2>/tmp/echo.log &
	epid=$!
	wait_for 5 grep -q listening /tmp/echo.log || { kill "$epid"; echo "dm-ulog-bench echo did not start"; return 1; }
	echo "$PINGS" >/sys/kernel/debug/dmlu_pingpong/run || { kill "$epid"; echo "the ping-pong run failed"; return 1; }
	kill "$epid"
	wait "$epid" 2>/dev/null
	r=$(awk '{ printf "%s=%s ", $1, $2 }' /sys/kernel/debug/dmlu_pingpong/results)
	bench "kind=pingpong label=$1 $r"
	progress "ping-pong ($1): $r"
	[ "$(awk '$1 == "count" { print $2 }' /sys/kernel/debug/dmlu_pingpong/results)" -eq "$PINGS" ] || {
		echo "not every ping was echoed"
		return 1
	}
}

# The bare connector round trip, with no log server in group 7 (it would see the pings).
pingpong() {
	stop_server
	pingpong_run "round_$1" || fail "the ping-pong failed"
	start_server || fail "dm-ulogd did not restart"
}

# Timed status ioctls on one mirror: status_round CONFIG ROUND
status_round() {
	[ "$1" = core ] || ensure_module "$1" || fail "cannot load the $1 module"
	dm create rt --table "$(mirror_line "$1" "RT-$1-$2" $SECTORS $REGION /dev/ram0 /dev/ram1 0)" ||
		fail "cannot create the $1 mirror"
	before=$(server_counts) || fail "$before"
	out=$(dm-ulog-bench status-loop rt --count $STATUS_COUNT --warmup $STATUS_WARMUP) || fail "status loop failed: $out"
	after=$(server_counts) || fail "$after"
	set -- "$1" "$2" $(counts_delta "$before" "$after")
	reqs=$3
	[ "$1" = core ] && reqs=0
	extra=
	if [ "$1" = rust ]; then
		luid=$(ls /sys/kernel/debug/dm_log_userspace/ | sed -n 's/^L//p' | head -n 1)
		extra="rust_latency_avg_us=$(log_stat "$luid" latency_avg_us) rust_latency_p50_us_below=$(log_stat "$luid" latency_p50_us_below)"
	fi
	dm remove rt || fail "cannot remove the $1 mirror"
	summary=$(echo "$out" | head -n 1)
	bench "kind=status cfg=$1 round=$2 $summary warmup=$STATUS_WARMUP reqs=$reqs by_type=$4 $extra"
	progress "round $2/$ROUNDS: status ioctl, $1 log: $summary requests=$reqs"
	echo "$out" | tail -n 1
	# A userspace log's status costs exactly two requests (plus those of the warm-up).
	[ "$1" = core ] || [ "$reqs" -eq $((2 * (STATUS_COUNT + STATUS_WARMUP))) ] ||
		fail "expected $((2 * (STATUS_COUNT + STATUS_WARMUP))) requests, the server answered $reqs"
}

request_roundtrip() {
	remove_leftovers
	ensure_module rust || fail "cannot load the Rust module"
	pingpong "$1"
	# The order alternates between rounds, so drift on the host evens out.
	order="core c rust"
	[ $(($1 % 2)) -eq 0 ] && order="rust c core"
	for cfg in $order; do status_round "$cfg" "$1"; done
}

randwrite_round() {
	remove_leftovers
	order=$CONFIGS
	[ $(($1 % 2)) -eq 0 ] && order=$(echo "$CONFIGS" | tr ' ' '\n' | tac)
	for cfg in $order; do
		[ "$cfg" = core ] || ensure_module "$(module_of "$cfg")" || fail "cannot load the module for $cfg"
		dm create bm --table "$(mirror_line "$cfg" "BM-$cfg-$1" $SECTORS $REGION /dev/ram0 /dev/ram1 0)" ||
			fail "cannot create the $cfg mirror"
		dm mknodes bm
		for c in $CASES; do
			before=$(server_counts) || fail "$before"
			r=$(fio_case bm "$c") || fail "fio failed: $cfg $c: $r"
			after=$(server_counts) || fail "$after"
			set -- "$1" $r $(counts_delta "$before" "$after")
			reqs=$7
			[ "$cfg" = core ] && reqs=0
			bench "kind=fio cfg=$cfg case=$c round=$1 iops=$2 ios=$3 clat_mean_us=$4 clat_p50_us=$5 clat_p99_us=$6 reqs=$reqs by_type=$8"
			progress "round $1/$ROUNDS: $cfg $c: $2 IOPS, clat p50 $5 us, $reqs log requests"
			set -- "$1"
		done
		dm remove bm || fail "cannot remove the $cfg mirror"
	done
}

# meminfo_kb: "Slab KernelStack VmallocUsed Percpu" in KiB, after caches are dropped.
meminfo_kb() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	sleep 0.5
	awk '$1 == "Slab:" { s = $2 } $1 == "KernelStack:" { k = $2 } $1 == "VmallocUsed:" { v = $2 }
		$1 == "Percpu:" { p = $2 } END { print s, k, v, p }' /proc/meminfo
}

# 64 mirrors s0..s63 over 1 MiB slices of ram2/ram3; prints the memory they took (KiB).
create_scale_mirrors() {
	m0=$(meminfo_kb)
	i=0
	while [ "$i" -lt 64 ]; do
		dm create "s$i" --table "$(mirror_line "$1" "SC-$1-$2-$i" $SCALE_SECTORS $SCALE_REGION /dev/ram2 /dev/ram3 $((i * SCALE_SECTORS)))" ||
			return 1
		i=$((i + 1))
	done
	dm mknodes
	m1=$(meminfo_kb)
	set -- $m0 $m1
	echo "slab_kb=$(($5 - $1)) kstack_kb=$(($6 - $2)) vmalloc_kb=$(($7 - $3)) percpu_kb=$(($8 - $4))"
}

remove_scale_mirrors() {
	i=0
	while [ "$i" -lt 64 ]; do
		dm remove "s$i" || return 1
		i=$((i + 1))
	done
}

# N of the 64 mirrors written at once, one writer each (4 KiB random, one write in flight);
# prints "window_ms iops reqs by_type": log requests answered in a window in the middle of
# the run (every writer has started; none has stopped).
scale_run() {
	{
		echo "[global]"
		echo "rw=randwrite"
		echo "bs=4k"
		echo "direct=1"
		echo "ioengine=psync"
		echo "thread"
		echo "norandommap"
		echo "randrepeat=0"
		echo "time_based"
		echo "runtime=$SCALE_RUNTIME"
		echo "group_reporting"
		i=0
		while [ "$i" -lt "$1" ]; do
			echo "[s$i]"
			echo "filename=/dev/mapper/s$i"
			i=$((i + 1))
		done
	} >/tmp/scale.fio
	fio --output-format=terse --terse-version=3 /tmp/scale.fio >/tmp/fio.out 2>&1 &
	fpid=$!
	sleep $SCALE_WINDOW_START
	a=$(server_counts) || { echo "$a"; kill "$fpid"; return 1; }
	ta=$(now_ms)
	sleep $SCALE_WINDOW
	b=$(server_counts) || { echo "$b"; kill "$fpid"; return 1; }
	tb=$(now_ms)
	wait "$fpid" || { cat /tmp/fio.out; return 1; }
	iops=$(awk -F';' 'NF > 80 { print $49; exit }' /tmp/fio.out)
	echo "$((tb - ta)) $iops $(counts_delta "$a" "$b")"
}

scaling_round() {
	remove_leftovers
	# Memory with the kernel's core log, for comparison.
	mem=$(create_scale_mirrors core "$1") || fail "cannot create 64 core mirrors"
	bench "kind=memory cfg=core round=$1 logs=64 $mem"
	remove_scale_mirrors || fail "cannot remove the core mirrors"
	order="c rust"
	[ $(($1 % 2)) -eq 0 ] && order="rust c"
	for v in $order; do
		ensure_module "$v" || fail "cannot load the $v module"
		mem=$(create_scale_mirrors "$v" "$1") || fail "cannot create 64 $v mirrors"
		bench "kind=memory cfg=$v round=$1 logs=64 $mem"
		progress "round $1/$ROUNDS: 64 $v logs: $mem"
		for n in 1 8 64; do
			r=$(scale_run "$n") || fail "fio failed on $n $v mirrors: $r"
			set -- "$1" $r
			bench "kind=scale cfg=$v round=$1 mirrors=$n reqs=$4 window_ms=$2 reqs_per_s=$(($4 * 1000 / $2)) iops=$3 by_type=$5"
			progress "round $1/$ROUNDS: $n mirrors, $v: $(($4 * 1000 / $2)) log requests/s, $3 IOPS"
			set -- "$1"
		done
		remove_scale_mirrors || fail "cannot remove the $v mirrors"
	done
}

request_roundtrip_round_1() { request_roundtrip 1; }
request_roundtrip_round_2() { request_roundtrip 2; }
request_roundtrip_round_3() { request_roundtrip 3; }
request_roundtrip_round_4() { request_roundtrip 4; }
randwrite_round_1() { randwrite_round 1; }
randwrite_round_2() { randwrite_round 2; }
randwrite_round_3() { randwrite_round 3; }
randwrite_round_4() { randwrite_round 4; }
scaling_round_1() { scaling_round 1; }
scaling_round_2() { scaling_round 2; }
scaling_round_3() { scaling_round 3; }
scaling_round_4() { scaling_round 4; }

teardown() {
	echo 1 >/sys/devices/system/cpu/cpu1/online
	stop_server
	module_loaded && { unload_module || fail "rmmod failed"; }
	rmmod dmlu_pingpong || fail "rmmod dmlu_pingpong failed"
	progress "done"
}
