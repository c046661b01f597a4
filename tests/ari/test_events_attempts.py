"""
Tests for :mod:`xlbridge.ari.events_attempts`: one attempt at a time, its
timeout, and results of attempts the owner no longer waits for.

The same behaviour through the service is in :mod:`tests.ari.test_events`;
these drive :class:`ConnectAttempts` alone, with a Deferred for the TCP
connection and a :class:`~twisted.internet.task.Clock`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.ari.events_attempts import ConnectAttempts, cancel_call


class FakeProtocol:
    """Records aborts (all :class:`ConnectAttempts` does to a protocol)."""

    def __init__(self) -> None:
        self.aborted = 0

    def dropConnection(self, abort: bool = False) -> None:
        self.aborted += 1


class Attempts(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.pending: list[Deferred[Any]] = []
        self.waiting = True
        self.connected: list[Any] = []
        self.failures: list[str] = []
        self.upgrading: Any = None  # a FakeProtocol once TCP is connected
        self.attempts = ConnectAttempts(
            self.connect, self.clock, 10.0, "ari.example:8088", lambda: self.waiting,
            self.connected.append, self.failures.append, lambda: self.upgrading,
        )

    def connect(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda d: d.errback(Failure(CancelledError())))
        self.pending.append(d)
        return d

    def test_connected(self) -> None:
        self.attempts.start()
        proto = FakeProtocol()
        self.pending[0].callback(proto)
        self.assertEqual((self.connected, self.attempts.count), ([proto], 1))
        self.attempts.done()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_tcp_failure_reported_once_with_address(self) -> None:
        self.attempts.start()
        self.pending[0].errback(Failure(ConnectionRefusedError("refused")))
        self.assertEqual(len(self.failures), 1)
        self.assertIn("ari.example:8088", self.failures[0])
        self.assertFalse(self.attempts.timed_out)

    def test_timeout_cancels_tcp(self) -> None:
        self.attempts.start()
        self.clock.advance(10.0)
        self.assertTrue(self.attempts.timed_out)
        self.assertEqual(self.failures, ["timed out: no connection to ari.example:8088 within 10 s"])

    def test_timeout_aborts_upgrade(self) -> None:
        self.attempts.start()
        self.upgrading = FakeProtocol()
        self.pending[0].callback(self.upgrading)
        self.clock.advance(10.0)
        self.assertTrue(self.attempts.timed_out)
        self.assertEqual((self.upgrading.aborted, self.failures), (1, []))

    def test_older_attempt_is_void(self) -> None:
        self.attempts.start()
        self.attempts.start()
        late = FakeProtocol()
        self.pending[0].callback(late)
        self.assertEqual((late.aborted, self.connected), (1, []))
        self.pending[1].errback(Failure(ConnectionRefusedError("refused")))
        self.assertEqual(len(self.failures), 1)

    def test_owner_no_longer_waiting(self) -> None:
        self.attempts.start()
        self.waiting = False
        self.attempts.cancel()
        self.assertEqual((self.failures, self.clock.getDelayedCalls()), ([], []))


class CancelCall(SynchronousTestCase):
    def test_pending_none_and_done(self) -> None:
        clock = Clock()
        call = clock.callLater(1.0, lambda: None)
        cancel_call(call)
        cancel_call(call)
        cancel_call(None)
        self.assertFalse(call.active())
        ran = clock.callLater(1.0, lambda: None)
        clock.advance(1.0)
        cancel_call(ran)
