#!/usr/bin/env python3
"""Writes latest.json and latest.md from the BENCH lines of a `make bench` run.

The input is the KTAP log of tests/vm/suite-bench.sh, where each figure is a diagnostic line
"# BENCH kind=... key=value ...", or a latest.json written before (it keeps those records).
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
    "seq_qd8_j1": "sequential 4k, QD8, 1 job",
}
SCALE_MIRRORS = (1, 8, 64)
RANDOM_CASES = [c for c in CASES if c.startswith("rand_")]
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
    """The records of one run, looked up by kind, configuration and round."""

    def __init__(self, records):
        self.records = records
        self.rounds = sorted({r["round"] for r in records if isinstance(r.get("round"), int)})

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
        return self.field("scale", name, cfg=cfg, mirrors=n, round=rnd)

    def memory_per_mirror(self, cfg, rnd):
        r = self.find("memory", cfg=cfg, round=rnd)
        if not r:
            return None
        return (r["slab_kb"] + r["kstack_kb"] + r["vmalloc_kb"] + r["percpu_kb"]) * 1024 / r["logs"]


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
    None where it did not (the request-saving features do not exist yet, and the 64-mirror
    window does not yet pair requests with I/O)."""
    by_key = {r["key"]: r for r in table}

    def pick(keys, what="rust_over_c"):
        rows_ = [by_key[k] for k in keys if k in by_key]
        return combined(rows_, keys, what) if rows_ and len(rows_) == len(keys) else None

    def g(s):
        return s.get("geomean") if s else None

    iops = pick([f"iops_{c}" for c in RANDOM_CASES])
    iops_if = pick([f"iops_{c}_if" for c in RANDOM_CASES])
    rt = (by_key.get("roundtrip_p50") or {})
    mem = (by_key.get("memory_per_mirror") or {}).get("rust_over_c")
    text = (by_key.get("module_text") or {}).get("rust_over_c")
    return {
        "rust_over_c_iops": g(iops),
        "rust_over_c_iops_ci_low": (iops or {}).get("ci95", [None])[0] if iops and iops.get("ci95") else None,
        "rust_over_c_iops_integrated_flush": g(iops_if),
        "rust_fast_over_c_iops": None,
        "userspace_fast_over_core_iops": None,
        "roundtrip_p50_rust_over_c": g(rt.get("rust_over_c")),
        "roundtrip_p50_over_pingpong": g(rt.get("rust_over_baseline")),
        "rust_over_c_iops_64_mirrors": None,
        "per_log_memory_rust_over_c": g(mem),
        "module_text_rust_over_c": text["median"] if text else None,
    }


def ratio(a, b):
    return a / b if a is not None and b else None


