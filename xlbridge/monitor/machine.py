"""
The machine monitor: one page, one ``/metrics`` and one ``/api/calls`` for
a supervisor running ``--workers N`` worker processes.

Each worker serves its own monitor (:mod:`.service`) on
``127.0.0.1:<PORT+1+K>``; the supervisor serves this one on the configured
``--monitor`` endpoint and asks the workers over loopback with the shared
view token (:mod:`.worker_client`).  The same token rules as a worker's
monitor (:mod:`.auth`): ``/api/*`` needs the token, ``/metrics`` too unless
``metrics_open``; ``/healthz``, ``/livez`` and ``/readyz`` are open (they
name no call).

- ``/metrics``: every worker's metrics labelled ``worker="K"``, plus the
  supervisor's worker families (:func:`.machine_metrics.merge_metrics`).
  A worker that does not answer is down for that scrape; the scrape itself
  always answers 200.
- ``/api/calls``: the workers' ``/api/calls`` documents (see :mod:`.api`)
  merged: ``calls`` (oldest first) and ``recent`` (newest first) with a
  ``worker`` field each; ``egress`` keyed by worker (``"0"``, ``"1"``...);
  ``endpoints`` as one map (names are unique on a machine: each worker owns
  its ports and channels) whose entries carry ``worker``; and ``workers``,
  the supervisor's view of each plus whether its monitor answered.
- ``/healthz`` and ``/livez``: 200 while the supervisor runs (it answers).
- ``/readyz``: 200 iff at least one worker says it is ready, else 503;
  the body has every worker's answer.
- ``/``: a small page of its own (:mod:`.machine_page`): the workers, the
  merged calls and links to each worker's own page.  The worker page lives
  on its WebSocket (``/ws``: captions, levels, listen-in), which is not
  proxied here: the links open it where it runs, on loopback.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable, Optional, Sequence

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent, IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from xlbridge.monitor.api import to_json
from xlbridge.monitor.auth import GuardedResource, TokenGuard, TokenSource
from xlbridge.monitor.machine_metrics import (
    WorkerScrape,
    WorkerView,
    gather,
    merge_metrics,
)
from xlbridge.monitor.machine_page import ASSETS, PAGE
from xlbridge.monitor.metrics import CONTENT_TYPE
from xlbridge.monitor.quiet_site import QuietSite
from xlbridge.monitor.service import SiteListener, Branch, base_url
from xlbridge.monitor.static_files import secure_headers
from xlbridge.monitor.worker_client import FETCH_TIMEOUT, MAX_BODY, Fetched, WorkerClient

#: Answer of a deferred resource: status code, content type, body.
Answer = tuple[int, bytes, bytes]


class _Deferred(Resource):
    """
    A leaf that answers later: :meth:`answer` returns a Deferred of an
    :data:`Answer`.  A client that left meanwhile gets nothing written.
    """

    isLeaf = True
    log = Logger()

    def answer(self, request: IRequest) -> Deferred[Answer]:
        raise NotImplementedError

    def render_GET(self, request: Request) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda f: gone.append(True))

        def write(result: Answer) -> None:
            if gone:
                return
            code, content_type, body = result
            request.setResponseCode(code)
            request.setHeader(b"content-type", content_type)
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"x-content-type-options", b"nosniff")
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("machine monitor: answering failed", failure)
            write((500, b"application/json", b'{"error": "internal error"}\n'))

        self.answer(request).addCallback(write).addErrback(failed)
        return NOT_DONE_YET


class MachineMetricsResource(_Deferred):
    """
    ``/metrics``: the workers' metrics merged (see the module docstring).
    """

    def __init__(self, monitor: "MachineMonitorService") -> None:
        super().__init__()
        self.monitor = monitor

    def answer(self, request: IRequest) -> Deferred[Answer]:
        views = self.monitor.views()
        monitor = self.monitor

        def merge(scrapes: list[WorkerScrape]) -> Answer:
            body = merge_metrics(monitor.configured, scrapes, monitor.scrape_errors, monitor.counted_errors,
                                 monitor.collectors)
            return 200, CONTENT_TYPE.encode("ascii"), body

        return gather(self.monitor.client, views, "metrics").addCallback(merge)


def _json(fetched: Optional[Fetched]) -> Optional[dict[str, Any]]:
    """
    A worker's JSON answer as a dict, or ``None`` (no answer, not JSON, not
    an object).
    """
    if fetched is None or fetched.error is not None:
        return None
    try:
        doc = json.loads(fetched.body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _worker_row(scrape: WorkerScrape, answered: bool) -> dict[str, Any]:
    view = scrape.view
    row: dict[str, Any] = {
        "worker": view.index, "up": view.up, "pid": view.pid, "restarts": view.restarts,
        "crash_loop": view.crash_loop, "monitor": view.url, "answered": answered,
    }
    fetched = scrape.fetched
    if fetched is not None and not answered:
        row["error"] = fetched.error or f"HTTP {fetched.code}"
    return row


def merge_calls(scrapes: Sequence[WorkerScrape], now: float) -> dict[str, Any]:
    """
    The machine's ``/api/calls`` document from the workers' (see the module
    docstring).
    """
    calls: list[dict[str, Any]] = []
    recent: list[dict[str, Any]] = []
    egress: dict[str, Any] = {}
    endpoints: dict[str, Any] = {}
    workers = []
    for scrape in scrapes:
        k = scrape.view.index
        doc = _json(scrape.fetched) if scrape.fetched is not None and scrape.fetched.code == 200 else None
        workers.append(_worker_row(scrape, doc is not None))
        if doc is None:
            continue
        calls.extend({**c, "worker": k} for c in doc.get("calls", []) if isinstance(c, dict))
        recent.extend({**c, "worker": k} for c in doc.get("recent", []) if isinstance(c, dict))
        egress[str(k)] = doc.get("egress", {})
        for name, info in (doc.get("endpoints") or {}).items():
            endpoints[name] = {**info, "worker": k} if isinstance(info, dict) else info
    calls.sort(key=lambda c: c.get("started_at") or 0.0)
    recent.sort(key=lambda c: c.get("ended_at") or 0.0, reverse=True)
    return {
        "time": now, "workers": workers, "egress": egress, "endpoints": endpoints,
        "calls": calls, "recent": recent,
    }


class MachineCallsResource(_Deferred):
    """
    ``GET /api/calls``: :func:`merge_calls` (behind the token).
    """

    def __init__(self, monitor: "MachineMonitorService") -> None:
        super().__init__()
        self.monitor = monitor

    def answer(self, request: IRequest) -> Deferred[Answer]:
        def merge(scrapes: list[WorkerScrape]) -> Answer:
            doc = merge_calls(scrapes, self.monitor.reactor.seconds())
            return 200, b"application/json; charset=utf-8", to_json(doc)

        return gather(self.monitor.client, self.monitor.views(), "api/calls").addCallback(merge)


class MachineReadyResource(_Deferred):
    """
    ``/readyz``: 200 iff a worker is ready; JSON with each worker's
    status (and reasons when not ready).  Open, like a worker's.
    """

    def __init__(self, monitor: "MachineMonitorService") -> None:
        super().__init__()
        self.monitor = monitor

    def answer(self, request: IRequest) -> Deferred[Answer]:
        def judge(scrapes: list[WorkerScrape]) -> Answer:
            workers: dict[str, Any] = {}
            for scrape in scrapes:
                doc = _json(scrape.fetched)
                ready = doc is not None and scrape.fetched is not None and scrape.fetched.code == 200
                entry: dict[str, Any] = {"up": scrape.view.up, "ready": ready}
                if doc is not None and doc.get("reasons"):
                    entry["reasons"] = doc["reasons"]
                elif not ready:
                    entry["reasons"] = [_unready(scrape)]
                workers[str(scrape.view.index)] = entry
            count = sum(1 for w in workers.values() if w["ready"])
            body = {"status": "ready" if count else "not ready", "ready_workers": count, "workers": workers}
            return 200 if count else 503, b"application/json", json.dumps(body).encode("utf-8") + b"\n"

        return gather(self.monitor.client, self.monitor.views(), "readyz").addCallback(judge)


def _unready(scrape: WorkerScrape) -> str:
    if scrape.view.crash_loop:
        return "crash loop: held back by the supervisor"
    if not scrape.view.up or not scrape.view.url:
        return "not running"
    fetched = scrape.fetched
    if fetched is not None and fetched.error:
        return f"monitor: {fetched.error}"
    return f"monitor answered HTTP {fetched.code if fetched is not None else 0}"


class _Alive(Resource):
    """
    ``/healthz`` and ``/livez``: the supervisor answers, so it runs.
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return b'{"status": "live"}\n'


