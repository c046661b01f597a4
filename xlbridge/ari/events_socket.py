"""
The socket of the ARI events connection: its URL, the Autobahn client
factory and protocol, and closing it.

:class:`~xlbridge.ari.events.ARIEvents` owns the connection (attempts,
backoff, liveness, refusals: see its module's notes); the protocol here
only forwards Autobahn's callbacks to the factory's ``owner``, a
:class:`SocketOwner`.

* **Credentials** go in the ``Authorization`` header (Basic), not the URL,
  so they never show in logs of the URL.
* **Every message** is checked by :func:`~xlbridge.ari.event_checks.parse_event`
  (a BINARY message is dropped too: ARI sends only TEXT) and handed to the
  owner as an event or as a :class:`~xlbridge.ari.event_checks.Rejected`.
* **Any byte** from the peer (a pong, an event, part of one) is reported
  before Autobahn parses it: it proves the peer alive (the owner's
  liveness check).
* **Clock.**  Autobahn's own timers (opening and closing handshake, server
  drop, auto-ping) are off, since they would run on txaio's global
  reactor; the owner times the opening on its injected clock, and at stop
  writes a close frame and drops TCP (:func:`close_socket`).
* **Quiet.**  Autobahn's logger is txaio's at "error": no per-frame debug
  lines, and no "failing WebSocket opening handshake" (info) or "dropping
  connection ...: REASON" (warn) per failed attempt, since the owner says
  why, once, with the same reason.
"""

from __future__ import annotations

import base64
from typing import Any, Optional, Protocol
from urllib.parse import urlencode, urlsplit

import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint

from xlbridge.ari.event_checks import Rejected, parse_event
from xlbridge.ari.reactor import IHTTPReactor

__all__ = ["EventsProtocol", "SocketOwner", "close_socket", "events_endpoint", "events_factory", "events_url"]


class SocketOwner(Protocol):
    """
    What :class:`EventsProtocol` calls on its factory's ``owner`` (an
    :class:`~xlbridge.ari.events.ARIEvents`).
    """

    def _received(self, proto: EventsProtocol) -> None:
        """Bytes arrived on ``proto`` (any, before they are parsed)."""

    def _opened(self, proto: EventsProtocol) -> None:
        """The upgrade succeeded: events may follow."""

    def _event(self, event: dict[str, Any]) -> None:
        """An event that passed the checks."""

    def _malformed(self, rejected: Rejected, payload: bytes) -> None:
        """A message dropped by the checks."""

    def _closed(self, proto: EventsProtocol, code: Optional[int], reason: Optional[str]) -> None:
        """``proto`` closed (or its upgrade failed)."""


class EventsProtocol(WebSocketClientProtocol):
    """
    Forwards Autobahn's callbacks to ``self.factory.owner`` (see the
    module's notes).
    """

    log = txaio.make_logger(level="error")  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        self.factory.owner._received(self)
        super().dataReceived(data)

    def onOpen(self) -> None:
        self.factory.owner._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        event = Rejected("binary", "a binary message") if isBinary else parse_event(payload)
        if isinstance(event, Rejected):
            self.factory.owner._malformed(event, payload)
        else:
            self.factory.owner._event(event)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.factory.owner._closed(self, code, reason)


def events_url(base: str, app: str) -> str:
    """
    ``ws://host:port/ari/events?app=...`` for an ``http://host:port`` base.
    """
    parts = urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/ari/events?{urlencode({'app': app})}"


def events_factory(url: str, user: str, password: str, owner: SocketOwner) -> WebSocketClientFactory:
    """
    The client factory for ``url`` (from :func:`events_url`): Basic
    credentials in a header, :class:`EventsProtocol` reporting to ``owner``,
    Autobahn's timers off.
    """
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    factory = WebSocketClientFactory(url, headers={"Authorization": f"Basic {token}"})
    factory.protocol = EventsProtocol
    factory.owner = owner  # type: ignore[attr-defined]
    factory.noisy = False  # no "Starting factory" per attempt
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0)
    return factory


def events_endpoint(
    reactor: IHTTPReactor, base: str, timeout: float, endpoint: Optional[IStreamClientEndpoint] = None
) -> tuple[str, IStreamClientEndpoint]:
    """
    ``host:port`` of an ``http(s)://host:port`` base (for the log), and
    ``endpoint`` (tests), or one connecting there within ``timeout``
    seconds.
    """
    parts = urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{host}:{port}", endpoint or HostnameEndpoint(reactor, host, port, timeout=timeout)


def close_socket(proto: EventsProtocol, is_open: bool, why: str) -> None:
    """
    Close ``proto``: an open socket with a WebSocket close (Asterisk logs a
    dropped TCP connection otherwise), then TCP once that frame is written;
    one not yet open (still upgrading) is aborted.
    """
    if is_open:
        proto.sendClose(1000, why)
        if proto.transport is not None:
            proto.transport.loseConnection()  # after the close frame is written
    else:
        proto.dropConnection(abort=True)
