"""
Tests for :mod:`xlbridge.engines.deepgram.settings`: settings, the
``/v1/listen`` URL, the reconnect delay and error classification; no I/O.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.engines.deepgram.fixtures import KEY
from xlbridge.engines.base import EngineAuthError, EngineRequestError, EngineUnavailable
from xlbridge.engines.deepgram.settings import (
    DeepgramSettings,
    backoff_delay,
    classify_close,
    classify_upgrade_failure,
    listen_url,
    model_languages,
)
from xlbridge.errors import ConfigError


class SettingsTests(SynchronousTestCase):
    def test_repr_redacts_key(self) -> None:
        s = DeepgramSettings(api_key=KEY)
        self.assertNotIn(KEY, repr(s))
        self.assertIn("redacted", repr(s))

    def test_from_env(self) -> None:
        s = DeepgramSettings.from_env({"DEEPGRAM_API_KEY": KEY, "XLBRIDGE_DEEPGRAM_URL": "ws://127.0.0.1:9"})
        self.assertEqual((s.api_key, s.base_url), (KEY, "ws://127.0.0.1:9"))
        self.assertEqual(DeepgramSettings.from_env({}).base_url, "wss://api.deepgram.com")

    def test_from_env_overrides_win_none_ignored(self) -> None:
        env = {"DEEPGRAM_API_KEY": KEY, "XLBRIDGE_DEEPGRAM_URL": "ws://env:1"}
        s = DeepgramSettings.from_env(env, base_url=None, model="nova-2", chunk_ms=20)
        self.assertEqual((s.base_url, s.model, s.chunk_ms), ("ws://env:1", "nova-2", 20))
        self.assertEqual(DeepgramSettings.from_env(env, base_url="ws://cli:2").base_url, "ws://cli:2")

    def test_validation(self) -> None:
        for bad in [dict(chunk_ms=10), dict(chunk_ms=120), dict(chunk_ms=101), dict(keepalive_s=12),
                    dict(base_url="https://api.deepgram.com"), dict(backoff_initial_s=5, backoff_max_s=1),
                    dict(endpointing=0), dict(interim_results=False), dict(finish_timeout_s=0)]:
            self.assertRaises(ConfigError, DeepgramSettings, **bad)
        DeepgramSettings(interim_results=False, utterance_end_ms=None, endpointing=False)

    def test_listen_url(self) -> None:
        url = listen_url(DeepgramSettings(api_key=KEY, base_url="wss://dg.example/"), "es")
        self.assertTrue(url.startswith("wss://dg.example/v1/listen?"))
        self.assertNotIn(KEY, url)
        query = dict(p.split("=") for p in url.split("?", 1)[1].split("&"))
        self.assertEqual(query, {
            "model": "nova-3", "language": "es", "encoding": "linear16", "sample_rate": "16000",
            "channels": "1", "interim_results": "true", "endpointing": "300", "utterance_end_ms": "1000",
            "vad_events": "true", "smart_format": "true", "punctuate": "true"})

    def test_listen_url_options(self) -> None:
        s = DeepgramSettings(base_url="ws://h:1/v1/listen", endpointing=False, utterance_end_ms=None,
                             vad_events=False, extra_params=(("keyterm", "hola"),))
        url = listen_url(s, "en")
        self.assertTrue(url.startswith("ws://h:1/v1/listen?"))
        self.assertIn("endpointing=false", url)
        self.assertIn("vad_events=false", url)
        self.assertIn("keyterm=hola", url)
        self.assertNotIn("utterance_end_ms", url)


class PolicyTests(SynchronousTestCase):
    def test_backoff_grows_and_caps(self) -> None:
        top = [backoff_delay(n, 0.5, 4.0, 2.0, random=lambda: 1.0) for n in range(1, 8)]
        self.assertEqual(top, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0])
        low = [backoff_delay(n, 0.5, 4.0, 2.0, random=lambda: 0.0) for n in range(1, 5)]
        self.assertEqual(low, [0.25, 0.5, 1.0, 2.0])
        self.assertLessEqual(backoff_delay(10_000, 0.5, 4.0, 2.0, random=lambda: 0.999), 4.0)

    def test_backoff_jitter(self) -> None:
        values = iter([0.1, 0.9])
        a = backoff_delay(3, 1.0, 60.0, 2.0, random=lambda: next(values))
        b = backoff_delay(3, 1.0, 60.0, 2.0, random=lambda: next(values))
        self.assertNotEqual(a, b)
        self.assertTrue(2.0 <= a < b <= 4.0)

    def test_upgrade_failures(self) -> None:
        e = classify_upgrade_failure(401, "Invalid credentials.", "rid-1", secret=KEY)
        self.assertIsInstance(e, EngineAuthError)
        self.assertFalse(e.retryable)
        self.assertIn("Invalid credentials.", str(e))
        self.assertIn("rid-1", str(e))
        self.assertIsInstance(classify_upgrade_failure(403, None), EngineAuthError)
        self.assertIsInstance(classify_upgrade_failure(400, "bad"), EngineRequestError)
        for status in (429, 500, 503):
            e = classify_upgrade_failure(status, None)
            self.assertIsInstance(e, EngineUnavailable)
            self.assertTrue(e.retryable)
        self.assertNotIn(KEY, str(classify_upgrade_failure(401, f"bad key {KEY}", secret=KEY)))

    def test_close_reasons(self) -> None:
        e = classify_close(1011, "NET-0001 Deepgram did not receive audio")
        self.assertIsInstance(e, EngineUnavailable)
        self.assertIn("NET-0001", str(e))
        self.assertIsInstance(classify_close(1008, "DATA-0000 cannot decode"), EngineRequestError)
        self.assertIsInstance(classify_close(1006, "connection was closed uncleanly"), EngineUnavailable)


class MessagesTests(SynchronousTestCase):
    """Every message about [deepgram] names deepgram.<key>, with or without a key."""

    def test_typo_is_one_error_naming_the_key(self) -> None:
        for environ in ({}, {"DEEPGRAM_API_KEY": KEY}):
            e = self.assertRaises(ConfigError, DeepgramSettings.from_env, environ, modle="nova-2")
            self.assertTrue(str(e).startswith("--config: deepgram.modle: unknown setting; did you mean model?"),
                            str(e))
            self.assertIn("endpointing", str(e))

    def test_bad_values_name_the_key(self) -> None:
        cases = [
            ({"chunk_ms": 10}, "deepgram.chunk_ms: must be 20..100 ms"),
            ({"chunk_ms": "20"}, "deepgram.chunk_ms: expected a whole number"),
            ({"keepalive_s": 12}, "deepgram.keepalive_s: must be between 0 and 10 s"),
            ({"model": ""}, "deepgram.model: must not be empty"),
            ({"model": 3}, "deepgram.model: expected a string"),
            ({"base_url": "https://x"}, "deepgram.base_url: must start with wss:// or ws://"),
            ({"endpointing": 0}, "deepgram.endpointing: must be a positive number of ms or false"),
            ({"endpointing": True}, "deepgram.endpointing"),
            ({"utterance_end_ms": 0}, "deepgram.utterance_end_ms: must be a positive number of ms"),
            ({"interim_results": False}, "deepgram.utterance_end_ms: Deepgram needs interim_results = true"),
            ({"interim_results": "yes"}, "deepgram.interim_results: expected true or false"),
            ({"backoff_initial_s": 5, "backoff_max_s": 1}, "deepgram.backoff_initial_s: must be > 0 and at most"),
            ({"backoff_factor": 0.5}, "deepgram.backoff_factor: must be >= 1"),
            ({"finish_timeout_s": 0}, "deepgram.finish_timeout_s: must be > 0"),
            ({"extra_params": "keyterm"}, "deepgram.extra_params: expected a table of query parameters"),
        ]
        for table, words in cases:
            e = self.assertRaises(ConfigError, DeepgramSettings.from_env, {}, **table)
            self.assertIn(f"--config: {words}", str(e))
            self.assertNotIn("--deepgram", str(e))

    def test_bad_url_from_the_environment_names_the_variable(self) -> None:
        e = self.assertRaises(ConfigError, DeepgramSettings.from_env, {"XLBRIDGE_DEEPGRAM_URL": "http://x"})
        self.assertTrue(str(e).startswith("XLBRIDGE_DEEPGRAM_URL: must start with wss:// or ws://"), str(e))

    def test_extra_params_from_a_table(self) -> None:
        s = DeepgramSettings.from_env({}, extra_params={"keyterm": "hola", "tag": 3})
        self.assertEqual(s.extra_params, (("keyterm", "hola"), ("tag", "3")))
        self.assertEqual(DeepgramSettings(extra_params=[["a", "b"]]).extra_params, (("a", "b"),))

    def test_missing_key_names_the_variable(self) -> None:
        from xlbridge.engines.deepgram.factory import deepgram_asr_factory

        e = self.assertRaises(ConfigError, deepgram_asr_factory, None, DeepgramSettings())  # type: ignore[arg-type]
        self.assertTrue(str(e).startswith("DEEPGRAM_API_KEY: no Deepgram API key"), str(e))


class LanguagesTests(SynchronousTestCase):
    def test_models(self) -> None:
        nova3 = model_languages("nova-3")
        assert nova3 is not None
        self.assertTrue({"en", "es", "fr", "de", "zh", "uk"} <= nova3)
        self.assertNotIn("xh", nova3)
        self.assertEqual(model_languages("nova-3-medical"), frozenset({"en"}))
        nova2 = model_languages("nova-2")
        assert nova2 is not None
        self.assertIn("th", nova2)
        self.assertIsNone(model_languages("whisper-large"))
