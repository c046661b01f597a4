"""
WebSocket legs (chan_websocket) against the fake Asterisk of
:mod:`tests.fakes.chan_websocket`, in memory on a test clock: what the
caller hears (lookahead, filler, order, byte order), flow control, flush,
marks, malformed input, PING/PONG and hangup both ways, in both directions
of connection and both control formats.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from tests.fakes.chan_websocket import Channel, FakeChanWebSocket
from tests.transports.contract import LegContract, WebSocketDriver
from tests.transports.wsmemory import Link, connect
from xlbridge.audio import g711
from xlbridge.audio.frame import Samples
from xlbridge.audio.buffer import OutboundBuffer
from xlbridge.audio.mix import ComfortNoise
from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout
from xlbridge.interfaces import ILegTransport, IPeerPacedTransport
from xlbridge.transports.websocket import WebSocketEndpoint


def frame(seed: int) -> Samples:
    return np.random.default_rng(seed).integers(1, 20000, 320).astype(np.int16)


class Script:
    """
    A caller's output that plays given frames in order (translated speech
    already synthesised), then nothing: an ``OutputSource``.
    """

    dropped_samples = 0
    trimmed_samples = 0

    def __init__(self, frames: list[Samples]) -> None:
        self.frames = list(frames)

    @property
    def depth_ms(self) -> float:
        return 20.0 * len(self.frames)

    @property
    def ahead_samples(self) -> int:
        return 320 * len(self.frames)

    def write(self, samples: Samples) -> int:
        self.frames.extend(samples[i:i + 320] for i in range(0, len(samples), 320))
        return 0

    def read_frame(self) -> Optional[Samples]:
        return self.frames.pop(0) if self.frames else None

    def idle(self) -> None:
        pass

    def clear(self) -> None:
        self.frames.clear()


def speech(frames: list[Samples], filler: Any = None) -> Playout:
    return Playout(Script(frames), filler)


class Harness(SynchronousTestCase):
    """
    One endpoint dialled into the fake's ``/media/c007`` (server mode), a
    leg on it, and ``tick`` = one 20 ms egress tick then the fake's timer.
    """

    control = "plain-text"
    media = "slin16"
    lookahead_ms = 200

    def setUp(self) -> None:
        self.clock = Clock()
        self.fake = FakeChanWebSocket(self.clock)
        self.audio: list[Samples] = []
        self.hangups: list[WebSocketEndpoint] = []
        self.marks: list[tuple[str, float]] = []
        self.ep = WebSocketEndpoint(
            "7777", lambda e, s: self.audio.append(s), self.clock, on_hangup=self.hangups.append,
            on_mark=lambda e, cid, t: self.marks.append((cid, t)), lookahead_ms=self.lookahead_ms,
        )
        self.ch: Channel = self.fake.add_channel("c007", format=self.media, control=self.control)
        self.link: Link = connect(self.fake.server_factory(),
                                  self.ep.client_factory("ws://127.0.0.1:8088/media/c007", self.clock), self.clock)
        self.leg = Leg("7777", "en", self.ep)

    def tick(self, n: int = 1) -> None:
        """``n`` egress ticks; the fake's timer runs between them."""
        for _ in range(n):
            self.leg.egress(1, 0)
            self.link.flush()
            self.clock.advance(0.02)
            self.link.flush()

    def queued_ms(self) -> int:
        return self.ch.queue_length * 20

    def drops(self) -> dict[str, int]:
        d: dict[str, int] = self.ep.counters.snapshot()["drops"]
        return d


