"""
A leg: one caller's side of a call, as the media core sees it.

A leg ties together the caller's transport (which moves frames), its
outbound buffer (what the caller will hear next) and its counters.  It does
not know how audio is encoded on the wire or where it comes from.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional, Protocol

from xlbridge.audio.buffer import OutboundBuffer
from xlbridge.audio.frame import Samples
from xlbridge.events import DropReason, LegCounters
from xlbridge.interfaces import ILegTransport


class OutputSource(Protocol):
    """
    Where a leg's outbound audio comes from: a plain bounded buffer in
    relay mode, an :class:`~xlbridge.audio.mix.OutputMix` when translating.
    """

    @property
    def dropped_samples(self) -> int: ...

    @property
    def depth_ms(self) -> float: ...

    def write(self, samples: Samples) -> int: ...

    def read_frame(self) -> Optional[Samples]: ...

    def clear(self) -> None: ...


class Leg:
    """
    One caller's side of a call.

    :param extension: the caller's extension, e.g. ``"7777"``.
    :param language: what the caller speaks and hears, e.g. ``"en"``.
    :param transport: provides :class:`ILegTransport`.
    :param buffer_ms: bound of the outbound buffer, in milliseconds.
    """

    def __init__(
        self, extension: str, language: str, transport: ILegTransport, buffer_ms: int = 200
    ) -> None:
        self.extension = extension
        self.language = language
        #: What the caller was last heard speaking, when the recogniser
        #: identifies it (a leg whose ``language`` is ``auto``).
        self.spoken_language: Optional[str] = None
        self.transport = transport
        self.output: OutputSource = OutboundBuffer(buffer_ms)
        #: Called for a frame when the output has nothing (comfort noise);
        #: ``None`` sends digital silence.
        self.filler: Optional[Callable[[], Samples]] = None
        #: ``(time, text)`` of translated speech this caller was played
        #: recently; the echo guard compares the caller's transcripts to it.
        self.heard: deque[tuple[float, str]] = deque(maxlen=32)
        #: Listen-in taps, set by the monitor while someone watches:
        #: ``tap_in`` gets what the caller says, ``tap_out`` every frame the
        #: caller hears (``None`` = digital silence).  Cheap, never raise.
        self.tap_in: Optional[Callable[[Samples], None]] = None
        self.tap_out: Optional[Callable[[Optional[Samples]], None]] = None

    @property
    def counters(self) -> LegCounters:
        """
        The transport's counters (cumulative for that transport).
        """
        counters: LegCounters = self.transport.counters
        return counters

    def play(self, samples: Any) -> None:
        """
        Queue internal audio for this caller to hear; overflow drops the
        oldest audio and is counted as :attr:`DropReason.BUFFER_FULL` (in
        samples).
        """
        dropped = self.output.write(samples)
        if dropped:
            self.counters.drop(DropReason.BUFFER_FULL, dropped)

    def egress(self, packets: int, skipped: int) -> None:
        """
        Called by the egress clock once per tick: send ``packets`` frames
        (1 normally, more when catching up) and account for ``skipped``
        intervals that will never be sent.
        """
        transport = self.transport
        if not transport.ready:
            return
        counters = self.counters
        if packets > 1 or skipped:
            counters.late_ticks += packets - 1 + skipped
            counters.skipped_ticks += skipped
        read = self.output.read_frame
        filler = self.filler
        tap = self.tap_out
        for _ in range(packets):
            frame = read()
            if frame is None and filler is not None:
                frame = filler()
                transport.send_frame(frame, False)
            else:
                transport.send_frame(frame)
            if tap is not None:
                tap(frame)
        if skipped:
            transport.skip(skipped)

    def reset(self) -> None:
        """
        The call ended: empty the buffer and reset the transport.
        """
        self.output.clear()
        self.heard.clear()
        self.transport.reset()

    def status(self) -> dict[str, Any]:
        """
        A JSON-ready snapshot for the monitor and logs.
        """
        return {
            "extension": self.extension,
            "language": self.language,
            "transport": self.transport.describe(),
            "buffer_ms": self.output.depth_ms,
            "buffer_dropped_samples": self.output.dropped_samples,
            "counters": self.counters.snapshot(),
        }
