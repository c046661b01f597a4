"""
Tests for :mod:`xlbridge.engines.deepl.mt`.

Attempts, retries and the deadline are first driven with a
:class:`~twisted.internet.task.Clock` and a pool played by the test.  The
adapter tests after them are loopback integration tests: the real
``deepl`` library, in a real pool thread, talks HTTP to
:mod:`tests.fakes.deepl` on 127.0.0.1 (port picked at run time) under the
real reactor.  Each takes at most a second or two.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, cast

import deepl
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import (
    EngineAuthError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
)
from xlbridge.engines.deepl.failures import DeepLFailure
from xlbridge.engines.deepl.mt import DeepLMT
from xlbridge.engines.deepl.settings import DeepLSettings

from tests.engines.deepl.loopback import KEY, Loopback


class ManualPool:
    """A pool that runs nothing: each call waits for the test to answer it."""

    def __init__(self) -> None:
        self.calls: list["Deferred[Any]"] = []

    def run(self, f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        d: Deferred[Any] = Deferred()
        self.calls.append(d)
        return d


class AttemptTests(SynchronousTestCase):
    """Attempts, waits and the deadline of one translation, on a clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.pool = ManualPool()
        settings = DeepLSettings(auth_key=KEY, deadline_s=2.0, backoff_initial_s=0.25)
        self.mt = DeepLMT(self.clock, self.pool, settings, random=lambda: 0.5)  # type: ignore[arg-type]

    def test_answer(self) -> None:
        d = self.mt.translate("hello", "en", "es")
        self.clock.advance(0.3)
        self.pool.calls[0].callback(deepl.TextResult("hola", "EN", 5))
        self.assertEqual(self.successResultOf(d), "hola")
        c = self.mt.counters
        self.assertEqual((c.requests, c.characters_sent, c.characters_billed, c.last_latency_ms), (1, 5, 5, 300.0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_retry_waits_on_the_clock(self) -> None:
        """A 429 is retried after the backoff (0.25 s, then 1.6 times that), never in the pool thread."""
        d = self.mt.translate("hello", "en", "es")
        self.pool.calls[0].errback(deepl.DeepLException("too many", http_status_code=429))
        self.clock.advance(0.24)
        self.assertEqual(len(self.pool.calls), 1)
        self.clock.advance(0.01)
        self.assertEqual(len(self.pool.calls), 2)
        self.pool.calls[1].errback(deepl.DeepLException("unavailable", http_status_code=503))
        self.clock.advance(0.39)
        self.assertEqual(len(self.pool.calls), 2)
        self.clock.advance(0.01)
        self.pool.calls[2].callback(deepl.TextResult("hola", "EN", 5))
        self.assertEqual(self.successResultOf(d), "hola")
        self.assertEqual((self.mt.counters.requests, self.mt.counters.retries), (3, 2))

    def test_deadline_with_an_attempt_in_flight(self) -> None:
        """The Deferred fails at the deadline; the attempt's late answer is dropped and counted."""
        d = self.mt.translate("hello", "en", "es")
        self.clock.advance(1.99)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        e = self.failureResultOf(d, EngineUnavailable).value
        self.assertIn("no answer within 2 s (attempt 1 still running)", str(e))
        self.assertEqual(self.mt.counters.failures[DeepLFailure.DEADLINE], 1)
        self.pool.calls[0].callback(deepl.TextResult("hola", "EN", 5))
        self.assertEqual((self.mt.counters.late, self.mt.counters.requests), (1, 1))

    def test_no_retry_past_the_deadline(self) -> None:
        d = self.mt.translate("hello", "en", "es")
        self.clock.advance(1.9)
        self.pool.calls[0].errback(deepl.DeepLException("unavailable", http_status_code=503))
        self.assertIn("gave up after 1 attempts", str(self.failureResultOf(d, EngineUnavailable).value))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel_stops_the_retries(self) -> None:
        d = self.mt.translate("hello", "en", "es")
        self.pool.calls[0].errback(deepl.DeepLException("too many", http_status_code=429))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        self.assertEqual(len(self.pool.calls), 1)

    def test_refusals_are_not_retried(self) -> None:
        d = self.mt.translate("hello", "en", "es")
        self.pool.calls[0].errback(deepl.QuotaExceededException("quota"))
        self.failureResultOf(d, EngineQuotaError)
        self.assertEqual((len(self.pool.calls), self.clock.getDelayedCalls()), (1, []))
        self.assertEqual(self.mt.counters.failures[DeepLFailure.QUOTA], 1)


class DeepLMTTests(Loopback):
    """
    The adapter, with the real library, against the fake.
    """

    @inlineCallbacks
    def test_round_trip(self) -> Any:
        fake = self.start_fake()
        mt = self.make_mt(
            fake, formality="prefer_less", model_type="quality_optimized", context_sentences=2
        )
        text = "Hello, how are you?"
        result = yield mt.translate(text, "en", "es", context=["Good morning.", "Thank you.", "Bye."])
        self.assertEqual(result, "Hola, como estas tu?")
        [req] = fake.requests
        self.assertEqual((req.method, req.path, req.content_type), ("POST", "/v2/translate", "application/json"))
        self.assertEqual(req.headers["authorization"], "DeepL-Auth-Key test-key:fx")
        self.assertTrue(req.headers["user-agent"].startswith("deepl-python/"))
        self.assertIn("xlbridge/", req.headers["user-agent"])
        self.assertEqual(
            req.body,
            {"text": [text], "target_lang": "ES", "source_lang": "EN", "formality": "prefer_less",
             "model_type": "quality_optimized", "context": "Thank you. Bye.", "show_billed_characters": True},
        )
        c = mt.counters
        self.assertEqual((c.requests, c.retries, c.characters_sent, c.characters_billed), (1, 0, len(text), len(text)))
        assert c.last_latency_ms is not None
        self.assertGreater(c.last_latency_ms, 0)

    @inlineCallbacks
    def test_defaults_and_english_target(self) -> Any:
        fake = self.start_fake()
        mt = self.make_mt(fake, english_variant="EN-GB")
        result = yield mt.translate("Buenos días, ¿dónde está el hospital?", "es-419", "en")
        self.assertEqual(result, "Good morning, ¿where is the hospital?")
        body = fake.requests[0].body
        self.assertEqual((body["source_lang"], body["target_lang"]), ("ES", "EN-GB"))
        self.assertEqual(body["model_type"], "latency_optimized")
        self.assertNotIn("formality", body)
        self.assertNotIn("context", body)

    @inlineCallbacks
    def test_empty_text_no_request(self) -> Any:
        fake = self.start_fake()
        mt = self.make_mt(fake)
        self.assertEqual((yield mt.translate("  ", "en", "es")), "")
        self.assertEqual(fake.requests, [])

    @inlineCallbacks
    def test_free_and_pro_keys_honour_server_url(self) -> Any:
        for key in ("abc-123:fx", "abc-123"):
            fake = self.start_fake(auth_key=key)
            mt = self.make_mt(fake)
            self.assertEqual((yield mt.translate("yes", "en", "es")), "si")
            self.assertEqual(fake.requests[0].headers["authorization"], f"DeepL-Auth-Key {key}")
        # Without server_url the library picks the host from the key
        # (creating the client sends nothing).
        free = DeepLMT(reactor, self.start_pool(), DeepLSettings(auth_key="abc:fx"))
        pro = DeepLMT(reactor, self.start_pool(), DeepLSettings(auth_key="abc"))
        self.addCleanup(free.close)
        self.addCleanup(pro.close)
        self.assertEqual(free._get_client().server_url, "https://api-free.deepl.com")
        self.assertEqual(pro._get_client().server_url, "https://api.deepl.com")

    @inlineCallbacks
    def test_one_client_connection_reused(self) -> Any:
        fake = self.start_fake()
        mt = self.make_mt(fake)
        for word, expected in (("hello", "hola"), ("world", "mundo"), ("today", "hoy")):
            self.assertEqual((yield mt.translate(word, "en", "es")), expected)
        client = mt._client
        self.assertEqual([r.connection for r in fake.requests], [1, 1, 1])
        self.assertEqual([r.reused for r in fake.requests], [False, True, True])
        yield mt.translate("bye", "en", "es")
        self.assertIs(mt._client, client)

    @inlineCallbacks
    def test_one_client_shared_by_threads(self) -> Any:
        fake = self.start_fake(latency=0.05)
        mt = self.make_mt(fake, pool=self.start_pool(max_threads=3))
        created: list[Any] = []
        original = mt._get_client

        def spy() -> Any:
            client = original()
            created.append(client)
            return client

        mt._get_client = spy  # type: ignore[method-assign]
        results = yield gatherResults([mt.translate(w, "en", "es") for w in ("one", "two", "three", "yes")])
        self.assertEqual(results, ["uno", "dos", "tres", "si"])
        self.assertEqual(len({id(c) for c in created}), 1)
        self.assertLessEqual(len({r.connection for r in fake.requests}), 3)

    @inlineCallbacks
    def test_429_twice_then_success(self) -> Any:
        fake = self.start_fake(fail_429=2)
        mt = self.make_mt(fake, deadline_s=2.0)
        start = self.now()
        result = yield mt.translate("thank you", "en", "es")
        elapsed = self.now() - start
        self.assertEqual(result, "gracias")
        self.assertEqual([r.status for r in fake.requests], [429, 429, 200])
        self.assertEqual((mt.counters.requests, mt.counters.retries), (3, 2))
        self.assertLess(elapsed, 2.0)
        # Backoff happened on the reactor: 0.05 s, then 0.08 s.
        gaps = [b.arrived_at - a.arrived_at for a, b in zip(fake.requests, fake.requests[1:])]
        self.assertGreaterEqual(gaps[0], 0.04)
        self.assertGreaterEqual(gaps[1], 0.07)

    @inlineCallbacks
    def test_5xx_beyond_deadline(self) -> Any:
        fake = self.start_fake(fail_5xx=1000, status_5xx=500)
        mt = self.make_mt(fake, deadline_s=0.8)
        start = self.now()
        d = mt.translate("hello", "en", "es")
        e = yield self.assertFailure(d, EngineUnavailable)
        elapsed = self.now() - start
        self.assertLessEqual(elapsed, 0.8 + 0.2)
        self.assertTrue(e.retryable)
        self.assertIn("HTTP 500", str(e))
        self.assertGreaterEqual(len(fake.requests), 4)
        self.assertEqual(mt.counters.failures[DeepLFailure.UNAVAILABLE], 1)

    @inlineCallbacks
    def test_no_response_deadline(self) -> Any:
        fake = self.start_fake(no_response=1)
        mt = self.make_mt(fake, deadline_s=0.5)
        start = self.now()
        e = yield self.assertFailure(mt.translate("hello", "en", "es"), EngineUnavailable)
        self.assertLess(self.now() - start, 0.5 + 0.2)
        self.assertIn("no answer within 0.5 s (attempt 1 still running)", str(e))
        self.assertEqual(mt.counters.failures[DeepLFailure.DEADLINE], 1)

    @inlineCallbacks
    def test_quota(self) -> Any:
        fake = self.start_fake(quota_exceeded=True)
        mt = self.make_mt(fake)
        e = yield self.assertFailure(mt.translate("hello", "en", "es"), EngineQuotaError)
        self.assertFalse(e.retryable)
        self.assertIn("456", str(e))
        self.assertEqual(len(fake.requests), 1)
        self.assertEqual(mt.counters.failures[DeepLFailure.QUOTA], 1)

    @inlineCallbacks
    def test_auth(self) -> Any:
        fake = self.start_fake()
        mt = self.make_mt(fake, auth_key="wrong-key-123")
        e = yield self.assertFailure(mt.translate("hello", "en", "es"), EngineAuthError)
        self.assertFalse(e.retryable)
        self.assertIn("403", str(e))
        self.assertEqual(len(fake.requests), 1)

    @inlineCallbacks
    def test_bad_request(self) -> Any:
        fake = self.start_fake()
        mt = self.make_mt(fake, formality="more")
        e = yield self.assertFailure(mt.translate("hello", "es", "en"), EngineRequestError)
        self.assertIn("formality", str(e))
        self.assertEqual(len(fake.requests), 1)
        yield self.assertFailure(mt.translate("hello", "en", "xx"), EngineRequestError)
        self.assertEqual(len(fake.requests), 1)

    @inlineCallbacks
    def test_pool_full(self) -> Any:
        fake = self.start_fake(latency=0.3)
        mt = self.make_mt(fake, pool=self.start_pool(max_threads=1, max_queued=1))
        first = mt.translate("hello", "en", "es")
        e = self.failureResultOf(mt.translate("world", "en", "es"), EngineUnavailable).value
        self.assertIn("pool full", str(e))
        self.assertEqual(mt.counters.failures[DeepLFailure.POOL_FULL], 1)
        self.assertEqual((yield first), "hola")

    @inlineCallbacks
    def test_connection_refused_retried_until_deadline(self) -> Any:
        fake = self.start_fake()
        url = fake.url
        yield fake.stop()
        mt = self.make_mt(server_url=url, deadline_s=0.6)
        start = self.now()
        e = yield self.assertFailure(mt.translate("hello", "en", "es"), EngineUnavailable)
        self.assertLess(self.now() - start, 0.6 + 0.2)
        self.assertIn("gave up", str(e))
        self.assertGreater(mt.counters.retries, 1)

    @inlineCallbacks
    def test_key_never_shown(self) -> Any:
        secret = "s3cr3t-VALUE-xyz:fx"
        wrong = "wr0ng-VALUE-abc"
        fake = self.start_fake(auth_key=secret, fail_429=1)
        events: list[dict[str, Any]] = []
        observer = cast(ILogObserver, events.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        records: list[logging.LogRecord] = []
        handler = _ListHandler(records)
        lib_logger = logging.getLogger("deepl")
        old_level = lib_logger.level
        lib_logger.setLevel(logging.DEBUG)
        lib_logger.addHandler(handler)
        self.addCleanup(lib_logger.setLevel, old_level)
        self.addCleanup(lib_logger.removeHandler, handler)

        good = self.make_mt(fake)
        self.assertEqual((yield good.translate("hello", "en", "es")), "hola")
        bad = self.make_mt(fake, auth_key=wrong)
        e = yield self.assertFailure(bad.translate("hello", "en", "es"), EngineAuthError)
        fake.faults.quota_exceeded = True
        q = yield self.assertFailure(good.translate("hello", "en", "es"), EngineQuotaError)

        shown = [str(e), repr(e), str(q), repr(q), repr(good), repr(bad), repr(good.settings), repr(good.counters)]
        shown += [formatEvent(ev) + repr(ev) for ev in events]
        shown += [r.getMessage() for r in records]
        self.assertTrue(records, "the deepl library logged nothing: the check would be empty")
        self.assertTrue(any("retrying" in s for s in shown))
        for s in shown:
            self.assertNotIn("VALUE", s)


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
