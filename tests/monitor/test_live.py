"""
The monitor's live side: the hub with fake viewers on a memory reactor
(events, status, levels, listen-in, slow viewers, legs set up at run time),
WebSocket auth, and one real-reactor run with an Autobahn client.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.monitor.harness import (
    LISTEN_TOKEN,
    NAME_A,
    NAME_B,
    TOKEN,
    DynamicCall,
    FakeViewer,
    MonitoredBridge,
    bearer,
    tone,
)
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.monitor.auth import Verdict
from xlbridge.monitor.viewer import Backpressure
from xlbridge.monitor.service import make_monitor
from xlbridge.monitor.taps import FLOOR_DBFS, LegTap, dbfs
from xlbridge.testing import MemoryUDPReactor


class HubTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build(status_interval=1.0, levels_interval=0.1)
        self.hub = self.monitor.hub

    def join(self, max_bytes: int = 256 * 1024) -> FakeViewer:
        viewer = FakeViewer(max_bytes)
        self.hub.join(viewer)
        self.addCleanup(self.hub.leave, viewer)
        return viewer

    def request(self, viewer: FakeViewer, message: dict[str, Any]) -> dict[str, Any]:
        self.hub.message(viewer, json.dumps(message).encode(), False)
        self.reactor.advance(0)
        replies = [m for m in viewer.messages() if m["type"] in ("listening", "unlistened", "error")]
        return replies[-1]

    def test_hello_then_status_every_interval(self) -> None:
        viewer = self.join()
        self.assertEqual(viewer.sent, [])  # written after the reactor turn
        self.reactor.advance(0)
        (hello,) = viewer.messages()
        self.assertEqual((hello["type"], hello["audio"]["sample_rate"]), ("hello", 16000))
        self.assertEqual(set(hello["snapshot"]), {"time", "egress", "endpoints", "calls"})
        self.reactor.advance(1.0)
        (status,) = viewer.messages("status")
        self.assertNotIn("recent", status["status"])

    def test_events_and_captions_are_forwarded(self) -> None:
        viewer = self.join()
        call = self.start_call()
        self.translate_once()
        self.reactor.advance(0)
        events = [(m["event"]["event"], m["event"].get("is_final")) for m in viewer.messages("event")]
        self.assertEqual(events[0], ("CallStarted", None))
        self.assertIn(("TranscriptEvent", False), events)  # interim caption
        self.assertIn(("TranscriptEvent", True), events)
        self.assertIn(("TranslationEvent", None), events)
        self.reactor.advance(30)
        (ended,) = viewer.messages("call_ended")
        self.assertEqual(ended["call"]["call_id"], call.call_id)
        self.assertEqual([line["text"] for line in ended["call"]["transcript"]], ["hello", "hola"])

    def test_listen_in_both_directions(self) -> None:
        viewer = self.join()
        call = self.start_call()
        leg = call.legs[0]
        self.assertIsInstance(leg.tap_in, LegTap)  # hooked for the first viewer
        says = self.request(viewer, {"listen": {"extension": "7777", "direction": "says"}})
        hears = self.request(viewer, {"listen": {"extension": "7777", "direction": "hears"}})
        self.assertEqual((says["type"], hears["type"]), ("listening", "listening"))
        leg.tap_in(tone(1234))  # what the proposed Leg/CallService hooks do
        leg.tap_out(None)
        self.assertEqual(viewer.frames(), [])  # nothing sent inside the media path
        self.reactor.advance(0)
        (s_id, s_seq, s_pcm), (h_id, _, h_pcm) = viewer.frames()
        self.assertEqual((s_id, s_seq), (says["stream"], 1))
        self.assertEqual(h_id, hears["stream"])
        np.testing.assert_array_equal(s_pcm, tone(1234))
        np.testing.assert_array_equal(h_pcm, tone(0))
        self.request(viewer, {"unlisten": {"extension": "7777", "direction": "says"}})
        leg.tap_in(tone(1))
        self.reactor.advance(0)
        self.assertEqual(len(viewer.frames()), 2)
        self.assertEqual(self.request(viewer, {"listen": {"extension": "1", "direction": "says"}})["type"], "error")
        self.assertEqual(self.request(viewer, {"listen": {"extension": "7777", "direction": "x"}})["type"], "error")

    def test_slow_viewer_loses_only_its_own_frames(self) -> None:
        call = self.start_call()
        fast, slow = self.join(), self.join(max_bytes=16 * 1024)
        for viewer in (fast, slow):
            self.request(viewer, {"listen": {"extension": "8888", "direction": "says"}})
        slow.outbox.paused = True  # its transport's send buffer is full
        tap = call.legs[1].tap_in
        for i in range(200):
            tap(tone(i))
            self.reactor.advance(0)
        self.assertEqual([seq for _, seq, _ in fast.frames()], list(range(1, 201)))
        queued = len(slow.outbox)
        self.assertLessEqual(slow.outbox.bytes, 16 * 1024)
        self.assertEqual(slow.outbox.dropped, 200 - queued)
        self.assertEqual((fast.outbox.dropped, self.hub.dropped), (0, 200 - queued))
        slow.outbox.paused = False
        self.hub.drain(slow)  # what resumeProducing does
        self.assertEqual(slow.frames()[-1][1], 200)  # newest kept, oldest dropped
        metrics = self.get("/metrics", {b"Authorization": [f"Bearer {TOKEN}".encode()]})[2].decode()
        self.assertIn(f"xlbridge_monitor_messages_dropped_total {float(200 - queued)}", metrics)
        self.assertIn("xlbridge_monitor_clients 2.0", metrics)

    def test_levels_ten_times_a_second(self) -> None:
        viewer = self.join()
        call = self.start_call()
        call.legs[0].tap_in(tone(1000))
        call.legs[0].tap_out(None)
        self.reactor.advance(0.1)
        self.reactor.advance(0.1)
        first, second = viewer.messages("levels")
        self.assertEqual(first["levels"]["7777"], {"says": dbfs(tone(1000)), "hears": FLOOR_DBFS})
        self.assertAlmostEqual(dbfs(tone(1000)), -30.3, places=1)
        self.assertEqual(second["levels"]["7777"]["says"], FLOOR_DBFS)  # no frame since

    def test_taps_and_timers_only_while_watched(self) -> None:
        call = self.start_call()
        self.assertIsNone(getattr(call.legs[0], "tap_in", None))
        viewer = FakeViewer()
        self.hub.join(viewer)
        self.assertIsNotNone(call.legs[0].tap_in)
        self.hub.leave(viewer)
        self.assertEqual((call.legs[0].tap_in, call.legs[1].tap_out), (None, None))
        self.assertFalse(any(loop.running for loop in self.hub._loops))
        self.reactor.advance(0)
        self.reactor.advance(5)
        self.assertEqual(viewer.messages("status"), [])

    def test_transport_backpressure_pauses_and_resumes_the_outbox(self) -> None:
        viewer = self.join()
        viewer.hub = self.hub  # type: ignore[attr-defined]
        producer = Backpressure(viewer)  # type: ignore[arg-type]
        producer.pauseProducing()  # the send buffer is full
        self.reactor.advance(0)
        self.assertEqual((viewer.sent, len(viewer.outbox)), ([], 1))
        producer.resumeProducing()  # drained: the hello goes out at once
        self.assertEqual([m["type"] for m in viewer.messages()], ["hello"])

    def test_call_started_while_watched_gets_taps(self) -> None:
        self.join()
        call = self.start_call()
        self.assertIsInstance(call.legs[1].tap_out, LegTap)

    def test_hello_says_whether_the_viewer_may_listen(self) -> None:
        listener, viewer = self.join(), FakeViewer(may_listen=False)
        self.hub.join(viewer)
        self.addCleanup(self.hub.leave, viewer)
        self.reactor.advance(0)
        self.assertEqual([m["listen"] for m in listener.messages("hello")], [True])
        self.assertEqual([m["listen"] for m in viewer.messages("hello")], [False])

    def test_view_token_sees_captions_but_cannot_listen(self) -> None:
        viewer = FakeViewer(may_listen=False)
        self.hub.join(viewer)
        self.addCleanup(self.hub.leave, viewer)
        call = self.start_call()
        self.translate_once()
        refused = self.request(viewer, {"listen": {"extension": "7777", "direction": "says"}})
        self.assertEqual(
            (refused["type"], refused["error"], refused["extension"], refused["direction"]),
            ("error", "listen-in needs the listen token", "7777", "says"),
        )
        self.assertEqual((viewer.listens, self.hub.listeners), (set(), {}))
        self.assertFalse(self.hub.taps.get("7777", "says").listening)
        call.legs[0].tap_in(tone(1234))
        self.reactor.advance(0)
        self.assertEqual(viewer.frames(), [])
        captions = [m["event"].get("text") for m in viewer.messages("event")]
        self.assertIn("hello", captions)  # captions are the view token's to see
        self.assertEqual(self.request(viewer, {"unlisten": {"extension": "7777", "direction": "says"}})["type"],
                         "unlistened")
        self.assertEqual(self.monitor.guard.refused[Verdict.LISTEN], 1)
        metrics = self.get("/metrics", bearer())[2].decode()
        self.assertIn('xlbridge_monitor_auth_refused_total{reason="listen"} 1.0', metrics)


class ListenOffTests(MonitoredBridge, SynchronousTestCase):
    listen_token = None

    def test_without_a_listen_token_nobody_listens(self) -> None:
        self.build()
        self.assertFalse(self.monitor.guard.listen_enabled)
        self.start_call()
        viewer = FakeViewer(may_listen=False)  # what every token gets then
        self.monitor.hub.join(viewer)
        self.addCleanup(self.monitor.hub.leave, viewer)
        self.monitor.hub.message(viewer, b'{"listen": {"extension": "7777", "direction": "hears"}}', False)
        self.reactor.advance(0)
        (error,) = viewer.messages("error")
        self.assertEqual(error["error"], "listen-in is off")

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

class WebSocketAuthTests(MonitoredBridge, SynchronousTestCase):
    def connect(self, headers: dict[str, str], params: dict[str, list[str]]) -> Any:
        self.build()
        proto = self.monitor.hub.factory.buildProtocol(None)
        request = ConnectionRequest(None, headers, "localhost", "/ws", params, 13, None, [], [])
        try:
            return proto.onConnect(request)
        except ConnectionDeny as e:
            return e

    def test_missing_token_denied_401(self) -> None:
        denied = self.connect({}, {})
        self.assertEqual((type(denied), denied.code), (ConnectionDeny, 401))
        self.assertEqual(self.monitor.guard.refused[Verdict.MISSING], 1)

    def test_wrong_token_denied_403(self) -> None:
        denied = self.connect({}, {"token": ["nope"]})
        self.assertEqual((type(denied), denied.code), (ConnectionDeny, 403))
        self.assertEqual(self.monitor.guard.refused[Verdict.WRONG], 1)

    def test_refusals_logged_once_per_address_and_reason_without_the_token(self) -> None:
        """
        One line per address and reason (then only counted); neither it nor
        anything Autobahn logs carries the token offered.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import formatEvent, globalLogPublisher

        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.build()
        for peer, token in [("tcp4:10.0.0.7:5000", "guess-1"), ("tcp4:10.0.0.7:5001", "guess-2"),
                            ("tcp4:10.0.0.8:5000", "guess-3"), ("tcp4:10.0.0.7:5002", None)]:
            proto = self.monitor.hub.factory.buildProtocol(None)
            params = {"token": [token]} if token else {}
            request = ConnectionRequest(peer, {}, "localhost", "/ws", params, 13, None, [], [])
            with self.assertRaises(ConnectionDeny):
                proto.onConnect(request)
        lines = [formatEvent(e) for e in logged if "refused" in formatEvent(e)]
        self.assertEqual(len(lines), 3, lines)
        self.assertIn("10.0.0.7: invalid token", lines[0])
        self.assertIn("10.0.0.8: invalid token", lines[1])
        self.assertIn("10.0.0.7: no token", lines[2])
        self.assertFalse([e for e in logged if "guess" in formatEvent(e)])
        self.assertEqual(self.monitor.guard.refused[Verdict.WRONG], 3)

    def test_query_or_bearer_accepted(self) -> None:
        self.assertIsNone(self.connect({}, {"token": [TOKEN]}))
        self.assertIsNone(self.connect({"authorization": f"Bearer {TOKEN}"}, {}))

    def test_only_the_listen_token_may_listen(self) -> None:
        for headers, params, may_listen in [
            ({}, {"token": [TOKEN]}, False),
            ({}, {"token": [LISTEN_TOKEN]}, True),
            ({"authorization": f"Bearer {LISTEN_TOKEN}"}, {}, True),
        ]:
            self.build()
            proto = self.monitor.hub.factory.buildProtocol(None)
            self.assertFalse(proto.may_listen)
            request = ConnectionRequest(None, headers, "localhost", "/ws", params, 13, None, [], [])
            self.assertIsNone(proto.onConnect(request))
            self.assertEqual(proto.may_listen, may_listen, (headers, params))