class EndpointTests(Harness):
    def test_interfaces_and_media_start(self) -> None:
        verifyObject(ILegTransport, self.ep)
        verifyObject(IPeerPacedTransport, self.ep)
        self.assertTrue(self.ep.ready)
        self.assertTrue(self.ep.line_open)
        self.assertEqual(self.ep.call_id, "1796623357.1")
        d = self.ep.describe()
        self.assertEqual((d["kind"], d["codec"], d["control"], d["remote"]),
                         ("websocket", "slin16", "plain-text", "127.0.0.1:8088"))
        self.assertEqual(self.fake.requests[0].protocols, ["media"])

    def test_inbound_is_little_endian_and_bit_exact(self) -> None:
        samples = np.array([0, 1375, 2709, -2, 0x1234] * 64, dtype=np.int16)
        self.ch.send_audio(samples.astype("<i2").tobytes())
        self.link.flush()
        self.assertEqual(np.concatenate(self.audio).tobytes(), samples.tobytes())
        self.assertEqual((self.ep.counters.packets_in, self.ep.counters.bytes_in), (1, 640))

    def test_outbound_is_little_endian_in_whole_frames(self) -> None:
        f = frame(1)
        self.leg.playout.output.write(f)
        self.tick(3)
        self.assertEqual(self.ch.heard[0][1], f.astype("<i2").tobytes())
        self.assertEqual({n % 640 for n in self.ch.binary_sizes}, {0})
        self.assertEqual(self.ch.violations, [])

    def test_speech_lookahead_is_bounded_and_played_in_order(self) -> None:
        frames = [frame(i) for i in range(100)]
        self.leg.playout = speech(frames)
        self.leg.egress(1, 0)
        self.link.flush()
        self.assertEqual(self.ch.binary_sizes, [6400])  # 200 ms in one message
        depths = []
        for _ in range(120):
            self.tick()
            depths.append(self.queued_ms())
        self.assertLessEqual(max(depths), 200)
        heard = [f for _, f in self.ch.heard]
        self.assertEqual(heard[:100], [x.astype("<i2").tobytes() for x in frames])
        self.assertEqual(set(heard[100:]), {bytes(640)})  # then digital silence, shallow
        times = [t for t, _ in self.ch.heard]
        self.assertEqual({round(b - a, 3) for a, b in zip(times, times[1:])}, {0.02})
        self.assertEqual(self.ep.counters.packets_out - self.ep.counters.silence_out, 100)

    def test_live_audio_is_not_interleaved_with_filler(self) -> None:
        """
        The partner's voice arrives every 20 ms, between the ticks: each
        frame goes at once, no filler slips in between (it would stand as
        delay), and each is heard at Asterisk's next tick.
        """
        self.leg.playout = Playout(OutboundBuffer(200), ComfortNoise(-60.0, seed=1))
        self.tick(5)  # filler while nothing comes
        silence_before = self.ep.counters.silence_out
        self.clock.advance(0.007)  # arrivals 7 ms after the ticks
        self.link.flush()
        written = {}
        for i in range(50):
            f = frame(i)
            written[f.astype("<i2").tobytes()] = self.clock.seconds()
            self.leg.playout.output.write(f)
            self.link.flush()
            self.tick()
        # At most the one filler frame that was queued when audio began.
        self.assertLessEqual(self.ep.counters.silence_out - silence_before, 1)
        self.tick(3)
        delays = [t - written[f] for t, f in self.ch.heard if f in written]
        self.assertEqual(len(delays), 50)
        self.assertLessEqual(max(delays), 0.02 + 1e-9)

    def test_audio_never_queues_behind_filler(self) -> None:
        """
        Comfort noise queued when audio comes is flushed, so the audio
        plays at Asterisk's next tick; the flush is not counted as audio
        dropped.
        """
        self.leg.playout = Playout(OutboundBuffer(200), ComfortNoise(-60.0, seed=1))
        self.tick(10)
        self.leg.egress(1, 0)  # a tick: filler goes ahead...
        self.link.flush()
        self.assertGreater(self.queued_ms(), 0)  # ...and waits in Asterisk
        f = frame(3)
        self.leg.playout.output.write(f)
        self.link.flush()
        self.assertIn("FLUSH_MEDIA", self.ch.commands)
        self.assertEqual(self.ep.sender.filler_flushes, 1)
        self.assertEqual(self.ep.counters.flushed_bytes, 0)
        self.tick()
        self.assertEqual(self.ch.heard[-1][1], f.astype("<i2").tobytes())

    def test_no_filler_flush_while_a_mark_is_pending(self) -> None:
        self.leg.playout = Playout(OutboundBuffer(200), ComfortNoise(-60.0, seed=1))
        self.tick(10)
        self.leg.egress(1, 0)
        self.link.flush()
        self.ep.mark()
        self.link.flush()
        self.leg.playout.output.write(frame(4))
        self.link.flush()
        self.assertNotIn("FLUSH_MEDIA", self.ch.commands)
        self.tick(5)
        self.assertEqual(len(self.marks), 1)  # the mark survived

    def test_filler_stays_shallow_and_never_delays_speech_much(self) -> None:
        self.leg.playout = speech([], ComfortNoise(-60.0, seed=1))
        for _ in range(50):
            self.tick()
            self.assertLessEqual(self.queued_ms(), 40)
        heard_before = len(self.ch.heard)
        self.assertEqual(self.ep.counters.silence_out, heard_before + self.ch.queue_length)
        written_at = self.clock.seconds()
        f = frame(7)
        self.leg.playout.output.write(f)
        self.tick(5)
        (when,) = [t for t, x in self.ch.heard if x == f.astype("<i2").tobytes()]
        self.assertLessEqual(when - written_at, 0.04 + 0.02 + 1e-9)

    def test_relay_without_filler_sends_digital_silence_shallowly(self) -> None:
        self.tick(10)
        self.assertTrue(self.ch.heard)
        self.assertEqual({f for _, f in self.ch.heard}, {bytes(640)})
        self.assertLessEqual(self.queued_ms(), 40)

    def test_xoff_stops_sending_and_xon_resumes_after_status(self) -> None:
        self.leg.playout = speech([frame(i) for i in range(200)])
        self.tick()
        self.ch._event("MEDIA_XOFF")
        self.link.flush()
        sent = len(self.ch.binary_sizes)
        self.tick(20)
        self.assertEqual(len(self.ch.binary_sizes), sent)
        self.assertEqual(self.ep.frames_wanted(True), 0)
        self.ch._event("MEDIA_XON")
        self.link.flush()
        self.assertEqual(self.ch.commands[-1], "GET_STATUS")  # the STATUS reply resyncs the model
        self.tick(2)
        self.assertGreater(len(self.ch.binary_sizes), sent)
        self.assertEqual(self.ep.counters.xoff_ms, 400)

    def test_real_backlog_reaches_xoff_and_status_resyncs(self) -> None:
        """
        An Asterisk that stops playing (paused) makes the model wrong; the
        fake's XOFF at 900 frames stops us, and after XON the STATUS reply
        says how much is really queued: no new audio until it drains.
        """
        self.leg.playout = speech([])
        self.ch.paused = True
        for i in range(1000):
            self.leg.playout.output.write(frame(i % 7))
            self.tick()
        self.assertTrue(self.ep.queue.xoff)
        self.assertEqual(self.ch.queue_length, 900)
        self.ch.paused = False
        self.tick(102)  # 900 -> 799, then MEDIA_XON, GET_STATUS, STATUS
        self.assertFalse(self.ep.queue.xoff)
        self.assertIn("GET_STATUS", self.ch.commands)
        self.assertGreater(self.ep.queue.queued_ms(self.clock.seconds()), 15000)
        self.assertEqual(self.ch.dropped_whole, 0)

    def test_flush_empties_asterisk_queue_and_kills_marks(self) -> None:
        self.leg.playout = speech([frame(i) for i in range(50)])
        self.tick()
        self.assertIsNotNone(self.ep.mark())
        self.link.flush()
        queued = self.ch.queue_length
        self.ep.flush()
        self.link.flush()
        self.assertEqual(self.ch.commands[-1], "FLUSH_MEDIA")
        self.assertEqual(self.ch.queue_length, 0)
        self.assertEqual(self.ep.counters.flushed_bytes, queued * 640)
        self.tick(5)
        self.assertEqual(self.marks, [])
        self.assertEqual(self.ep.describe()["marks_pending"], 0)

    def test_mark_reports_when_audio_was_played(self) -> None:
        self.leg.playout = speech([frame(i) for i in range(5)])
        self.tick()
        cid = self.ep.mark()
        self.link.flush()
        self.assertEqual(self.ch.commands[-1], f"MARK_MEDIA {cid}")
        self.tick(10)
        ((got, when),) = self.marks
        last_frame_at = self.ch.heard[4][0]
        self.assertEqual(got, cid)
        self.assertAlmostEqual(when, last_frame_at + 0.02, places=6)
        self.assertEqual((self.ep.counters.marks_sent, self.ep.counters.marks_processed), (1, 1))

    def test_malformed_control_and_audio_counted(self) -> None:
        proto = self.ch.proto
        proto.sendMessage(b"{broken", isBinary=False)
        proto.sendMessage(b"\x01\x02\x03", isBinary=True)  # not whole samples
        proto.sendMessage(b"MEDIA_START connection_id:x channel:y format:slin16 optimal_frame_size:640 ptime:20",
                          isBinary=False)  # a second start
        self.link.flush()
        self.assertEqual(self.drops(), {"websocket_malformed": 2, "websocket_format": 1})
        self.ep.ws_message(self.ep.connection, b"", True)
        self.ep.ws_message(self.ep.connection, b"\xff\xfe", False)  # Autobahn itself refuses bad UTF-8
        self.assertEqual(self.drops(), {"websocket_malformed": 3, "websocket_format": 2})
        self.assertTrue(self.ep.ready)

    def test_audio_before_media_start_counted(self) -> None:
        ep = WebSocketEndpoint("8888", lambda e, s: None, self.clock)
        ep.ws_open(object())
        ep.ws_message(ep.connection, bytes(640), True)
        self.assertEqual(ep.counters.snapshot()["drops"], {"websocket_format": 1})
        self.assertFalse(ep.ready)

    def test_ping_is_answered_and_we_never_pong_unprompted(self) -> None:
        self.ch.ping(b"ka1")
        self.link.flush()
        self.assertEqual(self.ch.pongs, [b"ka1"])
        self.leg.playout.output.write(frame(1))
        self.tick(500)  # ten seconds of traffic, no keepalive PONGs
        self.assertFalse(self.ch.crashed)
        self.assertEqual(self.ch.violations, [])

    def test_asterisk_hangs_up(self) -> None:
        self.ch.hang_up()
        self.link.flush()
        self.assertEqual(self.hangups, [self.ep])
        self.assertFalse(self.ep.ready)
        self.assertEqual(self.ep.frames_wanted(True), 0)

    def test_we_hang_up(self) -> None:
        self.ep.hangup()
        self.link.flush()
        self.assertEqual(self.ch.commands[-1], "HANGUP")
        self.assertEqual(self.ch.hung_up_by, "asterisk")
        self.assertIsNone(self.ch.proto)
        self.assertEqual(self.hangups, [])  # our own hangup is not reported back
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no TCP drop pending: it closed
        self.assertFalse(self.ep.ready)

    def test_our_hangup_drops_tcp_if_asterisk_never_closes(self) -> None:
        dropped: list[bool] = []
        conn: Any = self.ep.connection
        conn.dropConnection = lambda abort=False: dropped.append(abort)
        conn.sendClose = lambda code=None, reason=None: None  # the CLOSE never gets through
        self.ep.hangup()
        self.clock.advance(2.0)
        self.assertEqual(dropped, [True])

    def test_send_buffers_bound_what_is_sent(self) -> None:
        conn: Any = self.ep.connection
        self.assertEqual(self.ep.frames_wanted(True), 10)
        conn.backpressure.pauseProducing()
        self.assertEqual(self.ep.frames_wanted(True), 0)
        conn.backpressure.resumeProducing()
        self.ep.unsent_bytes = lambda t: 640 * 8  # 160 ms still in the kernel
        self.assertEqual(self.ep.frames_wanted(True), 2)
        self.assertEqual(self.ep.frames_wanted(False), 0)

    def test_more_frames_than_wanted_are_dropped_and_counted(self) -> None:
        self.ep.send_frames([frame(i) for i in range(12)], True)
        self.assertEqual(self.drops(), {"websocket_full": 2})
        self.assertEqual(self.ep.counters.packets_out, 10)


