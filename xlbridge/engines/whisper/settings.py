"""
Settings of the Whisper recogniser: the ``[local_asr.whisper]`` table and
:class:`WhisperModel`, the spec a leg's stream is opened with.

Everything here is plain data; nothing reads a model or touches the disk
(:mod:`xlbridge.engines.whisper.model` resolves and checks the folder).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Optional

import attrs

from xlbridge.config_values import checked_number
from xlbridge.engines.options import unknown_setting
from xlbridge.errors import ConfigError

ENGINE = "whisper"

#: ``device`` values CTranslate2 knows.
DEVICES = ("cpu", "cuda", "auto")
#: ``compute_type`` values worth offering (CTranslate2 falls back to the
#: nearest the device supports).
COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "float32", "float16", "bfloat16", "default", "auto")

#: ``vad`` values (see :mod:`xlbridge.engines.whisper.vad`).
VADS = ("silero", "webrtc")

#: Leg language that lets Whisper identify the language per utterance.
AUTO = "auto"

#: The languages multilingual Whisper models know (their ``<|xx|>`` tokens;
#: faster-whisper's list, kept here so start-up need not import it).
LANGUAGES = frozenset("""
af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw he hi hr ht hu hy
id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru
sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh yue
""".split())


def _languages(value: Iterable[str]) -> tuple[str, ...]:
    """A list (from JSON or TOML) or tuple of language codes, as a tuple."""
    return tuple(value)


@attrs.frozen
class WhisperModel:
    """
    One leg's Whisper setup; also the key of the model a worker process
    loads once and shares between its streams (:meth:`model_key`).

    :ivar path: a CTranslate2 Whisper folder (config.json, model.bin,
        tokenizer.json, vocabulary.*).
    :ivar language: the leg's language (``es``, ``en``...) or ``auto``.
    :ivar device: ``cpu``, ``cuda`` or ``auto``.
    :ivar compute_type: CTranslate2 compute type (``int8`` on CPUs).
    :ivar cpu_threads: threads per decode (CTranslate2 ``intra_threads``;
        0 = its default).
    :ivar beam_size: 1 is greedy (fastest; the measured default).
    :ivar min_input_s: utterances shorter than this are padded with digital
        silence to it, seconds: on a bare second of audio Whisper cuts words
        off or loops; 5 s of input measured right on every short prompt.
    :ivar end_silence_s: voice-activity silence that ends an utterance, s.
    :ivar early_decode_s: after this much silence the utterance is decoded
        already; if the silence reaches ``end_silence_s`` with no voice
        since, that result is the final at once (the decode overlapped the
        wait), else it is thrown away (counted).  0 turns it off.
    :ivar start_speech_s: voiced audio in a 100 ms window that starts one, s.
    :ivar vad: the voice activity detector: ``silero`` (Silero VAD v6, the
        ONNX model faster-whisper ships) or ``webrtc``.
    :ivar vad_mode: WebRTC VAD aggressiveness, 0 (loose) to 3 (strict).
    :ivar max_utterance_s: longer speech is cut at its best pause.
    :ivar interim_interval_s: seconds between partial decodes for interim
        captions; 0 (the default) decodes finals only.
    :ivar tokens_per_s: decoding stops after this many tokens per second of
        speech (plus 10): the bound on a looping hypothesis.
    :ivar languages: for ``auto``, the languages to choose among (empty:
        any of Whisper's 99); identification on a second of speech is
        unreliable, so name the few your callers speak.
    """

    path: str
    language: str = ""
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2
    beam_size: int = 1
    min_input_s: float = 5.0
    end_silence_s: float = 0.3
    early_decode_s: float = 0.1
    start_speech_s: float = 0.06
    vad: str = "silero"
    vad_mode: int = 2
    max_utterance_s: float = 15.0
    interim_interval_s: float = 0.0
    tokens_per_s: float = 12.0
    languages: tuple[str, ...] = attrs.field(default=(), converter=_languages)

    engine = ENGINE

    def model_key(self) -> tuple[str, str, str, int]:
        """What identifies the loaded model (streams of any language share it)."""
        return (self.path, self.device, self.compute_type, self.cpu_threads)

    def describe(self) -> str:
        """For log lines and error messages."""
        return f"whisper {self.path} ({self.device}, {self.compute_type})"

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["engine"] = ENGINE
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "WhisperModel":
        return cls(**{f.name: d[f.name] for f in attrs.fields(cls) if f.name in d})


#: key -> (type, least, most) for the numbers of the table.
NUMBERS: Mapping[str, tuple[type, float, float]] = {
    "cpu_threads": (int, 0, 64),
    "beam_size": (int, 1, 16),
    "min_input_s": (float, 0.0, 30.0),
    "end_silence_s": (float, 0.1, 3.0),
    "early_decode_s": (float, 0.0, 3.0),
    "start_speech_s": (float, 0.02, 0.1),
    "vad_mode": (int, 0, 3),
    "max_utterance_s": (float, 2.0, 28.0),
    "interim_interval_s": (float, 0.0, 10.0),
    "tokens_per_s": (float, 2.0, 50.0),
}


@attrs.frozen
class WhisperSettings:
    """
    The ``[local_asr.whisper]`` table.

    :ivar model: a CTranslate2 Whisper folder; ``None`` = the installed
        model package (:func:`~xlbridge.engines.whisper.model.resolve`).
    :ivar tuning: everything else, as :class:`WhisperModel` fields.
    """

    model: Optional[str] = None
    tuning: Mapping[str, Any] = attrs.field(factory=dict)

    def spec(self, path: str, language: str = "") -> WhisperModel:
        """The :class:`WhisperModel` for a resolved ``path`` and a leg's ``language``."""
        return WhisperModel(path=path, language=language, **dict(self.tuning))

    @classmethod
    def from_options(cls, table: Any) -> "WhisperSettings":
        """
        Validate ``[local_asr.whisper]``.

        :raises ConfigError: naming the bad key, e.g. ``local_asr.whisper.beam_size``.
        """
        if not isinstance(table, Mapping):
            raise ConfigError("config", "[local_asr.whisper] must be a table")
        model: Optional[str] = None
        tuning: dict[str, Any] = {}
        for key, value in table.items():
            name = f"local_asr.whisper.{key}"
            if key == "model":
                if not isinstance(value, str) or not value.strip():
                    raise ConfigError("config", f"{name}: expected the path of a CTranslate2 Whisper folder, got {value!r}")
                model = os.path.expanduser(value)
            elif key == "device":
                if value not in DEVICES:
                    raise ConfigError("config", f"{name}: {value!r} is not one of {', '.join(DEVICES)}")
                tuning[key] = value
            elif key == "vad":
                if value not in VADS:
                    raise ConfigError("config", f"{name}: {value!r} is not one of {', '.join(VADS)}")
                tuning[key] = value
            elif key == "compute_type":
                if value not in COMPUTE_TYPES:
                    raise ConfigError("config", f"{name}: {value!r} is not one of {', '.join(COMPUTE_TYPES)}")
                tuning[key] = value
            elif key == "languages":
                if not isinstance(value, list) or not all(isinstance(v, str) and v.lower() in LANGUAGES for v in value):
                    raise ConfigError("config", f"{name}: expected a list of Whisper language codes like [\"en\", \"es\"], got {value!r}")
                tuning[key] = tuple(v.lower() for v in value)
            elif key in NUMBERS:
                tuning[key] = checked_number(name, value, *NUMBERS[key])
            else:
                raise unknown_setting("local_asr.whisper", key,
                                      ["model", "device", "compute_type", "languages", "vad", *NUMBERS])
        return cls(model, tuning)
