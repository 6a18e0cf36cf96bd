#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Writes latest.json and latest.md from the BENCH lines of a `make bench` run.

The input is the KTAP logs of tests/vm/suite-bench.sh's boots, where each figure is a diagnostic
line "# BENCH kind=... key=value ... clock=wall|icount", or a latest.json written before (it
keeps those records). Records of the -icount boot (clock=icount) count guest instructions
where the others count time; each clock's records are read apart.
Every ratio is taken within one round, whose configurations ran back to back in the same boot,
and is summarised over the rounds as their geometric mean with a 95% bootstrap interval (rounds
resampled), beside the median and min–max. Absolute figures are TCG's and
mean little on their own: they stay in the JSON's records. Standard library only.
"""

import argparse
import datetime
import json
import math
import random
import re
import statistics
import sys
from pathlib import Path

CASES = {
    "rand_qd1_j1": "random 4k, QD1, 1 job",
    "rand_qd8_j1": "random 4k, QD8, 1 job",
    "rand_qd1_j4": "random 4k, QD1, 4 jobs",
    "rand_qd8_j4": "random 4k, QD8, 4 jobs",
}
SCALE_MIRRORS = (1, 2, 4, 8, 16, 32, 64)
RANDOM_CASES = list(CASES)
BOOTSTRAP_RESAMPLES = 10000


def parse_ktap(text):
    """The BENCH records of a KTAP log, and the test results."""
    records, tests = [], []
    for line in text.splitlines():
        m = re.match(r"^# BENCH (.*)$", line)
        if m:
            records.append({k: num(v) for k, v in (t.split("=", 1) for t in m.group(1).split() if "=" in t)})
        m = re.match(r"^(not ok|ok) \d+ (\S+)", line)
        if m:
            tests.append({"test": m.group(2), "ok": m.group(1) == "ok"})
    return records, tests


def num(v):
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


class Run:
    """The records of one clock of a run, looked up by kind, configuration and round."""

    def __init__(self, records, clock="wall"):
        self.records = [r for r in records if r.get("clock", "wall") == clock]
        self.rounds = sorted({r["round"] for r in self.records if isinstance(r.get("round"), int)})

    def find(self, kind, **match):
        for r in self.records:
            if r.get("kind") == kind and all(r.get(k) == v for k, v in match.items()):
                return r
        return None

    def field(self, kind, name, **match):
        r = self.find(kind, **match)
        v = r.get(name) if r else None
        return v if isinstance(v, (int, float)) else None

    def iops(self, cfg, case, rnd):
        return self.field("fio", "iops", cfg=cfg, case=case, round=rnd)

    def requests_per_write(self, cfg, case, rnd):
        """Log requests per write: the rate of requests in a window inside fio's steady run
        over fio's IOPS (runs before window_ms was recorded have none)."""
        return per_write(self.find("fio", cfg=cfg, case=case, round=rnd))

    def us_per_request(self, cfg, case, rnd):
        """Time per log request at the mirror's pace: 1 / (IOPS x requests per write). With
        requests per write it splits IOPS exactly: IOPS = 1 / (requests per write x this)."""
        iops, rpw = self.iops(cfg, case, rnd), self.requests_per_write(cfg, case, rnd)
        return 1e6 / (iops * rpw) if iops and rpw else None

    def over_cases(self, f, cfg, rnd):
        """The geometric mean of f over the random cases of one round (all or nothing)."""
        xs = [f(cfg, c, rnd) for c in RANDOM_CASES]
        return geomean(xs) if all(xs) else None

    def roundtrip_ns(self, cfg, rnd):
        """One log request's round trip: a status costs a userspace log two requests, one after
        the other, and the core log none; the difference of their p50s over the requests."""
        mine = self.find("status", cfg=cfg, round=rnd)
        core = self.field("status", "p50_ns", cfg="core", round=rnd)
        if not mine or core is None or not mine.get("reqs"):
            return None
        per_status = mine["reqs"] / (mine["count"] + mine.get("warmup", 0))
        return (mine["p50_ns"] - core) / per_status

    def pingpong_ns(self, rnd):
        return self.field("pingpong", "p50_ns", label=f"round_{rnd}")

    def scale(self, cfg, n, name, rnd):
        """A figure of n mirrors written at once; only from runs that took IOPS and requests
        in the same window (iops_from=window), unlike those before: their IOPS were fio's
        whole-run integers, and 64 threads could start after the window."""
        r = self.find("scale", cfg=cfg, mirrors=n, round=rnd)
        v = r.get(name) if r and r.get("iops_from") == "window" else None
        return v if isinstance(v, (int, float)) else None

    def scale_requests_per_write(self, cfg, n, rnd):
        r = self.find("scale", cfg=cfg, mirrors=n, round=rnd)
        return per_write(r) if r and r.get("iops_from") == "window" else None

    def memory_per_log(self, cfg, rnd):
        """Bytes of kernel memory per mirror: slab objects, and stacks, vmalloc and per-cpu."""
        r = self.find("memory", cfg=cfg, round=rnd)
        if not r:
            return None
        if "slab_bytes" in r:
            slab = r["slab_bytes"]
        else:  # records of runs before /proc/slabinfo was read
            slab = r["slab_kb"] * 1024
        return (slab + (r["kstack_kb"] + r["vmalloc_kb"] + r["percpu_kb"]) * 1024) / r["logs"]

    def log_slab_per_log(self, cfg, rnd):
        """Slab bytes per mirror beyond a core-log mirror's, in the same round: what the log
        module and its log take (the mirror's own memory is the same with every log; the
        core log keeps its bitmaps in vmalloc, not in slab)."""
        mine, core = self.find("memory", cfg=cfg, round=rnd), self.find("memory", cfg="core", round=rnd)
        if not mine or not core or "slab_bytes" not in mine or "slab_bytes" not in core:
            return None
        return (mine["slab_bytes"] - core["slab_bytes"]) / mine["logs"]


