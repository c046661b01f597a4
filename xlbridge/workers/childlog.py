"""
The log wire between a worker process and its supervisor, both ends.

Worker side: :func:`observer` is the twistd ``--logger`` target
(``--logger xlbridge.workers.childlog.observer``).  twistd calls it with no
arguments *before* it redirects ``sys.stdout`` into the log, so the observer
keeps the real stdout (a pipe to the supervisor) and writes each event as
one line, UTF-8, flushed per event, without a timestamp (the supervisor's
own log adds one)::

    <level> [<namespace>] <formatted message>
    \t<continuation: more message lines, then the traceback of a failure>

Continuation lines start with a tab, so the supervisor can tell them from
raw output (a C library writing to fd 1, Python dying before twistd set up
logging) and give them the level of the event they belong to.

Supervisor side: :class:`LineSplitter` cuts the child's byte stream into
lines with a bounded buffer, and :func:`parse_line` recovers the level and
namespace of each line.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import BinaryIO, Optional, cast

import attr
from twisted.logger import ILogObserver, LogEvent, LogLevel, eventAsText
from zope.interface import implementer

#: Marks a line as the continuation of the previous event's line.
CONTINUATION = "\t"

#: Longest line (bytes) the supervisor keeps from a child; the rest is cut.
MAX_LINE = 64 * 1024

_LEVELS = {level.name: level for level in LogLevel.iterconstants()}
_HEADER = re.compile(r"^(debug|info|warn|error|critical) \[([^\]\s]*)\] ?(.*)$", re.DOTALL)


def format_event(event: LogEvent) -> str:
    """
    One event as the text the observer writes (without the final newline):
    a header line and tab-led continuation lines.  Empty if the event has
    nothing to say (no format, no failure).
    """
    text = eventAsText(event, includeTraceback=True, includeTimestamp=False, includeSystem=False)
    if not text:
        return ""
    level = event.get("log_level") or LogLevel.info
    namespace = str(event.get("log_namespace") or "-")
    system = event.get("log_system")
    if namespace == "log_legacy" and system and system != "-":
        namespace = str(system)  # twisted.python.log callers: the system says more
    namespace = re.sub(r"[\]\s]", "_", namespace)
    first, *rest = text.rstrip("\n").split("\n")
    lines = [f"{level.name} [{namespace}] {first}"]
    lines.extend(CONTINUATION + line for line in rest)
    return "\n".join(lines)


@implementer(ILogObserver)
class LineObserver:
    """
    Writes each event to a binary stream as :func:`format_event` lines.

    Thread-safe (threads may log); write errors are swallowed, since a
    worker whose supervisor is gone has nobody to tell.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: LogEvent) -> None:
        try:
            text = format_event(event)
        except Exception:  # a broken event must not take logging down
            text = "error [xlbridge.workers.childlog] unformattable log event: " + repr(event)[:500]
        if not text:
            return
        data = (text + "\n").encode("utf-8", "backslashreplace")
        with self._lock:
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):
                pass


def observer(stream: Optional[BinaryIO] = None) -> LineObserver:
    """
    The twistd ``--logger`` factory: a :class:`LineObserver` on ``stream``,
    by default the process's stdout as it is now (twistd calls this before
    it swaps ``sys.stdout`` for a logging file).
    """
    if stream is None:
        stream = cast(BinaryIO, getattr(sys.stdout, "buffer", None) or getattr(sys.__stdout__, "buffer"))
    return LineObserver(stream)


@attr.s(frozen=True, auto_attribs=True)
class ChildLine:
    """One parsed line: its level, the child's namespace (``None`` if the
    line did not say), and the text; ``continuation`` if it was tab-led."""

    level: Optional[LogLevel]
    namespace: Optional[str]
    text: str
    continuation: bool = False


def parse_line(line: str) -> ChildLine:
    """
    Parse one line written by :class:`LineObserver`.  A line in no known
    form comes back with ``level=None`` and the whole line as text.
    """
    if line.startswith(CONTINUATION):
        return ChildLine(None, None, line[len(CONTINUATION):], continuation=True)
    m = _HEADER.match(line)
    if m is None:
        return ChildLine(None, None, line)
    return ChildLine(_LEVELS[m.group(1)], m.group(2), m.group(3))


class LineSplitter:
    """
    Cuts a child's byte stream into text lines, keeping at most
    ``max_line`` bytes buffered: a longer line is cut at ``max_line``
    (marked with `` [cut]``), the rest of it up to the next newline is
    dropped, and ``cut`` counts such lines.  That bounds what a child can
    make us hold, whatever it writes.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.cut = 0
        self._buf = b""
        self._dropping = False  # inside the tail of a cut line

    def feed(self, data: bytes) -> list[str]:
        """The complete lines in ``data`` (and what came before it)."""
        out: list[str] = []
        while data:
            nl = data.find(b"\n")
            chunk, data = (data, b"") if nl < 0 else (data[:nl], data[nl + 1:])
            if self._dropping:
                if nl >= 0:
                    self._dropping = False
                continue
            self._buf += chunk
            if len(self._buf) > self.max_line:
                out.append(self._decode(self._buf[:self.max_line]) + " [cut]")
                self.cut += 1
                self._buf = b""
                self._dropping = nl < 0
            elif nl >= 0:
                out.append(self._decode(self._buf))
                self._buf = b""
        return out

    def flush(self) -> list[str]:
        """Whatever partial line is left (the stream ended)."""
        buf, self._buf, self._dropping = self._buf, b"", False
        return [self._decode(buf)] if buf else []

    @staticmethod
    def _decode(raw: bytes) -> str:
        return raw.rstrip(b"\r").decode("utf-8", "replace")
