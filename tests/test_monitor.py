"""
Tests for the monitor's HTTP side on a memory reactor: token checks,
``/api/calls`` with a live translated call, and the Prometheus exposition.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

import numpy as np
import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.defer import fail
from twisted.internet.error import CannotListenError
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.engines.base import EngineDown, EngineUnavailable, EngineUp, Transcript
from xlbridge.monitor import auth
from xlbridge.monitor.auth import ENV_VAR, TokenGuard, TokenSource, Verdict, resolve_token
from xlbridge.monitor.service import MonitorService, make_monitor
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.translate import Engines, TranslateSettings
from xlbridge.rtp.packet import build
from xlbridge.testing import ManualMT, ManualTTS, MemoryUDPReactor, ScriptedASRFactory, pump_ticks

A = ("127.0.0.1", 10000)
B = ("127.0.0.1", 10002)
TOKEN = "s3cret-token-for-tests"


class MonitoredBridge:
    """
    A translating bridge on a memory reactor with a monitor on it (a mixin,
    shared with ``test_monitor_live``).
    """

    metrics_open = False

    def build(self, **monitor_options: Any) -> None:
        self.reactor = MemoryUDPReactor()
        self.asr = ScriptedASRFactory()
        self.mt = ManualMT()
        self.tts = ManualTTS()
        engines = Engines(self.asr, self.mt, self.tts, {"asr": "scripted", "mt": "manual", "tts": "manual"})
        cfg = load_config({"ports": "7777,8888", "langs": "en,es", "reply-codec": "slin16"})
        settings = TranslateSettings(comfort_noise_dbfs=None)
        self.bridge = BridgeService(cfg, self.reactor, pipeline_factory=translate_factory(engines, settings))
        self.monitor: MonitorService = make_monitor(
            self.bridge, self.reactor, "tcp:0:interface=127.0.0.1", token=TOKEN,
            metrics_open=self.metrics_open, environ={}, **monitor_options,
        )
        self.monitor.setServiceParent(self.bridge)
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(lambda: self.bridge.running and self.bridge.stopService())  # type: ignore[attr-defined]
        self.seq = {7777: 0, 8888: 0}
        self.http = StubTreq(self.monitor.root)

    def speak(self, port: int, value: int = 100, frames: int = 1, src: Any = None) -> None:
        src = src or (A if port == 7777 else B)
        for _ in range(frames):
            seq = self.seq[port]
            self.seq[port] += 1
            payload = np.full(320, value, dtype=np.int16).astype(">i2").tobytes()
            self.reactor.udp[port].deliver(build(118, seq, seq * 320, 1, payload), src)

    def start_call(self) -> Any:
        self.speak(7777)
        self.speak(8888)
        (call,) = self.bridge.active_calls()
        return call

    def translate_once(self, text: str = "hello", translation: str = "hola") -> None:
        """7777 says ``text``; 8888 hears ``translation`` (one frame)."""
        now = self.reactor.seconds()
        self.asr.made["7777"].emit(Transcript(text, False, False, 0.0, 0.02, now))
        self.asr.made["7777"].emit(Transcript(text, True, True, 0.0, 0.02, now + 0.3))
        self.reactor.advance(0.2)
        self.mt.requests[-1][4].callback(translation)
        self.reactor.advance(0.1)
        self.tts.requests[-1][2](np.full(320, 1000, dtype=np.int16))
        self.tts.requests[-1][3].callback(None)
        pump_ticks(self.reactor, 3)

    def get(self, path: str, headers: Any = None) -> tuple[int, Any, bytes]:
        d = self.http.get(f"http://monitor{path}", headers=headers)
        self.http.flush()
        response = self.successResultOf(d)  # type: ignore[attr-defined]
        body = treq.content(response)
        self.http.flush()
        return response.code, response.headers, self.successResultOf(body)  # type: ignore[attr-defined]


def bearer(token: str = TOKEN) -> dict[bytes, list[bytes]]:
    return {b"Authorization": [f"Bearer {token}".encode()]}


class TokenTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def test_resolution_order(self) -> None:
        self.assertEqual(resolve_token("cfg", {ENV_VAR: "env"}), ("cfg", TokenSource.CONFIG))
        self.assertEqual(resolve_token(None, {ENV_VAR: "env"}), ("env", TokenSource.ENV))
        self.assertEqual(resolve_token("  ", {ENV_VAR: " "})[1], TokenSource.GENERATED)
        generated, _ = resolve_token(None, {})
        self.assertGreaterEqual(len(generated), 32)
        self.assertNotEqual(generated, resolve_token(None, {})[0])

    def test_bearer_and_query_accepted(self) -> None:
        self.assertEqual(self.get("/api/calls", bearer())[0], 200)
        self.assertEqual(self.get(f"/api/calls?token={TOKEN}")[0], 200)
        self.assertEqual(sum(self.monitor.guard.refused.values()), 0)

    def test_missing_is_401_and_wrong_is_403_and_counted(self) -> None:
        code, headers, body = self.get("/api/calls")
        self.assertEqual(code, 401)
        self.assertIn(b"Bearer", headers.getRawHeaders(b"www-authenticate")[0])
        self.assertEqual(json.loads(body), {"error": "token required"})
        self.assertEqual(self.get("/api/calls", bearer("nope"))[0], 403)
        self.assertEqual(self.get("/api/calls?token=nope")[0], 403)
        self.assertEqual(self.get("/api/calls", {b"Authorization": [b"Basic " + TOKEN.encode()]})[0], 401)
        self.assertEqual(self.get("/api/anything/else")[0], 401)
        refused = self.monitor.guard.refused
        self.assertEqual((refused[Verdict.MISSING], refused[Verdict.WRONG]), (3, 2))
        metrics = self.get("/metrics", bearer())[2].decode()
        self.assertIn('xlbridge_monitor_auth_refused_total{reason="wrong"} 2.0', metrics)

    def test_comparison_is_constant_time(self) -> None:
        calls: list[tuple[bytes, bytes]] = []
        real = hmac.compare_digest

        def spy(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return real(a, b)

        self.patch(auth.hmac, "compare_digest", spy)
        self.assertEqual(self.get("/api/calls", bearer("guess"))[0], 403)
        self.assertEqual(calls, [(b"guess", TOKEN.encode())])

    def test_page_is_open_and_does_not_leak_the_token(self) -> None:
        code, headers, body = self.get(f"/?token={TOKEN}")
        self.assertEqual(code, 200)
        self.assertIn(b'<script src="/static/app.js"', body)
        self.assertNotIn(TOKEN.encode(), body)
        self.assertEqual(headers.getRawHeaders(b"referrer-policy"), [b"no-referrer"])
        (csp,) = headers.getRawHeaders(b"content-security-policy")
        self.assertIn(b"default-src 'self'", csp)
        self.assertIn(b"connect-src 'self' ws: wss:", csp)
        self.assertIn(b"script-src 'self';", csp)  # no inline script, no other origins
        self.assertNotIn(TOKEN, repr(self.monitor.guard))
        self.assertEqual(sum(self.monitor.guard.refused.values()), 0)

    def test_static_files_are_open_typed_and_confined(self) -> None:
        for name, kind in (("app.js", b"text/javascript"), ("style.css", b"text/css"), ("index.html", b"text/html")):
            code, headers, body = self.get(f"/static/{name}")
            self.assertEqual(code, 200, name)
            self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(kind), name)
            self.assertEqual(headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
            self.assertEqual(headers.getRawHeaders(b"referrer-policy"), [b"no-referrer"])
            self.assertTrue(headers.getRawHeaders(b"content-security-policy"))
            self.assertGreater(len(body), 100)
        for path in ("/static/nope.js", "/static/../service.py", "/static/%2e%2e%2fservice.py",
                     "/static/", "/static/a/app.js", "/static/.hidden.js", "/static/__init__.py"):
            self.assertEqual(self.get(path)[0], 404, path)
        self.assertEqual(sum(self.monitor.guard.refused.values()), 0)

    def test_metrics_need_the_token_unless_open(self) -> None:
        self.assertEqual(self.get("/metrics")[0], 401)
        self.assertEqual(self.get("/metrics", bearer())[0], 200)


class OpenMetricsTests(MonitoredBridge, SynchronousTestCase):
    metrics_open = True

    def test_open_metrics_served_with_prometheus_content_type(self) -> None:
        self.build()
        code, headers, body = self.get("/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version="))
        self.assertIn(b"xlbridge_active_calls 0.0", body)


class ApiTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def calls(self) -> dict[str, Any]:
        code, headers, body = self.get("/api/calls", bearer())
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"])
        result: dict[str, Any] = json.loads(body)
        return result

    def test_live_call_shape(self) -> None:
        call = self.start_call()
        self.translate_once()
        doc = self.calls()
        self.assertEqual(set(doc), {"time", "egress", "endpoints", "calls", "recent"})
        (c,) = doc["calls"]
        self.assertEqual(c["call_id"], call.call_id)
        leg_a, leg_b = c["legs"]
        self.assertEqual((leg_a["extension"], leg_a["language"], leg_b["language"]), ("7777", "en", "es"))
        self.assertEqual(leg_a["transport"]["kind"], "rtp")
        self.assertEqual(leg_a["transport"]["codec"], "slin16")
        self.assertEqual(leg_a["transport"]["remote"], "127.0.0.1:10000")
        self.assertEqual(leg_a["state"], "active")
        self.assertEqual(leg_a["pipeline"]["kind"], "translate")
        self.assertEqual(leg_a["pipeline"]["engines"], {"asr": "scripted", "mt": "manual", "tts": "manual"})
        self.assertGreaterEqual(leg_a["counters"]["packets_in"], 1)
        kinds = [(line["kind"], line["text"]) for line in c["transcript"]]
        self.assertEqual(kinds, [("said", "hello"), ("translated", "hola")])  # interims are live-only
        (lat,) = c["latency"]
        self.assertEqual((lat["extension"], lat["speaker"], lat["text"]), ("8888", "7777", "hola"))
        self.assertAlmostEqual(lat["mt_ms"], 200.0, places=3)
        self.assertIsNotNone(lat["total_ms"])
        self.assertEqual(doc["recent"], [])

    def test_ended_call_moves_to_recent_with_its_transcript(self) -> None:
        call = self.start_call()
        self.translate_once()
        self.reactor.advance(30)  # inactivity ends it
        doc = self.calls()
        self.assertEqual(doc["calls"], [])
        (r,) = doc["recent"]
        self.assertEqual((r["call_id"], r["reason"], r["extensions"]), (call.call_id, "inactivity", ["7777", "8888"]))
        self.assertEqual([line["text"] for line in r["transcript"]], ["hello", "hola"])
        self.assertGreater(r["duration_s"], 0)

    def test_recent_calls_are_bounded(self) -> None:
        recorder = self.monitor.recorder
        for _ in range(60):
            self.start_call()
            self.reactor.advance(30)
        self.assertEqual(len(recorder.recent), 50)
        self.assertEqual(recorder.active, {})


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
        self.assertEqual(egress.on_tick, self.monitor.metrics.observe_tick)
        self.monitor.stopService()
        self.assertIsNone(egress.on_tick)
        self.assertNotIn(self.monitor.metrics.observe, self.bridge.observers)


class ServiceTests(SynchronousTestCase):
    def bridge(self) -> BridgeService:
        return BridgeService(load_config({"ports": "7777,8888"}), MemoryUDPReactor())

    def start(self, **kwargs: Any) -> tuple[MonitorService, list[Any]]:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        monitor = make_monitor(self.bridge(), MemoryUDPReactor(), "tcp:3001:interface=127.0.0.1", **kwargs)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        return monitor, [e for e in logged if "url" in e or "base" in e]

    def test_generated_token_url_logged_once(self) -> None:
        monitor, logged = self.start(environ={})
        self.assertEqual(monitor.guard.source, TokenSource.GENERATED)
        (event,) = logged
        self.assertEqual(event["url"], f"http://localhost:3001/?token={monitor.guard.token}")

    def test_configured_token_is_not_logged(self) -> None:
        monitor, logged = self.start(token=TOKEN, environ={})
        (event,) = logged
        self.assertNotIn(TOKEN, repr(event))
        monitor2, _ = self.start(environ={ENV_VAR: "from-env"})
        self.assertEqual((monitor2.guard.token, monitor2.guard.source), ("from-env", TokenSource.ENV))

    def test_none_and_bad_descriptions_are_refused_before_start(self) -> None:
        self.assertRaises(ValueError, make_monitor, self.bridge(), MemoryUDPReactor(), "none")
        self.assertRaises(ValueError, make_monitor, self.bridge(), MemoryUDPReactor(), "bogus:1")

    def test_listen_failure_fails_start(self) -> None:
        class Taken:
            def listen(self, factory: Any) -> Any:
                return fail(CannotListenError("127.0.0.1", 3001, OSError("address in use")))

        monitor = MonitorService(self.bridge(), MemoryUDPReactor(), Taken(), TokenGuard("t"))  # type: ignore[arg-type]
        self.assertRaises(CannotListenError, monitor.startService)
