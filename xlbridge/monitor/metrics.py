"""
Prometheus metrics of the bridge, on a registry of its own.

Nothing here runs per packet.  Three feeds, each as cheap as its source
allows:

- **Scrape time**: :class:`~xlbridge.monitor.bridge_collector.BridgeCollector`
  (its own module) reads the counters the media path keeps anyway
  (:class:`~xlbridge.events.LegCounters` of every endpoint, configured or
  attached at run time, plus those of run-time endpoints already gone; the
  :class:`~xlbridge.egress.EgressClock`'s tick counts; the live calls;
  engine usage from :class:`~xlbridge.monitor.usage.UsageMeter`; readiness
  from :class:`~xlbridge.monitor.health.HealthCheck`; with ``--ari``, the ARI
  events socket's event, drop and liveness counts from
  :class:`~xlbridge.ari.events.ARIEvents`) when ``/metrics`` is fetched,
  and sums them over endpoints.
- **Events**: :meth:`BridgeMetrics.observe` is a bridge observer; latencies
  come from :class:`~xlbridge.events.TranscriptEvent` (ASR),
  :class:`~xlbridge.events.TranslationEvent` (MT) and
  :class:`~xlbridge.events.PlaybackStarted` (TTS first byte, queue wait, and
  end of speech to the first translated packet); engine trouble from
  :class:`~xlbridge.events.EngineStatusEvent`.
- **Egress ticks**: :meth:`BridgeMetrics.observe_tick` is called once per
  20 ms tick with the tick's lateness (the clock's ``on_tick`` hook), one
  histogram observation, about a microsecond, 50 times a second.

Naming follows Prometheus conventions: ``xlbridge_`` prefix, counters end in
``_total``, durations are ``_seconds``.  There are no per-call or
per-extension labels (their number is unbounded over time, or at least
unbounded per deployment); labels only take closed sets of values: drop
reasons (:class:`~xlbridge.events.DropReason`), stages, transport kinds, ARI
event types and drop reasons (fixed sets:
:mod:`xlbridge.ari.event_checks`), and engine names, which are capped
(:data:`~xlbridge.monitor.bridge_collector.MAX_LABEL_VALUES`) in case an
engine reports something unexpected.
"""

from __future__ import annotations

from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, exposition
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from xlbridge.bridge_view import MonitorView
from xlbridge.events import (
    CallEnded,
    CallStarted,
    EngineStatusEvent,
    Event,
    PlaybackStarted,
    SpeculationEvent,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)
from xlbridge.monitor.auth import TokenGuard
from xlbridge.monitor.bridge_collector import BridgeCollector, LabelCap, ViewerStats
from xlbridge.monitor.health import HealthCheck
from xlbridge.monitor.usage import UsageMeter

#: Content type of the text exposition format ``generate_latest`` writes.
CONTENT_TYPE: str = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

#: Speech latencies: tens of milliseconds to several seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
#: Egress tick lateness: well under a millisecond when healthy; a stall of a
#: whole tick (20 ms) and more is what callers hear.
TICK_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)
CALL_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

#: The latency stages, as label values of ``xlbridge_stage_latency_seconds``.
STAGES = ("asr", "mt", "tts_first_byte", "queue_wait")


def _base(language: str) -> str:
    return language.split("-")[0].lower()


