#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# The main job, end to end: builds what is missing (host tools, the perf test kernel, the
# module; vm-run.sh adds the userspace programs and the initramfs), boots a VM, and runs the
# demo suite there with the Rust module.
. "$(dirname "$0")/lib.sh"

say "step 1/4: host tools and sources"
"$TOP/scripts/host-deps.sh" >/dev/null
"$TOP/scripts/fetch-sources.sh" >/dev/null
say "step 2/4: the perf test kernel (cached after the first build)"
"$TOP/scripts/build-kernel.sh" perf >/dev/null
say "step 3/4: the Rust module"
ko=$("$TOP/scripts/build-module.sh" perf)
echo "    $ko ($(stat -c %s "$ko") bytes)"
say "step 4/4: booting a VM (QEMU) and running the demo inside it"
log=$(mktemp)
if "$TOP/scripts/vm-run.sh" perf rust demo 300 >"$log" 2>&1; then rc=0; else rc=$?; fi
# Narration is KTAP diagnostics; kernel lines with timestamps are noise here.
sed -n 's/^# //p; s/^\(not ok .*\)/!! \1/p' "$log" | grep -vE "^\[ *[0-9]+\.[0-9]+\]|^console:" | sed 's/^/    /'
if [ "$rc" -eq 0 ]; then
	say "demo finished: every step succeeded (guest console: out/vm/perf-rust-demo/console.log)"
else
	cat "$log" | tail -n 20
	die "the demo failed (guest console: out/vm/perf-rust-demo/console.log)"
fi
rm -f "$log"
