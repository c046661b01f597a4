"""
Is a message of the ARI events socket an event the controller can act on?

Pure functions and counters, no I/O and no clock, split out of
:mod:`xlbridge.ari.events` (which re-exports :func:`check_event` and
:func:`decode_event`) so the checks are tested as plain data.

* **Never raise.**  A malformed message (not UTF-8, not JSON, nested past
  the parser's recursion limit, not an object, or missing or mistyping a
  field the controller reads) is one counted drop with a short reason, not
  an exception out of the protocol (which dropped the socket: fuzz run,
  issue 15) or out of the controller's handler (a traceback per event).
* **Check only what the controller reads.**  Unknown event types and
  fields pass: Asterisk sends many events the controller ignores, and a
  newer Asterisk may add fields.
* **Bounded counters.**  The reason text for the log may quote the event's
  ``type``, which the peer chooses; the counters an exporter reads are
  keyed by a fixed set of codes (:data:`REASONS`) and event types
  (:data:`ACTED_ON` plus ``"other"``), so a peer cannot grow them, or a
  metric's label set, without bound (:class:`EventCounts`).
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple, Optional, Union

__all__ = [
    "ACTED_ON",
    "MAX_REASON_TEXTS",
    "MORE_REASONS",
    "OTHER",
    "REASONS",
    "EventCounts",
    "Rejected",
    "check_event",
    "decode_event",
    "parse_event",
]

#: Event fields the controller reads, and the JSON type each must have when
#: present (ARI's models: ``Channel``, ``Playback``; ``args`` is a list of
#: strings).  Checked here so a malformed event is one counted drop, not an
#: exception in whichever handler touches the field first.
_FIELD_TYPES: dict[str, type] = {"channel": dict, "args": list, "playback": dict}
#: Fields ARI's event models require, per event type we act on.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "StasisStart": ("channel",),
    "StasisEnd": ("channel",),
    "ChannelDestroyed": ("channel",),
    "PlaybackFinished": ("playback",),
}
#: String fields of a ``Channel`` the controller reads.
_CHANNEL_TEXT = ("id", "name")

#: Event types the controller acts on (counted by name in
#: :attr:`EventCounts.received`; every other type is :data:`OTHER`).
ACTED_ON: tuple[str, ...] = tuple(_REQUIRED)
#: Key for event types the controller does not act on.
OTHER = "other"

#: Why a message was dropped, as a fixed code (a metric label): a BINARY
#: message (ARI sends only TEXT), not UTF-8, not JSON, JSON nested too
#: deep, JSON but not an object, no ``type``, a field of the wrong type
#: (``args`` items included), a field its event type requires missing.
REASONS: tuple[str, ...] = (
    "binary", "not_utf8", "not_json", "too_deep", "not_object", "no_type", "bad_field", "missing_field",
)

#: Distinct reason texts :attr:`EventCounts.malformed` keeps; later new
#: texts are counted under :data:`MORE_REASONS`.
MAX_REASON_TEXTS = 32
MORE_REASONS = "other reasons"


class Rejected(NamedTuple):
    """
    A dropped message: ``code`` (one of :data:`REASONS`) and ``why``, a
    short text for the log and the operator's status.
    """

    code: str
    why: str


def _check(event: dict[str, Any]) -> Optional[Rejected]:
    kind = event.get("type")
    if not isinstance(kind, str) or not kind:
        return Rejected("no_type", "no event type")
    for field, want in _FIELD_TYPES.items():
        if field in event and not isinstance(event[field], want):
            return Rejected("bad_field", f"{kind}: {field} is not a{'n object' if want is dict else ' list'}")
    for field in _REQUIRED.get(kind, ()):
        if field not in event:
            return Rejected("missing_field", f"{kind} without {field}")
    args = event.get("args")
    if args is not None and not all(isinstance(a, str) for a in args):
        return Rejected("bad_field", f"{kind}: args are not all strings")
    channel = event.get("channel")
    if channel is not None:
        if not isinstance(channel.get("id"), str) or not channel["id"]:
            return Rejected("bad_field", f"{kind}: channel without a string id")
        for field in _CHANNEL_TEXT[1:]:
            if field in channel and not isinstance(channel[field], str):
                return Rejected("bad_field", f"{kind}: channel {field} is not a string")
        if "channelvars" in channel and not isinstance(channel["channelvars"], dict):
            return Rejected("bad_field", f"{kind}: channel channelvars is not an object")
    return None


def check_event(event: dict[str, Any]) -> Optional[str]:
    """
    Why ``event`` (a decoded JSON object) is not an ARI event the
    controller can act on, or ``None`` if it is.

    Checks only what the controller reads: ``type`` is a non-empty string;
    ``channel``, ``args`` and ``playback`` have their model's type when
    present (``args`` a list of strings; a channel's ``id`` and ``name``
    strings, its ``channelvars`` an object), and the types we act on carry
    the fields ARI always sends with them.  Unknown types and fields pass.
    """
    rejected = _check(event)
    return None if rejected is None else rejected.why


def parse_event(payload: bytes) -> Union[dict[str, Any], Rejected]:
    """
    One TEXT message of the events socket: the event, or why it was
    dropped (:class:`Rejected`).  Never raises: not UTF-8, not JSON, JSON
    nested deeper than the parser's recursion limit (a ``RecursionError``,
    not a ``ValueError``), a number too long to convert, or an event
    :func:`check_event` rejects are all reasons.
    """
    try:
        event = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        return Rejected("not_utf8", "not UTF-8")
    except ValueError:
        return Rejected("not_json", "not JSON")
    except RecursionError:
        return Rejected("too_deep", "JSON nested too deep")
    if not isinstance(event, dict):
        return Rejected("not_object", "not a JSON object")
    rejected = _check(event)
    return event if rejected is None else rejected


def decode_event(payload: bytes) -> Union[dict[str, Any], str]:
    """
    :func:`parse_event` with the reason as text: the event, or why it is
    malformed (a short reason for the log).  Never raises.
    """
    event = parse_event(payload)
    return event.why if isinstance(event, Rejected) else event


class EventCounts:
    """
    What the events socket received, for ``/metrics`` and the status: plain
    counters, never reset (a metric exporter reads them as counters).

    :ivar received: events handed to the owner, by type: each of
        :data:`ACTED_ON`, and :data:`OTHER` for every type the controller
        does not act on.  All keys present from the start (at 0).
    :ivar dropped: messages dropped as malformed, by code: each of
        :data:`REASONS`, all present from the start (at 0).
    :ivar malformed: the same drops by reason text (what the log says), at
        most :data:`MAX_REASON_TEXTS` texts, later new ones under
        :data:`MORE_REASONS`.  For an operator; not a metric label (the
        texts may quote the peer's event type).
    """

    def __init__(self) -> None:
        self.received: dict[str, int] = dict.fromkeys((*ACTED_ON, OTHER), 0)
        self.dropped: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.malformed: dict[str, int] = {}

    def accepted(self, event: dict[str, Any]) -> None:
        """Count an event handed to the owner."""
        kind = event.get("type")
        key = kind if kind in self.received else OTHER
        self.received[key] += 1

    def rejected(self, rejected: Rejected) -> None:
        """Count a dropped message."""
        self.dropped[rejected.code] = self.dropped.get(rejected.code, 0) + 1
        why = rejected.why
        if why not in self.malformed and len(self.malformed) >= MAX_REASON_TEXTS:
            why = MORE_REASONS
        self.malformed[why] = self.malformed.get(why, 0) + 1
