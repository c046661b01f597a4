"""
The machine monitor's view of its workers: what the supervisor says of
each, bounded HTTP fetches from their own monitors, and one ``/metrics``
for the whole machine.

With ``--workers N`` each worker process serves its own monitor on
``127.0.0.1``; the supervisor's machine monitor (:mod:`.machine`) asks
them over loopback HTTP with the shared view token:

- :class:`~xlbridge.monitor.worker_client.WorkerClient` (its own module)
  fetches one path of one worker's monitor with a deadline and a size
  limit, never raises (a failure is a
  :class:`~xlbridge.monitor.worker_client.Fetched` with an ``error``), and
  keeps at most one fetch in flight per worker and path; :func:`gather`
  asks every running worker at once.
- :func:`merge_metrics` re-emits every worker's samples with a
  ``worker="K"`` label (families keep one ``HELP``/``TYPE``; counter,
  histogram and ``_created`` names are kept as the workers wrote them),
  plus the supervisor's own families (:data:`SUPERVISOR_FAMILIES`).
  Summing is left to PromQL (``sum without (worker) (...)``): labelled
  figures keep a worker's restart (its counters going back to zero)
  visible to ``rate()``, which a sum made here would hide.

Worker labels take at most N values; the workers' own metrics carry no
per-call labels (see :mod:`.metrics`), so neither does the merge.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterator, Optional, Sequence

import attrs
from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred

from xlbridge.monitor.worker_client import Fetched, WorkerClient

#: The supervisor's families; a worker family of the same name is dropped.
SUPERVISOR_FAMILIES = (
    "xlbridge_workers",
    "xlbridge_workers_up",
    "xlbridge_worker_up",
    "xlbridge_worker_restarts",
    "xlbridge_worker_crash_loop",
    "xlbridge_worker_scrape_errors",
)


@attrs.frozen
class WorkerView:
    """
    What the supervisor knows of worker ``index`` right now.

    :ivar url: its monitor's base URL (``http://127.0.0.1:3002/``), or
        ``None`` while it has none (not started, dead, restarting).
    :ivar pid: its process id, ``None`` while it has no process.
    :ivar up: its process runs (the supervisor's view, not its monitor's).
    :ivar restarts: times the supervisor restarted it.
    :ivar crash_loop: the supervisor holds it back for dying too often.
    """

    index: int
    url: Optional[str]
    pid: Optional[int] = None
    up: bool = False
    restarts: int = 0
    crash_loop: bool = False

@attrs.frozen
class WorkerScrape:
    """
    One worker's part of one machine scrape.

    :ivar fetched: its monitor's answer (``None``: not asked, it had no
        URL or was down).
    """

    view: WorkerView
    fetched: Optional[Fetched]


def parse_worker(body: bytes) -> list[Metric]:
    """
    A worker's ``/metrics`` body as families; raises ``ValueError`` (or
    what the parser raises) on a body that is not the text format.
    """
    return list(text_string_to_metric_families(body.decode("utf-8")))


class MachineCollector:
    """
    A prometheus_client collector over one machine scrape (see the module
    docstring).  Built per scrape: it holds the workers' parsed families.

    :param configured: worker processes configured (N).
    :param errors: scrape errors so far by worker index (updated here for
        this scrape's failures).
    :param counted: by worker index, the serial of the last fetch whose
        failure is already in ``errors`` (updated here): two scrapes that
        shared one failed fetch count one error.
    """

    def __init__(
        self, configured: int, scrapes: Sequence[WorkerScrape], errors: Counter[int], counted: dict[int, int]
    ) -> None:
        self.configured = configured
        self.up: dict[int, bool] = {}
        self.parsed: dict[int, list[Metric]] = {}
        self.scrapes = scrapes
        self.errors = errors
        for scrape in scrapes:
            k = scrape.view.index
            families: Optional[list[Metric]] = None
            if scrape.view.up and scrape.fetched is not None:
                if scrape.fetched.ok:
                    try:
                        families = parse_worker(scrape.fetched.body)
                    except Exception:
                        families = None
                if families is None and counted.get(k) != scrape.fetched.serial:
                    counted[k] = scrape.fetched.serial
                    errors[k] += 1
            self.up[k] = families is not None
            if families is not None:
                self.parsed[k] = families

    def collect(self) -> Iterator[Metric]:
        yield from self._supervisor()
        yield from self._merged()

    def _supervisor(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("xlbridge_workers", "Worker processes configured.", value=self.configured)
        yield GaugeMetricFamily(
            "xlbridge_workers_up", "Workers whose monitor answered this scrape.", value=sum(self.up.values())
        )
        up = GaugeMetricFamily(
            "xlbridge_worker_up", "1 if the worker runs and its monitor answered this scrape, else 0.",
            labels=["worker"],
        )
        restarts = CounterMetricFamily(
            "xlbridge_worker_restarts", "Times the supervisor restarted the worker.", labels=["worker"]
        )
        loop = GaugeMetricFamily(
            "xlbridge_worker_crash_loop", "1 while the supervisor holds the worker back for dying too often.",
            labels=["worker"],
        )
        errors = CounterMetricFamily(
            "xlbridge_worker_scrape_errors",
            "Scrapes of a running worker's monitor that failed (no answer in time, refused, too large, "
            "not metrics).",
            labels=["worker"],
        )
        for scrape in self.scrapes:
            k = scrape.view.index
            label = [str(k)]
            up.add_metric(label, 1 if self.up.get(k) else 0)
            restarts.add_metric(label, scrape.view.restarts)
            loop.add_metric(label, 1 if scrape.view.crash_loop else 0)
            errors.add_metric(label, self.errors.get(k, 0))
        yield from (up, restarts, loop, errors)

    def _merged(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for k in sorted(self.parsed):
            for family in self.parsed[k]:
                if family.name in SUPERVISOR_FAMILIES:
                    continue
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                elif into.type != family.type:
                    continue  # workers of different versions disagree: keep the first
                for s in family.samples:
                    into.add_sample(s.name, _with_worker(s.labels, k), s.value, s.timestamp, s.exemplar)
        yield from merged.values()


def _with_worker(labels: dict[str, str], k: int) -> dict[str, str]:
    out = dict(labels)
    if "worker" in out:
        # As Prometheus does with a target's label that clashes with its own.
        out["exported_worker"] = out.pop("worker")
    out["worker"] = str(k)
    return out


def merge_metrics(
    configured: int, scrapes: Sequence[WorkerScrape], errors: Counter[int], counted: dict[int, int],
    extra: Sequence[Any] = (),
) -> bytes:
    """
    The machine's ``/metrics`` body (text format 0.0.4) for one scrape (see
    :class:`MachineCollector` for ``errors`` and ``counted``), with the
    families of the ``extra`` collectors (the supervisor's own).
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MachineCollector(configured, scrapes, errors, counted))  # type: ignore[arg-type]
    for collector in extra:
        registry.register(collector)
    body: bytes = exposition.generate_latest(registry)
    return body


WorkersSource = Callable[[], Sequence[WorkerView]]


def gather(
    client: WorkerClient, views: Sequence[WorkerView], path: str
) -> Deferred[list[WorkerScrape]]:
    """
    Ask every running worker for ``path`` at once; fires with one
    :class:`WorkerScrape` per view, in order, when all answered or timed
    out (never fails).
    """
    results: list[Optional[Fetched]] = [None] * len(views)
    done: Deferred[list[WorkerScrape]] = Deferred()
    pending = sum(1 for v in views if v.up and v.url)

    def finish() -> None:
        if pending == 0 and not done.called:
            done.callback([WorkerScrape(v, r) for v, r in zip(views, results)])

    def landed(result: Fetched, i: int) -> None:
        nonlocal pending
        results[i] = result
        pending -= 1
        finish()

    for i, view in enumerate(views):
        if view.up and view.url:
            client.get(view.url, path).addCallback(landed, i)
    finish()
    return done
