#!/usr/bin/env python3
"""Turns the BENCH lines of a `make bench` run into latest.json, latest.md and latest.svg.

Reads the KTAP log of tests/vm/suite-bench.sh (each figure is a diagnostic line
"# BENCH kind=... key=value ..."), computes medians, spreads, ratios and the targets of
issue #5, and optionally rewrites README.md between <!-- bench:start --> and <!-- bench:end -->.
Standard library only.
"""

import argparse
import datetime
import json
import math
import re
import statistics
import sys
from pathlib import Path

CONFIG_NAMES = {
    "core": "core (in-kernel)",
    "c": "C module",
    "c_if": "C + integrated_flush",
    "rust": "Rust module",
    "rust_if": "Rust + integrated_flush",
}
CASE_NAMES = {
    "rand_qd1_j1": "random 4k, QD1, 1 job",
    "rand_qd8_j1": "random 4k, QD8, 1 job",
    "rand_qd1_j4": "random 4k, QD1, 4 jobs",
    "rand_qd8_j4": "random 4k, QD8, 4 jobs",
    "seq_qd8_j1": "sequential 4k, QD8, 1 job",
}
CONFIGS = list(CONFIG_NAMES)
CASES = list(CASE_NAMES)
RANDOM_CASES = [c for c in CASES if c.startswith("rand")]
FOUR_JOB_CASES = [c for c in RANDOM_CASES if c.endswith("_j4")]
SCALE_MIRRORS = [1, 8, 64]

TARGETS = [
    # key, description, value key, comparison, bound
    ("rust_over_c_iops", "Rust÷C IOPS, median over the random-write cases", ">=", 1.10),
    ("rust_over_c_iops_min", "Rust÷C IOPS, every case (both flush modes, sequential too)", ">=", 1.0),
    ("rust_over_c_requests_64_mirrors", "Rust÷C log requests/s, 64 mirrors", ">=", 1.5),
    ("userspace_over_core_iops", "Rust+dm-ulogd ÷ core log IOPS, 4 jobs", ">=", 0.8),
    ("roundtrip_p50_over_pingpong", "request round trip p50 ÷ bare connector ping-pong p50", "<=", 1.5),
]


def parse(ktap):
    """The BENCH records of a KTAP log, and the test results."""
    records, results = [], []
    for line in ktap.splitlines():
        m = re.match(r"^# BENCH (.*)$", line)
        if m:
            rec = {}
            for tok in m.group(1).split():
                if "=" in tok:
                    k, v = tok.split("=", 1)
                    rec[k] = num(v)
            records.append(rec)
        m = re.match(r"^(not ok|ok) \d+ (\S+)", line)
        if m:
            results.append({"test": m.group(2), "ok": m.group(1) == "ok"})
    return records, results


def num(v):
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def by_type(rec):
    """The per-request-type counts of a record ("TYPE:N,TYPE:N" or "none")."""
    v = rec.get("by_type")
    if not isinstance(v, str) or v == "none":
        return {}
    return {k: int(n) for k, n in (kv.split(":") for kv in v.split(","))}


def type_medians(recs):
    """Median count per request type over records (a type missing from a record counts 0)."""
    counts = [by_type(r) for r in recs]
    types = sorted({t for c in counts for t in c})
    return {t: statistics.median([c.get(t, 0) for c in counts]) for t in types}


def spread(values):
    """Median, min, max and the values of a list of numbers (None when empty)."""
    values = [v for v in values if isinstance(v, (int, float))]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def med(s):
    return s["median"] if s else None


def other_vms_fraction(spec):
    if not spec:
        return None
    busy, samples = (int(x) for x in spec.split("/"))
    return busy / samples if samples else None


