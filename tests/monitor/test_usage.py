"""
Engine usage in ``/metrics`` (audio seconds fed to each recogniser,
characters sent to each translator and synthesiser): counted as the
translating pipeline hands them over, summed over live and ended calls,
never going down (on a memory reactor with scripted engines).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.monitor.harness import MonitoredBridge, bearer, parse_metrics
from xlbridge.engines.base import Transcript
from xlbridge.events import CallEnded, EngineUsage
from xlbridge.monitor.usage import MetersUsage, UsageMeter
from xlbridge.pipeline.translate import TranslatePipeline
from xlbridge.testing import pump_ticks

ASR = "xlbridge_asr_audio_seconds_total"
MT = "xlbridge_mt_characters_total"
TTS = "xlbridge_tts_characters_total"


class UsageMetricsTests(MonitoredBridge, SynchronousTestCase):
    def setUp(self) -> None:
        self.build()

    def metrics(self) -> dict[tuple[str, str], float]:
        code, _, body = self.get("/metrics", bearer())
        self.assertEqual(code, 200)
        return {
            (name, dict(labels).get("engine", "")): value
            for (name, labels), value in parse_metrics(body.decode()).items()
            if name in (ASR, MT, TTS)
        }

    def fed_seconds(self) -> float:
        return sum(asr.fed for asr in self.asr.made.values()) / 16000

    def test_counts_what_the_engines_were_given(self) -> None:
        call = self.start_call()
        self.speak(7777, frames=49)
        self.translate_once("hello there", "hola")
        m = self.metrics()
        # What the scripted recognisers were fed, to the sample: the callers'
        # 51 frames plus any silence the pipeline filled in for them.
        self.assertGreaterEqual(self.fed_seconds(), 51 * 320 / 16000)
        self.assertAlmostEqual(m[ASR, "scripted"], self.fed_seconds())
        self.assertEqual(m[MT, "manual"], len("hello there"))
        self.assertEqual(m[TTS, "manual"], len("hola"))
        usage = [p.usage for p in call.pipelines if isinstance(p, MetersUsage)]
        self.assertEqual(len(usage), 2)
        self.assertEqual(
            (usage[0].asr_engine, usage[0].mt_engine, usage[0].tts_engine), ("scripted", "manual", "manual")
        )
        self.assertEqual(usage[0].asr_samples, self.asr.made["7777"].fed)

    def test_totals_survive_the_call_and_only_grow(self) -> None:
        call = self.start_call()
        self.translate_once("one", "uno")
        during = self.metrics()
        call.end("hangup")
        self.assertEqual(self.bridge.active_calls(), [])
        after = self.metrics()
        self.assertEqual(after, during)  # the ended call's counts are kept
        self.speak(8888, frames=3)
        (second,) = self.bridge.active_calls()
        self.assertIsNot(second, call)
        self.speak(7777)
        later = self.metrics()
        self.assertGreater(later[ASR, "scripted"], after[ASR, "scripted"])
        self.assertEqual(later[MT, "manual"], after[MT, "manual"])
        for key, value in after.items():
            self.assertGreaterEqual(later[key], value, key)

    def test_text_that_skips_mt_is_not_counted_as_translated(self) -> None:
        # The speaker turns out to speak the listener's language (as with
        # a leg language of "auto"): no MT request, so no MT characters,
        # but the text is still spoken to the listener.
        call = self.start_call()
        pipeline = call.pipelines[0]
        assert isinstance(pipeline, TranslatePipeline)
        pipeline.partner.language = "en"
        self.asr.made["7777"].emit(Transcript("good morning", True, True, 0.0, 0.02, self.reactor.seconds()))
        self.assertEqual(self.mt.requests, [])
        self.tts.requests[-1][3].callback(None)
        pump_ticks(self.reactor, 1)
        self.assertEqual((pipeline.usage.mt_chars, pipeline.usage.tts_chars), (0, len("good morning")))

    def test_no_usage_no_series(self) -> None:
        m = self.metrics()
        self.assertEqual(m, {})


class UsageMeterTests(SynchronousTestCase):
    """
    The meter alone, over a bridge view with hand-made calls.
    """

    def test_ended_calls_fold_once_and_live_ones_add(self) -> None:
        class Pipeline:
            def __init__(self, usage: EngineUsage) -> None:
                self.usage = usage

        class Call:
            def __init__(self, call_id: str, *usages: EngineUsage) -> None:
                self.call_id = call_id
                self.pipelines = tuple(Pipeline(u) for u in usages)
                self.running = True

        class View:
            calls: list[Call] = []

            def active_calls(self) -> list[Call]:
                return self.calls

        view = View()
        meter = UsageMeter(view)  # type: ignore[arg-type]
        a = EngineUsage("deepgram", "deepl", "elevenlabs", asr_samples=16000 * 60, mt_chars=10, tts_chars=12)
        b = EngineUsage("whisper", "apertium", "espeak-ng", asr_samples=8000)
        view.calls = [Call("c1", a, b)]
        self.assertEqual(
            meter.totals(),
            {
                ("asr", "deepgram"): 60.0, ("asr", "whisper"): 0.5, ("mt", "deepl"): 10.0,
                ("tts", "elevenlabs"): 12.0,
            },
        )
        view.calls[0].running = False
        meter.observe(CallEnded("c1", ("1", "2"), "hangup", 60.0, 60.0))
        meter.observe(CallEnded("other", ("3", "4"), "hangup", 1.0, 60.0))
        view.calls = []
        self.assertEqual(meter.totals()[("asr", "deepgram")], 60.0)
        view.calls = [Call("c2", EngineUsage("deepgram", "deepl", "elevenlabs", asr_samples=16000))]
        self.assertEqual(meter.totals()[("asr", "deepgram")], 61.0)
