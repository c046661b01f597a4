"""
Our side of closing a WebSocket media connection
(:class:`~xlbridge.transports.websocket_close.CloseHandshake`) on a test
clock: the close that answers ours is recognised, TCP is dropped after
:data:`~xlbridge.transports.websocket_close.CLOSE_TIMEOUT` otherwise, and
failures are logged, never raised.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.transports.websocket_close import CLOSE_TIMEOUT, CloseHandshake


class Conn:
    """An Autobahn protocol's close and drop, recorded."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.closes: list[int] = []
        self.drops: list[bool] = []

    def sendClose(self, code: Any = None) -> None:
        if self.fail:
            raise RuntimeError("gone")
        self.closes.append(code)

    def dropConnection(self, abort: bool = False) -> None:
        if self.fail:
            raise RuntimeError("gone")
        self.drops.append(abort)


class CloseHandshakeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.logged: list[LogEvent] = []
        observer = cast(ILogObserver, self.logged.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.close = CloseHandshake("7777", self.clock, Logger())

    def test_answered_close_cancels_the_drop(self) -> None:
        conn = Conn()
        self.close.close(conn)
        self.assertEqual(conn.closes, [1000])
        self.assertIs(self.close.closing, conn)
        self.assertFalse(self.close.closed(Conn()))  # someone else's close
        self.assertTrue(self.close.closed(conn))
        self.assertIsNone(self.close.closing)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.close.closed(conn))  # only once

    def test_unanswered_close_drops_tcp(self) -> None:
        conn = Conn()
        self.close.close(conn)
        self.clock.advance(CLOSE_TIMEOUT - 0.01)
        self.assertEqual(conn.drops, [])
        self.clock.advance(0.01)
        self.assertEqual(conn.drops, [True])
        self.assertIsNone(self.close.closing)
        self.assertFalse(self.close.closed(conn))

    def test_cancel_timer_keeps_recognising_the_close(self) -> None:
        conn = Conn()
        self.close.close(conn)
        self.close.cancel_timer()
        self.clock.advance(CLOSE_TIMEOUT * 2)
        self.assertEqual(conn.drops, [])
        self.assertTrue(self.close.closed(conn))

    def test_failures_are_logged_not_raised(self) -> None:
        conn = Conn(fail=True)
        self.close.close(conn)
        self.clock.advance(CLOSE_TIMEOUT)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(len(self.logged), 2)
