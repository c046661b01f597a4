"""
Tests for xlbridge.audio.mix: the speech queue's order, waiting and backlog
bound, and the output mix's speech, live voice, bed, fallback, gain and
depth; comfort noise.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.mix import ComfortNoise, OutputMix, SpeechQueue, Utterance, apply_gain, db_to_gain


def const(value: int, n: int) -> np.ndarray:
    return np.full(n, value, dtype=np.int16)


class GainTests(SynchronousTestCase):
    def test_db_to_gain(self) -> None:
        self.assertEqual(db_to_gain(0.0), 1.0)
        self.assertAlmostEqual(db_to_gain(-20.0), 0.1)
        self.assertAlmostEqual(db_to_gain(6.0), 1.995, places=3)

    def test_unity_gain_is_the_same_array(self) -> None:
        samples = const(5, 320)
        self.assertIs(apply_gain(samples, 1.0), samples)

    def test_gain_saturates_instead_of_wrapping(self) -> None:
        out = apply_gain(np.array([20000, -20000, 100], dtype=np.int16), 2.0)
        self.assertEqual(out.tolist(), [32767, -32768, 200])
        self.assertEqual(out.dtype, np.int16)


class UtteranceTests(SynchronousTestCase):
    def test_audio_is_ignored_once_dropped(self) -> None:
        u = Utterance(1, "hola")
        u.add(const(1, 320))
        u.dropped = True
        u.add(const(1, 320))
        self.assertEqual((len(u), u.received_samples), (320, 320))


class SpeechQueueTests(SynchronousTestCase):
    def test_plays_in_queue_order_whatever_order_audio_arrives(self) -> None:
        q = SpeechQueue()
        first, second = q.add(Utterance(1)), q.add(Utterance(2))
        second.add(const(2, 320))
        second.finish()
        self.assertIsNone(q.read_frame(0.0))  # the head has nothing yet: wait
        first.add(const(1, 320))
        first.finish()
        frames = [q.read_frame(t) for t in (0.02, 0.04, 0.06)]
        self.assertEqual([None if f is None else int(f[0]) for f in frames], [1, 2, None])

    def test_start_and_end_reported_with_start_time(self) -> None:
        q = SpeechQueue()
        log: list[tuple[str, int, Optional[float]]] = []
        u = q.add(Utterance(7))
        u.on_start = lambda u: log.append(("start", u.uid, u.started_at))
        u.on_end = lambda u: log.append(("end", u.uid, u.started_at))
        u.add(const(1, 640))
        u.finish()
        self.assertFalse(q.playing)
        q.read_frame(1.5)
        self.assertTrue(q.playing)
        q.read_frame(1.52)
        self.assertFalse(q.playing)
        self.assertEqual(log, [("start", 7, 1.5), ("end", 7, 1.5)])
        self.assertEqual(len(q), 0)

    def test_partial_frame_waits_one_tick_then_plays_padded(self) -> None:
        q = SpeechQueue()
        u = q.add(Utterance(1))
        u.add(const(3, 100))
        self.assertIsNone(q.read_frame(0.0))
        f = q.read_frame(0.02)
        assert f is not None
        self.assertEqual((f[:100].tolist(), f[100:].any()), ([3] * 100, False))

    def test_not_before_holds_the_head(self) -> None:
        q = SpeechQueue()
        u = q.add(Utterance(1))
        u.add(const(4, 320))
        u.not_before = 1.0
        self.assertIsNone(q.read_frame(0.98))
        f = q.read_frame(1.0)
        assert f is not None
        self.assertEqual(int(f[0]), 4)

    def test_backlog_drops_the_oldest_and_keeps_the_newest(self) -> None:
        dropped: list[Utterance] = []
        q = SpeechQueue(backlog_s=1.0, on_drop=dropped.append)
        a, b, c = q.add(Utterance(1, "a")), q.add(Utterance(2, "b")), q.add(Utterance(3, "c"))
        a.add(const(1, 8000))
        b.add(const(2, 8000))
        q.enforce_bound()
        self.assertEqual(dropped, [])  # exactly 1 s pending
        c.add(const(3, 8000))
        q.enforce_bound()
        self.assertEqual([u.text for u in dropped], ["a"])
        self.assertTrue(a.dropped)
        self.assertEqual((q.dropped, q.pending_samples(), [u.uid for u in q]), (1, 16000, [2, 3]))

    def test_a_single_long_utterance_is_kept(self) -> None:
        q = SpeechQueue(backlog_s=1.0)
        q.add(Utterance(1)).add(const(1, 48000))
        q.enforce_bound()
        self.assertEqual((q.dropped, len(q)), (0, 1))

    def test_clear_marks_everything_dropped(self) -> None:
        q = SpeechQueue()
        u = q.add(Utterance(1))
        q.clear()
        self.assertEqual((len(q), u.dropped), (0, True))


class OutputMixTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.now = 0.0
        self.queue = SpeechQueue()

    def mix(self, live_ms: int = 200, bed_db: Optional[float] = None, gain_db: float = 0.0) -> OutputMix:
        return OutputMix(self.queue, lambda: self.now, live_ms, bed_db, gain_db)

    def speak(self, value: int, n: int = 320) -> Utterance:
        u = self.queue.add(Utterance(len(self.queue) + 1))
        u.add(const(value, n))
        u.finish()
        return u

    def test_speech_alone(self) -> None:
        m = self.mix()
        self.speak(100)
        f = m.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 100)
        self.assertIsNone(m.read_frame())

    def test_live_voice_is_not_kept_without_fallback_or_bed(self) -> None:
        m = self.mix()
        self.assertEqual(m.write(const(50, 320)), 0)
        self.assertEqual(m.depth_ms, 0.0)
        self.assertIsNone(m.read_frame())

    def test_fallback_relays_the_live_voice_at_full_level(self) -> None:
        m = self.mix()
        m.fallback = True
        m.write(const(50, 320))
        f = m.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 50)

    def test_fallback_mixes_speech_still_queued_with_the_live_voice(self) -> None:
        m = self.mix()
        m.fallback = True
        self.speak(100)
        m.write(const(50, 320))
        f = m.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 150)

    def test_idle_drops_the_live_voice_and_keeps_speech(self) -> None:
        """
        While the listener cannot be sent to, the partner's live voice
        would only pile up as delay: dropped.  A translation waits.
        """
        m = self.mix()
        m.fallback = True
        self.speak(100)
        m.write(const(50, 320 * 5))
        m.idle()
        self.assertEqual(m.live.idle_samples, 320 * 5)
        f = m.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 100)
        self.assertIsNone(m.read_frame())

    def test_bed_under_speech(self) -> None:
        m = self.mix(bed_db=-20.0)
        m.write(const(1000, 320))
        f = m.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 100)  # the bed alone, at -20 dB
        self.speak(500)
        m.write(const(1000, 320))
        f = m.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 600)

    def test_mix_saturates(self) -> None:
        m = self.mix()
        m.fallback = True
        self.speak(30000)
        m.write(const(30000, 320))
        f = m.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 32767)

    def test_output_gain_applies_to_speech_and_live(self) -> None:
        m = self.mix(gain_db=6.0)
        self.speak(1000)
        f = m.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 1995)
        m.fallback = True
        m.write(const(1000, 320))
        f = m.read_frame()
        assert f is not None
        self.assertEqual(int(f[0]), 1995)

    def test_live_buffer_is_bounded_drop_oldest(self) -> None:
        m = self.mix(live_ms=40)
        m.fallback = True
        self.assertEqual(m.write(const(1, 700)), 60)
        self.assertEqual(m.dropped_samples, 60)

    def test_depth_counts_pending_speech_and_live(self) -> None:
        m = self.mix(bed_db=-20.0)
        self.speak(1, 1600)
        m.write(const(1, 320))
        self.assertEqual(m.depth_ms, 120.0)

    def test_utterance_start_dated_by_the_clock(self) -> None:
        m = self.mix()
        u = self.speak(1)
        self.now = 4.25
        m.read_frame()
        self.assertEqual(u.started_at, 4.25)

    def test_clear(self) -> None:
        m = self.mix(bed_db=-20.0)
        self.speak(1)
        m.write(const(1, 320))
        m.clear()
        self.assertEqual((m.depth_ms, len(self.queue)), (0.0, 0))


class ComfortNoiseTests(SynchronousTestCase):
    def test_level_and_frame_length(self) -> None:
        noise = ComfortNoise(-60.0, seed=1)
        frames = np.concatenate([noise() for _ in range(100)]).astype(np.float64)
        self.assertEqual(len(frames), 32000)
        rms_db = 20 * np.log10(np.sqrt(np.mean(frames**2)) / 32768)
        self.assertLess(abs(rms_db + 60), 1.0)

    def test_frames_are_copies(self) -> None:
        noise = ComfortNoise(-60.0, seed=1)
        f = noise()
        f[:] = 0
        self.assertTrue(noise().any())
