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

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TRANSPORT",
    "DEFAULT_VOICE",
    "DEFAULT_VOICES",
    "ENV_API_KEY",
    "ENV_URL",
    "LANGUAGE_CODE_MODELS",
    "ElevenLabsSettings",
]

#: REST base; the WebSocket base is derived from it (http -> ws, https -> wss).
DEFAULT_BASE_URL = "https://api.elevenlabs.io"

#: Chosen by ``bench/tts_ttfa.py`` (see :mod:`xlbridge.engines.elevenlabs.tts`).
DEFAULT_TRANSPORT = "http"

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

#: Environment variables read by :meth:`ElevenLabsSettings.from_env`.
ENV_API_KEY = "ELEVENLABS_API_KEY"
ENV_URL = "XLBRIDGE_ELEVENLABS_URL"

_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def _base_url(value: str) -> str:
    parts = urlsplit(str(value).strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(
            f"ElevenLabs base URL must be http(s)://host[:port], got {value!r}"
        )
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _voices(value: Mapping[str, str]) -> dict[str, str]:
    return dict(value)


def _one_of(*allowed: str) -> Callable[[object, "attrs.Attribute[Any]", object], None]:
    def check(instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
        if value not in allowed:
            raise ValueError(f"{attribute.name} must be one of {allowed}, got {value!r}")

    return check


def _positive(instance: object, attribute: "attrs.Attribute[Any]", value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


def _inactivity(instance: object, attribute: "attrs.Attribute[Any]", value: int) -> None:
    if not 1 <= value <= 180:
        raise ValueError(f"inactivity_timeout must be 1..180 s, got {value!r}")


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
    :ivar inactivity_timeout: WebSocket ``inactivity_timeout``, seconds
        (1..180); a spare socket sends ``" "`` every half of it.
    :ivar retries: extra attempts after an :class:`EngineUnavailable` that
        happened before any audio was delivered.
    :ivar retry_delay_s: pause before such a retry, seconds.
    :ivar max_connections: HTTP pool bound: persistent connections per host.
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
    voice_settings: Optional[Mapping[str, Any]] = attrs.field(default=None, hash=False)
    timeout_s: float = attrs.field(default=10.0, validator=_positive)
    inactivity_timeout: int = attrs.field(default=20, validator=_inactivity)
    retries: int = attrs.field(default=1, validator=attrs.validators.in_(range(0, 4)))
    retry_delay_s: float = attrs.field(default=0.05, validator=attrs.validators.ge(0))
    max_connections: int = attrs.field(default=8, validator=_positive)
    ws_standby: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> "ElevenLabsSettings":
        """
        Settings from the environment: ``ELEVENLABS_API_KEY`` and
        ``XLBRIDGE_ELEVENLABS_URL``; keyword ``overrides`` win over both.

        :raises ValueError: for a bad value.
        """
        values: dict[str, Any] = {}
        if environ.get(ENV_API_KEY):
            values["api_key"] = environ[ENV_API_KEY].strip()
        if environ.get(ENV_URL):
            values["base_url"] = environ[ENV_URL]
        values.update(overrides)
        return cls(**values)

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

