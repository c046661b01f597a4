"""
Tests for :mod:`xlbridge.workers.supervisor`: spawning, restart backoff,
crash-loop warning, stopping, spawn failures and log forwarding, on a fake
process reactor and task.Clock; then a few runs with real processes.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from xlbridge.workers.parentwatch import ParentWatch
from xlbridge.workers.supervisor import WorkerSupervisor, describe_exit

from tests.workers.fakes import FIRST_PID, ProcessReactor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def capture_log(case: SynchronousTestCase) -> list[LogEvent]:
    """Every log event until the end of the test."""
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    case.addCleanup(globalLogPublisher.removeObserver, events.append)
    return events


def texts(events: list[LogEvent], level: Optional[LogLevel] = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e.get("log_level") == level]


def command(k: int) -> tuple[str, Sequence[str], Mapping[str, str]]:
    return "/usr/bin/worker", ["worker", "--worker", f"{k}/3"], {"WORKER": str(k)}


class FakeProcessTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.events = capture_log(self)
        self.started: list[tuple[int, Optional[int]]] = []
        self.exited: list[tuple[int, str]] = []

    def supervisor(self, count: int = 1, cmd: Callable[[int], Any] = command, **kw: Any) -> WorkerSupervisor:
        sup = WorkerSupervisor(self.reactor, count, cmd, on_started=lambda k, pid: self.started.append((k, pid)),
                               on_exited=lambda k, why: self.exited.append((k, why)), **kw)
        sup.startService()
        return sup

    def test_spawns_all(self) -> None:
        """startService spawns each worker with its own argv and env."""
        sup = self.supervisor(3)
        self.assertEqual([(p.executable, p.args, p.env) for p in self.reactor.spawned],
                         [command(k) for k in range(3)])
        self.assertEqual(self.started, [(k, FIRST_PID + k) for k in range(3)])
        self.assertEqual([(s["worker"], s["pid"], s["up"], s["restarts"]) for s in sup.status()],
                         [(k, FIRST_PID + k, True, 0) for k in range(3)])

    def test_restart_backoff_doubles(self) -> None:
        """Quick exits in a row wait 0.5, 1, 2 ... s before the restart."""
        sup = self.supervisor()
        for n, delay in enumerate([0.5, 1.0, 2.0, 4.0]):
            self.reactor.advance(1.0)
            self.reactor.spawned[-1].end(signal=9)
            self.assertEqual(len(self.reactor.spawned), n + 1)
            self.assertEqual(sup.status()[0]["next_start_in_s"], delay)
            self.reactor.advance(delay - 0.01)
            self.assertEqual(len(self.reactor.spawned), n + 1)
            self.reactor.advance(0.01)
            self.assertEqual(len(self.reactor.spawned), n + 2)
        self.assertIn(f"worker 0 (pid {FIRST_PID}) killed by signal 9 after 1.0 s; restarting in 0.5 s",
                      texts(self.events, LogLevel.warn))
        status = sup.status()[0]
        self.assertEqual((status["restarts"], status["quick_failures"], status["up"]), (4, 4, True))
        self.assertEqual(self.exited, [(0, "killed by signal 9")] * 4)

    def test_backoff_capped(self) -> None:
        sup = self.supervisor(max_backoff=3.0)
        for _ in range(4):
            self.reactor.spawned[-1].end(code=1)
            delay = sup.status()[0]["next_start_in_s"]
            self.reactor.advance(delay)
        self.assertEqual(delay, 3.0)

    def test_stable_run_resets_streak(self) -> None:
        """An exit after stable_after seconds up restarts after min_backoff and clears the streak."""
        sup = self.supervisor(stable_after=30.0)
        for _ in range(3):
            self.reactor.spawned[-1].end(code=1)
            self.reactor.advance(sup.status()[0]["next_start_in_s"])
        self.assertEqual(sup.status()[0]["quick_failures"], 3)
        self.reactor.advance(30.0)
        self.reactor.spawned[-1].end(code=3)
        status = sup.status()[0]
        self.assertEqual((status["quick_failures"], status["next_start_in_s"], status["last_exit"]),
                         (0, 0.5, "exited with code 3"))
        self.assertIn(f"worker 0 (pid {FIRST_PID + 3}) exited with code 3 after 30.0 s; restarting in 0.5 s",
                      texts(self.events))

    def test_crash_loop_warning(self) -> None:
        """From the third quick exit in a row, a distinct crash-loop line is logged."""
        sup = self.supervisor()
        loops: list[str] = []
        for _ in range(5):
            self.reactor.spawned[-1].end(code=1)
            loops = [t for t in texts(self.events, LogLevel.error) if "crash-looping" in t]
            if len(self.reactor.spawned) < 3:
                self.assertEqual(loops, [])
            self.reactor.advance(sup.status()[0]["next_start_in_s"])
        self.assertEqual(loops, [
            "worker 0 is crash-looping: 3 quick exits in a row; next try in 2 s",
            "worker 0 is crash-looping: 4 quick exits in a row; next try in 4 s",
            "worker 0 is crash-looping: 5 quick exits in a row; next try in 8 s",
        ])

    def test_stop_terminates_all(self) -> None:
        """stopService SIGTERMs every worker and fires once all have exited; no restarts."""
        sup = self.supervisor(2)
        d = sup.stopService()
        self.assertEqual([p.signals for p in self.reactor.spawned], [["TERM"], ["TERM"]])
        fired: list[object] = []
        d.addCallback(fired.append)
        self.reactor.spawned[0].end()
        self.assertEqual(fired, [])
        self.reactor.spawned[1].end(code=1)
        self.assertEqual(fired, [None])
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(self.exited, [(0, "exited normally"), (1, "exited with code 1")])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertFalse(any(s["up"] for s in sup.status()))
        # An end we asked for reads as a stop; any other end as what it was.
        logged = texts(self.events)
        self.assertIn(f"worker 0 (pid {FIRST_PID}) stopped after 0.0 s", logged)
        self.assertIn(f"worker 1 (pid {FIRST_PID + 1}) exited with code 1 after 0.0 s", logged)

    def test_stop_kills_after_timeout(self) -> None:
        sup = self.supervisor(2, stop_timeout=15.0)
        d = sup.stopService()
        self.reactor.spawned[0].end()
        self.reactor.advance(14.9)
        self.assertEqual([p.signals for p in self.reactor.spawned], [["TERM"], ["TERM"]])
        self.reactor.advance(0.1)
        self.assertEqual([p.signals for p in self.reactor.spawned], [["TERM"], ["TERM", "KILL"]])
        self.assertNoResult(d)
        self.reactor.spawned[1].end(signal=9)
        self.successResultOf(d)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_stop_gives_up_on_unkillable(self) -> None:
        """A process that survives SIGKILL does not hang the shutdown for ever."""
        sup = self.supervisor(stop_timeout=1.0)
        d = sup.stopService()
        self.reactor.advance(1.0)
        self.assertNoResult(d)
        self.reactor.advance(5.0)
        self.successResultOf(d)
        self.assertTrue(any("did not exit after SIGKILL" in t for t in texts(self.events, LogLevel.error)))

    def test_stop_cancels_pending_restart(self) -> None:
        """A worker waiting for its restart is not restarted once stopping; stop fires for the rest."""
        sup = self.supervisor(2)
        self.reactor.spawned[0].end(signal=11)
        d = sup.stopService()
        self.assertEqual(self.reactor.spawned[0].signals, [])
        self.reactor.advance(10)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.reactor.spawned[1].end()
        self.successResultOf(d)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_stop_with_nothing_running(self) -> None:
        """Stopping is immediate when no worker is alive (dead, or never started)."""
        self.reactor.failures.append(OSError("no fork"))
        sup = self.supervisor(2)
        self.reactor.spawned[0].end(code=2)
        self.successResultOf(sup.stopService())
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.flushLoggedErrors(OSError)

    def test_spawn_failure_retried(self) -> None:
        """A spawn that raises is logged and retried with backoff, like a quick exit."""
        self.reactor.failures.extend([OSError("EMFILE"), OSError("EMFILE")])
        sup = self.supervisor()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(sup.status()[0]["up"], False)
        self.reactor.advance(0.5)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.reactor.advance(0.99)
        self.assertEqual(self.reactor.spawned, [])
        self.reactor.advance(0.01)
        self.assertEqual(len(self.reactor.spawned), 1)
        status = sup.status()[0]
        self.assertEqual((status["up"], status["restarts"], status["quick_failures"]), (True, 0, 2))
        self.assertEqual(self.exited, [])

    def test_command_failure_retried(self) -> None:
        calls: list[int] = []

        def flaky(k: int) -> tuple[str, Sequence[str], Mapping[str, str]]:
            calls.append(k)
            if len(calls) == 1:
                raise KeyError("no config")
            return command(k)

        self.supervisor(cmd=flaky)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 1)

    def test_callback_errors_logged(self) -> None:
        """Exceptions in on_started / on_exited are logged and change nothing."""
        def boom(*args: object) -> None:
            raise RuntimeError("owner bug")

        sup = WorkerSupervisor(self.reactor, 1, command, on_started=boom, on_exited=boom)
        sup.startService()
        self.reactor.spawned[0].end(code=1)
        self.reactor.advance(0.5)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_forwards_lines_with_level(self) -> None:
        """Child lines go to namespace xlbridge.worker.K with the level they carry."""
        self.supervisor(2)
        proc = self.reactor.spawned[1]
        proc.output(b"warn [xlbridge.ari.client] slow ")
        proc.output(b"answer\n\tsecond line\nerror [x] bad\nplain stdout\n")
        proc.output(b"Fatal Python error\nno newline at end", fd=2)
        proc.end(code=1)
        forwarded = [(e["log_namespace"], e["log_level"], formatEvent(e), e["pid"])
                     for e in self.events if e.get("log_namespace") == "xlbridge.worker.1"]
        pid = FIRST_PID + 1
        self.assertEqual(forwarded, [
            ("xlbridge.worker.1", LogLevel.warn, "w1| [xlbridge.ari.client] slow answer", pid),
            ("xlbridge.worker.1", LogLevel.warn, "w1| [xlbridge.ari.client] second line", pid),
            ("xlbridge.worker.1", LogLevel.error, "w1| [x] bad", pid),
            ("xlbridge.worker.1", LogLevel.info, "w1| plain stdout", pid),
            ("xlbridge.worker.1", LogLevel.warn, "w1| Fatal Python error", pid),
            ("xlbridge.worker.1", LogLevel.warn, "w1| no newline at end", pid),
        ])

    def test_long_line_cut_and_counted(self) -> None:
        sup = self.supervisor(max_line=100)
        self.reactor.spawned[0].output(b"info [a] " + b"x" * 1000 + b"\nafter\n")
        forwarded = texts([e for e in self.events if e.get("log_namespace") == "xlbridge.worker.0"])
        self.assertEqual(forwarded, ["w0| [a] " + "x" * 91 + " [cut]", "w0| after"])
        self.assertEqual(sup.status()[0]["lines_cut"], 1)

    def test_describe_exit(self) -> None:
        from twisted.internet.error import ProcessDone, ProcessTerminated
        from twisted.python.failure import Failure
        self.assertEqual(describe_exit(Failure(ProcessDone(0))), "exited normally")
        self.assertEqual(describe_exit(Failure(ProcessTerminated(exitCode=4))), "exited with code 4")
        self.assertEqual(describe_exit(Failure(ProcessTerminated(signal=15))), "killed by signal 15")


class RealProcessTests(TestCase):
    """The supervisor with real children (``tests/workers/child.py``)."""

    timeout = 10

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> "Deferred[None]":
        """Fires once ``condition()`` holds (polled every 20 ms); fails after ``timeout`` s."""
        d: Deferred[None] = Deferred()
        deadline = global_reactor.seconds() + timeout  # type: ignore[attr-defined]

        def poll() -> None:
            if condition():
                d.callback(None)
            elif global_reactor.seconds() > deadline:  # type: ignore[attr-defined]
                d.errback(AssertionError(f"timed out waiting for {condition}"))
            else:
                global_reactor.callLater(0.02, poll)  # type: ignore[attr-defined]

        poll()
        return d

    @inlineCallbacks
    def test_forward_restart_stop(self) -> Any:
        events = capture_log(self)
        exited: list[tuple[int, str]] = []
        env = dict(os.environ, PYTHONPATH=ROOT)

        def cmd(k: int) -> tuple[str, Sequence[str], Mapping[str, str]]:
            return sys.executable, [sys.executable, os.path.join(HERE, "child.py"), str(k)], env

        sup = WorkerSupervisor(global_reactor, 2, cmd, min_backoff=0.05,  # type: ignore[arg-type]
                               on_exited=lambda k, why: exited.append((k, why)))
        sup.startService()
        self.addCleanup(lambda: sup.stopService() if sup.running else None)

        def worker_lines(k: int) -> list[tuple[LogLevel, str]]:
            return [(e["log_level"], formatEvent(e)) for e in events
                    if e.get("log_namespace") == f"xlbridge.worker.{k}"]

        yield self.wait_for(lambda: all(("w%d| [child.test] ready %d" % (k, k)) in
                                        [t for _, t in worker_lines(k)] for k in range(2)))
        lines = worker_lines(1)
        self.assertIn((LogLevel.info, "w1| [child.test] hello from 1"), lines)
        self.assertIn((LogLevel.warn, "w1| [child.test] careful in 1"), lines)
        self.assertIn((LogLevel.critical, "w1| [child.test] boom in 1"), lines)  # log.failure's level
        self.assertIn((LogLevel.critical, "w1| [child.test]     1 / 0"), lines)  # its traceback
        self.assertIn((LogLevel.critical, "w1| [child.test] builtins.ZeroDivisionError: division by zero"), lines)
        self.assertIn((LogLevel.warn, "w1| raw stderr line from 1"), lines)

        first_pid = sup.status()[0]["pid"]
        sup.workers[0].proto.signal("KILL")  # type: ignore[union-attr]
        yield self.wait_for(lambda: [t for _, t in worker_lines(0)].count("w0| [child.test] ready 0") == 2)
        self.assertNotEqual(sup.status()[0]["pid"], first_pid)
        self.assertEqual(exited, [(0, "killed by signal 9")])
        self.assertTrue(any(f"worker 0 (pid {first_pid}) killed by signal 9 after" in t
                            for t in texts(events, LogLevel.warn)))

        pids = [s["pid"] for s in sup.status()]
        yield sup.stopService()
        self.assertFalse(any(s["up"] for s in sup.status()))
        self.assertEqual(sorted(exited[1:]), [(0, "exited normally"), (1, "exited normally")])
        for pid in pids:
            self.assertRaises(ProcessLookupError, os.kill, pid, 0)


class ParentWatchTests(TestCase):
    """The worker side: end-of-file on the supervisor's pipe stops the worker."""

    timeout = 5

    @inlineCallbacks
    def test_stops_on_eof_only(self) -> Any:
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        gone: list[None] = []
        watch = ParentWatch(global_reactor, r, on_gone=lambda: gone.append(None))  # type: ignore[arg-type]
        watch.startService()
        self.addCleanup(lambda: watch.stopService() if watch.running else None)
        os.write(w, b"anything the supervisor might write")
        d: Deferred[None] = Deferred()
        global_reactor.callLater(0.05, d.callback, None)  # type: ignore[attr-defined]
        yield d
        self.assertEqual(gone, [])
        os.close(w)
        yield RealProcessTests.wait_for(self, lambda: gone == [None])  # type: ignore[arg-type]
