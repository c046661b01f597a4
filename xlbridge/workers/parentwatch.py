"""
Worker side of :mod:`xlbridge.workers.supervisor`: a worker stops when its
supervisor is gone.

A supervisor killed with SIGKILL cannot stop its workers, and twistd
workers would keep running and holding their ports, so the next start
fails to bind.  Each worker's stdin is a pipe the supervisor holds open:
end-of-file on it means the supervisor is gone.
"""

from __future__ import annotations

import os
from typing import Callable, Optional

from twisted.application.service import Service
from twisted.internet import fdesc
from twisted.internet.interfaces import IReactorCore, IReactorFDSet, IReadDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["ParentWatch"]


@implementer(IReadDescriptor)
class _EndOfFileReader:
    """Reads and discards ``fd`` until end-of-file, then calls ``on_eof``."""

    def __init__(self, fd: int, on_eof: Callable[[], None]) -> None:
        self.fd = fd
        self.on_eof = on_eof

    def fileno(self) -> int:
        return self.fd

    def doRead(self) -> None:
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.on_eof()

    def connectionLost(self, reason: Failure) -> None:
        self.on_eof()  # epoll reports the writer's close as a hang-up, without a read

    def logPrefix(self) -> str:
        return "ParentWatch"


class ParentWatch(Service):
    """
    Worker side: stops the worker when its supervisor is gone, seen as
    end-of-file on ``fd`` (stdin, a pipe the supervisor holds open).

    Only for a process started by :class:`WorkerSupervisor`: under
    systemd or cron, stdin is ``/dev/null`` and would stop it at once.

    :param on_gone: what to do then; default ``reactor.stop``.
    """

    log = Logger()

    def __init__(self, reactor: IReactorFDSet, fd: int = 0, on_gone: Optional[Callable[[], None]] = None) -> None:
        self.reactor = reactor
        self.on_gone = on_gone
        self._reader = _EndOfFileReader(fd, self._gone)
        self._fired = False

    def startService(self) -> None:
        super().startService()
        fdesc.setNonBlocking(self._reader.fd)
        self.reactor.addReader(self._reader)

    def stopService(self) -> None:
        super().stopService()
        self.reactor.removeReader(self._reader)

    def _gone(self) -> None:
        self.reactor.removeReader(self._reader)
        if not self.running or self._fired:
            return
        self._fired = True
        self.log.warn("supervisor gone (end of file on fd {fd}): stopping", fd=self._reader.fd)
        if self.on_gone is not None:
            self.on_gone()
        else:
            reactor: IReactorCore = self.reactor  # type: ignore[assignment]
            reactor.stop()
