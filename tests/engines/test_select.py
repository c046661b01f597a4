"""
Tests for :mod:`xlbridge.engines.select`, engine selection: relay, cloud
key checks, auto fallback.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.select import choose_engines, missing_keys
from xlbridge.engines.threads import ThreadPoolService
from xlbridge.errors import ConfigError
from xlbridge.testing import MemoryUDPReactor

from tests.engines.whisper.folders import shaped_folder

#: Local ASR pinned to pocketsphinx, whatever models this machine has.
SPHINX = {"local_asr": {"engine": "pocketsphinx"}}

KEYS = {"DEEPGRAM_API_KEY": "dg-secret", "DEEPL_AUTH_KEY": "dl-secret:fx", "ELEVENLABS_API_KEY": "el-secret"}


class SelectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()

    def test_relay_has_no_engines(self) -> None:
        self.assertIsNone(choose_engines("relay", self.reactor, KEYS, {}).engines)

    def test_local_engines(self) -> None:
        choice = choose_engines("local", self.reactor, KEYS, SPHINX, {"en", "es"})
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
        choice = choose_engines("auto", self.reactor, {"DEEPL_AUTH_KEY": "x"}, SPHINX)
        assert choice.engines is not None
        self.assertEqual(choice.engines.names, {"asr": "pocketsphinx", "mt": "deepl", "tts": "espeak-ng"})

    def test_auto_without_keys_is_local(self) -> None:
        choice = choose_engines("auto", self.reactor, {}, SPHINX)
        assert choice.engines is not None
        self.assertEqual(choice.engines.names["asr"], "pocketsphinx")

    def test_whisper_is_the_default_when_its_model_resolves(self) -> None:
        model = shaped_folder(self.mktemp())
        options = {"local_asr": {"whisper": {"model": model}}}
        choice = choose_engines("local", self.reactor, {}, options, {"en", "es"})
        assert choice.engines is not None
        self.assertEqual(choice.engines.names["asr"], "whisper")
        self.assertEqual(choice.warnings, ())
        asr = choice.engines.asr
        self.assertEqual((asr.engine_for("en"), asr.engine_for("es"), asr.engine_for("auto")), ("whisper",) * 3)

    def test_pocketsphinx_when_asked_even_with_a_whisper_model(self) -> None:
        model = shaped_folder(self.mktemp())
        options = {"local_asr": {"engine": "pocketsphinx", "whisper": {"model": model}}}
        choice = choose_engines("local", self.reactor, {}, options, {"en"})
        assert choice.engines is not None
        self.assertEqual(choice.engines.names["asr"], "pocketsphinx")

    def test_missing_whisper_model_names_the_setting_and_each_fallback(self) -> None:
        options = {"local_asr": {"whisper": {"model": "/nonexistent/whisper"}}}
        choice = choose_engines("local", self.reactor, {}, options, {"en", "es"})
        assert choice.engines is not None
        self.assertEqual(choice.engines.names["asr"], "pocketsphinx")
        (warning,) = choice.warnings
        self.assertIn("[local_asr.whisper] model", warning)
        self.assertIn("/nonexistent/whisper", warning)
        self.assertIn("en callers use pocketsphinx", warning)
        self.assertIn("es callers are not recognised", warning)

    def test_partial_whisper_model_is_a_start_up_warning(self) -> None:
        model = shaped_folder(self.mktemp())
        os.unlink(os.path.join(model, "tokenizer.json"))
        choice = choose_engines("local", self.reactor, {}, {"local_asr": {"whisper": {"model": model}}}, {"es"})
        (warning,) = choice.warnings
        self.assertIn("tokenizer.json missing", warning)

    def test_auto_with_keys_is_cloud(self) -> None:
        self.assertIsNotNone(choose_engines("auto", self.reactor, KEYS, {}).engines)

    def test_bad_engine_setting_is_a_config_error(self) -> None:
        e = self.assertRaises(
            ConfigError, choose_engines, "cloud", self.reactor, KEYS, {"deepgram": {"no_such_setting": 1}}
        )
        self.assertIn("[deepgram]", str(e))

    def test_local_engines_run_as_services(self) -> None:
        """The thread pool first, then one service per engine (warm-up at start, close at stop)."""
        choice = choose_engines("local", self.reactor, {}, SPHINX, {"en"})
        self.assertEqual(len(choice.services), 4)
        self.assertIsInstance(choice.services[0], ThreadPoolService)
        self.assertFalse(any(service.running for service in choice.services))
