"""
Deepgram live ASR, settings and policy: :class:`DeepgramSettings`, the
``/v1/listen`` URL built from them, the reconnect delay
(:func:`backoff_delay`) and how a refused upgrade or an unexpected close
maps to an :class:`~xlbridge.engines.base.EngineError`.

Nothing here holds a socket, a clock or per-connection state; the message
and audio bookkeeping is in :mod:`xlbridge.engines.deepgram.wire`.  Wire
facts are in ``PROTOCOLS.md`` section 2 (Deepgram).

Errors
------

An upgrade refused with 401/403 is an
:class:`~xlbridge.engines.base.EngineAuthError`, 400 and other 4xx an
:class:`~xlbridge.engines.base.EngineRequestError` (neither is retried);
408, 429, 5xx, drops and ``NET-`` closes are
:class:`~xlbridge.engines.base.EngineUnavailable` (retried with backoff).
Close reasons are keyed on their prefix (``NET-``, ``DATA-``), not the
close code, because the documented codes disagree (PROTOCOLS.md 2.5).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Union
from urllib.parse import urlencode, urlsplit

import attrs

from xlbridge.audio.frame import SAMPLE_RATE
from xlbridge.engines.base import (
    EngineAuthError,
    EngineError,
    EngineQuotaError,
    EngineRequestError,
    EngineUnavailable,
    redact,
)
from xlbridge.engines.options import build_with_environment, check_keys, check_kinds, setting_error

__all__ = [
    "DEFAULT_BASE_URL",
    "ENGINE",
    "ENV_API_KEY",
    "ENV_URL",
    "MODEL_LANGUAGES",
    "DeepgramSettings",
    "backoff_delay",
    "classify_close",
    "classify_upgrade_failure",
    "listen_url",
    "model_languages",
]

ENGINE = "deepgram"

#: Default service root; the client appends ``/v1/listen?...``.
DEFAULT_BASE_URL = "wss://api.deepgram.com"

#: Environment variables read by :meth:`DeepgramSettings.from_env`.
ENV_API_KEY = "DEEPGRAM_API_KEY"
ENV_URL = "XLBRIDGE_DEEPGRAM_URL"


def _bool(v: bool) -> str:
    return "true" if v else "false"


#: The languages (primary subtags, as ``--langs`` takes them) Deepgram's
#: monolingual streaming models recognise: Deepgram's "Models & Languages
#: Overview" and its changelog (Nova-3 languages added 2025-08 to 2026-03;
#: regional variants such as ``es-419``, ``fr-CA``, ``nl-BE``, ``de-CH``,
#: ``pt-BR`` go to the same models).
NOVA3_LANGUAGES = frozenset("""
be bg bn bs ca cs da de el en es et fi fr hi hr hu id it ja kn ko lt lv mk mr ms nl no pl pt ro ru sk sl sr sv
ta te tl tr uk vi zh
""".split())

#: Nova-2's 36 languages (Deepgram changelog 2024-05-14), as primary subtags.
NOVA2_LANGUAGES = frozenset("""
bg ca cs da de el en es et fi fr hi hu id it ja ko lt lv ms nl no pl pt ro ru sk sv th tr uk vi zh
""".split())

#: ``model`` -> the languages it recognises.  Domain variants
#: (``nova-3-medical``, ``nova-2-phonecall``...) are English only; models
#: not here are not checked (:func:`model_languages`).
MODEL_LANGUAGES: Mapping[str, frozenset[str]] = {
    "nova-3": NOVA3_LANGUAGES,
    "nova-3-general": NOVA3_LANGUAGES,
    "nova-2": NOVA2_LANGUAGES,
    "nova-2-general": NOVA2_LANGUAGES,
}


def model_languages(model: str) -> Optional[frozenset[str]]:
    """
    The languages ``model`` recognises, or ``None`` for a model this
    version does not know (then nothing is checked).
    """
    if model in MODEL_LANGUAGES:
        return MODEL_LANGUAGES[model]
    if model.startswith(("nova-3-", "nova-2-")):
        return frozenset({"en"})
    return None


def _check(key: str, ok: bool, message: str) -> None:
    if not ok:
        raise setting_error(f"{ENGINE}.{key}", message)


def _extra_params(value: Any) -> tuple[tuple[str, str], ...]:
    """
    ``extra_params`` from TOML (a table ``{keyterm = "xlbridge"}`` or a list
    of ``[name, value]`` pairs) or code (pairs) as a tuple of string pairs.
    """
    items = value.items() if isinstance(value, Mapping) else value
    try:
        pairs = tuple((str(k), str(v)) for k, v in items)
    except (TypeError, ValueError):
        raise setting_error(f"{ENGINE}.extra_params", "expected a table of query parameters like "
                                                      f"{{keyterm = \"xlbridge\"}}, got {value!r}") from None
    return pairs


#: Each setting's kind (TOML type); ``endpointing`` and
#: ``utterance_end_ms`` are checked by hand (a number or false/None).
_KINDS: Mapping[str, type] = {
    "api_key": str, "base_url": str, "model": str, "interim_results": bool, "vad_events": bool,
    "smart_format": bool, "punctuate": bool, "keepalive_s": float, "replay_s": float, "chunk_ms": int,
    "backoff_initial_s": float, "backoff_max_s": float, "backoff_factor": float,
    "connect_timeout_s": float, "finish_timeout_s": float,
}


@attrs.frozen
class DeepgramSettings:
    """
    Everything that configures the Deepgram client, shared by all legs.

    Audio format parameters (``encoding=linear16``, ``sample_rate=16000``,
    ``channels=1``) are not settings: they describe what this client sends
    (internal audio as little-endian 16-bit PCM) and must not disagree with
    it.  Anything else Deepgram accepts can go in ``extra_params``.

    :ivar api_key: sent as ``Authorization: Token <key>``; shown redacted.
    :ivar base_url: ``wss://`` (TLS, certificate verified) or ``ws://``
        (tests, private deployments) service root, without ``/v1/listen``.
    :ivar model: Deepgram model, e.g. ``nova-3``.
    :ivar endpointing: silence in ms that ends an utterance
        (``speech_final``), or ``False`` to disable endpointing.
    :ivar utterance_end_ms: gap in ms after the last word before an
        ``UtteranceEnd``; ``None`` to not ask for it (needs
        ``interim_results``).
    :ivar interim_results: ask for interim (not final) results.
    :ivar vad_events: ask for ``SpeechStarted`` messages.
    :ivar smart_format: Deepgram smart formatting.
    :ivar punctuate: Deepgram punctuation.
    :ivar extra_params: further ``(name, value)`` query parameters.
    :ivar keepalive_s: seconds without sending anything before a
        ``KeepAlive`` goes out (Deepgram closes after ~10 s, trap T4).
    :ivar replay_s: seconds of audio kept for replay after a reconnect.
        10 by default: a half-open socket is noticed up to 6 s after the
        server's last message (liveness: 2 s idle + 4 s for the pong), the
        reconnect takes about a second more, and everything since the last
        final must still be there to resend (5 s lost 29 of 321 words in a
        20-call half-open fault).  Costs 32 KB a second per leg.
    :ivar chunk_ms: audio per binary message, 20..100 ms.  20 (the default)
        forwards every RTP packet at once: larger messages save frames but
        hold the first packet of each message back by up to
        ``chunk_ms - 20`` ms before Deepgram sees it.
    :ivar backoff_initial_s: first reconnect delay, seconds (before jitter).
    :ivar backoff_max_s: largest reconnect delay, seconds.
    :ivar backoff_factor: growth of the delay per consecutive failure.
    :ivar connect_timeout_s: seconds for TCP, TLS and the WebSocket upgrade.
    :ivar finish_timeout_s: seconds :meth:`finish` waits for the last results.
    """

    api_key: str = attrs.field(default="", repr=lambda v: redact(v))
    base_url: str = DEFAULT_BASE_URL
    model: str = "nova-3"
    endpointing: Union[int, bool] = 300
    utterance_end_ms: Optional[int] = 1000
    interim_results: bool = True
    vad_events: bool = True
    smart_format: bool = True
    punctuate: bool = True
    extra_params: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_extra_params)
    keepalive_s: float = 4.0
    replay_s: float = 10.0
    chunk_ms: int = 20
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_factor: float = 2.0
    connect_timeout_s: float = 10.0
    finish_timeout_s: float = 5.0

    def __attrs_post_init__(self) -> None:
        check_kinds(ENGINE, self, _KINDS)
        scheme = urlsplit(self.base_url).scheme
        _check("base_url", scheme in ("ws", "wss"),
               f"must start with wss:// or ws://, got {self.base_url!r}")
        _check("model", bool(self.model), "must not be empty")
        _check("chunk_ms", 20 <= self.chunk_ms <= 100,
               f"must be 20..100 ms, got {self.chunk_ms}")
        _check("keepalive_s", 0 < self.keepalive_s < 10,
               f"must be between 0 and 10 s (Deepgram closes idle sockets after 10 s), got {self.keepalive_s}")
        _check("replay_s", 0 <= self.replay_s <= 60, f"must be 0..60 s, got {self.replay_s}")
        _check("backoff_initial_s", 0 < self.backoff_initial_s <= self.backoff_max_s,
               f"must be > 0 and at most backoff_max_s ({self.backoff_max_s}), got {self.backoff_initial_s}")
        _check("backoff_factor", self.backoff_factor >= 1.0, f"must be >= 1, got {self.backoff_factor}")
        _check("connect_timeout_s", self.connect_timeout_s > 0, f"must be > 0, got {self.connect_timeout_s}")
        _check("finish_timeout_s", self.finish_timeout_s > 0, f"must be > 0, got {self.finish_timeout_s}")
        ep = self.endpointing
        _check("endpointing", ep is False or (not isinstance(ep, bool) and isinstance(ep, int) and ep > 0),
               f"must be a positive number of ms or false, got {ep!r}")
        ue = self.utterance_end_ms
        _check("utterance_end_ms", ue is None or (not isinstance(ue, bool) and isinstance(ue, int) and ue > 0),
               f"must be a positive number of ms, got {ue!r}")
        _check("utterance_end_ms", ue is None or self.interim_results,
               "Deepgram needs interim_results = true for utterance_end_ms")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> "DeepgramSettings":
        """
        Build settings from the environment and explicit values.

        Precedence: built-in default < environment (``DEEPGRAM_API_KEY``,
        ``XLBRIDGE_DEEPGRAM_URL``) < ``overrides`` (the ``[deepgram]``
        table).  An override of ``None`` counts as "not given", so callers
        can pass unset options through.

        :raises ConfigError: for an unknown key or a bad value, naming
            ``deepgram.<key>`` (or the environment variable it came from).
        """
        check_keys(ENGINE, overrides, [f.name for f in attrs.fields(cls)])
        environment: dict[str, tuple[str, Any]] = {}
        if environ.get(ENV_API_KEY):
            environment["api_key"] = (ENV_API_KEY, environ[ENV_API_KEY].strip())
        if environ.get(ENV_URL):
            environment["base_url"] = (ENV_URL, environ[ENV_URL].strip())
        given = {k: v for k, v in overrides.items() if v is not None}
        return build_with_environment(ENGINE, lambda values: cls(**values), environment, given)

    @property
    def chunk_samples(self) -> int:
        """Samples (16 kHz) per binary audio message."""
        return SAMPLE_RATE * self.chunk_ms // 1000


def listen_url(settings: DeepgramSettings, language: str) -> str:
    """
    The ``/v1/listen`` WebSocket URL for one stream.

    :param language: BCP-47 code such as ``en`` or ``es``.
    :return: ``<base_url>/v1/listen?model=...`` with every query parameter;
        the API key is never part of it (it goes in a header).
    """
    params: list[tuple[str, str]] = [
        ("model", settings.model),
        ("language", language),
        ("encoding", "linear16"),
        ("sample_rate", str(SAMPLE_RATE)),
        ("channels", "1"),
        ("interim_results", _bool(settings.interim_results)),
        ("endpointing", "false" if settings.endpointing is False else str(int(settings.endpointing))),
    ]
    if settings.utterance_end_ms is not None:
        params.append(("utterance_end_ms", str(settings.utterance_end_ms)))
    params += [
        ("vad_events", _bool(settings.vad_events)),
        ("smart_format", _bool(settings.smart_format)),
        ("punctuate", _bool(settings.punctuate)),
    ]
    params += [(str(k), str(v)) for k, v in settings.extra_params]
    base = settings.base_url.rstrip("/")
    if not base.endswith("/v1/listen"):
        base += "/v1/listen"
    return f"{base}?{urlencode(params)}"


def backoff_delay(
    attempt: int,
    initial: float,
    maximum: float,
    factor: float = 2.0,
    random: Callable[[], float] = lambda: 1.0,
) -> float:
    """
    Seconds to wait before reconnect attempt number ``attempt``.

    Exponential with "equal jitter": the ceiling ``min(maximum, initial *
    factor ** (attempt - 1))`` is halved and the other half is random, so
    legs that dropped together do not reconnect together, the delay never
    reaches zero, and never exceeds ``maximum``.

    :param attempt: consecutive failures so far, 1 for the first retry.
    :param random: returns a float in ``[0, 1)`` (injected for tests).
    """
    n = max(1, attempt) - 1
    # Cap the exponent so huge attempt counts cannot overflow a float.
    ceiling = min(maximum, initial * factor ** min(n, 64))
    return ceiling / 2 + ceiling / 2 * min(max(random(), 0.0), 1.0)


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, redact(secret)) if secret else text


def classify_upgrade_failure(
    status: int, dg_error: Optional[str], request_id: Optional[str] = None, secret: str = ""
) -> EngineError:
    """
    The error for an HTTP upgrade answered with ``status`` instead of 101.

    :param dg_error: the ``dg-error`` response header, Deepgram's reason.
    :param request_id: the ``dg-request-id`` header, for support tickets.
    :param secret: scrubbed from the message should the server echo it.
    """
    detail = f"HTTP {status}"
    if dg_error:
        detail += f": {dg_error}"
    if request_id:
        detail += f" (dg-request-id {request_id})"
    detail = _scrub(detail, secret)
    if status in (401, 403):
        return EngineAuthError(ENGINE, detail)
    if status == 402:
        return EngineQuotaError(ENGINE, detail)
    if status in (408, 429) or status >= 500:
        return EngineUnavailable(ENGINE, detail)
    return EngineRequestError(ENGINE, detail)


def classify_close(code: Optional[int], reason: Optional[str], detail: str = "") -> EngineError:
    """
    The error for a connection that closed while we did not expect it.

    ``DATA-`` reasons mean Deepgram cannot decode our audio: a bug that a
    retry would repeat.  Everything else (``NET-0001`` idle timeout,
    ``NET-0000``, 1006 drops, an early 1000) may heal by reconnecting.

    :param detail: extra text, e.g. the last legacy ``Error`` message.
    """
    text = f"connection closed (code {code}" + (f", {reason}" if reason else "") + ")"
    if detail:
        text += f"; {detail}"
    if (reason or "").startswith("DATA-"):
        return EngineRequestError(ENGINE, text)
    return EngineUnavailable(ENGINE, text)

