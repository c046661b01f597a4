"""
Choosing engines from configuration: which stage uses which engine.

- ``relay``: no engines; each caller hears the other's own voice.
- ``cloud``: Deepgram, DeepL and ElevenLabs; refuses to start, naming the
  environment variable, when a key is missing.
- ``local``: pocketsphinx (English built in; other languages from
  user-supplied models), Apertium and espeak-ng, all on this machine's CPU.
- ``auto`` (the default): per stage, the cloud engine when its key is set,
  else the local engine.

A language without a local ASR model is not an error: that leg's speech
falls back (by default the partner hears the original voice) and a start-up
warning names the setting to add.

Keys come from the environment (DEEPGRAM_API_KEY, DEEPL_AUTH_KEY or
DEEPL_API_KEY, ELEVENLABS_API_KEY) or the TOML file's engine sections
(``api_key`` / ``auth_key``); endpoints from XLBRIDGE_DEEPGRAM_URL,
XLBRIDGE_DEEPL_URL, XLBRIDGE_ELEVENLABS_URL or ``base_url`` / ``server_url``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional

import attrs
from twisted.application.service import IService, Service
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger

from xlbridge.errors import ConfigError
from xlbridge.pipeline.settings import Engines

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
    An engine's lifetime as a service: ``warm_up()`` (if it has one) when the
    bridge starts, so the first caller does not pay for loading models, and
    ``close()`` when it stops.
    """

    log = Logger()

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def startService(self) -> None:
        super().startService()
        warm_up = getattr(self.engine, "warm_up", None)
        if warm_up is not None:
            d = maybeDeferred(warm_up)
            d.addErrback(lambda f: self.log.warn("{engine}: warm-up failed: {error}",
                                                 engine=getattr(self.engine, "name", "?"), error=f.getErrorMessage()))

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


def _cloud_stage(stage: str, reactor: Any, environ: Mapping[str, str], options: Mapping[str, Mapping[str, Any]], pool: Any) -> Any:
    if stage == "asr":
        from xlbridge.engines.deepgram.asr import DeepgramSettings, deepgram_asr_factory

        return deepgram_asr_factory(reactor, _settings(DeepgramSettings, "deepgram", environ, options))
    if stage == "mt":
        from xlbridge.engines.deepl.mt import DeepLMT, DeepLSettings

        return DeepLMT(reactor, pool, _settings(DeepLSettings, "deepl", environ, options))
    from xlbridge.engines.elevenlabs.tts import ElevenLabsSettings, ElevenLabsTTS

    return ElevenLabsTTS(reactor, _settings(ElevenLabsSettings, "elevenlabs", environ, options))


def _local_settings(cls: Any, section: str, options: Mapping[str, Mapping[str, Any]]) -> Any:
    return cls.from_options(dict(options.get(section, {})))


def _local_stage(stage: str, reactor: Any, options: Mapping[str, Mapping[str, Any]], pool: Any,
                 languages: Iterable[str], warnings: list[str]) -> Any:
    if stage == "asr":
        return _local_asr(reactor, options, pool, languages, warnings)
    if stage == "mt":
        from xlbridge.engines.apertium.mt import ApertiumMT, ApertiumSettings, apertium_available

        settings = _local_settings(ApertiumSettings, "apertium", options)
        if not apertium_available(settings):
            raise ConfigError(
                "engines",
                "local MT needs Apertium: install the Debian packages apertium and apertium-eng-spa "
                "(sh scripts/setup.sh does), or set DEEPL_AUTH_KEY",
            )
        return ApertiumMT(reactor, settings)
    from xlbridge.engines.espeak.tts import ESpeakSettings, ESpeakTTS

    return ESpeakTTS(reactor, _local_settings(ESpeakSettings, "espeak", options))


