"""
The pool of UDP ports ExternalMedia channels send to.

A released port is quarantined for a while before reuse: Asterisk may still
have packets in flight to it (or a half-torn-down UnicastRTP channel may
keep sending), and those must not reach the next call's leg.
"""

from __future__ import annotations

from collections import deque

from twisted.internet.interfaces import IReactorTime


class PortsExhausted(Exception):
    """
    Every port of the range is in use or quarantined.
    """


class PortPool:
    """
    Allocate ports from ``[low, high]``; released ports rest ``quarantine``
    seconds (by ``clock``) before they can be handed out again.
    """

    def __init__(self, low: int, high: int, clock: IReactorTime, quarantine: float = 10.0) -> None:
        if not 0 < low <= high <= 65535:
            raise ValueError(f"bad port range {low}-{high}")
        self.low, self.high = low, high
        self.clock = clock
        self.quarantine = quarantine
        self._free: deque[int] = deque(range(low, high + 1))
        self._resting: deque[tuple[float, int]] = deque()
        self.in_use: set[int] = set()

    def allocate(self) -> int:
        """
        A port nobody uses and nobody used in the last ``quarantine`` seconds.
        """
        now = self.clock.seconds()
        while self._resting and self._resting[0][0] <= now:
            self._free.append(self._resting.popleft()[1])
        if not self._free:
            raise PortsExhausted(f"no free RTP port in {self.low}-{self.high}")
        port = self._free.popleft()
        self.in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """
        Give ``port`` back (idempotent); it rests before reuse.
        """
        if port in self.in_use:
            self.in_use.discard(port)
            self._resting.append((self.clock.seconds() + self.quarantine, port))

    @property
    def quarantined(self) -> set[int]:
        """
        Released ports still resting (as of the last :meth:`allocate`: a
        port whose time is up stays listed until then).
        """
        return {port for _, port in self._resting}

    def skip(self, port: int) -> None:
        """
        ``port`` could not be bound (someone else has it): rest it like a
        released one so the next allocation tries another.
        """
        self.release(port)
