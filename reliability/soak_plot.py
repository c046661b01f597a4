"""
Analysis and plot of one reliability/soak.py run directory.

Why: turns the raw samples of a soak into the verdicts of issue 15 -- memory
growth after warm-up, fd growth, egress clock drift, latency stability from
the first to the last ten minutes, call accounting (CallStarted vs
CallEnded) and error lines in the log -- and a PNG of RSS, fds, p99 latency
and calls over time.

Units: times in minutes since the generator started (``t_min``), RSS in MB
(10^6 bytes... no: MiB, /proc's kB / 1024), latencies and drift in ms.

Writes ``DIR/summary.json`` and ``DIR/soak.png``; prints a Markdown summary
(also ``DIR/summary.md``).

Usage: ``python reliability/soak_plot.py reliability/results/soak/relay [...]``
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

EGRESS_S = 0.020
ERROR_RE = re.compile(r"#(error|critical)\]|Traceback|Unhandled")
WARN_RE = re.compile(r"#warn\]")


# -- loading -------------------------------------------------------------------------


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every JSON object of a JSON-lines file (a torn last line is skipped)."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


# -- statistics ----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; nan if empty."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = min(len(v) - 1, max(0, math.ceil(p / 100 * len(v)) - 1))
    return v[k]


def hist_merge(hists: Iterable[dict[str, Any]]) -> dict[int, int]:
    """Sum generator latency histograms (``{"bin_ms", "bins": {index: count}}``)."""
    out: Counter[int] = Counter()
    for h in hists:
        for k, c in h.get("bins", {}).items():
            out[int(k)] += c
    return dict(out)


def hist_percentile(bins: dict[int, int], p: float, bin_ms: float = 0.1) -> float:
    """Percentile (ms, upper edge of the bin) of a histogram; nan if empty."""
    total = sum(bins.values())
    if not total:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for k in sorted(bins):
        seen += bins[k]
        if seen >= rank:
            return (k + 1) * bin_ms
    return (max(bins) + 1) * bin_ms


def slope_per_hour(xs_min: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` against minutes, per hour; nan if fewer than 2 points."""
    n = len(xs_min)
    if n < 2:
        return float("nan")
    mx = sum(xs_min) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs_min)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs_min, ys)) / sxx * 60.0


def median(values: Sequence[float]) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


# -- verdict pieces -------------------------------------------------------------------


def growth(ts_min: Sequence[float], values: Sequence[float], warmup_min: float, window_min: float = 5.0) -> dict[str, float]:
    """
    Growth of a sampled series after warm-up: median of the first
    ``window_min`` minutes after ``warmup_min`` vs the median of the last
    ``window_min`` minutes, the maximum after warm-up, and the least-squares
    slope after warm-up (per hour).
    """
    pts = [(t, v) for t, v in zip(ts_min, values) if t >= warmup_min]
    if not pts:
        return {"n": 0}
    t_end = pts[-1][0]
    start = [v for t, v in pts if t < warmup_min + window_min]
    end = [v for t, v in pts if t > t_end - window_min]
    return {
        "n": len(pts),
        "after_warmup": median(start),
        "end": median(end),
        "growth": median(end) - median(start),
        "max": max(v for _, v in pts),
        "slope_per_h": slope_per_hour([t for t, _ in pts], [v for _, v in pts]),
    }


def egress_offsets(samples: Sequence[dict[str, Any]]) -> list[tuple[float, float, float]]:
    """
    (t_min, offset ms, rtt ms) per /metrics sample: the sampler's wall time
    (middle of the request) minus (ticks + late_ticks) * 20 ms, i.e. the
    egress clock's start plus the phase in the current 20 ms and the request
    noise.  Its lower envelope moves only if the clock drifts.
    """
    out = []
    for s in samples:
        m = s.get("metrics") or {}
        if "xlbridge_egress_ticks_total" not in m or "metrics_wall" not in s:
            continue
        n = m["xlbridge_egress_ticks_total"] + m.get("xlbridge_egress_late_ticks_total", 0.0)
        out.append((s["t"] / 60.0, (s["metrics_wall"] - n * EGRESS_S) * 1000.0, s.get("metrics_rtt_ms", float("nan"))))
    if out:
        base = min(o for _, o, _ in out)
        out = [(t, o - base, r) for t, o, r in out]
    return out


