"""
ElevenLabs WebSocket ``stream-input`` (single context), over Autobahn.

Protocol, per socket (PROTOCOLS.md 4.3, T5):

1. Connect to ``{ws base}/v1/text-to-speech/{voice_id}/stream-input`` with
   ``model_id``, ``output_format=pcm_16000``, ``inactivity_timeout`` and (for
   Flash/Turbo v2.5) ``language_code`` in the query and the ``xi-api-key``
   header on the upgrade request (the key never goes in a message).
2. Send the init message ``{"text": " "}`` (plus ``voice_settings``, which may
   only be sent here).
3. Send ``{"text": "<utterance> ", "flush": true}`` then ``{"text": ""}``: the
   empty text ends the stream, so the server generates everything, sends
   ``{"isFinal": true}`` and closes.  No text may follow.
4. Audio arrives as ``{"audio": "<base64 S16LE>", ...}`` (alignment fields
   are ignored, so both T9 spellings are fine).

One socket therefore carries one utterance.  To keep the WebSocket handshake
(TCP + TLS + upgrade) out of the time-to-first-audio, a *spare* socket per
(voice, language) is opened and initialised ahead of use, once that key has
produced audio (so a failing key does not open spares), bounded by
:data:`MAX_SPARES`.  An idle spare sends ``{"text": " "}`` every half
``inactivity_timeout`` so the server does not close it.

Errors: an upgrade refused with an HTTP status is mapped like an HTTP
response; an in-band ``{"message": ..., "error": ...}`` followed by close 1008
is mapped by its error code; a close before ``isFinal`` is
:class:`EngineUnavailable` after what arrived was delivered.

The URL, the messages both ways and this error mapping are in
:mod:`xlbridge.engines.elevenlabs.wire`; this module owns the sockets and
their timers.
"""

from __future__ import annotations

import collections
from typing import Callable, Optional, TypeVar, cast

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IProtocol, IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.base import EngineError, EngineUnavailable
from xlbridge.engines.elevenlabs.settings import ElevenLabsSettings
from xlbridge.engines.elevenlabs.wire import (
    END_OF_INPUT,
    ENGINE,
    KEEPALIVE,
    IElevenLabsReactor,
    close_error,
    error_for_status,
    gather,
    init_message,
    language_code,
    parse_server_message,
    stream_input_url,
    text_message,
    upgrade_status,
)

__all__ = ["MAX_MESSAGE", "MAX_SPARES", "WebSocketStreamTransport"]

_T = TypeVar("_T")

#: Spare (pre-opened) sockets kept at most, over all (voice, language) keys.
MAX_SPARES = 4

#: Largest server message accepted, bytes (a few seconds of base64 audio).
MAX_MESSAGE = 4 * 1024 * 1024


