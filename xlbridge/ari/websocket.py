"""
ARI legs over chan_websocket (``--ari-media websocket``): the connections,
until each one's MEDIA_START says whose it is.

Design notes (PROTOCOLS.md 10):

- Each leg is a persistent
  :class:`~xlbridge.transports.websocket.WebSocketEndpoint`; everything
  after MEDIA_START (audio, commands, flow control, hangup) is its
  business.  What is here only gets a connection to it:
  :meth:`~xlbridge.transports.websocket.WebSocketEndpoint.adopt` takes the
  connection over with its MEDIA_START, and the protocol forwards to the
  endpoint from then on, so nothing here stays in the audio path.
- **Server mode** (the default: Asterisk serves ``/media/<id>`` on its HTTP
  server): :class:`MediaDial` connects to the channel's URL
  (:func:`media_url`, from the ``--ari`` URL and the externalMedia
  answer's ``MEDIA_WEBSOCKET_CONNECTION_ID``).  The channel enters Stasis
  only once connected, so the controller connects first and then waits for
  its StasisStart.  A refused upgrade (404 for an unknown id), a refused
  or silent TCP connection, or a close before MEDIA_START fails the dial
  with :class:`MediaConnectError`, which fails the caller's setup.
- **Client mode** (Asterisk dials us through a websocket_client.conf
  entry): every leg's connection comes to one port, anonymous until its
  MEDIA_START.  :class:`WebSocketRouter` hands it to the endpoint
  registered under the MEDIA_START's ``channel_id`` (Asterisk 20.17 /
  22.7 / 23.1 and later) or ``channel`` name (older).  Ids are registered
  before the channel is created (we choose them); names only when the
  REST answer comes, which may be after the connection, so a connection
  naming no leg yet waits for one (:attr:`WebSocketRouter.start_timeout`).
  A connection that sends something else first, names a channel id that
  is no leg of ours, or never gets a leg, is closed and counted
  (``websocket_no_start``, ``websocket_unknown_channel``).
- Nothing here raises into the reactor.
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import quote, urlsplit

import attrs
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IConnector, IDelayedCall, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.errors import XLBridgeError
from xlbridge.events import DropReason, LegCounters
from xlbridge.transports import websocket_protocol as wsp
from xlbridge.transports.websocket import WebSocketEndpoint
from xlbridge.transports.websocket_codec import Malformed, MediaStart, parse_event

#: Seconds a dial to ``/media/<id>`` may take, up to its MEDIA_START.
CONNECT_TIMEOUT = 5.0
#: Seconds a connection to the router may wait for its MEDIA_START and
#: then for a leg to hand it to (the REST answer naming its channel).
START_TIMEOUT = 5.0


class MediaConnectError(XLBridgeError):
    """
    xlbridge could not connect to an ExternalMedia channel's media
    WebSocket (server mode); the message says where and why.
    """


def media_url(ari_url: str, connection_id: str) -> str:
    """
    Where Asterisk serves a server-mode channel's media: the HTTP server
    of ARI itself, ``http://h:8088`` -> ``ws://h:8088/media/<id>``
    (``https`` -> ``wss``); a path in ``ari_url`` (http.conf ``prefix``)
    comes first, as for ``/ari``.
    """
    parts = urlsplit(ari_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    prefix = parts.path.rstrip("/")
    return f"{scheme}://{parts.netloc}{prefix}/media/{quote(connection_id, safe='')}"


def _peer(proto: Any) -> str:
    transport = getattr(proto, "transport", None)
    if transport is None:
        return "?"
    p = transport.getPeer()
    return f"{getattr(p, 'host', '?')}:{getattr(p, 'port', '?')}"


class MediaDial:
    """
    Our connection to one channel's ``/media/<id>`` (server mode), until
    its MEDIA_START hands it to the leg's endpoint.  Forwards from the
    Autobahn protocol like an endpoint does
    (:class:`~xlbridge.transports.websocket_protocol.MediaEndpoint`).

    :param reactor: connects (TCP, or TLS for ``wss://``).
    :param clock: runs the :data:`CONNECT_TIMEOUT`.
    """

    log = Logger()
    local: Optional[str] = None

    def __init__(
        self, endpoint: WebSocketEndpoint, url: str, reactor: IReactorTCP, clock: IReactorTime,
        timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.endpoint = endpoint
        self.url = url
        self.reactor = reactor
        self.clock = clock
        self.timeout = timeout
        #: fires with ``None`` once handed over (or cancelled); fails with
        #: :class:`MediaConnectError`
        self.done: Deferred[None] = Deferred()
        self.proto: Optional[Any] = None
        self._connector: Optional[IConnector] = None
        self._timer: Optional[IDelayedCall] = None

    def start(self) -> "Deferred[None]":
        """
        Connect; returns :attr:`done`.
        """
        try:
            factory = wsp.client_factory(self, self.url, self.reactor)
            if factory.isSecure:
                from twisted.internet.ssl import optionsForClientTLS

                self._connector = self.reactor.connectSSL(  # type: ignore[attr-defined]
                    factory.host, factory.port, factory, optionsForClientTLS(factory.host), timeout=self.timeout
                )
            else:
                self._connector = self.reactor.connectTCP(factory.host, factory.port, factory, timeout=self.timeout)
            self._timer = self.clock.callLater(self.timeout, self._fail, f"no MEDIA_START within {self.timeout:g} s")
        except Exception as e:
            self._fail(f"{type(e).__name__}: {e}")
        return self.done

    def cancel(self) -> None:
        """
        The leg is gone: close the connection if any, and let the setup
        waiting on :attr:`done` go on (it will find its caller gone).
        """
        if not self.done.called:
            self.done.callback(None)  # first: closing may report back at once
            self._close()

    # -- what the protocol forwards ------------------------------------------

    def ws_request(self, proto: Any, request: ConnectionRequest) -> Optional[str]:
        return None  # we are the client: never asked

    def ws_connect_failed(self, reason: Failure) -> None:
        self._fail(reason.getErrorMessage())

    def ws_open(self, proto: Any) -> None:
        self.proto = proto
        if self.done.called:
            self._close()  # cancelled while connecting

    def ws_message(self, proto: Any, payload: bytes, is_binary: bool) -> None:
        if self.done.called:
            return
        try:
            event = None if is_binary else parse_event(payload)
            if not isinstance(event, MediaStart):
                what = "audio" if event is None else getattr(event, "detail", type(event).__name__)
                self._fail(f"{what} before MEDIA_START")
            elif self.endpoint.adopt(proto, payload):
                self._settle()
                self.done.callback(None)
            else:
                self._fail("the leg already has a connection")
        except Exception as e:
            self.log.failure("{ext}: error taking the media WebSocket over", ext=self.endpoint.extension)
            self._fail(f"{type(e).__name__}: {e}")

    def ws_close(self, proto: Any, was_clean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if not self.done.called:
            self._fail(reason or f"closed ({code})")

    # -- the end -----------------------------------------------------------------

    def _fail(self, why: str) -> None:
        if self.done.called:
            return
        self.done.errback(MediaConnectError(f"cannot connect to Asterisk's media WebSocket {self.url}: {why}"))
        self._close()

    def _settle(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _close(self) -> None:
        self._settle()
        try:
            if self.proto is not None:
                if self.proto.endpoint is self:  # not handed over
                    self.proto.dropConnection(abort=True)
            elif self._connector is not None:
                self._connector.disconnect()
        except Exception:
            self.log.failure("{ext}: closing a media WebSocket failed", ext=self.endpoint.extension)


@attrs.define(eq=False)
class _Waiting:
    """A connection to the router, before its hand-over."""

    timer: Optional[IDelayedCall]
    start: Optional[MediaStart] = None
    payload: bytes = b""


class WebSocketRouter:
    """
    Accept Asterisk's connections on one port (client mode) and hand each
    to the leg registered for the channel its MEDIA_START names.  Forwards
    from the Autobahn protocols like an endpoint does.

    :param clock: runs :attr:`start_timeout`.
    :ivar routes: leg endpoints by channel id and by channel name.
    :ivar counters: connections closed before reaching a leg, and audio
        that came before its leg was known (``no_call``).
    :ivar local: ``host:port`` listened on (set by the listener service).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, start_timeout: float = START_TIMEOUT) -> None:
        self.clock = clock
        self.start_timeout = start_timeout
        self.routes: dict[str, WebSocketEndpoint] = {}
        self.pending: dict[Any, _Waiting] = {}
        self.counters = LegCounters()
        self.local: Optional[str] = None

    def factory(self, reactor: Any) -> Any:
        """
        The Autobahn server factory for the listener.
        """
        return wsp.server_factory(self, reactor)

    # -- legs ----------------------------------------------------------------------

    def add(self, key: str, endpoint: WebSocketEndpoint) -> None:
        """
        Route connections naming ``key`` (a channel id or name) to
        ``endpoint``; one already waiting for it is handed over now.
        """
        self.routes[key] = endpoint
        for proto, waiting in list(self.pending.items()):
            start = waiting.start
            if start is not None and key in (start.channel_id, start.channel):
                self._hand_over(proto, waiting, endpoint)

    def remove(self, endpoint: WebSocketEndpoint) -> None:
        """
        Forget every route to ``endpoint`` (idempotent): a late connection
        for it is then refused.
        """
        for key in [k for k, ep in self.routes.items() if ep is endpoint]:
            del self.routes[key]

    def close_pending(self) -> None:
        """
        Close the connections not handed over yet (on shutdown).
        """
        for proto in list(self.pending):
            self._drop(proto)

    # -- what the protocols forward ----------------------------------------------------

    def ws_request(self, proto: Any, request: ConnectionRequest) -> Optional[str]:
        return wsp.check_request(request, None)

    def ws_connect_failed(self, reason: Failure) -> None:
        """Never called: we only accept."""

    def ws_open(self, proto: Any) -> None:
        self.pending[proto] = _Waiting(self.clock.callLater(self.start_timeout, self._timed_out, proto))

    def ws_message(self, proto: Any, payload: bytes, is_binary: bool) -> None:
        waiting = self.pending.get(proto)
        if waiting is None:
            return
        try:
            if waiting.start is not None:
                # Its leg is not known yet: nobody to give this to.
                self.counters.drop(DropReason.NO_CALL)
                return
            event = None if is_binary else parse_event(payload)
            if not isinstance(event, MediaStart):
                what = "audio" if event is None else getattr(event, "detail", type(event).__name__)
                reason = event.reason if isinstance(event, Malformed) else DropReason.WEBSOCKET_NO_START
                self._refuse(proto, reason, f"{what} before MEDIA_START")
                return
            waiting.start, waiting.payload = event, payload
            endpoint = self.routes.get(event.channel_id or "") or self.routes.get(event.channel)
            if endpoint is not None:
                self._hand_over(proto, waiting, endpoint)
            elif event.channel_id:
                # Ids are registered before their channel exists.
                self._refuse(proto, DropReason.WEBSOCKET_UNKNOWN_CHANNEL, f"unknown channel {event.channel_id}")
        except Exception:
            self.log.failure("error routing a WebSocket media connection")
            self._refuse(proto, DropReason.ERROR, "internal error")

    def ws_close(self, proto: Any, was_clean: bool, code: Optional[int], reason: Optional[str]) -> None:
        waiting = self.pending.pop(proto, None)
        if waiting is not None:
            self._settle(waiting)

    # -- hand-over and refusal -------------------------------------------------------

    def _hand_over(self, proto: Any, waiting: _Waiting, endpoint: WebSocketEndpoint) -> None:
        self.pending.pop(proto, None)
        self._settle(waiting)
        if not endpoint.adopt(proto, waiting.payload):
            self.log.warn("refused a second WebSocket connection for {ext}", ext=endpoint.extension)
            self._close(proto)

    def _timed_out(self, proto: Any) -> None:
        waiting = self.pending.get(proto)
        if waiting is None:
            return
        waiting.timer = None
        if waiting.start is None:
            self._refuse(proto, DropReason.WEBSOCKET_NO_START, f"no MEDIA_START within {self.start_timeout:g} s")
        else:
            self._refuse(proto, DropReason.WEBSOCKET_UNKNOWN_CHANNEL, f"unknown channel {waiting.start.channel}")

    def _refuse(self, proto: Any, reason: DropReason, why: str) -> None:
        self.counters.drop(reason)
        self.log.warn("refused WebSocket media connection from {peer}: {why}", peer=_peer(proto), why=why)
        self._drop(proto)

    def _drop(self, proto: Any) -> None:
        waiting = self.pending.pop(proto, None)
        if waiting is not None:
            self._settle(waiting)
        self._close(proto)

    def _close(self, proto: Any) -> None:
        try:
            # TCP closed: Asterisk hangs the channel up (cause 38).
            proto.dropConnection(abort=False)
        except Exception:
            self.log.failure("closing a WebSocket media connection failed")

    @staticmethod
    def _settle(waiting: _Waiting) -> None:
        if waiting.timer is not None and waiting.timer.active():
            waiting.timer.cancel()
        waiting.timer = None
