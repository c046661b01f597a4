"""
ARI legs over chan_websocket (``--ari-media websocket``), in memory on a
test clock against the chan_websocket fake: the media URL, the dial to
``/media/<id>`` in server mode (hand-over at MEDIA_START, every way it can
fail, cancel), and the client-mode router (by channel id, by channel name
for Asterisk versions without one, unknown and silent connections
refused and counted).
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes.chan_websocket import Channel, FakeChanWebSocket
from tests.transports.wsmemory import Link, connect
from xlbridge.ari.websocket import MediaConnectError, MediaDial, WebSocketRouter, media_url
from xlbridge.audio.frame import Samples
from xlbridge.events import DropReason
from xlbridge.transports.websocket import WebSocketEndpoint

FRAME = struct.pack("<h", 1111) * 320  # 20 ms of slin16, little-endian


class MediaURLTests(SynchronousTestCase):
    def test_from_the_ari_url(self) -> None:
        self.assertEqual(media_url("http://127.0.0.1:8088", "c0-7"), "ws://127.0.0.1:8088/media/c0-7")
        self.assertEqual(media_url("https://pbx.example:8089", "c"), "wss://pbx.example:8089/media/c")
        # An http.conf prefix comes first, as it does for /ari.
        self.assertEqual(media_url("http://h:8088/asterisk/", "c"), "ws://h:8088/asterisk/media/c")
        self.assertEqual(media_url("http://[::1]:8088", "a/b"), "ws://[::1]:8088/media/a%2Fb")


class StubProtocol:
    """Just enough of a protocol for the router to refuse it."""

    transport = None

    def __init__(self) -> None:
        self.dropped: list[bool] = []

    def dropConnection(self, abort: bool = False) -> None:
        self.dropped.append(abort)


class OldChannel(Channel):
    """An Asterisk before 20.17/22.7/23.1: no channel_id in MEDIA_START."""

    def _event(self, name: str, **fields: Any) -> None:
        if name == "MEDIA_START":
            fields.pop("channel_id", None)
        super()._event(name, **fields)


class Endpoints:
    def make(self, clock: Any, name: str = "PJSIP/7777-1") -> WebSocketEndpoint:
        heard: list[Samples] = []
        ep = WebSocketEndpoint(name, lambda e, s: heard.append(s), clock, persistent=True)
        ep.heard = heard  # type: ignore[attr-defined]
        return ep


class DialTests(Endpoints, SynchronousTestCase):
    """
    Server mode: xlbridge dials ``/media/<id>``; the dial is done when
    the connection is the leg's.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.fake = FakeChanWebSocket(self.reactor)
        self.ep = self.make(self.reactor)

    def dial(self, connection_id: str = "c007") -> tuple[MediaDial, Any]:
        dial = MediaDial(self.ep, f"ws://127.0.0.1:8088/media/{connection_id}", self.reactor, self.reactor)
        d = dial.start()
        host, port, factory, timeout, _ = self.reactor.tcpClients[-1]
        self.assertEqual((host, port, timeout), ("127.0.0.1", 8088, 5.0))
        return dial, d

    def link(self, dial: MediaDial) -> Link:
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        return connect(self.fake.server_factory(self.reactor), factory, self.reactor)

    def test_handed_over_at_media_start(self) -> None:
        ch = self.fake.add_channel("c007")
        dial, d = self.dial()
        link = self.link(dial)
        self.assertIsNone(self.successResultOf(d))
        self.assertIs(self.ep.connection, link.client)
        self.assertIs(link.client.endpoint, self.ep)  # nothing of the dial left in the path
        self.assertEqual(self.ep.call_id, "1796623357.1")
        self.assertEqual(self.fake.requests[0].protocols, ["media"])
        self.assertFalse([c for c in self.reactor.getDelayedCalls() if c.func == dial._fail])  # timeout cancelled
        # Audio both ways from here on, through the endpoint alone.
        ch.send_audio(FRAME)
        link.flush()
        self.assertEqual(len(self.ep.heard), 1)  # type: ignore[attr-defined]

    def test_unknown_connection_id_fails(self) -> None:
        dial, d = self.dial("nope")
        self.link(dial)
        err = self.failureResultOf(d, MediaConnectError).value
        self.assertIn("ws://127.0.0.1:8088/media/nope", str(err))
        self.assertIn("404", str(err))
        self.assertIsNone(self.ep.connection)

    def test_refused_connection_fails(self) -> None:
        dial, d = self.dial()
        _, _, factory, _, _ = self.reactor.tcpClients[-1]
        factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertIn("refused", str(self.failureResultOf(d, MediaConnectError).value))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_no_media_start_in_time_fails(self) -> None:
        dial, d = self.dial()
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertIn("no MEDIA_START within 5 s", str(self.failureResultOf(d, MediaConnectError).value))

    def test_cancelled_before_it_connects(self) -> None:
        self.fake.add_channel("c007")
        dial, d = self.dial()
        dial.cancel()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        # Its connection, should it still open, is closed and not adopted.
        link = self.link(dial)
        self.assertIsNone(self.ep.connection)
        self.assertTrue(link.client.transport.disconnecting or link.client.state == link.client.STATE_CLOSED)

    def test_a_busy_leg_refuses(self) -> None:
        self.fake.add_channel("c007")
        self.fake.add_channel("c008")
        _, first = self.dial("c007")
        self.link(_)
        self.successResultOf(first)
        dial, d = self.dial("c008")
        self.link(dial)
        self.assertIn("already has a connection", str(self.failureResultOf(d, MediaConnectError).value))
        self.assertEqual(self.ep.counters.drops, {DropReason.WEBSOCKET_BUSY: 1})


