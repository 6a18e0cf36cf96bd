#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# Judges one finished guest run of scripts/vm-run.sh from what it left in RUN_DIR: the suite's
# KTAP (ktap.log, the guest's second serial port, CRLF line ends) and the console
# (console.log). Prints one "# ..." line per problem and exits non-zero when QEMU did not exit
# cleanly (124: timed out), a test failed, the suite bailed out, planned no test ("1..0"),
# could not run at all ("1..0 # SKIP") or did not finish, the plan and the results differ,
# the suite's "# Totals:" line or exit code (kselftest's, printed on the KTAP port) disagrees
# with its results, or the console shows a kernel report (oops, BUG, WARNING, KASAN, lockdep,
# kmemleak, ...). A suite that skips every test passes. A detector suite (detect-*) passes only
# if the report of the bug it plants appears. A separate script so that planted bad runs can
# prove it fails them (tests/judge/run.sh), without a guest.
# Usage: judge-run.sh RUN_DIR SUITE QEMU_RC [CUT_NOTE]
# CUT_NOTE: set for a run whose QEMU was killed on purpose (DMLU_CUT=1, a power cut): the
# suite ends early, and only the console and the tests before the cut are judged.
# JUDGE_NAME (default SUITE) and JUDGE_LIMIT (seconds) name the run and its time limit in the
# line about QEMU's exit code.
. "$(dirname "$0")/lib.sh"

run=${1:?usage: $0 RUN_DIR SUITE QEMU_RC [CUT_NOTE]}
suite=${2:?usage}
qemu_rc=${3:?usage}
cut=${4:-}
name=${JUDGE_NAME:-$suite}
limit=${JUDGE_LIMIT:-?}

problems=0
if [ "$qemu_rc" -ne 0 ]; then
	echo "# $name: QEMU exited with $qemu_rc (124: timed out after ${limit}s)"
	problems=1
fi
[ -n "$cut" ] && echo "# $cut"
# A missing file would read as an empty one, and an empty console as a clean one.
for f in ktap.log console.log; do
	[ -f "$run/$f" ] || { echo "# no $run/$f"; exit 1; }
