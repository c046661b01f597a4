"""
DeepL machine translation through the official ``deepl`` library.

Design notes:

- The ``deepl`` client is synchronous (one ``requests.Session``), so every
  request runs in the bounded :class:`~xlbridge.engines.threads.ThreadPoolService`,
  never on the reactor thread.  One client serves every call and thread of
  the process (it is created lazily, under a lock, by the first request), so
  its keep-alive connection stays warm: a fresh TLS handshake per sentence
  would add latency to every translation.

- Retries are ours, not the library's.  The library would retry 429/5xx up
  to 5 times with a 1 s, 1.6 s, ... backoff by sleeping in the pool thread,
  so a translation could arrive half a minute late while holding a thread.
  We set ``deepl.http_client.max_network_retries = 0`` (one attempt per
  pool call) and ``min_connection_timeout`` to the deadline (an attempt
  cannot outlive it by more than one deadline), then wait between attempts
  on the reactor (``deferLater`` with the injected clock).  Every
  :meth:`DeepLMT.translate` has a total deadline (``deadline_s``, default
  4 s): when it passes the Deferred errbacks with :class:`EngineUnavailable`
  even if an attempt is still blocked in its thread; that attempt's late
  answer is dropped and counted.  These two library settings are module
  globals, so they apply to the whole process: this adapter is the only
  user of the library in xlbridge.

- Status mapping: 429, 5xx and connection errors are retried; 403 →
  :class:`EngineAuthError`; 456 → :class:`EngineQuotaError`; 400 and other
  4xx → :class:`EngineRequestError`; retries exhausted by the deadline →
  :class:`EngineUnavailable`.  No message, repr or log line carries the key
  (:func:`~xlbridge.engines.base.redact`).  The mapping, the failure kinds
  and the counters are in :mod:`xlbridge.engines.deepl.failures`.

Settings, language-code mapping and the ``context`` builder live in
:mod:`xlbridge.engines.deepl.settings`.
"""

from __future__ import annotations

import random as _random
import threading
from typing import Callable, Optional, Sequence

import deepl
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.base import EngineError, EngineRequestError, EngineUnavailable, redact
from xlbridge.engines.deepl.failures import DeepLCounters, DeepLFailure, classify_failure
from xlbridge.engines.deepl.settings import DeepLSettings, build_context, deepl_source_lang, deepl_target_lang
from xlbridge.engines.threads import PoolFull, ThreadPoolService

ENGINE = "deepl"

#: Growth and jitter of the wait between attempts, as in the library's
#: gRPC-style ``_BackoffTimer`` (only the first wait is shorter).
BACKOFF_MULTIPLIER = 1.6
BACKOFF_JITTER = 0.23


# -- the adapter --------------------------------------------------------------


class DeepLMT:
    """
    :class:`~xlbridge.engines.base.MT` on DeepL ``/v2/translate``; build one
    per process and share it between calls.

    :param reactor: delivers results and times retries and deadlines.
    :param pool: where the blocking library calls run.
    :param settings: key, endpoint and request options.
    :param random: returns a float in [0, 1) for backoff jitter; inject a
        constant for deterministic tests.
    """

    name = ENGINE
    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        pool: ThreadPoolService,
        settings: DeepLSettings,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.reactor = reactor
        self.pool = pool
        self.settings = settings
        self.random = random
        self.counters = DeepLCounters()
        self._client: Optional[deepl.DeepLClient] = None
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<DeepLMT key={redact(self.settings.auth_key)} server_url={self.settings.server_url!r}>"

    def translate(
        self, text: str, source: str, target: str, context: Sequence[str] = ()
    ) -> "Deferred[str]":
        """
        Translate ``text`` from ``source`` to ``target`` (bridge codes such as
        ``en``, ``es-419``).  ``context`` holds earlier sentences of the same
        speaker, oldest first; the last few go along as DeepL ``context``.

        Call on the reactor thread.  Fires on the reactor thread with the
        translation, or errbacks with an
        :class:`~xlbridge.engines.base.EngineError` within ``deadline_s``
        seconds.  Empty text gives ``""`` without a request.  Cancelling
        stops the retries (an attempt already running is left to finish and
        dropped).
        """
        if not text.strip():
            return succeed("")
        try:
            target_lang = deepl_target_lang(target, self.settings)
            source_lang = deepl_source_lang(source)
        except ValueError as e:
            self.counters.failures[DeepLFailure.REQUEST] += 1
            return fail(EngineRequestError(ENGINE, str(e)))
        job = _Translation(self, text, source_lang, target_lang, build_context(context, self.settings))
        return job.start()

    def close(self) -> None:
        """
        Close the shared client's connections (stopping the bridge, tests).
        A later request opens a new client.
        """
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # -- pool thread side --

    def _get_client(self) -> deepl.DeepLClient:
        """
        The shared client, created by the first caller.  Runs in a pool
        thread; the lock makes concurrent first requests share one client.
        """
        with self._client_lock:
            if self._client is None:
                # Process-wide library settings, see the module notes: one
                # attempt per pool call, and no attempt longer than the
                # deadline.
                deepl.http_client.max_network_retries = 0
                deepl.http_client.min_connection_timeout = self.settings.deadline_s
                client = deepl.DeepLClient(self.settings.auth_key, server_url=self.settings.server_url)
                client.set_app_info("xlbridge", _version())
                self._client = client
            return self._client

    def _blocking_translate(
        self, text: str, source_lang: str, target_lang: str, context: Optional[str]
    ) -> deepl.TextResult:
        """
        One HTTP attempt, in a pool thread.  Raises the library's exceptions.
        """
        client = self._get_client()
        formality = None if self.settings.formality == "default" else self.settings.formality
        result = client.translate_text(
            text,
            source_lang=source_lang,
            target_lang=target_lang,
            context=context,
            formality=formality,
            model_type=self.settings.model_type,
        )
        assert isinstance(result, deepl.TextResult)
        return result

    def _scrub(self, message: str) -> str:
        """
        ``message`` with any copy of the key replaced (servers and
        libraries sometimes echo what they were sent).
        """
        key = self.settings.auth_key
        return message.replace(key, redact(key)) if key else message


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("xlbridge")
    except Exception:
        return "0"


