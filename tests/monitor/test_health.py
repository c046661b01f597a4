"""
``/readyz`` and ``/livez``: ready while everything runs, listens, ticks on
time and (with ARI) is connected; 503 with the reasons otherwise; no token.
On a memory reactor.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.monitor.harness import MonitoredBridge, bearer, parse_metrics
from xlbridge.ari.events import ARIEvents
from xlbridge.monitor.health import MAX_LATENESS_S, STALL_S, WINDOW_S, EgressWatch
from xlbridge.testing import pump_ticks


class HealthEndpointTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def health(self, path: str = "/readyz") -> tuple[int, dict[str, Any]]:
        code, headers, body = self.get(path)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-store"])
        return code, json.loads(body)

    def test_ready_and_live_without_a_token(self) -> None:
        pump_ticks(self.reactor, 5)
        code, body = self.health()
        self.assertEqual((code, body["status"]), (200, "ready"))
        self.assertNotIn("reasons", body)
        self.assertEqual(body["listeners"], {"bound": 2, "total": 2})
        self.assertEqual(body["ari"], "off")
        self.assertLess(body["egress"]["last_tick_ago_ms"], 20.0)
        self.assertEqual(self.health("/livez"), (200, {**body, "status": "live"}))
        self.assertEqual(sum(self.monitor.guard.refused.values()), 0)

    def test_no_call_data_in_the_answer(self) -> None:
        call = self.start_call()
        self.translate_once("hello", "hola")
        _, _, body = self.get("/readyz")
        for secret in (call.call_id, "hello", "hola", "7777", "8888"):
            self.assertNotIn(secret.encode(), body)

    def test_late_ticks_make_it_not_ready_for_a_while_but_still_live(self) -> None:
        pump_ticks(self.reactor, 5)
        self.reactor.advance(0.5)  # a stalled reactor: the next tick runs 480 ms late
        code, body = self.health()
        self.assertEqual((code, body["status"]), (503, "not ready"))
        (reason,) = body["reasons"]
        self.assertIn("egress clock ran", reason)
        self.assertIn(f"limit {MAX_LATENESS_S * 1000:.0f} ms", reason)
        self.assertEqual(self.health("/livez")[0], 200)
        pump_ticks(self.reactor, int(WINDOW_S / 0.02) + 5)  # a window of on-time ticks
        self.assertEqual(self.health()[0], 200)

    def test_a_clock_that_stops_ticking_is_not_live(self) -> None:
        pump_ticks(self.reactor, 5)
        self.bridge.egress.on_tick = None  # ticks no longer reach the watch
        pump_ticks(self.reactor, int(STALL_S / 0.02) + 5)
        code, body = self.health("/livez")
        self.assertEqual((code, body["status"]), (503, "not live"))
        self.assertIn("has not ticked for", body["reasons"][0])
        self.assertEqual(self.health()[0], 503)

    def test_stopped_egress_clock(self) -> None:
        self.bridge.egress.stopService()
        code, body = self.health("/livez")
        self.assertEqual((code, body["reasons"]), (503, ["the egress clock is not running"]))

    def test_unbound_listener(self) -> None:
        self.bridge.listeners["7777"].stopService()
        code, body = self.health()
        self.assertEqual((code, body["reasons"]), (503, ["rtp-7777 is not running"]))
        self.assertEqual(body["listeners"], {"bound": 1, "total": 2})
        self.assertEqual(self.health("/livez")[0], 200)  # a restart would not help

    def test_stopping_bridge(self) -> None:
        self.bridge.stopService()
        health = self.monitor.health.check()
        self.assertFalse(health.ready)
        self.assertIn("the bridge is not running (starting or stopping)", health.reasons)

    def test_ari_events_must_be_connected(self) -> None:
        class Never:
            def connect(self, factory: Any) -> Deferred[Any]:
                return Deferred()

        events = ARIEvents(
            self.reactor, "http://127.0.0.1:8088", "xlbridge", "user", "secret", lambda e: None,
            endpoint=Never(),  # type: ignore[arg-type]
        )
        events.setServiceParent(self.bridge)
        self.addCleanup(events.disownServiceParent)
        code, body = self.health()
        self.assertEqual(code, 503)
        self.assertEqual(len(body["reasons"]), 1)
        self.assertIn("ARI events WebSocket is not connected", body["reasons"][0])
        self.assertNotIn("secret", json.dumps(body))
        self.assertEqual(self.health("/livez")[0], 200)  # Asterisk away: do not restart us
        self.patch(ARIEvents, "connected", True)
        code, body = self.health()
        self.assertEqual((code, body["ari"]), (200, "connected"))

    def test_head_and_ready_gauge(self) -> None:
        d = self.http.head("http://monitor/readyz")
        self.http.flush()
        self.assertEqual(self.successResultOf(d).code, 200)
        code, _, text = self.get("/metrics", bearer())
        self.assertEqual(parse_metrics(text.decode())[("xlbridge_ready", ())], 1.0)
        self.bridge.listeners["8888"].stopService()
        _, _, text = self.get("/metrics", bearer())
        self.assertEqual(parse_metrics(text.decode())[("xlbridge_ready", ())], 0.0)


class EgressWatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.watch = EgressWatch(self.clock, interval=0.02, window=10.0)

    def ticks(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.02)):
            self.clock.advance(0.02)
            self.watch.tick(0.0)

    def test_silence_counts_from_the_start_then_from_the_last_tick(self) -> None:
        self.assertEqual((self.watch.silent_for(), self.watch.worst_lateness()), (0.0, 0.0))
        self.clock.advance(1.0)
        self.assertEqual(self.watch.silent_for(), 1.0)
        self.watch.tick(0.3)  # the first tick: its own lateness
        self.assertEqual((self.watch.silent_for(), self.watch.worst_lateness(), self.watch.last_tick), (0.0, 0.3, 1.0))
        self.watch.reset()
        self.assertEqual((self.watch.last_tick, self.watch.worst_lateness()), (None, 0.0))

    def test_a_stall_shows_in_the_gap_and_fades_after_a_window(self) -> None:
        self.ticks(1.0)
        self.assertLess(self.watch.worst_lateness(), 1e-9)
        self.clock.advance(0.5)
        self.watch.tick(0.001)  # the late tick's own lateness is small
        self.assertAlmostEqual(self.watch.worst_lateness(), 0.48)
        self.ticks(5.0)
        self.assertAlmostEqual(self.watch.worst_lateness(), 0.48)  # still within the window
        self.ticks(5.0)
        self.assertLess(self.watch.worst_lateness(), 1e-9)
