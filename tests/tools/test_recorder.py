"""
Tests for xlbridge.tools.recorder, the sans-I/O receive side of the
simulated phone: a Recorder fed synthetic RTP datagrams with explicit
arrival times (loss, duplicates and reordering per SSRC, RFC 3550 jitter,
arrival gaps, decoding), and the PhoneReport it makes.  The phone's use of
it over a memory reactor is in tests/tools/test_phone.py.
"""

from __future__ import annotations

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.codecs import get_codec
from xlbridge.audio.frame import FRAME_SAMPLES, Samples
from xlbridge.rtp.packet import build
from xlbridge.rtp.seq import RESYNC_JUMP
from xlbridge.tools.recorder import PacketRecord, PhoneReport, Recorder


def frame_of(seq: int, n: int = FRAME_SAMPLES) -> Samples:
    """A recognisable slin16 frame for sequence number ``seq``."""
    return np.full(n, seq % 30000 + 1, dtype=np.int16)


def slin16(seq: int, ts: int | None = None, ssrc: int = 1, n: int = FRAME_SAMPLES, marker: bool = False) -> bytes:
    """An slin16 packet (PT 118) carrying :func:`frame_of` ``seq``."""
    return build(118, seq, 320 * seq if ts is None else ts, ssrc, frame_of(seq, n).astype(">i2").tobytes(), marker)


def silence(frames: int, n: int = FRAME_SAMPLES) -> Samples:
    return np.zeros(frames * n, dtype=np.int16)


def feed(rec: Recorder, *packets: bytes, start: float = 0.0, step: float = 0.02) -> None:
    for i, p in enumerate(packets):
        rec.receive(p, start + i * step)


class SequenceTests(SynchronousTestCase):
    def test_nothing_received(self) -> None:
        r = Recorder().report()
        self.assertEqual(
            (r.packets_received, r.lost, r.duplicates, r.reordered, r.malformed, r.unknown_pt, r.ssrcs),
            (0, 0, 0, 0, 0, 0, 0),
        )
        self.assertEqual((r.jitter_ms, r.jitter_max_ms, r.max_gap_ms), (0.0, 0.0, 0.0))
        self.assertEqual(r.payload_types, frozenset())
        self.assertEqual((len(r.audio), r.audio.dtype), (0, np.int16))
        self.assertEqual(r.packets, [])
        self.assertEqual(r.seconds_recorded, 0.0)

    def test_packet_records(self) -> None:
        rec = Recorder()
        rec.receive(slin16(7, ts=1234, marker=True), 10.5)
        rec.receive(build(0, 8, 1394, 1, b"\xff" * 160), 10.52)
        expected: list[PacketRecord] = [(10.5, 7, 1234, 118, True, 640), (10.52, 8, 1394, 0, False, 160)]
        self.assertEqual(rec.packets, expected)
        self.assertEqual(rec.report().packets, expected)

    def test_gap_is_loss_and_silence(self) -> None:
        rec = Recorder()
        feed(rec, slin16(1), slin16(2), slin16(5))
        r = rec.report()
        self.assertEqual((r.packets_received, r.lost, r.reordered, r.duplicates), (3, 2, 0, 0))
        np.testing.assert_array_equal(r.audio, np.concatenate([frame_of(1), frame_of(2), silence(2), frame_of(5)]))
        self.assertAlmostEqual(r.seconds_recorded, 0.1)

    def test_wraparound_is_not_a_gap(self) -> None:
        rec = Recorder()
        feed(rec, slin16(65534), slin16(65535), slin16(0), slin16(1))
        self.assertEqual((rec.lost, rec.reordered), (0, 0))
        rec = Recorder()
        feed(rec, slin16(65534), slin16(1))
        self.assertEqual(rec.lost, 2)
        np.testing.assert_array_equal(
            rec.report().audio, np.concatenate([frame_of(65534), silence(2), frame_of(1)])
        )

    def test_late_packet_is_reordered_not_lost(self) -> None:
        rec = Recorder()
        feed(rec, slin16(1), slin16(3), slin16(2), slin16(4))
        r = rec.report()
        self.assertEqual((r.lost, r.reordered, r.duplicates), (0, 1, 0))
        np.testing.assert_array_equal(r.audio, np.concatenate([frame_of(s) for s in (1, 2, 3, 4)]))

    def test_reordered_before_the_first_packet_extends_the_stream_back(self) -> None:
        """A packet older than the first one received (across the wrap) is placed before it."""
        rec = Recorder()
        feed(rec, slin16(1), slin16(65535), slin16(0), slin16(2))
        r = rec.report()
        self.assertEqual((r.lost, r.reordered), (0, 2))
        np.testing.assert_array_equal(r.audio, np.concatenate([frame_of(s) for s in (65535, 0, 1, 2)]))

    def test_duplicates_keep_the_first_copy(self) -> None:
        rec = Recorder()
        first = slin16(2)
        again = build(118, 2, 640, 1, frame_of(999).astype(">i2").tobytes())
        feed(rec, slin16(1), first, again, slin16(1), slin16(3))
        r = rec.report()
        self.assertEqual((r.packets_received, r.duplicates, r.reordered, r.lost), (5, 2, 0, 0))
        self.assertEqual(len(r.packets), 5)
        np.testing.assert_array_equal(r.audio, np.concatenate([frame_of(s) for s in (1, 2, 3)]))

    def test_per_ssrc_accounting_and_audio_in_order_of_first_arrival(self) -> None:
        rec = Recorder()
        # SSRC 9 (seq 500..) starts first; SSRC 4 has one loss; both interleave.
        for i, p in enumerate([slin16(500, ssrc=9), slin16(10, ssrc=4), slin16(501, ssrc=9), slin16(12, ssrc=4)]):
            rec.receive(p, i * 0.01)
        r = rec.report()
        self.assertEqual((r.ssrcs, r.lost, r.reordered, r.duplicates), (2, 1, 0, 0))
        np.testing.assert_array_equal(
            r.audio,
            np.concatenate([frame_of(500), frame_of(501), frame_of(10), silence(1), frame_of(12)]),
        )

    def test_same_sequence_in_two_ssrcs_is_not_a_duplicate(self) -> None:
        rec = Recorder()
        feed(rec, slin16(5, ssrc=1), slin16(5, ssrc=2))
        self.assertEqual((rec.duplicates, rec.report().ssrcs), (0, 2))

    def test_silence_for_a_long_gap_is_capped(self) -> None:
        rec = Recorder()
        jump = RESYNC_JUMP + 500
        feed(rec, slin16(0), slin16(jump))
        r = rec.report()
        self.assertEqual(r.lost, jump - 1)
        self.assertEqual(len(r.audio), (2 + RESYNC_JUMP) * FRAME_SAMPLES)
        np.testing.assert_array_equal(r.audio[-FRAME_SAMPLES:], frame_of(jump))

    def test_gap_silence_as_long_as_the_last_packet(self) -> None:
        """10 ms packets: each missing one is 10 ms of silence."""
        rec = Recorder()
        feed(rec, slin16(1, n=160), slin16(2, n=160), slin16(4, n=160))
        np.testing.assert_array_equal(
            rec.report().audio,
            np.concatenate([frame_of(1, 160), frame_of(2, 160), silence(1, 160), frame_of(4, 160)]),
        )


