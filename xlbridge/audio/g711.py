"""
G.711 µ-law (PCMU, RTP PT 0) and A-law (PCMA, RTP PT 8) in pure numpy.

Why this module exists: Python's :mod:`audioop` was removed in 3.13, and a
per-sample Python loop is far too slow for 50 packets per second per call, so
both laws are implemented with lookup tables built once at import:

* a 256-entry ``int16`` decode table per law (code byte -> linear sample), and
* a 65536-entry ``uint8`` encode table per law, indexed by the int16 sample
  reinterpreted as ``uint16`` (``x.view(np.uint16)``).

Encoding and decoding a packet is then a single numpy fancy-indexing
operation.

Units and byte order: linear samples are signed 16-bit (full scale
-32768..32767) in the machine's native byte order; one G.711 code byte per
sample.  G.711 carries no rate of its own; in xlbridge it is always 8 kHz.

Bit compatibility: the tables reproduce Asterisk's ``main/ulaw.c`` and
``main/alaw.c`` exactly as Asterisk uses them at run time (``AST_LIN2MU`` /
``AST_LIN2A`` look-ups on ``sample >> 2`` resp. ``sample >> 3``; without the
MIL-STD "zero trap", which Asterisk also leaves disabled), which is in turn
identical to the ITU-T G.191 reference ``ulaw_compress`` / ``alaw_compress``
(negative inputs are quantised in one's complement).  In particular:

* µ-law: bias 0x84, magnitude clipped at 32635, all bits inverted; linear 0
  encodes to ``0xFF``; code ``0x00`` decodes to -32124, ``0x80`` to 32124.
* A-law: segment/mantissa code XOR ``0x55``; linear 0 encodes to ``0xD5``;
  ``0x55`` decodes to -8 and ``0xD5`` to 8.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from xlbridge.audio.frame import Samples

__all__ = ["ulaw_encode", "ulaw_decode", "alaw_encode", "alaw_decode"]


def _bit_length(v: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    """Vectorised ``int.bit_length`` for non-negative values below 2**16."""
    out = np.zeros(v.shape, dtype=np.int32)
    rest = v.copy()
    while np.any(rest):
        nz = rest != 0
        out[nz] += 1
        rest >>= 1
    return out


def _build_ulaw_decode() -> Samples:
    # Asterisk ast_ulaw_init(): mu = ~code; y = f << (e + 3) + etab[e].
    codes = np.arange(256, dtype=np.int32)
    mu = 255 - codes
    e = (mu & 0x70) >> 4
    f = mu & 0x0F
    etab = np.array([0, 132, 396, 924, 1980, 4092, 8316, 16764], dtype=np.int32)
    y = (f << (e + 3)) + etab[e]
    y = np.where(mu & 0x80, -y, y)
    out: Samples = y.astype(np.int16)
    return out


def _build_alaw_decode() -> Samples:
    # Asterisk alaw2linear(): i = (mantissa << 4) + 8; shifted per segment.
    a = np.arange(256, dtype=np.int32) ^ 0x55
    i = ((a & 0x0F) << 4) + 8
    seg = (a & 0x70) >> 4
    i = np.where(seg > 0, (i + 0x100) << np.maximum(seg - 1, 0), i)
    i = np.where(a & 0x80, i, -i)
    out: Samples = i.astype(np.int16)
    return out


def _all_int16_by_uint16_index() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered so that position ``u`` holds ``int16(u)``."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    # Asterisk fills __ast_lin2mu[(unsigned short)i >> 2] = linear2ulaw(i) for
    # i ascending, so each group of four shares the code of its last member
    # (i | 3).  That equals ITU G.191 ulaw_compress for every input.
    s = _all_int16_by_uint16_index() | 3
    sign = np.where(s < 0, 0x80, 0)
    mag = np.minimum(np.abs(s), 32635) + 0x84
    exponent = np.maximum(_bit_length((mag >> 7) & 0xFF) - 1, 0)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    code = ~(sign | (exponent << 4) | mantissa) & 0xFF
    out: npt.NDArray[np.uint8] = code.astype(np.uint8)
    return out


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    # Asterisk fills __ast_lin2a[(unsigned short)i >> 3] = linear2alaw(i);
    # the representative of each group of eight is i | 7.  Equals ITU G.191
    # alaw_compress for every input.
    s = _all_int16_by_uint16_index() | 7
    mask = np.where(s >= 0, 0xD5, 0x55)
    mag = np.abs(s)
    seg_end = np.array([0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF, 0x3FFF, 0x7FFF])
    seg = np.searchsorted(seg_end, mag, side="left").astype(np.int32)
    shift = np.where(seg > 0, seg + 3, 4)
    code = ((seg << 4) | ((mag >> shift) & 0x0F)) ^ mask
    out: npt.NDArray[np.uint8] = code.astype(np.uint8)
    return out


_ULAW_DECODE: Samples = _build_ulaw_decode()
_ALAW_DECODE: Samples = _build_alaw_decode()
_ULAW_ENCODE: npt.NDArray[np.uint8] = _build_ulaw_encode()
_ALAW_ENCODE: npt.NDArray[np.uint8] = _build_alaw_encode()
for _table in (_ULAW_DECODE, _ALAW_DECODE, _ULAW_ENCODE, _ALAW_ENCODE):
    _table.flags.writeable = False
del _table


def _as_uint16(x: Samples) -> npt.NDArray[np.uint16]:
    # np.asarray is free for the normal case (native int16 already).
    return np.asarray(x, dtype=np.int16).view(np.uint16)


def ulaw_encode(x: Samples) -> bytes:
    """
    Encode linear samples to G.711 µ-law.

    :param x: signed 16-bit samples, native byte order (any rate).
    :return: one µ-law byte per sample.
    """
    return _ULAW_ENCODE[_as_uint16(x)].tobytes()


def ulaw_decode(data: bytes) -> Samples:
    """
    Decode G.711 µ-law to linear samples.

    :param data: µ-law bytes (any bytes-like object), one per sample.
    :return: a fresh, writable native-order int16 array of ``len(data)``
        samples.
    """
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(x: Samples) -> bytes:
    """
    Encode linear samples to G.711 A-law.

    :param x: signed 16-bit samples, native byte order (any rate).
    :return: one A-law byte per sample.
    """
    return _ALAW_ENCODE[_as_uint16(x)].tobytes()


def alaw_decode(data: bytes) -> Samples:
    """
    Decode G.711 A-law to linear samples.

    :param data: A-law bytes (any bytes-like object), one per sample.
    :return: a fresh, writable native-order int16 array of ``len(data)``
        samples.
    """
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)]
