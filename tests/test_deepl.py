"""
Tests for :mod:`xlbridge.engines.deepl.mt` and the fake DeepL server.

The adapter tests are loopback integration tests: the real ``deepl``
library, in a real pool thread, talks HTTP to :mod:`tests.fakes.deepl` on
127.0.0.1 (port picked at run time) under the real reactor.  Each takes at
most a second or two.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, cast

import requests  # type: ignore[import-untyped]
from urllib3.util import SKIP_HEADER
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.fakes.deepl import detect_language, start_fake_deepl, translate_words
from xlbridge.engines.base import (
    EngineAuthError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
)
from xlbridge.engines.deepl.mt import (
    DeepLFailure,
    DeepLMT,
    DeepLSettings,
    build_context,
    deepl_source_lang,
    deepl_target_lang,
)
from xlbridge.engines.threads import ThreadPoolService
from xlbridge.errors import ConfigError

KEY = "test-key:fx"


class LanguageTests(SynchronousTestCase):
    """
    Bridge codes → DeepL codes.
    """

    def test_targets(self) -> None:
        s = DeepLSettings(auth_key=KEY)
        table = {
            "en": "EN-US",
            "EN": "EN-US",
            "en-us": "EN-US",
            "en-gb": "EN-GB",
            "en_GB": "EN-GB",
            "en-au": "EN-GB",
            "es": "ES",
            "es-es": "ES",
            "es-419": "ES-419",
            "es-mx": "ES-419",
            "pt": "PT-BR",
            "pt-br": "PT-BR",
            "pt-pt": "PT-PT",
            "de": "DE",
            "de-at": "DE",
            "fr": "FR",
            "fr-ca": "FR",
            "it": "IT",
            "ja": "JA",
            "zh": "ZH-HANS",
            "zh-cn": "ZH-HANS",
            "zh-tw": "ZH-HANT",
            "zh-hant": "ZH-HANT",
            "no": "NB",
            "nb": "NB",
            "uk": "UK",
        }
        for code, expected in table.items():
            self.assertEqual(deepl_target_lang(code, s), expected, code)

    def test_configurable_variants(self) -> None:
        s = DeepLSettings(auth_key=KEY, english_variant="en-gb", portuguese_variant="PT-PT")
        self.assertEqual(deepl_target_lang("en", s), "EN-GB")
        self.assertEqual(deepl_target_lang("en-us", s), "EN-US")
        self.assertEqual(deepl_target_lang("pt", s), "PT-PT")
        self.assertEqual(deepl_target_lang("pt-br", s), "PT-BR")

    def test_sources_are_base_codes(self) -> None:
        table = {
            "en": "EN", "en-gb": "EN", "en-US": "EN", "es": "ES", "es-419": "ES",
            "pt-br": "PT", "pt": "PT", "de": "DE", "zh-hant": "ZH", "no": "NB",
        }
        for code, expected in table.items():
            self.assertEqual(deepl_source_lang(code), expected, code)

    def test_unknown(self) -> None:
        s = DeepLSettings(auth_key=KEY)
        for code in ("xx", "", "klingon"):
            self.assertRaises(ValueError, deepl_target_lang, code, s)
            self.assertRaises(ValueError, deepl_source_lang, code)


class ContextTests(SynchronousTestCase):
    """
    Earlier sentences → the ``context`` field.
    """

    def test_last_sentences_oldest_first(self) -> None:
        s = DeepLSettings(auth_key=KEY, context_sentences=2)
        self.assertEqual(build_context(["One.", "Two.", " ", "Three."], s), "Two. Three.")

    def test_none(self) -> None:
        self.assertIsNone(build_context([], DeepLSettings(auth_key=KEY)))
        self.assertIsNone(build_context(["a"], DeepLSettings(auth_key=KEY, context_sentences=0)))
        self.assertIsNone(build_context(["a"], DeepLSettings(auth_key=KEY, context_max_chars=0)))

    def test_bounded_keeps_most_recent(self) -> None:
        s = DeepLSettings(auth_key=KEY, context_max_chars=20)
        ctx = build_context(["old words here", "newest sentence is this"], s)
        assert ctx is not None
        self.assertLessEqual(len(ctx), 20)
        self.assertTrue(ctx.endswith("is this"))
        self.assertFalse(ctx.startswith(" "))
        self.assertIn(ctx.split()[0], "newest sentence is this".split())


class SettingsTests(SynchronousTestCase):
    """
    :class:`DeepLSettings` from the environment, validation, redaction.
    """

    def test_from_env(self) -> None:
        s = DeepLSettings.from_env({"DEEPL_AUTH_KEY": "abc:fx", "XLBRIDGE_DEEPL_URL": "http://127.0.0.1:9"})
        self.assertEqual((s.auth_key, s.server_url), ("abc:fx", "http://127.0.0.1:9"))
        self.assertEqual(s.model_type, "latency_optimized")
        self.assertEqual(s.deadline_s, 4.0)
        self.assertEqual(DeepLSettings.from_env({"DEEPL_API_KEY": "k2"}).auth_key, "k2")
        self.assertIsNone(DeepLSettings.from_env({"DEEPL_API_KEY": "k2"}).server_url)

    def test_overrides(self) -> None:
        s = DeepLSettings.from_env(
            {"DEEPL_AUTH_KEY": "abc", "XLBRIDGE_DEEPL_URL": "https://api.deepl.com"},
            server_url=None,
            formality="prefer_less",
            deadline_s=2,
        )
        self.assertEqual(s.server_url, "https://api.deepl.com")
        self.assertEqual(s.formality, "prefer_less")
        self.assertEqual(s.deadline_s, 2.0)

    def test_no_key(self) -> None:
        e = self.assertRaises(ConfigError, DeepLSettings.from_env, {})
        self.assertIn("DEEPL_AUTH_KEY", str(e))

    def test_bad_values(self) -> None:
        for bad in (
            {"formality": "polite"},
            {"model_type": "fast"},
            {"english_variant": "EN-AU"},
            {"portuguese_variant": "PT"},
            {"deadline_s": 0},
            {"context_sentences": -1},
            {"server_url": "api.deepl.com"},
            {"server_url": "ftp://x"},
        ):
            self.assertRaises(ConfigError, DeepLSettings, auth_key=KEY, **bad)

    def test_server_url_with_path(self) -> None:
        self.assertEqual(
            DeepLSettings(auth_key=KEY, server_url="http://proxy/deepl").server_url, "http://proxy/deepl/"
        )

    def test_key_redacted(self) -> None:
        s = DeepLSettings(auth_key="very-secret-key:fx")
        self.assertNotIn("very-secret", repr(s))
        mt = DeepLMT(reactor, ThreadPoolService(reactor), s)
        self.assertNotIn("very-secret", repr(mt))


class FakeTranslationTests(SynchronousTestCase):
    """
    The fake's dictionary, used to check audio end to end.
    """

    def test_en_es(self) -> None:
        self.assertEqual(
            translate_words("Hello, how are you today?", "EN", "ES"), "Hola, como estas tu hoy?"
        )
        self.assertEqual(translate_words("good morning thank you bye", "EN", "ES-419"), "buenos dias gracias adios")
        self.assertEqual(translate_words("where is the hospital", "EN", "ES"), "donde esta el hospital")
        self.assertEqual(translate_words("one two three yes no zebra", "EN", "ES"), "uno dos tres si no zebra")

    def test_es_en(self) -> None:
        self.assertEqual(translate_words("¿Cómo estás tú?", "ES", "EN-US"), "¿How are you?")
        self.assertEqual(translate_words("buenos días, gracias", "ES", "EN-GB"), "good morning, thank you")

    def test_other_pairs_unchanged(self) -> None:
        self.assertEqual(translate_words("hello world", "EN", "DE"), "hello world")

    def test_detect(self) -> None:
        self.assertEqual(detect_language("hola mundo"), "ES")
        self.assertEqual(detect_language("hello world"), "EN")
        self.assertEqual(detect_language("hospital"), "EN")


class _Loopback(TestCase):
    """
    A fake DeepL on loopback, a real pool, cleanup in the right order (the
    fake first, so threads blocked on it are released; the pool last).
    """

    def start_fake(self, auth_key: str = KEY, **options: Any) -> Any:
        fake = start_fake_deepl(reactor, auth_key=auth_key, **options)
        self.addCleanup(fake.stop)
        return fake

    def start_pool(self, max_threads: int = 2, max_queued: int = 16) -> ThreadPoolService:
        pool = ThreadPoolService(reactor, name="test-deepl", max_threads=max_threads, max_queued=max_queued)
        pool.startService()
        self.addCleanup(pool.stopService)
        return pool

    def make_mt(self, fake: Any = None, pool: Optional[ThreadPoolService] = None, **settings: Any) -> DeepLMT:
        if pool is None:
            pool = self.start_pool()
        settings.setdefault("auth_key", fake.auth_key if fake is not None else KEY)
        if fake is not None:
            settings.setdefault("server_url", fake.url)
        settings.setdefault("backoff_initial_s", 0.05)
        mt = DeepLMT(reactor, pool, DeepLSettings(**settings), random=lambda: 0.5)
        self.addCleanup(mt.close)
        return mt

    def now(self) -> float:
        return reactor.seconds()


class FakeServerTests(_Loopback):
    """
    The fake refuses what DeepL refuses (raw HTTP from a pool thread).
    """

    def post(self, fake: Any, **kwargs: Any) -> "Deferred[requests.Response]":
        pool = self.start_pool()
        kwargs.setdefault("timeout", 5)
        return pool.run(requests.post, fake.url + "/v2/translate", **kwargs)

    def auth(self, fake: Any, **extra: str) -> dict[str, str]:
        return {"Authorization": f"DeepL-Auth-Key {fake.auth_key}", "User-Agent": "test/1", **extra}

    @inlineCallbacks
    def test_form_body(self) -> Any:
        fake = self.start_fake()
        r = yield self.post(
            fake, data={"text": ["hello world", "bye"], "target_lang": "es"}, headers=self.auth(fake)
        )
        self.assertEqual(r.status_code, 200)
        self.assertIn("x-trace-id", r.headers)
        self.assertEqual(
            r.json(),
            {"translations": [
                {"detected_source_language": "EN", "text": "hola mundo"},
                {"detected_source_language": "EN", "text": "adios"},
            ]},
        )
        self.assertEqual(fake.requests[0].body["text"], ["hello world", "bye"])

    @inlineCallbacks
    def test_json_billed_and_model(self) -> Any:
        fake = self.start_fake()
        r = yield self.post(
            fake,
            json={"text": ["hola"], "target_lang": "EN-US", "source_lang": "ES",
                  "show_billed_characters": True, "model_type": "prefer_quality_optimized"},
            headers=self.auth(fake),
        )
        self.assertEqual(
            r.json()["translations"],
            [{"detected_source_language": "ES", "text": "hello", "billed_characters": 4,
              "model_type_used": "quality_optimized"}],
        )

    @inlineCallbacks
    def test_refusals(self) -> Any:
        fake = self.start_fake()
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({"json": {"text": "hello", "target_lang": "ES"}}, 400, "array"),
            ({"json": {"text": ["hello"]}}, 400, "target_lang"),
            ({"json": {"text": ["hello"], "target_lang": "XX"}}, 400, "target_lang"),
            ({"json": {"text": ["hello"], "target_lang": "ES", "source_lang": "EN-GB"}}, 400, "source_lang"),
            ({"json": {"text": ["hello"], "target_lang": "EN-US", "formality": "more"}}, 400, "formality"),
            ({"json": {"text": ["x" * (130 * 1024)], "target_lang": "ES"}}, 413, ""),
        ]
        for kwargs, status, word in cases:
            r = yield self.post(fake, headers=self.auth(fake), **kwargs)
            self.assertEqual(r.status_code, status, kwargs)
            self.assertIn(word, r.json()["message"])
        r = yield self.post(fake, json={"text": ["a"], "target_lang": "ES"},
                            headers={"Authorization": "DeepL-Auth-Key nope", "User-Agent": "t"})
        self.assertEqual((r.status_code, "message" in r.json()), (403, True))
        r = yield self.post(fake, json={"text": ["a"], "target_lang": "ES"},
                            headers={"Authorization": f"Bearer {fake.auth_key}", "User-Agent": "t"})
        self.assertEqual(r.status_code, 403)
        r = yield self.post(fake, json={"text": ["a"], "target_lang": "ES"},
                            headers={**self.auth(fake), "User-Agent": SKIP_HEADER})
        self.assertEqual(r.status_code, 400)
        self.assertIn("User-Agent", r.json()["message"])

    @inlineCallbacks
    def test_session_headers(self) -> Any:
        fake = self.start_fake()
        body = {"text": ["hello"], "target_lang": "ES"}
        s1 = self.auth(fake, **{"mock-server-session": "s1", "mock-server-session-429-count": "1",
                                "mock-server-session-5xx-count": "1", "mock-server-session-5xx-status": "504"})
        statuses = []
        for _ in range(3):
            r = yield self.post(fake, json=body, headers=s1)
            statuses.append(r.status_code)
        r = yield self.post(fake, json=body, headers=self.auth(fake, **{"mock-server-session": "s2"}))
        statuses.append(r.status_code)
        self.assertEqual(statuses, [429, 504, 200, 200])
        self.assertEqual([q.status for q in fake.requests], statuses)


class DeepLMTTests(_Loopback):
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

