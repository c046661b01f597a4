"""
The call transcript: every event as one JSON line in a file.

Writing and flushing a file can block (a slow disk, NFS), so the reactor
thread only puts the serialised line on a bounded queue; one writer thread
appends and flushes each line as it comes, so nothing written is lost if the
process dies, and stopping the service drains the queue before it returns.
When the queue is full (the disk cannot keep up) lines are dropped and
counted, never blocking the reactor.
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from xlbridge.events import Event, event_to_dict

_STOP = object()


class EventLogService(Service):
    """
    Appends events to ``path`` as JSON lines.

    :param reactor: used only to wait for the writer thread on stop.
    :param max_queued: lines waiting at most; more are dropped and counted.

    :ivar written: lines written.
    :ivar dropped: lines dropped because the queue was full.
    :ivar errors: write errors (the file is reopened on the next line).
    """

    log = Logger()

    def __init__(self, path: str, reactor: IReactorFromThreads, max_queued: int = 10000) -> None:
        self.path = path
        self.reactor = reactor
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
            line = json.dumps(event_to_dict(event), ensure_ascii=False, default=str)
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
        pool = ThreadPool(0, 1, "xlbridge-events-join")
        pool.start()
        d: Deferred[None] = deferToThreadPool(self.reactor, pool, thread.join, 10.0)

        def joined(result: Any) -> Any:
            pool.stop()
            return result

        d.addBoth(joined)
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