class BigLookaheadTests(Harness):
    lookahead_ms = 3000

    def test_messages_stay_under_asterisks_limit(self) -> None:
        self.leg.playout = speech([frame(i) for i in range(150)])
        self.leg.egress(1, 0)
        self.link.flush()
        self.assertEqual(self.ch.binary_sizes, [65280, 30720])  # 102 + 48 frames
        self.assertEqual(self.ch.queue_length, 150)


class JsonTests(Harness):
    control = "json"

    def test_commands_follow_media_start_format(self) -> None:
        self.assertEqual(self.ep.describe()["control"], "json")
        cid = self.ep.mark()
        self.ep.flush()
        self.link.flush()
        self.assertEqual([json.loads(c) for c in self.ch.commands],
                         [{"command": "MARK_MEDIA", "correlation_id": cid}, {"command": "FLUSH_MEDIA"}])
        self.assertEqual(self.ch.violations, [])

    def test_dtmf_kept_not_logged(self) -> None:
        self.ch.send_dtmf("5")
        self.link.flush()
        self.assertEqual(list(self.ep.dtmf), ["5"])


class UlawTests(Harness):
    media = "ulaw"

    def test_decoded_resampled_and_encoded(self) -> None:
        tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.int16)
        self.ch.send_audio(g711.ulaw_encode(tone))
        self.link.flush()
        got = np.concatenate(self.audio)
        self.assertEqual(len(got), 16000)
        spectrum = np.abs(np.fft.rfft(got[4000:].astype(np.float64)))
        self.assertAlmostEqual(float(np.fft.rfftfreq(12000, 1 / 16000)[spectrum.argmax()]), 440, delta=5)
        self.leg.playout.output.write(frame(1))
        self.tick(3)
        self.assertEqual({len(f) for _, f in self.ch.heard}, {160})
        self.assertEqual(self.ch.violations, [])


