"""
DeepL machine translation, its failures: :class:`DeepLFailure` (why a
translation failed), :class:`DeepLCounters` (what the adapter did, for the
monitor) and :func:`classify_failure` (what a failed attempt means: give up
with which :class:`~xlbridge.engines.base.EngineError`, or retry).

Why a module of its own: the status mapping is policy, pure and testable
without a reactor or a thread pool, and the counters are read by the
monitor; :mod:`xlbridge.engines.deepl.mt` keeps the client, the attempts,
the retries and the deadline.

Status mapping: 429, 5xx and retryable connection errors are retried; 403
-> :class:`~xlbridge.engines.base.EngineAuthError`; 456 ->
:class:`~xlbridge.engines.base.EngineQuotaError`; 400 and other 4xx ->
:class:`~xlbridge.engines.base.EngineRequestError`; anything unexpected ->
:class:`~xlbridge.engines.base.EngineUnavailable`.  Units: characters are
Unicode code points of the text (``len``), latencies milliseconds.
"""

from __future__ import annotations

import enum
from typing import Optional

import attrs
import deepl

from xlbridge.engines.base import (
    EngineAuthError,
    EngineError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
)

__all__ = ["DeepLCounters", "DeepLFailure", "classify_failure"]


class DeepLFailure(enum.Enum):
    """
    Why a :meth:`~xlbridge.engines.deepl.mt.DeepLMT.translate` failed (keys of ``failures``).
    """

    AUTH = "auth"  #: 403
    QUOTA = "quota"  #: 456
    REQUEST = "request"  #: 400/4xx, unknown language, bad setting
    UNAVAILABLE = "unavailable"  #: 429/5xx/network until the deadline was near
    DEADLINE = "deadline"  #: an attempt was still running at the deadline
    POOL_FULL = "pool_full"  #: the thread pool refused the work


@attrs.define
class DeepLCounters:
    """
    What the adapter did, for the monitor.  Updated on the reactor thread.

    :ivar requests: HTTP requests that completed (answered, failed or timed
        out), retries included.
    :ivar retries: of those, how many were retries.
    :ivar characters_sent: characters of ``text`` in those requests
        (``context`` is not billed and not counted).
    :ivar characters_billed: ``billed_characters`` DeepL reported.
    :ivar late: answers that came after their deadline and were dropped.
    :ivar failures: failed translations by :class:`DeepLFailure`.
    :ivar last_latency_ms: milliseconds from ``translate()`` to the result of
        the last successful translation, retries included.
    """

    requests: int = 0
    retries: int = 0
    characters_sent: int = 0
    characters_billed: int = 0
    late: int = 0
    failures: dict[DeepLFailure, int] = attrs.field(factory=lambda: {k: 0 for k in DeepLFailure})
    last_latency_ms: Optional[float] = None


def classify_failure(exc: BaseException) -> tuple[Optional[type[EngineError]], DeepLFailure, str]:
    """
    What a failed attempt means: ``(error class, kind, message)``, where an
    error class of ``None`` means "retry if time allows".
    """
    status = getattr(exc, "http_status_code", None)
    if isinstance(exc, deepl.AuthorizationException):
        return EngineAuthError, DeepLFailure.AUTH, f"key refused (HTTP 403): {exc}"
    if isinstance(exc, deepl.QuotaExceededException):
        return EngineQuotaError, DeepLFailure.QUOTA, f"character quota exceeded (HTTP 456): {exc}"
    if isinstance(exc, deepl.ConnectionException):
        if exc.should_retry:
            return None, DeepLFailure.UNAVAILABLE, str(exc)
        return EngineRequestError, DeepLFailure.REQUEST, f"request not sent: {exc}"
    if isinstance(exc, deepl.DeepLException):
        if status is not None and (status == 429 or status >= 500):
            return None, DeepLFailure.UNAVAILABLE, f"HTTP {status}: {exc}"
        if status is not None:
            return EngineRequestError, DeepLFailure.REQUEST, f"request refused (HTTP {status}): {exc}"
        return EngineRequestError, DeepLFailure.REQUEST, str(exc)
    if isinstance(exc, (ValueError, TypeError)):
        return EngineRequestError, DeepLFailure.REQUEST, f"bad request: {exc}"
    return EngineUnavailable, DeepLFailure.UNAVAILABLE, f"unexpected {type(exc).__name__}: {exc}"
