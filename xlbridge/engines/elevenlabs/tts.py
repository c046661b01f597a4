"""
ElevenLabs streaming text-to-speech, shared by every call.

Design notes
------------

The caller hears translated speech sooner the sooner the first audio chunk
arrives, so :meth:`ElevenLabsTTS.synthesize` hands each chunk to ``on_audio``
the moment it comes off the socket, never after the whole clip.

Two wire transports exist and both are implemented; they deliver the same
bytes:

``"http"`` (:mod:`xlbridge.engines.elevenlabs.http`)
    ``POST {base}/v1/text-to-speech/{voice_id}/stream?output_format=pcm_16000``
    with a JSON body, answered by a chunked body of raw audio.  Requests go
    through one persistent ``HTTPConnectionPool``, so after the first request
    the TCP+TLS handshake is not paid again.

``"websocket"`` (:mod:`xlbridge.engines.elevenlabs.ws`)
    ``{ws base}/v1/text-to-speech/{voice_id}/stream-input``: init message
    ``{"text": " "}``, then the text with ``"flush": true``, then
    ``{"text": ""}`` (end of stream); the server answers with base64 audio
    messages and ``{"isFinal": true}``.  A single-context socket carries
    exactly one utterance, so a spare socket per (voice, language) is opened
    ahead of time and kept alive with ``" "`` (PROTOCOLS.md T5).

``bench/tts_ttfa.py`` measures time-to-first-audio of both against the fake
server; the default transport
(:data:`~xlbridge.engines.elevenlabs.settings.DEFAULT_TRANSPORT`) follows
that measurement.

Audio format: ``output_format`` is always ``pcm_16000``: raw signed 16-bit
**little-endian** mono at 16000 Hz, no header (PROTOCOLS.md T1, section 4.1).
Chunk boundaries are arbitrary, so a chunk of odd length leaves one byte
that is carried to the next chunk
(:class:`~xlbridge.engines.elevenlabs.pcm.PCMChunker`); the audio handed on
is native-order int16 (:mod:`xlbridge.audio.frame`).

Failures (:mod:`xlbridge.engines.base`): 401 ``invalid_api_key`` ->
:class:`EngineAuthError`; ``quota_exceeded`` (sent with status 401) ->
:class:`EngineQuotaError`; 400/404/422 and ``voice_not_found`` ->
:class:`EngineRequestError`; 429 ``too_many_concurrent_requests`` /
``system_busy``, 5xx, timeouts and dropped sockets ->
:class:`EngineUnavailable`.  An :class:`EngineUnavailable` is retried
(``retries`` times, after ``retry_delay_s``) only while no audio has reached
``on_audio``, so the caller never hears a sentence twice.  The API key never
appears in a repr, a log line or an exception message.

Deadlines and bounds (RELIABILITY.md section 2, "ElevenLabs blackhole"): an
attempt whose first audio byte has not arrived ``first_byte_timeout_s``
(3 s) after it started, or that then goes ``timeout_s`` (10 s) without a
byte, is abandoned as :class:`EngineUnavailable` (so the caller's fallback
starts) and its connection is aborted, never pooled again.  At most
``max_connections`` attempts are in flight at once (a
``DeferredSemaphore``): HTTP requests, or speaking WebSockets (spares, at
most :data:`~xlbridge.engines.elevenlabs.ws.MAX_SPARES`, come on top); the
others wait for a free slot, and the wait counts against their first-byte
deadline.

Settings are in :mod:`xlbridge.engines.elevenlabs.settings`; what goes on
the wire (URLs, bodies, messages, error mapping, PCM decoding) is in
:mod:`xlbridge.engines.elevenlabs.wire`, which both transports share.  This
module holds the shared client (transport, connection slots, closing); each
:meth:`ElevenLabsTTS.synthesize` call is run by an
:class:`~xlbridge.engines.elevenlabs.utterance.Utterance` (watchdog, retry,
counting), and the status-page counters are in
:mod:`xlbridge.engines.elevenlabs.counters`.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredSemaphore, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool

from xlbridge.audio.frame import Samples
from xlbridge.engines.base import EngineAuthError, EngineUnavailable
from xlbridge.engines.elevenlabs.counters import ElevenLabsCounters
from xlbridge.engines.elevenlabs.http import HTTPStreamTransport
from xlbridge.engines.elevenlabs.settings import ENV_API_KEY, ElevenLabsSettings
from xlbridge.engines.elevenlabs.utterance import Utterance
from xlbridge.engines.elevenlabs.wire import ENGINE, IElevenLabsReactor
from xlbridge.engines.elevenlabs.ws import WebSocketStreamTransport

__all__ = [
    "ElevenLabsSettings",  # defined in settings; engine selection imports it from here
    "ElevenLabsTTS",
    "StreamTransport",
]

_T = TypeVar("_T")


class StreamTransport(Protocol):
    """
    One wire transport: start streams, close everything.
    """

    def open(
        self, voice_id: str, text: str, language: str, on_bytes: Callable[[bytes], None]
    ) -> "Deferred[None]":
        """
        Start one stream; call ``on_bytes`` with raw S16LE audio as it
        arrives; fire at its clean end; errback with an :class:`EngineError`.
        Cancelling the Deferred aborts the stream at once.
        """

    def gone(self, stream: "Deferred[None]") -> "Deferred[None]":
        """
        Once ``stream`` (from :meth:`open`) has fired: a Deferred that fires
        when the connection that carried it no longer counts against
        ``max_connections`` (closed, or idle in a pool).
        """

    def close(self) -> "Deferred[None]":
        """Abort streams, close sockets and pooled connections."""


class ElevenLabsTTS:
    """
    The :class:`~xlbridge.engines.base.TTS` for ElevenLabs.

    :param reactor: see :class:`~xlbridge.engines.elevenlabs.wire.IElevenLabsReactor`
        (https and wss need pyOpenSSL and service-identity, as Twisted's TLS
        does).
    :param settings: see :class:`ElevenLabsSettings`.
    :param pool: an ``HTTPConnectionPool`` to share (HTTP transport); by
        default one is made and closed by :meth:`close`.

    :ivar counters: :class:`~xlbridge.engines.elevenlabs.counters.ElevenLabsCounters`.
    """

    name = ENGINE
    log = Logger()

    def __init__(
        self,
        reactor: IElevenLabsReactor,
        settings: ElevenLabsSettings,
        pool: Optional[HTTPConnectionPool] = None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.counters = ElevenLabsCounters()
        self._transport: StreamTransport
        if settings.transport == "websocket":
            self._transport = WebSocketStreamTransport(reactor, settings)
        else:
            self._transport = HTTPStreamTransport(reactor, settings, pool)
        self._active: "set[Deferred[None]]" = set()
        self._closed = False
        #: Attempts in flight at once (see the module docstring).
        self._slots = DeferredSemaphore(settings.max_connections)

    def __repr__(self) -> str:
        return f"<ElevenLabsTTS {self.settings!r}>"

    def synthesize(
        self, text: str, language: str, on_audio: Callable[[Samples], None]
    ) -> "Deferred[None]":
        """
        Speak ``text`` in ``language`` (ISO 639-1, ``"es"``).

        :param on_audio: called on the reactor thread with each chunk of
            16 kHz mono int16 native-order audio, as soon as it arrives.
        :return: fires once the clip has been delivered; errbacks with an
            :class:`~xlbridge.engines.base.EngineError`; cancelling it stops
            the stream and no further ``on_audio`` call happens.
        """
        if self._closed:
            return _failed(EngineUnavailable(ENGINE, "client closed"))
        if not text.strip():
            return succeed(None)
        if not self.settings.api_key:
            self.counters.error("auth")
            return _failed(EngineAuthError(ENGINE, f"no API key (set {ENV_API_KEY})"))
        job = Utterance(
            self.reactor, self.settings, self.counters, self.log, self._open, text, language, on_audio
        )
        d = job.start()
        self._active.add(d)
        d.addBoth(_discard, self._active, d)
        return d

    def close(self) -> "Deferred[None]":
        """
        Cancel utterances in progress, close every socket and the pool (if
        this object made it).  Fires when the connections are gone.
        """
        self._closed = True
        for d in list(self._active):
            d.cancel()
        d = self._transport.close()
        return d

    # -- connection slots (each Utterance's attempts go through _open) --------

    @property
    def in_flight(self) -> int:
        """Attempts holding a connection slot now (at most ``max_connections``)."""
        return self.settings.max_connections - self._slots.tokens

    @property
    def waiting(self) -> int:
        """Attempts waiting for a connection slot now."""
        return len(self._slots.waiting)

    def _release_when_gone(self, result: _T, stream: "Deferred[None]") -> _T:
        """
        Give the slot back once the stream's connection is gone (a closing
        WebSocket still counts), or after ``timeout_s`` in any case, so that
        a connection that never reports its end cannot keep a slot.
        """
        released = [False]

        def release(_: object = None) -> None:
            if not released[0]:
                released[0] = True
                if backstop.active():
                    backstop.cancel()
                self._slots.release()

        backstop = self.reactor.callLater(self.settings.timeout_s, release)
        try:
            gone = self._transport.gone(stream)
        except Exception:
            self.log.failure("ElevenLabs transport could not tell when a connection is gone")
            gone = succeed(None)
        gone.addBoth(release)
        return result

    def _open(
        self, voice_id: str, text: str, language: str, on_bytes: Callable[[bytes], None]
    ) -> "Deferred[None]":
        """
        Start one attempt once a connection slot is free; the slot is given
        back when the stream ends (done, failed, cancelled: its connection
        is then pooled or already aborted).  Cancelling while waiting leaves
        the queue.
        """
        slots = self._slots
        if not slots.tokens:
            self.counters.queued += 1
        acquired = slots.acquire()
        opened = [False]

        def start(_: object) -> "Deferred[None]":
            opened[0] = True
            try:
                stream = self._transport.open(voice_id, text, language, on_bytes)
            except Exception:
                self.log.failure("ElevenLabs request could not start")
                stream = _failed(EngineUnavailable(ENGINE, "could not start the request"))
            return stream.addBoth(self._release_when_gone, stream)

        def abandoned(failure: Failure) -> Failure:
            if not opened[0]:
                self.counters.queue_abandoned += 1
            return failure

        return acquired.addCallback(start).addErrback(abandoned)


def _failed(error: Exception) -> "Deferred[None]":
    d: Deferred[None] = Deferred()
    d.errback(Failure(error))
    return d


def _discard(result: _T, active: "set[Deferred[None]]", d: "Deferred[None]") -> _T:
    active.discard(d)
    return result
