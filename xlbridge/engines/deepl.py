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
  (:func:`~xlbridge.engines.base.redact`).

- Languages: the bridge speaks short codes (``en``, ``es-419``, ``pt``);
  DeepL wants upper-case base codes as source (regional variants are
  target-only) and a regional variant as target for English and Portuguese
  (bare ``EN``/``PT`` targets are deprecated and refused by the library).
"""

from __future__ import annotations

import enum
import random as _random
import threading
from typing import Any, Callable, Mapping, Optional, Sequence
from urllib.parse import urlsplit

import attrs
import deepl
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.base import (
    EngineAuthError,
    EngineError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
    redact,
)
from xlbridge.engines.threads import PoolFull, ThreadPoolService
from xlbridge.errors import ConfigError

ENGINE = "deepl"

#: Values DeepL accepts for ``formality``.
FORMALITIES = ("default", "more", "less", "prefer_more", "prefer_less")
#: Values DeepL accepts for ``model_type``.
MODEL_TYPES = ("latency_optimized", "quality_optimized", "prefer_quality_optimized")
ENGLISH_VARIANTS = ("EN-US", "EN-GB")
PORTUGUESE_VARIANTS = ("PT-BR", "PT-PT")

#: Growth and jitter of the wait between attempts, as in the library's
#: gRPC-style ``_BackoffTimer`` (only the first wait is shorter).
BACKOFF_MULTIPLIER = 1.6
BACKOFF_JITTER = 0.23


# -- settings -----------------------------------------------------------------


def _strip(value: str) -> str:
    return str(value).strip()


def _upper(value: str) -> str:
    return str(value).strip().upper()


def _lower(value: str) -> str:
    return str(value).strip().lower()


def _server_url(value: Optional[str]) -> Optional[str]:
    """
    ``None``/empty stays ``None`` (the library picks the host from the key).
    A base URL with a path gets a trailing ``/``, since the library joins
    ``v2/translate`` to it with ``urljoin`` and would drop the last segment.
    """
    if value is None or not str(value).strip():
        return None
    value = str(value).strip()
    path = urlsplit(value).path
    if path and not path.endswith("/"):
        value += "/"
    return value


def _one_of(option: str, allowed: Sequence[str]) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value not in allowed:
            raise ConfigError(option, f"{value!r} is not one of {', '.join(allowed)}")

    return check


def _check_key(instance: Any, attribute: Any, value: str) -> None:
    if not value:
        raise ConfigError("deepl-auth-key", "no DeepL key: set DEEPL_AUTH_KEY")


def _check_url(instance: Any, attribute: Any, value: Optional[str]) -> None:
    if value is None:
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            "deepl-url", f"{value!r} is not a base URL like https://api.deepl.com"
        )


def _positive(option: str) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if not value > 0:
            raise ConfigError(option, f"must be > 0, not {value!r}")

    return check


def _not_negative(option: str) -> Callable[[Any, Any, Any], None]:
    def check(instance: Any, attribute: Any, value: Any) -> None:
        if value < 0:
            raise ConfigError(option, f"must be >= 0, not {value!r}")

    return check


@attrs.frozen
class DeepLSettings:
    """
    How to reach DeepL and what to ask of it.  Bad values raise
    :class:`~xlbridge.errors.ConfigError` naming the option.

    :ivar auth_key: the API key; a key ending in ``:fx`` is a Free account
        (the library then uses ``api-free.deepl.com``).  Never shown.
    :ivar server_url: base URL replacing the host the library picks from the
        key, e.g. ``https://api.deepl.com`` or ``http://127.0.0.1:8802`` (the
        library's ``server_url``); ``None`` = pick from the key.
    :ivar english_variant: DeepL target for a bare ``en``: ``EN-US`` or ``EN-GB``.
    :ivar portuguese_variant: DeepL target for a bare ``pt``: ``PT-BR`` or ``PT-PT``.
    :ivar formality: one of :data:`FORMALITIES`; ``prefer_*`` fall back
        quietly for targets without formality, ``more``/``less`` are refused.
    :ivar model_type: one of :data:`MODEL_TYPES`.
    :ivar deadline_s: seconds from :meth:`DeepLMT.translate` until it gives
        up, retries included.  A late translation is worse than none.
    :ivar context_sentences: how many earlier sentences of the speaker go
        along as ``context`` (0 = none).
    :ivar context_max_chars: bound of the joined ``context``, in characters
        (the most recent text is kept).
    :ivar backoff_initial_s: seconds before the first retry; later waits
        grow ×1.6 with ±23 % jitter, and stop when the deadline is near.
    """

    auth_key: str = attrs.field(repr=redact, converter=_strip, validator=_check_key)
    server_url: Optional[str] = attrs.field(default=None, converter=_server_url, validator=_check_url)
    english_variant: str = attrs.field(
        default="EN-US", converter=_upper, validator=_one_of("deepl-english", ENGLISH_VARIANTS)
    )
    portuguese_variant: str = attrs.field(
        default="PT-BR", converter=_upper, validator=_one_of("deepl-portuguese", PORTUGUESE_VARIANTS)
    )
    formality: str = attrs.field(
        default="default", converter=_lower, validator=_one_of("deepl-formality", FORMALITIES)
    )
    model_type: str = attrs.field(
        default="latency_optimized", converter=_lower, validator=_one_of("deepl-model-type", MODEL_TYPES)
    )
    deadline_s: float = attrs.field(default=4.0, converter=float, validator=_positive("deepl-deadline"))
    context_sentences: int = attrs.field(
        default=3, converter=int, validator=_not_negative("deepl-context-sentences")
    )
    context_max_chars: int = attrs.field(
        default=1000, converter=int, validator=_not_negative("deepl-context-max-chars")
    )
    backoff_initial_s: float = attrs.field(
        default=0.25, converter=float, validator=_positive("deepl-backoff")
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> "DeepLSettings":
        """
        Settings from the environment: the key from ``DEEPL_AUTH_KEY`` (or
        ``DEEPL_API_KEY``), the base URL from ``XLBRIDGE_DEEPL_URL``.

        :param environ: usually ``os.environ``.
        :param overrides: field values that win over the environment; a
            ``None`` value means "not given" and is ignored, so unset
            command-line options can be passed straight through.
        :raises ConfigError: no key, or a bad value.
        """
        values: dict[str, Any] = {}
        key = environ.get("DEEPL_AUTH_KEY") or environ.get("DEEPL_API_KEY")
        if key:
            values["auth_key"] = key
        url = environ.get("XLBRIDGE_DEEPL_URL")
        if url:
            values["server_url"] = url
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("auth_key", "")
        return cls(**values)


# -- languages ----------------------------------------------------------------

#: Old or alternative ISO 639 codes → the code DeepL uses.
_ALIASES = {"no": "nb", "nn": "nb", "iw": "he", "in": "id", "ji": "yi", "fil": "tl"}

#: Base codes the installed library knows (``deepl.Language`` constants).
_KNOWN = frozenset(
    value.split("-")[0].lower()
    for name, value in vars(deepl.Language).items()
    if name.isupper() and isinstance(value, str)
)

#: English regions that follow British spelling.
_BRITISH = frozenset({"gb", "uk", "ie", "au", "nz", "za", "in"})
#: Spanish regions served by Latin American Spanish (``ES-419``).
_LATAM = frozenset(
    {"419", "mx", "ar", "bo", "cl", "co", "cr", "cu", "do", "ec", "gt", "hn",
     "ni", "pa", "pe", "pr", "py", "sv", "us", "uy", "ve"}
)
#: Portuguese regions that follow the European norm.
_EUROPEAN_PT = frozenset({"pt", "ao", "mz", "cv", "gw", "st", "tl", "mo"})
_TRADITIONAL_ZH = frozenset({"hant", "tw", "hk", "mo"})
_SIMPLIFIED_ZH = frozenset({"hans", "cn", "sg"})


def _split(code: str) -> tuple[str, list[str]]:
    """
    ``"es_419"`` → ``("es", ["419"])``, after aliases; raises ``ValueError``
    for a language DeepL does not know.
    """
    parts = str(code).strip().lower().replace("_", "-").split("-")
    base = _ALIASES.get(parts[0], parts[0])
    if base not in _KNOWN:
        raise ValueError(f"DeepL has no language for {code!r}")
    return base, [p for p in parts[1:] if p]


def deepl_target_lang(code: str, settings: DeepLSettings) -> str:
    """
    The DeepL ``target_lang`` for a bridge language code.

    ``en`` → ``settings.english_variant`` (``en-gb``, ``en-au``... →
    ``EN-GB``, ``en-us`` → ``EN-US``); ``pt`` →
    ``settings.portuguese_variant`` (``pt-br`` → ``PT-BR``, ``pt-pt`` →
    ``PT-PT``); ``es-419`` and Latin American regions → ``ES-419``, other
    Spanish → ``ES``; ``zh`` → ``ZH-HANS`` (``zh-tw``/``zh-hant`` →
    ``ZH-HANT``); anything else → its upper-case base code (``de-at`` →
    ``DE``).

    :raises ValueError: a language DeepL does not know.
    """
    base, rest = _split(code)
    if base == "en":
        if any(r in _BRITISH for r in rest):
            return "EN-GB"
        if "us" in rest:
            return "EN-US"
        return settings.english_variant
    if base == "pt":
        if "br" in rest:
            return "PT-BR"
        if any(r in _EUROPEAN_PT for r in rest):
            return "PT-PT"
        return settings.portuguese_variant
    if base == "es":
        return "ES-419" if any(r in _LATAM for r in rest) else "ES"
    if base == "zh":
        if any(r in _TRADITIONAL_ZH for r in rest):
            return "ZH-HANT"
        return "ZH-HANS"
    return base.upper()


def deepl_source_lang(code: str) -> str:
    """
    The DeepL ``source_lang`` for a bridge language code: the upper-case
    base code (``en-gb`` → ``EN``, ``es-419`` → ``ES``), since DeepL accepts
    regional variants only as targets.

    :raises ValueError: a language DeepL does not know.
    """
    base, _ = _split(code)
    return base.upper()


def build_context(sentences: Sequence[str], settings: DeepLSettings) -> Optional[str]:
    """
    The ``context`` to send: the last ``context_sentences`` non-empty
    sentences, oldest first, joined by spaces and cut to the most recent
    ``context_max_chars`` characters (at a word boundary when there is one).
    ``None`` when there is nothing to send.
    """
    if settings.context_sentences == 0 or settings.context_max_chars == 0:
        return None
    kept = [s.strip() for s in sentences if s and s.strip()][-settings.context_sentences:]
    joined = " ".join(kept)
    if len(joined) > settings.context_max_chars:
        joined = joined[-settings.context_max_chars:]
        space = joined.find(" ")
        if 0 <= space < len(joined) - 1:
            joined = joined[space + 1:]
    return joined or None


# -- counters -----------------------------------------------------------------


class DeepLFailure(enum.Enum):
    """
    Why a :meth:`DeepLMT.translate` failed (keys of ``failures``).
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


def _classify(exc: BaseException) -> tuple[Optional[type[EngineError]], DeepLFailure, str]:
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
        self.deadline_call: Any = None
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
        error_class, kind, message = _classify(failure.value)
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
