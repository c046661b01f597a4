"""
Tests for xlbridge.call.playout: what one caller hears, as the call builds
it for a relay and for translated speech.
"""

from __future__ import annotations

import numpy as np
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.buffer import OutboundBuffer
from xlbridge.audio.mix import ComfortNoise, OutputMix, Utterance
from xlbridge.call.playout import HEARD_KEEP, Playout, SpeechOutput


def const(value: int, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


class RelayPlayoutTests(SynchronousTestCase):
    def test_a_bounded_buffer_and_silence(self) -> None:
        p = Playout.relay(40)
        self.assertIsInstance(p.output, OutboundBuffer)
        self.assertEqual((p.filler, p.mix), (None, None))
        self.assertEqual(p.output.write(const(1, 700)), 60)  # 40 ms = 640 samples
        self.assertFalse(p.playing_speech)


class SpeechPlayoutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def test_mix_is_the_output_with_comfort_noise(self) -> None:
        p = Playout.speech(SpeechOutput(comfort_noise_dbfs=-60.0), self.clock)
        self.assertIsInstance(p.mix, OutputMix)
        self.assertIs(p.output, p.mix)
        self.assertIsInstance(p.filler, ComfortNoise)

    def test_no_comfort_noise(self) -> None:
        p = Playout.speech(SpeechOutput(comfort_noise_dbfs=None), self.clock)
        self.assertIsNone(p.filler)

    def test_settings_reach_the_mix(self) -> None:
        p = Playout.speech(SpeechOutput(backlog_s=2.0, live_ms=40, bed_db=-20.0, gain_db=6.0), self.clock)
        mix = p.mix
        assert mix is not None
        self.assertEqual(mix.speech.max_samples, 32000)
        self.assertEqual(mix.live.max_samples, 640)
        self.assertAlmostEqual(mix.bed_gain or 0.0, 0.1)
        self.assertAlmostEqual(mix.gain, 1.995, places=3)

    def test_utterance_start_dated_by_the_clock(self) -> None:
        p = Playout.speech(SpeechOutput(), self.clock)
        assert p.mix is not None
        u = p.mix.speech.add(Utterance(1))
        u.add(const(5, 640))
        self.clock.advance(3.5)
        p.output.read_frame()
        self.assertEqual(u.started_at, 3.5)

    def test_playing_speech_while_an_utterance_plays(self) -> None:
        p = Playout.speech(SpeechOutput(), self.clock)
        assert p.mix is not None
        u = p.mix.speech.add(Utterance(1))
        u.add(const(5, 640))
        u.finish()
        self.assertFalse(p.playing_speech)  # queued, not started
        p.output.read_frame()
        self.assertTrue(p.playing_speech)
        p.output.read_frame()
        self.assertFalse(p.playing_speech)


class HeardTests(SynchronousTestCase):
    def test_played_is_remembered_and_bounded(self) -> None:
        p = Playout.relay(200)
        for i in range(HEARD_KEEP + 5):
            p.played(float(i), f"text {i}")
        self.assertEqual(len(p.heard), HEARD_KEEP)
        self.assertEqual(p.heard[0], (5.0, "text 5"))
        self.assertEqual(p.heard[-1], (float(HEARD_KEEP + 4), f"text {HEARD_KEEP + 4}"))

    def test_clear_forgets_output_and_heard(self) -> None:
        p = Playout.speech(SpeechOutput(bed_db=-20.0), Clock())
        assert p.mix is not None
        p.mix.speech.add(Utterance(1)).add(const(1, 320))
        p.output.write(const(2, 320))
        p.played(1.0, "hola")
        p.clear()
        self.assertEqual((p.output.depth_ms, len(p.heard), len(p.mix.speech)), (0.0, 0, 0))
