"""
Choosing engines from configuration: which stage uses which engine.

- ``relay``: no engines; each caller hears the other's own voice.
- ``cloud``: Deepgram, DeepL and ElevenLabs; refuses to start, naming the
  environment variable, when a key is missing.
- ``auto`` (the default): per stage, the cloud engine when its key is set,
  else the local engine.  Local engines are not in this version yet, so a
  stage without a key leaves the bridge relaying, with a warning that names
  the missing keys.
- ``local``: not available in this version (a clear usage error).

Keys come from the environment (DEEPGRAM_API_KEY, DEEPL_AUTH_KEY or
DEEPL_API_KEY, ELEVENLABS_API_KEY) or the TOML file's engine sections
(``api_key`` / ``auth_key``); endpoints from XLBRIDGE_DEEPGRAM_URL,
XLBRIDGE_DEEPL_URL, XLBRIDGE_ELEVENLABS_URL or ``base_url`` / ``server_url``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import attrs
from twisted.application.service import IService, Service

from xlbridge.errors import ConfigError
from xlbridge.pipeline.translate import Engines

#: stage -> (engine, the environment variables that may hold its key)
KEY_VARIABLES = {
    "asr": ("deepgram", ("DEEPGRAM_API_KEY",)),
    "mt": ("deepl", ("DEEPL_AUTH_KEY", "DEEPL_API_KEY")),
    "tts": ("elevenlabs", ("ELEVENLABS_API_KEY",)),
}

_KEY_FIELDS = ("api_key", "auth_key")


@attrs.frozen
class EngineChoice:
    """
    The outcome of engine selection.

    :ivar engines: what the translate pipeline uses, or ``None`` to relay.
    :ivar services: services to run for the engines' lifetime (thread pool,
        connection pools).
    :ivar warnings: what a user should know (e.g. why ``auto`` relays).
    """

    engines: Optional[Engines]
    services: tuple[IService, ...] = ()
    warnings: tuple[str, ...] = ()


def _has_key(stage: str, environ: Mapping[str, str], options: Mapping[str, Mapping[str, Any]]) -> bool:
    engine, variables = KEY_VARIABLES[stage]
    table = options.get(engine, {})
    return any(environ.get(v) for v in variables) or any(table.get(f) for f in _KEY_FIELDS)


def missing_keys(environ: Mapping[str, str], options: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """
    The environment variables to set for the stages that have no key.
    """
    return [KEY_VARIABLES[s][1][0] for s in KEY_VARIABLES if not _has_key(s, environ, options)]


class _Closer(Service):
    """
    Calls ``close()`` on an engine when the bridge stops.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def stopService(self) -> Any:
        super().stopService()
        close = getattr(self.engine, "close", None)
        return close() if close is not None else None


def _settings(cls: Any, engine: str, environ: Mapping[str, str], options: Mapping[str, Mapping[str, Any]]) -> Any:
    table = dict(options.get(engine, {}))
    try:
        return cls.from_env(environ, **table)
    except TypeError as e:
        raise ConfigError("config", f"[{engine}]: {e}") from None
    except ValueError as e:
        raise ConfigError("config", f"[{engine}]: {e}") from None


def build_cloud_engines(reactor: Any, environ: Mapping[str, str], options: Mapping[str, Mapping[str, Any]]) -> EngineChoice:
    """
    Deepgram + DeepL + ElevenLabs, all keys present.
    """
    from xlbridge.engines.deepgram import DeepgramSettings, deepgram_asr_factory
    from xlbridge.engines.deepl import DeepLMT, DeepLSettings
    from xlbridge.engines.elevenlabs import ElevenLabsSettings, ElevenLabsTTS
    from xlbridge.engines.threads import ThreadPoolService

    pool = ThreadPoolService(reactor, name="xlbridge-mt", max_threads=4, max_queued=64)
    asr = deepgram_asr_factory(reactor, _settings(DeepgramSettings, "deepgram", environ, options))
    mt = DeepLMT(reactor, pool, _settings(DeepLSettings, "deepl", environ, options))
    tts = ElevenLabsTTS(reactor, _settings(ElevenLabsSettings, "elevenlabs", environ, options))
    engines = Engines(asr, mt, tts, {"asr": "deepgram", "mt": "deepl", "tts": "elevenlabs"})
    return EngineChoice(engines, (pool, _Closer(tts)))


def choose_engines(
    mode: str, reactor: Any, environ: Mapping[str, str], options: Mapping[str, Mapping[str, Any]]
) -> EngineChoice:
    """
    Resolve ``--engines`` into engines.  Raises :class:`ConfigError` for
    ``cloud`` with a missing key and for ``local``.
    """
    if mode == "relay":
        return EngineChoice(None)
    if mode == "local":
        raise ConfigError(
            "engines",
            "local engines are not available in this version yet; use --engines cloud "
            "(with keys) or --engines relay",
        )
    missing = missing_keys(environ, options)
    if mode == "cloud":
        if missing:
            raise ConfigError(
                "engines",
                f"cloud engines need API keys; set {', '.join(missing)} in the environment "
                "(or api_key/auth_key in the TOML file's engine sections)",
            )
        return build_cloud_engines(reactor, environ, options)
    # auto
    if not missing:
        return build_cloud_engines(reactor, environ, options)
    return EngineChoice(
        None,
        warnings=(
            f"--engines auto: no key for {', '.join(missing)} and no local engines in this version; "
            "relaying each caller's voice untranslated",
        ),
    )