def envelope_drift(points: Sequence[tuple[float, float]], window_min: float, skip_min: float = 1.0) -> dict[str, float]:
    """
    Drift of a lower envelope: min of the values in the first ``window_min``
    minutes (after ``skip_min``) vs min in the last ``window_min`` minutes.
    """
    pts = [(t, v) for t, v in points if t >= skip_min]
    if len(pts) < 2:
        return {"n": len(pts)}
    t_end = pts[-1][0]
    first = [v for t, v in pts if t < skip_min + window_min]
    last = [v for t, v in pts if t > t_end - window_min]
    return {"n": len(pts), "first_min": min(first), "last_min": min(last), "drift": min(last) - min(first),
            "spread": max(v for _, v in pts) - min(v for _, v in pts)}


def call_accounting(events: Sequence[dict[str, Any]], generated: int) -> dict[str, Any]:
    """CallStarted vs CallEnded (by call id), reasons, and calls the generator made."""
    started = {e["call_id"] for e in events if e.get("event") == "CallStarted"}
    ended = [e for e in events if e.get("event") == "CallEnded"]
    ended_ids = {e["call_id"] for e in ended}
    return {
        "generated": generated,
        "started": len(started),
        "ended": len(ended),
        "ended_unique": len(ended_ids),
        "started_not_ended": sorted(started - ended_ids)[:20],
        "n_started_not_ended": len(started - ended_ids),
        "ended_not_started": len(ended_ids - started),
        "reasons": dict(Counter(e.get("reason") for e in ended)),
        "events": dict(Counter(e.get("event") for e in events)),
        "dropped_reasons": dict(Counter(e.get("reason") for e in events if e.get("event") == "UtteranceDropped")),
    }


def log_problems(lines: Iterable[str]) -> dict[str, Any]:
    """Error (error/critical level, tracebacks, unhandled) and warning lines of a twistd log."""
    errors, warns = [], []
    for line in lines:
        if ERROR_RE.search(line):
            errors.append(line.rstrip())
        elif WARN_RE.search(line):
            warns.append(line.rstrip())
    return {"errors": len(errors), "warnings": len(warns), "error_examples": errors[:10],
            "warning_examples": warns[:10]}


