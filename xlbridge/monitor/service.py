"""
The monitor as a service: the site, its listener and the bridge hooks.

:func:`make_monitor` builds a :class:`MonitorService` from the tap's
options; add it to the bridge (``monitor.setServiceParent(bridge)``) so it
starts after the calls container and stops before it.  While running it

- listens on a strports endpoint (``tcp:3001:interface=127.0.0.1`` by
  default) with the injected reactor, never the global one;
- observes bridge events (call records, metrics, engine usage, live
  viewers);
- sets the egress clock's per-tick hook for the interval-error histogram
  and the health checks' egress watch.

The site writes no access log: the token travels in query strings, and an
access log would write it to disk with every page load
(:class:`~xlbridge.monitor.quiet_site.QuietSite`, its own module with the
site's other defences).  The page and its files are served by
:mod:`.static_files`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Optional

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorTCP,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from xlbridge.bridge_view import MonitorView
from xlbridge.monitor.api import CallRecorder, CallsResource
from xlbridge.monitor.auth import GuardedResource, TokenGuard, TokenSource, resolve_listen_token, resolve_token
from xlbridge.monitor.health import EgressWatch, HealthCheck, HealthResource
from xlbridge.monitor.live import LiveHub
from xlbridge.monitor.metrics import BridgeMetrics, MetricsResource
from xlbridge.monitor.quiet_site import QuietSite
from xlbridge.monitor.static_files import IndexResource, StaticResource
from xlbridge.monitor.usage import UsageMeter


class IMonitorReactor(IReactorTCP, IReactorTime):
    """
    What the monitor uses of its reactor: timers, and a listening port
    (``--monitor`` is a strports description, TCP by default).
    """


#: The ``--monitor`` value that turns the monitor off.
DISABLED = "none"

#: The ``--monitor`` default: loopback only.
DEFAULT_ENDPOINT = "tcp:3001:interface=127.0.0.1"


class Branch(Resource):
    """
    A resource that only holds children (``/api``).  A plain ``Resource``
    answers GET with 405 but HEAD with a 500 and a traceback: Twisted's
    ``render_HEAD`` calls a ``render_GET`` it does not have.  Here HEAD is
    a 405 too.
    """

    render_HEAD = None  # type: ignore[assignment]


class SiteListener(Service):
    """
    Listen on ``endpoint`` while running.

    A listening failure (port taken, bad interface) raises from
    :meth:`startService` when the endpoint fails synchronously, as TCP does,
    so twistd refuses to start instead of running without its monitor.

    :param on_listening: called with the port once listening.
    :ivar port: the listening port while running.
    """

    log = Logger()

    def __init__(
        self, endpoint: IStreamServerEndpoint, factory: IProtocolFactory,
        on_listening: Callable[[IListeningPort], None],
    ) -> None:
        self.endpoint = endpoint
        self.factory = factory
        self.on_listening = on_listening
        self.port: Optional[IListeningPort] = None
        self._listening: Optional[Deferred[Any]] = None

    def startService(self) -> None:
        super().startService()
        outcome: list[Any] = []

        def note(result: Any) -> Any:
            outcome.append(result)
            return result

        d: Deferred[Any] = self.endpoint.listen(self.factory)
        d.addBoth(note)
        if outcome and isinstance(outcome[0], Failure):
            self.running = False
            d.addErrback(lambda f: None)
            outcome[0].raiseException()
        d.addCallback(self._listened)
        d.addErrback(lambda f: self.log.failure("monitor cannot listen", f))
        self._listening = d

    def _listened(self, port: IListeningPort) -> None:
        self.port = port
        self.on_listening(port)

    def stopService(self) -> "Deferred[None] | None":
        super().stopService()
        port, self.port = self.port, None
        if self._listening is not None and not self._listening.called:
            self._listening.cancel()
        self._listening = None
        if port is not None:
            return port.stopListening()  # type: ignore[return-value]
        return None


def base_url(address: Any, scheme: str = "http") -> Optional[str]:
    """
    ``scheme://host:port/`` a browser on this machine can open for a
    listening ``address`` (``localhost`` for the any-address, brackets for
    IPv6), or ``None`` for an address without a host (a UNIX socket).
    """
    host = getattr(address, "host", None)
    if host is None:
        return None
    if host in ("0.0.0.0", "::", ""):
        host = "localhost"
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{getattr(address, 'port', '')}/"


class MonitorService(MultiService):
    """
    The monitor: site, listener, live hub, metrics, health checks and call
    records.

    :param bridge: what the monitor sees of the bridge it watches.
    :param reactor: for the site's and the live hub's timers.
    :param endpoint: where to listen.
    :param guard: the token check.
    :param metrics_open: serve ``/metrics`` without the token.
    :param scheme: ``http`` or ``https`` for the logged URL.
    :param health_options: passed to :class:`HealthCheck` (``stall_s``,
        ``max_lateness_s``).
    """

    log = Logger()

    def __init__(
        self, bridge: MonitorView, reactor: IReactorTime, endpoint: IStreamServerEndpoint, guard: TokenGuard,
        metrics_open: bool = False, scheme: str = "http", *, recent_calls: int = 50,
        status_interval: float = 1.0, levels_interval: float = 0.1, max_client_bytes: int = 1024 * 1024,
        health_options: Optional[Mapping[str, float]] = None,
    ) -> None:
        super().__init__()
        self.setName("monitor")
        self.bridge = bridge
        self.reactor = reactor
        self.guard = guard
        self.scheme = scheme
        self.recorder = CallRecorder(max_recent=recent_calls)
        self.hub = LiveHub(
            bridge, reactor, guard, self.recorder, status_interval=status_interval,
            levels_interval=levels_interval, max_client_bytes=max_client_bytes,
        )
        self.usage = UsageMeter(bridge)
        self.egress_watch = EgressWatch(reactor)
        self.health = HealthCheck(bridge, self.egress_watch, **(health_options or {}))
        self.metrics = BridgeMetrics(bridge, guard, self.hub, self.usage, self.health)
        self.root = Resource()
        self.root.putChild(b"", IndexResource())
        self.root.putChild(b"static", StaticResource())
        # No token: health answers name no call and no caller (health.py).
        self.root.putChild(b"readyz", HealthResource(self.health))
        self.root.putChild(b"livez", HealthResource(self.health, live=True))
        api = Branch()
        api.putChild(b"calls", CallsResource(bridge, self.recorder, reactor))
        self.root.putChild(b"api", GuardedResource(api, guard))
        metrics = MetricsResource(self.metrics)
        self.root.putChild(b"metrics", metrics if metrics_open else GuardedResource(metrics, guard))
        self.root.putChild(b"ws", self.hub.resource())
        self.site = QuietSite(self.root, reactor=reactor)
        self.listener = SiteListener(endpoint, self.site, self._listening)
        self.listener.setServiceParent(self)
        self.observers = (self.recorder.observe, self.metrics.observe, self.usage.observe, self.hub.observe)
        self.url: Optional[str] = None

    def observe_tick(self, lateness: float) -> None:
        """
        The egress clock's per-tick hook: the interval-error histogram and
        the health checks' watch.
        """
        self.metrics.observe_tick(lateness)
        self.egress_watch.tick(lateness)

    def startService(self) -> None:
        for observer in self.observers:
            if observer not in self.bridge.observers:
                self.bridge.observers.append(observer)
        self.egress_watch.reset()
        self.bridge.egress.on_tick = self.observe_tick
        super().startService()

    def stopService(self) -> "Deferred[None]":
        for observer in self.observers:
            while observer in self.bridge.observers:
                self.bridge.observers.remove(observer)
        egress = self.bridge.egress
        if egress.on_tick == self.observe_tick:
            egress.on_tick = None
        self.hub.close()
        self.site.stop_checks()
        d: Deferred[None] = super().stopService()
        return d

    @property
    def port(self) -> Optional[IListeningPort]:
        """
        The listening port while running.
        """
        return self.listener.port

    def _listening(self, port: IListeningPort) -> None:
        address = port.getHost()
        base = base_url(address, self.scheme)
        if base is None:
            self.log.info("monitor listening on {address}", address=address)
            return
        if self.guard.source is TokenSource.GENERATED:
            # Generated at start-up: this line is the only way to learn it.
            self.url = f"{base}?token={self.guard.token}"
            self.log.info("monitor: open {url}", url=self.url)
        else:
            self.url = f"{base}?token=<token from {self.guard.source.value}>"
            self.log.info("monitor on {base} (token from {source})", base=base, source=self.guard.source.value)
        listen = self.guard.listen_source
        if listen is None:
            self.log.info("monitor: listen-in off (no listen token: set XLBRIDGE_MONITOR_LISTEN_TOKEN)")
        elif self.guard.listen_is_view:
            self.log.warn("monitor: the listen token is the view token: every viewer may listen in")
        else:
            self.log.info("monitor: listen-in with the listen token (from {source})", source=listen.value)


def make_monitor(
    bridge: MonitorView,
    reactor: IMonitorReactor,
    description: str = DEFAULT_ENDPOINT,
    token: Optional[str] = None,
    metrics_open: bool = False,
    environ: Optional[Mapping[str, str]] = None,
    listen_token: Optional[str] = None,
    **options: Any,
) -> MonitorService:
    """
    Build the monitor for ``bridge``.

    :param description: a strports server description; the caller handles
        :data:`DISABLED` (``"none"``).  A bad one raises ``ValueError`` here,
        before anything starts.
    :param token: configured view token; else ``XLBRIDGE_MONITOR_TOKEN`` in
        ``environ`` (``os.environ`` by default); else a random one.
    :param listen_token: configured listen token; else
        ``XLBRIDGE_MONITOR_LISTEN_TOKEN`` in ``environ``; else listen-in is
        off.
    :param options: passed to :class:`MonitorService` (``recent_calls``,
        ``status_interval``, ``levels_interval``, ``max_client_bytes``,
        ``health_options``).
    """
    if description.strip().lower() == DISABLED:
        raise ValueError("the monitor is disabled ('none'): do not build it")
    endpoint = serverFromString(reactor, description)
    env = os.environ if environ is None else environ
    value, source = resolve_token(token, env)
    listen, listen_source = resolve_listen_token(listen_token, env)
    scheme = "https" if description.split(":", 1)[0].lower() in ("ssl", "tls") else "http"
    guard = TokenGuard(value, source, listen, listen_source)
    return MonitorService(bridge, reactor, endpoint, guard, metrics_open, scheme, **options)
