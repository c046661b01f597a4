"""
Sequence-number arithmetic and a small reorder buffer for inbound RTP.

RTP sequence numbers are 16 bits and wrap (RFC 3550 appendix A.1).  Every
comparison here goes through :func:`seq_diff`, which maps the modular
distance into ``-32768..32767`` so 65535 -> 0 is a step of +1, not -65535.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")

#: A forward jump larger than this (in packets) is taken as a new stream.
RESYNC_JUMP = 1000


def seq_diff(a: int, b: int) -> int:
    """
    Signed distance ``a - b`` between two 16-bit sequence numbers.
    """
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


class ReorderBuffer(Generic[T]):
    """
    Put inbound packets back in sequence order and drop duplicates.

    In-order packets pass straight through (no added delay).  A packet that
    arrives ahead of a gap is held; the buffer holds at most ``depth``
    packets, and when it would hold more, the gap is declared lost and the
    held packets are released.  A packet behind what was already released is
    a duplicate if that sequence number was released recently, else it came
    too late (its slot was given up); both are dropped and counted apart.

    :param depth: packets held while waiting for a missing one (default 3,
        i.e. 60 ms of 20 ms packets).

    :ivar duplicates: packets dropped because that sequence was already seen.
    :ivar late: packets dropped because their slot had been given up.
    :ivar lost: sequence numbers given up on.
    """

    #: How many recently released sequence numbers are remembered.
    WINDOW = 64

    def __init__(self, depth: int = 3) -> None:
        if depth < 0:
            raise ValueError("depth must be >= 0")
        self.depth = depth
        self._expected: int | None = None
        self._held: dict[int, T] = {}
        self._recent: deque[int] = deque()
        self._recent_set: set[int] = set()
        self.duplicates = 0
        self.late = 0
        self.lost = 0

    def reset(self) -> None:
        """
        Forget all state (new stream); counters are kept.
        """
        self._expected = None
        self._held.clear()
        self._recent.clear()
        self._recent_set.clear()

    def _released(self, seq: int) -> None:
        recent = self._recent
        recent.append(seq)
        self._recent_set.add(seq)
        if len(recent) > self.WINDOW:
            self._recent_set.discard(recent.popleft())

    def push(self, seq: int, item: T) -> list[T]:
        """
        Add a packet with sequence number ``seq``.

        :return: the items now releasable, in sequence order (often just
            ``[item]``; empty while waiting or when ``item`` was dropped).
        """
        expected = self._expected
        if expected is None or (seq == expected and not self._held):
            self._expected = (seq + 1) & 0xFFFF
            self._released(seq)
            return [item]
        d = seq_diff(seq, expected)
        if d < -RESYNC_JUMP or d > RESYNC_JUMP:
            # The sender restarted or jumped its sequence: start over.
            return self._resync(seq, item)
        if d < 0:
            if seq in self._recent_set:
                self.duplicates += 1
            else:
                self.late += 1
            return []
        if seq in self._held:
            self.duplicates += 1
            return []
        self._held[seq] = item
        return self._drain()

    def _resync(self, seq: int, item: T) -> list[T]:
        out = [self._held[k] for k in sorted(self._held, key=lambda s: seq_diff(s, seq))]
        self.reset()
        self._expected = (seq + 1) & 0xFFFF
        self._released(seq)
        return out + [item]

    def _drain(self) -> list[T]:
        out: list[T] = []
        assert self._expected is not None
        expected: int = self._expected
        held = self._held
        while held:
            if expected in held:
                out.append(held.pop(expected))
                self._released(expected)
                expected = (expected + 1) & 0xFFFF
            elif len(held) > self.depth:
                # Give up on the missing packet(s) up to the oldest held one.
                base = expected
                oldest = min(held, key=lambda s: seq_diff(s, base))
                self.lost += seq_diff(oldest, base)
                expected = oldest
            else:
                break
        self._expected = expected
        return out
