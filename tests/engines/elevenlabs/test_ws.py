"""
Tests for :mod:`xlbridge.engines.elevenlabs.ws`: the client over WebSocket
``stream-input`` against the fake server on loopback (the shared body of
:class:`~tests.engines.elevenlabs.harness.ClientTests`, plus what only the
WebSocket has: the init message and spare sockets).
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.engines.elevenlabs.harness import KEY, ClientTests, Heard, attempts, sleep
from tests.fakes.elevenlabs import RecordedRequest
from tests.fakes.tonewords import decode_words
from xlbridge.engines.elevenlabs.settings import DEFAULT_VOICE


class WebSocketClientTests(ClientTests, TestCase):
    transport = "websocket"
    timeout = 20

    def check_shape(self, rec: RecordedRequest, text: str, language: str) -> None:
        self.assertEqual(rec.path, f"/v1/text-to-speech/{rec.voice_id}/stream-input")
        self.assertEqual(rec.params, {
            "model_id": "eleven_flash_v2_5", "output_format": "pcm_16000",
            "language_code": language, "inactivity_timeout": "20",
        })
        self.assertEqual(rec.headers["xi-api-key"], KEY)
        self.assertEqual(rec.messages, [{"text": " "}, {"text": text + " ", "flush": True}, {"text": ""}])
        self.assertEqual(rec.close_code, 1000)

    @inlineCallbacks
    def test_voice_settings_only_in_init(self) -> Any:
        vs = {"stability": 0.5, "similarity_boost": 0.75}
        yield self.make(voice_settings=vs).synthesize("bye", "en", Heard())
        rec = attempts(self.fake)[0]
        self.assertEqual(rec.messages[0], {"text": " ", "voice_settings": vs})
        self.assertNotIn("voice_settings", rec.messages[1])

    @inlineCallbacks
    def test_spare_socket_is_kept_alive_and_used(self) -> Any:
        """
        After audio for a (voice, language), a spare socket is opened and
        initialised; idle, it sends " " every half inactivity_timeout, so the
        server (which closes idle sockets) keeps it; the next utterance
        uses it.
        """
        tts = self.make(inactivity_timeout=1)
        yield tts.synthesize("bye", "en", Heard())
        yield sleep(1.6)
        spare = self.fake.requests[-1]
        self.assertEqual(len(self.fake.requests), 2)
        self.assertEqual(spare.messages[0], {"text": " "})
        self.assertGreaterEqual(spare.messages[1:].count({"text": " "}), 2)
        self.assertIsNone(spare.close_code)
        heard = Heard()
        yield tts.synthesize("hello", "en", heard)
        self.assertEqual(spare.text, "hello")
        self.assertEqual(decode_words(heard.audio), ["hello"])

    @inlineCallbacks
    def test_no_spares_when_disabled(self) -> Any:
        tts = self.make(ws_standby=False)
        yield tts.synthesize("bye", "en", Heard())
        yield sleep(0.05)
        self.assertEqual(len(self.fake.requests), 1)

    @inlineCallbacks
    def test_fake_closes_idle_socket(self) -> Any:
        """The fake enforces T5: no message for inactivity_timeout -> 1008."""
        closed: Deferred[tuple[int, str]] = Deferred()

        class Idle(WebSocketClientProtocol):
            def onOpen(self) -> None:
                self.sendMessage(b'{"text": " "}')

            def onClose(self, wasClean: bool, code: int, reason: str) -> None:
                closed.callback((code, reason))

        url = self.fake.url.replace("http", "ws") + (
            f"/v1/text-to-speech/{DEFAULT_VOICE}/stream-input?output_format=pcm_16000"
            "&model_id=eleven_flash_v2_5&inactivity_timeout=1"
        )
        factory = WebSocketClientFactory(url, headers={"xi-api-key": KEY}, reactor=reactor)
        factory.protocol = Idle
        reactor.connectTCP("127.0.0.1", self.fake.port, factory)
        code, reason = yield closed
        self.assertEqual(code, 1008)
        self.assertIn("timeout of 1 seconds", reason)
