"""
Tests for xlbridge.operator_log: what twistd's log tells the operator, in
the ``xlbridge.tap`` namespace it always had.  (tests.test_tap checks the
same lines reach the log through a built service.)
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from xlbridge.config import load_config
from xlbridge.events import CallStarted, EngineStatusEvent, Event, PlaybackStarted, TranscriptEvent, UtteranceDropped
from xlbridge.operator_log import log_bridge_plan, log_event


class OperatorLogTests(TestCase):
    def logged(self, emit: Callable[[], Any]) -> list[dict[str, Any]]:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        emit()
        return list(events)

    def test_plan_names_pairs_and_codecs(self) -> None:
        config = load_config({"ports": "7777,8888", "langs": "en,es"})
        events = self.logged(lambda: log_bridge_plan(config, None))
        lines = [formatEvent(e) for e in events]
        self.assertIn("pair 7777 (RTP UDP port 7777, en) <-> 8888 (RTP UDP port 8888, es)", lines)
        self.assertIn(f"codec {config.codec} in, {config.reply_codec} back, on {config.interface}", lines)
        self.assertEqual({e["log_namespace"] for e in events}, {"xlbridge.tap"})

    def test_events_worth_a_line(self) -> None:
        said: list[Event] = [
            CallStarted("c", ("7777", "8888"), ("en", "es"), 1.0),
            TranscriptEvent("c", "7777", "en", "hello", False, 1.0),
            TranscriptEvent("c", "7777", "en", "hello there", True, 1.1),
            PlaybackStarted("c", "8888", "7777", "es", "hola", 1, 1.2, 120.0, None, 200.0, 10.0, 410.4),
            EngineStatusEvent("c", "7777", "deepgram", "down", "relay", "refused", True, 2.2),
            EngineStatusEvent("c", "7777", "deepgram", "up", "none", "", True, 3.2),
            UtteranceDropped("c", "8888", "es", "hola", "backlog", 2.1),
        ]
        events = self.logged(lambda: list(map(log_event, said)))
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "7777 said: hello there",
                "8888 hears (es): hola [total 410 ms: asr 120, mt -, tts 200, queue 10]",
                "7777: deepgram down (refused); listener hears: relay",
                "7777: deepgram back",
                "8888: dropped (backlog): hola",
            ],
        )
        self.assertEqual({e["log_namespace"] for e in events}, {"xlbridge.tap"})
        self.assertEqual(events[2]["log_level"].name, "warn")

    def test_without_text_logs_lengths(self) -> None:
        events = self.logged(lambda: log_event(TranscriptEvent("c", "7777", "en", "my pin is 1234", True, 1.0), text=False))
        self.assertEqual([formatEvent(e) for e in events], ["7777 said: <14 characters>"])
