"""
Tests for :mod:`xlbridge.engines.deepgram.asr`: the client's state machine
on a ``MemoryReactorClock`` with a recording stand-in protocol, and the real
client against :mod:`tests.fakes.deepgram` on loopback with the real
reactor.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import txaio
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.engines.deepgram.fixtures import (
    KEY,
    RecordingProto,
    eventually,
    reactor,
    results,
    silence_ms,
    sleep,
)
from tests.fakes import tonewords
from tests.fakes.deepgram import start_fake_deepgram
from xlbridge.engines.base import (
    EngineAuthError,
    EngineDown,
    EngineRequestError,
    EngineUnavailable,
    EngineUp,
    SpeechStarted,
    Transcript,
    UtteranceEnd,
)
from xlbridge.engines.deepgram.asr import DeepgramASR
from xlbridge.engines.deepgram.factory import deepgram_asr_factory
from xlbridge.engines.deepgram.connection import State
from xlbridge.engines.deepgram.settings import DeepgramSettings
from xlbridge.errors import ConfigError


class FactoryTests(SynchronousTestCase):
    def test_factory_needs_key(self) -> None:
        self.assertRaises(ConfigError, deepgram_asr_factory, MemoryReactorClock(), DeepgramSettings())
        make = deepgram_asr_factory(MemoryReactorClock(), DeepgramSettings(api_key=KEY))
        asr = make("en", lambda e: None, "call-1", "7777")
        self.assertIsInstance(asr, DeepgramASR)
        self.assertNotIn(KEY, repr(asr))


class ClientStateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.events: list[Any] = []
        self.randoms = iter([0.0, 0.5, 1.0, 0.25, 0.75, 0.0, 0.0, 0.0])
        self.settings = DeepgramSettings(api_key=KEY, base_url="ws://dg.test:8801", backoff_initial_s=1.0,
                                         backoff_max_s=8.0, keepalive_s=4.0, connect_timeout_s=5.0,
                                         finish_timeout_s=3.0, replay_s=1.0)
        self.asr = DeepgramASR(self.clock, self.settings, "en", self.events.append, call_id="c1",
                               extension="7777", random=lambda: next(self.randoms))

    def retry_delay(self) -> float:
        [call] = [c for c in self.clock.getDelayedCalls() if c.func == self.asr.connection.connect]
        return call.getTime() - self.clock.seconds()

    def open(self) -> RecordingProto:
        p = RecordingProto()
        conn = self.asr.connection
        conn.ws_built(conn.connect_attempts, p)  # type: ignore[arg-type]
        conn.ws_open(p)  # type: ignore[arg-type]
        return p

    def test_connects_to_url_host(self) -> None:
        self.asr.start()
        host, port, factory, timeout, _ = self.clock.tcpClients[0]
        self.assertEqual((host, port, timeout), ("dg.test", 8801, 5.0))
        self.assertEqual(factory.headers, {"Authorization": f"Token {KEY}"})
        self.assertEqual(self.asr.state, State.CONNECTING)

    def test_backoff_grows_with_jitter_one_down_event(self) -> None:
        self.asr.start()
        delays = []
        for n in range(5):
            _, _, factory, _, _ = self.clock.tcpClients[-1]
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            self.assertEqual(self.asr.state, State.BACKOFF)
            delays.append(self.retry_delay())
            self.clock.advance(delays[-1])
        # ceilings 1, 2, 4, 8, 8 with random 0, .5, 1, .25, .75 (equal jitter)
        self.assertEqual(delays, [0.5, 1.5, 4.0, 5.0, 7.0])
        self.assertEqual(len(self.clock.tcpClients), 6)
        self.assertEqual(self.asr.reconnects, 5)
        [down] = self.events
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineUnavailable)
        self.open()
        self.assertIsInstance(self.events[-1], EngineUp)
        self.assertEqual(self.asr.state, State.OPEN)

    def test_success_resets_backoff(self) -> None:
        self.randoms = iter([1.0] * 10)
        self.asr.start()
        self.clock.tcpClients[-1][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.clock.advance(self.retry_delay())
        self.clock.tcpClients[-1][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(self.retry_delay(), 2.0)
        self.clock.advance(2.0)
        p = self.open()
        self.asr.connection.ws_close(p, False, 1006, "dropped")  # type: ignore[arg-type]
        self.assertEqual(self.retry_delay(), 1.0)

    def test_connect_timeout(self) -> None:
        self.asr.start()
        self.clock.advance(5.0)
        [connector] = self.clock.connectors
        self.assertTrue(connector.stoppedConnecting)
        # The reactor reports a stopped connect as a failure.
        self.clock.tcpClients[0][2].clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        [down] = self.events
        assert isinstance(down, EngineDown)
        self.assertIn("timed out after 5.0 s", down.error.message)
        self.assertEqual(self.asr.state, State.BACKOFF)

    def test_wss_uses_verified_tls(self) -> None:
        asr = DeepgramASR(self.clock, DeepgramSettings(api_key=KEY), "es", self.events.append)
        asr.start()
        self.assertEqual(self.clock.tcpClients, [])
        [(host, port, factory, creator, timeout, _)] = self.clock.sslClients
        self.assertEqual((host, port), ("api.deepgram.com", 443))
        self.assertEqual(creator._hostnameASCII, "api.deepgram.com")
        self.assertTrue(factory.isSecure)
        self.assertIn("/v1/listen?model=nova-3&language=es", factory.resource)

    def test_auth_refusal_is_final(self) -> None:
        self.asr.start()
        p = RecordingProto()
        self.asr.connection.ws_built(1, p)  # type: ignore[arg-type]
        p.http_status_line = "HTTP/1.1 401 Unauthorized"
        p.http_headers = {"dg-error": "Invalid credentials.", "dg-request-id": "rid"}
        self.asr.connection.ws_close(p, False, 1006, "connection was closed uncleanly")  # type: ignore[arg-type]
        [down] = self.events
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineAuthError)
        self.assertIn("Invalid credentials.", down.error.message)
        self.assertEqual(self.asr.state, State.FAILED)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(len(self.clock.tcpClients), 1)
        self.assertEqual(self.successResultOf(self.asr.finish()), None)

    def test_audio_le_chunks_and_keepalive(self) -> None:
        self.asr.start()
        x = (np.arange(16000) % 2000 - 1000).astype(np.int16)
        self.asr.feed(x[:1000])  # buffered before open
        p = self.open()
        self.asr.feed(x[1000:])
        sizes = [len(b) for b in p.binaries()]
        self.assertEqual(set(sizes), {640})  # 20 ms each (the default), the remainder waits
        self.assertEqual(b"".join(p.binaries()), x[:len(sizes) * 640].astype("<i2").tobytes())
        self.assertEqual(p.texts(), [])
        self.clock.advance(3.9)
        self.assertEqual(p.texts(), [])
        self.clock.advance(0.1)
        self.assertEqual(p.texts(), ["KeepAlive"])
        self.clock.advance(2.0)
        self.asr.feed(x[:640])
        self.clock.advance(3.9)
        self.assertEqual(p.texts(), ["KeepAlive"])
        self.clock.advance(0.1)
        self.assertEqual(p.texts(), ["KeepAlive", "KeepAlive"])

    def test_finish_sends_tail_finalize_close(self) -> None:
        self.asr.start()
        p = self.open()
        self.asr.feed(np.ones(700, np.int16))
        d = self.asr.finish()
        self.assertNoResult(d)
        self.assertEqual([len(b) for b in p.binaries()], [640, 640, 640])  # 60 samples padded to 20 ms
        self.assertEqual(p.texts(), ["Finalize", "CloseStream"])
        self.asr.connection.ws_message(p, results("x", 0, 0.06, is_final=True).encode(), False)  # type: ignore[arg-type]
        self.asr.connection.ws_close(p, True, 1000, None)  # type: ignore[arg-type]
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.asr.state, State.CLOSED)
        self.assertIsInstance(self.events[-1], Transcript)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_finish_times_out(self) -> None:
        self.asr.start()
        p = self.open()
        d = self.asr.finish()
        self.clock.advance(3.0)
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(p.dropped)
        self.assertEqual(self.asr.state, State.CLOSED)

    def test_outage_spool_bounded_and_counted(self) -> None:
        self.asr.start()
        self.asr.feed(np.zeros(16000 * 3, np.int16))  # 3 s into a 1 s spool
        self.assertEqual(self.asr.dropped_audio_ms, 2000)
        p = self.open()
        self.assertEqual(sum(len(b) for b in p.binaries()), 32000)
        self.assertAlmostEqual(self.asr.session.offset, 2.0)

    def test_on_event_exception_contained(self) -> None:
        def boom(ev: Any) -> None:
            raise RuntimeError("consumer bug")
        asr = DeepgramASR(self.clock, self.settings, "en", boom)
        asr.start()
        p = RecordingProto()
        asr.connection.ws_built(1, p)  # type: ignore[arg-type]
        asr.connection.ws_open(p)  # type: ignore[arg-type]
        asr.connection.ws_message(p, results("x", 0, 1, is_final=True).encode(), False)  # type: ignore[arg-type]
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


# -- the client against the fake server, on loopback -------------------------


class LoopbackTests(TestCase):
    timeout = 15

    def fake(self, **options: Any) -> Any:
        fake = start_fake_deepgram(reactor, api_key=KEY, **options)
        self.addCleanup(fake.stop)
        return fake

    def client(self, fake: Any, **overrides: Any) -> tuple[DeepgramASR, list[Any]]:
        settings = dict(api_key=KEY, base_url=fake.url, keepalive_s=1.0, backoff_initial_s=0.05,
                        backoff_max_s=0.2, connect_timeout_s=2.0, finish_timeout_s=2.0)
        settings.update(overrides)
        events: list[Any] = []
        asr = DeepgramASR(reactor, DeepgramSettings(**settings), "en", events.append, call_id="call-1",
                          extension="7777")
        self.addCleanup(asr.finish)
        return asr, events

    @staticmethod
    def finals(events: list[Any]) -> list[Transcript]:
        return [e for e in events if isinstance(e, Transcript) and e.is_final and e.text]

    @inlineCallbacks
    def test_words_come_back_as_finals(self) -> Any:
        fake = self.fake()
        asr, events = self.client(fake)
        asr.start()
        asr.feed(np.concatenate([tonewords.encode_words("hello world"), silence_ms(500)]))
        yield eventually(lambda: len(self.finals(events)) == 1)
        [f] = self.finals(events)
        self.assertEqual((f.text, f.speech_final), ("hello world", True))
        self.assertEqual(f.start, 0.0)
        self.assertTrue(0.5 < f.end < 1.0)
        self.assertTrue(any(isinstance(e, Transcript) and not e.is_final for e in events))
        self.assertTrue(any(isinstance(e, SpeechStarted) for e in events))
        yield asr.finish()
        [rec] = fake.connections
        self.assertEqual(rec.headers["authorization"], f"Token {KEY}")
        self.assertEqual(rec.params["encoding"], "linear16")
        self.assertEqual(rec.params["sample_rate"], "16000")
        self.assertEqual(rec.params["channels"], "1")
        self.assertEqual(rec.params["model"], "nova-3")
        self.assertEqual(rec.params["language"], "en")
        self.assertEqual(rec.params["interim_results"], "true")
        self.assertEqual(rec.params["endpointing"], "300")
        self.assertEqual(rec.words(), ["hello", "world"])
        self.assertEqual(rec.violations, [])
        self.assertTrue(all(640 <= n <= 3200 for n in rec.binary_sizes), rec.binary_sizes)
        self.assertNotIn(0, rec.binary_sizes)
        self.assertEqual(asr.sent_bytes, sum(rec.binary_sizes))
        self.assertEqual(asr.session.request_id, rec.request_id)  # dg-request-id header
        self.assertEqual(asr.state, State.CLOSED)

    @inlineCallbacks
    def test_utterance_end(self) -> Any:
        fake = self.fake()
        asr, events = self.client(fake, utterance_end_ms=400)
        asr.start()
        asr.feed(np.concatenate([tonewords.encode_words("good morning"), silence_ms(800)]))
        yield eventually(lambda: any(isinstance(e, UtteranceEnd) for e in events))
        [u] = [e for e in events if isinstance(e, UtteranceEnd)]
        [f] = self.finals(events)
        self.assertTrue(f.start <= u.last_word_end <= f.end)

    @inlineCallbacks
    def test_keepalive_during_gap(self) -> Any:
        fake = self.fake(idle_timeout=0.4)
        asr, events = self.client(fake, keepalive_s=0.1)
        asr.start()
        yield eventually(lambda: asr.state is State.OPEN)
        asr.feed(silence_ms(100))
        yield sleep(1.0)
        [rec] = fake.connections
        self.assertGreaterEqual(rec.control_types.count("KeepAlive"), 5)
        self.assertFalse(rec.closed)
        self.assertEqual(asr.state, State.OPEN)
        self.assertEqual([e for e in events if isinstance(e, EngineDown)], [])

    @inlineCallbacks
    def test_idle_close_net0001_reconnects(self) -> Any:
        fake = self.fake(idle_timeout=0.2)
        asr, events = self.client(fake, keepalive_s=5.0)
        asr.start()
        yield eventually(lambda: any(isinstance(e, EngineUp) for e in events))
        down = events[0]
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineUnavailable)
        self.assertIn("NET-0001", down.error.message)
        self.assertEqual(fake.connections[0].close_code, 1011)
        self.assertGreaterEqual(asr.reconnects, 1)

    @inlineCallbacks
    def test_finish_delivers_last_final_first(self) -> Any:
        fake = self.fake(latency=0.15)
        asr, events = self.client(fake)
        asr.start()
        asr.feed(tonewords.encode_words("thank you"))  # no trailing silence: only Finalize ends it
        seen_at_finish: list[list[Any]] = []
        d = asr.finish()
        d.addCallback(lambda _: seen_at_finish.append(list(events)))
        yield d
        [f] = self.finals(seen_at_finish[0])
        self.assertEqual(f.text, "thank you")
        [rec] = fake.connections
        self.assertEqual(rec.control_types[-2:], ["Finalize", "CloseStream"])
        self.assertTrue(any(m.get("from_finalize") for m in rec.results(final=True)))
        self.assertEqual(rec.sent[-1]["type"], "Metadata")
        self.assertEqual(rec.close_code, 1000)
        self.assertEqual(asr.state, State.CLOSED)
        asr.feed(silence_ms(40))  # after finish: ignored, counted
        self.assertEqual(asr.dropped_audio_ms, 40)

    @inlineCallbacks
    def test_drop_after_last_metadata_is_the_end(self) -> Any:
        # A server that drops TCP instead of finishing the close handshake
        # (1006) after the last Metadata has sent everything: no reconnect.
        fake = self.fake(latency=0.05)
        fake.abort_at_end = True
        asr, events = self.client(fake)
        asr.start()
        asr.feed(tonewords.encode_words("thank you"))
        yield asr.finish()
        [f] = self.finals(events)
        self.assertEqual(f.text, "thank you")
        [rec] = fake.connections
        self.assertTrue(rec.dropped)
        self.assertIsNone(rec.close_code)
        self.assertEqual(asr.state, State.CLOSED)
        self.assertEqual((asr.reconnects, asr.replayed_ms), (0, 0))
        self.assertEqual([e for e in events if isinstance(e, EngineDown)], [])

    @inlineCallbacks
    def test_drop_before_metadata_reconnects_and_finishes(self) -> Any:
        # Dropped mid-stream while finishing: nothing final came back, so the
        # audio is replayed on a new connection and finished there.
        fake = self.fake(latency=0.05)
        fake.drop_next(1, after_bytes=8000)
        asr, events = self.client(fake)
        asr.start()
        asr.feed(tonewords.encode_words("thank you"))
        yield asr.finish()
        self.assertEqual(len(fake.connections), 2)
        [f] = self.finals(events)
        self.assertEqual(f.text, "thank you")
        self.assertEqual(fake.connections[1].close_code, 1000)
        self.assertEqual(asr.reconnects, 1)
        self.assertEqual(asr.state, State.CLOSED)

    @inlineCallbacks
    def test_auth_failure_one_event_no_retry(self) -> Any:
        fake = self.fake()
        asr, events = self.client(fake, api_key="wrong-key-123")
        asr.start()
        yield eventually(lambda: bool(events))
        yield sleep(0.4)  # several backoff periods
        [down] = events
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineAuthError)
        self.assertIn("Invalid credentials.", down.error.message)
        self.assertEqual(len(fake.connections), 1)
        self.assertEqual(fake.connections[0].status, 401)
        self.assertEqual(asr.reconnects, 0)
        self.assertEqual(asr.state, State.FAILED)
        yield asr.finish()

    @inlineCallbacks
    def test_refusals_403_400_not_retried(self) -> Any:
        for status, kind in [(403, EngineAuthError), (400, EngineRequestError)]:
            fake = self.fake()
            fake.reject_next(1, status, message=f"refused with {status}")
            asr, events = self.client(fake)
            asr.start()
            yield eventually(lambda: bool(events))
            yield sleep(0.2)
            [down] = events
            assert isinstance(down, EngineDown)
            self.assertIsInstance(down.error, kind)
            self.assertIn(f"refused with {status}", down.error.message)
            self.assertEqual(len(fake.connections), 1)

    @inlineCallbacks
    def test_bad_query_is_request_error(self) -> Any:
        fake = self.fake()
        asr, events = self.client(fake)
        asr.connection.url = f"{fake.url}/v1/listen?model=nova-3&language=en"  # no encoding/sample_rate
        asr.start()
        yield eventually(lambda: bool(events))
        [down] = events
        assert isinstance(down, EngineDown)
        self.assertIsInstance(down.error, EngineRequestError)
        self.assertIn("encoding", down.error.message)

    @inlineCallbacks
    def test_429_then_up(self) -> Any:
        fake = self.fake()
        fake.reject_next(2, 429)
        asr, events = self.client(fake)
        asr.start()
        asr.feed(np.concatenate([tonewords.encode_words("one two three"), silence_ms(500)]))
        yield eventually(lambda: bool(self.finals(events)))
        downs = [e for e in events if isinstance(e, EngineDown)]
        ups = [e for e in events if isinstance(e, EngineUp)]
        self.assertEqual(len(downs), 1)
        self.assertIsInstance(downs[0].error, EngineUnavailable)
        self.assertIn("429", downs[0].error.message)
        self.assertEqual(len(ups), 1)
        self.assertEqual(self.finals(events)[0].text, "one two three")
        self.assertEqual(len(fake.connections), 3)
        self.assertEqual(asr.reconnects, 2)

    @inlineCallbacks
    def test_drop_replays_outage_and_unfinalized_audio(self) -> Any:
        fake = self.fake()
        asr, events = self.client(fake, backoff_initial_s=0.2, backoff_max_s=0.3)

        def on_event(ev: Any) -> None:
            events.append(ev)
            if isinstance(ev, EngineDown):
                # Spoken while the connection is down.
                asr.feed(np.concatenate([tonewords.encode_words("good morning"), silence_ms(500)]))

        asr.on_event = on_event
        asr.start()
        asr.feed(np.concatenate([tonewords.encode_words("hello"), silence_ms(400)]))
        yield eventually(lambda: [f.text for f in self.finals(events)] == ["hello"])
        asr.feed(tonewords.encode_words("world"))  # no pause: not final yet
        yield eventually(lambda: any(isinstance(e, Transcript) and e.text == "world" for e in events))
        fake.drop_all()
        yield eventually(lambda: len(self.finals(events)) == 2)
        kinds = [type(e).__name__ for e in events if isinstance(e, (EngineDown, EngineUp))]
        self.assertEqual(kinds, ["EngineDown", "EngineUp"])
        down = next(e for e in events if isinstance(e, EngineDown))
        self.assertIsInstance(down.error, EngineUnavailable)
        first, second = self.finals(events)
        self.assertEqual(second.text, "world good morning")
        # Stream time, not the new connection's: the replay starts where the
        # first final ended; the "morning" tone ends at 1.38 s, +300 ms
        # endpointing (1.20 s if the offset were lost).
        self.assertLessEqual(abs(second.start - first.end), 0.04, (first, second))
        self.assertLessEqual(abs(second.end - 1.68), 0.03, second)
        self.assertEqual(len(fake.connections), 2)
        self.assertEqual(fake.connections[1].words(), ["world", "good", "morning"])
        self.assertEqual(asr.reconnects, 1)
        self.assertGreater(asr.replayed_ms, 1000)
        self.assertEqual(asr.dropped_audio_ms, 0)
        for rec in fake.connections:
            self.assertEqual(rec.violations, [])

    @inlineCallbacks
    def test_drop_after_bytes_loses_no_words(self) -> Any:
        fake = self.fake()
        fake.drop_next(after_bytes=32000)  # 1 s into the stream, mid-phrase
        asr, events = self.client(fake)
        asr.start()
        asr.feed(np.concatenate([tonewords.encode_words("how are you today"), silence_ms(500)]))
        yield eventually(lambda: any(isinstance(e, EngineUp) for e in events)
                         and " ".join(f.text for f in self.finals(events)).endswith("today"))
        words = " ".join(f.text for f in self.finals(events)).split()
        self.assertEqual(words, ["how", "are", "you", "today"])
        self.assertTrue(fake.connections[0].dropped)

    @inlineCallbacks
    def test_key_never_logged(self) -> Any:
        seen: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        old = txaio.get_global_log_level()
        txaio.set_global_log_level("debug")  # Autobahn logs the handshake request at debug
        self.addCleanup(txaio.set_global_log_level, old)
        fake = self.fake(idle_timeout=0.3)
        asr, events = self.client(fake, keepalive_s=5.0)
        asr.start()
        asr.feed(np.concatenate([tonewords.encode_words("yes"), silence_ms(400)]))
        yield eventually(lambda: any(isinstance(e, EngineUp) for e in events))
        yield asr.finish()
        bad, bad_events = self.client(fake, api_key=KEY[::-1])
        bad.start()
        yield eventually(lambda: bool(bad_events))
        self.assertTrue(any("sent HTTP request" in str(e.get("log_format")) for e in seen))
        from twisted.logger import formatEvent
        for e in seen:
            text = formatEvent(e) + repr(e)
            self.assertNotIn(KEY, text)
            self.assertNotIn(KEY[::-1], text)
        for obj in (asr, bad, asr.settings, bad_events[0], events):
            self.assertNotIn(KEY, repr(obj))
