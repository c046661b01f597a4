"""
End to end with Deepgram Flux and speculative translation: two simulated
phones, the real bridge over loopback UDP, the fake Flux server (eager end
of turn after 150 ms of silence, end of turn after 260 ms), the fake DeepL
and the fake ElevenLabs.

Words travel as tones (tests/fakes/tonewords.py).  Phone 7777 speaks
English; phone 8888 must hear the Spanish speech of each turn once, in
order, and never the speech of a speculation the speaker withdrew by going
on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.fakes.deepgram_flux import start_fake_flux
from tests.fakes.deepl import start_fake_deepl
from tests.fakes.elevenlabs import start_fake_elevenlabs
from tests.fakes.tonewords import decode_words, encode_words
from tests.integration.test_cloud_translation import silence
from xlbridge.audio.codecs import get_codec
from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.engines.select import choose_engines
from xlbridge.events import (
    EngineStatusEvent, Event, PlaybackStarted, SpeculationEvent, TranscriptEvent, UtteranceDropped,
)
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.translate import TranslateSettings
from xlbridge.tools.phone import Phone, PhoneReport

FLUX = {"api": "flux", "eot_threshold": 0.7, "eager_eot_threshold": 0.5}


class FluxTranslationTests(TestCase):
    timeout = 30

    def setUp(self) -> None:
        self.flux = start_fake_flux(reactor)
        self.deepl = start_fake_deepl(reactor)
        self.elevenlabs = start_fake_elevenlabs(reactor, chunk_interval=0.0)
        for fake in (self.flux, self.deepl, self.elevenlabs):
            self.addCleanup(fake.stop)
        self.environ = {
            "DEEPGRAM_API_KEY": "test-key", "DEEPL_AUTH_KEY": "test-key:fx", "ELEVENLABS_API_KEY": "test-key",
            "XLBRIDGE_DEEPGRAM_URL": self.flux.url, "XLBRIDGE_DEEPL_URL": self.deepl.url,
            "XLBRIDGE_ELEVENLABS_URL": self.elevenlabs.url,
        }
        self.events: list[Event] = []

    def start_bridge(self, deepgram: dict[str, Any], settings: TranslateSettings, langs: str = "en,es") -> BridgeService:
        # Spanish legs need the multilingual model: both legs use it here.
        options = {"deepgram": {**deepgram, "flux_model": "flux-general-multi"}}
        choice = choose_engines("cloud", reactor, self.environ, options)
        assert choice.engines is not None
        config = load_config({"ports": "7777=0,8888=0", "reply-codec": "slin16", "langs": langs})
        bridge = BridgeService(
            config, reactor, pipeline_factory=translate_factory(choice.engines, settings),
            observers=[self.events.append], services=choice.services,
        )
        bridge.privilegedStartService()
        bridge.startService()
        self.addCleanup(bridge.stopService)
        return bridge

    def phone(self, bridge: BridgeService, ext: str, audio: np.ndarray) -> Phone:
        port = bridge.listeners[ext].port
        assert port is not None
        p = Phone(reactor, audio, get_codec("slin16"), ("127.0.0.1", port.getHost().port), tail=1.5)
        listening = reactor.listenUDP(0, p, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        return p

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    @defer.inlineCallbacks
    def talk(self, speech: np.ndarray, deepgram: dict[str, Any] = FLUX, langs: str = "en,es") -> Any:
        bridge = self.start_bridge(deepgram, TranslateSettings(comfort_noise_dbfs=None), langs)
        a = self.phone(bridge, "7777", speech)
        b = self.phone(bridge, "8888", silence(len(speech) / 16000))
        reports: list[PhoneReport] = yield defer.gatherResults([a.play(), b.play()])
        return reports[1].audio

    @defer.inlineCallbacks
    def test_eager_then_end_of_turn_plays_once(self) -> Any:
        heard = yield self.talk(np.concatenate([silence(0.3), encode_words("hello world"), silence(1.5)]))
        self.assertEqual(decode_words(heard), ["hola", "mundo"])
        spec = [(e.outcome, e.text) for e in self.of(SpeculationEvent)]
        self.assertEqual(spec, [("started", "hello world"), ("used", "hello world")])
        (started,) = self.of(PlaybackStarted)
        self.assertEqual(started.text, "hola mundo")
        self.assertEqual(len(self.deepl.requests), 1)  # translated once, at the eager end
        self.assertEqual(self.of(UtteranceDropped), [])

    @defer.inlineCallbacks
    def test_auto_leg_translates_from_the_language_flux_heard(self) -> Any:
        """--langs auto,es: no hint is sent; the eager speculation already translates from English."""
        heard = yield self.talk(np.concatenate([silence(0.3), encode_words("hello world"), silence(1.5)]),
                                langs="auto,es")
        self.assertEqual(decode_words(heard), ["hola", "mundo"])
        self.assertEqual([(e.outcome, e.text) for e in self.of(SpeculationEvent)],
                         [("started", "hello world"), ("used", "hello world")])
        [request] = self.deepl.requests
        self.assertEqual((request.status, request.body["source_lang"], request.body["target_lang"]),
                         (200, "EN", "ES"))
        final = [e for e in self.of(TranscriptEvent) if e.is_final]
        self.assertEqual([(e.language, e.text) for e in final], [("en", "hello world")])
        self.assertNotIn("language_hint", self.flux.connections[0].params)

    @defer.inlineCallbacks
    def test_eager_resumed_then_end_only_the_final_is_heard(self) -> Any:
        # A 180 ms pause (the word's own 60 ms gap and 120 ms more): past the
        # eager end (150 ms), short of the end of turn (260 ms): Flux says
        # EagerEndOfTurn, then TurnResumed.
        speech = np.concatenate([
            silence(0.3), encode_words("good"), silence(0.12), encode_words("morning"), silence(1.5),
        ])
        heard = yield self.talk(speech)
        outcomes = [(e.outcome, e.reason, e.text) for e in self.of(SpeculationEvent)]
        self.assertEqual(outcomes[:2], [("started", "", "good"), ("wasted", "resumed", "good")])
        self.assertEqual(outcomes[2:], [("started", "", "good morning"), ("used", "", "good morning")])
        # The listener heard the whole turn once, and nothing of "good" alone.
        self.assertEqual(decode_words(heard), ["buenos", "dias"])
        self.assertEqual([e.text for e in self.of(PlaybackStarted)], ["buenos dias"])

    @defer.inlineCallbacks
    def test_two_turns_in_order(self) -> Any:
        speech = np.concatenate([
            silence(0.3), encode_words("hello"), silence(0.8), encode_words("bye"), silence(1.5),
        ])
        heard = yield self.talk(speech)
        self.assertEqual(decode_words(heard), ["hola", "adios"])
        finals = [e.text for e in self.of(TranscriptEvent) if e.is_final and e.text and e.extension == "7777"]
        self.assertEqual(finals, ["hello", "bye"])

    @defer.inlineCallbacks
    def test_translation_failing_during_a_speculation_falls_back_as_without(self) -> Any:
        """DeepL refuses the speculation (456, quota): the turn is dropped once, then the original voice."""
        self.deepl.faults.quota_exceeded = True
        speech = np.concatenate([
            silence(0.3), encode_words("hello"), silence(0.8), encode_words("world"), silence(1.5),
        ])
        heard = yield self.talk(speech)
        down = [e for e in self.of(EngineStatusEvent) if e.state == "down"]
        self.assertEqual([(e.engine, e.fallback) for e in down], [("deepl", "relay")])
        # Each turn was tried once, at its eager end (still down: DeepL is
        # asked again for the next turn), and dropped once.
        self.assertEqual([(e.text, e.reason) for e in self.of(UtteranceDropped)],
                         [("hello", "failed"), ("world", "failed")])
        self.assertEqual(len(self.deepl.requests), 2)
        self.assertEqual(self.of(PlaybackStarted), [])
        # After the failure 8888 hears 7777's own voice: the second word, once.
        self.assertEqual(decode_words(heard), ["world"])

    @defer.inlineCallbacks
    def test_without_eager_no_speculation(self) -> Any:
        heard = yield self.talk(np.concatenate([silence(0.3), encode_words("hello world"), silence(1.5)]),
                                {"api": "flux", "eot_threshold": 0.7})
        self.assertEqual(decode_words(heard), ["hola", "mundo"])
        self.assertEqual(self.of(SpeculationEvent), [])
