"""
Deepgram Flux (``/v2/listen``), the sans-I/O session: server messages in,
:mod:`xlbridge.engines.base` ASR events out, in stream time.  The Flux
counterpart of :class:`~xlbridge.engines.deepgram.wire.DeepgramSession`,
with the same attributes the ASR's replay machinery reads (``offset``,
``final_end``, ``request_id``, ``last_error``, ``malformed``, ``unknown``).

Mapping (wire facts: PROTOCOLS.md 11.2, 11.3):

=====================  =====================================================
Flux ``TurnInfo``      event
=====================  =====================================================
``StartOfTurn``        :class:`~xlbridge.engines.base.SpeechStarted`
``Update``             interim :class:`~xlbridge.engines.base.Transcript`
                       (empty ones dropped, as Nova's)
``EagerEndOfTurn``     :class:`~xlbridge.engines.base.EagerEnd` (eager mode
                       only: ``eager_eot_threshold`` set, 11.3 rule 6)
``TurnResumed``        :class:`~xlbridge.engines.base.TurnResumed`
``EndOfTurn``          final ``Transcript(is_final=True, speech_final=True)``
=====================  =====================================================

The eager/resumed/end decisions go through
:class:`~xlbridge.engines.deepgram.flux_turns.TurnTracker`, which holds Flux
to its rules (an ``EndOfTurn`` whose text differs from the eager one first
withdraws the speculation: ``TurnResumed``, then the final) and counts
speculations started, used and wasted.  One tracker lives as long as the
session, so the counts cover every connection of the leg; a connection that
ends with a speculation open withdraws it (:meth:`FluxSession.connection_lost`).

Time: Flux times (``audio_window_*``, word times) count seconds of audio
received on *this* connection; ``offset`` (the stream second of the
connection's first sample) is added to every one, as Nova's session does.
``speech_end`` is the last word's end when words carry times, else the
message's ``audio_window_end``.  ``final_end``, from which audio is
replayed after a reconnect, is the ``audio_window_end`` of the last
``EndOfTurn``: the next turn's window starts there.

Language: on ``flux-general-multi`` every ``TurnInfo`` lists the languages
heard, most frequent first; the first becomes the transcript's
``language``.  The pipeline translates from it on an ``auto`` leg (no
``language_hint`` is sent then) and labels captions with it.
"""

from __future__ import annotations

from typing import Optional, Union

from twisted.logger import Logger

from xlbridge.engines.base import ASREvent, EagerEnd, SpeechStarted, Transcript, TurnResumed
from xlbridge.engines.languages import primary
from xlbridge.engines.deepgram.flux_turns import Cancel, Commit, Speculate, TurnTracker
from xlbridge.engines.deepgram.flux_wire import (
    ConfigureResult,
    Connected,
    FluxError,
    Malformed,
    TurnEvent,
    TurnInfo,
    Unknown,
    parse_flux,
)

__all__ = ["FluxSession"]


