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

Error bodies are ``{"detail": {"status": "...", "message": "..."}}`` (422:
``{"detail": [{"loc": ..., "msg": ...}]}``), read up to
:data:`MAX_ERROR_BODY` bytes and mapped by :func:`error_for_response`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Optional, cast
from urllib.parse import quote

import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IResponse
from zope.interface import implementer

from xlbridge.engines.base import (
    EngineAuthError,
    EngineError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
)
from xlbridge.engines.elevenlabs.tts import ENGINE, OUTPUT_FORMAT, gather, scrub

if TYPE_CHECKING:
    from xlbridge.engines.elevenlabs.tts import ElevenLabsSettings

#: Bytes of an error body read at most (the rest is discarded).
MAX_ERROR_BODY = 16 * 1024

_AUTH = {"invalid_api_key", "missing_api_key", "unauthorized", "needs_authorization"}
_BUSY = {"too_many_concurrent_requests", "system_busy", "max_active_conversations"}
_REQUEST = {"voice_not_found", "model_not_found", "invalid_request", "max_character_limit_exceeded"}


def parse_error_body(body: bytes) -> tuple[str, str]:
    """
    ``(status, message)`` from an ElevenLabs error body; empty strings for
    what is missing or unparseable.
    """
    try:
        detail = json.loads(body.decode("utf-8", "replace")).get("detail")
    except (ValueError, AttributeError):
        return "", body[:200].decode("utf-8", "replace").strip()
    if isinstance(detail, dict):
        return str(detail.get("status") or ""), str(detail.get("message") or "")
    if isinstance(detail, list):  # 422 validation errors
        msgs = [str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail]
        return "validation_error", "; ".join(msgs)
    return "", str(detail or "")


def error_for_status(code: Optional[int], status: str, message: str, key: str) -> EngineError:
    """
    Map an HTTP status (``None`` when there was none, as for an in-band
    WebSocket error) and ElevenLabs ``detail.status`` to an
    :class:`EngineError`.  ``status`` wins over ``code``: quota errors
    arrive as 401.  ``key`` is scrubbed from the message.
    """
    text = scrub(" ".join(p for p in (f"HTTP {code}" if code else "", status, message) if p), key)
    text = text[:300] or "error"
    if status == "quota_exceeded":
        return EngineQuotaError(ENGINE, text)
    if status in _AUTH or code in (401, 403):
        return EngineAuthError(ENGINE, text)
    if status in _BUSY or code == 429 or (code is not None and code >= 500):
        return EngineUnavailable(ENGINE, text)
    if status in _REQUEST or (code is not None and 400 <= code < 500):
        return EngineRequestError(ENGINE, text)
    return EngineUnavailable(ENGINE, text)


def error_for_response(code: int, body: bytes, key: str) -> EngineError:
    """:func:`error_for_status` for an HTTP response ``code`` with ``body``."""
    status, message = parse_error_body(body)
    return error_for_status(code, status, message, key)


@implementer(IResponse)
class _AbortableResponse:
    """
    Forwards to an ``IResponse``, noting the body protocol ``deliverBody``
    connects, so that :meth:`abort` can stop the body mid-way.
    """

    def __init__(self, response: IResponse) -> None:
        self._response = response
        self._protocol: Optional[Protocol] = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def deliverBody(self, protocol: Protocol) -> None:
        self._protocol = protocol
        self._response.deliverBody(protocol)

    def abort(self) -> None:
        transport = getattr(self._protocol, "transport", None)
        if transport is not None:
            transport.stopProducing()  # TransportProxyProducer: drops the connection


class HTTPStreamTransport:
    """
    HTTP streaming through a persistent connection pool.

    :param reactor: ``IReactorTCP`` + ``IReactorTime`` (+ TLS for https).
    :param settings: the client's settings.
    :param pool: a pool to share; else one is made (bounded by
        ``settings.max_connections``) and closed by :meth:`close`.
    """

    def __init__(self, reactor: Any, settings: "ElevenLabsSettings", pool: Optional[HTTPConnectionPool] = None) -> None:
        self.settings = settings
        self._own_pool = pool is None
        if pool is None:
            pool = HTTPConnectionPool(reactor, persistent=True)
            pool.maxPersistentPerHost = settings.max_connections
            pool.cachedConnectionTimeout = 60
            pool.retryAutomatically = False  # POST: _Utterance retries itself
        self.pool = pool
        agent = Agent(reactor, connectTimeout=settings.timeout_s, pool=pool)
        self._client = HTTPClient(agent)
        self._active: "set[Deferred[None]]" = set()

    def url(self, voice_id: str) -> str:
        """The stream URL for ``voice_id`` (query added by :meth:`open`)."""
        return f"{self.settings.base_url}/v1/text-to-speech/{quote(voice_id, safe='')}/stream"

    def body(self, text: str, language: str) -> dict[str, Any]:
        """The JSON request body."""
        body: dict[str, Any] = {"text": text, "model_id": self.settings.model_id}
        code = self.settings.language_code_for(language)
        if code:
            body["language_code"] = code
        if self.settings.voice_settings is not None:
            body["voice_settings"] = dict(self.settings.voice_settings)
        return body

    def open(
        self, voice_id: str, text: str, language: str, on_bytes: Callable[[bytes], None]
    ) -> "Deferred[None]":
        """
        POST one utterance; ``on_bytes`` gets each body chunk (S16LE) as it
        arrives.  See :class:`~xlbridge.engines.elevenlabs.tts.StreamTransport`.
        """
        key = self.settings.api_key
        headers: dict[bytes | str, bytes | str] = {"xi-api-key": key, "Accept": "*/*"}
        response: Deferred[Any] = self._client.post(
            self.url(voice_id),
            params={"output_format": OUTPUT_FORMAT},
            json=self.body(text, language),
            headers=headers,
            unbuffered=True,
        )
        stream = _Stream(on_bytes, key)
        requested: Deferred[None] = response.addCallback(stream.response)
        requested.addErrback(stream.failed)
        self._active.add(requested)
        requested.addBoth(_forget, self._active, requested)
        return requested

    def close(self) -> "Deferred[None]":
        """Abort streams in progress, then close pooled connections."""
        for d in list(self._active):
            d.cancel()
        if self._own_pool:
            return gather([self.pool.closeCachedConnections()])
        return gather([])


def _forget(result: Any, active: "set[Deferred[None]]", d: "Deferred[None]") -> Any:
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
        # which _Utterance tells apart), pass through unchanged.
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
    """The first ``limit`` bytes of ``response``'s body."""
    done: Deferred[bytes] = Deferred()
    response.deliverBody(_LimitedReader(limit, done))
    return done


__all__ = ["HTTPStreamTransport", "error_for_response", "error_for_status", "parse_error_body"]
