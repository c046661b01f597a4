"""
Tests for :mod:`xlbridge.engines.elevenlabs.tts`: the client's own logic
(first-byte timing, the progress watchdog, the bounded retry, cancelling,
closing) on an injected clock, over both transports, against the fake
server in memory (:class:`~tests.engines.elevenlabs.harness.MemoryNetwork`).

The same client against the fake on loopback, with the real reactor, is
in ``test_http.py`` and ``test_ws.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from tests.engines.elevenlabs.harness import KEY, TEXT, Heard, MemoryNetwork, attempts, native
from tests.fakes.elevenlabs import DEFAULT_CHUNK_SIZES, speak, start_fake_elevenlabs
from xlbridge.engines.base import EngineAuthError, EngineUnavailable
from xlbridge.engines.elevenlabs.settings import ElevenLabsSettings
from xlbridge.engines.elevenlabs.tts import ElevenLabsTTS

#: Where the fake listens on the memory reactor (any number will do).
PORT = 8803

if TYPE_CHECKING:
    _Mixin = SynchronousTestCase
else:
    _Mixin = object


class InMemoryClientTests(_Mixin):
    """
    The fake answers after 0.25 s and paces chunks 0.125 s apart; the
    client gives up on 1.5 s without progress and retries after 0.5 s.
    Subclasses set :attr:`transport`.
    """

    transport = ""

    def setUp(self) -> None:
        self.net = MemoryNetwork()
        self.clock = self.net.reactor
        self.fake = start_fake_elevenlabs(
            self.clock, port=PORT, api_key=KEY, first_byte_delay=0.25, chunk_interval=0.125
        )
        self.addCleanup(self.stop_fake)

    def stop_fake(self) -> None:
        stopped = self.fake.stop()
        self.net.settle()
        self.successResultOf(stopped)

    def make(self, **overrides: Any) -> ElevenLabsTTS:
        values: dict[str, Any] = dict(
            api_key=KEY, base_url=self.fake.url, transport=self.transport,
            timeout_s=1.5, retry_delay_s=0.5,
        )
        values.update(overrides)
        tts = ElevenLabsTTS(self.clock, ElevenLabsSettings(**values))
        self.addCleanup(self.close, tts)
        return tts

    def close(self, tts: ElevenLabsTTS) -> None:
        closed = tts.close()
        self.net.settle()
        self.successResultOf(closed)

    def test_first_byte_time_is_read_from_the_injected_clock(self) -> None:
        tts = self.make()
        heard = Heard(self.clock)
        d = tts.synthesize(TEXT, "en", heard)
        self.net.advance(0.25)
        self.assertEqual(heard.times, [0.25])
        self.assertEqual(tts.counters.first_byte_ms, 250.0)
        self.net.advance(5.0)
        self.successResultOf(d)
        self.assertEqual(heard.audio.tobytes(), native(speak(TEXT)).tobytes())
        self.assertEqual(list(tts.counters.first_byte_history), [250.0])

    def test_each_chunk_rearms_the_watchdog(self) -> None:
        """A stream longer than ``timeout_s`` in all is fine while chunks keep coming."""
        self.fake.chunk_interval = 1.0
        tts = self.make()
        heard = Heard(self.clock)
        d = tts.synthesize("bye", "en", heard)
        self.net.advance(20.0)
        self.successResultOf(d)
        self.assertGreater(heard.times[-1] - heard.times[0], 3 * 1.5)
        self.assertEqual(heard.audio.tobytes(), native(speak("bye")).tobytes())
        self.assertEqual((tts.counters.requests, tts.counters.retries), (1, 0))

    def test_stall_after_audio_fails_without_retry(self) -> None:
        """
        ``timeout_s`` after the last chunk the attempt is abandoned; audio
        was heard, so it is not retried (the caller would hear it twice).
        """
        self.fake.chunk_interval = 2.0
        tts = self.make()
        heard = Heard(self.clock)
        d = tts.synthesize(TEXT, "en", heard)
        self.net.advance(0.25 + 1.25)
        self.assertNoResult(d)
        self.net.advance(0.25)
        e = self.failureResultOf(d, EngineUnavailable).value
        self.assertEqual(e.message, "no audio for 1.5 s")
        first = DEFAULT_CHUNK_SIZES[0] // 2 * 2  # whole samples of the first chunk
        self.assertEqual(heard.audio.tobytes(), native(speak(TEXT)[:first]).tobytes())
        self.assertEqual(tts.counters.requests, 1)
        self.assertEqual(tts.counters.errors, {"unavailable": 1})
        self.net.settle()
        self.assertTrue(attempts(self.fake)[0].client_gone)

    def test_silent_server_is_retried_after_the_delay_then_given_up(self) -> None:
        self.fake.slow_next(60.0, count=2)
        tts = self.make()
        d = tts.synthesize(TEXT, "en", Heard(self.clock))
        self.net.advance(1.5)  # the watchdog: first attempt abandoned
        self.assertEqual(len(attempts(self.fake)), 1)
        self.net.advance(0.5)  # retry_delay_s
        self.assertEqual([r.at for r in attempts(self.fake)], [0.0, 2.0])
        self.net.advance(1.25)
        self.assertNoResult(d)
        self.net.advance(0.25)
        e = self.failureResultOf(d, EngineUnavailable).value
        self.assertEqual(e.message, "no a response for 1.5 s")
        self.assertEqual((tts.counters.requests, tts.counters.retries), (2, 1))
        self.assertEqual(tts.counters.errors, {"unavailable": 1})

    def test_cancel_during_the_retry_pause_cancels_the_retry(self) -> None:
        self.fake.fail_next(503)
        tts = self.make()
        d = tts.synthesize(TEXT, "en", Heard(self.clock))
        self.net.settle()
        self.assertEqual(len(attempts(self.fake)), 1)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.net.advance(5.0)
        self.assertEqual(len(attempts(self.fake)), 1)
        self.assertEqual((tts.counters.requests, tts.counters.cancelled), (1, 1))
        self.assertEqual(tts.counters.errors, {})

    def test_close_cancels_what_is_being_spoken(self) -> None:
        tts = self.make()
        heard = Heard(self.clock)
        d = tts.synthesize(TEXT, "en", heard)
        self.net.advance(0.25)
        self.assertEqual(len(heard.chunks), 1)
        closed = tts.close()
        self.failureResultOf(d, CancelledError)
        self.net.settle()
        self.successResultOf(closed)
        self.assertEqual(tts.counters.cancelled, 1)
        e = self.failureResultOf(tts.synthesize(TEXT, "en", heard), EngineUnavailable).value
        self.assertEqual(e.message, "client closed")
        self.net.advance(1.0)
        self.assertEqual(len(heard.chunks), 1)

    def test_no_key_fails_at_once(self) -> None:
        tts = self.make(api_key="")
        e = self.failureResultOf(tts.synthesize(TEXT, "en", Heard(self.clock)), EngineAuthError).value
        self.assertEqual(e.message, "no API key (set ELEVENLABS_API_KEY)")
        self.assertEqual((self.clock.tcpClients, tts.counters.errors), ([], {"auth": 1}))

    def test_on_audio_raising_loses_only_that_chunk(self) -> None:
        tts = self.make()
        heard = Heard(self.clock)

        def on_audio(samples: Any) -> None:
            heard(samples)
            if len(heard.chunks) == 1:
                raise ZeroDivisionError("listener bug")

        d = tts.synthesize(TEXT, "en", on_audio)
        self.net.advance(5.0)
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(heard.audio.tobytes(), native(speak(TEXT)).tobytes())


class HTTPInMemoryTests(InMemoryClientTests, SynchronousTestCase):
    transport = "http"


class WebSocketInMemoryTests(InMemoryClientTests, SynchronousTestCase):
    transport = "websocket"
