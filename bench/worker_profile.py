"""
Where one xlbridge worker's CPU goes under relay load with G.722 replies.

Starts ``twistd xlbridge --engines relay --workers 1 --ports ...`` (the ``w1``
target of bench/run.py) with ``taskset -c 1``, so the supervisor and its one
worker sit on core 1; drives it with bench/loadgen.py (core 0) at ``--pairs``;
after a 3 s warm-up records the *worker* process (not the supervisor) with
``py-spy record --nonblocking`` (core 0; the worker is not paused), and
measures the worker's utime + stime over the same window.

The samples are split into exclusive parts of one relayed packet (first
match in :data:`PARTS` wins): the egress tick (G.722 encode, the ``sendto``
line of ``RTPEndpoint.send_frame``, playout read, RTP header, the rest), the
receive path (RTP parse, reorder, the room, the rest of ``_receive``, and
``Port.doRead``'s recvfrom loop), the reactor (epoll, dispatch wrappers,
timers) and other samples.  Shares are of py-spy
samples of the worker's Python threads; ``µs/pkt`` converts a share to
microseconds of the worker's measured CPU per relayed packet (2N legs x 50
packets/s in, as many out).

Writes ``OUT/worker-profile-nN.raw`` (py-spy's collapsed stacks), ``.txt`` and
``.json``.  Usage: ``python bench/worker_profile.py --pairs 100 --seconds 20``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import profile as spyprofile  # noqa: E402  (bench/profile.py, not the stdlib module)
import run  # noqa: E402

# Exclusive parts, first match wins: (label, test on the stack's frame names and its leaf frame)
PARTS: list[tuple[str, Any]] = [
    ("egress: G.722 encode", lambda names, leaf: "_G722Encoder.encode" in names),
    ("egress: sendto (the C call)", lambda names, leaf: leaf.startswith("RTPEndpoint.send_frame (xlbridge/transports/rtp.py:250)")
     or "Port.write" in names),
    ("egress: playout read (OutboundBuffer.read_frame)", lambda names, leaf: "OutboundBuffer.read_frame" in names),
    ("egress: RTP header (RTPSender.packet)", lambda names, leaf: "RTPSender.packet" in names),
    ("egress: the rest of the tick (Leg.egress, send_frame, EgressClock._tick, LoopingCall)",
     lambda names, leaf: "EgressClock._tick" in names or "LoopingCall.__call__" in names),
    ("receive: RTP parse (parse, RTPPacket)", lambda names, leaf: "parse" in names and "RTPEndpoint._receive" in names),
    ("receive: reorder (ReorderBuffer.push)", lambda names, leaf: "ReorderBuffer.push" in names),
    ("receive: room (Pair._audio_from: decode, buffer)", lambda names, leaf: "Pair._audio_from" in names),
    ("receive: the rest of _receive / datagramReceived",
     lambda names, leaf: "RTPEndpoint._receive" in names or "RTPEndpoint.datagramReceived" in names),
    ("receive: recvfrom loop (Port.doRead, the C call included)", lambda names, leaf: "Port.doRead" in names),
    ("reactor: epoll, dispatch wrappers, timers", lambda names, leaf: "ReactorBase.mainLoop" in names),
]


def frame_name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def shares(raw_path: str) -> tuple[int, dict[str, float]]:
    """Samples, and each part's share of them (exclusive; "other" = no part matched)."""
    total = 0
    counts = {label: 0 for label, _ in PARTS}
    counts["other (start-up, GC, truncated stacks)"] = 0
    with open(raw_path) as f:
        for line in f:
            stack, _, n_s = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(n_s)
            frames = stack.split(";")
            names = {frame_name(x) for x in frames}
            leaf = frames[-1]
            total += n
            for label, test in PARTS:
                if test(names, leaf):
                    counts[label] += n
                    break
            else:
                counts["other (start-up, GC, truncated stacks)"] += n
    return total, {k: v / total for k, v in counts.items()} if total else {}


