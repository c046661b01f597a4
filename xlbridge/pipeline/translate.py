"""
The translation pipeline: one caller's speech, recognised, translated and
spoken into the partner's ear.

Design notes:

- Latency: in ``segment`` granularity every *final* ASR segment (Deepgram
  ``is_final``) is translated and spoken at once, with the earlier segments
  of the same utterance as MT context, so a long sentence starts playing
  before the speaker stops.  ``utterance`` granularity waits for the end of
  the utterance (``speech_final`` / ``UtteranceEnd``) and translates it whole.
- Order: an :class:`~xlbridge.audio.mix.Utterance` takes its place in the
  listener's :class:`~xlbridge.audio.mix.SpeechQueue` the moment its text is
  final, before MT and TTS run.  Whatever finishes first, the listener hears
  utterances in the order they were said, never overlapping.
- Backlog: the queue holds at most ``backlog_s`` of pending speech; beyond it
  the oldest utterance is dropped with an event.
- Listener: the call builds what the partner hears (its
  :class:`~xlbridge.call.playout.Playout`: an ``OutputMix`` and comfort
  noise) and hands it in as ``partner_hears``; this pipeline writes the
  partner's speech queue and live voice, and notes what the partner was
  played.  It only reads ``source_hears``, what its own caller is played by
  the other direction, for the echo guard.
- Echo guard: speech played to a caller can leak back into that caller's
  microphone (speakerphones) and must not be translated back.  ``text``
  drops a final transcript that matches what the caller was played in the
  last few seconds; ``gate`` feeds the recogniser silence while the caller
  is being played translated speech (and a short tail after); ``both``;
  ``off``.
- Speculation: an eager end of turn (Flux, Whisper's early decode) starts
  MT and TTS into a *held* utterance; the end of turn confirms or withdraws
  it (:mod:`xlbridge.pipeline.speculate`).
- Fallback: while an engine is down, the listener hears the speaker's
  original voice (``relay``) or nothing (``silence``); entering and leaving
  fallback are events (:mod:`xlbridge.pipeline.engine_status`).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.audio.mix import Utterance
from xlbridge.call.context import CallContext
from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout
from xlbridge.engines.base import (
    ASR,
    EagerEnd,
    EngineDown,
    EngineError,
    Engines,
    EngineUp,
    NamedASR,
    Transcript,
    TurnResumed,
    UtteranceEnd,
)
from xlbridge.events import (
    EngineUsage,
    Event,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)
from xlbridge.interfaces import IPipeline
from xlbridge.pipeline.echo import EchoGuard
from xlbridge.pipeline.engine_status import EngineStatus
from xlbridge.pipeline.gapfill import GapFiller
from xlbridge.pipeline.pending import Pending
from xlbridge.pipeline.settings import (
    ECHO_GUARDS,
    FALLBACKS,
    GRANULARITIES,
    DirectionSync,
    TranslateSettings,
    similarity,
)
from xlbridge.pipeline.playback import PlaybackReporter
from xlbridge.pipeline.speculate import Speculator
from xlbridge.pipeline.timeline import Timeline

#: A leg language that lets the recogniser identify what is spoken.
AUTO = "auto"

__all__ = [
    "ECHO_GUARDS",
    "FALLBACKS",
    "GRANULARITIES",
    "Timeline",
    "TranslatePipeline",
    "TranslateSettings",
    "similarity",
]


@implementer(IPipeline)
class TranslatePipeline:
    """
    Carries ``source``'s speech to ``partner``, translated.

    :param call: the call (for ``call_id``, ``clock`` and ``emit``).
    :param partner_hears: what ``partner`` hears: a speech playout (with an
        ``OutputMix``) that this pipeline writes.
    :param source_hears: what ``source`` is being played by the other
        direction; the echo guard reads it.
    :raises ValueError: if ``partner_hears`` has no ``OutputMix`` (a relay
        playout carries no translated speech).
    """

    log = Logger()

    def __init__(
        self, source: Leg, partner: Leg, call: CallContext, engines: Engines, settings: TranslateSettings,
        partner_hears: Playout, source_hears: Playout, sync: Optional[DirectionSync] = None,
    ) -> None:
        mix = partner_hears.mix
        if mix is None:
            raise ValueError(f"{partner.extension} hears no translated speech (a relay playout)")
        self.source = source
        self.partner = partner
        self.call_id = call.call_id
        self.clock = call.clock
        self.emit: Callable[[Event], None] = call.emit
        self.engines = engines
        self.settings = settings
        self.partner_hears = partner_hears
        self.mix = mix
        self.queue = mix.speech
        self.queue.on_drop = self._dropped_for_backlog
        self.timeline = Timeline()
        self.asr: Optional[ASR] = None
        self._uid = 0
        self._segments: list[str] = []  # finals of the current utterance
        # end of speech and ASR latency of the latest final (utterance mode)
        self._last_end: Optional[float] = None
        self._last_asr_ms: Optional[float] = None
        self._context: deque[str] = deque(maxlen=max(1, settings.context_segments))
        self.engine_status = EngineStatus(self.call_id, source, settings, mix, self.clock, self.emit, self.log)
        self.echo = EchoGuard(source_hears, settings)
        self._stopped = False
        self._inflight: set[Deferred[Any]] = set()
        self.echo_dropped = 0
        self.gated_frames = 0
        self.sync = sync
        #: silence for the recogniser while the caller's audio is missing
        self.gaps = GapFiller(self.clock, self._feed_asr, self.timeline.note)
        #: what this direction sent to its engines (read by the monitor)
        self.usage = EngineUsage(
            mt_engine=engines.names.get("mt") or engines.mt.name,
            tts_engine=engines.names.get("tts") or engines.tts.name,
        )
        #: reports what the partner hears of each utterance, and when
        self.playback = PlaybackReporter(self.call_id, source, partner, self.clock, self.emit, partner_hears, sync)
        #: translations started on an eager end of turn (:mod:`.speculate`)
        self.speculator = Speculator(
            self, self.clock, self.emit, self.call_id, partner.extension, source.extension,
            lambda: self.target_language, settings.early_play_ms,
        )

    # -- IPipeline ---------------------------------------------------------

    def start(self) -> None:
        self.asr = self.engines.asr(self.source.language, self._on_asr, self.call_id, self.source.extension)
        self.usage.asr_engine = (
            self.asr.engine_name if isinstance(self.asr, NamedASR) else self.engines.names.get("asr", "asr")
        )
        self.asr.start()

    def audio_in(self, samples: Samples) -> None:
        now = self.clock.seconds()
        self.timeline.note(len(samples), now)
        self.mix.write(samples)
        if self.asr is None:
            return
        self.gaps.audio(now, len(samples))
        self.usage.asr_samples += len(samples)
        if self.echo.gates and self.echo.gate_closed(now):
            self.gated_frames += 1
            self.asr.feed(samples * 0)
        else:
            self.asr.feed(samples)

    def _feed_asr(self, samples: Samples) -> None:
        if self.asr is not None and not self._stopped:
            self.usage.asr_samples += len(samples)
            self.asr.feed(samples)

    def stop(self) -> "Deferred[None] | None":
        self.speculator.drop("stopped")
        self._stopped = True
        self.gaps.stop()
        for d in list(self._inflight):
            d.cancel()
        if self.asr is not None:
            return self.asr.finish()
        return None

    # -- ASR -------------------------------------------------------------------

    def _on_asr(self, event: Any) -> None:
        try:
            self._handle_asr(event)
        except Exception:
            self.log.failure("ASR event handling failed for {ext}", ext=self.source.extension)

    def _handle_asr(self, event: Any) -> None:
        if self._stopped:
            return
        if isinstance(event, Transcript):
            self._transcript(event)
        elif isinstance(event, UtteranceEnd):
            self._end_of_utterance()
        elif isinstance(event, EagerEnd):
            self._eager(event)
        elif isinstance(event, TurnResumed):
            self.speculator.resumed()
        elif isinstance(event, EngineDown):
            self.engine_status.down("asr", event.error)
        elif isinstance(event, EngineUp):
            self.engine_status.up("asr")

    @property
    def source_language(self) -> str:
        """What the speaker speaks: the leg's language, or for ``auto`` the one last identified."""
        if self.source.language == AUTO:
            return self.source.spoken_language or AUTO
        return self.source.language

    @property
    def target_language(self) -> str:
        """
        What the listener hears: the leg's language, or for ``auto`` the one
        they were last heard speaking (until then the speaker's own).
        """
        if self.partner.language == AUTO:
            return self.partner.spoken_language or self.source_language
        return self.partner.language

    def _transcript(self, t: Transcript) -> None:
        if t.language and self.source.language == AUTO and t.is_final:
            self.source.spoken_language = t.language
        text = t.text.strip()
        spoken_until = t.speech_end if t.speech_end is not None else t.end
        speech_end = self.timeline.time_at(spoken_until) if t.is_final else None
        asr_ms = (t.received_at - speech_end) * 1000 if speech_end is not None else None
        if text or t.is_final:
            self.emit(
                TranscriptEvent(
                    self.call_id, self.source.extension, t.language or self.source_language, text,
                    t.is_final, t.received_at, t.speech_final, asr_ms,
                )
            )
        if not t.is_final:
            return
        if text:
            if self.echo.is_echo(text, t.received_at):
                self.speculator.drop("echo")
                self.echo_dropped += 1
                self.emit(UtteranceDropped(self.call_id, self.partner.extension, self.source_language, text, "echo", t.received_at))
            elif self.settings.granularity == "segment":
                if not self.speculator.confirm(text):
                    self._speak(text, speech_end, asr_ms, context=list(self._context) + self._segments)
                self._segments.append(text)
            else:
                self._segments.append(text)
                self._last_end, self._last_asr_ms = speech_end, asr_ms
        elif t.speech_final:
            self.speculator.drop("changed")  # the turn ended with no words
        if t.speech_final:
            self._end_of_utterance()

    def _eager(self, event: EagerEnd) -> None:
        t = event.transcript
        if t.language and self.source.language == AUTO:
            self.source.spoken_language = t.language  # the speculation translates from it
        speech_end = self.timeline.time_at(t.speech_end if t.speech_end is not None else t.end)
        asr_ms = (t.received_at - speech_end) * 1000 if speech_end is not None else None
        self.speculator.eager(event, speech_end, asr_ms)

    def speak_held(self, text: str, speech_end: Optional[float], asr_ms: Optional[float]) -> Optional[Pending]:
        """
        Start MT and TTS on an eager transcript into a held utterance (the
        speculator's :class:`~xlbridge.pipeline.speculate.SpeculationHost`);
        ``None`` for the listener's own speech coming back (echo).
        """
        if self.echo.is_echo(text, self.clock.seconds()):
            return None
        return self._speak(text, speech_end, asr_ms, list(self._context) + self._segments, held=True)

    def withdraw(self, p: Pending) -> None:
        """Cancel a speculation's MT and TTS and take it out of the queue unheard."""
        for d in list(p.work):
            d.cancel()
        self.queue.withdraw(p.utterance)
        p.utterance.finish()

    def _end_of_utterance(self) -> None:
        if not self._segments:
            return
        whole = " ".join(self._segments)
        if self.settings.granularity == "utterance" and not self.speculator.confirm(whole):
            self._speak(whole, self._last_end, self._last_asr_ms, context=list(self._context))
        self._context.append(whole)
        self._segments = []

    # -- MT and TTS ------------------------------------------------------------

    def _speak(
        self, text: str, speech_end: Optional[float], asr_ms: Optional[float], context: list[str], held: bool = False,
    ) -> Pending:
        self._uid += 1
        u = self.queue.add(Utterance(self._uid))
        u.held = held
        p = Pending(u, text, speech_end, asr_ms)
        u.on_start = lambda u, p=p: self.playback.started(p)  # type: ignore[misc]
        u.on_end = lambda u, p=p: self.playback.ended(p)  # type: ignore[misc]
        source, target = self.source_language, self.target_language
        p.source_language, p.target_language = source, target
        if source.split("-")[0] == target.split("-")[0]:
            self._translated(text, p)
            return p
        started = self.clock.seconds()
        self.usage.mt_chars += len(text)
        d = self._track(self.engines.mt.translate(text, source, target, context), p)

        def translated(result: str) -> None:
            p.mt_ms = (self.clock.seconds() - started) * 1000
            self.engine_status.up("mt")
            self._translated(result, p)

        d.addCallbacks(translated, lambda f: self._stage_failed("mt", f, p))
        d.addErrback(self._bug)
        return p

    def _translated(self, translation: str, p: Pending) -> None:
        if self._stopped or p.utterance.dropped:
            p.utterance.finish()
            return
        now = self.clock.seconds()
        p.utterance.text = translation
        self.emit(
            TranslationEvent(
                self.call_id, self.source.extension, p.target_language, translation,
                p.source_text, p.source_language, p.utterance.uid, p.mt_ms or 0.0, now,
            )
        )
        if not translation.strip():
            p.utterance.finish()
            return
        p.tts_started = now

        def on_audio(samples: Samples) -> None:
            if p.first_audio is None:
                p.first_audio = self.clock.seconds()
                self._schedule(p)
            p.utterance.add(samples)
            self.queue.enforce_bound()

        self.usage.tts_chars += len(translation)
        d = self._track(self.engines.tts.synthesize(translation, p.target_language, on_audio), p)

        def spoken(_: Any) -> None:
            p.utterance.finish()
            self.engine_status.up("tts")

        d.addCallbacks(spoken, lambda f: self._stage_failed("tts", f, p))
        d.addErrback(self._bug)

    def _schedule(self, p: Pending) -> None:
        # Direction sync: hold this utterance until the slower direction's
        # typical lag has passed since the speech ended.
        if self.sync is None or p.speech_end is None:
            return
        target = self.sync.target_ms(self.source.extension)
        if target is not None:
            p.utterance.not_before = p.speech_end + target / 1000
            p.sync_target = target

    def _track(self, d: "Deferred[Any]", p: Optional[Pending] = None) -> "Deferred[Any]":
        self._inflight.add(d)
        if p is not None:
            p.work.add(d)

        def done(r: Any) -> Any:
            self._inflight.discard(d)
            if p is not None:
                p.work.discard(d)
            return r

        return d.addBoth(done)

    def _stage_failed(self, stage: str, f: Failure, p: Pending) -> None:
        p.utterance.finish()
        if self._stopped:
            return
        if f.check(CancelledError):
            return
        err = f.value if isinstance(f.value, EngineError) else EngineError(stage, str(f.value))
        if not isinstance(f.value, EngineError):
            self.log.failure("{stage} failed unexpectedly", f, stage=stage)
        self.emit(
            UtteranceDropped(self.call_id, self.partner.extension, self.partner.language, p.source_text, "failed", self.clock.seconds())
        )
        self.engine_status.down(stage, err)

    def _bug(self, f: Failure) -> None:
        self.log.failure("translation pipeline bug", f)

    # -- fallback ----------------------------------------------------------------

    @property
    def in_fallback(self) -> bool:
        return self.engine_status.in_fallback

    def _dropped_for_backlog(self, u: Utterance) -> None:
        self.emit(UtteranceDropped(self.call_id, self.partner.extension, self.partner.language, u.text, "backlog", self.clock.seconds()))

    def status(self) -> dict[str, Any]:
        return {
            "engines": {**self.engines.names, **({"asr": self.asr.engine_name} if isinstance(self.asr, NamedASR) else {})},
            "fallback": self.mix.fallback,
            "down": {k: str(v) for k, v in self.engine_status.errors.items()},
            "pending_ms": self.queue.pending_samples() * 1000 / SAMPLE_RATE,
            "utterances": self._uid,
            "dropped_backlog": self.queue.dropped,
            "dropped_echo": self.echo_dropped,
            "speculations": self.speculator.status(),
        }