class FluxSession:
    """
    Turns Flux server messages into ASR events in stream time; never raises.

    :ivar offset: stream seconds at which the current connection's time 0 is.
    :ivar final_end: stream seconds up to which turns have ended.
    :ivar request_id: of the current connection (``dg-request-id`` or
        ``Connected``), if known.
    :ivar last_error: ``code: description`` of the last ``Error`` message.
    :ivar tracker: the turn tracker (speculations ``started``, ``used``,
        ``wasted``; ``violations`` of Flux's rules; ``sequence_gaps``).
    :ivar in_turn: a turn is open on this connection (``StartOfTurn`` seen,
        no ``EndOfTurn`` yet).
    :ivar last_trigger: ``trigger`` of the last ``EndOfTurn`` (``model``,
        ``manual``, ``timeout``), if the server gave one.
    :ivar turns: ``EndOfTurn`` messages received.
    """

    log = Logger()

    def __init__(self) -> None:
        self.offset = 0.0
        self.final_end = 0.0
        self.request_id: Optional[str] = None
        self.last_error: Optional[str] = None
        self.malformed = 0
        self.unknown = 0
        self.turns = 0
        self.in_turn = False
        self.last_trigger: Optional[str] = None
        self.tracker = TurnTracker()

    def connection_opened(self, offset: float, request_id: Optional[str] = None) -> None:
        """
        A new connection is open; its first audio sample sits at stream
        second ``offset``.  (Any speculation of the last connection was
        withdrawn by :meth:`connection_lost`.)
        """
        self.offset = offset
        self.request_id = request_id
        self.last_error = None
        self.in_turn = False
        self.last_trigger = None

    def connection_lost(self, now: float) -> list[ASREvent]:
        """
        The connection ended (dropped, or closed at the end): a speculation
        still open is void, since its turn will be heard again on the next
        connection, or never.  Returns the :class:`TurnResumed` to emit, if any.
        """
        self.in_turn = False
        return [TurnResumed(now) for d in self.tracker.reset() if isinstance(d, Cancel)]

    def receive(self, text: Union[str, bytes], now: float) -> list[ASREvent]:
        """
        Parse one server text frame.

        :param now: reactor time, stored as ``received_at``.
        :return: zero or more events, stream-timed.
        """
        msg = parse_flux(text)
        if isinstance(msg, TurnInfo):
            return self._turn(msg, now)
        if isinstance(msg, Malformed):
            self.malformed += 1
            self.log.debug("deepgram flux: malformed message: {why}", why=msg.reason)
            return []
        if msg.sequence_id is not None:
            self.tracker.sequence(msg.sequence_id)
        if isinstance(msg, Connected):
            self.request_id = msg.request_id or self.request_id
        elif isinstance(msg, FluxError):
            text_ = f"{msg.code}: {msg.description}" if msg.description else msg.code
            if msg.fatal:
                self.last_error = text_
                self.log.warn("deepgram flux: server error message: {error}", error=text_)
            else:
                self.log.info("deepgram flux: server says: {text}", text=text_)
        elif isinstance(msg, ConfigureResult):
            self.log.info("deepgram flux: Configure {result}", result="accepted" if msg.ok else "refused")
        elif isinstance(msg, Unknown):
            self.unknown += 1
            self.log.debug("deepgram flux: skipping message of unknown type {kind!r}", kind=msg.type)
        return []

    # -- TurnInfo ------------------------------------------------------------

    def _transcript(self, info: TurnInfo, text: str, final: bool, now: float) -> Transcript:
        ends = [w.end for w in info.words if w.end is not None]
        speech_end = self.offset + (ends[-1] if ends else info.end)
        confidence = sum(w.confidence for w in info.words) / len(info.words) if info.words else 0.0
        return Transcript(text=text.strip(), is_final=final, speech_final=final, start=self.offset + info.start,
                          end=self.offset + info.end, received_at=now, confidence=confidence,
                          speech_end=speech_end, language=primary(info.languages[0]) if info.languages else None)

    def _turn(self, info: TurnInfo, now: float) -> list[ASREvent]:
        # The tracker first: a StartOfTurn with a speculation still open
        # withdraws it (TurnResumed) before the new turn's SpeechStarted.
        out: list[ASREvent] = []
        for d in self.tracker.feed(info):
            if isinstance(d, Speculate):
                out.append(EagerEnd(self._transcript(info, d.transcript, False, now)))
            elif isinstance(d, Cancel):
                out.append(TurnResumed(now))
            elif isinstance(d, Commit):
                out.append(self._transcript(info, d.transcript, True, now))
        ev = info.event
        if ev is TurnEvent.START:
            self.in_turn = True
            starts = [w.start for w in info.words if w.start is not None]
            out.append(SpeechStarted(timestamp=self.offset + (starts[0] if starts else info.start), received_at=now))
        elif ev is TurnEvent.UPDATE:
            self.in_turn = True
            if info.transcript.strip():
                out.append(self._transcript(info, info.transcript, False, now))
        elif ev is TurnEvent.END:
            self.in_turn = False
            self.turns += 1
            self.last_trigger = info.trigger
            self.final_end = max(self.final_end, self.offset + info.end)
        return out
