"""
Asterisk AudioSocket framing, sans I/O: bytes in, typed frames out.

Wire format (PROTOCOLS.md section 6): a 3-byte header, one byte *kind* and a
**big-endian** unsigned 16-bit payload length, then the payload.  Audio
payloads are signed 16-bit **little-endian** samples (Asterisk's host order
on x86-64/arm64).  The kind of an audio frame names its sample rate; 0x12 is
slin16 (T6), 0x10 is the 8 kHz slin the ``AudioSocket()`` dialplan app forces.

:class:`FrameDecoder` is fed whatever TCP delivered and returns complete
frames, or :class:`Malformed` tokens naming the :class:`DropReason` to count.
Every u16 length is possible on the wire, so each kind has a bound: a frame
over its bound is skipped as its bytes arrive, never buffered.  Nothing here
raises for bad input; the caller decides what a token means for the leg.
"""

from __future__ import annotations

import struct
import uuid
from typing import Union

import attrs

from xlbridge.events import DropReason

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_ERROR = 0xFF

#: Audio kinds and their sample rates in Hz (slin, slin12, slin16, ...).
AUDIO_RATES: dict[int, int] = {
    0x10: 8000,
    0x11: 12000,
    0x12: 16000,
    0x13: 24000,
    0x14: 32000,
    0x15: 44100,
    0x16: 48000,
    0x17: 96000,
    0x18: 192000,
}

#: Kind of each rate, for replies.
KIND_OF_RATE: dict[int, int] = {rate: kind for kind, rate in AUDIO_RATES.items()}

HEADER = struct.Struct(">BH")


def _max_length(kind: int) -> int:
    """
    Largest payload accepted for ``kind``; -1 for a kind we do not know.
    Audio: one second (capped by the u16 field); control frames: small.
    """
    rate = AUDIO_RATES.get(kind)
    if rate is not None:
        return min(2 * rate, 0xFFFF)
    if kind == KIND_UUID:
        return 16
    if kind in (KIND_HANGUP, KIND_DTMF, KIND_ERROR):
        return 256
    return -1


@attrs.frozen
class Frame:
    """
    One complete, plausibly sized AudioSocket message.

    :ivar kind: the kind byte.
    :ivar payload: the raw payload (little-endian PCM for audio kinds).
    """

    kind: int
    payload: bytes

    @property
    def rate(self) -> int | None:
        """
        Sample rate in Hz for an audio frame, else ``None``.
        """
        return AUDIO_RATES.get(self.kind)


@attrs.frozen
class Malformed:
    """
    A message that was discarded: count ``reason``.

    :ivar kind: its kind byte.
    :ivar length: its declared payload length.
    """

    reason: DropReason
    kind: int
    length: int


Token = Union[Frame, Malformed]


class FrameDecoder:
    """
    Reassembles AudioSocket messages from a TCP byte stream.

    Feed it with :meth:`feed`; :attr:`pending` tells how many bytes of an
    incomplete message are held (a half frame if the stream ends now).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0  # payload bytes of a rejected message still to discard
        self._skipping: Malformed | None = None

    @property
    def pending(self) -> int:
        """
        Bytes of an unfinished message (buffered or still to be skipped).
        """
        return len(self._buf) + self._skip

    def feed(self, data: bytes) -> list[Token]:
        """
        Add ``data`` and return every message it completes, in order.
        """
        out: list[Token] = []
        buf = self._buf
        buf += data
        pos = 0
        while True:
            if self._skip:
                n = min(self._skip, len(buf) - pos)
                pos += n
                self._skip -= n
                if self._skip:
                    break
                assert self._skipping is not None
                out.append(self._skipping)
                self._skipping = None
            if len(buf) - pos < HEADER.size:
                break
            kind, length = HEADER.unpack_from(buf, pos)
            limit = _max_length(kind)
            if limit < 0 or length > limit:
                reason = DropReason.AUDIOSOCKET_KIND if limit < 0 else DropReason.AUDIOSOCKET_LENGTH
                pos += HEADER.size
                self._skip = length
                self._skipping = Malformed(reason, kind, length)
                continue
            end = pos + HEADER.size + length
            if end > len(buf):
                break
            payload = bytes(buf[pos + HEADER.size : end])
            pos = end
            out.append(_check(kind, payload))
        del buf[:pos]
        return out


def _check(kind: int, payload: bytes) -> Token:
    n = len(payload)
    if kind in AUDIO_RATES:
        if n == 0 or n % 2:
            return Malformed(DropReason.AUDIOSOCKET_LENGTH, kind, n)
    elif kind == KIND_UUID and n != 16:
        return Malformed(DropReason.AUDIOSOCKET_LENGTH, kind, n)
    elif kind == KIND_DTMF and n == 0:
        return Malformed(DropReason.AUDIOSOCKET_LENGTH, kind, n)
    return Frame(kind, payload)


def encode(kind: int, payload: bytes = b"") -> bytes:
    """
    One message: kind byte, big-endian u16 length, payload.

    :raises ValueError: if the payload does not fit a u16 length.
    """
    if len(payload) > 0xFFFF:
        raise ValueError(f"AudioSocket payload of {len(payload)} bytes exceeds 65535")
    return HEADER.pack(kind, len(payload)) + payload


#: Our hangup message: kind 0x00, length 0.
HANGUP = encode(KIND_HANGUP)


def uuid_frame(call_id: str) -> bytes:
    """
    The 0x01 message Asterisk sends first: the 16 binary bytes of the UUID.
    """
    return encode(KIND_UUID, uuid.UUID(call_id).bytes)


def format_uuid(payload: bytes) -> str:
    """
    A 16-byte binary UUID as text, 8-4-4-4-12 lowercase hex.
    """
    return str(uuid.UUID(bytes=bytes(payload)))
