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

    def test_rejects(self) -> None:
        for bad in (dict(base_url="ftp://x"), dict(output_format="mp3_44100_128"),
                    dict(transport="grpc"), dict(inactivity_timeout=181), dict(timeout_s=0)):
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
