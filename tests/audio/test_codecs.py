"""
Tests for xlbridge.audio.codecs: codec table, wire byte order, payload
sizes, per-codec round trips, G.722 statefulness and error handling.
"""

from __future__ import annotations

import attrs
import G722
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio import g711
from xlbridge.audio.codecs import (
    CODEC_NAMES,
    Codec,
    codec_for_payload_type,
    get_codec,
    make_decoder,
    make_encoder,
)
from xlbridge.audio.frame import FRAME_SAMPLES
from xlbridge.audio.pcm16 import CodecError
from xlbridge.audio.resample import StreamResampler

#: G.722 (sippy/libg722, ITU reference) delays its output by 22 samples.
G722_DELAY = 22


def tone(freq: float, n: int, rate: int = 16000, amp: float = 8000.0) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.int16)


def speechlike(n: int, rate: int = 16000) -> np.ndarray:
    """A few harmonics with a slow vibrato: not periodic over the test."""
    t = np.arange(n) / rate
    f0 = 180 + 40 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    y = np.zeros(n)
    for k in range(1, 10):
        y += np.sin(k * phase) / k
    return (6000 * y).astype(np.int16)


def frames(x: np.ndarray, size: int = FRAME_SAMPLES) -> list[np.ndarray]:
    return [x[i:i + size] for i in range(0, len(x), size)]


def through(name: str, x: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    codec = get_codec(name)
    enc, dec = make_encoder(codec), make_decoder(codec)
    payloads = [enc.encode(f) for f in frames(x)]
    return payloads, np.concatenate([dec.decode(p) for p in payloads])


def snr_at_best_lag(ref: np.ndarray, out: np.ndarray, max_lag: int, skip: int = 800) -> tuple[int, float]:
    best = (0, -np.inf)
    r = ref.astype(np.float64)
    o = out.astype(np.float64)
    for lag in range(max_lag + 1):
        n = min(len(r), len(o) - lag)
        a, b = r[skip:n], o[skip + lag:lag + n]
        snr = float(10 * np.log10(np.sum(a**2) / max(np.sum((a - b) ** 2), 1e-9)))
        if snr > best[1]:
            best = (lag, snr)
    return best


class CodecTableTests(SynchronousTestCase):
    def test_names(self) -> None:
        self.assertEqual(set(CODEC_NAMES), {"slin16", "slin", "ulaw", "alaw", "g722"})

    def test_defaults(self) -> None:
        expect = {
            # name: (pt, clock, rate, bytes per 20 ms, timestamp step)
            "slin16": (118, 16000, 16000, 640, 320),
            "slin": (10, 8000, 8000, 320, 160),
            "ulaw": (0, 8000, 8000, 160, 160),
            "alaw": (8, 8000, 8000, 160, 160),
            "g722": (9, 8000, 16000, 160, 160),
        }
        for name, (pt, clock, rate, size, step) in expect.items():
            c = get_codec(name)
            self.assertEqual(c.name, name)
            self.assertEqual(
                (c.payload_type, c.clock_rate, c.sample_rate, c.bytes_per_frame, c.timestamp_step),
                (pt, clock, rate, size, step),
                name,
            )

    def test_payload_type_override(self) -> None:
        c = get_codec("slin16", 96)
        self.assertEqual(c.payload_type, 96)
        self.assertEqual(c.timestamp_step, 320)
        self.assertEqual(get_codec("slin16").payload_type, 118)
        self.assertEqual(get_codec("ulaw", 0).payload_type, 0)
        self.assertEqual(get_codec("ULaw").name, "ulaw")

    def test_unknown_name(self) -> None:
        e = self.assertRaises(ValueError, get_codec, "opus")
        for name in CODEC_NAMES:
            self.assertIn(name, str(e))
        self.assertIn("opus", str(e))

    def test_bad_payload_type(self) -> None:
        for pt in (-1, 128, 1000):
            e = self.assertRaises(ValueError, get_codec, "slin16", pt)
            self.assertIn("0..127", str(e))
        self.assertRaises(ValueError, get_codec, "slin16", True)

    def test_frozen(self) -> None:
        c = get_codec("g722")
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, c, "payload_type", 1)

    def test_codec_for_payload_type(self) -> None:
        self.assertEqual(codec_for_payload_type(0), get_codec("ulaw"))
        self.assertEqual(codec_for_payload_type(8), get_codec("alaw"))
        self.assertEqual(codec_for_payload_type(9), get_codec("g722"))
        self.assertEqual(codec_for_payload_type(10), get_codec("slin"))
        c11 = codec_for_payload_type(11)
        assert c11 is not None
        self.assertEqual((c11.name, c11.payload_type, c11.sample_rate), ("slin", 11, 8000))
        self.assertEqual(codec_for_payload_type(118), get_codec("slin16"))
        for pt in (3, 96, 101, 127):
            self.assertIsNone(codec_for_payload_type(pt))

    def test_make_unknown(self) -> None:
        bogus = Codec("opus", 111, 48000, 48000, 0)
        self.assertRaises(ValueError, make_decoder, bogus)
        self.assertRaises(ValueError, make_encoder, bogus)


