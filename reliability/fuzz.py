"""
Fuzz every surface of one running xlbridge while 10 healthy relayed calls
are checked bit-exact (issue 15, "Bad input").  A command, not part of CI::

    .venv/bin/python -m reliability.fuzz --surface all --count 1000000 --out reliability/results

Starts ``twistd -n xlbridge`` (relay mode, ``--reply-codec slin16``) with
10 healthy RTP pairs, 4 RTP pairs to fuzz, 6 AudioSocket and 4 WebSocket
extensions, the monitor (token in ``XLBRIDGE_MONITOR_TOKEN``) and ``--ari``
against a fake ARI child (:mod:`reliability.fuzz_ari`); starts the healthy
calls (:mod:`reliability.fuzz_healthy`, its own process); then fuzzes one
surface at a time so every figure can be attributed: before/after RSS and
fds (``/proc``), drop counters by reason (``/metrics`` deltas), the log
scanned for ``Traceback``/``Unhandled``, and healthy frames lost.  The
config surface runs last, in-process and as subprocesses (it needs no
running bridge).  Writes ``fuzz.json`` (raw) and ``fuzz.md`` (tables).

``--count`` is the total; it is split over the chosen surfaces by
:data:`WEIGHTS`.  The fuzzer itself runs at nice 10 so the healthy calls
and the bridge get the CPU first on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Callable

from reliability import fuzz_audiosocket, fuzz_config, fuzz_monitor, fuzz_rtp, fuzz_websocket
from reliability.fuzz_common import (
    Tally,
    counter_delta,
    footprint,
    cpu_seconds,
    log_tail_lines,
    machine,
    scan_log,
    scrape,
    write_json,
)
from reliability.fuzz_report import write_markdown
from reliability.fuzz_target import HEALTHY_PAIRS, Target, rt_prefix, start

SURFACES = ("rtp", "audiosocket", "websocket", "ari", "monitor", "config")
#: Share of ``--count`` per surface (renormalised over the chosen ones).
WEIGHTS = {"rtp": 0.47, "audiosocket": 0.20, "websocket": 0.10, "ari": 0.10, "monitor": 0.05, "config": 0.08}


def split(count: int, surfaces: list[str]) -> dict[str, int]:
    """``count`` inputs shared out by :data:`WEIGHTS`."""
    total = sum(WEIGHTS[s] for s in surfaces)
    return {s: int(round(count * WEIGHTS[s] / total)) for s in surfaces}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--surface", default="all", help="all, or a comma list of " + ", ".join(SURFACES))
    ap.add_argument("--count", type=int, default=1_000_000, help="total inputs over the chosen surfaces")
    ap.add_argument("--out", required=True, help="directory for fuzz.json, fuzz.md and the bridge's log")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--base-port", type=int, default=31000)
    ap.add_argument("--rtp-rate", type=float, default=6000.0, help="RTP datagrams per second")
    ap.add_argument("--as-connections", type=int, default=10000, help="AudioSocket open-and-drop connections")
    ap.add_argument("--slowloris", type=int, default=1000, help="slowloris connections on the monitor")
    ap.add_argument("--viewers", type=int, default=200, help="monitor viewers that never read")
    ap.add_argument("--gc-probe", action="store_true", help="run the bridge under bench/gcprobe.py (gc.json)")
    ap.add_argument("--no-config-subprocesses", action="store_true", help="skip the twistd run per option")
    ap.add_argument("--rt-priority", type=int, default=10,
                    help="SCHED_FIFO priority of the bridge and the healthy calls (0: normal); see fuzz_target.rt_prefix")
    ap.add_argument("--hold-seconds", type=float, default=40.0,
                    help="how long slowloris connections and non-reading viewers are held")
    ns = ap.parse_args(argv)
    surfaces = list(SURFACES) if ns.surface == "all" else [s.strip() for s in ns.surface.split(",")]
    for s in surfaces:
        if s not in SURFACES:
            ap.error(f"unknown surface {s!r}")
    os.makedirs(ns.out, exist_ok=True)
    shares = split(ns.count, surfaces)
    cmd = " ".join([".venv/bin/python", "-m", "reliability.fuzz", *(argv if argv is not None else sys.argv[1:])])
    report: dict[str, Any] = {
        "command": cmd, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "shares": shares, "surfaces": {},
    }
    live = [s for s in surfaces if s != "config"]
    target: Target | None = None
    healthy = None
    healthy_out = os.path.join(ns.out, "healthy.json")
    try:
        if live:
            target = start(ns.out, ns.base_port, with_ari="ari" in surfaces, rt_priority=ns.rt_priority,
                           gc_probe=ns.gc_probe)
            report["xlbridge_argv"] = target.argv
            time.sleep(1.0)
            healthy = subprocess.Popen(
                [*rt_prefix(ns.rt_priority), sys.executable, "-m", "reliability.fuzz_healthy", "--base", str(target.plan.base),
                 "--pairs", str(HEALTHY_PAIRS), "--out", healthy_out],
                stdout=subprocess.PIPE, text=True,
            )
            assert healthy.stdout is not None
            if healthy.stdout.readline().strip() != "ready":
                raise RuntimeError("healthy calls did not start")
            time.sleep(1.0)
            os.nice(10)  # from here on the bridge and the healthy calls come first
            pid = target.pid
            offset = 0
            report["start"] = {"footprint": footprint(pid), "cpu_s": cpu_seconds(pid)}
            _, _, offset = scan_log(target.log_path, 0)
            for surface in live:
                offset = run_live(surface, shares[surface], target, ns, report, offset)
                if surface == "websocket":  # 16 and 64 MB messages: kept apart, to attribute what they cost
                    offset = run_live("websocket_huge", 2, target, ns, report, offset)
            # let the bridge settle (calls end after 10 s idle), then the final figures
            time.sleep(15.0)
            m_end = scrape(target.metrics_url, target.token)
            report["end"] = {"footprint": footprint(pid), "cpu_s": cpu_seconds(pid),
                             "metrics_total": {k: v for k, v in m_end.items()
                                               if "dropped" in k or "refused" in k or "rejected" in k}}
            healthy.send_signal(signal.SIGTERM)
            healthy.stdout.readline()  # its last line: it has written its report
            healthy.wait(timeout=30)
            with open(healthy_out) as f:
                report["healthy"] = json.load(f)
            counts, examples, offset = scan_log(target.log_path, offset)
            report["end"]["escaped_in_log"] = counts
            report["end"]["escaped_examples"] = examples
            report["stop"] = target.stop()
            counts, examples, _ = scan_log(target.log_path, offset)
            report["stop"]["escaped_in_log"] = counts
            report["stop"]["escaped_examples"] = examples
            target = None
        if "config" in surfaces:
            if not live:
                os.nice(10)
            t = Tally("config")
            extra = fuzz_config.run(t, shares["config"], ns.seed, subprocess_runs=not ns.no_config_subprocesses)
            report["surfaces"]["config"] = {"tally": t.as_dict(), **extra}
    finally:
        if healthy is not None and healthy.poll() is None:
            healthy.kill()
        if target is not None:
            report.setdefault("stop", target.stop())
        write_json(os.path.join(ns.out, "fuzz.json"), report)
        write_markdown(os.path.join(ns.out, "fuzz.md"), report)
    print(f"wrote {os.path.join(ns.out, 'fuzz.md')}")
    return 0


def run_live(surface: str, count: int, target: Target, ns: argparse.Namespace, report: dict[str, Any],
             offset: int) -> int:
    """Fuzz one live surface; record its figures in ``report``; return the new log offset."""
    pid = target.pid
    samples: list[dict[str, Any]] = []

    def sample(label: str) -> None:
        samples.append({"label": label, "t": round(time.time(), 3), **footprint(pid)})

    m0 = scrape(target.metrics_url, target.token)
    before = footprint(pid)
    cpu0 = cpu_seconds(pid)
    t_start = time.time()
    tally = Tally(surface)
    extra: dict[str, Any] = {}
    print(f"[{time.strftime('%H:%M:%S')}] {surface}: {count} inputs", flush=True)
    if surface == "rtp":
        fuzz_rtp.run(tally, count, target.plan.fuzz_rtp_ports, target.plan.healthy_ports, ns.seed, rate=ns.rtp_rate)
    elif surface == "audiosocket":
        fuzz_audiosocket.run(tally, count, target.plan.audiosocket_ports, ns.seed, connections=ns.as_connections)
    elif surface == "websocket":
        fuzz_websocket.run(tally, count, target.plan.websocket_ports, ns.seed, sample=sample)
    elif surface == "websocket_huge":
        t0 = time.monotonic()
        fuzz_websocket.huge_messages(tally, target.plan.websocket_ports[0])
        sample("after_huge")
        tally.seconds = time.monotonic() - t0
    elif surface == "ari":
        t0 = time.monotonic()
        answer = target.ari_command(f"go {count} {ns.seed} 2000")
        extra["fake_ari"] = json.loads(answer.split(" ", 1)[1])
        tally.add("event", extra["fake_ari"]["sent"])
        tally.by_case = {k: v for k, v in extra["fake_ari"]["by_case"].items()}
        tally.seconds = time.monotonic() - t0
        tally.connections = extra["fake_ari"]["sockets_opened"]
    elif surface == "monitor":
        t0 = time.monotonic()
        port = target.plan.monitor_port
        ws_n = 2000
        loris_bytes = ns.slowloris * int(ns.hold_seconds / 5 + 1)  # one byte per 5 s each
        http_n = max(0, count - ws_n - ns.slowloris - loris_bytes - ns.viewers)
        extra["readyz_seconds_before"] = fuzz_monitor.timed_get(port)
        phases: list[tuple[str, float, float]] = []
        steps: list[tuple[str, Callable[[], None]]] = [
            ("http", lambda: fuzz_monitor.http(tally, http_n, port, target.token, ns.seed)),
            ("ws", lambda: fuzz_monitor.ws(tally, ws_n, port, target.token, ns.seed)),
            ("slowloris", lambda: fuzz_monitor.slowloris(tally, port, n=ns.slowloris, seconds=ns.hold_seconds,
                                                         sample=sample)),
            ("viewers", lambda: fuzz_monitor.viewers(tally, port, target.token, n=ns.viewers,
                                                     seconds=ns.hold_seconds, sample=sample)),
        ]
        for label, step in steps:
            t_a = time.time()
            step()
            phases.append((label, t_a, time.time()))
            sample("after_" + label)
        extra["phases"] = phases
        extra["readyz_seconds_after"] = fuzz_monitor.timed_get(port)
        tally.seconds = time.monotonic() - t0
    time.sleep(3.0)  # let the bridge finish what is in flight
    after = footprint(pid)
    m1 = scrape(target.metrics_url, target.token)
    counts, examples, new_offset = scan_log(target.log_path, offset)
    healthy_gaps: list[Any] = []
    report["surfaces"][surface] = {
        "tally": tally.as_dict(), "before": before, "after": after, "samples": samples,
        "cpu_s": round(cpu_seconds(pid) - cpu0, 2), "window": [t_start, time.time()],
        "metrics_delta": counter_delta(m0, m1), "escaped_in_log": counts, "escaped_examples": examples,
        "log_shapes": log_tail_lines(target.log_path, offset), "healthy_gaps": healthy_gaps, **extra,
    }
    print(f"[{time.strftime('%H:%M:%S')}] {surface}: sent {tally.inputs} in {tally.seconds:.0f} s; "
          f"escaped {counts}; rss {before['rss_kib']}->{after['rss_kib']} KiB; fds {before['fds']}->{after['fds']}",
          flush=True)
    return new_offset


if __name__ == "__main__":
    sys.exit(main())
