# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# make bench (scripts/bench.sh): every configuration measured in one boot of the perf kernel,
# back to back, round by round, so that ratios between them mean something even under TCG.
# Not a test suite: nothing here judges a figure; a test fails only when a measurement could
# not be taken. Each figure is one "BENCH kind=... key=value ..." line in the KTAP
# diagnostics, read by bench/report.py; progress goes to the console.
#
# Each round runs its configurations in a random order (seeded, recorded) in which every
# configuration comes first equally often over the rounds; every mirror gets a discarded
# warm-up write before its figures, so the first configuration after a module load pays no
# cold caches. Requests and I/O are always counted in the same window (fio's ramp excluded).
#
# - roundtrip_round_N: the bare connector ping-pong (bench/pingpong, echoed by
#   `dm-ulog-bench echo`) and timed status ioctls on a mirror with the kernel's core log, the
#   C module's and the Rust module's userspace log (each status: GET_SYNC_COUNT + STATUS_INFO);
# - randwrite_round_N: fio on a two-leg mirror over /dev/ram0 and /dev/ram1, random 4 KiB
#   writes at iodepth 1 and 8 with 1 and 4 jobs, for both modules with and without
#   integrated_flush and the Rust module with its request-saving features on (the core log,
#   the baseline, at iodepth 8 with 4 jobs only);
# - scaling_round_N: 1, 2, 4, ... 64 mirrors over 1 MiB slices of /dev/ram2 and /dev/ram3
#   written at once, one writer each: IOPS per mirror and log requests in one window (the
#   whole curve in the first 3 rounds, 64 mirrors in the others);
# - memory_round_N (the first 2 rounds): /proc/slabinfo (and meminfo) deltas of
#   256 small mirrors per log type.
#
# The kernel command line sets: dmlu.bench_rounds=N (default 10), dmlu.bench_seed=S (the
# order), dmlu.bench_clock=icount (scripts/bench.sh's second boot, under QEMU's -icount
# shift=0: the guest's clock counts instructions, 1 ns each; only the round trip and fio at
# QD1 run there, for figures another VM on the host cannot move).
#
# The measurements run on one vCPU (setup takes CPU 1 offline, after one ping-pong on both).

