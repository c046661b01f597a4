"""
RFC 3550 RTP packets, sans-I/O.

:func:`parse` turns one UDP datagram into an :class:`RTPPacket` or raises
:class:`RTPParseError` carrying a :class:`~xlbridge.events.DropReason`, so the
transport can count what it drops by reason and never lets an exception reach
the reactor.  :func:`build` is the inverse, and :class:`RTPSender` holds the
per-stream sending state (random initial sequence, timestamp and SSRC, 16/32
bit wraparound, marker bit on the first packet of a talkspurt).

All header fields are big-endian on the wire (RFC 3550 section 5.1).  The
payload is returned untouched: its byte order is the codec's business.
"""

from __future__ import annotations

import secrets
import struct
from typing import Callable

import attrs

from xlbridge.events import DropReason

#: Length of the fixed RTP header, in bytes.
HEADER_LEN = 12

_HEADER = struct.Struct("!BBHII")


class RTPParseError(ValueError):
    """
    A datagram is not an acceptable RTP packet.

    :ivar reason: why, as a :class:`DropReason` (used as a counter key).
    """

    def __init__(self, reason: DropReason, detail: str = "") -> None:
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason


@attrs.frozen(slots=True)
class RTPPacket:
    """
    One parsed RTP packet.

    :ivar payload_type: 7-bit payload type.
    :ivar sequence: 16-bit sequence number.
    :ivar timestamp: 32-bit media timestamp, in the codec's clock units.
    :ivar ssrc: 32-bit synchronisation source.
    :ivar marker: the M bit (first packet of a talkspurt, for audio).
    :ivar payload: media bytes with CSRCs, extension and padding removed.
    :ivar csrcs: contributing sources, usually empty.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()


def parse(data: bytes) -> RTPPacket:
    """
    Parse one datagram as RTP.

    Handles padding (P), the CSRC list (CC) and skips one header extension
    (X).  Raises :class:`RTPParseError` when the datagram is shorter than the
    fixed header, is not version 2, or when padding, CSRC or extension lengths
    run past its end.

    :param data: the whole UDP payload.
    :return: the packet.
    """
    n = len(data)
    if n < HEADER_LEN:
        raise RTPParseError(DropReason.SHORT, f"{n} bytes")
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        raise RTPParseError(DropReason.VERSION, f"version {b0 >> 6}")
    offset = HEADER_LEN
    cc = b0 & 0x0F
    csrcs: tuple[int, ...] = ()
    if cc:
        end = offset + 4 * cc
        if end > n:
            raise RTPParseError(DropReason.CSRC, f"{cc} CSRCs past the end")
        csrcs = struct.unpack_from(f"!{cc}I", data, offset)
        offset = end
    if b0 & 0x10:
        if offset + 4 > n:
            raise RTPParseError(DropReason.EXTENSION, "extension header past the end")
        (ext_words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * ext_words
        if offset > n:
            raise RTPParseError(DropReason.EXTENSION, "extension data past the end")
    end = n
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or offset + pad > n:
            raise RTPParseError(DropReason.PADDING, f"padding {pad}")
        end = n - pad
    return RTPPacket(
        payload_type=b1 & 0x7F,
        sequence=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(b1 & 0x80),
        csrcs=csrcs,
    )


def build(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    padding: int = 0,
) -> bytes:
    """
    Serialise an RTP version 2 packet (no header extension).

    :param padding: number of padding octets to append (0 for none, else
        1..255; the last one holds the count, per RFC 3550 section 5.1).
    """
    if not 0 <= payload_type <= 127:
        raise ValueError(f"payload type {payload_type} out of 0..127")
    if len(csrcs) > 15:
        raise ValueError("at most 15 CSRCs")
    if not 0 <= padding <= 255:
        raise ValueError("padding must be 0..255")
    b0 = 0x80 | len(csrcs) | (0x20 if padding else 0)
    b1 = payload_type | (0x80 if marker else 0)
    out = _HEADER.pack(b0, b1, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
    if csrcs:
        out += struct.pack(f"!{len(csrcs)}I", *csrcs)
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return out


def _random32() -> int:
    return secrets.randbits(32)


@attrs.define(slots=True)
class RTPSender:
    """
    Sending state of one outbound RTP stream.

    Sequence and timestamp start at random values (RFC 3550 section 5.1) and
    wrap at 2**16 and 2**32.  The timestamp advances by ``timestamp_step``
    codec clock units per packet *and* per skipped packet interval, so it keeps
    counting through gaps, as the receiver's clock does.

    :ivar payload_type: PT stamped on every packet.
    :ivar timestamp_step: clock units per 20 ms packet (G.722: 160).
    """

    payload_type: int
    timestamp_step: int
    random32: Callable[[], int] = _random32
    ssrc: int = attrs.field(init=False)
    sequence: int = attrs.field(init=False)
    timestamp: int = attrs.field(init=False)
    talking: bool = attrs.field(init=False, default=False)
    started: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """
        Start a new stream: fresh random SSRC, sequence and timestamp.
        """
        self.ssrc = self.random32()
        self.sequence = self.random32() & 0xFFFF
        self.timestamp = self.random32()
        self.talking = False
        self.started = False

    def packet(self, payload: bytes, speech: bool) -> bytes:
        """
        Build the next packet and advance sequence and timestamp.

        :param payload: encoded 20 ms of audio.
        :param speech: ``True`` if the payload carries audio, ``False`` if it
            is filler silence; the marker bit is set on the first packet of the
            stream and on the first speech packet after silence.
        """
        marker = (speech and not self.talking) or not self.started
        self.started = True
        self.talking = speech
        b1 = self.payload_type | (0x80 if marker else 0)
        out = _HEADER.pack(0x80, b1, self.sequence, self.timestamp, self.ssrc) + payload
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.timestamp_step) & 0xFFFFFFFF
        return out

    def skip(self, packets: int) -> None:
        """
        Account for ``packets`` packet intervals that were not sent (a stalled
        reactor): the timestamp moves on, the sequence does not, so the
        receiver sees a time gap and no loss.
        """
        self.timestamp = (self.timestamp + packets * self.timestamp_step) & 0xFFFFFFFF
