"""
Tests for :mod:`xlbridge.engines.local_asr.backends`: the batches a leg
decodes, :func:`coalesce`, and :class:`ThreadBackend` driving a session
(here a recording stand-in, run inline instead of in a pool thread).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.base import ASREvent, EagerEnd, SpeechStarted, Transcript, TurnResumed
from xlbridge.engines.local_asr.backends import Batch, ThreadBackend, coalesce, stamped


class CoalesceTests(SynchronousTestCase):
    def test_coalesce_keeps_only_the_newest_interim(self) -> None:
        def t(text: str, final: bool) -> Transcript:
            return Transcript(text, final, final, 0.0, 1.0, 0.0)

        started = SpeechStarted(0.1, 0.0)
        events: list[ASREvent] = [started, t("a", False), t("a b", False), t("a b c", True), t("d", False), t("d e", False)]
        self.assertEqual(coalesce(events), [started, t("a b c", True), t("d e", False)])

    def test_an_eager_end_settled_in_the_same_batch_is_dropped(self) -> None:
        def t(text: str, final: bool) -> Transcript:
            return Transcript(text, final, final, 0.0, 1.0, 0.0)

        eager = EagerEnd(t("a b", False))
        resumed = TurnResumed(0.0)
        # confirmed at once: speculating would gain nothing
        self.assertEqual(coalesce([eager, t("a b", True)]), [t("a b", True)])
        # withdrawn at once: speculating would waste an MT and a TTS call
        self.assertEqual(coalesce([eager, resumed]), [resumed])
        # open at the end of the batch: kept
        self.assertEqual(coalesce([resumed, eager]), [resumed, eager])

    def test_stamped(self) -> None:
        eager = EagerEnd(Transcript("a", False, False, 0.0, 1.0, 0.0))
        self.assertEqual(stamped(eager, 5.0).transcript.received_at, 5.0)  # type: ignore[union-attr]
        self.assertEqual(stamped(TurnResumed(0.0), 5.0), TurnResumed(5.0))


class InlinePool:
    """Runs "pool" work at once, on the caller's thread."""

    def __init__(self) -> None:
        self.runs = 0

    def run(self, f: Callable[..., Any], *args: Any) -> "Deferred[Any]":
        self.runs += 1
        return maybeDeferred(f, *args)


class RecordingSession:
    """Records what the backend asks of a :class:`~xlbridge.engines.local_asr.worker.Session`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.stream: Optional[object] = None

    def skip(self, frames: int) -> None:
        self.calls.append(("skip", frames))

    def feed(self, frames: list[bytes]) -> list[ASREvent]:
        self.calls.append(("feed", len(frames)))
        self.stream = object()
        return [SpeechStarted(0.2, 0.0)]

    def finish(self, tail: bytes) -> list[ASREvent]:
        self.calls.append(("finish", tail))
        self.stream = None
        return [Transcript("done", True, True, 0.2, 0.4, 0.0)]

    def abandon(self) -> None:
        self.calls.append(("abandon", None))
        self.stream = None


class ThreadBackendTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = InlinePool()
        self.session = RecordingSession()
        self.backend = ThreadBackend(self.pool, self.session)  # type: ignore[arg-type]

    def test_batch(self) -> None:
        """Skip, then feed; the batch comes back with its events and decode time."""
        batch = self.successResultOf(self.backend.run(Batch([b"\0" * 640] * 2, 3, False)))
        self.assertEqual(self.session.calls, [("skip", 3), ("feed", 2)])
        self.assertEqual(batch.events, [SpeechStarted(0.2, 0.0)])
        self.assertGreaterEqual(batch.seconds, 0.0)

    def test_final_batch(self) -> None:
        """A final batch feeds what it has, then finishes with the tail; an empty one only finishes."""
        batch = self.successResultOf(self.backend.run(Batch([b"\0" * 640], 0, True, b"tail")))
        self.assertEqual(self.session.calls, [("skip", 0), ("feed", 1), ("finish", b"tail")])
        self.assertEqual([type(e) for e in batch.events], [SpeechStarted, Transcript])
        self.session.calls.clear()
        self.successResultOf(self.backend.run(Batch([], 0, True)))
        self.assertEqual(self.session.calls, [("skip", 0), ("finish", b"")])

    def test_abandon(self) -> None:
        """The stream is ended in the pool only when one is open."""
        self.backend.abandon()
        self.assertEqual((self.session.calls, self.pool.runs), ([], 0))
        self.successResultOf(self.backend.run(Batch([b"\0" * 640], 0, False)))
        self.backend.abandon()
        self.assertEqual(self.session.calls[-1], ("abandon", None))
        self.assertEqual(self.pool.runs, 2)
