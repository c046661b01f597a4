"""
Tests for xlbridge.logthrottle: the first occurrence at once, then at most
one line per interval carrying the count held back; flush; no clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.logthrottle import DEFAULT_INTERVAL, LogThrottle


class LogThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.throttle = LogThrottle(Logger(namespace="test"), self.clock)

    def lines(self) -> list[dict[str, Any]]:
        return list(self.logged)

    def test_default_interval_is_ten_seconds(self) -> None:
        self.assertEqual((DEFAULT_INTERVAL, self.throttle.interval), (10.0, 10.0))

    def test_first_logged_at_once_rest_held_for_the_interval(self) -> None:
        for _ in range(50):
            self.throttle.warn("send to {addr} failed", addr="a")
            self.clock.advance(0.1)
        (line,) = self.lines()
        self.assertEqual(formatEvent(line), "send to a failed")
        self.assertEqual((line["log_level"], line["addr"]), (LogLevel.warn, "a"))
        self.assertEqual((self.throttle.held, self.throttle.logged), (49, 1))

    def test_next_line_after_the_interval_carries_the_count(self) -> None:
        self.throttle.warn("boom {n}", n=1)
        for n in range(2, 5):
            self.clock.advance(3.0)
            self.throttle.warn("boom {n}", n=n)
        self.clock.advance(1.5)  # 10.5 s after the first line
        self.throttle.warn("boom {n}", n=5)
        first, second = self.lines()
        self.assertEqual(formatEvent(second), "boom 5 (3 more in the last 10 s)")
        self.assertEqual((second["throttled_count"], second["throttled_seconds"]), (3, 10.5))
        self.assertEqual(self.throttle.held, 0)
        # A new window starts at the line just logged.
        self.clock.advance(9.0)
        self.throttle.warn("boom {n}", n=6)
        self.assertEqual(len(self.lines()), 2)

    def test_quiet_spell_logs_the_next_one_plainly(self) -> None:
        self.throttle.warn("boom")
        self.clock.advance(60.0)
        self.throttle.warn("boom")
        self.assertEqual([formatEvent(e) for e in self.lines()], ["boom", "boom"])

    def test_failure_logs_the_current_exception_only_when_admitted(self) -> None:
        for i in range(3):
            try:
                raise ValueError(i)
            except ValueError:
                self.throttle.failure("bad packet on {ext}", ext="7777")
        (failure,) = self.flushLoggedErrors(ValueError)
        self.assertEqual(failure.value.args, (0,))
        (line,) = self.lines()
        self.assertEqual((line["log_level"], line["ext"]), (LogLevel.critical, "7777"))

    def test_flush_reports_the_held_count_and_starts_afresh(self) -> None:
        self.throttle.warn("send to {addr} failed", addr="a")
        self.clock.advance(1.0)
        self.throttle.warn("send to {addr} failed", addr="b")
        self.clock.advance(1.0)
        self.throttle.flush()
        summary = self.lines()[-1]
        self.assertEqual(formatEvent(summary), "1 more in the last 2 s: send to b failed")
        self.assertEqual(summary["log_level"], LogLevel.warn)
        self.throttle.flush()  # nothing held: nothing logged
        self.assertEqual(len(self.lines()), 2)
        self.throttle.warn("send to {addr} failed", addr="c")  # logged at once
        self.assertEqual(formatEvent(self.lines()[-1]), "send to c failed")

    def test_without_a_clock_everything_after_the_first_waits_for_flush(self) -> None:
        throttle = LogThrottle(Logger(namespace="test"), None)
        for _ in range(5):
            throttle.warn("boom")
        self.assertEqual(len(self.lines()), 1)
        throttle.flush()
        self.assertEqual(formatEvent(self.lines()[-1]), "4 more: boom")

    def test_zero_interval_logs_everything(self) -> None:
        throttle = LogThrottle(Logger(namespace="test"), self.clock, interval=0)
        for _ in range(3):
            throttle.warn("boom")
        self.assertEqual(len(self.lines()), 3)

    def test_negative_interval_refused(self) -> None:
        self.assertRaises(ValueError, LogThrottle, Logger(), self.clock, -1.0)


class OncePerKeyTests(SynchronousTestCase):
    def test_once_per_key_then_summaries(self) -> None:
        from twisted.internet.task import Clock
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import Logger, formatEvent, globalLogPublisher

        from xlbridge.logthrottle import OncePerKey

        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        once = OncePerKey(Logger(), clock, max_keys=2, summary_s=60)
        said = [once.warn(k, "refused {who}", "{count} more", who=k) for k in ["a", "a", "b", "c", "d", "a"]]
        self.assertEqual(said, [True, False, True, False, False, False])
        self.assertEqual([formatEvent(e) for e in logged], ["refused a", "refused b", "1 more"])
        clock.advance(60)
        once.warn("e", "refused {who}", "{count} more", who="e")
        self.assertEqual(formatEvent(logged[-1]), "2 more")
