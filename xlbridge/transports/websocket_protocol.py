"""
The Autobahn side of a chan_websocket leg: thin protocols and factories
that forward every callback to a
:class:`~xlbridge.transports.websocket.WebSocketEndpoint`, plus the socket
settings that keep our own send buffers from hiding audio.

Both directions of connection:

- :func:`client_factory`: xlbridge dials Asterisk's
  ``ws://host:port/media/<connection_id>`` (ARI externalMedia with
  ``connection_type=server``), offering the ``media`` subprotocol.
- :func:`server_factory`: Asterisk dials xlbridge (websocket_client.conf,
  ``Dial(WebSocket/<id>/c(slin16))``); any path is accepted, ``media`` is
  chosen when offered, HTTP Basic credentials are checked when configured,
  and a second connection while one is live is refused with 409.

Design notes:

- **No PONG of our own.**  A PONG the peer did not ask for crashes some
  Asterisk builds (PROTOCOLS.md 10.5).  Autobahn only sends PONG in answer
  to a PING (``onPing``), and its auto-ping sends PINGs; auto-ping is off
  here anyway, with every other Autobahn timer, because those run on
  txaio's global reactor, not the injected one.  The endpoint times the
  close handshake itself.
- **Bounded buffers.**  The endpoint sends ahead to Asterisk's queue; bytes
  that wait on our side of the socket are not in that queue yet.  So each
  connection registers a push producer (Twisted pauses it while its own
  buffer holds more than :data:`TWISTED_BUFFER` bytes), shrinks the
  kernel's send buffer to :data:`KERNEL_SNDBUF` and sets TCP_NODELAY, and
  :func:`unsent_bytes` reads how much the kernel has not sent yet (Linux
  ``SIOCOUTQNSD``, :mod:`xlbridge.transports.backlog`), so the endpoint
  can count it as queued.  Not ``TIOCOUTQ``: that also counts bytes sent
  and not yet acknowledged, and a peer that sends nothing back (a silent
  caller) acknowledges late (delayed ACK, up to 40 ms), which would read as
  a queue that is not there.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any, Optional, Protocol

import txaio
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest, ConnectionResponse
from twisted.internet.interfaces import IAddress, IConnector
from twisted.python.failure import Failure

from xlbridge.transports.backlog import SendBacklog, kernel_unsent, tune

#: The subprotocol chan_websocket speaks.
SUBPROTOCOL = "media"
#: Bytes Twisted may hold for a connection before it pauses us (about two
#: slin16 frames): more waiting there would be delay the model cannot see.
TWISTED_BUFFER = 1280
#: Kernel send buffer asked for (Linux doubles it): ~0.25 s of slin16.
KERNEL_SNDBUF = 4096

#: Largest message (and frame) we take, in bytes: Asterisk sends one
#: optimal_frame_size frame (640 B of slin16) per message, and control
#: messages of a few hundred bytes.  Without a bound Autobahn would buffer
#: whatever a peer sends (a 64 MB message grew the process by 70 MB).
MAX_INBOUND = 256 * 1024

_OPTIONS: dict[str, Any] = dict(
    openHandshakeTimeout=0, closeHandshakeTimeout=0, autoPingInterval=0,
    maxFramePayloadSize=MAX_INBOUND, maxMessagePayloadSize=MAX_INBOUND,
)


class MediaEndpoint(Protocol):
    """
    What the protocols forward to (a
    :class:`~xlbridge.transports.websocket.WebSocketEndpoint`); each method
    gets the protocol it comes from, so a stale connection can be told
    apart.  ``local`` is where the server factory listens.
    """

    local: Optional[str]

    def ws_request(self, proto: Any, request: ConnectionRequest) -> Optional[str]: ...

    def ws_connect_failed(self, reason: Failure) -> None: ...

    def ws_open(self, proto: Any) -> None: ...

    def ws_message(self, proto: Any, payload: bytes, is_binary: bool) -> None: ...

    def ws_close(self, proto: Any, was_clean: bool, code: Optional[int], reason: Optional[str]) -> None: ...


def unsent_bytes(transport: Any) -> int:
    """
    Bytes the kernel holds for ``transport`` and has not sent yet; 0 where
    that cannot be read.
    """
    return kernel_unsent(transport)


class _Forwarding:
    """
    What both directions share: Autobahn callbacks -> the endpoint.
    Autobahn's own logger is txaio's at "error": its per-connection debug
    and info lines (and a warning for each dropped connection) would
    flood the log when a peer misbehaves; the endpoint logs what matters.
    """

    log = txaio.make_logger(level="error")  # type: ignore[attr-defined]
    endpoint: MediaEndpoint
    backpressure: SendBacklog

    def onOpen(self) -> None:
        # TCP_NODELAY, a small kernel send buffer, and Twisted's buffer
        # bounded (it pauses us past TWISTED_BUFFER); skipped where the
        # transport cannot (memory transports in tests).
        tune(self.transport, KERNEL_SNDBUF)  # type: ignore[attr-defined]
        self.backpressure = SendBacklog(self.transport, TWISTED_BUFFER)  # type: ignore[attr-defined]
        self.endpoint.ws_open(self)  # type: ignore[arg-type]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.endpoint.ws_message(self, payload, isBinary)  # type: ignore[arg-type]

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.endpoint.ws_close(self, wasClean, code, reason)  # type: ignore[arg-type]


class MediaClientProtocol(_Forwarding, WebSocketClientProtocol):  # type: ignore[misc]
    """xlbridge connected to Asterisk's ``/media/<id>``."""

    def onConnect(self, response: ConnectionResponse) -> None:
        pass


