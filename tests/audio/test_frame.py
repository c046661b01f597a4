"""
Tests for xlbridge.audio.frame: the internal format's constants, silence
and coercion to native int16.
"""

from __future__ import annotations

from array import array

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.frame import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, as_samples, silence


class FrameTests(SynchronousTestCase):
    def test_one_frame_is_20_ms_of_16_khz(self) -> None:
        self.assertEqual((SAMPLE_RATE, FRAME_MS, FRAME_SAMPLES), (16000, 20, 320))

    def test_silence_is_a_fresh_zero_frame(self) -> None:
        a, b = silence(), silence()
        self.assertEqual((a.dtype, a.shape, int(np.abs(a).max())), (np.dtype(np.int16), (320,), 0))
        a[0] = 5
        self.assertEqual(int(b[0]), 0)
        self.assertEqual(len(silence(7)), 7)

    def test_as_samples_keeps_native_int16_without_copying(self) -> None:
        x = np.arange(10, dtype=np.int16)
        self.assertIs(as_samples(x), x)

    def test_as_samples_converts_other_shapes(self) -> None:
        for data in (array("h", [1, -2, 3]), [1, -2, 3], np.array([1, -2, 3], dtype=">i2")):
            y = as_samples(data)
            self.assertEqual((y.dtype, y.tolist()), (np.dtype(np.int16), [1, -2, 3]))
            self.assertTrue(y.dtype.isnative and y.flags["C_CONTIGUOUS"])
        strided = np.arange(10, dtype=np.int16)[::2]
        self.assertTrue(as_samples(strided).flags["C_CONTIGUOUS"])
