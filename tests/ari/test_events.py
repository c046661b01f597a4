"""
The ARI events socket: its backoff schedule, what each failed attempt logs
(refused, DNS, timeouts, HTTP statuses), the slow retries after a 401/403,
and the start-up requests, on a ``task.Clock`` with a fake endpoint and
Autobahn's real client protocol over a memory transport; then against the
fake ARI over loopback with a wrong password and a read-only user.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any, Callable, Optional

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import PASSWORD, ARIHarness, wait_until
from xlbridge.ari.client import ARIAuthError, ARIError
from xlbridge.ari.events import ARIEvents
from xlbridge.ari.events_lifecycle import State
from xlbridge.ari.retry import retry_delay

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RetryDelayTests(SynchronousTestCase):
    def test_doubles_to_the_cap(self) -> None:
        self.assertEqual(
            [retry_delay(n, random=lambda: 0.0) for n in range(1, 10)],
            [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0],
        )

    def test_jitter_only_shortens(self) -> None:
        self.assertEqual(retry_delay(3, random=lambda: 0.5), 4.0 * 0.9)
        self.assertEqual(retry_delay(9, random=lambda: 0.5), 60.0 * 0.9)
        self.assertAlmostEqual(retry_delay(2, random=lambda: 0.999999), 1.6, places=4)
        self.assertEqual(retry_delay(1000, random=lambda: 0.0), 60.0)  # no overflow
        self.assertEqual(retry_delay(0, random=lambda: 0.0), 1.0)


class _Transport(StringTransport):
    """
    Closing it delivers ``connectionLost`` a moment later on the test's
    clock, as a reactor would.
    """

    def __init__(self, clock: Clock) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 8088))
        self.clock = clock
        self.lost = False
        self.aborted = False

    def _lose(self) -> None:
        if not self.lost:
            self.lost = True
            self.clock.callLater(0, self.protocol.connectionLost, Failure(ConnectionDone()))

    def loseConnection(self) -> None:
        super().loseConnection()
        self._lose()

    def abortConnection(self) -> None:
        self.aborted = True
        self._lose()

    def unregisterProducer(self) -> None:
        # As a TCP transport: none registered is fine (Autobahn asks).
        if self.producer is not None:
            super().unregisterProducer()


class _Endpoint:
    """
    Each ``connect`` is an attempt the test settles: fail it, or connect
    Autobahn's protocol to a memory transport.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.times: list[float] = []
        self.pending: list[Deferred[Any]] = []
        self.factory: Any = None

    def connect(self, factory: Any) -> "Deferred[Any]":
        self.factory = factory
        self.times.append(self.clock.seconds())
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d

    def fail(self, exc: BaseException) -> None:
        self.pending.pop(0).errback(exc)

    def tcp(self) -> tuple[Any, _Transport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8088))
        transport = _Transport(self.clock)
        transport.protocol = proto
        proto.makeConnection(transport)
        self.pending.pop(0).callback(proto)
        return proto, transport


def _answer(proto: Any, transport: _Transport, status: int = 101, phrase: str = "Switching Protocols",
            body: bytes = b"") -> None:
    if status == 101:
        key = re.search(rb"Sec-WebSocket-Key: (\S+)", transport.value())
        assert key is not None
        accept = base64.b64encode(hashlib.sha1(key.group(1) + WS_GUID).digest())
        head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        proto.dataReceived(head)
        return
    head = f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    proto.dataReceived(head.encode() + body)


def _close_code(data: bytes) -> int:
    """
    The status code of the (masked, client-sent) close frame in ``data``.
    """
    assert data[0] == 0x88, data  # FIN + close
    length, mask = data[1] & 0x7F, data[2:6]
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[6:6 + length]))
    return int.from_bytes(payload[:2], "big")


class Logged:
    """
    Log events of one test: text and level.
    """

    def __init__(self, testcase: SynchronousTestCase) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, level: Optional[LogLevel] = None) -> list[str]:
        return [str(formatEvent(e)) for e in self.events
                if level is None or e.get("log_level") == level]


