"""
Tests for :mod:`xlbridge.engines.deepgram.asr` and its sans-I/O half.

Three layers: the session, spool, settings and policies with no I/O at all;
the client's state machine on a ``MemoryReactorClock`` with a recording
stand-in protocol; and the real client against :mod:`tests.fakes.deepgram`
on loopback with the real reactor.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Optional

import numpy as np
import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor as _reactor
from twisted.internet import task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.fakes import tonewords
from tests.fakes.deepgram import Recognizer, start_fake_deepgram
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
from xlbridge.engines.deepgram.asr import (
    DeepgramASR,
    DeepgramSettings,
    State,
    deepgram_asr_factory,
    listen_url,
)
from xlbridge.engines.deepgram.wire import (
    AudioSpool,
    DeepgramSession,
    backoff_delay,
    classify_close,
    classify_upgrade_failure,
)
from xlbridge.errors import ConfigError

reactor: Any = _reactor
KEY = "sk-test-0123456789abcdef"


def results(text: str, start: float, duration: float, is_final: bool = False,
            speech_final: bool = False, **extra: Any) -> str:
    words = [{"word": w, "start": start, "end": start + duration, "confidence": 0.9} for w in text.split()]
    msg = {"type": "Results", "channel_index": [0, 1], "start": start, "duration": duration,
           "is_final": is_final, "speech_final": speech_final,
           "channel": {"alternatives": [{"transcript": text, "confidence": 0.9, "words": words}]},
           "metadata": {"request_id": "r1"}}
    msg.update(extra)
    return json.dumps(msg)


def silence_ms(ms: int) -> np.ndarray:
    return np.zeros(16 * ms, dtype=np.int16)


# -- settings, URL, policies -------------------------------------------------


class SettingsTests(SynchronousTestCase):
    def test_repr_redacts_key(self) -> None:
        s = DeepgramSettings(api_key=KEY)
        self.assertNotIn(KEY, repr(s))
        self.assertIn("redacted", repr(s))

    def test_from_env(self) -> None:
        s = DeepgramSettings.from_env({"DEEPGRAM_API_KEY": KEY, "XLBRIDGE_DEEPGRAM_URL": "ws://127.0.0.1:9"})
        self.assertEqual((s.api_key, s.base_url), (KEY, "ws://127.0.0.1:9"))
        self.assertEqual(DeepgramSettings.from_env({}).base_url, "wss://api.deepgram.com")

    def test_from_env_overrides_win_none_ignored(self) -> None:
        env = {"DEEPGRAM_API_KEY": KEY, "XLBRIDGE_DEEPGRAM_URL": "ws://env:1"}
        s = DeepgramSettings.from_env(env, base_url=None, model="nova-2", chunk_ms=20)
        self.assertEqual((s.base_url, s.model, s.chunk_ms), ("ws://env:1", "nova-2", 20))
        self.assertEqual(DeepgramSettings.from_env(env, base_url="ws://cli:2").base_url, "ws://cli:2")

    def test_validation(self) -> None:
        for bad in [dict(chunk_ms=10), dict(chunk_ms=120), dict(chunk_ms=101), dict(keepalive_s=12),
                    dict(base_url="https://api.deepgram.com"), dict(backoff_initial_s=5, backoff_max_s=1),
                    dict(endpointing=0), dict(interim_results=False), dict(finish_timeout_s=0)]:
            self.assertRaises(ConfigError, DeepgramSettings, **bad)
        DeepgramSettings(interim_results=False, utterance_end_ms=None, endpointing=False)

    def test_listen_url(self) -> None:
        url = listen_url(DeepgramSettings(api_key=KEY, base_url="wss://dg.example/"), "es")
        self.assertTrue(url.startswith("wss://dg.example/v1/listen?"))
        self.assertNotIn(KEY, url)
        query = dict(p.split("=") for p in url.split("?", 1)[1].split("&"))
        self.assertEqual(query, {
            "model": "nova-3", "language": "es", "encoding": "linear16", "sample_rate": "16000",
            "channels": "1", "interim_results": "true", "endpointing": "300", "utterance_end_ms": "1000",
            "vad_events": "true", "smart_format": "true", "punctuate": "true"})

    def test_listen_url_options(self) -> None:
        s = DeepgramSettings(base_url="ws://h:1/v1/listen", endpointing=False, utterance_end_ms=None,
                             vad_events=False, extra_params=(("keyterm", "hola"),))
        url = listen_url(s, "en")
        self.assertTrue(url.startswith("ws://h:1/v1/listen?"))
        self.assertIn("endpointing=false", url)
        self.assertIn("vad_events=false", url)
        self.assertIn("keyterm=hola", url)
        self.assertNotIn("utterance_end_ms", url)

    def test_factory_needs_key(self) -> None:
        self.assertRaises(ConfigError, deepgram_asr_factory, MemoryReactorClock(), DeepgramSettings())
        make = deepgram_asr_factory(MemoryReactorClock(), DeepgramSettings(api_key=KEY))
        asr = make("en", lambda e: None, "call-1", "7777")
        self.assertIsInstance(asr, DeepgramASR)
        self.assertNotIn(KEY, repr(asr))


class PolicyTests(SynchronousTestCase):
    def test_backoff_grows_and_caps(self) -> None:
        top = [backoff_delay(n, 0.5, 4.0, 2.0, random=lambda: 1.0) for n in range(1, 8)]
        self.assertEqual(top, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0])
        low = [backoff_delay(n, 0.5, 4.0, 2.0, random=lambda: 0.0) for n in range(1, 5)]
        self.assertEqual(low, [0.25, 0.5, 1.0, 2.0])
        self.assertLessEqual(backoff_delay(10_000, 0.5, 4.0, 2.0, random=lambda: 0.999), 4.0)

    def test_backoff_jitter(self) -> None:
        values = iter([0.1, 0.9])
        a = backoff_delay(3, 1.0, 60.0, 2.0, random=lambda: next(values))
        b = backoff_delay(3, 1.0, 60.0, 2.0, random=lambda: next(values))
        self.assertNotEqual(a, b)
        self.assertTrue(2.0 <= a < b <= 4.0)

    def test_upgrade_failures(self) -> None:
        e = classify_upgrade_failure(401, "Invalid credentials.", "rid-1", secret=KEY)
        self.assertIsInstance(e, EngineAuthError)
        self.assertFalse(e.retryable)
        self.assertIn("Invalid credentials.", str(e))
        self.assertIn("rid-1", str(e))
        self.assertIsInstance(classify_upgrade_failure(403, None), EngineAuthError)
        self.assertIsInstance(classify_upgrade_failure(400, "bad"), EngineRequestError)
        for status in (429, 500, 503):
            e = classify_upgrade_failure(status, None)
            self.assertIsInstance(e, EngineUnavailable)
            self.assertTrue(e.retryable)
        self.assertNotIn(KEY, str(classify_upgrade_failure(401, f"bad key {KEY}", secret=KEY)))

    def test_close_reasons(self) -> None:
        e = classify_close(1011, "NET-0001 Deepgram did not receive audio")
        self.assertIsInstance(e, EngineUnavailable)
        self.assertIn("NET-0001", str(e))
        self.assertIsInstance(classify_close(1008, "DATA-0000 cannot decode"), EngineRequestError)
        self.assertIsInstance(classify_close(1006, "connection was closed uncleanly"), EngineUnavailable)


# -- the session ---------------------------------------------------------------


class SessionTests(SynchronousTestCase):
    def test_interim_and_final(self) -> None:
        s = DeepgramSession()
        [a] = s.receive(results("hello", 0.5, 0.4), now=10.0)
        self.assertEqual(a, Transcript("hello", False, False, 0.5, 0.9, 10.0, 0.9, speech_end=0.9))
        [b] = s.receive(results("hello world", 0.5, 1.0, is_final=True, speech_final=True), now=11.0)
        assert isinstance(b, Transcript)
        self.assertTrue(b.is_final and b.speech_final)
        self.assertEqual((b.start, b.end), (0.5, 1.5))
        self.assertEqual(s.final_end, 1.5)

    def test_speech_end_is_the_last_words_end_not_the_span_end(self) -> None:
        # Deepgram's span covers trailing silence; latency counts from the
        # last word.
        s = DeepgramSession()
        msg = json.loads(results("hi there", 1.0, 2.0, is_final=True))
        msg["channel"]["alternatives"][0]["words"][-1]["end"] = 1.6
        [t] = s.receive(json.dumps(msg), now=5.0)
        assert isinstance(t, Transcript)
        self.assertEqual((t.end, t.speech_end), (3.0, 1.6))
        [u] = s.receive(results("", 3.0, 1.0, is_final=True), now=6.0)
        assert isinstance(u, Transcript)
        self.assertIsNone(u.speech_end)

    def test_empty_interim_dropped_empty_final_kept(self) -> None:
        s = DeepgramSession()
        self.assertEqual(s.receive(results("", 0.0, 1.0), 0.0), [])
        [f] = s.receive(results("", 0.0, 1.0, is_final=True), 0.0)
        assert isinstance(f, Transcript)
        self.assertEqual((f.text, f.is_final), ("", True))

    def test_offset_across_reconnect(self) -> None:
        s = DeepgramSession()
        s.receive(results("one", 0.0, 1.0, is_final=True), 0.0)
        s.connection_opened(offset=2.5, request_id="r2")
        [t] = s.receive(results("two", 0.25, 0.5, is_final=True), 0.0)
        assert isinstance(t, Transcript)
        self.assertEqual((t.start, t.end), (2.75, 3.25))
        self.assertEqual(s.final_end, 3.25)
        [u] = s.receive(json.dumps({"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": 1.0}), 5.0)
        self.assertEqual(u, UtteranceEnd(3.5, 5.0))
        [v] = s.receive(json.dumps({"type": "SpeechStarted", "channel": [0, 1], "timestamp": 0.5}), 6.0)
        self.assertEqual(v, SpeechStarted(3.0, 6.0))

    def test_unknown_types_skipped(self) -> None:
        s = DeepgramSession()
        self.assertEqual(s.receive(json.dumps({"type": "Whatever", "x": 1}), 0.0), [])
        self.assertEqual(s.receive(json.dumps({"no_type": 1}), 0.0), [])
        self.assertEqual((s.unknown, s.malformed), (2, 0))

    def test_malformed_counted(self) -> None:
        s = DeepgramSession()
        bad = ["{not json", "[1, 2]", b"\xff\xfe", json.dumps({"type": "Results"}),
               json.dumps({"type": "Results", "start": "x", "duration": 1, "channel": {"alternatives": []}}),
               '{"type": "Results", "start": NaN, "duration": 1, "channel": {"alternatives": []}}',
               json.dumps({"type": "Results", "start": 0, "duration": 1, "channel": {"alternatives": [1]}}),
               json.dumps({"type": "UtteranceEnd"}), json.dumps({"type": "SpeechStarted", "timestamp": None})]
        for b in bad:
            self.assertEqual(s.receive(b, 0.0), [])
        self.assertEqual(s.malformed, len(bad))

    def test_metadata_and_error(self) -> None:
        s = DeepgramSession()
        self.assertEqual(s.receive(json.dumps({"type": "Metadata", "request_id": "abc", "duration": 2.0}), 0), [])
        self.assertEqual(s.request_id, "abc")
        s.receive(json.dumps({"type": "Error", "description": "boom", "variant": "DATA-0000"}), 0)
        self.assertEqual(s.last_error, "DATA-0000 boom")
        self.flushLoggedErrors()

    def test_bytes_accepted(self) -> None:
        [t] = DeepgramSession().receive(results("hi", 0, 1, is_final=True).encode(), 0)
        assert isinstance(t, Transcript)
        self.assertEqual(t.text, "hi")


class SpoolTests(SynchronousTestCase):
    def test_chunks_and_remainder(self) -> None:
        sp = AudioSpool(chunk=640, capacity=16000)
        self.assertEqual(sp.push(np.ones(500, np.int16)), [])
        cs = sp.push(np.ones(1000, np.int16))
        self.assertEqual([(c.position, len(c.samples)) for c in cs], [(0, 640), (640, 640)])
        tail = sp.flush(minimum=320)
        assert tail is not None
        self.assertEqual((tail.position, len(tail.samples)), (1280, 320))
        self.assertEqual(int(tail.samples[219]), 1)
        self.assertEqual(int(tail.samples[220]), 0)
        self.assertIsNone(sp.flush(320))

    def test_bound_counts_only_unsent(self) -> None:
        sp = AudioSpool(chunk=640, capacity=6400)
        for c in sp.push(np.zeros(6400, np.int16)):
            c.sent = True
        sp.push(np.zeros(6400, np.int16))
        sp.trim()
        self.assertEqual(sp.dropped_samples, 0)
        self.assertEqual(sp.held, 6400)
        sp.push(np.zeros(1280, np.int16))
        sp.trim()
        self.assertEqual(sp.dropped_samples, 1280)
        self.assertEqual(sp.held, 6400)

    def test_replay_after_final(self) -> None:
        sp = AudioSpool(chunk=640, capacity=16000)
        for c in sp.push(np.zeros(640 * 5, np.int16)):
            c.sent = True
        self.assertEqual([c.position for c in sp.replay(1300)], [1280, 1920, 2560])
        sp.release_before(1300)
        self.assertEqual([c.position for c in sp], [1280, 1920, 2560])


# -- the client on a memory reactor ------------------------------------------


class RecordingProto:
    """Stands in for the Autobahn protocol: records what the client sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []
        self.dropped = False
        self.http_status_line: Optional[str] = None
        self.http_headers: dict[str, str] = {}

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        self.sent.append((payload, isBinary))

    def dropConnection(self, abort: bool = False) -> None:
        self.dropped = True

    def texts(self) -> list[str]:
        return [json.loads(p)["type"] for p, b in self.sent if not b]

    def binaries(self) -> list[bytes]:
        return [p for p, b in self.sent if b]


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
        [call] = [c for c in self.clock.getDelayedCalls() if c.func == self.asr._connect]
        return call.getTime() - self.clock.seconds()

    def open(self) -> RecordingProto:
        p = RecordingProto()
        self.asr.ws_built(self.asr._attempt, p)  # type: ignore[arg-type]
        self.asr.ws_open(p)  # type: ignore[arg-type]
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
        self.asr.ws_close(p, False, 1006, "dropped")  # type: ignore[arg-type]
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
        self.asr.ws_built(1, p)  # type: ignore[arg-type]
        p.http_status_line = "HTTP/1.1 401 Unauthorized"
        p.http_headers = {"dg-error": "Invalid credentials.", "dg-request-id": "rid"}
        self.asr.ws_close(p, False, 1006, "connection was closed uncleanly")  # type: ignore[arg-type]
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
        self.asr.ws_message(p, results("x", 0, 0.06, is_final=True).encode(), False)  # type: ignore[arg-type]
        self.asr.ws_close(p, True, 1000, None)  # type: ignore[arg-type]
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
        asr.ws_built(1, p)  # type: ignore[arg-type]
        asr.ws_open(p)  # type: ignore[arg-type]
        asr.ws_message(p, results("x", 0, 1, is_final=True).encode(), False)  # type: ignore[arg-type]
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class FakeRecognizerTests(SynchronousTestCase):
    """The fake must fail a client that sends the wrong byte order or rate."""

    def audio(self) -> np.ndarray:
        return np.concatenate([tonewords.encode_words("where is the hospital"), silence_ms(400)])

    def transcripts(self, data: bytes) -> list[str]:
        r = Recognizer(endpointing_ms=300)
        return [m["channel"]["alternatives"][0]["transcript"] for m in r.feed(data) + r.finalize()
                if m["type"] == "Results" and m["is_final"] and m["channel"]["alternatives"][0]["transcript"]]

    def test_little_endian_recognised(self) -> None:
        self.assertEqual(self.transcripts(self.audio().astype("<i2").tobytes()), ["where is the hospital"])

    def test_big_endian_not_recognised(self) -> None:
        got = self.transcripts(self.audio().astype(">i2").tobytes())
        self.assertNotIn("where is the hospital", got)

    def test_wrong_rate_not_recognised(self) -> None:
        half = self.audio()[::2]  # 8 kHz audio sent as if 16 kHz
        self.assertNotIn("where is the hospital", self.transcripts(half.astype("<i2").tobytes()))


