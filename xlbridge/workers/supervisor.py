"""
Keeps N worker processes running: a Twisted service that spawns them,
forwards their log lines, restarts one that died (with backoff), and stops
them all when it stops.

It knows nothing about what the workers do: a ``command(k)`` callable says
how to start worker ``k`` (0-based), and ``on_started`` / ``on_exited``
callbacks let the owner react (e.g. rescue a dead worker's calls).

Restart policy, per worker: an exit within ``stable_after`` seconds of the
start is a *quick* failure.  The n-th quick failure in a row waits
``min_backoff * 2**(n-1)`` seconds (at most ``max_backoff``) before the
restart; an exit after a stable run restarts after ``min_backoff`` and
clears the streak.  From 3 quick failures in a row the exit line is
followed by a crash-loop error.  A spawn that raises counts as a quick
failure too.

The process's end is taken from ``processExited`` (the process is gone),
not only ``processEnded`` (which also waits for every copy of its pipes to
close), so a grandchild holding a pipe open cannot delay a restart.

Each worker's stdin is a pipe from the supervisor that stays open while
the supervisor lives; :class:`ParentWatch` (worker side) stops the worker
when it reads end-of-file there, so a supervisor killed with SIGKILL does
not leave orphans holding the ports its next workers need.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.error import ProcessExitedAlready, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessTransport, IReactorProcess, IReactorTime
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from xlbridge.workers.childlog import MAX_LINE, LineSplitter, parse_line

#: ``command(k)`` -> (executable, argv including argv[0], environment).
Command = Callable[[int], tuple[str, Sequence[str], Mapping[str, str]]]

#: Quick failures in a row from which the crash-loop error is logged.
CRASH_LOOP = 3

#: After SIGKILL, how long (s) stopService still waits for a process that
#: will not die (stuck in the kernel) before it gives up on it.
KILL_GRACE = 5.0

_LEVEL_OF_RAW = {1: LogLevel.info, 2: LogLevel.warn}  # unparsed stdout / stderr lines


def describe_exit(reason: Failure) -> str:
    """``reason`` (a ProcessDone/ProcessTerminated failure) as short text:
    ``exited with code 3``, ``killed by signal 9``, ``exited normally``."""
    value = reason.value
    signal = getattr(value, "signal", None)
    code = getattr(value, "exitCode", None)
    if signal is not None:
        return f"killed by signal {signal}"
    if code:
        return f"exited with code {code}"
    if code == 0 or not isinstance(value, ProcessTerminated):
        return "exited normally"
    return f"ended ({value})"


class _WorkerProtocol(ProcessProtocol):
    """One run of one worker: forwards its output, reports its end once."""

    def __init__(self, worker: "_Worker") -> None:
        self.worker = worker
        self.pid: Optional[int] = None
        self.gone = False
        self._splitters = {1: LineSplitter(worker.supervisor.max_line), 2: LineSplitter(worker.supervisor.max_line)}
        #: level and namespace of the last header line per fd, for continuations
        self._last: dict[int, tuple[LogLevel, Optional[str]]] = {}

    def connectionMade(self) -> None:
        self.pid = getattr(self.transport, "pid", None)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        splitter = self._splitters.get(childFD)
        if splitter is None:
            return
        before = splitter.cut
        self._forward(childFD, splitter.feed(data))
        self.worker.lines_cut += splitter.cut - before

    def childConnectionLost(self, childFD: int) -> None:
        splitter = self._splitters.get(childFD)
        if splitter is not None:
            self._forward(childFD, splitter.flush())

    def _forward(self, fd: int, lines: list[str]) -> None:
        for line in lines:
            parsed = parse_line(line)
            if parsed.level is not None:
                level, namespace = parsed.level, parsed.namespace
                self._last[fd] = (level, namespace)
            elif parsed.continuation and fd in self._last:
                level, namespace = self._last[fd]
            else:
                level, namespace = _LEVEL_OF_RAW.get(fd, LogLevel.info), None
            self.worker.forward(level, namespace, parsed.text, self.pid)

    def processExited(self, reason: Failure) -> None:
        self._gone(reason)

    def processEnded(self, reason: Failure) -> None:
        self._gone(reason)

    def _gone(self, reason: Failure) -> None:
        if not self.gone:
            self.gone = True
            self.worker.exited(self, reason)

    def signal(self, name: str) -> None:
        """Send signal ``name`` ("TERM", "KILL") unless the process is gone."""
        if self.gone or self.transport is None:
            return
        try:
            self.transport.signalProcess(name)  # type: ignore[attr-defined]
        except ProcessExitedAlready:
            pass
        except OSError as e:
            self.worker.supervisor.log.warn("worker {worker}: SIG{signal} failed: {error}",
                                            worker=self.worker.k, signal=name, error=e)


class _Worker:
    """Worker ``k``'s slot: its current run, counters and restart timer."""

    def __init__(self, supervisor: "WorkerSupervisor", k: int) -> None:
        self.supervisor = supervisor
        self.k = k
        self.log = Logger(namespace=f"xlbridge.worker.{k}")
        self.proto: Optional[_WorkerProtocol] = None
        self.started_at: Optional[float] = None
        self.restarts = 0        # spawns after the first
        self.spawns = 0
        self.streak = 0          # quick failures in a row
        self.lines_cut = 0
        self.last_exit: Optional[str] = None
        self.retry: Optional[IDelayedCall] = None
        self._end_waiters: list[Deferred[None]] = []

    @property
    def up(self) -> bool:
        return self.proto is not None and not self.proto.gone

    def forward(self, level: LogLevel, namespace: Optional[str], text: str, pid: Optional[int]) -> None:
        """One line of the child's output, into our log under ``xlbridge.worker.K``."""
        if namespace:
            self.log.emit(level, "w{worker}| [{child_namespace}] {text}",
                          worker=self.k, child_namespace=namespace, text=text, pid=pid)
        else:
            self.log.emit(level, "w{worker}| {text}", worker=self.k, text=text, pid=pid)

    def spawn(self) -> None:
        """Start the worker now; a failure to start is retried like a quick exit."""
        sup = self.supervisor
        self.retry = None
        if not sup.running or self.up:
            return
        proto = _WorkerProtocol(self)
        try:
            executable, argv, env = sup.command(self.k)
            transport: IProcessTransport = sup.reactor.spawnProcess(proto, executable, list(argv), env=dict(env))
        except Exception:
            sup.log.failure("worker {worker} failed to start", worker=self.k)
            self.streak += 1
            self.last_exit = "failed to start"
            self._schedule(self._backoff(), "retrying")
            return
        if self.spawns:
            self.restarts += 1
        self.spawns += 1
        self.proto, self.started_at = proto, sup.clock.seconds()
        if proto.pid is None:
            proto.pid = getattr(transport, "pid", None)
        sup.log.info("worker {worker} started (pid {pid})", worker=self.k, pid=proto.pid)
        sup.call_hook(sup.on_started, self.k, proto.pid)

    def exited(self, proto: _WorkerProtocol, reason: Failure) -> None:
        sup = self.supervisor
        if proto is not self.proto:
            return
        ran = sup.clock.seconds() - (self.started_at or 0.0)
        why = describe_exit(reason)
        self.last_exit = why
        head = "worker {worker} (pid {pid}) {why} after {ran:.1f} s"
        if not sup.running:
            # Stopping: SIGTERM was ours, and twistd ends by re-raising it.
            stopped = why in ("exited normally", "killed by signal 15")
            sup.log.info("worker {worker} (pid {pid}) stopped after {ran:.1f} s" if stopped else head,
                         worker=self.k, pid=proto.pid, why=why, ran=ran)
        else:
            self.streak = self.streak + 1 if ran < sup.stable_after else 0
            delay = self._backoff()
            sup.log.warn(head + "; restarting in {delay:g} s", worker=self.k, pid=proto.pid, why=why, ran=ran,
                         delay=delay)
            self._schedule(delay, "next try")
        sup.call_hook(sup.on_exited, self.k, why)
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            d.callback(None)

    def _backoff(self) -> float:
        sup = self.supervisor
        if self.streak <= 0:
            return sup.min_backoff
        return float(min(sup.max_backoff, sup.min_backoff * 2 ** min(self.streak - 1, 64)))

    def _schedule(self, delay: float, what: str) -> None:
        if self.streak >= CRASH_LOOP:
            self.supervisor.log.error(
                "worker {worker} is crash-looping: {streak} quick exits in a row; {what} in {delay:g} s",
                worker=self.k, streak=self.streak, what=what, delay=delay)
        self.retry = self.supervisor.clock.callLater(delay, self.spawn)

    def cancel_retry(self) -> None:
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None

    def ended(self) -> "Deferred[None]":
        """Fires when the current run (if any) has exited."""
        d: Deferred[None] = Deferred()
        if self.up:
            self._end_waiters.append(d)
        else:
            d.callback(None)
        return d

    def status(self) -> dict[str, Any]:
        sup = self.supervisor
        now = sup.clock.seconds()
        return {
            "worker": self.k,
            "pid": self.proto.pid if self.up and self.proto is not None else None,
            "up": self.up,
            "uptime_s": round(now - self.started_at, 3) if self.up and self.started_at is not None else None,
            "restarts": self.restarts,
            "quick_failures": self.streak,
            "crash_looping": self.streak >= CRASH_LOOP,
            "last_exit": self.last_exit,
            "next_start_in_s": round(self.retry.getTime() - now, 3) if self.retry and self.retry.active() else None,
            "lines_cut": self.lines_cut,
        }


