"""
ElevenLabs settings: :class:`ElevenLabsSettings` (endpoint, model, voices,
transport, timeouts, retries), read from the environment and the
``[elevenlabs]`` table.

Nothing here opens a connection or starts a timer.  The client
(:mod:`xlbridge.engines.elevenlabs.tts`) and both transports take these
settings; what goes on the wire is in :mod:`xlbridge.engines.elevenlabs.wire`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

import attrs

from xlbridge.engines.base import redact
from xlbridge.engines.elevenlabs.wire import OUTPUT_FORMAT, language_code
from xlbridge.engines.options import build_with_environment, check_keys, check_kinds, kind_problem, setting_error

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_FIRST_BYTE_TIMEOUT_S",
    "DEFAULT_TRANSPORT",
    "DEFAULT_VOICE",
    "DEFAULT_VOICES",
    "ENV_API_KEY",
    "ENV_URL",
    "LANGUAGE_CODE_MODELS",
    "MODEL_LANGUAGES",
    "ElevenLabsSettings",
    "model_languages",
]

ENGINE = "elevenlabs"

#: REST base; the WebSocket base is derived from it (http -> ws, https -> wss).
DEFAULT_BASE_URL = "https://api.elevenlabs.io"

#: Chosen by ``bench/tts_ttfa.py`` (see :mod:`xlbridge.engines.elevenlabs.tts`).
DEFAULT_TRANSPORT = "http"

#: Seconds to the first audio byte of a request (ElevenLabs answers in
#: 75-300 ms); the default of ``first_byte_timeout_s`` when ``timeout_s`` is
#: not shorter.
DEFAULT_FIRST_BYTE_TIMEOUT_S = 3.0

#: Premade voice "George" (ElevenLabs' own SDK examples); premade voices
#: speak every language of the multilingual models.
DEFAULT_VOICE = "JBFqnCBsd6RMkjVDRZzb"

#: Language (ISO 639-1) -> premade voice id; "Sarah" for Spanish so that the
#: two directions of a call sound different.
DEFAULT_VOICES: Mapping[str, str] = {
    "en": "JBFqnCBsd6RMkjVDRZzb",
    "es": "EXAVITQu4vr4xnSDxMaL",
}

#: Models that take (and enforce) ``language_code`` (PROTOCOLS.md 4.2).
LANGUAGE_CODE_MODELS = frozenset({"eleven_flash_v2_5", "eleven_turbo_v2_5"})

#: What ``eleven_multilingual_v2`` speaks (ElevenLabs' "Models" page); the
#: codes are ElevenLabs' ``language_code`` values (``fil`` is Filipino).
MULTILINGUAL_V2_LANGUAGES = frozenset("""
ar bg cs da de el en es fi fil fr hi hr id it ja ko ms nl pl pt ro ru sk sv ta tr uk zh
""".split())

#: Flash and Turbo v2.5: the multilingual v2 languages plus hu, no, vi.
V2_5_LANGUAGES = MULTILINGUAL_V2_LANGUAGES | {"hu", "no", "vi"}

#: ``model_id`` -> the languages it speaks.  Models not here (``eleven_v3``,
#: with 70+ languages, and any newer one) are not checked.
MODEL_LANGUAGES: Mapping[str, frozenset[str]] = {
    "eleven_flash_v2_5": V2_5_LANGUAGES,
    "eleven_turbo_v2_5": V2_5_LANGUAGES,
    "eleven_multilingual_v2": MULTILINGUAL_V2_LANGUAGES,
    "eleven_flash_v2": frozenset({"en"}),
    "eleven_turbo_v2": frozenset({"en"}),
    "eleven_monolingual_v1": frozenset({"en"}),
}


def model_languages(model_id: str) -> Optional[frozenset[str]]:
    """The languages ``model_id`` speaks, or ``None`` for a model this version does not know."""
    return MODEL_LANGUAGES.get(model_id)


#: Environment variables read by :meth:`ElevenLabsSettings.from_env`.
ENV_API_KEY = "ELEVENLABS_API_KEY"
ENV_URL = "XLBRIDGE_ELEVENLABS_URL"

_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _base_url(value: str) -> str:
    parts = urlsplit(str(value).strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise setting_error(f"{ENGINE}.base_url", f"must be http(s)://host[:port], got {value!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _voices(value: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise setting_error(f"{ENGINE}.voices", f"expected a table of language = voice id, got {value!r}")
    for lang, voice in value.items():
        if not isinstance(voice, str) or not voice.strip():
            raise setting_error(f"{ENGINE}.voices.{lang}", f"expected a voice id, got {voice!r}")
    return dict(value)


def _voice_settings(value: Optional[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    if value is not None and not isinstance(value, Mapping):
        raise setting_error(f"{ENGINE}.voice_settings", f"expected a table like {{stability = 0.5}}, got {value!r}")
    return value


def _one_of(*allowed: str) -> Callable[[object, "attrs.Attribute[Any]", object], None]:
    def check(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
        if value not in allowed:
            raise setting_error(f"{ENGINE}.{attribute.name}", f"must be one of {', '.join(allowed)}, got {value!r}")

    return check


def _kind(kind: type) -> Callable[[object, "attrs.Attribute[Any]", object], None]:
    def check(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
        problem = kind_problem(value, kind)
        if problem is not None:
            raise setting_error(f"{ENGINE}.{attribute.name}", problem)

    return check


def _positive(instance: object, attribute: "attrs.Attribute[Any]", value: float) -> None:
    _kind(float)(instance, attribute, value)
    if not value > 0:
        raise setting_error(f"{ENGINE}.{attribute.name}", f"must be > 0, got {value!r}")


def _first_byte(instance: "ElevenLabsSettings", attribute: "attrs.Attribute[Any]", value: float) -> None:
    _positive(instance, attribute, value)
    if value > instance.timeout_s:
        raise setting_error(
            f"{ENGINE}.{attribute.name}", f"must be <= timeout_s ({instance.timeout_s!r}), got {value!r}"
        )


def _default_first_byte(instance: "ElevenLabsSettings") -> float:
    # 3 s, or timeout_s if that is shorter (a config written before this
    # setting existed, with a short timeout_s, stays valid).  A timeout_s
    # that is not a number is reported by its own validator.
    timeout = instance.timeout_s
    if kind_problem(timeout, float) is None and timeout > 0:
        return min(DEFAULT_FIRST_BYTE_TIMEOUT_S, float(timeout))
    return DEFAULT_FIRST_BYTE_TIMEOUT_S


def _inactivity(instance: object, attribute: "attrs.Attribute[Any]", value: int) -> None:
    _kind(int)(instance, attribute, value)
    if not 1 <= value <= 180:
        raise setting_error(f"{ENGINE}.inactivity_timeout", f"must be 1..180 s, got {value!r}")


def _retries(instance: object, attribute: "attrs.Attribute[Any]", value: int) -> None:
    _kind(int)(instance, attribute, value)
    if not 0 <= value <= 3:
        raise setting_error(f"{ENGINE}.retries", f"must be 0..3, got {value!r}")


def _not_negative(instance: object, attribute: "attrs.Attribute[Any]", value: float) -> None:
    _kind(float)(instance, attribute, value)
    if value < 0:
        raise setting_error(f"{ENGINE}.{attribute.name}", f"must be >= 0, got {value!r}")


#: Settings whose kind has no other check.
_KINDS: Mapping[str, type] = {"api_key": str, "model_id": str, "default_voice": str, "ws_standby": bool}


@attrs.frozen
class ElevenLabsSettings:
    """
    How to reach ElevenLabs and what to ask it for.

    :ivar api_key: sent as the ``xi-api-key`` header; shown redacted.
    :ivar base_url: REST base (``http://`` allowed, for the fake server);
        ``ws://``/``wss://`` are accepted and mean the same host.
    :ivar model_id: ``eleven_flash_v2_5`` (lowest latency) by default.
    :ivar voices: language (ISO 639-1, ``"es"``) -> voice id.
    :ivar default_voice: voice id for a language missing from ``voices``.
    :ivar transport: ``"http"`` or ``"websocket"``.
    :ivar output_format: always ``pcm_16000`` (S16LE mono 16 kHz).
    :ivar voice_settings: optional ``voice_settings`` object, sent as is.
    :ivar timeout_s: seconds without progress (connect, handshake, audio)
        after which an attempt is abandoned as :class:`EngineUnavailable`.
    :ivar first_byte_timeout_s: seconds from the start of an attempt
        (including any wait for a free connection) to its first audio byte;
        past it the attempt is abandoned like a stall and its connection
        aborted.  Default 3 s (or ``timeout_s`` if shorter); must be
        ``<= timeout_s``.
    :ivar inactivity_timeout: WebSocket ``inactivity_timeout``, seconds
        (1..180); a spare socket sends ``" "`` every half of it.
    :ivar retries: extra attempts after an :class:`EngineUnavailable` that
        happened before any audio was delivered.
    :ivar retry_delay_s: pause before such a retry, seconds.
    :ivar max_connections: requests (HTTP) or speaking sockets (WebSocket)
        in flight at once; more wait for a free one.  Also the HTTP pool's
        bound on idle persistent connections.  Default 32: about 25 are in
        flight at 50 translated calls with callers speaking every 6 s; set
        it to your ElevenLabs plan's concurrency limit (past it ElevenLabs
        answers 429).
    :ivar ws_standby: keep one initialised spare WebSocket per (voice,
        language) so an utterance does not wait for a handshake.
    """

    api_key: str = attrs.field(default="", repr=redact)
    base_url: str = attrs.field(default=DEFAULT_BASE_URL, converter=_base_url)
    model_id: str = "eleven_flash_v2_5"
    voices: Mapping[str, str] = attrs.field(
        factory=lambda: dict(DEFAULT_VOICES), converter=_voices, hash=False
    )
    default_voice: str = DEFAULT_VOICE
    transport: str = attrs.field(
        default=DEFAULT_TRANSPORT, validator=_one_of("http", "websocket")
    )
    output_format: str = attrs.field(default=OUTPUT_FORMAT, validator=_one_of(OUTPUT_FORMAT))
    voice_settings: Optional[Mapping[str, Any]] = attrs.field(default=None, hash=False, converter=_voice_settings)
    timeout_s: float = attrs.field(default=10.0, validator=_positive)
    first_byte_timeout_s: float = attrs.field(
        default=attrs.Factory(_default_first_byte, takes_self=True), validator=_first_byte
    )
    inactivity_timeout: int = attrs.field(default=20, validator=_inactivity)
    retries: int = attrs.field(default=1, validator=_retries)
    retry_delay_s: float = attrs.field(default=0.05, validator=_not_negative)
    max_connections: int = attrs.field(default=32, validator=[_kind(int), _positive])
    ws_standby: bool = True

    def __attrs_post_init__(self) -> None:
        check_kinds(ENGINE, self, _KINDS)
        if not self.model_id:
            raise setting_error(f"{ENGINE}.model_id", "must not be empty")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> "ElevenLabsSettings":
        """
        Settings from the environment: ``ELEVENLABS_API_KEY`` and
        ``XLBRIDGE_ELEVENLABS_URL``; keyword ``overrides`` win over both.

        :raises ConfigError: for an unknown key or a bad value, naming
            ``elevenlabs.<key>`` (or the environment variable it came from).
        """
        check_keys(ENGINE, overrides, [f.name for f in attrs.fields(cls)])
        environment: dict[str, tuple[str, Any]] = {}
        if environ.get(ENV_API_KEY):
            environment["api_key"] = (ENV_API_KEY, environ[ENV_API_KEY].strip())
        if environ.get(ENV_URL):
            environment["base_url"] = (ENV_URL, environ[ENV_URL])
        return build_with_environment(ENGINE, lambda values: cls(**values), environment, overrides)

    @property
    def ws_base_url(self) -> str:
        """The WebSocket base: ``wss://`` for ``https://``, ``ws://`` for ``http://``."""
        scheme, rest = self.base_url.split(":", 1)
        return ("wss" if scheme == "https" else "ws") + ":" + rest

    def voice_for(self, language: str) -> str:
        """
        The voice id for ``language`` (``"es"`` or ``"es-MX"``), else
        :attr:`default_voice`.
        """
        lang = language.strip()
        return self.voices.get(lang) or self.voices.get(language_code(lang)) or self.default_voice

    def language_code_for(self, language: str) -> Optional[str]:
        """
        The ``language_code`` to send, or ``None`` for models that do not
        take one (only Flash/Turbo v2.5 do).
        """
        if self.model_id not in LANGUAGE_CODE_MODELS:
            return None
        return language_code(language) or None

