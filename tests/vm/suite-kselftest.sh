# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# The suites the kselftest way: the kernel's run_kselftest.sh runs a suite from a tree that
# `make -C tests install` made (scripts/kselftest-run.sh adds it to the guest as /kselftest),
# with that tree's own programs and module, as in any Rust-enabled guest.

TESTS="smoke_via_run_kselftest"

KSFT_TREE=/kselftest

smoke_via_run_kselftest() {
	[ -x "$KSFT_TREE/run_kselftest.sh" ] || fail "no $KSFT_TREE/run_kselftest.sh in the guest"
	grep -qx "dm-log-userspace:test-smoke.sh" "$KSFT_TREE/kselftest-list.txt" ||
		fail "kselftest-list.txt does not list dm-log-userspace:test-smoke.sh"
	# Nothing of the project's guest: the tree must bring its programs and module. Appending:
	# the runner writes the tests' output by opening /dev/stdout again.
	: >/tmp/ksft.out
	env -i PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/ "$KSFT_TREE/run_kselftest.sh" \
		-t dm-log-userspace:test-smoke.sh >>/tmp/ksft.out 2>&1
	rc=$?
	cat /tmp/ksft.out
	[ "$rc" = "$KSFT_PASS" ] || fail "run_kselftest.sh exited $rc"
	grep -q "^ok 1 selftests: dm-log-userspace: test-smoke.sh$" /tmp/ksft.out ||
		fail "no 'ok 1 selftests: dm-log-userspace: test-smoke.sh' line"
	# The smoke suite's own totals, as the runner passed them on: every test ran and passed.
	grep -qE "^# # Totals: pass:[1-9][0-9]* fail:0 xfail:0 xpass:0 skip:0 error:0$" /tmp/ksft.out ||
		fail "the smoke suite's Totals line is missing or shows failures or skips"
	grep -q "^# ok [0-9]* module_loads$" /tmp/ksft.out || fail "the smoke suite did not load the module"
}
