"""
Tests for :mod:`xlbridge.engines.deepgram.connection`: what a
:class:`DeepgramConnection` reports to its owner (opened, message, down,
closed), reconnecting with backoff, keepalives and shutdown, on a
``MemoryReactorClock`` with a recording owner; and the real socket's
``TCP_NODELAY`` against :mod:`tests.fakes.deepgram` on loopback.
"""

from __future__ import annotations

import socket
from typing import Any, Optional

from autobahn.websocket.types import ConnectionResponse
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IReactorSSL, IReactorTCP, IReactorTime
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.engines.deepgram.fixtures import KEY, RecordingOwner, RecordingProto, eventually, reactor
from tests.fakes.deepgram import start_fake_deepgram
from xlbridge.engines.base import EngineAuthError, EngineRequestError, EngineUnavailable
from xlbridge.engines.deepgram.asr import DeepgramASR
from xlbridge.engines.deepgram.connection import DeepgramConnection, State
from xlbridge.engines.deepgram.protocol import DeepgramClientProtocol, IDeepgramReactor
from xlbridge.engines.deepgram.settings import DeepgramSettings, listen_url


def response(request_id: Optional[str] = None) -> ConnectionResponse:
    """What Autobahn hands ``onConnect`` after a 101."""
    headers = {"dg-request-id": request_id} if request_id else {}
    return ConnectionResponse("tcp4:127.0.0.1:8801", headers, 13, None, [])


class ConnectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.owner = RecordingOwner()
        self.settings = DeepgramSettings(api_key=KEY, base_url="ws://dg.test:8801", backoff_initial_s=1.0,
                                         backoff_max_s=8.0, keepalive_s=4.0, connect_timeout_s=5.0)
        self.conn = DeepgramConnection(self.clock, self.settings, listen_url(self.settings, "en"), self.owner,
                                       call_id="c1", extension="7777", random=lambda: 1.0)

    def factory(self) -> Any:
        """The factory of the latest attempt."""
        return self.clock.tcpClients[-1][2]

    def build(self) -> RecordingProto:
        p = RecordingProto()
        self.conn.ws_built(self.conn.connect_attempts, p)  # type: ignore[arg-type]
        return p

    def open(self, request_id: Optional[str] = None) -> RecordingProto:
        p = self.build()
        self.conn.ws_connect(p, response(request_id))  # type: ignore[arg-type]
        self.conn.ws_open(p)  # type: ignore[arg-type]
        return p

    def refuse(self) -> None:
        self.factory().clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def retry_delay(self) -> float:
        [call] = self.clock.getDelayedCalls()
        self.assertEqual(call.func, self.conn.connect)
        return call.getTime() - self.clock.seconds()

    def test_reactor_interface_combines_what_is_used(self) -> None:
        self.assertEqual(set(IDeepgramReactor.__bases__), {IReactorTCP, IReactorSSL, IReactorTime})
        for iface in IDeepgramReactor.__bases__:
            self.assertTrue(iface.providedBy(self.clock), iface)

    def test_protocol_forwards_to_the_connection(self) -> None:
        # The real protocol, built by the attempt's factory, on no socket.
        self.conn.connect()
        p = self.factory().buildProtocol(IPv4Address("TCP", "127.0.0.1", 8801))
        self.assertIsInstance(p, DeepgramClientProtocol)
        self.assertIs(self.conn.protocol, p)
        p.onConnect(response("rid-7"))
        p.onOpen()
        p.onMessage(b'{"type": "Metadata"}', False)
        p.onMessage(b"\x00\x01", True)
        p.onClose(False, 1006, "connection was closed uncleanly")
        [opened, text, binary, (kind, error, retrying)] = self.owner.reports
        self.assertEqual(opened, ("opened", "rid-7"))
        self.assertEqual(text, ("message", b'{"type": "Metadata"}', False))
        self.assertEqual(binary, ("message", b"\x00\x01", True))
        self.assertEqual((kind, retrying), ("down", True))
        self.assertIsInstance(error, EngineUnavailable)
        self.assertIn("1006", error.message)
        self.assertEqual(self.conn.state, State.BACKOFF)
        self.assertIsNone(self.conn.protocol)

    def test_opened_once_open(self) -> None:
        self.conn.connect()
        self.assertEqual(self.conn.state, State.CONNECTING)
        p = self.build()
        self.assertEqual(self.owner.reports, [])
        self.conn.ws_connect(p, response("rid-1"))  # type: ignore[arg-type]
        self.assertEqual(self.owner.reports, [])
        self.conn.ws_open(p)  # type: ignore[arg-type]
        self.assertEqual(self.owner.reports, [("opened", "rid-1")])
        self.assertEqual(self.conn.state, State.OPEN)
        self.assertTrue(self.conn.is_open)
        self.assertFalse(self.conn.close_sent)
        # The connect timeout is gone; the keepalive and the liveness check are armed.
        keepalive, liveness = sorted(self.clock.getDelayedCalls(), key=lambda c: -c.getTime())
        self.assertEqual(keepalive.getTime(), self.clock.seconds() + 4.0)
        self.assertTrue(self.conn.liveness.running)
        self.assertEqual(liveness.getTime(), self.clock.seconds() + 2.0)

    def test_each_failure_reported_and_retried_with_backoff(self) -> None:
        self.conn.connect()
        self.refuse()
        self.assertEqual(self.conn.state, State.BACKOFF)
        self.assertEqual(self.retry_delay(), 1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.conn.state, State.CONNECTING)
        self.assertEqual(len(self.clock.tcpClients), 2)
        self.refuse()
        self.assertEqual(self.retry_delay(), 2.0)
        self.clock.advance(2.0)
        # Every failure is reported; one event per outage is the owner's policy.
        downs = [r for r in self.owner.reports if r[0] == "down"]
        self.assertEqual([(type(e), retrying) for _, e, retrying in downs], [(EngineUnavailable, True)] * 2)
        self.assertEqual((self.conn.connect_attempts, self.conn.reconnects), (3, 2))
        p = self.open()
        self.assertEqual(self.owner.kinds(), ["down", "down", "opened"])
        # A successful upgrade resets the backoff.
        self.conn.ws_close(p, False, 1006, "dropped")  # type: ignore[arg-type]
        self.assertEqual(self.owner.kinds()[-1], "down")
        self.assertEqual(self.retry_delay(), 1.0)

    def test_refused_upgrade_is_final(self) -> None:
        self.conn.connect()
        p = self.build()
        p.http_status_line = "HTTP/1.1 401 Unauthorized"
        p.http_headers = {"dg-error": "Invalid credentials.", "dg-request-id": "rid"}
        self.conn.ws_close(p, False, 1006, "connection was closed uncleanly")  # type: ignore[arg-type]
        [(kind, error, retrying)] = self.owner.reports
        self.assertEqual((kind, retrying), ("down", False))
        self.assertIsInstance(error, EngineAuthError)
        self.assertIn("Invalid credentials.", error.message)
        self.assertEqual(self.conn.state, State.FAILED)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.refuse()  # late: ignored
        self.conn.connect()  # failed for good
        self.assertEqual(len(self.owner.reports), 1)
        self.assertEqual(len(self.clock.tcpClients), 1)

    def test_upgrade_timeout(self) -> None:
        self.conn.connect()
        p = self.build()
        self.clock.advance(5.0)
        self.assertTrue(p.dropped)
        self.conn.ws_close(p, False, 1006, "connection was closed uncleanly")  # type: ignore[arg-type]
        [(kind, error, retrying)] = self.owner.reports
        self.assertEqual((kind, retrying), ("down", True))
        self.assertIn("upgrade timed out after 5.0 s", error.message)

    def test_stale_attempt_ignored(self) -> None:
        self.conn.connect()
        first = self.factory()
        old = self.build()
        self.refuse()
        self.clock.advance(self.retry_delay())
        first.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.conn.ws_message(old, b"{}", False)  # type: ignore[arg-type]
        self.conn.ws_close(old, False, 1006, "late")  # type: ignore[arg-type]
        self.conn.ws_open(old)  # type: ignore[arg-type]
        self.assertTrue(old.dropped)
        self.assertEqual(self.owner.kinds(), ["down"])
        self.assertEqual(self.conn.state, State.CONNECTING)

    def test_send_audio_and_keepalive(self) -> None:
        self.conn.connect()
        self.assertFalse(self.conn.send_audio(b"\x00" * 640))  # not open
        p = self.open()
        self.assertFalse(self.conn.send_audio(b""))
        self.assertTrue(self.conn.send_audio(b"\x00" * 640))
        self.assertEqual((self.conn.sent_bytes, self.conn.messages_out), (640, 1))
        self.clock.advance(2.0)
        self.conn.send_audio(b"\x00" * 640)
        self.clock.advance(3.9)
        self.assertEqual(p.texts(), [])
        self.clock.advance(0.1)
        self.assertEqual(p.texts(), ["KeepAlive"])
        self.clock.advance(4.0)
        self.assertEqual(p.texts(), ["KeepAlive", "KeepAlive"])
        self.assertEqual((self.conn.keepalives, self.conn.messages_out, self.conn.sent_bytes), (2, 4, 1280))

    def test_silent_server_is_pinged_and_a_dead_one_dropped(self) -> None:
        """
        A half-open connection (the server or the path gone, no FIN, no
        RST) sends nothing back; without a liveness check the client would
        write audio into it forever and never fall back.  After
        ``LIVENESS_IDLE_S`` without any message a WebSocket ping goes out;
        no answer within ``LIVENESS_TIMEOUT_S`` drops the socket, and its
        close is a retryable outage (reconnect and replay).
        """
        from xlbridge.engines.deepgram.traffic import LIVENESS_IDLE_S, LIVENESS_TIMEOUT_S

        self.conn.connect()
        p = self.open()
        for _ in range(int(LIVENESS_IDLE_S / 0.02) - 1):  # audio keeps going out
            self.clock.advance(0.02)
            self.conn.send_audio(b"\x00" * 640)
        self.assertEqual(getattr(p, "pings", 0), 0)
        self.clock.advance(0.05)
        self.assertEqual(getattr(p, "pings", 0), 1)
        self.assertFalse(p.dropped)
        self.clock.advance(LIVENESS_TIMEOUT_S)
        self.assertTrue(p.dropped)
        self.conn.ws_close(p, False, 1006, "connection was closed uncleanly")  # type: ignore[arg-type]
        [_, (kind, error, retrying)] = self.owner.reports
        self.assertEqual((kind, retrying), ("down", True))
        self.assertIsInstance(error, EngineUnavailable)
        self.assertIn("no answer", error.message)
        self.assertEqual(self.conn.state, State.BACKOFF)

    def test_pong_just_in_time_saves_the_connection(self) -> None:
        """A pong just before the ping times out keeps the connection."""
        from xlbridge.engines.deepgram.traffic import LIVENESS_IDLE_S, LIVENESS_TIMEOUT_S

        self.conn.connect()
        p = self.open()
        self.clock.advance(LIVENESS_IDLE_S + LIVENESS_TIMEOUT_S - 0.01)
        self.assertEqual(getattr(p, "pings", 0), 1)
        self.conn.ws_pong(p)  # type: ignore[arg-type]
        self.clock.advance(0.02)
        self.assertFalse(p.dropped)
        self.assertEqual(self.conn.state, State.OPEN)

    def test_answering_server_is_not_dropped(self) -> None:
        """Messages or pongs keep a quiet connection alive: no drop, at most one ping per idle spell."""
        from xlbridge.engines.deepgram.traffic import LIVENESS_IDLE_S, LIVENESS_TIMEOUT_S

        self.conn.connect()
        p = self.open()
        for i in range(10):
            self.clock.advance(LIVENESS_IDLE_S + LIVENESS_TIMEOUT_S / 2)
            if i % 2:
                self.conn.ws_message(p, b'{"type": "Results"}', False)  # type: ignore[arg-type]
            else:
                self.conn.ws_pong(p)  # type: ignore[arg-type]
        self.assertFalse(p.dropped)
        self.assertEqual(self.conn.state, State.OPEN)
        self.assertLessEqual(getattr(p, "pings", 0), 10)
        self.conn.end_stream()
        self.conn.ws_close(p, True, 1000, None)  # type: ignore[arg-type]
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_send_on_a_closing_socket(self) -> None:
        """
        Between a close frame from the server (or our own drop) and the
        close report, Autobahn refuses to send (``Disconnected``); audio fed
        then must not raise into the RTP path or the gap filler's timer, and
        must stay unsent (for the replay).  Seen under the fault runner as
        ``pipeline error on RTP audio`` and ``while handling timed call``.
        """
        from autobahn.exception import Disconnected
        from autobahn.websocket.protocol import WebSocketProtocol

        class AutobahnLike(RecordingProto):
            state = WebSocketProtocol.STATE_OPEN

            def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
                if self.state != WebSocketProtocol.STATE_OPEN:
                    raise Disconnected("Attempt to send on a closed protocol")
                super().sendMessage(payload, isBinary)

        self.conn.connect()
        p = AutobahnLike()
        self.conn.ws_built(self.conn.connect_attempts, p)  # type: ignore[arg-type]
        self.conn.ws_connect(p, response())  # type: ignore[arg-type]
        self.conn.ws_open(p)  # type: ignore[arg-type]
        self.assertTrue(self.conn.send_audio(b"\x00" * 640))
        p.state = WebSocketProtocol.STATE_CLOSING  # the server's close frame is in
        self.assertFalse(self.conn.send_audio(b"\x00" * 640))
        self.clock.advance(self.settings.keepalive_s)  # the keepalive must not raise either
        self.conn.end_stream()
        self.assertEqual(len(p.sent), 1)
        self.conn.ws_close(p, True, 1011, "NET-0000")  # type: ignore[arg-type]
        self.assertEqual(self.owner.kinds(), ["opened", "down"])

    def test_end_stream_then_1000_is_closed(self) -> None:
        self.conn.connect()
        p = self.open()
        self.conn.end_stream()
        self.assertEqual(p.texts(), ["Finalize", "CloseStream"])
        self.assertTrue(self.conn.close_sent)
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no keepalive after CloseStream
        self.conn.ws_close(p, True, 1000, None)  # type: ignore[arg-type]
        self.assertEqual(self.owner.kinds(), ["opened", "closed"])
        self.assertEqual(self.conn.state, State.CLOSED)

    def test_drop_after_metadata_is_the_end(self) -> None:
        self.conn.connect()
        p = self.open()
        self.conn.end_stream()
        self.conn.metadata_received()
        self.conn.ws_close(p, False, 1006, "connection was closed uncleanly")  # type: ignore[arg-type]
        self.assertEqual(self.owner.kinds(), ["opened", "closed"])

    def test_drop_before_metadata_is_a_drop(self) -> None:
        self.conn.connect()
        p = self.open()
        self.conn.end_stream()
        self.conn.ws_close(p, False, 1006, "connection was closed uncleanly")  # type: ignore[arg-type]
        self.assertEqual(self.owner.kinds(), ["opened", "down"])
        self.assertEqual(self.conn.state, State.BACKOFF)
        # Metadata seen on the last connection does not count on the next.
        self.conn.metadata_received()
        self.clock.advance(self.retry_delay())
        p = self.open()
        self.conn.end_stream()
        self.conn.ws_close(p, False, 1006, "connection was closed uncleanly")  # type: ignore[arg-type]
        self.assertEqual(self.owner.kinds(), ["opened", "down", "opened", "down"])

    def test_error_message_explains_the_close(self) -> None:
        self.conn.connect()
        p = self.open()
        self.conn.error_received("DATA-0000 cannot decode")
        self.conn.ws_close(p, False, 1008, "DATA-0000 bad audio")  # type: ignore[arg-type]
        [_, (kind, error, retrying)] = self.owner.reports
        self.assertEqual((kind, retrying), ("down", False))
        self.assertIsInstance(error, EngineRequestError)
        self.assertIn("cannot decode", error.message)

    def test_close_while_connecting(self) -> None:
        self.conn.connect()
        [connector] = self.clock.connectors
        connector.state = "connecting"  # as a real BaseConnector says; the fake has no state
        self.conn.close()
        self.assertTrue(connector.stoppedConnecting)
        self.assertEqual(self.owner.reports, [("closed",)])
        self.assertEqual(self.conn.state, State.CLOSED)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.refuse()
        self.conn.connect()
        self.conn.close()
        self.assertEqual(self.owner.reports, [("closed",)])
        self.assertEqual(len(self.clock.tcpClients), 1)

    def test_close_while_open_drops_the_socket(self) -> None:
        self.conn.connect()
        p = self.open()
        self.conn.close()
        self.assertTrue(p.dropped)
        self.assertEqual(self.owner.kinds(), ["opened", "closed"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.conn.ws_close(p, False, 1006, "aborted")  # type: ignore[arg-type]
        self.assertEqual(self.owner.kinds(), ["opened", "closed"])

    def test_owner_may_close_when_opened(self) -> None:
        conn = self.conn

        class Closer(RecordingOwner):
            def connection_opened(self, request_id: Optional[str]) -> None:
                super().connection_opened(request_id)
                conn.close()

        owner = Closer()
        conn._owner = owner  # type: ignore[assignment]
        conn.connect()
        p = self.open()
        self.assertTrue(p.dropped)
        self.assertEqual(owner.kinds(), ["opened", "closed"])
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no keepalive armed

    def test_wss_uses_verified_tls(self) -> None:
        settings = DeepgramSettings(api_key=KEY)
        conn = DeepgramConnection(self.clock, settings, listen_url(settings, "es"), self.owner)
        conn.connect()
        [(host, port, factory, creator, timeout, _)] = self.clock.sslClients
        self.assertEqual((host, port, timeout), ("api.deepgram.com", 443, 10.0))
        self.assertEqual(factory.headers, {"Authorization": f"Token {KEY}"})
        self.assertNotIn(KEY, repr(conn))


class NoDelayTests(TestCase):
    """
    One small message per 20 ms packet: Nagle must not hold them back.
    """

    def test_tcp_nodelay_on_the_audio_socket(self) -> Any:
        fake = start_fake_deepgram(reactor)
        self.addCleanup(fake.stop)
        asr = DeepgramASR(reactor, DeepgramSettings(api_key="test-key", base_url=fake.url), "en", lambda e: None)
        asr.start()
        self.addCleanup(asr.finish)

        def check(_: Any) -> None:
            assert asr.connection.protocol is not None
            sock = asr.connection.protocol.transport.getHandle()
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

        return eventually(lambda: asr.state is State.OPEN).addCallback(check)
