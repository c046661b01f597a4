"""
What the configured engines can do with the callers' languages, worked out
at start-up, before anything runs:

- :func:`read_engine_settings` reads and checks every engine section of the
  TOML file, whether or not its engine is used, so a typo in ``[deepgram]``
  is reported on a machine without a Deepgram key too.
- :func:`check_codes`: every caller language is a language code.
- :func:`check_directions`: for every direction a call needs (both ways of
  each pair of caller languages), the chosen engines can recognise the
  source, translate it into the target and speak the target.  An
  impossible direction is an error naming the languages, the engine and
  what it supports; one that only works degraded (espeak-ng speaking a
  language with its default voice) is a warning.  Local ASR's fallbacks
  are warned about where the local recogniser is built
  (:mod:`xlbridge.engines.select`).
- :func:`language_table` renders what each engine supports, for
  ``twistd xlbridge --list-languages`` and the README.

The language lists themselves live with each engine's settings.
"""

from __future__ import annotations

import textwrap
from typing import AbstractSet, Any, Iterable, Mapping, Optional

import attrs

from xlbridge.engines.apertium.settings import ApertiumSettings, installed_modes, pair_problem
from xlbridge.engines.deepgram.settings import DeepgramSettings
from xlbridge.engines.deepgram.settings import language_problem as deepgram_language_problem
from xlbridge.engines.deepgram.settings import model_languages as deepgram_languages
from xlbridge.engines.deepl.settings import LANGUAGES as DEEPL_LANGUAGES
from xlbridge.engines.deepl.settings import DeepLSettings, deepl_knows
from xlbridge.engines.elevenlabs.settings import MODEL_LANGUAGES as ELEVENLABS_MODELS
from xlbridge.engines.elevenlabs.settings import ElevenLabsSettings
from xlbridge.engines.elevenlabs.settings import model_languages as elevenlabs_languages
from xlbridge.engines.espeak.lib import VoiceList, installed_voices
from xlbridge.engines.espeak.settings import ESpeakSettings
from xlbridge.engines.languages import AUTO, code_problem, directions, primary
from xlbridge.engines.local_asr.settings import LocalASRSettings
from xlbridge.engines.options import setting_error
from xlbridge.engines.whisper.settings import LANGUAGES as WHISPER_LANGUAGES
from xlbridge.errors import ConfigError

__all__ = [
    "SECTIONS",
    "EngineSettings",
    "check_codes",
    "check_directions",
    "language_table",
    "read_engine_settings",
]

#: The engine sections of the TOML file.
SECTIONS = ("deepgram", "deepl", "elevenlabs", "apertium", "espeak", "local_asr")

#: The TOML file's engine sections: section -> key -> value (as parsed).
Options = Mapping[str, Mapping[str, Any]]

_DEEPL_KEYS = ("DEEPL_AUTH_KEY", "DEEPL_API_KEY")


@attrs.frozen
class EngineSettings:
    """
    Every engine section of the TOML file, read and checked.

    :ivar deepl: ``None`` when there is no DeepL key (the section was
        checked all the same).
    :ivar voices: espeak-ng's voices, or ``None`` when they cannot be
        listed (another library with its own data).
    """

    deepgram: DeepgramSettings
    deepl: Optional[DeepLSettings]
    elevenlabs: ElevenLabsSettings
    apertium: ApertiumSettings
    espeak: ESpeakSettings
    local_asr: LocalASRSettings
    voices: Optional[VoiceList] = attrs.field(default=None, eq=False, repr=False)


def _table(options: Options, section: str) -> dict[str, Any]:
    table = options.get(section, {})
    if not isinstance(table, Mapping):
        raise setting_error(section, f"expected a table of settings, got {table!r}")
    return dict(table)


