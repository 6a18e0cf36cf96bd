# shellcheck shell=sh
# lockdep must report a lock inversion planted in a throwaway Rust module (tests/detectors).
# A guest of its own: lockdep turns itself off after its first report.

TESTS="lockdep_reports_a_planted_lock_inversion"

lockdep_reports_a_planted_lock_inversion() {
	mark_dmesg
	insmod /modules/extra/dmlu_detectors.ko plant=3 || fail "insmod failed"
	new_dmesg | grep -A12 "possible circular locking" | head -16
	new_dmesg | grep -q "possible circular locking dependency detected" ||
		fail "lockdep did not report the planted inversion"
	new_dmesg | grep -q "dmlu_detectors::a" || fail "the report does not name the planted locks"
}
