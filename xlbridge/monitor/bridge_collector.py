"""
The scrape-time half of the bridge's Prometheus metrics: a custom
collector that reads the counters the media path keeps anyway.

It lives apart from :mod:`.metrics` (the registry and the event-fed
histograms and counters) because it is a different feed with different
rules: nothing here is updated by the bridge; every figure is read from
the bridge's own state when ``/metrics`` is fetched, on the reactor
thread, and summed over endpoints (per-endpoint
:class:`~xlbridge.events.LegCounters`, configured or attached at run time,
plus those of run-time endpoints already gone; the
:class:`~xlbridge.egress.EgressClock`'s tick counts; the live calls;
engine usage from :class:`~xlbridge.monitor.usage.UsageMeter`; readiness
from :class:`~xlbridge.monitor.health.HealthCheck`; with ``--ari``, the
ARI events socket's counts from :class:`~xlbridge.ari.events.ARIEvents`).

Units are in the metric names: ``_seconds``, ``_milliseconds_total``,
``_bytes_total`` (payload bytes, not wire bytes), packets or samples
otherwise.  Labels only take closed sets of values (see :mod:`.metrics`);
free-text ones (engine names) go through :class:`LabelCap`.
"""

from __future__ import annotations

from collections import Counter as _Counter
from typing import Iterable, Iterator, Optional, Protocol, Sized

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from xlbridge.ari.event_checks import ACTED_ON, OTHER, REASONS
from xlbridge.bridge_view import MonitorView
from xlbridge.events import DropReason
from xlbridge.monitor.auth import TokenGuard, Verdict
from xlbridge.monitor.health import HealthCheck, ari_sockets
from xlbridge.monitor.usage import UsageMeter

#: Most distinct values of a free-text label (engine names, reasons); more
#: are reported as ``"other"`` so a misbehaving engine cannot blow up the
#: number of series.
MAX_LABEL_VALUES = 16

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


class LabelCap:
    """
    Caps the distinct values of one label at :data:`MAX_LABEL_VALUES`:
    later new values come back as ``"other"``.  Shared by the event-fed
    metrics (:class:`~xlbridge.monitor.metrics.BridgeMetrics`) and the
    collector, each with its own instances (one per label).
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        """
        ``value`` itself while fewer than :data:`MAX_LABEL_VALUES` distinct
        values were seen (or it is one of them), else ``"other"``.
        """
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
        self._engine_label = LabelCap()

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
