"""
AudioSocket legs: the sans-I/O framer, and the bridge on a memory reactor.

The leg contract (relay, lifecycle, malformed input) is one set of test
bodies, :class:`LegContract`, run against RTP and AudioSocket by mixing it
with a driver that speaks each wire format.
"""

from __future__ import annotations

import uuid
from typing import Any

import attrs
import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.events import CallEnded, CallStarted, DropReason, Event
from xlbridge.rtp.packet import build, parse
from xlbridge.testing import MemoryNetReactor, MemoryStream, pump_ticks
from xlbridge.transports.audiosocket_codec import (
    HANGUP,
    Frame,
    FrameDecoder,
    Malformed,
    encode,
    format_uuid,
    uuid_frame,
)

UUIDS = {
    "7777": "0a1b2c3d-0000-4000-8000-00000000a777",
    "8888": "0a1b2c3d-0000-4000-8000-00000000b888",
}


def frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 20000, 320).astype(np.int16)


# -- the framer -----------------------------------------------------------------


class FrameDecoderTests(SynchronousTestCase):
    def test_header_is_big_endian_payload_little_endian(self) -> None:
        samples = np.array([1, -2, 0x1234], dtype=np.int16)
        data = encode(0x12, samples.astype("<i2").tobytes())
        self.assertEqual(data[:3], b"\x12\x00\x06")
        self.assertEqual(data[3:5], b"\x01\x00")
        self.assertEqual(FrameDecoder().feed(data), [Frame(0x12, data[3:])])

    def test_any_split_gives_the_same_frames(self) -> None:
        stream = uuid_frame(UUIDS["7777"]) + encode(0x10, bytes(320)) + encode(0x03, b"5") + HANGUP
        whole = FrameDecoder().feed(stream)
        self.assertEqual([t.kind for t in whole], [0x01, 0x10, 0x03, 0x00])  # type: ignore[union-attr]
        for size in (1, 2, 3, 7, 100):
            d = FrameDecoder()
            got: list[Any] = []
            for i in range(0, len(stream), size):
                got.extend(d.feed(stream[i : i + size]))
            self.assertEqual(got, whole)
            self.assertEqual(d.pending, 0)

    def test_uuid_is_formatted_8_4_4_4_12(self) -> None:
        (f,) = FrameDecoder().feed(uuid_frame(UUIDS["8888"]))
        assert isinstance(f, Frame)
        self.assertEqual(format_uuid(f.payload), UUIDS["8888"])

    def test_rate_from_kind(self) -> None:
        rates = [Frame(k, b"").rate for k in (0x10, 0x12, 0x15, 0x18, 0x01)]
        self.assertEqual(rates, [8000, 16000, 44100, 192000, None])

    def test_unknown_kind_and_absurd_length_skipped_without_buffering(self) -> None:
        d = FrameDecoder()
        # 0x10 (8 kHz) accepts at most 1 s = 16000 bytes.
        out = d.feed(b"\x10\xff\xff" + bytes(1000))
        self.assertEqual(out, [])
        self.assertEqual(d.pending, 65535 - 1000)
        out = d.feed(bytes(65535 - 1000) + b"\x42\x00\x02ab" + encode(0x12, b"\x01\x00"))
        self.assertEqual(
            out,
            [
                Malformed(DropReason.AUDIOSOCKET_LENGTH, 0x10, 65535),
                Malformed(DropReason.AUDIOSOCKET_KIND, 0x42, 2),
                Frame(0x12, b"\x01\x00"),
            ],
        )

    def test_bad_sizes_per_kind(self) -> None:
        out = FrameDecoder().feed(encode(0x12) + encode(0x12, b"abc") + encode(0x01, b"x" * 8))
        self.assertEqual([t.reason for t in out], [DropReason.AUDIOSOCKET_LENGTH] * 3)  # type: ignore[union-attr]

    def test_half_frame_is_pending(self) -> None:
        d = FrameDecoder()
        self.assertEqual(d.feed(encode(0x12, bytes(640))[:100]), [])
        self.assertEqual(d.pending, 100)


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


class RTPLegTests(RTPDriver, LegContract, SynchronousTestCase):
    pass


class AudioSocketLegTests(AudioSocketDriver, LegContract, SynchronousTestCase):
    pass


# -- AudioSocket specifics -----------------------------------------------------------


