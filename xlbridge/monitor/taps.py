"""
Audio taps on call legs: level meters and listen-in, at almost no cost to
the media path.

A leg offers two hooks (``tap_in``: each decoded inbound frame, what the
caller *says*; ``tap_out``: each frame sent, what the caller *hears*, ``None``
for digital silence).  The monitor fills them only while someone watches;
otherwise they stay ``None`` and the media path pays one attribute check per
frame.

A :class:`LegTap` does two things when called:

- keeps a reference to the latest frame, so the level meters can compute
  one RMS value per leg and direction ten times a second (about 2 us each)
  instead of one per frame;
- if a client listens to it, hands the frame to a sink, which only queues
  it: framing and sending happen after the egress tick, never inside it.

Taps are keyed by extension and direction and outlive calls (a new call on
the same extension gets the same tap, so a listener keeps listening and a
stream keeps its id).  Legs set up at run time (ARI callers, named after
their channel) never come back, so the hub prunes taps of names the bridge
no longer has; stream ids are then reused, never two live taps at once.

Listen-in frames travel as binary WebSocket messages: a 4-byte header (stream
id and sequence number, both big-endian unsigned 16-bit; the sequence
increases by one per frame and wraps, so a client sees frames it lost) then
the samples, signed 16-bit little-endian, 16 kHz mono (usually 320 samples,
20 ms).
"""

from __future__ import annotations

import math
import struct
from typing import Callable, Container, Iterable, Optional

import numpy as np
from twisted.logger import Logger

from xlbridge.audio.frame import FRAME_SAMPLES, SAMPLE_RATE, Samples
from xlbridge.call.service import CallService

#: What a caller says (inbound audio) and hears (what the bridge sends).
DIRECTIONS = ("says", "hears")

#: Level reported for digital silence or no audio at all, in dBFS.
FLOOR_DBFS = -96.0

_HEADER = struct.Struct("!HH")
_SILENCE = bytes(2 * FRAME_SAMPLES)

#: The audio format listen-in clients are told about.
AUDIO_FORMAT = {
    "sample_rate": SAMPLE_RATE,
    "channels": 1,
    "encoding": "s16le",
    "header": "stream id, sequence: big-endian uint16 each",
}

TapKey = tuple[str, str]


def dbfs(samples: Optional[Samples]) -> float:
    """
    RMS level of ``samples`` in dB relative to full scale (a full-scale
    square wave is 0), floored at :data:`FLOOR_DBFS`.
    """
    if samples is None or len(samples) == 0:
        return FLOOR_DBFS
    x = samples.astype(np.float32)
    rms = math.sqrt(float(np.dot(x, x)) / len(x))
    if rms <= 0.0:
        return FLOOR_DBFS
    return max(FLOOR_DBFS, round(20.0 * math.log10(rms / 32768.0), 1))


def encode_frame(stream_id: int, seq: int, samples: Optional[Samples]) -> bytes:
    """
    A listen-in message: header and s16le samples (silence for ``None``).
    """
    pcm = _SILENCE if samples is None else samples.astype("<i2", copy=False).tobytes()
    return _HEADER.pack(stream_id & 0xFFFF, seq & 0xFFFF) + pcm


def decode_frame(data: bytes) -> tuple[int, int, Samples]:
    """
    The inverse of :func:`encode_frame` (for tests and Python clients).
    """
    stream_id, seq = _HEADER.unpack_from(data)
    return stream_id, seq, np.frombuffer(data[_HEADER.size :], dtype="<i2").astype(np.int16)


class LegTap:
    """
    The callable a leg calls with every frame in one direction.

    :ivar listening: whether anyone listens (then frames go to the sink).
    :ivar seq: frames handed to the sink so far.
    """

    __slots__ = ("extension", "direction", "stream_id", "latest", "listening", "seq", "sink", "errors")

    log = Logger()

    def __init__(
        self, extension: str, direction: str, stream_id: int, sink: Callable[["LegTap", Optional[Samples]], None]
    ) -> None:
        self.extension = extension
        self.direction = direction
        self.stream_id = stream_id
        self.sink = sink
        #: the latest frame since :meth:`level` last read it; ``None`` if
        #: none came, or digital silence (both read as the floor)
        self.latest: Optional[Samples] = None
        self.listening = False
        self.seq = 0
        self.errors = 0

    def __call__(self, samples: Optional[Samples]) -> None:
        # Runs on the media path (RTP receive, egress tick): never raise.
        self.latest = samples
        if self.listening:
            try:
                self.seq += 1
                self.sink(self, samples)
            except Exception:
                self.errors += 1
                if self.errors == 1:
                    self.log.failure("listen-in tap failed for {ext} {dir}", ext=self.extension, dir=self.direction)

    def level(self) -> float:
        """
        Level of the latest frame since the previous call, in dBFS; the
        floor if no frame came since (the caller's audio stopped).
        """
        latest, self.latest = self.latest, None
        return dbfs(latest)


class Taps:
    """
    Every tap, by extension and direction, and their installation on legs.

    :param sink: receives ``(tap, samples)`` for frames of listened taps.
    """

    def __init__(self, sink: Callable[[LegTap, Optional[Samples]], None]) -> None:
        self.sink = sink
        self._taps: dict[TapKey, LegTap] = {}
        self._last_id = 0

    def get(self, extension: str, direction: str) -> LegTap:
        """
        The tap for ``(extension, direction)``, created on first use.
        """
        key = (extension, direction)
        tap = self._taps.get(key)
        if tap is None:
            tap = self._taps[key] = LegTap(extension, direction, self._new_stream_id(), self.sink)
        return tap

    def _new_stream_id(self) -> int:
        # 1..65535 (a uint16 on the wire), none a live tap has.
        used = {tap.stream_id for tap in self._taps.values()}
        for _ in range(0xFFFF):
            self._last_id = self._last_id % 0xFFFF + 1
            if self._last_id not in used:
                return self._last_id
        raise RuntimeError("no free listen-in stream id")

    def prune(self, keep: Container[str]) -> None:
        """
        Forget the taps of extensions not in ``keep`` that nobody listens to.
        """
        for key in [k for k, tap in self._taps.items() if k[0] not in keep and not tap.listening]:
            del self._taps[key]

    def install(self, calls: Iterable[CallService]) -> None:
        """
        Hook the taps into every leg of ``calls``.
        """
        for call in calls:
            for leg in call.legs:
                leg.tap_in = self.get(leg.extension, "says")
                leg.tap_out = self.get(leg.extension, "hears")

    def uninstall(self, calls: Iterable[CallService]) -> None:
        """
        Unhook our taps from every leg of ``calls`` (the media path is back
        to one ``None`` check per frame).
        """
        ours = set(map(id, self._taps.values()))
        for call in calls:
            for leg in call.legs:
                if id(leg.tap_in) in ours:
                    leg.tap_in = None
                if id(leg.tap_out) in ours:
                    leg.tap_out = None

    def levels(self, calls: Iterable[CallService]) -> dict[str, dict[str, float]]:
        """
        ``{extension: {"says": dBFS, "hears": dBFS}}`` for the legs of
        ``calls``.
        """
        out: dict[str, dict[str, float]] = {}
        for call in calls:
            for leg in call.legs:
                ext = leg.extension
                out[ext] = {d: self.get(ext, d).level() for d in DIRECTIONS}
        return out
