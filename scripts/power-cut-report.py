#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Writes tests/results/power-cut.md from the power-cut runs' output.

Reads the `power-cut replay ...` and `power-cut cut ...` lines that
tests/vm/suite-powercut.sh and tests/vm/suite-powercut-coarse.sh print (in the KTAP logs
given as arguments) and sums them per module and configuration.

Usage: power-cut-report.py OUT.md HEADER-LINE LOG...
"""

import re
import sys
from collections import defaultdict

LINE = re.compile(r"power-cut (replay|cut) (.*)")
# A cut's device check, printed just before its result line: regions whose legs differed.
DIFFERING = re.compile(r"differing regions: (\d+) unmarked:")


def fields(text):
    return dict(kv.split("=", 1) for kv in text.split() if "=" in kv)


def main():
    out, header, logs = sys.argv[1], sys.argv[2], sys.argv[3:]
    rows = defaultdict(lambda: defaultdict(int))
    for path in logs:
        differing = 0
        with open(path, errors="replace") as f:
            for line in f:
                d = DIFFERING.search(line)
                if d:
                    differing = int(d.group(1))
                    continue
                m = LINE.search(line)
                if not m:
                    continue
                kind, f_ = m.group(1), fields(m.group(2))
                if not f_.get("unmarked", "").isdigit():
                    continue
                row = rows[(f_["module"], f_["config"])]
                killed = f_.get("server_killed") == "1"
                if kind == "replay":
                    row["replays"] += 1
                    row["replays_killed"] += killed
                    row["crash_points"] += int(f_.get("crash_points") or 0)
                    for key in ("legs_may_differ", "log_valid", "exercised", "cycles"):
                        row[key] += int(f_.get(key) or 0)
                    row["dirty_max"] = max(row["dirty_max"], int(f_.get("dirty_max") or 0))
                    # Weighted by crash points with a valid log, for the mean over replays.
                    row["dirty_weighted"] += float(f_.get("dirty_mean") or 0) * int(f_.get("log_valid") or 0)
                else:
                    row["cuts"] += 1
                    row["cuts_killed"] += killed
                    row["differing"] += differing
                    differing = 0
                row["unmarked"] += int(f_["unmarked"])
    lines = [
        "# Power cuts: unmarked differing regions",
        "",
        header,
        "",
        "A region is *unmarked and differing* when its two legs hold different data while the",
        "disk log on the device calls it clean: after the cut the mirror would not resync it.",
        "Replays check every state a dm-log-writes record allows, each device (the two legs,",
        "the log) with a volatile write cache of its own: what its last flush made durable, any",
        "later write lost, any version of the log written since its last flush on media",
        "(`dm-ulog-crashcheck replay --trace`). The non-vacuity counts say how often the",
        "invariant was at stake: crash points where some region's legs may differ, where the",
        "log was valid, (crash point, region) pairs checked with both (*exercised*; each replay",
        "must reach its floor), and clean-dirty-clean cycles of regions' durable bits.",
        "*Dirty* is how many of the mirror's 64 regions the durable log called dirty at a crash",
        "point with a valid log, the mean and the most: what a cut there would resync (every",
        "region is dirty at first: the mirror starts with a resync). Clears that wait for their",
        "region's idle time (the module's `clear_idle_ms`, 3 s by default) keep every region",
        "written within it dirty; `disk+hold_clears=0` sends each clear at the next flush.",
        "Process kills (`powercut-coarse`) kill QEMU while the guest writes and check the disks",
        "at the next boot, then the acknowledged writes (`dm-ulog-crashcheck devices`,",
        "`survived`); the host keeps every completed write, so they lose no unflushed write.",
        "tests/SUITES.md (`powercut`, `detect-powercut`, `powercut-coarse`) says how.",
        "",
        "| module | configuration | replays (server killed) | crash points replayed "
        "| legs may differ | log valid | exercised | cycles | dirty (mean, most) "
        "| process kills (server killed shortly before) | regions differing at a kill "
        "| unmarked differing regions |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (module, config), r in sorted(rows.items()):
        lines.append(
            f"| {module} | {config} | {r['replays']} ({r['replays_killed']}) "
            f"| {r['crash_points']} | {r['legs_may_differ']} | {r['log_valid']} "
            f"| {r['exercised']} | {r['cycles']} "
            f"| {r['dirty_weighted'] / r['log_valid'] if r['log_valid'] else 0:.1f}, {r['dirty_max']} "
            f"| {r['cuts']} ({r['cuts_killed']}) | {r['differing']} | {r['unmarked']} |"
        )
    lines.append("")
    for module in sorted({m for m, _ in rows}):
        for (m, config), r in sorted(rows.items()):
            if m == module:
                lines.append(f"- {module}, {config}: unmarked differing regions: {r['unmarked']}")
    # The planted bugs of detect-powercut (module "planted", and the servers with faults) are
    # meant to be found: they are not the project's module.
    total = sum(
        r["unmarked"]
        for (m, config), r in rows.items()
        if m == "rust" and not config.startswith("server_")
    )
    lines += [
        "",
        "The project's module (Rust), over all its configurations:",
        "",
        f"overall: unmarked differing regions: {total}",
        "",
    ]
    with open(out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {out}: overall unmarked differing regions (Rust): {total}")


if __name__ == "__main__":
    main()
