"""
Tests for xlbridge.event_json: the one place events are serialised.
"""

from __future__ import annotations

import json
import typing

import attrs
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.event_json import event_to_dict
from xlbridge.events import (
    CallEnded,
    CallStarted,
    EngineStatusEvent,
    Event,
    PlaybackEnded,
    PlaybackStarted,
    SpeculationEvent,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)


class EventToDictTests(SynchronousTestCase):
    def test_fields_plus_event_name_tuples_as_lists_floats_rounded(self) -> None:
        e = CallStarted("c1", ("7777", "8888"), ("en", "es"), 12.345678, channels=("a.1", "b.2"))
        self.assertEqual(
            event_to_dict(e),
            {
                "event": "CallStarted",
                "call_id": "c1",
                "extensions": ["7777", "8888"],
                "languages": ["en", "es"],
                "time": 12.346,
                "channels": ["a.1", "b.2"],
            },
        )

    def test_every_event_type_serialises_to_json(self) -> None:
        samples: list[Event] = [
            CallStarted("c", ("1", "2"), ("en", "es"), 1.0),
            CallEnded("c", ("1", "2"), "hangup", 3.5, 4.5),
            TranscriptEvent("c", "1", "en", "hello", True, 1.0, speech_final=True, asr_ms=120.0),
            TranslationEvent("c", "1", "es", "hola", "hello", "en", 1, 80.0, 1.1),
            PlaybackStarted("c", "2", "1", "es", "hola", 1, 1.2, 120.0, 80.0, 200.0, 10.0, 410.0),
            PlaybackEnded("c", "2", "1", "es", "hola", 1, 2.0, 800.0),
            UtteranceDropped("c", "2", "es", "hola", "backlog", 2.1),
            EngineStatusEvent("c", "1", "deepgram", "down", "relay", "refused", True, 2.2),
            SpeculationEvent("c", "2", "1", "es", "hello", "wasted", "resumed", 2.3),
        ]
        self.assertEqual({type(e) for e in samples}, set(typing.get_args(Event)))
        for e in samples:
            d = event_to_dict(e)
            self.assertEqual(d["event"], type(e).__name__)
            self.assertEqual(set(d) - {"event"}, {f.name for f in attrs.fields(type(e))})
            self.assertEqual(json.loads(json.dumps(d)), d)
