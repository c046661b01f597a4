"""
Tests for :mod:`xlbridge.engines.elevenlabs.tts`: the real clients (HTTP and
WebSocket, one test body for both via :class:`_ClientTests`) against the
fake server in :mod:`tests.fakes.elevenlabs`, on loopback with the real
reactor; plus pure tests of settings, error mapping and odd-byte carrying.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Optional, cast

import numpy as np
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from hypothesis import given, strategies as st
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.fakes.elevenlabs import RecordedRequest, speak, start_fake_elevenlabs
from tests.fakes.tonewords import decode_words
from xlbridge.engines.base import (
    EngineAuthError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
)
from xlbridge.engines.elevenlabs.tts import (
    DEFAULT_VOICE,
    DEFAULT_VOICES,
    ElevenLabsSettings,
    ElevenLabsTTS,
    PCMChunker,
)
from xlbridge.engines.elevenlabs.http import error_for_response

KEY = "sk_live_0123456789abcdef0123456789abcdef"
TEXT = "hello world how are you"


def native(pcm: bytes) -> np.ndarray:
    """S16LE bytes as native int16 samples."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def attempts(fake: Any) -> list[RecordedRequest]:
    """Recorded requests that were utterances (not idle spare sockets)."""
    return [
        r for r in fake.requests
        if not (r.kind == "websocket" and r.status == 101 and r.error is None and not r.text)
    ]