class _Asset(Resource):
    """
    The page or one of its assets, open (they hold no data and no token).
    """

    isLeaf = True

    def __init__(self, content_type: bytes, body: bytes) -> None:
        super().__init__()
        self.content_type = content_type
        self.body = body

    def render_GET(self, request: IRequest) -> bytes:
        secure_headers(request, self.content_type)
        return self.body


class MachineMonitorService(MultiService):
    """
    The machine monitor: site and listener, and the client that asks the
    workers.

    :param workers: the supervisor's current view of its workers, asked on
        every request.
    :param configured: worker processes configured (``xlbridge_workers``);
        by default the number of views at each request.
    :ivar scrape_errors: failed ``/metrics`` fetches of running workers, by
        worker index.
    """

    log = Logger()

    def __init__(
        self, reactor: Any, endpoint: Any, workers: Callable[[], Sequence[WorkerView]], guard: TokenGuard,
        metrics_open: bool = False, scheme: str = "http", *, agent: Optional[IAgent] = None,
        timeout: float = FETCH_TIMEOUT, max_body: int = MAX_BODY, configured: Optional[int] = None,
        collectors: Sequence[Any] = (),
    ) -> None:
        super().__init__()
        self.setName("machine-monitor")
        #: the supervisor's own prometheus_client collectors (the dispatcher's counts)
        self.collectors = tuple(collectors)
        self.reactor: IReactorTime = reactor
        self.workers = workers
        self.guard = guard
        self.scheme = scheme
        self._configured = configured
        self.client = WorkerClient(reactor, guard.token, agent, timeout=timeout, max_body=max_body)
        self.scrape_errors: Counter[int] = Counter()
        self.counted_errors: dict[int, int] = {}
        self.root = Resource()
        self.root.putChild(b"", _Asset(b"text/html; charset=utf-8", PAGE))
        for name, (content_type, body) in ASSETS.items():
            self.root.putChild(name, _Asset(content_type, body))
        self.root.putChild(b"healthz", _Alive())
        self.root.putChild(b"livez", _Alive())
        self.root.putChild(b"readyz", MachineReadyResource(self))
        api = Branch()
        api.putChild(b"calls", MachineCallsResource(self))
        self.root.putChild(b"api", GuardedResource(api, guard))
        metrics = MachineMetricsResource(self)
        self.root.putChild(b"metrics", metrics if metrics_open else GuardedResource(metrics, guard))
        self.site = QuietSite(self.root, reactor=reactor)
        self.listener = SiteListener(endpoint, self.site, self._listening)
        self.listener.setServiceParent(self)
        self.url: Optional[str] = None

    @property
    def configured(self) -> int:
        return self._configured if self._configured is not None else len(self.workers())

    def views(self) -> list[WorkerView]:
        """
        The supervisor's view now, by worker index.
        """
        return sorted(self.workers(), key=lambda v: v.index)

    @property
    def port(self) -> Optional[IListeningPort]:
        return self.listener.port

    def stopService(self) -> Deferred[None]:
        self.site.stop_checks()
        d: Deferred[None] = super().stopService()
        closing = self.client.close()
        return d.addCallback(lambda _: closing)

    def _listening(self, port: IListeningPort) -> None:
        base = base_url(port.getHost(), self.scheme) or f"{self.scheme}://localhost/"
        if self.guard.source is TokenSource.GENERATED:
            # Generated by the supervisor: this line is the only way to learn it.
            self.url = f"{base}?token={self.guard.token}"
            self.log.info("machine monitor: open {url}", url=self.url)
        else:
            self.url = f"{base}?token=<token from {self.guard.source.value}>"
            self.log.info("machine monitor on {base} (token from {source})", base=base,
                          source=self.guard.source.value)


