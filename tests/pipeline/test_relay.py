"""
Tests for xlbridge.pipeline.relay: the partner hears the caller's voice,
through what the call gave it, with overflow counted on the partner.
"""

from __future__ import annotations

import numpy as np
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout
from xlbridge.events import DropReason
from xlbridge.interfaces import IPipeline
from xlbridge.pipeline.relay import RelayPipeline, relay_factory

from tests.call.recording import RecordingContext, RecordingTransport


def const(value: int, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


class RelayTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.a = Leg("7777", "en", RecordingTransport())
        self.b = Leg("8888", "es", RecordingTransport())
        self.hears_a = Playout.relay(200)
        self.hears_b = Playout.relay(40)

    def test_factory_relays_both_ways(self) -> None:
        self.assertIsNone(relay_factory.speech_output(self.b, self.a))
        pipeline = relay_factory(
            self.a, self.b, RecordingContext(), partner_hears=self.hears_b, source_hears=self.hears_a
        )
        self.assertIsInstance(pipeline, RelayPipeline)
        verifyObject(IPipeline, pipeline)

    def test_voice_goes_to_what_the_partner_hears_only(self) -> None:
        RelayPipeline(self.a, self.b, self.hears_b).audio_in(const(7, 320))
        frame = self.hears_b.output.read_frame()
        assert frame is not None
        self.assertEqual(frame.tolist(), [7] * 320)
        self.assertEqual(self.hears_a.output.depth_ms, 0.0)

    def test_overflow_drops_the_oldest_counted_on_the_partner(self) -> None:
        relay = RelayPipeline(self.a, self.b, self.hears_b)
        relay.audio_in(const(1, 600))
        relay.audio_in(const(2, 100))  # 40 ms hold 640 samples
        self.assertEqual(self.b.counters.drops[DropReason.BUFFER_FULL], 60)
        self.assertEqual(self.a.counters.drops[DropReason.BUFFER_FULL], 0)
