"""
Settings of the local recognisers: which model per language, endpointer and
queue tunables, the backend (worker processes or threads), and the checks
behind the start-up warning about languages without a model.

The recogniser per language, in order: a model configured for that
language (``[local_asr.models.<lang>]``: pocketsphinx ``hmm``/``lm``/``dict``
or a Vosk directory); else Whisper (``engine = "whisper"``, the default
whenever a Whisper model resolved at start-up: one multilingual model for
every language); else the pocketsphinx English model bundled with its wheel.
Nothing is ever downloaded.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import attrs

from xlbridge.audio.frame import SAMPLE_RATE
from xlbridge.config_values import checked_number
from xlbridge.engines.local_asr.pool import default_workers
from xlbridge.engines.local_asr.stream_clock import FRAME_S
from xlbridge.engines.local_asr.wire import ModelSpec, StreamParams
from xlbridge.engines.options import unknown_setting
from xlbridge.engines.pocketsphinx.asr import SphinxModel, check_sphinx_model
from xlbridge.engines.vosk.asr import VoskModel, check_vosk_model
from xlbridge.engines.whisper.model import check_folder
from xlbridge.engines.whisper.settings import AUTO, LANGUAGES as WHISPER_LANGUAGES, WhisperModel, WhisperSettings
from xlbridge.errors import ConfigError

#: ``[local_asr] engine`` values; unset means Whisper when a model resolves.
ENGINES = ("whisper", "pocketsphinx")

#: Crashed decoders replaced per leg before giving up on it.
MAX_RESTARTS = 3

#: Seconds between retries when the thread pool refused a task.
POOL_RETRY_S = 0.05

#: Where decoding runs (see the module notes).
BACKENDS = ("process", "thread")

_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$")


# -- settings -----------------------------------------------------------------


def _with_english(models: Mapping[str, ModelSpec]) -> Mapping[str, ModelSpec]:
    return {"en": SphinxModel(), **dict(models)}


@attrs.frozen
class LocalASRSettings:
    """
    The ``[local_asr]`` table.

    :ivar models: language (``en``, ``es``, ``pt-br``) → model; ``en`` is the
        bundled pocketsphinx model unless overridden.
    :ivar endpoint_window_s: endpointer decision window, seconds.
    :ivar endpoint_ratio: fraction of the window that must agree.
    :ivar vad_mode: VAD aggressiveness, 0 (loose) to 3 (strict).
    :ivar interim_interval_s: least audio between interim results.
    :ivar max_utterance_s: longer speech is cut into finals.
    :ivar queue_s: audio a busy leg may queue before dropping the oldest.
    :ivar idle_decoders: idle pocketsphinx decoders kept per model (~90 MB
        each for the bundled model), per worker process.
    :ivar preload_decoders: decoders loaded per model (in each worker) by
        :meth:`~xlbridge.engines.local_asr.factory.LocalASRFactory.warm_up`
        (at most ``idle_decoders``).  Loading takes ~340 ms (holding the
        GIL: with the thread backend it stalls every call's audio), so it is
        best done before calls arrive.
    :ivar finish_timeout_s: ``finish()`` fires after this even if the last
        task never returns (a stopped pool).
    :ivar backend: ``process`` (pocketsphinx in worker processes) or
        ``thread`` (in the thread pool, holding the GIL).
    :ivar workers: worker processes (default one per CPU core minus one, at
        least one); each keeps its own ``idle_decoders`` per model.
    :ivar engine: ``whisper``, ``pocketsphinx``, or ``None``: Whisper when
        its model resolved (:attr:`whisper_path`), else pocketsphinx.
    :ivar whisper: the ``[local_asr.whisper]`` table.
    :ivar whisper_path: the Whisper model folder resolved at start-up
        (:func:`~xlbridge.engines.whisper.model.resolve`), ``None`` if none.
    """

    models: Mapping[str, ModelSpec] = attrs.field(factory=dict, converter=_with_english)
    endpoint_window_s: float = 0.3
    endpoint_ratio: float = 0.9
    vad_mode: int = 0
    interim_interval_s: float = 0.2
    max_utterance_s: float = 20.0
    queue_s: float = 3.0
    idle_decoders: int = 4
    preload_decoders: int = 2
    finish_timeout_s: float = 5.0
    backend: str = attrs.field(default="process", validator=attrs.validators.in_(BACKENDS))
    workers: Optional[int] = None
    engine: Optional[str] = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.in_(ENGINES)))
    whisper: WhisperSettings = attrs.field(factory=WhisperSettings)
    whisper_path: Optional[str] = None

    #: key -> (type, least, most)
    _NUMBERS = {
        "endpoint_window_s": (float, 0.06, 2.0),
        "endpoint_ratio": (float, 0.1, 1.0),
        "vad_mode": (int, 0, 3),
        "interim_interval_s": (float, 0.02, 5.0),
        "max_utterance_s": (float, 1.0, 120.0),
        "queue_s": (float, 0.1, 60.0),
        "idle_decoders": (int, 0, 64),
        "preload_decoders": (int, 0, 64),
        "finish_timeout_s": (float, 0.1, 120.0),
        "workers": (int, 1, 64),
    }

    def worker_count(self) -> int:
        """Worker processes for the ``process`` backend."""
        return self.workers or default_workers()

    def stream_params(self) -> StreamParams:
        """The per-stream recogniser settings."""
        return StreamParams(self.endpoint_window_s, self.endpoint_ratio, self.vad_mode, self.interim_interval_s,
                            self.max_utterance_s)

    @property
    def uses_whisper(self) -> bool:
        """Whether legs without a language model of their own use Whisper."""
        return self.engine != "pocketsphinx" and self.whisper_path is not None

    def model_for(self, language: str) -> Optional[ModelSpec]:
        """
        The model for ``language``: one configured for it (exact match, else
        its primary subtag), else Whisper if :attr:`uses_whisper` and Whisper
        knows the language (or it is ``auto``), else the bundled English.
        """
        lang = language.strip().lower().replace("_", "-")
        base = lang.split("-")[0]
        own = self.models.get(lang) or self.models.get(base)
        if own is not None and not (isinstance(own, SphinxModel) and own.bundled):
            return own
        if self.uses_whisper and self.whisper_path is not None and (lang == AUTO or whisper_knows(base)):
            return self.whisper.spec(self.whisper_path, AUTO if lang == AUTO else base)
        return own

    def section_for(self, language: str) -> Optional[str]:
        """
        The key of the ``[local_asr.models.<key>]`` table that serves
        ``language`` (``es`` for ``es-mx`` too), or ``None`` when the
        language has no table of its own.
        """
        lang = language.strip().lower().replace("_", "-")
        for key in (lang, lang.split("-")[0]):
            spec = self.models.get(key)
            if spec is not None and not (isinstance(spec, SphinxModel) and spec.bundled):
                return key
        return None

    def engine_for(self, language: str) -> str:
        """The recogniser ``language`` gets, for the start-up log and the monitor (``none`` if none)."""
        spec = self.model_for(language)
        return "none" if spec is None else spec.engine

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "LocalASRSettings":
        """
        Validate the TOML ``[local_asr]`` table.

        :raises ConfigError: naming the bad key, e.g. ``local_asr.models.es.path``.
        """
        if not isinstance(table, Mapping):
            raise ConfigError("config", "[local_asr] must be a table")
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key == "models":
                values["models"] = _parse_models(value)
            elif key == "engine":
                if value not in ENGINES:
                    raise ConfigError("config", f"local_asr.engine: {value!r} is not one of {', '.join(ENGINES)}")
                values["engine"] = value
            elif key == "whisper":
                values["whisper"] = WhisperSettings.from_options(value)
            elif key == "backend":
                if value not in BACKENDS:
                    raise ConfigError("config", f"local_asr.backend: {value!r} is not one of {', '.join(BACKENDS)}")
                values["backend"] = value
            elif key in cls._NUMBERS:
                values[key] = checked_number(f"local_asr.{key}", value, *cls._NUMBERS[key])
            else:
                raise unknown_setting("local_asr", key, ["engine", "models", "whisper", "backend", *cls._NUMBERS])
        settings = cls(**values)
        _check_endpointer(settings.endpoint_window_s, settings.endpoint_ratio)
        return settings


def _check_endpointer(window_s: float, ratio: float) -> None:
    """
    Ask pocketsphinx whether it accepts ``window_s``/``ratio`` (it needs a
    frame of the window left for the start and the end decision), so a bad
    pair fails at start-up, not in every call.
    """
    try:
        from pocketsphinx import Endpointer
    except ImportError:
        return
    try:
        Endpointer(window=window_s, ratio=ratio, sample_rate=SAMPLE_RATE, frame_length=FRAME_S)
    except ValueError:
        raise ConfigError("config", f"local_asr.endpoint_ratio: pocketsphinx cannot endpoint with ratio {ratio} "
                                    f"of a {window_s} s window (too close to 0 or 1 for its frames)") from None


def _parse_models(models: Any) -> dict[str, ModelSpec]:
    if not isinstance(models, Mapping):
        raise ConfigError("config", "local_asr.models: expected a table of languages")
    out: dict[str, ModelSpec] = {}
    for lang, spec in models.items():
        key = f"local_asr.models.{lang}"
        if not isinstance(lang, str) or not _LANGUAGE.match(lang.lower()):
            raise ConfigError("config", f"{key}: not a language code like 'es' or 'pt-br'")
        if not isinstance(spec, Mapping):
            raise ConfigError("config", f"{key}: expected a table with engine and paths")
        engine = spec.get("engine", "vosk" if "path" in spec else "pocketsphinx")
        if engine == "vosk":
            out[lang.lower()] = VoskModel.from_table(key, spec)
        elif engine == "pocketsphinx":
            out[lang.lower()] = SphinxModel.from_table(key, spec)
        else:
            raise ConfigError("config", f"{key}.engine: {engine!r} is not 'pocketsphinx' or 'vosk'")
    return out


def whisper_knows(language: str) -> bool:
    """Whether multilingual Whisper has ``language`` (ISO 639-1, e.g. ``es``)."""
    return language in WHISPER_LANGUAGES


def check_model(spec: ModelSpec) -> Optional[str]:
    """Why ``spec`` cannot load, or ``None``; cheap (no model is read)."""
    if isinstance(spec, WhisperModel):
        return check_folder(spec.path)
    return check_vosk_model(spec) if isinstance(spec, VoskModel) else check_sphinx_model(spec)


def model_problems(settings: LocalASRSettings) -> dict[str, str]:
    """Configured languages whose model cannot load, with the reason."""
    return {lang: p for lang, spec in settings.models.items() if (p := check_model(spec)) is not None}


def languages_with_models(settings: LocalASRSettings) -> set[str]:
    """
    Languages with a usable model, so the composition root can warn at
    start-up (:func:`missing_model_warning`) and use the fallback for legs
    in other languages.
    """
    problems = model_problems(settings)
    return {lang for lang in settings.models if lang not in problems}


def missing_model_warning(language: str) -> str:
    """The start-up warning for a caller language with no model."""
    return f"no ASR model for {language}: add [local_asr.models.{language}] with path=... (see README)"
