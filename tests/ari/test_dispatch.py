"""
Tests for :mod:`xlbridge.ari.dispatch`: which worker app a caller goes to.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.ari.dispatch import DispatchBook, caller_args, room_of, worker_apps


def apps(**channels: list[str]) -> list[dict[str, Any]]:
    """``GET /applications``' answer: app name -> channel ids."""
    return [{"name": name.replace("_", "-"), "channel_ids": ids, "bridge_ids": []} for name, ids in channels.items()]


class WorkerAppsTests(SynchronousTestCase):
    def test_only_worker_apps(self) -> None:
        answer = apps(xlbridge=["1"], xlbridge_pbx1_0=["2"], xlbridge_pbx_2_11=[], other_app_0=["3"],
                      xlbridge_x=["4"])
        self.assertEqual(worker_apps(answer, "xlbridge"),
                         {"xlbridge-pbx1-0": {"2"}, "xlbridge-pbx-2-11": set()})

    def test_malformed_entries_ignored(self) -> None:
        answer: list[Any] = ["junk", {"name": "xlbridge-a-0", "channel_ids": "nope"}, {"channel_ids": []}]
        self.assertEqual(worker_apps(answer, "xlbridge"), {"xlbridge-a-0": set()})


class ChooseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.book = DispatchBook("xlbridge", pending_s=5.0, dead_s=10.0)

    def test_least_loaded(self) -> None:
        answer = apps(xlbridge_a_0=["1", "2", "3"], xlbridge_a_1=["4"], xlbridge_b_0=["5", "6"])
        self.assertEqual(self.book.choose("r1", answer, 0.0), "xlbridge-a-1")

    def test_ties_go_to_the_lowest_name(self) -> None:
        self.assertEqual(self.book.choose(None, apps(xlbridge_a_1=[], xlbridge_a_0=[]), 0.0), "xlbridge-a-0")

    def test_no_worker(self) -> None:
        self.assertIsNone(self.book.choose("r", apps(xlbridge=["1"]), 0.0))

    def test_moves_in_flight_count_as_load(self) -> None:
        answer = apps(xlbridge_a_0=[], xlbridge_a_1=[])
        picks = []
        for i in range(6):
            target = self.book.choose(None, answer, 0.1 * i)
            assert target is not None
            self.book.placed(None, target, f"c{i}", 0.1 * i)
            picks.append(target)
        self.assertEqual(picks.count("xlbridge-a-0"), 3)
        self.assertEqual(picks.count("xlbridge-a-1"), 3)

    def test_in_flight_expires(self) -> None:
        self.book.placed(None, "xlbridge-a-0", "c1", 0.0)
        answer = apps(xlbridge_a_0=[], xlbridge_a_1=["x"])
        self.assertEqual(self.book.choose(None, answer, 1.0), "xlbridge-a-0")  # 1 in flight vs 1: lowest name
        self.book.placed(None, "xlbridge-a-0", "c2", 1.0)
        self.assertEqual(self.book.choose(None, answer, 2.0), "xlbridge-a-1")
        self.assertEqual(self.book.choose(None, answer, 7.0), "xlbridge-a-0")  # both moves expired

    def test_room_kept_together(self) -> None:
        answer = apps(xlbridge_a_0=[], xlbridge_a_1=[])
        first = self.book.choose("5", answer, 0.0)
        assert first is not None
        self.book.placed("5", first, "c1", 0.0)
        # Not listed yet (the move is asynchronous), yet the partner follows.
        self.assertEqual(self.book.choose("5", answer, 0.5), first)
        # Listed there later: still followed, long after the move.
        later = apps(**{first.replace("-", "_"): ["c1", "m1"]}, xlbridge_a_9=[])
        self.assertEqual(self.book.choose("5", later, 60.0), first)
        # Another room goes to the least loaded.
        self.assertEqual(self.book.choose("6", later, 60.0), "xlbridge-a-9")

    def test_room_forgotten_when_its_callers_left(self) -> None:
        self.book.placed("5", "xlbridge-a-0", "c1", 0.0)
        answer = apps(xlbridge_a_0=["z1", "z2"], xlbridge_a_1=[])
        self.assertEqual(self.book.choose("5", answer, 30.0), "xlbridge-a-1")

    def test_dead_app_skipped_then_back(self) -> None:
        answer = apps(xlbridge_a_0=[], xlbridge_a_1=["1", "2"])
        self.book.placed("5", "xlbridge-a-0", "c1", 0.0)
        self.book.failed("xlbridge-a-0", "c1", 0.0)
        self.assertEqual(self.book.choose("5", answer, 1.0), "xlbridge-a-1")
        self.assertEqual(self.book.choose("7", answer, 10.5), "xlbridge-a-0")

    def test_room_of_dead_worker_moves_together(self) -> None:
        answer = apps(xlbridge_a_0=["c1", "c2"], xlbridge_a_1=[], xlbridge_a_2=["q"])
        self.book.placed("5", "xlbridge-a-0", "c1", 0.0)
        self.book.placed("5", "xlbridge-a-0", "c2", 0.0)
        self.book.mark_dead("xlbridge-a-0", 50.0)
        first = self.book.choose("5", answer, 50.1)
        self.assertEqual(first, "xlbridge-a-1")
        self.book.placed("5", "xlbridge-a-1", "c1", 50.1)
        # the partner follows though a-1 now looks loaded
        self.assertEqual(self.book.choose("5", apps(xlbridge_a_1=["c1", "m", "x"], xlbridge_a_2=[]), 50.2),
                         "xlbridge-a-1")

    def test_rooms_bounded(self) -> None:
        book = DispatchBook("xlbridge", max_rooms=3)
        for i in range(5):
            book.placed(str(i), "xlbridge-a-0", f"c{i}", 0.0)
        self.assertEqual(list(book.rooms), ["2", "3", "4"])


class ArgsTests(SynchronousTestCase):
    def channel(self, app_data: str, cid: str = "17.1") -> dict[str, Any]:
        return {"id": cid, "dialplan": {"app_name": "Stasis", "app_data": app_data}}

    def test_room_of(self) -> None:
        self.assertEqual(room_of(["room=5", "lang=en"]), "5")
        self.assertEqual(room_of(["room=5,lang=en"]), "5")
        self.assertIsNone(room_of(["dial=PJSIP/bob"]))

    def test_caller_args(self) -> None:
        self.assertEqual(caller_args(self.channel("xlbridge,room=5,lang=en"), ["xlbridge"]), ["room=5,lang=en"])
        # a dial caller goes back to its private room with its callee
        self.assertEqual(caller_args(self.channel("xlbridge,dial=PJSIP/bob,lang=en", "9.9"), ["xlbridge"]),
                         ["lang=en,room=dial-9.9"])
        # a callee the dead worker originated
        self.assertEqual(caller_args(self.channel("xlbridge-a-0,room=dial-9.9,lang=es"), ["xlbridge", "xlbridge-a-0"]),
                         ["room=dial-9.9,lang=es"])
        # media channels (no arguments) and other apps' callers
        self.assertIsNone(caller_args(self.channel("xlbridge-a-0"), ["xlbridge", "xlbridge-a-0"]))
        self.assertIsNone(caller_args(self.channel("other,room=5"), ["xlbridge"]))
        self.assertIsNone(caller_args({"id": "1", "dialplan": {"app_name": "Dial"}}, ["xlbridge"]))
