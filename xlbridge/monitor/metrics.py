"""
Prometheus metrics of the bridge, on a registry of its own.

Nothing here runs per packet.  Three feeds, each as cheap as its source
allows:

- **Scrape time**: :class:`BridgeCollector` reads the counters the media
  path keeps anyway (:class:`~xlbridge.events.LegCounters` of every
  endpoint, configured or attached at run time, plus those of run-time
  endpoints already gone; the :class:`~xlbridge.egress.EgressClock`'s tick
  counts; the live calls; engine usage from
  :class:`~xlbridge.monitor.usage.UsageMeter`; readiness from
  :class:`~xlbridge.monitor.health.HealthCheck`; with ``--ari``, the ARI
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
(:data:`MAX_LABEL_VALUES`) in case an engine reports something unexpected.
"""

from __future__ import annotations

from collections import Counter as _Counter
from typing import Iterable, Iterator, Optional, Protocol, Sized

from prometheus_client import CollectorRegistry, Counter, Histogram, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from xlbridge.ari.event_checks import ACTED_ON, OTHER, REASONS
from xlbridge.bridge_view import MonitorView

from xlbridge.events import (
    CallEnded,
    CallStarted,
    DropReason,
    EngineStatusEvent,
    Event,
    PlaybackStarted,
    SpeculationEvent,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)
from xlbridge.monitor.auth import TokenGuard, Verdict
from xlbridge.monitor.health import HealthCheck, ari_sockets
from xlbridge.monitor.usage import UsageMeter

#: Content type of the text exposition format ``generate_latest`` writes.
CONTENT_TYPE: str = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)

#: Most distinct values of a free-text label (engine names, reasons); more
#: are reported as ``"other"`` so a misbehaving engine cannot blow up the
#: number of series.
MAX_LABEL_VALUES = 16

#: Speech latencies: tens of milliseconds to several seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
#: Egress tick lateness: well under a millisecond when healthy; a stall of a
#: whole tick (20 ms) and more is what callers hear.
TICK_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5)
CALL_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

#: The latency stages, as label values of ``xlbridge_stage_latency_seconds``.
STAGES = ("asr", "mt", "tts_first_byte", "queue_wait")

#: Engine usage metrics: stage -> (name, help).  Label ``engine``.
USAGE_METRICS = {
    "asr": (
        "xlbridge_asr_audio_seconds_total",
        "Seconds of caller audio fed to the recogniser (streamed, for a cloud one), by engine.",
    ),
    "mt": (
        "xlbridge_mt_characters_total",
        "Characters of transcript sent to machine translation (context excluded), by engine.",
    ),
    "tts": (
        "xlbridge_tts_characters_total",
        "Characters of translated text sent to speech synthesis, by engine.",
    ),
}

#: Drop reasons counted in packets; ``BUFFER_FULL`` counts samples and gets
#: its own metric so one metric never mixes units.
PACKET_DROP_REASONS = tuple(r for r in DropReason if r is not DropReason.BUFFER_FULL)


class _Labels:
    """
    Caps the distinct values of one label at :data:`MAX_LABEL_VALUES`.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= MAX_LABEL_VALUES:
            return "other"
        self._seen.add(value)
        return value


class ViewerStats(Protocol):
    """
    What the metrics read of the live WebSocket hub.
    """

    @property
    def clients(self) -> Sized:
        """
        The connected viewers.
        """

    @property
    def dropped(self) -> int:
        """
        Messages dropped for slow viewers, over all viewers.
        """


def _base(language: str) -> str:
    return language.split("-")[0].lower()


class BridgeMetrics:
    """
    The registry and the event-fed metrics.

    :param bridge: what the monitor sees of the bridge (read at scrape
        time by :class:`BridgeCollector`).
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
        self._engine_label = _Labels()
        self._reason_label = _Labels()
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


