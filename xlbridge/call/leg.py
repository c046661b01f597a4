"""
A leg: one caller's side of a call, as the media core sees it.

A leg ties together the caller's transport (which moves frames), what the
caller hears (its :class:`~xlbridge.call.playout.Playout`, which the call
decides) and its counters.  It does not know how audio is encoded on the
wire or where it comes from.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from xlbridge.audio.frame import Samples
from xlbridge.call.playout import Playout
from xlbridge.events import LegCounters
from xlbridge.interfaces import ILegTransport


class Leg:
    """
    One caller's side of a call.

    :param extension: the caller's extension, e.g. ``"7777"``.
    :param language: what the caller speaks and hears, e.g. ``"en"``.
    :param transport: provides :class:`ILegTransport`.
    :param buffer_ms: bound of the outbound buffer when the caller hears
        the partner's voice relayed, in milliseconds.

    :ivar playout: what the caller hears; a relay of ``buffer_ms`` until
        the call that owns this leg sets its own when it starts.
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
        self.buffer_ms = buffer_ms
        self.playout = Playout.relay(buffer_ms)
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

    @property
    def line_open(self) -> bool:
        """
        The caller is on the line even without sending audio (an AudioSocket
        connection is the call), so the call must not end for inactivity.
        """
        return bool(self.transport.line_open)

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
        playout = self.playout
        read = playout.output.read_frame
        filler = playout.filler
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
        The call ended: empty what was still to play and reset the
        transport.
        """
        self.playout.clear()
        self.transport.reset()

    def status(self) -> dict[str, Any]:
        """
        A JSON-ready snapshot for the monitor and logs.
        """
        output = self.playout.output
        return {
            "extension": self.extension,
            "language": self.language,
            "transport": self.transport.describe(),
            "buffer_ms": output.depth_ms,
            "buffer_dropped_samples": output.dropped_samples,
            "counters": self.counters.snapshot(),
        }
