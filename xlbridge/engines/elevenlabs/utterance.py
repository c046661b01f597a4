"""
One ElevenLabs synthesis from request to last byte: attempts, the progress
watchdog, the bounded retry, odd-byte carrying and counting.

:class:`~xlbridge.engines.elevenlabs.tts.ElevenLabsTTS` is shared by every
call and owns the transport and the connection slots; each
:meth:`~xlbridge.engines.elevenlabs.tts.ElevenLabsTTS.synthesize` call is a
small state machine of its own, kept here so the shared client stays
short.  It is given what it uses of the client (clock, settings, counters,
logger and the slot-aware ``open``) rather than the client itself, so this
module does not import :mod:`~xlbridge.engines.elevenlabs.tts`.

Timing (RELIABILITY.md section 2): the first audio byte must arrive within
``first_byte_timeout_s`` seconds of the attempt's start (waiting for a
connection slot counts), each later byte within ``timeout_s`` seconds of
the one before; otherwise the attempt is cancelled and fails as
:class:`~xlbridge.engines.base.EngineUnavailable`.  Such a failure is
retried (``retries`` times, ``retry_delay_s`` seconds apart) only while no
audio has reached ``on_audio``, so the caller never hears a sentence twice.

Audio: the transport hands on raw S16LE (little-endian) bytes with
arbitrary boundaries; :class:`~xlbridge.engines.elevenlabs.pcm.PCMChunker`
carries an odd byte to the next chunk and ``on_audio`` gets native-order
int16 samples at 16 kHz mono.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.audio.frame import Samples
from xlbridge.engines.base import EngineError, EngineUnavailable
from xlbridge.engines.elevenlabs.counters import ElevenLabsCounters, error_kind
from xlbridge.engines.elevenlabs.settings import ElevenLabsSettings
from xlbridge.engines.elevenlabs.pcm import PCMChunker
from xlbridge.engines.elevenlabs.wire import ENGINE, scrub

__all__ = ["OpenAttempt", "Utterance"]

#: Starts one attempt once a connection slot is free:
#: ``(voice_id, text, language, on_bytes)`` -> a Deferred that fires at the
#: stream's clean end, errbacks on failure, and aborts it when cancelled.
OpenAttempt = Callable[[str, str, str, Callable[[bytes], None]], "Deferred[None]"]


class Utterance:
    """
    One :meth:`~xlbridge.engines.elevenlabs.tts.ElevenLabsTTS.synthesize`
    call: attempts, the progress watchdog, the bounded retry, odd-byte
    carrying and counting.

    :param clock: the reactor's time (seconds).
    :param settings: timeouts, retries and voices.
    :param counters: the client's counters, updated as the utterance goes.
    :param log: the client's logger.
    :param open_attempt: starts one attempt (see :data:`OpenAttempt`).
    :param on_audio: called with each chunk of 16 kHz mono native-order
        int16 audio.
    """

    def __init__(
        self,
        clock: IReactorTime,
        settings: ElevenLabsSettings,
        counters: ElevenLabsCounters,
        log: Logger,
        open_attempt: OpenAttempt,
        text: str,
        language: str,
        on_audio: Callable[[Samples], None],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.counters = counters
        self.log = log
        self.open_attempt = open_attempt
        self.text = text
        self.language = language
        self.voice_id = self.settings.voice_for(language)
        self.on_audio = on_audio
        self.chunker = PCMChunker()
        self.started = self.clock.seconds()
        self.attempts = 0
        self.delivered = False
        self.got_bytes = False
        self.attempt_bytes = False
        self.finished = False
        self.timed_out = False
        self.attempt: "Optional[Deferred[None]]" = None
        self.watchdog: Optional[IDelayedCall] = None
        self.retry_call: Optional[IDelayedCall] = None
        self.d: Deferred[None] = Deferred(self._cancel)

    def start(self) -> "Deferred[None]":
        """
        Start the first attempt.

        :return: fires once the clip has been delivered; errbacks with an
            :class:`~xlbridge.engines.base.EngineError`; cancelling it stops
            the stream.
        """
        self._attempt()
        return self.d

    def _attempt(self) -> None:
        self.retry_call = None
        self.attempts += 1
        counters = self.counters
        counters.requests += 1
        if self.attempts > 1:
            counters.retries += 1
        self.chunker.reset()
        self.timed_out = False
        self.attempt_bytes = False
        # The first-byte deadline runs from here, so a wait for a free
        # connection slot counts against it; each byte then re-arms the
        # watchdog with timeout_s.
        self._arm(self.settings.first_byte_timeout_s)
        attempt = self.open_attempt(self.voice_id, self.text, self.language, self._bytes)
        self.attempt = attempt
        attempt.addCallbacks(self._done, self._failed, errbackArgs=(attempt,))

    def _arm(self, seconds: float) -> None:
        if self.watchdog is not None and self.watchdog.active():
            self.watchdog.reset(seconds)
        else:
            self.watchdog = self.clock.callLater(seconds, self._stalled)

    def _disarm(self) -> None:
        if self.watchdog is not None and self.watchdog.active():
            self.watchdog.cancel()
        self.watchdog = None

    def _stalled(self) -> None:
        self.watchdog = None
        self.timed_out = True
        if self.attempt is not None:
            self.attempt.cancel()

    def _bytes(self, data: bytes) -> None:
        if self.finished or not data:
            return
        counters = self.counters
        if not self.got_bytes:
            self.got_bytes = True
            counters.first_byte((self.clock.seconds() - self.started) * 1000.0)
        self.attempt_bytes = True
        counters.bytes_received += len(data)
        self._arm(self.settings.timeout_s)
        samples = self.chunker.feed(data)
        if samples is None:
            return
        self.delivered = True
        try:
            self.on_audio(samples)
        except Exception:
            self.log.failure("on_audio raised; audio chunk lost")

    def _done(self, _: object) -> None:
        self._disarm()
        if self.finished:
            return
        self.finished = True
        if self.chunker.pending:
            self.log.warn("ElevenLabs stream ended on half a sample; byte dropped")
        self.counters.completed += 1
        self.d.callback(None)

    def _failed(self, failure: Failure, attempt: "Deferred[None]") -> None:
        self._disarm()
        if self.finished or attempt is not self.attempt:
            return
        if self.timed_out:
            if self.attempt_bytes:
                message = f"no audio for {self.settings.timeout_s:g} s"
            else:
                message = f"no first audio byte within {self.settings.first_byte_timeout_s:g} s"
            error: EngineError = EngineUnavailable(ENGINE, message)
        elif isinstance(failure.value, EngineError):
            error = failure.value
        elif failure.check(CancelledError):
            error = EngineUnavailable(ENGINE, "stream cancelled")
        else:
            error = EngineUnavailable(
                ENGINE, scrub(f"{type(failure.value).__name__}: {failure.value}", self.settings.api_key)
            )
        if (
            isinstance(error, EngineUnavailable)
            and not self.delivered
            and self.attempts <= self.settings.retries
        ):
            self.log.info(
                "ElevenLabs attempt {attempt} failed ({error}); retrying",
                attempt=self.attempts,
                error=error.message,
            )
            self.retry_call = self.clock.callLater(self.settings.retry_delay_s, self._attempt)
            return
        self.finished = True
        self.counters.error(error_kind(error))
        self.d.errback(Failure(error))

    def _cancel(self, d: "Deferred[None]") -> None:
        if self.finished:
            return
        self.finished = True
        self.counters.cancelled += 1
        self._disarm()
        if self.retry_call is not None and self.retry_call.active():
            self.retry_call.cancel()
        if self.attempt is not None:
            self.attempt.cancel()
