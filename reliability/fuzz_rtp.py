"""
RTP surface: malformed and hostile datagrams at the bridge's UDP ports.

Targets are the extra ``--ports`` pairs kept for fuzzing (each first
latched by this module's own source with one valid packet), plus, at a low
rate, the healthy calls' ports themselves with packets from *foreign*
sources (which must be dropped as ``foreign_source`` without costing the
healthy calls a frame).

Cases (every header field, CSRC/extension/padding lengths, sizes 0-65507,
wrong payload types, replayed and reordered sequences, a foreign source):
see :func:`rtp_case`.  Rate-limited (``rate`` datagrams/s) so the fuzzer
stays a modest CPU load on a shared machine.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from typing import Optional

from reliability.fuzz_common import Tally

PT = 118
_HDR = struct.Struct("!BBHII")


class Stream:
    """A plausible sender's state: sequence, timestamp, SSRC, and recent packets for replays."""

    def __init__(self, rng: random.Random) -> None:
        self.seq = rng.randrange(65536)
        self.ts = rng.randrange(2**32)
        self.ssrc = rng.randrange(2**32)
        self.recent: list[bytes] = []

    def next(self, payload: bytes, pt: int = PT, b0: int = 0x80, marker: bool = False) -> bytes:
        """The next in-sequence packet (advances sequence and timestamp)."""
        pkt = _HDR.pack(b0, (0x80 if marker else 0) | (pt & 0x7F), self.seq, self.ts, self.ssrc) + payload
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 320) & 0xFFFFFFFF
        self.recent.append(pkt)
        if len(self.recent) > 32:
            del self.recent[:16]
        return pkt


def _size(rng: random.Random) -> int:
    """A datagram size in 0..65507, weighted towards small and boundary sizes."""
    r = rng.random()
    if r < 0.5:
        return rng.randint(0, 64)
    if r < 0.8:
        return rng.randint(0, 1500)
    if r < 0.9:
        return rng.choice([0, 1, 11, 12, 13, 652, 653, 8191, 8192, 8193, 9000, 65507])
    return rng.randint(0, 65507)


def rtp_case(rng: random.Random, st: Stream, audio: bytes) -> tuple[str, bytes]:
    """One hostile datagram for a port latched by ``st``'s source: ``(case, bytes)``."""
    r = rng.random()
    if r < 0.15:  # random bytes of any size
        n = _size(rng)
        return "random_bytes", rng.randbytes(n)
    if r < 0.25:  # version field 0, 1, 3
        pkt = bytearray(st.next(audio))
        pkt[0] = (pkt[0] & 0x3F) | (rng.choice([0, 1, 3]) << 6)
        return "version", bytes(pkt)
    if r < 0.35:  # CSRC count with too few (or just enough) CSRC words
        cc = rng.randint(1, 15)
        words = rng.randint(0, cc)
        b0 = 0x80 | cc
        return "csrc_count", _HDR.pack(b0, PT, st.seq, st.ts, st.ssrc) + rng.randbytes(4 * words + rng.randint(0, 3))
    if r < 0.47:  # extension header: length word past the end / truncated header
        ext_words = rng.choice([0, 1, 2, 160, 0xFFFF, rng.randrange(65536)])
        tail = rng.randbytes(rng.choice([0, 1, 2, 3, 4 * min(ext_words, 400), rng.randint(0, 700)]))
        body = struct.pack("!HH", rng.randrange(65536), ext_words) if rng.random() < 0.9 else b"\xbe"
        return "extension", _HDR.pack(0x90, PT, st.seq, st.ts, st.ssrc) + body + tail
    if r < 0.57:  # padding count 0, past the payload, or all of it
        payload = rng.randbytes(rng.choice([0, 1, 2, 10, 640]))
        pad = min(255, rng.choice([0, 1, 255, len(payload) + 1, len(payload), rng.randrange(256)]))
        tail = bytes([pad]) if payload or rng.random() < 0.5 else b""
        return "padding", _HDR.pack(0xA0, PT, st.seq, st.ts, st.ssrc) + payload + tail
    if r < 0.67:  # wrong payload type (any 7-bit value but ours), valid otherwise
        pt = rng.choice([x for x in (0, 8, 9, 10, 11, 13, 96, 101, 117, 119, 127, rng.randrange(128)) if x != PT])
        return "payload_type", st.next(audio, pt=pt)
    if r < 0.74:  # payload sizes: empty, odd, huge
        n = rng.choice([0, 1, 3, 639, 641, 1279, 8180, 8181, 20000, 65495])
        return "payload_size", st.next(rng.randbytes(n))
    if r < 0.80:  # replayed packets (duplicates of recent ones)
        if st.recent:
            return "replay", rng.choice(st.recent)
        return "replay", st.next(audio)
    if r < 0.86:  # reordered / jumping sequence numbers and timestamps
        jump = rng.choice([-3, -2, -1, 2, 5, 100, 32768, 65535, -30000])
        st.seq = (st.seq + jump) & 0xFFFF
        if rng.random() < 0.5:
            st.ts = (st.ts + rng.choice([-320, 0, 2**31, rng.randrange(2**32)])) & 0xFFFFFFFF
        return "reorder_jump", st.next(audio, marker=rng.random() < 0.3)
    if r < 0.90:  # SSRC change mid-stream from the latched source
        st.ssrc = rng.randrange(2**32)
        return "ssrc_change", st.next(audio)
    if r < 0.95:  # every header bit flipped at random, valid length
        pkt = bytearray(st.next(audio))
        for _ in range(rng.randint(1, 6)):
            i = rng.randrange(12)
            pkt[i] ^= 1 << rng.randrange(8)
        return "bitflip_header", bytes(pkt)
    # valid packet (keeps the port latched and a call up on the fuzz pair)
    return "valid", st.next(audio)


