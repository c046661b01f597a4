"""
Tests for the monitor's live side: per-viewer outboxes, the hub with fake
viewers on a memory reactor (events, status, levels, listen-in, slow
viewers), WebSocket auth, and one real-reactor run with an Autobahn client.
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

from tests.test_monitor import TOKEN, MonitoredBridge
from xlbridge.config import load_config
from xlbridge.bridge import BridgeService
from xlbridge.monitor.auth import Verdict
from xlbridge.monitor.live import _Backpressure
from xlbridge.monitor.outbox import Outbox
from xlbridge.monitor.service import make_monitor
from xlbridge.monitor.taps import FLOOR_DBFS, LegTap, dbfs, decode_frame
from xlbridge.testing import MemoryUDPReactor


class FakeViewer:
    """
    A viewer without a socket: records what the hub writes to it.
    """

    def __init__(self, max_bytes: int = 256 * 1024) -> None:
        self.outbox = Outbox(max_bytes)
        self.listens: set[tuple[str, str]] = set()
        self.sent: list[Any] = []

    def send_prepared(self, message: Any) -> None:
        self.sent.append(message)

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(m.payload) for m in self.sent if not m.binary]
        return [m for m in out if kind is None or m["type"] == kind]

    def frames(self) -> list[tuple[int, int, np.ndarray]]:
        return [decode_frame(m.payload) for m in self.sent if m.binary]


def tone(value: int, n: int = 320) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


class OutboxTests(SynchronousTestCase):
    def test_bound_drops_oldest_and_counts(self) -> None:
        box = Outbox(100)
        self.assertEqual([box.put(i, 30) for i in range(3)], [0, 0, 0])
        self.assertEqual(box.put(3, 30), 1)  # 0 goes
        self.assertEqual(box.put(4, 60), 2)  # 1 and 2 go
        self.assertEqual((box.dropped, box.bytes, len(box)), (3, 90, 2))
        sent: list[Any] = []
        box.drain(sent.append)
        self.assertEqual((sent, box.bytes), ([3, 4], 0))
        box.put(5, 30)
        self.assertEqual(box.put("huge", 150), 1)  # bigger than the bound: queued alone
        self.assertEqual((len(box), box.bytes), (1, 150))

    def test_drain_stops_when_the_transport_pauses(self) -> None:
        box = Outbox(1000)
        for i in range(5):
            box.put(i, 10)
        sent: list[Any] = []

        def send(item: Any) -> None:
            sent.append(item)
            if item == 1:
                box.paused = True  # the transport's buffer filled up

        box.drain(send)
        self.assertEqual((sent, len(box)), ([0, 1], 3))
        box.paused = False
        box.drain(sent.append)
        self.assertEqual(sent, [0, 1, 2, 3, 4])


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
        producer = _Backpressure(viewer)  # type: ignore[arg-type]
        producer.pauseProducing()  # the send buffer is full
        self.reactor.advance(0)
        self.assertEqual((viewer.sent, len(viewer.outbox)), ([], 1))
        producer.resumeProducing()  # drained: the hello goes out at once
        self.assertEqual([m["type"] for m in viewer.messages()], ["hello"])

    def test_call_started_while_watched_gets_taps(self) -> None:
        self.join()
        call = self.start_call()
        self.assertIsInstance(call.legs[1].tap_out, LegTap)


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

    def test_query_or_bearer_accepted(self) -> None:
        self.assertIsNone(self.connect({}, {"token": [TOKEN]}))
        self.assertIsNone(self.connect({"authorization": f"Bearer {TOKEN}"}, {}))


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
        self.assertIsInstance(server.transport.producer, _Backpressure)  # type: ignore[attr-defined]
        proto.sendClose()
        await good.closed
        while monitor.hub.clients:  # the server side's connectionLost
            await deferLater(global_reactor, 0.01, lambda: None)
