"""
Tests for xlbridge.rtp.seq: wraparound arithmetic and the reorder buffer.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from xlbridge.rtp.seq import ReorderBuffer, seq_diff


class SeqDiffTests(SynchronousTestCase):
    def test_wraparound(self) -> None:
        self.assertEqual(seq_diff(0, 65535), 1)
        self.assertEqual(seq_diff(65535, 0), -1)
        self.assertEqual(seq_diff(5, 65530), 11)
        self.assertEqual(seq_diff(100, 100), 0)
        self.assertEqual(seq_diff(0x8000, 0), -0x8000)


class ReorderBufferTests(SynchronousTestCase):
    def feed(self, buf: ReorderBuffer[int], seqs: list[int]) -> list[int]:
        out: list[int] = []
        for s in seqs:
            out.extend(buf.push(s, s))
        return out

    def test_in_order_passes_straight_through(self) -> None:
        buf: ReorderBuffer[int] = ReorderBuffer(3)
        for s in [10, 11, 12]:
            self.assertEqual(buf.push(s, s), [s])

    def test_swap_is_repaired(self) -> None:
        buf: ReorderBuffer[int] = ReorderBuffer(3)
        self.assertEqual(self.feed(buf, [1, 3, 2, 4]), [1, 2, 3, 4])
        self.assertEqual((buf.lost, buf.late, buf.duplicates), (0, 0, 0))

    def test_duplicates_dropped(self) -> None:
        buf: ReorderBuffer[int] = ReorderBuffer(3)
        self.assertEqual(self.feed(buf, [1, 2, 2, 1, 4, 4, 3]), [1, 2, 3, 4])
        self.assertEqual(buf.duplicates, 3)

    def test_loss_declared_after_depth(self) -> None:
        buf: ReorderBuffer[int] = ReorderBuffer(3)
        self.assertEqual(self.feed(buf, [1, 3, 4, 5]), [1])
        self.assertEqual(buf.push(6, 6), [3, 4, 5, 6])
        self.assertEqual(buf.lost, 1)
        # The lost packet turning up later is late, not a duplicate.
        self.assertEqual(buf.push(2, 2), [])
        self.assertEqual((buf.late, buf.duplicates), (1, 0))

    def test_depth_zero_never_waits(self) -> None:
        buf: ReorderBuffer[int] = ReorderBuffer(0)
        self.assertEqual(self.feed(buf, [1, 3, 2, 4]), [1, 3, 4])
        self.assertEqual((buf.lost, buf.late), (1, 1))

    def test_wraparound_order(self) -> None:
        buf: ReorderBuffer[int] = ReorderBuffer(3)
        self.assertEqual(self.feed(buf, [65534, 0, 65535, 1]), [65534, 65535, 0, 1])

    def test_large_jump_resyncs(self) -> None:
        buf: ReorderBuffer[int] = ReorderBuffer(3)
        self.assertEqual(self.feed(buf, [1, 2, 30000, 30001]), [1, 2, 30000, 30001])
        self.assertEqual(buf.lost, 0)

    def test_restart_far_behind_resyncs(self) -> None:
        buf: ReorderBuffer[int] = ReorderBuffer(3)
        self.assertEqual(self.feed(buf, [20000, 20001, 5, 6]), [20000, 20001, 5, 6])

    @given(st.lists(st.booleans(), min_size=11, max_size=11), st.integers(0, 0xFFFF))
    def test_adjacent_swaps_are_fully_repaired(self, swaps: list[bool], start: int) -> None:
        # Swap disjoint neighbours (never the first packet): every packet
        # comes out exactly once, in order, across the 16-bit wrap.
        base = [(start + i) & 0xFFFF for i in range(12)]
        order = list(base)
        i = 1
        while i < len(order) - 1:
            if swaps[i]:
                order[i], order[i + 1] = order[i + 1], order[i]
                i += 2
            else:
                i += 1
        buf: ReorderBuffer[int] = ReorderBuffer(3)
        out = self.feed(buf, order)
        self.assertEqual(out, base[: len(out)])
        self.assertGreaterEqual(len(out), 11)
        self.assertEqual((buf.duplicates, buf.lost, buf.late), (0, 0, 0))