def per_write(r):
    """Requests per write of a fio or scale record: the requests over the writes the block
    device completed in the same window; for records of runs before fio windows counted writes
    (no per_write_from), requests per second in the window over fio's whole-run IOPS."""
    if not r or not isinstance(r.get("reqs"), int):
        return None
    if r.get("per_write_from") == "writes" or r.get("iops_from") == "window":
        return r["reqs"] / r["writes"] if r.get("writes") else None
    if not r.get("iops") or not r.get("window_ms"):
        return None
    return r["reqs"] * 1000 / r["window_ms"] / r["iops"]


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def bootstrap_ci(xs, seed=1):
    """95% interval of the geometric mean of positive xs, by resampling them (seeded: the
    report is the same for the same records)."""
    if len(xs) < 2:
        return None
    rng = random.Random(seed)
    means = sorted(geomean(rng.choices(xs, k=len(xs))) for _ in range(BOOTSTRAP_RESAMPLES))
    return [means[int(0.025 * len(means))], means[int(0.975 * len(means)) - 1]]


def spread(per_round):
    """Geometric mean with its 95% bootstrap interval, median, min and max of {round: value},
    without the rounds that lack a value."""
    vals = {k: v for k, v in per_round.items() if v is not None}
    if not vals:
        return None
    xs = list(vals.values())
    out = {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "per_round": vals}
    if all(x > 0 for x in xs):
        out["geomean"] = geomean(xs)
        out["ci95"] = bootstrap_ci(xs)
    return out


def combined(rows_, key, what):
    """One ratio over several rows: per round, the geometric mean of the rows' ratios (the
    cases stay paired within a round); then summarised over the rounds as `spread` does."""
    per_round = {}
    for r in rows_:
        for rnd, v in ((r.get(what) or {}).get("per_round") or {}).items():
            per_round.setdefault(rnd, []).append(v)
    full = {rnd: geomean(vs) for rnd, vs in per_round.items() if len(vs) == len(rows_) and all(v > 0 for v in vs)}
    s = spread(full)
    return {"key": key, **s} if s else None


