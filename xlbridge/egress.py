"""
The egress clock: one ``LoopingCall`` at 20 ms for every leg of every call.

Asterisk does not re-time what it receives on an ExternalMedia or AudioSocket
channel, so xlbridge must send exactly one 20 ms packet per leg every 20 ms,
audio or silence.  A timer per call would multiply wake-ups and drift apart;
one loop scheduled from its start time (``LoopingCall`` computes each
deadline as ``start + n * interval``) never drifts against the reactor's
clock.

When the reactor stalls, ``LoopingCall.withCount`` reports how many
intervals passed.  Each leg then sends at most ``max_burst`` packets to catch
up and the rest of the missed intervals are skipped (the RTP timestamp still
advances, so the receiver sees a gap, not a time warp); every late tick is
counted.  A burst is only sent after ``burst_recovery`` on-time ticks: when
ticks keep running late (an overloaded machine), bursting would lengthen the
next tick and make it late too, so the clock resynchronises instead.

An exception from one leg is counted (:attr:`EgressClock.errors`) and
logged, and never reaches the loop: an exception would stop
``LoopingCall`` for every call.  A leg that fails on every tick would log
50 tracebacks a second, so failures are logged through a
:class:`~xlbridge.logthrottle.LogThrottle` per leg (and one for the tick
itself): the first at once, then at most one line per 10 s of the clock,
with the count held back.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from xlbridge.audio.frame import FRAME_MS
from xlbridge.logthrottle import LogThrottle


class EgressLeg(Protocol):
    """
    What the clock needs of a leg.
    """

    extension: str

    def egress(self, packets: int, skipped: int) -> None: ...


class EgressClock(Service):
    """
    Paces every registered leg.

    :param clock: the reactor's time provider (a ``task.Clock`` in tests).
    :param max_burst: at most this many packets per leg in one tick when
        catching up after a stall.
    :param interval: tick length in seconds (20 ms).

    :ivar ticks: loop wake-ups so far.
    :ivar late_ticks: intervals that were not served on time.
    :ivar skipped: intervals that were never served (beyond the burst).
    :ivar errors: leg exceptions caught in ticks.
    :ivar last_lateness: seconds between the last tick's deadline and when it
        ran.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        max_burst: int = 3,
        interval: float = FRAME_MS / 1000,
        burst_recovery: int = 10,
    ) -> None:
        if max_burst < 1:
            raise ValueError("max_burst must be at least 1")
        self.clock = clock
        self.max_burst = max_burst
        self.burst_recovery = burst_recovery
        self._on_time = burst_recovery
        self.interval = interval
        self._legs: dict[int, EgressLeg] = {}
        self._loop: LoopingCall | None = None
        self.ticks = 0
        self.late_ticks = 0
        self.skipped = 0
        self.errors = 0
        self.last_lateness = 0.0
        self.max_lateness = 0.0
        self._n = 0
        #: Called once per tick with its lateness in seconds (the monitor's
        #: histogram); cheap, must not raise.
        self.on_tick: Optional[Callable[[float], None]] = None
        self._tick_log = LogThrottle(self.log, clock)
        self._leg_logs: dict[int, LogThrottle] = {}

    def add(self, leg: EgressLeg) -> None:
        """
        Start pacing ``leg`` from the next tick.
        """
        self._legs[id(leg)] = leg

    def remove(self, leg: EgressLeg) -> None:
        """
        Stop pacing ``leg`` (no error if it was not registered).
        """
        self._legs.pop(id(leg), None)
        throttle = self._leg_logs.pop(id(leg), None)
        if throttle is not None:
            throttle.flush()

    def __len__(self) -> int:
        return len(self._legs)

    def startService(self) -> None:
        super().startService()
        loop = LoopingCall.withCount(self._tick)
        loop.clock = self.clock
        self._loop = loop
        self._n = 0
        d = loop.start(self.interval, now=False)
        d.addErrback(lambda f: self.log.failure("egress clock stopped", f))

    def stopService(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        for throttle in self._leg_logs.values():
            throttle.flush()
        self._tick_log.flush()
        super().stopService()

    def _tick(self, count: int) -> None:
        # Never let anything escape: LoopingCall stops for good on an error.
        try:
            self.ticks += 1
            self._n += count
            loop = self._loop
            if loop is not None and loop.starttime is not None:
                deadline = loop.starttime + self._n * self.interval
                lateness = self.clock.seconds() - deadline
                self.last_lateness = lateness
                if lateness > self.max_lateness:
                    self.max_lateness = lateness
            if count > 1:
                # Catch up with a burst only after a stretch of on-time
                # ticks.  When ticks keep running late the bridge is
                # overloaded: a burst would make this tick longer and the
                # next one late again (a cascade), so resynchronise instead.
                packets = min(count, self.max_burst) if self._on_time >= self.burst_recovery else 1
                self._on_time = 0
                skipped = count - packets
                self.late_ticks += count - 1
                self.skipped += skipped
            else:
                packets, skipped = 1, 0
                self._on_time += 1
            for leg in list(self._legs.values()):
                try:
                    leg.egress(packets, skipped)
                except Exception:
                    self.errors += 1
                    self._leg_log(leg).failure("egress failed for leg {ext}", ext=leg.extension)
            hook = self.on_tick
            if hook is not None:
                hook(self.last_lateness)
        except Exception:
            self.errors += 1
            self._tick_log.failure("egress tick failed")

    def _leg_log(self, leg: EgressLeg) -> LogThrottle:
        throttle = self._leg_logs.get(id(leg))
        if throttle is None:
            throttle = self._leg_logs[id(leg)] = LogThrottle(self.log, self.clock)
        return throttle
