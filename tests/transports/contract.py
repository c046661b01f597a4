"""
The leg contract: what every leg transport must do, whatever its wire
format (relay, pacing, lifecycle, malformed input, shutdown).

:class:`LegContract` holds the test bodies; it runs against RTP
(``tests.transports.test_rtp.RTPLegTests``) and AudioSocket
(``tests.transports.test_audiosocket.AudioSocketLegTests``) by mixing it
with a driver that speaks each wire format to a bridge on a memory reactor.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.events import CallEnded, CallStarted, Event
from xlbridge.rtp.packet import build, parse
from xlbridge.testing import MemoryNetReactor, MemoryStream, pump_ticks
from xlbridge.transports.audiosocket_codec import HANGUP, Frame, FrameDecoder, encode, uuid_frame

UUIDS = {
    "7777": "0a1b2c3d-0000-4000-8000-00000000a777",
    "8888": "0a1b2c3d-0000-4000-8000-00000000b888",
}


def frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 20000, 320).astype(np.int16)


# -- drivers: one per wire format ------------------------------------------------


class RTPDriver:
    """
    Plays Asterisk's two ExternalMedia RTP legs.
    """

    settings: dict[str, Any] = {"ports": "7777,8888", "reply-codec": "slin16"}
    transport_kind = "rtp"
    reactor: MemoryNetReactor
    #: RTP has no connection: a call ends after call-timeout without audio
    line_holds_call = False

    def start_leg(self, ext: str) -> None:
        self.seq = getattr(self, "seq", {})
        self.seq[ext] = 1000

    def send(self, ext: str, samples: np.ndarray) -> None:
        seq = self.seq[ext]
        self.seq[ext] = seq + 1
        src = ("127.0.0.1", 10000 + int(ext) % 10)
        self.reactor.udp[int(ext)].deliver(build(118, seq, seq * 320, 42, samples.astype(">i2").tobytes()), src)

    def heard(self, ext: str) -> list[np.ndarray]:
        return [np.frombuffer(parse(s.data).payload, ">i2").astype(np.int16) for s in self.reactor.udp[int(ext)].take()]

    def garbage(self, ext: str) -> dict[str, int]:
        src = ("127.0.0.1", 10000 + int(ext) % 10)
        port = self.reactor.udp[int(ext)]
        port.deliver(b"\x80\x76", src)
        port.deliver(build(0, 1, 1, 42, bytes(160)), src)
        return {"short": 1, "payload_type": 1}

    def expected_id(self, call_id: str) -> None:
        uuid.UUID(call_id)


class AudioSocketDriver:
    """
    Plays Asterisk's AudioSocket channel (ExternalMedia format=slin16: 0x12).
    """

    settings: dict[str, Any] = {"audiosocket": "7777,8888"}
    transport_kind = "audiosocket"
    kind = 0x12
    reactor: MemoryNetReactor
    #: a call lasts while the connection does, silent or not
    line_holds_call = True

    def hang_up(self, ext: str) -> None:
        self.streams[ext].send(HANGUP)

    def start_leg(self, ext: str) -> None:
        self.streams: dict[str, MemoryStream] = getattr(self, "streams", {})
        self.streams[ext] = s = self.reactor.connect(int(ext))
        s.send(uuid_frame(UUIDS[ext]))

    def send(self, ext: str, samples: np.ndarray) -> None:
        self.streams[ext].send(encode(self.kind, samples.astype("<i2").tobytes()))

    def frames(self, ext: str) -> list[Any]:
        return FrameDecoder().feed(self.streams[ext].take())

    def heard(self, ext: str) -> list[np.ndarray]:
        out = []
        for f in self.frames(ext):
            assert isinstance(f, Frame) and f.kind in (self.kind, 0x00, 0x10), f
            if f.kind == 0x00 or (f.kind == 0x10 and self.kind != 0x10):
                continue  # hangup; 8 kHz replies before this leg's own audio
            out.append(np.frombuffer(f.payload, "<i2").astype(np.int16))
        return out

    def garbage(self, ext: str) -> dict[str, int]:
        s = self.streams[ext]
        s.send(b"\x42\x00\x03abc")  # unknown kind
        s.send(b"\x12\xff\xff" + bytes(65535))  # over 1 s of slin16
        s.send(b"\x12\x00\x03abc")  # odd audio length
        return {"audiosocket_kind": 1, "audiosocket_length": 2}

    def expected_id(self, call_id: str) -> None:
        assert call_id in UUIDS.values(), call_id


# -- the contract ------------------------------------------------------------------


class LegContract:
    """
    What every leg transport must do, whatever its wire format.
    """

    settings: dict[str, Any]
    transport_kind: str

    def setUp(self) -> None:
        self.reactor = MemoryNetReactor()
        self.events: list[Event] = []
        self.bridge = BridgeService(load_config(self.settings), self.reactor, observers=[self.events.append])
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(self.stop)  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self.bridge.running:
            self.bridge.stopService()

    def both(self) -> None:
        self.start_leg("7777")  # type: ignore[attr-defined]
        self.start_leg("8888")  # type: ignore[attr-defined]

    def speech(self, ext: str) -> list[bytes]:
        return [f.tobytes() for f in self.heard(ext) if f.any()]  # type: ignore[attr-defined]

    def test_endpoint_kind(self) -> None:
        t: Any = self
        t.assertEqual({ep.kind for ep in self.bridge.endpoints.values()}, {self.transport_kind})

    def test_relay_is_bit_exact_both_ways(self) -> None:
        t: Any = self
        self.both()
        fa = [frame(i) for i in range(20)]
        fb = [frame(100 + i) for i in range(20)]
        for a, b in zip(fa, fb):
            t.send("7777", a)
            t.send("8888", b)
            pump_ticks(self.reactor, 1)
        pump_ticks(self.reactor, 3)
        t.assertEqual(self.speech("7777"), [f.tobytes() for f in fb])
        t.assertEqual(self.speech("8888"), [f.tobytes() for f in fa])

    def test_one_frame_per_leg_per_tick(self) -> None:
        t: Any = self
        self.both()
        t.send("7777", frame(1))
        t.send("8888", frame(2))
        pump_ticks(self.reactor, 25)
        for ext in ("7777", "8888"):
            got = t.heard(ext)
            t.assertEqual([len(f) for f in got], [320] * 25)
            t.assertEqual(sum(1 for f in got if f.any()), 1)

    def test_lifecycle_start_inactivity_next_call_fresh(self) -> None:
        t: Any = self
        self.both()
        t.send("7777", frame(1))
        started = [e for e in self.events if isinstance(e, CallStarted)]
        t.assertEqual(len(started), 1)
        t.expected_id(started[0].call_id)
        pump_ticks(self.reactor, 10 * 50 + 5)
        ended = [e for e in self.events if isinstance(e, CallEnded)]
        if t.line_holds_call:
            # The connection is the call: silence does not end it, hangup does.
            t.assertEqual(ended, [])
            t.assertEqual(len(self.bridge.active_calls()), 1)
            t.hang_up("7777")
            t.hang_up("8888")
            ended = [e for e in self.events if isinstance(e, CallEnded)]
            t.assertEqual([e.reason for e in ended], ["hangup"])
        else:
            t.assertEqual([e.reason for e in ended], ["inactivity"])
        t.assertEqual(self.bridge.active_calls(), [])
        t.assertEqual(len(self.bridge.egress), 0)
        t.heard("7777")
        t.heard("8888")
        # The next call starts afresh: the legs re-latch / reconnect.
        self.both()
        t.send("8888", frame(3))
        t.send("7777", frame(4))
        pump_ticks(self.reactor, 3)
        t.assertEqual(self.speech("7777"), [frame(3).tobytes()])
        t.assertEqual(len([e for e in self.events if isinstance(e, CallStarted)]), 2)

    def test_malformed_input_counted_and_nothing_raised(self) -> None:
        t: Any = self
        self.both()
        t.send("8888", frame(0))
        t.send("7777", frame(1))
        expected = t.garbage("7777")
        t.send("7777", frame(2))
        pump_ticks(self.reactor, 3)
        drops = self.bridge.endpoints["7777"].counters.snapshot()["drops"]
        t.assertEqual(drops, expected)
        t.assertEqual(self.speech("8888"), [frame(1).tobytes(), frame(2).tobytes()])

    def test_shutdown_ends_call(self) -> None:
        t: Any = self
        self.both()
        t.send("7777", frame(1))
        self.bridge.stopService()
        t.assertEqual([e.reason for e in self.events if isinstance(e, CallEnded)], ["shutdown"])
        t.assertEqual({lst.port for lst in self.bridge.listeners.values()}, {None})
