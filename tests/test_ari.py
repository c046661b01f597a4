"""
Tests for the ARI controller against the fake ARI (tests/fakes/ari.py),
over real sockets: the room flow end to end, teardown, restart cleanup and
auth errors.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.fakes.ari import FakeARI
from xlbridge.ari.client import ARIAuthError, ARIClient
from xlbridge.ari.controller import ARIController, parse_args
from xlbridge.ari.stasis import MEDIA_STASIS_TIMEOUT
from xlbridge.ari.ports import PortPool, PortsExhausted
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.errors import ConfigError
from xlbridge.rtp.packet import build, parse

PASSWORD = "s3cret-pw"


def password_file(testcase: SynchronousTestCase, text: str = PASSWORD) -> str:
    fd, path = tempfile.mkstemp()
    os.write(fd, text.encode() + b"\n")
    os.close(fd)
    testcase.addCleanup(os.unlink, path)
    return path


async def wait_until(pred: Callable[[], Any], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError("condition not met in time")


class ConfigTests(SynchronousTestCase):
    def test_ari_options(self) -> None:
        cfg = load_config({"ari": "http://127.0.0.1:8088/", "ari-user": "u",
                           "ari-password-file": password_file(self), "rtp-ports": "30000-30009"})
        assert cfg.ari is not None
        self.assertEqual(cfg.ari.url, "http://127.0.0.1:8088")
        self.assertEqual(cfg.ari.password, PASSWORD)
        self.assertEqual(cfg.ari.rtp_ports, (30000, 30009))
        self.assertEqual(cfg.ari.app, "xlbridge")
        self.assertEqual(cfg.pairs, ())  # no static ports with --ari
        self.assertNotIn(PASSWORD, repr(cfg))
        self.assertEqual(
            (cfg.ari.media, cfg.ari.audiosocket_port, cfg.ari.dial_timeout, cfg.ari.on_partner_hangup,
             cfg.ari.partner_hangup_sound),
            ("rtp", 9092, 30, "hangup", "sound:vm-goodbye"),
        )

    def test_media_prompt_and_dial_options(self) -> None:
        cfg = load_config({"ari": "http://h:8088", "ari-user": "u", "ari-password-file": password_file(self),
                           "ari-media": "AudioSocket", "ari-audiosocket-port": "9100", "ari-dial-timeout": "45",
                           "on-partner-hangup": "prompt", "partner-hangup-sound": "sound:bye, tone:busy"})
        assert cfg.ari is not None
        self.assertEqual(
            (cfg.ari.media, cfg.ari.audiosocket_port, cfg.ari.dial_timeout, cfg.ari.on_partner_hangup,
             cfg.ari.partner_hangup_sound),
            ("audiosocket", 9100, 45, "prompt", "sound:bye,tone:busy"),
        )

    def test_toml_section(self) -> None:
        fd, path = tempfile.mkstemp(suffix=".toml")
        pw = password_file(self)
        os.write(fd, f'[ari]\nurl = "http://h:8088"\nuser = "u"\npassword_file = "{pw}"\n'
                     f'app = "xl"\nrtp_ports = "20000-20099"\non_partner_hangup = "keep"\n'
                     f'media = "audiosocket"\naudiosocket_port = 9093\ndial_timeout = 20\n'
                     f'partner_hangup_sound = "sound:goodbye"\n'.encode())
        os.close(fd)
        self.addCleanup(os.unlink, path)
        cfg = load_config({}, path)
        assert cfg.ari is not None
        self.assertEqual((cfg.ari.app, cfg.ari.on_partner_hangup), ("xl", "keep"))
        self.assertEqual((cfg.ari.media, cfg.ari.audiosocket_port, cfg.ari.dial_timeout,
                          cfg.ari.partner_hangup_sound), ("audiosocket", 9093, 20, "sound:goodbye"))

    def test_errors(self) -> None:
        base = {"ari": "http://h:8088", "ari-user": "u", "ari-password-file": password_file(self)}
        for bad, word in [
            ({"ari-user": None}, "ari-user"),
            ({"ari-password-file": "/nonexistent"}, "ari-password-file"),
            ({"rtp-ports": "300"}, "rtp-ports"),
            ({"ari": "h:8088"}, "ari"),
            ({"on-partner-hangup": "maybe"}, "on-partner-hangup"),
            ({"ari-media": "websocket"}, "ari-media"),
            ({"ari-audiosocket-port": "70000"}, "ari-audiosocket-port"),
            ({"ari-audiosocket-port": "x"}, "ari-audiosocket-port"),
            ({"ari-dial-timeout": "0"}, "ari-dial-timeout"),
            ({"ari-dial-timeout": "1.5"}, "ari-dial-timeout"),
            ({"partner-hangup-sound": "vm-goodbye"}, "partner-hangup-sound"),
            ({"partner-hangup-sound": "sound:"}, "partner-hangup-sound"),
            ({"ari-media": "audiosocket", "ari-audiosocket-port": "5050", "audiosocket": "7000=5050,7001=5052"},
             "ari-audiosocket-port"),
        ]:
            e = self.assertRaises(ConfigError, load_config, {**base, **bad})
            self.assertIn(word, str(e))


class PortPoolTests(SynchronousTestCase):
    def test_quarantine(self) -> None:
        clock = Clock()
        pool = PortPool(100, 101, clock, quarantine=10)
        a, b = pool.allocate(), pool.allocate()
        self.assertEqual((a, b), (100, 101))
        pool.release(a)
        self.assertRaises(PortsExhausted, pool.allocate)
        clock.advance(10)
        self.assertEqual(pool.allocate(), 100)


class ArgsTests(SynchronousTestCase):
    def test_one_or_many_args(self) -> None:
        want = {"room": "R", "lang": "en"}
        self.assertEqual(parse_args(["room=R,lang=en"]), want)
        self.assertEqual(parse_args(["room=R", "lang=en"]), want)


class ARIHarness(TestCase):
    settings: dict[str, Any] = {}

    def setUp(self) -> Any:
        self.fake = FakeARI(reactor, user="xlbridge", password=PASSWORD)
        self.fake.listen()
        self.addCleanup(self.fake.stop)
        self.logged: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            self.logged.append(str(formatEvent(event)) + repr(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def start(self, password: str = PASSWORD, **kwargs: Any) -> ARIController:
        cfg = load_config({
            "ari": self.fake.url, "ari-user": "xlbridge", "ari-password-file": password_file(self, password),
            "rtp-ports": "47100-47199", "engines": "relay", "monitor": "none", **self.settings,
        })
        assert cfg.ari is not None
        self.bridge = BridgeService(cfg, reactor)
        self.ari = ARIController(self.bridge, cfg.ari, reactor, **kwargs)
        self.ari.setServiceParent(self.bridge)
        self.bridge.startService()
        self.addCleanup(self.bridge.stopService)
        return self.ari

    async def connected(self, *args: Any, **kwargs: Any) -> ARIController:
        """
        :meth:`start`, then wait for the events socket.
        """
        ari = self.start(*args, **kwargs)
        await wait_until(lambda: ari.events.connected)
        return ari

    async def pair(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """
        Start (``kwargs`` to :meth:`start`), then two callers enter room r1
        (their Stasis args in both forms) and are paired.
        """
        ari = await self.connected(**kwargs)
        a = self.fake.new_channel("PJSIP/7777-00000001", "7777")
        b = self.fake.new_channel("PJSIP/8888-00000002", "8888")
        self.fake.enter(a, ["room=r1,lang=en"])
        self.fake.enter(b, ["room=r1", "lang=es"])
        await wait_until(lambda: a["id"] in self.bridge.dynamic_calls)
        return a, b

    def requests(self) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.fake.requests]

    def assert_password_never_logged(self) -> None:
        self.assertTrue(self.logged)
        for line in self.logged:
            self.assertNotIn(PASSWORD, line)


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
            call = self.bridge.dynamic_calls[a["id"]]
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
            call = self.bridge.dynamic_calls[a["id"]]
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
            self.assertEqual(self.bridge.dynamic_calls, {})
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
            await wait_until(lambda: a["id"] in self.bridge.dynamic_calls)
            self.fake.hangup(a["id"])
            await wait_until(lambda: a["id"] not in ari.callers and len(self.fake.bridges) == 1)
            self.assertIn(b["id"], self.fake.channels)
            self.assertNotIn(("DELETE", f"/channels/{b['id']}"), self.requests())

        return ensureDeferred(run())


class DialFlowTests(ARIHarness):
    def test_dial_originates_and_pairs(self) -> Any:
        async def run() -> None:
            ari = await self.connected()
            a = self.fake.new_channel("PJSIP/7777-00000001")
            self.fake.enter(a, ["dial=PJSIP/8888,lang=en,peer_lang=es"])
            await wait_until(lambda: a["id"] in self.bridge.dynamic_calls)
            orig = [r for r in self.fake.requests if (r.method, r.path) == ("POST", "/channels")]
            self.assertEqual(orig[0].params, {"endpoint": "PJSIP/8888", "app": "xlbridge",
                                              "appArgs": f"room=dial-{a['id']},lang=es", "timeout": "30"})
            self.assertEqual(ari.dialer.timers, {})  # the guard timer stopped at the answer
            call = self.bridge.dynamic_calls[a["id"]]
            self.assertEqual([leg.language for leg in call.legs], ["en", "es"])

        return ensureDeferred(run())


class RestartCleanupTests(ARIHarness):
    def test_leftovers_removed_on_connect(self) -> Any:
        async def run() -> None:
            self.fake.bridges["old"] = {"id": "old", "name": "xlbridge-1724.1", "channels": []}
            self.fake.bridges["other"] = {"id": "other", "name": "conference", "channels": []}
            stale = self.fake.new_channel("UnicastRTP/127.0.0.1:47150-0x7f0001", state="Up")
            foreign = self.fake.new_channel("UnicastRTP/127.0.0.1:9000-0x7f0002", state="Up")
            ari = self.start()
            await wait_until(lambda: "old" not in self.fake.bridges and stale["id"] not in self.fake.channels)
            self.assertIn("other", self.fake.bridges)
            self.assertIn(foreign["id"], self.fake.channels)
            self.assertTrue(ari.events.connected)

        return ensureDeferred(run())

    def orphan(self, name: str, args: str) -> dict[str, Any]:
        # A caller an earlier run left in Stasis (no event: it is old news).
        ch = self.fake.new_channel(name, state="Up")
        self.fake.in_stasis.add(ch["id"])
        ch["dialplan"]["app_data"] = f"xlbridge,{args}"
        return ch

    def test_callers_left_in_stasis_are_taken_back(self) -> Any:
        """
        After a restart, callers still in our app are set up again from
        their Stasis arguments and paired as before; a dial caller whose
        callee is gone is hung up.
        """
        async def run() -> None:
            a = self.orphan("PJSIP/7777-00000001", "room=r7,lang=en")
            b = self.orphan("PJSIP/8888-00000002", "room=r7,lang=es")
            lonely = self.orphan("PJSIP/7000-00000003", "dial=PJSIP/9999,lang=en,peer_lang=es")
            self.start()
            await wait_until(lambda: a["id"] in self.bridge.dynamic_calls)
            call = self.bridge.dynamic_calls[a["id"]]
            self.assertEqual(call.extensions, (a["name"], b["name"]))
            self.assertEqual([leg.language for leg in call.legs], ["en", "es"])
            await wait_until(lambda: lonely["id"] not in self.fake.channels)
            self.assertFalse([r for r in self.fake.requests if r.method == "POST" and r.path == "/channels"])

        return ensureDeferred(run())

    def test_caller_taken_back_and_announced_is_one_caller(self) -> Any:
        """
        A caller entering Stasis just as xlbridge starts is both in the
        cleanup's channel list and announced by StasisStart: it is set up
        once, and its partner still finds room.
        """
        async def run() -> None:
            a = self.orphan("PJSIP/7777-00000001", "room=r9,lang=en")
            ari = await self.connected()
            await wait_until(lambda: a["id"] in ari.callers)
            self.fake.enter(a, ["room=r9,lang=en"])  # its StasisStart, late
            b = self.fake.new_channel("PJSIP/8888-00000002")
            self.fake.enter(b, ["room=r9,lang=es"])
            await wait_until(lambda: a["id"] in self.bridge.dynamic_calls)
            self.assertEqual([c.channel_id for c in ari.rooms["r9"].callers], [a["id"], b["id"]])
            self.assertIn(b["id"], self.fake.channels)
            answers = [p for m, p in self.requests() if p == f"/channels/{a['id']}/answer"]
            self.assertEqual(len(answers), 1)

        return ensureDeferred(run())

    def test_dial_pair_left_in_stasis_is_paired_again(self) -> Any:
        async def run() -> None:
            caller = self.orphan("PJSIP/7000-00000001", "dial=PJSIP/9999,lang=en,peer_lang=es")
            callee = self.orphan("PJSIP/9999-00000002", f"room=dial-{caller['id']},lang=es")
            self.start()
            await wait_until(lambda: caller["id"] in self.bridge.dynamic_calls or callee["id"] in self.bridge.dynamic_calls)
            self.assertFalse([r for r in self.fake.requests if r.method == "POST" and r.path == "/channels"])

        return ensureDeferred(run())


class AuthTests(ARIHarness):
    def test_rest_auth_failure_is_clear(self) -> Any:
        async def run() -> None:
            client = ARIClient(self.fake.url, "xlbridge", "wrong-pw", reactor)
            self.addCleanup(client.close)
            try:
                await client.channels()
            except ARIAuthError as e:
                self.assertIn("401", str(e))
                self.assertIn("xlbridge", str(e))
                self.assertIn("ari.conf", str(e))
                self.assertNotIn("wrong-pw", str(e))
                self.assertNotIn("wrong-pw", repr(client))
            else:
                self.fail("no ARIAuthError")

        return ensureDeferred(run())

    def test_events_auth_failure_logged_not_password(self) -> Any:
        async def run() -> None:
            ari = self.start(password="wrong-pw")
            await wait_until(lambda: self.fake.ws_rejected >= 1)
            await wait_until(lambda: any("refused" in line for line in self.logged))
            self.assertFalse(ari.events.connected)
            for line in self.logged:
                self.assertNotIn("wrong-pw", line)

        return ensureDeferred(run())


class TapTests(SynchronousTestCase):
    def test_ari_options_add_controller(self) -> None:
        from xlbridge import tap
        from xlbridge.testing import MemoryUDPReactor

        o = tap.Options()
        o.parseOptions(["--ari", "http://127.0.0.1:8088", "--ari-user", "u",
                        "--ari-password-file", password_file(self), "--rtp-ports", "20000-20009",
                        "--engines", "relay", "--monitor", "none"])
        reactor = MemoryUDPReactor()
        svc = tap.makeService(o, reactor)
        assert isinstance(svc, BridgeService)
        ari = svc.getServiceNamed("ari")
        self.assertIsInstance(ari, ARIController)
        self.assertEqual(reactor.udp, {})  # no fixed ports with --ari
        self.assertEqual(ari.settings.rtp_ports, (20000, 20009))  # type: ignore[attr-defined]

    def test_audiosocket_media_listens_on_one_tcp_port(self) -> None:
        from xlbridge import tap
        from xlbridge.testing import MemoryUDPReactor

        o = tap.Options()
        o.parseOptions(["--ari", "http://127.0.0.1:8088", "--ari-user", "u",
                        "--ari-password-file", password_file(self), "--ari-media", "audiosocket",
                        "--ari-audiosocket-port", "9200", "--ari-dial-timeout", "20",
                        "--on-partner-hangup", "prompt", "--engines", "relay", "--monitor", "none"])
        svc = tap.makeService(o, MemoryUDPReactor())
        assert isinstance(svc, BridgeService)
        ari = svc.getServiceNamed("ari")
        assert isinstance(ari, ARIController)
        listener = ari.getServiceNamed("ari-audiosocket")
        self.assertEqual((listener.portNumber, listener.interface), (9200, "127.0.0.1"))  # type: ignore[attr-defined]
        self.assertEqual((ari.settings.dial_timeout, ari.settings.on_partner_hangup), (20, "prompt"))

    def test_sample_config_documents_ari(self) -> None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        with open(os.path.join(here, "etc", "xlbridge.toml")) as f:
            text = f.read()
        self.assertIn("[ari]", text)
        for key in ("url", "user", "password_file", "app", "rtp_ports", "on_partner_hangup", "media",
                    "audiosocket_port", "dial_timeout", "partner_hangup_sound"):
            self.assertIn(f"# {key} = ", text)


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
