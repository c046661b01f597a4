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
access log would write it to disk with every page load.
"""

from __future__ import annotations

import os
import weakref
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
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request as ServerRequest
from twisted.web.server import Site

from xlbridge.bridge_view import MonitorView
from xlbridge.monitor.api import CallRecorder, CallsResource
from xlbridge.monitor.auth import GuardedResource, TokenGuard, TokenSource, resolve_listen_token, resolve_token
from xlbridge.monitor.health import EgressWatch, HealthCheck, HealthResource
from xlbridge.monitor.live import LiveHub
from xlbridge.monitor.metrics import BridgeMetrics, MetricsResource
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

#: The page and its assets: shipped inside the package (package-data glob
#: ``monitor/static/*``) so the wheel serves them offline, with no CDN.
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}

#: The page needs nothing but its own scripts and styles, the WebSocket and
#: ``/api``: everything else (inline script, other origins, frames, plugins,
#: forms) is refused.
CONTENT_SECURITY_POLICY = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self' ws: wss:; media-src 'self' blob:; object-src 'none'; "
    b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def secure_headers(request: IRequest, content_type: bytes) -> None:
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"cache-control", b"no-store")


def _read_static(name: str) -> Optional[bytes]:
    """
    The bytes of ``static/<name>``, or ``None`` unless ``name`` is a plain
    file name of a known type in that directory (no ``..``, no sub-paths).
    """
    # A NUL (``/static/%00app.js``) made open() raise ValueError: a 500
    # with a traceback in the log per request.
    if not name or "\x00" in name or name != os.path.basename(name) or name.startswith("."):
        return None
    if os.path.splitext(name)[1] not in _CONTENT_TYPES:
        return None
    path = os.path.join(STATIC_DIR, name)
    try:
        with open(path, "rb") as f:
            return f.read()
    except (OSError, ValueError):
        return None


class IndexResource(Resource):
    """
    ``/``: the page.  It holds no data (that comes over ``/ws`` and
    ``/api``), so it is served without a token; it reads the token from its
    own ``?token=`` and must not leak it in a ``Referer``.
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        body = _read_static("index.html")
        if body is None:
            request.setResponseCode(500)
            secure_headers(request, b"text/plain; charset=utf-8")
            return b"monitor page missing from the installation\n"
        secure_headers(request, _CONTENT_TYPES[".html"])
        return body


class StaticResource(Resource):
    """
    ``/static/<name>``: the page's scripts and styles, without a token (they
    hold no data).  Only plain files of known types in :data:`STATIC_DIR`.
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        parts = [p for p in request.postpath if p]
        name = parts[0].decode("utf-8", "replace") if len(parts) == 1 else ""
        body = _read_static(name)
        if body is None:
            request.setResponseCode(404)
            secure_headers(request, b"text/plain; charset=utf-8")
            return b"not found\n"
        secure_headers(request, _CONTENT_TYPES[os.path.splitext(name)[1]])
        return body


#: Seconds a monitor connection has to complete each request (head and
#: body).  Twisted only times out *idle* connections, so a client that
#: drips one header byte every few seconds ("slowloris") held its
#: connection, and a file descriptor, for as long as it liked: 1,000 of
#: them held 1,000 fds (reliability/fuzz_monitor.py).  Checked every this
#: many seconds: a connection that completed no request since the last
#: check is closed, so one is cut off after 10 to 20 s.  Upgraded
#: WebSockets (viewers) are not HTTP any more and are left alone.
REQUEST_DEADLINE = 10.0

#: Seconds an idle keep-alive connection may stay open (Twisted's default:
#: 12 hours).
IDLE_TIMEOUT = 60.0


class _RedactedRequest(ServerRequest):
    """
    A request whose ``repr`` leaves out the query string.  Twisted puts the
    repr in its own log lines (for a HEAD request: "Warning: HEAD request
    <Request ... uri=/api/calls?token=...> ... I think I'll eat it."), and
    the monitor token travels in ``?token=``: found in the fuzz run's log.
    """

    def __repr__(self) -> str:
        path = (self.uri or b"").split(b"?", 1)[0].decode("ascii", "replace")
        query = "?..." if b"?" in (self.uri or b"") else ""
        method = (self.method or b"").decode("ascii", "replace")
        proto = (self.clientproto or b"").decode("ascii", "replace")
        return f"<Request at 0x{id(self):x} method={method} uri={path}{query} clientproto={proto}>"


class Branch(Resource):
    """
    A resource that only holds children (``/api``).  A plain ``Resource``
    answers GET with 405 but HEAD with a 500 and a traceback: Twisted's
    ``render_HEAD`` calls a ``render_GET`` it does not have.  Here HEAD is
    a 405 too.
    """

    render_HEAD = None  # type: ignore[assignment]


class QuietSite(Site):
    """
    A site with no access log (see the module docstring), an idle timeout
    of :data:`IDLE_TIMEOUT` and a per-request deadline of
    :data:`REQUEST_DEADLINE` (see there).

    :ivar cut_off: connections closed for missing the deadline.
    """

    noisy = False

    def __init__(self, resource: Resource, reactor: Any, request_deadline: float = REQUEST_DEADLINE,
                 idle_timeout: float = IDLE_TIMEOUT) -> None:
        super().__init__(resource, requestFactory=_RedactedRequest, reactor=reactor, timeout=idle_timeout)
        self.request_deadline = request_deadline
        self.cut_off = 0
        #: transport -> a request was handed to a resource since the last check
        self._served: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()
        self._checks: set[Any] = set()

    def log(self, request: Request) -> None:
        pass

    def buildProtocol(self, addr: Any) -> Any:
        proto = super().buildProtocol(addr)
        if proto is not None and self.request_deadline > 0:
            self._arm(proto)
        return proto

    def getResourceFor(self, request: Any) -> Any:
        if request.transport is not None:
            self._served[request.transport] = True
        return super().getResourceFor(request)

    def _arm(self, proto: Any) -> None:
        call = self.reactor.callLater(self.request_deadline, self._check, proto)
        self._checks.add(call)

    def _check(self, proto: Any) -> None:
        self._checks = {c for c in self._checks if c.active()}
        # Twisted wraps its HTTPChannel (for HTTP/2 negotiation); the
        # channel's transport is None once a WebSocket took the connection.
        transport = getattr(proto, "transport", None) or getattr(getattr(proto, "_channel", None), "transport", None)
        if transport is None or getattr(transport, "disconnected", False) or getattr(transport, "disconnecting", False):
            return
        if getattr(transport, "protocol", proto) is not proto:
            return  # taken over by a WebSocket (a viewer): not HTTP any more
        if not self._served.pop(transport, False):
            self.cut_off += 1
            transport.abortConnection()
            return
        self._arm(proto)

    def stop_checks(self) -> None:
        """Cancel the pending deadline checks (at stop, so no timer outlives the monitor)."""
        for call in self._checks:
            if call.active():
                call.cancel()
        self._checks.clear()


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
