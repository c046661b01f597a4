"""
Tests for xlbridge.audio.g711: code points from the G.711 tables, full
agreement with scalar ports of the ITU-T G.191 reference coder, round trips
and monotonicity.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio import g711

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
ALL_CODES = bytes(range(256))


# Scalar ports of the ITU-T G.191 STL g711.c reference, written
# independently of the table construction in the module under test.


def itu_ulaw_compress(lin: int) -> int:
    absno = ((~lin) >> 2) + 33 if lin < 0 else (lin >> 2) + 33
    if absno > 0x1FFF:
        absno = 0x1FFF
    i = absno >> 6
    segno = 1
    while i != 0:
        segno += 1
        i >>= 1
    high = 8 - segno
    low = 0x0F - ((absno >> segno) & 0x0F)
    out = (high << 4) | low
    if lin >= 0:
        out |= 0x80
    return out


def itu_ulaw_expand(code: int) -> int:
    sign = -1 if code < 0x80 else 1
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    segment = exponent + 1
    mantissa &= 0x0F
    step = 4 << segment
    return sign * ((0x80 << exponent) + step * mantissa + step // 2 - 4 * 33)


def itu_alaw_compress(lin: int) -> int:
    ix = (~lin) >> 4 if lin < 0 else lin >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix -= 16
        ix += iexp << 4
    if lin >= 0:
        ix |= 0x80
    return ix ^ 0x55


def itu_alaw_expand(code: int) -> int:
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x08
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


class UlawTests(SynchronousTestCase):
    def test_silence(self) -> None:
        self.assertEqual(g711.ulaw_encode(np.zeros(3, np.int16)), b"\xff\xff\xff")

    def test_known_decodes(self) -> None:
        got = g711.ulaw_decode(bytes([0x00, 0x80, 0xFF, 0x7F, 0x0F, 0x8F, 0xFE]))
        self.assertEqual(got.tolist(), [-32124, 32124, 0, 0, -16764, 16764, 8])

    def test_extremes(self) -> None:
        x = np.array([32767, -32768, 32635, -32635], dtype=np.int16)
        self.assertEqual(g711.ulaw_encode(x), bytes([0x80, 0x00, 0x80, 0x00]))

    def test_matches_itu_encoder_for_every_input(self) -> None:
        expected = bytes(itu_ulaw_compress(int(v)) for v in ALL_INT16)
        self.assertEqual(g711.ulaw_encode(ALL_INT16), expected)

    def test_matches_itu_decoder_for_every_code(self) -> None:
        expected = [itu_ulaw_expand(c) for c in range(256)]
        self.assertEqual(g711.ulaw_decode(ALL_CODES).tolist(), expected)

    def test_negative_small_values_use_ones_complement(self) -> None:
        # -4 .. -1 quantise like magnitude 0 (G.191, Asterisk AST_LIN2MU);
        # a naive per-sample port of linear2ulaw() would give 0x7E for -4.
        x = np.array([-1, -2, -3, -4, -5], dtype=np.int16)
        self.assertEqual(g711.ulaw_encode(x), bytes([0x7F] * 4 + [0x7E]))

    def test_encode_decode_every_code(self) -> None:
        # Every code survives decode -> encode, except 0x7F ("negative
        # zero"), which decodes to 0 and so comes back as 0xFF.
        again = g711.ulaw_encode(g711.ulaw_decode(ALL_CODES))
        expected = bytearray(ALL_CODES)
        expected[0x7F] = 0xFF
        self.assertEqual(again, bytes(expected))

    def test_monotonic(self) -> None:
        y = g711.ulaw_decode(g711.ulaw_encode(ALL_INT16)).astype(np.int32)
        self.assertTrue(np.all(np.diff(y) >= 0))
        # and the decode table itself is ordered: codes 0x00..0x7F rise
        # from -32124 to 0, 0x80..0xFF fall from 32124 to 0.
        d = g711.ulaw_decode(ALL_CODES).astype(np.int32)
        self.assertTrue(np.all(np.diff(d[:128]) > 0))
        self.assertTrue(np.all(np.diff(d[128:]) < 0))

    def test_quantisation_error_is_bounded(self) -> None:
        x = ALL_INT16.astype(np.int32)
        y = g711.ulaw_decode(g711.ulaw_encode(ALL_INT16)).astype(np.int32)
        inside = np.abs(x) <= 32635
        err = np.abs(y - x)[inside]
        self.assertTrue(np.all(err <= np.abs(x[inside]) // 16 + 8))

    def test_decode_returns_fresh_writable_array(self) -> None:
        a = g711.ulaw_decode(b"\x00\x01")
        self.assertEqual(a.dtype, np.dtype(np.int16))
        self.assertTrue(a.dtype.isnative)
        self.assertTrue(a.flags.writeable)
        a[:] = 1
        self.assertEqual(g711.ulaw_decode(b"\x00\x01").tolist(), [-32124, -31100])

    def test_empty(self) -> None:
        self.assertEqual(g711.ulaw_encode(np.zeros(0, np.int16)), b"")
        self.assertEqual(len(g711.ulaw_decode(b"")), 0)

    @settings(max_examples=50, deadline=None)
    @given(hnp.arrays(np.int16, st.integers(0, 400)))
    def test_property_matches_reference(self, x: np.ndarray) -> None:
        self.assertEqual(
            g711.ulaw_encode(x), bytes(itu_ulaw_compress(int(v)) for v in x)
        )


class AlawTests(SynchronousTestCase):
    def test_silence(self) -> None:
        self.assertEqual(g711.alaw_encode(np.zeros(3, np.int16)), b"\xd5\xd5\xd5")

    def test_known_decodes(self) -> None:
        got = g711.alaw_decode(bytes([0x55, 0xD5, 0x2A, 0xAA, 0x54, 0xD4]))
        self.assertEqual(got.tolist(), [-8, 8, -32256, 32256, -24, 24])

    def test_extremes(self) -> None:
        x = np.array([32767, -32768, 1, -1, 15, -16, -17], dtype=np.int16)
        self.assertEqual(
            g711.alaw_encode(x), bytes([0xAA, 0x2A, 0xD5, 0x55, 0xD5, 0x55, 0x54])
        )

    def test_matches_itu_encoder_for_every_input(self) -> None:
        expected = bytes(itu_alaw_compress(int(v)) for v in ALL_INT16)
        self.assertEqual(g711.alaw_encode(ALL_INT16), expected)

    def test_matches_itu_decoder_for_every_code(self) -> None:
        expected = [itu_alaw_expand(c) for c in range(256)]
        self.assertEqual(g711.alaw_decode(ALL_CODES).tolist(), expected)

    def test_encode_decode_every_code(self) -> None:
        self.assertEqual(g711.alaw_encode(g711.alaw_decode(ALL_CODES)), ALL_CODES)

    def test_monotonic(self) -> None:
        y = g711.alaw_decode(g711.alaw_encode(ALL_INT16)).astype(np.int32)
        self.assertTrue(np.all(np.diff(y) >= 0))
        self.assertEqual(len(np.unique(y)), 256)

    def test_quantisation_error_is_bounded(self) -> None:
        x = ALL_INT16.astype(np.int32)
        y = g711.alaw_decode(g711.alaw_encode(ALL_INT16)).astype(np.int32)
        self.assertTrue(np.all(np.abs(y - x) <= np.maximum(np.abs(x) // 16, 16)))

    def test_decode_returns_fresh_writable_array(self) -> None:
        a = g711.alaw_decode(b"\x55")
        self.assertTrue(a.flags.writeable)
        self.assertTrue(a.dtype.isnative)
        a[0] = 1234
        self.assertEqual(g711.alaw_decode(b"\x55").tolist(), [-8])

    def test_accepts_non_native_and_sliced_input(self) -> None:
        x = np.arange(-2000, 2000, 7, dtype=np.int16)
        expected = g711.alaw_encode(x)
        self.assertEqual(g711.alaw_encode(x.astype(">i2")), expected)
        self.assertEqual(g711.alaw_encode(np.repeat(x, 2)[::2]), expected)

    @settings(max_examples=50, deadline=None)
    @given(hnp.arrays(np.int16, st.integers(0, 400)))
    def test_property_matches_reference(self, x: np.ndarray) -> None:
        self.assertEqual(
            g711.alaw_encode(x), bytes(itu_alaw_compress(int(v)) for v in x)
        )
