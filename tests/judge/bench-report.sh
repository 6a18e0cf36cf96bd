#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
# bench/report.py's check of its windows, on the host: at queue depth 1 the C module's request
# stream (and the Rust module's as C's) costs the same requests per write whatever the timing,
# so each wall-clock round must agree within 2% with the -icount boot, which host load cannot
# move. The QD1 records of the run on 58f013e, whose windows opened seconds late as its boot
# grew old (a log grepped at each edge), must fail it from round 2 on; the same records with
# honest windows must pass; one planted round 3% off must fail, 1.5% off pass. Prints KTAP;
# exits non-zero on a wrong verdict.
set -u
here=$(cd "$(dirname "$0")" && pwd)
report=$here/../../bench/report.py
fixture=$here/bench-qd1-58f013e.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
n=0
echo "KTAP version 1"
echo "1..4"
verdict() {
	n=$((n + 1))
	if [ "$1" = 0 ]; then echo "ok $n $2"; else echo "not ok $n $2"; failed=$((failed + 1)); fi
}

# honest FILE [CFG ROUND FACTOR]: the fixture's wall records given the block-layer write count
# that makes their requests per write the -icount boot's exactly (times FACTOR for one record).
honest() {
	python3 - "$fixture" "$@" <<'PY'
import json, statistics, sys
src, out = sys.argv[1], sys.argv[2]
cfg, rnd, factor = (sys.argv[3], int(sys.argv[4]), float(sys.argv[5])) if len(sys.argv) > 3 else (None, None, 1)
data = json.load(open(src))
fio = [r for r in data["records"] if r.get("kind") == "fio"]
def rpw(r):
    return r["reqs"] * 1000 / r["window_ms"] / r["iops"]
want = {c: statistics.mean(rpw(r) for r in fio if r["cfg"] == c and r["clock"] == "icount")
        for c in {r["cfg"] for r in fio if r["clock"] == "icount"}}
for r in fio:
    if r["clock"] == "wall" and r["cfg"] in want:
        f = factor if (r["cfg"], r["round"]) == (cfg, rnd) else 1
        r["writes"] = round(r["reqs"] / (want[r["cfg"]] * f))
        r["per_write_from"] = "writes"
json.dump(data, open(out, "w"))
PY
}

python3 "$report" "$fixture" --out-dir "$tmp/old" >/dev/null 2>"$tmp/old.err"
rc=$?
bad=$(grep -c "more than" "$tmp/old.err")
echo "# the run on 58f013e: exit $rc, $bad of 30 rounds off (c, c_if and rust; its -icount boot had no rust_if); $(grep -o 'qd1_requests_per_write_c_round_10: [^,]*' "$tmp/old.err")"
[ "$rc" = 3 ] && [ "$bad" -ge 24 ] && ! grep -q "_round_1:" "$tmp/old.err"
verdict $? "late_windows_fail_the_check"

honest "$tmp/honest.json"
python3 "$report" "$tmp/honest.json" --out-dir "$tmp/honest" >/dev/null 2>"$tmp/honest.err"
rc=$?
echo "# honest windows: exit $rc"
[ "$rc" = 0 ]
verdict $? "honest_windows_pass"

honest "$tmp/planted.json" rust 7 1.03
python3 "$report" "$tmp/planted.json" --out-dir "$tmp/planted" >/dev/null 2>"$tmp/planted.err"
rc=$?
echo "# one round 3% off: exit $rc: $(cat "$tmp/planted.err")"
[ "$rc" = 3 ] && [ "$(grep -c "more than" "$tmp/planted.err")" = 1 ] && grep -q "qd1_requests_per_write_rust_round_7:" "$tmp/planted.err"
verdict $? "one_round_off_by_3_percent_fails"

honest "$tmp/close.json" c 4 0.985
python3 "$report" "$tmp/close.json" --out-dir "$tmp/close" >/dev/null 2>"$tmp/close.err"
rc=$?
echo "# one round 1.5% off: exit $rc"
[ "$rc" = 0 ]
verdict $? "one_round_off_by_1_5_percent_passes"

echo "# Totals: pass:$((n - failed)) fail:$failed"
[ "$failed" = 0 ]
