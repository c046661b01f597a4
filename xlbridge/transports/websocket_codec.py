"""
Asterisk chan_websocket control (TEXT) messages, sans I/O.

Wire facts (PROTOCOLS.md section 10):

- BINARY messages are raw audio in the channel's format, no header; their
  formats and encoding live in :mod:`xlbridge.transports.websocket_media`
  (at most :data:`~xlbridge.transports.websocket_media.MAX_MESSAGE` bytes,
  which also bounds a MEDIA_START's ``optimal_frame_size`` here).
- TEXT messages are control, in one of two formats chosen per channel
  (``f(json)`` or ``chan_websocket.conf``): plain text, ``NAME key:value
  key:value`` (``ERROR``'s ``error_text`` runs to the end and may hold
  spaces; ``MEDIA_MARK_PROCESSED id`` has a bare id), or JSON objects with
  an ``"event"`` key.  Commands go back in the same format: ``NAME id`` or
  ``{"command":"NAME","correlation_id":"id"}``; Asterisk ignores a command
  over :data:`MAX_COMMAND` bytes, so :func:`command` refuses to make one.

:func:`parse_event` turns one TEXT message into a typed event, or a
:class:`Malformed` token naming the :class:`DropReason` to count: it never
raises for bad input.  The format is detected per message (JSON starts with
``{``), since the channel's setting is only known from the first message.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Optional, Union

import attrs

from xlbridge.events import DropReason
from xlbridge.transports.websocket_media import MAX_MESSAGE

#: Longest command Asterisk acts on, in bytes; longer ones are ignored.
MAX_COMMAND = 128
#: Largest ``ptime`` (ms per frame) a MEDIA_START may state; Asterisk's
#: formats use 10-150 ms.
MAX_PTIME = 1000
#: Asterisk's frame queue: MEDIA_XOFF at this many queued frames...
XOFF_LEVEL = 900
#: ...MEDIA_XON once below this many...
XON_LEVEL = 800
#: ...and a message arriving at this many is dropped whole, silently.
QUEUE_FULL = 1000


class ControlFormat(enum.Enum):
    """
    How a channel's TEXT messages are written.
    """

    PLAIN = "plain-text"
    JSON = "json"


# -- events (Asterisk -> app) ----------------------------------------------------


@attrs.frozen
class MediaStart:
    """
    The first TEXT message: the channel is up.

    :ivar optimal_frame_size: bytes per frame Asterisk re-frames into.
    :ivar ptime: milliseconds per frame (Asterisk plays one per ptime).
    :ivar channel_variables: JSON format only (plain text has none).
    """

    connection_id: str
    channel: str
    format: str
    optimal_frame_size: int
    ptime: int
    channel_id: Optional[str] = None
    channel_variables: dict[str, str] = attrs.field(factory=dict)
    control: ControlFormat = ControlFormat.PLAIN


@attrs.frozen
class Status:
    """
    Reply to ``GET_STATUS``; ``queue_length`` in frames.
    """

    queue_length: int
    xon_level: int
    xoff_level: int
    queue_full: bool
    bulk_media: bool
    media_paused: bool


@attrs.frozen
class MarkProcessed:
    """
    Every frame queued before ``MARK_MEDIA correlation_id`` went to the core.
    """

    correlation_id: str


@attrs.frozen
class BufferingCompleted:
    """
    The remainder sent at ``STOP_MEDIA_BUFFERING correlation_id`` was played.
    """

    correlation_id: str


@attrs.frozen
class QueueDrained:
    """
    One-shot answer to ``REPORT_QUEUE_DRAINED``: the queue is empty.
    """


@attrs.frozen
class XOff:
    """
    The queue reached :data:`XOFF_LEVEL` frames: stop sending.
    """


@attrs.frozen
class XOn:
    """
    The queue fell below :data:`XON_LEVEL` frames: sending may resume.
    """


@attrs.frozen
class DtmfEnd:
    """
    The caller released a key.
    """

    digit: str


@attrs.frozen
class Error:
    """
    Asterisk refused a command; ``error_text`` without its trailing newline.
    """

    error_text: str


@attrs.frozen
class Unknown:
    """
    A well-formed event this module does not know (a newer Asterisk).
    """

    name: str


@attrs.frozen
class Malformed:
    """
    A TEXT message that was discarded: count ``reason``.

    :ivar detail: what was wrong, for a log line.
    """

    reason: DropReason
    detail: str


Event = Union[MediaStart, Status, MarkProcessed, BufferingCompleted, QueueDrained, XOff, XOn, DtmfEnd, Error, Unknown]
Token = Union[Event, Malformed]

_BARE: dict[str, Union[type[QueueDrained], type[XOff], type[XOn]]] = {
    "QUEUE_DRAINED": QueueDrained, "MEDIA_XOFF": XOff, "MEDIA_XON": XOn,
}
_WITH_ID: dict[str, Union[type[MarkProcessed], type[BufferingCompleted]]] = {
    "MEDIA_MARK_PROCESSED": MarkProcessed, "MEDIA_BUFFERING_COMPLETED": BufferingCompleted,
}
_KNOWN = frozenset({"MEDIA_START", "STATUS", "DTMF_END", "ERROR", *_BARE, *_WITH_ID})


class _Bad(Exception):
    """A field is missing or has the wrong type (internal to parsing)."""


def parse_event(text: Union[str, bytes]) -> Token:
    """
    One TEXT message from Asterisk, as a typed event or a
    :class:`Malformed` token (``websocket_malformed``); never raises.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return Malformed(DropReason.WEBSOCKET_MALFORMED, "not UTF-8")
    stripped = text.strip()
    if not stripped:
        return Malformed(DropReason.WEBSOCKET_MALFORMED, "empty control message")
    try:
        if stripped.startswith("{"):
            return _from_json(stripped)
        return _from_plain(stripped)
    except _Bad as e:
        return Malformed(DropReason.WEBSOCKET_MALFORMED, str(e))