def per_minute_latency_events(events: Sequence[dict[str, Any]], t0_wall: float) -> dict[int, list[float]]:
    """``PlaybackStarted.total_ms`` (end of speech -> first translated packet) by minute since ``t0_wall``."""
    out: dict[int, list[float]] = {}
    for e in events:
        if e.get("event") == "PlaybackStarted" and e.get("total_ms") is not None:
            out.setdefault(int((e["time"] - t0_wall) // 60), []).append(float(e["total_ms"]))
    return out


def window_stats(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50": percentile(values, 50), "p90": percentile(values, 90),
            "p99": percentile(values, 99), "max": max(values) if values else float("nan")}


def hist_stats(bins: dict[int, int], bin_ms: float = 0.1) -> dict[str, float]:
    return {"n": sum(bins.values()), "p50": hist_percentile(bins, 50, bin_ms), "p90": hist_percentile(bins, 90, bin_ms),
            "p99": hist_percentile(bins, 99, bin_ms), "p99.9": hist_percentile(bins, 99.9, bin_ms),
            "max": (max(bins) + 1) * bin_ms if bins else float("nan")}


# -- the whole run ---------------------------------------------------------------------


def analyse(d: Path, warmup_min: float = 10.0, window_min: float = 10.0) -> dict[str, Any]:
    """Every figure of one run directory (see the module docstring)."""
    run = json.loads((d / "run.json").read_text()) if (d / "run.json").exists() else {}
    samples = load_jsonl(d / "samples.jsonl")
    gen = load_jsonl(d / "gen.jsonl")
    events = load_jsonl(d / "events.jsonl")
    calls = load_jsonl(d / "calls.jsonl")
    minutes = float(run.get("minutes", 60))
    # short (dry) runs: scale warm-up and windows down
    warmup_min = min(warmup_min, minutes / 6)
    window_min = min(window_min, minutes / 6)
    gen_t0 = (gen[0]["wall"] - gen[0]["t"]) if gen else (samples[0]["wall"] if samples else 0.0)
    live = [s for s in samples if "proc" in s and not s.get("final")]
    for s in samples:
        s["t"] = s["wall"] - gen_t0
    ts = [s["t"] / 60 for s in live]
    rss = [s["proc"]["VmRSS"] / 1024 for s in live]
    fds = [s["proc"]["fds"] for s in live]
    calls_up = [(s["metrics"] or {}).get("xlbridge_active_calls", float("nan")) if "metrics" in s else float("nan")
                for s in live]
    final = next((s for s in samples if s.get("final")), None)
    res: dict[str, Any] = {"dir": str(d), "mode": run.get("mode"), "minutes": minutes, "warmup_min": warmup_min,
                           "window_min": window_min, "samples": len(live), "generator_minutes": len(gen)}
    res["rss_mb"] = growth(ts, rss, warmup_min)
    res["rss_mb"]["first"] = rss[0] if rss else None
    res["fds"] = growth(ts, fds, warmup_min)
    res["fds"]["first_idle"] = fds[0] if fds else None
    if final and "proc" in final:
        res["rss_mb"]["final_idle"] = final["proc"]["VmRSS"] / 1024
        res["fds"]["final_idle"] = final["proc"]["fds"]
        fm = final.get("metrics", {})
        res["final_metrics"] = {k: v for k, v in fm.items() if k.startswith(("xlbridge_active", "xlbridge_egress",
                                                                                "xlbridge_calls", "xlbridge_engine_errors",
                                                                                "xlbridge_packets_dropped"))}
    if live:
        cpu = [s["proc"]["cpu_s"] for s in live]
        res["cpu_cores"] = (cpu[-1] - cpu[0]) / max(1e-9, (live[-1]["t"] - live[0]["t"]))
    # calls
    res["calls_up"] = {"median": median([c for c in calls_up if c == c]), "max": max([c for c in calls_up if c == c], default=None)}
    # egress clock
    offs = egress_offsets(live)
    # only requests answered within 10 ms: the reading time is known to +-5 ms
    res["egress_metrics_offset_ms"] = envelope_drift([(t, o) for t, o, r in offs if r <= 10.0], window_min)
    res["egress_metrics_offset_ms"]["samples_rtt_le_10ms"] = sum(1 for *_, r in offs if r <= 10.0)
    probe = [(g["minute"] + 1.0, g["probe_resid_min_ms"]) for g in gen if "probe_resid_min_ms" in g]
    res["egress_probe_residual_ms"] = envelope_drift(probe, window_min)
    if run.get("mode") == "translated" and "probe_clock_hz" not in run:
        # runs before the fix read the G.722 (8 kHz) RTP clock as 16 kHz
        res["egress_probe_residual_ms"] = {"invalid": "G.722 8 kHz timestamps read as 16 kHz", "n": len(probe)}
    res["egress_probe_residual_ms"]["series"] = [round(v, 3) for _, v in probe]
    last = live[-1]["metrics"] if live and "metrics" in live[-1] else {}
    res["egress_counters"] = {k.replace("xlbridge_egress_", ""): v for k, v in last.items()
                              if k.startswith("xlbridge_egress_") and "_bucket" not in k}
    # latency per minute and first/last windows
    n_min = len(gen)
    per_min: list[dict[str, Any]] = []
    if run.get("mode") == "relay":
        res["latency_kind"] = "one-way per packet, generator send -> generator receive (ms)"
        for g in gen:
            per_min.append({"minute": g["minute"], **hist_stats(hist_merge([g["lat_hist"]]))})
        first = hist_merge(g["lat_hist"] for g in gen if g["minute"] < window_min)
        lastw = hist_merge(g["lat_hist"] for g in gen if g["minute"] >= n_min - window_min)
        res["latency_first"] = hist_stats(first)
        res["latency_last"] = hist_stats(lastw)
        res["latency_all"] = hist_stats(hist_merge(g["lat_hist"] for g in gen))
    else:
        res["latency_kind"] = "end of speech -> first translated packet, PlaybackStarted.total_ms (ms)"
        pm = per_minute_latency_events(events, gen_t0)
        for m in sorted(pm):
            per_min.append({"minute": m, **window_stats(pm[m])})
        first_v = [v for m, vs in pm.items() if m < window_min for v in vs]
        last_v = [v for m, vs in pm.items() if m >= n_min - window_min for v in vs]
        res["latency_first"] = window_stats(first_v)
        res["latency_last"] = window_stats(last_v)
        res["latency_all"] = window_stats([v for vs in pm.values() for v in vs])
        stages = {}
        for key in ("asr_ms", "mt_ms", "tts_first_byte_ms", "queue_wait_ms"):
            stages[key] = window_stats([e[key] for e in events if e.get("event") == "PlaybackStarted" and e.get(key) is not None])
        res["latency_stages"] = stages
    res["latency_per_minute"] = per_min
    res["windows"] = window_rows(live, gen, events, gen_t0, run.get("mode"), step_min=5.0 if minutes >= 20 else 0.5)
    # generator health
    res["generator"] = {
        "sent": sum(g.get("sent", 0) for g in gen), "received": sum(g.get("received", 0) for g in gen),
        "send_errors": sum(g.get("send_errors", 0) for g in gen), "unmarked": sum(g.get("unmarked", 0) for g in gen),
        "late_max_ms": max((g.get("late_max_ms", 0.0) for g in gen), default=None),
        "late_over_5ms_slots": sum(g.get("late_over_5ms", 0) for g in gen),
    }
    generated = sum(1 for c in calls if "start" in c)
    res["calls"] = call_accounting(events, generated)
    res["calls"]["generator_stopped"] = sum(1 for c in calls if "stop" in c)
    logp = d / "xlbridge.log"
    res["log"] = log_problems(logp.read_text(errors="replace").splitlines() if logp.exists() else [])
    res["series"] = {"t_min": [round(t, 3) for t in ts], "rss_mb": [round(r, 3) for r in rss], "fds": fds,
                     "calls": calls_up}
    return res


def window_rows(live: Sequence[dict[str, Any]], gen: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]],
                gen_t0: float, mode: Optional[str], step_min: float) -> list[dict[str, Any]]:
    """
    One row per ``step_min`` minutes: RSS (MiB) and fds at the window's last
    sample, calls up, xlbridge CPU (cores), egress late / skipped 20 ms
    intervals in the window, and latency p50 / p99 (ms) of the window.
    """
    rows: list[dict[str, Any]] = []
    if not live:
        return rows
    t_end = live[-1]["t"] / 60
    w = 0.0
    prev = live[0]
    while w < t_end:
        inside = [x for x in live if w <= x["t"] / 60 < w + step_min]
        if not inside:
            w += step_min
            continue
        last = inside[-1]
        m0, m1 = prev.get("metrics") or {}, last.get("metrics") or {}
        row: dict[str, Any] = {
            "from_min": w, "rss_mb": last["proc"]["VmRSS"] / 1024, "fds": last["proc"]["fds"],
            "calls": m1.get("xlbridge_active_calls"),
            "cpu_cores": (last["proc"]["cpu_s"] - prev["proc"]["cpu_s"]) / max(1e-9, last["t"] - prev["t"]),
            "late": (m1.get("xlbridge_egress_late_ticks_total", 0) - m0.get("xlbridge_egress_late_ticks_total", 0))
            if m0 and m1 else None,
            "skipped": (m1.get("xlbridge_egress_skipped_ticks_total", 0) - m0.get("xlbridge_egress_skipped_ticks_total", 0))
            if m0 and m1 else None,
        }
        if mode == "relay":
            st = hist_stats(hist_merge(g["lat_hist"] for g in gen if w <= g["minute"] < w + step_min))
        else:
            st = window_stats([float(e["total_ms"]) for e in events if e.get("event") == "PlaybackStarted"
                               and e.get("total_ms") is not None and w <= (e["time"] - gen_t0) / 60 < w + step_min])
        row["lat_n"], row["lat_p50"], row["lat_p99"] = st["n"], st["p50"], st["p99"]
        gw = [g for g in gen if w <= g["minute"] < w + step_min]
        sent = sum(g.get("sent", 0) for g in gw)
        row["reply_ratio"] = sum(g.get("received", 0) for g in gw) / sent if sent else None
        rows.append(row)
        prev = last
        w += step_min
    return rows


