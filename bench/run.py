"""
One full benchmark run: xlbridge against a bare Twisted relay, side by side.

For each repeat, each N in ``--ns`` and each target (``baseline`` =
bench/baseline.py, ``slin16`` = ``twistd xlbridge --engines relay
--reply-codec slin16``, ``g722`` = the same with the default G.722 replies,
``w1`` / ``w2`` = the g722 command with ``--workers 1`` / ``--workers 2``,
i.e. a supervisor process and 1 or 2 twistd worker processes):

1. start the target pinned to core 1 (``taskset -c 1``; ``w2`` gets
   ``taskset -c 0,1`` so that worker 0 pins itself to core 0, which it then
   shares with the load generator and tcpdump, and worker 1 to core 1) on
   ``--ports`` and wait until every port is bound (by any process of the
   target's process tree);
2. start ``tcpdump -i lo`` (core 0) on the target's outbound packets;
3. run bench/loadgen.py (core 0) with N pairs for ``--seconds``;
4. over the window [start + ``--cpu-skip``, end - 0.3 s] read the target's
   utime + stime from /proc/PID/stat (summed over the process tree: the
   supervisor and its workers, found through /proc/PID/task/*/children, and
   also per process); VmRSS (summed, and per process) at the end of the window; the
   kernel's per-socket UDP receive drops before/after;
5. stop everything (SIGINT / SIGTERM, wait) and analyse the capture with
   bench/analyse.py (kernel timestamps; first second of each stream dropped).

Also measures the reply codecs' own encode cost (G.722 and slin16 encoders of
xlbridge, 20 ms frames, on core 1).  Prints a table (medians over repeats),
writes ``OUT/results.json`` and ``OUT/bench.png``, and unless ``--no-publish``
copies both to ``--publish-dir`` (default bench/results/).

Usage: ``python bench/run.py --ns 25,50,100,200 --seconds 20`` (3 repeats, ~13 min)
Smoke:  ``python bench/run.py --ns 10 --seconds 5 --repeats 1 --no-publish``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import analyse  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGETS = ("baseline", "slin16", "g722", "w1", "w2")
# the taskset CPU list of each target (default TARGET_CORE)
TARGET_CPUS = {"w2": "0,1"}
TARGET_CORE = "1"
GEN_CORE = "0"


# --------------------------------------------------------------------------
# processes


class Procs:
    """Every process started, stopped in reverse order at the end no matter what."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        p = subprocess.Popen(argv, **kw)
        self.procs.append(p)
        return p

    @staticmethod
    def stop(p: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            self.stop(p)
        self.procs.clear()


def twistd() -> str:
    cand = os.path.join(os.path.dirname(sys.executable), "twistd")
    return cand if os.path.exists(cand) else (shutil.which("twistd") or "twistd")


def target_argv(target: str, ports: str) -> list[str]:
    if target == "baseline":
        return [sys.executable, os.path.join(HERE, "baseline.py"), "--ports", ports]
    argv = [twistd(), "-n", "--pidfile=", "xlbridge", "--ports", ports, "--engines", "relay"]
    if target == "slin16":
        argv += ["--reply-codec", "slin16"]
    elif target in ("w1", "w2"):
        argv += ["--workers", target[1:]]
    elif target != "g722":
        raise ValueError(f"unknown target {target!r}")
    return argv


def proc_cpu(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants (through /proc/PID/task/*/children), root first."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                try:
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        todo.extend(int(c) for c in f.read().split())
                except OSError:
                    pass
        except OSError:
            pass
    return out


def tree_cpu(pids: list[int]) -> dict[int, float]:
    """utime + stime per process (seconds); processes gone are left out."""
    out = {}
    for pid in pids:
        try:
            out[pid] = proc_cpu(pid)
        except OSError:
            pass
    return out


def tree_sum(f: Any, pids: list[int]) -> Any:
    """Sum of ``f(pid)`` over the processes still there (tuples summed element-wise)."""
    total: Any = None
    for pid in pids:
        try:
            v = f(pid)
        except OSError:
            continue
        if total is None:
            total = v
        elif isinstance(v, tuple):
            total = tuple(a + b for a, b in zip(total, v))
        else:
            total = total + v
    return total


def proc_utime(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[11]) / CLK_TCK


def proc_schedstat(pid: int) -> tuple[float, float, int]:
    """(seconds on CPU, seconds runnable but waiting for a CPU, timeslices) from /proc/PID/schedstat."""
    with open(f"/proc/{pid}/schedstat") as f:
        run, wait, slices = f.read().split()
    return int(run) / 1e9, int(wait) / 1e9, int(slices)


def kthreads(name: str = "kdamond") -> list[int]:
    """PIDs of kernel threads whose name starts with ``name`` (noise sources to report)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().startswith(name):
                        out.append(int(d))
            except OSError:
                pass
    return out


def noise_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += proc_schedstat(pid)[0]
        except OSError:
            pass
    return total


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


def core_times(core: str) -> list[int]:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                return [int(x) for x in line.split()[1:]]
    return []


def wait_bound(p: subprocess.Popen, lo: int, hi: int, timeout: float = 30.0) -> None:
    want = hi - lo + 1
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if p.poll() is not None:
            raise RuntimeError(f"target exited with {p.returncode} before binding its ports")
        if analyse.udp_socket_stats(lo, hi)["sockets"] >= want:
            return
        time.sleep(0.1)
    raise RuntimeError(f"target did not bind {want} ports within {timeout} s")


def wait_ports_free(lo: int, hi: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while analyse.udp_socket_stats(lo, hi)["sockets"] and time.monotonic() < end:
        time.sleep(0.1)


class LineReader(threading.Thread):
    """Collects a pipe's lines in the background (tcpdump's stderr)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.event = threading.Event()

    def run(self) -> None:
        for line in self.stream:
            self.lines.append(line.rstrip("\n"))
            self.event.set()

    def wait_for(self, text: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in self.lines):
                return True
            self.event.wait(0.05)
            self.event.clear()
        return False


def start_tcpdump(procs: Procs, pcap: str, lo: int, hi: int) -> tuple[subprocess.Popen, LineReader]:
    base = ["taskset", "-c", GEN_CORE, "tcpdump", "-i", "lo", "-n", "-s", "96", "-B", "32768", "-Z", "root",
            "-w", pcap]
    filt = [f"udp and src portrange {lo}-{hi}"]
    for precision in (["--time-stamp-precision=nano", "-j", "host"], ["-j", "host"], []):
        p = procs.start(base + precision + filt, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        reader = LineReader(p.stderr)
        reader.start()
        if reader.wait_for("listening on", 10.0):
            return p, reader
        Procs.stop(p)
    raise RuntimeError("tcpdump did not start: " + " | ".join(reader.lines[-3:]))


def tcpdump_counts(lines: list[str]) -> dict[str, int]:
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            if "captured" in line:
                out["captured"] = int(parts[0])
            elif "received by filter" in line:
                out["received_by_filter"] = int(parts[0])
            elif "dropped by kernel" in line:
                out["dropped_by_kernel"] = int(parts[0])
    return out


def read_line(p: subprocess.Popen, timeout: float) -> str:
    r, _, _ = select.select([p.stdout], [], [], timeout)
    if not r:
        raise RuntimeError("loadgen did not start in time")
    return p.stdout.readline()


# --------------------------------------------------------------------------
# one point


def run_point(target: str, n: int, ns: argparse.Namespace, procs: Procs, tmp: str, tag: str) -> dict[str, Any]:
    lo, hi = ns.port_lo, ns.port_hi
    if 2 * n > hi - lo + 1:
        raise ValueError(f"{n} pairs need {2 * n} ports; --ports {lo}-{hi} has {hi - lo + 1}")
    wait_ports_free(lo, hi)
    log = open(os.path.join(ns.out, f"{tag}.log"), "w")
    pcap = os.path.join(tmp, f"{tag}.pcap")
    res: dict[str, Any] = {"target": target, "pairs": n, "tag": tag}
    noise = kthreads("kdamond")
    prefix = ["taskset", "-c", TARGET_CPUS.get(target, TARGET_CORE)] + (["chrt", "-f", str(ns.chrt)] if ns.chrt else [])
    try:
        if ns.keep_awake:
            # a SCHED_IDLE spinner keeps the target's vCPU from halting (any
            # runnable task preempts it at once); supplementary experiment
            procs.start(["taskset", "-c", TARGET_CORE, "chrt", "-i", "0", sys.executable, "-c",
                         "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end: pass"])
        t_launch = time.monotonic()
        tgt = procs.start(prefix + target_argv(target, f"{lo}-{hi}"),
                          stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_bound(tgt, lo, hi)
        res["startup_s"] = time.monotonic() - t_launch
        time.sleep(0.3)
        pids = tree_pids(tgt.pid)
        res["pids"] = len(pids)
        cpu_idle0, t_idle0 = tree_sum(proc_cpu, pids), time.monotonic()
        tcpd, tcpd_err = start_tcpdump(procs, pcap, lo, hi)
        socks_before = analyse.udp_socket_stats(lo, hi)
        snmp_before = analyse.udp_snmp()
        lg = procs.start(["taskset", "-c", GEN_CORE, sys.executable, os.path.join(HERE, "loadgen.py"),
                          "--pairs", str(n), "--seconds", str(ns.seconds), "--base", str(lo),
                          "--slots", str(ns.slots)],
                         stdout=subprocess.PIPE, text=True, cwd=ROOT)
        first = read_line(lg, 30.0)
        if not first.startswith("started "):
            raise RuntimeError(f"loadgen: unexpected output {first!r}")
        t0 = float(first.split()[1])
        res["idle_cpu_core"] = (tree_sum(proc_cpu, pids) - cpu_idle0) / max(1e-9, time.monotonic() - t_idle0)
        skip = ns.cpu_skip if ns.seconds >= ns.cpu_skip + 2 else 1.0
        time.sleep(max(0.0, t0 + skip - time.monotonic()))
        p0 = tree_cpu(pids)
        c0, w0, k0 = sum(p0.values()), time.monotonic(), core_times(TARGET_CORE)
        g0 = proc_cpu(lg.pid) + proc_cpu(tcpd.pid)
        s0, n0, u0 = tree_sum(proc_schedstat, pids), noise_cpu(noise), tree_sum(proc_utime, pids)
        time.sleep(max(0.0, t0 + ns.seconds - 0.3 - time.monotonic()))
        p1 = tree_cpu(pids)
        c1, w1, k1 = sum(p1[p] for p in p0 if p in p1), time.monotonic(), core_times(TARGET_CORE)
        c0 = sum(p0[p] for p in p0 if p in p1)
        g1 = proc_cpu(lg.pid) + proc_cpu(tcpd.pid)
        s1, n1, u1 = tree_sum(proc_schedstat, pids), noise_cpu(noise), tree_sum(proc_utime, pids)
        sts = [proc_status(p) for p in pids if p in p1]
        st = {k: sum(x.get(k, 0) for x in sts) for k in ("VmRSS", "VmHWM")}
        res["procs"] = [{"cpu_core": (p1[p] - p0[p]) / max(1e-9, w1 - w0), "rss_mb": x.get("VmRSS", 0) / 1024}
                        for p, x in zip([p for p in pids if p in p1], sts)]
        res["procs_lost"] = len(p0) - len(p1)
        out, _ = lg.communicate(timeout=ns.seconds + 30)
        lg_json = json.loads(out.strip().splitlines()[-1])
        time.sleep(0.05)
        socks_after = analyse.udp_socket_stats(lo, hi)
        snmp_after = analyse.udp_snmp()
        Procs.stop(tcpd, signal.SIGINT)
        tcpd_err.join(5)
        res["tcpdump"] = tcpdump_counts(tcpd_err.lines)
        rc = Procs.stop(tgt, signal.SIGTERM)
        res["target_rc"] = rc
    finally:
        procs.stop_all()
        log.close()
    window = w1 - w0
    cpu = c1 - c0
    kd = [b - a for a, b in zip(k0, k1)]
    ktot = sum(kd) or 1
    res.update({
        "window_s": window,
        "cpu_s": cpu,
        "cpu_core": cpu / window,
        "cpu_s_per_call_min": cpu / (n * window / 60),
        "rss_mb": st.get("VmRSS", 0) / 1024,
        "hwm_mb": st.get("VmHWM", 0) / 1024,
        "user_fraction": (u1 - u0) / cpu if cpu > 0 else None,
        "sched_cpu_core": (s1[0] - s0[0]) / window,
        "run_delay_ms_per_s": (s1[1] - s0[1]) * 1000 / window,
        "timeslices_per_s": (s1[2] - s0[2]) / window,
        "kdamond_cpu_ms_per_s": (n1 - n0) * 1000 / window,
        "core1_busy_ticks": 1 - (kd[3] + kd[4]) / ktot if len(kd) > 4 else None,
        "core1_steal": kd[7] / ktot if len(kd) > 7 else None,
        "gen_cpu_core": (g1 - g0) / window,
        "rx_drops": socks_after["drops"] - socks_before["drops"],
        "udp_rcvbuf_errors": snmp_after.get("RcvbufErrors", 0) - snmp_before.get("RcvbufErrors", 0),
        "udp_in_errors": snmp_after.get("InErrors", 0) - snmp_before.get("InErrors", 0),
        "loadgen": lg_json,
    })
    t = time.monotonic()
    res["analysis"] = analyse.analyse_file(pcap, lo, hi, ns.warmup)
    res["analysis_s"] = time.monotonic() - t
    if ns.keep_pcap:
        shutil.copy(pcap, os.path.join(ns.out, os.path.basename(pcap)))
    os.unlink(pcap)
    return res


# --------------------------------------------------------------------------
# codec cost


CODEC_BENCH = r"""
import json, time, numpy as np
from xlbridge.audio.codecs import get_codec, make_encoder
x = (np.sin(np.arange(320) * 2 * np.pi * 440 / 16000) * 8000).astype(np.int16)
out = {}
for name in ("g722", "slin16"):
    # 400 stateful encoders used round-robin, as the egress tick does
    encs = [make_encoder(get_codec(name)) for _ in range(400)]
    for _ in range(5):
        for enc in encs:
            enc.encode(x)
    runs = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(10):
            for enc in encs:
                enc.encode(x)
        runs.append((time.perf_counter() - t) / 4000 * 1e6)
    runs.sort()
    out[name] = {"us_per_frame": runs[len(runs) // 2], "us_per_frame_min": runs[0], "us_per_frame_max": runs[-1]}
print(json.dumps(out))
"""


def codec_cost() -> dict[str, Any]:
    out = subprocess.run(["taskset", "-c", TARGET_CORE, sys.executable, "-c", CODEC_BENCH],
                         capture_output=True, text=True, check=True, timeout=120, cwd=ROOT)
    return json.loads(out.stdout)


def codec_core(codec: dict[str, Any], target: str, n: int) -> float:
    """Core fraction the reply encoder alone needs: 2N legs x 50 frames/s."""
    if target == "baseline":
        return 0.0
    return codec["slin16" if target == "slin16" else "g722"]["us_per_frame"] * 1e-6 * 2 * n * 50


# --------------------------------------------------------------------------
# aggregation, table, plot


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        import twisted
        tw = twisted.__version__
    except Exception:
        tw = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": tw,
        "loadavg_at_start": os.getloadavg(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def med(vals: list[float]) -> float:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else float("nan")


def aggregate(runs: list[dict[str, Any]], codec: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r["pairs"], r["target"]) for r in runs}, key=lambda k: (k[0], TARGETS.index(k[1])))
    for n, target in keys:
        rs = [r for r in runs if r["pairs"] == n and r["target"] == target]
        a = [r["analysis"] for r in rs]
        row = {
            "pairs": n,
            "target": target,
            "repeats": len(rs),
            "p50_ms": med([x["interval_error_ms"]["p50"] for x in a]),
            "p99_ms": med([x["interval_error_ms"]["p99"] for x in a]),
            "p99_ms_all": [x["interval_error_ms"]["p99"] for x in a],
            "p999_ms": med([x["interval_error_ms"]["p99.9"] for x in a]),
            "max_ms": med([x["interval_error_ms"]["max"] for x in a]),
            "max_ms_worst": max(x["interval_error_ms"]["max"] for x in a),
            "tick_start_p99_ms": med([x["ticks"].get("start_interval_error_ms", {}).get("p99") for x in a]),
            "tick_spread_p50_ms": med([x["ticks"].get("spread_ms", {}).get("p50") for x in a]),
            "us_per_out_packet": med([x["ticks"].get("us_per_packet", {}).get("p50") for x in a]),
            "seq_lost": max(x["seq_lost"] for x in a),
            "missed_intervals": max(max(x["clock_missed_intervals"], x["ts_missed_intervals"]) for x in a),
            "late_intervals": max(x["late_intervals"] for x in a),
            "short_intervals": max(x["short_intervals"] for x in a),
            "user_fraction": med([r["user_fraction"] for r in rs]),
            "dup_reorder": max(x["duplicates"] + x["reorders"] for x in a),
            "silence_fraction": med([x["silence_fraction"] for x in a]),
            "markers": med([x["markers"] for x in a]),
            "rx_drops": max(r["rx_drops"] for r in rs),
            "tcpdump_dropped": max(r["tcpdump"].get("dropped_by_kernel", 0) for r in rs),
            "cpu_core": med([r["cpu_core"] for r in rs]),
            "cpu_core_all": [r["cpu_core"] for r in rs],
            "cpu_s_per_call_min": med([r["cpu_s_per_call_min"] for r in rs]),
            "rss_mb": med([r["rss_mb"] for r in rs]),
            "gen_cpu_core": med([r["gen_cpu_core"] for r in rs]),
            "gen_send_late_p99_ms": med([r["loadgen"]["send_lateness_ms"]["p99"] for r in rs]),
            "core1_steal": med([r["core1_steal"] for r in rs]),
            "run_delay_ms_per_s": med([r["run_delay_ms_per_s"] for r in rs]),
            "kdamond_cpu_ms_per_s": med([r["kdamond_cpu_ms_per_s"] for r in rs]),
            "codec_core": codec_core(codec, target, n),
            "pids": max(r.get("pids", 1) for r in rs),
            "procs_lost": max(r.get("procs_lost", 0) for r in rs),
            # per process of the tree (root first: the supervisor for w1/w2), medians over repeats
            "procs_cpu_core": [med([r["procs"][i]["cpu_core"] for r in rs if len(r.get("procs", [])) > i])
                               for i in range(max(len(r.get("procs", [])) for r in rs))],
            "procs_rss_mb": [med([r["procs"][i]["rss_mb"] for r in rs if len(r.get("procs", [])) > i])
                             for i in range(max(len(r.get("procs", [])) for r in rs))],
        }
        row["cpu_ms_per_call_s"] = 1000 * row["cpu_core"] / n  # CPU ms per second of one call (2 legs)
        rows.append(row)
    base = {r["pairs"]: r for r in rows if r["target"] == "baseline"}
    for r in rows:
        b = base.get(r["pairs"])
        if b:
            r["cpu_ratio"] = r["cpu_core"] / b["cpu_core"] if b["cpu_core"] else float("nan")
            r["p99_ratio"] = r["p99_ms"] / b["p99_ms"] if b["p99_ms"] else float("nan")
            r["cpu_budget_core"] = 2 * b["cpu_core"] + r["codec_core"]
            r["within_cpu_budget"] = r["cpu_core"] <= r["cpu_budget_core"]
            # issue 16: per-call CPU at most 1.5x the bare relay plus the codec
            r["cpu_budget15_core"] = 1.5 * b["cpu_core"] + r["codec_core"]
            r["within_cpu_budget15"] = r["cpu_core"] <= r["cpu_budget15_core"]
        r["meets_p99"] = r["p99_ms"] <= 1.0
        r["no_loss"] = r["seq_lost"] == 0 and r["missed_intervals"] == 0 and r["rx_drops"] == 0
    return rows


def fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| N pairs | target | p50 ms | p99 ms | p99.9 ms | max ms | tick p99 ms | µs/out pkt | "
            "loss (seq/missed/rx drops) | late/burst intervals | silence % | CPU core | CPU s per call-min | RSS MB | "
            "CPU ×base | p99 ×base | budget core | 1.5× budget core | CPU ms per call-s | gen CPU core | "
            "per-process CPU core | per-process RSS MB | run-delay ms/s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['pairs']} | {r['target']} | {fmt(r['p50_ms'], '.3f')} | {fmt(r['p99_ms'])} | "
            f"{fmt(r['p999_ms'])} | {fmt(r['max_ms'], '.1f')} | {fmt(r['tick_start_p99_ms'])} | "
            f"{fmt(r['us_per_out_packet'], '.1f')} | {r['seq_lost']}/{r['missed_intervals']}/{r['rx_drops']} | "
            f"{r['late_intervals']}/{r['short_intervals']} | "
            f"{fmt(None if r['silence_fraction'] is None else 100 * r['silence_fraction'], '.1f')} | "
            f"{fmt(r['cpu_core'], '.3f')} | {fmt(r['cpu_s_per_call_min'], '.3f')} | {fmt(r['rss_mb'], '.0f')} | "
            f"{fmt(r.get('cpu_ratio'))} | {fmt(r.get('p99_ratio'))} | {fmt(r.get('cpu_budget_core'), '.3f')} | "
            f"{fmt(r.get('cpu_budget15_core'), '.3f')} | {fmt(r['cpu_ms_per_call_s'], '.3f')} | "
            f"{fmt(r['gen_cpu_core'], '.2f')} | {' + '.join(fmt(x, '.3f') for x in r['procs_cpu_core'])} | "
            f"{' + '.join(fmt(x, '.0f') for x in r['procs_rss_mb'])} | "
            f"{fmt(r['run_delay_ms_per_s'], '.1f')} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"baseline": ("k", "o", "bare Twisted relay"),
              "slin16": ("tab:blue", "s", "xlbridge --reply-codec slin16"),
              "g722": ("tab:red", "^", "xlbridge (G.722 replies)"),
              "w1": ("tab:orange", "v", "xlbridge --workers 1 (G.722)"),
              "w2": ("tab:green", "D", "xlbridge --workers 2 (G.722; worker 0 shares the generator's core)")}
    for target in TARGETS:
        rs = [r for r in rows if r["target"] == target]
        if not rs:
            continue
        color, marker, label = styles[target]
        xs = [r["pairs"] for r in rs]
        for ax, key, allkey in ((ax1, "p99_ms", "p99_ms_all"), (ax2, "cpu_core", "cpu_core_all")):
            ys = [r[key] for r in rs]
            lo = [y - min(r[allkey]) for y, r in zip(ys, rs)]
            hi = [max(r[allkey]) - y for y, r in zip(ys, rs)]
            ax.errorbar(xs, ys, yerr=[lo, hi], color=color, marker=marker, label=label, capsize=3)
        if target == "w1" and any("cpu_budget15_core" in r for r in rs):
            ax2.plot(xs, [r.get("cpu_budget15_core", float("nan")) for r in rs], color="grey", ls=":",
                     label="issue 16 budget: 1.5× baseline + G.722 encode")
        if target in ("slin16", "g722") and any("cpu_budget_core" in r for r in rs):
            ax2.plot(xs, [r.get("cpu_budget_core", float("nan")) for r in rs], color=color, ls=":",
                     label=f"budget: 2× baseline + {target} encode")
    ax1.axhline(1.0, color="green", ls="--", label="target p99 ≤ 1 ms")
    if any(r["target"] in ("w1", "w2") for r in rows):
        ax1.axhline(5.0, color="purple", ls="--", label="capacity rule p99 ≤ 5 ms")
    ax1.set_xlabel("concurrent calls N (2N legs)")
    ax1.set_ylabel("p99 |egress interval − 20 ms| (ms, log scale)")
    ax1.set_title("egress interval error, p99 (kernel timestamps)")
    ax2.axhline(1.0, color="grey", ls="--", label="one core")
    ax2.set_xlabel("concurrent calls N (2N legs)")
    ax2.set_ylabel("CPU (fraction of one core)")
    ax2.set_title("bridge CPU (utime+stime, whole process tree)")
    ax1.set_yscale("log")
    ax1.set_ylim(bottom=0.05)
    ax2.set_ylim(bottom=0)
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xlim(left=0)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="25,50,100,200", help="comma-separated call pair counts")
    ap.add_argument("--seconds", type=float, default=20.0, help="load duration per point")
    ap.add_argument("--repeats", type=int, default=3, help="runs per point (medians are reported)")
    ap.add_argument("--targets", default="baseline,slin16,g722", help="subset of " + ",".join(TARGETS))
    ap.add_argument("--ports", default="20000-20399", help="port range every target listens on")
    ap.add_argument("--slots", type=int, default=20, help="loadgen send slots per 20 ms (1 = burst)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds dropped at each stream start")
    ap.add_argument("--cpu-skip", type=float, default=2.0, help="seconds of load before the CPU window")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--no-publish", action="store_true", help="do not copy results to --publish-dir")
    ap.add_argument("--publish-dir", default=os.path.join(HERE, "results"),
                    help="where results.json and bench.png are copied (default bench/results/)")
    ap.add_argument("--keep-pcap", action="store_true")
    ap.add_argument("--keep-awake", action="store_true",
                    help="run a SCHED_IDLE busy loop on the target core so its vCPU never halts (supplementary)")
    ap.add_argument("--chrt", type=int, default=0,
                    help="run the target SCHED_FIFO at this priority (supplementary; default: normal)")
    ns = ap.parse_args(argv)
    ns.port_lo, ns.port_hi = map(int, ns.ports.split("-"))
    pairs = [int(x) for x in ns.ns.split(",") if x.strip()]
    targets = [t.strip() for t in ns.targets.split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            ap.error(f"unknown target {t}")
    if ns.seconds < 4 or ns.seconds > 120:
        ap.error("--seconds must be 4..120")
    if 2 * max(pairs) > ns.port_hi - ns.port_lo + 1:
        ap.error("--ports range too small for the largest N")
    if os.geteuid() != 0:
        print("warning: tcpdump on lo needs root", file=sys.stderr)
    os.makedirs(ns.out, exist_ok=True)
    # keep this orchestrator (and the analysis between points) off the target's core
    os.sched_setaffinity(0, {int(GEN_CORE)})

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    procs = Procs()
    runs: list[dict[str, Any]] = []
    info = machine()
    info["command"] = " ".join(["python", "bench/run.py"] + (argv if argv is not None else sys.argv[1:]))
    t_all = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="xlbench-")
    try:
        codec = codec_cost()
        print(f"codec encode cost on core {TARGET_CORE}: " + ", ".join(
            f"{k} {v['us_per_frame']:.2f} µs/frame" for k, v in codec.items()), flush=True)
        total = ns.repeats * len(pairs) * len(targets)
        i = 0
        for rep in range(ns.repeats):
            order = targets[rep % len(targets):] + targets[: rep % len(targets)]
            for n in pairs:
                for target in order:
                    i += 1
                    tag = f"{target}-n{n}-r{rep}"
                    r = run_point(target, n, ns, procs, tmp, tag)
                    r["repeat"] = rep
                    runs.append(r)
                    a = r["analysis"]
                    print(f"[{i}/{total}] {tag}: p99 {a['interval_error_ms']['p99']:.3f} ms, "
                          f"max {a['interval_error_ms']['max']:.2f} ms, cpu {r['cpu_core']:.3f} core, "
                          f"rss {r['rss_mb']:.0f} MB, lost {a['seq_lost']}, missed {a['clock_missed_intervals']}, "
                          f"rx drops {r['rx_drops']}, gen {r['gen_cpu_core']:.2f} core, "
                          f"run-delay {r['run_delay_ms_per_s']:.1f} ms/s, "
                          f"t {time.monotonic() - t_all:.0f} s", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    rows = aggregate(runs, codec)
    info["wall_s"] = time.monotonic() - t_all
    result = {"machine": info, "config": {k: v for k, v in vars(ns).items()}, "codec_cost": codec,
              "summary": rows, "runs": runs}
    with open(os.path.join(ns.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    title = (f"{info['date']}  {info['cpu_model']} ({info['nproc']} cores), Python {info['python']}, "
             f"Twisted {info['twisted']}; target core {TARGET_CORE}, loadgen+tcpdump core {GEN_CORE}; "
             f"{ns.seconds:g} s per point, median of {ns.repeats}")
    png = os.path.join(ns.out, "bench.png")
    plot(rows, png, title)
    print()
    print(table(rows))
    print(f"\ncodec cost: {json.dumps(codec)}")
    print(f"wrote {ns.out}/results.json, {png}; wall {info['wall_s']:.0f} s")
    if not ns.no_publish:
        dest = ns.publish_dir
        os.makedirs(dest, exist_ok=True)
        shutil.copy(png, os.path.join(dest, "bench.png"))
        shutil.copy(os.path.join(ns.out, "results.json"), os.path.join(dest, "results.json"))
        print(f"published to {dest}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
