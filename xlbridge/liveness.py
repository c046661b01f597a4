"""
Liveness of an open WebSocket: ping a quiet peer, drop one that does not
answer.  Used by the ARI events socket (10 s / 10 s) and by each Deepgram
connection (2 s / 4 s).

A half-open connection (the peer's host gone with no FIN or RST: a crash, a
NAT or firewall that forgot us, a blackholing middlebox) never closes by
itself: nothing arrives, nothing fails.  The ARI events socket looked
connected (``/readyz`` ready) while Stasis calls went unseen (40 s and more
in ``reliability/faults.py``'s half-open fault; TCP would take many
minutes), and a Deepgram leg kept writing audio into the kernel without
falling back.  So:

* After ``idle`` seconds with nothing received a WebSocket PING goes out.
  Asterisk and Deepgram answer a PING with a PONG (RFC 6455).  A quiet but
  healthy peer costs one ping per ``idle`` seconds.
* Anything received (a PONG, a message, any byte) proves the peer alive and
  restarts the idle wait.  Receiving only records the time: the timer is
  not re-armed per message, it looks at that time when it fires.
* If nothing arrives within ``timeout`` seconds of the ping the owner's
  ``dead`` callback runs once (it drops the socket; its reconnect logic does
  the rest) and the watch stops.  Worst case a dead peer is noticed
  ``idle + timeout`` seconds after its last message.
* **PING only, never an unsolicited PONG**: one kills Asterisk 20.21/22.11/
  23.5 release candidates (asterisk/asterisk#2085; PROTOCOLS.md 10.5).
  (Autobahn answers the peer's pings with pongs by itself: those are
  solicited.)
* **Clock.**  The timer is on the injected ``IReactorTime``, so tests run
  it on ``task.Clock``; :meth:`Liveness.stop` cancels it, and nothing is
  scheduled while stopped.  Before judging a peer dead the timer looks once
  more after one reactor pass (``callLater(0)``): a starved reactor runs
  late timers before it reads the sockets, and the PONG may be waiting
  there.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = ["LIVENESS_IDLE_S", "LIVENESS_TIMEOUT_S", "Liveness"]

#: Default seconds without anything received from the peer before a ping
#: goes out (the ARI events socket's).
LIVENESS_IDLE_S = 10.0
#: Seconds a ping may go unanswered (no pong, nothing else received) before
#: the connection is judged dead.  Generous: a false alarm costs a
#: reconnect, the start-up requests again, and events in the gap.
LIVENESS_TIMEOUT_S = 10.0

#: Timer tolerance: ``callLater`` may fire a hair early in float arithmetic.
_SLACK = 0.999


class Liveness:
    """
    The idle ping and pong timeout of one connection at a time.

    :param clock: time source and timer.
    :param ping: sends one WebSocket PING (never a PONG).
    :param dead: called once when a ping went unanswered, with the seconds
        since anything was received; should drop the connection.  The watch
        is stopped before it is called.
    :param idle: seconds of silence before a ping (:data:`LIVENESS_IDLE_S`).
    :param timeout: seconds a ping may go unanswered
        (:data:`LIVENESS_TIMEOUT_S`).

    :ivar pings: pings sent, over all connections.
    :ivar dead_count: connections judged dead, over all connections.
    :ivar last_received: clock time anything was last received, or ``None``
        while stopped.
    :ivar ping_sent_at: clock time of the unanswered ping, or ``None``.
    """

    def __init__(
        self,
        clock: IReactorTime,
        ping: Callable[[], None],
        dead: Callable[[float], None],
        idle: float = LIVENESS_IDLE_S,
        timeout: float = LIVENESS_TIMEOUT_S,
    ) -> None:
        if idle <= 0 or timeout <= 0:
            raise ValueError("idle and timeout must be positive")
        self.clock = clock
        self._ping = ping
        self._dead = dead
        self.idle = idle
        self.timeout = timeout
        self.pings = 0
        self.dead_count = 0
        self.last_received: Optional[float] = None
        self.ping_sent_at: Optional[float] = None
        self._call: Optional[IDelayedCall] = None

    @property
    def running(self) -> bool:
        """Watching a connection (between :meth:`start` and :meth:`stop`)."""
        return self.last_received is not None

    def start(self) -> None:
        """A connection opened: watch it from now (as if a frame arrived)."""
        self.stop()
        self.last_received = self.clock.seconds()
        self._arm()

    def received(self) -> None:
        """Something arrived from the peer: it is alive.  Cheap (no timer)."""
        if self.last_received is not None:
            self.last_received = self.clock.seconds()
            self.ping_sent_at = None

    def stop(self) -> None:
        """The connection closed (or is closing): cancel the timer."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.last_received = self.ping_sent_at = None

    def silent_for(self) -> float:
        """Seconds since anything was received (0 while stopped)."""
        if self.last_received is None:
            return 0.0
        return self.clock.seconds() - self.last_received

    def _arm(self) -> None:
        assert self.last_received is not None
        if self.ping_sent_at is not None:
            due = self.ping_sent_at + self.timeout
        else:
            due = self.last_received + self.idle
        self._call = self.clock.callLater(max(0.0, due - self.clock.seconds()), self._tick)

    def _tick(self, confirm: bool = False) -> None:
        """
        Ping a peer that has been quiet ``idle`` seconds; call ``dead`` for
        one that left a ping unanswered ``timeout`` seconds (``confirm``:
        on the second look, after one reactor pass).
        """
        self._call = None
        if self.last_received is None:
            return
        now = self.clock.seconds()
        if self.ping_sent_at is not None:
            if now - self.ping_sent_at >= self.timeout * _SLACK:
                if not confirm:
                    self._call = self.clock.callLater(0, self._tick, True)
                    return
                silent = now - self.last_received
                self.dead_count += 1
                self.stop()
                self._dead(silent)
                return
        elif now - self.last_received >= self.idle * _SLACK:
            self.ping_sent_at = now
            self.pings += 1
            self._ping()
        self._arm()