class _StreamInputProtocol(WebSocketClientProtocol):
    """Forwards Autobahn events to the factory's :class:`_Session`."""

    factory: "_SessionFactory"

    def onOpen(self) -> None:
        # Small text messages (text, flush, keep-alives): without TCP_NODELAY
        # Nagle holds them back until the previous one is acknowledged
        # (Autobahn's own attempt to set it fails silently; see the Deepgram
        # client and bench/pipeline_latency.py).
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            try:
                set_nodelay(True)
            except OSError:
                pass  # the socket is gone; ws_close follows
        self.factory.session.ws_open(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.session.ws_message(payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        # Autobahn keeps the status line of a refused upgrade, not its body.
        status = upgrade_status(getattr(self, "http_status_line", None))
        self.factory.session.ws_closed(code, reason or "", status)


class _SessionFactory(WebSocketClientFactory):
    protocol = _StreamInputProtocol  # type: ignore[assignment]

    def __init__(
        self, session: "_Session", url: str, headers: dict[str, str], reactor: IElevenLabsReactor
    ) -> None:
        super().__init__(url, headers=headers, reactor=reactor)
        self.session = session

    def __repr__(self) -> str:  # the default repr could show the headers
        return f"<_SessionFactory {self.session.voice_id}>"


class _Session:
    """
    One socket, one utterance: ``connecting`` -> ``ready`` (initialised,
    maybe waiting as a spare) -> ``speaking`` -> ``closed``.
    """

    log = Logger()

    def __init__(self, owner: "WebSocketStreamTransport", voice_id: str, language: str) -> None:
        self.owner = owner
        self.settings = owner.settings
        self.reactor = owner.reactor
        self.voice_id = voice_id
        self.language = language
        self.state = "connecting"
        self.proto: Optional[_StreamInputProtocol] = None
        self.connecting: "Optional[Deferred[IProtocol]]" = None
        self.keepalive: Optional[IDelayedCall] = None
        self.text: Optional[str] = None
        self.on_bytes: Optional[Callable[[bytes], None]] = None
        self.d: "Optional[Deferred[None]]" = None
        self.received = 0
        self.error: Optional[EngineError] = None
        self.abandoned = False
        self.closed: Deferred[None] = Deferred()

    # -- lifecycle ----------------------------------------------------------

    def connect(self) -> None:
        settings = self.settings
        url = stream_input_url(
            settings.ws_base_url,
            self.voice_id,
            settings.model_id,
            settings.inactivity_timeout,
            settings.language_code_for(self.language),
        )
        factory = _SessionFactory(self, url, {"xi-api-key": settings.api_key}, self.reactor)
        factory.setProtocolOptions(
            openHandshakeTimeout=self.settings.timeout_s,
            # Autobahn rounds timers down to a whole second, so 2 s waits
            # 1-2 s for the server's close reply (1 s could be no wait).
            closeHandshakeTimeout=2.0,
            maxMessagePayloadSize=MAX_MESSAGE,
            maxFramePayloadSize=MAX_MESSAGE,
        )
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self.reactor, factory.host, factory.port, timeout=self.settings.timeout_s
        )
        if factory.isSecure:
            endpoint = wrapClientTLS(optionsForClientTLS(factory.host), endpoint)
        self.connecting = endpoint.connect(factory)
        self.connecting.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, connected: IProtocol) -> None:
        # TCP (and TLS) is up; the upgrade is under way.
        proto = cast(_StreamInputProtocol, connected)  # made by _SessionFactory
        self.proto = proto
        if self.abandoned:
            proto.dropConnection(abort=True)

    @property
    def usable(self) -> bool:
        """Whether an utterance may still be given to this socket."""
        return self.state in ("connecting", "ready") and self.text is None

    def speak(self, text: str, on_bytes: Callable[[bytes], None]) -> "Deferred[None]":
        """Send ``text`` on this socket (now, or once it is open)."""
        self.text = text
        self.on_bytes = on_bytes
        self.d = Deferred(self._cancel)
        if self.state == "ready":
            self._send_text()
        return self.d

    def abandon(self) -> None:
        """Drop the socket at once (spare evicted, cancel, client closing)."""
        self.abandoned = True
        self._stop_keepalive()
        if self.state == "closed":
            return
        if self.proto is not None:
            self.proto.dropConnection(abort=True)
        elif self.connecting is not None:
            self.connecting.cancel()

    # -- Autobahn events ----------------------------------------------------

    def ws_open(self, proto: _StreamInputProtocol) -> None:
        self.proto = proto
        if self.abandoned:
            return
        self._send(init_message(self.settings.voice_settings))
        self.state = "ready"
        if self.text is not None:
            self._send_text()
        else:
            self._schedule_keepalive()

    def ws_message(self, payload: bytes, is_binary: bool) -> None:
        if is_binary:
            return
        try:
            msg = parse_server_message(payload)
        except ValueError:
            self.log.warn("ElevenLabs sent a message that is not JSON; ignored")
            return
        if msg.has_audio and self.d is not None and not self.d.called:
            if msg.audio is None:
                self.log.warn("ElevenLabs sent audio that is not base64; ignored")
                return
            self.received += len(msg.audio)
            assert self.on_bytes is not None
            self.on_bytes(msg.audio)
        elif msg.error is not None:
            status, message = msg.error
            self.error = error_for_status(None, status, message, self.settings.api_key)
        if msg.is_final and self.d is not None and not self.d.called:
            self.state = "closed"  # the server closes after the final message
            self.d.callback(None)
            if self.proto is not None:
                self.proto.sendClose(1000)

    def ws_closed(self, code: Optional[int], reason: str, status: Optional[int]) -> None:
        was = self.state
        self.state = "closed"
        self._stop_keepalive()
        self.owner.session_gone(self)
        if self.d is not None and not self.d.called:
            error = close_error(
                was, code, reason, status, self.error, self.received, self.settings.api_key
            )
            self.d.errback(Failure(error))
        if not self.closed.called:
            self.closed.callback(None)

    def _connect_failed(self, failure: Failure) -> None:
        self.state = "closed"
        self.owner.session_gone(self)
        if self.d is not None and not self.d.called:
            self.d.errback(Failure(EngineUnavailable(
                ENGINE, f"cannot connect: {type(failure.value).__name__}"
            )))
        if not self.closed.called:
            self.closed.callback(None)

    # -- helpers ------------------------------------------------------------

    def _send(self, message: bytes) -> None:
        assert self.proto is not None
        self.proto.sendMessage(message, isBinary=False)

    def _send_text(self) -> None:
        self._stop_keepalive()
        assert self.text is not None
        self._send(text_message(self.text))
        self._send(END_OF_INPUT)
        self.state = "speaking"

    def _schedule_keepalive(self) -> None:
        self.keepalive = self.reactor.callLater(
            self.settings.inactivity_timeout / 2.0, self._keepalive
        )

    def _keepalive(self) -> None:
        self.keepalive = None
        if self.state == "ready" and self.text is None:
            self._send(KEEPALIVE)
            self._schedule_keepalive()

    def _stop_keepalive(self) -> None:
        if self.keepalive is not None and self.keepalive.active():
            self.keepalive.cancel()
        self.keepalive = None

    def _cancel(self, d: "Deferred[None]") -> None:
        self.abandon()


