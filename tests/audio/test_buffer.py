"""
Tests for xlbridge.audio.buffer: bounded, drop-oldest, frame reads.
"""

from __future__ import annotations

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.buffer import OutboundBuffer


def ramp(start: int, n: int) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.int16)


class OutboundBufferTests(SynchronousTestCase):
    def test_frames_in_order(self) -> None:
        b = OutboundBuffer(200)
        b.write(ramp(0, 640))
        f1, f2 = b.read_frame(), b.read_frame()
        assert f1 is not None and f2 is not None
        self.assertEqual(f1.tolist(), list(range(320)))
        self.assertEqual(f2.tolist(), list(range(320, 640)))
        self.assertIsNone(b.read_frame())

    def test_drop_oldest_when_full(self) -> None:
        b = OutboundBuffer(40)  # 640 samples
        self.assertEqual(b.write(ramp(0, 600)), 0)
        self.assertEqual(b.write(ramp(600, 100)), 60)
        self.assertEqual((len(b), b.dropped_samples, b.overflows), (640, 60, 1))
        f = b.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 60)

    def test_partial_frame_waits_one_tick_then_pads(self) -> None:
        b = OutboundBuffer(200)
        b.write(ramp(1, 100))
        self.assertIsNone(b.read_frame())
        f = b.read_frame()
        assert f is not None
        self.assertEqual(f[:100].tolist(), list(range(1, 101)))
        self.assertFalse(f[100:].any())
        self.assertEqual(len(b), 0)

    def test_partial_completed_in_time_is_not_padded(self) -> None:
        b = OutboundBuffer(200)
        b.write(ramp(1, 100))
        self.assertIsNone(b.read_frame())
        b.write(ramp(101, 300))
        f = b.read_frame()
        assert f is not None
        self.assertEqual(f.tolist(), list(range(1, 321)))

    def test_depth_and_clear(self) -> None:
        b = OutboundBuffer(200)
        b.write(ramp(0, 1600))
        self.assertEqual(b.depth_ms, 100.0)
        b.clear()
        self.assertEqual((len(b), b.dropped_samples), (0, 0))

    def test_minimum_bound(self) -> None:
        self.assertRaises(ValueError, OutboundBuffer, 10)
