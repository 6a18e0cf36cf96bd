#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# scripts/judge-run.sh decides whether a guest run (scripts/vm-run.sh) passed. A judge that
# passes everything would make every VM run of make check pass, so it must prove it can fail:
# this test writes fake run directories (a ktap.log and a console.log each, no guest) and
# judges them: the good runs must pass, and each planted bad run must fail with a line that
# names its reason. Prints one KTAP line per case and how many planted bad runs were caught;
# exits non-zero if any good run failed or any bad run passed.
# JUDGE=PATH judges with another script taking the same arguments (an older judge, to compare).
set -u
here=$(cd "$(dirname "$0")" && pwd)
judge=${JUDGE:-$here/../../scripts/judge-run.sh}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0
failed=0
planted=0
caught=0

# The cases, counted for the plan: every call of good and bad below.
total=$(grep -cE "^(good|bad) " "$0")
echo "TAP version 13"
echo "1..$total"

# run NAME: a fresh run directory $dir with a good run of a suite in it, for the case to spoil.
# Its KTAP has a test of each kind (pass, skip, a known upstream bug); the console a boot.
run() {
	dir=$tmp/$1
	mkdir -p "$dir"
	ktap "KTAP version 1" "1..4" "# setup: done" "ok 1 load_and_unload" \
		"ok 2 mirror_with_scratch_disks # SKIP no scratch disks" "# a test's output" \
		"ok 3 flush_after_suspend # XFAIL known upstream bug of the C module" "ok 4 remove_waits" \
		"# teardown: done" "# Totals: pass:2 fail:0 xfail:1 xpass:0 skip:1 error:0" \
		"# dmlu: suite smoke finished, exit 0"
	console "[    0.000000] Linux version 7.3.0 (dmlu@build) #1 SMP PREEMPT_DYNAMIC" \
		"[    0.612345] Run /init as init process" "dmlu: running suite smoke with the rust module" \
		"[    3.123456] device-mapper: uevent: version 1.0.3" "dmlu: suite smoke finished, exit 0" \
		"[   12.345678] reboot: Restarting system"
}
# ktap LINE...: the run's KTAP, in place of what it had.
ktap() { printf '%s\n' "$@" >"$dir/ktap.log"; }
# console LINE...: the run's console, in place of what it had; console_add LINE...: appended.
console() { printf '%s\n' "$@" >"$dir/console.log"; }
console_add() { printf '%s\n' "$@" >>"$dir/console.log"; }
# crlf: both files with the serial port's CRLF line ends.
crlf() { sed -i 's/$/\r/' "$dir/ktap.log" "$dir/console.log"; }

# sleeping FUNCTION: appends a "sleeping function called from invalid context" report (the
# one upstream's C module causes) whose trace goes through FUNCTION.
sleeping() {
	console_add "[   20.100001] BUG: sleeping function called from invalid context at include/linux/sched/mm.h:321" \
		"[   20.100002] in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 77, name: kworker/1:2" \
		"[   20.100003] preempt_count: 1, expected: 0" \
		"[   20.100004] CPU: 1 UID: 0 PID: 77 Comm: kworker/1:2 Not tainted 7.3.0 #1" \
		"[   20.100005] Workqueue: kmirrord do_mirror [dm_mirror]" \
		"[   20.100006] Call Trace:" "[   20.100007]  <TASK>" \
		"[   20.100008]  dump_stack_lvl+0x5d/0x80" "[   20.100009]  __might_resched.cold+0x1a/0x2a" \
		"[   20.100010]  mempool_alloc_noprof+0x1c0/0x2c0" \
		"[   20.100011]  $1+0x4a/0x1b0 [dm_log_userspace]" \
		"[   20.100012]  dm_rh_inc_pending+0x91/0x150 [dm_region_hash]" \
		"[   20.100013]  do_mirror+0x2f1/0x9c0 [dm_mirror]" "[   20.100014]  </TASK>"
}
# The Rust module's mark_region as a trace shows it (no userspace_mark_region in it).
rust_mark_region=_RNvMNtCs1abc_16dm_log_userspace3logNtB2_3Log11mark_region

