"""
A clock that "spawns" processes without running anything, for unit tests
of the code that owns child processes (the ASR workers, the Apertium
pipelines): :class:`ProcessClock` connects each process protocol to a
:class:`FakeProcess` that records what the parent does to it; the test
plays the child by calling the protocol's ``outReceived``,
``errReceived`` and ``processEnded``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from twisted.internet.interfaces import IProcessProtocol
from twisted.internet.task import Clock

from xlbridge.engines.local_asr.wire import Framer, Message

#: Fake pids start far above any real pid (``pid_max`` is at most 2**22),
#: so code that signals a process group by pid reaches nothing.
FIRST_PID = 2 ** 30


class FakeProcess:
    """A process transport that records what the parent does to it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written = bytearray()
        self.stdin_closed = False
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def closeStdin(self) -> None:
        self.stdin_closed = True

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)

    def requests(self) -> list[Message]:
        """What was written, as ASR worker messages."""
        return Framer().feed(bytes(self.written))


class ProcessClock(Clock):
    """
    A :class:`Clock` whose ``spawnProcess`` connects the protocol to a
    :class:`FakeProcess`; ``spawned`` holds ``(protocol, executable, args,
    env, process)`` per spawn, oldest first.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[Any, str, list[str], Optional[Mapping[str, str]], FakeProcess]] = []

    def spawnProcess(self, proto: IProcessProtocol, executable: str, args: Sequence[str],
                     env: Optional[Mapping[str, str]] = None, path: Optional[str] = None, **kwargs: Any) -> FakeProcess:
        process = FakeProcess(FIRST_PID + len(self.spawned))
        self.spawned.append((proto, executable, list(args), env, process))
        proto.makeConnection(process)  # type: ignore[arg-type]
        return process
