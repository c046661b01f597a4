"""
Tests for :mod:`xlbridge.engines.local_asr.worker_link`: one worker's
process protocol and one leg's stream on it, over a slot and a pool played
by the test (what :class:`~xlbridge.engines.local_asr.worker_link.LinkSlot`
and :class:`~xlbridge.engines.local_asr.worker_link.LinkPool` ask for), a
:class:`~twisted.internet.task.Clock` and a fake process.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from twisted.internet.error import ProcessDone
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, Logger, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import EngineError, EngineRequestError, EngineUnavailable, SpeechStarted
from xlbridge.engines.local_asr.backends import Batch
from xlbridge.engines.local_asr.stream_clock import FRAME_BYTES
from xlbridge.engines.local_asr.wire import (
    AUDIO, CLOSE, EVENTS, FINISH, FINISHED, OPEN, Framer, Message, StreamParams, dump, encode, event_to_json,
    parse_audio,
)
from xlbridge.engines.local_asr.worker_link import WorkerLost, WorkerProtocol, WorkerStream
from xlbridge.engines.pocketsphinx.asr import SphinxModel

from tests.engines.fake_processes import FIRST_PID, FakeProcess

FRAME = b"\1\0" * (FRAME_BYTES // 2)


class FakePool:
    """The pool as the link sees it."""

    log = Logger()

    def __init__(self, clock: Clock) -> None:
        self.reactor = clock
        self.idle_decoders = 3


class FakeSlot:
    """A slot that records what its worker's protocol and streams hand it."""

    def __init__(self, clock: Clock) -> None:
        self.pool = FakePool(clock)
        self.streams: dict[int, WorkerStream] = {}
        self.sent = bytearray()
        self.replies: list[Message] = []
        self.ends: list[Failure] = []

    def send(self, data: bytes) -> None:
        self.sent += data

    def reply(self, proto: WorkerProtocol, msg: Message) -> None:
        self.replies.append(msg)

    def ended(self, proto: WorkerProtocol, reason: Failure) -> None:
        self.ends.append(reason)

    def requests(self) -> list[Message]:
        return Framer().feed(bytes(self.sent))


class WorkerProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.slot = FakeSlot(self.clock)
        self.proto = WorkerProtocol(self.slot)
        self.process = FakeProcess(FIRST_PID)
        self.proto.makeConnection(self.process)  # type: ignore[arg-type]
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_replies_framed_for_the_slot(self) -> None:
        wire = encode(EVENTS, 7, b"{}") + encode(FINISHED, 8, b"{}")
        for i in range(len(wire)):
            self.proto.outReceived(wire[i:i + 1])
        self.assertEqual(self.slot.replies, [Message(EVENTS, 7, b"{}"), Message(FINISHED, 8, b"{}")])
        self.assertEqual(self.proto.pid, FIRST_PID)

    def test_bad_framing_kills_it(self) -> None:
        self.proto.outReceived(b"\x00\x00\x00\x01garbage")
        self.assertEqual(self.process.signals, ["KILL"])
        self.assertEqual([e["log_level"] for e in self.logged], [LogLevel.error])

    def test_reply_that_fails_kills_it(self) -> None:
        def broken(proto: WorkerProtocol, msg: Message) -> None:
            raise ValueError("bad reply")

        self.slot.reply = broken  # type: ignore[method-assign]
        self.proto.outReceived(encode(EVENTS, 7, b"{}"))
        self.assertEqual(self.process.signals, ["KILL"])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_stderr_relayed_line_by_line(self) -> None:
        """``LEVEL message`` lines are logged at their level; anything else at info; partial lines wait."""
        self.proto.errReceived(b"error decoder gone\nwarn slow\ninfo rea")
        self.proto.errReceived(b"dy\nsomething else\n")
        self.assertEqual([(e["log_level"], e["text"]) for e in self.logged],
                         [(LogLevel.error, "decoder gone"), (LogLevel.warn, "slow"), (LogLevel.info, "ready"),
                          (LogLevel.info, "something else")])
        self.assertTrue(all(e["pid"] == FIRST_PID for e in self.logged))

    def test_stop(self) -> None:
        """CLOSE and end of input, SIGKILL after the timeout; fires when it exited."""
        done = self.proto.stop(self.clock, 2.0)
        self.assertEqual([m.kind for m in Framer().feed(bytes(self.process.written))], [CLOSE])
        self.assertTrue(self.process.stdin_closed)
        self.proto.send(b"more")  # nothing more once stopping
        self.assertEqual(len(Framer().feed(bytes(self.process.written))), 1)
        self.clock.advance(2.0)
        self.assertEqual(self.process.signals, ["KILL"])
        self.assertNoResult(done)
        self.proto.processEnded(Failure(ProcessDone(0)))
        self.successResultOf(done)
        self.assertEqual(len(self.slot.ends), 1)
        self.successResultOf(self.proto.stop(self.clock, 2.0))  # already ended

    def test_exit_before_the_timeout(self) -> None:
        done = self.proto.stop(self.clock, 2.0)
        self.proto.processEnded(Failure(ProcessDone(0)))
        self.successResultOf(done)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.process.signals, [])


class WorkerStreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.slot = FakeSlot(self.clock)
        self.lost: list[EngineError] = []
        self.back: list[Optional[EngineError]] = []
        self.stream = WorkerStream(self.slot, 5, SphinxModel(), StreamParams(), self.lost.append, self.back.append)
        self.slot.streams[5] = self.stream

    def answer(self, kind: int = EVENTS, **body: Any) -> None:
        """The worker answers the oldest request of the stream."""
        self.stream.reply(Message(kind, 5, dump({"events": [], "frames": 0, "seconds": 0.5, **body})))

    def test_open(self) -> None:
        self.stream.attach()
        [opened] = self.slot.requests()
        self.assertEqual((opened.kind, opened.stream), (OPEN, 5))
        self.assertEqual(json.loads(opened.payload),
                         {"model": {"engine": "pocketsphinx", "hmm": None, "lm": None, "jsgf": None, "dict": None},
                          "params": StreamParams().to_json(), "idle": 3, "skip": 0})

    def test_batch_held_until_attached(self) -> None:
        d = self.stream.run(Batch([FRAME], 2, False))
        self.assertEqual(self.slot.requests(), [])
        self.stream.attach()
        self.assertEqual([m.kind for m in self.slot.requests()], [OPEN, AUDIO])
        self.assertEqual(parse_audio(self.slot.requests()[1].payload), (2, [FRAME]))
        self.answer()  # the OPEN
        self.assertNoResult(d)
        self.clock.advance(4.0)
        self.answer(events=[event_to_json(SpeechStarted(0.1, 0.0))])
        batch = self.successResultOf(d)
        self.assertEqual((batch.events, batch.seconds), ([SpeechStarted(0.1, 4.0)], 0.5))
        self.assertEqual(self.stream.accounted, 3)

    def test_final_batch_ends_the_stream(self) -> None:
        self.stream.attach()
        self.answer()
        d = self.stream.run(Batch([FRAME], 0, True, b"tail"))
        self.assertEqual([m.kind for m in self.slot.requests()], [OPEN, AUDIO, FINISH])
        self.assertEqual(self.slot.requests()[2].payload, b"tail")
        self.answer()
        self.assertNoResult(d)
        self.answer(FINISHED)
        self.successResultOf(d)
        self.assertEqual(self.slot.streams, {})

    def test_error_reply(self) -> None:
        self.stream.attach()
        self.answer()
        d = self.stream.run(Batch([FRAME], 0, False))
        self.answer(error={"message": "no such model", "retryable": False})
        self.assertIn("no such model", str(self.failureResultOf(d, EngineRequestError).value))
        self.assertEqual(self.stream.accounted, 1)  # the worker answered for the frame
        d = self.stream.run(Batch([FRAME], 0, False))
        self.answer(error={"message": "decoder crashed"})
        self.failureResultOf(d, EngineUnavailable)

    def test_lost_then_back(self) -> None:
        """The leg hears of the death first, then the batch in flight fails; re-opened, it is told."""
        self.stream.attach()
        self.answer()
        order: list[str] = []
        self.stream.on_lost = lambda err: order.append("lost")
        d = self.stream.run(Batch([FRAME], 0, False))
        d.addErrback(lambda f: order.append(f.type.__name__))
        self.stream.lost(WorkerLost("local-asr", "the worker died"))
        self.assertEqual(order, ["lost", "WorkerLost"])
        self.assertFalse(self.stream.attached)
        self.stream.attach()  # on the respawned worker
        self.answer()
        self.assertEqual(self.back, [None])
        self.stream.lost(WorkerLost("local-asr", "again"))
        self.stream.attach()
        self.answer(error={"message": "cannot load", "retryable": False})
        [_, err] = self.back
        self.assertIsInstance(err, EngineRequestError)

    def test_abandon(self) -> None:
        """FINISH once; forgotten when the worker answered.  A detached stream is forgotten at once."""
        self.stream.attach()
        self.answer()
        self.stream.abandon()
        self.stream.abandon()
        self.assertEqual([m.kind for m in self.slot.requests()], [OPEN, FINISH])
        self.assertIn(5, self.slot.streams)
        self.answer(FINISHED)
        self.assertEqual(self.slot.streams, {})
        other = WorkerStream(self.slot, 6, SphinxModel(), StreamParams(), self.lost.append, self.back.append)
        self.slot.streams[6] = other
        other.abandon()
        self.assertEqual(self.slot.streams, {})

    def test_unexpected_reply_is_logged(self) -> None:
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.answer()
        [event] = logged
        self.assertEqual((event["log_level"], event["sid"]), (LogLevel.warn, 5))
