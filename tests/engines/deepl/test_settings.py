"""
Tests for :mod:`xlbridge.engines.deepl.settings`: bridge language codes in
DeepL's terms, the ``context`` builder, and :class:`DeepLSettings` from the
environment (validated, the key never shown).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.deepl.mt import DeepLMT
from xlbridge.engines.deepl.settings import DeepLSettings, build_context, deepl_source_lang, deepl_target_lang
from xlbridge.engines.threads import ThreadPoolService
from xlbridge.errors import ConfigError

from tests.engines.deepl.loopback import KEY


class LanguageTests(SynchronousTestCase):
    """
    Bridge codes → DeepL codes.
    """

    def test_targets(self) -> None:
        s = DeepLSettings(auth_key=KEY)
        table = {
            "en": "EN-US",
            "EN": "EN-US",
            "en-us": "EN-US",
            "en-gb": "EN-GB",
            "en_GB": "EN-GB",
            "en-au": "EN-GB",
            "es": "ES",
            "es-es": "ES",
            "es-419": "ES-419",
            "es-mx": "ES-419",
            "pt": "PT-BR",
            "pt-br": "PT-BR",
            "pt-pt": "PT-PT",
            "de": "DE",
            "de-at": "DE",
            "fr": "FR",
            "fr-ca": "FR",
            "it": "IT",
            "ja": "JA",
            "zh": "ZH-HANS",
            "zh-cn": "ZH-HANS",
            "zh-tw": "ZH-HANT",
            "zh-hant": "ZH-HANT",
            "no": "NB",
            "nb": "NB",
            "uk": "UK",
        }
        for code, expected in table.items():
            self.assertEqual(deepl_target_lang(code, s), expected, code)

    def test_configurable_variants(self) -> None:
        s = DeepLSettings(auth_key=KEY, english_variant="en-gb", portuguese_variant="PT-PT")
        self.assertEqual(deepl_target_lang("en", s), "EN-GB")
        self.assertEqual(deepl_target_lang("en-us", s), "EN-US")
        self.assertEqual(deepl_target_lang("pt", s), "PT-PT")
        self.assertEqual(deepl_target_lang("pt-br", s), "PT-BR")

    def test_sources_are_base_codes(self) -> None:
        table = {
            "en": "EN", "en-gb": "EN", "en-US": "EN", "es": "ES", "es-419": "ES",
            "pt-br": "PT", "pt": "PT", "de": "DE", "zh-hant": "ZH", "no": "NB",
        }
        for code, expected in table.items():
            self.assertEqual(deepl_source_lang(code), expected, code)

    def test_unknown(self) -> None:
        s = DeepLSettings(auth_key=KEY)
        for code in ("xx", "", "klingon"):
            self.assertRaises(ValueError, deepl_target_lang, code, s)
            self.assertRaises(ValueError, deepl_source_lang, code)


class ContextTests(SynchronousTestCase):
    """
    Earlier sentences → the ``context`` field.
    """

    def test_last_sentences_oldest_first(self) -> None:
        s = DeepLSettings(auth_key=KEY, context_sentences=2)
        self.assertEqual(build_context(["One.", "Two.", " ", "Three."], s), "Two. Three.")

    def test_none(self) -> None:
        self.assertIsNone(build_context([], DeepLSettings(auth_key=KEY)))
        self.assertIsNone(build_context(["a"], DeepLSettings(auth_key=KEY, context_sentences=0)))
        self.assertIsNone(build_context(["a"], DeepLSettings(auth_key=KEY, context_max_chars=0)))

    def test_bounded_keeps_most_recent(self) -> None:
        s = DeepLSettings(auth_key=KEY, context_max_chars=20)
        ctx = build_context(["old words here", "newest sentence is this"], s)
        assert ctx is not None
        self.assertLessEqual(len(ctx), 20)
        self.assertTrue(ctx.endswith("is this"))
        self.assertFalse(ctx.startswith(" "))
        self.assertIn(ctx.split()[0], "newest sentence is this".split())


class SettingsTests(SynchronousTestCase):
    """
    :class:`DeepLSettings` from the environment, validation, redaction.
    """

    def test_from_env(self) -> None:
        s = DeepLSettings.from_env({"DEEPL_AUTH_KEY": "abc:fx", "XLBRIDGE_DEEPL_URL": "http://127.0.0.1:9"})
        self.assertEqual((s.auth_key, s.server_url), ("abc:fx", "http://127.0.0.1:9"))
        self.assertEqual(s.model_type, "latency_optimized")
        self.assertEqual(s.deadline_s, 4.0)
        self.assertEqual(DeepLSettings.from_env({"DEEPL_API_KEY": "k2"}).auth_key, "k2")
        self.assertIsNone(DeepLSettings.from_env({"DEEPL_API_KEY": "k2"}).server_url)

    def test_overrides(self) -> None:
        s = DeepLSettings.from_env(
            {"DEEPL_AUTH_KEY": "abc", "XLBRIDGE_DEEPL_URL": "https://api.deepl.com"},
            server_url=None,
            formality="prefer_less",
            deadline_s=2,
        )
        self.assertEqual(s.server_url, "https://api.deepl.com")
        self.assertEqual(s.formality, "prefer_less")
        self.assertEqual(s.deadline_s, 2.0)

    def test_no_key(self) -> None:
        e = self.assertRaises(ConfigError, DeepLSettings.from_env, {})
        self.assertIn("DEEPL_AUTH_KEY", str(e))

    def test_bad_values(self) -> None:
        for bad in (
            {"formality": "polite"},
            {"model_type": "fast"},
            {"english_variant": "EN-AU"},
            {"portuguese_variant": "PT"},
            {"deadline_s": 0},
            {"context_sentences": -1},
            {"server_url": "api.deepl.com"},
            {"server_url": "ftp://x"},
        ):
            self.assertRaises(ConfigError, DeepLSettings, auth_key=KEY, **bad)

    def test_server_url_with_path(self) -> None:
        self.assertEqual(
            DeepLSettings(auth_key=KEY, server_url="http://proxy/deepl").server_url, "http://proxy/deepl/"
        )

    def test_key_redacted(self) -> None:
        s = DeepLSettings(auth_key="very-secret-key:fx")
        self.assertNotIn("very-secret", repr(s))
        clock = Clock()
        mt = DeepLMT(clock, ThreadPoolService(clock), s)  # type: ignore[arg-type]
        self.assertNotIn("very-secret", repr(mt))


class MessagesTests(SynchronousTestCase):
    """Every message about [deepl] names deepl.<key> or the variable, never an --deepl-... option."""

    def test_typo_is_one_error_naming_the_key(self) -> None:
        for environ in ({}, {"DEEPL_AUTH_KEY": KEY}):
            e = self.assertRaises(ConfigError, DeepLSettings.from_env, environ, formalty="more")
            self.assertTrue(str(e).startswith("--config: deepl.formalty: unknown setting; did you mean formality?"),
                            str(e))

    def test_bad_values_name_the_key(self) -> None:
        cases = [
            ({"formality": "polite"}, "deepl.formality: 'polite' is not one of default, more, less"),
            ({"model_type": "fast"}, "deepl.model_type: 'fast' is not one of"),
            ({"english_variant": "EN-AU"}, "deepl.english_variant: 'EN-AU' is not one of EN-US, EN-GB"),
            ({"portuguese_variant": "PT"}, "deepl.portuguese_variant"),
            ({"deadline_s": 0}, "deepl.deadline_s: must be > 0"),
            ({"deadline_s": "soon"}, "deepl.deadline_s: expected a number, got 'soon'"),
            ({"context_sentences": -1}, "deepl.context_sentences: must be >= 0"),
            ({"context_sentences": 1.5}, "deepl.context_sentences: expected a whole number"),
            ({"context_max_chars": True}, "deepl.context_max_chars: expected a whole number"),
            ({"backoff_initial_s": 0}, "deepl.backoff_initial_s: must be > 0"),
            ({"server_url": "ftp://x"}, "deepl.server_url: 'ftp://x' is not a base URL"),
            ({"server_url": 3}, "deepl.server_url: expected a string"),
        ]
        for table, words in cases:
            e = self.assertRaises(ConfigError, DeepLSettings.from_env, {"DEEPL_AUTH_KEY": KEY}, **table)
            self.assertIn(f"--config: {words}", str(e))

    def test_bad_url_from_the_environment_names_the_variable(self) -> None:
        e = self.assertRaises(ConfigError, DeepLSettings.from_env,
                              {"DEEPL_AUTH_KEY": KEY, "XLBRIDGE_DEEPL_URL": "ftp://x"})
        self.assertTrue(str(e).startswith("XLBRIDGE_DEEPL_URL: 'ftp://x' is not a base URL"), str(e))

    def test_no_key_names_the_variable(self) -> None:
        e = self.assertRaises(ConfigError, DeepLSettings.from_env, {})
        self.assertEqual(str(e), "DEEPL_AUTH_KEY: no DeepL key: set it, or auth_key in [deepl]")


class LanguageListTests(SynchronousTestCase):
    def test_deepl_knows(self) -> None:
        from xlbridge.engines.deepl.settings import LANGUAGES, deepl_knows

        for code in ("en", "es-MX", "pt_br", "no", "zh-hant"):
            self.assertTrue(deepl_knows(code), code)
        self.assertFalse(deepl_knows("xx"))
        self.assertTrue({"en", "es", "fr", "de", "ja"} <= LANGUAGES)
