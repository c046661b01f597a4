"""
Tests for xlbridge.events: drop reasons, leg counters (count, fold,
snapshot) and events.  Their JSON form is tested in tests.test_event_json.
"""

from __future__ import annotations

import json

import attrs
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.events import CallEnded, DropReason, LegCounters


class DropReasonTests(SynchronousTestCase):
    def test_values_are_the_lowercase_names(self) -> None:
        for reason in DropReason:
            self.assertEqual(reason.value, reason.name.lower())

    def test_pipeline_errors_are_their_own_reason(self) -> None:
        self.assertEqual(DropReason("pipeline_error"), DropReason.PIPELINE_ERROR)
        self.assertIsNot(DropReason.PIPELINE_ERROR, DropReason.ERROR)


class LegCountersTests(SynchronousTestCase):
    def test_drop_counts_by_reason(self) -> None:
        c = LegCounters()
        c.drop(DropReason.SHORT)
        c.drop(DropReason.LATE, 3)
        c.drop(DropReason.SHORT)
        self.assertEqual(dict(c.drops), {DropReason.SHORT: 2, DropReason.LATE: 3})

    def test_add_folds_every_count(self) -> None:
        a = LegCounters(packets_in=1, bytes_in=2, packets_out=3, bytes_out=4, silence_out=5,
                        late_ticks=6, skipped_ticks=7, lost=8, xoff_ms=1, flushed_bytes=2, marks_sent=3,
                        marks_processed=4)
        a.drop(DropReason.ERROR)
        b = LegCounters(packets_in=10, bytes_in=20, packets_out=30, bytes_out=40, silence_out=50,
                        late_ticks=60, skipped_ticks=70, lost=80, xoff_ms=10, flushed_bytes=20, marks_sent=30,
                        marks_processed=40)
        b.drop(DropReason.ERROR, 2)
        b.drop(DropReason.PIPELINE_ERROR)
        a.add(b)
        snap = a.snapshot()
        self.assertEqual(
            snap,
            {
                "packets_in": 11, "bytes_in": 22, "packets_out": 33, "bytes_out": 44, "silence_out": 55,
                "late_ticks": 66, "skipped_ticks": 77, "lost": 88,
                "drops": {"error": 3, "pipeline_error": 1},
                "xoff_ms": 11, "flushed_bytes": 22, "marks_sent": 33, "marks_processed": 44,
            },
        )
        self.assertEqual(b.drops[DropReason.ERROR], 2)  # the source is not changed

    def test_snapshot_is_json_ready_and_sorted(self) -> None:
        c = LegCounters()
        for reason in (DropReason.SHORT, DropReason.BUFFER_FULL, DropReason.AUDIOSOCKET_KIND):
            c.drop(reason)
        snap = c.snapshot()
        self.assertEqual(list(snap["drops"]), ["audiosocket_kind", "buffer_full", "short"])
        self.assertEqual(json.loads(json.dumps(snap)), snap)
        c.drop(DropReason.SHORT)
        self.assertEqual(snap["drops"]["short"], 1)  # a copy, not a view


class EventTests(SynchronousTestCase):
    def test_events_are_frozen(self) -> None:
        e = CallEnded("c", ("1", "2"), "shutdown", 1.0, 2.0)
        self.assertRaises(attrs.exceptions.FrozenInstanceError, setattr, e, "reason", "hangup")
