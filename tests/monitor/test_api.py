"""
``/api/calls``: a live translated call, ended calls in ``recent``, legs set
up at run time listed under their names (on a memory reactor), and an ARI
call's legs through the controller and the fake ARI over real sockets.
"""

from __future__ import annotations

import json
from typing import Any

import treq
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import ARIHarness, wait_until
from tests.monitor.harness import (
    NAME_A,
    NAME_B,
    PHONE_A,
    TOKEN,
    DynamicCall,
    MonitoredBridge,
    bearer,
    counter_totals,
    parse_metrics,
)
from xlbridge.monitor.service import make_monitor
from xlbridge.rtp.packet import build


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

class DynamicApiTests(DynamicCall, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def test_api_calls_lists_run_time_endpoints_under_their_legs_names(self) -> None:
        self.dynamic_call()
        self.say(NAME_A, PHONE_A, frames=3)
        code, _, body = self.get("/api/calls", bearer())
        self.assertEqual(code, 200)
        doc = json.loads(body)
        endpoints = doc["endpoints"]
        self.assertEqual({n: e["origin"] for n, e in endpoints.items()},
                         {"7777": "config", "8888": "config", NAME_A: "ari", NAME_B: "ari"})
        self.assertEqual(endpoints[NAME_A]["counters"]["packets_in"], 4)
        self.assertEqual(endpoints[NAME_A]["transport"]["remote"], "10.0.0.1:4000")
        (call,) = doc["calls"]
        self.assertEqual([leg["extension"] for leg in call["legs"]], [NAME_A, NAME_B])
        self.assertTrue(all(leg["extension"] in endpoints for leg in call["legs"]))

class ARIMonitorTests(ARIHarness):
    """
    An ARI call's legs in ``/api/calls`` and ``/metrics``, through the
    controller and the fake ARI over real sockets.
    """

    def get(self, monitor: Any, path: str) -> Any:
        http = StubTreq(monitor.root)
        d = http.get(f"http://monitor{path}", headers=bearer())
        http.flush()
        response = self.successResultOf(d)
        body = treq.content(response)
        http.flush()
        self.assertEqual(response.code, 200)
        return self.successResultOf(body).decode()

    def test_ari_legs_in_api_calls_and_metrics(self) -> Any:
        async def run() -> None:
            ari = self.start()
            monitor = make_monitor(self.bridge, reactor, "tcp:0:interface=127.0.0.1", token=TOKEN, environ={})
            monitor.setServiceParent(self.bridge)  # started at once
            await wait_until(lambda: ari.events.connected)
            a = self.fake.new_channel(NAME_A, "7777")
            b = self.fake.new_channel(NAME_B, "8888")
            self.fake.enter(a, ["room=r1,lang=en"])
            self.fake.enter(b, ["room=r1,lang=es"])
            await wait_until(lambda: a["id"] in self.calls())
            ca, cb = ari.rooms["r1"].callers
            media_a, media_b = ca.media_id, cb.media_id
            assert media_a and media_b
            for i in range(25):
                self.fake.send_rtp(media_a, build(118, 100 + i, 320 * i, 1234, b"\x10\x00" * 320))
                await deferLater(reactor, 0.02, lambda: None)
            await wait_until(lambda: ca.endpoint is not None and ca.endpoint.counters.packets_in == 25)
            await wait_until(lambda: len(self.fake.rtp[media_b].received) > 5)

            doc = json.loads(self.get(monitor, "/api/calls"))
            origins = {n: e["origin"] for n, e in doc["endpoints"].items()}
            self.assertEqual(origins, {NAME_A: "ari", NAME_B: "ari"})
            self.assertEqual(doc["endpoints"][NAME_A]["counters"]["packets_in"], 25)
            self.assertEqual(doc["endpoints"][NAME_A]["transport"]["local"], f"127.0.0.1:{ca.port}")
            (call,) = doc["calls"]
            self.assertEqual([leg["extension"] for leg in call["legs"]], [NAME_A, NAME_B])
            rtp = (("transport", "rtp"),)
            before = parse_metrics(self.get(monitor, "/metrics"))
            self.assertEqual(before[("xlbridge_packets_received_total", rtp)], 25)
            self.assertGreater(before[("xlbridge_packets_sent_total", rtp)], 5)

            self.fake.hangup(a["id"])
            await wait_until(lambda: not ari.callers and not self.bridge.dynamic_endpoints)
            doc = json.loads(self.get(monitor, "/api/calls"))
            self.assertEqual((doc["endpoints"], doc["calls"]), ({}, []))
            after = parse_metrics(self.get(monitor, "/metrics"))
            for key, value in counter_totals(before).items():
                self.assertGreaterEqual(after[key], value, key)
            self.assertEqual(after[("xlbridge_packets_received_total", rtp)], 25)

        return ensureDeferred(run())
