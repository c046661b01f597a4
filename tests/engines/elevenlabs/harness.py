"""
What the ElevenLabs tests share: the key and text they use, a recorder for
``on_audio``, :class:`ClientTests` (one test body run over both transports
against the fake server on loopback, with the real reactor) and
:class:`MemoryNetwork` (the same fake in memory, on a clock that moves only
when the test says).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, cast

import numpy as np
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.interfaces import IProtocolFactory, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.test import iosim
from twisted.trial.unittest import TestCase

from tests.fakes.elevenlabs import RecordedRequest, speak, start_fake_elevenlabs
from tests.fakes.tonewords import decode_words
from xlbridge.engines.base import (
    EngineAuthError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
)
from xlbridge.engines.elevenlabs.settings import DEFAULT_VOICE, DEFAULT_VOICES, ElevenLabsSettings
from xlbridge.engines.elevenlabs.tts import ElevenLabsTTS

KEY = "sk_live_0123456789abcdef0123456789abcdef"
TEXT = "hello world how are you"


def native(pcm: bytes) -> np.ndarray:
    """S16LE bytes as native int16 samples."""
    return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def sleep(seconds: float) -> Deferred[None]:
    """Wait ``seconds`` of real time (loopback tests only)."""
    return deferLater(reactor, seconds, lambda: None)


def attempts(fake: Any) -> list[RecordedRequest]:
    """Recorded requests that were utterances (not idle spare sockets)."""
    return [
        r for r in fake.requests
        if not (r.kind == "websocket" and r.status == 101 and r.error is None and not r.text)
    ]


class Heard:
    """
    Collects ``on_audio`` chunks with the time each arrived.

    :param clock: where the time is read (the real reactor by default).
    """

    def __init__(self, clock: Optional[IReactorTime] = None) -> None:
        self.clock = clock or cast(IReactorTime, reactor)
        self.chunks: list[np.ndarray] = []
        self.times: list[float] = []

    def __call__(self, samples: np.ndarray) -> None:
        assert samples.dtype == np.int16
        self.chunks.append(samples)
        self.times.append(self.clock.seconds())

    @property
    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int16)


if TYPE_CHECKING:
    _Mixin = TestCase
else:
    _Mixin = object


class ClientTests(_Mixin):
    """
    :class:`ElevenLabsTTS` against the fake on loopback, with the real
    reactor: the same tests for both transports.  Subclasses set
    :attr:`transport` and check the request shape in :meth:`check_shape`.
    """

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
        self, tts: ElevenLabsTTS, text: str = TEXT, heard: Optional[Heard] = None, language: str = "en"
    ) -> Any:
        try:
            yield tts.synthesize(text, language, heard or Heard())
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
        heard = Heard()
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
        heard = Heard()
        start = reactor.seconds()
        yield self.make().synthesize(TEXT, "en", heard)
        end = reactor.seconds()
        self.assertLess(heard.times[0] - start, 0.3)
        self.assertGreater(end - heard.times[0], 0.6)

    @inlineCallbacks
    def test_voice_per_language_and_language_code(self) -> Any:
        tts = self.make()
        yield tts.synthesize("hola mundo", "es-MX", Heard())
        yield tts.synthesize("bonjour", "fr", Heard())
        es, fr = attempts(self.fake)
        self.assertEqual(es.voice_id, DEFAULT_VOICES["es"])
        self.assertEqual(fr.voice_id, DEFAULT_VOICE)
        self.check_shape(es, "hola mundo", "es")

    @inlineCallbacks
    def test_no_language_code_for_multilingual_v2(self) -> Any:
        yield self.make(model_id="eleven_multilingual_v2").synthesize("hola", "es", Heard())
        [rec] = attempts(self.fake)
        self.assertNotIn("language_code", rec.params)
        self.assertNotIn("language_code", rec.body or {})
        self.assertIn("eleven_multilingual_v2", (rec.params.get("model_id"), (rec.body or {}).get("model_id")))

    @inlineCallbacks
    def test_empty_text_needs_no_request(self) -> Any:
        heard = Heard()
        yield self.make().synthesize("  ", "en", heard)
        self.assertEqual((self.fake.requests, heard.chunks), ([], []))

    @inlineCallbacks
    def test_counters(self) -> Any:
        tts = self.make()
        yield tts.synthesize(TEXT, "en", Heard())
        yield tts.synthesize("bye", "en", Heard())
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
            heard = Heard()
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
        heard = Heard()
        e = yield self.failure_of(self.make(), heard=heard)
        self.assertIsInstance(e, EngineUnavailable)
        # 5001 bytes: 2500 whole samples delivered, the odd byte held back.
        self.assertEqual(heard.audio.tobytes(), native(speak(TEXT)[:5000]).tobytes())
        self.assertEqual(len(attempts(self.fake)), 1)  # audio was heard: no retry

    @inlineCallbacks
    def test_drop_before_audio_is_retried(self) -> Any:
        self.fake.drop_next(after_bytes=0)
        heard = Heard()
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
        heard = Heard()
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
        after = Heard()
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
        yield tts.synthesize(TEXT, "en", Heard())
        self.fake.api_key = "another"
        e = yield self.failure_of(tts, language="es")  # "es": no spare socket yet
        texts = [repr(tts), repr(tts.settings), str(e), repr(e)]
        texts += [formatEvent(ev) + repr(ev) for ev in events]
        self.assertTrue(any("retrying" in t for t in texts))
        for t in texts:
            self.assertNotIn(KEY, t)


class MemoryNetwork:
    """
    A :class:`MemoryReactorClock` whose outgoing TCP connections reach the
    server listening on their port (the fake, started on :attr:`reactor`),
    through ``iosim`` pumps.  Nothing moves until :meth:`settle` or
    :meth:`advance`, so times are exact.

    :ivar peak_open: the most client connections ever open at once (see
        :meth:`open_connections`).
    """

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self._pumps: list[iosim.IOPump] = []
        self.peak_open = 0

    def open_connections(self) -> int:
        """
        Client connections neither closed nor closing (an abort or close by
        the client counts at once; one by the server once it arrives).
        """
        return sum(1 for p in self._pumps if not p.clientIO.disconnecting)

    def _link(self) -> bool:
        """Connect the connection attempts made since the last call."""
        linked = False
        while len(self._pumps) < len(self.reactor.tcpClients):
            host, port, client_factory, _, _ = self.reactor.tcpClients[len(self._pumps)]
            [server_factory] = [f for p, f, _, _ in self.reactor.tcpServers if p == port]
            peer = IPv4Address("TCP", "127.0.0.1", 50000 + len(self._pumps))
            client = cast(IProtocolFactory, client_factory).buildProtocol(IPv4Address("TCP", host, port))
            server = cast(IProtocolFactory, server_factory).buildProtocol(peer)
            self._pumps.append(iosim.connect(
                server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client),
                greet=False, clock=self.reactor,
            ))
            linked = True
            # Only a new connection raises the number open.
            self.peak_open = max(self.peak_open, self.open_connections())
        return linked

    def settle(self) -> None:
        """Deliver every byte and run every call due now, until nothing moves."""
        for _ in range(10000):
            self.reactor.advance(0)
            moved = self._link()
            for pump in self._pumps:
                moved = pump.pump() or moved
            now = self.reactor.seconds()
            if not moved and not any(c.getTime() <= now for c in self.reactor.getDelayedCalls()):
                return
        raise AssertionError("the memory network does not settle")

    def advance(self, seconds: float) -> None:
        """
        Move the clock by ``seconds``, stopping at each call due on the way
        and settling there, so that bytes written at a time arrive at that
        time.
        """
        self.settle()
        target = self.reactor.seconds() + seconds
        while True:
            due = [c.getTime() for c in self.reactor.getDelayedCalls() if c.getTime() <= target]
            self.reactor.rightNow = min(due, default=target)
            self.settle()
            if not due:
                return
