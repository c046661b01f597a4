"""
ElevenLabs HTTP streaming: ``POST /v1/text-to-speech/{voice_id}/stream``.

Why HTTP streaming: the response body is the audio itself (chunked
transfer, raw S16LE for ``pcm_16000``), so the first chunk can be played
while the rest is generated, and a persistent ``HTTPConnectionPool`` makes
every request after the first skip the TCP+TLS handshake.

Body chunks come from ``treq.collect`` as they arrive.  Cancelling a stream
aborts its connection at once (a half-read body cannot go back to the pool);
the transport of the body protocol is reached through a thin response proxy
whose ``deliverBody`` notes the protocol, because ``treq.collect`` itself
does not abort on cancel.

The URL, body and error mapping are in :mod:`xlbridge.engines.elevenlabs.wire`;
an error body is read up to :data:`MAX_ERROR_BODY` bytes and mapped by
:func:`~xlbridge.engines.elevenlabs.wire.error_for_response`.
"""

from __future__ import annotations

import io
from typing import Callable, Optional, TypeVar, cast

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol
from twisted.internet.task import Cooperator
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from xlbridge.engines.base import EngineError, EngineUnavailable
from xlbridge.engines.elevenlabs.settings import ElevenLabsSettings
from xlbridge.engines.elevenlabs.wire import (
    ENGINE,
    STREAM_QUERY,
    IElevenLabsReactor,
    error_for_response,
    gather,
    scrub,
    stream_body,
    stream_url,
)
from xlbridge.httppool import quiet_pool

__all__ = ["HTTPStreamTransport", "MAX_ERROR_BODY"]

#: Bytes of an error body read at most (the rest is discarded).
MAX_ERROR_BODY = 16 * 1024

_T = TypeVar("_T")


@implementer(IResponse)
class _AbortableResponse:
    """
    Forwards to an ``IResponse``, noting the body protocol ``deliverBody``
    connects, so that :meth:`abort` can stop the body mid-way.
    """

    def __init__(self, response: IResponse) -> None:
        self._response = response
        self._protocol: Optional[Protocol] = None

    def __getattr__(self, name: str) -> object:
        return getattr(self._response, name)

    def deliverBody(self, protocol: Protocol) -> None:
        self._protocol = protocol
        self._response.deliverBody(protocol)

    def abort(self) -> None:
        _abort(getattr(self._protocol, "transport", None))