def ratios(table):
    """The figures issue 15's targets name (bench/README.md), where this run measured them;
    None where it did not."""
    by_key = {r["key"]: r for r in table}

    def pick(keys, what="rust_over_c"):
        rows_ = [by_key[k] for k in keys if k in by_key]
        return combined(rows_, keys, what) if rows_ and len(rows_) == len(keys) else None

    def g(s):
        return s.get("geomean") if s else None

    def cell(key, what="rust_over_c"):
        return (by_key.get(key) or {}).get(what)

    iops = pick([f"iops_{c}" for c in RANDOM_CASES])
    text = cell("module_text")

    def median(key, what="rust_over_c"):
        s = cell(key, what)
        return s["median"] if s else None

    return {
        "rust_over_c_iops": g(iops),
        "rust_over_c_iops_ci_low": iops["ci95"][0] if iops and iops.get("ci95") else None,
        "rust_over_c_iops_integrated_flush": g(pick([f"iops_{c}_if" for c in RANDOM_CASES])),
        "rust_fast_over_c_iops": g(pick([f"iops_{c}_fast" for c in RANDOM_CASES])),
        "userspace_fast_over_core_iops": g(cell("iops_rand_qd8_j4_fast", "rust_over_baseline")),
        "roundtrip_p50_rust_over_c": g(cell("roundtrip_p50")),
        "roundtrip_p50_over_pingpong": g(cell("roundtrip_p50", "rust_over_baseline")),
        "rust_fast_stock_server_over_c_iops": g(pick([f"iops_{c}_fast_v3" for c in RANDOM_CASES])),
        # No longer a target: with identical request streams its bound is about 1.0.
        "rust_over_c_iops_64_mirrors": g(cell("scale_64_iops")),
        # Kernel memory per mirror (slab, stacks, vmalloc, per-cpu), each flush mode apart.
        "per_mirror_kernel_memory_rust_over_c": g(cell("memory_per_log")),
        "per_mirror_kernel_memory_rust_over_c_integrated_flush": g(cell("memory_per_log_if")),
        "module_text_rust_over_c": text["median"] if text else None,
        # What the IOPS ratio is made of: IOPS = 1 / (requests per write x time per request),
        # so rust_over_c_iops = 1 / (these two multiplied).
        "requests_per_write_rust_over_c": g(cell("requests_per_write")),
        "time_per_request_rust_over_c": g(cell("us_per_request")),
        "requests_per_write_fast_over_c_integrated_flush": g(cell("requests_per_write_fast")),
        # Guest instructions (the -icount boot), which another VM cannot move.
        "instructions_per_request_rust_over_c": g(cell("icount_roundtrip")),
        "instructions_per_write_rust_over_c": g(cell("icount_per_write")),
        # Writes per second are 10^9 / instructions per write under -icount.
        "userspace_fast_over_core_iops_qd1_icount": inverse(g(cell("icount_per_write_fast", "rust_over_baseline"))),
    }


def inverse(v):
    return 1 / v if v else None


def absolute(run, icount):
    """The figures that are no ratio: rust_fast's requests per write in the target's case,
    the log's own slab per mirror, and the windows' overshoot."""
    def per_rounds(f):
        return spread({r: f(r) for r in run.rounds})

    def med(s):
        return s["median"] if s else None

    over = [r["overshoot_ms"] for r in run.records if r.get("kind") in ("fio", "scale") and "overshoot_ms" in r]
    return {
        "rust_fast_requests_per_write": med(per_rounds(
            lambda r: run.requests_per_write("rust_fast", "rand_qd8_j4", r))),
        "rust_fast_requests_per_write_qd1": med(per_rounds(
            lambda r: run.requests_per_write("rust_fast", "rand_qd1_j1", r))),
        "per_log_bytes_rust": med(per_rounds(lambda r: run.log_slab_per_log("rust", r))),
        "per_log_bytes_rust_integrated_flush": med(per_rounds(lambda r: run.log_slab_per_log("rust_if", r))),
        "per_log_bytes_c": med(per_rounds(lambda r: run.log_slab_per_log("c", r))),
        "per_log_bytes_c_integrated_flush": med(per_rounds(lambda r: run.log_slab_per_log("c_if", r))),
        "window_overshoot_ms_max": max(over) if over else None,
    }


# The configurations whose request stream per write does not depend on timing at queue depth 1
# (every write marks, flushes and clears its region): their requests per write must agree,
# in every round, with the -icount boot's, which no host load can move.
QD1_STEADY = ("c", "c_if", "rust", "rust_if")
QD1_TOLERANCE = 0.02


