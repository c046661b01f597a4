"""
Property tests of the AudioSocket framer (issue 15, bad input): for any
bytes, split anywhere, :class:`FrameDecoder` never raises, gives the same
tokens however the stream is cut, holds at most one message, and only
hands out frames within their kind's bound; :func:`encode` round-trips.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.transports.audiosocket_codec import (
    AUDIO_RATES,
    HEADER,
    KIND_DTMF,
    KIND_UUID,
    Frame,
    FrameDecoder,
    Malformed,
    _max_length,
    encode,
)

#: The most a decoder may hold: one header and the largest payload a u16 says.
MAX_PENDING = HEADER.size + 0xFFFF

#: Header-like bytes are the interesting ones: a kind (known or not) and a
#: length (small, at a bound, or absurd), then some payload.
messages = st.builds(
    lambda kind, length, body: HEADER.pack(kind, length) + body,
    st.sampled_from(sorted(AUDIO_RATES) + [0x00, KIND_UUID, KIND_DTMF, 0xFF]) | st.integers(0, 255),
    st.sampled_from([0, 1, 2, 15, 16, 17, 255, 256, 257, 320, 640, 641, 0xFFFF]) | st.integers(0, 0xFFFF),
    st.binary(max_size=700),
)
streams = st.lists(messages | st.binary(max_size=50), max_size=12).map(b"".join)


def cuts(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at ``points`` (sorted, clipped)."""
    edges = [0] + sorted({min(len(data), p) for p in points}) + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]


def tokens_of(chunks: list[bytes]) -> tuple[list[Any], FrameDecoder]:
    dec = FrameDecoder()
    out: list[Any] = []
    for chunk in chunks:
        out.extend(dec.feed(chunk))
        assert dec.pending <= MAX_PENDING, dec.pending
    return out, dec


class FrameDecoderProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(streams, st.lists(st.integers(0, 3000), max_size=20))
    def test_never_raises_and_any_split_is_the_same(self, data: bytes, points: list[int]) -> None:
        whole, dec_whole = tokens_of([data])
        split, dec_split = tokens_of(cuts(data, points))
        self.assertEqual(whole, split)
        self.assertEqual(dec_whole.pending, dec_split.pending)
        for token in whole:
            self.assertIsInstance(token, (Frame, Malformed))

    @settings(max_examples=300, deadline=None)
    @given(streams)
    def test_frames_are_within_their_bounds(self, data: bytes) -> None:
        out, _ = tokens_of([data])
        for token in out:
            if isinstance(token, Frame):
                self.assertLessEqual(len(token.payload), _max_length(token.kind))
                if token.kind in AUDIO_RATES:
                    self.assertTrue(token.payload and len(token.payload) % 2 == 0)
                if token.kind == KIND_UUID:
                    self.assertEqual(len(token.payload), 16)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=30))
    def test_random_bytes_one_at_a_time(self, data: bytes, points: list[int]) -> None:
        tokens_of(cuts(data, points))
        tokens_of([data[i : i + 1] for i in range(len(data))])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(sorted(AUDIO_RATES)), st.integers(1, 400)), max_size=8),
           st.lists(st.integers(0, 5000), max_size=10), st.data())
    def test_audio_round_trip(self, specs: list[tuple[int, int]], points: list[int], data: Any) -> None:
        frames = [Frame(kind, data.draw(st.binary(min_size=2 * n, max_size=2 * n))) for kind, n in specs]
        wire = b"".join(encode(f.kind, f.payload) for f in frames)
        out, dec = tokens_of(cuts(wire, points))
        self.assertEqual(out, frames)
        self.assertEqual(dec.pending, 0)

    @settings(max_examples=50, deadline=None)
    @given(st.integers(0, 255), st.integers(0x10000, 0x20000))
    def test_encode_refuses_what_a_u16_cannot_say(self, kind: int, n: int) -> None:
        with self.assertRaises(ValueError):
            encode(kind, bytes(n))
