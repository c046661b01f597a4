"""
Rooms (xlbridge.room), the one place calls start: a configured pair's room
and rooms opened at run time, on a memory reactor with a Clock.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.events import CallEnded, CallStarted, Event
from xlbridge.room import Room
from xlbridge.testing import MemoryUDPReactor
from xlbridge.transports.audiosocket import AudioSocketEndpoint

NAMES = ("PJSIP/7777-00000001", "PJSIP/8888-00000002")
FRAME = np.full(320, 100, dtype=np.int16)


class RoomTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.events: list[Event] = []
        cfg = load_config({"ports": "7777,8888", "call-timeout": 2.0})
        self.bridge = BridgeService(cfg, self.reactor, observers=[self.events.append])
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(lambda: self.bridge.running and self.bridge.stopService())

    def open(self, **kwargs: Any) -> Room:
        endpoints = (
            self.bridge.rtp_endpoint(NAMES[0], lambda e, s: None),
            self.bridge.rtp_endpoint(NAMES[1], lambda e, s: None),
        )
        return self.bridge.open_room(NAMES, ("en", "es"), endpoints, **kwargs)

    def started(self) -> list[CallStarted]:
        return [e for e in self.events if isinstance(e, CallStarted)]


class StartTests(RoomTestCase):
    def test_first_audio_starts_the_call_and_goes_to_it(self) -> None:
        room = self.open()
        self.assertIsNone(room.call)
        self.assertTrue(room.audio_in(1, FRAME))
        call = room.call
        assert call is not None
        self.assertEqual((call.extensions, [leg.language for leg in call.legs]), (NAMES, ["en", "es"]))
        self.assertEqual(call.last_activity, self.reactor.seconds())
        self.assertIn(call, list(self.bridge.calls))
        self.assertTrue(room.audio_in(0, FRAME))
        self.assertIs(room.call, call)  # the same call: one start
        self.assertEqual((room.calls_started, len(self.started())), (1, 1))

    def test_start_call_is_idempotent(self) -> None:
        room = self.open()
        call = room.start_call()
        self.assertIsNotNone(call)
        self.assertIs(room.start_call(), call)
        self.assertEqual(room.calls_started, 1)

    def test_call_ids_fresh_unless_given(self) -> None:
        first, second = self.open(), self.open()
        a, b = first.start_call(), second.start_call()
        assert a is not None and b is not None
        self.assertNotEqual(a.call_id, b.call_id)
        fixed = self.open(call_id="chan-1", channels=("chan-1", "chan-2"))
        call = fixed.start_call()
        assert call is not None
        self.assertEqual((call.call_id, call.channels), ("chan-1", ("chan-1", "chan-2")))
        self.assertEqual((self.started()[-1].call_id, self.started()[-1].channels), ("chan-1", ("chan-1", "chan-2")))

    def test_audiosocket_uuid_names_the_call_first_leg_first(self) -> None:
        ends = (AudioSocketEndpoint(NAMES[0], lambda e, s: None), AudioSocketEndpoint(NAMES[1], lambda e, s: None))
        room = self.bridge.open_room(NAMES, ("en", "es"), ends)
        ids = []
        for uuids, first in (((None, "uuid-b"), 0), (("uuid-a", "uuid-b"), 1), (("uuid-a", "uuid-b"), 0)):
            ends[0].call_id, ends[1].call_id = uuids
            call = room.start_call(first)
            assert call is not None
            ids.append(call.call_id)
            room.end_call("hangup")  # (a call's end resets its legs' transports)
        # The starting leg's UUID; else (none yet) its partner's.
        self.assertEqual(ids, ["uuid-b", "uuid-b", "uuid-a"])

    def test_nothing_starts_while_shutting_down(self) -> None:
        room = self.open()
        self.bridge.calls.stopService()
        self.assertFalse(room.audio_in(0, FRAME))
        self.assertIsNone(room.start_call())
        self.assertEqual((room.call, self.started()), (None, []))


class EndTests(RoomTestCase):
    def test_inactivity_ends_the_call_and_audio_restarts_one(self) -> None:
        room = self.open(call_id="chan-1")
        first = room.start_call()
        self.reactor.advance(2.0)
        self.assertIsNone(room.call)
        self.assertEqual([e.reason for e in self.events if isinstance(e, CallEnded)], ["inactivity"])
        room.audio_in(0, FRAME)
        second = room.call
        assert second is not None
        self.assertIsNot(second, first)
        self.assertEqual((second.call_id, room.calls_started), ("chan-1", 2))

    def test_end_call_with_a_reason(self) -> None:
        room = self.open()
        room.start_call()
        room.end_call("hangup")
        room.end_call("hangup")  # nothing left to end
        self.assertIsNone(room.call)
        self.assertEqual([e.reason for e in self.events if isinstance(e, CallEnded)], ["hangup"])
        self.assertEqual(self.bridge.active_calls(), [])

    def test_close_room_ends_its_call_and_forgets_it(self) -> None:
        room = self.open()
        room.start_call()
        self.assertIn(room, self.bridge.rooms)
        self.bridge.close_room(room, "shutdown")
        self.bridge.close_room(room)  # idempotent
        self.assertNotIn(room, self.bridge.rooms)
        self.assertEqual([e.reason for e in self.events if isinstance(e, CallEnded)], ["shutdown"])

    def test_shutdown_ends_every_room_call(self) -> None:
        self.open().start_call()
        self.bridge.rooms[0].start_call()  # the configured pair's
        self.successResultOf(self.bridge.stopService())
        self.assertEqual(self.bridge.active_calls(), [])
        self.assertEqual({e.reason for e in self.events if isinstance(e, CallEnded)}, {"shutdown"})


class BridgeRoomsTests(RoomTestCase):
    def test_each_configured_pair_has_a_room_for_good(self) -> None:
        (pair,) = self.bridge.pairs
        self.assertEqual(self.bridge.rooms, [pair.room])
        self.assertEqual(pair.room.names, ("7777", "8888"))
        self.assertEqual(pair.room.endpoints, (self.bridge.endpoints["7777"], self.bridge.endpoints["8888"]))

    def test_active_calls_in_room_order(self) -> None:
        later = self.open()
        later_call = later.start_call()
        pair_call = self.bridge.pairs[0].room.start_call()
        self.assertEqual(self.bridge.active_calls(), [pair_call, later_call])
