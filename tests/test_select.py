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

    def test_local_is_a_clear_error(self) -> None:
        e = self.assertRaises(ConfigError, choose_engines, "local", self.reactor, {}, {})
        self.assertIn("local engines", str(e))

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
        self.assertEqual(len(choice.services), 2)
        for secret in KEYS.values():
            self.assertNotIn(secret, repr(choice))

    def test_auto_without_keys_relays_with_a_warning(self) -> None:
        choice = choose_engines("auto", self.reactor, {"DEEPGRAM_API_KEY": "x"}, {})
        self.assertIsNone(choice.engines)
        (warning,) = choice.warnings
        self.assertIn("DEEPL_AUTH_KEY", warning)
        self.assertIn("ELEVENLABS_API_KEY", warning)

    def test_auto_with_keys_is_cloud(self) -> None:
        self.assertIsNotNone(choose_engines("auto", self.reactor, KEYS, {}).engines)

    def test_bad_engine_setting_is_a_config_error(self) -> None:
        e = self.assertRaises(
            ConfigError, choose_engines, "cloud", self.reactor, KEYS, {"deepgram": {"no_such_setting": 1}}
        )
        self.assertIn("[deepgram]", str(e))