class MalformedTests(SynchronousTestCase):
    def test_not_rtp_is_counted_never_raised(self) -> None:
        rec = Recorder()
        version1 = bytearray(slin16(1))
        version1[0] = 0x40
        for data in (b"", b"\x80" * 11, bytes(version1), b"GET / HTTP/1.1\r\n\r\n"):
            rec.receive(data, 1.0)
        r = rec.report()
        self.assertEqual((r.malformed, r.packets_received, r.ssrcs), (4, 0, 0))
        self.assertEqual(r.payload_types, frozenset())

    def test_undecodable_payload_is_malformed_and_silent(self) -> None:
        """
        An odd-length L16 payload is received (it counts for sequence
        statistics) but fails to decode: malformed in the report, silence in
        the audio.
        """
        rec = Recorder()
        feed(rec, slin16(1), build(118, 2, 640, 1, b"\x00\x01\x02"), slin16(3))
        audio, bad = rec.decode()
        self.assertEqual(bad, 1)
        self.assertEqual(rec.malformed, 0)
        np.testing.assert_array_equal(audio, np.concatenate([frame_of(1), silence(1), frame_of(3)]))
        r = rec.report()
        self.assertEqual((r.malformed, r.packets_received, r.lost), (1, 3, 0))

    def test_unknown_payload_type_counts_for_sequence_not_audio(self) -> None:
        rec = Recorder()
        feed(rec, slin16(1), build(77, 2, 640, 1, b"\x00" * 10), slin16(3))
        r = rec.report()
        self.assertEqual((r.unknown_pt, r.lost, r.packets_received, r.malformed), (1, 0, 3, 0))
        self.assertEqual(r.payload_types, frozenset({77, 118}))
        np.testing.assert_array_equal(r.audio, np.concatenate([frame_of(1), silence(1), frame_of(3)]))

    def test_codecs_map_dynamic_payload_types(self) -> None:
        payload = frame_of(1).astype(">i2").tobytes()
        plain = Recorder()
        plain.receive(build(96, 1, 0, 1, payload), 0.0)
        self.assertEqual((plain.unknown_pt, len(plain.report().audio)), (1, FRAME_SAMPLES))
        self.assertFalse(plain.report().audio.any())
        mapped = Recorder({96: get_codec("slin16", 96)})
        self.assertEqual(mapped.codec_for(96), get_codec("slin16", 96))
        self.assertEqual(mapped.codec_for(9), get_codec("g722"))
        self.assertIsNone(mapped.codec_for(77))
        mapped.receive(build(96, 1, 0, 1, payload), 0.0)
        self.assertEqual(mapped.unknown_pt, 0)
        np.testing.assert_array_equal(mapped.report().audio, frame_of(1))


