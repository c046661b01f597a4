"""
Speculative translation (:mod:`xlbridge.pipeline.speculate`) through a
whole call on a memory reactor with controllable engines: MT and TTS start
on an eager end of turn, the result is held until the turn ends with the
same words, and withdrawn unheard when the speaker goes on.
"""

from __future__ import annotations

from typing import Any

from tests.pipeline.harness import Harness, const
from xlbridge.engines.base import EagerEnd, EngineUnavailable, Transcript, TurnResumed
from xlbridge.events import EngineStatusEvent, PlaybackStarted, SpeculationEvent, UtteranceDropped
from xlbridge.pipeline.translate import TranslateSettings
from xlbridge.testing import pump_ticks


class SpeculationHarness(Harness):
    """The harness with eager ends, resumptions and turn ends to drive; no tests of its own."""

    def eager(self, text: str, ext: str = "7777") -> None:
        now = self.reactor.seconds()
        self.asr.made[ext].emit(EagerEnd(Transcript(text, False, False, 0.0, 0.02, now, speech_end=0.02)))

    def resumed(self, ext: str = "7777") -> None:
        self.asr.made[ext].emit(TurnResumed(self.reactor.seconds()))

    def end_of_turn(self, text: str, ext: str = "7777") -> None:
        self.final(ext, text, speech_final=True)

    def translate(self, index: int, text: str) -> Any:
        """Answer MT request ``index`` with ``text``; the TTS request it makes."""
        self.mt.requests[index][4].callback(text)
        return self.tts.requests[-1]

    def voiced(self, port: int = 8888) -> list[int]:
        return [int(f[0]) for f in self.heard(port) if f.any()]

    def outcomes(self) -> list[tuple[str, str]]:
        return [(e.outcome, e.reason) for e in self.of(SpeculationEvent)]



class SpeculationTests(SpeculationHarness):
    def test_eager_then_end_of_turn_plays_once_early(self) -> None:
        self.heard(8888)
        self.eager("hello world")
        # MT starts at the eager event, before the turn has ended.
        self.assertEqual([r[0] for r in self.mt.requests], ["hello world"])
        _, _, audio, done = self.translate(0, "hola mundo")
        audio(const(5, 640))
        done.callback(None)
        pump_ticks(self.reactor, 5)
        self.assertEqual(self.voiced(), [])  # held: the turn has not ended
        self.end_of_turn("hello world")
        self.assertEqual(len(self.mt.requests), 1)  # nothing translated twice
        pump_ticks(self.reactor, 4)
        self.assertEqual(self.voiced(), [5, 5])
        self.assertEqual([s.text for s in self.of(PlaybackStarted)], ["hola mundo"])
        self.assertEqual(self.outcomes(), [("started", ""), ("used", "")])
        self.assertEqual(self.p_en.speculator.status(), {"started": 1, "used": 1, "wasted": 0, "open": False})

    def test_eager_resumed_then_end_only_the_final_is_heard(self) -> None:
        self.heard(8888)
        self.eager("I want")
        _, _, audio, _ = self.translate(0, "quiero")
        audio(const(7, 640))
        self.resumed()
        # The withdrawn speculation's synthesis was cancelled (its
        # Deferred fired with CancelledError, which the pipeline consumed).
        self.assertTrue(self.tts.requests[0][3].called)
        audio(const(7, 640))  # late audio of the withdrawn one: ignored
        self.eager("I want a coffee")
        _, _, audio2, done2 = self.translate(1, "quiero un cafe")
        audio2(const(9, 640))
        done2.callback(None)
        self.end_of_turn("I want a coffee")
        pump_ticks(self.reactor, 6)
        self.assertEqual(self.voiced(), [9, 9])
        self.assertEqual([s.text for s in self.of(PlaybackStarted)], ["quiero un cafe"])
        self.assertEqual(self.outcomes(), [("started", ""), ("wasted", "resumed"), ("started", ""), ("used", "")])
        self.assertEqual(self.of(UtteranceDropped), [])  # a withdrawal is not a drop

    def test_mt_in_flight_is_cancelled_on_resume(self) -> None:
        self.eager("I want")
        self.resumed()
        self.assertTrue(self.mt.requests[0][4].called)  # cancelled
        self.assertEqual(self.tts.requests, [])
        self.assertEqual(self.of(EngineStatusEvent), [])  # a cancel is not an engine failure

    def test_end_with_other_words_wastes_and_speaks_the_final(self) -> None:
        self.heard(8888)
        self.eager("see you")
        self.translate(0, "nos vemos")
        self.end_of_turn("see you tomorrow")
        self.assertEqual([r[0] for r in self.mt.requests], ["see you", "see you tomorrow"])
        _, _, audio, done = self.translate(1, "hasta manana")
        audio(const(3, 320))
        done.callback(None)
        pump_ticks(self.reactor, 4)
        self.assertEqual(self.voiced(), [3])
        self.assertEqual(self.outcomes(), [("started", ""), ("wasted", "changed"), ])

    def test_order_kept_behind_an_earlier_utterance(self) -> None:
        self.heard(8888)
        self.end_of_turn("first")
        self.eager("second")
        _, _, audio2, done2 = self.translate(1, "segundo")
        audio2(const(2, 320))
        done2.callback(None)
        self.end_of_turn("second")
        pump_ticks(self.reactor, 3)
        self.assertEqual(self.voiced(), [])  # the first is still being translated
        _, _, audio1, done1 = self.translate(0, "primero")
        audio1(const(1, 320))
        done1.callback(None)
        pump_ticks(self.reactor, 6)
        self.assertEqual(self.voiced(), [1, 2])

    def test_held_speculation_blocks_nothing_said_before(self) -> None:
        self.heard(8888)
        self.end_of_turn("first")
        _, _, audio1, done1 = self.translate(0, "primero")
        audio1(const(1, 320))
        done1.callback(None)
        self.eager("second")
        self.translate(1, "segundo")[2](const(2, 320))
        pump_ticks(self.reactor, 4)
        self.assertEqual(self.voiced(), [1])  # the earlier one plays; the speculation waits
        self.resumed()
        pump_ticks(self.reactor, 4)
        self.assertEqual(self.voiced(), [])

    def test_engine_error_during_speculation_falls_back(self) -> None:
        self.eager("hello")
        self.mt.requests[0][4].errback(EngineUnavailable("mt", "down"))
        (down,) = self.of(EngineStatusEvent)
        self.assertEqual((down.engine, down.state), ("mt", "down"))
        self.end_of_turn("hello")  # a failed speculation is still confirmed; nothing is played twice
        self.assertEqual(len(self.mt.requests), 1)

    def test_same_eager_twice_is_one_speculation(self) -> None:
        self.eager("hello there")
        self.eager("Hello there.")
        self.assertEqual(len(self.mt.requests), 1)
        self.assertEqual(self.outcomes(), [("started", "")])

    def test_never_settled_speculation_expires(self) -> None:
        self.heard(8888)
        self.eager("hello")
        self.translate(0, "hola")[2](const(6, 320))
        self.reactor.advance(4.9)
        self.assertEqual(self.outcomes(), [("started", "")])
        self.reactor.advance(0.2)
        self.assertEqual(self.outcomes(), [("started", ""), ("wasted", "timeout")])
        # the queue is free again
        self.end_of_turn("later words")
        _, _, audio, done = self.translate(1, "otras palabras")
        audio(const(8, 320))
        done.callback(None)
        pump_ticks(self.reactor, 3)
        self.assertEqual(self.voiced(), [8])

    def test_call_end_wastes_the_open_speculation(self) -> None:
        self.eager("hello")
        self.bridge.stopService()
        self.assertEqual(self.outcomes(), [("started", ""), ("wasted", "stopped")])


