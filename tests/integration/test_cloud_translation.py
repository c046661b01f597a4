"""
End to end with cloud engines: two simulated phones, the real bridge over
loopback UDP, and the fake Deepgram, DeepL and ElevenLabs servers.

Words travel as tones (tests/fakes/tonewords.py): phone 7777 "says" English
words, the fake Deepgram recognises them from the little-endian 16 kHz audio
the bridge sends, the fake DeepL translates them, the fake ElevenLabs speaks
the Spanish words, and phone 8888 must hear exactly that audio.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from xlbridge.audio.codecs import get_codec
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.engines.select import choose_engines
from xlbridge.events import (
    EngineStatusEvent,
    Event,
    PlaybackStarted,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.translate import TranslateSettings
from xlbridge.tools.phone import Phone, PhoneReport
from tests.fakes.deepgram import start_fake_deepgram
from tests.fakes.deepl import start_fake_deepl
from tests.fakes.elevenlabs import start_fake_elevenlabs
from tests.fakes.tonewords import decode_words, encode_words


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * 16000), dtype=np.int16)


class CloudTranslationTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.deepgram = start_fake_deepgram(reactor)
        self.deepl = start_fake_deepl(reactor)
        self.elevenlabs = start_fake_elevenlabs(reactor, chunk_interval=0.0)
        for fake in (self.deepgram, self.deepl, self.elevenlabs):
            self.addCleanup(fake.stop)
        self.environ = {
            "DEEPGRAM_API_KEY": "test-key",
            "DEEPL_AUTH_KEY": "test-key:fx",
            "ELEVENLABS_API_KEY": "test-key",
            "XLBRIDGE_DEEPGRAM_URL": self.deepgram.url,
            "XLBRIDGE_DEEPL_URL": self.deepl.url,
            "XLBRIDGE_ELEVENLABS_URL": self.elevenlabs.url,
        }
        self.events: list[Event] = []

    def start_bridge(self, settings: TranslateSettings, **engine_options: Any) -> BridgeService:
        choice = choose_engines("cloud", reactor, self.environ, engine_options)
        assert choice.engines is not None
        config = load_config({"ports": "7777=0,8888=0", "reply-codec": "slin16", "langs": "en,es"})
        bridge = BridgeService(
            config, reactor, pipeline_factory=translate_factory(choice.engines, settings),
            observers=[self.events.append], services=choice.services,
        )
        bridge.privilegedStartService()
        bridge.startService()
        self.addCleanup(bridge.stopService)
        return bridge

    def phone(self, bridge: BridgeService, ext: str, audio: np.ndarray, **kw: Any) -> Phone:
        port = bridge.listeners[ext].port
        assert port is not None
        p = Phone(reactor, audio, get_codec("slin16"), ("127.0.0.1", port.getHost().port), tail=1.5, **kw)
        listening = reactor.listenUDP(0, p, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        return p

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    @defer.inlineCallbacks
    def test_english_words_reach_the_partner_as_spanish_speech(self) -> Any:
        bridge = self.start_bridge(TranslateSettings(comfort_noise_dbfs=None))
        speech = np.concatenate([silence(0.3), encode_words("hello world"), silence(1.2)])
        a = self.phone(bridge, "7777", speech)
        b = self.phone(bridge, "8888", silence(len(speech) / 16000))
        reports: list[PhoneReport] = yield defer.gatherResults([a.play(), b.play()])
        heard_by_b = reports[1].audio

        finals = [e for e in self.of(TranscriptEvent) if e.is_final and e.text]
        self.assertEqual([(e.extension, e.text) for e in finals], [("7777", "hello world")])
        (tr,) = self.of(TranslationEvent)
        self.assertEqual((tr.text, tr.language), ("hola mundo", "es"))
        (started,) = self.of(PlaybackStarted)
        self.assertEqual(started.extension, "8888")
        self.assertIsNotNone(started.total_ms)
        self.assertEqual(decode_words(heard_by_b), ["hola", "mundo"])

        # Bit-exact: 8888 heard exactly the PCM the fake TTS sent, from the
        # first frame of the utterance on (slin16 reply, frame-aligned).
        pcm = encode_words("hola mundo")
        start = next(i for i in range(0, len(heard_by_b), 320) if heard_by_b[i : i + 320].any())
        self.assertEqual(heard_by_b[start : start + len(pcm)].tobytes(), pcm.tobytes())
        # ...and 7777 heard nothing but silence (8888 said nothing).
        self.assertFalse(reports[0].audio.any())

        # The fake Deepgram saw what the protocol demands.
        (conn,) = [c for c in self.deepgram.connections if c.params.get("language") == "en"]
        self.assertEqual((conn.params.get("encoding"), conn.params.get("sample_rate")), ("linear16", "16000"))
        self.assertEqual(conn.headers.get("authorization"), "Token test-key")
        self.assertEqual(conn.violations, [])

    @defer.inlineCallbacks
    def test_translation_failure_falls_back_to_the_original_voice(self) -> Any:
        bridge = self.start_bridge(TranslateSettings(comfort_noise_dbfs=None), deepl={"deadline_s": 0.5})
        self.deepl.faults.fail_5xx = 1000
        speech = np.concatenate([silence(0.3), encode_words("hello"), silence(0.8), encode_words("world"), silence(1.0)])
        a = self.phone(bridge, "7777", speech)
        b = self.phone(bridge, "8888", silence(len(speech) / 16000))
        reports = yield defer.gatherResults([a.play(), b.play()])
        down = [e for e in self.of(EngineStatusEvent) if e.state == "down"]
        self.assertEqual([(e.engine, e.fallback) for e in down], [("deepl", "relay")])
        self.assertIn("failed", [e.reason for e in self.of(UtteranceDropped)])
        # After the failure 8888 hears 7777's own voice: the second word.
        self.assertIn("world", decode_words(reports[1].audio))

    @defer.inlineCallbacks
    def test_echo_of_translated_speech_is_not_translated_back(self) -> Any:
        bridge = self.start_bridge(TranslateSettings(comfort_noise_dbfs=None, echo_guard="text"))
        # 8888 speaks Spanish; 7777 is a speakerphone that leaks what it
        # hears back into its microphone, 6 dB down, 150 ms later.
        speech = np.concatenate([silence(0.3), encode_words("hola mundo"), silence(2.5)])
        b = self.phone(bridge, "8888", speech)
        a: Optional[Phone] = self.phone(bridge, "7777", silence(len(speech) / 16000), echo_gain_db=-6.0, echo_delay_ms=150)
        assert a is not None
        reports = yield defer.gatherResults([a.play(), b.play()])
        self.assertEqual(decode_words(reports[0].audio), ["hello", "world"])
        # 7777's recogniser heard the echo ...
        finals_7777 = [e.text for e in self.of(TranscriptEvent) if e.is_final and e.text and e.extension == "7777"]
        self.assertEqual(finals_7777, ["hello world"])
        # ... and the guard kept it from going back to 8888.
        self.assertEqual([e.reason for e in self.of(UtteranceDropped)], ["echo"])
        self.assertEqual([t.extension for t in self.of(TranslationEvent)], ["8888"])
        self.assertFalse(reports[1].audio.any())
