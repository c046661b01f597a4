"""
Tests for :mod:`xlbridge.engines.vosk.asr` with a fake ``vosk`` module:
Vosk is an optional extra and its models are large, so what is tested is
the absence of the package, the model checks and how results map to
events.
"""

from __future__ import annotations

import json
import os
import sys
import types
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import EngineRequestError
from xlbridge.engines.vosk import asr as vosk_asr
from xlbridge.engines.vosk.asr import INSTALL_HINT, VoskModel, VoskStream, check_vosk_model, load_vosk_model

from tests.engines.local_asr.speech import RATE, transcripts


class _FakeRecognizer:
    """Answers like vosk.KaldiRecognizer: a partial, then a final at frame 30."""

    def __init__(self, model: Any, rate: int) -> None:
        assert rate == RATE
        self.fed = 0

    def SetWords(self, on: bool) -> None:
        assert on

    def AcceptWaveform(self, data: bytes) -> bool:
        self.fed += len(data)
        return self.fed == 30 * 640

    def PartialResult(self) -> str:
        return json.dumps({"partial": "hola" if 10 * 640 < self.fed < 30 * 640 else ""})

    def Result(self) -> str:
        words = [{"word": "hola", "start": 0.25, "end": 0.5, "conf": 0.8},
                 {"word": "mundo", "start": 0.52, "end": 0.55, "conf": 0.6}]
        return json.dumps({"text": "hola mundo", "result": words})

    def FinalResult(self) -> str:
        return json.dumps({"text": ""})


class VoskTests(SynchronousTestCase):
    def test_absent_is_a_clear_error(self) -> None:
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        self.assertEqual(check_vosk_model(VoskModel("/srv/vosk-es")), INSTALL_HINT)
        e = self.assertRaises(EngineRequestError, load_vosk_model, VoskModel("/srv/vosk-es"))
        self.assertIn("pip install vosk", str(e))
        self.assertFalse(e.retryable)

    def fake_vosk(self) -> types.ModuleType:
        fake = types.ModuleType("vosk")
        fake.Model = lambda path: ("model", path)  # type: ignore[attr-defined]
        fake.KaldiRecognizer = _FakeRecognizer  # type: ignore[attr-defined]
        fake.SetLogLevel = lambda level: None  # type: ignore[attr-defined]
        self.patch(sys, "modules", {**sys.modules, "vosk": fake})
        return fake

    def test_path_must_be_a_model(self) -> None:
        self.fake_vosk()
        d = self.mktemp()
        os.makedirs(d)
        self.assertIn("is not a Vosk model", check_vosk_model(VoskModel(d)) or "")
        self.assertIn("is not a directory", check_vosk_model(VoskModel(d + "/nope")) or "")
        os.makedirs(os.path.join(d, "am"))
        open(os.path.join(d, "am", "final.mdl"), "wb").close()
        self.assertIsNone(check_vosk_model(VoskModel(d)))
        self.patch(vosk_asr, "_models", {})
        self.assertIs(vosk_asr.shared_model(VoskModel(d)), vosk_asr.shared_model(VoskModel(d)))

    def test_stream_maps_results(self) -> None:
        self.fake_vosk()
        s = VoskStream(object(), interim_interval_s=0.1)
        s.skip(10)
        events = []
        for _ in range(40):
            events += s.feed(b"\0" * 640)
        events += s.finish(b"\0" * 100)
        interim, final = transcripts(events)
        self.assertEqual((interim.text, interim.is_final), ("hola", False))
        self.assertEqual((final.text, final.is_final, final.speech_final), ("hola mundo", True, True))
        self.assertEqual((final.start, final.speech_end, final.end), (0.45, 0.75, 0.8))
        self.assertTrue(abs(final.confidence - 0.7) < 1e-9)
