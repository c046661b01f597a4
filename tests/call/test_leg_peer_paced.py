"""
Tests for :meth:`xlbridge.call.leg.Leg.egress` with a transport whose peer
keeps time (:class:`~xlbridge.interfaces.IPeerPacedTransport`): filled up
to what it wants, translated speech (made ahead of time) deep, live audio
shallow, filler only when the output ran dry and only as much as the
shallow lookahead allows; taps see every frame sent.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.call.recording import RecordingTransport
from xlbridge.audio.buffer import OutboundBuffer
from xlbridge.audio.frame import Samples
from xlbridge.audio.mix import OutputMix, SpeechQueue, Utterance
from xlbridge.call.leg import Leg
from xlbridge.call.playout import Playout
from xlbridge.interfaces import IPeerPacedTransport


def const(value: int) -> Samples:
    return np.full(320, value, dtype=np.int16)


@implementer(IPeerPacedTransport)
class PacedTransport(RecordingTransport):
    """
    Wants ``speech_room`` frames of audio made ahead, or ``filler_room`` of
    live audio or filler, minus what was sent since the last :meth:`play`;
    ``batches`` holds ``(frames, speech)`` of each ``send_frames`` call,
    ``aheads`` its ``ahead``.
    """

    lookahead_ms = 200
    filler_lookahead_ms = 40

    def __init__(self, speech_room: int = 10, filler_room: int = 2) -> None:
        super().__init__()
        self.speech_room, self.filler_room = speech_room, filler_room
        self.queued = 0
        self.batches: list[tuple[list[Optional[Samples]], bool]] = []
        self.aheads: list[bool] = []
        self.flushes = 0
        #: everything sent, in order: ("frames", n) or ("mark", id)
        self.wire: list[tuple[str, Any]] = []
        self.marks: dict[str, Any] = {}

    def frames_wanted(self, ahead: bool) -> int:
        return max(0, (self.speech_room if ahead else self.filler_room) - self.queued)

    def send_frames(self, frames: list[Optional[Samples]], speech: bool, ahead: Optional[bool] = None) -> None:
        self.batches.append((frames, speech))
        self.aheads.append(speech if ahead is None else ahead)
        self.queued += len(frames)
        self.wire.append(("frames", len(frames)))

    def filler_wanted(self) -> int:
        return max(0, self.filler_room - self.queued)

    def mark(self, correlation_id: Optional[str] = None, then: Any = None) -> Optional[str]:
        cid = correlation_id or f"m{len(self.marks) + 1}"
        self.marks[cid] = then
        self.wire.append(("mark", cid))
        return cid

    def flush(self) -> None:
        self.flushes += 1
        self.marks.clear()

    def play(self, n: int = 1) -> None:
        self.queued = max(0, self.queued - n)


class PeerPacedEgressTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.t = PacedTransport()
        verifyObject(IPeerPacedTransport, self.t)
        self.leg = Leg("7777", "en", self.t)
        self.heard: list[Optional[Samples]] = []
        self.leg.tap_out = self.heard.append

    def speech(self, values: list[int]) -> None:
        """
        Translated speech, already synthesised, queued for this caller.
        """
        queue = SpeechQueue(60.0)
        mix = OutputMix(queue, lambda: 0.0)
        if values:
            u = queue.add(Utterance(1))
            u.add(np.concatenate([const(v) for v in values]))
            u.finish()
        self.leg.playout = Playout(mix, lambda: const(1), mix)

    def test_live_audio_stays_shallow(self) -> None:
        """
        The partner's relayed voice arrives live: sent no further ahead
        than the shallow lookahead (2 frames here), the rest waits in the
        buffer, where a standing backlog would be cut.
        """
        self.leg.playout = Playout(OutboundBuffer(400), lambda: const(1))
        for i in range(5):
            self.leg.playout.output.write(const(100 + i))
        self.leg.egress(1, 0)
        sent = [int(f[0]) for frames, _ in self.t.batches for f in frames if f is not None]
        self.assertEqual(sent, [100, 101])
        self.assertEqual(set(self.t.aheads), {False})
        self.assertEqual(self.leg.playout.output.depth_ms, 60.0)

    def test_arriving_audio_goes_at_once(self) -> None:
        """
        The peer keeps time: what arrives is sent as it arrives, not at
        the next tick, and without filler.
        """
        self.leg.playout = Playout(OutboundBuffer(400), lambda: const(1))
        self.leg.playout.output.write(const(7))
        self.assertEqual([[int(f[0]) for f in frames if f is not None] for frames, _ in self.t.batches], [[7]])
        self.assertEqual(self.heard and [int(f[0]) for f in self.heard if f is not None], [7])

    def test_arriving_speech_goes_at_once(self) -> None:
        self.speech([])
        u = self.leg.playout.mix.speech.add(Utterance(2))
        u.add(np.concatenate([const(9)] * 3))
        self.assertEqual([[int(f[0]) for f in frames if f is not None] for frames, _ in self.t.batches], [[9, 9, 9]])

    def test_speech_fills_to_the_lookahead_in_one_batch(self) -> None:
        self.speech(list(range(100, 115)))
        self.leg.egress(1, 0)
        ((frames, speech),) = self.t.batches
        self.assertEqual(([int(f[0]) for f in frames if f is not None], speech), (list(range(100, 110)), True))
        self.assertEqual(self.t.aheads, [True])
        self.t.play()
        self.leg.egress(1, 0)
        self.assertEqual([int(f[0]) for f in self.t.batches[1][0] if f is not None], [110])
        self.assertEqual(self.t.sent, [])  # never paced one frame at a time

    def test_filler_only_when_dry_and_only_shallow(self) -> None:
        self.leg.playout = Playout(self.leg.playout.output, lambda: const(1))
        self.leg.playout.output.write(const(5))
        self.leg.egress(1, 0)
        # One speech frame, then filler up to 2 frames queued in all: 1 more.
        self.assertEqual([(len(f), s) for f, s in self.t.batches], [(1, True), (1, False)])
        self.leg.egress(1, 0)
        self.assertEqual(len(self.t.batches), 2)  # 2 queued: no more filler
        self.assertEqual([int(f[0]) for f in self.heard if f is not None], [5, 1])

    def test_digital_silence_without_filler(self) -> None:
        self.leg.egress(1, 0)
        self.assertEqual(self.t.batches, [([None, None], False)])
        self.assertEqual(self.heard, [None, None])

    def test_nothing_read_while_the_peer_wants_nothing(self) -> None:
        self.t.queued = 10
        self.leg.playout.output.write(const(5))
        self.leg.egress(1, 0)
        self.assertEqual(self.t.batches, [])
        self.assertEqual(self.leg.playout.output.depth_ms, 20.0)

    def test_late_ticks_still_counted(self) -> None:
        self.leg.egress(3, 1)
        self.assertEqual((self.leg.counters.late_ticks, self.leg.counters.skipped_ticks), (3, 1))


class HeardTimeTests(SynchronousTestCase):
    """
    On a transport that sends ahead, an utterance is heard when the peer
    says so: the leg puts a mark before its first frame and after its
    last, and a dropped utterance that had started is flushed.
    """

    def setUp(self) -> None:
        self.t = PacedTransport(speech_room=50)
        self.leg = Leg("7777", "en", self.t)
        self.queue = SpeechQueue(1.0)
        self.mix = OutputMix(self.queue, lambda: 0.0)
        self.leg.playout = Playout(self.mix, None, self.mix)
        self.events: list[tuple[str, float]] = []

    def utterance(self, uid: int, frames: int, complete: bool = True) -> Utterance:
        u = Utterance(uid)
        playout = self.leg.playout
        u.on_start = lambda u: playout.when_heard(0.0, lambda t: self.events.append((f"start{u.uid}", t)))
        u.on_end = lambda u: playout.when_heard(
            0.0, lambda t: self.events.append((f"end{u.uid}", t)), current=u.ends_with_frame
        )
        if complete:
            u.finish()  # complete before its audio: one batch when it comes
        self.queue.add(u)
        u.add(np.concatenate([const(uid)] * frames))
        return u

    def test_marks_frame_the_utterance(self) -> None:
        self.utterance(1, 3)
        self.leg.egress(1, 0)
        self.assertEqual([k for k, _ in self.t.wire], ["mark", "frames", "mark"])
        self.assertEqual([v for k, v in self.t.wire if k == "frames"], [3])
        self.assertEqual(self.events, [])  # nothing heard yet
        start, end = [v for k, v in self.t.wire if k == "mark"]
        self.t.marks[start](1.5)
        self.t.marks[end](1.56)
        self.assertEqual(self.events, [("start1", 1.5), ("end1", 1.56)])

    def test_an_end_after_the_last_frame_marks_where_it_is(self) -> None:
        u = self.utterance(1, 2, complete=False)
        self.leg.egress(1, 0)
        u.finish()
        self.t.play(10)
        self.leg.egress(1, 0)
        marks = [v for k, v in self.t.wire if k == "mark"]
        self.assertEqual(len(marks), 2)
        self.assertEqual(self.t.wire[-2:], [("mark", marks[1]), ("frames", 2)])  # end mark, then filler

    def test_a_started_utterance_dropped_is_flushed(self) -> None:
        self.utterance(1, 60)
        self.leg.egress(1, 0)  # 50 frames sent ahead, 10 still to read
        self.assertEqual(self.t.flushes, 0)
        self.utterance(2, 45)  # over the 1 s backlog: the playing one goes
        self.queue.enforce_bound()
        self.assertEqual(self.t.flushes, 1)

    def test_a_waiting_utterance_dropped_is_not(self) -> None:
        self.utterance(1, 40)
        self.utterance(2, 40)
        self.queue.enforce_bound()
        self.assertEqual(self.t.flushes, 0)

    def test_a_paced_transport_hears_at_once(self) -> None:
        leg = Leg("8888", "es", RecordingTransport())
        leg.playout = Playout(self.mix, None, self.mix)
        self.assertIsNone(leg.playout.after_queued)
        got: list[float] = []
        leg.playout.when_heard(2.0, got.append)
        self.assertEqual(got, [2.0])
