"""
The bridge: endpoints, the egress clock and the calls, composed as services.

``BridgeService`` is a ``MultiService`` owning, in start order:

1. one listener per extension (:mod:`xlbridge.listeners`): UDP for an
   :class:`RTPEndpoint`, TCP for an :class:`AudioSocketEndpoint` or a
   :class:`WebSocketEndpoint` (Asterisk's chan_websocket dials it),
2. the :class:`EgressClock` that paces every leg,
3. ``calls``, a ``MultiService`` holding one :class:`CallService` per live
   call.

Stopping it stops children in reverse order, so every call ends cleanly
(``CallEnded`` with reason ``"shutdown"``) before the clock stops and the
ports close.  This is what SIGTERM does under twistd, and what an embedding
application gets by stopping the service.

Calls happen in rooms (:class:`~xlbridge.room.Room`, two legs that talk to
each other): the bridge keeps every open room in :attr:`BridgeService.rooms`,
and a room starts its own calls.  Extensions pair up in configuration order,
each :class:`Pair` in a room of its own for good: the first audio on either
leg starts a call, and so does an AudioSocket connection announcing its
UUID or a WebSocket's MEDIA_START (a caller on the line, silent or not).
Above the transport, RTP, AudioSocket and WebSocket legs are the same; the
only differences the pair sees are the call id (an AudioSocket leg brings
Asterisk's UUID, a WebSocket leg the channel id; otherwise uuid4), the
start, hangup (a connection's peer can end the call at once), and pacing
(Asterisk keeps time on a WebSocket leg: it is sent ahead, not paced).

Legs set up at run time (the ARI controller's callers) bring their own
endpoints; whoever binds one lists it with :meth:`BridgeService.attach_endpoint`
and removes it with :meth:`BridgeService.detach_endpoint`, so the monitor
lists, counts and taps it like a configured extension, and pairs two of them
with :meth:`BridgeService.open_room` until :meth:`BridgeService.close_room`.
One registry lists every endpoint, configured or attached, with its origin.
A detached endpoint's counters are folded into
:attr:`BridgeService.retired_counters`, so totals over all endpoints
(Prometheus counters) never go down.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Optional

import attrs
from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IReactorTCP, IReactorTime, IReactorUDP
from twisted.logger import Logger

from xlbridge.audio.codecs import Codec
from xlbridge.audio.frame import Samples
from xlbridge.call.service import CallService, PipelineFactory
from xlbridge.config import BridgeConfig, PairConfig
from xlbridge.egress import EgressClock
from xlbridge.events import DropReason, Event, LegCounters
from xlbridge.listeners import ListenerService, TCPListenerService, UDPListenerService
from xlbridge.pipeline.relay import relay_factory
from xlbridge.room import Endpoint, Room
from xlbridge.transports.admission import MediaAdmission
from xlbridge.transports.audiosocket import AudioSocketEndpoint
from xlbridge.transports.websocket import WebSocketEndpoint
from xlbridge.transports.rtp import RTPEndpoint, RTPSettings

__all__ = ["CONFIGURED", "BridgeService", "Endpoint", "IBridgeReactor", "Pair"]

#: The ``origin`` of configured endpoints in :meth:`BridgeService.status`.
CONFIGURED = "config"


class IBridgeReactor(IReactorUDP, IReactorTCP, IReactorTime):
    """
    What the bridge uses of its reactor: UDP ports (RTP), TCP ports
    (AudioSocket) and time (the egress clock, calls, latching).
    """


@attrs.frozen
class Listing:
    """
    An endpoint listed by the bridge, and where it comes from
    (:data:`CONFIGURED`, or what attached it: ``"ari"``...).
    """

    endpoint: Endpoint
    origin: str


class Pair:
    """
    Two configured extensions that talk to each other: their endpoints feed
    one :class:`~xlbridge.room.Room`, which starts their calls.
    """

    def __init__(self, bridge: "BridgeService", config: PairConfig) -> None:
        self.config = config
        ext_a, ext_b = config.extensions
        endpoints = (
            bridge.make_endpoint(ext_a, self._audio_from, self._hangup_from, self._line_from),
            bridge.make_endpoint(ext_b, self._audio_from, self._hangup_from, self._line_from),
        )
        self.room = bridge.open_room(config.extensions, config.languages, endpoints)

    @property
    def endpoints(self) -> tuple[Endpoint, Endpoint]:
        return self.room.endpoints

    @property
    def call(self) -> Optional[CallService]:
        """
        The live call, or ``None``.
        """
        return self.room.call

    def _audio_from(self, endpoint: Endpoint, samples: Samples) -> None:
        if not self.room.audio_in(self.room.index(endpoint), samples):
            endpoint.counters.drop(DropReason.NO_CALL)

    def _line_from(self, endpoint: Endpoint) -> None:
        # An AudioSocket caller is on the line (its UUID came): the call
        # starts now, so replies flow even while both callers are silent.
        self.room.start_call(self.room.index(endpoint))

    def _hangup_from(self, endpoint: Endpoint) -> None:
        self.room.end_call("hangup")


class BridgeService(MultiService):
    """
    The whole media bridge as one service.

    :param config: validated settings.
    :param reactor: provides :class:`IBridgeReactor`.
    :param pipeline_factory: per-direction pipeline; relay by default.
    :param observers: callables receiving every :data:`Event`.
    :param services: more children (engines, the event log), started before
        the calls and stopped after every call has ended.

    :ivar rooms: every open room: the configured pairs', in configuration
        order, then those opened at run time, oldest first.
    :ivar listeners: the configured extensions' listener services, by
        extension.
    :ivar retired_counters: counters of detached run-time endpoints, summed
        by transport kind.
    """

    log = Logger()

    def __init__(
        self,
        config: BridgeConfig,
        reactor: IBridgeReactor,
        pipeline_factory: Optional[PipelineFactory] = None,
        observers: Iterable[Callable[[Event], None]] = (),
        services: Iterable[IService] = (),
    ) -> None:
        super().__init__()
        self.setName("xlbridge")
        self.config = config
        self.reactor = reactor
        self.clock: IReactorTime = reactor
        self.pipeline_factory: PipelineFactory = pipeline_factory or relay_factory
        self.observers = list(observers)
        self.codec_in: Codec = config.codec_in()
        self.codec_out: Codec = config.codec_out()
        self._rtp_settings = RTPSettings(config.latch_timeout, config.reorder_depth)
        #: who may connect to the TCP media listeners (AudioSocket,
        #: WebSocket) and how fast calls may start on each transport
        self.admission = MediaAdmission(reactor, config.media_allow, config.max_new_calls)
        #: every listed endpoint by name: configured ones first, then those
        #: attached at run time
        self._listed: dict[str, Listing] = {}
        self.listeners: dict[str, ListenerService] = {}
        self.retired_counters: dict[str, LegCounters] = {}
        self.egress = EgressClock(reactor, max_burst=config.max_burst)
        self.calls = MultiService()
        self.calls.setName("calls")
        self.rooms: list[Room] = []
        self.pairs = [Pair(self, p) for p in config.pairs]
        for ext, listener in self.listeners.items():
            listener.setName(f"{self._listed[ext].endpoint.kind}-{ext}")
            listener.setServiceParent(self)
        for service in services:
            service.setServiceParent(self)
        self.egress.setName("egress")
        self.egress.setServiceParent(self)
        self.calls.setServiceParent(self)

    # -- endpoints ---------------------------------------------------------

    def make_endpoint(
        self,
        extension: str,
        on_audio: Callable[[Endpoint, Samples], None],
        on_hangup: Callable[[Endpoint], None] = lambda e: None,
        on_line: Callable[[Endpoint], None] = lambda e: None,
    ) -> Endpoint:
        """
        Create the endpoint (and its listener) for ``extension``: RTP on a
        UDP port, or AudioSocket on a TCP port, as configured.
        """
        port = self.config.port_of(extension)
        endpoint: Endpoint
        listener: ListenerService
        if self.config.transport_of(extension) == "audiosocket":
            audiosocket = AudioSocketEndpoint(
                extension, on_audio, on_hangup, on_uuid=on_line, clock=self.reactor,
                first_reply_rate=self.config.rate_of(extension) or 8000, admission=self.admission,
            )
            listener = TCPListenerService(
                self.reactor, port, audiosocket, self.config.interface, self.admission.peers, f"AudioSocket {extension}"
            )
            endpoint = audiosocket
        elif self.config.transport_of(extension) == "websocket":
            websocket = WebSocketEndpoint(
                extension, on_audio, self.reactor, on_hangup, on_start=on_line,
                lookahead_ms=self.config.websocket_lookahead_ms, admission=self.admission,
            )
            listener = TCPListenerService(
                self.reactor, port, websocket.server_factory(self.reactor), self.config.interface,
                self.admission.peers, f"WebSocket {extension}",
            )
            endpoint = websocket
        else:
            rtp = RTPEndpoint(
                extension, self.codec_in, self.codec_out, self.clock, on_audio, self._rtp_settings
            )
            listener = UDPListenerService(self.reactor, port, rtp, self.config.interface)
            endpoint = rtp
        self._listed[extension] = Listing(endpoint, CONFIGURED)
        self.listeners[extension] = listener
        return endpoint

    def rtp_endpoint(self, name: str, on_audio: Callable[[RTPEndpoint, Samples], None]) -> RTPEndpoint:
        """
        A new RTP endpoint with this bridge's codecs and settings, for a leg
        set up at run time (the caller binds it).
        """
        return RTPEndpoint(name, self.codec_in, self.codec_out, self.clock, on_audio, self._rtp_settings)

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """
        The configured endpoints, by extension (a read-only view).
        """
        return {name: ls.endpoint for name, ls in self._listed.items() if ls.origin == CONFIGURED}

    @property
    def dynamic_endpoints(self) -> dict[str, Endpoint]:
        """
        The endpoints attached at run time, by the key they are listed
        under (a read-only view).
        """
        return {name: ls.endpoint for name, ls in self._listed.items() if ls.origin != CONFIGURED}

    def attach_endpoint(self, name: str, endpoint: Endpoint, origin: str = "runtime") -> str:
        """
        List an endpoint set up at run time (bound by the caller) with the
        configured ones, for status, metrics and listen-in, until
        :meth:`detach_endpoint`.

        :param name: what its leg is called (the ``extension`` of the call's
            leg: for ARI, the caller's channel name).
        :param origin: shown as the endpoint's ``origin`` in :meth:`status`.
        :return: the key it is listed under: ``name``, or ``name#2`` (``#3``,
            ...) if another live endpoint already has that name.
        """
        def taken(key: str) -> bool:
            listed = self._listed.get(key)
            return listed is not None and (listed.endpoint is not endpoint or listed.origin == CONFIGURED)

        key, n = name, 1
        while taken(key):
            n += 1
            key = f"{name}#{n}"
        if key != name:
            self.log.warn("endpoint name {name} is taken; listed as {key}", name=name, key=key)
        self._listed[key] = Listing(endpoint, origin)
        return key

    def detach_endpoint(self, name: str, endpoint: Optional[Endpoint] = None) -> bool:
        """
        Stop listing a run-time endpoint and fold its counters into
        :attr:`retired_counters` (idempotent; configured endpoints stay).

        :param endpoint: if given, detach this endpoint (wherever
            :meth:`attach_endpoint` listed it) and nothing else.
        :return: whether something was detached.
        """
        attached = {k: ls for k, ls in self._listed.items() if ls.origin != CONFIGURED}
        listed = attached.get(name)
        if endpoint is None or (listed is not None and listed.endpoint is endpoint):
            keys = [name] if listed is not None else []
        else:
            keys = [k for k, ls in attached.items() if ls.endpoint is endpoint]
        for key in keys:
            found = self._listed.pop(key).endpoint
            self.retired_counters.setdefault(found.kind, LegCounters()).add(found.counters)
        return bool(keys)

    def all_endpoints(self) -> Iterator[tuple[str, Endpoint, str]]:
        """
        ``(name, endpoint, origin)`` of every live endpoint: the configured
        ones (origin :data:`CONFIGURED`), then those attached at run time.
        """
        for name, listed in self._listed.items():
            yield name, listed.endpoint, listed.origin

    # -- rooms and calls ---------------------------------------------------

    def open_room(
        self,
        names: tuple[str, str],
        languages: tuple[str, str],
        endpoints: tuple[Endpoint, Endpoint],
        call_id: Optional[str] = None,
        channels: Optional[tuple[str, str]] = None,
    ) -> Room:
        """
        Pair two endpoints in a new room; its calls run under ``calls``,
        start on audio or :meth:`Room.start_call`, and end the same ways
        whoever opened it.  See :class:`~xlbridge.room.Room` for the
        parameters.
        """
        room = Room(self, names, languages, endpoints, call_id, channels)
        self.rooms.append(room)
        return room

    def close_room(self, room: Room, reason: str = "hangup") -> None:
        """
        End ``room``'s call (if any) for ``reason`` and forget the room
        (idempotent).
        """
        room.end_call(reason)
        if room in self.rooms:
            self.rooms.remove(room)

    @property
    def accepting_calls(self) -> bool:
        """
        New calls may start (false while shutting down).
        """
        return bool(self.running and self.calls.running)

    def emit(self, event: Event) -> None:
        """
        Deliver ``event`` to every observer; one failing observer does not
        stop the others.
        """
        for observer in self.observers:
            try:
                observer(event)
            except Exception:
                self.log.failure("event observer failed for {event!r}", event=event)

    def active_calls(self) -> list[CallService]:
        """
        The live calls, in the order of their rooms.
        """
        return [room.call for room in self.rooms if room.call is not None]

    def status(self) -> dict[str, Any]:
        """
        JSON-ready state of the bridge: clock, calls and endpoints
        (configured and attached at run time, told apart by ``origin``).
        """
        eg = self.egress
        return {
            "egress": {
                "ticks": eg.ticks,
                "late_ticks": eg.late_ticks,
                "skipped": eg.skipped,
                "errors": eg.errors,
                "legs": len(eg),
                "max_lateness_ms": eg.max_lateness * 1000,
            },
            "calls": [c.status() for c in self.active_calls()],
            "endpoints": {
                name: {"transport": ep.describe(), "counters": ep.counters.snapshot(), "origin": origin}
                for name, ep, origin in self.all_endpoints()
            },
        }
