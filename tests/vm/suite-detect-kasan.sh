# shellcheck shell=sh
# KASAN must report an out-of-bounds read planted in a throwaway Rust module
# (tests/detectors): it shows Rust code is instrumented on this kernel. A guest of its own.

TESTS="kasan_reports_a_planted_out_of_bounds_read"

kasan_reports_a_planted_out_of_bounds_read() {
	mark_dmesg
	insmod /modules/extra/dmlu_detectors.ko plant=2 || fail "insmod failed"
	new_dmesg | grep -A3 "BUG: KASAN" | head -8
	new_dmesg | grep -q "BUG: KASAN: slab-out-of-bounds in .*dmlu_detectors" ||
		fail "KASAN did not report the planted read"
}
