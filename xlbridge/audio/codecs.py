"""
Wire codecs: what Asterisk sends and accepts, and the conversion to and from
xlbridge's internal audio.

Why: inside the bridge all audio is 16 kHz mono int16 in native byte order
(:mod:`xlbridge.audio.frame`).  Asterisk, on the other hand, speaks one of
several RTP payload formats, and each leg's wire format is converted exactly
once, here, by a per-stream :class:`Decoder` (wire -> internal) and
:class:`Encoder` (internal -> wire).  Both are stateful (resampler history,
G.722 ADPCM state), so make one per stream direction and discard it when the
stream restarts.

The formats, with Asterisk's default RTP payload types:

=========  ====  ===========  ============  ===========================
name       PT    audio rate   RTP clock     20 ms payload
=========  ====  ===========  ============  ===========================
slin16     118   16000 Hz     16000         640 B, L16 big-endian
slin       10    8000 Hz      8000          320 B, L16 big-endian
ulaw       0     8000 Hz      8000          160 B, G.711 µ-law (PCMU)
alaw       8     8000 Hz      8000          160 B, G.711 A-law (PCMA)
g722       9     16000 Hz     8000 (sic)    160 B, G.722 at 64 kbit/s
=========  ====  ===========  ============  ===========================

Byte order: L16 on RTP is **big-endian** (network order, RFC 3551); the
internal arrays are native order.  The byte-order helpers, and
:class:`~xlbridge.audio.pcm16.CodecError` raised for bad payloads, live in
:mod:`xlbridge.audio.pcm16` (AudioSocket, Deepgram and ElevenLabs use
little-endian PCM and need only those).

8 kHz codecs go through a :class:`~xlbridge.audio.resample.StreamResampler`
(8000 -> 16000 Hz on decode, 16000 -> 8000 Hz on encode).  G.722 uses one
``G722.G722(16000, 64000)`` per encoder/decoder; its RTP clock is 8000 Hz
although its audio is 16 kHz (RFC 3551's historical quirk), so its
timestamp advances 160 per 20 ms.
"""

from __future__ import annotations

import attrs
import G722
import numpy as np

from xlbridge.audio import g711
from xlbridge.audio.frame import FRAME_MS, SAMPLE_RATE, Samples
from xlbridge.audio.pcm16 import CodecError, pcm16_samples
from xlbridge.audio.resample import StreamResampler

__all__ = [
    "CODEC_NAMES",
    "Codec",
    "Decoder",
    "Encoder",
    "codec_for_payload_type",
    "get_codec",
    "make_decoder",
    "make_encoder",
]


