"""
A clock that "spawns" processes without running anything, for the
supervisor's unit tests: :class:`ProcessReactor` records each
``spawnProcess`` and connects the protocol to a :class:`FakeProcess`; the
test plays the child by feeding output and ending it with :meth:`FakeProcess.end`.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessProtocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

#: Fake pids start far above any real pid, so a stray signal reaches nothing.
FIRST_PID = 2 ** 30


class FakeProcess:
    """A process transport that records the signals it was sent."""

    def __init__(self, proto: Any, executable: str, args: list[str], env: Optional[Mapping[str, str]],
                 pid: int) -> None:
        self.proto = proto
        self.executable = executable
        self.args = args
        self.env = env
        self.pid: Optional[int] = pid
        self.signals: list[str] = []

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)

    def closeStdin(self) -> None:
        pass

    def output(self, data: bytes, fd: int = 1) -> None:
        """The child writes ``data`` to its stdout (1) or stderr (2)."""
        self.proto.childDataReceived(fd, data)

    def end(self, code: int = 0, signal: Optional[int] = None) -> None:
        """The child exits with ``code``, or is killed by ``signal``."""
        reason = Failure(ProcessDone(0) if code == 0 and signal is None
                         else ProcessTerminated(exitCode=None if signal else code, signal=signal))
        self.pid = None
        self.proto.processExited(reason)
        for fd in (0, 1, 2):
            self.proto.childConnectionLost(fd)
        self.proto.processEnded(reason)


class ProcessReactor(Clock):
    """
    A :class:`Clock` with ``spawnProcess``; ``spawned`` lists the
    :class:`FakeProcess` of each spawn, oldest first.  Put exceptions in
    ``failures`` to make the next spawns raise them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[FakeProcess] = []
        self.failures: list[Exception] = []

    def spawnProcess(self, proto: IProcessProtocol, executable: str, args: Sequence[str],
                     env: Optional[Mapping[str, str]] = None, path: Optional[str] = None,
                     **kwargs: Any) -> FakeProcess:
        if self.failures:
            raise self.failures.pop(0)
        process = FakeProcess(proto, executable, list(args), env, FIRST_PID + len(self.spawned))
        self.spawned.append(process)
        proto.makeConnection(process)  # type: ignore[arg-type]
        return process

    def live(self) -> list[FakeProcess]:
        return [p for p in self.spawned if p.pid is not None]
