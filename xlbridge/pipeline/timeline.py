"""
Dating positions in a leg's audio stream with reactor time.

ASR engines report word times in seconds since their stream began; latency
is measured in reactor time.  :class:`Timeline` records when each chunk fed
to the recogniser arrived, so "end of speech" at stream second *t* becomes
the moment the packet holding it arrived.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Optional

from xlbridge.audio.frame import SAMPLE_RATE


class Timeline:
    """
    Maps a position in a leg's audio stream (seconds since the first sample
    fed to its recogniser) to the reactor time the chunk holding it arrived,
    so "end of speech" can be dated from an ASR timestamp.  Bounded: keeps
    about the last minute of chunks.
    """

    KEEP = 3000  # chunks (20 ms each: one minute)

    def __init__(self) -> None:
        self._ends: list[int] = []
        self._time: list[float] = []
        self.samples = 0

    def note(self, n: int, now: float) -> None:
        """
        ``n`` samples arrived at ``now``.
        """
        self.samples += n
        self._ends.append(self.samples)
        self._time.append(now)
        if len(self._ends) > 2 * self.KEEP:
            del self._ends[: self.KEEP]
            del self._time[: self.KEEP]

    def time_at(self, seconds: float) -> Optional[float]:
        """
        When the sample at ``seconds`` into the stream arrived (or will,
        extrapolated at real time past the end).
        """
        if not self._ends:
            return None
        pos = int(round(seconds * SAMPLE_RATE))
        i = bisect_left(self._ends, pos)
        if i >= len(self._ends):
            return self._time[-1] + (pos - self._ends[-1]) / SAMPLE_RATE
        return self._time[i]
