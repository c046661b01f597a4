"""
``/metrics``: names and values after packets and events, the egress tick
hook, and counters that never go down when an endpoint set up at run time
goes away (on a memory reactor).
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase

from tests.monitor.harness import (
    A,
    NAME_A,
    NAME_B,
    PHONE_A,
    PHONE_B,
    DynamicCall,
    MonitoredBridge,
    bearer,
    counter_totals,
)
from xlbridge.engines.base import EngineDown, EngineUnavailable, EngineUp
from xlbridge.events import DropReason, LegCounters
from xlbridge.testing import pump_ticks


class MetricsTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        code, _, body = self.get("/metrics", bearer())
        self.assertEqual(code, 200)
        self.text = body.decode()
        out = {}
        for family in text_string_to_metric_families(self.text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def test_names_and_values_after_packets_and_events(self) -> None:
        call = self.start_call()
        self.speak(7777, frames=4)
        self.speak(7777, src=("10.0.0.9", 4000))  # a stranger while latched
        self.reactor.udp[7777].deliver(b"\x80", A)  # too short for RTP
        self.translate_once()
        self.asr.made["7777"].emit(EngineDown(EngineUnavailable("scripted", "gone"), self.reactor.seconds()))
        self.asr.made["7777"].emit(EngineUp("scripted", self.reactor.seconds()))
        self.bridge.egress.on_tick(0.003)  # type: ignore[attr-defined]
        m = self.samples()
        rtp = (("transport", "rtp"),)
        self.assertEqual(m[("xlbridge_packets_received_total", rtp)], 6)
        sent = sum(ep.counters.packets_out for ep in self.bridge.endpoints.values())
        self.assertEqual(m[("xlbridge_packets_sent_total", rtp)], sent)
        self.assertEqual(m[("xlbridge_packets_dropped_total", (("reason", "foreign_source"),))], 1)
        self.assertEqual(m[("xlbridge_packets_dropped_total", (("reason", "short"),))], 1)
        self.assertEqual(m[("xlbridge_packets_dropped_total", (("reason", "late"),))], 0)
        self.assertEqual(m[("xlbridge_active_calls", ())], 1)
        self.assertEqual(m[("xlbridge_active_legs", ())], 2)
        self.assertEqual(m[("xlbridge_calls_started_total", ())], 1)
        self.assertEqual(m[("xlbridge_egress_ticks_total", ())], self.bridge.egress.ticks)
        self.assertEqual(m[("xlbridge_stage_latency_seconds_count", (("stage", "mt"),))], 1)
        self.assertEqual(m[("xlbridge_stage_latency_seconds_count", (("stage", "asr"),))], 1)
        self.assertEqual(m[("xlbridge_speech_to_playback_seconds_count", ())], 1)
        # Every real tick feeds the histogram through the egress hook, plus
        # the one observed by hand above.
        ticks = self.bridge.egress.ticks
        self.assertEqual(m[("xlbridge_egress_interval_error_seconds_bucket", (("le", "0.005"),))], ticks + 1)
        self.assertEqual(m[("xlbridge_egress_interval_error_seconds_count", ())], ticks + 1)
        self.assertEqual(m[("xlbridge_engine_errors_total", (("engine", "scripted"),))], 1)
        self.assertEqual(m[("xlbridge_engine_reconnects_total", (("engine", "scripted"),))], 1)
        self.assertEqual(m[("xlbridge_monitor_clients", ())], 0)
        # No per-call or per-extension labels, and no call id anywhere.
        labels = {k for _, ls in m for k, _ in ls}
        self.assertEqual(labels - {"transport", "reason", "stage", "engine", "le"}, set())
        self.assertNotIn(call.call_id, self.text)
        self.assertNotIn("7777", self.text)
        for name, _ in m:
            self.assertTrue(name.startswith("xlbridge_"), name)

    def test_tick_hook_is_installed_while_running(self) -> None:
        egress: Any = self.bridge.egress
        self.assertEqual(egress.on_tick, self.monitor.observe_tick)
        before = self.monitor.egress_watch.last_tick
        pump_ticks(self.reactor, 1)
        self.assertEqual(self.monitor.egress_watch.last_tick, self.reactor.seconds())
        self.assertNotEqual(before, self.monitor.egress_watch.last_tick)
        self.monitor.stopService()
        self.assertIsNone(egress.on_tick)
        self.assertNotIn(self.monitor.metrics.observe, self.bridge.observers)

class LegCountersTests(SynchronousTestCase):
    def test_add_covers_every_field(self) -> None:
        a, b = LegCounters(), LegCounters()
        for i, field in enumerate(attrs.fields(LegCounters)):
            if field.name != "drops":
                setattr(a, field.name, i + 1)
                setattr(b, field.name, 100 * (i + 1))
        a.drop(DropReason.SHORT, 2)
        b.drop(DropReason.SHORT, 3)
        b.drop(DropReason.LATE)
        a.add(b)
        for i, field in enumerate(attrs.fields(LegCounters)):
            if field.name != "drops":
                self.assertEqual(getattr(a, field.name), 101 * (i + 1), field.name)
        self.assertEqual(a.snapshot()["drops"], {"late": 1, "short": 5})

class DynamicMetricsTests(DynamicCall, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def test_metrics_count_run_time_endpoints_and_never_go_down(self) -> None:
        self.start_call()  # the configured pair too
        self.dynamic_call()
        self.say(NAME_A, PHONE_A, frames=4)
        self.say(NAME_A, ("10.9.9.9", 1))  # a stranger: dropped
        self.ports[NAME_B].deliver(b"\x80", PHONE_B)  # too short for RTP
        pump_ticks(self.reactor, 5)
        rtp = (("transport", "rtp"),)
        everyone = [ep for _, ep, _ in self.bridge.all_endpoints()]
        before = self.metrics()
        self.assertEqual(before[("xlbridge_packets_received_total", rtp)], 2 + 6)
        self.assertEqual(before[("xlbridge_packets_sent_total", rtp)],
                         sum(ep.counters.packets_out for ep in everyone))
        dynamic = self.bridge.dynamic_endpoints
        self.assertGreater(dynamic[NAME_A].counters.packets_out + dynamic[NAME_B].counters.packets_out, 0)
        self.assertEqual(before[("xlbridge_packets_dropped_total", (("reason", "foreign_source"),))], 1)
        self.assertEqual(before[("xlbridge_packets_dropped_total", (("reason", "short"),))], 1)

        self.hang_up()
        self.assertEqual(self.bridge.dynamic_endpoints, {})
        doc = json.loads(self.get("/api/calls", bearer())[2])
        self.assertEqual(list(doc["endpoints"]), ["7777", "8888"])
        self.assertEqual(doc["recent"][0]["extensions"], [NAME_A, NAME_B])
        after = self.metrics()
        for key, value in counter_totals(before).items():
            self.assertGreaterEqual(after[key], value, key)
        self.assertEqual(after[("xlbridge_packets_received_total", rtp)], 8)
        self.assertEqual(after[("xlbridge_packets_dropped_total", (("reason", "short"),))], 1)
        # Later traffic on the configured legs adds to the retired counts.
        self.speak(7777, frames=2)
        pump_ticks(self.reactor, 2)
        later = self.metrics()
        self.assertEqual(later[("xlbridge_packets_received_total", rtp)], 10)
        sent = ("xlbridge_packets_sent_total", rtp)
        self.assertGreater(later[sent], after[sent])
