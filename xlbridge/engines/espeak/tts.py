"""
Offline text-to-speech with espeak-ng, in process, shared by every call.

Design notes
------------

Why espeak-ng: it needs no network, no key and no apt package.  The PyPI
wheel ``espeakng-loader`` bundles ``libespeak-ng.so`` (linked to libc,
libm and libstdc++ only) and a full ``espeak-ng-data`` with the English and
Spanish dictionaries; it has no synthesis API of its own, so
:class:`~xlbridge.engines.espeak.lib.ESpeakLibrary` is a small ctypes
binding with every ``argtypes`` and ``restype`` declared.

Threading: libespeak-ng keeps global state (one voice, one synth callback,
one set of parameters) and is not thread-safe, and ``espeak_Synth`` blocks
until the text is spoken.  So :class:`ESpeakTTS` runs all synthesis on one
dedicated worker thread (a one-thread
:class:`~xlbridge.engines.threads.ThreadPoolService` it owns), never on the
reactor thread, and every call into the library additionally holds the
process-wide :data:`~xlbridge.engines.espeak.lib.ESpeakLibrary.lock`, so
that two engines in the same process cannot interleave either.  Voice,
rate and pitch are applied again before every sentence (0.1 ms): loading a
voice resets the pitch, and another engine may have changed them.

The library is loaded and initialised once per process, lazily, on the
worker thread, by :func:`~xlbridge.engines.espeak.lib.shared_library`; a
failure is remembered and every request then errbacks at once with the
same clear :class:`~xlbridge.engines.base.EngineUnavailable`.

Latency: the text is cut into sentences
(:func:`~xlbridge.engines.espeak.text.split_sentences`) and each one is
synthesised, resampled and handed to ``on_audio`` on the reactor thread
before the next one starts, so the first audio comes after one short
sentence (espeak needs 1-5 ms per sentence), not after the whole text.
Requests take turns sentence by sentence (each request has at most one job
in the worker's queue), so a long text does not hold up another call's first
sentence.  A short pause (espeak's own sentence pause, 300 ms after ``.``,
150 ms after ``,``) ends every sentence but the last.

Audio: espeak produces signed 16-bit mono in native byte order at the rate
``espeak_Initialize`` reports (22050 Hz); each sentence is resampled in one
go (soxr HQ, :func:`xlbridge.audio.resample.resample`) to the internal
16 kHz int16 native format (:mod:`xlbridge.audio.frame`).

Bounds and failures: at most ``max_queue`` requests are in progress; one
more errbacks at once with :class:`EngineUnavailable` and is counted in
:attr:`ESpeakCounters.refused`.  An unknown voice name is an
:class:`EngineRequestError`.  A language with no voice of its own is spoken
with ``default_voice`` (warned once per language), or refused with
:class:`EngineRequestError` if ``default_voice`` is ``None``.
"""


from __future__ import annotations

import collections
from typing import Callable, Optional

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.audio.frame import SAMPLE_RATE, Samples
from xlbridge.audio.resample import resample
from xlbridge.engines.base import EngineError, EngineRequestError, EngineUnavailable, IPoolReactor
from xlbridge.engines.espeak.lib import ENGINE, shared_library
from xlbridge.engines.espeak.settings import ESpeakSettings
from xlbridge.engines.espeak.text import split_sentences
from xlbridge.engines.threads import PoolFull, ThreadPoolService


# -- the engine ----------------------------------------------------------------


@attrs.define
class ESpeakCounters:
    """
    Counters for the status page; all cumulative since start.

    :ivar requests: :meth:`ESpeakTTS.synthesize` calls accepted.
    :ivar sentences: sentences synthesised.
    :ivar completed: requests spoken to the end.
    :ivar cancelled: requests cancelled by the caller.
    :ivar refused: requests refused because ``max_queue`` were in progress.
    :ivar errors: requests that failed (unknown voice or language, library
        failure).
    :ivar first_audio_ms: time from :meth:`ESpeakTTS.synthesize` to the first
        ``on_audio`` call of the latest request, in milliseconds.
    :ivar first_audio_history: the last 32 such values, oldest first.
    """

    requests: int = 0
    sentences: int = 0
    completed: int = 0
    cancelled: int = 0
    refused: int = 0
    errors: int = 0
    first_audio_ms: Optional[float] = None
    first_audio_history: "collections.deque[float]" = attrs.field(
        factory=lambda: collections.deque(maxlen=32)
    )

    def first_audio(self, ms: float) -> None:
        self.first_audio_ms = ms
        self.first_audio_history.append(ms)


class _Request:
    """
    One :meth:`ESpeakTTS.synthesize` call in progress.

    ``cancelled`` is written on the reactor thread and read by the worker
    (a plain attribute: reading a bool is atomic under the GIL).
    """

    def __init__(
        self,
        sentences: list[str],
        voice: str,
        on_audio: Callable[[Samples], None],
        started: float,
        canceller: Callable[["_Request"], None],
    ) -> None:
        self.sentences = sentences
        self.voice = voice
        self.on_audio = on_audio
        self.started = started
        self.index = 0
        self.delivered = 0
        self.cancelled = False
        self.deferred: Deferred[None] = Deferred(lambda d: canceller(self))


