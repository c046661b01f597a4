"""
Load generator: N simulated call pairs against a bridge on 127.0.0.1.

2N UDP sockets (one per leg), each connected to its port (base + i) and
sending one RTP packet (v2, PT 118, 640-byte slin16 big-endian tone) every
20 ms with consecutive seq / ts (+320) and its own SSRC.  All sockets are
served by one loop with absolute deadlines (``t0 + k * slot``): the 20 ms
period is cut into ``--slots`` slots and the legs are spread evenly over them,
like independent calls (``--slots 1`` sends every leg in one burst).  Replies
are counted from the same sockets through epoll, one recv per ready event.

Prints ``started <monotonic>`` when the first packet goes out, then one JSON
line with its own send lateness (how far behind each slot's deadline its last
packet left, by this process's clock) and reply counts.

Traffic is loopback only and bounded: ``--seconds`` of 50 packets/s per leg.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import select
import socket
import struct
import sys
import time

PERIOD = 0.020
PT = 118
PAYLOAD_BYTES = 640
TS_STEP = 320


def tone(freq: float = 440.0, amp: int = 8000) -> bytes:
    """20 ms of a sine at 16 kHz, big-endian int16 (never all-zero)."""
    n = PAYLOAD_BYTES // 2
    return struct.pack(f">{n}h", *(int(amp * math.sin(2 * math.pi * freq * i / 16000)) or 1 for i in range(n)))


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, math.ceil(p / 100 * len(sorted_vals)) - 1))
    return sorted_vals[k]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, required=True, help="call pairs N (2N legs)")
    ap.add_argument("--base", type=int, default=20000, help="first bridge port")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--slots", type=int, default=20, help="send slots per 20 ms (1 = one burst)")
    ns = ap.parse_args(argv)
    if ns.host != "127.0.0.1":
        ap.error("loopback only")
    if not 0 < ns.pairs <= 1000 or not 0 < ns.seconds <= 600:
        ap.error("pairs must be 1..1000 and seconds 1..600")

    legs = 2 * ns.pairs
    payload = tone()
    socks: list[socket.socket] = []
    bufs: list[bytearray] = []
    sends = []
    seqs: list[int] = []
    tss: list[int] = []
    ep = select.epoll()
    fd_index: dict[int, int] = {}
    for i in range(legs):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        s.bind((ns.host, 0))
        s.connect((ns.host, ns.base + i))
        s.setblocking(False)
        ssrc = int.from_bytes(os.urandom(4), "big")
        seq0 = int.from_bytes(os.urandom(2), "big")
        ts0 = int.from_bytes(os.urandom(4), "big")
        buf = bytearray(struct.pack("!BBHII", 0x80, PT, 0, 0, ssrc) + payload)
        socks.append(s)
        bufs.append(buf)
        sends.append(s.send)
        seqs.append(seq0)
        tss.append(ts0)
        ep.register(s.fileno(), select.EPOLLIN)
        fd_index[s.fileno()] = i

    nslots = max(1, min(ns.slots, legs))
    slot_dt = PERIOD / nslots
    # leg i goes in slot i * nslots // legs: evenly spread, pairs adjacent.
    slot_legs: list[list[int]] = [[] for _ in range(nslots)]
    for i in range(legs):
        slot_legs[i * nslots // legs].append(i)

    received = [0] * legs
    rx_bytes = 0
    sent = 0
    send_errors = 0
    lateness: list[float] = []  # per slot: last packet's send time - deadline
    rbuf = bytearray(2048)
    recv_into = [s.recv_into for s in socks]
    pack_into = struct.Struct("!HI").pack_into
    poll = ep.poll
    mono = time.monotonic
    sleep = time.sleep

    def drain(timeout: float) -> None:
        nonlocal rx_bytes
        for fd, _ev in poll(timeout):
            i = fd_index[fd]
            try:
                rx_bytes += recv_into[i](rbuf)
                received[i] += 1
            except (BlockingIOError, ConnectionRefusedError):
                pass

    t0 = mono() + 0.05
    end = t0 + ns.seconds
    total_slots = int(round(ns.seconds / slot_dt))
    print(f"started {t0:.6f}", flush=True)
    for k in range(total_slots):
        deadline = t0 + k * slot_dt
        while True:
            rem = deadline - mono()
            if rem <= 0:
                break
            if rem > 0.0012:
                drain(rem - 0.001)  # epoll rounds its timeout up to whole ms
            else:
                sleep(rem)
        for i in slot_legs[k % nslots]:
            buf = bufs[i]
            pack_into(buf, 2, seqs[i], tss[i])
            try:
                sends[i](buf)
                sent += 1
            except OSError:
                send_errors += 1
            seqs[i] = (seqs[i] + 1) & 0xFFFF
            tss[i] = (tss[i] + TS_STEP) & 0xFFFFFFFF
        lateness.append(mono() - deadline)
        drain(0)
    # collect the replies still in flight for up to 60 ms
    stop = mono() + 0.06
    while mono() < stop:
        drain(0.01)
    elapsed = mono() - t0
    ep.close()
    for s in socks:
        s.close()

    late_ms = sorted(x * 1000 for x in lateness)
    out = {
        "pairs": ns.pairs,
        "legs": legs,
        "seconds": ns.seconds,
        "slots": nslots,
        "elapsed": elapsed,
        "sent": sent,
        "send_errors": send_errors,
        "expected_per_leg": total_slots // nslots,
        "received": sum(received),
        "received_bytes": rx_bytes,
        "legs_without_reply": sum(1 for r in received if r == 0),
        "send_lateness_ms": {
            "p50": pct(late_ms, 50),
            "p99": pct(late_ms, 99),
            "p99.9": pct(late_ms, 99.9),
            "max": late_ms[-1] if late_ms else float("nan"),
        },
        "end": end,
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
