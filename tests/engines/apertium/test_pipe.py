"""
Tests for :mod:`xlbridge.engines.apertium.pipe`: one pipeline's process
protocol, connected to a fake process and a
:class:`~twisted.internet.task.Clock`.
"""

from __future__ import annotations

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.apertium.pipe import ApertiumPipe
from xlbridge.engines.apertium.text import NullFramer

from tests.engines.fake_processes import FIRST_PID, FakeProcess


class ApertiumPipeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.replies: list[tuple[ApertiumPipe, bytes]] = []
        self.failures: list[tuple[ApertiumPipe, str]] = []
        self.pipe = ApertiumPipe("eng-spa", lambda p, r: self.replies.append((p, r)),
                                 lambda p, why: self.failures.append((p, why)))
        self.process = FakeProcess(FIRST_PID)
        self.pipe.makeConnection(self.process)  # type: ignore[arg-type]

    def test_replies(self) -> None:
        self.pipe.send(b"Hello.\n\0")
        self.assertEqual(bytes(self.process.written), b"Hello.\n\0")
        self.pipe.outReceived(b"Ho")
        self.pipe.outReceived(b"la.\n\0Adi")
        self.pipe.outReceived(b"os.\n\0")
        self.assertEqual(self.replies, [(self.pipe, b"Hola.\n"), (self.pipe, b"Adios.\n")])
        self.assertEqual((self.pipe.replies, self.failures), (2, []))

    def test_first_trouble_reported_once(self) -> None:
        """stderr output is a failure; the exit that follows is not reported again."""
        self.pipe.errReceived(b"lt-proc: oops")
        self.pipe.processEnded(Failure(ProcessTerminated(exitCode=1)))
        [(pipe, why)] = self.failures
        self.assertIs(pipe, self.pipe)
        self.assertIn("wrote to stderr: 'lt-proc: oops'", why)
        self.assertTrue(self.pipe.ended)

    def test_no_replies_after_a_failure(self) -> None:
        self.pipe.errReceived(b"oops")
        self.pipe.outReceived(b"Hola.\n\0")
        self.assertEqual(self.replies, [])

    def test_endless_reply(self) -> None:
        self.pipe.framer = NullFramer(max_bytes=10)
        self.pipe.outReceived(b"x" * 11)
        [(_, why)] = self.failures
        self.assertIn("no NUL in 11 bytes", why)

    def test_exit(self) -> None:
        self.pipe.processEnded(Failure(ProcessDone(0)))
        [(_, why)] = self.failures
        self.assertIn("exited", why)

    def test_kill(self) -> None:
        """Without a process group of its own, the shell gets the SIGKILL; once ended, nothing."""
        self.pipe.kill()
        self.assertEqual(self.process.signals, ["KILL"])
        self.pipe.processEnded(Failure(ProcessTerminated(signal=9)))
        self.pipe.kill()
        self.assertEqual(self.process.signals, ["KILL"])

    def test_close(self) -> None:
        """End of input; a kill after the grace time; fires when it exited."""
        clock = Clock()
        done = self.pipe.close(clock, grace_s=1.0)
        self.assertTrue(self.process.stdin_closed)
        clock.advance(1.0)
        self.assertEqual(self.process.signals, ["KILL"])
        self.assertNoResult(done)
        self.pipe.processEnded(Failure(ProcessTerminated(signal=9)))
        self.successResultOf(done)
        self.successResultOf(self.pipe.close(clock))

    def test_close_exits_in_time(self) -> None:
        clock = Clock()
        done = self.pipe.close(clock, grace_s=1.0)
        self.pipe.processEnded(Failure(ProcessDone(0)))
        self.successResultOf(done)
        self.assertEqual((clock.getDelayedCalls(), self.process.signals), ([], []))
