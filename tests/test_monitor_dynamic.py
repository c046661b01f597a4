"""
Tests for endpoints set up at run time (ARI callers' legs) in the monitor:
the bridge's registry, ``/api/calls``, ``/metrics`` counters that never go
down when such an endpoint goes away, and Listen by a leg's channel name.
Mostly on a memory reactor; one run through the ARI controller and the fake
ARI on the real reactor.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import numpy as np
import treq
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase

from tests.test_ari import ARIHarness, wait_until
from tests.test_monitor import TOKEN, MonitoredBridge, bearer
from tests.test_monitor_live import FakeViewer, tone
from xlbridge.bridge import CONFIGURED, BridgeService
from xlbridge.config import load_config
from xlbridge.events import DropReason, LegCounters
from xlbridge.monitor.service import make_monitor
from xlbridge.monitor.taps import Taps
from xlbridge.rtp.packet import build
from xlbridge.testing import MemoryUDPReactor, pump_ticks

NAME_A = "PJSIP/7777-00000001"
NAME_B = "PJSIP/8888-00000002"
PHONE_A = ("10.0.0.1", 4000)
PHONE_B = ("10.0.0.2", 4000)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def counter_totals(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0].endswith("_total")}


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


class RegistryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.bridge = BridgeService(load_config({"ports": "7777,8888"}), self.reactor)

    def endpoint(self, name: str = NAME_A) -> Any:
        ep = self.bridge.rtp_endpoint(name, lambda e, s: None)
        self.reactor.listenUDP(0, ep)
        return ep

    def test_attached_endpoints_listed_with_origin_until_detached(self) -> None:
        ep = self.endpoint()
        self.assertEqual(self.bridge.attach_endpoint(NAME_A, ep, origin="ari"), NAME_A)
        endpoints = self.bridge.status()["endpoints"]
        self.assertEqual(list(endpoints), ["7777", "8888", NAME_A])
        self.assertEqual(endpoints["7777"]["origin"], CONFIGURED)
        self.assertEqual(endpoints[NAME_A]["origin"], "ari")
        self.assertEqual(endpoints[NAME_A]["transport"]["kind"], "rtp")
        self.assertEqual(endpoints[NAME_A]["counters"]["packets_in"], 0)
        self.assertTrue(self.bridge.detach_endpoint(NAME_A))
        self.assertFalse(self.bridge.detach_endpoint(NAME_A))  # idempotent
        self.assertEqual(list(self.bridge.status()["endpoints"]), ["7777", "8888"])

    def test_taken_names_get_a_suffix_and_detach_by_identity(self) -> None:
        first, second, clash = self.endpoint(), self.endpoint(), self.endpoint("7777")
        self.assertEqual(self.bridge.attach_endpoint(NAME_A, first), NAME_A)
        self.assertEqual(self.bridge.attach_endpoint(NAME_A, first), NAME_A)  # again: same place
        self.assertEqual(self.bridge.attach_endpoint(NAME_A, second), NAME_A + "#2")
        self.assertEqual(self.bridge.attach_endpoint("7777", clash), "7777#2")  # a configured name
        second.counters.packets_in = 5
        self.assertTrue(self.bridge.detach_endpoint(NAME_A, second))
        self.assertIs(self.bridge.dynamic_endpoints[NAME_A], first)
        self.assertFalse(self.bridge.detach_endpoint(NAME_A, second))
        self.assertEqual(self.bridge.retired_counters["rtp"].packets_in, 5)


class DynamicCall(MonitoredBridge):
    """
    The monitored bridge of ``test_monitor`` plus a call between two
    endpoints set up at run time, the way the ARI controller does it.
    """

    def dynamic_call(self) -> Any:
        self.ports: dict[str, Any] = {}
        endpoints = []
        for i, name in enumerate((NAME_A, NAME_B)):
            ep = self.bridge.rtp_endpoint(name, lambda e, s, i=i: self.call.audio_in(i, s))
            self.ports[name] = self.reactor.listenUDP(0, ep)
            self.bridge.attach_endpoint(name, ep, origin="ari")
            endpoints.append(ep)
        self.call = self.bridge.start_call(
            "ari-call", (NAME_A, NAME_B), ("en", "es"), (endpoints[0], endpoints[1])
        )
        self.rtp_seq = {NAME_A: 0, NAME_B: 0}
        self.say(NAME_A, PHONE_A)
        self.say(NAME_B, PHONE_B)
        return self.call

    def say(self, name: str, src: Any, frames: int = 1) -> None:
        for _ in range(frames):
            seq = self.rtp_seq[name]
            self.rtp_seq[name] += 1
            payload = np.full(320, 100, dtype=np.int16).astype(">i2").tobytes()
            self.ports[name].deliver(build(118, seq, seq * 320, 7, payload), src)

    def hang_up(self) -> None:
        # What the controller does: end the call, unbind, detach.
        self.call.end("hangup")
        for name, port in self.ports.items():
            port.stopListening()
            self.assertTrue(self.bridge.detach_endpoint(name, port.protocol))

    def metrics(self) -> Samples:
        code, _, body = self.get("/metrics", bearer())
        self.assertEqual(code, 200)
        return parse_metrics(body.decode())


class DynamicApiAndMetricsTests(DynamicCall, SynchronousTestCase):
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


class DynamicListenTests(DynamicCall, SynchronousTestCase):
    def setUp(self) -> None:
        self.build(status_interval=1.0, levels_interval=0.1)
        self.hub = self.monitor.hub

    def request(self, viewer: FakeViewer, message: dict[str, Any]) -> dict[str, Any]:
        self.hub.message(viewer, json.dumps(message).encode(), False)
        self.reactor.advance(0)
        replies = [m for m in viewer.messages() if m["type"] in ("listening", "unlistened", "error")]
        return replies[-1]

    def test_listen_to_a_run_time_leg_by_its_channel_name(self) -> None:
        viewer = FakeViewer()
        self.hub.join(viewer)
        self.addCleanup(self.hub.leave, viewer)
        call = self.dynamic_call()
        reply = self.request(viewer, {"listen": {"extension": NAME_A, "direction": "says"}})
        self.assertEqual((reply["type"], reply["extension"], reply["direction"]), ("listening", NAME_A, "says"))
        call.legs[0].tap_in(tone(1234))
        self.reactor.advance(0)
        ((stream, seq, pcm),) = viewer.frames()
        self.assertEqual((stream, seq), (reply["stream"], 1))
        np.testing.assert_array_equal(pcm, tone(1234))
        levels = self.hub.taps.levels(self.bridge.active_calls())
        self.assertEqual(set(levels), {NAME_A, NAME_B})
        refused = self.request(viewer, {"listen": {"extension": "PJSIP/9999-00000009", "direction": "says"}})
        self.assertEqual((refused["type"], refused["extension"]), ("error", "PJSIP/9999-00000009"))

    def test_gone_leg_ends_its_listens_and_taps(self) -> None:
        viewer = FakeViewer()
        self.hub.join(viewer)
        self.addCleanup(self.hub.leave, viewer)
        self.dynamic_call()
        for direction in ("says", "hears"):
            self.request(viewer, {"listen": {"extension": NAME_A, "direction": direction}})
        self.request(viewer, {"listen": {"extension": NAME_B, "direction": "says"}})
        self.hang_up()
        # Dropping a listen to a leg that is gone is always allowed.
        reply = self.request(viewer, {"unlisten": {"extension": NAME_A, "direction": "hears"}})
        self.assertEqual((reply["type"], reply.get("reason")), ("unlistened", None))
        self.reactor.advance(1.0)  # the next status tick prunes
        gone = [(m["extension"], m["direction"]) for m in viewer.messages("unlistened") if "reason" in m]
        self.assertEqual({m.get("reason") for m in viewer.messages("unlistened")}, {None, "gone"})
        self.assertEqual(sorted(gone), [(NAME_A, "says"), (NAME_B, "says")])
        self.assertEqual((viewer.listens, self.hub.listeners), (set(), {}))
        self.assertEqual(self.hub.taps._taps, {})  # none for gone legs (no configured call yet)
        again = self.request(viewer, {"listen": {"extension": NAME_A, "direction": "says"}})
        self.assertEqual((again["type"], again["extension"], again["direction"]), ("error", NAME_A, "says"))
        # Gone legs no longer count against max_listens.
        for ext in ("7777", "8888"):
            for direction in ("says", "hears"):
                reply = self.request(viewer, {"listen": {"extension": ext, "direction": direction}})
                self.assertEqual(reply["type"], "listening")

    def test_kept_partner_is_still_listenable_between_calls(self) -> None:
        viewer = FakeViewer()
        self.hub.join(viewer)
        self.addCleanup(self.hub.leave, viewer)
        self.dynamic_call()
        self.request(viewer, {"listen": {"extension": NAME_B, "direction": "says"}})
        self.call.end("hangup")  # B's endpoint stays attached, waiting for a new partner
        self.reactor.advance(1.0)
        self.assertEqual(viewer.listens, {(NAME_B, "says")})
        self.assertEqual(viewer.messages("unlistened"), [])


class StreamIdTests(SynchronousTestCase):
    def test_ids_are_reused_after_pruning_never_shared(self) -> None:
        taps = Taps(lambda tap, samples: None)
        a, b = taps.get("a", "says"), taps.get("b", "says")
        self.assertEqual((a.stream_id, b.stream_id), (1, 2))
        b.listening = True
        taps.prune(keep=set())
        self.assertIs(taps.get("b", "says"), b)  # listened to: kept
        self.assertIsNot(taps.get("a", "says"), a)  # pruned, made anew
        taps._last_id = 0xFFFE  # about to wrap
        ids = [taps.get(str(i), "hears").stream_id for i in range(3)]
        self.assertEqual(ids, [0xFFFF, 1, 4])  # 2 and 3 are live (b, the new a)


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
            await wait_until(lambda: a["id"] in self.bridge.dynamic_calls)
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