@attrs.frozen
class Codec:
    """
    One RTP audio payload format as used on a leg.

    :ivar name: ``'slin16'``, ``'slin'``, ``'ulaw'``, ``'alaw'`` or ``'g722'``.
    :ivar payload_type: RTP payload type, 0..127.
    :ivar clock_rate: RTP timestamp clock in Hz (G.722: 8000 although its
        audio is 16 kHz).
    :ivar sample_rate: audio sample rate on the wire in Hz.
    :ivar bytes_per_frame: payload bytes per 20 ms.
    """

    name: str
    payload_type: int
    clock_rate: int
    sample_rate: int
    bytes_per_frame: int

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp increment per 20 ms packet (slin16 320, others 160)."""
        return self.clock_rate * FRAME_MS // 1000


_DEFAULTS: dict[str, Codec] = {
    c.name: c
    for c in (
        Codec("slin16", 118, 16000, 16000, 640),
        Codec("slin", 10, 8000, 8000, 320),
        Codec("ulaw", 0, 8000, 8000, 160),
        Codec("alaw", 8, 8000, 8000, 160),
        Codec("g722", 9, 8000, 16000, 160),
    )
}

#: The codec names :func:`get_codec` accepts.
CODEC_NAMES: tuple[str, ...] = tuple(_DEFAULTS)

# Asterisk maps both RTP PT 10 and 11 (RFC 3551 "L16" stereo/mono, 44.1 kHz)
# to its 8 kHz slin.
_BY_PAYLOAD_TYPE: dict[int, Codec] = {c.payload_type: c for c in _DEFAULTS.values()}
_BY_PAYLOAD_TYPE[11] = attrs.evolve(_DEFAULTS["slin"], payload_type=11)


def _check_payload_type(pt: object) -> int:
    if isinstance(pt, bool) or not isinstance(pt, int) or not 0 <= pt <= 127:
        raise ValueError(f"RTP payload type must be an integer 0..127, got {pt!r}")
    return pt


def get_codec(name: str, payload_type: int | None = None) -> Codec:
    """
    Look up a codec by name.

    :param name: one of :data:`CODEC_NAMES` (case-insensitive).
    :param payload_type: RTP payload type to use instead of Asterisk's
        default for this codec.
    :raises ValueError: for an unknown name or a payload type outside
        0..127.
    """
    codec = _DEFAULTS.get(name.strip().lower()) if isinstance(name, str) else None
    if codec is None:
        raise ValueError(
            f"unknown codec {name!r}; valid codecs are: {', '.join(CODEC_NAMES)}"
        )
    if payload_type is None:
        return codec
    return attrs.evolve(codec, payload_type=_check_payload_type(payload_type))


def codec_for_payload_type(pt: int) -> Codec | None:
    """
    The codec Asterisk means by a static/default payload type, or ``None``.

    PT 0 ulaw, 8 alaw, 9 g722, 10 and 11 slin (8 kHz), 118 slin16.

    :param pt: an RTP payload type.
    """
    return _BY_PAYLOAD_TYPE.get(pt)


# --- decoders ---------------------------------------------------------------


class Decoder:
    """
    Turns one stream's RTP payloads into internal audio (16 kHz int16,
    native order).  Stateful: one per inbound stream.

    :ivar codec: the codec decoded.
    """

    __slots__ = ("codec",)

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def decode(self, payload: bytes) -> Samples:
        """
        :param payload: one RTP payload (any whole number of samples, not
            only 20 ms).
        :return: internal audio, ``2 * n`` samples for ``n`` samples of 8 kHz
            audio on the wire.
        :raises CodecError: if the payload cannot be decoded.
        """
        raise NotImplementedError

    def reset(self) -> None:
        """Forget stream state (a new stream starts)."""


class _Slin16Decoder(Decoder):
    __slots__ = ()

    def decode(self, payload: bytes) -> Samples:
        if not payload:
            raise CodecError("empty slin16 payload")
        return pcm16_samples(payload, ">i2")


class _Narrowband(Decoder):
    """Base of decoders for 8 kHz codecs; ``_wire`` decodes to 8 kHz."""

    __slots__ = ("_rs",)

    def __init__(self, codec: Codec) -> None:
        super().__init__(codec)
        self._rs = StreamResampler(codec.sample_rate, SAMPLE_RATE)

    def reset(self) -> None:
        self._rs.reset()

    def decode(self, payload: bytes) -> Samples:
        if not payload:
            raise CodecError(f"empty {self.codec.name} payload")
        return self._rs.process(self._wire(payload))

    def _wire(self, payload: bytes) -> Samples:
        raise NotImplementedError


class _SlinDecoder(_Narrowband):
    __slots__ = ()

    def _wire(self, payload: bytes) -> Samples:
        return pcm16_samples(payload, ">i2")


class _UlawDecoder(_Narrowband):
    __slots__ = ()

    def _wire(self, payload: bytes) -> Samples:
        return g711.ulaw_decode(payload)


class _AlawDecoder(_Narrowband):
    __slots__ = ()

    def _wire(self, payload: bytes) -> Samples:
        return g711.alaw_decode(payload)


class _G722Decoder(Decoder):
    __slots__ = ("_g",)

    def __init__(self, codec: Codec) -> None:
        super().__init__(codec)
        self._g = G722.G722(16000, 64000)

    def reset(self) -> None:
        self._g = G722.G722(16000, 64000)

    def decode(self, payload: bytes) -> Samples:
        if not payload:
            raise CodecError("empty g722 payload")
        # decode() returns a fresh array('h'); wrap it without copying.
        return np.frombuffer(self._g.decode(bytes(payload)), dtype=np.int16)


_DECODERS: dict[str, type[Decoder]] = {
    "slin16": _Slin16Decoder,
    "slin": _SlinDecoder,
    "ulaw": _UlawDecoder,
    "alaw": _AlawDecoder,
    "g722": _G722Decoder,
}


def make_decoder(codec: Codec) -> Decoder:
    """
    A fresh decoder for one inbound stream.

    :param codec: the codec arriving on the wire.
    :raises ValueError: for a codec name this module does not know.
    """
    cls = _DECODERS.get(codec.name)
    if cls is None:
        raise ValueError(f"no decoder for codec {codec.name!r}")
    return cls(codec)


# --- encoders ---------------------------------------------------------------


class Encoder:
    """
    Turns internal audio (16 kHz int16, native order) into one stream's RTP
    payloads.  Stateful: one per outbound stream.

    :ivar codec: the codec produced.
    """

    __slots__ = ("codec",)

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def encode(self, samples: Samples) -> bytes:
        """
        :param samples: internal audio; normally one 20 ms frame of 320
            samples, which gives exactly ``codec.bytes_per_frame`` bytes.
        :return: the RTP payload.
        """
        raise NotImplementedError

    def reset(self) -> None:
        """Forget stream state (a new stream starts)."""


class _Slin16Encoder(Encoder):
    __slots__ = ()

    def encode(self, samples: Samples) -> bytes:
        return np.asarray(samples, dtype=">i2").tobytes()


class _NarrowbandEncoder(Encoder):
    """Base of encoders for 8 kHz codecs; ``_wire`` encodes 8 kHz audio."""

    __slots__ = ("_rs",)

    def __init__(self, codec: Codec) -> None:
        super().__init__(codec)
        self._rs = StreamResampler(SAMPLE_RATE, codec.sample_rate)

    def reset(self) -> None:
        self._rs.reset()

    def encode(self, samples: Samples) -> bytes:
        return self._wire(self._rs.process(samples))

    def _wire(self, x: Samples) -> bytes:
        raise NotImplementedError


class _SlinEncoder(_NarrowbandEncoder):
    __slots__ = ()

    def _wire(self, x: Samples) -> bytes:
        return np.asarray(x, dtype=">i2").tobytes()


class _UlawEncoder(_NarrowbandEncoder):
    __slots__ = ()

    def _wire(self, x: Samples) -> bytes:
        return g711.ulaw_encode(x)


class _AlawEncoder(_NarrowbandEncoder):
    __slots__ = ()

    def _wire(self, x: Samples) -> bytes:
        return g711.alaw_encode(x)


class _G722Encoder(Encoder):
    """
    G.722 consumes samples in pairs; an odd trailing sample is held back for
    the next call so that chunked encoding equals whole-buffer encoding.
    """

    __slots__ = ("_g", "_odd")

    def __init__(self, codec: Codec) -> None:
        super().__init__(codec)
        self._g = G722.G722(16000, 64000)
        self._odd: Samples | None = None

    def reset(self) -> None:
        self._g = G722.G722(16000, 64000)
        self._odd = None

    def encode(self, samples: Samples) -> bytes:
        # G722.encode() needs int16 samples: bytes would be read as one
        # sample per byte.
        x = np.ascontiguousarray(samples, dtype=np.int16)
        if self._odd is not None:
            x = np.concatenate((self._odd, x))
            self._odd = None
        if len(x) % 2:
            self._odd = x[-1:].copy()
            x = x[:-1]
        if not len(x):
            return b""
        return self._g.encode(x)  # type: ignore[no-any-return]


_ENCODERS: dict[str, type[Encoder]] = {
    "slin16": _Slin16Encoder,
    "slin": _SlinEncoder,
    "ulaw": _UlawEncoder,
    "alaw": _AlawEncoder,
    "g722": _G722Encoder,
}


def make_encoder(codec: Codec) -> Encoder:
    """
    A fresh encoder for one outbound stream.

    :param codec: the codec to send.
    :raises ValueError: for a codec name this module does not know.
    """
    cls = _ENCODERS.get(codec.name)
    if cls is None:
        raise ValueError(f"no encoder for codec {codec.name!r}")
    return cls(codec)
