"""
Tests for xlbridge.audio.pcm16: 16-bit PCM to and from int16 arrays in
big-endian (RTP L16) and little-endian (AudioSocket, Deepgram, ElevenLabs)
byte order, and CodecError for odd lengths.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.pcm16 import (
    CodecError,
    from_big_endian,
    from_little_endian,
    little_endian_bytes,
    pcm16_samples,
    to_big_endian,
)


class ByteOrderHelperTests(SynchronousTestCase):
    def test_big_endian_helpers(self) -> None:
        self.assertEqual(to_big_endian(np.array([0x0102], np.int16)), b"\x01\x02")
        self.assertEqual(from_big_endian(b"\x01\x02").tolist(), [0x0102])
        self.assertRaises(CodecError, from_big_endian, b"\x01")

    def test_little_endian_helpers(self) -> None:
        x = np.array([0x0102, -2], dtype=np.int16)
        self.assertEqual(little_endian_bytes(x), b"\x02\x01\xfe\xff")
        back = from_little_endian(b"\x02\x01\xfe\xff")
        self.assertEqual(back.tolist(), [0x0102, -2])
        self.assertTrue(back.dtype.isnative)
        self.assertTrue(back.flags.writeable)
        self.assertRaises(CodecError, from_little_endian, b"\x00\x01\x02")
        self.assertTrue(issubclass(CodecError, ValueError))

    @settings(max_examples=50, deadline=None)
    @given(hnp.arrays(np.int16, st.integers(0, 700)))
    def test_property_pcm_helpers_round_trip(self, x: np.ndarray) -> None:
        np.testing.assert_array_equal(from_big_endian(to_big_endian(x)), x)
        np.testing.assert_array_equal(from_little_endian(little_endian_bytes(x)), x)

    def test_pcm16_samples(self) -> None:
        self.assertEqual(pcm16_samples(b"\x01\x02", ">i2").tolist(), [0x0102])
        self.assertEqual(pcm16_samples(b"\x01\x02", "<i2").tolist(), [0x0201])
        self.assertEqual(pcm16_samples(b"", ">i2").tolist(), [])
        self.assertTrue(pcm16_samples(b"\x01\x02", ">i2").dtype.isnative)
        self.assertRaises(CodecError, pcm16_samples, b"\x01", "<i2")
