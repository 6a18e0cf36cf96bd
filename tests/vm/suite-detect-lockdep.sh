# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# lockdep must report a lock inversion planted in a throwaway Rust module (tests/detectors).
# A guest of its own: lockdep turns itself off after its first report.

TESTS="lockdep_reports_a_planted_lock_inversion"

lockdep_reports_a_planted_lock_inversion() {
	detector_reports 3 "possible circular locking dependency detected"
	new_dmesg | grep -q "dmlu_detectors::a" || fail "the report does not name the planted locks"
}
