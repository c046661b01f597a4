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

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Protocol, TypeVar, cast

import attrs
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xlbridge.engines.base import MT, TTS, ASRFactory, Engines, IPoolReactor, IProcessReactor
from xlbridge.engines.threads import ThreadPoolService
from xlbridge.errors import ConfigError

if TYPE_CHECKING:
    from xlbridge.engines.deepgram.connection import IDeepgramReactor
    from xlbridge.engines.elevenlabs.wire import IElevenLabsReactor
    from xlbridge.engines.local_asr.factory import LocalASRFactory

    class IEngineReactor(IProcessReactor, IPoolReactor, IDeepgramReactor, IElevenLabsReactor):
        """
        Everything the engines need of the reactor between them: processes,
        time and results from pool threads for the local engines, TCP, TLS
        and a name resolver for the cloud clients.  For type hints only (as
        Twisted's own ``_IReactorCommon``); the default reactor provides it.
        """


#: stage -> (engine, the environment variables that may hold its key)
KEY_VARIABLES = {
    "asr": ("deepgram", ("DEEPGRAM_API_KEY",)),
    "mt": ("deepl", ("DEEPL_AUTH_KEY", "DEEPL_API_KEY")),
    "tts": ("elevenlabs", ("ELEVENLABS_API_KEY",)),
}

_KEY_FIELDS = ("api_key", "auth_key")

#: The TOML file's engine sections: section -> key -> value (as parsed).
Options = Mapping[str, Mapping[str, Any]]

_S = TypeVar("_S", covariant=True)


class _FromEnv(Protocol[_S]):
    """A cloud engine's settings class: built from the environment and its TOML section."""

    def from_env(self, environ: Mapping[str, str], **overrides: Any) -> _S:
        ...


class _FromOptions(Protocol[_S]):
    """A local engine's settings class: built from its TOML section."""

    def from_options(self, table: Mapping[str, Any]) -> _S:
        ...


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


def _has_key(stage: str, environ: Mapping[str, str], options: Options) -> bool:
    engine, variables = KEY_VARIABLES[stage]
    table = options.get(engine, {})
    return any(environ.get(v) for v in variables) or any(table.get(f) for f in _KEY_FIELDS)


def missing_keys(environ: Mapping[str, str], options: Options) -> list[str]:
    """
    The environment variables to set for the stages that have no key.
    """
    return [KEY_VARIABLES[s][1][0] for s in KEY_VARIABLES if not _has_key(s, environ, options)]


class _Closer(Service):
    """
    An engine's lifetime as a service: ``warm_up()`` (if it has one) when the
    bridge starts, so the first caller does not pay for loading models, and
    ``close()`` when it stops.

    :param engine: an ASR factory, MT or TTS; ``warm_up`` and ``close`` are
        optional, so they are looked up by name.
    """

    log = Logger()

    def __init__(self, engine: object) -> None:
        self.engine = engine

    def startService(self) -> None:
        super().startService()
        warm_up = getattr(self.engine, "warm_up", None)
        if warm_up is not None:
            d = maybeDeferred(warm_up)
            d.addErrback(lambda f: self.log.warn("{engine}: warm-up failed: {error}",
                                                 engine=getattr(self.engine, "name", "?"), error=f.getErrorMessage()))

    def stopService(self) -> "Optional[Deferred[Any]]":
        super().stopService()
        close = getattr(self.engine, "close", None)
        return close() if close is not None else None


def _settings(cls: _FromEnv[_S], engine: str, environ: Mapping[str, str], options: Options) -> _S:
    table = dict(options.get(engine, {}))
    try:
        return cls.from_env(environ, **table)
    except TypeError as e:
        raise ConfigError("config", f"[{engine}]: {e}") from None
    except ValueError as e:
        raise ConfigError("config", f"[{engine}]: {e}") from None


def _local_settings(cls: _FromOptions[_S], section: str, options: Options) -> _S:
    return cls.from_options(dict(options.get(section, {})))


def _cloud_asr(reactor: "IDeepgramReactor", environ: Mapping[str, str], options: Options) -> ASRFactory:
    from xlbridge.engines.deepgram.asr import deepgram_asr_factory
    from xlbridge.engines.deepgram.settings import DeepgramSettings

    return deepgram_asr_factory(reactor, _settings(DeepgramSettings, "deepgram", environ, options))


