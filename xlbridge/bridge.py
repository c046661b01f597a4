"""
The bridge: endpoints, the egress clock and the calls, composed as services.

``BridgeService`` is a ``MultiService`` owning, in start order:

1. one UDP listener per extension (an :class:`RTPEndpoint` on its port),
2. the :class:`EgressClock` that paces every leg,
3. ``calls``, a ``MultiService`` holding one :class:`CallService` per live
   call.

Stopping it stops children in reverse order, so every call ends cleanly
(``CallEnded`` with reason ``"shutdown"``) before the clock stops and the
ports close.  This is what SIGTERM does under twistd, and what an embedding
application gets by stopping the service.

Extensions pair up in configuration order; a :class:`Pair` turns the first
audio on either of its legs into a new call.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Optional

from twisted.application.service import IService, MultiService, Service
from twisted.internet.interfaces import IListeningPort, IReactorTime, IReactorUDP
from twisted.logger import Logger

from xlbridge.audio.codecs import Codec
from xlbridge.audio.frame import Samples
from xlbridge.call.leg import Leg
from xlbridge.call.service import CallService, PipelineFactory
from xlbridge.config import BridgeConfig, PairConfig
from xlbridge.egress import EgressClock
from xlbridge.events import DropReason, Event
from xlbridge.pipeline.relay import relay_factory
from xlbridge.transports.rtp import RTPEndpoint, RTPSettings


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


class Pair:
    """
    Two extensions that talk to each other, and their current call.

    :ivar call: the live :class:`CallService`, or ``None``.
    """

    log = Logger()

    def __init__(self, bridge: "BridgeService", config: PairConfig) -> None:
        self.bridge = bridge
        self.config = config
        self.endpoints: tuple[RTPEndpoint, RTPEndpoint] = (
            bridge.make_endpoint(config.extensions[0], self._audio_from),
            bridge.make_endpoint(config.extensions[1], self._audio_from),
        )
        self.call: Optional[CallService] = None
        self.calls_started = 0

    def _audio_from(self, endpoint: RTPEndpoint, samples: Samples) -> None:
        call = self.call
        if call is None:
            if not self.bridge.accepting_calls:
                endpoint.counters.drop(DropReason.NO_CALL)
                return
            call = self._start_call()
        call.audio_in(0 if endpoint is self.endpoints[0] else 1, samples)

    def _start_call(self) -> CallService:
        cfg = self.config
        bridge = self.bridge
        legs = (
            Leg(cfg.extensions[0], cfg.languages[0], self.endpoints[0], bridge.config.relay_buffer_ms),
            Leg(cfg.extensions[1], cfg.languages[1], self.endpoints[1], bridge.config.relay_buffer_ms),
        )
        call = CallService(
            str(uuid.uuid4()),
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
        self.endpoints: dict[str, RTPEndpoint] = {}
        self.listeners: dict[str, UDPListenerService] = {}
        self.egress = EgressClock(reactor, max_burst=config.max_burst)
        self.calls = MultiService()
        self.calls.setName("calls")
        self.pairs = [Pair(self, p) for p in config.pairs]
        for ext, listener in self.listeners.items():
            listener.setName(f"rtp-{ext}")
            listener.setServiceParent(self)
        for service in services:
            service.setServiceParent(self)
        self.egress.setName("egress")
        self.egress.setServiceParent(self)
        self.calls.setServiceParent(self)

    def make_endpoint(
        self, extension: str, on_audio: Callable[[RTPEndpoint, Samples], None]
    ) -> RTPEndpoint:
        """
        Create the RTP endpoint (and its listener) for ``extension``.
        """
        endpoint = RTPEndpoint(
            extension, self.codec_in, self.codec_out, self.clock, on_audio, self._rtp_settings
        )
        self.endpoints[extension] = endpoint
        self.listeners[extension] = UDPListenerService(
            self.reactor, self.config.port_of(extension), endpoint, self.config.interface
        )
        return endpoint

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
        return [p.call for p in self.pairs if p.call is not None]

    def status(self) -> dict[str, Any]:
        """
        JSON-ready state of the bridge: clock, calls and idle endpoints.
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
                ext: {"transport": ep.describe(), "counters": ep.counters.snapshot()}
                for ext, ep in self.endpoints.items()
            },
        }
