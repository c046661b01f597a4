"""
Choosing engines from configuration: which stage uses which engine.

- ``relay``: no engines; each caller hears the other's own voice.
- ``cloud``: Deepgram, DeepL and ElevenLabs; refuses to start, naming the
  environment variable, when a key is missing.
- ``local``: pocketsphinx (English built in; other languages from
  user-supplied models), Apertium and espeak-ng, all on this machine's CPU.
- ``auto`` (the default): per stage, the cloud engine when its key is set,
  else the local engine.

Before any engine is built, every engine section of the TOML file is
checked, used or not, and so is every caller language: it must be a
language code, and each direction a call needs must be one the chosen
engines can recognise, translate and speak
(:mod:`xlbridge.engines.coverage`); an impossible direction is a
:class:`ConfigError` naming ``--langs``, the languages, the engine and what
it supports.

A language without a local ASR model is not an error: that leg's speech
falls back (by default the partner hears the original voice) and a start-up
warning names the setting to add, or, when ``[local_asr.models.<lang>]`` is
there but cannot load, that section and why.

Keys come from the environment (DEEPGRAM_API_KEY, DEEPL_AUTH_KEY or
DEEPL_API_KEY, ELEVENLABS_API_KEY) or the TOML file's engine sections
(``api_key`` / ``auth_key``); endpoints from XLBRIDGE_DEEPGRAM_URL,
XLBRIDGE_DEEPL_URL, XLBRIDGE_ELEVENLABS_URL or ``base_url`` / ``server_url``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Sequence, cast

import attrs
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from xlbridge.engines.base import MT, TTS, ASRFactory, Engines, IPoolReactor, IProcessReactor
from xlbridge.engines.threads import ThreadPoolService
from xlbridge.errors import ConfigError

if TYPE_CHECKING:
    from xlbridge.engines.coverage import EngineSettings
    from xlbridge.engines.deepgram.protocol import IDeepgramReactor
    from xlbridge.engines.elevenlabs.wire import IElevenLabsReactor
    from xlbridge.engines.local_asr.factory import LocalASRFactory
    from xlbridge.engines.local_asr.settings import LocalASRSettings

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


def _cloud_asr(reactor: "IDeepgramReactor", settings: "EngineSettings") -> ASRFactory:
    from xlbridge.engines.deepgram.factory import deepgram_asr_factory

    return deepgram_asr_factory(reactor, settings.deepgram)


def _cloud_mt(reactor: IReactorTime, settings: "EngineSettings", pool: ThreadPoolService) -> MT:
    from xlbridge.engines.deepl.mt import DeepLMT

    if settings.deepl is None:
        raise ConfigError("engines", "DeepL needs a key: set DEEPL_AUTH_KEY (or auth_key in [deepl])")
    return DeepLMT(reactor, pool, settings.deepl)


def _cloud_tts(reactor: "IElevenLabsReactor", settings: "EngineSettings") -> TTS:
    from xlbridge.engines.elevenlabs.tts import ElevenLabsTTS

    return ElevenLabsTTS(reactor, settings.elevenlabs)


def _check_apertium(settings: "EngineSettings") -> None:
    """
    :raises ConfigError: when Apertium or a mode of ``[apertium] pairs`` is
        not installed.
    """
    from xlbridge.engines.apertium.settings import install_problem

    problem = install_problem(settings.apertium, sorted(set(settings.apertium.pairs.values())))
    if problem is not None:
        raise ConfigError("engines", f"local MT: {problem}; or set DEEPL_AUTH_KEY to translate with DeepL")


def _local_mt(reactor: IProcessReactor, settings: "EngineSettings") -> MT:
    from xlbridge.engines.apertium.mt import ApertiumMT

    return ApertiumMT(reactor, settings.apertium)


def _local_tts(reactor: IPoolReactor, settings: "EngineSettings") -> TTS:
    from xlbridge.engines.espeak.tts import ESpeakTTS

    return ESpeakTTS(reactor, settings.espeak)


def _local_asr(reactor: IProcessReactor, settings: "LocalASRSettings", pool: ThreadPoolService,
               languages: Iterable[str], warnings: list[str]) -> "LocalASRFactory":
    """
    The local ASR factory: resolve the Whisper model once (never
    downloading), then warn about every caller language that gets less
    than asked for, naming the setting and what that leg falls back to:
    the ``[local_asr.models.<lang>]`` table and why it cannot load when
    there is one, else the table to add.
    """
    from xlbridge.engines.local_asr.factory import describe_fallback, local_asr_factory
    from xlbridge.engines.local_asr.settings import model_problems
    from xlbridge.engines.whisper.model import resolve

    langs = sorted({lang.lower() for lang in languages})
    problems = model_problems(settings)

    def engine_for(lang: str) -> str:
        section = settings.section_for(lang)
        return "none" if section is not None and section in problems else settings.engine_for(lang)

    whisper_warned = False
    if settings.engine != "pocketsphinx":
        found = resolve(settings.whisper.model)
        if found.path is not None:
            settings = attrs.evolve(settings, whisper_path=found.path)
        else:
            fallback = describe_fallback({lang: engine_for(lang) for lang in langs})
            warnings.append(f"local ASR: {found.problem}; {fallback}")
            whisper_warned = True
    for lang in langs:
        section = settings.section_for(lang)
        if section is not None and section in problems:
            warnings.append(f"local ASR: [local_asr.models.{section}] cannot load ({problems[section]}); "
                            f"{describe_fallback({lang: 'none'})}")
        elif settings.model_for(lang) is None and not whisper_warned:
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


def _all_pairs(languages: Iterable[str]) -> list[tuple[str, str]]:
    """Every two of ``languages``: the callers may meet in any combination."""
    return list(itertools.combinations(sorted(set(languages)), 2))


@attrs.frozen
class _Plan:
    """What the checks decided: the settings, each stage's kind, the warnings so far."""

    settings: "EngineSettings"
    kinds: Mapping[str, str]
    warnings: tuple[str, ...]


