"""
WebSocket media surface (chan_websocket, ``--websocket`` ports): hostile
upgrades and frames from a hand-written client (:mod:`reliability.fuzz_wsraw`).

Per connection: an upgrade (sometimes a broken one: wrong version, no key,
odd subprotocols, huge headers), then a MEDIA_START (sometimes none, or a
malformed one), then a stream of messages: TEXT garbage, plain-text and JSON
control events with missing or wrongly typed fields, invalid UTF-8, BINARY
audio of odd sizes or before MEDIA_START, and protocol violations
(unmasked frames, RSV bits, unknown opcodes, oversized or fragmented
control frames, continuation without a start, lying length fields).  The
bridge (Autobahn) closes a connection after a protocol violation, so those
come last in a connection.  Inputs are counted per frame or upgrade written.
"""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from typing import Any, Callable

from reliability.fuzz_common import Tally
from reliability.fuzz_wsraw import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, frame, handshake

EVENTS = ("MEDIA_START", "MEDIA_XOFF", "MEDIA_XON", "QUEUE_DRAINED", "STATUS", "MEDIA_BUFFERING_COMPLETED",
          "MEDIA_MARK_PROCESSED", "DTMF_END", "ERROR")


def media_start(rng: random.Random, good: bool) -> str:
    """A MEDIA_START, plain or JSON; ``good=False`` breaks a field."""
    fields = {"connection_id": "fz" + str(rng.randrange(10**6)), "channel": "WebSocket/fuzz-1" if rng.random() < 0.3 else f"WebSocket/fz-{rng.randrange(10**9)}",
              "format": "slin16", "optimal_frame_size": 640, "ptime": 20}
    if not good:
        key = rng.choice(list(fields))
        fields[key] = rng.choice([None, -1, 0, 2**40, "", "opus", "g722", [], {}, "x" * 300, True])
        if rng.random() < 0.3:
            fields.pop(rng.choice(list(fields)))
    if rng.random() < 0.5:
        return json.dumps({"event": "MEDIA_START", **fields})
    return "MEDIA_START " + " ".join(f"{k}:{v}" for k, v in fields.items())


def text_message(rng: random.Random) -> tuple[str, bytes]:
    """A hostile TEXT payload."""
    r = rng.random()
    if r < 0.25:
        name = rng.choice(EVENTS + ("NOPE", "", "media_start", "X" * 100))
        fields: dict[str, Any] = {rng.choice(["correlation_id", "digit", "queue_length", "xon_level", "error_text", "bogus"]):
                  rng.choice([None, 1, -5, "a b", "", [], {}, "\u00e9", 1.5, True]) for _ in range(rng.randint(0, 4))}
        return "json_event", json.dumps({"event": name, **fields}).encode()
    if r < 0.45:
        name = rng.choice(EVENTS + ("NOPE",))
        words = [rng.choice(["correlation_id:", "digit:12", "queue_length:x", "a", ":::", "k:v:w", "=" * 50])
                 for _ in range(rng.randint(0, 6))]
        return "plain_event", (name + " " + " ".join(words)).encode()
    if r < 0.6:
        return "truncated_json", json.dumps({"event": rng.choice(EVENTS), "correlation_id": "x"})[
            : rng.randint(1, 30)].encode()
    if r < 0.7:
        return "json_not_object", rng.choice([b"[]", b"1", b"null", b"\"MEDIA_START\"", b"{}", b"[" * 5000])
    if r < 0.8:
        return "long_text", rng.choice([b"A" * 129, b"B" * 4000, b"C" * 70000])
    if r < 0.9:
        return "whitespace", rng.choice([b"", b" ", b"\n\t", b"\x00"])
    return "second_media_start", media_start(rng, rng.random() < 0.5).encode()


def violation(rng: random.Random) -> tuple[str, bytes]:
    """A frame that breaks RFC 6455 (the bridge should close, not crash)."""
    r = rng.random()
    if r < 0.15:
        return "unmasked", frame(OP_TEXT, b"MEDIA_XON", mask=False)
    if r < 0.3:
        return "rsv_bits", frame(OP_BINARY, rng.randbytes(10), rsv=rng.randint(1, 7), rng=rng)
    if r < 0.45:
        return "bad_opcode", frame(rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xF]), b"x", rng=rng)
    if r < 0.55:
        return "big_control", frame(OP_PING, rng.randbytes(200), rng=rng)
    if r < 0.65:
        return "fragmented_control", frame(OP_PING, b"p", fin=False, rng=rng)
    if r < 0.75:
        return "continuation_first", frame(OP_CONT, b"abc", rng=rng)
    if r < 0.85:
        return "invalid_utf8", frame(OP_TEXT, b"\xff\xfe\xc3(" + rng.randbytes(5), rng=rng)
    if r < 0.92:
        return "close_bad_code", frame(OP_CLOSE, (rng.choice([0, 999, 1004, 1005, 1006, 5000])).to_bytes(2, "big")
                                       + b"bye", rng=rng)
    return "length_lie", frame(OP_BINARY, rng.randbytes(20), length=rng.choice([2**31, 2**62, 70000]), rng=rng)


