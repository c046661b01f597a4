"""
Deepgram live ASR over an Autobahn WebSocket: one :class:`DeepgramASR` per
caller, built by :func:`deepgram_asr_factory`.

The parsing, timing, replay and error rules live in the sans-I/O
:mod:`xlbridge.engines.deepgram_session`; this module only owns the socket
and the clock.

Design notes
------------

Lifecycle (``state``)::

    idle --start()--> connecting --upgrade 101--> open --finish(), 1000--> closed
                        ^   |                      |
                        |   | 429/5xx/drop         | drop, NET-xxxx
                        |   v                      v
                        +-- backoff <--------------+
    connecting --401/403/400--> failed (one EngineDown, no retry)

* **Why not ClientService?**  It counts a connection as a success once TCP
  connects and resets its retry count, but Deepgram refuses a stream
  *after* TCP, in the HTTP upgrade (429 at the concurrency limit, 401 for a
  bad key).  Its backoff would never grow, and it cannot tell "stop, the
  key is wrong" from "try later".  So the loop is ours: a failure counter
  reset only by a successful upgrade, :func:`backoff_delay` with injected
  jitter, and ``reactor.callLater``.
* **Outage.**  The first retryable failure emits one
  ``EngineDown(EngineUnavailable)``; the next successful upgrade emits
  ``EngineUp``.  Audio keeps going into the bounded spool and is replayed
  on the new connection from the end of the last final result, with the
  session's timestamp offset moved to the first replayed sample.
* **Audio out** is little-endian linear16 (trap T1), one ``chunk_ms``
  message at a time, never empty; a ``KeepAlive`` text frame goes out after
  ``keepalive_s`` without sending anything (trap T4).
* **finish()** sends any remainder (padded to 20 ms), then ``Finalize`` and
  ``CloseStream``; results keep flowing until Deepgram closes with 1000.
  It fires then, or after ``finish_timeout_s``, and never errbacks.
* **Secrets.**  The key only travels in the ``Authorization`` header.
  Autobahn logs the whole handshake request at debug level, so each
  protocol gets a logger that scrubs the key (:class:`_ScrubbingLog`).
"""

from __future__ import annotations

import enum
import random as _random
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.audio.codecs import little_endian_bytes
from xlbridge.audio.frame import FRAME_MS, SAMPLE_RATE, Samples
from xlbridge.engines.base import (
    ASR,
    ASREvent,
    ASRFactory,
    EngineDown,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    EngineUp,
    Transcript,
    redact,
)
from xlbridge.engines.deepgram_session import (
    CLOSE_STREAM,
    ENGINE,
    FINALIZE,
    KEEPALIVE,
    AudioSpool,
    Chunk,
    DeepgramSession,
    DeepgramSettings,
    backoff_delay,
    classify_close,
    classify_upgrade_failure,
    listen_url,
)
from xlbridge.errors import ConfigError

__all__ = [
    "DeepgramASR",
    "DeepgramClientProtocol",
    "DeepgramSession",
    "DeepgramSettings",
    "State",
    "backoff_delay",
    "deepgram_asr_factory",
    "listen_url",
]

#: A reactor providing IReactorTCP, IReactorSSL and IReactorTime.
Reactor = Any


class State(enum.StrEnum):
    """Connection state of one :class:`DeepgramASR`, for the monitor."""

    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    BACKOFF = "backoff"
    FAILED = "failed"
    CLOSED = "closed"


class _ScrubbingLog:
    """
    Wraps an Autobahn/txaio logger and replaces the secret in every string
    argument before it is logged.
    """

    def __init__(self, inner: Any, secret: str) -> None:
        self._inner = inner
        self._secret = secret
        self._shown = redact(secret)

    def _clean(self, v: Any) -> Any:
        if isinstance(v, str) and self._secret in v:
            return v.replace(self._secret, self._shown)
        if isinstance(v, bytes) and self._secret.encode() in v:
            return v.replace(self._secret.encode(), self._shown.encode())
        return v

    def __getattr__(self, name: str) -> Any:
        f = getattr(self._inner, name)
        if not callable(f) or not self._secret:
            return f

        def call(*args: Any, **kwargs: Any) -> Any:
            return f(*(self._clean(a) for a in args), **{k: self._clean(v) for k, v in kwargs.items()})

        return call


