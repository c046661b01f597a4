"""
``dial=ENDPOINT``: the callee is originated into a private room; a callee
that never answers ends its caller (Asterisk's dial timeout, or our guard
timer on a ``Clock`` the controller is given).  Against the fake ARI over
real sockets.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock, deferLater

from tests.ari.harness import ARIHarness, wait_until


class DialFlowTests(ARIHarness):
    def test_dial_originates_and_pairs(self) -> Any:
        async def run() -> None:
            ari = await self.connected()
            a = self.fake.new_channel("PJSIP/7777-00000001")
            self.fake.enter(a, ["dial=PJSIP/8888,lang=en,peer_lang=es"])
            await wait_until(lambda: a["id"] in self.calls())
            orig = [r for r in self.fake.requests if (r.method, r.path) == ("POST", "/channels")]
            self.assertEqual(orig[0].params, {"endpoint": "PJSIP/8888", "app": "xlbridge",
                                              "appArgs": f"room=dial-{a['id']},lang=es", "timeout": "30"})
            self.assertEqual(ari.dialer.timers, {})  # the guard timer stopped at the answer
            call = self.calls()[a["id"]]
            self.assertEqual([leg.language for leg in call.legs], ["en", "es"])

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