def run(
    tally: Tally, count: int, fuzz_ports: list[int], healthy_ports: list[int], seed: int,
    rate: float = 6000.0, foreign_share: float = 0.05, deadline: Optional[float] = None,
) -> None:
    """
    Send ``count`` datagrams: ``1 - foreign_share`` of them from the latched
    source to the fuzz ports, the rest valid-looking packets from foreign
    sources to the fuzz and healthy ports.

    :param rate: datagrams per second (paced in batches of 1 ms worth).
    """
    rng = random.Random(seed)
    t0 = time.monotonic()
    audio = bytes(rng.randrange(1, 256) for _ in range(640))
    main = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    main.bind(("127.0.0.1", 0))
    main.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
    main.setblocking(False)
    foreign = []
    for _ in range(8):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        foreign.append(s)
    streams = {p: Stream(rng) for p in fuzz_ports}
    fstream = Stream(rng)
    # latch every fuzz port to the main source first
    for p in fuzz_ports:
        main.sendto(streams[p].next(audio), ("127.0.0.1", p))
        tally.add("latch_valid")
    time.sleep(0.1)
    per_batch = max(1, int(rate / 1000))
    sent = len(fuzz_ports)
    next_t = time.monotonic()
    while sent < count:
        if deadline is not None and time.monotonic() > deadline:
            tally.note("stopped_at_deadline")
            break
        for _ in range(per_batch):
            if rng.random() < foreign_share:
                to_healthy = healthy_ports and rng.random() < 0.5
                port = rng.choice(healthy_ports if to_healthy else fuzz_ports)
                sock = rng.choice(foreign)
                if rng.random() < 0.7:
                    case, data = "foreign_valid_" + ("healthy" if to_healthy else "fuzz"), fstream.next(audio)
                else:
                    case, data = rtp_case(rng, fstream, audio)
                    case = "foreign_" + ("healthy_" if to_healthy else "fuzz_") + case
            else:
                port = rng.choice(fuzz_ports)
                sock = main
                case, data = rtp_case(rng, streams[port], audio)
            try:
                sock.sendto(data, ("127.0.0.1", port))
            except BlockingIOError:
                time.sleep(0.001)
                tally.error("BlockingIOError")
                continue
            except OSError as e:
                tally.error(e)
            tally.add(case)
            sent += 1
            if sent >= count:
                break
        next_t += per_batch / rate
        pause = next_t - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    main.close()
    for s in foreign:
        s.close()
    tally.seconds = time.monotonic() - t0
