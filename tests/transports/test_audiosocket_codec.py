"""
Tests for xlbridge.transports.audiosocket_codec: the sans-I/O AudioSocket
framer (header byte order, any split, bounds per kind, pending bytes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.events import DropReason
from xlbridge.transports.audiosocket_codec import (
    HANGUP,
    Frame,
    FrameDecoder,
    Malformed,
    encode,
    format_uuid,
    uuid_frame,
)

UUIDS = {
    "7777": "0a1b2c3d-0000-4000-8000-00000000a777",
    "8888": "0a1b2c3d-0000-4000-8000-00000000b888",
}


class FrameDecoderTests(SynchronousTestCase):
    def test_header_is_big_endian_payload_little_endian(self) -> None:
        samples = np.array([1, -2, 0x1234], dtype=np.int16)
        data = encode(0x12, samples.astype("<i2").tobytes())
        self.assertEqual(data[:3], b"\x12\x00\x06")
        self.assertEqual(data[3:5], b"\x01\x00")
        self.assertEqual(FrameDecoder().feed(data), [Frame(0x12, data[3:])])

    def test_any_split_gives_the_same_frames(self) -> None:
        stream = uuid_frame(UUIDS["7777"]) + encode(0x10, bytes(320)) + encode(0x03, b"5") + HANGUP
        whole = FrameDecoder().feed(stream)
        self.assertEqual([t.kind for t in whole], [0x01, 0x10, 0x03, 0x00])  # type: ignore[union-attr]
        for size in (1, 2, 3, 7, 100):
            d = FrameDecoder()
            got: list[Any] = []
            for i in range(0, len(stream), size):
                got.extend(d.feed(stream[i : i + size]))
            self.assertEqual(got, whole)
            self.assertEqual(d.pending, 0)

    def test_uuid_is_formatted_8_4_4_4_12(self) -> None:
        (f,) = FrameDecoder().feed(uuid_frame(UUIDS["8888"]))
        assert isinstance(f, Frame)
        self.assertEqual(format_uuid(f.payload), UUIDS["8888"])

    def test_rate_from_kind(self) -> None:
        rates = [Frame(k, b"").rate for k in (0x10, 0x12, 0x15, 0x18, 0x01)]
        self.assertEqual(rates, [8000, 16000, 44100, 192000, None])

    def test_unknown_kind_and_absurd_length_skipped_without_buffering(self) -> None:
        d = FrameDecoder()
        # 0x10 (8 kHz) accepts at most 1 s = 16000 bytes.
        out = d.feed(b"\x10\xff\xff" + bytes(1000))
        self.assertEqual(out, [])
        self.assertEqual(d.pending, 65535 - 1000)
        out = d.feed(bytes(65535 - 1000) + b"\x42\x00\x02ab" + encode(0x12, b"\x01\x00"))
        self.assertEqual(
            out,
            [
                Malformed(DropReason.AUDIOSOCKET_LENGTH, 0x10, 65535),
                Malformed(DropReason.AUDIOSOCKET_KIND, 0x42, 2),
                Frame(0x12, b"\x01\x00"),
            ],
        )

    def test_bad_sizes_per_kind(self) -> None:
        out = FrameDecoder().feed(encode(0x12) + encode(0x12, b"abc") + encode(0x01, b"x" * 8))
        self.assertEqual([t.reason for t in out], [DropReason.AUDIOSOCKET_LENGTH] * 3)  # type: ignore[union-attr]

    def test_half_frame_is_pending(self) -> None:
        d = FrameDecoder()
        self.assertEqual(d.feed(encode(0x12, bytes(640))[:100]), [])
        self.assertEqual(d.pending, 100)
