"""
A viewer's bounded send queue: drops the oldest, counts, stops when the
transport pauses.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.monitor.outbox import Outbox


class OutboxTests(SynchronousTestCase):
    def test_bound_drops_oldest_and_counts(self) -> None:
        box = Outbox(100)
        self.assertEqual([box.put(i, 30) for i in range(3)], [0, 0, 0])
        self.assertEqual(box.put(3, 30), 1)  # 0 goes
        self.assertEqual(box.put(4, 60), 2)  # 1 and 2 go
        self.assertEqual((box.dropped, box.bytes, len(box)), (3, 90, 2))
        sent: list[Any] = []
        box.drain(sent.append)
        self.assertEqual((sent, box.bytes), ([3, 4], 0))
        box.put(5, 30)
        self.assertEqual(box.put("huge", 150), 1)  # bigger than the bound: queued alone
        self.assertEqual((len(box), box.bytes), (1, 150))

    def test_drain_stops_when_the_transport_pauses(self) -> None:
        box = Outbox(1000)
        for i in range(5):
            box.put(i, 10)
        sent: list[Any] = []

        def send(item: Any) -> None:
            sent.append(item)
            if item == 1:
                box.paused = True  # the transport's buffer filled up

        box.drain(send)
        self.assertEqual((sent, len(box)), ([0, 1], 3))
        box.paused = False
        box.drain(sent.append)
        self.assertEqual(sent, [0, 1, 2, 3, 4])