def qd1_checks(run, icount):
    """Each wall round's QD1 requests per write against the -icount boot's (their mean), for
    the configurations of QD1_STEADY; a test each, not ok beyond QD1_TOLERANCE."""
    out = []
    for cfg in QD1_STEADY:
        ref = [icount.requests_per_write(cfg, "rand_qd1_j1", r) for r in icount.rounds]
        ref = [x for x in ref if x]
        if not ref:
            continue
        want = statistics.mean(ref)
        if want <= 0:
            continue
        for rnd in run.rounds:
            got = run.requests_per_write(cfg, "rand_qd1_j1", rnd)
            if got is None:
                continue
            off = got / want - 1
            out.append({"test": f"qd1_requests_per_write_{cfg}_round_{rnd}", "ok": abs(off) <= QD1_TOLERANCE,
                        "wall": got, "icount": want, "off": off})
    return out


def instruction_split(run, icount):
    """Guest instructions per write under -icount, split into the log's requests (requests per
    write x instructions per request round trip, the Rust module's) and the rest, for the
    Rust module with its features on and for the core log, per case: the median over the
    -icount rounds."""
    out = []
    for cfg in ("rust_fast", "c_if", "core"):
        for case in ("rand_qd1_j1", "rand_qd8_j4"):
            per = []
            for rnd in icount.rounds:
                iops = icount.iops(cfg, case, rnd)
                rpw = 0.0 if cfg == "core" else icount.requests_per_write(cfg, case, rnd)
                ipr = icount.roundtrip_ns("rust" if cfg.startswith("rust") else "c", rnd)
                if not iops or rpw is None or ipr is None:
                    continue
                per.append((1e9 / iops, rpw, ipr))
            if not per:
                continue
            ipw = statistics.median(p[0] for p in per)
            rpw = statistics.median(p[1] for p in per)
            ipr = statistics.median(p[2] for p in per)
            out.append({"cfg": cfg, "case": case, "instructions_per_write": ipw, "requests_per_write": rpw,
                        "instructions_per_request": ipr, "in_requests": rpw * ipr,
                        "rest": ipw - rpw * ipr})
    return out


def ratio(a, b):
    return a / b if a is not None and b else None


def positive(v):
    return v if v is not None and v > 0 else None