# -- the client against the fake server, on loopback -------------------------


def eventually(predicate: Callable[[], bool], timeout: float = 3.0) -> "Deferred[None]":
    """Fire when ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = reactor.seconds() + timeout

    @inlineCallbacks
    def poll() -> Any:
        while not predicate():
            if reactor.seconds() > deadline:
                raise AssertionError(f"timed out waiting for {predicate}")
            yield task.deferLater(reactor, 0.01, lambda: None)

    return poll()


def sleep(seconds: float) -> "Deferred[None]":
    return task.deferLater(reactor, seconds, lambda: None)


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
        asr.url = f"{fake.url}/v1/listen?model=nova-3&language=en"  # no encoding/sample_rate
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


class RawClientProtocol(WebSocketClientProtocol):  # type: ignore[misc]
    def onOpen(self) -> None:
        for payload in self.factory.payloads:
            self.sendMessage(payload, isBinary=True)


class FakeServerTests(TestCase):
    """The fake flags what a careless client would do."""

    @inlineCallbacks
    def test_violations_recorded(self) -> Any:
        fake = start_fake_deepgram(reactor, api_key=KEY)
        self.addCleanup(fake.stop)
        url = f"{fake.url}/v1/listen?encoding=linear16&sample_rate=16000&channels=1"
        factory = WebSocketClientFactory(url, headers={"Authorization": f"Token {KEY}"}, reactor=reactor)
        factory.protocol = RawClientProtocol
        factory.payloads = [b"\x00" * 320, b"\x00" * 641, b"\x00" * 6400, b""]
        conn = reactor.connectTCP("127.0.0.1", fake.port, factory)
        self.addCleanup(conn.disconnect)
        yield eventually(lambda: bool(fake.connections) and fake.connections[0].closed)
        v = " | ".join(fake.connections[0].violations)
        self.assertIn("10 ms is outside", v)
        self.assertIn("not whole 16-bit samples", v)
        self.assertIn("200 ms is outside", v)
        self.assertIn("empty binary frame", v)
        self.assertEqual(fake.connections[0].close_code, 1000)


class NoDelayTests(TestCase):
    """
    One small message per 20 ms packet: Nagle must not hold them back.
    """

    def test_tcp_nodelay_on_the_audio_socket(self) -> Any:
        import socket

        from twisted.internet import reactor as real_reactor
        from twisted.internet.task import deferLater

        from tests.fakes.deepgram import start_fake_deepgram

        fake = start_fake_deepgram(real_reactor)
        self.addCleanup(fake.stop)
        asr = DeepgramASR(real_reactor, DeepgramSettings(api_key="test-key", base_url=fake.url), "en", lambda e: None)
        asr.start()
        self.addCleanup(asr.finish)

        def check(_: Any) -> None:
            assert asr._proto is not None
            sock = asr._proto.transport.getHandle()
            self.assertEqual(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

        return deferLater(real_reactor, 0.5, lambda: None).addCallback(check)
