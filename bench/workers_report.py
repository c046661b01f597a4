"""
Tables for BENCHMARKS.md from a bench/run.py results.json with the ``w1`` /
``w2`` targets (issue 16: ``--workers``).

Per N and target: p99 egress interval error (median over repeats, and each
repeat), intervals missed, the share of the generator's packets answered
(replies received / packets sent: what the target *carried*), CPU (whole
process tree, median and range), CPU per call, RSS (tree, and per process),
and the generator's own CPU and send lateness (if the generator ran late the
point measures the generator, not the target).

Capacity = the largest N of the grid whose median p99 egress error is
<= ``--p99-limit`` ms (5).  Per-call CPU target: <= 1.5 x the bare relay's +
the G.722 encoder's (codec cost measured by run.py on core 1).

With several results files, the tables are printed for the first, and then
every repeat of every file is pooled per target and N: how many repeats had
p99 <= the limit (the p99 of a worker near its limit is bimodal, about 3 ms or
about 20 ms per repeat, so medians of 3 flip between neighbouring N).

Usage: ``python bench/workers_report.py bench/results/workers/results.json [more results.json ...]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from typing import Any

NAMES = {"baseline": "bare relay", "g722": "xlbridge (no --workers)", "w1": "--workers 1", "w2": "--workers 2"}


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="+")
    ap.add_argument("--p99-limit", type=float, default=5.0)
    ns = ap.parse_args(argv)
    with open(ns.results[0]) as f:
        d = json.load(f)
    runs = d["runs"]
    codec_us = d["codec_cost"]["g722"]["us_per_frame"]
    targets = [t for t in ("baseline", "g722", "w1", "w2") if any(r["target"] == t for r in runs)]
    ns_ = sorted({r["pairs"] for r in runs})
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for n in ns_:
        for t in targets:
            rs = sorted((r for r in runs if r["pairs"] == n and r["target"] == t), key=lambda r: r["repeat"])
            if not rs:
                continue
            p99 = [r["analysis"]["interval_error_ms"]["p99"] for r in rs]
            cpu = [r["cpu_core"] for r in rs]
            carried = [r["loadgen"]["received"] / r["loadgen"]["sent"] for r in rs]
            missed = [max(r["analysis"]["clock_missed_intervals"], r["analysis"]["ts_missed_intervals"]) for r in rs]
            nproc = max(len(r.get("procs", [])) for r in rs)
            rows[(n, t)] = {
                "p99": med(p99), "p99_all": p99, "missed": med(missed), "carried": med(carried),
                "cpu": med(cpu), "cpu_lo": min(cpu), "cpu_hi": max(cpu),
                "cpu_per_call_ms": 1000 * med(cpu) / n,
                "rss": med([r["rss_mb"] for r in rs]),
                "procs_cpu": [med([r["procs"][i]["cpu_core"] for r in rs if len(r.get("procs", [])) > i])
                              for i in range(nproc)],
                "procs_rss": [med([r["procs"][i]["rss_mb"] for r in rs if len(r.get("procs", [])) > i])
                              for i in range(nproc)],
                "gen_cpu": med([r["gen_cpu_core"] for r in rs]),
                "gen_late_p99": med([r["loadgen"]["send_lateness_ms"]["p99"] for r in rs]),
                "rx_drops": max(r["rx_drops"] for r in rs),
                "repeats": len(rs),
            }
    print("| N | target | p99 egress error, ms: median (repeats) | intervals missed (median) | "
          "packets answered | CPU, core: median (min-max) | CPU per call, ms/s | per process CPU, core | "
          "RSS, MB (per process) | generator CPU, core | generator send lateness p99, ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (n, t), r in rows.items():
        per = " + ".join(f"{x:.2f}" for x in r["procs_cpu"]) if len(r["procs_cpu"]) > 1 else "-"
        rss = f"{r['rss']:.0f}" + (f" ({' + '.join(f'{x:.0f}' for x in r['procs_rss'])})"
                                   if len(r["procs_rss"]) > 1 else "")
        print(f"| {n} | {NAMES[t]} | {r['p99']:.2f} ({', '.join(f'{x:.1f}' for x in r['p99_all'])}) | "
              f"{r['missed']:.0f} | {100 * r['carried']:.1f} % | {r['cpu']:.3f} ({r['cpu_lo']:.2f}-{r['cpu_hi']:.2f}) | "
              f"{r['cpu_per_call_ms']:.2f} | {per} | {rss} | {r['gen_cpu']:.2f} | {r['gen_late_p99']:.1f} |")
    print()
    print(f"Capacity (largest N of the grid with median p99 <= {ns.p99_limit:g} ms):")
    cap = {}
    for t in targets:
        ok = [n for n in ns_ if (n, t) in rows and rows[(n, t)]["p99"] <= ns.p99_limit]
        cap[t] = max(ok) if ok else 0
        print(f"  {NAMES[t]}: {cap[t] or 'below the grid'}")
    if cap.get("w1"):
        print(f"  w2 / w1 = {cap.get('w2', 0) / cap['w1']:.2f}")
    print()
    print("Per-call CPU against the budget 1.5 x bare relay + G.722 encode "
          f"({codec_us:.1f} µs a frame, 100 frames/s a call):")
    print("| N | bare relay, ms/s a call | G.722 encode, ms/s a call | budget | --workers 1 | --workers 2 | "
          "xlbridge (no --workers) |")
    print("|---|---|---|---|---|---|---|")
    for n in ns_:
        if (n, "baseline") not in rows:
            continue
        b = rows[(n, "baseline")]["cpu_per_call_ms"]
        c = codec_us * 100 / 1000
        cells = []
        for t in ("w1", "w2", "g722"):
            r = rows.get((n, t))
            if r is None:
                cells.append("-")
                continue
            v = r["cpu_per_call_ms"]
            cells.append(f"{v:.2f} ({v / (1.5 * b + c):.2f}× budget)")
        print(f"| {n} | {b:.2f} | {c:.2f} | {1.5 * b + c:.2f} | " + " | ".join(cells) + " |")
    if len(ns.results) > 1:
        pooled = []
        for path in ns.results:
            with open(path) as f:
                pooled += json.load(f)["runs"]
        print()
        print(f"Pooled over {len(ns.results)} runs: repeats with p99 <= {ns.p99_limit:g} ms / repeats (their p99s, ms)")
        print("| target | " + " | ".join(str(n) for n in sorted({r['pairs'] for r in pooled})) + " |")
        print("|---|" + "---|" * len({r["pairs"] for r in pooled}))
        for t in ("baseline", "g722", "w1", "w2"):
            cells = []
            for n in sorted({r["pairs"] for r in pooled}):
                p99 = [r["analysis"]["interval_error_ms"]["p99"] for r in pooled if r["pairs"] == n and r["target"] == t]
                cells.append(f"{sum(x <= ns.p99_limit for x in p99)}/{len(p99)} ({', '.join(f'{x:.1f}' for x in p99)})"
                             if p99 else "-")
            if any(c != "-" for c in cells):
                print(f"| {NAMES[t]} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
