"""
Test signals and WAV files for the simulated phone and tests.

Audio in and out is 16 kHz mono int16 native order; WAV files are
little-endian as RIFF requires, any rate and channel count on input.
"""

from __future__ import annotations

import struct
import wave
from typing import Optional

import numpy as np
import numpy.typing as npt

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.audio.resample import resample

_Float = npt.NDArray[np.float64]


def _check_seconds(seconds: float) -> int:
    if not seconds >= 0:
        raise ValueError(f"seconds must be >= 0, got {seconds!r}")
    return int(round(seconds * SAMPLE_RATE))


def _check_level(level: float) -> float:
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"level must be 0..1 of full scale, got {level!r}")
    return level


def _to_int16(y: _Float) -> Samples:
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def tone(freq: float, seconds: float, level: float = 0.3) -> Samples:
    """
    A sine tone.

    :param freq: frequency in Hz, below 8000 (the Nyquist frequency).
    :param seconds: duration.
    :param level: peak amplitude as a fraction of full scale (0..1).
    :return: 16 kHz mono int16, starting at phase 0.
    """
    if not 0 < freq < SAMPLE_RATE / 2:
        raise ValueError(f"tone frequency must be in (0, {SAMPLE_RATE // 2}) Hz, got {freq!r}")
    n = _check_seconds(seconds)
    amp = _check_level(level) * 32767.0
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    return _to_int16(amp * np.sin(2.0 * np.pi * freq * t))


def noise(
    seconds: float, level: float = 0.3, seed: int = 0, lowpass_hz: Optional[float] = None
) -> Samples:
    """
    Deterministic white noise (the same ``seed`` gives the same samples).

    :param seconds: duration.
    :param level: peak amplitude as a fraction of full scale (0..1).
    :param seed: seed of ``numpy.random.default_rng``.
    :param lowpass_hz: if given, remove everything above this frequency (an
        ideal FFT brick-wall filter), then rescale to ``level`` peak; e.g.
        3400 for telephone-band noise that survives narrowband codecs.
    :return: 16 kHz mono int16.
    """
    n = _check_seconds(seconds)
    amp = _check_level(level) * 32767.0
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, n)
    if lowpass_hz is not None and n:
        if not 0 < lowpass_hz:
            raise ValueError(f"lowpass_hz must be positive, got {lowpass_hz!r}")
        spectrum = np.fft.rfft(x)
        spectrum[np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE) > lowpass_hz] = 0
        x = np.fft.irfft(spectrum, n)
        peak = np.abs(x).max()
        if peak > 0:
            x /= peak
    return _to_int16(amp * x)


class WavError(ValueError):
    """A file is not a WAV file this module can read."""


#: WAVE format tags: integer PCM, IEEE float, WAVE_FORMAT_EXTENSIBLE.
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


def _wav_samples(data: bytes, fmt: int, bits: int) -> _Float:
    """Decode little-endian WAV sample data to float64 in int16 scale."""
    if fmt == _PCM and bits == 8:  # unsigned, offset 128
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if fmt == _PCM and bits == 16:
        return np.frombuffer(data, dtype="<i2").astype(np.float64)
    if fmt == _PCM and bits == 24:
        b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float64) / 256.0
    if fmt == _PCM and bits == 32:
        return np.frombuffer(data, dtype="<i4").astype(np.float64) / 65536.0
    if fmt == _FLOAT and bits in (32, 64):
        dtype = "<f4" if bits == 32 else "<f8"
        return np.frombuffer(data, dtype=dtype).astype(np.float64) * 32768.0
    kind = {_PCM: "integer PCM", _FLOAT: "float"}.get(fmt, f"format tag 0x{fmt:04x}")
    raise WavError(f"unsupported WAV encoding: {bits}-bit {kind}")


def load_wav(path: str) -> Samples:
    """
    Read a WAV file as internal audio.

    Reads 8-bit (unsigned), 16-, 24- and 32-bit integer PCM and 32/64-bit
    float, any sample rate and channel count (also WAVE_FORMAT_EXTENSIBLE).
    Channels are averaged to mono and the result is resampled to 16 kHz
    with :func:`xlbridge.audio.resample.resample`.

    :param path: the file.
    :return: 16 kHz mono int16, native byte order.
    :raises OSError: if the file cannot be read.
    :raises WavError: if it is not a WAV file this function understands.
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavError(f"{path}: not a RIFF/WAVE file")
    fmt_chunk: Optional[bytes] = None
    data: Optional[bytes] = None
    pos = 12
    while pos + 8 <= len(blob):
        cid = blob[pos : pos + 4]
        (size,) = struct.unpack_from("<I", blob, pos + 4)
        body = blob[pos + 8 : pos + 8 + size]  # truncated if the file is short
        if cid == b"fmt ":
            fmt_chunk = body
        elif cid == b"data":
            data = body
            if fmt_chunk is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt_chunk is None or len(fmt_chunk) < 16:
        raise WavError(f"{path}: no valid 'fmt ' chunk")
    if data is None:
        raise WavError(f"{path}: no 'data' chunk")
    fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt_chunk)
    if fmt == _EXTENSIBLE:
        if len(fmt_chunk) < 26:
            raise WavError(f"{path}: truncated WAVE_FORMAT_EXTENSIBLE header")
        (fmt,) = struct.unpack_from("<H", fmt_chunk, 24)  # sub-format GUID's first field
    if channels < 1 or rate < 1 or bits < 8 or bits % 8:
        raise WavError(f"{path}: bad header ({channels} channels, {rate} Hz, {bits} bits)")
    block = channels * bits // 8
    data = data[: len(data) - len(data) % block]
    try:
        x = _wav_samples(data, fmt, bits)
    except WavError as e:
        raise WavError(f"{path}: {e}") from None
    mono = _to_int16(x.reshape(-1, channels).mean(axis=1))
    if rate != SAMPLE_RATE:
        mono = resample(mono, rate, SAMPLE_RATE)
    return mono


def save_wav(path: str, samples: Samples, rate: int = SAMPLE_RATE) -> None:
    """
    Write mono 16-bit PCM WAV (little-endian, as RIFF requires).

    :param path: the file to create or overwrite.
    :param samples: int16 samples at ``rate`` (not resampled).
    :param rate: sample rate in Hz to put in the header.
    :raises OSError: if the file cannot be written.
    """
    x = np.asarray(samples, dtype=np.int16)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.astype("<i2").tobytes())
