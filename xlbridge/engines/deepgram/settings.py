"""
Deepgram live ASR, settings: :class:`DeepgramSettings` (the ``[deepgram]``
table), the ``/v1/listen`` URL built from them, and the languages each
model recognises.  ``api = "flux"`` chooses Deepgram Flux (``/v2/listen``,
turn-based, with eager end of turn): its settings are checked here, its URL
is built by :func:`~xlbridge.engines.deepgram.flux.flux_url`.

Nothing here holds a socket, a clock or per-connection state; the message
and audio bookkeeping is in :mod:`xlbridge.engines.deepgram.wire`.  Wire
facts are in ``PROTOCOLS.md`` section 2 (Deepgram) and 11 (Flux).  The
reconnect delay and error classification moved to
:mod:`xlbridge.engines.deepgram.failures` and are re-exported from here.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Union
from urllib.parse import urlencode, urlsplit

import attrs

from xlbridge.audio.frame import SAMPLE_RATE
from xlbridge.engines.base import redact
from xlbridge.engines.deepgram.failures import (  # re-exported: they were defined here
    ENGINE,
    backoff_delay,
    classify_close,
    classify_upgrade_failure,
)
from xlbridge.engines.languages import primary
from xlbridge.engines.options import build_with_environment, check_keys, check_kinds, setting_error

__all__ = [
    "DEFAULT_BASE_URL",
    "ENGINE",
    "ENV_API_KEY",
    "ENV_URL",
    "FLUX_MODELS",
    "FLUX_MULTI_LANGUAGES",
    "MODEL_LANGUAGES",
    "DeepgramSettings",
    "backoff_delay",
    "classify_close",
    "classify_upgrade_failure",
    "language_problem",
    "listen_url",
    "model_languages",
]

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
#: The ten languages of ``flux-general-multi`` (PROTOCOLS.md 11.1, MULTI);
#: ``flux-general-en`` is English only.
FLUX_MULTI_LANGUAGES = frozenset("en es fr de hi ru pt ja it nl".split())

#: The Flux models (``/v2/listen``; PROTOCOLS.md 11.1, SPEC ``ListenV2Model``).
FLUX_MODELS = ("flux-general-en", "flux-general-multi")

#: ``/v1/listen`` query parameters Flux does not take (PROTOCOLS.md 11.1):
#: refused in ``extra_params`` with ``api = "flux"``.
V1_ONLY_PARAMS = frozenset({"language", "interim_results", "endpointing", "utterance_end_ms", "vad_events",
                            "smart_format", "punctuate", "channels"})

MODEL_LANGUAGES: Mapping[str, frozenset[str]] = {
    "nova-3": NOVA3_LANGUAGES,
    "nova-3-general": NOVA3_LANGUAGES,
    "nova-2": NOVA2_LANGUAGES,
    "nova-2-general": NOVA2_LANGUAGES,
    "flux-general-en": frozenset({"en"}),
    "flux-general-multi": FLUX_MULTI_LANGUAGES,
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
    "smart_format": bool, "punctuate": bool, "keepalive_s": float, "api": str, "flux_model": str,
    "eot_threshold": float, "eot_timeout_ms": int, "replay_s": float, "chunk_ms": int,
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
    :ivar api: ``nova`` (``/v1/listen`` with ``model``: results and
        endpointing) or ``flux`` (``/v2/listen`` with ``flux_model``: turns,
        optionally eager ends of turn).  ``endpointing``,
        ``utterance_end_ms``, ``interim_results``, ``vad_events``,
        ``smart_format``, ``punctuate`` and ``keepalive_s`` are Nova's only.
    :ivar flux_model: ``flux-general-en`` (English) or ``flux-general-multi``
        (en es fr de hi ru pt ja it nl; each leg's language is sent as its
        ``language_hint``).
    :ivar eot_threshold: Flux's end-of-turn confidence, 0.5..1.0 (1.0: the
        model never ends a turn; ``eot_timeout_ms`` does).
    :ivar eager_eot_threshold: 0.3..0.9, at most ``eot_threshold``: Flux
        sends ``EagerEndOfTurn`` (the ASR emits
        :class:`~xlbridge.engines.base.EagerEnd`) when its confidence
        reaches this.  ``None`` (unset): no eager events.
    :ivar eot_timeout_ms: silence in ms after which Flux ends a turn
        whatever its confidence, 500..60000.
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
    api: str = "nova"
    flux_model: str = "flux-general-en"
    eot_threshold: float = 0.7
    eager_eot_threshold: Optional[float] = None
    eot_timeout_ms: int = 5000

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
        self._check_flux()

    def _check_flux(self) -> None:
        """The Flux settings (ranges: PROTOCOLS.md 11.1), checked whichever ``api`` is chosen."""
        _check("api", self.api in ("nova", "flux"),
               f'must be "nova" (/v1/listen) or "flux" (/v2/listen), got {self.api!r}')
        _check("flux_model", self.flux_model.startswith("flux-"),
               f"must be a Flux model ({', '.join(FLUX_MODELS)}), got {self.flux_model!r}")
        _check("eot_threshold", 0.5 <= self.eot_threshold <= 1.0,
               f"must be 0.5..1.0, got {self.eot_threshold}")
        eager = self.eager_eot_threshold
        _check("eager_eot_threshold", eager is None or (not isinstance(eager, bool) and isinstance(eager, (int, float))),
               f"expected a number, got {eager!r}")
        if eager is not None:
            _check("eager_eot_threshold", 0.3 <= eager <= 0.9, f"must be 0.3..0.9, got {eager}")
            _check("eager_eot_threshold", eager <= self.eot_threshold,
                   f"must not be above eot_threshold ({self.eot_threshold}), got {eager}")
        _check("eot_timeout_ms", 500 <= self.eot_timeout_ms <= 60000,
               f"must be 500..60000 ms, got {self.eot_timeout_ms}")
        if self.api == "flux":
            v1 = sorted({k for k, _ in self.extra_params} & V1_ONLY_PARAMS)
            _check("extra_params", not v1,
                   f"{', '.join(v1)}: /v1/listen parameters that Flux (api = \"flux\") does not take")

    @property
    def asr_model(self) -> str:
        """The model in use: ``flux_model`` with ``api = "flux"``, else ``model``."""
        return self.flux_model if self.api == "flux" else self.model

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


def language_problem(settings: DeepgramSettings, language: str) -> Optional[str]:
    """
    Why the configured model cannot recognise ``language`` (a caller's
    code, regional variants allowed), in words, or ``None`` (also for a
    model this version does not know).  A non-English leg on
    ``flux-general-en`` is told to use ``flux-general-multi``, which also
    takes ``auto`` (it reports the language it hears).
    """
    model = settings.asr_model
    langs = model_languages(model)
    lang = primary(language)
    if lang == "auto" and settings.api == "flux" and model == "flux-general-multi":
        return None  # Flux identifies it (TurnInfo ``languages``)
    if langs is None or lang in langs:
        return None
    known = " ".join(sorted(langs))
    if settings.api == "flux":
        text = f"deepgram (flux_model {model}) cannot recognise {language!r}; it recognises {known}"
        if model != "flux-general-multi" and lang in FLUX_MULTI_LANGUAGES:
            text += '; set flux_model = "flux-general-multi" in [deepgram] for non-English legs'
        elif lang not in FLUX_MULTI_LANGUAGES:
            text += f'; no Flux model does (flux-general-multi: {" ".join(sorted(FLUX_MULTI_LANGUAGES))}): use api = "nova"'
        return text
    return f"deepgram (model {model}) cannot recognise {language!r}; it recognises {known}"


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
