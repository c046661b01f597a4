"""
Deepgram Flux (``/v2/listen``) turn decisions: :class:`TurnTracker` follows
Flux's turn state machine for one connection and answers each ``TurnInfo``
with *speculate*, *cancel* and *commit* decisions.

Why a tracker: an eager end of turn lets translation and synthesis start
about 100 ms before the turn really ends.  Flux guarantees that
``EndOfTurn``'s transcript equals the preceding ``EagerEndOfTurn``'s when
nothing changed, and that a change is announced by ``TurnResumed`` first
(PROTOCOLS.md 11.3); :class:`TurnTracker` turns those rules into decisions,
and counts speculations used and wasted (each wasted one cost a translation
and a synthesis).

Why a module of its own: the decisions are policy on top of the wire, not
part of it.  The parsed messages it reads come from
:mod:`xlbridge.engines.deepgram.flux_wire` (which does not import this
module); :mod:`xlbridge.engines.deepgram.flux_session` maps the decisions
to ASR events.  Sans-I/O like the wire: no socket, no clock.
"""

from __future__ import annotations

from typing import Optional, Union

import attrs

from xlbridge.engines.deepgram.flux_wire import TurnEvent, TurnInfo

__all__ = [
    "Cancel",
    "Commit",
    "Decision",
    "Speculate",
    "TurnTracker",
]

@attrs.frozen
class Speculate:
    """Start translating and synthesising ``transcript`` now; hold playback."""

    turn_index: int
    transcript: str


@attrs.frozen
class Cancel:
    """The speculation on this turn is void: stop it, never play it."""

    turn_index: int
    transcript: str
    reason: str


@attrs.frozen
class Commit:
    """
    The turn ended with ``transcript``.  ``speculated``: the speculation
    started on the eager event has exactly this text and may be played;
    otherwise translate it now.
    """

    turn_index: int
    transcript: str
    speculated: bool


Decision = Union[Speculate, Cancel, Commit]


class TurnTracker:
    """
    Follows Flux's turn state machine (``Initial -> TurnOngoing ->
    AwaitingEnd -> Initial``, PROTOCOLS.md 11.3) for one connection and
    answers each ``TurnInfo`` with decisions.

    Robust to a server that breaks the documented rules: the rule broken is
    counted in :attr:`violations` and the safe decision is taken (an
    ``EndOfTurn`` whose text differs from the eager one cancels the
    speculation and commits the new text).

    :ivar started: speculations started.
    :ivar used: speculations committed as made.
    :ivar wasted: speculations cancelled (resumed turns, changed text).
    :ivar sequence_gaps: server messages missing by ``sequence_id``.
    """

    def __init__(self) -> None:
        self._pending: Optional[Speculate] = None
        self._last_seq: Optional[int] = None
        self.started = 0
        self.used = 0
        self.wasted = 0
        self.violations: dict[str, int] = {}
        self.sequence_gaps = 0

    @property
    def speculating(self) -> Optional[Speculate]:
        """The speculation in flight, if any."""
        return self._pending

    def sequence(self, seq: int) -> None:
        """Note a server message's ``sequence_id`` (any type); gaps are counted."""
        if self._last_seq is not None and seq > self._last_seq + 1:
            self.sequence_gaps += seq - self._last_seq - 1
        self._last_seq = seq

    def _violation(self, rule: str) -> None:
        self.violations[rule] = self.violations.get(rule, 0) + 1

    def _cancel(self, reason: str) -> list[Decision]:
        p = self._pending
        if p is None:
            return []
        self._pending = None
        self.wasted += 1
        return [Cancel(p.turn_index, p.transcript, reason)]

    def feed(self, info: TurnInfo) -> list[Decision]:
        """What to do on ``info``, in order."""
        self.sequence(info.sequence_id)
        ev = info.event
        if ev is TurnEvent.EAGER:
            out: list[Decision] = []
            if not info.transcript.strip():
                self._violation("empty_eager")
                return out
            if self._pending is not None:
                if self._pending.transcript == info.transcript and self._pending.turn_index == info.turn_index:
                    return out  # a repeat: the speculation stands
                self._violation("eager_without_resume")
                out += self._cancel("changed")
            self._pending = Speculate(info.turn_index, info.transcript)
            self.started += 1
            out.append(self._pending)
            return out
        if ev is TurnEvent.RESUMED:
            if self._pending is None:
                self._violation("resume_without_eager")
                return []
            return self._cancel("resumed")
        if ev is TurnEvent.END:
            p = self._pending
            if p is not None and p.transcript == info.transcript and p.turn_index == info.turn_index:
                self._pending = None
                self.used += 1
                return [Commit(info.turn_index, info.transcript, True)]
            out = []
            if p is not None:
                self._violation("end_differs_from_eager")
                out += self._cancel("changed")
            if info.transcript.strip():
                out.append(Commit(info.turn_index, info.transcript, False))
            return out
        if ev is TurnEvent.START and self._pending is not None:
            # A new turn began while a speculation was open: the old turn
            # ended without EndOfTurn (dropped message or reconnect).
            self._violation("start_with_open_speculation")
            return self._cancel("abandoned")
        return []

    def reset(self) -> list[Decision]:
        """The connection ended: an open speculation is void."""
        self._last_seq = None
        return self._cancel("connection_closed")
