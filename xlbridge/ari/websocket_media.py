"""
``--ari-media websocket``: what the ARI controller does differently when
its callers' ExternalMedia channels are chan_websocket channels
(PROTOCOLS.md 10), kept here so the controller only asks.

Per caller:

1. :meth:`WebSocketMedia.bind`: a persistent
   :class:`~xlbridge.transports.websocket.WebSocketEndpoint` for its leg,
   under a channel id we choose (:func:`~xlbridge.ari.leftovers.websocket_id_prefix`
   and a uuid4) and, in client mode, registered with the router under it
   before the channel exists.
2. :meth:`WebSocketMedia.create`: ``POST /channels/externalMedia`` with
   ``transport=websocket&encapsulation=none&format=slin16`` and that
   ``channelId``; ``connection_type=server`` (no ``external_host``), or
   ``client`` with ``external_host=<websocket_client.conf entry>``.
3. :meth:`WebSocketMedia.connect`: in server mode, connect to the
   channel's ``/media/<MEDIA_WEBSOCKET_CONNECTION_ID>`` on ARI's own HTTP
   server; **before** waiting for the channel's StasisStart, which only
   comes once it is connected.  In client mode Asterisk connects by itself
   (and the channel's name is registered with the router, for Asterisk
   versions whose MEDIA_START has no channel id).
4. :meth:`WebSocketMedia.remove` on teardown: cancel a dial in flight,
   hang the endpoint up (HANGUP, then close) and forget its routes.

Slin16 both ways (little-endian, no byteswap), whatever ``--codec`` says;
Asterisk keeps time on these legs (the endpoint sends ahead).
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.logger import Logger

from xlbridge.ari.client import ARIClient
from xlbridge.ari.leftovers import websocket_id_prefix
from xlbridge.ari.websocket import MediaConnectError, MediaDial, WebSocketRouter, media_url
from xlbridge.audio.frame import Samples
from xlbridge.listeners import TCPListenerService
from xlbridge.transports.admission import PeerFilter
from xlbridge.config import ARISettings
from xlbridge.transports.websocket import WebSocketEndpoint

__all__ = ["MediaConnectError", "WebSocketMedia"]


class WebSocketMedia:
    """
    The WebSocket legs of one controller.

    :param reactor: connects (server mode), listens (client mode), and is
        the endpoints' clock.
    :param interface: where the client-mode listener binds.
    :param lookahead_ms: most audio each leg sends ahead into Asterisk.
    :ivar legs: endpoints by the channel id we chose, until removed.
    :ivar router: client mode: hands connections to legs.
    :ivar listener: client mode: the service listening for Asterisk.
    """

    log = Logger()

    def __init__(
        self, settings: ARISettings, reactor: IReactorTCP, clock: IReactorTime, interface: str,
        lookahead_ms: int = 200,
        peers: Optional[PeerFilter] = None,
    ) -> None:
        self.settings = settings
        self.reactor = reactor
        self.clock = clock
        self.lookahead_ms = lookahead_ms
        self.client_id = settings.websocket_client if settings.websocket_connection == "client" else None
        self.legs: dict[str, WebSocketEndpoint] = {}
        self.dials: dict[str, MediaDial] = {}
        self.router: Optional[WebSocketRouter] = None
        self.listener: Optional[TCPListenerService] = None
        if self.client_id is not None:
            self.router = WebSocketRouter(clock)
            self.listener = TCPListenerService(
                reactor, settings.websocket_port, self.router.factory(reactor), interface,
                peers, "the ARI WebSocket port",
            )
            self.listener.setName("ari-websocket")

    def describe(self) -> str:
        """
        Where the media goes, for the start-up log line.
        """
        if self.client_id is None:
            return (
                "WebSocket media (chan_websocket, slin16 little-endian both ways): xlbridge connects to "
                f"{media_url(self.settings.url, '')}<id> for each caller"
            )
        return (
            "WebSocket media (chan_websocket, slin16 little-endian both ways): Asterisk dials TCP port "
            f"{self.settings.websocket_port} through its websocket_client.conf entry {self.client_id}"
        )

    def port(self) -> int:
        """
        The client-mode listener's port (the configured one, unless 0
        asked for any).
        """
        listener = self.listener
        if listener is not None and listener.port is not None:
            return int(getattr(listener.port.getHost(), "port"))
        return self.settings.websocket_port

    # -- per caller -------------------------------------------------------------

    def bind(
        self, name: str, on_audio: Callable[[WebSocketEndpoint, Samples], None]
    ) -> tuple[str, WebSocketEndpoint]:
        """
        A new persistent endpoint for leg ``name``, and the id its
        ExternalMedia channel will have: ``(channel id, endpoint)``.
        """
        key = websocket_id_prefix(self.settings.app) + str(uuid.uuid4())
        endpoint = WebSocketEndpoint(
            name, on_audio, self.clock, on_hangup=self._peer_hung_up, lookahead_ms=self.lookahead_ms,
            persistent=True,
        )
        self.legs[key] = endpoint
        if self.router is not None:
            endpoint.local = self.router.local
            self.router.add(key, endpoint)
        return key, endpoint

    def create(self, client: ARIClient, key: str) -> "Deferred[Any]":
        """
        Create leg ``key``'s ExternalMedia channel; fires with the Channel.
        """
        return client.websocket_media(self.settings.app, key, self.client_id)

    def connect(self, key: str, channel: dict[str, Any]) -> "Deferred[None]":
        """
        Leg ``key``'s ExternalMedia ``channel`` exists (the REST answer):
        in server mode connect to its media URL, firing once it is ours
        (MEDIA_START) or failing with :class:`MediaConnectError`; in client
        mode note its name for the router.  Fires ``None`` at once for a
        leg already removed.
        """
        endpoint = self.legs.get(key)
        if endpoint is None:
            return succeed(None)
        if self.router is not None:
            for alias in (str(channel.get("id", "")), str(channel.get("name", ""))):
                if alias and alias != key:
                    self.router.add(alias, endpoint)
            return succeed(None)
        vars_ = channel.get("channelvars") or {}
        connection_id = vars_.get("MEDIA_WEBSOCKET_CONNECTION_ID")
        if not connection_id:
            return _failed(MediaConnectError(
                f"Asterisk's externalMedia answer for {channel.get('name', key)} has no "
                "MEDIA_WEBSOCKET_CONNECTION_ID (not chan_websocket in server mode?)"
            ))
        dial = self.dials[key] = MediaDial(endpoint, media_url(self.settings.url, str(connection_id)), self.reactor,
                                           self.clock)

        def done(result: Any) -> Any:
            if self.dials.get(key) is dial:
                del self.dials[key]
            return result

        return dial.start().addBoth(done)

    def remove(self, key: str) -> None:
        """
        Leg ``key`` is gone: stop its dial, hang its endpoint up (HANGUP,
        then close: Asterisk ends the channel too) and forget it.
        Idempotent.
        """
        dial = self.dials.pop(key, None)
        if dial is not None:
            dial.cancel()
        endpoint = self.legs.pop(key, None)
        if endpoint is None:
            return
        if self.router is not None:
            self.router.remove(endpoint)
        endpoint.hangup()

    def owns(self, channel: dict[str, Any]) -> bool:
        """
        ``channel`` is one of our live legs' ExternalMedia channels (its
        StasisStart may come before the REST answer naming it).
        """
        cid = str(channel.get("id", ""))
        return cid in self.legs or (self.router is not None and cid in self.router.routes)

    def ids(self) -> set[str]:
        """
        The channel ids of our live legs (those being created included).
        """
        return set(self.legs) | (set(self.router.routes) if self.router is not None else set())

    def close_pending(self) -> None:
        """
        On shutdown: stop dials and close connections not handed over yet.
        """
        for dial in list(self.dials.values()):
            dial.cancel()
        self.dials.clear()
        if self.router is not None:
            self.router.close_pending()

    def _peer_hung_up(self, endpoint: WebSocketEndpoint) -> None:
        # Asterisk hangs the channel up with its socket; the controller
        # ends the leg on that channel's StasisEnd.
        self.log.info("{name}: media WebSocket closed by Asterisk", name=endpoint.extension)


def _failed(error: Exception) -> "Deferred[None]":
    d: Deferred[None] = Deferred()
    d.errback(error)
    return d
