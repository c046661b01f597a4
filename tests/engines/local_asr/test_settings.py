"""
Tests for :mod:`xlbridge.engines.local_asr.settings`: the ``[local_asr]``
table, which model a language gets, and the checks behind the start-up
warnings.  Nothing here loads a model.
"""

from __future__ import annotations

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.local_asr.settings import (
    LocalASRSettings,
    languages_with_models,
    missing_model_warning,
    model_problems,
)
from xlbridge.engines.local_asr.wire import StreamParams
from xlbridge.engines.pocketsphinx.asr import SphinxModel
from xlbridge.engines.vosk.asr import VoskModel
from xlbridge.errors import ConfigError


class SettingsTests(SynchronousTestCase):
    def test_english_built_in(self) -> None:
        s = LocalASRSettings()
        self.assertEqual(s.model_for("en"), SphinxModel())
        self.assertEqual(s.model_for("en-US"), SphinxModel())
        self.assertIsNone(s.model_for("es"))
        self.assertTrue(SphinxModel().bundled)

    def test_from_options(self) -> None:
        s = LocalASRSettings.from_options({
            "models": {
                "es": {"engine": "vosk", "path": "/srv/models/vosk-es"},
                "de": {"engine": "pocketsphinx", "hmm": "/m/de", "lm": "/m/de.lm.bin", "dict": "/m/de.dict"},
                "fr": {"path": "~/vosk-fr"},
            },
            "endpoint_window_s": 0.4, "vad_mode": 2, "queue_s": 2, "interim_interval_s": 0.25,
        })
        self.assertEqual(s.model_for("es-MX"), VoskModel("/srv/models/vosk-es"))
        self.assertEqual(s.model_for("de"), SphinxModel(hmm="/m/de", lm="/m/de.lm.bin", dictionary="/m/de.dict"))
        self.assertEqual(s.model_for("fr"), VoskModel(os.path.expanduser("~/vosk-fr")))
        self.assertEqual(s.model_for("en"), SphinxModel())
        self.assertEqual((s.endpoint_window_s, s.vad_mode, s.queue_s, s.interim_interval_s), (0.4, 2, 2.0, 0.25))
        self.assertIsInstance(s.queue_s, float)

    def test_errors_name_the_key(self) -> None:
        cases = [
            ({"window": 1}, "local_asr.window"),
            ({"queue_s": "3"}, "local_asr.queue_s"),
            ({"queue_s": 0}, "local_asr.queue_s"),
            ({"vad_mode": 1.5}, "local_asr.vad_mode"),
            ({"vad_mode": True}, "local_asr.vad_mode"),
            ({"endpoint_ratio": 0.97}, "local_asr.endpoint_ratio"),
            ({"endpoint_window_s": 0.06, "endpoint_ratio": 0.1}, "local_asr.endpoint_ratio"),
            ({"models": []}, "local_asr.models"),
            ({"models": {"es": "vosk"}}, "local_asr.models.es"),
            ({"models": {"Spanish!": {"path": "/x"}}}, "local_asr.models.Spanish!"),
            ({"models": {"es": {"engine": "whisper", "path": "/x"}}}, "local_asr.models.es.engine"),
            ({"models": {"es": {"engine": "vosk"}}}, "local_asr.models.es.path"),
            ({"models": {"es": {"engine": "vosk", "path": 3}}}, "local_asr.models.es.path"),
            ({"models": {"es": {"path": "/x", "lm": "/y"}}}, "local_asr.models.es.lm"),
            ({"models": {"de": {"engine": "pocketsphinx", "lm": "/l", "dict": "/d"}}}, "local_asr.models.de.hmm"),
            ({"models": {"de": {"hmm": "/h", "lm": "/l"}}}, "local_asr.models.de.dict"),
            ({"models": {"de": {"hmm": "/h", "dict": "/d"}}}, "local_asr.models.de.lm"),
            ({"models": {"de": {"hmm": "/h", "dict": "/d", "lm": "/l", "jsgf": "/j"}}}, "local_asr.models.de.lm"),
        ]
        for table, key in cases:
            e = self.assertRaises(ConfigError, LocalASRSettings.from_options, table)
            self.assertIn(key + ":", str(e), table)
        self.assertRaises(ConfigError, LocalASRSettings.from_options, ["models"])

    def test_backend_and_workers(self) -> None:
        default = LocalASRSettings()
        self.assertEqual((default.backend, default.workers), ("process", None))
        self.assertGreaterEqual(default.worker_count(), 1)
        s = LocalASRSettings.from_options({"backend": "thread", "workers": 3})
        self.assertEqual((s.backend, s.workers, s.worker_count()), ("thread", 3, 3))
        for table, key in [({"backend": "fork"}, "local_asr.backend"), ({"backend": ["thread"]}, "local_asr.backend"),
                           ({"workers": 0}, "local_asr.workers"), ({"workers": 1.5}, "local_asr.workers")]:
            e = self.assertRaises(ConfigError, LocalASRSettings.from_options, table)
            self.assertIn(key + ":", str(e), table)
        self.assertRaises(ValueError, LocalASRSettings, backend="fork")

    def test_languages_with_models(self) -> None:
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        s = LocalASRSettings.from_options({"models": {
            "es": {"path": "/nonexistent/vosk-es"},
            "de": {"hmm": "/nonexistent/de", "lm": "/nonexistent/de.lm", "dict": "/nonexistent/de.dict"},
        }})
        self.assertEqual(languages_with_models(s), {"en"})
        problems = model_problems(s)
        self.assertIn("pip install vosk", problems["es"])
        self.assertIn("'/nonexistent/de' is not a directory", problems["de"])
        self.assertEqual(missing_model_warning("es"),
                         "no ASR model for es: add [local_asr.models.es] with path=... (see README)")

    def test_stream_params(self) -> None:
        """What each stream's recogniser gets, wherever it runs."""
        s = LocalASRSettings(endpoint_window_s=0.4, endpoint_ratio=0.8, vad_mode=2, interim_interval_s=0.5,
                             max_utterance_s=12.0)
        self.assertEqual(s.stream_params(), StreamParams(0.4, 0.8, 2, 0.5, 12.0))
        self.assertEqual((s.engine_for("en"), s.engine_for("es")), ("pocketsphinx", "none"))
