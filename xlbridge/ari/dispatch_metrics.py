"""
The dispatcher's figures for the machine monitor's ``/metrics``: a
``prometheus_client`` collector reading :class:`~.dispatcher.ARIDispatcher`
at scrape time (no per-call or per-app labels: the label sets are fixed).
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from xlbridge.ari.dispatcher import ARIDispatcher

__all__ = ["DispatcherCollector"]

#: ``counts`` key -> the ``outcome`` label of ``xlbridge_dispatch_total``.
OUTCOMES = ("dispatched", "move_failed", "rescued", "dropped", "errors")


class DispatcherCollector(Collector):
    """
    ``xlbridge_dispatch_total{outcome}``: callers moved to a worker
    (``dispatched``), moves Asterisk could not make (``move_failed``: the
    app was not active), callers rescued from dead workers (``rescued``),
    callers hung up because too many waited (``dropped``), failed requests
    (``errors``); ``xlbridge_dispatch_waiting``: callers waiting for a
    live worker; ``xlbridge_dispatch_connected``: the entry app's events
    socket is up; ``xlbridge_dispatch_dead_apps``: worker apps skipped now.
    """

    def __init__(self, dispatcher: ARIDispatcher) -> None:
        self.dispatcher = dispatcher

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        d = self.dispatcher
        total = CounterMetricFamily("xlbridge_dispatch", "Callers of the entry app, by what the dispatcher did",
                                    labels=["outcome"])
        for outcome in OUTCOMES:
            total.add_metric([outcome], d.counts.get(outcome, 0))
        yield total
        status = d.status()
        yield GaugeMetricFamily("xlbridge_dispatch_waiting", "Callers waiting for a live worker", status["waiting"])
        yield GaugeMetricFamily("xlbridge_dispatch_connected", "The entry app's events socket is up",
                                1 if status["connected"] else 0)
        yield GaugeMetricFamily("xlbridge_dispatch_dead_apps", "Worker apps given no callers now", len(status["dead"]))