def _checked_kinds(kinds: Mapping[str, str], settings: "EngineSettings", languages: Iterable[str],
                   pairs: Optional[Sequence[tuple[str, str]]]) -> _Plan:
    """The checks of an engine for each stage: Apertium installed, every direction served."""
    from xlbridge.engines.coverage import check_directions

    if kinds["mt"] == "local":
        _check_apertium(settings)
    warnings = check_directions(kinds, settings, _all_pairs(languages) if pairs is None else pairs)
    return _Plan(settings, kinds, tuple(warnings))


def _plan(mode: str, environ: Mapping[str, str], options: Options, languages: Iterable[str],
          pairs: Optional[Iterable[tuple[str, str]]]) -> Optional[_Plan]:
    """Every start-up check of :func:`choose_engines`; ``None`` for ``relay``."""
    from xlbridge.engines.coverage import check_codes, read_engine_settings

    settings = read_engine_settings(environ, options)
    langs = set(languages)
    pair_list = None if pairs is None else [(a, b) for a, b in pairs]
    check_codes(langs | {lang for p in pair_list or () for lang in p})
    if mode == "relay":
        return None
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
    return _checked_kinds(kinds, settings, langs, pair_list)


def _build(plan: _Plan, reactor: "IEngineReactor", languages: Iterable[str]) -> EngineChoice:
    """Build one engine per stage, in the order ASR, MT, TTS, as ``plan`` says."""
    settings, kinds = plan.settings, plan.kinds
    langs = sorted(set(languages))
    warnings: list[str] = []
    services: list[IService] = []
    pool = ThreadPoolService(reactor, name="xlbridge-engines", max_threads=4, max_queued=256)
    services.append(pool)
    names = {stage: ENGINE_NAMES[(stage, kinds[stage])] for stage in kinds}
    asr: ASRFactory
    if kinds["asr"] == "cloud":
        asr = _cloud_asr(reactor, settings)
    else:
        local = _local_asr(reactor, settings.local_asr, pool, langs, warnings)
        if local.whisper_spec() is not None:
            names["asr"] = "whisper"
        asr = local
    services.append(_Closer(asr))
    mt = _cloud_mt(reactor, settings, pool) if kinds["mt"] == "cloud" else _local_mt(reactor, settings)
    services.append(_Closer(mt))
    tts = _cloud_tts(reactor, settings) if kinds["tts"] == "cloud" else _local_tts(reactor, settings)
    services.append(_Closer(tts))
    return EngineChoice(Engines(asr, mt, tts, names), tuple(services), tuple(warnings) + plan.warnings)