ROUNDS=10
SEED=1
CLOCK=wall
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	dmlu.bench_rounds=*) ROUNDS=${arg#*=} ;;
	dmlu.bench_seed=*) SEED=${arg#*=} ;;
	dmlu.bench_clock=*) CLOCK=${arg#*=} ;;
	esac
done
# What a round costs under TCG (about 10 minutes, 20 with memory and the whole scaling
# curve) bounds what fits in one session with the kernel build: the figures that move little
# between rounds are taken in the first rounds only.
MEMORY_ROUNDS=2
[ "$ROUNDS" -lt "$MEMORY_ROUNDS" ] && MEMORY_ROUNDS=$ROUNDS
# The scaling curve in the first rounds; 64 mirrors (a target's figure) in every round.
CURVE_ROUNDS=3

# The mirror of the fio cases: all of ram0/ram1 (64 MiB), regions of 512 KiB.
SECTORS=131072
REGION=1024
FIO_RUNTIME=10
FIO_RAMP=2
WARMUP_S=2
# rust and rust_if: the Rust module with its request stream the C module's; rust_fast: with
# its defaults (every request-saving feature), and integrated_flush, compared with c_if;
# rust_fast_v3: the same module served by a dm-ulogd that announces no extension
# (--no-announce), as a server that speaks only protocol v3 would.
CONFIGS="core c c_if rust rust_if rust_fast rust_fast_v3"
CASES="rand_qd1_j1 rand_qd8_j1 rand_qd1_j4 rand_qd8_j4"
# The kernel's core log, the baseline, in the case its target compares at (QD8, 4 jobs).
CORE_CASES="rand_qd8_j4"
PINGS=5000
STATUS_COUNT=3000
STATUS_WARMUP=200
# Scaling: mirrors of 1 MiB with regions of 128 KiB.
SCALE_SECTORS=2048
SCALE_REGION=256
SCALE_COUNTS="1 2 4 8 16 32 64"
SCALE_RAMP=2
SCALE_RUNTIME=6
# Memory: 256 mirrors of 128 KiB, one region each.
MEM_LOGS=256
MEM_SECTORS=256

if [ "$CLOCK" = icount ]; then
	# Virtual seconds: 10^9 instructions each. QD1 (whose requests per write the wall
	# boot's must match) and QD8 with 4 jobs (the core log's target case), for the split of
	# each write's instructions into the log's requests and the rest.
	CONFIGS="core c c_if rust rust_if rust_fast"
	CASES="rand_qd1_j1 rand_qd8_j4"
	CORE_CASES=$CASES
	FIO_RUNTIME=3
	FIO_RAMP=1
	WARMUP_S=1
	PINGS=2000
	STATUS_COUNT=1000
fi

TESTS=setup
r=1
while [ "$r" -le "$ROUNDS" ]; do
	TESTS="$TESTS roundtrip_round_$r randwrite_round_$r"
	eval "roundtrip_round_$r() { request_roundtrip $r; }"
	eval "randwrite_round_$r() { randwrite_round $r; }"
	if [ "$CLOCK" = wall ]; then
		TESTS="$TESTS scaling_round_$r"
		eval "scaling_round_$r() { scaling_round $r; }"
		if [ "$r" -le "$MEMORY_ROUNDS" ]; then
			TESTS="$TESTS memory_round_$r"
			eval "memory_round_$r() { memory_round $r; }"
		fi
	fi
	r=$((r + 1))
done
TESTS="$TESTS teardown"
# One test may take a while under TCG: a round of fio cases is about five minutes.
TEST_TIMEOUT=1200

progress() { echo "dmlu-bench: $*" >/dev/console; }
bench() { echo "BENCH $* clock=$CLOCK"; }

# round_order KIND ROUND LIST: LIST in this round's order. Over the rounds every item of LIST
# comes first equally often (as far as the count of rounds allows), in a seeded random
# sequence; the rest of each round is shuffled too.
round_order() {
	echo "$3" | awk -v seed="$SEED" -v kind="$1" -v round="$2" -v rounds="$ROUNDS" '{
		n = split($0, item, " ")
		h = 0
		for (i = 1; i <= length(kind); i++) h = (h * 31 + index("abcdefghijklmnopqrstuvwxyz_", substr(kind, i, 1))) % 100003
		# The firsts: each item ceil(rounds / n) times, shuffled alike in every round.
		srand(seed * 7919 + h)
		for (i = 0; i < 10; i++) rand()
		m = 0
		for (k = 0; k * n < rounds; k++) for (i = 1; i <= n; i++) first[++m] = item[i]
		for (i = m; i > 1; i--) { j = int(rand() * i) + 1; t = first[i]; first[i] = first[j]; first[j] = t }
		f = first[round]
		# The others, shuffled by the round.
		srand(seed * 7919 + h + round * 104729)
		# (Close seeds start alike: skip the first draws.)
		for (i = 0; i < 10 + round; i++) rand()
		k = 0
		for (i = 1; i <= n; i++) if (item[i] != f) rest[++k] = item[i]
		for (i = k; i > 1; i--) { j = int(rand() * i) + 1; t = rest[i]; rest[i] = rest[j]; rest[j] = t }
		out = f
		for (i = 1; i <= k; i++) out = out " " rest[i]
		print out
	}'
}

# load_as NAME: loads the module NAME stands for: c, rust (every request-saving feature off,
# so that its request stream is the C module's) or rust_fast and rust_fast_v3 (the Rust
# module's defaults).
load_as() {
	use_variant "${1%%_*}"
	case $1 in
	rust) insmod "$MODULE" $RUST_AS_C ;;
	*) load_module ;;
	esac
}

