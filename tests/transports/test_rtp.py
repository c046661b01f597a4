"""
RTP legs: the leg contract through a bridge (shared with AudioSocket,
:mod:`tests.transports.contract`), and one :class:`RTPEndpoint` on a memory
reactor: the production send branch (the port's ``socket.sendto``) and its
``transport.write`` fallback, pipeline errors kept apart from bad RTP, and
throttled logging.  The same send branch over a real loopback socket is in
``tests.integration.test_relay_udp``.
"""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.transports.contract import LegContract, RTPDriver, frame
from xlbridge.audio.codecs import get_codec
from xlbridge.audio.frame import Samples
from xlbridge.interfaces import ILegTransport
from xlbridge.rtp.packet import build, parse
from xlbridge.testing import MemoryDatagramPort, MemoryUDPReactor
from xlbridge.transports.rtp import MAX_DATAGRAM, RECV_SIZE, RTPEndpoint

ASTERISK = ("127.0.0.1", 10000)
STRANGER = ("127.0.0.1", 10004)


class RTPLegTests(RTPDriver, LegContract, SynchronousTestCase):
    pass


def slin16(samples: np.ndarray) -> bytes:
    return samples.astype(">i2").tobytes()


class Harness(SynchronousTestCase):
    """
    One slin16 RTP endpoint on a memory UDP port; ``heard`` is what it
    handed to ``on_audio``; ``fail_on`` makes ``on_audio`` raise for audio
    whose first sample is in it.
    """

    datagram_sockets = True

    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor(datagram_sockets=self.datagram_sockets)
        self.heard: list[Samples] = []
        self.fail_on: set[int] = set()
        codec = get_codec("slin16")
        self.ep = RTPEndpoint("7777", codec, codec, self.reactor, self.on_audio)
        self.port: MemoryDatagramPort = self.reactor.listenUDP(0, self.ep, "127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def on_audio(self, ep: Any, samples: Samples) -> None:
        if int(samples[0]) in self.fail_on:
            raise RuntimeError(f"pipeline bug on {int(samples[0])}")
        self.heard.append(samples)

    def deliver(self, seq: int, value: int, src: tuple[str, int] = ASTERISK) -> None:
        self.port.deliver(build(118, seq, seq * 320, 42, slin16(np.full(320, value, np.int16))), src)

    def drops(self) -> dict[str, int]:
        d: dict[str, int] = self.ep.counters.snapshot()["drops"]
        return d

    def lines(self, level: LogLevel) -> list[dict[str, Any]]:
        return [e for e in self.logged if e["log_level"] == level]


class SendPathTests(Harness):
    """
    Production sends with the port's ``socket.sendto``.
    """

    def test_interface(self) -> None:
        verifyObject(ILegTransport, self.ep)
        self.assertFalse(self.ep.line_open)
        self.deliver(1, 5)
        self.assertFalse(self.ep.line_open)  # RTP never holds a call open

    def test_nothing_sent_before_a_source_latched(self) -> None:
        self.assertFalse(self.ep.ready)
        self.ep.send_frame(frame(1))
        self.assertEqual((self.port.sent, self.ep.counters.packets_out), ([], 0))

    def test_frames_go_out_through_the_socket_to_the_latched_source(self) -> None:
        self.deliver(1, 5)
        self.assertTrue(self.ep.ready)
        self.reactor.advance(0.02)
        self.ep.send_frame(frame(1))
        self.ep.send_frame(None)
        first, second = self.port.take()
        self.assertEqual((first.via, second.via), ("sendto", "sendto"))
        self.assertEqual((first.addr, second.addr), (ASTERISK, ASTERISK))
        self.assertEqual(first.time, 0.02)
        p1, p2 = parse(first.data), parse(second.data)
        self.assertEqual((p1.payload_type, p1.payload), (118, slin16(frame(1))))
        self.assertEqual(p2.payload, bytes(640))
        self.assertEqual((p2.sequence - p1.sequence) & 0xFFFF, 1)
        self.assertEqual(p2.timestamp - p1.timestamp, 320)
        self.assertEqual(p1.ssrc, p2.ssrc)
        c = self.ep.counters
        self.assertEqual((c.packets_out, c.bytes_out, c.silence_out), (2, 1280, 1))

    def test_socket_failures_counted_and_logged_once_per_interval(self) -> None:
        self.deliver(1, 5)
        self.port.fail_with = OSError(105, "No buffer space available")
        for _ in range(100):  # two seconds of ticks
            self.ep.send_frame(None)
            self.reactor.advance(0.02)
        self.assertEqual(self.drops(), {"error": 100})
        self.assertEqual(self.ep.counters.packets_out, 0)
        (warning,) = self.lines(LogLevel.warn)
        self.assertEqual((warning["ext"], warning["addr"]), ("7777", ASTERISK))
        self.assertNotIn("throttled_count", warning)
        self.reactor.advance(7.99)
        self.ep.send_frame(None)  # still within ten seconds of the first line
        self.assertEqual(len(self.lines(LogLevel.warn)), 1)
        self.reactor.advance(0.02)
        self.ep.send_frame(None)
        summary = self.lines(LogLevel.warn)[-1]
        self.assertEqual(summary["throttled_count"], 100)
        self.assertAlmostEqual(summary["throttled_seconds"], 10.01)
        self.assertIn("100 more in the last 10 s", self.formatted(summary))
        self.port.fail_with = None
        self.ep.send_frame(None)
        self.assertEqual([s.via for s in self.port.take()], ["sendto"])

    def formatted(self, event: dict[str, Any]) -> str:
        return formatEvent(event)

    def test_closed_port_sends_nothing(self) -> None:
        self.deliver(1, 5)
        self.port.stopListening()
        self.ep.send_frame(frame(1))
        self.assertEqual((self.port.sent, self.drops(), self.ep.counters.packets_out), ([], {}, 0))


class WriteFallbackTests(Harness):
    """
    A transport without a ``socket`` gets the same packets through
    ``transport.write``.
    """

    datagram_sockets = False

    def test_frames_go_out_through_write(self) -> None:
        self.deliver(1, 5)
        self.ep.send_frame(frame(1))
        (sent,) = self.port.take()
        self.assertEqual((sent.via, sent.addr), ("write", ASTERISK))
        self.assertEqual(parse(sent.data).payload, slin16(frame(1)))

    def test_write_failures_counted_and_logged_once(self) -> None:
        self.deliver(1, 5)
        self.port.fail_with = OSError(105, "No buffer space available")
        for _ in range(3):
            self.ep.send_frame(None)
        self.assertEqual(self.drops(), {"error": 3})
        self.assertEqual(len(self.lines(LogLevel.warn)), 1)

    def test_same_packets_either_way(self) -> None:
        """
        The branch taken changes nothing on the wire: same input, same
        datagrams (the sender's random SSRC and first sequence aside).
        """
        other = MemoryUDPReactor()
        codec = get_codec("slin16")
        ep2 = RTPEndpoint("7777", codec, codec, other, lambda e, s: None)
        port2 = other.listenUDP(0, ep2, "127.0.0.1")
        for ep, port in ((self.ep, self.port), (ep2, port2)):
            port.deliver(build(118, 1, 320, 42, slin16(frame(0))), ASTERISK)
            for i in range(5):
                ep.send_frame(frame(i) if i % 2 else None)
        mine = [parse(s.data) for s in self.port.take()]
        theirs = [parse(s.data) for s in port2.take()]
        self.assertEqual(
            [(p.payload_type, p.marker, p.payload) for p in mine],
            [(p.payload_type, p.marker, p.payload) for p in theirs],
        )
        self.assertEqual(self.ep.counters.snapshot(), ep2.counters.snapshot())


class InboundErrorTests(Harness):
    def test_pipeline_error_counted_apart_and_rest_of_batch_delivered(self) -> None:
        self.deliver(1, 1)
        self.deliver(3, 3)
        self.deliver(4, 4)
        self.fail_on = {2}
        self.deliver(2, 2)  # releases 2, 3 and 4 at once; 2 fails
        self.assertEqual([int(s[0]) for s in self.heard], [1, 3, 4])
        self.assertEqual(self.drops(), {"pipeline_error": 1})
        self.assertEqual(self.ep.counters.packets_in, 4)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_parse_failures_keep_their_reasons(self) -> None:
        self.fail_on = {7}
        self.port.deliver(b"\x80\x76", ASTERISK)
        self.port.deliver(build(0, 1, 1, 42, bytes(160)), ASTERISK)
        self.port.deliver(build(118, 1, 1, 42, bytes(641)), ASTERISK)
        self.deliver(2, 7)
        self.deliver(3, 8)
        self.deliver(4, 9, STRANGER)
        self.assertEqual(
            self.drops(),
            {"short": 1, "payload_type": 1, "payload": 1, "pipeline_error": 1, "foreign_source": 1},
        )
        self.assertEqual([int(s[0]) for s in self.heard], [8])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_repeated_pipeline_errors_logged_once_per_interval(self) -> None:
        self.fail_on = {5}
        for seq in range(1, 501):  # ten seconds of packets, every one failing
            self.deliver(seq, 5)
            self.reactor.advance(0.02)
        self.reactor.advance(0.001)  # past ten seconds despite float steps
        self.deliver(501, 5)
        self.assertEqual(self.drops(), {"pipeline_error": 501})
        errors = self.flushLoggedErrors(RuntimeError)
        self.assertEqual(len(errors), 2)
        first, second = self.lines(LogLevel.critical)
        self.assertNotIn("throttled_count", first)
        self.assertEqual(second["throttled_count"], 499)
        self.assertEqual(first["ext"], "7777")

    def test_held_back_errors_reported_when_the_call_ends(self) -> None:
        self.fail_on = {5}
        for seq in range(1, 4):
            self.deliver(seq, 5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.ep.reset()
        (summary,) = self.lines(LogLevel.warn)
        self.assertEqual(summary["throttled_count"], 2)
        # After the summary the next failure is logged at once.
        self.deliver(1, 5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_unexpected_error_counted_as_error_and_contained(self) -> None:
        clock = FlakyClock()
        codec = get_codec("slin16")
        ep = RTPEndpoint("7777", codec, codec, clock, lambda e, s: None)
        reactor = MemoryUDPReactor()
        port = reactor.listenUDP(0, ep, "127.0.0.1")
        clock.fail = True
        port.deliver(build(118, 1, 320, 42, bytes(640)), ASTERISK)
        port.deliver(build(118, 2, 640, 42, bytes(640)), ASTERISK)
        self.assertEqual(ep.counters.snapshot()["drops"], {"error": 1})
        self.assertEqual(ep.counters.packets_in, 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class FlakyClock(Clock):
    """
    A clock whose next reading fails once ``fail`` is set.
    """

    fail = False

    def seconds(self) -> float:
        if self.fail:
            self.fail = False
            raise ZeroDivisionError("broken clock")
        return super().seconds()


class OversizeTests(Harness):
    """
    A datagram longer than any RTP frame is dropped whole, never cut to the
    read size and taken as audio.
    """

    def test_port_reads_whole_datagrams(self) -> None:
        self.assertEqual(self.port.maxPacketSize, RECV_SIZE)

    def test_oversize_dropped_whole(self) -> None:
        # 9,000 bytes of valid-looking slin16: cut to Twisted's default
        # 8,192 it would still parse and be heard as 256 ms of audio.
        big = build(118, 1, 320, 42, slin16(np.full(4494, 7, np.int16)))
        self.assertGreater(len(big), MAX_DATAGRAM)
        self.port.deliver(big, ASTERISK)
        self.assertEqual(self.heard, [])
        self.assertEqual(self.drops(), {"oversize": 1})
        self.deliver(2, 8)
        self.assertEqual([int(s[0]) for s in self.heard], [8])

    def test_largest_accepted(self) -> None:
        payload = slin16(np.full((MAX_DATAGRAM - 12) // 2, 5, np.int16))
        self.port.deliver(build(118, 1, 320, 42, payload), ASTERISK)
        self.assertEqual(self.drops(), {})
        self.assertEqual(len(self.heard), 1)


class RealPortOversizeTests(TestCase):
    """The same over a real loopback UDP port: the kernel's datagram, whole."""

    def test_oversize_over_loopback(self) -> None:
        from twisted.internet import reactor as real

        heard: list[Samples] = []
        codec = get_codec("slin16")
        ep = RTPEndpoint("7777", codec, codec, real, lambda e, s: heard.append(s))
        port = real.listenUDP(0, ep, "127.0.0.1")  # Twisted's default maxPacketSize
        self.addCleanup(port.stopListening)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        dest = ("127.0.0.1", port.getHost().port)
        sock.sendto(build(118, 1, 320, 42, bytes(9000)), dest)
        sock.sendto(build(118, 2, 640, 42, bytes(640)), dest)
        done: Deferred[None] = Deferred()

        def check() -> None:
            if ep.counters.packets_in + sum(ep.counters.snapshot()["drops"].values()) >= 2:
                done.callback(None)
            else:
                real.callLater(0.01, check)

        check()

        def verify(_: object) -> None:
            self.assertEqual(ep.counters.snapshot()["drops"], {"oversize": 1})
            self.assertEqual(len(heard), 1)

        return done.addCallback(verify)