def rows(run, icount, ko_sizes):
    """The table: per configuration, a figure for Rust, C and a baseline, taken each round."""
    out = []

    def row(key, label, baseline, lower_is_better, rust, c, base, once=False, src=run):
        rounds = [0] if once else src.rounds
        per = {name: {rnd: f(rnd) for rnd in rounds} for name, f in (("rust", rust), ("c", c), ("base", base)) if f}
        cell = {
            "rust_over_c": spread({r: ratio(per["rust"][r], per["c"][r]) for r in rounds}),
            "rust_over_baseline": spread({r: ratio(per["rust"][r], per["base"][r]) for r in rounds}) if base else None,
            "c_over_baseline": spread({r: ratio(per["c"][r], per["base"][r]) for r in rounds}) if base else None,
        }
        if any(cell.values()):
            out.append({"key": key, "configuration": label, "baseline": baseline,
                        "lower_is_better": lower_is_better, "measured_once": once,
                        "clock": "icount" if src is icount else "wall", "rounds": len(src.rounds), **cell})

    for case, name in CASES.items():
        for flush in ("", "_if"):
            row(f"iops_{case}{flush}", f"IOPS, {name}" + (", integrated_flush" if flush else ""),
                "core log", False,
                lambda r, f=flush, k=case: run.iops("rust" + f, k, r),
                lambda r, f=flush, k=case: run.iops("c" + f, k, r),
                lambda r, k=case: run.iops("core", k, r))
    # The request-saving features (and integrated_flush) on, against the C module with
    # integrated_flush: the "Rust" column is rust_fast, the "C" column c_if.
    for case, name in CASES.items():
        row(f"iops_{case}_fast", f"IOPS, {name}, request-saving features on (÷ C with integrated_flush)",
            "core log", False,
            lambda r, k=case: run.iops("rust_fast", k, r), lambda r, k=case: run.iops("c_if", k, r),
            lambda r, k=case: run.iops("core", k, r))
    # The same module and features with a server that announces no extension (protocol v3).
    for case, name in CASES.items():
        row(f"iops_{case}_fast_v3",
            f"IOPS, {name}, features on, server without extensions (÷ C with integrated_flush)",
            "core log", False,
            lambda r, k=case: run.iops("rust_fast_v3", k, r), lambda r, k=case: run.iops("c_if", k, r),
            lambda r, k=case: run.iops("core", k, r))
    row("requests_per_write_fast", "log requests per write, random cases, features on (÷ C with integrated_flush)",
        None, True,
        lambda r: run.over_cases(run.requests_per_write, "rust_fast", r),
        lambda r: run.over_cases(run.requests_per_write, "c_if", r), None)
    # The random cases' IOPS ratio, split: IOPS = 1 / (requests per write x time per request).
    row("requests_per_write", "log requests per write, random cases", None, True,
        lambda r: run.over_cases(run.requests_per_write, "rust", r),
        lambda r: run.over_cases(run.requests_per_write, "c", r), None)
    row("us_per_request", "time per log request at the mirror's pace, random cases", None, True,
        lambda r: run.over_cases(run.us_per_request, "rust", r),
        lambda r: run.over_cases(run.us_per_request, "c", r), None)
    row("roundtrip_p50", "log request round trip, p50", "connector ping-pong", True,
        lambda r: run.roundtrip_ns("rust", r), lambda r: run.roundtrip_ns("c", r), run.pingpong_ns)
    row("icount_roundtrip", "guest instructions per log request round trip (p50)", "connector ping-pong", True,
        lambda r: icount.roundtrip_ns("rust", r), lambda r: icount.roundtrip_ns("c", r), icount.pingpong_ns,
        src=icount)

    def per_write(cfg):
        # Under -icount a virtual second is 10^9 instructions.
        return lambda r: ratio(1e9, icount.iops(cfg, "rand_qd1_j1", r))

    row("icount_per_write", "guest instructions per write, random 4k, QD1, 1 job", "core log", True,
        per_write("rust"), per_write("c"), per_write("core"), src=icount)
    row("icount_per_write_fast", "guest instructions per write, random 4k, QD1, 1 job, features on "
        "(÷ C with integrated_flush)", "core log", True,
        per_write("rust_fast"), per_write("c_if"), per_write("core"), src=icount)
    for n in SCALE_MIRRORS:
        row(f"scale_{n}_iops", f"IOPS, {n} mirror{'s' if n > 1 else ''} written at once", None, False,
            lambda r, m=n: run.scale("rust", m, "iops", r), lambda r, m=n: run.scale("c", m, "iops", r), None)
    row("scale_64_iops_min", "IOPS of the slowest of 64 mirrors written at once", None, False,
        lambda r: run.scale("rust", 64, "iops_min", r), lambda r: run.scale("c", 64, "iops_min", r), None)
    row("scale_64_requests_per_write", "log requests per write, 64 mirrors written at once", None, True,
        lambda r: run.scale_requests_per_write("rust", 64, r), lambda r: run.scale_requests_per_write("c", 64, r),
        None)
    for flush in ("", "_if"):
        row(f"memory_per_log{flush}", f"kernel memory per mirror, 256 mirrors{', integrated_flush' if flush else ''}",
            "core log", True,
            lambda r, f=flush: run.memory_per_log("rust" + f, r), lambda r, f=flush: run.memory_per_log("c" + f, r),
            lambda r: run.memory_per_log("core", r))
    for flush in ("", "_if"):
        row(f"log_slab_per_log{flush}",
            f"slab per log beyond a core-log mirror's, 256 mirrors{', integrated_flush' if flush else ''}",
            None, True,
            lambda r, f=flush: run.log_slab_per_log("rust" + f, r), lambda r, f=flush: run.log_slab_per_log("c" + f, r),
            None)
    # Measured at setup, not in the rounds; a reading at or below 0 is noise, no figure.
    row("module_load_slab", "slab the module takes once (loaded, no log, no server; median of 3 loads)",
        None, True,
        lambda _: positive(run.field("module", "load_slab_bytes", cfg="rust")),
        lambda _: positive(run.field("module", "load_slab_bytes", cfg="c")), None, once=True)
    row("module_size", "module size in memory (/proc/modules)", None, True,
        lambda _: run.field("module", "size", cfg="rust"), lambda _: run.field("module", "size", cfg="c"),
        None, once=True)
    if ko_sizes.get("rust") and ko_sizes.get("c"):
        row("module_text", "module text size (.ko)", None, True,
            lambda _: ko_sizes["rust"]["text"], lambda _: ko_sizes["c"]["text"], None, once=True)
    return out


