"""
ElevenLabs text-to-speech, the sans-I/O part: what the client sends, how it
reads what comes back, and how failures map to
:class:`~xlbridge.engines.base.EngineError`.

Nothing here opens a socket or starts a timer.  The client
(:mod:`xlbridge.engines.elevenlabs.tts`) and both transports
(:mod:`~xlbridge.engines.elevenlabs.http`,
:mod:`~xlbridge.engines.elevenlabs.ws`) import this module; it imports none
of them, nor the settings (callers pass the values they need).

HTTP streaming (PROTOCOLS.md 4.2)
    ``POST {base}/v1/text-to-speech/{voice_id}/stream?output_format=pcm_16000``
    (:func:`stream_url`, :data:`STREAM_QUERY`) with the JSON body of
    :func:`stream_body`.  The response body is the audio.  Error bodies are
    ``{"detail": {"status": "...", "message": "..."}}``, or for 422
    ``{"detail": [{"loc": ..., "msg": ...}]}`` (:func:`parse_error_body`).

WebSocket ``stream-input`` (PROTOCOLS.md 4.3)
    :func:`stream_input_url`; the client sends :func:`init_message`, then
    :func:`text_message` and :data:`END_OF_INPUT`, and :data:`KEEPALIVE`
    while idle.  The server's text messages are read by
    :func:`parse_server_message`; :func:`close_error` explains a close.

Audio (PROTOCOLS.md T1)
    ``pcm_16000`` (:data:`OUTPUT_FORMAT`) is raw signed 16-bit
    **little-endian** mono at 16000 Hz, no header, cut at arbitrary byte
    boundaries;
    :class:`~xlbridge.engines.elevenlabs.pcm.PCMChunker` turns it into whole
    native-order samples.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Iterable, Mapping, Optional, TypeVar
from urllib.parse import quote, urlencode

import attrs
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import (
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
)

from xlbridge.engines.base import (
    EngineAuthError,
    EngineError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
    redact,
)

__all__ = [
    "END_OF_INPUT",
    "ENGINE",
    "IElevenLabsReactor",
    "KEEPALIVE",
    "OUTPUT_FORMAT",
    "STREAM_QUERY",
    "ServerMessage",
    "close_error",
    "error_for_response",
    "error_for_status",
    "gather",
    "init_message",
    "language_code",
    "parse_error_body",
    "parse_server_message",
    "scrub",
    "stream_body",
    "stream_input_url",
    "stream_url",
    "text_message",
    "upgrade_status",
]

#: The engine name in every :class:`~xlbridge.engines.base.EngineError`.
ENGINE = "elevenlabs"

#: The only output format this client asks for: raw S16LE mono, 16000 Hz.
OUTPUT_FORMAT = "pcm_16000"

_T = TypeVar("_T")


class IElevenLabsReactor(IReactorTCP, IReactorTime, IReactorPluggableNameResolver):
    """
    The reactor the client and its transports need, for type hints only (as
    treq's ``_ITreqReactor``): ``HostnameEndpoint`` (under the HTTP
    ``Agent`` and the WebSocket connect) wants TCP, time and a name
    resolver; timers want time.  TLS runs over TCP (``wrapClientTLS``), so
    ``IReactorSSL`` is not needed.  The default reactor provides all of it.
    """


# -- small shared helpers -------------------------------------------------------


def language_code(language: str) -> str:
    """ISO 639-1 primary subtag: ``"es-MX"`` -> ``"es"``."""
    return language.strip().replace("_", "-").split("-")[0].lower()


def scrub(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced by its redaction."""
    return text.replace(secret, redact(secret)) if secret else text


def gather(ds: "Iterable[Deferred[_T]]") -> "Deferred[None]":
    """Fire (with ``None``) once all of ``ds`` have fired, whatever the results."""
    return DeferredList(list(ds), consumeErrors=True).addCallback(lambda _: None)


# -- errors -----------------------------------------------------------------------

_AUTH = {"invalid_api_key", "missing_api_key", "unauthorized", "needs_authorization"}
_BUSY = {"too_many_concurrent_requests", "system_busy", "max_active_conversations"}
_REQUEST = {"voice_not_found", "model_not_found", "invalid_request", "max_character_limit_exceeded"}

#: ElevenLabs error codes looked for in in-band errors and close reasons.
_KNOWN_STATUSES = (
    "invalid_api_key",
    "quota_exceeded",
    "voice_not_found",
    "model_not_found",
    "too_many_concurrent_requests",
    "system_busy",
    "max_active_conversations",
    "max_character_limit_exceeded",
    "unauthorized",
)


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


def _status_in(text: str) -> str:
    """The first known ElevenLabs error code found in ``text``, else ``""``."""
    for status in _KNOWN_STATUSES:
        if status in text:
            return status
    return ""


# -- HTTP streaming ---------------------------------------------------------------

#: The query of every stream request.
STREAM_QUERY: Mapping[str, str] = {"output_format": OUTPUT_FORMAT}


def stream_url(base_url: str, voice_id: str) -> str:
    """The HTTP stream URL for ``voice_id``, without its query (:data:`STREAM_QUERY`)."""
    return f"{base_url}/v1/text-to-speech/{quote(voice_id, safe='')}/stream"


