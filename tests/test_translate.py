"""
Tests for the translation pipeline with controllable engines, through a real
bridge on a memory reactor: order, backlog, echo guard, fallback,
granularity, latency fields, comfort noise and bed.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.bridge import BridgeService
from xlbridge.config import load_config
from xlbridge.engines.base import EngineDown, EngineUnavailable, EngineUp, Transcript, UtteranceEnd
from xlbridge.events import (
    EngineStatusEvent,
    Event,
    PlaybackEnded,
    PlaybackStarted,
    TranscriptEvent,
    TranslationEvent,
    UtteranceDropped,
)
from xlbridge.pipeline.factory import translate_factory
from xlbridge.pipeline.translate import Engines, TranslatePipeline, TranslateSettings, similarity
from xlbridge.rtp.packet import build, parse
from xlbridge.testing import ManualMT, ManualTTS, MemoryUDPReactor, ScriptedASRFactory, pump_ticks

A = ("127.0.0.1", 10000)
B = ("127.0.0.1", 10002)


def const(value: int, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


class Harness(SynchronousTestCase):
    settings = TranslateSettings(comfort_noise_dbfs=None)
    langs = "en,es"

    def setUp(self) -> None:
        self.reactor = MemoryUDPReactor()
        self.events: list[Event] = []
        self.asr = ScriptedASRFactory()
        self.mt = ManualMT()
        self.tts = ManualTTS()
        engines = Engines(self.asr, self.mt, self.tts, {"asr": "scripted", "mt": "manual", "tts": "manual"})
        cfg = load_config({"ports": "7777,8888", "langs": self.langs, "reply-codec": "slin16"})
        self.bridge = BridgeService(
            cfg, self.reactor, pipeline_factory=translate_factory(engines, self.settings), observers=[self.events.append]
        )
        self.bridge.privilegedStartService()
        self.bridge.startService()
        self.addCleanup(lambda: self.bridge.running and self.bridge.stopService())
        self.seq = {7777: 0, 8888: 0}
        # Both phones speak once so both legs latch and the call starts.
        self.speak(7777, const(100, 320))
        self.speak(8888, const(200, 320))
        (self.call,) = self.bridge.active_calls()
        self.p_en: TranslatePipeline = self.call.pipelines[0]  # type: ignore[assignment]
        self.p_es: TranslatePipeline = self.call.pipelines[1]  # type: ignore[assignment]

    def speak(self, port: int, samples: np.ndarray, src: Any = None) -> None:
        src = src or (A if port == 7777 else B)
        for i in range(0, len(samples), 320):
            seq = self.seq[port]
            self.seq[port] += 1
            chunk = samples[i : i + 320]
            self.reactor.udp[port].deliver(build(118, seq, seq * 320, 1, chunk.astype(">i2").tobytes()), src)

    def final(self, ext: str, text: str, end: float = 0.02, speech_final: bool = False) -> None:
        now = self.reactor.seconds()
        self.asr.made[ext].emit(Transcript(text, True, speech_final, 0.0, end, now))

    def heard(self, port: int) -> list[np.ndarray]:
        """Decoded frames the phone on ``port`` received (slin16)."""
        return [np.frombuffer(parse(s.data).payload, ">i2").astype(np.int16) for s in self.reactor.udp[port].take()]

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


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


class EchoTests(Harness):
    def test_text_guard_drops_own_translation_coming_back(self) -> None:
        # 8888 says something; 7777 is played "where is the hospital".
        self.final("8888", "donde esta el hospital")
        self.mt.requests[0][4].callback("where is the hospital")
        self.tts.requests[0][2](const(9, 640))
        self.tts.requests[0][3].callback(None)
        pump_ticks(self.reactor, 3)
        # 7777's speakerphone leaks it back; ASR transcribes it.
        self.final("7777", "where is the hospital")
        self.assertEqual(len(self.mt.requests), 1)
        (drop,) = self.of(UtteranceDropped)
        self.assertEqual((drop.reason, drop.text), ("echo", "where is the hospital"))
        # Real speech from 7777 still goes through.
        self.final("7777", "thank you very much")
        self.assertEqual(len(self.mt.requests), 2)

    def test_similarity(self) -> None:
        self.assertEqual(similarity("Where is the hospital?", "where is the hospital"), 1.0)
        self.assertLess(similarity("thank you", "where is the hospital"), 0.3)


class GateTests(Harness):
    settings = TranslateSettings(comfort_noise_dbfs=None, echo_guard="gate", gate_tail_ms=100)

    def test_gate_feeds_silence_while_caller_hears_translation(self) -> None:
        self.final("8888", "hola")
        self.mt.requests[0][4].callback("hello")
        self.tts.requests[0][2](const(9, 3200))
        self.tts.requests[0][3].callback(None)
        asr = self.asr.made["7777"]
        pump_ticks(self.reactor, 1)  # playback to 7777 starts
        asr.chunks.clear()
        self.speak(7777, const(300, 320))
        self.assertFalse(asr.chunks[-1].any())
        pump_ticks(self.reactor, 20)  # playback over and tail passed
        self.speak(7777, const(300, 320))
        self.assertTrue(asr.chunks[-1].all())


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