# The request counts dm-ulogd keeps up to date (--counters; read_counters).
COUNTERS=/tmp/dm-ulogd.counters

# bench_server NAME: dm-ulogd for the module NAME stands for (load_as), keeping its counters in
# $COUNTERS; for rust_fast_v3 it announces no extension.
bench_server() {
	if [ "$1" = rust_fast_v3 ]; then
		start_server dm-ulogd --counters "$COUNTERS" --no-announce
	else
		start_server dm-ulogd --counters "$COUNTERS"
	fi
}
# The Rust module's parameters that turn off every request-saving feature.
RUST_AS_C="reuse_in_sync=0 in_sync_map=0 hold_clears=0 clears_in_flush=0"

# ordered KIND ROUND LIST: round_order's order, recorded as a BENCH line (on stderr, which
# the suite's output takes too).
ordered() {
	order=$(round_order "$@")
	bench "kind=order test=$1 round=$2 order=$(echo "$order" | tr ' ' ,)" >&2
	echo "$order"
}

# The module loaded and served by dm-ulogd: ensure_module c|rust|rust_fast (see load_as). The
# state outlives the test's subshell in /tmp/bench.loaded.
ensure_module() {
	have=$(cat /tmp/bench.loaded 2>/dev/null || echo none)
	[ "$have" = "$1" ] && return 0
	if [ "$have" != none ]; then
		stop_server
		unload_module || return 1
		echo none >/tmp/bench.loaded
	fi
	load_as "$1" || return 1
	bench_server "$1" || return 1
	echo "$1" >/tmp/bench.loaded
}

# read_counters: takes the requests dm-ulogd has answered so far, as they are now, from the
# counters file it keeps up to date in place (--counters). Its one line, "TOTAL=<16 hex
# digits> CTR=<16 hex digits> ..." with every request type, is also a list of shell
# assignments: `.` takes it whole with one read(2) and sets TOTAL, CTR, ... to the digits. (The
# read builtin would take it a byte per system call: a thousand of them, each a chance for
# dm-ulogd to count a request mid-line, whose carry can tear a count; see dm-ulogd's
# stats::LiveCounters.) No process, no signal, no wait: the same cost at the end of a long boot
# as at its start. Without a dm-ulogd there is nothing to take; without the file it fails,
# with why in $counters_why.
read_counters() {
	counters_taken=
	[ -f /tmp/dm-ulogd.pid ] || return 0
	counters_why="no counters from dm-ulogd (--counters $COUNTERS)"
	[ -f "$COUNTERS" ] || return 1
	. "$COUNTERS"
	counters_taken=1
}

# counts_taken: the counts read_counters took, as "TOTAL TYPE=N TYPE=N ..." in decimal, into
# $req_counts, the types with no request left out ("0" without a dm-ulogd). The names come
# from the file's line (read after the window's edge, where its cost does not matter), the
# counts from read_counters' variables; shell arithmetic alone.
counts_taken() {
	req_counts=0
	[ -n "$counters_taken" ] || return 0
	read -r line <"$COUNTERS"
	for f in $line; do
		n=${f%%=*}
		eval "v=\$$n"
		case $n=$v in
		TOTAL=*) req_counts=$((0x$v)) ;;
		*=0000000000000000) ;;
		*) req_counts="$req_counts $n=$((0x$v))" ;;
		esac
	done
}

# server_counts: the requests dm-ulogd has answered so far, "TOTAL TYPE=N TYPE=N ..."
# (read_counters, counts_taken).
server_counts() {
	read_counters || { echo "$counters_why"; return 1; }
	counts_taken
	echo "$req_counts"
}