def fmt(s, rounds, once):
    """median (min–max), and how many rounds when some lack the figure."""
    if not s:
        return "–"
    if once:
        return f"{s['median']:.2f}, one measurement"
    text = f"{s.get('geomean', s['median']):.2f}"
    if s.get("ci95"):
        text += f" [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]"
    if s["min"] != s["max"]:
        text += f" ({s['min']:.2f}–{s['max']:.2f})"
    n = len(s["per_round"])
    if n != rounds:
        text += f", {n} round{'s' if n > 1 else ''}"
    return text


def markdown(rep):
    run = rep["run"]
    env = run["guest"]
    failed = [t["test"] for t in rep["tests"] if not t["ok"]]
    other = run.get("other_vms_running_fraction")
    facts = [
        f"- commit: {run['commit']}, tree {'clean' if run['tree_clean'] else 'dirty (uncommitted changes were measured)'}",
        f"- kernel: {run['kernel']} (perf), QEMU {run['accelerator'].upper()}, {env.get('cpus')} vCPUs "
        f"(one online for the measurements), clocksource {env.get('clocksource')}, {env.get('fio')}",
        f"- date: {run['date']}",
        f"- rounds: {run['rounds']}"
        + (f" (and {run['icount_rounds']} counting instructions under -icount)" if run.get("icount_rounds") else "")
        + (f", in a random order balanced over the rounds (seed {env['seed']})" if env.get("seed") is not None
           else ", in alternating order")
        + f"; guest time {run.get('vm_seconds') or '–'} s",
        "- another VM on the host: "
        + ("not sampled" if other is None else f"during {other:.0%} of the measurements" if other else "none"),
        f"- failed measurements: {', '.join(failed) if failed else 'none'}",
    ]
    over = rep["ratios"].get("window_overshoot_ms_max")
    facts.append("- window edges: " + ("not recorded" if over is None else
                 f"each window's counts read within {over} ms of its edges (the largest overshoot)"))
    checks = rep.get("checks") or []
    if checks:
        worst = max(checks, key=lambda c: abs(c["off"]))
        facts.append(f"- QD1 requests per write against the -icount boot's: {sum(c['ok'] for c in checks)} of "
                     f"{len(checks)} within ±{QD1_TOLERANCE:.0%} (the largest difference {worst['off']:+.2%}, "
                     f"{worst['test']})")
    if run.get("note"):
        facts.append(f"- note: {run['note']}")
    lines = [
        "# make bench: latest results",
        "",
        *facts,
        "",
        "| configuration | baseline | Rust ÷ C | Rust ÷ baseline | C ÷ baseline |",
        "|---|---|---|---|---|",
    ]
    for r in rep["table"]:
        label = r["configuration"] + (" (lower is better)" if r["lower_is_better"] else "")
        cells = [fmt(r[k], r.get("rounds", run["rounds"]), r["measured_once"]) for k in ("rust_over_c", "rust_over_baseline", "c_over_baseline")]
        lines.append(f"| {label} | {r['baseline'] or '–'} | " + " | ".join(cells) + " |")
    split = rep.get("instruction_split") or []
    if split:
        lines += [
            "",
            "Guest instructions per write under -icount (median over its rounds), split into the log's "
            "requests (requests per write × instructions per request round trip) and the rest:",
            "",
            "| configuration | case | instructions per write | requests per write | in requests | rest |",
            "|---|---|---|---|---|---|",
        ]
        for x in split:
            lines.append(f"| {x['cfg']} | {CASES[x['case']]} | {x['instructions_per_write']:,.0f} | "
                         f"{x['requests_per_write']:.4f} | {x['in_requests']:,.0f} | {x['rest']:,.0f} |")
    absolute_ = {k: v for k, v in rep["ratios"].items() if k in ABSOLUTE_LABELS}
    if absolute_:
        lines += ["", "| figure | value |", "|---|---|"]
        for k, label in ABSOLUTE_LABELS.items():
            v = absolute_.get(k)
            lines.append(f"| {label} (`{k}`) | {'–' if v is None else f'{v:,.4g}'} |")
    lines += [
        "",
        "Each cell is a ratio taken within each round, shown as the geometric mean over the rounds, "
        "[its 95% bootstrap interval] and (min–max); a row with `integrated_flush` compares the "
        "two modules with that feature. What "
        "each figure measures: [`bench/README.md`](../README.md); every absolute figure: "
        "`records` in [`latest.json`](latest.json).",
    ]
    return "\n".join(lines) + "\n"


