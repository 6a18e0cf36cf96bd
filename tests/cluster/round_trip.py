#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Median round trip of the first send of each request type, from fake-kernel event logs.

Usage: round_trip.py LABEL EVENTS...   Prints one line per request type over all the logs:
"LABEL TYPE: p50 N us over M requests". A measurement, not a test."""
import json
import statistics
import sys
from collections import defaultdict


def main():
    label, paths = sys.argv[1], sys.argv[2:]
    times = defaultdict(list)
    for path in paths:
        sent = {}
        with open(path) as f:
            for line in f:
                e = json.loads(line)
                if e["ev"] == "send" and e.get("why") == "first":
                    sent[e["seq"]] = (e["t"], e["type"])
                elif e["ev"] == "reply" and e.get("error") == 0 and e["seq"] in sent:
                    t0, kind = sent.pop(e["seq"])
                    times[kind].append((e["t"] - t0) / 1000)
    for kind in ("MARK_REGION", "FLUSH", "CLEAR_REGION", "GET_SYNC_COUNT"):
        if times[kind]:
            p50 = statistics.median(times[kind])
            print(f"{label} {kind}: p50 {p50:.0f} us over {len(times[kind])} requests")


if __name__ == "__main__":
    main()