class ServerModeTests(SynchronousTestCase):
    """Asterisk dials xlbridge (websocket_client.conf)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.fake = FakeChanWebSocket(self.clock)
        self.starts: list[WebSocketEndpoint] = []
        self.ep = WebSocketEndpoint("7002", lambda e, s: None, self.clock, on_start=self.starts.append,
                                    credentials=("asterisk", "s3cret"))

    def dial(self, password: str = "s3cret", protocols: Optional[list[str]] = None) -> tuple[Channel, Link]:
        ch = self.fake.add_channel("media1")
        link = connect(self.ep.server_factory(self.clock),
                       self.fake.client_factory("ws://127.0.0.1:7002/", ch, username="asterisk",
                                                password=password, protocols=protocols or ["media"]),
                       self.clock)
        return ch, link

    def test_asterisk_connects_and_call_starts(self) -> None:
        ch, link = self.dial()
        self.assertEqual(self.starts, [self.ep])
        self.assertEqual(link.client.websocket_protocol_in_use, "media")
        self.ep.send_frames([frame(1)], True)
        link.flush()
        self.clock.advance(0.02)
        self.assertEqual(ch.heard[0][1], frame(1).astype("<i2").tobytes())

    def test_wrong_password_refused(self) -> None:
        ch, link = self.dial(password="nope")
        self.assertIn("401", link.client.http_status_line)
        self.assertEqual(self.starts, [])
        self.assertIsNone(ch.proto)

    def test_second_connection_refused_and_counted(self) -> None:
        self.dial()
        ch2, link2 = self.dial()
        self.assertIn("409", link2.client.http_status_line)
        self.assertEqual(self.ep.counters.snapshot()["drops"], {"websocket_busy": 1})


class LoopbackTests(TestCase):
    """
    The endpoint dials the fake over real TCP on 127.0.0.1 (real socket
    tuning, producer and SIOCOUTQNSD), and a leg fills it for half a second.
    """

    @inlineCallbacks
    def test_half_a_second_of_speech_over_loopback(self) -> Any:
        from twisted.internet import reactor

        fake = FakeChanWebSocket(reactor)
        ch = fake.add_channel("c007")
        base = fake.listen(reactor)
        self.addCleanup(fake.port.stopListening)
        ep = WebSocketEndpoint("7777", lambda e, s: None, reactor)
        factory = ep.client_factory(f"{base}/media/c007", reactor)
        reactor.connectTCP(factory.host, factory.port, factory)
        leg = Leg("7777", "en", ep)
        leg.playout = speech([frame(i) for i in range(25)])
        for _ in range(100):
            if ep.ready:
                break
            yield deferLater(reactor, 0.01)
        self.assertTrue(ep.ready)
        self.assertTrue(ep.connection.backpressure is not None)
        for _ in range(40):
            leg.egress(1, 0)
            self.assertLessEqual(ch.queue_length, 11)
            yield deferLater(reactor, 0.02)
        self.assertEqual([f for _, f in ch.heard][:25], [frame(i).astype("<i2").tobytes() for i in range(25)])
        ep.hangup()
        for _ in range(100):
            if ch.proto is None:
                break
            yield deferLater(reactor, 0.01)
        self.assertEqual(ch.hung_up_by, "asterisk")
        self.assertEqual(ch.violations, [])


class InboundBoundTests(TestCase):
    """A peer that sends one huge message is cut off before it is buffered."""

    @inlineCallbacks
    def test_a_message_over_the_bound_closes_the_connection(self) -> Any:
        import base64
        import os
        import socket as _socket

        from twisted.internet import reactor, threads

        from xlbridge.transports.websocket_protocol import MAX_INBOUND

        heard: list[Any] = []
        ep = WebSocketEndpoint("7002", lambda e, s: heard.append(s), reactor)
        port = reactor.listenTCP(0, ep.server_factory(reactor), interface="127.0.0.1")
        self.addCleanup(port.stopListening)

        def peer() -> str:
            """Whether the bridge hung up on us before the message ended: "closed" or "open"."""
            s = _socket.create_connection(("127.0.0.1", port.getHost().port), timeout=5)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall((f"GET /media HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                       f"Sec-WebSocket-Protocol: media\r\n\r\n").encode())
            s.recv(4096)
            # A masked BINARY frame announcing 16 MiB, then 1 MiB of it.
            s.sendall(bytes([0x82, 0xFF]) + (16 << 20).to_bytes(8, "big") + b"\0\0\0\0")
            try:
                for _ in range(16):
                    s.sendall(bytes(64 * 1024))
                s.settimeout(3)
                s.recv(4096)  # a close frame, or the end of the stream
                return "closed"
            except _socket.timeout:
                return "open"  # still waiting for the other 15 MiB
            except OSError:
                return "closed"  # reset while we were sending
            finally:
                s.close()

        verdict = yield threads.deferToThread(peer)
        self.assertEqual(verdict, "closed")
        for _ in range(100):
            if ep.connection is None:
                break
            yield deferLater(reactor, 0.01)
        self.assertIsNone(ep.connection)
        self.assertEqual(heard, [])
        self.assertLess(MAX_INBOUND, 16 << 20)


class WebSocketLegTests(WebSocketDriver, LegContract, SynchronousTestCase):
    """
    The leg contract over WebSocket media (fixed extensions, Asterisk
    dialling in), with the fake chan_websocket playing out.
    """