class WorkerSupervisor(Service):
    """
    Keeps ``count`` worker processes running while the service runs.

    :param reactor: spawns the processes (``IReactorProcess``); also the
        clock unless ``clock`` is given.
    :param command: ``command(k)`` -> ``(executable, argv, env)`` for worker
        ``k`` in ``range(count)``; called at every (re)start.
    :param min_backoff: seconds before restarting after a stable run, and
        after the first quick failure; doubles per quick failure in a row.
    :param max_backoff: cap of the restart delay, seconds.
    :param stable_after: seconds of uptime after which an exit is not a
        quick failure (and clears the streak).
    :param stop_timeout: seconds between SIGTERM and SIGKILL in
        :meth:`stopService`.
    :param on_started: ``(k, pid)`` after each successful spawn.
    :param on_exited: ``(k, reason text)`` after each exit of a started
        worker (also while stopping); not for a spawn that failed.
    :param max_line: longest child log line kept, bytes.
    """

    log = Logger()

    def __init__(self, reactor: IReactorProcess, count: int, command: Command, *,
                 min_backoff: float = 0.5, max_backoff: float = 30.0, stable_after: float = 30.0,
                 stop_timeout: float = 15.0,
                 on_started: Optional[Callable[[int, Optional[int]], None]] = None,
                 on_exited: Optional[Callable[[int, str], None]] = None,
                 clock: Optional[IReactorTime] = None, max_line: int = MAX_LINE) -> None:
        if count < 1:
            raise ValueError(f"worker count must be at least 1, not {count}")
        self.reactor = reactor
        self.clock: IReactorTime = clock if clock is not None else reactor  # type: ignore[assignment]
        self.count = count
        self.command = command
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.stop_timeout = stop_timeout
        self.on_started = on_started
        self.on_exited = on_exited
        self.max_line = max_line
        self.workers = [_Worker(self, k) for k in range(count)]
        self._stopping: Optional[Deferred[None]] = None

    def startService(self) -> None:
        super().startService()
        self._stopping = None
        for worker in self.workers:
            worker.spawn()

    def stopService(self) -> "Deferred[None]":
        """
        No more restarts; SIGTERM every live worker, SIGKILL those still
        alive after ``stop_timeout``.  Fires when all have exited (or
        :data:`KILL_GRACE` seconds after the SIGKILL, for a process that
        cannot die).
        """
        super().stopService()
        if self._stopping is not None:
            return self._stopping
        for worker in self.workers:
            worker.cancel_retry()
        live = [w for w in self.workers if w.up]
        if not live:
            return succeed(None)
        started = self.clock.seconds()
        done: Deferred[None] = Deferred()
        self._stopping = done

        def finish(_: object = None) -> None:
            if done.called:
                return
            for call in (kill, give_up):
                if call.active():
                    call.cancel()
            stuck = [w.k for w in self.workers if w.up]
            if stuck:
                self.log.error("workers {stuck} did not exit after SIGKILL; not waiting any longer", stuck=stuck)
            else:
                self.log.info("all workers stopped ({s:.1f} s)", s=self.clock.seconds() - started)
            self._stopping = None
            done.callback(None)

        self.log.info("stopping {n} worker(s): SIGTERM", n=len(live))
        for worker in live:
            if worker.proto is not None:
                worker.proto.signal("TERM")
        kill = self.clock.callLater(self.stop_timeout, self._kill_stragglers)
        give_up = self.clock.callLater(self.stop_timeout + KILL_GRACE, finish)
        DeferredList([w.ended() for w in live]).addCallback(finish)
        return done

    def _kill_stragglers(self) -> None:
        for worker in self.workers:
            if worker.up and worker.proto is not None:
                self.log.warn("worker {worker} (pid {pid}) still running {t:g} s after SIGTERM: SIGKILL",
                              worker=worker.k, pid=worker.proto.pid, t=self.stop_timeout)
                worker.proto.signal("KILL")

    def call_hook(self, hook: Optional[Callable[..., None]], *args: Any) -> None:
        """Call an owner's callback; its exceptions are logged, never raised."""
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            self.log.failure("worker callback {hook!r}{args!r} failed", hook=hook, args=args)

    def status(self) -> list[dict[str, Any]]:
        """Per worker: pid, up, uptime_s, restarts, quick_failures,
        crash_looping, last_exit, next_start_in_s, lines_cut."""
        return [w.status() for w in self.workers]
