"""
Tests for xlbridge.pipeline.timeline: dating positions of a leg's audio
stream (seconds since its first sample) with the reactor time the chunk
holding them arrived, extrapolation past the end, and the bound on what is
kept.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.frame import FRAME_SAMPLES, SAMPLE_RATE
from xlbridge.pipeline.timeline import Timeline


def fed(*chunks: tuple[int, float]) -> Timeline:
    t = Timeline()
    for n, now in chunks:
        t.note(n, now)
    return t


class TimelineTests(SynchronousTestCase):
    def test_empty(self) -> None:
        t = Timeline()
        self.assertEqual(t.samples, 0)
        self.assertIsNone(t.time_at(0.0))
        self.assertIsNone(t.time_at(1.0))

    def test_samples_counted(self) -> None:
        t = fed((320, 10.0), (320, 10.02), (160, 10.05))
        self.assertEqual(t.samples, 800)

    def test_position_dated_by_the_chunk_holding_it(self) -> None:
        # Three 20 ms chunks arriving at 100.0, 100.5 (late) and 100.52.
        t = fed((320, 100.0), (320, 100.5), (320, 100.52))
        self.assertEqual(t.time_at(0.0), 100.0)
        self.assertEqual(t.time_at(0.01), 100.0)
        self.assertEqual(t.time_at(0.03), 100.5)
        self.assertEqual(t.time_at(0.05), 100.52)

    def test_end_of_a_chunk_belongs_to_it(self) -> None:
        """
        An end of speech at exactly the end of a chunk (stream second 0.02:
        the last sample spoken is sample 319) dates to that chunk, not the next.
        """
        t = fed((320, 1.0), (320, 2.0))
        self.assertEqual(t.time_at(0.02), 1.0)
        self.assertEqual(t.time_at(0.02 + 1 / SAMPLE_RATE), 2.0)
        self.assertEqual(t.time_at(0.04), 2.0)

    def test_rounds_to_the_nearest_sample(self) -> None:
        t = fed((320, 1.0), (320, 2.0))
        # 320.4 samples rounds to 320 (chunk 0); 320.6 to 321 (chunk 1).
        self.assertEqual(t.time_at(320.4 / SAMPLE_RATE), 1.0)
        self.assertEqual(t.time_at(320.6 / SAMPLE_RATE), 2.0)

    def test_uneven_chunks(self) -> None:
        t = fed((100, 1.0), (1000, 2.0), (1, 3.0))
        self.assertEqual(t.time_at(100 / SAMPLE_RATE), 1.0)
        self.assertEqual(t.time_at(101 / SAMPLE_RATE), 2.0)
        self.assertEqual(t.time_at(1100 / SAMPLE_RATE), 2.0)
        self.assertEqual(t.time_at(1101 / SAMPLE_RATE), 3.0)

    def test_past_the_end_extrapolates_at_real_time(self) -> None:
        t = fed((320, 5.0), (320, 5.02))
        self.assertAlmostEqual(t.time_at(0.04), 5.02)
        self.assertAlmostEqual(t.time_at(0.14), 5.12)
        self.assertAlmostEqual(t.time_at(1.04), 6.02)

    def test_before_the_start_is_the_first_chunk(self) -> None:
        t = fed((320, 7.0))
        self.assertEqual(t.time_at(-1.0), 7.0)

    def test_bounded_history(self) -> None:
        """
        After more than two KEEP's worth of chunks the oldest KEEP are
        forgotten: recent positions still date exactly, and the sample count
        is not affected.
        """
        t = Timeline()
        n = 2 * Timeline.KEEP + 1
        for i in range(n):
            t.note(FRAME_SAMPLES, 1000.0 + i * 0.02)
        self.assertEqual(t.samples, n * FRAME_SAMPLES)
        # Chunk i holds stream seconds (0.02*i, 0.02*(i+1)].
        for i in (Timeline.KEEP, Timeline.KEEP + 1, n - 1):
            self.assertAlmostEqual(t.time_at(0.02 * i + 0.01), 1000.0 + i * 0.02)
        # A position in the forgotten part dates to the oldest chunk kept.
        self.assertAlmostEqual(t.time_at(0.01), 1000.0 + Timeline.KEEP * 0.02)
        # Past the end still extrapolates from the last chunk.
        self.assertAlmostEqual(t.time_at(n * 0.02 + 1.0), 1000.0 + (n - 1) * 0.02 + 1.0)

    def test_bound_holds_over_a_long_stream(self) -> None:
        """Memory stays bounded however long the stream runs."""
        t = Timeline()
        for i in range(10 * Timeline.KEEP):
            t.note(FRAME_SAMPLES, i * 0.02)
        last = 10 * Timeline.KEEP - 1
        self.assertAlmostEqual(t.time_at(t.samples / SAMPLE_RATE), last * 0.02)
        oldest = t.time_at(0.0)
        assert oldest is not None
        self.assertGreaterEqual(oldest, (last - 2 * Timeline.KEEP) * 0.02)
