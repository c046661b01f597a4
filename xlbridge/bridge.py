"""
The bridge: endpoints, the egress clock and the calls, composed as services.

``BridgeService`` is a ``MultiService`` owning, in start order:

1. one listener per extension: UDP for an :class:`RTPEndpoint`, TCP for an
   :class:`AudioSocketEndpoint`,
2. the :class:`EgressClock` that paces every leg,
3. ``calls``, a ``MultiService`` holding one :class:`CallService` per live
   call.

Stopping it stops children in reverse order, so every call ends cleanly
(``CallEnded`` with reason ``"shutdown"``) before the clock stops and the
ports close.  This is what SIGTERM does under twistd, and what an embedding
application gets by stopping the service.

Extensions pair up in configuration order; a :class:`Pair` turns the first
audio on either of its legs into a new call, or an AudioSocket connection
announcing its UUID (a caller on the line, silent or not).  Above the
transport, RTP and AudioSocket legs are the same; the only differences the
pair sees are the call id (an AudioSocket leg brings Asterisk's UUID;
otherwise uuid4), the start, and hangup (an AudioSocket peer can end the
call at once).

Legs set up at run time (the ARI controller's callers) bring their own
endpoints; whoever binds one registers it with :meth:`BridgeService.attach_endpoint`
and removes it with :meth:`BridgeService.detach_endpoint`, so the monitor
lists, counts and taps it like a configured extension.  A detached
endpoint's counters are folded into :attr:`BridgeService.retired_counters`,
so totals over all endpoints (Prometheus counters) never go down.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Iterator, Optional

from twisted.application.service import IService, MultiService, Service
from twisted.internet.interfaces import IListeningPort, IReactorTCP, IReactorTime, IReactorUDP
from twisted.logger import Logger

from xlbridge.audio.codecs import Codec
from xlbridge.audio.frame import Samples
from xlbridge.call.leg import Leg
from xlbridge.call.service import CallService, PipelineFactory
from xlbridge.config import BridgeConfig, PairConfig
from xlbridge.egress import EgressClock
from xlbridge.events import DropReason, Event, LegCounters
from xlbridge.pipeline.relay import relay_factory
from xlbridge.transports.audiosocket import AudioSocketEndpoint
from xlbridge.transports.rtp import RTPEndpoint, RTPSettings

Endpoint = RTPEndpoint | AudioSocketEndpoint

#: The ``origin`` of configured endpoints in :meth:`BridgeService.status`.
CONFIGURED = "config"


class UDPListenerService(Service):
    """
    Listen on a UDP port for the lifetime of the service.

    :ivar port: the listening port while running (``getHost().port`` gives
        the real number when 0 was asked for).
    """

    def __init__(self, reactor: IReactorUDP, port: int, protocol: Any, interface: str) -> None:
        self.reactor = reactor
        self.portNumber = port
        self.protocol = protocol
        self.interface = interface
        self.port: Optional[IListeningPort] = None

    def _listen(self) -> IListeningPort:
        return self.reactor.listenUDP(
            self.portNumber, self.protocol, interface=self.interface, maxPacketSize=8192
        )

    def privilegedStartService(self) -> None:
        # Bind early so a port clash fails start-up with a clear error.
        if self.port is None:
            self.port = self._listen()
        super().privilegedStartService()

    def startService(self) -> None:
        if self.port is None:
            self.port = self._listen()
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None


class TCPListenerService(UDPListenerService):
    """
    Listen on a TCP port (AudioSocket) for the lifetime of the service;
    ``protocol`` is the factory.
    """

    def __init__(self, reactor: IReactorTCP, port: int, protocol: Any, interface: str) -> None:
        super().__init__(reactor, port, protocol, interface)  # type: ignore[arg-type]

    def _listen(self) -> IListeningPort:
        port: IListeningPort = self.reactor.listenTCP(  # type: ignore[attr-defined]
            self.portNumber, self.protocol, interface=self.interface
        )
        host = port.getHost()
        # Status pages show where Asterisk should connect, even when idle.
        self.protocol.local = f"{getattr(host, 'host', '?')}:{getattr(host, 'port', '?')}"
        return port


class Pair:
    """
    Two extensions that talk to each other, and their current call.

    :ivar call: the live :class:`CallService`, or ``None``.
    """

    log = Logger()

    def __init__(self, bridge: "BridgeService", config: PairConfig) -> None:
        self.bridge = bridge
        self.config = config
        self.endpoints: tuple[Endpoint, Endpoint] = (
            bridge.make_endpoint(config.extensions[0], self._audio_from, self._hangup_from, self._line_from),
            bridge.make_endpoint(config.extensions[1], self._audio_from, self._hangup_from, self._line_from),
        )
        self.call: Optional[CallService] = None
        self.calls_started = 0

    def _audio_from(self, endpoint: Endpoint, samples: Samples) -> None:
        call = self.call
        if call is None:
            if not self.bridge.accepting_calls:
                endpoint.counters.drop(DropReason.NO_CALL)
                return
            call = self._start_call(self._call_id(endpoint))
        call.audio_in(0 if endpoint is self.endpoints[0] else 1, samples)

    def _call_id(self, first: Endpoint) -> str:
        # An AudioSocket leg brings Asterisk's UUID: the leg whose audio
        # starts the call first, else its partner if that one is connected
        # (a mixed pair whose RTP leg spoke first); otherwise a fresh uuid4.
        for endpoint in (first, *self.endpoints):
            call_id = getattr(endpoint, "call_id", None)
            if call_id:
                return str(call_id)
        return str(uuid.uuid4())

    def _line_from(self, endpoint: Endpoint) -> None:
        # An AudioSocket caller is on the line (its UUID came): the call
        # starts now, so replies flow even while both callers are silent.
        if self.call is None and self.bridge.accepting_calls:
            self._start_call(self._call_id(endpoint))

    def _hangup_from(self, endpoint: Endpoint) -> None:
        call = self.call
        if call is not None:
            call.end("hangup")

    def _start_call(self, call_id: Optional[str] = None) -> CallService:
        cfg = self.config
        bridge = self.bridge
        legs = (
            Leg(cfg.extensions[0], cfg.languages[0], self.endpoints[0], bridge.config.relay_buffer_ms),
            Leg(cfg.extensions[1], cfg.languages[1], self.endpoints[1], bridge.config.relay_buffer_ms),
        )
        call = CallService(
            call_id or str(uuid.uuid4()),
            legs,
            bridge.pipeline_factory,
            bridge.egress,
            bridge.clock,
            inactivity_timeout=bridge.config.call_timeout,
            emit=bridge.emit,
            on_end=self._ended,
        )
        self.call = call
        self.calls_started += 1
        call.setServiceParent(bridge.calls)
        return call

    def _ended(self, call: CallService) -> None:
        if self.call is call:
            self.call = None


class BridgeService(MultiService):
    """
    The whole media bridge as one service.

    :param config: validated settings.
    :param reactor: provides ``IReactorUDP`` and ``IReactorTime``.
    :param pipeline_factory: per-direction pipeline; relay by default.
    :param observers: callables receiving every :data:`Event`.
    :param services: more children (engines, the event log), started before
        the calls and stopped after every call has ended.
    """

    log = Logger()

    def __init__(
        self,
        config: BridgeConfig,
        reactor: Any,
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
        self.endpoints: dict[str, Endpoint] = {}
        self.listeners: dict[str, UDPListenerService] = {}
        self.egress = EgressClock(reactor, max_burst=config.max_burst)
        self.calls = MultiService()
        self.calls.setName("calls")
        self.pairs = [Pair(self, p) for p in config.pairs]
        #: Calls set up at run time (ARI), not owned by a configured pair.
        self.dynamic_calls: dict[str, CallService] = {}
        #: Endpoints set up at run time, by name, while attached.
        self.dynamic_endpoints: dict[str, Endpoint] = {}
        self._origins: dict[str, str] = {}
        #: Counters of detached run-time endpoints, summed by transport kind.
        self.retired_counters: dict[str, LegCounters] = {}
        for ext, listener in self.listeners.items():
            listener.setName(f"{self.endpoints[ext].kind}-{ext}")
            listener.setServiceParent(self)
        for service in services:
            service.setServiceParent(self)
        self.egress.setName("egress")
        self.egress.setServiceParent(self)
        self.calls.setServiceParent(self)

    def make_endpoint(
        self,
        extension: str,
        on_audio: Callable[[Any, Samples], None],
        on_hangup: Callable[[Any], None] = lambda e: None,
        on_line: Callable[[Any], None] = lambda e: None,
    ) -> Endpoint:
        """
        Create the endpoint (and its listener) for ``extension``: RTP on a
        UDP port, or AudioSocket on a TCP port, as configured.
        """
        port = self.config.port_of(extension)
        endpoint: Endpoint
        if self.config.transport_of(extension) == "audiosocket":
            endpoint = AudioSocketEndpoint(extension, on_audio, on_hangup, on_uuid=on_line)
            listener: UDPListenerService = TCPListenerService(
                self.reactor, port, endpoint, self.config.interface
            )
        else:
            endpoint = RTPEndpoint(
                extension, self.codec_in, self.codec_out, self.clock, on_audio, self._rtp_settings
            )
            listener = UDPListenerService(self.reactor, port, endpoint, self.config.interface)
        self.endpoints[extension] = endpoint
        self.listeners[extension] = listener
        return endpoint

    def rtp_endpoint(self, name: str, on_audio: Callable[[Any, Samples], None]) -> RTPEndpoint:
        """
        A new RTP endpoint with this bridge's codecs and settings, for a leg
        set up at run time (the caller binds it).
        """
        return RTPEndpoint(name, self.codec_in, self.codec_out, self.clock, on_audio, self._rtp_settings)

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
            return any(d.get(key, endpoint) is not endpoint for d in (self.endpoints, self.dynamic_endpoints))

        key, n = name, 1
        while taken(key):
            n += 1
            key = f"{name}#{n}"
        if key != name:
            self.log.warn("endpoint name {name} is taken; listed as {key}", name=name, key=key)
        self.dynamic_endpoints[key] = endpoint
        self._origins[key] = origin
        return key

    def detach_endpoint(self, name: str, endpoint: Optional[Endpoint] = None) -> bool:
        """
        Stop listing a run-time endpoint and fold its counters into
        :attr:`retired_counters` (idempotent).

        :param endpoint: if given, detach this endpoint (wherever
            :meth:`attach_endpoint` listed it) and nothing else.
        :return: whether something was detached.
        """
        if endpoint is None or self.dynamic_endpoints.get(name) is endpoint:
            keys = [name] if name in self.dynamic_endpoints else []
        else:
            keys = [k for k, ep in self.dynamic_endpoints.items() if ep is endpoint]
        for key in keys:
            found = self.dynamic_endpoints.pop(key)
            del self._origins[key]
            self.retired_counters.setdefault(found.kind, LegCounters()).add(found.counters)
        return bool(keys)

    def all_endpoints(self) -> Iterator[tuple[str, Endpoint, str]]:
        """
        ``(name, endpoint, origin)`` of every live endpoint: the configured
        ones (origin :data:`CONFIGURED`), then those attached at run time.
        """
        for ext, ep in self.endpoints.items():
            yield ext, ep, CONFIGURED
        for key, ep in self.dynamic_endpoints.items():
            yield key, ep, self._origins[key]

    def start_call(
        self,
        call_id: str,
        extensions: tuple[str, str],
        languages: tuple[str, str],
        endpoints: tuple[Endpoint, Endpoint],
        on_end: Callable[[CallService], None] = lambda c: None,
        channels: Optional[tuple[str, str]] = None,
    ) -> CallService:
        """
        Start a call between two endpoints set up at run time (ARI); it
        runs under ``calls`` like a pair's call and ends the same ways.
        """
        buf = self.config.relay_buffer_ms
        legs = (
            Leg(extensions[0], languages[0], endpoints[0], buf),
            Leg(extensions[1], languages[1], endpoints[1], buf),
        )

        def ended(call: CallService) -> None:
            if self.dynamic_calls.get(call.call_id) is call:
                del self.dynamic_calls[call.call_id]
            on_end(call)

        call = CallService(
            call_id, legs, self.pipeline_factory, self.egress, self.clock,
            inactivity_timeout=self.config.call_timeout, emit=self.emit, on_end=ended, channels=channels,
        )
        self.dynamic_calls[call_id] = call
        call.setServiceParent(self.calls)
        return call

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
        The live calls.
        """
        return [p.call for p in self.pairs if p.call is not None] + list(self.dynamic_calls.values())

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