class RouterTests(Endpoints, SynchronousTestCase):
    """
    Client mode: Asterisk dials one port; MEDIA_START says whose the
    connection is.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.fake = FakeChanWebSocket(self.clock)
        self.router = WebSocketRouter(self.clock, start_timeout=5)
        self.ep = self.make(self.clock)

    def timers(self) -> list[Any]:
        """The router's timers (not the fake channels' media timers)."""
        return [c for c in self.clock.getDelayedCalls() if getattr(c.func, "__self__", None) is self.router]

    def dial(self, channel_id: str = "xlbridge-ws-1", old: bool = False,
             name: str = "WebSocket/xlbridge-ari/0x7f01") -> tuple[Channel, Link]:
        ch = (OldChannel if old else Channel)(self.fake, "xlbridge-ari", channel_id=channel_id)
        ch.name = name
        link = connect(self.router.factory(self.clock),
                       self.fake.client_factory("ws://127.0.0.1:9093/media", ch, protocols=["media"]),
                       self.clock)
        return ch, link

    def test_routed_by_channel_id(self) -> None:
        self.router.add("xlbridge-ws-1", self.ep)
        ch, link = self.dial()
        self.assertEqual(link.client.websocket_protocol_in_use, "media")
        self.assertIs(self.ep.connection, link.server)
        self.assertIs(link.server.endpoint, self.ep)
        self.assertEqual(self.ep.call_id, "xlbridge-ws-1")
        self.assertEqual((self.router.pending, self.timers()), ({}, []))
        ch.send_audio(FRAME)
        link.flush()
        self.assertEqual(len(self.ep.heard), 1)  # type: ignore[attr-defined]

    def test_routed_by_name_registered_after_the_connection(self) -> None:
        # An Asterisk without channel_id, whose REST answer (the name) comes
        # after the connection.
        ch, link = self.dial(old=True)
        ch.send_audio(FRAME)  # nobody's yet
        link.flush()
        self.assertIsNone(self.ep.connection)
        self.router.add("WebSocket/xlbridge-ari/0x7f01", self.ep)
        self.assertIs(self.ep.connection, link.server)
        self.assertEqual(self.ep.call_id, "WebSocket/xlbridge-ari/0x7f01")
        self.assertEqual(self.router.counters.drops, {DropReason.NO_CALL: 1})
        self.assertEqual(self.timers(), [])

    def test_unknown_channel_id_refused_at_once(self) -> None:
        self.router.add("xlbridge-ws-1", self.ep)
        ch, link = self.dial(channel_id="1796623357.9")
        self.assertIsNone(self.ep.connection)
        self.assertEqual(self.router.counters.drops, {DropReason.WEBSOCKET_UNKNOWN_CHANNEL: 1})
        self.assertIsNone(ch.proto)  # closed: Asterisk hangs it up
        self.assertEqual((self.router.pending, self.timers()), ({}, []))

    def test_unknown_name_refused_after_the_timeout(self) -> None:
        ch, link = self.dial(old=True)
        self.clock.advance(4.9)
        link.flush()
        self.assertIsNotNone(ch.proto)
        self.clock.advance(0.1)
        link.flush()
        self.assertIsNone(ch.proto)
        self.assertEqual(self.router.counters.drops, {DropReason.WEBSOCKET_UNKNOWN_CHANNEL: 1})

    def test_silent_connection_refused_after_the_timeout(self) -> None:
        proto = StubProtocol()
        self.router.ws_open(proto)
        self.clock.advance(4.9)
        self.assertEqual(proto.dropped, [])
        self.clock.advance(0.1)
        self.assertEqual(proto.dropped, [False])  # TCP closed: Asterisk hangs the channel up
        self.assertEqual(self.router.counters.drops, {DropReason.WEBSOCKET_NO_START: 1})

    def test_audio_or_garbage_before_media_start_refused(self) -> None:
        for payload, binary in [(FRAME, True), (b"QUEUE_DRAINED", False), (b"\xff\xfe", False)]:
            proto = StubProtocol()
            self.router.ws_open(proto)
            self.router.ws_message(proto, payload, binary)
            self.assertEqual(proto.dropped, [False], payload)
        self.assertEqual(self.router.counters.drops,
                         {DropReason.WEBSOCKET_NO_START: 2, DropReason.WEBSOCKET_MALFORMED: 1})
        self.assertEqual((self.router.pending, self.timers()), ({}, []))

    def test_second_connection_for_a_busy_leg_refused(self) -> None:
        self.router.add("xlbridge-ws-1", self.ep)
        first, link = self.dial()
        second, _ = self.dial()
        self.assertIs(self.ep.connection, link.server)
        self.assertIsNotNone(first.proto)
        self.assertIsNone(second.proto)
        self.assertEqual(self.ep.counters.drops, {DropReason.WEBSOCKET_BUSY: 1})

    def test_removed_leg_refuses_late_connections(self) -> None:
        self.router.add("xlbridge-ws-1", self.ep)
        self.router.add("WebSocket/xlbridge-ari/0x7f01", self.ep)
        self.router.remove(self.ep)
        self.assertEqual(self.router.routes, {})
        ch, _ = self.dial()
        self.assertIsNone(ch.proto)
        self.assertEqual(self.router.counters.drops, {DropReason.WEBSOCKET_UNKNOWN_CHANNEL: 1})

    def test_close_pending_on_shutdown(self) -> None:
        ch, _ = self.dial(old=True)
        self.router.close_pending()
        self.assertEqual((self.router.pending, self.timers()), ({}, []))
