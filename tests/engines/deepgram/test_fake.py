"""
Tests for the fake server :mod:`tests.fakes.deepgram`: it must fail a
careless client (wrong byte order or rate, bad message sizes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.engines.deepgram.fixtures import KEY, eventually, reactor, silence_ms
from tests.fakes import tonewords
from tests.fakes.deepgram import Recognizer, start_fake_deepgram


class FakeRecognizerTests(SynchronousTestCase):
    """The fake must fail a client that sends the wrong byte order or rate."""

    def audio(self) -> np.ndarray:
        return np.concatenate([tonewords.encode_words("where is the hospital"), silence_ms(400)])

    def transcripts(self, data: bytes) -> list[str]:
        r = Recognizer(endpointing_ms=300)
        return [m["channel"]["alternatives"][0]["transcript"] for m in r.feed(data) + r.finalize()
                if m["type"] == "Results" and m["is_final"] and m["channel"]["alternatives"][0]["transcript"]]

    def test_little_endian_recognised(self) -> None:
        self.assertEqual(self.transcripts(self.audio().astype("<i2").tobytes()), ["where is the hospital"])

    def test_big_endian_not_recognised(self) -> None:
        got = self.transcripts(self.audio().astype(">i2").tobytes())
        self.assertNotIn("where is the hospital", got)

    def test_wrong_rate_not_recognised(self) -> None:
        half = self.audio()[::2]  # 8 kHz audio sent as if 16 kHz
        self.assertNotIn("where is the hospital", self.transcripts(half.astype("<i2").tobytes()))


class RawClientProtocol(WebSocketClientProtocol):  # type: ignore[misc]
    def onOpen(self) -> None:
        for payload in self.factory.payloads:
            self.sendMessage(payload, isBinary=True)


class FakeServerTests(TestCase):
    """The fake flags what a careless client would do."""

    @inlineCallbacks
    def test_violations_recorded(self) -> Any:
        fake = start_fake_deepgram(reactor, api_key=KEY)
        self.addCleanup(fake.stop)
        url = f"{fake.url}/v1/listen?encoding=linear16&sample_rate=16000&channels=1"
        factory = WebSocketClientFactory(url, headers={"Authorization": f"Token {KEY}"}, reactor=reactor)
        factory.protocol = RawClientProtocol
        factory.payloads = [b"\x00" * 320, b"\x00" * 641, b"\x00" * 6400, b""]
        conn = reactor.connectTCP("127.0.0.1", fake.port, factory)
        self.addCleanup(conn.disconnect)
        yield eventually(lambda: bool(fake.connections) and fake.connections[0].closed)
        v = " | ".join(fake.connections[0].violations)
        self.assertIn("10 ms is outside", v)
        self.assertIn("not whole 16-bit samples", v)
        self.assertIn("200 ms is outside", v)
        self.assertIn("empty binary frame", v)
        self.assertEqual(fake.connections[0].close_code, 1000)


class SilentClientProtocol(WebSocketClientProtocol):  # type: ignore[misc]
    """Opens, sends its payloads, records close code and messages."""

    def onOpen(self) -> None:
        self.factory.opened.append(self)
        for payload, binary in self.factory.payloads:
            self.sendMessage(payload, isBinary=binary)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.messages.append(payload)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.closes.append((code, reason))


class FakeServerFaultTests(TestCase):
    """The failure injection the fault runner uses (reliability/faults.py)."""

    def connect(self, fake: Any, payloads: list[tuple[bytes, bool]]) -> Any:
        url = f"{fake.url}/v1/listen?encoding=linear16&sample_rate=16000&channels=1"
        factory = WebSocketClientFactory(url, headers={"Authorization": f"Token {KEY}"}, reactor=reactor)
        factory.protocol = SilentClientProtocol
        factory.payloads, factory.opened, factory.messages, factory.closes = payloads, [], [], []
        conn = reactor.connectTCP("127.0.0.1", fake.port, factory)
        self.addCleanup(conn.disconnect)
        return factory

    @inlineCallbacks
    def test_close_live_1011(self) -> Any:
        """close_live closes every open stream with 1011 NET-0000 mid-stream."""
        fake = start_fake_deepgram(reactor, api_key=KEY)
        self.addCleanup(fake.stop)
        f = self.connect(fake, [(b"\x00" * 640, True)])
        yield eventually(lambda: fake.live == 1)
        self.assertEqual(fake.close_live(), 1)
        yield eventually(lambda: bool(f.closes))
        self.assertEqual(f.closes[0][0], 1011)
        self.assertTrue(f.closes[0][1].startswith("NET-0000"))
        self.assertEqual(fake.connections[0].close_code, 1011)

    @inlineCallbacks
    def test_close_stream_without_metadata(self) -> Any:
        """metadata_at_end = False: CloseStream ends with 1000 but no Metadata message."""
        fake = start_fake_deepgram(reactor, api_key=KEY)
        self.addCleanup(fake.stop)
        fake.metadata_at_end = False
        f = self.connect(fake, [(b"\x00" * 640, True), (b'{"type": "CloseStream"}', False)])
        yield eventually(lambda: bool(f.closes))
        self.assertEqual(f.closes[0][0], 1000)
        self.assertFalse([m for m in f.messages if b'"Metadata"' in m])
        self.assertEqual([m for m in fake.connections[0].sent if m.get("type") == "Metadata"], [])