def _ignore_cancelled(failure: Failure) -> None:
    failure.trap(CancelledError)


class _Translation:
    """
    One :meth:`DeepLMT.translate`: its attempts, the waits between them and
    its deadline.  Everything here runs on the reactor thread.
    """

    def __init__(
        self, mt: DeepLMT, text: str, source_lang: str, target_lang: str, context: Optional[str]
    ) -> None:
        self.mt = mt
        self.clock = mt.reactor
        self.text = text
        self.source_lang = source_lang
        self.target_lang = target_lang
        self.context = context
        self.attempts = 0
        self.in_flight = False
        self.done = False
        self.last_reason = ""
        self.result: Deferred[str] = Deferred(self._cancel)
        self.started = 0.0
        self.deadline_at = 0.0
        self.deadline_call: Optional[IDelayedCall] = None
        self.waiting: Optional[Deferred[None]] = None

    def start(self) -> "Deferred[str]":
        deadline = self.mt.settings.deadline_s
        self.started = self.clock.seconds()
        self.deadline_at = self.started + deadline
        self.deadline_call = self.clock.callLater(deadline, self._deadline_passed)
        self._attempt()
        return self.result

    def _attempt(self) -> None:
        self.waiting = None
        if self.done:
            return
        self.attempts += 1
        self.in_flight = True
        d = self.mt.pool.run(
            self.mt._blocking_translate, self.text, self.source_lang, self.target_lang, self.context
        )
        d.addCallbacks(self._answered, self._failed, callbackArgs=(self.attempts,), errbackArgs=(self.attempts,))

    def _count_request(self, attempt: int) -> None:
        c = self.mt.counters
        c.requests += 1
        c.characters_sent += len(self.text)
        if attempt > 1:
            c.retries += 1

    def _answered(self, result: deepl.TextResult, attempt: int) -> None:
        self.in_flight = False
        self._count_request(attempt)
        if self.done:
            self.mt.counters.late += 1
            return
        self.mt.counters.characters_billed += result.billed_characters or 0
        self.mt.counters.last_latency_ms = (self.clock.seconds() - self.started) * 1000.0
        self._finish(result.text)

    def _failed(self, failure: Failure, attempt: int) -> None:
        self.in_flight = False
        if failure.check(PoolFull):
            self._fail(
                EngineUnavailable(ENGINE, f"thread pool full, translation not attempted ({failure.value})"),
                DeepLFailure.POOL_FULL,
            )
            return
        self._count_request(attempt)
        if self.done:
            self.mt.counters.late += 1
            return
        assert failure.value is not None
        error_class, kind, message = classify_failure(failure.value)
        message = self.mt._scrub(message)
        self.last_reason = message
        if error_class is not None:
            if kind is DeepLFailure.UNAVAILABLE:
                # Not a known DeepL failure: a bug here or in the library.
                self.mt.log.failure("unexpected DeepL failure: {message}", failure, message=message)
            self._fail(error_class(ENGINE, message), kind)
            return
        delay = self._backoff(attempt)
        if self.clock.seconds() + delay >= self.deadline_at:
            self._fail(
                EngineUnavailable(
                    ENGINE,
                    f"gave up after {attempt} attempts within {self.mt.settings.deadline_s:g} s: {message}",
                ),
                DeepLFailure.UNAVAILABLE,
            )
            return
        self.mt.log.info(
            "DeepL attempt {attempt} failed ({reason}); retrying in {delay:.3f} s",
            attempt=attempt,
            reason=message,
            delay=delay,
        )
        self.waiting = deferLater(self.clock, delay, self._attempt)
        self.waiting.addErrback(_ignore_cancelled)

    def _backoff(self, attempt: int) -> float:
        """
        Seconds to wait before attempt ``attempt + 1``.
        """
        base = self.mt.settings.backoff_initial_s * BACKOFF_MULTIPLIER ** (attempt - 1)
        return base * (1 + BACKOFF_JITTER * (2 * self.mt.random() - 1))

    def _deadline_passed(self) -> None:
        self.deadline_call = None
        if self.done:
            return
        earlier = f"; earlier failure: {self.last_reason}" if self.last_reason else ""
        self._fail(
            EngineUnavailable(
                ENGINE,
                f"no answer within {self.mt.settings.deadline_s:g} s "
                f"(attempt {self.attempts} still running{earlier})",
            ),
            DeepLFailure.DEADLINE if self.in_flight else DeepLFailure.UNAVAILABLE,
        )

    def _stop_timers(self) -> None:
        self.done = True
        if self.deadline_call is not None and self.deadline_call.active():
            self.deadline_call.cancel()
        self.deadline_call = None
        if self.waiting is not None:
            waiting, self.waiting = self.waiting, None
            waiting.cancel()

    def _finish(self, text: str) -> None:
        self._stop_timers()
        self.result.callback(text)

    def _fail(self, error: EngineError, kind: DeepLFailure) -> None:
        self._stop_timers()
        self.mt.counters.failures[kind] += 1
        self.mt.log.warn(
            "DeepL translation failed ({kind}): {error}", kind=kind.value, error=error.message
        )
        self.result.errback(error)

    def _cancel(self, d: "Deferred[str]") -> None:
        self._stop_timers()