def make_machine_monitor(
    reactor: Any,
    description: str,
    workers: Callable[[], Sequence[WorkerView]],
    token: str,
    metrics_open: bool = False,
    listen_token: Optional[str] = None,
    token_source: TokenSource = TokenSource.CONFIG,
    **options: Any,
) -> MachineMonitorService:
    """
    Build the supervisor's machine monitor.

    :param reactor: provides ``IReactorTCP`` and ``IReactorTime`` (and name
        resolution, for the default agent).
    :param description: strports server description (the configured
        ``--monitor``); a bad one raises ``ValueError`` here.
    :param workers: the supervisor's current view of its workers.
    :param token: the view token, shared with the workers (the supervisor
        resolved it with :func:`.auth.resolve_token`).
    :param listen_token: opens nothing more here (no listen-in on this
        page), but is accepted for viewing as on a worker's monitor.
    :param token_source: where ``token`` came from; ``GENERATED`` logs the
        page URL with it once.
    :param options: passed to :class:`MachineMonitorService` (``agent``,
        ``timeout``, ``max_body``, ``configured``).
    """
    endpoint = serverFromString(reactor, description)
    scheme = "https" if description.split(":", 1)[0].lower() in ("ssl", "tls") else "http"
    guard = TokenGuard(token, token_source, listen_token, TokenSource.CONFIG if listen_token else None)
    return MachineMonitorService(reactor, endpoint, workers, guard, metrics_open, scheme, **options)