class BridgeCollector:
    """
    Reads the bridge's own counters at scrape time (a prometheus_client
    custom collector).  Counters are cumulative per endpoint, and a run-time
    endpoint (an ARI leg) that goes away leaves its counts in the bridge's
    ``retired_counters``, which are added here, so the sums only grow.
    """

    def __init__(
        self, bridge: MonitorView, guard: Optional[TokenGuard] = None, hub: Optional[ViewerStats] = None,
        usage: Optional[UsageMeter] = None, health: Optional[HealthCheck] = None,
    ) -> None:
        self.bridge = bridge
        self.guard = guard
        self.hub = hub
        self.usage = usage
        self.health = health
        self._engine_label = _Labels()

    def describe(self) -> Iterable[Metric]:
        # Registering must not read the bridge: return nothing and let
        # collect() run at scrape time only.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._packets()
        yield from self._egress()
        yield from self._admission()
        yield from self._calls()
        yield from self._usage()
        yield from self._monitor()
        yield from self._ari()

    def _packets(self) -> Iterator[Metric]:
        fields = {
            "packets_in": ("xlbridge_packets_received_total", "Media packets received and decoded."),
            "packets_out": ("xlbridge_packets_sent_total", "Media packets sent (audio or silence)."),
            "bytes_in": ("xlbridge_received_payload_bytes_total", "Payload bytes received."),
            "bytes_out": ("xlbridge_sent_payload_bytes_total", "Payload bytes sent."),
            "silence_out": ("xlbridge_silence_packets_sent_total", "Packets sent carrying silence."),
            "lost": ("xlbridge_packets_lost_total", "Inbound packets never received (sequence gaps)."),
            # Kept by transports whose peer owns the playout clock (websocket).
            "xoff_ms": ("xlbridge_peer_queue_full_milliseconds_total",
                        "Time the peer said its playout queue was full (MEDIA_XOFF until MEDIA_XON)."),
            "flushed_bytes": ("xlbridge_flushed_payload_bytes_total",
                              "Payload bytes sent ahead, then dropped from the peer's queue by a flush (estimate)."),
            "marks_sent": ("xlbridge_playout_marks_sent_total", "Playout marks sent to the peer."),
            "marks_processed": ("xlbridge_playout_marks_processed_total",
                                "Playout marks the peer reported played."),
        }
        families = {k: CounterMetricFamily(n, h, labels=["transport"]) for k, (n, h) in fields.items()}
        sums: dict[str, _Counter[str]] = {k: _Counter() for k in fields}
        drops: _Counter[DropReason] = _Counter()
        counters = [(str(ep.kind), ep.counters) for _, ep, _ in self.bridge.all_endpoints()]
        counters.extend(self.bridge.retired_counters.items())
        for kind, c in counters:
            for k in fields:
                sums[k][kind] += getattr(c, k)
            drops.update(c.drops)
        for k, family in families.items():
            for kind, value in sorted(sums[k].items()):
                family.add_metric([kind], value)
            yield family
        dropped = CounterMetricFamily(
            "xlbridge_packets_dropped_total", "Inbound or outbound packets discarded, by reason.",
            labels=["reason"],
        )
        for reason in PACKET_DROP_REASONS:
            dropped.add_metric([reason.value], drops.get(reason, 0))
        yield dropped
        yield CounterMetricFamily(
            "xlbridge_outbound_samples_dropped_total",
            "Outbound audio samples discarded because a leg's buffer was full.",
            value=drops.get(DropReason.BUFFER_FULL, 0),
        )

    def _admission(self) -> Iterator[Metric]:
        admission = self.bridge.admission
        yield CounterMetricFamily(
            "xlbridge_media_connections_refused_total",
            "AudioSocket and WebSocket media connections refused: the peer's address is not in --media-allow.",
            value=admission.peers.refused,
        )
        refused = CounterMetricFamily(
            "xlbridge_calls_refused_total",
            "New calls refused because they started faster than --max-new-calls a second on their transport.",
            labels=["transport"],
        )
        for kind in ("audiosocket", "websocket"):
            refused.add_metric([kind], admission.refused_calls.get(kind, 0))
        yield refused

    def _egress(self) -> Iterator[Metric]:
        eg = self.bridge.egress
        yield CounterMetricFamily("xlbridge_egress_ticks_total", "Egress clock wake-ups.", value=eg.ticks)
        yield CounterMetricFamily(
            "xlbridge_egress_late_ticks_total", "20 ms intervals not served on time.", value=eg.late_ticks
        )
        yield CounterMetricFamily(
            "xlbridge_egress_skipped_ticks_total", "20 ms intervals never served (beyond the burst).",
            value=eg.skipped,
        )
        yield CounterMetricFamily(
            "xlbridge_egress_errors_total", "Exceptions caught in egress ticks.", value=eg.errors
        )
        yield GaugeMetricFamily(
            "xlbridge_egress_max_lateness_seconds", "Largest egress tick lateness since start.",
            value=eg.max_lateness,
        )

    def _calls(self) -> Iterator[Metric]:
        calls = self.bridge.active_calls()
        down = 0
        for call in calls:
            for pipeline in call.pipelines:
                if getattr(pipeline, "in_fallback", False):
                    down += 1
        yield GaugeMetricFamily("xlbridge_active_calls", "Calls in progress.", value=len(calls))
        yield GaugeMetricFamily(
            "xlbridge_active_legs", "Legs paced by the egress clock.", value=len(self.bridge.egress)
        )
        yield GaugeMetricFamily(
            "xlbridge_directions_in_fallback", "Call directions whose engine is down (in fallback).",
            value=down,
        )

    def _usage(self) -> Iterator[Metric]:
        if self.usage is None:
            return
        families = {
            stage: CounterMetricFamily(name, doc, labels=["engine"]) for stage, (name, doc) in USAGE_METRICS.items()
        }
        sums: dict[tuple[str, str], float] = {}
        for (stage, engine), amount in self.usage.totals().items():
            key = (stage, self._engine_label(engine))
            sums[key] = sums.get(key, 0.0) + amount
        for (stage, engine), amount in sorted(sums.items()):
            families[stage].add_metric([engine], amount)
        yield from families.values()

    def _monitor(self) -> Iterator[Metric]:
        if self.health is not None:
            yield GaugeMetricFamily(
                "xlbridge_ready", "1 while the bridge is ready to take calls (as /readyz says), else 0.",
                value=1 if self.health.check().ready else 0,
            )
        if self.guard is not None:
            refused = CounterMetricFamily(
                "xlbridge_monitor_auth_refused_total",
                "Monitor requests refused: missing (401) or wrong (403) token, or listen-in without the "
                "listen token (listen).",
                labels=["reason"],
            )
            for verdict in (Verdict.MISSING, Verdict.WRONG, Verdict.LISTEN):
                refused.add_metric([verdict.value], self.guard.refused.get(verdict, 0))
            yield refused
        if self.hub is not None:
            yield GaugeMetricFamily(
                "xlbridge_monitor_clients", "Connected monitor WebSocket clients.", value=len(self.hub.clients)
            )
            yield CounterMetricFamily(
                "xlbridge_monitor_messages_dropped_total",
                "Messages and audio frames dropped for slow monitor clients.",
                value=self.hub.dropped,
            )

    def _ari(self) -> Iterator[Metric]:
        sockets = ari_sockets(self.bridge)
        if not sockets:
            return  # no --ari: no ARI metrics
        received = CounterMetricFamily(
            "xlbridge_ari_events_total",
            "Events received on the ARI events WebSocket and handed to the controller, by type "
            "(other: types it does not act on).",
            labels=["type"],
        )
        dropped = CounterMetricFamily(
            "xlbridge_ari_events_dropped_total",
            "Messages on the ARI events WebSocket dropped as malformed, by reason.",
            labels=["reason"],
        )
        # Fixed label sets (never the peer's own event type), every value
        # from the start.
        for kind in (*ACTED_ON, OTHER):
            received.add_metric([kind], sum(events.counts.received.get(kind, 0) for events in sockets))
        yield received
        for reason in REASONS:
            dropped.add_metric([reason], sum(events.counts.dropped.get(reason, 0) for events in sockets))
        yield dropped
        yield CounterMetricFamily(
            "xlbridge_ari_pings_total", "Liveness pings sent on the ARI events WebSocket after a silence.",
            value=sum(events.liveness.pings for events in sockets),
        )
        yield CounterMetricFamily(
            "xlbridge_ari_liveness_drops_total",
            "ARI events WebSocket connections dropped because a liveness ping went unanswered.",
            value=sum(events.liveness.dead_count for events in sockets),
        )


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