def read_engine_settings(environ: Mapping[str, str], options: Options) -> EngineSettings:
    """
    Read every engine section of ``options`` (and the environment's keys
    and endpoints), used or not.

    :raises ConfigError: an unknown section or key, or a bad value, naming
        ``section.key`` (or the environment variable).
    """
    for section in options:
        if section not in SECTIONS:
            raise setting_error(str(section), f"unknown engine section (known: {', '.join(SECTIONS)})")
    deepl_table = _table(options, "deepl")
    if any(environ.get(v) for v in _DEEPL_KEYS) or deepl_table.get("auth_key"):
        deepl: Optional[DeepLSettings] = DeepLSettings.from_env(environ, **deepl_table)
    else:  # checked with a stand-in key: DeepL is not used without one
        DeepLSettings.from_env(environ, **{**deepl_table, "auth_key": "unused"})
        deepl = None
    espeak = ESpeakSettings.from_options(_table(options, "espeak"))
    voices = installed_voices(espeak.library_path, espeak.data_path)
    _check_voices(espeak, voices)
    return EngineSettings(
        deepgram=DeepgramSettings.from_env(environ, **_table(options, "deepgram")),
        deepl=deepl,
        elevenlabs=ElevenLabsSettings.from_env(environ, **_table(options, "elevenlabs")),
        apertium=ApertiumSettings.from_options(_table(options, "apertium")),
        espeak=espeak,
        local_asr=LocalASRSettings.from_options(_table(options, "local_asr")),
        voices=voices,
    )


def _check_voices(settings: ESpeakSettings, voices: Optional[VoiceList]) -> None:
    """Every voice ``[espeak]`` names exists in espeak-ng's data (when it can be listed)."""
    if voices is None:
        return
    for lang, voice in sorted(settings.voices.items()):
        if not voices.has(voice):
            theirs = voices.languages.get(primary(lang), ())
            hint = f"its voices for {primary(lang)}: {', '.join(theirs)}" if theirs else f"it has none for {lang}"
            raise setting_error(f"espeak.voices.{lang}", f"espeak-ng has no voice {voice!r} ({hint})")
    if settings.default_voice is not None and not voices.has(settings.default_voice):
        raise setting_error("espeak.default_voice",
                            f"espeak-ng has no voice {settings.default_voice!r} (voices are named like en-us, es, fr)")


# -- caller languages --------------------------------------------------------------


def _known_codes() -> AbstractSet[str]:
    """Codes beyond ISO 639-1 that an engine takes (``yue``, ``fil``, ``haw``...)."""
    codes: set[str] = set(WHISPER_LANGUAGES) | set(DEEPL_LANGUAGES)
    for langs in ELEVENLABS_MODELS.values():
        codes |= langs
    return codes


def check_codes(languages: Iterable[str]) -> None:
    """
    :raises ConfigError: (``--langs``) for the first caller language that
        is not a language code at all (``xx``).
    """
    known = _known_codes()
    for lang in sorted(set(languages)):
        problem = code_problem(lang, known)
        if problem is not None:
            raise ConfigError("langs", problem)


def _words(codes: Iterable[str]) -> str:
    return " ".join(sorted(codes))


def _asr_problem(settings: EngineSettings, source: str) -> Optional[str]:
    """Why Deepgram cannot recognise ``source``, or ``None``."""
    dg = settings.deepgram
    if source.strip().lower() == AUTO and not (dg.api == "flux" and dg.asr_model == "flux-general-multi"):
        return (f"deepgram cannot recognise {AUTO!r} with {dg.asr_model}: identifying the caller's language takes "
                'api = "flux" with flux_model = "flux-general-multi" in [deepgram], or the local Whisper '
                "recogniser (--engines local, or auto without DEEPGRAM_API_KEY)")
    return deepgram_language_problem(settings.deepgram, source)


