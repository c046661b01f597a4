"""
Tests for the JSON-lines transcript writer.
"""

from __future__ import annotations

import json
import threading
import typing

import attrs
from twisted.internet import reactor
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from xlbridge.config import load_config
from xlbridge.errors import ConfigError
from xlbridge.event_json import event_to_dict
from xlbridge.eventlog import (
    TEXT_FIELDS,
    EventFileError,
    EventLogService,
    end_partial_line,
    read_events,
    without_text,
)
from xlbridge.events import (
    CallEnded,
    CallStarted,
    Event,
    PlaybackStarted,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)


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


class WithoutTextTests(TestCase):
    """
    ``events_text = false``: what callers said is replaced by its length;
    timing, latencies and reasons stay.
    """

    def test_text_fields_become_lengths_in_place(self) -> None:
        record = event_to_dict(
            TranslationEvent("c1", "7777", "es", "hola mundo", "hello world", "en", 3, 120.0, 5.0)
        )
        out = without_text(record)
        self.assertEqual(list(out), [k.replace("text", "text_chars") if k in TEXT_FIELDS else k for k in record])
        self.assertEqual((out["text_chars"], out["source_text_chars"]), (10, 11))
        self.assertEqual((out["mt_ms"], out["utterance"], out["time"]), (120.0, 3, 5.0))
        self.assertEqual(without_text({"event": "CallStarted", "extensions": ["1", "2"]}),
                         {"event": "CallStarted", "extensions": ["1", "2"]})

    def test_every_event_that_carries_text_is_covered(self) -> None:
        # A new text-carrying field must be added to TEXT_FIELDS.
        for cls in typing.get_args(Event):
            names = {f.name for f in attrs.fields(cls)}
            textual = {n for n in names if "text" in n}
            self.assertLessEqual(textual, set(TEXT_FIELDS), cls.__name__)

    def test_file_without_text(self) -> None:
        path = self.mktemp()
        svc = EventLogService(path, reactor, text=False)
        svc.startService()
        svc(TranscriptEvent("c1", "7777", "en", "my card number is", True, 1.0, asr_ms=250.0))
        svc(PlaybackStarted("c1", "8888", "7777", "es", "mi número", 1, 2.0, 250.0, 80.0, 120.0, 5.0, 455.0))
        svc(UtteranceDropped("c1", "8888", "es", "secreto", "backlog", 3.0))
        svc(CallEnded("c1", ("7777", "8888"), "hangup", 12.5, 13.0))
        d = svc.stopService()

        def check(_: object) -> None:
            with open(path, encoding="utf-8") as f:
                raw = f.read()
            for said in ("card", "número", "secreto"):
                self.assertNotIn(said, raw)
            lines = [json.loads(line) for line in raw.splitlines()]
            said, played, dropped, ended = lines
            self.assertEqual((said["text_chars"], said["asr_ms"], said["is_final"]), (17, 250.0, True))
            self.assertNotIn("text", said)
            self.assertEqual((played["text_chars"], played["total_ms"]), (9, 455.0))
            self.assertEqual((dropped["text_chars"], dropped["reason"]), (7, "backlog"))
            self.assertEqual((ended["reason"], ended["duration"]), ("hangup", 12.5))

        return d.addCallback(check)  # type: ignore[return-value]

    def test_setting(self) -> None:
        self.assertTrue(load_config({}).events_text)
        self.assertFalse(load_config({"events-text": "no"}).events_text)
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("[bridge]\nevents_text = false\n")
        self.assertFalse(load_config({}, path).events_text)
        self.assertTrue(load_config({"events-text": "yes"}, path).events_text)  # the command line wins
        e = self.assertRaises(ConfigError, load_config, {"events-text": "maybe"})
        self.assertIn("events-text", str(e))

    def test_stop_leaves_no_thread_that_keeps_the_process(self) -> None:
        """
        Stopping needs no pool thread: a process that exits after a refused
        start, its reactor never run, is not held by a join thread.
        """
        svc = EventLogService(self.mktemp(), reactor)
        svc.startService()
        d = svc.stopService()
        threads = [t for t in threading.enumerate() if t.name.startswith("xlbridge-events")]
        self.assertTrue(all(t.daemon for t in threads), threads)
        return d  # type: ignore[return-value]


