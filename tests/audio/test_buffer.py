"""
Tests for xlbridge.audio.buffer: bounded, drop-oldest, frame reads.
"""

from __future__ import annotations

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.buffer import STANDING_WINDOW, OutboundBuffer
from xlbridge.audio.frame import FRAME_SAMPLES


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


class StandingDelayTests(SynchronousTestCase):
    """
    The two rules that keep a backlog from standing in the buffer.
    """

    def frame(self, value: int) -> np.ndarray:
        return np.full(FRAME_SAMPLES, value, np.int16)

    def test_idle_drops_everything_counted(self) -> None:
        buf = OutboundBuffer(200)
        for i in range(5):
            buf.write(self.frame(i + 1))
        buf.idle()
        self.assertEqual((len(buf), buf.dropped_samples, buf.idle_samples), (0, 5 * FRAME_SAMPLES, 5 * FRAME_SAMPLES))
        buf.write(self.frame(9))
        self.assertEqual(int(buf.read_frame()[0]), 9)

    def test_a_backlog_standing_a_whole_window_is_cut_to_one_frame(self) -> None:
        """
        Five frames ahead, then one in, one out: after one window the
        five oldest are dropped and the listener hears each frame as soon
        as it is written.
        """
        buf = OutboundBuffer(200)
        n = 0
        for _ in range(5):
            n += 1
            buf.write(self.frame(n))
        out = []
        for _ in range(STANDING_WINDOW + 5):
            n += 1
            buf.write(self.frame(n))
            out.append(int(buf.read_frame()[0]))
        # Before the cut: 5 frames behind; after it: the frame just written.
        self.assertEqual(out[0], 1)
        self.assertEqual(out[STANDING_WINDOW - 2], STANDING_WINDOW - 1)
        self.assertEqual(out[STANDING_WINDOW - 1], STANDING_WINDOW + 5)
        self.assertEqual(out[-1], n)
        self.assertEqual(buf.trimmed_samples, 5 * FRAME_SAMPLES)
        self.assertEqual(buf.dropped_samples, 5 * FRAME_SAMPLES)
        self.assertEqual(out, sorted(out))  # in order, no repeats

    def test_jitter_is_left_alone(self) -> None:
        """
        Frames arriving in pairs every other tick (40 ms of jitter) make
        the depth swing between one and two frames: nothing is cut.
        """
        buf = OutboundBuffer(200)
        n = 0
        out = []
        for tick in range(10 * STANDING_WINDOW):
            if tick % 2 == 0:
                for _ in range(2):
                    n += 1
                    buf.write(self.frame(n))
            frame = buf.read_frame()
            if frame is not None:
                out.append(int(frame[0]))
        self.assertEqual(buf.dropped_samples, 0)
        self.assertEqual(out, list(range(1, len(out) + 1)))

    def test_a_gap_starts_the_window_again(self) -> None:
        """
        Three frames ahead for most of a window, then the buffer runs dry
        (the talker paused): no cut, it was not standing.
        """
        buf = OutboundBuffer(200)
        for i in range(3):
            buf.write(self.frame(i))
        for _ in range(STANDING_WINDOW - 2):
            buf.write(self.frame(7))
            buf.read_frame()
        while buf.read_frame() is not None:
            pass
        for _ in range(STANDING_WINDOW):
            buf.write(self.frame(8))
            buf.read_frame()
        self.assertEqual(buf.trimmed_samples, 0)
