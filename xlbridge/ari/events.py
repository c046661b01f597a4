"""
The ARI events WebSocket (``/ari/events?app=...``), kept connected.

An Autobahn client protocol only forwards messages; :class:`ARIEvents`
owns reconnection through :class:`ClientService` (exponential backoff), so
an Asterisk restart only costs the calls it dropped.  Credentials go in the
``Authorization`` header (Basic), not the URL, so they never show in logs of
the URL.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable, Optional
from urllib.parse import urlencode, urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.logger import Logger

from xlbridge.ari.reactor import IHTTPReactor

EventHandler = Callable[[dict[str, Any]], None]


_log = Logger()


class _EventsProtocol(WebSocketClientProtocol):
    # Autobahn's own ``self.log`` stays txaio's, which drops its per-frame
    # debug lines at the default level; a twisted Logger here would print
    # every one of them under twistd.

    def onOpen(self) -> None:
        self.factory.owner._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary:
            return
        try:
            event = json.loads(payload.decode("utf-8"))
        except ValueError:
            _log.warn("ARI sent a non-JSON event: {p!r}", p=payload[:200])
            return
        if isinstance(event, dict):
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


class ARIEvents(ClientService):
    """
    Keep the events socket open; ``on_event`` gets each event as a dict and
    ``on_connect`` is called after every (re)connection, so the owner can
    clean up what an earlier connection left behind.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IHTTPReactor,
        base: str,
        app: str,
        user: str,
        password: str,
        on_event: EventHandler,
        on_connect: Callable[[], None] = lambda: None,
        max_delay: float = 30.0,
    ) -> None:
        parts = urlsplit(base)
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        factory = WebSocketClientFactory(
            events_url(base, app), headers={"Authorization": f"Basic {token}"}
        )
        factory.protocol = _EventsProtocol
        factory.owner = self  # type: ignore[attr-defined]
        # No close-handshake timer: it would run on txaio's global clock,
        # and at stop ClientService drops the connection anyway, right
        # after our close frame is written.
        factory.setProtocolOptions(closeHandshakeTimeout=0)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if parts.scheme == "https" else 80)
        endpoint = HostnameEndpoint(reactor, host, port)
        super().__init__(
            endpoint, factory, retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=max_delay), clock=reactor
        )
        self.on_event = on_event
        self.on_connect = on_connect
        self.connections = 0
        self.connected = False

    def stopService(self) -> "Deferred[None]":
        # A WebSocket close first (Asterisk logs a dropped TCP connection
        # otherwise); ClientService then drops what is left.
        self.running = False
        if self.connected:
            self.whenConnected(failAfterFailures=1).addCallbacks(
                lambda proto: proto.sendClose(1000, "xlbridge stopping"), lambda f: None
            )
        return super().stopService()

    def _opened(self, proto: _EventsProtocol) -> None:
        self.connections += 1
        self.connected = True
        self.log.info("ARI events connected ({n})", n=self.connections)
        try:
            self.on_connect()
        except Exception:
            self.log.failure("ARI on_connect failed")

    def _event(self, event: dict[str, Any]) -> None:
        try:
            self.on_event(event)
        except Exception:
            self.log.failure("ARI event handler failed for {type}", type=event.get("type"))

    def _closed(self, proto: _EventsProtocol, code: Optional[int], reason: Optional[str]) -> None:
        was = self.connected
        self.connected = False
        if not self.running:
            self.log.info("ARI events closed")
        elif was:
            self.log.warn("ARI events closed ({code} {reason}); reconnecting", code=code, reason=reason)
        elif self.running:
            # A refused handshake (bad credentials give 401) lands here.
            self.log.error(
                "ARI events connection refused ({code} {reason}); check --ari, --ari-user and the "
                "password; retrying with backoff",
                code=code, reason=reason,
            )
