"""
The ARI controller against the fake ARI (tests/fakes/ari.py), over real
sockets: the room flow end to end, setup failures, keeping the partner,
teardown and shutdown.  Then the same controller on a memory reactor with
a recording REST client: the exact requests, in order, of setups,
pairings and teardowns (also half-way through a setup).
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import ARIHarness, RecordingClient, password_file, wait_until
from xlbridge.ari.controller import ARIController
from xlbridge.ari.stasis import MEDIA_STASIS_TIMEOUT
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.events import CallEnded, CallStarted, Event
from xlbridge.rtp.packet import build, parse
from xlbridge.testing import MemoryUDPReactor


class RoomFlowTests(ARIHarness):
    def test_room_flow(self) -> Any:
        async def run() -> None:
            a, b = await self.pair()
            ari = self.ari
            ca, cb = ari.rooms["r1"].callers
            media_a, media_b = ca.media_id, cb.media_id
            assert media_a and media_b and ca.port and cb.port
            # Events name the call by the first caller's channel and carry
            # both channel ids and names.
            call = self.calls()[a["id"]]
            self.assertEqual((call.extensions, call.channels), ((a["name"], b["name"]), (a["id"], b["id"])))
            calls_a = [(r.method, r.path, r.params) for r in self.fake.requests
                       if a["id"] in r.path or a["id"] in r.params.get("name", "")
                       or str(ca.port) in r.params.get("external_host", "")
                       or a["id"] in r.params.get("channel", "")]
            bid = ca.bridge_id
            self.assertEqual(calls_a, [
                ("POST", f"/channels/{a['id']}/answer", {}),
                ("POST", "/bridges", {"type": "mixing", "name": f"xlbridge-{a['id']}"}),
                ("POST", "/channels/externalMedia",
                 {"app": "xlbridge", "external_host": f"127.0.0.1:{ca.port}", "format": "slin16"}),
                ("POST", f"/bridges/{bid}/addChannel", {"channel": f"{a['id']},{media_a}"}),
            ])
            self.assertEqual(sorted(self.fake.bridges[bid]["channels"]), sorted([a["id"], media_a]))
            call = self.calls()[a["id"]]
            self.assertEqual(call.extensions, ("PJSIP/7777-00000001", "PJSIP/8888-00000002"))
            self.assertEqual([leg.language for leg in call.legs], ["en", "es"])
            self.assertIn(call, self.bridge.active_calls())
            # Audio from caller A's ExternalMedia reaches B's, relayed.
            for i in range(25):
                self.fake.send_rtp(media_a, build(118, 100 + i, 320 * i, 1234, b"\x10\x00" * 320))
                await deferLater(reactor, 0.02, lambda: None)
            await wait_until(lambda: len(self.fake.rtp[media_b].received) > 5)
            data, addr = self.fake.rtp[media_b].received[-1]
            self.assertEqual(addr, ("127.0.0.1", cb.port))
            self.assertEqual(parse(data).payload_type, 9)  # G.722 back

            # Teardown: A hangs up; everything goes, B is hung up too.
            self.fake.hangup(a["id"])
            await wait_until(lambda: self.fake.empty)
            await wait_until(lambda: not ari.callers and not ari.rooms)
            self.assertEqual(ari.pool.in_use, set())
            self.assertEqual(self.calls(), {})
            self.assertIn(("DELETE", f"/channels/{b['id']}"), self.requests())
            self.assert_password_never_logged()
            # A released port is not handed out again at once.
            self.assertNotIn(ari.pool.allocate(), (ca.port, cb.port))

        return ensureDeferred(run())

    def test_external_media_stasis_start_ignored(self) -> Any:
        async def run() -> None:
            await self.pair()
            # Only the callers' channels were answered.
            answers = [p for m, p in self.requests() if p.endswith("/answer")]
            self.assertEqual(len(answers), 2)
            self.assertEqual(len(self.ari.callers), 2)

        return ensureDeferred(run())

    def test_setup_failure_hangs_up_and_cleans(self) -> Any:
        async def run() -> None:
            ari = await self.connected()
            self.fake.fail_next("POST", "/channels/externalMedia", 500)
            a = self.fake.new_channel("PJSIP/7777-00000001")
            self.fake.enter(a, ["room=r2,lang=en"])
            await wait_until(lambda: self.fake.empty)
            await wait_until(lambda: not ari.callers)
            self.assertEqual(ari.pool.in_use, set())

        return ensureDeferred(run())

    def test_media_added_to_bridge_only_once_in_stasis(self) -> Any:
        """
        Asterisk answers externalMedia before the channel is in Stasis
        (the fake delays its StasisStart): addChannel waits for it, so the
        bridge never gets a 422.
        """
        async def run() -> None:
            self.fake.media_stasis_delay = 0.3
            await self.pair()
            adds = [r for r in self.fake.requests if r.path.endswith("/addChannel")]
            self.assertEqual(len(adds), 2)
            for ca in self.ari.rooms["r1"].callers:
                self.assertIn(ca.media_id, self.fake.in_stasis)

        return ensureDeferred(run())

    def test_media_never_in_stasis_fails_setup_cleanly(self) -> Any:
        """
        An ExternalMedia channel that never enters Stasis fails its
        caller's setup after the timeout: caller hung up, channel, bridge
        and port released.
        """
        async def run() -> None:
            clock = Clock()
            self.fake.media_stasis_delay = 3600
            ari = await self.connected(clock=clock)
            a = self.fake.new_channel("PJSIP/7777-00000001")
            self.fake.enter(a, ["room=r5,lang=en"])
            await wait_until(lambda: ari.media_stasis.waiting)
            clock.advance(MEDIA_STASIS_TIMEOUT)
            await wait_until(lambda: self.fake.empty)
            await wait_until(lambda: not ari.callers)
            self.assertEqual(ari.pool.in_use, set())
            self.assertFalse([r for r in self.fake.requests if r.path.endswith("/addChannel")])
            self.assertTrue(any("did not enter Stasis" in line for line in self.logged))

        return ensureDeferred(run())

class KeepPartnerTests(ARIHarness):
    settings = {"on-partner-hangup": "keep"}

    def test_partner_kept(self) -> Any:
        async def run() -> None:
            ari = await self.connected()
            a = self.fake.new_channel("PJSIP/7777-00000001")
            b = self.fake.new_channel("PJSIP/8888-00000002")
            self.fake.enter(a, ["room=r1,lang=en"])
            self.fake.enter(b, ["room=r1,lang=es"])
            await wait_until(lambda: a["id"] in self.calls())
            self.fake.hangup(a["id"])
            await wait_until(lambda: a["id"] not in ari.callers and len(self.fake.bridges) == 1)
            self.assertIn(b["id"], self.fake.channels)
            self.assertNotIn(("DELETE", f"/channels/{b['id']}"), self.requests())

        return ensureDeferred(run())

class LifecycleTests(ARIHarness):
    def test_shutdown_leaves_nothing(self) -> Any:
        async def run() -> None:
            await self.pair()
            await self.bridge.stopService()
            await wait_until(lambda: self.fake.empty)
            self.assertEqual(self.ari.pool.in_use, set())
            # The events socket said goodbye with a close frame.
            await wait_until(lambda: self.fake.closes)
            self.assertEqual(self.fake.closes, [1000])

        return ensureDeferred(run())

    def test_media_channel_lost_hangs_up_caller(self) -> Any:
        async def run() -> None:
            a, b = await self.pair()
            media = self.ari.callers[a["id"]].media_id
            assert media is not None
            self.fake.hangup(media)
            await wait_until(lambda: self.fake.empty)
            self.assertEqual(self.ari.callers, {})

        return ensureDeferred(run())

    def test_reconnect_tears_down_callers_gone_meanwhile(self) -> Any:
        async def run() -> None:
            a, b = await self.pair()
            for s in list(self.fake.sockets):
                s.dropConnection(abort=True)
            await wait_until(lambda: not self.ari.events.connected)
            self.fake.hangup(a["id"])  # nobody hears this StasisEnd
            await wait_until(lambda: self.ari.events.connections == 2, timeout=10)
            await wait_until(lambda: self.fake.empty)
            self.assertEqual(self.ari.callers, {})

        return ensureDeferred(run())

    def test_unanswered_dial_hangs_up_caller(self) -> Any:
        async def run() -> None:
            ari = await self.connected()
            self.fake.originate_answers = False
            a = self.fake.new_channel("PJSIP/7777-00000001")
            self.fake.enter(a, ["dial=PJSIP/8888", "lang=en", "peer_lang=es"])
            await wait_until(lambda: bool(self.fake.originated) and bool(ari.dialing))
            # Not in Stasis: Asterisk still tells the app its callee is gone.
            self.fake.hangup(self.fake.originated[0])
            await wait_until(lambda: self.fake.empty)
            self.assertEqual((ari.callers, ari.dialing, ari.pool.in_use), ({}, {}, set()))

        return ensureDeferred(run())


class MemoryController(SynchronousTestCase):
    """
    The controller on a memory reactor with a :class:`RecordingClient`:
    events are fed to it directly and each ARI answer comes when the test
    fires it.  The events socket is never started.
    """

    settings: dict[str, Any] = {}

    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.events: list[Event] = []
        cfg = load_config({
            "ari": "http://127.0.0.1:8088", "ari-user": "u", "ari-password-file": password_file(self),
            "rtp-ports": "30000-30009", "engines": "relay", "monitor": "none", **self.settings,
        })
        assert cfg.ari is not None
        self.bridge = BridgeService(cfg, self.reactor, observers=[self.events.append])
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(self.bridge.stopService)
        self.client = RecordingClient()
        self.ari = ARIController(self.bridge, cfg.ari, self.reactor, client=self.client)  # type: ignore[arg-type]
        self.media = 0

    def event(self, kind: str, cid: str, name: str = "", args: Optional[list[str]] = None) -> None:
        event: dict[str, Any] = {"type": kind, "channel": {"id": cid, "name": name or cid}}
        if args is not None:
            event["args"] = args
        self.ari.on_event(event)

    def enter(self, cid: str, room: str = "r1", lang: str = "en") -> None:
        self.event("StasisStart", cid, f"PJSIP/{cid}", [f"room={room},lang={lang}"])

    def answer_media(self) -> str:
        """
        Answer the pending externalMedia request like Asterisk; its
        channel enters Stasis.
        """
        self.media += 1
        media_id = f"media-{self.media}"
        self.client.reply("external_media", {
            "id": media_id, "channelvars": {"UNICASTRTP_LOCAL_ADDRESS": "127.0.0.1", "UNICASTRTP_LOCAL_PORT": "9000"},
        })
        self.event("StasisStart", media_id, f"UnicastRTP/127.0.0.1:9000-0x{self.media}", [])
        return media_id

    def set_up(self, cid: str, room: str = "r1", lang: str = "en") -> str:
        self.enter(cid, room, lang)
        self.client.reply("answer")
        self.client.reply("create_bridge")
        media_id = self.answer_media()
        self.client.reply("add_channels")
        return media_id

    def state(self, cid: str) -> str:
        return self.ari.callers[cid].lifecycle.state()


class MemoryControllerTests(MemoryController):
    def test_setup_requests_in_order(self) -> None:
        media_id = self.set_up("c1")
        caller = self.ari.callers["c1"]
        self.assertEqual(self.client.log(), [
            ("answer", "c1"),
            ("create_bridge", "xlbridge-c1"),
            ("external_media", "xlbridge", "127.0.0.1", 30000, "slin16"),
            ("add_channels", caller.bridge_id, "c1", media_id),
        ])
        self.assertEqual(self.state("c1"), "waiting-for-partner")
        self.assertEqual(caller.endpoint.remote, ("127.0.0.1", 9000))  # type: ignore[union-attr]
        self.assertEqual(dict((n, o) for n, _, o in self.bridge.all_endpoints()), {"PJSIP/c1": "ari"})
        self.assertTrue(self.reactor.udp[30000].listening)
        self.assertEqual(self.bridge.active_calls(), [])

    def test_media_stasis_start_before_the_answer(self) -> None:
        self.enter("c1")
        self.client.reply("answer")
        self.client.reply("create_bridge")
        self.event("StasisStart", "media-1", "UnicastRTP/127.0.0.1:30000-0x1", [])  # early: ours by its port
        self.client.reply("external_media", {"id": "media-1"})
        self.assertEqual(self.client.log()[-1][0], "add_channels")
        self.assertEqual(self.ari.media_stasis.waiting, {})

    def test_pairing_starts_one_call_in_entry_order(self) -> None:
        self.set_up("c1")
        self.enter("c2", lang="es")
        self.assertEqual(self.bridge.active_calls(), [])
        self.client.reply("answer")
        self.client.reply("create_bridge")
        self.answer_media()
        self.assertEqual(self.bridge.active_calls(), [])
        self.client.reply("add_channels")
        (call,) = self.bridge.active_calls()
        self.assertEqual((call.call_id, call.channels, call.extensions), ("c1", ("c1", "c2"), ("PJSIP/c1", "PJSIP/c2")))
        self.assertEqual([self.state(c) for c in ("c1", "c2")], ["in-call", "in-call"])
        room = self.ari.rooms["r1"]
        self.assertIs(room.call, call)
        self.assertEqual([c.seat for c in room.callers], [0, 1])
        (started,) = [e for e in self.events if isinstance(e, CallStarted)]
        self.assertEqual(started.call_id, "c1")

    def test_audio_reaches_the_call_only_while_paired(self) -> None:
        self.set_up("c1")
        port = self.reactor.udp[30000]
        packet = build(118, 1, 320, 7, b"\x10\x00" * 320)
        port.deliver(packet, ("127.0.0.1", 9000))
        self.assertEqual(self.bridge.active_calls(), [])  # no partner: nowhere to go, nothing counted
        self.assertEqual(self.ari.callers["c1"].endpoint.counters.drops, {})  # type: ignore[union-attr]
        self.set_up("c2", lang="es")
        (call,) = self.bridge.active_calls()
        call.end("inactivity")
        self.assertEqual(self.bridge.active_calls(), [])
        port.deliver(build(118, 2, 640, 7, b"\x10\x00" * 320), ("127.0.0.1", 9000))
        (again,) = self.bridge.active_calls()  # restarted by audio, same id
        self.assertEqual(again.call_id, "c1")

    def test_hangup_during_setup_releases_what_lands_later(self) -> None:
        self.enter("c1")
        self.client.reply("answer")
        self.event("StasisEnd", "c1")
        self.assertEqual((self.ari.callers, self.ari.rooms), ({}, {}))
        self.event("ChannelDestroyed", "c1")
        self.client.reply("create_bridge", {"id": "bridge-1"})
        self.assertEqual(self.client.log(), [
            ("answer", "c1"), ("create_bridge", "xlbridge-c1"), ("destroy_bridge", "bridge-1"),
        ])
        self.assertEqual(self.ari.pool.in_use, set())

    def test_hangup_while_media_is_created(self) -> None:
        self.enter("c1")
        self.client.reply("answer")
        self.client.reply("create_bridge", {"id": "bridge-1"})
        self.assertEqual(self.ari.pool.in_use, {30000})
        self.event("StasisEnd", "c1")
        # Released at once: the port, the leg's listing, the bridge.
        self.assertEqual((self.ari.pool.in_use, self.reactor.udp[30000].listening), (set(), False))
        self.assertEqual(list(self.bridge.all_endpoints()), [])
        self.assertEqual(self.client.log()[-1], ("destroy_bridge", "bridge-1"))
        # The ExternalMedia channel created meanwhile goes when it comes.
        self.client.reply("external_media", {"id": "media-1"})
        self.assertEqual(self.client.log()[-1], ("hangup", "media-1"))
        self.assertFalse([r for r in self.client.log() if r[0] == "add_channels"])

    def test_partner_hung_up_after_teardown(self) -> None:
        media_1 = self.set_up("c1")
        self.set_up("c2", lang="es")
        bridge_1 = self.ari.callers["c1"].bridge_id
        before = len(self.client.sent)
        self.event("StasisEnd", "c1")
        self.assertEqual(self.client.log()[before:], [
            ("hangup", media_1), ("destroy_bridge", bridge_1), ("hangup", "c2"),
        ])
        (ended,) = [e for e in self.events if isinstance(e, CallEnded)]
        self.assertEqual((ended.call_id, ended.reason), ("c1", "hangup"))
        self.assertEqual(self.state("c2"), "waiting-for-partner")  # until its own StasisEnd
        self.assertEqual(self.bridge.rooms, [])

    def test_media_channel_gone_ends_its_caller(self) -> None:
        media_1 = self.set_up("c1")
        bridge_1 = self.ari.callers["c1"].bridge_id
        before = len(self.client.sent)
        self.event("StasisEnd", media_1)
        self.assertEqual(self.client.log()[before:], [
            ("hangup", media_1), ("destroy_bridge", bridge_1), ("hangup", "c1"),
        ])
        self.assertEqual(self.ari.callers, {})

    def test_setup_failure_tears_down_and_hangs_up(self) -> None:
        self.enter("c1")
        self.client.reply("answer")
        self.client.reply("create_bridge", {"id": "bridge-1"})
        self.client.refuse("external_media")
        self.assertEqual(self.client.log()[-2:], [("destroy_bridge", "bridge-1"), ("hangup", "c1")])
        self.assertEqual((self.ari.callers, self.ari.pool.in_use), ({}, set()))


class MemoryKeepTests(MemoryController):
    settings = {"on-partner-hangup": "keep"}

    def test_kept_partner_pairs_with_a_newcomer(self) -> None:
        self.set_up("c1")
        self.set_up("c2", lang="es")
        self.event("StasisEnd", "c1")
        self.assertNotIn(("hangup", "c2"), self.client.log())
        self.assertEqual(self.state("c2"), "waiting-for-partner")
        self.set_up("c3", lang="fr")
        (call,) = self.bridge.active_calls()
        self.assertEqual((call.call_id, call.channels), ("c2", ("c2", "c3")))
        self.assertEqual([c.channel_id for c in self.ari.rooms["r1"].callers], ["c2", "c3"])
