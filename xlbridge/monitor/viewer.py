"""
``/ws``, one viewer's end: the WebSocket server protocol and its factory,
which check the viewer's token, watch its send buffer and forward
everything else to the hub (:class:`~xlbridge.monitor.live.LiveHub`).

Kept apart from :mod:`xlbridge.monitor.live` so the hub, which decides
what every viewer is sent, knows nothing of Autobahn or sockets: it talks
to :class:`LiveClient` (this protocol, or a test fake) and the socket side
talks to :class:`ViewerHub`.  Neither module needs the other's classes, so
they do not import each other.

Design notes:

- **Auth** happens in ``onConnect``: no valid token (``?token=`` or a bearer
  header), no upgrade (401 or 403, counted by the guard).  The token's role
  is kept for the connection (``may_listen``): only a viewer who came with
  the listen token may listen in (:mod:`xlbridge.monitor.auth`).
- **Backpressure.**  Each viewer's messages wait in its
  :class:`~xlbridge.monitor.outbox.Outbox` (at most the hub's
  ``max_client_bytes``) and are drained into the transport only while the
  transport has not paused us: we register as its push producer
  (:class:`Backpressure`), so Twisted tells us when its send buffer is
  full.  A transport that cannot take a producer is refused (close 1011):
  without flow control a stuck browser would grow the send buffer without
  bound.
- **Log.**  Autobahn's own lines (six debug lines per connection, the
  raw upgrade request with its ``?token=`` among them, and one info and
  one warning per refused handshake) stay out of the log: its logger
  here is txaio's at "error".  A refused handshake is logged once per
  address and reason (:class:`~xlbridge.logthrottle.OncePerKey`); the
  guard counts every one (``xlbridge_monitor_auth_refused_total``).
- **Kernel buffer.**  The socket's send buffer is cut to
  :data:`VIEWER_SNDBUF`, so the outbox's bound, not the kernel's, decides
  how late a slow viewer's audio can get.
"""

from __future__ import annotations

import socket
from typing import Any, Optional, Protocol

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import PreparedMessage
import txaio
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from xlbridge.logthrottle import OncePerKey

from xlbridge.monitor.auth import Role, TokenGuard, Verdict
from xlbridge.monitor.outbox import Outbox
from xlbridge.monitor.taps import TapKey

__all__ = ["VIEWER_SNDBUF", "Backpressure", "LiveClient", "LiveFactory", "LiveProtocol", "ViewerHub"]


class LiveClient(Protocol):
    """
    What the hub needs of a viewer (the WebSocket protocol, or a test fake).
    """

    outbox: Outbox[PreparedMessage]
    listens: set[TapKey]
    #: came with the listen token: may listen in
    may_listen: bool

    def send_prepared(self, message: PreparedMessage) -> None: ...


class ViewerHub(Protocol):
    """
    What a viewer's socket needs of the hub
    (:class:`~xlbridge.monitor.live.LiveHub`).
    """

    #: checks WebSocket handshakes
    guard: TokenGuard
    #: bound of each viewer's outbox
    max_client_bytes: int

    def join(self, client: LiveClient) -> None: ...

    def leave(self, client: LiveClient) -> None: ...

    def message(self, client: LiveClient, payload: bytes, is_binary: bool) -> None: ...

    def drain(self, client: LiveClient) -> None: ...


@implementer(IPushProducer)
class Backpressure:
    """
    Registered with a viewer's transport: Twisted pauses it when the send
    buffer is full and resumes it when drained.
    """

    def __init__(self, client: "LiveProtocol") -> None:
        self.client = client

    def pauseProducing(self) -> None:
        self.client.outbox.paused = True

    def resumeProducing(self) -> None:
        self.client.outbox.paused = False
        self.client.hub.drain(self.client)

    def stopProducing(self) -> None:
        self.client.outbox.paused = True
        self.client.outbox.clear()


