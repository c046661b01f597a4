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
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger

from xlbridge.events import Event, event_to_dict

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
