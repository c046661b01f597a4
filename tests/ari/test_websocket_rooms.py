"""
``--ari-media websocket`` end to end against the fake ARI over real
loopback sockets: its chan_websocket externalMedia answers like Asterisk's;
a room of two callers relays audio both ways over WebSocket media, in
server mode (xlbridge connects to ``/media/<id>``) and client mode
(Asterisk dials our one port); hangups from either side leave nothing
behind; a media connection that fails fails the caller's setup; and the
restart cleanup removes stale WebSocket channels of ours only.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater

from tests.ari.harness import PASSWORD, ARIHarness, wait_until
from tests.fakes.chan_websocket import Channel
from xlbridge.ari.caller import Caller
from xlbridge.ari.client import ARIClient, ARIError
from xlbridge.ari.controller import ARIController
from xlbridge.events import DropReason
from xlbridge.transports.websocket import WebSocketEndpoint

TONE_A, TONE_B = struct.pack("<h", 1111) * 320, struct.pack("<h", -2222) * 320


def heard(channel: Channel) -> np.ndarray:
    return np.frombuffer(channel.heard_bytes(), dtype="<i2")


class FakeWebSocketTests(ARIHarness):
    """
    The fake's externalMedia over WebSocket answers like Asterisk 22's.
    """

    def test_validation_and_server_mode_answer(self) -> Any:
        async def run() -> None:
            client = ARIClient(self.fake.url, "xlbridge", PASSWORD, reactor)
            self.addCleanup(client.close)
            base = {"app": "xlbridge", "format": "slin16", "transport": "websocket", "encapsulation": "none"}
            for params, status in [
                ({**base, "encapsulation": "rtp"}, 400),
                ({**base, "connection_type": "server", "external_host": "127.0.0.1:9"}, 500),
                ({**base, "external_host": "no-such-entry"}, 400),
                ({**base, "connection_type": "server", "format": ""}, 400),
            ]:
                try:
                    await client.request("POST", "/channels/externalMedia", params)
                except ARIError as e:
                    self.assertEqual(e.status, status, params)
                else:
                    self.fail(f"no error for {params}")
            self.assertEqual(self.fake.channels, {})
            ch = await client.websocket_media("xlbridge", "xlbridge-ws-1")
            self.assertEqual((ch["id"], ch["state"]), ("xlbridge-ws-1", "Down"))
            self.assertRegex(ch["name"], r"^WebSocket/INCOMING/0x[0-9a-f]+$")
            self.assertEqual(ch["dialplan"]["app_name"], "AppDial2")
            self.assertEqual(set(ch["channelvars"]), {"MEDIA_WEBSOCKET_CONNECTION_ID", "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"})
            try:
                await client.websocket_media("xlbridge", "xlbridge-ws-1")
            except ARIError as e:
                self.assertEqual(e.status, 409)
            else:
                self.fail("a taken channelId was accepted")

        return ensureDeferred(run())


class Rooms(ARIHarness):
    async def room(self) -> tuple[ARIController, dict[str, Any], dict[str, Any], Caller, Caller]:
        ari = self.start()
        await wait_until(lambda: ari.events.connected)
        a = self.fake.new_channel("PJSIP/7777-00000001", "7777")
        b = self.fake.new_channel("PJSIP/8888-00000002", "8888")
        self.fake.enter(a, ["room=r1,lang=en"])
        self.fake.enter(b, ["room=r1,lang=es"])
        await wait_until(lambda: a["id"] in self.calls())
        ca, cb = ari.rooms["r1"].callers
        return ari, a, b, ca, cb

    async def relay_both_ways(self, ca: Caller, cb: Caller) -> None:
        assert ca.media_id and cb.media_id
        wa, wb = self.fake.websocket[ca.media_id], self.fake.websocket[cb.media_id]
        for _ in range(25):
            wa.send_audio(TONE_A)
            wb.send_audio(TONE_B)
            await deferLater(reactor, 0.02, lambda: None)
        await wait_until(lambda: heard(wb).tolist().count(1111) >= 320 * 10 and heard(wa).tolist().count(-2222) >= 320 * 10)
        self.assertEqual(set(np.unique(heard(wb))) - {0}, {1111})
        self.assertEqual(set(np.unique(heard(wa))) - {0}, {-2222})
        self.assertEqual(wa.violations + wb.violations, [])
        self.assertTrue(all(len(f) == 640 for _, f in wb.heard))

    async def all_gone(self, ari: ARIController, *channels: Channel) -> None:
        await wait_until(lambda: self.fake.empty)
        await wait_until(lambda: not ari.callers and not ari.rooms and all(c.proto is None for c in channels))
        assert ari.websocket is not None
        self.assertEqual((ari.websocket.legs, ari.websocket.dials), ({}, {}))
        self.assertEqual(self.calls(), {})
        self.assertEqual(self.bridge.dynamic_endpoints, {})


class ServerModeTests(Rooms):
    settings = {"ari-media": "websocket"}

    def test_room_flow_and_hangup_by_a_caller(self) -> Any:
        async def run() -> None:
            ari, a, b, ca, cb = await self.room()
            assert ca.media_id and cb.media_id and ari.websocket is not None
            self.assertTrue(ca.media_id.startswith("xlbridge-ws-"))
            em = [r.params for r in self.fake.requests if r.path == "/channels/externalMedia"]
            self.assertIn({"app": "xlbridge", "channelId": ca.media_id, "transport": "websocket",
                           "encapsulation": "none", "format": "slin16", "connection_type": "server"}, em)
            self.assertNotIn("external_host", em[0])
            self.assertEqual((ca.port, ari.pool.in_use), (None, set()))  # no RTP port taken
            wa = self.fake.websocket[ca.media_id]
            self.assertEqual(wa.connections, 1)
            self.assertEqual(self.fake.chan_websocket.requests[0].path,
                             f"/media/{self.fake.channels[ca.media_id]['channelvars']['MEDIA_WEBSOCKET_CONNECTION_ID']}")
            # Only the callers were answered: the media channels' own
            # StasisStart (after we connected) was known as ours.
            self.assertEqual(len([r for r in self.fake.requests if r.path.endswith("/answer")]), 2)
            assert ca.bridge_id is not None
            self.assertEqual(sorted(self.fake.bridges[ca.bridge_id]["channels"]), sorted([a["id"], ca.media_id]))
            self.assertIsInstance(ca.endpoint, WebSocketEndpoint)
            assert isinstance(ca.endpoint, WebSocketEndpoint)
            self.assertTrue(ca.endpoint.persistent)
            self.assertEqual(ca.endpoint.call_id, ca.media_id)
            self.assertIn(ca.name, self.bridge.dynamic_endpoints)
            await self.relay_both_ways(ca, cb)
            wb = self.fake.websocket[cb.media_id]

            # A hangs up: B is hung up too; nothing is left, and our legs
            # closed their connections (Asterisk saw the app hang up).
            self.fake.hangup(a["id"])
            await self.all_gone(ari, wa, wb)
            self.assertEqual(wa.hung_up_by, "asterisk")  # the ARI DELETE closed it
            self.assertNotIn("setup failed", "".join(self.logged))

        return ensureDeferred(run())

    def test_media_channel_hung_up_by_asterisk(self) -> Any:
        async def run() -> None:
            ari, a, b, ca, cb = await self.room()
            assert ca.media_id and cb.media_id
            wa, wb = self.fake.websocket[ca.media_id], self.fake.websocket[cb.media_id]
            # B's ExternalMedia channel goes (Asterisk closes its socket):
            # its caller can no longer be heard, so the room ends.
            self.fake.hangup(cb.media_id)
            await self.all_gone(ari, wa, wb)
            self.assertEqual(wb.close_code, 1000)
            self.assertTrue(any("left room r1 (media channel gone)" in x for x in self.logged))

        return ensureDeferred(run())

    def test_connect_failure_fails_the_setup(self) -> Any:
        class Forgetful(dict[str, Any]):
            # Asterisk forgets every channel's media: /media/<id> is a 404.
            def __setitem__(self, key: str, value: Any) -> None:
                pass

        async def run() -> None:
            self.fake.chan_websocket.channels = Forgetful()
            ari = self.start()
            await wait_until(lambda: ari.events.connected)
            a = self.fake.new_channel("PJSIP/7777-00000001", "7777")
            self.fake.enter(a, ["room=r1,lang=en"])
            await wait_until(lambda: self.fake.empty and not ari.callers)
            line = next(x for x in self.logged if "setup failed" in x)
            self.assertIn("cannot connect to Asterisk's media WebSocket ws://127.0.0.1:", line)
            self.assertIn("404", line)
            self.assertEqual(self.calls(), {})
            assert ari.websocket is not None
            self.assertEqual((ari.websocket.legs, ari.websocket.dials), ({}, {}))
            self.flushLoggedErrors()

        return ensureDeferred(run())

    def test_hangup_while_connecting(self) -> Any:
        async def run() -> None:
            # The caller hangs up as its ExternalMedia channel is created:
            # the dial stops (or never starts), the channel is hung up, and
            # nothing stays.
            ari = self.start()
            await wait_until(lambda: ari.events.connected)
            a = self.fake.new_channel("PJSIP/7777-00000001", "7777")
            handle = self.fake.handle

            def hang_up_then(method: str, parts: list[str], params: dict[str, str]) -> tuple[int, Any]:
                if parts == ["channels", "externalMedia"]:
                    self.fake.later(0, self.fake.hangup, a["id"])
                return handle(method, parts, params)

            self.fake.handle = hang_up_then  # type: ignore[method-assign]
            self.fake.enter(a, ["room=r1,lang=en"])
            await wait_until(lambda: self.fake.empty and not ari.callers)
            assert ari.websocket is not None
            await wait_until(lambda: not ari.websocket.legs and not ari.websocket.dials)
            self.assertFalse([x for x in self.logged if "setup failed" in x])
            self.assertEqual(self.bridge.dynamic_endpoints, {})

        return ensureDeferred(run())

    def test_restart_cleanup_removes_stale_websocket_channels(self) -> Any:
        async def run() -> None:
            stale = self.fake.new_channel("WebSocket/INCOMING/0x7f01", state="Down",
                                          channel_id=f"xlbridge-ws-{uuid.uuid4()}")
            stale["dialplan"] = {"app_name": "AppDial2", "app_data": "(Outgoing Line)"}
            in_stasis = self.fake.new_channel("WebSocket/xlbridge-ari/0x7f02", state="Up")
            in_stasis["dialplan"] = {"app_name": "Stasis", "app_data": "xlbridge"}
            foreign = self.fake.new_channel("WebSocket/INCOMING/0x7f03", state="Down")
            foreign["dialplan"] = {"app_name": "AppDial2", "app_data": "(Outgoing Line)"}
            other_app = self.fake.new_channel("WebSocket/INCOMING/0x7f04", state="Up", channel_id="otherapp-ws-1")
            other_app["dialplan"] = {"app_name": "Stasis", "app_data": "otherapp"}
            self.start()
            await wait_until(lambda: stale["id"] not in self.fake.channels
                             and in_stasis["id"] not in self.fake.channels)
            self.assertIn(foreign["id"], self.fake.channels)
            self.assertIn(other_app["id"], self.fake.channels)
            self.assertEqual(sum("removing stale channel WebSocket/" in x for x in self.logged), 2)

        return ensureDeferred(run())


class ClientModeTests(Rooms):
    settings = {"ari-media": "websocket", "ari-websocket-connection": "client",
                "ari-websocket-client": "xlbridge-ari", "ari-websocket-port": "0"}

    def start(self, *args: Any, **kwargs: Any) -> ARIController:
        ari = super().start(*args, **kwargs)
        assert ari.websocket is not None
        self.port = ari.websocket.port()
        self.assertNotEqual(self.port, 0)
        self.fake.websocket_clients["xlbridge-ari"] = f"ws://127.0.0.1:{self.port}/media"
        return ari

    def test_room_flow_routed_by_channel_id(self) -> Any:
        async def run() -> None:
            ari, a, b, ca, cb = await self.room()
            assert ca.media_id and cb.media_id and ari.websocket is not None and ari.websocket.router is not None
            em = [r.params for r in self.fake.requests if r.path == "/channels/externalMedia"]
            self.assertIn({"app": "xlbridge", "channelId": ca.media_id, "transport": "websocket",
                           "encapsulation": "none", "format": "slin16", "connection_type": "client",
                           "external_host": "xlbridge-ari"}, em)
            self.assertRegex(self.fake.channels[ca.media_id]["name"], r"^WebSocket/xlbridge-ari/0x")
            await self.relay_both_ways(ca, cb)
            self.assertEqual(ari.websocket.router.counters.drops, {})
            wa, wb = self.fake.websocket[ca.media_id], self.fake.websocket[cb.media_id]
            # B hangs up this time.
            self.fake.hangup(b["id"])
            await self.all_gone(ari, wa, wb)
            self.assertEqual(ari.websocket.router.routes, {})

        return ensureDeferred(run())

    def test_unknown_channel_refused(self) -> Any:
        async def run() -> None:
            ari = self.start()
            assert ari.websocket is not None and ari.websocket.router is not None
            # Another app's channel dialling our port: refused and counted.
            ch = self.fake.chan_websocket.dial(reactor, f"ws://127.0.0.1:{self.port}/media", protocols=["media"],
                                               connection_id="xlbridge-ari")
            ch.channel_id = "1796623357.77"
            router = ari.websocket.router
            await wait_until(lambda: router.counters.drops)
            self.assertEqual(router.counters.drops, {DropReason.WEBSOCKET_UNKNOWN_CHANNEL: 1})
            await wait_until(lambda: ch.proto is None and ch.hung_up_by == "app")
            self.assertEqual(router.pending, {})

        return ensureDeferred(run())

    def test_listener_refused_without_asterisk_reaching_it(self) -> Any:
        async def run() -> None:
            # The websocket_client.conf entry points nowhere: Asterisk gives
            # up and destroys the channel; the caller is hung up.
            ari = self.start()
            self.fake.websocket_clients["xlbridge-ari"] = "ws://127.0.0.1:9/media"
            await wait_until(lambda: ari.events.connected)
            a = self.fake.new_channel("PJSIP/7777-00000001", "7777")
            self.fake.enter(a, ["room=r1,lang=en"])
            await wait_until(lambda: any(r.path == "/channels/externalMedia" for r in self.fake.requests))
            await wait_until(lambda: self.fake.empty and not ari.callers)
            self.assertIn("media channel gone", "".join(self.logged))
            assert ari.websocket is not None
            self.assertEqual(ari.websocket.legs, {})

        return ensureDeferred(run())


class MixedMediaTests(Rooms):
    """
    One room, two media: the default (RTP) for one caller, ``media=websocket``
    in the other's Stasis arguments; each hears the other.  A media the
    controller cannot give falls back to the default, with a warning.
    """

    settings = {"reply-codec": "slin16"}  # bit-exact back to the RTP caller

    def test_rtp_and_websocket_callers_in_one_room(self) -> Any:
        async def run() -> None:
            from xlbridge.rtp.packet import build, parse
            from xlbridge.transports.rtp import RTPEndpoint

            ari = self.start()
            await wait_until(lambda: ari.events.connected)
            a = self.fake.new_channel("PJSIP/7777-00000001", "7777")
            b = self.fake.new_channel("PJSIP/8888-00000002", "8888")
            self.fake.enter(a, ["room=r1,lang=en,media=websocket"])
            self.fake.enter(b, ["room=r1,lang=es"])
            await wait_until(lambda: a["id"] in self.calls())
            ca, cb = ari.rooms["r1"].callers
            self.assertEqual((ca.media, cb.media), ("websocket", "rtp"))
            self.assertIsInstance(ca.endpoint, WebSocketEndpoint)
            self.assertIsInstance(cb.endpoint, RTPEndpoint)
            assert ca.media_id and cb.media_id
            wa = self.fake.websocket[ca.media_id]
            for seq in range(25):
                wa.send_audio(TONE_A)
                self.fake.send_rtp(cb.media_id, build(118, 1000 + seq, 320 * seq, 7, struct.pack(">h", -2222) * 320))
                await deferLater(reactor, 0.02, lambda: None)

            def rtp_heard() -> list[int]:
                got = [parse(d) for d, _ in self.fake.rtp[cb.media_id].received]
                return np.frombuffer(b"".join(p.payload for p in got), dtype=">i2").tolist()

            await wait_until(lambda: rtp_heard().count(1111) >= 320 * 10 and heard(wa).tolist().count(-2222) >= 320 * 10)
            self.assertEqual(set(rtp_heard()) - {0}, {1111})
            self.assertEqual(set(np.unique(heard(wa))) - {0}, {-2222})
            self.fake.hangup(b["id"])
            await self.all_gone(ari, wa)

        return ensureDeferred(run())

    def test_unavailable_media_falls_back_with_a_warning(self) -> Any:
        async def run() -> None:
            ari = self.start()
            await wait_until(lambda: ari.events.connected)
            a = self.fake.new_channel("PJSIP/7777-00000001", "7777")
            self.fake.enter(a, ["room=r1,lang=en,media=audiosocket"])
            await wait_until(lambda: a["id"] in ari.callers)
            self.assertEqual(ari.callers[a["id"]].media, "rtp")
            self.assertIn("media=audiosocket is not one of rtp, websocket; using rtp", "\n".join(self.logged))
            self.fake.hangup(a["id"])
            await wait_until(lambda: self.fake.empty)

        return ensureDeferred(run())