def analyse(records, results, args):
    by_kind = {}
    for r in records:
        by_kind.setdefault(r.get("kind"), []).append(r)
    env = (by_kind.get("env") or [{}])[0]

    # fio: IOPS per configuration and case, over the rounds.
    fio = {}
    for cfg in CONFIGS:
        fio[cfg] = {}
        for case in CASES:
            rs = [r for r in by_kind.get("fio", []) if r["cfg"] == cfg and r["case"] == case]
            if not rs:
                continue
            fio[cfg][case] = {
                "iops": spread([r["iops"] for r in rs]),
                "clat_p50_us": spread([r["clat_p50_us"] for r in rs]),
                "clat_p99_us": spread([r["clat_p99_us"] for r in rs]),
                "log_requests_per_write": spread(
                    [r["reqs"] / r["ios"] for r in rs if r.get("ios")] if cfg != "core" else []
                ),
                "log_requests_by_type": type_medians(rs) if cfg != "core" else {},
            }

    def iops(cfg, case):
        return med(fio.get(cfg, {}).get(case, {}).get("iops"))

    per_case = {}
    for case in CASES:
        per_case[case] = {
            "rust_over_c": ratio(iops("rust", case), iops("c", case)),
            "rust_over_c_integrated_flush": ratio(iops("rust_if", case), iops("c_if", case)),
            "rust_over_core": ratio(iops("rust", case), iops("core", case)),
            "rust_if_over_core": ratio(iops("rust_if", case), iops("core", case)),
            "c_over_core": ratio(iops("c", case), iops("core", case)),
        }

    def median_of(key, cases):
        vals = [per_case[c][key] for c in cases if per_case[c][key] is not None]
        return statistics.median(vals) if vals else None

    all_rust_over_c = [
        per_case[c][k] for c in CASES for k in ("rust_over_c", "rust_over_c_integrated_flush")
        if per_case[c][k] is not None
    ]

    # Round trip: status ioctls minus the core log's, over the two requests each costs.
    pingpong = by_kind.get("pingpong", [])
    status = by_kind.get("status", [])
    rounds = sorted({r["round"] for r in status})
    roundtrip = {}
    for cfg in ("c", "rust"):
        p50s, p99s = [], []
        for rnd in rounds:
            core = [r for r in status if r["cfg"] == "core" and r["round"] == rnd]
            mine = [r for r in status if r["cfg"] == cfg and r["round"] == rnd]
            if core and mine:
                per_status = mine[0]["reqs"] / (mine[0]["count"] + mine[0].get("warmup", 0))
                p50s.append((mine[0]["p50_ns"] - core[0]["p50_ns"]) / per_status)
                p99s.append((mine[0]["p99_ns"] - core[0]["p50_ns"]) / per_status)
        roundtrip[cfg] = {
            "p50_ns": spread(p50s),
            "p99_ns": spread(p99s),
            "status_ioctl_p50_ns": spread([r["p50_ns"] for r in status if r["cfg"] == cfg]),
            "status_ioctl_p99_ns": spread([r["p99_ns"] for r in status if r["cfg"] == cfg]),
            "requests_per_status": statistics.median(
                [r["reqs"] / (r["count"] + r.get("warmup", 0)) for r in status if r["cfg"] == cfg] or [0]
            ),
        }
    roundtrip["core_status_ioctl_p50_ns"] = spread([r["p50_ns"] for r in status if r["cfg"] == "core"])
    roundtrip["core_status_ioctl_p99_ns"] = spread([r["p99_ns"] for r in status if r["cfg"] == "core"])
    roundtrip["rust_debugfs_latency_avg_us"] = spread(
        [r.get("rust_latency_avg_us") for r in status if r["cfg"] == "rust"]
    )
    rounds_pp = [r for r in pingpong if str(r.get("label", "")).startswith("round_")]
    roundtrip["pingpong"] = {
        "p50_ns": spread([r["p50_ns"] for r in rounds_pp]),
        "p99_ns": spread([r["p99_ns"] for r in rounds_pp]),
        "mean_ns": spread([r["mean_ns"] for r in rounds_pp]),
        "messages_per_round": rounds_pp[0]["count"] if rounds_pp else None,
        "payload_bytes": rounds_pp[0].get("payload") if rounds_pp else None,
    }
    # Once before the rounds, with both vCPUs online, then with one: why the rounds use one.
    for label in ("two_vcpus", "one_vcpu"):
        rs = [r for r in pingpong if r.get("label") == label]
        roundtrip[f"pingpong_{label}"] = (
            {k: rs[0][k] for k in ("p50_ns", "p99_ns", "mean_ns", "max_ns")} if rs else None
        )
    pp50 = med(roundtrip["pingpong"]["p50_ns"])

    # Scaling: log requests per second with 1, 8 and 64 mirrors written at once.
    scaling = {}
    for cfg in ("c", "rust"):
        scaling[cfg] = {}
        for n in SCALE_MIRRORS:
            rs = [r for r in by_kind.get("scale", []) if r["cfg"] == cfg and r["mirrors"] == n]
            scaling[cfg][str(n)] = {
                "requests_per_s": spread([r["reqs_per_s"] for r in rs]),
                "iops": spread([r["iops"] for r in rs]),
                "requests_per_write": spread([r["reqs_per_s"] / r["iops"] for r in rs if r.get("iops")]),
                "requests_per_s_by_type": {
                    t: round(v * 1000 / statistics.median([r["window_ms"] for r in rs]))
                    for t, v in type_medians(rs).items()
                } if rs else {},
            }

    def scale_iops(cfg, n):
        return med(scaling[cfg][str(n)]["iops"])

    def reqs(cfg, n):
        return med(scaling[cfg][str(n)]["requests_per_s"])

    # Memory: what 64 mirrors take, per mirror, with each log. The mirror and the server are
    # the same for both modules, so the difference is the modules'; the core log keeps its
    # bitmaps in the kernel, a userspace log in the server.
    mem_recs = by_kind.get("memory", [])

    def total(r):
        return (r["slab_kb"] + r["kstack_kb"] + r["vmalloc_kb"] + r["percpu_kb"]) * 1024 / r["logs"]

    memory = {}
    for cfg in ("core", "c", "rust"):
        rs = [r for r in mem_recs if r["cfg"] == cfg]
        memory[cfg] = {
            k: spread([r[k] for r in rs]) for k in ("slab_kb", "kstack_kb", "vmalloc_kb", "percpu_kb")
        }
        memory[cfg]["per_mirror_bytes"] = spread([total(r) for r in rs])
    # Paired by round (the same round's measurements are closest in time).
    mem_rounds = sorted({r["round"] for r in mem_recs})

    def paired(a, b):
        diffs = []
        for rnd in mem_rounds:
            ra = [r for r in mem_recs if r["cfg"] == a and r["round"] == rnd]
            rb = [r for r in mem_recs if r["cfg"] == b and r["round"] == rnd]
            if ra and rb:
                diffs.append(total(ra[0]) - total(rb[0]))
        return spread(diffs)

    memory["rust_minus_c_per_log_bytes"] = paired("rust", "c")
    memory["c_minus_core_per_log_bytes"] = paired("c", "core")
    memory["rust_minus_core_per_log_bytes"] = paired("rust", "core")
    modules = {}
    for r in by_kind.get("module", []):
        modules.setdefault(r["cfg"], {})["proc_modules_bytes"] = r["size"]
    for spec in args.ko_size or []:
        cfg, text, data, bss = spec.split(":")
        modules.setdefault(cfg, {}).update({"ko_text": int(text), "ko_data": int(data), "ko_bss": int(bss)})

    ratios = {
        "rust_over_c_iops": median_of("rust_over_c", RANDOM_CASES),
        "rust_over_c_iops_integrated_flush": median_of("rust_over_c_integrated_flush", RANDOM_CASES),
        "rust_over_c_iops_min": min(all_rust_over_c) if all_rust_over_c else None,
        "rust_over_c_requests_64_mirrors": ratio(reqs("rust", 64), reqs("c", 64)),
        "rust_over_c_requests_8_mirrors": ratio(reqs("rust", 8), reqs("c", 8)),
        "rust_over_c_requests_1_mirror": ratio(reqs("rust", 1), reqs("c", 1)),
        "rust_over_c_iops_64_mirrors": ratio(scale_iops("rust", 64), scale_iops("c", 64)),
        "userspace_over_core_iops": median_of("rust_over_core", FOUR_JOB_CASES),
        "userspace_over_core_iops_integrated_flush": median_of("rust_if_over_core", FOUR_JOB_CASES),
        "c_over_core_iops": median_of("c_over_core", FOUR_JOB_CASES),
        "roundtrip_p50_over_pingpong": ratio(med(roundtrip["rust"]["p50_ns"]), pp50),
        "c_roundtrip_p50_over_pingpong": ratio(med(roundtrip["c"]["p50_ns"]), pp50),
        "rust_over_c_roundtrip_p50": ratio(med(roundtrip["rust"]["p50_ns"]), med(roundtrip["c"]["p50_ns"])),
        "rust_over_c_module_size": ratio(
            modules.get("rust", {}).get("proc_modules_bytes"), modules.get("c", {}).get("proc_modules_bytes")
        ),
    }
    targets = {}
    for key, desc, op, bound in TARGETS:
        v = ratios[key]
        met = None if v is None else (v >= bound if op == ">=" else v <= bound)
        targets[key] = {"description": desc, "target": f"{op} {bound}", "value": v, "met": met}

    now = datetime.datetime.now(datetime.timezone.utc)
    return {
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": env.get("kernel"),
        "commit": args.commit,
        "guest": {
            "accelerator": "tcg",
            "cpus": env.get("cpus"),
            "mem_kb": env.get("mem_kb"),
            "clocksource": env.get("clocksource"),
            "fio": env.get("fio"),
            "vm_seconds": args.vm_seconds,
        },
        "host": {"other_vms_running_fraction": other_vms_fraction(args.other_vms)},
        "method": {
            "rounds": env.get("rounds"),
            "fio_runtime_s": env.get("fio_runtime_s"),
            "region_sectors": env.get("region_sectors"),
            "scale_region_sectors": env.get("scale_region_sectors"),
            "pings_per_round": env.get("pings"),
            "status_ioctls_per_round": env.get("status_count"),
        },
        "tests": results,
        "ratios": ratios,
        "targets": targets,
        "fio": fio,
        "fio_ratios_per_case": per_case,
        "roundtrip": roundtrip,
        "scaling": scaling,
        "memory": memory,
        "modules": modules,
    }


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def fmt_spread(s, unit_div=1, digits=0):
    if not s:
        return "–"
    f = lambda x: f"{x / unit_div:.{digits}f}"  # noqa: E731
    return f"{f(s['median'])} ({f(s['min'])}–{f(s['max'])})"


