"""
Which engines of one translation direction are down, and the fallback the
listener hears meanwhile.

The pipeline reports each failure and each success of a stage (``asr``:
the recogniser's ``EngineDown`` and ``EngineUp``; ``mt``, ``tts``: every
request); only the changes matter.  The first failure of a stage is one warning and
one :class:`~xlbridge.events.EngineStatusEvent` (``down``), however many
utterances fail after it; its next success is one ``up`` event.  While any
stage is down the listener is on the direction's fallback: with ``relay``
the partner's :class:`~xlbridge.audio.mix.OutputMix` plays the speaker's
original voice at full level, with ``silence`` nothing changes in the mix.

Kept apart from :mod:`xlbridge.pipeline.translate` so the pipeline's code
reads as the path of speech (ASR, MT, TTS, playback) and these rules are in
one place.  Lines are logged with the pipeline's own logger, so they keep
its namespace.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xlbridge.audio.mix import OutputMix
from xlbridge.call.leg import Leg
from xlbridge.engines.base import EngineError
from xlbridge.events import EngineStatusEvent, Event
from xlbridge.pipeline.settings import TranslateSettings

__all__ = ["EngineStatus"]


class EngineStatus:
    """
    The down engines of the direction carrying ``source``'s speech.

    :param mix: what the listener hears; its ``fallback`` is on while any
        stage is down and the fallback is ``relay``.
    :param log: the pipeline's logger.

    :ivar errors: the error that put each stage down, by stage.
    """

    def __init__(
        self, call_id: str, source: Leg, settings: TranslateSettings, mix: OutputMix, clock: IReactorTime,
        emit: Callable[[Event], None], log: Logger,
    ) -> None:
        self.call_id = call_id
        self.source = source
        self.settings = settings
        self.mix = mix
        self.clock = clock
        self.emit = emit
        self.log = log
        self.errors: dict[str, EngineError] = {}

    @property
    def in_fallback(self) -> bool:
        """Some stage is down."""
        return bool(self.errors)

    def down(self, stage: str, error: EngineError) -> None:
        """``stage`` failed with ``error``: down, if it was not already."""
        first = not self.errors
        known = stage in self.errors
        self.errors[stage] = error
        if known:
            return
        fallback = self.settings.fallback
        if first and fallback == "relay":
            self.mix.fallback = True
        self.log.warn(
            "{ext}: {stage} engine down ({error}); fallback {fallback}",
            ext=self.source.extension, stage=stage, error=str(error), fallback=fallback,
        )
        self.emit(
            EngineStatusEvent(
                self.call_id, self.source.extension, error.engine,
                "down", fallback, str(error), error.retryable, self.clock.seconds(),
            )
        )

    def up(self, stage: str) -> None:
        """``stage`` succeeded: up again, if it was down."""
        error = self.errors.pop(stage, None)
        if error is None:
            return
        if not self.errors:
            self.mix.fallback = False
        self.log.info("{ext}: {stage} engine back", ext=self.source.extension, stage=stage)
        self.emit(
            EngineStatusEvent(
                self.call_id, self.source.extension, error.engine, "up", "none", "", True, self.clock.seconds()
            )
        )
