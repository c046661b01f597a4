"""
Controllable engine doubles that ship with xlbridge, for its own tests and
for embedders: an ASR whose results the test injects, and an MT and a TTS
whose answers the test fires by hand.

Why a module of its own: these stand in for the speech engines
(:mod:`xlbridge.engines.base`), not for the network; the in-memory reactors
and :func:`~xlbridge.testing.pump_ticks` are in :mod:`xlbridge.testing`.
Nothing here has a clock: results arrive exactly when the test calls
``emit`` or fires a request's ``Deferred``, so the order of events in a
pipeline test is the order the test writes them.

Audio is :data:`~xlbridge.audio.frame.Samples` (16 kHz mono int16, native
byte order), as everywhere inside the bridge.
"""

from __future__ import annotations

from typing import Callable, Sequence

from twisted.internet.defer import Deferred, succeed

from xlbridge.audio.frame import Samples
from xlbridge.engines.base import ASREvent

__all__ = ["ManualMT", "ManualTTS", "ScriptedASR", "ScriptedASRFactory"]


class ScriptedASR:
    """
    An ASR whose results the test injects (``emit``); records what it is fed.

    :ivar fed: number of samples fed; ``chunks`` the chunks themselves.
    """

    def __init__(self, language: str, on_event: Callable[[ASREvent], None], call_id: str, extension: str) -> None:
        self.language = language
        self.on_event = on_event
        self.call_id = call_id
        self.extension = extension
        self.chunks: list[Samples] = []
        self.fed = 0
        self.started = False
        self.finished = False

    def start(self) -> None:
        self.started = True

    def feed(self, samples: Samples) -> None:
        self.chunks.append(samples)
        self.fed += len(samples)

    def finish(self) -> Deferred[None]:
        self.finished = True
        return succeed(None)

    def emit(self, event: ASREvent) -> None:
        self.on_event(event)


class ScriptedASRFactory:
    """
    Builds :class:`ScriptedASR` and keeps them by extension.
    """

    def __init__(self) -> None:
        self.made: dict[str, ScriptedASR] = {}

    def __call__(
        self, language: str, on_event: Callable[[ASREvent], None], call_id: str, extension: str
    ) -> ScriptedASR:
        asr = ScriptedASR(language, on_event, call_id, extension)
        self.made[extension] = asr
        return asr


class ManualMT:
    """
    An MT whose answers the test fires: ``requests`` holds
    ``(text, source, target, context, deferred)``.
    """

    name = "manual-mt"

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str, list[str], Deferred[str]]] = []

    def translate(self, text: str, source: str, target: str, context: Sequence[str] = ()) -> Deferred[str]:
        d: Deferred[str] = Deferred()
        self.requests.append((text, source, target, list(context), d))
        return d


class ManualTTS:
    """
    A TTS whose audio the test pushes: ``requests`` holds
    ``(text, language, on_audio, deferred)``.
    """

    name = "manual-tts"

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Callable[[Samples], None], Deferred[None]]] = []

    def synthesize(self, text: str, language: str, on_audio: Callable[[Samples], None]) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.requests.append((text, language, on_audio, d))
        return d
