"""
Tests for engine selection: relay, cloud key checks, auto fallback.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.select import choose_engines, missing_keys
from xlbridge.errors import ConfigError
from xlbridge.testing import MemoryUDPReactor

KEYS = {"DEEPGRAM_API_KEY": "dg-secret", "DEEPL_AUTH_KEY": "dl-secret:fx", "ELEVENLABS_API_KEY": "el-secret"}


class SelectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()

    def test_relay_has_no_engines(self) -> None:
        self.assertIsNone(choose_engines("relay", self.reactor, KEYS, {}).engines)

    def test_local_engines(self) -> None:
        choice = choose_engines("local", self.reactor, KEYS, {}, {"en", "es"})
        assert choice.engines is not None
        self.assertEqual(choice.engines.names, {"asr": "pocketsphinx", "mt": "apertium", "tts": "espeak-ng"})
        # English is built in; Spanish needs a user-supplied model: a warning
        # that names the setting, not an error.
        (warning,) = choice.warnings
        self.assertIn("'es'", warning)
        self.assertIn("[local_asr.models.es]", warning)

    def test_local_mt_missing_names_the_packages(self) -> None:
        e = self.assertRaises(
            ConfigError, choose_engines, "local", self.reactor, {}, {"apertium": {"modes_dir": "/nonexistent"}}
        )
        self.assertIn("apertium-eng-spa", str(e))

    def test_cloud_names_every_missing_variable(self) -> None:
        e = self.assertRaises(ConfigError, choose_engines, "cloud", self.reactor, {"DEEPL_API_KEY": "k"}, {})
        self.assertIn("DEEPGRAM_API_KEY", str(e))
        self.assertIn("ELEVENLABS_API_KEY", str(e))
        self.assertNotIn("DEEPL", str(e))

    def test_keys_from_toml_sections_count(self) -> None:
        options = {"deepgram": {"api_key": "a"}, "deepl": {"auth_key": "b"}, "elevenlabs": {"api_key": "c"}}
        self.assertEqual(missing_keys({}, options), [])

    def test_cloud_with_keys_builds_all_three(self) -> None:
        choice = choose_engines("cloud", self.reactor, KEYS, {})
        assert choice.engines is not None
        self.assertEqual(choice.engines.names, {"asr": "deepgram", "mt": "deepl", "tts": "elevenlabs"})
        self.assertEqual(choice.engines.mt.name, "deepl")
        self.assertEqual(choice.engines.tts.name, "elevenlabs")
        self.assertEqual(len(choice.services), 4)  # pool + one per engine
        for secret in KEYS.values():
            self.assertNotIn(secret, repr(choice))

    def test_auto_picks_per_stage(self) -> None:
        choice = choose_engines("auto", self.reactor, {"DEEPL_AUTH_KEY": "x"}, {})
        assert choice.engines is not None
        self.assertEqual(choice.engines.names, {"asr": "pocketsphinx", "mt": "deepl", "tts": "espeak-ng"})

    def test_auto_without_keys_is_local(self) -> None:
        choice = choose_engines("auto", self.reactor, {}, {})
        assert choice.engines is not None
        self.assertEqual(choice.engines.names["asr"], "pocketsphinx")

    def test_auto_with_keys_is_cloud(self) -> None:
        self.assertIsNotNone(choose_engines("auto", self.reactor, KEYS, {}).engines)

    def test_bad_engine_setting_is_a_config_error(self) -> None:
        e = self.assertRaises(
            ConfigError, choose_engines, "cloud", self.reactor, KEYS, {"deepgram": {"no_such_setting": 1}}
        )
        self.assertIn("[deepgram]", str(e))