class AudioSocketTests(AudioSocketDriver, SynchronousTestCase):
    def setUp(self) -> None:
        LegContract.setUp(self)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.bridge.running:
            self.bridge.stopService()

    def drops(self, ext: str) -> dict[str, int]:
        d: dict[str, int] = self.bridge.endpoints[ext].counters.snapshot()["drops"]
        return d

    def test_call_starts_with_the_first_leg_on_the_line(self) -> None:
        """
        The UUID starts the call, before any audio, and names it.
        """
        self.start_leg("8888")
        (call,) = self.bridge.active_calls()
        self.assertEqual(call.call_id, UUIDS["8888"])
        self.start_leg("7777")
        self.assertEqual(self.bridge.active_calls(), [call])
        described = self.bridge.endpoints["8888"].describe()
        self.assertEqual(described["call_id"], UUIDS["8888"])
        self.assertEqual(described["local"], "127.0.0.1:8888")

    def test_peer_hangup_ends_call_at_once_and_hangs_up_partner(self) -> None:
        self.start_leg("7777")
        self.start_leg("8888")
        self.send("7777", frame(1))
        self.send("8888", frame(2))
        pump_ticks(self.reactor, 2)
        self.streams["7777"].send(HANGUP)
        ended = [e for e in self.events if isinstance(e, CallEnded)]
        self.assertEqual([(e.reason, e.call_id) for e in ended], [("hangup", UUIDS["7777"])])
        self.assertEqual(self.bridge.active_calls(), [])
        # We close the hanging-up side, and send 0x00 then close to the other.
        self.reactor.advance(0)
        self.assertTrue(self.streams["7777"].closed)
        self.assertTrue(self.streams["8888"].closed)
        self.assertEqual(self.frames("8888")[-1], Frame(0x00, b""))
        self.assertNotIn(0x00, {f.kind for f in self.frames("7777")})

    def test_silent_callers_are_answered_and_kept(self) -> None:
        """
        Asterisk sends nothing while a caller is silent, and AudioSocket()
        hangs up after 2 s without traffic: replies start with the UUID, in
        8 kHz (0x10) until the leg's own audio names its rate, and silence
        never ends the call.
        """
        self.start_leg("7777")
        self.start_leg("8888")
        pump_ticks(self.reactor, 5)
        for ext in ("7777", "8888"):
            self.assertEqual([(f.kind, len(f.payload)) for f in self.frames(ext)], [(0x10, 320)] * 5)
        self.send("7777", frame(1))
        pump_ticks(self.reactor, 2)
        self.assertEqual({f.kind for f in self.frames("7777")}, {0x12})
        self.assertEqual({f.kind for f in self.frames("8888")}, {0x10})
        pump_ticks(self.reactor, 30 * 50)
        self.assertEqual([e for e in self.events if isinstance(e, CallEnded)], [])
        self.assertEqual(len(self.frames("8888")), 30 * 50)

    def test_bridge_side_end_sends_hangup_and_closes(self) -> None:
        self.start_leg("7777")
        self.start_leg("8888")
        self.send("7777", frame(1))
        self.bridge.stopService()
        self.assertEqual([e.reason for e in self.events if isinstance(e, CallEnded)], ["shutdown"])
        self.reactor.advance(0)
        for ext in ("7777", "8888"):
            self.assertEqual(self.frames(ext)[-1], Frame(0x00, b""))
            self.assertTrue(self.streams[ext].closed)

    def test_socket_close_ends_call(self) -> None:
        self.start_leg("7777")
        self.start_leg("8888")
        self.send("7777", frame(1))
        self.streams["8888"].close()
        self.assertEqual([e.reason for e in self.events if isinstance(e, CallEnded)], ["hangup"])

    def test_8khz_app_leg_is_answered_in_8khz(self) -> None:
        self.kind = 0x10
        self.start_leg("7777")
        self.start_leg("8888")
        tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(160 * 30) / 8000)).astype(np.int16)
        for i in range(30):
            self.send("7777", tone[i * 160 : (i + 1) * 160])
            self.send("8888", tone[i * 160 : (i + 1) * 160])
            pump_ticks(self.reactor, 1)
        frames = self.frames("8888")
        self.assertEqual({f.kind for f in frames}, {0x10})
        self.assertEqual({len(f.payload) for f in frames}, {320})
        heard = np.concatenate([np.frombuffer(f.payload, "<i2") for f in frames]).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(heard[-2400:]))
        self.assertAlmostEqual(float(np.fft.rfftfreq(2400, 1 / 8000)[spectrum.argmax()]), 440, delta=5)
        self.assertEqual(self.bridge.endpoints["8888"].counters.packets_in, 30)

    def test_other_rates_answered_in_kind(self) -> None:
        self.kind = 0x15  # 44.1 kHz: 882 samples per 20 ms
        self.start_leg("7777")
        self.start_leg("8888")
        for _ in range(3):
            self.send("7777", np.zeros(882, dtype=np.int16) + 100)
            self.send("8888", np.zeros(882, dtype=np.int16) + 100)
            pump_ticks(self.reactor, 1)
        frames = self.frames("7777")
        self.assertEqual({(f.kind, len(f.payload)) for f in frames}, {(0x15, 1764)})

    def test_audio_before_uuid_counted(self) -> None:
        s = self.reactor.connect(7777)
        s.send(encode(0x12, bytes(640)))
        self.assertEqual(self.drops("7777"), {"audiosocket_no_uuid": 1})
        self.assertEqual(self.bridge.active_calls(), [])

    def test_half_frame_at_close_counted(self) -> None:
        self.start_leg("7777")
        self.streams["7777"].send(encode(0x12, bytes(640))[:50])
        self.streams["7777"].close()
        self.assertEqual(self.drops("7777"), {"audiosocket_truncated": 1})

    def test_second_connection_refused_while_busy(self) -> None:
        self.start_leg("7777")
        other = self.reactor.connect(7777)
        other.send(uuid_frame(UUIDS["8888"]) + encode(0x12, frame(1).astype("<i2").tobytes()))
        self.reactor.advance(0)
        self.assertTrue(other.closed)
        self.assertEqual(self.drops("7777"), {"audiosocket_busy": 1})
        self.assertEqual([c.call_id for c in self.bridge.active_calls()], [UUIDS["7777"]])
        self.assertFalse(self.streams["7777"].closed)

    def test_error_in_callback_is_contained(self) -> None:
        self.start_leg("7777")
        ep = self.bridge.endpoints["7777"]

        def boom(*a: Any) -> None:
            raise RuntimeError("boom")

        ep.on_audio = boom
        self.send("7777", frame(1))
        self.assertEqual(self.drops("7777"), {"error": 1})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MixedPairTests(SynchronousTestCase):
    """
    One AudioSocket leg paired with one RTP leg (an embedder's config).
    """

    def test_relay_between_audiosocket_and_rtp(self) -> None:
        cfg = load_config({"ports": "7777,8888", "reply-codec": "slin16"})
        pair = attrs.evolve(cfg.pairs[0], transports=("audiosocket", "rtp"))
        reactor = MemoryNetReactor()
        bridge = BridgeService(attrs.evolve(cfg, pairs=(pair,)), reactor)
        bridge.startService()
        self.addCleanup(bridge.stopService)
        s = reactor.connect(7777)
        s.send(uuid_frame(UUIDS["7777"]))
        src = ("127.0.0.1", 10000)
        for i in range(5):
            s.send(encode(0x12, frame(i).astype("<i2").tobytes()))
            reactor.udp[8888].deliver(build(118, i, i * 320, 7, frame(50 + i).astype(">i2").tobytes()), src)
            pump_ticks(reactor, 1)
        pump_ticks(reactor, 2)
        to_rtp = [parse(x.data).payload for x in reactor.udp[8888].take()]
        to_as = [f.payload for f in FrameDecoder().feed(s.take())]  # type: ignore[union-attr]
        self.assertEqual([p for p in to_rtp if any(p)], [frame(i).astype(">i2").tobytes() for i in range(5)])
        self.assertEqual([p for p in to_as if any(p)], [frame(50 + i).astype("<i2").tobytes() for i in range(5)])
        self.assertEqual(bridge.active_calls()[0].call_id, UUIDS["7777"])

    def test_rtp_first_takes_the_connected_partners_uuid(self) -> None:
        cfg = load_config({"ports": "7777,8888", "reply-codec": "slin16"})
        pair = attrs.evolve(cfg.pairs[0], transports=("audiosocket", "rtp"))
        reactor = MemoryNetReactor()
        bridge = BridgeService(attrs.evolve(cfg, pairs=(pair,)), reactor)
        bridge.startService()
        self.addCleanup(bridge.stopService)
        reactor.connect(7777).send(uuid_frame(UUIDS["7777"]))
        reactor.udp[8888].deliver(build(118, 1, 1, 7, bytes(640)), ("127.0.0.1", 10000))
        self.assertEqual(bridge.active_calls()[0].call_id, UUIDS["7777"])
