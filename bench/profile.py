"""
Profile a target under load with py-spy and break its CPU down per packet.

Starts the target (``baseline``, ``slin16`` or ``g722``, as in bench/run.py)
pinned to core 1 -- xlbridge targets run through bench/gcprobe.py so that
garbage-collection pauses are recorded too -- drives it with
bench/loadgen.py (core 0), and after a 3 s warm-up runs ``py-spy record
--nonblocking`` (core 0; the target is not paused) over the rest of the load,
measuring the target's CPU over the same window.  Optionally a short
``--native`` recording (which does pause the target) splits C time further.

Writes to ``--out``: ``profile-TARGET-nN.raw`` (py-spy collapsed stacks),
``profile-TARGET-nN.txt`` (the summary printed), ``...-dump.txt`` (one
``py-spy dump``), ``...-gc.json``; with ``--publish`` the summary is copied to
bench/results/.

Usage: ``python bench/profile.py --target g722 --pairs 200 --seconds 20``
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run  # noqa: E402

# (label, frame names whose presence in a stack puts the sample in it, parent)
CATEGORIES: list[tuple[str, tuple[str, ...], str | None]] = [
    ("egress tick (all legs)", ("EgressClock._tick", "main.<locals>.tick"), None),
    ("  reply encode (codec)", ("_G722Encoder.encode", "_Slin16Encoder.encode"), "egress tick (all legs)"),
    ("  Port.write (sendto + checks)", ("Port.write",), "egress tick (all legs)"),
    ("    isIPAddress/isIPv6Address", ("isIPAddress", "isIPv6Address"), "  Port.write (sendto + checks)"),
    ("  OutboundBuffer.read_frame", ("OutboundBuffer.read_frame",), "egress tick (all legs)"),
    ("  RTPSender.packet (header)", ("RTPSender.packet", "HDR.pack"), "egress tick (all legs)"),
    ("inbound: Port.doRead (recvfrom loop)", ("Port.doRead",), None),
    ("  datagramReceived (all)", ("RTPEndpoint.datagramReceived", "Leg.datagramReceived"), "inbound: Port.doRead (recvfrom loop)"),
    ("    rtp parse + RTPPacket", ("parse",), "  datagramReceived (all)"),
    ("    ReorderBuffer.push", ("ReorderBuffer.push",), "  datagramReceived (all)"),
    ("    slin16 decode", ("_Slin16Decoder.decode",), "  datagramReceived (all)"),
    ("    pair -> call -> pipeline -> buffer", ("Pair._audio_from",), "  datagramReceived (all)"),
    ("reactor: epoll + dispatch wrappers", ("EPollReactor.doPoll",), None),
]


def frame_name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def summarise(raw_path: str, cpu_core: float, pps: float) -> tuple[str, dict[str, Any]]:
    """Category shares of py-spy samples, and µs per packet (pps in each direction)."""
    total = 0
    cat = collections.Counter()
    leaf = collections.Counter()
    incl = collections.Counter()
    with open(raw_path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            stack, _, n_s = line.rpartition(" ")
            n = int(n_s)
            frames = [frame_name(x) for x in stack.split(";")]
            names = set(frames)
            total += n
            leaf[stack.split(";")[-1]] += n
            for name in names:
                incl[name] += n
            for label, keys, _parent in CATEGORIES:
                if names.intersection(keys):
                    cat[label] += n
    if not total:
        return "no samples", {}
    us = lambda share: share * cpu_core / pps * 1e6  # noqa: E731
    lines = [f"py-spy samples: {total}; target CPU {cpu_core:.3f} core; {pps:.0f} packets/s in and "
             f"{pps:.0f} out; µs below = share × CPU / {pps:.0f} packets/s",
             "", f"{'category (inclusive)':48s} {'share':>7s} {'µs/pkt':>8s}"]
    out: dict[str, Any] = {"samples": total, "cpu_core": cpu_core, "pps": pps, "categories": {}}
    reactor_label = "reactor: epoll + dispatch wrappers"
    for label, _keys, _parent in CATEGORIES:
        share = cat[label] / total
        if label == reactor_label:
            # doPoll includes doRead: report the wrapper/epoll part alone
            share = (cat[label] - cat["inbound: Port.doRead (recvfrom loop)"]) / total
        out["categories"][label.strip()] = {"share": share, "us_per_packet": us(share)}
        lines.append(f"{label:48s} {100 * share:6.1f}% {us(share):8.2f}")
    accounted = (cat["egress tick (all legs)"] + cat[reactor_label]) / total
    lines.append(f"{'other (start-up, timers, GC, ...)':48s} {100 * (1 - accounted):6.1f}%")
    lines += ["", "top 25 leaf frames (self time):"]
    for fr, n in leaf.most_common(25):
        lines.append(f"  {100 * n / total:5.1f}%  {us(n / total):6.2f} µs/pkt  {fr}")
    out["top_leaf"] = [(fr, n / total) for fr, n in leaf.most_common(40)]
    out["top_inclusive"] = [(fr, n / total) for fr, n in incl.most_common(60)]
    return "\n".join(lines), out


def utime(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[11]) / run.CLK_TCK


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="g722", choices=("baseline", "slin16", "g722"),
                    help="single-process targets; a worker of --workers: bench/worker_profile.py")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=20.0, help="load duration (py-spy records seconds - 5)")
    ap.add_argument("--rate", type=int, default=400, help="py-spy samples per second")
    ap.add_argument("--native-seconds", type=float, default=0.0,
                    help="extra blocking --native recording of this length (pauses the target)")
    ap.add_argument("--ports", default="20000-20399")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--publish", action="store_true", help="copy the summary to bench/results/")
    ns = ap.parse_args(argv)
    lo, hi = map(int, ns.ports.split("-"))
    if ns.seconds < 8 or ns.seconds > 120:
        ap.error("--seconds must be 8..120")
    os.makedirs(ns.out, exist_ok=True)
    os.sched_setaffinity(0, {int(run.GEN_CORE)})
    pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    tag = f"profile-{ns.target}-n{ns.pairs}"
    base = os.path.join(ns.out, tag)
    gc_json = base + "-gc.json"
    argv_t = run.target_argv(ns.target, ns.ports)
    if ns.target != "baseline":
        argv_t = [sys.executable, os.path.join(HERE, "gcprobe.py"), gc_json] + argv_t[1:]
    procs = run.Procs()
    log = open(base + ".log", "w")
    try:
        run.wait_ports_free(lo, hi)
        tgt = procs.start(["taskset", "-c", run.TARGET_CORE] + argv_t, stdout=log, stderr=subprocess.STDOUT,
                          cwd=run.ROOT)
        run.wait_bound(tgt, lo, hi)
        lg = procs.start(["taskset", "-c", run.GEN_CORE, sys.executable, os.path.join(HERE, "loadgen.py"),
                          "--pairs", str(ns.pairs), "--seconds", str(ns.seconds), "--base", str(lo)],
                         stdout=subprocess.PIPE, text=True, cwd=run.ROOT)
        t0 = float(run.read_line(lg, 30).split()[1])
        time.sleep(max(0.0, t0 + 3 - time.monotonic()))
        dur = int(ns.seconds - 5 - ns.native_seconds)
        c0, w0, u0 = run.proc_cpu(tgt.pid), time.monotonic(), utime(tgt.pid)
        rec = subprocess.run(["taskset", "-c", run.GEN_CORE, pyspy, "record", "-p", str(tgt.pid), "-d", str(dur),
                              "-r", str(ns.rate), "--nonblocking", "-f", "raw", "-o", base + ".raw"],
                             capture_output=True, text=True, timeout=dur + 30)
        c1, w1, u1 = run.proc_cpu(tgt.pid), time.monotonic(), utime(tgt.pid)
        dump = subprocess.run(["taskset", "-c", run.GEN_CORE, pyspy, "dump", "--nonblocking", "-p", str(tgt.pid)],
                              capture_output=True, text=True, timeout=30)
        with open(base + "-dump.txt", "w") as f:
            f.write(dump.stdout + dump.stderr)
        if ns.native_seconds:
            subprocess.run(["taskset", "-c", run.GEN_CORE, pyspy, "record", "-p", str(tgt.pid), "--native",
                            "-d", str(int(ns.native_seconds)), "-r", str(ns.rate), "-f", "raw",
                            "-o", base + "-native.raw"], capture_output=True, text=True,
                           timeout=ns.native_seconds + 30)
        lg.communicate(timeout=ns.seconds + 30)
        run.Procs.stop(tgt)
    finally:
        procs.stop_all()
        log.close()
    cpu_core = (c1 - c0) / (w1 - w0)
    pps = 2 * ns.pairs * 50
    text, data = summarise(base + ".raw", cpu_core, pps)
    user = (u1 - u0) / (c1 - c0) if c1 > c0 else float("nan")
    data["user_fraction"] = user
    text = (f"user {100 * user:.0f}% / kernel {100 * (1 - user):.0f}% of the target's CPU "
            f"(kernel = syscalls incl. loopback delivery; tick-sampled split)\n") + text
    header = [f"# {tag}: py-spy {dur} s at {ns.rate} Hz (--nonblocking) on the target under "
              f"{ns.pairs} pairs of load; " + " ".join(l.strip() for l in (rec.stdout + rec.stderr).splitlines() if "Samples" in l)]
    if os.path.exists(gc_json):
        with open(gc_json) as f:
            gc = json.load(f)
        data["gc"] = gc["by_generation"]
        header.append("gc pauses over the whole run: " + ", ".join(
            f"gen{g}: {v['count']}× total {v['total_ms']:.1f} ms max {v['max_ms'] or 0:.2f} ms"
            for g, v in gc["by_generation"].items()))
    if ns.native_seconds and os.path.exists(base + "-native.raw"):
        ntext, ndata = summarise(base + "-native.raw", cpu_core, pps)
        data["native"] = ndata
        text += "\n\n# --native recording (blocking, perturbs timing), top leaf frames:\n" + "\n".join(
            ntext.split("top 25 leaf frames (self time):")[1].splitlines()[:26])
    text = "\n".join(header) + "\n" + text
    print(text)
    with open(base + ".txt", "w") as f:
        f.write(text + "\n")
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1)
    if ns.publish:
        dest = os.path.join(HERE, "results")
        os.makedirs(dest, exist_ok=True)
        shutil.copy(base + ".txt", os.path.join(dest, tag + ".txt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