def _mt_problem(kind: str, settings: EngineSettings, source: str, target: str) -> Optional[str]:
    """Why the MT engine of ``kind`` cannot translate between ``source`` and ``target``, both ways, or ``None``."""
    if kind == "cloud":
        unknown = [lang for lang in (source, target) if not deepl_knows(lang)]
        if not unknown:
            return None
        return (f"deepl cannot translate between {source} and {target}: it has no {unknown[0]!r}; "
                f"it translates between any two of {_words(DEEPL_LANGUAGES)}")
    problem = pair_problem(settings.apertium, [(source, target), (target, source)])
    return None if problem is None else f"{problem}; or set DEEPL_AUTH_KEY to translate with DeepL"


def _tts_problem(kind: str, settings: EngineSettings, target: str) -> tuple[Optional[str], Optional[str]]:
    """(error, warning) about speaking ``target`` with the TTS engine of ``kind``."""
    if kind == "cloud":
        model = settings.elevenlabs.model_id
        langs = elevenlabs_languages(model)
        if langs is None or primary(target) in langs:
            return None, None
        return f"elevenlabs (model_id {model}) cannot speak {target!r}; it speaks {_words(langs)}", None
    espeak = settings.espeak
    if espeak.voice_for(target) is not None:
        return None, None
    theirs = settings.voices.languages.get(primary(target), ()) if settings.voices is not None else ()
    hint = (f"; espeak-ng has {', '.join(theirs)}: add {primary(target)} = \"{theirs[0]}\" to [espeak] voices"
            if theirs else "")
    if espeak.default_voice is None:
        return f"espeak-ng cannot speak {target!r}: no voice for it in [espeak] voices and no default_voice{hint}", None
    return None, (f"espeak-ng: no voice for {target!r} in [espeak] voices, so it is spoken with the default voice "
                  f"{espeak.default_voice}{hint}")


def check_directions(kinds: Mapping[str, str], settings: EngineSettings,
                     pairs: Iterable[tuple[str, str]]) -> list[str]:
    """
    Check every direction the caller ``pairs`` need against the engine of
    each stage (``kinds``: stage -> ``cloud`` or ``local``).

    :return: warnings about directions that work degraded.
    :raises ConfigError: (``--langs``) naming every impossible direction:
        its languages, the engine and what that engine supports.
    """
    errors: list[str] = []
    warnings: list[str] = []

    def add(into: list[str], text: Optional[str]) -> None:
        if text is not None and text not in into:
            into.append(text)

    for source, target in directions(pairs):
        if kinds["asr"] == "cloud":
            add(errors, _asr_problem(settings, source))
        if AUTO in (source.strip().lower(), target.strip().lower()):
            continue  # the language is known only once the caller speaks
        if source < target:  # both ways at once (directions() has both)
            add(errors, _mt_problem(kinds["mt"], settings, source, target))
        error, warning = _tts_problem(kinds["tts"], settings, target)
        add(errors, error)
        add(warnings, warning)
    if errors:
        raise ConfigError("langs", "; ".join(errors))
    return warnings


# -- the table -----------------------------------------------------------------------


def _row(label: str, text: str, width: int = 100, indent: int = 34) -> str:
    """``label`` in the first column, ``text`` wrapped in the second (below a label too long for it)."""
    body = textwrap.fill(text, width=width, initial_indent=" " * indent, subsequent_indent=" " * indent,
                         break_on_hyphens=False)
    if len(label) > indent - 3:
        return f"  {label}\n{body}"
    return f"  {label:<{indent - 2}}{body[indent:]}"


def _local_asr_languages(settings: LocalASRSettings, whisper: bool) -> dict[str, str]:
    """Language -> the local recogniser for it (configured models win over Whisper)."""
    out = {lang: "whisper" for lang in WHISPER_LANGUAGES} if whisper and settings.engine != "pocketsphinx" else {}
    out.setdefault("en", "pocketsphinx")
    for lang, spec in settings.models.items():
        if lang != "en" or not getattr(spec, "bundled", False):
            out[lang] = spec.engine
    return out


