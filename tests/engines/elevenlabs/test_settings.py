"""Tests for :mod:`xlbridge.engines.elevenlabs.settings`."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.elevenlabs.settings import DEFAULT_VOICE, DEFAULT_VOICES, ElevenLabsSettings

KEY = "sk_live_0123456789abcdef0123456789abcdef"


class SettingsTests(SynchronousTestCase):
    def test_from_env(self) -> None:
        s = ElevenLabsSettings.from_env(
            {"ELEVENLABS_API_KEY": KEY, "XLBRIDGE_ELEVENLABS_URL": "http://127.0.0.1:8803/"},
            model_id="eleven_turbo_v2_5",
        )
        self.assertEqual((s.api_key, s.base_url, s.model_id), (KEY, "http://127.0.0.1:8803", "eleven_turbo_v2_5"))
        self.assertEqual(s.ws_base_url, "ws://127.0.0.1:8803")

    def test_defaults(self) -> None:
        s = ElevenLabsSettings.from_env({})
        self.assertEqual(s.base_url, "https://api.elevenlabs.io")
        self.assertEqual(s.ws_base_url, "wss://api.elevenlabs.io")
        self.assertEqual((s.model_id, s.output_format), ("eleven_flash_v2_5", "pcm_16000"))
        self.assertEqual(s.voice_for("en-GB"), DEFAULT_VOICES["en"])
        self.assertEqual(s.voice_for("xx"), DEFAULT_VOICE)
        self.assertEqual(s.language_code_for("pt-BR"), "pt")
        self.assertEqual((s.timeout_s, s.first_byte_timeout_s, s.max_connections), (10.0, 3.0, 32))

    def test_first_byte_timeout(self) -> None:
        """
        Read from the table like ``timeout_s``; the 3 s default shrinks to a
        shorter ``timeout_s`` (so an older config stays valid).
        """
        self.assertEqual(ElevenLabsSettings.from_env({}, first_byte_timeout_s=0.5).first_byte_timeout_s, 0.5)
        self.assertEqual(ElevenLabsSettings.from_env({}, timeout_s=2).first_byte_timeout_s, 2.0)
        self.assertEqual(ElevenLabsSettings.from_env({}, timeout_s=20).first_byte_timeout_s, 3.0)
        s = ElevenLabsSettings.from_env({}, timeout_s=5, first_byte_timeout_s=5)
        self.assertEqual((s.timeout_s, s.first_byte_timeout_s), (5, 5))

    def test_rejects(self) -> None:
        for bad in (dict(base_url="ftp://x"), dict(output_format="mp3_44100_128"),
                    dict(transport="grpc"), dict(inactivity_timeout=181), dict(timeout_s=0),
                    dict(first_byte_timeout_s=0), dict(first_byte_timeout_s=10.5)):
            self.assertRaises(ValueError, ElevenLabsSettings, **bad)

    def test_repr_hides_key(self) -> None:
        self.assertNotIn(KEY, repr(ElevenLabsSettings(api_key=KEY)))
        self.assertIn("redacted", repr(ElevenLabsSettings(api_key=KEY)))

    def test_websocket_base_means_the_same_host(self) -> None:
        s = ElevenLabsSettings(base_url="wss://eu.example.test/")
        self.assertEqual((s.base_url, s.ws_base_url), ("https://eu.example.test", "wss://eu.example.test"))

    def test_language_code_only_for_models_that_take_one(self) -> None:
        self.assertEqual(ElevenLabsSettings(model_id="eleven_turbo_v2_5").language_code_for("es_MX"), "es")
        self.assertIsNone(ElevenLabsSettings(model_id="eleven_multilingual_v2").language_code_for("es"))
        self.assertEqual(ElevenLabsSettings(voices={"es-MX": "v-mx"}).voice_for("es-MX"), "v-mx")


class MessagesTests(SynchronousTestCase):
    """Every message about [elevenlabs] names elevenlabs.<key> or the variable."""

    def test_typo_is_one_error_naming_the_key(self) -> None:
        from xlbridge.errors import ConfigError

        for environ in ({}, {"ELEVENLABS_API_KEY": KEY}):
            e = self.assertRaises(ConfigError, ElevenLabsSettings.from_env, environ, model="eleven_v3")
            self.assertTrue(str(e).startswith("--config: elevenlabs.model: unknown setting; did you mean model_id?"),
                            str(e))

    def test_bad_values_name_the_key(self) -> None:
        from xlbridge.errors import ConfigError

        cases = [
            ({"base_url": "ftp://x"}, "elevenlabs.base_url: must be http(s)://host[:port]"),
            ({"transport": "grpc"}, "elevenlabs.transport: must be one of http, websocket, got 'grpc'"),
            ({"output_format": "mp3_44100_128"}, "elevenlabs.output_format: must be one of pcm_16000"),
            ({"inactivity_timeout": 181}, "elevenlabs.inactivity_timeout: must be 1..180 s"),
            ({"inactivity_timeout": "20"}, "elevenlabs.inactivity_timeout: expected a whole number"),
            ({"timeout_s": 0}, "elevenlabs.timeout_s: must be > 0"),
            ({"timeout_s": "ten"}, "elevenlabs.timeout_s: expected a number, got 'ten'"),
            ({"first_byte_timeout_s": 0}, "elevenlabs.first_byte_timeout_s: must be > 0, got 0"),
            ({"first_byte_timeout_s": -1.0}, "elevenlabs.first_byte_timeout_s: must be > 0"),
            ({"first_byte_timeout_s": "3"}, "elevenlabs.first_byte_timeout_s: expected a number, got '3'"),
            ({"first_byte_timeout_s": True}, "elevenlabs.first_byte_timeout_s: expected a number"),
            ({"first_byte_timeout_s": 11}, "elevenlabs.first_byte_timeout_s: must be <= timeout_s (10.0), got 11"),
            ({"timeout_s": 2, "first_byte_timeout_s": 2.5},
             "elevenlabs.first_byte_timeout_s: must be <= timeout_s (2), got 2.5"),
            ({"retries": 9}, "elevenlabs.retries: must be 0..3"),
            ({"retry_delay_s": -1}, "elevenlabs.retry_delay_s: must be >= 0"),
            ({"max_connections": 1.5}, "elevenlabs.max_connections: expected a whole number"),
            ({"voices": "George"}, "elevenlabs.voices: expected a table of language = voice id"),
            ({"voices": {"es": 3}}, "elevenlabs.voices.es: expected a voice id"),
            ({"voice_settings": 0.5}, "elevenlabs.voice_settings: expected a table"),
            ({"ws_standby": "yes"}, "elevenlabs.ws_standby: expected true or false"),
            ({"model_id": ""}, "elevenlabs.model_id: must not be empty"),
        ]
        for table, words in cases:
            e = self.assertRaises(ConfigError, ElevenLabsSettings.from_env, {}, **table)
            self.assertIn(f"--config: {words}", str(e))

    def test_bad_url_from_the_environment_names_the_variable(self) -> None:
        from xlbridge.errors import ConfigError

        e = self.assertRaises(ConfigError, ElevenLabsSettings.from_env, {"XLBRIDGE_ELEVENLABS_URL": "ftp://x"})
        self.assertTrue(str(e).startswith("XLBRIDGE_ELEVENLABS_URL: must be http(s)://"), str(e))

    def test_model_languages(self) -> None:
        from xlbridge.engines.elevenlabs.settings import model_languages

        flash = model_languages("eleven_flash_v2_5")
        multi = model_languages("eleven_multilingual_v2")
        assert flash is not None and multi is not None
        self.assertEqual(flash - multi, {"hu", "no", "vi"})
        self.assertIn("fil", multi)
        self.assertEqual(model_languages("eleven_turbo_v2"), frozenset({"en"}))
        self.assertIsNone(model_languages("eleven_v3"))
