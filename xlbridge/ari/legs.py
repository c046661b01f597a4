"""
Media legs of ARI callers: where each caller's ExternalMedia channel sends
its audio, and the creation of that channel (PROTOCOLS.md 5.2, 6, 10).

A leg is one of three kinds (``--ari-media``, or a caller's Stasis
``media=``):

- RTP: a UDP port of ``--rtp-ports`` per caller, from a :class:`PortPool`
  (released ports rest in quarantine before reuse);
- AudioSocket: one TCP listener for every caller, each connection routed
  by the UUID it announces (:mod:`xlbridge.ari.audiosocket`);
- WebSocket: a chan_websocket channel we connect to, or that connects to
  our one WebSocket port (:mod:`xlbridge.ari.websocket_media`).

:class:`MediaLegs` holds these, binds a caller's leg, creates its
ExternalMedia channel and waits for that channel to enter Stasis, and
tells whether a channel in an event is ours before the REST answer naming
it comes.  The controller (:mod:`xlbridge.ari.controller`) keeps the
callers and releases their legs; nothing here knows rooms or partners.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import attrs
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xlbridge.ari.audiosocket import AudioSocketRouter
from xlbridge.ari.caller import Caller
from xlbridge.ari.client import ARIClient
from xlbridge.ari.leftovers import audiosocket_target, unicast_rtp_port
from xlbridge.ari.ports import PortPool
from xlbridge.ari.reactor import IARIReactor
from xlbridge.ari.settings import ARISettings
from xlbridge.ari.stasis import StasisWaiter
from xlbridge.ari.websocket_media import WebSocketMedia
from xlbridge.audio.frame import Samples
from xlbridge.listeners import TCPListenerService
from xlbridge.bridge_view import ControllerView
from xlbridge.transports.rtp import RTPEndpoint


class MediaLegs:
    """
    The media legs of ``parent``'s callers.

    :param parent: the controller; the AudioSocket and WebSocket listeners
        become its children (in that order), so they are bound before its
        events socket connects.
    :param client: creates the ExternalMedia channels.
    :param clock: times out waits for a channel to enter Stasis.
    :param pool: the RTP ports (default: ``settings.rtp_ports``).

    :ivar audiosocket: with ``media = "audiosocket"``: routes connections
        by UUID (else ``None``).
    :ivar audiosocket_listener: the service listening for them.
    :ivar websocket: WebSocket legs: their dials (server mode) or the
        router and its listener (client mode, with ``media = "websocket"``
        only).  Always there: a caller may ask for ``media=websocket`` in
        its Stasis arguments whatever ``--ari-media`` says, and server mode
        needs nothing of ours but ARI's own HTTP server.
    :ivar stasis: our ExternalMedia channels entering Stasis, and setups
        waiting for them.
    """

    log = Logger()

    def __init__(
        self, parent: MultiService, bridge: ControllerView, settings: ARISettings, reactor: IARIReactor,
        client: ARIClient, clock: IReactorTime, pool: Optional[PortPool] = None,
    ) -> None:
        self.bridge = bridge
        self.settings = settings
        self.reactor = reactor
        self.client = client
        self.pool = pool or PortPool(*settings.rtp_ports, reactor, settings.port_quarantine)
        self.audiosocket: Optional[AudioSocketRouter] = None
        self.audiosocket_listener: Optional[TCPListenerService] = None
        if settings.media == "audiosocket":
            self.audiosocket = AudioSocketRouter(reactor)
            self.audiosocket_listener = TCPListenerService(
                reactor, settings.audiosocket_port, self.audiosocket, bridge.config.interface,
                bridge.admission.peers, "the ARI AudioSocket port",
            )
            self.audiosocket_listener.setName("ari-audiosocket")
            self.audiosocket_listener.setServiceParent(parent)
        ws_settings = settings if settings.media == "websocket" else attrs.evolve(settings, websocket_connection="server")
        self.websocket: WebSocketMedia = WebSocketMedia(
            ws_settings, reactor, reactor, bridge.config.interface, bridge.config.websocket_lookahead_ms,
            bridge.admission.peers,
        )
        if self.websocket.listener is not None:
            self.websocket.listener.setServiceParent(parent)
        self.stasis = StasisWaiter(clock)

    def audiosocket_port(self) -> int:
        """
        The TCP port ExternalMedia AudioSocket channels connect to: the one
        we listen on (the configured one, unless 0 asked for any).
        """
        listener = self.audiosocket_listener
        if listener is not None and listener.port is not None:
            return int(getattr(listener.port.getHost(), "port"))
        return self.settings.audiosocket_port

    def media_of(self, name: str, asked: Optional[str]) -> str:
        """
        The media a caller gets: ``--ari-media``, unless its Stasis
        arguments say ``media=rtp`` or ``media=websocket`` (or
        ``audiosocket`` when that listener runs): one room may mix them.
        """
        default = self.settings.media
        if asked is None:
            return default
        asked = asked.strip().lower()
        usable = {"rtp", "websocket"} | ({"audiosocket"} if self.audiosocket is not None else set())
        if asked not in usable:
            self.log.warn(
                "{name}: media={asked} is not one of {usable}; using {default}",
                name=name, asked=asked, usable=", ".join(sorted(usable)), default=default,
            )
            return default
        return asked

    def is_ours(self, channel: dict[str, Any]) -> bool:
        """
        Whether ``channel`` (an event's Channel object) is an ExternalMedia
        channel of ours, by its name or id: its StasisStart may come before
        the REST answer naming its id.
        """
        name = str(channel.get("name", ""))
        port = unicast_rtp_port(name)
        if port is not None:
            return port in self.pool.in_use
        if self.websocket.owns(channel):
            return True
        target = audiosocket_target(name)
        return target is not None and self.audiosocket is not None and target[1] in self.audiosocket.routes

    def create(self, caller: Caller, on_audio: Callable[[Samples], None]) -> "Deferred[Any]":
        """
        Bind ``caller``'s leg (its audio goes to ``on_audio``, frame by
        frame) and create the ExternalMedia channel sending to it; fires
        with the Channel object.
        """
        self.bind(caller, on_audio)
        if caller.media_ws is not None:
            return self.websocket.create(self.client, caller.media_ws)  # slin16 both ways
        if caller.media_uuid is not None:
            # AudioSocket: slin16 both ways (0x12), whatever --codec says.
            return self.client.external_media(
                self.settings.app, self.settings.external_host, self.audiosocket_port(), "slin16",
                audiosocket_id=caller.media_uuid,
            )
        assert caller.port is not None
        return self.client.external_media(
            self.settings.app, self.settings.external_host, caller.port, self.bridge.config.codec
        )

    def wait(self, caller: Caller, channel: dict[str, Any]) -> "Deferred[None]":
        """
        Note where ``caller``'s new ExternalMedia ``channel`` sends from;
        fires once it is in Stasis.
        """
        vars_ = channel.get("channelvars") or {}
        addr, port = vars_.get("UNICASTRTP_LOCAL_ADDRESS"), vars_.get("UNICASTRTP_LOCAL_PORT")
        if addr and port and isinstance(caller.endpoint, RTPEndpoint):
            # Asterisk does not learn our address from what we send (T8);
            # we can talk first, and latching still follows its real source.
            caller.endpoint.remote = (str(addr), int(port))
        # Asterisk answers externalMedia before the new channel is in
        # Stasis; adding it to the bridge earlier fails with 422 "Channel
        # not in Stasis application" (seen on Asterisk 22).
        assert caller.media_id is not None
        if caller.media_ws is not None:
            # A WebSocket channel only enters Stasis once connected: connect
            # first (PROTOCOLS.md 10.6).
            d = self.websocket.connect(caller.media_ws, channel)
            return d.addCallback(lambda _: self._in_stasis(caller))
        return self.stasis.wait(caller.media_id)

    def _in_stasis(self, caller: Caller) -> "Deferred[None] | None":
        if caller.media_id is None:
            return None  # released meanwhile: its setup goes on, to find its caller gone
        return self.stasis.wait(caller.media_id)

    def bind(self, caller: Caller, on_audio: Callable[[Samples], None]) -> None:
        """
        Give ``caller`` its leg of the kind ``caller.media`` says, listed
        for the monitor under its name (status, metrics, Listen).

        :raises CannotListenError: no port of ``--rtp-ports`` could be
            bound (20 tries).
        """
        if caller.media == "websocket":
            caller.media_ws, caller.endpoint = self.websocket.bind(caller.name, lambda ep, s: on_audio(s))
            self.bridge.attach_endpoint(caller.name, caller.endpoint, origin="ari")
            return
        if caller.media == "audiosocket" and self.audiosocket is not None:
            # One TCP port for all: the router hands Asterisk's connection
            # announcing this UUID to this endpoint.
            caller.media_uuid, caller.endpoint = self.audiosocket.add(caller.name, lambda ep, s: on_audio(s))
            self.bridge.attach_endpoint(caller.name, caller.endpoint, origin="ari")
            return
        endpoint = self.bridge.rtp_endpoint(caller.name, lambda ep, s: on_audio(s))
        for _ in range(20):
            port = self.pool.allocate()
            try:
                caller.listening = self.reactor.listenUDP(
                    port, endpoint, interface=self.bridge.config.interface, maxPacketSize=8192
                )
            except CannotListenError:
                self.pool.skip(port)
                continue
            caller.port, caller.endpoint = port, endpoint
            # Listed for the monitor under its leg's name (status, metrics, Listen).
            self.bridge.attach_endpoint(caller.name, endpoint, origin="ari")
            return
        raise CannotListenError(self.bridge.config.interface, 0, "no bindable port in --rtp-ports")

    def release(self, caller: Caller, hang_up: Callable[[str], Any]) -> Optional[str]:
        """
        Release whatever exists of ``caller``'s leg (idempotent): its port,
        its listing for the monitor, its router entry, and its ExternalMedia
        channel, hung up through ``hang_up`` (channel id) before the leg's
        own connection goes (Asterisk may read our close first, which ends
        the channel too).

        :return: the id of the ExternalMedia channel hung up, or ``None``.
        """
        media_id = None
        if caller.listening is not None:
            caller.listening.stopListening()
            caller.listening = None
        if caller.endpoint is not None:
            # Its counts stay in the monitor's totals (idempotent).
            self.bridge.detach_endpoint(caller.name, caller.endpoint)
        if caller.port is not None:
            self.pool.release(caller.port)
            caller.port = None
        if caller.media_id is not None:
            media_id = caller.media_id
            hang_up(caller.media_id)
            caller.media_id = None
        if caller.media_uuid is not None and self.audiosocket is not None:
            # After the hangup request: Asterisk may read our 0x00 first,
            # which ends the channel too.
            self.audiosocket.remove(caller.media_uuid)
            caller.media_uuid = None
        if caller.media_ws is not None:
            # Also after the hangup request (our close ends the channel too).
            self.websocket.remove(caller.media_ws)
            caller.media_ws = None
        return media_id

    def close_pending(self) -> None:
        """
        Close the media connections no leg has taken yet (shutdown).
        """
        if self.audiosocket is not None:
            self.audiosocket.close_pending()
        self.websocket.close_pending()
