"""
Deepgram Flux (``/v2/listen``), the sans-I/O wire: the query string, the
server messages parsed into small immutable values, and the client's control
messages.  What to do with each turn event (speculate, cancel, commit) is
decided by :class:`~xlbridge.engines.deepgram.flux_turns.TurnTracker`, which
reads the values parsed here.

Nothing here touches a socket or a clock.  Wire facts, with sources, are in
``PROTOCOLS.md`` section 11; the differences from ``/v1/listen`` that matter
here:

* turns instead of results: ``TurnInfo`` messages whose ``event`` is
  ``StartOfTurn``, ``Update``, ``EagerEndOfTurn``, ``TurnResumed`` or
  ``EndOfTurn``;
* no ``KeepAlive`` (sending one kills the stream; an idle stream is kept
  with WebSocket pings) and no ``Finalize``: ``ForceEndTurn`` ends the turn
  in progress, and ``CloseStream`` alone does *not* (send ``ForceEndTurn``
  first when the last turn matters);
* every server message carries ``sequence_id`` (0 on ``Connected``, +1 per
  message), so a gap means a message was lost or misparsed.
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any, Optional, Sequence, Union

import attrs

__all__ = [
    "CLOSE_STREAM",
    "FORCE_END_TURN",
    "Connected",
    "ConfigureResult",
    "FluxError",
    "FluxMessage",
    "Malformed",
    "TurnEvent",
    "TurnInfo",
    "Unknown",
    "Word",
    "configure",
    "flux_query",
    "parse_flux",
]

#: Client control messages (WebSocket text frames).
FORCE_END_TURN = json.dumps({"type": "ForceEndTurn"})
CLOSE_STREAM = json.dumps({"type": "CloseStream"})

#: Models that take ``language_hint`` (only the multilingual one does).
MULTILINGUAL_MODELS = frozenset({"flux-general-multi"})


class TurnEvent(enum.Enum):
    """``TurnInfo.event``."""

    START = "StartOfTurn"
    UPDATE = "Update"
    EAGER = "EagerEndOfTurn"
    RESUMED = "TurnResumed"
    END = "EndOfTurn"


@attrs.frozen
class Word:
    """One recognised word; times in seconds of audio on this connection."""

    word: str
    confidence: float
    start: Optional[float] = None
    end: Optional[float] = None


@attrs.frozen
class TurnInfo:
    """
    One ``TurnInfo`` message.

    :ivar start: ``audio_window_start``, seconds of audio on this connection.
    :ivar end: ``audio_window_end``, same clock.
    :ivar eot_confidence: ``end_of_turn_confidence``, 0..1.
    :ivar trigger: what ended the turn (``model``, ``manual`` for
        ForceEndTurn, ``timeout``), on ``EndOfTurn`` when the server says.
    """

    event: TurnEvent
    turn_index: int
    start: float
    end: float
    transcript: str
    words: tuple[Word, ...]
    eot_confidence: float
    sequence_id: int
    languages: tuple[str, ...] = ()
    trigger: Optional[str] = None


@attrs.frozen
class Connected:
    """``Connected``, the first server message: the request's id."""

    request_id: str
    sequence_id: int


@attrs.frozen
class ConfigureResult:
    """``ConfigureSuccess`` (``ok``) or ``ConfigureFailure``."""

    ok: bool
    sequence_id: int
    thresholds: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class FluxError:
    """An ``Error`` (fatal: the server closes next) or a ``Warning``."""

    fatal: bool
    code: str
    description: str
    sequence_id: int


@attrs.frozen
class Unknown:
    """A message of a type this client does not know (skipped, as the SDK does)."""

    type: str
    sequence_id: Optional[int]


@attrs.frozen
class Malformed:
    """Not JSON, not an object, or a known type missing a required field."""

    reason: str


FluxMessage = Union[TurnInfo, Connected, ConfigureResult, FluxError, Unknown, Malformed]


class _Bad(Exception):
    pass


def _num(f: dict[str, Any], key: str) -> float:
    v = f.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _Bad(f"{key}: not a finite number")
    return float(v)


def _int(f: dict[str, Any], key: str) -> int:
    v = f.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise _Bad(f"{key}: not a count")
    return v


def _str(f: dict[str, Any], key: str) -> str:
    v = f.get(key)
    if not isinstance(v, str):
        raise _Bad(f"{key}: not a string")
    return v


def _opt_num(f: dict[str, Any], key: str) -> Optional[float]:
    return _num(f, key) if f.get(key) is not None else None


def _words(v: object) -> tuple[Word, ...]:
    if not isinstance(v, list):
        raise _Bad("words: not a list")
    out = []
    for w in v:
        if not isinstance(w, dict):
            raise _Bad("words: not an object")
        out.append(Word(_str(w, "word"), _num(w, "confidence"), _opt_num(w, "start"), _opt_num(w, "end")))
    return tuple(out)