class BridgeMetrics:
    """
    The registry and the event-fed metrics.

    :param bridge: what the monitor sees of the bridge (read at scrape
        time by :class:`~xlbridge.monitor.bridge_collector.BridgeCollector`).
    :param guard: its refusal counts are exported.
    :param hub: optional; the live WebSocket hub.
    :param usage: optional; engine usage (``xlbridge_*_total{engine}``).
    :param health: optional; readiness (``xlbridge_ready``).
    """

    def __init__(
        self, bridge: MonitorView, guard: Optional[TokenGuard] = None, hub: Optional[ViewerStats] = None,
        usage: Optional[UsageMeter] = None, health: Optional[HealthCheck] = None,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_latency = Histogram(
            "xlbridge_stage_latency_seconds",
            "Latency of one pipeline stage: asr (end of speech to final transcript), mt, "
            "tts_first_byte (request to first audio), queue_wait (first audio to first packet).",
            ["stage"], registry=r, buckets=LATENCY_BUCKETS,
        )
        self.speech_to_playback = Histogram(
            "xlbridge_speech_to_playback_seconds",
            "End of a caller's speech to the first packet of its translation on the wire.",
            registry=r, buckets=LATENCY_BUCKETS,
        )
        self.egress_error = Histogram(
            "xlbridge_egress_interval_error_seconds",
            "How late each 20 ms egress tick ran after its deadline.",
            registry=r, buckets=TICK_BUCKETS,
        )
        self.call_duration = Histogram(
            "xlbridge_call_duration_seconds", "Duration of ended calls.", registry=r, buckets=CALL_BUCKETS,
        )
        self.calls_started = Counter("xlbridge_calls_started_total", "Calls started.", registry=r)
        self.calls_ended = Counter(
            "xlbridge_calls_ended_total", "Calls ended, by reason.", ["reason"], registry=r
        )
        self.translations = Counter(
            "xlbridge_translations_total", "Final transcripts translated for the partner.", registry=r
        )
        self.utterances_dropped = Counter(
            "xlbridge_utterances_dropped_total",
            "Translated utterances not (fully) played, by reason (backlog, echo, failed).",
            ["reason"], registry=r,
        )
        self.speculations = Counter(
            "xlbridge_speculations_total",
            "Translations started on an eager end of turn, by outcome (started, used, wasted: paid for nothing).",
            ["outcome"], registry=r,
        )
        self.engine_errors = Counter(
            "xlbridge_engine_errors_total",
            "Engine failures that put a direction into fallback, by engine.",
            ["engine"], registry=r,
        )
        self.engine_reconnects = Counter(
            "xlbridge_engine_reconnects_total",
            "Engines working again after a failure, by engine.",
            ["engine"], registry=r,
        )
        for stage in STAGES:
            self.stage_latency.labels(stage)
        self._engine_label = LabelCap()
        self._reason_label = LabelCap()
        self.collector = BridgeCollector(bridge, guard, hub, usage, health)
        r.register(self.collector)

    def observe(self, event: Event) -> None:
        """
        Bridge observer: update the event-fed metrics.
        """
        if isinstance(event, TranscriptEvent):
            if event.is_final and event.asr_ms is not None:
                self.stage_latency.labels("asr").observe(max(0.0, event.asr_ms) / 1000)
        elif isinstance(event, TranslationEvent):
            self.translations.inc()
            # Same-language "translations" skip MT (mt_ms is 0): not a latency.
            if _base(event.language) != _base(event.source_language):
                self.stage_latency.labels("mt").observe(max(0.0, event.mt_ms) / 1000)
        elif isinstance(event, PlaybackStarted):
            for stage, ms in (("tts_first_byte", event.tts_first_byte_ms), ("queue_wait", event.queue_wait_ms)):
                if ms is not None:
                    self.stage_latency.labels(stage).observe(max(0.0, ms) / 1000)
            if event.total_ms is not None:
                self.speech_to_playback.observe(max(0.0, event.total_ms) / 1000)
        elif isinstance(event, EngineStatusEvent):
            engine = self._engine_label(event.engine)
            if event.state == "down":
                self.engine_errors.labels(engine).inc()
            elif event.state == "up":
                self.engine_reconnects.labels(engine).inc()
        elif isinstance(event, UtteranceDropped):
            self.utterances_dropped.labels(self._reason_label(event.reason)).inc()
        elif isinstance(event, SpeculationEvent):
            if event.outcome in ("started", "used", "wasted"):
                self.speculations.labels(event.outcome).inc()
        elif isinstance(event, CallStarted):
            self.calls_started.inc()
        elif isinstance(event, CallEnded):
            self.calls_ended.labels(self._reason_label(event.reason)).inc()
            self.call_duration.observe(max(0.0, event.duration))

    __call__ = observe

    def observe_tick(self, lateness: float) -> None:
        """
        The egress clock's per-tick hook: one tick ran ``lateness`` seconds
        after its deadline (never negative in the histogram).
        """
        self.egress_error.observe(lateness if lateness > 0.0 else 0.0)

    def exposition(self) -> bytes:
        """
        The text exposition of every metric.
        """
        return exposition.generate_latest(self.registry)



class MetricsResource(Resource):
    """
    ``/metrics``: renders the registry on the reactor thread.

    prometheus_client's own Twisted resource renders in a thread pool, which
    would read the bridge's counters while the reactor changes them; a
    scrape takes well under a millisecond, so it runs here instead.
    """

    isLeaf = True

    def __init__(self, metrics: BridgeMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        request.setHeader(b"cache-control", b"no-store")
        return self.metrics.exposition()

    render_HEAD = render_GET