def _fire(result: _T, done: "Deferred[None]") -> _T:
    if not done.called:
        done.callback(None)
    return result


class WebSocketStreamTransport:
    """
    ``stream-input`` sockets, one per utterance, with spares.

    :param reactor: the reactor (TCP, time, name resolution); TLS for wss
        runs over its TCP.
    :param settings: the client's settings (``ws_standby`` turns spares on).
    """

    def __init__(self, reactor: IElevenLabsReactor, settings: ElevenLabsSettings) -> None:
        self.reactor = reactor
        self.settings = settings
        self._spares: "collections.OrderedDict[tuple[str, str], _Session]" = collections.OrderedDict()
        self._sessions: "set[_Session]" = set()
        self._closing = False

    def open(
        self, voice_id: str, text: str, language: str, on_bytes: Callable[[bytes], None]
    ) -> "Deferred[None]":
        """
        Speak one utterance on a spare socket if one is usable, else on a new
        one.  See :class:`~xlbridge.engines.elevenlabs.tts.StreamTransport`.
        """
        key = (voice_id, language_code(language))
        session = self._spares.pop(key, None)
        if session is None or not session.usable:
            if session is not None:
                session.abandon()
            session = self._new_session(voice_id, language)
        refilled = [False]

        def first_audio(data: bytes) -> None:
            if not refilled[0]:
                refilled[0] = True
                self._refill(key, voice_id, language)
            on_bytes(data)

        return session.speak(text, first_audio)

    def gone(self, stream: "Deferred[None]") -> "Deferred[None]":
        """
        When the socket that carried ``stream`` is closed: after ``isFinal``
        the close handshake is still under way (Autobahn drops the socket
        after ``closeHandshakeTimeout`` at the latest).
        """
        for session in self._sessions:
            if session.d is stream:
                done: Deferred[None] = Deferred()
                session.closed.addBoth(_fire, done)
                return done
        return succeed(None)  # session_gone ran: the socket is closed

    def _new_session(self, voice_id: str, language: str) -> _Session:
        session = _Session(self, voice_id, language)
        self._sessions.add(session)
        session.connect()
        return session

    def _refill(self, key: tuple[str, str], voice_id: str, language: str) -> None:
        if not self.settings.ws_standby or self._closing or key in self._spares:
            return
        self._spares[key] = self._new_session(voice_id, language)
        while len(self._spares) > MAX_SPARES:
            _, old = self._spares.popitem(last=False)
            old.abandon()

    def session_gone(self, session: _Session) -> None:
        """Called by a session whose socket is gone."""
        self._sessions.discard(session)
        for key, spare in list(self._spares.items()):
            if spare is session:
                del self._spares[key]

    @property
    def spares(self) -> int:
        """Spare sockets open or opening."""
        return len(self._spares)

    def close(self) -> "Deferred[None]":
        """Drop every socket; fires when all are gone."""
        self._closing = True
        sessions = list(self._sessions)
        self._spares.clear()
        for session in sessions:
            session.abandon()
        return gather([s.closed for s in sessions])
