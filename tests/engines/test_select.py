"""
Tests for :mod:`xlbridge.engines.select`, engine selection: relay, cloud
key checks, auto fallback; the start-up checks of every engine section and
of the caller languages; the warnings about local ASR models.
"""

from __future__ import annotations

import os
import sys
import types

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.apertium import settings as apertium_settings
from xlbridge.engines.select import check_engines, choose_engines, language_table, missing_keys
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
        self.assertTrue(str(e).startswith("--config: deepgram.no_such_setting: unknown setting"), str(e))

    def test_local_engines_run_as_services(self) -> None:
        """The thread pool first, then one service per engine (warm-up at start, close at stop)."""
        choice = choose_engines("local", self.reactor, {}, SPHINX, {"en"})
        self.assertEqual(len(choice.services), 4)
        self.assertIsInstance(choice.services[0], ThreadPoolService)
        self.assertFalse(any(service.running for service in choice.services))


class StartUpChecksTests(SynchronousTestCase):
    """
    Every engine section and every caller language is checked before
    anything is built, in every mode; an impossible direction is one
    ``--langs`` error.
    """

    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.patch(apertium_settings, "PROGRAMS", ("sh",))
        self.modes = self.mktemp()
        os.mkdir(self.modes)
        for mode in ("eng-spa", "spa-eng", "fra-cat", "cat-fra"):
            with open(os.path.join(self.modes, f"{mode}.mode"), "w") as f:
                f.write("cat\n")

    def local(self, **options: object) -> dict[str, object]:
        return {"local_asr": {"engine": "pocketsphinx"}, "apertium": {"modes_dir": self.modes}, **options}

    def test_unused_sections_are_checked_in_every_mode(self) -> None:
        for mode in ("relay", "local", "auto"):
            e = self.assertRaises(ConfigError, choose_engines, mode, self.reactor, {},
                                  {"deepgram": {"modle": "nova-2"}}, {"en", "es"})
            self.assertTrue(str(e).startswith("--config: deepgram.modle: unknown setting; did you mean model?"),
                            (mode, str(e)))

    def test_not_a_language_in_every_mode(self) -> None:
        for mode in ("relay", "local", "cloud"):
            e = self.assertRaises(ConfigError, choose_engines, mode, self.reactor, KEYS, self.local(), {"xx", "yy"})
            self.assertTrue(str(e).startswith("--langs: 'xx' is not a language code"), (mode, str(e)))

    def test_local_en_fr_is_refused_at_start_up(self) -> None:
        e = self.assertRaises(ConfigError, choose_engines, "local", self.reactor, {}, self.local(), {"en", "fr"})
        self.assertTrue(str(e).startswith("--langs: apertium cannot translate en→fr or fr→en: its pairs are en→es, es→en"),
                        str(e))

    def test_cloud_language_deepgram_lacks(self) -> None:
        e = self.assertRaises(ConfigError, choose_engines, "cloud", self.reactor, KEYS, {}, {"en", "xh"})
        self.assertIn("deepgram (model nova-3) cannot recognise 'xh'", str(e))
        self.assertTrue(str(e).startswith("--langs: "), str(e))

    def test_auto_mode_checks_the_engine_of_each_stage(self) -> None:
        """With only a DeepL key, en→fr is DeepL's (fine), fr is spoken by espeak-ng (a warning)."""
        choice = choose_engines("auto", self.reactor, {"DEEPL_AUTH_KEY": "k:fx"}, self.local(), {"en", "fr"})
        assert choice.engines is not None
        self.assertEqual(choice.engines.names["mt"], "deepl")
        self.assertTrue(any(w.startswith("espeak-ng: no voice for 'fr'") for w in choice.warnings), choice.warnings)

    def test_only_the_pairs_that_meet_are_checked(self) -> None:
        """--langs en,es,fr,ca pairs en with es and fr with ca: en never meets fr."""
        options = self.local(apertium={"modes_dir": self.modes, "pairs": {"fr-ca": "fra-cat", "ca-fr": "cat-fra"}},
                             espeak={"voices": {"fr": "fr", "ca": "ca"}})
        languages = {"en", "es", "fr", "ca"}
        choice = choose_engines("local", self.reactor, {}, options, languages, [("en", "es"), ("fr", "ca")])
        self.assertIsNotNone(choice.engines)
        e = self.assertRaises(ConfigError, choose_engines, "local", self.reactor, {}, options, languages)
        self.assertIn("apertium cannot translate ca→en", str(e))

    def test_check_engines_builds_nothing(self) -> None:
        """The same checks, cheap enough for option parsing."""
        self.assertEqual(check_engines("relay", {}, {}, {"en", "es"}), ())
        e = self.assertRaises(ConfigError, check_engines, "local", {}, self.local(), {"en", "fr"})
        self.assertTrue(str(e).startswith("--langs: apertium cannot translate en→fr"), str(e))
        e = self.assertRaises(ConfigError, check_engines, "cloud", {}, {}, {"en", "es"})
        self.assertIn("DEEPGRAM_API_KEY", str(e))
        (warning,) = check_engines("auto", {"DEEPL_AUTH_KEY": "k:fx"}, self.local(), {"en", "fr"})
        self.assertTrue(warning.startswith("espeak-ng: no voice for 'fr'"), warning)

    def test_language_table(self) -> None:
        table = language_table({}, self.local())
        self.assertIn("Translation pairs, both ways:", table)
        self.assertIn("pocketsphinx", table)
        e = self.assertRaises(ConfigError, language_table, {}, {"espeak": {"rate": 1}})
        self.assertIn("espeak.rate", str(e))