def _cloud_mt(reactor: IReactorTime, environ: Mapping[str, str], options: Options,
              pool: ThreadPoolService) -> MT:
    from xlbridge.engines.deepl.mt import DeepLMT
    from xlbridge.engines.deepl.settings import DeepLSettings

    return DeepLMT(reactor, pool, _settings(DeepLSettings, "deepl", environ, options))


def _cloud_tts(reactor: "IElevenLabsReactor", environ: Mapping[str, str], options: Options) -> TTS:
    from xlbridge.engines.elevenlabs.settings import ElevenLabsSettings
    from xlbridge.engines.elevenlabs.tts import ElevenLabsTTS

    return ElevenLabsTTS(reactor, _settings(ElevenLabsSettings, "elevenlabs", environ, options))


def _local_mt(reactor: IProcessReactor, options: Options) -> MT:
    from xlbridge.engines.apertium.mt import ApertiumMT
    from xlbridge.engines.apertium.settings import ApertiumSettings, apertium_available

    settings = _local_settings(ApertiumSettings, "apertium", options)
    if not apertium_available(settings):
        raise ConfigError(
            "engines",
            "local MT needs Apertium: install the Debian packages apertium and apertium-eng-spa "
            "(sh scripts/setup.sh does), or set DEEPL_AUTH_KEY",
        )
    return ApertiumMT(reactor, settings)


def _local_tts(reactor: IPoolReactor, options: Options) -> TTS:
    from xlbridge.engines.espeak.settings import ESpeakSettings
    from xlbridge.engines.espeak.tts import ESpeakTTS

    return ESpeakTTS(reactor, _local_settings(ESpeakSettings, "espeak", options))


def _local_asr(reactor: IProcessReactor, options: Options, pool: ThreadPoolService, languages: Iterable[str],
               warnings: list[str]) -> "LocalASRFactory":
    """
    The local ASR factory: resolve the Whisper model once (never
    downloading), then warn about every caller language that gets less
    than asked for, naming the setting and what that leg falls back to.
    """
    from xlbridge.engines.local_asr.factory import describe_fallback, local_asr_factory
    from xlbridge.engines.local_asr.settings import LocalASRSettings, model_problems
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
    kinds: Mapping[str, str], reactor: "IEngineReactor", environ: Mapping[str, str],
    options: Options, languages: Iterable[str] = (),
) -> EngineChoice:
    """
    Build one engine per stage, in the order ASR, MT, TTS; ``kinds`` maps
    each stage (``asr``, ``mt``, ``tts``) to ``cloud`` or ``local``.
    """
    warnings: list[str] = []
    services: list[IService] = []
    pool = ThreadPoolService(reactor, name="xlbridge-engines", max_threads=4, max_queued=256)
    services.append(pool)
    names = {stage: ENGINE_NAMES[(stage, kinds[stage])] for stage in kinds}
    asr: ASRFactory
    if kinds["asr"] == "cloud":
        asr = _cloud_asr(reactor, environ, options)
    else:
        local = _local_asr(reactor, options, pool, languages, warnings)
        if local.whisper_spec() is not None:
            names["asr"] = "whisper"
        asr = local
    services.append(_Closer(asr))
    mt = _cloud_mt(reactor, environ, options, pool) if kinds["mt"] == "cloud" else _local_mt(reactor, options)
    services.append(_Closer(mt))
    tts = _cloud_tts(reactor, environ, options) if kinds["tts"] == "cloud" else _local_tts(reactor, options)
    services.append(_Closer(tts))
    return EngineChoice(Engines(asr, mt, tts, names), tuple(services), tuple(warnings))


def choose_engines(
    mode: str, reactor: object, environ: Mapping[str, str], options: Options,
    languages: Iterable[str] = (),
) -> EngineChoice:
    """
    Resolve ``--engines`` into engines.  Raises :class:`ConfigError` for
    ``cloud`` with a missing key, and when a needed local engine is not
    installed.

    :param reactor: the running reactor, which must provide
        ``IEngineReactor`` (processes, time, results from threads, TCP, TLS,
        a name resolver) as the default reactor does.  Typed ``object``:
        Twisted types the global reactor with only some of these
        interfaces, so this is where it is taken to have them all.
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
    return build_engines(kinds, cast("IEngineReactor", reactor), environ, options, languages)