def connection(tally: Tally, rng: random.Random, port: int, messages: int) -> None:
    """One connection: upgrade, (MEDIA_START), messages, maybe a violation."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=3.0)
    except OSError as e:
        tally.error(e)
        return
    tally.connections += 1
    try:
        r = rng.random()
        if r < 0.1:  # broken upgrades
            kind = rng.choice(["version", "nokey", "proto", "hugeheader", "path", "plainhttp"])
            tally.add("upgrade_" + kind)
            if kind == "plainhttp":
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                s.settimeout(2.0)
                s.recv(4096)
            else:
                status, _ = handshake(
                    s, "127.0.0.1", path=rng.choice(["/", "/x/../..", "/%00", "/" + "a" * 3000]) if kind == "path" else "/",
                    protocols=rng.choice(["", "other", "media, media", "x" * 500]) if kind == "proto" else "media",
                    extra=[f"X-Fuzz: {'h' * 60000}"] if kind == "hugeheader" else None,
                    key="" if kind == "nokey" else None, version="8" if kind == "version" else "13", timeout=2.0)
                tally.note(f"upgrade_{kind}_status_{status}")
            return
        status, _ = handshake(s, "127.0.0.1", protocols="media" if rng.random() < 0.9 else None, timeout=3.0)
        tally.add("upgrade")
        if status != 101:
            tally.note(f"upgrade_status_{status}")
            return
        out: list[bytes] = []
        cases: list[str] = []
        if rng.random() < 0.15:  # audio before MEDIA_START
            out.append(frame(OP_BINARY, rng.randbytes(640), rng=rng))
            cases.append("audio_before_start")
        if rng.random() < 0.9:
            good = rng.random() < 0.7
            out.append(frame(OP_TEXT, media_start(rng, good).encode(), rng=rng))
            cases.append("media_start" if good else "media_start_bad")
        for _ in range(messages):
            r = rng.random()
            if r < 0.45:
                case, payload = text_message(rng)
                out.append(frame(OP_TEXT, payload, rng=rng))
            elif r < 0.85:
                n = rng.choice([0, 1, 3, 639, 640, 641, 1280, 6400, 65527, 65528])
                case, payload = "binary_audio", rng.randbytes(n)
                out.append(frame(OP_BINARY, payload, rng=rng))
            elif r < 0.92:  # fragmented data message, legal
                a, b = rng.randbytes(300), rng.randbytes(340)
                out.append(frame(OP_BINARY, a, fin=False, rng=rng) + frame(OP_CONT, b, rng=rng))
                case = "fragmented_binary"
            else:
                case = rng.choice(["ping", "pong"])
                out.append(frame(OP_PING if case == "ping" else OP_PONG, rng.randbytes(rng.randint(0, 125)), rng=rng))
            cases.append(case)
        if rng.random() < 0.5:
            case, data = violation(rng)
            out.append(data)
            cases.append("violation_" + case)
        elif rng.random() < 0.5:
            out.append(frame(OP_CLOSE, (1000).to_bytes(2, "big"), rng=rng))
            cases.append("close")
        sent = 0
        try:
            for data, case in zip(out, cases):
                s.sendall(data)
                tally.add(case)
                sent += 1
        except OSError as e:
            tally.error(e)
            tally.note("closed_by_bridge_mid_stream")
    finally:
        try:
            s.close()
        except OSError:
            pass


def huge_messages(tally: Tally, port: int, sizes_mb: tuple[int, ...] = (16, 64)) -> None:
    """
    Binary messages of many MB after a good MEDIA_START, to see whether the
    bridge bounds a message's size or buffers it whole (RSS is sampled by
    the caller).
    """
    rng = random.Random(7)
    for mb in sizes_mb:
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5.0)
            status, _ = handshake(s, "127.0.0.1", protocols="media")
            if status != 101:
                tally.note(f"huge_upgrade_status_{status}")
                s.close()
                continue
            s.sendall(frame(OP_TEXT, media_start(rng, True).encode(), rng=rng))
            n = mb << 20
            key = b"\x00\x00\x00\x00"  # a zero mask: the payload goes as is
            import struct as _st
            s.sendall(_st.pack("!BBQ", 0x82, 0x80 | 127, n) + key)
            chunk = bytes(1 << 20)
            for _ in range(mb):
                s.sendall(chunk)
            tally.add(f"huge_binary_{mb}MB")
            time.sleep(1.0)
            s.close()
        except OSError as e:
            tally.error(e)
            tally.note(f"huge_{mb}MB_closed_by_bridge")


def run(tally: Tally, count: int, ports: list[int], seed: int, messages_per_conn: int = 150,
        sample: Callable[[str], None] = lambda label: None, max_seconds: float = 900.0) -> None:
    """Connections on every port (one at a time per port, as the bridge allows) until ``count`` inputs."""
    t0 = time.monotonic()
    lock = threading.Lock()

    def worker(w: int) -> None:
        rng = random.Random(seed + w)
        port = ports[w % len(ports)]
        while True:
            with lock:
                if tally.inputs >= count or time.monotonic() - t0 > max_seconds:
                    return
            local = Tally("tmp")
            connection(local, rng, port, rng.randint(1, messages_per_conn))
            with lock:
                tally.merge(local)
            time.sleep(0.005)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(len(ports))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.seconds = time.monotonic() - t0
