"""
Call churn against one xlbridge, measured from outside (issue 15, "one
misbehaving AudioSocket peer damages every call").

Starts ``twistd -n xlbridge --ports A,B,C,D --audiosocket 7000=P1,7001=P2
--engines relay --reply-codec slin16`` with an events file, then for
``--seconds``:

- a healthy RTP call on the second pair: caller A sends a 15 s noise signal
  (slin16, PT 118, one packet per 20 ms from a thread with absolute
  deadlines), caller B sends silence (so both legs are latched) and
  records what it gets;
- a churning client (another thread) that connects to both AudioSocket
  ports in turn, sends a 0x01 UUID and one 0x12 frame and closes, as fast
  as ``--rate`` allows (the report measured about 185 a second).

It prints one JSON object: the healthy call's frames delivered, whether
they arrived bit-exact and in order, frames inserted between them (filler
where audio was missing), one-way latency p50/p99/max (ms, send to
receive on this machine's monotonic clock), the churn connections made,
calls started on the churned pair (from the events file), calls refused
(``xlbridge_calls_refused_total`` from /metrics) and xlbridge's CPU time.

    python -m reliability.churn --seconds 15 --rate 200
    python -m reliability.churn --seconds 15 --rate 200 --max-new-calls 0   # no bound
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PORTS = (17811, 17812, 17813, 17814)
AS_PORTS = (15061, 15062)
MONITOR = 13011
TOKEN = "churn-bench-token"


def start_bridge(events: Path, log: Path, max_new_calls: Optional[str]) -> subprocess.Popen[bytes]:
    """xlbridge as the report ran it, with an events file and the monitor."""
    cmd = [
        str(ROOT / ".venv" / "bin" / "twistd"), "-n", "--pidfile=", "xlbridge",
        "--ports", ",".join(map(str, PORTS)),
        "--audiosocket", f"7000={AS_PORTS[0]},7001={AS_PORTS[1]}",
        "--engines", "relay", "--reply-codec", "slin16", "--events", str(events),
        "--monitor", f"tcp:{MONITOR}:interface=127.0.0.1", "--monitor-metrics-open", "yes",
    ]
    if max_new_calls is not None:
        cmd += ["--max-new-calls", max_new_calls]
    env = dict(os.environ, XLBRIDGE_MONITOR_TOKEN=TOKEN)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "monitor on http" in log.read_text(errors="replace"):
            return proc
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"xlbridge did not start: see {log}")


def cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def metric(name: str, labels: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{MONITOR}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def run(seconds: float, rate: float, max_new_calls: Optional[str]) -> dict[str, Any]:
    n = int(seconds / 0.02)
    sig = (np.random.default_rng(1).standard_normal(n * 320) * 3000).clip(-32000, 32000).astype(">i2")
    ref = [sig[i * 320:(i + 1) * 320].tobytes() for i in range(n)]
    tmp = Path(tempfile.mkdtemp(prefix="xlbridge-churn-"))
    events, log = tmp / "events.jsonl", tmp / "xlbridge.log"
    proc = start_bridge(events, log, max_new_calls)
    stop = threading.Event()
    got: list[tuple[float, bytes]] = []
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    b.settimeout(0.2)
    connections = [0]

    def receive() -> None:
        while not stop.is_set():
            try:
                data = b.recv(2000)
            except socket.timeout:
                continue
            got.append((time.monotonic(), data[12:]))

    def b_sends() -> None:
        seq, t = 0, time.monotonic()
        while not stop.is_set():
            b.sendto(struct.pack("!BBHII", 0x80, 118, seq & 0xFFFF, seq * 320, 0x2222) + bytes(640),
                     ("127.0.0.1", PORTS[3]))
            seq += 1
            t += 0.02
            time.sleep(max(0.0, t - time.monotonic()))

    try:
        threads = [threading.Thread(target=f, daemon=True) for f in (receive, b_sends)]
        for th in threads:
            th.start()
        cpu0 = cpu_seconds(proc.pid)
        # The churning client is its own process: in this one its socket
        # calls would take the GIL from the healthy call's sender.
        churner = subprocess.Popen(
            [sys.executable, "-m", "reliability.churn", "--churn-only", "--rate", str(rate),
             "--seconds", str(seconds + 2)], cwd=ROOT, stdout=subprocess.PIPE,
        ) if rate else None
        time.sleep(0.5)
        sent_at = []
        t = time.monotonic()
        for i in range(n):
            a.sendto(struct.pack("!BBHII", 0x80, 118, i, i * 320, 0x1111) + ref[i], ("127.0.0.1", PORTS[2]))
            sent_at.append(time.monotonic())
            t += 0.02
            time.sleep(max(0.0, t - time.monotonic()))
        time.sleep(1.0)
        stop.set()
        time.sleep(0.3)
        cpu = cpu_seconds(proc.pid) - cpu0
        if churner is not None:
            churner.terminate()
            out, _ = churner.communicate(timeout=10)
            connections[0] = int(out.decode().split()[-1]) if out.strip() else 0
        refused = metric("xlbridge_calls_refused_total", 'transport="audiosocket"')
        peers_refused = metric("xlbridge_media_connections_refused_total")
    finally:
        stop.set()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    index = {f: i for i, f in enumerate(ref)}
    seq = [index.get(f, -1) for _, f in got]
    first_seen: dict[int, float] = {}
    for (at, _), i in zip(got, seq):
        if i >= 0 and i not in first_seen:
            first_seen[i] = at
    delivered = [i for i in seq if i >= 0]
    inner = seq[seq.index(delivered[0]):len(seq) - seq[::-1].index(delivered[-1])] if delivered else []
    lat = np.array([(first_seen[i] - sent_at[i]) * 1000 for i in sorted(first_seen)])
    started = [json.loads(line) for line in events.read_text().splitlines() if '"CallStarted"' in line]
    churned = [e for e in started if e["extensions"] == ["7000", "7001"]]
    errors = [line for line in log.read_text(errors="replace").splitlines() if "Traceback" in line or "#error" in line
              or "#critical" in line]
    return {
        "seconds": seconds, "rate_asked": rate, "max_new_calls": max_new_calls or "default (20)",
        "frames_sent": n, "frames_delivered": len(first_seen),
        "in_order": delivered == sorted(delivered) and len(set(delivered)) == len(delivered),
        "inserted_inside": sum(1 for i in inner if i < 0),
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 1), "p99": round(float(np.percentile(lat, 99)), 1),
                       "max": round(float(lat.max()), 1)} if len(lat) else None,
        "churn_connections": connections[0], "churned_calls_started": len(churned),
        "calls_refused": refused, "peer_connections_refused": peers_refused,
        "xlbridge_cpu_s": round(cpu, 2), "log_error_lines": len(errors), "workdir": str(tmp),
    }


def churn(rate: float, seconds: float) -> None:
    """
    Connect to both AudioSocket ports in turn, say a UUID and one 0x12
    frame, close; ``rate`` connections a second for ``seconds`` (or until
    SIGTERM); print how many were made.
    """
    made, t, end = 0, time.monotonic(), time.monotonic() + seconds
    signal.signal(signal.SIGTERM, lambda *_: (print(made, flush=True), os._exit(0)))
    while time.monotonic() < end:
        for port in AS_PORTS:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=1)
                s.sendall(b"\x01\x00\x10" + uuid.uuid4().bytes + b"\x12\x02\x80" + bytes(640))
                s.close()
                made += 1
            except OSError:
                pass
        t += 2 / rate
        time.sleep(max(0.0, t - time.monotonic()))
    print(made, flush=True)


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="healthy call length (750 frames per 15 s)")
    ap.add_argument("--rate", type=float, default=200.0, help="churn connections a second (0: no churn)")
    ap.add_argument("--max-new-calls", default=None, help="passed to xlbridge (default: its own)")
    ap.add_argument("--churn-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.churn_only:
        churn(args.rate, args.seconds)
        return
    json.dump(run(args.seconds, args.rate, args.max_new_calls), sys.stdout)
    print()


if __name__ == "__main__":
    main()
