"""
Tests for :mod:`xlbridge.engines.coverage`: every engine section checked
whether or not it is used, caller languages that are not languages, the
directions the chosen engines cannot serve (errors) or serve degraded
(warnings), and the table of what each engine supports.

Apertium and espeak-ng are given made-up installations (a modes directory
of empty mode files, a data directory of voice files), so the results do
not depend on what this machine has.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.apertium import settings as apertium_settings
from xlbridge.engines.coverage import (
    EngineSettings,
    check_codes,
    check_directions,
    language_table,
    read_engine_settings,
)
from xlbridge.errors import ConfigError

CLOUD = {"asr": "cloud", "mt": "cloud", "tts": "cloud"}
LOCAL = {"asr": "local", "mt": "local", "tts": "local"}


class Installed(SynchronousTestCase):
    """Made-up Apertium modes and espeak-ng voices."""

    def setUp(self) -> None:
        self.patch(apertium_settings, "PROGRAMS", ("sh",))
        self.modes = self.mktemp()
        os.mkdir(self.modes)
        for mode in ("eng-spa", "spa-eng", "fra-cat", "cat-fra"):
            with open(os.path.join(self.modes, f"{mode}.mode"), "w") as f:
                f.write("cat\n")
        self.voices = self.mktemp()
        for name, lang in (("en-US", "en-us"), ("es", "es"), ("fr", "fr"), ("fr-BE", "fr-be"), ("ca", "ca")):
            os.makedirs(os.path.join(self.voices, "lang", "x"), exist_ok=True)
            with open(os.path.join(self.voices, "lang", "x", name), "w") as f:
                f.write(f"name {name}\nlanguage {lang}\n")

    def settings(self, environ: Any = None, **options: Any) -> EngineSettings:
        options.setdefault("apertium", {})
        options["apertium"] = {"modes_dir": self.modes, **options["apertium"]}
        options.setdefault("espeak", {})
        options["espeak"] = {"data_path": self.voices, **options["espeak"]}
        return read_engine_settings(environ or {}, options)


class SectionsTests(Installed):
    """Item: every engine section is checked at start-up, used or not, keys set or not."""

    def test_typo_in_every_section_names_the_key(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"deepgram": {"modle": "nova-2"}}, "deepgram.modle: unknown setting; did you mean model?"),
            ({"deepl": {"formalty": "more"}}, "deepl.formalty: unknown setting; did you mean formality?"),
            ({"elevenlabs": {"voice": "x"}}, "elevenlabs.voice: unknown setting; did you mean voices?"),
            ({"apertium": {"pair": {}}}, "apertium.pair: unknown setting; did you mean pairs?"),
            ({"espeak": {"rate": 100}}, "espeak.rate: unknown setting; did you mean rate_wpm?"),
            ({"local_asr": {"engin": "whisper"}}, "local_asr.engin: unknown setting; did you mean engine?"),
            ({"local_asr": {"whisper": {"modle": "/m"}}}, "local_asr.whisper.modle: unknown setting; did you mean model?"),
            ({"local_asr": {"models": {"es": {"engine": "vosk", "pth": "/m"}}}},
             "local_asr.models.es.pth: unknown setting; did you mean path?"),
        ]
        for options, words in cases:
            for environ in ({}, {"DEEPGRAM_API_KEY": "k", "DEEPL_AUTH_KEY": "k:fx", "ELEVENLABS_API_KEY": "k"}):
                e = self.assertRaises(ConfigError, self.settings, environ, **options)
                self.assertTrue(str(e).startswith(f"--config: {words} (known: "), str(e))
                self.assertNotIn("\n", str(e))

    def test_bad_value_in_an_unused_section(self) -> None:
        e = self.assertRaises(ConfigError, self.settings, deepl={"formality": "polite"})
        self.assertIn("--config: deepl.formality: 'polite' is not one of", str(e))

    def test_unknown_engine_section(self) -> None:
        e = self.assertRaises(ConfigError, read_engine_settings, {}, {"whisper": {}})
        self.assertIn("--config: whisper: unknown engine section", str(e))

    def test_deepl_without_a_key(self) -> None:
        self.assertIsNone(self.settings().deepl)
        settings = self.settings({"DEEPL_AUTH_KEY": "k:fx"})
        assert settings.deepl is not None
        self.assertEqual(settings.deepl.auth_key, "k:fx")

    def test_espeak_voice_that_does_not_exist(self) -> None:
        e = self.assertRaises(ConfigError, self.settings, espeak={"voices": {"fr": "frx"}})
        self.assertEqual(str(e), "--config: espeak.voices.fr: espeak-ng has no voice 'frx' (its voices for fr: fr, fr-be)")
        e = self.assertRaises(ConfigError, self.settings, espeak={"default_voice": "klingon"})
        self.assertIn("--config: espeak.default_voice: espeak-ng has no voice 'klingon'", str(e))
        self.settings(espeak={"voices": {"fr": "fr-BE+f3"}})


class CodesTests(SynchronousTestCase):
    def test_not_a_language(self) -> None:
        check_codes(["en", "es", "auto", "yue", "fil"])
        e = self.assertRaises(ConfigError, check_codes, ["xx", "yy"])
        self.assertTrue(str(e).startswith("--langs: 'xx' is not a language code"), str(e))


class CloudDirectionsTests(Installed):
    def test_supported(self) -> None:
        self.assertEqual(check_directions(CLOUD, self.settings(), [("en", "es"), ("fr", "de")]), [])

    def test_languages_an_engine_lacks(self) -> None:
        e = self.assertRaises(ConfigError, check_directions, CLOUD, self.settings(), [("en", "xh")])
        text = str(e)
        self.assertTrue(text.startswith("--langs: elevenlabs (model_id eleven_flash_v2_5) cannot speak 'xh'; "
                                        "it speaks ar bg"), text)
        self.assertIn("; deepgram (model nova-3) cannot recognise 'xh'; it recognises be bg", text)
        self.assertEqual(text.count("cannot recognise 'xh'"), 1)
        self.assertNotIn("\n", text)

    def test_the_model_decides(self) -> None:
        settings = self.settings(deepgram={"model": "nova-2"}, elevenlabs={"model_id": "eleven_multilingual_v2"})
        e = self.assertRaises(ConfigError, check_directions, CLOUD, settings, [("en", "vi")])
        self.assertIn("elevenlabs (model_id eleven_multilingual_v2) cannot speak 'vi'", str(e))
        self.assertNotIn("deepgram", str(e))
        e = self.assertRaises(ConfigError, check_directions, CLOUD, settings, [("en", "hr")])
        self.assertIn("deepgram (model nova-2) cannot recognise 'hr'", str(e))

    def test_models_not_known_are_not_checked(self) -> None:
        settings = self.settings(deepgram={"model": "custom-model"}, elevenlabs={"model_id": "eleven_v3"})
        self.assertEqual(check_directions(CLOUD, settings, [("en", "xh")]), [])

    def test_identifying_the_language_needs_whisper_or_flux_multi(self) -> None:
        e = self.assertRaises(ConfigError, check_directions, CLOUD, self.settings(), [("auto", "es")])
        self.assertIn("deepgram cannot recognise 'auto' with nova-3: identifying the caller's language takes "
                      'api = "flux" with flux_model = "flux-general-multi"', str(e))
        self.assertIn("the local Whisper recogniser", str(e))
        self.assertEqual(check_directions(dict(CLOUD, asr="local"), self.settings(), [("auto", "es")]), [])
        english_flux = self.settings(deepgram={"api": "flux"})
        e = self.assertRaises(ConfigError, check_directions, CLOUD, english_flux, [("auto", "es")])
        self.assertIn("cannot recognise 'auto' with flux-general-en", str(e))
        multi = self.settings(deepgram={"api": "flux", "flux_model": "flux-general-multi"})
        self.assertEqual(check_directions(CLOUD, multi, [("auto", "es")]), [])


class LocalDirectionsTests(Installed):
    def test_supported(self) -> None:
        self.assertEqual(check_directions(LOCAL, self.settings(), [("en", "es"), ("en-us", "es-mx")]), [])

    def test_no_apertium_pair(self) -> None:
        """--langs en,fr --engines local: refused at start-up, naming the pairs and the installed modes."""
        e = self.assertRaises(ConfigError, check_directions, LOCAL, self.settings(), [("en", "fr")])
        self.assertEqual(str(e), "--langs: apertium cannot translate en→fr or fr→en: its pairs are en→es, es→en "
                                 "([apertium] pairs; installed modes: cat-fra, eng-spa, fra-cat, spa-eng); to add a "
                                 "pair, install its Debian package and add en-fr = \"<mode>\" and fr-en = \"<mode>\" "
                                 "to [apertium] pairs; or set DEEPL_AUTH_KEY to translate with DeepL")

    def test_configured_pair_not_installed(self) -> None:
        settings = self.settings(apertium={"pairs": {"en-de": "eng-deu", "de-en": "deu-eng"}})
        e = self.assertRaises(ConfigError, check_directions, LOCAL, settings, [("en", "de")])
        self.assertIn("apertium cannot translate de→en: no Apertium mode deu-eng", str(e))

    def test_language_without_a_voice_is_a_warning(self) -> None:
        settings = self.settings(apertium={"pairs": {"fr-ca": "fra-cat", "ca-fr": "cat-fra"}})
        warnings = check_directions(LOCAL, settings, [("ca", "fr")])
        self.assertEqual(warnings, [
            "espeak-ng: no voice for 'fr' in [espeak] voices, so it is spoken with the default voice en-us; "
            "espeak-ng has fr, fr-be: add fr = \"fr\" to [espeak] voices",
            "espeak-ng: no voice for 'ca' in [espeak] voices, so it is spoken with the default voice en-us; "
            "espeak-ng has ca: add ca = \"ca\" to [espeak] voices",
        ])
        voiced = self.settings(apertium={"pairs": {"fr-ca": "fra-cat", "ca-fr": "cat-fra"}},
                               espeak={"voices": {"fr": "fr", "ca": "ca"}})
        self.assertEqual(check_directions(LOCAL, voiced, [("ca", "fr")]), [])

    def test_language_without_a_voice_and_no_default(self) -> None:
        settings = self.settings(apertium={"pairs": {"fr-ca": "fra-cat", "ca-fr": "cat-fra"}},
                                 espeak={"default_voice": "", "voices": {"ca": "ca"}})
        e = self.assertRaises(ConfigError, check_directions, LOCAL, settings, [("ca", "fr")])
        self.assertIn("--langs: espeak-ng cannot speak 'fr': no voice for it in [espeak] voices and no default_voice",
                      str(e))

    def test_language_deepl_lacks(self) -> None:
        kinds = {"asr": "local", "mt": "cloud", "tts": "local"}
        e = self.assertRaises(ConfigError, check_directions, kinds, self.settings(), [("en", "kl")])
        self.assertTrue(str(e).startswith("--langs: deepl cannot translate between en and kl: it has no 'kl'; "
                                          "it translates between any two of "), str(e))

    def test_mixed_stages(self) -> None:
        """auto with only DEEPL_AUTH_KEY: DeepL translates en→fr, espeak-ng speaks it."""
        kinds = {"asr": "local", "mt": "cloud", "tts": "local"}
        warnings = check_directions(kinds, self.settings(espeak={"voices": {"fr": "fr"}}), [("en", "fr")])
        self.assertEqual(warnings, [])


class TableTests(Installed):
    def test_table(self) -> None:
        table = language_table(self.settings(), "/models/whisper-base")
        lines = table.splitlines()
        self.assertTrue(all(len(line) <= 100 for line in lines), table)
        self.assertIn("Translation pairs, both ways:", table)
        cloud = next(line for line in lines if line.lstrip().startswith("cloud (--engines cloud)"))
        self.assertIn("any two of: bg cs da de el en es", cloud)
        local = next(line for line in lines if line.lstrip().startswith("local (--engines local)"))
        self.assertTrue(local.rstrip().endswith("en-es"), local)
        flat = " ".join(table.split())
        self.assertIn("deepgram (nova-3)", flat)
        self.assertIn("whisper (local)", flat)
        self.assertIn("and auto (identify the language)", flat)
        self.assertIn("en→es es→en (installed modes: cat-fra, eng-spa, fra-cat, spa-eng;", flat)
        self.assertIn("elevenlabs (eleven_flash_v2_5)", flat)
        self.assertIn("voices: en=en-us es=es; other languages with the default voice en-us", flat)
        self.assertIn("espeak-ng has voices for: ca en es fr", flat)

    def test_table_flux_multi_identifies(self) -> None:
        multi = self.settings(deepgram={"api": "flux", "flux_model": "flux-general-multi"})
        flat = " ".join(language_table(multi, None, "no Whisper model").split())
        self.assertIn("deepgram (flux-general-multi) de en es fr hi it ja nl pt ru, and auto (identify the language)",
                      flat)
        flat = " ".join(language_table(self.settings(deepgram={"api": "flux"}), None, "no Whisper model").split())
        self.assertIn("deepgram (flux-general-en) en whisper (local)", flat)

    def test_table_without_whisper(self) -> None:
        table = " ".join(language_table(self.settings(), None, "no Whisper model: install it").split())
        self.assertIn("not used: no Whisper model: install it", table)
        self.assertIn("en (pocketsphinx)", table)
        self.assertIn("none (see below)", table)