# judged SUITE QEMU_RC [CUT_NOTE]: runs the judge on $dir; sets rc and out.
judged() {
	rc=0
	out=$(JUDGE_NAME="debug/rust/$1" JUDGE_LIMIT=600 "$judge" "$dir" "$@" 2>&1) || rc=$?
}
# result OK NAME: prints the case's KTAP line (and the judge's output when it is not ok).
result() {
	n=$((n + 1))
	if [ "$1" = 1 ]; then
		echo "ok $n $2"
	else
		echo "# the judge exited $rc, saying:"
		sed 's/^/#   /' <<<"$out"
		echo "not ok $n $2"
		failed=1
	fi
}
# says TEXT: the judge's output holds TEXT (a fixed string); for "", nothing but the console's
# path (a good run says no more; a failed test's reason is its own `not ok` line).
says() {
	if [ -n "$1" ]; then grep -qF -- "$1" <<<"$out"; else [ "$out" = "# console: $dir/console.log" ]; fi
}
# good NAME TEXT SUITE QEMU_RC [CUT_NOTE]: the run in $dir passes, and the judge says TEXT.
good() {
	local name=$1 want=$2
	shift 2
	judged "$@"
	if [ "$rc" -eq 0 ] && says "$want"; then result 1 "$name"; else result 0 "$name"; fi
}
# bad NAME TEXT SUITE QEMU_RC [CUT_NOTE]: the planted bad run in $dir fails (exit 1), and the
# judge says TEXT, its reason.
bad() {
	local name=$1 want=$2
	shift 2
	planted=$((planted + 1))
	judged "$@"
	if [ "$rc" -eq 1 ] && says "$want"; then
		caught=$((caught + 1))
		result 1 "$name"
	else
		result 0 "$name"
	fi
}

# The good runs.
run good
good good_run_passes "" smoke 0
run good-crlf
crlf
good good_run_with_crlf_line_ends_passes "" smoke 0
run skipped-all
ktap "KTAP version 1" "1..2" "ok 1 a # SKIP no failslab" "ok 2 b # SKIP no failslab" \
	"# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:2 error:0" "# dmlu: suite smoke finished, exit 4"
good every_test_skipped_passes "the suite skipped every test (exit 4, not a failure)" smoke 0
run kasan-reported
console_add "[   30.000001] BUG: KASAN: slab-out-of-bounds in dmlu_detectors_init+0x8c/0x120 [dmlu_detectors]"
good detector_with_its_report_passes "the planted bug was reported: [   30.000001] BUG: KASAN: slab-out-of-bounds" detect-kasan 0
run c-known
sleeping userspace_mark_region
sleeping userspace_mark_region
good c_sleeping_in_userspace_mark_region_is_listed "known upstream bug in the C module: sleeping allocation in userspace_mark_region under a rwlock (2 reports)" smoke 0
run cut
ktap "KTAP version 1" "1..3" "ok 1 writes_acknowledged" "dmlu: cut me"
good power_cut_judges_the_tests_before_it "# power cut 512 ms after the guest was ready" powercut-coarse 0 "power cut 512 ms after the guest was ready"

# The planted bad runs: a kernel report in the console.
run oops
console_add "[   25.000001] BUG: kernel NULL pointer dereference, address: 0000000000000008" \
	"[   25.000002] Oops: Oops: 0002 [#1] PREEMPT SMP NOPTI"
bad oops_fails "Oops: 0002" smoke 0
run warning
console_add "[   25.000001] WARNING: CPU: 1 PID: 230 at drivers/md/dm-region-hash.c:691 dm_rh_dec+0x7e/0x90 [dm_region_hash]"
bad warning_fails "WARNING: CPU: 1 PID: 230" smoke 0
run kasan
console_add "[   25.000001] BUG: KASAN: use-after-free in dm_rh_dec+0x2a/0x90 [dm_region_hash]"
bad kasan_fails "BUG: KASAN: use-after-free" smoke 0
run lockdep
console_add "[   25.000001] ======================================================" \
	"[   25.000002] WARNING: possible circular locking dependency detected"
bad lockdep_fails "possible circular locking dependency detected" smoke 0
run kmemleak
console_add "[   90.000001] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"
bad kmemleak_fails "kmemleak: 2 new suspected memory leaks" smoke 0
run hung
console_add "[  150.000001] INFO: task dmsetup:312 blocked for more than 120 seconds."
bad hung_task_fails "blocked for more than 120 seconds" smoke 0
run rust-panic
console_add "[   25.000001] rust_kernel: panicked at drivers/md/dm_log_userspace/log.rs:88:9:"
bad rust_panic_fails "panicked at drivers/md" smoke 0
run c-not-through
sleeping "$rust_mark_region"
bad sleeping_not_in_userspace_mark_region_fails "BUG: sleeping function called from invalid context" smoke 0
run c-one-not-through
sleeping userspace_mark_region
sleeping "$rust_mark_region"
bad sleeping_one_of_two_not_in_userspace_mark_region_fails "BUG: sleeping function called from invalid context" smoke 0
run kasan-missing
bad detector_without_its_report_fails "the planted bug was NOT reported" detect-kasan 0
run kasan-and-another
console_add "[   30.000001] BUG: KASAN: slab-out-of-bounds in dmlu_detectors_init+0x8c/0x120 [dmlu_detectors]" \
	"[   30.000002] WARNING: CPU: 0 PID: 1 at lib/refcount.c:28 refcount_warn_saturate+0x13e/0x150"
