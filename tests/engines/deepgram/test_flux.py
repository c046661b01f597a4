"""
Tests for :class:`xlbridge.engines.deepgram.flux.FluxASR` (and the Flux
dialect of :class:`~xlbridge.engines.deepgram.connection.DeepgramConnection`):
its state machine on a ``MemoryReactorClock`` with a recording stand-in
protocol, then the real client against :mod:`tests.fakes.deepgram_flux` on
loopback with the real reactor.
"""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np
from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.engines.deepgram.fixtures import KEY, RecordingProto, eventually, reactor, silence_ms, sleep
from tests.fakes import tonewords
from tests.fakes.deepgram_flux import start_fake_flux
from xlbridge.engines.base import (
    EagerEnd,
    EngineDown,
    EngineUnavailable,
    EngineUp,
    SpeechStarted,
    Transcript,
    TurnResumed,
)
from xlbridge.engines.deepgram.connection import State
from xlbridge.engines.deepgram.flux import FluxASR
from xlbridge.engines.deepgram.settings import DeepgramSettings


def turn(event: str, transcript: str, start: float, end: float, seq: int, turn_index: int = 0,
         words: Optional[list[tuple[str, float, float]]] = None, **extra: Any) -> bytes:
    """A Flux ``TurnInfo`` message (PROTOCOLS.md 11.2)."""
    ws = words if words is not None else [(w, start, end) for w in transcript.split()]
    msg = {"type": "TurnInfo", "request_id": "r1", "sequence_id": seq, "event": event, "turn_index": turn_index,
           "audio_window_start": start, "audio_window_end": end, "transcript": transcript,
           "words": [{"word": w, "confidence": 0.9, "start": s, "end": e} for w, s, e in ws],
           "end_of_turn_confidence": 0.5, **extra}
    return json.dumps(msg).encode()


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ + ("/final" if isinstance(e, Transcript) and e.is_final else "") for e in events]


class FluxStateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.events: list[Any] = []
        self.settings = DeepgramSettings(api_key=KEY, base_url="ws://dg.test:8801", api="flux",
                                         eager_eot_threshold=0.5, keepalive_s=1.0, replay_s=5.0,
                                         finish_timeout_s=3.0)
        self.asr = FluxASR(self.clock, self.settings, "en", self.events.append, call_id="c1", extension="7777",
                           random=lambda: 0.0)

    def open(self) -> RecordingProto:
        p = RecordingProto()
        conn = self.asr.connection
        conn.ws_built(conn.connect_attempts, p)  # type: ignore[arg-type]
        conn.ws_open(p)  # type: ignore[arg-type]
        return p

    def say(self, *messages: bytes) -> None:
        for m in messages:
            self.asr.message_received(m, False)

    def test_turn_events_in_stream_time(self) -> None:
        """Start, update, eager, end: SpeechStarted, interim, EagerEnd, then the final with the same text."""
        self.asr.start()
        self.assertIn("/v2/listen?model=flux-general-en", self.clock.tcpClients[0][2].resource)
        self.asr.feed(silence_ms(1000))  # the connection's time 0 is stream second 0 ...
        self.open()
        self.asr.session.offset = 2.0  # ... but pretend it opened later, after a reconnect
        words = [("hello", 0.1, 0.4), ("world", 0.5, 0.8)]
        self.say(b'{"type": "Connected", "request_id": "r1", "sequence_id": 0}',
                 turn("StartOfTurn", "hello", 0.0, 0.3, 1, words=words[:1]),
                 turn("Update", "hello world", 0.0, 0.6, 2, words=words),
                 turn("EagerEndOfTurn", "hello world", 0.0, 0.95, 3, words=words),
                 turn("EndOfTurn", "hello world", 0.0, 1.06, 4, words=words, trigger="model"))
        self.assertEqual(kinds(self.events), ["SpeechStarted", "Transcript", "EagerEnd", "Transcript/final"])
        started, interim, eager, final = self.events
        self.assertEqual(started.timestamp, 2.1)
        self.assertEqual((interim.text, interim.is_final), ("hello world", False))
        assert isinstance(eager, EagerEnd)
        self.assertEqual((eager.transcript.text, eager.transcript.is_final, eager.transcript.speech_end),
                         ("hello world", False, 2.8))
        self.assertEqual((final.text, final.is_final, final.speech_final), ("hello world", True, True))
        self.assertEqual((final.start, final.end, final.speech_end), (2.0, 3.06, 2.8))
        self.assertAlmostEqual(final.confidence, 0.9)
        self.assertEqual(self.asr.session.final_end, 3.06)
        self.assertEqual(self.asr.session.request_id, "r1")
        self.assertEqual((self.asr.speculations_started, self.asr.speculations_used,
                          self.asr.speculations_wasted), (1, 1, 0))

    def test_no_words_speech_end_is_window_end(self) -> None:
        self.asr.start()
        self.open()
        self.say(turn("StartOfTurn", "", 0.0, 0.2, 0, words=[]),
                 turn("EndOfTurn", "yes", 0.0, 0.9, 1, words=[]))
        self.assertEqual(self.events[-1].speech_end, 0.9)

    def test_resumed_and_changed_end(self) -> None:
        """TurnResumed withdraws; an end that differs from the eager one (a broken rule) withdraws it first."""
        self.asr.start()
        self.open()
        self.say(turn("StartOfTurn", "a", 0, 0.2, 0), turn("EagerEndOfTurn", "hello", 0, 0.5, 1),
                 turn("TurnResumed", "hello", 0, 0.6, 2), turn("EagerEndOfTurn", "hello you", 0, 0.9, 3),
                 turn("EndOfTurn", "hello there", 0, 1.0, 4))
        self.assertEqual(kinds(self.events), ["SpeechStarted", "EagerEnd", "TurnResumed", "EagerEnd", "TurnResumed",
                                              "Transcript/final"])
        self.assertEqual(self.events[-1].text, "hello there")
        self.assertEqual((self.asr.speculations_used, self.asr.speculations_wasted), (0, 2))
        self.assertEqual(self.asr.session.tracker.violations, {"end_differs_from_eager": 1})

    def test_languages_heard_label_the_transcripts(self) -> None:
        """flux-general-multi: the first of ``languages`` (most heard) is each transcript's language."""
        self.asr.start()
        self.open()
        self.say(turn("StartOfTurn", "hola", 0, 0.2, 0, languages=["es"]),
                 turn("EagerEndOfTurn", "hola mundo ok", 0, 0.5, 1, languages=["es", "en"]),
                 turn("EndOfTurn", "hola mundo ok", 0, 0.7, 2, languages=["es-MX", "en"]),
                 turn("StartOfTurn", "yes", 1, 1.2, 3, turn_index=1),
                 turn("EndOfTurn", "yes", 1, 1.5, 4, turn_index=1))
        eager = next(e for e in self.events if isinstance(e, EagerEnd))
        finals = [e for e in self.events if isinstance(e, Transcript) and e.is_final]
        self.assertEqual(eager.transcript.language, "es")
        self.assertEqual([f.language for f in finals], ["es", None])  # flux-general-en sends no languages

    def test_no_keepalive_ever_and_pings_stay(self) -> None:
        self.asr.start()
        p = self.open()
        self.clock.pump([0.5] * 40)  # 20 s with nothing sent and nothing received
        self.assertEqual(p.texts(), [])
        self.assertEqual(self.asr.keepalives, 0)
        self.assertGreater(getattr(p, "pings", 0), 0)  # liveness pings: how Flux keeps idle streams

    def test_finish_force_end_turn_then_close_stream(self) -> None:
        self.asr.start()
        p = self.open()
        self.asr.feed(silence_ms(30))
        d = self.asr.finish()
        self.assertEqual(p.texts(), ["ForceEndTurn", "CloseStream"])
        self.assertEqual(len(p.binaries()[-1]), 320 * 2)  # the 10 ms tail padded to 20 ms (320 samples)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 3.0)  # only finish_timeout_s is left
        fired: list[Any] = []
        d.addCallback(fired.append)
        self.asr.connection.ws_close(p, True, None, None)  # type: ignore[arg-type]  # no status: the normal end
        self.assertEqual(fired, [None])
        self.assertEqual(self.asr.state, State.CLOSED)
        self.assertEqual([e for e in self.events if isinstance(e, EngineDown)], [])

    def test_drop_after_forced_end_is_the_end(self) -> None:
        self.asr.start()
        p = self.open()
        self.say(turn("StartOfTurn", "hi", 0, 0.2, 0))
        self.asr.finish()
        self.say(turn("EndOfTurn", "hi", 0, 0.4, 1, trigger="manual"))
        self.asr.connection.ws_close(p, False, 1006, "dropped")  # type: ignore[arg-type]
        self.assertEqual(self.asr.state, State.CLOSED)
        self.assertEqual(kinds(self.events), ["SpeechStarted", "Transcript/final"])

    def test_drop_before_forced_end_is_an_outage(self) -> None:
        self.asr.start()
        p = self.open()
        self.say(turn("StartOfTurn", "hi", 0, 0.2, 0))
        self.asr.finish()
        self.asr.connection.ws_close(p, False, 1006, "dropped")  # type: ignore[arg-type]
        self.assertEqual(self.asr.state, State.BACKOFF)

    def test_drop_withdraws_open_speculation_before_engine_down(self) -> None:
        self.asr.start()
        p = self.open()
        self.say(turn("StartOfTurn", "hi", 0, 0.2, 0), turn("EagerEndOfTurn", "hi there", 0, 0.5, 1))
        self.asr.connection.ws_close(p, False, 1006, "dropped")  # type: ignore[arg-type]
        self.assertEqual(kinds(self.events), ["SpeechStarted", "EagerEnd", "TurnResumed", "EngineDown"])
        self.assertEqual(self.asr.speculations_wasted, 1)
        self.clock.advance(1.0)
        self.open()
        self.assertIsInstance(self.events[-1], EngineUp)
        # The new connection's sequence ids start at 0 again: not a gap.
        self.say(b'{"type": "Connected", "request_id": "r2", "sequence_id": 0}')
        self.assertEqual(self.asr.session.tracker.sequence_gaps, 0)


