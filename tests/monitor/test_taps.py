"""
Audio taps on call legs: listen-in stream ids, installing and removing taps
on a call's legs, and levels (on a memory reactor).
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.monitor.harness import MonitoredBridge, tone
from xlbridge.monitor.taps import FLOOR_DBFS, Taps, dbfs


class StreamIdTests(SynchronousTestCase):
    def test_ids_are_reused_after_pruning_never_shared(self) -> None:
        taps = Taps(lambda tap, samples: None)
        a, b = taps.get("a", "says"), taps.get("b", "says")
        self.assertEqual((a.stream_id, b.stream_id), (1, 2))
        b.listening = True
        taps.prune(keep=set())
        self.assertIs(taps.get("b", "says"), b)  # listened to: kept
        self.assertIsNot(taps.get("a", "says"), a)  # pruned, made anew
        taps._last_id = 0xFFFE  # about to wrap
        ids = [taps.get(str(i), "hears").stream_id for i in range(3)]
        self.assertEqual(ids, [0xFFFF, 1, 4])  # 2 and 3 are live (b, the new a)


class InstallTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()
        self.taps = Taps(lambda tap, samples: None)

    def test_install_hooks_every_leg_and_uninstall_only_ours(self) -> None:
        call = self.start_call()
        self.taps.install([call])
        for leg in call.legs:
            self.assertIs(leg.tap_in, self.taps.get(leg.extension, "says"))
            self.assertIs(leg.tap_out, self.taps.get(leg.extension, "hears"))

        def foreign(samples: Any) -> None:
            pass

        call.legs[1].tap_out = foreign  # someone else's hook stays
        self.taps.uninstall([call])
        self.assertEqual([(leg.tap_in, leg.tap_out) for leg in call.legs], [(None, None), (None, foreign)])

    def test_levels_per_leg_and_direction(self) -> None:
        call = self.start_call()
        self.taps.install([call])
        call.legs[0].tap_in(tone(1000))  # type: ignore[misc]
        call.legs[0].tap_out(None)  # type: ignore[misc]  # digital silence
        levels = self.taps.levels([call])
        self.assertEqual(levels["7777"], {"says": dbfs(tone(1000)), "hears": FLOOR_DBFS})
        self.assertEqual(levels["8888"], {"says": FLOOR_DBFS, "hears": FLOOR_DBFS})
        self.assertEqual(self.taps.levels([call])["7777"]["says"], FLOOR_DBFS)  # nothing since
