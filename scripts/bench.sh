#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# make bench: boots the perf kernel once and measures every configuration in that one boot
# (tests/vm/suite-bench.sh), showing the guest's progress, then writes bench/results/latest.json
# and latest.md with bench/report.py (see bench/README.md).
# A run whose guest part fails leaves bench/results alone; its partial report goes to out/bench/.
# Usage: bench.sh    environment: BENCH_ROUNDS (default 10), BENCH_ICOUNT_ROUNDS (the second
#   boot's, default 2; 0: none), BENCH_SEED (the rounds' order; default: the time),
#   BENCH_TIMEOUT (seconds for each boot, default 15 minutes per round plus 30), BENCH_DIRTY=1 (measure uncommitted
#   changes; the report goes to out/bench only)
. "$(dirname "$0")/lib.sh"

started=$(date +%s)
# What is measured: the committed tree. Uncommitted changes can be measured (BENCH_DIRTY=1),
# but such a run's report goes to out/bench only, never to bench/results.
commit=$(git -C "$TOP" rev-parse --short=12 HEAD)
dirty=()
if [ -n "$(git -C "$TOP" status --porcelain --untracked-files=no)" ]; then
	[ "${BENCH_DIRTY:-0}" = 1 ] || die "the tree has uncommitted changes: commit them (make bench measures a commit), or BENCH_DIRTY=1 for a report in out/bench only"
	dirty=(--dirty)
fi
rounds=${BENCH_ROUNDS:-10}
icount_rounds=${BENCH_ICOUNT_ROUNDS:-2}
seed=${BENCH_SEED:-$(date +%s)}
out="$TOP/out/bench"
mkdir -p "$out"
command -v python3 >/dev/null || die "python3 not found (scripts/host-deps.sh installs it)"

say "building what is missing (the kernels are cached)"
"$TOP/scripts/host-deps.sh" >/dev/null
kdir=$("$TOP/scripts/build-kernel.sh" perf)
accel=tcg
[ "$("$TOP/scripts/kvm-probe.sh" "$kdir")" = no ] || accel=kvm
with_progress "Rust module (perf)" "$out/build-module.log" "$TOP/scripts/build-module.sh" perf
with_progress "ping-pong module (perf)" "$out/build-pingpong.log" "$TOP/scripts/build-test-module.sh" perf bench/pingpong
with_progress "userspace programs" "$out/build-userspace.log" "$TOP/scripts/build-userspace.sh"
rust_ko=$(tail -n 1 "$out/build-module.log")
c_ko="$kdir/drivers/md/dm-log-userspace.ko"

# Other VMs on the host slow this one down unevenly: count how often one runs.
samples=0
busy=0
# boot LABEL RUN_DIR APPEND ROUNDS [ENV=VALUE...]: one boot of the bench suite in the background,
# its progress shown, its KTAP log copied to out/bench/ktap-LABEL.log; returns its exit code.
boot() {
	local label=$1 run=$2 append=$3 rounds_in_boot=$4
	shift 4
	local seen=0 start pid rc=0
	start=$(date +%s)
	# A round takes about 9 minutes on an idle 2-core host, over 12 on a busy one: a fixed
	# 2 hours once killed a 10-round run in its 8th round.
	env "$@" DMLU_APPEND="$append" "$TOP/scripts/vm-run.sh" perf rust bench \
		"${BENCH_TIMEOUT:-$((rounds_in_boot * 900 + 1800))}" \
		>"$out/vm-run-$label.log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		sleep 3
		if [ -f "$run/console.log" ]; then
			local lines t
			lines=$(grep -a "dmlu-bench: " "$run/console.log" | tail -n +$((seen + 1)) || true)
			if [ -n "$lines" ]; then
				seen=$((seen + $(wc -l <<<"$lines")))
				t=$(($(date +%s) - start))
				sed "s/^.*dmlu-bench: /    [$label $(printf '%02d:%02d' $((t / 60)) $((t % 60)))] /" <<<"$lines" | cut -c1-150 >&2
			fi
		fi
		samples=$((samples + 1))
		! pgrep -a qemu-system | grep -v -e "$run/" | grep -q . || busy=$((busy + 1))
	done
	wait "$pid" || rc=$?
	cp "$run/ktap.log" "$out/ktap-$label.log" 2>/dev/null || true
	return "$rc"
}

vm_start=$(date +%s)
vm_date=$(date -u -d "@$vm_start" +%Y-%m-%dT%H:%M:%SZ)
say "measuring in one boot of the perf kernel: $rounds rounds, seed $seed (about $((rounds * 10 + 35)) minutes under TCG, with the second boot)"
vm_rc=0
rm -f "$out"/ktap-*.log
boot wall "$TOP/out/vm/perf-rust-bench" "dmlu.bench_rounds=$rounds dmlu.bench_seed=$seed" "$rounds" || vm_rc=$?
if [ "$vm_rc" -eq 0 ] && [ "$icount_rounds" -gt 0 ] && [ "$accel" = tcg ]; then
	say "counting guest instructions in a second boot (-icount): $icount_rounds rounds"
	boot icount "$TOP/out/vm/perf-rust-bench-icount" \
		"dmlu.bench_clock=icount dmlu.bench_rounds=$icount_rounds dmlu.bench_seed=$seed" "$icount_rounds" \
		DMLU_ICOUNT=1 || vm_rc=$?
fi
vm_seconds=$(($(date +%s) - vm_start))

# Sections of each module as built (Berkeley format: text, data, bss).
sizes=()
for m in "c:$c_ko" "rust:$rust_ko"; do
	read -r text data bss _ < <(size "${m#*:}" | tail -n 1)
	sizes+=(--ko-size "${m%%:*}:$text:$data:$bss")
done
report=(python3 "$TOP/bench/report.py" "$out"/ktap-*.log --commit "$commit" "${dirty[@]}"
	--date "$vm_date" --accel "$accel" --vm-seconds "$vm_seconds" --other-vms "$busy/$samples" "${sizes[@]}")

if [ "$vm_rc" -ne 0 ]; then
	grep -vhE "^# \[ *[0-9]+\.[0-9]+\]" "$out"/vm-run-*.log | grep -E "^(not ok|Bail out!|# (FAIL|the guest|the suite|no Totals|planned|kernel|QEMU))" | head -20 >&2 || true
	"${report[@]}" --out-dir "$out" >&2 || true
	die "the bench run failed (exit $vm_rc); output: $out/vm-run-*.log, consoles: out/vm/perf-rust-bench*/console.log; partial report in $out (bench/results untouched)"
fi
# The report checks the windows (QD1 requests per write against the -icount boot's): a run
# that fails it leaves bench/results alone.
report_rc=0
"${report[@]}" --out-dir "$out" >/dev/null || report_rc=$?
[ "$report_rc" -eq 0 ] || die "the report's checks failed (exit $report_rc, above): the run's windows did not count what they claim; report in $out (bench/results untouched)"
if [ ${#dirty[@]} -gt 0 ]; then
	cat "$out/latest.md"
	say "make bench: uncommitted changes measured; report in $out (bench/results untouched)"
	exit 0
fi
"${report[@]}" --out-dir "$TOP/bench/results" --readme "$TOP/README.md" >/dev/null
[ "$busy" -eq 0 ] || say "note: another VM ran on this host during $((100 * busy / samples))% of the measurements"
say "make bench: done in $(($(date +%s) - started)) s (guest: $vm_seconds s); bench/results/latest.{json,md} and README.md's table updated: commit them"
