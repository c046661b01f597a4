"""
Tests for the translation pipeline with controllable engines, through a real
bridge on a memory reactor: order, backlog, fallback, granularity, latency
fields, comfort noise and bed, direction sync, identified languages; and
one pipeline alone, given what its partner hears.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout, SpeechOutput
from xlbridge.engines.base import EngineDown, Engines, EngineUnavailable, EngineUp, Transcript, UtteranceEnd
from xlbridge.events import (
    EngineStatusEvent,
    PlaybackEnded,
    PlaybackStarted,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)
from xlbridge.pipeline.translate import TranslatePipeline, TranslateSettings
from xlbridge.rtp.packet import parse
from xlbridge.testing import pump_ticks
from xlbridge.testing_engines import ManualMT, ManualTTS, ScriptedASRFactory

from tests.call.recording import RecordingContext, RecordingTransport
from tests.pipeline.harness import Harness, const

class OrderTests(Harness):
    def test_out_of_order_engines_still_play_in_order_without_overlap(self) -> None:
        self.heard(8888)
        self.final("7777", "hello world")
        self.final("7777", "how are you")
        (t1, s1, g1, ctx1, d1), (t2, s2, g2, ctx2, d2) = self.mt.requests
        self.assertEqual((t1, s1, g1), ("hello world", "en", "es"))
        self.assertEqual(ctx2, ["hello world"])  # segment mode: earlier segments as context
        d2.callback("como estas")  # the second translation finishes first
        d1.callback("hola mundo")
        (tt1, l1, audio1, done1), (tt2, l2, audio2, done2) = sorted(self.tts.requests, key=lambda r: r[0] != "hola mundo")
        self.assertEqual((tt1, tt2, l1), ("hola mundo", "como estas", "es"))
        audio2(const(2, 640))  # second utterance's audio arrives first
        done2.callback(None)
        audio1(const(1, 320))
        pump_ticks(self.reactor, 2)
        audio1(const(1, 320))
        done1.callback(None)
        pump_ticks(self.reactor, 6)
        values = [int(f[0]) for f in self.heard(8888) if f.any()]
        self.assertEqual(values, [1, 1, 2, 2])
        starts = self.of(PlaybackStarted)
        self.assertEqual([s.text for s in starts], ["hola mundo", "como estas"])
        self.assertEqual([e.text for e in self.of(PlaybackEnded)], ["hola mundo", "como estas"])

    def test_each_leg_hears_only_its_partner(self) -> None:
        self.final("7777", "hello")
        self.final("8888", "hola")
        en_req, es_req = self.mt.requests
        self.assertEqual((en_req[1], en_req[2], es_req[1], es_req[2]), ("en", "es", "es", "en"))
        en_req[4].callback("HOLA")
        es_req[4].callback("HELLO")
        by_text = {r[0]: r for r in self.tts.requests}
        by_text["HOLA"][2](const(5, 320))
        by_text["HELLO"][2](const(6, 320))
        pump_ticks(self.reactor, 2)
        self.assertEqual({int(f[0]) for f in self.heard(8888) if f.any()}, {5})
        self.assertEqual({int(f[0]) for f in self.heard(7777) if f.any()}, {6})

    def test_interim_results_are_captions(self) -> None:
        asr = self.asr.made["7777"]
        asr.emit(Transcript("hel", False, False, 0.0, 0.3, self.reactor.seconds()))
        (ev,) = self.of(TranscriptEvent)
        self.assertEqual((ev.text, ev.is_final, ev.extension, ev.language, ev.call_id), ("hel", False, "7777", "en", self.call.call_id))
        self.assertEqual(self.mt.requests, [])


class LatencyTests(Harness):
    def test_stage_latencies(self) -> None:
        self.reactor.advance(0.5)
        self.speak(7777, const(100, 3200))  # 200 ms, arrives "now"
        # Stream seconds at the end of that audio: all the recogniser was
        # fed, with the silence filled in while the line was quiet before.
        speech_end_stream = self.asr.made["7777"].fed / 16000
        self.reactor.advance(0.3)
        self.final("7777", "hello", end=speech_end_stream)
        self.reactor.advance(0.15)
        self.mt.requests[0][4].callback("hola")
        self.reactor.advance(0.1)
        self.tts.requests[0][2](const(3, 640))
        pump_ticks(self.reactor, 1)
        (ev,) = self.of(PlaybackStarted)
        self.assertEqual(round(ev.asr_ms or 0), 300)
        self.assertEqual(round(ev.mt_ms or 0), 150)
        self.assertEqual(round(ev.tts_first_byte_ms or 0), 100)
        self.assertLess(ev.queue_wait_ms or 0, 21)
        self.assertEqual(round(ev.total_ms or 0), round(550 + (ev.queue_wait_ms or 0)))
        (tr,) = self.of(TranslationEvent)
        self.assertEqual((tr.text, tr.source_text, tr.language, tr.source_language), ("hola", "hello", "es", "en"))


class BacklogTests(Harness):
    settings = TranslateSettings(comfort_noise_dbfs=None, backlog_s=2.0)

    def test_oldest_pending_utterance_dropped_beyond_bound(self) -> None:
        for text in ["one", "two", "three"]:
            self.final("7777", text)
        for req in self.mt.requests:
            req[4].callback(req[0].upper())
        for text, _, on_audio, done in self.tts.requests:
            on_audio(const(len(text), 16000))  # 1 s each
            done.callback(None)
        dropped = self.of(UtteranceDropped)
        self.assertEqual([(d.text, d.reason) for d in dropped], [("ONE", "backlog")])
        self.assertLessEqual(self.p_en.queue.pending_samples(), 2 * 16000)
        pump_ticks(self.reactor, 120)
        values = [int(f[0]) for f in self.heard(8888) if f.any()]
        self.assertEqual(sorted(set(values)), [3, 5])
        self.assertEqual(values, [3] * 50 + [5] * 50)


class FallbackTests(Harness):
    def test_asr_down_relays_original_voice_then_recovers(self) -> None:
        asr = self.asr.made["7777"]
        asr.emit(EngineDown(EngineUnavailable("deepgram", "connection lost"), self.reactor.seconds()))
        self.heard(8888)
        self.speak(7777, const(77, 640))
        pump_ticks(self.reactor, 3)
        self.assertEqual([int(f[0]) for f in self.heard(8888) if f.any()], [77, 77])
        asr.emit(EngineUp("deepgram", self.reactor.seconds()))
        self.speak(7777, const(78, 640))
        pump_ticks(self.reactor, 3)
        self.assertEqual([f for f in self.heard(8888) if f.any()], [])
        down, up = self.of(EngineStatusEvent)
        self.assertEqual((down.state, down.fallback, down.engine, up.state), ("down", "relay", "deepgram", "up"))

    def test_mt_failure_enters_fallback_and_success_leaves_it(self) -> None:
        self.final("7777", "hello")
        self.mt.requests[0][4].errback(EngineUnavailable("deepl", "HTTP 503"))
        self.assertTrue(self.p_en.in_fallback)
        self.assertEqual(self.of(UtteranceDropped)[0].reason, "failed")
        self.final("7777", "hello again")
        self.mt.requests[1][4].callback("hola otra vez")
        self.assertFalse(self.p_en.in_fallback)
        self.assertEqual([e.state for e in self.of(EngineStatusEvent)], ["down", "up"])
        # The queue was not stuck behind the failed utterance.
        self.tts.requests[0][2](const(4, 320))
        pump_ticks(self.reactor, 2)
        self.assertEqual([int(f[0]) for f in self.heard(8888) if f.any()], [4])


class SilenceFallbackTests(Harness):
    settings = TranslateSettings(comfort_noise_dbfs=None, fallback="silence")

    def test_silence_fallback_relays_nothing(self) -> None:
        self.asr.made["7777"].emit(EngineDown(EngineUnavailable("deepgram", "x"), 0.0))
        self.heard(8888)
        self.speak(7777, const(77, 640))
        pump_ticks(self.reactor, 3)
        self.assertEqual([f for f in self.heard(8888) if f.any()], [])


class UtteranceGranularityTests(Harness):
    settings = TranslateSettings(comfort_noise_dbfs=None, granularity="utterance")

    def test_waits_for_end_of_utterance(self) -> None:
        self.final("7777", "hello")
        self.final("7777", "world")
        self.assertEqual(self.mt.requests, [])
        self.asr.made["7777"].emit(UtteranceEnd(1.0, self.reactor.seconds()))
        (req,) = self.mt.requests
        self.assertEqual(req[0], "hello world")
        self.final("7777", "bye", speech_final=True)
        self.assertEqual(self.mt.requests[1][0], "bye")
        self.assertEqual(self.mt.requests[1][3], ["hello world"])


class ComfortNoiseTests(Harness):
    settings = TranslateSettings(comfort_noise_dbfs=-60.0)

    def test_idle_line_carries_low_noise_without_markers(self) -> None:
        pump_ticks(self.reactor, 1)  # the stream's first packet has the marker
        self.reactor.udp[8888].take()
        pump_ticks(self.reactor, 50)
        pkts = [parse(s.data) for s in self.reactor.udp[8888].take()]
        audio = np.concatenate([np.frombuffer(p.payload, ">i2") for p in pkts]).astype(np.float64)
        rms_db = 20 * np.log10(np.sqrt(np.mean(audio**2)) / 32768)
        self.assertTrue(abs(rms_db + 60) < 2, rms_db)
        self.assertFalse(any(p.marker for p in pkts))


class BedTests(Harness):
    settings = TranslateSettings(comfort_noise_dbfs=None, bed_db=-20.0)

    def test_original_voice_quietly_under_translation(self) -> None:
        pump_ticks(self.reactor, 2)
        self.heard(8888)
        self.speak(7777, const(1000, 320))
        pump_ticks(self.reactor, 1)
        (f,) = [f for f in self.heard(8888) if f.any()]
        self.assertEqual(int(f[0]), 100)
        self.final("7777", "hi")
        self.mt.requests[0][4].callback("hola")
        self.tts.requests[0][2](const(500, 320))
        self.speak(7777, const(1000, 320))
        pump_ticks(self.reactor, 1)
        (f,) = [f for f in self.heard(8888) if f.any()]
        self.assertEqual(int(f[0]), 600)


class StopTests(Harness):
    def test_call_end_cancels_inflight_and_finishes_asr(self) -> None:
        self.final("7777", "hello")
        d = self.mt.requests[0][4]
        self.bridge.stopService()
        self.assertTrue(self.asr.made["7777"].finished)
        self.assertTrue(d.called)  # cancelled
        self.assertEqual(self.flushLoggedErrors(), [])


class DirectionSyncTests(Harness):
    settings = TranslateSettings(comfort_noise_dbfs=None, sync_directions=True, sync_max_ms=1000)

    def say(self, ext: str, text: str, mt_delay: float) -> None:
        """One utterance through MT (taking mt_delay) and an instant TTS."""
        port = int(ext)
        self.speak(port, const(100, 320))
        # Stream time is what the recogniser was fed, silence fill included.
        self.final(ext, text, end=self.asr.made[ext].fed / 16000)
        self.reactor.advance(mt_delay)
        self.mt.requests[-1][4].callback(text.upper())
        self.tts.requests[-1][2](const(7, 320))
        self.tts.requests[-1][3].callback(None)
        pump_ticks(self.reactor, 60)

    def test_faster_direction_is_held_to_the_slower_lag(self) -> None:
        self.say("7777", "hello", 0.6)   # slow direction: ~600 ms
        self.say("8888", "hola", 0.1)    # fast direction, nothing to match yet
        self.say("8888", "que tal", 0.1)  # now held to ~600 ms
        totals = [(e.speaker, round((e.total_ms or 0) / 20)) for e in self.of(PlaybackStarted)]
        self.assertEqual([s for s, _ in totals], ["7777", "8888", "8888"])
        slow, fast_free, fast_held = [t for _, t in totals]
        self.assertLess(fast_free, slow - 10)
        self.assertTrue(abs(fast_held - slow) <= 2, totals)

    def test_cap(self) -> None:
        self.say("7777", "hello", 3.0)
        self.say("8888", "hola", 0.1)
        self.say("8888", "que tal", 0.1)
        held = self.of(PlaybackStarted)[-1]
        self.assertLess(held.total_ms or 0, 100 + 1000 + 60)


class AutoLanguageTests(Harness):
    """``--langs auto,es``: the recogniser says what 7777 speaks; what 7777 hears follows it."""

    langs = "auto,es"

    def identified(self, ext: str, text: str, language: str) -> None:
        now = self.reactor.seconds()
        self.asr.made[ext].emit(Transcript(text, True, True, 0.0, 0.02, now, language=language))

    def test_source_language_is_the_identified_one(self) -> None:
        self.identified("7777", "bonjour à tous", "fr")
        ((text, source, target, _, _),) = self.mt.requests
        self.assertEqual((text, source, target), ("bonjour à tous", "fr", "es"))
        (final,) = [e for e in self.of(TranscriptEvent) if e.is_final]
        self.assertEqual((final.extension, final.language), ("7777", "fr"))

    def test_listener_on_auto_hears_what_they_last_spoke(self) -> None:
        # Before 7777 has spoken, 8888's words are spoken back in Spanish (nothing to translate to yet).
        self.identified("8888", "hola", "es")
        self.assertEqual(self.mt.requests, [])
        self.assertEqual(self.tts.requests[-1][:2], ("hola", "es"))
        self.identified("7777", "good morning", "en")
        self.identified("8888", "buenos días", "es")
        text, source, target, _, _ = self.mt.requests[-1]
        self.assertEqual((text, source, target), ("buenos días", "es", "en"))

    def test_same_language_as_the_partner_is_not_translated(self) -> None:
        self.identified("7777", "hola", "es")
        self.assertEqual(self.mt.requests, [])
        self.assertEqual(self.tts.requests[-1][:2], ("hola", "es"))


class EngineNameTests(Harness):
    def test_status_names_the_recogniser_each_direction_uses(self) -> None:
        """The monitor shows per direction which ASR a leg got (Whisper for one, pocketsphinx for the other)."""
        self.asr.made["7777"].engine_name = "whisper"  # type: ignore[attr-defined]
        self.assertEqual(self.p_en.status()["engines"], {"asr": "whisper", "mt": "manual", "tts": "manual"})
        self.assertEqual(self.p_es.status()["engines"]["asr"], "scripted")


class AloneTests(SynchronousTestCase):
    """
    One direction, 7777 to 8888, built by hand: it writes only what 8888
    hears and reads only what 7777 hears.
    """

    def setUp(self) -> None:
        self.context = RecordingContext("call-1", Clock())
        self.asr = ScriptedASRFactory()
        self.mt = ManualMT()
        self.tts = ManualTTS()
        self.engines = Engines(self.asr, self.mt, self.tts)
        self.en = Leg("7777", "en", RecordingTransport())
        self.es = Leg("8888", "es", RecordingTransport())
        self.hears_en = Playout.speech(SpeechOutput(comfort_noise_dbfs=None), self.context.clock)
        self.hears_es = Playout.speech(SpeechOutput(comfort_noise_dbfs=None, backlog_s=1.0), self.context.clock)

    def pipeline(self, settings: TranslateSettings = TranslateSettings()) -> TranslatePipeline:
        p = TranslatePipeline(
            self.en, self.es, self.context, self.engines, settings,
            partner_hears=self.hears_es, source_hears=self.hears_en,
        )
        p.start()
        self.addCleanup(p.stop)
        return p

    def say(self, text: str, translation: str, audio: Any) -> None:
        now = self.context.clock.seconds()
        self.asr.made["7777"].emit(Transcript(text, True, False, 0.0, 0.02, now))
        self.mt.requests[-1][4].callback(translation)
        self.tts.requests[-1][2](audio)
        self.tts.requests[-1][3].callback(None)

    def test_a_relay_playout_is_refused(self) -> None:
        with self.assertRaises(ValueError):
            TranslatePipeline(
                self.en, self.es, self.context, self.engines, TranslateSettings(),
                partner_hears=Playout.relay(200), source_hears=self.hears_en,
            )

    def test_speech_lands_in_what_the_partner_hears_only(self) -> None:
        p = self.pipeline()
        self.say("hello", "hola", const(5, 320))
        self.assertIs(p.mix, self.hears_es.mix)
        self.assertEqual(self.hears_en.output.depth_ms, 0.0)
        self.context.clock.advance(1.0)
        frame = self.hears_es.output.read_frame()
        assert frame is not None
        self.assertEqual(int(frame[0]), 5)
        self.assertIsNone(self.hears_en.output.read_frame())
        self.assertEqual([text for _, text in self.hears_es.heard], ["hola", "hola"])
        self.assertEqual(list(self.hears_en.heard), [])
        (started,) = [e for e in self.context.events if isinstance(e, PlaybackStarted)]
        self.assertEqual((started.call_id, started.extension, started.speaker, started.time), ("call-1", "8888", "7777", 1.0))

    def test_live_voice_goes_to_what_the_partner_hears(self) -> None:
        self.hears_es = Playout.speech(SpeechOutput(comfort_noise_dbfs=None, bed_db=-20.0), self.context.clock)
        p = self.pipeline()
        p.audio_in(const(1000, 320))
        frame = self.hears_es.output.read_frame()
        assert frame is not None
        self.assertEqual(int(frame[0]), 100)
        self.assertEqual(self.hears_en.output.depth_ms, 0.0)

    def test_backlog_drops_are_reported_for_the_listener(self) -> None:
        self.pipeline()
        self.say("one", "uno", const(1, 16000))
        self.say("two", "dos", const(2, 16000))
        (drop,) = [e for e in self.context.events if isinstance(e, UtteranceDropped)]
        self.assertEqual((drop.reason, drop.text, drop.extension, drop.language), ("backlog", "uno", "8888", "es"))
