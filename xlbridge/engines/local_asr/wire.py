"""
The ASR worker's wire format, without I/O: message framing and what travels
as JSON (model specs, stream parameters, recogniser events, errors).  Shared
by the worker (:mod:`xlbridge.engines.local_asr.worker`) and its parent
(:mod:`xlbridge.engines.local_asr.pool` and
:mod:`xlbridge.engines.local_asr.worker_link`); the protocol itself is
described in :mod:`xlbridge.engines.local_asr.worker`.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Mapping, Sequence, Union

import attrs

from xlbridge.engines.base import ASREvent, EagerEnd, EngineError, SpeechStarted, Transcript, TurnResumed, UtteranceEnd
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES
from xlbridge.engines.pocketsphinx.asr import SphinxModel
from xlbridge.engines.vosk.asr import VoskModel
from xlbridge.engines.whisper.settings import WhisperModel

#: A model for one language.
ModelSpec = Union[SphinxModel, VoskModel, WhisperModel]

OPEN, AUDIO, FINISH, LOAD, CLOSE = 1, 2, 3, 4, 5
EVENTS, FINISHED, LOADED = 0x81, 0x82, 0x83

#: length (u32), kind (u8), stream (u32); big-endian.
HEADER = struct.Struct(">IBI")
_LENGTH = struct.Struct(">I")
_SKIP = struct.Struct(">I")

#: Largest payload accepted (a 60 s backlog of audio is 1.9 MB).
MAX_PAYLOAD = 16 * 1024 * 1024


# -- framing (sans-I/O) ---------------------------------------------------------


class FramingError(ValueError):
    """The byte stream is not valid framing; it cannot be resynchronised."""


@attrs.frozen
class Message:
    """One framed message: ``kind``, ``stream`` id and raw ``payload``."""

    kind: int
    stream: int
    payload: bytes = b""


def encode(kind: int, stream: int, payload: bytes = b"") -> bytes:
    """One message on the wire (header big-endian, payload as given)."""
    if not 0 <= kind <= 0xFF or not 0 <= stream <= 0xFFFFFFFF:
        raise ValueError(f"bad kind {kind} or stream {stream}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD}")
    return HEADER.pack(5 + len(payload), kind, stream) + payload


class Framer:
    """
    Cuts a byte stream into :class:`Message` s, whatever the read sizes.
    After a :class:`FramingError` the stream is lost: close it.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """The messages completed by ``data``, oldest first; the rest is kept."""
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos = 0
        while len(buf) - pos >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buf, pos)
            if not 5 <= length <= 5 + self.max_payload:
                raise FramingError(f"message length {length} is outside 5..{5 + self.max_payload}")
            if len(buf) - pos - 4 < length:
                break
            _, kind, stream = HEADER.unpack_from(buf, pos)
            out.append(Message(kind, stream, bytes(buf[pos + HEADER.size:pos + 4 + length])))
            pos += 4 + length
        del buf[:pos]
        return out


def audio_payload(frames: Sequence[bytes], skip: int = 0) -> bytes:
    """An AUDIO payload: ``skip`` (u32 big-endian) then the 640-byte native-order frames."""
    return _SKIP.pack(skip) + b"".join(frames)


def parse_audio(payload: bytes) -> tuple[int, list[bytes]]:
    """``(skip, frames)`` from an AUDIO payload; :class:`ValueError` if frames are not whole."""
    if len(payload) < _SKIP.size or (len(payload) - _SKIP.size) % FRAME_BYTES:
        raise ValueError(f"AUDIO payload of {len(payload)} bytes is not a skip count and whole frames")
    (skip,) = _SKIP.unpack_from(payload)
    return skip, [payload[i:i + FRAME_BYTES] for i in range(_SKIP.size, len(payload), FRAME_BYTES)]


def dump(obj: Any) -> bytes:
    """Compact UTF-8 JSON, for payloads."""
    return json.dumps(obj, separators=(",", ":")).encode()


# -- what travels as JSON --------------------------------------------------------------


def spec_to_json(spec: ModelSpec) -> dict[str, Any]:
    """A model spec as JSON (the worker loads it by itself)."""
    if isinstance(spec, VoskModel):
        return {"engine": "vosk", "path": spec.path}
    if isinstance(spec, WhisperModel):
        return spec.to_json()
    return {"engine": "pocketsphinx", "hmm": spec.hmm, "lm": spec.lm, "jsgf": spec.jsgf, "dict": spec.dictionary}


def spec_from_json(d: Mapping[str, Any]) -> ModelSpec:
    """Inverse of :func:`spec_to_json`."""
    if d.get("engine") == "vosk":
        return VoskModel(str(d["path"]))
    if d.get("engine") == "whisper":
        return WhisperModel.from_json(d)
    return SphinxModel(hmm=d.get("hmm"), lm=d.get("lm"), jsgf=d.get("jsgf"), dictionary=d.get("dict"))


@attrs.frozen
class StreamParams:
    """Per-stream recogniser settings (see :class:`~xlbridge.engines.local_asr.settings.LocalASRSettings`)."""

    window_s: float = 0.3
    ratio: float = 0.9
    vad_mode: int = 0
    interim_interval_s: float = 0.2
    max_utterance_s: float = 20.0

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "StreamParams":
        return cls(**{f.name: d[f.name] for f in attrs.fields(cls) if f.name in d})


def _transcript_json(ev: Transcript) -> dict[str, Any]:
    return {"text": ev.text, "is_final": ev.is_final, "speech_final": ev.speech_final,
            "start": ev.start, "end": ev.end, "confidence": ev.confidence, "speech_end": ev.speech_end,
            "language": ev.language}


def _transcript(d: Mapping[str, Any], received_at: float) -> Transcript:
    return Transcript(d["text"], d["is_final"], d["speech_final"], d["start"], d["end"], received_at,
                      confidence=d["confidence"], speech_end=d["speech_end"], language=d.get("language"))


def event_to_json(ev: ASREvent) -> dict[str, Any]:
    """A recogniser event as JSON (times: seconds since the stream began)."""
    if isinstance(ev, Transcript):
        return {"type": "transcript", **_transcript_json(ev)}
    if isinstance(ev, EagerEnd):
        return {"type": "eager_end", **_transcript_json(ev.transcript)}
    if isinstance(ev, TurnResumed):
        return {"type": "turn_resumed"}
    if isinstance(ev, SpeechStarted):
        return {"type": "speech_started", "timestamp": ev.timestamp}
    if isinstance(ev, UtteranceEnd):
        return {"type": "utterance_end", "last_word_end": ev.last_word_end}
    raise TypeError(f"cannot send {ev!r}")


def event_from_json(d: Mapping[str, Any], received_at: float) -> ASREvent:
    """Inverse of :func:`event_to_json`, stamped ``received_at`` (reactor time)."""
    kind = d["type"]
    if kind == "transcript":
        return _transcript(d, received_at)
    if kind == "eager_end":
        return EagerEnd(_transcript(d, received_at))
    if kind == "turn_resumed":
        return TurnResumed(received_at)
    if kind == "speech_started":
        return SpeechStarted(d["timestamp"], received_at)
    if kind == "utterance_end":
        return UtteranceEnd(d["last_word_end"], received_at)
    raise ValueError(f"unknown event type {kind!r}")


def error_to_json(err: BaseException) -> dict[str, Any]:
    """An error for the parent: an :class:`EngineError` keeps its message and retryability; anything else is a crash."""
    if isinstance(err, EngineError):
        return {"message": err.message, "retryable": err.retryable}
    return {"message": f"decoder crashed: {err!r}", "retryable": True}