# uptime_ms: the boot clock in ms (10 ms steps) into $up_ms, without starting a process (nor a
# subshell, as $(uptime_ms) would).
uptime_ms() {
	read -r up _ </proc/uptime
	up_ms=$((${up%.*} * 1000 + 1${up#*.}0 - 1000))
}

# snapshot STAT...: the block devices' completed writes (field 5 of each STAT file, summed) and
# dm-ulogd's request counts, read one right after the other: "T0 T1 WRITES TOTAL TYPE=N ...",
# where T0 and T1 (uptime_ms) enclose both readings: T1 - T0 is how far the counts may lie
# from the window's edge. Only reads and shell arithmetic between T0 and T1: no process, no
# subshell; the counts are decoded after T1.
snapshot() {
	uptime_ms
	t0=$up_ms
	w=0
	for f in "$@"; do
		read -r _ _ _ _ n _ <"$f"
		w=$((w + n))
	done
	read_counters || { echo "$counters_why"; return 1; }
	uptime_ms
	counts_taken
	echo "$t0 $up_ms $w $req_counts"
}

# window A B: what two snapshots enclose: "TOTAL TYPE:N,... WINDOW_MS WRITES OVERSHOOT_MS",
# the window from the middle of A's readings to the middle of B's, the overshoot the larger of
# the two readings' spans.
window() {
	set -- $1 '|' $2
	a0=$1 a1=$2 aw=$3
	shift 3
	ac=
	while [ "$1" != '|' ]; do ac="$ac $1"; shift; done
	shift
	b0=$1 b1=$2 bw=$3
	shift 3
	over=$((a1 - a0))
	[ $((b1 - b0)) -gt "$over" ] && over=$((b1 - b0))
	echo "$(counts_delta "${ac# }" "$*") $(((b0 + b1 - a0 - a1) / 2)) $((bw - aw)) $over"
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
	c_if | rust_if | rust_fast | rust_fast_v3) log="userspace 5 $2 integrated_flush core $4 nosync" ;;
	esac
	echo "0 $3 mirror $log 2 $5 $7 $6 $7"
}

module_of() {
	case $1 in
	c | c_if) echo c ;;
	rust | rust_if) echo rust ;;
	rust_fast | rust_fast_v3) echo "$1" ;;
	esac
}

# ensure_for CONFIG: the module CONFIG needs, loaded and served (the core log needs none).
ensure_for() {
	[ "$1" = core ] || ensure_module "$(module_of "$1")"
}

# fio_windowed STAT ARGS...: runs fio (terse output to /tmp/fio.out) for $ramp + $runtime
# seconds (which ARGS set as fio's ramp_time and runtime) and counts, in a window inside fio's
# own (from half a second after the ramp to half a second before the end, where the I/O runs
# steadily), the log requests dm-ulogd answers and the writes the mirror's block device STAT
# completes: prints window's "TOTAL TYPE:N,... WINDOW_MS WRITES OVERSHOOT_MS". Requests per
# write are TOTAL / WRITES, both counted between the same two instants.
fio_windowed() {
	stat=$1
	shift
	fio --output-format=terse --terse-version=3 "$@" >/tmp/fio.out 2>&1 &
	fpid=$!
	raise_priority
	sleep "$ramp"
	sleep 0.5
	a=$(snapshot "$stat") || { echo "$a"; kill "$fpid"; return 1; }
	sleep "$((runtime - 1))"
	b=$(snapshot "$stat") || { echo "$b"; kill "$fpid"; return 1; }
	wait "$fpid" || { cat /tmp/fio.out; return 1; }
	window "$a" "$b"
}

