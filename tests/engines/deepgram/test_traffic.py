"""
Tests for :mod:`xlbridge.engines.deepgram.traffic`: what
:class:`SocketTraffic` sends on the current socket (audio, text, the
``/v1`` keepalive, the end messages), when it will not (not open, a closing
socket, after ``CloseStream``), and its liveness ping dropping a socket
that does not answer, on a ``task.Clock`` with a recording protocol.  The
connection's use of it is tested in ``test_connection``.
"""

from __future__ import annotations

from typing import Optional

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from tests.engines.deepgram.fixtures import RecordingProto
from xlbridge.engines.deepgram.dialect import FLUX, NOVA, Dialect
from xlbridge.engines.deepgram.traffic import LIVENESS_IDLE_S, LIVENESS_TIMEOUT_S, SocketTraffic


class SocketTrafficTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.proto: Optional[RecordingProto] = RecordingProto()
        self.traffic = self.make(NOVA)

    def make(self, dialect: Dialect) -> SocketTraffic:
        return SocketTraffic(self.clock, dialect, 4.0, lambda: self.proto,  # type: ignore[arg-type,return-value]
                             Logger(), "c1", "7777")

    def test_nothing_goes_out_before_open(self) -> None:
        self.assertFalse(self.traffic.send_audio(b"\x01\x00"))
        assert self.proto is not None
        self.assertEqual(self.proto.sent, [])

    def test_audio_is_sent_and_counted(self) -> None:
        self.traffic.opened()
        self.assertTrue(self.traffic.send_audio(b"\x01\x00\x02\x00"))
        self.assertFalse(self.traffic.send_audio(b""))
        assert self.proto is not None
        self.assertEqual(self.proto.binaries(), [b"\x01\x00\x02\x00"])
        self.assertEqual((self.traffic.sent_bytes, self.traffic.messages_out), (4, 1))

    def test_closing_socket_takes_nothing(self) -> None:
        self.traffic.opened()
        assert self.proto is not None
        self.proto.state = WebSocketProtocol.STATE_CLOSING  # type: ignore[attr-defined]
        self.assertFalse(self.traffic.writable())
        self.assertFalse(self.traffic.send_audio(b"\x01\x00"))
        self.assertFalse(self.traffic.send_text('{"type": "KeepAlive"}'))
        self.assertEqual(self.proto.sent, [])

    def test_keepalive_after_idle_then_none_after_end(self) -> None:
        self.traffic.opened()
        self.traffic.start()
        self.clock.advance(4.0)
        assert self.proto is not None
        self.assertEqual(self.proto.texts(), ["KeepAlive"])
        self.assertEqual(self.traffic.keepalives, 1)
        self.traffic.end_stream()
        self.assertEqual(self.proto.texts(), ["KeepAlive", "Finalize", "CloseStream"])
        self.assertTrue(self.traffic.close_sent)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flux_has_no_keepalive(self) -> None:
        traffic = self.make(FLUX)
        traffic.opened()
        traffic.start()
        self.clock.advance(4.0)
        assert self.proto is not None
        self.assertEqual(self.proto.texts(), [])
        self.assertEqual(traffic.keepalives, 0)
        self.assertTrue(traffic.liveness.running)

    def test_start_does_nothing_after_end(self) -> None:
        self.traffic.opened()
        self.traffic.end_stream()
        self.traffic.start()
        self.assertFalse(self.traffic.liveness.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_unanswered_ping_drops_the_socket(self) -> None:
        traffic = self.make(FLUX)
        traffic.opened()
        traffic.start()
        self.clock.advance(LIVENESS_IDLE_S)
        assert self.proto is not None
        self.assertEqual(getattr(self.proto, "pings", 0), 1)
        self.assertIsNone(traffic.dead_after)
        self.clock.advance(LIVENESS_TIMEOUT_S)
        self.clock.advance(0)
        self.assertTrue(self.proto.dropped)
        self.assertTrue(traffic.dead)
        self.assertEqual(traffic.dead_after, LIVENESS_IDLE_S + LIVENESS_TIMEOUT_S)
        self.assertIn("liveness ping", getattr(self.proto, "wasNotCleanReason"))

    def test_ended_stops_the_timers(self) -> None:
        self.traffic.opened()
        self.traffic.start()
        self.traffic.ended()
        self.assertFalse(self.traffic.open)
        self.assertFalse(self.traffic.liveness.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_opened_clears_dead(self) -> None:
        self.traffic.dead = True
        self.traffic.opened()
        self.assertIsNone(self.traffic.dead_after)
