"""
ARI legs over AudioSocket (``--ari-media audiosocket``): the router that
hands each connection to its leg by UUID (in memory, with a Clock), the
fake ARI's audiosocket ExternalMedia, and the room flow end to end over
real loopback sockets.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import PASSWORD, ARIHarness, wait_until
from xlbridge.ari.audiosocket import AudioSocketRouter, RoutedProtocol
from xlbridge.ari.client import ARIClient, ARIError
from xlbridge.events import DropReason
from xlbridge.transports.audiosocket import AudioSocketEndpoint
from xlbridge.transports.audiosocket_codec import HANGUP, encode, uuid_frame


FRAME = struct.pack("<h", 1000) * 320  # 20 ms of slin16, little-endian

class RouterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.router = AudioSocketRouter(self.clock, uuid_timeout=5)
        self.heard: list[tuple[AudioSocketEndpoint, Any]] = []
        self.call_id, self.endpoint = self.router.add("PJSIP/7777-1", lambda ep, s: self.heard.append((ep, s)))

    def connect(self) -> tuple[RoutedProtocol, StringTransport]:
        proto = self.router.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def test_uuid_then_audio_in_one_chunk_reaches_the_leg(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(uuid_frame(self.call_id) + encode(0x12, FRAME))
        self.assertIs(self.endpoint.connection, proto)
        self.assertEqual(self.endpoint.call_id, self.call_id)
        self.assertEqual(len(self.heard), 1)
        self.assertEqual((self.endpoint.rate, self.endpoint.ready), (16000, True))
        self.assertFalse(transport.disconnecting)
        self.assertEqual((self.router.pending, self.clock.getDelayedCalls()), (set(), []))
        # Replies go back on this connection as 0x12, like a configured leg.
        self.endpoint.send_frame(None)
        self.assertEqual(transport.value()[:3], b"\x12\x02\x80")

    def test_byte_by_byte(self) -> None:
        proto, transport = self.connect()
        for b in uuid_frame(self.call_id) + encode(0x12, FRAME):
            proto.dataReceived(bytes([b]))
        self.assertIs(self.endpoint.connection, proto)
        self.assertEqual(len(self.heard), 1)

    def test_unknown_uuid_counted_and_closed(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(uuid_frame(str(uuid.uuid4())) + encode(0x12, FRAME))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.router.counters.drops, {DropReason.AUDIOSOCKET_UNKNOWN_UUID: 1})
        self.assertIsNone(self.endpoint.connection)
        self.assertEqual(self.heard, [])

    def test_audio_before_uuid_counted_and_closed(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(encode(0x12, FRAME) + uuid_frame(self.call_id))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.router.counters.drops, {DropReason.AUDIOSOCKET_NO_UUID: 1})
        self.assertIsNone(self.endpoint.connection)

    def test_other_first_messages_counted_and_closed(self) -> None:
        for data in (encode(0x03, b"1"), encode(0x42, b"xx"), encode(0x01, b"short")):
            proto, transport = self.connect()
            proto.dataReceived(data)
            self.assertTrue(transport.disconnecting, data)
        self.assertEqual(
            self.router.counters.drops,
            {DropReason.AUDIOSOCKET_KIND: 2, DropReason.AUDIOSOCKET_LENGTH: 1},
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_silent_connection_closed_after_timeout(self) -> None:
        proto, transport = self.connect()
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.router.counters.drops, {DropReason.AUDIOSOCKET_NO_UUID: 1})

    def test_half_frame_at_close_counted_and_timer_cancelled(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(uuid_frame(self.call_id)[:5])
        proto.connectionLost()
        self.assertEqual(self.router.counters.drops, {DropReason.AUDIOSOCKET_TRUNCATED: 1})
        self.assertEqual((self.router.pending, self.clock.getDelayedCalls()), (set(), []))

    def test_second_connection_for_a_busy_leg_refused(self) -> None:
        first, _ = self.connect()
        first.dataReceived(uuid_frame(self.call_id))
        second, transport = self.connect()
        second.dataReceived(uuid_frame(self.call_id))
        self.assertTrue(transport.disconnecting)
        self.assertIs(self.endpoint.connection, first)
        self.assertEqual(self.endpoint.counters.drops, {DropReason.AUDIOSOCKET_BUSY: 1})

    def test_call_end_keeps_connection_remove_closes_it(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(uuid_frame(self.call_id) + encode(0x12, FRAME))
        self.endpoint.reset()  # the call ended (the partner left): the leg stays
        self.assertIs(self.endpoint.connection, proto)
        self.assertFalse(transport.disconnecting)
        # Still answering, in the slin16 we asked Asterisk for, so the next
        # call is heard at once even while its caller is silent.
        self.assertTrue(self.endpoint.ready)
        self.assertEqual(self.endpoint.reply_rate, 16000)
        self.router.remove(self.call_id)
        self.assertTrue(transport.value().endswith(HANGUP))
        self.assertTrue(transport.disconnecting)
        # A late connection for a removed leg is an unknown UUID.
        late, t2 = self.connect()
        late.dataReceived(uuid_frame(self.call_id))
        self.assertTrue(t2.disconnecting)
        self.assertEqual(self.router.counters.drops, {DropReason.AUDIOSOCKET_UNKNOWN_UUID: 1})

    def test_peer_closing_forgets_the_stream(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(uuid_frame(self.call_id))
        proto.connectionLost()
        self.assertIsNone(self.endpoint.connection)

class FakeAudioSocketTests(ARIHarness):
    """
    The fake's ExternalMedia audiosocket answers like Asterisk's.
    """

    def test_validation(self) -> Any:
        async def run() -> None:
            client = ARIClient(self.fake.url, "xlbridge", PASSWORD, reactor)
            self.addCleanup(client.close)
            base = {"app": "xlbridge", "external_host": "127.0.0.1:9", "format": "slin16",
                    "encapsulation": "audiosocket"}
            for params, status in [
                ({**base, "transport": "udp", "data": str(uuid.uuid4())}, 400),
                ({**base, "transport": "tcp"}, 400),
                ({**base, "transport": "tcp", "data": "not-a-uuid"}, 500),
                ({**base, "transport": "tcp", "data": str(uuid.uuid4())}, 500),  # nobody listens on 9
            ]:
                try:
                    await client.request("POST", "/channels/externalMedia", params)
                except ARIError as e:
                    self.assertEqual(e.status, status, params)
                else:
                    self.fail(f"no error for {params}")
            self.assertEqual(self.fake.channels, {})

        return ensureDeferred(run())

class AudioSocketRoomTests(ARIHarness):
    settings = {"ari-media": "audiosocket", "ari-audiosocket-port": "0"}

    def test_room_flow(self) -> Any:
        async def run() -> None:
            ari = self.start()
            assert ari.audiosocket is not None
            port = ari.audiosocket_port()
            self.assertNotEqual(port, 0)
            await wait_until(lambda: ari.events.connected)
            a = self.fake.new_channel("PJSIP/7777-00000001", "7777")
            b = self.fake.new_channel("PJSIP/8888-00000002", "8888")
            self.fake.enter(a, ["room=r1,lang=en"])
            self.fake.enter(b, ["room=r1,lang=es"])
            await wait_until(lambda: a["id"] in self.calls())
            ca, cb = ari.rooms["r1"].callers
            assert ca.media_id and cb.media_id and ca.media_uuid and cb.media_uuid
            em = [r.params for r in self.fake.requests if r.path == "/channels/externalMedia"]
            self.assertIn({"app": "xlbridge", "external_host": f"127.0.0.1:{port}", "format": "slin16",
                           "encapsulation": "audiosocket", "transport": "tcp", "data": ca.media_uuid}, em)
            self.assertEqual(self.fake.channels[ca.media_id]["name"], f"AudioSocket/127.0.0.1:{port}-{ca.media_uuid}")
            self.assertIsNone(ca.port)  # no RTP port taken
            self.assertEqual(ari.pool.in_use, set())
            # Only the callers were answered: the AudioSocket channels' own
            # StasisStart (args [uuid]) was recognised as ours.
            self.assertEqual(len([r for r in self.fake.requests if r.path.endswith("/answer")]), 2)
            bid = ca.bridge_id
            assert bid is not None
            self.assertEqual(sorted(self.fake.bridges[bid]["channels"]), sorted([a["id"], ca.media_id]))
            peer_a, peer_b = self.fake.audiosocket[ca.media_id], self.fake.audiosocket[cb.media_id]
            self.assertIsInstance(ca.endpoint, AudioSocketEndpoint)
            # Audio both ways, one 20 ms message per tick, bit-exact relay.
            tone_a, tone_b = struct.pack("<h", 1111) * 320, struct.pack("<h", -2222) * 320
            for _ in range(25):
                self.fake.send_audiosocket(ca.media_id, tone_a)
                self.fake.send_audiosocket(cb.media_id, tone_b)
                await deferLater(reactor, 0.02, lambda: None)
            await wait_until(lambda: audio(peer_b).tolist().count(1111) >= 320 * 10
                             and audio(peer_a).tolist().count(-2222) >= 320 * 10)
            self.assertEqual(set(np.unique(audio(peer_b))) - {0}, {1111})
            self.assertEqual(set(np.unique(audio(peer_a))) - {0}, {-2222})
            self.assertEqual({(k, len(p)) for k, p in peer_b.frames}, {(0x12, 640)})
            self.assertIsNone(peer_a.refused)

            # Teardown: A hangs up; B is hung up too; nothing is left.
            self.fake.hangup(a["id"])
            await wait_until(lambda: self.fake.empty)
            await wait_until(lambda: not ari.callers and not ari.rooms and peer_a.closed and peer_b.closed)
            self.assertEqual(ari.audiosocket.routes, {})
            self.assertEqual(self.calls(), {})
            self.assertEqual(ari.audiosocket.counters.drops, {})
            self.assertEqual(ari.pool.in_use, set())

        return ensureDeferred(run())

    def test_restart_cleanup_removes_stale_audiosocket_channels(self) -> Any:
        async def run() -> None:
            ari = self.start()
            port = ari.audiosocket_port()  # bound synchronously by start()
            stale = self.fake.new_channel(f"AudioSocket/127.0.0.1:{port}-{uuid.uuid4()}", state="Up")
            foreign = self.fake.new_channel(f"AudioSocket/127.0.0.1:{port + 1}-{uuid.uuid4()}", state="Up")
            stale_rtp = self.fake.new_channel("UnicastRTP/127.0.0.1:47150-0x7f0001", state="Up")
            await wait_until(lambda: stale["id"] not in self.fake.channels
                             and stale_rtp["id"] not in self.fake.channels)
            self.assertIn(foreign["id"], self.fake.channels)

        return ensureDeferred(run())

    def test_unknown_connection_to_the_listener_refused(self) -> Any:
        async def run() -> None:
            ari = self.start()
            assert ari.audiosocket is not None
            from tests.fakes.ari_audiosocket import connect

            gone: list[Any] = []
            peer = connect(reactor, "127.0.0.1", ari.audiosocket_port(), str(uuid.uuid4()), gone.append)
            assert peer is not None
            await wait_until(lambda: peer.closed)
            self.assertEqual(ari.audiosocket.counters.drops, {DropReason.AUDIOSOCKET_UNKNOWN_UUID: 1})

        return ensureDeferred(run())

def audio(peer: Any) -> np.ndarray:
    return np.frombuffer(peer.audio(0x12), dtype="<i2")
