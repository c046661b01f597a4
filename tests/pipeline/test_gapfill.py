"""
Silence for the recogniser while a caller's audio is missing.
"""

from __future__ import annotations

import numpy as np
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.pipeline.gapfill import FILL_MAX_S, GapFiller


class GapFillerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fed: list[np.ndarray] = []
        self.noted: list[tuple[int, float]] = []
        self.gaps = GapFiller(self.clock, self.fed.append, lambda n, t: self.noted.append((n, t)))

    def talk(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            self.gaps.audio(self.clock.seconds(), 320)
            self.clock.advance(0.02)

    def test_nothing_fed_while_audio_flows(self) -> None:
        self.talk(3.0)
        self.assertEqual(self.fed, [])

    def test_silence_fed_in_real_time_after_a_gap_then_stops(self) -> None:
        self.talk(1.0)
        last = self.clock.seconds() - 0.02
        self.clock.advance(0.5)
        fed_half = len(self.fed)
        # The gap so far (0.52 s since the last audio) in whole 20 ms frames.
        self.assertEqual(fed_half, 26)
        for _ in range(100):
            self.clock.advance(0.1)
        self.assertEqual(len(self.fed), round(FILL_MAX_S / 0.02))
        self.assertTrue(all(len(f) == 320 and not f.any() for f in self.fed))
        # Stream time advances with the silence, at the times it stands for.
        self.assertEqual([n for n, _ in self.noted], [320] * len(self.fed))
        self.assertAlmostEqual(self.noted[-1][1], last + FILL_MAX_S, places=6)
        # No timer left once the fill is done.
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_audio_resuming_restarts_the_watch(self) -> None:
        self.talk(0.5)
        self.clock.advance(0.3)
        first = len(self.fed)
        self.assertGreater(first, 0)
        self.talk(0.5)
        self.assertEqual(len(self.fed), first)
        self.clock.advance(0.3)
        self.assertGreater(len(self.fed), first)

    def test_stop_cancels(self) -> None:
        self.talk(0.2)
        self.gaps.stop()
        self.clock.advance(5)
        self.assertEqual(self.fed, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