def build_engines(
    kinds: Mapping[str, str], reactor: "IEngineReactor", environ: Mapping[str, str],
    options: Options, languages: Iterable[str] = (), pairs: Optional[Sequence[tuple[str, str]]] = None,
) -> EngineChoice:
    """
    Build one engine per stage, in the order ASR, MT, TTS; ``kinds`` maps
    each stage (``asr``, ``mt``, ``tts``) to ``cloud`` or ``local``.  First
    checks the engine sections and that the engines can serve every
    direction ``pairs`` need (see :func:`choose_engines`).
    """
    from xlbridge.engines.coverage import read_engine_settings

    languages = list(languages)
    plan = _checked_kinds(kinds, read_engine_settings(environ, options), languages, pairs)
    return _build(plan, reactor, languages)


def check_engines(
    mode: str, environ: Mapping[str, str], options: Options,
    languages: Iterable[str] = (), pairs: Optional[Iterable[tuple[str, str]]] = None,
) -> tuple[str, ...]:
    """
    Every check :func:`choose_engines` makes before it builds anything
    (engine sections, caller languages, keys, installed engines, the
    directions the pairs need), building nothing: cheap enough for option
    parsing, where a :class:`ConfigError` can become twistd's usage error.

    :return: the warnings about directions that work degraded (the local
        ASR warnings come with :func:`choose_engines`).
    :raises ConfigError: as :func:`choose_engines`.
    """
    plan = _plan(mode, environ, options, languages, pairs)
    return () if plan is None else plan.warnings


def choose_engines(
    mode: str, reactor: object, environ: Mapping[str, str], options: Options,
    languages: Iterable[str] = (), pairs: Optional[Iterable[tuple[str, str]]] = None,
) -> EngineChoice:
    """
    Resolve ``--engines`` into engines.  First reads and checks every
    engine section of ``options``, used or not, and every caller language
    (:func:`check_engines`).

    Raises :class:`ConfigError` for a bad engine setting (naming
    ``section.key``), a caller language that is not a language code or
    that the chosen engines cannot serve in some direction (naming
    ``--langs``), ``cloud`` with a missing key, and when a needed local
    engine is not installed.

    :param reactor: the running reactor, which must provide
        ``IEngineReactor`` (processes, time, results from threads, TCP, TLS,
        a name resolver) as the default reactor does.  Typed ``object``:
        Twisted types the global reactor with only some of these
        interfaces, so this is where it is taken to have them all.
    :param languages: the languages of the configured extensions.
    :param pairs: the caller languages that meet, one ``(a, b)`` per pair
        of extensions (both directions are checked); ``None``: any two of
        ``languages``.
    """
    languages = list(languages)
    plan = _plan(mode, environ, options, languages, pairs)
    if plan is None:
        return EngineChoice(None)
    return _build(plan, cast("IEngineReactor", reactor), languages)


def language_table(environ: Mapping[str, str], options: Options) -> str:
    """
    The languages and pairs each engine supports with this configuration
    (``twistd xlbridge --list-languages``), as plain text.  Looks for the
    Whisper model without assembling it.

    :raises ConfigError: a bad engine setting, as :func:`choose_engines`.
    """
    from xlbridge.engines.coverage import language_table as render, read_engine_settings
    from xlbridge.engines.whisper.model import resolve

    settings = read_engine_settings(environ, options)
    found = (resolve(settings.local_asr.whisper.model, assemble_missing=False)
             if settings.local_asr.engine != "pocketsphinx" else None)
    return render(settings, found.path if found else None, found.problem if found else None)
