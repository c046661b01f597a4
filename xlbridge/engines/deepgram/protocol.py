"""
Deepgram live ASR, the Autobahn side: the WebSocket client protocol and its
factory, which hold no logic and forward every callback to the connection
that made them.

Kept apart from :mod:`xlbridge.engines.deepgram.connection` so that the
connection's lifecycle reads without Autobahn's class machinery in the way,
and so that what the socket tells the connection is one small interface,
:class:`SocketOwner`: this module never imports the connection, so the two
do not import each other.

Design notes
------------

* **One factory per attempt.**  Each attempt gets a fresh
  :class:`DeepgramClientFactory` carrying its attempt number, so a callback
  that arrives late, from an attempt already given up (timed out, closed),
  is told apart from the current one.
* **Timers.**  Autobahn's opening-handshake timeout and auto-ping are off:
  they would run on txaio's global reactor.  The connection times the
  attempt (``connect_timeout_s``) on the injected reactor.
* **Latency.**  ``TCP_NODELAY`` is set once the socket opens: audio goes
  out as one small message per 20 ms packet, and Nagle's algorithm held
  back about a fifth of them.
* **Secrets.**  The key only travels in the ``Authorization`` header.
  Autobahn logs the whole handshake request at debug level, so each
  protocol gets a logger that scrubs the key (:class:`_ScrubbingLog`).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.types import ConnectionResponse
from twisted.internet.interfaces import IAddress, IConnector, IReactorSSL, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.base import redact

__all__ = [
    "DeepgramClientFactory",
    "DeepgramClientProtocol",
    "DialError",
    "IDeepgramReactor",
    "SocketOwner",
    "dial",
    "upgrade_status",
]


class IDeepgramReactor(IReactorTCP, IReactorSSL, IReactorTime):
    """
    What a Deepgram client needs of its reactor: a TCP connect (``ws://``),
    a TLS connect (``wss://``) and the clock for its timers.

    For type hints only, as treq's reactor type: reactors do not declare it,
    and any reactor providing the three interfaces fits.
    """


class SocketOwner(Protocol):
    """
    What :class:`DeepgramClientProtocol` and :class:`DeepgramClientFactory`
    report to the object that made them (a
    :class:`~xlbridge.engines.deepgram.connection.DeepgramConnection`).

    ``attempt`` is the number the factory was made with; ``proto`` is the
    protocol reporting, so the owner can ignore a superseded one.
    """

    log: Logger

    def ws_built(self, attempt: int, proto: DeepgramClientProtocol) -> None:
        """The TCP (and TLS) connection of ``attempt`` exists."""

    def ws_connect_failed(self, attempt: int, reason: Failure) -> None:
        """TCP connect failed (refused, unreachable, timed out, cancelled)."""

    def ws_connect(self, proto: DeepgramClientProtocol, response: ConnectionResponse) -> None:
        """The server accepted the upgrade (101)."""

    def ws_open(self, proto: DeepgramClientProtocol) -> None:
        """The WebSocket is open."""

    def ws_message(self, proto: DeepgramClientProtocol, payload: bytes, is_binary: bool) -> None:
        """One server message."""

    def ws_close(self, proto: DeepgramClientProtocol, was_clean: bool, code: Optional[int],
                 reason: Optional[str]) -> None:
        """The connection ended: a normal end, a refused upgrade, or a drop."""

    def ws_pong(self, proto: DeepgramClientProtocol) -> None:
        """A pong: the server answered our liveness ping."""


def _disabled(f: Any) -> bool:
    """Whether ``f`` is txaio's no-op, put in place of a disabled level."""
    return getattr(f, "__name__", None) == "_no_op" and getattr(f, "__module__", None) == "txaio.tx"


class _ScrubbingLog:
    """
    Wraps an Autobahn/txaio logger and replaces the secret in every string
    argument before it is logged.
    """

    def __init__(self, inner: Any, secret: str) -> None:
        self._inner = inner  # txaio's logger: any attribute may be asked for
        self._secret = secret
        self._shown = redact(secret)

    def _clean(self, v: object) -> object:
        if isinstance(v, str) and self._secret in v:
            return v.replace(self._secret, self._shown)
        if isinstance(v, bytes) and self._secret.encode() in v:
            return v.replace(self._secret.encode(), self._shown.encode())
        return v

    def __getattr__(self, name: str) -> Any:
        f = getattr(self._inner, name)
        if not callable(f) or not self._secret or _disabled(f):
            # A level txaio has switched off is its shared no-op: wrapping
            # it would cost a closure and a scrub of every argument on each
            # audio frame Autobahn sends (it logs at debug per sendData).
            return f

        def call(*args: object, **kwargs: object) -> Any:
            return f(*(self._clean(a) for a in args), **{k: self._clean(v) for k, v in kwargs.items()})

        return call


class DeepgramClientProtocol(WebSocketClientProtocol):
    """
    Forwards Autobahn's callbacks to the :class:`SocketOwner` (the
    connection) that made it; holds no logic of its own.
    """

    connection: SocketOwner

    def onConnect(self, response: ConnectionResponse) -> None:
        self.connection.ws_connect(self, response)

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
                self.connection.log.warn("deepgram: cannot set TCP_NODELAY: {error}", error=e)
        self.connection.ws_open(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.connection.ws_message(self, payload, isBinary)

    def onPong(self, payload: bytes) -> None:
        self.connection.ws_pong(self)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.connection.ws_close(self, wasClean, code, reason)


class DeepgramClientFactory(WebSocketClientFactory):
    """One factory per connection attempt, so late callbacks can be told apart."""

    protocol = DeepgramClientProtocol
    noisy = False  # one factory per attempt: no "Starting factory" lines

    def __init__(self, connection: SocketOwner, attempt: int, url: str, api_key: str,
                 reactor: IDeepgramReactor) -> None:
        super().__init__(url, headers={"Authorization": f"Token {api_key}"},
                         useragent="xlbridge", reactor=reactor)
        # Our own timers (connect_timeout_s, finish_timeout_s) run on the
        # injected reactor; Autobahn's would use txaio's global one.
        self.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0)
        self.connection = connection
        self.attempt = attempt
        self._secret = api_key

    def buildProtocol(self, addr: Optional[IAddress]) -> DeepgramClientProtocol:
        p = super().buildProtocol(addr)
        assert isinstance(p, DeepgramClientProtocol)
        p.connection = self.connection
        p.log = _ScrubbingLog(p.log, self._secret)
        self.connection.ws_built(self.attempt, p)
        return p

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.connection.ws_connect_failed(self.attempt, reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        """Handled by the protocol's ``onClose``."""


def upgrade_status(proto: DeepgramClientProtocol) -> Optional[int]:
    """The HTTP status of a refused upgrade, or ``None``."""
    parts = str(getattr(proto, "http_status_line", "") or "").split()
    if len(parts) < 2:
        return None
    try:
        status = int(parts[1])
    except ValueError:
        return None
    return None if status == 101 else status


class DialError(Exception):
    """The connect could not even start (no TLS support, a bad host name): a retry cannot help."""


def dial(reactor: IDeepgramReactor, url: str, factory: DeepgramClientFactory, timeout: float) -> IConnector:
    """
    Open the TCP connection for ``factory``: plain for ``ws://``, TLS with
    the host name verified for ``wss://`` (port 443 or 80 unless given).

    :raises DialError: naming ``host:port`` if the reactor refused at once.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    try:
        if secure:
            from twisted.internet.ssl import optionsForClientTLS

            # IReactorSSL still names the legacy ClientContextFactory;
            # every reactor accepts an IOpenSSLClientConnectionCreator.
            return reactor.connectSSL(host, port, factory, optionsForClientTLS(host),  # type: ignore[arg-type]
                                      timeout=timeout, bindAddress=None)
        return reactor.connectTCP(host, port, factory, timeout=timeout)
    except Exception as e:
        raise DialError(f"cannot connect to {host}:{port}: {e}") from e
