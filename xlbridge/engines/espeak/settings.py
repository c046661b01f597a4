"""
:class:`ESpeakSettings` (what the espeak-ng engine speaks with), its
defaults and its option checks, for :mod:`xlbridge.engines.espeak.tts`.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Optional

import attrs

from xlbridge.engines.options import check_keys, setting_error

ENGINE = "espeak"

#: Voice for a language missing from :attr:`ESpeakSettings.voices`.
DEFAULT_VOICE = "en-us"

#: Language (ISO 639-1) -> espeak-ng voice name.
DEFAULT_VOICES: Mapping[str, str] = {"en": "en-us", "es": "es"}

#: espeak-ng's own bounds for the speaking rate, words per minute.
RATE_RANGE = (80, 450)

#: espeak-ng's bounds for the base pitch (50 is the voice's normal pitch).
PITCH_RANGE = (0, 100)


def _int_in(low: int, high: int) -> Callable[[Any, "attrs.Attribute[Any]", Any], None]:
    def check(instance: Any, attribute: "attrs.Attribute[Any]", value: Any) -> None:
        key = f"{ENGINE}.{attribute.name}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise setting_error(key, f"{value!r} is not a whole number")
        if not low <= value <= high:
            raise setting_error(key, f"{value} is outside {low}..{high}")

    return check


def _voice_name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or not re.fullmatch(r"[\w+.-]+", value.strip()):
        raise setting_error(key, f"{value!r} is not an espeak-ng voice name like en-us or es")
    return value.strip()


def _voices(value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping):
        raise setting_error(f"{ENGINE}.voices", f"must be a table of language = voice, not {value!r}")
    out: dict[str, str] = {}
    for lang, voice in value.items():
        if not isinstance(lang, str) or not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*", lang):
            raise setting_error(f"{ENGINE}.voices.{lang}", "not a language code like en or es-MX")
        out[lang.lower()] = _voice_name(f"{ENGINE}.voices.{lang}", voice)
    return out


def _default_voice(value: Any) -> Optional[str]:
    if value is None or value is False or value == "":
        return None
    return _voice_name(f"{ENGINE}.default_voice", value)


@attrs.frozen
class ESpeakSettings:
    """
    What the espeak-ng engine speaks with.  Bad values raise
    :class:`~xlbridge.errors.ConfigError` naming the TOML key
    (``espeak.rate_wpm``).

    :ivar voices: language (ISO 639-1 ``"es"``, or with a region
        ``"es-mx"``; matched without case) -> espeak-ng voice name.
    :ivar default_voice: voice for a language missing from ``voices``
        (warned once per language); ``None`` refuses such a language with
        :class:`~xlbridge.engines.base.EngineRequestError`.
    :ivar rate_wpm: speaking rate, words per minute (80..450; espeak's
        normal is 175).
    :ivar pitch: base pitch, 0..100 (50 = the voice's own).
    :ivar max_queue: requests in progress at most; more are refused with
        :class:`~xlbridge.engines.base.EngineUnavailable`.
    :ivar library_path: a libespeak-ng to use instead of the bundled one
        (e.g. Debian's ``libespeak-ng.so.1``); ``None`` = bundled.
    :ivar data_path: its ``espeak-ng-data`` directory; ``None`` = the
        bundled data (or the library's default for another library).
    """

    voices: Mapping[str, str] = attrs.field(
        factory=lambda: dict(DEFAULT_VOICES), converter=_voices, hash=False
    )
    default_voice: Optional[str] = attrs.field(default=DEFAULT_VOICE, converter=_default_voice)
    rate_wpm: int = attrs.field(default=175, validator=_int_in(*RATE_RANGE))
    pitch: int = attrs.field(default=50, validator=_int_in(*PITCH_RANGE))
    max_queue: int = attrs.field(default=16, validator=_int_in(1, 1024))
    library_path: Optional[str] = None
    data_path: Optional[str] = None

    @classmethod
    def from_options(cls, table: Mapping[str, Any]) -> "ESpeakSettings":
        """
        Settings from the ``[espeak]`` table of the TOML file.  Keys are the
        attribute names; ``voices`` is a sub-table and is merged over
        :data:`DEFAULT_VOICES`.

        :raises ConfigError: for an unknown key or a bad value, naming it.
        """
        values: dict[str, Any] = {}
        for key, value in check_keys(ENGINE, table, [a.name for a in attrs.fields(cls)]).items():
            if key in ("library_path", "data_path") and value is not None:
                if not isinstance(value, str) or not value:
                    raise setting_error(f"{ENGINE}.{key}", f"must be a path, not {value!r}")
            values[key] = value
        if "voices" in values:
            values["voices"] = {**DEFAULT_VOICES, **_voices(values["voices"])}
        return cls(**values)

    def voice_for(self, language: str) -> Optional[str]:
        """
        The voice configured for ``language`` (``"es-MX"`` falls back to
        ``"es"``), or ``None`` if it has none of its own.
        """
        lang = language.strip().lower().replace("_", "-")
        if lang in self.voices:
            return self.voices[lang]
        return self.voices.get(lang.split("-", 1)[0])
