"""
AudioSocket surface: hostile TCP streams at the ``--audiosocket`` ports.

Per connection a scenario (:func:`scenario`): every kind byte 0x00-0xFF,
absurd lengths (up to 65535, skipped by the decoder), empty and odd audio,
half frames then close, audio before the UUID, a second UUID, and streams
cut into random chunk sizes.  Besides: ``open_drop`` connections opened and
dropped at once (10,000 by default, half of them with an RST), and
``slow_drip`` connections that send one byte every 100 ms.

Inputs are counted per message written (a slow-drip byte counts as one).
The bridge closes a connection it refuses (busy extension, new-call rate
bound, after our 0x00), so resets while writing are expected and counted
as fuzzer-side errors, not failures.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
import uuid
from typing import Optional

from reliability.fuzz_common import Tally

_HDR = struct.Struct(">BH")
AUDIO_KINDS = tuple(range(0x10, 0x19))
#: One call id sent on several extensions at once (call ids must not collide).
DUP_UUID = uuid.UUID("0f0f0f0f-0000-4000-8000-000000000015").bytes


def msg(kind: int, payload: bytes, length: Optional[int] = None) -> bytes:
    """One message; ``length`` lies about the payload length when given."""
    return _HDR.pack(kind & 0xFF, len(payload) if length is None else length) + payload


def uuid_msg(rng: random.Random) -> bytes:
    return msg(0x01, uuid.UUID(int=rng.getrandbits(128)).bytes)


def random_message(rng: random.Random) -> tuple[str, bytes]:
    """One hostile (or valid) message for the middle of a stream."""
    r = rng.random()
    if r < 0.30:  # valid audio of some kind, 20 ms
        kind = rng.choice(AUDIO_KINDS)
        n = {0x10: 320, 0x11: 480, 0x12: 640, 0x13: 960, 0x14: 1280, 0x15: 1764, 0x16: 1920, 0x17: 3840,
             0x18: 7680}[kind]
        return "audio_valid", msg(kind, rng.randbytes(n))
    if r < 0.45:  # any kind byte, small payload
        kind = rng.randrange(256)
        return f"kind_{'audio' if kind in AUDIO_KINDS else 'other'}", msg(kind, rng.randbytes(rng.randint(0, 64)))
    if r < 0.55:  # audio empty or odd-sized
        return "audio_bad_size", msg(rng.choice(AUDIO_KINDS), rng.randbytes(rng.choice([0, 1, 3, 641, 999])))
    if r < 0.63:  # absurd lengths: over the kind's bound, payload really sent (skipped)
        kind = rng.choice([0x00, 0x01, 0x03, 0xFF, 0x10, 0x12, 0x42, 0xFE])
        n = rng.choice([257, 4000, 40000, 65535])
        return "absurd_length", msg(kind, rng.randbytes(n))
    if r < 0.70:  # a second (third...) UUID, right or wrong length
        if rng.random() < 0.6:
            return "second_uuid", uuid_msg(rng)
        return "uuid_bad_length", msg(0x01, rng.randbytes(rng.choice([0, 1, 15, 17, 36])))
    if r < 0.78:  # DTMF, valid and not
        return "dtmf", msg(0x03, rng.choice([b"1", b"#", b"", b"12", rng.randbytes(rng.randint(0, 300))]))
    if r < 0.83:  # error kind 0xFF
        return "error_kind", msg(0xFF, rng.randbytes(rng.randint(0, 8)))
    if r < 0.90:  # garbage bytes (desynchronises the framing)
        return "garbage", rng.randbytes(rng.randint(1, 200))
    # a header whose length lies (longer than what follows: eats the next messages)
    return "lying_length", msg(rng.choice(AUDIO_KINDS + (0x01, 0x03)), rng.randbytes(rng.randint(0, 50)),
                               length=rng.randint(51, 2000))


def _connect(port: int, timeout: float = 3.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _close(s: socket.socket, rst: bool = False) -> None:
    try:
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    except OSError:
        pass


def _refused(s: socket.socket, wait: float = 0.03) -> bool:
    """Whether the bridge closed ``s`` right after accepting it (busy extension)."""
    time.sleep(wait)
    timeout = s.gettimeout()
    s.setblocking(False)  # with a timeout set, Python would poll for it
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.settimeout(timeout)


def scenario(tally: Tally, rng: random.Random, port: int, messages: int) -> None:
    """One connection's worth of hostile messages."""
    kind = rng.random()
    try:
        s = _connect(port)
    except OSError as e:
        tally.error(e)
        return
    tally.connections += 1
    if _refused(s):
        # the extension still had a connection (ours, closing): the bridge
        # closed this one at once (audiosocket_busy); try again later
        tally.note("busy_at_connect")
        _close(s)
        time.sleep(0.1)
        return
    chunks: list[bytes] = []
    cases: list[str] = []
    if kind < 0.15:  # audio before the UUID, then the UUID, then audio
        for _ in range(rng.randint(1, 20)):
            chunks.append(msg(0x12, rng.randbytes(640)))
            cases.append("audio_before_uuid")
        chunks.append(uuid_msg(rng))
        cases.append("uuid")
    elif kind < 0.22:  # no UUID at all: random messages straight away
        cases.append("no_uuid_stream")
        chunks.append(b"")
    elif kind < 0.30:  # the same UUID on every port (another pair's call id)
        chunks.append(msg(0x01, DUP_UUID))
        cases.append("uuid_shared_across_ports")
    else:
        chunks.append(uuid_msg(rng))
        cases.append("uuid")
    for _ in range(messages):
        case, data = random_message(rng)
        chunks.append(data)
        cases.append(case)
    ending = rng.random()
    if ending < 0.3:
        chunks.append(msg(0x00, b""))
        cases.append("hangup")
    elif ending < 0.6:  # half frame, then close
        chunks.append(msg(0x12, rng.randbytes(rng.randint(0, 639)), length=640))
        cases.append("half_frame")
    elif ending < 0.7:
        chunks.append(b"\x12")  # half a header
        cases.append("half_header")
    stream = b"".join(chunks)
    try:
        pos = 0
        while pos < len(stream):  # random chunk sizes, as TCP may deliver
            n = rng.choice([1, 2, 3, 7, 100, 1000, 4096, 65536])
            s.sendall(stream[pos : pos + n])
            pos += n
        for c in cases:
            tally.add(c)
    except OSError as e:
        # count what went out before the bridge closed on us (roughly)
        tally.error(e)
        frac = pos / max(1, len(stream))
        for c in cases[: int(len(cases) * frac)]:
            tally.add(c)
        tally.note("closed_by_bridge_mid_stream")
    _close(s, rst=rng.random() < 0.3)