def met_word(t):
    return {True: "**met**", False: "**not met**", None: "not measured"}[t["met"]]


def markdown(rep, svg_name, heading="###"):
    g = rep["guest"]
    m = rep["method"]
    out = []
    out.append(
        f"Measured by `make bench` on {rep['date']}, kernel {rep['kernel']}, commit {rep['commit']}; "
        f"one boot of the perf kernel under QEMU TCG ({g['cpus']} vCPUs, one online for the measurements; "
        f"clocksource {g['clocksource']}; {g['fio']}), {m['rounds']} interleaved rounds per figure, shown as "
        "median (min–max). Absolute figures are TCG's; only ratios within the run mean something."
    )
    other = rep["host"]["other_vms_running_fraction"]
    if other:
        out.append("")
        out.append(
            f"Another VM ran on the host during {other:.0%} of the measurements: it slowed the guest "
            "unevenly, which the interleaved rounds spread over every configuration."
        )
    failed = [t["test"] for t in rep["tests"] if not t["ok"]]
    if failed:
        out.append("")
        out.append(f"**Measurements that failed:** {', '.join(failed)}.")
    out.append("")
    out.append("| target | value | bound | |")
    out.append("|---|---|---|---|")
    for t in rep["targets"].values():
        out.append(f"| {t['description']} | {fmt(t['value'])} | {t['target']} | {met_word(t)} |")
    out.append("")
    out.append(f"{heading} IOPS: two-leg mirror on RAM disks, {m['fio_runtime_s']} s fio runs")
    out.append("")
    out.append("| case | " + " | ".join(CONFIG_NAMES[c] for c in CONFIGS) + " | Rust÷C | Rust÷C (integrated_flush) |")
    out.append("|---|" + "---|" * (len(CONFIGS) + 2))
    for case in CASES:
        row = [CASE_NAMES[case]]
        for cfg in CONFIGS:
            row.append(fmt_spread(rep["fio"].get(cfg, {}).get(case, {}).get("iops")))
        pc = rep["fio_ratios_per_case"][case]
        row += [fmt(pc["rust_over_c"]), fmt(pc["rust_over_c_integrated_flush"])]
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    out.append("Log requests per write (median):")
    out.append("")
    out.append("| case | " + " | ".join(CONFIG_NAMES[c] for c in CONFIGS[1:]) + " |")
    out.append("|---|" + "---|" * (len(CONFIGS) - 1))
    for case in CASES:
        row = [CASE_NAMES[case]]
        for cfg in CONFIGS[1:]:
            s = rep["fio"].get(cfg, {}).get(case, {}).get("log_requests_per_write")
            row.append(fmt(med(s)))
        out.append("| " + " | ".join(row) + " |")
    rt = rep["roundtrip"]
    out.append("")
    out.append(f"{heading} Request round trip")
    out.append("")
    out.append("| | p50 µs | p99 µs |")
    out.append("|---|---|---|")
    out.append(
        f"| bare connector ping-pong ({rt['pingpong']['payload_bytes']}-byte payload) | "
        f"{fmt_spread(rt['pingpong']['p50_ns'], 1000, 1)} | {fmt_spread(rt['pingpong']['p99_ns'], 1000, 1)} |"
    )
    for cfg, name in (("c", "C module + dm-ulogd"), ("rust", "Rust module + dm-ulogd")):
        out.append(
            f"| log request, {name} | {fmt_spread(rt[cfg]['p50_ns'], 1000, 1)} | "
            f"{fmt_spread(rt[cfg]['p99_ns'], 1000, 1)} |"
        )
    out.append(
        f"| status ioctl, core log (baseline) | {fmt_spread(rt['core_status_ioctl_p50_ns'], 1000, 1)} | "
        f"{fmt_spread(rt['core_status_ioctl_p99_ns'], 1000, 1)} |"
    )
    out.append("")
    out.append(
        "A log request's round trip is (status ioctl on a `userspace` mirror − the same on a `core` "
        "mirror) ÷ 2, per round: each status costs GET_SYNC_COUNT and STATUS_INFO, one after the "
        f"other (the server counted {fmt(rt['rust']['requests_per_status'])} requests per status). Its p99 "
        "is (p99 − the core baseline's p50) ÷ 2, an approximation. The ping-pong is timed in the "
        "kernel (`bench/pingpong`) from cn_netlink_send to the completion the echo "
        "(`dm-ulog-bench echo`) completes."
    )
    two, one = rt.get("pingpong_two_vcpus"), rt.get("pingpong_one_vcpu")
    if two and one:
        out.append("")
        out.append(
            f"Before the rounds, the same ping-pong with both vCPUs online took p50 {two['p50_ns'] / 1000:.1f} µs, "
            f"p99 {two['p99_ns'] / 1000:.1f} µs (one vCPU: p50 {one['p50_ns'] / 1000:.1f} µs, "
            f"p99 {one['p99_ns'] / 1000:.1f} µs): across vCPUs a wake-up waits for the host to run the "
            "other vCPU's thread, which on a busy host takes milliseconds."
        )
    sc = rep["scaling"]
    out.append("")
    out.append(f"{heading} Scaling: log requests per second, mirrors written at once")
    out.append("")
    out.append("| mirrors | C module | Rust module | Rust÷C | IOPS C | IOPS Rust | requests/write C | requests/write Rust |")
    out.append("|---|---|---|---|---|---|---|---|")
    for n in SCALE_MIRRORS:
        c, r = sc["c"][str(n)], sc["rust"][str(n)]
        out.append(
            f"| {n} | {fmt_spread(c['requests_per_s'])} | {fmt_spread(r['requests_per_s'])} | "
            f"{fmt(ratio(med(r['requests_per_s']), med(c['requests_per_s'])))} | "
            f"{fmt_spread(c['iops'])} | {fmt_spread(r['iops'])} | "
            f"{fmt(med(c['requests_per_write']))} | {fmt(med(r['requests_per_write']))} |"
        )
    for cfg, name in (("c", "C"), ("rust", "Rust")):
        types = sc[cfg]["64"]["requests_per_s_by_type"]
        if types:
            out.append("")
            out.append(
                f"{name}, 64 mirrors, requests/s by type: "
                + ", ".join(f"{t} {v}" for t, v in sorted(types.items(), key=lambda kv: -kv[1]))
            )
    mem = rep["memory"]
    mods = rep["modules"]
    out.append("")
    out.append(f"{heading} Memory")
    out.append("")
    out.append("| | C module | Rust module |")
    out.append("|---|---|---|")
    for key, name in (("proc_modules_bytes", "module in memory (/proc/modules), bytes"),
                      ("ko_text", ".ko text, bytes"), ("ko_data", ".ko data, bytes"), ("ko_bss", ".ko bss, bytes")):
        out.append(f"| {name} | {fmt(mods.get('c', {}).get(key))} | {fmt(mods.get('rust', {}).get(key))} |")
    out.append("")
    out.append(
        "Kernel memory per mirror (slab + kernel stacks + vmalloc + per-cpu, from /proc/meminfo "
        "before and after creating 64 mirrors of 1 MiB, 128 KiB regions), bytes:"
    )
    out.append("")
    out.append("| core log | C module | Rust module | Rust − C, per log (paired by round) |")
    out.append("|---|---|---|---|")
    out.append(
        f"| {fmt_spread(mem['core']['per_mirror_bytes'])} | {fmt_spread(mem['c']['per_mirror_bytes'])} | "
        f"{fmt_spread(mem['rust']['per_mirror_bytes'])} | {fmt_spread(mem['rust_minus_c_per_log_bytes'])} |"
    )
    out.append("")
    out.append(
        "Most of a mirror's memory is the mirror's own (its device, workqueues, kcopyd, region "
        "hash), the same in every column; the core log also keeps its bitmaps in the kernel "
        "(vmalloc), which a userspace log keeps in the server. Differences of a few KiB per log "
        "are within the spread."
    )
    out.append("")
    out.append(f"![IOPS and request rates]({svg_name})")
    return "\n".join(out) + "\n"


