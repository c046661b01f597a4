"""
Joining externalMedia's REST answer and its channel's StasisStart, in
either order.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.ari.stasis import MAX_EARLY, MEDIA_STASIS_TIMEOUT, StasisWaiter


class StasisWaiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.w = StasisWaiter(self.clock)

    def test_event_after_the_answer(self) -> None:
        d = self.w.wait("m1")
        self.assertNoResult(d)
        self.w.entered("m1")
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_event_before_the_answer(self) -> None:
        self.w.entered("m1")
        self.assertIsNone(self.successResultOf(self.w.wait("m1")))
        self.assertEqual(self.w.early, {})

    def test_timeout(self) -> None:
        d = self.w.wait("m1")
        self.clock.advance(MEDIA_STASIS_TIMEOUT)
        self.assertIn("did not enter Stasis", str(self.failureResultOf(d, TimeoutError).value))
        self.w.entered("m1")  # too late: remembered as early, harmlessly
        self.assertEqual(self.w.waiting, {})

    def test_forget_releases_the_waiter(self) -> None:
        d = self.w.wait("m1")
        self.w.forget("m1")
        self.successResultOf(d)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_early_events_are_bounded(self) -> None:
        for i in range(MAX_EARLY + 10):
            self.w.entered(f"x{i}")
        self.assertEqual(len(self.w.early), MAX_EARLY)
        self.assertNotIn("x0", self.w.early)
