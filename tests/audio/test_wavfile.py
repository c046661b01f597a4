"""
Tests for xlbridge.audio.wavfile: deterministic test signals, WAV reading
(PCM widths, float, extensible, channels, rates) and writing.
"""

from __future__ import annotations

import struct
import wave

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.wavfile import WavError, load_wav, noise, save_wav, tone


def peak_hz(x: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64)))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[spectrum.argmax()])


def riff(fmt_chunk: bytes, data: bytes) -> bytes:
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
    body += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


def fmt(tag: int, channels: int, rate: int, bits: int) -> bytes:
    block = channels * bits // 8
    return struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)


class SignalTests(SynchronousTestCase):
    def test_tone(self) -> None:
        x = tone(440, 0.5, level=0.5)
        self.assertEqual((len(x), x.dtype), (8000, np.dtype(np.int16)))
        self.assertEqual(int(x[0]), 0)
        self.assertLessEqual(abs(int(np.abs(x).max()) / 32767 - 0.5), 0.01)
        self.assertLessEqual(abs(peak_hz(x) - 440), 2)

    def test_noise_is_deterministic_and_band_limited(self) -> None:
        np.testing.assert_array_equal(noise(0.1, seed=4), noise(0.1, seed=4))
        self.assertFalse(np.array_equal(noise(0.1, seed=4), noise(0.1, seed=5)))
        x = noise(1.0, level=0.3, seed=1, lowpass_hz=3400).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(x))
        above = spectrum[np.fft.rfftfreq(len(x), 1 / 16000) > 3500]
        self.assertLess(float(above.max()), 1e-3 * float(spectrum.max()) + 1e3)
        self.assertLessEqual(abs(float(np.abs(x).max()) / 32767 - 0.3), 0.01)

    def test_bad_arguments(self) -> None:
        self.assertRaises(ValueError, tone, 8000, 1.0)
        self.assertRaises(ValueError, tone, 440, -1.0)
        self.assertRaises(ValueError, tone, 440, 1.0, 1.5)
        self.assertRaises(ValueError, noise, 1.0, 0.3, 0, -5.0)


class WavTests(SynchronousTestCase):
    def write(self, blob: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(blob)
        return path

    def test_save_and_load_round_trip(self) -> None:
        path = self.mktemp()
        x = noise(0.2, seed=9)
        save_wav(path, x)
        with wave.open(path, "rb") as w:
            self.assertEqual((w.getnchannels(), w.getsampwidth(), w.getframerate()), (1, 2, 16000))
        np.testing.assert_array_equal(load_wav(path), x)

    def test_stereo_8k_is_averaged_and_resampled(self) -> None:
        t = np.arange(8000) / 8000
        left = (10000 * np.sin(2 * np.pi * 500 * t)).astype("<i2")
        data = np.stack([left, left], axis=1).astype("<i2").tobytes()
        x = load_wav(self.write(riff(fmt(1, 2, 8000, 16), data)))
        self.assertLessEqual(abs(len(x) - 16000), 2)
        self.assertLessEqual(abs(peak_hz(x) - 500), 2)

    def test_other_sample_encodings(self) -> None:
        ramp = np.array([-16384, 0, 16384], dtype=np.int64)
        encodings = {
            (1, 8): (ramp // 256 + 128).astype(np.uint8).tobytes(),
            (1, 24): b"".join(int(v * 256).to_bytes(3, "little", signed=True) for v in ramp),
            (1, 32): (ramp * 65536).astype("<i4").tobytes(),
            (3, 32): (ramp / 32768).astype("<f4").tobytes(),
            (3, 64): (ramp / 32768).astype("<f8").tobytes(),
        }
        for (tag, bits), data in encodings.items():
            x = load_wav(self.write(riff(fmt(tag, 1, 16000, bits), data)))
            self.assertEqual(x.tolist(), ramp.tolist(), (tag, bits))

    def test_extensible_format(self) -> None:
        ext = fmt(0xFFFE, 1, 16000, 16) + struct.pack("<HHI", 22, 16, 0) + struct.pack("<H", 1) + bytes(14)
        data = np.array([1, -1, 7], dtype="<i2").tobytes()
        self.assertEqual(load_wav(self.write(riff(ext, data))).tolist(), [1, -1, 7])

    def test_not_a_wav(self) -> None:
        for blob in (b"hello", riff(fmt(1, 1, 16000, 16), b"")[:20], riff(fmt(2, 1, 16000, 16), bytes(4))):
            self.assertRaises(WavError, load_wav, self.write(blob))
        self.assertRaises(OSError, load_wav, self.mktemp())
