"""
Speculative translation: start MT and TTS on an eager end of turn, play
only what the end of the turn confirms.

Without it the partner hears the first translated packet after the whole
chain has run in series: end of speech -> the recogniser's end of turn ->
MT -> TTS first byte.  An engine with an *eager* end of turn (Deepgram
Flux ``EagerEndOfTurn``: :class:`~xlbridge.engines.base.EagerEnd`) says
"the speaker may be done, and this is what they said" about 100 ms before
it is sure.  The pipeline starts MT and TTS on that transcript at once and
keeps the result *held* in its place in the listener's queue
(:attr:`~xlbridge.audio.mix.Utterance.held`):

- the turn ends with the same words (a final transcript: Flux guarantees
  ``EndOfTurn`` repeats the eager transcript when nothing changed): the
  hold is released; the listener hears it up to the engines' head start
  earlier (**used**);
- the speaker goes on (:class:`~xlbridge.engines.base.TurnResumed`), the
  turn ends with other words, or a newer eager end comes: the speculation
  is withdrawn: its MT and TTS requests are cancelled, its audio leaves the
  queue unheard, and nothing else in the queue moves (**wasted**; it cost a
  translation and a synthesis).

``early_play_ms`` lets a speculation start playing that long after its
eager event if the speaker has not resumed meanwhile, before the turn is
known to have ended (lower latency; a withdrawal then cuts it off).  Every
outcome is a :class:`~xlbridge.events.SpeculationEvent` (and
``xlbridge_speculations_total{outcome}``), so the waste rate is visible:
wasted speculations cost engine money.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from xlbridge.engines.base import EagerEnd
from xlbridge.events import Event, SpeculationEvent
from xlbridge.pipeline.pending import Pending
from xlbridge.pipeline.settings import similarity

__all__ = ["MAX_OPEN_S", "Speculator", "SpeculationHost", "same_words"]

#: Seconds a speculation may stay open: a recogniser that never confirms
#: nor withdraws it (a lost message) must not hold the listener's queue.
MAX_OPEN_S = 5.0


def same_words(a: str, b: str) -> bool:
    """The two transcripts say the same words (case and punctuation aside)."""
    return similarity(a, b) == 1.0 or a.strip() == b.strip()


class SpeculationHost(Protocol):
    """What the speculator needs of the pipeline."""

    def speak_held(self, text: str, speech_end: Optional[float], asr_ms: Optional[float]) -> Optional[Pending]:
        """Start MT and TTS on ``text`` into a held utterance; ``None`` if it is not spoken (echo)."""

    def withdraw(self, p: Pending) -> None:
        """Cancel ``p``'s requests and take its utterance out of the queue unheard."""


class Speculator:
    """
    The open speculation of one direction, and its counts.

    :ivar started: speculations started; ``used``, ``wasted``: their ends.
    """

    def __init__(
        self, host: SpeculationHost, clock: IReactorTime, emit: Callable[[Event], None], call_id: str,
        listener: str, speaker: str, language: Callable[[], str], early_play_ms: Optional[float] = None,
    ) -> None:
        self.host = host
        self.clock = clock
        self.emit = emit
        self.call_id = call_id
        self.listener, self.speaker = listener, speaker
        self.language = language
        self.early_play_ms = early_play_ms
        self.current: Optional[Pending] = None
        self._early: Optional[IDelayedCall] = None
        self._expiry: Optional[IDelayedCall] = None
        self.started = self.used = self.wasted = 0

    def eager(self, event: EagerEnd, speech_end: Optional[float], asr_ms: Optional[float]) -> None:
        """An eager end of turn: speculate on its transcript (replacing an open one)."""
        text = event.transcript.text.strip()
        if self.current is not None:
            if same_words(text, self.current.source_text):
                return  # the same words again: keep working on them
            self._waste("replaced")
        if not text:
            return
        p = self.host.speak_held(text, speech_end, asr_ms)
        if p is None:
            return
        self.current = p
        self.started += 1
        self._event(p, "started", "")
        if self.early_play_ms is not None:
            self._early = self.clock.callLater(self.early_play_ms / 1000, self._play_early)
        self._expiry = self.clock.callLater(MAX_OPEN_S, self._waste, "timeout")

    def resumed(self) -> None:
        """The speaker went on: withdraw the open speculation."""
        if self.current is not None:
            self._waste("resumed")

    def confirm(self, text: str) -> bool:
        """
        The turn ended with ``text``: release the open speculation if it
        says the same (``True``: it is spoken, say nothing more), else
        withdraw it (``False``: speak ``text`` as usual).
        """
        p = self.current
        if p is None:
            return False
        if not same_words(text, p.source_text):
            self._waste("changed")
            return False
        self._cancel_early()
        self.current = None
        early = p.utterance.started_at is not None
        p.utterance.held = False
        self.used += 1
        self._event(p, "used", "", early)
        return True

    def drop(self, reason: str) -> None:
        """Withdraw the open speculation (``reason``: echo, stopped...)."""
        if self.current is not None:
            self._waste(reason)

    def _play_early(self) -> None:
        if self.current is not None:
            self.current.utterance.held = False

    def _cancel_early(self) -> None:
        for call in (self._early, self._expiry):
            if call is not None and call.active():
                call.cancel()
        self._early = self._expiry = None

    def _waste(self, reason: str) -> None:
        p, self.current = self.current, None
        self._cancel_early()
        if p is None:
            return
        self.host.withdraw(p)
        self.wasted += 1
        self._event(p, "wasted", reason)

    def _event(self, p: Pending, outcome: str, reason: str, early: bool = False) -> None:
        self.emit(SpeculationEvent(
            self.call_id, self.listener, self.speaker, self.language(), p.source_text, outcome, reason,
            self.clock.seconds(), early,
        ))

    def status(self) -> dict[str, Any]:
        """For the monitor."""
        return {"started": self.started, "used": self.used, "wasted": self.wasted, "open": self.current is not None}
