"""
Translated-call capacity of one xlbridge process (what one worker runs).

For each N in ``--ns`` runs ``reliability/soak.py --mode translated --calls N``
(the three cloud fakes, N churn-free calls whose callers take turns talking,
one xlbridge process with ``--engines cloud``) for ``--minutes``, one after
the other, and reads back:

- end of speech -> first translated packet: ``total_ms`` of the bridge's
  ``PlaybackStarted`` events in the steady window (all N calls up), p50 /
  p95 / p99;
- the bridge's CPU (utime + stime, core) over the steady window and its RSS
  at the end, from soak.py's samples (every 10 s);
- the CPU of the generator and the fakes over the same window (this script
  reads /proc for them), so a reader can see whether they were short of CPU;
- utterances dropped (``UtteranceDropped`` events).

The capacity rule of issue 16: p95 <= the fakes' configured engine delays +
50 ms.  With soak.py's fakes those delays are Deepgram endpointing 300 ms
(xlbridge's default ``endpointing=300``; the fake's own latency is 0),
DeepL 150 ms and ElevenLabs first byte 100 ms: 550 ms, so p95 <= 600 ms.

Writes ``OUT/translated.json`` and keeps each run's run.json, samples and
events (gzipped) and summary under ``OUT/nN/`` (logs are dropped: large).

Usage: ``python bench/translated_capacity.py --ns 10,20,30 --minutes 2``
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
ENGINE_SUM_MS = 300 + 150 + 100


def pct(vals: list[float], q: float) -> float | None:
    if not vals:
        return None
    s = sorted(vals)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def helper_pids() -> dict[int, str]:
    """The soak's generator and fakes (by command line)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tests.fakes" in cmd:
            out[int(d)] = "fake-" + cmd.split("tests.fakes", 1)[1].split()[0]
        elif "soak.py" in cmd and "--gen" in cmd.split():
            out[int(d)] = "generator"
    return out


def cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return None