class BacklogTests(SpeculationHarness):
    """The backlog bound with a speculation held: older speech is dropped, never the held turn."""

    settings = TranslateSettings(comfort_noise_dbfs=None, backlog_s=0.5)

    def test_bound_drops_older_speech_not_the_held_turn(self) -> None:
        self.heard(8888)
        self.end_of_turn("first")
        self.end_of_turn("second")
        _, _, audio1, _ = self.translate(0, "primero")
        audio1(const(1, 6400))  # 0.4 s, not yet complete
        _, _, audio2, done2 = self.translate(1, "segundo")
        audio2(const(2, 3200))  # 0.6 s pending: over the 0.5 s bound
        done2.callback(None)
        self.eager("third")
        _, _, audio3, done3 = self.translate(2, "tercero")
        audio3(const(3, 4800))  # 0.3 s held: the bound drops the oldest, never the newest
        done3.callback(None)
        dropped = [(e.text, e.reason) for e in self.of(UtteranceDropped)]
        self.assertEqual(dropped[0], ("primero", "backlog"))
        self.assertNotIn("tercero", [text for text, _ in dropped])
        self.end_of_turn("third")
        pump_ticks(self.reactor, 80)
        # What is left plays in order, one after the other: the second whole,
        # then the confirmed speculation whole.
        self.assertEqual(self.voiced(), [2] * 10 + [3] * 15)
        self.assertEqual(self.outcomes(), [("started", ""), ("used", "")])


class EarlyPlayTests(Harness):
    settings = TranslateSettings(comfort_noise_dbfs=None, early_play_ms=100)

    def test_plays_after_the_stability_delay_before_the_end(self) -> None:
        self.heard(8888)
        now = self.reactor.seconds()
        self.asr.made["7777"].emit(EagerEnd(Transcript("hello", False, False, 0.0, 0.02, now, speech_end=0.02)))
        self.mt.requests[0][4].callback("hola")
        _, _, audio, done = self.tts.requests[0]
        audio(const(4, 640))
        done.callback(None)
        pump_ticks(self.reactor, 3)  # 60 ms: still held
        self.assertEqual([int(f[0]) for f in self.heard(8888) if f.any()], [])
        pump_ticks(self.reactor, 4)
        self.assertEqual([int(f[0]) for f in self.heard(8888) if f.any()], [4, 4])
        self.final("7777", "hello", speech_final=True)
        (used,) = [e for e in self.of(SpeculationEvent) if e.outcome == "used"]
        self.assertTrue(used.early)
        self.assertEqual(len(self.mt.requests), 1)


