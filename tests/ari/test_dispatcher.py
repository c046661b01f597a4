"""
The ARI dispatcher (:mod:`xlbridge.ari.dispatcher`) with two workers'
controllers, all against the fake Asterisk (tests/fakes/ari.py, several
Stasis apps) over real loopback sockets: callers entering ``xlbridge``
are moved to the workers' apps, a room's callers to the same one, and a
dead worker's callers to a live one, where they are paired again.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from tests.ari.harness import PASSWORD, ARIHarness, password_file, wait_until
from xlbridge.ari.controller import ARIController
from xlbridge.ari.dispatch_metrics import DispatcherCollector
from xlbridge.ari.dispatcher import ARIDispatcher
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.workers.plan import worker_config


class DispatcherTests(ARIHarness):
    def machine_config(self) -> Any:
        return load_config({
            "ari": self.fake.url, "ari-user": "xlbridge", "ari-password-file": password_file(self, PASSWORD),
            "rtp-ports": "47100-47199", "engines": "relay", "monitor": "none",
        })

    def start_worker(self, k: int, n: int = 2) -> tuple[BridgeService, ARIController]:
        cfg = worker_config(self.machine_config(), k, n, "t")
        assert cfg.ari is not None
        bridge = BridgeService(cfg, reactor)
        controller = ARIController(bridge, cfg.ari, reactor)
        controller.setServiceParent(bridge)
        bridge.startService()
        self.addCleanup(lambda: bridge.running and bridge.stopService())
        return bridge, controller

    async def start_machine(self) -> None:
        self.workers = [self.start_worker(k) for k in range(2)]
        cfg = self.machine_config()
        self.dispatcher = ARIDispatcher(cfg.ari, reactor)
        self.dispatcher.startService()
        self.addCleanup(self.dispatcher.stopService)
        await wait_until(lambda: self.dispatcher.events.connected and all(c.events.connected for _, c in self.workers))
        await wait_until(lambda: self.fake.active_apps() >= {"xlbridge", "xlbridge-t-0", "xlbridge-t-1"})

    def room(self, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
        a = self.fake.new_channel(f"PJSIP/a-{name}", "7777")
        b = self.fake.new_channel(f"PJSIP/b-{name}", "8888")
        self.fake.enter(a, [f"room={name}", "lang=en"])
        self.fake.enter(b, [f"room={name}", "lang=es"])
        return a, b

    def worker_calls(self, k: int) -> dict[str, Any]:
        return {c.call_id: c for c in self.workers[k][0].active_calls()}

    def test_rooms_kept_together_and_spread(self) -> Any:
        async def go() -> None:
            await self.start_machine()
            rooms = [self.room(f"r{i}") for i in range(6)]
            await wait_until(lambda: len(self.worker_calls(0)) + len(self.worker_calls(1)) == 6, timeout=10)
            for a, b in rooms:
                self.assertEqual(self.fake.app_of(a["id"]), self.fake.app_of(b["id"]))
                self.assertIn(self.fake.app_of(a["id"]), ("xlbridge-t-0", "xlbridge-t-1"))
            self.assertEqual(sorted([len(self.worker_calls(0)), len(self.worker_calls(1))]), [3, 3])
            # the workers' bridges (one per caller) carry their app's names
            names = sorted(str(b.get("name")) for b in self.fake.bridges.values())
            self.assertEqual(len(names), 12)
            self.assertTrue(all(n.startswith(("xlbridge-t-0:", "xlbridge-t-1:")) for n in names), names)
            self.assertEqual(self.dispatcher.counts["dispatched"], 12)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(DispatcherCollector(self.dispatcher))
            text = generate_latest(registry).decode()
            self.assertIn('xlbridge_dispatch_total{outcome="dispatched"} 12.0', text)
            self.assertIn("xlbridge_dispatch_waiting 0.0", text)
            self.assertIn("xlbridge_dispatch_connected 1.0", text)

        return ensureDeferred(go())

    def test_dead_worker_callers_go_to_a_live_one(self) -> Any:
        async def go() -> None:
            await self.start_machine()
            a, b = self.room("r1")
            await wait_until(lambda: len(self.worker_calls(0)) + len(self.worker_calls(1)) == 1)
            k = 0 if self.worker_calls(0) else 1
            dead_app = f"xlbridge-t-{k}"
            # The worker dies: its socket closes, nothing of it cleans up.
            bridge, controller = self.workers[k]
            for s in list(self.fake.sockets):
                if dead_app in s.apps:
                    s.dropConnection(abort=True)
            await wait_until(lambda: dead_app not in self.fake.active_apps())
            controller.events.stopService()
            t0 = reactor.seconds()
            await self.dispatcher.worker_died(dead_app)
            live = self.workers[1 - k]
            await wait_until(lambda: len(self.worker_calls(1 - k)) == 1, timeout=5)
            elapsed = reactor.seconds() - t0
            self.assertLess(elapsed, 2.0)
            self.assertEqual(self.fake.app_of(a["id"]), f"xlbridge-t-{1 - k}")
            self.assertEqual(self.fake.app_of(b["id"]), f"xlbridge-t-{1 - k}")
            # the dead worker's bridge and media channels are gone; the live one's are there
            names = [str(x.get("name")) for x in self.fake.bridges.values()]
            self.assertEqual(len(names), 2)
            self.assertTrue(all(n.startswith(f"xlbridge-t-{1 - k}:") for n in names), names)
            self.assertEqual(self.dispatcher.counts["rescued"], 2)
            media = [c for c in self.fake.channels.values() if str(c["name"]).startswith("UnicastRTP/")]
            self.assertEqual([self.fake.app_of(c["id"]) for c in media], [f"xlbridge-t-{1 - k}"] * 2)
            self.assertIsNotNone(live)

        return ensureDeferred(go())

    def test_move_to_an_inactive_app_is_tried_elsewhere(self) -> Any:
        async def go() -> None:
            await self.start_machine()
            # A remote worker whose machine died: its app is still listed
            # (a channel is left in it) but no socket serves it.
            ghost = self.fake.new_channel("PJSIP/ghost", "1")
            self.fake.enter(ghost, [], app="xlbridge-remote-0")
            # Make the ghost look least loaded: load the live workers.
            for i in range(2):
                self.room(f"busy{i}")
            await wait_until(lambda: len(self.worker_calls(0)) + len(self.worker_calls(1)) == 2)
            a, b = self.room("r5")
            await wait_until(lambda: len(self.worker_calls(0)) + len(self.worker_calls(1)) == 3, timeout=5)
            self.assertEqual(self.fake.app_of(a["id"]), self.fake.app_of(b["id"]))
            self.assertIn(self.fake.app_of(a["id"]), ("xlbridge-t-0", "xlbridge-t-1"))
            self.assertGreaterEqual(self.dispatcher.counts["move_failed"], 1)
            self.assertIn("xlbridge-remote-0", self.dispatcher.status()["dead"])

        return ensureDeferred(go())

    def test_callers_wait_for_a_worker(self) -> Any:
        async def go() -> None:
            cfg = self.machine_config()
            self.dispatcher = ARIDispatcher(cfg.ari, reactor)
            self.dispatcher.startService()
            self.addCleanup(self.dispatcher.stopService)
            await wait_until(lambda: self.dispatcher.events.connected)
            a, b = self.room("w1")
            await wait_until(lambda: len(self.dispatcher.waiting) == 2)
            self.workers = [self.start_worker(0, 1)]
            await wait_until(lambda: len(self.worker_calls(0)) == 1, timeout=5)
            self.assertEqual(self.dispatcher.waiting, {})

        return ensureDeferred(go())