bad detector_with_another_report_fails "WARNING: CPU: 0 PID: 1" detect-kasan 0
run cut-oops
ktap "KTAP version 1" "1..3" "ok 1 writes_acknowledged" "dmlu: cut me"
console_add "[   25.000001] Oops: general protection fault, probably for non-canonical address 0xdead000000000100"
bad power_cut_with_a_report_fails "general protection fault" powercut-coarse 0 "power cut 512 ms after the guest was ready"

# The planted bad runs: the suite's KTAP.
run not-ok
ktap "KTAP version 1" "1..3" "ok 1 a" "# FAIL: the mirror did not sync" "not ok 2 b" "ok 3 c" \
	"# Totals: pass:2 fail:1 xfail:0 xpass:0 skip:0 error:0" "# dmlu: suite smoke finished, exit 1"
bad failed_test_fails "" smoke 0
run ended-early
ktap "KTAP version 1" "1..4" "ok 1 a" "ok 2 b" \
	"# Totals: pass:2 fail:0 xfail:0 xpass:0 skip:0 error:0" "# dmlu: suite smoke finished, exit 1"
bad suite_ended_early_fails "planned 4 tests, ran 2" smoke 0
run died
ktap "KTAP version 1" "1..4" "ok 1 a" "ok 2 b"
bad guest_died_mid_suite_fails "the guest did not finish the suite" smoke 0
run bail
ktap "KTAP version 1" "1..4" "Bail out! setup failed: no device-mapper mirror" \
	"# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0" "# dmlu: suite smoke finished, exit 1"
bad bail_out_fails "the suite bailed out: Bail out! setup failed" smoke 0
run skip-all
ktap "KTAP version 1" "1..0 # SKIP no /dev/ram7 (brd with rd_nr=8 rd_size=65536)" \
	"# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0" "# dmlu: suite smoke finished, exit 4"
bad suite_skipped_as_a_whole_fails "the suite could not run in the project's guest: 1..0 # SKIP no /dev/ram7" smoke 0
run no-test
ktap "KTAP version 1" "1..0" "# Totals: pass:0 fail:0 xfail:0 xpass:0 skip:0 error:0" \
	"# dmlu: suite smoke finished, exit 0"
bad suite_planned_no_test_fails "the suite planned no test" smoke 0
run no-totals
sed -i '/^# Totals:/d' "$dir/ktap.log"
bad missing_totals_fails "# no Totals line" smoke 0
run wrong-totals
sed -i 's/^# Totals: pass:2/# Totals: pass:4/' "$dir/ktap.log"
bad totals_disagreeing_fails "the suite's Totals line does not match its results (Totals: pass:2 fail:0 xfail:1 xpass:0 skip:1 error:0)" smoke 0
run wrong-totals-crlf
sed -i 's/^# Totals: pass:2/# Totals: pass:4/' "$dir/ktap.log"
crlf
bad totals_disagreeing_with_crlf_line_ends_fails "the suite's Totals line does not match its results" smoke 0
run wrong-exit
sed -i 's/finished, exit 0/finished, exit 1/' "$dir/ktap.log"
bad exit_code_disagreeing_fails "the suite exited 1, its results say 0" smoke 0
run not-ok-exit-0
ktap "KTAP version 1" "1..2" "ok 1 a" "not ok 2 b" \
	"# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:0 error:0" "# dmlu: suite smoke finished, exit 0"
bad failed_test_with_exit_0_fails "the suite exited 0, its results say 1" smoke 0

# The planted bad runs: QEMU.
run timeout
bad qemu_timed_out_fails "# debug/rust/smoke: QEMU exited with 124 (124: timed out after 600s)" smoke 124

echo "# planted bad runs caught: $caught of $planted"
[ "$n" -eq "$total" ] || { echo "# ran $n cases, planned $total"; failed=1; }
[ "$caught" -eq "$planted" ] || failed=1
exit "$failed"
