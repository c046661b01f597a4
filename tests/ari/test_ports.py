"""
The pool of ExternalMedia RTP ports: quarantine before reuse, alone and
through the controller against the fake ARI.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.ari.harness import ARIHarness, wait_until
from xlbridge.ari.ports import PortPool, PortsExhausted


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
            await wait_until(lambda: a["id"] in self.calls())
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
