"""
Driving local recognisers on the real reactor, for the tests that run real
worker processes or pool threads: feeding audio at a pace, waiting for a
condition, and measuring how late the reactor's ticks run.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Optional

import numpy as np
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater

from xlbridge.audio.frame import Samples
from xlbridge.engines.local_asr.leg import LocalASR


def feed_paced(asr: LocalASR, audio: Samples, sizes: Iterable[int] = (320,), interval: float = 0.005) -> "Deferred[Any]":
    """Feed ``audio`` in chunks of ``sizes`` samples (cycled), one per ``interval`` s."""
    sizes = list(sizes)
    pos = [0, 0]

    def tick() -> None:
        i, k = pos
        if i >= len(audio):
            lc.stop()
            return
        n = sizes[k % len(sizes)]
        asr.feed(audio[i:i + n])
        pos[:] = [i + n, k + 1]

    lc = LoopingCall(tick)
    lc.clock = reactor
    return lc.start(interval)


def until(predicate: Callable[[], bool], timeout: float = 10.0) -> "Deferred[None]":
    """Fires once ``predicate()`` is true (checked every 10 ms); errbacks after ``timeout`` s."""
    deadline = time.monotonic() + timeout

    @inlineCallbacks
    def poll() -> Any:
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached")
            yield deferLater(reactor, 0.01, lambda: None)

    return poll()


class StallProbe:
    """How late a ``interval`` s LoopingCall on the reactor runs: tick-to-tick gap minus ``interval``."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.lateness: list[float] = []
        self._last: Optional[float] = None
        self._call = LoopingCall(self._tick)
        self._call.clock = reactor

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.lateness.append(now - self._last - self.interval)
        self._last = now

    def start(self) -> None:
        self._call.start(self.interval)

    def stop(self) -> tuple[float, float]:
        """``(max, p99)`` lateness in milliseconds."""
        self._call.stop()
        late = np.array(self.lateness) * 1000
        return float(late.max()), float(np.percentile(late, 99))
