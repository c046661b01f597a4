"""
Ten (or N) healthy relayed calls whose audio is checked bit-exact.

Run as its own process (``python -m reliability.fuzz_healthy``) so the
fuzzer's threads cannot delay these packets: 2N UDP sockets, leg ``i``
connected to bridge port ``base + i``, legs ``2k`` and ``2k+1`` paired.
Every 20 ms each leg sends one RTP packet (v2, PT 118, 640-byte slin16
big-endian), with absolute deadlines like bench/loadgen.py.

* Warm-up: :data:`WARMUP_FRAMES` all-zero frames first, so both legs of a
  pair are latched before counted audio flows (the relay drops audio for a
  leg that cannot send yet, by design).
* Counted frames: payload ``(leg+1, k)`` in the first 6 bytes, then a fixed
  non-zero block of that leg: every frame is distinct and never silent.
* Receiver: the bridge's replies (``--reply-codec slin16``, PT 118) on leg
  ``j`` must be exactly the partner's counted frames, in order; all-zero
  frames are the bridge's filler and are ignored.

On SIGTERM (or stdin closing) it sends :data:`TAIL_FRAMES` more zero frames,
drains replies, prints one JSON line and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

PERIOD = 0.020
PT = 118
PAYLOAD = 640
TS_STEP = 320
WARMUP_FRAMES = 50  # 1 s
TAIL_FRAMES = 25  # 0.5 s
_TAG = struct.Struct(">HI")


def leg_block(leg: int) -> bytes:
    """640 bytes of never-zero big-endian samples, distinct per leg."""
    rnd = __import__("random").Random(1000 + leg)
    return b"".join(struct.pack(">h", rnd.choice([-1, 1]) * rnd.randint(1, 20000)) for _ in range(PAYLOAD // 2))


def frame(leg: int, k: int, block: bytes) -> bytes:
    """Counted frame ``k`` of ``leg``: its tag, then its block."""
    return _TAG.pack(leg + 1, k) + block[_TAG.size :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=int, required=True, help="first bridge port (leg 0)")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-seconds", type=float, default=3600.0, help="stop by itself after this long")
    ns = ap.parse_args(argv)

    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    legs = 2 * ns.pairs
    blocks = [leg_block(i) for i in range(legs)]
    zero = bytes(PAYLOAD)
    socks, bufs = [], []
    ep = select.epoll()
    fd_leg: dict[int, int] = {}
    for i in range(legs):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(("127.0.0.1", 0))
        s.connect(("127.0.0.1", ns.base + i))
        s.setblocking(False)
        socks.append(s)
        ssrc = int.from_bytes(os.urandom(4), "big")
        bufs.append(bytearray(struct.pack("!BBHII", 0x80, PT, 0, 0, ssrc)))
        ep.register(s.fileno(), select.EPOLLIN)
        fd_leg[s.fileno()] = i
    seq = [int.from_bytes(os.urandom(2), "big") for _ in range(legs)]
    ts = [int.from_bytes(os.urandom(4), "big") for _ in range(legs)]
    counted_sent = [0] * legs
    expect = [0] * legs  # next k expected on leg j (from partner j ^ 1)
    matched = [0] * legs
    filler = [0] * legs
    warm_heard = [0] * legs
    bad = {"wrong_pt": 0, "wrong_size": 0, "out_of_order": 0, "corrupt": 0, "foreign_tag": 0, "refused": 0}
    first_bad: list[str] = []
    gaps: list[tuple[float, int, int]] = []  # (unix time, leg, frames skipped)
    send_errors = 0
    lateness_max = 0.0
    late_over_20ms = 0
    rbuf = bytearray(70000)

    def drain(timeout: float) -> None:
        for fd, _ in ep.poll(timeout):
            j = fd_leg[fd]
            while True:
                try:
                    n = socks[j].recv_into(rbuf)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    bad["refused"] += 1
                    break
                data = bytes(rbuf[:n])
                if n < 12 or (data[1] & 0x7F) != PT:
                    bad["wrong_pt"] += 1
                    continue
                cc = data[0] & 0x0F
                payload = data[12 + 4 * cc :]
                if len(payload) != PAYLOAD:
                    bad["wrong_size"] += 1
                    continue
                if payload == zero:
                    filler[j] += 1
                    continue
                p = j ^ 1
                tag_leg, k = _TAG.unpack_from(payload)
                if tag_leg != p + 1:
                    bad["foreign_tag"] += 1
                    continue
                if payload[_TAG.size :] != blocks[p][_TAG.size :]:
                    bad["corrupt"] += 1
                    if len(first_bad) < 5:
                        first_bad.append(f"leg {j}: corrupt payload for k={k}")
                    continue
                if k != expect[j]:
                    bad["out_of_order"] += 1
                    if len(first_bad) < 5:
                        first_bad.append(f"leg {j}: got k={k}, expected {expect[j]}")
                    if k < expect[j]:
                        continue
                    if len(gaps) < 200000:
                        gaps.append((round(time.time(), 3), j, k - expect[j]))
                matched[j] += 1
                expect[j] = k + 1

    def send_all(counted: bool, k: int) -> None:
        nonlocal send_errors
        for i in range(legs):
            buf = bufs[i]
            struct.pack_into("!HI", buf, 2, seq[i], ts[i])
            payload = frame(i, k, blocks[i]) if counted else zero
            try:
                socks[i].send(bytes(buf) + payload)
                if counted:
                    counted_sent[i] += 1
            except OSError:
                send_errors += 1
            seq[i] = (seq[i] + 1) & 0xFFFF
            ts[i] = (ts[i] + TS_STEP) & 0xFFFFFFFF

    t0 = time.monotonic() + 0.05
    tick = 0
    k = 0
    phase = "warmup"
    tail_left = TAIL_FRAMES
    ready_printed = False
    started_counted_at = None
    while True:
        deadline = t0 + tick * PERIOD
        while True:
            rem = deadline - time.monotonic()
            if rem <= 0:
                break
            drain(max(0.0, rem - 0.001) if rem > 0.0015 else 0)
            if rem <= 0.0015:
                time.sleep(max(0.0, deadline - time.monotonic()))
        late = time.monotonic() - deadline
        lateness_max = max(lateness_max, late)
        if late > PERIOD:
            late_over_20ms += 1
        if phase == "warmup":
            send_all(False, 0)
            if tick + 1 >= WARMUP_FRAMES:
                phase = "counted"
                warm_heard = list(filler)
                started_counted_at = time.time()
        elif phase == "counted":
            send_all(True, k)
            k += 1
            if not ready_printed and k >= 50:
                print("ready", flush=True)
                ready_printed = True
            if stop or time.monotonic() - t0 > ns.max_seconds:
                phase = "tail"
        else:
            send_all(False, 0)
            tail_left -= 1
            if tail_left <= 0:
                break
        tick += 1
        drain(0)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        drain(0.02)
    per_leg = []
    for j in range(legs):
        p = j ^ 1
        per_leg.append({
            "leg": j, "port": ns.base + j, "sent": counted_sent[j], "partner_sent": counted_sent[p],
            "received_exact": matched[j], "lost": counted_sent[p] - matched[j], "filler_frames": filler[j],
        })
    out = {
        "pairs": ns.pairs, "legs": legs, "counted_frames_per_leg": k,
        "counted_seconds": k * PERIOD, "started_counted_at": started_counted_at,
        "frames_sent": sum(counted_sent), "frames_received_exact": sum(matched),
        "frames_lost": sum(counted_sent) - sum(matched), "bad": bad, "first_bad": first_bad,
        "send_errors": send_errors, "send_lateness_max_ms": round(lateness_max * 1000, 2),
        "ticks_late_over_20ms": late_over_20ms, "warmup_filler_heard": sum(warm_heard), "gaps": gaps, "per_leg": per_leg,
    }
    with open(ns.out, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({k2: v for k2, v in out.items() if k2 not in ("per_leg", "gaps")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