def _from_json(text: str) -> Token:
    try:
        msg = json.loads(text)
    except ValueError:
        raise _Bad("bad JSON") from None
    if not isinstance(msg, dict):
        raise _Bad("JSON control message is not an object")
    name = msg.get("event")
    if not isinstance(name, str) or not name:
        raise _Bad("JSON control message without an event name")
    return _event(name, msg, ControlFormat.JSON)


def _from_plain(text: str) -> Token:
    name, _, rest = text.partition(" ")
    if name not in _KNOWN:
        return _event(name, {}, ControlFormat.PLAIN)
    fields: dict[str, Any] = {}
    rest = rest.strip()
    if name in _WITH_ID:
        # "MEDIA_MARK_PROCESSED m1": the id is bare, and may be absent.
        fields["correlation_id"] = rest
        return _event(name, fields, ControlFormat.PLAIN)
    if name == "ERROR":
        head, sep, tail = rest.partition("error_text:")
        if sep:
            fields["error_text"] = tail
        rest = head
    for word in rest.split():
        key, sep, value = word.partition(":")
        if not sep or not key:
            raise _Bad(f"{name}: field {word[:40]!r} is not key:value")
        fields[key] = value
    return _event(name, fields, ControlFormat.PLAIN)


def _event(name: str, f: dict[str, Any], control: ControlFormat) -> Token:
    if name == "MEDIA_START":
        variables = f.get("channel_variables", {})
        if not isinstance(variables, dict):
            raise _Bad("MEDIA_START: channel_variables is not an object")
        frame_size, ptime = _int(f, "optimal_frame_size"), _int(f, "ptime")
        # A frame must fit one message (we send whole frames, at most
        # MAX_MESSAGE bytes each: a bigger frame left no whole frame to
        # send, and the sender divided by zero); 0 is passthrough, refused
        # by the leg with its own reason.
        if not 0 <= frame_size <= MAX_MESSAGE:
            raise _Bad(f"MEDIA_START: optimal_frame_size {frame_size} is outside 0..{MAX_MESSAGE}")
        if not 0 <= ptime <= MAX_PTIME:
            raise _Bad(f"MEDIA_START: ptime {ptime} is outside 0..{MAX_PTIME} ms")
        return MediaStart(
            connection_id=_text(f, "connection_id"),
            channel=_text(f, "channel"),
            format=_text(f, "format"),
            optimal_frame_size=frame_size,
            ptime=ptime,
            channel_id=_text(f, "channel_id") if "channel_id" in f else None,
            channel_variables={str(k): str(v) for k, v in variables.items()},
            control=control,
        )
    if name == "STATUS":
        return Status(
            _int(f, "queue_length"), _int(f, "xon_level"), _int(f, "xoff_level"),
            _bool(f, "queue_full"), _bool(f, "bulk_media"), _bool(f, "media_paused"),
        )
    if name in _WITH_ID:
        cid = f.get("correlation_id", "")
        if not isinstance(cid, str):
            raise _Bad(f"{name}: correlation_id is not a string")
        return _WITH_ID[name](cid)
    if name in _BARE:
        return _BARE[name]()
    if name == "DTMF_END":
        digit = _text(f, "digit")
        if len(digit) != 1:
            raise _Bad(f"DTMF_END: digit {digit[:10]!r} is not one character")
        return DtmfEnd(digit)
    if name == "ERROR":
        return Error(_text(f, "error_text").rstrip("\r\n"))
    if not name.replace("_", "").isalnum():
        raise _Bad(f"event name {name[:40]!r} is not a name")
    return Unknown(name)


