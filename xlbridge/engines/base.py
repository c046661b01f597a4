"""
What every speech engine shares: typed results, typed failures, and the
factory signatures the translation pipeline builds engines with.

Engines are per leg (ASR: one stream per caller) or shared (MT and TTS
clients reuse connections across calls).  All audio crossing these seams is
internal audio (16 kHz mono int16, native byte order); engines convert to
their wire format themselves (Deepgram linear16 and ElevenLabs pcm_16000 are
little-endian).

Failures are exceptions from one hierarchy so the pipeline can decide: an
:class:`EngineAuthError` or :class:`EngineQuotaError` will not heal by
retrying (clear error event, fallback); an :class:`EngineUnavailable` may
(reconnect with backoff, fallback meanwhile).

The local engines take the reactor they need as one interface or a
combination (:class:`IProcessReactor`, :class:`IPoolReactor`), as treq's
``_types.py`` does: for type hints only, never checked at run time.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, Sequence, Union, runtime_checkable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorProcess, IReactorTime
from twisted.logger import Logger

from xlbridge.audio.frame import Samples
from xlbridge.errors import XLBridgeError


# -- the reactor the engines take --------------------------------------------


class IProcessReactor(IReactorProcess, IReactorTime):
    """
    A reactor that spawns engine processes (Apertium pipelines, ASR
    workers) and times their deadlines and restarts.
    """


class IPoolReactor(IReactorFromThreads, IReactorTime):
    """
    A reactor that takes results back from engine pool threads
    (:class:`~xlbridge.engines.threads.ThreadPoolService`) and keeps time.
    """


# -- failures ------------------------------------------------------------------


class EngineError(XLBridgeError):
    """
    A speech engine failed.

    :ivar engine: ``"deepgram"``, ``"deepl"``, ``"elevenlabs"``, ``"local-asr"``...
    :ivar retryable: whether trying again later may succeed.
    """

    retryable = True

    def __init__(self, engine: str, message: str) -> None:
        super().__init__(f"{engine}: {message}")
        self.engine = engine
        self.message = message


class EngineUnavailable(EngineError):
    """
    Network trouble, 429 or 5xx, a dropped socket: retry with backoff.
    """


class EngineAuthError(EngineError):
    """
    The key was refused (401/403): retrying will not help.
    """

    retryable = False


class EngineQuotaError(EngineError):
    """
    The account's quota is used up (DeepL 456, ElevenLabs quota_exceeded).
    """

    retryable = False


class EngineRequestError(EngineError):
    """
    The engine rejected the request as malformed (400/422): a bug or a bad
    setting such as an unknown voice or model; retrying will not help.
    """

    retryable = False


# -- ASR results -------------------------------------------------------------


@attrs.frozen
class Transcript:
    """
    A recognised span of speech.

    :ivar text: the words (may be empty for a final with no speech).
    :ivar is_final: the span is fixed (Deepgram ``is_final``); else interim.
    :ivar speech_final: an endpoint follows this span (end of utterance).
    :ivar start: span start, seconds since the stream began.
    :ivar end: span end, seconds since the stream began (``start + duration``;
        for Deepgram this includes trailing silence the span covered).
    :ivar received_at: reactor time when the result arrived.
    :ivar speech_end: when the last word ended, seconds since the stream
        began (Deepgram ``words[-1].end``), or ``None`` if unknown; this, not
        ``end``, is the end of speech latency is measured from.
    :ivar language: the language the engine heard, when it identifies it
        (Whisper with a leg language of ``auto``); ``None`` = the leg's.
    """

    text: str
    is_final: bool
    speech_final: bool
    start: float
    end: float
    received_at: float
    confidence: float = 0.0
    speech_end: Optional[float] = None
    language: Optional[str] = None


@attrs.frozen
class UtteranceEnd:
    """
    The engine saw a gap after the last word (Deepgram ``UtteranceEnd``).

    :ivar last_word_end: seconds since the stream began.
    """

    last_word_end: float
    received_at: float


@attrs.frozen
class SpeechStarted:
    """
    Voice activity began (Deepgram ``SpeechStarted``).
    """

    timestamp: float
    received_at: float


@attrs.frozen
class EagerEnd:
    """
    The speaker may have ended a turn (Deepgram Flux ``EagerEndOfTurn``, or
    a local early decode at a short pause): ``transcript`` is what they
    said if they did (``is_final`` false; ``speech_end`` set when known).

    The pipeline may start translating and synthesising it at once, but
    nothing of it may be heard until a final :class:`Transcript` with the
    same text ends the turn, and a :class:`TurnResumed` withdraws it.  At
    most one is open at a time: a new one replaces the last.
    """

    transcript: Transcript


@attrs.frozen
class TurnResumed:
    """
    The speaker went on after an :class:`EagerEnd` (Flux ``TurnResumed``):
    the speculation on it is withdrawn; the turn's final comes later.
    """

    received_at: float


@attrs.frozen
class EngineDown:
    """
    The engine stopped working; ``error`` says why and whether it may heal.
    """

    error: EngineError
    received_at: float


@attrs.frozen
class EngineUp:
    """
    The engine works (again) after an :class:`EngineDown`.
    """

    engine: str
    received_at: float


ASREvent = Union[Transcript, UtteranceEnd, SpeechStarted, EagerEnd, TurnResumed, EngineDown, EngineUp]


class ASR(Protocol):
    """
    One streaming recogniser for one caller.

    Built by an :data:`ASRFactory`; results go to the ``on_event`` callable
    it was given, on the reactor thread.
    """

    def start(self) -> None:
        """
        Connect; audio fed before the connection is up is buffered (bounded).
        """

    def feed(self, samples: Samples) -> None:
        """
        Push caller audio (16 kHz int16 native), in order, as it arrives.
        """

    def finish(self) -> "Deferred[None]":
        """
        No more audio: flush (Finalize/CloseStream), deliver the last finals,
        close.  Fires when done; never errbacks.
        """


@runtime_checkable
class NamedASR(Protocol):
    """
    A recogniser whose engine differs per leg (the local recognisers: one
    leg on Whisper, another on pocketsphinx), so status pages name it per
    direction instead of the configured stage name.
    """

    @property
    def engine_name(self) -> str:
        """``whisper``, ``pocketsphinx``, ``vosk``, ``none``..."""


#: ``factory(language, on_event, call_id, extension) -> ASR``
ASRFactory = Callable[[str, Callable[[ASREvent], None], str, str], ASR]


class MT(Protocol):
    """
    Machine translation, shared by all calls.
    """

    name: str

    def translate(
        self, text: str, source: str, target: str, context: Sequence[str] = ()
    ) -> "Deferred[str]":
        """
        Translate ``text`` from ``source`` to ``target`` (short codes such as
        ``en``, ``es``; the engine maps them).  ``context`` holds earlier
        sentences of the same speaker, oldest first.  Errbacks with an
        :class:`EngineError`.
        """


class TTS(Protocol):
    """
    Streaming speech synthesis, shared by all calls.
    """

    name: str

    def synthesize(
        self, text: str, language: str, on_audio: Callable[[Samples], None]
    ) -> "Deferred[None]":
        """
        Speak ``text`` in ``language``: call ``on_audio`` with each chunk of
        16 kHz int16 native audio *as soon as it arrives* (never after the
        whole clip), then fire.  Cancelling the Deferred stops the stream.
        Errbacks with an :class:`EngineError`.
        """


@attrs.frozen
class Engines:
    """
    The engines a translating bridge uses.

    :ivar asr: builds one recogniser per leg.
    :ivar mt: shared translator.
    :ivar tts: shared synthesiser.
    :ivar names: engine name per stage, for status pages.
    """

    asr: ASRFactory
    mt: MT
    tts: TTS
    names: dict[str, str] = attrs.field(factory=dict)


def redact(secret: Optional[str]) -> str:
    """
    How a secret is shown anywhere (repr, logs, status): never the value.
    """
    if not secret:
        return "<unset>"
    return f"<redacted {len(secret)} chars>"


def deliver(on_event: Callable[[ASREvent], None], event: ASREvent, log: Logger, engine: str, call_id: str,
            extension: str) -> None:
    """
    Hand an ASR client's event to the pipeline; a failure there is logged
    (as ``engine``, with the call and extension) and never reaches the
    client's own state machine or the reactor.
    """
    try:
        on_event(event)
    except Exception:
        log.failure("{engine}: on_event raised call={call_id} ext={ext}",
                    engine=engine, call_id=call_id, ext=extension)
