"""
``fuzz.md`` from the fuzzer's raw report: machine, command, and per surface
inputs sent, escaped exceptions, drops by reason, healthy frames lost, RSS
(KiB) and fds before/after.
"""

from __future__ import annotations

from typing import Any


def _drops(delta: dict[str, float]) -> str:
    parts = []
    for key, v in sorted(delta.items(), key=lambda kv: -kv[1]):
        name, _, labels = key.partition("{")
        short = name.replace("xlbridge_", "").replace("_total", "")
        if labels:
            short += "{" + labels
        parts.append(f"{short}: {int(v)}")
    return "<br>".join(parts) if parts else "none"


def _gaps_in(report: dict[str, Any], window: list[float]) -> int:
    gaps = (report.get("healthy") or {}).get("gaps") or []
    return sum(n for t, _leg, n in gaps if window[0] <= t <= window[1])


def write_markdown(path: str, report: dict[str, Any]) -> None:
    """Write the tables (missing parts are shown as such, not invented)."""
    m = report.get("machine", {})
    out = ["# Fuzz run (issue 15, bad input)", ""]
    out.append(f"- Date: {report.get('date')}")
    out.append(f"- Machine: {m.get('cpu')}, {m.get('cores')} cores, kernel {m.get('kernel')}, Python {m.get('python')}")
    out.append(f"- Command: `{report.get('command')}`")
    if report.get("xlbridge_argv"):
        out.append(f"- Bridge: `{' '.join(report['xlbridge_argv'][1:])}`")
    out.append("")
    h = report.get("healthy")
    if h:
        out.append("## Healthy calls")
        out.append("")
        out.append(f"{h['pairs']} relayed pairs ({h['legs']} legs), {h['counted_seconds']:.0f} s of counted audio "
                   f"per leg while every live surface was fuzzed: {h['frames_sent']} frames sent, "
                   f"{h['frames_received_exact']} received bit-exact and in order, **{h['frames_lost']} lost**; "
                   f"other anomalies {h['bad']}; sender's worst lateness {h['send_lateness_max_ms']} ms "
                   f"({h['ticks_late_over_20ms']} ticks over 20 ms late).")
        out.append("")
    out.append("## Per surface")
    out.append("")
    out.append("| Surface | Inputs sent | Connections | Escaped exceptions | Drops / refusals by reason (metrics delta) "
               "| Healthy frames lost | RSS KiB before → after | fds before → after | Bridge CPU s | Seconds |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    total = 0
    for name, s in report.get("surfaces", {}).items():
        t = s["tally"]
        total += t["inputs"]
        if name == "config":
            esc = t["notes"].get("escaped", 0)
            sub = s.get("subprocess", {})
            bad_sub = sum(1 for v in sub.values() if v["traceback"] or not isinstance(v["rc"], int) or v["rc"] == 0)
            out.append(f"| config | {t['inputs']} | – | {esc} in-process; {bad_sub} of {len(sub)} subprocesses "
                       f"unclear | n/a (ConfigError / UsageError expected) | n/a | n/a | n/a | n/a | {t['seconds']:.0f} |")
            continue
        esc = sum(s["escaped_in_log"].values())
        b, a = s["before"], s["after"]
        peak_fds = max([x["fds"] for x in s.get("samples", [])] + [a["fds"]])
        peak_rss = max([x["rss_kib"] for x in s.get("samples", [])] + [a["rss_kib"]])
        lost = _gaps_in(report, s["window"])
        out.append(
            f"| {name} | {t['inputs']} | {t['connections']} | {esc} | {_drops(s['metrics_delta'])} | {lost} | "
            f"{b['rss_kib']} → {a['rss_kib']} (peak {peak_rss}) | {b['fds']} → {a['fds']} (peak {peak_fds}) | "
            f"{s['cpu_s']} | {t['seconds']:.0f} |"
        )
    out.append(f"| **total** | **{total}** | | | | | | | | |")
    mon = report.get("surfaces", {}).get("monitor", {})
    if mon.get("phases"):
        out.append("")
        out.append("Monitor sub-phases, healthy frames lost in each: " + ", ".join(
            f"{label} {_gaps_in(report, [a, b])}" for label, a, b in mon["phases"]) + ".")
    out.append("")
    if report.get("start") and report.get("end"):
        st, en = report["start"]["footprint"], report["end"]["footprint"]
        out.append(f"Whole run, bridge: RSS {st['rss_kib']} → {en['rss_kib']} KiB (high-water {en['vm_hwm_kib']}), "
                   f"fds {st['fds']} → {en['fds']}, threads {st['threads']} → {en['threads']} (end = 15 s after the "
                   f"last surface); CPU {report['end']['cpu_s'] - report['start']['cpu_s']:.0f} s.  Exit on SIGTERM: "
                   f"{report.get('stop', {}).get('xlbridge_exit')}; escaped at shutdown: "
                   f"{report.get('stop', {}).get('escaped_in_log')}.")
        out.append("")
    out.append("## Inputs by case")
    out.append("")
    for name, s in report.get("surfaces", {}).items():
        t = s["tally"]
        cases = ", ".join(f"{k} {v}" for k, v in sorted(t["by_case"].items(), key=lambda kv: -kv[1]))
        out.append(f"- **{name}**: {cases}")
        if t["errors"]:
            out.append(f"  - fuzzer-side I/O errors (the bridge closing bad connections): {t['errors']}")
        # per-path "5xx" notes of older runs counted 501/503 answers too, on
        # keep-alive connections whose framing the fuzz itself breaks: the
        # status counts are the figure
        notes = {k: v for k, v in t["notes"].items() if k != "accepted_by_option" and not k.startswith("5xx ")}
        if notes:
            out.append(f"  - notes: {notes}")
    out.append("")
    examples = [(n, s.get("escaped_examples")) for n, s in report.get("surfaces", {}).items() if s.get("escaped_examples")]
    esc_cfg = report.get("surfaces", {}).get("config", {}).get("escaped")
    if examples or esc_cfg:
        out.append("## Escaped exceptions (examples)")
        out.append("")
        for n, ex in examples:
            out.append(f"### {n}")
            out.append("")
            for e in ex[:5]:
                out.append("```")
                out.append(e)
                out.append("```")
        if esc_cfg:
            out.append("### config (in-process)")
            out.append("")
            for k, v in esc_cfg.items():
                out.append(f"- `{k}`: {v}")
        out.append("")
    sub = report.get("surfaces", {}).get("config", {}).get("subprocess")
    if sub:
        out.append("## Config: one twistd per option with a bad value")
        out.append("")
        out.append("| Option | Value | Exit | Traceback | Message |")
        out.append("|---|---|---|---|---|")
        for opt, v in sub.items():
            msg = v["message"].replace("|", "\\|")
            out.append(f"| --{opt} | `{v['value']}` | {v['rc']} | {'YES' if v['traceback'] else 'no'} | {msg} |")
        out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