class _Heard:
    """Collects ``on_audio`` chunks with their reactor time."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.times: list[float] = []

    def __call__(self, samples: np.ndarray) -> None:
        assert samples.dtype == np.int16
        self.chunks.append(samples)
        self.times.append(reactor.seconds())

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


if TYPE_CHECKING:
    _Mixin = TestCase
else:
    _Mixin = object


class _ClientTests(_Mixin):
    """Run against both transports; subclasses set :attr:`transport`."""

    transport = ""

    def check_shape(self, rec: RecordedRequest, text: str, language: str) -> None:
        raise NotImplementedError

    def setUp(self) -> None:
        self.fake = start_fake_elevenlabs(reactor, api_key=KEY)
        self.addCleanup(self.fake.stop)

    def make(self, **overrides: Any) -> ElevenLabsTTS:
        values: dict[str, Any] = dict(
            api_key=KEY, base_url=self.fake.url, transport=self.transport,
            timeout_s=3.0, retry_delay_s=0.01,
        )
        values.update(overrides)
        tts = ElevenLabsTTS(reactor, ElevenLabsSettings(**values))
        self.addCleanup(tts.close)
        return tts

    @inlineCallbacks
    def failure_of(
        self, tts: ElevenLabsTTS, text: str = TEXT, heard: Optional[_Heard] = None, language: str = "en"
    ) -> Any:
        try:
            yield tts.synthesize(text, language, heard or _Heard())
        except Exception as e:
            return e
        self.fail("synthesize succeeded")

    # -- streaming and audio -----------------------------------------------

    @inlineCallbacks
    def test_audio_is_the_spoken_words_bit_exact(self) -> Any:
        """
        Odd-sized chunks are reassembled bit-exactly: the samples equal the
        fake's little-endian PCM, and decode to the words (right byte order
        and rate).
        """
        heard = _Heard()
        yield self.make().synthesize(TEXT, "en", heard)
        [rec] = attempts(self.fake)
        self.assertTrue(any(n % 2 for n in rec.chunk_sizes))
        self.assertGreater(len(heard.chunks), 5)
        self.assertEqual(heard.audio.tobytes(), native(speak(TEXT)).tobytes())
        self.assertEqual(decode_words(heard.audio), TEXT.split())

    @inlineCallbacks
    def test_first_audio_long_before_the_end(self) -> Any:
        """
        Chunks reach ``on_audio`` as they arrive: with ~1 s of paced chunks
        the first arrives at once and the Deferred fires much later.
        """
        self.fake.chunk_interval = 0.03
        heard = _Heard()
        start = reactor.seconds()
        yield self.make().synthesize(TEXT, "en", heard)
        end = reactor.seconds()
        self.assertLess(heard.times[0] - start, 0.3)
        self.assertGreater(end - heard.times[0], 0.6)

    @inlineCallbacks
    def test_voice_per_language_and_language_code(self) -> Any:
        tts = self.make()
        yield tts.synthesize("hola mundo", "es-MX", _Heard())
        yield tts.synthesize("bonjour", "fr", _Heard())
        es, fr = attempts(self.fake)
        self.assertEqual(es.voice_id, DEFAULT_VOICES["es"])
        self.assertEqual(fr.voice_id, DEFAULT_VOICE)
        self.check_shape(es, "hola mundo", "es")

    @inlineCallbacks
    def test_no_language_code_for_multilingual_v2(self) -> Any:
        yield self.make(model_id="eleven_multilingual_v2").synthesize("hola", "es", _Heard())
        [rec] = attempts(self.fake)
        self.assertNotIn("language_code", rec.params)
        self.assertNotIn("language_code", rec.body or {})
        self.assertIn("eleven_multilingual_v2", (rec.params.get("model_id"), (rec.body or {}).get("model_id")))

    @inlineCallbacks
    def test_empty_text_needs_no_request(self) -> Any:
        heard = _Heard()
        yield self.make().synthesize("  ", "en", heard)
        self.assertEqual((self.fake.requests, heard.chunks), ([], []))

    @inlineCallbacks
    def test_counters(self) -> Any:
        tts = self.make()
        yield tts.synthesize(TEXT, "en", _Heard())
        yield tts.synthesize("bye", "en", _Heard())
        c = tts.counters
        self.assertEqual((c.requests, c.completed, c.errors), (2, 2, {}))
        self.assertEqual(c.bytes_received, len(speak(TEXT)) + len(speak("bye")))
        self.assertEqual(len(c.first_byte_history), 2)
        self.assertIsNotNone(c.first_byte_ms)

    # -- errors ----------------------------------------------------------------

    @inlineCallbacks
    def test_bad_key_is_auth_error_without_retry(self) -> Any:
        tts = self.make(api_key="sk_wrong_" + KEY[9:])
        e = yield self.failure_of(tts)
        self.assertIsInstance(e, EngineAuthError)
        self.assertIn("invalid_api_key", str(e))
        self.assertNotIn(KEY[9:], str(e))
        self.assertEqual(len(attempts(self.fake)), 1)
        self.assertEqual(tts.counters.errors, {"auth": 1})

    @inlineCallbacks
    def test_quota_exceeded(self) -> Any:
        self.fake.fail_next("quota")
        tts = self.make()
        e = yield self.failure_of(tts)
        self.assertIsInstance(e, EngineQuotaError)
        self.assertEqual(tts.counters.errors, {"quota": 1})

    @inlineCallbacks
    def test_unknown_voice(self) -> Any:
        e = yield self.failure_of(self.make(voices={}, default_voice="no-such-voice"))
        self.assertIsInstance(e, EngineRequestError)
        self.assertIn("voice_not_found", str(e))

    @inlineCallbacks
    def test_busy_once_is_retried(self) -> Any:
        for failure in (429, "system_busy", 503):
            self.fake.fail_next(failure)
            # No spare: a late spare of the previous client would take the
            # injected failure.
            tts = self.make(ws_standby=False)
            heard = _Heard()
            yield tts.synthesize(TEXT, "en", heard)
            self.assertEqual(decode_words(heard.audio), TEXT.split())
            self.assertEqual((tts.counters.requests, tts.counters.retries), (2, 1))

    @inlineCallbacks
    def test_retry_is_bounded(self) -> Any:
        self.fake.fail_next(429, count=5)
        tts = self.make()
        e = yield self.failure_of(tts)
        self.assertIsInstance(e, EngineUnavailable)
        self.assertEqual(len(attempts(self.fake)), 2)
        self.assertEqual(tts.counters.errors, {"unavailable": 1})

    @inlineCallbacks
    def test_drop_mid_stream_delivers_what_arrived(self) -> Any:
        self.fake.drop_next(after_bytes=5001)
        heard = _Heard()
        e = yield self.failure_of(self.make(), heard=heard)
        self.assertIsInstance(e, EngineUnavailable)
        # 5001 bytes: 2500 whole samples delivered, the odd byte held back.
        self.assertEqual(heard.audio.tobytes(), native(speak(TEXT)[:5000]).tobytes())
        self.assertEqual(len(attempts(self.fake)), 1)  # audio was heard: no retry

    @inlineCallbacks
    def test_drop_before_audio_is_retried(self) -> Any:
        self.fake.drop_next(after_bytes=0)
        heard = _Heard()
        yield self.make().synthesize(TEXT, "en", heard)
        self.assertEqual(heard.audio.tobytes(), native(speak(TEXT)).tobytes())

    @inlineCallbacks
    def test_silent_server_times_out(self) -> Any:
        self.fake.slow_next(5.0, count=2)
        start = reactor.seconds()
        e = yield self.failure_of(self.make(timeout_s=0.3))
        self.assertIsInstance(e, EngineUnavailable)
        self.assertLess(reactor.seconds() - start, 2.0)

    # -- cancellation -------------------------------------------------------------

    @inlineCallbacks
    def test_cancel_stops_the_stream(self) -> Any:
        self.fake.chunk_interval = 0.05
        tts = self.make()
        heard = _Heard()
        d = tts.synthesize(TEXT, "en", heard)
        while not heard.chunks:
            yield sleep(0.01)
        d.cancel()
        got = len(heard.chunks)
        yield sleep(0.3)
        self.assertEqual(len(heard.chunks), got)
        self.failureResultOf(d, CancelledError)
        self.assertTrue(attempts(self.fake)[0].client_gone)
        self.assertEqual(tts.counters.cancelled, 1)
        # The client still works afterwards.
        after = _Heard()
        yield tts.synthesize("bye", "en", after)
        self.assertEqual(decode_words(after.audio), ["bye"])

    # -- secrets ---------------------------------------------------------------------

    @inlineCallbacks
    def test_key_never_in_repr_or_logs(self) -> Any:
        events: list[Any] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        tts = self.make()
        self.fake.fail_next(503)
        yield tts.synthesize(TEXT, "en", _Heard())
        self.fake.api_key = "another"
        e = yield self.failure_of(tts, language="es")  # "es": no spare socket yet
        texts = [repr(tts), repr(tts.settings), str(e), repr(e)]
        texts += [formatEvent(ev) + repr(ev) for ev in events]
        self.assertTrue(any("retrying" in t for t in texts))
        for t in texts:
            self.assertNotIn(KEY, t)


class HTTPClientTests(_ClientTests, TestCase):
    transport = "http"
    timeout = 20

    def check_shape(self, rec: RecordedRequest, text: str, language: str) -> None:
        self.assertEqual(rec.path, f"/v1/text-to-speech/{rec.voice_id}/stream")
        self.assertEqual(rec.params, {"output_format": "pcm_16000"})
        self.assertEqual(rec.headers["xi-api-key"], KEY)
        self.assertTrue(rec.headers["content-type"].startswith("application/json"))
        self.assertEqual(rec.body, {"text": text, "model_id": "eleven_flash_v2_5", "language_code": language})

    @inlineCallbacks
    def test_connection_reused(self) -> Any:
        tts = self.make()
        for _ in range(3):
            yield tts.synthesize("bye", "en", _Heard())
        self.assertEqual([r.connection_id for r in self.fake.requests], [1, 1, 1])
        self.assertEqual([r.new_connection for r in self.fake.requests], [True, False, False])

    @inlineCallbacks
    def test_voice_settings_in_body(self) -> Any:
        vs = {"stability": 0.5, "similarity_boost": 0.75, "speed": 1.1}
        yield self.make(voice_settings=vs).synthesize("bye", "en", _Heard())
        self.assertEqual(self.fake.requests[0].body["voice_settings"], vs)


class WebSocketClientTests(_ClientTests, TestCase):
    transport = "websocket"
    timeout = 20

    def check_shape(self, rec: RecordedRequest, text: str, language: str) -> None:
        self.assertEqual(rec.path, f"/v1/text-to-speech/{rec.voice_id}/stream-input")
        self.assertEqual(rec.params, {
            "model_id": "eleven_flash_v2_5", "output_format": "pcm_16000",
            "language_code": language, "inactivity_timeout": "20",
        })
        self.assertEqual(rec.headers["xi-api-key"], KEY)
        self.assertEqual(rec.messages, [{"text": " "}, {"text": text + " ", "flush": True}, {"text": ""}])
        self.assertEqual(rec.close_code, 1000)

    @inlineCallbacks
    def test_voice_settings_only_in_init(self) -> Any:
        vs = {"stability": 0.5, "similarity_boost": 0.75}
        yield self.make(voice_settings=vs).synthesize("bye", "en", _Heard())
        rec = attempts(self.fake)[0]
        self.assertEqual(rec.messages[0], {"text": " ", "voice_settings": vs})
        self.assertNotIn("voice_settings", rec.messages[1])

    @inlineCallbacks
    def test_spare_socket_is_kept_alive_and_used(self) -> Any:
        """
        After audio for a (voice, language), a spare socket is opened and
        initialised; idle, it sends " " every half inactivity_timeout, so the
        server (which closes idle sockets) keeps it; the next utterance
        uses it.
        """
        tts = self.make(inactivity_timeout=1)
        yield tts.synthesize("bye", "en", _Heard())
        yield sleep(1.6)
        spare = self.fake.requests[-1]
        self.assertEqual(len(self.fake.requests), 2)
        self.assertEqual(spare.messages[0], {"text": " "})
        self.assertGreaterEqual(spare.messages[1:].count({"text": " "}), 2)
        self.assertIsNone(spare.close_code)
        heard = _Heard()
        yield tts.synthesize("hello", "en", heard)
        self.assertEqual(spare.text, "hello")
        self.assertEqual(decode_words(heard.audio), ["hello"])

    @inlineCallbacks
    def test_no_spares_when_disabled(self) -> Any:
        tts = self.make(ws_standby=False)
        yield tts.synthesize("bye", "en", _Heard())
        yield sleep(0.05)
        self.assertEqual(len(self.fake.requests), 1)

    @inlineCallbacks
    def test_fake_closes_idle_socket(self) -> Any:
        """The fake enforces T5: no message for inactivity_timeout -> 1008."""
        closed: Deferred[tuple[int, str]] = Deferred()

        class Idle(WebSocketClientProtocol):
            def onOpen(self) -> None:
                self.sendMessage(b'{"text": " "}')

            def onClose(self, wasClean: bool, code: int, reason: str) -> None:
                closed.callback((code, reason))

        url = self.fake.url.replace("http", "ws") + (
            f"/v1/text-to-speech/{DEFAULT_VOICE}/stream-input?output_format=pcm_16000"
            "&model_id=eleven_flash_v2_5&inactivity_timeout=1"
        )
        factory = WebSocketClientFactory(url, headers={"xi-api-key": KEY}, reactor=reactor)
        factory.protocol = Idle
        reactor.connectTCP("127.0.0.1", self.fake.port, factory)
        code, reason = yield closed
        self.assertEqual(code, 1008)
        self.assertIn("timeout of 1 seconds", reason)


class PCMChunkerTests(SynchronousTestCase):
    @given(st.binary(max_size=400).filter(lambda b: len(b) % 2 == 0), st.lists(st.integers(1, 50)))
    def test_any_split_is_bit_exact(self, pcm: bytes, cuts: list[int]) -> None:
        chunker, out, pos = PCMChunker(), [], 0
        for n in cuts + [len(pcm)]:
            got = chunker.feed(pcm[pos : pos + n])
            pos += n
            if got is not None:
                out.append(got)
        joined = np.concatenate(out) if out else np.zeros(0, np.int16)
        self.assertEqual(joined.tobytes(), native(pcm).tobytes())
        self.assertEqual(chunker.pending, 0)


class SettingsTests(SynchronousTestCase):
    def test_from_env(self) -> None:
        s = ElevenLabsSettings.from_env(
            {"ELEVENLABS_API_KEY": KEY, "XLBRIDGE_ELEVENLABS_URL": "http://127.0.0.1:8803/"},
            model_id="eleven_turbo_v2_5",
        )
        self.assertEqual((s.api_key, s.base_url, s.model_id), (KEY, "http://127.0.0.1:8803", "eleven_turbo_v2_5"))
        self.assertEqual(s.ws_base_url, "ws://127.0.0.1:8803")

    def test_defaults(self) -> None:
        s = ElevenLabsSettings.from_env({})
        self.assertEqual(s.base_url, "https://api.elevenlabs.io")
        self.assertEqual(s.ws_base_url, "wss://api.elevenlabs.io")
        self.assertEqual((s.model_id, s.output_format), ("eleven_flash_v2_5", "pcm_16000"))
        self.assertEqual(s.voice_for("en-GB"), DEFAULT_VOICES["en"])
        self.assertEqual(s.voice_for("xx"), DEFAULT_VOICE)
        self.assertEqual(s.language_code_for("pt-BR"), "pt")

    def test_rejects(self) -> None:
        for bad in (dict(base_url="ftp://x"), dict(output_format="mp3_44100_128"),
                    dict(transport="grpc"), dict(inactivity_timeout=181), dict(timeout_s=0)):
            self.assertRaises(ValueError, ElevenLabsSettings, **bad)

    def test_repr_hides_key(self) -> None:
        self.assertNotIn(KEY, repr(ElevenLabsSettings(api_key=KEY)))
        self.assertIn("redacted", repr(ElevenLabsSettings(api_key=KEY)))


class ErrorMappingTests(SynchronousTestCase):
    def body(self, status: str) -> bytes:
        return json.dumps({"detail": {"status": status, "message": f"m {KEY}"}}).encode()

    def test_table(self) -> None:
        for code, status, cls in [
            (401, "invalid_api_key", EngineAuthError),
            (401, "quota_exceeded", EngineQuotaError),
            (400, "quota_exceeded", EngineQuotaError),
            (429, "too_many_concurrent_requests", EngineUnavailable),
            (429, "system_busy", EngineUnavailable),
            (500, "", EngineUnavailable),
            (503, "", EngineUnavailable),
            (400, "voice_not_found", EngineRequestError),
            (404, "", EngineRequestError),
        ]:
            e = error_for_response(code, self.body(status), KEY)
            self.assertIs(type(e), cls, (code, status))
            self.assertNotIn(KEY, str(e))

    def test_422_and_garbage(self) -> None:
        e = error_for_response(422, b'{"detail":[{"loc":["body","text"],"msg":"Field required"}]}', KEY)
        self.assertIsInstance(e, EngineRequestError)
        self.assertIn("Field required", str(e))
        self.assertIsInstance(error_for_response(502, b"<html>bad gateway</html>", KEY), EngineUnavailable)