def svg(rep):
    """Two bar charts: median IOPS per case and configuration; requests/s per mirror count."""
    colors = {"core": "#7f7f7f", "c": "#1f77b4", "c_if": "#9ecae1", "rust": "#d62728", "rust_if": "#fc9272"}
    W, H = 980, 420
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
    ]

    def panel(x0, y0, w, h, title, groups, series, value, ylabel, log=False):
        values = [v for gk in groups for sk in series if (v := value(gk, sk))]
        vmax = max((v["max"] for v in values), default=1) or 1
        if log:
            lo = 10 ** math.floor(math.log10(max(min(v["min"] for v in values), 1))) if values else 1
            hi = 10 ** math.ceil(math.log10(vmax))
            ticks = [t for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)
                     for t in (10 ** e, 2 * 10 ** e, 5 * 10 ** e) if lo <= t <= hi]

            def ypos(v):
                return y0 + h - h * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        else:
            step = 10 ** math.floor(math.log10(vmax / 5))
            step *= next(m for m in (1, 2, 5, 10) if vmax / (step * m) <= 6)
            hi = step * math.ceil(vmax / step)
            ticks = [step * i for i in range(round(hi / step) + 1)]

            def ypos(v):
                return y0 + h - h * v / hi
        parts.append(f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-size="13">{title}</text>')
        parts.append(f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0 + h}" stroke="black"/>')
        parts.append(f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 + h}" stroke="black"/>')
        for t in ticks:
            y = ypos(t)
            parts.append(f'<line x1="{x0 - 4}" y1="{y:.1f}" x2="{x0 + w}" y2="{y:.1f}" stroke="#dddddd"/>')
            parts.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
        parts.append(
            f'<text x="{x0 - 48}" y="{y0 + h / 2}" text-anchor="middle" '
            f'transform="rotate(-90 {x0 - 48} {y0 + h / 2})">{ylabel}</text>'
        )
        gw = w / len(groups)
        bw = gw * 0.8 / len(series)
        for gi, (gk, glabel) in enumerate(groups.items()):
            for si, sk in enumerate(series):
                s = value(gk, sk)
                if not s:
                    continue
                x = x0 + gi * gw + gw * 0.1 + si * bw
                top = ypos(s["median"])
                parts.append(
                    f'<rect x="{x:.1f}" y="{top:.1f}" width="{bw - 1:.1f}" height="{y0 + h - top:.1f}" '
                    f'fill="{colors[sk]}"><title>{sk}: {s["median"]:.0f}</title></rect>'
                )
                cx = x + (bw - 1) / 2
                parts.append(
                    f'<line x1="{cx:.1f}" y1="{ypos(s["min"]):.1f}" x2="{cx:.1f}" y2="{ypos(s["max"]):.1f}" '
                    'stroke="black"/>'
                )
            for li, text in enumerate(glabel.split("\n")):
                parts.append(
                    f'<text x="{x0 + gi * gw + gw / 2:.1f}" y="{y0 + h + 14 + 12 * li}" '
                    f'text-anchor="middle">{text}</text>'
                )

    case_labels = {c: CASE_NAMES[c].replace(", ", "\n", 1) for c in CASES}
    panel(70, 40, 560, 300, "IOPS, log scale (median; whiskers: min–max)", case_labels, CONFIGS,
          lambda g, s: rep["fio"].get(s, {}).get(g, {}).get("iops"), "IOPS", log=True)
    panel(730, 40, 220, 300, "log requests/s answered", {str(n): f"{n} mirror{'s' if n > 1 else ''}" for n in SCALE_MIRRORS},
          ["c", "rust"], lambda g, s: rep["scaling"][s][g]["requests_per_s"], "")
    for i, cfg in enumerate(CONFIGS):
        x = 70 + i * 175
        parts.append(f'<rect x="{x}" y="{H - 30}" width="12" height="12" fill="{colors[cfg]}"/>')
        parts.append(f'<text x="{x + 16}" y="{H - 20}">{CONFIG_NAMES[cfg]}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def update_readme(path, rep, md_name, svg_path):
    text = Path(path).read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        sys.exit(f"{path} lacks the markers {start} and {end}")
    body = markdown(rep, svg_path, heading="####")
    json_name = md_name.rsplit("/", 1)[0] + "/latest.json"
    body += f"\nThe same tables: [`{md_name}`]({md_name}); every raw figure: [`{json_name}`]({json_name}).\n"
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    Path(path).write_text(before + start + "\n" + body + end + after)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ktap", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--commit", default="unknown")
    ap.add_argument("--vm-seconds", type=int)
    ap.add_argument("--other-vms", help="BUSY/SAMPLES: samples of the run in which another VM ran on the host")
    ap.add_argument("--ko-size", action="append", help="CFG:TEXT:DATA:BSS of a .ko")
    ap.add_argument("--readme", help="README.md to update between the bench markers")
    args = ap.parse_args()

    records, results = parse(Path(args.ktap).read_text(errors="replace"))
    if not records:
        sys.exit(f"no BENCH lines in {args.ktap}")
    rep = analyse(records, results, args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(rep, indent=2, ensure_ascii=False) + "\n")
    (out / "latest.md").write_text("# make bench: latest results\n\n" + markdown(rep, "latest.svg"))
    (out / "latest.svg").write_text(svg(rep))
    if args.readme:
        update_readme(args.readme, rep, "bench/results/latest.md", "bench/results/latest.svg")
    for key, t in rep["targets"].items():
        print(f"{key}: {fmt(t['value'])} ({t['target']}): {met_word(t).strip('*')}")


if __name__ == "__main__":
    main()
