"""
Tests for the fake Asterisk :mod:`tests.fakes.chan_websocket`: it must
behave as PROTOCOLS.md section 10 says a real one does, so that it can fail
a careless app (odd sizes, flooding, PONGs, oversize messages).  The "app"
here is a bare Autobahn client, not xlbridge.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Optional

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.fakes.chan_websocket import FakeChanWebSocket
from tests.transports.wsmemory import Link, connect, tick

reactor: Any = _reactor


class App(WebSocketClientProtocol):  # type: ignore[misc]
    """A bare app: records what Asterisk sends."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.binaries: list[bytes] = []
        self.close: Optional[tuple[bool, Optional[int]]] = None
        self.opened = False
        self.factory: Any

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        (self.binaries if isBinary else self.texts).append(payload if isBinary else payload.decode())

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.close = (wasClean, code)
        done = getattr(self.factory, "done", None)
        if done is not None and not done.called:
            done.callback(None)


def app_factory(url: str, protocols: Optional[list[str]] = None) -> WebSocketClientFactory:
    f = WebSocketClientFactory(url, protocols=protocols or [], reactor=Clock())
    f.protocol = App
    f.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0,
                         autoPingInterval=0)
    return f


class ServerModeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.fake = FakeChanWebSocket(self.clock)

    def open(self, control: str = "plain-text", protocols: Optional[list[str]] = None) -> tuple[Any, App, Link]:
        ch = self.fake.add_channel("c007", control=control)
        link = connect(self.fake.server_factory(), app_factory("ws://127.0.0.1:8088/media/c007", protocols),
                       self.clock)
        return ch, link.client, link

    def tick(self, link: Link, n: int = 1) -> None:
        tick(link, self.clock, n)

    def test_media_start_plain_and_json(self) -> None:
        ch, app, _ = self.open()
        self.assertEqual(app.texts, ["MEDIA_START connection_id:c007 channel:WebSocket/c007/0x7fb79c00f280 "
                                     "channel_id:1796623357.1 format:slin16 optimal_frame_size:640 ptime:20"])
        self.fake.channels.clear()
        _, app2, _ = self.open("json")
        msg = json.loads(app2.texts[0])
        self.assertEqual((msg["event"], msg["optimal_frame_size"], msg["ptime"]), ("MEDIA_START", 640, 20))
        self.assertEqual(msg["channel_variables"]["MEDIA_WEBSOCKET_CONNECTION_ID"], "c007")

    def test_refusals(self) -> None:
        self.fake.add_channel("c007")
        for path, protocols, status in (("/media/nope", None, 404), ("/media/c007", ["other"], 400)):
            link = connect(self.fake.server_factory(), app_factory(f"ws://127.0.0.1:8088{path}", protocols),
                           self.clock)
            self.assertFalse(link.client.opened)
            self.assertIn(str(status), link.client.http_status_line)
        ok = connect(self.fake.server_factory(), app_factory("ws://127.0.0.1:8088/media/c007", ["media"]),
                     self.clock)
        self.assertTrue(ok.client.opened)
        self.assertEqual(ok.client.websocket_protocol_in_use, "media")
        again = connect(self.fake.server_factory(), app_factory("ws://127.0.0.1:8088/media/c007"), self.clock)
        self.assertFalse(again.client.opened)
        self.assertIn("409", again.client.http_status_line)

    def test_one_frame_per_tick_remainder_dropped(self) -> None:
        ch, app, link = self.open()
        frames = [bytes([i]) * 640 for i in range(5)]
        app.sendMessage(b"".join(frames) + b"\x09" * 100, isBinary=True)  # 5 frames + 100 B
        app.sendMessage(b"\x07" * 320, isBinary=True)  # half a frame: nothing
        link.flush()
        self.assertEqual(ch.queue_length, 5)
        self.tick(link, 7)
        self.assertEqual([f for _, f in ch.heard], frames)
        self.assertEqual([round(t, 2) for t, _ in ch.heard], [0.02, 0.04, 0.06, 0.08, 0.1])
        self.assertEqual(ch.remainder_dropped, 420)

    def test_buffering_carries_remainder_and_stop_sends_short_frame(self) -> None:
        ch, app, link = self.open()
        app.sendMessage(b"START_MEDIA_BUFFERING", isBinary=False)
        app.sendMessage(b"\x01" * 1000, isBinary=True)
        app.sendMessage(b"\x02" * 300, isBinary=True)
        app.sendMessage(b"STOP_MEDIA_BUFFERING b1", isBinary=False)
        link.flush()
        self.tick(link, 5)
        self.assertEqual([len(f) for _, f in ch.heard], [640, 640, 20])
        self.assertEqual(ch.heard_bytes(), b"\x01" * 1000 + b"\x02" * 300)
        self.assertEqual(app.texts[1:], ["MEDIA_BUFFERING_COMPLETED b1"])

    def test_mark_answered_after_earlier_frames_and_flush_kills_marks(self) -> None:
        ch, app, link = self.open("json")
        app.sendMessage(bytes(640 * 3), isBinary=True)
        app.sendMessage(b'{"command":"MARK_MEDIA","correlation_id":"u1"}', isBinary=False)
        link.flush()
        self.tick(link, 3)
        self.assertEqual(len(app.texts), 1)  # three frames played, mark not yet reached
        self.tick(link, 1)
        self.assertEqual(json.loads(app.texts[-1]),
                         {"event": "MEDIA_MARK_PROCESSED", "channel_id": "1796623357.1", "correlation_id": "u1"})
        app.sendMessage(bytes(640 * 3), isBinary=True)
        app.sendMessage(b'{"command":"MARK_MEDIA","correlation_id":"u2"}', isBinary=False)
        app.sendMessage(b'{"command":"FLUSH_MEDIA"}', isBinary=False)
        link.flush()
        self.tick(link, 10)
        self.assertEqual(len(ch.heard), 3)
        self.assertNotIn("u2", "".join(app.texts))

    def test_pause_continue_status_drained(self) -> None:
        ch, app, link = self.open()
        app.sendMessage(bytes(640 * 2), isBinary=True)
        app.sendMessage(b"PAUSE_MEDIA", isBinary=False)
        app.sendMessage(b"REPORT_QUEUE_DRAINED", isBinary=False)
        link.flush()
        self.tick(link, 5)
        self.assertEqual(ch.heard, [])
        app.sendMessage(b"GET_STATUS", isBinary=False)
        link.flush()
        self.assertEqual(app.texts[-1], "STATUS channel_id:1796623357.1 queue_length:2 xon_level:800 "
                                        "xoff_level:900 queue_full:false bulk_media:false media_paused:true")
        app.sendMessage(b"CONTINUE_MEDIA", isBinary=False)
        link.flush()
        self.tick(link, 3)
        self.assertEqual(len(ch.heard), 2)
        self.assertEqual(app.texts[-1], "QUEUE_DRAINED")

    def test_xoff_xon_and_full_queue_drops_whole_messages(self) -> None:
        ch, app, link = self.open()
        app.sendMessage(bytes(640 * 100), isBinary=True)
        link.flush()
        for _ in range(8):
            app.sendMessage(bytes(640 * 100), isBinary=True)
        link.flush()
        self.assertEqual(app.texts[1:], ["MEDIA_XOFF"])
        self.assertEqual(ch.queue_length, 900)
        app.sendMessage(bytes(640 * 99), isBinary=True)  # arrives at 900 < 1000: queued whole
        app.sendMessage(bytes(640 * 100), isBinary=True)  # arrives at 999: queued whole
        app.sendMessage(bytes(640), isBinary=True)  # arrives at 1099: dropped
        link.flush()
        self.assertEqual((ch.queue_length, ch.dropped_whole), (1099, 1))
        app.sendMessage(b"FLUSH_MEDIA", isBinary=False)
        link.flush()
        self.tick(link, 1)
        self.assertEqual(app.texts[-1], "MEDIA_XON")

    def test_oversize_message_closes_1009(self) -> None:
        ch, app, link = self.open()
        app.sendMessage(bytes(65528), isBinary=True)
        link.flush()
        self.assertEqual(app.close, (True, 1009))
        self.assertEqual(ch.close_code, 1009)

    def test_ping_answered_pong_crashes(self) -> None:
        ch, app, link = self.open()
        app.sendPing(b"hi")
        link.flush()
        self.assertEqual(ch.pings, [b"hi"])
        self.assertFalse(ch.crashed)
        app.sendPong(b"x")
        link.flush()
        self.assertTrue(ch.crashed)
        self.assertEqual(app.close[1] if app.close else None, 1006)  # TCP dropped, no close frame

    def test_hangup_command_closes_1000_and_app_close_hangs_up(self) -> None:
        ch, app, link = self.open()
        app.sendMessage(b"HANGUP", isBinary=False)
        link.flush()
        self.assertEqual((ch.hung_up_by, ch.close_code, app.close), ("asterisk", 1000, (True, 1000)))
        self.fake.channels.clear()
        ch2, app2, link2 = self.open()
        app2.sendClose(1000)
        link2.flush()
        self.assertEqual((ch2.hung_up_by, ch2.close_code), ("app", 1000))
        self.assertIsNone(ch2.proto)

    def test_caller_audio_and_hang_up_on_demand(self) -> None:
        ch, app, link = self.open()
        ch.send_audio(bytes(range(256)) * 5)  # 1280 B: two 640 B messages
        link.flush()
        self.assertEqual([len(b) for b in app.binaries], [640, 640])
        ch.hang_up()
        link.flush()
        self.assertEqual(app.close, (True, 1000))

    def test_long_text_ignored_and_json_to_plain_channel_ignored(self) -> None:
        ch, app, link = self.open()
        app.sendMessage(b"MARK_MEDIA " + b"x" * 200, isBinary=False)
        app.sendMessage(b'{"command":"FLUSH_MEDIA"}', isBinary=False)
        link.flush()
        self.assertEqual(len(ch.violations), 2)
        self.assertIn("ignored", ch.violations[0])
        self.assertIn("unknown command", ch.violations[1])


