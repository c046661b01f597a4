"""
Deepgram live ASR, the connection half of
:class:`~xlbridge.engines.deepgram.asr.DeepgramASR`: the Autobahn protocol and
factory (one factory per attempt), the logger that keeps the key out of
Autobahn's debug lines, and :class:`DeepgramConnection`, the mixin that
connects, times out, classifies failures, backs off, reconnects and shuts
down.

Split from :mod:`xlbridge.engines.deepgram.asr` (which re-exports the public
names) so that module holds only the ASR side: feeding and finishing the
stream, the open socket's replay, keepalives and incoming results.

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
* **Secrets.**  The key only travels in the ``Authorization`` header.
  Autobahn logs the whole handshake request at debug level, so each
  protocol gets a logger that scrubs the key (:class:`_ScrubbingLog`).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Callable, Optional, cast
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.base import (
    ASREvent,
    EngineDown,
    EngineError,
    EngineRequestError,
    EngineUnavailable,
    deliver,
    redact,
)
from xlbridge.engines.deepgram.wire import (
    ENGINE,
    DeepgramSession,
    DeepgramSettings,
    backoff_delay,
    classify_close,
    classify_upgrade_failure,
)

if TYPE_CHECKING:
    from xlbridge.engines.deepgram.asr import DeepgramASR

#: A reactor providing IReactorTCP, IReactorSSL and IReactorTime.
Reactor = Any


class State(enum.StrEnum):
    """Connection state of one :class:`~xlbridge.engines.deepgram.asr.DeepgramASR`, for the monitor."""

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
    Forwards Autobahn's callbacks to the
    :class:`~xlbridge.engines.deepgram.asr.DeepgramASR` that owns the
    connection; holds no logic of its own.
    """

    owner: "DeepgramASR"

    def onConnect(self, response: Any) -> None:
        self.owner.ws_connect(self, response)

    def onOpen(self) -> None:
        # Audio goes out as one small message per 20 ms packet: without
        # TCP_NODELAY, Nagle's algorithm held back about a fifth of them
        # (measured in bench/pipeline_latency.py) until the previous one was
        # acknowledged.  TLS transports pass it through to the socket.
        set_nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if set_nodelay is not None:
            try:
                set_nodelay(True)
            except OSError as e:
                self.owner.log.warn("deepgram: cannot set TCP_NODELAY: {error}", error=e)
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


class DeepgramConnection:
    """
    The connection lifecycle of a :class:`~xlbridge.engines.deepgram.asr.DeepgramASR`
    (its only user): connect, time out, turn a refused upgrade or a drop
    into an error, back off and reconnect, or give up; shut down.

    A mixin: it has no ``__init__``; every attribute below is set by
    ``DeepgramASR.__init__``.
    """

    log: Logger
    reactor: Reactor
    settings: DeepgramSettings
    url: str
    session: DeepgramSession
    on_event: Callable[[ASREvent], None]
    call_id: str
    extension: str
    random: Callable[[], float]
    state: State
    connect_attempts: int
    reconnects: int
    _attempt: int
    _failures: int
    _proto: Optional[DeepgramClientProtocol]
    _connector: Any
    _open: bool
    _down: bool
    _timed_out: bool
    _close_sent: bool
    _timeout_call: Optional[IDelayedCall]
    _retry_call: Optional[IDelayedCall]
    _keepalive_call: Optional[IDelayedCall]
    _finish_call: Optional[IDelayedCall]
    _waiters: list[Deferred[None]]

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
        # A DeepgramConnection is always the base of a DeepgramASR.
        owner = cast("DeepgramASR", self)
        factory = _DeepgramClientFactory(owner, attempt, self.url, self.settings.api_key, self.reactor)
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

    # -- the connection ends -----------------------------------------------

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
        # After CloseStream, Deepgram's last message is Metadata: once it has
        # arrived nothing is left to lose, so even an unclean end (a peer
        # that drops TCP before the close handshake finishes) is the end.
        if was_open and self._close_sent and (code == 1000 or self.session.metadata is not None):
            self.log.info("deepgram: closed call={call_id} ext={ext} code={code}",
                          call_id=self.call_id, ext=self.extension, code=code)
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

    # -- ending ------------------------------------------------------------

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
        deliver(self.on_event, ev, self.log, "deepgram", self.call_id, self.extension)
