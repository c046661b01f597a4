"""
AudioSocket legs on a memory reactor: the leg contract (shared with RTP,
:mod:`tests.transports.contract`), AudioSocket specifics (UUID, hangup,
rates, refusals, errors), and pairs mixing AudioSocket with RTP.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.transports.contract import UUIDS, AudioSocketDriver, LegContract, frame
from xlbridge.audio.frame import Samples
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.events import CallEnded
from xlbridge.interfaces import ILegTransport
from xlbridge.rtp.packet import build, parse
from xlbridge.testing import MemoryNetReactor, MemoryStream, pump_ticks
from xlbridge.transports.audiosocket import DTMF_HISTORY, AudioSocketEndpoint
from xlbridge.transports.audiosocket_codec import HANGUP, Frame, FrameDecoder, encode, uuid_frame


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

    def test_frames_behind_a_backlog_are_dropped_and_counted(self) -> None:
        """
        When more than two messages wait unsent (Asterisk reads too
        slowly), a frame is dropped and counted, not queued behind them;
        once the connection drains, frames flow again.
        """
        self.start_leg("7777")
        self.start_leg("8888")
        backlog = self.bridge.endpoints["8888"].connection.backlog
        pump_ticks(self.reactor, 2)
        self.assertEqual(len(self.frames("8888")), 2)
        backlog.pauseProducing()  # what Twisted does when it holds too much
        pump_ticks(self.reactor, 5)
        self.assertEqual(self.frames("8888"), [])
        self.assertEqual(self.drops("8888"), {"send_backlog": 5})
        backlog.resumeProducing()
        pump_ticks(self.reactor, 3)
        self.assertEqual(len(self.frames("8888")), 3)
        self.assertEqual(self.drops("8888"), {"send_backlog": 5})

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

    def test_busy_refusals_logged_once_then_counted(self) -> None:
        """A peer that keeps connecting to a busy extension: one log line, every refusal counted."""
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.start_leg("7777")
        for _ in range(100):
            self.reactor.connect(7777).send(uuid_frame(UUIDS["8888"]))
            self.reactor.advance(0.001)
        self.assertEqual(self.drops("7777"), {"audiosocket_busy": 100})
        lines = [formatEvent(e) for e in logged if "refused a second" in formatEvent(e)]
        self.assertEqual(lines, ["7777: refused a second AudioSocket connection"])

    def test_error_in_callback_is_contained(self) -> None:
        self.start_leg("7777")
        ep = self.bridge.endpoints["7777"]

        def boom(*a: Any) -> None:
            raise RuntimeError("boom")

        ep.on_audio = boom
        self.send("7777", frame(1))
        # A pipeline bug, not bad AudioSocket data: its own reason (issue 12).
        self.assertEqual(self.drops("7777"), {"pipeline_error": 1})
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


class SharedUUIDTests(SynchronousTestCase):
    def test_one_uuid_on_two_pairs_makes_two_calls(self) -> None:
        """
        Two AudioSocket pairs whose callers announce the same UUID (a
        peer's bug, or a hostile one): two calls, the second id suffixed,
        each relaying its own audio; nothing raises.
        """
        cfg = load_config({"audiosocket": "7000=7000:slin16,7001=7001:slin16,7002=7002:slin16,7003=7003:slin16"})
        reactor = MemoryNetReactor()
        bridge = BridgeService(cfg, reactor)
        bridge.startService()
        self.addCleanup(bridge.stopService)
        streams = {ext: reactor.connect(int(ext)) for ext in ("7000", "7001", "7002", "7003")}
        for s in streams.values():
            s.send(uuid_frame(UUIDS["7777"]))
        ids = sorted(c.call_id for c in bridge.active_calls())
        self.assertEqual(ids, [UUIDS["7777"], UUIDS["7777"] + "-2"])
        for i in range(3):
            streams["7000"].send(encode(0x12, frame(i).astype("<i2").tobytes()))
            streams["7002"].send(encode(0x12, frame(10 + i).astype("<i2").tobytes()))
            pump_ticks(reactor, 1)
        pump_ticks(reactor, 2)
        for ext, first in (("7001", 0), ("7003", 10)):
            heard = [f.payload for f in FrameDecoder().feed(streams[ext].take()) if f.kind == 0x12]
            self.assertEqual([p for p in heard if any(p)], [frame(first + i).astype("<i2").tobytes() for i in range(3)])
        self.assertEqual(sum(sum(bridge.endpoints[e].counters.drops.values()) for e in streams), 0)


# -- one endpoint, on its own ------------------------------------------------------


class EndpointHarness(SynchronousTestCase):
    """
    One AudioSocket endpoint listening on a memory reactor, with the
    reactor as its clock; ``heard`` is what it handed to ``on_audio``, and
    ``fail_on`` makes ``on_audio`` raise for audio whose first sample is in
    it.
    """

    clocked = True

    def setUp(self) -> None:
        self.reactor = MemoryNetReactor()
        self.heard: list[Samples] = []
        self.hangups: list[AudioSocketEndpoint] = []
        self.fail_on: set[int] = set()
        self.ep = AudioSocketEndpoint(
            "7777", self.on_audio, self.hangups.append, clock=self.reactor if self.clocked else None
        )
        self.listening = self.reactor.listenTCP(0, self.ep, interface="127.0.0.1")
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def on_audio(self, ep: Any, samples: Samples) -> None:
        if int(samples[0]) in self.fail_on:
            raise RuntimeError(f"pipeline bug on {int(samples[0])}")
        self.heard.append(samples)

    def connect(self) -> MemoryStream:
        s = self.reactor.connect(self.listening.port)
        s.send(uuid_frame(UUIDS["7777"]))
        return s

    def audio(self, value: int) -> bytes:
        return encode(0x12, np.full(320, value, np.int16).astype("<i2").tobytes())

    def drops(self) -> dict[str, int]:
        d: dict[str, int] = self.ep.counters.snapshot()["drops"]
        return d

    def lines(self, level: LogLevel) -> list[dict[str, Any]]:
        return [e for e in self.logged if e["log_level"] == level]


class EndpointTests(EndpointHarness):
    def test_interface_and_line_open(self) -> None:
        verifyObject(ILegTransport, self.ep)
        self.assertFalse(self.ep.line_open)
        s = self.reactor.connect(self.listening.port)
        self.assertFalse(self.ep.line_open)  # connected, but which call?
        s.send(uuid_frame(UUIDS["7777"]))
        self.assertTrue(self.ep.line_open)
        s.send(HANGUP)
        self.assertFalse(self.ep.line_open)
        self.assertEqual(self.hangups, [self.ep])

    def test_pipeline_error_counted_apart_and_rest_of_chunk_delivered(self) -> None:
        s = self.connect()
        self.fail_on = {2}
        s.send(self.audio(1) + self.audio(2) + self.audio(3) + b"\x42\x00\x02ab")
        self.assertEqual([int(x[0]) for x in self.heard], [1, 3])
        self.assertEqual(self.drops(), {"pipeline_error": 1, "audiosocket_kind": 1})
        self.assertEqual(self.ep.counters.packets_in, 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_repeated_pipeline_errors_logged_once_per_interval(self) -> None:
        s = self.connect()
        self.fail_on = {5}
        for _ in range(500):
            s.send(self.audio(5))
            self.reactor.advance(0.02)
        self.reactor.advance(0.001)
        s.send(self.audio(5))
        self.assertEqual(self.drops(), {"pipeline_error": 501})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        first, second = self.lines(LogLevel.critical)
        self.assertEqual((first["ext"], second["throttled_count"]), ("7777", 499))

    def test_send_failures_counted_and_logged_once_per_interval(self) -> None:
        s = self.connect()

        def broken(data: bytes) -> None:
            raise OSError(32, "Broken pipe")

        s.write = broken  # type: ignore[method-assign]
        for _ in range(50):
            self.ep.send_frame(None)
            self.reactor.advance(0.02)
        self.assertEqual(self.drops(), {"error": 50})
        (warning,) = self.lines(LogLevel.warn)
        self.assertEqual(warning["ext"], "7777")

    def test_callback_errors_at_hangup_are_contained(self) -> None:
        def broken(ep: Any) -> None:
            raise RuntimeError("call layer bug")

        self.ep.on_hangup = broken
        self.connect().send(HANGUP)  # 0x00 from Asterisk
        self.connect().close()  # a closed socket
        self.assertEqual(self.drops(), {"error": 2})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertIsNone(self.ep.connection)

    def test_dtmf_is_bounded_counted_and_never_logged(self) -> None:
        s = self.connect()
        digits = "0123456789*#" * 4  # 48 key presses
        s.send(b"".join(encode(0x03, d.encode()) for d in digits))
        self.assertEqual("".join(self.ep.dtmf), digits[-DTMF_HISTORY:])
        self.assertEqual(self.ep.dtmf_dropped, len(digits) - DTMF_HISTORY)
        self.assertEqual(self.drops(), {})
        text = " ".join(formatEvent(e) + repr(e) for e in self.logged)
        self.assertNotIn("*#", text)

    def test_dtmf_forgotten_when_the_call_ends(self) -> None:
        s = self.connect()
        s.send(encode(0x03, b"7"))
        self.assertEqual(list(self.ep.dtmf), ["7"])
        s.send(HANGUP)
        self.assertEqual(list(self.ep.dtmf), [])


class UnclockedEndpointTests(EndpointHarness):
    """
    Without a clock, failures after the first wait for the end of the
    connection, which reports how many there were.
    """

    clocked = False

    def test_held_back_until_the_connection_ends(self) -> None:
        s = self.connect()
        self.fail_on = {5}
        for _ in range(5):
            s.send(self.audio(5))
            self.reactor.advance(20.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        s.send(HANGUP)
        (summary,) = self.lines(LogLevel.warn)
        self.assertEqual((summary["throttled_count"], summary["ext"]), (4, "7777"))
        self.assertEqual(self.drops(), {"pipeline_error": 5})
