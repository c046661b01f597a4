"""
CPU of the xlbridge process per transport, relay, N calls (issue 14).

No Asterisk: a load generator plays Asterisk on loopback, faithfully to
each protocol, for 2N legs (N pairs) at once:

- ``rtp``: bench/loadgen.py (one UDP socket per leg, RTP PT 118 slin16
  big-endian every 20 ms); xlbridge replies G.722 (its default);
- ``rtp_slin16``: the same with ``--reply-codec slin16`` (no encoder cost:
  the transport alone);
- ``audiosocket``: one TCP connection per leg (``--audiosocket``), the
  0x01 UUID message first, then a 0x12 slin16 message (640 bytes,
  little-endian) every 20 ms; xlbridge's replies are read and counted;
- ``websocket``: one WebSocket client per leg (``--websocket``) as
  chan_websocket in client mode: the HTTP upgrade with ``Sec-WebSocket-
  Protocol: media``, MEDIA_START as TEXT (plain-text form, slin16,
  optimal_frame_size 640, ptime 20), then a masked 640-byte BINARY frame
  every 20 ms; what xlbridge sends ahead is read and counted.

The legs are spread over 20 send slots per 20 ms, like independent calls
(as loadgen.py does).  xlbridge (``twistd -n xlbridge --engines relay
--monitor none``) runs pinned to core 1 (``taskset -c 1``), the load
generator to core 0, one transport at a time, a fresh xlbridge for each;
the order of the transports rotates between repeats.  CPU is utime+stime
of the xlbridge process (/proc/PID/stat) over [load start + ``--skip``,
end - 0.3 s]; reported as CPU seconds per leg per minute and as the
fraction of one core, median over ``--repeats``.

Usage: ``.venv/bin/python bench/transport_cpu.py --pairs 50 --seconds 20 --repeats 3``
(about 5 minutes).  Where the time goes: ``--profile DIR --repeats 1
--transports websocket,audiosocket``, then ``python -m pstats DIR/websocket-r0.prof``.  The load generator alone:
``python bench/transport_cpu.py --loadgen websocket --legs 100 --base 31200 --seconds 10``
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import math
import os
import platform
import select
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, str(HERE))
from codestate import code_state  # noqa: E402
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
TARGET_CORE, GEN_CORE = "1", "0"
PERIOD = 0.020
TRANSPORTS = ("rtp", "rtp_slin16", "audiosocket", "websocket")
#: xlbridge is imported from this tree (also when it is a copy: see BENCHMARKS.md)
ENV = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}


# --------------------------------------------------------------------------
# the load generator (AudioSocket and WebSocket; RTP is bench/loadgen.py)


def tone_le(freq: float = 440.0, amp: int = 8000) -> bytes:
    """20 ms of a sine at 16 kHz, little-endian int16."""
    return struct.pack("<320h", *(int(amp * math.sin(2 * math.pi * freq * i / 16000)) or 1 for i in range(320)))


def ws_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """One masked client frame (FIN set)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    else:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    masked = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return head + key + masked


def open_leg(kind: str, host: str, port: int, i: int) -> tuple[socket.socket, bytes]:
    """Connect one leg as Asterisk would; returns the socket and the 20 ms message it sends."""
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    audio = tone_le(300 + (i % 40) * 10)
    if kind == "audiosocket":
        s.sendall(b"\x01\x00\x10" + uuid.uuid4().bytes)
        msg = b"\x12" + struct.pack("!H", len(audio)) + audio
    else:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /media HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Sec-WebSocket-Protocol: media\r\nUser-Agent: Asterisk\r\n\r\n").encode())
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError(f"port {port}: connection closed during the upgrade")
            resp += chunk
        if not resp.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"port {port}: upgrade refused: {resp.splitlines()[0]!r}")
        mask = os.urandom(4)
        cid = f"bench{i}"
        start = (f"MEDIA_START connection_id:{cid} channel:WebSocket/{cid}/0x{i:012x} "
                 f"channel_id:{1700000000 + i}.{i} format:slin16 optimal_frame_size:640 ptime:20")
        s.sendall(ws_frame(1, start.encode(), mask))
        msg = ws_frame(2, audio, mask)
    s.setblocking(False)
    return s, msg


