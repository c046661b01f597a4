"""
Tests for the translating pipeline factory: what each caller hears, which
pipeline each direction gets, and how the two directions of a call are
wired through the callers' playouts.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.bridge import BridgeService
from xlbridge.call.leg import Leg
from xlbridge.call.playout import SpeechOutput
from xlbridge.call.service import CallService
from xlbridge.config import load_config
from xlbridge.egress import EgressClock
from xlbridge.engines.base import Engines, Transcript
from xlbridge.events import Event, UtteranceDropped
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.relay import RelayPipeline
from xlbridge.pipeline.settings import TranslateSettings
from xlbridge.pipeline.translate import TranslatePipeline
from xlbridge.testing import MemoryUDPReactor, pump_ticks
from xlbridge.testing_engines import ManualMT, ManualTTS, ScriptedASRFactory

from tests.call.recording import RecordingTransport
from tests.pipeline.harness import Harness, const

class SameLanguageTests(Harness):
    langs = "en,en-gb"

    def test_same_language_pair_relays(self) -> None:
        self.heard(8888)
        self.speak(7777, const(42, 320))
        pump_ticks(self.reactor, 1)
        self.assertEqual([int(f[0]) for f in self.heard(8888) if f.any()], [42])
        self.assertEqual(self.asr.made, {})

    def setUp(self) -> None:
        # No pipelines to pick apart here: only the relay behaviour matters.
        self.reactor = MemoryUDPReactor()
        self.events = []
        self.asr = ScriptedASRFactory()
        engines = Engines(self.asr, ManualMT(), ManualTTS())
        cfg = load_config({"ports": "7777,8888", "langs": self.langs, "reply-codec": "slin16"})
        self.bridge = BridgeService(cfg, self.reactor, pipeline_factory=translate_factory(engines, self.settings))
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(self.bridge.stopService)
        self.seq = {7777: 0, 8888: 0}
        self.speak(8888, const(1, 320))


class SpeechOutputTests(SynchronousTestCase):
    def test_listeners_hear_translated_speech_as_the_settings_say(self) -> None:
        settings = TranslateSettings(backlog_s=4.0, live_buffer_ms=100, bed_db=-18.0, gain_db=3.0, comfort_noise_dbfs=-50.0)
        factory = translate_factory(Engines(ScriptedASRFactory(), ManualMT(), ManualTTS()), settings)
        en, es = Leg("7777", "en", RecordingTransport()), Leg("8888", "es", RecordingTransport())
        expected = SpeechOutput(backlog_s=4.0, live_ms=100, bed_db=-18.0, gain_db=3.0, comfort_noise_dbfs=-50.0)
        self.assertEqual(factory.speech_output(es, en), expected)
        self.assertEqual(factory.speech_output(en, es), expected)

    def test_same_language_listeners_hear_the_voice(self) -> None:
        factory = translate_factory(Engines(ScriptedASRFactory(), ManualMT(), ManualTTS()), TranslateSettings())
        en, gb = Leg("7777", "en", RecordingTransport()), Leg("8888", "en-gb", RecordingTransport())
        self.assertIsNone(factory.speech_output(gb, en))


class WiringTests(SynchronousTestCase):
    """
    A translated call built by a CallService: each direction writes what
    its partner hears, and its echo guard watches what its own caller
    hears (which the other direction writes).
    """

    settings = TranslateSettings(comfort_noise_dbfs=None)

    def setUp(self) -> None:
        self.clock = Clock()
        self.egress = EgressClock(self.clock)
        self.egress.startService()
        self.addCleanup(self.egress.stopService)
        self.asr = ScriptedASRFactory()
        self.mt = ManualMT()
        self.tts = ManualTTS()
        self.factory = translate_factory(Engines(self.asr, self.mt, self.tts), self.settings)
        self.events: list[Event] = []

    def call(self, call_id: str = "call-1", langs: tuple[str, str] = ("en", "es")) -> CallService:
        self.transports = (RecordingTransport(), RecordingTransport())
        legs = (Leg("7777", langs[0], self.transports[0]), Leg("8888", langs[1], self.transports[1]))
        call = CallService(call_id, legs, self.factory, self.egress, self.clock, emit=self.events.append)
        call.startService()
        self.addCleanup(lambda: call.running and call.end("test"))
        return call

    def translated(self, call: CallService) -> tuple[TranslatePipeline, TranslatePipeline]:
        en_to_es, es_to_en = call.pipelines
        assert isinstance(en_to_es, TranslatePipeline) and isinstance(es_to_en, TranslatePipeline)
        return en_to_es, es_to_en

    def test_each_direction_writes_its_partner_and_watches_its_caller(self) -> None:
        call = self.call()
        hears_en, hears_es = call.playouts
        en_to_es, es_to_en = self.translated(call)
        self.assertIs(en_to_es.mix, hears_es.mix)
        self.assertIs(es_to_en.mix, hears_en.mix)
        self.assertIs(en_to_es.echo.played, hears_en)
        self.assertIs(es_to_en.echo.played, hears_es)

    def test_a_speech_is_heard_by_b_only(self) -> None:
        call = self.call()
        hears_en, hears_es = call.playouts
        self.asr.made["7777"].emit(Transcript("hello", True, False, 0.0, 0.02, self.clock.seconds()))
        self.mt.requests[0][4].callback("hola")
        self.tts.requests[0][2](const(5, 640))
        self.assertEqual((hears_es.output.depth_ms, hears_en.output.depth_ms), (40.0, 0.0))
        pump_ticks(self.clock, 3)
        heard_by_es = [int(f[0]) for f, _ in self.transports[1].take() if f is not None and f.any()]
        heard_by_en = [f for f, _ in self.transports[0].take() if f is not None and f.any()]
        self.assertEqual((heard_by_es, heard_by_en), ([5, 5], []))

    def test_b_repeating_what_a_made_it_hear_is_echo(self) -> None:
        call = self.call()
        self.asr.made["7777"].emit(Transcript("hello", True, False, 0.0, 0.02, self.clock.seconds()))
        self.mt.requests[0][4].callback("hola amigo")
        self.tts.requests[0][2](const(5, 320))
        self.tts.requests[0][3].callback(None)
        pump_ticks(self.clock, 2)
        self.assertEqual([text for _, text in call.playouts[1].heard], ["hola amigo", "hola amigo"])
        self.assertEqual(list(call.playouts[0].heard), [])
        # 8888's microphone picks it up: 8888's direction drops it ...
        self.asr.made["8888"].emit(Transcript("hola amigo", True, False, 0.0, 0.02, self.clock.seconds()))
        (drop,) = [e for e in self.events if isinstance(e, UtteranceDropped)]
        self.assertEqual((drop.reason, drop.text), ("echo", "hola amigo"))
        # ... while 7777 saying the same is not echo: 7777 was played nothing.
        self.asr.made["7777"].emit(Transcript("hola amigo", True, False, 0.0, 0.02, self.clock.seconds()))
        self.assertEqual(len(self.mt.requests), 2)

    def test_same_language_call_relays_through_plain_buffers(self) -> None:
        call = self.call(langs=("en", "en-gb"))
        self.assertTrue(all(isinstance(p, RelayPipeline) for p in call.pipelines))
        self.assertEqual([p.mix for p in call.playouts], [None, None])
        call.audio_in(0, const(42, 320))
        pump_ticks(self.clock, 1)
        self.assertEqual([int(f[0]) for f, _ in self.transports[1].take() if f is not None], [42])

    def test_direction_sync_is_shared_within_a_call_only(self) -> None:
        self.factory = translate_factory(
            Engines(self.asr, self.mt, self.tts), TranslateSettings(comfort_noise_dbfs=None, sync_directions=True)
        )
        first = self.translated(self.call("call-1"))
        second = self.translated(self.call("call-2"))
        self.assertIsNotNone(first[0].sync)
        self.assertIs(first[0].sync, first[1].sync)
        self.assertIs(second[0].sync, second[1].sync)
        self.assertIsNot(first[0].sync, second[0].sync)
