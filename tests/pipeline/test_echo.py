"""
Tests for the echo guard: through a call (the text guard drops a caller's
own translation coming back; the gate feeds the recogniser silence while
the caller hears translated speech), and on its own, given a playout.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.audio.mix import Utterance
from xlbridge.call.playout import Playout, SpeechOutput
from xlbridge.events import UtteranceDropped
from xlbridge.pipeline.echo import EchoGuard
from xlbridge.pipeline.settings import TranslateSettings, similarity
from xlbridge.testing import pump_ticks

from tests.pipeline.harness import Harness, const

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


class GuardTests(SynchronousTestCase):
    """
    The guard on its own: it watches the playout it was given (what its
    caller hears) and nothing else.
    """

    def setUp(self) -> None:
        self.played = Playout.speech(SpeechOutput(comfort_noise_dbfs=None), Clock())

    def start_playing(self) -> Utterance:
        assert self.played.mix is not None
        u = self.played.mix.speech.add(Utterance(1, "hello"))
        u.add(const(1, 640))
        u.finish()
        self.played.output.read_frame()
        return u

    def test_gate_open_while_nothing_plays(self) -> None:
        guard = EchoGuard(self.played, TranslateSettings(echo_guard="gate"))
        self.assertTrue(guard.gates)
        self.assertFalse(guard.gate_closed(0.0))

    def test_gate_closed_while_speech_plays_and_for_the_tail(self) -> None:
        guard = EchoGuard(self.played, TranslateSettings(echo_guard="gate", gate_tail_ms=300))
        self.start_playing()
        self.assertTrue(guard.gate_closed(1.0))
        self.played.output.read_frame()  # the utterance ends
        self.assertFalse(self.played.playing_speech)
        self.assertTrue(guard.gate_closed(1.29))
        self.assertFalse(guard.gate_closed(1.31))

    def test_a_relay_playout_never_closes_the_gate(self) -> None:
        relay = Playout.relay(200)
        relay.output.write(const(1, 640))
        guard = EchoGuard(relay, TranslateSettings(echo_guard="both"))
        self.assertFalse(guard.gate_closed(0.0))

    def test_text_guard_matches_what_was_played_within_the_window(self) -> None:
        guard = EchoGuard(self.played, TranslateSettings(echo_guard="text", echo_window_s=8.0))
        self.assertFalse(guard.gates)
        self.played.played(10.0, "where is the hospital")
        self.assertTrue(guard.is_echo("Where is the hospital?", 12.0))
        self.assertFalse(guard.is_echo("thank you very much", 12.0))
        self.assertFalse(guard.is_echo("where is the hospital", 18.5))

    def test_text_guard_off(self) -> None:
        guard = EchoGuard(self.played, TranslateSettings(echo_guard="off"))
        self.played.played(1.0, "hola")
        self.assertFalse(guard.is_echo("hola", 1.0))
        self.assertFalse(guard.gates)