# fio_case DEVICE CASE: one fio run after its ramp; prints "iops ios clat_mean_us clat_p50_us
# clat_p99_us reqs by_type window_ms writes overshoot_ms".
fio_case() {
	case $2 in
	rand_qd1_j1) rw=randwrite qd=1 jobs=1 ;;
	rand_qd8_j1) rw=randwrite qd=8 jobs=1 ;;
	rand_qd1_j4) rw=randwrite qd=1 jobs=4 ;;
	rand_qd8_j4) rw=randwrite qd=8 jobs=4 ;;
	warmup) rw=randwrite qd=8 jobs=1 ;;
	esac
	ramp=$FIO_RAMP
	runtime=$FIO_RUNTIME
	[ "$2" = warmup ] && ramp=0 runtime=$WARMUP_S
	reqs=$(fio_windowed "/sys/block/dm-$(dm info -c --noheadings -o minor "$1")/stat" --name=b --filename="/dev/mapper/$1" --rw=$rw --bs=4k --direct=1 --ioengine=libaio \
		--iodepth=$qd --numjobs=$jobs --thread --group_reporting --norandommap --randrepeat=0 \
		--time_based --ramp_time=$ramp --runtime=$runtime) || { echo "$reqs"; return 1; }
	# terse v3, write side: 47 KiB, 49 IOPS, 57 clat mean, 65 and 71 clat p50 and p99 (us).
	awk -F';' -v reqs="$reqs" 'NF > 80 { sub(/.*=/, "", $65); sub(/.*=/, "", $71); print $49, int($47 / 4), $57, $65, $71, reqs; exit }' /tmp/fio.out
}

