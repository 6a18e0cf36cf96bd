#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Checks server/dm-ulogd.service with systemd-analyze, offline (no running systemd needed):
#   - `verify` must accept it without a word (it only warns about unknown keys and the like,
#     so any output fails the check);
#   - `security --offline=true` must rate its exposure at most $THRESHOLD (tenths: 25 = 2.5;
#     the unit scores 1.8 "OK" with systemd 252);
#   - it must be Type=notify, which the server answers with READY=1 (server/tests/notify.rs).
# systemd-analyze comes with Debian's `systemd` package. verify wants ExecStart= to exist and
# be executable, so it runs on a copy of the unit whose ExecStart= names the built binary
# (DMULOGD_BIN, default target/debug/dm-ulogd, built if missing).
# Usage: server/check-unit.sh    exit status 0 when both checks pass.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
unit=$here/dm-ulogd.service
THRESHOLD=${THRESHOLD:-25}
bin=${DMULOGD_BIN:-$root/target/debug/dm-ulogd}

command -v systemd-analyze >/dev/null || {
	echo "check-unit: systemd-analyze not found (apt-get install systemd)" >&2
	exit 1
}
if [ ! -x "$bin" ]; then
	(cd "$root" && cargo build --quiet -p dm-ulogd --bin dm-ulogd)
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|^ExecStart=/usr/sbin/dm-ulogd|ExecStart=$bin|" "$unit" >"$tmp/dm-ulogd.service"
grep -q "^ExecStart=$bin" "$tmp/dm-ulogd.service" || {
	echo "check-unit: no ExecStart=/usr/sbin/dm-ulogd line in $unit" >&2
	exit 1
}

failed=0
if ! grep -qx "Type=notify" "$unit"; then
	echo "check-unit: $unit is not Type=notify (dm-ulogd sends READY=1 when it serves)" >&2
	failed=1
fi
if ! out=$(systemd-analyze verify --man=no "$tmp/dm-ulogd.service" 2>&1) || [ -n "$out" ]; then
	echo "check-unit: systemd-analyze verify rejects $unit:" >&2
	echo "$out" | sed "s|$tmp/|server/|" >&2
	failed=1
else
	echo "check-unit: systemd-analyze verify: ok"
fi

if ! out=$(systemd-analyze security --offline=true --threshold="$THRESHOLD" "$tmp/dm-ulogd.service" 2>&1); then
	echo "$out" | grep -v '^✓' >&2
	echo "check-unit: exposure above $THRESHOLD/100 (see the ✗ lines above)" >&2
	failed=1
else
	echo "check-unit: $(echo "$out" | grep 'Overall exposure level' | sed 's/^→ //') (threshold $THRESHOLD/100)"
fi
exit $failed
