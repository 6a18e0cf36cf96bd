#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# A mirror served by two nodes: the cluster guests test (tests/cluster/guests.sh: two QEMU
# guests with corosync between them, sharing a mirror's disks, the leader killed mid-write),
# told as a story: what each node saw, then the host's verdict. About 5 minutes under TCG
# once the debug kernel is built (about 10 minutes the first time). Needs root.
. "$(dirname "$0")/lib.sh"

say "building what is missing (host tools, the debug kernel, the module), then booting two guests"
log=$(mktemp)
# Its verdict is its KTAP: every test ok.
if "$TOP/tests/cluster/guests.sh" >"$log" 2>&1 && grep -q "^ok " "$log" && ! grep -q "^not ok " "$log"; then rc=0; else rc=1; fi
for n in 1 2; do
	ktap="$TOP/out/vm/debug-rust-cluster-node-node$n/ktap.log"
	[ -f "$ktap" ] || continue
	say "node $n"
	# Its narration: KTAP diagnostics and results, without kernel lines.
	tr -d '\r' <"$ktap" | grep -E "^(# |ok |not ok |dmlu: cut)" | grep -vE "^# \[ *[0-9]+\.[0-9]+\]|^# -+$|^# $" |
		sed 's/^# //; s/^/    /'
done
say "the host: both legs compared, the disk log read"
sed 's/^/    /' "$log"
rm -f "$log"
[ "$rc" -eq 0 ] || die "the cluster demo failed (consoles: out/vm/debug-rust-cluster-node-node*/console.log)"
say "demo finished: one mirror served by two nodes, the leader lost, the survivor recovered it"