def table(total: int, parts: dict[str, float], cpu_core: float, pps: float) -> str:
    lines = [f"{'part (exclusive)':88s} {'share':>7s} {'µs/pkt':>7s} {'core':>6s}"]
    for label, share in parts.items():
        lines.append(f"{label:88s} {100 * share:6.1f}% {share * cpu_core / pps * 1e6:7.2f} {share * cpu_core:6.3f}")
    for group in ("egress", "receive", "reactor"):
        share = sum(v for k, v in parts.items() if k.startswith(group))
        lines.append(f"{'= ' + group + ' (sum)':88s} {100 * share:6.1f}% {share * cpu_core / pps * 1e6:7.2f} "
                     f"{share * cpu_core:6.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=20.0, help="load duration (py-spy records seconds - 5)")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--ports", default="20000-20799")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--raw", nargs=2, metavar=("RAW", "CPU_CORE"),
                    help="only summarise an existing recording (py-spy raw file, the worker's CPU in core)")
    ns = ap.parse_args(argv)
    if ns.raw:
        total, parts = shares(ns.raw[0])
        print(f"samples {total}\n" + table(total, parts, float(ns.raw[1]), 2 * ns.pairs * 50))
        return 0
    lo, hi = map(int, ns.ports.split("-"))
    os.makedirs(ns.out, exist_ok=True)
    os.sched_setaffinity(0, {int(run.GEN_CORE)})
    pyspy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    pyspy = pyspy if os.path.exists(pyspy) else (shutil.which("py-spy") or "py-spy")
    base = os.path.join(ns.out, f"worker-profile-n{ns.pairs}")
    procs = run.Procs()
    log = open(base + ".log", "w")
    try:
        run.wait_ports_free(lo, hi)
        tgt = procs.start(["taskset", "-c", run.TARGET_CORE] + run.target_argv("w1", ns.ports),
                          stdout=log, stderr=subprocess.STDOUT, cwd=run.ROOT)
        run.wait_bound(tgt, lo, hi)
        pids = run.tree_pids(tgt.pid)
        if len(pids) != 2:
            raise RuntimeError(f"expected a supervisor and one worker, found {pids}")
        worker = pids[1]
        lg = procs.start(["taskset", "-c", run.GEN_CORE, sys.executable, os.path.join(HERE, "loadgen.py"),
                          "--pairs", str(ns.pairs), "--seconds", str(ns.seconds), "--base", str(lo)],
                         stdout=subprocess.PIPE, text=True, cwd=run.ROOT)
        t0 = float(run.read_line(lg, 30).split()[1])
        time.sleep(max(0.0, t0 + 3 - time.monotonic()))
        dur = int(ns.seconds - 5)
        c0, w0, u0 = run.proc_cpu(worker), time.monotonic(), run.proc_utime(worker)
        s0 = run.proc_cpu(tgt.pid)
        rec = subprocess.run(["taskset", "-c", run.GEN_CORE, pyspy, "record", "-p", str(worker), "-d", str(dur),
                              "-r", str(ns.rate), "--nonblocking", "-f", "raw", "-o", base + ".raw"],
                             capture_output=True, text=True, timeout=dur + 30)
        c1, w1, u1 = run.proc_cpu(worker), time.monotonic(), run.proc_utime(worker)
        s1 = run.proc_cpu(tgt.pid)
        lg.communicate(timeout=ns.seconds + 30)
        run.Procs.stop(tgt)
    finally:
        procs.stop_all()
        log.close()
    cpu_core = (c1 - c0) / (w1 - w0)
    pps = 2 * ns.pairs * 50
    total, parts = shares(base + ".raw")
    _, data = spyprofile.summarise(base + ".raw", cpu_core, pps)  # for its top frames
    data = {"samples": total, "cpu_core": cpu_core, "pps": pps, "parts": parts,
            "top_leaf": data.get("top_leaf"), "top_inclusive": data.get("top_inclusive")}
    text = f"py-spy samples {total}; worker CPU {cpu_core:.3f} core; {pps} packets/s in and out\n" + table(
        total, parts, cpu_core, pps) + "\n\ntop leaf frames (self time):\n" + "\n".join(
        f"  {100 * share:5.1f}%  {fr}" for fr, share in (data["top_leaf"] or [])[:20])
    user = (u1 - u0) / (c1 - c0) if c1 > c0 else float("nan")
    data["user_fraction"] = user
    data["supervisor_cpu_core"] = (s1 - s0) / (w1 - w0)
    samples = " ".join(x.strip() for x in (rec.stdout + rec.stderr).splitlines() if "Samples" in x)
    head = (f"# worker-profile-n{ns.pairs}: py-spy {dur} s at {ns.rate} Hz (--nonblocking) on the one worker of "
            f"`twistd xlbridge --engines relay --workers 1` (taskset -c 1) under {ns.pairs} pairs; {samples}\n"
            f"supervisor CPU over the window {data['supervisor_cpu_core']:.4f} core\n"
            f"user {100 * user:.0f}% / kernel {100 * (1 - user):.0f}% of the worker's CPU (tick-sampled split)\n")
    text = head + text
    print(text)
    with open(base + ".txt", "w") as f:
        f.write(text + "\n")
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