class DeepgramClientProtocol(WebSocketClientProtocol):  # type: ignore[misc]
    """
    Forwards Autobahn's callbacks to the :class:`DeepgramASR` that owns the
    connection; holds no logic of its own.
    """

    owner: "DeepgramASR"

    def onConnect(self, response: Any) -> None:
        self.owner.ws_connect(self, response)

    def onOpen(self) -> None:
        self.owner.ws_open(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.owner.ws_message(self, payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.owner.ws_close(self, wasClean, code, reason)


class _DeepgramClientFactory(WebSocketClientFactory):  # type: ignore[misc]
    """One factory per connection attempt, so late callbacks can be told apart."""

    protocol = DeepgramClientProtocol
    noisy = False  # one factory per attempt: no "Starting factory" lines

    def __init__(self, owner: "DeepgramASR", attempt: int, url: str, api_key: str, reactor: Reactor) -> None:
        super().__init__(url, headers={"Authorization": f"Token {api_key}"},
                         useragent="xlbridge", reactor=reactor)
        # Our own timers (connect_timeout_s, finish_timeout_s) run on the
        # injected reactor; Autobahn's would use txaio's global one.
        self.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0)
        self.owner = owner
        self.attempt = attempt
        self._secret = api_key

    def buildProtocol(self, addr: Any) -> DeepgramClientProtocol:
        p = super().buildProtocol(addr)
        assert isinstance(p, DeepgramClientProtocol)
        p.owner = self.owner
        p.log = _ScrubbingLog(p.log, self._secret)
        self.owner.ws_built(self.attempt, p)
        return p

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.owner.ws_connect_failed(self.attempt, reason)

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        """Handled by the protocol's ``onClose``."""


def _upgrade_status(proto: Any) -> Optional[int]:
    """The HTTP status of a refused upgrade, or ``None``."""
    parts = str(getattr(proto, "http_status_line", "") or "").split()
    if len(parts) < 2:
        return None
    try:
        status = int(parts[1])
    except ValueError:
        return None
    return None if status == 101 else status


class DeepgramASR:
    """
    One Deepgram stream for one caller, implementing
    :class:`~xlbridge.engines.base.ASR`.

    :param reactor: provides ``IReactorTCP``, ``IReactorSSL`` and
        ``IReactorTime``; all timers and sockets use it.
    :param settings: shared client settings.
    :param language: BCP-47 code for this caller, e.g. ``en``.
    :param on_event: receives every :data:`~xlbridge.engines.base.ASREvent`
        on the reactor thread, stream-timed.
    :param random: jitter source returning ``[0, 1)``.

    Counters (for the monitor): ``sent_bytes`` (audio bytes sent, replays
    included), ``messages_out`` (binary and text messages), ``keepalives``,
    ``connect_attempts``, ``reconnects`` (attempts after the first),
    ``replayed_ms`` (audio re-sent after a reconnect), ``dropped_audio_ms``
    (audio that never reached Deepgram: spool overflow, or fed after a
    permanent failure or finish), ``malformed`` (unparseable messages).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Reactor,
        settings: DeepgramSettings,
        language: str,
        on_event: Callable[[ASREvent], None],
        call_id: str = "",
        extension: str = "",
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.language = language
        self.on_event = on_event
        self.call_id = call_id
        self.extension = extension
        self.random = random
        self.url = listen_url(settings, language)
        self.session = DeepgramSession()
        self.spool = AudioSpool(settings.chunk_samples, int(settings.replay_s * SAMPLE_RATE))
        self.state = State.IDLE
        self.sent_bytes = 0
        self.messages_out = 0
        self.keepalives = 0
        self.connect_attempts = 0
        self.reconnects = 0
        self.replayed_ms = 0
        self._ignored_samples = 0
        self._attempt = 0
        self._failures = 0
        self._proto: Optional[DeepgramClientProtocol] = None
        self._connector: Any = None
        self._open = False
        self._ever_open = False
        self._down = False
        self._timed_out = False
        self._finishing = False
        self._close_sent = False
        self._last_send = 0.0
        self._timeout_call: Optional[IDelayedCall] = None
        self._retry_call: Optional[IDelayedCall] = None
        self._keepalive_call: Optional[IDelayedCall] = None
        self._finish_call: Optional[IDelayedCall] = None
        self._waiters: list[Deferred[None]] = []

    def __repr__(self) -> str:
        return (f"<DeepgramASR call={self.call_id!r} ext={self.extension!r} "
                f"language={self.language!r} state={self.state.value}>")

    @property
    def malformed(self) -> int:
        """Server messages that could not be parsed."""
        return self.session.malformed

    @property
    def dropped_audio_ms(self) -> int:
        """Milliseconds of fed audio that never reached Deepgram."""
        return (self.spool.dropped_samples + self._ignored_samples) * 1000 // SAMPLE_RATE

    # -- the ASR interface -------------------------------------------------

    def start(self) -> None:
        """Connect; audio fed meanwhile is spooled (bounded)."""
        if self.state is State.IDLE:
            self._connect()

    def feed(self, samples: Samples) -> None:
        """
        Queue caller audio (16 kHz int16, native order); whole chunks go out
        at once while connected, as little-endian bytes.
        """
        if self.state in (State.FAILED, State.CLOSED) or self._finishing:
            self._ignored_samples += len(samples)
            return
        chunks = self.spool.push(samples)
        if self._open and not self._close_sent:
            for c in chunks:
                self._send_chunk(c)
        self.spool.trim()

    def finish(self) -> "Deferred[None]":
        """
        End the stream: flush, ``Finalize``, ``CloseStream``, deliver the
        last results.  Fires when Deepgram closed the socket, or after
        ``finish_timeout_s``; never errbacks.
        """
        if self.state is State.IDLE:
            self.state = State.CLOSED
        if self.state in (State.FAILED, State.CLOSED):
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiters.append(d)
        if self._finishing:
            return d
        self._finishing = True
        self._finish_call = self.reactor.callLater(self.settings.finish_timeout_s, self._finish_timed_out)
        tail = self.spool.flush(SAMPLE_RATE * FRAME_MS // 1000)
        if self._open:
            if tail is not None:
                self._send_chunk(tail)
            self._send_finish()
        return d

    # -- connecting --------------------------------------------------------

    def _connect(self) -> None:
        self._retry_call = None
        self._attempt += 1
        self.connect_attempts += 1
        if self._attempt > 1:
            self.reconnects += 1
        self.state = State.CONNECTING
        self._timed_out = False
        attempt = self._attempt
        factory = _DeepgramClientFactory(self, attempt, self.url, self.settings.api_key, self.reactor)
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        timeout = self.settings.connect_timeout_s
        self.log.debug("deepgram: connecting {url} call={call_id} ext={ext} attempt={attempt}",
                       url=self.url, call_id=self.call_id, ext=self.extension, attempt=attempt)
        try:
            if secure:
                from twisted.internet.ssl import optionsForClientTLS

                self._connector = self.reactor.connectSSL(host, port, factory, optionsForClientTLS(host),
                                                          timeout=timeout)
            else:
                self._connector = self.reactor.connectTCP(host, port, factory, timeout=timeout)
        except Exception as e:
            # Missing TLS support or a bad host name: retrying cannot help.
            self._failed(EngineRequestError(ENGINE, f"cannot connect to {host}:{port}: {e}"))
            return
        if self.state is State.CONNECTING and attempt == self._attempt:
            self._timeout_call = self.reactor.callLater(timeout, self._connect_timed_out, attempt)

    def _connect_timed_out(self, attempt: int) -> None:
        self._timeout_call = None
        if attempt != self._attempt or self.state is not State.CONNECTING:
            return
        self._timed_out = True
        if self._proto is not None:
            self._proto.dropConnection(abort=True)
        elif self._connector is not None:
            try:
                self._connector.stopConnecting()
            except Exception:
                pass

    def ws_built(self, attempt: int, proto: DeepgramClientProtocol) -> None:
        """The TCP (and TLS) connection of ``attempt`` exists."""
        if attempt == self._attempt and self.state is State.CONNECTING:
            self._proto = proto

    def ws_connect_failed(self, attempt: int, reason: Failure) -> None:
        """TCP connect failed (refused, unreachable, timed out, cancelled)."""
        if attempt != self._attempt or self.state is not State.CONNECTING:
            return
        self._cancel("_timeout_call")
        self._proto = None
        if self._timed_out:
            err = EngineUnavailable(ENGINE, f"connect timed out after {self.settings.connect_timeout_s} s")
        else:
            err = EngineUnavailable(ENGINE, f"connect failed: {reason.getErrorMessage()}")
        self._failed(err)

    def ws_connect(self, proto: DeepgramClientProtocol, response: Any) -> None:
        """The server accepted the upgrade (101); remember its request id."""
        if proto is self._proto:
            headers = getattr(response, "headers", None) or {}
            self.session.request_id = headers.get("dg-request-id")

    def ws_open(self, proto: DeepgramClientProtocol) -> None:
        """The WebSocket is open: replay, then stream live."""
        if proto is not self._proto or self.state is not State.CONNECTING:
            proto.dropConnection(abort=True)
            return
        self._cancel("_timeout_call")
        self.state = State.OPEN
        self._open = True
        self._close_sent = False
        self._failures = 0
        reconnect = self._ever_open
        self._ever_open = True
        final_pos = int(round(self.session.final_end * SAMPLE_RATE))
        chunks = self.spool.replay(final_pos)
        offset = chunks[0].position if chunks else self.spool.position
        self.session.connection_opened(offset / SAMPLE_RATE, self.session.request_id)
        self._last_send = self.reactor.seconds()
        self.log.info("deepgram: open call={call_id} ext={ext} request_id={request_id} "
                      "replaying={replay_ms} ms from {offset:.2f} s",
                      call_id=self.call_id, ext=self.extension, request_id=self.session.request_id,
                      replay_ms=sum(len(c.samples) for c in chunks) * 1000 // SAMPLE_RATE,
                      offset=offset / SAMPLE_RATE)
        for c in chunks:
            if reconnect:
                self.replayed_ms += len(c.samples) * 1000 // SAMPLE_RATE
            self._send_chunk(c)
        self.spool.trim()
        self._arm_keepalive()
        if self._finishing:
            tail = self.spool.flush(SAMPLE_RATE * FRAME_MS // 1000)
            if tail is not None:
                self._send_chunk(tail)
            self._send_finish()
        if self._down:
            self._down = False
            self._emit(EngineUp(ENGINE, self.reactor.seconds()))

    # -- receiving ---------------------------------------------------------

    def ws_message(self, proto: DeepgramClientProtocol, payload: bytes, is_binary: bool) -> None:
        """One server message; never raises."""
        if proto is not self._proto:
            return
        if is_binary:
            self.session.unknown += 1
            return
        try:
            events = self.session.receive(payload, self.reactor.seconds())
        except Exception:
            self.log.failure("deepgram: bug parsing a message call={call_id}", call_id=self.call_id)
            return
        for ev in events:
            if isinstance(ev, Transcript) and ev.is_final:
                self.spool.release_before(int(round(self.session.final_end * SAMPLE_RATE)))
            self._emit(ev)

    def ws_close(self, proto: DeepgramClientProtocol, was_clean: bool, code: Optional[int],
                 reason: Optional[str]) -> None:
        """The connection ended: a normal end, a refused upgrade, or a drop."""
        if proto is not self._proto:
            return
        was_open = self._open
        self._proto = None
        self._open = False
        self._cancel("_timeout_call")
        self._cancel("_keepalive_call")
        if self.state in (State.CLOSED, State.FAILED):
            return
        if was_open and self._close_sent and code == 1000:
            self.log.info("deepgram: closed call={call_id} ext={ext}", call_id=self.call_id, ext=self.extension)
            self._shutdown()
            return
        err: EngineError
        if not was_open:
            status = _upgrade_status(proto)
            headers = getattr(proto, "http_headers", None) or {}
            if status is not None:
                err = classify_upgrade_failure(status, headers.get("dg-error"), headers.get("dg-request-id"),
                                               self.settings.api_key)
            elif self._timed_out:
                err = EngineUnavailable(ENGINE, f"upgrade timed out after {self.settings.connect_timeout_s} s")
            else:
                err = EngineUnavailable(ENGINE, f"connection failed: {reason}")
        else:
            err = classify_close(code, reason, self.session.last_error or "")
        self._failed(err)

    # -- failures ----------------------------------------------------------

    def _failed(self, err: EngineError) -> None:
        now = self.reactor.seconds()
        self._timed_out = False
        if not err.retryable:
            self.state = State.FAILED
            self._cancel_timers()
            self.log.error("deepgram: giving up call={call_id} ext={ext}: {error}",
                           call_id=self.call_id, ext=self.extension, error=err.message)
            self._emit(EngineDown(err, now), force=True)
            self._fire_waiters()
            return
        self._failures += 1
        delay = backoff_delay(self._failures, self.settings.backoff_initial_s, self.settings.backoff_max_s,
                              self.settings.backoff_factor, self.random)
        self.state = State.BACKOFF
        self._retry_call = self.reactor.callLater(delay, self._connect)
        self.log.warn("deepgram: {error}; retry {attempt} in {delay:.2f} s call={call_id} ext={ext}",
                      error=err.message, attempt=self._failures, delay=delay,
                      call_id=self.call_id, ext=self.extension)
        if not self._down:
            self._down = True
            self._emit(EngineDown(err, now))

    # -- sending -----------------------------------------------------------

    def _send_chunk(self, c: Chunk) -> None:
        data = little_endian_bytes(c.samples)
        if not data or self._proto is None:
            return
        self._proto.sendMessage(data, isBinary=True)
        c.sent = True
        self.sent_bytes += len(data)
        self.messages_out += 1
        self._last_send = self.reactor.seconds()

    def _send_text(self, text: str) -> None:
        if self._proto is None:
            return
        self._proto.sendMessage(text.encode("utf-8"), isBinary=False)
        self.messages_out += 1
        self._last_send = self.reactor.seconds()

    def _send_finish(self) -> None:
        self._send_text(FINALIZE)
        self._send_text(CLOSE_STREAM)
        self._close_sent = True
        self._cancel("_keepalive_call")

    def _arm_keepalive(self) -> None:
        if self._keepalive_call is not None or not self._open or self._close_sent:
            return
        due = self._last_send + self.settings.keepalive_s - self.reactor.seconds()
        self._keepalive_call = self.reactor.callLater(max(0.0, due), self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        self._keepalive_call = None
        if not self._open or self._close_sent:
            return
        # Re-armed from the last send, so a steady audio stream costs one
        # timer per keepalive_s, not one reset per chunk.
        if self.reactor.seconds() - self._last_send >= self.settings.keepalive_s * 0.999:
            self._send_text(KEEPALIVE)
            self.keepalives += 1
        self._arm_keepalive()

    # -- ending ------------------------------------------------------------

    def _finish_timed_out(self) -> None:
        self._finish_call = None
        self.log.warn("deepgram: finish timed out after {timeout} s call={call_id} ext={ext}",
                      timeout=self.settings.finish_timeout_s, call_id=self.call_id, ext=self.extension)
        self._shutdown()

    def _shutdown(self) -> None:
        """Become ``closed``: cancel everything, drop any socket, fire waiters."""
        self.state = State.CLOSED
        self._cancel_timers()
        proto, self._proto = self._proto, None
        self._open = False
        if proto is not None:
            proto.dropConnection(abort=True)
        elif self._connector is not None and getattr(self._connector, "state", None) == "connecting":
            try:
                self._connector.stopConnecting()
            except Exception:
                pass
        self._fire_waiters()

    def _fire_waiters(self) -> None:
        self._cancel("_finish_call")
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def _cancel(self, name: str) -> None:
        call: Optional[IDelayedCall] = getattr(self, name)
        setattr(self, name, None)
        if call is not None and call.active():
            call.cancel()

    def _cancel_timers(self) -> None:
        for name in ("_timeout_call", "_retry_call", "_keepalive_call", "_finish_call"):
            self._cancel(name)

    def _emit(self, ev: ASREvent, force: bool = False) -> None:
        if self.state is State.CLOSED and not force:
            return
        try:
            self.on_event(ev)
        except Exception:
            self.log.failure("deepgram: on_event raised call={call_id} ext={ext}",
                             call_id=self.call_id, ext=self.extension)


def deepgram_asr_factory(reactor: Reactor, settings: DeepgramSettings) -> ASRFactory:
    """
    An :data:`~xlbridge.engines.base.ASRFactory` making one
    :class:`DeepgramASR` per caller.

    :raises ConfigError: if ``settings`` has no API key.
    """
    if not settings.api_key:
        raise ConfigError("deepgram-api-key", "no Deepgram API key (set DEEPGRAM_API_KEY)")

    def make(language: str, on_event: Callable[[ASREvent], None], call_id: str, extension: str) -> ASR:
        return DeepgramASR(reactor, settings, language, on_event, call_id=call_id, extension=extension)

    return make
