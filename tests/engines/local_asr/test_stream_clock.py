"""
Tests for :mod:`xlbridge.engines.local_asr.stream_clock`: stream time in
20 ms frames, shared by the pocketsphinx, Vosk and Whisper streams.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES, FRAME_S, StreamClock


class StreamClockTests(SynchronousTestCase):
    def test_frame(self) -> None:
        """320 int16 samples, 20 ms at 16 kHz."""
        self.assertEqual((FRAME_BYTES, FRAME_S), (640, 0.02))

    def test_position_counts_fed_skipped_and_tail(self) -> None:
        clock = StreamClock()
        self.assertEqual(clock.position, 0.0)
        clock.frames = 10
        self.assertAlmostEqual(clock.position, 0.2)
        clock.skip(5)
        clock.skip(5)
        self.assertEqual((clock.frames, clock.skipped), (10, 10))
        self.assertAlmostEqual(clock.position, 0.4)
        clock.tail_samples = 160
        self.assertAlmostEqual(clock.position, 0.41)

    def test_check_frame(self) -> None:
        clock = StreamClock()
        clock.check_frame(b"\0" * FRAME_BYTES)
        e = self.assertRaises(ValueError, clock.check_frame, b"\0" * 320)
        self.assertIn("640 bytes, got 320", str(e))
        clock.finished = True
        e = self.assertRaises(ValueError, clock.check_frame, b"\0" * FRAME_BYTES)
        self.assertIn("already finished", str(e))
