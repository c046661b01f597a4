"""
Tests for the fake DeepL server (:mod:`tests.fakes.deepl`): its
dictionary, used to check audio end to end, and that it refuses what DeepL
refuses (raw HTTP from a pool thread to the fake on loopback).
"""

from __future__ import annotations

from typing import Any

import requests  # type: ignore[import-untyped]
from urllib3.util import SKIP_HEADER
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase

from tests.engines.deepl.loopback import Loopback
from tests.fakes.deepl import detect_language, translate_words


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


class FakeServerTests(Loopback):
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

    @inlineCallbacks
    def test_429_with_retry_after(self) -> Any:
        """An injected 429 carries ``Retry-After`` when the fake is told to send one."""
        fake = self.start_fake()
        fake.faults.fail_429 = 2
        fake.faults.retry_after = 1.5
        r = yield self.post(fake, json={"text": ["hello"], "target_lang": "ES"}, headers=self.auth(fake))
        self.assertEqual((r.status_code, r.headers.get("retry-after")), (429, "1.5"))
        fake.faults.retry_after = None
        r = yield self.post(fake, json={"text": ["hello"], "target_lang": "ES"}, headers=self.auth(fake))
        self.assertEqual((r.status_code, r.headers.get("retry-after")), (429, None))
        r = yield self.post(fake, json={"text": ["hello"], "target_lang": "ES"}, headers=self.auth(fake))
        self.assertEqual(r.status_code, 200)
