"""
Tests for xlbridge.call.leg: one frame per tick from what the caller hears,
comfort noise, taps, catch-up accounting, reset and status.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from xlbridge.audio.frame import Samples
from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout, SpeechOutput
from xlbridge.interfaces import ILegTransport

from tests.call.recording import RecordingTransport


def const(value: int, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


class EgressTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.transport = RecordingTransport()
        verifyObject(ILegTransport, self.transport)
        self.leg = Leg("7777", "en", self.transport, buffer_ms=200)

    def test_a_leg_alone_hears_a_relay_of_its_buffer_bound(self) -> None:
        self.assertIsNone(self.leg.playout.mix)
        self.assertEqual(self.leg.playout.output.write(const(1, 3300)), 100)  # 200 ms = 3200

    def test_one_frame_per_packet_from_the_playout(self) -> None:
        self.leg.playout.output.write(const(7, 320))
        self.leg.egress(1, 0)
        self.leg.egress(1, 0)
        (first, speech1), (second, speech2) = self.transport.take()
        assert first is not None
        self.assertEqual((int(first[0]), len(first), speech1), (7, 320, None))
        self.assertEqual((second, speech2), (None, None))  # digital silence

    def test_filler_when_nothing_plays_without_speech_flag(self) -> None:
        noise = const(3, 320)
        self.leg.playout = Playout(self.leg.playout.output, lambda: noise)
        self.leg.egress(1, 0)
        ((frame, speech),) = self.transport.take()
        self.assertIs(frame, noise)
        self.assertIs(speech, False)

    def test_reads_the_playout_the_call_gave_it(self) -> None:
        playout = Playout.relay(200)
        playout.output.write(const(9, 320))
        self.leg.playout = playout
        self.leg.egress(1, 0)
        ((frame, _),) = self.transport.take()
        assert frame is not None
        self.assertEqual(int(frame[0]), 9)

    def test_tap_out_sees_every_frame(self) -> None:
        seen: list[Optional[Samples]] = []
        self.leg.tap_out = seen.append
        self.leg.playout.output.write(const(4, 320))
        self.leg.egress(2, 0)
        self.assertEqual(len(seen), 2)
        assert seen[0] is not None
        self.assertEqual(int(seen[0][0]), 4)
        self.assertIsNone(seen[1])

    def test_nothing_sent_until_ready(self) -> None:
        self.transport.ready = False
        self.leg.egress(3, 2)
        self.assertEqual((self.transport.sent, self.transport.skipped), ([], []))
        self.assertEqual(self.leg.counters.late_ticks, 0)

    def test_catch_up_and_skips_are_counted(self) -> None:
        self.leg.egress(3, 2)
        self.assertEqual(len(self.transport.take()), 3)
        self.assertEqual(self.transport.skipped, [2])
        self.assertEqual((self.leg.counters.late_ticks, self.leg.counters.skipped_ticks), (4, 2))


class LifecycleTests(SynchronousTestCase):
    def test_reset_clears_what_was_to_play_and_resets_the_transport(self) -> None:
        transport = RecordingTransport()
        leg = Leg("7777", "en", transport)
        leg.playout = Playout.speech(SpeechOutput(bed_db=-20.0), Clock())
        leg.playout.output.write(const(1, 640))
        leg.playout.played(1.0, "hola")
        leg.reset()
        self.assertEqual((leg.playout.output.depth_ms, len(leg.playout.heard)), (0.0, 0))
        self.assertEqual(transport.resets, 1)

    def test_status(self) -> None:
        leg = Leg("7777", "en", RecordingTransport(), buffer_ms=40)
        leg.playout.output.write(const(1, 700))
        status = leg.status()
        self.assertEqual(
            {k: status[k] for k in ("extension", "language", "transport", "buffer_ms", "buffer_dropped_samples")},
            {"extension": "7777", "language": "en", "transport": {"kind": "recording"},
             "buffer_ms": 40.0, "buffer_dropped_samples": 60},
        )
        self.assertEqual(status["counters"], leg.counters.snapshot())

    def test_line_open_follows_a_transport_that_holds_the_line(self) -> None:
        transport = RecordingTransport(line_open=True)
        leg = Leg("7777", "en", transport)
        self.assertTrue(leg.line_open)
        transport.line_open = False
        self.assertFalse(leg.line_open)

    def test_no_open_line_by_default(self) -> None:
        self.assertFalse(Leg("7777", "en", RecordingTransport()).line_open)