def _local_asr(reactor: Any, options: Mapping[str, Mapping[str, Any]], pool: Any, languages: Iterable[str],
               warnings: list[str]) -> Any:
    """
    The local ASR factory: resolve the Whisper model once (never
    downloading), then warn about every caller language that gets less
    than asked for, naming the setting and what that leg falls back to.
    """
    import attrs

    from xlbridge.engines.local_asr.factory import LocalASRSettings, describe_fallback, local_asr_factory, model_problems
    from xlbridge.engines.whisper.model import resolve

    settings = _local_settings(LocalASRSettings, "local_asr", options)
    langs = sorted({lang.lower() for lang in languages})
    if settings.engine != "pocketsphinx":
        found = resolve(settings.whisper.model)
        if found.path is not None:
            settings = attrs.evolve(settings, whisper_path=found.path)
        else:
            fallback = {lang: settings.engine_for(lang) for lang in langs}
            warnings.append(f"local ASR: {found.problem}; {describe_fallback(fallback)}")
    for lang, problem in sorted(model_problems(settings).items()):
        if lang in {x.split("-")[0] for x in langs}:
            warnings.append(f"local ASR: [local_asr.models.{lang}] cannot load ({problem}); "
                            f"{describe_fallback({lang: 'none'})}")
    for lang in langs:
        if settings.model_for(lang) is None and not any(w.startswith("local ASR:") for w in warnings):
            warnings.append(
                f"no local ASR model for {lang!r}: callers speaking it are not recognised, and their "
                f"partners hear the original voice; install the Whisper model (xlbridge-models install) "
                f"or add [local_asr.models.{lang.split('-')[0]}] (see README, Local engines), or set DEEPGRAM_API_KEY"
            )
    return local_asr_factory(reactor, pool, settings, languages=langs)


ENGINE_NAMES = {
    ("asr", "cloud"): "deepgram", ("mt", "cloud"): "deepl", ("tts", "cloud"): "elevenlabs",
    ("asr", "local"): "pocketsphinx", ("mt", "local"): "apertium", ("tts", "local"): "espeak-ng",
}


def build_engines(
    kinds: Mapping[str, str], reactor: Any, environ: Mapping[str, str],
    options: Mapping[str, Mapping[str, Any]], languages: Iterable[str] = (),
) -> EngineChoice:
    """
    Build one engine per stage; ``kinds`` maps each stage (``asr``, ``mt``,
    ``tts``) to ``cloud`` or ``local``.
    """
    from xlbridge.engines.threads import ThreadPoolService

    warnings: list[str] = []
    services: list[IService] = []
    pool = ThreadPoolService(reactor, name="xlbridge-engines", max_threads=4, max_queued=256)
    services.append(pool)
    built: dict[str, Any] = {}
    for stage in ("asr", "mt", "tts"):
        if kinds[stage] == "cloud":
            built[stage] = _cloud_stage(stage, reactor, environ, options, pool)
        else:
            built[stage] = _local_stage(stage, reactor, options, pool, languages, warnings)
        services.append(_Closer(built[stage]))
    names = {stage: ENGINE_NAMES[(stage, kinds[stage])] for stage in kinds}
    whisper_spec = getattr(built["asr"], "whisper_spec", None)
    if kinds["asr"] == "local" and whisper_spec is not None and whisper_spec() is not None:
        names["asr"] = "whisper"
    return EngineChoice(Engines(built["asr"], built["mt"], built["tts"], names), tuple(services), tuple(warnings))


def choose_engines(
    mode: str, reactor: Any, environ: Mapping[str, str], options: Mapping[str, Mapping[str, Any]],
    languages: Iterable[str] = (),
) -> EngineChoice:
    """
    Resolve ``--engines`` into engines.  Raises :class:`ConfigError` for
    ``cloud`` with a missing key, and when a needed local engine is not
    installed.

    :param languages: the languages of the configured extensions (for
        start-up warnings about missing local ASR models).
    """
    if mode == "relay":
        return EngineChoice(None)
    missing = missing_keys(environ, options)
    if mode == "cloud" and missing:
        raise ConfigError(
            "engines",
            f"cloud engines need API keys; set {', '.join(missing)} in the environment "
            "(or api_key/auth_key in the TOML file's engine sections)",
        )
    if mode == "cloud":
        kinds = {stage: "cloud" for stage in KEY_VARIABLES}
    elif mode == "local":
        kinds = {stage: "local" for stage in KEY_VARIABLES}
    else:
        kinds = {stage: "cloud" if _has_key(stage, environ, options) else "local" for stage in KEY_VARIABLES}
    return build_engines(kinds, reactor, environ, options, languages)
