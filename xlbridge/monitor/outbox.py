"""
A monitor viewer's bounded send queue.

Every viewer gets one :class:`Outbox`.  Messages wait in it while the
viewer's transport is paused (its send buffer is full) and are written when
it resumes.  The bound is in bytes; when a new message does not fit, the
oldest queued messages are dropped and counted: for live captions, levels
and audio the newest data is the one worth sending, and the media path never
waits for a viewer.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Generic, TypeVar

#: What is queued: prepared WebSocket messages (anything, in tests).
T = TypeVar("T")


class Outbox(Generic[T]):
    """
    One viewer's bounded queue of prepared messages; drops the oldest.

    :ivar paused: the transport's send buffer is full (set by the producer
        callbacks); nothing is written until it is cleared.
    :ivar dropped: messages dropped for this viewer.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: deque[tuple[T, int]] = deque()
        self.bytes = 0
        self.paused = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, size: int) -> int:
        """
        Queue ``item`` of ``size`` bytes; return how many queued messages
        were dropped (the oldest first) to make room.  A message larger than
        the bound on its own is still queued, alone: a big status snapshot
        must not be lost for everyone, and memory stays bounded by the
        larger of the bound and the biggest message.
        """
        dropped = 0
        while self._items and self.bytes + size > self.max_bytes:
            _, old = self._items.popleft()
            self.bytes -= old
            dropped += 1
        self._items.append((item, size))
        self.bytes += size
        self.dropped += dropped
        return dropped

    def drain(self, send: Callable[[T], None]) -> None:
        """
        Hand queued items to ``send`` until empty or paused (``send`` may
        pause us synchronously when the transport buffer fills).
        """
        while self._items and not self.paused:
            item, size = self._items.popleft()
            self.bytes -= size
            send(item)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
