"""
A leg: one caller's side of a call, as the media core sees it.

A leg ties together the caller's transport (which moves frames), what the
caller hears (its :class:`~xlbridge.call.playout.Playout`, which the call
decides) and its counters.  It does not know how audio is encoded on the
wire or where it comes from.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.logger import Logger

from xlbridge.audio.frame import Samples
from xlbridge.call.playout import Playout
from xlbridge.events import LegCounters
from xlbridge.interfaces import ILegTransport, IPeerPacedTransport


class Leg:
    """
    One caller's side of a call.

    :param extension: the caller's extension, e.g. ``"7777"``.
    :param language: what the caller speaks and hears, e.g. ``"en"``.
    :param transport: provides :class:`ILegTransport`.
    :param buffer_ms: bound of the outbound buffer when the caller hears
        the partner's voice relayed, in milliseconds.

    :ivar playout: what the caller hears; a relay of ``buffer_ms`` until
        the call that owns this leg sets its own when it starts.  On a
        transport whose peer keeps time (sent ahead), setting it wires the
        playout to the transport: when the caller really hears something
        (marks), and cutting what was sent ahead of a dropped utterance
        (flush).
    """

    log = Logger()

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
        #: marks to place in the batch being filled: (position, callback)
        self._marks: Optional[list[tuple[int, Callable[[float], None]]]] = None
        self._batch: list[Optional[Samples]] = []
        self.playout = Playout.relay(buffer_ms)
        #: Listen-in taps, set by the monitor while someone watches:
        #: ``tap_in`` gets what the caller says, ``tap_out`` every frame the
        #: caller hears (``None`` = digital silence).  Cheap, never raise.
        self.tap_in: Optional[Callable[[Samples], None]] = None
        self.tap_out: Optional[Callable[[Optional[Samples]], None]] = None

    @property
    def playout(self) -> Playout:
        return self._playout

    @playout.setter
    def playout(self, playout: Playout) -> None:
        self._playout = playout
        transport = self.transport
        if IPeerPacedTransport.providedBy(transport):
            playout.after_queued = self._after_queued
            playout.on_audio(self._arrived)
            if playout.mix is not None:
                playout.mix.speech.on_cut = transport.flush

    def _arrived(self) -> None:
        # Audio for this caller just arrived: the peer keeps time, so send
        # it now rather than at the next tick (no filler: that is the
        # tick's).  Never raises into the pipeline that wrote it.
        transport = self.transport
        if self._marks is not None or not transport.ready:
            return  # inside a fill already, or nobody to send to
        try:
            self._fill(transport, with_filler=False)  # type: ignore[arg-type]
        except Exception:
            self.log.failure("{ext}: sending arrived audio failed", ext=self.extension)

    def _after_queued(self, now: float, callback: Callable[[float], None], current: bool) -> None:
        # Called while _fill reads (an utterance starts or ends): a mark
        # goes where the batch stands, after the frame being read if
        # ``current``.  Outside a fill there is nothing queued to wait for.
        marks = self._marks
        if marks is None:
            callback(now)
            return
        marks.append((len(self._batch) + (1 if current else 0), callback))

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
        intervals that will never be sent.  A transport whose peer keeps
        time (:class:`~xlbridge.interfaces.IPeerPacedTransport`) is filled
        up to its lookahead instead (:meth:`_fill`).
        """
        transport = self.transport
        if not transport.ready:
            # Nobody to send to yet (not connected, peer not latched): what
            # the partner says meanwhile must not pile up and be heard
            # late for the rest of the call.
            self.playout.output.idle()
            return
        counters = self.counters
        if packets > 1 or skipped:
            counters.late_ticks += packets - 1 + skipped
            counters.skipped_ticks += skipped
        if IPeerPacedTransport.providedBy(transport):
            # The peer keeps time: keep it filled instead of pacing.
            self._fill(transport)
            return
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

    def _fill(self, transport: IPeerPacedTransport, with_filler: bool = True) -> None:
        """
        Top up a transport whose peer plays out on its own clock.  While
        translated speech waits in this caller's queue (made ahead of
        time), as much as the transport's lookahead allows goes in one
        batch; live audio (a relayed voice) only as deep as the shallow
        lookahead, since audio queued ahead of live audio is heard that
        much later.  Filler only when the output ran dry, shallow too, so
        it never stands long ahead of speech.
        """
        playout = self.playout
        read = playout.output.read_frame
        tap = self.tap_out
        ahead = playout.speech_waiting
        wanted = transport.frames_wanted(ahead)
        frames: list[Optional[Samples]] = []
        self._batch, self._marks = frames, []
        dry = False
        try:
            while len(frames) < wanted:
                frame = read()
                if frame is None:
                    dry = True
                    break
                frames.append(frame)
            marks = self._marks
        finally:
            self._batch, self._marks = [], None
        sent = 0
        for at, callback in marks:
            # A mark between two frames splits the batch there.
            if at > sent:
                transport.send_frames(frames[sent:at], True, ahead)
                sent = at
            transport.mark(then=callback)
        if len(frames) > sent:
            transport.send_frames(frames[sent:], True, ahead)
        fill: list[Optional[Samples]] = []
        if dry and with_filler:
            n = transport.filler_wanted()
            if n > 0:
                filler = playout.filler
                fill = [filler() if filler is not None else None for _ in range(n)]
                transport.send_frames(fill, False)
        if tap is not None:
            for frame in frames:
                tap(frame)
            for frame in fill:
                tap(frame)

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
            "buffer_trimmed_samples": output.trimmed_samples,
            "counters": self.counters.snapshot(),
        }