class MediaServerProtocol(_Forwarding, WebSocketServerProtocol):  # type: ignore[misc]
    """Asterisk connected to xlbridge."""

    def onConnect(self, request: ConnectionRequest) -> Optional[str]:
        return self.endpoint.ws_request(self, request)


class MediaClientFactory(WebSocketClientFactory):  # type: ignore[misc]
    protocol = MediaClientProtocol
    noisy = False
    log = txaio.make_logger(level="error")  # type: ignore[attr-defined]

    def __init__(self, endpoint: MediaEndpoint, url: str, reactor: Any) -> None:
        super().__init__(url, protocols=[SUBPROTOCOL], useragent="xlbridge", reactor=reactor)
        self.setProtocolOptions(serverConnectionDropTimeout=0, **_OPTIONS)
        self.endpoint = endpoint

    def buildProtocol(self, addr: Optional[IAddress]) -> MediaClientProtocol:
        proto = super().buildProtocol(addr)
        assert isinstance(proto, MediaClientProtocol)
        proto.endpoint = self.endpoint
        return proto

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        self.endpoint.ws_connect_failed(reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        """Handled by the protocol's ``onClose``."""


class MediaServerFactory(WebSocketServerFactory):  # type: ignore[misc]
    protocol = MediaServerProtocol
    noisy = False
    log = txaio.make_logger(level="error")  # type: ignore[attr-defined]

    def __init__(self, endpoint: MediaEndpoint, reactor: Any) -> None:
        super().__init__(reactor=reactor)
        self.setProtocolOptions(**_OPTIONS)
        self.endpoint = endpoint

    @property
    def local(self) -> Optional[str]:
        """``host:port`` listened on; a listener service sets it."""
        return self.endpoint.local

    @local.setter
    def local(self, value: Optional[str]) -> None:
        self.endpoint.local = value

    def buildProtocol(self, addr: Optional[IAddress]) -> MediaServerProtocol:
        proto = super().buildProtocol(addr)
        assert isinstance(proto, MediaServerProtocol)
        proto.endpoint = self.endpoint
        return proto


def client_factory(endpoint: MediaEndpoint, url: str, reactor: Any) -> WebSocketClientFactory:
    """
    A factory that connects ``endpoint`` to Asterisk's media URL ``url``
    (``ws://host:port/media/<connection_id>``); connect it with
    ``reactor.connectTCP(factory.host, factory.port, factory)``.
    """
    return MediaClientFactory(endpoint, url, reactor)


def server_factory(endpoint: MediaEndpoint, reactor: Any) -> WebSocketServerFactory:
    """
    A factory for the port Asterisk dials (``listenTCP(port, factory)``).
    """
    return MediaServerFactory(endpoint, reactor)


def check_request(request: ConnectionRequest, credentials: Optional[tuple[str, str]]) -> Optional[str]:
    """
    Accept Asterisk's upgrade ``request``: the subprotocol to answer with
    (``media`` if offered, else none).

    :raises ConnectionDeny: 401 when ``credentials`` (user, password) are
        set and the request's Basic ``Authorization`` does not match.
    """
    if credentials is not None:
        user, password = credentials
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        try:
            given = base64.b64decode(token.strip(), validate=True)
        except (binascii.Error, ValueError):
            given = b""
        want = f"{user}:{password}".encode("utf-8")
        if scheme.lower() != "basic" or not hmac.compare_digest(given, want):
            raise ConnectionDeny(401, "Unauthorized")
    return SUBPROTOCOL if SUBPROTOCOL in (request.protocols or []) else None
