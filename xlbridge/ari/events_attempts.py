"""
One attempt at a time to open the ARI events socket: TCP connect, then the
WebSocket upgrade, both within ``timeout`` seconds on the owner's clock.

:class:`~xlbridge.ari.events.ARIEvents` owns the connection (backoff,
liveness, refusals: see its module's notes) and starts an attempt in state
``connecting``; :class:`ConnectAttempts` runs it and reports back:

* **TCP connected**: the owner's ``connected`` with the protocol, whose
  upgrade is now under way (the owner hears of the upgrade from the
  protocol itself, :mod:`xlbridge.ari.events_socket`).
* **TCP failed** (refused, DNS, timeout): the owner's ``failed`` with one
  line saying why (:func:`~xlbridge.ari.retry.connect_failure`).
* **Timeout** (``timeout`` seconds after the start, unless :meth:`done`
  came first): the TCP connect is cancelled (reported as a TCP failure
  that timed out) or the upgrading protocol aborted (reported by its
  close; :attr:`ConnectAttempts.timed_out` says why).

Each attempt is numbered; a result of an older attempt, or one that comes
when the owner no longer waits for it (``current`` is false: stopped,
refused), changes nothing (a late TCP connection is aborted).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from xlbridge.ari.events_socket import EventsProtocol
from xlbridge.ari.retry import connect_failure

__all__ = ["ConnectAttempts", "cancel_call"]


def cancel_call(call: Optional[IDelayedCall]) -> None:
    """
    Cancel ``call`` if it is still pending (not ``None``, not run, not
    cancelled): a timer may be cancelled from more than one path.
    """
    if call is not None and call.active():
        call.cancel()


class ConnectAttempts:
    """
    Run connection attempts one at a time (see the module's notes).

    :param connect: starts the TCP connection (the endpoint's ``connect``
        with the socket's factory); fires with the protocol.
    :param clock: times the attempts.
    :param timeout: seconds an attempt may take up to an open socket.
    :param address: ``host:port``, for the failure lines.
    :param current: whether the owner still waits for an attempt.
    :param connected: called with the protocol once TCP is connected.
    :param failed: called with why the TCP connection failed.
    :param upgrading: the protocol whose upgrade is under way, if any.

    :ivar count: attempts started so far.
    :ivar timed_out: the latest attempt ran out of time.
    """

    def __init__(
        self,
        connect: Callable[[], "Deferred[Any]"],
        clock: IReactorTime,
        timeout: float,
        address: str,
        current: Callable[[], bool],
        connected: Callable[[EventsProtocol], None],
        failed: Callable[[str], None],
        upgrading: Callable[[], Optional[EventsProtocol]],
    ) -> None:
        self._connect, self.clock, self.timeout, self.address = connect, clock, timeout, address
        self._owner_waits, self._connected, self._failed = current, connected, failed
        self._upgrading = upgrading
        self.count = 0
        self.timed_out = False
        self._connecting: Optional[Deferred[Any]] = None
        self._timeout_call: Optional[IDelayedCall] = None

    def start(self) -> None:
        """Start a new attempt; the older ones no longer count."""
        self.count += 1
        attempt = self.count
        self.timed_out = False
        self._timeout_call = self.clock.callLater(self.timeout, self._attempt_timed_out, attempt)
        d = self._connecting = self._connect()
        d.addCallbacks(self._tcp_connected, self._tcp_failed, callbackArgs=(attempt,), errbackArgs=(attempt,))

    def done(self) -> None:
        """The attempt ended (the socket opened, failed or closed): no timeout."""
        cancel_call(self._timeout_call)
        self._timeout_call = None

    def cancel(self) -> None:
        """Stop waiting: no timeout, and a TCP connection under way is cancelled."""
        self.done()
        if self._connecting is not None:
            self._connecting.cancel()

    def _current(self, attempt: int) -> bool:
        return attempt == self.count and self._owner_waits()

    def _tcp_connected(self, proto: EventsProtocol, attempt: int) -> None:
        if attempt == self.count:
            self._connecting = None
        if not self._current(attempt):
            proto.dropConnection(abort=True)
            return
        self._connected(proto)  # the upgrade is under way

    def _tcp_failed(self, failure: Failure, attempt: int) -> None:
        if attempt == self.count:
            self._connecting = None
        if not self._current(attempt):
            return
        self._failed(connect_failure(self.address, self.timeout, failure, self.timed_out))

    def _attempt_timed_out(self, attempt: int) -> None:
        self._timeout_call = None
        if not self._current(attempt):
            return
        self.timed_out = True
        if self._connecting is not None:
            self._connecting.cancel()
        else:
            proto = self._upgrading()
            if proto is not None:
                proto.dropConnection(abort=True)
