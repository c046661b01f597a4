"""
Client data frames built without Autobahn's per-message path: the bytes
are what RFC 6455 says (checked against an independent decoder and against
Autobahn's own server parser), and the fast path is taken only when a
direct write cannot overtake or bypass anything Autobahn is doing.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.wsframe import autobahn_can_take, client_binary_frame, send_binary


def decode(frame: bytes) -> tuple[int, bool, bytes]:
    """
    RFC 6455 section 5.2, written out byte by byte: (opcode, fin, payload).
    """
    b0, b1 = frame[0], frame[1]
    assert b1 & 0x80, "client frames are masked"
    n = b1 & 0x7F
    i = 2
    if n == 126:
        (n,) = struct.unpack("!H", frame[2:4])
        i = 4
    elif n == 127:
        (n,) = struct.unpack("!Q", frame[2:10])
        i = 10
    key = frame[i : i + 4]
    data = frame[i + 4 :]
    assert len(data) == n, (len(data), n)
    return b0 & 0x0F, bool(b0 & 0x80), bytes(b ^ key[j % 4] for j, b in enumerate(data))


class FrameBytesTests(SynchronousTestCase):
    def test_length_forms(self) -> None:
        for n, header in ((0, 6), (125, 6), (126, 8), (640, 8), (65535, 8), (65536, 14)):
            frame = client_binary_frame(bytes(range(256)) * (n // 256) + bytes(n % 256), b"\x01\x02\x03\x04")
            self.assertEqual(len(frame), header + n, n)
            opcode, fin, payload = decode(frame)
            self.assertEqual((opcode, fin, len(payload)), (2, True, n))

    def test_mask_applied(self) -> None:
        frame = client_binary_frame(b"\x00" * 6, b"\xaa\xbb\xcc\xdd")
        self.assertEqual(frame, b"\x82\x86\xaa\xbb\xcc\xdd\xaa\xbb\xcc\xdd\xaa\xbb")

    def test_bad_key(self) -> None:
        self.assertRaises(ValueError, client_binary_frame, b"x", b"abc")

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=70000), st.binary(min_size=4, max_size=4))
    def test_round_trip(self, payload: bytes, mask: bytes) -> None:
        self.assertEqual(decode(client_binary_frame(payload, mask)), (2, True, payload))


class _Server(WebSocketServerProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.got: list[tuple[bytes, bool]] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.got.append((payload, isBinary))


class AutobahnParsesTests(SynchronousTestCase):
    """Autobahn's server takes the frames as the messages sent."""

    def test_server_receives_messages(self) -> None:
        factory = WebSocketServerFactory("ws://127.0.0.1:9")
        factory.protocol = _Server
        server = factory.buildProtocol(None)
        assert isinstance(server, _Server)
        transport = StringTransport()
        server.makeConnection(transport)
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        server.dataReceived(
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1:9\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.assertIn(b"101", transport.value().split(b"\r\n")[0])
        messages = [os.urandom(n) for n in (0, 1, 125, 126, 640, 65536)]
        server.dataReceived(b"".join(client_binary_frame(m, os.urandom(4)) for m in messages))
        self.assertEqual(server.got, [(m, True) for m in messages])


class _Proto:
    """What the fast path reads of an Autobahn protocol, and what it calls."""

    def __init__(self) -> None:
        self.state = WebSocketProtocol.STATE_OPEN
        self.send_state = WebSocketProtocol.SEND_STATE_GROUND
        self.send_queue: deque[Any] = deque()
        self._perMessageCompress: Any = None
        self.websocket_version = 13
        self.transport = StringTransport()
        self.slow: list[bytes] = []

    def sendMessage(self, payload: bytes, isBinary: bool) -> None:
        assert isBinary
        self.slow.append(payload)


class FastPathChoiceTests(SynchronousTestCase):
    def test_open_and_idle_writes_directly(self) -> None:
        p = _Proto()
        self.assertTrue(autobahn_can_take(p))
        send_binary(p, b"audio")
        self.assertEqual(p.slow, [])
        self.assertEqual(decode(p.transport.value()), (2, True, b"audio"))

    def test_anything_in_the_way_goes_through_autobahn(self) -> None:
        changes = {
            "closing": ("state", WebSocketProtocol.STATE_CLOSING),
            "queued": ("send_queue", deque([(b"x", True)])),
            "inside a message": ("send_state", WebSocketProtocol.SEND_STATE_INSIDE_MESSAGE),
            "compressing": ("_perMessageCompress", object()),
            "no transport": ("transport", None),
            "hixie": ("websocket_version", 0),
        }
        for why, (name, value) in changes.items():
            p = _Proto()
            setattr(p, name, value)
            self.assertFalse(autobahn_can_take(p), why)
            send_binary(p, b"audio")
            self.assertEqual(p.slow, [b"audio"], why)
            if p.transport is not None:
                self.assertEqual(p.transport.value(), b"", why)
