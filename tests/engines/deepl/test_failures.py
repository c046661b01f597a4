"""
Tests for :mod:`xlbridge.engines.deepl.failures`: what each failed DeepL
attempt means (give up with which error, or retry), without a reactor.
"""

from __future__ import annotations

import deepl
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import (
    EngineAuthError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
)
from xlbridge.engines.deepl.failures import DeepLCounters, DeepLFailure, classify_failure


class ClassifyFailureTests(SynchronousTestCase):
    def test_table(self) -> None:
        cases: list[tuple[BaseException, object, DeepLFailure]] = [
            (deepl.AuthorizationException("no", http_status_code=403), EngineAuthError, DeepLFailure.AUTH),
            (deepl.QuotaExceededException("full", http_status_code=456), EngineQuotaError, DeepLFailure.QUOTA),
            (deepl.ConnectionException("refused", should_retry=True), None, DeepLFailure.UNAVAILABLE),
            (deepl.ConnectionException("bad url"), EngineRequestError, DeepLFailure.REQUEST),
            (deepl.DeepLException("busy", http_status_code=429), None, DeepLFailure.UNAVAILABLE),
            (deepl.DeepLException("down", http_status_code=503), None, DeepLFailure.UNAVAILABLE),
            (deepl.DeepLException("bad", http_status_code=400), EngineRequestError, DeepLFailure.REQUEST),
            (deepl.DeepLException("odd"), EngineRequestError, DeepLFailure.REQUEST),
            (ValueError("lang"), EngineRequestError, DeepLFailure.REQUEST),
            (RuntimeError("bug"), EngineUnavailable, DeepLFailure.UNAVAILABLE),
        ]
        for exc, error_class, kind in cases:
            got_class, got_kind, message = classify_failure(exc)
            self.assertEqual((got_class, got_kind), (error_class, kind), repr(exc))
            self.assertTrue(message, repr(exc))

    def test_counters_start_at_zero_for_every_kind(self) -> None:
        c = DeepLCounters()
        self.assertEqual(c.failures, {k: 0 for k in DeepLFailure})
        self.assertIsNone(c.last_latency_ms)
