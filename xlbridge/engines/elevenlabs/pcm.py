"""
ElevenLabs text-to-speech audio: :class:`PCMChunker` reassembles the
``pcm_16000`` stream (raw signed 16-bit **little-endian** mono at 16000 Hz,
no header, PROTOCOLS.md T1) into whole native-order samples.

Why: both transports deliver that stream cut at arbitrary byte boundaries
(HTTP body chunks, base64 ``audio`` fields of WebSocket messages), so a
chunk may end in the middle of a sample.  Kept apart from
:mod:`xlbridge.engines.elevenlabs.wire` because it is about audio, not the
protocol: it needs no JSON, URL or error mapping, only the byte order.
"""

from __future__ import annotations

from typing import Optional

from xlbridge.audio.frame import Samples
from xlbridge.audio.pcm16 import from_little_endian

__all__ = ["PCMChunker"]


class PCMChunker:
    """
    Turns arbitrary byte chunks of S16LE PCM into whole native-order samples.

    A chunk may end in the middle of a sample; that odd byte is kept and
    prepended to the next chunk, so the samples produced are bit-exact
    whatever the chunking.  The buffer is bounded: at most one byte.
    """

    def __init__(self) -> None:
        self._odd = b""

    def feed(self, data: bytes) -> Optional[Samples]:
        """
        :param data: the next bytes of the little-endian stream.
        :return: the whole samples completed by ``data`` (native int16), or
            ``None`` if there are none yet.
        """
        if self._odd:
            data = self._odd + data
        if len(data) % 2:
            self._odd, data = data[-1:], data[:-1]
        else:
            self._odd = b""
        return from_little_endian(data) if data else None

    @property
    def pending(self) -> int:
        """Bytes held back (0 or 1)."""
        return len(self._odd)

    def reset(self) -> None:
        """Forget a held byte (a new stream starts)."""
        self._odd = b""
