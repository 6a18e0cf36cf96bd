# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# kmemleak must report a leak planted in a throwaway Rust module (tests/detectors), or the
# other suites' "kmemleak reports nothing" would prove nothing. A guest of its own.

TESTS="kmemleak_reports_a_planted_leak"

kmemleak_reports_a_planted_leak() {
	[ -e /sys/kernel/debug/kmemleak ] || fail "this kernel has no kmemleak"
	insmod "$DMLU_EXTRA_KO_DIR/dmlu_detectors.ko" plant=1 || fail "insmod failed"
	# kmemleak reports only blocks older than 5 s.
	sleep 6
	echo scan >/sys/kernel/debug/kmemleak
	echo scan >/sys/kernel/debug/kmemleak
	head -24 /sys/kernel/debug/kmemleak
	grep -q "dmlu_detectors" /sys/kernel/debug/kmemleak || fail "kmemleak did not report the planted leak"
}