def load_summary(path: Path) -> dict[str, Any]:
    """
    Contention during the run from ``machine-load.jsonl`` (soak.py
    --watch): load average and machine busy fraction (median, max), and per
    watched process the cores it ran and the cores' worth of time it waited
    runnable for a CPU (starvation), over the whole file.
    """
    recs = load_jsonl(path)
    if len(recs) < 2:
        return {"n": len(recs)}
    span = recs[-1]["wall"] - recs[0]["wall"]
    out: dict[str, Any] = {"n": len(recs), "minutes": span / 60,
                           "loadavg1_median": median([float(r["loadavg"][0]) for r in recs]),
                           "loadavg1_max": max(float(r["loadavg"][0]) for r in recs),
                           "busy_median": median([r["busy"]["cpu"] for r in recs]),
                           "busy_min": min(r["busy"]["cpu"] for r in recs), "procs": {}}
    for name in recs[0]["procs"]:
        a = next((r["procs"][name] for r in recs if name in r["procs"]), None)
        b = next((r["procs"][name] for r in reversed(recs) if name in r["procs"]), None)
        if a and b:
            out["procs"][name] = {"run_cores": (b["run_s"] - a["run_s"]) / span,
                                  "wait_cores": (b["wait_s"] - a["wait_s"]) / span}
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res["series"]
    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    ax[0].plot(s["t_min"], s["rss_mb"])
    ax[0].set_ylabel("RSS (MiB)")
    ax[1].plot(s["t_min"], s["fds"])
    ax[1].set_ylabel("open fds")
    pm = res["latency_per_minute"]
    ax[2].plot([p["minute"] + 0.5 for p in pm], [p["p99"] for p in pm], "o-", label="p99")
    ax[2].plot([p["minute"] + 0.5 for p in pm], [p["p50"] for p in pm], ".-", label="p50")
    ax[2].set_ylabel("latency (ms, log)")
    ax[2].set_yscale("log")
    ax[2].legend(loc="upper right")
    ax[3].plot(s["t_min"], s["calls"])
    ax[3].set_ylabel("active calls")
    ax[3].set_xlabel("minutes since the generator started")
    for a in ax:
        a.grid(alpha=0.3)
        a.axvline(res["warmup_min"], color="grey", lw=0.8, ls="--")
    ax[0].set_title(f"xlbridge soak: {res['mode']}, {fmt(res['calls_up'].get('max'), 0)} calls max, "
                    f"{res['minutes']:g} min (dashed: end of warm-up)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return "nan" if x != x else f"{x:.{digits}f}"
    return str(x)


def markdown(res: dict[str, Any]) -> str:
    r, f, c = res["rss_mb"], res["fds"], res["calls"]
    lines = [f"### {res['mode']} ({res['minutes']:g} min, `{res['dir']}`)", ""]
    lines += ["| figure | value |", "|---|---:|"]
    lines += [
        f"| calls up (median / max, /metrics) | {fmt(res['calls_up']['median'], 0)} / {fmt(res['calls_up']['max'], 0)} |",
        f"| xlbridge CPU (cores, whole run) | {fmt(res.get('cpu_cores'))} |",
        f"| RSS first / after warm-up / end / max (MiB) | {fmt(r.get('first'))} / {fmt(r.get('after_warmup'))} / {fmt(r.get('end'))} / {fmt(r.get('max'))} |",
        f"| RSS growth after warm-up (MiB) / slope (MiB/h) | {fmt(r.get('growth'))} / {fmt(r.get('slope_per_h'))} |",
        f"| RSS idle after the last call (MiB) | {fmt(r.get('final_idle'))} |",
        f"| fds idle at start / after warm-up / end / max / idle after last call | {fmt(f.get('first_idle'))} / {fmt(f.get('after_warmup'))} / {fmt(f.get('end'))} / {fmt(f.get('max'))} / {fmt(f.get('final_idle'))} |",
        f"| egress probe residual drift, first vs last window (ms) | {fmt(res['egress_probe_residual_ms'].get('drift'), 3)} |",
        f"| egress (ticks+late)*20 ms vs wall, envelope drift (ms) | {fmt(res['egress_metrics_offset_ms'].get('drift'), 3)} |",
        f"| egress late / skipped ticks, errors, max lateness (s) | {fmt(res['egress_counters'].get('late_ticks_total'), 0)} / {fmt(res['egress_counters'].get('skipped_ticks_total'), 0)}, {fmt(res['egress_counters'].get('errors_total'), 0)}, {fmt(res['egress_counters'].get('max_lateness_seconds'), 3)} |",
        f"| calls generated / CallStarted / CallEnded / started-not-ended | {c['generated']} / {c['started']} / {c['ended']} / {c['n_started_not_ended']} |",
        f"| CallEnded reasons | {c['reasons']} |",
        f"| log error lines / warning lines | {res['log']['errors']} / {res['log']['warnings']} |",
        "",
        f"Latency: {res['latency_kind']}",
        "",
        "| window | n | p50 | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("first", "last", "all"):
        s = res[f"latency_{name}"]
        lines.append(f"| {name} | {s.get('n')} | {fmt(s.get('p50'))} | {fmt(s.get('p90'))} | {fmt(s.get('p99'))} | {fmt(s.get('max'))} |")
    lines += ["", "Over time (RSS/fds at the window's last sample; late/skipped: egress 20 ms intervals in the window):", "",
              "| from min | calls | RSS MiB | fds | CPU cores | late | skipped | replies/sent | lat n | lat p50 ms | lat p99 ms |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res.get("windows", []):
        lines.append(f"| {r['from_min']:g} | {fmt(r['calls'], 0)} | {fmt(r['rss_mb'], 1)} | {r['fds']} | {fmt(r['cpu_cores'])} "
                     f"| {fmt(r['late'], 0)} | {fmt(r['skipped'], 0)} | {fmt(r.get('reply_ratio'))} | {r['lat_n']} | {fmt(r['lat_p50'], 1)} | {fmt(r['lat_p99'], 1)} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    dirs = argv if argv is not None else sys.argv[1:]
    if dirs and dirs[0] == "--load":
        print(json.dumps(load_summary(Path(dirs[1])), indent=1))
        return 0
    for d in map(Path, dirs):
        res = analyse(d)
        (d / "summary.json").write_text(json.dumps(res, indent=1))
        plot(res, d / "soak.png")
        md = markdown(res)
        (d / "summary.md").write_text(md)
        print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