def analyse(out: str, t_lo: float, t_hi: float) -> dict[str, Any]:
    samples = []
    with open(os.path.join(out, "samples.jsonl")) as f:
        for line in f:
            samples.append(json.loads(line))
    win = [s for s in samples if t_lo <= s["t"] <= t_hi and "proc" in s]
    a, b = win[0], win[-1]
    wall0 = samples[0]["wall"] - samples[0]["t"]
    lat, dropped, n_events = [], 0, 0
    parts: dict[str, list[float]] = {k: [] for k in ("asr_ms", "mt_ms", "tts_first_byte_ms", "queue_wait_ms")}
    reasons: dict[str, int] = {}
    with open(os.path.join(out, "events.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            if e.get("event") == "UtteranceDropped":
                dropped += 1
                reasons[str(e.get("reason"))] = reasons.get(str(e.get("reason")), 0) + 1
            if e.get("event") != "PlaybackStarted" or e.get("total_ms") is None:
                continue
            n_events += 1
            t = e.get("time", 0) - wall0
            if a["t"] <= t <= b["t"]:
                lat.append(float(e["total_ms"]))
                for k, v in parts.items():
                    if e.get(k) is not None:
                        v.append(float(e[k]))
    return {
        "window_s": [a["t"], b["t"]],
        "cpu_core": (b["proc"]["cpu_s"] - a["proc"]["cpu_s"]) / (b["t"] - a["t"]),
        "rss_mb": b["proc"]["VmRSS"] / 1024,
        "hwm_mb": b["proc"]["VmHWM"] / 1024,
        "threads": b["proc"].get("Threads"),
        "playbacks_in_window": len(lat),
        "playbacks_total": n_events,
        "utterances_dropped_total": dropped,
        "utterances_dropped_reasons": reasons,
        # the stages of total_ms: end of speech -> final transcript, translation, TTS first byte, queue + tick
        "stages_ms": {k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in parts.items()},
        "total_ms": {"p50": pct(lat, 50), "p95": pct(lat, 95), "p99": pct(lat, 99),
                     "max": max(lat) if lat else None,
                     "mean": statistics.fmean(lat) if lat else None},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="10,20,30")
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--bridge-cpu", default="0")
    ap.add_argument("--gen-cpu", default="0")
    ap.add_argument("--fake-cpu", default="1")
    ap.add_argument("--base", type=int, default=23000)
    ap.add_argument("--monitor-port", type=int, default=3102)
    ap.add_argument("--out", default=os.path.join(HERE, "out", "translated"))
    ns = ap.parse_args(argv)
    os.makedirs(ns.out, exist_ok=True)
    results = []
    for n in [int(x) for x in ns.ns.split(",") if x.strip()]:
        out = os.path.join(ns.out, f"n{n}")
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "reliability/soak.py", "--mode", "translated", "--calls", str(n),
               "--minutes", str(ns.minutes), "--min-call", "200", "--base", str(ns.base),
               "--monitor-port", str(ns.monitor_port), "--bridge-cpu", ns.bridge_cpu, "--gen-cpu", ns.gen_cpu,
               "--fake-cpu", ns.fake_cpu, "--out", out]
        print(" ".join(cmd), flush=True)
        t_start = time.monotonic()
        log = open(os.path.join(ns.out, f"n{n}.out"), "w")
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        # steady window: all calls up (spawn gap 0.5 s) plus 15 s, to 5 s before the end
        t_lo = n * 0.5 + 15.0
        t_hi = ns.minutes * 60 - 5.0
        time.sleep(max(0.0, t_start + t_lo + 3.0 - time.monotonic()))
        helpers = helper_pids()
        h0 = {pid: cpu_s(pid) for pid in helpers}
        w0 = time.monotonic()
        time.sleep(max(0.0, t_start + t_hi - time.monotonic()))
        h1 = {pid: cpu_s(pid) for pid in helpers}
        w1 = time.monotonic()
        rc = p.wait(timeout=ns.minutes * 60 + 180)
        log.close()
        helpers_cpu: dict[str, float] = {}
        for pid, name in helpers.items():
            if h0.get(pid) is not None and h1.get(pid) is not None:
                helpers_cpu[name] = helpers_cpu.get(name, 0.0) + (h1[pid] - h0[pid]) / (w1 - w0)
        r = {"calls": n, "rc": rc, "command": " ".join(cmd), **analyse(out, t_lo, t_hi),
             "helpers_cpu_core": helpers_cpu}
        r["meets_rule"] = r["total_ms"]["p95"] is not None and r["total_ms"]["p95"] <= ENGINE_SUM_MS + 50
        r["cpu_core_per_call"] = r["cpu_core"] / n
        results.append(r)
        print(json.dumps(r), flush=True)
        # keep the small files only
        for name in os.listdir(out):
            path = os.path.join(out, name)
            if name in ("samples.jsonl", "events.jsonl"):
                with open(path, "rb") as f, gzip.open(path + ".gz", "wb") as g:
                    g.write(f.read())
                os.unlink(path)
            elif name not in ("run.json", "summary.json", "soak.png"):
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
        time.sleep(3)
    with open(os.path.join(ns.out, "translated.json"), "w") as f:
        json.dump({"engine_sum_ms": ENGINE_SUM_MS, "rule_p95_ms": ENGINE_SUM_MS + 50,
                   "minutes": ns.minutes, "results": results}, f, indent=1)
    print("| calls | p50 ms | p95 ms | p99 ms | n | CPU core | per call | RSS MB | helpers |")
    for r in results:
        t = r["total_ms"]
        print(f"| {r['calls']} | {t['p50']} | {t['p95']} | {t['p99']} | {r['playbacks_in_window']} | "
              f"{r['cpu_core']:.3f} | {r['cpu_core_per_call']:.4f} | {r['rss_mb']:.0f} | {r['helpers_cpu_core']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
