"""
Tests for :mod:`xlbridge.engines.elevenlabs.http`: the client over HTTP
streaming against the fake server on loopback (the shared body of
:class:`~tests.engines.elevenlabs.harness.ClientTests`, plus what only HTTP
has: the request body and the pooled connection).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.engines.elevenlabs.harness import KEY, ClientTests, Heard
from tests.fakes.elevenlabs import RecordedRequest


class HTTPClientTests(ClientTests, TestCase):
    transport = "http"
    timeout = 20

    def check_shape(self, rec: RecordedRequest, text: str, language: str) -> None:
        self.assertEqual(rec.path, f"/v1/text-to-speech/{rec.voice_id}/stream")
        self.assertEqual(rec.params, {"output_format": "pcm_16000"})
        self.assertEqual(rec.headers["xi-api-key"], KEY)
        self.assertTrue(rec.headers["content-type"].startswith("application/json"))
        self.assertEqual(rec.body, {"text": text, "model_id": "eleven_flash_v2_5", "language_code": language})

    @inlineCallbacks
    def test_connection_reused(self) -> Any:
        tts = self.make()
        for _ in range(3):
            yield tts.synthesize("bye", "en", Heard())
        self.assertEqual([r.connection_id for r in self.fake.requests], [1, 1, 1])
        self.assertEqual([r.new_connection for r in self.fake.requests], [True, False, False])

    @inlineCallbacks
    def test_voice_settings_in_body(self) -> Any:
        vs = {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.1}
        yield self.make(voice_settings=vs).synthesize("bye", "en", Heard())
        self.assertEqual(self.fake.requests[0].body["voice_settings"], vs)
