"""
The ``/v1/listen`` keepalive timer of one Deepgram connection: a
``KeepAlive`` text frame after ``interval`` seconds without sending
anything, because Deepgram closes a stream that received nothing for about
10 s (``NET-0001``, trap T4).

Split from :mod:`xlbridge.engines.deepgram.connection` so the connection's
lifecycle reads without it, and so that Flux (``/v2/listen``), which must
never get a ``KeepAlive`` (it kills the stream, PROTOCOLS.md 11.4), simply
has none (:attr:`~xlbridge.engines.deepgram.dialect.Dialect.keepalive` is
``None``).

Cheap on a busy stream: the timer is not reset per audio message.  It is
armed for ``interval`` after the last send; when it fires it looks at the
time of the last send and either sends or re-arms for the rest, so a steady
audio stream costs one timer per ``interval``.  Time is the injected
``IReactorTime``.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["KeepAliveTimer"]

#: Timer tolerance: ``callLater`` may fire a hair early in float arithmetic.
_SLACK = 0.999


class KeepAliveTimer:
    """
    Sends a keepalive after ``interval`` seconds without a send.

    :param clock: time source and timer.
    :param interval: seconds without sending before a keepalive goes out.
    :param send: sends the keepalive; returns whether it went out (not on a
        closing socket: then the timer stops, and the next connection
        starts its own).
    :ivar sent: keepalives sent.
    :ivar last_send: clock time of the last message sent (any kind).
    """

    def __init__(self, clock: IReactorTime, interval: float, send: Callable[[], bool]) -> None:
        self.clock = clock
        self.interval = interval
        self._send = send
        self.sent = 0
        self.last_send = 0.0
        self._call: Optional[IDelayedCall] = None

    @property
    def running(self) -> bool:
        """A keepalive is scheduled."""
        return self._call is not None

    def touched(self) -> None:
        """Something went out now: the idle wait restarts (lazily, see the module)."""
        self.last_send = self.clock.seconds()

    def start(self) -> None:
        """Arm the timer, ``interval`` after the last send; does nothing if armed."""
        if self._call is not None:
            return
        due = self.last_send + self.interval - self.clock.seconds()
        self._call = self.clock.callLater(max(0.0, due), self._tick)

    def stop(self) -> None:
        """Cancel the timer; nothing is sent until :meth:`start`."""
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _tick(self) -> None:
        self._call = None
        if self.clock.seconds() - self.last_send >= self.interval * _SLACK:
            if not self._send():
                return  # closing: the close report follows, and a new socket arms its own
            self.sent += 1
            self.last_send = self.clock.seconds()
        self.start()