def jitter_after(ds: list[float], rate: int) -> list[float]:
    """RFC 3550 A.8 J after each |D| (timestamp units), in ms."""
    j, out = 0.0, []
    for d in ds:
        j += (abs(d) - j) / 16
        out.append(j * 1000 / rate)
    return out


class JitterTests(SynchronousTestCase):
    def test_constant_transit_is_no_jitter(self) -> None:
        rec = Recorder()
        feed(rec, *(slin16(i) for i in range(10)), start=1000.0)
        self.assertAlmostEqual(rec.report().jitter_ms, 0.0, places=9)
        self.assertAlmostEqual(rec.report().jitter_max_ms, 0.0, places=9)

    def test_one_late_packet(self) -> None:
        """10 ms late at 16 kHz: D = 160 then -160 timestamp units."""
        rec = Recorder()
        for seq, t in enumerate([0.0, 0.02, 0.05, 0.06, 0.08]):
            rec.receive(slin16(seq), t)
        js = jitter_after([0, 160, 160, 0], 16000)
        r = rec.report()
        self.assertAlmostEqual(r.jitter_ms, js[-1], places=6)
        self.assertAlmostEqual(r.jitter_max_ms, max(js), places=6)
        self.assertAlmostEqual(r.jitter_max_ms, 1.2109375, places=6)

    def test_codec_clock_rate(self) -> None:
        """
        G.722 timestamps run at 8000 Hz: +160 per 20 ms is no jitter, and a
        5 ms late packet is D = 40 units (5 ms).
        """
        rec = Recorder()
        for seq, t in enumerate([0.0, 0.02, 0.045]):
            rec.receive(build(9, seq, 160 * seq, 1, b"\x00" * 160), t)
        self.assertAlmostEqual(rec.report().jitter_ms, jitter_after([0, 40], 8000)[-1], places=6)
        self.assertAlmostEqual(rec.report().jitter_ms, 5 / 16, places=6)

    def test_timestamp_wraparound(self) -> None:
        rec = Recorder()
        start = 2**32 - 640
        for i in range(4):
            rec.receive(slin16(i, ts=(start + 320 * i) % 2**32), 0.02 * i)
        self.assertAlmostEqual(rec.report().jitter_max_ms, 0.0, places=9)

    def test_reordered_packet_compared_with_the_previous_arrival(self) -> None:
        """
        D is taken between consecutive arrivals, whatever their order: seq 1
        arrives 20 ms after seq 2 although sent 20 ms before it, D = 40 ms.
        """
        rec = Recorder()
        for seq, t in [(0, 0.0), (2, 0.04), (1, 0.06)]:
            rec.receive(slin16(seq), t)
        self.assertAlmostEqual(rec.report().jitter_ms, jitter_after([0, 640], 16000)[-1], places=6)
        self.assertAlmostEqual(rec.report().jitter_ms, 2.5, places=6)

    def test_duplicates_and_unknown_types_do_not_update_jitter(self) -> None:
        rec = Recorder()
        rec.receive(slin16(0), 0.0)
        rec.receive(slin16(0), 0.5)  # duplicate, very late
        rec.receive(build(77, 1, 320, 1, b"\x00" * 8), 0.9)  # unknown PT, very late
        rec.receive(slin16(2), 0.04)
        self.assertAlmostEqual(rec.report().jitter_max_ms, 0.0, places=9)

    def test_clock_rate_change_restarts_the_estimate(self) -> None:
        rec = Recorder()
        for seq, t in enumerate([0.0, 0.03, 0.04]):
            rec.receive(slin16(seq), t)
        before = rec.report().jitter_ms
        self.assertGreater(before, 0.0)
        rec.receive(build(0, 3, 5000, 1, b"\xff" * 160), 0.06)  # ulaw: 8000 Hz clock
        r = rec.report()
        self.assertEqual(r.jitter_ms, 0.0)
        self.assertEqual(r.jitter_max_ms, before)
        rec.receive(build(0, 4, 5160, 1, b"\xff" * 160), 0.08)
        self.assertAlmostEqual(rec.report().jitter_ms, 0.0, places=9)

    def test_jitter_is_the_last_updated_stream_max_over_all(self) -> None:
        rec = Recorder()
        rec.receive(slin16(0, ssrc=1), 0.0)
        rec.receive(slin16(1, ssrc=1), 0.05)  # 30 ms late
        rec.receive(slin16(0, ssrc=2), 0.06)
        rec.receive(slin16(1, ssrc=2), 0.08)  # on time
        r = rec.report()
        self.assertAlmostEqual(r.jitter_ms, 0.0, places=9)
        self.assertAlmostEqual(r.jitter_max_ms, jitter_after([480], 16000)[0], places=6)