def loadgen(ns: argparse.Namespace) -> int:
    legs = ns.legs
    socks, msgs = [], []
    for i in range(legs):
        s, m = open_leg(ns.loadgen, ns.host, ns.base + i, i)
        socks.append(s)
        msgs.append(m)
    ep = select.epoll()
    fd_index = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        fd_index[s.fileno()] = i
    nslots = max(1, min(ns.slots, legs))
    slot_dt = PERIOD / nslots
    slot_legs: list[list[int]] = [[] for _ in range(nslots)]
    for i in range(legs):
        slot_legs[i * nslots // legs].append(i)
    rx = [0] * legs
    closed = [False] * legs
    sent = partial = errors = 0
    late: list[float] = []
    mono = time.monotonic
    buf = bytearray(65536)

    def drain(timeout: float) -> None:
        for fd, _ in ep.poll(timeout):
            i = fd_index[fd]
            try:
                n = socks[i].recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                closed[i] = True
                ep.unregister(fd)
            rx[i] += n

    time.sleep(0.5)  # let xlbridge pair the legs and start its calls
    t0 = mono() + 0.05
    total = int(round(ns.seconds / slot_dt))
    print(f"started {t0:.6f}", flush=True)
    for k in range(total):
        deadline = t0 + k * slot_dt
        while True:
            rem = deadline - mono()
            if rem <= 0:
                break
            if rem > 0.0012:
                drain(rem - 0.001)
            else:
                time.sleep(rem)
        for i in slot_legs[k % nslots]:
            if closed[i]:
                continue
            try:
                n = socks[i].send(msgs[i])
                sent += 1
                if n < len(msgs[i]):
                    partial += 1
            except OSError:
                errors += 1
        late.append(mono() - deadline)
        drain(0)
    stop = mono() + 0.06
    while mono() < stop:
        drain(0.01)
    for s in socks:
        s.close()
    late.sort()
    seconds = mono() - t0
    print(json.dumps({
        "kind": ns.loadgen, "legs": legs, "seconds": seconds, "sent": sent, "partial_sends": partial,
        "send_errors": errors, "closed_by_xlbridge": sum(closed),
        "rx_bytes_per_leg_s": sum(rx) / legs / seconds,
        "legs_without_reply": sum(1 for r in rx if r == 0),
        "send_lateness_ms": {"p50": 1000 * late[len(late) // 2], "p99": 1000 * late[int(len(late) * 0.99)]},
    }), flush=True)
    return 0




# --------------------------------------------------------------------------
# the runner


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def twistd() -> str:
    return os.path.join(os.path.dirname(sys.executable), "twistd")


def target_argv(transport: str, legs: int, base: int, profile: str = "") -> tuple[list[str], str]:
    """xlbridge's command line for ``transport`` and the log text that says it is listening."""
    lo, hi = base, base + legs - 1
    argv = [twistd(), "-n", "--pidfile="]
    if profile:
        argv += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
    argv += ["xlbridge", "--engines", "relay", "--monitor", "none"]
    if transport in ("rtp", "rtp_slin16"):
        argv += ["--ports", f"{lo}-{hi}"]
        if transport == "rtp_slin16":
            argv += ["--reply-codec", "slin16"]
        return argv, f"RTPEndpoint starting on {hi}"
    if transport == "audiosocket":
        return argv + ["--audiosocket", f"{lo}-{hi}"], f"AudioSocketEndpoint starting on {hi}"
    return argv + ["--websocket", f"{lo}-{hi}"], f"MediaServerFactory starting on {hi}"


def wait_log(path: str, text: str, p: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if p.poll() is not None:
            raise RuntimeError(f"xlbridge exited ({p.returncode}): see {path}")
        with open(path) as f:
            if text in f.read():
                return
        time.sleep(0.1)
    raise RuntimeError(f"no {text!r} in {path} after {timeout} s")


def stop(p: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    if p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    return p.returncode


def run_point(transport: str, ns: argparse.Namespace, tag: str) -> dict[str, Any]:
    legs = 2 * ns.pairs
    base = ns.base + 100 * TRANSPORTS.index(transport) if legs <= 100 else ns.base + 1000 * TRANSPORTS.index(transport)
    profile = os.path.join(os.path.abspath(ns.profile), f"{tag}.prof") if ns.profile else ""
    argv, ready = target_argv(transport, legs, base, profile)
    log = os.path.join(ns.out, f"{tag}.log")
    with open(log, "w") as logf:
        tgt = subprocess.Popen(["taskset", "-c", TARGET_CORE, *argv], stdout=logf, stderr=subprocess.STDOUT,
                               cwd=ROOT, env=ENV)
    lg = None
    try:
        wait_log(log, ready, tgt)
        time.sleep(0.5)
        c_idle0, t_idle0 = proc_cpu(tgt.pid), time.monotonic()
        if transport.startswith("rtp"):
            gen = [os.path.join(HERE, "loadgen.py"), "--pairs", str(ns.pairs), "--base", str(base)]
        else:
            gen = [os.path.abspath(__file__), "--loadgen", transport, "--legs", str(legs), "--base", str(base)]
        lg = subprocess.Popen(["taskset", "-c", GEN_CORE, sys.executable, *gen, "--seconds", str(ns.seconds)],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert lg.stdout is not None
        first = lg.stdout.readline()
        if not first.startswith("started "):
            raise RuntimeError(f"load generator: {first!r}")
        t0 = float(first.split()[1])
        idle = (proc_cpu(tgt.pid) - c_idle0) / max(1e-9, time.monotonic() - t_idle0)
        time.sleep(max(0.0, t0 + ns.skip - time.monotonic()))
        c0, w0 = proc_cpu(tgt.pid), time.monotonic()
        time.sleep(max(0.0, t0 + ns.seconds - 0.3 - time.monotonic()))
        c1, w1 = proc_cpu(tgt.pid), time.monotonic()
        rss = rss_mb(tgt.pid)
        out, _ = lg.communicate(timeout=ns.seconds + 60)
        gen_out = json.loads(out.strip().splitlines()[-1])
    finally:
        if lg is not None and lg.poll() is None:
            stop(lg)
        rc = stop(tgt)
    window, cpu = w1 - w0, c1 - c0
    with open(log) as f:
        tracebacks = f.read().count("Traceback")
    return {
        "transport": transport, "pairs": ns.pairs, "legs": legs, "tag": tag, "window_s": window, "cpu_s": cpu,
        "cpu_core": cpu / window, "cpu_s_per_leg_min": cpu / (legs * window / 60),
        "idle_cpu_core_before_load": idle, "rss_mb": rss, "target_rc": rc, "tracebacks": tracebacks,
        "loadgen": gen_out,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=50, help="call pairs (2N legs) [50]")
    ap.add_argument("--seconds", type=float, default=20.0, help="load per point [20]")
    ap.add_argument("--skip", type=float, default=3.0, help="s of load before the CPU window opens [3]")
    ap.add_argument("--repeats", type=int, default=3, help="[3]")
    ap.add_argument("--transports", default=",".join(TRANSPORTS), help=f"[{','.join(TRANSPORTS)}]")
    ap.add_argument("--base", type=int, default=31000,
                    help="first port; each transport uses its own block of 100 (1000 over 50 pairs) [31000]")
    ap.add_argument("--out", default=os.path.join(HERE, "out", "transport_cpu"))
    ap.add_argument("--profile", metavar="DIR", default="",
                    help="run xlbridge under cProfile (twistd --profile), stats to DIR/<transport>-rK.prof; "
                         "the CPU figures are then not comparable")
    # the load generator's own options
    ap.add_argument("--loadgen", choices=("audiosocket", "websocket"), help=argparse.SUPPRESS)
    ap.add_argument("--legs", type=int, default=100, help=argparse.SUPPRESS)
    ap.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    ap.add_argument("--slots", type=int, default=20, help=argparse.SUPPRESS)
    ns = ap.parse_args(argv)
    if ns.loadgen:
        return loadgen(ns)
    transports = [t for t in ns.transports.split(",") if t]
    for t in transports:
        if t not in TRANSPORTS:
            ap.error(f"unknown transport {t!r}")
    if not 0 < ns.pairs <= 500:
        ap.error("pairs must be 1..500")
    os.makedirs(ns.out, exist_ok=True)
    info: dict[str, Any] = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(), "argv": sys.argv, "code": code_state(ROOT)}
    runs = []
    t_start = time.monotonic()
    for r in range(ns.repeats):
        order = transports[r % len(transports):] + transports[: r % len(transports)]
        for t in order:
            res = run_point(t, ns, f"{t}-r{r}")
            res["repeat"] = r
            runs.append(res)
            g = res["loadgen"]
            print(f"r{r} {t:12s} {res['cpu_core']:.3f} core  {res['cpu_s_per_leg_min']:.3f} CPU-s/leg-min  "
                  f"rx {g.get('rx_bytes_per_leg_s', g.get('received_bytes', 0)):.0f}  "
                  f"gen late p99 {g['send_lateness_ms']['p99']:.2f} ms", flush=True)
    rows = []
    for t in transports:
        rs = [x for x in runs if x["transport"] == t]
        rows.append({
            "transport": t, "repeats": len(rs),
            "cpu_core": statistics.median(x["cpu_core"] for x in rs),
            "cpu_core_all": [round(x["cpu_core"], 3) for x in rs],
            "cpu_s_per_leg_min": statistics.median(x["cpu_s_per_leg_min"] for x in rs),
            "cpu_s_per_leg_min_all": [round(x["cpu_s_per_leg_min"], 4) for x in rs],
            "rss_mb": statistics.median(x["rss_mb"] for x in rs),
            "tracebacks": sum(x["tracebacks"] for x in rs),
        })
    info["wall_s"] = time.monotonic() - t_start
    info["code_at_end"] = code_state(ROOT)
    with open(os.path.join(ns.out, "results.json"), "w") as f:
        json.dump({"machine": info, "rows": rows, "runs": runs}, f, indent=1)
    print(f"\n{ns.pairs} pairs ({2 * ns.pairs} legs), relay, median of {ns.repeats}:")
    print("| transport | CPU core (runs) | CPU s per leg-minute (runs) | RSS MB |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['transport']} | {row['cpu_core']:.3f} ({', '.join(f'{x:.3f}' for x in row['cpu_core_all'])}) | "
              f"{row['cpu_s_per_leg_min']:.4f} ({', '.join(f'{x:.4f}' for x in row['cpu_s_per_leg_min_all'])}) | "
              f"{row['rss_mb']:.0f} |")
    print(f"wrote {ns.out}/results.json; wall {info['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