class ClientModeTests(TestCase):
    """The fake dials an app over loopback, as websocket_client.conf does."""

    @defer.inlineCallbacks
    def test_dials_with_basic_auth_and_media_protocol(self) -> Any:
        seen: dict[str, Any] = {}
        from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

        class AppServer(WebSocketServerProtocol):  # type: ignore[misc]
            def onConnect(self, request: Any) -> str:
                seen["headers"] = request.headers
                seen["path"] = request.path
                seen["protocols"] = request.protocols
                return "media"

            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                seen.setdefault("texts", []).append(payload.decode())
                self.sendClose(1000)

        factory = WebSocketServerFactory(reactor=reactor)
        factory.protocol = AppServer
        factory.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        fake = FakeChanWebSocket(reactor)
        ch = fake.dial(reactor, f"ws://127.0.0.1:{port.getHost().port}/app/media?x=1", username="u",
                       password="p", protocols=["media"])
        for _ in range(200):
            if ch.hung_up_by is not None:
                break
            d: defer.Deferred[None] = defer.Deferred()
            reactor.callLater(0.01, d.callback, None)
            yield d
        self.assertEqual(seen["path"], "/app/media")
        self.assertEqual(seen["protocols"], ["media"])
        self.assertEqual(seen["headers"]["authorization"], "Basic " + base64.b64encode(b"u:p").decode())
        self.assertTrue(seen["texts"][0].startswith("MEDIA_START connection_id:media1 channel:WebSocket/media1/"))
        self.assertEqual((ch.hung_up_by, ch.close_code), ("app", 1000))