# Figures that are no ratio, with their labels in latest.md.
ABSOLUTE_LABELS = {
    "rust_fast_requests_per_write": "log requests per write, features on, QD8, 4 jobs (median over rounds)",
    "rust_fast_requests_per_write_qd1": "log requests per write, features on, QD1, 1 job",
    "per_log_bytes_rust": "slab bytes per log beyond a core-log mirror's, Rust",
    "per_log_bytes_rust_integrated_flush": "the same, with integrated_flush",
    "per_log_bytes_c": "slab bytes per log beyond a core-log mirror's, C",
    "per_log_bytes_c_integrated_flush": "the same, with integrated_flush",
    "window_overshoot_ms_max": "the largest time a window's edge took to read (ms)",
}

# The README's short table: (key, what, target); the targets are issue 30's.
README_ROWS = [
    ("userspace_fast_over_core_iops", "features on ÷ the kernel's core log, QD8, 4 jobs", "≥ 0.90"),
    ("userspace_fast_over_core_iops_qd1_icount", "the same, QD1, in guest instructions", "≥ 0.90"),
    ("rust_fast_requests_per_write", "log requests per write, features on, QD8, 4 jobs", "≤ 0.01"),
    ("rust_fast_stock_server_over_c_iops", "features on, server without extensions, ÷ C", "≥ 1.5"),
    ("rust_fast_over_c_iops", "IOPS, features on, ÷ C (both integrated_flush)", "≥ 3.0"),
    ("instructions_per_request_rust_over_c", "guest instructions per request round trip", "≤ 1.00"),
    ("rust_over_c_iops", "IOPS on C's request stream (4 cases)", "≥ 1.00"),
    ("rust_over_c_iops_ci_low", "its 95% interval's lower end", "≥ 0.95"),
    ("requests_per_write_rust_over_c", "log requests per write, C's stream", "–"),
    ("time_per_request_rust_over_c", "time per log request, C's stream", "–"),
    ("per_log_bytes_rust", "slab bytes per log beyond a core-log mirror's", "≤ 1,500"),
    ("per_log_bytes_rust_integrated_flush", "the same, integrated_flush", "≤ 1,500"),
    ("per_mirror_kernel_memory_rust_over_c", "kernel memory per mirror", "≤ 1.00"),
    ("per_mirror_kernel_memory_rust_over_c_integrated_flush", "the same, integrated_flush", "≤ 1.00"),
    ("module_text_rust_over_c", "module text", "≤ 4.0"),
    ("window_overshoot_ms_max", "largest window-edge overshoot (ms)", "≤ 100"),
]
README_BEGIN = "<!-- bench-table:begin"
README_END = "<!-- bench-table:end -->"


def readme_table(rep):
    run = rep["run"]
    lines = [
        f"{README_BEGIN} (bench/report.py writes this table) -->",
        f"Commit {run['commit']}, {run['rounds']} rounds, {run['date']}:",
        "",
        "| figure | key in `latest.json` | value | target |",
        "|---|---|---|---|",
    ]
    for key, what, target in README_ROWS:
        v = rep["ratios"].get(key)
        shown = "–" if v is None else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3f}" if abs(v) < 0.1 else f"{v:.2f}"
        lines.append(f"| {what} | `{key}` | {shown} | {target} |")
    return "\n".join(lines) + "\n" + README_END


