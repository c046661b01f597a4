"""
Tests for xlbridge.rtp.packet: RFC 3550 parse/build and the sender state.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.events import DropReason
from xlbridge.rtp.packet import RTPParseError, RTPSender, build, parse


def header(b0: int = 0x80, b1: int = 118, seq: int = 1, ts: int = 2, ssrc: int = 3) -> bytes:
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc)


class ParseTests(SynchronousTestCase):
    def test_fields(self) -> None:
        pkt = parse(header(0x80, 0x80 | 9, 0xBEEF, 0xDEADBEEF, 0x01020304) + b"xyz")
        self.assertEqual(
            (pkt.payload_type, pkt.marker, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.payload),
            (9, True, 0xBEEF, 0xDEADBEEF, 0x01020304, b"xyz"),
        )

    def test_csrc_list_skipped(self) -> None:
        pkt = parse(header(0x82) + struct.pack("!II", 7, 8) + b"pay")
        self.assertEqual(pkt.csrcs, (7, 8))
        self.assertEqual(pkt.payload, b"pay")

    def test_extension_skipped(self) -> None:
        ext = struct.pack("!HH", 0xBEDE, 2) + b"\x01" * 8
        pkt = parse(header(0x90) + ext + b"pay")
        self.assertEqual(pkt.payload, b"pay")

    def test_csrc_and_extension_and_padding(self) -> None:
        data = header(0x80 | 0x20 | 0x10 | 1) + struct.pack("!I", 5)
        data += struct.pack("!HH", 1, 1) + b"abcd" + b"pay" + b"\x00\x00\x03"
        pkt = parse(data)
        self.assertEqual((pkt.csrcs, pkt.payload), ((5,), b"pay"))

    def test_padding_stripped(self) -> None:
        self.assertEqual(parse(header(0xA0) + b"pay" + b"\x00\x00\x00\x04").payload, b"pay")

    def test_empty_payload_is_valid_rtp(self) -> None:
        self.assertEqual(parse(header()).payload, b"")

    def assertDrop(self, data: bytes, reason: DropReason) -> None:
        e = self.assertRaises(RTPParseError, parse, data)
        self.assertIs(e.reason, reason)

    def test_malformed(self) -> None:
        self.assertDrop(b"", DropReason.SHORT)
        self.assertDrop(header()[:11], DropReason.SHORT)
        self.assertDrop(header(0x40), DropReason.VERSION)
        self.assertDrop(header(0x00), DropReason.VERSION)
        self.assertDrop(header(0xC0), DropReason.VERSION)
        self.assertDrop(header(0x83) + b"\x00" * 8, DropReason.CSRC)
        self.assertDrop(header(0x90) + b"\x00\x01", DropReason.EXTENSION)
        self.assertDrop(header(0x90) + struct.pack("!HH", 0, 3) + b"\x00" * 8, DropReason.EXTENSION)
        self.assertDrop(header(0xA0) + b"ab\x00", DropReason.PADDING)
        self.assertDrop(header(0xA0) + b"ab\x09", DropReason.PADDING)
        self.assertDrop(header(0xA0), DropReason.PADDING)

    @given(st.binary(max_size=80))
    def test_never_raises_anything_else(self, data: bytes) -> None:
        try:
            parse(data)
        except RTPParseError:
            pass

    @given(
        pt=st.integers(0, 127),
        seq=st.integers(0, 0xFFFF),
        ts=st.integers(0, 0xFFFFFFFF),
        ssrc=st.integers(0, 0xFFFFFFFF),
        marker=st.booleans(),
        payload=st.binary(max_size=700),
        csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
        padding=st.integers(0, 255),
    )
    def test_round_trip(self, pt, seq, ts, ssrc, marker, payload, csrcs, padding) -> None:  # type: ignore[no-untyped-def]
        pkt = parse(build(pt, seq, ts, ssrc, payload, marker, tuple(csrcs), padding))
        self.assertEqual(
            (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.marker, pkt.payload, pkt.csrcs),
            (pt, seq, ts, ssrc, marker, payload, tuple(csrcs)),
        )

    def test_build_rejects_bad_pt(self) -> None:
        self.assertRaises(ValueError, build, 128, 0, 0, 0, b"")


class SenderTests(SynchronousTestCase):
    def sender(self, step: int = 160, values: tuple[int, ...] = (0xAAAA5555, 0xFFFF, 0xFFFFFF00)) -> RTPSender:
        it = iter(values)
        return RTPSender(9, step, random32=lambda: next(it))

    def test_initial_values_from_random_source(self) -> None:
        s = self.sender()
        p = parse(s.packet(b"x", True))
        self.assertEqual((p.ssrc, p.sequence, p.timestamp), (0xAAAA5555, 0xFFFF, 0xFFFFFF00))

    def test_random_by_default(self) -> None:
        a, b = RTPSender(9, 160), RTPSender(9, 160)
        self.assertNotEqual((a.ssrc, a.sequence, a.timestamp), (b.ssrc, b.sequence, b.timestamp))

    def test_wraparound(self) -> None:
        s = self.sender()
        pkts = [parse(s.packet(b"x", True)) for _ in range(3)]
        self.assertEqual([p.sequence for p in pkts], [0xFFFF, 0, 1])
        self.assertEqual([p.timestamp for p in pkts], [0xFFFFFF00, 0xFFFFFFA0, 0x40])

    def test_marker_on_first_packet_and_each_talkspurt(self) -> None:
        s = self.sender()
        pattern = [False, False, True, True, False, True, True]
        markers = [parse(s.packet(b"x", speech)).marker for speech in pattern]
        self.assertEqual(markers, [True, False, True, False, False, True, False])

    def test_skip_moves_timestamp_not_sequence(self) -> None:
        s = self.sender(step=320)
        a = parse(s.packet(b"x", True))
        s.skip(2)
        b = parse(s.packet(b"x", True))
        self.assertEqual(((b.sequence - a.sequence) & 0xFFFF, (b.timestamp - a.timestamp) & 0xFFFFFFFF), (1, 960))

    def test_reset_starts_a_new_stream(self) -> None:
        s = RTPSender(118, 320)
        first = parse(s.packet(b"x", False))
        s.reset()
        second = parse(s.packet(b"x", False))
        self.assertNotEqual(first.ssrc, second.ssrc)
        self.assertTrue(second.marker)