class EventsOnClock(SynchronousTestCase):
    """
    :class:`ARIEvents` with a fake endpoint, a ``Clock`` and no jitter
    (``random`` returns 0), unless a test says otherwise.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = _Endpoint(self.clock)
        self.logged = Logged(self)
        self.events: list[dict[str, Any]] = []
        self.connects = 0
        self.on_connect: Callable[[], Optional[Deferred[Any]]] = lambda: None

    def make(self, **kwargs: Any) -> ARIEvents:
        def on_connect() -> Optional[Deferred[Any]]:
            self.connects += 1
            return self.on_connect()

        kwargs.setdefault("random", lambda: 0.0)
        self.ari = ARIEvents(
            MemoryReactorClock(), "http://asterisk.example:8088", "xlbridge", "xlbridge", PASSWORD,  # type: ignore[arg-type]
            self.events.append, on_connect, clock=self.clock, endpoint=self.endpoint,  # type: ignore[arg-type]
            **kwargs,
        )
        self.ari.startService()
        self.addCleanup(self.stop)
        return self.ari

    def stop(self) -> None:
        d = self.ari.stopService()
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for line in self.logged.lines():
            self.assertNotIn(PASSWORD, line)
            self.assertNotIn("Scheduling retry", line)

    def up(self) -> tuple[Any, _Transport]:
        proto, transport = self.endpoint.tcp()
        _answer(proto, transport)
        return proto, transport


class BackoffTests(EventsOnClock):
    def test_schedule_doubles_to_a_minute(self) -> None:
        """
        Refused connections: attempts 1, 2, 4... 60 s apart, each line
        saying why and when the next one is.
        """
        ari = self.make()
        for _ in range(8):
            self.endpoint.fail(ConnectionRefusedError("111: Connection refused"))
            self.clock.advance(ari.next_attempt - self.clock.seconds() if ari.next_attempt else 0)
        self.assertEqual(self.endpoint.times, [0, 1, 3, 7, 15, 31, 63, 123, 183])
        warns = self.logged.lines(LogLevel.warn)
        self.assertEqual(len(warns), 8)
        self.assertEqual(
            warns[0],
            "ARI events: cannot connect to asterisk.example:8088: connection refused (Connection was "
            "refused by other side: 111: Connection refused); next attempt in 1.0 s (1 failed in a row)",
        )
        self.assertIn("next attempt in 60.0 s (8 failed in a row)", warns[-1])
        self.assertEqual(ari.state, State.CONNECTING)
        self.assertEqual(ari.status()["failures"], 8)

    def test_jitter_from_the_injected_source(self) -> None:
        ari = self.make(random=lambda: 0.5)
        self.endpoint.fail(ConnectionRefusedError())
        self.assertAlmostEqual(ari.next_attempt or 0, 0.9)
        self.clock.advance(0.9)
        self.endpoint.fail(ConnectionRefusedError())
        self.assertAlmostEqual(ari.next_attempt or 0, 0.9 + 1.8)

    def test_dns_failure_says_so(self) -> None:
        ari = self.make()
        self.endpoint.fail(DNSLookupError("no results for hostname lookup: asterisk.example"))
        (line,) = self.logged.lines(LogLevel.warn)
        self.assertIn("cannot connect to asterisk.example:8088: DNS lookup failed: no results for hostname "
                      "lookup: asterisk.example; next attempt in 1.0 s", line)
        self.assertEqual(ari.state, State.BACKOFF)
        self.assertIn("DNS lookup failed", ari.status()["last_error"])

    def test_connect_timeout(self) -> None:
        ari = self.make()
        self.clock.advance(9.9)
        self.assertEqual(self.logged.lines(LogLevel.warn), [])
        self.clock.advance(0.1)
        (line,) = self.logged.lines(LogLevel.warn)
        self.assertIn("timed out: no connection to asterisk.example:8088 within 10 s; next attempt in 1.0 s", line)
        self.assertEqual(ari.next_attempt, 11.0)

    def test_upgrade_timeout(self) -> None:
        self.make()
        proto, transport = self.endpoint.tcp()
        self.clock.advance(10)
        self.assertTrue(transport.aborted)
        self.clock.advance(0)
        (line,) = self.logged.lines(LogLevel.warn)
        self.assertIn("timed out: asterisk.example:8088 did not answer the WebSocket upgrade within 10 s", line)

    def test_upgrade_refused_with_a_status_is_retried(self) -> None:
        """
        503 (Asterisk still booting): status, phrase and Asterisk's message.
        """
        ari = self.make()
        proto, transport = self.endpoint.tcp()
        _answer(proto, transport, 503, "Service Unavailable", b'{"message": "Asterisk not booted"}')
        self.clock.advance(0)
        (line,) = self.logged.lines(LogLevel.warn)
        self.assertIn("Asterisk refused the WebSocket upgrade: HTTP 503 Service Unavailable: Asterisk not "
                      "booted; next attempt in 1.0 s", line)
        self.assertEqual(ari.state, State.BACKOFF)
        # Autobahn's own "failing WebSocket opening handshake" stays quiet.
        self.assertEqual([x for x in self.logged.lines() if "opening handshake" in x], [])

    def test_reset_only_after_staying_up(self) -> None:
        ari = self.make()
        for _ in range(3):
            self.endpoint.fail(ConnectionRefusedError())
            self.clock.advance(ari.next_attempt - self.clock.seconds())  # type: ignore[operator]
        # Accepted, then dropped at once: the schedule goes on (8 s).
        proto, transport = self.up()
        self.clock.advance(2)
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(ari.next_attempt, self.clock.seconds() + 8)
        closed = self.logged.lines(LogLevel.warn)[-1]
        self.assertTrue(closed.startswith("ARI events closed (1006 "), closed)
        self.assertIn("after 2.0 s; next attempt in 8.0 s", closed)
        # Up for 10 s: the next drop starts again from 1 s.
        self.clock.advance(8)
        proto, transport = self.up()
        self.clock.advance(10)
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(ari.next_attempt, self.clock.seconds() + 1)
        self.assertEqual(ari.connections, 2)
        self.assertEqual([x for x in self.logged.lines(LogLevel.info) if x.startswith("ARI")],
                         ["ARI events connected (1)", "ARI events connected (2)"])

    def test_events_delivered_and_close_frame_at_stop(self) -> None:
        ari = self.make()
        proto, transport = self.up()
        self.assertTrue(ari.connected)
        self.assertEqual(ari.state, State.UP)
        proto.onMessage(b'{"type": "StasisStart", "channel": {"id": "1.1"}}', False)
        self.assertEqual(self.events, [{"type": "StasisStart", "channel": {"id": "1.1"}}])
        transport.clear()
        d = ari.stopService()
        self.assertNoResult(d)
        # A close frame with 1000, then TCP closed once it is written.
        self.assertEqual(_close_code(transport.value()), 1000)
        self.assertTrue(transport.disconnecting)
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertFalse(ari.connected)


class RefusedTests(EventsOnClock):
    def test_wrong_password_one_error_then_slow_retries(self) -> None:
        ari = self.make()
        proto, transport = self.endpoint.tcp()
        _answer(proto, transport, 401, "Unauthorized", b'{"message": "Authentication required"}')
        self.clock.advance(0)
        (error,) = self.logged.lines(LogLevel.error)
        self.assertIn("ARI refused user 'xlbridge': HTTP 401 Unauthorized: Authentication required on the "
                      "events WebSocket", error)
        for word in ("--ari-user", "--ari-password-file", "ari.conf", "every 60 s", "not affected"):
            self.assertIn(word, error)
        self.assertEqual(ari.state, State.REFUSED)
        self.assertEqual(ari.next_attempt, 60.0)
        self.assertEqual(self.logged.lines(LogLevel.warn), [])
        # Refused again: one warning, no second error, the same minute.
        self.clock.advance(60)
        self.assertEqual(self.endpoint.times, [0, 60])
        proto, transport = self.endpoint.tcp()
        _answer(proto, transport, 401, "Unauthorized", b'{"message": "Authentication required"}')
        self.clock.advance(0)
        self.assertEqual(len(self.logged.lines(LogLevel.error)), 1)
        (still,) = self.logged.lines(LogLevel.warn)
        self.assertEqual(still, "ARI still refuses user 'xlbridge' (HTTP 401 Unauthorized: Authentication "
                                "required on the events WebSocket); next attempt in 60.0 s")
        # Fixed in ari.conf: the next attempt gets in.
        self.clock.advance(60)
        self.up()
        self.assertEqual(ari.state, State.UP)
        self.assertIn("ARI accepts user 'xlbridge' again", self.logged.lines(LogLevel.info))

    def test_read_only_user_refused_at_connect(self) -> None:
        """
        The start-up requests meet a 403: the socket is closed with 1000 and
        retried every minute.
        """
        self.on_connect = lambda: fail(ARIAuthError(
            "DELETE", "/bridges/xlbridge-access-check", "xlbridge", 403, '{"message": "Write access denied"}'))
        ari = self.make()
        proto, transport = self.up()
        (error,) = self.logged.lines(LogLevel.error)
        self.assertIn("ARI refused user 'xlbridge': HTTP 403 Forbidden: Write access denied on DELETE "
                      "/bridges/xlbridge-access-check", error)
        self.assertIn("may not make changes: set read_only = no", error)
        self.assertTrue(transport.disconnecting)
        self.clock.advance(0)
        self.assertFalse(ari.connected)
        self.assertEqual((ari.state, ari.next_attempt), (State.REFUSED, 60.0))
        self.assertEqual(self.logged.lines(LogLevel.warn), [])  # the close is ours, not a failure

    def test_refused_during_operation(self) -> None:
        """
        A REST request meets a 401 while the socket is up (a password
        changed in ari.conf): closed, retried slowly; refusals until then
        change nothing.
        """
        ari = self.make()
        proto, transport = self.up()
        self.clock.advance(100)
        refusal = ARIAuthError("POST", "/channels/1/answer", "xlbridge", 401, '{"message": "Authentication required"}')
        ari.refused(refusal)
        ari.refused(refusal)
        self.clock.advance(0)
        self.assertEqual(len(self.logged.lines(LogLevel.error)), 1)
        self.assertEqual((ari.state, ari.next_attempt), (State.REFUSED, 160.0))
        self.clock.advance(59)
        self.assertEqual(self.endpoint.times, [0])
        self.clock.advance(1)
        self.assertEqual(self.endpoint.times, [0, 160])

    def test_refused_while_stopped_is_ignored(self) -> None:
        ari = self.make()
        self.endpoint.fail(ConnectionRefusedError())
        ari.stopService()
        ari.refused(ARIAuthError("GET", "/channels", "xlbridge"))
        self.assertEqual(ari.state, State.STOPPED)
        self.assertEqual(self.logged.lines(LogLevel.error), [])


class StartupRequestTests(EventsOnClock):
    def test_failed_requests_retried_socket_stays(self) -> None:
        answers = [fail(ARIError("GET", "/bridges", 500, '{"message": "oops"}')),
                   fail(ConnectionRefusedError()), succeed(None)]
        self.on_connect = lambda: answers.pop(0)
        ari = self.make()
        self.up()
        self.assertEqual(ari.state, State.PREPARING)
        warns = self.logged.lines(LogLevel.warn)
        self.assertEqual(warns, ["ARI start-up requests failed: HTTP 500 Internal Server Error: oops; retrying "
                                 "them in 1.0 s (events still arrive)"])
        self.clock.advance(1)
        self.assertIn("connection refused", self.logged.lines(LogLevel.warn)[-1])
        self.assertIn("retrying them in 2.0 s", self.logged.lines(LogLevel.warn)[-1])
        self.clock.advance(2)
        self.assertEqual((ari.state, self.connects, ari.connections), (State.UP, 3, 1))
        self.assertTrue(ari.connected)

    def test_a_bug_is_logged_not_retried(self) -> None:
        def broken() -> Optional[Deferred[Any]]:
            raise KeyError("id")

        self.on_connect = broken
        ari = self.make()
        self.up()
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(ari.state, State.UP)
        self.clock.advance(60)
        self.assertEqual(self.connects, 1)

    def test_retry_dropped_with_the_socket(self) -> None:
        self.on_connect = lambda: fail(ARIError("GET", "/bridges", 503, ""))
        ari = self.make()
        proto, transport = self.up()
        proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(ari.state, State.BACKOFF)
        self.clock.advance(0.5)
        self.assertEqual(self.connects, 1)


class LoopbackTests(ARIHarness):
    """
    Against the fake ARI over loopback.
    """

    def test_wrong_password_logged_once_no_storm(self) -> Any:
        async def run() -> None:
            ari = self.start(password="wrong-pw")
            await wait_until(lambda: ari.events.state is State.REFUSED)
            self.assertEqual(self.fake.ws_rejected, 1)
            errors = [line for line in self.logged if "ARI refused user" in line]
            self.assertEqual(len(errors), 1)
            self.assertIn("HTTP 401 Unauthorized", errors[0])
            self.assertIn("--ari-password-file", errors[0])
            await _sleep(1.5)
            self.assertEqual(self.fake.ws_rejected, 1)  # no retry storm
            self.assertFalse(ari.events.connected)
            for line in self.logged:
                self.assertNotIn("wrong-pw", line)
                self.assertNotIn("Scheduling retry", line)
            # The password fixed in ari.conf: taken at the next attempt.
            self.fake.password = "wrong-pw"
            ari.events.refused_delay = 0.1
            assert ari.events._retry_call is not None
            ari.events._retry_call.reset(0.05)
            await wait_until(lambda: ari.events.state is State.UP)
            self.assertTrue(any("ARI accepts user 'xlbridge' again" in line for line in self.logged))

        return ensureDeferred(run())

    def test_read_only_user_refused(self) -> Any:
        async def run() -> None:
            self.fake.read_only = True
            ari = self.start()
            await wait_until(lambda: ari.events.state is State.REFUSED)
            await wait_until(lambda: not ari.events.connected and self.fake.closes == [1000])
            (error,) = [line for line in self.logged if "ARI refused user" in line]
            self.assertIn("HTTP 403 Forbidden: Write access denied", error)
            self.assertIn("read_only = no", error)
            self.assertEqual([r.method for r in self.fake.requests], ["DELETE"])
            self.assert_password_never_logged()

        return ensureDeferred(run())

    def test_upgrade_503_then_connected(self) -> Any:
        async def run() -> None:
            self.fake.ws_failures = [503]
            ari = self.start()
            await wait_until(lambda: ari.events.state is State.UP)
            self.assertEqual(self.fake.ws_failed, 1)
            self.assertTrue(any("HTTP 503 Service Unavailable" in line and "next attempt in" in line
                                for line in self.logged))

        return ensureDeferred(run())


async def _sleep(seconds: float) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds, lambda: None)
