"""
Vosk (Kaldi) for :mod:`xlbridge.engines.local_asr`, for languages without a
pocketsphinx model: the model spec, the loader, and :class:`VoskStream`.

Vosk is an optional extra (``pip install vosk``); it is imported only when
a Vosk model is configured, and its absence is a clear
:class:`~xlbridge.engines.base.EngineRequestError`, never an ImportError at
start-up.  Models are never downloaded: ``path`` must be an unpacked model
directory (from https://alphacephei.com/vosk/models, fetched by the
operator).

Design notes
------------

* One ``vosk.Model`` per path and process, shared by every call (the
  library allows it); each call gets its own ``KaldiRecognizer``.
* Vosk endpoints by itself: ``AcceptWaveform`` returns true when an
  utterance ended, and ``Result()`` then holds the final.  Word times
  (``SetWords(True)``) are seconds since the recogniser began; frames the
  owner dropped are added back (:meth:`VoskStream.skip`).
* Like :class:`~xlbridge.engines.pocketsphinx.asr.SphinxStream`: fed 640-byte frames
  of int16 in native byte order, blocking, one task at a time, events with
  ``received_at=0.0`` stamped by the owner.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Mapping, Optional

import attrs

from xlbridge.audio.frame import SAMPLE_RATE
from xlbridge.config_values import config_path
from xlbridge.engines.base import ASREvent, EngineRequestError, Transcript
from xlbridge.engines.local_asr import ENGINE
from xlbridge.engines.local_asr.stream_clock import FRAME_S, StreamClock
from xlbridge.engines.options import unknown_setting
from xlbridge.errors import ConfigError

#: What to tell an operator whose configuration needs Vosk.
INSTALL_HINT = "Vosk is not installed: pip install vosk (the 'vosk' extra)"


@attrs.frozen
class VoskModel:
    """
    An unpacked Vosk model directory.

    :ivar path: the directory holding ``am/final.mdl`` (or ``final.mdl``).
    """

    path: str

    engine = "vosk"

    @classmethod
    def from_table(cls, key: str, table: Mapping[str, Any]) -> "VoskModel":
        """
        ``[local_asr.models.<lang>]`` with ``path``.

        :raises ConfigError: naming the bad key under ``key``.
        """
        for k in table:
            if k not in ("engine", "path"):
                raise unknown_setting(key, k, ("engine", "path"))
        if "path" not in table:
            raise ConfigError("config", f"{key}.path: required for a Vosk model")
        return cls(config_path(f"{key}.path", table["path"]))

    def describe(self) -> str:
        """For log lines and error messages."""
        return f"vosk {self.path}"


def _import_vosk() -> Any:
    try:
        import vosk
    except ImportError:
        return None
    return vosk


def check_vosk_model(spec: VoskModel) -> Optional[str]:
    """
    Why ``spec`` cannot be loaded (Vosk missing, not a model directory), or
    ``None``.  Cheap: no model is read.
    """
    if _import_vosk() is None:
        return INSTALL_HINT
    if not os.path.isdir(spec.path):
        return f"Vosk model path {spec.path!r} is not a directory"
    if not any(os.path.isfile(os.path.join(spec.path, *p)) for p in (("am", "final.mdl"), ("final.mdl",))):
        return f"{spec.path!r} is not a Vosk model (no am/final.mdl)"
    return None


def load_vosk_model(spec: VoskModel) -> Any:
    """
    Load a ``vosk.Model`` (seconds for big models; call from a worker
    thread).

    :raises EngineRequestError: Vosk missing, or the path is not a model.
    """
    problem = check_vosk_model(spec)
    if problem is not None:
        raise EngineRequestError(ENGINE, problem)
    vosk = _import_vosk()
    try:
        vosk.SetLogLevel(-1)
        return vosk.Model(spec.path)
    except Exception as e:
        raise EngineRequestError(ENGINE, f"Vosk could not load {spec.path!r}: {e}") from None


_models: dict[VoskModel, Any] = {}
_models_lock = threading.Lock()


def shared_model(spec: VoskModel) -> Any:
    """
    The process's one ``vosk.Model`` for ``spec``, loaded on first use
    (blocks: worker threads only; a second caller waits for the first load
    rather than loading twice).

    :raises EngineRequestError: see :func:`load_vosk_model`.
    """
    with _models_lock:
        if spec not in _models:
            _models[spec] = load_vosk_model(spec)
        return _models[spec]


def _ms(seconds: float) -> float:
    return round(seconds, 3)


class VoskStream(StreamClock):
    """
    One caller's Vosk recogniser over a shared model.

    :param model: a loaded ``vosk.Model``.
    :param interim_interval_s: least audio between partial-result reads.
    """

    def __init__(self, model: Any, *, interim_interval_s: float = 0.2) -> None:
        vosk = _import_vosk()
        if vosk is None:
            raise EngineRequestError(ENGINE, INSTALL_HINT)
        self.recognizer = vosk.KaldiRecognizer(model, SAMPLE_RATE)
        self.recognizer.SetWords(True)
        self.interim_interval_s = interim_interval_s
        super().__init__()
        self._interim_text = ""
        self._interims = 0
        self._next_interim = interim_interval_s
        self._utt_start = 0.0

    def feed(self, frame: bytes) -> list[ASREvent]:
        """
        Process one 20 ms frame (640 bytes, int16 native order); return the
        events it caused.
        """
        self.check_frame(frame)
        self.frames += 1
        if self.recognizer.AcceptWaveform(frame):
            return self._final(self.recognizer.Result(), speech_final=True)
        if self.position < self._next_interim:
            return []
        self._next_interim = self.position + self.interim_interval_s
        text = str(json.loads(self.recognizer.PartialResult()).get("partial", "")).strip()
        if not text or text == self._interim_text:
            return []
        if not self._interim_text:
            self._utt_start = self.position
        self._interim_text = text
        self._interims += 1
        return [Transcript(text, False, False, _ms(self._utt_start), _ms(self.position), 0.0)]

    def finish(self, tail: bytes = b"") -> list[ASREvent]:
        """End of stream: flush ``tail`` (under one frame) and the last final."""
        if self.finished:
            return []
        self.finished = True
        tail = tail[: len(tail) // 2 * 2]
        if tail:
            self.recognizer.AcceptWaveform(tail)
            self.tail_samples = len(tail) // 2
        return self._final(self.recognizer.FinalResult(), speech_final=True)

    def _final(self, raw: str, speech_final: bool) -> list[ASREvent]:
        result = json.loads(raw)
        text = str(result.get("text", "")).strip()
        words = [w for w in result.get("result", ()) if isinstance(w, dict)]
        had_interims = self._interims > 0
        self._interim_text = ""
        self._interims = 0
        end = self.position
        if not text and not had_interims:
            return []
        offset = self.skipped * FRAME_S
        start = float(words[0]["start"]) + offset if words else self._utt_start
        speech_end = min(float(words[-1]["end"]) + offset, end) if words else end
        confs = [float(w.get("conf", 0.0)) for w in words]
        confidence = sum(confs) / len(confs) if confs else 0.0
        return [Transcript(text, True, speech_final, _ms(start), _ms(end), 0.0,
                           confidence=confidence, speech_end=_ms(speech_end))]
