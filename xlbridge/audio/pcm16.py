"""
16-bit PCM bytes to and from xlbridge's internal int16 arrays, in either
byte order, and :class:`CodecError` for bytes that are not whole samples.

Why a module of its own: byte order is not an RTP concern.  L16 on RTP is
**big-endian** (network order, RFC 3551) and is used by the wire codecs in
:mod:`xlbridge.audio.codecs`; AudioSocket, Deepgram and ElevenLabs use
**little-endian** PCM and need only these helpers, not the codec table,
resamplers or G.722.  The internal arrays
(:data:`~xlbridge.audio.frame.Samples`) are int16 in native byte order; the
helpers here always return fresh native-order arrays, whatever the host's
byte order.

Sizes: 2 bytes per sample, so a payload must have an even number of bytes.
"""

from __future__ import annotations

import numpy as np

from xlbridge.audio.frame import Samples

__all__ = [
    "CodecError",
    "from_big_endian",
    "from_little_endian",
    "little_endian_bytes",
    "pcm16_samples",
    "to_big_endian",
]


class CodecError(ValueError):
    """A payload that cannot be decoded (empty, or not whole L16 samples)."""


def pcm16_samples(data: bytes, dtype: str) -> Samples:
    """
    Parse 16-bit PCM in the byte order named by ``dtype``.

    Shared by the byte-order helpers below and by the L16 decoders in
    :mod:`xlbridge.audio.codecs`, so every L16 parse checks its length the
    same way.

    :param data: 16-bit PCM, two bytes per sample.
    :param dtype: a numpy 16-bit integer dtype string with its byte order:
        ``">i2"`` (big-endian) or ``"<i2"`` (little-endian).
    :return: a fresh native-order int16 array of ``len(data) // 2`` samples.
    :raises CodecError: for an odd number of bytes.
    """
    if len(data) % 2:
        raise CodecError(f"16-bit PCM needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).astype(np.int16)


def to_big_endian(x: Samples) -> bytes:
    """
    :param x: int16 samples, native byte order.
    :return: the samples as 16-bit big-endian (network order) bytes, as L16
        on RTP.
    """
    return np.asarray(x, dtype=">i2").tobytes()


def from_big_endian(data: bytes) -> Samples:
    """
    :param data: 16-bit big-endian PCM.
    :return: a fresh native-order int16 array.
    :raises CodecError: for an odd number of bytes.
    """
    return pcm16_samples(data, ">i2")


def little_endian_bytes(x: Samples) -> bytes:
    """
    :param x: int16 samples, native byte order.
    :return: the samples as 16-bit little-endian bytes (AudioSocket,
        Deepgram, ElevenLabs).
    """
    return np.asarray(x, dtype="<i2").tobytes()


def from_little_endian(data: bytes) -> Samples:
    """
    :param data: 16-bit little-endian PCM.
    :return: a fresh native-order int16 array.
    :raises CodecError: for an odd number of bytes.
    """
    return pcm16_samples(data, "<i2")