def _abort(transport: object) -> None:
    """
    Drop the connection under a body protocol's ``transport`` at once.

    That transport is a ``TransportProxyProducer``; the TCP (or TLS)
    connection is its ``_producer``, whose ``abortConnection`` closes the
    socket now (RST), where ``stopProducing`` would only start a clean close,
    which a half-open peer never completes.  Either way the connection is
    not returned to the pool.
    """
    if transport is None:
        return
    connection = getattr(transport, "_producer", None)
    abort = getattr(connection, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        cast(IPushProducer, transport).stopProducing()


class HTTPStreamTransport:
    """
    HTTP streaming through a persistent connection pool.

    :param reactor: the reactor (TCP, time, name resolution); TLS for
        https runs over its TCP.
    :param settings: the client's settings.
    :param pool: a pool to share; else one is made (bounded by
        ``settings.max_connections``) and closed by :meth:`close`.
    """

    def __init__(
        self,
        reactor: IElevenLabsReactor,
        settings: ElevenLabsSettings,
        pool: Optional[HTTPConnectionPool] = None,
    ) -> None:
        self.settings = settings
        self._own_pool = pool is None
        if pool is None:
            pool = quiet_pool(reactor, persistent=True)
            pool.maxPersistentPerHost = settings.max_connections
            pool.cachedConnectionTimeout = 60
            pool.retryAutomatically = False  # POST: Utterance retries itself
        self.pool = pool
        agent = Agent(reactor, connectTimeout=settings.timeout_s, pool=pool)

        # Request bodies are written by a FileBodyProducer, as treq's default
        # does, but on a cooperator of our reactor instead of the global one.
        def schedule(work: Callable[[], None]) -> IDelayedCall:
            return reactor.callLater(0, work)

        self._cooperator = Cooperator(scheduler=schedule)
        self._client = HTTPClient(agent, data_to_body_producer=self._body_producer)
        self._active: "set[Deferred[None]]" = set()

    def _body_producer(self, data: bytes) -> IBodyProducer:
        return FileBodyProducer(io.BytesIO(data), cooperator=self._cooperator)

    def open(
        self, voice_id: str, text: str, language: str, on_bytes: Callable[[bytes], None]
    ) -> "Deferred[None]":
        """
        POST one utterance; ``on_bytes`` gets each body chunk (S16LE) as it
        arrives.  See :class:`~xlbridge.engines.elevenlabs.tts.StreamTransport`.
        """
        settings = self.settings
        key = settings.api_key
        headers: dict[bytes | str, bytes | str] = {"xi-api-key": key, "Accept": "*/*"}
        body = stream_body(
            text, settings.model_id, settings.language_code_for(language), settings.voice_settings
        )
        response = self._client.post(
            stream_url(settings.base_url, voice_id),
            params=STREAM_QUERY,
            json=body,
            headers=headers,
            unbuffered=True,
        )
        stream = _Stream(on_bytes, key)
        requested: Deferred[None] = response.addCallback(stream.response)
        requested.addErrback(stream.failed)
        self._active.add(requested)
        requested.addBoth(_forget, self._active, requested)
        return requested

    def gone(self, stream: "Deferred[None]") -> "Deferred[None]":
        """
        At once: when a stream has fired its connection is idle in the pool
        (body read to the end) or aborted (see :func:`_abort`).
        """
        return succeed(None)

    def close(self) -> "Deferred[None]":
        """Abort streams in progress, then close pooled connections."""
        for d in list(self._active):
            d.cancel()
        if self._own_pool:
            return gather([self.pool.closeCachedConnections()])
        return gather([])


def _forget(result: _T, active: "set[Deferred[None]]", d: "Deferred[None]") -> _T:
    active.discard(d)
    return result


class _Stream:
    """The body side of one request: chunks out, errors mapped."""

    def __init__(self, on_bytes: Callable[[bytes], None], key: str) -> None:
        self.on_bytes = on_bytes
        self.key = key
        self.received = 0
        self.stopped = False

    def response(self, response: IResponse) -> "Deferred[None]":
        if response.code != 200:
            return _read_limited(response, MAX_ERROR_BODY).addCallback(self._error, response.code)
        proxy = _AbortableResponse(response)

        def cancel(_: Deferred[None]) -> None:
            self.stopped = True
            proxy.abort()

        done: Deferred[None] = Deferred(cancel)

        def fire(result: object) -> None:
            # After a cancel ``done`` has fired already; the abort's failure
            # lands here and is dropped.
            if not done.called:
                if isinstance(result, Failure):
                    done.errback(result)
                else:
                    done.callback(None)

        treq.collect(cast(IResponse, proxy), self._chunk).addBoth(fire)
        return done

    def _chunk(self, data: bytes) -> None:
        if self.stopped:
            raise _Stopped()  # makes treq.collect drop the connection
        self.received += len(data)
        self.on_bytes(data)

    def _error(self, body: bytes, code: int) -> None:
        raise error_for_response(code, body, self.key)

    def failed(self, failure: Failure) -> Failure:
        # Our own errors, and cancellation (by the caller or the watchdog,
        # which Utterance tells apart), pass through unchanged.
        if self.stopped or failure.check(EngineError, CancelledError, _Stopped):
            return failure
        if self.received:
            what = f"stream dropped after {self.received} bytes"
        else:
            what = "no response"
        return Failure(
            EngineUnavailable(ENGINE, scrub(f"{what}: {_describe(failure)}", self.key))
        )


class _Stopped(Exception):
    """Raised from the collector of a cancelled stream."""


def _describe(failure: Failure) -> str:
    reasons = getattr(failure.value, "reasons", None)
    if reasons:
        return ", ".join(type(r.value).__name__ for r in reasons)
    return f"{type(failure.value).__name__}"


class _LimitedReader(Protocol):
    def __init__(self, limit: int, done: "Deferred[bytes]") -> None:
        self.limit = limit
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        room = self.limit - self.size
        if room > 0:
            self.parts.append(data[:room])
            self.size += min(room, len(data))

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        # Whatever ended the body (done, data loss, abort), report what we have.
        if not self.done.called:
            self.done.callback(b"".join(self.parts))


def _read_limited(response: IResponse, limit: int) -> "Deferred[bytes]":
    """
    The first ``limit`` bytes of ``response``'s body.  Cancelling (the
    watchdog, on a peer that stopped mid-body) aborts the connection.
    """

    def cancel(_: "Deferred[bytes]") -> None:
        _abort(reader.transport)

    done: Deferred[bytes] = Deferred(cancel)
    reader = _LimitedReader(limit, done)
    response.deliverBody(reader)
    return done