class GapTests(SynchronousTestCase):
    def test_largest_interval_between_arrivals(self) -> None:
        rec = Recorder()
        for seq, t in enumerate([5.0, 5.02, 5.1, 5.12]):
            rec.receive(slin16(seq), t)
        self.assertAlmostEqual(rec.report().max_gap_ms, 80.0, places=6)

    def test_every_valid_packet_counts_other_datagrams_do_not(self) -> None:
        rec = Recorder()
        rec.receive(slin16(0, ssrc=1), 0.0)
        rec.receive(b"junk", 0.5)  # not RTP: no arrival
        rec.receive(slin16(0, ssrc=1), 0.6)  # duplicate: an arrival
        rec.receive(slin16(0, ssrc=2), 0.65)  # another stream: an arrival
        self.assertAlmostEqual(rec.report().max_gap_ms, 600.0, places=6)

    def test_one_packet_has_no_gap(self) -> None:
        rec = Recorder()
        rec.receive(slin16(0), 3.0)
        self.assertEqual(rec.report().max_gap_ms, 0.0)


class ReportTests(SynchronousTestCase):
    def test_send_counts_are_passed_through(self) -> None:
        r = Recorder().report(packets_sent=12, send_errors=3)
        self.assertEqual((r.packets_sent, r.send_errors), (12, 3))

    def test_report_is_a_snapshot(self) -> None:
        rec = Recorder()
        rec.receive(slin16(0), 0.0)
        r = rec.report()
        rec.receive(slin16(1), 0.02)
        rec.receive(slin16(1), 0.04)
        self.assertEqual((r.packets_received, len(r.packets), len(r.audio), r.duplicates), (1, 1, FRAME_SAMPLES, 0))
        self.assertEqual(rec.report().packets_received, 3)

    def test_equality_ignores_audio_and_repr_summarises_it(self) -> None:
        kw = dict(
            packets_sent=1, packets_received=2, lost=0, duplicates=0, reordered=0, malformed=0,
            jitter_ms=0.0, jitter_max_ms=0.0, max_gap_ms=20.0, payload_types=frozenset({118}),
        )
        a = PhoneReport(audio=np.zeros(320, dtype=np.int16), **kw)  # type: ignore[arg-type]
        b = PhoneReport(audio=np.ones(640, dtype=np.int16), **kw)  # type: ignore[arg-type]
        self.assertEqual(a, b)
        self.assertIn("audio=<640 samples>", repr(b))
        self.assertNotIn("packets=", repr(b))

    def summary(self, **kw: object) -> list[str]:
        fields: dict[str, object] = dict(
            packets_sent=150, packets_received=148, lost=2, duplicates=1, reordered=3, malformed=4,
            jitter_ms=1.234, jitter_max_ms=5.678, max_gap_ms=61.26, payload_types=frozenset({118, 9}),
            audio=np.zeros(24000, dtype=np.int16),
        )
        fields.update(kw)
        return PhoneReport(**fields).summary().split("\n")  # type: ignore[arg-type]

    def test_summary(self) -> None:
        self.assertEqual(
            self.summary(),
            [
                "packets sent:      150",
                "packets received:  148",
                "lost:              2",
                "duplicates:        1",
                "reordered:         3",
                "malformed:         4",
                "jitter:            1.23 ms (max 5.68 ms)",
                "largest gap:       61.3 ms",
                "payload types:     9, 118",
                "seconds recorded:  1.50",
            ],
        )

    def test_summary_optional_lines(self) -> None:
        lines = self.summary(send_errors=2, unknown_pt=5, payload_types=frozenset())
        self.assertEqual(lines[0], "packets sent:      150 (2 send errors)")
        self.assertEqual(lines[6], "unknown PT:        5")
        self.assertEqual(lines[5], "malformed:         4")
        self.assertIn("payload types:     none", lines)
        self.assertEqual(len(lines), 11)

    def test_summary_of_a_recorder(self) -> None:
        rec = Recorder()
        feed(rec, slin16(1), slin16(3))
        text = rec.report(packets_sent=2).summary()
        self.assertIn("lost:              1", text)
        self.assertIn("seconds recorded:  0.06", text)