class ReadEventsTests(TestCase):
    """
    Reading a ``--events`` file back: a final line cut short by a killed
    writer is skipped; damage anywhere else is an error naming the line.
    """

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def lines(self, *records: dict[str, typing.Any]) -> bytes:
        return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records)

    def test_reads_what_the_writer_wrote(self) -> None:
        path = self.mktemp()
        svc = EventLogService(path, reactor)
        svc.startService()
        svc(CallStarted("c1", ("7777", "8888"), ("en", "es"), 1.0))
        svc(TranscriptEvent("c1", "7777", "en", "año", True, 2.0))
        svc(CallEnded("c1", ("7777", "8888"), "shutdown", 1.5, 2.5))
        d = svc.stopService()

        def check(_: object) -> None:
            events = list(read_events(path))
            self.assertEqual([e["event"] for e in events], ["CallStarted", "TranscriptEvent", "CallEnded"])
            self.assertEqual(events[1]["text"], "año")

        return d.addCallback(check)  # type: ignore[return-value]

    def test_final_partial_line_is_skipped(self) -> None:
        whole = self.lines({"event": "CallStarted", "call_id": "a"}, {"event": "CallEnded", "call_id": "a"})
        cut = json.dumps({"event": "TranscriptEvent", "call_id": "b", "text": "señor"}, ensure_ascii=False).encode()
        # Cut everywhere, including inside a multi-byte character.
        for n in range(1, len(cut)):
            path = self.write(whole + cut[:n])
            self.assertEqual([e["call_id"] for e in read_events(path)], ["a", "a"], cut[:n])

    def test_complete_last_line_without_newline_is_read(self) -> None:
        path = self.write(self.lines({"event": "CallStarted"}) + b'{"event": "CallEnded"}')
        self.assertEqual([e["event"] for e in read_events(path)], ["CallStarted", "CallEnded"])

    def test_blank_and_empty(self) -> None:
        self.assertEqual(list(read_events(self.write(b""))), [])
        self.assertEqual(len(list(read_events(self.write(b"\n" + self.lines({"event": "x"}) + b"  \n")))), 1)

    def test_damage_before_the_last_line_is_an_error(self) -> None:
        path = self.write(self.lines({"event": "CallStarted"}) + b'{"event": "Cal\n' + self.lines({"event": "x"}))
        e = self.assertRaises(EventFileError, list, read_events(path))
        self.assertEqual(e.line, 2)
        self.assertTrue(str(e).startswith(f"{path}:2: not an event"), str(e))
        not_object = self.write(b"[1, 2]\n")
        self.assertRaises(EventFileError, list, read_events(not_object))


class PartialLineAtStartTests(TestCase):
    """
    A restart after a kill mid-write: the fragment the killed run left is
    removed, so the new run's first event gets a line of its own.
    """

    def write(self, data: bytes) -> str:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def test_partial_line_removed_and_warned_at_start(self) -> None:
        whole = b'{"event": "CallStarted", "call_id": "a"}\n'
        path = self.write(whole + b'{"event": "CallEnded", "call_id": "a", "ti')
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        svc = EventLogService(path, reactor)
        svc.startService()
        svc(CallStarted("b", ("7777", "8888"), ("en", "es"), 1.0))
        d = svc.stopService()

        def check(_: object) -> None:
            self.assertEqual([e["call_id"] for e in read_events(path)], ["a", "b"])
            self.assertTrue(self.read(path).startswith(whole + b'{"event": "CallStarted", "call_id": "b"'))
            (warning,) = [e for e in logged if "partial line" in e.get("log_format", "")]
            self.assertEqual(warning["cut"], len(b'{"event": "CallEnded", "call_id": "a", "ti'))

        return d.addCallback(check)  # type: ignore[return-value]

    def test_whole_last_line_gets_its_newline(self) -> None:
        path = self.write(b'{"event": "x"}\n{"event": "y"}')
        self.assertEqual(end_partial_line(path), 0)
        self.assertEqual(self.read(path), b'{"event": "x"}\n{"event": "y"}\n')

    def test_nothing_to_do(self) -> None:
        for data in (b"", b'{"event": "x"}\n'):
            path = self.write(data)
            self.assertEqual(end_partial_line(path), 0)
            self.assertEqual(self.read(path), data)
        self.assertEqual(end_partial_line(self.mktemp()), 0)  # missing: created by the service
        self.assertEqual(end_partial_line("/dev/null"), 0)  # not a regular file

    def test_long_tail_is_not_ours_to_cut(self) -> None:
        import xlbridge.eventlog as eventlog

        self.patch(eventlog, "MAX_PARTIAL", 10)
        path = self.write(b'{"event": "x"}\n' + b"y" * 50)
        self.assertEqual(end_partial_line(path), 0)
        self.assertEqual(self.read(path), b'{"event": "x"}\n' + b"y" * 50 + b"\n")

    def test_file_that_is_one_partial_line(self) -> None:
        path = self.write(b'{"event": "Call')
        self.assertEqual(end_partial_line(path), 15)
        self.assertEqual(self.read(path), b"")