done
# The detector suites plant one bug each: their report must appear, and only it is allowed.
expect=
case "$suite" in
detect-kmemleak) expect='kmemleak: [0-9]+ new suspected memory leak' ;;
detect-kasan) expect='BUG: KASAN: slab-out-of-bounds' ;;
detect-lockdep) expect='possible circular locking dependency detected' ;;
esac
# Kernel reports anywhere in the console fail the run.
reports=$(grep -E "BUG:|WARNING:|Oops|Kernel panic|KASAN|UBSAN|kmemleak: [0-9]+ new suspected|circular locking|recursive locking|inconsistent lock state|lock held when returning|sleeping function called from invalid context|general protection fault|ODEBUG:|list_add corruption|list_del corruption|panicked at|hung_task|blocked for more than" "$run/console.log" || true)
# Upstream's C module (the reference) allocates from a mempool in mark_region while
# dm-region-hash holds a rwlock: a known upstream bug, which the Rust module fixes. Those
# reports (and only those: the trace must go through the C function userspace_mark_region,
# which the Rust module does not have) are listed, not failed on.
if [ -n "$reports" ]; then
	sleeping=$(grep -c "sleeping function called from invalid context" <<<"$reports" || true)
	known=$(awk '/sleeping function called from invalid context/ { b = 1; n = 0; next }
		b && /userspace_mark_region/ { k++; b = 0 } b && ++n > 40 { b = 0 } END { print k + 0 }' "$run/console.log")
	if [ "$sleeping" -gt 0 ] && [ "$sleeping" -eq "$known" ]; then
		echo "# known upstream bug in the C module: sleeping allocation in userspace_mark_region under a rwlock ($known reports)"
		reports=$(grep -v "sleeping function called from invalid context" <<<"$reports" || true)
	fi
fi
if [ -n "$expect" ]; then
	if grep -qE "$expect" <<<"$reports"; then
		echo "# the planted bug was reported: $(grep -m1 -E "$expect" <<<"$reports")"
		reports=$(grep -vE "$expect" <<<"$reports" || true)
	else
		echo "# the planted bug was NOT reported (expected /$expect/ in the console)"
		problems=1
	fi
fi
if [ -n "$reports" ]; then
	echo "# kernel reports in $run/console.log:"
	echo "$reports" | head -20 | sed 's/^/#   /'
	problems=1
fi
# The suite's results, its Totals line and its exit code (kselftest's) must agree.
KSFT_PASS=0
KSFT_FAIL=1
KSFT_SKIP=4
ktap=$(tr -d '\r' <"$run/ktap.log")
results=$(grep -E "^(not )?ok [0-9]+" <<<"$ktap" || true)
failed=$(grep -c "^not ok" <<<"$results" || true)
skipped=$(grep "^ok" <<<"$results" | grep -c "# SKIP" || true)
xfailed=$(grep "^ok" <<<"$results" | grep -c "# XFAIL" || true)
passed=$(grep "^ok" <<<"$results" | grep -vcE "# (SKIP|XFAIL)" || true)
ran=$((passed + failed + skipped + xfailed))
planned=$(sed -n 's/^1\.\.\([0-9]*\).*/\1/p' <<<"$ktap" | head -n 1)
bail=$(grep -m1 "^Bail out!" <<<"$ktap" || true)
totals=$(grep -m1 "^# Totals:" <<<"$ktap" || true)
suite_rc=$(sed -n 's/^# dmlu: suite .* finished, exit \([0-9]*\)$/\1/p' <<<"$ktap" | tail -n 1)
if [ -n "$cut" ]; then
	: # the cut ends the suite early: the tests before it are judged
else
	if [ -z "$planned" ] || [ "$ran" -ne "$planned" ]; then
		echo "# planned ${planned:-?} tests, ran $ran"
		problems=1
	fi
	[ -n "$bail" ] && { echo "# the suite bailed out: $bail"; problems=1; }
	# The project's guest has everything a suite needs: a suite that could not run at all
	# here (its environment checks skipped it) means the guest or the kernel config broke.
	if grep -q "^1\.\.0 # SKIP" <<<"$ktap"; then
		echo "# the suite could not run in the project's guest: $(grep -m1 "^1\.\.0 # SKIP" <<<"$ktap")"
		problems=1
	elif [ "$planned" = 0 ]; then
		# A plan of no test, without a reason, tested nothing (an empty TESTS list, or a
		# selection that matched none), though every count below agrees with it.
		echo "# the suite planned no test (plan 1..0 without # SKIP)"
		problems=1
	fi
	counted="# Totals: pass:$passed fail:$failed xfail:$xfailed xpass:0 skip:$skipped error:0"
	if [ -z "$totals" ]; then
		echo "# no Totals line"
		problems=1
	elif [ "$totals" != "$counted" ]; then
		echo "# the suite's Totals line does not match its results (${counted#\# })"
		problems=1
	fi
	expected=$KSFT_PASS
	if [ -n "$bail" ] || [ "$failed" -gt 0 ] || [ "$ran" -ne "${planned:-0}" ]; then
		expected=$KSFT_FAIL
	elif [ "$skipped" -eq "$ran" ] && { [ "$ran" -gt 0 ] || grep -q "^1\.\.0 # SKIP" <<<"$ktap"; }; then
		expected=$KSFT_SKIP
	fi
	if [ -z "$suite_rc" ]; then
		echo "# the guest did not finish the suite (no exit code on the KTAP port)"
		problems=1
	elif [ "$suite_rc" -ne "$expected" ]; then
		echo "# the suite exited $suite_rc, its results say $expected"
		problems=1
	elif [ "$suite_rc" -eq "$KSFT_SKIP" ] && ! grep -q "^1\.\.0 # SKIP" <<<"$ktap"; then
		echo "# the suite skipped every test (exit $KSFT_SKIP, not a failure)"
	fi
fi
echo "# console: $run/console.log"
[ "$problems" -eq 0 ] && [ "$failed" -eq 0 ]