def _text(f: dict[str, Any], key: str) -> str:
    value = f.get(key)
    if not isinstance(value, str):
        raise _Bad(f"{key} missing or not a string")
    return value


def _int(f: dict[str, Any], key: str) -> int:
    value = f.get(key)
    if isinstance(value, bool):
        raise _Bad(f"{key} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return int(value)
    raise _Bad(f"{key} missing or not an integer")


def _bool(f: dict[str, Any], key: str) -> bool:
    value = f.get(key)
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _Bad(f"{key} missing or not a boolean")


# -- commands (app -> Asterisk) ----------------------------------------------------

#: The commands :func:`command` writes.
COMMANDS = frozenset(
    {
        "ANSWER",
        "HANGUP",
        "START_MEDIA_BUFFERING",
        "STOP_MEDIA_BUFFERING",
        "MARK_MEDIA",
        "FLUSH_MEDIA",
        "PAUSE_MEDIA",
        "CONTINUE_MEDIA",
        "REPORT_QUEUE_DRAINED",
        "GET_STATUS",
    }
)


def command(name: str, correlation_id: Optional[str] = None, control: ControlFormat = ControlFormat.PLAIN) -> str:
    """
    One command as a TEXT message in the channel's ``control`` format:
    ``NAME id`` or ``{"command":"NAME","correlation_id":"id"}``.

    :raises ValueError: for an unknown command, an id with whitespace (it
        would end the plain-text id) or a message over :data:`MAX_COMMAND`
        bytes, which Asterisk would silently ignore.
    """
    if name not in COMMANDS:
        raise ValueError(f"unknown chan_websocket command {name!r}")
    if correlation_id is not None and (not correlation_id or any(c.isspace() for c in correlation_id)):
        raise ValueError(f"correlation id {correlation_id!r} is empty or holds whitespace")
    if control is ControlFormat.JSON:
        msg: dict[str, str] = {"command": name}
        if correlation_id is not None:
            msg["correlation_id"] = correlation_id
        text = json.dumps(msg, separators=(",", ":"))
    else:
        text = name if correlation_id is None else f"{name} {correlation_id}"
    if len(text.encode("utf-8")) > MAX_COMMAND:
        raise ValueError(f"command of {len(text.encode('utf-8'))} bytes exceeds Asterisk's {MAX_COMMAND}")
    return text