def _turn_info(f: dict[str, Any]) -> TurnInfo:
    try:
        event = TurnEvent(f.get("event"))
    except ValueError:
        raise _Bad(f"event: unknown {f.get('event')!r}") from None
    langs = f.get("languages") or ()
    if not isinstance(langs, (list, tuple)) or not all(isinstance(x, str) for x in langs):
        raise _Bad("languages: not a list of strings")
    trigger = f.get("trigger")
    return TurnInfo(
        event=event,
        turn_index=_int(f, "turn_index"),
        start=_num(f, "audio_window_start"),
        end=_num(f, "audio_window_end"),
        transcript=_str(f, "transcript"),
        words=_words(f.get("words")),
        eot_confidence=_num(f, "end_of_turn_confidence"),
        sequence_id=_int(f, "sequence_id"),
        languages=tuple(langs),
        trigger=trigger if isinstance(trigger, str) else None,
    )


def parse_flux(text: Union[str, bytes]) -> FluxMessage:
    """
    Parse one server text frame.  Never raises: what cannot be used comes
    back as :class:`Malformed` (count it) or :class:`Unknown` (skip it).
    """
    try:
        f = json.loads(text)
    except (ValueError, RecursionError, UnicodeDecodeError):
        return Malformed("not JSON")
    if not isinstance(f, dict):
        return Malformed("not an object")
    kind = f.get("type")
    try:
        if kind == "TurnInfo":
            return _turn_info(f)
        if kind == "Connected":
            return Connected(_str(f, "request_id"), _int(f, "sequence_id"))
        if kind in ("ConfigureSuccess", "ConfigureFailure"):
            th = f.get("thresholds")
            return ConfigureResult(kind == "ConfigureSuccess", _int(f, "sequence_id"), th if isinstance(th, dict) else {})
        if kind in ("Error", "Warning"):
            return FluxError(kind == "Error", _str(f, "code"), str(f.get("description", "")), _int(f, "sequence_id"))
    except _Bad as e:
        return Malformed(f"{kind}: {e}")
    seq = f.get("sequence_id")
    return Unknown(str(kind), seq if isinstance(seq, int) and not isinstance(seq, bool) else None)


def configure(
    eot_threshold: Optional[float] = None,
    eager_eot_threshold: Optional[float] = None,
    eot_timeout_ms: Optional[int] = None,
    keyterms: Optional[Sequence[str]] = None,
    language_hints: Optional[Sequence[str]] = None,
) -> str:
    """
    A mid-stream ``Configure`` message; what is ``None`` keeps its value.
    """
    msg: dict[str, Any] = {"type": "Configure"}
    th = {k: v for k, v in (("eot_threshold", eot_threshold), ("eager_eot_threshold", eager_eot_threshold),
                            ("eot_timeout_ms", eot_timeout_ms)) if v is not None}
    if th:
        msg["thresholds"] = th
    if keyterms is not None:
        msg["keyterms"] = list(keyterms)
    if language_hints is not None:
        msg["language_hints"] = list(language_hints)
    return json.dumps(msg)


def flux_query(
    model: str,
    sample_rate: int = 16000,
    eot_threshold: float = 0.7,
    eager_eot_threshold: Optional[float] = None,
    eot_timeout_ms: int = 5000,
    language_hints: Sequence[str] = (),
    keyterms: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """
    The ``/v2/listen`` query for raw little-endian 16-bit PCM.

    :raises ValueError: for values Flux rejects (ranges in PROTOCOLS.md
        11.1): ``eot_threshold`` 0.5..1.0, ``eager_eot_threshold`` 0.3..0.9
        and not above ``eot_threshold``, ``eot_timeout_ms`` 500..60000,
        language hints only on ``flux-general-multi`` and never empty.
    """
    if not model.startswith("flux-"):
        raise ValueError(f"model: Flux models are flux-general-en or flux-general-multi, got {model!r}")
    if not 0.5 <= eot_threshold <= 1.0:
        raise ValueError(f"eot_threshold: must be 0.5..1.0, got {eot_threshold}")
    if eager_eot_threshold is not None:
        if not 0.3 <= eager_eot_threshold <= 0.9:
            raise ValueError(f"eager_eot_threshold: must be 0.3..0.9, got {eager_eot_threshold}")
        if eager_eot_threshold > eot_threshold:
            raise ValueError("eager_eot_threshold: must not be above eot_threshold")
    if not 500 <= eot_timeout_ms <= 60000:
        raise ValueError(f"eot_timeout_ms: must be 500..60000, got {eot_timeout_ms}")
    if language_hints and model not in MULTILINGUAL_MODELS:
        raise ValueError(f"language hints need flux-general-multi, not {model}")
    if any(not h for h in language_hints):
        raise ValueError("language hints must not be empty")
    q = [("model", model), ("encoding", "linear16"), ("sample_rate", str(sample_rate)),
         ("eot_threshold", f"{eot_threshold:g}"), ("eot_timeout_ms", str(eot_timeout_ms))]
    if eager_eot_threshold is not None:
        q.append(("eager_eot_threshold", f"{eager_eot_threshold:g}"))
    q += [("language_hint", h) for h in language_hints]
    q += [("keyterm", k) for k in keyterms]
    return q