def _deepgram_words(settings: DeepgramSettings, langs: Optional[frozenset[str]]) -> str:
    """The table's words for the Deepgram model in use."""
    if langs is None:
        return "model not known to this version: not checked"
    if deepgram_language_problem(settings, AUTO) is None:
        return f"{_words(langs)}, and auto (identify the language)"
    return _words(langs)


def language_table(settings: EngineSettings, whisper_model: Optional[str],
                   whisper_problem: Optional[str] = None) -> str:
    """
    What each engine supports with these settings, as plain text: the
    translation pairs of the cloud and the local stack, then every
    engine's languages.

    :param whisper_model: the Whisper model folder that resolved, or
        ``None`` (then ``whisper_problem`` says why).
    """
    dg_model, el_model = settings.deepgram.asr_model, settings.elevenlabs.model_id
    dg = deepgram_languages(dg_model)
    el = elevenlabs_languages(el_model)
    known = [langs for langs in (dg, el) if langs is not None]
    cloud = ({lang for lang in frozenset.intersection(*known) if deepl_knows(lang)} if known
             else set(DEEPL_LANGUAGES))
    asr = _local_asr_languages(settings.local_asr, whisper_model is not None)
    modes = set(installed_modes(settings.apertium))
    apertium = sorted(pair for pair, mode in settings.apertium.pairs.items() if mode in modes)
    espeak = settings.espeak
    local_pairs = sorted(
        f"{a}-{b}" for a, b in (p.split("-") for p in apertium)
        if a < b and f"{b}-{a}" in apertium and {a, b} <= set(asr)
        and espeak.voice_for(a) is not None and espeak.voice_for(b) is not None
    )
    lines = [
        "Languages each engine supports, as --langs takes them (ISO 639-1; a regional variant",
        "such as es-mx or pt-br goes to its language's engine).  Each pair of callers needs",
        "recognition of both languages, translation both ways and speech in both.",
        "",
        "Translation pairs, both ways:",
        _row("cloud (--engines cloud)", f"any two of: {_words(cloud)}"),
        _row("local (--engines local)", " ".join(local_pairs) or "none (see below)"),
        "",
        "Recognition (ASR):",
        _row(f"deepgram ({dg_model})", _deepgram_words(settings.deepgram, dg)),
    ]
    if whisper_model is not None and settings.local_asr.engine != "pocketsphinx":
        lines.append(_row("whisper (local)", f"{len(WHISPER_LANGUAGES)} languages: {_words(WHISPER_LANGUAGES)}, "
                                             "and auto (identify the language)"))
    else:
        lines.append(_row("whisper (local)", f"not used: {whisper_problem or '[local_asr] engine = pocketsphinx'}"))
    others = sorted((lang, engine) for lang, engine in asr.items() if engine != "whisper")
    lines.append(_row("pocketsphinx, vosk (local)", " ".join(f"{lang} ({engine})" for lang, engine in others)
                      or "no language of their own ([local_asr.models.<lang>] adds one)"))
    lines += [
        "",
        "Translation (MT):",
        _row("deepl", f"between any two of: {_words(DEEPL_LANGUAGES)}"),
        _row("apertium (local)", (" ".join(p.replace("-", "→") for p in apertium) or "none")
             + f" (installed modes: {', '.join(sorted(modes)) or 'none'}; [apertium] pairs maps a pair to a mode)"),
        "",
        "Speech (TTS):",
        _row(f"elevenlabs ({el_model})",
             _words(el) if el is not None else "model not known to this version: not checked"),
        _row("espeak-ng (local)",
             "voices: " + " ".join(f"{lang}={voice}" for lang, voice in sorted(espeak.voices.items()))
             + (f"; other languages with the default voice {espeak.default_voice}" if espeak.default_voice else "")),
    ]
    if settings.voices is not None:
        lines.append(_row("", f"espeak-ng has voices for: {_words(settings.voices.languages)} "
                              "(add them to [espeak] voices)"))
    return "\n".join(lines)
