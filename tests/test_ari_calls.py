"""
The ARI controller's call handling against the fake ARI over real sockets:
the partner-hangup prompt, the dial ring timeout, port quarantine, and many
rooms at once (RTP and AudioSocket media) without cross-talk or leftovers.
Guard timers run on a ``Clock`` the controller is given.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater

from tests.test_ari import ARIHarness, wait_until
from xlbridge.ari.ports import PortPool
from xlbridge.rtp.packet import build, parse


class PromptTests(ARIHarness):
    settings = {"on-partner-hangup": "prompt"}

    def plays(self) -> list[Any]:
        return [r for r in self.fake.requests if r.path.endswith("/play")]

    def test_plays_in_callers_language_then_hangs_up(self) -> Any:
        async def run() -> None:
            self.fake.playback_seconds = 0.3
            a, b = await self.pair()
            self.fake.hangup(a["id"])
            await wait_until(lambda: bool(self.plays()))
            play = self.plays()[0]
            self.assertEqual((play.path, play.params),
                             (f"/channels/{b['id']}/play", {"media": "sound:vm-goodbye", "lang": "es"}))
            self.assertEqual(self.fake.playbacks[0]["target_uri"], f"channel:{b['id']}")
            # Not hung up while the prompt plays...
            await deferLater(reactor, 0.15, lambda: None)
            self.assertIn(b["id"], self.fake.channels)
            self.assertNotIn(("DELETE", f"/channels/{b['id']}"), self.requests())
            # ... but once PlaybackFinished came; then nothing is left.
            await wait_until(lambda: self.fake.empty)
            await wait_until(lambda: not self.ari.callers)
            self.assertEqual((self.ari.rooms, self.ari.prompt.active, self.ari.pool.in_use), ({}, {}, set()))

        return ensureDeferred(run())

    def test_guard_timer_when_playback_never_finishes(self) -> Any:
        async def run() -> None:
            clock = Clock()
            self.fake.playbacks_finish = False
            a, b = await self.pair(clock=clock)
            self.fake.hangup(a["id"])
            await wait_until(lambda: bool(self.fake.playbacks))
            # The room is closed to the prompted caller: newcomers pair up
            # among themselves.
            c = self.fake.new_channel("PJSIP/9999-00000003")
            d = self.fake.new_channel("PJSIP/9999-00000004")
            self.fake.enter(c, ["room=r1,lang=fr"])
            self.fake.enter(d, ["room=r1,lang=de"])
            await wait_until(lambda: c["id"] in self.bridge.dynamic_calls)
            self.assertEqual([x.channel_id for x in self.ari.rooms["r1"].callers], [c["id"], d["id"]])
            # The prompted caller's audio still arrives: it goes nowhere.
            media_b = self.ari.callers[b["id"]].media_id
            assert media_b is not None
            for i in range(3):
                self.fake.send_rtp(media_b, build(118, i, 320 * i, 77, b"\x10\x00" * 320))
            await deferLater(reactor, 0.05, lambda: None)
            self.assertEqual(self.ari.callers[b["id"]].endpoint.counters.drops, {})  # type: ignore[union-attr]
            clock.advance(14.9)
            await deferLater(reactor, 0.1, lambda: None)
            self.assertIn(b["id"], self.fake.channels)
            clock.advance(0.2)
            await wait_until(lambda: b["id"] not in self.fake.channels)
            await wait_until(lambda: b["id"] not in self.ari.callers)
            self.assertEqual((self.ari.prompt.active, clock.getDelayedCalls()), ({}, []))
            self.assertIn(c["id"], self.bridge.dynamic_calls)  # the newcomers are not touched

        return ensureDeferred(run())

    def test_caller_hanging_up_first_cancels_the_timer(self) -> Any:
        async def run() -> None:
            clock = Clock()
            self.fake.playbacks_finish = False
            a, b = await self.pair(clock=clock)
            self.fake.hangup(a["id"])
            await wait_until(lambda: bool(self.ari.prompt.active))
            self.fake.hangup(b["id"])
            await wait_until(lambda: self.fake.empty and not self.ari.callers)
            self.assertEqual((self.ari.prompt.active, clock.getDelayedCalls()), ({}, []))
            self.assertNotIn(("DELETE", f"/channels/{b['id']}"), self.requests())

        return ensureDeferred(run())

    def test_failed_play_hangs_up_at_once(self) -> Any:
        async def run() -> None:
            clock = Clock()
            a, b = await self.pair(clock=clock)
            self.fake.fail_next("POST", f"/channels/{b['id']}/play", 500)
            self.fake.hangup(a["id"])
            await wait_until(lambda: self.fake.empty and not self.ari.callers)
            self.assertEqual(clock.getDelayedCalls(), [])
            self.assertTrue(any("play" in line and "failed" in line for line in self.logged))

        return ensureDeferred(run())


class DialTimeoutTests(ARIHarness):
    settings = {"ari-dial-timeout": "1"}

    def test_asterisk_gives_up_and_so_do_we(self) -> Any:
        async def run() -> None:
            ari = await self.connected()
            self.fake.originate_answers = False
            a = self.fake.new_channel("PJSIP/7777-00000001")
            self.fake.enter(a, ["dial=PJSIP/8888,lang=en,peer_lang=es"])
            await wait_until(lambda: bool(ari.dialing))
            orig = [r for r in self.fake.requests if (r.method, r.path) == ("POST", "/channels")]
            self.assertEqual(orig[0].params["timeout"], "1")
            self.assertEqual(self.fake.channels[self.fake.originated[0]]["state"], "Ring")
            # The fake, like Asterisk, destroys the callee after 1 s.
            await wait_until(lambda: self.fake.empty, timeout=5)
            self.assertEqual((ari.callers, ari.dialing, ari.dialer.timers), ({}, {}, {}))

        return ensureDeferred(run())

    def test_guard_timer_when_asterisk_never_gives_up(self) -> Any:
        async def run() -> None:
            clock = Clock()
            ari = await self.connected(clock=clock)
            self.fake.originate_answers = False
            self.fake.originate_times_out = False
            a = self.fake.new_channel("PJSIP/7777-00000001")
            self.fake.enter(a, ["dial=PJSIP/8888,lang=en,peer_lang=es"])
            await wait_until(lambda: bool(ari.dialing) and a["id"] in ari.callers and ari.callers[a["id"]].ready)
            callee = self.fake.originated[0]
            clock.advance(1 + 5 - 0.1)
            await deferLater(reactor, 0.1, lambda: None)
            self.assertEqual(set(self.fake.channels) & {a["id"], callee}, {a["id"], callee})
            clock.advance(0.2)
            await wait_until(lambda: self.fake.empty)
            self.assertIn(("DELETE", f"/channels/{callee}"), self.requests())
            self.assertEqual((ari.callers, ari.dialing, clock.getDelayedCalls()), ({}, {}, []))

        return ensureDeferred(run())

    def test_caller_leaving_cancels_the_guard(self) -> Any:
        async def run() -> None:
            clock = Clock()
            ari = await self.connected(clock=clock)
            self.fake.originate_answers = False
            a = self.fake.new_channel("PJSIP/7777-00000001")
            self.fake.enter(a, ["dial=PJSIP/8888", "lang=en"])
            await wait_until(lambda: bool(ari.dialing))
            self.fake.hangup(a["id"])
            await wait_until(lambda: self.fake.empty)  # callee hung up too
            self.assertEqual((ari.dialing, clock.getDelayedCalls()), ({}, []))

        return ensureDeferred(run())


class QuarantineTests(ARIHarness):
    def test_released_ports_rest_before_reuse(self) -> Any:
        """
        With two ports, a finished call leaves both resting: the next caller
        is refused (hung up, nothing left) until ``port_quarantine`` passed.
        """
        async def run() -> None:
            clock = Clock()
            pool = PortPool(47180, 47181, clock, quarantine=10)
            ari = await self.connected(pool=pool)
            a = self.fake.new_channel("PJSIP/7777-00000001")
            b = self.fake.new_channel("PJSIP/8888-00000002")
            self.fake.enter(a, ["room=r1,lang=en"])
            self.fake.enter(b, ["room=r1,lang=es"])
            await wait_until(lambda: a["id"] in self.bridge.dynamic_calls)
            self.fake.hangup(a["id"])
            await wait_until(lambda: not self.fake.channels and not ari.callers)
            self.assertEqual((pool.in_use, pool.quarantined), (set(), {47180, 47181}))
            clock.advance(9.9)
            c = self.fake.new_channel("PJSIP/9999-00000003")
            self.fake.enter(c, ["room=r2,lang=en"])
            await wait_until(lambda: self.fake.empty and not ari.callers)
            self.assertEqual(pool.in_use, set())
            clock.advance(0.1)
            d = self.fake.new_channel("PJSIP/9999-00000004")
            self.fake.enter(d, ["room=r3,lang=en"])
            await wait_until(lambda: d["id"] in ari.callers and ari.callers[d["id"]].ready)
            self.assertIn(ari.callers[d["id"]].port, (47180, 47181))

        return ensureDeferred(run())


ROOMS = 20


class ManyRoomsContract:
    """
    ``ROOMS`` rooms set up at once; each caller sends frames whose samples
    all carry its own stamp, so any cross-talk shows.  Mixed into a
    harness per media kind.
    """

    fake: Any
    ari: Any
    bridge: Any
    start: Any
    assertEqual: Any
    assertTrue: Any

    def send(self, media_id: str, seq: int, stamp: int) -> None:
        raise NotImplementedError

    def heard(self, media_id: str) -> np.ndarray:
        raise NotImplementedError

    def test_many_rooms_no_cross_talk_nothing_left(self) -> Any:
        async def run() -> None:
            ari = await self.connected()
            firsts = []
            for i in range(ROOMS):
                a = self.fake.new_channel(f"PJSIP/a{i:02d}-0001", f"1{i:03d}")
                b = self.fake.new_channel(f"PJSIP/b{i:02d}-0002", f"2{i:03d}")
                self.fake.enter(a, [f"room=r{i},lang=en"])
                self.fake.enter(b, [f"room=r{i},lang=es"])
                firsts.append(a["id"])
            await wait_until(lambda: len(self.bridge.dynamic_calls) == ROOMS, timeout=20)
            # caller index k (stamp 100 * (k + 1)) -> its media channel
            callers = [c for i in range(ROOMS) for c in ari.rooms[f"r{i}"].callers]
            media = [c.media_id for c in callers]
            ports = {c.port for c in callers if c.port is not None}
            for seq in range(15):
                for k, m in enumerate(media):
                    self.send(m, seq, 100 * (k + 1))
                await deferLater(reactor, 0.02, lambda: None)

            def partner(k: int) -> int:
                return k + 1 if k % 2 == 0 else k - 1

            def enough() -> bool:
                return all(np.count_nonzero(self.heard(m) == 100 * (partner(k) + 1)) >= 320 * 5
                           for k, m in enumerate(media))

            await wait_until(enough, timeout=10)
            for k, m in enumerate(media):
                self.assertEqual(set(np.unique(self.heard(m)).tolist()) - {0}, {100 * (partner(k) + 1)})

            for cid in firsts:
                self.fake.hangup(cid)
            await wait_until(lambda: self.fake.empty, timeout=10)
            await wait_until(lambda: not ari.callers and not ari.rooms and not self.bridge.dynamic_calls)
            self.assertEqual(ari.pool.in_use, set())
            self.assertEqual(ari.pool.quarantined, ports)
            if ari.audiosocket is not None:
                self.assertEqual((ari.audiosocket.routes, dict(ari.audiosocket.counters.drops)), ({}, {}))

        return ensureDeferred(run())


class ManyRoomsRTPTests(ManyRoomsContract, ARIHarness):
    settings = {"reply-codec": "slin16"}  # bit-exact back, so stamps survive

    def send(self, media_id: str, seq: int, stamp: int) -> None:
        payload = struct.pack(">h", stamp) * 320
        self.fake.send_rtp(media_id, build(118, 1000 + seq, 320 * seq, stamp, payload))

    def heard(self, media_id: str) -> np.ndarray:
        got = [parse(d) for d, _ in self.fake.rtp[media_id].received]
        self.assertEqual({p.payload_type for p in got} - {118}, set())
        return np.frombuffer(b"".join(p.payload for p in got), dtype=">i2")


class ManyRoomsAudioSocketTests(ManyRoomsContract, ARIHarness):
    settings = {"ari-media": "audiosocket", "ari-audiosocket-port": "0"}

    def send(self, media_id: str, seq: int, stamp: int) -> None:
        self.fake.send_audiosocket(media_id, struct.pack("<h", stamp) * 320)

    def heard(self, media_id: str) -> np.ndarray:
        return np.frombuffer(self.fake.audiosocket[media_id].audio(0x12), dtype="<i2")