def stream_body(
    text: str,
    model_id: str,
    lang: Optional[str],
    voice_settings: Optional[Mapping[str, object]],
) -> dict[str, object]:
    """
    The JSON body of an HTTP stream request.

    :param lang: the ``language_code`` to send, or ``None`` for a model
        that takes none (see
        :meth:`~xlbridge.engines.elevenlabs.settings.ElevenLabsSettings.language_code_for`).
    :param voice_settings: sent as is, if given.
    """
    body: dict[str, object] = {"text": text, "model_id": model_id}
    if lang:
        body["language_code"] = lang
    if voice_settings is not None:
        body["voice_settings"] = dict(voice_settings)
    return body


# -- WebSocket stream-input -------------------------------------------------------


def stream_input_url(
    ws_base_url: str,
    voice_id: str,
    model_id: str,
    inactivity_timeout: int,
    lang: Optional[str],
) -> str:
    """
    The ``stream-input`` URL for ``voice_id``; the query carries everything
    but the key (which goes in the ``xi-api-key`` header of the upgrade).

    :param inactivity_timeout: seconds (1..180).
    :param lang: the ``language_code`` to send, or ``None``.
    """
    params = {
        "model_id": model_id,
        "output_format": OUTPUT_FORMAT,
        "inactivity_timeout": str(inactivity_timeout),
    }
    if lang:
        params["language_code"] = lang
    voice = quote(voice_id, safe="")
    return f"{ws_base_url}/v1/text-to-speech/{voice}/stream-input?{urlencode(params)}"


def _encode(msg: Mapping[str, object]) -> bytes:
    return json.dumps(msg).encode("utf-8")


def init_message(voice_settings: Optional[Mapping[str, object]]) -> bytes:
    """
    The first message on a socket: ``{"text": " "}``, with ``voice_settings``
    (which may only be sent here).
    """
    init: dict[str, object] = {"text": " "}
    if voice_settings is not None:
        init["voice_settings"] = dict(voice_settings)
    return _encode(init)


def text_message(text: str) -> bytes:
    """``text`` to speak at once: ending in a space, with ``"flush": true``."""
    return _encode({"text": text if text.endswith(" ") else text + " ", "flush": True})


#: Ends the input: the server speaks what it has, sends ``isFinal``, closes.
END_OF_INPUT = _encode({"text": ""})

#: Resets the server's inactivity timer without adding text.
KEEPALIVE = _encode({"text": " "})


@attrs.frozen
class ServerMessage:
    """
    What this client reads from one text message of ``stream-input``.

    :ivar audio: the decoded ``audio`` field (S16LE), or ``None`` when the
        field is missing, empty or not base64.
    :ivar bad_audio: the ``audio`` field is there but is not base64.
    :ivar error: ``(status, message)`` of an in-band error (a message with
        ``"message"`` or ``"error"``), for :func:`error_for_status` with
        no HTTP code.
    :ivar is_final: ``isFinal`` is true: the server has sent everything.
    """

    audio: Optional[bytes] = None
    bad_audio: bool = False
    error: Optional[tuple[str, str]] = None
    is_final: bool = False

    @property
    def has_audio(self) -> bool:
        """Whether the message carries audio, readable or not."""
        return self.audio is not None or self.bad_audio


def parse_server_message(payload: bytes) -> ServerMessage:
    """
    Read one text message.  JSON that is not an object reads as an empty
    message; alignment and other fields are ignored.

    :raises ValueError: ``payload`` is not UTF-8 JSON.
    """
    msg: Any = json.loads(payload.decode("utf-8"))  # JSON: any shape
    if not isinstance(msg, dict):
        return ServerMessage()
    audio: Optional[bytes] = None
    bad_audio = False
    field = msg.get("audio")
    if field:
        try:
            audio = base64.b64decode(field, validate=True)
        except (binascii.Error, ValueError, TypeError):
            bad_audio = True
    error = None
    if "message" in msg or "error" in msg:
        text = f"{msg.get('error') or ''} {msg.get('message') or ''}"
        error = (_status_in(text), str(msg.get("message") or msg.get("error")))
    return ServerMessage(audio, bad_audio, error, bool(msg.get("isFinal")))


def upgrade_status(status_line: Optional[str]) -> Optional[int]:
    """
    The HTTP status in the status line of an upgrade response
    (``"HTTP/1.1 401 Unauthorized"`` -> 401), or ``None``.
    """
    parts = (status_line or "").split()
    try:
        return int(parts[1]) if len(parts) > 1 else None
    except ValueError:
        return None


def close_error(
    state: str,
    code: Optional[int],
    reason: str,
    upgrade: Optional[int],
    in_band: Optional[EngineError],
    received: int,
    key: str,
) -> EngineError:
    """
    Why a socket closed before ``isFinal``, in this order: an upgrade
    refused with an HTTP status, the in-band error that preceded the close,
    a known error code in the close reason, else :class:`EngineUnavailable`
    saying how far the stream got.

    :param state: the socket's state when it closed (``"connecting"``,
        ``"ready"``, ``"speaking"``).
    :param code: the WebSocket close code, if any.
    :param reason: the close reason (``""`` if none).
    :param upgrade: the HTTP status of the upgrade response, if one was read.
    :param in_band: the error from an earlier in-band error message.
    :param received: audio bytes received on this socket.
    :param key: the API key, scrubbed from the message.
    """
    if state == "connecting" and upgrade is not None and upgrade != 101:
        return error_for_status(upgrade, "", "WebSocket upgrade refused", key)
    if in_band is not None:
        return in_band
    known = _status_in(reason)
    if known:
        return error_for_status(None, known, reason, key)
    where = f"after {received} bytes" if received else f"while {state}"
    return EngineUnavailable(
        ENGINE, scrub(f"WebSocket closed {where} (code {code}: {reason[:200]})", key)
    )