class _Client(WebSocketClientProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        waiting = self.factory.waiting.pop(message["type"], None)  # type: ignore[attr-defined]
        if waiting is not None:
            waiting.callback(message)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.closed.callback((wasClean, reason))  # type: ignore[attr-defined]

class RealReactorTests(TestCase):
    timeout = 10

    async def test_viewer_gets_status_and_bad_token_is_refused(self) -> None:
        cfg = load_config({"ports": "7777,8888"})
        bridge = BridgeService(cfg, MemoryUDPReactor())  # not started: only read
        monitor = make_monitor(
            bridge, global_reactor, "tcp:0:interface=127.0.0.1", token=TOKEN, environ={}, status_interval=0.05
        )
        monitor.startService()
        self.addCleanup(monitor.stopService)
        assert monitor.port is not None
        port = monitor.port.getHost().port

        async def connect(token: str) -> tuple[Any, Any]:
            factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/ws?token={token}", reactor=global_reactor)
            factory.protocol = _Client
            factory.setProtocolOptions(openHandshakeTimeout=0)
            factory.waiting = {"hello": Deferred(), "status": Deferred()}  # type: ignore[attr-defined]
            factory.closed = Deferred()  # type: ignore[attr-defined]
            proto = await TCP4ClientEndpoint(global_reactor, "127.0.0.1", port).connect(factory)
            return proto, factory

        _, bad = await connect("wrong")
        clean, reason = await bad.closed
        self.assertFalse(clean)
        self.assertIn("403", str(reason))
        self.assertEqual(monitor.guard.refused[Verdict.WRONG], 1)

        proto, good = await connect(TOKEN)
        hello = await good.waiting["hello"]
        status = await good.waiting["status"]
        self.assertEqual(hello["version"], 1)
        self.assertEqual(status["status"]["calls"], [])
        (server,) = monitor.hub.clients
        self.assertIsInstance(server.transport.producer, Backpressure)  # type: ignore[attr-defined]
        proto.sendClose()
        await good.closed
        while monitor.hub.clients:  # the server side's connectionLost
            await deferLater(global_reactor, 0.01, lambda: None)
