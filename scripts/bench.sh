#!/usr/bin/env bash
# make bench: boots the perf kernel once and measures every configuration in that one boot
# (tests/vm/suite-bench.sh), showing the guest's progress, then writes bench/results/latest.json
# and latest.md with bench/report.py (see bench/README.md).
# A run whose guest part fails leaves bench/results alone; its partial report goes to out/bench/.
# Usage: bench.sh            (environment: BENCH_TIMEOUT, seconds for the VM, default 2400)
. "$(dirname "$0")/lib.sh"

started=$(date +%s)
# What is measured: the sources as they are now, committed or not.
commit=$(git -C "$TOP" rev-parse --short=12 HEAD)
dirty=()
[ -z "$(git -C "$TOP" status --porcelain --untracked-files=no)" ] || dirty=(--dirty)
out="$TOP/out/bench"
run="$TOP/out/vm/perf-rust-bench"
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

say "measuring in one boot of the perf kernel (about 15 minutes under TCG)"
rm -rf "$run"
vm_start=$(date +%s)
vm_date=$(date -u -d "@$vm_start" +%Y-%m-%dT%H:%M:%SZ)
"$TOP/scripts/vm-run.sh" perf rust bench "${BENCH_TIMEOUT:-2400}" >"$out/vm-run.log" 2>&1 &
vm_pid=$!
seen=0
# Other VMs on the host slow this one down unevenly: count how often one runs.
samples=0
busy=0
sample_host() {
	samples=$((samples + 1))
	local others
	others=$(pgrep -a qemu-system | grep -v -e "$run/" || true)
	[ -z "$others" ] || busy=$((busy + 1))
}
show_progress() {
	[ -f "$run/console.log" ] || return 0
	local lines
	lines=$(grep -a "dmlu-bench: " "$run/console.log" | tail -n +$((seen + 1)) || true)
	[ -n "$lines" ] || return 0
	seen=$((seen + $(wc -l <<<"$lines")))
	local t=$(($(date +%s) - vm_start))
	sed "s/^.*dmlu-bench: /    [$(printf '%02d:%02d' $((t / 60)) $((t % 60)))] /" <<<"$lines" | cut -c1-150 >&2
}
while kill -0 "$vm_pid" 2>/dev/null; do
	sleep 3
	show_progress
	sample_host
done
vm_rc=0
wait "$vm_pid" || vm_rc=$?
show_progress
vm_seconds=$(($(date +%s) - vm_start))
cp "$run/ktap.log" "$out/ktap.log" 2>/dev/null || true

# Sections of each module as built (Berkeley format: text, data, bss).
sizes=()
for m in "c:$c_ko" "rust:$rust_ko"; do
	read -r text data bss _ < <(size "${m#*:}" | tail -n 1)
	sizes+=(--ko-size "${m%%:*}:$text:$data:$bss")
done
report=(python3 "$TOP/bench/report.py" "$out/ktap.log" --commit "$commit" "${dirty[@]}"
	--date "$vm_date" --accel "$accel" --vm-seconds "$vm_seconds" --other-vms "$busy/$samples" "${sizes[@]}")

if [ "$vm_rc" -ne 0 ]; then
	grep -vE "^# \[ *[0-9]+\.[0-9]+\]" "$out/vm-run.log" | grep -E "^(not ok|Bail out!|# (FAIL|the guest|the suite|no Totals|planned|kernel|QEMU))" | head -20 >&2 || true
	"${report[@]}" --out-dir "$out" >&2 || true
	die "the bench run failed (exit $vm_rc); output: $out/vm-run.log, console: $run/console.log; partial report in $out (bench/results untouched)"
fi
"${report[@]}" --out-dir "$TOP/bench/results"
[ "$busy" -eq 0 ] || say "note: another VM ran on this host during $((100 * busy / samples))% of the measurements"
say "make bench: done in $(($(date +%s) - started)) s (guest: $vm_seconds s); bench/results/latest.{json,md} updated"
