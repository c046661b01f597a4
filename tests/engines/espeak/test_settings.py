"""
Tests for :mod:`xlbridge.engines.espeak.settings`: :class:`ESpeakSettings`
from the ``[espeak]`` table, and errors that name the TOML key.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.espeak.settings import DEFAULT_VOICES, ESpeakSettings
from xlbridge.errors import ConfigError


class SettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        s = ESpeakSettings()
        self.assertEqual(dict(s.voices), dict(DEFAULT_VOICES))
        self.assertEqual((s.default_voice, s.rate_wpm, s.pitch, s.max_queue), ("en-us", 175, 50, 16))

    def test_from_options(self) -> None:
        s = ESpeakSettings.from_options(
            {"voices": {"es-MX": "es-419"}, "default_voice": "", "rate_wpm": 200, "pitch": 40, "max_queue": 4}
        )
        self.assertEqual(dict(s.voices), {"en": "en-us", "es": "es", "es-mx": "es-419"})
        self.assertIsNone(s.default_voice)
        self.assertEqual((s.rate_wpm, s.pitch, s.max_queue), (200, 40, 4))
        self.assertEqual(s.voice_for("es-MX"), "es-419")
        self.assertEqual(s.voice_for("es_AR"), "es")
        self.assertEqual(s.voice_for("EN"), "en-us")
        self.assertIsNone(s.voice_for("fr"))

    def assertBad(self, table: dict[str, Any], key: str, words: str) -> None:
        e = self.assertRaises(ConfigError, ESpeakSettings.from_options, table)
        self.assertEqual(e.option, "config")
        self.assertTrue(str(e).startswith(f"--config: {key}: "), str(e))
        self.assertIn(words, str(e))

    def test_bad_values_name_the_key(self) -> None:
        """Every message names the TOML key as espeak.<key>, never an --espeak-... option."""
        self.assertBad({"rate": 100}, "espeak.rate", "unknown setting; did you mean rate_wpm?")
        self.assertBad({"rate_wpm": 10}, "espeak.rate_wpm", "10 is outside 80..450")
        self.assertBad({"rate_wpm": "fast"}, "espeak.rate_wpm", "not a whole number")
        self.assertBad({"pitch": 101}, "espeak.pitch", "outside 0..100")
        self.assertBad({"pitch": True}, "espeak.pitch", "not a whole number")
        self.assertBad({"max_queue": 0}, "espeak.max_queue", "outside 1..1024")
        self.assertBad({"voices": "es"}, "espeak.voices", "must be a table")
        self.assertBad({"voices": {"spanish!": "es"}}, "espeak.voices.spanish!", "not a language code")
        self.assertBad({"voices": {"es": 3}}, "espeak.voices.es", "not an espeak-ng voice name")
        self.assertBad({"default_voice": "a b"}, "espeak.default_voice", "not an espeak-ng voice name")
        self.assertBad({"library_path": 5}, "espeak.library_path", "must be a path")

    def test_unknown_key_lists_the_known_ones(self) -> None:
        e = self.assertRaises(ConfigError, ESpeakSettings.from_options, {"speed": 100})
        self.assertIn("espeak.speed: unknown setting", str(e))
        for known in ("voices", "default_voice", "rate_wpm", "pitch", "max_queue", "library_path", "data_path"):
            self.assertIn(known, str(e))