def splice_readme(path, rep):
    """Replaces the README's table between its markers."""
    text = Path(path).read_text()
    a, b = text.find(README_BEGIN), text.find(README_END)
    if a < 0 or b < a:
        sys.exit(f"{path}: no {README_BEGIN} ... {README_END} markers")
    Path(path).write_text(text[:a] + readme_table(rep) + text[b + len(README_END):])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", nargs="+", help="the KTAP logs of the bench suite's boots, or a latest.json")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--commit", help="the commit measured")
    ap.add_argument("--dirty", action="store_true", help="the tree had uncommitted changes")
    ap.add_argument("--date", help="when the run started (default: the input's mtime), UTC")
    ap.add_argument("--accel", choices=("tcg", "kvm"), help="QEMU's accelerator")
    ap.add_argument("--vm-seconds", type=int)
    ap.add_argument("--other-vms", help="BUSY/SAMPLES: samples of the run in which another VM ran on the host")
    ap.add_argument("--ko-size", action="append", default=[], help="CFG:TEXT:DATA:BSS of a .ko")
    ap.add_argument("--note", help="a line about the run for latest.md")
    ap.add_argument("--readme", help="a README whose bench table (between its markers) to rewrite")
    args = ap.parse_args()

    prior = {}
    records, tests = [], []
    for path in args.input:
        text = Path(path).read_text(errors="replace")
        if text.lstrip().startswith("{"):
            prior = json.loads(text)
            records += prior["records"]
            tests += prior.get("tests", [])
        else:
            rec, tst = parse_ktap(text)
            records += rec
            tests += tst
    if not records:
        sys.exit(f"no BENCH lines in {' '.join(args.input)}")
    old = prior.get("run", {})
    ko_sizes = dict(prior.get("ko_sizes", {}))
    for spec in args.ko_size:
        cfg, text_, data, bss = spec.split(":")
        ko_sizes[cfg] = {"text": int(text_), "data": int(data), "bss": int(bss)}
    other = old.get("other_vms_running_fraction")
    if args.other_vms:
        busy, samples = (int(x) for x in args.other_vms.split("/"))
        other = busy / samples if samples else None
    mtime = datetime.datetime.fromtimestamp(Path(args.input[0]).stat().st_mtime, datetime.timezone.utc)
    run = Run(records)
    icount = Run(records, "icount")
    env = run.find("env") or {}
    rep = {
        "run": {
            "commit": args.commit or old.get("commit", "unknown"),
            "tree_clean": not args.dirty if args.commit else old.get("tree_clean", False),
            "kernel": env.get("kernel"),
            "date": args.date or old.get("date") or mtime.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "accelerator": args.accel or old.get("accelerator", "tcg"),
            "rounds": len(run.rounds),
            "icount_rounds": len(icount.rounds),
            "vm_seconds": args.vm_seconds or old.get("vm_seconds"),
            "other_vms_running_fraction": other,
            "note": args.note or old.get("note"),
            "guest": {k: v for k, v in env.items() if k != "kind"},
        },
        "tests": tests,
        "table": rows(run, icount, ko_sizes),
        "ko_sizes": ko_sizes,
        "records": records,
    }
    rep["ratios"] = {**ratios(rep["table"]), **absolute(run, icount)}
    rep["checks"] = qd1_checks(run, icount)
    rep["tests"] += [{"test": c["test"], "ok": c["ok"]} for c in rep["checks"]]
    rep["instruction_split"] = instruction_split(run, icount)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(rep, indent=1, ensure_ascii=False) + "\n")
    if args.readme:
        splice_readme(args.readme, rep)
    md = markdown(rep)
    (out / "latest.md").write_text(md)
    print(md, end="")
    missed = [c for c in rep["checks"] if not c["ok"]]
    if missed:
        for c in missed:
            print(f"{c['test']}: {c['wall']:.4f} requests per write, the -icount boot's {c['icount']:.4f} "
                  f"({c['off']:+.1%}, more than ±{QD1_TOLERANCE:.0%}): the window did not count what it claims",
                  file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
