"""
The Flux turn tracker (:mod:`xlbridge.engines.deepgram.flux_turns`): the
speculate / cancel / commit decisions for every documented turn sequence
(PROTOCOLS.md 11.3), and the safe decision when the server breaks a rule.
"""

from __future__ import annotations

import itertools
from typing import Any, Optional

from twisted.trial.unittest import SynchronousTestCase

from xlbridge.engines.deepgram.flux_turns import Cancel, Commit, Speculate, TurnTracker
from xlbridge.engines.deepgram.flux_wire import TurnEvent, TurnInfo

_SEQ = itertools.count(1)


def info(event: TurnEvent, transcript: str = "", turn: int = 0, seq: Optional[int] = None) -> TurnInfo:
    """A TurnInfo with the next sequence id unless one is given."""
    return TurnInfo(event, turn, 0.0, 1.0, transcript, (), 0.5, next(_SEQ) if seq is None else seq)


class TrackerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.t = TurnTracker()

    def run_events(self, *events: tuple[TurnEvent, str, int]) -> list[Any]:
        out: list[Any] = []
        for ev, text, turn in events:
            out += self.t.feed(info(ev, text, turn))
        return out

    def test_eager_then_end_commits_the_speculation(self) -> None:
        out = self.run_events((TurnEvent.START, "", 0), (TurnEvent.UPDATE, "Hello", 0),
                              (TurnEvent.EAGER, "Hello there.", 0), (TurnEvent.END, "Hello there.", 0))
        self.assertEqual(out, [Speculate(0, "Hello there."), Commit(0, "Hello there.", True)])
        self.assertEqual((self.t.started, self.t.used, self.t.wasted, self.t.violations), (1, 1, 0, {}))

    def test_resumed_cancels_then_the_final_one_is_used(self) -> None:
        out = self.run_events((TurnEvent.START, "", 0), (TurnEvent.EAGER, "I want", 0), (TurnEvent.RESUMED, "I want", 0),
                              (TurnEvent.EAGER, "I want two tickets.", 0), (TurnEvent.END, "I want two tickets.", 0))
        self.assertEqual(out, [Speculate(0, "I want"), Cancel(0, "I want", "resumed"),
                               Speculate(0, "I want two tickets."), Commit(0, "I want two tickets.", True)])
        self.assertEqual((self.t.started, self.t.used, self.t.wasted), (2, 1, 1))

    def test_no_eager_mode_commits_plainly(self) -> None:
        out = self.run_events((TurnEvent.START, "", 0), (TurnEvent.UPDATE, "Yes", 0), (TurnEvent.END, "Yes.", 0))
        self.assertEqual(out, [Commit(0, "Yes.", False)])
        self.assertEqual((self.t.started, self.t.used, self.t.wasted), (0, 0, 0))

    def test_end_differing_from_eager_is_a_violation_handled_safely(self) -> None:
        out = self.run_events((TurnEvent.EAGER, "Hola", 0), (TurnEvent.END, "Hola amigo", 0))
        self.assertEqual(out, [Speculate(0, "Hola"), Cancel(0, "Hola", "changed"), Commit(0, "Hola amigo", False)])
        self.assertEqual(self.t.violations, {"end_differs_from_eager": 1})

    def test_empty_end_commits_nothing(self) -> None:
        self.assertEqual(self.run_events((TurnEvent.START, "", 0), (TurnEvent.END, "", 0)), [])

    def test_odd_sequences(self) -> None:
        out = self.run_events((TurnEvent.RESUMED, "", 0), (TurnEvent.EAGER, "", 0),
                              (TurnEvent.EAGER, "a", 0), (TurnEvent.EAGER, "a", 0),
                              (TurnEvent.START, "", 1))
        self.assertEqual(out, [Speculate(0, "a"), Cancel(0, "a", "abandoned")])
        self.assertEqual(self.t.violations, {"resume_without_eager": 1, "empty_eager": 1,
                                             "start_with_open_speculation": 1})

    def test_reset_voids_an_open_speculation(self) -> None:
        self.run_events((TurnEvent.EAGER, "Bye.", 2))
        self.assertEqual(self.t.reset(), [Cancel(2, "Bye.", "connection_closed")])
        self.assertIsNone(self.t.speculating)
        self.assertEqual(self.t.reset(), [])

    def test_sequence_gaps(self) -> None:
        for seq in (1, 2, 5, 6, 9):
            self.t.feed(info(TurnEvent.UPDATE, "x", 0, seq=seq))
        self.assertEqual(self.t.sequence_gaps, 4)