class ESpeakTTS:
    """
    The :class:`~xlbridge.engines.base.TTS` protocol over espeak-ng.

    :param reactor: provides ``IReactorTime`` and ``IReactorFromThreads``
        (:class:`~xlbridge.engines.base.IPoolReactor`); results are
        delivered on its thread.
    :param settings: see :class:`~xlbridge.engines.espeak.settings.ESpeakSettings`.

    :ivar counters: :class:`ESpeakCounters`.
    """

    name = "espeak"
    log = Logger()

    def __init__(self, reactor: IPoolReactor, settings: ESpeakSettings = ESpeakSettings()) -> None:
        self.reactor = reactor
        self.settings = settings
        self.counters = ESpeakCounters()
        # One worker thread: the library must never run on two at once.
        # Each live request has at most one job queued; room is left for the
        # job of a cancelled request that has not come back yet.
        self._pool = ThreadPoolService(
            reactor, name="xlbridge-espeak", max_threads=1, max_queued=2 * settings.max_queue
        )
        self._live: set[_Request] = set()
        self._warned: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"<ESpeakTTS {self.settings!r}>"

    def synthesize(
        self, text: str, language: str, on_audio: Callable[[Samples], None]
    ) -> "Deferred[None]":
        """
        Speak ``text`` in ``language`` (ISO 639-1, ``"es"``), sentence by
        sentence.

        :param on_audio: called on the reactor thread once per sentence, in
            order, with that sentence's 16 kHz mono int16 native-order
            audio, as soon as it is synthesised.
        :return: fires after the last ``on_audio`` call; errbacks with an
            :class:`~xlbridge.engines.base.EngineError` (at once with
            :class:`EngineUnavailable` when ``max_queue`` requests are in
            progress); cancelling it stops before the next sentence and no
            further ``on_audio`` call happens.
        """
        if self._closed:
            return fail(EngineUnavailable(ENGINE, "engine closed"))
        try:
            voice = self._voice(language)
        except EngineRequestError as e:
            self.counters.errors += 1
            return fail(e)
        if len(self._live) >= self.settings.max_queue:
            self.counters.refused += 1
            return fail(EngineUnavailable(
                ENGINE, f"queue full: {len(self._live)} requests in progress"
            ))
        self.counters.requests += 1
        sentences = split_sentences(text)
        if not sentences:
            self.counters.completed += 1
            return succeed(None)
        request = _Request(sentences, voice, on_audio, self.reactor.seconds(), self._cancel)
        self._live.add(request)
        self._next(request)
        return request.deferred

    def close(self) -> "Deferred[None]":
        """
        Cancel every request in progress and stop the worker thread.

        The join happens here, on the caller's thread; it is short because
        cancelled jobs return without synthesising.  The library itself
        stays loaded for the life of the process.
        """
        self._closed = True
        for request in list(self._live):
            request.deferred.cancel()
        self._pool.stopService()
        return succeed(None)

    # -- internals -------------------------------------------------------------

    def _voice(self, language: str) -> str:
        voice = self.settings.voice_for(language)
        if voice is not None:
            return voice
        default = self.settings.default_voice
        if default is None:
            raise EngineRequestError(
                ENGINE, f"no voice for language {language!r} and no default voice"
            )
        if language not in self._warned:
            self._warned.add(language)
            self.log.warn(
                "espeak: no voice for language {language!r}; speaking it with {voice!r}",
                language=language, voice=default,
            )
        return default

    def _next(self, request: _Request) -> None:
        if request.index == len(request.sentences):
            self._live.discard(request)
            self.counters.completed += 1
            request.deferred.callback(None)
            return
        last = request.index == len(request.sentences) - 1
        d = self._pool.run(self._work, request, request.sentences[request.index], not last)
        d.addCallbacks(self._got, self._failed, callbackArgs=(request,), errbackArgs=(request,))

    def _work(self, request: _Request, sentence: str, end_pause: bool) -> Optional[Samples]:
        # Worker thread.
        if request.cancelled:
            return None
        s = self.settings
        lib = shared_library(s.library_path, s.data_path)
        with lib.lock:
            lib.set_voice(request.voice)
            lib.set_prosody(s.rate_wpm, s.pitch)
            raw = lib.synth(sentence, end_pause, lambda: request.cancelled)
        if request.cancelled:
            return None
        return resample(raw, lib.sample_rate, SAMPLE_RATE)

    def _got(self, audio: Optional[Samples], request: _Request) -> None:
        if request.cancelled:
            return
        request.index += 1
        self.counters.sentences += 1
        if audio is not None and len(audio):
            if not request.delivered:
                self.counters.first_audio((self.reactor.seconds() - request.started) * 1000.0)
            request.delivered += 1
            try:
                request.on_audio(audio)
            except BaseException:
                # The consumer's own bug: hand it back on its Deferred.
                self._live.discard(request)
                request.cancelled = True
                request.deferred.errback(Failure())
                return
            if request.cancelled:  # on_audio cancelled the request
                return
        self._next(request)

    def _failed(self, failure: Failure, request: _Request) -> None:
        if request.cancelled:
            return
        self._live.discard(request)
        request.cancelled = True
        self.counters.errors += 1
        if failure.check(EngineError):
            request.deferred.errback(failure)
        elif failure.check(PoolFull):
            request.deferred.errback(EngineUnavailable(ENGINE, "worker queue full"))
        else:
            self.log.failure("espeak: synthesis failed", failure)
            request.deferred.errback(
                EngineUnavailable(ENGINE, f"synthesis failed: {failure.getErrorMessage()}")
            )

    def _cancel(self, request: _Request) -> None:
        request.cancelled = True
        if request in self._live:
            self._live.discard(request)
            self.counters.cancelled += 1
