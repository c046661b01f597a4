"""
Tests for the JSON-lines transcript writer.
"""

from __future__ import annotations

import json

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from xlbridge.eventlog import EventLogService
from xlbridge.events import CallStarted, TranscriptEvent


class EventLogTests(TestCase):
    def test_every_event_written_and_flushed_on_stop(self) -> None:
        path = self.mktemp()
        svc = EventLogService(path, reactor)
        svc.startService()
        for i in range(200):
            svc(TranscriptEvent("c1", "7777", "en", f"word {i} ñ", True, float(i), asr_ms=12.3456))
        svc(CallStarted("c1", ("7777", "8888"), ("en", "es"), 1.0))
        d = svc.stopService()

        def check(_: object) -> None:
            with open(path, encoding="utf-8") as f:
                lines = [json.loads(line) for line in f]
            self.assertEqual(len(lines), 201)
            self.assertEqual(lines[0]["event"], "TranscriptEvent")
            self.assertEqual((lines[0]["text"], lines[0]["asr_ms"]), ("word 0 ñ", 12.346))
            self.assertEqual(lines[-1]["extensions"], ["7777", "8888"])
            self.assertEqual((svc.written, svc.dropped), (201, 0))

        return d.addCallback(check)  # type: ignore[return-value]

    def test_full_queue_drops_and_counts(self) -> None:
        svc = EventLogService(self.mktemp(), reactor, max_queued=1)
        svc.running = True  # queue without a writer thread
        for i in range(5):
            svc(CallStarted(str(i), ("1", "2"), ("en", "es"), 0.0))
        self.assertEqual(svc.dropped, 4)

    def test_unwritable_path_fails_at_start(self) -> None:
        svc = EventLogService("/nonexistent-dir/x.jsonl", reactor)
        self.assertRaises(OSError, svc.startService)