#: Kernel send buffer per viewer socket.  The default (2-3 MB on Linux) sits
#: in front of the per-viewer outbox, so a slow viewer would hear audio 10 s
#: late before the outbox's bound dropped anything; 64 KiB is ~2 s of listen
#: audio.
VIEWER_SNDBUF = 64 * 1024


class LiveProtocol(WebSocketServerProtocol):
    """
    One viewer; forwards everything to the hub.
    """

    #: Autobahn's logger: only its errors (see the module notes).
    log = txaio.make_logger(level="error")  # type: ignore[attr-defined]
    #: ours
    own_log = Logger()
    factory: "LiveFactory"

    def __init__(self) -> None:
        super().__init__()
        self.listens: set[TapKey] = set()
        self.outbox: Outbox[PreparedMessage] = Outbox(256 * 1024)
        self.may_listen = False

    @property
    def hub(self) -> ViewerHub:
        return self.factory.hub

    def onConnect(self, request: ConnectionRequest) -> None:
        verdict, role = self.hub.guard.authorize_handshake(request.headers, request.params)
        if verdict is not Verdict.OK:
            reason = "no token" if verdict is Verdict.MISSING else "invalid token"
            self.factory.refused(str(request.peer), reason)
            if verdict is Verdict.MISSING:
                raise ConnectionDeny(401, "token required")
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, "invalid token")
        self.may_listen = role is Role.LISTEN

    def _limit_kernel_buffer(self, transport: Any) -> None:
        try:
            handle = transport.getHandle()
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, VIEWER_SNDBUF)
        except Exception as e:  # not a socket (memory transports in tests)
            self.own_log.debug("cannot limit the viewer's send buffer: {error}", error=e)

    def onOpen(self) -> None:
        self.outbox = Outbox(self.hub.max_client_bytes)
        transport: Any = self.transport
        self._limit_kernel_buffer(transport)
        try:
            # The HTTP channel registered itself before Autobahn took the
            # transport over; from now on the send buffer is ours to watch.
            transport.unregisterProducer()
            transport.registerProducer(Backpressure(self), True)
        except Exception:
            # Without flow control a stuck browser would grow the send
            # buffer without bound: refuse to serve it.
            self.own_log.failure("cannot watch the viewer's send buffer; closing")
            self.sendClose(1011, "flow control unavailable")
            return
        self.hub.join(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            self.hub.message(self, payload, isBinary)
        except Exception:
            self.own_log.failure("bad monitor request")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.hub.leave(self)

    def send_prepared(self, message: PreparedMessage) -> None:
        if self.state == WebSocketServerProtocol.STATE_OPEN:
            self.sendPreparedMessage(message)


class LiveFactory(WebSocketServerFactory):
    """
    Builds :class:`LiveProtocol` for the hub.

    Client messages are small, so frames and messages are capped at 64 KiB.
    The open-handshake timeout is off: under ``WebSocketResource`` twisted.web
    has already read the whole upgrade request, so the handshake completes
    (or fails) at once, and Autobahn's timer would only outlive it on
    txaio's global clock.
    """

    protocol = LiveProtocol  # type: ignore[assignment]
    #: Autobahn's logger (its options dump is a debug line): errors only.
    log = txaio.make_logger(level="error")  # type: ignore[attr-defined]
    own_log = Logger()

    def __init__(self, hub: ViewerHub, reactor: IReactorTime) -> None:
        super().__init__(reactor=reactor)
        self.hub = hub
        self._refusals = OncePerKey(self.own_log, reactor)
        self.setProtocolOptions(
            maxFramePayloadSize=65536, maxMessagePayloadSize=65536, openHandshakeTimeout=0
        )

    def refused(self, peer: str, reason: str) -> None:
        """
        A viewer's handshake was refused: logged once per address and
        reason (``peer`` is Autobahn's ``tcp4:HOST:PORT``).
        """
        host = peer.rsplit(":", 1)[0].partition(":")[2] or peer
        self._refusals.warn(
            (host, reason),
            "monitor: refused a live connection from {peer}: {reason} (further ones only counted)",
            "monitor: refused {count} more live connections (not logged one by one)",
            peer=host, reason=reason,
        )
