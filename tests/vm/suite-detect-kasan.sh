# shellcheck shell=sh
# SPDX-License-Identifier: GPL-2.0
# KASAN must report an out-of-bounds read planted in a throwaway Rust module
# (tests/detectors): it shows Rust code is instrumented on this kernel. A guest of its own.

TESTS="kasan_reports_a_planted_out_of_bounds_read"

kasan_reports_a_planted_out_of_bounds_read() {
	detector_reports 2 "BUG: KASAN: slab-out-of-bounds in .*dmlu_detectors"
}
