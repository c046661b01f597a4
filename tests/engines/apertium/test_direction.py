"""
Tests for :mod:`xlbridge.engines.apertium.direction`: one translation
direction's queue, pipeline process, deadlines and restarts.

First with a fake process clock, the test playing both
``apertium-wblank-mode`` and the pipeline; then with pipelines that really
hang, crash or complain, from fake mode files run through the real
``apertium-wblank-mode`` on the real reactor (skipped when Apertium is not
installed).
"""

from __future__ import annotations

import os
from typing import Any, Generator

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from xlbridge.engines.apertium import settings as apertium_settings
from xlbridge.engines.apertium.direction import ApertiumCounters, Direction
from xlbridge.engines.apertium.mt import ApertiumMT
from xlbridge.engines.apertium.pipe import ApertiumPipe
from xlbridge.engines.apertium.settings import ApertiumSettings, apertium_available
from xlbridge.engines.apertium.text import encode_sentence
from xlbridge.engines.base import EngineUnavailable

from tests.engines.fake_processes import FakeProcess, ProcessClock

SKIP = None if apertium_available(ApertiumSettings()) else (
    "Apertium is not installed (apt-get install apertium apertium-eng-spa)")


class DirectionTests(SynchronousTestCase):
    """A direction on a fake process clock."""

    def setUp(self) -> None:
        modes = self.mktemp()
        os.mkdir(modes)
        with open(os.path.join(modes, "eng-spa.mode"), "w") as f:
            f.write("cat\n")
        self.patch(apertium_settings, "PROGRAMS", ("sh",))  # "installed"
        self.settings = ApertiumSettings(modes_dir=modes, timeout_s=1.0, first_timeout_s=3.0,
                                         backoff_initial_s=0.5, max_queue=2)
        self.clock = ProcessClock()
        self.counters = ApertiumCounters()
        self.direction = Direction(self.clock, self.settings, "eng-spa", self.counters)  # type: ignore[arg-type]

    def start(self) -> tuple[ApertiumPipe, FakeProcess]:
        """Answer ``apertium-wblank-mode`` with a script; the pipeline spawned to run it."""
        getter, _, args, _, _ = self.clock.spawned[-1]
        self.assertEqual(args[-2:], ["-z", self.settings.mode_path("eng-spa")])
        getter.outReceived(b"lt-proc -z eng-spa.bin\n")
        getter.processEnded(Failure(ProcessDone(0)))
        return self.pipeline()

    def pipeline(self) -> tuple[ApertiumPipe, FakeProcess]:
        pipe, _, args, _, process = self.clock.spawned[-1]
        assert isinstance(pipe, ApertiumPipe)
        self.assertIn("lt-proc -z eng-spa.bin", args)
        return pipe, process

    def test_translates(self) -> None:
        d = self.direction.submit("Hello.")
        pipe, process = self.start()
        self.assertEqual(bytes(process.written), encode_sentence("Hello."))
        self.clock.advance(0.25)
        pipe.outReceived(b"Hola.\n\0")
        self.assertEqual(self.successResultOf(d), "Hola.")
        self.assertEqual((self.counters.sentences, self.counters.last_latency_ms), (1, 250.0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_one_sentence_in_flight(self) -> None:
        """The rest wait their turn, in order, and the queue is bounded."""
        first, second = self.direction.submit("One."), self.direction.submit("Two.")
        refused = self.direction.submit("Three.")
        self.failureResultOf(refused, EngineUnavailable)
        self.assertEqual(self.counters.rejected, 1)
        pipe, process = self.start()
        self.assertEqual(bytes(process.written), encode_sentence("One."))
        pipe.outReceived(b"Uno.\n\0")
        self.assertEqual(bytes(process.written), encode_sentence("One.") + encode_sentence("Two."))
        pipe.outReceived(b"Dos.\n\0")
        self.assertEqual([self.successResultOf(first), self.successResultOf(second)], ["Uno.", "Dos."])

    def test_reply_after_the_deadline_but_before_the_second_look(self) -> None:
        """
        After a reactor stall the expired timer runs before the reply is
        read: it looks once more after this turn's I/O, and the reply wins.
        """
        d = self.direction.submit("Hello.")
        pipe, _ = self.start()
        # Due at the deadline too, but after the timer: the reply read in the same turn.
        self.clock.callLater(3.0, pipe.outReceived, b"Hola.\n\0")
        self.clock.advance(3.0)
        self.assertEqual(self.successResultOf(d), "Hola.")
        self.assertEqual((self.counters.timeouts, self.counters.restarts), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_timeout_is_not_retried(self) -> None:
        """No answer: the sentence fails, the pipeline is killed and respawned after the backoff."""
        d = self.direction.submit("Hello.")
        pipe, process = self.start()
        self.clock.advance(3.0)
        self.clock.advance(0)
        f = self.failureResultOf(d, EngineUnavailable)
        self.assertIn("no answer within 3 s", str(f.value))
        self.assertEqual((self.counters.timeouts, self.counters.failed), (1, 1))
        self.assertEqual(process.signals, ["KILL"])
        again = self.direction.submit("Hello again.")
        spawned = len(self.clock.spawned)
        self.clock.advance(0.49)
        self.assertEqual(len(self.clock.spawned), spawned)
        self.clock.advance(0.01)
        pipe2, process2 = self.pipeline()  # the script is known: no second apertium-wblank-mode
        self.assertIsNot(pipe2, pipe)
        self.assertEqual(self.counters.restarts, 1)
        pipe2.outReceived(b"Hola otra vez.\n\0")
        self.assertEqual(self.successResultOf(again), "Hola otra vez.")

    def test_crash_retries_the_sentence_once(self) -> None:
        d = self.direction.submit("Hello.")
        pipe, _ = self.start()
        pipe.processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertNoResult(d)
        self.clock.advance(0.5)
        pipe2, process2 = self.pipeline()
        self.assertEqual(bytes(process2.written), encode_sentence("Hello."))
        pipe2.processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertIn("failed twice", str(self.failureResultOf(d, EngineUnavailable).value))

    def test_output_nobody_asked_for(self) -> None:
        d = self.direction.submit("Hello.")
        pipe, process = self.start()
        pipe.outReceived(b"Hola.\n\0")
        self.successResultOf(d)
        pipe.outReceived(b"Otra.\n\0")
        self.assertEqual(process.signals, ["KILL"])
        self.assertIsNone(self.direction.pipe)

    def test_close(self) -> None:
        """What waits fails; the pipeline gets end of input, then a kill after a second."""
        d = self.direction.submit("Hello.")
        pipe, process = self.start()
        closed = self.direction.close()
        self.assertIn("closed", str(self.failureResultOf(d, EngineUnavailable).value))
        self.assertTrue(process.stdin_closed)
        self.clock.advance(1.0)
        self.assertEqual(process.signals, ["KILL"])
        self.assertNoResult(closed)
        pipe.processEnded(Failure(ProcessTerminated(signal=9)))
        self.successResultOf(closed)
        self.failureResultOf(self.direction.submit("Hello."), EngineUnavailable)


class FakePipelineTests(TestCase):
    """
    Pipelines that hang, crash or complain, from fake mode files (run
    through the real ``apertium-wblank-mode``, which adds ``-z`` to each
    stage).
    """

    skip = SKIP
    timeout = 10

    def engine(self, script: str, **kw: Any) -> ApertiumMT:
        modes = self.mktemp()
        os.mkdir(modes)
        with open(os.path.join(modes, "eng-spa.mode"), "w") as f:
            f.write(script + "\n")
        kw.setdefault("backoff_initial_s", 0.01)
        mt = ApertiumMT(reactor, ApertiumSettings(modes_dir=modes, **kw))
        self.addCleanup(mt.close)
        return mt

    @inlineCallbacks
    def test_hung_pipeline(self) -> Generator[Deferred[Any], Any, None]:
        """
        ``sort -z`` waits for the end of input, so it never answers: the
        sentence times out, the pipeline is killed and a new one started.
        """
        mt = self.engine("sort", first_timeout_s=0.3, timeout_s=0.2)
        d = mt.translate("Hello.", "en", "es")
        first = None
        while first is None:  # the mode script is read asynchronously
            yield deferLater(reactor, 0.01, lambda: None)
            first = mt.pipe("en", "es")
        f = yield self.assertFailure(d, EngineUnavailable)
        self.assertIn("no answer within 0.3 s", str(f))
        self.assertEqual(mt.counters.timeouts, 1)
        d = mt.translate("Hello again.", "en", "es")
        yield self.assertFailure(d, EngineUnavailable)
        self.assertEqual((mt.counters.timeouts, mt.counters.restarts), (2, 1))
        for _ in range(50):
            if first.ended:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(first.ended)
        self.assertIsNot(mt.pipe("en", "es"), first)

    @inlineCallbacks
    def test_crash_twice(self) -> Generator[Deferred[Any], Any, None]:
        """
        ``head -c 5`` exits after five bytes, so the retry crashes too.
        """
        mt = self.engine("head -c 5")
        f = yield self.assertFailure(mt.translate("Where is the nearest hospital?", "en", "es"), EngineUnavailable)
        self.assertIn("failed twice", str(f))
        self.assertEqual(mt.counters.restarts, 1)

    @inlineCallbacks
    def test_stderr_is_a_crash(self) -> Generator[Deferred[Any], Any, None]:
        mt = self.engine("sed -n 'w /dev/stderr'")
        f = yield self.assertFailure(mt.translate("Hello.", "en", "es"), EngineUnavailable)
        self.assertIn("stderr", str(f))
        self.assertEqual(mt.counters.restarts, 1)

    @inlineCallbacks
    def test_keeps_failing(self) -> Generator[Deferred[Any], Any, None]:
        """
        After ``max_failures`` in a row the waiting requests fail too.
        """
        mt = self.engine("head -c 5", max_failures=2)
        ds = [mt.translate(f"Sentence number {i}.", "en", "es") for i in range(4)]
        for d in ds:
            yield self.assertFailure(d, EngineUnavailable)
        self.assertEqual(mt.counters.failed, 4)
