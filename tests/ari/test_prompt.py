"""
``on_partner_hangup = "prompt"``: the caller left alone hears the prompt in
its language, then is hung up (on PlaybackFinished, the guard timer on a
``Clock`` the controller is given, or at once if playing fails).  Against
the fake ARI over real sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater

from tests.ari.harness import ARIHarness, wait_until
from xlbridge.rtp.packet import build


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
            await wait_until(lambda: c["id"] in self.calls())
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
            self.assertIn(c["id"], self.calls())  # the newcomers are not touched

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
