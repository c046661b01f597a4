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
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tests.engines.elevenlabs.harness import KEY, TEXT, Heard, MemoryNetwork, attempts, native
from tests.fakes.elevenlabs import DEFAULT_CHUNK_SIZES, speak, start_fake_elevenlabs
from tests.fakes.tonewords import decode_words
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

    def record_client_aborts(self) -> list[Any]:
        """Client-side transports that get ``abortConnection``, in order."""
        aborted: list[Any] = []
        original = iosim.FakeTransport.abortConnection

        def abort(transport: iosim.FakeTransport) -> None:
            if not transport.isServer:
                aborted.append(transport)
            original(transport)

        self.patch(iosim.FakeTransport, "abortConnection", abort)
        return aborted

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
        self.assertEqual(e.message, "no first audio byte within 1.5 s")
        self.assertEqual((tts.counters.requests, tts.counters.retries), (2, 1))
        self.assertEqual(tts.counters.errors, {"unavailable": 1})

    # -- first-byte deadline --------------------------------------------------

    def test_no_first_byte_within_the_deadline_fails_and_aborts(self) -> None:
        """
        A silent server (a half-open path) fails the attempt after
        ``first_byte_timeout_s``, long before ``timeout_s``, as the same
        :class:`EngineUnavailable` a stall gives; the connection is aborted,
        so the next request does not get it back from the pool.
        """
        aborted = self.record_client_aborts()
        self.fake.slow_next(60.0)
        tts = self.make(timeout_s=10.0, first_byte_timeout_s=1.0, retries=0)
        d = tts.synthesize(TEXT, "en", Heard(self.clock))
        self.net.advance(0.999)
        self.assertNoResult(d)
        self.assertEqual(aborted, [])
        self.net.advance(0.001)
        e = self.failureResultOf(d, EngineUnavailable).value
        self.assertEqual(e.message, "no first audio byte within 1 s")
        self.assertEqual(tts.counters.errors, {"unavailable": 1})
        self.assertEqual(len(aborted), 1)
        self.net.settle()
        [rec] = attempts(self.fake)
        self.assertTrue(rec.client_gone)
        self.assertEqual(self.net.open_connections(), 0)
        self.assertEqual(tts.in_flight, 0)
        # The client goes on, on a new connection.
        heard = Heard(self.clock)
        d = tts.synthesize("bye", "en", heard)
        self.net.advance(5.0)
        self.successResultOf(d)
        self.assertEqual(decode_words(heard.audio), ["bye"])
        first, second = attempts(self.fake)
        self.assertNotEqual(first.connection_id, second.connection_id)

    def test_first_byte_deadline_then_retry_delivers(self) -> None:
        """The deadline fails one attempt; the retry (with its own deadline) speaks."""
        self.fake.slow_next(60.0)
        tts = self.make(timeout_s=10.0, first_byte_timeout_s=1.0, retries=1)
        heard = Heard(self.clock)
        d = tts.synthesize(TEXT, "en", heard)
        self.net.advance(1.0 + 0.5 + 0.25)  # deadline, retry_delay_s, first byte
        self.assertEqual(heard.times[:1], [1.75])
        self.net.advance(5.0)
        self.successResultOf(d)
        self.assertEqual(heard.audio.tobytes(), native(speak(TEXT)).tobytes())
        self.assertEqual([r.at for r in attempts(self.fake)], [0.0, 1.5])
        self.assertEqual((tts.counters.requests, tts.counters.retries), (2, 1))

    def test_deadline_is_for_the_first_byte_only(self) -> None:
        """
        After the first byte, chunks further apart than
        ``first_byte_timeout_s`` (but within ``timeout_s``) are fine.
        """
        self.fake.chunk_interval = 1.0
        tts = self.make(timeout_s=1.5, first_byte_timeout_s=0.5)
        heard = Heard(self.clock)
        d = tts.synthesize("bye", "en", heard)
        self.net.advance(30.0)
        self.successResultOf(d)
        self.assertEqual(heard.times[:2], [0.25, 1.25])
        self.assertEqual(heard.audio.tobytes(), native(speak("bye")).tobytes())
        self.assertEqual((tts.counters.requests, tts.counters.retries), (1, 0))
        self.assertEqual(tts.counters.errors, {})

    def test_stall_after_audio_aborts_the_connection(self) -> None:
        aborted = self.record_client_aborts()
        self.fake.chunk_interval = 2.0
        tts = self.make(timeout_s=1.5, first_byte_timeout_s=0.5, ws_standby=False)
        d = tts.synthesize(TEXT, "en", Heard(self.clock))
        self.net.advance(0.25 + 1.5)
        e = self.failureResultOf(d, EngineUnavailable).value
        self.assertEqual(e.message, "no audio for 1.5 s")
        self.assertEqual(len(aborted), 1)
        self.net.settle()
        self.assertEqual(self.net.open_connections(), 0)

    # -- bounded connections -----------------------------------------------------

    def test_requests_beyond_max_connections_wait_for_a_free_one(self) -> None:
        """
        With ``max_connections = 2``, five utterances at once: two go out,
        three wait (counted) and go out as slots free up; the fake never
        has more than two connections open; all five are spoken.
        """
        tts = self.make(max_connections=2, timeout_s=10.0, first_byte_timeout_s=10.0, ws_standby=False)
        heards = [Heard(self.clock) for _ in range(5)]
        ds = [tts.synthesize(TEXT, "en", heard) for heard in heards]
        self.net.settle()
        self.assertEqual(len(attempts(self.fake)), 2)
        self.assertEqual((tts.in_flight, tts.waiting, tts.counters.queued), (2, 3, 3))
        self.net.advance(30.0)
        for d in ds:
            self.successResultOf(d)
        for heard in heards:
            self.assertEqual(decode_words(heard.audio), TEXT.split())
        self.assertEqual(len(attempts(self.fake)), 5)
        self.assertEqual(self.net.peak_open, 2)
        self.assertEqual((tts.in_flight, tts.waiting, tts.counters.queue_abandoned), (0, 0, 0))

    def test_hung_requests_keep_the_bound_and_free_their_slot_at_the_deadline(self) -> None:
        """
        A blackhole: every request hangs.  Only ``max_connections`` are
        open at once; each is aborted at its first-byte deadline, which
        frees its slot for a waiting one; then the path heals.
        """
        self.fake.slow_next(60.0, count=4)
        tts = self.make(max_connections=2, timeout_s=10.0, first_byte_timeout_s=1.0, retries=0,
                        ws_standby=False)
        first = [tts.synthesize(TEXT, "en", Heard(self.clock)) for _ in range(2)]
        self.net.advance(0.5)
        later = [tts.synthesize(TEXT, "en", Heard(self.clock)) for _ in range(2)]
        self.net.settle()
        self.assertEqual((len(attempts(self.fake)), tts.waiting), (2, 2))
        self.net.advance(0.5)  # t = 1: the first two fail, the later two go out
        for d in first:
            self.failureResultOf(d, EngineUnavailable)
        self.assertEqual([r.at for r in attempts(self.fake)], [0.0, 0.0, 1.0, 1.0])
        self.net.advance(0.5)  # t = 1.5: the later two, 1 s after they asked
        for d in later:
            e = self.failureResultOf(d, EngineUnavailable).value
            self.assertEqual(e.message, "no first audio byte within 1 s")
        self.assertEqual(tts.counters.queue_abandoned, 0)  # they got a slot in time
        self.net.settle()
        self.assertEqual(self.net.open_connections(), 0)
        self.assertEqual(self.net.peak_open, 2)
        heard = Heard(self.clock)
        d = tts.synthesize("bye", "en", heard)
        self.net.advance(5.0)
        self.successResultOf(d)
        self.assertEqual(decode_words(heard.audio), ["bye"])

    def test_waiting_for_a_slot_counts_against_the_first_byte_deadline(self) -> None:
        """
        An attempt still queued at its deadline leaves the queue (counted in
        ``queue_abandoned``) and never reaches the server.
        """
        self.fake.chunk_interval = 1.0  # the first utterance holds the slot for seconds
        tts = self.make(max_connections=1, timeout_s=10.0, first_byte_timeout_s=1.0, retries=0,
                        ws_standby=False)
        held = tts.synthesize("bye", "en", Heard(self.clock))
        waiting = tts.synthesize(TEXT, "en", Heard(self.clock))
        self.net.advance(1.0)
        e = self.failureResultOf(waiting, EngineUnavailable).value
        self.assertEqual(e.message, "no first audio byte within 1 s")
        self.assertEqual((tts.counters.queued, tts.counters.queue_abandoned, tts.waiting), (1, 1, 0))
        self.net.advance(30.0)
        self.successResultOf(held)
        self.assertEqual(len(attempts(self.fake)), 1)
        self.assertEqual((tts.in_flight, tts.waiting), (0, 0))

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