def slow_drip(tally: Tally, rng: random.Random, port: int, seconds: float, lock: threading.Lock) -> None:
    """One byte every 100 ms: a UUID message, then an audio message, dripped."""
    try:
        s = _connect(port)
    except OSError as e:
        with lock:
            tally.error(e)
        return
    with lock:
        tally.connections += 1
    data = uuid_msg(rng) + msg(0x12, rng.randbytes(640)) * 4
    end = time.monotonic() + seconds
    i = 0
    try:
        while time.monotonic() < end and i < len(data):
            s.send(data[i : i + 1])
            i += 1
            time.sleep(0.1)
    except OSError as e:
        with lock:
            tally.error(e)
    with lock:
        tally.add("slow_drip_byte", i)
    _close(s)


def run(
    tally: Tally, count: int, ports: list[int], seed: int, connections: int = 10000,
    messages_per_conn: int = 400, drip_conns: int = 6, drip_seconds: float = 8.0, workers: int = 8, max_seconds: float = 900.0,
) -> None:
    """
    ``connections`` open-and-drop connections, ``drip_conns`` slow drips,
    and scenario streams until ``count`` inputs in all.
    """
    t0 = time.monotonic()
    lock = threading.Lock()
    rng0 = random.Random(seed)
    # slow drips: after the streams, one per port (a second one would be busy)
    drips = [threading.Thread(target=slow_drip, args=(tally, random.Random(seed + 100 + i), ports[i % len(ports)],
                                                      drip_seconds, lock), daemon=True)
             for i in range(min(drip_conns, len(ports)))]
    # open and drop
    per_worker = connections // workers

    def open_drop(w: int) -> None:
        rng = random.Random(seed + 1000 + w)
        local = Tally("tmp")
        for i in range(per_worker):
            port = rng.choice(ports)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.settimeout(3.0)
                s.connect(("127.0.0.1", port))
                local.connections += 1
                if rng.random() < 0.2:  # half of a UUID message, then gone
                    s.send(b"\x01\x00\x10" + rng.randbytes(rng.randint(0, 15)))
                    local.add("open_drop_partial_uuid")
                else:
                    local.add("open_drop")
                _close(s, rst=i % 2 == 0)
            except OSError as e:
                local.error(e)
            if i % 50 == 0:
                time.sleep(0.005)  # keep it a burst, not a flood
        with lock:
            tally.connections += local.connections
            for k, v in local.by_case.items():
                tally.add(k, v)
            for k, v in local.errors.items():
                tally.errors[k] = tally.errors.get(k, 0) + v

    threads = [threading.Thread(target=open_drop, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.notes["open_drop_seconds"] = round(time.monotonic() - t0, 1)
    # streams, one port at a time per worker (a port takes one connection at a time)
    stream_lock = threading.Lock()

    def streams(w: int) -> None:
        rng = random.Random(seed + 2000 + w)
        port = ports[w % len(ports)]
        while True:
            with lock:
                if tally.inputs >= count or time.monotonic() - t0 > max_seconds:
                    return
            local = Tally("tmp")
            scenario(local, rng, port, rng.randint(messages_per_conn // 2, messages_per_conn))
            with lock:
                tally.merge(local)
            time.sleep(0.02)

    del stream_lock, rng0
    threads = [threading.Thread(target=streams, args=(w,)) for w in range(len(ports))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(0.5)
    for t in drips:
        t.start()
    for t in drips:
        t.join()
    tally.seconds = time.monotonic() - t0
