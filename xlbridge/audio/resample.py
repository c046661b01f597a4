"""
Sample-rate conversion for streams (per packet) and for whole files.

Why: Asterisk hands us 8 kHz audio for slin/ulaw/alaw while everything inside
xlbridge runs at 16 kHz (:mod:`xlbridge.audio.frame`), and TTS engines produce
22050/24000/44100 Hz.  The per-packet path has two hard requirements that the
stock tools do not meet on their own:

* **Steady output.**  Every call must return exactly
  ``len(x) * out_rate // in_rate`` samples (with a fractional carry for
  non-integer ratios so the long-run count is exact).  soxr's HQ/MQ/VHQ
  streams hold output back and release it in 100 ms bursts, and every soxr
  stream is a few samples short on its first chunk.
* **Proper band limiting.**  soxr's steady ``'QQ'`` quality is plain cubic
  interpolation: going 16 kHz -> 8 kHz it does not filter at all (a 6 kHz
  tone comes out at full level as a 2 kHz alias), and going 8 kHz -> 16 kHz
  it leaves images only ~10 dB down for a 3 kHz tone and droops 3.5 dB at
  3.4 kHz.

So :class:`StreamResampler` uses its own steady linear-phase polyphase FIR
(Kaiser windowed sinc, passband to 85 % of the lower Nyquist frequency, at
least 60 dB stopband from that Nyquist frequency on) for integer ratios
(8000 <-> 16000, 16000 <-> 48000, ...).  For other ratios it wraps
``soxr.ResampleStream(..., quality='QQ')`` behind the same kind of FIR band
limit, plus a small FIFO and a fractional carry; soxr's start-up shortfall
is covered by leading zeros, never by short chunks.

All arithmetic runs in float64 and is rounded (not dithered) back to int16,
so digital silence stays exactly zero and the output does not depend on
how the input was chunked.

Units: rates in Hz; samples are signed 16-bit native byte order, mono.  The
FIR adds a fixed group delay of about 3 ms at the 8/16 kHz ratio.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt
import soxr

from xlbridge.audio.frame import Samples

__all__ = ["StreamResampler", "resample"]

_Float = npt.NDArray[np.float64]

#: Stopband attenuation of the anti-alias / anti-image filter, in dB.
_STOPBAND_DB = 60.0

#: Passband edge as a fraction of the lower rate's Nyquist frequency; the
#: stopband starts at that Nyquist frequency (3400 / 4000 Hz for 8 kHz).
_PASSBAND_FRACTION = 0.85


@functools.lru_cache(maxsize=32)
def _lowpass(
    fs: int, nyquist: float, gain: float, modulus: int = 1, residue: int = 0
) -> _Float:
    """
    Design a linear-phase Kaiser-windowed-sinc lowpass filter.

    :param fs: rate the filter runs at, in Hz.
    :param nyquist: Nyquist frequency of the lower of the two rates, in Hz;
        the stopband starts here.
    :param gain: DC gain (the interpolation factor when upsampling).
    :param modulus: with ``residue``: lengthen the filter until its delay
        ``(len - 1) // 2`` is ``residue`` modulo ``modulus``, which makes the
        resampler's delay a whole number of samples at the lower rate.
    :param residue: see ``modulus``.
    :return: the taps; always an odd count, so the delay is a whole number
        of samples (``(len - 1) // 2``) at ``fs``.
    """
    pass_edge = _PASSBAND_FRACTION * nyquist
    cutoff = (pass_edge + nyquist) / 2.0 / fs  # cycles per sample
    transition = 2.0 * math.pi * (nyquist - pass_edge) / fs  # rad per sample
    beta = 0.1102 * (_STOPBAND_DB - 8.7)
    ntaps = int(math.ceil((_STOPBAND_DB - 8.0) / (2.285 * transition))) + 1
    ntaps |= 1
    while ((ntaps - 1) // 2) % modulus != residue % modulus:
        ntaps += 2
    m = np.arange(ntaps, dtype=np.float64) - (ntaps - 1) / 2.0
    h = 2.0 * cutoff * np.sinc(2.0 * cutoff * m) * np.kaiser(ntaps, beta)
    h *= gain / h.sum()
    h.flags.writeable = False  # cached and shared between streams
    return h


def _to_int16(y: _Float) -> Samples:
    """Round half to even and saturate to int16.  Overwrites ``y``."""
    np.rint(y, out=y)
    np.minimum(y, 32767.0, out=y)  # cheaper than np.clip on short arrays
    np.maximum(y, -32768.0, out=y)
    return y.astype(np.int16)


def _qq_stream(in_rate: int, out_rate: int) -> soxr.ResampleStream:
    return soxr.ResampleStream(in_rate, out_rate, 1, dtype="float64", quality="QQ")


_QQ_LEAD: dict[tuple[int, int], int] = {}


def _qq_lead(in_rate: int, out_rate: int) -> int:
    """
    How many output samples a soxr QQ stream stays behind
    ``floor(total_in * out_rate / in_rate)``, plus one for safety.

    Measured once per rate pair by feeding a throwaway stream one second
    of silence (the shortfall is soxr's fixed start-up delay, 0..5 samples).
    """
    key = (in_rate, out_rate)
    lead = _QQ_LEAD.get(key)
    if lead is None:
        produced = len(_qq_stream(in_rate, out_rate).resample_chunk(np.zeros(in_rate)))
        lead = _QQ_LEAD[key] = max(0, out_rate - produced) + 1
    return lead


class _FIR:
    """A streaming FIR filter: as many samples out as in, state carried."""

    __slots__ = ("_h", "_hist")

    def __init__(self, h: _Float) -> None:
        self._h = h
        self._hist: _Float = np.zeros(len(h) - 1)

    def reset(self) -> None:
        self._hist = np.zeros(len(self._h) - 1)

    def process(self, x: _Float) -> _Float:
        if not len(x):
            return np.zeros(0)
        buf = np.concatenate((self._hist, x))
        self._hist = buf[len(buf) - len(self._hist):]
        return np.convolve(buf, self._h, "valid")


class StreamResampler:
    """
    Steady, stateful resampler for one direction of one stream.

    Every :meth:`process` call returns exactly ``len(x) * out_rate //
    in_rate`` samples (plus the carried fraction, for ratios where that is
    not a whole number), from the first chunk on.  When ``in_rate ==
    out_rate`` the input is returned as is.

    :param in_rate: input sample rate in Hz.
    :param out_rate: output sample rate in Hz.
    :raises ValueError: if a rate is not a positive integer.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if (
            not isinstance(in_rate, int)
            or not isinstance(out_rate, int)
            or in_rate <= 0
            or out_rate <= 0
        ):
            raise ValueError(
                f"sample rates must be positive integers, got {in_rate!r} "
                f"-> {out_rate!r}"
            )
        self.in_rate = in_rate
        self.out_rate = out_rate
        g = math.gcd(in_rate, out_rate)
        self._up = out_rate // g
        self._down = in_rate // g
        self._identity = in_rate == out_rate
        nyquist = min(in_rate, out_rate) / 2.0
        # Per-mode state; only the attributes of the active mode are used.
        self._phases: list[_Float] = []
        self._hist: _Float = np.zeros(0)
        self._taps: _Float = np.zeros(0)
        self._pre: _FIR | None = None
        self._post: _FIR | None = None
        self._stream: soxr.ResampleStream | None = None
        self._pending: _Float = np.zeros(0)
        self._delay = 0
        if self._identity:
            pass
        elif self._down == 1:
            # Integer upsampling by L: polyphase, phase p of output sample
            # n*L + p is sum_k h[p + k*L] * x[n - k].
            up = self._up
            h = _lowpass(out_rate, nyquist, float(up), up, 0)
            self._delay = (len(h) - 1) // 2
            per_phase = -(-len(h) // up)
            h = np.concatenate((h, np.zeros(per_phase * up - len(h))))
            self._phases = [np.ascontiguousarray(h[p::up]) for p in range(up)]
            self._hist = np.zeros(per_phase - 1)
        elif self._up == 1:
            # Integer downsampling by M: filter, keep every M-th sample.
            self._taps = _lowpass(in_rate, nyquist, 1.0, self._down, self._down - 1)
            # Output k is centred on input index k*M + M-1 - (N-1)/2.
            self._delay = ((len(self._taps) - 1) // 2 - (self._down - 1)) // self._down
            self._hist = np.zeros(len(self._taps) - 1)
        else:
            if out_rate < in_rate:
                h = _lowpass(in_rate, nyquist, 1.0)
                self._pre = _FIR(h)
                self._delay = (len(h) - 1) // 2 * out_rate // in_rate
            else:
                h = _lowpass(out_rate, nyquist, 1.0)
                self._post = _FIR(h)
                self._delay = (len(h) - 1) // 2
        self.reset()

    @property
    def delay(self) -> int:
        """
        Approximate fixed delay added by the filter, in output samples.

        Exact for integer ratios, where it is also a whole number of samples
        at the lower rate; for other ratios it excludes soxr's own few
        samples of delay.
        """
        return self._delay

    def reset(self) -> None:
        """Forget all stream state, as if newly constructed."""
        self._consumed = 0  # input samples seen (integer downsampling phase)
        self._carry = 0  # fractional output carry, in units of 1/in_rate
        self._hist = np.zeros(len(self._hist))
        self._pending = np.zeros(0)
        if self._pre is not None:
            self._pre.reset()
        if self._post is not None:
            self._post.reset()
        if self._pre is not None or self._post is not None:
            self._stream = _qq_stream(self.in_rate, self.out_rate)
            # Lead with as many zeros as soxr falls behind, so that the
            # FIFO never runs dry mid-stream and the output does not depend
            # on how the input was chunked.
            self._pending = np.zeros(_qq_lead(self.in_rate, self.out_rate))

    def process(self, x: Samples) -> Samples:
        """
        Resample the next chunk of the stream.

        :param x: int16 samples at ``in_rate``, any length.
        :return: int16 samples at ``out_rate``; exactly ``len(x) * out_rate
            // in_rate`` of them for integer ratios, and the running total is
            always ``floor(total_in * out_rate / in_rate)``.  The input itself
            when the rates are equal.
        """
        if self._identity:
            return x
        n = len(x)
        if n == 0:
            return np.zeros(0, dtype=np.int16)
        xf = np.asarray(x, dtype=np.float64)
        if self._down == 1:
            return self._upsample(xf)
        if self._up == 1:
            return self._downsample(xf)
        return self._rational(xf)

    def _upsample(self, xf: _Float) -> Samples:
        buf = np.concatenate((self._hist, xf))
        self._hist = buf[len(xf):]
        up = self._up
        out = np.empty(len(xf) * up)
        for p, h in enumerate(self._phases):
            out[p::up] = np.convolve(buf, h, "valid")
        return _to_int16(out)

    def _downsample(self, xf: _Float) -> Samples:
        buf = np.concatenate((self._hist, xf))
        self._hist = buf[len(xf):]
        m = self._down
        # Output k is taken at input index k*M + M-1, so that after T input
        # samples exactly T // M outputs have been produced.
        start = (m - 1 - self._consumed) % m
        self._consumed += len(xf)
        full = np.convolve(buf, self._taps, "valid")
        return _to_int16(full[start::m].copy())

    def _rational(self, xf: _Float) -> Samples:
        assert self._stream is not None
        total = self._carry + len(xf) * self.out_rate
        want = total // self.in_rate
        self._carry = total - want * self.in_rate
        if self._pre is not None:
            xf = self._pre.process(xf)
        y = self._stream.resample_chunk(xf)
        if len(self._pending):
            y = np.concatenate((self._pending, y))
        if len(y) < want:
            # Cannot happen with the lead from _qq_lead(); never return a
            # short chunk even so.
            y = np.concatenate((np.zeros(want - len(y)), y))
        self._pending = y[want:]
        y = y[:want]
        if self._post is not None:
            y = self._post.process(y)
        else:
            y = y.copy()
        return _to_int16(y)


def resample(x: Samples, in_rate: int, out_rate: int) -> Samples:
    """
    Resample a whole recording in one go, at high quality (soxr ``'HQ'``).

    Not for packet streams: use :class:`StreamResampler` there.

    :param x: int16 samples at ``in_rate`` (native byte order).
    :param in_rate: input rate in Hz.
    :param out_rate: output rate in Hz.
    :return: a new int16 array at ``out_rate`` of about
        ``len(x) * out_rate / in_rate`` samples.
    :raises ValueError: if a rate is not positive.
    """
    if in_rate <= 0 or out_rate <= 0:
        raise ValueError(
            f"sample rates must be positive, got {in_rate!r} -> {out_rate!r}"
        )
    if in_rate == out_rate:
        return np.array(x, dtype=np.int16)
    if len(x) == 0:
        return np.zeros(0, dtype=np.int16)
    y = soxr.resample(np.asarray(x, dtype=np.float64), in_rate, out_rate, quality="HQ")
    return _to_int16(np.array(y, dtype=np.float64))