class FluxLoopbackTests(TestCase):
    timeout = 15

    def fake(self, **options: Any) -> Any:
        fake = start_fake_flux(reactor, api_key=KEY, **options)
        self.addCleanup(fake.stop)
        return fake

    def client(self, fake: Any, **overrides: Any) -> tuple[FluxASR, list[Any]]:
        settings: dict[str, Any] = dict(api_key=KEY, base_url=fake.url, api="flux", eager_eot_threshold=0.5,
                                        backoff_initial_s=0.05, backoff_max_s=0.2, connect_timeout_s=2.0,
                                        finish_timeout_s=2.0)
        settings.update(overrides)
        events: list[Any] = []
        asr = FluxASR(reactor, DeepgramSettings(**settings), "en", events.append, call_id="call-1",
                      extension="7777")
        self.addCleanup(asr.finish)
        return asr, events

    @staticmethod
    def turns(events: list[Any]) -> list[tuple[str, str]]:
        """(kind, text) of every event except interims."""
        out = []
        for e in events:
            if isinstance(e, EagerEnd):
                out.append(("eager", e.transcript.text))
            elif isinstance(e, TurnResumed):
                out.append(("resumed", ""))
            elif isinstance(e, Transcript) and e.is_final:
                out.append(("final", e.text))
        return out

    @staticmethod
    def audio(*parts: Any) -> np.ndarray:
        return np.concatenate([tonewords.encode_words(p) if isinstance(p, str) else silence_ms(p) for p in parts])

    @inlineCallbacks
    def test_eager_then_end_of_turn(self) -> Any:
        fake = self.fake()
        asr, events = self.client(fake)
        asr.start()
        asr.feed(self.audio("hello world", 500))
        yield eventually(lambda: ("final", "hello world") in self.turns(events))
        self.assertEqual(self.turns(events), [("eager", "hello world"), ("final", "hello world")])
        self.assertIsInstance(events[0], SpeechStarted)
        self.assertTrue(any(isinstance(e, Transcript) and not e.is_final for e in events))
        eager = next(e for e in events if isinstance(e, EagerEnd))
        final = next(e for e in events if isinstance(e, Transcript) and e.is_final)
        self.assertEqual(eager.transcript.speech_end, final.speech_end)
        self.assertLess(eager.received_at if hasattr(eager, "received_at") else eager.transcript.received_at,
                        final.received_at)
        n = len(tonewords.encode_words("hello world"))
        self.assertLessEqual(abs((final.speech_end or 0) - n / 16000), 0.1, final)
        yield asr.finish()
        [rec] = fake.connections
        self.assertEqual(rec.path, "/v2/listen")
        self.assertEqual((rec.params["model"], rec.params["eager_eot_threshold"]), ("flux-general-en", "0.5"))
        self.assertEqual(rec.violations, [])
        self.assertEqual((asr.speculations_started, asr.speculations_used, asr.speculations_wasted), (1, 1, 0))

    @inlineCallbacks
    def test_eager_resumed_then_end(self) -> Any:
        fake = self.fake()
        asr, events = self.client(fake)
        asr.start()
        asr.feed(self.audio("hello world", 140, "how are you", 500))
        yield eventually(lambda: any(k == "final" for k, _ in self.turns(events)))
        self.assertEqual(self.turns(events), [("eager", "hello world"), ("resumed", ""),
                                              ("eager", "hello world how are you"),
                                              ("final", "hello world how are you")])
        self.assertEqual((asr.speculations_used, asr.speculations_wasted), (1, 1))

    @inlineCallbacks
    def test_auto_leg_on_multi_sends_no_hint_and_reports_the_language(self) -> Any:
        fake = self.fake()
        settings = DeepgramSettings(api_key=KEY, base_url=fake.url, api="flux", flux_model="flux-general-multi",
                                    eager_eot_threshold=0.5, finish_timeout_s=2.0)
        events: list[Any] = []
        asr = FluxASR(reactor, settings, "auto", events.append, call_id="call-1", extension="8888")
        self.addCleanup(asr.finish)
        asr.start()
        asr.feed(self.audio("hola mundo como estas", 500))
        yield eventually(lambda: any(k == "final" for k, _ in self.turns(events)))
        final = next(e for e in events if isinstance(e, Transcript) and e.is_final)
        eager = next(e for e in events if isinstance(e, EagerEnd))
        self.assertEqual((final.text, final.language, eager.transcript.language),
                         ("hola mundo como estas", "es", "es"))
        yield asr.finish()
        [rec] = fake.connections
        self.assertEqual(rec.params["model"], "flux-general-multi")
        self.assertNotIn("language_hint", rec.params)
        self.assertEqual(rec.violations, [])

    @inlineCallbacks
    def test_no_eager_events_without_eager_threshold(self) -> Any:
        fake = self.fake()
        asr, events = self.client(fake, eager_eot_threshold=None)
        asr.start()
        asr.feed(self.audio("hello world", 140, "how are you", 500))
        yield eventually(lambda: any(k == "final" for k, _ in self.turns(events)))
        self.assertEqual(self.turns(events), [("final", "hello world how are you")])
        self.assertNotIn("eager_eot_threshold", fake.connections[0].params)
        self.assertEqual(asr.speculations_started, 0)

    @inlineCallbacks
    def test_finish_forces_the_last_turn(self) -> Any:
        """No trailing silence: only ForceEndTurn (before CloseStream) ends the turn; finish fires after it."""
        fake = self.fake(latency=0.05)
        asr, events = self.client(fake)
        asr.start()
        yield eventually(lambda: asr.state is State.OPEN)
        asr.feed(tonewords.encode_words("thank you"))
        seen: list[list[tuple[str, str]]] = []
        d = asr.finish()
        d.addCallback(lambda _: seen.append(self.turns(events)))
        yield d
        self.assertEqual(seen, [[("final", "thank you")]])
        [rec] = fake.connections
        self.assertEqual(rec.control_types, ["ForceEndTurn", "CloseStream"])
        self.assertEqual([m.get("trigger") for m in rec.sent if m.get("event") == "EndOfTurn"], ["manual"])
        self.assertEqual((rec.close_sent, rec.close_code), (True, None))  # closed without a status code
        self.assertEqual(asr.state, State.CLOSED)
        self.assertEqual([e for e in events if isinstance(e, EngineDown)], [])

    @inlineCallbacks
    def test_idle_stream_kept_by_pings_never_keepalive(self) -> Any:
        """Silence longer than the server's idle limit: pings keep it; no KeepAlive ever goes out."""
        fake = self.fake(idle_timeout=3.0)
        asr, events = self.client(fake, keepalive_s=0.1)
        asr.start()
        yield eventually(lambda: asr.state is State.OPEN)
        asr.feed(silence_ms(100))
        yield sleep(4.5)
        [rec] = fake.connections
        self.assertGreaterEqual(rec.pings, 1)
        self.assertNotIn("KeepAlive", rec.control_types)
        self.assertEqual((rec.violations, asr.keepalives, asr.state), ([], 0, State.OPEN))
        self.assertEqual([e for e in events if isinstance(e, EngineDown)], [])

    @inlineCallbacks
    def test_drop_reconnects_and_replays(self) -> Any:
        fake = self.fake()
        asr, events = self.client(fake, backoff_initial_s=0.2, backoff_max_s=0.3)

        def on_event(ev: Any) -> None:
            events.append(ev)
            if isinstance(ev, EngineDown):
                asr.feed(self.audio("good morning", 500))  # spoken while the connection is down

        asr.on_event = on_event
        asr.start()
        asr.feed(self.audio("hello", 500))
        yield eventually(lambda: ("final", "hello") in self.turns(events))
        asr.feed(self.audio("world", 100))  # a pause too short for an eager end: the turn stays open
        yield eventually(lambda: sum(isinstance(e, SpeechStarted) for e in events) == 2)
        fake.drop_all()
        yield eventually(lambda: len([k for k, _ in self.turns(events) if k == "final"]) == 2)
        self.assertEqual([type(e).__name__ for e in events if isinstance(e, (EngineDown, EngineUp))],
                         ["EngineDown", "EngineUp"])
        down = next(e for e in events if isinstance(e, EngineDown))
        self.assertIsInstance(down.error, EngineUnavailable)
        first, second = [e for e in events if isinstance(e, Transcript) and e.is_final]
        self.assertEqual(second.text, "world good morning")
        # Stream time: the replay starts where the first turn's window ended
        # (to the 20 ms message), and the last word ends where it was fed
        # (each tone word is followed by a GAP_MS gap); 1.12 s if the
        # offset were lost.
        self.assertLessEqual(abs(second.start - first.end), 0.02, (first, second))
        fed = len(self.audio("hello", 500, "world", 100, "good morning")) / 16000 - tonewords.GAP_MS / 1000
        self.assertLessEqual(abs((second.speech_end or 0) - fed), 0.03, (second, fed))
        self.assertEqual(len(fake.connections), 2)
        self.assertEqual([w for w, _, _ in fake.connections[1].heard], ["world", "good", "morning"])
        self.assertGreater(asr.replayed_ms, 500)
        self.assertEqual((asr.reconnects, asr.dropped_audio_ms), (1, 0))
        for rec in fake.connections:
            self.assertEqual(rec.violations, [])
