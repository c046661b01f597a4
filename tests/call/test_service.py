"""
Tests for xlbridge.call.service: what each caller hears, the pipelines of
both directions and how they are wired, and the call's lifecycle
(inactivity, a held line, ending once, cleaning up).
"""

from __future__ import annotations

from typing import Optional

import attrs
import numpy as np
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from xlbridge.audio.frame import Samples
from xlbridge.call.context import CallContext
from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout, SpeechOutput
from xlbridge.call.service import CallService, PipelineFactory
from xlbridge.egress import EgressClock
from xlbridge.events import CallEnded, CallStarted, Event
from xlbridge.interfaces import IPipeline
from xlbridge.pipeline.relay import relay_factory
from xlbridge.testing import pump_ticks

from tests.call.recording import RecordingTransport


def const(value: int, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


@implementer(IPipeline)
class RecordingPipeline:
    def __init__(self, fail_stop: bool = False) -> None:
        self.started = False
        self.stopped = False
        self.fail_stop = fail_stop
        self.audio: list[Samples] = []

    def start(self) -> None:
        self.started = True

    def audio_in(self, samples: Samples) -> None:
        self.audio.append(samples)

    def stop(self) -> "Deferred[None]":
        self.stopped = True
        if self.fail_stop:
            raise RuntimeError("stop failed")
        return succeed(None)


@attrs.define
class Built:
    source: Leg
    partner: Leg
    call: CallContext
    partner_hears: Playout
    source_hears: Playout
    pipeline: RecordingPipeline


class RecordingFactory:
    """
    A pipeline factory that records what it was asked and given; listeners
    in ``speech_for`` hear translated speech.
    """

    def __init__(self, speech_for: tuple[str, ...] = (), fail_stop: bool = False) -> None:
        self.speech_for = speech_for
        self.fail_stop = fail_stop
        self.asked: list[tuple[str, str]] = []
        self.built: list[Built] = []

    def speech_output(self, listener: Leg, speaker: Leg) -> Optional[SpeechOutput]:
        self.asked.append((listener.extension, speaker.extension))
        return SpeechOutput(comfort_noise_dbfs=-60.0) if listener.extension in self.speech_for else None

    def __call__(
        self, source: Leg, partner: Leg, call: CallContext, partner_hears: Playout, source_hears: Playout
    ) -> IPipeline:
        pipeline = RecordingPipeline(self.fail_stop)
        self.built.append(Built(source, partner, call, partner_hears, source_hears, pipeline))
        return pipeline


class Harness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.egress = EgressClock(self.clock)
        self.egress.startService()
        self.addCleanup(self.egress.stopService)
        self.events: list[Event] = []
        self.ended: list[CallService] = []

    def make(
        self, factory: Optional[PipelineFactory] = None,
        transports: Optional[tuple[RecordingTransport, RecordingTransport]] = None, timeout: float = 10.0,
    ) -> CallService:
        self.transports = transports or (RecordingTransport(), RecordingTransport())
        self.legs = (
            Leg("7777", "en", self.transports[0], 200),
            Leg("8888", "es", self.transports[1], 200),
        )
        self.recorder = RecordingFactory()
        return CallService(
            "call-1", self.legs, factory if factory is not None else self.recorder, self.egress, self.clock,
            inactivity_timeout=timeout, emit=self.events.append, on_end=self.ended.append,
            channels=("chan-a", "chan-b"),
        )


class WiringTests(Harness):
    def test_one_playout_per_leg_from_what_the_factory_says(self) -> None:
        factory = RecordingFactory(speech_for=("8888",))
        call = self.make(factory)
        call.startService()
        self.assertEqual(sorted(factory.asked), [("7777", "8888"), ("8888", "7777")])
        hears_a, hears_b = call.playouts
        self.assertIs(self.legs[0].playout, hears_a)
        self.assertIs(self.legs[1].playout, hears_b)
        self.assertIsNone(hears_a.mix)  # 7777 hears 8888's voice, relayed
        self.assertIsNotNone(hears_b.mix)  # 8888 hears translated speech
        self.assertIs(hears_b.output, hears_b.mix)
        self.assertIsNotNone(hears_b.filler)

    def test_each_direction_writes_its_partner_and_watches_its_source(self) -> None:
        call = self.make()
        call.startService()
        a, b = self.legs
        hears_a, hears_b = call.playouts
        a_to_b, b_to_a = self.recorder.built
        self.assertEqual((a_to_b.source, a_to_b.partner), (a, b))
        self.assertIs(a_to_b.partner_hears, hears_b)
        self.assertIs(a_to_b.source_hears, hears_a)
        self.assertEqual((b_to_a.source, b_to_a.partner), (b, a))
        self.assertIs(b_to_a.partner_hears, hears_a)
        self.assertIs(b_to_a.source_hears, hears_b)
        self.assertEqual([x.pipeline for x in (a_to_b, b_to_a)], list(call.pipelines))
        self.assertTrue(all(p.started for p in (a_to_b.pipeline, b_to_a.pipeline)))

    def test_pipelines_get_the_call_as_context(self) -> None:
        call = self.make()
        call.startService()
        context = self.recorder.built[0].call
        self.assertEqual((context.call_id, context.clock), ("call-1", self.clock))
        context.emit(CallEnded("x", ("1", "2"), "test", 0.0, 0.0))
        self.assertEqual(type(self.events[-1]), CallEnded)

    def test_audio_in_reaches_its_own_direction_and_tap(self) -> None:
        call = self.make()
        call.startService()
        said: list[Samples] = []
        self.legs[1].tap_in = said.append
        call.audio_in(1, const(5, 320))
        a_to_b, b_to_a = self.recorder.built
        self.assertEqual((len(a_to_b.pipeline.audio), len(b_to_a.pipeline.audio)), (0, 1))
        self.assertEqual(len(said), 1)

    def test_relay_call_each_caller_hears_the_other(self) -> None:
        call = self.make(relay_factory)
        call.startService()
        call.audio_in(0, const(7, 320))
        pump_ticks(self.clock, 1)
        heard_by_b = [f for f, _ in self.transports[1].take() if f is not None]
        self.assertEqual([int(f[0]) for f in heard_by_b], [7])
        self.assertEqual([f for f, _ in self.transports[0].take() if f is not None], [])


class LifecycleTests(Harness):
    def test_started_event_and_egress(self) -> None:
        call = self.make()
        self.clock.advance(2.0)
        call.startService()
        (started,) = self.events
        assert isinstance(started, CallStarted)
        self.assertEqual(
            (started.call_id, started.extensions, started.languages, started.time, started.channels),
            ("call-1", ("7777", "8888"), ("en", "es"), 2.0, ("chan-a", "chan-b")),
        )
        pump_ticks(self.clock, 3)
        self.assertEqual([len(t.take()) for t in self.transports], [3, 3])

    def test_ends_after_inactivity(self) -> None:
        call = self.make(timeout=10.0)
        call.startService()
        self.clock.advance(6)
        call.audio_in(0, const(1, 320))
        self.clock.advance(9)
        self.assertTrue(call.running)
        self.clock.advance(1)
        self.assertFalse(call.running)
        ended = self.events[-1]
        assert isinstance(ended, CallEnded)
        self.assertEqual((ended.reason, ended.duration), ("inactivity", 16.0))
        self.assertEqual(self.ended, [call])

    def test_a_held_line_keeps_a_silent_call(self) -> None:
        line = RecordingTransport(line_open=True)
        call = self.make(transports=(RecordingTransport(), line))
        call.startService()
        self.clock.advance(35)
        self.assertTrue(call.running)
        line.line_open = False
        self.clock.advance(10)
        self.assertFalse(call.running)
        self.assertEqual(call.end_reason, "inactivity")

    def test_end_cleans_up_once(self) -> None:
        call = self.make()
        call.startService()
        call.playouts[1].output.write(const(3, 640))
        d1 = call.end("hangup")
        d2 = call.end("other")
        self.assertIs(d1, d2)
        self.successResultOf(d1)
        self.assertEqual(call.end_reason, "hangup")
        self.assertEqual([t.resets for t in self.transports], [1, 1])
        self.assertEqual(call.playouts[1].output.depth_ms, 0.0)
        self.assertTrue(all(x.pipeline.stopped for x in self.recorder.built))
        self.assertEqual(len(self.egress), 0)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # the egress loop; no inactivity timer
        self.assertEqual([type(e) for e in self.events], [CallStarted, CallEnded])

    def test_a_failing_pipeline_stop_is_logged_and_the_call_still_ends(self) -> None:
        call = self.make(RecordingFactory(fail_stop=True))
        call.startService()
        self.successResultOf(call.end("hangup"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual(type(self.events[-1]), CallEnded)
        self.assertEqual(self.ended, [call])

    def test_status(self) -> None:
        call = self.make()
        self.clock.advance(1)
        call.startService()
        status = call.status()
        self.assertEqual((status["call_id"], status["started_at"]), ("call-1", 1.0))
        self.assertEqual([leg["extension"] for leg in status["legs"]], ["7777", "8888"])