class ByteOrderTests(SynchronousTestCase):
    def test_slin16_is_big_endian_on_the_wire(self) -> None:
        codec = get_codec("slin16")
        x = np.array([0x0102, -2, 0x7FFF, -0x8000], dtype=np.int16)
        wire = make_encoder(codec).encode(x)
        self.assertEqual(wire, b"\x01\x02\xff\xfe\x7f\xff\x80\x00")
        got = make_decoder(codec).decode(b"\x01\x02\xff\xfe")
        self.assertEqual(got.tolist(), [0x0102, -2])
        self.assertEqual(got.dtype, np.dtype(np.int16))
        self.assertTrue(got.dtype.isnative)
        self.assertTrue(got.flags.writeable)

    def test_slin_is_big_endian_on_the_wire(self) -> None:
        # Decoding = big-endian parse at 8 kHz, then 8k -> 16k.
        x8 = tone(440, 1600, rate=8000)
        wire = x8.astype(">i2").tobytes()
        rs = StreamResampler(8000, 16000)
        expected = np.concatenate([rs.process(f) for f in frames(x8, 160)])
        dec = make_decoder(get_codec("slin"))
        got = np.concatenate([dec.decode(wire[i:i + 320]) for i in range(0, len(wire), 320)])
        np.testing.assert_array_equal(got, expected)

    def test_slin_encoder_output_is_big_endian_8k(self) -> None:
        x = tone(440, 3200)
        rs = StreamResampler(16000, 8000)
        expected = b"".join(rs.process(f).astype(">i2").tobytes() for f in frames(x))
        enc = make_encoder(get_codec("slin"))
        self.assertEqual(b"".join(enc.encode(f) for f in frames(x)), expected)


class PayloadSizeTests(SynchronousTestCase):
    def test_20ms_frame_sizes(self) -> None:
        x = speechlike(FRAME_SAMPLES * 10)
        for name in CODEC_NAMES:
            codec = get_codec(name)
            enc, dec = make_encoder(codec), make_decoder(codec)
            for f in frames(x):
                payload = enc.encode(f)
                self.assertIsInstance(payload, bytes)
                self.assertEqual(len(payload), codec.bytes_per_frame, name)
                self.assertEqual(len(dec.decode(payload)), FRAME_SAMPLES, name)

    def test_silence_frame_sizes_from_first_frame(self) -> None:
        for name in CODEC_NAMES:
            codec = get_codec(name)
            payload = make_encoder(codec).encode(np.zeros(FRAME_SAMPLES, np.int16))
            self.assertEqual(len(payload), codec.bytes_per_frame, name)

    def test_other_packet_lengths_decode(self) -> None:
        # 10 ms and 30 ms packets, and odd sizes for the 1-byte codecs.
        cases = {
            "slin16": [(320, 160), (960, 480)],
            "slin": [(160, 160), (480, 480), (2, 2)],
            "ulaw": [(80, 160), (240, 480), (1, 2)],
            "alaw": [(80, 160), (3, 6)],
            "g722": [(80, 160), (240, 480), (1, 2)],
        }
        for name, sizes in cases.items():
            dec = make_decoder(get_codec(name))
            for nbytes, nsamples in sizes:
                self.assertEqual(len(dec.decode(bytes(nbytes))), nsamples, (name, nbytes))

    def test_g711_silence_on_the_wire(self) -> None:
        z = np.zeros(FRAME_SAMPLES, np.int16)
        self.assertEqual(make_encoder(get_codec("ulaw")).encode(z), b"\xff" * 160)
        self.assertEqual(make_encoder(get_codec("alaw")).encode(z), b"\xd5" * 160)


class DecodeErrorTests(SynchronousTestCase):
    def test_odd_length_l16(self) -> None:
        for name in ("slin", "slin16"):
            dec = make_decoder(get_codec(name))
            self.assertRaises(CodecError, dec.decode, b"\x00\x01\x02")
            # the decoder is still usable afterwards
            self.assertEqual(len(dec.decode(b"\x00\x01")), 1 if name == "slin16" else 2)

    def test_empty_payload(self) -> None:
        for name in CODEC_NAMES:
            dec = make_decoder(get_codec(name))
            self.assertRaises(CodecError, dec.decode, b"")


