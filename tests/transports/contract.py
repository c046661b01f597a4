"""
The leg contract: what every leg transport must do, whatever its wire
format (relay, pacing, lifecycle, malformed input, shutdown).

:class:`LegContract` holds the test bodies; it runs against RTP
(``tests.transports.test_rtp.RTPLegTests``), AudioSocket
(``tests.transports.test_audiosocket.AudioSocketLegTests``) and WebSocket
media (``tests.transports.test_websocket.WebSocketLegTests``) by mixing it
with a driver that speaks each wire format to a bridge on a memory reactor.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from tests.fakes.chan_websocket import Channel, FakeChanWebSocket
from tests.transports import wsmemory
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


class LinkedReactor(MemoryNetReactor):
    """
    A memory reactor that also delivers its WebSocket links' bytes after
    every step of the clock (the network is instant, time is the test's).
    """

    def __init__(self) -> None:
        super().__init__()
        self.links: list[wsmemory.Link] = []
        self._flushing = False

    def advance(self, amount: float) -> None:
        super().advance(amount)
        self.flush_links()

    def flush_links(self) -> None:
        if self._flushing:
            return  # the pump advances the clock by 0 itself
        self._flushing = True
        try:
            for link in list(self.links):
                link.flush()
        finally:
            self._flushing = False


class WebSocketDriver:
    """
    Plays Asterisk's chan_websocket dialling each extension's port
    (``Dial(WebSocket/<client id>/c(slin16))``), with the protocol-faithful
    fake: Asterisk plays out what it gets one frame per 20 ms, and that is
    what the caller heard.
    """

    settings: dict[str, Any] = {"websocket": "7777,8888"}
    transport_kind = "websocket"
    reactor: LinkedReactor
    reactor_factory = LinkedReactor
    #: a call lasts while the connection does, silent or not
    line_holds_call = True
    #: Asterisk keeps time: live audio goes up to 40 ms ahead
    frames_ahead = 2
    channel_ids = {"7777": "1796623357.1", "8888": "1796623357.2"}

    def start_leg(self, ext: str) -> None:
        self.fake: FakeChanWebSocket = getattr(self, "fake", None) or FakeChanWebSocket(self.reactor)
        self.channels: dict[str, Channel] = getattr(self, "channels", {})
        self.taken: dict[str, int] = getattr(self, "taken", {})
        channel = self.fake.add_channel(connection_id=f"media-{ext}")
        channel.channel_id = self.channel_ids[ext]
        factory = self.fake.client_factory(f"ws://127.0.0.1:{ext}/media", channel, protocols=["media"],
                                           reactor=self.reactor)
        link = wsmemory.connect(self.reactor.tcp[int(ext)].factory, factory, self.reactor)
        self.reactor.links.append(link)
        self.channels[ext], self.taken[ext] = channel, 0
        link.flush()

    def send(self, ext: str, samples: np.ndarray) -> None:
        self.channels[ext].send_audio(samples.astype("<i2").tobytes())
        self.reactor.flush_links()

    def hang_up(self, ext: str) -> None:
        self.channels[ext].hang_up()
        self.reactor.flush_links()

    def heard(self, ext: str) -> list[np.ndarray]:
        """
        What the caller heard, and what Asterisk holds queued to play next
        (it plays it whatever we do now): the same time line as the paced
        transports' sent frames.
        """
        self.reactor.flush_links()
        channel = self.channels[ext]
        timeline = [f for _, f in channel.heard] + [f for f in channel.queue if isinstance(f, bytes)]
        frames = timeline[self.taken[ext]:]
        self.taken[ext] = len(timeline)
        return [np.frombuffer(f, "<i2").astype(np.int16) for f in frames]

    def garbage(self, ext: str) -> dict[str, int]:
        proto = self.channels[ext].proto
        assert proto is not None
        proto.sendMessage(b"{not json", isBinary=False)
        proto.sendMessage(b"\x01\x02\x03", isBinary=True)  # not whole samples
        self.reactor.flush_links()
        return {"websocket_malformed": 1, "websocket_format": 1}

    def expected_id(self, call_id: str) -> None:
        assert call_id in self.channel_ids.values(), call_id


# -- the contract ------------------------------------------------------------------


class LegContract:
    """
    What every leg transport must do, whatever its wire format.
    """

    settings: dict[str, Any]
    transport_kind: str

    def setUp(self) -> None:
        self.reactor = getattr(self, "reactor_factory", MemoryNetReactor)()
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
            # A transport whose peer keeps time may be a frame or two ahead
            # (the shallow lookahead), never more.
            ahead = getattr(t, "frames_ahead", 0)
            t.assertIn(len(got), range(25, 25 + ahead + 1))
            t.assertEqual({len(f) for f in got}, {320})
            t.assertEqual(sum(1 for f in got if f.any()), 1)

    def test_partner_joining_late_hears_no_backlog(self) -> None:
        """
        7777 talks for half a second before 8888 is there, then goes on:
        8888 hears 7777's current frame at once, not what piled up while
        nobody could hear it (that would stand as delay for the call).
        """
        t: Any = self
        t.start_leg("7777")
        frames = [frame(i) for i in range(60)]
        for f in frames[:25]:
            t.send("7777", f)
            pump_ticks(self.reactor, 1)
        t.start_leg("8888")
        quiet = np.zeros(320, np.int16)
        for f in frames[25:]:
            t.send("7777", f)
            t.send("8888", quiet)  # a phone sends all along (RTP latches on it)
            pump_ticks(self.reactor, 1)
        pump_ticks(self.reactor, 2)
        heard = self.speech("8888")
        sent = [f.tobytes() for f in frames]
        t.assertTrue(heard)
        # Heard in order, from where 7777 was when 8888 joined (a frame of
        # slack for the tick the connection came in).
        t.assertIn(sent.index(heard[0]), (24, 25))
        t.assertEqual(heard, sent[sent.index(heard[0]):])

    def test_standing_backlog_is_cut(self) -> None:
        """
        A burst (frames held up on the network, then delivered at once)
        leaves a backlog that one-in-one-out pacing never drains: within a
        second it is cut back, so 8888 hears 7777 live again.
        """
        t: Any = self
        self.both()
        quiet = np.zeros(320, np.int16)
        t.send("8888", quiet)
        frames = [frame(i) for i in range(120)]
        for f in frames[:10]:
            t.send("7777", f)
        for f in frames[10:]:
            pump_ticks(self.reactor, 1)
            t.send("7777", f)
            t.send("8888", quiet)
        pump_ticks(self.reactor, 1)
        heard = self.speech("8888")
        sent = [f.tobytes() for f in frames]
        # The last frames heard are the last ones sent: the lag is gone.
        t.assertEqual(heard[-3:], sent[-3:])
        t.assertGreater(len(sent) - len(heard), 5)

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