setup() {
	bench "kind=env kernel=$(uname -r) cpus=$(nproc) mem_kb=$(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)" \
		"clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)" \
		"fio=$(fio --version) rounds=$ROUNDS seed=$SEED fio_runtime_s=$FIO_RUNTIME fio_ramp_s=$FIO_RAMP" \
		"warmup_s=$WARMUP_S region_sectors=$REGION scale_region_sectors=$SCALE_REGION" \
		"scale_runtime_s=$SCALE_RUNTIME pings=$PINGS status_count=$STATUS_COUNT memory_rounds=$MEMORY_ROUNDS curve_rounds=$CURVE_ROUNDS core_cases=$(echo $CORE_CASES | tr " " ,) mem_logs=$MEM_LOGS"
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
	# Memory figures compare like with like: whatever the first mirrors allocate once
	# (caches, device nodes) is allocated here.
	if [ "$CLOCK" = wall ]; then
		create_mem_mirrors core 0 >/dev/null || fail "cannot create $MEM_LOGS core mirrors"
		remove_mirrors m $MEM_LOGS || fail "cannot remove the core mirrors"
	fi
	echo none >/tmp/bench.loaded
	for v in c rust; do
		# What the module takes once: slab before and after loading it, with no log and
		# no server (whose start and stop would blur the figure); the median of three loads,
		# as a few hundred bytes come and go in other caches meanwhile.
		stop_server
		echo none >/tmp/bench.loaded
		use_variant "$v"
		loads=
		for _ in 1 2 3; do
			if module_loaded; then unload_module || fail "rmmod failed"; fi
			m0=$(slab_bytes)
			load_as "$v" || fail "cannot load the $v module"
			m1=$(slab_bytes)
			loads="$loads $((m1 - m0))"
		done
		bench_server "$v" || fail "dm-ulogd did not start"
		echo "$v" >/tmp/bench.loaded
		bench "kind=module cfg=$v size=$(awk '$1 == "dm_log_userspace" { print $2 }' /proc/modules)" \
			"load_slab_bytes=$(echo $loads | tr ' ' '\n' | sort -n | sed -n 2p) load_slab_samples=$(echo $loads | tr ' ' ,)"
	done
	progress "setup done (clock: $CLOCK, seed $SEED); $ROUNDS rounds of: round trip; fio ($CONFIGS x $CASES," \
		"${FIO_RAMP}+${FIO_RUNTIME}s each)$([ "$CLOCK" = wall ] && echo "; core log at $CORE_CASES; scaling $SCALE_COUNTS mirrors in $CURVE_ROUNDS rounds, 64 in the others; $MEMORY_ROUNDS of memory ($MEM_LOGS logs)")"
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

# Timed status ioctls on one mirror: status_round CONFIG ROUND
status_round() {
	ensure_for "$1" || fail "cannot load the module for $1"
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
		luid=$(luids | head -n 1)
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
	# The bare connector round trip, with no log server in group 7 (it would see the pings).
	stop_server
	pingpong_run "round_$1" || fail "the ping-pong failed"
	have=$(cat /tmp/bench.loaded)
	[ "$have" = none ] || bench_server "$have" || fail "dm-ulogd did not restart"
	order=$(ordered roundtrip "$1" "core c rust")
	for cfg in $order; do status_round "$cfg" "$1"; done
}

randwrite_round() {
	remove_leftovers
	order=$(ordered randwrite "$1" "$CONFIGS")
	for cfg in $order; do
		ensure_for "$cfg" || fail "cannot load the module for $cfg"
		dm create bm --table "$(mirror_line "$cfg" "BM-$cfg-$1" $SECTORS $REGION /dev/ram0 /dev/ram1 0)" ||
			fail "cannot create the $cfg mirror"
		dm mknodes bm
		r=$(fio_case bm warmup) || fail "fio failed: $cfg warm-up: $r"
		cases=$CASES
		[ "$cfg" = core ] && cases=$CORE_CASES
		for c in $(round_order "case_$cfg" "$1" "$cases"); do
			r=$(fio_case bm "$c") || fail "fio failed: $cfg $c: $r"
			set -- "$1" $r
			reqs=$7
			[ "$cfg" = core ] && reqs=0
			bench "kind=fio cfg=$cfg case=$c round=$1 iops=$2 ios=$3 clat_mean_us=$4 clat_p50_us=$5 clat_p99_us=$6 reqs=$reqs by_type=$8 window_ms=$9 writes=${10} overshoot_ms=${11} per_write_from=writes"
			progress "round $1/$ROUNDS: $cfg $c: $2 IOPS, clat p50 $5 us, $(awk -v r="$reqs" -v w="${10}" 'BEGIN { printf "%.4f", w ? r / w : 0 }') log requests per write (window overshoot ${11} ms)"
			set -- "$1"
		done
		dm remove bm || fail "cannot remove the $cfg mirror"
	done
}

# slab_bytes: the bytes of every slab cache's objects in use (/proc/slabinfo: active objects
# times object size), after freed objects had time to return (RCU) and every cache was shrunk:
# slabinfo counts the free objects of a CPU's slabs as in use, megabytes over all caches,
# until a shrink puts those slabs back on the lists it counts exactly.
slab_bytes() {
	sync
	echo 3 >/proc/sys/vm/drop_caches
	sleep 0.5
	for s in /sys/kernel/slab/*/shrink; do echo 1 >"$s"; done 2>/dev/null
	awk 'NR > 2 { s += $2 * $4 } END { printf "%d\n", s }' /proc/slabinfo
}

# meminfo_kb: "KernelStack VmallocUsed Percpu" in KiB: the kernel memory outside the slabs.
meminfo_kb() {
	awk '$1 == "KernelStack:" { k = $2 } $1 == "VmallocUsed:" { v = $2 } $1 == "Percpu:" { p = $2 }
		END { print k, v, p }' /proc/meminfo
}

# create_mem_mirrors CONFIG ROUND: $MEM_LOGS mirrors m0.. over 128 KiB slices of ram2/ram3;
# prints what they took.
create_mem_mirrors() {
	s0=$(slab_bytes)
	k0=$(meminfo_kb)
	i=0
	while [ "$i" -lt "$MEM_LOGS" ]; do
		dm create "m$i" --table "$(mirror_line "$1" "ME-$1-$2-$i" $MEM_SECTORS $MEM_SECTORS /dev/ram2 /dev/ram3 $((i * MEM_SECTORS)))" ||
			return 1
		i=$((i + 1))
	done
	s1=$(slab_bytes)
	k1=$(meminfo_kb)
	set -- $k0 $k1
	echo "logs=$MEM_LOGS slab_bytes=$((s1 - s0)) kstack_kb=$(($4 - $1)) vmalloc_kb=$(($5 - $2)) percpu_kb=$(($6 - $3))"
}

# remove_mirrors PREFIX COUNT
remove_mirrors() {
	i=0
	while [ "$i" -lt "$2" ]; do
		dm remove "$1$i" || return 1
		i=$((i + 1))
	done
}

memory_round() {
	remove_leftovers
	order=$(ordered memory "$1" "$CONFIGS")
	for cfg in $order; do
		ensure_for "$cfg" || fail "cannot load the module for $cfg"
		mem=$(create_mem_mirrors "$cfg" "$1") || fail "cannot create $MEM_LOGS $cfg mirrors"
		bench "kind=memory cfg=$cfg round=$1 $mem"
		progress "round $1/$MEMORY_ROUNDS: $MEM_LOGS $cfg logs: $mem"
		remove_mirrors m $MEM_LOGS || fail "cannot remove the $cfg mirrors"
	done
}

# raise_priority: this (sub)shell at nice -20, so that the writers it started before (at the
# default, 0) do not preempt it while it reads a window's edge: at their priority, with 64
# writers on the one CPU, reading an edge took up to 180 ms. It sleeps between the edges, so
# the writers keep the CPU; what it starts from now on inherits the priority.
raise_priority() {
	read -r self _ </proc/self/stat
	renice -n -20 -p "$self" >/dev/null
}

# scale_edge FILE: one edge of scale_run's window: each mirror's completed writes into FILE
# (writes_now), then dm-ulogd's counts, enclosed by two clock readings ($edge_t0, $edge_t1),
# as snapshot does; the counts in $edge_counts.
scale_edge() {
	uptime_ms
	edge_t0=$up_ms
	writes_now "$1"
	read_counters || return 1
	uptime_ms
	edge_t1=$up_ms
	counts_taken
	edge_counts=$req_counts
}

# scale_run N: N of the 64 mirrors written at once, one writer each (4 KiB random, one write
# in flight). Everything comes from one window, opened $SCALE_RAMP s after every mirror has
# written (64 fio threads take seconds to start under TCG) and $SCALE_RUNTIME s long: the
# writes each mirror's block device completed (the block layer's count) and the requests
# dm-ulogd counted. Prints "reqs by_type window_ms iops_total iops_min iops_max writes
# overshoot_ms". A
# window without writes or requests fails; fio is stopped after it.
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
		echo "runtime=3600"
		i=0
		while [ "$i" -lt "$1" ]; do
			echo "[s$i]"
			echo "filename=/dev/mapper/s$i"
			i=$((i + 1))
		done
	} >/tmp/scale.fio
	# Each mirror's /sys/block/dm-N/stat, s0 first: field 5 counts completed writes.
	stats=$(echo $SCALE_STATS | cut -d' ' -f1-"$1")
	# shellcheck disable=SC2086
	# writes_now FILE: their counts, one line, into FILE: read builtins alone (an awk here
	# started a process between a window edge's two clock readings: up to 250 ms with 64
	# writers on the CPU).
	writes_now() {
		counts=
		for f in $stats; do
			read -r _ _ _ _ n _ <"$f"
			counts="$counts$n "
		done
		echo "$counts" >"$1"
	}
	writes_now /tmp/writes.0
	fio --output-format=terse --terse-version=3 /tmp/scale.fio >/tmp/fio.out 2>&1 &
	fpid=$!
	started=0
	for _ in $(seq 600); do
		writes_now /tmp/writes.a
		# Every mirror has written since fio started.
		awk 'NR == 1 { for (i = 1; i <= NF; i++) a[i] = $i; next }
			{ for (i = 1; i <= NF; i++) if ($i == a[i]) exit 1 }' /tmp/writes.0 /tmp/writes.a && { started=1; break; }
		kill -0 "$fpid" 2>/dev/null || break
		sleep 0.1
	done
	if [ "$started" != 1 ]; then
		kill -INT "$fpid" 2>/dev/null
		wait "$fpid"
		cat /tmp/fio.out
		echo "not every one of $1 mirrors was written within 600 polls of fio's start"
		return 1
	fi
	sleep "$SCALE_RAMP"
	raise_priority
	scale_edge /tmp/writes.a || { echo "$counters_why"; kill "$fpid"; return 1; }
	ta0=$edge_t0 ta1=$edge_t1 a=$edge_counts
	sleep "$SCALE_RUNTIME"
	scale_edge /tmp/writes.b || { echo "$counters_why"; kill "$fpid"; return 1; }
	tb0=$edge_t0 tb1=$edge_t1
	kill -INT "$fpid"
	wait "$fpid"
	reqs=$(counts_delta "$a" "$edge_counts")
	ms=$(((tb0 + tb1 - ta0 - ta1) / 2))
	over=$((ta1 - ta0))
	[ $((tb1 - tb0)) -gt "$over" ] && over=$((tb1 - tb0))
	writes=$(awk -v ms="$ms" 'NR == 1 { for (i = 1; i <= NF; i++) a[i] = $i; next }
		{ for (i = 1; i <= NF; i++) { d = $i - a[i]; t += d; if (min == "" || d < min) min = d; if (d > max) max = d } }
		END { printf "%.1f %.1f %.1f %d", t * 1000 / ms, min * 1000 / ms, max * 1000 / ms, t }' /tmp/writes.a /tmp/writes.b)
	[ "${reqs%% *}" -gt 0 ] && [ "${writes##* }" -gt 0 ] ||
		{ echo "no I/O in the window: ${reqs%% *} requests, ${writes##* } writes"; return 1; }
	echo "$reqs $ms $writes $over"
}

# 64 mirrors s0..s63 over 1 MiB slices of ram2/ram3.
create_scale_mirrors() {
	i=0
	while [ "$i" -lt 64 ]; do
		dm create "s$i" --table "$(mirror_line "$1" "SC-$1-$2-$i" $SCALE_SECTORS $SCALE_REGION /dev/ram2 /dev/ram3 $((i * SCALE_SECTORS)))" ||
			return 1
		i=$((i + 1))
	done
	dm mknodes
}

scaling_round() {
	remove_leftovers
	order=$(ordered scaling "$1" "c rust")
	for v in $order; do
		ensure_module "$v" || fail "cannot load the $v module"
		create_scale_mirrors "$v" "$1" || fail "cannot create 64 $v mirrors"
		# Each mirror's block-layer counters, s0 first.
		SCALE_STATS=$(i=0; while [ "$i" -lt 64 ]; do
			echo "/sys/block/dm-$(dm info -c --noheadings -o minor "s$i")/stat"; i=$((i + 1)); done)
		r=$(scale_run 64) || fail "fio failed on the warm-up of 64 $v mirrors: $r"
		counts=64
		[ "$1" -le "$CURVE_ROUNDS" ] && counts=$SCALE_COUNTS
		for n in $(round_order "scale_$v" "$1" "$counts"); do
			r=$(scale_run "$n") || fail "fio failed on $n $v mirrors: $r"
			set -- "$1" $r
			bench "kind=scale cfg=$v round=$1 mirrors=$n reqs=$2 by_type=$3 window_ms=$4 iops=$5 iops_min=$6 iops_max=$7 writes=$8 overshoot_ms=$9 iops_from=window"
			progress "round $1/$ROUNDS: $n mirrors, $v: $5 IOPS (per mirror $6-$7), $(($2 * 1000 / $4)) log requests/s"
			set -- "$1"
		done
		remove_mirrors s 64 || fail "cannot remove the $v mirrors"
	done
}

teardown() {
	echo 1 >/sys/devices/system/cpu/cpu1/online
	stop_server
	module_loaded && { unload_module || fail "rmmod failed"; }
	rmmod dmlu_pingpong || fail "rmmod dmlu_pingpong failed"
	progress "done"
}