class RoundTripTests(SynchronousTestCase):
    def test_slin16_bit_exact(self) -> None:
        x = speechlike(16000)
        payloads, y = through("slin16", x)
        np.testing.assert_array_equal(y, x)
        self.assertEqual(b"".join(payloads), x.astype(">i2").tobytes())

    def test_slin_bit_exact_at_its_own_rate(self) -> None:
        # What goes on the wire is exactly what the decoder parses (before
        # its resampler): compare the 8 kHz streams.
        x = speechlike(16000)
        codec = get_codec("slin")
        enc = make_encoder(codec)
        wire = b"".join(enc.encode(f) for f in frames(x))
        x8 = StreamResampler(16000, 8000).process(x)
        np.testing.assert_array_equal(np.frombuffer(wire, ">i2"), x8)

    def test_slin_round_trip(self) -> None:
        x = tone(1000, 16000)
        _, y = through("slin", x)
        lag, snr = snr_at_best_lag(x, y, 200)
        self.assertGreater(snr, 50.0)

    def test_g711_round_trip(self) -> None:
        x = tone(1000, 16000)
        for name in ("ulaw", "alaw"):
            _, y = through(name, x)
            lag, snr = snr_at_best_lag(x, y, 200)
            # G.711 gives about 38 dB on a loud tone.
            self.assertGreater(snr, 33.0, name)

    def test_g711_wire_matches_g711_module(self) -> None:
        x = speechlike(3200)
        x8 = StreamResampler(16000, 8000).process(x)
        for name, encode in (("ulaw", g711.ulaw_encode), ("alaw", g711.alaw_encode)):
            payloads, _ = through(name, x)
            self.assertEqual(b"".join(payloads), encode(x8), name)

    def test_g722_round_trip(self) -> None:
        # The aperiodic signal pins the delay down; a pure tone cannot.
        x = speechlike(16000)
        _, y = through("g722", x)
        self.assertEqual(len(y), len(x))
        lag, snr = snr_at_best_lag(x, y, 60)
        self.assertEqual(lag, G722_DELAY)
        self.assertGreater(snr, 20.0)
        x = tone(1000, 16000)
        _, y = through("g722", x)
        a = x[800:-G722_DELAY].astype(float)
        e = a - y[800 + G722_DELAY:].astype(float)
        self.assertGreater(10 * np.log10(np.sum(a**2) / np.sum(e**2)), 20.0)

    def test_g722_wideband_survives(self) -> None:
        # 6 kHz is beyond any 8 kHz codec; G.722 carries it.
        x = tone(6000, 16000)
        _, y = through("g722", x)
        ratio = np.std(y[800:].astype(float)) / np.std(x[800:].astype(float))
        self.assertGreater(ratio, 0.8)
        _, y = through("ulaw", x)
        self.assertLess(np.std(y[800:].astype(float)), 20.0)

    @settings(max_examples=30, deadline=None)
    @given(hnp.arrays(np.int16, st.integers(0, 40).map(lambda n: n * 2)))
    def test_property_slin16_round_trip(self, x: np.ndarray) -> None:
        c = get_codec("slin16")
        payload = make_encoder(c).encode(x)
        if len(x):
            np.testing.assert_array_equal(make_decoder(c).decode(payload), x)


class G722StateTests(SynchronousTestCase):
    def test_chunked_encoding_equals_whole_buffer(self) -> None:
        x = speechlike(16000)
        whole = G722.G722(16000, 64000).encode(x)
        enc = make_encoder(get_codec("g722"))
        self.assertEqual(b"".join(enc.encode(f) for f in frames(x)), whole)

    def test_odd_chunks_carry_a_sample(self) -> None:
        x = speechlike(16000)
        whole = G722.G722(16000, 64000).encode(x)
        enc = make_encoder(get_codec("g722"))
        out = b"".join(enc.encode(x[i:i + 333]) for i in range(0, len(x), 333))
        self.assertEqual(out, whole)

    def test_chunked_decoding_equals_whole(self) -> None:
        x = speechlike(16000)
        bitstream = G722.G722(16000, 64000).encode(x)
        whole = np.frombuffer(G722.G722(16000, 64000).decode(bitstream), np.int16)
        dec = make_decoder(get_codec("g722"))
        got = np.concatenate([dec.decode(bitstream[i:i + 160]) for i in range(0, len(bitstream), 160)])
        np.testing.assert_array_equal(got, whole)

    def test_reset(self) -> None:
        x = speechlike(3200)
        codec = get_codec("g722")
        enc = make_encoder(codec)
        first = [enc.encode(f) for f in frames(x)]
        enc.encode(x[:7])
        enc.reset()
        self.assertEqual([enc.encode(f) for f in frames(x)], first)
        dec = make_decoder(codec)
        a = [dec.decode(p).tolist() for p in first]
        dec.reset()
        self.assertEqual([dec.decode(p).tolist() for p in first], a)

    def test_encoders_are_independent(self) -> None:
        x = speechlike(3200)
        codec = get_codec("g722")
        a, b = make_encoder(codec), make_encoder(codec)
        b.encode(speechlike(640)[::-1].copy())
        c = make_encoder(codec)
        self.assertEqual([a.encode(f) for f in frames(x)], [c.encode(f) for f in frames(x)])


class StatefulResetTests(SynchronousTestCase):
    def test_every_codec_reset_matches_fresh(self) -> None:
        x = speechlike(3200)
        for name in CODEC_NAMES:
            codec = get_codec(name)
            enc, dec = make_encoder(codec), make_decoder(codec)
            ref_enc = [enc.encode(f) for f in frames(x)]
            ref_dec = [dec.decode(p).tolist() for p in ref_enc]
            enc.reset()
            dec.reset()
            again = [enc.encode(f) for f in frames(x)]
            self.assertEqual(again, ref_enc, name)
            self.assertEqual([dec.decode(p).tolist() for p in again], ref_dec, name)
