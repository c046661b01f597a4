"""
Tests for xlbridge.audio.resample: exact per-chunk output sizes from the
first chunk, chunking independence, band limiting, and signal fidelity.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.resample import StreamResampler, resample

#: (in_rate, out_rate) pairs exercised: the integer ratios used on the
#: wire, and TTS-style non-integer ones.
PAIRS = [
    (8000, 16000),
    (16000, 8000),
    (16000, 48000),
    (48000, 16000),
    (22050, 16000),
    (16000, 22050),
    (24000, 16000),
    (44100, 16000),
    (11025, 16000),
]


def tone(freq: float, rate: int, n: int, amp: float = 10000.0) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)).astype(np.int16)


def chirp(f0: float, f1: float, rate: int, n: int, amp: float = 10000.0) -> np.ndarray:
    """A linear sweep: unlike a steady tone it has only one best alignment."""
    t = np.arange(n) / rate
    dur = n / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur))
    return (amp * np.sin(phase)).astype(np.int16)


def noise(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal(n) * 4000, -32768, 32767).astype(np.int16)


def stream(rs: StreamResampler, x: np.ndarray, chunk: int) -> list[np.ndarray]:
    return [rs.process(x[i:i + chunk]) for i in range(0, len(x), chunk)]


def best_lag(
    ref: np.ndarray, out: np.ndarray, max_lag: int, skip: int = 400
) -> tuple[int, float]:
    """
    The delay of ``out`` against ``ref`` with the best SNR, and that SNR,
    ignoring the first ``skip`` samples of ``ref`` (filter warm-up).
    """
    best = (0, -np.inf)
    ref = ref.astype(np.float64)
    out = out.astype(np.float64)
    for lag in range(max_lag + 1):
        n = min(len(ref), len(out) - lag)
        a, b = ref[skip:n], out[skip + lag:lag + n]
        snr = 10 * np.log10(np.sum(a**2) / max(np.sum((a - b) ** 2), 1e-9))
        if snr > best[1]:
            best = (lag, snr)
    return best


def sinad(y: np.ndarray, freq: float, rate: int, skip: int = 400) -> float:
    """
    Signal to noise-and-distortion of a tone, in dB: fit amplitude, phase
    and offset at the known frequency (so fractional delays do not count)
    and compare the fit with what is left over.
    """
    y = y[skip:].astype(np.float64)
    t = np.arange(skip, skip + len(y)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t), np.ones_like(t)], 1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    fit = basis @ coef
    return float(10 * np.log10(np.sum(fit**2) / np.sum((y - fit) ** 2)))


def rms_db(x: np.ndarray, ref: float) -> float:
    return float(20 * np.log10(max(np.sqrt(np.mean(x.astype(np.float64) ** 2)), 1e-9) / ref))


class StreamSizeTests(SynchronousTestCase):
    def test_exact_size_on_every_20ms_chunk_from_the_first(self) -> None:
        for a, b in PAIRS:
            if a % 50 or b % 50:
                continue  # 20 ms is not a whole number of samples
            rs = StreamResampler(a, b)
            x = noise(a)  # one second
            sizes = [len(y) for y in stream(rs, x, a // 50)]
            self.assertEqual(sizes, [b // 50] * 50, (a, b))

    def test_dtype(self) -> None:
        for a, b in PAIRS:
            y = StreamResampler(a, b).process(noise(a // 50))
            self.assertEqual(y.dtype, np.dtype(np.int16))
            self.assertTrue(y.dtype.isnative)

    def test_fractional_carry_keeps_long_run_count(self) -> None:
        rng = np.random.default_rng(7)
        for a, b in PAIRS:
            rs = StreamResampler(a, b)
            total_in = total_out = 0
            for n in rng.integers(0, 700, 200):
                y = rs.process(noise(int(n), seed=int(n)))
                total_in += int(n)
                total_out += len(y)
                self.assertEqual(total_out, total_in * b // a, (a, b))

    def test_integer_ratio_exact_per_call(self) -> None:
        rs = StreamResampler(8000, 16000)
        for n in [1, 2, 3, 160, 17, 0, 400]:
            self.assertEqual(len(rs.process(noise(n))), 2 * n)
        rs = StreamResampler(16000, 8000)
        # 1 sample in: 0 out, then 1 out; the running total is exact.
        self.assertEqual([len(rs.process(noise(1))) for _ in range(4)], [0, 1, 0, 1])

    @settings(max_examples=40, deadline=None)
    @given(
        st.sampled_from(PAIRS),
        st.lists(st.integers(0, 2000), min_size=1, max_size=20),
    )
    def test_property_running_total(self, pair: tuple[int, int], sizes: list[int]) -> None:
        a, b = pair
        rs = StreamResampler(a, b)
        total = 0
        for i, n in enumerate(sizes):
            out = rs.process(noise(n, seed=i))
            total_in = sum(sizes[: i + 1])
            total += len(out)
            self.assertEqual(total, total_in * b // a)

    def test_identity_returns_input(self) -> None:
        rs = StreamResampler(16000, 16000)
        x = noise(320)
        self.assertIs(rs.process(x), x)

    def test_invalid_rates(self) -> None:
        for a, b in [(0, 16000), (16000, -8000), (8000.0, 16000)]:
            self.assertRaises(ValueError, StreamResampler, a, b)


class StreamQualityTests(SynchronousTestCase):
    def test_chunked_equals_steady(self) -> None:
        x = noise(44100)
        for a, b in PAIRS:
            whole = StreamResampler(a, b).process(x)
            for chunk in (a // 50, 1, 7, 1000):
                got = np.concatenate(stream(StreamResampler(a, b), x, chunk))
                np.testing.assert_array_equal(got, whole, err_msg=f"{a}->{b} by {chunk}")

    def test_round_trip_8k_16k_8k(self) -> None:
        x = chirp(200, 3000, 8000, 8000)
        up, down = StreamResampler(8000, 16000), StreamResampler(16000, 8000)
        y = np.concatenate([down.process(up.process(c)) for c in np.split(x, 50)])
        self.assertEqual(len(y), len(x))
        lag, snr = best_lag(x, y, 100)
        self.assertGreater(snr, 50.0)
        self.assertEqual(lag, up.delay // 2 + down.delay)
        self.assertLess(lag * 1000 / 8000, 7.0)  # ms
        corr = np.corrcoef(x[: len(x) - lag].astype(float), y[lag:].astype(float))[0, 1]
        self.assertGreater(corr, 0.9999)

    def test_upsampled_sweep_matches_ideal(self) -> None:
        rs = StreamResampler(8000, 16000)
        y = np.concatenate(stream(rs, chirp(200, 3000, 8000, 8000), 160))
        ideal = chirp(200, 3000, 16000, 16000)
        lag, snr = best_lag(ideal, y, 100)
        self.assertEqual(lag, rs.delay)
        self.assertGreater(snr, 50.0)

    def test_passband_is_flat(self) -> None:
        for f in (300, 1000, 2000, 3000, 3400):
            y = np.concatenate(stream(StreamResampler(16000, 8000), tone(f, 16000, 16000), 320))
            self.assertLess(abs(rms_db(y[200:], 10000 / np.sqrt(2))), 0.1, f)
            y = np.concatenate(stream(StreamResampler(8000, 16000), tone(f, 8000, 8000), 160))
            self.assertLess(abs(rms_db(y[200:], 10000 / np.sqrt(2))), 0.1, f)

    def test_downsampling_removes_alias_band(self) -> None:
        # soxr's QQ mode would fold a 6 kHz tone to 2 kHz at full level.
        for f in (4500, 6000, 7500):
            y = np.concatenate(stream(StreamResampler(16000, 8000), tone(f, 16000, 16000), 320))
            self.assertLess(rms_db(y[200:], 10000 / np.sqrt(2)), -55.0, f)

    def test_upsampling_has_no_images(self) -> None:
        for f in (1000, 3000, 3400):
            y = np.concatenate(stream(StreamResampler(8000, 16000), tone(f, 8000, 8000), 160))
            y = y[200:].astype(np.float64)
            spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
            freqs = np.fft.rfftfreq(len(y), 1 / 16000)
            above = 10 * np.log10(spec[freqs > 4100].sum() / spec.sum())
            self.assertLess(above, -55.0, f)

    def test_integer_ratio_tone_sinad(self) -> None:
        for a, b in [(8000, 16000), (16000, 8000), (16000, 48000), (48000, 16000)]:
            y = np.concatenate(stream(StreamResampler(a, b), tone(1000, a, a), a // 50))
            self.assertGreater(sinad(y, 1000, b), 60.0, (a, b))

    def test_non_integer_ratio_tone_sinad(self) -> None:
        for a, b in [(22050, 16000), (16000, 22050), (44100, 16000), (24000, 16000)]:
            for f in (440, 1000, 3000):
                y = np.concatenate(stream(StreamResampler(a, b), tone(f, a, a), a // 50))
                self.assertGreater(sinad(y, f, b), 40.0, (a, b, f))

    def test_round_trip_16k_8k_16k(self) -> None:
        x = chirp(200, 3300, 16000, 16000)
        down, up = StreamResampler(16000, 8000), StreamResampler(8000, 16000)
        y = np.concatenate([up.process(down.process(c)) for c in np.split(x, 50)])
        lag, snr = best_lag(x, y, 200)
        self.assertEqual(lag, 2 * down.delay + up.delay)
        self.assertGreater(snr, 40.0)

    def test_silence_stays_digital_zero(self) -> None:
        for a, b in PAIRS:
            rs = StreamResampler(a, b)
            for _ in range(20):
                self.assertFalse(np.any(rs.process(np.zeros(a // 50, np.int16))), (a, b))

    def test_full_scale_saturates_instead_of_wrapping(self) -> None:
        square = np.where(np.arange(16000) % 32 < 16, 32767, -32768).astype(np.int16)
        for a, b in [(16000, 8000), (16000, 48000)]:
            y = np.concatenate(stream(StreamResampler(a, b), square, a // 50)).astype(int)
            # No wrap-around: successive samples never jump by more than
            # a full-scale step.
            self.assertLessEqual(int(np.max(np.abs(np.diff(y)))), 65535)
            self.assertEqual(int(y.max()), 32767)
            self.assertEqual(int(y.min()), -32768)
        y = np.concatenate(stream(StreamResampler(8000, 16000), square[:8000], 160)).astype(int)
        steady_high = y[200:][np.repeat(square[:8000], 2)[200 - 2 * 24:][: len(y) - 200] > 0]
        self.assertGreater(int(steady_high.min()), -32768)

    def test_reset_starts_afresh(self) -> None:
        for a, b in PAIRS:
            rs = StreamResampler(a, b)
            first = [rs.process(c) for c in np.array_split(noise(a // 10), 5)]
            rs.reset()
            again = [rs.process(c) for c in np.array_split(noise(a // 10), 5)]
            for p, q in zip(first, again):
                np.testing.assert_array_equal(p, q)

    def test_streams_are_independent(self) -> None:
        x = noise(1600)
        a, b = StreamResampler(8000, 16000), StreamResampler(8000, 16000)
        ya = np.concatenate(stream(a, x, 160))
        b.process(noise(160, seed=9))
        b.reset()
        np.testing.assert_array_equal(np.concatenate(stream(b, x, 160)), ya)


class OneShotTests(SynchronousTestCase):
    def test_lengths(self) -> None:
        for a, b in PAIRS:
            y = resample(noise(a), a, b)
            self.assertEqual(y.dtype, np.dtype(np.int16))
            self.assertLessEqual(abs(len(y) - b), 1, (a, b))

    def test_tone_fidelity(self) -> None:
        y = resample(chirp(200, 6000, 22050, 22050), 22050, 16000)
        lag, snr = best_lag(chirp(200, 6000, 16000, 16000), y, 50)
        self.assertEqual(lag, 0)  # soxr compensates its own delay
        self.assertGreater(snr, 50.0)
        for f in (440, 3000, 7000):
            y = resample(tone(f, 22050, 22050), 22050, 16000)
            self.assertGreater(sinad(y[:-400], f, 16000), 70.0, f)

    def test_identity_copies(self) -> None:
        x = noise(100)
        y = resample(x, 16000, 16000)
        np.testing.assert_array_equal(x, y)
        self.assertIsNot(x, y)

    def test_empty_and_invalid(self) -> None:
        self.assertEqual(len(resample(np.zeros(0, np.int16), 8000, 16000)), 0)
        self.assertRaises(ValueError, resample, noise(10), 0, 16000)