class LocalASRModelTests(SynchronousTestCase):
    """
    A configured model that cannot load is reported at start-up with its
    real cause, naming the section the user wrote; "add
    [local_asr.models.es]" only when there is no such section.
    """

    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.patch(apertium_settings, "PROGRAMS", ("sh",))
        self.modes = self.mktemp()
        os.mkdir(self.modes)
        for mode in ("eng-spa", "spa-eng"):
            with open(os.path.join(self.modes, f"{mode}.mode"), "w") as f:
                f.write("cat\n")

    def choose(self, **local_asr: object) -> tuple[str, ...]:
        options = {"local_asr": local_asr, "apertium": {"modes_dir": self.modes}}
        return choose_engines("local", self.reactor, {}, options, {"en", "es"}).warnings

    def warnings(self, models: dict[str, object], languages: set[str]) -> list[str]:
        options = {"local_asr": {"engine": "pocketsphinx", "models": models}, "apertium": {"modes_dir": self.modes}}
        return list(choose_engines("local", self.reactor, {}, options, languages).warnings)

    def fake_vosk(self) -> None:
        self.patch(sys, "modules", {**sys.modules, "vosk": types.ModuleType("vosk")})

    def test_vosk_not_installed(self) -> None:
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        path = self.mktemp()
        os.makedirs(os.path.join(path, "am"))
        (warning,) = self.warnings({"es": {"engine": "vosk", "path": path}}, {"en", "es"})
        self.assertEqual(warning, "local ASR: [local_asr.models.es] cannot load (Vosk is not installed: pip install "
                                  "vosk (the 'vosk' extra)); es callers are not recognised (their partners hear the "
                                  "original voice)")
        self.assertNotIn("add [local_asr.models.es]", warning)

    def test_vosk_path_missing(self) -> None:
        self.fake_vosk()
        (warning,) = self.warnings({"es": {"engine": "vosk", "path": "/nonexistent/vosk-es"}}, {"en", "es"})
        self.assertIn("[local_asr.models.es] cannot load (Vosk model path '/nonexistent/vosk-es' is not a directory)",
                      warning)

    def test_not_a_vosk_model(self) -> None:
        self.fake_vosk()
        path = self.mktemp()
        os.mkdir(path)
        (warning,) = self.warnings({"es": {"engine": "vosk", "path": path}}, {"en", "es"})
        self.assertIn(f"[local_asr.models.es] cannot load ('{path}' is not a Vosk model (no am/final.mdl))", warning)

    def test_regional_caller_language_names_the_section(self) -> None:
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        (warning,) = self.warnings({"es": {"engine": "vosk", "path": "/srv/vosk-es"}}, {"en", "es-mx"})
        self.assertIn("[local_asr.models.es] cannot load (Vosk is not installed", warning)
        self.assertIn("es-mx callers are not recognised", warning)

    def test_pocketsphinx_files_missing(self) -> None:
        (warning,) = self.warnings({"es": {"hmm": "/nonexistent/es", "lm": "/nonexistent/es.lm",
                                           "dict": "/nonexistent/es.dict"}}, {"en", "es"})
        self.assertIn("[local_asr.models.es] cannot load (pocketsphinx hmm '/nonexistent/es' is not a directory)",
                      warning)

    def test_no_section_says_which_to_add(self) -> None:
        (warning,) = self.warnings({}, {"en", "es"})
        self.assertIn("no local ASR model for 'es'", warning)
        self.assertIn("add [local_asr.models.es]", warning)

    def test_broken_section_with_no_whisper_model(self) -> None:
        """The Whisper warning's fallback list does not claim a broken model serves its language."""
        self.patch(sys, "modules", {**sys.modules, "vosk": None})
        warnings = self.choose(whisper={"model": "/nonexistent/whisper"},
                               models={"es": {"engine": "vosk", "path": "/srv/vosk-es"}})
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn("es callers are not recognised", warnings[0])
        self.assertNotIn("es callers use vosk", warnings[0])
        self.assertIn("[local_asr.models.es] cannot load", warnings[1])
