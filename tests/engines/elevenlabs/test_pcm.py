"""
Tests for :mod:`xlbridge.engines.elevenlabs.pcm`: S16LE bytes cut anywhere
come out as the same native-order samples, bit for bit.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.elevenlabs.pcm import PCMChunker


def native(pcm: bytes) -> np.ndarray:
    """S16LE bytes as native int16 samples."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


class PCMChunkerTests(SynchronousTestCase):
    @given(st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0), st.lists(st.integers(1, 50)))
    def test_any_split_is_bit_exact(self, pcm: bytes, cuts: list[int]) -> None:
        chunker, out, pos = PCMChunker(), [], 0
        for n in cuts + [len(pcm)]:
            got = chunker.feed(pcm[pos : pos + n])
            pos += n
            if got is not None:
                out.append(got)
        joined = np.concatenate(out) if out else np.zeros(0, np.int16)
        self.assertEqual(joined.tobytes(), native(pcm).tobytes())
        self.assertEqual(chunker.pending, 0)

    def test_odd_byte_is_carried_then_forgotten_on_reset(self) -> None:
        chunker = PCMChunker()
        self.assertIsNone(chunker.feed(b"\x01"))
        self.assertEqual(chunker.pending, 1)
        samples = chunker.feed(b"\x01\x02")
        assert samples is not None
        self.assertEqual((samples.dtype, samples.tolist()), (np.int16, [0x0101]))
        self.assertEqual(chunker.pending, 1)
        chunker.reset()
        self.assertEqual(chunker.pending, 0)
        samples = chunker.feed(b"\x00\x80")
        assert samples is not None
        self.assertEqual(samples.tolist(), [-32768])  # little-endian, signed
