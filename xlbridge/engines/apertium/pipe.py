"""
:class:`ApertiumPipe`, the process protocol of one running Apertium
pipeline, for :mod:`xlbridge.engines.apertium.mt`.
"""

from __future__ import annotations

import os
import signal
from typing import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from xlbridge.engines.apertium.text import FrameTooLong, NullFramer


class ApertiumPipe(ProcessProtocol):
    """
    One running pipeline process for one direction.  It frames stdout into
    replies and reports them, and reports the first sign of trouble (exit,
    stderr output, an endless reply) once; its owner decides what to do.

    :param mode: the Apertium mode, for logs.
    :param on_reply: called with ``(pipe, reply bytes)`` per NUL-ended reply.
    :param on_failure: called once with ``(pipe, reason)``.
    """

    log = Logger()

    def __init__(
        self,
        mode: str,
        on_reply: Callable[["ApertiumPipe", bytes], None],
        on_failure: Callable[["ApertiumPipe", str], None],
    ) -> None:
        self.mode = mode
        self.framer = NullFramer()
        #: Replies received so far (0 = the transducers are not loaded yet).
        self.replies = 0
        self.ended = False
        self._on_reply = on_reply
        self._on_failure = on_failure
        self._failed = False
        self._end_waiters: list[Deferred[None]] = []

    def outReceived(self, data: bytes) -> None:
        try:
            replies = self.framer.feed(data)
        except FrameTooLong as e:
            self._fail(e.message)
            return
        for reply in replies:
            if self._failed:
                return
            self.replies += 1
            self._on_reply(self, reply)

    def errReceived(self, data: bytes) -> None:
        self._fail(f"wrote to stderr: {data[:300].decode('utf-8', 'replace')!r}")

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            d.callback(None)
        self._fail(f"exited ({reason.value})")

    def _fail(self, reason: str) -> None:
        if not self._failed:
            self._failed = True
            self._on_failure(self, reason)

    def send(self, data: bytes) -> None:
        """
        Write one encoded sentence
        (:func:`~xlbridge.engines.apertium.text.encode_sentence`).
        """
        assert self.transport is not None
        self.transport.write(data)

    def kill(self) -> None:
        """
        SIGKILL every stage: the whole process group when the pipeline leads
        its own (spawned through ``setsid``), else the shell.
        """
        pid = getattr(self.transport, "pid", None)
        if self.ended or pid is None:
            return
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
                return
        except OSError:
            pass
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except Exception:
            pass

    def close(self, reactor: IReactorTime, grace_s: float = 1.0) -> "Deferred[None]":
        """
        End the process: close its stdin (each stage exits at end of input)
        and kill it if it has not exited within ``grace_s``.  Fires when it
        has exited.
        """
        if self.ended or self.transport is None:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._end_waiters.append(d)
        killer = reactor.callLater(grace_s, self.kill)

        def stop_killer(result: None) -> None:
            if killer.active():
                killer.cancel()

        d.addCallback(stop_killer)
        self.transport.closeStdin()
        return d
