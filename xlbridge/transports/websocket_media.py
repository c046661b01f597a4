"""
Asterisk chan_websocket media formats and BINARY payloads, sans I/O.

Why a module of its own: a BINARY message is raw audio with no header, so
all there is to know about it is the channel's format; that knowledge is
used by the endpoint (which format MEDIA_START named), the inbound side
(decoding) and the sender (encoding, message size), none of which needs the
TEXT control messages of :mod:`xlbridge.transports.websocket_codec`.

Wire facts (PROTOCOLS.md section 10): slin16 is 16 kHz signed 16-bit
**little-endian** (Asterisk's host order; RTP's slin is big-endian), 640
bytes per 20 ms; G.711 (ulaw, alaw) is one byte per sample.  Asterisk cuts
what the app sends into ``optimal_frame_size`` frames and drops a
remainder, so payloads should be whole frames, at most :data:`MAX_MESSAGE`
bytes.
"""

from __future__ import annotations

from typing import Optional

import attrs
import numpy as np

from xlbridge.audio import g711
from xlbridge.audio.frame import Samples

#: Largest BINARY payload Asterisk accepts (its frame header included, a
#: frame must fit 65 535 bytes); one more byte and it closes with 1009.
MAX_MESSAGE = 65527


@attrs.frozen
class MediaFormat:
    """
    One channel format the bridge can decode and encode.

    :ivar name: Asterisk's format name (``slin16``...).
    :ivar rate: sample rate in Hz.
    :ivar frame_bytes: bytes per 20 ms frame (Asterisk's optimal frame).
    :ivar sample_bytes: bytes per sample (2 for slin, 1 for G.711).
    """

    name: str
    rate: int
    frame_bytes: int
    sample_bytes: int


#: The formats a WebSocket leg can carry, by Asterisk name.
FORMATS: dict[str, MediaFormat] = {
    f.name: f
    for f in (
        MediaFormat("slin16", 16000, 640, 2),
        MediaFormat("slin", 8000, 320, 2),
        MediaFormat("ulaw", 8000, 160, 1),
        MediaFormat("alaw", 8000, 160, 1),
    )
}


def media_format(name: str) -> MediaFormat:
    """
    The format Asterisk calls ``name``.

    :raises ValueError: for a format the bridge cannot carry (opus, g722,
        slin48...): the message names the ones it can.
    """
    fmt = FORMATS.get(name)
    if fmt is None:
        raise ValueError(f"unsupported chan_websocket format {name!r}; supported: {', '.join(FORMATS)}")
    return fmt


def decode_audio(fmt: MediaFormat, payload: bytes) -> Optional[Samples]:
    """
    One BINARY payload as native int16 samples at ``fmt.rate``: slin is
    **little-endian** on this wire, G.711 one byte per sample.  ``None``
    for a payload that is not whole samples (or empty).
    """
    if not payload or len(payload) % fmt.sample_bytes:
        return None
    if fmt.name == "ulaw":
        return g711.ulaw_decode(payload)
    if fmt.name == "alaw":
        return g711.alaw_decode(payload)
    return np.frombuffer(payload, dtype="<i2").astype(np.int16)


def encode_audio(fmt: MediaFormat, samples: Samples) -> bytes:
    """
    Native int16 samples at ``fmt.rate`` as a BINARY payload (slin
    little-endian, G.711 one byte per sample).
    """
    if fmt.name == "ulaw":
        return g711.ulaw_encode(samples)
    if fmt.name == "alaw":
        return g711.alaw_encode(samples)
    return np.asarray(samples, dtype="<i2").tobytes()