def rows(run, ko_sizes):
    """The table: per configuration, a figure for Rust, C and a baseline, taken each round."""
    out = []

    def row(key, label, baseline, lower_is_better, rust, c, base, once=False):
        rounds = [0] if once else run.rounds
        per = {name: {rnd: f(rnd) for rnd in rounds} for name, f in (("rust", rust), ("c", c), ("base", base)) if f}
        cell = {
            "rust_over_c": spread({r: ratio(per["rust"][r], per["c"][r]) for r in rounds}),
            "rust_over_baseline": spread({r: ratio(per["rust"][r], per["base"][r]) for r in rounds}) if base else None,
            "c_over_baseline": spread({r: ratio(per["c"][r], per["base"][r]) for r in rounds}) if base else None,
        }
        out.append({"key": key, "configuration": label, "baseline": baseline,
                    "lower_is_better": lower_is_better, "measured_once": once, **cell})

    for case, name in CASES.items():
        for flush in ("", "_if"):
            row(f"iops_{case}{flush}", f"IOPS, {name}" + (", integrated_flush" if flush else ""),
                "core log", False,
                lambda r, f=flush, k=case: run.iops("rust" + f, k, r),
                lambda r, f=flush, k=case: run.iops("c" + f, k, r),
                lambda r, k=case: run.iops("core", k, r))
    row("roundtrip_p50", "log request round trip, p50", "connector ping-pong", True,
        lambda r: run.roundtrip_ns("rust", r), lambda r: run.roundtrip_ns("c", r), run.pingpong_ns)
    for n in SCALE_MIRRORS:
        for name, what in (("reqs_per_s", "log requests/s"), ("iops", "IOPS")):
            row(f"scale_{n}_{name}", f"{what}, {n} mirror{'s' if n > 1 else ''} written at once", None, False,
                lambda r, k=name, m=n: run.scale("rust", m, k, r),
                lambda r, k=name, m=n: run.scale("c", m, k, r), None)
    row("memory_per_mirror", "kernel memory per mirror, 64 mirrors", "core log", True,
        lambda r: run.memory_per_mirror("rust", r), lambda r: run.memory_per_mirror("c", r),
        lambda r: run.memory_per_mirror("core", r))
    # Measured at setup, not in the rounds.
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
        f"- rounds: {run['rounds']}, in alternating order; guest time {run.get('vm_seconds') or '–'} s",
        "- another VM on the host: "
        + ("not sampled" if other is None else f"during {other:.0%} of the measurements" if other else "none"),
        f"- failed measurements: {', '.join(failed) if failed else 'none'}",
    ]
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
        cells = [fmt(r[k], run["rounds"], r["measured_once"]) for k in ("rust_over_c", "rust_over_baseline", "c_over_baseline")]
        lines.append(f"| {label} | {r['baseline'] or '–'} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each cell is a ratio taken within each round, shown as the geometric mean over the rounds, "
        "[its 95% bootstrap interval] and (min–max); a row with `integrated_flush` compares the "
        "two modules with that feature. What "
        "each figure measures: [`bench/README.md`](../README.md); every absolute figure: "
        "`records` in [`latest.json`](latest.json).",
    ]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="the KTAP log of the bench suite, or a latest.json")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--commit", help="the commit measured")
    ap.add_argument("--dirty", action="store_true", help="the tree had uncommitted changes")
    ap.add_argument("--date", help="when the run started (default: the input's mtime), UTC")
    ap.add_argument("--accel", choices=("tcg", "kvm"), help="QEMU's accelerator")
    ap.add_argument("--vm-seconds", type=int)
    ap.add_argument("--other-vms", help="BUSY/SAMPLES: samples of the run in which another VM ran on the host")
    ap.add_argument("--ko-size", action="append", default=[], help="CFG:TEXT:DATA:BSS of a .ko")
    ap.add_argument("--note", help="a line about the run for latest.md")
    args = ap.parse_args()

    text = Path(args.input).read_text(errors="replace")
    prior = {}
    if text.lstrip().startswith("{"):
        prior = json.loads(text)
        records, tests = prior["records"], prior["tests"]
    else:
        records, tests = parse_ktap(text)
    if not records:
        sys.exit(f"no BENCH lines in {args.input}")
    old = prior.get("run", {})
    ko_sizes = dict(prior.get("ko_sizes", {}))
    for spec in args.ko_size:
        cfg, text_, data, bss = spec.split(":")
        ko_sizes[cfg] = {"text": int(text_), "data": int(data), "bss": int(bss)}
    other = old.get("other_vms_running_fraction")
    if args.other_vms:
        busy, samples = (int(x) for x in args.other_vms.split("/"))
        other = busy / samples if samples else None
    mtime = datetime.datetime.fromtimestamp(Path(args.input).stat().st_mtime, datetime.timezone.utc)
    run = Run(records)
    env = run.find("env") or {}
    rep = {
        "run": {
            "commit": args.commit or old.get("commit", "unknown"),
            "tree_clean": not args.dirty if args.commit else old.get("tree_clean", False),
            "kernel": env.get("kernel"),
            "date": args.date or old.get("date") or mtime.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "accelerator": args.accel or old.get("accelerator", "tcg"),
            "rounds": len(run.rounds),
            "vm_seconds": args.vm_seconds or old.get("vm_seconds"),
            "other_vms_running_fraction": other,
            "note": args.note or old.get("note"),
            "guest": {k: v for k, v in env.items() if k != "kind"},
        },
        "tests": tests,
        "table": rows(run, ko_sizes),
        "ko_sizes": ko_sizes,
        "records": records,
    }
    rep["ratios"] = ratios(rep["table"])
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(rep, indent=1, ensure_ascii=False) + "\n")
    md = markdown(rep)
    (out / "latest.md").write_text(md)
    print(md, end="")


if __name__ == "__main__":
    main()
