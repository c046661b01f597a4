"""
Tests for xlbridge.egress: one clock, one packet per leg per tick, bounded
catch-up after a stall, no drift, and errors that never stop the loop.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.egress import EgressClock
from xlbridge.testing import pump_ticks


class RecordingLeg:
    def __init__(self, extension: str, clock: Clock, fail: bool = False) -> None:
        self.extension = extension
        self.clock = clock
        self.fail = fail
        self.calls: list[tuple[float, int, int]] = []

    def egress(self, packets: int, skipped: int) -> None:
        self.calls.append((round(self.clock.seconds(), 6), packets, skipped))
        if self.fail:
            raise RuntimeError("boom")


class EgressClockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.egress = EgressClock(self.clock, max_burst=3)
        self.egress.startService()
        self.addCleanup(self.egress.stopService)

    def test_one_packet_per_leg_per_tick(self) -> None:
        legs = [RecordingLeg(str(i), self.clock) for i in range(3)]
        for leg in legs:
            self.egress.add(leg)
        pump_ticks(self.clock, 50)
        for leg in legs:
            self.assertEqual(len(leg.calls), 50)
            self.assertEqual({(p, s) for _, p, s in leg.calls}, {(1, 0)})
        self.assertEqual(self.egress.late_ticks, 0)

    def test_one_shared_timer(self) -> None:
        for i in range(100):
            self.egress.add(RecordingLeg(str(i), self.clock))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_stall_caught_up_with_bounded_burst(self) -> None:
        leg = RecordingLeg("7777", self.clock)
        self.egress.add(leg)
        pump_ticks(self.clock, 5)
        self.clock.advance(0.2)  # the reactor stalls for ten intervals (lands on the grid + 1 ns)
        pump_ticks(self.clock, 3)
        self.assertEqual(leg.calls[5][1:], (3, 7))
        self.assertEqual([c[1:] for c in leg.calls[6:]], [(1, 0)] * 3)
        self.assertEqual(self.egress.late_ticks, 9)
        self.assertEqual(self.egress.skipped, 7)

    def test_repeated_stalls_resynchronise_instead_of_bursting(self) -> None:
        # An overloaded bridge whose ticks keep running late must not feed
        # the overload with bursts (each burst makes the next tick later).
        leg = RecordingLeg("7777", self.clock)
        self.egress.add(leg)
        pump_ticks(self.clock, 20)
        self.clock.advance(0.04)  # first stall: caught up with a burst
        pump_ticks(self.clock, 2)
        self.clock.advance(0.04)  # again right away: resynchronise
        self.assertEqual([c[1:] for c in leg.calls[20:]], [(2, 0), (1, 0), (1, 0), (1, 1)])
        pump_ticks(self.clock, 10)
        self.clock.advance(0.04)  # on time for a while again: bursts allowed
        self.assertEqual(leg.calls[-1][1:], (2, 0))

    def test_short_stall_fully_caught_up(self) -> None:
        leg = RecordingLeg("7777", self.clock)
        self.egress.add(leg)
        self.clock.advance(0.06)
        self.assertEqual(leg.calls, [(0.06, 3, 0)])

    def test_no_drift_over_an_hour(self) -> None:
        leg = RecordingLeg("7777", self.clock)
        self.egress.add(leg)
        # Jittery wake-ups: each step a little late or early, never a full tick.
        steps = [0.0213, 0.0187] * 90_000
        self.clock.pump(steps)
        self.assertAlmostEqual(self.clock.seconds(), 3600.0, places=6)
        sent = sum(p + s for _, p, s in leg.calls)
        self.assertEqual(sent, 180_000)

    def test_failing_leg_does_not_stop_others_or_loop(self) -> None:
        bad = RecordingLeg("bad", self.clock, fail=True)
        good = RecordingLeg("good", self.clock)
        self.egress.add(bad)
        self.egress.add(good)
        pump_ticks(self.clock, 10)
        self.assertEqual(len(good.calls), 10)
        self.assertEqual(len(bad.calls), 10)
        self.assertEqual(self.egress.errors, 10)
        # Counted every time, logged once per 10 s per leg (issue 12).
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_failures_logged_once_per_interval_per_leg(self) -> None:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        bad = RecordingLeg("bad", self.clock, fail=True)
        self.egress.add(bad)
        pump_ticks(self.clock, 500)  # ten seconds of failing ticks
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        pump_ticks(self.clock, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        first, second = [e for e in logged if e["log_level"] == LogLevel.critical]
        self.assertEqual((first["ext"], second["ext"]), ("bad", "bad"))
        self.assertNotIn("throttled_count", first)
        self.assertEqual(second["throttled_count"], 499)
        # Another leg's first failure is not held back by this one's.
        other = RecordingLeg("other", self.clock, fail=True)
        self.egress.add(other)
        pump_ticks(self.clock, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.egress.errors, 503)

    def test_held_back_failures_reported_when_the_leg_leaves(self) -> None:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        bad = RecordingLeg("bad", self.clock, fail=True)
        self.egress.add(bad)
        pump_ticks(self.clock, 5)
        self.egress.remove(bad)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        (summary,) = [e for e in logged if e["log_level"] == LogLevel.warn]
        self.assertEqual((summary["ext"], summary["throttled_count"]), ("bad", 4))

    def test_tick_failures_logged_once_per_interval(self) -> None:
        def broken(lateness: float) -> None:
            raise RuntimeError("hook bug")

        self.egress.on_tick = broken
        pump_ticks(self.clock, 50)
        self.assertEqual(self.egress.errors, 50)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.egress.ticks, 50)

    def test_remove(self) -> None:
        leg = RecordingLeg("7777", self.clock)
        self.egress.add(leg)
        pump_ticks(self.clock, 2)
        self.egress.remove(leg)
        self.egress.remove(leg)
        pump_ticks(self.clock, 2)
        self.assertEqual(len(leg.calls), 2)

    def test_lateness_measured(self) -> None:
        self.egress.add(RecordingLeg("7777", self.clock))
        self.clock.advance(0.025)
        self.assertAlmostEqual(self.egress.last_lateness, 0.005)

    def test_stop_cancels_timer(self) -> None:
        self.egress.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_burst(self) -> None:
        self.assertRaises(ValueError, EgressClock, self.clock, max_burst=0)
