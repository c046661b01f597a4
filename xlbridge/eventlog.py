"""
The call transcript: every event as one JSON line in a file.

Writing and flushing a file can block (a slow disk, NFS), so the reactor
thread only puts the serialised line on a bounded queue; one writer thread
appends and flushes each line as it comes, so nothing written is lost if the
process dies, and stopping the service drains the queue before it returns.
When the queue is full (the disk cannot keep up) lines are dropped and
counted, never blocking the reactor.

With ``text=False`` (``events_text = false``) no word a caller said reaches
the file: every text field (:data:`TEXT_FIELDS`: transcripts, translations,
their sources, what was played or dropped) is replaced by its length in
characters (``text`` becomes ``text_chars``), and the events keep their
timing, latencies, reasons and counts.

:func:`read_events` reads such a file back.  A process killed outright
(SIGKILL, a power cut) may leave its last line cut short, since the writer
appends each line with one ``write`` the kernel may not have finished; the
reader skips that one final partial line, and refuses any other line that is
not JSON (that is damage, not an interrupted append).  So that a restart
after such a kill does not glue its first event to that fragment (making a
damaged line in the middle of the file), the service removes a final
partial line when it starts (:func:`end_partial_line`), with a warning.
"""

from __future__ import annotations

import json
import os
import queue
import stat
import threading
from typing import Any, Iterator, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from xlbridge.event_json import event_to_dict
from xlbridge.events import Event

_STOP = object()

#: Event fields that carry what callers said, or its translation.
TEXT_FIELDS = ("text", "source_text")


def without_text(record: dict[str, Any]) -> dict[str, Any]:
    """
    ``record`` (a serialised event) with each of :data:`TEXT_FIELDS`
    replaced by its length: ``{"text": "hola"}`` becomes
    ``{"text_chars": 4}``, in the same place.
    """
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in TEXT_FIELDS:
            out[f"{key}_chars"] = len(value) if isinstance(value, str) else None
        else:
            out[key] = value
    return out


class EventFileError(ValueError):
    """
    A line of an events file, other than a final partial one, is not a
    JSON object.

    :ivar path: the file.
    :ivar line: its 1-based line number.
    """

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: not an event ({reason})")
        self.path = path
        self.line = line


def read_events(path: str) -> Iterator[dict[str, Any]]:
    """
    The events of a ``--events`` file, one dict per line, in order.

    A last line with no newline that does not parse is what a process
    killed mid-append leaves (SIGKILL, a crash, a full disk): it is skipped,
    since every complete event before it is intact and one lost event is
    the best a killed writer can do.  A complete last line without its
    newline (the kill fell between the two) is still read.  Blank lines are
    skipped.  Any other line that is not a JSON object raises
    :class:`EventFileError` naming the line: that is damage to report, not
    to read past.
    """
    with open(path, "rb") as f:
        number = 0
        for raw in f:
            number += 1
            final_partial = not raw.endswith(b"\n")
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except ValueError as e:  # includes UnicodeDecodeError and JSONDecodeError
                if final_partial:
                    return
                raise EventFileError(path, number, str(e)) from None
            if not isinstance(record, dict):
                if final_partial:
                    return
                raise EventFileError(path, number, f"a JSON {type(record).__name__}, not an object")
            yield record


#: A final partial line longer than this is left alone (with a newline
#: after it): no event line is this long, so it is not ours to cut.
MAX_PARTIAL = 1024 * 1024


def end_partial_line(path: str) -> int:
    """
    Make ``path`` end at a line end before appending to it: a last line
    without its newline that is a whole JSON object (the writer died
    between the two) gets its newline; a partial one (it died mid-write)
    is cut off.  Other files (not regular, unreadable, a tail longer than
    :data:`MAX_PARTIAL`) only get the newline, or nothing.

    :return: the bytes cut off (0: nothing was).
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return 0
        with open(path, "r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0
            start, pos = 0, size
            while pos > 0 and size - pos <= MAX_PARTIAL:
                step = min(65536, pos)
                pos -= step
                f.seek(pos)
                newline = f.read(step).rfind(b"\n")
                if newline >= 0:
                    start = pos + newline + 1
                    break
            if size - start > MAX_PARTIAL:
                f.seek(size)
                f.write(b"\n")
                return 0
            f.seek(start)
            try:
                whole = isinstance(json.loads(f.read()), dict)
            except ValueError:
                whole = False
            if whole:
                f.seek(size)
                f.write(b"\n")
                return 0
            f.truncate(start)
            return size - start
    except OSError:
        return 0


class EventLogService(Service):
    """
    Appends events to ``path`` as JSON lines.

    :param reactor: used only to wait for the writer thread on stop.
    :param max_queued: lines waiting at most; more are dropped and counted.
    :param text: write what callers said; ``False`` writes its length
        instead (:func:`without_text`).

    :ivar written: lines written.
    :ivar dropped: lines dropped because the queue was full.
    :ivar errors: write errors (the file is reopened on the next line).
    """

    log = Logger()

    def __init__(
        self, path: str, reactor: IReactorFromThreads, max_queued: int = 10000, text: bool = True
    ) -> None:
        self.path = path
        self.reactor = reactor
        self.text = text
        self._queue: queue.Queue[Any] = queue.Queue(max_queued)
        self._thread: Optional[threading.Thread] = None
        self.written = 0
        self.dropped = 0
        self.errors = 0

    def __call__(self, event: Event) -> None:
        """
        Observer entry point: queue ``event`` (never blocks).
        """
        if not self.running:
            return
        try:
            record = event_to_dict(event)
            if not self.text:
                record = without_text(record)
            line = json.dumps(record, ensure_ascii=False, default=str)
        except Exception:
            self.errors += 1
            self.log.failure("cannot serialise event {event!r}", event=event)
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def startService(self) -> None:
        cut = end_partial_line(self.path)
        if cut:
            self.log.warn(
                "events file {path} ended with a partial line ({cut} bytes: the previous run was killed while "
                "writing it); removed it",
                path=self.path, cut=cut,
            )
        # Fail at start-up, not at the first event, if the file can't be opened.
        with open(self.path, "a", encoding="utf-8"):
            pass
        super().startService()
        self._thread = threading.Thread(target=self._run, name="xlbridge-events", daemon=True)
        self._thread.start()

    def stopService(self) -> "Deferred[None] | None":
        super().stopService()
        thread, self._thread = self._thread, None
        if thread is None:
            return None
        self._queue.put(_STOP)
        d: Deferred[None] = Deferred()

        def join() -> None:
            thread.join(10.0)
            self.reactor.callFromThread(d.callback, None)

        # A daemon thread (the writer is one too): a process that exits
        # without its reactor ever running, after a refused start, must not
        # wait for a thread that waits for the reactor.
        threading.Thread(target=join, name="xlbridge-events-join", daemon=True).start()
        return d

    def _run(self) -> None:
        f = None
        while True:
            line = self._queue.get()
            if line is _STOP:
                break
            try:
                if f is None:
                    f = open(self.path, "a", encoding="utf-8")
                f.write(line + "\n")
                f.flush()
                self.written += 1
            except OSError:
                self.errors += 1
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass
                f = None
        if f is not None:
            f.close()
